//! The one translation point from a `SandboxPolicy` to bollard's stringly
//! typed `HostConfig`. Pure: no Docker call, unit-tested field by field.

use crate::policy::{Network, SandboxPolicy};
use bollard::models::{HostConfig, HostConfigCgroupnsModeEnum, ResourcesUlimits};
use std::collections::HashMap;

/// Where the submission's files live and the program's cwd: a tmpfs.
pub const WORK_DIR: &str = "/work";

/// The `HostConfig` that enforces `policy`, with `seccomp_json` (a Docker
/// seccomp profile) as the syscall filter.
///
/// `Network::Loopback` maps to `none` too: Docker's `none` network gives the
/// container its own network namespace with only `lo` up, which is exactly
/// the loopback policy; for `Network::None` that `lo` is the one difference
/// from the native runtime, and it reaches nothing outside the container.
pub fn host_config(policy: &SandboxPolicy, seccomp_json: &str) -> HostConfig {
    let limits = &policy.limits;
    let memory = i64::try_from(limits.memory.bytes()).unwrap_or(i64::MAX);
    let tmpfs_options = format!(
        "size={},noexec,nosuid,nodev,mode=1777",
        limits.tmpfs.bytes()
    );
    let work_options = format!(
        "size={},noexec,nosuid,nodev,mode=0755,uid={},gid={}",
        limits.tmpfs.bytes(),
        policy.user.uid,
        policy.user.gid
    );
    let cpu_seconds = limits.cpu_time.as_secs_f64().ceil().max(1.0) as i64;
    HostConfig {
        network_mode: Some(
            match policy.network {
                Network::None | Network::Loopback => "none",
            }
            .to_owned(),
        ),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([
            ("/tmp".to_owned(), tmpfs_options),
            (WORK_DIR.to_owned(), work_options),
        ])),
        memory: Some(memory),
        memory_swap: Some(memory),
        pids_limit: Some(i64::from(limits.pids)),
        nano_cpus: Some((limits.cpus * 1e9).round() as i64),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec![
            "no-new-privileges".to_owned(),
            format!("seccomp={seccomp_json}"),
        ]),
        ulimits: Some(vec![
            ulimit(
                "nofile",
                i64::from(limits.open_files),
                i64::from(limits.open_files),
            ),
            ulimit(
                "fsize",
                bytes(limits.file_size.bytes()),
                bytes(limits.file_size.bytes()),
            ),
            ulimit("core", 0, 0),
            // SIGXCPU at the limit, SIGKILL a second later (a program may catch SIGXCPU).
            ulimit("cpu", cpu_seconds, cpu_seconds + 1),
        ]),
        // No docker-init: pid 1 is pyward's bootstrap, which the program
        // cannot reach (`workdir::bootstrap`). Said explicitly, so that a
        // daemon configured with `"init": true` does not add one.
        init: Some(false),
        ipc_mode: Some("private".to_owned()),
        // Its own cgroup namespace (cgroup v1 hosts default to the host's):
        // the container sees its cgroup as `/`, not `/docker/ID`, in
        // /proc/self/cgroup and in the roots of its cgroup mounts.
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        ..HostConfig::default()
    }
}

/// The `user` field of the container's Config: numeric, never a name the image must know.
pub fn user(policy: &SandboxPolicy) -> String {
    format!("{}:{}", policy.user.uid, policy.user.gid)
}

/// The `docker run` flags that give a container the same settings as
/// `config` and `user`, with the seccomp profile read from `profile_path`
/// (the CLI takes a file). Used to compare against `docker run` in `pyward bench`.
pub fn docker_run_flags(config: &HostConfig, user: &str, profile_path: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: String| {
        flags.push(format!("--{name}"));
        flags.push(value);
    };
    if let Some(network) = &config.network_mode {
        flag("network", network.clone());
    }
    let mut tmpfs: Vec<_> = config.tmpfs.iter().flatten().collect();
    tmpfs.sort();
    for (path, options) in tmpfs {
        flag("tmpfs", format!("{path}:{options}"));
    }
    if let Some(memory) = config.memory {
        flag("memory", format!("{memory}b"));
    }
    if let Some(swap) = config.memory_swap {
        flag("memory-swap", format!("{swap}b"));
    }
    if let Some(pids) = config.pids_limit {
        flag("pids-limit", pids.to_string());
    }
    if let Some(nano) = config.nano_cpus {
        flag("cpus", format!("{}", nano as f64 / 1e9));
    }
    for cap in config.cap_drop.iter().flatten() {
        flag("cap-drop", cap.clone());
    }
    for opt in config.security_opt.iter().flatten() {
        let opt = if opt.starts_with("seccomp=") {
            format!("seccomp={profile_path}")
        } else {
            opt.clone()
        };
        flag("security-opt", opt);
    }
    for u in config.ulimits.iter().flatten() {
        let (name, soft, hard) = (
            u.name.clone().unwrap_or_default(),
            u.soft.unwrap_or(0),
            u.hard.unwrap_or(0),
        );
        flag("ulimit", format!("{name}={soft}:{hard}"));
    }
    if let Some(ipc) = &config.ipc_mode {
        flag("ipc", ipc.clone());
    }
    if let Some(cgroupns) = config.cgroupns_mode {
        flag("cgroupns", cgroupns.to_string());
    }
    flag("user", user.to_owned());
    flag("workdir", WORK_DIR.to_owned());
    if config.readonly_rootfs == Some(true) {
        flags.push("--read-only".to_owned());
    }
    if let Some(init) = config.init {
        flags.push(format!("--init={init}"));
    }
    flags
}

