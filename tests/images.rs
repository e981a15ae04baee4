//! Multi-arch images end to end: build the shipped recipes (once per test
//! process; the recipe's file lock and the content cache make every other
//! process a cache hit), then check the hardening, that python3 runs on
//! each architecture, the Docker platform, the OCI layout and the cache.
//!
//! Needs root, Docker, mmdebstrap, qemu-user via binfmt_misc and skopeo;
//! `images/build-for-tests.sh` installs the tools and builds ahead of time.
//! Under CI=true a missing one fails the test; elsewhere it is SKIPPED loudly.

use pyward::{Arch, BuildOptions, BuildReport, BuiltArch, ImageCache, Recipe, ResolutionSource};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;

const BASE: &str = "python3.11-bookworm";
const SCI: &str = "python3.11-bookworm-sci";

fn cache_dir() -> PathBuf {
    std::env::var_os("PYWARD_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| pyward::DEFAULT_CACHE_DIR.into())
}

fn recipe(name: &str) -> Recipe {
    Recipe::resolve(name, &Path::new(env!("CARGO_MANIFEST_DIR")).join("images")).unwrap()
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Why this machine cannot run the image tests, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the image tests need root (mmdebstrap --mode=root)".into());
    }
    for (tool, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("skopeo", "skopeo"),
        ("docker", "docker.io"),
    ] {
        if !ok(Command::new(tool).arg("--version")) {
            return Some(format!("{tool} is missing: apt-get install -y {package}"));
        }
    }
    if !std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
        .is_ok_and(|s| s.starts_with("enabled"))
    {
        return Some("no qemu-aarch64 binfmt_misc handler: run images/build-for-tests.sh".into());
    }
    if !ok(Command::new("docker").arg("info")) {
        return Some("the Docker daemon is not reachable".into());
    }
    None
}

fn ready() -> bool {
    static READY: OnceLock<Option<String>> = OnceLock::new();
    match READY.get_or_init(missing_prerequisite) {
        None => true,
        Some(why) => {
            common::missing(&format!("image tests: {why}"));
            false
        }
    }
}

fn build(name: &str, archs: &[Arch]) -> BuildReport {
    let mut opts = BuildOptions::new(ImageCache::new(cache_dir()));
    opts.archs = archs.to_vec();
    pyward::build_image(&recipe(name), &opts).unwrap_or_else(|e| panic!("building {name}: {e}"))
}

/// The base image for both arches, built or reused once per process.
fn base() -> &'static BuildReport {
    static BASE_BUILD: OnceLock<BuildReport> = OnceLock::new();
    BASE_BUILD.get_or_init(|| build(BASE, &Arch::ALL))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn docker_python(platform: &str, image: &str, code: &str) -> String {
    output(Command::new("docker").args([
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "--platform",
        platform,
        image,
        "python3",
        "-c",
        code,
    ]))
}

fn setid_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o6000 != 0 {
            found.push(entry.path());
        }
        if meta.is_dir() {
            setid_files(&entry.path(), found);
        }
    }
}

#[test]
fn rootfs_of_each_arch_is_hardened() {
    if !ready() {
        return;
    }
    for a in &base().archs {
        let root = &a.rootfs;
        let mut setid = Vec::new();
        setid_files(root, &mut setid);
        assert!(
            setid.is_empty(),
            "{}: setuid/setgid files: {setid:?}",
            a.built.arch
        );
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("sandbox:x:65534:65534:")),
            "{passwd}"
        );
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(group.lines().any(|l| l == "sandbox:x:65534:"), "{group}");
        for gone in [
            "usr/bin/dpkg",
            "usr/bin/apt-get",
            "var/lib/dpkg",
            "etc/apt",
            "usr/bin/gcc",
        ] {
            assert!(
                !root.join(gone).exists(),
                "{}: {gone} is still there",
                a.built.arch
            );
        }
        assert!(root.join("usr/bin/python3").exists());
        assert!(
            a.built
                .packages
                .iter()
                .any(|p| p.starts_with("python3.11=")),
            "{:?}",
            a.built.packages
        );
    }
}

