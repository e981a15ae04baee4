//! From what a runtime observed to a verdict: one set of rules for every
//! runtime, so that the same program gets the same verdict on each. Pure.

use super::{LimitReached, Verdict, signal_name};
use std::time::Duration;

/// Why pyward killed the sandbox, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The wall-clock limit passed.
    WallTime,
    /// The CPU time pyward watches reached the limit.
    CpuTime,
    /// stdout or stderr passed its cap.
    Output,
    /// The caller cancelled the run.
    Cancelled,
}

/// The message of a cancelled run's outcome.
pub const CANCELLED_MESSAGE: &str = "cancelled by the client; the sandbox was killed";

/// How the program ended, as far as the runtime could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
    /// Nothing reported it (the sandbox itself was killed, or failed).
    Unknown,
}

/// Everything a verdict depends on.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Set when the sandbox could not be set up: a sentence saying what failed.
    pub setup_failure: Option<String>,
    /// Set when pyward killed the sandbox.
    pub killed: Option<Kill>,
    /// How the program ended.
    pub ended: Ended,
    /// Processes the OOM killer killed in the sandbox.
    pub oom_kills: u64,
    /// Forks refused by the pids limit.
    pub pids_max_hits: u64,
    /// CPU time used (at least), and the limit.
    pub cpu_used: Duration,
    /// The policy's CPU time limit.
    pub cpu_limit: Duration,
}

/// The verdict, the exit code, the signal and (for non-ok verdicts) a sentence.
///
/// The order is the order of causes: pyward's own failure, then what pyward
/// killed the sandbox for, then a limit the kernel enforced, then how the
/// program ended by itself. A limit hit by a program that still exited 0
/// (a helper process OOM-killed, a fork refused and handled) is not its verdict.
pub fn decide(o: &Observation) -> (Verdict, Option<i32>, Option<i32>, Option<String>) {
    if let Some(failure) = &o.setup_failure {
        return (Verdict::SandboxError, None, None, Some(failure.clone()));
    }
    let (exit_code, signal) = match o.ended {
        Ended::Exited(code) => (Some(code), None),
        Ended::Signaled(sig) => (None, Some(sig)),
        Ended::Unknown => (None, None),
    };
    let clean_exit = exit_code == Some(0);
    let cpu_message = || {
        format!(
            "CPU time limit of {:?} reached (used {:?})",
            o.cpu_limit, o.cpu_used
        )
    };
    let (verdict, message) = match o.killed {
        Some(Kill::Output) => (
            Verdict::OutputLimit,
            "output passed the policy's cap; the sandbox was killed".to_owned(),
        ),
        Some(Kill::WallTime) => (
            Verdict::Timeout,
            "wall-clock limit reached; the sandbox was killed".to_owned(),
        ),
        Some(Kill::CpuTime) => (Verdict::CpuLimit, cpu_message()),
        Some(Kill::Cancelled) => {
            // pyward's own SIGKILL ended it, whatever the program was doing.
            let message = Some(CANCELLED_MESSAGE.to_owned());
            return (Verdict::Signaled, None, Some(libc::SIGKILL), message);
        }
        None if o.oom_kills > 0 && !clean_exit => (
            Verdict::MemoryLimit,
            format!(
                "memory limit reached: {} process(es) killed by the OOM killer",
                o.oom_kills
            ),
        ),
        None if signal == Some(libc::SIGSYS) => (
            Verdict::SecurityViolation,
            "a forbidden system call was made; seccomp killed the program".to_owned(),
        ),
        // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one.
        None if signal == Some(libc::SIGXCPU)
            || (signal == Some(libc::SIGKILL) && o.cpu_used >= o.cpu_limit) =>
        {
            (Verdict::CpuLimit, cpu_message())
        }
        None if o.pids_max_hits > 0 && !clean_exit => (
            Verdict::PidsLimit,
            "process limit reached: the program could not create a process or thread".to_owned(),
        ),
        None => match o.ended {
            Ended::Exited(0) => return (Verdict::Ok, exit_code, None, None),
            Ended::Exited(code) => (
                Verdict::RuntimeError,
                format!("the program exited with status {code}"),
            ),
            Ended::Signaled(sig) => (
                Verdict::Signaled,
                format!(
                    "the program was killed by signal {}",
                    signal_name(sig).map_or_else(|| sig.to_string(), str::to_owned)
                ),
            ),
            Ended::Unknown => {
                return (
                    Verdict::SandboxError,
                    None,
                    None,
                    Some("the sandbox ended without reporting the program's status".to_owned()),
                );
            }
        },
    };
    (verdict, exit_code, signal, Some(message))
}

