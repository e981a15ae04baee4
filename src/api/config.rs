//! The server's configuration: `pyward serve --config pyward.toml`, or the
//! local defaults without one (see pyward.example.toml for every field).
//!
//! Like a policy, a configuration that exists is valid: raw TOML structs with
//! `deny_unknown_fields` become a `ServeConfig` only through validation.

use crate::arch::Arch;
use crate::executor::admission::{CpuQuota, TenantConfig};
use crate::executor::images::HOST_IMAGE;
use crate::policy::{ByteSize, parse_duration};
use crate::runtime::docker::DEFAULT_IMAGE;
use crate::runtime::native::WarmConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The runtime an image runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Linux namespaces set up by pyward (the default).
    Native,
    /// A hardened single-use container per run, from a warm pool unless
    /// `[docker] warm_pool = 0`.
    Docker,
}

impl RuntimeKind {
    /// `native` or `docker`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Docker => "docker",
        }
    }
}

/// An image the server offers (`[[image]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The name requests use: `host` (the host's interpreter, native only) or
    /// an image built by `pyward image build NAME` (its rootfs for native,
    /// its Docker tags `pyward/NAME:ARCH` for docker).
    pub name: String,
    /// The runtime that runs it.
    pub runtime: RuntimeKind,
    /// The architectures it runs on; native: only the host's.
    pub arches: Vec<Arch>,
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The images offered; the first is the default of tenants that do not list theirs.
    pub images: Vec<ImageConfig>,
    /// The SQLite database of async jobs.
    pub database: PathBuf,
    /// Runs at once, server-wide (sync runs and job workers).
    pub max_running: usize,
    /// Queued jobs plus sync runs waiting for a slot; beyond it, 503.
    pub queue_bound: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How long finished, failed and cancelled jobs are kept.
    pub job_retention: Duration,
    /// How long SIGTERM waits for running jobs before exiting.
    pub shutdown_grace: Duration,
    /// Starts of a job after which a crash marks it `failed` instead of re-queuing it.
    pub max_attempts: u32,
    /// Ready containers kept per policy for each architecture of each image
    /// with `runtime = "docker"` (`[docker] warm_pool`); 0 runs every call
    /// in a container created for it.
    pub docker_warm_pool: usize,
    /// The native warm path for native images: a zygote per sandbox user
    /// and base environment forks each call. `None` starts a fresh
    /// interpreter per call (`[native] warm = false`, `pyward serve --cold`).
    pub warm: Option<WarmConfig>,
    pub(crate) tenants: Vec<TenantConfig>,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown field, or a value of the wrong type.
    #[error("{source_name}: {message}")]
    Parse {
        /// The file.
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// A field's value is out of range.
    #[error("{source_name}: invalid {field} `{value}`: {allowed}")]
    Invalid {
        /// The file.
        source_name: String,
        /// The field, e.g. `tenant[0].tokens_sha256`.
        field: String,
        /// The value as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    runtime: Option<RuntimeKind>,
    database: Option<PathBuf>,
    max_running: Option<usize>,
    queue_bound: Option<usize>,
    max_body: Option<String>,
    job_retention: Option<String>,
    shutdown_grace: Option<String>,
    max_attempts: Option<u32>,
    docker: Option<RawDocker>,
    #[serde(default, rename = "image")]
    images: Vec<RawImage>,
    #[serde(default)]
    native: RawNative,
    #[serde(default, rename = "tenant")]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNative {
    warm: Option<bool>,
    preload: Option<Vec<String>>,
    max_zygotes: Option<usize>,
}

/// Most zygotes a server may keep (each is an interpreter's memory).
const MAX_ZYGOTES: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    warm_pool: Option<usize>,
}

/// Ready containers per policy of the Docker runtime's warm pool, by default.
const DEFAULT_WARM_POOL: usize = 2;
/// The most `[docker] warm_pool` may keep per policy.
const MAX_WARM_POOL: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: String,
    runtime: Option<RuntimeKind>,
    arch: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    #[serde(default)]
    tokens_sha256: Vec<String>,
    policies: Option<Vec<String>>,
    max_concurrent: Option<usize>,
    runs_per_minute: Option<u32>,
    burst: Option<u32>,
    images: Option<Vec<String>>,
    cpu_seconds_per_minute: Option<f64>,
    cpu_seconds_burst: Option<f64>,
}

