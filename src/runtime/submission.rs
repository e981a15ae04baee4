//! What a caller hands pyward: the program, its inputs and its limits.

use crate::arch::Arch;
use crate::policy::LimitOverrides;
use std::collections::BTreeMap;

/// A file placed in the sandbox's work dir before the program starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path relative to the work dir: no `..`, no leading `/`, no NUL.
    pub path: String,
    /// The file's contents.
    pub contents: Vec<u8>,
}

/// What the interpreter runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entrypoint {
    /// `python3 -c CODE`.
    Code(String),
    /// `python3 PATH`, where PATH is one of the submission's files.
    File(String),
}

/// One call: everything a runtime needs besides the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// What to run.
    pub entrypoint: Entrypoint,
    /// Files for the work dir (the entrypoint's file among them).
    pub files: Vec<InputFile>,
    /// Arguments after the script (`sys.argv[1:]`).
    pub args: Vec<String>,
    /// Bytes on the program's stdin; it sees end-of-file after them.
    pub stdin: Vec<u8>,
    /// Environment variables the caller asks for; the policy must allow each name.
    pub env: BTreeMap<String, String>,
    /// Limits that tighten the policy's.
    pub limits: LimitOverrides,
    /// The image to run in, by the name the executor offers it under; `None`
    /// for the executor's first image. Runtimes ignore it: the executor routes on it.
    pub image: Option<String>,
    /// The architecture to run on; `None` for the image's default (the host's
    /// when the image has it). Runtimes ignore it: the executor routes on it.
    pub arch: Option<Arch>,
    /// Paths in the work dir to bring back after the run (relative, no `..`,
    /// no NUL, at most [`MAX_OUTPUTS`](crate::MAX_OUTPUTS)); they come
    /// back in [`Outcome::files`](crate::Outcome::files), in this order.
    pub outputs: Vec<String>,
}

impl Submission {
    /// Checks the declared output paths (see [`Submission::outputs`]); the
    /// error names the path and what is allowed.
    pub fn check_outputs(&self) -> Result<(), super::RunError> {
        super::output_files::check_paths(&self.outputs).map_err(super::RunError::InvalidSubmission)
    }

    /// A submission that runs `code` with `python3 -c` and nothing else.
    pub fn code(code: impl Into<String>) -> Submission {
        Submission {
            entrypoint: Entrypoint::Code(code.into()),
            files: Vec::new(),
            args: Vec::new(),
            stdin: Vec::new(),
            env: BTreeMap::new(),
            limits: LimitOverrides::default(),
            image: None,
            arch: None,
            outputs: Vec::new(),
        }
    }
}
