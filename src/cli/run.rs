//! `pyward run`: turn flags into a `Submission`, run it through the
//! `Executor` on the chosen runtime (native by default, or docker), and render the `Outcome` (pass-through
//! output plus a summary line, or the JSON object of docs/API.md).

use super::{CliError, verdict_exit_code};
use pyward::{
    ByteSize, DockerConfig, DockerRuntime, Entrypoint, ExecError, Executor, InputFile,
    LimitOverrides, NativeConfig, NativeRuntime, Outcome, OutputFile, OutputStatus, Runtime,
    SandboxPolicy, Submission,
};
use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The policy used when `--policy` is not given.
pub const DEFAULT_POLICY: &str = "strict";

/// Flags of `pyward run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("program").required(true).args(["file", "code"])))]
pub struct RunArgs {
    /// The Python file to run; it is copied into the sandbox's work dir under its base name.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Run CODE with `python3 -c` instead of a file.
    #[arg(short = 'c', long = "code", value_name = "CODE")]
    code: Option<String>,

    /// Run an image built by `pyward image build NAME` instead of the host's
    /// interpreter: its rootfs (native) or its Docker tag `pyward/NAME:ARCH`
    /// (docker), for this machine's architecture. Docker's default is
    /// python3.11-bookworm.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,

    /// A built-in policy name (strict, standard, …) or a policy TOML file.
    #[arg(long, value_name = "NAME|FILE", default_value = DEFAULT_POLICY)]
    policy: String,

    /// Feed this file to the program's stdin (`-` for pyward's own stdin). Default: empty stdin.
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,

    /// Copy a file into the work dir: PATH under its base name, or SRC:DEST to a relative DEST.
    #[arg(long = "file", value_name = "PATH|SRC:DEST")]
    files: Vec<String>,

    /// The runtime: native (Linux namespaces set up by pyward) or docker (a fresh container).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Native)]
    runtime: RuntimeChoice,

    /// The CPU architecture to run on: amd64 or arm64. Another one than this
    /// machine's needs `--runtime docker` and runs under qemu-user (docs/SECURITY.md).
    #[arg(long, value_name = "ARCH")]
    arch: Option<pyward::Arch>,

    /// Print only the JSON outcome (docs/API.md) on stdout.
    #[arg(long)]
    json: bool,

    /// Wall-clock limit, e.g. 500ms, 2s, 1m (may only tighten the policy's).
    #[arg(long, value_name = "D", value_parser = parse_duration_arg)]
    wall_time: Option<Duration>,

    /// CPU-time limit, e.g. 1s (may only tighten the policy's).
    #[arg(long, value_name = "D", value_parser = parse_duration_arg)]
    cpu_time: Option<Duration>,

    /// Memory limit, e.g. 64MiB (may only tighten the policy's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    memory: Option<ByteSize>,

    /// Process and thread limit, at least 1 (may only tighten the policy's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pids: Option<u32>,

    /// Output cap per stream, e.g. 64KiB (may only tighten the policy's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    output: Option<ByteSize>,

    /// Bring this file of the work dir back after the run (repeatable): a
    /// relative path the program writes, e.g. result.json or out/plot.png.
    /// Each comes back up to the output cap; see --output-dir.
    #[arg(long = "output-file", value_name = "PATH")]
    output_files: Vec<String>,

    /// Where to write the --output-file files, under their paths (created as
    /// needed, existing files overwritten). Default: the current directory,
    /// or, with --json, nowhere (the JSON holds them).
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,

    /// Set an environment variable the policy allows (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_arg)]
    env: Vec<(String, String)>,

