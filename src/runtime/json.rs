//! The stable JSON form of an [`Outcome`]: the public contract of
//! `pyward run --json` and the HTTP API (docs/API.md).
//!
//! Owns the wire struct and the two conversions. Nothing else in the crate
//! spells a JSON field name of an outcome; change a name here and the
//! contract breaks, so don't.

use super::{Captured, LimitReached, Outcome, OutputFile, OutputStatus, Usage, Verdict};
use crate::arch::Arch;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a captured stream is written in its JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamEncoding {
    /// The bytes were valid UTF-8; the string is the text itself.
    #[serde(rename = "utf-8")]
    Utf8,
    /// The bytes were not valid UTF-8; the string is their standard base64 (with padding).
    #[serde(rename = "base64")]
    Base64,
}

impl StreamEncoding {
    /// The name used in JSON: `utf-8` or `base64`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEncoding::Utf8 => "utf-8",
            StreamEncoding::Base64 => "base64",
        }
    }
}

/// The `usage` object of [`OutcomeJson`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageJson {
    /// Wall-clock time in whole milliseconds (rounded down).
    pub wall_ms: u64,
    /// CPU time (user plus system) in whole milliseconds (rounded down).
    pub cpu_ms: u64,
    /// Peak memory of the sandbox in bytes.
    pub peak_memory_bytes: u64,
}

/// The `status` of an [`OutputFileJson`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatusJson {
    /// A regular file, read: `content` holds its bytes up to the caps.
    Ok,
    /// Nothing at the path.
    Missing,
    /// Not a regular file, or a path through a symbolic link (never followed).
    NotRegular,
    /// Not read: the run was stopped before the program ended, or the file could not be opened.
    NotCollected,
}

/// One entry of `files` in [`OutcomeJson`]: a declared output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFileJson {
    /// The path as declared, relative to the work dir.
    pub path: String,
    /// `ok`, `missing`, `not_regular` or `not_collected`.
    pub status: OutputStatusJson,
    /// The bytes kept, encoded as `encoding` says; empty unless `status` is `ok`.
    pub content: String,
    /// `utf-8` or `base64`, as for stdout.
    pub encoding: StreamEncoding,
    /// The file's size in bytes when it was read; `null` unless `status` is `ok`.
    pub size: Option<u64>,
    /// True when the file held more than was kept.
    pub truncated: bool,
}

impl From<&OutputFile> for OutputFileJson {
    fn from(file: &OutputFile) -> OutputFileJson {
        let (status, kept, size) = match &file.status {
            OutputStatus::Collected { contents, size } => {
                (OutputStatusJson::Ok, Some(contents), Some(*size))
            }
            OutputStatus::Missing => (OutputStatusJson::Missing, None, None),
            OutputStatus::NotRegular => (OutputStatusJson::NotRegular, None, None),
            OutputStatus::NotCollected => (OutputStatusJson::NotCollected, None, None),
        };
        let (content, encoding) = encode_stream(kept.map_or(&[][..], |c| &c.bytes));
        OutputFileJson {
            path: file.path.clone(),
            status,
            content,
            encoding,
            size,
            truncated: kept.is_some_and(|c| c.truncated),
        }
    }
}

impl TryFrom<OutputFileJson> for OutputFile {
    type Error = OutcomeJsonError;

    fn try_from(wire: OutputFileJson) -> Result<OutputFile, OutcomeJsonError> {
        let status = match wire.status {
            OutputStatusJson::Ok => {
                let bytes = decode_stream("files[].content", wire.content, wire.encoding)?;
                OutputStatus::Collected {
                    size: wire.size.unwrap_or(bytes.len() as u64),
                    contents: Captured {
                        bytes,
                        truncated: wire.truncated,
                    },
                }
            }
            OutputStatusJson::Missing => OutputStatus::Missing,
            OutputStatusJson::NotRegular => OutputStatus::NotRegular,
            OutputStatusJson::NotCollected => OutputStatus::NotCollected,
        };
        Ok(OutputFile {
            path: wire.path,
            status,
        })
    }
}

