//! The native sandbox's cgroup, seen from the host while a program runs in
//! it: a slot of pyward's pool, with exactly the policy's limits written in
//! the files of the host's cgroup version (v2: memory.max, memory.swap.max
//! 0, pids.max, cpu.max, the controllers enabled above it; v1: the memory,
//! memsw, pids and CFS files), and a cgroup namespace that hides the rest
//! of the tree from the program. On the cold path and the warm path.
//! tests/vm/run runs these on a pure cgroup v2 kernel.

mod common;

use pyward::{ByteSize, LimitOverrides, Runtime, SandboxPolicy, Submission, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MEMORY: u64 = 200 << 20;
const PIDS: u32 = 13;
const CPUS: f64 = 0.5;

fn policy() -> SandboxPolicy {
    SandboxPolicy::builtin("standard")
        .unwrap()
        .tightened(&LimitOverrides {
            memory: Some(ByteSize::mib(200)),
            pids: Some(PIDS),
            cpus: Some(CPUS),
            ..Default::default()
        })
        .unwrap()
}

/// A program that prints its own view of its cgroups, then re-executes
/// itself with `marker` in its command line (to be found from the host) and
/// sleeps until the test kills it.
/// The marker is put together at run time: the program's own command line
/// (`python3 -c CODE` on the cold path) must not hold it.
fn program(marker: &str) -> Submission {
    let (head, tail) = marker.split_at(marker.len() / 2);
    Submission::code(format!(
        "import os, sys\nprint(open('/proc/self/cgroup').read(), end='', flush=True)\n\
         os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(3600)', {head:?} + {tail:?}])\n"
    ))
}

/// The host's view of `pid`'s cgroups: (controllers, path) per line.
fn cgroups_of(pid: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            (controllers.unwrap().to_owned(), path.unwrap().to_owned())
        })
        .collect()
}

/// The directory of `controller`'s hierarchy (None: the unified one) that
/// `pid` is in, from the host's mounts.
fn cgroup_dir(pid: &str, controller: Option<&str>) -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let matches = match controller {
                None => right[0] == "cgroup2",
                Some(c) => right[0] == "cgroup" && right[2].split(',').any(|o| o == c),
            };
            matches.then(|| (fields[3].to_owned(), PathBuf::from(fields[4])))
        })
        .unwrap_or_else(|| panic!("no mount for {controller:?}:\n{mountinfo}"));
    let (root, mount_point) = mount;
    let path = cgroups_of(pid)
        .into_iter()
        .find_map(|(controllers, path)| match controller {
            None => controllers.is_empty().then_some(path),
            Some(c) => controllers.split(',').any(|x| x == c).then_some(path),
        })
        .unwrap();
    let relative = path.strip_prefix(root.as_str()).unwrap_or(&path);
    mount_point.join(relative.trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// True when the memory, pids and cpu controllers are mounted as cgroup v1
/// (pyward then uses them, as `Layout::detect` does).
fn v1_controllers() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    ["memory", "pids", "cpu"].iter().all(|c| {
        mountinfo.lines().any(|line| {
            line.split_once(" - ").is_some_and(|(_, right)| {
                let right: Vec<&str> = right.split(' ').collect();
                right[0] == "cgroup" && right[2].split(',').any(|o| o == *c)
            })
        })
    })
}

