//! Conversions between the gRPC messages and pyward's types. A gRPC run
//! request becomes the HTTP API's JSON request body, so that one function
//! checks both and a job stores one format; outcomes, jobs, limits and job
//! updates become messages. Pure functions.

use super::{ServedImage, proto};
use crate::api::error::ApiError;
use crate::api::handlers::JobUpdate;
use crate::executor::store::{JobRecord, JobStatus};
use crate::policy::{Limits, format_duration};
use crate::runtime::{Outcome, Verdict, signal_name};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use std::time::Duration;

fn invalid(code: &'static str, message: String) -> ApiError {
    ApiError::BadRequest { code, message }
}

/// The JSON body of POST /v1/runs that asks for the same run as `request`
/// (`image` and `arch` aside: [`check_image`] checks those).
pub fn request_body(request: &proto::RunRequest) -> Result<String, ApiError> {
    let mut body = Map::new();
    if let Some(code) = &request.code {
        body.insert("code".into(), code.as_str().into());
    }
    if !request.files.is_empty() {
        let files = request
            .files
            .iter()
            .map(|f| json!({"path": f.path, "base64": BASE64.encode(&f.contents)}))
            .collect();
        body.insert("files".into(), Value::Array(files));
    }
    if let Some(entrypoint) = &request.entrypoint {
        body.insert("entrypoint".into(), entrypoint.as_str().into());
    }
    if !request.args.is_empty() {
        body.insert("args".into(), request.args.clone().into());
    }
    if !request.stdin.is_empty() {
        body.insert("stdin_base64".into(), BASE64.encode(&request.stdin).into());
    }
    if !request.env.is_empty() {
        let env = request
            .env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        body.insert("env".into(), Value::Object(env));
    }
    if let Some(policy) = &request.policy {
        body.insert("policy".into(), policy.as_str().into());
    }
    if let Some(limits) = &request.limits {
        body.insert("limits".into(), limits_body(limits)?);
    }
    Ok(Value::Object(body).to_string())
}

fn limits_body(limits: &proto::Limits) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (name, value) in [
        ("wall_time", &limits.wall_time),
        ("cpu_time", &limits.cpu_time),
        ("memory", &limits.memory),
        ("file_size", &limits.file_size),
        ("output", &limits.output),
        ("tmpfs", &limits.tmpfs),
    ] {
        if let Some(value) = value {
            out.insert(name.into(), value.as_str().into());
        }
    }
    for (name, value) in [("pids", limits.pids), ("open_files", limits.open_files)] {
        if let Some(value) = value {
            out.insert(name.into(), value.into());
        }
    }
    if let Some(cpus) = limits.cpus {
        // JSON has no NaN or infinity; refuse them rather than drop them.
        if !cpus.is_finite() {
            return Err(invalid(
                "invalid_request",
                format!("limits.cpus {cpus}: not a finite number of cores"),
            ));
        }
        out.insert("cpus".into(), cpus.into());
    }
    Ok(Value::Object(out))
}

