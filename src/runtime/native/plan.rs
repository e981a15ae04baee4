//! The launch plan: every path, option string, file and pointer the sandbox's
//! setup needs, prepared in the parent so that the child allocates nothing.

use super::NativeConfig;
use super::outputs::OutputPlan;
use crate::policy::SandboxPolicy;
use crate::runtime::output_files::OutputCaps;
use crate::runtime::{Entrypoint, RunError, Submission};
use crate::seccomp::SeccompProgram;
use nix::mount::MsFlags;
use nix::sys::resource::Resource;
use nix::sys::statvfs::{FsFlags, statvfs};
use std::ffi::{CString, c_char};
use std::path::Path;
use std::sync::{Arc, LazyLock};

/// The work dir inside the sandbox, the program's cwd.
pub const WORK_DIR: &str = "/work";
/// The sandbox's hostname.
pub const HOSTNAME: &str = "pyward";

/// A read-only bind of a host path into the new root.
pub struct Bind {
    pub source: CString,
    pub target: CString,
    /// Flags for the read-only remount, carrying the source's locked flags.
    pub remount: MsFlags,
}

/// A file written into one of the sandbox's tmpfs mounts before it starts.
pub struct FileWrite {
    pub path: CString,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// How one of /proc's sensitive paths is covered, as runc (Docker's
/// default runtime) covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcCover {
    /// Readable, never writable: a read-only bind of the path onto itself.
    ReadOnly,
    /// A file that reads as empty: `/dev/null` bound over it.
    MaskFile,
    /// A directory that reads as empty: a read-only empty tmpfs over it.
    MaskDir,
}

impl ProcCover {
    /// The name the warm path's zygote knows it by.
    pub fn name(self) -> &'static str {
        match self {
            ProcCover::ReadOnly => "read_only",
            ProcCover::MaskFile => "mask_file",
            ProcCover::MaskDir => "mask_dir",
        }
    }
}

/// runc's read-only and masked /proc paths (its `readonlyPaths` and
/// `maskedPaths`): the kernel's knobs (/proc/sys: `ns_last_pid` is mode
/// 0666), and what tells of the host's kernel, devices and timers. A path
/// the kernel does not have is skipped.
pub const PROC_COVERS: [(&str, ProcCover); 14] = [
    ("/proc/bus", ProcCover::ReadOnly),
    ("/proc/fs", ProcCover::ReadOnly),
    ("/proc/irq", ProcCover::ReadOnly),
    ("/proc/sys", ProcCover::ReadOnly),
    ("/proc/sysrq-trigger", ProcCover::ReadOnly),
    ("/proc/kcore", ProcCover::MaskFile),
    ("/proc/keys", ProcCover::MaskFile),
    ("/proc/latency_stats", ProcCover::MaskFile),
    ("/proc/timer_list", ProcCover::MaskFile),
    ("/proc/timer_stats", ProcCover::MaskFile),
    ("/proc/sched_debug", ProcCover::MaskFile),
    ("/proc/acpi", ProcCover::MaskDir),
    ("/proc/asound", ProcCover::MaskDir),
    ("/proc/scsi", ProcCover::MaskDir),
];

/// The Landlock layer of a run, for the kernel's ABI: read (and execute)
/// anywhere the mounts show, write only in /tmp, the work dir and the five
/// /dev nodes; with ABI 6 and later, no signals to and no abstract unix
/// sockets of processes outside the sandbox's Landlock domain. Access masks
/// come from the `landlock` crate's per-ABI tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// The ABI the rules are written for (the kernel's).
    pub abi: u32,
    /// Every filesystem access the ruleset handles: denied unless a rule grants it.
    pub handled_fs: u64,
    /// The IPC scopes the ruleset restricts (ABI 6 and later).
    pub scoped: u64,
    /// `(path inside the sandbox, access granted beneath it)`.
    pub rules: Vec<(CString, u64)>,
}

