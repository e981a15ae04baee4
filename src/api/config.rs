//! The server's configuration: `pyward serve --config pyward.toml`, or the
//! local defaults without one (see pyward.example.toml for every field).
//!
//! Like a policy, a configuration that exists is valid: raw TOML structs with
//! `deny_unknown_fields` become a `ServeConfig` only through validation.

use crate::executor::admission::TenantConfig;
use crate::policy::{ByteSize, parse_duration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The runtime a server runs submissions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Linux namespaces set up by pyward (the default).
    Native,
    /// A fresh hardened container per run.
    Docker,
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The runtime.
    pub runtime: RuntimeKind,
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
    /// With the Docker runtime: ready containers kept per policy (`[docker]
    /// warm_pool`); 0 runs every call in a container created for it.
    pub docker_warm_pool: usize,
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
    #[serde(default, rename = "tenant")]
    tenants: Vec<RawTenant>,
}

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
struct RawTenant {
    name: String,
    #[serde(default)]
    tokens_sha256: Vec<String>,
    policies: Option<Vec<String>>,
    max_concurrent: Option<usize>,
    runs_per_minute: Option<u32>,
    burst: Option<u32>,
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
        Ok(TenantConfig {
            name: raw.name,
            token_hashes,
            policies,
            max_concurrent: self.at_least_one(
                &field("max_concurrent"),
                raw.max_concurrent,
                max_running,
            )?,
            runs_per_minute,
            burst: raw.burst.unwrap_or(runs_per_minute.max(1)),
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
    /// The configuration without a file: 127.0.0.1:8080, native, strict, one local tenant without auth.
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
            tenants.push(check.tenant(index, tenant, max_running)?);
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
                },
                max_running,
            )?);
        }
        let config = ServeConfig {
            listen,
            runtime: raw.runtime.unwrap_or(RuntimeKind::Native),
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
    }

    #[test]
    fn the_example_config_is_valid() {
        let config =
            ServeConfig::from_toml(include_str!("../../pyward.example.toml"), "example").unwrap();
        assert!(config.requires_auth());
    }
}