/// The JSON form of an [`Outcome`], field for field as docs/API.md describes it.
///
/// Build one with `OutcomeJson::from(&outcome)`, read one back with
/// `Outcome::try_from(wire)`. Unknown fields are ignored when reading, so that
/// clients keep working when a field is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeJson {
    /// Why the run ended (`ok`, `runtime_error`, …).
    pub verdict: Verdict,
    /// The program's exit status, or `null` when it did not exit.
    pub exit_code: Option<i32>,
    /// The number of the signal that ended the program, or `null`.
    pub signal: Option<i32>,
    /// The signal's name (`SIGKILL`), or `null` when there was no signal or it has no name.
    pub signal_name: Option<String>,
    /// stdout, encoded as `stdout_encoding` says.
    pub stdout: String,
    /// `utf-8` or `base64`.
    pub stdout_encoding: StreamEncoding,
    /// True when the program wrote more to stdout than was kept.
    pub stdout_truncated: bool,
    /// stderr, encoded as `stderr_encoding` says.
    pub stderr: String,
    /// `utf-8` or `base64`.
    pub stderr_encoding: StreamEncoding,
    /// True when the program wrote more to stderr than was kept.
    pub stderr_truncated: bool,
    /// Resources used.
    pub usage: UsageJson,
    /// A sentence saying what happened (limits, sandbox errors), or `null`.
    pub message: Option<String>,
    /// The image the run used (`host`, `python3.11-bookworm`, …), or `null`
    /// when the outcome did not come through an executor. Outcomes stored
    /// before the field existed lack it; they read back as `null`.
    #[serde(default)]
    pub image: Option<String>,
    /// The architecture the run used (`amd64`, `arm64`), or `null` like `image`.
    #[serde(default)]
    pub arch: Option<Arch>,
    /// The declared output files, in the order of the request's `outputs`
    /// (absent in outcomes stored before output files existed: read as none).
    #[serde(default)]
    pub files: Vec<OutputFileJson>,
    /// Every limit the run reached (`wall_time`, `cpu_time`, `memory`,
    /// `pids`, `output`), the one that ended it among them: a fork bomb that
    /// spins until the CPU limit has `["cpu_time", "pids"]`. Outcomes stored
    /// before the field existed read back as none.
    #[serde(default)]
    pub limits_reached: Vec<LimitReached>,
}

/// A JSON outcome that cannot be turned back into an [`Outcome`].
#[derive(Debug, thiserror::Error)]
pub enum OutcomeJsonError {
    /// The text is not a JSON outcome object.
    #[error("not a JSON outcome: {0}")]
    Parse(#[from] serde_json::Error),
    /// A stream marked `base64` does not hold valid base64.
    #[error("field {field:?} is marked base64 but does not decode: {source}")]
    Base64 {
        /// `stdout`, `stderr` or `files[].content`.
        field: &'static str,
        /// What the decoder found.
        source: base64::DecodeError,
    },
}

/// Encodes bytes as text when they are UTF-8, as base64 otherwise: never lossy.
pub(crate) fn encode_stream(bytes: &[u8]) -> (String, StreamEncoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), StreamEncoding::Utf8),
        Err(_) => (BASE64.encode(bytes), StreamEncoding::Base64),
    }
}

fn decode_stream(
    field: &'static str,
    text: String,
    encoding: StreamEncoding,
) -> Result<Vec<u8>, OutcomeJsonError> {
    match encoding {
        StreamEncoding::Utf8 => Ok(text.into_bytes()),
        StreamEncoding::Base64 => BASE64
            .decode(text.as_bytes())
            .map_err(|source| OutcomeJsonError::Base64 { field, source }),
    }
}

/// `SIGKILL` for 9, and so on; `None` for numbers the platform does not name.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(signal)
        .ok()
        .map(|s| s.as_str())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&Outcome> for OutcomeJson {
    fn from(outcome: &Outcome) -> OutcomeJson {
        let (stdout, stdout_encoding) = encode_stream(&outcome.stdout.bytes);
        let (stderr, stderr_encoding) = encode_stream(&outcome.stderr.bytes);
        OutcomeJson {
            verdict: outcome.verdict,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            signal_name: outcome.signal.and_then(signal_name).map(str::to_owned),
            stdout,
            stdout_encoding,
            stdout_truncated: outcome.stdout.truncated,
            stderr,
            stderr_encoding,
            stderr_truncated: outcome.stderr.truncated,
            usage: UsageJson {
                wall_ms: millis(outcome.usage.wall),
                cpu_ms: millis(outcome.usage.cpu),
                peak_memory_bytes: outcome.usage.peak_memory_bytes,
            },
            message: outcome.message.clone(),
            image: outcome.image.clone(),
            arch: outcome.arch,
            files: outcome.files.iter().map(OutputFileJson::from).collect(),
            limits_reached: outcome.limits_reached.clone(),
        }
    }
}

