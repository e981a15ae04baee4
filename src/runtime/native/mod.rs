//! The native runtime: Linux namespaces, cgroups, seccomp and dropped
//! capabilities set up by pyward itself, with no Docker needed.
//!
//! `plan` prepares every byte the sandbox needs, `child` is the sandbox's own
//! setup (the pid-1 stub and the payload), `supervise` is the parent's watch,
//! `verdict` turns what was seen into a verdict, `outputs` brings the
//! declared output files back. Raw syscalls live in `sys`.
//! `warm` is the opt-in warm path: calls forked from a sandboxed zygote
//! interpreter (`zygote.py`) instead of a fresh one.

mod child;
mod outputs;
mod plan;
mod status;
mod supervise;
mod verdict;
mod warm;

pub use warm::{WarmConfig, WarmRuntime};

use super::{Outcome, RunError, RunWatch, Runtime, Submission};
use crate::arch::Arch;
use crate::policy::{DeniedAction, Network, SandboxPolicy};
use crate::seccomp::{self, Allowlist, SeccompError, SeccompProgram};
use crate::sys;
use crate::sys::cgroup::{CgroupError, CgroupLimits, CgroupPool, Layout};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use supervise::IdMap;

/// Host-side settings of the native runtime.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// The interpreter to run: a real binary, /usr/bin/python3 by default.
    pub python: PathBuf,
    /// The root filesystem whose /usr the sandbox gets: None for the host's,
    /// or a rootfs built by `pyward image build` (the same bytes the Docker
    /// runtime runs). `python` is a path inside it.
    pub rootfs: Option<PathBuf>,
    /// Where pyward keeps its mount point and cgroup slot locks.
    pub state_dir: PathBuf,
    /// First host uid/gid of the 65536 the sandbox's ids map onto (when pyward runs as root).
    pub host_id_base: u32,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            python: "/usr/bin/python3".into(),
            rootfs: None,
            state_dir: "/run/pyward".into(),
            host_id_base: 100_000,
        }
    }
}

/// A failure preparing or watching a native run on the host.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// pyward is not running as root.
    #[error(
        "the native runtime needs root: it maps 65536 sandbox ids onto unused host ids, writes cgroup limits and prepares network namespaces"
    )]
    NotRoot,
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
    /// The policy's seccomp allowlist could not be loaded or compiled.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// cgroups could not be set up or read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A pipe or memfd for the sandbox's stdio could not be made.
    #[error("failed to create a pipe for the sandbox")]
    Pipe {
        /// The cause.
        source: nix::Error,
    },
    /// A pidfd of pyward's own process could not be opened (Linux 5.3+).
    #[error("failed to open a pidfd for pyward itself (pidfd_open needs Linux 5.3 or later)")]
    SelfPidfd {
        /// The cause.
        source: nix::Error,
    },
    /// stdin could not be staged.
    #[error("failed to stage stdin for the sandbox")]
    Stdin {
        /// The cause.
        source: std::io::Error,
    },
    /// A reusable network namespace could not be made or entered.
    #[error("failed to prepare a network namespace for the sandbox")]
    Netns {
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
    /// A warm-path zygote did not start (what it printed, or its setup failure).
    #[error("the warm-path zygote did not start: {log}")]
    ZygoteStart {
        /// The zygote's output, or the failed setup step.
        log: String,
    },
    /// A host-side step of a warm call failed.
    #[error("warm call: failed to {step}")]
    Warm {
        /// The step.
        step: &'static str,
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
    /// Empty network namespaces, reused one run at a time.
    netns: Arc<NetnsPool>,
    /// Reaps stubs after their run's outcome has gone back.
    reaper: Reaper,
    /// Compiled filters by (allowlist, denied action): compiling once per policy, not per run.
    filters: Mutex<HashMap<FilterKey, Arc<SeccompProgram>>>,
    /// The Landlock rules every payload restricts itself to, where the kernel offers Landlock.
    landlock: Option<Arc<plan::LandlockPlan>>,
}

impl NativeRuntime {
    /// Checks the host (interpreter, cgroups) and prepares the state directory.
    pub fn new(config: NativeConfig) -> Result<NativeRuntime, NativeError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(NativeError::NotRoot);
        }
        let source = config.rootfs.as_deref().unwrap_or(Path::new("/"));
        let python = source.join(config.python.strip_prefix("/").unwrap_or(&config.python));
        if !is_executable(&python) {
            return Err(NativeError::Interpreter { path: python });
        }
        let root = config.state_dir.join("root");
        std::fs::create_dir_all(&root).map_err(|source| NativeError::StateDir {
            path: root.clone(),
            source,
        })?;
        let cgroups = CgroupPool::new(Layout::detect()?, &config.state_dir.join("cgroups"))?;
        let ids = IdMap {
            base: config.host_id_base,
        };
        let netns = Arc::new(NetnsPool::default());
        Ok(NativeRuntime {
            config,
            cgroups,
            ids,
            netns: netns.clone(),
            reaper: Reaper::new(netns),
            filters: Mutex::default(),
            landlock: sys::landlock::abi()
                .ok()
                .map(|abi| Arc::new(plan::LandlockPlan::for_abi(abi))),
        })
    }

    /// The Landlock ABI every run's payload is restricted with, or `None`
    /// where the kernel offers no Landlock (the other layers still apply).
    pub fn landlock_abi(&self) -> Option<u32> {
        self.landlock.as_ref().map(|plan| plan.abi)
    }

    /// The seccomp filters for `policy` on this host's architecture, compiled once.
    fn seccomp(&self, policy: &SandboxPolicy) -> Result<Arc<SeccompProgram>, NativeError> {
        let settings = &policy.seccomp;
        let key = (
            settings.allowlist.clone(),
            settings.search_dir.clone(),
            settings.denied,
        );
        let mut filters = self
            .filters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(program) = filters.get(&key) {
            return Ok(program.clone());
        }
        let allowlist = Allowlist::load(&key.0, key.1.as_deref())?;
        let program = Arc::new(seccomp::compile(&allowlist, key.2, Arch::host())?);
        filters.insert(key, program.clone());
        Ok(program)
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

    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let seccomp = self.seccomp(policy)?;
        let plan = plan::Plan::new(
            &self.config,
            policy,
            submission,
            seccomp,
            self.landlock.clone(),
        )?;
        self.run_plan(&plan, policy, submission, watch)
    }
}

