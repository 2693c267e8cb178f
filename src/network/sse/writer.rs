//! [`SseWriter`]: serialises events, comments and `retry` blocks to `text/event-stream` bytes.
//!
//! What the format cannot carry is either normalised or refused:
//!
//! * Data may contain any text. Its line ends (CRLF, lone CR, LF) become separate `data:` lines,
//!   so a client parses them back as LF: **data line ends are normalised to LF**.
//! * An event type or ID containing CR or LF would end its line early and inject fields; an ID
//!   containing NUL is ignored by clients. Both are refused with an [`SseWriteError`] before
//!   anything is written.
//! * An ID must also come back: a client sends it as `Last-Event-ID` when it reconnects, and the
//!   server resumes from the header's value. An ID with a space or tab at either end (an HTTP
//!   server reads a field value without them, RFC 9110 §5.5), with a control character other
//!   than TAB (no header value carries one: kdnet's client sends no header, a server refuses a
//!   browser's request), or longer than [`SseWriter::MAX_ID_LEN`] (4 KiB: servers refuse
//!   request heads over 8 KiB) would come back changed, not at all, or as a refused reconnect.
//!   Such IDs are refused too, and [`SseWriter::resuming`] refuses a `Last-Event-ID` holding
//!   one (no writer sent it, so what the client holds is unknown). Every other ID a browser
//!   sends back as it is: inner spaces and tabs, colons, any non-ASCII text (UTF-8).
//!
//! * A `retry` time is written in whole milliseconds, as the format carries it: **retry times are
//!   truncated to milliseconds and capped at `u64::MAX` ms** (the most a client parses; kdnet's
//!   parser saturates there too).
//!
//! Every value is written after `: ` (colon and one space), so values that start with a space
//! keep it: the parser removes exactly one.
//!
//! # On a live connection
//!
//! The writer only appends text; sending it is the caller's. On a [`TcpSocket`], write each
//! block with [`TcpSocket::write`]: the socket queues what the kernel does not take **without
//! bound** (it accepts every byte), so a client that stops reading makes the queue grow with
//! every event. A server learns of it from [`TcpSocket::bytes_to_write`] (what waits) and
//! [`TcpSocket::bytes_written`] (which stops while the client stalls); nothing else reports it,
//! and no write fails. Check `bytes_to_write()` before writing an event, and skip, coalesce or
//! disconnect past a limit of your choosing:
//!
//! ```
//! use kdnet::EventLoop;
//! use kdnet::network::{TcpServer, TcpSocket};
//! use kdnet::network::sse::{SseEvent, SseWriter};
//! use std::{cell::RefCell, rc::Rc};
//!
//! /// Sends `event` unless the client is already `limit` bytes behind; false if skipped.
//! fn send_if_keeping_up(
//!     socket: &TcpSocket,
//!     writer: &mut SseWriter,
//!     event: &SseEvent,
//!     limit: usize,
//! ) -> bool {
//!     if socket.bytes_to_write() > limit {
//!         return false; // a live view sends the latest state once the client catches up
//!     }
//!     let mut block = Vec::new();
//!     writer.write_event(&mut block, event).expect("type and ID without line breaks or NUL");
//!     socket.write(&block).is_ok()
//! }
//!
//! let mut event_loop = EventLoop::new().unwrap();
//! let server = TcpServer::new().unwrap();
//! server.listen("127.0.0.1", 0).unwrap();
//! let peer: Rc<RefCell<Option<Rc<TcpSocket>>>> = Rc::default();
//! let p = peer.clone();
//! server
//!     .new_connection
//!     .connect(move |s: &Rc<TcpSocket>| *p.borrow_mut() = Some(s.clone()))
//!     .release();
//! let client = TcpSocket::new().unwrap();
//! client.connect_to_host("127.0.0.1", server.server_port().unwrap()).unwrap();
//! while peer.borrow().is_none() {
//!     event_loop.process_events(None).unwrap();
//! }
//! let socket = peer.borrow().clone().unwrap();
//! let mut writer = SseWriter::new();
//! let tick = SseEvent::new("tick", "1").with_id("1");
//! assert!(send_if_keeping_up(&socket, &mut writer, &tick, 64 * 1024));
//! ```
//!
//! Build a block only once it will be sent, as above: `write_event` records the ID it wrote as
//! the client's, so after a block built and then dropped the writer is wrong about the client's
//! ID (a later event carrying the dropped block's ID would go out without its `id` field and
//! reach the client with the older ID).
//!
//! [`TcpSocket`]: crate::network::TcpSocket
//! [`TcpSocket::write`]: crate::network::TcpSocket::write
//! [`TcpSocket::bytes_to_write`]: crate::network::TcpSocket::bytes_to_write
//! [`TcpSocket::bytes_written`]: crate::network::TcpSocket::bytes_written

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use memchr::memchr2;