impl LandlockPlan {
    /// The rules for a kernel offering Landlock ABI `abi`.
    pub fn for_abi(abi: u32) -> LandlockPlan {
        use landlock::{Access, AccessFs, Scope};
        let version = landlock::ABI::from(i32::try_from(abi).unwrap_or(i32::MAX));
        let all = AccessFs::from_all(version);
        let read = AccessFs::from_read(version);
        let device = AccessFs::from_file(version) & !AccessFs::Execute;
        let mut rules = vec![
            (cstring("/"), read.bits()),
            (cstring("/tmp"), all.bits()),
            (cstring(WORK_DIR), all.bits()),
        ];
        rules.extend(
            DEVICES
                .iter()
                .map(|dev| (cstring(format!("/dev/{dev}")), device.bits())),
        );
        LandlockPlan {
            abi,
            handled_fs: all.bits(),
            scoped: Scope::from_all(version).bits(),
            rules,
        }
    }
}

/// Everything the child needs, by value, before the clone.
pub struct Plan {
    pub new_root: CString,
    pub root_options: CString,
    pub dirs: Vec<CString>,
    pub symlinks: Vec<(CString, CString)>,
    pub root_files: Vec<FileWrite>,
    pub binds: Vec<Bind>,
    pub devices: Vec<Bind>,
    pub proc_dir: CString,
    /// `PROC_COVERS` under the new root.
    pub proc_covers: Vec<(CString, ProcCover)>,
    pub tmp_dir: CString,
    pub tmp_options: CString,
    pub work_dir: CString,
    pub work_options: CString,
    pub work_dirs: Vec<CString>,
    pub work_files: Vec<FileWrite>,
    pub cwd: CString,
    /// The declared output files, which the stub reads after the program (`outputs`).
    pub outputs: OutputPlan,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub uid: u32,
    pub gid: u32,
    pub seccomp: Arc<SeccompProgram>,
    /// The Landlock ruleset, where the kernel offers Landlock.
    pub landlock: Option<Arc<LandlockPlan>>,
    /// A warm-path zygote: keeps its user namespace's capabilities and runs
    /// without seccomp (its forks drop both before any program runs).
    pub zygote: bool,
    pub exe: CString,
    /// Owners of the strings `argv_ptrs` and `envp_ptrs` point into.
    #[allow(dead_code)]
    pub argv: Vec<CString>,
    #[allow(dead_code)]
    pub envp: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    pub envp_ptrs: Vec<*const c_char>,
}

const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// What of the host's /etc a run on the host's rootfs sees besides the files
/// pyward writes, bound read-only: the interpreter's own configuration
/// (Debian's /usr/lib/python3.X/sitecustomize.py is a link into
/// /etc/python3.X) and netbase's service and protocol names (getservbyname,
/// getaddrinfo with a service name). Looked up once per process, remount
/// flags included, so that a run adds no statvfs for them.
struct HostEtc {
    name: String,
    is_dir: bool,
    remount: MsFlags,
}

