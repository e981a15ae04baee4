//! cgroups for sandboxes: a pool of pre-created cgroups (creating one per call
//! costs 5–15 ms), on cgroup v1 controllers or on a v2 hierarchy.
//!
//! A slot is claimed with an exclusive `flock` on its lock file, so several
//! pyward processes share one pool safely and a crashed one frees its slots.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failure managing cgroups, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither v1 controllers nor a v2 hierarchy with the needed controllers were found.
    #[error(
        "no usable cgroup hierarchy: need the memory, pids and cpu controllers on cgroup v1, or a cgroup v2 hierarchy offering them ({detail})"
    )]
    NoHierarchy {
        /// What was found instead.
        detail: String,
    },
    /// Reading a cgroup or proc file failed.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("failed to write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Creating a cgroup directory or lock file failed.
    #[error("failed to create {path}")]
    Create {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Every slot of the pool is in use.
    #[error("all {0} sandbox cgroups are in use; wait for a run to finish")]
    Exhausted(usize),
}

/// Which cgroup version, and where pyward's cgroups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: one directory per controller.
    V1 {
        /// The memory controller's pyward directory.
        memory: PathBuf,
        /// The pids controller's pyward directory.
        pids: PathBuf,
        /// The cpu controller's pyward directory.
        cpu: PathBuf,
        /// The cpuacct controller's pyward directory (may equal `cpu`).
        cpuacct: PathBuf,
    },
    /// cgroup v2: one unified directory with memory, pids and cpu enabled for children.
    V2 {
        /// pyward's directory in the unified hierarchy.
        base: PathBuf,
    },
}

/// Limits written into a cgroup before a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit in bytes; swap is set to the same total (no swap).
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
    /// CFS quota per period, in microseconds.
    pub cpu_quota_us: u64,
    /// CFS period, in microseconds.
    pub cpu_period_us: u64,
}

/// Event counters read before and after a run; the difference says what happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Processes the OOM killer killed in this cgroup.
    pub oom_kills: u64,
    /// Forks refused because the pids limit was reached.
    pub pids_max_hits: u64,
}

const POOL_SLOTS: usize = 64;

impl Layout {
    /// Finds the hierarchy: v1 when the memory, pids and cpu controllers are
    /// mounted as v1 (hybrid hosts), else the unified v2 hierarchy.
    pub fn detect() -> Result<Layout, CgroupError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Self::from_proc(&mountinfo, &own)
    }

    /// [`Layout::detect`] from the text of /proc/self/mountinfo and /proc/self/cgroup.
    pub fn from_proc(mountinfo: &str, own_cgroups: &str) -> Result<Layout, CgroupError> {
        let mounts = parse_cgroup_mounts(mountinfo);
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let mount = mounts
                .iter()
                .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == controller))?;
            let own = own_cgroups.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                ctrls.split(',').any(|c| c == controller).then_some(path)
            })?;
            Some(join_cgroup(mount, own).join("pyward"))
        };
        if let (Some(memory), Some(pids), Some(cpu)) =
            (v1_dir("memory"), v1_dir("pids"), v1_dir("cpu"))
        {
            let cpuacct = v1_dir("cpuacct").unwrap_or_else(|| cpu.clone());
            return Ok(Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            });
        }
        if let Some(mount) = mounts.iter().find(|m| m.version == 2) {
            // pyward's cgroups hang off the mounted cgroup: the hierarchy's
            // root, or in a cgroup namespace the namespace's root, whose
            // processes `CgroupPool::new` moves to a leaf (see `vacate`).
            return Ok(Layout::V2 {
                base: mount.mount_point.join("pyward"),
            });
        }
        Err(CgroupError::NoHierarchy {
            detail: format!("{} cgroup mounts seen, none usable", mounts.len()),
        })
    }

    /// The same layout one level down, in the child cgroup `name`.
    fn join(&self, name: &str) -> Layout {
        match self {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => Layout::V1 {
                memory: memory.join(name),
                pids: pids.join(name),
                cpu: cpu.join(name),
                cpuacct: cpuacct.join(name),
            },
            Layout::V2 { base } => Layout::V2 {
                base: base.join(name),
            },
        }
    }

    /// Every directory of the layout (one per controller on v1).
    fn dirs(&self) -> Vec<&PathBuf> {
        match self {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => vec![memory, pids, cpu, cpuacct],
            Layout::V2 { base } => vec![base],
        }
    }

    /// Where pyward's cgroups live, for people: the memory controller's
    /// directory on v1, the unified directory on v2.
    pub fn describe(&self) -> String {
        match self {
            Layout::V1 { memory, .. } => format!(
                "pyward's cgroups under {} and its siblings",
                memory.display()
            ),
            Layout::V2 { base } => format!("pyward's cgroups under {}", base.display()),
        }
    }

    /// "v1" or "v2".
    pub fn version(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }
}

