//! From a recipe to a hardened rootfs directory: check the host tools, run
//! mmdebstrap for one architecture, record the installed packages, then
//! strip what untrusted code must not find (setuid bits, package managers,
//! compilers) and add the `sandbox` user.

use super::error::ImageError;
use super::recipe::{Hardening, Recipe};
use crate::Arch;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// uid and gid of the `sandbox` user (the kernel's overflow id, `nobody` on Debian).
pub const SANDBOX_ID: u32 = 65534;

/// apt, dpkg and what they leave behind; the rootfs never installs again.
const PACKAGE_MANAGER: &[&str] = &[
    "/usr/bin/apt*",
    "/usr/bin/dpkg*",
    "/usr/bin/debconf*",
    "/usr/sbin/dpkg-*",
    "/usr/lib/apt",
    "/usr/lib/dpkg",
    "/usr/lib/*-linux-gnu/libapt-*",
    "/usr/share/dpkg",
    "/usr/share/debconf",
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/var/cache/apt",
    "/var/cache/debconf",
    "/var/log/*",
    "/etc/apt",
    "/etc/dpkg",
    "/etc/cron.daily",
    "/etc/logrotate.d",
    "/etc/systemd",
    "/etc/init.d",
    "/etc/update-motd.d",
];

/// Compilers, assemblers and linkers, should a package have pulled one in.
const COMPILERS: &[&str] = &[
    "/usr/bin/cc",
    "/usr/bin/c++",
    "/usr/bin/gcc*",
    "/usr/bin/g++*",
    "/usr/bin/cpp*",
    "/usr/bin/clang*",
    "/usr/bin/tcc",
    "/usr/bin/as",
    "/usr/bin/ld",
    "/usr/bin/ld.*",
    "/usr/bin/*-linux-gnu-*",
    "/usr/lib/gcc",
    "/usr/libexec/gcc",
];

/// The host tools a build runs, with the package that ships each.
pub fn check_tools(mmdebstrap: &Path, archs: &[Arch]) -> Result<(), ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    if which(mmdebstrap).is_none() {
        return Err(ImageError::MissingTool {
            tool: "mmdebstrap",
            path: mmdebstrap.to_path_buf(),
            package: "mmdebstrap",
        });
    }
    if which(Path::new("dpkg-query")).is_none() {
        return Err(ImageError::MissingTool {
            tool: "dpkg-query",
            path: "dpkg-query".into(),
            package: "dpkg",
        });
    }
    for &arch in archs.iter().filter(|&&a| a != Arch::host()) {
        let kernel = arch.kernel_name();
        let handler = PathBuf::from(format!("/proc/sys/fs/binfmt_misc/qemu-{kernel}"));
        let enabled = fs::read_to_string(&handler).is_ok_and(|s| s.starts_with("enabled"));
        if !enabled {
            return Err(ImageError::NoEmulation {
                arch,
                kernel,
                handler,
            });
        }
    }
    Ok(())
}

/// `tool` if it is a path to a file, else the first match on `$PATH`.
pub fn which(tool: &Path) -> Option<PathBuf> {
    if tool.components().count() > 1 {
        return tool.is_file().then(|| tool.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The mmdebstrap options that decide which packages get installed; the
/// build and the resolution (`resolve`) pass the same ones.
pub fn selection_args(recipe: &Recipe, arch: Arch) -> Vec<String> {
    vec![
        "--mode=root".into(),
        format!("--variant={}", recipe.variant.as_str()),
        format!("--architectures={}", arch.as_str()),
        format!("--include={}", recipe.packages.join(",")),
        // Docs and translations are dead weight in a sandbox.
        "--dpkgopt=path-exclude=/usr/share/man/*".into(),
        "--dpkgopt=path-exclude=/usr/share/doc/*".into(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".into(),
    ]
}

/// Runs mmdebstrap for `arch` into the empty or missing directory `target`;
/// its output goes to `log`.
pub fn mmdebstrap(
    tool: &Path,
    recipe: &Recipe,
    arch: Arch,
    target: &Path,
    log: &Path,
) -> Result<(), ImageError> {
    let log_file = fs::File::create(log).map_err(ImageError::io("create the build log", log))?;
    let log_err = log_file
        .try_clone()
        .map_err(ImageError::io("create the build log", log))?;
    let mut cmd = Command::new(tool);
    cmd.args(selection_args(recipe, arch))
        .arg("--format=directory")
        .arg(&recipe.suite)
        .arg(target)
        .arg(&recipe.mirror)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let status = cmd.status().map_err(|source| ImageError::Spawn {
        command: tool.display().to_string(),
        source,
    })?;
    if !status.success() {
        return Err(ImageError::Mmdebstrap {
            arch,
            status,
            log: log.to_path_buf(),
        });
    }
    Ok(())
}

/// `package=version` for every package installed in `root` (read before dpkg goes).
pub fn installed_packages(root: &Path) -> Result<Vec<String>, ImageError> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package}=${Version}\\n"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ImageError::Spawn {
            command: "dpkg-query".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::DpkgQuery {
            root: root.to_path_buf(),
            status: out.status,
        });
    }
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    list.sort();
    Ok(list)
}

