//! `pyward bench`: time `python3 -c pass` bare, through pyward (in-process
//! and as a CLI process) and through bubblewrap in one run, and print ratios
//! to bare python3. Where Docker and the image are there, also the Docker
//! runtime (a fresh container per call) against `docker run --rm --pull never`
//! with the same hardening, and their ratio; and the Docker warm pool (a
//! pre-started container per call) against both.
//!
//! Paths run one block after another, not interleaved: a path that creates
//! and drops a network namespace per call (bwrap, a fresh pyward process)
//! leaves the kernel cleaning namespaces up in the background, which would
//! otherwise be charged to whichever path runs next. A short pause between
//! blocks lets that work drain.

mod http;

use super::{exit, run::DEFAULT_POLICY};
use pyward::{
    DockerConfig, DockerRuntime, DockerWarmConfig, DockerWarmRuntime, NativeConfig, NativeRuntime,
    Runtime, SandboxPolicy, Submission, Verdict, WarmConfig, WarmRuntime,
};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

/// The headline target: pyward native, in-process, median / bare python3 median.
const TARGET_RATIO: f64 = 1.3;

/// The Docker path's target: pyward docker median / `docker run --rm` median.
const DOCKER_TARGET_RATIO: f64 = 0.8;
const DOCKER_LABEL: &str = "pyward docker, in-process";
const DOCKER_RUN_LABEL: &str = "docker run --rm (reference)";
const DOCKER_WARM_LABEL: &str = "pyward docker, warm";
/// The Docker warm pool's target: median per call.
const DOCKER_WARM_TARGET: Duration = Duration::from_millis(25);
/// Ready containers in the benchmark's Docker warm pool.
const DOCKER_WARM_POOL: usize = 2;
const WARM_LABEL: &str = "pyward native, warm";
/// The warm path's targets: median per call, and calls per second with parallel callers.
const WARM_TARGET: Duration = Duration::from_millis(3);
const WARM_TARGET_RATE: f64 = 400.0;
/// Parallel callers in the warm throughput measurement, and calls each.
const WARM_CALLERS: usize = 4;
const WARM_CALLS_EACH: usize = 150;

/// Flags of `pyward bench`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Timed runs per path.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    runs: u32,
    /// Untimed runs per path before the timed ones.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    warmup: u32,
    /// The Docker image of the Docker paths (never pulled; skipped when missing).
    #[arg(long, value_name = "IMAGE", default_value_t = DockerConfig::default().image)]
    image: String,
}

/// The other benchmarks.
#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Load a running `pyward serve`: N sync runs at concurrency C, with latency percentiles.
    Http(http::HttpArgs),
}

