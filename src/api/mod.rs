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

pub use config::{ConfigError, RuntimeKind, ServeConfig};

use crate::executor::Executor;
use crate::executor::admission::Admission;
use crate::executor::jobs::JobQueue;
use crate::executor::metrics::Metrics;
use crate::executor::store::{JobStore, StoreError};
use crate::policy::{PolicyError, SandboxPolicy};
use crate::runtime::Runtime;
use crate::runtime::docker::{DockerConfig, DockerError, DockerRuntime};
use crate::runtime::native::{NativeConfig, NativeError, NativeRuntime};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use grpc::ServedImage;
use handlers::AppState;
use std::collections::BTreeMap;
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
    // The runtime is set up before any async thread exists.
    let (runtime, image): (Box<dyn Runtime>, ServedImage) = match config.runtime {
        RuntimeKind::Native => {
            let native = NativeConfig::default();
            let image = ServedImage::native(&native);
            (Box::new(NativeRuntime::new(native)?), image)
        }
        RuntimeKind::Docker => {
            let docker = DockerConfig::default();
            let image = ServedImage::docker(&docker);
            (Box::new(DockerRuntime::new(docker)?), image)
        }
    };
    let policies = load_policies(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::AsyncRuntime)?;
    let result = rt.block_on(serve_async(
        config,
        Executor::new(runtime),
        policies,
        vec![image],
    ));
    // Runs still going after the grace period are abandoned (their sandboxes
    // die with the process) and re-queued at the next start.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
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

fn router(state: Arc<AppState>, images: Vec<ServedImage>, max_body: usize) -> Router {
    let grpc = grpc::service(state.clone(), images, max_body);
    Router::new()
        .route("/v1/runs", post(handlers::post_run))
        .route("/v1/jobs", post(handlers::post_job))
        .route(
            "/v1/jobs/{id}",
            get(handlers::get_job).delete(handlers::delete_job),
        )
        .route("/v1/jobs/{id}/events", get(handlers::job_events))
        .route("/v1/policies", get(handlers::policies))
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
    images: Vec<ServedImage>,
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
    let queue = Arc::new(JobQueue {
        store,
        admission: admission.clone(),
        executor: Arc::new(executor),
        metrics: Arc::new(Metrics::default()),
        events: broadcast::channel(1024).0,
        wake: Notify::new(),
        prepare: handlers::prepare(policies.clone(), admission),
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
    axum::serve(listener, router(state, images, config.max_body))
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
