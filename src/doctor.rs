//! `pyward doctor`: whether this host can run pyward's default configuration
//! (the native runtime on the host's interpreter under the strict policy),
//! and what else it offers (Docker, other architectures, images, Landlock).
//!
//! Each check reads the host and says what it found and, when something is
//! missing, the one thing to do about it. Reads only: nothing here changes
//! the host, except the last check, which runs one real sandboxed program.

use crate::arch::Arch;
use crate::image::Cache as ImageCache;
use crate::policy::SandboxPolicy;
use crate::runtime::Runtime;
use crate::runtime::native::{NativeConfig, NativeRuntime};
use crate::sys;
use crate::sys::cgroup::Layout;
use crate::{DockerConfig, DockerRuntime, Submission, Verdict};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The oldest kernel the native runtime runs on: clone3 into a cgroup (5.7),
/// close_range (5.9), openat2 (5.6), pidfd_open (5.3).
const MIN_KERNEL: (u32, u32) = (5, 9);

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Present and working.
    Ok,
    /// Missing, but the default configuration does not need it.
    Warn,
    /// Missing, and the default configuration cannot run without it.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`kernel`, `user namespaces`, `cgroups`, ...).
    pub name: &'static str,
    /// What was found.
    pub status: CheckStatus,
    /// What the check saw, in a sentence.
    pub detail: String,
    /// The one thing to do about it, when something is missing.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn missing(
        name: &'static str,
        needed: bool,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: if needed {
                CheckStatus::Fail
            } else {
                CheckStatus::Warn
            },
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// `name: detail` and, if there is one, `; fix: ...`.
    pub fn line(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {}; fix: {fix}", self.name, self.detail),
            None => format!("{}: {}", self.name, self.detail),
        }
    }
}

/// Where the checks look.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The native runtime's settings (interpreter, state dir).
    pub native: NativeConfig,
    /// The image cache (`pyward image build --cache-dir`).
    pub image_cache: PathBuf,
    /// Whether to ask the Docker daemon.
    pub docker: bool,
    /// Whether to end with a real sandboxed run of `pass` under `strict`.
    pub trial_run: bool,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            native: NativeConfig::default(),
            image_cache: crate::DEFAULT_CACHE_DIR.into(),
            docker: true,
            trial_run: true,
        }
    }
}

/// Every check, in the order a reader fixes them.
pub fn check_host(options: &DoctorOptions) -> Vec<Check> {
    let mut checks = native_checks(&options.native);
    let can_try = checks.iter().all(|c| c.status != CheckStatus::Fail);
    checks.push(landlock());
    if options.docker {
        checks.push(docker());
    }
    checks.push(other_architectures());
    checks.push(images(&options.image_cache));
    if options.trial_run && can_try {
        checks.push(trial_run(&options.native));
    }
    checks
}

/// The checks the native runtime needs to start, without the trial run:
/// what `pyward run` and `serve` print when the runtime fails to start.
pub fn native_checks(native: &NativeConfig) -> Vec<Check> {
    vec![
        kernel(),
        root(),
        user_namespaces(),
        cgroups(),
        seccomp(),
        interpreter(&native.python),
        state_dir(&native.state_dir),
    ]
}

/// True when no check failed: the default configuration can run.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != CheckStatus::Fail)
}

fn kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    match parse_version(&release) {
        Some(v) if v >= MIN_KERNEL => Check::ok("kernel", format!("Linux {release}")),
        _ => Check::missing(
            "kernel",
            true,
            format!("Linux {release:?}; the native runtime needs 5.9 or later"),
            "boot a kernel of 5.9 or later (every current distribution ships one)",
        ),
    }
}

/// `6.1.0-26-amd64` → (6, 1).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn root() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::ok("root", "running as root")
    } else {
        Check::missing(
            "root",
            true,
            "not root: the native runtime maps 65536 sandbox ids onto unused host ids and writes cgroup limits",
            "run pyward as root (rootless operation is not built yet)",
        )
    }
}

