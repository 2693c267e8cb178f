//! A randomised, model-based test of `SseClient` against a scripted loopback server.
//!
//! Each generated case scripts the server's answers, one per request: a `200 text/event-stream`
//! with 1–4 events numbered on from the `Last-Event-ID` the client sent (some without an `id:`
//! field; some with a `retry:` of 1–30 ms, a comment line, an `event:` type, up to three `data:`
//! lines, a block before them that dispatches nothing: a comment, a `retry:` or an `id:` only;
//! LF, CRLF or CR line ends; written in one to three pieces) that then ends in one of four
//! ways: a clean close of a close-delimited body, a close cut inside the next event (before its
//! blank line), a `Content-Length` body cut short the same way (a network error), or an exact
//! `Content-Length` body (the connection may be reused). The last answer is a 204, 404 or 500
//! (fatal: no reconnect) or a stream kept open. In some cases a slot of `message_received`,
//! `connected` or `state_changed(Connecting)` (of `connect()` or of a reconnect) calls
//! `disconnect()` at a chosen emission.
//!
//! The model is the documented behaviour (module and `SseClient` docs, WHATWG rules): every
//! event the server sent whole is delivered once per time it was sent, in order, across
//! reconnects (an event without an ID is sent again after a reconnect: the server resumes after
//! the last ID), a cut-off one never; an `id:` counts once its block ends, one in a cut-off
//! block never; each request carries the `Last-Event-ID` counted so far (none while it is
//! empty); a slot sees `last_event_id()` equal to its event's and the state `Open`;
//! `reconnection_time()` ends as the last `retry:` line received whole (a cut-off event's
//! included; none after a slot's disconnect); the signals come in the order of the module docs'
//! diagram (`state_changed(Open)`, `opened`, `connected`, events, then
//! `state_changed(Connecting)`, `error` for a network error, `disconnected`, ... and
//! `state_changed(Closed)`, fatal `error` for a refused answer; `disconnected` once for each
//! `connected`, never else); after a refusal or a `disconnect()` nothing more is emitted and no
//! request is made.
//!
//! Not covered here: redirects, throttling (429/503 with retry on), read timeouts, backoff
//! timing, `set_last_event_id`, user calls other than `disconnect()` (those are
//! `sse_client_reconnect_model.rs`'s), chunked bodies.
//!
//! `PROPTEST_CASES` sets the number of cases (default 100, about 7 s in a debug build).

mod support;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{ReadyState, SseClient, SseError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{read_request, run_until};

/// One event as the server writes it (its ID comes from its place in the stream).
#[derive(Debug, Clone)]
struct Ev {
    /// A block before the event that dispatches nothing.
    ping: Option<Ping>,
    /// The event has no `id:` field (its last event ID is the one before).
    no_id: bool,
    lines: u8,
    retry: Option<u8>,
    comment: bool,
    typed: bool,
}

/// A block without data, which dispatches no event.
#[derive(Debug, Clone, Copy)]
enum Ping {
    /// A comment only.
    Comment,
    /// A `retry:` only.
    Retry(u8),
    /// An `id:` only: it takes the next number, and counts as the last event ID.
    Id,
}

/// How an answer that opens a stream ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Close-delimited body, closed after its events.
    Close,
    /// Close-delimited body, closed inside the next event (the number picks where).
    Cut(u16),
    /// `Content-Length` of the events and the whole next event; closed inside that event.
    CutLength(u16),
    /// `Content-Length` of exactly the events; the connection stays open for reuse.
    ExactLength,
}

/// One answer that opens a stream, which then ends (and the client reconnects).
#[derive(Debug, Clone)]
struct Conn {
    events: Vec<Ev>,
    eol: u8,
    end: End,
    /// The event that is cut off (for `Cut`, `CutLength`).
    cut: Ev,
    pieces: u64,
}

