//! The HTTP API's request and response bodies (docs/API.md, docs/openapi.yaml),
//! and the one conversion from a run request to a `Submission`.
//!
//! Requests refuse unknown fields. Every check that does not need the host
//! happens here, so that a bad job is refused with 400 before it is stored.

use crate::executor::store::{JobRecord, JobStatus};
use crate::policy::{ByteSize, LimitOverrides, parse_duration};
use crate::runtime::{
    Entrypoint, InputFile, OutcomeJson, StreamEncoding, Submission, encode_stream,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// POST /v1/runs and POST /v1/jobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    code: Option<String>,
    #[serde(default)]
    files: Vec<FileJson>,
    entrypoint: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// The policy's name; the tenant's first policy when absent.
    pub policy: Option<String>,
    limits: Option<LimitsJson>,
    /// Paths in the work dir to bring back after the run.
    #[serde(default)]
    outputs: Vec<String>,
    /// The image's name; the tenant's first image when absent.
    pub image: Option<String>,
    /// The architecture (`amd64`, `arm64`); the image's default when absent.
    pub arch: Option<String>,
}

/// One input file: `text` or `base64` contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    path: String,
    text: Option<String>,
    base64: Option<String>,
}

/// Limits that may only tighten the policy's, written as in policy files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsJson {
    wall_time: Option<String>,
    cpu_time: Option<String>,
    memory: Option<String>,
    pids: Option<u32>,
    open_files: Option<u32>,
    file_size: Option<String>,
    output: Option<String>,
    tmpfs: Option<String>,
    cpus: Option<f64>,
}

/// A request that is well-formed JSON but not a valid run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn bad(message: impl Into<String>) -> InvalidRequest {
    InvalidRequest(message.into())
}

fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, InvalidRequest> {
    BASE64.decode(text.as_bytes()).map_err(|e| {
        bad(format!(
            "{field} is not valid base64 (standard alphabet, padded): {e}"
        ))
    })
}

fn duration(
    field: &str,
    value: Option<&String>,
) -> Result<Option<std::time::Duration>, InvalidRequest> {
    value
        .map(|v| parse_duration(v).map_err(|e| bad(format!("limits.{field} {v:?}: {e}"))))
        .transpose()
}

fn size(field: &str, value: Option<&String>) -> Result<Option<ByteSize>, InvalidRequest> {
    value
        .map(|v| {
            v.parse::<ByteSize>()
                .map_err(|e| bad(format!("limits.{field} {v:?}: {e}")))
        })
        .transpose()
}

impl LimitsJson {
    fn overrides(&self) -> Result<LimitOverrides, InvalidRequest> {
        Ok(LimitOverrides {
            wall_time: duration("wall_time", self.wall_time.as_ref())?,
            cpu_time: duration("cpu_time", self.cpu_time.as_ref())?,
            memory: size("memory", self.memory.as_ref())?,
            pids: self.pids,
            open_files: self.open_files,
            file_size: size("file_size", self.file_size.as_ref())?,
            output: size("output", self.output.as_ref())?,
            tmpfs: size("tmpfs", self.tmpfs.as_ref())?,
            cpus: self.cpus,
        })
    }
}

impl RunRequest {
    /// The submission this request asks for.
    pub fn submission(&self) -> Result<Submission, InvalidRequest> {
        let entrypoint = match (&self.code, &self.entrypoint) {
            (Some(code), None) => Entrypoint::Code(code.clone()),
            (None, Some(path)) => {
                if !self.files.iter().any(|f| &f.path == path) {
                    return Err(bad(format!("entrypoint {path:?} is not one of the files")));
                }
                Entrypoint::File(path.clone())
            }
            (Some(_), Some(_)) => return Err(bad("give either code or entrypoint, not both")),
            (None, None) => return Err(bad("give code, or files and an entrypoint")),
        };
        let mut files = Vec::with_capacity(self.files.len());
        for (i, file) in self.files.iter().enumerate() {
            let contents = match (&file.text, &file.base64) {
                (Some(text), None) => text.clone().into_bytes(),
                (None, Some(b64)) => decode_base64(&format!("files[{i}].base64"), b64)?,
                _ => {
                    return Err(bad(format!(
                        "files[{i}] needs exactly one of text and base64"
                    )));
                }
            };
            if files.iter().any(|f: &InputFile| f.path == file.path) {
                return Err(bad(format!(
                    "files[{i}]: path {:?} is given twice",
                    file.path
                )));
            }
            files.push(InputFile {
                path: file.path.clone(),
                contents,
            });
        }
        let stdin = match (&self.stdin, &self.stdin_base64) {
            (Some(text), None) => text.clone().into_bytes(),
            (None, Some(b64)) => decode_base64("stdin_base64", b64)?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => return Err(bad("give either stdin or stdin_base64, not both")),
        };
        let limits = match &self.limits {
            Some(limits) => limits.overrides()?,
            None => LimitOverrides::default(),
        };
        crate::runtime::output_files::check_paths(&self.outputs).map_err(InvalidRequest)?;
        Ok(Submission {
            entrypoint,
            files,
            args: self.args.clone(),
            stdin,
            env: self.env.clone(),
            limits,
            outputs: self.outputs.clone(),
            // Routed by the front end (tenant defaults, allowed images), then set.
            image: None,
            arch: None,
        })
    }
}

