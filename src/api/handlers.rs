//! The HTTP handlers: authenticate, decode, admit, then hand the work to the
//! executor (sync runs) or the job store (async jobs). The steps between
//! (`admit`, `run_now`, `enqueue`, `cancel_job`, `watch_job`, …) are shared
//! with the gRPC front end, so that both answer alike.

use super::error::ApiError;
use super::wire::{
    ChunkEvent, ImageJson, JobJson, LaggedEvent, PolicyJson, RunRequest, RunResponse,
};
use crate::executor::admission::{Refusal, Tenant};
use crate::executor::jobs::{JobQueue, OutputChunk};
use crate::executor::metrics::{Rejection, RunKind};
use crate::executor::store::{CancelResult, JobRecord, JobStatus};
use crate::executor::{ExecError, Executor};
use crate::policy::SandboxPolicy;
use crate::runtime::{Outcome, OutcomeJson, RunError, Submission};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, watch};

/// What every handler shares.
pub struct AppState {
    /// Workers, store, admission, metrics.
    pub queue: Arc<JobQueue>,
    /// Every policy some tenant may use, by name.
    pub policies: BTreeMap<String, Arc<SandboxPolicy>>,
    /// The largest body accepted, for the 413 message.
    pub max_body: usize,
    /// Turns true when the server is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

type Shared = State<Arc<AppState>>;

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    authenticate_bearer(state, authorization)
}

/// The tenant of an `Authorization` value (`Bearer TOKEN`); shared with gRPC.
pub(super) fn authenticate_bearer(
    state: &AppState,
    authorization: Option<&str>,
) -> Result<Arc<Tenant>, ApiError> {
    let admission = &state.queue.admission;
    if let Some(anonymous) = admission.anonymous() {
        return Ok(anonymous);
    }
    let token = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    token
        .and_then(|token| admission.authenticate(token))
        .ok_or_else(|| {
            state.queue.metrics.reject(Rejection::Auth);
            ApiError::Unauthorized
        })
}

/// A decoded, checked request: the tenant's policy tightened and the submission.
pub(super) struct Admitted {
    policy: SandboxPolicy,
    submission: Submission,
}

fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit: state.max_body,
            }
        } else {
            ApiError::BadRequest {
                code: "invalid_body",
                message: rejection.body_text(),
            }
        }
    })
}

/// Decodes `body` and checks it against `tenant`'s policies and images;
/// shared by sync runs, job submission (HTTP and gRPC) and (through
/// [`prepare`]) job workers.
pub(super) fn admit(
    policies: &BTreeMap<String, Arc<SandboxPolicy>>,
    executor: &Executor,
    tenant: &Tenant,
    body: &[u8],
) -> Result<Admitted, ApiError> {
    let request: RunRequest = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("the body is not a valid run request: {e}"),
    })?;
    let mut submission = request.submission().map_err(|e| ApiError::BadRequest {
        code: "invalid_request",
        message: e.0,
    })?;
    let target = executor.route(
        &tenant.config.images,
        request.image.as_deref(),
        request.arch.as_deref(),
    )?;
    submission.image = Some(target.image);
    submission.arch = Some(target.arch);
    let name = request
        .policy
        .clone()
        .unwrap_or_else(|| tenant.config.policies[0].clone());
    let allowed = || tenant.config.policies.join(", ");
    if !tenant.allows_policy(&name) {
        if policies.contains_key(&name) || crate::policy::BUILTIN_POLICIES.contains(&name.as_str())
        {
            return Err(ApiError::PolicyNotAllowed {
                policy: name,
                allowed: allowed(),
            });
        }
        return Err(ApiError::BadRequest {
            code: "unknown_policy",
            message: format!(
                "there is no policy {name:?}; this tenant may use: {}",
                allowed()
            ),
        });
    }
    let policy = policies.get(&name).ok_or(ApiError::Internal)?;
    let policy =
        Executor::resolve_policy(policy, &submission).map_err(|e| ApiError::BadRequest {
            code: "invalid_request",
            message: e.to_string(),
        })?;
    Ok(Admitted { policy, submission })
}

