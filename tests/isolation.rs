//! Every isolation property: an attack, and proof that it fails for the right reason.

mod common;

use common::{Case, describe, stderr};
use pyward::{SandboxPolicy, Submission, Verdict};
use std::net::{TcpListener, UdpSocket};

/// Runs `code` under strict and expects it to print exactly `expected`.
fn prints(code: &str, expected: &str) {
    Case::code("strict", code).expect_stdout(expected);
}

#[test]
fn a_listener_in_the_hosts_network_namespace_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__, e.errno)"
    );
    // native: lo is down in a fresh network namespace, so there is no route at
    // all. docker: its `none` network has the container's own lo up, where
    // nothing listens. Either way the host's listener (checked below) is unreachable.
    Case::code("strict", &code).expect_stdout_each(|runtime| match runtime {
        r if common::is_docker(r) => "ConnectionRefusedError 111\n".into(),
        _ => "OSError 101\n".into(),
    });
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "nothing may have reached the host's listener"
    );
}

#[test]
fn no_route_out_of_the_sandbox() {
    // A UDP connect() only looks a route up; it sends nothing.
    let code = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n    s.connect(('192.0.2.1', 53))\n    print('routed')\nexcept OSError as e:\n    print(e.errno)";
    prints(code, "101\n");
}

#[test]
fn loopback_policy_talks_to_itself_but_not_to_the_host() {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let text = "[seccomp]\nallowlist = \"python-strict\"\n";
    let mut policy =
        SandboxPolicy::from_toml("loop", &format!("network = \"loopback\"\n{text}"), "test")
            .unwrap();
    policy.name = "loopback".into();
    let code = format!(
        "import socket\nsrv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\nc = socket.create_connection(srv.getsockname(), timeout=2)\nprint('self ok')\ntry:\n    socket.create_connection(('127.0.0.1', {host_port}), timeout=2)\n    print('reached host')\nexcept OSError as e:\n    print(type(e).__name__)"
    );
    let case = Case {
        policy,
        submission: Submission::code(code),
    };
    case.expect_stdout("self ok\nConnectionRefusedError\n");
}

#[test]
fn host_processes_are_invisible() {
    // Exactly two processes: pid 1 (pyward's stub natively, the container's
    // bootstrap under Docker, cold or pooled) and the program, its child.
    let code = "import os\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nppid = os.getppid()\nparent = ppid if ppid == 1 else open('/proc/%d/comm' % ppid).read().strip()\nprint(len(pids), pids[0], os.getpid() in pids, parent)";
    Case::code("strict", code).expect_stdout("2 1 True 1\n");
}

#[test]
fn host_files_outside_the_rootfs_are_not_there() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "secret").unwrap();
    let paths = [
        secret.path().display().to_string(),
        "/etc/shadow".into(),
        "/root".into(),
        "/home".into(),
        env!("CARGO_MANIFEST_DIR").into(),
        "/var/run/docker.sock".into(),
        "/sys/fs/cgroup".into(),
    ];
    let code = format!("import os\nfor p in {paths:?}:\n    print(p, os.path.exists(p))");
    let expected: String = paths.iter().map(|p| format!("{p} False\n")).collect();
    // Under Docker the root is the image's: /root and /home are its own (checked
    // below: empty or unreadable), and /sys/fs/cgroup is Docker's read-only view
    // of the container's own cgroup. The host's paths are not there.
    let docker_expected = expected
        .replace("/root False", "/root True")
        .replace("/home False", "/home True")
        .replace("/sys/fs/cgroup False", "/sys/fs/cgroup True");
    Case::code("strict", &code).expect_stdout_each(|runtime| match runtime {
        r if common::is_docker(r) => docker_expected.clone(),
        _ => expected.clone(),
    });
    prints(
        "import os\nprint(not os.path.exists('/etc/shadow') or not os.access('/etc/shadow', os.R_OK))\nprint(not os.path.exists('/home') or os.listdir('/home') == [])\nprint(not os.access('/root', os.R_OK))\nprint(not os.access('/sys/fs/cgroup', os.W_OK))",
        "True\nTrue\nTrue\nTrue\n",
    );
}

#[test]
fn the_root_filesystem_is_read_only() {
    // Creating a file checks the mount first: EROFS. (Opening an existing
    // root-owned file under /usr fails on permissions before the mount check.)
    let code = "import errno\nfor p in ['/usr/lib/pwned', '/usr/bin/pwned', '/etc/pwned', '/pwned', '/etc/passwd']:\n    try:\n        open(p, 'a')\n        print(p, 'WRITABLE')\n    except OSError as e:\n        print(p, errno.errorcode[e.errno])";
    // An existing file: natively the root-owned /etc/passwd belongs to the
    // namespace's root, and the mount check answers (EROFS); under Docker it is
    // owned by the real root and the permission check answers first (EACCES).
    Case::code("strict", code).expect_stdout_each(|runtime| {
        let passwd = if common::is_docker(runtime) { "EACCES" } else { "EROFS" };
        format!("/usr/lib/pwned EROFS\n/usr/bin/pwned EROFS\n/etc/pwned EROFS\n/pwned EROFS\n/etc/passwd {passwd}\n")
    });
}

