//! Raw syscalls that probe a seccomp filter from inside a forked child.
//!
//! Each call is made with arguments that keep it memory-safe whether the
//! filter lets it through or not (null pointers, invalid descriptors, a zero
//! flag word), so a filter that fails open makes a test fail, not crash.

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// A syscall a probe may make; see each variant for what it does when allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeCall {
    /// `getpid()`: returns the pid.
    Getpid,
    /// `mknodat(AT_FDCWD, "/nonexistent-pyward/fifo", S_IFIFO|0600, 0)`: ENOENT.
    Mknodat,
    /// `sethostname(NULL, 0)`: changes nothing (EFAULT or EPERM).
    Sethostname,
    /// `ptrace(-1, 0, NULL, NULL)`: an invalid request (EIO or ESRCH).
    Ptrace,
    /// `unshare(0)`: a no-op.
    Unshare,
    /// `mount(NULL, NULL, NULL, 0, NULL)`: EFAULT or EINVAL.
    Mount,
    /// `bpf(-1, NULL, 0)`: EINVAL.
    Bpf,
    /// `keyctl(-1, 0, 0, 0, 0)`: EOPNOTSUPP.
    Keyctl,
    /// `io_uring_setup(0, NULL)`: EINVAL or EFAULT.
    IoUringSetup,
    /// `clone3(NULL, 0)`: EINVAL (a size of 0 is too small).
    Clone3,
    /// `chroot("/nonexistent-pyward/fifo")`: ENOENT as root, EPERM otherwise.
    Chroot,
    /// `clock_settime(1000, NULL)`: EINVAL (no such clock; checked before the pointer).
    ClockSettime,
    /// `fsetxattr(-1, NULL, NULL, 0, 0)`: EFAULT or EBADF (the kernel reads the name first since 6.13).
    Fsetxattr,
    /// `statfs("/", &buf)`: 0 (into a buffer on the stack).
    Statfs,
    /// `socket(domain, SOCK_DGRAM, 0)`: a new socket, left open.
    Socket(i32),
    /// `ioctl(-1, request, NULL)`: EBADF.
    IoctlBadFd(u64),
    /// The x32 ABI's getpid (`0x40000000 | 39`, x86_64 only): the pid if x32 is enabled.
    #[cfg(target_arch = "x86_64")]
    X32Getpid,
}

/// Makes the call; `Ok` with the return value or `Err` with errno.
pub fn call(probe: ProbeCall) -> Result<i64, Errno> {
    const NOWHERE: &std::ffi::CStr = c"/nonexistent-pyward/fifo";
    let null = std::ptr::null::<libc::c_void>();
    let mut statfs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: each call passes only integers, null pointers, the static
    // string NOWHERE or (statfs) a pointer to a local buffer of the kernel's
    // `struct statfs`; none makes the kernel write elsewhere in our memory
    // or change our address space, whether or not a filter lets it through.
    let ret = unsafe {
        match probe {
            ProbeCall::Getpid => libc::syscall(libc::SYS_getpid),
            ProbeCall::Mknodat => libc::syscall(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                NOWHERE.as_ptr(),
                libc::S_IFIFO | 0o600,
                0,
            ),
            ProbeCall::Sethostname => libc::syscall(libc::SYS_sethostname, null, 0),
            ProbeCall::Ptrace => libc::syscall(libc::SYS_ptrace, -1i64, 0, null, null),
            ProbeCall::Unshare => libc::syscall(libc::SYS_unshare, 0),
            ProbeCall::Mount => libc::syscall(libc::SYS_mount, null, null, null, 0, null),
            ProbeCall::Bpf => libc::syscall(libc::SYS_bpf, -1i64, null, 0),
            ProbeCall::Keyctl => libc::syscall(libc::SYS_keyctl, -1i64, 0, 0, 0, 0),
            ProbeCall::IoUringSetup => libc::syscall(libc::SYS_io_uring_setup, 0, null),
            ProbeCall::Clone3 => libc::syscall(libc::SYS_clone3, null, 0),
            ProbeCall::Chroot => libc::syscall(libc::SYS_chroot, NOWHERE.as_ptr()),
            ProbeCall::ClockSettime => libc::syscall(libc::SYS_clock_settime, 1000i64, null),
            ProbeCall::Fsetxattr => libc::syscall(libc::SYS_fsetxattr, -1i64, null, null, 0, 0),
            ProbeCall::Statfs => {
                libc::syscall(libc::SYS_statfs, c"/".as_ptr(), statfs.as_mut_ptr())
            }
            ProbeCall::Socket(domain) => {
                libc::syscall(libc::SYS_socket, domain, libc::SOCK_DGRAM, 0)
            }
            ProbeCall::IoctlBadFd(request) => libc::syscall(libc::SYS_ioctl, -1i64, request, null),
            #[cfg(target_arch = "x86_64")]
            ProbeCall::X32Getpid => libc::syscall(0x4000_0000 | libc::SYS_getpid),
        }
    };
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// How [`fork_raw`] makes its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFork {
    /// The `fork` syscall itself (x86_64 only; glibc's fork() uses clone).
    #[cfg(target_arch = "x86_64")]
    Fork,
    /// `clone(SIGCHLD | extra, 0, ...)`: like fork, plus namespace flags.
    Clone {
        /// Extra flags; only `CLONE_NEW*` bits are accepted.
        extra: libc::c_int,
    },
}

/// The `CLONE_NEW*` flags that `clone` takes.
const CLONE_NEW_ANY: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET;

/// Makes a child with a raw syscall, bypassing glibc; the child `_exit(0)`s at
/// once and is reaped. Returns how the child ended, or the syscall's errno.
pub fn fork_raw(how: RawFork) -> Result<WaitStatus, Errno> {
    let ret = match how {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a plain fork: the child gets a copy of the address space and
        // only calls `_exit` below, so no lock or allocator state is touched.
        RawFork::Fork => unsafe { libc::syscall(libc::SYS_fork) },
        RawFork::Clone { extra } => {
            assert_eq!(
                extra & !CLONE_NEW_ANY,
                0,
                "fork_raw takes only CLONE_NEW* flags"
            );
            // SAFETY: without CLONE_VM, CLONE_THREAD or a new stack this is a
            // fork (plus namespaces): the child has its own copy of memory and
            // only calls `_exit` below. The pointer arguments are null.
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD | extra, 0, 0, 0, 0) }
        }
    };
    match ret {
        -1 => Err(Errno::last()),
        // SAFETY: in the child: `_exit` is async-signal-safe and never returns.
        0 => unsafe { libc::_exit(0) },
        pid => waitpid(Pid::from_raw(pid as libc::pid_t), None),
    }
}

/// getpid through the i386 ABI (`int 0x80`, eax = 20): the pid, or -errno.
///
/// On a kernel without IA-32 emulation the instruction raises SIGSEGV.
#[cfg(target_arch = "x86_64")]
pub fn i386_getpid() -> i64 {
    let mut rax: i64 = 20; // __NR_getpid in the i386 table
    // SAFETY: `int 0x80` with eax = 20 takes no arguments and touches no user
    // memory; the kernel's compat entry returns in eax and may clobber r8-r11,
    // declared below. No stack is used.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inout("rax") rax,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    rax
}
