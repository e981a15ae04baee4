//! Output files, on every runtime: declared paths in the work dir come back
//! byte for byte, capped, or with a clear status; and the program, which
//! controls the work dir, cannot make pyward follow a link out of it or wait
//! on a FIFO.

mod common;

use common::{Case, describe};
use pyward::{ByteSize, LimitOverrides, Outcome, OutputStatus, SandboxPolicy, Submission, Verdict};
use std::time::Duration;

fn case(code: &str, outputs: &[&str]) -> Case {
    let mut case = Case::code("strict", code);
    case.submission.outputs = outputs.iter().map(|p| (*p).to_owned()).collect();
    case
}

/// The status of `path` in `outcome`, checking that every declared path is
/// there once, in order.
fn status<'a>(outcome: &'a Outcome, outputs: &[String], path: &str) -> &'a OutputStatus {
    let paths: Vec<&str> = outcome.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, outputs, "{}", describe(outcome));
    &outcome
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap()
        .status
}

fn collected(status: &OutputStatus) -> (&[u8], bool, u64) {
    match status {
        OutputStatus::Collected { contents, size } => (&contents.bytes, contents.truncated, *size),
        other => panic!("expected the file's bytes, got {other:?}"),
    }
}

#[test]
fn written_files_come_back_byte_exact() {
    let code = "import json, os\n\
        os.makedirs('out/deep')\n\
        open('out/deep/all.bin', 'wb').write(bytes(range(256)) * 3)\n\
        json.dump({'answer': 42, 'text': 'h\u{e9}'}, open('result.json', 'w'))\n\
        open('data.out', 'w').write(open('data.txt').read() + ' and more')\n\
        open('empty', 'w').close()\n\
        open('locked', 'w').write('mode 000'); os.chmod('locked', 0)\n";
    let mut case = case(
        code,
        &[
            "result.json",
            "out/deep/all.bin",
            "data.out",
            "empty",
            "locked",
        ],
    );
    case.submission.files.push(pyward::InputFile {
        path: "data.txt".into(),
        contents: b"input".to_vec(),
    });
    let outputs = case.submission.outputs.clone();
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        let file = |path| collected(status(&outcome, &outputs, path));
        let all: Vec<u8> = (0..=255u8).cycle().take(768).collect();
        assert_eq!(
            file("out/deep/all.bin"),
            (&all[..], false, 768),
            "{runtime}"
        );
        assert_eq!(
            file("result.json"),
            (r#"{"answer": 42, "text": "h\u00e9"}"#.as_bytes(), false, 33),
            "{runtime}"
        );
        assert_eq!(
            file("data.out"),
            (&b"input and more"[..], false, 14),
            "{runtime}"
        );
        assert_eq!(file("empty"), (&b""[..], false, 0), "{runtime}");
        assert_eq!(file("locked"), (&b"mode 000"[..], false, 8), "{runtime}");
        // The JSON form keeps them exactly (binary as base64).
        let back = Outcome::from_json(&outcome.to_json()).unwrap();
        assert_eq!(back.files, outcome.files, "{runtime}");
    }
}

#[test]
fn a_file_larger_than_the_cap_keeps_the_cap_and_says_truncated() {
    let code = "open('big.bin', 'wb').write(bytes(i % 251 for i in range(200_000)))";
    let case = case(code, &["big.bin"]).limits(LimitOverrides {
        output: Some(ByteSize::kib(64)),
        ..LimitOverrides::default()
    });
    let outputs = case.submission.outputs.clone();
    let expected: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        let (bytes, truncated, size) = collected(status(&outcome, &outputs, "big.bin"));
        assert_eq!(bytes.len(), 65_536, "{runtime}");
        assert!(
            bytes == expected.as_slice(),
            "{runtime}: not the file's first 64 KiB"
        );
        assert!(truncated, "{runtime}");
        assert_eq!(size, 200_000, "{runtime}");
    }
}