static HOST_ETC: LazyLock<Vec<HostEtc>> = LazyLock::new(|| {
    let mut found: Vec<HostEtc> = std::fs::read_dir("/etc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let meta = std::fs::metadata(entry.path()).ok()?;
            let wanted = (name.starts_with("python3") && meta.is_dir())
                || (matches!(name.as_str(), "services" | "protocols") && meta.is_file());
            if !wanted {
                return None;
            }
            Some(HostEtc {
                remount: remount_flags(&format!("/etc/{name}")),
                is_dir: meta.is_dir(),
                name,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
});
/// Top-level directories of a merged-/usr host, recreated as symlinks or binds.
const USR_LINKS: [&str; 4] = ["bin", "lib", "lib64", "sbin"];

impl Plan {
    /// Builds the plan for one run. Fails only on a malformed submission.
    pub fn new(
        config: &NativeConfig,
        policy: &SandboxPolicy,
        submission: &Submission,
        seccomp: Arc<SeccompProgram>,
        landlock: Option<Arc<LandlockPlan>>,
    ) -> Result<Plan, RunError> {
        let root = config.state_dir.join("root");
        let at = |inside: &str| cstring(format!("{}{inside}", root.display()));
        let limits = &policy.limits;

        let mut dirs = vec![
            at("/usr"),
            at("/etc"),
            at("/dev"),
            at("/proc"),
            at("/tmp"),
            at(WORK_DIR),
        ];
        let mut symlinks = Vec::new();
        // The host's /usr, or an image's: everything the interpreter needs.
        let source = config.rootfs.as_deref().unwrap_or(Path::new("/"));
        let mut binds = vec![ro_bind(
            &source.join("usr").display().to_string(),
            at("/usr"),
        )];
        for name in USR_LINKS {
            let host = source.join(name);
            match std::fs::read_link(&host) {
                Ok(target) => symlinks.push((
                    cstring(target.display().to_string()),
                    at(&format!("/{name}")),
                )),
                Err(_) if host.is_dir() => {
                    dirs.push(at(&format!("/{name}")));
                    binds.push(ro_bind(
                        &host.display().to_string(),
                        at(&format!("/{name}")),
                    ));
                }
                Err(_) => {}
            }
        }
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("/tmp", "/dev/shm"),
        ] {
            symlinks.push((cstring(target), at(link)));
        }
        // The host's /etc stays out: pyward writes a minimal one. An image's
        // /etc is part of the image (hardened at build time, and holding the
        // alternatives symlinks its libraries are found through).
        let mut root_files = Vec::new();
        match &config.rootfs {
            None => {
                root_files.extend(etc_files(policy, &at));
                for etc in HOST_ETC.iter() {
                    let target = at(&format!("/etc/{}", etc.name));
                    if etc.is_dir {
                        dirs.push(target.clone());
                    } else {
                        root_files.push(FileWrite {
                            path: target.clone(),
                            contents: Vec::new(),
                            mode: 0o644,
                        });
                    }
                    binds.push(Bind {
                        source: cstring(format!("/etc/{}", etc.name)),
                        target,
                        remount: etc.remount,
                    });
                }
            }
            Some(rootfs) => binds.push(ro_bind(
                &rootfs.join("etc").display().to_string(),
                at("/etc"),
            )),
        }
        let devices = DEVICES
            .iter()
            .map(|dev| {
                root_files.push(FileWrite {
                    path: at(&format!("/dev/{dev}")),
                    contents: Vec::new(),
                    mode: 0o644,
                });
                Bind {
                    source: cstring(format!("/dev/{dev}")),
                    target: at(&format!("/dev/{dev}")),
                    remount: MsFlags::empty(),
                }
            })
            .collect();

        let (work_dirs, work_files) = work_files(submission, &root, limits.tmpfs.bytes())?;
        let outputs = OutputPlan::new(&submission.outputs, OutputCaps::of(limits))?;
        let argv = argv(config, submission)?;
        let envp: Vec<CString> = policy
            .environment(&submission.env)
            .into_iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                RunError::InvalidSubmission("environment values may not contain NUL bytes".into())
            })?;
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        let uid = policy.user.uid;
        let gid = policy.user.gid;
        let tmpfs = limits.tmpfs.bytes();
        Ok(Plan {
            new_root: cstring(root.display().to_string()),
            root_options: cstring("size=1m,nr_inodes=256,mode=0755"),
            dirs,
            symlinks,
            root_files,
            binds,
            devices,
            proc_dir: at("/proc"),
            proc_covers: PROC_COVERS
                .iter()
                .map(|&(path, cover)| (at(path), cover))
                .collect(),
            tmp_dir: at("/tmp"),
            tmp_options: cstring(format!("size={tmpfs},mode=1777")),
            work_dir: at(WORK_DIR),
            work_options: cstring(format!("size={tmpfs},mode=0755,uid={uid},gid={gid}")),
            work_dirs,
            work_files,
            cwd: cstring(WORK_DIR),
            outputs,
            rlimits: rlimits(limits),
            uid,
            gid,
            seccomp,
            landlock,
            zygote: false,
            exe: cstring(config.python.display().to_string()),
            argv,
            envp,
            argv_ptrs,
            envp_ptrs,
        })
    }
}

