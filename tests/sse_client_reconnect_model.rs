//! A randomised, model-based test of how `SseClient` reconnects: redirects, refusals, throttling,
//! read timeouts and keep-alive comments, the backoff schedule, event IDs and `retry:` across
//! reconnects, plain HTTP and HTTPS, chunked and gzip-encoded streams, and user calls from its
//! slots, nested ones included.
//!
//! Three loopback servers (all plain, or all HTTPS with the test PKI's certificate) answer the
//! client's requests, one scripted answer per request in arrival order (after the script, `204`): a
//! redirect (301, 302, 303, 307, 308) to a path on any of the three servers (by a relative or
//! absolute `Location`), or without a `Location`, or to an `ftp:` URL; a `200 text/event-stream`
//! with 0–4 blocks, events and `id:`-only blocks numbered on from the `Last-Event-ID` received
//! (events with `id:` of their number, an empty `id:` that resets the ID, or none, some with a
//! `retry:` of 1–8 ms), `retry:`-only and comment-only blocks, framed by the close,
//! `Content-Length` or chunks, some gzip-encoded (sync-flushed), the head and body written in up to
//! four pieces split at arbitrary byte offsets (inside the head, a chunk's size line, the gzip
//! header), that ends cleanly (closed, an exact `Content-Length` or the last chunk; or closed with
//! a last event's blank line missing, the client flushing such an event or not), is cut short (of
//! its `Content-Length`, or inside a chunk), goes silent until the client's read timeout (300 ms),
//! or stays open and idle 350–700 ms (and, with `SSE_MODEL_LONG_IDLE` set, 5.6 s) with a keep-alive
//! comment every 40 ms, then ends cleanly; a response head cut off (a network error); a 429 or 503,
//! with no wait, a `Retry-After` of 0–3 s, or `retry-after-ms` (with a `Retry-After: 2` beside it
//! that must lose), some saying `x-should-retry: false`; a 204, 404 or 500; a 200 of another type
//! or none. The request is a GET or a POST with a body, with `Authorization`, at most 1–3
//! redirects; retrying on throttling is on or off; the reconnection time is 1–8 ms, the maximum
//! delay 10–30 ms or (in some cases) 250–400 ms; auto reconnect is on or (in some cases) off. In
//! some cases up to three slots (of any signals: `state_changed` for a given state, `opened`,
//! `connected`, `message_received`, `error`, `disconnected`) call `disconnect()`, `connect()`
//! (another path, some with a `Last-Event-ID` header), `set_last_event_id`, `set_reconnection_time`
//! or `set_auto_reconnect(false)` at their n-th emission; in some, a slot of a stream's end
//! (`state_changed(Closed)` or `(Connecting)`, `error`, `disconnected`) or of an event (a flushed
//! last one too) connects again and a slot of one of the new stream's signals disconnects or
//! connects in turn, inside the first call; in some, the test makes one such call from outside any
//! slot while the client waits: on a silent stream after its events, or for a reconnect of at least
//! 100 ms (a later loop turn's timer, whatever a loaded machine does).
//!
//! The model is the documented behaviour (module, `SseClient`, signal and `SseError` docs; the
//! WHATWG rules; the redirect table of `http::redirect`): each redirect is followed up to the
//! request's limit, with the method and body the table gives, `Last-Event-ID` on every hop and
//! `Authorization` until a hop leaves the first server's origin; every reconnect and `connect()`
//! starts again from its request's own URL; only a 200 `text/event-stream` opens the stream; 204,
//! other statuses, other types, a redirect that cannot be followed, a throttled answer with
//! retrying off or saying that waiting will not help fail for good (state `Closed`, fatal `error`);
//! a stream's end, a network error, a read timeout and (retrying on) a throttled answer reconnect
//! (state `Connecting`, `error` if any; with auto reconnect off, they close the client: `Closed`,
//! `error` if any), and `disconnected` comes once for each `connected`, when that stream ends,
//! never else (a slot of an end that connects again gets it inside that call); all after the
//! reconnection time (the last `retry:` delivered) or, after n consecutive failed attempts (an
//! answer that opened no stream, or a stream that delivered no event), at least 100 ms doubled n
//! times, plus up to 25 % jitter, the whole capped at the maximum delay (unless the reconnection
//! time is longer); a throttled answer's wait (`retry-after-ms`, else `Retry-After`), capped at the
//! maximum delay and without jitter, instead when it asks for one that is not 0; `connect()` resets
//! the count; an attempt whose stream stayed open 5 s succeeded too. The measured waits (from the
//! last signal before the wait to the server's receipt of the next request) are checked against
//! generous bounds: never shorter than the model's least, never more than 700 ms over its most. A
//! user call in a slot acts as documented: `disconnect()` and `connect()` end what runs (nothing of
//! the old stream follows: no later event, `opened`, `connected`, `error` or `disconnected` of it,
//! but `disconnected` for an open stream the call ended, unless a slot of its
//! `state_changed(Closed)` connected again, even when a slot of that new stream stopped it in turn:
//! nothing of a stream follows a newer stream's signals); a failure's `error` and `disconnected`
//! still come after a `disconnect()` in its `state_changed(Closed)` slot; a nested emission skips
//! the slots that are running (the signal's re-entrancy rule), and they do not count it;
//! `set_last_event_id` sets the ID sent next unless the stream in flight delivers an ID of its own
//! after the call; `set_reconnection_time` holds until a later `retry:`; auto reconnect turned off
//! closes the client at the next reconnect, or (from a slot of that reconnect's signals, or during
//! its wait) instead of waiting (`Closed`). The client's last event ID follows the
//! stream's as its events are delivered, an `id:`-only block's at its blank line, an empty `id:`
//! resets it (no `Last-Event-ID` is sent then); each `retry:` counts in its place, also one in a
//! block that dispatches nothing; comments, keep-alive ones included, dispatch nothing and keep an
//! idle stream from its read timeout. Framing, encoding and how the bytes were split change
//! nothing. Each signal's line carries `ready_state()` as its slot saw it, each event line its own
//! and the client's last event ID. Independently of the model, `disconnected` must pair with
//! `connected` (one for each, none else).
//!
//! Not covered: `set_auto_reconnect(true)` and `set_read_timeout` from slots, user calls outside
//! slots in other states (while a request waits for its answer, or during a short reconnect wait),
//! a `Retry-After` wait under the maximum delay in whole seconds (too slow for a unit test),
//! redirect policies other than the default, redirects between HTTP and HTTPS, a gzip stream cut
//! inside its compressed data, parser details (`sse_client_model.rs` and `sse_parser`).
//!
//! `PROPTEST_CASES` sets the number of cases (default 48, about 6 s in a debug build);
//! `SSE_MODEL_LONG_IDLE` adds idle streams that outlast 5 s (slow: for long runs).

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{ReadyState, SseClient, SseError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::model::Listeners;
use support::served::{self, Stream};
use support::{read_request, run_until};

// ---- the script ------------------------------------------------------------------------------

/// An event's `id:` field.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Id {
    /// `id: <its number>`.
    Seq,
    /// `id:` with no value: the last event ID is reset to `""`.
    Empty,
    /// No `id:` field: the event carries the ID before it.
    Absent,
}

