//! Running a closure in a forked child, for tests and probes that must not
//! change the calling process (installing a seccomp filter, unsharing).

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// Forks, runs `f` in the child and exits with its return value; returns how the child ended.
///
/// `f` runs in a copy of a possibly multi-threaded process: it must not take
/// locks another thread may hold (no logging, no stdout locking). Allocation is
/// acceptable only because glibc resets its allocator locks across `fork()`.
pub fn run_in_fork(f: impl FnOnce() -> i32) -> nix::Result<WaitStatus> {
    // SAFETY: the child only runs `f` (documented above as fork-safe) and then
    // `_exit`s without running destructors or atexit handlers.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let code = f();
            // SAFETY: `_exit` is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None),
    }
}
