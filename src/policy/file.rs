//! The policy file format: raw TOML structs and their conversion to and from
//! [`SandboxPolicy`].
//!
//! The raw structs only describe shapes: every field is optional (an omitted
//! field takes the strict default) and unknown fields are refused. Units,
//! enums and ranges are checked in one place, the `TryFrom` below, so a
//! `SandboxPolicy` that exists is valid.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::PolicyError;
use super::rules::{self, FieldError};
use super::types::{
    ByteSize, DeniedAction, EnvPolicy, Limits, Network, SandboxPolicy, SandboxUser, SeccompSettings,
};
use super::units::{QuantityKind, format_duration, parse_duration};

/// A whole policy file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub description: Option<String>,
    pub network: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub env: RawEnv,
    #[serde(default)]
    pub seccomp: RawSeccomp,
    #[serde(default)]
    pub user: RawUser,
}

/// `[limits]`. Durations are strings (`"10s"`); sizes are strings or byte counts.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub wall_time: Option<String>,
    pub cpu_time: Option<String>,
    pub memory: Option<RawSize>,
    pub pids: Option<i64>,
    pub open_files: Option<i64>,
    pub file_size: Option<RawSize>,
    pub output: Option<RawSize>,
    pub tmpfs: Option<RawSize>,
    pub cpus: Option<f64>,
}

/// `[env]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnv {
    pub set: Option<BTreeMap<String, String>>,
    pub allow: Option<Vec<String>>,
}

/// `[seccomp]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeccomp {
    pub allowlist: Option<String>,
    pub denied: Option<String>,
}

/// `[user]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub uid: Option<i64>,
    pub gid: Option<i64>,
}

/// A size as written: `"256MiB"` or `268435456`. Parsed in the `TryFrom`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawSize, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(QuantityKind::Size.expected())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for RawSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawSize::Bytes(n) => serializer.serialize_i64(*n),
            RawSize::Text(s) => serializer.serialize_str(s),
        }
    }
}

/// A raw policy and where it came from: what `TryFrom` needs to name errors.
pub(super) struct PolicyDocument {
    /// The policy's name (builtin name or file stem).
    pub name: String,
    /// The file or builtin it was read from, for error messages.
    pub source_name: String,
    /// The parsed text.
    pub raw: RawPolicy,
}

impl TryFrom<PolicyDocument> for SandboxPolicy {
    type Error = PolicyError;

    fn try_from(doc: PolicyDocument) -> Result<SandboxPolicy, PolicyError> {
        let source_name = doc.source_name;
        to_policy(doc.name, doc.raw).map_err(
            |FieldError {
                 field,
                 value,
                 allowed,
             }| {
                PolicyError::InvalidField {
                    source_name,
                    field,
                    value,
                    allowed,
                }
            },
        )
    }
}

/// Fills omitted fields with the strict defaults, parses units and enums, then checks ranges.
fn to_policy(name: String, raw: RawPolicy) -> Result<SandboxPolicy, FieldError> {
    let description = raw.description.unwrap_or_default();
    rules::check_description(&description)?;
    let network = match raw.network {
        None => Network::strict(),
        Some(word) => parse_network(&word)?,
    };
    let limits = to_limits(raw.limits)?;
    limits.check()?;
    let strict_env = EnvPolicy::strict();
    let env = EnvPolicy {
        set: raw.env.set.unwrap_or(strict_env.set),
        allow: raw.env.allow.unwrap_or(strict_env.allow),
    };
    env.check()?;
    let strict_seccomp = SeccompSettings::strict();
    let seccomp = SeccompSettings {
        allowlist: raw.seccomp.allowlist.unwrap_or(strict_seccomp.allowlist),
        denied: match raw.seccomp.denied {
            None => strict_seccomp.denied,
            Some(word) => parse_denied(&word)?,
        },
        search_dir: None,
    };
    seccomp.check()?;
    let strict_user = SandboxUser::strict();
    let user = SandboxUser {
        uid: id_field("user.uid", raw.user.uid, strict_user.uid)?,
        gid: id_field("user.gid", raw.user.gid, strict_user.gid)?,
    };
    Ok(SandboxPolicy {
        name,
        description,
        limits,
        network,
        env,
        seccomp,
        user,
    })
}