/// The run's rlimits: no core dumps, open files, file size, CPU seconds.
pub(super) fn rlimits(limits: &crate::policy::Limits) -> Vec<(Resource, u64, u64)> {
    vec![
        (Resource::RLIMIT_CORE, 0, 0),
        (
            Resource::RLIMIT_NOFILE,
            limits.open_files.into(),
            limits.open_files.into(),
        ),
        (
            Resource::RLIMIT_FSIZE,
            limits.file_size.bytes(),
            limits.file_size.bytes(),
        ),
        (
            Resource::RLIMIT_CPU,
            cpu_seconds(limits.cpu_time),
            cpu_seconds(limits.cpu_time) + 1,
        ),
    ]
}

/// RLIMIT_CPU counts whole seconds: round up, so the cgroup check (which is
/// exact) fires first and the rlimit only backs it up.
fn cpu_seconds(cpu: std::time::Duration) -> u64 {
    cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0)
}

fn etc_files(policy: &SandboxPolicy, at: &dyn Fn(&str) -> CString) -> Vec<FileWrite> {
    let (uid, gid) = (policy.user.uid, policy.user.gid);
    let text = |path: &str, contents: String| FileWrite {
        path: at(path),
        contents: contents.into_bytes(),
        mode: 0o644,
    };
    vec![
        text(
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:sandbox:/tmp:/usr/sbin/nologin\n"
            ),
        ),
        text("/etc/group", format!("root:x:0:\nsandbox:x:{gid}:\n")),
        text(
            "/etc/hosts",
            format!("127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n"),
        ),
        text("/etc/hostname", format!("{HOSTNAME}\n")),
    ]
}

/// A read-write bind, which no run gets: for tests that show what Landlock
/// refuses where the mounts alone would allow a write.
#[cfg(test)]
pub fn writable_bind(source: &str, target: CString) -> Bind {
    Bind {
        source: cstring(source),
        target,
        remount: remount_flags(source) - MsFlags::MS_RDONLY,
    }
}

fn ro_bind(source: &str, target: CString) -> Bind {
    Bind {
        source: cstring(source),
        target,
        remount: remount_flags(source),
    }
}

/// Flags for remounting a bind read-only. A mount we inherited keeps its
/// "locked" flags (nosuid, nodev, noexec, atime) in a user namespace; a
/// remount that drops one fails, so carry the source's over.
fn remount_flags(source: &str) -> MsFlags {
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    if let Ok(stat) = statvfs(source) {
        let carried = [
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ];
        for (st, ms) in carried {
            if stat.flags().contains(st) {
                flags |= ms;
            }
        }
    }
    flags
}

fn argv(config: &NativeConfig, submission: &Submission) -> Result<Vec<CString>, RunError> {
    let nul = |what: &str| RunError::InvalidSubmission(format!("{what} may not contain NUL bytes"));
    let mut argv = vec![cstring("python3"), cstring("-s")];
    match &submission.entrypoint {
        Entrypoint::Code(code) => {
            argv.push(cstring("-c"));
            argv.push(CString::new(code.as_str()).map_err(|_| nul("code"))?);
        }
        Entrypoint::File(path) => {
            if !submission.files.iter().any(|f| &f.path == path) {
                return Err(RunError::InvalidSubmission(format!(
                    "entrypoint {path:?} is not one of the submission's files"
                )));
            }
            argv.push(CString::new(path.as_str()).map_err(|_| nul("the entrypoint path"))?);
        }
    }
    for arg in &submission.args {
        argv.push(CString::new(arg.as_str()).map_err(|_| nul("arguments"))?);
    }
    let _ = config;
    Ok(argv)
}

