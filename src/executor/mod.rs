//! The executor: `Submission` -> `Outcome`. Every front end (CLI, HTTP, gRPC,
//! queue worker) goes through it; none talks to a runtime directly.
//!
//! Owns the order of the checks before a run: tighten the policy with the
//! submission's limits (never loosen), check the requested environment, then
//! hand both to the runtime. `admission` (tenants, quotas, bounds), `store`
//! (durable jobs in SQLite), `jobs` (the workers) and `metrics` serve the
//! HTTP front end; warm pools will live here too. Nothing here touches the
//! sandbox itself or speaks HTTP.

pub(crate) mod admission;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod store;

use crate::policy::{PolicyError, SandboxPolicy};
use crate::runtime::{Outcome, RunError, Runtime, Submission};

/// Why the executor refused or could not start a run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The submission asks for more than the policy allows (looser limits, an
    /// environment variable the policy does not allow).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The runtime could not start the run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs submissions on one runtime, under the policies callers name.
pub struct Executor {
    runtime: Box<dyn Runtime>,
}

impl Executor {
    /// An executor that runs everything on `runtime`.
    pub fn new(runtime: Box<dyn Runtime>) -> Executor {
        Executor { runtime }
    }

    /// The runtime's name (`native`, `docker`).
    pub fn runtime_name(&self) -> &'static str {
        self.runtime.name()
    }

    /// The policy a run of `submission` gets: `policy` tightened with
    /// `submission.limits`, after checking the requested environment.
    ///
    /// [`Executor::run`] calls it; front ends may call it first to refuse a
    /// bad request before touching the host.
    pub fn resolve_policy(
        policy: &SandboxPolicy,
        submission: &Submission,
    ) -> Result<SandboxPolicy, PolicyError> {
        let policy = policy.tightened(&submission.limits)?;
        policy.check_env(&submission.env)?;
        Ok(policy)
    }

    /// Runs `submission` under `policy` tightened with `submission.limits`.
    ///
    /// `Err` means the run never started; everything that happened once it
    /// started (limits, crashes, sandbox setup failures) is in the `Outcome`.
    pub fn run(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
    ) -> Result<Outcome, ExecError> {
        let policy = Executor::resolve_policy(policy, submission)?;
        submission.check_outputs()?;
        tracing::debug!(policy = %policy.name, runtime = self.runtime.name(), "starting run");
        let outcome = self.runtime.run(&policy, submission)?;
        tracing::debug!(verdict = %outcome.verdict, "run finished");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ByteSize;
    use crate::runtime::{Captured, Usage, Verdict};
    use std::sync::{Arc, Mutex};

    /// Records the policy each run got and answers `ok`.
    struct Recorder(Arc<Mutex<Vec<SandboxPolicy>>>);

    impl Runtime for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn run(&self, policy: &SandboxPolicy, _: &Submission) -> Result<Outcome, RunError> {
            self.0.lock().unwrap().push(policy.clone());
            Ok(Outcome {
                verdict: Verdict::Ok,
                exit_code: Some(0),
                signal: None,
                stdout: Captured::default(),
                stderr: Captured::default(),
                usage: Usage::default(),
                message: None,
                files: Vec::new(),
            })
        }
    }

    fn executor() -> (Executor, Arc<Mutex<Vec<SandboxPolicy>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (Executor::new(Box::new(Recorder(seen.clone()))), seen)
    }

    #[test]
    fn the_runtime_gets_the_tightened_policy() {
        let (executor, seen) = executor();
        let strict = SandboxPolicy::builtin("strict").unwrap();
        let mut submission = Submission::code("pass");
        submission.limits.memory = Some(ByteSize::mib(64));
        executor.run(&strict, &submission).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].limits.memory, ByteSize::mib(64));
        assert_eq!(seen[0].limits.wall_time, strict.limits.wall_time);
    }

    #[test]
    fn looser_limits_and_unlisted_env_never_reach_the_runtime() {
        let (executor, seen) = executor();
        let strict = SandboxPolicy::builtin("strict").unwrap();

        let mut looser = Submission::code("pass");
        looser.limits.memory = Some(ByteSize(strict.limits.memory.bytes() + 1));
        let err = executor.run(&strict, &looser).unwrap_err();
        assert!(
            matches!(err, ExecError::Policy(PolicyError::Loosen { .. })),
            "{err}"
        );

        let mut env = Submission::code("pass");
        env.env.insert("LD_PRELOAD".into(), "/tmp/x.so".into());
        let err = executor.run(&strict, &env).unwrap_err();
        assert!(
            matches!(err, ExecError::Policy(PolicyError::EnvNotAllowed { .. })),
            "{err}"
        );

        assert!(seen.lock().unwrap().is_empty());
    }
}
