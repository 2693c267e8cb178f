//! A randomised, model-based test of how `SseClient` reconnects: redirects, refusals, throttling,
//! read timeouts, the backoff schedule, and user calls from its slots.
//!
//! Three loopback servers answer the client's requests, one scripted answer per request in arrival
//! order (after the script, `204`): a redirect (301, 302, 303, 307, 308) to a path on any of the
//! three servers (by a relative or absolute `Location`), or without a `Location`, or to an `ftp:`
//! URL; a `200 text/event-stream` with 0–3 events numbered on from the `Last-Event-ID` received
//! (some without `id:`, some with a `retry:` of 1–8 ms) that ends cleanly (closed, or an exact
//! `Content-Length`), is cut short of its `Content-Length`, or goes silent until the client's read
//! timeout; a response head cut off (a network error); a 429 or 503, with no wait, a `Retry-After`
//! of 0–3 s, or `retry-after-ms` (with a `Retry-After: 2` beside it that must lose), some saying
//! `x-should-retry: false`; a 204, 404 or 500; a 200 of another type or none. The request is a GET
//! or a POST with a body, with `Authorization`, at most 1–3 redirects; retrying on throttling is on
//! or off; the reconnection time is 1–8 ms, the maximum delay 10–30 ms or (in some cases) 250–400
//! ms; auto reconnect is on or (in some cases) off. In some cases one or two slots (of different
//! signals: `state_changed` for a given state, `opened`, `connected`, `message_received`, `error`,
//! `disconnected`) call `disconnect()`, `connect()` (another path, some with a `Last-Event-ID`
//! header), `set_last_event_id`, `set_reconnection_time` or `set_auto_reconnect(false)` at their
//! n-th emission; in some, the test makes one such call from outside any slot while the client
//! waits: on a silent stream after its events, or for a reconnect of at least 100 ms (a later loop
//! turn's timer, whatever a loaded machine does).
//!
//! The model is the documented behaviour (module, `SseClient`, signal and `SseError` docs; the
//! WHATWG rules; the redirect table of `http::redirect`): each redirect is followed up to the
//! request's limit, with the method and body the table gives, `Last-Event-ID` on every hop and
//! `Authorization` until a hop leaves the first server's origin; every reconnect and `connect()`
//! starts again from its request's own URL; only a 200 `text/event-stream` opens the stream; 204,
//! other statuses, other types, a redirect that cannot be followed, a throttled answer with
//! retrying off or saying that waiting will not help fail for good (state `Closed`, fatal `error`,
//! `disconnected`); a stream's end, a network error, a read timeout and (retrying on) a throttled
//! answer reconnect (state `Connecting`, `error` if any, `disconnected` for an open stream; with
//! auto reconnect off, they close the client: `Closed`, `error` if any, `disconnected`) after the
//! reconnection time (the last `retry:` delivered) or, after n consecutive failed attempts (an
//! answer that opened no stream, or a stream that delivered no event), at least 100 ms doubled n
//! times, plus up to 25 % jitter, the whole capped at the maximum delay (unless the reconnection
//! time is longer); a throttled answer's wait (`retry-after-ms`, else `Retry-After`), capped at the maximum
//! delay and without jitter, instead when it asks for one that is not 0; `connect()` resets the
//! count. The measured waits (from the last signal before the wait to the server's receipt of the
//! next request) are checked against generous bounds: never shorter than the model's least, never
//! more than 700 ms over its most. A user call in a slot acts as documented: `disconnect()` and
//! `connect()` end what runs (nothing of the old stream follows: no later event, `opened`,
//! `connected`, `error` or `disconnected` of it, but `disconnected` for an open stream the call
//! ended, unless a slot of its `state_changed(Closed)` connected again); a failure's `error` and
//! `disconnected` still come after a `disconnect()` in its `state_changed(Closed)` slot;
//! `set_last_event_id` sets the ID sent next unless the stream in flight delivers an ID of its own
//! after the call; `set_reconnection_time` holds until a later `retry:`; auto reconnect turned off
//! closes the client at the next reconnect, or (from a slot of that reconnect's signals, or during
//! its wait) instead of waiting (`Closed`, `disconnected`). Each signal's line carries
//! `ready_state()` as its slot saw it, each event line its own and the client's last event ID.
//!
//! Not covered: `set_auto_reconnect(true)` and `set_read_timeout` from slots, user calls outside
//! slots in other states (while a request waits for its answer, or during a short reconnect wait),
//! a stream that stays open 5 s (which counts as a success), a `Retry-After` wait under the maximum
//! delay in whole seconds (too slow for a unit test), redirect policies other than the default,
//! HTTPS, chunked bodies, parser details (`sse_client_model.rs` and `sse_parser`).
//!
//! `PROPTEST_CASES` sets the number of cases (default 48, about 6 s in a debug build).

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::TcpStream;
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
use support::{read_request, run_until};

