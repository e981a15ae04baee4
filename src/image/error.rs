//! Errors of the image module: each variant names the step that failed.

use crate::Arch;
use std::io;
use std::path::PathBuf;

/// Why an image could not be built, listed, loaded or removed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No recipe file found for the name or path given.
    #[error(
        "no image recipe {spec:?}: expected a name under {images_dir:?} (NAME/recipe.toml), \
         a recipe folder, or a path to a recipe.toml"
    )]
    RecipeNotFound {
        /// The name or path as given.
        spec: String,
        /// Where names are looked up.
        images_dir: PathBuf,
    },
    /// The recipe file could not be read.
    #[error("cannot read image recipe {path:?}: {source}")]
    ReadRecipe {
        /// The recipe file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The recipe is not valid TOML or has unknown or missing fields.
    #[error("image recipe {path:?}: {message}")]
    ParseRecipe {
        /// The recipe file.
        path: PathBuf,
        /// The TOML parser's message (it names the field).
        message: String,
    },
    /// A field has a value the recipe may not have.
    #[error("image recipe {path:?}: field {field}: {problem}")]
    InvalidRecipe {
        /// The recipe file.
        path: PathBuf,
        /// The field, as `table.key`.
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// A host tool the build needs is not installed.
    #[error(
        "{tool} not found (looked for {path:?}); install it with: apt-get install -y {package}"
    )]
    MissingTool {
        /// The command.
        tool: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A foreign architecture cannot run: no binfmt_misc handler for it.
    #[error(
        "cannot build for {arch}: no qemu-user binfmt_misc handler for {kernel} \
         ({handler:?} missing or disabled); run: apt-get install -y qemu-user-static binfmt-support \
         && mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-{kernel}"
    )]
    NoEmulation {
        /// The architecture asked for.
        arch: Arch,
        /// Its kernel name.
        kernel: &'static str,
        /// The binfmt_misc entry looked at.
        handler: PathBuf,
    },
    /// Building needs root (mmdebstrap's root mode, file ownership in the rootfs).
    #[error("building images needs root (mmdebstrap --mode=root); run as root")]
    NotRoot,
    /// A command could not be started.
    #[error("cannot start {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        source: io::Error,
    },
    /// mmdebstrap failed.
    #[error("mmdebstrap for {arch} failed ({status}); its output is in {log:?}")]
    Mmdebstrap {
        /// The architecture being built.
        arch: Arch,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where its output was kept.
        log: PathBuf,
    },
    /// mmdebstrap --simulate could not resolve the recipe's packages.
    #[error(
        "resolving the packages for {arch} (mmdebstrap --simulate) failed ({status}), \
         and no earlier resolution is cached; its last lines:\n{tail}"
    )]
    Resolve {
        /// The architecture being resolved.
        arch: Arch,
        /// Its exit status (success with no `Inst` lines is a failure too).
        status: std::process::ExitStatus,
        /// The last lines of its output.
        tail: String,
    },
    /// dpkg-query could not list the installed packages.
    #[error("dpkg-query on {root:?} failed ({status})")]
    DpkgQuery {
        /// The rootfs.
        root: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A file operation in a build step failed.
    #[error("{step}: {path:?}: {source}")]
    Io {
        /// The step, e.g. `strip setuid bits`.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another pyward holds the cache lock and taking it failed.
    #[error("cannot lock {path:?}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A cache metadata file is not what this version wrote.
    #[error("cache metadata {path:?} is unreadable: {source}")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// An OCI document could not be built or written.
    #[error("{step}: {source}")]
    Oci {
        /// The document being built.
        step: &'static str,
        /// oci-spec's error.
        source: oci_spec::OciSpecError,
    },
    /// The Docker daemon could not be reached.
    #[error(
        "cannot reach the Docker daemon ({source}); {built}. Start Docker, \
         or pass --no-docker to skip loading the images"
    )]
    DockerUnreachable {
        /// What was already built and kept, for the user.
        built: String,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// A Docker API call failed.
    #[error("docker: {step}: {source}")]
    Docker {
        /// The call, e.g. `load image pyward/python3.11-bookworm:arm64`.
        step: String,
        /// bollard's error.
        source: bollard::errors::Error,
    },
    /// The async runtime for Docker calls could not start.
    #[error("cannot start the async runtime for Docker calls: {0}")]
    AsyncRuntime(io::Error),
    /// Nothing cached under that name.
    #[error("no cached image {name:?}{}", arch.map(|a| format!(" for {a}")).unwrap_or_default())]
    NotCached {
        /// The recipe name.
        name: String,
        /// The architecture, if one was asked for.
        arch: Option<Arch>,
    },
}

impl ImageError {
    pub(crate) fn io(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { step, path, source }
    }
}
