//! A randomised, model-based test of the server side of server-sent events: a kdnet `TcpServer`
//! (plain or TLS, the test PKI's certificate) on the same loop as one to three `SseClient`s (each
//! with its own `HttpClient` or all sharing one) answers each request with a `text/event-stream`
//! that `SseWriter` writes, and the clients' slots must see what a plain reference parser
//! (written here from the WHATWG rules, `/work/shared/reference/sse-spec.md` §1.2–1.4) reads from
//! the bytes the server wrote.
//!
//! Each client has its own path and the same script: one segment per connection, each a list
//! of writer calls (events whose type, ID and data are drawn from text with CR, LF, CRLF, NUL,
//! spaces, tabs, colons, a BOM, non-BMP and other control characters, some empty, some data
//! lines of 70–200 KiB, IDs up to `SseWriter::MAX_ID_LEN`; comments; `retry` blocks and event
//! retries of 0, sub-millisecond, 1–40 ms and huge times up to `Duration::MAX`; `id`-only
//! blocks, written by hand (with IDs the writer would refuse too), after which the segment goes
//! on with `SseWriter::resuming`; events the writer must refuse), written in
//! pieces cut at random offsets (one per `bytes_written`, so a read holds many events or part
//! of one), framed by the close or by chunks, some without their last blank line, then closed
//! (or, chunked, left open for the next request, which the client's pool may send on it).
//! After the script the server answers `204` (the documented stop). The server reads
//! `Last-Event-ID` as an HTTP server does (surrounding whitespace trimmed, RFC 9110 §5.5) and
//! resumes with `SseWriter::resuming`. In some cases a `message_received` slot of one client
//! calls `disconnect()` or `connect()` at its n-th event, in the middle of a read's batch (or
//! of the flushed final event); the clients flush an unterminated final event or not.
//!
//! The model: the writer refuses an event type with CR/LF, and a new ID that would not come back
//! in `Last-Event-ID` (CR/LF, NUL, another control character, a space or tab at either end, over
//! `SseWriter::MAX_ID_LEN` bytes) with the documented error (`id_refusal`: the first offending
//! byte whatever its kind, a message naming the field) before writing anything, and its ID
//! tracking stands; the reference reading of every connection's bytes
//! gives back the events the writer was given (type, data with line ends as LF, last event ID,
//! retry truncated to whole ms, capped; an ID the client holds but the trimmed header does not
//! carry is followed as `resuming` documents); each client's slots see exactly the reference's
//! events of each connection, in order, none lost or repeated, each with `last_event_id()`
//! equal to its event's, state `Open`, and `reconnection_time()` equal to the last `retry`
//! before it; a reconnect sends `Last-Event-ID` equal to the reference's last event ID at the
//! end of the previous connection (none while it is empty or holds a control character other
//! than TAB); each reconnect's `state_changed(Connecting)` sees the reference's reconnection
//! time, and after a connection that delivered events the next request comes no sooner; a
//! slot's `disconnect()` ends delivery at once (no later event, ID or `retry` of that read, no
//! further request), a slot's `connect()` ends the old stream's delivery and resumes from the
//! slot's event's ID; at the end each client's `last_event_id()` and `reconnection_time()` are
//! the model's.
//!
//! Also here: a stalled reader (a client that stops reading) and what a server learns from
//! `TcpSocket` when its writes back up; a huge `retry` waited in full; a mid-batch stop by name;
//! every ID the writer accepts coming back intact in a kdnet client's `Last-Event-ID`.
//!
//! `PROPTEST_CASES` sets the number of cases (default 16, about 2 s in a debug build).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpRequest};
use kdnet::network::sse::{ReadyState, SseClient, SseEvent, SseWriteError, SseWriter};
use kdnet::network::{TcpServer, TcpSocket, TlsServerConfig};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use support::model::{Counter, config, finish_counted};
use support::run_until;

// ---- the reference parser (WHATWG §9.2.6) ----------------------------------------------------

/// One event as the reference dispatches it.
#[derive(Debug, Clone, PartialEq)]
struct RefEvent {
    event_type: String,
    data: String,
    id: String,
    /// A valid `retry` in the event's own block.
    retry: Option<u64>,
    /// The reconnection time in effect at dispatch (the last valid `retry` so far).
    reconnection: Option<u64>,
}

/// The reference's reading of one connection's body.
#[derive(Debug, Clone, Default)]
struct Reading {
    events: Vec<RefEvent>,
    /// The last event ID string at the end of the body (an `id` in a final block without its
    /// blank line counts only when that block is flushed).
    last_id: String,
    /// The last valid `retry` of the body, if any.
    retry: Option<u64>,
}

/// Reads a whole body by the WHATWG rules, starting from the last event ID `last_id` and the
/// reconnection time `reconnection`.
fn read_body(body: &[u8], last_id: &str, reconnection: Option<u64>) -> Reading {
    read_stream(body, last_id, reconnection, false)
}

