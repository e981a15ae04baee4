//! Runtimes: the `Runtime` trait, and the `Outcome` and `Verdict` every runtime
//! produces; `json` holds the stable JSON form of an `Outcome`. `native/` runs
//! a submission in Linux namespaces set up by pyward itself; `docker/` runs it
//! in a fresh hardened container through the Docker daemon.

mod json;
mod outcome;
pub(crate) mod output_files;
mod submission;
pub(crate) mod verdict;

pub use json::{
    OutcomeJson, OutcomeJsonError, OutputFileJson, OutputStatusJson, StreamEncoding, UsageJson,
    signal_name,
};
pub use outcome::{Captured, Outcome, OutputFile, OutputStatus, Usage, Verdict};
pub use output_files::{MAX_OUTPUT_PATH, MAX_OUTPUTS};
pub use submission::{Entrypoint, InputFile, Submission};

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
    fn run(&self, policy: &SandboxPolicy, submission: &Submission) -> Result<Outcome, RunError>;
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
