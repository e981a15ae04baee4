//! The native runtime: Linux namespaces, cgroups, seccomp and dropped
//! capabilities set up by pyward itself, with no Docker needed.

use super::{Outcome, RunError, Runtime, Submission};
use crate::policy::SandboxPolicy;

/// Host-side settings of the native runtime.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// The interpreter to run (a real binary; default /usr/bin/python3).
    pub python: std::path::PathBuf,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            python: "/usr/bin/python3".into(),
        }
    }
}

/// A failure preparing a native run on the host.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {}

/// Runs submissions in namespaces pyward sets up itself.
pub struct NativeRuntime {
    config: NativeConfig,
}

impl NativeRuntime {
    /// Checks the host (interpreter, cgroups, namespaces) and prepares the runtime.
    pub fn new(config: NativeConfig) -> Result<NativeRuntime, NativeError> {
        Ok(NativeRuntime { config })
    }
}

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run(&self, _policy: &SandboxPolicy, _submission: &Submission) -> Result<Outcome, RunError> {
        let _ = &self.config;
        unimplemented!("native runtime under construction")
    }
}
