//! Allowlists as reviewed data: the TOML format, the built-in lists, the
//! dangerous set and the answered set.
//!
//! An [`Allowlist`] that exists is valid: every name is a syscall on x86_64 or
//! aarch64, every condition is well formed, `execve` is allowed, and nothing
//! on it is in the dangerous set or the answered set.

use super::error::{ArgProblem, SeccompError};
use super::table;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

/// The allowlists built into pyward, by name, with their TOML source.
pub const BUILTIN_ALLOWLISTS: &[(&str, &str)] = &[
    (
        "python-strict",
        include_str!("../../policies/seccomp/python-strict.toml"),
    ),
    (
        "python-standard",
        include_str!("../../policies/seccomp/python-standard.toml"),
    ),
];

const DANGEROUS_TOML: &str = include_str!("../../policies/seccomp/dangerous.toml");

const ANSWERED_TOML: &str = include_str!("../../policies/seccomp/answered.toml");

/// Syscalls every allowlist must allow.
const REQUIRED: &[&str] = &["execve"];

/// The dangerous set, parsed once from the built-in `dangerous.toml`.
static DANGEROUS: LazyLock<Vec<SyscallRule>> = LazyLock::new(|| {
    parse_rules(DANGEROUS_TOML, "builtin:dangerous")
        .map(|(_, rules)| rules)
        .expect("policies/seccomp/dangerous.toml is valid (checked by the dangerous_set_* tests)")
});

/// The syscalls that kill the sandbox under every allowlist (from `policies/seccomp/dangerous.toml`).
pub fn dangerous_syscalls() -> &'static [SyscallRule] {
    &DANGEROUS
}

/// The answered set, parsed once from the built-in `answered.toml`.
static ANSWERED: LazyLock<Vec<Answer>> = LazyLock::new(|| {
    parse_answers(ANSWERED_TOML, "builtin:answered")
        .expect("policies/seccomp/answered.toml is valid (checked by the answered_set_* tests)")
});

/// The syscalls answered with a fixed errno under every allowlist and denied
/// action (from `policies/seccomp/answered.toml`).
pub fn answered_syscalls() -> &'static [Answer] {
    &ANSWERED
}

/// A syscall pyward's filter answers itself, never letting it reach the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The kernel's name for the syscall.
    pub name: String,
    /// The errno the program gets.
    pub errno: AnswerErrno,
    /// Why this errno, and why not a kill.
    pub reason: String,
}

/// The errnos an answer may give: what callers handle as "not here".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AnswerErrno {
    /// Not implemented here: callers fall back (glibc's clone3 to clone).
    #[serde(rename = "ENOSYS")]
    Enosys,
    /// Not permitted: what the kernel tells a caller without the capability.
    #[serde(rename = "EPERM")]
    Eperm,
    /// Not supported (ENOTSUP): what a file system without xattrs answers.
    #[serde(rename = "EOPNOTSUPP")]
    Eopnotsupp,
}

impl AnswerErrno {
    /// The errno's number (the same on x86_64 and aarch64).
    pub fn raw(self) -> i32 {
        match self {
            AnswerErrno::Enosys => libc::ENOSYS,
            AnswerErrno::Eperm => libc::EPERM,
            AnswerErrno::Eopnotsupp => libc::EOPNOTSUPP,
        }
    }

    /// Its name, as the list file spells it.
    pub fn name(self) -> &'static str {
        match self {
            AnswerErrno::Enosys => "ENOSYS",
            AnswerErrno::Eperm => "EPERM",
            AnswerErrno::Eopnotsupp => "EOPNOTSUPP",
        }
    }
}

/// A named syscall allowlist: what a sandboxed program may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// The name (`python-strict`, or the file stem).
    pub name: String,
    /// One line saying what the list is for.
    pub description: String,
    /// One rule per syscall, sorted by name.
    pub rules: Vec<SyscallRule>,
}

