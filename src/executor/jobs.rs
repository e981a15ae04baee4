//! Job workers: take queued jobs from the store, run them through the
//! executor on the blocking pool, store the outcome, and announce each state
//! change. While a job runs, its output goes out on a bounded per-job
//! broadcast ([`JobQueue::subscribe_output`]) and a cancel token can stop it
//! ([`JobQueue::cancel`]). Also the purger that drops results older than the
//! retention time.
//!
//! How a stored request becomes a policy and a submission is the front end's
//! business: it hands the workers a [`Prepare`] function.

use super::Executor;
use super::admission::{Admission, TenantSlot};
use super::metrics::{Metrics, RunKind};
use super::store::{CancelResult, JobRecord, JobStatus, JobStore, StoreError, now_ms};
use crate::policy::SandboxPolicy;
use crate::runtime::{CancelToken, RunError, RunWatch, Stream, Submission};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// The output channel and cancel token of each job a worker holds.
    pub live: LiveJobs,
}

/// A chunk of a running job's output, as its run produced it.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    /// stdout or stderr.
    pub stream: Stream,
    /// The bytes, in order after the stream's previous chunk; never past the output cap.
    pub bytes: Arc<[u8]>,
}

/// How many chunks a subscriber may fall behind before it loses the oldest
/// (it is told how many, as `RecvError::Lagged`). The run never waits for a
/// subscriber, and a job's channel holds at most this many chunks.
pub const OUTPUT_BACKLOG: usize = 256;

/// What the server holds for a job that a worker has taken: its output so
/// far and the channel of what comes next, and its cancel token.
struct Live {
    output: Arc<LiveOutput>,
    cancel: CancelToken,
}

/// A running job's output: every chunk so far (at most the policy's output
/// cap per stream, as the run keeps no more), and the channel of the next.
/// One lock covers both, so a subscriber gets each chunk exactly once.
pub struct LiveOutput(Mutex<(Vec<OutputChunk>, broadcast::Sender<OutputChunk>)>);

impl LiveOutput {
    fn new() -> LiveOutput {
        LiveOutput(Mutex::new((
            Vec::new(),
            broadcast::channel(OUTPUT_BACKLOG).0,
        )))
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<OutputChunk>, broadcast::Sender<OutputChunk>)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `chunk` and passes it on; the run never waits for a subscriber.
    fn push(&self, chunk: OutputChunk) {
        let mut output = self.lock();
        let (past, next) = &mut *output;
        past.push(chunk.clone());
        // A full channel drops its oldest chunk; nobody listening is fine.
        if next.receiver_count() > 0 {
            let _ = next.send(chunk);
        }
    }

    fn subscribe(&self) -> (Vec<OutputChunk>, broadcast::Receiver<OutputChunk>) {
        let output = self.lock();
        (output.0.clone(), output.1.subscribe())
    }
}

impl Live {
    fn new() -> Live {
        Live {
            output: Arc::new(LiveOutput::new()),
            cancel: CancelToken::new(),
        }
    }
}

/// The jobs workers hold, by id: from just after a worker takes one until
/// its result is stored.
#[derive(Default)]
pub struct LiveJobs(Mutex<HashMap<String, Live>>);

