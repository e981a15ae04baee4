//! `pyward serve`: load the configuration (or use the local defaults) and
//! run the HTTP server until SIGTERM.

use super::CliError;
use pyward::ServeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `pyward serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The server's configuration (see pyward.example.toml). Without it:
    /// 127.0.0.1:8080, native runtime, strict policy, one tenant, no auth.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Listen on this address instead of the configuration's.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Start a fresh interpreter for every call: no zygotes, no pooled
    /// containers, whatever the configuration says.
    #[arg(long)]
    cold: bool,
}

/// Runs `pyward serve` until a signal stops it.
pub fn run(args: &ServeArgs) -> Result<u8, CliError> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::local(),
    };
    if args.cold {
        config.cold();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
        if !config.requires_auth() && !listen.ip().is_loopback() {
            return Err(CliError::Config(pyward::ConfigError::Invalid {
                source_name: "--listen".into(),
                field: "listen".into(),
                value: listen.to_string(),
                allowed:
                    "without auth only a loopback address; configure tenants with tokens_sha256"
                        .into(),
            }));
        }
    }
    pyward::serve(config)?;
    Ok(super::exit::OK)
}
