//! The SSE parser's suite (`sse_parser/suite.rs`) on the line-end search this CPU picks. The
//! crate's unit tests run the same suite again as on a CPU without AVX2, which only code inside
//! the crate can choose.

use kdnet::network::sse;
use proptest::test_runner::Config;

#[path = "sse_parser/suite.rs"]
mod suite;

/// Runs one parse of the suite: here, as the library chooses.
fn on_the_search<T>(parse: impl FnOnce() -> T) -> T {
    parse()
}

/// The suite's property tests' configuration: `cases` cases, failures kept beside the suite.
fn proptest_config(cases: u32) -> Config {
    Config::with_cases(cases)
}
