//! Image recipes: the TOML under images/NAME/recipe.toml, parsed into a
//! validated [`Recipe`]. Pure data; nothing here runs a tool.

use super::error::ImageError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A validated image recipe: a Debian suite, packages and hardening steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The recipe's name: its folder under images/ (`python3.11-bookworm`).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// The exact bytes of the file; part of the cache key.
    pub bytes: Vec<u8>,
    /// `org.opencontainers.image.title`.
    pub title: String,
    /// `org.opencontainers.image.version`.
    pub version: String,
    /// `org.opencontainers.image.description`.
    pub description: String,
    /// `org.opencontainers.image.source`; the recipe's path in the repo when unset.
    pub source: String,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Debian mirror URL.
    pub mirror: String,
    /// mmdebstrap variant.
    pub variant: Variant,
    /// Packages to install on top of the variant.
    pub packages: Vec<String>,
    /// What to strip from the rootfs after the build.
    pub hardening: Hardening,
}

/// The mmdebstrap variants a recipe may use, smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `Essential: yes` packages only (plus the recipe's packages).
    Essential,
    /// Essential plus apt.
    Apt,
    /// Essential, apt and `Priority: required`.
    Minbase,
}

impl Variant {
    /// The name mmdebstrap takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Apt => "apt",
            Variant::Minbase => "minbase",
        }
    }
}

/// Hardening applied to the rootfs; every default is the secure choice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hardening {
    /// Clear setuid and setgid bits on every file.
    pub strip_setid: bool,
    /// Make uid/gid 65534 the `sandbox` user and group.
    pub sandbox_user: bool,
    /// Delete apt and dpkg (binaries, state, config) once the build is done.
    pub remove_package_manager: bool,
    /// Delete C compilers, assemblers and linkers if any package pulled them in.
    pub remove_compilers: bool,
    /// Extra absolute paths to delete; `*` matches within one path component.
    pub remove: Vec<String>,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            strip_setid: true,
            sandbox_user: true,
            remove_package_manager: true,
            remove_compilers: true,
            remove: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    image: RawImage,
    debian: RawDebian,
    #[serde(default)]
    hardening: Hardening,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    title: String,
    version: String,
    #[serde(default)]
    description: String,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebian {
    suite: String,
    mirror: String,
    #[serde(default = "default_variant")]
    variant: Variant,
    packages: Vec<String>,
}

fn default_variant() -> Variant {
    Variant::Essential
}

impl Recipe {
    /// Finds a recipe by name under `images_dir` (`images_dir/NAME/recipe.toml`),
    /// or reads `spec` as a path to a recipe file or its folder.
    pub fn resolve(spec: &str, images_dir: &Path) -> Result<Recipe, ImageError> {
        let as_path = Path::new(spec);
        let path = if as_path.is_file() {
            as_path.to_path_buf()
        } else if as_path.join("recipe.toml").is_file() {
            as_path.join("recipe.toml")
        } else if !spec.contains('/') && images_dir.join(spec).join("recipe.toml").is_file() {
            images_dir.join(spec).join("recipe.toml")
        } else {
            return Err(ImageError::RecipeNotFound {
                spec: spec.to_owned(),
                images_dir: images_dir.to_path_buf(),
            });
        };
        Recipe::load(&path)
    }

    /// Reads and validates one recipe file; its name is its folder's name.
    pub fn load(path: &Path) -> Result<Recipe, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::ReadRecipe {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        Recipe::parse(&name, path, bytes)
    }

