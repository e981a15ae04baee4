//! The front ends of `pyward serve`: HTTP (axum) and gRPC (tonic, in
//! `grpc`, on the same port): routes, auth, wire types and the one mapping
//! from `ApiError` to a status code.
//!
//! Builds `Submission`s and renders `Outcome`s; runs go through the
//! executor (sync runs on the blocking pool, async jobs through its store
//! and workers). Never talks to a runtime directly.

mod config;
mod error;
pub(crate) mod grpc;
mod handlers;
mod trace;
mod wire;

pub use config::{ConfigError, ImageConfig, RuntimeKind, ServeConfig};

use crate::arch::Arch;
use crate::executor::Executor;
use crate::executor::admission::Admission;
use crate::executor::images::{HOST_IMAGE, OfferedImage};
use crate::executor::jobs::JobQueue;
use crate::executor::metrics::Metrics;
use crate::executor::store::{JobStore, StoreError};
use crate::image::{Cache as ImageCache, ImageError};
use crate::policy::{PolicyError, SandboxPolicy};
use crate::runtime::Runtime;
use crate::runtime::docker::{
    DockerConfig, DockerError, DockerRuntime, DockerWarmConfig, DockerWarmRuntime,
};
use crate::runtime::native::{NativeConfig, NativeError, NativeRuntime, WarmConfig, WarmRuntime};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use handlers::AppState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A tenant's policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The native runtime is not usable on this host.
    #[error("cannot start the native runtime: {0}")]
    Native(#[from] NativeError),
    /// The Docker runtime is not usable.
    #[error("cannot start the Docker runtime: {0}")]
    Docker(#[from] DockerError),
    /// A native image's runtime could not start.
    #[error("image {image} ({arch}): cannot start the native runtime: {source}")]
    NativeImage {
        /// The image's name.
        image: String,
        /// The architecture.
        arch: Arch,
        /// Why.
        source: NativeError,
    },
    /// A Docker image's runtime could not start, or the image is not in the daemon.
    #[error("image {image} ({arch}): {source}")]
    DockerImage {
        /// The image's name.
        image: String,
        /// The architecture.
        arch: Arch,
        /// Why.
        source: DockerError,
    },
    /// A native image has no rootfs in the image cache.
    #[error(
        "image {image} is not built for {arch} (nothing in the image cache {}): \
         run `pyward image build {image} --arch {arch}`", .cache.display()
    )]
    ImageNotBuilt {
        /// The image's name.
        image: String,
        /// The architecture.
        arch: Arch,
        /// The cache looked in.
        cache: std::path::PathBuf,
    },
    /// The image cache could not be read.
    #[error("image {image}: cannot read the image cache: {source}")]
    ImageCache {
        /// The image's name.
        image: String,
        /// Why.
        source: ImageError,
    },
    /// A warm path (zygote, container pool) could not start.
    #[error(
        "image {image} ({arch}), policy {policy}: cannot start the warm path: {source} (`pyward serve --cold` runs without it)"
    )]
    Prewarm {
        /// The image's name.
        image: String,
        /// The architecture.
        arch: Arch,
        /// The policy.
        policy: String,
        /// Why.
        source: Box<crate::runtime::RunError>,
    },
    /// The job database could not be opened or recovered.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    AsyncRuntime(#[source] std::io::Error),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving or waiting for signals failed.
    #[error("server I/O: {0}")]
    Io(#[source] std::io::Error),
}

/// Runs the server until SIGTERM or SIGINT: then stops accepting, lets
/// running jobs finish for up to `shutdown_grace`, and returns. Jobs still
/// running after that are re-queued at the next start.
pub fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let policies = load_policies(&config)?;
    // The runtimes are set up before any async thread exists.
    let executor = Executor::with_images(offered_images(&config, &policies)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::AsyncRuntime)?;
    let result = rt.block_on(serve_async(config, executor, policies));
    // Runs still going after the grace period are abandoned (their sandboxes
    // die with the process) and re-queued at the next start.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// A runtime for every (image, architecture) of the configuration, each
