//! The native warm path: calls fork from one pre-initialised zygote, and
//! nothing one call does is visible to the next.

mod common;

use common::describe;
use pyward::{Runtime, SandboxPolicy, Submission, Verdict};

fn run_ok(runtime: &dyn Runtime, policy: &str, code: &str) -> String {
    let policy = SandboxPolicy::builtin(policy).unwrap();
    let outcome = runtime.run(&policy, &Submission::code(code)).unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    String::from_utf8_lossy(&outcome.stdout.bytes).into_owned()
}

/// Call A leaves everything it can behind.
const CALL_A: &str = r#"
import os, sys, signal, json, time
open('/tmp/left-by-a', 'w').write('a')
open('/work/left-by-a', 'w').write('a')
open('/dev/shm/left-by-a', 'w').write('a')
os.environ['LEFT_BY_A'] = '1'
json.LEFT_BY_A = 1
sys.modules['left_by_a'] = json
sys.modules['base64'] = None
signal.signal(signal.SIGUSR1, lambda *a: None)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.path.append('/tmp')
builtins = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
builtins['LEFT_BY_A'] = 1
LEFT_GLOBAL = 1
import socket
listener = socket.socket(socket.AF_UNIX)
listener.bind('\0left-by-a')
listener.listen()
if os.fork() == 0:
    os.setsid()
    time.sleep(30)
    os._exit(0)
print('a done', os.getpid(), os.stat('/proc/self/ns/net').st_ino)
"#;

/// Call B looks for every trace of A.
const CALL_B: &str = r#"
import os, sys, signal, json
left = []
for p in ['/tmp/left-by-a', '/work/left-by-a', '/dev/shm/left-by-a']:
    if os.path.exists(p): left.append(p)
if 'LEFT_BY_A' in os.environ: left.append('env')
if hasattr(json, 'LEFT_BY_A'): left.append('module global')
if 'left_by_a' in sys.modules or sys.modules.get('base64', 0) is None: left.append('sys.modules')
if signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL: left.append('SIGUSR1')
if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL: left.append('SIGTERM')
if '/tmp' in sys.path: left.append('sys.path')
if 'LEFT_BY_A' in dir(__builtins__) or (isinstance(__builtins__, dict) and 'LEFT_BY_A' in __builtins__): left.append('builtins')
if 'LEFT_GLOBAL' in globals(): left.append('__main__ global')
import socket
try:
    socket.socket(socket.AF_UNIX).connect('\0left-by-a')
    left.append('abstract socket')
except OSError:
    pass
pids = [p for p in os.listdir('/proc') if p.isdigit()]
if len(pids) != 2: left.append('processes %s' % pids)
print(left, os.stat('/proc/self/ns/net').st_ino)
"#;

#[test]
fn nothing_of_one_call_is_visible_to_the_next() {
    let Some(warm) = common::warm() else { return };
    // B's probe sees every trace when A's code ran in the same process: the
    // probe can fail.
    let both = format!("{CALL_A}\n{CALL_B}");
    let seen = run_ok(&warm, "standard", &both);
    for trace in [
        "/tmp/left-by-a",
        "/work/left-by-a",
        "/dev/shm/left-by-a",
        "'env'",
        "module global",
        "sys.modules",
        "SIGUSR1",
        "SIGTERM",
        "sys.path",
        "builtins",
        "__main__ global",
        "abstract socket",
        "processes",
    ] {
        assert!(seen.contains(trace), "{trace} not detected: {seen}");
    }
    // The same zygote serves both calls. B runs until it lands in A's
    // network namespace (reused once A is gone), where A's abstract socket
    // would be if anything of A were left.
    for policy in ["strict", "standard"] {
        let a = run_ok(&warm, "standard", CALL_A);
        assert!(a.starts_with("a done"), "{a}");
        let a_netns = a.split_whitespace().last().unwrap().to_owned();
        let mut reused = false;
        for _ in 0..20 {
            let b = run_ok(&warm, policy, CALL_B);
            let (left, netns) = b.trim_end().rsplit_once(' ').unwrap();
            assert_eq!(left, "[]", "after A, under {policy}");
            if netns == a_netns {
                reused = true;
                break;
            }
        }
        assert!(reused, "no call ran in A's network namespace after it");
    }
}

#[test]
fn calls_get_fresh_randomness_and_their_own_pid_namespace() {
    let Some(warm) = common::warm() else { return };
    let code = "import os, random\nprint(os.getpid(), random.random(), os.urandom(8).hex())";
    let first = run_ok(&warm, "strict", code);
    let second = run_ok(&warm, "strict", code);
    let (a, b): (Vec<_>, Vec<_>) = (first.split(' ').collect(), second.split(' ').collect());
    assert_eq!(a[0], "2", "{first}");
    assert_eq!(b[0], "2", "{second}");
    assert_ne!(a[1], b[1], "random is seeded afresh per call");
    assert_ne!(a[2], b[2]);
}

#[test]
fn a_call_cannot_reach_the_zygote() {
    let Some(warm) = common::warm() else { return };
    // The zygote is in the parent pid namespace: invisible. pid 1 is the
    // call's stub, root of the zygote's user namespace: out of reach.
    let code = "import os, signal\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\ntry:\n    os.kill(1, signal.SIGKILL)\n    print('killed')\nexcept PermissionError:\n    print('denied')";
    assert_eq!(run_ok(&warm, "standard", code), "[1, 2]\ndenied\n");
    assert_eq!(run_ok(&warm, "strict", "print('still up')"), "still up\n");
}

