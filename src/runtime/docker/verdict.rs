//! From what the Docker runtime observed to a verdict. Pure, unit-tested.

use super::workdir::{UNPACK_FAILED, UNPACK_MESSAGE};
use crate::runtime::verdict::{self, Ended, Observation};
use crate::runtime::{LimitReached, Verdict};
use std::time::Duration;

pub use crate::runtime::verdict::Kill as KillReason;

/// Everything the verdict depends on.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Set when pyward killed the container.
    pub killed: Option<KillReason>,
    /// The container's exit status (pid 1's, the bootstrap's: the program's, or 128 + its signal).
    pub exit_code: Option<i64>,
    /// State.OOMKilled.
    pub oom_killed: bool,
    /// Forks refused by the pids limit, as far as sampling saw.
    pub pids_max_hits: u64,
    /// CPU time used (sampled), and the limit.
    pub cpu_used: Duration,
    pub cpu_limit: Duration,
    /// True when the container ran the unpack script and stderr starts with its failure line.
    pub unpack_failed: bool,
}

/// True when `stderr` shows the bootstrap failed (with its exit status).
pub fn unpack_failed(exit_code: Option<i64>, stderr: &[u8]) -> bool {
    exit_code == Some(UNPACK_FAILED) && stderr.starts_with(UNPACK_MESSAGE.as_bytes())
}

/// The verdict, the exit code, the signal and (for non-ok verdicts) a sentence.
///
/// The bootstrap (pid 1) reports a program killed by signal N as exit status 128 + N, so a
/// status above 128 is read as a signal: a program that calls `exit(159)` is
/// indistinguishable from one killed by SIGSYS on this runtime.
pub fn decide(o: &Observed) -> (Verdict, Option<i32>, Option<i32>, Option<String>) {
    verdict::decide(&observation(o))
}

/// Every limit the run reached (see `verdict::limits_reached`).
pub fn limits_reached(o: &Observed) -> Vec<LimitReached> {
    verdict::limits_reached(&observation(o))
}

fn observation(o: &Observed) -> Observation {
    let ended = match o.exit_code.map(|s| i32::try_from(s).unwrap_or(i32::MAX)) {
        None => Ended::Unknown,
        Some(status) if (129..=128 + 64).contains(&status) => Ended::Signaled(status - 128),
        Some(status) => Ended::Exited(status),
    };
    let setup_failure = o.unpack_failed.then(|| {
        "sandbox setup failed: could not unpack the files or install the seccomp filters".to_owned()
    });
    Observation {
        setup_failure,
        killed: o.killed,
        ended,
        oom_kills: u64::from(o.oom_killed),
        pids_max_hits: o.pids_max_hits,
        cpu_used: o.cpu_used,
        cpu_limit: o.cpu_limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(o: Observed) -> Verdict {
        decide(&o).0
    }

    fn exited(code: i64) -> Observed {
        Observed {
            exit_code: Some(code),
            cpu_limit: Duration::from_secs(5),
            ..Observed::default()
        }
    }

    #[test]
    fn exits_and_signals() {
        assert_eq!(decide(&exited(0)), (Verdict::Ok, Some(0), None, None));
        assert_eq!(verdict(exited(1)), Verdict::RuntimeError);
        assert_eq!(
            verdict(exited(128 + libc::SIGSYS as i64)),
            Verdict::SecurityViolation
        );
        assert_eq!(
            verdict(exited(128 + libc::SIGXCPU as i64)),
            Verdict::CpuLimit
        );
        // RLIMIT_CPU's hard kill is SIGKILL with the CPU time spent...
        let hard_kill = Observed {
            cpu_used: Duration::from_secs(6),
            ..exited(128 + libc::SIGKILL as i64)
        };
        assert_eq!(verdict(hard_kill), Verdict::CpuLimit);
        // ...any other SIGKILL is just a signal.
        assert_eq!(
            verdict(exited(128 + libc::SIGKILL as i64)),
            Verdict::Signaled
        );
        let (v, code, sig, _) = decide(&exited(128 + libc::SIGSEGV as i64));
        assert_eq!(
            (v, code, sig),
            (Verdict::Signaled, None, Some(libc::SIGSEGV))
        );
        assert_eq!(verdict(Observed::default()), Verdict::SandboxError);
    }

    #[test]
    fn pyward_kills_and_oom_win() {
        let mut o = exited(137);
        o.killed = Some(KillReason::WallTime);
        assert_eq!(verdict(o.clone()), Verdict::Timeout);
        o.killed = Some(KillReason::Output);
        assert_eq!(verdict(o.clone()), Verdict::OutputLimit);
        o.killed = None;
        o.oom_killed = true;
        assert_eq!(verdict(o), Verdict::MemoryLimit);
        let mut o = exited(0);
        o.oom_killed = true;
        assert_eq!(verdict(o), Verdict::Ok, "a child OOM-killed and survived");
    }

    #[test]
    fn pids_hits_explain_a_failure_only() {
        let mut o = exited(1);
        o.pids_max_hits = 2;
        assert_eq!(verdict(o.clone()), Verdict::PidsLimit);
        o.exit_code = Some(0);
        assert_eq!(verdict(o), Verdict::Ok);
    }

    #[test]
    fn a_failed_unpack_is_pywards_fault() {
        let line = b"pyward: sandbox setup failed in the container: EOFError('short input')\n";
        assert!(unpack_failed(Some(125), line));
        assert!(!unpack_failed(Some(1), line));
        assert!(!unpack_failed(Some(125), b"user text"));
        let mut o = exited(125);
        o.unpack_failed = true;
        assert_eq!(verdict(o), Verdict::SandboxError);
    }
}
