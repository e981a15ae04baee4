//! Cross-architecture runs: the Docker runtime on the other architecture's
//! image, under qemu-user. Each arm64 run costs about half a second, so
//! the runs here are few and each one proves something.
//!
//! Under emulation the container's host-arch seccomp profile is the only
//! filter (qemu refuses the guest's PR_SET_SECCOMP); docs/SECURITY.md says
//! what that changes. These tests pin both what still holds and what does not.

mod common;

use common::{describe, foreign_arch, foreign_docker};
use pyward::{LimitOverrides, Outcome, Runtime, SandboxPolicy, Submission, Verdict};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const PYWARD: &str = env!("CARGO_BIN_EXE_pyward");

fn run(runtime: &impl Runtime, policy: &SandboxPolicy, code: &str) -> Outcome {
    let started = Instant::now();
    let outcome = runtime
        .run(policy, &Submission::code(code))
        .expect("the run starts");
    eprintln!("{} run: {:?}", foreign_arch(), started.elapsed());
    outcome
}

fn strict() -> SandboxPolicy {
    SandboxPolicy::builtin("strict").unwrap()
}

fn stdout(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stdout.bytes).into_owned()
}

fn pyward(args: &[&str]) -> Output {
    Command::new(PYWARD)
        .args(args)
        .output()
        .expect("pyward runs")
}

#[test]
fn the_library_runs_the_other_architectures_interpreter() {
    let Some(runtime) = foreign_docker() else {
        return;
    };
    let outcome = run(
        &runtime,
        &strict(),
        "import platform; print(platform.machine())",
    );
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    assert_eq!(
        stdout(&outcome),
        format!("{}\n", foreign_arch().kernel_name())
    );
}

#[test]
fn timeout_output_and_memory_limits_hold_under_emulation() {
    let Some(runtime) = foreign_docker() else {
        return;
    };
    let limits = |l: LimitOverrides| strict().tightened(&l).unwrap();
    let timeout = run(
        &runtime,
        &limits(LimitOverrides {
            wall_time: Some(Duration::from_secs(2)),
            ..LimitOverrides::default()
        }),
        "while True: pass",
    );
    assert_eq!(timeout.verdict, Verdict::Timeout, "{}", describe(&timeout));
    let output = run(
        &runtime,
        &limits(LimitOverrides {
            output: Some("4KiB".parse().unwrap()),
            ..LimitOverrides::default()
        }),
        "while True: print('x' * 1000)",
    );
    assert_eq!(
        output.verdict,
        Verdict::OutputLimit,
        "{}",
        describe(&output)
    );
    assert_eq!(output.stdout.bytes.len(), 4096);
    let memory = run(
        &runtime,
        &limits(LimitOverrides {
            memory: Some("64MiB".parse().unwrap()),
            ..LimitOverrides::default()
        }),
        "x = bytearray(512 << 20); print(len(x))",
    );
    assert_eq!(
        memory.verdict,
        Verdict::MemoryLimit,
        "{}",
        describe(&memory)
    );
}

/// The guest's syscall numbers never reach the kernel as such: qemu either
/// answers itself or makes the host's syscall, which the host-arch profile sees.
#[test]
fn the_dangerous_set_never_succeeds_under_emulation() {
    let Some(runtime) = foreign_docker() else {
        return;
    };
    if foreign_arch() != pyward::Arch::Arm64 {
        common::missing("the syscall numbers below are aarch64's");
        return;
    }
    // ptrace (aarch64 117): qemu-user does not implement it and answers ENOSYS
    // itself; nothing reaches the kernel, so no seccomp kill, and no success.
    let ptrace = run(
        &runtime,
        &strict(),
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         print(libc.syscall(117, 0, 0, 0, 0), ctypes.get_errno())",
    );
    assert_eq!(ptrace.verdict, Verdict::Ok, "{}", describe(&ptrace));
    assert_eq!(stdout(&ptrace), "-1 38\n");
    // unshare (aarch64 97): qemu passes it through as the host's unshare, which
    // is in the dangerous set of the host-arch profile: killed.
    let unshare = run(
        &runtime,
        &strict(),
        "import ctypes\n\
         print(ctypes.CDLL(None).syscall(97, 0x10000000), flush=True)",
    );
    assert_eq!(
        unshare.verdict,
        Verdict::SecurityViolation,
        "{}",
        describe(&unshare)
    );
}

