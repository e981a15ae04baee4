//! Progress of a build: a spinner per arch with the elapsed time when
//! stderr is a terminal, plain log lines otherwise (CI logs, pipes).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// Where progress goes for one build.
pub struct Progress {
    bars: Option<MultiProgress>,
}

/// The progress line of one arch.
pub struct Step {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
}

impl Progress {
    /// Spinners if stderr is a terminal and `quiet` is false; plain lines otherwise.
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            bars: tty.then(MultiProgress::new),
        }
    }

    /// Starts the line for `label` (e.g. `python3.11-bookworm/arm64`).
    pub fn start(&self, label: String) -> Step {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Step {
            bar,
            label,
            start: Instant::now(),
        }
    }
}

impl Step {
    /// Says what the arch is doing now.
    pub fn set(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_owned()),
            None => eprintln!(
                "pyward image: {}: {msg} ({:.0}s)",
                self.label,
                self.start.elapsed().as_secs_f64()
            ),
        }
    }

    /// Ends the line with `msg`.
    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(msg.to_owned()),
            None => eprintln!("pyward image: {}: {msg}", self.label),
        }
    }

    /// Seconds since the step started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}
