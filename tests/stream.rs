//! Watched runs on every runtime: the observer gets the output while the
//! program runs, in order per stream and never past the cap, and a cancelled
//! token kills the sandbox, every process of it.
//!
//! Liveness is shown without timing: the observer cancels the run when the
//! first chunk arrives, while the program sleeps. A runtime that only passed
//! the output on at the end could not stop a program it has already seen end.

mod common;

use pyward::{
    ByteSize, CancelToken, LimitOverrides, Outcome, RunWatch, Runtime, SandboxPolicy, Stream,
    Submission, Verdict,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Chunks = Arc<Mutex<Vec<(Stream, Vec<u8>)>>>;

/// A watch that records every chunk, and calls `then` after each.
fn recording(then: impl Fn(Stream, &[u8]) + Send + Sync + 'static) -> (RunWatch, Chunks) {
    let chunks: Chunks = Arc::default();
    let seen = chunks.clone();
    let watch = RunWatch::new().on_output(move |stream, bytes| {
        seen.lock().unwrap().push((stream, bytes.to_vec()));
        then(stream, bytes);
    });
    (watch, chunks)
}

/// The bytes of one stream's chunks, joined in the order they came.
fn joined(chunks: &Chunks, stream: Stream) -> Vec<u8> {
    chunks
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == stream)
        .flat_map(|(_, bytes)| bytes.clone())
        .collect()
}

fn run(runtime: &dyn Runtime, policy: &SandboxPolicy, code: &str, watch: &RunWatch) -> Outcome {
    runtime
        .run_watched(policy, &Submission::code(code), watch)
        .unwrap_or_else(|e| panic!("runtime {}: the run did not start: {e}", runtime.name()))
}

#[test]
fn chunks_come_in_order_per_stream_and_join_into_the_outcome() {
    let policy = SandboxPolicy::builtin("strict").unwrap();
    // Interleaved, flushed writes on both streams, with pauses between them
    // so that they arrive as separate chunks.
    let code = "import sys, time\n\
                for i in range(20):\n\
                \x20   sys.stdout.write(f'out {i}\\n'); sys.stdout.flush()\n\
                \x20   sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n\
                \x20   time.sleep(0.01)\n";
    for runtime in common::runtimes() {
        let (watch, chunks) = recording(|_, _| {});
        let outcome = run(runtime.as_ref(), &policy, code, &watch);
        let name = runtime.name();
        assert_eq!(
            outcome.verdict,
            Verdict::Ok,
            "{name}: {}",
            common::describe(&outcome)
        );
        let expected_out: String = (0..20).map(|i| format!("out {i}\n")).collect();
        let expected_err: String = (0..20).map(|i| format!("err {i}\n")).collect();
        assert_eq!(outcome.stdout.bytes, expected_out.as_bytes(), "{name}");
        assert_eq!(
            joined(&chunks, Stream::Stdout),
            outcome.stdout.bytes,
            "{name}"
        );
        assert_eq!(
            joined(&chunks, Stream::Stderr),
            outcome.stderr.bytes,
            "{name}"
        );
        assert_eq!(outcome.stderr.bytes, expected_err.as_bytes(), "{name}");
        assert!(
            chunks.lock().unwrap().len() > 2,
            "{name}: the output came in pieces as it was written, not as one chunk per stream"
        );
    }
}

#[test]
fn chunks_never_pass_the_output_cap() {
    let policy = SandboxPolicy::builtin("strict")
        .unwrap()
        .tightened(&LimitOverrides {
            output: Some(ByteSize(4096)),
            ..LimitOverrides::default()
        })
        .unwrap();
    let code =
        "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1000); sys.stdout.flush()\n";
    for runtime in common::runtimes() {
        let (watch, chunks) = recording(|_, _| {});
        let outcome = run(runtime.as_ref(), &policy, code, &watch);
        let name = runtime.name();
        assert_eq!(
            outcome.verdict,
            Verdict::OutputLimit,
            "{name}: {}",
            common::describe(&outcome)
        );
        let streamed = joined(&chunks, Stream::Stdout);
        assert_eq!(
            streamed.len(),
            4096,
            "{name}: streamed bytes stop at the cap"
        );
        assert_eq!(streamed, outcome.stdout.bytes, "{name}");
        assert!(outcome.stdout.truncated, "{name}");
    }
}

