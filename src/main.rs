//! The `pyward` command: parse the command line, set up logging, run the
//! command and turn the result into an exit code. Everything else is in
//! `cli/` and the library.

mod cli;

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with status 2 (0 for --help).
    let args = cli::Cli::parse();
    init_tracing();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("pyward: error: {}", with_causes(&err));
            for hint in err.hints() {
                eprintln!("{hint}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (default: warnings and errors).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error's message followed by each cause that the message does not already include.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
