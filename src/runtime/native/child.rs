//! The sandbox's side of a run: the pid-1 stub and the payload's setup, as
//! two lists of named steps. Everything here runs in a copy of a possibly
//! multi-threaded parent, so it only makes raw syscalls on the prepared
//! [`Plan`]: no allocation, no locks, no logging.

use super::outputs;
use super::plan::{Bind, FileWrite, HOSTNAME, Plan, ProcCover};
use super::status::{Message, Step};
use crate::sys;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::setrlimit;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, chdir, mkdir, pivot_root, sethostname, symlinkat};
use std::ffi::CStr;
use std::os::fd::RawFd;
use sys::process::rawfd;

/// The fds the child inherits, by number (copies of the parent's, made by clone).
#[derive(Clone, Copy)]
pub struct ChildFds {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    pub status: RawFd,
    pub go: RawFd,
    /// A pidfd of pyward's own process, to notice that it died.
    pub parent: RawFd,
    /// The memfd for the declared output files' records, or -1 when none are declared.
    pub files: RawFd,
}

/// Where the status pipe sits in the payload once stdio is in place.
const STATUS_FD: RawFd = 3;
/// Signals the stub takes synchronously: SIGCHLD, and polite stops it forwards.
const WAITED: [libc::c_int; 7] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

type StepResult = Result<(), (Step, Errno)>;

/// Tags a failed syscall with the step it belongs to.
trait At {
    fn at(self, step: Step) -> StepResult;
}

impl<T> At for nix::Result<T> {
    fn at(self, step: Step) -> StepResult {
        self.map(|_| ()).map_err(|errno| (step, errno))
    }
}

/// The pid-1 stub: waits for the parent's go, forks the payload, reaps every
/// process, forwards polite signals and reports how the payload ended.
pub fn stub(plan: &Plan, fds: ChildFds) -> ! {
    // First of all, let go of every fd the clone copied that is not this
    // run's: another run's pipes (so its EOFs come when they should), a
    // server's listening socket, pyward's own files.
    let fds = match keep_only_own_fds(fds) {
        Ok(fds) => fds,
        Err(errno) => {
            report(fds.status, Message::setup_failed(Step::OwnFds, errno));
            exit(1);
        }
    };
    if let Err((failed, errno)) = stub_setup(fds) {
        report(fds.status, Message::setup_failed(failed, errno));
        exit(1);
    }
    // The root before the payload's pivot_root, to check that it moved before
    // reading output files.
    let host_root = sys::files::identity(c"/").ok();
    let payload_pid = match sys::clone::clone(sys::clone::CloneArgs::default()) {
        Ok(sys::clone::Cloned::Child) => payload(plan, fds),
        Ok(sys::clone::Cloned::Parent { pid, .. }) => pid,
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            report(fds.status, Message::setup_failed(Step::ForkPayload, errno));
            exit(1);
        }
    };
    // The payload owns stdio now. The stub keeps only the status pipe and the
    // output files' memfd, and is not dumpable, so the program cannot reach
    // pyward's fds through /proc/1.
    let (status, files) = keep_only_status(fds.status, fds.files);
    let reaped = reap_until_payload_ends(payload_pid);
    // The declared output files, before pyward hears that the program ended.
    outputs::collect(plan, files, host_root);
    // What it used, then how it ended: the parent may stop watching after that.
    report(
        status,
        Message::Usage {
            cpu_micros: reaped.cpu_micros,
            max_rss_bytes: reaped.max_rss_bytes,
        },
    );
    report(status, Message::from_wait_status(reaped.status));
    // pid 1 exiting makes the kernel kill whatever the program left behind.
    exit(0)
}

fn stub_setup(fds: ChildFds) -> StepResult {
    // Wait until the parent has written the id maps and placed us in the cgroup,
    // or has died. End-of-file on `go` is not enough to notice a death: a
    // sandbox the same process cloned at the same moment may hold a copy of
    // this pipe's write end (and this one of its), and both would wait forever.
    if !rawfd::readable_unless_gone(fds.go, fds.parent) {
        return Err((Step::WaitForParent, Errno::ESRCH));
    }
    let mut byte = [0u8; 1];
    match rawfd::read(fds.go, &mut byte) {
        Ok(1) => {}
        Ok(_) => return Err((Step::WaitForParent, Errno::EPIPE)),
        Err(errno) => return Err((Step::WaitForParent, errno)),
    }
    rawfd::close(fds.go);
    // Run the rest of the setup as the namespace's root: an unprivileged host uid.
    become_namespace_root().at(Step::BecomeNamespaceRoot)?;
    // If pyward dies, the sandbox dies with it (the pid namespace goes with its
    // pid 1). Set after the change of uid above, which clears it; pyward may
    // have died before, so look once.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).at(Step::ParentDeathSignal)?;
    if rawfd::readable_now(fds.parent) {
        return Err((Step::ParentDeathSignal, Errno::ESRCH));
    }
    rawfd::close(fds.parent);
    // A cgroup namespace rooted at the sandbox's own cgroup.
    unshare(CloneFlags::CLONE_NEWCGROUP).at(Step::UnshareCgroup)?;
    // Take SIGCHLD and polite stops synchronously (the payload unblocks them).
    sys::process::block_signals(&WAITED).at(Step::BlockSignals)
}

