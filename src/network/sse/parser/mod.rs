//! [`SseParser`]: the sans-IO, incremental WHATWG `text/event-stream` parser.
//!
//! Bytes go in through [`SseParser::feed`] in chunks of any size; every dispatched event, and
//! optionally every comment and `retry` value, comes out through an [`SseSink`] while the chunk is
//! being parsed, never later. [`SseParser::feed_borrowed`] does the same with borrowed
//! [`SseEventRef`]s for an [`SseBorrowedSink`]: no allocation per event, and the data of a
//! single-line event is not even copied. The result does not depend on how the stream is split: a chunk may
//! end inside a line, inside a CRLF pair, inside a UTF-8 sequence or inside the leading BOM.
//!
//! How the bytes are treated (WHATWG HTML §9.2.5–9.2.6):
//!
//! * One leading UTF-8 BOM (`EF BB BF`) is removed; any later BOM is text.
//! * Lines end at CRLF, LF or a lone CR. Complete lines are parsed straight from the chunk; only
//!   the unfinished line at the end of a chunk is copied into the parser.
//! * Text is UTF-8 decoded with replacement: each invalid sequence becomes U+FFFD. Lines are split
//!   on raw CR/LF bytes before decoding, which gives the same text as decoding the whole stream
//!   first, because CR and LF never occur inside a multi-byte sequence and always end an invalid one.
//! * A blank line dispatches the block: the last event ID buffer is committed (even when no event
//!   fires), and an event is produced only when at least one `data` field was seen.
//! * At the end of the stream ([`SseParser::finish`]) an unterminated block is discarded, as the
//!   spec says, unless [`SseParser::set_flush_unterminated_at_eof`] opted in to dispatching it.
//!
//! Memory is bounded by [`SseParser::max_event_size`]: the data of the current block plus the
//! current line may not exceed it.
//!
//! This file holds the parser's state and its entry points; the work is split by concern:
//! `lines` (the general path over a chunk's lines), `tiny` (chunks under 16 bytes), `followed`
//! (lines followed across chunks without buffering), `block` (fields and the dispatch), `limit`
//! (the size limit), `decode` (UTF-8 with replacement) and `sink` (how events leave).
//!
//! [`SseEventRef`]: crate::network::sse::SseEventRef

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

use crate::network::sse::data_buffer::DataBuffer;
use crate::network::sse::event::SseEvent;
use crate::network::sse::swar;

mod block;
mod decode;
mod followed;
mod limit;
mod lines;
mod sink;
mod tiny;

use sink::{Borrowed, Emit, Owned};
pub use sink::{SseBorrowedSink, SseSink};
use tiny::TinyPiece;

/// The default limit, in bytes, on one event: 16 MiB (16 777 216 bytes) for the decoded data of
/// a block plus the raw bytes of the line being parsed.
///
/// Large enough for LLM streams whose final event repeats the whole response, small enough that
/// a peer sending an endless line cannot exhaust memory.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

