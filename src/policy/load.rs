//! Where policies come from: the built-in files, a file on disk, or TOML
//! text; and the way back to TOML for `pyward policy show`.

use std::path::Path;

use serde::{Serialize, Serializer};

use super::error::PolicyError;
use super::file::{PolicyDocument, RawPolicy};
use super::types::SandboxPolicy;

/// The names [`SandboxPolicy::builtin`] knows; `strict` is the default.
pub const BUILTIN_POLICIES: &[&str] = &["strict", "standard"];

/// The shipped policy files, embedded so the binary works from any directory.
const BUILTIN_FILES: [(&str, &str); 2] = [
    ("strict", include_str!("../../policies/strict.toml")),
    ("standard", include_str!("../../policies/standard.toml")),
];

impl SandboxPolicy {
    /// Parses and validates a policy from TOML `text`.
    ///
    /// `name` becomes [`SandboxPolicy::name`]; `source_name` (a file path,
    /// say) is what error messages call the text.
    pub fn from_toml(
        name: &str,
        text: &str,
        source_name: &str,
    ) -> Result<SandboxPolicy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let doc = PolicyDocument {
            name: name.to_owned(),
            source_name: source_name.to_owned(),
            raw,
        };
        SandboxPolicy::try_from(doc)
    }

    /// One of the shipped policies, by name (see [`BUILTIN_POLICIES`]).
    pub fn builtin(name: &str) -> Result<SandboxPolicy, PolicyError> {
        let (_, text) = BUILTIN_FILES
            .iter()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| PolicyError::UnknownPolicy {
                name: name.to_owned(),
                known: BUILTIN_POLICIES.iter().map(|n| (*n).to_owned()).collect(),
            })?;
        SandboxPolicy::from_toml(name, text, &format!("policies/{name}.toml (built in)"))
    }

    /// A built-in policy by name, or a policy file when `name_or_path`
    /// contains `/` or ends in `.toml` (the policy is then named after the
    /// file's stem).
    pub fn load(name_or_path: &str) -> Result<SandboxPolicy, PolicyError> {
        if !(name_or_path.contains('/') || name_or_path.ends_with(".toml")) {
            return SandboxPolicy::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| name_or_path.into(), |stem| stem.to_string_lossy());
        let mut policy = SandboxPolicy::from_toml(&name, &text, &path.display().to_string())?;
        policy.seccomp.search_dir = path.parent().map(Path::to_path_buf);
        Ok(policy)
    }

    /// The policy in the file format with every field resolved (defaults
    /// written out). [`SandboxPolicy::from_toml`] reads it back to an equal policy.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&RawPolicy::from(self))
            .expect("a RawPolicy holds only strings, integers, finite floats, arrays and tables");
        format!(
            "# pyward policy `{}`, every field resolved\n{body}",
            self.name
        )
    }
}

/// Serializes like the policy file (sizes as `"256MiB"`, durations as
/// `"10s"`), with the policy's `name` added: for JSON displays.
impl Serialize for SandboxPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            name: &'a str,
            #[serde(flatten)]
            body: RawPolicy,
        }
        Shown {
            name: &self.name,
            body: RawPolicy::from(self),
        }
        .serialize(serializer)
    }
}
