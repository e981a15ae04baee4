//! Shared helpers for the integration suite: the runtimes to test, and a
//! short way to run a program under a policy.
//!
//! By default every runtime is tested, and one that cannot run here fails
//! under `CI=true` (and is skipped loudly elsewhere). `PYWARD_TEST_RUNTIMES`
//! (a comma-separated list of `native`, `native-warm`, `docker`,
//! `docker-warm`) narrows that to exactly the runtimes it names, for a
//! machine that has only those (tests/vm/run sets it to `native,native-warm`
//! in its cgroup v2 guest, which has no Docker). A test that needs an
//! excluded runtime then fails, saying so: such tests are left out by name,
//! never skipped.
#![allow(dead_code)]

use pyward::{
    DockerConfig, DockerRuntime, DockerWarmConfig, DockerWarmRuntime, LimitOverrides, NativeConfig,
    NativeRuntime, Outcome, Runtime, SandboxPolicy, Submission, Verdict, WarmConfig, WarmRuntime,
};

/// Every runtime this machine can test (those `PYWARD_TEST_RUNTIMES` names,
/// when set). A runtime that cannot run here fails the test under `CI=true`,
/// and is skipped loudly elsewhere.
pub fn runtimes() -> Vec<Box<dyn Runtime>> {
    let mut runtimes: Vec<Box<dyn Runtime>> = Vec::new();
    if selected("native") {
        if let Some(native) = native() {
            runtimes.push(Box::new(native));
        }
    }
    if selected("native-warm") {
        if let Some(warm) = warm() {
            runtimes.push(Box::new(warm));
        }
    }
    if selected("docker") {
        if let Some(docker) = docker() {
            runtimes.push(Box::new(docker));
        }
    }
    if selected("docker-warm") {
        if let Some(warm) = docker_warm(1) {
            runtimes.push(Box::new(warm));
        }
    }
    runtimes
}

/// The runtime names `PYWARD_TEST_RUNTIMES` may list.
const RUNTIME_NAMES: [&str; 4] = ["native", "native-warm", "docker", "docker-warm"];

/// The runtimes `PYWARD_TEST_RUNTIMES` names, or None when it is unset.
/// An unknown name fails the test.
fn runtimes_named() -> Option<Vec<String>> {
    let value = std::env::var("PYWARD_TEST_RUNTIMES").ok()?;
    let names: Vec<String> = value.split(',').map(|n| n.trim().to_owned()).collect();
    for name in &names {
        assert!(
            RUNTIME_NAMES.contains(&name.as_str()),
            "PYWARD_TEST_RUNTIMES={value:?}: unknown runtime {name:?}; the runtimes are {RUNTIME_NAMES:?}"
        );
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("PYWARD_TEST_RUNTIMES: testing only {}", names.join(", ")));
    Some(names)
}

/// True when `runtime` is to be tested: always, unless `PYWARD_TEST_RUNTIMES`
/// is set and leaves it out.
fn selected(runtime: &str) -> bool {
    runtimes_named().is_none_or(|names| names.iter().any(|n| n == runtime))
}

/// Fails the test when `PYWARD_TEST_RUNTIMES` leaves out `runtime`, which
/// the test needs: on such a machine it is excluded by name, not skipped.
fn require(runtime: &str) {
    if !selected(runtime) {
        panic!(
            "this test needs the {runtime} runtime, which PYWARD_TEST_RUNTIMES={:?} leaves out: exclude the test by name where the runtime is missing",
            std::env::var("PYWARD_TEST_RUNTIMES").unwrap_or_default()
        );
    }
}

/// The Docker runtime's warm pool, `size` containers per shape, or None
/// (with a loud message) where Docker or the test image is missing.
pub fn docker_warm(size: usize) -> Option<DockerWarmRuntime> {
    docker_warm_for(pyward::Arch::host(), size)
}

/// The warm pool for the other architecture (under qemu-user), or None
/// (with a loud message) where Docker, its image or qemu-user is missing.
pub fn foreign_docker_warm(size: usize) -> Option<DockerWarmRuntime> {
    docker_warm_for(foreign_arch(), size)
}

fn docker_warm_for(arch: pyward::Arch, size: usize) -> Option<DockerWarmRuntime> {
    require("docker-warm");
    let config = DockerWarmConfig {
        size,
        ..DockerWarmConfig::default()
    };
    let runtime = match DockerWarmRuntime::new(DockerConfig::for_arch(arch), config) {
        Ok(runtime) => runtime,
        Err(e) => {
            missing(&format!(
                "the {arch} Docker warm runtime cannot start here: {e}"
            ));
            return None;
        }
    };
    if let Err(e) = runtime.cold().check_image() {
        missing(&format!("{e} (run images/build-for-tests.sh)"));
        return None;
    }
    Some(runtime)
}

