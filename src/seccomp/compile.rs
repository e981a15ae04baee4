//! An allowlist to stacked seccompiler BPF programs for one architecture.
//!
//! seccompiler's `SeccompFilter` has one match action and one mismatch action,
//! so the policy is three filters, installed in this order:
//!
//! 1. dangerous: the dangerous set → kill the process, anything else → allow.
//! 2. answered: each syscall of the answered set → its errno (`clone3` ENOSYS,
//!    so that glibc falls back to `clone`, whose flags the allowlist can
//!    check; the xattr calls EOPNOTSUPP; chroot and the clock setters EPERM),
//!    anything else → allow.
//! 3. allowlist: listed syscall (conditions holding) → allow; anything else →
//!    the denied action (EPERM or kill). The answered syscalls also pass this
//!    filter, so filter 2 decides them whatever the denied action.
//!
//! The allowlist goes last because installing a filter takes `prctl` and
//! `seccomp`, which it denies. The kernel runs every installed filter and
//! keeps the most severe action (kill > errno > allow; on a tie, the most
//! recently installed filter's). No rule here depends on the tie-break: a
//! dangerous syscall is killed even under EPERM (kill beats errno), an
//! answered one gets its errno (errno beats allow), and a foreign ABI is
//! killed by every filter's architecture check. The tests in `tests.rs` check
//! each of these claims, the tie-break and the install order on the running
//! kernel.

use super::allowlist::{
    Allowlist, ArgCondition, ArgOp, SyscallRule, answered_syscalls, dangerous_syscalls,
};
use super::error::SeccompError;
use super::layout;
use super::table;
use crate::arch::Arch;
use crate::policy::DeniedAction;
#[cfg(test)]
use seccompiler::SeccompFilter;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;

/// The compiled filters for one allowlist, denied action and architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProgram {
    programs: Vec<BpfProgram>,
    allowed_count: usize,
}

impl SeccompProgram {
    /// The BPF programs, to install in this order (each with `seccompiler::apply_filter`).
    ///
    /// The last one is the allowlist: it denies `prctl` and `seccomp`, so no
    /// filter can be installed after it, and anything the caller does between
    /// installing it and `execve` must itself be on the allowlist.
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }

    /// How many syscalls the allowlist allows on this architecture (some only with conditions).
    pub fn allowed_count(&self) -> usize {
        self.allowed_count
    }
}

/// Compiles `allowlist` for `arch`; syscalls it does not allow get `denied`.
pub fn compile(
    allowlist: &Allowlist,
    denied: DeniedAction,
    arch: Arch,
) -> Result<SeccompProgram, SeccompError> {
    let compile_err = |filter| {
        move |source| SeccompError::Compile {
            arch,
            filter,
            source,
        }
    };
    let (dangerous, allowed, allowed_count) = filters(allowlist, denied, arch)?;
    let [dangerous, allowed] = [dangerous, allowed].map(|(name, rules, mismatch, matched)| {
        layout::balanced(rules, mismatch, matched, target_arch(arch)).map_err(compile_err(name))
    });
    let answered = layout::answers(answers(arch), SeccompAction::Allow, target_arch(arch));
    Ok(SeccompProgram {
        programs: vec![
            dangerous?,
            answered.map_err(compile_err("answered"))?,
            allowed?,
        ],
        allowed_count,
    })
}

/// One filter: its name, its rules by syscall number, the mismatch and match actions.
type Filter = (
    &'static str,
    BTreeMap<i64, Vec<SeccompRule>>,
    SeccompAction,
    SeccompAction,
);

/// The dangerous and the allowlist filters (see the module's comment), and
/// how many syscalls the allowlist allows.
fn filters(
    allowlist: &Allowlist,
    denied: DeniedAction,
    arch: Arch,
) -> Result<(Filter, Filter, usize), SeccompError> {
    let mut allowed = BTreeMap::new();
    for rule in &allowlist.rules {
        if let Some(nr) = table::number(arch, &rule.name) {
            let rules = bpf_rules(rule).map_err(|source| SeccompError::Compile {
                arch,
                filter: "allowlist",
                source,
            })?;
            allowed.insert(nr, rules);
        }
    }
    let allowed_count = allowed.len();
    // The answered syscalls pass the allowlist: the answered filter decides them.
    for &nr in answers(arch).keys() {
        allowed.insert(nr, Vec::new());
    }

    let denied = match denied {
        DeniedAction::Errno => SeccompAction::Errno(libc::EPERM as u32),
        DeniedAction::Kill => SeccompAction::KillProcess,
    };
    let dangerous = dangerous_syscalls()
        .iter()
        .filter_map(|rule| table::number(arch, &rule.name))
        .map(|nr| (nr, Vec::new()))
        .collect();
    Ok((
        (
            "dangerous",
            dangerous,
            SeccompAction::Allow,
            SeccompAction::KillProcess,
        ),
        ("allowlist", allowed, denied, SeccompAction::Allow),
        allowed_count,
    ))
}

/// The answered set on `arch`: syscall number → its errno.
fn answers(arch: Arch) -> BTreeMap<i64, SeccompAction> {
    answered_syscalls()
        .iter()
        .filter_map(|answer| {
            let nr = table::number(arch, &answer.name)?;
            Some((nr, SeccompAction::Errno(answer.errno.raw() as u32)))
        })
        .collect()
}

