//! The image cache on disk: where each artifact lives, the content key that
//! decides whether a build can be skipped, per-arch metadata, and the lock
//! that keeps two pyward processes from building the same recipe at once.
//!
//! ```text
//! <cache>/rootfs/<recipe>/<arch>/        the hardened rootfs (the native runtime runs from it)
//! <cache>/rootfs/<recipe>/<arch>.json    BuiltArch: key, digests, sizes, packages, build time
//! <cache>/blobs/<recipe>/<arch>/         layer.tar.gz, config.json, manifest.json
//! <cache>/oci/<recipe>/                  the default OCI image layout (multi-arch index)
//! <cache>/resolved/<recipe>/<arch>.json  the last package resolution (see `resolve`)
//! <cache>/locks/<recipe>.lock            held for a whole build or removal
//! ```

use super::error::ImageError;
use super::recipe::Recipe;
use crate::Arch;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Bumped whenever the build or hardening changes what a recipe produces,
/// so that old cache entries stop matching (2: the key covers package versions).
const BUILDER_VERSION: &str = "pyward-image-builder/3";

/// The default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/pyward/images";

/// The cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// What a finished build of one recipe for one architecture left in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltArch {
    /// The recipe's name.
    pub recipe: String,
    /// The architecture.
    pub arch: Arch,
    /// The content key (hex sha256) this build was made for.
    pub key: String,
    /// `sha256:...` of the gzip'd layer.
    pub layer_digest: String,
    /// Size of the gzip'd layer in bytes.
    pub layer_size: u64,
    /// `sha256:...` of the uncompressed layer tar (the diff id).
    pub diff_id: String,
    /// `sha256:...` of the image config; Docker's image id.
    pub config_digest: String,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// Bytes of regular files in the rootfs.
    pub rootfs_bytes: u64,
    /// `package=version` for every installed Debian package; the key covers these.
    pub packages: Vec<String>,
    /// `package=version` as resolved before the build (`mmdebstrap --simulate`);
    /// equal to `packages` unless the mirror changed during the build.
    #[serde(default)]
    pub resolved: Vec<String>,
    /// RFC 3339 build time (`org.opencontainers.image.created`).
    pub created: String,
    /// Seconds the build took.
    pub build_secs: f64,
}

impl BuiltArch {
    /// The Python version the image holds (`3.11.2`): the upstream part of
    /// the `python3` package's version (no epoch, no Debian revision).
    pub fn python_version(&self) -> Option<String> {
        let version = self
            .packages
            .iter()
            .find_map(|p| p.strip_prefix("python3="))?;
        let version = version.split_once(':').map_or(version, |(_, v)| v);
        let upstream = version.rsplit_once('-').map_or(version, |(u, _)| u);
        (!upstream.is_empty()).then(|| upstream.to_owned())
    }
}

