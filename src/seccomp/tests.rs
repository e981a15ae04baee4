//! The compiled filters, installed in forked children and probed with raw
//! syscalls. Each child exits 0 on success and with a distinct code for each
//! failed check; a kill shows as `Signaled(SIGSYS)`. The "unfiltered" test
//! shows the same probes behave differently without a filter, so each
//! filtered result comes from the filter.

use super::*;
use crate::arch::Arch;
use crate::policy::DeniedAction;
use crate::sys::probe::run_in_fork;
use crate::sys::syscall_probe::{ProbeCall, RawFork, call, fork_raw};
use nix::errno::Errno;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::ffi::CString;

const FILTER_FAILED: i32 = 100;

fn program(list: &str, denied: DeniedAction) -> SeccompProgram {
    compile(&Allowlist::builtin(list).unwrap(), denied, Arch::host()).unwrap()
}

/// Runs `body` in a child after installing `programs` in order.
fn run_filtered(programs: &[seccompiler::BpfProgram], body: impl FnOnce() -> i32) -> WaitStatus {
    let programs = programs.to_vec();
    run_in_fork(move || {
        // A SIGSYS kill would otherwise dump core into the working directory.
        if setrlimit(Resource::RLIMIT_CORE, 0, 0).is_err() {
            return FILTER_FAILED + 1;
        }
        for p in &programs {
            if seccompiler::apply_filter(p).is_err() {
                return FILTER_FAILED;
            }
        }
        body()
    })
    .expect("fork")
}

fn run_under(list: &str, denied: DeniedAction, body: impl FnOnce() -> i32) -> WaitStatus {
    run_filtered(program(list, denied).programs(), body)
}

/// 0 if `probe` failed with `errno`, else `code`.
fn expect_errno(probe: ProbeCall, errno: Errno, code: i32) -> i32 {
    if call(probe) == Err(errno) { 0 } else { code }
}

fn assert_exited_0(status: WaitStatus) {
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

fn assert_sigsys(status: WaitStatus) {
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "expected a SIGSYS kill, got {status:?}"
    );
}

#[test]
fn unfiltered_probes_behave_differently() {
    let status = run_in_fork(|| {
        if call(ProbeCall::Mknodat) != Err(Errno::ENOENT) {
            return 1;
        }
        if call(ProbeCall::Clone3) != Err(Errno::EINVAL) {
            return 2;
        }
        // The answered set's probes, as the kernel answers them to root.
        if call(ProbeCall::Chroot) != Err(Errno::ENOENT) {
            return 20;
        }
        if call(ProbeCall::ClockSettime) != Err(Errno::EINVAL) {
            return 21;
        }
        if !matches!(
            call(ProbeCall::Fsetxattr),
            Err(Errno::EFAULT | Errno::EBADF)
        ) {
            return 22;
        }
        if call(ProbeCall::IoctlBadFd(libc::TIOCSTI)) != Err(Errno::EBADF) {
            return 3;
        }
        if call(ProbeCall::Socket(libc::AF_NETLINK)).is_err() {
            return 4;
        }
        if !matches!(
            fork_raw(RawFork::Clone { extra: 0 }),
            Ok(WaitStatus::Exited(_, 0))
        ) {
            return 5;
        }
        0
    });
    assert_exited_0(status.unwrap());
}

#[test]
fn strict_allows_getpid_and_denies_others_with_eperm() {
    let status = run_under("python-strict", DeniedAction::Errno, || {
        if call(ProbeCall::Getpid) != Ok(i64::from(std::process::id())) {
            return 1;
        }
        let mut code = expect_errno(ProbeCall::Mknodat, Errno::EPERM, 2);
        if code == 0 {
            code = expect_errno(ProbeCall::Sethostname, Errno::EPERM, 3);
        }
        code
    });
    assert_exited_0(status);
}

#[test]
fn strict_ioctl_allows_only_listed_requests() {
    let status = run_under("python-strict", DeniedAction::Errno, || {
        let code = expect_errno(ProbeCall::IoctlBadFd(libc::TIOCSTI), Errno::EPERM, 1);
        if code != 0 {
            return code;
        }
        expect_errno(ProbeCall::IoctlBadFd(libc::TCGETS), Errno::EBADF, 2)
    });
    assert_exited_0(status);
}

#[test]
fn strict_sockets_only_unix_and_ip() {
    let status = run_under("python-strict", DeniedAction::Errno, || {
        if call(ProbeCall::Socket(libc::AF_UNIX)).is_err() {
            return 1;
        }
        if call(ProbeCall::Socket(libc::AF_INET6)).is_err() {
            return 2;
        }
        expect_errno(ProbeCall::Socket(libc::AF_NETLINK), Errno::EPERM, 3)
    });
    assert_exited_0(status);
}

#[test]
fn kill_action_kills_a_denied_syscall() {
    assert_sigsys(run_under("python-strict", DeniedAction::Kill, || {
        let _ = call(ProbeCall::Mknodat);
        1
    }));
}

