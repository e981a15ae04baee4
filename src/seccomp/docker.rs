//! An allowlist as a Docker/OCI seccomp profile (the JSON `docker run
//! --security-opt seccomp=FILE` and runc read), from the same rules as the BPF.

use super::allowlist::{
    Allowlist, ArgCondition, ArgOp, SyscallRule, answered_syscalls, dangerous_syscalls,
};
use super::table;
use crate::arch::Arch;
use crate::policy::DeniedAction;
use serde_json::{Value, json};

/// The Docker/OCI seccomp profile for `allowlist` on `arches`.
///
/// Only the native architectures are listed (`SCMP_ARCH_X86_64`,
/// `SCMP_ARCH_AARCH64`), never `SCMP_ARCH_X86` or `SCMP_ARCH_X32`, so
/// libseccomp refuses the i386 and x32 ABIs. A name is included if it exists
/// on at least one of `arches`. Each rule carries its reason as `comment`.
pub fn docker_profile(allowlist: &Allowlist, denied: DeniedAction, arches: &[Arch]) -> Value {
    let on_some_arch = |name: &str| arches.iter().any(|&a| table::number(a, name).is_some());
    let mut syscalls: Vec<Value> = allowlist
        .rules
        .iter()
        .filter(|rule| on_some_arch(&rule.name))
        .flat_map(allow_entries)
        .collect();
    syscalls.extend(
        answered_syscalls()
            .iter()
            .filter(|answer| on_some_arch(&answer.name))
            .map(|answer| {
                json!({
                    "names": [answer.name],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": answer.errno.raw(),
                    "comment": answer.reason,
                })
            }),
    );
    let dangerous: Vec<&str> = dangerous_syscalls()
        .iter()
        .map(|rule| rule.name.as_str())
        .filter(|name| on_some_arch(name))
        .collect();
    syscalls.push(json!({
        "names": dangerous,
        "action": "SCMP_ACT_KILL_PROCESS",
        "comment": "the dangerous set (policies/seccomp/dangerous.toml)",
    }));

    let architectures: Vec<&str> = arches.iter().map(|&a| scmp_arch(a)).collect();
    let mut profile = json!({
        "architectures": architectures,
        "syscalls": syscalls,
    });
    match denied {
        DeniedAction::Errno => {
            profile["defaultAction"] = json!("SCMP_ACT_ERRNO");
            profile["defaultErrnoRet"] = json!(libc::EPERM);
        }
        DeniedAction::Kill => profile["defaultAction"] = json!("SCMP_ACT_KILL_PROCESS"),
    }
    profile
}

fn scmp_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "SCMP_ARCH_X86_64",
        Arch::Arm64 => "SCMP_ARCH_AARCH64",
    }
}

/// One entry per combination of "any of" values (entries are ORed, args within one ANDed).
fn allow_entries(rule: &SyscallRule) -> Vec<Value> {
    let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
    for arg in &rule.args {
        combos = combos
            .iter()
            .flat_map(|prefix| {
                arg.values.iter().map(move |&v| {
                    let mut next = prefix.clone();
                    next.push(docker_arg(arg, v));
                    next
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|args| {
            let mut entry = json!({
                "names": [rule.name],
                "action": "SCMP_ACT_ALLOW",
                "comment": rule.reason,
            });
            if !args.is_empty() {
                entry["args"] = Value::Array(args);
            }
            entry
        })
        .collect()
}

/// libseccomp's form: for `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the result.
fn docker_arg(arg: &ArgCondition, value: u64) -> Value {
    let (op, value, value_two) = match arg.op {
        ArgOp::Eq => ("SCMP_CMP_EQ", value, 0),
        ArgOp::Ne => ("SCMP_CMP_NE", value, 0),
        ArgOp::Lt => ("SCMP_CMP_LT", value, 0),
        ArgOp::Le => ("SCMP_CMP_LE", value, 0),
        ArgOp::Gt => ("SCMP_CMP_GT", value, 0),
        ArgOp::Ge => ("SCMP_CMP_GE", value, 0),
        ArgOp::MaskedEq { mask } => ("SCMP_CMP_MASKED_EQ", mask, value),
    };
    json!({ "index": arg.index, "value": value, "valueTwo": value_two, "op": op })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_for<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn profile_has_docker_shape() {
        let list = Allowlist::builtin("python-strict").unwrap();
        let profile = docker_profile(&list, DeniedAction::Errno, &Arch::ALL);
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        assert_eq!(
            profile["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
        );
        let text = profile.to_string();
        assert!(!text.contains("SCMP_ARCH_X86\"") && !text.contains("SCMP_ARCH_X32"));

        let read = entries_for(&profile, "read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0]["action"], "SCMP_ACT_ALLOW");
        assert!(read[0].get("args").is_none());
        assert!(!read[0]["comment"].as_str().unwrap().is_empty());

        let clone = entries_for(&profile, "clone");
        assert_eq!(
            clone[0]["args"],
            json!([{ "index": 0, "value": 0x7e03_0000u64, "valueTwo": 0x10000, "op": "SCMP_CMP_MASKED_EQ" }])
        );
        let ioctl = entries_for(&profile, "ioctl");
        assert_eq!(
            ioctl.len(),
            list.rule("ioctl").unwrap().args[0].values.len()
        );
        assert!(ioctl.iter().all(|e| e["args"][0]["op"] == "SCMP_CMP_EQ"));
        assert!(ioctl.iter().any(|e| e["args"][0]["value"] == 0x5401));

        let clone3 = entries_for(&profile, "clone3");
        assert_eq!(
            (clone3[0]["action"].as_str(), clone3[0]["errnoRet"].as_i64()),
            (Some("SCMP_ACT_ERRNO"), Some(38))
        );
        for (name, errno) in [("chroot", libc::EPERM), ("fsetxattr", libc::EOPNOTSUPP)] {
            let entry = entries_for(&profile, name);
            assert_eq!(entry.len(), 1, "{name}");
            assert_eq!(entry[0]["action"], "SCMP_ACT_ERRNO", "{name}");
            assert_eq!(
                entry[0]["errnoRet"].as_i64(),
                Some(i64::from(errno)),
                "{name}"
            );
        }
        let ptrace = entries_for(&profile, "ptrace");
        assert_eq!(ptrace[0]["action"], "SCMP_ACT_KILL_PROCESS");
        assert!(
            entries_for(&profile, "fork").is_empty(),
            "strict has no fork"
        );
    }

    #[test]
    fn kill_default_and_per_arch_names() {
        let list = Allowlist::builtin("python-standard").unwrap();
        let profile = docker_profile(&list, DeniedAction::Kill, &[Arch::Arm64]);
        assert_eq!(profile["defaultAction"], "SCMP_ACT_KILL_PROCESS");
        assert!(profile.get("defaultErrnoRet").is_none());
        assert_eq!(profile["architectures"], json!(["SCMP_ARCH_AARCH64"]));
        assert!(
            entries_for(&profile, "fork").is_empty(),
            "no fork on aarch64"
        );
        assert!(
            entries_for(&profile, "iopl").is_empty(),
            "no iopl on aarch64"
        );
        assert_eq!(entries_for(&profile, "clone")[0]["args"][0]["valueTwo"], 0);
        let amd64 = docker_profile(&list, DeniedAction::Kill, &[Arch::Amd64]);
        assert_eq!(entries_for(&amd64, "fork").len(), 1);
    }
}
