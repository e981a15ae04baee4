//! Images: recipes under images/ -> a hardened rootfs per architecture
//! (mmdebstrap, arm64 through qemu-user) -> one gzip'd layer -> Docker
//! images (loaded through bollard, never pulled) and an OCI image layout
//! with a multi-arch index. Everything is cached by content under one
//! directory (see `cache`; the key covers the package versions, resolved
//! without building and cached for a TTL, see `resolve`), and the rootfs directories stay there for the
//! native runtime.
//!
//! Owns the image cache and the `pyward/*` Docker tags; runs no user code
//! and touches no policy or runtime state.

mod build;
mod cache;
mod docker;
mod error;
mod layer;
mod oci;
mod progress;
mod recipe;
mod resolve;
mod rootfs;

pub use build::{ArchReport, BuildOptions, BuildReport, ImageEntry, build, list, remove};
pub use cache::{BuiltArch, Cache, DEFAULT_CACHE_DIR, content_key};
pub use docker::{repository as docker_repository, tags as docker_tags};
pub use error::ImageError;
pub use oci::RECIPE_HASH_LABEL;
pub use recipe::{Hardening, Recipe, Variant};
pub use resolve::{DEFAULT_RESOLVE_TTL, ResolutionSource, parse_simulate};
pub use rootfs::SANDBOX_ID;
