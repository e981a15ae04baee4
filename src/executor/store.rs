//! The job store: async jobs and their results in an embedded SQLite database.
//!
//! Owns the schema and every SQL statement. A job is written (and synced)
//! before its id is handed out, so an accepted job survives a crash; a job
//! left `running` by a crash is re-queued at the next start, up to a number
//! of attempts. Knows nothing of HTTP or of how a request becomes a run.

use rusqlite::{Connection, OptionalExtension as _, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Accepted and stored; waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// It ran; the outcome (any verdict) is stored.
    Finished,
    /// It could not run (invalid after a restart, interrupted too often); the error is stored.
    Failed,
    /// Cancelled by the client: while queued (it never ran), or while it ran
    /// (its sandbox was killed; the outcome of what ran is kept).
    Cancelled,
}

impl JobStatus {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> JobStatus {
        match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "finished" => JobStatus::Finished,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Failed,
        }
    }

    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// One stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job's id (32 hex digits).
    pub id: String,
    /// The tenant that submitted it; only that tenant sees it.
    pub tenant: String,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The request as the client sent it (JSON text), decoded again by the worker.
    pub request: String,
    /// The trace id of the submitting request.
    pub trace_id: String,
    /// The outcome's JSON text, once `finished`.
    pub outcome: Option<String>,
    /// Why it `failed`: a code and a sentence.
    pub error: Option<(String, String)>,
    /// How many times a worker has started it.
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds of the last start.
    pub started_ms: Option<i64>,
    /// Unix milliseconds of reaching a terminal state.
    pub finished_ms: Option<i64>,
}

/// The database could not be opened or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database's directory could not be created.
    #[error("cannot create the job database's directory {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or its schema set up.
    #[error("cannot open the job database {}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("job database: {0}")]
    Query(#[from] rusqlite::Error),
    /// The blocking task running a statement panicked or was cancelled.
    #[error("job database task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What cancelling a job did.
#[derive(Debug)]
pub enum CancelResult {
    /// It was queued and is now cancelled; it never runs.
    Cancelled(JobRecord),
    /// It was running and is now cancelled; its run is to be stopped, and
    /// its outcome is attached when the run ends.
    Stopping(JobRecord),
    /// It is already terminal: nothing changed.
    NotCancellable(JobRecord),
    /// No such job for this tenant.
    NotFound,
}

/// What crash recovery did at start-up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Jobs left `running` by a crash, queued again.
    pub requeued: usize,
    /// Jobs left `running` that had used up their attempts, now `failed`.
    pub failed: usize,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    status        TEXT NOT NULL,
    request       TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    outcome       TEXT,
    error_code    TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL,
    started_ms    INTEGER,
    finished_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_ms);
";

const COLUMNS: &str = "id, tenant, status, request, trace_id, outcome, error_code, error_message, \
                       attempts, created_ms, started_ms, finished_ms";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let code: Option<String> = row.get(6)?;
    let message: Option<String> = row.get(7)?;
    Ok(JobRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        status: JobStatus::parse(&row.get::<_, String>(2)?),
        request: row.get(3)?,
        trace_id: row.get(4)?,
        outcome: row.get(5)?,
        error: code.zip(message),
        attempts: row.get(8)?,
        created_ms: row.get(9)?,
        started_ms: row.get(10)?,
        finished_ms: row.get(11)?,
    })
}

/// The job database. Cheap to clone; statements run on the blocking pool.
#[derive(Debug, Clone)]
pub struct JobStore {
    conn: Arc<Mutex<Connection>>,
}