/// A dangerous syscall is killed even though the allowlist filter answers EPERM.
fn assert_dangerous_killed(probe: ProbeCall) {
    for list in ["python-strict", "python-standard"] {
        assert_sigsys(run_under(list, DeniedAction::Errno, || {
            let _ = call(probe);
            1
        }));
    }
}

#[test]
fn ptrace_is_killed() {
    assert_dangerous_killed(ProbeCall::Ptrace);
}

#[test]
fn unshare_is_killed() {
    assert_dangerous_killed(ProbeCall::Unshare);
}

#[test]
fn mount_is_killed() {
    assert_dangerous_killed(ProbeCall::Mount);
}

#[test]
fn bpf_is_killed() {
    assert_dangerous_killed(ProbeCall::Bpf);
}

#[test]
fn keyctl_is_killed() {
    assert_dangerous_killed(ProbeCall::Keyctl);
}

#[test]
fn io_uring_setup_is_killed() {
    assert_dangerous_killed(ProbeCall::IoUringSetup);
}

#[test]
fn strict_refuses_new_processes_standard_allows_them() {
    let fork_probes = || {
        let mut probes = vec![RawFork::Clone { extra: 0 }];
        #[cfg(target_arch = "x86_64")]
        probes.push(RawFork::Fork);
        probes
    };
    let status = run_under("python-strict", DeniedAction::Errno, || {
        for (i, how) in fork_probes().into_iter().enumerate() {
            if fork_raw(how) != Err(Errno::EPERM) {
                return 1 + i as i32;
            }
        }
        0
    });
    assert_exited_0(status);
    let status = run_under("python-standard", DeniedAction::Errno, || {
        for (i, how) in fork_probes().into_iter().enumerate() {
            if !matches!(fork_raw(how), Ok(WaitStatus::Exited(_, 0))) {
                return 1 + i as i32;
            }
        }
        0
    });
    assert_exited_0(status);
}

#[test]
fn standard_refuses_clone_with_namespace_flags() {
    // As root without a filter this clone succeeds (see unfiltered_probes_...).
    for extra in [libc::CLONE_NEWNS, libc::CLONE_NEWUSER, libc::CLONE_NEWNET] {
        let status = run_under("python-standard", DeniedAction::Errno, || {
            if fork_raw(RawFork::Clone { extra }) == Err(Errno::EPERM) {
                0
            } else {
                1
            }
        });
        assert_exited_0(status);
    }
}

#[test]
fn clone3_gets_enosys_whatever_the_denied_action() {
    for list in ["python-strict", "python-standard"] {
        for denied in [DeniedAction::Errno, DeniedAction::Kill] {
            let status = run_under(list, denied, || {
                expect_errno(ProbeCall::Clone3, Errno::ENOSYS, 1)
            });
            assert_exited_0(status);
        }
    }
}

#[test]
fn answered_syscalls_get_their_errno_whatever_the_denied_action() {
    // Killing these lost the program's output; the kernel would refuse them
    // anyway (chroot, clock_settime) or they mean "not supported" (xattrs).
    for list in ["python-strict", "python-standard"] {
        for denied in [DeniedAction::Errno, DeniedAction::Kill] {
            let status = run_under(list, denied, || {
                let checks = [
                    expect_errno(ProbeCall::Chroot, Errno::EPERM, 1),
                    expect_errno(ProbeCall::ClockSettime, Errno::EPERM, 2),
                    expect_errno(ProbeCall::Fsetxattr, Errno::EOPNOTSUPP, 3),
                    expect_errno(ProbeCall::Clone3, Errno::ENOSYS, 4),
                ];
                checks.into_iter().find(|&code| code != 0).unwrap_or(0)
            });
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "{list} {denied:?}: {status:?}"
            );
        }
    }
}

#[test]
fn statfs_is_allowed_on_both_lists() {
    for list in ["python-strict", "python-standard"] {
        let status = run_under(list, DeniedAction::Kill, || {
            if call(ProbeCall::Statfs) == Ok(0) {
                0
            } else {
                1
            }
        });
        assert!(
            matches!(status, WaitStatus::Exited(_, 0)),
            "{list}: {status:?}"
        );
    }
}

#[test]
fn installing_the_allowlist_first_would_block_the_other_filters() {
    // Why the allowlist goes last: once it is in place, the prctl and seccomp
    // calls that install another filter are denied.
    let program = program("python-strict", DeniedAction::Errno);
    let mut reversed = program.programs().to_vec();
    reversed.reverse();
    assert!(matches!(
        run_filtered(&reversed, || 0),
        WaitStatus::Exited(_, FILTER_FAILED)
    ));
}

/// A filter giving `action` to mknodat and allowing everything else.
fn mknodat_filter(action: seccompiler::SeccompAction) -> seccompiler::BpfProgram {
    let nr = table::number(Arch::host(), "mknodat").unwrap();
    let rules = std::collections::BTreeMap::from([(nr, Vec::new())]);
    let target = std::env::consts::ARCH.try_into().unwrap();
    let filter =
        seccompiler::SeccompFilter::new(rules, seccompiler::SeccompAction::Allow, action, target);
    filter.unwrap().try_into().unwrap()
}

