//! The gRPC front end of `pyward serve` end to end: the real binary on a
//! free loopback port, driven by the tonic client generated from
//! proto/pyward/v1/pyward.proto. Sync runs and a limit verdict, jobs and
//! their event stream with live output, cancelling queued and running jobs,
//! images and arches, declared output files, auth and admission errors,
//! malformed requests, and HTTP still answering on the same port.

mod common;

use pyward::proto::job_event::Event;
use pyward::proto::pyward_client::PywardClient;
use pyward::proto::{self, JobStatus, Verdict};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The token of tenant `a` in [`auth_config`] and its sha256.
const TOKEN_A: &str = "secret";
const HASH_A: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
/// sha256 of "other".
const HASH_B: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

struct Server {
    child: Child,
    port: u16,
    temp: tempfile::TempDir,
}

impl Server {
    /// Starts `pyward serve` with `extra` appended to a config holding the
    /// listen address and the database.
    fn start(extra: &str) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = temp.path().join("pyward.toml");
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n{extra}",
            temp.path().join("jobs.sqlite3").display()
        );
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(temp.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pyward"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server { child, port, temp };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "the server did not listen within 10 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.temp.path().join("server.log")).unwrap_or_default()
    }

    async fn client(&self) -> PywardClient<Channel> {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect()
            .await
            .unwrap();
        PywardClient::new(channel)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request with `authorization: Bearer token`.
fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn code(text: &str) -> proto::RunRequest {
    proto::RunRequest {
        code: Some(text.into()),
        ..Default::default()
    }
}

/// Asserts the gRPC code and the error metadata; returns the error code.
fn error_code(status: &Status, expected: Code) -> String {
    assert_eq!(status.code(), expected, "{status:?}");
    assert!(!status.message().is_empty(), "{status:?}");
    let trace_id = status.metadata().get("x-trace-id").map(|v| v.len());
    assert_eq!(trace_id, Some(32), "{status:?}");
    let code = status.metadata().get("x-error-code").expect("x-error-code");
    code.to_str().unwrap().to_owned()
}

async fn submit(mut client: PywardClient<Channel>, text: &str) -> proto::Job {
    client.submit(code(text)).await.unwrap().into_inner()
}

async fn cancel(mut client: PywardClient<Channel>, id: &str) -> Result<proto::Job, Status> {
    let request = proto::CancelJobRequest { id: id.into() };
    client.cancel_job(request).await.map(|r| r.into_inner())
}

async fn watch(mut client: PywardClient<Channel>, id: &str) -> Vec<Event> {
    let request = proto::WatchJobRequest { id: id.into() };
    let mut stream = client.watch_job(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event.event.expect("every event has a variant"));
        }
    };
    tokio::time::timeout(Duration::from_secs(30), collect)
        .await
        .expect("the event stream ends with the job");
    events
}