impl JobStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<JobStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            // WAL: readers do not block the writer. synchronous=FULL: a job
            // whose insert returned is on disk, even across a power cut.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(JobStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on the blocking pool.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await?;
        Ok(result?)
    }

    /// Stores a new queued job; returns it as stored, once it is on disk
    /// (a worker may already be running it by the time the caller looks).
    pub async fn insert(
        &self,
        id: String,
        tenant: String,
        request: String,
        trace_id: String,
    ) -> Result<JobRecord, StoreError> {
        self.call(move |c| {
            let job = JobRecord {
                id,
                tenant,
                status: JobStatus::Queued,
                request,
                trace_id,
                outcome: None,
                error: None,
                attempts: 0,
                created_ms: now_ms(),
                started_ms: None,
                finished_ms: None,
            };
            c.execute(
                "INSERT INTO jobs (id, tenant, status, request, trace_id, created_ms)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
                params![
                    job.id,
                    job.tenant,
                    job.request,
                    job.trace_id,
                    job.created_ms
                ],
            )?;
            Ok(job)
        })
        .await
    }

    /// The job `id` if it belongs to `tenant`.
    pub async fn get(&self, id: String, tenant: String) -> Result<Option<JobRecord>, StoreError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                record,
            )
            .optional()
        })
        .await
    }

    /// Marks the oldest queued job of a tenant not in `skip` as running and returns it.
    pub async fn claim_next(&self, skip: Vec<String>) -> Result<Option<JobRecord>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let skip_json = serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into());
            let job = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM jobs WHERE status = 'queued'
                         AND tenant NOT IN (SELECT value FROM json_each(?1))
                         ORDER BY created_ms, id LIMIT 1"
                    ),
                    params![skip_json],
                    record,
                )
                .optional()?;
            let Some(mut job) = job else {
                return Ok(None);
            };
            let started = now_ms();
            tx.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_ms = ?2
                 WHERE id = ?1",
                params![job.id, started],
            )?;
            tx.commit()?;
            job.status = JobStatus::Running;
            job.attempts += 1;
            job.started_ms = Some(started);
            Ok(Some(job))
        })
        .await
    }

    /// Puts a claimed job back in the queue as if it had not been claimed.
    pub async fn unclaim(&self, id: String) -> Result<(), StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, started_ms = NULL
                 WHERE id = ?1 AND status = 'running'",
                params![id],
            )
            .map(drop)
        })
        .await
    }

    /// Stores the outcome of a job's run: a running job becomes `finished`;
    /// one cancelled while it ran stays `cancelled` and gets the outcome.
    /// Returns the job's status (`None` when the job is gone).
    pub async fn finish(
        &self,
        id: String,
        outcome: String,
    ) -> Result<Option<JobStatus>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let finished = tx.execute(
                "UPDATE jobs SET status = 'finished', outcome = ?2, finished_ms = ?3
                 WHERE id = ?1 AND status = 'running'",
                params![id, outcome, now_ms()],
            )?;
            if finished == 0 {
                tx.execute(
                    "UPDATE jobs SET outcome = ?2
                     WHERE id = ?1 AND status = 'cancelled' AND outcome IS NULL",
                    params![id, outcome],
                )?;
            }
            let status = tx
                .query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?;
            tx.commit()?;
            Ok(status.map(|s| JobStatus::parse(&s)))
        })
        .await
    }

    /// Marks a running job failed with a code and a sentence; false when it
    /// was not running (cancelled meanwhile), which leaves it as it is.
    pub async fn fail(
        &self,
        id: String,
        code: String,
        message: String,
    ) -> Result<bool, StoreError> {
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET status = 'failed', error_code = ?2, error_message = ?3,
                 finished_ms = ?4 WHERE id = ?1 AND status = 'running'",
                params![id, code, message, now_ms()],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Cancels job `id` of `tenant` if it is queued or running. The new
    /// state is durable before this returns: a crash after it never runs
    /// the job again, and a run that ends afterwards cannot make it `finished`.
    pub async fn cancel(&self, id: String, tenant: String) -> Result<CancelResult, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let select = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1 AND tenant = ?2");
            let Some(job) = tx
                .query_row(&select, params![id, tenant], record)
                .optional()?
            else {
                return Ok(CancelResult::NotFound);
            };
            let was = job.status;
            if was.is_terminal() {
                return Ok(CancelResult::NotCancellable(job));
            }
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', finished_ms = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )?;
            let job = tx.query_row(&select, params![id, tenant], record)?;
            tx.commit()?;
            Ok(match was {
                JobStatus::Running => CancelResult::Stopping(job),
                _ => CancelResult::Cancelled(job),
            })
        })
        .await
    }

    /// At start-up: jobs a crash left `running` go back to the queue, or to
    /// `failed` once they have been started `max_attempts` times.
    pub async fn recover(&self, max_attempts: u32) -> Result<Recovery, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let failed = tx.execute(
                "UPDATE jobs SET status = 'failed', error_code = 'interrupted',
                 error_message = 'the server stopped while this job ran, ' || attempts ||
                 ' time(s); it is not retried again', finished_ms = ?2
                 WHERE status = 'running' AND attempts >= ?1",
                params![max_attempts, now_ms()],
            )?;
            let requeued = tx.execute(
                "UPDATE jobs SET status = 'queued', started_ms = NULL WHERE status = 'running'",
                [],
            )?;
            tx.commit()?;
            Ok(Recovery { requeued, failed })
        })
        .await
    }

    /// Deletes terminal jobs that finished before `before_ms`; returns how many.
    pub async fn purge(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM jobs WHERE status IN ('finished', 'failed', 'cancelled')
                 AND finished_ms < ?1",
                params![before_ms],
            )
        })
        .await
    }

    /// Jobs waiting for a worker.
    pub async fn queued(&self) -> Result<usize, StoreError> {
        self.call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (JobStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (JobStore::open(&dir.path().join("jobs.db")).unwrap(), dir)
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[tokio::test]
    async fn a_job_goes_queued_running_finished() {
        let (store, _dir) = store().await;
        store
            .insert(s("a"), s("t"), s("{}"), s("tr"))
            .await
            .unwrap();
        assert_eq!(store.queued().await.unwrap(), 1);
        let job = store.claim_next(vec![]).await.unwrap().unwrap();
        assert_eq!(
            (job.id.as_str(), job.status, job.attempts),
            ("a", JobStatus::Running, 1)
        );
        assert!(store.claim_next(vec![]).await.unwrap().is_none());
        let status = store
            .finish(s("a"), s("{\"verdict\":\"ok\"}"))
            .await
            .unwrap();
        assert_eq!(status, Some(JobStatus::Finished));
        let job = store.get(s("a"), s("t")).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Finished);
        assert!(store.get(s("a"), s("other")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn skipped_tenants_wait_and_cancel_takes_queued_and_running_jobs() {
        let (store, _dir) = store().await;
        store
            .insert(s("a"), s("busy"), s("{}"), s("tr"))
            .await
            .unwrap();
        store
            .insert(s("b"), s("free"), s("{}"), s("tr"))
            .await
            .unwrap();
        let job = store.claim_next(vec![s("busy")]).await.unwrap().unwrap();
        assert_eq!(job.id, "b");
        assert!(matches!(
            store.cancel(s("b"), s("free")).await.unwrap(),
            CancelResult::Stopping(j) if j.status == JobStatus::Cancelled
        ));
        // The run that ends afterwards attaches its outcome, and the job stays cancelled.
        let status = store.finish(s("b"), s("{}")).await.unwrap();
        assert_eq!(status, Some(JobStatus::Cancelled));
        let job = store.get(s("b"), s("free")).await.unwrap().unwrap();
        assert_eq!(
            (job.status, job.outcome.as_deref()),
            (JobStatus::Cancelled, Some("{}"))
        );
        assert!(matches!(
            store.cancel(s("b"), s("free")).await.unwrap(),
            CancelResult::NotCancellable(_)
        ));
        // Nor does recovery after a crash run it again.
        assert_eq!(store.recover(5).await.unwrap(), Recovery::default());
        assert!(matches!(
            store.cancel(s("a"), s("busy")).await.unwrap(),
            CancelResult::Cancelled(j) if j.status == JobStatus::Cancelled
        ));
        assert!(matches!(
            store.cancel(s("a"), s("free")).await.unwrap(),
            CancelResult::NotFound
        ));
    }

    #[tokio::test]
    async fn recovery_requeues_then_gives_up_and_purge_keeps_live_jobs() {
        let (store, _dir) = store().await;
        store
            .insert(s("a"), s("t"), s("{}"), s("tr"))
            .await
            .unwrap();
        store.claim_next(vec![]).await.unwrap().unwrap();
        let recovery = store.recover(2).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                requeued: 1,
                failed: 0
            }
        );
        store.claim_next(vec![]).await.unwrap().unwrap();
        let recovery = store.recover(2).await.unwrap();
        assert_eq!(
            recovery,
            Recovery {
                requeued: 0,
                failed: 1
            }
        );
        let job = store.get(s("a"), s("t")).await.unwrap().unwrap();
        assert_eq!(job.error.unwrap().0, "interrupted");
        store
            .insert(s("b"), s("t"), s("{}"), s("tr"))
            .await
            .unwrap();
        assert_eq!(store.purge(now_ms() + 1).await.unwrap(), 1);
        assert!(store.get(s("b"), s("t")).await.unwrap().is_some());
    }
}