/// One block as the server writes it. An event and an `id:`-only block take the next number
/// of the stream (counted on from the `Last-Event-ID` the request carried).
#[derive(Debug, Clone, Copy)]
enum Item {
    Event {
        id: Id,
        retry: Option<u8>,
    },
    /// `id: <its number>` and the blank line: no event, but the ID counts.
    IdOnly,
    /// `retry: n` and the blank line.
    RetryOnly(u8),
    /// A comment and the blank line.
    Comment,
}

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Closed after its blocks (chunked: after the last chunk).
    Close,
    /// As `Close`, but a last event's blank line never comes (its last line ends): delivered
    /// only with `set_flush_unterminated_event(true)`, its `id:` too; its `retry:` counts
    /// either way (a field line counts when it ends).
    Unterminated,
    /// An exact `Content-Length` (or chunked, the last chunk); the connection stays open.
    Length,
    /// Closed short: 20 bytes short of its `Content-Length`, or inside a chunk.
    Cut,
    /// Silent until the client gives up (its read timeout).
    Silent,
    /// Open and idle this long (ms) after its blocks, with a keep-alive comment every
    /// [`PING_MS`], then closed as `Close`.
    Idle(u16),
}

/// How a stream's body is framed, encoded and written.
#[derive(Debug, Clone)]
struct Body {
    chunked: bool,
    gzip: bool,
    /// Where the head and the first part of the body are split into separate writes.
    splits: Vec<prop::sample::Index>,
}

/// Where a redirect points.
#[derive(Debug, Clone, Copy)]
enum Location {
    /// `/hop<n>` on server 0–2 (relative when it is the server answering and the flag says so).
    Server(usize, bool),
    /// No `Location` field: an ordinary (refused) answer.
    Missing,
    /// An `ftp:` URL, which cannot be followed.
    Bad,
}

/// What a throttled answer says about waiting.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Unsaid,
    /// `Retry-After: 0`.
    Zero,
    /// `Retry-After` of 1–3 s (longer than any maximum delay here: capped to it).
    Seconds(u8),
    /// `retry-after-ms: n`, with `Retry-After: 2` as well when the flag says so.
    Ms(u8, bool),
}

/// One answer of the script.
#[derive(Debug, Clone)]
enum Answer {
    Redirect(u16, Location),
    Stream(Vec<Item>, End, Body),
    /// A response head cut off: a network error before the stream opens.
    PartialHead,
    /// 429 or 503; `futile` adds `x-should-retry: false`.
    Throttle {
        status: u16,
        wait: Wait,
        futile: bool,
    },
    /// 204, 404 or 500.
    Refuse(u16),
    /// A 200 of this type (or none).
    WrongType(Option<&'static str>),
}

/// The signals a slot may act from (`state_changed` once per state).
#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    State(ReadyState),
    Opened,
    Connected,
    Message,
    Error,
    Disconnected,
}

impl On {
    const ALL: [On; 8] = [
        On::State(ReadyState::Connecting),
        On::State(ReadyState::Open),
        On::State(ReadyState::Closed),
        On::Opened,
        On::Connected,
        On::Message,
        On::Error,
        On::Disconnected,
    ];
}

/// What a slot does.
#[derive(Debug, Clone, Copy)]
enum What {
    Disconnect,
    /// `connect()` with `/again`, and a `Last-Event-ID: 2000+k` header when given.
    Connect(Option<u32>),
    /// `set_last_event_id` of `1000+k`, or of `""`.
    SetId(Option<u32>),
    /// `set_reconnection_time` of this many ms.
    SetTime(u8),
    /// `set_auto_reconnect(false)`.
    AutoOff,
}

#[derive(Debug, Clone, Copy)]
struct Act {
    on: On,
    /// The emission (counted from 1) of `on` at which the slot acts.
    n: usize,
    what: What,
}

#[derive(Debug, Clone)]
struct Case {
    script: Vec<Answer>,
    post: bool,
    max_redirects: u32,
    reconnection_ms: u64,
    max_delay_ms: u64,
    retry_throttled: bool,
    auto_reconnect: bool,
    actions: Vec<Act>,
    /// A call outside any slot at this quiet point (counted from 0): a silent stream open after
    /// its events, or a reconnect wait of at least [`QUIET_WAIT_MS`].
    outside: Option<(usize, What)>,
    /// The three servers speak HTTPS (the test PKI's certificate, its CA trusted).
    tls: bool,
    /// `set_flush_unterminated_event(true)`.
    flush: bool,
}

impl Case {
    fn read_timeout(&self) -> Option<Duration> {
        self.script
            .iter()
            .any(|a| matches!(a, Answer::Stream(_, End::Silent | End::Idle(_), _)))
            .then_some(READ_TIMEOUT)
    }
}

/// The read timeout of a case with a silent or idle stream: long enough that a loaded
/// machine's slow answer is not taken for silence.
const READ_TIMEOUT: Duration = Duration::from_millis(300);
/// How often an idle stream's server sends a keep-alive comment: well within the read timeout.
const PING_MS: u64 = 40;
/// The least reconnect wait the test calls into from outside: a wait that short cannot have
/// ended within the loop turn that began it.
const QUIET_WAIT_MS: u64 = 100;
/// How far over the model's longest wait a measured one may be (a loaded machine's delays).
const WAIT_SLACK_MS: u64 = 700;

/// The blocks' text; the first block's number is `first + 1`. When `unterminated`, a last
/// event's blank line is left out.
fn items_text(first: u64, items: &[Item], unterminated: bool) -> String {
    let mut s = String::new();
    let mut seq = first;
    for item in items {
        match *item {
            Item::Event { id, retry } => {
                seq += 1;
                match id {
                    Id::Seq => s += &format!("id: {seq}\n"),
                    Id::Empty => s += "id:\n",
                    Id::Absent => {}
                }
                if let Some(retry) = retry {
                    s += &format!("retry: {retry}\n");
                }
                s += &format!("data: e{seq}\n\n");
                if unterminated && std::ptr::eq(item, items.last().unwrap()) {
                    s.pop();
                }
            }
            Item::IdOnly => {
                seq += 1;
                s += &format!("id: {seq}\n\n");
            }
            Item::RetryOnly(retry) => s += &format!("retry: {retry}\n\n"),
            Item::Comment => s += ": hello\n\n",
        }
    }
    s
}

/// A stream body's encoder: gzip (sync-flushed per piece, so that each piece decodes whole
/// when it arrives) and chunked framing, as a case asks.
struct Encoder {
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    chunked: bool,
}

impl Encoder {
    fn new(body: &Body) -> Encoder {
        Encoder {
            gzip: body
                .gzip
                .then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
            chunked: body.chunked,
        }
    }

    fn piece(&mut self, text: &[u8]) -> Vec<u8> {
        let bytes = match &mut self.gzip {
            Some(gzip) => {
                gzip.write_all(text).unwrap();
                gzip.flush().unwrap();
                std::mem::take(gzip.get_mut())
            }
            None => text.to_vec(),
        };
        self.frame(bytes)
    }

