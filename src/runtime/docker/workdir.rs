//! How the submission's files reach the container without a host path.
//!
//! Docker refuses `PUT /containers/{id}/archive` on a read-only rootfs ("container
//! rootfs is marked read-only"), and an archive uploaded into a container never
//! lands in its tmpfs mounts (the daemon writes to the layer underneath). So the
//! files travel the way stdin does: the container's command is a short Python
//! script that reads exactly `N` bytes of a tar (built here with the `tar`
//! crate) from fd 0, unpacks it into the `/work` tmpfs as the sandbox user, and
//! `execv`s python3 with the real command line; the submission's own stdin
//! follows the tar on the same stream. No process is forked (an allowlist may
//! forbid it) and only the interpreter the program runs is needed. A
//! submission with no files skips the script.

use super::host_config::WORK_DIR;
use crate::runtime::{Entrypoint, InputFile, RunError, Submission};

/// Exit status of the unpack script when the tar could not be unpacked.
pub const UNPACK_FAILED: i64 = 125;
/// The line the unpack script prints on stderr when it fails.
pub const UNPACK_MESSAGE: &str = "pyward: could not unpack the work dir";

/// The container's command, and the bytes to send on its stdin.
#[derive(Debug)]
pub struct Launch {
    /// argv of the container's main process (docker-init runs it as its child).
    pub cmd: Vec<String>,
    /// The tar of the work dir (if any) followed by the submission's stdin.
    pub stdin: Vec<u8>,
    /// True when `cmd` starts with the unpack script.
    pub unpacks: bool,
}

/// The command and stdin for `submission`.
pub fn launch(submission: &Submission) -> Result<Launch, RunError> {
    let python = python_argv(submission)?;
    if submission.files.is_empty() {
        return Ok(Launch {
            cmd: python,
            stdin: submission.stdin.clone(),
            unpacks: false,
        });
    }
    let mut stdin = work_tar(&submission.files)?;
    let tar_len = stdin.len();
    stdin.extend_from_slice(&submission.stdin);
    let mut cmd = vec![
        "python3".to_owned(),
        "-s".to_owned(),
        "-c".to_owned(),
        unpack_script(),
    ];
    cmd.push(tar_len.to_string());
    cmd.extend(python);
    Ok(Launch {
        cmd,
        stdin,
        unpacks: true,
    })
}

/// Reads argv[1] bytes of tar from fd 0 (unbuffered, so not one byte more),
/// unpacks them into the work dir, and execs argv[2:].
fn unpack_script() -> String {
    format!(
        r#"import io, os, sys, tarfile
try:
    n = int(sys.argv[1]); buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk: raise EOFError("short tar")
        buf += chunk
    with tarfile.open(fileobj=io.BytesIO(bytes(buf))) as t:
        t.extractall("{WORK_DIR}")
except BaseException as e:
    os.write(2, b"{UNPACK_MESSAGE}: " + repr(e).encode() + b"\n"); os._exit({UNPACK_FAILED})
os.execv("/usr/bin/python3", sys.argv[2:])"#
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
    fn code_without_files_runs_python_directly_with_the_stdin_as_is() {
        let mut submission = Submission::code("print(1)");
        submission.args = vec!["a".into()];
        submission.stdin = b"in".to_vec();
        let launch = launch(&submission).unwrap();
        assert_eq!(launch.cmd, ["python3", "-s", "-c", "print(1)", "a"]);
        assert_eq!(launch.stdin, b"in");
        assert!(!launch.unpacks);
    }

    #[test]
    fn files_come_first_on_stdin_and_the_script_reads_exactly_their_length() {
        let mut submission = Submission::code("");
        submission.entrypoint = Entrypoint::File("main.py".into());
        submission.files = vec![file("main.py", b"print(input())\n")];
        submission.stdin = b"hello\n".to_vec();
        let launch = launch(&submission).unwrap();
        let tar = work_tar(&submission.files).unwrap();
        assert!(launch.unpacks);
        assert_eq!(&launch.cmd[..3], ["python3", "-s", "-c"]);
        assert_eq!(launch.cmd[4], tar.len().to_string());
        assert_eq!(&launch.cmd[5..], ["python3", "-s", "main.py"]);
        assert_eq!(launch.stdin, [tar.as_slice(), b"hello\n"].concat());
    }

    #[test]
    fn an_entrypoint_that_is_not_a_file_is_refused() {
        let mut submission = Submission::code("");
        submission.entrypoint = Entrypoint::File("main.py".into());
        assert!(matches!(
            launch(&submission),
            Err(RunError::InvalidSubmission(_))
        ));
    }
}