/// One allowed syscall, why it is allowed, and the conditions on its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallRule {
    /// The kernel's name for the syscall (`openat`, `newfstatat`).
    pub name: String,
    /// Why a sandboxed Python program needs it.
    pub reason: String,
    /// Conditions that must all hold; empty means "always allowed".
    pub args: Vec<ArgCondition>,
}

/// A condition on one syscall argument, compared as a 64-bit value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCondition {
    /// The argument, 0 to 5.
    pub index: u8,
    /// The comparison.
    pub op: ArgOp,
    /// The condition holds if the comparison holds for at least one of these
    /// (one value except with `Eq` and `MaskedEq`).
    pub values: Vec<u64>,
}

/// How an argument is compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgOp {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `arg & mask == value`
    MaskedEq {
        /// The bits compared.
        mask: u64,
    },
}

impl Allowlist {
    /// The built-in allowlist called `name`.
    pub fn builtin(name: &str) -> Result<Allowlist, SeccompError> {
        let (_, text) = BUILTIN_ALLOWLISTS
            .iter()
            .find(|(builtin, _)| *builtin == name)
            .ok_or_else(|| unknown_allowlist(name))?;
        Allowlist::from_toml(name, text, &format!("builtin:{name}"))
    }

    /// Parses and checks an allowlist; `source_name` (a path) is named in errors.
    pub fn from_toml(name: &str, text: &str, source_name: &str) -> Result<Allowlist, SeccompError> {
        let (description, rules) = parse_rules(text, source_name)?;
        check_allowlist(&rules, source_name)?;
        Ok(Allowlist {
            name: name.to_owned(),
            description,
            rules,
        })
    }

    /// Loads `search_dir/seccomp/NAME.toml` if it exists, else the built-in list `name`.
    pub fn load(name: &str, search_dir: Option<&Path>) -> Result<Allowlist, SeccompError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(SeccompError::InvalidName {
                name: name.to_owned(),
            });
        }
        if let Some(dir) = search_dir {
            let path = dir.join("seccomp").join(format!("{name}.toml"));
            match std::fs::read_to_string(&path) {
                Ok(text) => return Allowlist::from_toml(name, &text, &path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SeccompError::Read { path, source }),
            }
        }
        Allowlist::builtin(name)
    }

    /// The rule for syscall `name`, if it is on the list.
    pub fn rule(&self, name: &str) -> Option<&SyscallRule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

fn unknown_allowlist(name: &str) -> SeccompError {
    let known: Vec<&str> = BUILTIN_ALLOWLISTS.iter().map(|(n, _)| *n).collect();
    SeccompError::UnknownAllowlist {
        name: name.to_owned(),
        known: known.join(", "),
    }
}

/// The file as written. Each syscall's value is a reason or `{ reason, args }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    description: String,
    syscalls: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    reason: String,
    #[serde(default)]
    args: Vec<RawArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    index: u8,
    op: RawOp,
    mask: Option<u64>,
    value: Option<u64>,
    values: Option<Vec<u64>>,
}

/// The answered set as written: each syscall's value is `{ errno, reason }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswers {
    /// Required, for the reader of the file; pyward has no use for it.
    #[serde(rename = "description")]
    _description: String,
    syscalls: BTreeMap<String, RawAnswer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    errno: AnswerErrno,
    reason: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