/// The Docker runtime, or None (with a loud message) where Docker or the
/// test image is missing.
pub fn docker() -> Option<DockerRuntime> {
    require("docker");
    // The default image, pyward/python3.11-bookworm:ARCH, which
    // images/build-for-tests.sh builds.
    let runtime = match DockerRuntime::new(DockerConfig::default()) {
        Ok(runtime) => runtime,
        Err(e) => {
            missing(&format!("the Docker runtime cannot start here: {e}"));
            return None;
        }
    };
    if let Err(e) = runtime.check_image() {
        missing(&format!("{e} (run images/build-for-tests.sh)"));
        return None;
    }
    Some(runtime)
}

/// The architecture that is not this machine's (arm64 on an amd64 host).
pub fn foreign_arch() -> pyward::Arch {
    match pyward::Arch::host() {
        pyward::Arch::Amd64 => pyward::Arch::Arm64,
        pyward::Arch::Arm64 => pyward::Arch::Amd64,
    }
}

/// The Docker runtime for the other architecture (under qemu-user), or None
/// (with a loud message) where Docker, its image or qemu-user is missing.
pub fn foreign_docker() -> Option<DockerRuntime> {
    require("docker");
    let arch = foreign_arch();
    let runtime = match DockerRuntime::new(DockerConfig::for_arch(arch)) {
        Ok(runtime) => runtime,
        Err(e) => {
            missing(&format!("the {arch} Docker runtime cannot start here: {e}"));
            return None;
        }
    };
    if let Err(e) = runtime.check_image() {
        missing(&format!("{e} (run images/build-for-tests.sh)"));
        return None;
    }
    Some(runtime)
}

/// The native runtime, or None (with a loud message) where it cannot run.
pub fn native() -> Option<NativeRuntime> {
    require("native");
    native_runtime()
}

/// The native runtime, whichever of its paths is to be tested.
fn native_runtime() -> Option<NativeRuntime> {
    if !nix::unistd::geteuid().is_root() {
        missing("the native runtime tests need root (uid maps over 65536 ids and cgroup writes)");
        return None;
    }
    match NativeRuntime::new(NativeConfig::default()) {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            missing(&format!("the native runtime cannot start here: {e}"));
            None
        }
    }
}

/// The native runtime's warm path (a zygote per policy, started on first use).
pub fn warm() -> Option<WarmRuntime> {
    require("native-warm");
    native_runtime().map(|native| WarmRuntime::new(native, WarmConfig::default()))
}

/// True for the Docker runtimes (`docker`, `docker-warm`), whose containers
/// show a few properties differently from the native sandbox.
pub fn is_docker(runtime: &str) -> bool {
    runtime == "docker" || runtime == "docker-warm"
}

/// Fails under CI, warns loudly elsewhere.
pub fn missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {what}");
    }
    eprintln!("\n*** SKIPPED: {what} ***\n");
}

/// A program's run under a named policy with overrides, on every runtime.
pub struct Case {
    pub policy: SandboxPolicy,
    pub submission: Submission,
}

impl Case {
    pub fn code(policy: &str, code: &str) -> Case {
        Case {
            policy: SandboxPolicy::builtin(policy).unwrap(),
            submission: Submission::code(code),
        }
    }

    pub fn limits(mut self, limits: LimitOverrides) -> Case {
        self.policy = self.policy.tightened(&limits).unwrap();
        self
    }

    pub fn stdin(mut self, stdin: &[u8]) -> Case {
        self.submission.stdin = stdin.to_vec();
        self
    }

    /// Runs on every runtime and checks the verdict; returns each outcome.
    pub fn expect(&self, verdict: Verdict) -> Vec<Outcome> {
        self.expect_each(verdict)
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect()
    }

    /// Like `expect`, with the name of the runtime each outcome came from,
    /// for the few properties that each runtime shows in its own way.
    pub fn expect_each(&self, verdict: Verdict) -> Vec<(&'static str, Outcome)> {
        runtimes()
            .iter()
            .map(|runtime| {
                let outcome = runtime
                    .run(&self.policy, &self.submission)
                    .expect("the run starts");
                assert_eq!(
                    outcome.verdict,
                    verdict,
                    "runtime {}: expected {verdict}, got {}\n{}",
                    runtime.name(),
                    outcome.verdict,
                    describe(&outcome)
                );
                (runtime.name(), outcome)
            })
            .collect()
    }

