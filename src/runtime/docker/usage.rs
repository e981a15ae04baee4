//! CPU time, peak memory and pids-limit hits of a running container, read
//! from its cgroup files on the host (pyward runs where dockerd does).
//!
//! The daemon deletes a container's cgroup the moment it exits, and the stats
//! API only answers for running containers, so a task samples the files while
//! the program runs and keeps the last values: peak memory is a high-water
//! mark the kernel keeps (exact up to the last sample), CPU time is a lower
//! bound that misses at most one sampling interval. Paths cover cgroup v1
//! and v2 with the cgroupfs driver and v2 with the systemd driver; elsewhere
//! the figures stay 0.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the last sample saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak memory, bytes.
    pub peak_memory: u64,
    /// Forks refused by the pids limit.
    pub pids_max_hits: u64,
    /// Processes the OOM killer killed.
    pub oom_kills: u64,
}

/// The cgroup files of one container.
#[derive(Debug, Clone)]
pub struct CgroupFiles {
    cpu: Vec<PathBuf>,
    memory: Vec<PathBuf>,
    pids: Vec<PathBuf>,
    oom: Vec<PathBuf>,
}

impl CgroupFiles {
    /// The candidate paths for container `id` under `root` (normally /sys/fs/cgroup).
    pub fn new(root: &Path, id: &str) -> CgroupFiles {
        let v2 = [
            root.join("docker").join(id),
            root.join("system.slice").join(format!("docker-{id}.scope")),
        ];
        let v1 = |controller: &str| root.join(controller).join("docker").join(id);
        CgroupFiles {
            cpu: [v1("cpuacct").join("cpuacct.usage")]
                .into_iter()
                .chain(v2.iter().map(|d| d.join("cpu.stat")))
                .collect(),
            memory: [v1("memory").join("memory.max_usage_in_bytes")]
                .into_iter()
                .chain(v2.iter().map(|d| d.join("memory.peak")))
                .collect(),
            pids: [v1("pids").join("pids.events")]
                .into_iter()
                .chain(v2.iter().map(|d| d.join("pids.events")))
                .collect(),
            oom: [v1("memory").join("memory.oom_control")]
                .into_iter()
                .chain(v2.iter().map(|d| d.join("memory.events")))
                .collect(),
        }
    }

    /// One sample, or None when no file is readable (not started, or gone).
    pub fn sample(&self) -> Option<Sample> {
        let cpu = self.cpu.iter().find_map(|p| read_cpu(p));
        let peak_memory = self.memory.iter().find_map(|p| read_number(p));
        let pids_max_hits = self.pids.iter().find_map(|p| read_key(p, "max"));
        if cpu.is_none() && peak_memory.is_none() {
            return None;
        }
        Some(Sample {
            cpu: cpu.unwrap_or_default(),
            peak_memory: peak_memory.unwrap_or_default(),
            pids_max_hits: pids_max_hits.unwrap_or_default(),
            oom_kills: self.oom_kills().unwrap_or_default(),
        })
    }

    /// The OOM killer's kills in the cgroup so far (v1 `memory.oom_control`,
    /// v2 `memory.events`: `oom_kill N`), or None when it cannot be read.
    pub fn oom_kills(&self) -> Option<u64> {
        self.oom.iter().find_map(|p| read_key(p, "oom_kill"))
    }
}

/// Merges a newer sample into `last`: every figure only grows.
pub fn merge(last: &mut Sample, new: Sample) {
    last.cpu = last.cpu.max(new.cpu);
    last.peak_memory = last.peak_memory.max(new.peak_memory);
    last.pids_max_hits = last.pids_max_hits.max(new.pids_max_hits);
    last.oom_kills = last.oom_kills.max(new.oom_kills);
}

/// The figures of `now` counted from `baseline`, an earlier sample of the
/// same cgroup: CPU time, pids-limit hits and OOM kills since then. Peak memory is a
/// high-water mark of the container's whole life and stays as it is.
pub fn since(baseline: Sample, now: Sample) -> Sample {
    Sample {
        cpu: now.cpu.saturating_sub(baseline.cpu),
        peak_memory: now.peak_memory,
        pids_max_hits: now.pids_max_hits.saturating_sub(baseline.pids_max_hits),
        oom_kills: now.oom_kills.saturating_sub(baseline.oom_kills),
    }
}

fn read_cpu(path: &Path) -> Option<Duration> {
    if path.ends_with("cpu.stat") {
        read_key(path, "usage_usec").map(Duration::from_micros)
    } else {
        read_number(path).map(Duration::from_nanos)
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_key(path: &Path, key: &str) -> Option<u64> {
    parse_key(&std::fs::read_to_string(path).ok()?, key)
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_and_v2_files() {
        let root = tempfile::tempdir().unwrap();
        let id = "abc";
        let v1 = |c: &str| root.path().join(c).join("docker").join(id);
        std::fs::create_dir_all(v1("cpuacct")).unwrap();
        std::fs::create_dir_all(v1("memory")).unwrap();
        std::fs::write(v1("cpuacct").join("cpuacct.usage"), "1500000000\n").unwrap();
        std::fs::write(v1("memory").join("memory.max_usage_in_bytes"), "4096\n").unwrap();
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        std::fs::write(v1("memory").join("memory.oom_control"), oom).unwrap();
        let files = CgroupFiles::new(root.path(), id);
        assert_eq!(
            files.sample(),
            Some(Sample {
                cpu: Duration::from_millis(1500),
                peak_memory: 4096,
                pids_max_hits: 0,
                oom_kills: 2,
            })
        );

        let v2 = root.path().join("system.slice/docker-def.scope");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.stat"), "usage_usec 2000\nuser_usec 1000\n").unwrap();
        std::fs::write(v2.join("memory.peak"), "8192\n").unwrap();
        std::fs::write(v2.join("pids.events"), "max 3\n").unwrap();
        std::fs::write(v2.join("memory.events"), "oom 2\noom_kill 1\n").unwrap();
        let sample = CgroupFiles::new(root.path(), "def").sample().unwrap();
        assert_eq!(sample.oom_kills, 1);
        assert_eq!(sample.cpu, Duration::from_millis(2));
        assert_eq!(sample.peak_memory, 8192);
        assert_eq!(sample.pids_max_hits, 3);

        assert_eq!(CgroupFiles::new(root.path(), "gone").sample(), None);
    }

    #[test]
    fn cpu_pids_hits_and_oom_kills_count_from_the_baseline_and_peak_memory_does_not() {
        let baseline = Sample {
            cpu: Duration::from_millis(40),
            peak_memory: 9 << 20,
            pids_max_hits: 0,
            oom_kills: 1,
        };
        let now = Sample {
            cpu: Duration::from_millis(65),
            peak_memory: 12 << 20,
            pids_max_hits: 2,
            oom_kills: 2,
        };
        assert_eq!(
            since(baseline, now),
            Sample {
                cpu: Duration::from_millis(25),
                peak_memory: 12 << 20,
                pids_max_hits: 2,
                oom_kills: 1,
            }
        );
        // A cgroup gone before the last sample reads as zeros: never below zero.
        assert_eq!(since(baseline, Sample::default()).cpu, Duration::ZERO);
    }

    #[test]
    fn figures_only_grow() {
        let mut last = Sample {
            cpu: Duration::from_millis(5),
            peak_memory: 100,
            pids_max_hits: 1,
            oom_kills: 0,
        };
        merge(&mut last, Sample::default());
        assert_eq!(last.peak_memory, 100);
        assert_eq!(last.cpu, Duration::from_millis(5));
        assert_eq!(last.pids_max_hits, 1);
    }
}
