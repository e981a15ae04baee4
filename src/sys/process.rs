//! Raw, allocation-free process calls for the sandbox's setup path.

use std::ffi::{CStr, c_char};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Closes every fd from `first` up. Allocation-free (close_range, Linux 5.9+).
pub fn close_fds_from(first: RawFd) -> nix::Result<()> {
    // SAFETY: close_range only closes descriptors; the caller owns all of them.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if ret == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// Unblocks every signal and resets every handler to its default, so the
/// program starts as if from a clean shell (pyward's parent ignores SIGPIPE).
pub fn reset_signals() -> nix::Result<()> {
    // SAFETY: an all-empty sigset is valid; sigprocmask touches only it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(nix::Error::last());
        }
    }
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL needs no handler code; numbers that are not
        // signals (glibc's reserved RT range) fail with EINVAL and are skipped.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

/// Blocks `signals` in the calling thread (the stub waits for them synchronously).
pub fn block_signals(signals: &[libc::c_int]) -> nix::Result<()> {
    // SAFETY: the set is initialised before use; sigprocmask touches only it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}

/// Waits for one of `signals` (which must be blocked) or `timeout_ms`; returns the signal or None.
pub fn wait_signal(signals: &[libc::c_int], timeout_ms: u64) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: the set is initialised before use; a null siginfo pointer is allowed.
    let sig = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
    };
    (sig > 0).then_some(sig)
}

/// Replaces the process image. Returns only on failure, with the errno.
///
/// `argv` and `envp` are null-terminated arrays of pointers into C strings that
/// the caller keeps alive; building them is the caller's job (before fork),
/// so this call allocates nothing.
pub fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> nix::Error {
    if argv.last() != Some(&std::ptr::null()) || envp.last() != Some(&std::ptr::null()) {
        return nix::Error::EINVAL;
    }
    // SAFETY: both arrays are null-terminated (checked above) and point into
    // C strings the caller keeps alive; execve only returns on failure.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    nix::Error::last()
}

/// Sends `signal` to the process behind `pidfd` (no pid-reuse race).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> nix::Result<()> {
    // SAFETY: a valid pidfd, a signal number and null siginfo; no memory is shared.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// Sets real, effective and saved uid and gid, and drops every supplementary
/// group, with raw syscalls.
///
/// glibc's wrappers would broadcast the change to every thread glibc knows
/// of (POSIX setxid semantics), taking a lock and signalling threads; in a
/// child cloned from a multi-threaded process those threads are the
/// parent's, and the lock may be held forever. The raw calls change only
/// the calling thread, which is all a single-threaded child has.
pub fn set_ids(uid: libc::uid_t, gid: libc::gid_t, clear_groups: bool) -> nix::Result<()> {
    let check = |ret: libc::c_long| {
        if ret == 0 {
            Ok(())
        } else {
            Err(nix::Error::last())
        }
    };
    if clear_groups {
        // SAFETY: a zero-length group list with a null pointer is valid.
        check(unsafe {
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>())
        })?;
    }
    // SAFETY: setresgid/setresuid take plain ids and touch no memory.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

/// A pidfd for the calling process (close-on-exec).
pub fn pidfd_self() -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How a waited-for process ended, with its resource usage (its own plus that of
/// every descendant it reaped).
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The raw wait status.
    pub status: libc::c_int,
    /// User plus system CPU time, in microseconds.
    pub cpu_micros: u64,
    /// Largest resident set among the process and its reaped descendants, in bytes.
    pub max_rss_bytes: u64,
}

/// Reaps any exited child without blocking (`__WALL`): its pid and how it ended,
/// or None when no child has exited. Allocation-free.
pub fn reap_any_nohang() -> Option<(libc::pid_t, Reaped)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both out-pointers are valid for writes for the duration of the call.
    let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL, &mut usage) };
    (pid > 0).then(|| (pid, reaped(status, &usage)))
}

fn reaped(status: libc::c_int, usage: &libc::rusage) -> Reaped {
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    Reaped {
        status,
        cpu_micros: micros(usage.ru_utime) + micros(usage.ru_stime),
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
    }
}