    /// Arguments for the program (`sys.argv[1:]`), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// The rootfs of image `name` for this machine's architecture, from the image cache.
fn image_rootfs(name: &str) -> Result<PathBuf, CliError> {
    let cache = pyward::ImageCache::from_env();
    let arch = pyward::Arch::host();
    match cache.load_meta(name, arch)? {
        Some(_) => Ok(cache.rootfs_dir(name, arch)),
        None => Err(CliError::ImageNotBuilt {
            name: name.to_owned(),
            arch,
        }),
    }
}

/// The values of `--runtime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// Linux namespaces, cgroups and seccomp set up by pyward itself.
    Native,
    /// A fresh hardened container per run, through the Docker daemon.
    Docker,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    pyward::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_size_arg(s: &str) -> Result<ByteSize, String> {
    s.parse::<ByteSize>().map_err(|e| e.to_string())
}

fn parse_env_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Runs `pyward run`; returns the exit code of the verdict.
pub fn run(args: &RunArgs) -> Result<u8, CliError> {
    let policy = SandboxPolicy::load(&args.policy)?;
    let submission = submission(args)?;
    // Refuse a bad request before touching the host.
    Executor::resolve_policy(&policy, &submission)?;
    submission.check_outputs().map_err(ExecError::Run)?;
    let arch = args.arch.unwrap_or_else(pyward::Arch::host);
    let runtime = runtime(args.runtime, args.image.as_deref(), arch)?;
    let image = image_name(args.runtime, args.image.as_deref());
    let outcome = Executor::for_image(image, arch, runtime).run(&policy, &submission)?;
    let dir = match (&args.output_dir, args.json) {
        (Some(dir), _) => Some(dir.as_path()),
        (None, false) => Some(Path::new(".")),
        (None, true) => None,
    };
    let written = match dir {
        Some(dir) => write_output_files(&outcome.files, dir)?,
        None => Vec::new(),
    };
    if args.json {
        print_json(&outcome)
    } else {
        print_plain(&outcome, &written)
    }
    .map_err(CliError::Output)?;
    Ok(verdict_exit_code(outcome.verdict))
}

/// The image's name as the outcome reports it: `--image`, else `host`
/// (native) or python3.11-bookworm (docker), as `pyward serve` names them.
pub fn image_name(choice: RuntimeChoice, image: Option<&str>) -> &str {
    image.unwrap_or(match choice {
        RuntimeChoice::Native => pyward::HOST_IMAGE,
        RuntimeChoice::Docker => pyward::DEFAULT_DOCKER_IMAGE,
    })
}

/// The runtime to run on: native (this machine's architecture only) or a
/// Docker runtime for `arch`, its image checked to be in the daemon.
pub fn runtime(
    choice: RuntimeChoice,
    image: Option<&str>,
    arch: pyward::Arch,
) -> Result<Box<dyn Runtime>, CliError> {
    Ok(match choice {
        RuntimeChoice::Native => {
            if arch != pyward::Arch::host() {
                return Err(CliError::CrossArchNeedsDocker {
                    arch,
                    host: pyward::Arch::host(),
                });
            }
            let rootfs = image.map(image_rootfs).transpose()?;
            Box::new(NativeRuntime::new(NativeConfig {
                rootfs,
                ..NativeConfig::default()
            })?)
        }
        RuntimeChoice::Docker => {
            let mut config = DockerConfig::for_arch(arch);
            if let Some(name) = image {
                config.image = format!("{}:{arch}", pyward::docker_repository(name));
            }
            let docker = DockerRuntime::new(config)?;
            docker.check_image()?;
            Box::new(docker)
        }
    })
}

/// Builds the submission from the flags, reading every input file.
fn submission(args: &RunArgs) -> Result<Submission, CliError> {
    let mut submission = Submission::code(String::new());
    submission.entrypoint = match (&args.file, &args.code) {
        (Some(path), _) => {
            let name = base_name("FILE", path)?;
            submission.files.push(InputFile {
                path: name.clone(),
                contents: read("FILE", path)?,
            });
            Entrypoint::File(name)
        }
        (None, Some(code)) => Entrypoint::Code(code.clone()),
        // clap's "program" group requires one of the two.
        (None, None) => Entrypoint::Code(String::new()),
    };
    for spec in &args.files {
        let file = input_file(spec)?;
        if submission.files.iter().any(|f| f.path == file.path) {
            return Err(CliError::DuplicateFile { dest: file.path });
        }
        submission.files.push(file);
    }
    submission.stdin = read_stdin(args.stdin.as_deref())?;
    submission.env = env(&args.env)?;
    submission.args = args.args.clone();
    submission.outputs = args.output_files.clone();
    submission.limits = LimitOverrides {
        wall_time: args.wall_time,
        cpu_time: args.cpu_time,
        memory: args.memory,
        pids: args.pids,
        output: args.output,
        ..LimitOverrides::default()
    };
    Ok(submission)
}

/// The bytes `--stdin` names: none, pyward's own stdin (`-`), or a file.
pub(super) fn read_stdin(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    match path {
        None => Ok(Vec::new()),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|source| CliError::ReadInput {
                    what: "--stdin",
                    path: path.to_owned(),
                    source,
                })?;
            Ok(bytes)
        }
        Some(path) => read("--stdin", path),
    }
}