impl LiveJobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the job's output and cancel token.
    fn start(&self, id: &str) -> (Arc<LiveOutput>, CancelToken) {
        let live = Live::new();
        let taken = (live.output.clone(), live.cancel.clone());
        self.lock().insert(id.to_owned(), live);
        taken
    }

    /// Cancels the job's run, if a worker holds it.
    fn cancel(&self, id: &str) {
        let token = self.lock().get(id).map(|live| live.cancel.clone());
        if let Some(token) = token {
            token.cancel();
        }
    }

    /// Forgets the job: its subscribers get what is left, then the end.
    fn finish(&self, id: &str) {
        self.lock().remove(id);
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn subscribe(&self, id: &str) -> Option<(Vec<OutputChunk>, broadcast::Receiver<OutputChunk>)> {
        let output = self.lock().get(id).map(|live| live.output.clone());
        output.map(|output| output.subscribe())
    }
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

    /// The output of job `id` while a worker runs it (`None` otherwise):
    /// every chunk so far, and a receiver of the ones after them. Chunks
    /// come in order per stream; a receiver that falls more than
    /// [`OUTPUT_BACKLOG`] chunks behind loses the oldest and is told so. The
    /// channel closes once the job's result is stored. The caller checks
    /// that the job belongs to the tenant asking.
    pub fn subscribe_output(
        &self,
        id: &str,
    ) -> Option<(Vec<OutputChunk>, broadcast::Receiver<OutputChunk>)> {
        self.live.subscribe(id)
    }

    /// True while a worker holds job `id`: its result is not stored yet.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.contains(id)
    }

    /// Cancels job `id` of `tenant`: a queued job never runs; a running one
    /// is `cancelled` in the store first (durably: no crash or racing end
    /// makes it `finished` or runs it again), then its sandbox is killed and
    /// the outcome of what ran is attached when the run ends.
    pub async fn cancel(&self, id: &str, tenant: &str) -> Result<CancelResult, StoreError> {
        let result = self.store.cancel(id.to_owned(), tenant.to_owned()).await?;
        match &result {
            CancelResult::Cancelled(_) => self.announce(id, JobStatus::Cancelled),
            CancelResult::Stopping(_) => {
                self.live.cancel(id);
                self.announce(id, JobStatus::Cancelled);
            }
            CancelResult::NotCancellable(_) | CancelResult::NotFound => {}
        }
        Ok(result)
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
                let status = self.fail(&job.id, "unknown_tenant", message).await;
                self.announce(&job.id, status);
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
            let (output, cancel) = self.live.start(&job.id);
            self.announce(&job.id, JobStatus::Running);
            let prepared = (self.prepare)(&job);
            let status = match prepared {
                // A cancel stored before the token existed: nothing to run.
                _ if self.cancelled_since_claim(&job).await => JobStatus::Cancelled,
                Ok((policy, submission)) => {
                    let watch = RunWatch::new()
                        .on_output(move |stream, bytes| {
                            let bytes = Arc::from(bytes);
                            output.push(OutputChunk { stream, bytes });
                        })
                        .cancel_with(cancel);
                    self.execute(&job.id, policy, submission, watch, &slot)
                        .await
                }
                Err(failure) => self.fail(&job.id, failure.code, failure.message).await,
            };
            // Subscribers see the end of the output before the final state.
            self.live.finish(&job.id);
            self.announce(&job.id, status);
            drop((permit, slot));
            self.wake.notify_one();
        }
        .instrument(span)
        .await;
    }

    /// Whether the job was cancelled since it was claimed. A cancel stores
    /// `cancelled` before it fires the token, so once the token exists one
    /// of the two always tells.
    async fn cancelled_since_claim(&self, job: &JobRecord) -> bool {
        let stored = self.store.get(job.id.clone(), job.tenant.clone()).await;
        matches!(stored, Ok(Some(now)) if now.status == JobStatus::Cancelled)
    }

    /// Runs the job and stores its result, its CPU time charged to `slot`'s
    /// tenant; returns the job's new status.
    async fn execute(
        &self,
        id: &str,
        policy: SandboxPolicy,
        submission: Submission,
        watch: RunWatch,
        slot: &TenantSlot,
    ) -> JobStatus {
        let executor = self.executor.clone();
        let started = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || executor.run_watched(&policy, &submission, &watch))
                .await;
        match result {
            Ok(Ok(outcome)) => {
                slot.charge_cpu(outcome.usage.cpu);
                self.metrics
                    .record(RunKind::Job, outcome.verdict, started.elapsed());
                match self.store.finish(id.to_owned(), outcome.to_json()).await {
                    Ok(Some(status)) => {
                        tracing::info!(verdict = %outcome.verdict, status = status.as_str(), "job ended");
                        status
                    }
                    // The row is gone: nothing to announce but its end.
                    Ok(None) => JobStatus::Failed,
                    // It stays `running` in the store, and is run again after a restart.
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store a job's outcome");
                        JobStatus::Running
                    }
                }
            }
            Ok(Err(super::ExecError::Policy(e))) => {
                self.fail(id, "invalid_request", e.to_string()).await
            }
            Ok(Err(super::ExecError::Route(e))) => {
                self.fail(id, "invalid_request", e.to_string()).await
            }
            Ok(Err(super::ExecError::Run(RunError::InvalidSubmission(e)))) => {
                self.fail(id, "invalid_submission", e).await
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the runtime could not start a job");
                let message = "the runtime could not start the run (see the server log)";
                self.fail(id, "run_failed", message.to_owned()).await
            }
            Err(e) => {
                tracing::error!(error = %e, "a job's run panicked");
                self.fail(
                    id,
                    "internal",
                    "the run failed inside the server".to_owned(),
                )
                .await
            }
        }
    }

    /// Marks a running job failed; returns its status (`cancelled` when a
    /// cancel came first, which the store keeps).
    async fn fail(&self, id: &str, code: &str, message: String) -> JobStatus {
        match self
            .store
            .fail(id.to_owned(), code.to_owned(), message)
            .await
        {
            Ok(true) => JobStatus::Failed,
            Ok(false) => JobStatus::Cancelled,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot mark a job failed");
                JobStatus::Running
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::admission::TenantConfig;
    use crate::runtime::{Captured, Outcome, Runtime, Usage, Verdict};

    /// Waits for the test's go, then writes `chunks` numbered lines, waits
    /// for a second go and writes `chunks` more; or, when `chunks` is 0,
    /// waits for a cancel.
    struct Chatty {
        go: Mutex<std::sync::mpsc::Receiver<()>>,
        chunks: usize,
    }

    impl Runtime for Chatty {
        fn name(&self) -> &'static str {
            "chatty"
        }

        fn run_watched(
            &self,
            _: &SandboxPolicy,
            _: &Submission,
            watch: &RunWatch,
        ) -> Result<Outcome, RunError> {
            let _ = self.go.lock().unwrap().recv();
            let mut stdout = Captured::default();
            for i in 0..2 * self.chunks {
                if i == self.chunks {
                    let _ = self.go.lock().unwrap().recv();
                }
                let line = format!("{i}\n");
                stdout.bytes.extend_from_slice(line.as_bytes());
                watch.emit(Stream::Stdout, line.as_bytes());
            }
            let token = watch.cancel_token().expect("jobs always run with a token");
            let (tx, rx) = std::sync::mpsc::channel();
            let _guard = token.on_cancel(move || {
                let _ = tx.send(());
            });
            let cancelled = self.chunks == 0 && rx.recv().is_ok();
            Ok(Outcome {
                verdict: Verdict::Ok,
                exit_code: Some(0),
                signal: None,
                stdout,
                stderr: Captured::default(),
                usage: Usage::default(),
                message: cancelled.then(|| "cancelled".to_owned()),
                image: None,
                arch: None,
                files: Vec::new(),
                limits_reached: Vec::new(),
            })
        }
    }

    async fn queue(
        chunks: usize,
    ) -> (
        Arc<JobQueue>,
        std::sync::mpsc::Sender<()>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(&dir.path().join("jobs.sqlite3")).unwrap();
        let tenant = TenantConfig {
            name: "t".into(),
            token_hashes: Vec::new(),
            policies: vec!["strict".into()],
            images: Vec::new(),
            max_concurrent: 1,
            runs_per_minute: 60,
            burst: 10,
            cpu: None,
        };
        let (go, wait) = std::sync::mpsc::channel();
        let runtime = Chatty {
            go: Mutex::new(wait),
            chunks,
        };
        let queue = Arc::new(JobQueue {
            store,
            admission: Arc::new(Admission::new(vec![tenant], 1, 10)),
            executor: Arc::new(Executor::new(Box::new(runtime))),
            metrics: Arc::default(),
            events: broadcast::channel(16).0,
            wake: Notify::new(),
            prepare: Arc::new(|_| {
                let policy = SandboxPolicy::builtin("strict").unwrap();
                Ok((policy, Submission::code("pass")))
            }),
            live: LiveJobs::default(),
        });
        (queue, go, dir)
    }

    /// Submits job `id` and returns its output receiver once a worker runs it.
    async fn running(
        queue: &Arc<JobQueue>,
        id: &str,
    ) -> (Vec<OutputChunk>, broadcast::Receiver<OutputChunk>) {
        queue
            .store
            .insert(id.into(), "t".into(), "{}".into(), "tr".into())
            .await
            .unwrap();
        loop {
            if let Some(output) = queue.subscribe_output(id) {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ended(queue: &JobQueue, id: &str) -> JobRecord {
        loop {
            let job = queue
                .store
                .get(id.into(), "t".into())
                .await
                .unwrap()
                .unwrap();
            if job.status.is_terminal() && !queue.is_live(id) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_that_never_reads_lags_and_the_run_never_waits() {
        let chunks = OUTPUT_BACKLOG * 3;
        let (queue, go, _dir) = queue(chunks).await;
        let (_tx, shutdown) = watch::channel(false);
        let workers = queue.spawn_workers(1, &shutdown);
        let (past, mut output) = running(&queue, "a").await;
        assert!(past.is_empty());
        go.send(()).unwrap();
        go.send(()).unwrap();
        // The run ends although nobody has read a single chunk.
        let job = ended(&queue, "a").await;
        assert_eq!(job.status, JobStatus::Finished);
        // The subscriber is told how many it lost, then gets the newest
        // chunks in order, then the end.
        let missed = 2 * chunks - OUTPUT_BACKLOG;
        assert!(matches!(
            output.recv().await,
            Err(broadcast::error::RecvError::Lagged(n)) if n == missed as u64
        ));
        for i in missed..2 * chunks {
            let chunk = output.recv().await.unwrap();
            assert_eq!(chunk.stream, Stream::Stdout);
            assert_eq!(&*chunk.bytes, format!("{i}\n").as_bytes());
        }
        assert!(matches!(
            output.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        assert!(queue.subscribe_output("a").is_none());
        workers.into_iter().for_each(|w| w.abort());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_subscriber_gets_the_output_so_far_then_the_rest_once() {
        let (queue, go, _dir) = queue(5).await;
        let (_tx, shutdown) = watch::channel(false);
        let workers = queue.spawn_workers(1, &shutdown);
        drop(running(&queue, "a").await);
        go.send(()).unwrap();
        // Subscribed once the first five lines are written.
        let (past, mut output) = loop {
            let (past, output) = queue.subscribe_output("a").unwrap();
            if past.len() == 5 {
                break (past, output);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        go.send(()).unwrap();
        let mut lines = past;
        while let Ok(chunk) = output.recv().await {
            lines.push(chunk);
        }
        let text: Vec<String> = lines
            .iter()
            .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected, "every line once, in order");
        assert_eq!(ended(&queue, "a").await.status, JobStatus::Finished);
        workers.into_iter().for_each(|w| w.abort());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_running_job_stops_its_run_and_keeps_its_outcome() {
        let (queue, go, _dir) = queue(0).await;
        let (_tx, shutdown) = watch::channel(false);
        let workers = queue.spawn_workers(1, &shutdown);
        let _output = running(&queue, "a").await;
        go.send(()).unwrap();
        let result = queue.cancel("a", "t").await.unwrap();
        assert!(
            matches!(result, CancelResult::Stopping(ref j) if j.status == JobStatus::Cancelled)
        );
        let job = ended(&queue, "a").await;
        assert_eq!(job.status, JobStatus::Cancelled);
        let outcome: serde_json::Value =
            serde_json::from_str(job.outcome.as_deref().unwrap()).unwrap();
        assert_eq!(outcome["message"], "cancelled", "the run saw the cancel");
        assert!(matches!(
            queue.cancel("a", "t").await.unwrap(),
            CancelResult::NotCancellable(_)
        ));
        workers.into_iter().for_each(|w| w.abort());
    }
}
