//! How the program starts in the container: its files, and the policy's own
//! seccomp filters on top of the container's.
//!
//! Files: Docker refuses `PUT /containers/{id}/archive` on a read-only rootfs
//! ("container rootfs is marked read-only"), and an archive uploaded into a
//! container never lands in its tmpfs mounts (the daemon writes to the layer
//! underneath). So the files travel the way stdin does: a tar built here with
//! the `tar` crate, ahead of the submission's stdin on the same stream.
//!
//! Filters: the container's seccomp profile also covers the bootstrap (pid 1),
//! which must fork the program, so it cannot refuse new processes. The program's process
//! therefore installs the native runtime's BPF filters (the same compiled
//! programs, for the policy's allowlist) before it execs the interpreter:
//! stacked filters only tighten, and the program gets exactly the native
//! runtime's syscall policy. Not under emulation (an image for another
//! architecture, run by qemu-user): qemu refuses the guest's
//! `PR_SET_SECCOMP` (EINVAL) and `seccomp()` (ENOSYS), so the runtime sends no
//! filters and the container's host-arch profile is the only filter.
//!
//! The container's command is a short Python bootstrap, which is the
//! container's pid 1 (no docker-init: one the program could not reach, see
//! `bootstrap`): read exactly the tar and the filters from fd 0 (unbuffered,
//! so not one byte of the program's stdin), unpack the tar into the `/work`
//! tmpfs as the sandbox user, fork the program's process, which installs the
//! filters with `prctl(PR_SET_SECCOMP)` and `execv`s python3 with the real
//! command line, and reap until the program has ended. With output files
//! declared (`files`) it also reads the files' spec from fd 0 itself, while
//! the program's process waits.
//!
//! A warm pool's container is started before its call exists, so its
//! command carries nothing of a call (`--wait`): its bootstrap imports what
//! it needs, prints `READY` on stdout and blocks on fd 0, where the call's
//! `warm_launch` brings a header (the same parameters as the cold command's
//! argv, and the program's environment) ahead of the same bytes as above.
//! It unpacks and installs the filters the same way, and always goes on as
//! for output files (with no path when the call declares none), so that it
//! can write the end trailer once the program is over (`files`); the
//! program runs in the fork of the interpreter that waited instead of
//! exec'ing a second one, which saves an interpreter's start (see
//! `bootstrap`).

use super::files::{COLLECTOR, OutputsSpec};
use super::host_config::WORK_DIR;
use crate::runtime::output_files::OutputCaps;
use crate::runtime::{Entrypoint, InputFile, RunError, Submission};

/// Exit status of the bootstrap when it could not unpack the files or install the filters.
pub const UNPACK_FAILED: i64 = 125;
/// The line the bootstrap prints on stderr when it fails.
pub const UNPACK_MESSAGE: &str = "pyward: sandbox setup failed in the container";

/// The container's command, and the bytes to send on its stdin.
#[derive(Debug)]
pub struct Launch {
    /// argv of the container's pid 1, the bootstrap.
    pub cmd: Vec<String>,
    /// The tar of the work dir (may be empty), the filters, the output
    /// files' spec (may be empty), then the submission's stdin.
    pub stdin: Vec<u8>,
    /// The declared output files, when there are any.
    pub outputs: Option<OutputsSpec>,
}

/// What a waiting bootstrap prints on stdout once it is ready for its call.
pub const READY: &[u8] = b"pyward: ready\n";

/// The command of a warm pool's container: the bootstrap, waiting for its
/// call, with the collector of output files (a call may declare some).
pub fn warm_cmd() -> Vec<String> {
    ["python3", "-s", "-c", &bootstrap(true), "--wait"]
        .map(str::to_owned)
        .to_vec()
}

/// What a waiting bootstrap reads for `submission`: a header of ten decimal
/// digits (the length of the JSON that follows), the JSON `{"argv": [...],
/// "env": {...}}` (the parameters the cold command carries on its argv, and
/// the program's environment, which the bootstrap lays over its own as
/// Docker lays a container's over the image's), then what `launch` sends on
/// stdin. The command is the pool's (`warm_cmd`).
pub fn warm_launch(
    submission: &Submission,
    filters: &[Vec<u8>],
    caps: OutputCaps,
    env: &[(String, String)],
) -> Result<Launch, RunError> {
    let cold = launch_forking(submission, filters, caps, true)?;
    let env: serde_json::Map<String, serde_json::Value> = env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let header = serde_json::json!({ "argv": cold.cmd[4..], "env": env }).to_string();
    let mut stdin = format!("{:010}", header.len()).into_bytes();
    stdin.extend_from_slice(header.as_bytes());
    stdin.extend_from_slice(&cold.stdin);
    Ok(Launch {
        cmd: warm_cmd(),
        stdin,
        outputs: cold.outputs,
    })
}