/// The image's /etc/hosts: loopback names, and `pyward`, the hostname every
/// runtime gives a sandbox.
const HOSTS: &str = "127.0.0.1 localhost pyward\n::1 localhost ip6-localhost ip6-loopback\n";

/// Applies the recipe's hardening to `root`, in an order where each step
/// cannot be undone by a later one: delete, then fix users, then clear bits.
pub fn harden(root: &Path, h: &Hardening, packages: &[String]) -> Result<(), ImageError> {
    // The package list survives dpkg's removal, for audits.
    let list = root.join("usr/share/pyward/packages.txt");
    fs::create_dir_all(list.parent().unwrap_or(root))
        .map_err(ImageError::io("write packages.txt", &list))?;
    fs::write(&list, packages.join("\n") + "\n")
        .map_err(ImageError::io("write packages.txt", &list))?;
    // Runtimes mount their own /dev; device nodes in the image are never needed.
    clear_dir(&root.join("dev"))?;
    // localhost and the sandbox's hostname resolve without a network: a
    // container without networking gets no /etc/hosts from Docker.
    let hosts = root.join("etc/hosts");
    fs::write(&hosts, HOSTS).map_err(ImageError::io("write /etc/hosts", &hosts))?;
    if h.remove_package_manager {
        remove_patterns(root, PACKAGE_MANAGER)?;
    }
    if h.remove_compilers {
        remove_patterns(root, COMPILERS)?;
    }
    let extra: Vec<&str> = h.remove.iter().map(String::as_str).collect();
    remove_patterns(root, &extra)?;
    if h.sandbox_user {
        add_sandbox_user(root)?;
    }
    if h.strip_setid {
        strip_setid(root)?;
    }
    Ok(())
}

fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        remove_any(&entry.path())?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<(), ImageError> {
    let meta = fs::symlink_metadata(path).map_err(ImageError::io("remove from rootfs", path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(ImageError::io("remove from rootfs", path))
}

/// Deletes every path under `root` matching one of `patterns` (absolute
/// paths; `*` matches within one component). Symlinks are never followed
/// out of the rootfs: matching works on names, not on resolved paths.
fn remove_patterns(root: &Path, patterns: &[&str]) -> Result<(), ImageError> {
    for pattern in patterns {
        for path in expand(root, pattern.trim_start_matches('/')) {
            remove_any(&path)?;
        }
    }
    Ok(())
}

fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![root.to_path_buf()];
    for comp in pattern.split('/') {
        let mut next = Vec::new();
        for dir in found {
            // Only descend into real directories, never through symlinks.
            if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if !comp.contains('*') {
                let p = dir.join(comp);
                if fs::symlink_metadata(&p).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_str().is_some_and(|n| glob_match(comp, n)) {
                    next.push(e.path());
                }
            }
        }
        found = next;
    }
    found
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob_match(tail, &rest[i..]))
        }
    }
}