    fn frame(&self, bytes: Vec<u8>) -> Vec<u8> {
        if !self.chunked || bytes.is_empty() {
            return bytes;
        }
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend(bytes);
        framed.extend(b"\r\n");
        framed
    }

    /// The gzip trailer and the last chunk.
    fn end(&mut self) -> Vec<u8> {
        let mut bytes = match self.gzip.take() {
            Some(gzip) => self.frame(gzip.finish().unwrap()),
            None => Vec::new(),
        };
        if self.chunked {
            bytes.extend(b"0\r\n\r\n");
        }
        bytes
    }
}

// ---- the servers -----------------------------------------------------------------------------

/// One request as a server received it.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    server: usize,
    method: String,
    path: String,
    last_event_id: Option<String>,
    auth: bool,
    body: usize,
}

struct Servers {
    listeners: Listeners,
    seen: Arc<Mutex<Vec<(Req, Instant)>>>,
    scheme: &'static str,
}

impl Servers {
    fn start(script: &[Answer], tls: bool) -> Servers {
        let script = Arc::new(script.to_vec());
        let seen: Arc<Mutex<Vec<(Req, Instant)>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let scheme = if tls { "https" } else { "http" };
        let config = tls.then(|| {
            let pki = support::certs::test_pki();
            kdnet::network::TlsServerConfig::from_pem(
                pki.server_cert_pem.as_bytes(),
                pki.server_key_pem.as_bytes(),
            )
            .unwrap()
        });
        let listeners = {
            let (seen, ports) = (seen.clone(), ports.clone());
            Listeners::start(3, move |me, tcp| {
                let _ = tcp.set_nodelay(true);
                let stream: Box<dyn Stream> = match config.clone() {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        Box::new(rustls::StreamOwned::new(conn, tcp))
                    }
                    None => Box::new(tcp),
                };
                let ports = ports.lock().unwrap().clone();
                let mut reader = std::io::BufReader::new(stream);
                serve(me, &mut reader, &script, &seen, &count, &ports, scheme);
            })
        };
        *ports.lock().unwrap() = listeners.ports.clone();
        Servers {
            listeners,
            seen,
            scheme,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}{path}",
            self.scheme, self.listeners.ports[0]
        )
    }

    fn seen(&self) -> Vec<(Req, Instant)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Writes `bytes` in pieces split at `splits` (each its own write, a moment apart, so that
/// the client reads them apart); false when the client is gone.
fn write_split(
    reader: &mut std::io::BufReader<Box<dyn Stream>>,
    bytes: &[u8],
    splits: &[prop::sample::Index],
) -> bool {
    let mut at: Vec<usize> = splits.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.extend([0, bytes.len()]);
    at.sort_unstable();
    at.dedup();
    for (i, range) in at.windows(2).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !served::write_all(reader, &bytes[range[0]..range[1]]) {
            return false;
        }
    }
    true
}

fn serve(
    me: usize,
    reader: &mut std::io::BufReader<Box<dyn Stream>>,
    script: &[Answer],
    seen: &Mutex<Vec<(Req, Instant)>>,
    count: &AtomicUsize,
    ports: &[u16],
    scheme: &str,
) {
    while let Some(request) = read_request(reader) {
        let at = Instant::now();
        let mut words = request.line.split(' ');
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        let last_event_id = request.header("last-event-id").map(str::to_string);
        let n = count.fetch_add(1, Ordering::SeqCst);
        let first: u64 = last_event_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        seen.lock().unwrap().push((
            Req {
                server: me,
                method,
                path,
                last_event_id,
                auth: request.header("authorization").is_some(),
                body: request.body.len(),
            },
            at,
        ));
        let answer = script.get(n).cloned().unwrap_or(Answer::Refuse(204));
        let (bytes, keep) = match &answer {
            Answer::Redirect(status, location) => {
                let field = match *location {
                    Location::Server(to, true) if to == me => format!("Location: /hop{n}\r\n"),
                    Location::Server(to, _) => {
                        format!("Location: {scheme}://127.0.0.1:{}/hop{n}\r\n", ports[to])
                    }
                    Location::Missing => String::new(),
                    Location::Bad => "Location: ftp://127.0.0.1/x\r\n".to_string(),
                };
                (
                    format!("HTTP/1.1 {status} Moved\r\n{field}Content-Length: 0\r\n\r\n"),
                    true,
                )
            }
            Answer::Stream(items, end, body) => {
                if stream(reader, first, items, *end, body) {
                    continue;
                }
                return;
            }
            Answer::PartialHead => ("HTTP/1.1 200 OK\r\nContent-Ty".to_string(), false),
            Answer::Throttle {
                status,
                wait,
                futile,
            } => {
                let mut fields = String::new();
                match *wait {
                    Wait::Unsaid => {}
                    Wait::Zero => fields += "Retry-After: 0\r\n",
                    Wait::Seconds(s) => fields += &format!("Retry-After: {s}\r\n"),
                    Wait::Ms(ms, seconds_too) => {
                        fields += &format!("retry-after-ms: {ms}\r\n");
                        if seconds_too {
                            fields += "Retry-After: 2\r\n";
                        }
                    }
                }
                if *futile {
                    fields += "x-should-retry: false\r\n";
                }
                (
                    format!("HTTP/1.1 {status} Slow\r\n{fields}Content-Length: 9\r\n\r\nslow down"),
                    true,
                )
            }
            Answer::Refuse(204) => ("HTTP/1.1 204 No Content\r\n\r\n".to_string(), true),
            Answer::Refuse(status) => (
                format!("HTTP/1.1 {status} Oops\r\nContent-Length: 4\r\n\r\nnope"),
                true,
            ),
            Answer::WrongType(content_type) => {
                let field = content_type
                    .map(|t| format!("Content-Type: {t}\r\n"))
                    .unwrap_or_default();
                (
                    format!("HTTP/1.1 200 OK\r\n{field}Content-Length: 5\r\n\r\nhello"),
                    true,
                )
            }
        };
        if !served::write_all(reader, bytes.as_bytes()) || !keep {
            // (A cut-off head ends without close_notify: a truncation either way.)
            return;
        }
    }
}

/// Answers with an event stream; true when the connection stays for the next request.
fn stream(
    reader: &mut std::io::BufReader<Box<dyn Stream>>,
    first: u64,
    items: &[Item],
    end: End,
    body: &Body,
) -> bool {
    let mut encoder = Encoder::new(body);
    let text = items_text(first, items, end == End::Unterminated);
    let mut bytes = encoder.piece(text.as_bytes());
    let mut fields = String::new();
    match end {
        End::Close | End::Unterminated | End::Length => bytes.extend(encoder.end()),
        End::Cut if body.chunked => bytes.extend(b"14\r\nabc"),
        End::Cut => bytes.extend(encoder.end()),
        End::Silent | End::Idle(_) => {}
    }
    if !body.chunked {
        match end {
            End::Length => fields += &format!("Content-Length: {}\r\n", bytes.len()),
            End::Cut => fields += &format!("Content-Length: {}\r\n", bytes.len() + 20),
            _ => {}
        }
    }
    if body.chunked {
        fields += "Transfer-Encoding: chunked\r\n";
        if matches!(end, End::Close | End::Unterminated | End::Idle(_)) {
            // A whole chunked body leaves the connection reusable: the server says that it
            // closes it (else a POST sent on it in the meantime fails, not to be replayed).
            fields += "Connection: close\r\n";
        }
    }
    if body.gzip {
        fields += "Content-Encoding: gzip\r\n";
    }
    let mut all =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{fields}\r\n").into_bytes();
    all.extend(bytes);
    if !write_split(reader, &all, &body.splits) {
        return false;
    }
    match end {
        End::Length => return true,
        End::Silent => {
            // Silent until the client closes.
            let mut sink = [0; 256];
            while matches!(reader.get_mut().read(&mut sink), Ok(n) if n > 0) {}
        }
        End::Idle(ms) => {
            let until = Instant::now() + Duration::from_millis(ms.into());
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(PING_MS));
                if !served::write_all(reader, &encoder.piece(b": ping\n\n")) {
                    return false;
                }
            }
            if served::write_all(reader, &encoder.end()) {
                reader.get_mut().finish();
            }
        }
        End::Close | End::Unterminated | End::Cut => reader.get_mut().finish(),
    }
    false
}

