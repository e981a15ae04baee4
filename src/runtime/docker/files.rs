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
//! The cost, only when files are declared: the bootstrap's process stays for
//! the program's run (one more process against `limits.pids`, a few MiB
//! against `limits.memory`).

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
    /// The spec for `submission`, or None when it declares no output file.
    pub fn new(submission: &Submission, caps: OutputCaps) -> Result<Option<OutputsSpec>, RunError> {
        if submission.outputs.is_empty() {
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

    /// The most bytes the records may take.
    fn records_bound(&self) -> usize {
        let headers = (self.paths.len() * RECORD_HEADER) as u64;
        usize::try_from(self.caps.total.saturating_add(headers)).unwrap_or(usize::MAX)
    }
}

/// Splits the container's stdout into the program's bytes and the records.
#[derive(Debug)]
pub struct Splitter {
    marker: Vec<u8>,
    /// The program's last bytes, held back while they may begin the marker.
    held: Vec<u8>,
    /// Everything after the marker, once it has been seen.
    records: Option<Vec<u8>>,
    bound: usize,
}

impl Splitter {
    /// A splitter for the run of `spec`.
    pub fn new(spec: &OutputsSpec) -> Splitter {
        Splitter {
            marker: spec.marker.clone(),
            held: Vec::new(),
            records: None,
            bound: spec.records_bound(),
        }
    }

    /// Takes one chunk of the container's stdout and returns the program's
    /// bytes in it; false when the records passed their bound (more than the
    /// bootstrap ever writes: the run is to be stopped).
    pub fn feed(&mut self, chunk: &[u8]) -> (Vec<u8>, bool) {
        if let Some(records) = &mut self.records {
            if records.len() + chunk.len() > self.bound {
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
        OutputsSpec::new(&submission, caps).unwrap().unwrap()
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
    fn records_past_their_bound_stop_the_run() {
        let spec = spec();
        let mut splitter = Splitter::new(&spec);
        let (_, ok) = splitter.feed(&spec.marker);
        assert!(ok);
        let (_, ok) = splitter.feed(&vec![0; spec.records_bound() + 1]);
        assert!(!ok);
    }
}