fn user_namespaces() -> Check {
    const NAME: &str = "user namespaces";
    let sysctl = |name: &str| read_trimmed(&Path::new("/proc/sys").join(name));
    if sysctl("user/max_user_namespaces").as_deref() == Some("0") {
        return Check::missing(
            NAME,
            true,
            "user.max_user_namespaces is 0",
            "sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d/)",
        );
    }
    let restricted = sysctl("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1");
    match sys::host::can_create_namespaces() {
        Ok(()) => Check::ok(
            NAME,
            if restricted {
                "a user, mount, pid and network namespace can be created (AppArmor restricts unprivileged ones; root is not restricted)"
            } else {
                "a user, mount, pid and network namespace can be created"
            },
        ),
        Err(errno) if restricted => Check::missing(
            NAME,
            true,
            format!("creating them fails ({errno}): kernel.apparmor_restrict_unprivileged_userns is 1"),
            format!("allow pyward alone: write the AppArmor profile `{}` to /etc/apparmor.d/pyward and run `apparmor_parser -r /etc/apparmor.d/pyward`", apparmor_profile()),
        ),
        Err(errno) => Check::missing(
            NAME,
            true,
            format!("creating them fails ({errno})"),
            match sysctl("kernel/unprivileged_userns_clone").as_deref() {
                Some("0") => "sysctl -w kernel.unprivileged_userns_clone=1".to_owned(),
                _ => "enable user namespaces (CONFIG_USER_NS) and check that no container or seccomp profile around pyward forbids unshare".to_owned(),
            },
        ),
    }
}

/// The AppArmor profile that lets this binary (and nothing else) create
/// user namespaces on a host that restricts them (Ubuntu 23.10 and later).
fn apparmor_profile() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/pyward".to_owned());
    format!(
        "abi <abi/4.0>, include <tunables/global> profile pyward {exe} flags=(unconfined) {{ userns, }}"
    )
}

fn cgroups() -> Check {
    const NAME: &str = "cgroups";
    match Layout::detect() {
        Ok(layout) => Check::ok(
            NAME,
            format!(
                "cgroup {} with the memory, pids and cpu controllers ({})",
                layout.version(),
                layout.describe()
            ),
        ),
        Err(e) => Check::missing(
            NAME,
            true,
            e.to_string(),
            "mount cgroup2 at /sys/fs/cgroup and enable the controllers for pyward's parent: echo '+memory +pids +cpu' > /sys/fs/cgroup/cgroup.subtree_control (under systemd: Delegate=yes in pyward's unit)",
        ),
    }
}

fn seccomp() -> Check {
    const NAME: &str = "seccomp";
    let actions =
        read_trimmed(Path::new("/proc/sys/kernel/seccomp/actions_avail")).unwrap_or_default();
    let needed = ["kill_process", "errno", "allow"];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|a| !actions.split_whitespace().any(|have| have == *a))
        .collect();
    if missing.is_empty() {
        Check::ok(NAME, format!("filter actions: {actions}"))
    } else {
        Check::missing(
            NAME,
            true,
            format!("the kernel lacks seccomp filter actions {missing:?} (has {actions:?})"),
            "boot a kernel with CONFIG_SECCOMP_FILTER (4.14 or later for kill_process)",
        )
    }
}

fn interpreter(python: &Path) -> Check {
    const NAME: &str = "interpreter";
    match std::fs::metadata(python) {
        Ok(meta) if meta.is_file() => {
            Check::ok(NAME, format!("{} (the `host` image)", python.display()))
        }
        _ => Check::missing(
            NAME,
            true,
            format!("{} is not a file", python.display()),
            "apt-get install python3 (the sandbox runs the host's real binary, not a shim)",
        ),
    }
}

fn state_dir(dir: &Path) -> Check {
    const NAME: &str = "state dir";
    match writable_dir(dir) {
        Ok(()) => Check::ok(NAME, format!("{} is writable", dir.display())),
        Err(e) => Check::missing(
            NAME,
            true,
            format!("{} is not writable: {e}", dir.display()),
            format!("mkdir -p {} as the user pyward runs as", dir.display()),
        ),
    }
}

fn landlock() -> Check {
    const NAME: &str = "landlock";
    match sys::landlock::abi() {
        Ok(abi) => Check::ok(
            NAME,
            format!(
                "ABI {abi}: each native run writes only to /tmp, its work dir and /dev's nodes"
            ),
        ),
        Err(errno) => Check::missing(
            NAME,
            false,
            format!(
                "not offered ({errno}): runs go without this layer (the mounts still decide what is writable)"
            ),
            "boot Linux 5.13 or later with landlock in lsm= (CONFIG_LSM)",
        ),
    }
}

fn docker() -> Check {
    const NAME: &str = "docker";
    match DockerRuntime::new(DockerConfig::default()) {
        Ok(runtime) => match runtime.check_image() {
            Ok(()) => Check::ok(NAME, "the daemon answers and the default image is loaded"),
            Err(e) => Check::missing(
                NAME,
                false,
                format!("the daemon answers, but {e}"),
                "pyward image build python3.11-bookworm",
            ),
        },
        Err(e) => Check::missing(
            NAME,
            false,
            format!("not usable: {e}"),
            "install and start Docker Engine for `--runtime docker` (the native runtime needs none)",
        ),
    }
}

