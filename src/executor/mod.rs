//! The executor: `Submission` -> `Outcome`. Every front end (CLI, HTTP, gRPC,
//! queue worker) goes through it; none talks to a runtime directly.
//!
//! Owns the order of the checks before a run: tighten the policy with the
//! submission's limits (never loosen), check the requested environment, pick
//! the runtime of the submission's image and architecture (`images`), then
//! hand both to it. `admission` (tenants, quotas, bounds), `store`
//! (durable jobs in SQLite), `jobs` (the workers) and `metrics` serve the
//! HTTP front end; warm pools will live here too. Nothing here touches the
//! sandbox itself or speaks HTTP.

pub(crate) mod admission;
pub(crate) mod images;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod store;

use crate::arch::Arch;
use crate::policy::{PolicyError, SandboxPolicy};
use crate::runtime::{Outcome, RunError, RunWatch, Runtime, Submission};
use images::{OfferedImage, RouteError, Target};

/// Why the executor refused or could not start a run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The submission asks for more than the policy allows (looser limits, an
    /// environment variable the policy does not allow).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The submission names an image or architecture the executor does not offer.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The runtime could not start the run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs submissions on the runtime of their image and architecture, under
/// the policies callers name.
pub struct Executor {
    images: Vec<OfferedImage>,
}

impl Executor {
    /// An executor that runs everything on `runtime`, offered as image
    /// `default` for the host's architecture.
    pub fn new(runtime: Box<dyn Runtime>) -> Executor {
        Executor::for_image("default", Arch::host(), runtime)
    }

    /// An executor with one image, `name`, on one architecture.
    pub fn for_image(name: &str, arch: Arch, runtime: Box<dyn Runtime>) -> Executor {
        Executor::with_images(vec![OfferedImage::new(name, None).with_arch(arch, runtime)])
    }

    /// An executor offering `images`; the first is the default.
    pub fn with_images(images: Vec<OfferedImage>) -> Executor {
        Executor { images }
    }

    /// The images offered, the default first.
    pub fn images(&self) -> &[OfferedImage] {
        &self.images
    }

    /// The runtime's name (`native`, `docker`) of the default image.
    pub fn runtime_name(&self) -> &'static str {
        self.images
            .first()
            .map_or("none", OfferedImage::runtime_name)
    }

    /// Where a request for `image` and `arch` runs, for a caller that may use
    /// the images `allowed` (the first is its default). Front ends call it
    /// and put the answer in the `Submission`; see [`images::route`].
    pub fn route(
        &self,
        allowed: &[String],
        image: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Target, RouteError> {
        images::route(&self.images, allowed, image, arch)
    }

    /// The image and runtime for `submission` (defaults: the first image, its default arch).
    fn runtime_for(
        &self,
        submission: &Submission,
    ) -> Result<(&OfferedImage, Arch, &dyn Runtime), RouteError> {
        let all: Vec<String> = self.images.iter().map(|i| i.name.clone()).collect();
        images::resolve(
            &self.images,
            &all,
            submission.image.as_deref(),
            submission.arch.map(Arch::as_str),
        )
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

    /// Runs `submission` under `policy` tightened with `submission.limits`,
    /// on the runtime of `submission.image` and `submission.arch`; the
    /// outcome says which image and architecture ran it.
    ///
    /// `Err` means the run never started; everything that happened once it
    /// started (limits, crashes, sandbox setup failures) is in the `Outcome`.
    pub fn run(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
    ) -> Result<Outcome, ExecError> {
        self.run_watched(policy, submission, &RunWatch::default())
    }

    /// [`Executor::run`], with `watch` seeing the output as it comes and
    /// able to cancel the run (see [`Runtime::run_watched`]).
    pub fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, ExecError> {
        let policy = Executor::resolve_policy(policy, submission)?;
        submission.check_outputs()?;
        let (image, arch, runtime) = self.runtime_for(submission)?;
        tracing::debug!(policy = %policy.name, image = %image.name, %arch, runtime = runtime.name(), "starting run");
        let mut outcome = runtime.run_watched(&policy, submission, watch)?;
        tracing::debug!(verdict = %outcome.verdict, "run finished");
        outcome.image = Some(image.name.clone());
        outcome.arch = Some(arch);
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

        fn run_watched(
            &self,
            policy: &SandboxPolicy,
            _: &Submission,
            _: &RunWatch,
        ) -> Result<Outcome, RunError> {
            self.0.lock().unwrap().push(policy.clone());
            Ok(Outcome {
                verdict: Verdict::Ok,
                exit_code: Some(0),
                signal: None,
                stdout: Captured::default(),
                stderr: Captured::default(),
                usage: Usage::default(),
                message: None,
                image: None,
                arch: None,
                files: Vec::new(),
                limits_reached: Vec::new(),
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

    #[test]
    fn each_submission_runs_on_its_image_and_arch_and_the_outcome_says_which() {
        let (host_seen, py_arm_seen) = (Arc::default(), Arc::default());
        let executor = Executor::with_images(vec![
            OfferedImage::new("host", None)
                .with_arch(Arch::host(), Box::new(Recorder(Arc::clone(&host_seen)))),
            OfferedImage::new("py", None)
                .with_arch(Arch::Arm64, Box::new(Recorder(Arc::clone(&py_arm_seen))))
                .with_arch(Arch::Amd64, Box::new(Recorder(Arc::default()))),
        ]);
        let strict = SandboxPolicy::builtin("strict").unwrap();
        let default = executor.run(&strict, &Submission::code("pass")).unwrap();
        assert_eq!(
            (default.image.as_deref(), default.arch),
            (Some("host"), Some(Arch::host()))
        );
        let mut on_arm = Submission::code("pass");
        on_arm.image = Some("py".into());
        on_arm.arch = Some(Arch::Arm64);
        let outcome = executor.run(&strict, &on_arm).unwrap();
        assert_eq!(
            (outcome.image.as_deref(), outcome.arch),
            (Some("py"), Some(Arch::Arm64))
        );
        assert_eq!(host_seen.lock().unwrap().len(), 1);
        assert_eq!(py_arm_seen.lock().unwrap().len(), 1);

        let mut unknown = Submission::code("pass");
        unknown.image = Some("nope".into());
        let err = executor.run(&strict, &unknown).unwrap_err();
        assert!(
            matches!(err, ExecError::Route(RouteError::UnknownImage { .. })),
            "{err}"
        );
    }
}
