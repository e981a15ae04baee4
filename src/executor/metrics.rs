//! Counters the server exposes at /metrics: runs by verdict, run latency,
//! in-flight runs, queue depth, gRPC calls by method. Lock-free atomics, rendered as Prometheus text.

use super::images::OfferedImage;
use crate::runtime::Verdict;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const VERDICTS: [Verdict; 10] = Verdict::ALL;

/// How a run came in.
#[derive(Debug, Clone, Copy)]
pub enum RunKind {
    /// POST /v1/runs.
    Sync,
    /// An async job.
    Job,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    runs: [[AtomicU64; VERDICTS.len()]; 2],
    latency: Histogram,
    rejected: [AtomicU64; REJECTION_NAMES.len()],
    grpc_calls: [AtomicU64; GRPC_METHODS.len()],
}

/// Why admission turned a request away, for `pyward_rejections_total`.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// 429: tenant at its concurrency cap.
    Concurrency = 0,
    /// 429: tenant over its rate quota.
    Rate = 1,
    /// 503: the queue is full.
    QueueFull = 2,
    /// 401/403.
    Auth = 3,
    /// 429: tenant out of its CPU-seconds quota.
    Cpu = 4,
}

const REJECTION_NAMES: [&str; 5] = ["concurrency", "rate", "queue_full", "auth", "cpu"];

/// A method of the gRPC service, for `pyward_grpc_requests_total`.
#[derive(Debug, Clone, Copy)]
pub enum GrpcMethod {
    /// `Run`.
    Run = 0,
    /// `Submit`.
    Submit = 1,
    /// `GetJob`.
    GetJob = 2,
    /// `CancelJob`.
    CancelJob = 3,
    /// `WatchJob`.
    WatchJob = 4,
    /// `ListPolicies`.
    ListPolicies = 5,
    /// `ListImages`.
    ListImages = 6,
}

const GRPC_METHODS: [&str; 7] = [
    "Run",
    "Submit",
    "GetJob",
    "CancelJob",
    "WatchJob",
    "ListPolicies",
    "ListImages",
];