/// The last answer.
#[derive(Debug, Clone)]
enum Last {
    /// A refusal: fatal.
    Status(u16),
    /// A stream with these events, kept open (the test disconnects).
    KeepOpen(Vec<Ev>, u8),
}

/// The signal whose slot disconnects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trigger {
    /// `message_received`.
    Message,
    /// `connected`.
    Connected,
    /// `state_changed(Connecting)`: from `connect()`, or a reconnect after a stream's end.
    Connecting,
}

impl Trigger {
    /// Whether `line` of the log is this trigger's emission.
    fn matches(self, line: &str) -> bool {
        match self {
            Trigger::Message => line.starts_with("msg "),
            Trigger::Connected => line == "connected",
            Trigger::Connecting => line == "state Connecting",
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    conns: Vec<Conn>,
    last: Last,
    /// A slot disconnects at this emission (an index into all emissions of that kind).
    disconnect_at: Option<(Trigger, prop::sample::Index)>,
    reconnection_ms: u64,
}

fn eol(code: u8) -> &'static str {
    ["\n", "\r\n", "\r"][code as usize % 3]
}

/// An event (and its ping block), numbered from `seq` on (which it advances).
fn event_bytes(seq: &mut u64, ev: &Ev, eol: &str) -> String {
    let mut s = String::new();
    match ev.ping {
        Some(Ping::Comment) => s += &format!(": ping{eol}{eol}"),
        Some(Ping::Retry(retry)) => s += &format!("retry: {retry}{eol}{eol}"),
        Some(Ping::Id) => {
            *seq += 1;
            s += &format!("id: {seq}{eol}{eol}");
        }
        None => {}
    }
    *seq += 1;
    let id = *seq;
    if ev.comment {
        s += &format!(": comment {id}{eol}");
    }
    if !ev.no_id {
        s += &format!("id: {id}{eol}");
    }
    if ev.typed {
        s += &format!("event: t{}{eol}", id % 3);
    }
    if let Some(retry) = ev.retry {
        s += &format!("retry: {retry}{eol}");
    }
    for j in 0..ev.lines {
        s += &format!("data: e{id}.{j}{eol}");
    }
    s + eol
}

/// The part of an event (numbered after `seq`) the server sends before it cuts the stream:
/// never its blank line (nor, for CRLF, the blank line's CR). Also the last `retry:` value whose
/// line it sends whole, and the ID of an `id:`-only ping block it sends whole.
fn cut_part(seq: u64, ev: &Ev, eol: &str, at: u16) -> (String, Option<u8>, Option<u64>) {
    let mut next = seq;
    let mut cut = event_bytes(&mut next, ev, eol);
    let keep = at as usize % (cut.len() - eol.len() + 1);
    cut.truncate(keep);
    // The last one whose line end's first character arrived (a CR ends a line).
    let retry = cut
        .match_indices("retry: ")
        .filter_map(|(at, field)| {
            let digits = &cut[at + field.len()..];
            let end = digits.find(['\r', '\n'])?;
            digits[..end].parse().ok()
        })
        .last();
    // An `id:` block counts once its blank line's first character arrived.
    let id = matches!(ev.ping, Some(Ping::Id))
        .then(|| format!("id: {}{eol}{eol}", seq + 1).len() - eol.len() + 1)
        .filter(|&whole| keep >= whole)
        .map(|_| seq + 1);
    (cut, retry, id)
}

/// What a slot should see for event `seq`: `type|data|last event ID`.
fn expected_event(seq: u64, ev: &Ev, last_id: &str) -> String {
    let event_type = if ev.typed {
        format!("t{}", seq % 3)
    } else {
        "message".to_string()
    };
    let data: Vec<String> = (0..ev.lines).map(|j| format!("e{seq}.{j}")).collect();
    format!("msg {event_type}|{}|{last_id}", data.join("\n"))
}

// ---- the server ------------------------------------------------------------------------------

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    /// The `Last-Event-ID` of each request, in order.
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Server {
    fn start(case: &Case) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let case = Arc::new(case.clone());
        let (stop2, seen2) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (case, seen, count) = (case.clone(), seen2.clone(), count.clone());
                std::thread::spawn(move || serve(stream, &case, &seen, &count));
            }
        });
        Server { port, stop, seen }
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Writes `bytes` in up to three pieces (split where `seed` says), flushing each.
fn write_pieces(stream: &mut TcpStream, bytes: &[u8], seed: u64) -> std::io::Result<()> {
    let mut cuts = vec![0, bytes.len()];
    if !bytes.is_empty() {
        for k in 0..(seed % 3) {
            cuts.push(((seed >> (8 + 16 * k)) as usize) % bytes.len());
        }
    }
    cuts.sort_unstable();
    for w in cuts.windows(2) {
        stream.write_all(&bytes[w[0]..w[1]])?;
        stream.flush()?;
    }
    Ok(())
}