fn statuses(events: &[Event]) -> Vec<JobStatus> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Status(s) => Some(s.status()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn run_returns_the_outcome_and_http_shares_the_port() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("");
    let mut client = server.client().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(proto::RunRequest {
        code: Some(
            "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read() * 2); print(sys.argv[1:])"
                .into(),
        ),
        stdin: vec![0xff, b'a'],
        args: vec!["x".into()],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let response = client.run(request).await.unwrap();
    let header = response
        .metadata()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap());
    assert_eq!(header, Some(trace_id));
    let ok = response.into_inner();
    assert_eq!(ok.verdict(), Verdict::Ok, "{ok:?}\n{}", server.log());
    assert_eq!(ok.verdict_name, "ok");
    assert_eq!(ok.exit_code, Some(0));
    assert_eq!(ok.stdout, b"\xffa\xffa['x']\n", "bytes, not text");
    assert_eq!(ok.trace_id, trace_id);
    let host = pyward::Arch::host().as_str();
    assert_eq!(
        (ok.image.as_deref(), ok.arch.as_deref()),
        (Some("host"), Some(host))
    );

    let files = proto::RunRequest {
        files: vec![
            proto::File {
                path: "main.py".into(),
                contents: b"import helper; helper.go()".to_vec(),
            },
            proto::File {
                path: "helper.py".into(),
                contents: b"def go(): print('helped')\n".to_vec(),
            },
        ],
        entrypoint: Some("main.py".into()),
        ..Default::default()
    };
    let helped = client.run(files).await.unwrap().into_inner();
    assert_eq!(
        (helped.verdict(), helped.stdout.as_slice()),
        (Verdict::Ok, &b"helped\n"[..])
    );

    let mut spin = code("while True: pass");
    spin.limits = Some(proto::Limits {
        wall_time: Some("500ms".into()),
        ..Default::default()
    });
    let timeout = client.run(spin).await.unwrap().into_inner();
    assert_eq!(timeout.verdict(), Verdict::Timeout, "{timeout:?}");
    assert_eq!(timeout.verdict_name, "timeout");
    assert!(timeout.message.is_some());
    assert_eq!(timeout.trace_id.len(), 32);

    let policies = client
        .list_policies(proto::ListPoliciesRequest {})
        .await
        .unwrap()
        .into_inner()
        .policies;
    assert_eq!(policies.len(), 1);
    assert_eq!(
        (policies[0].name.as_str(), policies[0].default),
        ("strict", true)
    );
    let limits = policies[0].limits.clone().unwrap();
    assert_eq!(limits.wall_time.as_deref(), Some("10s"));

    let images = client
        .list_images(proto::ListImagesRequest {})
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(
        (images[0].name.as_str(), images[0].runtime.as_str()),
        ("host", "native")
    );
    assert_eq!(images[0].arches, [host]);
    assert_eq!(images[0].default_arch.as_deref(), Some(host));
    assert!(images[0].default);
    let python = images[0].python.as_deref().expect("host's Python version");
    assert!(python.starts_with("3."), "{python}");
    let mut chosen = code("print(1)");
    chosen.image = images[0].name.clone();
    chosen.arch = images[0].arches[0].clone();
    let ran = client.run(chosen).await.unwrap().into_inner();
    assert_eq!(ran.verdict(), Verdict::Ok);
    assert_eq!(
        (ran.image.as_deref(), ran.arch.as_deref()),
        (Some("host"), Some(host))
    );

    // HTTP/1.1 on the same port still answers, and counts the gRPC calls.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    stream.read_to_string(&mut metrics).unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for line in [
        "pyward_grpc_requests_total{method=\"Run\"} 4",
        "pyward_grpc_requests_total{method=\"ListImages\"} 1",
        "pyward_runs_total{kind=\"sync\",verdict=\"timeout\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// The path, status, status name, content, size and truncation of a file.
type Fields<'a> = (
    &'a str,
    proto::OutputStatus,
    &'a str,
    &'a [u8],
    Option<u64>,
    bool,
);

fn file_fields(files: &[proto::OutputFile]) -> Vec<Fields<'_>> {
    files
        .iter()
        .map(|f| {
            let (path, name) = (f.path.as_str(), f.status_name.as_str());
            (
                path,
                f.status(),
                name,
                f.content.as_slice(),
                f.size,
                f.truncated,
            )
        })
        .collect()
}