/// Checks each input path (relative, no `..`, no NUL) and lists the
/// directories to create and the files to write, under the new root.
pub(super) fn work_files(
    submission: &Submission,
    root: &Path,
    capacity: u64,
) -> Result<(Vec<CString>, Vec<FileWrite>), RunError> {
    let total: u64 = submission
        .files
        .iter()
        .map(|f| f.contents.len() as u64)
        .sum();
    if total > capacity {
        return Err(RunError::InvalidSubmission(format!(
            "the input files hold {total} bytes, more than the work dir's {capacity} (the policy's limits.tmpfs)"
        )));
    }
    let mut dirs: Vec<String> = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    let mut files = Vec::new();
    for file in &submission.files {
        let path = &file.path;
        let bad = |why: &str| RunError::InvalidSubmission(format!("file path {path:?} {why}"));
        if path.is_empty() || path.starts_with('/') {
            return Err(bad("must be relative to the work dir and not empty"));
        }
        if path.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(bad("may not contain empty, `.` or `..` components"));
        }
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if paths.contains(&dir.as_str()) {
                return Err(bad(&format!(
                    "needs a directory {dir:?}, but that is a file"
                )));
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        if paths.contains(&path.as_str()) || dirs.contains(path) {
            return Err(bad("appears twice, or names a directory of another file"));
        }
        paths.push(path);
        files.push(FileWrite {
            path: cstring(format!("{}{WORK_DIR}/{path}", root.display())),
            contents: file.contents.clone(),
            mode: 0o644,
        });
    }
    let dirs = dirs
        .iter()
        .map(|d| cstring(format!("{}{WORK_DIR}/{d}", root.display())))
        .collect();
    Ok((dirs, files))
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A CString from text pyward built itself (paths and option strings never hold NUL).
fn cstring(s: impl Into<Vec<u8>>) -> CString {
    CString::new(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::InputFile;

    fn with_files(paths: &[&str]) -> Submission {
        let files = paths
            .iter()
            .map(|p| InputFile {
                path: (*p).into(),
                contents: b"x".to_vec(),
            })
            .collect();
        Submission {
            files,
            ..Submission::code("pass")
        }
    }

    fn problem(paths: &[&str]) -> String {
        match work_files(&with_files(paths), Path::new("/r"), 1 << 20) {
            Err(RunError::InvalidSubmission(why)) => why,
            other => panic!(
                "{paths:?} accepted: {:?}",
                other.map(|(d, f)| (d.len(), f.len()))
            ),
        }
    }

    #[test]
    fn input_paths_stay_inside_the_work_dir() {
        for bad in ["/etc/passwd", "", "../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(problem(&[bad]).contains(&format!("{bad:?}")), "{bad}");
        }
        assert!(problem(&["a\0b"]).contains("NUL"));
    }

    #[test]
    fn duplicate_and_clashing_paths_are_refused() {
        assert!(problem(&["a.py", "a.py"]).contains("twice"));
        assert!(problem(&["lib", "lib/x.py"]).contains("that is a file"));
        assert!(problem(&["lib/x.py", "lib"]).contains("names a directory"));
    }

    #[test]
    fn nested_files_get_their_directories_once() {
        let (dirs, files) = work_files(
            &with_files(&["a/b/c.py", "a/d.py", "e.py"]),
            Path::new("/r"),
            1 << 20,
        )
        .unwrap();
        let dirs: Vec<_> = dirs
            .iter()
            .map(|d| d.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(dirs, ["/r/work/a", "/r/work/a/b"]);
        assert_eq!(files.len(), 3);
    }

    #[test]
    fn inputs_larger_than_the_work_dir_are_refused() {
        let why = match work_files(&with_files(&["a", "b"]), Path::new("/r"), 1) {
            Err(RunError::InvalidSubmission(why)) => why,
            _ => panic!("accepted"),
        };
        assert!(why.contains("limits.tmpfs"), "{why}");
    }
}
