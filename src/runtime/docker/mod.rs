//! The Docker runtime: one fresh, hardened container per run, driven through
//! bollard over the daemon's unix socket. Never pulls an image.
//!
//! `host_config` is the only place a policy becomes Docker settings,
//! `workdir` gets the files in (on stdin, since the rootfs is read-only),
//! `files` gets the declared output files out (on stdout, after a marker),
//! `usage` samples the container's cgroup, `verdict` decides. This module owns
//! the container's life: create, attach, start, watch, and always remove.
//! `warm` keeps single-use containers started ahead of their call; a run in
//! one ends in the same `collect` as a run in a fresh one.
//!
//! A run ends at the end of the container's streams, with the exit status
//! from Docker (its `die` event or wait, then inspect for `OOMKilled`);
//! except when the bootstrap writes an end trailer (every pooled call, and
//! a cold one with output files) and it comes whole on both
//! streams (`files`): the program is then over and no other process of the
//! container is left, so the run ends there, with the trailer's exit status
//! and OOM kills from the cgroup's counter (against the start's sample), and
//! Docker's teardown of the container (15 to 25 ms here) happens after the
//! call. CPU time, peak memory and pids-limit hits come from the cgroup
//! either way. A run pyward stopped, or one without a whole trailer (the
//! container killed, a setup failure, a cold run without output files),
//! ends as before.

mod files;
mod host_config;
mod usage;
mod verdict;
mod warm;
mod workdir;

pub use host_config::{WORK_DIR, host_config};
pub use warm::{DockerWarmConfig, DockerWarmRuntime};

use super::output_files::OutputCaps;
use super::watch::CancelGuard;
use super::{Captured, Outcome, RunError, RunWatch, Runtime, Stream, Submission, Usage};
use crate::arch::Arch;
use crate::policy::{DeniedAction, Limits, SandboxPolicy};
use crate::seccomp::{self, Allowlist, SeccompError};
use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use usage::{CgroupFiles, Sample};
use verdict::{KillReason, Observed};

/// The image recipe the Docker runtime runs when none is named.
pub const DEFAULT_IMAGE: &str = "python3.11-bookworm";

/// Label on every container pyward creates: the job's id.
pub const LABEL_JOB: &str = "dev.pyward.job";
/// Label on every container pyward creates: `docker`.
pub const LABEL_RUNTIME: &str = "dev.pyward.runtime";
/// Label naming the pyward process that owns the container (`PID-STARTTIME`).
pub const LABEL_OWNER: &str = "dev.pyward.owner";

/// The Docker API version pyward speaks (Docker Engine 20.10).
const API_VERSION: bollard::ClientVersion = bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Host-side settings of the Docker runtime.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The image to run, which must already be in the daemon (never pulled);
    /// by default `pyward/python3.11-bookworm:ARCH` for the host's architecture.
    pub image: String,
    /// The architecture the image is for; the container is created for
    /// platform `linux/ARCH`. Another architecture than the host's runs under
    /// qemu-user (binfmt_misc), with the seccomp differences of docs/SECURITY.md.
    pub arch: Arch,
    /// The daemon's socket.
    pub socket: String,
    /// How long one API call may take, in seconds.
    pub api_timeout_secs: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig::for_arch(Arch::host())
    }
}

impl DockerConfig {
    /// The default settings for `arch`: the image `pyward/python3.11-bookworm:ARCH`.
    pub fn for_arch(arch: Arch) -> DockerConfig {
        DockerConfig::for_image(DEFAULT_IMAGE, arch)
    }

    /// The default settings for the image built from recipe `name` for
    /// `arch`: its tag `pyward/NAME:ARCH`.
    pub fn for_image(name: &str, arch: Arch) -> DockerConfig {
        DockerConfig {
            image: format!(
                "{}:{}",
                crate::image::docker_repository(name),
                arch.as_str()
            ),
            arch,
            socket: "/var/run/docker.sock".into(),
            api_timeout_secs: 30,
        }
    }

    /// True when the image's architecture is not the host's: it runs under qemu-user.
    pub fn emulated(&self) -> bool {
        self.arch != Arch::host()
    }
}

