//! What one run produced: the verdict, the output and the resources used.

use crate::arch::Arch;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Why a run ended. The names are a public contract (docs/API.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The program exited with status 0.
    Ok,
    /// The program exited with a non-zero status.
    RuntimeError,
    /// The program was killed by a signal not caused by a limit.
    Signaled,
    /// The wall-clock limit was reached; the sandbox was killed.
    Timeout,
    /// The CPU-time limit was reached.
    CpuLimit,
    /// The memory limit was reached (an OOM kill).
    MemoryLimit,
    /// stdout or stderr passed its cap; the sandbox was killed.
    OutputLimit,
    /// The process limit was reached and the program failed.
    PidsLimit,
    /// The seccomp filter killed the program for a forbidden syscall.
    SecurityViolation,
    /// pyward could not set the sandbox up. Never the program's fault.
    SandboxError,
}

impl Verdict {
    /// Every verdict, in the order docs/API.md lists them.
    pub const ALL: [Verdict; 10] = [
        Verdict::Ok,
        Verdict::RuntimeError,
        Verdict::Signaled,
        Verdict::Timeout,
        Verdict::CpuLimit,
        Verdict::MemoryLimit,
        Verdict::OutputLimit,
        Verdict::PidsLimit,
        Verdict::SecurityViolation,
        Verdict::SandboxError,
    ];

    /// The snake_case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::RuntimeError => "runtime_error",
            Verdict::Signaled => "signaled",
            Verdict::Timeout => "timeout",
            Verdict::CpuLimit => "cpu_limit",
            Verdict::MemoryLimit => "memory_limit",
            Verdict::OutputLimit => "output_limit",
            Verdict::PidsLimit => "pids_limit",
            Verdict::SecurityViolation => "security_violation",
            Verdict::SandboxError => "sandbox_error",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One captured stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept, at most the policy's output cap.
    pub bytes: Vec<u8>,
    /// True when the program wrote more than was kept.
    pub truncated: bool,
}

/// One file the submission declared in `outputs`, as the run left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// The path as declared, relative to the work dir.
    pub path: String,
    /// What was found there.
    pub status: OutputStatus,
}

/// What a declared output path held when the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputStatus {
    /// A regular file: its bytes up to the caps (`truncated` when it held
    /// more), and its size in bytes when it was read.
    Collected {
        /// The bytes kept.
        contents: Captured,
        /// The file's size when it was read.
        size: u64,
    },
    /// Nothing at the path: no such entry, or a component before the last
    /// is not a directory.
    Missing,
    /// Something that is not a regular file (a directory, a FIFO, a socket),
    /// or a path through a symbolic link: links are never followed.
    NotRegular,
    /// Not read: pyward stopped the run (a limit, a setup failure) before the
    /// program ended by itself, or the file could not be opened.
    NotCollected,
}

impl OutputStatus {
    /// The name used in JSON: `ok`, `missing`, `not_regular` or `not_collected`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OutputStatus::Collected { .. } => "ok",
            OutputStatus::Missing => "missing",
            OutputStatus::NotRegular => "not_regular",
            OutputStatus::NotCollected => "not_collected",
        }
    }
}

/// A limit of the policy a run reached, whether or not it ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitReached {
    /// `wall_time`: pyward killed the sandbox at the wall-clock limit.
    WallTime,
    /// `cpu_time`: the sandbox's processes used the CPU time limit.
    CpuTime,
    /// `memory`: the OOM killer killed a process of the sandbox.
    Memory,
    /// `pids`: a fork or thread was refused at the pids limit.
    Pids,
    /// `output`: stdout or stderr passed the output cap.
    Output,
}

impl LimitReached {
    /// Every limit, in the order outcomes list them.
    pub const ALL: [LimitReached; 5] = [
        LimitReached::WallTime,
        LimitReached::CpuTime,
        LimitReached::Memory,
        LimitReached::Pids,
        LimitReached::Output,
    ];

    /// The name used in JSON: the policy's `[limits]` field.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReached::WallTime => "wall_time",
            LimitReached::CpuTime => "cpu_time",
            LimitReached::Memory => "memory",
            LimitReached::Pids => "pids",
            LimitReached::Output => "output",
        }
    }
}

/// Resources one run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wall-clock time from sandbox start to the end of its last process.
    pub wall: Duration,
    /// User plus system CPU time of every process in the sandbox.
    pub cpu: Duration,
    /// The largest resident set any one process of the sandbox reached, in bytes.
    pub peak_memory_bytes: u64,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Why the run ended.
    pub verdict: Verdict,
    /// The program's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the program, when one did.
    pub signal: Option<i32>,
    /// What the program wrote to stdout.
    pub stdout: Captured,
    /// What the program wrote to stderr.
    pub stderr: Captured,
    /// Resources used.
    pub usage: Usage,
    /// For `sandbox_error` and limit verdicts: a sentence saying what happened.
    pub message: Option<String>,
    /// The image the run used, by the name the executor offers it under. The
    /// executor sets it; a runtime called directly leaves it `None`.
    pub image: Option<String>,
    /// The architecture the run used. Set by the executor, like `image`.
    pub arch: Option<Arch>,
    /// The submission's declared output files, one per path, in its order.
    pub files: Vec<OutputFile>,
    /// Every limit the run reached, the one that ended it among them, in
    /// [`LimitReached::ALL`] order.
    pub limits_reached: Vec<LimitReached>,
}
