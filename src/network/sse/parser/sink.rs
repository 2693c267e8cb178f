//! How events leave the parser: the public sinks, and the `Emit` adapters through which one
//! parser body delivers owned or borrowed events.

use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

#[cfg(doc)]
use super::SseParser;
use super::decode::{decode_in_place, decode_to_string, utf8};
use crate::network::sse::data_buffer::DataBuffer;
use crate::network::sse::event::{SseEvent, SseEventRef};

/// Receives what an [`SseParser`] finds. Only [`on_event`](SseSink::on_event) is required.
///
/// Any `FnMut(SseEvent)` closure is a sink, and so is a `Vec<SseEvent>` (it collects the events).
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseEvent, SseParser, SseSink};
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Log {
///     lines: Vec<String>,
/// }
///
/// impl SseSink for Log {
///     fn on_event(&mut self, event: SseEvent) {
///         self.lines.push(format!("{}={}", event.event_type(), event.data()));
///     }
///     fn on_comment(&mut self, comment: &str) {
///         self.lines.push(format!("comment {comment}"));
///     }
///     fn on_retry(&mut self, retry: Duration) {
///         self.lines.push(format!("retry {}", retry.as_millis()));
///     }
/// }
///
/// let mut parser = SseParser::new();
/// parser.set_report_comments(true);
/// let mut log = Log::default();
/// parser.feed(b": hi\nretry: 500\nevent: tick\ndata: 1\n\n", &mut log).unwrap();
/// assert_eq!(log.lines, ["comment hi", "retry 500", "tick=1"]);
/// ```
pub trait SseSink {
    /// A block ended with a blank line and carried data.
    fn on_event(&mut self, event: SseEvent);

    /// A comment line (one starting with `:`), with the colon and at most one following space
    /// removed. Called only when [`SseParser::set_report_comments`] is on.
    fn on_comment(&mut self, _comment: &str) {}

    /// A valid `retry` field was parsed; the reconnection time changes at once, whether or not the
    /// block is ever dispatched.
    fn on_retry(&mut self, _retry: Duration) {}
}

impl<F: FnMut(SseEvent)> SseSink for F {
    fn on_event(&mut self, event: SseEvent) {
        self(event);
    }
}

impl SseSink for Vec<SseEvent> {
    fn on_event(&mut self, event: SseEvent) {
        self.push(event);
    }
}

/// Receives borrowed events from [`SseParser::feed_borrowed`]; like [`SseSink`] otherwise.
///
/// Any `FnMut(SseEventRef<'_>)` closure is one (annotate the parameter's type so the closure
/// accepts every lifetime: `|event: SseEventRef<'_>| ...`).
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseBorrowedSink, SseEventRef, SseParser};
///
/// /// Sums the data sizes per event type without keeping any event.
/// #[derive(Default)]
/// struct Sizes {
///     deltas: usize,
///     others: usize,
/// }
///
/// impl SseBorrowedSink for Sizes {
///     fn on_event(&mut self, event: SseEventRef<'_>) {
///         match event.event_type() {
///             "delta" => self.deltas += event.data().len(),
///             _ => self.others += event.data().len(),
///         }
///     }
/// }
///
/// let mut sizes = Sizes::default();
/// let mut parser = SseParser::new();
/// parser.feed_borrowed(b"event: delta\ndata: abc\n\ndata: xy\n\n", &mut sizes).unwrap();
/// parser.finish_borrowed(&mut sizes).unwrap();
/// assert_eq!((sizes.deltas, sizes.others), (3, 2));
/// ```
pub trait SseBorrowedSink {
    /// A block ended with a blank line and carried data. The event borrows the parser and the
    /// chunk: keep [`SseEventRef::to_event`] of it to hold on to it.
    fn on_event(&mut self, event: SseEventRef<'_>);

    /// As [`SseSink::on_comment`].
    fn on_comment(&mut self, _comment: &str) {}

    /// As [`SseSink::on_retry`].
    fn on_retry(&mut self, _retry: Duration) {}
}

impl<F: FnMut(SseEventRef<'_>)> SseBorrowedSink for F {
    fn on_event(&mut self, event: SseEventRef<'_>) {
        self(event);
    }
}

/// Where a parse delivers: owned events to an [`SseSink`], or borrowed ones to an
/// [`SseBorrowedSink`]. One parser body serves both.
pub(super) trait Emit {
    fn event(&mut self, event: Dispatched<'_>);
    fn comment(&mut self, comment: &str);
    fn retry(&mut self, retry: Duration);
}

/// An event at dispatch, its data still raw.
pub(super) struct Dispatched<'a> {
    pub(super) data: DispatchedData<'a>,
    pub(super) event_type: Option<&'a Arc<str>>,
    pub(super) last_event_id: Option<&'a SmolStr>,
    /// The parser's [`committed_id_fields`](super::SseParser::committed_id_fields) at this event.
    pub(super) committed_id_fields: u32,
    pub(super) retry: Option<Duration>,
}

/// Where a dispatched event's raw data is.
pub(super) enum DispatchedData<'a> {
    /// The block's only value, still in the chunk being parsed.
    InChunk(InChunkData<'a>),
    /// The parser's data buffer: an owned sink takes it, a borrowed one reads it in place.
    Buffer(&'a mut DataBuffer),
}

impl DispatchedData<'_> {
    pub(super) fn raw(&self) -> &[u8] {
        match self {
            DispatchedData::InChunk(in_chunk) => in_chunk.raw,
            DispatchedData::Buffer(buffer) => buffer.as_slice(),
        }
    }

    /// The data as text, if it is valid UTF-8 (checked here unless already known). Inlined: as a
    /// call it cost ~18 instructions per event end to end.
    #[inline(always)]
    fn text(&self) -> Option<&str> {
        match self {
            DispatchedData::InChunk(in_chunk) => in_chunk.text.or_else(|| utf8(in_chunk.raw)),
            DispatchedData::Buffer(buffer) => buffer.text(),
        }
    }
}

/// An event's data that is the block's only value, still in the chunk.
pub(super) struct InChunkData<'a> {
    pub(super) raw: &'a [u8],
    /// `raw` as text, if the chunk's check already found it valid.
    pub(super) text: Option<&'a str>,
}