/// A failure talking to Docker or preparing a Docker run.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The async runtime the client runs on could not be built.
    #[error("failed to start the async runtime for the Docker client")]
    AsyncRuntime {
        /// The cause.
        source: std::io::Error,
    },
    /// The daemon's socket is missing or does not answer.
    #[error("cannot reach the Docker daemon at unix://{socket} (is dockerd running?)")]
    Unreachable {
        /// The socket path.
        socket: String,
        /// The cause.
        source: bollard::errors::Error,
    },
    /// The image is not in the daemon; pyward never pulls.
    #[error("image {image} is not in the Docker daemon and pyward never pulls: {hint}")]
    ImageMissing {
        /// The image reference.
        image: String,
        /// What to run to get it.
        hint: String,
    },
    /// A Docker API call failed.
    #[error("docker: failed to {step}")]
    Api {
        /// What pyward was doing.
        step: &'static str,
        /// The cause.
        source: bollard::errors::Error,
    },
    /// The image exists but was built for another architecture than the configured one.
    #[error("image {image} is for {found:?}, not {wanted}: use the image built for {wanted}")]
    ImageArch {
        /// The image reference.
        image: String,
        /// The configured architecture.
        wanted: Arch,
        /// The image's architecture as Docker reports it.
        found: String,
    },
    /// Another architecture than the host's needs a qemu-user handler in binfmt_misc.
    #[error(
        "running {arch} code on this {host} host needs qemu-user registered with binfmt_misc \
         ({path} is missing or disabled): install qemu-user-static and binfmt-support"
    )]
    NoEmulator {
        /// The configured architecture.
        arch: Arch,
        /// The host's architecture.
        host: Arch,
        /// The binfmt_misc entry looked for.
        path: String,
    },
    /// A warm pool's new container did not say it was ready for a call.
    #[error("a pooled container ({id}) did not get ready for its call: {seen}")]
    PoolContainerNotReady {
        /// The container.
        id: String,
        /// What it did instead.
        seen: String,
    },
    /// The policy's seccomp allowlist could not be loaded.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The random marker of the output files could not be made.
    #[error("failed to read random bytes for the output files' marker from /dev/urandom")]
    Random {
        /// The cause.
        source: std::io::Error,
    },
}

fn api(step: &'static str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    move |source| DockerError::Api { step, source }
}

/// The two layers of syscall filtering of a run.
#[derive(Debug)]
struct Filters {
    /// The container's profile (the allowlist plus Docker's plumbing), as JSON.
    profile: String,
    /// The native runtime's BPF programs for the allowlist, as raw
    /// `struct sock_filter` arrays, which the program's process installs on top.
    native: Vec<Vec<u8>>,
}