/// Checks a request's `image` and `arch` against the images the server
/// runs; empty means the default image and its architecture.
pub fn check_image(images: &[ServedImage], image: &str, arch: &str) -> Result<(), ApiError> {
    let available = || {
        images
            .iter()
            .map(|i| format!("{} ({})", i.name, i.arch))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let default = images.first().ok_or(ApiError::Internal)?;
    let name = if image.is_empty() {
        default.name.as_str()
    } else {
        image
    };
    let mut matching = images.iter().filter(|i| i.name == name).peekable();
    if matching.peek().is_none() {
        return Err(invalid(
            "unknown_image",
            format!(
                "image {image:?} is not served here; available: {}",
                available()
            ),
        ));
    }
    if !arch.is_empty() && !matching.any(|i| i.arch == arch) {
        return Err(invalid(
            "unknown_arch",
            format!(
                "arch {arch:?} is not served for image {name:?}; available: {}",
                available()
            ),
        ));
    }
    Ok(())
}

/// The message of a verdict.
pub fn verdict(verdict: Verdict) -> proto::Verdict {
    match verdict {
        Verdict::Ok => proto::Verdict::Ok,
        Verdict::RuntimeError => proto::Verdict::RuntimeError,
        Verdict::Signaled => proto::Verdict::Signaled,
        Verdict::Timeout => proto::Verdict::Timeout,
        Verdict::CpuLimit => proto::Verdict::CpuLimit,
        Verdict::MemoryLimit => proto::Verdict::MemoryLimit,
        Verdict::OutputLimit => proto::Verdict::OutputLimit,
        Verdict::PidsLimit => proto::Verdict::PidsLimit,
        Verdict::SecurityViolation => proto::Verdict::SecurityViolation,
        Verdict::SandboxError => proto::Verdict::SandboxError,
    }
}

/// The message of a job status.
pub fn job_status(status: JobStatus) -> proto::JobStatus {
    match status {
        JobStatus::Queued => proto::JobStatus::Queued,
        JobStatus::Running => proto::JobStatus::Running,
        JobStatus::Finished => proto::JobStatus::Finished,
        JobStatus::Failed => proto::JobStatus::Failed,
        JobStatus::Cancelled => proto::JobStatus::Cancelled,
    }
}

/// Whole milliseconds, rounded down, as in the JSON outcome.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The message of an outcome, with the trace id of the request that ran it.
pub fn outcome(outcome: &Outcome, trace_id: String) -> proto::Outcome {
    proto::Outcome {
        verdict: verdict(outcome.verdict).into(),
        verdict_name: outcome.verdict.as_str().to_owned(),
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        signal_name: outcome.signal.and_then(signal_name).map(str::to_owned),
        stdout: outcome.stdout.bytes.clone(),
        stdout_truncated: outcome.stdout.truncated,
        stderr: outcome.stderr.bytes.clone(),
        stderr_truncated: outcome.stderr.truncated,
        usage: Some(proto::Usage {
            wall_ms: millis(outcome.usage.wall),
            cpu_ms: millis(outcome.usage.cpu),
            peak_memory_bytes: outcome.usage.peak_memory_bytes,
        }),
        message: outcome.message.clone(),
        trace_id,
    }
}

/// A job's stored outcome (JSON text) as a message; None, logged, if it cannot be read.
fn stored_outcome(text: &str, trace_id: &str) -> Option<proto::Outcome> {
    match Outcome::from_json(text) {
        Ok(o) => Some(outcome(&o, trace_id.to_owned())),
        Err(e) => {
            tracing::error!(error = %e, "a stored job outcome cannot be read");
            None
        }
    }
}

/// The message of a job.
pub fn job(job: &JobRecord) -> proto::Job {
    proto::Job {
        id: job.id.clone(),
        status: job_status(job.status).into(),
        created_at_ms: job.created_ms,
        started_at_ms: job.started_ms,
        finished_at_ms: job.finished_ms,
        attempts: job.attempts,
        outcome: job
            .outcome
            .as_deref()
            .and_then(|text| stored_outcome(text, &job.trace_id)),
        error: job.error.as_ref().map(|(code, message)| proto::JobError {
            code: code.clone(),
            message: message.clone(),
        }),
        trace_id: job.trace_id.clone(),
    }
}

/// The `WatchJob` event of one update of job `id` (submitted with `trace_id`).
pub fn event(id: &str, update: JobUpdate, trace_id: &str) -> proto::JobEvent {
    use proto::job_event::Event;
    let event = match update {
        JobUpdate::Status(status) => Event::Status(proto::StatusChange {
            id: id.to_owned(),
            status: job_status(status).into(),
        }),
        JobUpdate::Outcome(text) => match stored_outcome(&text, trace_id) {
            Some(outcome) => Event::Outcome(outcome),
            None => Event::Error(proto::JobError {
                code: "internal".into(),
                message: "the job's outcome cannot be read (see the server log)".into(),
            }),
        },
        JobUpdate::Failed { code, message } => Event::Error(proto::JobError { code, message }),
    };
    proto::JobEvent { event: Some(event) }
}

/// A policy's limits, written as in policy files.
pub fn limits(limits: &Limits) -> proto::Limits {
    proto::Limits {
        wall_time: Some(format_duration(limits.wall_time)),
        cpu_time: Some(format_duration(limits.cpu_time)),
        memory: Some(limits.memory.to_string()),
        pids: Some(limits.pids),
        open_files: Some(limits.open_files),
        file_size: Some(limits.file_size.to_string()),
        output: Some(limits.output.to_string()),
        tmpfs: Some(limits.tmpfs.to_string()),
        cpus: Some(limits.cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::RunRequest;
    use crate::policy::{ByteSize, SandboxPolicy};
    use crate::runtime::{Captured, Entrypoint, Submission, Usage};

    fn submission(request: &proto::RunRequest) -> Result<Submission, String> {
        let body = request_body(request).map_err(|e| e.to_string())?;
        let wire: RunRequest = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        wire.submission().map_err(|e| e.to_string())
    }

    fn code(text: &str) -> proto::RunRequest {
        proto::RunRequest {
            code: Some(text.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_request_becomes_the_same_submission_as_its_json() {
        let mut request = proto::RunRequest {
            files: vec![proto::File {
                path: "m.py".into(),
                contents: b"print(2)".to_vec(),
            }],
            entrypoint: Some("m.py".into()),
            args: vec!["-x".into()],
            stdin: vec![0xff, 0x00, b'a'],
            policy: Some("strict".into()),
            limits: Some(proto::Limits {
                wall_time: Some("2s".into()),
                memory: Some("64MiB".into()),
                pids: Some(8),
                cpus: Some(0.5),
                ..Default::default()
            }),
            ..Default::default()
        };
        request.env.insert("LANG".into(), "C.UTF-8".into());
        let s = submission(&request).unwrap();
        assert_eq!(s.entrypoint, Entrypoint::File("m.py".into()));
        assert_eq!(s.files[0].contents, b"print(2)");
        assert_eq!(s.args, ["-x"]);
        assert_eq!(s.stdin, [0xff, 0x00, b'a']);
        assert_eq!(s.env["LANG"], "C.UTF-8");
        assert_eq!(s.limits.wall_time, Some(Duration::from_secs(2)));
        assert_eq!(s.limits.memory, Some(ByteSize::mib(64)));
        assert_eq!(s.limits.pids, Some(8));
        assert_eq!(s.limits.cpus, Some(0.5));
        assert_eq!(s.limits.cpu_time, None);
        let body: Value = serde_json::from_str(&request_body(&request).unwrap()).unwrap();
        assert_eq!(body["policy"], "strict");
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let mut both = code("1");
        both.entrypoint = Some("a.py".into());
        let mut bad_limit = code("1");
        bad_limit.limits = Some(proto::Limits {
            memory: Some("lots".into()),
            ..Default::default()
        });
        let mut empty_limit = code("1");
        empty_limit.limits = Some(proto::Limits {
            wall_time: Some(String::new()),
            ..Default::default()
        });
        for (request, expect) in [
            (proto::RunRequest::default(), "give code"),
            (both, "either code or entrypoint, not both"),
            (bad_limit, "limits.memory \"lots\""),
            (empty_limit, "limits.wall_time"),
        ] {
            let err = submission(&request).unwrap_err();
            assert!(err.contains(expect), "{request:?}: {err}");
        }
        let mut nan = code("1");
        nan.limits = Some(proto::Limits {
            cpus: Some(f64::NAN),
            ..Default::default()
        });
        let err = request_body(&nan).unwrap_err().to_string();
        assert!(err.contains("limits.cpus"), "{err}");
    }

    #[test]
    fn images_and_arches_are_checked_against_what_is_served() {
        let images = [ServedImage {
            name: "host".into(),
            arch: "amd64".into(),
            runtime: "native",
        }];
        assert!(check_image(&images, "", "").is_ok());
        assert!(check_image(&images, "host", "amd64").is_ok());
        assert!(check_image(&images, "", "amd64").is_ok());
        let err = check_image(&images, "python:3.12", "").unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::BadRequest {
                    code: "unknown_image",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"python:3.12\""), "{err}");
        assert!(err.to_string().contains("host (amd64)"), "{err}");
        let err = check_image(&images, "", "riscv64").unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::BadRequest {
                    code: "unknown_arch",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"riscv64\""), "{err}");
    }

    #[test]
    fn enum_names_match_the_json_names() {
        for v in Verdict::ALL {
            let expected = format!("VERDICT_{}", v.as_str().to_uppercase());
            assert_eq!(verdict(v).as_str_name(), expected);
        }
        for s in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Finished,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let expected = format!("JOB_STATUS_{}", s.as_str().to_uppercase());
            assert_eq!(job_status(s).as_str_name(), expected);
        }
    }

    fn sample_outcome() -> Outcome {
        Outcome {
            verdict: Verdict::Signaled,
            exit_code: None,
            signal: Some(9),
            stdout: Captured {
                bytes: vec![0xff, 0xfe, b'x'],
                truncated: true,
            },
            stderr: Captured {
                bytes: b"err".to_vec(),
                truncated: false,
            },
            usage: Usage {
                wall: Duration::from_micros(12_999),
                cpu: Duration::from_millis(7),
                peak_memory_bytes: 4096,
            },
            message: Some("killed".into()),
        }
    }

    #[test]
    fn an_outcome_keeps_its_bytes_and_the_json_fields() {
        let o = outcome(&sample_outcome(), "abc".into());
        assert_eq!(o.verdict(), proto::Verdict::Signaled);
        assert_eq!(o.verdict_name, "signaled");
        assert_eq!((o.exit_code, o.signal), (None, Some(9)));
        assert_eq!(o.signal_name.as_deref(), Some("SIGKILL"));
        assert_eq!(o.stdout, [0xff, 0xfe, b'x']);
        assert!(o.stdout_truncated && !o.stderr_truncated);
        assert_eq!(o.stderr, b"err");
        let usage = o.usage.unwrap();
        assert_eq!((usage.wall_ms, usage.cpu_ms), (12, 7));
        assert_eq!(usage.peak_memory_bytes, 4096);
        assert_eq!(o.message.as_deref(), Some("killed"));
        assert_eq!(o.trace_id, "abc");
    }

    #[test]
    fn jobs_and_their_events_carry_the_stored_outcome() {
        let stored = sample_outcome().to_json();
        let record = JobRecord {
            id: "j1".into(),
            tenant: "t".into(),
            status: JobStatus::Finished,
            request: "{}".into(),
            trace_id: "t1".into(),
            outcome: Some(stored.clone()),
            error: None,
            attempts: 1,
            created_ms: 10,
            started_ms: Some(11),
            finished_ms: Some(12),
        };
        let j = job(&record);
        assert_eq!(j.status(), proto::JobStatus::Finished);
        assert_eq!((j.created_at_ms, j.started_at_ms), (10, Some(11)));
        let o = j.outcome.unwrap();
        assert_eq!(
            (o.stdout.as_slice(), o.trace_id.as_str()),
            (&[0xff, 0xfe, b'x'][..], "t1")
        );
        use proto::job_event::Event;
        match event("j1", JobUpdate::Outcome(stored), "t1").event {
            Some(Event::Outcome(o)) => assert_eq!(o.verdict_name, "signaled"),
            other => panic!("{other:?}"),
        }
        match event("j1", JobUpdate::Status(JobStatus::Running), "t1").event {
            Some(Event::Status(s)) => {
                assert_eq!(
                    (s.id.as_str(), s.status()),
                    ("j1", proto::JobStatus::Running)
                );
            }
            other => panic!("{other:?}"),
        }
        match event("j1", JobUpdate::Outcome("not json".into()), "t1").event {
            Some(Event::Error(e)) => assert_eq!(e.code, "internal"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn policy_limits_are_written_as_in_policy_files() {
        let strict = SandboxPolicy::builtin("strict").unwrap();
        let l = limits(&strict.limits);
        assert_eq!(l.wall_time.as_deref(), Some("10s"));
        assert_eq!(l.memory.as_deref(), Some("256MiB"));
        assert_eq!(l.pids, Some(strict.limits.pids));
        // And they read back as request limits equal to the policy's.
        let mut request = code("1");
        request.limits = Some(l);
        let s = submission(&request).unwrap();
        assert!(strict.tightened(&s.limits).is_ok());
        assert_eq!(s.limits.memory, Some(strict.limits.memory));
    }
}