pub(super) struct Owned<'s, S: ?Sized>(pub(super) &'s mut S);

impl<S: SseSink + ?Sized> Emit for Owned<'_, S> {
    fn event(&mut self, event: Dispatched<'_>) {
        let data = match event.data {
            DispatchedData::InChunk(InChunkData {
                text: Some(text), ..
            }) => text.to_owned(),
            DispatchedData::InChunk(InChunkData { raw, .. }) => decode_to_string(raw),
            // A small event is copied out in one exact allocation and the buffer is reused; a
            // large one takes the buffer itself rather than copying it.
            DispatchedData::Buffer(buffer) if buffer.len() <= COPY_OUT_UP_TO => {
                match buffer.text() {
                    Some(text) => text.to_owned(),
                    None => decode_to_string(buffer),
                }
            }
            DispatchedData::Buffer(buffer) => decode_in_place(buffer.take()),
        };
        self.0.on_event(SseEvent::from_parts(
            event.event_type.cloned(),
            data,
            event.last_event_id.cloned(),
            event.retry,
        ));
    }

    fn comment(&mut self, comment: &str) {
        self.0.on_comment(comment);
    }

    fn retry(&mut self, retry: Duration) {
        self.0.on_retry(retry);
    }
}

pub(super) struct Borrowed<'s, S: ?Sized>(pub(super) &'s mut S);

impl<S: SseBorrowedSink + ?Sized> Emit for Borrowed<'_, S> {
    /// Inlined into the dispatch: as a call it cost ~40 instructions per event.
    #[inline(always)]
    fn event(&mut self, event: Dispatched<'_>) {
        // Invalid UTF-8 is rare: only then is there a decoded copy.
        let replaced;
        let data = match event.data.text() {
            Some(text) => text,
            None => {
                replaced = decode_to_string(event.data.raw());
                &replaced
            }
        };
        self.0.on_event(
            SseEventRef::from_parts(event.event_type, data, event.last_event_id, event.retry)
                .with_committed_id_fields(event.committed_id_fields),
        );
    }

    fn comment(&mut self, comment: &str) {
        self.0.on_comment(comment);
    }

    fn retry(&mut self, retry: Duration) {
        self.0.on_retry(retry);
    }
}

/// Owned events with up to this much data (16 KiB) get an exact copy of the reused data buffer;
/// bigger ones take the buffer itself.
const COPY_OUT_UP_TO: usize = 16 * 1024;