/// Parses a file in the allowlist format and checks each name and condition.
fn parse_rules(text: &str, source_name: &str) -> Result<(String, Vec<SyscallRule>), SeccompError> {
    let raw: RawFile = toml::from_str(text).map_err(|source| SeccompError::Parse {
        source_name: source_name.to_owned(),
        source: Box::new(source),
    })?;
    let mut rules = Vec::with_capacity(raw.syscalls.len());
    for (name, value) in raw.syscalls {
        if !table::exists(&name) {
            return Err(SeccompError::UnknownSyscall {
                source_name: source_name.to_owned(),
                name,
            });
        }
        let raw_rule = match value {
            toml::Value::String(reason) => RawRule {
                reason,
                args: Vec::new(),
            },
            other => other
                .try_into::<RawRule>()
                .map_err(|source| SeccompError::InvalidRule {
                    source_name: source_name.to_owned(),
                    name: name.clone(),
                    source: Box::new(source),
                })?,
        };
        let mut args = Vec::with_capacity(raw_rule.args.len());
        for (position, arg) in raw_rule.args.into_iter().enumerate() {
            let condition = arg_condition(arg).map_err(|problem| SeccompError::InvalidArg {
                source_name: source_name.to_owned(),
                name: name.clone(),
                position,
                problem,
            })?;
            args.push(condition);
        }
        rules.push(SyscallRule {
            name,
            reason: raw_rule.reason,
            args,
        });
    }
    Ok((raw.description, rules))
}

/// Parses the answered set's format and checks each name.
fn parse_answers(text: &str, source_name: &str) -> Result<Vec<Answer>, SeccompError> {
    let raw: RawAnswers = toml::from_str(text).map_err(|source| SeccompError::Parse {
        source_name: source_name.to_owned(),
        source: Box::new(source),
    })?;
    raw.syscalls
        .into_iter()
        .map(|(name, answer)| {
            if !table::exists(&name) {
                return Err(SeccompError::UnknownSyscall {
                    source_name: source_name.to_owned(),
                    name,
                });
            }
            Ok(Answer {
                name,
                errno: answer.errno,
                reason: answer.reason,
            })
        })
        .collect()
}

fn arg_condition(raw: RawArg) -> Result<ArgCondition, ArgProblem> {
    if raw.index > 5 {
        return Err(ArgProblem::IndexOutOfRange(raw.index));
    }
    let values = match (raw.value, raw.values) {
        (Some(v), None) => vec![v],
        (None, Some(vs)) if !vs.is_empty() => vs,
        _ => return Err(ArgProblem::Value),
    };
    let op = match (raw.op, raw.mask) {
        (RawOp::MaskedEq, Some(mask)) => ArgOp::MaskedEq { mask },
        (RawOp::MaskedEq, None) | (_, Some(_)) => return Err(ArgProblem::Mask),
        (RawOp::Eq, None) => ArgOp::Eq,
        (RawOp::Ne, None) => ArgOp::Ne,
        (RawOp::Lt, None) => ArgOp::Lt,
        (RawOp::Le, None) => ArgOp::Le,
        (RawOp::Gt, None) => ArgOp::Gt,
        (RawOp::Ge, None) => ArgOp::Ge,
    };
    if values.len() > 1 && !matches!(op, ArgOp::Eq | ArgOp::MaskedEq { .. }) {
        return Err(ArgProblem::SeveralValues);
    }
    Ok(ArgCondition {
        index: raw.index,
        op,
        values,
    })
}

