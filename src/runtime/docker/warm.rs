//! The Docker warm pool: containers created and started ahead of their call,
//! each with the full hardening of a cold run, each used by one call only.
//!
//! A pool holds containers of one shape: everything a container is created
//! with (image, platform, `HostConfig` with its limits and seccomp profile,
//! user, the policy's fixed environment). A call computes the shape its
//! policy (tightened by the call's limits) gives, claims a ready container
//! of that shape, and hands it the call the way the cold path does, on the
//! container's stdin (see `workdir::warm_launch`); the container's
//! bootstrap has been waiting there, with python started and what it needs
//! imported, and runs the program in a fork of that interpreter as
//! `python3 -s` would.
//! Output (streamed to a watcher as it comes, under the cap), cancelling,
//! declared output files, limits, exit status and the verdict are the cold
//! path's own code (`DockerRuntime::collect`), which ends the call on the
//! bootstrap's end trailer (the program is over, every other process gone)
//! rather than on the daemon's handling of the container's exit. The
//! container is then removed in the background, and a refill starts in the
//! background: the caller never waits for either. A call costs the
//! payload's trip, a fork, and the program.
//!
//! A shape's pool is made at its first call (or by `prewarm`), up to
//! `max_pools` shapes; calls of another shape run cold. A call that finds
//! its pool empty waits for a container that is starting, if one is not
//! promised to an earlier call, and otherwise runs cold. Per-call limits
//! change the shape only where they change the container (memory, pids,
//! CPU quota and time, open files, file size, tmpfs size); the wall clock
//! and the output cap are the caller's and do not. Repeated per-call limits
//! get a pool of their own like a policy.
//!
//! Budgets count from the claim, not from the container's start: the wall
//! clock starts when the call is handed over, and CPU time and pids-limit
//! hits are read from the container's cgroup as the difference from a
//! sample taken at the claim (OOM kills too, when the trailer ends the
//! call). The waiting bootstrap blocks in `read(2)` and uses no CPU while
//! it waits; what it used to start (python's start and a few imports, tens
//! of milliseconds) is in that baseline. The program runs in a fork of the
//! bootstrap, so its `RLIMIT_CPU` counts from the fork (on the cold path,
//! the fork then execs python3, so it also counts python's start). In both
//! the bootstrap is pid 1 and the program's process its child: a pool's
//! container has the policy's pids limit, and the program exactly the
//! processes a cold container gives it.
//!
//! Pool containers carry the cold path's labels (runtime, owner, job) plus
//! `dev.pyward.pool` (which runtime's pool): after a crash, the next
//! `DockerRuntime::new` removes them as orphans. Dropping the runtime
//! removes every container it made.

use super::usage::CgroupFiles;
use super::workdir::{self, READY};
use super::{DockerConfig, DockerError, DockerRuntime, Start};
use crate::policy::SandboxPolicy;
use crate::runtime::output_files::OutputCaps;
use crate::runtime::{Outcome, RunError, RunWatch, Runtime, Submission};
use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::ContainerCreateBody;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Label on a warm pool's containers, naming the `DockerWarmRuntime` that made them.
const LABEL_POOL: &str = "dev.pyward.pool";

/// How long a new container may take to say it is ready (python's start
/// under qemu-user takes seconds; natively, tens of milliseconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the warm pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerWarmConfig {
    /// Ready containers kept per shape; 0 runs every call cold.
    pub size: usize,
    /// Shapes (policy and limits) that get a pool; calls of other shapes run cold.
    pub max_pools: usize,
}

impl Default for DockerWarmConfig {
    fn default() -> Self {
        DockerWarmConfig {
            size: 2,
            max_pools: 4,
        }
    }
}

/// Runs each submission in a pre-started, single-use container (see the module docs).
pub struct DockerWarmRuntime {
    /// The cold runtime, driven by a runtime with a worker thread that
    /// refills and removes between calls. `None` only inside `drop`.
    docker: Option<DockerRuntime>,
    pools: Arc<Pools>,
    config: DockerWarmConfig,
    /// The value of `LABEL_POOL` on this runtime's containers: owner and a counter.
    instance: String,
}