#[test]
fn amd64_python_runs_from_the_rootfs_and_in_docker_as_sandbox() {
    if !ready() {
        return;
    }
    let amd64 = base()
        .archs
        .iter()
        .find(|a| a.built.arch == Arch::Amd64)
        .unwrap();
    let code = "import platform; print(platform.machine())";
    let chrooted =
        output(
            Command::new("chroot")
                .arg(&amd64.rootfs)
                .args(["/usr/bin/python3", "-c", code]),
        );
    assert_eq!(chrooted, "x86_64");
    let who = docker_python(
        "linux/amd64",
        &format!("pyward/{BASE}:amd64"),
        "import os, platform, pwd; print(platform.machine(), os.getuid(), pwd.getpwuid(os.getuid()).pw_name)",
    );
    assert_eq!(who, "x86_64 65534 sandbox");
}

#[test]
fn arm64_image_has_the_arm64_platform_and_runs_aarch64_python() {
    if !ready() {
        return;
    }
    let arm64 = base()
        .archs
        .iter()
        .find(|a| a.built.arch == Arch::Arm64)
        .unwrap();
    let tag = format!("pyward/{BASE}:arm64");
    let arch = output(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &tag,
    ]));
    assert_eq!(arch, "arm64");
    let hash_label = output(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"dev.pyward.recipe-hash\"}}",
        &tag,
    ]));
    assert_eq!(
        hash_label,
        pyward::content_key(&recipe(BASE), Arch::Arm64, &arm64.built.packages)
    );
    assert_eq!(hash_label, arm64.built.key);
    // The same config bytes as the OCI layout, so Docker's image id is their digest.
    let id = output(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", &tag]));
    assert_eq!(id, arm64.built.config_digest);
    let machine = docker_python(
        "linux/arm64",
        &tag,
        "import platform; print(platform.machine())",
    );
    assert_eq!(machine, "aarch64");
}

