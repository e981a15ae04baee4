//! The build of one recipe, step by step: take the recipe's lock, reuse
//! every arch the cache already has, build the others in parallel, write
//! the OCI layout, load into Docker. Also listing and removal.

use super::cache::{BuiltArch, Cache, content_key};
use super::docker::{DockerClient, tags};
use super::error::ImageError;
use super::layer::{digest_of, tree_size, write_layer};
use super::oci::{config_json, manifest_json, write_layout};
use super::progress::{Progress, Step};
use super::recipe::Recipe;
use super::resolve::{self, DEFAULT_RESOLVE_TTL, ResolutionSource};
use super::rootfs;
use crate::Arch;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The cache directory.
    pub cache: Cache,
    /// Architectures to build, in order.
    pub archs: Vec<Arch>,
    /// Where to write the OCI layout; `<cache>/oci/<recipe>` when `None`.
    pub oci_dir: Option<PathBuf>,
    /// Load the images into Docker.
    pub docker: bool,
    /// The mmdebstrap to run (a name on `$PATH` or a path).
    pub mmdebstrap: PathBuf,
    /// How long a package resolution is reused without asking the mirror.
    pub resolve_ttl: Duration,
    /// Ask the mirror again even within `resolve_ttl`.
    pub refresh: bool,
}

impl BuildOptions {
    /// Both arches, the default cache, Docker on.
    pub fn new(cache: Cache) -> BuildOptions {
        BuildOptions {
            cache,
            archs: Arch::ALL.to_vec(),
            oci_dir: None,
            docker: true,
            mmdebstrap: "mmdebstrap".into(),
            resolve_ttl: DEFAULT_RESOLVE_TTL,
            refresh: false,
        }
    }
}

/// What a build produced for one arch.
#[derive(Debug, Clone)]
pub struct ArchReport {
    /// The cached build.
    pub built: BuiltArch,
    /// True when nothing was built: the cache had this exact recipe and package set.
    pub cache_hit: bool,
    /// Where the package versions in the key came from.
    pub resolution: ResolutionSource,
    /// The rootfs directory.
    pub rootfs: PathBuf,
    /// Docker tags, when loaded.
    pub docker_tags: Vec<String>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// One entry per requested arch, in order.
    pub archs: Vec<ArchReport>,
    /// The OCI layout directory.
    pub oci_dir: PathBuf,
}