/// [`read_body`], and with `flush` a final block whose blank line never came is dispatched as
/// if it had (`SseClient::set_flush_unterminated_event`).
fn read_stream(body: &[u8], last_id: &str, reconnection: Option<u64>, flush: bool) -> Reading {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut rest = text;
    // Only complete lines: an unterminated last line is never processed.
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    if flush {
        // (The writer's bodies end with a line end: no partial line is left.)
        lines.push("");
    }
    let mut out = Reading {
        last_id: last_id.to_owned(),
        retry: reconnection,
        ..Reading::default()
    };
    let (mut data, mut event_type, mut id_buffer) =
        (String::new(), String::new(), last_id.to_owned());
    let mut block_retry = None;
    for line in lines {
        if line.is_empty() {
            // Dispatch: the ID first, even without data.
            out.last_id = id_buffer.clone();
            if !data.is_empty() {
                data.pop();
                out.events.push(RefEvent {
                    event_type: if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    },
                    data: std::mem::take(&mut data),
                    id: out.last_id.clone(),
                    retry: block_retry,
                    reconnection: out.retry,
                });
            }
            data.clear();
            event_type.clear();
            block_retry = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match name {
            "event" => value.clone_into(&mut event_type),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Our choice for values past u64: saturate (kdnet's parser does).
                let ms = value
                    .bytes()
                    .try_fold(0u64, |n, d| {
                        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                    })
                    .unwrap_or(u64::MAX);
                out.retry = Some(ms);
                block_retry = Some(ms);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_reference_reads_the_specs_examples() {
    let r = read_body(b"data: YHOO\ndata: +2\ndata: 10\n\n", "", None);
    assert_eq!(r.events[0].data, "YHOO\n+2\n10");
    let r = read_body(b"\xef\xbb\xbfdata\n\ndata\ndata\n\ndata:", "", None);
    let data: Vec<&str> = r.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["", "\n"]);
    let r = read_body(
        b"id: 1\r\rretry: 07\rdata:x\r\n\r\nid\n\nid: 2\0\n\n",
        "0",
        None,
    );
    assert_eq!(r.last_id, "");
    assert_eq!(r.retry, Some(7));
    assert_eq!(r.events[0].id, "1");
    assert_eq!(r.events[0].retry, Some(7));
}

// ---- the script --------------------------------------------------------------------------------

/// How an event's ID is chosen.
#[derive(Debug, Clone)]
enum IdChoice {
    /// The ID the client holds already (no `id` field is written).
    Same,
    /// A new ID (may equal the current one by chance).
    New(String),
}

/// One writer call.
#[derive(Debug, Clone)]
enum Op {
    Event {
        event_type: String,
        data: String,
        id: IdChoice,
        retry: Option<Duration>,
    },
    Comment(String),
    Retry(Duration),
    /// `id: <id>` and the blank line, written by hand (as another writer would); the rest of the
    /// segment goes through `SseWriter::resuming(id)`, or, when it refuses the ID, through a new
    /// writer that first clears the client's ID with `write_id("")` (as `resuming` documents).
    IdOnly(String),
    /// An event the writer must refuse.
    Refused {
        event_type: String,
        id: String,
        expected: SseWriteError,
    },
}

#[derive(Debug, Clone)]
struct Segment {
    ops: Vec<Op>,
    chunked: bool,
    /// Cut points (per mille of the body) for the pieces it is written in.
    cuts: Vec<u16>,
    /// The body's last blank line is left out (a gateway that drops it).
    unterminated: bool,
    /// A chunked answer leaves the connection open for the next request.
    keep_alive: bool,
}

/// A slot's call at its client's n-th event (counted over all its connections).
#[derive(Debug, Clone, Copy)]
enum Action {
    Disconnect,
    Connect,
}

#[derive(Debug, Clone)]
struct Case {
    tls: bool,
    clients: usize,
    shared_http: bool,
    /// `set_flush_unterminated_event`.
    flush: bool,
    segments: Vec<Segment>,
    trigger: Option<(usize, usize, Action)>,
}

fn text(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(alphabet), 0..=max)
        .prop_map(|parts| parts.concat())
}

const DATA_CHARS: &[&str] = &[
    "a", "b", " ", "  ", "\r", "\n", "\r\n", "\0", "é", "😀", ":", "\u{feff}", "\t", "\u{1}",
    "data: x", "\n\n",
];
const TYPE_CHARS: &[&str] = &["t", "message", " ", "\0", "é", "😀", ":", "\t", "\u{feff}"];
/// IDs written by hand (`id`-only blocks): anything a server may send.
const ID_CHARS: &[&str] = &["1", "7", " ", "\t", "é", "😀", ":", "\u{1}", "\u{7f}", "id"];
/// IDs given to the writer: no control characters (spaces and tabs at either end are wrapped).
const EVENT_ID_CHARS: &[&str] = &[
    "1", "7", " ", "\t", "é", "😀", ":", "\u{85}", "\u{a0}", "id",
];
/// What the writer refuses in an ID.
const BAD_ID_PARTS: &[&str] = &[
    "\r", "\n", "\r\n", "\0", "\u{1}", "\u{1b}", "\u{1f}", "\u{7f}", " ", "\t", "\x0b",
];

/// The refusal the writer's docs promise for an `id` it is asked to write (one the client does
/// not hold already): at the first offending byte, a space or tab that starts it, a CR or LF,
/// a NUL, another control character (U+0001–U+001F but TAB, U+007F), or the start of the spaces
/// and tabs that end it; else an ID over `SseWriter::MAX_ID_LEN` bytes.
fn id_refusal(id: &str) -> Option<SseWriteError> {
    let trailing = id.trim_end_matches([' ', '\t']).len();
    for (position, c) in id.char_indices() {
        let ws = c == ' ' || c == '\t';
        if ws && (position == 0 || position == trailing) {
            return Some(SseWriteError::WhitespaceAroundId { position });
        }
        match c {
            '\r' | '\n' => return Some(SseWriteError::LineBreakInId { position }),
            '\0' => return Some(SseWriteError::NulInId { position }),
            '\u{1}'..='\u{1f}' | '\u{7f}' if c != '\t' => {
                return Some(SseWriteError::ControlInId { position });
            }
            _ => {}
        }
    }
    (id.len() > SseWriter::MAX_ID_LEN).then_some(SseWriteError::IdTooLong {
        len: id.len(),
        limit: SseWriter::MAX_ID_LEN,
    })
}

/// The ID a client holds after an `Op::IdOnly(id)` block and what follows it: `id`, unless
/// `resuming` refuses it and the segment clears it with `write_id("")`.
fn held_after_id_only(id: &str) -> &str {
    if id_refusal(id).is_some() { "" } else { id }
}

/// An ID the writer accepts, from `EVENT_ID_CHARS`.
fn event_id() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => text(EVENT_ID_CHARS, 3).prop_map(|id| {
            if id.starts_with([' ', '\t']) || id.ends_with([' ', '\t']) {
                format!("<{id}>")
            } else {
                id
            }
        }),
        1 => (1usize..=SseWriter::MAX_ID_LEN).prop_map(|n| format!("{}7", "x".repeat(n - 1))),
    ]
}

fn retry_time() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => (0u64..=40).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => (1u64..1000).prop_map(Duration::from_micros),
        1 => (1u32..1_000_000).prop_map(|n| Duration::from_nanos(u64::from(n) + 3_000_000)),
        1 => Just(Duration::MAX),
        1 => Just(Duration::from_millis(u64::MAX)),
        1 => (1u64..u64::MAX).prop_map(Duration::from_secs),
    ]
}

fn data() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => text(DATA_CHARS, 6),
        1 => (70_000usize..200_000, text(DATA_CHARS, 3))
            .prop_map(|(n, tail)| format!("{}{tail}", "x".repeat(n))),
    ]
}