pub(super) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::ReadInput {
        what,
        path: path.to_owned(),
        source,
    })
}

pub(super) fn base_name(what: &'static str, path: &Path) -> Result<String, CliError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| CliError::FileName {
            what,
            path: path.to_owned(),
        })
}

/// `--file PATH` (copied under its base name) or `--file SRC:DEST`.
fn input_file(spec: &str) -> Result<InputFile, CliError> {
    let (src, dest) = match spec.split_once(':') {
        Some((src, dest)) => (Path::new(src), dest.to_owned()),
        None => (Path::new(spec), base_name("--file", Path::new(spec))?),
    };
    let plain = !dest.is_empty()
        && Path::new(&dest)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(CliError::FileDest {
            spec: spec.to_owned(),
            dest,
        });
    }
    Ok(InputFile {
        path: dest,
        contents: read("--file", src)?,
    })
}

fn env(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, CliError> {
    let mut env = BTreeMap::new();
    for (name, value) in pairs {
        if env.insert(name.clone(), value.clone()).is_some() {
            return Err(CliError::DuplicateEnv { name: name.clone() });
        }
    }
    Ok(env)
}

fn print_json(outcome: &Outcome) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", outcome.to_json())?;
    out.flush()
}

/// Writes each collected output file under `dir` at its path; returns
/// where each went (None for a file that did not come back).
fn write_output_files(files: &[OutputFile], dir: &Path) -> Result<Vec<Option<PathBuf>>, CliError> {
    let mut written = Vec::with_capacity(files.len());
    for file in files {
        let OutputStatus::Collected { contents, .. } = &file.status else {
            written.push(None);
            continue;
        };
        // A path the runtime accepted: relative, with plain components only.
        let path = dir.join(&file.path);
        let failed = |source| CliError::WriteOutputFile {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::write(&path, &contents.bytes).map_err(failed)?;
        written.push(Some(path));
    }
    Ok(written)
}

/// One line per declared output file: where it went, or why it did not come back.
fn file_lines(files: &[OutputFile], written: &[Option<PathBuf>]) -> Vec<String> {
    files
        .iter()
        .zip(written.iter().chain(std::iter::repeat(&None)))
        .map(|(file, to)| match (&file.status, to) {
            (OutputStatus::Collected { contents, size }, Some(to)) if contents.truncated => {
                format!(
                    "pyward: {}: truncated to {} of {size} bytes, written to {}",
                    file.path,
                    contents.bytes.len(),
                    to.display()
                )
            }
            (OutputStatus::Collected { size, .. }, Some(to)) => {
                format!(
                    "pyward: {}: {size} bytes, written to {}",
                    file.path,
                    to.display()
                )
            }
            (OutputStatus::Collected { size, .. }, None) => {
                format!("pyward: {}: {size} bytes, not written", file.path)
            }
            (OutputStatus::Missing, _) => format!("pyward: {}: missing", file.path),
            (OutputStatus::NotRegular, _) => format!(
                "pyward: {}: not a regular file (links are never followed), not read",
                file.path
            ),
            (OutputStatus::NotCollected, _) => format!(
                "pyward: {}: not collected (the run was stopped before the program ended)",
                file.path
            ),
        })
        .collect()
}

/// The program's bytes, unchanged, then a line per output file and one
/// summary line on stderr.
fn print_plain(outcome: &Outcome, written: &[Option<PathBuf>]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(&outcome.stdout.bytes)?;
    out.flush()?;
    let mut err = io::stderr().lock();
    err.write_all(&outcome.stderr.bytes)?;
    if outcome.stderr.bytes.last().is_some_and(|&b| b != b'\n') {
        err.write_all(b"\n")?;
    }
    for line in file_lines(&outcome.files, written) {
        writeln!(err, "{line}")?;
    }
    writeln!(err, "{}", summary(outcome))?;
    err.flush()
}

/// `pyward: verdict=ok exit=0 wall=12ms cpu=9ms mem=8.1MiB`, plus the message if any.
pub fn summary(outcome: &Outcome) -> String {
    let mut line = format!("pyward: verdict={}", outcome.verdict);
    if let Some(code) = outcome.exit_code {
        line += &format!(" exit={code}");
    }
    if let Some(signal) = outcome.signal {
        match pyward::signal_name(signal) {
            Some(name) => line += &format!(" signal={name}"),
            None => line += &format!(" signal={signal}"),
        }
    }
    line += &format!(
        " wall={}ms cpu={}ms mem={}",
        outcome.usage.wall.as_millis(),
        outcome.usage.cpu.as_millis(),
        human_bytes(outcome.usage.peak_memory_bytes)
    );
    if outcome.stdout.truncated {
        line += " stdout_truncated";
    }
    if outcome.stderr.truncated {
        line += " stderr_truncated";
    }
    if !outcome.limits_reached.is_empty() {
        let limits: Vec<&str> = outcome.limits_reached.iter().map(|l| l.as_str()).collect();
        line += &format!(" limits={}", limits.join(","));
    }
    if let Some(message) = &outcome.message {
        line += &format!(": {message}");
    }
    line
}

/// `8.1MiB`, `512B`, `1.0GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.1}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyward::{Captured, Usage, Verdict};

    #[test]
    fn summary_names_verdict_exit_usage_and_message() {
        let outcome = Outcome {
            verdict: Verdict::Timeout,
            exit_code: None,
            signal: Some(9),
            stdout: Captured {
                bytes: Vec::new(),
                truncated: true,
            },
            stderr: Captured::default(),
            usage: Usage {
                wall: Duration::from_millis(2001),
                cpu: Duration::from_millis(1999),
                peak_memory_bytes: 8_500_000,
            },
            message: Some("wall-time limit of 2s reached".into()),
            image: None,
            arch: None,
            files: Vec::new(),
            limits_reached: vec![pyward::LimitReached::WallTime, pyward::LimitReached::Pids],
        };
        assert_eq!(
            summary(&outcome),
            "pyward: verdict=timeout signal=SIGKILL wall=2001ms cpu=1999ms mem=8.1MiB \
             stdout_truncated limits=wall_time,pids: wall-time limit of 2s reached"
        );
    }

    #[test]
    fn file_destinations_must_stay_inside_the_work_dir() {
        for bad in ["x:/etc/passwd", "x:../up", "x:", "x:a/../../b", "x:./a"] {
            let err = input_file(bad).unwrap_err();
            assert!(matches!(err, CliError::FileDest { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn output_files_are_written_under_the_dir_and_each_gets_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let collected = |bytes: &[u8], size, truncated| OutputStatus::Collected {
            contents: Captured {
                bytes: bytes.to_vec(),
                truncated,
            },
            size,
        };
        let files = vec![
            OutputFile {
                path: "out/r.json".into(),
                status: collected(b"{}", 2, false),
            },
            OutputFile {
                path: "big".into(),
                status: collected(b"abc", 10, true),
            },
            OutputFile {
                path: "gone".into(),
                status: OutputStatus::Missing,
            },
        ];
        let written = write_output_files(&files, dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out/r.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), b"abc");
        assert!(!dir.path().join("gone").exists());
        let lines = file_lines(&files, &written);
        assert!(
            lines[0].starts_with("pyward: out/r.json: 2 bytes, written to "),
            "{lines:?}"
        );
        assert!(lines[1].contains("truncated to 3 of 10 bytes"), "{lines:?}");
        assert_eq!(lines[2], "pyward: gone: missing");
    }

    #[test]
    fn env_pairs_need_a_name_and_an_equals_sign() {
        assert_eq!(parse_env_arg("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env_arg("A").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_env_arg("=x").is_err());
    }
}