/// Builds `recipe` for `opts.archs` (or reuses the cache), writes the OCI
/// layout and, unless disabled, loads each arch into Docker.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<BuildReport, ImageError> {
    let cache = &opts.cache;
    let _lock = cache.lock(&recipe.name)?;
    let progress = Progress::new();
    let mut done: Vec<(Arch, BuiltArch, bool)> = Vec::new();
    let mut sources = Vec::new();
    let mut missing = Vec::new();
    for &arch in &opts.archs {
        let (packages, source) = resolve::resolve(
            cache,
            &opts.mmdebstrap,
            recipe,
            arch,
            opts.resolve_ttl,
            opts.refresh,
        )?;
        sources.push((arch, source));
        let key = content_key(recipe, arch, &packages);
        match cache.hit(recipe, arch, &key)? {
            Some(meta) => done.push((arch, meta, true)),
            None => missing.push((arch, packages)),
        }
    }
    if !missing.is_empty() {
        let archs: Vec<Arch> = missing.iter().map(|(arch, _)| *arch).collect();
        rootfs::check_tools(&opts.mmdebstrap, &archs)?;
        let results: Vec<Result<BuiltArch, ImageError>> = std::thread::scope(|s| {
            let handles: Vec<_> = missing
                .iter()
                .map(|(arch, resolved)| {
                    let arch = *arch;
                    let step = progress.start(format!("{}/{arch}", recipe.name));
                    s.spawn(move || build_arch(recipe, arch, resolved, opts, &step))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (arch, result) in archs.iter().zip(results) {
            done.push((*arch, result?, false));
        }
    }
    done.sort_by_key(|(arch, ..)| opts.archs.iter().position(|a| a == arch));
    for (arch, meta, hit) in &done {
        if *hit {
            progress
                .start(format!("{}/{arch}", recipe.name))
                .finish(&format!("cached ({})", &meta.key[..12]));
        }
    }

    let oci_dir = opts
        .oci_dir
        .clone()
        .unwrap_or_else(|| cache.oci_dir(&recipe.name));
    let with_blobs: Vec<(BuiltArch, PathBuf)> = done
        .iter()
        .map(|(arch, meta, _)| (meta.clone(), cache.blob_dir(&recipe.name, *arch)))
        .collect();
    write_layout(&oci_dir, recipe, &with_blobs)?;

    let mut archs: Vec<ArchReport> = done
        .into_iter()
        .map(|(arch, built, cache_hit)| ArchReport {
            rootfs: cache.rootfs_dir(&recipe.name, arch),
            built,
            cache_hit,
            resolution: sources
                .iter()
                .find(|(a, _)| *a == arch)
                .map_or(ResolutionSource::Resolved, |(_, s)| *s),
            docker_tags: Vec::new(),
        })
        .collect();
    if opts.docker {
        let rootfs: Vec<String> = archs
            .iter()
            .map(|a| a.rootfs.display().to_string())
            .collect();
        let built = format!(
            "the rootfs ({}) and the OCI layout ({}) were built and kept",
            rootfs.join(", "),
            oci_dir.display()
        );
        let client = DockerClient::connect(&built)?;
        for a in &mut archs {
            let tags = tags(&a.built);
            // Docker's image id is the config's digest: both tags must name
            // exactly this build (another build of the same recipe, or anything
            // else, may have taken a tag since).
            let expected = Some(a.built.config_digest.clone());
            if client.id(&tags[1])? != expected || client.id(&tags[0])? != expected {
                let step = progress.start(format!("{}/{}", recipe.name, a.built.arch));
                step.set("loading into Docker");
                client.load(&cache.blob_dir(&recipe.name, a.built.arch), &a.built)?;
                step.finish(&format!("loaded as {}", tags[0]));
            }
            a.docker_tags = tags.to_vec();
        }
    }
    Ok(BuildReport { archs, oci_dir })
}

/// mmdebstrap, harden, layer, config, manifest, metadata: one arch, from
/// nothing. Keyed by what was installed, which is `resolved` unless the
/// mirror changed since the resolution.
fn build_arch(
    recipe: &Recipe,
    arch: Arch,
    resolved: &[String],
    opts: &BuildOptions,
    step: &Step,
) -> Result<BuiltArch, ImageError> {
    let cache = &opts.cache;
    let final_dir = cache.rootfs_dir(&recipe.name, arch);
    let parent = final_dir.parent().unwrap_or(cache.root()).to_path_buf();
    fs::create_dir_all(&parent).map_err(ImageError::io("create the rootfs directory", &parent))?;
    let tmp = parent.join(format!("{arch}.tmp"));
    remove_if_exists(&tmp)?;
    let log = parent.join(format!("{arch}.log"));

    step.set(&format!(
        "mmdebstrap {} ({})",
        recipe.suite,
        recipe.packages.join(" ")
    ));
    rootfs::mmdebstrap(&opts.mmdebstrap, recipe, arch, &tmp, &log)?;
    step.set("hardening");
    let packages = rootfs::installed_packages(&tmp)?;
    if packages != resolved {
        step.set("the mirror changed during the build; keyed by what was installed");
        // The next build within the TTL must find this build.
        resolve::store(cache, recipe, arch, &packages)?;
    }
    let key = content_key(recipe, arch, &packages);
    rootfs::harden(&tmp, &recipe.hardening, &packages)?;

    step.set("writing the layer");
    let blobs = cache.blob_dir(&recipe.name, arch);
    remove_if_exists(&blobs)?;
    fs::create_dir_all(&blobs).map_err(ImageError::io("create the blob directory", &blobs))?;
    let layer = write_layer(&tmp, &blobs.join("layer.tar.gz"))?;
    let created = now_rfc3339();
    let config = config_json(recipe, arch, &key, &layer, &created)?;
    let manifest = manifest_json(&config, &layer)?;
    for (name, bytes) in [("config.json", &config), ("manifest.json", &manifest)] {
        let path = blobs.join(name);
        fs::write(&path, bytes).map_err(ImageError::io("write a blob", &path))?;
    }
    remove_if_exists(&final_dir)?;
    fs::rename(&tmp, &final_dir)
        .map_err(ImageError::io("move the rootfs into place", &final_dir))?;
    let meta = BuiltArch {
        recipe: recipe.name.clone(),
        arch,
        key,
        layer_digest: layer.digest,
        layer_size: layer.size,
        diff_id: layer.diff_id,
        config_digest: digest_of(&config),
        manifest_digest: digest_of(&manifest),
        manifest_size: manifest.len() as u64,
        rootfs_bytes: tree_size(&final_dir),
        packages,
        resolved: resolved.to_vec(),
        created,
        build_secs: step.elapsed(),
    };
    cache.store_meta(&meta)?;
    step.finish(&format!("built in {:.0}s", meta.build_secs));
    Ok(meta)
}

fn remove_if_exists(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ImageError::io("remove an old build", path)(e))
        }
        _ => Ok(()),
    }
}