struct CgroupMount {
    version: u8,
    root: String,
    mount_point: PathBuf,
    controllers: Vec<String>,
}

fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or("");
            let version = match fstype {
                "cgroup" => 1,
                "cgroup2" => 2,
                _ => return None,
            };
            Some(CgroupMount {
                version,
                root: fields.get(3)?.to_string(),
                mount_point: PathBuf::from(fields.get(4)?),
                controllers: options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn join_cgroup(mount: &CgroupMount, own: &str) -> PathBuf {
    let relative = own.strip_prefix(mount.root.as_str()).unwrap_or(own);
    mount.mount_point.join(relative.trim_start_matches('/'))
}

/// The pool of sandbox cgroups.
#[derive(Debug)]
pub struct CgroupPool {
    layout: Layout,
    lock_dir: PathBuf,
}

impl CgroupPool {
    /// A pool on `layout`, with slot lock files in `lock_dir`. Creates pyward's base directories.
    pub fn new(layout: Layout, lock_dir: &Path) -> Result<CgroupPool, CgroupError> {
        fs::create_dir_all(lock_dir).map_err(|source| CgroupError::Create {
            path: lock_dir.into(),
            source,
        })?;
        if let Layout::V2 { base } = &layout {
            enable_controllers(base.parent().unwrap_or(Path::new("/")))?;
        }
        layout
            .dirs()
            .into_iter()
            .try_for_each(|dir| create_dir(dir))?;
        if let Layout::V2 { base } = &layout {
            enable_controllers(base)?;
        }
        Ok(CgroupPool {
            layout,
            lock_dir: lock_dir.into(),
        })
    }

    /// The hierarchy in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Claims a free slot, creating its directories the first time it is used.
    pub fn acquire(&self) -> Result<Cgroup, CgroupError> {
        for index in 0..POOL_SLOTS {
            let lock_path = self.lock_dir.join(format!("slot-{index}.lock"));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|source| CgroupError::Create {
                    path: lock_path.clone(),
                    source,
                })?;
            let Ok(locked) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            // A slot whose last sandbox is not fully gone (a pyward that died
            // before reaping it) waits until it is; the next slot serves.
            let cgroup = self.slot(index, locked)?;
            if cgroup.is_empty()? {
                return Ok(cgroup);
            }
        }
        Err(CgroupError::Exhausted(POOL_SLOTS))
    }

    fn slot(&self, index: usize, lock: Flock<File>) -> Result<Cgroup, CgroupError> {
        let dirs = self.layout.join(&format!("slot-{index}"));
        dirs.dirs()
            .into_iter()
            .try_for_each(|dir| create_dir(dir))?;
        Ok(Cgroup { dirs, _lock: lock })
    }
}

/// One claimed slot of the pool; dropping it frees the slot.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Layout,
    _lock: Flock<File>,
}

impl Cgroup {
    /// Writes the run's limits.
    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match &self.dirs {
            Layout::V1 {
                memory, pids, cpu, ..
            } => {
                set_v1_memory(memory, limits.memory_bytes)?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                write(
                    &cpu.join("cpu.cfs_period_us"),
                    &limits.cpu_period_us.to_string(),
                )?;
                write(
                    &cpu.join("cpu.cfs_quota_us"),
                    &limits.cpu_quota_us.to_string(),
                )?;
            }
            Layout::V2 { base: dir } => {
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                write_if_present(&dir.join("memory.swap.max"), "0")?;
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(
                    &dir.join("cpu.max"),
                    &format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us),
                )?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into this cgroup (v1; on v2 the child is cloned straight into it).
    pub fn attach(&self, pid: libc::pid_t) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        match &self.dirs {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => {
                for dir in [memory, pids, cpu] {
                    write(&dir.join("cgroup.procs"), &pid)?;
                }
                if cpuacct != cpu {
                    write(&cpuacct.join("cgroup.procs"), &pid)?;
                }
                Ok(())
            }
            Layout::V2 { base: dir } => write(&dir.join("cgroup.procs"), &pid),
        }
    }

