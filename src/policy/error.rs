//! `PolicyError`: every way loading, tightening or using a policy can fail.

use std::path::PathBuf;

/// Joins names for a message, or says `none`.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Loading a policy, or applying a request to one, failed. Each variant is
/// named after the step that failed and says what would have been accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read policy file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The text is not valid TOML, has an unknown field, or a value of the wrong type.
    #[error("{source_name}: {message}")]
    Parse {
        /// The file, or `policies/NAME.toml (built in)`.
        source_name: String,
        /// The parser's message, with line, column and the offending line.
        message: String,
    },

    /// A field has a value outside what a policy may say.
    #[error("{source_name}: invalid {field} `{value}`: allowed: {allowed}")]
    InvalidField {
        /// The file, or `policies/NAME.toml (built in)`.
        source_name: String,
        /// Dotted field name, e.g. `limits.memory`.
        field: String,
        /// The value as written.
        value: String,
        /// The allowed values or range.
        allowed: String,
    },

    /// A request's limit override is out of range (even though it is not looser).
    #[error("invalid requested {field} `{value}`: allowed: {allowed}")]
    InvalidOverride {
        /// Dotted field name, e.g. `limits.memory`.
        field: String,
        /// The requested value.
        value: String,
        /// The allowed range.
        allowed: String,
    },

    /// A request asked for a limit looser than the policy's.
    #[error(
        "requested {field} `{requested}` is looser than policy `{policy_name}`'s `{policy}`; \
         a request may only tighten a policy's limits"
    )]
    Loosen {
        /// Name of the policy.
        policy_name: String,
        /// Dotted field name, e.g. `limits.memory`.
        field: String,
        /// The policy's value.
        policy: String,
        /// The requested value.
        requested: String,
    },

    /// A request set an environment variable the policy does not allow.
    #[error(
        "environment variable `{name}` may not be set by a request under this policy; allowed: {}",
        list(.allowed)
    )]
    EnvNotAllowed {
        /// The variable.
        name: String,
        /// The names the policy allows (`env.allow`).
        allowed: Vec<String>,
    },

    /// A request set an environment variable to a value that cannot be passed to execve.
    #[error("environment variable `{name}`: the value contains a NUL byte")]
    EnvValueHasNul {
        /// The variable.
        name: String,
    },

    /// No built-in policy has this name.
    #[error(
        "unknown policy `{name}`: built-in policies are {}; a path (containing `/` or ending in `.toml`) loads a file",
        .known.join(", ")
    )]
    UnknownPolicy {
        /// The name asked for.
        name: String,
        /// The built-in names.
        known: Vec<String>,
    },
}
