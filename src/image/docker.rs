//! Loading built images into Docker through bollard, and asking which tags
//! exist. Never pulls: only `/images/load`, inspect and remove are used.

use super::cache::BuiltArch;
use super::error::ImageError;
use super::oci::docker_archive;
use crate::Arch;
use bollard::Docker;
use futures_util::StreamExt as _;
use std::path::Path;

/// The tags a built arch gets: `pyward/<recipe>:<arch>` and
/// `pyward/<recipe>:<arch>-<first 12 hex of the content key>`.
pub fn tags(built: &BuiltArch) -> [String; 2] {
    let repo = repository(&built.recipe);
    [
        format!("{repo}:{}", built.arch),
        format!("{repo}:{}-{}", built.arch, &built.key[..12]),
    ]
}

/// `pyward/<recipe>`.
pub fn repository(recipe: &str) -> String {
    format!("pyward/{recipe}")
}

/// A connection to the local Docker daemon with a runtime to drive it.
pub struct DockerClient {
    rt: tokio::runtime::Runtime,
    docker: Docker,
}

impl DockerClient {
    /// Connects (DOCKER_HOST or the local socket) and pings the daemon;
    /// `built` says what was already done, for the error message.
    pub fn connect(built: &str) -> Result<DockerClient, ImageError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ImageError::AsyncRuntime)?;
        let unreachable = |source| ImageError::DockerUnreachable {
            built: built.to_owned(),
            source,
        };
        let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
        rt.block_on(docker.ping()).map_err(unreachable)?;
        Ok(DockerClient { rt, docker })
    }

    /// Loads one built arch under its tags.
    pub fn load(&self, blob_dir: &Path, built: &BuiltArch) -> Result<(), ImageError> {
        let tags = tags(built);
        let archive = docker_archive(blob_dir, built, &tags)?;
        let step = || format!("load image {}", tags[0]);
        let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build();
        self.rt.block_on(async {
            let mut stream =
                self.docker
                    .import_image(options, bollard::body_full(archive.into()), None);
            while let Some(item) = stream.next().await {
                item.map_err(|source| ImageError::Docker {
                    step: step(),
                    source,
                })?;
            }
            Ok(())
        })
    }

    /// The architecture Docker records for `tag`, or `None` if there is no such image.
    pub fn architecture(&self, tag: &str) -> Result<Option<String>, ImageError> {
        Ok(self
            .inspect(tag)?
            .map(|img| img.architecture.unwrap_or_default()))
    }

    /// The image id behind `tag`, or `None` if there is no such image.
    pub fn id(&self, tag: &str) -> Result<Option<String>, ImageError> {
        Ok(self.inspect(tag)?.map(|img| img.id.unwrap_or_default()))
    }

    fn inspect(&self, tag: &str) -> Result<Option<bollard::models::ImageInspect>, ImageError> {
        match self.rt.block_on(self.docker.inspect_image(tag)) {
            Ok(img) => Ok(Some(img)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(source) => Err(ImageError::Docker {
                step: format!("inspect image {tag}"),
                source,
            }),
        }
    }

    /// Removes the tags of `recipe` for `arch` (absent ones are fine).
    pub fn remove_tags(
        &self,
        recipe: &str,
        arch: Arch,
        key: Option<&str>,
    ) -> Result<(), ImageError> {
        let repo = repository(recipe);
        let mut names = vec![format!("{repo}:{arch}")];
        if let Some(key) = key {
            names.push(format!("{repo}:{arch}-{}", &key[..12.min(key.len())]));
        }
        for name in names {
            let res = self.rt.block_on(self.docker.remove_image(
                &name,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            ));
            match res {
                Ok(_)
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(source) => {
                    return Err(ImageError::Docker {
                        step: format!("remove image {name}"),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}
