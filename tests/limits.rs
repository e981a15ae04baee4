//! Every limit: a program that hits it, and the verdict it must get.

mod common;

use common::{Case, stderr};
use pyward::{ByteSize, LimitOverrides, LimitReached, Verdict};
use std::time::Duration;

fn wall(seconds: u64) -> LimitOverrides {
    LimitOverrides {
        wall_time: Some(Duration::from_secs(seconds)),
        ..Default::default()
    }
}

#[test]
fn busy_loop_past_the_wall_clock_is_a_timeout() {
    // CPU 5 s (strict), wall 1 s: the wall clock runs out first.
    for outcome in Case::code("strict", "while True: pass")
        .limits(wall(1))
        .expect(Verdict::Timeout)
    {
        assert_eq!(outcome.limits_reached, [LimitReached::WallTime]);
        assert!(
            outcome.usage.wall >= Duration::from_secs(1),
            "{:?}",
            outcome.usage
        );
        assert!(
            outcome.usage.wall < Duration::from_secs(4),
            "killed promptly: {:?}",
            outcome.usage
        );
    }
}

#[test]
fn sleeping_past_the_wall_clock_is_a_timeout() {
    Case::code("strict", "import time; time.sleep(60)")
        .limits(wall(1))
        .expect(Verdict::Timeout);
}

#[test]
fn busy_loop_past_the_cpu_limit_is_cpu_limit() {
    let limits = LimitOverrides {
        cpu_time: Some(Duration::from_millis(700)),
        ..wall(8)
    };
    for outcome in Case::code("strict", "while True: pass")
        .limits(limits)
        .expect(Verdict::CpuLimit)
    {
        assert_eq!(outcome.limits_reached, [LimitReached::CpuTime]);
        assert!(
            outcome.usage.cpu >= Duration::from_millis(700),
            "{:?}",
            outcome.usage
        );
    }
}

#[test]
fn cpu_time_of_all_threads_counts() {
    // Two threads spinning under the standard policy's 2 cores: CPU time
    // grows twice as fast as the wall clock, and the cgroup sees it all.
    let code = "import threading\ndef spin():\n    while True: pass\nfor _ in range(2): threading.Thread(target=spin, daemon=True).start()\nspin()";
    let limits = LimitOverrides {
        cpu_time: Some(Duration::from_secs(1)),
        ..wall(10)
    };
    Case::code("standard", code)
        .limits(limits)
        .expect(Verdict::CpuLimit);
}

#[test]
fn allocating_past_the_memory_limit_is_memory_limit() {
    let limits = LimitOverrides {
        memory: Some(ByteSize::mib(64)),
        ..Default::default()
    };
    let code = "chunks = []\nwhile True: chunks.append(b'x' * (8 << 20))";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::MemoryLimit)
    {
        assert_eq!(outcome.limits_reached, [LimitReached::Memory]);
        assert!(outcome.message.unwrap().contains("OOM"));
    }
}

#[test]
fn a_fork_bomb_that_handles_the_refusal_and_spins_reached_both_limits() {
    // The CPU limit ends it, but the outcome also says that the pids limit
    // refused its forks: every limit reached is listed, not only the last.
    let code = "import os, time\nkids = 0\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n        kids += 1\n    except OSError:\n        break\nprint('refused after', kids, flush=True)\nwhile True: pass";
    let limits = LimitOverrides {
        cpu_time: Some(Duration::from_millis(700)),
        pids: Some(12),
        ..wall(20)
    };
    for outcome in Case::code("standard", code)
        .limits(limits)
        .expect(Verdict::CpuLimit)
    {
        assert!(
            String::from_utf8_lossy(&outcome.stdout.bytes).starts_with("refused after"),
            "{}",
            common::describe(&outcome)
        );
        assert_eq!(
            outcome.limits_reached,
            [LimitReached::CpuTime, LimitReached::Pids],
            "{}",
            common::describe(&outcome)
        );
        assert!(
            outcome
                .to_json()
                .contains(r#""limits_reached":["cpu_time","pids"]"#)
        );
    }
}

#[test]
fn tmpfs_pages_count_against_the_memory_limit() {
    // /tmp is capped at 16 MiB, but writing it in a 64 MiB sandbox must not let
    // a program keep memory outside the limit: many files add up.
    let limits = LimitOverrides {
        memory: Some(ByteSize::mib(40)),
        ..Default::default()
    };
    let code = "import os\nblob = b'x' * (1 << 20)\nkeep = []\nfor i in range(14):\n    open(f'/tmp/f{i}', 'wb').write(blob)\nwhile True: keep.append(b'y' * (4 << 20))";
    Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::MemoryLimit);
}