use super::event::{SseEvent, is_custom_event_type};
use crate::network::decimal::{MAX_DECIMAL_LEN, decimal};

/// A growable buffer the writer appends UTF-8 text to.
///
/// Implemented for `Vec<u8>`, [`bytes::BytesMut`] and `String`; appending never allocates once
/// the caller's buffer has enough capacity.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseOutput, SseWriter};
///
/// /// Counts bytes instead of storing them.
/// struct Counter(usize);
///
/// impl SseOutput for Counter {
///     fn append_str(&mut self, text: &str) {
///         self.0 += text.len();
///     }
/// }
///
/// let mut counter = Counter(0);
/// SseWriter::new().write_comment(&mut counter, "keep-alive");
/// assert_eq!(counter.0, ": keep-alive\n".len());
/// ```
pub trait SseOutput {
    /// Appends `text`.
    fn append_str(&mut self, text: &str);
}

impl SseOutput for Vec<u8> {
    fn append_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

impl SseOutput for BytesMut {
    fn append_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

impl SseOutput for String {
    fn append_str(&mut self, text: &str) {
        self.push_str(text);
    }
}

/// Why an event could not be serialised (nothing was written when this is returned), or why
/// [`SseWriter::resuming`] refused a client's `Last-Event-ID`.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseEvent, SseWriteError, SseWriter};
///
/// let mut out = Vec::new();
/// let event = SseEvent::new("a\nb", "data");
/// let error = SseWriter::new().write_event(&mut out, &event).unwrap_err();
/// assert_eq!(error, SseWriteError::LineBreakInEventType { position: 1 });
/// assert!(out.is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseWriteError {
    /// The event type contains CR or LF, which would end the `event:` line early.
    LineBreakInEventType {
        /// Byte offset of the first CR or LF in the event type.
        position: usize,
    },
    /// The event ID contains CR or LF, which would end the `id:` line early.
    LineBreakInId {
        /// Byte offset of the first CR or LF in the ID.
        position: usize,
    },
    /// The event ID contains NUL; clients ignore an `id` field holding NUL.
    NulInId {
        /// Byte offset of the first NUL in the ID.
        position: usize,
    },
    /// The event ID contains a control character other than CR, LF, NUL and TAB (U+0001 to
    /// U+001F, U+007F), which no HTTP header value can carry: the client cannot send the ID
    /// back as `Last-Event-ID` (kdnet's client sends none, and a server refuses a browser's
    /// request holding one).
    ControlInId {
        /// Byte offset of the first such character in the ID.
        position: usize,
    },
    /// The event ID starts or ends with a space or tab, which an HTTP server removes from the
    /// `Last-Event-ID` header the client sends it back in (RFC 9110 §5.5): the server would
    /// resume from another ID than the client's.
    WhitespaceAroundId {
        /// Byte offset of the white space: 0 when the ID starts with it, else where the run of
        /// spaces and tabs that ends it starts.
        position: usize,
    },
    /// The event ID is longer than [`SseWriter::MAX_ID_LEN`]: the client sends it back in a
    /// request header, and servers commonly refuse request heads over 8 KiB (a `431` or `400`,
    /// which ends an `EventSource` or an `SseClient` for good).
    IdTooLong {
        /// The ID's length in bytes.
        len: usize,
        /// The most the writer accepts, [`SseWriter::MAX_ID_LEN`].
        limit: usize,
    },
}

impl fmt::Display for SseWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseWriteError::LineBreakInEventType { position } => write!(
                f,
                "event type contains a line break (CR or LF) at byte {position}, which an event stream cannot carry"
            ),
            SseWriteError::LineBreakInId { position } => write!(
                f,
                "event id contains a line break (CR or LF) at byte {position}, which an event stream cannot carry"
            ),
            SseWriteError::NulInId { position } => write!(
                f,
                "event id contains NUL at byte {position}, which clients ignore"
            ),
            SseWriteError::ControlInId { position } => write!(
                f,
                "event id contains a control character at byte {position}, which the client cannot send back in Last-Event-ID"
            ),
            SseWriteError::WhitespaceAroundId { position: 0 } => f.write_str(
                "event id starts with a space or tab (at byte 0), which the server does not get back: HTTP removes it from the Last-Event-ID header",
            ),
            SseWriteError::WhitespaceAroundId { position } => write!(
                f,
                "event id ends with spaces or tabs (from byte {position}), which the server does not get back: HTTP removes them from the Last-Event-ID header"
            ),
            SseWriteError::IdTooLong { len, limit } => write!(
                f,
                "event id is {len} bytes, more than the {limit} the client can send back in Last-Event-ID (servers refuse request heads over 8 KiB)"
            ),
        }
    }
}