/// Checks, while it runs, that the sandboxed process `pid` sits in a slot
/// of pyward's pool that holds the policy's limits.
fn check_slot(runtime: &str, pid: &str) {
    let quota = (CPUS * 100_000.0) as u64;
    if v1_controllers() {
        let memory = cgroup_dir(pid, Some("memory"));
        let pids = cgroup_dir(pid, Some("pids"));
        let cpu = cgroup_dir(pid, Some("cpu"));
        for dir in [&memory, &pids, &cpu] {
            assert_slot(runtime, dir);
        }
        assert_eq!(
            read(&memory.join("memory.limit_in_bytes")),
            MEMORY.to_string()
        );
        let memsw = memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            assert_eq!(read(&memsw), MEMORY.to_string(), "{runtime}: no swap");
        }
        assert_eq!(read(&pids.join("pids.max")), PIDS.to_string());
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), quota.to_string());
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        return;
    }
    let slot = cgroup_dir(pid, None);
    assert_slot(runtime, &slot);
    assert_eq!(
        read(&slot.join("memory.max")),
        MEMORY.to_string(),
        "{runtime}"
    );
    assert_eq!(
        read(&slot.join("memory.swap.max")),
        "0",
        "{runtime}: no swap"
    );
    assert_eq!(read(&slot.join("pids.max")), PIDS.to_string(), "{runtime}");
    assert_eq!(
        read(&slot.join("cpu.max")),
        format!("{quota} 100000"),
        "{runtime}"
    );
    // The no-internal-process rule: controllers are enabled only above the
    // slots, which hold the processes.
    let pool = slot.parent().unwrap();
    for controller in ["memory", "pids", "cpu"] {
        for dir in [pool, pool.parent().unwrap()] {
            let enabled = read(&dir.join("cgroup.subtree_control"));
            assert!(
                enabled.split(' ').any(|c| c == controller),
                "{runtime}: {controller} not enabled in {}: {enabled}",
                dir.display()
            );
        }
    }
    assert_eq!(read(&slot.join("cgroup.subtree_control")), "", "{runtime}");
    assert_eq!(
        read(&pool.join("cgroup.procs")),
        "",
        "{runtime}: the pool holds no process"
    );
    assert!(
        read(&slot.join("cgroup.procs")).lines().any(|p| p == pid),
        "{runtime}: {pid} not in {}",
        slot.display()
    );
}

fn assert_slot(runtime: &str, dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy();
    let parent = dir.parent().unwrap().file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("slot-") && parent == "pyward",
        "{runtime}: the sandbox is in {}, not in a slot of pyward's pool",
        dir.display()
    );
}

/// Runs the program on `runtime`, checks its cgroup from the host, kills
/// it, and checks what it saw of its own cgroups.
fn sandbox_cgroup_is_a_slot_with_the_limits(runtime: &dyn Runtime) {
    let marker = format!("pyward-cgroups-{}-{}", runtime.name(), std::process::id());
    let policy = policy();
    let submission = program(&marker);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| runtime.run(&policy, &submission).unwrap());
        // Generous: nothing here may depend on the machine's speed.
        let deadline = Instant::now() + Duration::from_secs(120);
        let pid = loop {
            if let Some(pid) = common::processes_with(&marker).pop() {
                break pid;
            }
            assert!(!run.is_finished(), "the program ended before it was seen");
            assert!(Instant::now() < deadline, "the program never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        check_slot(runtime.name(), &pid);
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let outcome = run.join().unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Signaled,
            "{}: {}",
            runtime.name(),
            common::describe(&outcome)
        );
        // A cgroup namespace rooted at the slot: the program sees only "/".
        let seen = String::from_utf8_lossy(&outcome.stdout.bytes).into_owned();
        assert!(
            !seen.is_empty(),
            "{}: {}",
            runtime.name(),
            common::describe(&outcome)
        );
        for line in seen.lines() {
            assert!(
                line.ends_with(":/"),
                "{}: the program sees {seen}",
                runtime.name()
            );
        }
    });
}

#[test]
fn a_cold_sandbox_runs_in_a_slot_holding_the_policys_limits() {
    let Some(native) = common::native() else {
        return;
    };
    sandbox_cgroup_is_a_slot_with_the_limits(&native);
}

#[test]
fn a_warm_call_runs_in_a_slot_holding_the_policys_limits() {
    let Some(warm) = common::warm() else { return };
    sandbox_cgroup_is_a_slot_with_the_limits(&warm);
}