/// Reaps `pid` (blocking), returning its status and rusage.
pub fn wait4(pid: libc::pid_t) -> nix::Result<Reaped> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both out-pointers are valid for writes for the duration of the call.
        let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if ret == pid {
            break;
        }
        let err = nix::Error::last();
        if err != nix::Error::EINTR {
            return Err(err);
        }
    }
    Ok(reaped(status, &usage))
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> nix::Result<()> {
    // SAFETY: a datagram socket for the ioctl; we close it below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: a zeroed ifreq is valid; the name "lo" fits and stays NUL-terminated.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
    };
    let err = nix::Error::last();
    // SAFETY: `fd` is ours and closed exactly once.
    unsafe { libc::close(fd) };
    if result == 0 { Ok(()) } else { Err(err) }
}

/// Raw-fd operations for the sandbox's setup path, where fds are plain numbers
/// copied across clone (no owner to borrow from). All allocation-free.
pub mod rawfd {
    use std::os::fd::RawFd;

    fn check(ret: libc::c_int) -> nix::Result<libc::c_int> {
        if ret < 0 {
            Err(nix::Error::last())
        } else {
            Ok(ret)
        }
    }

    /// dup2 (`cloexec` false) or dup3 with O_CLOEXEC.
    pub fn dup_to(old: RawFd, new: RawFd, cloexec: bool) -> nix::Result<()> {
        // SAFETY: dup2/dup3 only manipulate the fd table; both are plain numbers.
        let ret = unsafe {
            if cloexec {
                libc::dup3(old, new, libc::O_CLOEXEC)
            } else {
                libc::dup2(old, new)
            }
        };
        check(ret).map(drop)
    }

    /// A close-on-exec duplicate at the lowest free fd >= `min`.
    pub fn dup_at_least(fd: RawFd, min: RawFd) -> nix::Result<RawFd> {
        // SAFETY: F_DUPFD_CLOEXEC only manipulates the fd table.
        check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
    }

    /// Closes `fd`, ignoring errors (used for fds the caller no longer needs).
    pub fn close(fd: RawFd) {
        // SAFETY: closing a number we were handed; double closes only yield EBADF.
        unsafe { libc::close(fd) };
    }

    /// Reads into `buf`, retrying on EINTR.
    pub fn read(fd: RawFd, buf: &mut [u8]) -> nix::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = nix::Error::last();
            if err != nix::Error::EINTR {
                return Err(err);
            }
        }
    }

    /// True when `fd` is readable right now (for a pidfd: the process has exited).
    pub fn readable_now(fd: RawFd) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & libc::POLLIN != 0
    }

    /// Blocks until `fd` is readable (`true`) or the process behind `pidfd`
    /// has exited (`false`), retrying on EINTR. Allocation-free.
    pub fn readable_unless_gone(fd: RawFd, pidfd: RawFd) -> bool {
        let mut polls = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfds on the stack, no timeout.
            let ready = unsafe { libc::poll(polls.as_mut_ptr(), 2, -1) };
            if ready > 0 {
                // A dead parent wins: its data, if any, no longer matters.
                return polls[1].revents == 0 && polls[0].revents != 0;
            }
            if ready < 0 && nix::Error::last() != nix::Error::EINTR {
                // poll itself failed: fall back to the blocking read, as before.
                return true;
            }
        }
    }

    /// Writes all of `buf`, retrying on EINTR and short writes.
    pub fn write_all(fd: RawFd, mut buf: &[u8]) -> nix::Result<()> {
        while !buf.is_empty() {
            // SAFETY: `buf` is valid for reads of its length.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = nix::Error::last();
                if err != nix::Error::EINTR {
                    return Err(err);
                }
                continue;
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }
}

/// Ends the process at once: no destructors, no atexit handlers, no stdio flush.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// A pidfd for process `pid` (close-on-exec).
pub fn pidfd_open(pid: libc::pid_t) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}