impl NativeRuntime {
    /// Runs `plan` (made for `policy` and `submission`) in a fresh sandbox.
    fn run_plan(
        &self,
        plan: &plan::Plan,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let loopback = policy.network == Network::Loopback;
        let netns = self.netns.take(loopback)?;
        let cgroup = self.cgroups.acquire().map_err(NativeError::from)?;
        let limits = &policy.limits;
        cgroup
            .set_limits(&cgroup_limits(limits))
            .map_err(NativeError::from)?;
        let ran = supervise::run(&netns, plan, limits, &cgroup, submission, self.ids, watch);
        match ran {
            Ok((outcome, Some(stub))) => {
                self.reaper.finish(Leftover {
                    stub,
                    cgroup,
                    netns,
                    loopback,
                });
                Ok(outcome)
            }
            Ok((outcome, None)) => {
                drop(cgroup);
                self.netns.give_back(loopback, netns);
                Ok(outcome)
            }
            Err(error) => {
                self.netns.give_back(loopback, netns);
                Err(error.into())
            }
        }
    }
}

/// A run whose program has ended but whose stub is still exiting. Its cgroup
/// slot and network namespace are reused only once the stub is reaped.
struct Leftover {
    stub: supervise::Stub,
    cgroup: crate::sys::cgroup::Cgroup,
    netns: OwnedFd,
    loopback: bool,
}

impl Leftover {
    fn finish(self, pool: &NetnsPool) {
        // A stub that cannot be reaped (it never can fail to, short of a bug)
        // keeps its namespace out of the pool rather than risk sharing it.
        if self.stub.reap().is_ok() {
            pool.give_back(self.loopback, self.netns);
        }
        drop(self.cgroup);
    }
}

/// Finishes leftovers on a thread of its own, so that a caller gets its
/// outcome as soon as the program has ended: a stub's exit tears down its
/// namespaces, which takes a few hundred microseconds.
struct Reaper {
    queue: Option<std::sync::mpsc::Sender<Leftover>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pool: Arc<NetnsPool>,
}