/// uid/gid 65534 become `sandbox` (replacing `nobody`/`nogroup`).
fn add_sandbox_user(root: &Path) -> Result<(), ImageError> {
    let id = SANDBOX_ID.to_string();
    let edits: [(&str, usize, String); 4] = [
        (
            "etc/passwd",
            2,
            format!("sandbox:x:{id}:{id}:pyward sandbox:/nonexistent:/usr/sbin/nologin"),
        ),
        ("etc/group", 2, format!("sandbox:x:{id}:")),
        ("etc/shadow", 0, "sandbox:*:19000:0:99999:7:::".into()),
        ("etc/gshadow", 0, "sandbox:*::".into()),
    ];
    for (file, id_field, line) in edits {
        let path = root.join(file);
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let name = f.first().copied().unwrap_or("");
                // passwd/group: drop id 65534; shadow files: drop the names that had it.
                let by_id = id_field > 0 && f.get(id_field) == Some(&id.as_str());
                let by_name = matches!(name, "nobody" | "nogroup" | "sandbox");
                !(by_id || by_name)
            })
            .collect();
        lines.push(&line);
        let mode = fs::metadata(&path).map(|m| m.permissions()).ok();
        fs::write(&path, lines.join("\n") + "\n")
            .map_err(ImageError::io("add the sandbox user", &path))?;
        if let Some(mode) = mode {
            fs::set_permissions(&path, mode)
                .map_err(ImageError::io("add the sandbox user", &path))?;
        }
    }
    Ok(())
}

/// Clears setuid and setgid on every file and directory (symlinks have no mode to clear).
fn strip_setid(dir: &Path) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(ImageError::io("strip setuid/setgid bits", dir))?;
    for entry in entries {
        let entry = entry.map_err(ImageError::io("strip setuid/setgid bits", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)
            .map_err(ImageError::io("strip setuid/setgid bits", &path))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o6000 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o6000))
                .map_err(ImageError::io("strip setuid/setgid bits", &path))?;
        }
        if meta.is_dir() {
            strip_setid(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn globs_match_within_one_component() {
        assert!(glob_match("gcc*", "gcc-12"));
        assert!(glob_match("*-linux-gnu-*", "x86_64-linux-gnu-gcc"));
        assert!(glob_match("apt*", "apt"));
        assert!(!glob_match("ld.*", "ld"));
        assert!(!glob_match("cc", "gcc"));
    }

    #[test]
    fn hardening_strips_bits_tools_and_adds_the_sandbox_user() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "usr/bin",
            "etc/apt",
            "var/lib/dpkg",
            "dev",
            "var/mail",
            "outside",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "usr/bin/python3",
            "usr/bin/su",
            "usr/bin/dpkg",
            "usr/bin/gcc-12",
            "dev/null",
            "outside/keep",
            "outside/gcc",
        ] {
            fs::write(root.join(f), b"").unwrap();
        }
        fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(root.join("var/mail"), fs::Permissions::from_mode(0o2775)).unwrap();
        // A symlink out of the tree must not lead removal outside it.
        symlink(root.join("outside"), root.join("usr/lib")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/x\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();

        harden(root, &Hardening::default(), &["python3=3.11".into()]).unwrap();

        assert!(root.join("usr/bin/python3").exists());
        let hosts = fs::read_to_string(root.join("etc/hosts")).unwrap();
        assert!(hosts.starts_with("127.0.0.1 localhost pyward\n"), "{hosts}");
        for gone in [
            "usr/bin/dpkg",
            "usr/bin/gcc-12",
            "etc/apt",
            "var/lib/dpkg",
            "dev/null",
        ] {
            assert!(!root.join(gone).exists(), "{gone} survived");
        }
        assert!(root.join("outside/keep").exists() && root.join("outside/gcc").exists());
        let su = fs::metadata(root.join("usr/bin/su"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(su & 0o7777, 0o755);
        let mail = fs::metadata(root.join("var/mail"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mail & 0o7777, 0o775);
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("sandbox:x:65534:65534:") && !passwd.contains("nobody"),
            "{passwd}"
        );
        let group = fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(
            group.contains("sandbox:x:65534:") && !group.contains("nogroup"),
            "{group}"
        );
        let pkgs = fs::read_to_string(root.join("usr/share/pyward/packages.txt")).unwrap();
        assert_eq!(pkgs, "python3=3.11\n");
    }
}