/// The command and stdin for `submission`, the program's process to install
/// `filters` (raw `struct sock_filter` arrays, in order) before it execs, and
/// the declared output files to come back under `caps`.
pub fn launch(
    submission: &Submission,
    filters: &[Vec<u8>],
    caps: OutputCaps,
) -> Result<Launch, RunError> {
    launch_forking(submission, filters, caps, false)
}

/// `launch`; with `always_fork`, the bootstrap forks the program and writes
/// the end trailer even when no output file is declared (a pooled call).
fn launch_forking(
    submission: &Submission,
    filters: &[Vec<u8>],
    caps: OutputCaps,
    always_fork: bool,
) -> Result<Launch, RunError> {
    let python = python_argv(submission)?;
    let outputs = OutputsSpec::new(submission, caps, always_fork)?;
    let mut stdin = if submission.files.is_empty() {
        Vec::new()
    } else {
        work_tar(&submission.files)?
    };
    let tar_len = stdin.len();
    let filter_lens: Vec<String> = filters.iter().map(|f| f.len().to_string()).collect();
    for filter in filters {
        stdin.extend_from_slice(filter);
    }
    let spec = outputs.as_ref().map(OutputsSpec::json).unwrap_or_default();
    stdin.extend_from_slice(&spec);
    stdin.extend_from_slice(&submission.stdin);
    let mut cmd = vec![
        "python3".to_owned(),
        "-s".to_owned(),
        "-c".to_owned(),
        bootstrap(outputs.is_some()),
    ];
    cmd.push(tar_len.to_string());
    cmd.push(filter_lens.join(","));
    cmd.push(spec.len().to_string());
    cmd.extend(python);
    Ok(Launch {
        cmd,
        stdin,
        outputs,
    })
}

