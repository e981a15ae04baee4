//! Which packages, at which versions, a build of a recipe would install,
//! found without building: `mmdebstrap --simulate` with the build's own
//! selection options, parsing the `Inst name (version ...)` lines apt
//! prints. The answer goes into the content key, and is itself cached per
//! (recipe bytes, arch) for a TTL so that a second build needs no network.
//!
//! Owns `<cache>/resolved/<recipe>/<arch>.json`; never builds or touches a rootfs.

use super::cache::{Cache, hex};
use super::error::ImageError;
use super::recipe::Recipe;
use super::rootfs;
use crate::Arch;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a resolution is trusted before the mirror is asked again.
pub const DEFAULT_RESOLVE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A stored resolution of one recipe's bytes for one arch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// sha256 of the recipe file it was made for.
    pub recipe_sha256: String,
    /// Unix seconds when the mirror answered.
    pub resolved_at: u64,
    /// Sorted `name=version` lines.
    pub packages: Vec<String>,
}

/// Where the package list of a build came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionSource {
    /// The stored resolution, within its TTL: no network.
    Cached,
    /// mmdebstrap --simulate just asked the mirror.
    Resolved,
    /// The mirror could not be asked; the last resolution, past its TTL, was used.
    Stale,
}

/// Whether a resolution made at `resolved_at` is still trusted at `now`.
/// A timestamp from the future (the clock went back) is not trusted.
pub fn is_fresh(resolved_at: u64, now: u64, ttl: Duration) -> bool {
    now >= resolved_at && now - resolved_at < ttl.as_secs()
}

/// The packages of `recipe` for `arch`: the stored resolution while fresh
/// (and not `refresh`), else a new one from the mirror, else (the mirror
/// or mmdebstrap unusable) the stored one with a warning.
pub fn resolve(
    cache: &Cache,
    tool: &Path,
    recipe: &Recipe,
    arch: Arch,
    ttl: Duration,
    refresh: bool,
) -> Result<(Vec<String>, ResolutionSource), ImageError> {
    let stored = load(cache, recipe, arch)?;
    let now = unix_now();
    if let Some(r) = &stored {
        if !refresh && is_fresh(r.resolved_at, now, ttl) {
            return Ok((r.packages.clone(), ResolutionSource::Cached));
        }
    }
    match simulate(tool, recipe, arch) {
        Ok(packages) => {
            store(cache, recipe, arch, &packages)?;
            Ok((packages, ResolutionSource::Resolved))
        }
        Err(err) => match stored {
            Some(r) => {
                eprintln!(
                    "pyward image: {}/{arch}: warning: cannot resolve packages ({err}); \
                     using the resolution from {} seconds ago",
                    recipe.name,
                    now.saturating_sub(r.resolved_at)
                );
                Ok((r.packages, ResolutionSource::Stale))
            }
            None => Err(err),
        },
    }
}