fn serve(
    mut stream: TcpStream,
    case: &Case,
    seen: &Mutex<Vec<Option<String>>>,
    count: &AtomicUsize,
) {
    let _ = stream.set_nodelay(true);
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    while let Some(request) = read_request(&mut reader) {
        let last_id = request.header("last-event-id").map(str::to_string);
        seen.lock().unwrap().push(last_id.clone());
        let n = count.fetch_add(1, Ordering::SeqCst);
        let mut id: u64 = last_id.and_then(|v| v.parse().ok()).unwrap_or(0);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n";
        if let Some(conn) = case.conns.get(n) {
            let eol = eol(conn.eol);
            let mut body = String::new();
            for ev in &conn.events {
                body += &event_bytes(&mut id, ev, eol);
            }
            let whole = body.len();
            let cut_len = match conn.end {
                End::Cut(at) | End::CutLength(at) => {
                    body += &cut_part(id, &conn.cut, eol, at).0;
                    event_bytes(&mut id.clone(), &conn.cut, eol).len()
                }
                _ => 0,
            };
            let head = match conn.end {
                End::Close | End::Cut(_) => format!("{head}\r\n"),
                End::CutLength(_) => format!("{head}Content-Length: {}\r\n\r\n", whole + cut_len),
                End::ExactLength => format!("{head}Content-Length: {whole}\r\n\r\n"),
            };
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            if write_pieces(&mut stream, &bytes, conn.pieces).is_err() {
                return;
            }
            if !matches!(conn.end, End::ExactLength) {
                return;
            }
        } else if n == case.conns.len() {
            match &case.last {
                Last::Status(status) => {
                    let answer = if *status == 204 {
                        "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 {status} Oops\r\nContent-Length: 4\r\n\r\nnope")
                    };
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
                Last::KeepOpen(events, code) => {
                    let mut body = format!("{head}\r\n");
                    for ev in events {
                        body += &event_bytes(&mut id, ev, eol(*code));
                    }
                    if stream.write_all(body.as_bytes()).is_err() {
                        return;
                    }
                    // Open until the client closes.
                    let mut sink = [0; 256];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    return;
                }
            }
        } else {
            // A request the model does not expect (recorded above): refuse it.
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
        }
    }
}

// ---- the model -------------------------------------------------------------------------------

struct Expected {
    /// The whole signal log.
    log: Vec<String>,
    /// The `Last-Event-ID` of each request.
    requests: Vec<Option<String>>,
    /// `last_event_id()` at the end.
    last_id: String,
    /// `reconnection_time()` at the end.
    reconnection: Duration,
    /// Whether the test must call `disconnect()` itself (a stream kept open, no slot's
    /// disconnect).
    test_disconnects: bool,
    /// The slot that disconnects, and at which of its emissions (counted from 1).
    slot_disconnect: Option<(Trigger, usize)>,
}