impl std::fmt::Debug for DockerWarmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerWarmRuntime")
            .field("docker", &self.docker)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a pool's container is made from; two calls share a pool when equal.
#[derive(Debug, PartialEq)]
struct Shape {
    body: ContainerCreateBody,
    platform: String,
}

/// A started container whose bootstrap waits for its call on stdin.
struct Waiting {
    id: String,
    io: AttachContainerResults,
}

impl Waiting {
    /// False when the container has ended or written anything since it
    /// said it was ready: it is not given a call.
    fn is_waiting(&mut self) -> bool {
        self.io.output.next().now_or_never().is_none()
    }
}

/// What a call gets from its pool.
enum Claim {
    /// A container that waits for it.
    Ready(Waiting),
    /// The promise of a container that is starting.
    Promised(oneshot::Receiver<Waiting>),
    /// Nothing: the call runs cold.
    Cold,
}

/// Every pool, and the background tasks that fill them and remove used containers.
#[derive(Default)]
struct Pools {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set when the runtime is dropped: nothing more is filled or handed out.
    closed: bool,
    pools: Vec<Pool>,
    /// Refills and removals; the drop waits for them all.
    tasks: JoinSet<()>,
}

struct Pool {
    shape: Arc<Shape>,
    ready: VecDeque<Waiting>,
    /// Containers being created and started for this pool.
    starting: usize,
    /// Calls that found no ready container and wait for one that is starting.
    waiters: VecDeque<oneshot::Sender<Waiting>>,
}

impl Pools {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn pool_mut(&mut self, shape: &Arc<Shape>) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| Arc::ptr_eq(&p.shape, shape))
    }
}

