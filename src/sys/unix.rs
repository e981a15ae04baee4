//! Unix sockets between pyward and a warm-path zygote: a control socket that
//! carries fds (SCM_RIGHTS) and per-call sockets whose first message tells
//! pyward the sender's pid (SCM_CREDENTIALS, translated by the kernel into
//! pyward's pid namespace).

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, setsockopt, socketpair, sockopt,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A close-on-exec unix socket pair of `kind`.
fn pair(kind: SockType) -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
}

/// The zygote's control socket pair (messages keep their boundaries).
pub fn control_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    pair(SockType::SeqPacket)
}

/// A call's socket pair; the first end receives the sender's credentials.
pub fn call_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = pair(SockType::Stream)?;
    setsockopt(&ours, sockopt::PassCred, &true)?;
    Ok((ours, theirs))
}

/// Sends `bytes` with `fds` attached, without SIGPIPE.
pub fn send_with_fds(sock: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Receives into `buf`; returns the bytes read, the sender's pid as seen
/// from pyward's pid namespace (when the kernel attached credentials) and
/// at most one fd the sender passed.
pub fn recv_with_pid(
    sock: &OwnedFd,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<libc::pid_t>, Option<OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut space = nix::cmsg_space!(libc::ucred, [RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let (mut pid, mut fds) = (None, Vec::new());
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(creds) => pid = Some(creds.pid()),
            ControlMessageOwned::ScmRights(received) => fds.extend(received),
            _ => {}
        }
    }
    // SAFETY: the kernel just installed these fds in our table; nothing else owns them.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let fd = owned.pop();
    drop(owned);
    Ok((msg.bytes, pid, fd))
}