// ---- the model -------------------------------------------------------------------------------

/// A request the model expects, and the wait before it: measured from the log line at this
/// index, between these bounds (ms).
struct Expected {
    req: Req,
    wait: Option<(usize, u64, u64)>,
}

/// The model: the documented behaviour, step by step (the HTTP client's deliveries and the
/// reconnect timer in turn; a slot's call runs nested, inside the emission it acts from).
struct Model<'a> {
    case: &'a Case,
    log: Vec<String>,
    requests: Vec<Expected>,
    state: ReadyState,
    /// Counts `connect()` and `disconnect()` calls (each stops what ran).
    stops: u64,
    /// Counts `connect()` calls that started a stream: an end being reported is replaced by
    /// a stream a slot of it started, even one that a slot of that stream stopped in turn.
    connects: u64,
    last_id: String,
    /// An ID set while a request was in flight, and the stream's count of `id` fields at that
    /// call: any `id` the stream commits after it (a repeat of its ID, an empty one) wins.
    pending: Option<(String, u64)>,
    path: &'static str,
    in_flight: bool,
    /// The request in flight went out in this delivery (nothing answered it yet).
    fresh: bool,
    /// A request was stopped in the delivery that sent it: whether it reached its server
    /// (written at once on an idle pooled connection, or not yet, a connection still to be
    /// opened) is the pool's business, which the model does not follow. Or a call from outside
    /// may come before the stream's last blocks were read. The case is set aside.
    unsure: bool,
    /// The stream's own last event ID (the parser's) while a request is in flight.
    stream_id: String,
    /// How many `id` fields the streams committed (dispatched), counted across requests.
    stream_fields: u64,
    opened: bool,
    /// `connected` came and its `disconnected` is owed (one for each `connected`, none else).
    announced: bool,
    failures: u32,
    reconnection: u64,
    auto_reconnect: bool,
    /// The pending reconnect: the log line it is measured from, and its bounds (ms).
    timer: Option<(usize, u64, u64)>,
    /// Per acting slot: the emissions it ran for, whether it acted, whether it runs now (a
    /// nested emission of its signal skips it, and it does not count that one).
    seen: Vec<usize>,
    fired: Vec<bool>,
    running: Vec<bool>,
    /// Slot calls made while another slot's call ran.
    nested: usize,
    /// The client's last event ID while an idle stream is open after its blocks (its
    /// `id:`-only blocks counted), and the log length then.
    probes: Vec<(usize, String)>,
    /// Quiet points met so far, and the log length at the one where the outside call came.
    quiet: usize,
    outside_at: Option<usize>,
}

#[derive(Debug, Clone)]
enum Failure {
    Http { timeout: bool },
    Status(u16),
    Type,
    Redirect,
    Throttled(u16, Option<Duration>),
}

impl Failure {
    fn line(&self) -> String {
        match self {
            Failure::Http { timeout: true } => "error http timeout (not fatal)".to_string(),
            Failure::Http { timeout: false } => "error http (not fatal)".to_string(),
            Failure::Status(status) => format!("error status {status} (fatal)"),
            Failure::Type => "error type (fatal)".to_string(),
            Failure::Redirect => "error redirect (fatal)".to_string(),
            Failure::Throttled(status, wait) => {
                format!("error throttled {status} {wait:?} (not fatal)")
            }
        }
    }
}

