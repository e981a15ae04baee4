//! Job workers: take queued jobs from the store, run them through the
//! executor on the blocking pool, store the outcome, and announce each state
//! change. Also the purger that drops results older than the retention time.
//!
//! How a stored request becomes a policy and a submission is the front end's
//! business: it hands the workers a [`Prepare`] function.

use super::Executor;
use super::admission::{Admission, TenantSlot};
use super::metrics::{Metrics, RunKind};
use super::store::{JobRecord, JobStatus, JobStore, now_ms};
use crate::policy::SandboxPolicy;
use crate::runtime::{RunError, Submission};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

/// Why a stored job cannot run: a stable code and a sentence for the client.
#[derive(Debug, Clone)]
pub struct JobFailure {
    /// A short snake_case code (`invalid_request`, `policy_not_allowed`, …).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

/// Turns a stored job back into the policy and submission to run.
pub type Prepare =
    Arc<dyn Fn(&JobRecord) -> Result<(SandboxPolicy, Submission), JobFailure> + Send + Sync>;

/// A job changed state.
#[derive(Debug, Clone)]
pub struct JobEvent {
    /// The job; listeners read its new state from the store.
    pub id: String,
}

/// What the workers share with the front end.
pub struct JobQueue {
    /// The job database.
    pub store: JobStore,
    /// Tenants and server-wide bounds.
    pub admission: Arc<Admission>,
    /// Runs submissions.
    pub executor: Arc<Executor>,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
    /// Every state change of every job.
    pub events: broadcast::Sender<JobEvent>,
    /// Wakes a worker when a job is queued or a tenant slot frees up.
    pub wake: Notify,
    /// Decodes stored requests.
    pub prepare: Prepare,
}

/// How long an idle worker sleeps before looking at the queue again even
/// without a wake-up (a tenant slot freed by a sync run does not wake it).
const IDLE_POLL: Duration = Duration::from_millis(500);

impl JobQueue {
    /// Announces a state change; nobody listening is fine.
    pub fn announce(&self, id: &str, status: JobStatus) {
        tracing::debug!(job = %id, status = status.as_str(), "job state changed");
        let _ = self.events.send(JobEvent { id: id.to_owned() });
    }

    /// Starts `count` workers; they stop taking jobs once `shutdown` turns true
    /// and end when their current job is done.
    pub fn spawn_workers(
        self: &Arc<JobQueue>,
        count: usize,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        (0..count)
            .map(|_| tokio::spawn(self.clone().worker(shutdown.clone())))
            .collect()
    }

    async fn worker(self: Arc<JobQueue>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let permit = tokio::select! {
                permit = self.admission.running.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            };
            match self.claim().await {
                Some((job, slot)) => self.run(job, permit, slot).await,
                None => {
                    drop(permit);
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// The next job whose tenant has a free slot, with that slot.
    async fn claim(&self) -> Option<(JobRecord, TenantSlot)> {
        let job = match self.store.claim_next(self.admission.tenants_at_cap()).await {
            Ok(job) => job?,
            Err(e) => {
                tracing::error!(error = %e, "cannot take a job from the queue");
                return None;
            }
        };
        let slot = self
            .admission
            .tenant(&job.tenant)
            .and_then(|tenant| tenant.try_slot().ok());
        match slot {
            Some(slot) => Some((job, slot)),
            // A tenant no longer configured cannot run; one at its cap since the query waits.
            None if self.admission.tenant(&job.tenant).is_none() => {
                let message = format!("tenant {:?} is no longer configured", job.tenant);
                self.fail(&job.id, "unknown_tenant", message).await;
                None
            }
            None => {
                if let Err(e) = self.store.unclaim(job.id.clone()).await {
                    tracing::error!(job = %job.id, error = %e, "cannot put a job back in the queue");
                }
                None
            }
        }
    }

    async fn run(&self, job: JobRecord, permit: OwnedSemaphorePermit, slot: TenantSlot) {
        let span = tracing::info_span!("job", id = %job.id, tenant = %job.tenant, trace_id = %job.trace_id);
        async move {
            self.announce(&job.id, JobStatus::Running);
            match (self.prepare)(&job) {
                Ok((policy, submission)) => {
                    self.execute(&job.id, policy, submission, &slot).await;
                }
                Err(failure) => self.fail(&job.id, failure.code, failure.message).await,
            }
            drop((permit, slot));
            self.wake.notify_one();
        }
        .instrument(span)
        .await;
    }

    /// Runs the job and stores its outcome; its CPU time is charged to `slot`'s tenant.
    async fn execute(
        &self,
        id: &str,
        policy: SandboxPolicy,
        submission: Submission,
        slot: &TenantSlot,
    ) {
        let executor = self.executor.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || executor.run(&policy, &submission)).await;
        match result {
            Ok(Ok(outcome)) => {
                slot.charge_cpu(outcome.usage.cpu);
                self.metrics
                    .record(RunKind::Job, outcome.verdict, started.elapsed());
                tracing::info!(verdict = %outcome.verdict, "job finished");
                match self.store.finish(id.to_owned(), outcome.to_json()).await {
                    Ok(()) => self.announce(id, JobStatus::Finished),
                    Err(e) => tracing::error!(error = %e, "cannot store a job's outcome"),
                }
            }
            Ok(Err(super::ExecError::Policy(e))) => {
                self.fail(id, "invalid_request", e.to_string()).await;
            }
            Ok(Err(super::ExecError::Route(e))) => {
                self.fail(id, "invalid_request", e.to_string()).await;
            }
            Ok(Err(super::ExecError::Run(RunError::InvalidSubmission(e)))) => {
                self.fail(id, "invalid_submission", e).await;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the runtime could not start a job");
                let message = "the runtime could not start the run (see the server log)";
                self.fail(id, "run_failed", message.to_owned()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "a job's run panicked");
                self.fail(
                    id,
                    "internal",
                    "the run failed inside the server".to_owned(),
                )
                .await;
            }
        }
    }

    async fn fail(&self, id: &str, code: &str, message: String) {
        match self
            .store
            .fail(id.to_owned(), code.to_owned(), message)
            .await
        {
            Ok(()) => self.announce(id, JobStatus::Failed),
            Err(e) => tracing::error!(job = %id, error = %e, "cannot mark a job failed"),
        }
    }

    /// Deletes terminal jobs older than `retention`, now and then, until shutdown.
    pub fn spawn_purger(
        self: &Arc<JobQueue>,
        retention: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let queue = self.clone();
        let every = retention.clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match queue.store.purge(now_ms().saturating_sub(keep_ms)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "purged finished jobs past retention"),
                    Err(e) => tracing::error!(error = %e, "cannot purge old jobs"),
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => {}
                }
            }
        })
    }
}
