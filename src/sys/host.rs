//! Probes of what this host's kernel offers a sandbox, each made without
//! changing the calling process (in a forked child where a probe would).

use super::probe::run_in_fork;
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::WaitStatus;

/// `landlock_create_ruleset`'s number (the same on x86_64 and aarch64).
const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
/// Its flag that asks for the highest ABI version instead of a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The Landlock ABI version the kernel offers: ENOSYS when it has no
/// Landlock, EOPNOTSUPP when Landlock is built in but not enabled at boot.
pub fn landlock_abi() -> Result<u32, Errno> {
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the
    // kernel reads and writes no memory and creates no file descriptor.
    let ret = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(u32::try_from(ret).unwrap_or(u32::MAX))
    }
}

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
    fn landlock_answers_a_version_or_why_not() {
        match landlock_abi() {
            Ok(abi) => assert!(abi >= 1, "{abi}"),
            Err(errno) => assert!(
                matches!(errno, Errno::ENOSYS | Errno::EOPNOTSUPP),
                "{errno}"
            ),
        }
    }

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