fn ulimit(name: &str, soft: i64, hard: i64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(soft),
        hard: Some(hard),
    }
}

fn bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ByteSize, LimitOverrides};
    use std::time::Duration;

    fn strict() -> SandboxPolicy {
        SandboxPolicy::builtin("strict").unwrap()
    }

    fn limit<'a>(config: &'a HostConfig, name: &str) -> &'a ResourcesUlimits {
        let ulimits = config.ulimits.as_ref().unwrap();
        ulimits
            .iter()
            .find(|u| u.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ulimit {name}"))
    }

    #[test]
    fn network_is_none_for_both_policies() {
        let mut policy = strict();
        assert_eq!(
            host_config(&policy, "{}").network_mode.as_deref(),
            Some("none")
        );
        policy.network = Network::Loopback;
        assert_eq!(
            host_config(&policy, "{}").network_mode.as_deref(),
            Some("none")
        );
    }

    #[test]
    fn root_is_read_only_and_tmpfs_are_sized_and_noexec() {
        let policy = strict();
        let config = host_config(&policy, "{}");
        assert_eq!(config.readonly_rootfs, Some(true));
        let tmpfs = config.tmpfs.unwrap();
        assert_eq!(tmpfs.len(), 2);
        let size = policy.limits.tmpfs.bytes();
        assert_eq!(
            tmpfs["/tmp"],
            format!("size={size},noexec,nosuid,nodev,mode=1777")
        );
        assert_eq!(
            tmpfs["/work"],
            format!("size={size},noexec,nosuid,nodev,mode=0755,uid=65534,gid=65534")
        );
    }

    #[test]
    fn memory_has_no_swap_and_pids_and_cpus_are_limited() {
        let policy = strict()
            .tightened(&LimitOverrides {
                memory: Some(ByteSize::mib(64)),
                pids: Some(8),
                cpus: Some(0.5),
                ..LimitOverrides::default()
            })
            .unwrap();
        let config = host_config(&policy, "{}");
        assert_eq!(config.memory, Some(64 << 20));
        assert_eq!(config.memory_swap, Some(64 << 20));
        assert_eq!(config.pids_limit, Some(8));
        assert_eq!(config.nano_cpus, Some(500_000_000));
    }

    #[test]
    fn privileges_are_dropped_and_seccomp_is_the_given_profile() {
        let config = host_config(&strict(), r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#);
        assert_eq!(config.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(config.cap_add, None);
        assert_eq!(config.privileged, None);
        assert_eq!(
            config.security_opt,
            Some(vec![
                "no-new-privileges".to_owned(),
                r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO"}"#.to_owned(),
            ])
        );
        assert_eq!(config.ipc_mode.as_deref(), Some("private"));
        assert_eq!(config.pid_mode, None, "a private pid namespace");
        assert_eq!(
            config.cgroupns_mode,
            Some(HostConfigCgroupnsModeEnum::PRIVATE)
        );
        assert_eq!(config.binds, None, "no host path reaches the container");
        assert_eq!(config.mounts, None);
    }

    #[test]
    fn ulimits_and_init() {
        let policy = strict()
            .tightened(&LimitOverrides {
                cpu_time: Some(Duration::from_millis(1500)),
                open_files: Some(32),
                file_size: Some(ByteSize::mib(1)),
                ..LimitOverrides::default()
            })
            .unwrap();
        let config = host_config(&policy, "{}");
        let nofile = limit(&config, "nofile");
        assert_eq!((nofile.soft, nofile.hard), (Some(32), Some(32)));
        let fsize = limit(&config, "fsize");
        assert_eq!((fsize.soft, fsize.hard), (Some(1 << 20), Some(1 << 20)));
        let core = limit(&config, "core");
        assert_eq!((core.soft, core.hard), (Some(0), Some(0)));
        let cpu = limit(&config, "cpu");
        assert_eq!(
            (cpu.soft, cpu.hard),
            (Some(2), Some(3)),
            "rounded up to whole seconds"
        );
        assert_eq!(config.ulimits.as_ref().unwrap().len(), 4);
        assert_eq!(config.init, Some(false), "pid 1 is the bootstrap");
    }

    #[test]
    fn docker_run_flags_carry_every_setting() {
        let policy = strict();
        let flags = docker_run_flags(&host_config(&policy, "{}"), &user(&policy), "/p.json");
        let text = flags.join(" ");
        for needle in [
            "--network none",
            "--read-only",
            "--init=false",
            "--memory 268435456b",
            "--memory-swap 268435456b",
            "--pids-limit 32",
            "--cpus 1",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--security-opt seccomp=/p.json",
            "--ulimit core=0:0",
            "--ulimit cpu=5:6",
            "--user 65534:65534",
            "--ipc private",
            "--cgroupns private",
            "--tmpfs /tmp:size=16777216,noexec,nosuid,nodev,mode=1777",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }

    #[test]
    fn user_is_numeric() {
        assert_eq!(user(&strict()), "65534:65534");
    }
}
