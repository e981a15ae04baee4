//! The `pyward` command line, driven as a user drives it: exit codes,
//! messages, pass-through output and the JSON outcome.
//!
//! The first half needs no sandbox (usage and input errors are refused
//! before the runtime starts). The second half runs real programs through
//! the native runtime and checks the verdict each one must produce.

use pyward::{Outcome, Verdict};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PYWARD: &str = env!("CARGO_BIN_EXE_pyward");

fn pyward(args: &[&str]) -> Output {
    Command::new(PYWARD)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("spawn pyward")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, printing everything pyward said when it differs.
#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A usage error: exit 2, nothing on stdout, and a message containing every `needle`.
#[track_caller]
fn assert_usage_error(out: &Output, needles: &[&str]) {
    assert_exit(out, 2);
    assert!(
        out.stdout.is_empty(),
        "stdout should be empty: {}",
        stdout(out)
    );
    let err = stderr(out);
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "pyward panicked:\n{err}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write fixture");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------- usage errors

#[test]
fn unknown_policy_is_a_usage_error_listing_the_builtins() {
    let out = pyward(&["run", "--policy", "nosuch", "-c", "pass"]);
    assert_usage_error(&out, &["nosuch", "strict", "standard"]);
}

#[test]
fn memory_looser_than_the_policy_is_refused() {
    let out = pyward(&["run", "--memory", "64GiB", "-c", "pass"]);
    assert_usage_error(&out, &["memory", "looser", "strict"]);
}

#[test]
fn wall_time_looser_than_the_policy_is_refused_with_json_too() {
    let out = pyward(&["run", "--json", "--wall-time", "1h", "-c", "pass"]);
    assert_usage_error(&out, &["wall_time", "looser"]);
}

#[test]
fn missing_program_file_names_the_path() {
    let out = pyward(&["run", "/nonexistent/pyward-test/prog.py"]);
    assert_usage_error(&out, &["cannot read", "/nonexistent/pyward-test/prog.py"]);
}

#[test]
fn missing_input_file_names_the_flag_and_path() {
    let out = pyward(&["run", "-c", "pass", "--file", "/nonexistent/data.csv"]);
    assert_usage_error(&out, &["--file", "/nonexistent/data.csv"]);
    let out = pyward(&["run", "-c", "pass", "--stdin", "/nonexistent/in.txt"]);
    assert_usage_error(&out, &["--stdin", "/nonexistent/in.txt"]);
}

#[test]
fn file_destination_outside_the_work_dir_is_refused() {
    let out = pyward(&[
        "run",
        "-c",
        "pass",
        "--file",
        "examples/hello.py:../escape.py",
    ]);
    assert_usage_error(&out, &["../escape.py", "relative path"]);
}

#[test]
fn two_files_on_one_destination_are_refused() {
    let out = pyward(&[
        "run",
        "examples/hello.py",
        "--file",
        "examples/stdin_sum.py:hello.py",
    ]);
    assert_usage_error(&out, &["hello.py", "both"]);
}

#[test]
fn environment_variable_not_allowed_by_the_policy_is_refused() {
    let out = pyward(&["run", "--env", "SECRET=1", "-c", "pass"]);
    assert_usage_error(&out, &["SECRET"]);
}

#[test]
fn malformed_flags_name_the_flag() {
    let out = pyward(&["run", "--wall-time", "5parsecs", "-c", "pass"]);
    assert_usage_error(&out, &["--wall-time", "5parsecs"]);
    let out = pyward(&["run", "--memory", "lots", "-c", "pass"]);
    assert_usage_error(&out, &["--memory", "lots"]);
    let out = pyward(&["run", "--env", "NOEQUALS", "-c", "pass"]);
    assert_usage_error(&out, &["--env", "NAME=VALUE"]);
    let out = pyward(&["run", "--pids", "0", "-c", "pass"]);
    assert_usage_error(&out, &["--pids"]);
}

#[test]
fn run_needs_a_file_or_code() {
    let out = pyward(&["run"]);
    assert_usage_error(&out, &["FILE", "--code"]);
    let out = pyward(&["run", "examples/hello.py", "-c", "pass"]);
    assert_usage_error(&out, &["cannot be used with"]);
}

#[test]
fn malformed_policy_file_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", "[limits]\nmemory = \"lots\"\n");
    let out = pyward(&["run", "--policy", s(&bad), "-c", "pass"]);
    assert_usage_error(&out, &["bad.toml", "limits.memory", "lots"]);
}