#[test]
fn tmp_is_writable_but_not_executable() {
    let code = "import os, subprocess\nopen('/tmp/x.sh', 'w').write('#!/bin/sh\\necho ran\\n')\nos.chmod('/tmp/x.sh', 0o755)\ntry:\n    os.execv('/tmp/x.sh', ['x'])\nexcept OSError as e:\n    print('exec', e.strerror)";
    prints(code, "exec Permission denied\n");
}

#[test]
fn no_capabilities_and_no_new_privileges() {
    let code = "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\nfor k in ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs']:\n    print(k, status[k].strip())";
    prints(
        code,
        "CapInh 0000000000000000\nCapPrm 0000000000000000\nCapEff 0000000000000000\nCapBnd 0000000000000000\nCapAmb 0000000000000000\nNoNewPrivs 1\n",
    );
}

#[test]
fn runs_as_the_unprivileged_sandbox_user() {
    let code = "import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())\nimport pwd; print(pwd.getpwuid(os.getuid()).pw_name)";
    // Docker always lists the primary gid among the supplementary groups: no
    // group beyond the sandbox's own either way.
    Case::code("strict", code).expect_stdout_each(|runtime| match runtime {
        r if common::is_docker(r) => "65534 65534 65534 65534 [65534]\nsandbox\n".into(),
        _ => "65534 65534 65534 65534 []\nsandbox\n".into(),
    });
}

#[test]
fn root_inside_is_not_root_outside() {
    // setuid(0) needs CAP_SETUID, which is gone.
    let code = "import os\ntry:\n    os.setuid(0)\n    print('root')\nexcept PermissionError:\n    print('refused')";
    prints(code, "refused\n");
}

#[test]
fn only_stdio_is_inherited() {
    let code = "import os\nopen_fds = []\nfor fd in range(4096):\n    try:\n        os.fstat(fd)\n        open_fds.append(fd)\n    except OSError:\n        pass\nprint(open_fds)";
    prints(code, "[0, 1, 2]\n");
}

#[test]
fn proc_self_exe_is_not_writable() {
    let code = "import errno\ntry:\n    open('/proc/self/exe', 'wb')\n    print('WRITABLE')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])";
    for outcome in Case::code("strict", code).expect(Verdict::Ok) {
        let out = String::from_utf8_lossy(&outcome.stdout.bytes)
            .trim()
            .to_owned();
        assert!(
            ["ETXTBSY", "EROFS", "EACCES"].contains(&out.as_str()),
            "{}",
            describe(&outcome)
        );
    }
}

#[test]
fn hostname_and_environment_are_the_sandboxs_own() {
    // The test runner's environment (CARGO_*, PATH, ...) must not reach the
    // program: it sees exactly the policy's variables (Python adds LC_CTYPE;
    // Docker adds HOSTNAME).
    let case = Case::code(
        "strict",
        "import os, socket\nprint(socket.gethostname())\nfor k in sorted(os.environ):\n    if k not in ('LC_CTYPE', 'HOSTNAME'): print(k, os.environ[k])",
    );
    let expected: String = case
        .policy
        .environment(&Default::default())
        .iter()
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect();
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    case.expect_stdout(&format!("pyward\n{expected}"));
}

#[test]
fn a_setup_failure_is_a_sandbox_error_not_the_programs() {
    let mut policy = SandboxPolicy::builtin("strict").unwrap();
    policy.user.uid = 70000; // outside the 65536 mapped ids: setup must fail
    let case = Case {
        policy,
        submission: Submission::code("print('never')"),
    };
    // A uid outside the id map is a native-only way to make setup fail (Docker
    // maps no ids and runs uid 70000 fine); the Docker runtime's setup failure
    // (the work dir not unpacking) is covered by its verdict unit tests.
    for runtime in common::runtimes()
        .iter()
        .filter(|r| r.name().starts_with("native"))
    {
        let outcome = runtime.run(&case.policy, &case.submission).unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::SandboxError,
            "{}",
            describe(&outcome)
        );
        let message = outcome.message.clone().unwrap();
        assert!(
            message.starts_with("sandbox setup failed: could not "),
            "{message}"
        );
        assert!(outcome.stdout.bytes.is_empty(), "{}", stderr(&outcome));
    }
}

#[test]
fn udp_sockets_cannot_reach_the_host_either() {
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let code = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n    s.sendto(b'x', ('127.0.0.1', {port}))\n    print('sent')\nexcept OSError as e:\n    print(e.errno)"
    );
    // native: no route (lo is down). docker: the datagram goes to the
    // container's own lo, where nothing listens; the host receives nothing (below).
    Case::code("strict", &code).expect_stdout_each(|runtime| match runtime {
        r if common::is_docker(r) => "sent\n".into(),
        _ => "101\n".into(),
    });
    host.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    assert!(
        host.recv_from(&mut buf).is_err(),
        "the host received a datagram"
    );
}