impl<'a> Model<'a> {
    fn run(case: &'a Case) -> Model<'a> {
        let mut m = Model {
            case,
            log: Vec::new(),
            requests: Vec::new(),
            state: ReadyState::Closed,
            stops: 0,
            connects: 0,
            last_id: String::new(),
            pending: None,
            path: "/events",
            in_flight: false,
            fresh: false,
            unsure: false,
            stream_id: String::new(),
            stream_fields: 0,
            opened: false,
            announced: false,
            failures: 0,
            reconnection: case.reconnection_ms,
            auto_reconnect: case.auto_reconnect,
            timer: None,
            seen: vec![0; case.actions.len()],
            fired: vec![false; case.actions.len()],
            running: vec![false; case.actions.len()],
            nested: 0,
            probes: Vec::new(),
            quiet: 0,
            outside_at: None,
        };
        m.connect("/events", None);
        loop {
            if m.in_flight {
                m.answer();
            } else if let Some((_, least, _)) = m.timer {
                if least >= QUIET_WAIT_MS {
                    m.quiet_point(false);
                }
                if let Some(wait) = m.timer.take() {
                    m.open(Some(wait));
                }
            } else {
                break;
            }
        }
        m
    }

    fn emit(&mut self, on: On, line: String) {
        let line = match on {
            On::State(_) => line,
            _ => format!("{line} @{:?}", self.state),
        };
        self.log.push(line);
        for i in 0..self.case.actions.len() {
            let act = self.case.actions[i];
            if act.on != on || self.running[i] {
                continue;
            }
            self.seen[i] += 1;
            if !self.fired[i] && act.n == self.seen[i] {
                self.fired[i] = true;
                if self.running.contains(&true) {
                    self.nested += 1;
                }
                self.running[i] = true;
                self.call(act.what);
                self.running[i] = false;
            }
        }
    }

    /// A user's call (from a slot, or from outside at a quiet point).
    fn call(&mut self, what: What) {
        match what {
            What::Disconnect => {
                self.stop(false);
            }
            What::Connect(id) => self.connect("/again", id.map(|k| (2000 + k).to_string())),
            What::SetId(id) => {
                self.set_last_event_id(id.map(|k| (1000 + k).to_string()).unwrap_or_default())
            }
            What::SetTime(ms) => self.reconnection = ms.into(),
            What::AutoOff => {
                self.auto_reconnect = false;
                // Waiting to reconnect (never so while a slot runs: the wait starts after
                // them): the reconnect is cancelled and the client closes.
                if self.timer.take().is_some() {
                    self.fail(None);
                }
            }
        }
    }

    /// The client waits (for a silent stream, or to reconnect): the test's outside call comes
    /// here if this is its point.
    fn quiet_point(&mut self, unsignalled: bool) {
        if let Some((at, what)) = self.case.outside {
            if at == self.quiet {
                // The call comes once the log shows the stream's last signal: blocks after it
                // that change the ID or the reconnection time without a signal may still be on
                // their way then (a piece written a moment later). Nothing to wait on: the case
                // is set aside.
                self.unsure |= unsignalled;
                self.outside_at = Some(self.log.len());
                self.call(what);
            }
        }
        self.quiet += 1;
    }

    fn set_state(&mut self, state: ReadyState) {
        if self.state != state {
            self.state = state;
            self.emit(On::State(state), format!("state {state:?}"));
        }
    }

    /// `connect()`: the old stream stops (a slot of that may have the last word), the backoff
    /// count resets, `Connecting`, then the request (unless a slot connected or disconnected).
    fn connect(&mut self, path: &'static str, header_id: Option<String>) {
        let stopped = self.stop(true);
        if self.stops != stopped {
            return;
        }
        if let Some(id) = header_id {
            self.set_last_event_id(id);
        }
        self.path = path;
        self.failures = 0;
        self.connects += 1;
        self.set_state(ReadyState::Connecting);
        if self.stops == stopped {
            self.open(None);
        }
    }

    /// Stops the stream and any reconnect: `Closed`, then `disconnected` if one is owed (also
    /// when the client was `Closed` already if `replacing`: a slot of a stream's end that
    /// connects again reports that end before the new stream starts), unless a slot of the
    /// `Closed` connected again (it reported it then). Returns the stop count.
    fn stop(&mut self, replacing: bool) -> u64 {
        self.stops += 1;
        let stopped = self.stops;
        let connects = self.connects;
        let was = self.state;
        self.opened = false;
        self.unsure |= self.in_flight && self.fresh;
        self.in_flight = false;
        self.timer = None;
        self.pending = None;
        if was != ReadyState::Closed {
            self.set_state(ReadyState::Closed);
        }
        if self.state == ReadyState::Closed
            && self.connects == connects
            && (was != ReadyState::Closed || replacing)
            && std::mem::take(&mut self.announced)
        {
            self.emit(On::Disconnected, "disconnected".to_string());
        }
        stopped
    }

    fn set_last_event_id(&mut self, id: String) {
        self.last_id = id.clone();
        if self.in_flight {
            self.pending = Some((id, self.stream_fields));
        }
    }

    /// The client's ID follows the stream's as its events are delivered, unless the user set
    /// one since the stream's last `id` field.
    fn follow(&mut self) {
        match &self.pending {
            Some((_, at)) if *at == self.stream_fields => {}
            _ => {
                self.pending = None;
                self.last_id = self.stream_id.clone();
            }
        }
    }

    fn open(&mut self, wait: Option<(usize, u64, u64)>) {
        if self.state == ReadyState::Closed || self.in_flight {
            return;
        }
        self.in_flight = true;
        self.fresh = true;
        self.stream_id = self.last_id.clone();
        self.requests.push(Expected {
            req: Req {
                server: 0,
                method: if self.case.post { "POST" } else { "GET" }.to_string(),
                path: self.path.to_string(),
                last_event_id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
                auth: true,
                body: if self.case.post { 3 } else { 0 },
            },
            wait,
        });
    }

    /// The answers to the request in flight: redirects followed, then its end.
    fn answer(&mut self) {
        self.fresh = false;
        let mut hops = 0;
        loop {
            let n = self.requests.len() - 1;
            let last = self.requests[n].req.clone();
            match self
                .case
                .script
                .get(n)
                .cloned()
                .unwrap_or(Answer::Refuse(204))
            {
                Answer::Redirect(status, Location::Server(to, _)) => {
                    if hops == self.case.max_redirects {
                        count(Stat::RedirectLimit);
                        return self.fail(Some(Failure::Redirect));
                    }
                    hops += 1;
                    count(Stat::Redirects);
                    let post = last.method == "POST";
                    let get = match status {
                        301 | 302 => post,
                        303 => true,
                        _ => false,
                    };
                    self.requests.push(Expected {
                        req: Req {
                            server: to,
                            method: if get { "GET".to_string() } else { last.method },
                            path: format!("/hop{n}"),
                            last_event_id: last.last_event_id,
                            auth: last.auth && to == last.server,
                            body: if get { 0 } else { last.body },
                        },
                        wait: None,
                    });
                }
                Answer::Redirect(status, Location::Missing) => {
                    return self.fail(Some(Failure::Status(status)));
                }
                Answer::Redirect(_, Location::Bad) => return self.fail(Some(Failure::Redirect)),
                Answer::Stream(items, end, _) => return self.stream(&last, &items, end),
                Answer::PartialHead => {
                    self.end_request();
                    self.failures += 1;
                    return self.reestablish(Some(Failure::Http { timeout: false }), None);
                }
                Answer::Throttle {
                    status,
                    wait,
                    futile,
                } => {
                    if !self.case.retry_throttled || futile {
                        return self.fail(Some(Failure::Status(status)));
                    }
                    self.end_request();
                    self.failures += 1;
                    let asked = match wait {
                        Wait::Unsaid => None,
                        Wait::Zero => Some(Duration::ZERO),
                        Wait::Seconds(s) => Some(Duration::from_secs(s.into())),
                        Wait::Ms(ms, _) => Some(Duration::from_millis(ms.into())),
                    };
                    let wait = asked
                        .filter(|wait| !wait.is_zero())
                        .map(|wait| (wait.as_millis() as u64).min(self.case.max_delay_ms));
                    return self.reestablish(Some(Failure::Throttled(status, asked)), wait);
                }
                Answer::Refuse(status) => return self.fail(Some(Failure::Status(status))),
                Answer::WrongType(_) => return self.fail(Some(Failure::Type)),
            }
        }
    }

    /// The request's end: its parser (and so its ID) comes back.
    fn end_request(&mut self) {
        self.in_flight = false;
        // An ID set during the stream that the stream did not move past is the client's
        // already; one the stream sent an `id` after was dropped at that event.
        self.pending = None;
    }

    fn stream(&mut self, request: &Req, items: &[Item], end: End) {
        let stopped = self.stops;
        self.opened = true;
        self.set_state(ReadyState::Open);
        let open = |m: &Self| m.stops == stopped && m.state == ReadyState::Open;
        if open(self) {
            self.emit(On::Opened, "opened".to_string());
        }
        if open(self) {
            self.announced = true;
            self.emit(On::Connected, "connected".to_string());
        }
        let mut seq: u64 = request
            .last_event_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut delivered = false;
        for (i, item) in items.iter().enumerate() {
            if !open(self) {
                break;
            }
            let cut_off = end == End::Unterminated && !self.case.flush && i + 1 == items.len();
            match *item {
                Item::Event { retry, .. } if cut_off => {
                    // Never dispatched, its `id:` never counts; its `retry:` line ended.
                    if let Some(retry) = retry {
                        self.reconnection = retry.into();
                    }
                }
                Item::Event { id, retry } => {
                    seq += 1;
                    match id {
                        Id::Seq => self.stream_id = seq.to_string(),
                        Id::Empty => self.stream_id.clear(),
                        Id::Absent => {}
                    }
                    if id != Id::Absent {
                        self.stream_fields += 1;
                    }
                    // Each `retry` in its place: a slot sees the values before its event.
                    if let Some(retry) = retry {
                        self.reconnection = retry.into();
                    }
                    delivered = true;
                    self.follow();
                    let line = format!("msg e{seq}|{}|{}", self.stream_id, self.last_id);
                    self.emit(On::Message, line);
                }
                Item::IdOnly => {
                    // Counts at its blank line, once the events before it were delivered.
                    seq += 1;
                    self.stream_id = seq.to_string();
                    self.stream_fields += 1;
                    self.follow();
                }
                Item::RetryOnly(retry) => self.reconnection = retry.into(),
                Item::Comment => {}
            }
        }
        if self.stops != stopped {
            return;
        }
        if matches!(end, End::Idle(_)) {
            self.probes.push((self.log.len(), self.last_id.clone()));
        }
        if matches!(end, End::Silent | End::Idle(_)) {
            let unsignalled = items
                .iter()
                .rev()
                .take_while(|item| !matches!(item, Item::Event { .. }))
                .any(|item| matches!(item, Item::IdOnly | Item::RetryOnly(_)));
            self.quiet_point(unsignalled);
            if self.stops != stopped {
                return;
            }
        }
        self.end_request();
        // An attempt succeeds when its stream delivered an event or stayed open 5 s.
        let lasted = matches!(end, End::Idle(ms) if ms >= LASTING_IDLE_MS);
        if delivered || lasted {
            self.failures = 0;
        } else {
            self.failures += 1;
        }
        let error = match end {
            End::Close | End::Unterminated | End::Length | End::Idle(_) => None,
            End::Cut => Some(Failure::Http { timeout: false }),
            End::Silent => Some(Failure::Http { timeout: true }),
        };
        self.reestablish(error, None);
    }

    /// Wait, then connect again: `Connecting`, `error`, `disconnected` for an open stream
    /// (nothing more once a slot connected or disconnected), then the timer.
    fn reestablish(&mut self, error: Option<Failure>, wait: Option<u64>) {
        if !self.auto_reconnect {
            return self.fail(error);
        }
        self.opened = false;
        let stopped = self.stops;
        self.set_state(ReadyState::Connecting);
        if self.stops != stopped {
            return;
        }
        if let Some(error) = error {
            self.emit(On::Error, error.line());
        }
        if self.stops == stopped && std::mem::take(&mut self.announced) {
            self.emit(On::Disconnected, "disconnected".to_string());
        }
        if self.stops != stopped {
            return;
        }
        // Turned off by a slot meanwhile: the reconnect is cancelled and the client closes.
        if !self.auto_reconnect {
            return self.fail(None);
        }
        let (least, most) = match wait {
            Some(wait) => (wait, wait),
            None => {
                let base = self.reconnection;
                let cap = self.case.max_delay_ms.max(base);
                let delay = if self.failures == 0 {
                    base
                } else {
                    (base.max(100) << self.failures.min(16)).min(cap)
                };
                (delay, (delay + delay / 4).min(cap))
            }
        };
        self.timer = Some((self.log.len() - 1, least, most));
    }

    /// Closed for good (a fatal error, or any end with auto reconnect off): `Closed`, `error` if
    /// any, `disconnected` (nothing more once a slot connected again, whatever that new stream
    /// did since).
    fn fail(&mut self, error: Option<Failure>) {
        self.end_request();
        self.opened = false;
        let connects = self.connects;
        self.set_state(ReadyState::Closed);
        let carried_on = |m: &Self| m.state != ReadyState::Closed || m.connects != connects;
        if carried_on(self) {
            return;
        }
        if let Some(error) = error {
            self.emit(On::Error, error.line());
        }
        if carried_on(self) {
            return;
        }
        if std::mem::take(&mut self.announced) {
            self.emit(On::Disconnected, "disconnected".to_string());
        }
    }
}

/// The test's side of [`Model::call`].
fn user_call(sse: &SseClient, what: What, again: &HttpRequest) {
    match what {
        What::Disconnect => sse.disconnect(),
        What::Connect(id) => {
            let mut request = again.clone();
            if let Some(k) = id {
                request.set_header("Last-Event-ID", (2000 + k).to_string());
            }
            sse.connect(request);
        }
        What::SetId(id) => {
            sse.set_last_event_id(&id.map(|k| (1000 + k).to_string()).unwrap_or_default())
        }
        What::SetTime(ms) => sse.set_reconnection_time(Duration::from_millis(ms.into())),
        What::AutoOff => sse.set_auto_reconnect(false),
    }
}

fn describe(error: &SseError) -> String {
    let what = match error {
        SseError::Http(e) if e.is_timeout() => "http timeout".to_string(),
        SseError::Http(_) => "http".to_string(),
        SseError::BadStatus { status, .. } => format!("status {status}"),
        SseError::BadContentType { .. } => "type".to_string(),
        SseError::Redirect(_) => "redirect".to_string(),
        SseError::Throttled {
            status,
            retry_after,
            ..
        } => format!("throttled {status} {retry_after:?}"),
        other => format!("{other:?}"),
    };
    let fatal = if error.is_fatal() {
        "fatal"
    } else {
        "not fatal"
    };
    format!("error {what} ({fatal})")
}

// ---- a case ----------------------------------------------------------------------------------

static CASES: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy)]
enum Stat {
    Requests,
    Redirects,
    RedirectLimit,
    Waits,
    BackedOff,
    Throttled,
    Timeouts,
    Fatal,
    Actions,
    Outside,
    Tls,
    Chunked,
    Gzip,
    Split,
    Idle,
    Nested,
    SetAside,
    Probes,
}

