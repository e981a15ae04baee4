//! Ordinary Python must get `ok`: a policy so strict that it breaks everyday
//! programs is a bug too.

mod common;

use common::{Case, describe};
use pyward::{Entrypoint, InputFile, Submission, Verdict};

#[test]
fn standard_library_imports_and_work() {
    let code = r#"
import json, re, hashlib, sqlite3, threading, collections, itertools, functools, datetime
import decimal, fractions, math, random, statistics, struct, base64, zlib, gzip, bz2, lzma
import csv, io, textwrap, string, heapq, bisect, array, copy, enum, dataclasses, typing
import pathlib, tempfile, shutil, glob, time, uuid, secrets, hmac, unicodedata, locale
import asyncio, concurrent.futures, queue, contextlib, logging, argparse, pickle, xml.etree.ElementTree
db = sqlite3.connect(':memory:')
db.execute('create table t (x)'); db.executemany('insert into t values (?)', [(i,) for i in range(100)])
total = db.execute('select sum(x) from t').fetchone()[0]
digest = hashlib.sha256(json.dumps({'total': total}).encode()).hexdigest()[:12]
async def main():
    return sum(await asyncio.gather(*(asyncio.sleep(0, result=i) for i in range(5))))
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    squares = sum(pool.map(lambda x: x * x, range(10)))
print(total, digest, asyncio.run(main()), squares, re.sub(r'\d', '#', 'a1b2'), len(uuid.uuid4().hex))
"#;
    Case::code("strict", code).expect_stdout("4950 ddac82c17c6f 10 285 a#b# 32\n");
}

#[test]
fn threads_run_and_join() {
    let code = "import threading\nresults = []\nthreads = [threading.Thread(target=results.append, args=(i,)) for i in range(8)]\nfor t in threads: t.start()\nfor t in threads: t.join()\nprint(sorted(results))";
    Case::code("strict", code).expect_stdout("[0, 1, 2, 3, 4, 5, 6, 7]\n");
}

#[test]
fn reads_stdin_to_the_end() {
    let code = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))";
    Case::code("strict", code)
        .stdin(b"1 2 3\n4 5\n")
        .expect_stdout("15\n");
}

#[test]
fn empty_stdin_is_end_of_file() {
    Case::code("strict", "import sys\nprint(repr(sys.stdin.read()))").expect_stdout("''\n");
}

#[test]
fn writes_and_reads_tmp_and_the_work_dir() {
    let code = "import os, tempfile\nopen('/tmp/a.txt', 'w').write('tmp ')\nopen('out.txt', 'w').write('work')\nwith tempfile.NamedTemporaryFile() as f: f.write(b'x')\nprint(open('/tmp/a.txt').read() + open('out.txt').read(), os.getcwd())";
    Case::code("strict", code).expect_stdout("tmp work /work\n");
}

#[test]
fn runs_a_file_with_its_inputs_and_arguments() {
    let main =
        "import sys, helper\nprint(helper.greet(sys.argv[1:]), open('data/in.txt').read().strip())";
    let submission = Submission {
        entrypoint: Entrypoint::File("main.py".into()),
        files: vec![
            InputFile {
                path: "main.py".into(),
                contents: main.into(),
            },
            InputFile {
                path: "helper.py".into(),
                contents: b"def greet(a): return 'hi ' + ','.join(a)".to_vec(),
            },
            InputFile {
                path: "data/in.txt".into(),
                contents: b"input file\n".to_vec(),
            },
        ],
        args: vec!["x".into(), "y z".into()],
        ..Submission::code("")
    };
    let case = Case {
        policy: pyward::SandboxPolicy::builtin("strict").unwrap(),
        submission,
    };
    case.expect_stdout("hi x,y z input file\n");
}