/// Where the stub keeps its run's fds: above stdio and the payload's status fd.
const OWN_FDS_BASE: RawFd = 10;

/// Moves this run's seven fds to `OWN_FDS_BASE..+7` (an absent one, -1,
/// stays absent) and closes every other fd from 3 up. Allocation-free.
fn keep_only_own_fds(fds: ChildFds) -> nix::Result<ChildFds> {
    let own = [
        fds.stdin, fds.stdout, fds.stderr, fds.status, fds.go, fds.parent, fds.files,
    ];
    // Copies above every source and every target first, so that no move
    // below lands on something not yet moved.
    let last_target = OWN_FDS_BASE + own.len() as RawFd - 1;
    let above = own.iter().copied().max().unwrap_or(0).max(last_target) + 1;
    let mut high = [-1; 7];
    for (slot, fd) in high.iter_mut().zip(own).filter(|(_, fd)| *fd >= 0) {
        *slot = rawfd::dup_at_least(fd, above)?;
    }
    let mut moved = [-1; 7];
    for (i, (slot, fd)) in moved.iter_mut().zip(high).enumerate() {
        if fd >= 0 {
            *slot = OWN_FDS_BASE + i as RawFd;
            rawfd::dup_to(fd, *slot, true)?;
        }
    }
    for fd in 3..OWN_FDS_BASE {
        rawfd::close(fd);
    }
    sys::process::close_fds_from(OWN_FDS_BASE + own.len() as RawFd)?;
    let [stdin, stdout, stderr, status, go, parent, files] = moved;
    Ok(ChildFds {
        stdin,
        stdout,
        stderr,
        status,
        go,
        parent,
        files,
    })
}

/// Where the stub keeps the output files' memfd once the payload runs.
const FILES_FD: RawFd = STATUS_FD + 1;

/// Closes every fd but the status pipe (moved to fd 3) and the output
/// files' memfd (fd 4, when there is one), and makes the stub undumpable.
/// Best effort: the stub reports the payload's status regardless.
fn keep_only_status(status: RawFd, files: RawFd) -> (RawFd, RawFd) {
    let _ = nix::sys::prctl::set_dumpable(false);
    // Both sit at OWN_FDS_BASE and above, clear of fds 3 and 4.
    let kept = if status == STATUS_FD || rawfd::dup_to(status, STATUS_FD, true).is_ok() {
        STATUS_FD
    } else {
        return (status, files);
    };
    let files = if files >= 0 && rawfd::dup_to(files, FILES_FD, true).is_ok() {
        FILES_FD
    } else {
        -1
    };
    for fd in 0..STATUS_FD {
        rawfd::close(fd);
    }
    let _ = sys::process::close_fds_from(if files < 0 { FILES_FD } else { FILES_FD + 1 });
    (kept, files)
}

fn become_namespace_root() -> nix::Result<()> {
    sys::process::set_ids(0, 0, false)
}

/// Reaps children until the payload is among them, forwarding polite signals.
fn reap_until_payload_ends(payload: libc::pid_t) -> sys::process::Reaped {
    loop {
        while let Some((pid, reaped)) = sys::process::reap_any_nohang() {
            if pid == payload {
                return reaped;
            }
        }
        if let Some(sig) = sys::process::wait_signal(&WAITED, 1000)
            && sig != libc::SIGCHLD
            && let Ok(signal) = Signal::try_from(sig)
        {
            let _ = kill(Pid::from_raw(payload), signal);
        }
    }
}

/// The payload: builds the sandbox around itself, step by step, then execs
/// the interpreter. Reports the failing step over the status pipe otherwise.
fn payload(plan: &Plan, fds: ChildFds) -> ! {
    let failure = match setup_payload(plan, fds) {
        Err(failed) => failed,
        // setup_payload ends in execve, which returns only on failure.
        Ok(()) => (Step::Execve, Errno::UnknownErrno),
    };
    report(STATUS_FD, Message::setup_failed(failure.0, failure.1));
    exit(127)
}