/// checked now: a Docker image must be in the daemon (and qemu-user
/// registered for a foreign arch), a native image's rootfs in the cache.
/// What a runtime keeps warm is started now for every policy of the tenants
/// allowed the image, so that the first calls are warm too and a warm path
/// that cannot start stops the server with the reason.
fn offered_images(
    config: &ServeConfig,
    policies: &BTreeMap<String, Arc<SandboxPolicy>>,
) -> Result<Vec<OfferedImage>, ServeError> {
    let cache = ImageCache::from_env();
    let mut offered = Vec::new();
    for image in &config.images {
        let mut entry = OfferedImage::new(&image.name, python_version(image, &cache));
        let names: BTreeSet<&String> = config
            .tenants
            .iter()
            .filter(|tenant| tenant.images.contains(&image.name))
            .flat_map(|tenant| &tenant.policies)
            .collect();
        // Room for a pool per policy and four shapes of per-call limits.
        let pool = DockerWarmConfig {
            size: config.docker_warm_pool,
            max_pools: names.len() + 4,
        };
        for &arch in &image.arches {
            let runtime = image_runtime(image, arch, &cache, config.warm.as_ref(), pool)?;
            for name in &names {
                let Some(policy) = policies.get(*name) else {
                    continue;
                };
                runtime
                    .prewarm(policy)
                    .map_err(|source| ServeError::Prewarm {
                        image: image.name.clone(),
                        arch,
                        policy: (*name).clone(),
                        source: Box::new(source),
                    })?;
            }
            entry = entry.with_arch(arch, runtime);
        }
        tracing::info!(image = %image.name, runtime = image.runtime.as_str(), arches = ?image.arches, python = ?entry.python, "image offered");
        offered.push(entry);
    }
    Ok(offered)
}

/// The runtime of `image` on `arch`: native (with `warm`, its warm path),
/// or Docker (with `pool.size` above 0, its warm pool; see `docker_runtime`).
fn image_runtime(
    image: &ImageConfig,
    arch: Arch,
    cache: &ImageCache,
    warm: Option<&WarmConfig>,
    pool: DockerWarmConfig,
) -> Result<Box<dyn Runtime>, ServeError> {
    let name = &image.name;
    match image.runtime {
        RuntimeKind::Native => {
            let rootfs = if name == HOST_IMAGE {
                None
            } else {
                let built =
                    cache
                        .load_meta(name, arch)
                        .map_err(|source| ServeError::ImageCache {
                            image: name.clone(),
                            source,
                        })?;
                if built.is_none() {
                    return Err(ServeError::ImageNotBuilt {
                        image: name.clone(),
                        arch,
                        cache: cache.root().to_owned(),
                    });
                }
                Some(cache.rootfs_dir(name, arch))
            };
            let config = NativeConfig {
                rootfs,
                ..NativeConfig::default()
            };
            let native = NativeRuntime::new(config).map_err(|source| ServeError::NativeImage {
                image: name.clone(),
                arch,
                source,
            })?;
            Ok(match warm {
                Some(warm) => Box::new(WarmRuntime::new(native, warm.clone())),
                None => Box::new(native),
            })
        }
        RuntimeKind::Docker => docker_runtime(image, arch, pool),
    }
}

/// The Docker runtime of `image` on `arch`, its image checked in the
/// daemon: a warm pool of `pool.size` containers per shape, or, with 0, a
/// container created per call.
fn docker_runtime(
    image: &ImageConfig,
    arch: Arch,
    pool: DockerWarmConfig,
) -> Result<Box<dyn Runtime>, ServeError> {
    let docker_error = |source| ServeError::DockerImage {
        image: image.name.clone(),
        arch,
        source,
    };
    let config = DockerConfig::for_image(&image.name, arch);
    if pool.size == 0 {
        let docker = DockerRuntime::new(config).map_err(docker_error)?;
        docker.check_image().map_err(docker_error)?;
        return Ok(Box::new(docker));
    }
    let pooled = DockerWarmRuntime::new(config, pool).map_err(docker_error)?;
    pooled.cold().check_image().map_err(docker_error)?;
    Ok(Box::new(pooled))
}

