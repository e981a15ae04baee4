//! Runtimes: the `Runtime` trait, and the `Outcome` and `Verdict` every runtime
//! produces. `native/` runs a submission in Linux namespaces set up by pyward
//! itself.

mod outcome;
mod submission;

pub use outcome::{Captured, Outcome, Usage, Verdict};
pub use submission::{Entrypoint, InputFile, Submission};