impl DockerWarmRuntime {
    /// Connects to the daemon as `DockerRuntime::new` does (removing the
    /// orphans of dead pyward processes); pools start empty (see `prewarm`).
    pub fn new(
        config: DockerConfig,
        warm: DockerWarmConfig,
    ) -> Result<DockerWarmRuntime, DockerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pyward-docker-pool")
            .enable_all()
            .build()
            .map_err(|source| DockerError::AsyncRuntime { source })?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let docker = DockerRuntime::with_async_runtime(config, rt)?;
        let instance = format!("{}-{}", docker.owner, NEXT.fetch_add(1, Ordering::Relaxed));
        Ok(DockerWarmRuntime {
            docker: Some(docker),
            pools: Arc::default(),
            config: warm,
            instance,
        })
    }

    /// `dev.pyward.pool=…`: the label every container of this runtime's
    /// pools carries (for `docker ps --filter label=…`).
    pub fn pool_label(&self) -> String {
        format!("{LABEL_POOL}={}", self.instance)
    }

    fn docker(&self) -> &DockerRuntime {
        self.docker
            .as_ref()
            .expect("the cold runtime is taken only by drop")
    }

    /// The cold runtime underneath (its image, orphan removal, the `docker run` equivalent).
    pub fn cold(&self) -> &DockerRuntime {
        self.docker()
    }

    /// How many containers of `policy`'s shape wait for a call now.
    pub fn ready(&self, policy: &SandboxPolicy) -> Result<usize, RunError> {
        let shape = self.shape(policy)?;
        let state = self.pools.lock();
        Ok(state
            .pools
            .iter()
            .find(|p| *p.shape == shape)
            .map_or(0, |p| p.ready.len()))
    }

    /// Containers being started or removed in the background now, all pools together.
    pub fn in_flight(&self) -> usize {
        let mut state = self.pools.lock();
        while state.tasks.try_join_next().is_some() {}
        state.tasks.len()
    }

    fn shape(&self, policy: &SandboxPolicy) -> Result<Shape, RunError> {
        let docker = self.docker();
        let filters = docker.filters(policy)?;
        // The policy's fixed environment only: a call's own variables travel
        // in its payload, and the program's process gets exactly its environment.
        let env = policy.environment(&Default::default());
        // The pids limit is the cold container's: in both, pid 1 is the
        // bootstrap and the program's process its child.
        let body = docker.container_body(policy, &workdir::warm_cmd(), &filters.profile, &env);
        Ok(Shape {
            body,
            platform: docker.platform(),
        })
    }

    /// The index of `shape`'s pool, made if there is room for another.
    fn pool_index(&self, state: &mut State, shape: Shape) -> Option<usize> {
        if state.closed || self.config.size == 0 {
            return None;
        }
        if let Some(index) = state.pools.iter().position(|p| *p.shape == shape) {
            return Some(index);
        }
        if state.pools.len() >= self.config.max_pools {
            return None;
        }
        state.pools.push(Pool {
            shape: Arc::new(shape),
            ready: VecDeque::new(),
            starting: 0,
            waiters: VecDeque::new(),
        });
        Some(state.pools.len() - 1)
    }

    /// Starts containers until the pool's ready and starting ones make its size.
    fn refill(&self, state: &mut State, index: usize) {
        let docker = self.docker();
        let State { pools, tasks, .. } = state;
        let pool = &mut pools[index];
        while pool.ready.len() + pool.starting < self.config.size {
            pool.starting += 1;
            let mut labels = docker.labels();
            labels.insert(LABEL_POOL.to_owned(), self.instance.clone());
            let fill = fill(
                docker.docker.clone(),
                pool.shape.clone(),
                labels,
                self.pools.clone(),
            );
            tasks.spawn_on(fill, docker.rt.handle());
        }
        // Finished tasks leave the set here, so that it holds only live ones.
        while tasks.try_join_next().is_some() {}
    }

    /// A waiting container of `shape`, the promise of one that is
    /// starting, or nothing (the call runs cold).
    fn claim(&self, shape: Shape) -> Claim {
        let mut state = self.pools.lock();
        let Some(index) = self.pool_index(&mut state, shape) else {
            return Claim::Cold;
        };
        let pool = &mut state.pools[index];
        let mut dead = Vec::new();
        let mut claimed = None;
        while let Some(mut waiting) = pool.ready.pop_front() {
            if waiting.is_waiting() {
                claimed = Some(waiting);
                break;
            }
            dead.push(waiting.id);
        }
        self.refill(&mut state, index);
        let pool = &mut state.pools[index];
        let claim = match claimed {
            Some(waiting) => Claim::Ready(waiting),
            None if pool.starting > pool.waiters.len() => {
                let (tx, rx) = oneshot::channel();
                pool.waiters.push_back(tx);
                Claim::Promised(rx)
            }
            None => Claim::Cold,
        };
        for id in dead {
            tracing::warn!(container = %id, "a pooled container ended before its call; removed");
            self.remove_later(&mut state, id);
        }
        claim
    }

    /// Removes a used container in the background.
    fn remove_later(&self, state: &mut State, id: String) {
        let docker = self.docker();
        let client = docker.docker.clone();
        state.tasks.spawn_on(
            async move {
                if let Err(e) = super::remove(&client, &id).await {
                    tracing::warn!(container = %id, error = %e, "cannot remove a used pooled container");
                }
            },
            docker.rt.handle(),
        );
    }

    async fn run_async(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        observer: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let docker = self.docker();
        policy
            .check_env(&submission.env)
            .map_err(|e| RunError::InvalidSubmission(e.to_string()))?;
        let filters = docker.filters(policy)?;
        let env = policy.environment(&submission.env);
        let caps = OutputCaps::of(&policy.limits);
        // A bad submission is refused before it takes a container.
        let launch = workdir::warm_launch(submission, &filters.native, caps, &env)?;
        let claimed = match self.claim(self.shape(policy)?) {
            Claim::Ready(waiting) => Some(waiting),
            Claim::Cold => None,
            // A refill that fails drops the sender: the call runs cold. A
            // cancel stops the wait (the container goes to the next call,
            // and the cold path ends the run at once), unless it came meanwhile.
            Claim::Promised(mut promised) => {
                let (_cancel, cancelled) = super::cancelled(observer);
                tokio::select! {
                    waiting = &mut promised => waiting.ok(),
                    () = cancelled => {
                        promised.close();
                        promised.try_recv().ok()
                    }
                }
            }
        };
        let Some(waiting) = claimed else {
            return docker.run_async(policy, submission, observer).await;
        };
        let start = Start {
            at: Instant::now(),
            baseline: CgroupFiles::new(Path::new("/sys/fs/cgroup"), &waiting.id)
                .sample()
                .unwrap_or_default(),
        };
        let Waiting { id, io } = waiting;
        let result = docker
            .collect(&id, &policy.limits, io, launch, start, observer)
            .await;
        self.remove_later(&mut self.pools.lock(), id);
        result
    }
}

