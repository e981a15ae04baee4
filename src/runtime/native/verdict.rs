//! From what the parent observed to a verdict. Pure, so every rule is unit-tested.

use super::status::{Message, Step};
use crate::runtime::Verdict;
use nix::errno::Errno;
use std::time::Duration;

/// Why the parent killed the sandbox, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The wall-clock limit passed.
    WallTime,
    /// The cgroup's CPU usage reached the limit.
    CpuTime,
    /// stdout or stderr passed its cap.
    Output,
}

/// Everything the verdict depends on.
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
    let (exit_code, signal) = match o.message {
        Some(Message::Exited(code)) => (Some(code), None),
        Some(Message::Signaled(sig)) => (None, Some(sig)),
        _ => (None, None),
    };
    if let Some(Message::SetupFailed { step, errno }) = o.message {
        return (
            Verdict::SandboxError,
            None,
            None,
            Some(setup_failure(step, errno)),
        );
    }
    let clean_exit = exit_code == Some(0);
    let (verdict, message) = match o.killed {
        Some(KillReason::Output) => (
            Verdict::OutputLimit,
            "output passed the policy's cap; the sandbox was killed".into(),
        ),
        Some(KillReason::WallTime) => (
            Verdict::Timeout,
            "wall-clock limit reached; the sandbox was killed".into(),
        ),
        Some(KillReason::CpuTime) => (Verdict::CpuLimit, cpu_message(o)),
        None if o.oom_kills > 0 && !clean_exit => (
            Verdict::MemoryLimit,
            format!(
                "memory limit reached: {} process(es) killed by the OOM killer",
                o.oom_kills
            ),
        ),
        None if signal == Some(libc::SIGSYS) => (
            Verdict::SecurityViolation,
            "a forbidden system call was made; seccomp killed the program".into(),
        ),
        None if signal == Some(libc::SIGXCPU)
            || (signal == Some(libc::SIGKILL) && o.cpu_used >= o.cpu_limit) =>
        {
            (Verdict::CpuLimit, cpu_message(o))
        }
        None if o.pids_max_hits > 0 && !clean_exit => (
            Verdict::PidsLimit,
            "process limit reached: the program could not create a process or thread".into(),
        ),
        None => match (exit_code, signal) {
            (Some(0), _) => return (Verdict::Ok, exit_code, None, None),
            (Some(code), _) => (
                Verdict::RuntimeError,
                format!("the program exited with status {code}"),
            ),
            (None, Some(sig)) => (
                Verdict::Signaled,
                format!("the program was killed by signal {}", signal_name(sig)),
            ),
            (None, None) => {
                return (
                    Verdict::SandboxError,
                    None,
                    None,
                    Some("the sandbox ended without reporting the program's status".into()),
                );
            }
        },
    };
    (verdict, exit_code, signal, Some(message))
}

fn cpu_message(o: &Observed) -> String {
    format!(
        "CPU time limit of {:?} reached (used {:?})",
        o.cpu_limit, o.cpu_used
    )
}

fn setup_failure(step: Step, errno: Errno) -> String {
    format!(
        "sandbox setup failed: could not {}: {} ({})",
        step.describe(),
        errno.desc(),
        errno
    )
}

/// `SIGKILL` for 9, or the number when the name is unknown.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| sig.to_string())
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

    fn verdict(o: Observed) -> Verdict {
        decide(&o).0
    }

    #[test]
    fn exits_and_signals() {
        assert_eq!(
            decide(&observed(Some(Message::Exited(0)))),
            (Verdict::Ok, Some(0), None, None)
        );
        assert_eq!(
            verdict(observed(Some(Message::Exited(1)))),
            Verdict::RuntimeError
        );
        assert_eq!(
            verdict(observed(Some(Message::Signaled(libc::SIGSEGV)))),
            Verdict::Signaled
        );
        assert_eq!(
            verdict(observed(Some(Message::Signaled(libc::SIGSYS)))),
            Verdict::SecurityViolation
        );
        assert_eq!(verdict(observed(None)), Verdict::SandboxError);
    }

    #[test]
    fn setup_failure_names_the_step_and_errno() {
        let (v, _, _, message) = decide(&observed(Some(Message::setup_failed(
            Step::PivotRoot,
            Errno::EPERM,
        ))));
        assert_eq!(v, Verdict::SandboxError);
        let message = message.unwrap();
        assert!(
            message.contains("pivot_root") && message.contains("EPERM"),
            "{message}"
        );
    }

    #[test]
    fn parent_kills_win_over_how_the_program_died() {
        for (reason, expected) in [
            (KillReason::WallTime, Verdict::Timeout),
            (KillReason::CpuTime, Verdict::CpuLimit),
            (KillReason::Output, Verdict::OutputLimit),
        ] {
            let o = Observed {
                killed: Some(reason),
                ..observed(None)
            };
            assert_eq!(verdict(o), expected);
        }
    }

    #[test]
    fn limits_seen_in_the_cgroup() {
        let oom = Observed {
            oom_kills: 1,
            ..observed(Some(Message::Signaled(libc::SIGKILL)))
        };
        assert_eq!(verdict(oom), Verdict::MemoryLimit);
        // An OOM kill of a helper process that the program survived is not its verdict.
        let survived = Observed {
            oom_kills: 1,
            ..observed(Some(Message::Exited(0)))
        };
        assert_eq!(verdict(survived), Verdict::Ok);
        let pids = Observed {
            pids_max_hits: 3,
            ..observed(Some(Message::Exited(1)))
        };
        assert_eq!(verdict(pids), Verdict::PidsLimit);
        let xcpu = observed(Some(Message::Signaled(libc::SIGXCPU)));
        assert_eq!(verdict(xcpu), Verdict::CpuLimit);
        let rlimit_kill = Observed {
            cpu_used: Duration::from_secs(2),
            ..observed(Some(Message::Signaled(libc::SIGKILL)))
        };
        assert_eq!(verdict(rlimit_kill), Verdict::CpuLimit);
    }
}