/// Runs each submission in a fresh container (see the module docs).
pub struct DockerRuntime {
    config: DockerConfig,
    docker: Docker,
    rt: tokio::runtime::Runtime,
    owner: String,
    /// Seccomp profiles as JSON and the native filters as raw BPF, per (allowlist, denied action).
    profiles: Mutex<HashMap<FilterKey, Arc<Filters>>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the daemon, checks that it answers, and removes the
    /// containers that a pyward process which no longer runs left behind.
    pub fn new(config: DockerConfig) -> Result<DockerRuntime, DockerError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| DockerError::AsyncRuntime { source })?;
        DockerRuntime::with_async_runtime(config, rt)
    }

    /// `new`, the client driven by `rt`: the warm pool hands in a runtime
    /// with a worker thread, which keeps refilling between calls.
    fn with_async_runtime(
        config: DockerConfig,
        rt: tokio::runtime::Runtime,
    ) -> Result<DockerRuntime, DockerError> {
        if config.emulated() {
            check_emulator(config.arch)?;
        }
        let unreachable = |source| DockerError::Unreachable {
            socket: config.socket.clone(),
            source,
        };
        let docker = {
            let _guard = rt.enter();
            Docker::connect_with_unix(&config.socket, config.api_timeout_secs, &API_VERSION)
                .map_err(unreachable)?
        };
        rt.block_on(docker.ping()).map_err(unreachable)?;
        let runtime = DockerRuntime {
            owner: owner_of(std::process::id()).unwrap_or_default(),
            config,
            docker,
            rt,
            profiles: Mutex::new(HashMap::new()),
        };
        // Housekeeping, never a reason not to start: what is left now goes at the next start.
        match runtime.remove_orphans() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, "removed containers left by a pyward that is gone");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the containers left by a pyward that is gone");
            }
        }
        Ok(runtime)
    }

    /// The seccomp profile a container runs under: the allowlist's Docker
    /// profile plus the few syscalls Docker's own plumbing makes under it (see
    /// `add_container_plumbing`). `pyward policy export --format docker` prints it.
    pub fn seccomp_profile(
        allowlist: &Allowlist,
        denied: DeniedAction,
        arches: &[Arch],
    ) -> serde_json::Value {
        let mut profile = seccomp::docker_profile(allowlist, denied, arches);
        add_container_plumbing(&mut profile);
        profile
    }

    /// The profile of a container whose program runs under qemu-user: the
    /// kernel sees qemu's syscalls, so the profile is the host's (the
    /// allowlist's host-arch names) plus what qemu itself needs (see
    /// `add_emulator_needs`), and it is the only filter (docs/SECURITY.md).
    pub fn emulated_seccomp_profile(
        allowlist: &Allowlist,
        denied: DeniedAction,
    ) -> serde_json::Value {
        let mut profile = DockerRuntime::seccomp_profile(allowlist, denied, &[Arch::host()]);
        add_emulator_needs(&mut profile);
        profile
    }

    /// `docker run` arguments (up to and including the image) for a container
    /// hardened exactly as this runtime would for `policy`, the seccomp profile
    /// read from `profile_path`; and the profile to write there.
    pub fn docker_run_equivalent(
        &self,
        policy: &SandboxPolicy,
        profile_path: &str,
    ) -> Result<(Vec<String>, String), DockerError> {
        let profile = self.filters(policy)?.profile.clone();
        let config = host_config(policy, &profile);
        let mut args = vec![
            "run".to_owned(),
            "--rm".to_owned(),
            "--pull".to_owned(),
            "never".to_owned(),
        ];
        args.extend(host_config::docker_run_flags(
            &config,
            &host_config::user(policy),
            profile_path,
        ));
        args.extend(["--hostname".to_owned(), "pyward".to_owned()]);
        args.extend([
            "--platform".to_owned(),
            format!("linux/{}", self.config.arch.as_str()),
        ]);
        for (name, value) in policy.environment(&Default::default()) {
            args.extend(["--env".to_owned(), format!("{name}={value}")]);
        }
        args.push(self.config.image.clone());
        Ok((args, profile))
    }

    /// The configured image.
    pub fn image(&self) -> &str {
        &self.config.image
    }

    /// Force-removes every pyward container whose owning process is gone;
    /// returns how many this call removed. Containers of live pyward
    /// processes are left alone. Other pyward processes sweep the same
    /// orphans at their start: one that another process removed meanwhile, or
    /// is removing, is done. Any other failure leaves that container for the
    /// next sweep and, once every orphan was tried, is the error.
    pub fn remove_orphans(&self) -> Result<usize, DockerError> {
        self.rt.block_on(async {
            let filters =
                HashMap::from([("label".to_owned(), vec![format!("{LABEL_RUNTIME}=docker")])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let containers = self
                .docker
                .list_containers(Some(options))
                .await
                .map_err(api("list pyward's containers"))?;
            let mut removed = 0;
            let mut failed = None;
            for container in containers {
                let owner = container
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_OWNER))
                    .map(String::as_str);
                if owner.is_some_and(owner_alive) {
                    continue;
                }
                let Some(id) = container.id else { continue };
                match orphan_removal(self.docker.remove_container(&id, Some(force())).await) {
                    Ok(Removal::Removed) => removed += 1,
                    Ok(Removal::ByAnother) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            failed.map_or(Ok(removed), Err)
        })
    }

    /// Fails with `ImageMissing` unless the image is in the daemon.
    pub fn check_image(&self) -> Result<(), DockerError> {
        self.rt.block_on(self.inspect_image())
    }

    async fn inspect_image(&self) -> Result<(), DockerError> {
        match self.docker.inspect_image(&self.config.image).await {
            Ok(image) => match image.architecture {
                Some(found) if found != self.config.arch.as_str() => Err(DockerError::ImageArch {
                    image: self.config.image.clone(),
                    wanted: self.config.arch,
                    found,
                }),
                _ => Ok(()),
            },
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(image_missing(&self.config.image)),
            Err(source) => Err(DockerError::Api {
                step: "inspect the image",
                source,
            }),
        }
    }

    fn filters(&self, policy: &SandboxPolicy) -> Result<Arc<Filters>, DockerError> {
        let settings = &policy.seccomp;
        let key = (
            settings.allowlist.clone(),
            settings.search_dir.clone(),
            settings.denied,
        );
        let mut cache = self.profiles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(filters) = cache.get(&key) {
            return Ok(filters.clone());
        }
        let allowlist = Allowlist::load(&key.0, key.1.as_deref())?;
        let filters = if self.config.emulated() {
            // qemu-user refuses PR_SET_SECCOMP from the guest (EINVAL), and a
            // filter for the guest's arch would never see a guest syscall.
            Filters {
                profile: DockerRuntime::emulated_seccomp_profile(&allowlist, key.2).to_string(),
                native: Vec::new(),
            }
        } else {
            let native = seccomp::compile(&allowlist, key.2, Arch::host())?;
            Filters {
                profile: DockerRuntime::seccomp_profile(&allowlist, key.2, &[Arch::host()])
                    .to_string(),
                native: native.programs().iter().map(|p| bpf_bytes(p)).collect(),
            }
        };
        let filters = Arc::new(filters);
        cache.insert(key, filters.clone());
        Ok(filters)
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        remove(&self.docker, id).await
    }

    async fn run_async(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        observer: &RunWatch,
    ) -> Result<Outcome, RunError> {
        policy
            .check_env(&submission.env)
            .map_err(|e| RunError::InvalidSubmission(e.to_string()))?;
        let filters = self.filters(policy)?;
        let caps = OutputCaps::of(&policy.limits);
        let launch = workdir::launch(submission, &filters.native, caps)?;
        self.inspect_image().await?;
        let env = policy.environment(&submission.env);
        let body = self.container_body(policy, &launch.cmd, &filters.profile, &env);
        let id = create(&self.docker, &self.platform(), body, self.labels()).await?;
        // Whatever happens from here on, the container goes.
        let result = self.watch(&id, policy, launch, observer).await;
        let removed = self.remove(&id).await;
        let outcome = result?;
        removed?;
        Ok(outcome)
    }

    /// The labels of a new container: a fresh job id, the runtime, this process.
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_JOB.to_owned(), job_id()),
            (LABEL_RUNTIME.to_owned(), "docker".to_owned()),
            (LABEL_OWNER.to_owned(), self.owner.clone()),
        ])
    }

    /// `--platform` of every container: the configured architecture.
    fn platform(&self) -> String {
        format!("linux/{}", self.config.arch.as_str())
    }

    /// Everything a container is created with but its labels: the image,
    /// the command, the environment, the user and `host_config`.
    fn container_body(
        &self,
        policy: &SandboxPolicy,
        cmd: &[String],
        profile: &str,
        env: &[(String, String)],
    ) -> ContainerCreateBody {
        let env = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ContainerCreateBody {
            image: Some(self.config.image.clone()),
            cmd: Some(cmd.to_vec()),
            entrypoint: Some(Vec::new()),
            env: Some(env),
            user: Some(host_config::user(policy)),
            working_dir: Some(WORK_DIR.to_owned()),
            hostname: Some("pyward".to_owned()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(host_config(policy, profile)),
            ..ContainerCreateBody::default()
        }
    }

    /// Attaches, starts, and collects the run (see `collect`). The caller
    /// removes the container.
    async fn watch(
        &self,
        id: &str,
        policy: &SandboxPolicy,
        launch: workdir::Launch,
        observer: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let io = attach_and_start(&self.docker, id).await?;
        let start = Start {
            at: Instant::now(),
            baseline: Sample::default(),
        };
        self.collect(id, &policy.limits, io, launch, start, observer)
            .await
    }

    /// Feeds `launch.stdin` to a started container, captures output under
    /// the caps and the wall clock (counted from `start`), passing it to the
    /// observer as it comes and splitting the declared output files off its
    /// stdout, kills the container when the observer's token is cancelled,
    /// then reads the exit state. Both paths end here: a fresh container
    /// (`watch`) and a pooled one (`DockerWarmRuntime`).
    async fn collect(
        &self,
        id: &str,
        limits: &Limits,
        io: AttachContainerResults,
        launch: workdir::Launch,
        start: Start,
        observer: &RunWatch,
    ) -> Result<Outcome, RunError> {
        let started = start.at;
        let deadline = tokio::time::Instant::from_std(started) + limits.wall_time;
        let mut input = io.input;
        let mut output = io.output;
        let stdin = launch.stdin;
        let feed = tokio::spawn(async move {
            // A program that exits without reading its stdin breaks the pipe: not an error.
            let _ = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
        });
        let (sampler, samples) = spawn_sampler(id);
        let exited = {
            let (docker, id) = (self.docker.clone(), id.to_owned());
            let since = SystemTime::now();
            tokio::spawn(async move { exit_status(&docker, &id, since).await })
        };

        let cap = usize::try_from(limits.output.bytes()).unwrap_or(usize::MAX);
        let mut split = launch.outputs.as_ref().map(files::Split::new);
        let Captures {
            stdout,
            stderr,
            killed,
            ended,
        } = capture(&mut output, deadline, cap, split.as_mut(), observer).await;
        // The bootstrap said how the program ended, and the cgroup still
        // tells whether the OOM killer struck: no need to wait for Docker.
        let trailer = ended.and_then(|status| {
            let oom_kills = CgroupFiles::new(Path::new("/sys/fs/cgroup"), id).oom_kills()?;
            Some((status, oom_kills > start.baseline.oom_kills))
        });
        // Close the attach connection first: a daemon blocked writing output
        // we no longer read holds the container, and kill and inspect would wait on it.
        drop(output);
        if killed.is_some() {
            self.kill(id).await;
        }
        feed.abort();
        let (exit_code, oom_killed) = match trailer {
            Some((status, oom_killed)) => {
                exited.abort();
                (Some(status), oom_killed)
            }
            None => {
                let state = self.finished_state(id, exited).await?;
                (state.exit_code, state.oom_killed.unwrap_or(false))
            }
        };
        let wall = started.elapsed();
        sampler.abort();
        let sample = usage::since(start.baseline, sample_after(id, *samples.borrow()));

        let observed = Observed {
            killed,
            exit_code,
            oom_killed,
            pids_max_hits: sample.pids_max_hits,
            cpu_used: sample.cpu,
            cpu_limit: limits.cpu_time,
            unpack_failed: verdict::unpack_failed(exit_code, &stderr.bytes),
        };
        let (verdict, exit_code, signal, message) = verdict::decide(&observed);
        Ok(Outcome {
            limits_reached: verdict::limits_reached(&observed),
            verdict,
            exit_code,
            signal,
            stdout,
            stderr,
            usage: Usage {
                wall,
                cpu: sample.cpu,
                peak_memory_bytes: sample.peak_memory,
            },
            message,
            image: None,
            arch: None,
            files: match (&launch.outputs, &split) {
                // The setup failed: whatever the bootstrap found, the program never ran.
                (Some(spec), _) if verdict == super::Verdict::SandboxError => {
                    super::output_files::not_collected(&spec.paths)
                }
                (Some(spec), Some(split)) => split.stdout.files(spec),
                _ => Vec::new(),
            },
        })
    }

    async fn kill(&self, id: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        // A container that already exited cannot be killed: that is fine.
        let _ = self.docker.kill_container(id, Some(options)).await;
    }

    /// Waits for the container to stop (`exited`, the wait started with the
    /// run; killing it after a grace period) and reads its exit status; and
    /// inspects it for `OOMKilled` unless it exited 0, where the OOM killer
    /// cannot change the verdict: one round trip less on the common path.
    async fn finished_state(
        &self,
        id: &str,
        mut exited: tokio::task::JoinHandle<Option<i64>>,
    ) -> Result<bollard::models::ContainerState, DockerError> {
        let status = match tokio::time::timeout(Duration::from_secs(2), &mut exited).await {
            Ok(Ok(status)) => status,
            _ => {
                exited.abort();
                self.kill(id).await;
                exit_status(&self.docker, id, SystemTime::now()).await
            }
        };
        if status == Some(0) {
            return Ok(bollard::models::ContainerState {
                exit_code: Some(0),
                ..Default::default()
            });
        }
        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(api("inspect the finished container"))?;
        Ok(inspected.state.unwrap_or_default())
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &RunWatch,
    ) -> Result<Outcome, RunError> {
        self.rt.block_on(self.run_async(policy, submission, watch))
    }
}