/// The model: the log of a run without a slot's disconnect, with the client's last event ID and
/// reconnection time after each line (and the `Last-Event-ID` of each request, by the number
/// of log lines before it), then cut at the slot's disconnect if there is one.
fn model(case: &Case) -> Expected {
    struct Run {
        log: Vec<(String, Option<u64>, u64)>,
        requests: Vec<(usize, Option<String>)>,
        last: Option<u64>,
        reconnection: u64,
    }
    impl Run {
        fn push(&mut self, line: impl Into<String>) {
            self.log.push((line.into(), self.last, self.reconnection));
        }
        fn request(&mut self) {
            let id = self.last.map(|id| id.to_string());
            self.requests.push((self.log.len(), id));
        }
        fn text(&self) -> String {
            self.last.map(|id| id.to_string()).unwrap_or_default()
        }
        /// The events of one stream, numbered on from the ID the client sent.
        fn events(&mut self, evs: &[Ev]) -> u64 {
            let mut seq = self.last.unwrap_or(0);
            for ev in evs {
                match ev.ping {
                    Some(Ping::Retry(retry)) => self.reconnection = u64::from(retry),
                    Some(Ping::Id) => {
                        seq += 1;
                        self.last = Some(seq);
                    }
                    _ => {}
                }
                seq += 1;
                if !ev.no_id {
                    self.last = Some(seq);
                }
                if let Some(retry) = ev.retry {
                    self.reconnection = u64::from(retry);
                }
                let line = expected_event(seq, ev, &self.text());
                self.push(line);
            }
            seq
        }
        fn open(&mut self) {
            for line in ["state Open", "opened", "connected"] {
                self.push(line);
            }
        }
    }
    let mut run = Run {
        log: Vec::new(),
        requests: Vec::new(),
        last: None,
        reconnection: case.reconnection_ms,
    };
    run.push("state Connecting");
    for conn in &case.conns {
        run.request();
        run.open();
        let seq = run.events(&conn.events);
        if let End::Cut(at) | End::CutLength(at) = conn.end {
            let (_, retry, id) = cut_part(seq, &conn.cut, eol(conn.eol), at);
            if let Some(retry) = retry {
                count(10, 1);
                run.reconnection = u64::from(retry);
            }
            if let Some(id) = id {
                count(11, 1);
                run.last = Some(id);
            }
        }
        run.push("state Connecting");
        if matches!(conn.end, End::CutLength(_)) {
            run.push("error http (not fatal)");
        }
        run.push("disconnected");
    }
    run.request();
    let mut test_disconnects = false;
    match &case.last {
        Last::Status(status) => {
            // (No `disconnected`: it pairs with a `connected`, and this answer never opened.)
            run.push("state Closed");
            run.push(format!("error status {status} (fatal)"));
        }
        Last::KeepOpen(evs, _) => {
            run.open();
            run.events(evs);
            run.push("state Closed");
            run.push("disconnected");
            test_disconnects = true;
        }
    }
    // A slot's disconnect: the log ends with its `state_changed(Closed)`, and `disconnected` if
    // a `connected` came that no `disconnected` followed yet (one for each `connected`).
    let cut = case.disconnect_at.and_then(|(trigger, index)| {
        let at: Vec<usize> = (0..run.log.len())
            .filter(|&i| trigger.matches(&run.log[i].0))
            .collect();
        (!at.is_empty()).then(|| {
            let n = index.index(at.len());
            (trigger, n + 1, at[n])
        })
    });
    let (end, slot_disconnect) = match cut {
        Some((trigger, n, line)) => {
            test_disconnects = false;
            run.log.truncate(line + 1);
            let last = |what: &str| run.log.iter().rposition(|(l, _, _)| l == what);
            let announced = last("connected") > last("disconnected");
            run.push("state Closed");
            if announced {
                run.push("disconnected");
            }
            (line, Some((trigger, n)))
        }
        None => (run.log.len() - 1, None),
    };
    let (_, last, reconnection) = run.log[end].clone();
    Expected {
        log: run.log.into_iter().map(|(line, _, _)| line).collect(),
        requests: run
            .requests
            .into_iter()
            .filter(|&(before, _)| before <= end)
            .map(|(_, id)| id)
            .collect(),
        last_id: last.map(|id| id.to_string()).unwrap_or_default(),
        reconnection: Duration::from_millis(reconnection),
        test_disconnects,
        slot_disconnect,
    }
}

