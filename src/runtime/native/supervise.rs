//! The parent's side of a run: start the stub, write its id maps, place it in
//! its cgroup, then watch its pipes, its pidfd and the clock until it ends.

use super::NativeError;
use super::child::{self, ChildFds};
use super::outputs;
use super::plan::Plan;
use super::status::{MESSAGE_LEN, Message};
use super::verdict::{self, KillReason, Observed};
use crate::policy::Limits;
use crate::runtime::output_files::OutputCaps;
use crate::runtime::watch::CancelGuard;
use crate::runtime::{Captured, Outcome, RunWatch, Stream as Output, Submission, Usage};
use crate::sys;
use crate::sys::cgroup::{Cgroup, CgroupError, Counters};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::unistd::pipe2;
use std::fs;
use std::io::{Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How pyward maps the sandbox's ids onto the host's: ids 0..65536 inside
/// become `base..base+65536` outside, none of them a host user.
#[derive(Debug, Clone, Copy)]
pub struct IdMap {
    pub base: u32,
}

/// Runs the plan inside `cgroup` until the program has ended. The stub may
/// still be exiting: it comes back with the outcome, to be reaped (before
/// `cgroup` and `netns` are reused). `submission` gives the stdin and the
/// declared output files (its program is in `plan`).
pub fn run(
    netns: &OwnedFd,
    plan: &Plan,
    limits: &Limits,
    cgroup: &Cgroup,
    submission: &Submission,
    ids: IdMap,
    observer: &RunWatch,
) -> Result<(Outcome, Option<Stub>), NativeError> {
    let io = StdioPipes::new(&submission.stdin)?;
    let files = outputs::records_memfd(plan)?;
    let before = cgroup.counters()?;
    // The slot is reused: its CPU counter starts where the last run left it.
    let cpu_before = cgroup.cpu_usage()?;
    let clone_target = cgroup.clone_target()?;
    let flags = sandbox_clone_flags(clone_target.is_some());
    let fds = ChildFds {
        files: files.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        ..io.child_fds()
    };
    let started = Instant::now();
    let args = sys::clone::CloneArgs {
        flags,
        cgroup: clone_target.as_ref().map(|fd| fd.as_raw_fd()),
    };
    // The pooled network namespace is entered by this thread for the clone only.
    let spawned = sys::netns::within(netns, || spawn_stub(args, plan, fds))
        .map_err(|source| NativeError::Netns { source })?;
    let (pid, pidfd) = spawned.map_err(|source| NativeError::Clone { source })?;
    let (parent, go) = io.into_parent_side();
    if let Err(error) = release_child(pid, ids, cgroup, go) {
        let _ = sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        let _ = sys::process::wait4(pid);
        return Err(error);
    }
    let cpu_used = || cgroup.cpu_usage().map(|now| now.saturating_sub(cpu_before));
    let watched = watch(&parent, &pidfd, limits, &cpu_used, started, observer);
    let wall = started.elapsed();
    let stub = Stub { pid, pidfd };
    // A stub that is gone is reaped now (its rusage covers a payload it could
    // not report on); one that is exiting is left to the caller.
    let (usage, stub) = match watched.usage {
        Some(usage) if !watched.exited => (usage, Some(stub)),
        reported => {
            let reaped = stub.reap()?;
            let (cpu, rss) = reported.unwrap_or_default();
            (
                (cpu.max(reaped.cpu_micros), rss.max(reaped.max_rss_bytes)),
                None,
            )
        }
    };
    let last = watched.message;
    let mut outcome = outcome(watched, usage, cgroup, &before, cpu_before, limits, wall)?;
    outcome.files = outputs::read_records(
        files.as_ref(),
        last,
        &submission.outputs,
        OutputCaps::of(limits),
    );
    Ok((outcome, stub))
}

/// The outcome of a watched run: `usage` is the (CPU micros, max RSS bytes)
/// the stub reported or rusage gave; the cgroup's counters, read against
/// `before` and `cpu_before`, say what the kernel enforced.
pub(super) fn outcome(
    watched: Watched,
    usage: (u64, u64),
    cgroup: &Cgroup,
    before: &Counters,
    cpu_before: Duration,
    limits: &Limits,
    wall: Duration,
) -> Result<Outcome, NativeError> {
    let after = cgroup.counters()?;
    // The cgroup counts every process, including those the kernel reaped when
    // the stub died; the stub's report counts what it reaped itself.
    let cpu_used = cgroup
        .cpu_usage()
        .map(|now| now.saturating_sub(cpu_before))
        .unwrap_or_default()
        .max(Duration::from_micros(usage.0));
    let observed = Observed {
        message: watched.message,
        killed: watched.killed,
        oom_kills: after.oom_kills.saturating_sub(before.oom_kills),
        pids_max_hits: after.pids_max_hits.saturating_sub(before.pids_max_hits),
        cpu_used,
        cpu_limit: limits.cpu_time,
    };
    let (verdict, exit_code, signal, message) = verdict::decide(&observed);
    Ok(Outcome {
        limits_reached: verdict::limits_reached(&observed),
        verdict,
        exit_code,
        signal,
        stdout: watched.stdout,
        stderr: watched.stderr,
        usage: Usage {
            wall,
            cpu: cpu_used,
            peak_memory_bytes: usage.1,
        },
        message,
        image: None,
        arch: None,
        files: Vec::new(),
    })
}

/// The sandbox's pid 1, which must still be reaped once it has exited.
pub struct Stub {
    pub(super) pid: libc::pid_t,
    pub(super) pidfd: OwnedFd,
}

impl Stub {
    /// Waits for the stub to exit (its teardown kills what is left of the
    /// sandbox) and reaps it.
    pub fn reap(self) -> Result<sys::process::Reaped, NativeError> {
        let _ = &self.pidfd;
        sys::process::wait4(self.pid).map_err(|source| NativeError::Wait { source })
    }
}

/// clone3 flags for a sandbox's pid 1: new user, pid, mount, ipc and uts
/// namespaces (the network namespace is entered beforehand), a pidfd, and on
/// cgroup v2 the cgroup to start in.
pub(super) fn sandbox_clone_flags(into_cgroup: bool) -> u64 {
    let flags = (libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_PIDFD) as u64;
    if into_cgroup {
        flags | CLONE_INTO_CGROUP
    } else {
        flags
    }
}

/// Clones the stub; in the child, runs it (it never returns here).
pub(super) fn spawn_stub(
    args: sys::clone::CloneArgs,
    plan: &Plan,
    fds: ChildFds,
) -> std::io::Result<(libc::pid_t, OwnedFd)> {
    match sys::clone::clone(args)? {
        sys::clone::Cloned::Child => child::stub(plan, fds),
        sys::clone::Cloned::Parent { pid, pidfd } => {
            let pidfd = pidfd.ok_or_else(|| std::io::Error::other("clone3 returned no pidfd"))?;
            Ok((pid, pidfd))
        }
    }
}

/// Writes the id maps, joins the cgroup (v1) and lets the stub go on.
pub(super) fn release_child(
    pid: libc::pid_t,
    ids: IdMap,
    cgroup: &Cgroup,
    go: OwnedFd,
) -> Result<(), NativeError> {
    let proc = format!("/proc/{pid}");
    let map = format!("0 {} 65536\n", ids.base);
    write_proc(&format!("{proc}/uid_map"), &map)?;
    write_proc(&format!("{proc}/gid_map"), &map)?;
    if cgroup.clone_target()?.is_none() {
        cgroup.attach(pid)?;
    }
    nix::unistd::write(&go, b"g").map_err(|source| NativeError::Release { source })?;
    Ok(())
}

fn write_proc(path: &str, value: &str) -> Result<(), NativeError> {
    fs::write(path, value).map_err(|source| NativeError::IdMap {
        path: path.into(),
        value: value.trim().into(),
        source,
    })
}

/// The pipes and memfd a run needs; the child's ends are plain numbers to it.
struct StdioPipes {
    parent: OwnedFd,
    stdin: OwnedFd,
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    status: (OwnedFd, OwnedFd),
    go: (OwnedFd, OwnedFd),
}

pub(super) struct ParentSide {
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) status: OwnedFd,
}