/// Why an [`SseParser`] rejected the stream.
///
/// After an error the parser has discarded the partial line and block, and refuses further input
/// (returning the same error) until the body ends: [`SseParser::finish`] (which returns the error
/// too) or [`SseParser::reset`] starts a new one.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseParseError, SseParser};
///
/// let mut parser = SseParser::with_max_event_size(8);
/// let error = parser.parse_all(b"data: far too long\n\n").unwrap_err();
/// assert_eq!(error, SseParseError::EventTooLarge { limit: 8 });
/// assert_eq!(error.to_string(), "server-sent event exceeds the size limit of 8 bytes");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseParseError {
    /// The block's data plus the line being parsed grew beyond the limit.
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseParseError::EventTooLarge { limit } => {
                write!(
                    f,
                    "server-sent event exceeds the size limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for SseParseError {}

/// The sans-IO WHATWG event-stream parser: feed it body bytes, get [`SseEvent`]s.
///
/// One parser follows one event source across reconnects: [`reset`](Self::reset) between
/// connections drops the partial state of the old body but keeps the last event ID (to send as
/// `Last-Event-ID`) and the reconnection time.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseEvent, SseParser};
///
/// let mut parser = SseParser::new();
/// let mut events = Vec::new();
/// // Chunks may split anything, even a CRLF pair.
/// parser.feed(b"id: 7\r", &mut events).unwrap();
/// parser.feed(b"\nevent: greeting\r\ndata: hel", &mut events).unwrap();
/// parser.feed(b"lo\n\n", &mut events).unwrap();
/// parser.finish(&mut events).unwrap();
///
/// assert_eq!(events, [SseEvent::new("greeting", "hello").with_id("7")]);
/// assert_eq!(parser.last_event_id(), "7");
/// ```
pub struct SseParser {
    max_event_size: usize,
    /// The most raw bytes (data so far plus a new line) that surely fit the limit however they
    /// decode: `(max_event_size - 1) / MAX_DECODED_GROWTH`. Computed once; checked per data line.
    surely_fitting_raw: usize,
    flush_unterminated_at_eof: bool,
    report_comments: bool,
    /// After an error every call fails until the body ends (`finish`, `reset`).
    failed: bool,
    bom: BomState,
    /// The previous chunk ended in CR: an LF starting the next chunk belongs to that line end.
    swallow_lf: bool,
    /// Where the unfinished line at the end of the last chunk is kept.
    partial: Partial,
    /// The unfinished line when it is [`Partial::Buffered`] (raw bytes, not yet decoded).
    line: Vec<u8>,
    /// The block's data values joined by LF, raw: decoded once, at dispatch (except a prefix
    /// already known to be text). The spec's trailing LF is never stored. Decoding the joined
    /// bytes gives the same text as joining the decoded values, because LF always ends an invalid
    /// sequence.
    data: DataBuffer,
    /// Whether the block had a `data` field; the spec's data buffer is non-empty exactly then.
    has_data: bool,
    /// A prefix of `data` ending at a value boundary whose decoded size is known: its raw length
    /// and its decoded length. Lets the size limit count decoded bytes without decoding twice.
    measured_raw: usize,
    measured_decoded: usize,
    /// The size of the last event's data (capped): the first allocation for the next block's
    /// data, so a multi-line event is built in one allocation of the right size.
    data_capacity_hint: usize,
    /// Whether the last whole `data` line was longer than
    /// [`SHORT_LINE`](crate::network::sse::line_end::SHORT_LINE): the next is looked for with the
    /// search for long lines.
    long_data_lines: bool,
    /// Whether the last event's data was over [`RETAINED_BUFFER_CAPACITY`].
    last_event_large: bool,
    /// Whether the block's type is `recent_event_type` (a custom type is always made the recent
    /// one); otherwise it is the default, `message`. A flag, not a second `Arc`: no reference
    /// count traffic per block.
    custom_type: bool,
    /// The last event ID buffer; `None` means "".
    id_buffer: Option<SmolStr>,
    /// The `retry` of the current block, reported in its event.
    block_retry: Option<Duration>,
    /// The committed last event ID; survives `reset`.
    last_event_id: Option<SmolStr>,
    /// How many `id` fields the buffer took (any value, a repeat too; one with NUL is ignored,
    /// as WHATWG says), and how many of them were committed by a dispatch. The SSE client tells
    /// an ID the stream sent after `set_last_event_id` by these, not by the ID's value: a server
    /// repeating its ID sends one of its own all the same. Wrapping.
    id_fields_buffered: u32,
    id_fields_committed: u32,
    /// The last valid `retry`; survives `reset`.
    reconnection_time: Option<Duration>,
    /// The most recent custom event type, shared by consecutive events that repeat it.
    recent_event_type: Option<Arc<str>>,
}

impl SseParser {
    /// A parser with the [`DEFAULT_MAX_EVENT_SIZE`] limit, discarding an unterminated final block
    /// and ignoring comments.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::SseParser;
    ///
    /// let events = SseParser::new().parse_all(b"data: a\n\ndata: unterminated").unwrap();
    /// assert_eq!(events.len(), 1);
    /// assert_eq!(events[0].data(), "a");
    /// ```
    pub fn new() -> Self {
        Self::with_max_event_size(DEFAULT_MAX_EVENT_SIZE)
    }

    /// A parser whose events (data plus the line being parsed) may not exceed `max_event_size`
    /// bytes.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::{SseParseError, SseParser};
    ///
    /// let mut parser = SseParser::with_max_event_size(1024);
    /// assert_eq!(parser.max_event_size(), 1024);
    /// let endless_line = vec![b'x'; 4096];
    /// let result = parser.feed(&endless_line, &mut |_| {});
    /// assert_eq!(result, Err(SseParseError::EventTooLarge { limit: 1024 }));
    /// ```
    pub fn with_max_event_size(max_event_size: usize) -> Self {
        SseParser {
            max_event_size,
            surely_fitting_raw: max_event_size.saturating_sub(1) / MAX_DECODED_GROWTH,
            flush_unterminated_at_eof: false,
            report_comments: false,
            failed: false,
            bom: BomState::Expecting { matched: 0 },
            swallow_lf: false,
            partial: Partial::Buffered,
            line: Vec::new(),
            data: DataBuffer::default(),
            has_data: false,
            measured_raw: 0,
            measured_decoded: 0,
            data_capacity_hint: 0,
            long_data_lines: false,
            last_event_large: false,
            custom_type: false,
            id_buffer: None,
            block_retry: None,
            last_event_id: None,
            id_fields_buffered: 0,
            id_fields_committed: 0,
            reconnection_time: None,
            recent_event_type: None,
        }
    }

    /// The size limit in bytes.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }

    /// Whether [`finish`](Self::finish) dispatches a final block that lacks its blank line, as if
    /// one had arrived. Off by default: the spec discards such a block, but some gateways drop the
    /// last blank line of LLM streams and lose the final event that way.
    pub fn set_flush_unterminated_at_eof(&mut self, flush: bool) {
        self.flush_unterminated_at_eof = flush;
    }

    /// Whether comment lines are passed to [`SseSink::on_comment`]. Off by default.
    pub fn set_report_comments(&mut self, report: bool) {
        self.report_comments = report;
    }

    /// The committed last event ID (what a reconnect sends as `Last-Event-ID`), `""` if none.
    pub fn last_event_id(&self) -> &str {
        self.last_event_id.as_deref().unwrap_or("")
    }

    /// [`last_event_id`](Self::last_event_id) as a shared string: a copy of at most 24 bytes or
    /// a reference count, no allocation.
    pub(crate) fn shared_last_event_id(&self) -> SmolStr {
        self.last_event_id.clone().unwrap_or_default()
    }

    /// How many `id` fields dispatches have committed so far (wrapping): it moves with every
    /// `id` field that reached [`last_event_id`](Self::last_event_id), whether its value changed
    /// the ID or not, and not with [`set_last_event_id`](Self::set_last_event_id).
    pub(crate) fn committed_id_fields(&self) -> u32 {
        self.id_fields_committed
    }

    /// Sets the last event ID, e.g. one persisted from an earlier session. Meant to be called
    /// before feeding or between connections: it replaces both the committed ID and the buffer.
    pub fn set_last_event_id(&mut self, id: &str) {
        self.last_event_id = (!id.is_empty()).then(|| SmolStr::new(id));
        self.id_buffer = self.last_event_id.clone();
    }

    /// The reconnection time from the last valid `retry` field, if any was seen.
    pub fn reconnection_time(&self) -> Option<Duration> {
        self.reconnection_time
    }

    /// Parses the next chunk of the body, passing what it completes to `sink`.
    ///
    /// Never fails on malformed input (the spec defines a result for every byte sequence); the only
    /// error is [`SseParseError::EventTooLarge`], after which every call fails until the body
    /// ends ([`finish`](Self::finish), which returns the error too, or [`reset`](Self::reset)).
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl SseSink) -> Result<(), SseParseError> {
        self.feed_to(chunk, &mut Owned(sink))
    }

    /// [`feed`](Self::feed) for a sink of borrowed events: the same parse, without an allocation
    /// per event. A single-line event whose line lies whole in `chunk` is handed over without
    /// copying its data; otherwise the data is assembled in a buffer the parser reuses.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::{SseEventRef, SseParser};
    ///
    /// let mut parser = SseParser::new();
    /// let mut seen = Vec::new();
    /// let mut sink = |event: SseEventRef<'_>| seen.push(event.data().to_uppercase());
    /// parser.feed_borrowed(b"data: one\n\ndata: t", &mut sink).unwrap();
    /// parser.feed_borrowed(b"wo\n\n", &mut sink).unwrap();
    /// assert_eq!(seen, ["ONE", "TWO"]);
    /// ```
    pub fn feed_borrowed(
        &mut self,
        chunk: &[u8],
        sink: &mut impl SseBorrowedSink,
    ) -> Result<(), SseParseError> {
        self.feed_to(chunk, &mut Borrowed(sink))
    }

    /// Ends the body: discards the unterminated final block (or dispatches it when
    /// [`set_flush_unterminated_at_eof`](Self::set_flush_unterminated_at_eof) is on), then
    /// prepares for a new body exactly like [`reset`](Self::reset), also when it fails (the
    /// flushed block too large, or an earlier `feed` of this body failed: that error again).
    pub fn finish(&mut self, sink: &mut impl SseSink) -> Result<(), SseParseError> {
        self.finish_to(&mut Owned(sink))
    }

    /// [`finish`](Self::finish) for a sink of borrowed events.
    pub fn finish_borrowed(
        &mut self,
        sink: &mut impl SseBorrowedSink,
    ) -> Result<(), SseParseError> {
        self.finish_to(&mut Borrowed(sink))
    }

    /// Prepares for a new connection: drops the partial line, data, event type and any error,
    /// puts the last event ID buffer back to the committed ID and expects a fresh BOM. Keeps the
    /// committed last event ID and the reconnection time.
    pub fn reset(&mut self) {
        self.discard_partial();
        self.failed = false;
    }

    /// Parses a whole body (feed, then finish) and returns its events.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::SseParser;
    ///
    /// let events = SseParser::new().parse_all(b"data: YHOO\ndata: +2\ndata: 10\n\n").unwrap();
    /// assert_eq!(events[0].data(), "YHOO\n+2\n10");
    /// ```
    pub fn parse_all(&mut self, body: &[u8]) -> Result<Vec<SseEvent>, SseParseError> {
        let mut events = Vec::new();
        self.feed(body, &mut events)?;
        self.finish(&mut events)?;
        Ok(events)
    }

    fn feed_to(&mut self, chunk: &[u8], out: &mut impl Emit) -> Result<(), SseParseError> {
        if self.failed {
            return Err(self.too_large());
        }
        let result = match chunk {
            [_] => self.continue_line(chunk).unwrap_or_else(|| {
                let piece = self.continue_data_value(chunk);
                self.feed_tiny_piece(piece, chunk, out)
            }),
            _ if chunk.len() < swar::SHORT => match self.continue_data_value(chunk) {
                TinyPiece::Appended => Ok(()),
                piece => self.feed_tiny_piece(piece, chunk, out),
            },
            _ => self.parse_chunk(chunk, out),
        };
        if result.is_err() {
            self.fail();
        }
        result
    }

    fn finish_to(&mut self, out: &mut impl Emit) -> Result<(), SseParseError> {
        let result = if self.failed {
            Err(self.too_large())
        } else {
            self.end_of_stream(out)
        };
        // The body has ended, whatever its outcome: the next one starts afresh.
        self.discard_partial();
        self.failed = false;
        result
    }

    fn fail(&mut self) {
        self.discard_partial();
        self.failed = true;
    }

    /// Forgets everything that belongs to the current body only.
    fn discard_partial(&mut self) {
        self.bom = BomState::Expecting { matched: 0 };
        self.swallow_lf = false;
        self.partial = Partial::Buffered;
        if self.line.capacity() > RETAINED_BUFFER_CAPACITY {
            self.line = Vec::new();
        }
        self.line.clear();
        if self.data.capacity() > RETAINED_BUFFER_CAPACITY {
            self.data.release();
        }
        self.data.clear();
        self.last_event_large = false;
        self.has_data = false;
        self.measured_raw = 0;
        self.measured_decoded = 0;
        self.custom_type = false;
        self.id_buffer = self.last_event_id.clone();
        self.id_fields_buffered = self.id_fields_committed;
        self.block_retry = None;
    }
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Shows settings and buffer sizes, not buffer contents (they may be megabytes of peer data),
/// nor the last event ID.
impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("max_event_size", &self.max_event_size)
            .field("flush_unterminated_at_eof", &self.flush_unterminated_at_eof)
            .field("report_comments", &self.report_comments)
            .field("failed", &self.failed)
            .field("partial_line_len", &self.partial_line_len())
            .field("data_len", &self.complete_data_len())
            // Not the ID itself: it is peer data too (a resume token may be a credential).
            .field("last_event_id_len", &self.last_event_id().len())
            .field("reconnection_time", &self.reconnection_time)
            .finish_non_exhaustive()
    }
}

