//! Probes of what this host's kernel offers a sandbox, each made without
//! changing the calling process (in a forked child where a probe would).
//! Landlock's is `landlock::abi`, beside its other syscalls.

use super::probe::run_in_fork;
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::WaitStatus;

/// Whether this process may create the namespaces a sandbox needs: a child
/// unshares a user, mount, pid, network, ipc and uts namespace and reports
/// the errno if that fails.
pub fn can_create_namespaces() -> Result<(), Errno> {
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    let status = run_in_fork(|| match unshare(flags) {
        Ok(()) => 0,
        Err(errno) => errno as i32,
    })?;
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => Err(Errno::from_raw(code)),
        _ => Err(Errno::ECHILD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_can_create_the_sandboxs_namespaces() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root"
            );
            return;
        }
        assert_eq!(can_create_namespaces(), Ok(()));
    }
}