impl std::error::Error for SseWriteError {}

/// Serialises events for one connection (servers, mock servers, tests).
///
/// A client's last event ID sticks until the stream changes it, so the writer remembers the ID
/// the client already has and writes an `id` field only when an event's
/// [`last_event_id`](SseEvent::last_event_id) differs from it (including a change back to `""`).
/// Parsing the output with a fresh [`SseParser`](crate::network::sse::SseParser) therefore gives
/// back the same events, with data line ends normalised to LF and retry times to whole
/// milliseconds (truncated, at most `u64::MAX` ms). Use one writer per connection.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseEvent, SseParser, SseWriter};
/// use std::time::Duration;
///
/// let mut writer = SseWriter::new();
/// let mut out = Vec::new();
/// writer.write_comment(&mut out, "keep-alive");
/// writer.write_event(&mut out, &SseEvent::new("delta", " two\r\nlines").with_id("1")).unwrap();
/// writer.write_event(&mut out, &SseEvent::new("message", "again").with_id("1")).unwrap();
/// writer.write_retry(&mut out, Duration::from_secs(5));
/// assert_eq!(
///     String::from_utf8(out.clone()).unwrap(),
///     ": keep-alive\n\
///      event: delta\nid: 1\ndata:  two\ndata: lines\n\n\
///      data: again\n\n\
///      retry: 5000\n\n"
/// );
///
/// let events = SseParser::new().parse_all(&out).unwrap();
/// assert_eq!(events[0], SseEvent::new("delta", " two\nlines").with_id("1"));
/// assert_eq!(events[1], SseEvent::new("message", "again").with_id("1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SseWriter {
    /// The last event ID the client holds after everything written so far.
    client_last_event_id: String,
}

impl SseWriter {
    /// The longest event ID the writer accepts, in bytes (4 KiB). The client sends the ID back
    /// in a `Last-Event-ID` request header, and servers commonly refuse request heads over 8 KiB
    /// (nginx, Apache, Tomcat, Jetty): a longer ID would make the reconnect a `431` or `400`,
    /// which ends an `EventSource` or an `SseClient` for good. Half of that leaves room for the
    /// request's other fields (cookies, `Authorization`).
    ///
    /// The limit is fixed: the header crosses every proxy between the client and the server,
    /// whose limits the server does not know. A resume point longer than this belongs on the
    /// server, under a short ID the events carry.
    pub const MAX_ID_LEN: usize = 4096;