fn setup_payload(plan: &Plan, fds: ChildFds) -> StepResult {
    // stdin, stdout, stderr from the parent; the status pipe at fd 3, close-on-exec.
    set_stdio(fds).at(Step::Stdio)?;
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&CStr>,
    )
    .at(Step::MakeMountsPrivate)?;
    // A small tmpfs becomes the new root; it is sealed read-only below.
    mount(
        Some(c"pyward"),
        plan.new_root.as_c_str(),
        Some(c"tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(plan.root_options.as_c_str()),
    )
    .at(Step::MountRoot)?;
    // Mount points, merged-/usr symlinks, /etc files and device placeholders.
    build_skeleton(plan)?;
    // The interpreter and its libraries: read-only binds of the host's /usr.
    plan.binds
        .iter()
        .try_for_each(bind_read_only)
        .map_err(|e| (Step::BindHost, e))?;
    // /dev/null, zero, full, random, urandom: binds of the host's nodes.
    plan.devices
        .iter()
        .try_for_each(bind_device)
        .map_err(|e| (Step::BindDevices, e))?;
    // A /proc of the sandbox's own pid namespace.
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some(c"proc"),
        plan.proc_dir.as_c_str(),
        Some(c"proc"),
        hardened,
        None::<&CStr>,
    )
    .at(Step::MountProc)?;
    // What runc covers: /proc/sys and friends read-only, kcore, keys and the
    // host's timers masked.
    plan.proc_covers
        .iter()
        .try_for_each(|(target, cover)| cover_proc_path(target, *cover))
        .map_err(|e| (Step::CoverProc, e))?;
    // A size-limited, noexec /tmp.
    mount(
        Some(c"tmpfs"),
        plan.tmp_dir.as_c_str(),
        Some(c"tmpfs"),
        hardened,
        Some(plan.tmp_options.as_c_str()),
    )
    .at(Step::MountTmp)?;
    // The work dir, owned by the sandbox user, with the program and its inputs.
    mount(
        Some(c"tmpfs"),
        plan.work_dir.as_c_str(),
        Some(c"tmpfs"),
        hardened,
        Some(plan.work_options.as_c_str()),
    )
    .at(Step::MountWork)?;
    write_work_files(plan)?;
    // Seal the new root read-only.
    let seal = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        None::<&CStr>,
        plan.new_root.as_c_str(),
        None::<&CStr>,
        seal,
        None::<&CStr>,
    )
    .at(Step::SealRoot)?;
    // Enter the new root and detach the host's.
    enter_new_root(plan).at(Step::PivotRoot)?;
    // Our own hostname in our own uts namespace.
    sethostname(HOSTNAME).at(Step::Hostname)?;
    // rlimits: no core dumps, open files, file size, CPU seconds (a backstop).
    for &(resource, soft, hard) in &plan.rlimits {
        setrlimit(resource, soft, hard).at(Step::Rlimits)?;
    }
    // A zygote keeps its privileges: its forks drop them per call (warm.rs).
    if !plan.zygote {
        drop_privileges(plan)?;
    }
    // Only stdin, stdout, stderr and the close-on-exec status pipe stay open.
    sys::process::close_fds_from(STATUS_FD + 1).at(Step::CloseFds)?;
    // Default signal handling and an empty mask, as a fresh process expects.
    sys::process::reset_signals().at(Step::ResetSignals)?;
    // no_new_privs, then Landlock and the seccomp filters: the last steps before execve.
    nix::sys::prctl::set_no_new_privs().at(Step::NoNewPrivs)?;
    // Landlock: read anywhere, write only in /tmp, the work dir and /dev's nodes.
    if let Some(landlock) = plan.landlock.as_deref().filter(|_| !plan.zygote) {
        sys::landlock::restrict_self(landlock.handled_fs, landlock.scoped, &landlock.rules)
            .map_err(|errno| (Step::Landlock, errno))?;
    }
    for program in plan.seccomp.programs().iter().filter(|_| !plan.zygote) {
        seccompiler::apply_filter(program).map_err(|_| (Step::Seccomp, Errno::last()))?;
    }
    // The interpreter, with a clean environment.
    Err((
        Step::Execve,
        sys::process::execve(&plan.exe, &plan.argv_ptrs, &plan.envp_ptrs),
    ))
}