fn refused() -> impl Strategy<Value = Op> {
    (
        text(TYPE_CHARS, 3),
        text(ID_CHARS, 3),
        0usize..4,
        proptest::collection::vec(proptest::sample::select(BAD_ID_PARTS), 1..3),
        text(ID_CHARS, 3),
        0usize..5000,
    )
        .prop_filter_map(
            "an ID with inner spaces or tabs only is no refusal",
            |(before, id, which, bad, after, long)| {
                // Where the bad bytes go: the type (only CR/LF refuse there), the ID (at one
                // place, or spread), or a long ID's end.
                let (event_type, id) = match which {
                    0 => {
                        let bad = bad[0];
                        let bad = if "\r\n".contains(bad) { bad } else { "\n" };
                        let event_type = format!("{before}{bad}{after}");
                        let position = before.len();
                        return Some(Op::Refused {
                            event_type,
                            id,
                            expected: SseWriteError::LineBreakInEventType { position },
                        });
                    }
                    1 => (before, format!("{id}{}{after}", bad.concat())),
                    2 => (before, format!("{}{id}{after}", bad.join(&after))),
                    _ => (
                        before,
                        format!("{}{id}{}", "x".repeat(SseWriter::MAX_ID_LEN - 6 + long), {
                            if long % 3 == 0 {
                                bad.concat()
                            } else {
                                String::new()
                            }
                        }),
                    ),
                };
                let expected = id_refusal(&id)?;
                Some(Op::Refused {
                    event_type,
                    id,
                    expected,
                })
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let id = prop_oneof![
        2 => Just(IdChoice::Same),
        3 => event_id().prop_map(IdChoice::New),
    ];
    prop_oneof![
        8 => (text(TYPE_CHARS, 3), data(), id, proptest::option::weighted(0.2, retry_time()))
            .prop_map(|(event_type, data, id, retry)| Op::Event { event_type, data, id, retry }),
        1 => text(DATA_CHARS, 5).prop_map(Op::Comment),
        1 => retry_time().prop_map(Op::Retry),
        1 => text(ID_CHARS, 3).prop_map(Op::IdOnly),
        1 => refused(),
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        proptest::collection::vec(op(), 0..10),
        any::<bool>(),
        proptest::collection::vec(0u16..1000, 0..6),
        proptest::bool::weighted(0.3),
        any::<bool>(),
    )
        .prop_map(|(ops, chunked, cuts, unterminated, keep_alive)| Segment {
            ops,
            chunked,
            cuts,
            unterminated,
            keep_alive,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        1usize..=3,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(segment(), 1..4),
        proptest::option::weighted(
            0.6,
            (
                0usize..3,
                0usize..12,
                prop_oneof![Just(Action::Disconnect), Just(Action::Connect)],
            ),
        ),
    )
        .prop_map(
            |(tls, clients, shared_http, flush, segments, trigger)| Case {
                tls,
                clients,
                shared_http,
                flush,
                segments,
                trigger: trigger.map(|(c, n, a)| (c % clients, n, a)),
            },
        )
}

// ---- the server --------------------------------------------------------------------------------

/// The longest reconnection time a segment may end with (a longer one is followed by a short
/// `retry` block, or the case would wait for it).
const LONGEST_WAIT_MS: u64 = 100;

/// Writes one segment with `writer`, checking each refusal as it comes; returns the body.
fn write_segment(
    segment: &Segment,
    writer: &mut SseWriter,
    reconnection: Option<u64>,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut last_retry = reconnection;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    for op in &segment.ops {
        match op {
            Op::Event {
                event_type,
                data,
                id,
                retry,
            } => {
                let id = match id {
                    IdChoice::Same => writer.client_last_event_id().to_owned(),
                    IdChoice::New(id) => id.clone(),
                };
                let mut event = SseEvent::new(event_type, data.as_str()).with_id(&id);
                if let Some(retry) = retry {
                    event = event.with_retry(*retry);
                    last_retry = Some(ms(*retry));
                }
                writer
                    .write_event(&mut body, &event)
                    .map_err(|e| format!("{event:?} refused: {e}"))?;
            }
            Op::Comment(comment) => writer.write_comment(&mut body, comment),
            Op::Retry(retry) => {
                writer.write_retry(&mut body, *retry);
                last_retry = Some(ms(*retry));
            }
            Op::IdOnly(id) => {
                body.extend_from_slice(format!("id: {id}\n\n").as_bytes());
                *writer = match SseWriter::resuming(id) {
                    Ok(resumed) if id_refusal(id).is_none() => resumed,
                    Err(e) if Some(e) == id_refusal(id) => {
                        let mut fresh = SseWriter::new();
                        fresh
                            .write_id(&mut body, "")
                            .map_err(|e| format!("write_id(\"\"): {e}"))?;
                        fresh
                    }
                    got => {
                        return Err(format!(
                            "resuming({id:?}): {:?}, expected {:?}",
                            got.map(|w| w.client_last_event_id().to_owned()),
                            id_refusal(id)
                        ));
                    }
                };
            }
            Op::Refused {
                event_type,
                id,
                expected,
            } => {
                if *id == writer.client_last_event_id() {
                    // (An `id`-only block written by hand gave the client this ID: the writer
                    // does not write it again, and does not check it.)
                    continue;
                }
                let before = (body.len(), writer.client_last_event_id().to_owned());
                let event = SseEvent::new(event_type, "data").with_id(id);
                let got = writer.write_event(&mut body, &event);
                if got != Err(*expected) {
                    return Err(format!("{event:?}: {got:?}, expected {expected:?}"));
                }
                let message = expected.to_string();
                let field = match expected {
                    SseWriteError::LineBreakInEventType { .. } => "event type",
                    _ => "event id",
                };
                if !message.starts_with(field) {
                    return Err(format!("{expected:?} says {message:?}"));
                }
                if (body.len(), writer.client_last_event_id().to_owned()) != before {
                    return Err(format!("{event:?}: refused, but something changed"));
                }
                COUNTS.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if last_retry.is_some_and(|ms| ms > LONGEST_WAIT_MS) {
        writer.write_retry(&mut body, Duration::from_millis(2));
    }
    if segment.unterminated && body.ends_with(b"\n\n") {
        body.pop();
    }
    Ok(body)
}

/// What the writer was asked to write, as a client should read it: the model's side of the
/// round trip (independent of the reference parser).
fn intended(segment: &Segment, client_id: &str) -> Vec<(String, String, String, Option<u64>)> {
    let mut id = client_id.to_owned();
    let mut out = Vec::new();
    for op in &segment.ops {
        if let Op::IdOnly(new) = op {
            held_after_id_only(new).clone_into(&mut id);
        }
        if let Op::Event {
            event_type,
            data,
            id: choice,
            retry,
        } = op
        {
            if let IdChoice::New(new) = choice {
                new.clone_into(&mut id);
            }
            let event_type = if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type.clone()
            };
            let data = data.replace("\r\n", "\n").replace('\r', "\n");
            let retry = retry.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            out.push((event_type, data, id.clone(), retry));
        }
    }
    out
}

/// One connection the server answered.
#[derive(Debug, Clone)]
struct Served {
    client: usize,
    /// The `Last-Event-ID` header as received (raw, before trimming), if any.
    last_event_id: Option<String>,
    /// Which segment (None: the closing 204).
    segment: Option<usize>,
    body: Vec<u8>,
    at: Instant,
}

/// Per client: connections so far, and the reconnection time its last segment left.
type Progress = HashMap<usize, (usize, Option<u64>)>;

struct Server {
    server: Rc<TcpServer>,
    served: Rc<RefCell<Vec<Served>>>,
    failures: Rc<RefCell<Vec<String>>>,
    _peers: Rc<RefCell<Vec<Rc<TcpSocket>>>>,
}

fn server_config() -> std::sync::Arc<rustls::ServerConfig> {
    let pki = support::certs::test_pki();
    TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap()
}

/// The header `name` of a request head, raw (only the one space after the colon removed).
fn raw_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name)
            .then(|| v.strip_prefix(' ').unwrap_or(v))
    })
}

/// Splits `body` into pieces at the segment's cut points, framed.
fn pieces(segment: &Segment, body: &[u8]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = segment
        .cuts
        .iter()
        .map(|&c| body.len() * usize::from(c) / 1000)
        .collect();
    cuts.push(body.len());
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts {
        if cut <= from {
            continue;
        }
        let piece = &body[from..cut];
        from = cut;
        if segment.chunked {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
            out.push(framed);
        } else {
            out.push(piece.to_vec());
        }
    }
    if segment.chunked {
        out.push(b"0\r\n\r\n".to_vec());
    }
    out
}

/// One accepted connection.
#[derive(Default)]
struct Conn {
    /// Request bytes not yet answered.
    head: Vec<u8>,
    /// The rest of the response being written, piece by piece.
    queue: std::collections::VecDeque<Vec<u8>>,
    /// A response is being written.
    busy: bool,
    /// The connection stays open after that response.
    keep_alive: bool,
    /// Requests answered on it so far.
    answered: usize,
}

/// What every connection of a case's server shares.
struct Shared {
    served: Rc<RefCell<Vec<Served>>>,
    failures: Rc<RefCell<Vec<String>>>,
    segments: Vec<Segment>,
    progress: RefCell<Progress>,
}

/// Answers the next request waiting in `conn`, if one is there whole and none is being
/// answered.
fn answer(shared: &Shared, conn: &RefCell<Conn>, socket: &TcpSocket) {
    let request = {
        let mut conn = conn.borrow_mut();
        if conn.busy {
            return;
        }
        let Some(end) = conn.head.windows(4).position(|w| w == b"\r\n\r\n") else {
            return;
        };
        conn.busy = true;
        conn.answered += 1;
        if conn.answered > 1 {
            COUNTS.reused.fetch_add(1, Ordering::Relaxed);
        }
        let request: Vec<u8> = conn.head.drain(..end + 4).collect();
        String::from_utf8_lossy(&request).into_owned()
    };
    let path = request.split(' ').nth(1).unwrap_or("");
    let Some(client) = path.strip_prefix("/c").and_then(|c| c.parse().ok()) else {
        shared
            .failures
            .borrow_mut()
            .push(format!("unexpected request {request:?}"));
        return;
    };
    let raw_id = raw_header(&request, "Last-Event-ID").map(str::to_owned);
    let (index, reconnection) = {
        let mut progress = shared.progress.borrow_mut();
        let entry = progress.entry(client).or_insert((0, None));
        entry.0 += 1;
        (entry.0 - 1, entry.1)
    };
    let mut served = Served {
        client,
        last_event_id: raw_id.clone(),
        segment: None,
        body: Vec::new(),
        at: Instant::now(),
    };
    let Some(segment) = shared.segments.get(index) else {
        conn.borrow_mut().keep_alive = false;
        let _ = socket.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        shared.served.borrow_mut().push(served);
        return;
    };
    // As an HTTP server reads a field value: surrounding whitespace trimmed.
    let resume = raw_id.as_deref().unwrap_or("").trim_matches([' ', '\t']);
    // (A client sends no `Last-Event-ID` the writer would refuse: none holding a control
    // character, and the trimmed header has no white space around it.)
    let mut writer = match SseWriter::resuming(resume) {
        Ok(writer) => writer,
        Err(e) => {
            shared
                .failures
                .borrow_mut()
                .push(format!("Last-Event-ID {raw_id:?} refused by resuming: {e}"));
            socket.abort();
            return;
        }
    };
    let body = match write_segment(segment, &mut writer, reconnection) {
        Ok(body) => body,
        Err(e) => {
            shared.failures.borrow_mut().push(e);
            socket.abort();
            return;
        }
    };
    // (Its last `retry`, whether its last block counts or not.)
    let reading = read_stream(&body, "", reconnection, true);
    shared.progress.borrow_mut().entry(client).or_default().1 = reading.retry;
    let keep_alive = segment.chunked && segment.keep_alive;
    let framing = match (segment.chunked, keep_alive) {
        (false, _) => "Connection: close\r\n",
        (true, false) => "Transfer-Encoding: chunked\r\nConnection: close\r\n",
        (true, true) => "Transfer-Encoding: chunked\r\n",
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         {framing}\r\n"
    );
    {
        let mut conn = conn.borrow_mut();
        conn.keep_alive = keep_alive;
        conn.queue.extend(pieces(segment, &body));
    }
    let _ = socket.write(head.as_bytes());
    served.segment = Some(index);
    served.body = body;
    shared.served.borrow_mut().push(served);
}

impl Server {
    fn start(case: &Case) -> Server {
        let server = TcpServer::new().unwrap();
        if case.tls {
            server.set_tls_config(server_config());
        }
        server.listen("127.0.0.1", 0).unwrap();
        let shared = Rc::new(Shared {
            served: Rc::default(),
            failures: Rc::default(),
            segments: case.segments.clone(),
            progress: RefCell::default(),
        });
        let peers: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
        let (sh, p) = (shared.clone(), peers.clone());
        server
            .new_connection
            .connect(move |peer: &Rc<TcpSocket>| {
                p.borrow_mut().push(peer.clone());
                let conn: Rc<RefCell<Conn>> = Rc::default();
                let (weak, c, shared) = (Rc::downgrade(peer), conn.clone(), sh.clone());
                peer.bytes_written
                    .connect(move |_| {
                        let Some(socket) = weak.upgrade() else { return };
                        if socket.bytes_to_write() != 0 || !c.borrow().busy {
                            return;
                        }
                        let next = c.borrow_mut().queue.pop_front();
                        match next {
                            Some(piece) => {
                                let _ = socket.write(&piece);
                            }
                            None if c.borrow().keep_alive => {
                                // The answer is out: the connection takes the next request.
                                c.borrow_mut().busy = false;
                                answer(&shared, &c, &socket);
                            }
                            None => socket.disconnect_from_host(),
                        }
                    })
                    .release();
                let (weak, shared) = (Rc::downgrade(peer), sh.clone());
                peer.ready_read
                    .connect(move |_| {
                        let Some(socket) = weak.upgrade() else { return };
                        conn.borrow_mut().head.extend_from_slice(&socket.read_all());
                        answer(&shared, &conn, &socket);
                    })
                    .release();
            })
            .release();
        Server {
            server,
            served: shared.served.clone(),
            failures: shared.failures.clone(),
            _peers: peers,
        }
    }

    fn url(&self, client: usize, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        let port = self.server.server_port().unwrap();
        format!("{scheme}://127.0.0.1:{port}/c{client}")
    }
}

// ---- running a case ------------------------------------------------------------------------

/// What one client's slots saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Event(RefEvent),
    /// `state_changed(Connecting)` after an open stream, with `reconnection_time()` then.
    Reconnecting(Option<u64>, Instant),
    Closed,
    /// After the run: `reconnection_time()` and `last_event_id()`.
    Final(Option<u64>, String),
}