    /// A writer for a fresh connection whose client has no last event ID.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::SseWriter;
    ///
    /// assert_eq!(SseWriter::new().client_last_event_id(), "");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer for a client that reconnected with `Last-Event-ID: last_event_id`; events carrying
    /// that same ID are written without an `id` field.
    ///
    /// `last_event_id` must be exactly the ID the client holds: the header's value as an HTTP
    /// server reads it (without surrounding spaces and tabs). Every ID the writer accepts comes
    /// back so (see [`SseWriteError`]); an ID some other writer gave the client may not, and the
    /// writer then believes the client holds another ID than it does: an event carrying the
    /// believed ID reaches the client with the client's older one.
    ///
    /// # Errors
    ///
    /// The header is the peer's: an ID that [`write_event`](Self::write_event) would refuse to
    /// send (a control character, a space or tab at either end, over [`MAX_ID_LEN`](Self::MAX_ID_LEN)
    /// bytes) is refused here too, with the same error, naming the first offending byte. No
    /// writer gave the client such an ID, so the writer cannot know what the client holds (and an
    /// event carrying it would otherwise go out without its `id` field, unchecked). Answer such a
    /// request as a new client's ([`new`](Self::new), and an event with an ID or a
    /// [`write_id`](Self::write_id) before any event without one, so the client's ID is known
    /// again), or refuse it.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::{SseEvent, SseWriteError, SseWriter};
    ///
    /// let mut out = String::new();
    /// let mut writer = SseWriter::resuming("41").unwrap();
    /// writer.write_event(&mut out, &SseEvent::new("", "x").with_id("42")).unwrap();
    /// assert_eq!(out, "id: 42\ndata: x\n\n");
    /// assert_eq!(writer.client_last_event_id(), "42");
    ///
    /// // A header value the server did not trim, or one no writer sent.
    /// let error = SseWriter::resuming("41 ").unwrap_err();
    /// assert_eq!(error, SseWriteError::WhitespaceAroundId { position: 2 });
    /// ```
    pub fn resuming(last_event_id: &str) -> Result<Self, SseWriteError> {
        check_id(last_event_id)?;
        Ok(SseWriter {
            client_last_event_id: last_event_id.to_owned(),
        })
    }

    /// The last event ID the client holds once it has parsed everything written so far.
    pub fn client_last_event_id(&self) -> &str {
        &self.client_last_event_id
    }

    /// Appends one event block: `event` (omitted for `message`), `id` (when it changes), `retry`
    /// (when the event carries one), one `data` line per data line, then the blank line.
    ///
    /// Fails without writing anything if the event type or ID cannot be carried, or if the ID
    /// would not come back in `Last-Event-ID` (see [`SseWriteError`]). The error names the first
    /// offending byte. An ID equal to the one the client holds is not written, and not checked.
    pub fn write_event(
        &mut self,
        out: &mut impl SseOutput,
        event: &SseEvent,
    ) -> Result<(), SseWriteError> {
        let event_type = event.event_type();
        if let Some(position) = memchr2(b'\r', b'\n', event_type.as_bytes()) {
            return Err(SseWriteError::LineBreakInEventType { position });
        }
        let id = event.last_event_id();
        // An ID the client holds already is not written, and so not checked: it was checked when
        // it was written, or by `resuming`.
        let new_id = id != self.client_last_event_id;
        if new_id {
            check_id(id)?;
        }

        if is_custom_event_type(event_type) {
            write_field(out, "event", event_type);
        }
        if new_id {
            write_field(out, "id", id);
            self.client_last_event_id.clear();
            self.client_last_event_id.push_str(id);
        }
        if let Some(retry) = event.retry() {
            write_retry_field(out, retry);
        }
        for line in DataLines::new(event.data()) {
            write_field(out, "data", line);
        }
        out.append_str("\n");
        Ok(())
    }