    /// Runs and expects `ok` with the stdout `expected(runtime name)`.
    pub fn expect_stdout_each(&self, expected: impl Fn(&str) -> String) {
        for (runtime, outcome) in self.expect_each(Verdict::Ok) {
            assert_eq!(
                String::from_utf8_lossy(&outcome.stdout.bytes),
                expected(runtime),
                "runtime {runtime}: {}",
                describe(&outcome)
            );
        }
    }

    /// Runs and expects `ok` with exactly `stdout`.
    pub fn expect_stdout(&self, stdout: &str) {
        for outcome in self.expect(Verdict::Ok) {
            assert_eq!(
                String::from_utf8_lossy(&outcome.stdout.bytes),
                stdout,
                "{}",
                describe(&outcome)
            );
        }
    }
}

pub fn describe(outcome: &Outcome) -> String {
    format!(
        "exit={:?} signal={:?} message={:?}\n--- stdout\n{}\n--- stderr\n{}",
        outcome.exit_code,
        outcome.signal,
        outcome.message,
        String::from_utf8_lossy(&outcome.stdout.bytes),
        String::from_utf8_lossy(&outcome.stderr.bytes)
    )
}

pub fn stderr(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stderr.bytes).into_owned()
}

/// `pyward serve` with the native runtime needs root; skip loudly (fail
/// under CI) without it.
pub fn can_serve() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    missing("`pyward serve` with the native runtime needs root");
    false
}

/// Host processes (other than this test's) whose command line holds
/// `marker`: a sandboxed program re-executes itself with a marker to be
/// found from the host.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(name);
        }
    }
    found
}

/// Text with every `0x…` address replaced (they differ from run to run).
pub fn without_addresses(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        out.push_str("0x?");
        rest = rest[at + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out + rest
}

/// Programs that end in every way a program can (exit codes, `SystemExit`
/// values, atexit handlers, threads, unflushed output, uncaught exceptions,
/// a syntax error, signals, closed stdout), and read their argv, path,
/// environment, stdin and /tmp: a warm path must end each exactly as a
/// fresh interpreter does.
pub const PROGRAM_ENDINGS: &[&str] = &[
    "pass",
    "import sys; sys.exit(3)",
    "import sys; sys.exit(-1)",
    "import sys; sys.exit('bye')",
    "import sys; sys.exit(None)",
    "raise SystemExit(7)",
    "import atexit; atexit.register(print, 'at exit'); print('main')",
    "import atexit\ndef f(): raise ValueError('in atexit')\natexit.register(f)",
    "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\nprint('main')",
    "import sys; sys.stdout.write('unflushed'); sys.stderr.write('err')",
    "raise KeyboardInterrupt",
    "def f():\n    raise KeyError('k')\nf()",
    "x = (",
    "import os; os.kill(os.getpid(), 11)",
    "import sys; print(sys.argv, repr(sys.path[0]), __name__, __file__ if '__file__' in dir() else None)",
    "import sys; sys.stdout.close(); print('x')",
    "import os; print(sorted(os.environ.items()))",
    "import sys; print(sys.stdin.read())",
    "print(open('/tmp/f', 'w').write('kept'), open('/tmp/f').read())",
];

/// What must be the same for one program on a cold and a warm path:
/// verdict, exit code, signal, stdout, and stderr up to memory addresses.
pub fn ending(o: &Outcome) -> impl PartialEq + std::fmt::Debug {
    (
        o.verdict,
        o.exit_code,
        o.signal,
        o.stdout.bytes.clone(),
        without_addresses(&stderr(o)),
    )
}

/// Runs every program of [`PROGRAM_ENDINGS`] (with some stdin) on `cold`
/// and on `warm` and asserts that each ends the same way on both.
pub fn assert_programs_end_alike(cold: &dyn Runtime, warm: &dyn Runtime, policy: &SandboxPolicy) {
    for code in PROGRAM_ENDINGS {
        let mut submission = Submission::code(*code);
        submission.stdin = b"the program's stdin".to_vec();
        let a = cold.run(policy, &submission).unwrap();
        let b = warm.run(policy, &submission).unwrap();
        assert_eq!(
            ending(&a),
            ending(&b),
            "{code}\ncold: {}\nwarm: {}",
            describe(&a),
            describe(&b)
        );
    }
}