/// Creates and starts one container of `shape` and hands it to a waiting
/// call or to the pool; removes it instead when the runtime is gone.
async fn fill(
    docker: Docker,
    shape: Arc<Shape>,
    labels: std::collections::HashMap<String, String>,
    pools: Arc<Pools>,
) {
    let started = start_waiting(&docker, &shape, labels).await;
    let unwanted = {
        let mut state = pools.lock();
        let closed = state.closed;
        match (state.pool_mut(&shape), started) {
            (Some(pool), Ok(waiting)) if !closed => {
                pool.starting -= 1;
                hand_over(pool, waiting);
                None
            }
            (pool, Ok(waiting)) => {
                if let Some(pool) = pool {
                    pool.starting -= 1;
                }
                Some(waiting.id)
            }
            (pool, Err(e)) => {
                tracing::warn!(error = %e, "cannot start a pooled container; calls run cold meanwhile");
                if let Some(pool) = pool {
                    pool.starting -= 1;
                    // Calls beyond what is still starting stop waiting and run cold.
                    while pool.waiters.len() > pool.starting {
                        pool.waiters.pop_back();
                    }
                }
                None
            }
        }
    };
    if let Some(id) = unwanted {
        let _ = super::remove(&docker, &id).await;
    }
}

/// Gives `waiting` to the first call still waiting, or keeps it ready.
fn hand_over(pool: &mut Pool, mut waiting: Waiting) {
    while let Some(waiter) = pool.waiters.pop_front() {
        match waiter.send(waiting) {
            Ok(()) => return,
            // That call gave up: the next one, or the pool.
            Err(back) => waiting = back,
        }
    }
    pool.ready.push_back(waiting);
}

/// Creates, attaches and starts a container of `shape`, and waits for its
/// bootstrap to say `READY`; removes it if it does not.
async fn start_waiting(
    docker: &Docker,
    shape: &Shape,
    labels: std::collections::HashMap<String, String>,
) -> Result<Waiting, DockerError> {
    let id = super::create(docker, &shape.platform, shape.body.clone(), labels).await?;
    let ready = async {
        let mut io = super::attach_and_start(docker, &id).await?;
        match tokio::time::timeout(READY_TIMEOUT, read_ready(&mut io)).await {
            Ok(Ok(())) => Ok(io),
            Ok(Err(seen)) => Err(DockerError::PoolContainerNotReady {
                id: id.clone(),
                seen,
            }),
            Err(_) => Err(DockerError::PoolContainerNotReady {
                id: id.clone(),
                seen: format!("nothing within {READY_TIMEOUT:?}"),
            }),
        }
    };
    match ready.await {
        Ok(io) => Ok(Waiting { id, io }),
        Err(e) => {
            let _ = super::remove(docker, &id).await;
            Err(e)
        }
    }
}