    /// Appends a block holding only `id` (a checkpoint): the client's last event ID becomes
    /// `id` without an event being dispatched (WHATWG: a block without data still sets the last
    /// event ID), so a reconnect resumes from there. An empty `id` clears it. The block is
    /// written even when the client already holds `id`.
    ///
    /// Fails without writing anything if the ID cannot be carried or would not come back in
    /// `Last-Event-ID` (see [`SseWriteError`]).
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::{SseParser, SseWriter};
    ///
    /// let mut out = Vec::new();
    /// let mut writer = SseWriter::new();
    /// writer.write_id(&mut out, "checkpoint-7").unwrap();
    /// assert_eq!(writer.client_last_event_id(), "checkpoint-7");
    ///
    /// let mut parser = SseParser::new();
    /// assert!(parser.parse_all(&out).unwrap().is_empty());
    /// assert_eq!(parser.last_event_id(), "checkpoint-7");
    /// assert!(writer.write_id(&mut out, "a\nb").is_err());
    /// ```
    pub fn write_id(&mut self, out: &mut impl SseOutput, id: &str) -> Result<(), SseWriteError> {
        check_id(id)?;
        write_field(out, "id", id);
        out.append_str("\n");
        self.client_last_event_id.clear();
        self.client_last_event_id.push_str(id);
        Ok(())
    }

    /// Appends a comment (`: keep-alive`). Clients ignore comments, so they are the usual way to
    /// keep idle connections open; a comment with line breaks becomes several comment lines.
    pub fn write_comment(&self, out: &mut impl SseOutput, comment: &str) {
        for line in DataLines::new(comment) {
            write_field(out, "", line);
        }
    }

    /// Appends a block holding only `retry` (whole milliseconds, truncated and capped at
    /// `u64::MAX` ms), which sets the client's reconnection time without dispatching an event.
    ///
    /// A time under 1 ms is written as `retry: 0` (reconnect at once). A huge time is not a way
    /// to stop reconnects: kdnet's [`SseClient`](crate::network::sse::SseClient) waits it in
    /// full, but a client that waits with a JavaScript timer (Node's `undici` `EventSource` uses
    /// `setTimeout`) turns anything over 2³¹ − 1 ms (about 24.8 days) into 1 ms and reconnects
    /// at once. To stop a client for good, answer its next request with `204 No Content`.
    pub fn write_retry(&self, out: &mut impl SseOutput, retry: Duration) {
        write_retry_field(out, retry);
        out.append_str("\n");
    }
}

/// Refuses an ID that would end its line early (injecting fields), that clients ignore, or that
/// a client cannot send back intact in `Last-Event-ID`; the error names the first offending
/// byte, whatever its kind.
fn check_id(id: &str) -> Result<(), SseWriteError> {
    let bytes = id.as_bytes();
    if let [b' ' | b'\t', ..] = bytes {
        return Err(SseWriteError::WhitespaceAroundId { position: 0 });
    }
    // What no header value carries: the C0 controls but TAB, and DEL.
    if let Some(position) = bytes
        .iter()
        .position(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(match bytes[position] {
            b'\r' | b'\n' => SseWriteError::LineBreakInId { position },
            0 => SseWriteError::NulInId { position },
            _ => SseWriteError::ControlInId { position },
        });
    }
    // (A trailing run holds only spaces and tabs: no control character can follow it.)
    let kept = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |last| last + 1);
    if kept < bytes.len() {
        return Err(SseWriteError::WhitespaceAroundId { position: kept });
    }
    if bytes.len() > SseWriter::MAX_ID_LEN {
        return Err(SseWriteError::IdTooLong {
            len: bytes.len(),
            limit: SseWriter::MAX_ID_LEN,
        });
    }
    Ok(())
}

/// Writes `name: value`, or `name:` when the value is empty (a comment has an empty name).
fn write_field(out: &mut impl SseOutput, name: &str, value: &str) {
    out.append_str(name);
    if value.is_empty() {
        out.append_str(":\n");
        return;
    }
    out.append_str(": ");
    out.append_str(value);
    out.append_str("\n");
}

