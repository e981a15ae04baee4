//! Sandbox policies: typed, validated limits and isolation settings.
//!
//! Owns the policy file format (TOML under policies/), its validation and the
//! rule that a request may tighten a policy but never loosen it. Pure data:
//! depends on nothing else in the crate and performs no I/O beyond reading
//! the policy file it is asked to load.

mod types;
mod units;

pub use types::*;
pub use units::{QuantityKind, UnitError, format_duration, parse_duration};
