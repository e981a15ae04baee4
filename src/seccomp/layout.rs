//! Laying a filter out as a binary search over syscall numbers.
//!
//! seccompiler compiles a filter as one linear chain, one comparison per
//! listed syscall. The kernel evaluates a filter once per syscall number when
//! it is installed (to cache the syscalls that are always allowed), so a
//! 120-syscall chain cost about 0.4 ms per sandbox start, a quarter of the
//! sandbox's own overhead. Here the same per-syscall blocks (seccompiler's
//! compiled rules, each followed by the match action) hang off a binary search
//! on the syscall number: about 14 instructions to any decision instead of up
//! to 600. seccompiler still compiles every argument condition and the
//! architecture check; `tests` check on an emulator that both layouts decide
//! every syscall and argument alike.

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Where the syscall number sits in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
/// Up to this many syscalls are compared one by one at a leaf of the search.
const LEAF: usize = 4;

/// The filter seccompiler's `SeccompFilter::new(rules, mismatch, matched, arch)`
/// describes, laid out as a binary search.
pub fn balanced(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, BackendError> {
    let mut program = header(mismatch.clone(), matched.clone(), arch)?;
    let (matched, mismatch) = (u32::from(matched), u32::from(mismatch));
    let blocks: Vec<(u32, BpfProgram)> = rules
        .into_iter()
        .map(|(nr, chain)| (nr as u32, syscall_block(chain, matched, mismatch)))
        .collect();
    program.extend(search(&blocks, mismatch));
    Ok(program)
}

/// A filter that gives each listed syscall its own action (no argument
/// conditions) and `otherwise` to every other, laid out as a binary search.
pub fn answers(
    actions: BTreeMap<i64, SeccompAction>,
    otherwise: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, BackendError> {
    // The empty filter of `header` never takes its match action, but
    // seccompiler refuses one equal to the mismatch action.
    let unused = match otherwise {
        SeccompAction::KillProcess => SeccompAction::Allow,
        _ => SeccompAction::KillProcess,
    };
    let mut program = header(otherwise.clone(), unused, arch)?;
    let blocks: Vec<(u32, BpfProgram)> = actions
        .into_iter()
        .map(|(nr, action)| (nr as u32, vec![stmt(BPF_RET_K, u32::from(action))]))
        .collect();
    program.extend(search(&blocks, u32::from(otherwise)));
    Ok(program)
}

/// seccompiler's architecture check, then the load of the syscall number.
fn header(
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, BackendError> {
    // seccompiler validates the actions and writes the architecture check; an
    // empty filter is exactly that check followed by `ret mismatch`.
    let empty = SeccompFilter::new(BTreeMap::new(), mismatch, matched, arch)?;
    let mut program = BpfProgram::try_from(empty)?;
    program.pop(); // its `ret mismatch`: the search after it ends every path in one
    program.push(stmt(BPF_LD_W_ABS, NR_OFFSET));
    Ok(program)
}

/// What one syscall does once its number matched: each rule (seccompiler's
/// conditions) ends in the match action and falls through to the next rule
/// when a condition fails; no rule matching ends in the mismatch action.
fn syscall_block(chain: Vec<SeccompRule>, matched: u32, mismatch: u32) -> BpfProgram {
    if chain.is_empty() {
        return vec![stmt(BPF_RET_K, matched)];
    }
    let mut block = Vec::new();
    for rule in chain {
        block.extend(BpfProgram::from(rule));
        block.push(stmt(BPF_RET_K, matched));
    }
    block.push(stmt(BPF_RET_K, mismatch));
    block
}

/// A search over `blocks` (sorted by number); every path ends in a return.
fn search(blocks: &[(u32, BpfProgram)], mismatch: u32) -> BpfProgram {
    if blocks.len() <= LEAF {
        let mut code = Vec::new();
        for (nr, block) in blocks {
            // Equal: skip the jump over the block, into it.
            code.push(jump(BPF_JEQ_K, *nr, 1, 0));
            code.push(stmt(BPF_JA, block.len() as u32));
            code.extend_from_slice(block);
        }
        code.push(stmt(BPF_RET_K, mismatch));
        return code;
    }
    let (below, from) = blocks.split_at(blocks.len() / 2);
    let below = search(below, mismatch);
    // nr >= pivot: take the jump over the lower half (a 32-bit `ja`, since
    // conditional jumps only reach 255 instructions).
    let mut code = vec![
        jump(BPF_JGE_K, from[0].0, 0, 1),
        stmt(BPF_JA, below.len() as u32),
    ];
    code.extend(below);
    code.extend(search(from, mismatch));
    code
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::policy::DeniedAction;
    use crate::seccomp::{Allowlist, BUILTIN_ALLOWLISTS};

    /// A classic-BPF interpreter for the instructions seccomp filters use here.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> u32 {
        run_counting(program, data).0
    }

    /// The action, and how many instructions it took.
    fn run_counting(program: &[sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            steps += 1;
            let class = u32::from(ins.code) & 0x07;
            let op = u32::from(ins.code) & 0xf0;
            match class {
                libc::BPF_LD => {
                    let at = ins.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                libc::BPF_ALU if op == libc::BPF_AND => acc &= ins.k,
                libc::BPF_JMP if op == libc::BPF_JA => pc += ins.k as usize,
                libc::BPF_JMP => {
                    let taken = match op {
                        libc::BPF_JEQ => acc == ins.k,
                        libc::BPF_JGE => acc >= ins.k,
                        libc::BPF_JGT => acc > ins.k,
                        libc::BPF_JSET => acc & ins.k != 0,
                        other => panic!("jump op {other:#x}"),
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                libc::BPF_RET => return (ins.k, steps),
                other => panic!("instruction class {other:#x}"),
            }
        }
    }

    fn seccomp_data(nr: u32, audit_arch: u32, args: [u64; 6]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&audit_arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        data
    }

    /// Argument vectors that probe every condition of the allowlist: each
    /// value, its neighbours, its bits flipped, and a few fixed patterns.
    fn probes(list: &Allowlist) -> Vec<[u64; 6]> {
        let mut probes = vec![[0; 6], [u64::MAX; 6], [0x1_0000_0000; 6]];
        for rule in &list.rules {
            for arg in &rule.args {
                for &value in &arg.values {
                    for v in [
                        value,
                        value.wrapping_add(1),
                        value.wrapping_sub(1),
                        !value,
                        value | 1 << 40,
                    ] {
                        let mut args = [0u64; 6];
                        args[usize::from(arg.index)] = v;
                        probes.push(args);
                    }
                }
            }
        }
        probes
    }

    #[test]
    fn the_balanced_layout_decides_exactly_as_seccompilers_linear_one() {
        for (name, _) in BUILTIN_ALLOWLISTS {
            let list = Allowlist::builtin(name).unwrap();
            for arch in Arch::ALL {
                for denied in [DeniedAction::Errno, DeniedAction::Kill] {
                    let (balanced, linear) =
                        super::super::compile::both_layouts(&list, denied, arch);
                    let target = if arch == Arch::Amd64 {
                        0xC000_003E
                    } else {
                        0xC000_00B7
                    };
                    for (b, l) in balanced.iter().zip(&linear) {
                        assert!(
                            b.len() < l.len() + 2 * l.len() / 3,
                            "{name} {arch}: {} vs {}",
                            b.len(),
                            l.len()
                        );
                        for audit_arch in [target, 0x4000_0003] {
                            for nr in (0..600).chain([0x4000_0027, u32::MAX]) {
                                for args in probes(&list) {
                                    let data = seccomp_data(nr, audit_arch, args);
                                    assert_eq!(
                                        run(b, &data),
                                        run(l, &data),
                                        "{name} {arch} {denied:?} nr {nr} args {args:x?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_answered_filter_gives_each_its_errno_and_allows_the_rest() {
        use crate::seccomp::answered_syscalls;
        for arch in Arch::ALL {
            let program = super::super::compile::answered_program(arch);
            let target = match arch {
                Arch::Amd64 => 0xC000_003E,
                Arch::Arm64 => 0xC000_00B7,
            };
            let mut answered = BTreeMap::new();
            for answer in answered_syscalls() {
                if let Some(nr) = crate::seccomp::table::number(arch, &answer.name) {
                    answered.insert(nr as u32, answer.errno.raw() as u32);
                }
            }
            println!("answered set on {arch}: {} syscalls", answered.len());
            assert!(answered.len() >= 15, "{arch}: {}", answered.len());
            for nr in 0..600 {
                let got = run(&program, &seccomp_data(nr, target, [0; 6]));
                let want = match answered.get(&nr) {
                    Some(&errno) => libc::SECCOMP_RET_ERRNO | errno,
                    None => libc::SECCOMP_RET_ALLOW,
                };
                assert_eq!(got, want, "{arch} nr {nr}");
            }
            // A foreign ABI is killed by the architecture check.
            let foreign = run(&program, &seccomp_data(39, 0x4000_0003, [0; 6]));
            assert_eq!(foreign, libc::SECCOMP_RET_KILL_PROCESS, "{arch}");
        }
    }

    #[test]
    fn a_decision_takes_a_few_instructions_not_hundreds() {
        let list = Allowlist::builtin("python-strict").unwrap();
        let program = crate::seccomp::compile(&list, DeniedAction::Errno, Arch::Amd64).unwrap();
        let allowlist = program.programs().last().unwrap();
        let steps = |nr| run_counting(allowlist, &seccomp_data(nr, 0xC000_003E, [0; 6])).1;
        // read, write, getpid, exit_group, and numbers past the list.
        for nr in [0, 1, 39, 231, 500, 1000] {
            assert!(steps(nr) <= 24, "nr {nr}: {} steps", steps(nr));
        }
    }
}
