//! The command line: clap definitions of `run`, `serve`, `verify`, `policy`, `bench`, `image` and `doctor`, and the
//! mapping from results to exit codes.
//!
//! Uses only the library's public API. `run` goes through the `Executor`
//! like every other front end; only `bench` drives a runtime directly, to
//! time it.

/// Like `println!`, but a closed stdout (`pyward policy show strict | head`)
/// ends the output quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod bench;
mod doctor;
mod image;
mod policy;
mod run;
mod serve;
mod verify;

use clap::{Parser, Subcommand};
use pyward::{DockerError, ExecError, NativeError, PolicyError, RunError, Verdict};
use std::io;
use std::path::PathBuf;

/// Exit codes, the same with and without `--json` (docs/API.md).
pub mod exit {
    /// Verdict `ok`; or a `policy` / `bench` command that succeeded.
    pub const OK: u8 = 0;
    /// Verdict `runtime_error`: the program exited with a non-zero status.
    pub const RUNTIME_ERROR: u8 = 1;
    /// Bad flags, a bad policy or a bad submission: nothing ran.
    pub const USAGE: u8 = 2;
    /// A limit ended the run: `timeout`, `cpu_limit`, `memory_limit`, `output_limit`, `pids_limit`.
    pub const LIMIT: u8 = 3;
    /// The program was killed: `security_violation` or `signaled`.
    pub const KILLED: u8 = 4;
    /// `sandbox_error`, or pyward itself failed (runtime unavailable, output not writable).
    pub const SANDBOX_ERROR: u8 = 5;
}

const EXIT_CODES_HELP: &str = "\
Exit codes (the same with --json):
  0  ok
  1  runtime_error (the program exited non-zero)
  2  usage or input error: bad flags, bad policy, bad submission (nothing ran)
  3  a limit: timeout, cpu_limit, memory_limit, output_limit, pids_limit
  4  security_violation or signaled
  5  sandbox_error, or pyward itself failed";

/// Run untrusted Python in a fresh, least-privilege sandbox.
#[derive(Debug, Parser)]
#[command(name = "pyward", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Python file or snippet in the sandbox and report the verdict.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(run::RunArgs),
    /// Validate or show sandbox policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Time a trivial program through pyward and reference sandboxes, side by side.
    Bench(bench::BenchArgs),
    /// Build, list and remove the multi-arch Python images code runs in.
    Image(image::ImageArgs),
    /// Serve the HTTP API: sync runs, durable async jobs, tenants and quotas.
    Serve(serve::ServeArgs),
    /// Run a program on several architectures (Docker, qemu-user) and compare the results.
    #[command(after_help = VERIFY_EXIT_CODES_HELP)]
    Verify(verify::VerifyArgs),
    /// Check that this host can run pyward, with the fix for what is missing.
    #[command(
        after_help = "Exit codes:\n  0  the default configuration can run here\n  1  it cannot (the FAIL lines say why and what to do)"
    )]
    Doctor(doctor::DoctorArgs),
}

const VERIFY_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  every architecture agrees (verdict, exit code, stdout, stderr)
  1  the architectures differ (the differences are printed)
  2  usage or input error: bad flags, bad policy, bad submission (nothing ran)
  5  sandbox_error on an architecture, or pyward itself failed (no daemon, image or qemu)";

/// Runs the parsed command; `Ok` carries the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Policy(cmd) => policy::run(&cmd),
        Command::Bench(args) => bench::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Doctor(args) => doctor::run(&args),
    }
}

/// The exit code for a run that ended with `verdict`.
pub fn verdict_exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Ok => exit::OK,
        Verdict::RuntimeError => exit::RUNTIME_ERROR,
        Verdict::Timeout
        | Verdict::CpuLimit
        | Verdict::MemoryLimit
        | Verdict::OutputLimit
        | Verdict::PidsLimit => exit::LIMIT,
        Verdict::SecurityViolation | Verdict::Signaled => exit::KILLED,
        Verdict::SandboxError => exit::SANDBOX_ERROR,
    }
}