#[test]
fn skopeo_reads_the_multi_arch_oci_layout() {
    if !ready() {
        return;
    }
    let layout = format!("oci:{}", base().oci_dir.display());
    let raw = output(Command::new("skopeo").args(["inspect", "--raw", &layout]));
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let mut archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests in {raw}"))
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"], "{raw}");
    let config = output(Command::new("skopeo").args([
        "--override-arch",
        "arm64",
        "inspect",
        "--config",
        &layout,
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["config"]["User"], "65534:65534");
    assert!(config["config"]["Labels"]["org.opencontainers.image.created"].is_string());
}

#[test]
fn second_build_is_a_cache_hit_and_never_runs_mmdebstrap() {
    if !ready() {
        return;
    }
    let first = base();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let mut opts = BuildOptions::new(ImageCache::new(cache_dir()));
    // Any run of mmdebstrap, resolution or build, would leave a line in `log`.
    opts.mmdebstrap = fake_mmdebstrap(dir.path(), &log, None);
    let start = std::time::Instant::now();
    let again = pyward::build_image(&recipe(BASE), &opts).unwrap();
    assert!(
        !log.exists(),
        "mmdebstrap ran: {:?}",
        std::fs::read_to_string(&log)
    );
    assert!(again.archs.iter().all(|a| a.cache_hit), "{again:?}");
    assert!(
        again
            .archs
            .iter()
            .all(|a| a.resolution == ResolutionSource::Cached),
        "{again:?}"
    );
    for (a, b) in first.archs.iter().zip(&again.archs) {
        assert_eq!(a.built, b.built);
    }
    assert!(
        start.elapsed().as_secs() < 30,
        "a cache hit took {:?}",
        start.elapsed()
    );
}

/// A script standing in for mmdebstrap: appends its arguments to `log`;
/// with `--simulate` prints `simulate` (if given) the way mmdebstrap does
/// (on stderr) and succeeds; anything else fails.
fn fake_mmdebstrap(dir: &Path, log: &Path, simulate: Option<&Path>) -> PathBuf {
    let script = dir.join("mmdebstrap");
    let print = simulate.map_or(String::from("exit 1"), |p| {
        format!("cat '{}' >&2; exit 0", p.display())
    });
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \" $* \" in *\" --simulate \"*) {print};; esac\nexit 1\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn refresh_resolves_again_and_a_changed_version_means_a_rebuild() {
    // Runs without Docker, qemu or a mirror: a fake mmdebstrap, a seeded cache.
    if !nix::unistd::geteuid().is_root() {
        common::missing("refresh test: building needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mmdebstrap-simulate-bookworm-python3-arm64.txt");
    let sample = std::fs::read_to_string(&fixture).unwrap();
    let output = dir.path().join("simulate.txt");
    std::fs::write(&output, &sample).unwrap();
    let log = dir.path().join("calls");
    let tool = fake_mmdebstrap(dir.path(), &log, Some(&output));
    let cache_dir = dir.path().join("cache");
    let cache = ImageCache::new(&cache_dir);
    let r = recipe(BASE);
    // The host arch, so that the build attempt needs no qemu.
    let arch = Arch::host();

    // A finished build of the fixture's package set is in the cache.
    let packages = pyward::parse_simulate(&sample);
    let key = pyward::content_key(&r, arch, &packages);
    std::fs::create_dir_all(cache.rootfs_dir(BASE, arch).join("usr")).unwrap();
    let blobs = cache.blob_dir(BASE, arch);
    std::fs::create_dir_all(&blobs).unwrap();
    for f in ["layer.tar.gz", "config.json", "manifest.json"] {
        std::fs::write(blobs.join(f), f).unwrap();
    }
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    cache
        .store_meta(&BuiltArch {
            recipe: BASE.into(),
            arch,
            key: key.clone(),
            layer_digest: digest('a'),
            layer_size: 12,
            diff_id: digest('b'),
            config_digest: digest('c'),
            manifest_digest: digest('d'),
            manifest_size: 13,
            rootfs_bytes: 0,
            packages: packages.clone(),
            resolved: packages,
            created: "2026-01-01T00:00:00Z".into(),
            build_secs: 0.0,
        })
        .unwrap();

    let pyward_build = |refresh: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyward"));
        cmd.args([
            "image",
            "build",
            BASE,
            "--no-docker",
            "--arch",
            arch.as_str(),
        ])
        .arg("--cache-dir")
        .arg(&cache_dir)
        .arg("--images-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images"))
        .arg("--mmdebstrap")
        .arg(&tool);
        if refresh {
            cmd.arg("--refresh");
        }
        cmd.output().unwrap()
    };

    // No resolution stored yet: it runs once, and the seeded build is a hit.
    let out = pyward_build(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("cached (package versions just resolved)"),
        "{stdout}"
    );
    let c = calls(&log);
    assert_eq!(c.len(), 1, "{c:?}");
    for arg in [
        "--simulate",
        &format!("--architectures={arch}"),
        "--variant=essential",
        "--include=python3,netbase,libnss-myhostname",
    ] {
        assert!(c[0].split(' ').any(|a| a == arg), "{arg} missing: {c:?}");
    }

    // The mirror moves on: python3.11 gets a new version.
    let old = "Inst python3.11 (3.11.2-6+deb12u8 ";
    assert!(sample.contains(old), "the fixture changed");
    std::fs::write(
        &output,
        sample.replace(old, "Inst python3.11 (3.11.2-6+deb12u9 "),
    )
    .unwrap();

    // Within the TTL nothing asks the mirror: still the old key, still a hit.
    let out = pyward_build(false);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("package versions resolved earlier"));
    assert_eq!(calls(&log).len(), 1, "{:?}", calls(&log));

    // --refresh resolves again; the new version is a new key, so a build is attempted
    // (the fake fails it; the seeded build stays in the cache).
    let out = pyward_build(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!("mmdebstrap for {arch} failed")),
        "{stderr}"
    );
    let c = calls(&log);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(c[1].contains("--simulate"), "{c:?}");
    assert!(
        c[2].contains("--format=directory") && !c[2].contains("--simulate"),
        "{c:?}"
    );
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache_dir.join(format!("resolved/{BASE}/{arch}.json"))).unwrap(),
    )
    .unwrap();
    assert!(
        stored["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "python3.11=3.11.2-6+deb12u9"),
        "{stored}"
    );
    assert_eq!(cache.load_meta(BASE, arch).unwrap().unwrap().key, key);
}