fn describe(error: &SseError) -> String {
    let what = match error {
        SseError::Http(_) => "http".to_string(),
        SseError::BadStatus { status, .. } => format!("status {status}"),
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

/// What the cases exercised (printed at the end, to see that they do).
const STAT_NAMES: [&str; 13] = [
    "events delivered",
    "ends: close",
    "ends: cut",
    "ends: cut Content-Length",
    "ends: exact Content-Length",
    "last: refused",
    "last: kept open",
    "slot disconnects",
    "retry fields",
    "ping blocks",
    "retry lines in cut-off events",
    "id blocks before a cut",
    "events without id",
];
static STATS: [AtomicUsize; 13] = [const { AtomicUsize::new(0) }; 13];

fn count(stat: usize, n: usize) {
    STATS[stat].fetch_add(n, Ordering::Relaxed);
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::SeqCst);
    let expected = model(case);
    count(
        0,
        expected
            .log
            .iter()
            .filter(|l| l.starts_with("msg "))
            .count(),
    );
    for conn in &case.conns {
        count(
            match conn.end {
                End::Close => 1,
                End::Cut(_) => 2,
                End::CutLength(_) => 3,
                End::ExactLength => 4,
            },
            1,
        );
        count(8, conn.events.iter().filter(|e| e.retry.is_some()).count());
        count(9, conn.events.iter().filter(|e| e.ping.is_some()).count());
        count(12, conn.events.iter().filter(|e| e.no_id).count());
    }
    count(
        if matches!(case.last, Last::Status(_)) {
            5
        } else {
            6
        },
        1,
    );
    count(7, usize::from(expected.slot_disconnect.is_some()));
    let server = Server::start(case);
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(case.reconnection_ms));
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let note: Rc<dyn Fn(String)> = {
        let log = log.clone();
        Rc::new(move |line| log.borrow_mut().push(line))
    };
    {
        let (note, weak) = (note.clone(), Rc::downgrade(&sse));
        sse.message_received
            .connect(move |event| {
                let sse = weak.upgrade().unwrap();
                if sse.last_event_id() != event.last_event_id() {
                    note(format!(
                        "slot saw last_event_id {:?}, its event's is {:?}",
                        sse.last_event_id(),
                        event.last_event_id()
                    ));
                }
                if sse.ready_state() != ReadyState::Open {
                    note(format!("slot saw state {:?}", sse.ready_state()));
                }
                let line = format!(
                    "msg {}|{}|{}",
                    event.event_type(),
                    event.data(),
                    event.last_event_id()
                );
                note(line);
            })
            .release();
    }
    macro_rules! log_signal {
        ($signal:ident, |$value:ident| $text:expr) => {{
            let note = note.clone();
            sse.$signal.connect(move |$value| note($text)).release();
        }};
    }
    log_signal!(opened, |_r| "opened".to_string());
    log_signal!(connected, |_u| "connected".to_string());
    log_signal!(disconnected, |_u| "disconnected".to_string());
    log_signal!(state_changed, |state| format!("state {state:?}"));
    log_signal!(error, |error| describe(error));
    // The slot that disconnects: one of its own, after the logging slot (a nested emit of
    // `state_changed(Closed)` skips the slot running further up the stack, as the signal docs say,
    // but not the logging one).
    if let Some((trigger, n)) = expected.slot_disconnect {
        let (log, weak) = (log.clone(), Rc::downgrade(&sse));
        let disconnect = move || {
            let sse = weak.upgrade().unwrap();
            let at = {
                let log = log.borrow();
                let seen = log.iter().filter(|l| trigger.matches(l)).count();
                seen == n && log.last().is_some_and(|l| trigger.matches(l))
            };
            if at {
                sse.disconnect();
            }
        };
        match trigger {
            Trigger::Message => sse.message_received.connect(move |_| disconnect()),
            Trigger::Connected => sse.connected.connect(move |_| disconnect()),
            Trigger::Connecting => sse.state_changed.connect(move |_| disconnect()),
        }
        .release();
    }
    let url = format!("http://127.0.0.1:{}/events", server.port);
    sse.connect(HttpRequest::get(&url).unwrap());
    let wanted = expected.log.len() - if expected.test_disconnects { 2 } else { 0 };
    let reached = run_until(event_loop, Duration::from_secs(10), || {
        log.borrow().len() >= wanted
    });
    if reached && expected.test_disconnects {
        sse.disconnect();
    }
    // Anything more (a reconnect, a late signal) would show within this.
    run_until(event_loop, Duration::from_millis(50), || false);
    let state = sse.ready_state();
    let reconnection = sse.reconnection_time();
    let last_id = sse.last_event_id();
    sse.disconnect();
    drop(sse);
    let got = log.borrow().clone();
    prop_assert_eq!(&got, &expected.log, "signal log (left: got)");
    prop_assert_eq!(state, ReadyState::Closed);
    prop_assert_eq!(&last_id, &expected.last_id, "last_event_id()");
    prop_assert_eq!(reconnection, expected.reconnection, "reconnection_time()");
    prop_assert_eq!(
        server.seen(),
        expected.requests,
        "Last-Event-ID per request"
    );
    Ok(())
}

