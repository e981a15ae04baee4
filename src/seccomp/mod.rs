//! Seccomp: named syscall allowlists (reviewed data under policies/seccomp/)
//! compiled to BPF with seccompiler for x86_64 and aarch64, and exported as
//! Docker/OCI seccomp JSON from the same source.
//!
//! Depends on `policy` (for `DeniedAction`) and `arch` only. Installing a
//! filter is the caller's business (the native runtime's payload, right
//! before execve); nothing here installs a filter on the calling thread.
//!
//! The model: a syscall on the allowlist (with its argument conditions
//! holding) is allowed; a syscall in the dangerous set kills the process
//! (`security_violation`); anything else gets the policy's [`DeniedAction`]
//! (EPERM or kill); a syscall in the answered set gets its fixed errno
//! (`clone3` ENOSYS so that glibc falls back to `clone`, whose flags can be
//! checked; the xattr calls EOPNOTSUPP; chroot and the clock setters EPERM). Every filter checks the audit architecture, so
//! the i386 ABI is killed, and x32 numbers never match an allowed number.
//! See `compile.rs` for how the filters are stacked, and docs/SECURITY.md.
//!
//! [`DeniedAction`]: crate::policy::DeniedAction

mod allowlist;
mod compile;
mod docker;
mod error;
mod layout;
mod table;
#[cfg(test)]
mod tests;

pub use allowlist::{
    Allowlist, Answer, AnswerErrno, ArgCondition, ArgOp, BUILTIN_ALLOWLISTS, SyscallRule,
    answered_syscalls, dangerous_syscalls,
};
pub use compile::{SeccompProgram, compile};
pub use docker::docker_profile;
pub use error::{ArgProblem, SeccompError};
