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