#[tokio::test]
async fn declared_output_files_come_back_byte_exact_from_run_and_jobs() {
    use proto::OutputStatus;
    if !common::can_serve() {
        return;
    }
    let server = Server::start("");
    let mut client = server.client().await;
    // Not UTF-8, with a NUL: the bytes must come back as they are.
    let raw: &[u8] = &[0xff, 0x00, 0xfe, b'\n', 0xc3, 0x28];
    let mut request = code("open('result.bin', 'wb').write(bytes([255, 0, 254, 10, 195, 40]))");
    request.outputs = vec!["result.bin".into(), "missing.txt".into()];
    let expected = vec![
        ("result.bin", OutputStatus::Ok, "ok", raw, Some(6), false),
        (
            "missing.txt",
            OutputStatus::Missing,
            "missing",
            &b""[..],
            None,
            false,
        ),
    ];

    let ran = client.run(request.clone()).await.unwrap().into_inner();
    assert_eq!(ran.verdict(), Verdict::Ok, "{ran:?}\n{}", server.log());
    assert_eq!(file_fields(&ran.files), expected, "{ran:?}");

    // A job stores its outcome as JSON (content in base64 there): the
    // files of WatchJob's outcome and of GetJob are the same bytes.
    let job = client.submit(request).await.unwrap().into_inner();
    let events = watch(client.clone(), &job.id).await;
    let Some(Event::Outcome(outcome)) = events.last() else {
        panic!("the last event is the outcome: {events:?}");
    };
    assert_eq!(outcome.verdict(), Verdict::Ok, "{outcome:?}");
    assert_eq!(file_fields(&outcome.files), expected);
    let done = client
        .get_job(proto::GetJobRequest { id: job.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(file_fields(&done.outcome.unwrap().files), expected);

    // A run that declares nothing gets no files.
    let none = client.run(code("print(1)")).await.unwrap().into_inner();
    assert!(none.files.is_empty(), "{none:?}");
}

#[tokio::test]
async fn jobs_stream_their_status_output_and_outcome_and_a_queued_job_is_cancelled() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_running = 1\n");
    let mut client = server.client().await;
    let running = submit(client.clone(), "import time; time.sleep(1); print('first')").await;
    assert_eq!(running.status(), JobStatus::Queued);
    assert_eq!(running.id.len(), 32);
    let queued = submit(client.clone(), "print('never')").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let job = client
            .get_job(proto::GetJobRequest {
                id: running.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if job.status() == JobStatus::Running {
            break;
        }
        assert!(Instant::now() < deadline, "the first job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cancelled = cancel(client.clone(), &queued.id).await.unwrap();
    assert_eq!(cancelled.status(), JobStatus::Cancelled);
    assert!(cancelled.outcome.is_none(), "it never ran: {cancelled:?}");
    let missing = cancel(client.clone(), "0123").await.unwrap_err();
    assert_eq!(error_code(&missing, Code::NotFound), "not_found");

    let events = watch(client.clone(), &running.id).await;
    // The first status is the job's when the watch starts: running, unless
    // this machine was slow enough for it to have finished already.
    let seen = statuses(&events);
    assert!(
        seen == [JobStatus::Running, JobStatus::Finished] || seen == [JobStatus::Finished],
        "{events:?}"
    );
    let Some(Event::Outcome(outcome)) = events.last() else {
        panic!("the last event is the outcome: {events:?}");
    };
    assert_eq!(outcome.verdict(), Verdict::Ok);
    assert_eq!(outcome.stdout, b"first\n");
    assert_eq!(outcome.trace_id, running.trace_id);
    // Its output came as chunks too (those written after the watch began:
    // all of it, unless this machine is slow), before the final status.
    let streamed: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Output(chunk) => Some(chunk.data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(b"first\n".ends_with(&streamed), "{events:?}");
    if !streamed.is_empty() {
        let last_chunk = events.iter().rposition(|e| matches!(e, Event::Output(_)));
        let finished = events
            .iter()
            .position(|e| matches!(e, Event::Status(s) if s.status() == JobStatus::Finished));
        assert!(last_chunk < finished, "{events:?}");
    }

    let done = client
        .get_job(proto::GetJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), JobStatus::Finished);
    assert_eq!(done.outcome.unwrap().stdout, b"first\n");
    let finished = cancel(client.clone(), &running.id).await.unwrap_err();
    assert_eq!(
        error_code(&finished, Code::FailedPrecondition),
        "job_finished"
    );

    // A cancelled job's stream is its status, and nothing more.
    let events = watch(client.clone(), &queued.id).await;
    assert_eq!(statuses(&events), [JobStatus::Cancelled], "{events:?}");
    assert_eq!(events.len(), 1, "{events:?}");
}

/// The next event of `stream`, None at its end; fails after 15 s without one.
async fn next_event(stream: &mut tonic::Streaming<proto::JobEvent>) -> Option<Event> {
    let message = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("an event or the end within 15 s")
        .expect("no error in the stream")?;
    Some(message.event.expect("every event has a variant"))
}

#[tokio::test]
async fn watch_streams_output_while_the_job_runs_and_cancel_kills_its_sandbox() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_running = 1\n");
    let mut client = server.client().await;
    // The program re-executes itself with a marker in its command line, to
    // find its process on the host; it prints, then sleeps past the strict
    // policy's 10 s wall time (a cancel that did nothing ends as `timeout`).
    let marker = format!("pyward-grpc-cancel-{}", std::process::id());
    let program = "import time\nprint('first', flush=True)\ntime.sleep(30)\nprint('never')\n";
    let text = format!(
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {program:?}, {marker:?}])\n"
    );
    let job = submit(client.clone(), &text).await;
    let request = proto::WatchJobRequest { id: job.id.clone() };
    let mut stream = client.watch_job(request).await.unwrap().into_inner();
    // The line may come in pieces (the sandbox's Python is unbuffered).
    let mut streamed = Vec::new();
    let mut before = Vec::new();
    while streamed != b"first\n" {
        match next_event(&mut stream).await {
            Some(Event::Output(chunk)) => {
                assert_eq!(chunk.stream(), proto::output_chunk::Stream::Stdout);
                streamed.extend(chunk.data);
                assert!(b"first\n".starts_with(&streamed), "{streamed:?}");
            }
            Some(event) => before.push(event),
            None => panic!("the stream ended before the output: {before:?}"),
        }
    }
    assert_eq!(
        statuses(&before).last(),
        Some(&JobStatus::Running),
        "{before:?}"
    );
    // Live: the job is still running, its program asleep.
    let now = client
        .get_job(proto::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.status(), JobStatus::Running, "{now:?}");
    assert_eq!(common::processes_with(&marker).len(), 1, "the program runs");

    let cancelled = cancel(client.clone(), &job.id).await.unwrap();
    assert_eq!(cancelled.status(), JobStatus::Cancelled, "{cancelled:?}");
    let mut after = Vec::new();
    while let Some(event) = next_event(&mut stream).await {
        after.push(event);
    }
    assert_eq!(statuses(&after), [JobStatus::Cancelled], "{after:?}");
    let Some(Event::Outcome(outcome)) = after.last() else {
        panic!("the outcome of what ran ends the stream: {after:?}");
    };
    assert_eq!(outcome.verdict(), Verdict::Signaled, "{outcome:?}");
    assert_eq!(outcome.signal_name.as_deref(), Some("SIGKILL"));
    assert_eq!(
        outcome.message.as_deref(),
        Some("cancelled by the client; the sandbox was killed")
    );
    assert_eq!(outcome.stdout, b"first\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived the cancel: {:?}",
            common::processes_with(&marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = client
        .get_job(proto::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.status(), JobStatus::Cancelled);
    assert_eq!(stored.outcome.as_ref(), Some(outcome));
    let again = cancel(client.clone(), &job.id).await.unwrap_err();
    assert_eq!(error_code(&again, Code::FailedPrecondition), "job_finished");
    // The next job runs: the cancel freed the worker.
    let next = submit(client.clone(), "print('next')").await;
    let events = watch(client.clone(), &next.id).await;
    let Some(Event::Outcome(outcome)) = events.last() else {
        panic!("the next job ran: {events:?}");
    };
    assert_eq!(outcome.stdout, b"next\n");
}

#[tokio::test]
async fn unknown_images_and_arches_are_invalid_and_the_cpu_quota_is_exhausted() {
    if !common::can_serve() {
        return;
    }
    // 0.06 CPU seconds a minute is 1 ms per second; the bucket holds 50 ms.
    let server = Server::start(&format!(
        "[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\n\
         cpu_seconds_per_minute = 0.06\ncpu_seconds_burst = 0.05\n"
    ));
    let mut client = server.client().await;
    let host = pyward::Arch::host();

    let mut unknown = code("pass");
    unknown.image = "nope".into();
    let status = client.run(authed(unknown, TOKEN_A)).await.unwrap_err();
    assert_eq!(error_code(&status, Code::InvalidArgument), "unknown_image");
    assert!(status.message().contains("may use: host"), "{status:?}");
    // A real architecture, but the native runtime has no emulation.
    let mut foreign = code("pass");
    foreign.arch = common::foreign_arch().as_str().into();
    for status in [
        client
            .run(authed(foreign.clone(), TOKEN_A))
            .await
            .unwrap_err(),
        client.submit(authed(foreign, TOKEN_A)).await.unwrap_err(),
    ] {
        assert_eq!(error_code(&status, Code::InvalidArgument), "unknown_arch");
        let runs_on = format!("it runs on: {host}");
        assert!(status.message().contains(&runs_on), "{status:?}");
    }

    // Burn 300 ms of CPU: within the bucket when it starts, 250 ms in debt after.
    let burn =
        code("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass");
    let burnt = client
        .run(authed(burn, TOKEN_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(burnt.verdict(), Verdict::Ok, "{burnt:?}");
    let cpu_ms = burnt.usage.unwrap().cpu_ms;
    assert!(cpu_ms >= 300, "{burnt:?}");
    // The debt, paid back at 1 ms of CPU per second of waiting.
    let expected = cpu_ms - 50;
    for status in [
        client.run(authed(code("pass"), TOKEN_A)).await.unwrap_err(),
        client
            .submit(authed(code("pass"), TOKEN_A))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(error_code(&status, Code::ResourceExhausted), "cpu_quota");
        assert!(
            status.message().contains("0.06 CPU seconds per minute"),
            "{status:?}"
        );
        let retry: u64 = status
            .metadata()
            .get("retry-after")
            .expect("retry-after")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (expected - 2..=expected + 12).contains(&retry),
            "retry-after {retry}, expected about {expected} for {cpu_ms} ms of CPU"
        );
    }
}

#[tokio::test]
async fn a_tenant_runs_only_its_images_and_lists_them() {
    // The Docker runtime blocks on its own async runtime: ask from a thread.
    let docker = std::thread::spawn(|| common::docker().is_some());
    if !common::can_serve() || !docker.join().unwrap() {
        return;
    }
    let host = pyward::Arch::host();
    let server = Server::start(&format!(
        "[[image]]\nname = \"host\"\n\
         [[image]]\nname = \"python3.11-bookworm\"\nruntime = \"docker\"\narch = [\"{host}\"]\n\
         [[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\n\
         [[tenant]]\nname = \"b\"\ntokens_sha256 = [\"{HASH_B}\"]\nimages = [\"host\"]\n"
    ));
    let mut client = server.client().await;
    let mut docker = code("import platform; print(platform.machine())");
    docker.image = "python3.11-bookworm".into();

    // Tenant b may use host only: the Docker image is forbidden, not unknown.
    for status in [
        client
            .run(authed(docker.clone(), "other"))
            .await
            .unwrap_err(),
        client
            .submit(authed(docker.clone(), "other"))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            error_code(&status, Code::PermissionDenied),
            "image_not_allowed"
        );
        assert!(status.message().contains("allowed: host"), "{status:?}");
    }
    // Tenant a may: the run goes to the image it names.
    let ran = client
        .run(authed(docker, TOKEN_A))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ran.verdict(), Verdict::Ok, "{ran:?}\n{}", server.log());
    assert_eq!(
        (ran.image.as_deref(), ran.arch.as_deref()),
        (Some("python3.11-bookworm"), Some(host.as_str()))
    );
    assert_eq!(ran.stdout, format!("{}\n", host.kernel_name()).as_bytes());

    // Each tenant lists the images it may use, its default first.
    let listed = |token: &'static str| {
        let mut client = client.clone();
        async move {
            let request = authed(proto::ListImagesRequest {}, token);
            client
                .list_images(request)
                .await
                .unwrap()
                .into_inner()
                .images
        }
    };
    let a = listed(TOKEN_A).await;
    let names: Vec<&str> = a.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["host", "python3.11-bookworm"], "{a:?}");
    assert_eq!(
        (a[1].runtime.as_str(), a[1].default, a[1].arches.clone()),
        ("docker", false, vec![host.as_str().to_owned()]),
        "{a:?}"
    );
    let b = listed("other").await;
    let names: Vec<&str> = b.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["host"], "{b:?}");
    assert!(b[0].default);
}

