//! How the program starts in the container: its files, and the policy's own
//! seccomp filters on top of the container's.
//!
//! Files: Docker refuses `PUT /containers/{id}/archive` on a read-only rootfs
//! ("container rootfs is marked read-only"), and an archive uploaded into a
//! container never lands in its tmpfs mounts (the daemon writes to the layer
//! underneath). So the files travel the way stdin does: a tar built here with
//! the `tar` crate, ahead of the submission's stdin on the same stream.
//!
//! Filters: the container's seccomp profile also covers docker-init, which must
//! fork the program, so it cannot refuse new processes. The program's process
//! therefore installs the native runtime's BPF filters (the same compiled
//! programs, for the policy's allowlist) before it execs the interpreter:
//! stacked filters only tighten, and the program gets exactly the native
//! runtime's syscall policy. Not under emulation (an image for another
//! architecture, run by qemu-user): qemu refuses the guest's
//! `PR_SET_SECCOMP` (EINVAL) and `seccomp()` (ENOSYS), so the runtime sends no
//! filters and the container's host-arch profile is the only filter.
//!
//! The container's command is a short Python bootstrap: read exactly the tar,
//! the filters and the output files' spec from fd 0 (unbuffered, so not one
//! byte of the program's stdin), unpack the tar into the `/work` tmpfs as the
//! sandbox user, install the filters with `prctl(PR_SET_SECCOMP)`, and `execv`
//! python3 with the real command line. No process is forked, unless output
//! files are declared (`files`: the bootstrap then forks the program, and
//! the program's process installs the filters).

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
    /// argv of the container's main process (docker-init runs it as its child).
    pub cmd: Vec<String>,
    /// The tar of the work dir (may be empty), the filters, the output
    /// files' spec (may be empty), then the submission's stdin.
    pub stdin: Vec<u8>,
    /// The declared output files, when there are any.
    pub outputs: Option<OutputsSpec>,
}

/// The command and stdin for `submission`, the program's process to install
/// `filters` (raw `struct sock_filter` arrays, in order) before it execs, and
/// the declared output files to come back under `caps`.
pub fn launch(
    submission: &Submission,
    filters: &[Vec<u8>],
    caps: OutputCaps,
) -> Result<Launch, RunError> {
    let python = python_argv(submission)?;
    let outputs = OutputsSpec::new(submission, caps)?;
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
/// output files' spec's length; argv[4:]: the program's command line. Reads
/// them from fd 0, unpacks, installs, execs (or, with output files, goes on
/// with `files::COLLECTOR`).
fn bootstrap(outputs: bool) -> String {
    let collector = if outputs { COLLECTOR } else { "" };
    format!(
        r#"import os, sys
def take(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk: raise EOFError("short input")
        buf += chunk
    return bytes(buf)
def fail(e):
    os.write(2, b"{UNPACK_MESSAGE}: " + repr(e).encode() + b"\n"); os._exit({UNPACK_FAILED})
def install_filters():
    if filters:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        class Prog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        for f in filters:
            if libc.prctl(22, 2, ctypes.byref(Prog(len(f) // 8, f)), 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
try:
    tar = take(int(sys.argv[1]))
    filters = [take(int(n)) for n in sys.argv[2].split(",") if n]
    spec = take(int(sys.argv[3]))
    if tar:
        import io, tarfile
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall("{WORK_DIR}")
    if not spec:
        install_filters()
except BaseException as e:
    fail(e)
if not spec:
    os.execv("/usr/bin/python3", sys.argv[4:])
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
        assert!(!launch.cmd[3].contains("os.fork"));
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
    fn output_files_put_their_spec_after_the_filters_and_the_collector_in_the_script() {
        let mut submission = Submission::code("pass");
        submission.outputs = vec!["result.json".into()];
        submission.stdin = b"in".to_vec();
        let launch = launch(&submission, &[vec![7u8; 8]], CAPS).unwrap();
        let spec = launch.outputs.as_ref().unwrap().json();
        assert_eq!(launch.cmd[6], spec.len().to_string());
        assert_eq!(launch.stdin, [&[7u8; 8][..], &spec, b"in"].concat());
        assert!(launch.cmd[3].contains("os.fork"));
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
