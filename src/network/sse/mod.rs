//! Server-Sent Events (WHATWG HTML "Server-sent events"): a sans-IO parser, the event type and a
//! serializer.

mod event;
mod parser;
mod writer;

pub use event::SseEvent;
pub use parser::{DEFAULT_MAX_EVENT_SIZE, SseParseError, SseParser, SseSink};
pub use writer::{SseOutput, SseWriteError, SseWriter};