/// Why a command failed before or instead of producing a verdict.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--image NAME` names an image with no finished build for this architecture.
    #[error(
        "image {name:?} is not built for {arch}: run `pyward image build {name} --arch {arch}` (`pyward image ls` lists the built ones)"
    )]
    ImageNotBuilt {
        /// The image name as given.
        name: String,
        /// This machine's architecture.
        arch: pyward::Arch,
    },
    /// `--arch` names another architecture than this machine's with the native runtime.
    #[error(
        "--arch {arch}: the native runtime runs only this machine's architecture ({host}); \
         cross-architecture runs need --runtime docker (qemu-user)"
    )]
    CrossArchNeedsDocker {
        /// The architecture asked for.
        arch: pyward::Arch,
        /// This machine's architecture.
        host: pyward::Arch,
    },
    /// An input file (program, `--file`, `--stdin`) could not be read.
    #[error("cannot read {what} {path:?}: {source}")]
    ReadInput {
        /// Which flag or argument named the file.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A program or `--file` path whose base name cannot be used in the work dir.
    #[error(
        "{what} {path:?} has no usable file name (it must end in a UTF-8 file name, not `/` or `..`)"
    )]
    FileName {
        /// Which flag or argument named the file.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// A `--file SRC:DEST` whose DEST is not a plain relative path.
    #[error(
        "--file {spec:?}: destination {dest:?} must be a relative path inside the work dir \
         (no leading '/', no '..' or '.', not empty)"
    )]
    FileDest {
        /// The flag's value as given.
        spec: String,
        /// The destination part.
        dest: String,
    },
    /// Two input files would land on the same path in the work dir.
    #[error(
        "two input files would both be written to {dest:?} in the work dir; rename one with --file SRC:DEST"
    )]
    DuplicateFile {
        /// The path in the work dir.
        dest: String,
    },
    /// `--env NAME=...` given more than once.
    #[error("--env {name} is given more than once; give each variable once")]
    DuplicateEnv {
        /// The variable name.
        name: String,
    },
    /// A policy could not be loaded or validated.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The policy's seccomp allowlist could not be loaded or compiled.
    #[error("policy {policy:?}: seccomp allowlist {allowlist:?}: {source}")]
    Seccomp {
        /// The policy's name.
        policy: String,
        /// The allowlist's name.
        allowlist: String,
        /// What went wrong.
        source: pyward::SeccompError,
    },
    /// The executor refused the submission or the runtime could not start it.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The native runtime is not usable on this host.
    #[error("cannot start the native runtime: {0}")]
    Runtime(#[from] NativeError),
    /// The Docker runtime is not usable (no daemon, or the image is missing).
    #[error("cannot start the Docker runtime: {0}")]
    Docker(#[from] DockerError),
    /// pyward's own stdout or stderr could not be written.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
    /// An output file of the run could not be written on the host.
    #[error("cannot write output file {path:?}: {source}")]
    WriteOutputFile {
        /// Where it was to go.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The benchmark could not run or a measured path failed.
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    /// The server configuration is invalid.
    #[error(transparent)]
    Config(#[from] pyward::ConfigError),
    /// The server could not start or failed.
    #[error(transparent)]
    Serve(#[from] pyward::ServeError),
    /// An image could not be built, listed or removed.
    #[error(transparent)]
    Image(#[from] pyward::ImageError),
}

impl CliError {
    /// Whether the native runtime failed to start: `pyward doctor`'s
    /// failing lines then say why and what to do.
    pub fn is_native_start_failure(&self) -> bool {
        matches!(
            self,
            CliError::Runtime(_)
                | CliError::Serve(pyward::ServeError::Native(_))
                | CliError::Serve(pyward::ServeError::NativeImage { .. })
        )
    }

    /// `pyward doctor`'s failing lines, when the native runtime failed to start.
    pub fn hints(&self) -> Vec<String> {
        if self.is_native_start_failure() {
            doctor::start_failure_hints(&pyward::NativeConfig::default().state_dir)
        } else {
            Vec::new()
        }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::ReadInput { .. }
            | CliError::ImageNotBuilt { .. }
            | CliError::CrossArchNeedsDocker { .. }
            | CliError::FileName { .. }
            | CliError::FileDest { .. }
            | CliError::DuplicateFile { .. }
            | CliError::DuplicateEnv { .. }
            | CliError::Policy(_)
            | CliError::Config(_)
            | CliError::Serve(pyward::ServeError::Policy(_))
            | CliError::Serve(pyward::ServeError::ImageNotBuilt { .. })
            | CliError::Seccomp { .. }
            | CliError::Exec(ExecError::Policy(_))
            | CliError::Exec(ExecError::Route(_))
            | CliError::Exec(ExecError::Run(RunError::InvalidSubmission(_))) => exit::USAGE,
            CliError::Exec(ExecError::Run(_))
            | CliError::Runtime(_)
            | CliError::Docker(_)
            | CliError::Output(_)
            | CliError::WriteOutputFile { .. }
            | CliError::Bench(_)
            | CliError::Serve(_) => exit::SANDBOX_ERROR,
            CliError::Image(err) => image::exit_code(err),
        }
    }
}
