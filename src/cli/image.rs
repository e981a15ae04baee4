//! `pyward image build|ls|rm`: build multi-arch Python images from the
//! recipes under images/, list the cache, remove builds. The work is in the
//! library's image module; this file parses flags and prints.

use super::{CliError, exit};
use pyward::{Arch, BuildOptions, ImageCache, ImageError, Recipe, ResolutionSource};
use std::path::PathBuf;

/// Flags shared by every `image` subcommand.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image cache (rootfs per arch, layers, OCI layouts).
    #[arg(long, global = true, value_name = "DIR", default_value = pyward::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Do not talk to Docker (build: do not load; ls: do not check tags; rm: keep tags).
    #[arg(long, global = true)]
    no_docker: bool,
    #[command(subcommand)]
    command: ImageCommand,
}

/// `pyward image …`
#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    /// Build a recipe's rootfs per architecture, load it into Docker, write an OCI layout.
    Build {
        /// A recipe name under --images-dir, a recipe folder, or a recipe.toml path.
        #[arg(value_name = "RECIPE")]
        recipe: String,
        /// Architectures to build, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "amd64,arm64")]
        arch: Vec<Arch>,
        /// Where to look up recipe names.
        #[arg(long, value_name = "DIR", default_value = "images")]
        images_dir: PathBuf,
        /// Where to write the OCI image layout (default: <cache>/oci/<recipe>).
        #[arg(long, value_name = "DIR")]
        oci_dir: Option<PathBuf>,
        /// The mmdebstrap to run.
        #[arg(long, value_name = "PATH", default_value = "mmdebstrap")]
        mmdebstrap: PathBuf,
        /// Ask the mirror for the package versions now (mmdebstrap --simulate,
        /// a few seconds per arch) instead of reusing a resolution younger
        /// than 24 h; a changed version means a rebuild.
        #[arg(long)]
        refresh: bool,
    },
    /// List cached builds: recipe, arch, content hash, size, Docker tag.
    Ls,
    /// Remove a recipe's cached builds (all arches, or one) and its Docker tags.
    Rm {
        /// The recipe name.
        name: String,
        /// Only this architecture.
        #[arg(long)]
        arch: Option<Arch>,
    },
}

/// Runs an `image` subcommand; returns the exit code.
pub fn run(args: &ImageArgs) -> Result<u8, CliError> {
    let cache = ImageCache::new(&args.cache_dir);
    match &args.command {
        ImageCommand::Build {
            recipe,
            arch,
            images_dir,
            oci_dir,
            mmdebstrap,
            refresh,
        } => {
            let recipe = Recipe::resolve(recipe, images_dir)?;
            let mut opts = BuildOptions::new(cache);
            opts.archs = dedup(arch);
            opts.oci_dir = oci_dir.clone();
            opts.docker = !args.no_docker;
            opts.mmdebstrap = mmdebstrap.clone();
            opts.refresh = *refresh;
            let report = pyward::build_image(&recipe, &opts)?;
            for a in &report.archs {
                let how = if a.cache_hit {
                    let versions = match a.resolution {
                        ResolutionSource::Cached => "package versions resolved earlier",
                        ResolutionSource::Resolved => "package versions just resolved",
                        ResolutionSource::Stale => "mirror unreachable, last resolution",
                    };
                    format!("cached ({versions})")
                } else {
                    format!("built in {:.0}s", a.built.build_secs)
                };
                println!(
                    "{} {}: {how}; rootfs {}; {}",
                    recipe.name,
                    a.built.arch,
                    a.rootfs.display(),
                    if a.docker_tags.is_empty() {
                        "not loaded into Docker".to_owned()
                    } else {
                        format!("docker {}", a.docker_tags.join(" "))
                    }
                );
            }
            println!("OCI layout: {}", report.oci_dir.display());
        }
        ImageCommand::Ls => {
            let entries = pyward::list_images(&cache, !args.no_docker)?;
            println!(
                "{:<28} {:<6} {:<12} {:>9} {:>9}  DOCKER",
                "RECIPE", "ARCH", "HASH", "ROOTFS", "LAYER"
            );
            for e in entries {
                let b = &e.built;
                let docker = match e.docker_tag {
                    Some(true) => format!("{}:{}", pyward::docker_repository(&b.recipe), b.arch),
                    Some(false) => "no".to_owned(),
                    None => "?".to_owned(),
                };
                println!(
                    "{:<28} {:<6} {:<12} {:>9} {:>9}  {docker}",
                    b.recipe,
                    b.arch.as_str(),
                    &b.key[..12],
                    mib(b.rootfs_bytes),
                    mib(b.layer_size)
                );
            }
        }
        ImageCommand::Rm { name, arch } => {
            let removed = pyward::remove_image(&cache, name, *arch, !args.no_docker)?;
            for a in removed {
                println!("removed {name} {a}");
            }
        }
    }
    Ok(exit::OK)
}

fn dedup(archs: &[Arch]) -> Vec<Arch> {
    let mut out: Vec<Arch> = Vec::new();
    for &a in archs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Usage errors (bad recipe) exit 2; the rest (tools, Docker, I/O) exit 5.
pub fn exit_code(err: &ImageError) -> u8 {
    match err {
        ImageError::RecipeNotFound { .. }
        | ImageError::ReadRecipe { .. }
        | ImageError::ParseRecipe { .. }
        | ImageError::InvalidRecipe { .. }
        | ImageError::NotCached { .. } => exit::USAGE,
        _ => exit::SANDBOX_ERROR,
    }
}
