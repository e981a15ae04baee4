//! The images an executor offers, and the routing of a request to one of
//! them: one runtime per (image, architecture).
//!
//! Owns the names requests use (`host`, `python3.11-bookworm`, …), each
//! image's architectures and its default one, and the checks a request's
//! `image` and `arch` go through (does it exist, may this tenant use it, does
//! it have that architecture). Every front end routes here; none picks a
//! runtime itself. Creates no runtime: the server builds them at start.

use crate::arch::Arch;
use crate::runtime::Runtime;

/// The image name of the host's own interpreter (read-only binds of the
/// host's /usr), which only the native runtime runs.
pub const HOST_IMAGE: &str = "host";

/// One image an executor offers, with a runtime per architecture.
pub struct OfferedImage {
    /// The name requests use.
    pub name: String,
    /// The interpreter's version (`3.11.2`), when known.
    pub python: Option<String>,
    runtimes: Vec<(Arch, Box<dyn Runtime>)>,
}

impl std::fmt::Debug for OfferedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedImage")
            .field("name", &self.name)
            .field("runtime", &self.runtime_name())
            .field("arches", &self.arches())
            .finish()
    }
}

impl OfferedImage {
    /// An image named `name` with no architecture yet (see [`OfferedImage::with_arch`]).
    pub fn new(name: impl Into<String>, python: Option<String>) -> OfferedImage {
        OfferedImage {
            name: name.into(),
            python,
            runtimes: Vec::new(),
        }
    }

    /// Adds the runtime that runs this image on `arch` (replacing one for the same arch).
    pub fn with_arch(mut self, arch: Arch, runtime: Box<dyn Runtime>) -> OfferedImage {
        self.runtimes.retain(|(a, _)| *a != arch);
        self.runtimes.push((arch, runtime));
        self
    }

    /// The architectures it runs on, in the order they were added.
    pub fn arches(&self) -> Vec<Arch> {
        self.runtimes.iter().map(|(arch, _)| *arch).collect()
    }

    /// The architecture used when a request names none: the host's when the
    /// image has it, else its first.
    pub fn default_arch(&self) -> Option<Arch> {
        let arches = self.arches();
        arches
            .iter()
            .copied()
            .find(|a| *a == Arch::host())
            .or_else(|| arches.first().copied())
    }

    /// The runtime's kind (`native`, `docker`), from its first architecture.
    pub fn runtime_name(&self) -> &'static str {
        self.runtimes.first().map_or("none", |(_, r)| r.kind())
    }

    /// Per architecture, the sandboxes ready for a call without a cold start
    /// (see [`Runtime::warm_ready`]).
    pub fn warm_ready(&self) -> Vec<(Arch, usize)> {
        self.runtimes
            .iter()
            .map(|(arch, runtime)| (*arch, runtime.warm_ready()))
            .collect()
    }

    fn runtime(&self, arch: Arch) -> Option<&dyn Runtime> {
        self.runtimes
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, r)| r.as_ref())
    }
}

/// Where a submission runs: an offered image and one of its architectures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The image's name.
    pub image: String,
    /// The architecture.
    pub arch: Arch,
}

/// Why a request's `image` or `arch` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No image by that name (for this tenant: its list is what it may use).
    #[error("there is no image {image:?}; this tenant may use: {}", .allowed.join(", "))]
    UnknownImage {
        /// The name asked for.
        image: String,
        /// The images the caller may use.
        allowed: Vec<String>,
    },
    /// The image exists, but the caller may not use it.
    #[error("image {image:?} is not allowed for this tenant; allowed: {}", .allowed.join(", "))]
    ImageNotAllowed {
        /// The name asked for.
        image: String,
        /// The images the caller may use.
        allowed: Vec<String>,
    },
    /// The image does not run on that architecture (or the name is not one).
    #[error("image {image:?} has no architecture {arch:?}; it runs on: {}", join_arches(.offered))]
    UnknownArch {
        /// The image.
        image: String,
        /// The architecture as asked for.
        arch: String,
        /// The architectures the image runs on.
        offered: Vec<Arch>,
    },
}

