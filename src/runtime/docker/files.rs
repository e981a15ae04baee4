//! The declared output files of a Docker run.
//!
//! The work dir is a tmpfs of the container, and Docker 20.10's archive API
//! reads the layer underneath a tmpfs, not the tmpfs (see `workdir`), so the
//! files leave the container on its stdout. With output files declared the
//! bootstrap does not exec the program but forks it (`collect.py`); once the
//! program has ended it kills every other process of the container (so no
//! byte of the program's can follow), then writes a marker and one record per
//! path (`output_files::record_header`, then the bytes) on stdout, and ends
//! as the program ended. Each path is opened one component at a time with
//! O_NOFOLLOW, checked with fstat (no symbolic link, no other mount, only a
//! directory on the way and a regular file at the end), and read through its
//! O_PATH fd's magic link with O_NONBLOCK.
//!
//! The marker is 16 random bytes per run, sent on stdin ahead of the
//! program's stdin (never in argv, which the program can read in /proc), so
//! a program's own output does not pass for records by chance. [`Splitter`]
//! splits the container's stdout at the marker: the program's bytes before
//! it, under the stdout cap as ever; the records after it, bounded by the
//! caps. Records are read as untrusted bytes (`output_files::parse_records`).
//!
//! The end trailer: once the program has been reaped and no other process
//! is left, the bootstrap also writes an end record (after the records),
//! carrying the status the bootstrap (pid 1) ends the container with (exit
//! code, or 128 + the signal), and the marker on stderr; it writes neither
//! if some process outlived its wait. [`Split`] finds both, at any chunking,
//! and the host ends the call there instead of waiting for Docker's
//! teardown (see the parent module). The bootstrap is not dumpable from its
//! start, so the program (the same uid) cannot read the marker from
//! `/proc/1/mem`; what the program writes that looks like a trailer is its
//! output.

use super::DockerError;
use crate::runtime::output_files::{self, OutputCaps, RECORD_HEADER};
use crate::runtime::{OutputFile, RunError, Submission};
use std::io::Read;

/// The bootstrap's continuation when files are declared.
pub const COLLECTOR: &str = include_str!("collect.py");

/// What the bootstrap needs to bring the declared files back.
#[derive(Debug, Clone)]
pub struct OutputsSpec {
    /// The bytes that separate the program's stdout from the records.
    pub marker: Vec<u8>,
    /// The declared paths.
    pub paths: Vec<String>,
    /// How much of them comes back.
    pub caps: OutputCaps,
}

impl OutputsSpec {
    /// The spec for `submission`, or None when it declares no output file
    /// and `always` is false (a pooled call always gets one: its bootstrap
    /// forks the program to write the end trailer).
    pub fn new(
        submission: &Submission,
        caps: OutputCaps,
        always: bool,
    ) -> Result<Option<OutputsSpec>, RunError> {
        if submission.outputs.is_empty() && !always {
            return Ok(None);
        }
        output_files::check_paths(&submission.outputs).map_err(RunError::InvalidSubmission)?;
        let mut random = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(|source| DockerError::Random { source })?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Some(OutputsSpec {
            marker: format!("\0pyward-output-files:{hex}\0").into_bytes(),
            paths: submission.outputs.clone(),
            caps,
        }))
    }

    /// The JSON the bootstrap reads from stdin.
    pub fn json(&self) -> Vec<u8> {
        serde_json::json!({
            "marker": String::from_utf8_lossy(&self.marker),
            "paths": self.paths,
            "cap": self.caps.per_file,
            "total": self.caps.total,
        })
        .to_string()
        .into_bytes()
    }

    /// The most bytes the records and the end record may take.
    fn records_bound(&self) -> usize {
        let headers = ((self.paths.len() + 1) * RECORD_HEADER) as u64;
        usize::try_from(self.caps.total.saturating_add(headers)).unwrap_or(usize::MAX)
    }
}

/// The kind of the end record, after the declared paths' records.
const END: u32 = 5;

/// Splits each of the container's streams at the marker (see the module docs).
#[derive(Debug)]
pub struct Split {
    /// The program's stdout, then the records and the end record.
    pub stdout: Splitter,
    /// The program's stderr, then the marker alone.
    pub stderr: Splitter,
}

impl Split {
    /// The splitters for the run of `spec`.
    pub fn new(spec: &OutputsSpec) -> Split {
        Split {
            stdout: Splitter::new(spec),
            stderr: Splitter {
                paths: 0,
                bound: 0,
                ..Splitter::new(spec)
            },
        }
    }

    /// The program's exit status as the bootstrap reports it (its code, or
    /// 128 + its signal), once both trailers are complete: the bootstrap
    /// has written everything, and the program's streams are whole.
    pub fn ended(&self) -> Option<i64> {
        let marker_alone = self.stderr.records.as_ref().is_some_and(Vec::is_empty);
        if !marker_alone || self.stderr.overflowed {
            return None;
        }
        self.stdout.end_status()
    }
}

