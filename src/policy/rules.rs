//! The ranges a valid policy stays within, checked in one place.
//!
//! Both a policy file and a request's overrides go through these checks, so
//! a `SandboxPolicy` built either way still runs ordinary Python. Every check
//! returns a [`FieldError`] naming the field (dotted, as in the file), the
//! value and what is allowed; the caller adds where the value came from.

use std::time::Duration;

use super::types::{ByteSize, EnvPolicy, Limits, SeccompSettings};
use super::units::format_duration;

/// One field that failed its check. Becomes a `PolicyError` at the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldError {
    /// Dotted field name, e.g. `limits.memory`.
    pub field: String,
    /// The offending value, as text.
    pub value: String,
    /// What would have been accepted.
    pub allowed: String,
}

impl FieldError {
    pub(super) fn new(
        field: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }
}

/// A value with an inclusive range and a way to print itself as a file would.
trait Bounded: PartialOrd + Copy {
    fn show(self) -> String;
}

impl Bounded for Duration {
    fn show(self) -> String {
        format_duration(self)
    }
}

impl Bounded for ByteSize {
    fn show(self) -> String {
        self.to_string()
    }
}

/// An inclusive range of whole numbers. Checked on `i64` so that a policy
/// file's negative or huge integer gets the same error as any other.
#[derive(Debug, Clone, Copy)]
pub(super) struct IntRange {
    min: u32,
    max: u32,
}

impl IntRange {
    /// Checks `value` and narrows it to `u32`.
    pub(super) fn check(self, field: &str, value: i64) -> Result<u32, FieldError> {
        match u32::try_from(value) {
            Ok(v) if v >= self.min && v <= self.max => Ok(v),
            _ => Err(FieldError::new(
                field,
                value.to_string(),
                format!("{} to {}", self.min, self.max),
            )),
        }
    }
}

/// Checks `min <= value <= max`.
fn in_range<T: Bounded>(field: &str, value: T, min: T, max: T) -> Result<(), FieldError> {
    if value >= min && value <= max {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        value.show(),
        format!("{} to {}", min.show(), max.show()),
    ))
}

// Limits. Lower bounds keep Python able to start (its own startup needs about
// 10 MiB of memory and a dozen descriptors); upper bounds keep arithmetic on
// them (memory + swap, CFS quota, ...) far from overflow.
const TIME_MIN: Duration = Duration::from_millis(1);
const TIME_MAX: Duration = Duration::from_secs(24 * 3600);
const MEMORY_MIN: ByteSize = ByteSize::mib(32);
const SIZE_MAX: ByteSize = ByteSize::gib(1024);
pub(super) const PIDS: IntRange = IntRange { min: 1, max: 65536 };
/// The maximum is Linux's default `fs.nr_open`: RLIMIT_NOFILE cannot go above it anyway.
pub(super) const OPEN_FILES: IntRange = IntRange {
    min: 16,
    max: 1 << 20,
};
const OUTPUT_MIN: ByteSize = ByteSize::kib(1);
/// Output is held in memory by the executor, so it has a tighter ceiling.
const OUTPUT_MAX: ByteSize = ByteSize::gib(1);
const TMPFS_MIN: ByteSize = ByteSize::kib(64);
const CPUS_MAX: f64 = 1024.0;

/// The allowed range of `limits.cpus`, for error messages.
const CPUS_ALLOWED: &str = "more than 0 and at most 1024 (cores)";

/// Checks `limits.cpus`: finite, more than 0, at most 1024.
pub(super) fn check_cpus(cpus: f64) -> Result<(), FieldError> {
    if cpus > 0.0 && cpus <= CPUS_MAX {
        return Ok(());
    }
    Err(FieldError::new(
        "limits.cpus",
        cpus.to_string(),
        CPUS_ALLOWED,
    ))
}

impl Limits {
    /// Checks every limit against its range.
    pub(super) fn check(&self) -> Result<(), FieldError> {
        in_range("limits.wall_time", self.wall_time, TIME_MIN, TIME_MAX)?;
        in_range("limits.cpu_time", self.cpu_time, TIME_MIN, TIME_MAX)?;
        in_range("limits.memory", self.memory, MEMORY_MIN, SIZE_MAX)?;
        PIDS.check("limits.pids", self.pids.into())?;
        OPEN_FILES.check("limits.open_files", self.open_files.into())?;
        in_range("limits.file_size", self.file_size, ByteSize(0), SIZE_MAX)?;
        in_range("limits.output", self.output, OUTPUT_MIN, OUTPUT_MAX)?;
        in_range("limits.tmpfs", self.tmpfs, TMPFS_MIN, SIZE_MAX)?;
        check_cpus(self.cpus)
    }
}

/// Names a request may never set, whatever the policy says (`env.allow`).
/// Each makes the dynamic loader or the interpreter load code or data from
/// a path of the caller's choosing before the submitted program starts:
/// `LD_*` (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...), glibc's GCONV_PATH,
/// GLIBC_TUNABLES and LOCPATH, and Python's PYTHONHOME, PYTHONPATH,
/// PYTHONSTARTUP and PYTHONUSERBASE.
const REFUSED_ENV_PREFIXES: [&str; 1] = ["LD_"];
const REFUSED_ENV_NAMES: [&str; 7] = [
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
];

const ENV_NAME_SYNTAX: &str = "a name matching [A-Za-z_][A-Za-z0-9_]*";

/// True for a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True for a name no request may ever set (see [`REFUSED_ENV_NAMES`]).
fn is_refused_env_name(name: &str) -> bool {
    REFUSED_ENV_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || REFUSED_ENV_NAMES.contains(&name)
}

impl EnvPolicy {
    /// Checks names and values of `set` and the names of `allow`.
    pub(super) fn check(&self) -> Result<(), FieldError> {
        for (name, value) in &self.set {
            if !is_env_name(name) {
                return Err(FieldError::new("env.set", name, ENV_NAME_SYNTAX));
            }
            if value.contains('\0') {
                return Err(FieldError::new(
                    format!("env.set.{name}"),
                    value.escape_debug().to_string(),
                    "a value without NUL bytes",
                ));
            }
        }
        for name in &self.allow {
            if !is_env_name(name) {
                return Err(FieldError::new("env.allow", name, ENV_NAME_SYNTAX));
            }
            if is_refused_env_name(name) {
                let refused = format!(
                    "{ENV_NAME_SYNTAX}, other than LD_* and {}",
                    REFUSED_ENV_NAMES.join(", ")
                );
                return Err(FieldError::new("env.allow", name, refused));
            }
        }
        Ok(())
    }
}

impl SeccompSettings {
    /// Checks the allowlist name's syntax; the seccomp module checks that it exists.
    pub(super) fn check(&self) -> Result<(), FieldError> {
        let name = &self.allowlist;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            return Ok(());
        }
        Err(FieldError::new(
            "seccomp.allowlist",
            name,
            "the name of a file under policies/seccomp/ without `.toml`, matching [a-z0-9-]+",
        ))
    }
}

/// Range of `user.uid` and `user.gid`: the sandbox's uid map covers
/// 0..65536, and 0 (root inside the namespace) is never allowed.
/// (Checked while reading the file; no request changes the user.)
pub(super) const USER_ID: IntRange = IntRange { min: 1, max: 65535 };

/// Checks `description`: one line, no control characters.
pub(super) fn check_description(description: &str) -> Result<(), FieldError> {
    if description.chars().any(char::is_control) {
        return Err(FieldError::new(
            "description",
            description.escape_debug().to_string(),
            "one line of text without control characters",
        ));
    }
    Ok(())
}