fn join_arches(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the image and architecture for a request: `image` (default: the
/// first of `allowed`) must be offered and in `allowed`; `arch` (default:
/// the image's default architecture; `x86_64` and `aarch64` are accepted
/// spellings) must be one it runs on.
pub fn route(
    offered: &[OfferedImage],
    allowed: &[String],
    image: Option<&str>,
    arch: Option<&str>,
) -> Result<Target, RouteError> {
    let (image, arch, _) = resolve(offered, allowed, image, arch)?;
    Ok(Target {
        image: image.name.clone(),
        arch,
    })
}

/// [`route`], answering with the image and the runtime of the architecture.
pub(super) fn resolve<'a>(
    offered: &'a [OfferedImage],
    allowed: &[String],
    image: Option<&str>,
    arch: Option<&str>,
) -> Result<(&'a OfferedImage, Arch, &'a dyn Runtime), RouteError> {
    let name = image.or(allowed.first().map(String::as_str)).unwrap_or("");
    let may_use = || {
        allowed
            .iter()
            .filter(|a| offered.iter().any(|o| &o.name == *a))
            .cloned()
            .collect::<Vec<_>>()
    };
    let Some(found) = offered.iter().find(|o| o.name == name) else {
        return Err(RouteError::UnknownImage {
            image: name.to_owned(),
            allowed: may_use(),
        });
    };
    if !allowed.iter().any(|a| a == name) {
        return Err(RouteError::ImageNotAllowed {
            image: name.to_owned(),
            allowed: may_use(),
        });
    }
    let unknown_arch = |arch: &str| RouteError::UnknownArch {
        image: name.to_owned(),
        arch: arch.to_owned(),
        offered: found.arches(),
    };
    let (arch, asked) = match arch {
        Some(text) => (text.parse::<Arch>().map_err(|_| unknown_arch(text))?, text),
        None => {
            let default = found.default_arch().ok_or_else(|| unknown_arch(""))?;
            (default, default.as_str())
        }
    };
    let runtime = found.runtime(arch).ok_or_else(|| unknown_arch(asked))?;
    Ok((found, arch, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SandboxPolicy;
    use crate::runtime::{Outcome, RunError, Submission};

    struct Never(&'static str);

    impl Runtime for Never {
        fn name(&self) -> &'static str {
            self.0
        }

        fn run_watched(
            &self,
            _: &SandboxPolicy,
            _: &Submission,
            _: &crate::runtime::RunWatch,
        ) -> Result<Outcome, RunError> {
            Err(RunError::InvalidSubmission("not in these tests".into()))
        }
    }

    fn offered() -> Vec<OfferedImage> {
        vec![
            OfferedImage::new("host", None).with_arch(Arch::host(), Box::new(Never("native"))),
            OfferedImage::new("py", Some("3.11.2".into()))
                .with_arch(Arch::Arm64, Box::new(Never("docker")))
                .with_arch(Arch::Amd64, Box::new(Never("docker"))),
            OfferedImage::new("arm-only", None).with_arch(Arch::Arm64, Box::new(Never("docker"))),
        ]
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_are_the_tenants_first_image_and_the_host_arch() {
        let offered = offered();
        let all = names(&["py", "host", "arm-only"]);
        assert_eq!(
            route(&offered, &all, None, None).unwrap(),
            Target {
                image: "py".into(),
                arch: Arch::host()
            }
        );
        // An image without the host's arch defaults to its first.
        let arm = route(&offered, &all, Some("arm-only"), None).unwrap();
        assert_eq!(arm.arch, Arch::Arm64);
        // Both spellings of an arch name it.
        let x86 = route(&offered, &all, Some("py"), Some("x86_64")).unwrap();
        assert_eq!(x86.arch, Arch::Amd64);
    }

    #[test]
    fn refusals_name_what_is_allowed() {
        let offered = offered();
        let tenant = names(&["host", "py"]);
        let err = route(&offered, &tenant, Some("nope"), None).unwrap_err();
        assert_eq!(
            err,
            RouteError::UnknownImage {
                image: "nope".into(),
                allowed: tenant.clone()
            }
        );
        assert!(err.to_string().contains("host, py"), "{err}");
        let err = route(&offered, &tenant, Some("arm-only"), None).unwrap_err();
        assert!(matches!(err, RouteError::ImageNotAllowed { .. }), "{err:?}");
        let err = route(&offered, &tenant, Some("py"), Some("riscv64")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image \"py\" has no architecture \"riscv64\"; it runs on: arm64, amd64"
        );
        let foreign = match Arch::host() {
            Arch::Amd64 => "arm64",
            Arch::Arm64 => "amd64",
        };
        let err = route(&offered, &tenant, Some("host"), Some(foreign)).unwrap_err();
        assert!(matches!(err, RouteError::UnknownArch { .. }), "{err:?}");
    }
}