#[test]
fn the_kernel_keeps_the_most_severe_action_and_on_ties_the_newest_filter() {
    use seccompiler::SeccompAction::{Errno as E, KillProcess};
    let (eacces, enotsup) = (E(libc::EACCES as u32), E(libc::ENOTSUP as u32));
    // errno beats allow, in either order.
    let errno_first = [
        mknodat_filter(eacces.clone()),
        mknodat_filter(seccompiler::SeccompAction::Log),
    ];
    assert_exited_0(run_filtered(&errno_first, || {
        expect_errno(ProbeCall::Mknodat, Errno::EACCES, 1)
    }));
    // Two errnos: the one installed last wins.
    let both = [
        mknodat_filter(eacces.clone()),
        mknodat_filter(enotsup.clone()),
    ];
    assert_exited_0(run_filtered(&both, || {
        expect_errno(ProbeCall::Mknodat, Errno::ENOTSUP, 1)
    }));
    let both = [mknodat_filter(enotsup), mknodat_filter(eacces.clone())];
    assert_exited_0(run_filtered(&both, || {
        expect_errno(ProbeCall::Mknodat, Errno::EACCES, 1)
    }));
    // kill beats errno even when the errno filter is newer.
    let kill_first = [mknodat_filter(KillProcess), mknodat_filter(eacces)];
    assert_sigsys(run_filtered(&kill_first, || {
        let _ = call(ProbeCall::Mknodat);
        1
    }));
}

#[test]
fn threads_work_under_strict_with_kill() {
    // pthread_create: clone3 -> ENOSYS, then clone(CLONE_THREAD | ...) allowed.
    let status = run_under(
        "python-strict",
        DeniedAction::Kill,
        || match std::thread::spawn(|| 7).join() {
            Ok(7) => 0,
            _ => 1,
        },
    );
    assert_exited_0(status);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_syscall_numbers_never_run() {
    let status = run_under("python-standard", DeniedAction::Errno, || {
        expect_errno(ProbeCall::X32Getpid, Errno::EPERM, 1)
    });
    assert_exited_0(status);
    assert_sigsys(run_under("python-standard", DeniedAction::Kill, || {
        let _ = call(ProbeCall::X32Getpid);
        1
    }));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn i386_abi_is_killed() {
    use crate::sys::syscall_probe::i386_getpid;
    let control = run_in_fork(|| {
        if i386_getpid() == i64::from(std::process::id()) {
            0
        } else {
            1
        }
    })
    .unwrap();
    if let WaitStatus::Signaled(_, Signal::SIGSEGV, _) = control {
        eprintln!("i386_abi_is_killed: this kernel has no IA-32 emulation; nothing to check");
        return;
    }
    assert_exited_0(control);
    for denied in [DeniedAction::Errno, DeniedAction::Kill] {
        assert_sigsys(run_under("python-standard", denied, || {
            let _ = i386_getpid();
            1
        }));
    }
}

/// Installs the list's filter in a child, then execs /usr/bin/python3 on a probe script.
fn python_under(list: &str, denied: DeniedAction, script: &str) -> WaitStatus {
    let program = program(list, denied);
    let path = format!(
        "{}/policies/seccomp/probes/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let python = c"/usr/bin/python3";
    let argv = [CString::from(python), CString::new(path).unwrap()];
    let env = [c"PATH=/usr/bin:/bin", c"LANG=C.UTF-8", c"TMPDIR=/tmp"];
    run_filtered(program.programs(), move || {
        use std::os::fd::AsFd;
        let Ok(null) = nix::fcntl::open(
            c"/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        ) else {
            return 2;
        };
        if nix::unistd::dup2_stdin(null.as_fd()).is_err()
            || nix::unistd::dup2_stdout(null.as_fd()).is_err()
        {
            return 3;
        }
        // A hung interpreter dies of SIGALRM instead of hanging the test run.
        nix::unistd::alarm::set(120);
        let _ = nix::unistd::execve(python, &argv, &env);
        4
    })
}

#[test]
fn python_runs_under_strict() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        panic!("/usr/bin/python3 is needed for this test");
    }
    for denied in [DeniedAction::Errno, DeniedAction::Kill] {
        assert_exited_0(python_under("python-strict", denied, "strict.py"));
    }
}

#[test]
fn python_runs_subprocess_and_multiprocessing_under_standard() {
    for denied in [DeniedAction::Errno, DeniedAction::Kill] {
        assert_exited_0(python_under("python-standard", denied, "standard.py"));
    }
}

#[test]
fn python_subprocess_fails_under_strict() {
    // The strict list must not be accidentally as open as the standard one.
    let status = python_under("python-strict", DeniedAction::Errno, "standard.py");
    assert!(
        matches!(status, WaitStatus::Exited(_, code) if code != 0),
        "{status:?}"
    );
}
