//! Process creation with raw `clone3`, so the child does not run glibc's fork
//! handlers (which take allocator locks another thread of ours may hold).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// What a clone returned, seen from the calling side.
pub enum Cloned {
    /// We are the new process.
    Child,
    /// We are the parent; `pidfd` is set when one was asked for.
    Parent {
        /// The child's pid in our pid namespace.
        pid: libc::pid_t,
        /// A pidfd for the child, when `CLONE_PIDFD` was requested.
        pidfd: Option<OwnedFd>,
    },
}

/// Arguments to [`clone`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CloneArgs {
    /// `CLONE_*` flags (namespaces, `CLONE_PIDFD`, `CLONE_INTO_CGROUP`).
    pub flags: u64,
    /// A cgroup directory fd, used with `CLONE_INTO_CGROUP`.
    pub cgroup: Option<RawFd>,
}

#[repr(C)]
#[derive(Default)]
struct RawCloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks like `fork(2)` (the child runs on a copy of our stack) with extra flags.
///
/// The child is a copy of a possibly multi-threaded process: until it execs it
/// may only make raw syscalls on memory prepared before the call (no
/// allocation, no locks, no stdio).
pub fn clone(args: CloneArgs) -> std::io::Result<Cloned> {
    let mut pidfd: RawFd = -1;
    let mut raw = RawCloneArgs {
        flags: args.flags,
        exit_signal: libc::SIGCHLD as u64,
        ..RawCloneArgs::default()
    };
    if args.flags & libc::CLONE_PIDFD as u64 != 0 {
        raw.pidfd = &mut pidfd as *mut RawFd as u64;
    }
    if let Some(fd) = args.cgroup {
        raw.cgroup = fd as u64;
    }
    // SAFETY: `raw` is a valid clone_args of the size we pass; stack 0 makes the
    // child continue on a copy of this stack like fork(2); `pidfd` outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw as *const RawCloneArgs,
            std::mem::size_of::<RawCloneArgs>(),
        )
    };
    match ret {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => Ok(Cloned::Parent {
            pid: pid as libc::pid_t,
            // SAFETY: on success with CLONE_PIDFD the kernel stored a new fd we now own.
            pidfd: (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
        }),
    }
}
