//! Network namespaces made ahead of time and entered for one clone.
//!
//! Creating a network namespace per run is cheap, but tearing one down is
//! not: the kernel's cleanup work competes with the next runs and made
//! back-to-back calls 2x slower. pyward keeps empty namespaces and reuses each
//! for one run at a time instead.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

/// Makes an empty network namespace owned by our user namespace (so nothing a
/// sandbox does as its own root can reconfigure it), with `lo` up when asked.
pub fn create(loopback: bool) -> std::io::Result<OwnedFd> {
    // unshare() moves only the calling thread: use a short-lived thread of our own.
    std::thread::spawn(move || -> std::io::Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        if loopback {
            super::process::loopback_up()?;
        }
        Ok(File::open("/proc/thread-self/ns/net")?.into())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("network namespace thread panicked")))
}

/// Runs `f` with the calling thread inside `netns`, then moves the thread back.
/// A child cloned inside `f` stays in `netns`.
pub fn within<T>(netns: &OwnedFd, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let own: OwnedFd = File::open("/proc/thread-self/ns/net")?.into();
    setns(netns)?;
    let result = f();
    // Failing to return would leave this thread in a sandbox's namespace.
    setns(&own).map_err(|e| {
        std::io::Error::other(format!("failed to return to our network namespace: {e}"))
    })?;
    Ok(result)
}

fn setns(fd: &OwnedFd) -> std::io::Result<()> {
    Ok(nix::sched::setns(
        fd.as_fd(),
        nix::sched::CloneFlags::CLONE_NEWNET,
    )?)
}