/// Splits one of the container's streams into the program's bytes and what
/// the bootstrap writes after the marker.
#[derive(Debug)]
pub struct Splitter {
    marker: Vec<u8>,
    /// The program's last bytes, held back while they may begin the marker.
    held: Vec<u8>,
    /// Everything after the marker, once it has been seen.
    records: Option<Vec<u8>>,
    bound: usize,
    /// The records expected before the end record.
    paths: usize,
    /// Set once more came after the marker than the bootstrap ever writes.
    overflowed: bool,
}

impl Splitter {
    /// A splitter of stdout for the run of `spec`.
    pub fn new(spec: &OutputsSpec) -> Splitter {
        Splitter {
            marker: spec.marker.clone(),
            held: Vec::new(),
            records: None,
            bound: spec.records_bound(),
            paths: spec.paths.len(),
            overflowed: false,
        }
    }

    /// The status in the end record, once every record before it is whole
    /// and nothing follows it; None until then (or ever, when the bytes
    /// after the marker are not records and an end record).
    fn end_status(&self) -> Option<i64> {
        if self.overflowed {
            return None;
        }
        let mut rest = self.records.as_deref()?;
        for _ in 0..=self.paths {
            let (header, after) = rest.split_first_chunk::<RECORD_HEADER>()?;
            let word =
                |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let (size, len) = (word(8), word(16));
            if kind == END {
                return (len == 0 && size <= 255 && after.is_empty()).then_some(size as i64);
            }
            let len = if kind == output_files::kind::COLLECTED {
                usize::try_from(len).ok()?
            } else {
                0
            };
            rest = after.get(len..)?;
        }
        None
    }

    /// Takes one chunk of the container's stdout and returns the program's
    /// bytes in it; false when the records passed their bound (more than the
    /// bootstrap ever writes: the run is to be stopped).
    pub fn feed(&mut self, chunk: &[u8]) -> (Vec<u8>, bool) {
        if let Some(records) = &mut self.records {
            if records.len() + chunk.len() > self.bound {
                self.overflowed = true;
                return (Vec::new(), false);
            }
            records.extend_from_slice(chunk);
            return (Vec::new(), true);
        }
        let mut program = std::mem::take(&mut self.held);
        program.extend_from_slice(chunk);
        let m = self.marker.len();
        if let Some(at) = program.windows(m).position(|w| w == self.marker) {
            let rest = program.split_off(at + m);
            program.truncate(at);
            self.records = Some(Vec::new());
            let (_, ok) = self.feed(&rest);
            return (program, ok);
        }
        // Hold back the longest tail that could be the marker's beginning.
        let keep = (1..m.min(program.len() + 1))
            .rev()
            .find(|&k| program.ends_with(&self.marker[..k]))
            .unwrap_or(0);
        self.held = program.split_off(program.len() - keep);
        (program, true)
    }