/// A benchmark that could not be set up, or a measured path that failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The in-process path needs the policy and the runtime.
    #[error("bench: cannot set up the in-process path: {0}")]
    Setup(String),
    /// A path's program did not run successfully.
    #[error("bench: path {path:?} failed: {reason}")]
    PathFailed {
        /// The path's label.
        path: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// `pyward bench http` could not start.
    #[error(transparent)]
    Http(#[from] http::HttpBenchError),
    /// A process could not be started.
    #[error("bench: path {path:?}: cannot start {program:?}: {source}")]
    Spawn {
        /// The path's label.
        path: &'static str,
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// One way of running `pass`, timed per call.
struct BenchPath {
    label: &'static str,
    run: Box<dyn FnMut() -> Result<(), BenchError>>,
    /// Untimed, before each call (the warm pool's refill).
    before: Option<Box<dyn FnMut() -> Result<(), BenchError>>>,
    samples: Vec<Duration>,
}

/// Runs the benchmark and prints the table.
pub fn run(args: &BenchArgs) -> Result<u8, super::CliError> {
    if let Some(BenchCommand::Http(http)) = &args.command {
        return http::run(http);
    }
    let mut paths = paths()?;
    outln!(
        "pyward bench: `python3 -c pass`, {} timed runs per path after {} warmup, one block per path; {} CPUs, {}",
        args.runs,
        args.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        pyward::Arch::host().kernel_name()
    );
    time_blocks(&mut paths, args)?;
    // Before the Docker paths are set up: a pool's containers starting, and
    // the daemon cleaning up after `docker run --rm`, would share the cores.
    let throughput = warm_throughput()?;
    let mut docker = docker_paths(&args.image)?;
    time_blocks(&mut docker, args)?;
    paths.extend(docker);
    let _ = std::fs::remove_file(bench_profile_path());
    print_table(&mut paths);
    outln!("{throughput}");
    Ok(exit::OK)
}

fn paths() -> Result<Vec<BenchPath>, BenchError> {
    let mut paths = vec![
        process_path(
            "python3 -c pass (bare)",
            PathBuf::from(PYTHON),
            &["-c", "pass"],
        ),
        native_path()?,
    ];
    paths.push(runtime_path(
        WARM_LABEL,
        Box::new(warm_runtime()?),
        default_policy()?,
    ));
    paths.push(fork_server_path()?);
    let exe =
        std::env::current_exe().map_err(|e| BenchError::Setup(format!("current_exe: {e}")))?;
    paths.push(process_path(
        "pyward run -c pass (CLI)",
        exe,
        &["run", "-c", "pass"],
    ));
    match find_in_path("bwrap") {
        Some(bwrap) => paths.push(process_path("bwrap (reference)", bwrap, BWRAP_ARGS)),
        None => eprintln!(
            "\n!!! WARNING: bwrap is not installed: the bubblewrap reference is MISSING from this run.\n\
             !!! Install it (apt-get install bubblewrap) to compare against it.\n"
        ),
    }
    Ok(paths)
}

const BWRAP_ARGS: &[&str] = &[
    "--unshare-all",
    "--die-with-parent",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/bin",
    "/bin",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    PYTHON,
    "-c",
    "pass",
];

/// The Docker runtime in this process, and `docker run` with the same flags;
/// none (with a loud warning) where Docker or the image is missing.
fn docker_paths(image: &str) -> Result<Vec<BenchPath>, BenchError> {
    let setup = |e: pyward::DockerError| BenchError::Setup(e.to_string());
    let runtime = DockerRuntime::new(DockerConfig {
        image: image.to_owned(),
        ..DockerConfig::default()
    })
    .and_then(|r| r.check_image().map(|()| r));
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("\n!!! WARNING: the Docker paths are MISSING from this run: {e}\n");
            return Ok(Vec::new());
        }
    };
    let policy =
        SandboxPolicy::load(DEFAULT_POLICY).map_err(|e| BenchError::Setup(e.to_string()))?;
    let profile_path =
        std::env::temp_dir().join(format!("pyward-bench-seccomp-{}.json", std::process::id()));
    let profile_str = profile_path.display().to_string();
    let (mut args, profile) = runtime
        .docker_run_equivalent(&policy, &profile_str)
        .map_err(setup)?;
    std::fs::write(&profile_path, profile)
        .map_err(|e| BenchError::Setup(format!("write {profile_str}: {e}")))?;
    args.extend(["python3", "-s", "-c", "pass"].map(str::to_owned));
    let docker = find_in_path("docker").unwrap_or_else(|| PathBuf::from("docker"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference = process_path(DOCKER_RUN_LABEL, docker, &args);
    let warm = docker_warm_path(image, &policy)?;
    Ok(vec![
        runtime_path(DOCKER_LABEL, Box::new(runtime), policy),
        warm,
        reference,
    ])
}

/// `DockerWarmRuntime::run` with a pool of `DOCKER_WARM_POOL`: each call
/// claims a container that waits for it. Before each call (untimed) the pool
/// refills and the last call's container is removed: this times a call that
/// finds a ready container and a daemon with no pool work in flight, not how
/// fast Docker creates containers (which bounds the sustained rate).
fn docker_warm_path(image: &str, policy: &SandboxPolicy) -> Result<BenchPath, BenchError> {
    let setup = |e: String| BenchError::Setup(format!("the Docker warm pool: {e}"));
    let config = DockerConfig {
        image: image.to_owned(),
        ..DockerConfig::default()
    };
    let warm = DockerWarmConfig {
        size: DOCKER_WARM_POOL,
        ..DockerWarmConfig::default()
    };
    let runtime = Arc::new(DockerWarmRuntime::new(config, warm).map_err(|e| setup(e.to_string()))?);
    runtime.prewarm(policy).map_err(|e| setup(e.to_string()))?;
    let mut path = runtime_path(
        DOCKER_WARM_LABEL,
        Box::new(SharedWarm(runtime.clone())),
        policy.clone(),
    );
    let policy = policy.clone();
    path.before = Some(Box::new(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while runtime.ready(&policy).map_err(|e| setup(e.to_string()))? < DOCKER_WARM_POOL
            || runtime.in_flight() > 0
        {
            if Instant::now() > deadline {
                return Err(BenchError::PathFailed {
                    path: DOCKER_WARM_LABEL,
                    reason: "the pool did not refill within 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }));
    Ok(path)
}

/// The Docker warm runtime, shared by the timed calls and the untimed refill wait.
struct SharedWarm(Arc<DockerWarmRuntime>);

impl Runtime for SharedWarm {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn run_watched(
        &self,
        policy: &SandboxPolicy,
        submission: &Submission,
        watch: &pyward::RunWatch,
    ) -> Result<pyward::Outcome, pyward::RunError> {
        self.0.run_watched(policy, submission, watch)
    }
}

/// Where the `docker run` reference reads its seccomp profile (removed after the run).
fn bench_profile_path() -> PathBuf {
    std::env::temp_dir().join(format!("pyward-bench-seccomp-{}.json", std::process::id()))
}

/// A path that runs `pass` through `runtime` in this process.
fn runtime_path(
    label: &'static str,
    runtime: Box<dyn Runtime>,
    policy: SandboxPolicy,
) -> BenchPath {
    let submission = Submission::code("pass");
    let run = move || -> Result<(), BenchError> {
        let failed = |reason: String| BenchError::PathFailed {
            path: label,
            reason,
        };
        let outcome = runtime
            .run(&policy, &submission)
            .map_err(|e| failed(e.to_string()))?;
        if outcome.verdict != Verdict::Ok {
            return Err(failed(super::run::summary(&outcome)));
        }
        Ok(())
    };
    BenchPath {
        label,
        run: Box::new(run),
        before: None,
        samples: Vec::new(),
    }
}

/// pyward's headline path: the library's native runtime, strict policy, in this process.
fn native_path() -> Result<BenchPath, BenchError> {
    const LABEL: &str = "pyward native, in-process";
    let policy =
        SandboxPolicy::load(DEFAULT_POLICY).map_err(|e| BenchError::Setup(e.to_string()))?;
    let runtime = NativeRuntime::new(NativeConfig::default())
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(runtime_path(LABEL, Box::new(runtime), policy))
}

fn default_policy() -> Result<SandboxPolicy, BenchError> {
    SandboxPolicy::load(DEFAULT_POLICY).map_err(|e| BenchError::Setup(e.to_string()))
}

fn warm_runtime() -> Result<WarmRuntime, BenchError> {
    let native = NativeRuntime::new(NativeConfig::default())
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let warm = WarmRuntime::new(native, WarmConfig::default());
    warm.prestart(&default_policy()?)
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(warm)
}

/// The reference for the warm path: a pre-imported fork server in plain
/// Python (no sandbox), which forks, runs `pass` with exec and exits per call.
const FORK_SERVER: &str = "import os, sys\nr, w = sys.stdin.buffer, sys.stdout.buffer\nwhile r.read(1):\n    pid = os.fork()\n    if pid == 0:\n        exec(compile('pass', '<string>', 'exec'), {})\n        os._exit(0)\n    os.waitpid(pid, 0)\n    w.write(b'.')\n    w.flush()\n";

fn fork_server_path() -> Result<BenchPath, BenchError> {
    const LABEL: &str = "python fork server (reference)";
    let mut server = Command::new(PYTHON)
        .args(["-s", "-c", FORK_SERVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Spawn {
            path: LABEL,
            program: PYTHON.into(),
            source,
        })?;
    let (Some(mut to), Some(mut from)) = (server.stdin.take(), server.stdout.take()) else {
        return Err(BenchError::Setup("the fork server has no pipes".into()));
    };
    let run = move || -> Result<(), BenchError> {
        use std::io::{Read, Write};
        let mut byte = [0u8; 1];
        let _ = &server;
        to.write_all(b"x")
            .and_then(|()| to.flush())
            .and_then(|()| from.read_exact(&mut byte))
            .map_err(|e| BenchError::PathFailed {
                path: LABEL,
                reason: e.to_string(),
            })
    };
    Ok(BenchPath {
        label: LABEL,
        run: Box::new(run),
        before: None,
        samples: Vec::new(),
    })
}

/// Calls per second through one warm runtime with parallel callers.
/// Times each path in a block of its own, after a short pause.
fn time_blocks(paths: &mut [BenchPath], args: &BenchArgs) -> Result<(), BenchError> {
    for path in paths {
        std::thread::sleep(Duration::from_millis(500));
        for round in 0..args.warmup + args.runs {
            if let Some(before) = &mut path.before {
                before()?;
            }
            let start = Instant::now();
            (path.run)()?;
            let elapsed = start.elapsed();
            if round >= args.warmup {
                path.samples.push(elapsed);
            }
        }
    }
    Ok(())
}

/// The line that says how many calls per second one warm runtime took.
fn warm_throughput() -> Result<String, BenchError> {
    let warm = Arc::new(warm_runtime()?);
    let policy = Arc::new(default_policy()?);
    let submission = Arc::new(Submission::code("pass"));
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let callers: Vec<_> = (0..WARM_CALLERS)
        .map(|_| {
            let (warm, policy, submission) = (warm.clone(), policy.clone(), submission.clone());
            std::thread::spawn(move || {
                (0..WARM_CALLS_EACH)
                    .filter(|_| {
                        warm.run(&policy, &submission)
                            .is_ok_and(|o| o.verdict == Verdict::Ok)
                    })
                    .count()
            })
        })
        .collect();
    let ok: usize = callers.into_iter().map(|c| c.join().unwrap_or(0)).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let total = WARM_CALLERS * WARM_CALLS_EACH;
    if ok != total {
        return Err(BenchError::PathFailed {
            path: WARM_LABEL,
            reason: format!("{} of {total} parallel calls failed", total - ok),
        });
    }
    let rate = total as f64 / elapsed;
    let verdict = if rate >= WARM_TARGET_RATE {
        "met"
    } else {
        "MISSED"
    };
    Ok(format!(
        "warm throughput: {total} calls from {WARM_CALLERS} parallel callers in {elapsed:.2}s = {rate:.0} calls/s (target >= {WARM_TARGET_RATE:.0}: {verdict})"
    ))
}

/// A path that spawns `program args…` and waits for a successful exit.
fn process_path(label: &'static str, program: PathBuf, args: &[&str]) -> BenchPath {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let run = move || -> Result<(), BenchError> {
        let output = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| BenchError::Spawn {
                path: label,
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = format!("{}: {}", output.status, stderr.trim());
            return Err(BenchError::PathFailed {
                path: label,
                reason,
            });
        }
        Ok(())
    };
    BenchPath {
        label,
        run: Box::new(run),
        before: None,
        samples: Vec::new(),
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Median, p90 and min of a path's samples.
struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
}

fn stats(samples: &mut [Duration]) -> Option<Stats> {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    let p90 = samples[(n * 9).div_ceil(10).max(1) - 1];
    Some(Stats {
        median,
        p90,
        min: samples[0],
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn print_table(paths: &mut [BenchPath]) {
    let all: Vec<(&'static str, Stats)> = paths
        .iter_mut()
        .filter_map(|p| stats(&mut p.samples).map(|s| (p.label, s)))
        .collect();
    let Some(bare) = all.first().map(|(_, s)| s.median) else {
        return;
    };
    outln!(
        "{:<28} {:>10} {:>10} {:>10} {:>9}",
        "path",
        "median",
        "p90",
        "min",
        "vs bare"
    );
    for (label, s) in &all {
        let ratio = s.median.as_secs_f64() / bare.as_secs_f64();
        outln!(
            "{label:<28} {:>10} {:>10} {:>10} {:>8.2}x",
            ms(s.median),
            ms(s.p90),
            ms(s.min),
            ratio
        );
    }
    if let Some((_, native)) = all
        .iter()
        .find(|(label, _)| label.starts_with("pyward native"))
    {
        let ratio = native.median.as_secs_f64() / bare.as_secs_f64();
        let verdict = if ratio <= TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        };
        outln!(
            "headline: pyward native in-process median = {ratio:.2}x bare python3 (target <= {TARGET_RATIO}x: {verdict})"
        );
    }
    let median = |wanted: &str| {
        all.iter()
            .find(|(label, _)| *label == wanted)
            .map(|(_, s)| s.median)
    };
    if let Some(warm) = median(WARM_LABEL) {
        let verdict = if warm <= WARM_TARGET { "met" } else { "MISSED" };
        outln!(
            "warm: pyward native warm median = {} per call (target <= {}: {verdict})",
            ms(warm),
            ms(WARM_TARGET)
        );
    }
    if let Some(warm) = median(DOCKER_WARM_LABEL) {
        let verdict = if warm <= DOCKER_WARM_TARGET {
            "met"
        } else {
            "MISSED"
        };
        let ratio = |other: Option<Duration>| {
            other.map_or("n/a".to_owned(), |o| {
                format!("{:.2}x", warm.as_secs_f64() / o.as_secs_f64())
            })
        };
        outln!(
            "docker warm: pyward docker warm median = {} per call = {} `docker run --rm`, {} pyward docker cold",
            ms(warm),
            ratio(median(DOCKER_RUN_LABEL)),
            ratio(median(DOCKER_LABEL))
        );
        outln!(
            "docker warm median <= {}: {verdict}",
            ms(DOCKER_WARM_TARGET)
        );
    }
    if let (Some(ours), Some(reference)) = (median(DOCKER_LABEL), median(DOCKER_RUN_LABEL)) {
        let ratio = ours.as_secs_f64() / reference.as_secs_f64();
        let verdict = if ratio <= DOCKER_TARGET_RATIO {
            "met"
        } else {
            "MISSED"
        };
        outln!(
            "docker: pyward docker in-process median = {ratio:.2}x `docker run --rm` with the same hardening (target <= {DOCKER_TARGET_RATIO}x: {verdict})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_median_p90_and_min() {
        let mut samples: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let s = stats(&mut samples).unwrap();
        assert_eq!(s.median, Duration::from_micros(5500));
        assert_eq!(s.p90, Duration::from_millis(9));
        assert_eq!(s.min, Duration::from_millis(1));
        assert!(stats(&mut []).is_none());
    }
}