const STAT_NAMES: [&str; 18] = [
    "requests",
    "redirects followed",
    "redirect limits hit",
    "reconnect waits measured",
    "waits after failures",
    "throttled retries",
    "read timeouts",
    "fatal ends",
    "slot calls",
    "calls from outside (waiting)",
    "HTTPS cases",
    "chunked streams",
    "gzip streams",
    "streams written in split pieces",
    "idle streams kept alive by comments",
    "slot calls inside another slot's call",
    "cases set aside (a request stopped as sent, an outside call racing unsignalled blocks)",
    "last event IDs read while a stream was idle",
];
static STATS: [AtomicUsize; 18] = [const { AtomicUsize::new(0) }; 18];

fn count(stat: Stat) {
    count_n(stat, 1);
}

fn count_n(stat: Stat, n: usize) {
    STATS[stat as usize].fetch_add(n, Ordering::Relaxed);
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    let model = Model::run(case);
    if model.unsure {
        count(Stat::SetAside);
        return Err(TestCaseError::reject(
            "a request stopped as sent, or an outside call racing unsignalled blocks",
        ));
    }
    CASES.fetch_add(1, Ordering::SeqCst);
    for line in &model.log {
        if line.starts_with("error throttled") {
            count(Stat::Throttled);
        } else if line.starts_with("error http timeout") {
            count(Stat::Timeouts);
        } else if line.contains("(fatal)") {
            count(Stat::Fatal);
        }
    }
    for expected in &model.requests {
        count(Stat::Requests);
        if let Some((_, least, _)) = expected.wait {
            count(Stat::Waits);
            if least >= 10 && least > case.reconnection_ms {
                count(Stat::BackedOff);
            }
        }
    }
    for _ in model.fired.iter().filter(|&&f| f) {
        count(Stat::Actions);
    }
    if model.outside_at.is_some() {
        count(Stat::Outside);
    }
    if case.tls {
        count(Stat::Tls);
    }
    count_n(Stat::Nested, model.nested);
    // The streams the client asked for (the script's first answers).
    for answer in case.script.iter().take(model.requests.len()) {
        if let Answer::Stream(_, end, body) = answer {
            for (on, stat) in [
                (body.chunked, Stat::Chunked),
                (body.gzip, Stat::Gzip),
                (!body.splits.is_empty(), Stat::Split),
                (matches!(end, End::Idle(_)), Stat::Idle),
            ] {
                if on {
                    count(stat);
                }
            }
        }
    }

    let servers = Servers::start(&case.script, case.tls);
    let sse = SseClient::new().unwrap();
    if case.tls {
        let pki = support::certs::test_pki();
        sse.http_client()
            .update_session(|s| s.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap());
    }
    sse.set_reconnection_time(Duration::from_millis(case.reconnection_ms));
    sse.set_max_reconnection_delay(Duration::from_millis(case.max_delay_ms));
    sse.set_retry_on_throttle(case.retry_throttled);
    sse.set_auto_reconnect(case.auto_reconnect);
    sse.set_read_timeout(case.read_timeout());
    sse.set_flush_unterminated_event(case.flush);
    let log: Rc<RefCell<Vec<(String, Instant)>>> = Rc::default();
    let note: Rc<dyn Fn(String)> = {
        let log = log.clone();
        Rc::new(move |line| log.borrow_mut().push((line, Instant::now())))
    };
    let request = |path: &str| {
        let url = servers.url(path);
        if case.post {
            HttpRequest::post(&url, "q=1").unwrap()
        } else {
            HttpRequest::get(&url).unwrap()
        }
        .with_header("Authorization", "Bearer t")
        .with_max_redirects(case.max_redirects)
    };
    {
        let (note, weak) = (note.clone(), Rc::downgrade(&sse));
        sse.message_received
            .connect(move |event| {
                let sse = weak.upgrade().unwrap();
                note(format!(
                    "msg {}|{}|{} @{:?}",
                    event.data(),
                    event.last_event_id(),
                    sse.last_event_id(),
                    sse.ready_state()
                ));
            })
            .release();
    }
    macro_rules! log_signal {
        ($signal:ident, |$value:ident| $text:expr) => {{
            let (note, weak) = (note.clone(), Rc::downgrade(&sse));
            sse.$signal
                .connect(move |$value| {
                    let state = weak.upgrade().unwrap().ready_state();
                    note(format!("{} @{state:?}", $text))
                })
                .release();
        }};
    }
    log_signal!(opened, |_r| "opened");
    log_signal!(connected, |_u| "connected");
    log_signal!(disconnected, |_u| "disconnected");
    log_signal!(error, |error| describe(error));
    {
        let note = note.clone();
        sse.state_changed
            .connect(move |state| note(format!("state {state:?}")))
            .release();
    }
    // The acting slots, each after the logging one of its signal (one per signal).
    for act in &case.actions {
        let weak = Rc::downgrade(&sse);
        let again = request("/again");
        let seen = Cell::new(0);
        let act = *act;
        let call = move || {
            seen.set(seen.get() + 1);
            if seen.get() != act.n {
                return;
            }
            user_call(&weak.upgrade().unwrap(), act.what, &again);
        };
        match act.on {
            On::State(wanted) => sse.state_changed.connect(move |state| {
                if *state == wanted {
                    call();
                }
            }),
            On::Opened => sse.opened.connect(move |_| call()),
            On::Connected => sse.connected.connect(move |_| call()),
            On::Message => sse.message_received.connect(move |_| call()),
            On::Error => sse.error.connect(move |_| call()),
            On::Disconnected => sse.disconnected.connect(move |_| call()),
        }
        .release();
    }

    let started = Instant::now();
    sse.connect(request("/events"));
    let waits: u64 = model
        .requests
        .iter()
        .filter_map(|r| r.wait.map(|(_, _, most)| most))
        .sum();
    let limit = Duration::from_millis(10_000 + waits * 2);
    let mut outside = model.outside_at;
    for (at, expected) in &model.probes {
        if let Some(o) = outside.filter(|o| o < at) {
            // Between loop turns, the client waiting as the model says (or the log shows
            // otherwise).
            run_until(event_loop, limit, || log.borrow().len() >= o);
            user_call(&sse, case.outside.unwrap().1, &request("/again"));
            outside = None;
        }
        // An idle stream's blocks all came (in reads a moment apart, maybe): the client's ID
        // counts their `id:`-only blocks. (Unless a loaded machine let the stream end first.)
        run_until(event_loop, limit, || log.borrow().len() >= *at);
        run_until(event_loop, Duration::from_millis(120), || {
            log.borrow().len() > *at
        });
        if log.borrow().len() == *at {
            count(Stat::Probes);
            prop_assert_eq!(&sse.last_event_id(), expected, "last_event_id() while idle");
        }
    }
    if let Some(at) = outside {
        // Between loop turns, the client waiting as the model says (or the log shows otherwise).
        run_until(event_loop, limit, || log.borrow().len() >= at);
        user_call(&sse, case.outside.unwrap().1, &request("/again"));
    }
    let wanted = model.log.len();
    run_until(event_loop, limit, || log.borrow().len() >= wanted);
    // Anything more (a reconnect, a late signal) would show within this.
    run_until(event_loop, Duration::from_millis(30), || false);
    let state = sse.ready_state();
    let reconnection = sse.reconnection_time();
    let last_id = sse.last_event_id();
    sse.disconnect();
    drop(sse);
    if started.elapsed() > Duration::from_secs(3) {
        eprintln!("slow case ({:?}): {case:?}", started.elapsed());
    }
    let got: Vec<String> = log.borrow().iter().map(|(line, _)| line.clone()).collect();
    // Independent of the model: `disconnected` pairs with `connected`, one for each and none
    // else, as a `TcpSocket`'s (the client ended `Closed`: no stream is left open).
    let mut open = false;
    for line in &got {
        if line.starts_with("connected @") {
            prop_assert!(!open, "connected twice: {:?}", got);
            open = true;
        } else if line.starts_with("disconnected @") {
            prop_assert!(open, "disconnected without connected: {:?}", got);
            open = false;
        }
    }
    prop_assert!(
        !open || state != ReadyState::Closed,
        "connected without disconnected: {:?}",
        got
    );
    prop_assert_eq!(&got, &model.log, "signal log (left: got)");
    let seen = servers.seen();
    let requests: Vec<Req> = seen.iter().map(|(req, _)| req.clone()).collect();
    let expected: Vec<Req> = model.requests.iter().map(|e| e.req.clone()).collect();
    prop_assert_eq!(requests, expected, "requests (left: got)");
    prop_assert_eq!(state, ReadyState::Closed);
    prop_assert_eq!(&last_id, &model.last_id, "last_event_id()");
    prop_assert_eq!(
        reconnection,
        Duration::from_millis(model.reconnection),
        "reconnection_time()"
    );
    let times = log.borrow();
    for (i, expected) in model.requests.iter().enumerate() {
        let Some((line, least, most)) = expected.wait else {
            continue;
        };
        let waited = seen[i].1.saturating_duration_since(times[line].1);
        let ms = waited.as_millis() as u64;
        prop_assert!(
            ms + 1 >= least && ms <= most + WAIT_SLACK_MS,
            "request {} came {:?} after {:?}; the model says {}..={} ms",
            i,
            waited,
            times[line].0,
            least,
            most
        );
    }
    Ok(())
}