/// Creates a container from `body` with `labels`; never pulls (a missing
/// image is `ImageMissing`).
async fn create(
    docker: &Docker,
    platform: &str,
    mut body: ContainerCreateBody,
    labels: HashMap<String, String>,
) -> Result<String, DockerError> {
    let image = body.image.clone().unwrap_or_default();
    body.labels = Some(labels);
    let options = CreateContainerOptionsBuilder::default()
        .platform(platform)
        .build();
    match docker.create_container(Some(options), body).await {
        Ok(response) => Ok(response.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(image_missing(&image)),
        Err(source) => Err(DockerError::Api {
            step: "create the container",
            source,
        }),
    }
}

/// The container's exit status, from its `die` event: the daemon sends it
/// before it cleans the container up (unmounts, network), while the wait
/// endpoint answers only after that cleanup, 5 to 20 ms later here. `since`
/// (a time before the container could end) makes the daemon replay the
/// event should it come before the subscription. The wait runs alongside,
/// and answers should the event be missed (the daemon keeps only its last
/// 256 events) or the events endpoint fail.
async fn exit_status(docker: &Docker, id: &str, since: SystemTime) -> Option<i64> {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(1);
    let filters = HashMap::from([
        ("container".to_owned(), vec![id.to_owned()]),
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["die".to_owned()]),
    ]);
    let options = EventsOptionsBuilder::default()
        .since(&since.to_string())
        .filters(&filters)
        .build();
    let died = async {
        let event = docker.events(Some(options)).next().await?.ok()?;
        event
            .actor?
            .attributes?
            .get("exitCode")?
            .parse::<i64>()
            .ok()
    };
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let waited = async {
        match docker.wait_container(id, Some(options)).next().await {
            Some(Ok(response)) if response.error.is_none() => Some(response.status_code),
            // bollard turns a non-zero status into an error that carries it.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            _ => None,
        }
    };
    tokio::select! {
        Some(status) = died => Some(status),
        status = waited => status,
    }
}

