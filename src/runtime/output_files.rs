//! Output files: paths in the work dir that a submission declares and that
//! come back in the `Outcome` once the program has ended.
//!
//! Owns the rules every runtime shares: which paths may be declared, how much
//! of each file comes back, and the record format in which a sandbox's
//! collector hands the files to pyward. The collectors themselves live with
//! their runtimes (native: `native::outputs`, the warm path's `zygote.py`;
//! docker: `docker::files`); each opens every path without following a
//! symbolic link, without crossing a mount, and without blocking on a FIFO.
//!
//! Caps: each file keeps at most the policy's `limits.output` bytes (the cap
//! of stdout), and all files together at most `limits.tmpfs` bytes, the size
//! of the work dir: distinct files never hold more, and hard links to one big
//! file cannot multiply what pyward keeps.

use super::{Captured, OutputFile, OutputStatus};
use crate::policy::Limits;

/// The most output paths one submission may declare.
pub const MAX_OUTPUTS: usize = 64;
/// The longest output path, in bytes.
pub const MAX_OUTPUT_PATH: usize = 1024;

/// Checks declared output paths: at most [`MAX_OUTPUTS`], each relative to
/// the work dir, at most [`MAX_OUTPUT_PATH`] bytes, without NUL, empty, `.`
/// or `..` components, and none twice. The error says which and why.
pub fn check_paths(paths: &[String]) -> Result<(), String> {
    if paths.len() > MAX_OUTPUTS {
        return Err(format!(
            "{} output files declared; at most {MAX_OUTPUTS} are allowed",
            paths.len()
        ));
    }
    for (i, path) in paths.iter().enumerate() {
        let bad = |why: &str| Err(format!("output path {path:?} {why}"));
        if path.is_empty() || path.starts_with('/') {
            return bad("must be relative to the work dir and not empty");
        }
        if path.len() > MAX_OUTPUT_PATH {
            return bad(&format!("is longer than {MAX_OUTPUT_PATH} bytes"));
        }
        if path.contains('\0') {
            return bad("contains a NUL byte");
        }
        if path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return bad("may not contain empty, `.` or `..` components");
        }
        if paths[..i].contains(path) {
            return bad("is declared twice");
        }
    }
    Ok(())
}

/// How much of the declared files comes back (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Bytes kept of each file.
    pub per_file: u64,
    /// Bytes kept of all files together.
    pub total: u64,
}

impl OutputCaps {
    /// The caps of a run under `limits`.
    pub fn of(limits: &Limits) -> OutputCaps {
        OutputCaps {
            per_file: limits.output.bytes(),
            total: limits.tmpfs.bytes(),
        }
    }
}

/// Every declared path as `not_collected`: the run ended before the files could be read.
pub fn not_collected(paths: &[String]) -> Vec<OutputFile> {
    paths
        .iter()
        .map(|path| OutputFile {
            path: path.clone(),
            status: OutputStatus::NotCollected,
        })
        .collect()
}

/// Record kinds of the collectors' format (see [`parse_records`]).
pub mod kind {
    /// A regular file: `size` is its size, `len` bytes of it follow.
    pub const COLLECTED: u32 = 1;
    /// Nothing at the path.
    pub const MISSING: u32 = 2;
    /// Not a regular file, or a path through a symbolic link.
    pub const NOT_REGULAR: u32 = 3;
    /// Could not be opened for another reason.
    pub const NOT_COLLECTED: u32 = 4;
}

/// The size of a record header: kind (u32), zero (u32), size (u64), len (u64), little-endian.
pub const RECORD_HEADER: usize = 24;

/// A record header, as a collector writes it before each file's bytes.
pub fn record_header(kind: u32, size: u64, len: u64) -> [u8; RECORD_HEADER] {
    let mut header = [0u8; RECORD_HEADER];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&size.to_le_bytes());
    header[16..24].copy_from_slice(&len.to_le_bytes());
    header
}

