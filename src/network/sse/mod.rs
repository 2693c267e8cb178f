//! Server-Sent Events (WHATWG HTML "Server-sent events"): a sans-IO [`SseParser`], the
//! [`SseEvent`] type, an [`SseWriter`] for servers and tests, and the reconnecting [`SseClient`].

mod batch;
mod chunk_text;
mod client;
mod data_buffer;
mod error;
mod event;
mod line_end;
mod long_line;
mod parser;
mod swar;
mod writer;

pub(crate) use batch::SseBatch;
pub use client::{
    DEFAULT_MAX_RECONNECTION_DELAY, DEFAULT_RECONNECTION_TIME, ReadyState, SseClient,
};
pub use error::SseError;
pub use event::{SseEvent, SseEventRef};
pub use parser::{DEFAULT_MAX_EVENT_SIZE, SseBorrowedSink, SseParseError, SseParser, SseSink};
pub use writer::{SseOutput, SseWriteError, SseWriter};

/// How far apart the exhaustive unit tests of the `unsafe` search and copy code step through
/// lengths and positions: every one normally; under Miri (`cargo +nightly miri test --lib
/// network::sse`), which interprets each instruction and checks every access, one in seven,
/// which still puts a byte at every offset within a 16- and 32-byte block across the lengths.
#[cfg(test)]
pub(crate) const MIRI_STRIDE: usize = if cfg!(miri) { 7 } else { 1 };
