//! What the model-based tests (`signal_model.rs`, `http_scheduler_model.rs`,
//! `sse_client_model.rs`) share: the case count and the report of a run.

use std::fmt::Display;
use std::time::Instant;

/// `PROPTEST_CASES` when set, else `default` (a `Config` with `cases` set explicitly would
/// otherwise ignore the variable).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints how many cases ran since `started` and the run's counters, then fails with
/// proptest's report (the shrunk case) if a case failed.
pub fn finish_run(
    started: Instant,
    cases: u64,
    counters: impl IntoIterator<Item = (&'static str, u64)>,
    result: Result<(), impl Display>,
) {
    eprintln!("{cases} cases in {:?}", started.elapsed());
    for (name, count) in counters {
        eprintln!("  {name}: {count}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