#[test]
fn bytes_that_are_not_utf8_come_back_intact() {
    let code = "import sys\nsys.stdout.buffer.write(bytes(range(256)))\nsys.stderr.buffer.write(b'\\xff\\xfe')";
    for outcome in Case::code("strict", code).expect(Verdict::Ok) {
        assert_eq!(
            outcome.stdout.bytes,
            (0..=255u8).collect::<Vec<_>>(),
            "{}",
            describe(&outcome)
        );
        assert_eq!(outcome.stderr.bytes, b"\xff\xfe");
    }
}

#[test]
fn a_failing_program_is_a_runtime_error_with_its_exit_code() {
    for outcome in Case::code("strict", "import sys\nprint('partial')\nsys.exit(3)")
        .expect(Verdict::RuntimeError)
    {
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.stdout.bytes, b"partial\n");
    }
    for outcome in Case::code("strict", "raise ValueError('boom')").expect(Verdict::RuntimeError) {
        assert!(String::from_utf8_lossy(&outcome.stderr.bytes).contains("ValueError: boom"));
    }
}

#[test]
fn a_signal_the_program_sends_itself_is_signaled() {
    for outcome in Case::code(
        "strict",
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)",
    )
    .expect(Verdict::Signaled)
    {
        assert_eq!(outcome.signal, Some(libc::SIGTERM));
    }
}

#[test]
fn standard_allows_subprocess_and_multiprocessing() {
    let code = r#"
import subprocess, multiprocessing, sys
out = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True, check=True).stdout.strip()
def square(x):
    return x * x
if __name__ == '__main__':
    with multiprocessing.Pool(2) as pool:
        print(out, sum(pool.map(square, range(10))))
"#;
    Case::code("standard", code).expect_stdout("42 285\n");
}

#[test]
fn usage_is_reported() {
    for outcome in Case::code(
        "strict",
        "x = bytearray(32 << 20)\nx[::4096] = b'y' * len(x[::4096])\nsum(range(3_000_000))",
    )
    .expect(Verdict::Ok)
    {
        let usage = outcome.usage;
        assert!(usage.peak_memory_bytes >= 32 << 20, "{usage:?}");
        assert!(
            usage.cpu > std::time::Duration::ZERO && usage.wall >= usage.cpu / 2,
            "{usage:?}"
        );
    }
}

#[test]
fn free_space_of_tmp_and_the_work_dir_can_be_asked() {
    // statfs and fstatfs: shutil.disk_usage and os.statvfs.
    let code = "import os, shutil\nu = shutil.disk_usage('/tmp')\nv = os.statvfs('.')\nfd = os.open('/tmp', os.O_RDONLY)\nw = os.fstatvfs(fd)\nprint(u.total > 0, u.free <= u.total, v.f_bsize > 0, w.f_blocks > 0)";
    Case::code("strict", code).expect_stdout("True True True True\n");
}

#[test]
fn copies_across_file_systems_keep_going_without_xattrs() {
    // shutil copies xattrs and ignores ENOTSUP; EPERM made every copy fail.
    let code = r#"
import os, shutil, errno
os.makedirs('src/sub'); open('src/sub/a.txt', 'w').write('a'); open('b.txt', 'w').write('b')
shutil.copy2('b.txt', '/tmp/b.txt')
shutil.copytree('src', '/tmp/tree')
shutil.move('/tmp/tree', 'moved')
try:
    os.setxattr('b.txt', 'user.k', b'v')
except OSError as e:
    print(errno.errorcode[e.errno])
print(open('/tmp/b.txt').read(), open('moved/sub/a.txt').read(), os.listdir('moved'))
"#;
    Case::code("strict", code).expect_stdout("ENOTSUP\nb a ['sub']\n");
}

#[test]
fn a_refused_privileged_call_is_an_error_the_program_survives() {
    // chroot and clock_settime are answered EPERM, as the kernel would answer
    // an unprivileged caller: what the program printed before is not lost.
    let code = r#"
import os, time
print('before', flush=True)
for name, call in [('chroot', lambda: os.chroot('/nonexistent')),
                   ('clock_settime', lambda: time.clock_settime(time.CLOCK_REALTIME, 0)),
                   ('sethostname', lambda: __import__('socket').sethostname('x'))]:
    try:
        call()
    except PermissionError as e:
        print(name, e.errno)
print('after')
"#;
    Case::code("strict", code)
        .expect_stdout("before\nchroot 1\nclock_settime 1\nsethostname 1\nafter\n");
}