#[test]
fn hard_links_cannot_multiply_what_comes_back_past_the_work_dirs_size() {
    // Three names of one 60 KiB file, under a 128 KiB work dir: the first two
    // come back whole, the third only up to the 128 KiB all files may keep.
    let code =
        "import os\nopen('a', 'wb').write(b'x' * 61_440)\nos.link('a', 'b')\nos.link('a', 'c')";
    let case = case(code, &["a", "b", "c"]).limits(LimitOverrides {
        output: Some(ByteSize::kib(64)),
        tmpfs: Some(ByteSize::kib(128)),
        ..LimitOverrides::default()
    });
    let outputs = case.submission.outputs.clone();
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        let kept: Vec<(usize, bool)> = ["a", "b", "c"]
            .iter()
            .map(|p| {
                let (bytes, truncated, _) = collected(status(&outcome, &outputs, p));
                (bytes.len(), truncated)
            })
            .collect();
        assert_eq!(
            kept,
            [(61_440, false), (61_440, false), (8_192, true)],
            "{runtime}"
        );
    }
}

#[test]
fn missing_files_are_reported_missing() {
    let code = "open('file.txt', 'w').write('x')";
    let too_long = "n".repeat(300);
    let outputs = [
        "nope.txt",
        "no/such/dir.txt",
        "file.txt/under_a_file",
        &too_long,
        "file.txt",
    ];
    let case = case(code, &outputs);
    let outputs = case.submission.outputs.clone();
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        for path in &outputs[..4] {
            assert_eq!(
                status(&outcome, &outputs, path),
                &OutputStatus::Missing,
                "{runtime}: {path}"
            );
        }
        collected(status(&outcome, &outputs, "file.txt"));
    }
}

/// Security: the program controls the work dir and plants links where the
/// caller expects files. Each link leads to a readable file, as the program
/// checks itself, so following one would have brought bytes back: the
/// status says the link was seen and refused (`not_regular`), not that
/// nothing was there.
#[test]
fn links_in_the_work_dir_are_never_followed() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    let host_path = secret.path().display().to_string();
    let code = format!(
        "import os\n\
         os.symlink('/etc/passwd', 'passwd')\n\
         os.symlink('..', 'up')\n\
         os.symlink('/etc', 'etc')\n\
         os.symlink('/proc/self/root/etc/passwd', 'magic')\n\
         os.symlink({host_path:?}, 'host')\n\
         os.makedirs('real'); open('real/file', 'w').write('real')\n\
         os.symlink('real/file', 'relative')\n\
         print(all(open(p).read() for p in ['passwd', 'up/etc/passwd', 'etc/passwd', 'magic', 'relative']))"
    );
    let links = [
        "passwd",
        "up/etc/passwd",
        "etc/passwd",
        "magic",
        "host",
        "relative",
    ];
    let outputs: Vec<&str> = links.iter().copied().chain(["real/file"]).collect();
    let case = case(&code, &outputs);
    let outputs = case.submission.outputs.clone();
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        assert_eq!(
            outcome.stdout.bytes,
            b"True\n",
            "{runtime}: {}",
            describe(&outcome)
        );
        for link in links {
            assert_eq!(
                status(&outcome, &outputs, link),
                &OutputStatus::NotRegular,
                "{runtime}: {link}"
            );
        }
        // The control: a real file in the same run comes back.
        assert_eq!(
            collected(status(&outcome, &outputs, "real/file")).0,
            b"real"
        );
        let json = outcome.to_json();
        for leaked in ["host secret", "root:x:0:0", "sandbox:x:"] {
            assert!(!json.contains(leaked), "{runtime}: {leaked:?} in {json}");
        }
    }
}

/// A policy whose allowlist also lets the program make FIFOs (no built-in one does).
fn fifo_policy(dir: &std::path::Path) -> SandboxPolicy {
    let strict = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/seccomp/python-strict.toml"
    ))
    .unwrap();
    let seccomp = dir.join("seccomp");
    std::fs::create_dir_all(&seccomp).unwrap();
    let extra = "mknod = \"test: os.mkfifo on x86_64\"\nmknodat = \"test: os.mkfifo\"\n";
    std::fs::write(seccomp.join("fifo.toml"), strict + extra).unwrap();
    let mut policy =
        SandboxPolicy::from_toml("fifo", "[seccomp]\nallowlist = \"fifo\"\n", "test").unwrap();
    policy.seccomp.search_dir = Some(dir.to_owned());
    policy
}

