//! Syscall names to numbers, per architecture (from the `syscalls` crate's tables).

use crate::arch::Arch;
use std::str::FromStr;

/// The syscall number of `name` on `arch`, or `None` if `arch` has no such syscall.
///
/// Names are the kernel's (as strace and libseccomp print them). Two quirks of
/// the `syscalls` crate's aarch64 table are corrected here: it calls
/// `newfstatat` `fstatat`, and it lists the 32-bit-only time64 calls (403 to
/// 423: `clock_gettime64`, `ppoll_time64`, ...), which arm64 processes do not have.
pub(crate) fn number(arch: Arch, name: &str) -> Option<i64> {
    match arch {
        Arch::Amd64 => syscalls::x86_64::Sysno::from_str(name)
            .ok()
            .map(|s| i64::from(s.id())),
        Arch::Arm64 => {
            if name == "fstatat" {
                return None;
            }
            let name = if name == "newfstatat" {
                "fstatat"
            } else {
                name
            };
            syscalls::aarch64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id()))
                .filter(|nr| !(403..=423).contains(nr))
        }
    }
}

/// Whether `name` is a syscall on at least one supported architecture.
pub(crate) fn exists(name: &str) -> bool {
    Arch::ALL.iter().any(|&arch| number(arch, name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_kernel_tables() {
        assert_eq!(number(Arch::Amd64, "getpid"), Some(39));
        assert_eq!(number(Arch::Arm64, "getpid"), Some(172));
        assert_eq!(number(Arch::Amd64, "newfstatat"), Some(262));
        assert_eq!(number(Arch::Arm64, "newfstatat"), Some(79));
        assert_eq!(number(Arch::Amd64, "clone3"), Some(435));
        assert_eq!(number(Arch::Arm64, "clone3"), Some(435));
        assert_eq!(number(Arch::Arm64, "open"), None);
        assert_eq!(number(Arch::Arm64, "clock_gettime64"), None);
        assert_eq!(number(Arch::Arm64, "sched_rr_get_interval_time64"), None);
        assert_eq!(number(Arch::Arm64, "clone3"), Some(435));
        assert!(!exists("no_such_syscall"));
        assert!(exists("fork") && exists("ppoll"));
    }
}