/// Reads exactly `READY` from the container's stdout; else what came instead.
async fn read_ready(io: &mut AttachContainerResults) -> Result<(), String> {
    let mut seen = Vec::new();
    while seen.len() < READY.len() {
        match io.output.next().await {
            Some(Ok(LogOutput::StdOut { message })) => seen.extend_from_slice(&message),
            Some(Ok(LogOutput::StdErr { message })) => {
                return Err(format!("stderr {:?}", String::from_utf8_lossy(&message)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("the attach stream broke: {e}")),
            None => return Err("the container ended".to_owned()),
        }
    }
    if seen != READY {
        return Err(format!("stdout {:?}", String::from_utf8_lossy(&seen)));
    }
    Ok(())
}

impl Runtime for DockerWarmRuntime {
    fn name(&self) -> &'static str {
        "docker-warm"
    }

    fn kind(&self) -> &'static str {
        "docker"
    }

    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError> {
        self.docker()
            .rt
            .block_on(self.run_async(policy, submission, watch))
    }

    /// Starts filling the pool of `policy`'s shape, without waiting for it.
    fn prewarm(&self, policy: &SandboxPolicy) -> Result<(), RunError> {
        let shape = self.shape(policy)?;
        let mut state = self.pools.lock();
        if let Some(index) = self.pool_index(&mut state, shape) {
            self.refill(&mut state, index);
        }
        Ok(())
    }

    /// Containers waiting for a call now, all pools together.
    fn warm_ready(&self) -> usize {
        self.pools.lock().pools.iter().map(|p| p.ready.len()).sum()
    }
}

impl Drop for DockerWarmRuntime {
    /// Removes the ready containers and waits for every refill (which then
    /// removes what it started) and every removal.
    fn drop(&mut self) {
        let Some(docker) = self.docker.take() else {
            return;
        };
        let (idle, mut tasks) = {
            let mut state = self.pools.lock();
            state.closed = true;
            let idle: Vec<Waiting> = state
                .pools
                .iter_mut()
                .flat_map(|p| {
                    p.waiters.clear();
                    p.ready.drain(..)
                })
                .collect();
            (idle, std::mem::take(&mut state.tasks))
        };
        // On a thread of its own: dropping inside an async context may
        // neither block on a runtime nor drop one.
        std::thread::scope(|s| {
            s.spawn(move || {
                docker.rt.block_on(async {
                    for Waiting { id, io } in idle {
                        drop(io);
                        if let Err(e) = super::remove(&docker.docker, &id).await {
                            tracing::warn!(container = %id, error = %e, "cannot remove a pooled container");
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                });
                drop(docker);
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(id: &str, output: Vec<Result<LogOutput, bollard::errors::Error>>) -> Waiting {
        let output: std::pin::Pin<Box<dyn futures_util::Stream<Item = _> + Send>> =
            if output.is_empty() {
                Box::pin(futures_util::stream::pending())
            } else {
                Box::pin(futures_util::stream::iter(output))
            };
        Waiting {
            id: id.to_owned(),
            io: AttachContainerResults {
                output,
                input: Box::pin(tokio::io::sink()),
            },
        }
    }

    fn pool() -> Pool {
        Pool {
            shape: Arc::new(Shape {
                body: ContainerCreateBody::default(),
                platform: "linux/amd64".into(),
            }),
            ready: VecDeque::new(),
            starting: 0,
            waiters: VecDeque::new(),
        }
    }

    #[test]
    fn a_started_container_goes_to_the_first_call_still_waiting_else_to_the_pool() {
        let mut pool = pool();
        let (gone, gave_up) = oneshot::channel();
        drop(gave_up);
        let (first, mut first_rx) = oneshot::channel();
        let (second, mut second_rx) = oneshot::channel();
        pool.waiters.extend([gone, first, second]);
        hand_over(&mut pool, waiting("a", vec![]));
        assert_eq!(first_rx.try_recv().map(|w| w.id).ok().as_deref(), Some("a"));
        assert!(second_rx.try_recv().is_err(), "one container, one call");
        assert_eq!(pool.waiters.len(), 1);
        pool.waiters.clear();
        hand_over(&mut pool, waiting("b", vec![]));
        assert_eq!(pool.ready.len(), 1);
        assert_eq!(pool.ready[0].id, "b");
    }

    #[test]
    fn a_container_that_ended_or_wrote_since_ready_is_not_handed_out() {
        assert!(waiting("quiet", vec![]).is_waiting());
        let mut ended = waiting("ended", vec![]);
        ended.io.output = Box::pin(futures_util::stream::empty());
        assert!(!ended.is_waiting());
        let wrote = Ok(LogOutput::StdErr {
            message: "Traceback".into(),
        });
        assert!(!waiting("wrote", vec![wrote]).is_waiting());
    }
}