// ---- the script ------------------------------------------------------------------------------

/// One event as the server writes it (its ID comes from its place in the stream).
#[derive(Debug, Clone, Copy)]
struct Ev {
    id: bool,
    retry: Option<u8>,
}

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Close-delimited, closed after its events.
    Close,
    /// An exact `Content-Length`; the connection stays open.
    Length,
    /// A `Content-Length` 20 bytes longer than the events: closed short (a network error).
    Cut,
    /// Close-delimited, then silent until the client gives up (its read timeout).
    Silent,
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
    Stream(Vec<Ev>, End),
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

    fn index(self) -> usize {
        On::ALL.iter().position(|&on| on == self).unwrap()
    }

    /// Which signal: one action slot per signal at most.
    fn signal(self) -> usize {
        match self {
            On::State(_) => 0,
            other => other.index(),
        }
    }
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
}

impl Case {
    fn read_timeout(&self) -> Option<Duration> {
        self.script
            .iter()
            .any(|a| matches!(a, Answer::Stream(_, End::Silent)))
            .then_some(READ_TIMEOUT)
    }
}

/// The read timeout of a case with a silent stream: long enough that a loaded machine's slow
/// answer is not taken for silence.
const READ_TIMEOUT: Duration = Duration::from_millis(250);
/// The least reconnect wait the test calls into from outside: a wait that short cannot have
/// ended within the loop turn that began it.
const QUIET_WAIT_MS: u64 = 100;
/// How far over the model's longest wait a measured one may be (a loaded machine's delays).
const WAIT_SLACK_MS: u64 = 700;

fn event_bytes(seq: u64, ev: Ev) -> String {
    let mut s = String::new();
    if ev.id {
        s += &format!("id: {seq}\n");
    }
    if let Some(retry) = ev.retry {
        s += &format!("retry: {retry}\n");
    }
    s + &format!("data: e{seq}\n\n")
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
}

impl Servers {
    fn start(script: &[Answer]) -> Servers {
        let script = Arc::new(script.to_vec());
        let seen: Arc<Mutex<Vec<(Req, Instant)>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let listeners = {
            let (seen, ports) = (seen.clone(), ports.clone());
            Listeners::start(3, move |me, stream| {
                let ports = ports.lock().unwrap().clone();
                serve(me, stream, &script, &seen, &count, &ports);
            })
        };
        *ports.lock().unwrap() = listeners.ports.clone();
        Servers { listeners, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listeners.ports[0])
    }