/// Records `packages` as the current resolution (after a build installed a
/// set other than the resolved one, so that the next build matches it).
pub fn store(
    cache: &Cache,
    recipe: &Recipe,
    arch: Arch,
    packages: &[String],
) -> Result<(), ImageError> {
    let path = path(cache, &recipe.name, arch);
    let r = Resolution {
        recipe_sha256: recipe_sha256(recipe),
        resolved_at: unix_now(),
        packages: packages.to_vec(),
    };
    let dir = path.parent().unwrap_or(cache.root());
    std::fs::create_dir_all(dir).map_err(ImageError::io("create the resolution directory", dir))?;
    let json = serde_json::to_vec_pretty(&r).map_err(|source| ImageError::Metadata {
        path: path.clone(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(ImageError::io("write the resolution", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(ImageError::io("write the resolution", &path))
}

/// The stored resolution of exactly these recipe bytes, if any. An
/// unreadable file counts as none: it is only a cache of the mirror.
fn load(cache: &Cache, recipe: &Recipe, arch: Arch) -> Result<Option<Resolution>, ImageError> {
    let path = path(cache, &recipe.name, arch);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read the resolution", &path)(e)),
    };
    let r: Option<Resolution> = serde_json::from_slice(&bytes).ok();
    Ok(r.filter(|r| r.recipe_sha256 == recipe_sha256(recipe)))
}

fn path(cache: &Cache, recipe: &str, arch: Arch) -> PathBuf {
    cache
        .root()
        .join("resolved")
        .join(recipe)
        .join(format!("{}.json", arch.as_str()))
}

fn recipe_sha256(recipe: &Recipe) -> String {
    hex(&Sha256::digest(&recipe.bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Asks the mirror: `mmdebstrap --simulate --verbose --format=null` with the
/// build's selection options (a few seconds; only apt's package lists are fetched).
fn simulate(tool: &Path, recipe: &Recipe, arch: Arch) -> Result<Vec<String>, ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    if rootfs::which(tool).is_none() {
        return Err(ImageError::MissingTool {
            tool: "mmdebstrap",
            path: tool.to_path_buf(),
            package: "mmdebstrap",
        });
    }
    let out = Command::new(tool)
        .args(rootfs::selection_args(recipe, arch))
        // --verbose makes mmdebstrap pass apt's `Inst` lines through.
        .args(["--simulate", "--verbose", "--format=null"])
        .arg(&recipe.suite)
        .arg("/dev/null")
        .arg(&recipe.mirror)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ImageError::Spawn {
            command: tool.display().to_string(),
            source,
        })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let packages = parse_simulate(&text);
    if !out.status.success() || packages.is_empty() {
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(ImageError::Resolve {
            arch,
            status: out.status,
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(packages)
}

/// Sorted `name=version` from apt's `Inst name (version release [arch])`
/// lines. mmdebstrap simulates two installs (the essential set, then the
/// rest into an empty chroot), so a package can appear twice: the union by
/// name is what the build installs. `name:arch` qualifiers are dropped, as
/// dpkg-query's `${Package}` has none.
pub fn parse_simulate(output: &str) -> Vec<String> {
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(version) = version.strip_prefix('(') else {
            continue;
        };
        let name = name.split(':').next().unwrap_or(name);
        found.insert(name, version.trim_end_matches(')'));
    }
    let mut list: Vec<String> = found.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    // Sorted as lines, like `rootfs::installed_packages`, so the two compare equal.
    list.sort();
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        include_str!("../../tests/fixtures/mmdebstrap-simulate-bookworm-python3-arm64.txt");

    #[test]
    fn parses_the_union_of_both_simulated_installs() {
        let p = parse_simulate(SAMPLE);
        // The captured run installed 93 packages (checked against dpkg-query of a real build).
        assert_eq!(p.len(), 93, "{p:?}");
        assert!(
            p.contains(&"python3.11=3.11.2-6+deb12u8".to_owned()),
            "{p:?}"
        );
        assert!(p.contains(&"libc6=2.36-9+deb12u14".to_owned()), "{p:?}");
        assert!(p.is_sorted());
        assert_eq!(p.iter().filter(|l| l.starts_with("libc6=")).count(), 1);
    }

    #[test]
    fn ignores_other_lines_and_drops_arch_qualifiers() {
        let text = "I: running apt-get update...\nConf libc6 (2.36 Debian:12 [amd64])\n\
                    Inst zlib1g:arm64 (1:1.2.13 Debian:12.15/oldstable [arm64])\n\
                    Inst a (1.0 Debian [amd64]) []\nInst broken\n  Inst indented (9)\n";
        assert_eq!(parse_simulate(text), ["a=1.0", "zlib1g=1:1.2.13"]);
        assert!(parse_simulate("").is_empty());
    }

    #[test]
    fn freshness_is_a_window_after_the_resolution() {
        let ttl = Duration::from_secs(100);
        assert!(is_fresh(1000, 1000, ttl));
        assert!(is_fresh(1000, 1099, ttl));
        assert!(!is_fresh(1000, 1100, ttl));
        assert!(
            !is_fresh(1000, 999, ttl),
            "a future timestamp is not trusted"
        );
        assert!(!is_fresh(1000, 1000, Duration::ZERO));
    }

    #[test]
    fn a_resolution_is_kept_per_recipe_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let text = "[image]\ntitle = \"t\"\nversion = \"1\"\n[debian]\nsuite = \"bookworm\"\n\
                    mirror = \"http://deb.debian.org/debian\"\npackages = [\"python3\"]\n";
        let r = Recipe::parse("r", Path::new("r/recipe.toml"), text.into()).unwrap();
        assert_eq!(load(&cache, &r, Arch::Amd64).unwrap(), None);
        store(&cache, &r, Arch::Amd64, &["a=1".into()]).unwrap();
        let got = load(&cache, &r, Arch::Amd64).unwrap().unwrap();
        assert_eq!(got.packages, ["a=1"]);
        assert_eq!(load(&cache, &r, Arch::Arm64).unwrap(), None);
        let edited = format!("{text}# a comment\n");
        let r2 = Recipe::parse("r", Path::new("r/recipe.toml"), edited.into()).unwrap();
        assert_eq!(load(&cache, &r2, Arch::Amd64).unwrap(), None);
        // Within the TTL no mmdebstrap runs (the path does not exist).
        let nowhere = Path::new("/nonexistent/mmdebstrap");
        let (p, src) =
            resolve(&cache, nowhere, &r, Arch::Amd64, DEFAULT_RESOLVE_TTL, false).unwrap();
        assert_eq!((p, src), (vec!["a=1".to_owned()], ResolutionSource::Cached));
        // Past it (or refreshed), an unusable mmdebstrap falls back to the stored list.
        let (p, src) = resolve(&cache, nowhere, &r, Arch::Amd64, Duration::ZERO, false).unwrap();
        assert_eq!((p, src), (vec!["a=1".to_owned()], ResolutionSource::Stale));
        let (_, src) =
            resolve(&cache, nowhere, &r, Arch::Amd64, DEFAULT_RESOLVE_TTL, true).unwrap();
        assert_eq!(src, ResolutionSource::Stale);
        // With nothing stored, the failure is the error.
        assert!(matches!(
            resolve(
                &cache,
                nowhere,
                &r2,
                Arch::Amd64,
                DEFAULT_RESOLVE_TTL,
                false
            ),
            Err(ImageError::MissingTool { .. })
        ));
    }
}
