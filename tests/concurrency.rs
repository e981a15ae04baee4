//! One runtime, many threads: the way a server uses it. The sandbox's setup
//! runs in a copy of a multi-threaded process, so anything there that takes
//! a lock another thread may hold (allocation, glibc's setxid broadcast)
//! would hang a run now and then; this test makes that likely.

mod common;

use pyward::{Runtime, SandboxPolicy, Submission, Verdict};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn many_threads_share_one_runtime_while_others_come_and_go() {
    let Some(runtime) = common::native() else {
        return;
    };
    let runtime = Arc::new(runtime);
    // A run that hangs ends as `timeout` at the policy's wall limit, not as
    // `ok`: no clock of this test's own (machines differ in speed 30-fold).
    let policy = Arc::new(SandboxPolicy::builtin("standard").unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // Threads starting and ending all the time keep glibc's thread-list and
    // allocator locks busy while the runs below clone.
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let handles: Vec<_> = (0..4)
                    .map(|i| std::thread::spawn(move || vec![i; 4096].len()))
                    .collect();
                handles.into_iter().for_each(|h| drop(h.join()));
            }
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (runtime, policy) = (runtime.clone(), policy.clone());
            std::thread::spawn(move || {
                for run in 0..15 {
                    let code = format!("print({worker} * 100 + {run})");
                    let outcome = runtime.run(&policy, &Submission::code(code)).unwrap();
                    assert_eq!(
                        outcome.verdict,
                        Verdict::Ok,
                        "{}",
                        common::describe(&outcome)
                    );
                    assert_eq!(
                        String::from_utf8_lossy(&outcome.stdout.bytes),
                        format!("{}\n", worker * 100 + run)
                    );
                }
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    for result in results {
        result.unwrap();
    }
}

#[test]
fn back_to_back_pyward_processes_find_their_cgroup_slot_clean() {
    // A pyward process hands its cgroup slot on only after reaping its
    // sandbox: with a pids limit of 4, leftovers of earlier runs would make
    // the next run's fork fail at once.
    if common::native().is_none() {
        return;
    }
    for run in 0..30 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pyward"))
            .args(["run", "--pids", "4", "-c", "pass"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stderr}");
    }
}
