//! `pyward serve` end to end: the real binary on a free loopback port with a
//! temporary database, driven by a minimal HTTP/1.1 client. Auth and
//! admission (401, 403, 429), malformed bodies, sync runs and a limit
//! verdict, jobs and their events (output streamed while the job runs),
//! cancelling queued and running jobs, metrics, graceful shutdown, and a
//! SIGKILL while jobs are queued and running.

mod common;

use base64::Engine as _;
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token of tenant `a` in [`AUTH_CONFIG`], and its sha256.
const TOKEN_A: &str = "secret";
const HASH_A: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
/// sha256 of "other".
const HASH_B: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    _temp: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the server with `extra` appended to a config holding the
    /// listen address and database.
    fn start(extra: &str) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        let port = free_port();
        let config = dir.join("pyward.toml");
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n{extra}",
            dir.join("jobs.sqlite3").display()
        );
        std::fs::write(&config, text).unwrap();
        let mut server = Server {
            child: None,
            port,
            dir,
            config,
            _temp: temp,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pyward"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Generous: a server that exits is caught at once below, and one
        // that hangs is a failure either way; a slow machine (an emulated
        // one checks each image's Python for seconds) is not.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not listen within 120 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the server process to exit and returns whether it exited 0.
    fn wait(&mut self, within: Duration) -> bool {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit within {within:?}:\n{}", self.log());
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        // A server may answer (413) before reading all of a large body.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        if let Err(e) = stream.read_to_end(&mut raw) {
            panic!(
                "{method} {path}: {e} after {} bytes; server log:\n{}",
                raw.len(),
                self.log()
            );
        }
        Response::parse(&raw)
    }

    /// Opens GET /v1/jobs/{id}/events and returns its events as they come.
    fn events(&self, id: &str) -> Events {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let head = format!(
            "GET /v1/jobs/{id}/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        (&stream).write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            chunked |= line.eq_ignore_ascii_case("transfer-encoding: chunked\r\n");
        }
        Events {
            reader,
            chunked,
            pending: String::new(),
        }
    }

    fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, &[], body.as_bytes())
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// Polls a job until it is terminal.
    fn wait_job(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.get(&format!("/v1/jobs/{id}")).json();
            let status = job["status"].as_str().unwrap().to_owned();
            if ["finished", "failed", "cancelled"].contains(&status.as_str()) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {status}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server-sent event stream read as it comes (HTTP/1.1, chunked or not).
struct Events {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Text received but not yet split into events.
    pending: String,
}

/// One server-sent event: its type and its data.
#[derive(Debug)]
struct Sse {
    kind: String,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The bytes of a `stdout` or `stderr` event.
    fn chunk_bytes(&self) -> Vec<u8> {
        let data = self.json();
        let text = data["data"].as_str().unwrap();
        match data["encoding"].as_str().unwrap() {
            "utf-8" => text.as_bytes().to_vec(),
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
            other => panic!("unknown encoding {other}"),
        }
    }
}

impl Events {
    /// The next event, or None when the server ended the stream.
    fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut event = Sse {
                    kind: "message".into(),
                    data: String::new(),
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(kind) = line.strip_prefix("event:") {
                        event.kind = kind.trim().to_owned();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue; // a keep-alive comment
            }
            let more = self.read_more()?;
            self.pending.push_str(&more);
        }
    }

    fn read_more(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        if self.chunked {
            let mut size = String::new();
            self.reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            bytes.resize(size + 2, 0);
            self.reader.read_exact(&mut bytes).ok()?;
            bytes.truncate(size);
        } else {
            let mut buf = [0u8; 4096];
            let n = self.reader.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8(bytes).unwrap())
    }

    /// Reads events until one of `kind`; returns it and the events before it.
    fn until(&mut self, kind: &str) -> (Sse, Vec<Sse>) {
        let mut before = Vec::new();
        loop {
            match self.next() {
                Some(event) if event.kind == kind => return (event, before),
                Some(event) => before.push(event),
                None => panic!("the stream ended before an event {kind:?}: {before:?}"),
            }
        }
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        Response {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: status {} body {:?}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }

    /// Asserts the status and the error shape; returns the error code.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let body = self.json();
        let error = &body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(error["trace_id"].as_str().map(str::len), Some(32), "{body}");
        error["code"].as_str().unwrap().to_owned()
    }
}

const AUTH_CONFIG: &str = "max_running = 2\n";

fn auth_config() -> String {
    format!(
        "{AUTH_CONFIG}[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\npolicies = [\"strict\"]\n\
         max_concurrent = 1\nruns_per_minute = 1\nburst = 2\n\
         [[tenant]]\nname = \"b\"\ntokens_sha256 = [\"{HASH_B}\"]\npolicies = [\"standard\"]\n"
    )
}