/// Reads the records a collector wrote, one per declared path and in order.
///
/// Each record is a [`record_header`] and, for a collected file, `len` bytes.
/// A record that is missing, malformed, or keeps more than the caps allow
/// makes that path and every later one `not_collected`: the bytes came from
/// inside the sandbox, so nothing in them is trusted to be well-formed.
pub fn parse_records(bytes: &[u8], paths: &[String], caps: OutputCaps) -> Vec<OutputFile> {
    let mut files = not_collected(paths);
    let mut rest = bytes;
    let mut total: u64 = 0;
    for file in &mut files {
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER>() else {
            break;
        };
        let word =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (size, len) = (word(8), word(16));
        file.status = match kind {
            kind::COLLECTED => {
                let fits = len <= caps.per_file
                    && total.saturating_add(len) <= caps.total
                    && len <= size
                    && len <= after.len() as u64;
                if !fits {
                    break;
                }
                total += len;
                let (kept, after) = after.split_at(len as usize);
                rest = after;
                OutputStatus::Collected {
                    contents: Captured {
                        bytes: kept.to_vec(),
                        truncated: size > len,
                    },
                    size,
                }
            }
            kind::MISSING => OutputStatus::Missing,
            kind::NOT_REGULAR => OutputStatus::NotRegular,
            kind::NOT_COLLECTED => OutputStatus::NotCollected,
            _ => break,
        };
        if kind != kind::COLLECTED {
            rest = after;
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    const CAPS: OutputCaps = OutputCaps {
        per_file: 8,
        total: 12,
    };

    #[test]
    fn output_paths_stay_inside_the_work_dir() {
        for bad in [
            "/etc/passwd",
            "",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a/",
        ] {
            let err = check_paths(&paths(&[bad])).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(check_paths(&paths(&["a\0b"])).unwrap_err().contains("NUL"));
        assert!(
            check_paths(&paths(&["x", "x"]))
                .unwrap_err()
                .contains("twice")
        );
        let long = "a".repeat(MAX_OUTPUT_PATH + 1);
        assert!(check_paths(&[long]).unwrap_err().contains("longer"));
        let many: Vec<String> = (0..=MAX_OUTPUTS).map(|i| format!("f{i}")).collect();
        assert!(check_paths(&many).unwrap_err().contains("at most 64"));
        check_paths(&paths(&["result.json", "out/plot.png", "out", ".hidden"])).unwrap();
    }

    #[test]
    fn records_come_back_in_order_with_their_status() {
        let mut bytes = Vec::new();
        bytes.extend(record_header(kind::COLLECTED, 3, 3));
        bytes.extend(b"abc");
        bytes.extend(record_header(kind::MISSING, 0, 0));
        bytes.extend(record_header(kind::COLLECTED, 100, 8));
        bytes.extend(b"01234567");
        bytes.extend(record_header(kind::NOT_REGULAR, 0, 0));
        let files = parse_records(&bytes, &paths(&["a", "b", "c", "d", "e"]), CAPS);
        let status: Vec<_> = files.iter().map(|f| f.status.as_str()).collect();
        assert_eq!(
            status,
            ["ok", "missing", "ok", "not_regular", "not_collected"]
        );
        assert_eq!(
            files[2].status,
            OutputStatus::Collected {
                contents: Captured {
                    bytes: b"01234567".to_vec(),
                    truncated: true
                },
                size: 100
            }
        );
        assert_eq!(files[4].path, "e");
    }

    #[test]
    fn records_past_the_caps_are_not_believed() {
        // Over the per-file cap.
        let mut bytes = record_header(kind::COLLECTED, 9, 9).to_vec();
        bytes.extend([0; 9]);
        let files = parse_records(&bytes, &paths(&["a"]), CAPS);
        assert_eq!(files[0].status, OutputStatus::NotCollected);
        // Over the total cap on the second file.
        let mut bytes = Vec::new();
        for _ in 0..2 {
            bytes.extend(record_header(kind::COLLECTED, 8, 8));
            bytes.extend([7; 8]);
        }
        let files = parse_records(&bytes, &paths(&["a", "b"]), CAPS);
        assert_eq!(files[0].status.as_str(), "ok");
        assert_eq!(files[1].status, OutputStatus::NotCollected);
        // More kept than the file's size, or more than was sent.
        let bytes = record_header(kind::COLLECTED, 1, 2).to_vec();
        assert_eq!(
            parse_records(&bytes, &paths(&["a"]), CAPS)[0].status,
            OutputStatus::NotCollected
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_keep_one_entry_per_path(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            let files = parse_records(&bytes, &paths(&["a", "b", "c"]), CAPS);
            prop_assert_eq!(files.len(), 3);
        }
    }
}
