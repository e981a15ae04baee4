//! Sandbox policies: typed, validated limits and isolation settings.
//!
//! Owns the policy file format (TOML under policies/), its validation and the
//! rule that a request may tighten a policy but never loosen it. Pure data:
//! depends on nothing else in the crate and performs no I/O beyond reading
//! the policy file it is asked to load.
//!
//! - `types`: the validated types ([`SandboxPolicy`] and its parts) and their strict defaults
//! - `units`: `"256MiB"` and `"10s"`, shared with CLI flags
//! - `file`: the raw TOML structs and the `TryFrom` that validates them
//! - `rules`: the ranges every policy stays within
//! - `load`: built-in policies, policy files, and back to TOML
//! - `request`: tightening limits and checking a request's environment
//! - `error`: [`PolicyError`]

mod error;
mod file;
mod load;
mod request;
mod rules;
mod types;
mod units;

#[cfg(test)]
mod tests;

pub use error::PolicyError;
pub use load::BUILTIN_POLICIES;
pub use types::*;
pub use units::{QuantityKind, UnitError, format_duration, parse_duration};
