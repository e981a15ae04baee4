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
    let orphan = docker(&[
        "create",
        "--pull",
        "never",
        "--label",
        "dev.pyward.runtime=docker",
        "--label",
        "dev.pyward.owner=1-0",
        "--label",
        "dev.pyward.job=orphan-test",
        image,
        "true",
    ]);
    // A container a live pyward (this test) still owns: left alone.
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let starttime = me[me.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19)
        .unwrap()
        .to_owned();
    let owner = format!("dev.pyward.owner={}-{starttime}", std::process::id());
    let live = docker(&[
        "create",
        "--pull",
        "never",
        "--label",
        "dev.pyward.runtime=docker",
        "--label",
        &owner,
        image,
        "true",
    ]);
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
fn create_orphan(image: &str) -> String {
    docker(&[
        "create",
        "--pull",
        "never",
        "--label",
        "dev.pyward.runtime=docker",
        "--label",
        "dev.pyward.owner=1-0",
        "--label",
        "dev.pyward.job=orphan-race-test",
        image,
        "true",
    ])
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
        let orphan = create_orphan(image);
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