#[test]
fn tokens_policies_concurrency_and_rate_are_enforced() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start(&auth_config());
    let bearer = format!("Bearer {TOKEN_A}");
    let auth = [("Authorization", bearer.as_str())];
    let run = |body: &str| server.request("POST", "/v1/runs", &auth, body.as_bytes());

    let none = server.post("/v1/runs", r#"{"code":"pass"}"#);
    assert_eq!(none.error(401), "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("bearer"));
    let wrong = server.request(
        "POST",
        "/v1/runs",
        &[("Authorization", "Bearer secret2")],
        b"{}",
    );
    assert_eq!(wrong.error(401), "unauthorized");
    // `standard` is tenant b's: a's request is forbidden; an unknown name is a 400.
    assert_eq!(
        run(r#"{"code":"pass","policy":"standard"}"#).error(403),
        "policy_not_allowed"
    );
    assert_eq!(
        run(r#"{"code":"pass","policy":"nope"}"#).error(400),
        "unknown_policy"
    );

    // Concurrency cap 1: a second run while one sleeps is refused.
    let slow = std::thread::scope(|scope| {
        let slow = scope.spawn(|| run(r#"{"code":"import time; time.sleep(1.5)"}"#));
        let deadline = Instant::now() + Duration::from_secs(5);
        let busy = loop {
            std::thread::sleep(Duration::from_millis(100));
            let metrics = server.get("/metrics").body;
            if metrics.contains("pyward_runs_in_flight 1") || Instant::now() > deadline {
                break run(r#"{"code":"pass"}"#);
            }
        };
        assert_eq!(busy.error(429), "concurrency_limit");
        assert!(busy.header("retry-after").is_some());
        slow.join().unwrap()
    });
    assert_eq!(slow.status, 200, "{}", slow.body);
    // Burst 2 at one per minute: the slow run took the first token, this the second.
    assert_eq!(run(r#"{"code":"pass"}"#).status, 200);
    let limited = run(r#"{"code":"pass"}"#);
    assert_eq!(limited.error(429), "rate_limit");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // A tenant sees only its own jobs.
    let other = [("Authorization", "Bearer other")];
    let job = server.request("POST", "/v1/jobs", &other, br#"{"code":"pass"}"#);
    assert_eq!(job.status, 202, "{}", job.body);
    let path = format!("/v1/jobs/{}", job.json()["id"].as_str().unwrap());
    assert_eq!(
        server.request("GET", &path, &auth, b"").error(404),
        "not_found"
    );
    assert_eq!(server.request("GET", &path, &other, b"").status, 200);
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("pyward_rejections_total{reason=\"rate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pyward_rejections_total{reason=\"auth\"} 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_requests_get_a_4xx_with_the_error_shape_and_the_trace_id() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_body = \"64KiB\"\n");
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        ("POST", "/v1/runs", b"", 400, "invalid_json"),
        ("POST", "/v1/runs", b"{", 400, "invalid_json"),
        ("POST", "/v1/runs", b"\xff\xfe", 400, "invalid_json"),
        ("POST", "/v1/runs", b"[]", 400, "invalid_json"),
        (
            "POST",
            "/v1/runs",
            br#"{"code":"1","extra":true}"#,
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/runs",
            br#"{"code":"1","stdin_base64":"%%"}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/runs",
            br#"{"files":[{"path":"../x.py","text":""}],"entrypoint":"../x.py"}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/runs",
            br#"{"code":"1","limits":{"memory":"1GiB"}}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/runs",
            br#"{"code":"1","env":{"LD_PRELOAD":"x"}}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/jobs",
            br#"{"code":"1","limits":{"pids":0}}"#,
            400,
            "invalid_request",
        ),
        ("POST", "/v1/jobs", br#"{"args":[1]}"#, 400, "invalid_json"),
        ("GET", "/v1/jobs/nope", b"", 404, "not_found"),
        ("DELETE", "/v1/jobs/nope", b"", 404, "not_found"),
        ("GET", "/v1/jobs/nope/events", b"", 404, "not_found"),
        ("GET", "/v2/anything", b"", 404, "not_found"),
        ("GET", "/v1/runs", b"", 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let response = server.request(method, path, &[], body);
        assert_eq!(
            &response.error(*status),
            code,
            "{method} {path} {}",
            String::from_utf8_lossy(body)
        );
    }
    let big = format!(r#"{{"code":"{}"}}"#, "x".repeat(100 * 1024));
    assert_eq!(server.post("/v1/runs", &big).error(413), "body_too_large");

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = format!("00-{trace}-b7ad6b7169203331-01");
    let response = server.request("POST", "/v1/runs", &[("traceparent", &parent)], b"{");
    assert_eq!(response.json()["error"]["trace_id"], trace);
    assert_eq!(response.header("x-trace-id"), Some(trace));
    // The server is still fine.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn sync_runs_return_the_outcome_and_count_in_metrics() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("");
    let ok = server.post("/v1/runs", r#"{"code":"import sys; print(sys.stdin.read() * 2, sys.argv[1:])","stdin":"ab","args":["x"]}"#);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok = ok.json();
    assert_eq!(ok["verdict"], "ok");
    assert_eq!(ok["stdout"], "abab ['x']\n");
    assert_eq!(ok["trace_id"].as_str().map(str::len), Some(32));

    let files = r#"{"files":[{"path":"main.py","text":"import helper; helper.go()"},
        {"path":"helper.py","base64":"ZGVmIGdvKCk6IHByaW50KCJoZWxwZWQiKQo="}],"entrypoint":"main.py"}"#;
    let helped = server.post("/v1/runs", files).json();
    assert_eq!(
        (helped["verdict"].as_str(), helped["stdout"].as_str()),
        (Some("ok"), Some("helped\n"))
    );

    let timeout = server
        .post(
            "/v1/runs",
            r#"{"code":"while True: pass","limits":{"wall_time":"500ms"}}"#,
        )
        .json();
    assert_eq!(timeout["verdict"], "timeout", "{timeout}");

    let policies = server.get("/v1/policies").json();
    assert_eq!(policies["policies"][0]["name"], "strict");
    assert_eq!(server.get("/readyz").json()["status"], "ready");
    let metrics = server.get("/metrics");
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "pyward_runs_total{kind=\"sync\",verdict=\"ok\"} 2",
        "pyward_runs_total{kind=\"sync\",verdict=\"timeout\"} 1",
        "pyward_run_duration_seconds_count 3",
        "pyward_run_duration_seconds_bucket{le=\"+Inf\"} 3",
        "pyward_queue_depth 0",
        "pyward_runs_in_flight 0",
    ] {
        assert!(metrics.body.contains(line), "{line} in\n{}", metrics.body);
    }
}

#[test]
fn output_files_come_back_from_sync_runs_and_jobs() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("");
    let code = "import os\n\
        open('result.json', 'w').write('{\"n\": 1}')\n\
        os.makedirs('out'); open('out/raw.bin', 'wb').write(bytes([0, 0xff]))\n\
        os.symlink('/etc/passwd', 'link')";
    let body = serde_json::json!({
        "code": code,
        "outputs": ["result.json", "out/raw.bin", "link", "gone"],
    })
    .to_string();
    let run = server.post("/v1/runs", &body);
    assert_eq!(run.status, 200, "{}", run.body);
    let expected = serde_json::json!([
        {"path": "result.json", "status": "ok", "content": "{\"n\": 1}", "encoding": "utf-8", "size": 8, "truncated": false},
        {"path": "out/raw.bin", "status": "ok", "content": "AP8=", "encoding": "base64", "size": 2, "truncated": false},
        {"path": "link", "status": "not_regular", "content": "", "encoding": "utf-8", "size": null, "truncated": false},
        {"path": "gone", "status": "missing", "content": "", "encoding": "utf-8", "size": null, "truncated": false},
    ]);
    assert_eq!(run.json()["files"], expected, "{}", run.body);

    // Through the job store: the stored outcome keeps them.
    let response = server.post("/v1/jobs", &body);
    assert_eq!(response.status, 202, "{}", response.body);
    let id = response.json()["id"].as_str().unwrap().to_owned();
    let job = server.wait_job(&id, Duration::from_secs(30));
    assert_eq!(job["outcome"]["files"], expected, "{job}");

    // A path out of the work dir is refused before anything runs.
    for outputs in [r#"["../etc/passwd"]"#, r#"["a", "a"]"#, r#""a""#] {
        let bad = server.post(
            "/v1/runs",
            &format!(r#"{{"code":"pass","outputs":{outputs}}}"#),
        );
        let code = bad.error(400);
        assert!(
            ["invalid_request", "invalid_json"].contains(&code.as_str()),
            "{outputs}: {code}"
        );
    }
}

fn submit(server: &Server, code: &str) -> String {
    let response = server.post("/v1/jobs", &serde_json::json!({ "code": code }).to_string());
    assert_eq!(response.status, 202, "{}", response.body);
    let job = response.json();
    assert_eq!(job["status"], "queued");
    assert_eq!(
        response.header("location").map(str::to_owned),
        Some(format!("/v1/jobs/{}", job["id"].as_str().unwrap()))
    );
    job["id"].as_str().unwrap().to_owned()
}

#[test]
fn jobs_run_stream_events_and_a_queued_job_is_cancelled() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_running = 1\n");
    let running = submit(&server, "import time; time.sleep(1); print('first')");
    let queued = submit(&server, "print('never')");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.get(&format!("/v1/jobs/{running}")).json()["status"] != "running" {
        assert!(Instant::now() < deadline, "the first job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cancelled = server.request("DELETE", &format!("/v1/jobs/{queued}"), &[], b"");
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["status"], "cancelled");

    let events = server.get(&format!("/v1/jobs/{running}/events"));
    assert_eq!(events.status, 200);
    assert!(
        events
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let running_at = events
        .body
        .find(r#""status":"running""#)
        .expect(&events.body);
    let finished_at = events
        .body
        .find(r#""status":"finished""#)
        .expect(&events.body);
    let outcome_at = events.body.find("event: outcome").expect(&events.body);
    assert!(
        running_at < finished_at && finished_at < outcome_at,
        "{}",
        events.body
    );
    assert!(
        events.body.contains(r#""stdout":"first\n""#),
        "{}",
        events.body
    );

    let job = server.wait_job(&running, Duration::from_secs(10));
    assert_eq!(job["outcome"]["verdict"], "ok");
    assert_eq!(
        server.wait_job(&queued, Duration::from_secs(1))["outcome"],
        Value::Null
    );
    let done = server.request("DELETE", &format!("/v1/jobs/{running}"), &[], b"");
    assert_eq!(done.error(409), "job_finished");
}

#[test]
fn output_streams_while_the_job_runs_and_cancel_kills_its_sandbox() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_running = 1\n");
    // The program re-executes itself with a marker in its command line, to
    // find its process on the host; it prints, then sleeps past the strict
    // policy's 10 s wall time (a cancel that did nothing ends as `timeout`).
    let marker = format!("pyward-serve-cancel-{}", std::process::id());
    let program = "import time\nprint('first', flush=True)\ntime.sleep(30)\nprint('never')\n";
    let code = format!(
        "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {program:?}, {marker:?}])\n"
    );
    let id = submit(&server, &code);
    let mut events = server.events(&id);
    // The line may come in pieces (the sandbox's Python is unbuffered).
    let mut streamed = Vec::new();
    let mut statuses = Vec::new();
    while streamed != b"first\n" {
        let (chunk, before) = events.until("stdout");
        assert_eq!(chunk.json()["encoding"], "utf-8");
        streamed.extend(chunk.chunk_bytes());
        assert!(b"first\n".starts_with(&streamed), "{streamed:?}");
        statuses.extend(before.into_iter().map(|e| e.data));
    }
    assert!(
        statuses.iter().any(|s| s.contains(r#""status":"running""#)),
        "{statuses:?}"
    );
    // Live: the job is still running, its program asleep.
    let job = server.get(&format!("/v1/jobs/{id}")).json();
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(common::processes_with(&marker).len(), 1, "the program runs");
    // A watcher that comes after the line was written gets it too, once,
    // after the running status.
    let mut late = server.events(&id);
    let mut replayed = Vec::new();
    while replayed != b"first\n" {
        let (chunk, before) = late.until("stdout");
        replayed.extend(chunk.chunk_bytes());
        assert!(b"first\n".starts_with(&replayed), "{replayed:?}");
        assert!(
            replayed.len() > chunk.chunk_bytes().len()
                || before
                    .iter()
                    .any(|e| e.data.contains(r#""status":"running""#)),
            "{before:?}"
        );
    }

    let cancel = server.request("DELETE", &format!("/v1/jobs/{id}"), &[], b"");
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert_eq!(cancel.json()["status"], "cancelled");
    let (outcome, before) = events.until("outcome");
    assert!(
        before
            .iter()
            .any(|e| e.data.contains(r#""status":"cancelled""#)),
        "{before:?}"
    );
    let outcome = outcome.json();
    assert_eq!(
        (
            &outcome["verdict"],
            &outcome["signal_name"],
            &outcome["message"]
        ),
        (
            &Value::from("signaled"),
            &Value::from("SIGKILL"),
            &Value::from("cancelled by the client; the sandbox was killed")
        ),
        "{outcome}"
    );
    assert_eq!(outcome["stdout"], "first\n");
    assert!(events.next().is_none(), "the stream ends after the outcome");

    let job = server.wait_job(&id, Duration::from_secs(1));
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["outcome"], outcome);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::processes_with(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived the cancel: {:?}",
            common::processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = server.request("DELETE", &format!("/v1/jobs/{id}"), &[], b"");
    assert_eq!(again.error(409), "job_finished");
    // The next job runs: the cancel freed the worker.
    let next = submit(&server, "print('next')");
    let job = server.wait_job(&next, Duration::from_secs(10));
    assert_eq!(job["outcome"]["stdout"], "next\n", "{job}");
}

#[test]
fn streamed_chunks_stop_at_the_output_cap() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start("max_running = 1\n");
    // The program waits a moment before writing, so that the stream is
    // following it from its first byte.
    let code = "import sys, time\ntime.sleep(0.5)\n\
                for _ in range(40):\n    sys.stdout.write('y' * 100); sys.stdout.flush()\n";
    let body = serde_json::json!({"code": code, "limits": {"output": "1KiB"}});
    let response = server.post("/v1/jobs", &body.to_string());
    assert_eq!(response.status, 202, "{}", response.body);
    let id = response.json()["id"].as_str().unwrap().to_owned();
    let mut events = server.events(&id);
    let (outcome, before) = events.until("outcome");
    let outcome = outcome.json();
    assert_eq!(outcome["verdict"], "output_limit", "{outcome}");
    let streamed: Vec<u8> = before
        .iter()
        .filter(|e| e.kind == "stdout")
        .flat_map(Sse::chunk_bytes)
        .collect();
    assert_eq!(streamed.len(), 1024, "{before:?}");
    // All of the output comes before the final status.
    let last_chunk = before.iter().rposition(|e| e.kind == "stdout").unwrap();
    let finished = before
        .iter()
        .position(|e| e.data.contains(r#""status":"finished""#))
        .unwrap();
    assert!(last_chunk < finished, "{before:?}");
    assert_eq!(streamed, vec![b'y'; 1024]);
    assert_eq!(outcome["stdout"].as_str().unwrap().as_bytes(), streamed);
}

#[test]
fn sigterm_lets_the_running_job_finish_then_exits() {
    if !common::can_serve() {
        return;
    }
    let mut server = Server::start("max_running = 1\nshutdown_grace = \"20s\"\n");
    let id = submit(&server, "import time; time.sleep(1); print('done')");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.get(&format!("/v1/jobs/{id}")).json()["status"] != "running" {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait(Duration::from_secs(20)), "{}", server.log());
    server.spawn();
    let job = server.wait_job(&id, Duration::from_secs(1));
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("finished"), Some(1)),
        "{job}"
    );
    assert_eq!(job["outcome"]["stdout"], "done\n");
}

#[test]
fn every_accepted_job_reaches_a_terminal_state_across_a_sigkill() {
    if !common::can_serve() {
        return;
    }
    let mut server = Server::start("max_running = 2\n");
    let ids: Vec<String> = (0..6)
        .map(|i| submit(&server, &format!("import time; time.sleep(1); print({i})")))
        .collect();
    // Kill while two run and four wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let statuses: Vec<Value> = ids
            .iter()
            .map(|id| server.get(&format!("/v1/jobs/{id}")).json()["status"].clone())
            .collect();
        let running = statuses.iter().filter(|s| *s == "running").count();
        let queued = statuses.iter().filter(|s| *s == "queued").count();
        if running == 2 && queued == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw 2 running and 4 queued: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(!server.wait(Duration::from_secs(5)));
    // Nothing the server started outlives it: its listening socket is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(("127.0.0.1", server.port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "a process the killed server started still holds its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    server.spawn();
    for (i, id) in ids.iter().enumerate() {
        let job = server.wait_job(id, Duration::from_secs(30));
        assert_eq!(job["status"], "finished", "{job}\n{}", server.log());
        assert_eq!(job["outcome"]["verdict"], "ok", "{job}");
        assert_eq!(job["outcome"]["stdout"], format!("{i}\n"), "{job}");
        assert!(matches!(job["attempts"].as_u64(), Some(1 | 2)), "{job}");
    }
    let rerun = ids
        .iter()
        .filter(|id| server.get(&format!("/v1/jobs/{id}")).json()["attempts"] == 2)
        .count();
    assert_eq!(rerun, 2, "the two jobs running at the kill ran again");
    assert!(
        server.log().contains("recovered jobs a crash left running"),
        "{}",
        server.log()
    );
}

#[test]
fn a_full_queue_is_503_and_finished_jobs_are_purged_after_retention() {
    if !common::can_serve() {
        return;
    }
    let server = Server::start(
        "max_running = 1\nqueue_bound = 1\njob_retention = \"1s\"\n\
         [[tenant]]\nname = \"local\"\nmax_concurrent = 2\n",
    );
    let running = submit(&server, "import time; time.sleep(1)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.get(&format!("/v1/jobs/{running}")).json()["status"] != "running" {
        assert!(Instant::now() < deadline, "the first job never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = submit(&server, "pass");
    let full = server.post("/v1/jobs", r#"{"code":"pass"}"#);
    assert_eq!(full.error(503), "queue_full");
    assert!(full.header("retry-after").is_some());
    // A sync run would wait behind the queued job: refused the same way.
    assert_eq!(
        server.post("/v1/runs", r#"{"code":"pass"}"#).error(503),
        "queue_full"
    );
    assert!(server.get("/metrics").body.contains("pyward_queue_depth 1"));

    server.wait_job(&queued, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get(&format!("/v1/jobs/{queued}")).status != 404 {
        assert!(
            Instant::now() < deadline,
            "the finished job was never purged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This machine's Python version, as `python3 --version` prints it.
fn host_python_version() -> String {
    let output = Command::new("/usr/bin/python3")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .strip_prefix("Python ")
        .unwrap()
        .to_owned()
}

#[test]
fn unknown_images_and_arches_are_400_and_a_cpu_quota_refuses_after_a_burning_run() {
    if !common::can_serve() {
        return;
    }
    // 0.06 CPU seconds a minute is 1 ms per second; the bucket holds 50 ms.
    let server = Server::start(&format!(
        "[[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\n\
         cpu_seconds_per_minute = 0.06\ncpu_seconds_burst = 0.05\n"
    ));
    let bearer = format!("Bearer {TOKEN_A}");
    let auth = [("Authorization", bearer.as_str())];
    let run = |body: &str| server.request("POST", "/v1/runs", &auth, body.as_bytes());
    let host = pyward::Arch::host();

    let images = server.request("GET", "/v1/images", &auth, b"");
    assert_eq!(images.status, 200, "{}", images.body);
    assert_eq!(
        images.json(),
        serde_json::json!({"images": [{
            "name": "host", "default": true, "runtime": "native",
            "arches": [host.as_str()], "default_arch": host.as_str(),
            "python": host_python_version(),
        }]})
    );
    let unknown = run(r#"{"code":"pass","image":"nope"}"#);
    assert_eq!(unknown.error(400), "unknown_image");
    assert!(unknown.body.contains("may use: host"), "{}", unknown.body);
    let riscv = run(r#"{"code":"pass","arch":"riscv64"}"#);
    assert_eq!(riscv.error(400), "unknown_arch");
    assert!(
        riscv.body.contains(&format!("it runs on: {host}")),
        "{}",
        riscv.body
    );
    // The native runtime has no emulation: the other arch is not offered.
    let foreign = common::foreign_arch();
    let body = format!(r#"{{"code":"pass","arch":"{foreign}"}}"#);
    assert_eq!(run(&body).error(400), "unknown_arch");
    let job = server.request(
        "POST",
        "/v1/jobs",
        &auth,
        br#"{"code":"pass","image":"nope"}"#,
    );
    assert_eq!(job.error(400), "unknown_image");

    // Burn 300 ms of CPU: within the bucket when it starts, 250 ms in debt after.
    let burn = run(
        "{\"code\":\"import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass\"}",
    );
    assert_eq!(burn.status, 200, "{}", burn.body);
    let burn = burn.json();
    assert_eq!(burn["verdict"], "ok", "{burn}");
    assert_eq!(
        (burn["image"].as_str(), burn["arch"].as_str()),
        (Some("host"), Some(host.as_str()))
    );
    let cpu = burn["usage"]["cpu_ms"].as_u64().unwrap() as f64 / 1000.0;
    assert!(cpu >= 0.3, "{burn}");
    // The debt, paid back at 1 ms of CPU per second of waiting.
    let expected = (cpu - 0.05) / 0.001;
    let refused = run(r#"{"code":"pass"}"#);
    assert_eq!(refused.error(429), "cpu_quota");
    assert!(
        refused.body.contains("0.06 CPU seconds per minute"),
        "{}",
        refused.body
    );
    let retry: f64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (expected - 2.0..=expected + 12.0).contains(&retry),
        "Retry-After {retry}, expected about {expected} for {cpu} s of CPU"
    );
    let job = server.request("POST", "/v1/jobs", &auth, br#"{"code":"pass"}"#);
    assert_eq!(job.error(429), "cpu_quota");
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("pyward_rejections_total{reason=\"cpu\"} 2"),
        "{metrics}"
    );
}

#[test]
fn runs_go_to_the_image_and_arch_they_name_and_tenants_only_to_their_images() {
    if !common::can_serve() || common::docker().is_none() || common::foreign_docker().is_none() {
        return;
    }
    let server = Server::start(&format!(
        "max_running = 2\n\
         [[image]]\nname = \"host\"\n\
         [[image]]\nname = \"python3.11-bookworm\"\nruntime = \"docker\"\narch = [\"amd64\", \"arm64\"]\n\
         [[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\n\
         [[tenant]]\nname = \"b\"\ntokens_sha256 = [\"{HASH_B}\"]\nimages = [\"host\"]\n"
    ));
    let bearer = format!("Bearer {TOKEN_A}");
    let a = [("Authorization", bearer.as_str())];
    let b = [("Authorization", "Bearer other")];
    let machine = "import platform; print(platform.machine())";
    let run = |auth: &[(&str, &str)], image: Option<&str>, arch: Option<&str>| {
        let body = serde_json::json!({"code": machine, "image": image, "arch": arch});
        server.request("POST", "/v1/runs", auth, body.to_string().as_bytes())
    };

    for (arch, kernel) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let response = run(&a, Some("python3.11-bookworm"), Some(arch));
        assert_eq!(response.status, 200, "{arch}: {}", response.body);
        let outcome = response.json();
        assert_eq!(outcome["verdict"], "ok", "{arch}: {outcome}");
        assert_eq!(
            outcome["stdout"],
            format!("{kernel}\n"),
            "{arch}: {outcome}"
        );
        assert_eq!(
            (outcome["image"].as_str(), outcome["arch"].as_str()),
            (Some("python3.11-bookworm"), Some(arch))
        );
    }
    // Without image or arch: the tenant's first image on the host's arch.
    let host = pyward::Arch::host();
    let default = run(&a, None, None).json();
    assert_eq!(
        (default["image"].as_str(), default["arch"].as_str()),
        (Some("host"), Some(host.as_str()))
    );
    assert_eq!(default["stdout"], format!("{}\n", host.kernel_name()));

    // A job keeps its image and arch through the store.
    let body =
        serde_json::json!({"code": machine, "image": "python3.11-bookworm", "arch": "arm64"});
    let job = server.request("POST", "/v1/jobs", &a, body.to_string().as_bytes());
    assert_eq!(job.status, 202, "{}", job.body);
    let id = job.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = server
            .request("GET", &format!("/v1/jobs/{id}"), &a, b"")
            .json();
        if job["status"] == "finished" || job["status"] == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "job still {}", job["status"]);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(job["outcome"]["stdout"], "aarch64\n", "{job}");
    assert_eq!(job["outcome"]["arch"], "arm64", "{job}");

    // Tenant b may use host only: the Docker image is forbidden, not unknown.
    let forbidden = run(&b, Some("python3.11-bookworm"), None);
    assert_eq!(forbidden.error(403), "image_not_allowed");
    assert!(
        forbidden.body.contains("allowed: host"),
        "{}",
        forbidden.body
    );
    assert_eq!(run(&b, None, None).json()["image"], "host");

    // Each tenant lists the images it may use, its default first.
    let listed = server.request("GET", "/v1/images", &a, b"").json();
    let names: Vec<&str> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["host", "python3.11-bookworm"], "{listed}");
    let docker = &listed["images"][1];
    assert_eq!(
        (&docker["runtime"], &docker["arches"], &docker["default"]),
        (
            &serde_json::json!("docker"),
            &serde_json::json!(["amd64", "arm64"]),
            &serde_json::json!(false)
        ),
        "{listed}"
    );
    assert_eq!(docker["default_arch"], host.as_str());
    // The version the image cache recorded when the image was built, if it was built here.
    let recorded = pyward::ImageCache::from_env()
        .load_meta("python3.11-bookworm", pyward::Arch::Amd64)
        .unwrap()
        .and_then(|built| built.python_version());
    assert_eq!(docker["python"].as_str(), recorded.as_deref(), "{listed}");
    let only_host = server.request("GET", "/v1/images", &b, b"").json();
    assert_eq!(
        only_host["images"].as_array().unwrap().len(),
        1,
        "{only_host}"
    );
    assert_eq!(only_host["images"][0]["name"], "host");
}

/// Starts `pyward serve` with `config` and expects it to exit within 30 s;
/// returns its exit code and stderr.
fn serve_fails(config: &str) -> (i32, String) {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("pyward.toml");
    let text = format!(
        "listen = \"127.0.0.1:{}\"\ndatabase = \"{}\"\n{config}",
        free_port(),
        temp.path().join("jobs.sqlite3").display()
    );
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        // An empty image cache: nothing is built in it.
        .env("PYWARD_IMAGE_CACHE", temp.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started despite {config:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn images_that_are_not_there_stop_the_server_at_start_saying_how_to_build_them() {
    let host = pyward::Arch::host();
    let (code, stderr) = serve_fails("[[image]]\nname = \"not-built\"\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "image not-built is not built for {host} (nothing in the image cache"
        )) && stderr.contains(&format!("run `pyward image build not-built --arch {host}`")),
        "{stderr}"
    );
    if common::docker().is_none() {
        return;
    }
    let (code, stderr) = serve_fails("[[image]]\nname = \"not-built\"\nruntime = \"docker\"\n");
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "image not-built ({host}): image pyward/not-built:{host} is not in the Docker daemon"
        )) && stderr.contains(&format!("run `pyward image build not-built --arch {host}`")),
        "{stderr}"
    );
}

#[test]
fn a_native_image_runs_on_its_rootfs_and_host_on_the_hosts_usr() {
    if !common::can_serve() {
        return;
    }
    let arch = pyward::Arch::host();
    let built = pyward::ImageCache::from_env()
        .load_meta("python3.11-bookworm", arch)
        .unwrap();
    if built.is_none() {
        common::missing(&format!(
            "the python3.11-bookworm rootfs for {arch} is not in the image cache (run images/build-for-tests.sh)"
        ));
        return;
    }
    assert!(
        std::path::Path::new("/usr/bin/dpkg").exists(),
        "this test tells the host's /usr by its dpkg, which the image removes"
    );
    let server = Server::start(
        "[[image]]\nname = \"python3.11-bookworm\"\nruntime = \"native\"\n[[image]]\nname = \"host\"\n",
    );
    let code = "import os; print(os.path.exists('/usr/bin/dpkg'))";
    let run = |image: Option<&str>| {
        let body = serde_json::json!({"code": code, "image": image});
        let response = server.post("/v1/runs", &body.to_string());
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()
    };
    // The first image is the default.
    let image = run(None);
    assert_eq!(
        (image["image"].as_str(), image["stdout"].as_str()),
        (Some("python3.11-bookworm"), Some("False\n")),
        "{image}"
    );
    let host = run(Some("host"));
    assert_eq!(
        (host["image"].as_str(), host["stdout"].as_str()),
        (Some("host"), Some("True\n")),
        "{host}"
    );
}

/// The warm pool containers a `pyward serve` with pid `pid` owns, as
/// (image, id), sorted.
fn pool_containers(pid: u32) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=dev.pyward.pool",
            "--format",
            "{{.Image}} {{.ID}} {{.Label \"dev.pyward.owner\"}}",
        ])
        .output()
        .expect("docker runs");
    assert!(out.status.success(), "{out:?}");
    let mut found: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (image, id, owner) = (fields.next()?, fields.next()?, fields.next()?);
            owner
                .starts_with(&format!("{pid}-"))
                .then(|| (image.to_owned(), id.to_owned()))
        })
        .collect();
    found.sort();
    found
}

/// How long the container's pid 1 has been up, in seconds, and its id.
const CONTAINER_AGE: &str = r#"
import re
ids = set(re.findall(r"[0-9a-f]{64}", open("/proc/self/mountinfo").read()))
ticks = int(open("/proc/1/stat").read().rsplit(")", 1)[1].split()[19])
print(",".join(sorted(ids)), float(open("/proc/uptime").read().split()[0]) - ticks / 100)
"#;

#[test]
fn docker_images_keep_a_warm_pool_per_arch_for_the_policies_of_their_tenants() {
    if !common::can_serve() || common::docker().is_none() || common::foreign_docker().is_none() {
        return;
    }
    // Tenant a uses the Docker image under strict; only tenant b, which may
    // not use it, names standard: the image's pools are strict's, one per arch.
    let mut server = Server::start(&format!(
        "[docker]\nwarm_pool = 1\n\
         [[image]]\nname = \"host\"\n\
         [[image]]\nname = \"python3.11-bookworm\"\nruntime = \"docker\"\narch = [\"amd64\", \"arm64\"]\n\
         [[tenant]]\nname = \"a\"\ntokens_sha256 = [\"{HASH_A}\"]\nimages = [\"python3.11-bookworm\"]\n\
         [[tenant]]\nname = \"b\"\ntokens_sha256 = [\"{HASH_B}\"]\nimages = [\"host\"]\n\
         policies = [\"strict\", \"standard\"]\n"
    ));
    let pid = server.child.as_ref().unwrap().id();
    let images = |pool: &[(String, String)]| -> Vec<String> {
        pool.iter().map(|(image, _)| image.clone()).collect()
    };
    let expected = [
        "pyward/python3.11-bookworm:amd64",
        "pyward/python3.11-bookworm:arm64",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while images(&pool_containers(pid)) != expected {
        assert!(
            Instant::now() < deadline,
            "the pools did not fill: {:?}\n{}",
            pool_containers(pid),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listed once created; started and ready within a second here. A run
    // that lands in one sees its pid 1 up for more than a second.
    std::thread::sleep(Duration::from_secs(2));
    let pooled = pool_containers(pid);
    assert_eq!(images(&pooled), expected, "no pool for standard");
    let metrics = server.get("/metrics").body;
    for arch in ["amd64", "arm64"] {
        let ready =
            format!("pyward_warm_ready{{image=\"python3.11-bookworm\",arch=\"{arch}\"}} 1\n");
        assert!(metrics.contains(&ready), "{metrics}");
    }

    let bearer = format!("Bearer {TOKEN_A}");
    let body = serde_json::json!({"code": CONTAINER_AGE, "arch": "amd64"});
    let response = server.request(
        "POST",
        "/v1/runs",
        &[("Authorization", bearer.as_str())],
        body.to_string().as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let outcome = response.json();
    assert_eq!(outcome["verdict"], "ok", "{outcome}");
    let stdout = outcome["stdout"].as_str().unwrap();
    let (id, age) = stdout.trim().split_once(' ').unwrap();
    let age: f64 = age.parse().unwrap();
    assert!(
        age >= 1.0,
        "the run did not take the pooled container: {stdout}"
    );
    assert!(
        pooled
            .iter()
            .any(|(image, pooled)| pooled == id && image.ends_with(":amd64")),
        "{id} is not the amd64 pool's {pooled:?}"
    );

    // A graceful shutdown removes every container of the pools.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait(Duration::from_secs(30)), "{}", server.log());
    assert_eq!(
        pool_containers(pid),
        [],
        "pooled containers outlived the server"
    );

    // With warm_pool = 0, a container per run and none kept.
    let cold = Server::start(
        "[docker]\nwarm_pool = 0\n\
         [[image]]\nname = \"python3.11-bookworm\"\nruntime = \"docker\"\n",
    );
    let outcome = cold.post("/v1/runs", r#"{"code": "print('cold')"}"#).json();
    assert_eq!(outcome["stdout"], "cold\n", "{outcome}");
    assert_eq!(pool_containers(cold.child.as_ref().unwrap().id()), []);
    let host = pyward::Arch::host();
    let metrics = cold.get("/metrics").body;
    let ready = format!("pyward_warm_ready{{image=\"python3.11-bookworm\",arch=\"{host}\"}} 0\n");
    assert!(metrics.contains(&ready), "{metrics}");
}

#[test]
fn native_calls_fork_from_a_zygote_started_with_the_server_unless_cold() {
    if !common::can_serve() {
        return;
    }
    let host = pyward::Arch::host();
    let ready = format!("pyward_warm_ready{{image=\"host\",arch=\"{host}\"}}");
    let preloaded = r#"{"code":"import sys; print('decimal' in sys.modules)"}"#;
    let warm = Server::start("[native]\npreload = [\"decimal\"]\n");
    // The zygote was started with the server: the first call already finds
    // the preloaded module, which a fresh `python3 -c` never imports.
    for _ in 0..3 {
        let outcome = warm.post("/v1/runs", preloaded).json();
        assert_eq!(outcome["stdout"], "True\n", "{outcome}");
    }
    let metrics = warm.get("/metrics").body;
    assert!(metrics.contains(&format!("{ready} 1\n")), "{metrics}");

    let cold = Server::start("[native]\nwarm = false\npreload = [\"decimal\"]\n");
    let outcome = cold.post("/v1/runs", preloaded).json();
    assert_eq!(outcome["stdout"], "False\n", "{outcome}");
    let metrics = cold.get("/metrics").body;
    assert!(metrics.contains(&format!("{ready} 0\n")), "{metrics}");
}

#[test]
fn a_zygote_that_cannot_start_stops_the_server_saying_why() {
    if !common::can_serve() {
        return;
    }
    let (code, stderr) = serve_fails("[native]\npreload = [\"no_such_module_pyward\"]\n");
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("image host") && stderr.contains("policy strict"),
        "{stderr}"
    );
    assert!(
        stderr.contains("No module named 'no_such_module_pyward'")
            && stderr.contains("pyward serve --cold"),
        "{stderr}"
    );
}