    /// On v2, an fd of the cgroup directory for `CLONE_INTO_CGROUP`.
    pub fn clone_target(&self) -> Result<Option<OwnedFd>, CgroupError> {
        match &self.dirs {
            Layout::V1 { .. } => Ok(None),
            Layout::V2 { base: dir } => {
                let file = File::open(dir).map_err(|source| CgroupError::Read {
                    path: dir.clone(),
                    source,
                })?;
                Ok(Some(file.into()))
            }
        }
    }

    /// The event counters now.
    pub fn counters(&self) -> Result<Counters, CgroupError> {
        let (oom_file, pids_file) = match &self.dirs {
            Layout::V1 { memory, pids, .. } => {
                (memory.join("memory.oom_control"), pids.join("pids.events"))
            }
            Layout::V2 { base: dir } => (dir.join("memory.events"), dir.join("pids.events")),
        };
        Ok(Counters {
            oom_kills: keyed_value(&read(&oom_file)?, "oom_kill").unwrap_or(0),
            pids_max_hits: keyed_value(&read(&pids_file)?, "max").unwrap_or(0),
        })
    }

    /// CPU time used so far by every task in the cgroup.
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match &self.dirs {
            Layout::V1 { cpuacct, .. } => {
                let path = cpuacct.join("cpuacct.usage");
                let nanos = read(&path)?.trim().parse().unwrap_or(0);
                Ok(Duration::from_nanos(nanos))
            }
            Layout::V2 { base: dir } => {
                let micros = keyed_value(&read(dir.join("cpu.stat"))?, "usage_usec").unwrap_or(0);
                Ok(Duration::from_micros(micros))
            }
        }
    }

    /// True when no task, not even an unreaped one, is left in the cgroup.
    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        let current = match &self.dirs {
            Layout::V1 { pids, .. } => pids.join("pids.current"),
            Layout::V2 { base: dir } => dir.join("pids.current"),
        };
        Ok(read(&current)?.trim() == "0")
    }
}

/// v1 refuses a memory limit above memory+swap and memory+swap below the
/// memory limit, so the order depends on the direction of the change.
fn set_v1_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    if !memsw.exists() {
        return write(&limit, &value);
    }
    if write(&limit, &value).is_ok() {
        return write(&memsw, &value);
    }
    write(&memsw, &value)?;
    write(&limit, &value)
}

fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = read(&control)?;
    let available = read(dir.join("cgroup.controllers"))?;
    let mut vacated = false;
    for controller in ["memory", "pids", "cpu"] {
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(CgroupError::NoHierarchy {
                detail: format!(
                    "{} does not offer the {controller} controller",
                    dir.display()
                ),
            });
        }
        if !vacated {
            vacate(dir)?;
            vacated = true;
        }
        write(&control, &format!("+{controller}"))?;
    }
    Ok(())
}

/// The leaf that [`vacate`] moves a cgroup's processes into.
const VACATED_LEAF: &str = "init";

