//! Docker-only behaviour: the never-pull rule, orphan removal, and that no
//! container outlives its run.

mod common;

use pyward::{
    DockerConfig, DockerError, DockerRuntime, Runtime, SandboxPolicy, Submission, Verdict,
};
use std::process::Command;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn exists(id: &str) -> bool {
    Command::new("docker")
        .args(["container", "inspect", id])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn orphans_of_dead_pyward_processes_are_removed_and_live_ones_kept() {
    let Some(runtime) = common::docker() else {
        return;
    };
    let image = &pyward::DockerConfig::default().image;
    // An owner label that names no live process (pid 1 never started at time 0).
    let orphan = create_orphan(image, "orphan-test");
    // A container a live pyward (this test) still owns: left alone.
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let starttime = me[me.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19)
        .unwrap()
        .to_owned();
    let owner = format!("dev.pyward.owner={}-{starttime}", std::process::id());
    let live = create_labelled(image, &[&owner]);
    // Another test process's DockerRuntime::new() may remove the orphan first:
    // what counts is that it is gone, not who removed it.
    runtime.remove_orphans().unwrap();
    let orphan_gone = !exists(&orphan);
    let live_kept = exists(&live);
    docker(&["rm", "-f", &live]);
    assert!(orphan_gone, "the orphan is still there");
    assert!(live_kept, "a live pyward's container was removed");
}

/// A container labelled as left by a pyward that is gone (pid 1 never
/// started at time 0): an orphan for every sweep.
fn create_orphan(image: &str, job: &str) -> String {
    create_labelled(
        image,
        &["dev.pyward.owner=1-0", &format!("dev.pyward.job={job}")],
    )
}

/// A stopped container of the Docker runtime's, with these labels besides.
fn create_labelled(image: &str, labels: &[&str]) -> String {
    let mut args = vec![
        "create",
        "--pull",
        "never",
        "--label",
        "dev.pyward.runtime=docker",
    ];
    for label in labels {
        args.extend(["--label", label]);
    }
    args.extend([image, "true"]);
    docker(&args)
}

/// Two pyward processes starting at once both sweep the same orphan: the
/// one that comes second finds it gone (404) or being removed (409), and
/// neither sweep fails.
#[test]
fn two_sweeps_of_the_same_orphan_at_once_both_succeed() {
    let Some(first) = common::docker() else {
        return;
    };
    let second = DockerRuntime::new(DockerConfig::default()).unwrap();
    let image = &DockerConfig::default().image;
    for round in 0..20 {
        let orphan = create_orphan(image, "orphan-race-test");
        let both = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let both = &both;
            let sweep = move |runtime: &DockerRuntime| {
                both.wait();
                runtime.remove_orphans()
            };
            let (first, second) = (&first, &second);
            let a = s.spawn(move || sweep(first));
            let b = s.spawn(move || sweep(second));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(a.is_ok() && b.is_ok(), "round {round}: {a:?} / {b:?}");
        assert!(!exists(&orphan), "round {round}: the orphan is still there");
    }
}

/// What the program can do to pid 1 (pyward's bootstrap), under a policy
/// that allows fork and kill: read nothing of it, not kill it (SIGINT and
/// SIGTERM come back to the program, forwarded), and leave it an orphan,
/// which it reaps.
const PID_1_PROBE: &str = r#"
import os, signal, time
def probe(path):
    try:
        with open(path, "rb") as f: f.read(1)
        return "READABLE"
    except PermissionError: return "denied"
    except OSError as e: return "opened " + e.strerror
print("/proc/1/mem", probe("/proc/1/mem"))
print("/proc/1/environ", probe("/proc/1/environ"))
got = []
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda s, f: got.append(s))
for s in (signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGHUP, signal.SIGUSR1,
          signal.SIGQUIT, signal.SIGINT, signal.SIGTERM):
    os.kill(1, s)
for _ in range(1000):
    if len(got) == 2: break
    time.sleep(0.01)
print("pid 1 alive", os.path.exists("/proc/1"), "forwarded", sorted(got))
r, w = os.pipe()
child = os.fork()
if child == 0:
    orphan = os.fork()
    if orphan == 0:
        time.sleep(0.2)  # ends once its parent is gone: pid 1's to reap
        os._exit(0)
    os.write(w, str(orphan).encode())
    os._exit(0)
os.close(w)
orphan = int(os.read(r, 16))
os.waitpid(child, 0)
def state(pid):
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
for _ in range(1000):  # up to 10 s (qemu-user is slow): until pid 1 reaped it
    if state(orphan) is None: break
    time.sleep(0.01)
print("orphan", "reaped" if state(orphan) is None else "left " + state(orphan))
"#;

/// pid 1 of a pyward container is out of the program's reach whatever the
/// filters: cold and pooled, natively and under qemu-user (where no guest
/// seccomp filter applies).
#[test]
fn pid_1_is_out_of_the_programs_reach_cold_and_pooled_on_both_architectures() {
    let runtimes: Vec<(String, Box<dyn Runtime>)> = [
        common::docker().map(|r| Box::new(r) as Box<dyn Runtime>),
        common::docker_warm(1).map(|r| Box::new(r) as Box<dyn Runtime>),
        common::foreign_docker().map(|r| Box::new(r) as Box<dyn Runtime>),
        common::foreign_docker_warm(1).map(|r| Box::new(r) as Box<dyn Runtime>),
    ]
    .into_iter()
    .zip(["host", "host", "foreign", "foreign"])
    .filter_map(|(runtime, arch)| runtime.map(|r| (format!("{} ({arch})", r.name()), r)))
    .collect();
    let policy = SandboxPolicy::builtin("standard").unwrap();
    for (name, runtime) in &runtimes {
        let outcome = runtime
            .run(&policy, &Submission::code(PID_1_PROBE))
            .unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Ok,
            "{name}: {}",
            common::describe(&outcome)
        );
        assert_eq!(
            String::from_utf8_lossy(&outcome.stdout.bytes),
            "/proc/1/mem denied\n/proc/1/environ denied\npid 1 alive True forwarded [2, 15]\norphan reaped\n",
            "{name}: {}",
            common::describe(&outcome)
        );
    }
}