#[derive(Default)]
struct Counts {
    cases: AtomicU64,
    events: AtomicU64,
    connections: AtomicU64,
    refused: AtomicU64,
    triggers: AtomicU64,
    long_data: AtomicU64,
    diverged: AtomicU64,
    flushed_or_lost: AtomicU64,
    reused: AtomicU64,
}

static COUNTS: Counts = Counts {
    cases: AtomicU64::new(0),
    events: AtomicU64::new(0),
    connections: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    triggers: AtomicU64::new(0),
    long_data: AtomicU64::new(0),
    diverged: AtomicU64::new(0),
    flushed_or_lost: AtomicU64::new(0),
    reused: AtomicU64::new(0),
};

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `id` goes out as `Last-Event-ID` (kdnet's client: non-empty, no control character
/// other than TAB).
fn sendable(id: &str) -> bool {
    !id.is_empty() && !id.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    COUNTS.cases.fetch_add(1, Ordering::Relaxed);
    let server = Server::start(case);
    let shared = HttpClient::new().unwrap();
    let pki = support::certs::test_pki();
    let mut clients = Vec::new();
    let logs: Vec<Rc<RefCell<Vec<Seen>>>> = (0..case.clients).map(|_| Rc::default()).collect();
    let violations: Rc<RefCell<Vec<String>>> = Rc::default();
    for (k, log) in logs.iter().enumerate() {
        let sse = if case.shared_http {
            SseClient::with_http_client(shared.clone())
        } else {
            SseClient::new().unwrap()
        };
        if case.tls && (!case.shared_http || k == 0) {
            sse.http_client()
                .update_session(|s| s.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap());
        }
        sse.set_reconnection_time(Duration::from_millis(1));
        sse.set_max_reconnection_delay(Duration::from_millis(150));
        sse.set_flush_unterminated_event(case.flush);
        let weak = Rc::downgrade(&sse);
        let (l, v) = (log.clone(), violations.clone());
        let trigger = case.trigger.filter(|t| t.0 == k);
        let url = server.url(k, case.tls);
        let delivered = Cell::new(0usize);
        sse.message_received
            .connect(move |event| {
                let sse = weak.upgrade().unwrap();
                if sse.last_event_id() != event.last_event_id() {
                    v.borrow_mut().push(format!(
                        "client {k}: slot sees last_event_id {:?}, its event {:?}",
                        sse.last_event_id(),
                        event.last_event_id()
                    ));
                }
                if sse.ready_state() != ReadyState::Open {
                    v.borrow_mut()
                        .push(format!("client {k}: event while {:?}", sse.ready_state()));
                }
                l.borrow_mut().push(Seen::Event(RefEvent {
                    event_type: event.event_type().to_owned(),
                    data: event.data().to_owned(),
                    id: event.last_event_id().to_owned(),
                    retry: event.retry().map(ms_of),
                    // 1 ms is the time set before any `retry`.
                    reconnection: Some(ms_of(sse.reconnection_time())),
                }));
                let n = delivered.get();
                delivered.set(n + 1);
                if let Some((_, at, action)) = trigger {
                    if at == n {
                        COUNTS.triggers.fetch_add(1, Ordering::Relaxed);
                        match action {
                            Action::Disconnect => sse.disconnect(),
                            Action::Connect => {
                                // (A retry before the event may be huge: the next wait must
                                // not be.)
                                sse.set_reconnection_time(Duration::from_millis(1));
                                sse.connect(HttpRequest::get(&url).unwrap());
                            }
                        }
                    }
                }
            })
            .release();
        let weak = Rc::downgrade(&sse);
        let l = log.clone();
        sse.state_changed
            .connect(move |state| {
                let sse = weak.upgrade().unwrap();
                match state {
                    ReadyState::Connecting => l.borrow_mut().push(Seen::Reconnecting(
                        Some(ms_of(sse.reconnection_time())),
                        Instant::now(),
                    )),
                    ReadyState::Closed => l.borrow_mut().push(Seen::Closed),
                    ReadyState::Open => {}
                }
            })
            .release();
        clients.push(sse);
    }
    for (k, sse) in clients.iter().enumerate() {
        sse.connect(HttpRequest::get(&server.url(k, case.tls)).unwrap());
    }
    let done = run_until(event_loop, Duration::from_secs(60), || {
        !server.failures.borrow().is_empty()
            || clients
                .iter()
                .all(|c| c.ready_state() == ReadyState::Closed)
    });
    // A little longer: a request that should not come would come now.
    run_until(event_loop, Duration::from_millis(20), || false);
    prop_assert!(
        server.failures.borrow().is_empty(),
        "{:?}",
        server.failures.borrow()
    );
    prop_assert!(done, "the clients did not all close");
    prop_assert!(violations.borrow().is_empty(), "{:?}", violations.borrow());
    for (sse, log) in clients.iter().zip(&logs) {
        log.borrow_mut().push(Seen::Final(
            Some(ms_of(sse.reconnection_time())),
            sse.last_event_id(),
        ));
    }
    check(case, &server.served.borrow(), &logs)?;
    for sse in &clients {
        sse.disconnect();
    }
    Ok(())
}

/// Checks every client's log against the reference reading of what the server wrote to it.
fn check(
    case: &Case,
    served: &[Served],
    logs: &[Rc<RefCell<Vec<Seen>>>],
) -> Result<(), TestCaseError> {
    for (k, log) in logs.iter().enumerate() {
        let log = log.borrow();
        let conns: Vec<&Served> = served.iter().filter(|s| s.client == k).collect();
        COUNTS
            .connections
            .fetch_add(conns.len() as u64, Ordering::Relaxed);
        let trigger = case.trigger.filter(|t| t.0 == k);
        // The model, connection by connection.
        let mut expected: Vec<RefEvent> = Vec::new();
        let mut client_id = String::new();
        let mut reconnection = Some(1u64);
        let mut stopped = false;
        // The reconnection time at the end of each connection.
        let mut ends = Vec::new();
        for (i, conn) in conns.iter().enumerate() {
            prop_assert!(!stopped, "client {k}: request {i} after disconnect()");
            let want_header = sendable(&client_id).then(|| client_id.clone());
            prop_assert_eq!(
                &conn.last_event_id,
                &want_header,
                "client {} connection {} Last-Event-ID",
                k,
                i
            );
            let Some(index) = conn.segment else {
                prop_assert_eq!(i, conns.len() - 1, "client {}: the 204 is the last", k);
                prop_assert_eq!(i, case.segments.len(), "client {}: 204 early", k);
                continue;
            };
            prop_assert_eq!(index, i, "client {}: segments in order", k);
            let reading = read_stream(&conn.body, &client_id, reconnection, case.flush);
            let whole = read_stream(&conn.body, &client_id, reconnection, true);
            if whole.events.len() != reading.events.len() {
                COUNTS.flushed_or_lost.fetch_add(1, Ordering::Relaxed);
            }
            // The writer's round trip: the reference reads back what it was given.
            let resumed = conn
                .last_event_id
                .as_deref()
                .unwrap_or("")
                .trim_matches([' ', '\t']);
            let mut writer_view = intended(&case.segments[index], &client_id);
            if client_id != resumed {
                // The writer skips an `id` equal to what it thinks the client holds; what the
                // client holds then is its own ID (see `an_id_with_surrounding_whitespace_...`).
                let mut id = client_id.clone();
                let mut writer_id = resumed.to_owned();
                let mut events = writer_view.iter_mut();
                for op in &case.segments[index].ops {
                    match op {
                        Op::IdOnly(new) => {
                            let new = held_after_id_only(new);
                            new.clone_into(&mut id);
                            new.clone_into(&mut writer_id);
                        }
                        Op::Event { id: choice, .. } => {
                            if let IdChoice::New(new) = choice {
                                if *new != writer_id {
                                    new.clone_into(&mut id);
                                    new.clone_into(&mut writer_id);
                                }
                            }
                            // `Same`: the writer's own view, written as no `id` field.
                            if let Some(event) = events.next() {
                                event.2.clone_from(&id);
                            }
                        }
                        _ => {}
                    }
                }
                COUNTS.diverged.fetch_add(1, Ordering::Relaxed);
            }
            let read_back: Vec<(String, String, String, Option<u64>)> = whole
                .events
                .iter()
                .map(|e| (e.event_type.clone(), e.data.clone(), e.id.clone(), e.retry))
                .collect();
            prop_assert_eq!(
                &read_back,
                &writer_view,
                "client {} connection {}: the writer's output read back",
                k,
                i
            );
            let before = expected.len();
            expected.extend(reading.events.iter().cloned());
            let mut cut = false;
            if let Some((_, at, action)) = trigger {
                if at >= before && at < expected.len() {
                    expected.truncate(at + 1);
                    client_id = expected[at].id.clone();
                    cut = true;
                    stopped = matches!(action, Action::Disconnect);
                    // What was received after the slot's event counts for nothing; a
                    // `connect()` slot set 1 ms.
                    reconnection = if stopped {
                        expected[at].reconnection
                    } else {
                        Some(1)
                    };
                }
            }
            if !cut {
                client_id = reading.last_id.clone();
                reconnection = reading.retry;
            }
            ends.push(reconnection);
        }
        let finals: Vec<&Seen> = log
            .iter()
            .filter(|s| matches!(s, Seen::Final(..)))
            .collect();
        prop_assert_eq!(
            finals,
            [&Seen::Final(reconnection, client_id.clone())],
            "client {}: reconnection time and last event ID at the end",
            k
        );
        let events: Vec<&RefEvent> = log
            .iter()
            .filter_map(|s| match s {
                Seen::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        COUNTS
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if expected.iter().any(|e| e.data.len() > 65_536) {
            COUNTS.long_data.fetch_add(1, Ordering::Relaxed);
        }
        let expected_refs: Vec<&RefEvent> = expected.iter().collect();
        prop_assert_eq!(events, expected_refs, "client {}: events", k);
        // Each reconnect after a stream that delivered: the reconnection time the reference
        // read, and at least that long a wait before the next request. (The first
        // `Connecting` is `connect()`'s; a slot's `connect()` is a reconnect of its own.)
        if trigger.is_none() {
            let reconnects: Vec<(Option<u64>, Instant, bool)> = log
                .iter()
                .scan(false, |delivered, seen| {
                    Some(match seen {
                        Seen::Event(_) => {
                            *delivered = true;
                            None
                        }
                        Seen::Reconnecting(time, at) => {
                            Some((*time, *at, std::mem::take(delivered)))
                        }
                        Seen::Closed | Seen::Final(..) => None,
                    })
                })
                .flatten()
                .skip(1)
                .collect();
            for (i, (time, at, delivered)) in reconnects.iter().enumerate() {
                prop_assert_eq!(
                    *time,
                    ends[i],
                    "client {}: reconnection time after connection {}",
                    k,
                    i
                );
                let Some(next) = conns.get(i + 1) else {
                    continue;
                };
                if *delivered {
                    let wait = next.at.saturating_duration_since(*at);
                    let least = Duration::from_millis(time.unwrap_or(0));
                    prop_assert!(
                        wait + Duration::from_millis(1) >= least,
                        "client {}: reconnected after {:?}, reconnection time {:?}",
                        k,
                        wait,
                        least
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn sse_writer_streams_reach_every_client_as_the_reference_reads_them() {
    let started = Instant::now();
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(config(16));
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    finish_counted(
        started,
        &COUNTS.cases,
        [
            "events",
            "connections",
            "refused",
            "triggers",
            "long data",
            "resumed from another ID than the client's",
            "final events without their blank line",
            "requests on a kept-alive connection",
        ],
        &[
            AtomicU64::new(COUNTS.events.count()),
            AtomicU64::new(COUNTS.connections.count()),
            AtomicU64::new(COUNTS.refused.count()),
            AtomicU64::new(COUNTS.triggers.count()),
            AtomicU64::new(COUNTS.long_data.count()),
            AtomicU64::new(COUNTS.diverged.count()),
            AtomicU64::new(COUNTS.flushed_or_lost.count()),
            AtomicU64::new(COUNTS.reused.count()),
        ],
        result,
    );
}

// ---- refusals ----------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// Whatever is refused, the error names the field and the first offending byte, says why,
    /// and nothing changed: not the output (which held earlier events), not the ID the writer
    /// thinks the client holds; the writer goes on as if the call had not been made.
    #[test]
    fn the_writer_refuses_what_the_format_cannot_carry_before_writing_anything(
        earlier in event_id(),
        bad in refused(),
        data in text(DATA_CHARS, 4),
        comment in text(DATA_CHARS, 4),
    ) {
        let Op::Refused { event_type, id, expected } = bad else { unreachable!() };
        let mut writer = SseWriter::new();
        let mut out = String::new();
        writer.write_event(&mut out, &SseEvent::new("", "x").with_id(&earlier)).unwrap();
        writer.write_comment(&mut out, &comment);
        let before = out.clone();
        let event = SseEvent::new(&event_type, data.as_str()).with_id(&id);
        let got = writer.write_event(&mut out, &event);
        prop_assert_eq!(got, Err(expected));
        prop_assert_eq!(&out, &before);
        prop_assert_eq!(writer.client_last_event_id(), earlier.as_str());
        // What is reported is what the docs promise (`id_refusal`), named in the message: the
        // field, and the offending byte or the length.
        let message = expected.to_string();
        let field = match expected {
            SseWriteError::LineBreakInEventType { .. } => "event type",
            _ => "event id",
        };
        prop_assert!(message.starts_with(field), "{}", message);
        let said = match expected {
            SseWriteError::LineBreakInEventType { position }
            | SseWriteError::LineBreakInId { position }
            | SseWriteError::NulInId { position }
            | SseWriteError::ControlInId { position }
            | SseWriteError::WhitespaceAroundId { position: position @ 0 } => {
                format!("at byte {position}")
            }
            SseWriteError::WhitespaceAroundId { position } => format!("from byte {position}"),
            SseWriteError::IdTooLong { len, limit } => format!("is {len} bytes, more than the {limit}"),
            _ => unreachable!(),
        };
        prop_assert!(message.contains(&said), "{}", message);
        // The writer carries on, and the stream reads as if the refused call had not been made.
        writer.write_event(&mut out, &SseEvent::new("", data.as_str()).with_id("after")).unwrap();
        let reading = read_body(out.as_bytes(), "", None);
        let ids: Vec<&str> = reading.events.iter().map(|e| e.id.as_str()).collect();
        prop_assert_eq!(ids, [earlier.as_str(), "after"]);
    }
}

// ---- a stalled reader --------------------------------------------------------------------------

/// A std stream, plain or rustls.
trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

fn rustls_client_config() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(support::certs::test_pki().ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The body bytes of a response read whole from a std stream (head up to the blank line cut).
fn body_of(bytes: &[u8]) -> &[u8] {
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    &bytes[at + 4..]
}

/// A stream reader (plain or TLS) that stops reading: the server's writes are queued by its
/// `TcpSocket` without bound (`write` takes every byte: "Returns the number of bytes accepted
/// (all of them)"), and what tells the server is `bytes_to_write()`, which grows, and
/// `bytes_written`, which stops (over plain TCP the two add up to every byte written: nothing
/// is dropped). A graceful close waits in `Closing` as long as the reader stalls. Once the
/// reader reads again, every event arrives, in order, the queue empties and the socket
/// closes. A server that bounds its memory checks `bytes_to_write()` before each event (the
/// pattern `SseWriter`'s docs show; here: skipping ticks while the queue is over a limit, as a
/// live-update server coalesces).
#[test]
fn a_stalled_reader_backs_up_the_servers_writes_in_the_sockets_queue() {
    use std::io::{Read, Write};
    const EVENTS: usize = 8_000;
    const LIMIT: usize = 256 * 1024;

    for (tls, bounded) in [(false, false), (false, true), (true, false)] {
        let mut event_loop = EventLoop::new().unwrap();
        let server = TcpServer::new().unwrap();
        if tls {
            server.set_tls_config(server_config());
        }
        server.listen("127.0.0.1", 0).unwrap();
        let port = server.server_port().unwrap();
        let peer: Rc<RefCell<Option<Rc<TcpSocket>>>> = Rc::default();
        let p = peer.clone();
        server
            .new_connection
            .connect(move |socket: &Rc<TcpSocket>| *p.borrow_mut() = Some(socket.clone()))
            .release();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut stream: Box<dyn ReadWrite> = if tls {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(rustls_client_config(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            } else {
                Box::new(tcp)
            };
            stream
                .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                .unwrap();
            stream.flush().unwrap();
            // Stalled: nothing is read until the test says so.
            wait.recv().unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).unwrap();
            all
        });
        assert!(run_until(&mut event_loop, Duration::from_secs(10), || {
            peer.borrow()
                .as_ref()
                .is_some_and(|s| s.bytes_available() > 0)
        }));
        let socket = peer.borrow().clone().unwrap();
        let written = Rc::new(Cell::new(0usize));
        let w = written.clone();
        socket
            .bytes_written
            .connect(move |n| w.set(w.get() + n))
            .release();
        let head: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        socket.write(head).unwrap();
        let mut writer = SseWriter::new();
        let mut sent = Vec::new();
        let mut app_bytes = 0;
        let mut skipped = 0;
        let mut most_queued = 0;
        let padding = "p".repeat(1000);
        for i in 0..EVENTS {
            if bounded && socket.bytes_to_write() > LIMIT {
                skipped += 1;
                continue;
            }
            let event = SseEvent::new("tick", format!("{i} {padding}")).with_id(&i.to_string());
            let mut block = Vec::new();
            writer.write_event(&mut block, &event).unwrap();
            assert_eq!(
                socket.write(&block).unwrap(),
                block.len(),
                "write takes every byte"
            );
            sent.push(event);
            app_bytes += block.len();
            most_queued = most_queued.max(socket.bytes_to_write());
            // Let the loop flush what the kernel takes.
            if i % 1000 == 0 {
                event_loop.process_events(Some(Duration::ZERO)).unwrap();
            }
        }
        // The kernel's buffers are full, the reader reads nothing: the rest waits in the queue.
        run_until(&mut event_loop, Duration::from_millis(100), || false);
        if bounded {
            assert!(skipped > 0, "the bound never held a tick back");
            assert!(
                most_queued <= LIMIT + 2048,
                "queued {most_queued} bytes past the limit"
            );
        } else {
            assert_eq!(skipped, 0);
            // (The kernel takes a few MiB at most: the send buffer, the peer's receive window.)
            assert!(
                socket.bytes_to_write() > 1024 * 1024,
                "queued {} of {app_bytes} bytes: the queue did not grow",
                socket.bytes_to_write()
            );
        }
        if !tls {
            // Nothing dropped: what the kernel took and what waits make up all that was written.
            assert_eq!(
                written.get() + socket.bytes_to_write(),
                app_bytes + head.len()
            );
        }
        let queued = socket.bytes_to_write();
        assert!(queued > 0, "a stalled reader leaves bytes queued");
        let written_while_stalled = written.get();
        run_until(&mut event_loop, Duration::from_millis(50), || false);
        assert_eq!(
            written.get(),
            written_while_stalled,
            "bytes_written stops while the reader stalls"
        );
        // A graceful close waits for the queue, with no time limit: `Closing` for as long as
        // the reader stalls (`abort` is the way out).
        socket.disconnect_from_host();
        run_until(&mut event_loop, Duration::from_millis(50), || false);
        if !bounded {
            // (A bounded queue may fit in the kernel's send buffer, which grows as it is used.)
            assert_eq!(socket.state(), kdnet::network::SocketState::Closing);
            assert!(socket.bytes_to_write() > 0);
        }
        // The reader reads again: everything arrives, the queue empties, the socket closes.
        go.send(()).unwrap();
        assert!(run_until(&mut event_loop, Duration::from_secs(60), || {
            reader.is_finished()
        }));
        assert!(run_until(&mut event_loop, Duration::from_secs(10), || {
            socket.state() == kdnet::network::SocketState::Unconnected
        }));
        assert_eq!(socket.bytes_to_write(), 0);
        let received = reader.join().unwrap();
        let reading = read_body(body_of(&received), "", None);
        assert_eq!(
            reading.events.len(),
            sent.len(),
            "tls: {tls}, bounded: {bounded}"
        );
        for (got, event) in reading.events.iter().zip(&sent) {
            assert_eq!(got.data, event.data());
            assert_eq!(got.id, event.last_event_id());
        }
    }
}

// ---- IDs that do not come back -----------------------------------------------------------------

/// The largest request head the round-trip server reads (nginx's, Apache's and Tomcat's default
/// limits are 8 KiB): a longer one is answered `431`.
const SERVER_HEAD_LIMIT: usize = 8 * 1024;

/// What the round-trip server got on the reconnect.
#[derive(Debug, PartialEq)]
enum CameBack {
    /// `Last-Event-ID` as an HTTP server reads a field value (surrounding spaces and tabs
    /// trimmed, RFC 9110 §5.5); `""` when the header was not sent.
    Header(String),
    /// The request head was over [`SERVER_HEAD_LIMIT`]: answered `431`.
    HeadTooLarge,
}

/// Writes one event with ID `id` through `SseWriter` to a kdnet `SseClient` (over loopback, as a
/// server does), then reads the ID back from the client's reconnect. `Err` when the writer
/// refuses the ID.
fn id_round_trip(id: &str) -> Result<CameBack, SseWriteError> {
    use std::io::{BufRead, Read, Write};
    let mut body = Vec::new();
    let mut writer = SseWriter::new();
    writer.write_retry(&mut body, Duration::ZERO);
    writer.write_event(&mut body, &SseEvent::new("", "x").with_id(id))?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ids", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut came_back = CameBack::Header(String::new());
        for (n, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") && head.len() <= SERVER_HEAD_LIMIT {
                let mut line = Vec::new();
                if reader
                    .by_ref()
                    .take((SERVER_HEAD_LIMIT + 1 - head.len()) as u64)
                    .read_until(b'\n', &mut line)
                    .unwrap_or(0)
                    == 0
                {
                    break;
                }
                head.extend_from_slice(&line);
            }
            if n == 0 {
                let mut answer =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                        .to_vec();
                answer.extend_from_slice(&body);
                stream.write_all(&answer).unwrap();
                continue;
            }
            if head.len() > SERVER_HEAD_LIMIT {
                came_back = CameBack::HeadTooLarge;
                let _ = stream.write_all(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                break;
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            if let Some(value) = raw_header(head.trim_end(), "Last-Event-ID") {
                came_back = CameBack::Header(value.trim_matches([' ', '\t']).to_owned());
            }
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
        came_back
    });
    let mut event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    let received: Rc<RefCell<Vec<String>>> = Rc::default();
    let r = received.clone();
    sse.message_received
        .connect(move |event| r.borrow_mut().push(event.last_event_id().to_owned()))
        .release();
    sse.connect(HttpRequest::get(&url).unwrap());
    assert!(run_until(&mut event_loop, Duration::from_secs(20), || {
        server.is_finished()
    }));
    sse.disconnect();
    assert_eq!(
        *received.borrow(),
        [id],
        "the event's ID as the client read it"
    );
    Ok(server.join().unwrap())
}

/// The writer accepts an ID only if the client can send it back: once a kdnet `SseClient` has
/// read it, its reconnect's `Last-Event-ID`, read as an HTTP server reads a field value (without
/// surrounding spaces and tabs, RFC 9110 §5.5) within an 8 KiB request head, is that ID. An ID
/// with surrounding white space came back without it, one with a control character other than
/// TAB did not come back at all (no header value can carry it: kdnet's client sends none, a
/// browser's request is refused), and a megabyte one made the reconnect a `431`. IDs a browser
/// round-trips stay accepted: inner spaces and tabs, colons, any Unicode (non-ASCII white space
/// and C1 controls included: HTTP trims and refuses only ASCII), up to 4 KiB.
#[test]
fn every_id_the_writer_accepts_comes_back_in_last_event_id() {
    let refused = [
        " 7".to_owned(),
        "7 ".to_owned(),
        "\t7".to_owned(),
        "7\t".to_owned(),
        " ".to_owned(),
        "a\u{1}b".to_owned(),
        "a\u{7f}".to_owned(),
        "\u{1b}[31m".to_owned(),
        "x".repeat(1024 * 1024),
        "x".repeat(4097),
    ];
    for id in &refused {
        let shown = id.get(..20).unwrap_or(id);
        match id_round_trip(id) {
            Err(e) => assert!(e.to_string().starts_with("event id"), "{shown:?}: {e}"),
            Ok(came_back) => panic!(
                "{shown:?} ({} bytes) accepted, but the server got {came_back:?}",
                id.len()
            ),
        }
    }
    let accepted = [
        "7".to_owned(),
        "a b\tc".to_owned(),
        "urn:uuid:1:2".to_owned(),
        "é😀\u{feff}".to_owned(),
        "\u{a0}7\u{3000}".to_owned(),
        "\u{85}".to_owned(),
        "x".repeat(4096),
    ];
    for id in &accepted {
        let shown = id.get(..20).unwrap_or(id);
        assert_eq!(
            id_round_trip(id),
            Ok(CameBack::Header(id.clone())),
            "{shown:?}"
        );
    }
}

/// An ID holding several bytes that cannot be carried is refused at the first of them, whatever
/// their kinds: a NUL before a line break is named, not the line break.
#[test]
fn an_id_is_refused_at_its_first_offending_byte() {
    let mut out = String::new();
    let mut writer = SseWriter::new();
    for (id, position) in [("a\0b\nc", 1), ("ab\r\0", 2), ("\0\r", 0), ("a\n\0", 1)] {
        let error = writer
            .write_event(&mut out, &SseEvent::new("", "x").with_id(id))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("at byte {position}")),
            "{id:?}: {message}"
        );
    }
    assert!(out.is_empty());
}

/// `SseWriter::resuming` takes a client's `Last-Event-ID`, peer input: an ID the writer would
/// refuse in an event is refused there with the same error (it took any before, and an event
/// carrying such an ID then went out without its `id` field, unchecked, as if the client held
/// it). Every ID the writer accepts resumes, up to `SseWriter::MAX_ID_LEN` bytes.
#[test]
fn resuming_refuses_an_id_the_writer_would_refuse_in_an_event() {
    let too_long = "x".repeat(SseWriter::MAX_ID_LEN + 1);
    for id in [
        " 7",
        "7 \t",
        "a\nb",
        "a\rb",
        "\0",
        "a\u{1}b",
        "a\u{7f}",
        too_long.as_str(),
    ] {
        let expected = SseWriter::new()
            .write_event(&mut String::new(), &SseEvent::new("", "x").with_id(id))
            .unwrap_err();
        assert_eq!(Some(expected), id_refusal(id), "{id:?}");
        let got = SseWriter::resuming(id).map(|w| w.client_last_event_id().to_owned());
        assert_eq!(got, Err(expected), "{:?}", id.get(..8).unwrap_or(id));
    }
    let longest = "x".repeat(SseWriter::MAX_ID_LEN);
    for id in ["", "7", "a b\tc", "é😀", longest.as_str()] {
        let mut writer = SseWriter::resuming(id).unwrap();
        assert_eq!(writer.client_last_event_id(), id);
        let mut out = String::new();
        let event = SseEvent::new("", "x").with_id(id);
        writer.write_event(&mut out, &event).unwrap();
        assert_eq!(out, "data: x\n\n", "the client holds {id:?} already");
    }
}

// ---- named cases -------------------------------------------------------------------------------

/// A stream of `blocks` written with `SseWriter`, then closed: the answer to every request.
fn stream_reply(blocks: &str) -> support::Reply {
    support::Reply::BytesThenClose(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{blocks}"
        )
        .into_bytes(),
    )
}

/// `retry` of `Duration::MAX` (written as `u64::MAX` ms) is taken as it is written: the client
/// waits that long (no panic on the huge deadline, no early reconnect) until `disconnect()`.
#[test]
fn a_huge_retry_is_waited_in_full_until_disconnect() {
    let mut out = String::new();
    let writer = SseWriter::new();
    writer.write_retry(&mut out, Duration::MAX);
    assert_eq!(out, format!("retry: {}\n\n", u64::MAX));
    let server = support::ScriptServer::start(move |_, _| stream_reply(&out));
    let mut event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    sse.connect(HttpRequest::get(&server.url("/huge")).unwrap());
    assert!(run_until(&mut event_loop, Duration::from_secs(10), || {
        sse.reconnection_time() == Duration::from_millis(u64::MAX)
            && sse.ready_state() == ReadyState::Connecting
    }));
    run_until(&mut event_loop, Duration::from_millis(300), || false);
    assert_eq!(server.requests().len(), 1, "no early reconnect");
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    sse.disconnect();
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

/// One read holding several events, `retry` and `id`-only blocks: a slot that stops the client
/// at the second event sees nothing more of that read, and what came after its event (IDs,
/// `retry`) does not count; one that connects again resumes from its event's ID with the
/// reconnection time its event saw.
#[test]
fn a_slot_that_stops_or_reconnects_mid_batch_ends_that_reads_delivery_there() {
    let mut writer = SseWriter::new();
    let mut blocks = String::new();
    writer.write_retry(&mut blocks, Duration::from_millis(5));
    for (i, retry) in [(1, None), (2, None), (3, Some(7))] {
        let mut event = SseEvent::new("tick", format!("n{i}")).with_id(&i.to_string());
        if let Some(ms) = retry {
            event = event.with_retry(Duration::from_millis(ms));
        }
        writer.write_event(&mut blocks, &event).unwrap();
    }
    blocks.push_str("id: 4\n\n");
    writer.write_retry(&mut blocks, Duration::from_millis(9));
    for action in [Action::Disconnect, Action::Connect] {
        let blocks = blocks.clone();
        let server = support::ScriptServer::start(move |_, n| {
            if n == 0 {
                stream_reply(&blocks)
            } else {
                support::Reply::BytesThenClose(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
            }
        });
        let mut event_loop = EventLoop::new().unwrap();
        let sse = SseClient::new().unwrap();
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let (s, weak, url) = (seen.clone(), Rc::downgrade(&sse), server.url("/again"));
        sse.message_received
            .connect(move |event| {
                s.borrow_mut().push(event.data().to_owned());
                if event.data() == "n2" {
                    let sse = weak.upgrade().unwrap();
                    match action {
                        Action::Disconnect => sse.disconnect(),
                        Action::Connect => sse.connect(HttpRequest::get(&url).unwrap()),
                    }
                }
            })
            .release();
        sse.connect(HttpRequest::get(&server.url("/first")).unwrap());
        assert!(run_until(&mut event_loop, Duration::from_secs(10), || {
            sse.ready_state() == ReadyState::Closed
        }));
        run_until(&mut event_loop, Duration::from_millis(50), || false);
        assert_eq!(*seen.borrow(), ["n1", "n2"], "{action:?}");
        assert_eq!(sse.last_event_id(), "2", "{action:?}");
        assert_eq!(
            sse.reconnection_time(),
            Duration::from_millis(5),
            "{action:?}"
        );
        let requests = server.requests();
        match action {
            Action::Disconnect => assert_eq!(requests.len(), 1),
            Action::Connect => {
                assert_eq!(requests.len(), 2);
                assert_eq!(requests[1].header("Last-Event-ID"), Some("2"));
            }
        }
    }
}