/// The body of POST /v1/runs: the outcome object plus the request's trace id.
#[derive(Debug, Serialize)]
pub struct RunResponse {
    /// The outcome (docs/API.md), flattened.
    #[serde(flatten)]
    pub outcome: OutcomeJson,
    /// The request's trace id.
    pub trace_id: String,
}

/// The error object of a failed job.
#[derive(Debug, Serialize)]
pub struct JobErrorJson {
    code: String,
    message: String,
}

/// GET /v1/jobs/{id}, and the bodies of POST /v1/jobs and DELETE.
#[derive(Debug, Serialize)]
pub struct JobJson {
    id: String,
    status: &'static str,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    attempts: u32,
    outcome: Option<serde_json::Value>,
    error: Option<JobErrorJson>,
    trace_id: String,
}

impl From<&JobRecord> for JobJson {
    fn from(job: &JobRecord) -> JobJson {
        JobJson {
            id: job.id.clone(),
            status: job.status.as_str(),
            created_at_ms: job.created_ms,
            started_at_ms: job.started_ms,
            finished_at_ms: job.finished_ms,
            attempts: job.attempts,
            outcome: job
                .outcome
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok()),
            error: job.error.as_ref().map(|(code, message)| JobErrorJson {
                code: code.clone(),
                message: message.clone(),
            }),
            trace_id: job.trace_id.clone(),
        }
    }
}

/// The data of a `status` server-sent event.
#[derive(Debug, Serialize)]
pub struct StatusEvent<'a> {
    /// The job.
    pub id: &'a str,
    /// Its state.
    pub status: &'static str,
}

impl JobStatus {
    /// The status event for this state.
    pub fn event<'a>(self, id: &'a str) -> StatusEvent<'a> {
        StatusEvent {
            id,
            status: self.as_str(),
        }
    }
}

/// The data of a `stdout` or `stderr` server-sent event: one chunk of a
/// running job's output, encoded as the outcome encodes a stream. Each chunk
/// is encoded on its own: one that is not valid UTF-8 by itself (a character
/// split between two chunks) is base64.
#[derive(Debug, Serialize)]
pub struct ChunkEvent {
    /// The chunk, as `encoding` says.
    pub data: String,
    /// `utf-8` or `base64`.
    pub encoding: StreamEncoding,
}

impl ChunkEvent {
    /// The event data for `bytes`.
    pub fn new(bytes: &[u8]) -> ChunkEvent {
        let (data, encoding) = encode_stream(bytes);
        ChunkEvent { data, encoding }
    }
}

/// The data of a `lagged` server-sent event: the client read too slowly and
/// this many chunks of output were dropped for it (the outcome has them all).
#[derive(Debug, Serialize)]
pub struct LaggedEvent {
    /// How many chunks were dropped.
    pub missed_chunks: u64,
}

/// One entry of GET /v1/images.
#[derive(Debug, Serialize)]
pub struct ImageJson {
    /// The name to give as `image`.
    pub name: String,
    /// Whether it is used when a request names none.
    pub default: bool,
    /// `native` or `docker`.
    pub runtime: &'static str,
    /// The architectures it runs on.
    pub arches: Vec<crate::arch::Arch>,
    /// The architecture used when a request names none.
    pub default_arch: Option<crate::arch::Arch>,
    /// The Python version (`3.11.2`), or `null` when unknown.
    pub python: Option<String>,
}