impl StdioPipes {
    fn new(stdin: &[u8]) -> Result<StdioPipes, NativeError> {
        let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|source| NativeError::Pipe { source });
        let memfd = memfd_create(c"pyward-stdin", MFdFlags::MFD_CLOEXEC)
            .map_err(|source| NativeError::Pipe { source })?;
        let mut file = fs::File::from(memfd);
        file.write_all(stdin)
            .and_then(|()| file.rewind())
            .map_err(|source| NativeError::Stdin { source })?;
        let io = StdioPipes {
            parent: sys::process::pidfd_self()
                .map_err(|source| NativeError::SelfPidfd { source })?,
            stdin: file.into(),
            stdout: pipe()?,
            stderr: pipe()?,
            status: pipe()?,
            go: pipe()?,
        };
        for fd in [&io.stdout.0, &io.stderr.0, &io.status.0] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|source| NativeError::Pipe { source })?;
        }
        Ok(io)
    }

    fn child_fds(&self) -> ChildFds {
        ChildFds {
            stdin: self.stdin.as_raw_fd(),
            stdout: self.stdout.1.as_raw_fd(),
            stderr: self.stderr.1.as_raw_fd(),
            status: self.status.1.as_raw_fd(),
            go: self.go.0.as_raw_fd(),
            parent: self.parent.as_raw_fd(),
            files: -1,
        }
    }

    /// Closes the child's ends in the parent, so EOF means the sandbox is gone.
    fn into_parent_side(self) -> (ParentSide, OwnedFd) {
        let parent = ParentSide {
            stdout: self.stdout.0,
            stderr: self.stderr.0,
            status: self.status.0,
        };
        (parent, self.go.1)
    }
}

