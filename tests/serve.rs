//! `pyward serve` end to end: the real binary on a free loopback port with a
//! temporary database, driven by a minimal HTTP/1.1 client. Auth and
//! admission (401, 403, 429), malformed bodies, sync runs and a limit
//! verdict, jobs and their events, metrics, graceful shutdown, and a SIGKILL
//! while jobs are queued and running.

mod common;

use serde_json::Value;
use std::io::{Read as _, Write as _};
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

/// The native runtime needs root; skip loudly (fail under CI) without it.
fn can_serve() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    common::missing("`pyward serve` with the native runtime needs root");
    false
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not listen within 10 s:\n{}", self.log());
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
    if !can_serve() {
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
    if !can_serve() {
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
    if !can_serve() {
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
    if !can_serve() {
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
fn jobs_run_stream_events_and_cancel_only_while_queued() {
    if !can_serve() {
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
    assert_eq!(cancelled.json()["status"], "cancelled");
    let busy = server.request("DELETE", &format!("/v1/jobs/{running}"), &[], b"");
    assert_eq!(busy.error(409), "cancel_running_unsupported");

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
fn sigterm_lets_the_running_job_finish_then_exits() {
    if !can_serve() {
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
    if !can_serve() {
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
    if !can_serve() {
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