#[test]
fn endless_output_is_output_limit_and_truncated_at_the_cap() {
    let limits = LimitOverrides {
        output: Some(ByteSize::kib(64)),
        ..Default::default()
    };
    let code = "import sys\nwhile True: sys.stdout.write('y' * 4096)";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::OutputLimit)
    {
        assert_eq!(outcome.limits_reached, [LimitReached::Output]);
        assert!(outcome.stdout.truncated);
        assert_eq!(outcome.stdout.bytes.len(), 64 * 1024);
        assert!(!outcome.stderr.truncated);
    }
}

#[test]
fn endless_stderr_is_output_limit_too() {
    let limits = LimitOverrides {
        output: Some(ByteSize::kib(16)),
        ..Default::default()
    };
    let code = "import sys\nwhile True: sys.stderr.write('e' * 1000)";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::OutputLimit)
    {
        assert!(outcome.stderr.truncated);
        assert_eq!(outcome.stderr.bytes.len(), 16 * 1024);
    }
}

#[test]
fn output_at_the_cap_is_not_truncated() {
    let limits = LimitOverrides {
        output: Some(ByteSize::kib(4)),
        ..Default::default()
    };
    let code = "import sys; sys.stdout.write('z' * 4096)";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::Ok)
    {
        assert!(!outcome.stdout.truncated);
        assert_eq!(outcome.stdout.bytes.len(), 4096);
    }
}

#[test]
fn fork_bomb_is_pids_limit() {
    let limits = LimitOverrides {
        pids: Some(24),
        ..wall(20)
    };
    let code = "import os\nwhile True:\n    os.fork()";
    Case::code("standard", code)
        .limits(limits)
        .expect(Verdict::PidsLimit);
}

#[test]
fn too_many_threads_is_pids_limit() {
    let limits = LimitOverrides {
        pids: Some(8),
        ..Default::default()
    };
    let code = "import threading, time\nfor _ in range(64):\n    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::PidsLimit)
    {
        assert!(
            stderr(&outcome).contains("can't start new thread"),
            "{}",
            stderr(&outcome)
        );
    }
}

#[test]
fn writing_past_the_file_size_limit_fails_with_efbig() {
    let limits = LimitOverrides {
        file_size: Some(ByteSize::kib(256)),
        ..Default::default()
    };
    let code = "open('/tmp/big', 'wb').write(b'x' * (1 << 20))";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::RuntimeError)
    {
        assert!(
            stderr(&outcome).contains("File too large"),
            "{}",
            stderr(&outcome)
        );
    }
}

#[test]
fn filling_tmp_past_its_size_fails_with_enospc() {
    let limits = LimitOverrides {
        tmpfs: Some(ByteSize::mib(1)),
        ..Default::default()
    };
    let code = "open('/tmp/fill', 'wb').write(b'x' * (2 << 20))";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::RuntimeError)
    {
        assert!(
            stderr(&outcome).contains("No space left on device"),
            "{}",
            stderr(&outcome)
        );
    }
}

#[test]
fn too_many_open_files_fails_with_emfile() {
    let limits = LimitOverrides {
        open_files: Some(32),
        ..Default::default()
    };
    let code = "files = [open('/dev/null') for _ in range(64)]";
    for outcome in Case::code("strict", code)
        .limits(limits)
        .expect(Verdict::RuntimeError)
    {
        assert!(
            stderr(&outcome).contains("Too many open files"),
            "{}",
            stderr(&outcome)
        );
    }
}

#[test]
fn a_timeout_leaves_no_process_behind() {
    let marker = format!("pyward-leftover-{}", std::process::id());
    let code = format!(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/usr/bin/python3', ['python3', '-c', 'import time; time.sleep(600)', '{marker}'])\ntime.sleep(600)"
    );
    Case::code("standard", &code)
        .limits(wall(1))
        .expect(Verdict::Timeout);
    let leftovers = processes_with(&marker);
    assert!(
        leftovers.is_empty(),
        "processes outlived the sandbox: {leftovers:?}"
    );
}

#[test]
fn a_requested_limit_may_not_loosen_the_policy() {
    let strict = pyward::SandboxPolicy::builtin("strict").unwrap();
    let looser = LimitOverrides {
        memory: Some(ByteSize::mib(4096)),
        ..Default::default()
    };
    let err = strict.tightened(&looser).unwrap_err().to_string();
    assert!(
        err.contains("limits.memory") || err.contains("memory"),
        "{err}"
    );
}

#[test]
fn a_killed_pyward_takes_its_sandbox_with_it() {
    if common::native().is_none() {
        return;
    }
    let marker = format!("pyward-orphan-{}", std::process::id());
    let mut pyward = std::process::Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args(["run", "--policy", "standard"])
        .args(["-c", "import time; time.sleep(600)", "--", &marker])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sandboxed = || processes_with(&marker);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sandboxed().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pyward.kill().unwrap();
    pyward.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !sandboxed().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "outlived pyward: {:?}",
            sandboxed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Command lines of host processes whose arguments contain `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(marker) && !cmdline.contains("pyward run")).then_some(cmdline)
        })
        .collect()
}