#[tokio::test]
async fn tokens_policies_and_quotas_are_enforced() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start(&format!(
        "[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\npolicies = [\"strict\"]\n\
         runs_per_minute = 1\nburst = 2\n\
         [[tenant]]\nname = \"b\"\ntokens_sha256 = [\"{HASH_B}\"]\npolicies = [\"standard\"]\n"
    ));
    let mut client = server.client().await;

    let none = client.run(code("print(1)")).await.unwrap_err();
    assert_eq!(error_code(&none, Code::Unauthenticated), "unauthorized");
    let bad = client
        .run(authed(code("print(1)"), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(error_code(&bad, Code::Unauthenticated), "unauthorized");
    let listing = client
        .list_policies(authed(proto::ListPoliciesRequest {}, "nope"))
        .await
        .unwrap_err();
    assert_eq!(listing.code(), Code::Unauthenticated);

    let mut other = code("print(1)");
    other.policy = Some("standard".into());
    let denied = client.run(authed(other, TOKEN_A)).await.unwrap_err();
    assert_eq!(
        error_code(&denied, Code::PermissionDenied),
        "policy_not_allowed"
    );
    assert!(denied.message().contains("strict"), "{denied:?}");
    let mut unknown = code("print(1)");
    unknown.policy = Some("lenient".into());
    let unknown = client.run(authed(unknown, TOKEN_A)).await.unwrap_err();
    assert_eq!(
        error_code(&unknown, Code::InvalidArgument),
        "unknown_policy"
    );

    // Tenant a's burst is 2 runs; the third within the minute is refused.
    for _ in 0..2 {
        let ok = client.run(authed(code("print(1)"), TOKEN_A)).await.unwrap();
        assert_eq!(ok.into_inner().verdict(), Verdict::Ok);
    }
    let limited = client
        .submit(authed(code("print(1)"), TOKEN_A))
        .await
        .unwrap_err();
    assert_eq!(error_code(&limited, Code::ResourceExhausted), "rate_limit");
    let retry: u64 = limited
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_naming_the_field() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_body = \"64KiB\"\n");
    let mut client = server.client().await;
    let mut bad_limit = code("print(1)");
    bad_limit.limits = Some(proto::Limits {
        memory: Some("lots".into()),
        ..Default::default()
    });
    let mut looser = code("print(1)");
    looser.limits = Some(proto::Limits {
        wall_time: Some("1h".into()),
        ..Default::default()
    });
    let mut both = code("print(1)");
    both.entrypoint = Some("main.py".into());
    let mut image = code("print(1)");
    image.image = "python:3.13".into();
    let mut arch = code("print(1)");
    arch.arch = "riscv64".into();
    let mut escape = code("print(1)");
    escape.outputs = vec!["result.txt".into(), "../x".into()];
    for (request, error, field) in [
        (bad_limit, "invalid_request", "limits.memory"),
        (looser, "invalid_request", "wall_time"),
        (both, "invalid_request", "either code or entrypoint"),
        (proto::RunRequest::default(), "invalid_request", "give code"),
        (image, "unknown_image", "python:3.13"),
        (arch, "unknown_arch", "riscv64"),
        (escape, "invalid_request", "output path \"../x\""),
    ] {
        let status = client.run(request.clone()).await.unwrap_err();
        assert_eq!(
            error_code(&status, Code::InvalidArgument),
            error,
            "{status:?}"
        );
        assert!(status.message().contains(field), "{field}: {status:?}");
        // Submit refuses it the same way, before storing anything.
        let status = client.submit(request).await.unwrap_err();
        assert_eq!(
            error_code(&status, Code::InvalidArgument),
            error,
            "{status:?}"
        );
    }
    // max_body bounds a message as it bounds an HTTP body.
    let huge = code(&format!("# {}", "x".repeat(70_000)));
    let status = client.run(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("65536"), "{status:?}");
    let missing = client
        .get_job(proto::GetJobRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(error_code(&missing, Code::NotFound), "not_found");
}

#[tokio::test]
async fn a_watch_cut_short_by_shutdown_ends_with_unavailable() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("");
    let mut client = server.client().await;
    let job = submit(client.clone(), "import time; time.sleep(2)").await;
    let request = proto::WatchJobRequest { id: job.id.clone() };
    let mut stream = client.watch_job(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Status(_))), "{first:?}");
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(event)) => assert!(
                    matches!(event.event, Some(Event::Status(_))),
                    "only status events before the cut: {event:?}"
                ),
                Ok(None) => panic!("the stream ended without saying why"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends at shutdown");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    let code = end.metadata().get("x-error-code").unwrap();
    assert_eq!(code, "shutting_down");
}