/// The image's Python version: the host interpreter's own answer for
/// `host`, else what the image cache recorded when it was built (unknown
/// for an image loaded into Docker from elsewhere).
fn python_version(image: &ImageConfig, cache: &ImageCache) -> Option<String> {
    if image.name == HOST_IMAGE {
        let output = std::process::Command::new(NativeConfig::default().python)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        return text.trim().strip_prefix("Python ").map(str::to_owned);
    }
    let arch = *image.arches.first()?;
    cache
        .load_meta(&image.name, arch)
        .ok()
        .flatten()
        .and_then(|built| built.python_version())
}

/// Every policy a tenant names, by the name requests use.
fn load_policies(config: &ServeConfig) -> Result<BTreeMap<String, Arc<SandboxPolicy>>, ServeError> {
    let mut policies = BTreeMap::new();
    for tenant in &config.tenants {
        for name in &tenant.policies {
            if !policies.contains_key(name) {
                policies.insert(name.clone(), Arc::new(SandboxPolicy::load(name)?));
            }
        }
    }
    Ok(policies)
}

fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let grpc = grpc::service(state.clone(), max_body);
    Router::new()
        .route("/v1/runs", post(handlers::post_run))
        .route("/v1/jobs", post(handlers::post_job))
        .route(
            "/v1/jobs/{id}",
            get(handlers::get_job).delete(handlers::delete_job),
        )
        .route("/v1/jobs/{id}/events", get(handlers::job_events))
        .route("/v1/policies", get(handlers::policies))
        .route("/v1/images", get(handlers::images))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route_service(grpc::ROUTE, grpc)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(trace::layer))
        .with_state(state)
}

async fn serve_async(
    config: ServeConfig,
    executor: Executor,
    policies: BTreeMap<String, Arc<SandboxPolicy>>,
) -> Result<(), ServeError> {
    let store = JobStore::open(&config.database)?;
    let recovery = store.recover(config.max_attempts).await?;
    if recovery.requeued + recovery.failed > 0 {
        tracing::warn!(
            requeued = recovery.requeued,
            failed = recovery.failed,
            "recovered jobs a crash left running"
        );
    }
    let admission = Arc::new(Admission::new(
        config.tenants.clone(),
        config.max_running,
        config.queue_bound,
    ));
    let executor = Arc::new(executor);
    let queue = Arc::new(JobQueue {
        store,
        admission: admission.clone(),
        executor: executor.clone(),
        metrics: Arc::new(Metrics::default()),
        events: broadcast::channel(1024).0,
        wake: Notify::new(),
        prepare: handlers::prepare(policies.clone(), admission, executor),
        live: Default::default(),
    });
    let (shutdown_tx, shutdown) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    let workers = queue.spawn_workers(config.max_running, &shutdown);
    let purger = queue.spawn_purger(config.job_retention, shutdown.clone());
    let state = Arc::new(AppState {
        queue,
        policies,
        max_body: config.max_body,
        shutdown: shutdown.clone(),
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Io)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ServeError::Io)?;
    let signalled = async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("shutting down: no new requests; waiting for running jobs");
        let _ = shutdown_tx.send(true);
    };
    eprintln!(
        "pyward: listening on http://{addr}, HTTP/JSON and gRPC (auth: {})",
        if config.requires_auth() {
            "bearer tokens"
        } else {
            "none, loopback only"
        }
    );
    axum::serve(listener, router(state, config.max_body))
        .with_graceful_shutdown(signalled)
        .await
        .map_err(ServeError::Io)?;
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        for worker in workers {
            let _ = worker.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?config.shutdown_grace, "jobs still running after the grace period; they are re-queued at the next start");
    }
    purger.abort();
    Ok(())
}