    /// At the end of the stream: the program's bytes still held back.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// The files, one per declared path (`not_collected` without records).
    pub fn files(&self, spec: &OutputsSpec) -> Vec<OutputFile> {
        match &self.records {
            Some(records) => output_files::parse_records(records, &spec.paths, spec.caps),
            None => output_files::not_collected(&spec.paths),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::OutputStatus;
    use crate::runtime::output_files::{kind, record_header};

    fn spec() -> OutputsSpec {
        let mut submission = Submission::code("");
        submission.outputs = vec!["a".into(), "b".into()];
        let caps = OutputCaps {
            per_file: 16,
            total: 20,
        };
        OutputsSpec::new(&submission, caps, false).unwrap().unwrap()
    }

    fn records() -> Vec<u8> {
        let mut bytes = record_header(kind::COLLECTED, 2, 2).to_vec();
        bytes.extend(b"hi");
        bytes.extend(record_header(kind::MISSING, 0, 0));
        bytes
    }

    #[test]
    fn markers_differ_per_run_and_stay_out_of_json_escapes() {
        let (a, b) = (spec(), spec());
        assert_ne!(a.marker, b.marker);
        let json: serde_json::Value = serde_json::from_slice(&a.json()).unwrap();
        assert_eq!(json["marker"].as_str().unwrap().as_bytes(), a.marker);
        assert_eq!(json["paths"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn the_marker_splits_stdout_from_the_records_across_any_chunking() {
        let spec = spec();
        let stream = [b"out\0put".as_slice(), &spec.marker, &records()].concat();
        for size in 1..stream.len() {
            let mut splitter = Splitter::new(&spec);
            let mut program = Vec::new();
            for chunk in stream.chunks(size) {
                let (bytes, ok) = splitter.feed(chunk);
                assert!(ok);
                program.extend(bytes);
            }
            program.extend(splitter.finish());
            assert_eq!(program, b"out\0put", "chunks of {size}");
            let files = splitter.files(&spec);
            assert_eq!(files[1].status, OutputStatus::Missing, "chunks of {size}");
            assert!(
                matches!(&files[0].status, OutputStatus::Collected { contents, .. } if contents.bytes == b"hi")
            );
        }
    }

    #[test]
    fn without_the_marker_everything_is_the_programs_and_nothing_was_collected() {
        let spec = spec();
        let mut splitter = Splitter::new(&spec);
        let partial = &spec.marker[..10];
        let (first, _) = splitter.feed(&[b"text".as_slice(), partial].concat());
        assert_eq!(first, b"text");
        let mut program = first;
        program.extend(splitter.finish());
        assert_eq!(program, [b"text".as_slice(), partial].concat());
        let statuses: Vec<_> = splitter
            .files(&spec)
            .iter()
            .map(|f| f.status.as_str())
            .collect();
        assert_eq!(statuses, ["not_collected", "not_collected"]);
    }

    #[test]
    fn the_end_trailer_is_complete_once_both_streams_are_whole_across_any_chunking() {
        let spec = spec();
        let end = record_header(END, 128 + 9, 0);
        let stdout = [b"out".as_slice(), &spec.marker, &records(), &end].concat();
        let stderr = [b"err".as_slice(), &spec.marker].concat();
        for size in 1..stdout.len() {
            for stderr_first in [true, false] {
                let mut split = Split::new(&spec);
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let mut chunks: Vec<(bool, &[u8])> = Vec::new();
                let err_chunks = stderr.chunks(size).map(|c| (false, c));
                let out_chunks = stdout.chunks(size).map(|c| (true, c));
                if stderr_first {
                    chunks.extend(err_chunks.chain(out_chunks));
                } else {
                    chunks.extend(out_chunks.chain(err_chunks));
                }
                let last = chunks.len() - 1;
                for (i, (is_stdout, chunk)) in chunks.into_iter().enumerate() {
                    if is_stdout {
                        out.extend(split.stdout.feed(chunk).0);
                    } else {
                        err.extend(split.stderr.feed(chunk).0);
                    }
                    let expected = (i == last).then_some(137);
                    assert_eq!(split.ended(), expected, "chunks of {size}, chunk {i}");
                }
                assert_eq!((out, err), (b"out".to_vec(), b"err".to_vec()));
                assert!(split.stdout.finish().is_empty() && split.stderr.finish().is_empty());
                assert_eq!(split.stdout.files(&spec)[1].status, OutputStatus::Missing);
            }
        }
    }

    #[test]
    fn no_end_without_the_marker_on_both_streams_or_with_anything_after_the_end() {
        let spec = spec();
        let end = record_header(END, 0, 0);
        let whole = [spec.marker.as_slice(), &records(), &end].concat();
        let ended = |stdout: &[u8], stderr: &[u8]| {
            let mut split = Split::new(&spec);
            let (_, out_ok) = split.stdout.feed(stdout);
            let (_, err_ok) = split.stderr.feed(stderr);
            (split.ended(), out_ok && err_ok)
        };
        assert_eq!(ended(&whole, &spec.marker), (Some(0), true));
        // A marker that is not the run's: the program's bytes.
        let mut forged = whole.clone();
        forged[25] ^= 1;
        assert_eq!(ended(&forged, &spec.marker), (None, true));
        assert_eq!(ended(&whole, b"no marker"), (None, true));
        // Bytes after the end record, or after the marker on stderr.
        assert_eq!(
            ended(&[whole.as_slice(), b"x"].concat(), &spec.marker).0,
            None
        );
        let after = [spec.marker.as_slice(), b"x"].concat();
        assert_eq!(ended(&whole, &after), (None, false));
        // The end record in place of the declared paths' records still ends.
        let early = [spec.marker.as_slice(), &end].concat();
        assert_eq!(ended(&early, &spec.marker), (Some(0), true));
        assert_eq!(Split::new(&spec).stdout.files(&spec).len(), 2);
        // A status no process can end with.
        let odd = [spec.marker.as_slice(), &record_header(END, 256, 0)].concat();
        assert_eq!(ended(&odd, &spec.marker).0, None);
    }

    #[test]
    fn records_past_their_bound_stop_the_run() {
        let spec = spec();
        let mut splitter = Splitter::new(&spec);
        let (_, ok) = splitter.feed(&spec.marker);
        assert!(ok);
        let (_, ok) = splitter.feed(&vec![0; spec.records_bound() + 1]);
        assert!(!ok);
    }
}
