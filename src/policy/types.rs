//! The validated policy types. A `SandboxPolicy` that exists is valid.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A number of bytes. Parsed from strings such as `"256MiB"` or `"64KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * 1024 * 1024)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedAction {
    /// The syscall fails with EPERM and the program carries on.
    Errno,
    /// The whole sandbox is killed; the verdict is `security_violation`.
    Kill,
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

/// The seccomp part of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompSettings {
    /// Name of the allowlist under policies/seccomp/ (without `.toml`).
    pub allowlist: String,
    /// What happens to a syscall that is neither allowed nor in the dangerous set.
    pub denied: DeniedAction,
}

/// The user the program runs as, inside the sandbox's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUser {
    /// uid inside the sandbox (65534 by default; never 0).
    pub uid: u32,
    /// gid inside the sandbox (65534 by default; never 0).
    pub gid: u32,
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