impl Metrics {
    /// Counts a run that ended with `verdict` after `wall` (measured by the server).
    pub fn record(&self, kind: RunKind, verdict: Verdict, wall: Duration) {
        let index = VERDICTS.iter().position(|v| *v == verdict).unwrap_or(0);
        self.runs[kind as usize][index].fetch_add(1, Ordering::Relaxed);
        let seconds = wall.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(wall.as_micros()).unwrap_or(u64::MAX);
        self.latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts a request turned away by admission.
    pub fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a gRPC call, whatever its result.
    pub fn grpc_call(&self, method: GrpcMethod) {
        self.grpc_calls[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the gauges passed in.
    pub fn render(&self, queued: usize, in_flight: usize, images: &[OfferedImage]) -> String {
        let mut out = String::new();
        out.push_str("# HELP pyward_runs_total Runs that produced an outcome, by how they came in and verdict.\n");
        out.push_str("# TYPE pyward_runs_total counter\n");
        for (kind, name) in [(RunKind::Sync, "sync"), (RunKind::Job, "job")] {
            for (verdict, count) in VERDICTS.iter().zip(&self.runs[kind as usize]) {
                let n = count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "pyward_runs_total{{kind=\"{name}\",verdict=\"{verdict}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP pyward_run_duration_seconds Wall time of runs as the server saw them.\n",
        );
        out.push_str("# TYPE pyward_run_duration_seconds histogram\n");
        for (bound, bucket) in BUCKETS.iter().zip(&self.latency.buckets) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "pyward_run_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let count = self.latency.count.load(Ordering::Relaxed);
        let sum = self.latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "pyward_run_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "pyward_run_duration_seconds_sum {sum}");
        let _ = writeln!(out, "pyward_run_duration_seconds_count {count}");
        out.push_str("# HELP pyward_rejections_total Requests turned away by admission.\n");
        out.push_str("# TYPE pyward_rejections_total counter\n");
        for (name, count) in REJECTION_NAMES.iter().zip(&self.rejected) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "pyward_rejections_total{{reason=\"{name}\"}} {n}");
        }
        out.push_str("# HELP pyward_grpc_requests_total gRPC calls received, by method.\n");
        out.push_str("# TYPE pyward_grpc_requests_total counter\n");
        for (name, count) in GRPC_METHODS.iter().zip(&self.grpc_calls) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "pyward_grpc_requests_total{{method=\"{name}\"}} {n}");
        }
        out.push_str("# HELP pyward_warm_ready Sandboxes ready for a call without a cold start (native zygotes, pooled containers), by image and architecture.\n");
        out.push_str("# TYPE pyward_warm_ready gauge\n");
        for image in images {
            for (arch, ready) in image.warm_ready() {
                let name = &image.name;
                let _ = writeln!(
                    out,
                    "pyward_warm_ready{{image=\"{name}\",arch=\"{arch}\"}} {ready}"
                );
            }
        }
        out.push_str("# HELP pyward_queue_depth Async jobs waiting for a worker.\n");
        out.push_str("# TYPE pyward_queue_depth gauge\n");
        let _ = writeln!(out, "pyward_queue_depth {queued}");
        out.push_str("# HELP pyward_runs_in_flight Runs executing now.\n");
        out.push_str("# TYPE pyward_runs_in_flight gauge\n");
        let _ = writeln!(out, "pyward_runs_in_flight {in_flight}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lands_in_its_verdict_and_every_bucket_above_it() {
        let metrics = Metrics::default();
        metrics.record(RunKind::Sync, Verdict::Timeout, Duration::from_millis(300));
        let text = metrics.render(3, 1, &[]);
        assert!(text.contains("pyward_runs_total{kind=\"sync\",verdict=\"timeout\"} 1\n"));
        assert!(text.contains("pyward_runs_total{kind=\"job\",verdict=\"timeout\"} 0\n"));
        assert!(text.contains("pyward_run_duration_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("pyward_run_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("pyward_run_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("pyward_queue_depth 3\n"));
        assert!(text.contains("pyward_runs_in_flight 1\n"));
        metrics.grpc_call(GrpcMethod::WatchJob);
        let text = metrics.render(0, 0, &[]);
        assert!(text.contains("pyward_grpc_requests_total{method=\"WatchJob\"} 1\n"));
        assert!(text.contains("pyward_grpc_requests_total{method=\"Run\"} 0\n"));
    }

    /// A runtime with `0` sandboxes kept warm.
    struct Warm(usize);

    impl crate::runtime::Runtime for Warm {
        fn name(&self) -> &'static str {
            "warm"
        }

        fn run_watched(
            &self,
            _: &crate::policy::SandboxPolicy,
            _: &crate::runtime::Submission,
            _: &crate::runtime::RunWatch,
        ) -> Result<crate::runtime::Outcome, crate::runtime::RunError> {
            Err(crate::runtime::RunError::InvalidSubmission(
                "not here".into(),
            ))
        }

        fn warm_ready(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn warm_sandboxes_are_a_gauge_per_image_and_arch() {
        use crate::arch::Arch;
        let images = [
            OfferedImage::new("host", None).with_arch(Arch::Amd64, Box::new(Warm(1))),
            OfferedImage::new("py", None)
                .with_arch(Arch::Amd64, Box::new(Warm(2)))
                .with_arch(Arch::Arm64, Box::new(Warm(0))),
        ];
        let text = Metrics::default().render(0, 0, &images);
        assert!(text.contains("# TYPE pyward_warm_ready gauge\n"));
        assert!(text.contains("pyward_warm_ready{image=\"host\",arch=\"amd64\"} 1\n"));
        assert!(text.contains("pyward_warm_ready{image=\"py\",arch=\"amd64\"} 2\n"));
        assert!(text.contains("pyward_warm_ready{image=\"py\",arch=\"arm64\"} 0\n"));
    }
}
