//! Raw, allocation-free file calls for the sandbox's pid 1, which reads the
//! declared output files out of a work dir the program controlled.

use std::ffi::CStr;
use std::os::fd::RawFd;

fn check(ret: libc::c_long) -> nix::Result<libc::c_long> {
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(ret)
    }
}

/// The (device, inode) of `path` (stat(2): a final symbolic link is followed).
pub fn identity(path: &CStr) -> nix::Result<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes.
    check(unsafe { libc::stat(path.as_ptr(), &mut st) }.into())?;
    Ok((st.st_dev, st.st_ino))
}

/// Opens a directory with `O_PATH`, resolving no symbolic link on the way.
pub fn open_dir_no_symlinks(path: &CStr) -> nix::Result<RawFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    openat2(libc::AT_FDCWD, path, flags, libc::RESOLVE_NO_SYMLINKS)
}

/// Opens `path` beneath `dir` for reading without ever blocking or
/// following a link: no symbolic link in any component (ELOOP), no magic
/// link, no `..` out of `dir`, no mount crossed (EXDEV), `O_NONBLOCK` so that
/// neither a FIFO nor a lease can make the open wait, `O_NOCTTY`.
pub fn open_beneath(dir: RawFd, path: &CStr) -> nix::Result<RawFd> {
    let flags =
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    openat2(dir, path, flags, resolve)
}

fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int, resolve: u64) -> nix::Result<RawFd> {
    // SAFETY: all-zero is a valid open_how (and the kernel requires unused fields zero).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: `path` is NUL-terminated, `how` is a complete open_how of the
    // size passed; the kernel returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    check(fd).map(|fd| fd as RawFd)
}

/// What `fstat` says of an open file: whether it is a regular file, and its size.
pub fn regular_size(fd: RawFd) -> nix::Result<(bool, u64)> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; fstat touches nothing else.
    check(unsafe { libc::fstat(fd, &mut st) }.into())?;
    let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    Ok((regular, u64::try_from(st.st_size).unwrap_or(0)))
}

/// Copies up to `count` bytes from `from` (at its offset) to `to`, in the
/// kernel (sendfile); returns how many, 0 at end of file. Retries on EINTR.
pub fn copy(to: RawFd, from: RawFd, count: usize) -> nix::Result<usize> {
    loop {
        // SAFETY: a null offset makes sendfile use and advance `from`'s own offset.
        let n = unsafe { libc::sendfile(to, from, std::ptr::null_mut(), count) };
        match check(n as libc::c_long) {
            Err(nix::Error::EINTR) => {}
            other => return other.map(|n| n as usize),
        }
    }
}

/// The current offset of `fd`.
pub fn offset(fd: RawFd) -> nix::Result<u64> {
    // SAFETY: lseek only reads the fd's offset.
    let off = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    check(off as libc::c_long).map(|o| o as u64)
}

/// Writes all of `buf` at `offset`, leaving the fd's own offset alone.
pub fn write_all_at(fd: RawFd, mut buf: &[u8], mut offset: u64) -> nix::Result<()> {
    while !buf.is_empty() {
        let at = libc::off_t::try_from(offset).map_err(|_| nix::Error::EOVERFLOW)?;
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), at) };
        match check(n as libc::c_long) {
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
            Ok(0) => return Err(nix::Error::EIO),
            Ok(n) => {
                buf = &buf[n as usize..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