    /// Validates `bytes` as the recipe `name` read from `path`.
    pub fn parse(name: &str, path: &Path, bytes: Vec<u8>) -> Result<Recipe, ImageError> {
        let invalid = |field: &str, problem: String| ImageError::InvalidRecipe {
            path: path.to_path_buf(),
            field: field.to_owned(),
            problem,
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| invalid("(file)", format!("not UTF-8: {e}")))?;
        let raw: RawRecipe = toml::from_str(text).map_err(|e| ImageError::ParseRecipe {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if !is_plain_name(name) {
            return Err(invalid(
                "(folder name)",
                format!("{name:?} must be non-empty ASCII letters, digits, '.', '-' or '_'"),
            ));
        }
        if !is_plain_name(&raw.debian.suite) {
            return Err(invalid(
                "debian.suite",
                format!("{:?} is not a Debian suite name", raw.debian.suite),
            ));
        }
        if !(raw.debian.mirror.starts_with("http://") || raw.debian.mirror.starts_with("https://"))
        {
            return Err(invalid(
                "debian.mirror",
                format!("{:?} must be an http:// or https:// URL", raw.debian.mirror),
            ));
        }
        if raw.debian.packages.is_empty() {
            return Err(invalid(
                "debian.packages",
                "must name at least python3".into(),
            ));
        }
        if let Some(bad) = raw.debian.packages.iter().find(|p| !is_package_name(p)) {
            return Err(invalid(
                "debian.packages",
                format!("{bad:?} is not a Debian package name (lowercase letters, digits, + - .)"),
            ));
        }
        if let Some(bad) = raw.hardening.remove.iter().find(|p| !is_removable(p)) {
            return Err(invalid(
                "hardening.remove",
                format!("{bad:?} must be an absolute path below / without '.' or '..' components"),
            ));
        }
        if raw.image.title.trim().is_empty() || raw.image.version.trim().is_empty() {
            return Err(invalid(
                "image.title/image.version",
                "must not be empty".into(),
            ));
        }
        Ok(Recipe {
            name: name.to_owned(),
            path: path.to_path_buf(),
            source: raw
                .image
                .source
                .unwrap_or_else(|| format!("pyward:images/{name}/recipe.toml")),
            bytes,
            title: raw.image.title,
            version: raw.image.version,
            description: raw.image.description,
            suite: raw.debian.suite,
            mirror: raw.debian.mirror,
            variant: raw.debian.variant,
            packages: raw.debian.packages,
            hardening: raw.hardening,
        })
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        })
}

fn is_removable(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    !rest.is_empty()
        && parts
            .iter()
            .all(|c| !c.is_empty() && *c != ".." && *c != ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[image]
title = "t"
version = "1"
[debian]
suite = "bookworm"
mirror = "http://deb.debian.org/debian"
packages = ["python3"]
"#;

    fn parse(text: &str) -> Result<Recipe, ImageError> {
        Recipe::parse(
            "r",
            Path::new("images/r/recipe.toml"),
            text.as_bytes().to_vec(),
        )
    }

    #[test]
    fn defaults_are_the_secure_ones() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.variant, Variant::Essential);
        assert_eq!(r.hardening, Hardening::default());
        assert!(r.hardening.strip_setid && r.hardening.sandbox_user);
        assert_eq!(r.source, "pyward:images/r/recipe.toml");
    }

    #[test]
    fn unknown_fields_are_refused_with_the_file_named() {
        let err = parse(&format!("{GOOD}\n[hardening]\nstrip_suid = false\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("images/r/recipe.toml") && err.contains("strip_suid"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("suite = \"bookworm\"", "suite = \"../x\"", "debian.suite"),
            (
                "packages = [\"python3\"]",
                "packages = [\"Py thon\"]",
                "debian.packages",
            ),
            (
                "packages = [\"python3\"]",
                "packages = []",
                "debian.packages",
            ),
            ("http://deb", "ftp://deb", "debian.mirror"),
        ];
        for (from, to, field) in cases {
            let err = parse(&GOOD.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(field), "{to}: {err}");
        }
        let err = parse(&format!("{GOOD}[hardening]\nremove = [\"/usr/../etc\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hardening.remove"), "{err}");
    }

    #[test]
    fn shipped_recipes_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        for name in ["python3.11-bookworm", "python3.11-bookworm-sci"] {
            let r = Recipe::resolve(name, &dir).unwrap();
            assert_eq!(r.name, name);
            assert!(r.packages.iter().any(|p| p == "python3"));
        }
        let sci = Recipe::resolve("python3.11-bookworm-sci", &dir).unwrap();
        assert!(sci.packages.iter().any(|p| p == "python3-numpy"));
    }
}