// ---- strategies ------------------------------------------------------------------------------

fn item() -> impl Strategy<Value = Item> {
    let id = prop_oneof![7 => Just(Id::Seq), 1 => Just(Id::Empty), 2 => Just(Id::Absent)];
    prop_oneof![
        8 => (id, prop::option::weighted(0.25, 1u8..=8))
            .prop_map(|(id, retry)| Item::Event { id, retry }),
        1 => Just(Item::IdOnly),
        1 => (1u8..=8).prop_map(Item::RetryOnly),
        1 => Just(Item::Comment),
    ]
}

/// Whether idle streams may outlast the 5 s that make an attempt a success (slow: only when
/// `SSE_MODEL_LONG_IDLE` is set, for long runs).
fn long_idle() -> bool {
    std::env::var_os("SSE_MODEL_LONG_IDLE").is_some()
}

/// An idle stream that stays open at least this long counts as a success, one of at most
/// [`SHORT_IDLE_MS`] as a failure (unless it delivered an event): 5 s lies between.
const LASTING_IDLE_MS: u16 = 5_600;
const SHORT_IDLE_MS: u16 = 700;

fn body() -> impl Strategy<Value = Body> {
    (
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::collection::vec(any::<prop::sample::Index>(), 0..=3),
    )
        .prop_map(|(chunked, gzip, splits)| Body {
            chunked,
            gzip,
            splits,
        })
}