/// The one mount of a host path left, and why: Docker binds the container's
/// `/etc/hostname` from `/var/lib/docker/containers/ID/hostname`, and skips
/// that only for a user mount at exactly that path; its init layer makes
/// the path a file, so the mount would have to be a file too: a host
/// file's bind (a host path again), or a volume's subpath, which needs API
/// 1.45 (this daemon, Docker 20.10, speaks 1.41). `/etc/hosts` and
/// `/etc/resolv.conf` are not bound at all (the container is created with
/// its network disabled): the init layer's empty files.
const DOCKERS_HOSTNAME_FILE: &str = "/etc/hostname";

/// The lines of `mountinfo` that show a host path: a bind of a host file (a
/// host block device as source), `/var/lib/docker`, or a container id (64
/// hex digits) in any field; but Docker's hostname file (see
/// `DOCKERS_HOSTNAME_FILE`).
fn host_paths(mountinfo: &str) -> Vec<&str> {
    let id = |field: &str| {
        field.as_bytes().windows(64).any(|w| {
            w.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
    };
    mountinfo
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let source = line.split(" - ").nth(1).and_then(|t| t.split(' ').nth(1));
            let leaks = source.is_some_and(|s| s.starts_with("/dev/"))
                || line.contains("/var/lib/docker")
                || fields.iter().any(|f| id(f));
            leaks && fields.get(4) != Some(&DOCKERS_HOSTNAME_FILE)
        })
        .collect()
}

/// A pyward container's /proc/self/mountinfo shows no host path (no
/// docker-init bound from the host, no `/docker/ID` cgroup roots), cold
/// and pooled, but Docker's hostname file (`DOCKERS_HOSTNAME_FILE`); the
/// hostname stays pyward's.
#[test]
fn mountinfo_shows_no_host_path_but_dockers_hostname_file() {
    let (Some(cold), Some(warm)) = (common::docker(), common::docker_warm(1)) else {
        return;
    };
    let code = "import socket\n\
                print(socket.gethostname(), repr(open('/etc/hostname').read()))\n\
                print(open('/proc/self/mountinfo').read(), end='')";
    let policy = SandboxPolicy::builtin("strict").unwrap();
    for runtime in [&cold as &dyn Runtime, &warm] {
        let outcome = runtime.run(&policy, &Submission::code(code)).unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Ok,
            "{}",
            common::describe(&outcome)
        );
        let stdout = String::from_utf8_lossy(&outcome.stdout.bytes);
        let (names, mountinfo) = stdout.split_once('\n').unwrap();
        assert_eq!(names, "pyward 'pyward\\n'", "{}", runtime.name());
        assert!(mountinfo.lines().count() > 10, "{mountinfo}");
        assert_eq!(
            host_paths(mountinfo),
            Vec::<&str>::new(),
            "{}: host paths in\n{mountinfo}",
            runtime.name()
        );
    }
}

#[test]
fn no_container_outlives_its_run_whatever_the_verdict() {
    let Some(runtime) = common::docker() else {
        return;
    };
    let policy = SandboxPolicy::builtin("strict").unwrap();
    let owner_filter = "label=dev.pyward.runtime=docker";
    let before = docker(&["ps", "-aq", "--filter", owner_filter]);
    for (code, verdict) in [
        ("print(1)", Verdict::Ok),
        ("raise SystemExit(3)", Verdict::RuntimeError),
        ("while True: print('x' * 4096)", Verdict::OutputLimit),
    ] {
        let outcome = runtime.run(&policy, &Submission::code(code)).unwrap();
        assert_eq!(outcome.verdict, verdict, "{}", common::describe(&outcome));
    }
    // A submission refused before any container exists.
    let mut bad = Submission::code("");
    bad.entrypoint = pyward::Entrypoint::File("missing.py".into());
    assert!(runtime.run(&policy, &bad).is_err());
    let after = docker(&["ps", "-aq", "--filter", owner_filter]);
    // Other test processes may run containers concurrently; none of ours is left.
    for id in after.lines().filter(|id| !before.contains(id)) {
        let labels = docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"dev.pyward.owner\"}}",
            id,
        ]);
        assert!(
            !labels.starts_with(&format!("{}-", std::process::id())),
            "container {id} outlived its run"
        );
    }
}

#[test]
fn a_missing_image_is_never_pulled_and_says_how_to_build_it() {
    let Some(_) = common::docker() else { return };
    let runtime = DockerRuntime::new(DockerConfig {
        image: "pyward/no-such-image:never".into(),
        ..DockerConfig::default()
    })
    .unwrap();
    let err = runtime.check_image().unwrap_err();
    assert!(matches!(err, DockerError::ImageMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("never pulls: run `pyward image build no-such-image --arch never`"),
        "{err}"
    );
    let run = runtime.run(
        &SandboxPolicy::builtin("strict").unwrap(),
        &Submission::code("pass"),
    );
    assert!(run.is_err(), "ran without the image");
    assert!(!docker(&["images", "-q", "pyward/no-such-image"]).contains(char::is_alphanumeric));
}

#[test]
fn an_unreachable_daemon_names_the_socket() {
    let err = DockerRuntime::new(DockerConfig {
        socket: "/nonexistent/docker.sock".into(),
        ..DockerConfig::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/docker.sock"),
        "{err}"
    );
}