/// The dangerous and allowlist filters laid out by [`layout::balanced`] and
/// by seccompiler's linear chain, for the equivalence test.
#[cfg(test)]
pub(super) fn both_layouts(
    allowlist: &Allowlist,
    denied: DeniedAction,
    arch: Arch,
) -> (Vec<BpfProgram>, Vec<BpfProgram>) {
    let (dangerous, allowed, _) = filters(allowlist, denied, arch).unwrap();
    [dangerous, allowed]
        .into_iter()
        .map(|(_, rules, mismatch, matched)| {
            let target = target_arch(arch);
            let balanced =
                layout::balanced(rules.clone(), mismatch.clone(), matched.clone(), target);
            let linear = SeccompFilter::new(rules, mismatch, matched, target).unwrap();
            (balanced.unwrap(), BpfProgram::try_from(linear).unwrap())
        })
        .unzip()
}

/// The answered filter for `arch`, for the layout tests.
#[cfg(test)]
pub(super) fn answered_program(arch: Arch) -> BpfProgram {
    layout::answers(answers(arch), SeccompAction::Allow, target_arch(arch)).unwrap()
}

fn target_arch(arch: Arch) -> TargetArch {
    match arch {
        Arch::Amd64 => TargetArch::x86_64,
        Arch::Arm64 => TargetArch::aarch64,
    }
}

/// A rule's conditions as seccompiler rules (ORed): one per combination of "any of" values.
fn bpf_rules(rule: &SyscallRule) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    if rule.args.is_empty() {
        return Ok(Vec::new());
    }
    combinations(&rule.args)
        .into_iter()
        .map(|combination| {
            let conditions = rule
                .args
                .iter()
                .zip(combination)
                .map(|(arg, value)| condition(arg, value))
                .collect::<Result<Vec<_>, _>>()?;
            SeccompRule::new(conditions)
        })
        .collect()
}

/// Every choice of one value per condition.
fn combinations(args: &[ArgCondition]) -> Vec<Vec<u64>> {
    args.iter().fold(vec![Vec::new()], |acc, arg| {
        acc.iter()
            .flat_map(|prefix| {
                arg.values.iter().map(move |&v| {
                    let mut next = prefix.clone();
                    next.push(v);
                    next
                })
            })
            .collect()
    })
}

fn condition(
    arg: &ArgCondition,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    let op = match arg.op {
        ArgOp::Eq => SeccompCmpOp::Eq,
        ArgOp::Ne => SeccompCmpOp::Ne,
        ArgOp::Lt => SeccompCmpOp::Lt,
        ArgOp::Le => SeccompCmpOp::Le,
        ArgOp::Gt => SeccompCmpOp::Gt,
        ArgOp::Ge => SeccompCmpOp::Ge,
        ArgOp::MaskedEq { mask } => SeccompCmpOp::MaskedEq(mask),
    };
    // Whole 64-bit compare: upper bits a filter ignored could be bits the kernel reads.
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, op, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::BUILTIN_ALLOWLISTS;

    #[test]
    fn both_lists_compile_for_both_arches_with_sane_counts() {
        for (name, _) in BUILTIN_ALLOWLISTS {
            let list = Allowlist::builtin(name).unwrap();
            for arch in Arch::ALL {
                for denied in [DeniedAction::Errno, DeniedAction::Kill] {
                    let program = compile(&list, denied, arch).unwrap();
                    assert_eq!(program.programs().len(), 3);
                    let count = program.allowed_count();
                    println!("{name} {arch} {denied:?}: {count} syscalls allowed");
                    assert!((60..=180).contains(&count), "{name} {arch}: {count}");
                    if *name == "python-strict" {
                        assert!(count < 160, "{name} {arch}: {count}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_dangerous_set_compiles_on_both_arches() {
        for arch in Arch::ALL {
            let count = dangerous_syscalls()
                .iter()
                .filter(|r| table::number(arch, &r.name).is_some())
                .count();
            println!("dangerous set on {arch}: {count} syscalls killed");
            assert!(count >= 40, "{arch}: {count}");
        }
    }

    #[test]
    fn names_missing_on_an_arch_are_skipped_there_only() {
        let list = Allowlist::builtin("python-standard").unwrap();
        let amd64 = compile(&list, DeniedAction::Errno, Arch::Amd64).unwrap();
        let arm64 = compile(&list, DeniedAction::Errno, Arch::Arm64).unwrap();
        let only_x86 = list
            .rules
            .iter()
            .filter(|r| table::number(Arch::Arm64, &r.name).is_none())
            .count();
        assert!(
            only_x86 > 10,
            "open-style names are x86_64 only: {only_x86}"
        );
        assert_eq!(amd64.allowed_count() - arm64.allowed_count(), only_x86);
    }

    #[test]
    fn any_of_values_expand_to_one_rule_each() {
        let list = Allowlist::builtin("python-strict").unwrap();
        let ioctl = list.rule("ioctl").unwrap();
        assert_eq!(bpf_rules(ioctl).unwrap().len(), ioctl.args[0].values.len());
        assert!(bpf_rules(list.rule("read").unwrap()).unwrap().is_empty());
    }
}