/// argv[1]: the tar's length; argv[2]: the filters' lengths; argv[3]: the
/// output files' spec's length; argv[4:]: the program's command line.
///
/// The bootstrap is pid 1 of the container (no docker-init), and first of
/// all makes itself not dumpable: the program runs as the same user, and
/// could otherwise open `/proc/1/mem`, `/proc/1/environ` and `/proc/1/fd`
/// (qemu-user passes the `prctl` to the kernel, so this holds under
/// emulation too, where no guest filter applies). As init it ignores every
/// signal the program may send it (SIGKILL and SIGSTOP from inside the pid
/// namespace never reach it), but SIGINT and SIGTERM, which it forwards to
/// the program as docker-init did. Then it reads the tar and the filters
/// from fd 0, unpacks, and always forks the program's process, which gets
/// the interpreter's signal handlers back, installs the filters and execs
/// python3 (or, with output files, the bootstrap goes on with
/// `files::COLLECTOR`, which `collector` adds). It reaps every child (the
/// program's orphans are its own) until the program has ended, and ends
/// with the program's status as Docker reports a container's: the exit
/// code, or 128 + the signal (pid 1 cannot die of a signal it raises).
///
/// With `--wait` alone, imports first, says `READY`, and reads those
/// parameters and the environment from fd 0 too (see `warm_launch`); then,
/// instead of starting a second interpreter, the forked process makes
/// itself dumpable again (as a fresh python3 is) and runs the program in
/// its interpreter as `python3 -s -c CODE` or `python3 -s FILE` would: the
/// call's environment, a fresh `__main__`, `sys.argv` and `sys.path[0]`,
/// the program's own traceback, `SystemExit` and `KeyboardInterrupt` as
/// python3 handles them, and a normal interpreter shutdown (threads joined,
/// atexit, flushes).
fn bootstrap(collector: bool) -> String {
    let ready = String::from_utf8_lossy(READY).escape_default().to_string();
    let collector = if collector { COLLECTOR } else { "" };
    format!(
        r#"import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
def take(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk: raise EOFError("short input")
        buf += chunk
    return bytes(buf)
def fail(e):
    os.write(2, b"{UNPACK_MESSAGE}: " + repr(e).encode() + b"\n"); os._exit({UNPACK_FAILED})
def dumpable(flag):
    if libc.prctl(4, flag, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
try:
    dumpable(0)
except BaseException as e:
    fail(e)
program_pid = 0
def forward(sig, frame):
    if program_pid:
        try: os.kill(program_pid, sig)
        except OSError: pass
inherited = {{}}
for s in signal.valid_signals():
    if s in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD): continue
    try:
        inherited[s] = signal.getsignal(s)
        signal.signal(s, forward if s in (signal.SIGINT, signal.SIGTERM) else signal.SIG_IGN)
    except (OSError, ValueError):
        inherited.pop(s, None)
def restore_signals():
    for s, handler in inherited.items():
        if handler is not None: signal.signal(s, handler)
def install_filters():
    if filters:
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        for f in filters:
            if libc.prctl(22, 2, ctypes.byref(Prog(len(f) // 8, f)), 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
env = os.environ
warm = sys.argv[1:] == ["--wait"]
if warm:
    import errno, io, json, stat, struct, tarfile, time, types
    os.write(1, b"{ready}")
try:
    if warm:
        header = json.loads(take(int(take(10))))
        sys.argv[1:] = header["argv"]
        env = dict(os.environ, **header["env"])
    tar = take(int(sys.argv[1]))
    filters = [take(int(n)) for n in sys.argv[2].split(",") if n]
    spec_len = int(sys.argv[3])
    if tar:
        import io, tarfile
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall("{WORK_DIR}")
    del tar
except BaseException as e:
    fail(e)
def run(argv):
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    if argv[0] == "-c":
        sys.argv, source, filename = ["-c"] + argv[2:], argv[1], "<string>"
    else:
        filename = os.path.join("{WORK_DIR}", argv[0])
        sys.argv, sys.path[0] = argv, os.path.dirname(filename)
        main.__file__, main.__cached__ = filename, None
        with open(filename, "rb") as f: source = f.read()
    try:
        exec(compile(source, filename, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        tb = e.__traceback__.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        if isinstance(e, KeyboardInterrupt):
            import atexit
            atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                try: stream.flush()
                except Exception: pass
            signal.signal(signal.SIGINT, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)
        sys.exit(1)
def program():
    restore_signals()
    if not warm:
        os.execve("/usr/bin/python3", sys.argv[4:], env)
    os.environ.clear(); os.environ.update(env)
    run(sys.argv[6:])
def start_program(go=None):
    global program_pid
    program_pid = os.fork()
    if program_pid:
        if go: os.close(go[0])
        return
    if go:
        os.close(go[1])
        if os.read(go[0], 1) != b"1":
            os._exit(1)  # the bootstrap failed and said why; the container ends as it did
        os.close(go[0])
    try:
        if warm: dumpable(1)
        install_filters()
    except BaseException as e:
        fail(e)
    program()
    sys.exit(0)
def wait_program():
    while True:
        pid, status = os.wait()
        if pid == program_pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
if not spec_len:
    start_program()
    os._exit(wait_program())
{collector}"#
    )
}

/// `python3 -s -c CODE ARGS` or `python3 -s FILE ARGS`, as the native runtime runs it.
fn python_argv(submission: &Submission) -> Result<Vec<String>, RunError> {
    let nul = |what: &str| RunError::InvalidSubmission(format!("{what} may not contain NUL bytes"));
    let mut argv = vec!["python3".to_owned(), "-s".to_owned()];
    match &submission.entrypoint {
        Entrypoint::Code(code) => {
            if code.contains('\0') {
                return Err(nul("code"));
            }
            argv.push("-c".to_owned());
            argv.push(code.clone());
        }
        Entrypoint::File(path) => {
            if !submission.files.iter().any(|f| &f.path == path) {
                return Err(RunError::InvalidSubmission(format!(
                    "entrypoint {path:?} is not one of the submission's files"
                )));
            }
            argv.push(path.clone());
        }
    }
    if submission.args.iter().any(|a| a.contains('\0')) {
        return Err(nul("arguments"));
    }
    argv.extend(submission.args.iter().cloned());
    Ok(argv)
}

/// A tar of `files` (relative paths checked), directories first, owned by
/// root with modes 0755 and 0644: the unpacking user owns what it unpacks.
pub fn work_tar(files: &[InputFile]) -> Result<Vec<u8>, RunError> {
    let mut dirs: Vec<String> = Vec::new();
    for file in files {
        check_path(&file.path)?;
        let parts: Vec<&str> = file.path.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let io = |e: std::io::Error| RunError::InvalidSubmission(format!("cannot pack the files: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut header, format!("{dir}/"), std::io::empty())
            .map_err(io)?;
    }
    for file in files {
        let mut header = header(tar::EntryType::Regular, 0o644, file.contents.len() as u64);
        builder
            .append_data(&mut header, &file.path, file.contents.as_slice())
            .map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header
}

/// Relative, not empty, no NUL, no empty, `.` or `..` component: the rules of the native runtime.
fn check_path(path: &str) -> Result<(), RunError> {
    let bad = |why: &str| RunError::InvalidSubmission(format!("file path {path:?} {why}"));
    if path.is_empty() || path.starts_with('/') {
        return Err(bad("must be relative to the work dir and not empty"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad("may not contain empty, `.` or `..` components"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const CAPS: OutputCaps = OutputCaps {
        per_file: 1 << 20,
        total: 16 << 20,
    };

    fn file(path: &str, contents: &[u8]) -> InputFile {
        InputFile {
            path: path.to_owned(),
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn the_tar_holds_the_files_and_their_directories() {
        let tar = work_tar(&[
            file("main.py", b"print(1)\n"),
            file("pkg/sub/data.bin", &[0, 255, 1]),
        ])
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).unwrap();
            seen.push((path, mode, contents));
        }
        assert_eq!(
            seen,
            vec![
                ("pkg/".to_owned(), 0o755, vec![]),
                ("pkg/sub/".to_owned(), 0o755, vec![]),
                ("main.py".to_owned(), 0o644, b"print(1)\n".to_vec()),
                ("pkg/sub/data.bin".to_owned(), 0o644, vec![0, 255, 1]),
            ]
        );
    }

    #[test]
    fn paths_that_leave_the_work_dir_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\0b",
        ] {
            assert!(
                matches!(
                    work_tar(&[file(path, b"")]),
                    Err(RunError::InvalidSubmission(_))
                ),
                "{path:?} accepted"
            );
        }
    }

    #[test]
    fn code_without_files_sends_only_the_filters_then_stdin() {
        let mut submission = Submission::code("print(1)");
        submission.args = vec!["a".into()];
        submission.stdin = b"in".to_vec();
        let filters = [vec![1u8; 16], vec![2u8; 8]];
        let launch = launch(&submission, &filters, CAPS).unwrap();
        assert_eq!(&launch.cmd[..3], ["python3", "-s", "-c"]);
        assert_eq!(&launch.cmd[4..7], ["0", "16,8", "0"]);
        assert_eq!(&launch.cmd[7..], ["python3", "-s", "-c", "print(1)", "a"]);
        assert_eq!(launch.stdin, [&[1u8; 16][..], &[2u8; 8], b"in"].concat());
        assert!(launch.outputs.is_none());
        // pid 1 forks the program even without output files, and is not
        // dumpable before it reads anything of the call.
        let script = &launch.cmd[3];
        assert!(!script.contains(COLLECTOR) && script.contains("os.fork()"));
        let not_dumpable = script.find("    dumpable(0)").unwrap();
        assert!(not_dumpable < script.find("take(int(").unwrap());
        assert!(not_dumpable < script.find("os.fork()").unwrap());
    }

    #[test]
    fn files_come_first_on_stdin_and_the_script_reads_exactly_their_length() {
        let mut submission = Submission::code("");
        submission.entrypoint = Entrypoint::File("main.py".into());
        submission.files = vec![file("main.py", b"print(input())\n")];
        submission.stdin = b"hello\n".to_vec();
        let launch = launch(&submission, &[vec![7u8; 8]], CAPS).unwrap();
        let tar = work_tar(&submission.files).unwrap();
        assert_eq!(&launch.cmd[..3], ["python3", "-s", "-c"]);
        assert_eq!(launch.cmd[4], tar.len().to_string());
        assert_eq!(launch.cmd[5], "8");
        assert_eq!(launch.cmd[6], "0");
        assert_eq!(&launch.cmd[7..], ["python3", "-s", "main.py"]);
        assert_eq!(
            launch.stdin,
            [tar.as_slice(), &[7u8; 8], b"hello\n"].concat()
        );
    }

    #[test]
    fn a_warm_launch_is_a_sized_header_then_what_the_cold_stdin_holds() {
        let mut submission = Submission::code("print(input())");
        submission.stdin = b"hi\n".to_vec();
        let env = [("LANG".to_owned(), "C.UTF-8".to_owned())];
        let warm = warm_launch(&submission, &[vec![7u8; 8]], CAPS, &env).unwrap();
        let (header, rest) = warm_header(&warm.stdin);
        let cold = launch(&submission, &[vec![7u8; 8]], CAPS).unwrap();
        // As the cold one, but a pooled call always sends a spec (with no
        // path): its bootstrap forks the program and writes the end trailer.
        let spec = warm.outputs.as_ref().unwrap();
        assert!(spec.paths.is_empty() && cold.outputs.is_none());
        let mut argv = serde_json::json!(cold.cmd[4..]);
        argv[2] = spec.json().len().to_string().into();
        assert_eq!(header["argv"], argv);
        assert_eq!(header["env"], serde_json::json!({"LANG": "C.UTF-8"}));
        assert_eq!(rest, [&[7u8; 8][..], &spec.json(), b"hi\n"].concat());
        assert_eq!(warm.cmd[..3], ["python3", "-s", "-c"]);
        assert_eq!(warm.cmd[4..], ["--wait"]);
        // One bootstrap for both, with the collector: a call may declare files.
        submission.outputs = vec!["out.txt".into()];
        let cold = launch(&submission, &[vec![7u8; 8]], CAPS).unwrap();
        assert_eq!(warm.cmd[3], cold.cmd[3]);
        assert!(warm.cmd[3].contains(COLLECTOR));
    }

    /// The JSON header of a warm launch's stdin, and the bytes after it.
    fn warm_header(stdin: &[u8]) -> (serde_json::Value, &[u8]) {
        let len: usize = std::str::from_utf8(&stdin[..10]).unwrap().parse().unwrap();
        let header = serde_json::from_slice(&stdin[10..10 + len]).unwrap();
        (header, &stdin[10 + len..])
    }

    #[test]
    fn a_warm_launch_with_output_files_sends_their_spec_where_the_cold_one_does() {
        let mut submission = Submission::code("pass");
        submission.outputs = vec!["result.json".into()];
        submission.stdin = b"in".to_vec();
        let warm = warm_launch(&submission, &[vec![7u8; 8]], CAPS, &[]).unwrap();
        let spec = warm.outputs.as_ref().unwrap().json();
        let (header, rest) = warm_header(&warm.stdin);
        assert_eq!(header["argv"][2], spec.len().to_string());
        assert_eq!(rest, [&[7u8; 8][..], &spec, b"in"].concat());
        // The marker is on stdin only, never in the container's argv.
        let marker = &warm.outputs.as_ref().unwrap().marker;
        let argv = warm.cmd.concat().into_bytes();
        assert!(!argv.windows(marker.len()).any(|w| w == marker.as_slice()));
    }

    #[test]
    fn output_files_put_their_spec_after_the_filters_and_the_collector_in_the_script() {
        let mut submission = Submission::code("pass");
        submission.outputs = vec!["result.json".into()];
        submission.stdin = b"in".to_vec();
        let launch = launch(&submission, &[vec![7u8; 8]], CAPS).unwrap();
        let spec = launch.outputs.as_ref().unwrap().json();
        assert_eq!(launch.cmd[6], spec.len().to_string());
        assert_eq!(launch.stdin, [&[7u8; 8][..], &spec, b"in"].concat());
        assert!(launch.cmd[3].contains(COLLECTOR));
        // The marker travels on stdin only: the program can read argv in /proc.
        let marker = &launch.outputs.as_ref().unwrap().marker;
        let argv = launch.cmd.concat().into_bytes();
        assert!(!argv.windows(marker.len()).any(|w| w == marker.as_slice()));
        submission.outputs = vec!["../etc/passwd".into()];
        assert!(matches!(
            super::launch(&submission, &[], CAPS),
            Err(RunError::InvalidSubmission(_))
        ));
    }

    #[test]
    fn an_entrypoint_that_is_not_a_file_is_refused() {
        let mut submission = Submission::code("");
        submission.entrypoint = Entrypoint::File("main.py".into());
        assert!(matches!(
            launch(&submission, &[], CAPS),
            Err(RunError::InvalidSubmission(_))
        ));
    }
}
