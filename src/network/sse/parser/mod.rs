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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use memchr::memchr;
use smol_str::SmolStr;

use super::chunk_text::ChunkText;
use super::data_buffer::{DataBuffer, extend_bytes};
use super::event::{SseEvent, SseEventRef, is_custom_event_type};
use super::line_end::{LineEndSearch, SHORT_LINE, WithLineEndSearch, with_best_search};
use super::long_line::{scan_line_piece, scan_long_line};
use super::swar;

/// The default limit, in bytes, on one event: 16 MiB (16 777 216 bytes) for the decoded data of
/// a block plus the raw bytes of the line being parsed.
///
/// Large enough for LLM streams whose final event repeats the whole response, small enough that
/// a peer sending an endless line cannot exhaust memory.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

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

/// Why an [`SseParser`] rejected the stream.
///
/// After an error the parser has discarded the partial line and block, and refuses further input
/// (returning the same error) until [`SseParser::reset`] starts a new connection.
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
    /// After an error every call fails until `reset`.
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
    /// Whether the last whole `data` line was longer than [`SHORT_LINE`]: the next is looked
    /// for with the search for long lines.
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
    /// error is [`SseParseError::EventTooLarge`], after which every call fails until
    /// [`reset`](Self::reset).
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
    /// prepares for a new body exactly like [`reset`](Self::reset).
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

    // ----- private helpers -----

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
        if self.failed {
            return Err(self.too_large());
        }
        let result = self.end_of_stream(out);
        self.discard_partial();
        self.failed = result.is_err();
        result
    }

    fn parse_chunk(&mut self, chunk: &[u8], out: &mut impl Emit) -> Result<(), SseParseError> {
        let mut rest = self.skip_bom(chunk)?;
        if self.swallow_lf {
            match rest.split_first() {
                None => return Ok(()),
                Some((b'\n', tail)) => rest = tail,
                Some(_) => {}
            }
            self.swallow_lf = false;
        }
        if let Partial::FieldName(start) = self.partial
            && let Some(tail) = self.continue_field_name(start, rest)
        {
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
        }
        if let Partial::RecentType(line) = self.partial
            && let Some(tail) = self.continue_recent_type(line, rest)
        {
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
        }
        if let Partial::DataValue(streamed) = self.partial {
            rest = self.continue_data_line(streamed, rest)?;
            if rest.is_empty() {
                return Ok(());
            }
        }
        // A tiny chunk's rest with no line end is the start of the next line (the usual end of
        // a piece that ended a line): kept without the setup of the line loop. A blank line
        // (an event's end) is told by its first byte, without the search.
        if rest.len() < swar::SHORT
            && !matches!(rest.first(), Some(b'\r' | b'\n'))
            && swar::find_in_short(rest, swar::line_end_marks).is_none()
        {
            return self.buffer_partial(rest);
        }
        with_best_search(
            rest.len(),
            ChunkLines {
                parser: self,
                rest,
                out,
            },
        )
    }

    /// The whole lines of `rest`, the chunk after what continues the previous one; keeps what
    /// is left of an unfinished line. Generic over the line-end search so that it is compiled
    /// once per search (see [`with_best_search`]).
    #[inline(always)]
    fn parse_lines<S: LineEndSearch>(
        &mut self,
        mut rest: &[u8],
        out: &mut impl Emit,
        search: S,
    ) -> Result<(), SseParseError> {
        let mut text = ChunkText::new(rest);
        // The block's only data value so far, while it is a whole line of this chunk: when the
        // blank line follows at once (the usual single-line event) it is dispatched from here,
        // uncopied; anything else moves it into the data buffer first.
        let mut in_chunk: Option<&[u8]> = None;
        loop {
            if rest.first() == Some(&b'e')
                && in_chunk.is_none()
                && self.line.is_empty()
                && let Some(after) = self.repeated_event_line(rest)?
            {
                rest = after;
                continue;
            }
            let Some((line, terminator, tail)) =
                split_line(rest, self.long_data_lines, &mut text, search)
            else {
                break;
            };
            rest = self.skip_line_end(terminator, tail);
            if let Some(value) = in_chunk.take() {
                if line.is_empty() {
                    let data = InChunkData {
                        raw: value,
                        text: text.text_of(value),
                    };
                    self.dispatch(Some(data), out);
                    continue;
                }
                self.push_data_value(value);
            }
            // Data, event and id lines are most lines: handled here, without the general field
            // dispatch, when they lie whole in the chunk.
            if self.line.is_empty() {
                match line {
                    // The blank line ending a block whose data is in the buffer (the data lines
                    // were checked against the limit as they came, so no check is due here).
                    [] => {
                        self.dispatch(None, out);
                        continue;
                    }
                    [b'd', b'a', b't', b'a', b':', value @ ..] => {
                        self.long_data_lines = line.len() > SHORT_LINE;
                        let value = strip_one_space(value);
                        self.check_data_line(line.len(), value)?;
                        if self.has_data {
                            self.data.push_lf_and(value);
                        } else {
                            in_chunk = Some(value);
                        }
                        continue;
                    }
                    [b'e', b'v', b'e', b'n', b't', b':', value @ ..] => {
                        self.check_line_size(line.len())?;
                        self.set_event_type(strip_one_space(value));
                        continue;
                    }
                    [b'i', b'd', b':', value @ ..] => {
                        self.check_line_size(line.len())?;
                        let value = strip_one_space(value);
                        self.set_id(value, text.nul_free_text_of(value));
                        continue;
                    }
                    _ => {}
                }
            }
            self.complete_line::<S>(line, out)?;
        }
        if let Some(value) = in_chunk {
            self.push_data_value(value);
        }
        self.buffer_partial(rest)
    }

    /// A one-byte chunk that is not a line end only continues the current line: it is appended
    /// at once, without the general setup (what the loop below would do with it too). Some
    /// proxies forward a stream a byte at a time; for them the setup was most of the cost. The
    /// byte of a streamed data value with room left, the usual case, is pushed right here
    /// (inlined into the caller: no call per byte); the rest goes out of line, so as not to weigh
    /// on the general path. Longer tiny chunks: [`continue_data_value`](Self::continue_data_value).
    #[inline(always)]
    fn continue_line(&mut self, chunk: &[u8]) -> Option<Result<(), SseParseError>> {
        let &[byte] = chunk else {
            return None;
        };
        // A streamed value implies the BOM is behind and no LF of a CRLF is pending.
        if let Partial::DataValue(streamed) = &self.partial
            && self.data.len() < streamed.data_room
            && byte != b'\r'
            && byte != b'\n'
        {
            debug_assert!(!self.swallow_lf && self.bom == BomState::Done);
            self.data.push(byte);
            return Some(Ok(()));
        }
        self.continue_other_line(byte)
    }

    /// A chunk of a few bytes inside a streamed data value (no line end, room left): appended at
    /// once, without the general setup. Tiny chunks mostly fall inside data values, the longest
    /// lines of most streams. Otherwise says where the value ends in the chunk, if it does with
    /// room for all of it, for [`feed_tiny_piece`](Self::feed_tiny_piece).
    #[inline(always)]
    fn continue_data_value(&mut self, chunk: &[u8]) -> TinyPiece {
        let Partial::DataValue(streamed) = self.partial else {
            return TinyPiece::Other;
        };
        // No overflow: the data is at most `isize::MAX` bytes, the chunk under 16.
        if self.data.len() + chunk.len() > streamed.data_room {
            return TinyPiece::Other;
        }
        // As in `continue_line`: a streamed value implies neither state needs a look.
        debug_assert!(!self.swallow_lf && self.bom == BomState::Done);
        match swar::find_in_short(chunk, swar::line_end_marks) {
            None => {
                self.data.extend_from_slice(chunk);
                TinyPiece::Appended
            }
            Some(end) => TinyPiece::EndsValueAt(streamed, end),
        }
    }

    /// A tiny chunk that is not simply more of a data value. A line of a stream fed a few bytes
    /// at a time starts in one piece and goes on in the next: the piece that ends a data value
    /// and starts the next line (often after the blank line that ends an event), the piece that
    /// completes the field name, the pieces of a repeated `event:` type. They are handled here,
    /// by comparison, without the general setup; what they leave, and every other piece, goes
    /// to the general path. Out of line, so that the loop appending data pieces stays small.
    #[inline(never)]
    fn feed_tiny_piece(
        &mut self,
        piece: TinyPiece,
        chunk: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        let rest = match piece {
            TinyPiece::Appended => return Ok(()),
            TinyPiece::EndsValueAt(streamed, end) => {
                let rest = self.end_tiny_data_line(streamed, chunk, end)?;
                self.start_tiny_line(rest, out)?
            }
            _ => self.continue_tiny_line(chunk, out)?,
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.parse_chunk(rest, out)
    }

    /// Ends a streamed data value at `end` of a tiny chunk (room for all of it checked).
    /// Returns what follows the line end.
    #[inline(always)]
    fn end_tiny_data_line<'a>(
        &mut self,
        streamed: StreamedLine,
        chunk: &'a [u8],
        end: usize,
    ) -> Result<&'a [u8], SseParseError> {
        // `end` is a line end the search found in `chunk`; were it not, the general path decides.
        let Some((value, after)) = chunk.split_at_checked(end) else {
            return Ok(chunk);
        };
        self.data.extend_from_slice(value);
        self.partial = Partial::Buffered;
        // As in `continue_data_line`.
        if self.data.len() > self.surely_fitting_raw {
            self.check_streamed_value(streamed)?;
        }
        let Some((&terminator, tail)) = after.split_first() else {
            return Ok(&[]);
        };
        Ok(self.skip_line_end(terminator, tail))
    }

    /// A tiny chunk that continues the current line: one that completes a field name begun in
    /// the last chunk or goes on with a repeated type, or one that begins a line (the last
    /// ended with its chunk). Returns what the general path has to parse.
    #[inline(always)]
    fn continue_tiny_line<'a>(
        &mut self,
        chunk: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        match self.partial {
            Partial::FieldName(start) => {
                let Some(value) = self.continue_field_name(start, chunk) else {
                    return Ok(chunk);
                };
                match self.partial {
                    Partial::DataValue(_) => Ok(self.append_tiny_value(value)),
                    Partial::RecentType(line) if !value.is_empty() => {
                        self.continue_tiny_type(line, value, out)
                    }
                    _ => Ok(value),
                }
            }
            Partial::RecentType(line) => self.continue_tiny_type(line, chunk, out),
            // Not at the start of the body (a BOM may follow) or after a CR (an LF may follow).
            Partial::Buffered
                if self.line.is_empty() && !self.swallow_lf && self.bom == BomState::Done =>
            {
                self.start_tiny_line(chunk, out)
            }
            _ => Ok(chunk),
        }
    }

    /// Goes on with a repeated `event:` type ([`Partial::RecentType`]) and, when it ends in
    /// `rest`, with the line after it. Returns what the general path has to parse.
    #[inline(always)]
    fn continue_tiny_type<'a>(
        &mut self,
        line: TypeLine,
        rest: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        match self.continue_recent_type(line, rest) {
            Some(after) => self.start_tiny_line(after, out),
            // Now in the line buffer: `rest` goes on with it.
            None => Ok(rest),
        }
    }

    /// The start of a line in a tiny chunk, the line buffer empty: a blank line (LF) dispatches
    /// the event, a line that so far spells the start of `data:` is compared with the name
    /// ([`Partial::FieldName`]), `data:` with the byte after it starts the data value here.
    /// Returns what the general path has to parse: any other line, or what follows a further
    /// line end.
    #[inline(always)]
    fn start_tiny_line<'a>(
        &mut self,
        mut start: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        if let [b'\n', after @ ..] = start {
            self.dispatch(None, out);
            start = after;
        }
        // `field_name_start`'s rule for `data`, in its quick form: what the line leads to surely
        // fits, so neither the name nor the start of the value needs a size check.
        if start.first() != Some(&b'd')
            || self.data.len() + DATA_PREFIX.len() + 1 > self.surely_fitting_raw
        {
            return Ok(start);
        }
        // Compared as the continuation of a name nothing of which has been matched yet.
        let name = NameStart {
            field: FollowedField::Data,
            matched: 0,
        };
        match self.continue_field_name(name, start) {
            Some(value) if matches!(self.partial, Partial::DataValue(_)) => {
                Ok(self.append_tiny_value(value))
            }
            // The name so far: followed (`Partial::FieldName`).
            Some(rest) => Ok(rest),
            None => Ok(start),
        }
    }

    /// Appends the start of a streamed value that a tiny chunk holds, when it holds no line end
    /// and fits the room. Returns what the general path has to parse.
    #[inline(always)]
    fn append_tiny_value<'a>(&mut self, value: &'a [u8]) -> &'a [u8] {
        match self.continue_data_value(value) {
            TinyPiece::Appended => &[],
            _ => value,
        }
    }

    /// [`continue_line`](Self::continue_line) for a byte that is not simply more of a data value.
    #[inline(never)]
    fn continue_other_line(&mut self, byte: u8) -> Option<Result<(), SseParseError>> {
        if byte == b'\r' || byte == b'\n' || self.swallow_lf || self.bom != BomState::Done {
            return None;
        }
        let chunk = &[byte];
        Some(match self.partial {
            Partial::DataValue(streamed) => self.stream_value(&streamed, chunk, None),
            Partial::RecentType(line) => match self.continue_recent_type(line, chunk) {
                Some(_) => Ok(()),
                None => self.buffer_partial(chunk),
            },
            Partial::Buffered => self.buffer_partial(chunk),
            // A byte of `data:` or `event:`. The byte after the colon, unless it is the space
            // that is dropped, begins the value: the caller goes on with it in the new state, as
            // with a byte that parts from the name (now in the line buffer).
            Partial::FieldName(start) => match self.continue_field_name(start, chunk) {
                Some([]) => Ok(()),
                _ => return None,
            },
        })
    }

    /// Recognises an `event: <recent type>` line at the start of `rest` by comparing it with the
    /// recent type, which also says where the line ends: no line-end search, no decoding. Streams
    /// such as OpenAI's repeat one type on most events. Returns what follows the line.
    #[inline(always)]
    fn repeated_event_line<'a>(
        &mut self,
        rest: &'a [u8],
    ) -> Result<Option<&'a [u8]>, SseParseError> {
        let Some(recent) = self.recent_event_type.as_deref() else {
            return Ok(None);
        };
        let Some(after_name) = rest.strip_prefix(b"event: ") else {
            return Ok(None);
        };
        let Some(after_value) = strip_prefix_short(after_name, recent.as_bytes()) else {
            return Ok(None);
        };
        let Some((&terminator @ (b'\r' | b'\n'), tail)) = after_value.split_first() else {
            return Ok(None);
        };
        let line_len = rest.len() - after_value.len();
        self.check_line_size(line_len)?;
        self.custom_type = true;
        Ok(Some(self.skip_line_end(terminator, tail)))
    }

    /// The size rules for a whole `data` line of `line_len` raw bytes with `value`: the line
    /// against the limit, then the data grown by the value. Decoding at most triples a size, so
    /// one comparison with a precomputed bound settles both for all but events near the limit.
    #[inline(always)]
    fn check_data_line(&mut self, line_len: usize, value: &[u8]) -> Result<(), SseParseError> {
        // 3 × (data + line) + 1 (the LF) ≤ limit, with the division done once, at construction.
        let surely_fits = self.data.len().saturating_add(line_len) <= self.surely_fitting_raw;
        if surely_fits {
            return Ok(());
        }
        self.check_line_size(line_len)?;
        self.check_value(value)
    }

    /// The bytes after a line terminator, minus the LF of a CRLF pair (remembered when the chunk
    /// ends between the two).
    fn skip_line_end<'a>(&mut self, terminator: u8, tail: &'a [u8]) -> &'a [u8] {
        if terminator != b'\r' {
            return tail;
        }
        match tail.split_first() {
            Some((b'\n', after_lf)) => after_lf,
            Some(_) => tail,
            None => {
                self.swallow_lf = true;
                tail
            }
        }
    }

    /// Consumes the leading BOM bytes of a stream, remembering a partial match across chunks.
    fn skip_bom<'a>(&mut self, mut rest: &'a [u8]) -> Result<&'a [u8], SseParseError> {
        while let BomState::Expecting { matched } = self.bom {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            if BOM.get(matched) == Some(&byte) {
                rest = tail;
                self.bom = if matched + 1 == BOM.len() {
                    BomState::Done
                } else {
                    BomState::Expecting {
                        matched: matched + 1,
                    }
                };
            } else {
                self.release_held_bom_bytes()?;
            }
        }
        Ok(rest)
    }

    /// The stream did not start with a whole BOM: the bytes held back so far are text.
    fn release_held_bom_bytes(&mut self) -> Result<(), SseParseError> {
        if let BomState::Expecting { matched } = self.bom {
            self.bom = BomState::Done;
            self.buffer_partial(BOM.get(..matched).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Handles a line whose terminator was found; `tail_of_line` is its part in the current chunk.
    /// Inlined into both compilations of the line loop (as it was when there was one).
    #[inline(always)]
    fn complete_line<S: LineEndSearch>(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        if self.line.is_empty() {
            self.check_line_size(tail_of_line.len())?;
            return self.process_line(tail_of_line, out);
        }
        if S::SERVES_TINY_CHUNKS {
            // Nearly every line began in an earlier chunk here: a call per line would show.
            return self.join_buffered_line(tail_of_line, out);
        }
        self.join_buffered_line_out_of_loop(tail_of_line, out)
    }

    /// [`join_buffered_line`](Self::join_buffered_line) as a call: in the loop over large chunks,
    /// which meets a line begun in an earlier chunk at most once per chunk, the inlined code
    /// crowded the common path (out of line, events of 40-byte lines parse 12–17 % faster).
    #[inline(never)]
    fn join_buffered_line_out_of_loop(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        self.join_buffered_line(tail_of_line, out)
    }

    /// Completes the line kept from earlier chunks with `tail_of_line` and handles it.
    #[inline(always)]
    fn join_buffered_line(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        self.check_line_size(self.line.len().saturating_add(tail_of_line.len()))?;
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(tail_of_line);
        let result = self.process_line(&line, out);
        self.recycle_line_buffer(line);
        result
    }

    /// Keeps a small buffer for the next partial line; gives a huge one back to the allocator.
    fn recycle_line_buffer(&mut self, mut line: Vec<u8>) {
        if line.capacity() <= RETAINED_BUFFER_CAPACITY {
            line.clear();
            self.line = line;
        }
    }

    /// Keeps the unfinished line at the end of a chunk. A line that so far is the start of
    /// `data:` or `event:` is only compared with the name (see [`Partial::FieldName`]); this test
    /// is inlined here, the rest of a line's start is out of line.
    fn buffer_partial(&mut self, bytes: &[u8]) -> Result<(), SseParseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.line.is_empty()
            && let Some(start) = self.field_name_start(bytes)
        {
            self.partial = Partial::FieldName(start);
            return Ok(());
        }
        if self.line.len() < FIELD_PREFIX_LEN {
            return self.buffer_line_start(bytes);
        }
        self.check_line_size(self.line.len().saturating_add(bytes.len()))?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Buffers the start of a line. A `data` line whose value has begun goes straight into the
    /// data buffer instead, so a long data line is copied once, not twice; an `event` line that
    /// so far repeats the recent type is only compared with it (see [`Partial::RecentType`]).
    #[inline(never)]
    fn buffer_line_start(&mut self, bytes: &[u8]) -> Result<(), SseParseError> {
        if self.line.is_empty() {
            if let Some(value) = started_data_value(bytes) {
                return self.start_data_line(bytes.len(), value);
            }
            if let Some(line) = self.recent_type_start(bytes) {
                self.partial = Partial::RecentType(line);
                return Ok(());
            }
            self.check_line_size(bytes.len())?;
            extend_bytes(&mut self.line, bytes);
            return Ok(());
        }
        self.check_line_size(self.line.len().saturating_add(bytes.len()))?;
        extend_bytes(&mut self.line, bytes);
        // A line fed in pieces shorter than its field name is recognised once enough has arrived.
        if let Some(line) = self.recent_type_start(&self.line) {
            self.line.clear();
            self.partial = Partial::RecentType(line);
            return Ok(());
        }
        let Some(value_len) = started_data_value(&self.line).map(<[u8]>::len) else {
            return Ok(());
        };
        let line = std::mem::take(&mut self.line);
        let value = line.get(line.len() - value_len..).unwrap_or_default();
        let result = self.start_data_line(line.len(), value);
        self.recycle_line_buffer(line);
        result
    }

    /// How to follow a line that so far is the start of `data:` or `event:`
    /// ([`Partial::FieldName`]): `event` only when a recent type can follow it, and either only
    /// when what it leads to surely fits the limit (so no piece of the name needs a size check).
    fn field_name_start(&self, line: &[u8]) -> Option<NameStart> {
        let (field, longest_held) = match line.first()? {
            // `data:` and the space: the line's size when its value begins.
            b'd' => (FollowedField::Data, DATA_PREFIX.len() + 1),
            // Followed into `RecentType`, which needs the whole repeated line to fit.
            b'e' => (
                FollowedField::Event,
                EVENT_PREFIX.len() + 1 + self.recent_event_type.as_deref()?.len(),
            ),
            _ => return None,
        };
        let name = field.name();
        // As in `check_data_line`: three times the raw data, plus the held bytes, within the
        // limit settles it without the closer bound.
        let fits = self.data.len().saturating_add(longest_held) <= self.surely_fitting_raw || {
            let (_, data_at_most) = self.decoded_bounds(self.data.len());
            data_at_most.saturating_add(longest_held) <= self.max_event_size
        };
        (fits && starts_with_tiny(name, line)).then_some(NameStart {
            field,
            matched: line.len(),
        })
    }

    /// Continues a line that so far is the start of a followed field name with the start of
    /// `rest`. Returns what follows the name and its optional space (empty when the next chunk
    /// has to say more), the line now being a streamed value or a [`Partial::RecentType`]; `None`
    /// when the line turned out to be something else: it is then in the line buffer, as if it had
    /// been buffered all along, and `rest` still has to be parsed.
    #[inline(always)]
    fn continue_field_name<'a>(&mut self, start: NameStart, rest: &'a [u8]) -> Option<&'a [u8]> {
        let name = start.field.name();
        let remaining = name.get(start.matched..).unwrap_or_default();
        let common = remaining.len().min(rest.len());
        let (more_name, after_name) = rest.split_at(common);
        if !starts_with_tiny(remaining, more_name) {
            self.buffer_field_name(start);
            return None;
        }
        // Whether the space that is dropped follows the colon is known with the next byte.
        let Some((&first, after_space)) = after_name.split_first() else {
            self.partial = Partial::FieldName(NameStart {
                matched: start.matched + common,
                ..start
            });
            return Some(&[]);
        };
        let spaced = first == b' ';
        let value = if spaced { after_space } else { after_name };
        match start.field {
            // The size rule was settled when the line began (`field_name_start`).
            FollowedField::Data => self.start_fitting_data_line(name.len() + usize::from(spaced)),
            // The size rule for the whole line was settled when it began (`field_name_start`),
            // and the recent type cannot have changed since: no line was processed.
            FollowedField::Event => {
                self.partial = Partial::RecentType(TypeLine { spaced, matched: 0 });
            }
        }
        Some(value)
    }

    /// Puts the bytes of a [`Partial::FieldName`] line into the line buffer.
    #[cold]
    #[inline(never)]
    fn buffer_field_name(&mut self, start: NameStart) {
        self.partial = Partial::Buffered;
        self.line.clear();
        let held = start.field.name().get(..start.matched).unwrap_or_default();
        self.line.extend_from_slice(held);
    }

    /// How to follow an unfinished `event` line by comparison ([`Partial::RecentType`]), if its
    /// value so far is the start of the recent type and the whole line, were it to repeat that
    /// type, surely fits the limit (so none of its pieces needs a size check).
    fn recent_type_start(&self, line: &[u8]) -> Option<TypeLine> {
        let recent = self.recent_event_type.as_deref()?;
        let after_colon = line.strip_prefix(EVENT_PREFIX)?;
        // `event:` alone: whether a space follows, to be dropped, is not known yet.
        if after_colon.is_empty() {
            return None;
        }
        let value = strip_one_space(after_colon);
        let skipped = line.len() - value.len();
        let (_, data_at_most) = self.decoded_bounds(self.data.len());
        let whole_line_fits = data_at_most
            .saturating_add(skipped)
            .saturating_add(recent.len())
            <= self.max_event_size;
        (whole_line_fits && recent.as_bytes().starts_with(value)).then_some(TypeLine {
            spaced: skipped > EVENT_PREFIX.len(),
            matched: value.len(),
        })
    }

    /// Continues an `event` line that so far repeats the recent type with the start of `rest`.
    /// Returns what follows the line (empty when the line goes on in the next chunk); `None` when
    /// the line turned out to be something else: it is then in the line buffer, as if it had
    /// been buffered all along, and `rest` still has to be parsed.
    #[inline(always)]
    fn continue_recent_type<'a>(&mut self, line: TypeLine, rest: &'a [u8]) -> Option<&'a [u8]> {
        let recent = self.recent_event_type.as_deref().map(str::as_bytes);
        let remaining = recent.and_then(|recent| recent.get(line.matched..));
        if let Some(remaining) = remaining {
            // A type holds no CR or LF, so a piece equal to part of it has no line end.
            if strip_prefix_short(remaining, rest).is_some() {
                self.partial = Partial::RecentType(TypeLine {
                    matched: line.matched + rest.len(),
                    ..line
                });
                return Some(&[]);
            }
            if let Some(after_value) = strip_prefix_short(rest, remaining)
                && let Some((&terminator @ (b'\r' | b'\n'), tail)) = after_value.split_first()
            {
                // The size rule was settled when the line began (`recent_type_start`).
                self.partial = Partial::Buffered;
                self.custom_type = true;
                return Some(self.skip_line_end(terminator, tail));
            }
        }
        self.buffer_recent_type(line);
        None
    }

    /// Puts the bytes of a [`Partial::RecentType`] line into the line buffer.
    #[cold]
    #[inline(never)]
    fn buffer_recent_type(&mut self, line: TypeLine) {
        self.partial = Partial::Buffered;
        let recent = self.recent_event_type.as_deref().map(str::as_bytes);
        let value = recent
            .and_then(|recent| recent.get(..line.matched))
            .unwrap_or_default();
        self.line.clear();
        self.line.extend_from_slice(EVENT_PREFIX);
        if line.spaced {
            self.line.push(b' ');
        }
        self.line.extend_from_slice(value);
    }

    /// Begins streaming an unfinished `data` line of `line_len` raw bytes whose value so far is
    /// `value`.
    fn start_data_line(&mut self, line_len: usize, value: &[u8]) -> Result<(), SseParseError> {
        let block_len = self.data.len();
        let (_, block_at_most) = self.decoded_bounds(block_len);
        // `check_line_size`, with the bound just computed.
        self.check_size_within(block_len, block_at_most, line_len)?;
        self.push_data_value(value);
        let skipped = line_len.saturating_sub(value.len());
        self.follow_data_value(block_len, block_at_most, skipped, value.len());
        Ok(())
    }

    /// [`start_data_line`](Self::start_data_line) for a line of `skipped` bytes (`data:` and
    /// its space) whose value has not begun, known to fit the limit (the rule of
    /// [`Partial::FieldName`]): only the separator is appended, inline.
    #[inline(always)]
    fn start_fitting_data_line(&mut self, skipped: usize) {
        let block_len = self.data.len();
        let (_, block_at_most) = self.decoded_bounds(block_len);
        if self.has_data {
            self.data.push_lf();
        } else {
            self.push_data_value(&[]);
        }
        self.follow_data_value(block_len, block_at_most, skipped, 0);
    }

    /// Follows the `data` line whose value (`value_len` bytes so far) ends the data buffer as
    /// [`Partial::DataValue`]: `block_len` bytes of data before it, whose decoded size is at
    /// most `block_at_most`, and `skipped` bytes of the line not in the data.
    #[inline(always)]
    fn follow_data_value(
        &mut self,
        block_len: usize,
        block_at_most: usize,
        skipped: usize,
        value_len: usize,
    ) {
        let value_start = self.data.len().saturating_sub(value_len);
        let value_room = self
            .max_event_size
            .saturating_sub(block_at_most)
            .saturating_sub(skipped);
        self.partial = Partial::DataValue(StreamedLine {
            block_len,
            value_start,
            skipped,
            data_room: value_start.saturating_add(value_room),
        });
    }

    /// Appends the start of `rest` to the streamed `data` line; returns what follows the line, or
    /// nothing when the line goes on in the next chunk.
    #[inline(always)]
    fn continue_data_line<'a>(
        &mut self,
        streamed: StreamedLine,
        rest: &'a [u8],
    ) -> Result<&'a [u8], SseParseError> {
        let scan = scan_line_piece(rest);
        let Some((more_value, terminator, tail)) =
            scan.end.and_then(|end| split_at_terminator(rest, end))
        else {
            // No line end: the proof, if any, covers all of `rest`.
            let text = scan.ascii_text.filter(|text| text.len() == rest.len());
            self.stream_value(&streamed, rest, text)?;
            return Ok(&[]);
        };
        self.stream_value(&streamed, more_value, scan.ascii_text)?;
        self.partial = Partial::Buffered;
        // All the data decoded, at most three times its raw size plus the trailing LF, within
        // the limit settles the rule at once (as for a whole data line, `check_data_line`).
        if self.data.len() > self.surely_fitting_raw {
            self.check_streamed_value(streamed)?;
        }
        Ok(self.skip_line_end(terminator, tail))
    }

    /// Appends more of a streamed value (`text`: the same bytes, when the line-end search proved
    /// them ASCII); the limit needs a look only once the line outgrows the room it surely has.
    #[inline(always)]
    fn stream_value(
        &mut self,
        streamed: &StreamedLine,
        bytes: &[u8],
        text: Option<&str>,
    ) -> Result<(), SseParseError> {
        // No overflow: both lengths are at most `isize::MAX`.
        if self.data.len() + bytes.len() > streamed.data_room {
            self.check_streamed_line(streamed, bytes.len())?;
        }
        match text {
            Some(text) => self.data.push_str(text),
            None => self.data.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// The limit for a streamed line about to grow by `more` bytes: decoded block plus raw line.
    #[cold]
    fn check_streamed_line(
        &mut self,
        streamed: &StreamedLine,
        more: usize,
    ) -> Result<(), SseParseError> {
        let line_len = self
            .data
            .len()
            .saturating_sub(streamed.value_start)
            .saturating_add(streamed.skipped)
            .saturating_add(more);
        self.check_size(streamed.block_len, line_len)
    }

    /// The size rule for a finished streamed value; see [`check_value`](Self::check_value).
    #[inline(never)]
    fn check_streamed_value(&mut self, streamed: StreamedLine) -> Result<(), SseParseError> {
        let separator = streamed.value_start.saturating_sub(streamed.block_len);
        let value_len = self.data.len().saturating_sub(streamed.value_start);
        if self.value_surely_fits(streamed.block_len, separator, value_len) {
            return Ok(());
        }
        let block = self.measure(streamed.block_len);
        let value = self.data.get(streamed.value_start..).unwrap_or_default();
        self.check_decoded(block, separator, value)
    }

    /// The limit while a line is being read: the decoded data so far plus the raw line.
    #[inline(always)]
    fn check_line_size(&mut self, line_len: usize) -> Result<(), SseParseError> {
        self.check_size(self.data.len(), line_len)
    }

    /// Checks that the first `block_len` bytes of data, decoded, plus `line_len` raw bytes fit in
    /// the limit. Decoded data is at least its raw size and at most three times it (an invalid
    /// byte becomes a 3-byte U+FFFD), so it is only decoded when those bounds disagree: near the
    /// limit, and then each byte once.
    #[inline(always)]
    fn check_size(&mut self, block_len: usize, line_len: usize) -> Result<(), SseParseError> {
        let (_, at_most) = self.decoded_bounds(block_len);
        self.check_size_within(block_len, at_most, line_len)
    }

    /// [`check_size`](Self::check_size) with the upper bound of the block's decoded size
    /// (`at_most`) already at hand.
    #[inline(always)]
    fn check_size_within(
        &mut self,
        block_len: usize,
        at_most: usize,
        line_len: usize,
    ) -> Result<(), SseParseError> {
        if at_most.saturating_add(line_len) <= self.max_event_size {
            return Ok(());
        }
        self.check_size_closely(block_len, line_len)
    }

    /// [`check_size`](Self::check_size) when the upper bound does not settle it.
    #[cold]
    fn check_size_closely(
        &mut self,
        block_len: usize,
        line_len: usize,
    ) -> Result<(), SseParseError> {
        let (at_least, _) = self.decoded_bounds(block_len);
        if at_least.saturating_add(line_len) > self.max_event_size
            || self.measure(block_len).saturating_add(line_len) > self.max_event_size
        {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Lower and upper bound of the decoded size of `data[..block_len]`.
    fn decoded_bounds(&self, block_len: usize) -> (usize, usize) {
        let unmeasured = block_len.saturating_sub(self.measured_raw);
        (
            self.measured_decoded.saturating_add(unmeasured),
            self.measured_decoded
                .saturating_add(unmeasured.saturating_mul(MAX_DECODED_GROWTH)),
        )
    }

    /// The decoded size of `data[..block_len]` (which must end at a value boundary), remembered.
    fn measure(&mut self, block_len: usize) -> usize {
        if let Some(unmeasured) = self.data.get(self.measured_raw..block_len) {
            self.measured_decoded = self.measured_decoded.saturating_add(lossy_len(unmeasured));
            self.measured_raw = block_len;
        }
        self.measured_decoded
    }

    /// Whether data grown by a separator and a value of `value_len` raw bytes surely stays within
    /// the limit, whatever the bytes decode to.
    fn value_surely_fits(&self, block_len: usize, separator: usize, value_len: usize) -> bool {
        let (_, at_most) = self.decoded_bounds(block_len);
        at_most
            .saturating_add(separator)
            .saturating_add(value_len.saturating_mul(MAX_DECODED_GROWTH))
            <= self.max_event_size
    }

    /// The exact rule for a value: decoded block, separator and decoded value within the limit.
    fn check_decoded(
        &self,
        block: usize,
        separator: usize,
        value: &[u8],
    ) -> Result<(), SseParseError> {
        let decoded = block
            .saturating_add(separator)
            .saturating_add(lossy_len(value));
        if decoded > self.max_event_size {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Checks that the data grown by `value` (decoded, with its separator) stays within the limit.
    /// Only matters for invalid UTF-8: a valid value is never longer than its line.
    fn check_value(&mut self, value: &[u8]) -> Result<(), SseParseError> {
        let block_len = self.data.len();
        let separator = usize::from(self.has_data);
        if self.value_surely_fits(block_len, separator, value.len()) {
            return Ok(());
        }
        let block = self.measure(block_len);
        self.check_decoded(block, separator, value)
    }

    /// Interprets one complete line (without its terminator), WHATWG §9.2.6.
    fn process_line(&mut self, line: &[u8], out: &mut impl Emit) -> Result<(), SseParseError> {
        if line.is_empty() {
            self.dispatch(None, out);
            return Ok(());
        }
        match parse_field(line) {
            (Field::Data, value) => {
                self.check_value(value)?;
                self.push_data_value(value);
            }
            (Field::Event, value) => self.set_event_type(value),
            (Field::Id, value) => self.set_id(value, None),
            (Field::Retry, value) => self.set_retry(value, out),
            (Field::Comment, value) if self.report_comments => {
                out.comment(&String::from_utf8_lossy(value));
            }
            // Comments when not reported, and unknown fields.
            _ => {}
        }
        Ok(())
    }

    /// Appends a value (limit already checked), preceded by LF unless it is the block's first.
    fn push_data_value(&mut self, value: &[u8]) {
        if self.has_data {
            self.data.push_lf_and(value);
        } else {
            // The block's first allocation, sized like the last event: usually the final size.
            self.data.push_first_value(value, self.data_capacity_hint);
        }
        self.has_data = true;
    }

    fn set_event_type(&mut self, value: &[u8]) {
        // Streams repeat one type: compare the raw bytes before decoding (the recent type is valid
        // UTF-8, so equal bytes decode to the same text).
        if let Some(recent) = &self.recent_event_type
            && recent.as_bytes() == value
        {
            self.custom_type = true;
            return;
        }
        let value = String::from_utf8_lossy(value);
        self.custom_type = is_custom_event_type(&value);
        if !self.custom_type {
            return;
        }
        if self.recent_event_type.as_deref() != Some(&*value) {
            self.recent_event_type = Some(Arc::from(&*value));
        }
    }

    /// Sets the ID buffer to `value`; `known` is `value` as text when it is already known to be
    /// valid UTF-8 without NUL.
    #[inline(always)]
    fn set_id(&mut self, value: &[u8], known: Option<&str>) {
        // A short ID known valid is stored inline (no allocation) at once: cheaper than any
        // comparison with the stored one. Inlined (the rest is not): the usual case, every event
        // of many streams.
        if let Some(text) = known
            && !text.is_empty()
            && text.len() <= INLINE_ID_LEN
        {
            self.id_buffer = Some(SmolStr::new_inline(text));
            return;
        }
        self.set_other_id(value, known);
    }

    /// [`set_id`](Self::set_id) for an empty, long, unchecked or invalid ID.
    #[inline(never)]
    fn set_other_id(&mut self, value: &[u8], known: Option<&str>) {
        if value.is_empty() {
            self.id_buffer = None;
            return;
        }
        if let Some(text) = known
            && text.len() <= INLINE_ID_LEN
        {
            self.id_buffer = Some(SmolStr::new_inline(text));
            return;
        }
        // Compare raw bytes before decoding: equal bytes decode to equal text, and a stored ID
        // never holds NUL, so a repeat needs no other check.
        if self.id_buffer.as_deref().map(str::as_bytes) == Some(value) || contains_nul(value) {
            return;
        }
        self.id_buffer = Some(match known.or_else(|| utf8(value)) {
            Some(text) if text.len() <= INLINE_ID_LEN => SmolStr::new_inline(text),
            Some(text) => SmolStr::new(text),
            None => SmolStr::new(String::from_utf8_lossy(value)),
        });
    }

    fn set_retry(&mut self, value: &[u8], out: &mut impl Emit) {
        let Some(millis) = parse_retry_millis(value) else {
            return;
        };
        let retry = Duration::from_millis(millis);
        self.reconnection_time = Some(retry);
        self.block_retry = Some(retry);
        out.retry(retry);
    }

    /// WHATWG "dispatch the event", steps 1–7. The data is `in_chunk` when the block's only value
    /// is still in the chunk, else the data buffer.
    #[inline(always)]
    fn dispatch(&mut self, in_chunk: Option<InChunkData<'_>>, out: &mut impl Emit) {
        self.last_event_id = self.id_buffer.clone();
        let retry = self.block_retry.take();
        let custom_type = std::mem::take(&mut self.custom_type);
        if !self.has_data && in_chunk.is_none() {
            return;
        }
        self.has_data = false;
        self.measured_raw = 0;
        self.measured_decoded = 0;
        let Some(in_chunk) = in_chunk else {
            return self.dispatch_buffer(custom_type, retry, out);
        };
        // The next block's first allocation is sized like this one.
        self.data_capacity_hint = in_chunk.raw.len().min(RETAINED_BUFFER_CAPACITY);
        if self.last_event_large {
            // A smaller event ends a run of large ones: their buffer goes.
            self.last_event_large = false;
            self.data.release();
        }
        out.event(Dispatched {
            data: DispatchedData::InChunk(in_chunk),
            event_type: self.recent_event_type.as_ref().filter(|_| custom_type),
            last_event_id: self.last_event_id.as_ref(),
            retry,
        });
    }

    /// [`dispatch`](Self::dispatch) of data collected in the data buffer.
    fn dispatch_buffer(&mut self, custom_type: bool, retry: Option<Duration>, out: &mut impl Emit) {
        let data_len = self.data.len();
        self.data_capacity_hint = data_len.min(RETAINED_BUFFER_CAPACITY);
        // A data buffer over the retained size is kept through a run of large events, so that
        // each is not allocated, grown and faulted in anew; the first large event after smaller
        // ones, and the first smaller one after a run, give it back.
        let large = data_len > RETAINED_BUFFER_CAPACITY;
        let keep_large_buffer = large && self.last_event_large;
        self.last_event_large = large;
        out.event(Dispatched {
            data: DispatchedData::Buffer(&mut self.data),
            event_type: self.recent_event_type.as_ref().filter(|_| custom_type),
            last_event_id: self.last_event_id.as_ref(),
            retry,
        });
        // An owned sink took the buffer; a borrowed one left it for reuse.
        if self.data.capacity() > RETAINED_BUFFER_CAPACITY && !keep_large_buffer {
            self.data.release();
        }
        self.data.clear();
    }

    fn end_of_stream(&mut self, out: &mut impl Emit) -> Result<(), SseParseError> {
        self.release_held_bom_bytes()?;
        if !self.flush_unterminated_at_eof {
            return Ok(());
        }
        if let Partial::FieldName(start) = self.partial {
            self.buffer_field_name(start);
        }
        if let Partial::RecentType(line) = self.partial {
            self.buffer_recent_type(line);
        }
        if let Partial::DataValue(streamed) = self.partial {
            self.partial = Partial::Buffered;
            self.check_streamed_value(streamed)?;
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(None, out);
        Ok(())
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
        self.block_retry = None;
    }

    /// The raw length of the unfinished line, wherever it is kept.
    fn partial_line_len(&self) -> usize {
        match self.partial {
            Partial::Buffered => self.line.len(),
            Partial::FieldName(start) => start.matched,
            Partial::RecentType(line) => {
                EVENT_PREFIX.len() + usize::from(line.spaced) + line.matched
            }
            Partial::DataValue(streamed) => self
                .data
                .len()
                .saturating_sub(streamed.value_start)
                .saturating_add(streamed.skipped),
        }
    }

    /// The decoded size of the block's complete data values (for `Debug`).
    fn complete_data_len(&self) -> usize {
        let complete = match self.partial {
            Partial::Buffered | Partial::FieldName(_) | Partial::RecentType(_) => self.data.len(),
            Partial::DataValue(streamed) => streamed.block_len,
        };
        lossy_len(self.data.get(..complete).unwrap_or_default())
    }

    fn too_large(&self) -> SseParseError {
        SseParseError::EventTooLarge {
            limit: self.max_event_size,
        }
    }
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

/// Shows settings and buffer sizes, not buffer contents (they may be megabytes of peer data).
impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("max_event_size", &self.max_event_size)
            .field("flush_unterminated_at_eof", &self.flush_unterminated_at_eof)
            .field("report_comments", &self.report_comments)
            .field("failed", &self.failed)
            .field("partial_line_len", &self.partial_line_len())
            .field("data_len", &self.complete_data_len())
            .field("last_event_id", &self.last_event_id())
            .field("reconnection_time", &self.reconnection_time)
            .finish_non_exhaustive()
    }
}

/// Where a parse delivers: owned events to an [`SseSink`], or borrowed ones to an
/// [`SseBorrowedSink`]. One parser body serves both.
trait Emit {
    fn event(&mut self, event: Dispatched<'_>);
    fn comment(&mut self, comment: &str);
    fn retry(&mut self, retry: Duration);
}

/// An event at dispatch, its data still raw.
struct Dispatched<'a> {
    data: DispatchedData<'a>,
    event_type: Option<&'a Arc<str>>,
    last_event_id: Option<&'a SmolStr>,
    retry: Option<Duration>,
}

/// Where a dispatched event's raw data is.
enum DispatchedData<'a> {
    /// The block's only value, still in the chunk being parsed.
    InChunk(InChunkData<'a>),
    /// The parser's data buffer: an owned sink takes it, a borrowed one reads it in place.
    Buffer(&'a mut DataBuffer),
}

impl DispatchedData<'_> {
    fn raw(&self) -> &[u8] {
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
struct InChunkData<'a> {
    raw: &'a [u8],
    /// `raw` as text, if the chunk's check already found it valid.
    text: Option<&'a str>,
}

struct Owned<'s, S: ?Sized>(&'s mut S);

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

struct Borrowed<'s, S: ?Sized>(&'s mut S);

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
        self.0.on_event(SseEventRef::from_parts(
            event.event_type,
            data,
            event.last_event_id,
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

/// `raw` decoded with replacement into a new string of exactly its size.
fn decode_to_string(raw: &[u8]) -> String {
    match utf8(raw) {
        Some(text) => text.to_owned(),
        None => {
            let mut text = String::with_capacity(lossy_len(raw));
            push_lossy(&mut text, raw);
            text
        }
    }
}

/// `raw` as text if it is valid UTF-8. simdutf8 checks a whole event's data in a fraction of the
/// time of `std::str::from_utf8` (measured: ~40 % fewer instructions per OpenAI-like event); the
/// rare invalid input is then decoded by std with replacement.
fn utf8(raw: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(raw).ok()
}

/// The buffer itself as the event's string (no copy) when it is valid UTF-8.
fn decode_in_place(taken: Result<String, Vec<u8>>) -> String {
    match taken {
        Ok(mut text) => {
            // Events may be kept for long: bound the slack from growth or a stale hint.
            if text.capacity() - text.len() > text.len() / MAX_SLACK_DIVISOR {
                text.shrink_to_fit();
            }
            text
        }
        Err(invalid) => decode_to_string(&invalid),
    }
}

/// The largest line or data buffer kept for reuse (64 KiB); bigger ones are released after use, so
/// one huge event does not pin its memory for the rest of the connection. Also caps the size of
/// the first allocation for a block's data.
const RETAINED_BUFFER_CAPACITY: usize = 64 * 1024;

/// Owned events with up to this much data (16 KiB) get an exact copy of the reused data buffer;
/// bigger ones take the buffer itself.
const COPY_OUT_UP_TO: usize = 16 * 1024;

/// An event's data may carry at most 1/4 of its length as unused capacity.
const MAX_SLACK_DIVISOR: usize = 4;

/// Decoding with replacement at most triples the size: one invalid byte becomes 3-byte U+FFFD.
const MAX_DECODED_GROWTH: usize = 3;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The longest ID a `SmolStr` holds inline (its `INLINE_CAP`, public only in later versions than
/// our minimum Rust allows). `SmolStr::new` would also scan the text for its whitespace form.
const INLINE_ID_LEN: usize = 23;

/// `event:` plus the byte that tells whether a space follows: an unfinished line shorter than
/// this may still be recognised as a `data` line with its value begun (six bytes) or an `event`
/// line (seven).
const FIELD_PREFIX_LEN: usize = 7;

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

/// What [`SseParser::continue_data_value`] made of a tiny chunk.
enum TinyPiece {
    /// More of the streamed value, appended.
    Appended,
    /// The streamed value (room checked for the whole chunk) ends at this index of the chunk.
    EndsValueAt(StreamedLine, usize),
    /// Anything else: the state is not a streamed value, or it has not room for the chunk.
    Other,
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

/// The fields the parser acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Id,
    Retry,
    Comment,
    Unknown,
}

/// Splits off the first terminated line: (line, its terminator byte, the bytes after it).
/// `long_data_lines`: whether a `data` line is expected to be long (the stream's last one was).
/// Always inlined: as a call (returning three values through memory) it costs more than a short
/// line's search.
#[inline(always)]
fn split_line<'a>(
    bytes: &'a [u8],
    long_data_lines: bool,
    text: &mut ChunkText<'a>,
    search: impl LineEndSearch,
) -> Option<(&'a [u8], u8, &'a [u8])> {
    let end = match bytes.first() {
        // A blank line (every event ends with one) needs no search at all.
        Some(b'\r' | b'\n') => Some(0),
        // Data lines are as long as the stream's data; other lines (IDs, types) are short.
        Some(b'd') if long_data_lines => find_long_data_line_end(bytes, text),
        _ => search.find_line_end(bytes),
    }?;
    split_at_terminator(bytes, end)
}

/// The end of a data line expected to be long; a line the search proved ASCII becomes the
/// chunk's checked text, so that its value is not checked again at dispatch (one pass over a
/// long line instead of two).
#[inline(never)]
fn find_long_data_line_end<'a>(bytes: &'a [u8], text: &mut ChunkText<'a>) -> Option<usize> {
    let scan = scan_long_line(bytes);
    let end = scan.end?;
    if let Some(line) = scan.ascii_text {
        text.add_checked_line(line);
    }
    Some(end)
}

/// [`SseParser::parse_lines`] waiting for its line-end search.
struct ChunkLines<'p, 'a, E> {
    parser: &'p mut SseParser,
    rest: &'a [u8],
    out: &'p mut E,
}

impl<E: Emit> WithLineEndSearch for ChunkLines<'_, '_, E> {
    type Output = Result<(), SseParseError>;

    #[inline(always)]
    fn run<S: LineEndSearch>(self, search: S) -> Self::Output {
        self.parser.parse_lines(self.rest, self.out, search)
    }
}

/// (line, terminator, the bytes after it) for the terminator at `end`.
#[inline(always)]
fn split_at_terminator(bytes: &[u8], end: usize) -> Option<(&[u8], u8, &[u8])> {
    let (line, from_terminator) = bytes.split_at_checked(end)?;
    let (&terminator, tail) = from_terminator.split_first()?;
    Some((line, terminator, tail))
}

/// The field of a line and its value. The four field names are matched as prefixes first: that
/// skips the colon search on nearly every line.
/// (Slice patterns, not `strip_prefix`: they compile to a few byte compares instead of a
/// `memcmp` call.)
fn parse_field(line: &[u8]) -> (Field, &[u8]) {
    let known = match line {
        [b'd', b'a', b't', b'a', b':', value @ ..] => Some((Field::Data, value)),
        [b'e', b'v', b'e', b'n', b't', b':', value @ ..] => Some((Field::Event, value)),
        [b'i', b'd', b':', value @ ..] => Some((Field::Id, value)),
        [b'r', b'e', b't', b'r', b'y', b':', value @ ..] => Some((Field::Retry, value)),
        _ => None,
    };
    if let Some((field, value)) = known {
        return (field, strip_one_space(value));
    }
    let (name, value) = split_field(line);
    let field = match name {
        b"" => Field::Comment,
        b"data" => Field::Data,
        b"event" => Field::Event,
        b"id" => Field::Id,
        b"retry" => Field::Retry,
        _ => Field::Unknown,
    };
    (field, value)
}

/// The value so far of an unfinished `data` line, once it is known: after `data:` and the byte
/// that decides whether there is a space to drop.
fn started_data_value(partial_line: &[u8]) -> Option<&[u8]> {
    match partial_line {
        [b'd', b'a', b't', b'a', b':', value @ ..] if !value.is_empty() => {
            Some(strip_one_space(value))
        }
        _ => None,
    }
}

/// `bytes` without `prefix`, if it starts with it. Event types and the pieces of tiny chunks are
/// short: 4 to 32 bytes are compared as two overlapping words each side instead of through a
/// `memcmp` call (measured: ~25 fewer instructions per repeated 26-byte type).
#[inline]
fn strip_prefix_short<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(prefix.len())?;
    let equal = match prefix.len() {
        4..=8 => equal_by_ends::<4>(head, prefix),
        9..=16 => equal_by_ends::<8>(head, prefix),
        17..=32 => equal_by_ends::<16>(head, prefix),
        _ => head == prefix,
    };
    equal.then_some(rest)
}

/// Whether `a` and `b`, of one length from `N` to `2 * N`, are equal: compared as their first
/// and their last `N` bytes (overlapping in the middle), a fixed-size compare each.
#[inline(always)]
fn equal_by_ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
    fn ends<const N: usize>(bytes: &[u8]) -> Option<([u8; N], [u8; N])> {
        let first = bytes.get(..N)?.try_into().ok()?;
        let last = bytes.get(bytes.len().checked_sub(N)?..)?.try_into().ok()?;
        Some((first, last))
    }
    match (ends::<N>(a), ends::<N>(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Whether `bytes` starts with `prefix`, for the few bytes of a field name: a byte loop, not
/// a `memcmp` call.
#[inline(always)]
fn starts_with_tiny(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes.iter().zip(prefix).all(|(a, b)| a == b)
}

fn strip_one_space(value: &[u8]) -> &[u8] {
    match value {
        [b' ', rest @ ..] => rest,
        _ => value,
    }
}

/// Field name (before the first colon) and value (after it, minus one leading space). A line
/// without a colon is all name with an empty value; a comment has an empty name.
fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    let Some(colon) = memchr(b':', line) else {
        return (line, &[]);
    };
    let (name, from_colon) = line.split_at_checked(colon).unwrap_or((line, &[]));
    let value = from_colon.get(1..).unwrap_or_default();
    (name, value.strip_prefix(b" ").unwrap_or(value))
}

/// A `retry` value in milliseconds: only a non-empty run of ASCII digits counts (no sign, no
/// space, no unit). Values beyond `u64::MAX` saturate: the server asked for "practically never".
fn parse_retry_millis(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |millis, digit| {
        millis
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// The length of `bytes` once decoded with replacement (each invalid sequence is 3 bytes of U+FFFD).
fn lossy_len(bytes: &[u8]) -> usize {
    bytes
        .utf8_chunks()
        .map(|chunk| {
            let replacement = if chunk.invalid().is_empty() {
                0
            } else {
                char::REPLACEMENT_CHARACTER.len_utf8()
            };
            chunk.valid().len().saturating_add(replacement)
        })
        .fold(0, usize::saturating_add)
}

/// Whether `bytes` holds a NUL byte. IDs are short: a word-at-a-time look beats memchr's setup.
fn contains_nul(bytes: &[u8]) -> bool {
    if bytes.len() < swar::SHORT {
        swar::find_in_short(bytes, swar::nul_marks).is_some()
    } else {
        memchr(0, bytes).is_some()
    }
}

/// Appends `bytes` decoded with replacement, without the temporary `String::from_utf8_lossy` makes.
fn push_lossy(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `stream` fed in `chunk`-byte pieces.
    fn events_in_chunks(stream: &[u8], chunk: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for piece in stream.chunks(chunk) {
            parser.feed(piece, &mut events).expect("within the limit");
        }
        parser.finish(&mut events).expect("finish");
        events
    }

    #[test]
    fn the_portable_line_loop_parses_like_the_avx2_one() {
        let long = "y".repeat(700);
        let stream = format!(
            "\u{feff}event: delta\r\nid: 1\r\ndata: {long}\r\ndata: caf\u{e9}\r\n\r\n\
             : comment\nretry: 250\ndata: a\ndata:b\ndata:  c\n\n\
             event: delta\ndata: {}\ndata: \u{1F600} {long}\rdata: x\r\r\
             data: 0123456789012345678901234567890123456789\ndata\nid: 2\n\n",
            "z".repeat(40),
        );
        let mut bytes = stream.into_bytes();
        bytes.extend_from_slice(b"data: in\xFFvalid\ndata: 0123456789abcdef\xC3\n\n");
        for chunk in [1, 7, 15, 16, 17, 33, 100, 4096, usize::MAX] {
            let expected = events_in_chunks(&bytes, chunk);
            assert_eq!(expected.len(), 5, "chunk {chunk}");
            super::super::line_end::FORCE_PORTABLE.with(|force| force.set(true));
            let portable = events_in_chunks(&bytes, chunk);
            super::super::line_end::FORCE_PORTABLE.with(|force| force.set(false));
            assert_eq!(portable, expected, "chunk {chunk}");
            assert_eq!(
                expected,
                events_in_chunks(&bytes, usize::MAX),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn split_field_takes_the_first_colon_and_one_space() {
        assert_eq!(split_field(b"a: b: c"), (&b"a"[..], &b"b: c"[..]));
        assert_eq!(split_field(b"a:  b"), (&b"a"[..], &b" b"[..]));
        assert_eq!(split_field(b"a:\tb"), (&b"a"[..], &b"\tb"[..]));
        assert_eq!(split_field(b"name"), (&b"name"[..], &b""[..]));
        assert_eq!(split_field(b":c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn retry_values() {
        assert_eq!(parse_retry_millis(b"0"), Some(0));
        assert_eq!(parse_retry_millis(b"03000"), Some(3000));
        assert_eq!(
            parse_retry_millis(b"99999999999999999999999"),
            Some(u64::MAX)
        );
        for bad in [&b""[..], b"+5", b"-1", b" 5", b"5ms", b"1e3", b"\xd9\xa3"] {
            assert_eq!(parse_retry_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lossy_helpers_match_std() {
        for bytes in [
            &b"ok"[..],
            b"\xff",
            b"a\xe2\x82b",
            b"\xf0\x9f\x98",
            b"\xed\xa0\x80x",
        ] {
            let expected = String::from_utf8_lossy(bytes);
            let mut pushed = String::new();
            push_lossy(&mut pushed, bytes);
            assert_eq!(pushed, expected);
            assert_eq!(lossy_len(bytes), expected.len());
        }
    }

    #[test]
    fn borrowed_single_line_data_is_not_copied() {
        let chunk = b"event: x\ndata: hello\n\ndata: a\ndata: b\n\nid: 1\ndata: c\nid: 2\n\n";
        let inside = chunk.as_ptr_range();
        let mut seen = Vec::new();
        let mut parser = SseParser::new();
        parser
            .feed_borrowed(chunk, &mut |event: SseEventRef<'_>| {
                let uncopied = inside.contains(&event.data().as_ptr());
                seen.push((event.data().to_owned(), uncopied));
            })
            .unwrap();
        let expected = [("hello", true), ("a\nb", false), ("c", false)];
        assert_eq!(
            seen,
            expected.map(|(data, uncopied)| (data.to_owned(), uncopied))
        );
        assert_eq!(parser.last_event_id(), "2");
    }

    #[test]
    fn a_large_data_buffer_is_kept_only_through_a_run_of_large_events() {
        let large = format!("data: {}\n\n", "x".repeat(RETAINED_BUFFER_CAPACITY + 1));
        let mut parser = SseParser::new();
        let feed = |parser: &mut SseParser, event: &str| {
            let mut count = 0;
            for chunk in event.as_bytes().chunks(4096) {
                parser
                    .feed_borrowed(chunk, &mut |_: SseEventRef<'_>| count += 1)
                    .unwrap();
            }
            assert_eq!(count, 1);
            parser.data.capacity()
        };
        assert!(feed(&mut parser, "data: small\n\n") <= RETAINED_BUFFER_CAPACITY);
        assert!(
            feed(&mut parser, &large) <= RETAINED_BUFFER_CAPACITY,
            "a lone large event"
        );
        let kept = feed(&mut parser, &large);
        assert!(
            kept > RETAINED_BUFFER_CAPACITY,
            "the second of a run keeps it"
        );
        let buffer = parser.data.as_ptr();
        assert_eq!(feed(&mut parser, &large), kept);
        assert_eq!(parser.data.as_ptr(), buffer, "reused, not reallocated");
        assert!(feed(&mut parser, "data: small\n\n") <= RETAINED_BUFFER_CAPACITY);
        // A run broken by a reset starts over.
        feed(&mut parser, &large);
        parser.reset();
        assert!(feed(&mut parser, &large) <= RETAINED_BUFFER_CAPACITY);
    }

    #[test]
    fn short_prefixes_are_compared_exactly_at_every_length() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..=text.len() {
            let prefix = &text[..len];
            assert_eq!(strip_prefix_short(&text, prefix), Some(&text[len..]));
            assert_eq!(
                strip_prefix_short(prefix, &text),
                (len == text.len()).then_some(&[][..])
            );
            for wrong in 0..len {
                let mut other = prefix.to_vec();
                other[wrong] ^= 0x20;
                assert_eq!(
                    strip_prefix_short(&text, &other),
                    None,
                    "len {len}, byte {wrong}"
                );
            }
        }
    }

    #[test]
    fn debug_hides_buffer_contents() {
        let mut parser = SseParser::new();
        parser.feed(b"data: secret", &mut |_| {}).unwrap();
        let debug = format!("{parser:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("partial_line_len: 12"), "{debug}");
    }

    #[test]
    fn a_line_repeating_the_recent_type_is_compared_not_buffered() {
        let mut parser = SseParser::new();
        parser
            .feed(
                b"event: delta
data: 1

event: d",
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(
            parser.partial,
            Partial::RecentType(TypeLine {
                spaced: true,
                matched: 1
            })
        );
        assert!(parser.line.is_empty());
        parser.feed(b"el", &mut |_| {}).unwrap();
        parser.feed(b"t", &mut |_| {}).unwrap();
        assert!(format!("{parser:?}").contains("partial_line_len: 11"));
        // Parting from the type puts the line into the buffer, as if it had been there all along.
        parser.feed(b"x", &mut |_| {}).unwrap();
        assert_eq!(parser.partial, Partial::Buffered);
        assert_eq!(parser.line, b"event: deltx");
        let mut events = Vec::new();
        parser
            .feed(
                b"
data: 2

",
                &mut events,
            )
            .unwrap();
        assert_eq!(events, [SseEvent::new("deltx", "2")]);
    }

    #[test]
    fn a_line_starting_like_a_field_name_is_compared_not_buffered() {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.feed(b"data: 1\n\nda", &mut events).unwrap();
        let data_start = NameStart {
            field: FollowedField::Data,
            matched: 2,
        };
        assert_eq!(parser.partial, Partial::FieldName(data_start));
        assert!(parser.line.is_empty());
        assert!(format!("{parser:?}").contains("partial_line_len: 2"));
        // The name and its colon, then the space: the value streams from the next byte.
        parser.feed(b"ta:", &mut events).unwrap();
        assert_eq!(
            parser.partial,
            Partial::FieldName(NameStart {
                matched: 5,
                ..data_start
            })
        );
        parser.feed(b" 2", &mut events).unwrap();
        assert!(matches!(parser.partial, Partial::DataValue(_)));
        assert!(parser.line.is_empty());
        // Parting from the name puts the line into the buffer, as if it had been there all along.
        parser.feed(b"\n\ndat", &mut events).unwrap();
        parser.feed(b"e: 3\n", &mut events).unwrap();
        assert_eq!(parser.partial, Partial::Buffered);
        parser.feed(b"dat", &mut events).unwrap();
        parser.feed(b"e", &mut events).unwrap();
        assert_eq!(parser.partial, Partial::Buffered);
        assert_eq!(parser.line, b"date");
        // An `event` name is followed only once there is a recent type to compare the value with.
        parser
            .feed(b"\n\nevent: delta\ndata: 4\n\nev", &mut events)
            .unwrap();
        assert_eq!(
            parser.partial,
            Partial::FieldName(NameStart {
                field: FollowedField::Event,
                matched: 2
            })
        );
        parser.feed(b"ent:d", &mut events).unwrap();
        assert_eq!(
            parser.partial,
            Partial::RecentType(TypeLine {
                spaced: false,
                matched: 1
            })
        );
        parser.feed(b"elta\ndata: 5\n\n", &mut events).unwrap();
        assert_eq!(
            events,
            [
                SseEvent::new("message", "1"),
                SseEvent::new("message", "2"),
                SseEvent::new("delta", "4"),
                SseEvent::new("delta", "5"),
            ]
        );
        let mut fresh = SseParser::new();
        fresh.feed(b"ev", &mut events).unwrap();
        assert_eq!(fresh.partial, Partial::Buffered);
        assert_eq!(fresh.line, b"ev");
    }
}
