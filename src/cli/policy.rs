//! `pyward policy check FILE`, `pyward policy show NAME|FILE` and `pyward
//! policy export --format docker NAME|FILE`: load a policy the way `run` does,
//! compile its seccomp allowlist, and report or export it.

use super::{CliError, exit};
use pyward::{Arch, SandboxPolicy};

/// `pyward policy …`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and its seccomp allowlist (exit 0 when valid, 2 otherwise).
    Check {
        /// The policy TOML file (a built-in name works too).
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Print a policy's resolved values as TOML, with its allowlist's size per architecture.
    Show {
        /// A built-in policy name or a policy TOML file.
        #[arg(value_name = "NAME|FILE")]
        policy: String,
    },
    /// Print a policy's seccomp profile in another tool's format: Docker's
    /// `--security-opt seccomp=FILE` JSON for x86_64 and aarch64, as the Docker
    /// runtime uses it (with the syscalls runc and pyward's bootstrap, pid 1, need under it).
    Export {
        /// The output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// A built-in policy name or a policy TOML file.
        #[arg(value_name = "NAME|FILE")]
        policy: String,
    },
}

/// The formats of `pyward policy export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The Docker/OCI seccomp profile JSON.
    Docker,
}

/// Runs a `policy` subcommand; returns the exit code.
pub fn run(cmd: &PolicyCommand) -> Result<u8, CliError> {
    match cmd {
        PolicyCommand::Check { file } => {
            let policy = SandboxPolicy::load(file)?;
            let host = Arch::host();
            let count = allowed_count(&policy, host)?;
            outln!(
                "ok: {} — {count} syscalls allowed on {}",
                policy.name,
                host.kernel_name()
            );
        }
        PolicyCommand::Show {
            policy: name_or_path,
        } => {
            let policy = SandboxPolicy::load(name_or_path)?;
            outln!("{}", policy.to_toml());
            outln!("# seccomp allowlist {:?}:", policy.seccomp.allowlist);
            for arch in Arch::ALL {
                let count = allowed_count(&policy, arch)?;
                outln!("#   {count} syscalls allowed on {}", arch.kernel_name());
            }
        }
        PolicyCommand::Export {
            format: ExportFormat::Docker,
            policy: name_or_path,
        } => {
            let policy = SandboxPolicy::load(name_or_path)?;
            let allowlist = load_allowlist(&policy)?;
            let profile = pyward::DockerRuntime::seccomp_profile(
                &allowlist,
                policy.seccomp.denied,
                &Arch::ALL,
            );
            let text = serde_json::to_string_pretty(&profile).unwrap_or_default();
            outln!("{text}");
        }
    }
    Ok(exit::OK)
}

/// How many syscalls the policy's allowlist lets through on `arch`, after compiling it.
///
/// A policy loaded from a file looks for its allowlist next to it first
/// (`DIR/seccomp/NAME.toml`), then among the built-in ones.
fn allowed_count(policy: &SandboxPolicy, arch: Arch) -> Result<usize, CliError> {
    let allowlist = load_allowlist(policy)?;
    let program = pyward::compile_seccomp(&allowlist, policy.seccomp.denied, arch)
        .map_err(|source| seccomp_error(policy, source))?;
    Ok(program.allowed_count())
}

fn seccomp_error(policy: &SandboxPolicy, source: pyward::SeccompError) -> CliError {
    CliError::Seccomp {
        policy: policy.name.clone(),
        allowlist: policy.seccomp.allowlist.clone(),
        source,
    }
}

/// The policy's allowlist: next to a policy file first, then the built-in ones.
fn load_allowlist(policy: &SandboxPolicy) -> Result<pyward::Allowlist, CliError> {
    let search_dir = policy.seccomp.search_dir.as_deref();
    pyward::Allowlist::load(&policy.seccomp.allowlist, search_dir)
        .map_err(|source| seccomp_error(policy, source))
}