#[test]
fn localhost_and_the_sandboxs_own_name_resolve_without_a_network() {
    // Servers and tests bind to "localhost"; on every runtime and image it
    // resolves from /etc/hosts, with no DNS and no network.
    // (glibc's myhostname module, which the images use, answers 127.0.0.2 for
    // the hostname: a loopback address all the same.)
    let code = "import ipaddress, socket\nprint(socket.gethostbyname('localhost'), socket.gethostname(), ipaddress.ip_address(socket.gethostbyname(socket.gethostname())).is_loopback)";
    Case::code("strict", code).expect_stdout("127.0.0.1 pyward True\n");
}

#[test]
fn service_and_protocol_names_resolve_from_etc() {
    // netbase's /etc/services and /etc/protocols: the host's, bound
    // read-only, or the image's.
    let code = "import socket\nprint(socket.getservbyname('http', 'tcp'), socket.getprotobyname('tcp'), socket.getaddrinfo('localhost', 'http', type=socket.SOCK_STREAM)[0][4][1])";
    Case::code("strict", code).expect_stdout("80 6 80\n");
}

#[test]
fn fd_signal_and_limit_calls_of_the_standard_library_work() {
    // Each was denied (EPERM) and each touches only the caller's own fds,
    // mappings, signals or processes.
    let code = r#"
import mmap, os, resource, signal
m = mmap.mmap(-1, 4096); m[:2] = b'hi'; m.flush()
r, w = os.pipe()
e = os.eventfd(0); os.eventfd_write(e, 3)
f = os.memfd_create('x'); os.write(f, b'abc'); os.lseek(f, 0, 0)
src = os.open('/tmp/src', os.O_RDWR | os.O_CREAT); os.write(src, b'xyz'); os.lseek(src, 0, 0)
copied = os.copy_file_range(src, os.open('/tmp/copy', os.O_RDWR | os.O_CREAT), 3)
spliced = os.splice(f, w, 3, offset_src=0)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
os.kill(os.getpid(), signal.SIGUSR1)
pending = signal.sigpending()
info = signal.sigtimedwait([signal.SIGUSR1], 1)
try:
    resource.prlimit(-1, resource.RLIMIT_CORE)
except ProcessLookupError:
    missing = 'ESRCH'
print(os.eventfd_read(e), copied, spliced, os.read(r, 3), sorted(pending) == [signal.SIGUSR1], info.si_signo == signal.SIGUSR1, missing, resource.prlimit(os.getpid(), resource.RLIMIT_CORE))
"#;
    Case::code("strict", code).expect_stdout("3 3 3 b'abc' True True ESRCH (0, 0)\n");
}

#[test]
fn ownership_scheduling_and_id_calls_get_the_kernels_own_answers() {
    // Allowed now, since without capabilities the kernel itself refuses
    // what would be a privilege: a chown to one's own ids and a switch to
    // one's own uid work, a chown to root and a raised priority do not.
    let code = r#"
import os
open('f', 'w').close()
os.chown('f', os.getuid(), os.getgid())
try:
    os.chown('f', 0, 0)
except PermissionError:
    print('chown to root refused')
os.setuid(os.getuid()); os.setresgid(os.getgid(), os.getgid(), os.getgid())
print(os.sched_getscheduler(0) == os.SCHED_OTHER, os.getpriority(os.PRIO_PROCESS, 0), os.nice(1))
try:
    os.nice(-5)
except PermissionError:
    print('higher priority refused')
os.sched_setaffinity(0, os.sched_getaffinity(0))
"#;
    Case::code("strict", code)
        .expect_stdout("chown to root refused\nTrue 0 1\nhigher priority refused\n");
}
