//! The native runtime: Linux namespaces, cgroups, seccomp and dropped
//! capabilities set up by pyward itself, with no Docker needed.
//!
//! `plan` prepares every byte the sandbox needs, `child` is the sandbox's own
//! setup (the pid-1 stub and the payload), `supervise` is the parent's watch,
//! `verdict` turns what was seen into a verdict. Raw syscalls live in `sys`.

mod child;
mod plan;
mod status;
mod supervise;
mod verdict;

use super::{Outcome, RunError, Runtime, Submission};
use crate::policy::SandboxPolicy;
use crate::sys::cgroup::{CgroupError, CgroupLimits, CgroupPool, Layout};
use std::path::{Path, PathBuf};
use supervise::IdMap;

/// Host-side settings of the native runtime.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// The interpreter to run: a real binary, /usr/bin/python3 by default.
    pub python: PathBuf,
    /// Where pyward keeps its mount point and cgroup slot locks.
    pub state_dir: PathBuf,
    /// First host uid/gid of the 65536 the sandbox's ids map onto (when pyward runs as root).
    pub host_id_base: u32,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            python: "/usr/bin/python3".into(),
            state_dir: "/run/pyward".into(),
            host_id_base: 100_000,
        }
    }
}

/// A failure preparing or watching a native run on the host.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The configured interpreter is not an executable file.
    #[error(
        "interpreter {path} is not an executable file (set NativeConfig::python to a real binary, e.g. /usr/bin/python3)"
    )]
    Interpreter {
        /// The configured path.
        path: PathBuf,
    },
    /// The state directory could not be created.
    #[error("failed to create the state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// cgroups could not be set up or read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A pipe or memfd for the sandbox's stdio could not be made.
    #[error("failed to create a pipe for the sandbox")]
    Pipe {
        /// The cause.
        source: nix::Error,
    },
    /// stdin could not be staged.
    #[error("failed to stage stdin for the sandbox")]
    Stdin {
        /// The cause.
        source: std::io::Error,
    },
    /// clone3 with new namespaces failed.
    #[error("failed to create the sandbox's namespaces (clone3); user namespaces must be enabled")]
    Clone {
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a uid/gid map failed.
    #[error("failed to write {value:?} to {path}")]
    IdMap {
        /// The proc file.
        path: String,
        /// The map written.
        value: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The stub could not be told to go on.
    #[error("failed to release the sandbox's stub")]
    Release {
        /// The cause.
        source: nix::Error,
    },
    /// Reaping the stub failed.
    #[error("failed to reap the sandbox's stub")]
    Wait {
        /// The cause.
        source: nix::Error,
    },
}

/// Runs submissions in namespaces pyward sets up itself.
pub struct NativeRuntime {
    config: NativeConfig,
    cgroups: CgroupPool,
    ids: IdMap,
}

impl NativeRuntime {
    /// Checks the host (interpreter, cgroups) and prepares the state directory.
    pub fn new(config: NativeConfig) -> Result<NativeRuntime, NativeError> {
        if !is_executable(&config.python) {
            return Err(NativeError::Interpreter {
                path: config.python.clone(),
            });
        }
        let root = config.state_dir.join("root");
        std::fs::create_dir_all(&root).map_err(|source| NativeError::StateDir {
            path: root.clone(),
            source,
        })?;
        let cgroups = CgroupPool::new(Layout::detect()?, &config.state_dir.join("cgroups"))?;
        let ids = if nix::unistd::geteuid().is_root() {
            IdMap::Range {
                base: config.host_id_base,
            }
        } else {
            IdMap::Single {
                host_uid: nix::unistd::geteuid().as_raw(),
                host_gid: nix::unistd::getegid().as_raw(),
            }
        };
        Ok(NativeRuntime {
            config,
            cgroups,
            ids,
        })
    }

    /// The cgroup version in use ("v1" or "v2").
    pub fn cgroup_version(&self) -> &'static str {
        self.cgroups.layout().version()
    }
}

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run(&self, policy: &SandboxPolicy, submission: &Submission) -> Result<Outcome, RunError> {
        let seccomp = Vec::new();
        let privileged = matches!(self.ids, IdMap::Range { .. });
        let plan = plan::Plan::new(&self.config, policy, submission, seccomp, privileged)?;
        let cgroup = self.cgroups.acquire().map_err(NativeError::from)?;
        let limits = &policy.limits;
        cgroup
            .set_limits(&CgroupLimits {
                memory_bytes: limits.memory.bytes(),
                pids: limits.pids.into(),
                cpu_quota_us: (limits.cpus * 100_000.0).round().max(1000.0) as u64,
                cpu_period_us: 100_000,
            })
            .map_err(NativeError::from)?;
        Ok(supervise::run(
            &plan,
            limits,
            &cgroup,
            &submission.stdin,
            self.ids,
        )?)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