fn drop_privileges(plan: &Plan) -> StepResult {
    // The bounding set needs CAP_SETPCAP, which the switch of user below takes away.
    sys::caps::drop_bounding_set().at(Step::DropBoundingSet)?;
    // The unprivileged sandbox user, with no supplementary groups.
    switch_user(plan).at(Step::SwitchUser)?;
    // Nothing left in the ambient, inheritable, permitted or effective sets.
    sys::caps::clear_all().map_err(|_| (Step::ClearCapabilities, Errno::EPERM))
}

fn set_stdio(fds: ChildFds) -> nix::Result<()> {
    // Move every source above 3 first, so no dup2 below clobbers another source.
    let [stdin, stdout, stderr, status] = [fds.stdin, fds.stdout, fds.stderr, fds.status]
        .map(|fd| rawfd::dup_at_least(fd, STATUS_FD + 1));
    rawfd::dup_to(stdin?, 0, false)?;
    rawfd::dup_to(stdout?, 1, false)?;
    rawfd::dup_to(stderr?, 2, false)?;
    rawfd::dup_to(status?, STATUS_FD, true)
}

fn build_skeleton(plan: &Plan) -> StepResult {
    for dir in &plan.dirs {
        mkdir(dir.as_c_str(), Mode::from_bits_truncate(0o755)).at(Step::Skeleton)?;
    }
    for (target, link) in &plan.symlinks {
        symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, link.as_c_str()).at(Step::Skeleton)?;
    }
    plan.root_files
        .iter()
        .try_for_each(write_file)
        .map_err(|e| (Step::Skeleton, e))
}

fn write_work_files(plan: &Plan) -> StepResult {
    for dir in &plan.work_dirs {
        mkdir(dir.as_c_str(), Mode::from_bits_truncate(0o755)).at(Step::WorkFiles)?;
    }
    plan.work_files
        .iter()
        .try_for_each(write_file)
        .map_err(|e| (Step::WorkFiles, e))
}

fn write_file(file: &FileWrite) -> nix::Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
    let fd = open(
        file.path.as_c_str(),
        flags,
        Mode::from_bits_truncate(file.mode),
    )?;
    rawfd::write_all(std::os::fd::AsRawFd::as_raw_fd(&fd), &file.contents)
}

fn bind_read_only(bind: &Bind) -> nix::Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(
        Some(bind.source.as_c_str()),
        bind.target.as_c_str(),
        None::<&CStr>,
        flags,
        None::<&CStr>,
    )?;
    mount(
        None::<&CStr>,
        bind.target.as_c_str(),
        None::<&CStr>,
        bind.remount,
        None::<&CStr>,
    )
}

/// Covers one /proc path; a path this kernel does not have is left alone.
fn cover_proc_path(target: &CStr, cover: ProcCover) -> nix::Result<()> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let covered = match cover {
        ProcCover::ReadOnly => mount(
            Some(target),
            target,
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&CStr>,
        )
        .and_then(|()| {
            let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(
                None::<&CStr>,
                target,
                None::<&CStr>,
                read_only | hardened,
                None::<&CStr>,
            )
        }),
        ProcCover::MaskFile => mount(
            Some(c"/dev/null"),
            target,
            None::<&CStr>,
            MsFlags::MS_BIND,
            None::<&CStr>,
        ),
        ProcCover::MaskDir => mount(
            Some(c"tmpfs"),
            target,
            Some(c"tmpfs"),
            MsFlags::MS_RDONLY | hardened,
            Some(c"size=4k,nr_inodes=1"),
        ),
    };
    match covered {
        Err(Errno::ENOENT) => Ok(()),
        other => other,
    }
}

fn bind_device(bind: &Bind) -> nix::Result<()> {
    mount(
        Some(bind.source.as_c_str()),
        bind.target.as_c_str(),
        None::<&CStr>,
        MsFlags::MS_BIND,
        None::<&CStr>,
    )
}

fn enter_new_root(plan: &Plan) -> nix::Result<()> {
    // pivot_root(".", ".") stacks the old root on the new one; detaching "."
    // then leaves only the new root (no put_old directory needed).
    chdir(plan.new_root.as_c_str())?;
    pivot_root(c".", c".")?;
    umount2(c".", MntFlags::MNT_DETACH)?;
    chdir(plan.cwd.as_c_str())
}

fn switch_user(plan: &Plan) -> nix::Result<()> {
    sys::process::set_ids(plan.uid, plan.gid, true)
}

fn report(fd: RawFd, message: Message) {
    let _ = rawfd::write_all(fd, &message.to_bytes());
}

fn exit(code: i32) -> ! {
    sys::process::exit_now(code)
}