fn parse_network(word: &str) -> Result<Network, FieldError> {
    [Network::None, Network::Loopback]
        .into_iter()
        .find(|n| n.as_str() == word)
        .ok_or_else(|| FieldError::new("network", word, "none, loopback"))
}

fn parse_denied(word: &str) -> Result<DeniedAction, FieldError> {
    [DeniedAction::Errno, DeniedAction::Kill]
        .into_iter()
        .find(|d| d.as_str() == word)
        .ok_or_else(|| FieldError::new("seccomp.denied", word, "errno, kill"))
}

fn id_field(field: &str, raw: Option<i64>, default: u32) -> Result<u32, FieldError> {
    raw.map_or(Ok(default), |n| rules::USER_ID.check(field, n))
}

/// Parses the units of `[limits]`; ranges are checked by `Limits::check`.
fn to_limits(raw: RawLimits) -> Result<Limits, FieldError> {
    let strict = Limits::strict();
    let pids = match raw.pids {
        None => strict.pids,
        Some(n) => rules::PIDS.check("limits.pids", n)?,
    };
    let open_files = match raw.open_files {
        None => strict.open_files,
        Some(n) => rules::OPEN_FILES.check("limits.open_files", n)?,
    };
    Ok(Limits {
        wall_time: duration_field("limits.wall_time", raw.wall_time, strict.wall_time)?,
        cpu_time: duration_field("limits.cpu_time", raw.cpu_time, strict.cpu_time)?,
        memory: size_field("limits.memory", raw.memory, strict.memory)?,
        pids,
        open_files,
        file_size: size_field("limits.file_size", raw.file_size, strict.file_size)?,
        output: size_field("limits.output", raw.output, strict.output)?,
        tmpfs: size_field("limits.tmpfs", raw.tmpfs, strict.tmpfs)?,
        cpus: raw.cpus.unwrap_or(strict.cpus),
    })
}

fn duration_field(
    field: &str,
    raw: Option<String>,
    default: std::time::Duration,
) -> Result<std::time::Duration, FieldError> {
    let Some(text) = raw else { return Ok(default) };
    parse_duration(&text)
        .map_err(|_| FieldError::new(field, text, QuantityKind::Duration.expected()))
}

fn size_field(
    field: &str,
    raw: Option<RawSize>,
    default: ByteSize,
) -> Result<ByteSize, FieldError> {
    match raw {
        None => Ok(default),
        Some(RawSize::Bytes(n)) => u64::try_from(n)
            .map(ByteSize)
            .map_err(|_| FieldError::new(field, n.to_string(), QuantityKind::Size.expected())),
        Some(RawSize::Text(text)) => text
            .parse::<ByteSize>()
            .map_err(|_| FieldError::new(field, text, QuantityKind::Size.expected())),
    }
}

impl From<&SandboxPolicy> for RawPolicy {
    /// Every field written out, sizes and durations in their file notation.
    fn from(policy: &SandboxPolicy) -> RawPolicy {
        let limits = &policy.limits;
        let size = |s: ByteSize| Some(RawSize::Text(s.to_string()));
        RawPolicy {
            description: Some(policy.description.clone()),
            network: Some(policy.network.as_str().to_owned()),
            limits: RawLimits {
                wall_time: Some(format_duration(limits.wall_time)),
                cpu_time: Some(format_duration(limits.cpu_time)),
                memory: size(limits.memory),
                pids: Some(limits.pids.into()),
                open_files: Some(limits.open_files.into()),
                file_size: size(limits.file_size),
                output: size(limits.output),
                tmpfs: size(limits.tmpfs),
                cpus: Some(limits.cpus),
            },
            env: RawEnv {
                set: Some(policy.env.set.clone()),
                allow: Some(policy.env.allow.clone()),
            },
            seccomp: RawSeccomp {
                allowlist: Some(policy.seccomp.allowlist.clone()),
                denied: Some(policy.seccomp.denied.as_str().to_owned()),
            },
            user: RawUser {
                uid: Some(policy.user.uid.into()),
                gid: Some(policy.user.gid.into()),
            },
        }
    }
}
