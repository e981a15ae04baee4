//! Sizes and durations written the way people write them: `"256MiB"`, `"10s"`.
//!
//! Policy files and CLI flags (`--memory 128MiB --wall-time 2s`) share these
//! parsers, so both refuse the same things with the same words. Numbers are
//! whole; units are exact and case-sensitive (`M`, `MB` and `mib` are refused
//! rather than guessed at).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::types::ByteSize;

/// The size units a policy or a flag may use, as shown in error messages.
const SIZE_UNITS: &str = "B, KiB, MiB, GiB";

/// The duration units a policy or a flag may use, as shown in error messages.
const DURATION_UNITS: &str = "ms, s, m, h";

const SIZE_TABLE: [(&str, u64); 4] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

const DURATION_MS_TABLE: [(&str, u64); 4] =
    [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Which kind of quantity a [`UnitError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityKind {
    /// A byte size such as `256MiB`.
    Size,
    /// A duration such as `10s`.
    Duration,
}

impl QuantityKind {
    /// The units this kind accepts, for error messages.
    pub const fn allowed_units(self) -> &'static str {
        match self {
            QuantityKind::Size => SIZE_UNITS,
            QuantityKind::Duration => DURATION_UNITS,
        }
    }

    /// What a valid value looks like, for error messages.
    pub const fn expected(self) -> &'static str {
        match self {
            QuantityKind::Size => {
                "an integer number of bytes, or an integer followed by one of B, KiB, MiB, GiB (e.g. 256MiB)"
            }
            QuantityKind::Duration => {
                "an integer followed by one of ms, s, m, h (e.g. 500ms, 10s, 2m)"
            }
        }
    }
}

impl fmt::Display for QuantityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantityKind::Size => "size",
            QuantityKind::Duration => "duration",
        })
    }
}

/// A size or duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a whole number, with or without a unit (empty, signed, fractional, ...).
    #[error("invalid {kind} `{input}`: expected {}", .kind.expected())]
    Malformed {
        /// Size or duration.
        kind: QuantityKind,
        /// The text as given.
        input: String,
    },
    /// A duration was given without a unit.
    #[error("invalid {kind} `{input}`: a unit is required, one of {}", .kind.allowed_units())]
    MissingUnit {
        /// Size or duration.
        kind: QuantityKind,
        /// The text as given.
        input: String,
    },
    /// The number is followed by something that is not an allowed unit.
    #[error("invalid {kind} `{input}`: unknown unit `{unit}`; allowed units: {}", .kind.allowed_units())]
    UnknownUnit {
        /// Size or duration.
        kind: QuantityKind,
        /// The text as given.
        input: String,
        /// The unit as given.
        unit: String,
    },
    /// The value does not fit in 64 bits (bytes or milliseconds).
    #[error("invalid {kind} `{input}`: too large")]
    TooLarge {
        /// Size or duration.
        kind: QuantityKind,
        /// The text as given.
        input: String,
    },
}

impl UnitError {
    /// Size or duration.
    pub fn kind(&self) -> QuantityKind {
        match self {
            UnitError::Malformed { kind, .. }
            | UnitError::MissingUnit { kind, .. }
            | UnitError::UnknownUnit { kind, .. }
            | UnitError::TooLarge { kind, .. } => *kind,
        }
    }
}

/// Splits `"256 MiB"` into `(256, "MiB")`. The number is ASCII digits only.
fn split_quantity(kind: QuantityKind, input: &str) -> Result<(u64, &str), UnitError> {
    let text = input.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    // "1.5s", "-1", "" : not a whole number, whatever follows.
    if digits.is_empty() || unit.starts_with(['.', ',']) {
        return Err(UnitError::Malformed {
            kind,
            input: input.to_owned(),
        });
    }
    let number = digits.parse::<u64>().map_err(|_| UnitError::TooLarge {
        kind,
        input: input.to_owned(),
    })?;
    Ok((number, unit.trim_start()))
}

/// Looks `unit` up in `table` and multiplies.
fn scale(
    kind: QuantityKind,
    input: &str,
    number: u64,
    unit: &str,
    table: &[(&str, u64)],
) -> Result<u64, UnitError> {
    let factor = table
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor)
        .ok_or_else(|| UnitError::UnknownUnit {
            kind,
            input: input.to_owned(),
            unit: unit.to_owned(),
        })?;
    number
        .checked_mul(factor)
        .ok_or_else(|| UnitError::TooLarge {
            kind,
            input: input.to_owned(),
        })
}

impl FromStr for ByteSize {
    type Err = UnitError;

    /// Parses `"256MiB"`, `"64 KiB"`, `"100B"` or a plain `"1048576"` (bytes).
    fn from_str(input: &str) -> Result<ByteSize, UnitError> {
        let kind = QuantityKind::Size;
        let (number, unit) = split_quantity(kind, input)?;
        if unit.is_empty() {
            return Ok(ByteSize(number));
        }
        scale(kind, input, number, unit, &SIZE_TABLE).map(ByteSize)
    }
}

/// Parses a duration such as `"500ms"`, `"10s"`, `"2m"` or `"1h"`.
///
/// The number must be a whole number and the unit is required; the error
/// names the allowed units.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let kind = QuantityKind::Duration;
    let (number, unit) = split_quantity(kind, input)?;
    if unit.is_empty() {
        return Err(UnitError::MissingUnit {
            kind,
            input: input.to_owned(),
        });
    }
    scale(kind, input, number, unit, &DURATION_MS_TABLE).map(Duration::from_millis)
}

/// Writes a duration in the largest unit that represents it exactly, so
/// that [`parse_duration`] reads it back. Sub-millisecond parts are dropped
/// (only a programmatic override can carry them).
pub fn format_duration(duration: Duration) -> String {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    for (unit, factor) in DURATION_MS_TABLE.iter().rev() {
        if ms >= *factor && ms % factor == 0 {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}