/// A marker that names this run's processes in the host's /proc (it is in
/// the `python3 -c CODE` command line of each).
fn marker(name: &str) -> String {
    format!("pyward-stream-test-{name}-{}", std::process::id())
}

#[test]
fn cancelling_on_the_first_chunk_kills_the_sleeping_sandbox_and_all_its_processes() {
    // `standard` lets the program fork (the strict allowlist does not).
    let policy = SandboxPolicy::builtin("standard").unwrap();
    for runtime in common::runtimes() {
        let name = runtime.name();
        let marker = marker(name);
        // Two processes, both asleep far past the point the test cancels;
        // the policy's wall time would end them as `timeout`.
        // The program re-executes itself with the marker as an argument,
        // so that both processes carry it in their command line whatever
        // way the runtime started the first (the warm path forks it).
        let program = "import os, time\nchild = os.fork()\n\
                       if child == 0:\n    time.sleep(30)\n    os._exit(0)\n\
                       print('first', flush=True)\ntime.sleep(30)\nprint('never')\n";
        let code = format!(
            "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {program:?}, {marker:?}])\n"
        );
        let token = CancelToken::new();
        let canceller = token.clone();
        // Once the whole first line is in (a runtime may pass it in pieces),
        // count the sandbox's processes, then cancel.
        let line = Mutex::new(Vec::new());
        let alive = Arc::new(Mutex::new(Vec::new()));
        let (seen_alive, find) = (alive.clone(), marker.clone());
        let (watch, chunks) = recording(move |stream, bytes| {
            let mut line = line.lock().unwrap();
            if stream == Stream::Stdout {
                line.extend_from_slice(bytes);
            }
            if line.ends_with(b"\n") && !canceller.is_cancelled() {
                *seen_alive.lock().unwrap() = common::processes_with(&find);
                canceller.cancel();
            }
        });
        let watch = watch.cancel_with(token.clone());
        let outcome = run(runtime.as_ref(), &policy, &code, &watch);
        assert!(
            token.is_cancelled(),
            "{name}: no chunk came while the program ran"
        );
        assert_eq!(
            (outcome.verdict, outcome.signal, outcome.message.as_deref()),
            (
                Verdict::Signaled,
                Some(libc::SIGKILL),
                Some("cancelled by the client; the sandbox was killed")
            ),
            "{name}: {}",
            common::describe(&outcome)
        );
        assert_eq!(
            outcome.stdout.bytes,
            b"first\n",
            "{name}: {}",
            common::describe(&outcome)
        );
        assert_eq!(joined(&chunks, Stream::Stdout), b"first\n", "{name}");
        assert!(
            alive.lock().unwrap().len() >= 2,
            "{name}: the marker finds the program and its child while they run: {:?}",
            alive.lock().unwrap()
        );
        // The kill may still be tearing the sandbox down: allow a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !common::processes_with(&marker).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{name}: sandbox processes outlived the cancel: {:?}",
                common::processes_with(&marker)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_token_cancelled_before_the_run_stops_it_at_once() {
    let policy = SandboxPolicy::builtin("strict").unwrap();
    for runtime in common::runtimes() {
        let token = CancelToken::new();
        token.cancel();
        let (watch, _) = recording(|_, _| {});
        let watch = watch.cancel_with(token);
        let outcome = run(
            runtime.as_ref(),
            &policy,
            "import time\ntime.sleep(30)\n",
            &watch,
        );
        assert_eq!(
            outcome.message.as_deref(),
            Some("cancelled by the client; the sandbox was killed"),
            "{}: {}",
            runtime.name(),
            common::describe(&outcome)
        );
    }
}