#[test]
fn the_stub_behind_pid_1_is_out_of_reach() {
    // pid 1 is pyward's stub natively and pyward's bootstrap under Docker,
    // cold or pooled (not dumpable): the program may not read its fds,
    // memory or environment.
    let code = "import os\nfor p in ['/proc/1/fd', '/proc/1/environ', '/proc/1/mem']:\n    try:\n        os.listdir(p) if p.endswith('fd') else open(p, 'rb').read(1)\n        print(p, 'READABLE')\n    except PermissionError:\n        print(p, 'denied')\n    except OSError as e:\n        print(p, 'opened', e.strerror)";
    Case::code("strict", code)
        .expect_stdout("/proc/1/fd denied\n/proc/1/environ denied\n/proc/1/mem denied\n");
    // Under Docker pid 1 runs as the sandbox user like the program (Docker
    // has one user per container): it must be as unprivileged as the program.
    let pid1 = "s = dict(l.split(':\\t') for l in open('/proc/1/status').read().splitlines() if ':\\t' in l)\nprint(s['Uid'].split()[0], s['CapEff'].strip(), s['CapBnd'].strip(), s['NoNewPrivs'].strip())";
    for (runtime, outcome) in Case::code("strict", pid1).expect_each(Verdict::Ok) {
        if common::is_docker(runtime) {
            assert_eq!(
                String::from_utf8_lossy(&outcome.stdout.bytes),
                "65534 0000000000000000 0000000000000000 1\n",
                "{}",
                describe(&outcome)
            );
        }
    }
}

#[test]
fn sandboxes_running_side_by_side_cannot_talk() {
    // Abstract unix sockets live in the network namespace: a second sandbox
    // must not reach the first one's, while both run.
    let listener = "import socket, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0pyward-side-by-side')\ns.listen()\nprint('listening', flush=True)\ntime.sleep(3)";
    let connector = "import socket, time\ntime.sleep(1)\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0pyward-side-by-side')\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)";
    let first =
        std::thread::spawn(move || Case::code("strict", listener).expect_stdout("listening\n"));
    Case::code("strict", connector).expect_stdout("ConnectionRefusedError\n");
    first.join().unwrap();
    // Once the first sandbox is gone, nothing of it is left in any namespace.
    let rebind = "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0pyward-side-by-side')\nprint('bound')";
    Case::code("strict", rebind).expect_stdout("bound\n");
}

#[test]
fn the_kernels_knobs_under_proc_are_read_only_and_its_secrets_masked() {
    // As runc does: /proc/sys (ns_last_pid is mode 0666) and sysrq-trigger
    // refuse writes at open with EROFS, kcore, keys and the host's timers read
    // as empty, and /proc/acpi, asound, scsi are empty directories. The
    // native runtime, the warm path and Docker alike.
    let code = r#"
import errno, os
def attempt(path):
    try:
        with open(path, 'w'):
            return 'opened'
    except OSError as e:
        return errno.errorcode[e.errno]
print('ns_last_pid', attempt('/proc/sys/kernel/ns_last_pid'))
print('sys read', open('/proc/sys/kernel/ostype').read().strip())
ro = {}
for line in open('/proc/self/mountinfo'):
    fields = line.split()
    ro[fields[4]] = 'ro' in fields[5].split(',')
print('read-only', [p for p in ('/proc/sys', '/proc/irq', '/proc/bus', '/proc/fs') if os.path.exists(p) and not ro.get(p)])
print('masked', [p for p in ('/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug')
                 if os.path.exists(p) and open(p, 'rb').read(1)])
print('empty dirs', [p for p in ('/proc/acpi', '/proc/asound', '/proc/scsi') if os.path.exists(p) and os.listdir(p)])
"#;
    prints(
        code,
        "ns_last_pid EROFS\nsys read Linux\nread-only []\nmasked []\nempty dirs []\n",
    );
}

#[test]
fn landlock_refuses_a_write_the_mounts_alone_would_allow() {
    // /proc is mounted read-write and a process may raise its own OOM score
    // (on the warm path too: its payload is dumpable again after the change
    // of user, as an exec makes the cold path's), so only Landlock refuses
    // this write, and with its own errno: EACCES (a read-only mount says
    // EROFS). Landlock is a layer of the native runtime and its warm path; a
    // Docker container has none.
    let landlock = common::native().and_then(|native| native.landlock_abi());
    if landlock.is_none() {
        eprintln!("\n*** this kernel offers no Landlock: the write must then succeed ***\n");
    }
    let code = "import errno\ntry:\n    open('/proc/self/oom_score_adj', 'w').write('500')\n    print('wrote')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])";
    Case::code("strict", code).expect_stdout_each(|runtime| {
        if common::is_docker(runtime) || landlock.is_none() {
            "wrote\n".into()
        } else {
            "EACCES\n".into()
        }
    });
}
