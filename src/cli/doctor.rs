//! `pyward doctor`: can this host run pyward's default configuration, and
//! what does it offer besides; one line per check, each with its fix.

use super::CliError;
use clap::Args;
use pyward::{DoctorCheck, DoctorOptions, DoctorStatus, NativeConfig};
use std::path::PathBuf;

/// Flags of `pyward doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object (`{"can_run": bool, "checks": [...]}`) instead of lines.
    #[arg(long)]
    json: bool,
    /// Do not ask the Docker daemon.
    #[arg(long)]
    no_docker: bool,
    /// Do not end with a real sandboxed run of `pass`.
    #[arg(long)]
    no_trial_run: bool,
    /// The native runtime's state directory.
    #[arg(long, default_value = "/run/pyward")]
    state_dir: PathBuf,
    /// The image cache (as `pyward image build --cache-dir`).
    #[arg(long, default_value = pyward::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
}

/// Exit 0 when the default configuration can run here, 1 when it cannot.
pub fn run(args: &DoctorArgs) -> Result<u8, CliError> {
    let options = DoctorOptions {
        native: NativeConfig {
            state_dir: args.state_dir.clone(),
            ..NativeConfig::default()
        },
        image_cache: args.cache_dir.clone(),
        docker: !args.no_docker,
        trial_run: !args.no_trial_run,
    };
    let checks = pyward::doctor_check_host(&options);
    let can_run = pyward::doctor_can_run(&checks);
    if args.json {
        let report = serde_json::json!({ "can_run": can_run, "checks": checks });
        outln!("{report}");
    } else {
        for check in &checks {
            outln!("{}", line(check));
        }
        if can_run {
            outln!(
                "pyward doctor: the default configuration (native runtime, host interpreter, strict) can run here"
            );
        } else {
            outln!(
                "pyward doctor: the default configuration cannot run here: fix the FAIL lines above"
            );
        }
    }
    Ok(if can_run { 0 } else { 1 })
}

fn line(check: &DoctorCheck) -> String {
    let status = match check.status {
        DoctorStatus::Ok => "ok  ",
        DoctorStatus::Warn => "WARN",
        DoctorStatus::Fail => "FAIL",
    };
    format!("{status} {}", check.line())
}

/// The failing lines of the native runtime's checks, for a runtime that did
/// not start (`pyward run`, `pyward serve`): each as `pyward doctor: ...`.
pub fn start_failure_hints(state_dir: &std::path::Path) -> Vec<String> {
    let native = NativeConfig {
        state_dir: state_dir.to_owned(),
        ..NativeConfig::default()
    };
    pyward::doctor_native_checks(&native)
        .iter()
        .filter(|c| c.status == DoctorStatus::Fail)
        .map(|c| format!("pyward doctor: {}", c.line()))
        .collect()
}