/// A captured stream with its cap.
struct Stream {
    kind: Output,
    captured: Captured,
    cap: usize,
    open: bool,
}

impl Stream {
    fn new(kind: Output, cap: u64) -> Stream {
        Stream {
            kind,
            captured: Captured::default(),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            open: true,
        }
    }

    /// Reads what is available and hands what it keeps to `observer` as it
    /// goes; returns true when the cap was passed.
    fn drain(&mut self, fd: &OwnedFd, observer: &RunWatch) -> bool {
        let mut buf = [0u8; 64 * 1024];
        let mut over = false;
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    self.open = false;
                    break;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.captured.bytes.len());
                    let kept = &buf[..n.min(room)];
                    self.captured.bytes.extend_from_slice(kept);
                    observer.emit(self.kind, kept);
                    if n > room {
                        self.captured.truncated = true;
                        over = true;
                    }
                }
                Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
        }
        over
    }
}

pub(super) struct Watched {
    pub(super) stdout: Captured,
    pub(super) stderr: Captured,
    pub(super) message: Option<Message>,
    /// The payload's usage, as the stub reported it.
    pub(super) usage: Option<(u64, u64)>,
    pub(super) killed: Option<KillReason>,
    /// True when the stub itself has exited (else it is about to).
    pub(super) exited: bool,
}

/// Polls the pipes and the pidfd until the payload has ended (the stub said
/// so, or the stub is gone) and stdout and stderr are at EOF, killing the
/// sandbox when a limit is passed or the observer's token is cancelled.
/// Output goes to the observer as it is read. Does not wait for the stub's
/// own exit, whose namespace teardown costs a few hundred microseconds.
pub(super) fn watch(
    pipes: &ParentSide,
    pidfd: &OwnedFd,
    limits: &Limits,
    cpu_used: &dyn Fn() -> Result<Duration, CgroupError>,
    started: Instant,
    observer: &RunWatch,
) -> Watched {
    let (stdout, stderr, status) = (&pipes.stdout, &pipes.stderr, &pipes.status);
    let mut out = Stream::new(Output::Stdout, limits.output.bytes());
    let mut err = Stream::new(Output::Stderr, limits.output.bytes());
    let cancel = CancelKill::arm(observer, pidfd);
    let mut status_bytes = Vec::new();
    let mut status_open = true;
    let mut exited = false;
    let mut ended_at: Option<Instant> = None;
    let mut killed = None;
    let deadline = started + limits.wall_time;
    let mut next_cpu_check = started + cpu_check_interval(limits.cpu_time, limits.cpus);
    let kill = |reason, killed: &mut Option<KillReason>| {
        if killed.is_none() {
            *killed = Some(reason);
            let _ = sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        }
    };
    loop {
        if cancel.fired() && killed.is_none() && ended_at.is_none() {
            // The canceller has sent the SIGKILL; the pidfd and the pipes tell the rest.
            killed = Some(KillReason::Cancelled);
        }
        let now = Instant::now();
        let reported = payload_ended(&status_bytes);
        if (reported || exited) && ended_at.is_none() {
            ended_at = Some(now);
        }
        let drained = !out.open && !err.open && (reported || !status_open);
        if ended_at.is_some_and(|t| drained || now - t > Duration::from_secs(1)) {
            break;
        }
        if ended_at.is_none() && killed.is_none() {
            if now >= deadline {
                kill(KillReason::WallTime, &mut killed);
            } else if now >= next_cpu_check {
                match cpu_used() {
                    Ok(used) if used >= limits.cpu_time => kill(KillReason::CpuTime, &mut killed),
                    Ok(used) => {
                        next_cpu_check =
                            now + cpu_check_interval(limits.cpu_time - used, limits.cpus)
                    }
                    Err(_) => next_cpu_check = now + Duration::from_millis(100),
                }
            }
        }
        let wake = if ended_at.is_some() || killed.is_some() {
            now + Duration::from_millis(100)
        } else {
            deadline.min(next_cpu_check)
        };
        let timeout = PollTimeout::try_from(
            wake.saturating_duration_since(now)
                .as_millis()
                .clamp(1, 60_000) as i32,
        )
        .unwrap_or(PollTimeout::MAX);
        let mut fds = Vec::with_capacity(4);
        let mut slots = Vec::with_capacity(4);
        for (slot, fd, open) in [
            (0, stdout, out.open),
            (1, stderr, err.open),
            (2, status, status_open),
            (3, pidfd, !exited),
        ] {
            if open {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                slots.push(slot);
            }
        }
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&slots)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, slot)| *slot)
            .collect();
        drop(fds);
        for slot in ready {
            match slot {
                0 if out.drain(stdout, observer) => kill(KillReason::Output, &mut killed),
                1 if err.drain(stderr, observer) => kill(KillReason::Output, &mut killed),
                2 => status_open = read_status(status, &mut status_bytes),
                3 => exited = true,
                _ => {}
            }
        }
    }
    Watched {
        stdout: out.captured,
        stderr: err.captured,
        message: last_message(&status_bytes),
        usage: reported_usage(&status_bytes),
        killed,
        exited,
    }
}