/// The [`crate::executor::jobs::Prepare`] of the HTTP front end: a stored job is decoded and checked again.
pub fn prepare(
    policies: BTreeMap<String, Arc<SandboxPolicy>>,
    admission: Arc<crate::executor::admission::Admission>,
    executor: Arc<Executor>,
) -> crate::executor::jobs::Prepare {
    Arc::new(move |job| {
        let failure = |code, message| crate::executor::jobs::JobFailure { code, message };
        let tenant = admission.tenant(&job.tenant).ok_or_else(|| {
            failure(
                "unknown_tenant",
                format!("tenant {:?} is no longer configured", job.tenant),
            )
        })?;
        admit(&policies, &executor, &tenant, job.request.as_bytes())
            .map(|a| (a.policy, a.submission))
            .map_err(|e| {
                failure(
                    "invalid_request",
                    format!("the stored request is no longer valid: {e}"),
                )
            })
    })
}

fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        Refusal::Concurrency { .. } => {
            state.queue.metrics.reject(Rejection::Concurrency);
            ApiError::TooManyRequests {
                code: "concurrency_limit",
                message,
                retry_after: Duration::from_secs(1),
            }
        }
        Refusal::Rate { retry_after, .. } => {
            state.queue.metrics.reject(Rejection::Rate);
            ApiError::TooManyRequests {
                code: "rate_limit",
                message,
                retry_after,
            }
        }
        Refusal::Cpu { retry_after, .. } => {
            state.queue.metrics.reject(Rejection::Cpu);
            ApiError::TooManyRequests {
                code: "cpu_quota",
                message,
                retry_after,
            }
        }
    }
}

fn queue_full(state: &AppState) -> ApiError {
    state.queue.metrics.reject(Rejection::QueueFull);
    ApiError::Unavailable {
        code: "queue_full",
        message: format!(
            "the server has {} runs waiting, its bound; try again later",
            state.queue.admission.queue_bound
        ),
        retry_after: Duration::from_secs(5),
    }
}

/// POST /v1/runs: run now, answer with the outcome.
pub async fn post_run(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RunResponse>, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let body = body_bytes(&state, body)?;
    let admitted = admit(&state.policies, &state.queue.executor, &tenant, &body)?;
    let outcome = run_now(&state, &tenant, admitted).await?;
    Ok(Json(RunResponse {
        outcome: OutcomeJson::from(&outcome),
        trace_id: super::trace::current(),
    }))
}

/// Runs an admitted request now, within the tenant's and the server's
/// bounds; shared by POST /v1/runs and gRPC `Run`.
pub(super) async fn run_now(
    state: &AppState,
    tenant: &Arc<Tenant>,
    Admitted { policy, submission }: Admitted,
) -> Result<Outcome, ApiError> {
    let slot = tenant.try_slot().map_err(|r| refused(state, r))?;
    tenant.check_cpu().map_err(|r| refused(state, r))?;
    tenant.take_rate().map_err(|r| refused(state, r))?;
    let admission = &state.queue.admission;
    let queued = state
        .queue
        .store
        .queued()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let wait = admission
        .try_wait(queued)
        .ok_or_else(|| queue_full(state))?;
    let permit = admission
        .running
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    drop(wait);
    let started = Instant::now();
    let executor = state.queue.executor.clone();
    // The runtime is synchronous: run on the blocking pool, never on a reactor thread.
    // The permit and the slot travel with the run: a client that hangs up
    // does not stop the run, so it must not free its place either, nor
    // escape its CPU charge.
    let result = tokio::task::spawn_blocking(move || {
        let outcome = executor.run(&policy, &submission);
        if let Ok(outcome) = &outcome {
            slot.charge_cpu(outcome.usage.cpu);
        }
        drop((permit, slot));
        outcome
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    state.queue.wake.notify_one();
    match result {
        Ok(outcome) => {
            state
                .queue
                .metrics
                .record(RunKind::Sync, outcome.verdict, started.elapsed());
            tracing::info!(verdict = %outcome.verdict, "run finished");
            Ok(outcome)
        }
        Err(ExecError::Run(RunError::InvalidSubmission(message))) => Err(ApiError::BadRequest {
            code: "invalid_request",
            message,
        }),
        Err(ExecError::Route(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// POST /v1/jobs: store the job, answer 202 with its id.
pub async fn post_job(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let body = body_bytes(&state, body)?;
    admit(&state.policies, &state.queue.executor, &tenant, &body)?;
    let request = String::from_utf8(body.to_vec()).map_err(|e| ApiError::internal(&e))?;
    let job = enqueue(&state, &tenant, request).await?;
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobJson::from(&job)),
    )
        .into_response())
}

/// Stores an admitted job request (its JSON text) and wakes a worker;
/// shared by POST /v1/jobs and gRPC `Submit`.
pub(super) async fn enqueue(
    state: &AppState,
    tenant: &Tenant,
    request: String,
) -> Result<JobRecord, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable {
            code: "shutting_down",
            message: "the server is shutting down".into(),
            retry_after: Duration::from_secs(5),
        });
    }
    let queued = state
        .queue
        .store
        .queued()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if queued >= state.queue.admission.queue_bound {
        return Err(queue_full(state));
    }
    tenant.check_cpu().map_err(|r| refused(state, r))?;
    tenant.take_rate().map_err(|r| refused(state, r))?;
    let id = super::trace::random_hex(16);
    let job = state
        .queue
        .store
        .insert(
            id.clone(),
            tenant.config.name.clone(),
            request,
            super::trace::current(),
        )
        .await
        .map_err(|e| ApiError::internal(&e))?;
    state.queue.announce(&id, JobStatus::Queued);
    state.queue.wake.notify_one();
    tracing::info!(job = %id, "job queued");
    Ok(job)
}