/// One row of `pyward image ls`.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// The cached build.
    pub built: BuiltArch,
    /// Whether Docker has the `pyward/<recipe>:<arch>` tag; `None` when Docker is unreachable.
    pub docker_tag: Option<bool>,
}

/// Every cached build, with whether Docker has its tag (when `docker`).
pub fn list(cache: &Cache, docker: bool) -> Result<Vec<ImageEntry>, ImageError> {
    let client = if docker {
        DockerClient::connect("nothing was changed").ok()
    } else {
        None
    };
    cache
        .list()?
        .into_iter()
        .map(|built| {
            let docker_tag = match &client {
                Some(c) => Some(c.architecture(&tags(&built)[0])?.is_some()),
                None => None,
            };
            Ok(ImageEntry { built, docker_tag })
        })
        .collect()
}

/// Removes the cached builds of `name` (one arch or all), their Docker tags
/// (when `docker`), and the default OCI layout (the next build writes it anew).
pub fn remove(
    cache: &Cache,
    name: &str,
    arch: Option<Arch>,
    docker: bool,
) -> Result<Vec<Arch>, ImageError> {
    let _lock = cache.lock(name)?;
    let targets: Vec<Arch> = match arch {
        Some(a) => vec![a],
        None => Arch::ALL.to_vec(),
    };
    let present: Vec<(Arch, Option<BuiltArch>)> = targets
        .into_iter()
        .map(|a| Ok((a, cache.load_meta(name, a)?)))
        .collect::<Result<Vec<_>, ImageError>>()?
        .into_iter()
        .filter(|(a, meta)| meta.is_some() || cache.rootfs_dir(name, *a).exists())
        .collect();
    if present.is_empty() {
        return Err(ImageError::NotCached {
            name: name.to_owned(),
            arch,
        });
    }
    let client = if docker {
        Some(DockerClient::connect("nothing was removed yet")?)
    } else {
        None
    };
    for (a, meta) in &present {
        if let Some(c) = &client {
            c.remove_tags(name, *a, meta.as_ref().map(|m| m.key.as_str()))?;
        }
        let meta_path = cache.meta_path(name, *a);
        if meta_path.exists() {
            fs::remove_file(&meta_path)
                .map_err(ImageError::io("remove cache metadata", &meta_path))?;
        }
        remove_if_exists(&cache.rootfs_dir(name, *a))?;
        remove_if_exists(&cache.blob_dir(name, *a))?;
    }
    // The layout's index would name a removed arch; it goes with it.
    remove_if_exists(&cache.oci_dir(name))?;
    Ok(present.into_iter().map(|(a, _)| a).collect())
}

/// `SOURCE_DATE_EPOCH` if set (reproducible builds), else now, as RFC 3339 UTC.
fn now_rfc3339() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    rfc3339(secs)
}

/// Unix seconds to `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil_from_days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_114_393), "2025-11-25T23:46:33Z");
    }
}
