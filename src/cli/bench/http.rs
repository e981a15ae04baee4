//! `pyward bench http`: a load generator for `pyward serve`. C workers, each
//! on its own keep-alive HTTP/1.1 connection (a minimal client over a tokio
//! `TcpStream`), send N `POST /v1/runs` in all and record each latency, the
//! HTTP status and the verdict. A failed connection is counted and replaced,
//! never a panic. It owns no server state: it only talks HTTP.

use super::super::exit;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Flags of `pyward bench http`.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// The server, e.g. http://127.0.0.1:8080 (plain HTTP only).
    #[arg(long)]
    url: String,
    /// Requests in all.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Bearer token of a tenant.
    #[arg(long)]
    token: Option<String>,
    /// The Python code of every run.
    #[arg(long, default_value = "pass")]
    code: String,
}

/// `pyward bench http` could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpBenchError {
    /// The URL is not `http://HOST[:PORT][/PREFIX]`.
    #[error("bench http: bad --url {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tokio runtime could not be built.
    #[error("bench http: cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where to send: the `host:port` to connect to and the request's path.
struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, HttpBenchError> {
    let bad = |reason| HttpBenchError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let addr = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let prefix = prefix.trim_end_matches('/');
    let path = if prefix.is_empty() {
        "/v1/runs".to_owned()
    } else {
        format!("/{prefix}/v1/runs")
    };
    Ok(Target {
        addr,
        host: host.to_owned(),
        path,
    })
}

/// What one request came to.
enum Reply {
    Answer {
        status: u16,
        verdict: Option<String>,
    },
    Failed(String),
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    by_status: BTreeMap<u16, u64>,
    by_verdict: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// Runs the load and prints the figures. Exits 5 when a request was lost
/// (a connection error) or answered 5xx, else 0.
pub fn run(args: &HttpArgs) -> Result<u8, super::super::CliError> {
    let target = Arc::new(parse_url(&args.url).map_err(super::BenchError::from)?);
    let request = Arc::new(request_bytes(&target, args));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| super::BenchError::from(HttpBenchError::Runtime(e)))?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    runtime.block_on(async {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (target, request, tally, next) =
                    (target.clone(), request.clone(), tally.clone(), next.clone());
                let runs = args.runs;
                tokio::spawn(async move { worker(&target, &request, runs, &next, &tally).await })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    });
    let elapsed = start.elapsed();
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    outln!(
        "pyward bench http: {} runs of {:?} at concurrency {} against http://{}{}; {} CPUs",
        args.runs,
        args.code,
        args.concurrency,
        target.host,
        target.path,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    Ok(report(&mut tally, elapsed))
}

fn request_bytes(target: &Target, args: &HttpArgs) -> Vec<u8> {
    let body = serde_json::json!({ "code": args.code }).to_string();
    let auth = args
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        target.path,
        target.host,
        body.len()
    )
    .into_bytes()
}

/// Takes run numbers until all are taken; one connection, reopened after
/// an error or a `Connection: close`.
async fn worker(
    target: &Target,
    request: &[u8],
    runs: u32,
    next: &AtomicU32,
    tally: &Mutex<Tally>,
) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while next.fetch_add(1, Ordering::Relaxed) < runs {
        let start = Instant::now();
        let reply = match conn.take() {
            Some(c) => Ok(c),
            None => TcpStream::connect(&target.addr).await.map(BufReader::new),
        };
        let reply = match reply {
            Ok(mut c) => match exchange(&mut c, request).await {
                Ok((status, verdict, keep)) => {
                    if keep {
                        conn = Some(c);
                    }
                    Reply::Answer { status, verdict }
                }
                Err(e) => Reply::Failed(format!("{:?}", e.kind())),
            },
            Err(e) => Reply::Failed(format!("connect: {:?}", e.kind())),
        };
        let elapsed = start.elapsed();
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        match reply {
            Reply::Answer { status, verdict } => {
                t.latencies.push(elapsed);
                *t.by_status.entry(status).or_default() += 1;
                if let Some(v) = verdict {
                    *t.by_verdict.entry(v).or_default() += 1;
                }
            }
            Reply::Failed(what) => *t.errors.entry(what).or_default() += 1,
        }
    }
}

/// Sends one request and reads its response: the status, the verdict of a
/// JSON body that has one, and whether the connection may be reused.
async fn exchange(
    conn: &mut BufReader<TcpStream>,
    request: &[u8],
) -> std::io::Result<(u16, Option<String>, bool)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    conn.get_mut().write_all(request).await?;
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let (mut length, mut chunked, mut keep) = (0usize, false, true);
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("bad header"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| invalid("bad length"))?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(conn).await?
    } else {
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await?;
        body
    };
    let verdict = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("verdict")?.as_str().map(str::to_owned));
    Ok((status, verdict, keep))
}

async fn read_chunked(conn: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
        let mut chunk = vec![0; size + 2];
        conn.read_exact(&mut chunk).await?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Prints the figures and returns the exit code.
fn report(tally: &mut Tally, elapsed: Duration) -> u8 {
    tally.latencies.sort();
    let answered = tally.latencies.len();
    let pct = |p: f64| -> f64 {
        if answered == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * answered as f64).ceil() as usize;
        tally.latencies[i.clamp(1, answered) - 1].as_secs_f64() * 1000.0
    };
    outln!(
        "  answered {answered} in {:.2} s: {:.1} requests/s",
        elapsed.as_secs_f64(),
        answered as f64 / elapsed.as_secs_f64()
    );
    outln!(
        "  latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    let join = |m: Vec<(String, u64)>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let statuses = tally
        .by_status
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    outln!("  HTTP status: {}", join(statuses));
    outln!(
        "  verdict: {}",
        join(tally.by_verdict.clone().into_iter().collect())
    );
    outln!(
        "  errors (lost requests): {}",
        join(tally.errors.clone().into_iter().collect())
    );
    let server_errors: u64 = tally.by_status.range(500..).map(|(_, n)| n).sum();
    if tally.errors.is_empty() && server_errors == 0 {
        exit::OK
    } else {
        exit::SANDBOX_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls_become_an_address_and_the_runs_path() {
        let t = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/v1/runs")
        );
        let t = parse_url("http://example.test/pyward/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("example.test:80", "/pyward/v1/runs")
        );
        assert!(parse_url("https://127.0.0.1:8080").is_err());
        assert!(parse_url("http:///v1").is_err());
    }
}