// ---- strategies ------------------------------------------------------------------------------

fn ev() -> impl Strategy<Value = Ev> {
    (
        prop::option::weighted(
            0.25,
            prop_oneof![
                Just(Ping::Comment),
                (1u8..=30).prop_map(Ping::Retry),
                Just(Ping::Id)
            ],
        ),
        prop::bool::weighted(0.2),
        1u8..=3,
        prop::option::weighted(0.3, 1u8..=30),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(ping, no_id, lines, retry, comment, typed)| Ev {
            ping,
            no_id,
            lines,
            retry,
            comment,
            typed,
        })
}

fn conn() -> impl Strategy<Value = Conn> {
    let end = prop_oneof![
        Just(End::Close),
        any::<u16>().prop_map(End::Cut),
        any::<u16>().prop_map(End::CutLength),
        Just(End::ExactLength),
    ];
    (
        prop::collection::vec(ev(), 1..=4),
        0u8..3,
        end,
        ev(),
        any::<u64>(),
    )
        .prop_map(|(events, eol, end, cut, pieces)| Conn {
            events,
            eol,
            end,
            cut,
            pieces,
        })
}

fn case() -> impl Strategy<Value = Case> {
    let last = prop_oneof![
        prop::sample::select(vec![204u16, 404, 500]).prop_map(Last::Status),
        (prop::collection::vec(ev(), 0..=3), 0u8..3).prop_map(|(e, c)| Last::KeepOpen(e, c)),
    ];
    (
        prop::collection::vec(conn(), 0..=3),
        last,
        prop::option::weighted(
            0.35,
            (
                prop_oneof![
                    2 => Just(Trigger::Message),
                    1 => Just(Trigger::Connected),
                    1 => Just(Trigger::Connecting)
                ],
                any::<prop::sample::Index>(),
            ),
        ),
        1u64..=5,
    )
        .prop_map(|(conns, last, disconnect_at, reconnection_ms)| Case {
            conns,
            last,
            disconnect_at,
            reconnection_ms,
        })
}

/// `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> Config {
    Config {
        max_shrink_iters: 500,
        max_shrink_time: 60_000,
        ..support::model::config(default)
    }
}

#[test]
fn sse_client_matches_the_model_across_reconnects() {
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(config(100));
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