impl Reaper {
    fn new(pool: Arc<NetnsPool>) -> Reaper {
        let (queue, leftovers) = std::sync::mpsc::channel::<Leftover>();
        let thread_pool = pool.clone();
        let spawned = std::thread::Builder::new()
            .name("pyward-reaper".into())
            .spawn(move || leftovers.into_iter().for_each(|l| l.finish(&thread_pool)));
        match spawned {
            Ok(thread) => Reaper {
                queue: Some(queue),
                thread: Some(thread),
                pool,
            },
            Err(_) => Reaper {
                queue: None,
                thread: None,
                pool,
            },
        }
    }

    fn finish(&self, leftover: Leftover) {
        match &self.queue {
            Some(queue) => {
                if let Err(std::sync::mpsc::SendError(leftover)) = queue.send(leftover) {
                    leftover.finish(&self.pool);
                }
            }
            None => leftover.finish(&self.pool),
        }
    }
}

impl Drop for Reaper {
    /// Finishes every leftover before the runtime goes: a cgroup slot is
    /// only free for another pyward process once its stub is reaped.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Empty network namespaces for sandboxes, one run at a time each: `lo` down
/// for policies without network, `lo` up for `loopback` ones. A namespace is
/// only handed out again once every process of its last run is gone, so
/// nothing (not even an abstract unix socket) is shared between runs.
#[derive(Default)]
struct NetnsPool {
    idle: Mutex<[Vec<OwnedFd>; 2]>,
}

impl NetnsPool {
    fn take(&self, loopback: bool) -> Result<OwnedFd, NativeError> {
        let reused = self.lock()[usize::from(loopback)].pop();
        match reused {
            Some(netns) => Ok(netns),
            None => sys::netns::create(loopback).map_err(|source| NativeError::Netns { source }),
        }
    }

    fn give_back(&self, loopback: bool, netns: OwnedFd) {
        self.lock()[usize::from(loopback)].push(netns);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Vec<OwnedFd>; 2]> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A run's cgroup limits, from its policy's.
fn cgroup_limits(limits: &crate::policy::Limits) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: limits.memory.bytes(),
        pids: limits.pids.into(),
        cpu_quota_us: (limits.cpus * 100_000.0).round().max(1000.0) as u64,
        cpu_period_us: 100_000,
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a compiled filter depends on: the allowlist's name, where it is looked up, the denied action.
type FilterKey = (String, Option<PathBuf>, DeniedAction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landlock_refuses_a_write_that_a_writable_bind_would_allow() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("\n*** SKIPPED: the native runtime needs root ***\n");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            return;
        }
        let runtime = NativeRuntime::new(NativeConfig::default()).unwrap();
        if runtime.landlock_abi().is_none() {
            eprintln!("\n*** SKIPPED: this kernel offers no Landlock ***\n");
            return;
        }
        // A host directory the sandbox user may write, bound read-write at
        // /srv: only Landlock stands between the program and it.
        let host = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            host.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let policy = SandboxPolicy::builtin("strict").unwrap();
        let code = "import errno\ntry:\n    open('/srv/x', 'w').write('1')\n    print('wrote')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])";
        let submission = Submission::code(code);
        let run = |landlock: Option<Arc<plan::LandlockPlan>>| {
            let seccomp = runtime.seccomp(&policy).unwrap();
            let mut plan =
                plan::Plan::new(&runtime.config, &policy, &submission, seccomp, landlock).unwrap();
            let srv = runtime.config.state_dir.join("root/srv");
            let srv = std::ffi::CString::new(srv.display().to_string()).unwrap();
            plan.dirs.push(srv.clone());
            plan.binds
                .push(plan::writable_bind(&host.path().display().to_string(), srv));
            let outcome = runtime
                .run_plan(&plan, &policy, &submission, &RunWatch::new())
                .unwrap();
            String::from_utf8_lossy(&outcome.stdout.bytes).into_owned()
        };
        assert_eq!(
            run(None),
            "wrote\n",
            "the bind is writable without Landlock"
        );
        assert!(host.path().join("x").exists());
        std::fs::remove_file(host.path().join("x")).unwrap();
        assert_eq!(run(runtime.landlock.clone()), "EACCES\n");
        assert!(!host.path().join("x").exists());
    }
}