/// The rules an allowlist must follow beyond the format.
fn check_allowlist(rules: &[SyscallRule], source_name: &str) -> Result<(), SeccompError> {
    for rule in rules {
        if let Some(answer) = answered_syscalls().iter().find(|a| a.name == rule.name) {
            return Err(SeccompError::Answered {
                source_name: source_name.to_owned(),
                name: rule.name.clone(),
                errno: answer.errno.name(),
            });
        }
        if dangerous_syscalls().iter().any(|d| d.name == rule.name) {
            return Err(SeccompError::Overlap {
                source_name: source_name.to_owned(),
                name: rule.name.clone(),
            });
        }
    }
    for required in REQUIRED {
        if !rules.iter().any(|r| r.name == *required) {
            return Err(SeccompError::Required {
                source_name: source_name.to_owned(),
                name: (*required).to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "description = \"t\"\n[syscalls]\nexecve = \"exec\"\n";

    fn load(extra: &str) -> Result<Allowlist, SeccompError> {
        Allowlist::from_toml("t", &format!("{MINIMAL}{extra}\n"), "test.toml")
    }

    #[test]
    fn dangerous_set_loads_and_holds_the_required_names() {
        let names: Vec<&str> = dangerous_syscalls()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        for required in [
            "ptrace",
            "bpf",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "mount",
            "umount2",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
            "unshare",
            "setns",
            "pivot_root",
            "reboot",
            "swapon",
            "swapoff",
            "process_vm_readv",
            "process_vm_writev",
            "open_by_handle_at",
            "acct",
            "quotactl",
        ] {
            assert!(
                names.contains(&required),
                "{required} missing from dangerous.toml"
            );
        }
        assert!(
            dangerous_syscalls()
                .iter()
                .all(|r| r.args.is_empty() && !r.reason.is_empty())
        );
    }

    #[test]
    fn builtins_load_with_a_reason_each() {
        for (name, _) in BUILTIN_ALLOWLISTS {
            let list = Allowlist::builtin(name).unwrap();
            assert_eq!(list.name, *name);
            assert!(list.rules.iter().all(|r| r.reason.len() > 3), "{name}");
            assert!(list.rule("execve").is_some());
        }
    }

    #[test]
    fn standard_is_strict_plus_process_syscalls() {
        let strict = Allowlist::builtin("python-strict").unwrap();
        let standard = Allowlist::builtin("python-standard").unwrap();
        for rule in &strict.rules {
            assert!(
                standard.rule(&rule.name).is_some(),
                "{} only in strict",
                rule.name
            );
        }
        for name in ["fork", "vfork", "wait4"] {
            assert!(
                strict.rule(name).is_none() && standard.rule(name).is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn overlap_with_the_dangerous_set_is_refused() {
        let err = load("ptrace = \"debugging\"").unwrap_err();
        assert!(
            matches!(&err, SeccompError::Overlap { name, .. } if name == "ptrace"),
            "{err}"
        );
        assert!(err.to_string().contains("test.toml"), "{err}");
    }

    #[test]
    fn unknown_syscall_is_refused_with_its_name_and_file() {
        let err = load("frobnicate = \"typo\"").unwrap_err();
        assert!(matches!(&err, SeccompError::UnknownSyscall { name, .. } if name == "frobnicate"));
        let text = err.to_string();
        assert!(
            text.contains("frobnicate") && text.contains("test.toml"),
            "{text}"
        );
    }

    #[test]
    fn a_name_on_one_arch_only_is_accepted() {
        let list = load("fork = \"x86_64 only\"\nppoll = \"both\"").unwrap();
        assert_eq!(list.rules.len(), 3);
    }

    #[test]
    fn answered_set_loads_apart_from_the_dangerous_set() {
        let answered = answered_syscalls();
        for (name, errno) in [
            ("clone3", AnswerErrno::Enosys),
            ("chroot", AnswerErrno::Eperm),
            ("clock_settime", AnswerErrno::Eperm),
            ("setxattr", AnswerErrno::Eopnotsupp),
            ("listxattr", AnswerErrno::Eopnotsupp),
        ] {
            let answer = answered.iter().find(|a| a.name == name);
            assert_eq!(answer.map(|a| a.errno), Some(errno), "{name}");
        }
        for answer in answered {
            assert!(answer.reason.len() > 3, "{}", answer.name);
            assert!(
                dangerous_syscalls().iter().all(|d| d.name != answer.name),
                "{} is both answered and dangerous",
                answer.name
            );
        }
    }

    #[test]
    fn an_answer_without_a_known_errno_is_refused() {
        let text = "description = \"t\"\n[syscalls]\nchroot = { errno = \"EIO\", reason = \"r\" }";
        let err = parse_answers(text, "t.toml").unwrap_err();
        assert!(err.to_string().contains("t.toml"), "{err}");
    }

    #[test]
    fn answered_names_and_missing_execve_are_refused() {
        for name in ["clone3", "chroot", "fsetxattr"] {
            let err = load(&format!("{name} = \"x\"")).unwrap_err();
            assert!(
                matches!(&err, SeccompError::Answered { name: n, .. } if n == name),
                "{err}"
            );
            assert!(err.to_string().contains("answered.toml"), "{err}");
        }
        let err = Allowlist::from_toml(
            "t",
            "description = \"t\"\n[syscalls]\nread = \"r\"",
            "t.toml",
        );
        assert!(
            matches!(err.unwrap_err(), SeccompError::Required { name, .. } if name == "execve")
        );
    }

    #[test]
    fn malformed_conditions_are_refused() {
        let cases = [
            (
                "clone = { reason = \"r\", args = [{ index = 6, op = \"eq\", value = 1 }] }",
                ArgProblem::IndexOutOfRange(6),
            ),
            (
                "clone = { reason = \"r\", args = [{ index = 0, op = \"eq\" }] }",
                ArgProblem::Value,
            ),
            (
                "clone = { reason = \"r\", args = [{ index = 0, op = \"masked_eq\", value = 1 }] }",
                ArgProblem::Mask,
            ),
            (
                "clone = { reason = \"r\", args = [{ index = 0, op = \"eq\", mask = 1, value = 1 }] }",
                ArgProblem::Mask,
            ),
            (
                "clone = { reason = \"r\", args = [{ index = 0, op = \"lt\", values = [1, 2] }] }",
                ArgProblem::SeveralValues,
            ),
        ];
        for (line, expected) in cases {
            match load(line).unwrap_err() {
                SeccompError::InvalidArg { problem, name, .. } => {
                    assert_eq!((problem, name.as_str()), (expected, "clone"), "{line}")
                }
                other => panic!("{line}: {other}"),
            }
        }
        let err =
            load("clone = { reason = \"r\", args = [{ index = 0, op = \"approx\", value = 1 }] }");
        assert!(matches!(err.unwrap_err(), SeccompError::InvalidRule { .. }));
        let err = load("read = { why = \"r\" }").unwrap_err();
        assert!(matches!(err, SeccompError::InvalidRule { .. }));
    }

    #[test]
    fn parsed_conditions_keep_their_values() {
        let list = load("ioctl = { reason = \"r\", args = [{ index = 1, op = \"eq\", values = [0x5401, 0x5413] }] }\nclone = { reason = \"r\", args = [{ index = 0, op = \"masked_eq\", mask = 0x10000, value = 0x10000 }] }").unwrap();
        let ioctl = list.rule("ioctl").unwrap();
        assert_eq!(
            ioctl.args,
            vec![ArgCondition {
                index: 1,
                op: ArgOp::Eq,
                values: vec![0x5401, 0x5413]
            }]
        );
        let clone = list.rule("clone").unwrap();
        assert_eq!(clone.args[0].op, ArgOp::MaskedEq { mask: 0x10000 });
    }

    #[test]
    fn a_file_in_the_search_dir_wins_over_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("seccomp")).unwrap();
        let path = dir.path().join("seccomp/python-strict.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let list = Allowlist::load("python-strict", Some(dir.path())).unwrap();
        assert_eq!(list.rules.len(), 1);
        let list = Allowlist::load("python-standard", Some(dir.path())).unwrap();
        assert!(list.rule("fork").is_some(), "falls back to the builtin");
        std::fs::write(&path, "description = 1").unwrap();
        let err = Allowlist::load("python-strict", Some(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_invalid_names_are_refused() {
        let err = Allowlist::load("python-lax", None).unwrap_err();
        assert!(
            err.to_string().contains("python-strict, python-standard"),
            "{err}"
        );
        let err = Allowlist::load("../etc/passwd", None).unwrap_err();
        assert!(matches!(err, SeccompError::InvalidName { .. }));
    }
}
