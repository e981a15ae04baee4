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

/// Receives into `buf`; returns the bytes read and the sender's pid, as seen
/// from pyward's pid namespace, when the kernel attached credentials.
pub fn recv_with_pid(sock: &OwnedFd, buf: &mut [u8]) -> nix::Result<(usize, Option<libc::pid_t>)> {
    let mut space = nix::cmsg_space!(libc::ucred);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let pid = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    });
    Ok((msg.bytes, pid))
}