/// The documented gap: without the native filters the strict allowlist's
/// "threads, no new processes" cannot hold (the container profile must let
/// the bootstrap, pid 1, fork the program). The pids limit still bounds it;
/// netlink stays refused.
#[test]
fn strict_under_emulation_allows_fork_but_still_refuses_what_the_profile_refuses() {
    let Some(runtime) = foreign_docker() else {
        return;
    };
    let outcome = run(
        &runtime,
        &strict(),
        "import os, socket\n\
         pid = os.fork()\n\
         if pid == 0: os._exit(7)\n\
         print('fork', os.waitpid(pid, 0)[1] >> 8)\n\
         try: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); print('netlink ok')\n\
         except OSError as e: print('netlink', e.errno)",
    );
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    assert_eq!(stdout(&outcome), "fork 7\nnetlink 1\n");
}

#[test]
fn cli_runs_the_other_architecture_and_verify_compares() {
    if foreign_docker().is_none() {
        return;
    }
    let arch = foreign_arch().as_str();
    let host = pyward::Arch::host().as_str();
    let both = format!("{host},{arch}");

    let out = pyward(&[
        "run",
        "--runtime",
        "docker",
        "--arch",
        arch,
        "-c",
        "import platform; print(platform.machine())",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", foreign_arch().kernel_name())
    );

    let same = pyward(&[
        "verify",
        "--arch",
        &both,
        "-c",
        "import struct, sys\n\
         print(struct.calcsize('P'), sys.byteorder, sum(i * 0.1 for i in range(1000)) ** 0.5)",
    ]);
    let text = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(0), "{out:?}\n{text}");
    assert!(text.contains("all 2 architectures agree"), "{text}");

    let differ = pyward(&[
        "verify",
        "--arch",
        &both,
        "-c",
        "import platform; print('same'); print(platform.machine())",
    ]);
    let text = String::from_utf8_lossy(&differ.stdout);
    assert_eq!(differ.status.code(), Some(1), "{differ:?}\n{text}");
    assert!(
        text.contains(&format!("-{}\n", pyward::Arch::host().kernel_name()))
            && text.contains(&format!("+{}\n", foreign_arch().kernel_name())),
        "{text}"
    );
}

#[test]
fn cli_refuses_another_architecture_on_the_native_runtime() {
    let out = pyward(&["run", "--arch", foreign_arch().as_str(), "-c", "pass"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("need --runtime docker"),
        "{out:?}"
    );
}

#[test]
fn output_files_come_back_from_the_other_architecture_and_links_stay_unfollowed() {
    let Some(runtime) = foreign_docker() else {
        return;
    };
    let submission = Submission {
        outputs: vec!["out/r.bin".into(), "link".into(), "gone".into()],
        ..Submission::code(
            "import os, platform\nos.makedirs('out')\n\
             open('out/r.bin', 'wb').write(platform.machine().encode() + bytes([0, 255]))\n\
             os.symlink('/etc/passwd', 'link')",
        )
    };
    let outcome = runtime.run(&strict(), &submission).expect("the run starts");
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    let statuses: Vec<&pyward::OutputStatus> = outcome.files.iter().map(|f| &f.status).collect();
    let expected = [foreign_arch().kernel_name().as_bytes(), &[0, 255]].concat();
    assert!(
        matches!(statuses[0], pyward::OutputStatus::Collected { contents, .. } if contents.bytes == expected),
        "{statuses:?}"
    );
    assert_eq!(statuses[1], &pyward::OutputStatus::NotRegular);
    assert_eq!(statuses[2], &pyward::OutputStatus::Missing);
}
