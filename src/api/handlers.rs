//! The HTTP handlers: authenticate, decode, admit, then hand the work to the
//! executor (sync runs) or the job store (async jobs).

use super::error::ApiError;
use super::wire::{JobJson, PolicyJson, RunRequest, RunResponse};
use crate::executor::admission::{Refusal, Tenant};
use crate::executor::jobs::JobQueue;
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
use tokio::sync::{mpsc, watch};

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

/// Decodes `body` and checks it against `tenant`'s policies; shared by sync
/// runs, job submission (HTTP and gRPC) and (through [`prepare`]) job workers.
pub(super) fn admit(
    policies: &BTreeMap<String, Arc<SandboxPolicy>>,
    tenant: &Tenant,
    body: &[u8],
) -> Result<Admitted, ApiError> {
    let request: RunRequest = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("the body is not a valid run request: {e}"),
    })?;
    let submission = request.submission().map_err(|e| ApiError::BadRequest {
        code: "invalid_request",
        message: e.0,
    })?;
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
) -> crate::executor::jobs::Prepare {
    Arc::new(move |job| {
        let failure = |code, message| crate::executor::jobs::JobFailure { code, message };
        let tenant = admission.tenant(&job.tenant).ok_or_else(|| {
            failure(
                "unknown_tenant",
                format!("tenant {:?} is no longer configured", job.tenant),
            )
        })?;
        admit(&policies, &tenant, job.request.as_bytes())
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
    let admitted = admit(&state.policies, &tenant, &body)?;
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
    // does not stop the run, so it must not free its place either.
    let result = tokio::task::spawn_blocking(move || {
        let outcome = executor.run(&policy, &submission);
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
    admit(&state.policies, &tenant, &body)?;
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

/// DELETE /v1/jobs/{id}: cancel a queued job; a running one cannot be cancelled yet.
pub async fn delete_job(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, ApiError> {
    let tenant = authenticate(&state, &headers)?;
    let job = cancel_job(&state, &tenant, &id).await?;
    Ok(Json(JobJson::from(&job)))
}

/// Cancels the tenant's queued job `id`; shared by DELETE /v1/jobs/{id} and gRPC `CancelJob`.
pub(super) async fn cancel_job(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let result = state
        .queue
        .store
        .cancel(id.to_owned(), tenant.config.name.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match result {
        CancelResult::Cancelled(job) => {
            state.queue.announce(id, JobStatus::Cancelled);
            Ok(job)
        }
        CancelResult::NotCancellable(job) if job.status == JobStatus::Running => Err(ApiError::Conflict {
            code: "cancel_running_unsupported",
            message: "the job is already running; cancelling a running job is not supported yet (it ends at its wall-time limit)".into(),
        }),
        CancelResult::NotCancellable(job) => Err(ApiError::Conflict {
            code: "job_finished",
            message: format!("the job is already {}", job.status.as_str()),
        }),
        CancelResult::NotFound => Err(no_job(id)),
    }
}

/// GET /v1/jobs/{id}/events: `status` on each state change, then `outcome` (or `error`).
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
            let event = match updates.recv().await? {
                JobUpdate::Status(status) => Event::default()
                    .event("status")
                    .json_data(status.event(&id))
                    .unwrap_or_default(),
                JobUpdate::Outcome(outcome) => Event::default().event("outcome").data(outcome),
                JobUpdate::Failed { code, message } => Event::default()
                    .event("error")
                    .json_data(serde_json::json!({"code": code, "message": message}))
                    .unwrap_or_default(),
            };
            Some((Ok::<_, Infallible>(event), updates))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One event of a watched job, before a front end renders it.
pub(super) enum JobUpdate {
    /// The job's status: first as it is, then at each change.
    Status(JobStatus),
    /// A finished job's outcome (its JSON text); the last update.
    Outcome(String),
    /// Why a failed job could not run; the last update.
    Failed {
        /// A stable snake_case code.
        code: String,
        /// A sentence.
        message: String,
    },
}

impl JobUpdate {
    /// Whether nothing follows this update: the job's outcome or error, or its cancellation.
    pub(super) fn is_last(&self) -> bool {
        match self {
            JobUpdate::Status(status) => *status == JobStatus::Cancelled,
            JobUpdate::Outcome(_) | JobUpdate::Failed { .. } => true,
        }
    }
}

/// The updates of the tenant's job `id` until it ends (or the server shuts
/// down); shared by GET /v1/jobs/{id}/events and gRPC `WatchJob`.
pub(super) async fn watch_job(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<mpsc::Receiver<JobUpdate>, ApiError> {
    let mut changes = state.queue.events.subscribe();
    let store = state.queue.store.clone();
    let tenant_name = tenant.config.name.clone();
    let id = find_job(state, tenant, id).await?.id;
    let (tx, rx) = mpsc::channel::<JobUpdate>(8);
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let Ok(Some(job)) = store.get(id.clone(), tenant_name.clone()).await else {
                return;
            };
            if last != Some(job.status) {
                last = Some(job.status);
                if tx.send(JobUpdate::Status(job.status)).await.is_err() {
                    return;
                }
            }
            if job.status.is_terminal() {
                let final_update = match (job.outcome, job.error) {
                    (Some(outcome), _) => JobUpdate::Outcome(outcome),
                    (None, Some((code, message))) => JobUpdate::Failed { code, message },
                    (None, None) => return,
                };
                let _ = tx.send(final_update).await;
                return;
            }
            // Wait for a change to this job; a lagging receiver or a quiet second just re-reads.
            let wait_for_change = async {
                loop {
                    match changes.recv().await {
                        Ok(event) if event.id == id => return,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            };
            tokio::select! {
                () = wait_for_change => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(rx)
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
    let text = state
        .queue
        .metrics
        .render(queued, state.queue.admission.in_flight());
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
