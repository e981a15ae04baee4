//! `pyward verify`: run one program on several architectures (Docker runtime,
//! the foreign ones under qemu-user) and compare verdict, exit code, stdout
//! and stderr. `compare` is the pure part: outcomes in, differences out.

use super::run::{self, RuntimeChoice};
use super::{CliError, exit};
use pyward::{Arch, Entrypoint, Executor, InputFile, Outcome, SandboxPolicy, Submission, Verdict};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Lines of context before the first differing line, and differing lines shown per side.
const CONTEXT: usize = 2;
const SHOWN: usize = 3;

/// Flags of `pyward verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("program").required(true).args(["file", "code"])))]
pub struct VerifyArgs {
    /// The Python file to run; it is copied into the work dir under its base name.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Run CODE with `python3 -c` instead of a file.
    #[arg(short = 'c', long = "code", value_name = "CODE")]
    code: Option<String>,

    /// The architectures to run on, comma-separated; the first is the reference.
    #[arg(
        long,
        value_name = "ARCH,...",
        value_delimiter = ',',
        default_value = "amd64,arm64"
    )]
    arch: Vec<Arch>,

    /// The image recipe: its Docker tag `pyward/NAME:ARCH` for each architecture.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,

    /// A built-in policy name (strict, standard, …) or a policy TOML file.
    #[arg(long, value_name = "NAME|FILE", default_value = run::DEFAULT_POLICY)]
    policy: String,

    /// Feed this file to the program's stdin on every architecture (`-` for pyward's own stdin).
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,

    /// Arguments for the program (`sys.argv[1:]`), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// What one architecture's run produced, as far as `verify` compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchRun {
    /// The architecture.
    pub arch: Arch,
    /// The verdict.
    pub verdict: Verdict,
    /// The exit code, when the program exited.
    pub exit_code: Option<i32>,
    /// The program's stdout.
    pub stdout: Vec<u8>,
    /// The program's stderr.
    pub stderr: Vec<u8>,
}

/// One way a run differs from the reference run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The verdicts differ.
    Verdict {
        /// The reference's and the other's.
        reference: Verdict,
        other: Verdict,
    },
    /// The exit codes differ.
    ExitCode {
        /// The reference's and the other's.
        reference: Option<i32>,
        other: Option<i32>,
    },
    /// A stream differs: a unified-diff-like excerpt around its first differing line.
    Stream {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The excerpt, one line each, prefixed with ` `, `-` (reference) or `+` (other).
        excerpt: Vec<String>,
    },
}

/// The differences of `other` from `reference`, in a fixed order:
/// verdict, exit code, stdout, stderr. Empty when they agree.
pub fn compare(reference: &ArchRun, other: &ArchRun) -> Vec<Difference> {
    let mut differences = Vec::new();
    if reference.verdict != other.verdict {
        differences.push(Difference::Verdict {
            reference: reference.verdict,
            other: other.verdict,
        });
    }
    if reference.exit_code != other.exit_code {
        differences.push(Difference::ExitCode {
            reference: reference.exit_code,
            other: other.exit_code,
        });
    }
    for (stream, a, b) in [
        ("stdout", &reference.stdout, &other.stdout),
        ("stderr", &reference.stderr, &other.stderr),
    ] {
        if a != b {
            differences.push(Difference::Stream {
                stream,
                excerpt: excerpt(a, b),
            });
        }
    }
    differences
}

/// Up to `CONTEXT` equal lines before the first differing one, then up to
/// `SHOWN` lines of each side from there (`-` reference, `+` other). Bytes that
/// are not UTF-8 show as U+FFFD; a missing final newline shows as `\ no newline`.
fn excerpt(a: &[u8], b: &[u8]) -> Vec<String> {
    let a = lines(a);
    let b = lines(b);
    let first = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<String> = a[first.saturating_sub(CONTEXT)..first]
        .iter()
        .map(|line| format!(" {line}"))
        .collect();
    out.extend(a[first..].iter().take(SHOWN).map(|line| format!("-{line}")));
    out.extend(b[first..].iter().take(SHOWN).map(|line| format!("+{line}")));
    out.insert(0, format!("@@ line {} @@", first + 1));
    out
}

/// The lines of `bytes`; the last one marked when it has no newline.
fn lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    for line in &mut lines {
        if line.ends_with('\n') {
            line.pop();
        } else {
            line.push_str(" \\ no newline");
        }
    }
    lines
}

/// `12 bytes sha256:1a2b3c4d5e6f`, or `empty`.
pub fn digest(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "empty".to_owned();
    }
    let hash = Sha256::digest(bytes);
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} bytes sha256:{hex}", bytes.len())
}

