//! The errors of the seccomp module, one variant per step.

use crate::arch::Arch;
use std::path::PathBuf;

/// What is wrong with one argument condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgProblem {
    /// Syscalls have six arguments, numbered 0 to 5.
    #[error("index {0} is out of range: syscall arguments are numbered 0 to 5")]
    IndexOutOfRange(u8),
    /// Neither `value` nor `values` was given, or both were.
    #[error("give exactly one of `value` or a non-empty `values`")]
    Value,
    /// `masked_eq` needs a `mask`; no other op takes one.
    #[error("`mask` goes with op \"masked_eq\" and with no other op")]
    Mask,
    /// "Any of several values" only makes sense for equality.
    #[error("several `values` are allowed only with op \"eq\" or \"masked_eq\"")]
    SeveralValues,
}

/// An error loading, checking or compiling a seccomp allowlist.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An allowlist name that could not be a file stem (empty, `/`, `..`, ...).
    #[error("invalid seccomp allowlist name {name:?}: use letters, digits, '-' and '_'")]
    InvalidName {
        /// The name asked for.
        name: String,
    },
    /// The allowlist file exists but could not be read.
    #[error("failed to read seccomp allowlist {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or not the allowlist format.
    #[error("failed to parse seccomp allowlist {source_name}")]
    Parse {
        /// The file (or `builtin:NAME`).
        source_name: String,
        /// The TOML error, with line and column (boxed: it is large).
        source: Box<toml::de::Error>,
    },
    /// One syscall's entry is neither a reason string nor `{ reason, args }`.
    #[error(
        "{source_name}: syscall {name:?}: expected a reason string or {{ reason = \"...\", args = [...] }}"
    )]
    InvalidRule {
        /// The file.
        source_name: String,
        /// The syscall.
        name: String,
        /// The TOML error (boxed: it is large).
        source: Box<toml::de::Error>,
    },
    /// One argument condition of a syscall's entry is malformed.
    #[error("{source_name}: syscall {name:?}: argument condition {position}: {problem}")]
    InvalidArg {
        /// The file.
        source_name: String,
        /// The syscall.
        name: String,
        /// Position of the condition in `args` (0-based).
        position: usize,
        /// What is wrong.
        problem: ArgProblem,
    },
    /// The name is a syscall on neither x86_64 nor aarch64 (a typo, or another arch's name).
    #[error("{source_name}: unknown syscall {name:?}: not a syscall on x86_64 or aarch64")]
    UnknownSyscall {
        /// The file.
        source_name: String,
        /// The unknown name.
        name: String,
    },
    /// The name is one pyward's filter answers itself (policies/seccomp/answered.toml).
    #[error(
        "{source_name}: syscall {name:?} may not be listed: pyward answers it {errno} under every allowlist (policies/seccomp/answered.toml)"
    )]
    Answered {
        /// The file.
        source_name: String,
        /// The answered name.
        name: String,
        /// The errno pyward answers it with.
        errno: &'static str,
    },
    /// A syscall every allowlist needs is missing (`execve`: the runtime execs after installing).
    #[error(
        "{source_name}: syscall {name:?} must be allowed: the runtime installs the filter before execve"
    )]
    Required {
        /// The file.
        source_name: String,
        /// The missing name.
        name: String,
    },
    /// A syscall is both on the allowlist and in the dangerous set.
    #[error(
        "{source_name}: syscall {name:?} is in the dangerous set (policies/seccomp/dangerous.toml) and can never be allowed"
    )]
    Overlap {
        /// The file.
        source_name: String,
        /// The syscall.
        name: String,
    },
    /// No file and no built-in allowlist has this name.
    #[error("unknown seccomp allowlist {name:?}: known are {known}")]
    UnknownAllowlist {
        /// The name asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// seccompiler refused one of the filters.
    #[error("failed to compile the seccomp {filter} filter for {arch}")]
    Compile {
        /// The target architecture.
        arch: Arch,
        /// Which of the stacked filters (`allowlist`, `answered`, `dangerous`).
        filter: &'static str,
        /// seccompiler's error.
        source: seccompiler::BackendError,
    },
}