#[test]
fn a_traceback_starts_at_the_programs_code() {
    let Some(warm) = common::warm() else { return };
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let outcome = warm
        .run(&policy, &Submission::code("x = 1\n1 / 0"))
        .unwrap();
    assert_eq!(outcome.verdict, Verdict::RuntimeError);
    assert_eq!(
        common::stderr(&outcome),
        "Traceback (most recent call last):\n  File \"<string>\", line 2, in <module>\nZeroDivisionError: division by zero\n"
    );
}

#[test]
fn a_dead_zygote_is_restarted() {
    let Some(warm) = common::warm() else { return };
    assert_eq!(run_ok(&warm, "strict", "print(1)"), "1\n");
    warm.kill_zygotes_for_tests();
    assert_eq!(run_ok(&warm, "strict", "print(2)"), "2\n");
}

#[test]
fn a_dead_zygote_is_replaced_before_the_next_call() {
    let Some(warm) = common::warm() else { return };
    let policy = SandboxPolicy::builtin("strict").unwrap();
    warm.prestart(&policy).unwrap();
    assert_eq!(warm.warm_ready(), 1);
    warm.kill_zygotes_for_tests();
    assert_eq!(warm.warm_ready(), 0, "the zygote was killed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while warm.warm_ready() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no zygote replaced the dead one within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(run_ok(&warm, "strict", "print(3)"), "3\n");
}

/// The warm path ends a program as interpreter shutdown does; the cold path
/// is a real interpreter's shutdown. Each program must give the same verdict,
/// exit code, signal, stdout and stderr on both.
#[test]
fn programs_end_as_in_a_fresh_interpreter() {
    let (Some(cold), Some(warm)) = (common::native(), common::warm()) else {
        return;
    };
    let policy = SandboxPolicy::builtin("strict").unwrap();
    common::assert_programs_end_alike(&cold, &warm, &policy);
}

#[test]
fn a_file_entrypoint_runs_with_its_arguments() {
    let (Some(cold), Some(warm)) = (common::native(), common::warm()) else {
        return;
    };
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let submission = Submission {
        entrypoint: pyward::Entrypoint::File("pkg/main.py".into()),
        files: vec![
            pyward::InputFile {
                path: "pkg/main.py".into(),
                contents: b"import sys, helper\nprint(sys.argv, sys.path[0], __name__, __file__, helper.X)\nprint(open('/work/data.txt').read())\n1/0".to_vec(),
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
        ..Submission::code("")
    };
    let a = cold.run(&policy, &submission).unwrap();
    let b = warm.run(&policy, &submission).unwrap();
    assert_eq!(a.verdict, Verdict::RuntimeError, "{}", describe(&a));
    assert_eq!(
        (a.verdict, &a.stdout.bytes, common::stderr(&a)),
        (b.verdict, &b.stdout.bytes, common::stderr(&b)),
        "cold: {}\nwarm: {}",
        describe(&a),
        describe(&b)
    );
}

#[test]
fn a_zygote_outlives_the_thread_that_started_it() {
    // The zygote's pid 1 dies with its parent, and a parent-death signal
    // follows the *thread* that created a process: zygotes must not be tied
    // to a caller's thread, which a server's pool may retire at any time.
    let Some(warm) = common::warm() else { return };
    let warm = std::sync::Arc::new(warm);
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let starter = {
        let (warm, policy) = (warm.clone(), policy.clone());
        std::thread::spawn(move || {
            warm.prestart(&policy).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let code = "import time; time.sleep(1); print('survived')";
    let outcome = warm.run(&policy, &Submission::code(code)).unwrap();
    starter.join().unwrap();
    assert_eq!(outcome.verdict, Verdict::Ok, "{}", describe(&outcome));
    assert_eq!(String::from_utf8_lossy(&outcome.stdout.bytes), "survived\n");
}

#[test]
fn parallel_calls_each_get_their_own_sandbox() {
    let Some(warm) = common::warm() else { return };
    let warm = std::sync::Arc::new(warm);
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let warm = warm.clone();
            std::thread::spawn(move || {
                for call in 0..8 {
                    let token = format!("{caller}-{call}");
                    let code = format!(
                        "import os\nassert os.listdir('/tmp') == [] and os.listdir('.') == [], (os.listdir('/tmp'), os.listdir('.'))\nopen('/tmp/t', 'w').write('{token}')\nopen('t', 'w').write('{token}')\nprint(open('/tmp/t').read(), open('t').read())"
                    );
                    assert_eq!(run_ok(&*warm, "strict", &code), format!("{token} {token}\n"));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
}

#[test]
fn the_zygote_preloads_the_configured_modules() {
    let Some(native) = common::native() else {
        return;
    };
    let modules = vec!["decimal".to_owned(), "fractions".to_owned()];
    let warm = pyward::WarmRuntime::new(
        native,
        pyward::WarmConfig {
            modules,
            ..Default::default()
        },
    );
    let code = "import sys\nprint('decimal' in sys.modules, 'fractions' in sys.modules)";
    assert_eq!(run_ok(&warm, "strict", code), "True True\n");
    // A fresh interpreter has neither: the check above can fail.
    let cold = common::native().unwrap();
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let outcome = cold.run(&policy, &Submission::code(code)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout.bytes),
        "False False\n"
    );
}

#[test]
fn a_zygote_that_cannot_start_says_why() {
    let Some(native) = common::native() else {
        return;
    };
    let modules = vec!["no_such_module_pyward".to_owned()];
    let warm = pyward::WarmRuntime::new(
        native,
        pyward::WarmConfig {
            modules,
            ..Default::default()
        },
    );
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let err = warm.run(&policy, &Submission::code("pass")).unwrap_err();
    assert!(
        err.to_string()
            .contains("No module named 'no_such_module_pyward'"),
        "{err}"
    );
}
