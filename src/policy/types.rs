//! The validated policy types. A `SandboxPolicy` that exists is valid.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A number of bytes. Parsed from strings such as `"256MiB"` or `"64KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n * 1024)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * 1024 * 1024)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n * 1024 * 1024 * 1024)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Network access inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Network {
    /// A fresh network namespace with no interface up: no socket can reach anything.
    None,
    /// A fresh network namespace with only `lo` up: the program can talk to itself.
    Loopback,
}

/// What happens to a syscall that is not on the allowlist (the dangerous set is always killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeniedAction {
    /// The syscall fails with EPERM and the program carries on.
    Errno,
    /// The whole sandbox is killed; the verdict is `security_violation`.
    Kill,
}

impl Network {
    /// The secure default: no network at all.
    pub const fn strict() -> Network {
        Network::None
    }

    /// The word used in policy files: `none` or `loopback`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Loopback => "loopback",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DeniedAction {
    /// The default: a denied syscall fails with EPERM (Python handles that gracefully).
    pub const fn strict() -> DeniedAction {
        DeniedAction::Errno
    }

    /// The word used in policy files: `errno` or `kill`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeniedAction::Errno => "errno",
            DeniedAction::Kill => "kill",
        }
    }
}

impl fmt::Display for DeniedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource limits. Every field is enforced by both runtimes.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time before the whole sandbox is killed (`timeout`).
    pub wall_time: Duration,
    /// CPU time of all the sandbox's processes together (`cpu_limit`).
    pub cpu_time: Duration,
    /// Memory of the whole sandbox, tmpfs pages included; no swap (`memory_limit`).
    pub memory: ByteSize,
    /// Processes and threads together (`pids_limit`).
    pub pids: u32,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: u32,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size: ByteSize,
    /// Bytes kept of stdout, and separately of stderr; more ends the run (`output_limit`).
    pub output: ByteSize,
    /// Size of each writable tmpfs (/tmp and the work dir).
    pub tmpfs: ByteSize,
    /// CPU bandwidth, in cores (a CFS quota): 0.5 is half of one core.
    pub cpus: f64,
}

impl Limits {
    /// The strict limits: the defaults for every field a policy file omits,
    /// and the values of the shipped `strict` policy.
    pub const fn strict() -> Limits {
        Limits {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(5),
            memory: ByteSize::mib(256),
            pids: 32,
            open_files: 64,
            file_size: ByteSize::mib(16),
            output: ByteSize::mib(1),
            tmpfs: ByteSize::mib(16),
            cpus: 1.0,
        }
    }
}

/// Per-run limits a caller asks for. Each may only tighten the policy's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitOverrides {
    /// See [`Limits::wall_time`].
    pub wall_time: Option<Duration>,
    /// See [`Limits::cpu_time`].
    pub cpu_time: Option<Duration>,
    /// See [`Limits::memory`].
    pub memory: Option<ByteSize>,
    /// See [`Limits::pids`].
    pub pids: Option<u32>,
    /// See [`Limits::open_files`].
    pub open_files: Option<u32>,
    /// See [`Limits::file_size`].
    pub file_size: Option<ByteSize>,
    /// See [`Limits::output`].
    pub output: Option<ByteSize>,
    /// See [`Limits::tmpfs`].
    pub tmpfs: Option<ByteSize>,
    /// See [`Limits::cpus`].
    pub cpus: Option<f64>,
}

/// The environment a sandboxed program sees. Nothing from pyward's own environment leaks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    /// Variables always set (for example `PATH`, `LANG`, `PYTHONDONTWRITEBYTECODE`).
    pub set: BTreeMap<String, String>,
    /// Names a request may set. A request naming any other variable is refused.
    pub allow: Vec<String>,
}

impl EnvPolicy {
    /// The strict environment: a minimal fixed set, and nothing a request may add.
    pub fn strict() -> EnvPolicy {
        let set = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("HOME", "/tmp"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"),
        ];
        EnvPolicy {
            set: set
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            allow: Vec::new(),
        }
    }
}

/// The seccomp part of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompSettings {
    /// Name of the allowlist under policies/seccomp/ (without `.toml`).
    pub allowlist: String,
    /// What happens to a syscall that is neither allowed nor in the dangerous set.
    pub denied: DeniedAction,
    /// Where to look for `seccomp/NAME.toml` before the built-in allowlists:
    /// the directory of the policy file, for a policy loaded from a file.
    pub search_dir: Option<std::path::PathBuf>,
}

impl SeccompSettings {
    /// The strict allowlist (`python-strict`), denied syscalls failing with EPERM.
    pub fn strict() -> SeccompSettings {
        SeccompSettings {
            allowlist: "python-strict".to_owned(),
            denied: DeniedAction::strict(),
            search_dir: None,
        }
    }
}

/// The user the program runs as, inside the sandbox's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUser {
    /// uid inside the sandbox (65534 by default; never 0).
    pub uid: u32,
    /// gid inside the sandbox (65534 by default; never 0).
    pub gid: u32,
}

impl SandboxUser {
    /// `nobody`: uid and gid 65534.
    pub const fn strict() -> SandboxUser {
        SandboxUser {
            uid: 65534,
            gid: 65534,
        }
    }
}

/// A complete, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPolicy {
    /// The policy's name (`strict`, `standard`, or the file stem).
    pub name: String,
    /// One line saying what the policy is for.
    pub description: String,
    /// Resource limits.
    pub limits: Limits,
    /// Network access.
    pub network: Network,
    /// Environment.
    pub env: EnvPolicy,
    /// Syscall filtering.
    pub seccomp: SeccompSettings,
    /// The unprivileged user the program runs as.
    pub user: SandboxUser,
}