#[test]
fn a_fifo_or_a_socket_where_a_file_is_expected_does_not_hang_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let code = "import os, socket\n\
        os.mkfifo('pipe')\n\
        os.makedirs('d'); os.mkfifo('d/pipe')\n\
        socket.socket(socket.AF_UNIX).bind('sock')\n\
        open('after', 'w').write('still read')";
    let outputs = ["pipe", "d/pipe", "sock", "after"];
    let case = Case {
        policy: fifo_policy(dir.path()),
        submission: Submission {
            outputs: outputs.iter().map(|p| (*p).to_owned()).collect(),
            ..Submission::code(code)
        },
    };
    let outputs = case.submission.outputs.clone();
    // A collector that opened the FIFO for reading without O_NONBLOCK would
    // wait for a writer until the wall-clock limit: verdict `timeout`.
    for (runtime, outcome) in case.expect_each(Verdict::Ok) {
        for path in ["pipe", "d/pipe", "sock"] {
            assert_eq!(
                status(&outcome, &outputs, path),
                &OutputStatus::NotRegular,
                "{runtime}: {path}"
            );
        }
        assert_eq!(
            collected(status(&outcome, &outputs, "after")).0,
            b"still read"
        );
    }
}

#[test]
fn files_come_back_after_a_failure_but_not_when_pyward_stops_the_run() {
    let failed = case(
        "open('partial.txt', 'w').write('so far')\nraise SystemExit(3)",
        &["partial.txt"],
    );
    let outputs = failed.submission.outputs.clone();
    for (runtime, outcome) in failed.expect_each(Verdict::RuntimeError) {
        assert_eq!(outcome.exit_code, Some(3), "{runtime}");
        assert_eq!(
            collected(status(&outcome, &outputs, "partial.txt")).0,
            b"so far",
            "{runtime}"
        );
    }
    let stopped = case(
        "import time\nopen('partial.txt', 'w').write('so far')\ntime.sleep(30)",
        &["partial.txt"],
    )
    .limits(LimitOverrides {
        wall_time: Some(Duration::from_secs(1)),
        ..LimitOverrides::default()
    });
    for (runtime, outcome) in stopped.expect_each(Verdict::Timeout) {
        assert_eq!(
            status(&outcome, &outputs, "partial.txt"),
            &OutputStatus::NotCollected,
            "{runtime}"
        );
    }
}

#[test]
fn declaring_files_does_not_change_how_the_end_is_reported() {
    let signaled =
        "import os, signal\nopen('f', 'w').write('x')\nos.kill(os.getpid(), signal.SIGTERM)";
    let plain = case(signaled, &[]).expect_each(Verdict::Signaled);
    let with_files = case(signaled, &["f"]).expect_each(Verdict::Signaled);
    for ((runtime, a), (_, b)) in plain.iter().zip(&with_files) {
        assert_eq!(
            (a.exit_code, a.signal),
            (b.exit_code, b.signal),
            "{runtime}"
        );
        assert_eq!(b.signal, Some(libc::SIGTERM), "{runtime}");
        assert_eq!(b.files.len(), 1, "{runtime}");
        assert!(a.files.is_empty(), "{runtime}");
    }
    // A syscall of the dangerous set (always killed), and the program's own
    // stdout right before it: both reach the outcome as without output files.
    let killed = case(
        "import ctypes, platform, sys\n\
         sys.stdout.write('tail'); sys.stdout.flush()\n\
         nr = {'x86_64': 101, 'aarch64': 117}[platform.machine()]\n\
         ctypes.CDLL(None).syscall(nr, 0, 0, 0, 0)",
        &["f"],
    );
    for (runtime, outcome) in killed.expect_each(Verdict::SecurityViolation) {
        assert_eq!(outcome.stdout.bytes, b"tail", "{runtime}");
        assert_eq!(outcome.files.len(), 1, "{runtime}");
    }
}

#[test]
fn bad_output_paths_are_refused_before_the_run() {
    let policy = SandboxPolicy::builtin("strict").unwrap();
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", ""] {
        let submission = Submission {
            outputs: vec![bad.to_owned()],
            ..Submission::code("pass")
        };
        for runtime in common::runtimes() {
            let err = runtime.run(&policy, &submission).unwrap_err();
            assert!(
                matches!(err, pyward::RunError::InvalidSubmission(_)),
                "{}: {bad:?}: {err}",
                runtime.name()
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