/// How the removal of an orphan ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    /// This call removed it.
    Removed,
    /// Another process (a pyward starting at the same time) removed it
    /// first (404) or is removing it now (409, "removal of container … is
    /// already in progress"): it is gone or going, which is what the sweep wants.
    ByAnother,
}

/// The outcome of a forced removal of an orphan (see [`Removal`]), read
/// from the daemon's status code.
fn orphan_removal(result: Result<(), bollard::errors::Error>) -> Result<Removal, DockerError> {
    match result {
        Ok(()) => Ok(Removal::Removed),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(Removal::ByAnother),
        Err(source) => Err(DockerError::Api {
            step: "remove an orphaned container",
            source,
        }),
    }
}

/// Removal of a container whatever its state, with its anonymous volumes.
fn force() -> bollard::query_parameters::RemoveContainerOptions {
    RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build()
}

/// Force-removes a container (and its anonymous volumes); one already gone is fine.
async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    match docker.remove_container(id, Some(force())).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(DockerError::Api {
            step: "remove the container",
            source,
        }),
    }
}

/// Attaches to the container's stdin, stdout and stderr, then starts it:
/// attached first, so that not one byte of its output is missed.
async fn attach_and_start(
    docker: &Docker,
    id: &str,
) -> Result<AttachContainerResults, DockerError> {
    let attach = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let io = docker
        .attach_container(id, Some(attach))
        .await
        .map_err(api("attach to the container"))?;
    docker
        .start_container(id, None)
        .await
        .map_err(api("start the container"))?;
    Ok(io)
}