/// Every limit the run reached, whether or not it ended the run: a fork
/// bomb that handles its `OSError` and spins until the CPU limit reached
/// both the pids and the CPU limit. In `LimitReached` order.
pub fn limits_reached(o: &Observation) -> Vec<LimitReached> {
    if o.setup_failure.is_some() {
        return Vec::new();
    }
    let cpu = o.killed == Some(Kill::CpuTime)
        || o.cpu_used >= o.cpu_limit
        || matches!(o.ended, Ended::Signaled(libc::SIGXCPU));
    [
        (LimitReached::WallTime, o.killed == Some(Kill::WallTime)),
        (LimitReached::CpuTime, cpu),
        (LimitReached::Memory, o.oom_kills > 0),
        (LimitReached::Pids, o.pids_max_hits > 0),
        (LimitReached::Output, o.killed == Some(Kill::Output)),
    ]
    .into_iter()
    .filter_map(|(limit, reached)| reached.then_some(limit))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_reached_is_listed_not_only_the_one_that_ended_the_run() {
        let spinning_fork_bomb = Observation {
            killed: Some(Kill::CpuTime),
            pids_max_hits: 40,
            cpu_used: Duration::from_secs(1),
            ..ended(Ended::Unknown)
        };
        assert_eq!(decide(&spinning_fork_bomb).0, Verdict::CpuLimit);
        assert_eq!(
            limits_reached(&spinning_fork_bomb),
            [LimitReached::CpuTime, LimitReached::Pids]
        );
        let handled_oom = Observation {
            oom_kills: 1,
            ..ended(Ended::Exited(0))
        };
        assert_eq!(decide(&handled_oom).0, Verdict::Ok);
        assert_eq!(limits_reached(&handled_oom), [LimitReached::Memory]);
        let timeout = Observation {
            killed: Some(Kill::WallTime),
            ..ended(Ended::Unknown)
        };
        assert_eq!(limits_reached(&timeout), [LimitReached::WallTime]);
        assert!(limits_reached(&ended(Ended::Exited(0))).is_empty());
        let failed_setup = Observation {
            setup_failure: Some("x".into()),
            pids_max_hits: 1,
            ..ended(Ended::Unknown)
        };
        assert!(limits_reached(&failed_setup).is_empty());
    }

    fn ended(ended: Ended) -> Observation {
        Observation {
            setup_failure: None,
            killed: None,
            ended,
            oom_kills: 0,
            pids_max_hits: 0,
            cpu_used: Duration::from_millis(10),
            cpu_limit: Duration::from_secs(1),
        }
    }

    fn verdict(o: Observation) -> Verdict {
        decide(&o).0
    }

    #[test]
    fn exits_and_signals() {
        assert_eq!(
            decide(&ended(Ended::Exited(0))),
            (Verdict::Ok, Some(0), None, None)
        );
        assert_eq!(verdict(ended(Ended::Exited(1))), Verdict::RuntimeError);
        assert_eq!(
            verdict(ended(Ended::Signaled(libc::SIGSEGV))),
            Verdict::Signaled
        );
        assert_eq!(
            verdict(ended(Ended::Signaled(libc::SIGSYS))),
            Verdict::SecurityViolation
        );
        assert_eq!(verdict(ended(Ended::Unknown)), Verdict::SandboxError);
        let (_, _, _, message) = decide(&ended(Ended::Signaled(libc::SIGTERM)));
        assert!(message.unwrap().contains("SIGTERM"));
    }

    #[test]
    fn a_setup_failure_wins_over_everything() {
        let o = Observation {
            setup_failure: Some("could not pivot_root".into()),
            killed: Some(Kill::WallTime),
            ..ended(Ended::Exited(0))
        };
        assert_eq!(
            decide(&o),
            (
                Verdict::SandboxError,
                None,
                None,
                Some("could not pivot_root".into())
            )
        );
    }

    #[test]
    fn pyward_kills_win_over_how_the_program_died() {
        for (kill, expected) in [
            (Kill::WallTime, Verdict::Timeout),
            (Kill::CpuTime, Verdict::CpuLimit),
            (Kill::Output, Verdict::OutputLimit),
        ] {
            let o = Observation {
                killed: Some(kill),
                ..ended(Ended::Signaled(libc::SIGKILL))
            };
            assert_eq!(verdict(o), expected);
        }
    }

    #[test]
    fn a_cancelled_run_is_a_sigkill_that_says_it_was_cancelled() {
        // Even over a CPU limit the kill would otherwise explain, or a clean exit.
        for ended_as in [
            Ended::Signaled(libc::SIGKILL),
            Ended::Exited(0),
            Ended::Unknown,
        ] {
            let o = Observation {
                killed: Some(Kill::Cancelled),
                cpu_used: Duration::from_secs(2),
                ..ended(ended_as)
            };
            assert_eq!(
                decide(&o),
                (
                    Verdict::Signaled,
                    None,
                    Some(libc::SIGKILL),
                    Some(CANCELLED_MESSAGE.to_owned())
                )
            );
        }
    }

    #[test]
    fn kernel_limits_explain_a_failure_only() {
        let oom = Observation {
            oom_kills: 1,
            ..ended(Ended::Signaled(libc::SIGKILL))
        };
        assert_eq!(verdict(oom), Verdict::MemoryLimit);
        let survived = Observation {
            oom_kills: 1,
            ..ended(Ended::Exited(0))
        };
        assert_eq!(verdict(survived), Verdict::Ok);
        let pids = Observation {
            pids_max_hits: 3,
            ..ended(Ended::Exited(1))
        };
        assert_eq!(verdict(pids), Verdict::PidsLimit);
        let handled = Observation {
            pids_max_hits: 3,
            ..ended(Ended::Exited(0))
        };
        assert_eq!(verdict(handled), Verdict::Ok);
        assert_eq!(
            verdict(ended(Ended::Signaled(libc::SIGXCPU))),
            Verdict::CpuLimit
        );
        let hard = Observation {
            cpu_used: Duration::from_secs(2),
            ..ended(Ended::Signaled(libc::SIGKILL))
        };
        assert_eq!(verdict(hard), Verdict::CpuLimit);
        // A SIGKILL with CPU time to spare is not the CPU limit.
        assert_eq!(
            verdict(ended(Ended::Signaled(libc::SIGKILL))),
            Verdict::Signaled
        );
    }
}
