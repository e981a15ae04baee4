//! Forbidden syscalls made from inside the sandbox: each dangerous one kills
//! the program (`security_violation`); others merely fail with EPERM.

mod common;

use common::{Case, describe};
use pyward::{SandboxPolicy, Submission, Verdict};

/// Python that makes syscall `name` with harmless arguments through ctypes.
fn raw_syscall(name: &str) -> String {
    format!(
        "import ctypes, os, platform\n\
         numbers = {{\n\
           'x86_64': {{'mount': 165, 'ptrace': 101, 'unshare': 272, 'keyctl': 250, 'bpf': 321, 'io_uring_setup': 425, 'setns': 308, 'pivot_root': 155, 'init_module': 175, 'reboot': 169, 'mknodat': 259, 'sethostname': 170}},\n\
           'aarch64': {{'mount': 40, 'ptrace': 117, 'unshare': 97, 'keyctl': 219, 'bpf': 280, 'io_uring_setup': 425, 'setns': 268, 'pivot_root': 41, 'init_module': 105, 'reboot': 142, 'mknodat': 33, 'sethostname': 161}},\n\
         }}[platform.machine()]\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         ret = libc.syscall(numbers['{name}'], 0, 0, 0, 0, 0)\n\
         print('returned', ret, os.strerror(ctypes.get_errno()))\n"
    )
}

#[test]
fn dangerous_syscalls_kill_the_program() {
    for name in [
        "mount",
        "ptrace",
        "unshare",
        "keyctl",
        "bpf",
        "io_uring_setup",
        "setns",
        "pivot_root",
        "init_module",
        "reboot",
    ] {
        for outcome in Case::code("strict", &raw_syscall(name)).expect(Verdict::SecurityViolation) {
            assert_eq!(
                outcome.signal,
                Some(libc::SIGSYS),
                "{name}: {}",
                describe(&outcome)
            );
            assert!(
                outcome.stdout.bytes.is_empty(),
                "{name} returned: {}",
                describe(&outcome)
            );
        }
    }
}

#[test]
fn the_standard_policy_kills_them_too() {
    for name in ["mount", "ptrace", "unshare", "bpf"] {
        Case::code("standard", &raw_syscall(name)).expect(Verdict::SecurityViolation);
    }
}

#[test]
fn other_unlisted_syscalls_fail_with_eperm() {
    for name in ["mknodat", "sethostname"] {
        Case::code("strict", &raw_syscall(name))
            .expect_stdout("returned -1 Operation not permitted\n");
    }
}

#[test]
fn with_denied_kill_any_unlisted_syscall_is_a_violation() {
    let text = "[seccomp]\nallowlist = \"python-strict\"\ndenied = \"kill\"\n";
    let policy = SandboxPolicy::from_toml("kill", text, "test").unwrap();
    let case = Case {
        policy,
        submission: Submission::code(raw_syscall("mknodat")),
    };
    case.expect(Verdict::SecurityViolation);
}

#[test]
fn strict_refuses_new_processes_but_allows_threads() {
    let code = "import os, threading\nt = threading.Thread(target=print, args=('thread ok',)); t.start(); t.join()\ntry:\n    os.fork()\n    print('forked')\nexcept PermissionError:\n    print('fork refused')";
    Case::code("strict", code).expect_stdout("thread ok\nfork refused\n");
}

#[test]
fn x32_syscall_numbers_are_refused() {
    let code = "import ctypes, os, platform\nif platform.machine() != 'x86_64':\n    print('not x86_64')\nelse:\n    libc = ctypes.CDLL(None, use_errno=True)\n    ret = libc.syscall(0x40000000 | 39)\n    print('returned', ret)";
    // native: the filter answers the x32 number with an error. docker: runc's
    // libseccomp filter treats x32 as a foreign architecture and kills the
    // program (security_violation). Either way the x32 getpid never runs.
    let case = Case::code("strict", code);
    for runtime in common::runtimes() {
        let outcome = runtime.run(&case.policy, &case.submission).unwrap();
        let out = String::from_utf8_lossy(&outcome.stdout.bytes).into_owned();
        match (runtime.name(), outcome.verdict) {
            (_, Verdict::Ok) => {
                assert!(
                    out == "returned -1\n" || out == "not x86_64\n",
                    "x32 getpid ran: {out}"
                )
            }
            (name, Verdict::SecurityViolation) if common::is_docker(name) => {
                assert_eq!(out, "", "x32 getpid ran")
            }
            (name, verdict) => panic!(
                "runtime {name}: unexpected {verdict}: {}",
                describe(&outcome)
            ),
        }
    }
}

#[test]
fn a_policy_file_uses_the_allowlist_next_to_it() {
    // A site's own allowlist beside its policy: python-strict without getcwd.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("seccomp")).unwrap();
    let strict = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/seccomp/python-strict.toml"
    ))
    .unwrap();
    let without_getcwd: String = strict
        .lines()
        .filter(|l| !l.starts_with("getcwd"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        strict.len(),
        without_getcwd.len(),
        "python-strict.toml lists getcwd"
    );
    std::fs::write(dir.path().join("seccomp/no-getcwd.toml"), without_getcwd).unwrap();
    let policy_path = dir.path().join("site.toml");
    std::fs::write(&policy_path, "[seccomp]\nallowlist = \"no-getcwd\"\n").unwrap();
    let policy = SandboxPolicy::load(policy_path.to_str().unwrap()).unwrap();
    let code = "import os\ntry:\n    os.getcwd()\n    print('allowed')\nexcept PermissionError:\n    print('refused')";
    Case {
        policy,
        submission: Submission::code(code),
    }
    .expect_stdout("refused\n");
}
