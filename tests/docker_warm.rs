//! The Docker warm pool: pre-started containers, each used by one call only,
//! refilled in the background, removed on drop or, after a crash, as orphans;
//! budgets count from the claim. (The shared suite runs on `docker-warm` too.)

mod common;

use common::describe;
use pyward::{DockerWarmRuntime, LimitOverrides, Runtime, SandboxPolicy, Submission, Verdict};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn strict() -> SandboxPolicy {
    SandboxPolicy::builtin("strict").unwrap()
}

/// A pool of `size` for the strict policy, filled (`None`, loudly, without Docker).
fn filled_pool(size: usize) -> Option<(DockerWarmRuntime, SandboxPolicy)> {
    let warm = common::docker_warm(size)?;
    let policy = strict();
    warm.prewarm(&policy).unwrap();
    wait_ready(&warm, &policy, size);
    Some((warm, policy))
}

/// Waits until `policy`'s pool holds `n` ready containers.
fn wait_ready(warm: &DockerWarmRuntime, policy: &SandboxPolicy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while warm.ready(policy).unwrap() < n {
        assert!(
            Instant::now() < deadline,
            "the pool did not reach {n} ready containers in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids of running or stopped containers with `label` (`docker ps --filter`).
fn containers(label: &str) -> BTreeSet<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Prints the container's id (from the cgroup and bind mounts it sees) and
/// how long its pid 1 has been up, in seconds.
const WHO_AND_AGE: &str = r#"
import re
ids = set(re.findall(r"[0-9a-f]{64}", open("/proc/self/mountinfo").read()))
ticks = int(open("/proc/1/stat").read().rsplit(")", 1)[1].split()[19])
age = float(open("/proc/uptime").read().split()[0]) - ticks / 100
print(",".join(sorted(ids)), round(age, 2))
"#;

fn who_and_age(outcome: &pyward::Outcome) -> (String, f64) {
    let text = String::from_utf8_lossy(&outcome.stdout.bytes).into_owned();
    let line = text.lines().last().unwrap_or_default().to_owned();
    let (id, age) = line.split_once(' ').expect("the probe printed id and age");
    assert_eq!(id.len(), 64, "one container id seen: {line}");
    (id.to_owned(), age.parse().unwrap())
}

#[test]
fn a_container_never_runs_two_calls() {
    let Some((warm, policy)) = filled_pool(2) else {
        return;
    };
    // Both calls below find a container that has waited at least this long,
    // which no container created for the call has.
    std::thread::sleep(Duration::from_secs(1));

    let a = format!(
        "open('/tmp/left-by-a', 'w').write('a')\nopen('/work/left-by-a', 'w').write('a')\n{WHO_AND_AGE}"
    );
    let a = warm.run(&policy, &Submission::code(a)).unwrap();
    assert_eq!(a.verdict, Verdict::Ok, "{}", describe(&a));
    let b = format!(
        "import os\nprint([p for p in ['/tmp/left-by-a', '/work/left-by-a'] if os.path.exists(p)])\n{WHO_AND_AGE}"
    );
    let b = warm.run(&policy, &Submission::code(b)).unwrap();
    assert_eq!(b.verdict, Verdict::Ok, "{}", describe(&b));

    let (id_a, age_a) = who_and_age(&a);
    let (id_b, age_b) = who_and_age(&b);
    assert!(
        age_a >= 1.0 && age_b >= 1.0,
        "not from the pool: {age_a} s, {age_b} s"
    );
    assert_ne!(id_a, id_b, "two calls ran in one container");
    assert!(
        String::from_utf8_lossy(&b.stdout.bytes).starts_with("[]\n"),
        "call B saw call A's files: {}",
        describe(&b)
    );
    // A used container is removed (in the background, soon after its call).
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers(&warm.pool_label()).contains(&id_a) {
        assert!(
            Instant::now() < deadline,
            "container {id_a} outlived its call"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_pool_refills_in_the_background_and_is_removed_on_drop() {
    let Some(warm) = common::docker_warm(2) else {
        return;
    };
    let label = warm.pool_label();
    let policy = strict();
    warm.prewarm(&policy).unwrap();
    wait_ready(&warm, &policy, 2);
    let before = containers(&label);
    assert_eq!(before.len(), 2, "{before:?}");

    let outcome = warm.run(&policy, &Submission::code(WHO_AND_AGE)).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    let (used, _) = who_and_age(&outcome);
    assert!(
        before.contains(&used),
        "the call did not run in a pooled container"
    );

    wait_ready(&warm, &policy, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after = containers(&label);
        if !after.contains(&used) || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!after.contains(&used), "the used container is still there");
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(
        after.intersection(&before).count(),
        1,
        "one container kept waiting, one is new: {before:?} -> {after:?}"
    );

    drop(warm);
    assert_eq!(
        containers(&label),
        BTreeSet::new(),
        "the drop left containers behind"
    );
}

#[test]
fn wall_time_counts_from_the_claim() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let policy = strict()
        .tightened(&LimitOverrides {
            wall_time: Some(Duration::from_secs(2)),
            ..LimitOverrides::default()
        })
        .unwrap();
    warm.prewarm(&policy).unwrap();
    wait_ready(&warm, &policy, 1);
    // The wall clock is not the container's: the policy's own pool is this one.
    assert_eq!(warm.ready(&strict()).unwrap(), 1);
    std::thread::sleep(Duration::from_secs(3));

    let code = format!("import time\ntime.sleep(1.5)\n{WHO_AND_AGE}");
    let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    let (_, age) = who_and_age(&outcome);
    assert!(
        age >= 4.5,
        "the container waited {age} s, not 3 s before its call"
    );
    assert!(
        outcome.usage.wall < Duration::from_secs(2),
        "{:?}",
        outcome.usage
    );
    // The CPU the waiting bootstrap used to start is not the call's.
    assert!(
        outcome.usage.cpu < Duration::from_millis(500),
        "{:?}",
        outcome.usage
    );

    // The same limit still ends a call that outlives it, 2 s after its claim.
    wait_ready(&warm, &policy, 1);
    let outcome = warm
        .run(&policy, &Submission::code("import time\ntime.sleep(3)"))
        .unwrap();
    assert_eq!(outcome.verdict, Verdict::Timeout, "{}", describe(&outcome));
    let wall = outcome.usage.wall;
    assert!(
        wall >= Duration::from_secs(2) && wall < Duration::from_millis(2900),
        "{wall:?}"
    );
}

#[test]
fn tightened_limits_are_the_containers_own() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let base = strict();
    let tight = base
        .tightened(&LimitOverrides {
            memory: Some(pyward::ByteSize::mib(96)),
            pids: Some(12),
            ..LimitOverrides::default()
        })
        .unwrap();
    warm.prewarm(&base).unwrap();
    warm.prewarm(&tight).unwrap();
    wait_ready(&warm, &base, 1);
    wait_ready(&warm, &tight, 1);
    let code = "import os\nfor f in ['memory/memory.limit_in_bytes', 'pids/pids.max']:\n    p = '/sys/fs/cgroup/' + f\n    print(open(p).read().strip() if os.path.exists(p) else 'absent')";
    let limits = |policy: &SandboxPolicy| {
        let outcome = warm.run(policy, &Submission::code(code)).unwrap();
        assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
        String::from_utf8_lossy(&outcome.stdout.bytes).into_owned()
    };
    let (base_limits, tight_limits) = (limits(&base), limits(&tight));
    if base_limits.contains("absent") {
        common::missing("cgroup v1 memory and pids files inside the container (a v2 host)");
        return;
    }
    // The policy's, as in a cold container: in both, the bootstrap is pid 1
    // (see `the_program_gets_as_many_processes_as_in_a_fresh_container`).
    assert_eq!(base_limits, format!("{}\n32\n", 256 << 20));
    assert_eq!(tight_limits, format!("{}\n12\n", 96 << 20));
}

/// The pooled container's bootstrap waits for the program in a process of
/// its own; the program still gets exactly the processes a fresh
/// container gives it under the same pids limit, no fewer and no more.
#[test]
fn the_program_gets_as_many_processes_as_in_a_fresh_container() {
    let (Some(cold), Some(warm)) = (common::docker(), common::docker_warm(1)) else {
        return;
    };
    let policy = strict()
        .tightened(&LimitOverrides {
            pids: Some(3),
            ..LimitOverrides::default()
        })
        .unwrap();
    // The bootstrap (pid 1), the program and one more thread fit in 3; two more do not.
    let threads = |n: usize| {
        format!(
            "import threading, time\n\
             ts = [threading.Thread(target=time.sleep, args=(0.3,)) for _ in range({n})]\n\
             for t in ts: t.start()\n\
             for t in ts: t.join()\n\
             print('done')"
        )
    };
    for (n, verdict) in [(0, Verdict::Ok), (1, Verdict::Ok), (2, Verdict::PidsLimit)] {
        let submission = Submission::code(threads(n));
        for runtime in [&cold as &dyn Runtime, &warm] {
            let outcome = runtime.run(&policy, &submission).unwrap();
            assert_eq!(
                outcome.verdict,
                verdict,
                "{} with {n} more threads: {}",
                runtime.name(),
                describe(&outcome)
            );
        }
    }
}

#[test]
fn the_containers_of_a_crashed_pool_are_removed_as_orphans() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("pyward.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\nruntime = \"docker\"\n[docker]\nwarm_pool = 2\n",
            temp.path().join("jobs.sqlite3").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server's pool for its one policy (strict): two containers owned by it.
    let owner = format!("dev.pyward.owner={}-", server.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let pooled = loop {
        let pooled: BTreeSet<String> = containers("dev.pyward.pool")
            .into_iter()
            .filter(|id| owner_of(id).starts_with(&owner))
            .collect();
        if pooled.len() == 2 {
            break pooled;
        }
        assert!(
            Instant::now() < deadline && server.try_wait().unwrap().is_none(),
            "the server did not fill its pool: {pooled:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill().unwrap();
    server.wait().unwrap();
    let left = containers("dev.pyward.pool");
    assert!(pooled.is_subset(&left), "gone before the orphan removal");

    // Another pyward process's start (here, this test's runtime) may remove them first.
    warm.cold().remove_orphans().unwrap();
    let left = containers("dev.pyward.pool");
    assert!(
        pooled.is_disjoint(&left),
        "a crashed server's pool is still there: {:?}",
        pooled.intersection(&left).collect::<Vec<_>>()
    );
}

fn owner_of(id: &str) -> String {
    let out = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "dev.pyward.owner={{index .Config.Labels \"dev.pyward.owner\"}}",
            id,
        ])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The warm pool runs the program in its waiting interpreter instead of
/// starting another: each program must end as in the cold path's fresh
/// python3, with the same verdict, exit code, signal, stdout and stderr.
#[test]
fn programs_run_and_end_as_in_a_fresh_interpreter() {
    let (Some(cold), Some(warm)) = (common::docker(), common::docker_warm(2)) else {
        return;
    };
    let policy = strict();
    common::assert_programs_end_alike(&cold, &warm, &policy);
}

#[test]
fn a_file_entrypoint_runs_with_its_files_arguments_and_environment() {
    let (Some(cold), Some(warm)) = (common::docker(), common::docker_warm(1)) else {
        return;
    };
    let mut policy = strict();
    policy.env.allow.push("GREETING".into());
    let submission = Submission {
        entrypoint: pyward::Entrypoint::File("pkg/main.py".into()),
        files: vec![
            pyward::InputFile {
                path: "pkg/main.py".into(),
                contents: b"import os, sys, helper\nprint(sys.argv, sys.path[0], __name__, __file__, helper.X, os.environ['GREETING'])\nprint(open('/work/data.txt').read(), sys.stdin.read())\n1/0".to_vec(),
            },
            pyward::InputFile {
                path: "pkg/helper.py".into(),
                contents: b"X = 42\n".to_vec(),
            },
            pyward::InputFile {
                path: "data.txt".into(),
                contents: b"input data".to_vec(),
            },
        ],
        args: vec!["a".into(), "b c".into()],
        env: [("GREETING".to_owned(), "hello".to_owned())].into(),
        stdin: b"from stdin".to_vec(),
        ..Submission::code("")
    };
    let a = cold.run(&policy, &submission).unwrap();
    let b = warm.run(&policy, &submission).unwrap();
    assert_eq!(a.verdict, Verdict::RuntimeError, "{}", describe(&a));
    assert!(
        String::from_utf8_lossy(&a.stdout.bytes).contains("42 hello\ninput data from stdin"),
        "{}",
        describe(&a)
    );
    assert_eq!(
        common::ending(&a),
        common::ending(&b),
        "cold: {}\nwarm: {}",
        describe(&a),
        describe(&b)
    );
}

/// More callers than ready containers: some wait for a refill, some run
/// cold; every call gets a container of its own and the right output.
#[test]
fn parallel_calls_each_get_their_own_container() {
    let Some(warm) = common::docker_warm(2) else {
        return;
    };
    let warm = Arc::new(warm);
    let policy = strict();
    warm.prewarm(&policy).unwrap();
    wait_ready(&warm, &policy, 2);
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (warm, policy) = (warm.clone(), policy.clone());
            std::thread::spawn(move || {
                (0..3)
                    .map(|call| {
                        let code = format!("print('{caller}-{call}')\n{WHO_AND_AGE}");
                        let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
                        assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
                        let out = String::from_utf8_lossy(&outcome.stdout.bytes).into_owned();
                        assert!(out.starts_with(&format!("{caller}-{call}\n")), "{out}");
                        who_and_age(&outcome).0
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = callers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 12, "a container ran two calls: {ids:?}");
}

/// The other architecture's image (under qemu-user) runs warm too: its
/// bootstrap starts slowly, but before the call.
#[test]
fn the_other_architecture_runs_warm_too() {
    if common::foreign_docker().is_none() {
        return;
    }
    let arch = common::foreign_arch();
    let warm = DockerWarmRuntime::new(
        pyward::DockerConfig::for_arch(arch),
        pyward::DockerWarmConfig {
            size: 1,
            ..pyward::DockerWarmConfig::default()
        },
    )
    .unwrap();
    let policy = strict();
    warm.prewarm(&policy).unwrap();
    wait_ready(&warm, &policy, 1);
    let code = "import platform, sys; print(platform.machine()); sys.exit(3)";
    let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
    assert_eq!(
        outcome.verdict,
        Verdict::RuntimeError,
        "{}",
        describe(&outcome)
    );
    assert_eq!(outcome.exit_code, Some(3));
    let machine = match arch {
        pyward::Arch::Arm64 => "aarch64\n",
        pyward::Arch::Amd64 => "x86_64\n",
    };
    assert_eq!(String::from_utf8_lossy(&outcome.stdout.bytes), machine);
}

/// A pooled container that ends while it waits (killed from outside here)
/// is discarded at the claim, and the call runs in another.
#[test]
fn a_container_that_died_in_the_pool_is_not_handed_out() {
    let Some((warm, policy)) = filled_pool(1) else {
        return;
    };
    let pooled: Vec<String> = containers(&warm.pool_label()).into_iter().collect();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let killed = Command::new("docker")
        .args(["kill", &pooled[0]])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    std::thread::sleep(Duration::from_millis(500));

    let outcome = warm.run(&policy, &Submission::code(WHO_AND_AGE)).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    let (id, _) = who_and_age(&outcome);
    assert_ne!(id, pooled[0], "the dead container ran the call");
}

/// Cancels its token once a whole line is on stdout, and keeps that line.
fn cancel_on_first_line(token: &pyward::CancelToken) -> (pyward::RunWatch, Arc<Mutex<Vec<u8>>>) {
    let streamed = Arc::new(Mutex::new(Vec::new()));
    let (seen, canceller) = (streamed.clone(), token.clone());
    let watch = pyward::RunWatch::new()
        .on_output(move |stream, bytes| {
            if stream == pyward::Stream::Stdout {
                let mut seen = seen.lock().unwrap();
                seen.extend_from_slice(bytes);
                if seen.ends_with(b"\n") {
                    canceller.cancel();
                }
            }
        })
        .cancel_with(token.clone());
    (watch, streamed)
}

/// A pooled container's output reaches the watcher while the program runs
/// (the cancel below comes from the first line, while it sleeps), and the
/// cancel kills that container, which then goes.
#[test]
fn a_pooled_run_streams_live_and_a_cancel_kills_its_container() {
    let Some((warm, policy)) = filled_pool(1) else {
        return;
    };
    assert_eq!(
        warm.warm_ready(),
        1,
        "one container waits, all pools together"
    );
    std::thread::sleep(Duration::from_secs(1));

    let token = pyward::CancelToken::new();
    let (watch, streamed) = cancel_on_first_line(&token);
    let code = format!("import sys, time\n{WHO_AND_AGE}\nsys.stdout.flush()\ntime.sleep(30)\n");
    let outcome = warm
        .run_watched(&policy, &Submission::code(code), &watch)
        .unwrap();
    assert!(token.is_cancelled(), "no line came while the program ran");
    assert_eq!(
        (outcome.verdict, outcome.message.as_deref()),
        (
            Verdict::Signaled,
            Some("cancelled by the client; the sandbox was killed")
        ),
        "{}",
        describe(&outcome)
    );
    assert_eq!(*streamed.lock().unwrap(), outcome.stdout.bytes);
    let (id, age) = who_and_age(&outcome);
    assert!(age >= 1.0, "not from the pool: {age} s");
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers(&warm.pool_label()).contains(&id) {
        assert!(
            Instant::now() < deadline,
            "container {id} outlived the cancel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Python function `markers_in(pid)`: every run marker (the output
/// files' `pyward-output-files:` and 32 hex digits) in the readable memory
/// of process `pid` (`"self"` for the program's own).
macro_rules! markers_in {
    () => {
        r#"
import os, re
PREFIX = b"pyward-output-" + b"files:"  # not whole in this source
def markers_in(pid):
    pattern = re.compile(re.escape(PREFIX) + rb"[0-9a-f]{32}")
    found = set()
    with open("/proc/%s/mem" % pid, "rb", 0) as mem, open("/proc/%s/maps" % pid) as maps:
        for line in maps:
            addrs, perms = line.split()[:2]
            start, end = (int(x, 16) for x in addrs.split("-"))
            if not perms.startswith("r") or end - start > 64 << 20:
                continue
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            found.update(m.group().decode() for m in pattern.finditer(data))
    return sorted(found)
"#
    };
}

/// Prints the markers in the program's own memory, one of them planted by
/// the program itself (so a scan that finds nothing cannot pass).
const MARKERS_IN_MY_MEMORY: &str = concat!(
    markers_in!(),
    "planted = bytes(PREFIX + b'ab' * 16)\nprint(markers_in('self'))\n"
);

/// Declared output files come back from a pooled container as from a
/// fresh one, the program gets exactly its stdin, and its process never
/// holds the run's marker (the bootstrap reads it only after the fork).
#[test]
fn output_files_come_back_from_a_pooled_container_whose_program_never_holds_the_marker() {
    let Some((warm, policy)) = filled_pool(1) else {
        return;
    };
    std::thread::sleep(Duration::from_secs(1));

    let code = format!(
        "import os, sys\nos.makedirs('out')\n\
         open('out/result.bin', 'wb').write(bytes(range(256)))\n\
         print(repr(sys.stdin.read()))\n{MARKERS_IN_MY_MEMORY}\n{WHO_AND_AGE}"
    );
    let mut submission = Submission::code(code);
    submission.stdin = b"to the program\n".to_vec();
    submission.outputs = vec!["out/result.bin".into(), "absent".into()];
    let outcome = warm.run(&policy, &submission).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    let stdout = String::from_utf8_lossy(&outcome.stdout.bytes).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", describe(&outcome));
    assert_eq!(lines[0], "'to the program\\n'");
    assert_eq!(
        lines[1],
        format!("['pyward-output-files:{}']", "ab".repeat(16)),
        "the program's memory holds only the marker it planted"
    );
    let (_, age) = who_and_age(&outcome);
    assert!(age >= 1.0, "not from the pool: {age} s");

    let statuses: Vec<(&str, &str)> = outcome
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.status.as_str()))
        .collect();
    assert_eq!(statuses, [("out/result.bin", "ok"), ("absent", "missing")]);
    match &outcome.files[0].status {
        pyward::OutputStatus::Collected { contents, size } => {
            assert_eq!(contents.bytes, (0..=255u8).collect::<Vec<_>>());
            assert_eq!(*size, 256);
        }
        other => panic!("{other:?}"),
    }
}

/// A call cancelled while it waits for a container that is still starting
/// stops waiting (and ends as cancelled); that container is not lost, it
/// waits in the pool for the next call.
#[test]
fn a_call_cancelled_while_its_container_starts_leaves_that_container_to_the_pool() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let policy = strict();
    assert_eq!(warm.ready(&policy).unwrap(), 0, "no pool before the call");
    let token = pyward::CancelToken::new();
    token.cancel();
    let watch = pyward::RunWatch::new().cancel_with(token);
    // The call makes the pool and would wait for its first container.
    let outcome = warm
        .run_watched(
            &policy,
            &Submission::code("import time\ntime.sleep(30)"),
            &watch,
        )
        .unwrap();
    assert_eq!(
        outcome.message.as_deref(),
        Some("cancelled by the client; the sandbox was killed"),
        "{}",
        describe(&outcome)
    );
    // Nothing refills a pool between calls: the one container it holds is
    // the one the cancelled call was promised.
    wait_ready(&warm, &policy, 1);
    assert_eq!(containers(&warm.pool_label()).len(), 1);
    let outcome = warm.run(&policy, &Submission::code(WHO_AND_AGE)).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
}

/// Scans the parent's (the bootstrap's) memory for a run marker and prints
/// what it found, or `denied ERRNO` when /proc/PPID/mem cannot be opened.
const MARKERS_IN_MY_PARENT: &str = concat!(
    markers_in!(),
    r#"
try:
    found = markers_in(os.getppid())
except PermissionError as e:
    print("denied", e.errno)
    raise SystemExit(0)
print("read", found)
"#
);

/// The bootstrap holds the run's marker while the program runs as the same
/// user; it is not dumpable, so the program cannot read the marker from
/// its memory (and so cannot forge the end trailer or the records).
#[test]
fn the_program_cannot_read_the_marker_from_the_bootstraps_memory() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let policy = strict();
    for outputs in [vec![], vec!["out.txt".to_owned()]] {
        let mut submission = Submission::code(MARKERS_IN_MY_PARENT);
        submission.outputs = outputs;
        let outcome = warm.run(&policy, &submission).unwrap();
        assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout.bytes),
            format!("denied {}\n", libc::EACCES),
            "{}",
            describe(&outcome)
        );
    }
}

/// What looks like the end trailer, with a marker that is not the run's:
/// it is the program's output like any other, and the call ends when the
/// program does, with the program's own status.
#[test]
fn a_forged_end_trailer_neither_ends_the_call_nor_changes_its_verdict() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let code = r#"
import os, struct, sys, time
marker = b"\0pyward-output-files:" + b"00" * 16 + b"\0"
end = struct.pack("<IIQQ", 5, 0, 0, 0)
os.write(1, marker + end)
os.write(2, marker)
time.sleep(0.3)
os.write(1, b"after")
os.write(2, b"after")
sys.exit(3)
"#;
    let policy = strict();
    let started = Instant::now();
    let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        outcome.verdict,
        Verdict::RuntimeError,
        "{}",
        describe(&outcome)
    );
    assert_eq!(outcome.exit_code, Some(3));
    let marker = [b"\0pyward-output-files:".as_slice(), &[b'0'; 32], b"\0"].concat();
    let mut stdout = marker.clone();
    stdout.extend([5, 0, 0, 0, 0, 0, 0, 0]);
    stdout.extend([0; 16]);
    stdout.extend(b"after");
    assert_eq!(outcome.stdout.bytes, stdout);
    assert_eq!(outcome.stderr.bytes, [marker, b"after".to_vec()].concat());
}

/// A pooled call ends on the bootstrap's trailer, not on Docker's exit
/// status: a program killed by its seccomp filter (SIGSYS) is still a
/// security violation, one the OOM killer killed still a memory limit, and
/// a segfault still a signal.
#[test]
fn seccomp_kills_oom_kills_and_signals_keep_their_verdicts_in_the_pool() {
    let Some(warm) = common::docker_warm(1) else {
        return;
    };
    let ptrace = "import ctypes, platform\n\
                  n = {'x86_64': 101, 'aarch64': 117}[platform.machine()]\n\
                  ctypes.CDLL(None).syscall(n, 0, 0, 0, 0)\nprint('returned')";
    let oom = "chunks = []\nwhile True: chunks.append(b'x' * (8 << 20))";
    let segv = "import os; os.kill(os.getpid(), 11)";
    let limits = LimitOverrides {
        memory: Some(pyward::ByteSize::mib(64)),
        ..Default::default()
    };
    let policy = strict();
    for (code, policy, verdict) in [
        (ptrace, policy.clone(), Verdict::SecurityViolation),
        (
            oom,
            policy.tightened(&limits).unwrap(),
            Verdict::MemoryLimit,
        ),
        (segv, policy.clone(), Verdict::Signaled),
    ] {
        // Twice: the second call gets a container that waited in the pool.
        for _ in 0..2 {
            let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
            assert_eq!(outcome.verdict, verdict, "{code}: {}", describe(&outcome));
            assert!(outcome.stdout.bytes.is_empty(), "{}", describe(&outcome));
        }
    }
}

/// Without a whole trailer the call ends as a cold one does, on Docker's
/// exit status: here the container is killed from outside while its
/// program sleeps (the program itself cannot stop the trailer: pid 1 is
/// out of its reach, see tests/docker.rs), so no trailer comes, and Docker
/// reports pid 1's SIGKILL.
#[test]
fn without_the_trailer_a_pooled_call_ends_on_dockers_exit_status() {
    let Some((warm, policy)) = filled_pool(1) else {
        return;
    };
    let pooled: Vec<String> = containers(&warm.pool_label()).into_iter().collect();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let id = pooled[0].clone();
    let killer = Mutex::new(None);
    let watch = pyward::RunWatch::new().on_output(move |stream, bytes| {
        let mut killer = killer.lock().unwrap();
        if stream == pyward::Stream::Stdout && bytes.ends_with(b"\n") && killer.is_none() {
            let id = id.clone();
            *killer = Some(std::thread::spawn(move || {
                Command::new("docker").args(["kill", &id]).output()
            }));
        }
    });
    let code = "import time\nprint('before', flush=True)\ntime.sleep(10)";
    let started = Instant::now();
    let outcome = warm
        .run_watched(&policy, &Submission::code(code), &watch)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{}",
        describe(&outcome)
    );
    assert_eq!(outcome.verdict, Verdict::Signaled, "{}", describe(&outcome));
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert_eq!(outcome.stdout.bytes, b"before\n");
}