impl TryFrom<OutcomeJson> for Outcome {
    type Error = OutcomeJsonError;

    /// The inverse of `OutcomeJson::from`, except that times come back in whole
    /// milliseconds and `signal_name` is derived from `signal`, not read.
    fn try_from(wire: OutcomeJson) -> Result<Outcome, OutcomeJsonError> {
        Ok(Outcome {
            verdict: wire.verdict,
            exit_code: wire.exit_code,
            signal: wire.signal,
            stdout: Captured {
                bytes: decode_stream("stdout", wire.stdout, wire.stdout_encoding)?,
                truncated: wire.stdout_truncated,
            },
            stderr: Captured {
                bytes: decode_stream("stderr", wire.stderr, wire.stderr_encoding)?,
                truncated: wire.stderr_truncated,
            },
            usage: Usage {
                wall: Duration::from_millis(wire.usage.wall_ms),
                cpu: Duration::from_millis(wire.usage.cpu_ms),
                peak_memory_bytes: wire.usage.peak_memory_bytes,
            },
            message: wire.message,
            image: wire.image,
            arch: wire.arch,
            files: wire
                .files
                .into_iter()
                .map(OutputFile::try_from)
                .collect::<Result<_, _>>()?,
            limits_reached: wire.limits_reached,
        })
    }
}