/// A BPF program as the kernel's `struct sock_filter` array (8 bytes each, native endian).
fn bpf_bytes(program: &[seccompiler::sock_filter]) -> Vec<u8> {
    program
        .iter()
        .flat_map(|insn| {
            let mut bytes = [0u8; 8];
            bytes[..2].copy_from_slice(&insn.code.to_ne_bytes());
            bytes[2] = insn.jt;
            bytes[3] = insn.jf;
            bytes[4..].copy_from_slice(&insn.k.to_ne_bytes());
            bytes
        })
        .collect()
}

/// Syscalls the container's own plumbing makes under the filter, which the
/// program's allowlist may not list: Docker installs the profile in `runc
/// init` before its last steps (it checks /proc/self/fd with `fstatfs`), and
/// the filter covers the bootstrap, pid 1 (see `workdir`), which makes itself
/// not dumpable, forks the program and reaps every child. The fork is a
/// plain `clone` with no namespace flag; one filter for the whole container
/// cannot tell the bootstrap's fork from the program's: the program's
/// process installs the native filters on top (see `workdir`), and may call
/// `prctl(PR_SET_SECCOMP)` to do so.
fn add_container_plumbing(profile: &mut serde_json::Value) {
    let Some(syscalls) = profile["syscalls"].as_array_mut() else {
        return;
    };
    let entries = [
        serde_json::json!({
            "names": ["fstatfs"],
            "action": "SCMP_ACT_ALLOW",
            "comment": "container plumbing: runc's last check of /proc/self/fd",
        }),
        serde_json::json!({
            "names": ["wait4"],
            "action": "SCMP_ACT_ALLOW",
            "comment": "container plumbing: the bootstrap, pid 1, reaps the program and every orphan (os.wait, os.waitpid)",
        }),
        serde_json::json!({
            "names": ["getcwd"],
            "action": "SCMP_ACT_ALLOW",
            "comment": "container plumbing: the bootstrap's tarfile resolves paths before the native filters (which decide for the program) are in place",
        }),
        serde_json::json!({
            "names": ["prctl"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": 22, "valueTwo": 0, "op": "SCMP_CMP_EQ" }],
            "comment": "container plumbing: the program's process installs the native filters on top (PR_SET_SECCOMP only tightens)",
        }),
        serde_json::json!({
            "names": ["prctl"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                { "index": 0, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_EQ" },
                { "index": 1, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_LE" },
            ],
            "comment": "container plumbing: the bootstrap (pid 1) makes itself not dumpable (PR_SET_DUMPABLE 0) first of all, and a pooled program's process dumpable again (1), as a fresh python3 is",
        }),
        serde_json::json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": 0x7e02_0000_u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
            "comment": "container plumbing: the bootstrap forks the program (no CLONE_NEW* flag)",
        }),
    ];
    // Before the dangerous set's kill rule, which stays last.
    let at = syscalls.len().saturating_sub(1);
    for (i, entry) in entries.into_iter().enumerate() {
        syscalls.insert(at + i, entry);
    }
}

/// What qemu-user itself calls, as host syscalls, beyond the allowlists:
/// derived with `strace -f` of qemu-aarch64 (7.2) running `python3 -c pass`
/// and probes/{strict,standard}.py in the arm64 rootfs. It also calls
/// `clone3` for its own threads, which the profile answers ENOSYS, and glibc
/// falls back to a `clone` with CLONE_THREAD that the allowlist permits.
/// Nothing of the dangerous set is needed: qemu answers the guest's ptrace,
/// bpf, perf_event_open, userfaultfd, keyctl and io_uring calls ENOSYS itself.
fn add_emulator_needs(profile: &mut serde_json::Value) {
    let Some(syscalls) = profile["syscalls"].as_array_mut() else {
        return;
    };
    let entry = serde_json::json!({
        "names": ["rt_sigsuspend"],
        "action": "SCMP_ACT_ALLOW",
        "comment": "qemu-user: a guest killed by a signal makes qemu re-raise it on itself and wait for it in sigsuspend",
    });
    // Before the dangerous set's kill rule, which stays last.
    let at = syscalls.len().saturating_sub(1);
    syscalls.insert(at, entry);
}

/// Fails unless binfmt_misc hands `arch`'s binaries to an enabled qemu-user.
fn check_emulator(arch: Arch) -> Result<(), DockerError> {
    let path = format!("/proc/sys/fs/binfmt_misc/qemu-{}", arch.kernel_name());
    let enabled =
        std::fs::read_to_string(&path).is_ok_and(|entry| entry.lines().next() == Some("enabled"));
    if enabled {
        return Ok(());
    }
    Err(DockerError::NoEmulator {
        arch,
        host: Arch::host(),
        path,
    })
}

/// A container's attached stdout and stderr.
type OutputStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Where a run's budgets count from: when it was handed to the container,
/// and the container's cgroup figures then (nothing for a fresh container;
/// a pooled one's bootstrap start), from which CPU time and pids-limit hits
/// count.
struct Start {
    at: Instant,
    baseline: Sample,
}

/// The program's output as `capture` kept it, why it stopped the run, if it
/// did, and the program's exit status, when the bootstrap's end trailer said it.
struct Captures {
    stdout: Captured,
    stderr: Captured,
    killed: Option<KillReason>,
    ended: Option<i64>,
}

/// Reads the container's output until it ends (or the bootstrap's end
/// trailer is complete on both streams), the wall clock's `deadline`
/// passes, a stream passes `cap`, or the observer's token is cancelled.
/// Each chunk goes to the observer as it comes (only the bytes kept under
/// the cap); when the bootstrap forks the program, `split` takes what it
/// writes after the marker (records, end trailer) off each stream first.
async fn capture(
    output: &mut OutputStream,
    deadline: tokio::time::Instant,
    cap: usize,
    mut split: Option<&mut files::Split>,
    observer: &RunWatch,
) -> Captures {
    let mut stdout = Captured::default();
    let mut stderr = Captured::default();
    let mut killed = None;
    let mut ended = None;
    // A cancel wakes the loop below; the caller kills the container.
    let (_cancel, cancelled) = cancelled(observer);
    tokio::pin!(cancelled);
    loop {
        let chunk = tokio::select! {
            chunk = output.next() => chunk,
            () = tokio::time::sleep_until(deadline) => {
                killed = Some(KillReason::WallTime);
                break;
            }
            () = &mut cancelled => {
                killed = Some(KillReason::Cancelled);
                break;
            }
        };
        let (kind, stream, bytes) = match chunk {
            None => break,
            // The attach stream breaking mid-run ends the capture; the state still tells.
            Some(Err(_)) => break,
            Some(Ok(LogOutput::StdOut { message })) => (Stream::Stdout, &mut stdout, message),
            Some(Ok(LogOutput::StdErr { message })) => (Stream::Stderr, &mut stderr, message),
            Some(Ok(_)) => continue,
        };
        let bytes = match split.as_deref_mut() {
            None => bytes,
            Some(split) => {
                let splitter = match kind {
                    Stream::Stdout => &mut split.stdout,
                    Stream::Stderr => &mut split.stderr,
                };
                match splitter.feed(&bytes) {
                    (program, true) => program.into(),
                    (_, false) => {
                        killed = Some(KillReason::Output);
                        break;
                    }
                }
            }
        };
        if !keep_and_emit(kind, stream, &bytes, cap, observer) {
            killed = Some(KillReason::Output);
            break;
        }
        ended = split.as_deref().and_then(files::Split::ended);
        if ended.is_some() {
            break;
        }
    }
    if let Some(split) = split {
        for (kind, stream, splitter) in [
            (Stream::Stdout, &mut stdout, &mut split.stdout),
            (Stream::Stderr, &mut stderr, &mut split.stderr),
        ] {
            if !keep_and_emit(kind, stream, &splitter.finish(), cap, observer) {
                killed.get_or_insert(KillReason::Output);
            }
        }
    }
    Captures {
        stdout,
        stderr,
        // A run pyward stopped ends as one: by its exit status from Docker.
        ended: ended.filter(|_| killed.is_none()),
        killed,
    }
}

/// A future that ends when the observer's token is cancelled (at once if it
/// already is; never without a token), and the guard that keeps it armed.
fn cancelled(observer: &RunWatch) -> (Option<CancelGuard>, impl Future<Output = ()>) {
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let guard = observer.cancel_token().map(|token| {
        token.on_cancel(move || {
            let _ = cancel_tx.send(());
        })
    });
    // Without a token the sender is gone: never cancelled.
    let cancelled = async move {
        if cancel_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    (guard, cancelled)
}

/// `keep`, passing the observer the bytes kept.
fn keep_and_emit(
    kind: Stream,
    stream: &mut Captured,
    bytes: &[u8],
    cap: usize,
    observer: &RunWatch,
) -> bool {
    let room = cap.saturating_sub(stream.bytes.len());
    observer.emit(kind, &bytes[..bytes.len().min(room)]);
    keep(stream, bytes, cap)
}

/// Appends `bytes` to `stream` up to `cap`; false once the stream passed its cap.
fn keep(stream: &mut Captured, bytes: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(stream.bytes.len());
    if bytes.len() > room {
        stream.bytes.extend_from_slice(&bytes[..room]);
        stream.truncated = true;
        return false;
    }
    stream.bytes.extend_from_slice(bytes);
    true
}

/// Samples the container's cgroup every few milliseconds until aborted; the
/// receiver holds the figures so far.
fn spawn_sampler(
    id: &str,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<Sample>,
) {
    let files = CgroupFiles::new(Path::new("/sys/fs/cgroup"), id);
    let (tx, rx) = tokio::sync::watch::channel(Sample::default());
    let task = tokio::spawn(async move {
        let mut last = Sample::default();
        loop {
            if let Some(sample) = files.sample() {
                usage::merge(&mut last, sample);
                let _ = tx.send(last);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (task, rx)
}

/// One last sample (the cgroup may still be there), merged into `sample`.
fn sample_after(id: &str, mut sample: Sample) -> Sample {
    if let Some(last) = CgroupFiles::new(Path::new("/sys/fs/cgroup"), id).sample() {
        usage::merge(&mut sample, last);
    }
    sample
}

/// A job id unique on this host: pid, a counter and the time.
fn job_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `PID-STARTTIME` of a process, from /proc (start time guards against pid reuse).
fn owner_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) counts from after the `(comm)` field, which may hold spaces.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let starttime = after_comm.split(' ').nth(19)?;
    Some(format!("{pid}-{starttime}"))
}

/// True when the process named by an owner label still runs.
fn owner_alive(owner: &str) -> bool {
    let Some(pid) = owner.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_of(pid).as_deref() == Some(owner)
}

/// What compiled filters depend on: the allowlist's name, where it is looked up, the denied action.
type FilterKey = (String, Option<std::path::PathBuf>, DeniedAction);

/// `ImageMissing` for `image`, saying how to build it when it is one of pyward's.
fn image_missing(image: &str) -> DockerError {
    let hint = match image
        .strip_prefix("pyward/")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((recipe, arch)) => format!("run `pyward image build {recipe} --arch {arch}`"),
        None => "build it or `docker load` it first".to_owned(),
    };
    DockerError::ImageMissing {
        image: image.to_owned(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_up_to_the_cap() {
        let mut stream = Captured::default();
        assert!(keep(&mut stream, b"abc", 5));
        assert!(keep(&mut stream, b"de", 5));
        assert!(!stream.truncated);
        assert!(!keep(&mut stream, b"f", 5));
        assert_eq!(stream.bytes, b"abcde");
        assert!(stream.truncated);
    }

    #[test]
    fn the_emulated_profile_is_the_hosts_plus_qemus_needs_with_the_kill_rule_last() {
        let allowlist = Allowlist::load("python-strict", None).unwrap();
        let profile = DockerRuntime::emulated_seccomp_profile(&allowlist, DeniedAction::Errno);
        let host = match Arch::host() {
            Arch::Amd64 => "SCMP_ARCH_X86_64",
            Arch::Arm64 => "SCMP_ARCH_AARCH64",
        };
        assert_eq!(profile["architectures"], serde_json::json!([host]));
        let syscalls = profile["syscalls"].as_array().unwrap();
        let names = |e: &serde_json::Value| e["names"].as_array().unwrap().clone();
        assert!(
            syscalls
                .iter()
                .any(|e| names(e).contains(&"rt_sigsuspend".into())
                    && e["action"] == "SCMP_ACT_ALLOW")
        );
        let last = syscalls.last().unwrap();
        assert_eq!(last["action"], "SCMP_ACT_KILL_PROCESS");
        assert!(names(last).contains(&"ptrace".into()));
        let native =
            DockerRuntime::seccomp_profile(&allowlist, DeniedAction::Errno, &[Arch::host()]);
        assert_eq!(
            syscalls.len(),
            native["syscalls"].as_array().unwrap().len() + 1
        );
    }

    #[test]
    fn an_orphan_another_process_removed_or_is_removing_is_done() {
        let status = |status_code: u16| {
            orphan_removal(Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: "from the daemon".into(),
            }))
        };
        assert_eq!(orphan_removal(Ok(())).unwrap(), Removal::Removed);
        assert_eq!(status(404).unwrap(), Removal::ByAnother, "already gone");
        assert_eq!(
            status(409).unwrap(),
            Removal::ByAnother,
            "removal in progress"
        );
        for failure in [400, 500] {
            let err = status(failure).unwrap_err();
            assert!(
                err.to_string().contains("remove an orphaned container"),
                "{err}"
            );
        }
    }

    #[test]
    fn this_process_is_alive_and_a_stale_owner_is_not() {
        let me = owner_of(std::process::id()).unwrap();
        assert!(owner_alive(&me));
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid}-0")));
        assert!(!owner_alive("4194305-1"));
        assert!(!owner_alive("garbage"));
    }
}
