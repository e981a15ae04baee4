//! Conversions between the gRPC messages and pyward's types. A gRPC run
//! request becomes the HTTP API's JSON request body, so that one function
//! checks both and a job stores one format; outcomes, jobs, limits, images
//! and job updates become messages. Pure functions.

use super::proto;
use crate::api::error::ApiError;
use crate::api::handlers::JobUpdate;
use crate::api::wire::ImageJson;
use crate::executor::jobs::OutputChunk;
use crate::executor::store::{JobRecord, JobStatus};
use crate::policy::{Limits, format_duration};
use crate::runtime::Stream;
use crate::runtime::{Outcome, OutputFile, OutputStatus, Verdict, signal_name};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use std::time::Duration;

fn invalid(code: &'static str, message: String) -> ApiError {
    ApiError::BadRequest { code, message }
}

/// The JSON body of POST /v1/runs that asks for the same run as `request`;
/// an empty `image` or `arch` is left out (the default).
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
    for (name, value) in [("image", &request.image), ("arch", &request.arch)] {
        if !value.is_empty() {
            body.insert(name.into(), value.as_str().into());
        }
    }
    // Passed as they are: the shared check refuses a bad path by name.
    if !request.outputs.is_empty() {
        body.insert("outputs".into(), request.outputs.clone().into());
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
        image: outcome.image.clone(),
        arch: outcome.arch.map(|a| a.as_str().to_owned()),
        files: outcome.files.iter().map(output_file).collect(),
        limits_reached: outcome
            .limits_reached
            .iter()
            .map(|limit| limit.as_str().to_owned())
            .collect(),
    }
}

/// The message of an output file status.
pub fn output_status(status: &OutputStatus) -> proto::OutputStatus {
    match status {
        OutputStatus::Collected { .. } => proto::OutputStatus::Ok,
        OutputStatus::Missing => proto::OutputStatus::Missing,
        OutputStatus::NotRegular => proto::OutputStatus::NotRegular,
        OutputStatus::NotCollected => proto::OutputStatus::NotCollected,
    }
}

