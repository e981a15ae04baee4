//! What the native runtime observed, in the shared verdict rules' terms.

use super::status::{Message, Step};
pub use crate::runtime::verdict::Kill as KillReason;
use crate::runtime::verdict::{self, Ended, Observation};
use crate::runtime::{LimitReached, Verdict};
use nix::errno::Errno;
use std::time::Duration;

/// Everything the verdict depends on, as the parent saw it.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The last meaningful message from the status pipe.
    pub message: Option<Message>,
    /// Set when the parent killed the sandbox.
    pub killed: Option<KillReason>,
    /// OOM kills in the sandbox's cgroup during the run.
    pub oom_kills: u64,
    /// Forks refused by the pids limit during the run.
    pub pids_max_hits: u64,
    /// CPU time used, and the limit.
    pub cpu_used: Duration,
    pub cpu_limit: Duration,
}

/// The verdict, the exit code, the signal and (for non-ok verdicts) a sentence.
pub fn decide(o: &Observed) -> (Verdict, Option<i32>, Option<i32>, Option<String>) {
    verdict::decide(&observation(o))
}

/// Every limit the run reached (see `verdict::limits_reached`).
pub fn limits_reached(o: &Observed) -> Vec<LimitReached> {
    verdict::limits_reached(&observation(o))
}

fn observation(o: &Observed) -> Observation {
    let (ended, setup_failure) = match o.message {
        Some(Message::Exited(code)) => (Ended::Exited(code), None),
        Some(Message::Signaled(sig)) => (Ended::Signaled(sig), None),
        Some(Message::SetupFailed { step, errno }) => {
            (Ended::Unknown, Some(setup_failure(step, errno)))
        }
        Some(Message::Usage { .. }) | None => (Ended::Unknown, None),
    };
    Observation {
        setup_failure,
        killed: o.killed,
        ended,
        oom_kills: o.oom_kills,
        pids_max_hits: o.pids_max_hits,
        cpu_used: o.cpu_used,
        cpu_limit: o.cpu_limit,
    }
}

fn setup_failure(step: Step, errno: Errno) -> String {
    format!(
        "sandbox setup failed: could not {}: {} ({})",
        step.describe(),
        errno.desc(),
        errno
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(message: Option<Message>) -> Observed {
        Observed {
            message,
            killed: None,
            oom_kills: 0,
            pids_max_hits: 0,
            cpu_used: Duration::from_millis(10),
            cpu_limit: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_stubs_messages_map_to_verdicts() {
        assert_eq!(
            decide(&observed(Some(Message::Exited(0)))),
            (Verdict::Ok, Some(0), None, None)
        );
        assert_eq!(
            decide(&observed(Some(Message::Exited(2)))).0,
            Verdict::RuntimeError
        );
        assert_eq!(
            decide(&observed(Some(Message::Signaled(libc::SIGSYS)))).0,
            Verdict::SecurityViolation
        );
        assert_eq!(decide(&observed(None)).0, Verdict::SandboxError);
        let killed = Observed {
            killed: Some(KillReason::WallTime),
            ..observed(None)
        };
        assert_eq!(decide(&killed).0, Verdict::Timeout);
    }

    #[test]
    fn setup_failure_names_the_step_and_errno() {
        let (v, _, _, message) = decide(&observed(Some(Message::SetupFailed {
            step: Step::PivotRoot,
            errno: Errno::EPERM,
        })));
        assert_eq!(v, Verdict::SandboxError);
        let message = message.unwrap();
        assert!(
            message.contains("pivot_root") && message.contains("EPERM"),
            "{message}"
        );
    }
}
