//! The status pipe between the sandbox and pyward: fixed-size messages that
//! say which setup step failed (with its errno) or how the payload ended.

use nix::errno::Errno;

macro_rules! steps {
    ($($name:ident => $text:literal,)*) => {
        /// A named step of the sandbox's setup, in the order they run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Step { $($name,)* }

        impl Step {
            const ALL: &'static [Step] = &[$(Step::$name,)*];

            /// What the step does, for error messages.
            pub fn describe(self) -> &'static str {
                match self { $(Step::$name => $text,)* }
            }
        }
    };
}

steps! {
    OwnFds => "close the file descriptors of other runs",
    WaitForParent => "wait for the parent to write the id maps",
    BecomeNamespaceRoot => "become root of the user namespace",
    ParentDeathSignal => "tie the sandbox's life to pyward's",
    UnshareCgroup => "enter a new cgroup namespace",
    BlockSignals => "block the stub's signals",
    ForkPayload => "fork the payload",
    Stdio => "set up stdin, stdout and stderr",
    MakeMountsPrivate => "make every mount private",
    MountRoot => "mount the new root tmpfs",
    Skeleton => "create mount points, /etc files and /dev placeholders",
    BindHost => "bind the host's interpreter and libraries read-only",
    BindDevices => "bind the /dev nodes",
    MountProc => "mount /proc",
    CoverProc => "cover /proc's sensitive paths (read-only or masked)",
    MountTmp => "mount /tmp",
    MountWork => "mount the work dir",
    WorkFiles => "write the program and its input files",
    SealRoot => "remount the new root read-only",
    PivotRoot => "pivot_root into the new root",
    Hostname => "set the hostname",
    Rlimits => "set rlimits",
    DropBoundingSet => "drop the capability bounding set",
    SwitchUser => "switch to the sandbox user",
    ClearCapabilities => "clear the remaining capabilities",
    CloseFds => "close inherited file descriptors",
    ResetSignals => "reset signal handling",
    NoNewPrivs => "set no_new_privs",
    Landlock => "restrict file access with Landlock",
    Seccomp => "install the seccomp filter",
    Execve => "execute the interpreter",
    WarmUnshare => "create the call's namespaces in the zygote",
    WarmSetup => "prepare the warm call",
}

/// One message on the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A setup step failed; the program never started.
    SetupFailed { step: Step, errno: Errno },
    /// The payload exited with this status.
    Exited(i32),
    /// The payload was killed by this signal.
    Signaled(i32),
    /// What the payload used, sent just before `Exited` or `Signaled`.
    Usage {
        /// User plus system CPU time of the payload and the children it reaped.
        cpu_micros: u64,
        /// The largest resident set among them, in bytes.
        max_rss_bytes: u64,
    },
}

const SETUP_FAILED: u32 = 1;
const EXITED: u32 = 2;
const SIGNALED: u32 = 3;
const USAGE: u32 = 4;
/// The size of one message on the wire: kind, a, b, c.
pub const MESSAGE_LEN: usize = 24;

impl Message {
    pub fn setup_failed(step: Step, errno: Errno) -> Message {
        Message::SetupFailed { step, errno }
    }

    /// How a process ended, from its raw wait status.
    pub fn from_wait_status(status: libc::c_int) -> Message {
        if libc::WIFSIGNALED(status) {
            Message::Signaled(libc::WTERMSIG(status))
        } else {
            Message::Exited(libc::WEXITSTATUS(status))
        }
    }

    /// Encodes without allocating (the child calls this).
    pub fn to_bytes(self) -> [u8; MESSAGE_LEN] {
        let (kind, a, b, c): (u32, u32, i64, u64) = match self {
            Message::SetupFailed { step, errno } => (SETUP_FAILED, step as u32, errno as i64, 0),
            Message::Exited(code) => (EXITED, 0, code.into(), 0),
            Message::Signaled(signal) => (SIGNALED, 0, signal.into(), 0),
            Message::Usage {
                cpu_micros,
                max_rss_bytes,
            } => (USAGE, 0, cpu_micros as i64, max_rss_bytes),
        };
        let mut out = [0u8; MESSAGE_LEN];
        out[0..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..16].copy_from_slice(&b.to_ne_bytes());
        out[16..24].copy_from_slice(&c.to_ne_bytes());
        out
    }

    /// Decodes one message; None for bytes no pyward child writes.
    pub fn from_bytes(bytes: &[u8; MESSAGE_LEN]) -> Option<Message> {
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        let quad = |i: usize| -> [u8; 8] { bytes[i..i + 8].try_into().unwrap_or_default() };
        let kind = u32::from_ne_bytes(word(0));
        let a = u32::from_ne_bytes(word(4));
        let wide = i64::from_ne_bytes(quad(8));
        let c = u64::from_ne_bytes(quad(16));
        let b = i32::try_from(wide).ok();
        match kind {
            USAGE => Some(Message::Usage {
                cpu_micros: wide as u64,
                max_rss_bytes: c,
            }),
            SETUP_FAILED => Some(Message::SetupFailed {
                step: *Step::ALL.get(a as usize)?,
                errno: Errno::from_raw(b?),
            }),
            EXITED => Some(Message::Exited(b?)),
            SIGNALED => Some(Message::Signaled(b?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        for message in [
            Message::setup_failed(Step::PivotRoot, Errno::EPERM),
            Message::setup_failed(Step::Execve, Errno::ENOENT),
            Message::Exited(3),
            Message::Signaled(9),
            Message::Usage {
                cpu_micros: 86_400_000_000,
                max_rss_bytes: 1 << 40,
            },
        ] {
            assert_eq!(Message::from_bytes(&message.to_bytes()), Some(message));
        }
        assert_eq!(Message::from_bytes(&[0xff; MESSAGE_LEN]), None);
        let mut unknown_step = Message::setup_failed(Step::Execve, Errno::EPERM).to_bytes();
        unknown_step[4..8].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(Message::from_bytes(&unknown_step), None);
    }
}