/// The message of a declared output file: its kept bytes as they are, the
/// size only when it was read.
fn output_file(file: &OutputFile) -> proto::OutputFile {
    let (content, size, truncated) = match &file.status {
        OutputStatus::Collected { contents, size } => {
            (contents.bytes.clone(), Some(*size), contents.truncated)
        }
        _ => (Vec::new(), None, false),
    };
    proto::OutputFile {
        path: file.path.clone(),
        status: output_status(&file.status).into(),
        status_name: file.status.as_str().to_owned(),
        content,
        size,
        truncated,
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

/// The `WatchJob` event of one update of job `id` (submitted with
/// `trace_id`); None for [`JobUpdate::End`], which ends the stream.
pub fn event(id: &str, update: JobUpdate, trace_id: &str) -> Option<proto::JobEvent> {
    use proto::job_event::Event;
    let event = match update {
        JobUpdate::Status(status) => Event::Status(proto::StatusChange {
            id: id.to_owned(),
            status: job_status(status).into(),
        }),
        JobUpdate::Output(chunk) => Event::Output(output(&chunk)),
        JobUpdate::Lagged { missed_chunks } => Event::Lagged(proto::Lagged { missed_chunks }),
        JobUpdate::Outcome(text) => match stored_outcome(&text, trace_id) {
            Some(outcome) => Event::Outcome(outcome),
            None => Event::Error(proto::JobError {
                code: "internal".into(),
                message: "the job's outcome cannot be read (see the server log)".into(),
            }),
        },
        JobUpdate::Failed { code, message } => Event::Error(proto::JobError { code, message }),
        JobUpdate::End => return None,
    };
    Some(proto::JobEvent { event: Some(event) })
}

/// The message of a chunk of output: its bytes as they are.
fn output(chunk: &OutputChunk) -> proto::OutputChunk {
    let stream = match chunk.stream {
        Stream::Stdout => proto::output_chunk::Stream::Stdout,
        Stream::Stderr => proto::output_chunk::Stream::Stderr,
    };
    proto::OutputChunk {
        stream: stream.into(),
        data: chunk.bytes.to_vec(),
    }
}

/// The message of an image entry of GET /v1/images.
pub fn image(image: ImageJson) -> proto::Image {
    proto::Image {
        name: image.name,
        default: image.default,
        runtime: image.runtime.to_owned(),
        arches: image.arches.iter().map(|a| a.as_str().to_owned()).collect(),
        default_arch: image.default_arch.map(|a| a.as_str().to_owned()),
        python: image.python,
    }
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
    use std::sync::Arc;

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
    fn image_and_arch_go_into_the_body_unless_empty() {
        let mut request = code("1");
        let body: Value = serde_json::from_str(&request_body(&request).unwrap()).unwrap();
        assert!(
            body.get("image").is_none() && body.get("arch").is_none(),
            "{body}"
        );
        request.image = "python3.11-bookworm".into();
        request.arch = "arm64".into();
        let text = request_body(&request).unwrap();
        let wire: RunRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(wire.image.as_deref(), Some("python3.11-bookworm"));
        assert_eq!(wire.arch.as_deref(), Some("arm64"));
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

    /// Bytes that are not UTF-8, with a NUL among them.
    const RAW: &[u8] = &[0xff, 0x00, 0xfe, b'\n', 0xc3];

    /// The path, status name, content, size and truncation of a file.
    type Fields<'a> = (&'a str, &'a str, &'a [u8], Option<u64>, bool);

    fn file_fields(files: &[proto::OutputFile]) -> Vec<Fields<'_>> {
        files
            .iter()
            .map(|f| {
                let (path, name) = (f.path.as_str(), f.status_name.as_str());
                (path, name, f.content.as_slice(), f.size, f.truncated)
            })
            .collect()
    }

    /// The files of [`sample_outcome`] as messages.
    fn sample_files() -> Vec<Fields<'static>> {
        vec![
            ("out/raw.bin", "ok", RAW, Some(100), true),
            ("gone", "missing", &[], None, false),
        ]
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
            limits_reached: vec![crate::LimitReached::CpuTime, crate::LimitReached::Pids],
            files: vec![
                OutputFile {
                    path: "out/raw.bin".into(),
                    status: OutputStatus::Collected {
                        contents: Captured {
                            bytes: RAW.to_vec(),
                            truncated: true,
                        },
                        size: 100,
                    },
                },
                OutputFile {
                    path: "gone".into(),
                    status: OutputStatus::Missing,
                },
            ],
            image: Some("host".into()),
            arch: Some(crate::Arch::Arm64),
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
        assert_eq!(
            (o.image.as_deref(), o.arch.as_deref()),
            (Some("host"), Some("arm64"))
        );
        assert_eq!(file_fields(&o.files), sample_files());
    }

    #[test]
    fn every_output_status_converts_with_its_json_name() {
        let collected = |bytes: &[u8], truncated, size| OutputStatus::Collected {
            contents: Captured {
                bytes: bytes.to_vec(),
                truncated,
            },
            size,
        };
        for (status, content, size, truncated) in [
            (collected(RAW, false, 5), RAW, Some(5), false),
            (collected(b"", false, 0), &b""[..], Some(0), false),
            (
                collected(&RAW[..2], true, 1 << 40),
                &RAW[..2],
                Some(1 << 40),
                true,
            ),
            (OutputStatus::Missing, &b""[..], None, false),
            (OutputStatus::NotRegular, &b""[..], None, false),
            (OutputStatus::NotCollected, &b""[..], None, false),
        ] {
            let file = output_file(&OutputFile {
                path: "a/b".into(),
                status: status.clone(),
            });
            let name = status.as_str();
            let expected = format!("OUTPUT_STATUS_{}", name.to_uppercase());
            assert_eq!(file.status().as_str_name(), expected, "{status:?}");
            assert_eq!(file.status_name, name);
            assert_eq!(file.path, "a/b");
            assert_eq!(file.content, content, "bytes as they are: {status:?}");
            assert_eq!((file.size, file.truncated), (size, truncated), "{status:?}");
        }
    }

    #[test]
    fn outputs_go_into_the_body_and_a_bad_path_is_refused_by_name() {
        let mut request = code("1");
        let body: Value = serde_json::from_str(&request_body(&request).unwrap()).unwrap();
        assert!(body.get("outputs").is_none(), "{body}");
        assert!(submission(&request).unwrap().outputs.is_empty());
        request.outputs = vec!["result.bin".into(), "out/plot.png".into()];
        let body: Value = serde_json::from_str(&request_body(&request).unwrap()).unwrap();
        assert_eq!(body["outputs"], json!(["result.bin", "out/plot.png"]));
        assert_eq!(
            submission(&request).unwrap().outputs,
            ["result.bin", "out/plot.png"]
        );
        for bad in ["../x", "/etc/passwd", "a\0b"] {
            request.outputs = vec!["ok.txt".into(), bad.into()];
            let err = submission(&request).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
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
        // The files survive the stored JSON (base64 there), byte for byte.
        assert_eq!(file_fields(&o.files), sample_files());
        use proto::job_event::Event;
        let render = |update| event("j1", update, "t1").map(|e| e.event.unwrap());
        match render(JobUpdate::Outcome(stored)) {
            Some(Event::Outcome(o)) => {
                assert_eq!(o.verdict_name, "signaled");
                assert_eq!(o.image.as_deref(), Some("host"));
                assert_eq!(file_fields(&o.files), sample_files());
            }
            other => panic!("{other:?}"),
        }
        match render(JobUpdate::Status(JobStatus::Running)) {
            Some(Event::Status(s)) => {
                assert_eq!(
                    (s.id.as_str(), s.status()),
                    ("j1", proto::JobStatus::Running)
                );
            }
            other => panic!("{other:?}"),
        }
        match render(JobUpdate::Outcome("not json".into())) {
            Some(Event::Error(e)) => assert_eq!(e.code, "internal"),
            other => panic!("{other:?}"),
        }
        assert!(render(JobUpdate::End).is_none(), "the end is no event");
    }

    #[test]
    fn output_chunks_keep_their_stream_and_bytes() {
        use proto::job_event::Event;
        use proto::output_chunk::Stream as Wire;
        for (stream, wire) in [
            (Stream::Stdout, Wire::Stdout),
            (Stream::Stderr, Wire::Stderr),
        ] {
            let chunk = OutputChunk {
                stream,
                bytes: Arc::from(&[b'h', 0xc3][..]),
            };
            match event("j1", JobUpdate::Output(chunk), "t1").and_then(|e| e.event) {
                Some(Event::Output(o)) => {
                    assert_eq!(o.stream(), wire);
                    assert_eq!(o.data, [b'h', 0xc3], "bytes as they are, not re-encoded");
                }
                other => panic!("{other:?}"),
            }
        }
        let lagged = JobUpdate::Lagged { missed_chunks: 3 };
        match event("j1", lagged, "t1").and_then(|e| e.event) {
            Some(Event::Lagged(l)) => assert_eq!(l.missed_chunks, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_image_entry_keeps_the_json_fields() {
        let entry = image(ImageJson {
            name: "python3.11-bookworm".into(),
            default: true,
            runtime: "docker",
            arches: vec![crate::Arch::Amd64, crate::Arch::Arm64],
            default_arch: Some(crate::Arch::Amd64),
            python: None,
        });
        assert_eq!(entry.name, "python3.11-bookworm");
        assert!(entry.default);
        assert_eq!(entry.runtime, "docker");
        assert_eq!(entry.arches, ["amd64", "arm64"]);
        assert_eq!(entry.default_arch.as_deref(), Some("amd64"));
        assert_eq!(entry.python, None);
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