fn other_architectures() -> Check {
    const NAME: &str = "other architectures";
    let foreign = Arch::ALL.into_iter().find(|&a| a != Arch::host());
    let Some(foreign) = foreign else {
        return Check::ok(NAME, "none to run");
    };
    let handler = match foreign {
        Arch::Arm64 => "qemu-aarch64",
        Arch::Amd64 => "qemu-x86_64",
    };
    let status = read_trimmed(&Path::new("/proc/sys/fs/binfmt_misc").join(handler));
    if status.as_deref().is_some_and(|s| s.starts_with("enabled")) {
        Check::ok(
            NAME,
            format!("{foreign} through binfmt_misc's {handler} (Docker runtime)"),
        )
    } else {
        Check::missing(
            NAME,
            false,
            format!("no enabled binfmt_misc handler {handler}: {foreign} images cannot run"),
            "apt-get install qemu-user-static binfmt-support",
        )
    }
}

fn images(cache_dir: &Path) -> Check {
    const NAME: &str = "images";
    match ImageCache::new(cache_dir).list() {
        Ok(built) if !built.is_empty() => {
            let mut names: Vec<String> = built
                .iter()
                .map(|b| format!("{}/{}", b.recipe, b.arch))
                .collect();
            names.sort();
            names.dedup();
            Check::ok(NAME, format!("built: {}", names.join(", ")))
        }
        Ok(_) => Check::missing(
            NAME,
            false,
            format!(
                "none built in {} (the `host` image needs none)",
                cache_dir.display()
            ),
            "pyward image build python3.11-bookworm --arch amd64,arm64",
        ),
        Err(e) => Check::missing(
            NAME,
            false,
            e.to_string(),
            format!("make {} readable", cache_dir.display()),
        ),
    }
}

fn trial_run(native: &NativeConfig) -> Check {
    const NAME: &str = "trial run";
    let failed = |detail: String| {
        Check::missing(
            NAME,
            true,
            detail,
            "see the lines above; RUST_LOG=debug pyward run -c pass shows every step",
        )
    };
    let runtime = match NativeRuntime::new(native.clone()) {
        Ok(runtime) => runtime,
        Err(e) => return failed(format!("the native runtime does not start: {e}")),
    };
    let policy = match SandboxPolicy::builtin("strict") {
        Ok(policy) => policy,
        Err(e) => return failed(format!("the strict policy does not load: {e}")),
    };
    match runtime.run(&policy, &Submission::code("pass")) {
        Ok(outcome) if outcome.verdict == Verdict::Ok => Check::ok(
            NAME,
            format!(
                "`pass` under strict: ok in {} ms",
                outcome.usage.wall.as_millis()
            ),
        ),
        Ok(outcome) => failed(format!(
            "`pass` under strict: {} ({})",
            outcome.verdict,
            outcome.message.unwrap_or_default()
        )),
        Err(e) => failed(format!("`pass` under strict did not run: {e}")),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Creates `dir` if needed and writes and removes a file in it.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_from_release_strings() {
        assert_eq!(parse_version("6.1.0-26-amd64"), Some((6, 1)));
        assert_eq!(parse_version("5.15.0-105-generic"), Some((5, 15)));
        assert_eq!(parse_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("5.4.0").unwrap() < MIN_KERNEL);
    }

    #[test]
    fn a_missing_need_fails_and_a_missing_extra_warns() {
        let need = Check::missing("x", true, "gone", "install it");
        let extra = Check::missing("y", false, "gone", "install it");
        assert_eq!(need.status, CheckStatus::Fail);
        assert_eq!(extra.status, CheckStatus::Warn);
        assert!(!can_run(&[need.clone(), extra.clone()]));
        assert!(can_run(&[extra, Check::ok("z", "fine")]));
        assert_eq!(need.line(), "x: gone; fix: install it");
    }

    #[test]
    fn a_state_dir_that_cannot_be_created_fails_with_its_fix() {
        let check = state_dir(Path::new("/proc/pyward-doctor-test"));
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(
            check
                .fix
                .unwrap()
                .contains("mkdir -p /proc/pyward-doctor-test")
        );
    }

    #[test]
    fn an_interpreter_that_is_not_there_fails() {
        let check = interpreter(Path::new("/nonexistent/python3"));
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(interpreter(Path::new("/usr/bin/python3")).status == CheckStatus::Ok);
    }
}
