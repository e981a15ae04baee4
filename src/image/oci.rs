//! OCI documents for a built rootfs: the image config (architecture, user,
//! labels), the manifest, the multi-arch index and the OCI image layout on
//! disk; and the `docker save` form of one arch that Docker can load.
//! Pure functions over bytes and paths; no tool is run here.

use super::cache::BuiltArch;
use super::error::ImageError;
use super::layer::{Layer, digest_of};
use super::recipe::Recipe;
use super::rootfs::SANDBOX_ID;
use crate::Arch;
use oci_spec::image as oci;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr as _;

/// Label with the content key of the recipe the image was built from.
pub const RECIPE_HASH_LABEL: &str = "dev.pyward.recipe-hash";

fn oci_err(step: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> ImageError {
    move |source| ImageError::Oci { step, source }
}

fn builder_err<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> ImageError {
    move |e| ImageError::Oci {
        step,
        source: oci_spec::OciSpecError::Other(e.to_string()),
    }
}

fn oci_arch(arch: Arch) -> oci::Arch {
    match arch {
        Arch::Amd64 => oci::Arch::Amd64,
        Arch::Arm64 => oci::Arch::ARM64,
    }
}

/// `linux/arm64/v8` carries a variant; `linux/amd64` does not.
fn variant(arch: Arch) -> Option<String> {
    (arch == Arch::Arm64).then(|| "v8".to_owned())
}

/// The labels every pyward image carries.
pub fn labels(recipe: &Recipe, key: &str, created: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            "org.opencontainers.image.title".into(),
            recipe.title.clone(),
        ),
        (
            "org.opencontainers.image.version".into(),
            recipe.version.clone(),
        ),
        (
            "org.opencontainers.image.created".into(),
            created.to_owned(),
        ),
        (
            "org.opencontainers.image.source".into(),
            recipe.source.clone(),
        ),
        (
            "org.opencontainers.image.description".into(),
            recipe.description.clone(),
        ),
        (RECIPE_HASH_LABEL.into(), key.to_owned()),
    ])
}

/// The image config: one layer, runs `python3` as the sandbox user.
pub fn config_json(
    recipe: &Recipe,
    arch: Arch,
    key: &str,
    layer: &Layer,
    created: &str,
) -> Result<Vec<u8>, ImageError> {
    let step = "build the image config";
    let config = oci::ConfigBuilder::default()
        .user(format!("{SANDBOX_ID}:{SANDBOX_ID}"))
        .env(vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            "LANG=C.UTF-8".to_owned(),
            "PYTHONDONTWRITEBYTECODE=1".to_owned(),
        ])
        .cmd(vec!["python3".to_owned()])
        .working_dir("/tmp")
        .labels(labels(recipe, key, created))
        .build()
        .map_err(builder_err(step))?;
    let mut image = oci::ImageConfigurationBuilder::default()
        .created(created.to_owned())
        .architecture(oci_arch(arch))
        .os(oci::Os::Linux)
        .config(config)
        .rootfs(
            oci::RootFsBuilder::default()
                .diff_ids(vec![layer.diff_id.clone()])
                .build()
                .map_err(builder_err(step))?,
        )
        .history(vec![
            oci::HistoryBuilder::default()
                .created(created.to_owned())
                .created_by(format!(
                    "pyward image build {} (mmdebstrap {})",
                    recipe.name, recipe.suite
                ))
                .build()
                .map_err(builder_err(step))?,
        ])
        .build()
        .map_err(builder_err(step))?;
    image.set_variant(variant(arch));
    image
        .to_string()
        .map(String::into_bytes)
        .map_err(oci_err(step))
}

fn descriptor(
    media: oci::MediaType,
    size: u64,
    digest: &str,
) -> Result<oci::Descriptor, ImageError> {
    let digest = oci::Digest::from_str(digest).map_err(oci_err("parse a digest"))?;
    Ok(oci::Descriptor::new(media, size, digest))
}

/// The image manifest of one arch.
pub fn manifest_json(config: &[u8], layer: &Layer) -> Result<Vec<u8>, ImageError> {
    let step = "build the image manifest";
    let manifest = oci::ImageManifestBuilder::default()
        .schema_version(oci::SCHEMA_VERSION)
        .media_type(oci::MediaType::ImageManifest)
        .config(descriptor(
            oci::MediaType::ImageConfig,
            config.len() as u64,
            &digest_of(config),
        )?)
        .layers(vec![descriptor(
            oci::MediaType::ImageLayerGzip,
            layer.size,
            &layer.digest,
        )?])
        .build()
        .map_err(builder_err(step))?;
    manifest
        .to_string()
        .map(String::into_bytes)
        .map_err(oci_err(step))
}

