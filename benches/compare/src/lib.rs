//! Shared plumbing for the comparison harness: the row protocol between workload binaries and the
//! `compare` runner, medians, and process CPU/memory readings.
//!
//! Each workload is its own binary under `src/bin/` (so runtimes, threads and allocations of one
//! peer never leak into another's numbers) and prints one [`Row`] per subject on stdout.

use std::time::Duration;

/// Whether a larger figure is better (throughput) or a smaller one (latency, memory, CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (events/s, bytes/s, requests/s).
    Higher,
    /// Smaller is better (ns, KiB, µs CPU).
    Lower,
}

/// One measured figure: a subject (kdnet or a peer) on one workload.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload label, e.g. `1a parser openai whole`.
    pub workload: String,
    /// Who was measured: `kdnet`, a peer crate name, or a reference such as `memchr ceiling`.
    pub subject: String,
    /// The median figure.
    pub value: f64,
    /// Unit of `value`, e.g. `MB/s`.
    pub unit: String,
    /// Direction of goodness.
    pub better: Better,
}

impl Row {
    /// Builds a row.
    pub fn new(workload: &str, subject: &str, value: f64, unit: &str, better: Better) -> Row {
        Row {
            workload: workload.to_owned(),
            subject: subject.to_owned(),
            value,
            unit: unit.to_owned(),
            better,
        }
    }

    /// Prints the row in the tab-separated protocol the runner reads.
    pub fn emit(&self) {
        let better = match self.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        println!(
            "ROW\t{}\t{}\t{}\t{}\t{}",
            self.workload, self.subject, self.value, self.unit, better
        );
    }

    /// Parses a protocol line; `None` for any other output.
    pub fn parse(line: &str) -> Option<Row> {
        let mut fields = line.split('\t');
        if fields.next()? != "ROW" {
            return None;
        }
        let workload = fields.next()?.to_owned();
        let subject = fields.next()?.to_owned();
        let value = fields.next()?.parse().ok()?;
        let unit = fields.next()?.to_owned();
        let better = match fields.next()? {
            "higher" => Better::Higher,
            "lower" => Better::Lower,
            _ => return None,
        };
        Some(Row {
            workload,
            subject,
            value,
            unit,
            better,
        })
    }
}

/// Repetitions per figure: `COMPARE_REPS` or 5. Every figure is the median of this many runs.
pub fn reps() -> usize {
    std::env::var("COMPARE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

/// Median of the samples (mean of the middle two for an even count).
pub fn median(samples: &mut [f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort_by(|a, b| a.total_cmp(b));
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// Runs `sample` [`reps`] times and returns the median.
pub fn median_of(mut sample: impl FnMut() -> f64) -> f64 {
    let mut samples: Vec<f64> = (0..reps()).map(|_| sample()).collect();
    median(&mut samples)
}

/// User + system CPU time this process has used so far (all threads), from `/proc/self/schedstat`
/// when available (nanosecond resolution), else from `/proc/self/stat` ticks.
pub fn process_cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15 are utime and stime in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // after_comm starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Thread CPU time of the calling thread (nanosecond resolution, `/proc/thread-self/schedstat`).
pub fn thread_cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Resident set size of this process in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The anonymous part of this process's resident memory in KiB (`RssAnon`: heap, stacks and
/// other private memory, not code and libraries paged in from their files), or 0 if unknown.
pub fn rss_anon_kib() -> u64 {
    status_kib("RssAnon:")
}

/// A `kB` field of `/proc/self/status`, or 0 if unknown.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
