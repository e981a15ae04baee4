//! Runtimes: the `Runtime` trait, and the `Outcome` and `Verdict` every runtime
//! produces; `json` holds the stable JSON form of an `Outcome`, `watch` what a
//! caller may watch a run with (output as it comes, a cancel token). `native/` runs
//! a submission in Linux namespaces set up by pyward itself; `docker/` runs it
//! in a hardened single-use container through the Docker daemon (created for
//! the run, or started ahead of it in a warm pool).

mod json;
mod outcome;
pub(crate) mod output_files;
mod submission;
pub(crate) mod verdict;
pub(crate) mod watch;

pub(crate) use json::encode_stream;
pub use json::{
    OutcomeJson, OutcomeJsonError, OutputFileJson, OutputStatusJson, StreamEncoding, UsageJson,
    signal_name,
};
pub use outcome::{Captured, LimitReached, Outcome, OutputFile, OutputStatus, Usage, Verdict};
pub use output_files::{MAX_OUTPUT_PATH, MAX_OUTPUTS};
pub use submission::{Entrypoint, InputFile, Submission};
pub use watch::{CancelToken, RunWatch, Stream};

pub mod docker;
pub mod native;

use crate::policy::SandboxPolicy;

/// A way to run a submission in a sandbox. Every front end goes through one.
pub trait Runtime: Send + Sync {
    /// A short name for logs and the `--runtime` flag (`native`, `docker`).
    fn name(&self) -> &'static str;

    /// Runs `submission` under `policy`, which the caller has already tightened
    /// with the submission's overrides. Setup failures inside the sandbox come
    /// back as an `Outcome` with verdict `sandbox_error`; `Err` means the run
    /// never started.
    fn run(&self, policy: &SandboxPolicy, submission: &Submission) -> Result<Outcome, RunError> {
        self.run_watched(policy, submission, &RunWatch::default())
    }

    /// [`Runtime::run`], watched: `watch` gets the output as the program
    /// writes it (in order per stream, never past the output cap), and a
    /// cancelled token kills the sandbox (the outcome's message says so).
    /// The outcome is the same as an unwatched run's.
    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError>;

    /// The runtime a caller chooses (`native`, `docker`), whichever path
    /// (cold, warm) this one takes: its name unless it is a warm path.
    fn kind(&self) -> &'static str {
        self.name()
    }

    /// Starts now what this runtime keeps warm for calls under `policy`
    /// (a zygote, pooled containers) instead of at the first call; an error
    /// says why it cannot. Nothing to do for a runtime without a warm path.
    fn prewarm(&self, _policy: &SandboxPolicy) -> Result<(), RunError> {
        Ok(())
    }

    /// Sandboxes ready to take a call without a cold start (running
    /// zygotes, pooled containers); 0 for a runtime without a warm path.
    fn warm_ready(&self) -> usize {
        0
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The submission itself is malformed (a bad file path, NUL bytes, an unknown entrypoint).
    #[error("invalid submission: {0}")]
    InvalidSubmission(String),
    /// The runtime could not prepare the run on the host.
    #[error(transparent)]
    Native(#[from] native::NativeError),
    /// The Docker runtime could not prepare the run.
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
}