/// The report: one line per architecture, then the differences from the first.
pub fn report(runs: &[ArchRun]) -> (String, bool) {
    let mut out = String::new();
    for run in runs {
        let exit = run.exit_code.map_or("-".to_owned(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<6} verdict={} exit={exit} stdout={} stderr={}",
            run.arch,
            run.verdict,
            digest(&run.stdout),
            digest(&run.stderr)
        );
    }
    let Some((reference, others)) = runs.split_first() else {
        return (out, true);
    };
    let mut agree = true;
    for other in others {
        let differences = compare(reference, other);
        if differences.is_empty() {
            continue;
        }
        agree = false;
        let _ = writeln!(out, "{} differs from {}:", other.arch, reference.arch);
        for difference in differences {
            match difference {
                Difference::Verdict {
                    reference: r,
                    other: o,
                } => {
                    let _ = writeln!(out, "  verdict: {r} != {o}");
                }
                Difference::ExitCode {
                    reference: r,
                    other: o,
                } => {
                    let show = |c: Option<i32>| c.map_or("-".to_owned(), |c| c.to_string());
                    let _ = writeln!(out, "  exit code: {} != {}", show(r), show(o));
                }
                Difference::Stream { stream, excerpt } => {
                    let _ = writeln!(out, "  --- {stream} ({})", reference.arch);
                    let _ = writeln!(out, "  +++ {stream} ({})", other.arch);
                    for line in excerpt {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
        }
    }
    if agree {
        let _ = writeln!(out, "all {} architectures agree", runs.len());
    }
    (out, agree)
}

/// Runs `pyward verify`: 0 when every architecture agrees, 1 when they differ.
pub fn run(args: &VerifyArgs) -> Result<u8, CliError> {
    let policy = SandboxPolicy::load(&args.policy)?;
    let submission = submission(args)?;
    Executor::resolve_policy(&policy, &submission)?;
    let mut arches = args.arch.clone();
    arches.dedup();
    // Every runtime (daemon, image, emulator) is checked before anything runs.
    let executors = arches
        .iter()
        .map(|&arch| {
            run::runtime(RuntimeChoice::Docker, args.image.as_deref(), arch).map(|runtime| {
                let image = run::image_name(RuntimeChoice::Docker, args.image.as_deref());
                (arch, Executor::for_image(image, arch, runtime))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut runs = Vec::new();
    for (arch, executor) in &executors {
        let outcome: Outcome = executor.run(&policy, &submission)?;
        if outcome.verdict == Verdict::SandboxError {
            eprintln!("pyward: {arch}: {}", run::summary(&outcome));
            return Ok(exit::SANDBOX_ERROR);
        }
        runs.push(ArchRun {
            arch: *arch,
            verdict: outcome.verdict,
            exit_code: outcome.exit_code,
            stdout: outcome.stdout.bytes,
            stderr: outcome.stderr.bytes,
        });
    }
    let (text, agree) = report(&runs);
    outln!("{}", text.trim_end());
    Ok(if agree { exit::OK } else { exit::RUNTIME_ERROR })
}

fn submission(args: &VerifyArgs) -> Result<Submission, CliError> {
    let mut submission = Submission::code(args.code.clone().unwrap_or_default());
    if let Some(path) = &args.file {
        let name = run::base_name("FILE", path)?;
        submission.files.push(InputFile {
            path: name.clone(),
            contents: run::read("FILE", path)?,
        });
        submission.entrypoint = Entrypoint::File(name);
    }
    submission.stdin = run::read_stdin(args.stdin.as_deref())?;
    submission.args = args.args.clone();
    Ok(submission)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch_run(arch: Arch, stdout: &str) -> ArchRun {
        ArchRun {
            arch,
            verdict: Verdict::Ok,
            exit_code: Some(0),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn equal_runs_have_no_differences() {
        let a = arch_run(Arch::Amd64, "8 little\n");
        let b = arch_run(Arch::Arm64, "8 little\n");
        assert_eq!(compare(&a, &b), vec![]);
        let (text, agree) = report(&[a, b]);
        assert!(agree);
        assert!(text.ends_with("all 2 architectures agree\n"), "{text}");
    }

    #[test]
    fn the_first_differing_line_is_shown_with_context() {
        let a = arch_run(Arch::Amd64, "1\n2\n3\nx86_64\n5\n");
        let b = arch_run(Arch::Arm64, "1\n2\n3\naarch64\n5\n");
        assert_eq!(
            compare(&a, &b),
            vec![Difference::Stream {
                stream: "stdout",
                excerpt: vec![
                    "@@ line 4 @@".into(),
                    " 2".into(),
                    " 3".into(),
                    "-x86_64".into(),
                    "-5".into(),
                    "+aarch64".into(),
                    "+5".into(),
                ],
            }]
        );
        let (text, agree) = report(&[a, b]);
        assert!(!agree);
        assert!(text.contains("arm64 differs from amd64:"), "{text}");
        assert!(text.contains("  +aarch64\n"), "{text}");
    }

    #[test]
    fn verdict_exit_code_and_stderr_differences_come_in_order() {
        let a = arch_run(Arch::Amd64, "same");
        let mut b = arch_run(Arch::Arm64, "same");
        b.verdict = Verdict::RuntimeError;
        b.exit_code = Some(1);
        b.stderr = b"Traceback".to_vec();
        assert_eq!(
            compare(&a, &b),
            vec![
                Difference::Verdict {
                    reference: Verdict::Ok,
                    other: Verdict::RuntimeError
                },
                Difference::ExitCode {
                    reference: Some(0),
                    other: Some(1)
                },
                Difference::Stream {
                    stream: "stderr",
                    excerpt: vec!["@@ line 1 @@".into(), "+Traceback \\ no newline".into()],
                },
            ]
        );
    }

    #[test]
    fn a_missing_final_newline_and_extra_lines_are_differences() {
        let a = arch_run(Arch::Amd64, "a\nb");
        let b = arch_run(Arch::Arm64, "a\nb\n");
        let differences = compare(&a, &b);
        let [Difference::Stream { excerpt, .. }] = differences.as_slice() else {
            panic!("one stream difference: {differences:?}");
        };
        assert_eq!(*excerpt, ["@@ line 2 @@", " a", "-b \\ no newline", "+b"]);
    }

    #[test]
    fn digests_name_length_and_hash() {
        assert_eq!(digest(b""), "empty");
        assert_eq!(digest(b"abc"), "3 bytes sha256:ba7816bf8f01");
    }
}