fn write_retry_field(out: &mut impl SseOutput, retry: Duration) {
    // Capped: a client parses at most u64 milliseconds (one parsing into u64 would drop a longer
    // value instead of saturating).
    let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    write_field(out, "retry", decimal(millis, &mut [0; MAX_DECIMAL_LEN]));
}

/// The lines of a text split at CRLF, lone CR and LF; `n` line ends give `n + 1` lines.
struct DataLines<'a> {
    rest: Option<&'a str>,
}

impl<'a> DataLines<'a> {
    fn new(text: &'a str) -> Self {
        DataLines { rest: Some(text) }
    }
}

impl<'a> Iterator for DataLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let Some(end) = memchr2(b'\r', b'\n', rest.as_bytes()) else {
            self.rest = None;
            return Some(rest);
        };
        // CR and LF are ASCII, so these offsets are char boundaries.
        let line = rest.get(..end).unwrap_or_default();
        let terminator_len = if rest.as_bytes().get(end..end + 2) == Some(b"\r\n") {
            2
        } else {
            1
        };
        self.rest = Some(rest.get(end + terminator_len..).unwrap_or_default());
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        DataLines::new(text).collect()
    }

    #[test]
    fn data_lines_split_at_every_kind_of_line_end() {
        assert_eq!(lines(""), [""]);
        assert_eq!(lines("a"), ["a"]);
        assert_eq!(lines("a\nb\rc\r\nd"), ["a", "b", "c", "d"]);
        assert_eq!(lines("\r\n"), ["", ""]);
        assert_eq!(lines("\n\r"), ["", "", ""]);
        assert_eq!(lines("é\r"), ["é", ""]);
    }

    #[test]
    fn retry_is_written_in_whole_milliseconds() {
        let writer = SseWriter::new();
        let mut out = String::new();
        writer.write_retry(&mut out, Duration::from_micros(1_999));
        writer.write_retry(&mut out, Duration::ZERO);
        writer.write_retry(&mut out, Duration::MAX);
        assert_eq!(
            out,
            format!("retry: 1\n\nretry: 0\n\nretry: {}\n\n", u64::MAX)
        );
    }

    #[test]
    fn every_output_type_gets_the_same_bytes() {
        let event = SseEvent::new("t", "d").with_id("i");
        let mut vec = Vec::new();
        let mut bytes = BytesMut::new();
        let mut string = String::new();
        SseWriter::new().write_event(&mut vec, &event).unwrap();
        SseWriter::new().write_event(&mut bytes, &event).unwrap();
        SseWriter::new().write_event(&mut string, &event).unwrap();
        assert_eq!(string, "event: t\nid: i\ndata: d\n\n");
        assert_eq!(vec, string.as_bytes());
        assert_eq!(&bytes[..], string.as_bytes());
    }

    #[test]
    fn errors_name_the_field_and_position() {
        let mut out = Vec::new();
        let mut writer = SseWriter::new();
        let cases = [
            (
                SseEvent::new("ok", "").with_id("a\rb"),
                SseWriteError::LineBreakInId { position: 1 },
            ),
            (
                SseEvent::new("ok", "").with_id("ab\0"),
                SseWriteError::NulInId { position: 2 },
            ),
            (
                SseEvent::new("x\r", ""),
                SseWriteError::LineBreakInEventType { position: 1 },
            ),
            // The first offending byte, whatever its kind.
            (
                SseEvent::new("ok", "").with_id("a\0b\n"),
                SseWriteError::NulInId { position: 1 },
            ),
            (
                SseEvent::new("ok", "").with_id("a\u{1b}\r"),
                SseWriteError::ControlInId { position: 1 },
            ),
            (
                SseEvent::new("ok", "").with_id("a\u{7f}"),
                SseWriteError::ControlInId { position: 1 },
            ),
            (
                SseEvent::new("ok", "").with_id(" a\n"),
                SseWriteError::WhitespaceAroundId { position: 0 },
            ),
            (
                SseEvent::new("ok", "").with_id("a\u{1} \t"),
                SseWriteError::ControlInId { position: 1 },
            ),
            (
                SseEvent::new("ok", "").with_id("a b \t"),
                SseWriteError::WhitespaceAroundId { position: 3 },
            ),
            (
                SseEvent::new("ok", "").with_id("\t"),
                SseWriteError::WhitespaceAroundId { position: 0 },
            ),
            (
                SseEvent::new("ok", "").with_id(&"x".repeat(SseWriter::MAX_ID_LEN + 1)),
                SseWriteError::IdTooLong {
                    len: SseWriter::MAX_ID_LEN + 1,
                    limit: SseWriter::MAX_ID_LEN,
                },
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(writer.write_event(&mut out, &event), Err(expected));
        }
        assert!(out.is_empty());
        assert_eq!(writer.client_last_event_id(), "");
        assert_eq!(
            SseWriteError::NulInId { position: 2 }.to_string(),
            "event id contains NUL at byte 2, which clients ignore"
        );
        assert_eq!(
            SseWriteError::LineBreakInId { position: 1 }.to_string(),
            "event id contains a line break (CR or LF) at byte 1, which an event stream cannot carry"
        );
        assert_eq!(
            SseWriteError::ControlInId { position: 3 }.to_string(),
            "event id contains a control character at byte 3, which the client cannot send back in Last-Event-ID"
        );
        assert_eq!(
            SseWriteError::WhitespaceAroundId { position: 0 }.to_string(),
            "event id starts with a space or tab (at byte 0), which the server does not get back: HTTP removes it from the Last-Event-ID header"
        );
        assert_eq!(
            SseWriteError::WhitespaceAroundId { position: 2 }.to_string(),
            "event id ends with spaces or tabs (from byte 2), which the server does not get back: HTTP removes them from the Last-Event-ID header"
        );
        assert_eq!(
            SseWriteError::IdTooLong {
                len: 5000,
                limit: 4096
            }
            .to_string(),
            "event id is 5000 bytes, more than the 4096 the client can send back in Last-Event-ID (servers refuse request heads over 8 KiB)"
        );
        assert_eq!(
            SseWriteError::LineBreakInEventType { position: 0 }.to_string(),
            "event type contains a line break (CR or LF) at byte 0, which an event stream cannot carry"
        );
    }

    #[test]
    fn ids_a_browser_sends_back_as_they_are_are_accepted() {
        let mut out = String::new();
        let mut writer = SseWriter::new();
        let longest = "x".repeat(SseWriter::MAX_ID_LEN);
        for id in [
            "",
            "7",
            "a b\tc",
            "urn:uuid:1",
            "é😀\u{feff}",
            "\u{a0}\u{85}\u{3000}",
            &longest,
        ] {
            writer
                .write_event(&mut out, &SseEvent::new("", "x").with_id(id))
                .unwrap();
            assert_eq!(writer.client_last_event_id(), id);
            writer.write_id(&mut out, id).unwrap();
        }
        assert_eq!(
            writer.write_id(&mut out, "7 "),
            Err(SseWriteError::WhitespaceAroundId { position: 1 })
        );
    }

    #[test]
    fn id_is_written_only_when_it_changes_and_reset_is_explicit() {
        let mut out = String::new();
        let mut writer = SseWriter::new();
        for id in ["", "1", "1", ""] {
            writer
                .write_event(&mut out, &SseEvent::new("", "x").with_id(id))
                .unwrap();
        }
        assert_eq!(
            out,
            "data: x\n\nid: 1\ndata: x\n\ndata: x\n\nid:\ndata: x\n\n"
        );
    }

    #[test]
    fn comments_with_line_breaks_become_several_comment_lines() {
        let mut out = String::new();
        SseWriter::new().write_comment(&mut out, "a\r\n\nb");
        assert_eq!(out, ": a\n:\n: b\n");
    }
}