fn no_job(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no job {id:?} for this tenant (finished jobs are kept for the retention time)"
    ))
}

/// GET /v1/jobs/{id}.
pub async fn get_job(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let job = find_job(&state, &tenant, &id).await?;
    Ok(Json(JobJson::from(&job)))
}

/// The tenant's job `id`; shared by GET /v1/jobs/{id} and gRPC `GetJob`.
pub(super) async fn find_job(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let job = state
        .queue
        .store
        .get(id.to_owned(), tenant.config.name.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    job.ok_or_else(|| no_job(id))
}

/// DELETE /v1/jobs/{id}: cancel a queued job (200) or a running one (202:
/// it is `cancelled` now, its sandbox is being killed and the outcome of
/// what ran is attached when that is done).
pub async fn delete_job(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let cancelled = cancel_job(&state, &tenant, &id).await?;
    let status = if cancelled.was_running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(JobJson::from(&cancelled.job))).into_response())
}

/// A job [`cancel_job`] cancelled.
pub(super) struct Cancelled {
    /// The job, `cancelled`.
    pub job: JobRecord,
    /// Whether it was running: its sandbox is being killed, and the outcome
    /// of what ran is attached once that is done.
    pub was_running: bool,
}

/// Cancels the tenant's job `id`, queued or running; shared by
/// DELETE /v1/jobs/{id} and gRPC `CancelJob`.
pub(super) async fn cancel_job(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<Cancelled, ApiError> {
    let result = state
        .queue
        .cancel(id, &tenant.config.name)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match result {
        CancelResult::Cancelled(job) => Ok(Cancelled {
            job,
            was_running: false,
        }),
        CancelResult::Stopping(job) => {
            tracing::info!(job = %id, "cancelling a running job");
            Ok(Cancelled {
                job,
                was_running: true,
            })
        }
        CancelResult::NotCancellable(job) => Err(ApiError::Conflict {
            code: "job_finished",
            message: format!("the job is already {}", job.status.as_str()),
        }),
        CancelResult::NotFound => Err(no_job(id)),
    }
}

/// GET /v1/jobs/{id}/events: `status` on each state change; while the job
/// runs, `stdout` and `stderr` chunks from the time the stream saw it running
/// (and `lagged` when this client fell behind); then `outcome` (or `error`).
pub async fn job_events(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let updates = watch_job(&state, &tenant, &id).await?;
    let stream = futures_util::stream::unfold(updates, move |mut updates| {
        let id = id.clone();
        async move {
            let event = sse_event(&id, updates.recv().await?)?;
            Some((Ok::<_, Infallible>(event), updates))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The server-sent event of one update of job `id`; None for [`JobUpdate::End`].
fn sse_event(id: &str, update: JobUpdate) -> Option<Event> {
    let event = match update {
        JobUpdate::Status(status) => Event::default().event("status").json_data(status.event(id)),
        JobUpdate::Output(chunk) => Event::default()
            .event(chunk.stream.as_str())
            .json_data(ChunkEvent::new(&chunk.bytes)),
        JobUpdate::Lagged { missed_chunks } => Event::default()
            .event("lagged")
            .json_data(LaggedEvent { missed_chunks }),
        JobUpdate::Outcome(outcome) => Ok(Event::default().event("outcome").data(outcome)),
        JobUpdate::Failed { code, message } => Event::default()
            .event("error")
            .json_data(serde_json::json!({"code": code, "message": message})),
        JobUpdate::End => return None,
    };
    Some(event.unwrap_or_default())
}

/// One event of a watched job, before a front end renders it (SSE here,
/// gRPC `WatchJob`), in the order a client receives it.
pub(super) enum JobUpdate {
    /// The job's status: first as it is, then at each change.
    Status(JobStatus),
    /// A chunk of the running job's output.
    Output(OutputChunk),
    /// The watcher fell behind and this many chunks were dropped for it
    /// (the outcome has them all).
    Lagged {
        /// How many chunks were dropped.
        missed_chunks: u64,
    },
    /// The outcome (its JSON text) of a job that ran: after its last chunk.
    Outcome(String),
    /// Why a failed job could not run.
    Failed {
        /// A stable snake_case code.
        code: String,
        /// A sentence.
        message: String,
    },
    /// Nothing follows: the job ended and all of it was sent. Updates that
    /// stop without it were cut short (the server is shutting down).
    End,
}

/// The updates of the tenant's job `id` until it ends (or the server shuts
/// down); shared by GET /v1/jobs/{id}/events and gRPC `WatchJob`.
pub(super) async fn watch_job(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<mpsc::Receiver<JobUpdate>, ApiError> {
    // Subscribed before the first read, so that no change is missed.
    let changes = state.queue.events.subscribe();
    let id = find_job(state, tenant, id).await?.id;
    let (tx, rx) = mpsc::channel::<JobUpdate>(8);
    let follow = FollowJob {
        queue: state.queue.clone(),
        id,
        tenant: tenant.config.name.clone(),
        changes,
        output: None,
        subscribed: false,
        past: Vec::new(),
        tx,
    };
    tokio::spawn(follow.run(state.shutdown.clone()));
    Ok(rx)
}

/// The task behind one watch: it follows one job until it is terminal, or
/// the watcher leaves, or the server shuts down.
struct FollowJob {
    queue: Arc<JobQueue>,
    id: String,
    tenant: String,
    /// Every job's state changes (subscribed before the first read).
    changes: broadcast::Receiver<crate::executor::jobs::JobEvent>,
    /// The job's output after `past`, from when the job was seen running
    /// until its end.
    output: Option<broadcast::Receiver<OutputChunk>>,
    /// Whether the output has been subscribed to (once per watch).
    subscribed: bool,
    /// The output the job wrote before it was subscribed to, not sent yet.
    past: Vec<OutputChunk>,
    tx: mpsc::Sender<JobUpdate>,
}

/// The watcher has gone or the server is shutting down: stop following.
struct Gone;

impl FollowJob {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut last = None;
        loop {
            let job = match self
                .queue
                .store
                .get(self.id.clone(), self.tenant.clone())
                .await
            {
                Ok(Some(job)) => job,
                Ok(None) => return tracing::info!(job = %self.id, "a watched job was purged"),
                Err(e) => {
                    return tracing::error!(job = %self.id, error = %e, "a watched job cannot be read");
                }
            };
            // From when it is seen running (or cancelled while it runs).
            // (The store says `running` a moment before the worker makes the
            // job's output: until then, try again at each look.)
            if job.status != JobStatus::Queued
                && !self.subscribed
                && let Some((past, output)) = self.queue.subscribe_output(&self.id)
            {
                self.subscribed = true;
                (self.past, self.output) = (past, Some(output));
            }
            // A job cancelled while it ran is terminal before its run has
            // ended: its status goes out at once, then its last output.
            let run_over = job.outcome.is_some() || !self.queue.is_live(&self.id);
            let done = job.status.is_terminal() && run_over;
            if done && (self.send_past().await.is_err() || self.drain().await.is_err()) {
                return;
            }
            if last != Some(job.status) {
                last = Some(job.status);
                if self.send(JobUpdate::Status(job.status)).await.is_err() {
                    return;
                }
            }
            if done {
                let _ = self.finish(job).await;
                return;
            }
            if self.send_past().await.is_err() || self.wait(&mut shutdown).await.is_err() {
                return;
            }
        }
    }

    /// Forwards the job's output until the job changes state, its output
    /// ends or a second passes (then the job is read again). A lagging
    /// change receiver also just re-reads.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), Gone> {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = wait_for_change(&mut self.changes, &self.id) => return Ok(()),
                chunk = next_chunk(&mut self.output) => {
                    self.forward(chunk).await?;
                    if self.output.is_none() {
                        return Ok(());
                    }
                }
                () = &mut tick => return Ok(()),
                _ = shutdown.changed() => return Err(Gone),
            }
        }
    }

    /// Sends what the job wrote before it was subscribed to.
    async fn send_past(&mut self) -> Result<(), Gone> {
        for chunk in std::mem::take(&mut self.past) {
            self.send(JobUpdate::Output(chunk)).await?;
        }
        Ok(())
    }

    /// Sends the output still buffered: all of it, since the run produced
    /// it before its result was stored.
    async fn drain(&mut self) -> Result<(), Gone> {
        while let Some(receiver) = &mut self.output {
            let chunk = match receiver.try_recv() {
                Ok(chunk) => Ok(chunk),
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            };
            self.forward(chunk).await?;
        }
        self.output = None;
        Ok(())
    }

    /// Sends the outcome or the error of a terminal job, then the end.
    async fn finish(&self, job: JobRecord) -> Result<(), Gone> {
        match (job.outcome, job.error) {
            (Some(outcome), _) => self.send(JobUpdate::Outcome(outcome)).await?,
            (None, Some((code, message))) => {
                self.send(JobUpdate::Failed { code, message }).await?;
            }
            // Cancelled before it ran: its status was the last word.
            (None, None) => {}
        }
        self.send(JobUpdate::End).await
    }

    /// Sends a chunk, or says how many were lost.
    async fn forward(&mut self, chunk: Result<OutputChunk, RecvError>) -> Result<(), Gone> {
        let update = match chunk {
            Ok(chunk) => JobUpdate::Output(chunk),
            Err(RecvError::Lagged(missed_chunks)) => JobUpdate::Lagged { missed_chunks },
            Err(RecvError::Closed) => {
                self.output = None;
                return Ok(());
            }
        };
        self.send(update).await
    }

    async fn send(&self, update: JobUpdate) -> Result<(), Gone> {
        self.tx.send(update).await.map_err(|_| Gone)
    }
}

/// Returns once job `id` changed state (or changes were missed).
async fn wait_for_change(
    changes: &mut broadcast::Receiver<crate::executor::jobs::JobEvent>,
    id: &str,
) {
    loop {
        match changes.recv().await {
            Ok(event) if event.id == id => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The next chunk of output; never, when there is no output to follow.
async fn next_chunk(
    output: &mut Option<broadcast::Receiver<OutputChunk>>,
) -> Result<OutputChunk, RecvError> {
    match output {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// GET /v1/policies: the policies this tenant may use.
pub async fn policies(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let list: Vec<PolicyJson> = tenant_policies(&state, &tenant)
        .enumerate()
        .map(|(i, policy)| PolicyJson {
            name: policy.name.clone(),
            default: i == 0,
            limits: toml::from_str::<toml::Table>(&policy.to_toml())
                .ok()
                .and_then(|t| t.get("limits").cloned())
                .and_then(|l| serde_json::to_value(l).ok())
                .unwrap_or_default(),
        })
        .collect();
    Ok(Json(serde_json::json!({ "policies": list })))
}

/// The policies `tenant` may use, its default first; shared with gRPC `ListPolicies`.
pub(super) fn tenant_policies<'a>(
    state: &'a AppState,
    tenant: &'a Tenant,
) -> impl Iterator<Item = &'a Arc<SandboxPolicy>> {
    tenant
        .config
        .policies
        .iter()
        .filter_map(|name| state.policies.get(name))
}

/// GET /v1/images: the images this tenant may use, its default first.
pub async fn images(
    State(state): Shared,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let list = tenant_images(&state, &tenant);
    Ok(Json(serde_json::json!({ "images": list })))
}

/// The images `tenant` may use, its default first; shared with gRPC `ListImages`.
pub(super) fn tenant_images(state: &AppState, tenant: &Tenant) -> Vec<ImageJson> {
    let offered = state.queue.executor.images();
    tenant
        .config
        .images
        .iter()
        .filter_map(|name| offered.iter().find(|i| &i.name == name))
        .enumerate()
        .map(|(i, image)| ImageJson {
            name: image.name.clone(),
            default: i == 0,
            runtime: image.runtime_name(),
            arches: image.arches(),
            default_arch: image.default_arch(),
            python: image.python.clone(),
        })
        .collect()
}

/// GET /healthz: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// GET /readyz: the database answers and the server is not shutting down.
pub async fn readyz(State(state): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable {
            code: "shutting_down",
            message: "the server is shutting down".into(),
            retry_after: Duration::from_secs(5),
        });
    }
    state
        .queue
        .store
        .queued()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// GET /metrics: Prometheus text.
pub async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let queued = state
        .queue
        .store
        .queued()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let text = state.queue.metrics.render(
        queued,
        state.queue.admission.in_flight(),
        state.queue.executor.images(),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint (see docs/API.md)".into())
}

/// A known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