#[test]
fn numpy_imports_in_the_sci_image() {
    if !ready() {
        return;
    }
    build(SCI, &[Arch::Amd64]);
    let out = docker_python(
        "linux/amd64",
        &format!("pyward/{SCI}:amd64"),
        "import numpy; print(int(numpy.arange(5).sum()))",
    );
    assert_eq!(out, "10");
}

#[test]
fn cli_lists_cached_images_with_their_docker_tags() {
    if !ready() {
        return;
    }
    base();
    let cache = cache_dir();
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_pyward"))
            .args(["image", "ls", "--cache-dir"])
            .arg(&cache),
    );
    for arch in ["amd64", "arm64"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(BASE) && l.split_whitespace().nth(1) == Some(arch))
            .unwrap_or_else(|| panic!("no {arch} row in:\n{out}"));
        assert!(line.ends_with(&format!("pyward/{BASE}:{arch}")), "{line}");
    }
}

#[test]
fn cli_names_the_missing_tool_and_the_bad_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args(["image", "build", "no-such-recipe", "--images-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image recipe \"no-such-recipe\""));
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args([
            "image",
            "build",
            BASE,
            "--no-docker",
            "--mmdebstrap",
            "/nonexistent/mmdebstrap",
            "--cache-dir",
        ])
        .arg(dir.path())
        .arg("--images-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("apt-get install -y mmdebstrap"), "{stderr}");
}

#[test]
fn unreachable_docker_is_named_and_the_build_is_kept() {
    if !ready() {
        return;
    }
    base();
    let out = Command::new(env!("CARGO_BIN_EXE_pyward"))
        .args(["image", "build", BASE, "--cache-dir"])
        .arg(cache_dir())
        .arg("--images-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker daemon"),
        "{stderr}"
    );
    assert!(
        stderr.contains("OCI layout") && stderr.contains("--no-docker"),
        "{stderr}"
    );
}

#[test]
fn the_native_runtime_runs_an_images_interpreter() {
    use pyward::{NativeConfig, NativeRuntime, Runtime, SandboxPolicy, Submission, Verdict};
    if !ready() {
        return;
    }
    let report = build(SCI, &[Arch::Amd64]);
    let rootfs = report.archs[0].rootfs.clone();
    let runtime = NativeRuntime::new(NativeConfig {
        rootfs: Some(rootfs),
        ..NativeConfig::default()
    })
    .unwrap();
    let policy = SandboxPolicy::builtin("strict").unwrap();
    // numpy is in the image, not on the host; its BLAS is found through the image's /etc.
    let code = "import numpy, os, pwd\nprint(int(numpy.arange(5).sum()), pwd.getpwuid(os.getuid()).pw_name, os.path.exists('/usr/bin/gcc'))";
    let outcome = runtime.run(&policy, &Submission::code(code)).unwrap();
    let stdout = String::from_utf8_lossy(&outcome.stdout.bytes);
    assert_eq!(
        outcome.verdict,
        Verdict::Ok,
        "{}",
        String::from_utf8_lossy(&outcome.stderr.bytes)
    );
    assert_eq!(stdout, "10 sandbox False\n");
}
