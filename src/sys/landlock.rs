//! Landlock with raw syscalls: a ruleset built and enforced by the sandbox's
//! payload on its own, after its mounts and before seccomp. Allocation-free,
//! for the child of a possibly multi-threaded parent: the access masks and
//! paths are prepared before the clone (see `runtime::native::plan`).

use nix::errno::Errno;
use std::ffi::CString;

const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
const SYS_LANDLOCK_ADD_RULE: libc::c_long = 445;
const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_uint = 1;
/// `landlock_create_ruleset`'s flag that asks for the highest ABI version instead of a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The Landlock ABI version the kernel offers: ENOSYS when it has no
/// Landlock, EOPNOTSUPP when Landlock is built in but not enabled at boot.
pub fn abi() -> Result<u32, Errno> {
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

/// `struct landlock_ruleset_attr` (ABI 6 layout; older kernels accept the
/// larger size as long as the fields they do not know are zero).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr`, which the kernel declares packed.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Creates a ruleset handling `handled_fs` and `scoped`, adds one
/// path-beneath rule per `(path, access)`, and restricts the calling thread
/// (and what it execs) to it. Needs no_new_privs. The ruleset's fd is closed
/// before returning, whatever happened.
pub fn restrict_self(handled_fs: u64, scoped: u64, rules: &[(CString, u64)]) -> Result<(), Errno> {
    let attr = RulesetAttr {
        handled_access_fs: handled_fs,
        handled_access_net: 0,
        scoped,
    };
    // SAFETY: `attr` is a live, correctly laid out ruleset_attr of the size
    // passed; the kernel only reads it and returns a new fd or an error.
    let ruleset = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if ruleset < 0 {
        return Err(Errno::last());
    }
    let ruleset = ruleset as libc::c_int;
    let result = add_rules(ruleset, rules).and_then(|()| {
        // SAFETY: restrict_self takes only integers.
        let ret = unsafe { libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0u32) };
        if ret < 0 { Err(Errno::last()) } else { Ok(()) }
    });
    // SAFETY: `ruleset` is the fd created above, closed once.
    unsafe { libc::close(ruleset) };
    result
}

fn add_rules(ruleset: libc::c_int, rules: &[(CString, u64)]) -> Result<(), Errno> {
    for (path, access) in rules {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        let attr = PathBeneathAttr {
            allowed_access: *access,
            parent_fd: fd,
        };
        // SAFETY: `attr` is a live path_beneath_attr and `fd` an open O_PATH
        // fd; the kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                SYS_LANDLOCK_ADD_RULE,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        let errno = Errno::last();
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
        if ret < 0 {
            return Err(errno);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::probe::run_in_fork;
    use nix::sys::wait::WaitStatus;

    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    const WRITE_FILE: u64 = 1 << 1;
    const MAKE_REG: u64 = 1 << 8;

    #[test]
    fn the_kernel_answers_a_version_or_why_not() {
        match abi() {
            Ok(abi) => assert!(abi >= 1, "{abi}"),
            Err(errno) => assert!(
                matches!(errno, Errno::ENOSYS | Errno::EOPNOTSUPP),
                "{errno}"
            ),
        }
    }

    #[test]
    fn writes_outside_the_granted_tree_fail_with_eacces() {
        if abi().is_err() {
            eprintln!("SKIPPED: this kernel offers no Landlock");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI's kernel has Landlock"
            );
            return;
        }
        let granted = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let rules = [
            (CString::new("/").unwrap(), READ_FILE | READ_DIR),
            (
                CString::new(granted.path().to_str().unwrap()).unwrap(),
                READ_FILE | READ_DIR | WRITE_FILE | MAKE_REG,
            ),
        ];
        let (inside, outside) = (granted.path().join("f"), other.path().join("f"));
        let status = run_in_fork(move || {
            if nix::sys::prctl::set_no_new_privs().is_err() {
                return 10;
            }
            if restrict_self(READ_FILE | READ_DIR | WRITE_FILE | MAKE_REG, 0, &rules).is_err() {
                return 11;
            }
            if std::fs::write(&inside, b"x").is_err() {
                return 12;
            }
            match std::fs::write(&outside, b"x") {
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => 0,
                _ => 13,
            }
        })
        .unwrap();
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        assert!(!other.path().join("f").exists());
    }
}