/// Where the job database goes without a `database` setting: systemd's
/// `$STATE_DIRECTORY`, /var/lib/pyward for root, else the user's state dir.
pub fn default_database() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(dir).join("jobs.sqlite3");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/pyward/jobs.sqlite3");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("pyward/jobs.sqlite3")
}

fn default_max_running() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

struct Check<'a> {
    source_name: &'a str,
}

impl Check<'_> {
    fn invalid(&self, field: &str, value: impl ToString, allowed: &str) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.source_name.to_owned(),
            field: field.to_owned(),
            value: value.to_string(),
            allowed: allowed.to_owned(),
        }
    }

    fn duration(
        &self,
        field: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        value.map_or(Ok(default), |v| {
            parse_duration(&v).map_err(|e| self.invalid(field, &v, &e.to_string()))
        })
    }

    /// The `[native]` table: the warm path's settings, `None` when off.
    fn native(&self, raw: RawNative) -> Result<Option<WarmConfig>, ConfigError> {
        let defaults = WarmConfig::default();
        let max_zygotes = match raw.max_zygotes {
            None => defaults.max_zygotes,
            Some(n @ 1..=MAX_ZYGOTES) => n,
            Some(n) => {
                return Err(self.invalid("native.max_zygotes", n, &format!("1 to {MAX_ZYGOTES}")));
            }
        };
        let modules = raw.preload.unwrap_or_default();
        for module in &modules {
            let identifier = |part: &str| {
                part.chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            };
            if !module.split('.').all(identifier) {
                return Err(self.invalid(
                    "native.preload",
                    format!("{module:?}"),
                    "module names as in an import statement, e.g. \"numpy\" or \"xml.etree.ElementTree\"",
                ));
            }
        }
        Ok(raw.warm.unwrap_or(true).then_some(WarmConfig {
            modules,
            max_zygotes,
        }))
    }

    fn at_least_one(
        &self,
        field: &str,
        value: Option<usize>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match value {
            Some(0) => Err(self.invalid(field, 0, "at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    }

    fn tenant(
        &self,
        index: usize,
        raw: RawTenant,
        max_running: usize,
        images: &[ImageConfig],
    ) -> Result<TenantConfig, ConfigError> {
        let field = |name: &str| format!("tenant[{index}].{name}");
        let mut token_hashes = Vec::new();
        for hex in &raw.tokens_sha256 {
            let hash = parse_sha256(hex).ok_or_else(|| {
                self.invalid(
                    &field("tokens_sha256"),
                    hex,
                    "64 hex digits, e.g. the output of `printf %s TOKEN | sha256sum`",
                )
            })?;
            token_hashes.push(hash);
        }
        let policies = raw.policies.unwrap_or_else(|| vec!["strict".to_owned()]);
        if policies.is_empty() {
            return Err(self.invalid(&field("policies"), "[]", "at least one policy name or file"));
        }
        let runs_per_minute = raw.runs_per_minute.unwrap_or(600);
        let offered = || {
            let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
            format!("names of [[image]] entries: {}", names.join(", "))
        };
        let tenant_images = match raw.images {
            None => images.iter().map(|i| i.name.clone()).collect(),
            Some(list) if list.is_empty() => {
                return Err(self.invalid(&field("images"), "[]", &offered()));
            }
            Some(list) => {
                if let Some(unknown) = list.iter().find(|n| !images.iter().any(|i| &i.name == *n)) {
                    return Err(self.invalid(&field("images"), unknown, &offered()));
                }
                list
            }
        };
        let cpu = match (raw.cpu_seconds_per_minute, raw.cpu_seconds_burst) {
            (None, None) => None,
            (None, Some(burst)) => {
                return Err(self.invalid(
                    &field("cpu_seconds_burst"),
                    burst,
                    "only together with cpu_seconds_per_minute",
                ));
            }
            (Some(rate), burst) => {
                let positive = |name: &str, v: f64| {
                    if v.is_finite() && v >= 0.001 {
                        Ok(v)
                    } else {
                        Err(self.invalid(
                            &field(name),
                            v,
                            "a number of CPU seconds, at least 0.001",
                        ))
                    }
                };
                let rate = positive("cpu_seconds_per_minute", rate)?;
                Some(CpuQuota {
                    seconds_per_minute: rate,
                    burst_seconds: positive("cpu_seconds_burst", burst.unwrap_or(rate))?,
                })
            }
        };
        Ok(TenantConfig {
            name: raw.name,
            token_hashes,
            policies,
            images: tenant_images,
            max_concurrent: self.at_least_one(
                &field("max_concurrent"),
                raw.max_concurrent,
                max_running,
            )?,
            runs_per_minute,
            burst: raw.burst.unwrap_or(runs_per_minute.max(1)),
            cpu,
        })
    }

    /// The offered images: `[[image]]`, or without any the one `runtime`
    /// implies (`host` for native, python3.11-bookworm for docker), on the host's arch.
    fn images(
        &self,
        runtime: Option<RuntimeKind>,
        raw: Vec<RawImage>,
    ) -> Result<Vec<ImageConfig>, ConfigError> {
        if raw.is_empty() {
            let runtime = runtime.unwrap_or(RuntimeKind::Native);
            let name = match runtime {
                RuntimeKind::Native => HOST_IMAGE,
                RuntimeKind::Docker => DEFAULT_IMAGE,
            };
            return Ok(vec![ImageConfig {
                name: name.to_owned(),
                runtime,
                arches: vec![Arch::host()],
            }]);
        }
        if let Some(runtime) = runtime {
            return Err(self.invalid(
                "runtime",
                runtime.as_str(),
                "only without [[image]] entries; give each [[image]] its runtime instead",
            ));
        }
        let mut images: Vec<ImageConfig> = Vec::new();
        for (index, raw) in raw.into_iter().enumerate() {
            let image = self.image(index, raw)?;
            if images.iter().any(|i| i.name == image.name) {
                return Err(self.invalid(
                    &format!("image[{index}].name"),
                    &image.name,
                    "image names must be unique",
                ));
            }
            images.push(image);
        }
        Ok(images)
    }

    fn image(&self, index: usize, raw: RawImage) -> Result<ImageConfig, ConfigError> {
        let field = |name: &str| format!("image[{index}].{name}");
        let plain = !raw.name.starts_with('.')
            && !raw.name.is_empty()
            && raw.name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !plain {
            return Err(self.invalid(
                &field("name"),
                &raw.name,
                "`host` or the name of an image built by `pyward image build` \
                 (lowercase letters, digits, '.', '-', '_')",
            ));
        }
        let runtime = raw.runtime.unwrap_or(RuntimeKind::Native);
        if raw.name == HOST_IMAGE && runtime != RuntimeKind::Native {
            return Err(self.invalid(
                &field("runtime"),
                runtime.as_str(),
                "`host` is this machine's own interpreter: only runtime = \"native\" runs it",
            ));
        }
        let mut arches = Vec::new();
        for text in raw.arch.unwrap_or_else(|| vec![Arch::host().to_string()]) {
            let arch: Arch = text.parse().map_err(|e: crate::arch::UnknownArch| {
                self.invalid(&field("arch"), &text, &e.to_string())
            })?;
            if arches.contains(&arch) {
                return Err(self.invalid(&field("arch"), &text, "each architecture once"));
            }
            if runtime == RuntimeKind::Native && arch != Arch::host() {
                return Err(self.invalid(
                    &field("arch"),
                    &text,
                    &format!(
                        "the native runtime has no emulation: it runs only this machine's \
                         architecture ({}); use runtime = \"docker\" for {arch} (under qemu-user)",
                        Arch::host()
                    ),
                ));
            }
            arches.push(arch);
        }
        if arches.is_empty() {
            return Err(self.invalid(&field("arch"), "[]", "at least one of amd64, arm64"));
        }
        Ok(ImageConfig {
            name: raw.name,
            runtime,
            arches,
        })
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl ServeConfig {
    /// Turns the warm paths off: every call starts a fresh interpreter
    /// (no zygotes, no pooled containers).
    pub fn cold(&mut self) {
        self.warm = None;
        self.docker_warm_pool = 0;
    }

    /// The configuration without a file: 127.0.0.1:8080, native with its
    /// warm path, strict, one local tenant without auth.
    pub fn local() -> ServeConfig {
        ServeConfig::from_toml("", "(defaults)").expect("the empty configuration is valid")
    }

    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ServeConfig::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a configuration; `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<ServeConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let check = Check { source_name };
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            check.invalid(
                "listen",
                &listen_text,
                "an IP address and port, e.g. 127.0.0.1:8080",
            )
        })?;
        let max_running =
            check.at_least_one("max_running", raw.max_running, default_max_running())?;
        let max_body = match raw.max_body {
            Some(v) => v
                .parse::<ByteSize>()
                .map_err(|e| check.invalid("max_body", &v, &e.to_string()))?
                .bytes(),
            None => ByteSize::mib(8).bytes(),
        };
        let images = check.images(raw.runtime, raw.images)?;
        let docker = raw.docker.unwrap_or_default();
        let docker_warm_pool = docker.warm_pool.unwrap_or(DEFAULT_WARM_POOL);
        if docker_warm_pool > MAX_WARM_POOL {
            return Err(check.invalid(
                "docker.warm_pool",
                docker_warm_pool,
                &format!("0 (a new container per run) to {MAX_WARM_POOL}"),
            ));
        }
        let mut tenants = Vec::new();
        for (index, tenant) in raw.tenants.into_iter().enumerate() {
            tenants.push(check.tenant(index, tenant, max_running, &images)?);
        }
        if tenants.is_empty() {
            tenants.push(check.tenant(
                0,
                RawTenant {
                    name: "local".to_owned(),
                    tokens_sha256: Vec::new(),
                    policies: None,
                    max_concurrent: None,
                    runs_per_minute: None,
                    burst: None,
                    images: None,
                    cpu_seconds_per_minute: None,
                    cpu_seconds_burst: None,
                },
                max_running,
                &images,
            )?);
        }
        let config = ServeConfig {
            listen,
            images,
            database: raw.database.unwrap_or_else(default_database),
            max_running,
            queue_bound: check.at_least_one("queue_bound", raw.queue_bound, 1000)?,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            job_retention: check.duration(
                "job_retention",
                raw.job_retention,
                Duration::from_secs(86_400),
            )?,
            shutdown_grace: check.duration(
                "shutdown_grace",
                raw.shutdown_grace,
                Duration::from_secs(30),
            )?,
            max_attempts: raw.max_attempts.unwrap_or(3).max(1),
            docker_warm_pool,
            warm: check.native(raw.native)?,
            tenants,
        };
        config.check_auth(&check)?;
        Ok(config)
    }

    /// Either every tenant has tokens, or there is one tenant without and
    /// the server listens on loopback only.
    fn check_auth(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        let anonymous = self
            .tenants
            .iter()
            .filter(|t| t.token_hashes.is_empty())
            .count();
        if anonymous > 0 && self.tenants.len() > 1 {
            return Err(check.invalid(
                "tenant",
                format!("{anonymous} tenant(s) without tokens_sha256"),
                "either one tenant without tokens (no auth) or tokens for every tenant",
            ));
        }
        if anonymous > 0 && !self.listen.ip().is_loopback() {
            return Err(check.invalid("listen", self.listen, "without auth only a loopback address (127.0.0.1, ::1); give the tenant tokens_sha256 to listen elsewhere"));
        }
        let mut names: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(check.invalid("tenant.name", pair[0], "tenant names must be unique"));
        }
        Ok(())
    }

    /// Whether requests need a bearer token.
    pub fn requires_auth(&self) -> bool {
        self.tenants.iter().all(|t| !t.token_hashes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn no_config_is_a_local_server_without_auth() {
        let config = ServeConfig::local();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(!config.requires_auth());
        assert_eq!(config.tenants[0].policies, ["strict"]);
    }

    #[test]
    fn no_auth_is_refused_off_loopback() {
        let err = ServeConfig::from_toml("listen = \"0.0.0.0:8080\"", "t.toml").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let ok = format!(
            "listen = \"0.0.0.0:8080\"\n[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH}\"]\n"
        );
        assert!(
            ServeConfig::from_toml(&ok, "t.toml")
                .unwrap()
                .requires_auth()
        );
    }

    #[test]
    fn bad_fields_name_the_field() {
        for (text, field) in [
            (
                "[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"xyz\"]",
                "tokens_sha256",
            ),
            ("max_running = 0", "max_running"),
            ("job_retention = \"3 days\"", "job_retention"),
            ("lissen = \"x\"", "lissen"),
        ] {
            let err = ServeConfig::from_toml(text, "t.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    fn images_of(text: &str) -> Result<Vec<ImageConfig>, String> {
        ServeConfig::from_toml(text, "t.toml")
            .map(|c| c.images)
            .map_err(|e| e.to_string())
    }

    fn foreign() -> Arch {
        match Arch::host() {
            Arch::Amd64 => Arch::Arm64,
            Arch::Arm64 => Arch::Amd64,
        }
    }

    #[test]
    fn without_images_the_runtime_setting_picks_the_one_default_image() {
        let native = images_of("").unwrap();
        assert_eq!(
            native,
            [ImageConfig {
                name: "host".into(),
                runtime: RuntimeKind::Native,
                arches: vec![Arch::host()],
            }]
        );
        let docker = images_of("runtime = \"docker\"").unwrap();
        assert_eq!(
            (docker[0].name.as_str(), docker[0].runtime),
            ("python3.11-bookworm", RuntimeKind::Docker)
        );
        let local = ServeConfig::local();
        assert_eq!(local.tenants[0].images, ["host"]);
    }

    #[test]
    fn images_and_tenant_image_lists_are_checked() {
        let config = ServeConfig::from_toml(
            "[[image]]\nname = \"host\"\n\
             [[image]]\nname = \"python3.11-bookworm\"\nruntime = \"docker\"\narch = [\"amd64\", \"aarch64\"]\n\
             [[tenant]]\nname = \"a\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.images[1].arches, [Arch::Amd64, Arch::Arm64]);
        assert_eq!(config.tenants[0].images, ["host", "python3.11-bookworm"]);

        let foreign = foreign();
        for (text, expect) in [
            (
                "[[image]]\nname = \"p\"\nruntime = \"docker\"\narch = [\"riscv64\"]".to_owned(),
                "image[0].arch `riscv64`: unknown architecture",
            ),
            (
                format!("[[image]]\nname = \"host\"\narch = [\"{foreign}\"]"),
                "the native runtime has no emulation",
            ),
            (
                format!("[[image]]\nname = \"p\"\nruntime = \"native\"\narch = [\"{foreign}\"]"),
                "use runtime = \"docker\"",
            ),
            (
                "[[image]]\nname = \"host\"\n[[image]]\nname = \"host\"".to_owned(),
                "image[1].name `host`: image names must be unique",
            ),
            (
                "[[image]]\nname = \"host\"\nruntime = \"docker\"".to_owned(),
                "only runtime = \"native\" runs it",
            ),
            (
                "[[image]]\nname = \"../etc\"".to_owned(),
                "image[0].name `../etc`",
            ),
            (
                "[[image]]\nname = \"p\"\nruntime = \"docker\"\narch = []".to_owned(),
                "at least one of amd64, arm64",
            ),
            (
                "runtime = \"native\"\n[[image]]\nname = \"host\"".to_owned(),
                "give each [[image]] its runtime",
            ),
            (
                "[[tenant]]\nname = \"a\"\nimages = [\"python3.11-bookworm\"]".to_owned(),
                "tenant[0].images `python3.11-bookworm`: names of [[image]] entries: host",
            ),
            (
                "[[tenant]]\nname = \"a\"\nimages = []".to_owned(),
                "tenant[0].images",
            ),
        ] {
            let err = images_of(&text).unwrap_err();
            assert!(err.contains(expect), "{text}:\n{err}\nexpected: {expect}");
        }
    }

    #[test]
    fn cpu_quotas_are_positive_and_the_burst_defaults_to_a_minute() {
        let config = ServeConfig::from_toml(
            "[[tenant]]\nname = \"a\"\ncpu_seconds_per_minute = 30\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            config.tenants[0].cpu,
            Some(CpuQuota {
                seconds_per_minute: 30.0,
                burst_seconds: 30.0
            })
        );
        assert_eq!(ServeConfig::local().tenants[0].cpu, None);
        for text in [
            "cpu_seconds_per_minute = 0",
            "cpu_seconds_per_minute = -1.0",
            "cpu_seconds_per_minute = nan",
            "cpu_seconds_per_minute = 1\ncpu_seconds_burst = 0",
            "cpu_seconds_burst = 5",
        ] {
            let err =
                ServeConfig::from_toml(&format!("[[tenant]]\nname = \"a\"\n{text}"), "t.toml")
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("tenant[0].cpu_seconds_"), "{text}: {err}");
        }
    }

    #[test]
    fn the_docker_warm_pool_is_on_by_default_and_zero_turns_it_off() {
        assert_eq!(ServeConfig::local().docker_warm_pool, 2);
        let cold = ServeConfig::from_toml("[docker]\nwarm_pool = 0", "t.toml").unwrap();
        assert_eq!(cold.docker_warm_pool, 0);
        let err = ServeConfig::from_toml("[docker]\nwarm_pool = 33", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker.warm_pool") && err.contains("0 (a new container per run) to 32"),
            "{err}"
        );
        let err = ServeConfig::from_toml("[docker]\nwarm = 1", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("warm"), "{err}");
        // `pyward serve --cold` turns the pools off too.
        let mut cold = ServeConfig::from_toml("[docker]\nwarm_pool = 4", "t.toml").unwrap();
        assert_eq!(cold.docker_warm_pool, 4);
        cold.cold();
        assert_eq!(cold.docker_warm_pool, 0);
    }

    #[test]
    fn the_example_config_is_valid() {
        let config =
            ServeConfig::from_toml(include_str!("../../pyward.example.toml"), "example").unwrap();
        assert!(config.requires_auth());
        let names: Vec<&str> = config.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["host", "python3.11-bookworm"]);
        assert_eq!(config.tenants[1].images, ["host"]);
        assert!(config.tenants.iter().all(|t| t.cpu.is_some()));
        assert!(config.warm.is_some());
    }

    #[test]
    fn the_native_warm_path_is_on_unless_turned_off() {
        let warm = ServeConfig::local().warm.expect("warm by default");
        assert_eq!((warm.modules.len(), warm.max_zygotes), (0, 8));
        let text = "[native]\npreload = [\"json\", \"xml.etree.ElementTree\"]\nmax_zygotes = 2";
        let warm = ServeConfig::from_toml(text, "t.toml")
            .unwrap()
            .warm
            .unwrap();
        assert_eq!(warm.modules, ["json", "xml.etree.ElementTree"]);
        assert_eq!(warm.max_zygotes, 2);
        let off = ServeConfig::from_toml("[native]\nwarm = false", "t.toml").unwrap();
        assert!(off.warm.is_none());
        let mut cold = ServeConfig::local();
        cold.cold();
        assert!(cold.warm.is_none());
    }

    #[test]
    fn bad_native_settings_name_the_field_and_what_is_allowed() {
        for (text, field, allowed) in [
            ("max_zygotes = 0", "native.max_zygotes", "1 to 64"),
            ("max_zygotes = 65", "native.max_zygotes", "1 to 64"),
            (
                "preload = [\"os; import x\"]",
                "native.preload",
                "module names",
            ),
            ("preload = [\"\"]", "native.preload", "module names"),
            ("preload = [\"a..b\"]", "native.preload", "module names"),
            ("zygotes = 3", "unknown field", "warm"),
        ] {
            let err = ServeConfig::from_toml(&format!("[native]\n{text}"), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(field) && err.contains(allowed),
                "{text}: {err}"
            );
        }
    }
}