fn answer() -> impl Strategy<Value = Answer> {
    let idle = if long_idle() {
        prop_oneof![3 => 350..=SHORT_IDLE_MS, 1 => Just(LASTING_IDLE_MS)].boxed()
    } else {
        (350..=SHORT_IDLE_MS).boxed()
    };
    let end = prop_oneof![
        3 => Just(End::Close),
        1 => Just(End::Unterminated),
        3 => Just(End::Length),
        2 => Just(End::Cut),
        1 => Just(End::Silent),
        1 => idle.prop_map(End::Idle),
    ];
    let location = prop_oneof![
        8 => (0usize..3, any::<bool>()).prop_map(|(to, relative)| Location::Server(to, relative)),
        1 => Just(Location::Missing),
        1 => Just(Location::Bad),
    ];
    let wait = prop_oneof![
        Just(Wait::Unsaid),
        Just(Wait::Zero),
        (1u8..=3).prop_map(Wait::Seconds),
        (0u8..=40, any::<bool>()).prop_map(|(ms, seconds)| Wait::Ms(ms, seconds)),
    ];
    prop_oneof![
        8 => (prop::collection::vec(item(), 0..=4), end, body())
            .prop_map(|(items, end, body)| Answer::Stream(items, end, body)),
        3 => (prop::sample::select(vec![301u16, 302, 303, 307, 308]), location)
            .prop_map(|(status, location)| Answer::Redirect(status, location)),
        2 => Just(Answer::PartialHead),
        3 => (
            prop::sample::select(vec![429u16, 503]),
            wait,
            prop::bool::weighted(0.15)
        )
            .prop_map(|(status, wait, futile)| Answer::Throttle { status, wait, futile }),
        1 => prop::sample::select(vec![204u16, 404, 500]).prop_map(Answer::Refuse),
        1 => prop::sample::select(vec![Some("text/plain"), None, Some("text/event-streams")])
            .prop_map(Answer::WrongType),
    ]
}

fn what() -> impl Strategy<Value = What> {
    prop_oneof![
        Just(What::Disconnect),
        prop::option::of(0u32..10).prop_map(What::Connect),
        prop::option::weighted(0.8, 0u32..10).prop_map(What::SetId),
        (1u8..=8).prop_map(What::SetTime),
        Just(What::AutoOff),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    (prop::sample::select(On::ALL.to_vec()), 1usize..=3, what()).prop_map(|(on, n, what)| Act {
        on,
        n,
        what,
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(answer(), 1..=6),
        any::<bool>(),
        1u32..=3,
        1u64..=8,
        prop_oneof![9 => 10u64..=30, 1 => 250u64..=400],
        (prop::bool::weighted(0.7), prop::bool::weighted(0.85)),
        (
            prop_oneof![
                3 => prop::collection::vec(act(), 0..=3),
                2 => nested(),
            ],
            prop::option::weighted(0.4, (0usize..=1, what())),
            prop::bool::weighted(0.3),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(script, post, max_redirects, reconnection_ms, max_delay_ms, flags, calls)| {
                let (retry_throttled, auto_reconnect) = flags;
                let (actions, outside, tls, flush) = calls;
                Case {
                    script,
                    post,
                    max_redirects,
                    reconnection_ms,
                    max_delay_ms,
                    retry_throttled,
                    auto_reconnect,
                    actions,
                    outside,
                    tls,
                    flush,
                }
            },
        )
}

/// A slot that connects again (from a stream's end: `state_changed(Closed)`, `error`,
/// `disconnected`, or `state_changed(Connecting)`; or from an event, a stream's flushed last
/// one included) and a slot of another of the new stream's
/// signals that disconnects or connects again in turn, sometimes a third call after them.
fn nested() -> impl Strategy<Value = Vec<Act>> {
    let first = prop::sample::select(vec![
        On::State(ReadyState::Closed),
        On::State(ReadyState::Connecting),
        On::Error,
        On::Disconnected,
        On::Message,
    ]);
    let second = prop::sample::select(vec![
        On::State(ReadyState::Connecting),
        On::State(ReadyState::Closed),
        On::State(ReadyState::Open),
        On::Opened,
        On::Connected,
        On::Message,
    ]);
    let again = prop_oneof![
        3 => Just(What::Disconnect),
        1 => prop::option::of(0u32..10).prop_map(What::Connect),
    ];
    (
        first,
        1usize..=2,
        prop::option::of(0u32..10),
        second,
        1usize..=3,
        again,
        prop::option::weighted(0.3, act()),
    )
        .prop_map(|(on, n, id, then_on, then_n, then, third)| {
            let mut acts = vec![
                Act {
                    on,
                    n,
                    what: What::Connect(id),
                },
                Act {
                    on: then_on,
                    n: then_n,
                    what: then,
                },
            ];
            acts.extend(third);
            acts
        })
}

/// `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> Config {
    Config {
        max_shrink_iters: 500,
        max_shrink_time: 120_000,
        ..support::model::config(default)
    }
}

#[test]
fn sse_client_reconnects_as_the_model_says() {
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(config(48));
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
