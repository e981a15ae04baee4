//! Seccomp: named syscall allowlists (reviewed data under policies/seccomp/)
//! compiled to BPF with seccompiler for x86_64 and aarch64, and exported as
//! Docker/OCI seccomp JSON from the same source.
//!
//! Depends on `policy` (for `DeniedAction`) and `arch` only. Installing a
//! filter is the caller's business (the native runtime's payload, right
//! before execve); nothing here installs a filter on the calling thread.