/// cgroup v2's no-internal-process rule: a cgroup other than the
/// hierarchy's root enables controllers for its children only while it
/// holds no process itself. pyward's pool hangs off the cgroup mounted at
/// the mount point, which is the root only outside a cgroup namespace: in a
/// container's (Docker's and Podman's default on v2) it is the container's
/// cgroup, holding the container's processes, pyward among them. Those move
/// to a leaf `init` beside the pool, as container engines do for nested
/// containers. The real root (it has no cgroup.type) is left alone.
fn vacate(dir: &Path) -> Result<(), CgroupError> {
    if !dir.join("cgroup.type").exists() {
        return Ok(());
    }
    let procs = dir.join("cgroup.procs");
    let leaf = dir.join(VACATED_LEAF);
    // A process may fork while the others move: a few rounds catch its children.
    for _ in 0..10 {
        let pids = read(&procs)?;
        if pids.trim().is_empty() {
            return Ok(());
        }
        create_dir(&leaf)?;
        for pid in pids.split_whitespace() {
            match write(&leaf.join("cgroup.procs"), pid) {
                Ok(()) => {}
                // Exited meanwhile.
                Err(CgroupError::Write { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Create {
            path: dir.into(),
            source,
        }),
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, CgroupError> {
    fs::read_to_string(path.as_ref()).map_err(|source| CgroupError::Read {
        path: path.as_ref().into(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write(path, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_uses_v1_controllers_under_our_own_cgroups() {
        let own = "8:pids:/\n4:memory:/jobs/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let layout = Layout::from_proc(HYBRID_MOUNTINFO, own).unwrap();
        assert_eq!(
            layout,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/jobs/abc/pyward".into(),
                pids: "/sys/fs/cgroup/pids/pyward".into(),
                cpu: "/sys/fs/cgroup/cpu/pyward".into(),
                cpuacct: "/sys/fs/cgroup/cpuacct/pyward".into(),
            }
        );
    }

    #[test]
    fn pure_v2_host_uses_the_unified_root() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = Layout::from_proc(mountinfo, "0::/user.slice/session-1.scope\n").unwrap();
        assert_eq!(
            layout,
            Layout::V2 {
                base: "/sys/fs/cgroup/pyward".into()
            }
        );
    }

    #[test]
    fn no_cgroup_mount_is_a_clear_error() {
        let err = Layout::from_proc("22 1 0:21 / /proc rw - proc proc rw\n", "").unwrap_err();
        assert!(err.to_string().contains("memory, pids and cpu"), "{err}");
    }

    /// A fake v2 cgroup directory: `procs` in it, the controllers offered.
    fn fake_v2_cgroup(dir: &Path, procs: &str, root: bool) {
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        fs::write(
            dir.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        if !root {
            fs::write(dir.join("cgroup.type"), "domain\n").unwrap();
        }
    }

    #[test]
    fn the_hierarchys_root_keeps_its_processes() {
        let dir = tempfile::tempdir().unwrap();
        fake_v2_cgroup(dir.path(), "1\n42\n", true);
        enable_controllers(dir.path()).unwrap();
        assert!(!dir.path().join(VACATED_LEAF).exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.procs")).unwrap(),
            "1\n42\n"
        );
    }

    #[test]
    fn a_namespace_root_with_processes_moves_them_to_a_leaf_first() {
        let dir = tempfile::tempdir().unwrap();
        // A file stands in for the kernel's cgroup.procs, which empties as
        // processes move; here it is emptied when the leaf is written.
        fake_v2_cgroup(dir.path(), "", false);
        vacate(dir.path()).unwrap();
        assert!(!dir.path().join(VACATED_LEAF).exists(), "nothing to move");
        fs::write(dir.path().join("cgroup.procs"), "7\n").unwrap();
        let leaf = dir.path().join(VACATED_LEAF);
        fs::create_dir(&leaf).unwrap();
        // A FIFO would block; a directory in the leaf's cgroup.procs place
        // makes the move fail, which must be reported, not swallowed.
        fs::create_dir(leaf.join("cgroup.procs")).unwrap();
        let err = enable_controllers(dir.path()).unwrap_err();
        assert!(err.to_string().contains("init/cgroup.procs"), "{err}");
    }

    #[test]
    fn v2_limits_and_counters_use_the_v2_files() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot-0");
        fs::create_dir(&slot).unwrap();
        for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            fs::write(slot.join(file), "").unwrap();
        }
        fs::write(
            slot.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n",
        )
        .unwrap();
        fs::write(slot.join("pids.events"), "max 7\n").unwrap();
        fs::write(slot.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        let lock = Flock::lock(
            File::create(dir.path().join("lock")).unwrap(),
            FlockArg::LockExclusive,
        )
        .unwrap();
        let cgroup = Cgroup {
            dirs: Layout::V2 { base: slot.clone() },
            _lock: lock,
        };
        let limits = CgroupLimits {
            memory_bytes: 1 << 28,
            pids: 32,
            cpu_quota_us: 50_000,
            cpu_period_us: 100_000,
        };
        cgroup.set_limits(&limits).unwrap();
        assert_eq!(
            fs::read_to_string(slot.join("memory.max")).unwrap(),
            "268435456"
        );
        assert_eq!(
            fs::read_to_string(slot.join("memory.swap.max")).unwrap(),
            "0"
        );
        assert_eq!(fs::read_to_string(slot.join("pids.max")).unwrap(), "32");
        assert_eq!(
            fs::read_to_string(slot.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(
            cgroup.counters().unwrap(),
            Counters {
                oom_kills: 1,
                pids_max_hits: 7
            }
        );
        assert_eq!(cgroup.cpu_usage().unwrap(), Duration::from_micros(1500));
        // Unreaped tasks still count: a slot is free only at zero.
        fs::write(slot.join("pids.current"), "1\n").unwrap();
        assert!(!cgroup.is_empty().unwrap());
        fs::write(slot.join("pids.current"), "0\n").unwrap();
        assert!(cgroup.is_empty().unwrap());
    }
}