    fn seen(&self) -> Vec<(Req, Instant)> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    me: usize,
    mut stream: TcpStream,
    script: &[Answer],
    seen: &Mutex<Vec<(Req, Instant)>>,
    count: &AtomicUsize,
    ports: &[u16],
) {
    let _ = stream.set_nodelay(true);
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    while let Some(request) = read_request(&mut reader) {
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
                        format!("Location: http://127.0.0.1:{}/hop{n}\r\n", ports[to])
                    }
                    Location::Missing => String::new(),
                    Location::Bad => "Location: ftp://127.0.0.1/x\r\n".to_string(),
                };
                (
                    format!("HTTP/1.1 {status} Moved\r\n{field}Content-Length: 0\r\n\r\n"),
                    true,
                )
            }
            Answer::Stream(events, end) => {
                let mut body = String::new();
                for (i, ev) in events.iter().enumerate() {
                    body += &event_bytes(first + 1 + i as u64, *ev);
                }
                let length = match end {
                    End::Length => format!("Content-Length: {}\r\n", body.len()),
                    End::Cut => format!("Content-Length: {}\r\n", body.len() + 20),
                    End::Close | End::Silent => String::new(),
                };
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{length}\r\n");
                (head + &body, *end == End::Length)
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
        if stream.write_all(bytes.as_bytes()).is_err() || stream.flush().is_err() {
            return;
        }
        if matches!(answer, Answer::Stream(_, End::Silent)) {
            // Silent until the client closes (or, should it never, for a while).
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut sink = [0; 256];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        if !keep {
            return;
        }
    }
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
    last_id: String,
    /// An ID set while a request was in flight, and the client's ID at that call.
    pending: Option<(String, String)>,
    path: &'static str,
    in_flight: bool,
    /// The stream's own last event ID (the parser's) while a request is in flight.
    stream_id: String,
    opened: bool,
    failures: u32,
    reconnection: u64,
    auto_reconnect: bool,
    /// The pending reconnect: the log line it is measured from, and its bounds (ms).
    timer: Option<(usize, u64, u64)>,
    counts: [usize; 8],
    fired: Vec<bool>,
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
            last_id: String::new(),
            pending: None,
            path: "/events",
            in_flight: false,
            stream_id: String::new(),
            opened: false,
            failures: 0,
            reconnection: case.reconnection_ms,
            auto_reconnect: case.auto_reconnect,
            timer: None,
            counts: [0; 8],
            fired: vec![false; case.actions.len()],
            quiet: 0,
            outside_at: None,
        };
        m.connect("/events", None);
        loop {
            if m.in_flight {
                m.answer();
            } else if let Some((_, least, _)) = m.timer {
                if least >= QUIET_WAIT_MS {
                    m.quiet_point();
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
        let k = on.index();
        self.counts[k] += 1;
        for i in 0..self.case.actions.len() {
            let act = self.case.actions[i];
            if !self.fired[i] && act.on == on && act.n == self.counts[k] {
                self.fired[i] = true;
                self.call(act.what);
            }
        }
    }

    /// A user's call (from a slot, or from outside at a quiet point).
    fn call(&mut self, what: What) {
        match what {
            What::Disconnect => {
                self.stop(true);
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
    fn quiet_point(&mut self) {
        if let Some((at, what)) = self.case.outside {
            if at == self.quiet {
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
        let stopped = self.stop(false);
        if self.stops != stopped {
            return;
        }
        if let Some(id) = header_id {
            self.set_last_event_id(id);
        }
        self.path = path;
        self.failures = 0;
        self.set_state(ReadyState::Connecting);
        if self.stops == stopped {
            self.open(None);
        }
    }

    /// Stops the stream and any reconnect: `Closed`, then `disconnected` if the client was open
    /// or `notify`, unless a slot of the `Closed` connected again (the client is not `Closed`
    /// any more). Returns the stop count.
    fn stop(&mut self, notify: bool) -> u64 {
        self.stops += 1;
        let stopped = self.stops;
        let was = self.state;
        self.opened = false;
        self.in_flight = false;
        self.timer = None;
        self.pending = None;
        if was != ReadyState::Closed {
            self.set_state(ReadyState::Closed);
            if (notify || was == ReadyState::Open) && self.state == ReadyState::Closed {
                self.emit(On::Disconnected, "disconnected".to_string());
            }
        }
        stopped
    }

    fn set_last_event_id(&mut self, id: String) {
        let before = std::mem::replace(&mut self.last_id, id.clone());
        if self.in_flight {
            let at = match self.pending.take() {
                Some((_, at)) => at,
                None => before,
            };
            self.pending = Some((id, at));
        }
    }

    /// The client's ID follows the stream's as its events are delivered, unless the user set
    /// one that the stream has not moved past.
    fn follow(&mut self) {
        match &self.pending {
            Some((_, at)) if *at == self.stream_id => {}
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
                Answer::Stream(events, end) => return self.stream(&last, &events, end),
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
        // already; one it moved past was dropped at that event.
        self.pending = None;
    }

    fn stream(&mut self, request: &Req, events: &[Ev], end: End) {
        let stopped = self.stops;
        self.opened = true;
        self.set_state(ReadyState::Open);
        let open = |m: &Self| m.stops == stopped && m.state == ReadyState::Open;
        if open(self) {
            self.emit(On::Opened, "opened".to_string());
        }
        if open(self) {
            self.emit(On::Connected, "connected".to_string());
        }
        let first: u64 = request
            .last_event_id
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut delivered = false;
        for (i, ev) in events.iter().enumerate() {
            if !open(self) {
                break;
            }
            let seq = first + 1 + i as u64;
            if let Some(retry) = ev.retry {
                self.reconnection = retry.into();
            }
            if ev.id {
                self.stream_id = seq.to_string();
            }
            delivered = true;
            self.follow();
            let line = format!("msg e{seq}|{}|{}", self.stream_id, self.last_id);
            self.emit(On::Message, line);
        }
        if self.stops != stopped {
            return;
        }
        if end == End::Silent {
            self.quiet_point();
            if self.stops != stopped {
                return;
            }
        }
        self.end_request();
        if delivered {
            self.failures = 0;
        } else {
            self.failures += 1;
        }
        let error = match end {
            End::Close | End::Length => None,
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
        let was_open = std::mem::take(&mut self.opened);
        let stopped = self.stops;
        self.set_state(ReadyState::Connecting);
        if self.stops != stopped {
            return;
        }
        if let Some(error) = error {
            self.emit(On::Error, error.line());
        }
        if was_open && self.stops == stopped {
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
    /// any, `disconnected` (nothing more once a slot connected again: the client is not `Closed`
    /// any more).
    fn fail(&mut self, error: Option<Failure>) {
        self.end_request();
        self.opened = false;
        self.set_state(ReadyState::Closed);
        if self.state != ReadyState::Closed {
            return;
        }
        if let Some(error) = error {
            self.emit(On::Error, error.line());
        }
        if self.state != ReadyState::Closed {
            return;
        }
        self.emit(On::Disconnected, "disconnected".to_string());
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
}

const STAT_NAMES: [&str; 10] = [
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
];
static STATS: [AtomicUsize; 10] = [const { AtomicUsize::new(0) }; 10];

fn count(stat: Stat) {
    STATS[stat as usize].fetch_add(1, Ordering::Relaxed);
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::SeqCst);
    let model = Model::run(case);
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

    let servers = Servers::start(&case.script);
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(case.reconnection_ms));
    sse.set_max_reconnection_delay(Duration::from_millis(case.max_delay_ms));
    sse.set_retry_on_throttle(case.retry_throttled);
    sse.set_auto_reconnect(case.auto_reconnect);
    sse.set_read_timeout(case.read_timeout());
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
    if let Some(at) = model.outside_at {
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

fn ev() -> impl Strategy<Value = Ev> {
    (
        prop::bool::weighted(0.8),
        prop::option::weighted(0.25, 1u8..=8),
    )
        .prop_map(|(id, retry)| Ev { id, retry })
}

fn answer() -> impl Strategy<Value = Answer> {
    let end = prop_oneof![
        4 => Just(End::Close),
        3 => Just(End::Length),
        2 => Just(End::Cut),
        1 => Just(End::Silent),
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
        8 => (prop::collection::vec(ev(), 0..=3), end)
            .prop_map(|(events, end)| Answer::Stream(events, end)),
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
            prop::collection::vec(act(), 0..=2),
            prop::option::weighted(0.4, (0usize..=1, what())),
        ),
    )
        .prop_map(
            |(script, post, max_redirects, reconnection_ms, max_delay_ms, flags, calls)| {
                let (retry_throttled, auto_reconnect) = flags;
                let (mut actions, outside) = calls;
                // One acting slot per signal.
                if actions.len() == 2 && actions[0].on.signal() == actions[1].on.signal() {
                    actions.pop();
                }
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
                }
            },
        )
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