#[test]
fn policy_check_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", "[limits]\npids = 0\n");
    let out = pyward(&["policy", "check", s(&bad)]);
    assert_usage_error(&out, &["bad.toml", "limits.pids"]);

    let typo = write(dir.path(), "typo.toml", "[limits]\nmemroy = \"64MiB\"\n");
    let out = pyward(&["policy", "check", s(&typo)]);
    assert_usage_error(&out, &["typo.toml", "memroy"]);
}

#[test]
fn policy_check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "small.toml", "[limits]\nmemory = \"64MiB\"\n");
    let out = pyward(&["policy", "check", s(&good)]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("ok: small — "), "{text}");
    assert!(text.contains("syscalls allowed on"), "{text}");
}

#[test]
fn policy_show_strict_prints_the_resolved_values() {
    let out = pyward(&["policy", "show", "strict"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for needle in [
        "[limits]",
        "wall_time = \"10s\"",
        "memory = \"256MiB\"",
        "pids = 32",
        "[seccomp]",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
    assert!(text.contains("syscalls allowed on x86_64"), "{text}");
    assert!(text.contains("syscalls allowed on aarch64"), "{text}");
}

#[test]
fn policy_export_docker_prints_the_seccomp_profile_docker_reads() {
    let out = pyward(&["policy", "export", "--format", "docker", "strict"]);
    assert_exit(&out, 0);
    let profile: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        profile["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
    );
    let syscalls = profile["syscalls"].as_array().unwrap();
    let last = syscalls.last().unwrap();
    assert_eq!(
        last["action"], "SCMP_ACT_KILL_PROCESS",
        "the dangerous set stays last"
    );
    assert!(last["names"].as_array().unwrap().contains(&"ptrace".into()));
    assert!(
        syscalls.iter().all(|rule| rule["comment"].is_string()),
        "a reason per rule"
    );
}

#[test]
fn run_runtime_docker_without_the_image_says_how_to_build_it() {
    let out = pyward(&[
        "run",
        "--runtime",
        "docker",
        "--image",
        "no-such-image",
        "-c",
        "pass",
    ]);
    if stderr(&out).contains("cannot reach the Docker daemon") {
        return; // no Docker here: the message is the one under test elsewhere
    }
    assert!(
        stderr(&out).contains("never pulls: run `pyward image build no-such-image --arch"),
        "{}",
        stderr(&out)
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn policy_show_unknown_name_is_a_usage_error() {
    let out = pyward(&["policy", "show", "nosuch"]);
    assert_usage_error(&out, &["nosuch", "strict"]);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = pyward(&["run", "--help"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for needle in [
        "Exit codes",
        "runtime_error",
        "sandbox_error",
        "--wall-time",
        "--json",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
}

#[test]
fn an_output_file_outside_the_work_dir_is_a_usage_error() {
    let out = pyward(&["run", "-c", "pass", "--output-file", "../escape"]);
    assert_usage_error(&out, &["\"../escape\"", "`..`"]);
}

// ------------------------------------------------ runs (need the native runtime)

/// Runs with `--json` and reads the outcome back through the library.
fn run_json(args: &[&str]) -> (Output, Outcome) {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    let out = pyward(&all);
    let outcome = Outcome::from_json(stdout(&out).trim()).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- stdout\n{}\n--- stderr\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out, outcome)
}

#[test]
fn hello_runs_ok_with_pass_through_output_and_a_summary() {
    let out = pyward(&["run", "examples/hello.py"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with("hello from pyward\nPython 3."),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    let summary = err.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("pyward: verdict=ok exit=0 wall="),
        "{err}"
    );
    assert!(
        summary.contains(" cpu=") && summary.contains(" mem="),
        "{err}"
    );
}

#[test]
fn json_output_has_every_documented_field_and_nothing_else_on_stdout() {
    let out = pyward(&["run", "--json", "-c", "print('hi')"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line of JSON:\n{text}");
    let json: Value = serde_json::from_str(&text).expect("stdout is JSON");
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "verdict",
        "exit_code",
        "signal",
        "signal_name",
        "stdout",
        "stdout_encoding",
        "stdout_truncated",
        "stderr",
        "stderr_encoding",
        "stderr_truncated",
        "usage",
        "message",
        "image",
        "arch",
        "files",
        "limits_reached",
    ];
    expected.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, expected);
    assert_eq!(json["verdict"], "ok");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["signal"], Value::Null);
    assert_eq!(json["stdout"], "hi\n");
    assert_eq!(json["stdout_encoding"], "utf-8");
    assert_eq!(json["image"], "host");
    assert_eq!(json["arch"], pyward::Arch::host().as_str());
    assert!(json["usage"]["wall_ms"].is_u64() && json["usage"]["cpu_ms"].is_u64());
    assert!(json["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(json["files"], serde_json::json!([]));
}

#[test]
fn non_utf8_output_comes_back_exactly_as_base64() {
    let code = "import sys; sys.stdout.buffer.write(bytes([0xff, 0xfe, 0, 0x62])); sys.exit(3)";
    let (out, outcome) = run_json(&["-c", code]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("\"stdout_encoding\":\"base64\""),
        "{}",
        stdout(&out)
    );
    assert_eq!(outcome.stdout.bytes, [0xff, 0xfe, 0, 0x62]);
    assert_eq!(outcome.verdict, Verdict::RuntimeError);
    assert_eq!(outcome.exit_code, Some(3));
}

#[test]
fn stdin_file_reaches_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let numbers = write(dir.path(), "numbers.txt", "1 2 3\n4\n");
    let out = pyward(&["run", "examples/stdin_sum.py", "--stdin", s(&numbers)]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "10\n");
}

#[test]
fn args_and_input_files_reach_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "data.txt", "payload");
    let spec = format!("{}:sub/data.txt", s(&data));
    let code = "import sys; print(sys.argv[1:], open('sub/data.txt').read())";
    let out = pyward(&["run", "-c", code, "--file", &spec, "--", "a", "b c"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "['a', 'b c'] payload\n");
}

#[test]
fn stdlib_tour_runs_under_strict() {
    let out = pyward(&["run", "examples/stdlib_tour.py"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("threads_counter: 4000"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn runtime_error_exits_1() {
    let (out, outcome) = run_json(&["-c", "raise SystemExit(7)"]);
    assert_exit(&out, 1);
    assert_eq!(
        (outcome.verdict, outcome.exit_code),
        (Verdict::RuntimeError, Some(7))
    );
}

#[test]
fn timeout_exits_3() {
    let (out, outcome) = run_json(&["--wall-time", "500ms", "-c", "import time; time.sleep(30)"]);
    assert_exit(&out, 3);
    assert_eq!(outcome.verdict, Verdict::Timeout);
}

#[test]
fn cpu_limit_exits_3() {
    let (out, outcome) = run_json(&["--cpu-time", "1s", "-c", "while True: pass"]);
    assert_exit(&out, 3);
    assert_eq!(outcome.verdict, Verdict::CpuLimit);
}

#[test]
fn memory_limit_exits_3() {
    let code = "chunks = []\nwhile True: chunks.append(bytearray(16 << 20))";
    let (out, outcome) = run_json(&["--memory", "64MiB", "-c", code]);
    assert_exit(&out, 3);
    assert_eq!(outcome.verdict, Verdict::MemoryLimit);
}

#[test]
fn output_limit_exits_3_and_keeps_the_cap() {
    let code = "import sys\nwhile True: sys.stdout.write('x' * 65536)";
    let (out, outcome) = run_json(&["--output", "64KiB", "-c", code]);
    assert_exit(&out, 3);
    assert_eq!(outcome.verdict, Verdict::OutputLimit);
    assert!(outcome.stdout.truncated);
    assert!(outcome.stdout.bytes.len() <= 64 * 1024);
}

#[test]
fn pids_limit_exits_3() {
    let code = "import threading, time\n\
                ts = [threading.Thread(target=time.sleep, args=(2,)) for _ in range(64)]\n\
                [t.start() for t in ts]";
    let (out, outcome) = run_json(&["--pids", "8", "-c", code]);
    assert_exit(&out, 3);
    assert_eq!(outcome.verdict, Verdict::PidsLimit);
}

#[test]
fn segfault_is_signaled_and_exits_4() {
    let (out, outcome) = run_json(&["-c", "import ctypes; ctypes.string_at(0)"]);
    assert_exit(&out, 4);
    assert_eq!(outcome.verdict, Verdict::Signaled);
    assert_eq!(outcome.signal, Some(11), "SIGSEGV");
    assert!(
        stdout(&out).contains("\"signal_name\":\"SIGSEGV\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn forbidden_syscall_is_a_security_violation_and_exits_4() {
    // ptrace(PTRACE_TRACEME) is in the dangerous set that is always killed.
    let code = "import ctypes, platform\n\
                nr = {'x86_64': 101, 'aarch64': 117}[platform.machine()]\n\
                ctypes.CDLL(None).syscall(nr, 0, 0, 0, 0)";
    let (out, outcome) = run_json(&["-c", code]);
    assert_exit(&out, 4);
    assert_eq!(outcome.verdict, Verdict::SecurityViolation);
}

#[test]
fn a_closed_stdout_ends_policy_show_quietly() {
    use std::process::{Command, Stdio};
    // A pipe whose read end is already closed: every write gets EPIPE.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let output = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args(["policy", "show", "standard"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn output_files_are_written_under_output_dir_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let code = "import os\nos.makedirs('d')\nopen('d/x.bin', 'wb').write(bytes([0, 255]))\nopen('r.txt', 'w').write('hi')";
    let out = pyward(&[
        "run",
        "-c",
        code,
        "--output-file",
        "r.txt",
        "--output-file",
        "d/x.bin",
        "--output-file",
        "nope",
        "--output-dir",
        s(dir.path()),
    ]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(dir.path().join("r.txt")).unwrap(), b"hi");
    assert_eq!(std::fs::read(dir.path().join("d/x.bin")).unwrap(), [0, 255]);
    assert!(!dir.path().join("nope").exists());
    let err = stderr(&out);
    assert!(err.contains("pyward: r.txt: 2 bytes, written to "), "{err}");
    assert!(err.contains("pyward: nope: missing"), "{err}");
}

#[test]
fn with_json_output_files_are_in_the_outcome_and_not_on_disk() {
    let name = format!("pyward-cli-test-{}.txt", std::process::id());
    let code = format!("open({name:?}, 'w').write('in json')");
    let (out, outcome) = run_json(&["-c", &code, "--output-file", &name]);
    assert_exit(&out, 0);
    let json: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json["files"][0]["path"], name.as_str());
    assert_eq!(json["files"][0]["status"], "ok");
    assert_eq!(json["files"][0]["content"], "in json");
    assert_eq!(outcome.files.len(), 1);
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR")).join(&name).exists());
}

#[test]
fn doctor_says_the_default_configuration_can_run_and_names_every_check() {
    let out = pyward(&["doctor", "--json", "--no-docker"]);
    assert_exit(&out, 0);
    let report: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(report["can_run"], true, "{report}");
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in [
        "kernel",
        "root",
        "user namespaces",
        "cgroups",
        "seccomp",
        "interpreter",
        "state dir",
        "landlock",
        "other architectures",
        "images",
        "trial run",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let trial = checks.iter().find(|c| c["name"] == "trial run").unwrap();
    assert_eq!(trial["status"], "ok", "{trial}");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{report}");
}

#[test]
fn doctor_fails_on_a_missing_need_and_gives_its_fix() {
    let out = pyward(&[
        "doctor",
        "--no-docker",
        "--state-dir",
        "/proc/pyward-doctor",
    ]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL state dir"))
        .unwrap_or_else(|| panic!("no FAIL line for the state dir:\n{text}"));
    assert!(line.contains("fix: mkdir -p /proc/pyward-doctor"), "{line}");
    assert!(text.contains("cannot run here"), "{text}");
}

#[test]
fn a_run_that_cannot_start_the_runtime_prints_doctors_line() {
    // As an unprivileged user the native runtime refuses to start (it needs
    // root today); the error comes with doctor's line and its fix. A copy of
    // the binary that the user can reach, wherever the checkout lives.
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("pyward");
    std::fs::copy(PYWARD, &copy).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["run", "-c", "pass"])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) runs");
    assert_exit(&out, 5);
    let text = stderr(&out);
    assert!(text.contains("cannot start the native runtime"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pyward doctor: root: not root") && l.contains("fix: ")),
        "{text}"
    );
}