/// One entry of GET /v1/policies.
#[derive(Debug, Serialize)]
pub struct PolicyJson {
    /// The name to give as `policy`.
    pub name: String,
    /// Whether it is used when a request names none.
    pub default: bool,
    /// Its limits, as in policy files.
    pub limits: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(body: &str) -> Result<Submission, String> {
        let request: RunRequest = serde_json::from_str(body).map_err(|e| e.to_string())?;
        request.submission().map_err(|e| e.to_string())
    }

    #[test]
    fn well_formed_requests_become_submissions() {
        let s = parse(
            r#"{"code":"print(1)","stdin":"x","limits":{"wall_time":"2s","memory":"64MiB"}}"#,
        )
        .unwrap();
        assert_eq!(s.entrypoint, Entrypoint::Code("print(1)".into()));
        assert_eq!(s.stdin, b"x");
        assert_eq!(s.limits.memory, Some(ByteSize::mib(64)));
        let s = parse(r#"{"files":[{"path":"m.py","base64":"cHJpbnQoMik="}],"entrypoint":"m.py","stdin_base64":"/w=="}"#).unwrap();
        let routed: RunRequest =
            serde_json::from_str(r#"{"code":"1","image":"py","arch":"arm64"}"#).unwrap();
        assert_eq!(
            (routed.image.as_deref(), routed.arch.as_deref()),
            (Some("py"), Some("arm64"))
        );
        assert_eq!(s.files[0].contents, b"print(2)");
        assert_eq!(s.stdin, [0xff]);
        assert!(s.outputs.is_empty());
        let s = parse(r#"{"code":"1","outputs":["result.json","out/plot.png"]}"#).unwrap();
        assert_eq!(s.outputs, ["result.json", "out/plot.png"]);
    }

    #[test]
    fn chunks_are_text_when_utf8_and_base64_otherwise() {
        let text = serde_json::to_value(ChunkEvent::new("héllo\n".as_bytes())).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"data": "héllo\n", "encoding": "utf-8"})
        );
        // The first byte of "é" alone, as when a character is split between chunks.
        let split = serde_json::to_value(ChunkEvent::new(&[b'h', 0xc3])).unwrap();
        assert_eq!(
            split,
            serde_json::json!({"data": "aMM=", "encoding": "base64"})
        );
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        for (body, expect) in [
            ("{}", "give code"),
            (r#"{"code":"1","entrypoint":"a.py"}"#, "not both"),
            (r#"{"entrypoint":"a.py"}"#, "not one of the files"),
            (r#"{"code":"1","colour":"red"}"#, "unknown field `colour`"),
            (
                r#"{"code":"1","stdin_base64":"!!"}"#,
                "stdin_base64 is not valid base64",
            ),
            (
                r#"{"code":"1","limits":{"memory":"lots"}}"#,
                "limits.memory",
            ),
            (
                r#"{"code":"1","limits":{"wall":"1s"}}"#,
                "unknown field `wall`",
            ),
            (r#"{"code":1}"#, "invalid type"),
            (
                r#"{"files":[{"path":"a","text":"","base64":""}],"code":"1"}"#,
                "exactly one",
            ),
            ("[", "EOF"),
            (
                r#"{"code":"1","outputs":["../etc/passwd"]}"#,
                "output path \"../etc/passwd\"",
            ),
            (r#"{"code":"1","outputs":["a","a"]}"#, "declared twice"),
            (r#"{"code":"1","outputs":"a"}"#, "invalid type"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(expect), "{body}: {err}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(request) = serde_json::from_slice::<RunRequest>(&bytes) {
                let _ = request.submission();
            }
        }

        #[test]
        fn arbitrary_field_values_never_panic(
            code in proptest::option::of(".{0,20}"),
            entry in proptest::option::of(".{0,8}"),
            b64 in ".{0,12}",
            memory in ".{0,8}",
            wall in ".{0,8}",
        ) {
            let body = serde_json::json!({
                "code": code, "entrypoint": entry, "stdin_base64": b64,
                "files": [{"path": entry.clone().unwrap_or_default(), "base64": b64}],
                "limits": {"memory": memory, "wall_time": wall},
            });
            if let Ok(request) = serde_json::from_value::<RunRequest>(body) {
                let _ = request.submission();
            }
        }
    }
}