impl Outcome {
    /// The JSON object of docs/API.md, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&OutcomeJson::from(self))
            .expect("OutcomeJson has only string keys and plain values")
    }

    /// Reads back what [`Outcome::to_json`] wrote (times in whole milliseconds).
    pub fn from_json(text: &str) -> Result<Outcome, OutcomeJsonError> {
        let wire: OutcomeJson = serde_json::from_str(text)?;
        Outcome::try_from(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn outcome(stdout: &[u8], stderr: &[u8]) -> Outcome {
        Outcome {
            verdict: Verdict::Ok,
            exit_code: Some(0),
            signal: None,
            stdout: Captured {
                bytes: stdout.to_vec(),
                truncated: false,
            },
            stderr: Captured {
                bytes: stderr.to_vec(),
                truncated: true,
            },
            usage: Usage {
                wall: Duration::from_millis(12),
                cpu: Duration::from_millis(9),
                peak_memory_bytes: 8_500_000,
            },
            message: None,
            image: None,
            arch: None,
            files: Vec::new(),
            limits_reached: Vec::new(),
        }
    }

    #[test]
    fn utf8_output_is_written_as_text_with_every_field() {
        let json: Value =
            serde_json::from_str(&outcome(b"hi\n", "é".as_bytes()).to_json()).unwrap();
        assert_eq!(
            json,
            json!({
                "verdict": "ok",
                "exit_code": 0,
                "signal": null,
                "signal_name": null,
                "stdout": "hi\n",
                "stdout_encoding": "utf-8",
                "stdout_truncated": false,
                "stderr": "é",
                "stderr_encoding": "utf-8",
                "stderr_truncated": true,
                "usage": {"wall_ms": 12, "cpu_ms": 9, "peak_memory_bytes": 8_500_000},
                "message": null,
                "image": null,
                "arch": null,
                "files": [],
                "limits_reached": [],
            })
        );
    }

    #[test]
    fn limits_reached_are_written_by_name_and_read_back() {
        let mut o = outcome(b"", b"");
        o.limits_reached = vec![LimitReached::CpuTime, LimitReached::Pids];
        let json: Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(json["limits_reached"], json!(["cpu_time", "pids"]));
        assert_eq!(Outcome::from_json(&o.to_json()).unwrap(), o);
        // Outcomes stored before the field existed read as none reached.
        let mut old = json;
        old.as_object_mut().unwrap().remove("limits_reached");
        let read = Outcome::from_json(&old.to_string()).unwrap();
        assert!(read.limits_reached.is_empty());
        for limit in LimitReached::ALL {
            assert_eq!(json!(limit), json!(limit.as_str()));
        }
    }

    #[test]
    fn image_and_arch_are_written_and_read_back() {
        let mut o = outcome(b"", b"");
        o.image = Some("python3.11-bookworm".into());
        o.arch = Some(Arch::Arm64);
        let json: Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(
            (&json["image"], &json["arch"]),
            (&json!("python3.11-bookworm"), &json!("arm64"))
        );
        assert_eq!(Outcome::from_json(&o.to_json()).unwrap(), o);
    }

    #[test]
    fn outcomes_written_before_image_and_arch_still_read() {
        let mut json: Value = serde_json::from_str(&outcome(b"x", b"").to_json()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("image");
        object.remove("arch");
        assert_eq!(
            Outcome::from_json(&json.to_string()).unwrap(),
            outcome(b"x", b"")
        );
    }

    #[test]
    fn output_files_are_encoded_like_stdout_and_round_trip() {
        let mut o = outcome(b"", b"");
        let collected = |bytes: &[u8], size, truncated| OutputStatus::Collected {
            contents: Captured {
                bytes: bytes.to_vec(),
                truncated,
            },
            size,
        };
        o.files = vec![
            OutputFile {
                path: "result.json".into(),
                status: collected(b"{}", 2, false),
            },
            OutputFile {
                path: "out/plot.png".into(),
                status: collected(b"\x89PNG\xff", 9000, true),
            },
            OutputFile {
                path: "gone".into(),
                status: OutputStatus::Missing,
            },
            OutputFile {
                path: "link".into(),
                status: OutputStatus::NotRegular,
            },
            OutputFile {
                path: "late".into(),
                status: OutputStatus::NotCollected,
            },
        ];
        let text = o.to_json();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json["files"],
            json!([
                {"path": "result.json", "status": "ok", "content": "{}", "encoding": "utf-8", "size": 2, "truncated": false},
                {"path": "out/plot.png", "status": "ok", "content": "iVBOR/8=", "encoding": "base64", "size": 9000, "truncated": true},
                {"path": "gone", "status": "missing", "content": "", "encoding": "utf-8", "size": null, "truncated": false},
                {"path": "link", "status": "not_regular", "content": "", "encoding": "utf-8", "size": null, "truncated": false},
                {"path": "late", "status": "not_collected", "content": "", "encoding": "utf-8", "size": null, "truncated": false},
            ])
        );
        assert_eq!(Outcome::from_json(&text).unwrap(), o);
    }

    #[test]
    fn outcomes_without_files_read_as_none() {
        let mut json: Value = serde_json::from_str(&outcome(b"x", b"").to_json()).unwrap();
        json.as_object_mut().unwrap().remove("files");
        assert_eq!(
            Outcome::from_json(&json.to_string()).unwrap(),
            outcome(b"x", b"")
        );
    }

    #[test]
    fn non_utf8_output_is_base64_and_round_trips_exactly() {
        let mut o = outcome(b"\xff\xfe\x00binary", b"ok");
        o.verdict = Verdict::Signaled;
        o.exit_code = None;
        o.signal = Some(9);
        o.message = Some("killed".into());
        let text = o.to_json();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["stdout_encoding"], "base64");
        assert_eq!(json["stdout"], "//4AYmluYXJ5");
        assert_eq!(json["stderr_encoding"], "utf-8");
        assert_eq!(json["signal_name"], "SIGKILL");
        assert_eq!(json["verdict"], "signaled");
        assert_eq!(Outcome::from_json(&text).unwrap(), o);
    }

    #[test]
    fn every_verdict_uses_its_documented_name() {
        for v in Verdict::ALL {
            let mut o = outcome(b"", b"");
            o.verdict = v;
            let json: Value = serde_json::from_str(&o.to_json()).unwrap();
            assert_eq!(json["verdict"], v.as_str());
            assert_eq!(Outcome::from_json(&o.to_json()).unwrap().verdict, v);
        }
    }

    #[test]
    fn bad_base64_is_an_error_naming_the_field() {
        let mut json: Value = serde_json::from_str(&outcome(b"", b"").to_json()).unwrap();
        json["stderr"] = "not base64!".into();
        json["stderr_encoding"] = "base64".into();
        let err = Outcome::from_json(&json.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("stderr"), "{err}");
    }

    #[test]
    fn unknown_fields_are_ignored_when_reading() {
        let mut json: Value = serde_json::from_str(&outcome(b"x", b"").to_json()).unwrap();
        json["added_later"] = 1.into();
        assert_eq!(
            Outcome::from_json(&json.to_string()).unwrap(),
            outcome(b"x", b"")
        );
    }
}