impl Cache {
    /// A cache rooted at `root` (created on first build).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The cache at `$PYWARD_IMAGE_CACHE`, else at [`DEFAULT_CACHE_DIR`].
    pub fn from_env() -> Cache {
        Cache::new(
            std::env::var_os("PYWARD_IMAGE_CACHE")
                .map_or(PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from),
        )
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The hardened rootfs of `recipe` for `arch`.
    pub fn rootfs_dir(&self, recipe: &str, arch: Arch) -> PathBuf {
        self.root.join("rootfs").join(recipe).join(arch.as_str())
    }

    /// The metadata of that rootfs.
    pub fn meta_path(&self, recipe: &str, arch: Arch) -> PathBuf {
        self.root
            .join("rootfs")
            .join(recipe)
            .join(format!("{}.json", arch.as_str()))
    }

    /// Layer, config and manifest blobs of `recipe` for `arch`.
    pub fn blob_dir(&self, recipe: &str, arch: Arch) -> PathBuf {
        self.root.join("blobs").join(recipe).join(arch.as_str())
    }

    /// The default OCI layout directory of `recipe`.
    pub fn oci_dir(&self, recipe: &str) -> PathBuf {
        self.root.join("oci").join(recipe)
    }

    /// Takes the recipe's lock, waiting for another build to finish.
    pub fn lock(&self, recipe: &str) -> Result<Flock<File>, ImageError> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir).map_err(ImageError::io("create the lock directory", &dir))?;
        let path = dir.join(format!("{recipe}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("open the lock file", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, source)| ImageError::Lock { path, source })
    }

    /// The metadata of a finished build, if there is one and it is readable.
    pub fn load_meta(&self, recipe: &str, arch: Arch) -> Result<Option<BuiltArch>, ImageError> {
        let path = self.meta_path(recipe, arch);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("read cache metadata", &path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ImageError::Metadata { path, source })
    }

    /// A finished build with content key `key`, with all its files present.
    pub fn hit(
        &self,
        recipe: &Recipe,
        arch: Arch,
        key: &str,
    ) -> Result<Option<BuiltArch>, ImageError> {
        let Some(meta) = self.load_meta(&recipe.name, arch)? else {
            return Ok(None);
        };
        let blobs = self.blob_dir(&recipe.name, arch);
        let complete = meta.key == key
            && self.rootfs_dir(&recipe.name, arch).join("usr").is_dir()
            && ["layer.tar.gz", "config.json", "manifest.json"]
                .iter()
                .all(|f| blobs.join(f).is_file());
        Ok(complete.then_some(meta))
    }

    /// Writes the metadata last, so that a build cut short is never a hit.
    pub fn store_meta(&self, meta: &BuiltArch) -> Result<(), ImageError> {
        let path = self.meta_path(&meta.recipe, meta.arch);
        let json = serde_json::to_vec_pretty(meta).map_err(|source| ImageError::Metadata {
            path: path.clone(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(ImageError::io("write cache metadata", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ImageError::io("write cache metadata", &path))
    }

    /// Every finished build in the cache, sorted by recipe and arch.
    pub fn list(&self) -> Result<Vec<BuiltArch>, ImageError> {
        let dir = self.root.join("rootfs");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ImageError::io("list the cache", &dir)(e)),
        };
        for entry in entries.flatten() {
            let Some(recipe) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            for arch in Arch::ALL {
                if let Some(meta) = self.load_meta(&recipe, arch)? {
                    out.push(meta);
                }
            }
        }
        out.sort_by(|a, b| (&a.recipe, a.arch).cmp(&(&b.recipe, b.arch)));
        Ok(out)
    }
}

/// The content key of a recipe for one architecture: a sha256 over the
/// builder version, the recipe file's bytes, the architecture and the
/// `name=version` lines of the packages the build installs (sorted here, so
/// their order does not matter). Nothing date-dependent goes in, so an
/// unchanged recipe on an unchanged mirror always hits.
pub fn content_key(recipe: &Recipe, arch: Arch, packages: &[String]) -> String {
    let mut sorted: Vec<&str> = packages.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let packages = sorted.join("\n");
    let mut h = Sha256::new();
    for part in [
        BUILDER_VERSION.as_bytes(),
        &recipe.bytes,
        arch.as_str().as_bytes(),
        packages.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex(&h.finalize())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(text: &str) -> Recipe {
        let text = format!(
            "[image]\ntitle = \"t\"\nversion = \"1\"\n[debian]\nsuite = \"bookworm\"\n\
             mirror = \"http://deb.debian.org/debian\"\npackages = [\"python3\"{text}]\n"
        );
        Recipe::parse("r", Path::new("r/recipe.toml"), text.into_bytes()).unwrap()
    }

    fn pkgs(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn key_depends_on_recipe_bytes_arch_and_package_versions() {
        let a = recipe("");
        let p = pkgs(&["libc6=2.36-9", "python3.11=3.11.2-6"]);
        let key = content_key(&a, Arch::Amd64, &p);
        assert_eq!(key, content_key(&a.clone(), Arch::Amd64, &p));
        assert_ne!(key, content_key(&a, Arch::Arm64, &p));
        assert_ne!(
            key,
            content_key(&recipe(", \"python3-numpy\""), Arch::Amd64, &p)
        );
        // Any version change changes the key; so does a package more or less.
        let bumped = pkgs(&["libc6=2.36-9+deb12u1", "python3.11=3.11.2-6"]);
        assert_ne!(key, content_key(&a, Arch::Amd64, &bumped));
        assert_ne!(key, content_key(&a, Arch::Amd64, &p[..1]));
        assert_ne!(key, content_key(&a, Arch::Amd64, &[]));
    }

    #[test]
    fn key_ignores_the_order_of_package_lines() {
        let a = recipe("");
        let p = pkgs(&["python3.11=3.11.2-6", "libc6=2.36-9", "zlib1g=1:1.2.13"]);
        let mut reversed = p.clone();
        reversed.reverse();
        assert_eq!(
            content_key(&a, Arch::Amd64, &p),
            content_key(&a, Arch::Amd64, &reversed)
        );
    }

    #[test]
    fn missing_or_stale_entries_are_not_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let r = recipe("");
        let key = content_key(&r, Arch::Amd64, &[]);
        assert!(cache.hit(&r, Arch::Amd64, &key).unwrap().is_none());
        let meta = BuiltArch {
            recipe: "r".into(),
            arch: Arch::Amd64,
            key: content_key(&r, Arch::Amd64, &[]),
            layer_digest: String::new(),
            layer_size: 0,
            diff_id: String::new(),
            config_digest: String::new(),
            manifest_digest: String::new(),
            manifest_size: 0,
            rootfs_bytes: 0,
            packages: vec![],
            resolved: vec![],
            created: String::new(),
            build_secs: 0.0,
        };
        std::fs::create_dir_all(cache.rootfs_dir("r", Arch::Amd64).join("usr")).unwrap();
        let blobs = cache.blob_dir("r", Arch::Amd64);
        std::fs::create_dir_all(&blobs).unwrap();
        for f in ["layer.tar.gz", "config.json", "manifest.json"] {
            std::fs::write(blobs.join(f), b"x").unwrap();
        }
        cache.store_meta(&meta).unwrap();
        assert_eq!(
            cache.hit(&r, Arch::Amd64, &key).unwrap(),
            Some(meta.clone())
        );
        let other = content_key(&r, Arch::Amd64, &["a=1".into()]);
        assert!(cache.hit(&r, Arch::Amd64, &other).unwrap().is_none());
        std::fs::remove_file(blobs.join("layer.tar.gz")).unwrap();
        assert!(cache.hit(&r, Arch::Amd64, &key).unwrap().is_none());
        assert_eq!(cache.list().unwrap(), vec![meta.clone()]);

        assert_eq!(meta.python_version(), None);
        let with_python = BuiltArch {
            packages: pkgs(&["python3-minimal=3.11.2-1+b1", "python3=1:3.11.2-1+b1"]),
            ..meta
        };
        assert_eq!(with_python.python_version().as_deref(), Some("3.11.2"));
    }
}
