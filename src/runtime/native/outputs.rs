//! The declared output files of a native run: the stub (the sandbox's pid 1)
//! reads them once the program has ended and before it reports how it ended,
//! into a memfd pyward made before the clone; pyward reads the records back
//! (`output_files::parse_records`) once the watch is over.
//!
//! The work dir is a tmpfs of the sandbox's own mount namespace, gone with
//! it, and everything in it is the program's: any entry may be a symbolic
//! link (to a host path, or `..`), a FIFO, a socket or a directory. So each
//! path is opened with openat2 beneath the work dir, with no symbolic link in
//! any component, no mount crossed and O_NONBLOCK, and only a regular file is
//! read, by the kernel (sendfile), up to the caps. The stub only ever looks at
//! the sandbox's root: its root moved with the payload's pivot_root (they
//! share a mount namespace), and it checks that it did before reading.

use super::plan::Plan;
use super::status::Message;
use crate::runtime::output_files::{self, OutputCaps, kind, record_header};
use crate::runtime::{OutputFile, RunError};
use crate::sys;
use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::ffi::CString;
use std::io::{Read, Seek};
use std::os::fd::{OwnedFd, RawFd};

/// What the plan carries for output files: the checked paths and the caps.
pub struct OutputPlan {
    /// The declared paths, relative to the work dir.
    pub paths: Vec<CString>,
    pub caps: OutputCaps,
}

impl OutputPlan {
    /// Checks `paths` (see `output_files::check_paths`) and makes them C strings.
    pub fn new(paths: &[String], caps: OutputCaps) -> Result<OutputPlan, RunError> {
        output_files::check_paths(paths).map_err(RunError::InvalidSubmission)?;
        let paths = paths
            .iter()
            .map(|p| CString::new(p.as_str()).unwrap_or_default())
            .collect();
        Ok(OutputPlan { paths, caps })
    }
}

/// The memfd the stub writes the records into, when the submission declared files.
pub fn records_memfd(plan: &Plan) -> Result<Option<OwnedFd>, super::NativeError> {
    if plan.outputs.paths.is_empty() {
        return Ok(None);
    }
    memfd_create(c"pyward-output-files", MFdFlags::MFD_CLOEXEC)
        .map(Some)
        .map_err(|source| super::NativeError::Pipe { source })
}

/// Reads back what the stub wrote: one entry per declared path, in order.
/// The stub writes the records before it reports how the payload ended, so
/// they are complete only when `last` (the last status message) is that
/// report; otherwise (pyward killed the sandbox first, or its setup failed)
/// every path is `not_collected`.
pub fn read_records(
    memfd: Option<&OwnedFd>,
    last: Option<Message>,
    paths: &[String],
    caps: OutputCaps,
) -> Vec<OutputFile> {
    let complete = matches!(last, Some(Message::Exited(_) | Message::Signaled(_)));
    let Some(memfd) = memfd.filter(|_| complete) else {
        return output_files::not_collected(paths);
    };
    let most = caps
        .total
        .saturating_add((paths.len() * output_files::RECORD_HEADER) as u64);
    let mut bytes = Vec::new();
    let read = memfd
        .try_clone()
        .map(std::fs::File::from)
        .and_then(|mut file| {
            file.rewind()?;
            file.take(most).read_to_end(&mut bytes)
        });
    if read.is_err() {
        return output_files::not_collected(paths);
    }
    output_files::parse_records(&bytes, paths, caps)
}

/// The stub's side, once the payload has ended: one record per declared path
/// into `out`. Allocation-free; stops at the first write that fails (the
/// paths not written come back `not_collected`). `host_root` is the
/// (device, inode) of the stub's root before the payload's pivot_root.
pub fn collect(plan: &Plan, out: RawFd, host_root: Option<(u64, u64)>) {
    if out < 0 {
        return;
    }
    // Read nothing unless the root is the sandbox's: had the pivot_root not
    // happened (a failed setup), "/work" would be a path on the host.
    let moved = matches!(
        (host_root, sys::files::identity(c"/")),
        (Some(before), Ok(now)) if before != now
    );
    let work = if moved {
        sys::files::open_dir_no_symlinks(plan.cwd.as_c_str()).ok()
    } else {
        None
    };
    let mut left = plan.outputs.caps.total;
    for path in &plan.outputs.paths {
        let written = match work {
            Some(work) => collect_one(work, path, plan.outputs.caps.per_file, &mut left, out),
            None => write_record(out, kind::NOT_COLLECTED),
        };
        if written.is_err() {
            break;
        }
    }
    if let Some(work) = work {
        sys::process::rawfd::close(work);
    }
}

fn write_record(out: RawFd, kind: u32) -> nix::Result<()> {
    sys::process::rawfd::write_all(out, &record_header(kind, 0, 0))
}

fn collect_one(
    work: RawFd,
    path: &std::ffi::CStr,
    per_file: u64,
    left: &mut u64,
    out: RawFd,
) -> nix::Result<()> {
    let file = match sys::files::open_beneath(work, path) {
        Ok(fd) => fd,
        // Nothing there, a component on the way is not a directory, or a
        // name longer than any file can have.
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG) => {
            return write_record(out, kind::MISSING);
        }
        // A symbolic link (ELOOP), a socket (ENXIO), a mount (EXDEV), a device on a nodev mount (EACCES).
        Err(Errno::ELOOP | Errno::ENXIO | Errno::EXDEV | Errno::EACCES) => {
            return write_record(out, kind::NOT_REGULAR);
        }
        Err(_) => return write_record(out, kind::NOT_COLLECTED),
    };
    let copied = copy_regular(file, per_file, left, out);
    sys::process::rawfd::close(file);
    copied
}

/// Writes the record of an open file: not regular, or its bytes up to the caps.
fn copy_regular(file: RawFd, per_file: u64, left: &mut u64, out: RawFd) -> nix::Result<()> {
    let (regular, size) = match sys::files::regular_size(file) {
        Ok(stat) => stat,
        Err(_) => return write_record(out, kind::NOT_COLLECTED),
    };
    if !regular {
        return write_record(out, kind::NOT_REGULAR);
    }
    // A header that says nothing was kept, rewritten once the bytes are in.
    let at = sys::files::offset(out)?;
    sys::process::rawfd::write_all(out, &record_header(kind::COLLECTED, size, 0))?;
    let room = per_file.min(*left);
    let mut kept: u64 = 0;
    while kept < room {
        let chunk = usize::try_from(room - kept)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match sys::files::copy(out, file, chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => kept += n as u64,
        }
    }
    *left -= kept;
    // The file may have grown or shrunk meanwhile: its size is the larger seen.
    let size_now = sys::files::regular_size(file).map_or(0, |(_, s)| s);
    let size = size.max(size_now).max(kept);
    sys::files::write_all_at(out, &record_header(kind::COLLECTED, size, kept), at)
}