/// The kill a cancel token sends: a SIGKILL to the sandbox's pid 1 (which
/// takes its whole pid namespace down) from the cancelling thread, which also
/// wakes the watch through the pidfd and the pipes. Unregistered on drop.
struct CancelKill {
    fired: Arc<AtomicBool>,
    _guard: Option<CancelGuard>,
}

impl CancelKill {
    fn arm(observer: &RunWatch, pidfd: &OwnedFd) -> CancelKill {
        let fired = Arc::new(AtomicBool::new(false));
        let guard = observer.cancel_token().and_then(|token| {
            // The waker outlives this borrow of the pidfd: it keeps its own.
            let pidfd = match pidfd.try_clone() {
                Ok(pidfd) => pidfd,
                Err(error) => {
                    tracing::warn!(%error, "cannot duplicate the sandbox's pidfd: this run cannot be cancelled");
                    return None;
                }
            };
            let flag = fired.clone();
            Some(token.on_cancel(move || {
                flag.store(true, Ordering::SeqCst);
                let _ = sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            }))
        });
        CancelKill {
            fired,
            _guard: guard,
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// How long until the CPU limit could be reached, at `cpus` cores flat out.
fn cpu_check_interval(remaining: Duration, cpus: f64) -> Duration {
    remaining
        .div_f64(cpus.max(0.01))
        .max(Duration::from_millis(5))
}

/// Appends what the status pipe has; false at EOF.
fn read_status(fd: &OwnedFd, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(nix::Error::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// The message that decides the run: a setup failure wins over any later status.
pub(super) fn last_message(bytes: &[u8]) -> Option<Message> {
    let messages: Vec<Message> = messages(bytes)
        .filter(|m| !matches!(m, Message::Usage { .. }))
        .collect();
    messages
        .iter()
        .find(|m| matches!(m, Message::SetupFailed { .. }))
        .or(messages.last())
        .copied()
}

fn messages(bytes: &[u8]) -> impl Iterator<Item = Message> + '_ {
    bytes
        .chunks_exact(MESSAGE_LEN)
        .filter_map(|chunk| Message::from_bytes(chunk.try_into().ok()?))
}

/// True once the stub has said how the payload ended.
fn payload_ended(bytes: &[u8]) -> bool {
    messages(bytes).any(|m| matches!(m, Message::Exited(_) | Message::Signaled(_)))
}

/// The payload's (CPU micros, max RSS bytes), as the stub reported them.
fn reported_usage(bytes: &[u8]) -> Option<(u64, u64)> {
    messages(bytes).find_map(|m| match m {
        Message::Usage {
            cpu_micros,
            max_rss_bytes,
        } => Some((cpu_micros, max_rss_bytes)),
        _ => None,
    })
}

/// clone3's flag to start the child in a cgroup (Linux 5.7; libc's constant is deprecated for overflowing c_int).
pub(super) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