fn write_blob(layout: &Path, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let path = blob_path(layout, digest);
    std::fs::write(&path, bytes).map_err(ImageError::io("write an OCI blob", &path))
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Writes an OCI image layout to `layout` holding one multi-arch image:
/// `index.json` points at an image index (tagged with the recipe's version)
/// whose manifests are the given arches, each read from its blob dir.
pub fn write_layout(
    layout: &Path,
    recipe: &Recipe,
    arches: &[(BuiltArch, std::path::PathBuf)],
) -> Result<(), ImageError> {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(ImageError::io("create the OCI layout", &blobs))?;
    let mut manifests = Vec::new();
    for (built, blob_dir) in arches {
        let layer_src = blob_dir.join("layer.tar.gz");
        let layer_dst = blob_path(layout, &built.layer_digest);
        if !layer_dst.exists() {
            // A hard link when the layout is on the cache's filesystem, else a copy.
            if std::fs::hard_link(&layer_src, &layer_dst).is_err() {
                std::fs::copy(&layer_src, &layer_dst).map_err(ImageError::io(
                    "copy the layer into the OCI layout",
                    &layer_dst,
                ))?;
            }
        }
        for (file, digest) in [
            ("config.json", &built.config_digest),
            ("manifest.json", &built.manifest_digest),
        ] {
            let src = blob_dir.join(file);
            let bytes = std::fs::read(&src).map_err(ImageError::io("read a cached blob", &src))?;
            write_blob(layout, digest, &bytes)?;
        }
        let mut d = descriptor(
            oci::MediaType::ImageManifest,
            built.manifest_size,
            &built.manifest_digest,
        )?;
        let mut platform = oci::PlatformBuilder::default()
            .architecture(oci_arch(built.arch))
            .os(oci::Os::Linux)
            .build()
            .map_err(builder_err("build a platform"))?;
        platform.set_variant(variant(built.arch));
        d.set_platform(Some(platform));
        manifests.push(d);
    }
    let step = "build the image index";
    let index = oci::ImageIndexBuilder::default()
        .schema_version(oci::SCHEMA_VERSION)
        .media_type(oci::MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(builder_err(step))?
        .to_string()
        .map_err(oci_err(step))?
        .into_bytes();
    let index_digest = digest_of(&index);
    write_blob(layout, &index_digest, &index)?;
    let mut top = descriptor(
        oci::MediaType::ImageIndex,
        index.len() as u64,
        &index_digest,
    )?;
    top.set_annotations(Some(HashMap::from([(
        oci::ANNOTATION_REF_NAME.to_owned(),
        recipe.version.clone(),
    )])));
    let top_index = oci::ImageIndexBuilder::default()
        .schema_version(oci::SCHEMA_VERSION)
        .media_type(oci::MediaType::ImageIndex)
        .manifests(vec![top])
        .build()
        .map_err(builder_err(step))?;
    let oci_layout = oci::OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(builder_err("build oci-layout"))?;
    oci_layout
        .to_file(layout.join("oci-layout"))
        .map_err(oci_err("write oci-layout"))?;
    top_index
        .to_file(layout.join("index.json"))
        .map_err(oci_err("write index.json"))
}

/// One arch in `docker save` format, which `POST /images/load` takes: the
/// same config bytes as the OCI layout (so Docker's image id is the config
/// digest) and the gzip'd layer, which Docker decompresses on load.
pub fn docker_archive(
    blob_dir: &Path,
    built: &BuiltArch,
    tags: &[String],
) -> Result<Vec<u8>, ImageError> {
    let config_path = blob_dir.join("config.json");
    let layer_path = blob_dir.join("layer.tar.gz");
    let config =
        std::fs::read(&config_path).map_err(ImageError::io("read a cached blob", &config_path))?;
    let config_name = format!("{}.json", built.config_digest.trim_start_matches("sha256:"));
    let layer_name = format!(
        "{}/layer.tar",
        built.layer_digest.trim_start_matches("sha256:")
    );
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": [layer_name],
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(|source| ImageError::Metadata {
        path: blob_dir.join("manifest.json"),
        source,
    })?;
    let mut tar = tar::Builder::new(Vec::new());
    let io_err = ImageError::io("build the docker load archive", blob_dir);
    (|| -> std::io::Result<()> {
        append_bytes(&mut tar, "manifest.json", &manifest)?;
        append_bytes(&mut tar, &config_name, &config)?;
        tar.append_path_with_name(&layer_path, &layer_name)?;
        Ok(())
    })()
    .map_err(io_err)?;
    tar.into_inner()
        .map_err(ImageError::io("build the docker load archive", blob_dir))
}

fn append_bytes(tar: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}