/// The largest line or data buffer kept for reuse (64 KiB); bigger ones are released after use, so
/// one huge event does not pin its memory for the rest of the connection. Also caps the size of
/// the first allocation for a block's data.
const RETAINED_BUFFER_CAPACITY: usize = 64 * 1024;

/// Decoding with replacement at most triples the size: one invalid byte becomes 3-byte U+FFFD.
const MAX_DECODED_GROWTH: usize = 3;

/// The field name of an `event` line and its colon.
const EVENT_PREFIX: &[u8] = b"event:";

/// The field name of a `data` line and its colon.
const DATA_PREFIX: &[u8] = b"data:";

/// Progress through the optional leading byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// At the start of the body; `matched` BOM bytes have been held back so far.
    Expecting { matched: usize },
    /// The BOM was skipped, or the body did not start with one.
    Done,
}

/// Where the unfinished line at the end of the last chunk is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    /// In `line` (empty when the chunk ended with a line).
    Buffered,
    /// A line that so far is the start of `data:` or `event:` (the name of most lines; tiny
    /// chunks often end inside it): compared with the name piece by piece, not buffered, then
    /// followed as [`DataValue`](Self::DataValue) or [`RecentType`](Self::RecentType). Anything
    /// else puts it in `line`.
    FieldName(NameStart),
    /// A `data` line whose value has begun: the value is appended to `data` as it arrives.
    DataValue(StreamedLine),
    /// An `event` line whose value so far is the start of the recent type (streams such as
    /// OpenAI's repeat one type on most events): it is compared piece by piece, not buffered,
    /// and its end needs no field parsing. Anything else puts it in `line`.
    RecentType(TypeLine),
}

/// A line followed by comparison with a field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameStart {
    field: FollowedField,
    /// How many bytes of the name and its colon the line has matched so far (at least one in a
    /// stored state; zero when a line's first piece is compared).
    matched: usize,
}

/// The fields whose lines are followed from their first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowedField {
    Data,
    Event,
}

impl FollowedField {
    /// The field's name and colon.
    fn name(self) -> &'static [u8] {
        match self {
            FollowedField::Data => DATA_PREFIX,
            FollowedField::Event => EVENT_PREFIX,
        }
    }
}

/// An `event` line followed by comparison with the recent type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TypeLine {
    /// Whether `event:` was followed by the space that is dropped.
    spaced: bool,
    /// How many bytes of the recent type the value has matched so far.
    matched: usize,
}

/// A `data` line being streamed into the data buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamedLine {
    /// The data length before this line (the block's complete values).
    block_len: usize,
    /// Where this line's value starts in `data`, after its LF separator, if any.
    value_start: usize,
    /// The line's raw bytes that are not in `data` (`data:` and the optional space); they still
    /// count towards the limit.
    skipped: usize,
    /// How long `data` may grow before the limit needs a closer look.
    data_room: usize,
}

#[cfg(test)]
mod tests;
