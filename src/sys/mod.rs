//! The only home of `unsafe` and raw syscalls in pyward: clone, mounts,
//! pivot_root, capabilities, rlimits, fds, cgroup files and output files.
//! Each unsafe block says why it is sound. Code here knows nothing of policies or verdicts.

pub mod caps;
pub mod cgroup;
pub mod clone;
pub mod files;
pub mod host;
pub mod landlock;
pub mod netns;
pub mod probe;
pub mod process;
pub mod syscall_probe;
pub mod unix;
