//! [`SseParser`]: the sans-IO, incremental WHATWG `text/event-stream` parser.
//!
//! Bytes go in through [`SseParser::feed`] in chunks of any size; every dispatched event, and
//! optionally every comment and `retry` value, comes out through an [`SseSink`] while the chunk is
//! being parsed, never later. The result does not depend on how the stream is split: a chunk may
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

use memchr::{memchr, memchr2};

use super::event::{SseEvent, is_custom_event_type};

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
    flush_unterminated_at_eof: bool,
    report_comments: bool,
    /// After an error every call fails until `reset`.
    failed: bool,
    bom: BomState,
    /// The previous chunk ended in CR: an LF starting the next chunk belongs to that line end.
    swallow_lf: bool,
    /// The unfinished line at the end of the last chunk (raw bytes, not yet decoded).
    line: Vec<u8>,
    /// The block's data values joined by LF; the spec's trailing LF is never stored.
    data: String,
    /// Whether the block had a `data` field; the spec's data buffer is non-empty exactly then.
    has_data: bool,
    /// `None` means the default type (`message`).
    event_type: Option<Arc<str>>,
    /// The last event ID buffer; `None` means "".
    id_buffer: Option<Arc<str>>,
    /// The `retry` of the current block, reported in its event.
    block_retry: Option<Duration>,
    /// The committed last event ID; survives `reset`.
    last_event_id: Option<Arc<str>>,
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
            flush_unterminated_at_eof: false,
            report_comments: false,
            failed: false,
            bom: BomState::Expecting { matched: 0 },
            swallow_lf: false,
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            event_type: None,
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
        self.last_event_id = (!id.is_empty()).then(|| Arc::from(id));
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
        if self.failed {
            return Err(self.too_large());
        }
        let result = self.parse_chunk(chunk, sink);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Ends the body: discards the unterminated final block (or dispatches it when
    /// [`set_flush_unterminated_at_eof`](Self::set_flush_unterminated_at_eof) is on), then
    /// prepares for a new body exactly like [`reset`](Self::reset).
    pub fn finish(&mut self, sink: &mut impl SseSink) -> Result<(), SseParseError> {
        if self.failed {
            return Err(self.too_large());
        }
        let result = self.end_of_stream(sink);
        self.discard_partial();
        self.failed = result.is_err();
        result
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

    fn parse_chunk(&mut self, chunk: &[u8], sink: &mut impl SseSink) -> Result<(), SseParseError> {
        let mut rest = self.skip_bom(chunk)?;
        if self.swallow_lf {
            match rest.split_first() {
                None => return Ok(()),
                Some((b'\n', tail)) => rest = tail,
                Some(_) => {}
            }
            self.swallow_lf = false;
        }
        while let Some((line, terminator, tail)) = split_line(rest) {
            self.complete_line(line, sink)?;
            rest = tail;
            if terminator == b'\r' {
                match rest.split_first() {
                    Some((b'\n', tail)) => rest = tail,
                    Some(_) => {}
                    None => self.swallow_lf = true,
                }
            }
        }
        self.buffer_partial(rest)
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
    fn complete_line(
        &mut self,
        tail_of_line: &[u8],
        sink: &mut impl SseSink,
    ) -> Result<(), SseParseError> {
        if self.line.is_empty() {
            self.check_line_size(tail_of_line.len())?;
            return self.process_line(tail_of_line, sink);
        }
        self.check_line_size(self.line.len().saturating_add(tail_of_line.len()))?;
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(tail_of_line);
        let result = self.process_line(&line, sink);
        // Keep a small buffer for the next partial line; give a huge one back to the allocator.
        if line.capacity() <= RETAINED_BUFFER_CAPACITY {
            line.clear();
            self.line = line;
        }
        result
    }

    fn buffer_partial(&mut self, bytes: &[u8]) -> Result<(), SseParseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.check_line_size(self.line.len().saturating_add(bytes.len()))?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn check_line_size(&self, line_len: usize) -> Result<(), SseParseError> {
        if self.data.len().saturating_add(line_len) > self.max_event_size {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Interprets one complete line (without its terminator), WHATWG §9.2.6.
    fn process_line(&mut self, line: &[u8], sink: &mut impl SseSink) -> Result<(), SseParseError> {
        if line.is_empty() {
            self.dispatch(sink);
            return Ok(());
        }
        let (name, value) = split_field(line);
        match name {
            b"" if self.report_comments => sink.on_comment(&String::from_utf8_lossy(value)),
            b"data" => self.append_data(value)?,
            b"event" => self.set_event_type(value),
            b"id" => self.set_id(value),
            b"retry" => self.set_retry(value, sink),
            // Comments when not reported, and unknown fields.
            _ => {}
        }
        Ok(())
    }

    fn append_data(&mut self, value: &[u8]) -> Result<(), SseParseError> {
        let separator = usize::from(self.has_data);
        match std::str::from_utf8(value) {
            Ok(text) => {
                self.reserve_data(separator.saturating_add(text.len()))?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(text);
            }
            Err(_) => {
                self.reserve_data(separator.saturating_add(lossy_len(value)))?;
                if self.has_data {
                    self.data.push('\n');
                }
                push_lossy(&mut self.data, value);
            }
        }
        self.has_data = true;
        Ok(())
    }

    /// Checks the limit before the data buffer grows by `additional` bytes, and reserves them in one
    /// step (so a value plus its separator never reallocates twice).
    fn reserve_data(&mut self, additional: usize) -> Result<(), SseParseError> {
        if self.data.len().saturating_add(additional) > self.max_event_size {
            return Err(self.too_large());
        }
        self.data.reserve(additional);
        Ok(())
    }

    fn set_event_type(&mut self, value: &[u8]) {
        let value = String::from_utf8_lossy(value);
        if !is_custom_event_type(&value) {
            self.event_type = None;
            return;
        }
        let shared = match &self.recent_event_type {
            Some(recent) if **recent == *value => Arc::clone(recent),
            _ => {
                let fresh: Arc<str> = Arc::from(&*value);
                self.recent_event_type = Some(Arc::clone(&fresh));
                fresh
            }
        };
        self.event_type = Some(shared);
    }

    fn set_id(&mut self, value: &[u8]) {
        if memchr(0, value).is_some() {
            return;
        }
        let value = String::from_utf8_lossy(value);
        if value.is_empty() {
            self.id_buffer = None;
        } else if self.id_buffer.as_deref() == Some(&*value) {
            // Unchanged: keep sharing the allocation.
        } else if self.last_event_id.as_deref() == Some(&*value) {
            self.id_buffer = self.last_event_id.clone();
        } else {
            self.id_buffer = Some(Arc::from(&*value));
        }
    }

    fn set_retry(&mut self, value: &[u8], sink: &mut impl SseSink) {
        let Some(millis) = parse_retry_millis(value) else {
            return;
        };
        let retry = Duration::from_millis(millis);
        self.reconnection_time = Some(retry);
        self.block_retry = Some(retry);
        sink.on_retry(retry);
    }

    /// WHATWG "dispatch the event", steps 1–7.
    fn dispatch(&mut self, sink: &mut impl SseSink) {
        self.last_event_id = self.id_buffer.clone();
        let retry = self.block_retry.take();
        let event_type = self.event_type.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        let data = self.take_data();
        let id = self.last_event_id.clone();
        sink.on_event(SseEvent::from_parts(event_type, data, id, retry));
    }

    /// Moves the data out when its allocation fits it exactly (one-line events, huge events);
    /// otherwise copies it into an exact allocation and keeps the buffer, so multi-line events
    /// do not regrow the buffer line by line every time.
    fn take_data(&mut self) -> String {
        if self.data.capacity() == self.data.len()
            || self.data.capacity() > RETAINED_BUFFER_CAPACITY
        {
            return std::mem::take(&mut self.data);
        }
        let data = String::from(self.data.as_str());
        self.data.clear();
        data
    }

    fn end_of_stream(&mut self, sink: &mut impl SseSink) -> Result<(), SseParseError> {
        self.release_held_bom_bytes()?;
        if !self.flush_unterminated_at_eof {
            return Ok(());
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, sink)?;
        }
        self.dispatch(sink);
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
        if self.line.capacity() > RETAINED_BUFFER_CAPACITY {
            self.line = Vec::new();
        }
        self.line.clear();
        if self.data.capacity() > RETAINED_BUFFER_CAPACITY {
            self.data = String::new();
        }
        self.data.clear();
        self.has_data = false;
        self.event_type = None;
        self.id_buffer = self.last_event_id.clone();
        self.block_retry = None;
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
            .field("partial_line_len", &self.line.len())
            .field("data_len", &self.data.len())
            .field("last_event_id", &self.last_event_id())
            .field("reconnection_time", &self.reconnection_time)
            .finish_non_exhaustive()
    }
}

/// The largest line or data buffer kept for reuse (64 KiB); bigger ones are released after use, so
/// one huge event does not pin its memory for the rest of the connection.
const RETAINED_BUFFER_CAPACITY: usize = 64 * 1024;

/// Inputs shorter than this are scanned for line ends with a plain loop: for the tiny chunks some
/// servers and proxies produce, memchr's setup costs more than it saves (measured: 25–40 % faster
/// on 1- and 7-byte chunks).
const SCALAR_SCAN_BELOW: usize = 16;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Progress through the optional leading byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BomState {
    /// At the start of the body; `matched` BOM bytes have been held back so far.
    Expecting { matched: usize },
    /// The BOM was skipped, or the body did not start with one.
    Done,
}

/// Splits off the first terminated line: (line, its terminator byte, the bytes after it).
fn split_line(bytes: &[u8]) -> Option<(&[u8], u8, &[u8])> {
    let end = if bytes.len() < SCALAR_SCAN_BELOW {
        bytes.iter().position(|&b| b == b'\r' || b == b'\n')
    } else {
        memchr2(b'\r', b'\n', bytes)
    }?;
    let (line, from_terminator) = bytes.split_at_checked(end)?;
    let (&terminator, tail) = from_terminator.split_first()?;
    Some((line, terminator, tail))
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
    fn debug_hides_buffer_contents() {
        let mut parser = SseParser::new();
        parser.feed(b"data: secret", &mut |_| {}).unwrap();
        let debug = format!("{parser:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("partial_line_len: 12"), "{debug}");
    }
}
