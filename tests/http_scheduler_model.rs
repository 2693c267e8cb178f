//! A randomised, model-based test of `HttpClient`'s request scheduling and connection pool.
//!
//! Each generated case is a script: requests (GET/HEAD/POST with small bodies, buffered or
//! streaming) across three loopback hosts (two ports of 127.0.0.1 and one of ::1), with a
//! `max_connections_per_host` of 1–3 (changed by one callback in some cases) and a long or
//! short idle timeout. Requests are sent at the start, from timers, or from other requests'
//! callbacks (some through a nested `send_and_wait`); some are cancelled (at once, from an
//! `about_to_send_request` slot, from another request's callback, from a timer, or by a
//! `cancel_all` from a callback). For each attempt of each request the script says what its
//! server does: answer (200 or 503, keep-alive or `Connection: close`, `Keep-Alive: timeout=1`,
//! `max=0` or `max=1`, after a delay, in pieces, chunked or not, with a `Set-Cookie` or not),
//! redirect (307, to the same host or another), close without answering, or answer and then
//! close the idle connection. The servers record every request they read (on which
//! connection, whether that connection served before, its `Cookie`) and count the connections
//! open to each host.
//!
//! The checks are those of a plain model of the documented behaviour:
//! - every request's callback runs exactly once, never inside `send` or `cancel`; `cancel`
//!   returns true exactly when the callback has not run yet and the request was not cancelled
//!   before, and a cancelled request gets `Cancelled` (and only a cancelled one does); one
//!   cancelled from `about_to_send_request` never reaches its server;
//! - a response is its own request's (path, attempt, method, echoed body, status, redirect
//!   count): no cross-talk on a reused connection; a stream's `on_event` gets its head once,
//!   before its data, never after `on_done` or a cancel, and the data is its own body;
//! - a request that the server closed on without answering is sent again once, on another
//!   connection, when it was an idempotent request on a reused connection, and otherwise fails
//!   with `EmptyResponse`; nothing else fails (where a server dropped an idle connection, a
//!   request sent on it before the client saw the close may fail instead of reaching it);
//! - the client never has more connections open than the limit (its own count, sampled every
//!   millisecond and in every callback, in scripts that use one host exactly), and a server
//!   never sees more than the limit open for longer than the client's closes take to reach it;
//!   a connection retired by `Keep-Alive` is not reused;
//! - with a limit of one, requests (and same-host redirect hops) reach the host in the order
//!   they were sent;
//! - afterwards: nothing queued or in flight, at most the limit of idle connections per host, a
//!   fresh request to every host works, and dropping the client closes every connection;
//! - a cookie set by a host goes back to that host name (cookies ignore ports) and to no other,
//!   with every request sent after the callback of the response that set it.
//!
//! `PROPTEST_CASES` sets the number of cases (default 200, about 12 s in a debug build).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::network::http::{
    HttpClient, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession, RequestId,
    StreamEvent,
};
use kdnet::{EventLoop, Timer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---- the script ------------------------------------------------------------------------------

/// What a server does with one attempt of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Answers.
    Reply {
        /// 200 or 503.
        status: u16,
        /// With `Connection: close`, closing the connection after it.
        close: bool,
        /// Written in this many pieces (1..=3), a millisecond apart.
        pieces: u8,
        /// Waits this long before answering.
        delay_ms: u8,
        /// `Transfer-Encoding: chunked` rather than `Content-Length`.
        chunked: bool,
        /// With a `Set-Cookie` of a name of this request's own.
        set_cookie: bool,
        /// With `Keep-Alive`: 0 none, 1 `timeout=1`, 2 `max=0`, 3 `max=1`.
        keep_alive: u8,
    },
    /// Answers `307` to the same path with an `h` after it on host `.0` (the hop is answered
    /// 200).
    Redirect(usize),
    /// Closes the connection without answering.
    Silent,
    /// Answers 200 as a keep-alive response, then closes the connection (an idle connection
    /// the server drops: the client may send its next request on it before it sees the close).
    ReplyThenDrop,
}

/// When a request is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelPlan {
    Never,
    /// Right after it was sent (in the same code).
    AtOnce,
    /// From the callback of request `.0` (if this one was sent by then).
    FromCallbackOf(usize),
    /// From a timer this many milliseconds after it was sent.
    AfterMs(u8),
    /// From an `about_to_send_request` slot: it is never sent.
    WhenAnnounced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
}

#[derive(Debug, Clone)]
struct ReqScript {
    host: usize,
    method: Method,
    body_len: u8,
    /// Sent from the callback of this (earlier) request rather than at the start.
    parent: Option<usize>,
    /// Sent with `send_and_wait` from that callback.
    wait: bool,
    cancel: CancelPlan,
    /// Its callback calls `cancel_all`.
    cancel_all: bool,
    /// Sent with `send_streaming`.
    stream: bool,
    /// Sent (when not from a callback) from a timer this many milliseconds after the start
    /// (after idle connections' deadlines, in cases with a short idle timeout).
    later: Option<u8>,
    /// The server's answer to its first and second attempt (a third gets the second's).
    answers: [Answer; 2],
}

#[derive(Debug, Clone)]
struct Script {
    max_per_host: usize,
    /// The session's idle connection timeout.
    idle_ms: u64,
    /// The callback of request `.1` sets `max_connections_per_host` to `.0`.
    new_max: Option<(usize, usize)>,
    /// An `about_to_send_request` slot is connected (requests are then scheduled after it ran).
    announce: bool,
    requests: Vec<ReqScript>,
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    prop_oneof![
        7 => (
            prop_oneof![4 => Just(200u16), 1 => Just(503u16)],
            prop::bool::weighted(0.2),
            1u8..=3,
            prop_oneof![4 => Just(0u8), 1 => 1u8..20],
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.15),
            prop_oneof![7 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        )
            .prop_map(
                |(status, close, pieces, delay_ms, chunked, set_cookie, keep_alive)| {
                    Answer::Reply {
                        status,
                        close,
                        pieces,
                        delay_ms,
                        chunked,
                        set_cookie,
                        keep_alive,
                    }
                }
            ),
        2 => Just(Answer::Silent),
        1 => Just(Answer::ReplyThenDrop),
        1 => (0usize..HOSTS).prop_map(Answer::Redirect),
    ]
}

fn script_strategy() -> impl Strategy<Value = Script> {
    let request = (
        0usize..HOSTS,
        prop_oneof![3 => Just(Method::Get), 1 => Just(Method::Head), 2 => Just(Method::Post)],
        0u8..40,
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::bool::weighted(0.3),
        prop_oneof![
            6 => Just(0u8),
            1 => Just(1u8),
            2 => Just(2u8),
            1 => Just(3u8),
            1 => Just(4u8),
        ],
        any::<prop::sample::Index>(),
        0u8..30,
        (
            prop::bool::weighted(0.04),
            prop::bool::weighted(0.25),
            prop::option::weighted(0.3, 1u8..80),
        ),
        (answer_strategy(), answer_strategy()),
    );
    (
        1usize..=3,
        prop_oneof![3 => Just(5_000u64), 1 => Just(30u64)],
        prop::option::weighted(0.25, (1usize..=3, any::<prop::sample::Index>())),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        prop::collection::vec(request, 1..12),
    )
        .prop_map(
            |(max_per_host, idle_ms, new_max, announce, one_host, raw)| {
                let n = raw.len();
                let first_host = raw[0].0;
                let mut requests: Vec<ReqScript> = raw
                    .into_iter()
                    .enumerate()
                    .map(
                        |(
                            i,
                            (
                                host,
                                method,
                                body_len,
                                parent,
                                wait,
                                cancel,
                                target,
                                ms,
                                (cancel_all, stream, later),
                                (a1, a2),
                            ),
                        )| {
                            let parent = parent.filter(|_| i > 0).map(|p| p.index(i));
                            let wait = wait && parent.is_some();
                            let cancel = match cancel {
                                _ if wait => CancelPlan::Never,
                                1 => CancelPlan::AtOnce,
                                2 => {
                                    let j = target.index(n);
                                    if j == i {
                                        CancelPlan::Never
                                    } else {
                                        CancelPlan::FromCallbackOf(j)
                                    }
                                }
                                3 => CancelPlan::AfterMs(ms),
                                4 => CancelPlan::WhenAnnounced,
                                _ => CancelPlan::Never,
                            };
                            ReqScript {
                                host,
                                method,
                                body_len,
                                parent,
                                wait,
                                cancel,
                                cancel_all,
                                stream: stream && !wait,
                                later: later.filter(|_| parent.is_none()),
                                answers: [a1, a2],
                            }
                        },
                    )
                    .collect();
                if one_host {
                    // All to one host, where the client's count of connections is that host's.
                    for r in &mut requests {
                        r.host = first_host;
                        for a in &mut r.answers {
                            if let Answer::Redirect(to) = a {
                                *to = first_host;
                            }
                        }
                    }
                }
                let announce = announce
                    || requests
                        .iter()
                        .any(|r: &ReqScript| r.cancel == CancelPlan::WhenAnnounced);
                Script {
                    max_per_host,
                    idle_ms,
                    new_max: new_max.map(|(max, at)| (max, at.index(n))),
                    announce,
                    requests,
                }
            },
        )
}

// ---- the servers -----------------------------------------------------------------------------

const HOSTS: usize = 3;

/// One request as a server read it.
#[derive(Debug, Clone)]
struct Arrival {
    case: u64,
    /// The script's index of the request (`None` for the checks after the script).
    req: Option<usize>,
    /// A redirect hop's request (`/c{case}/r{req}h`).
    hop: bool,
    /// 1 for the first time the server saw this request (this path), 2 for the second, ...
    attempt: u32,
    method: String,
    body: Vec<u8>,
    cookie: Option<String>,
    /// The connection it came on (a serial of the host's), and whether that connection had
    /// answered a request before.
    conn: u64,
    reused: bool,
}

#[derive(Default)]
struct HostBook {
    open: usize,
    /// The most connections allowed now (set per case).
    limit: usize,
    /// The client's idle connection timeout now (set per case).
    idle: Duration,
    arrivals: Vec<Arrival>,
    violations: Vec<String>,
}

struct Shared {
    books: Vec<Mutex<HostBook>>,
    /// Answers by (case, request).
    scripts: Mutex<HashMap<(u64, usize), [Answer; 2]>>,
    attempts: Mutex<HashMap<(u64, String), u32>>,
}

struct Servers {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
}

impl Servers {
    fn start() -> Servers {
        let shared = Arc::new(Shared {
            books: (0..HOSTS).map(|_| Mutex::default()).collect(),
            scripts: Mutex::default(),
            attempts: Mutex::default(),
        });
        let binds = ["127.0.0.1:0", "127.0.0.1:0", "[::1]:0"];
        let listeners: Vec<TcpListener> = binds
            .iter()
            .map(|bind| TcpListener::bind(bind).unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        for (host, listener) in listeners.into_iter().enumerate() {
            let (shared, all) = (Arc::clone(&shared), addrs.clone());
            std::thread::spawn(move || accept_loop(listener, host, shared, all));
        }
        Servers { addrs, shared }
    }

    fn url(&self, host: usize, path: &str) -> String {
        format!("http://{}{path}", self.addrs[host])
    }

    fn book(&self, host: usize) -> std::sync::MutexGuard<'_, HostBook> {
        self.shared.books[host].lock().unwrap()
    }

    /// Waits (up to `limit`) until every host has at most `most` connections open.
    fn settle(&self, most: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let open: Vec<usize> = (0..HOSTS).map(|h| self.book(h).open).collect();
            if open.iter().all(|&o| o <= most) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "connections open per host {open:?}, expected <= {most}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn accept_loop(listener: TcpListener, host: usize, shared: Arc<Shared>, addrs: Vec<SocketAddr>) {
    let serial = AtomicU64::new(0);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let conn = serial.fetch_add(1, Ordering::SeqCst);
        let over = {
            let mut book = shared.books[host].lock().unwrap();
            book.open += 1;
            (book.open > book.limit).then_some((book.open, book.limit))
        };
        if let Some((open, limit)) = over {
            // The client may have closed a connection in the same turn as it opened this one:
            // give that close a moment to reach its server thread before calling it a breach.
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    std::thread::sleep(Duration::from_millis(2));
                    let mut book = shared.books[host].lock().unwrap();
                    if book.open <= book.limit {
                        return;
                    }
                    if Instant::now() >= deadline {
                        let now = book.open;
                        book.violations.push(format!(
                            "host {host}: {open} connections open (limit {limit}), still {now} 2 s later"
                        ));
                        return;
                    }
                }
            });
        }
        let (shared, addrs) = (Arc::clone(&shared), addrs.clone());
        std::thread::spawn(move || {
            serve(stream, host, conn, &shared, &addrs);
            shared.books[host].lock().unwrap().open -= 1;
        });
    }
}

/// A request head and body as read off the wire.
struct Read1 {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_one(reader: &mut BufReader<TcpStream>) -> Option<Read1> {
    let seen = support::read_request(reader)?;
    let mut parts = seen.line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let headers = seen
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    Some(Read1 {
        method,
        path,
        headers,
        body: seen.body,
    })
}

/// `/c{case}/r{req}`, `/c{case}/r{req}h` (a redirect hop) or `/c{case}/fresh{host}`.
fn parse_path(path: &str) -> Option<(u64, Option<usize>, bool)> {
    let rest = path.strip_prefix("/c")?;
    let (case, what) = rest.split_once('/')?;
    let case = case.parse().ok()?;
    let req = what.strip_prefix('r');
    let hop = req.is_some_and(|r| r.ends_with('h'));
    let req = req.and_then(|r| r.trim_end_matches('h').parse().ok());
    Some((case, req, hop))
}

/// The answer to requests the script says nothing of (redirect hops, the checks after it).
const PLAIN: Answer = Answer::Reply {
    status: 200,
    close: false,
    pieces: 1,
    delay_ms: 0,
    chunked: false,
    set_cookie: false,
    keep_alive: 0,
};

/// What a response's body says of its request (HEAD: what it would have said).
fn response_text(method: &str, path: &str, attempt: u32, body: &[u8]) -> String {
    format!(
        "{method} {path} attempt={attempt} body={}",
        String::from_utf8_lossy(body)
    )
}

fn cookie_name(case: u64, req: usize) -> String {
    format!("k{case}r{req}")
}

fn serve(stream: TcpStream, host: usize, conn: u64, shared: &Shared, addrs: &[SocketAddr]) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut served = 0;
    // How many more requests the client may send on this connection after what the last
    // response's `Keep-Alive` said, and when that response was written.
    let mut allowed_more: Option<u32> = None;
    let mut answered_at: Option<Instant> = None;
    while let Some(read) = read_one(&mut reader) {
        let arrived = Instant::now();
        let Some((case, req, hop)) = parse_path(&read.path) else {
            return;
        };
        {
            let mut book = shared.books[host].lock().unwrap();
            if allowed_more == Some(0) {
                book.violations.push(format!(
                    "host {host}: {} on a connection the server's Keep-Alive retired",
                    read.path
                ));
            }
            let idle = book.idle;
            if let Some(at) = answered_at
                && arrived - at > idle + Duration::from_secs(1)
            {
                book.violations.push(format!(
                    "host {host}: {} on a connection idle for {:?} (idle timeout {idle:?})",
                    read.path,
                    arrived - at
                ));
            }
        }
        allowed_more = allowed_more.map(|n| n.saturating_sub(1));
        let attempt = {
            let mut attempts = shared.attempts.lock().unwrap();
            let n = attempts.entry((case, read.path.clone())).or_insert(0);
            *n += 1;
            *n
        };
        let answer = req
            .filter(|_| !hop)
            .and_then(|r| shared.scripts.lock().unwrap().get(&(case, r)).copied())
            .map_or(PLAIN, |answers| answers[(attempt as usize - 1).min(1)]);
        let cookie = read
            .headers
            .iter()
            .find(|(n, _)| n == "cookie")
            .map(|(_, v)| v.clone());
        shared.books[host].lock().unwrap().arrivals.push(Arrival {
            case,
            req,
            hop,
            attempt,
            method: read.method.clone(),
            body: read.body.clone(),
            cookie,
            conn,
            reused: served > 0,
        });
        served += 1;
        let mut location = None;
        let (status, close, pieces, delay_ms, chunked, set_cookie, keep_alive, drop_after) =
            match answer {
                Answer::Silent => return,
                Answer::ReplyThenDrop => (200, false, 1, 0, false, false, 0, true),
                Answer::Redirect(to) => {
                    location = Some(format!("http://{}{}h", addrs[to], read.path));
                    (307, false, 1, 0, false, false, 0, false)
                }
                Answer::Reply {
                    status,
                    close,
                    pieces,
                    delay_ms,
                    chunked,
                    set_cookie,
                    keep_alive,
                } => (
                    status, close, pieces, delay_ms, chunked, set_cookie, keep_alive, false,
                ),
            };
        if delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms.into()));
        }
        let text = response_text(&read.method, &read.path, attempt, &read.body);
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nX-Req: {} attempt={attempt}\r\n",
            match status {
                200 => "OK",
                307 => "Temporary Redirect",
                _ => "Service Unavailable",
            },
            read.path
        );
        if let Some(location) = &location {
            head.push_str(&format!("Location: {location}\r\n"));
        }
        match keep_alive {
            1 => head.push_str("Keep-Alive: timeout=1\r\n"),
            2 => head.push_str("Keep-Alive: max=0\r\n"),
            3 => head.push_str("Keep-Alive: max=1\r\n"),
            _ => {}
        }
        allowed_more = match keep_alive {
            1 | 2 => Some(0),
            3 => Some(1),
            _ => allowed_more,
        };
        if close {
            head.push_str("Connection: close\r\n");
        }
        if set_cookie {
            if let Some(r) = req {
                head.push_str(&format!(
                    "Set-Cookie: {}=v{r}; Path=/\r\n",
                    cookie_name(case, r)
                ));
            }
        }
        let head_only = read.method == "HEAD";
        let body = if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            if head_only {
                String::new()
            } else {
                let mid = text.len() / 2;
                format!(
                    "{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                    mid,
                    &text[..mid],
                    text.len() - mid,
                    &text[mid..]
                )
            }
        } else {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", text.len()));
            if head_only { String::new() } else { text }
        };
        let bytes = [head.into_bytes(), body.into_bytes()].concat();
        let pieces = usize::from(pieces.max(1));
        let step = bytes.len().div_ceil(pieces);
        for (i, piece) in bytes.chunks(step).enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if writer.write_all(piece).is_err() {
                return;
            }
            let _ = writer.flush();
        }
        answered_at = Some(Instant::now());
        if close || drop_after {
            return;
        }
    }
}

// ---- the client side -------------------------------------------------------------------------

/// What the client side saw of one request.
#[derive(Default)]
struct Seen {
    id: Option<RequestId>,
    /// When it was sent / its callback ran, on the case's own clock (a counter of events).
    sent_at: Option<u64>,
    done_at: Option<u64>,
    calls: u32,
    result: Option<Result<HttpResponse, HttpError>>,
    /// A `cancel` of it returned true (or a `cancel_all` came while its callback was to come).
    cancelled: bool,
    /// Sent with `send_and_wait`, which was still waiting when a `cancel_all` came: its own
    /// callback (which `send_and_wait` returns the result of) may have run before, or not.
    maybe_cancelled: bool,
    /// A streaming request's heads and data, as `on_event` got them.
    heads: Vec<HttpResponse>,
    data: Vec<u8>,
}

impl Seen {
    /// Whether it was cancelled (see `maybe_cancelled`).
    fn was_cancelled(&self) -> bool {
        self.cancelled
            || (self.maybe_cancelled && matches!(self.result, Some(Err(HttpError::Cancelled))))
    }
}

struct Ctx {
    case: u64,
    script: Script,
    client: Weak<HttpClient>,
    urls: Vec<String>,
    seen: RefCell<Vec<Seen>>,
    clock: Cell<u64>,
    /// Set while `send` or `cancel` runs: no callback may run then.
    in_client_call: Cell<bool>,
    /// The most connections the client may have open (all hosts together): the larger limit
    /// while it changes, times the hosts the script uses.
    most_open: usize,
    violations: RefCell<Vec<String>>,
}

impl Ctx {
    fn tick(&self) -> u64 {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        t
    }

    fn violation(&self, what: String) {
        self.violations.borrow_mut().push(what);
    }

    fn request(&self, r: usize) -> HttpRequest {
        let s = &self.script.requests[r];
        let url = format!("{}/c{}/r{r}", self.urls[s.host], self.case);
        let mut request = HttpRequest::new(&url).unwrap();
        request.set_method(match s.method {
            Method::Get => HttpMethod::Get,
            Method::Head => HttpMethod::Head,
            Method::Post => HttpMethod::Post,
        });
        if s.method == Method::Post {
            let body: String = (0..s.body_len)
                .map(|i| char::from(b'a' + ((r as u8).wrapping_add(i)) % 26))
                .collect();
            request.set_body(body.into_bytes());
        }
        // A guard: nothing in a script takes this long, and a nested `send_and_wait` has no
        // other end.
        request.set_timeout(Duration::from_secs(5));
        request
    }
}

fn submit(ctx: &Rc<Ctx>, r: usize) {
    let Some(client) = ctx.client.upgrade() else {
        return;
    };
    let request = ctx.request(r);
    let at = ctx.tick();
    ctx.seen.borrow_mut()[r].sent_at = Some(at);
    let c = Rc::clone(ctx);
    ctx.in_client_call.set(true);
    let id = if ctx.script.requests[r].stream {
        let e = Rc::clone(ctx);
        client.send_streaming(
            request,
            move |event| on_event(&e, r, event),
            move |result| on_done(&c, r, result),
        )
    } else {
        client.send(request, move |result| on_done(&c, r, result))
    };
    ctx.in_client_call.set(false);
    ctx.seen.borrow_mut()[r].id = Some(id);
    match ctx.script.requests[r].cancel {
        CancelPlan::AtOnce => cancel(ctx, r),
        CancelPlan::AfterMs(ms) => {
            let c = Rc::clone(ctx);
            Timer::set_timeout(Duration::from_millis(ms.into()), move || cancel(&c, r)).unwrap();
        }
        CancelPlan::Never | CancelPlan::FromCallbackOf(_) | CancelPlan::WhenAnnounced => {}
    }
}

fn cancel(ctx: &Rc<Ctx>, r: usize) {
    let Some(client) = ctx.client.upgrade() else {
        return;
    };
    let (id, expected) = {
        let seen = ctx.seen.borrow();
        let Some(id) = seen[r].id else { return };
        (id, seen[r].done_at.is_none() && !seen[r].cancelled)
    };
    let was = ctx.in_client_call.replace(true);
    let got = client.cancel(id);
    ctx.in_client_call.set(was);
    if got != expected {
        ctx.violation(format!(
            "cancel of request {r} returned {got}, expected {expected}"
        ));
    }
    if got {
        ctx.seen.borrow_mut()[r].cancelled = true;
    }
}

/// A streaming request's `on_event`: never after its `on_done` or a cancel, never inside `send`
/// or `cancel`, the head once and before any data.
fn on_event(ctx: &Rc<Ctx>, r: usize, event: StreamEvent<'_>) {
    check_open(ctx);
    let mut seen = ctx.seen.borrow_mut();
    let me = &mut seen[r];
    let wrong = if ctx.in_client_call.get() {
        Some("inside send or cancel")
    } else if me.done_at.is_some() {
        Some("after on_done")
    } else if me.cancelled {
        Some("after a cancel")
    } else {
        match event {
            StreamEvent::Head(response) => {
                me.heads.push(response.clone());
                (me.heads.len() > 1).then_some("a second head")
            }
            StreamEvent::Data(data) => {
                me.data.extend_from_slice(data);
                me.heads.is_empty().then_some("data before the head")
            }
        }
    };
    drop(seen);
    if let Some(wrong) = wrong {
        ctx.violation(format!("request {r}: on_event {wrong}"));
    }
}

/// The `about_to_send_request` slot: cancels the requests the script says to.
fn on_announce(ctx: &Rc<Ctx>, id: RequestId, request: &HttpRequest) {
    check_open(ctx);
    let Some((_, Some(r), false)) = parse_path(request.url().path()) else {
        return;
    };
    if ctx.script.requests[r].cancel != CancelPlan::WhenAnnounced {
        return;
    }
    let Some(client) = ctx.client.upgrade() else {
        return;
    };
    let was = ctx.in_client_call.replace(true);
    let got = client.cancel(id);
    ctx.in_client_call.set(was);
    if !got {
        ctx.violation(format!(
            "cancel of request {r} from about_to_send_request returned false"
        ));
    }
    ctx.seen.borrow_mut()[r].cancelled = got;
}

/// The client's own count of open connections is within the limit (sampled at every callback,
/// slot and timer tick of the script).
fn check_open(ctx: &Ctx) {
    if let Some(client) = ctx.client.upgrade() {
        let open = client.open_connections();
        if open > ctx.most_open {
            ctx.violation(format!(
                "{open} connections open, at most {} allowed",
                ctx.most_open
            ));
        }
    }
}

fn on_done(ctx: &Rc<Ctx>, r: usize, result: Result<HttpResponse, HttpError>) {
    check_open(ctx);
    if ctx.in_client_call.get() {
        ctx.violation(format!("callback of request {r} ran inside send or cancel"));
    }
    let at = ctx.tick();
    {
        let mut seen = ctx.seen.borrow_mut();
        let s = &mut seen[r];
        s.calls += 1;
        if s.calls > 1 {
            drop(seen);
            ctx.violation(format!("callback of request {r} ran again"));
            return;
        }
        s.done_at = Some(at);
        s.result = Some(result);
    }
    // What this callback does: cancels, a new connection limit, then the requests it sends.
    let script = &ctx.script;
    for (k, s) in script.requests.iter().enumerate() {
        if s.cancel == CancelPlan::FromCallbackOf(r) {
            cancel(ctx, k);
        }
    }
    if script.requests[r].cancel_all {
        if let Some(client) = ctx.client.upgrade() {
            // Every request sent whose callback has not run (nor is running) gets `Cancelled`.
            for (k, s) in ctx.seen.borrow_mut().iter_mut().enumerate() {
                if s.sent_at.is_some() && s.done_at.is_none() {
                    if script.requests[k].wait {
                        s.maybe_cancelled = true;
                    } else {
                        s.cancelled = true;
                    }
                }
            }
            ctx.in_client_call.set(true);
            client.cancel_all();
            ctx.in_client_call.set(false);
        }
    }
    if let Some((max, at)) = script.new_max
        && at == r
        && let Some(client) = ctx.client.upgrade()
    {
        client.update_session(|session| session.set_max_connections_per_host(max));
    }
    for (c, s) in script.requests.iter().enumerate() {
        if s.parent != Some(r) {
            continue;
        }
        if s.wait {
            let Some(client) = ctx.client.upgrade() else {
                return;
            };
            let request = ctx.request(c);
            let at = ctx.tick();
            ctx.seen.borrow_mut()[c].sent_at = Some(at);
            let result = client.send_and_wait(request);
            drop(client);
            on_done(ctx, c, result);
        } else {
            submit(ctx, c);
        }
    }
}

// ---- one case --------------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);

/// What the cases exercised (printed at the end, to see that they do): requests, requests sent
/// again, redirect hops, cancelled requests, failed ones, requests on a reused connection,
/// requests that carried a cookie, replays on an idle pooled connection.
static STATS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
const STAT_NAMES: [&str; 8] = [
    "requests",
    "replays",
    "hops",
    "cancelled",
    "failed",
    "on reused",
    "with cookie",
    "replays on reused",
];

fn count(stat: usize, n: usize) {
    STATS[stat].fetch_add(n as u64, Ordering::Relaxed);
}

fn run_case(servers: &Servers, script: &Script) -> Result<(), TestCaseError> {
    let case = CASES.fetch_add(1, Ordering::SeqCst);
    let max = script.max_per_host;
    // The limit the servers hold the client to: the larger one while it changes.
    let most = script.new_max.map_or(max, |(new, _)| new.max(max));
    // The limit in force at the end.
    let last = script.new_max.map_or(max, |(new, _)| new);
    // The last case's connections are closed (a failed one, being shrunk, may not have waited).
    let _ = servers.settle(0, Duration::from_secs(5));
    {
        let mut scripts = servers.shared.scripts.lock().unwrap();
        for (r, s) in script.requests.iter().enumerate() {
            scripts.insert((case, r), s.answers);
        }
    }
    for h in 0..HOSTS {
        let mut book = servers.book(h);
        book.limit = most;
        book.idle = Duration::from_millis(script.idle_ms);
        book.arrivals.clear();
        book.violations.clear();
    }
    let mut event_loop = EventLoop::new().unwrap();
    let mut session = HttpSession::new();
    session.set_max_connections_per_host(max);
    session.set_idle_connection_timeout(Duration::from_millis(script.idle_ms));
    let client = HttpClient::with_session(session).unwrap();
    let ctx = Rc::new(Ctx {
        case,
        script: script.clone(),
        client: Rc::downgrade(&client),
        urls: (0..HOSTS).map(|h| servers.url(h, "")).collect(),
        seen: RefCell::new(
            (0..script.requests.len())
                .map(|_| Seen::default())
                .collect(),
        ),
        clock: Cell::new(0),
        in_client_call: Cell::new(false),
        most_open: most * {
            let mut hosts: Vec<usize> = (script.requests.iter())
                .flat_map(|r| {
                    let to = r.answers.iter().filter_map(|a| match a {
                        Answer::Redirect(to) => Some(*to),
                        _ => None,
                    });
                    std::iter::once(r.host).chain(to)
                })
                .collect();
            hosts.sort_unstable();
            hosts.dedup();
            hosts.len()
        },
        violations: RefCell::default(),
    });
    if script.announce {
        let c = Rc::clone(&ctx);
        client
            .about_to_send_request
            .connect(move |(id, request)| on_announce(&c, *id, request))
            .release();
    }
    for (r, s) in script.requests.iter().enumerate() {
        match (s.parent, s.later) {
            (Some(_), _) => {}
            (None, None) => submit(&ctx, r),
            (None, Some(ms)) => {
                let c = Rc::clone(&ctx);
                Timer::set_timeout(Duration::from_millis(ms.into()), move || submit(&c, r))
                    .unwrap();
            }
        }
    }
    let all_done = || ctx.seen.borrow().iter().all(|s| s.calls > 0);
    let sampler = {
        let c = Rc::clone(&ctx);
        Timer::create_recurring(Duration::from_millis(1), move || check_open(&c)).unwrap()
    };
    let finished = support::run_until(&mut event_loop, Duration::from_secs(15), all_done);
    prop_assert!(
        finished,
        "case {case}: callbacks still to run for requests {:?} (pending {})",
        (ctx.seen.borrow().iter().enumerate())
            .filter(|(_, s)| s.calls == 0)
            .map(|(r, _)| r)
            .collect::<Vec<_>>(),
        client.pending_requests()
    );
    // A moment more, for a callback that would run twice.
    support::run_until(&mut event_loop, Duration::from_millis(10), || false);
    drop(sampler);
    let violations = ctx.violations.borrow().clone();
    prop_assert!(violations.is_empty(), "case {case}: {violations:?}");
    prop_assert_eq!(client.pending_requests(), 0, "case {}: requests left", case);
    prop_assert!(
        client.open_connections() <= last * HOSTS,
        "case {}: {} connections open, limit {} per host",
        case,
        client.open_connections(),
        last
    );

    // The model, against what the servers saw.
    let arrivals: Vec<Vec<Arrival>> = (0..HOSTS)
        .map(|h| {
            (servers.book(h).arrivals.iter())
                .filter(|a| a.case == case)
                .cloned()
                .collect()
        })
        .collect();
    check_model(case, script, &ctx, &arrivals)?;

    // Afterwards: every host still serves, within the limit.
    for h in 0..HOSTS {
        let path = format!("/c{case}/fresh{h}");
        let out = support::get_text(&client, &servers.url(h, &path));
        let result = support::wait(&mut event_loop, &out);
        match result {
            Ok(response) => {
                prop_assert_eq!(response.status(), 200);
                let expected = response_text("GET", &path, 1, b"");
                prop_assert_eq!(response.text(), expected);
            }
            Err(e) => {
                // A connection the server dropped while idle may take a POST-less GET down
                // only if it is replayed: a GET is.
                return Err(TestCaseError::fail(format!(
                    "case {case}: fresh request to host {h} failed: {e}"
                )));
            }
        }
    }
    prop_assert_eq!(client.pending_requests(), 0);
    if let Err(e) = servers.settle(last, Duration::from_secs(3)) {
        return Err(TestCaseError::fail(format!(
            "case {case} after the script: {e}"
        )));
    }
    for h in 0..HOSTS {
        let v = servers.book(h).violations.clone();
        prop_assert!(v.is_empty(), "case {}: {:?}", case, v);
    }
    drop(client);
    // Dropping the client closes its connections.
    if let Err(e) = servers.settle(0, Duration::from_secs(5)) {
        return Err(TestCaseError::fail(format!(
            "case {case} after the drop: {e}"
        )));
    }
    drop(ctx);
    drop(event_loop);
    Ok(())
}

fn same_name(a: usize, b: usize) -> bool {
    // Hosts 0 and 1 are 127.0.0.1 (two ports), 2 is ::1: cookies ignore ports.
    (a == 2) == (b == 2)
}

fn check_model(
    case: u64,
    script: &Script,
    ctx: &Ctx,
    arrivals: &[Vec<Arrival>],
) -> Result<(), TestCaseError> {
    let seen = ctx.seen.borrow();
    let fail = |msg: String| Err(TestCaseError::fail(format!("case {case}: {msg}")));
    let all = || arrivals.iter().flatten().filter(|a| a.req.is_some());
    count(0, seen.len());
    count(1, all().filter(|a| a.attempt == 2).count());
    count(2, all().filter(|a| a.hop).count());
    count(3, seen.iter().filter(|s| s.was_cancelled()).count());
    count(
        4,
        (seen.iter())
            .filter(|s| !s.was_cancelled() && matches!(s.result, Some(Err(_))))
            .count(),
    );
    count(5, all().filter(|a| a.reused).count());
    count(6, all().filter(|a| a.cookie.is_some()).count());
    count(7, all().filter(|a| a.attempt == 2 && a.reused).count());
    // A host where a server dropped an idle connection: a request may have gone out on it
    // before the client saw the close, and never reached the server.
    let stale: Vec<bool> = (0..HOSTS)
        .map(|h| {
            arrivals[h].iter().any(|a| {
                a.req.is_some_and(|r| {
                    script.requests[r].answers[(a.attempt as usize - 1).min(1)]
                        == Answer::ReplyThenDrop
                })
            })
        })
        .collect();
    for (r, s) in script.requests.iter().enumerate() {
        let me = &seen[r];
        if me.calls != 1 {
            return fail(format!("request {r}: callback ran {} times", me.calls));
        }
        let method = match s.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        };
        let body = ctx.request(r).body().to_vec();
        let answer_of = |a: &Arrival| s.answers[(a.attempt as usize - 1).min(1)];
        let attempts: Vec<&Arrival> = arrivals[s.host]
            .iter()
            .filter(|a| a.req == Some(r) && !a.hop)
            .collect();
        // Where its last attempt was redirected to, and the redirect hop's attempts there.
        let target = attempts.last().and_then(|a| match answer_of(a) {
            Answer::Redirect(to) => Some(to),
            _ => None,
        });
        let hops: Vec<&Arrival> = target.map_or(Vec::new(), |t| {
            (arrivals[t].iter())
                .filter(|a| a.req == Some(r) && a.hop)
                .collect()
        });
        for list in [&attempts, &hops] {
            for (i, a) in list.iter().enumerate() {
                if a.attempt as usize != i + 1 {
                    return fail(format!("request {r}: attempts out of order {list:?}"));
                }
                // A 307 keeps the method and the body.
                if a.method != method || a.body != body {
                    return fail(format!(
                        "request {r}: server saw {} with body {:?}",
                        a.method, a.body
                    ));
                }
            }
        }
        for (h, arrivals) in arrivals.iter().enumerate() {
            let stray = arrivals.iter().any(|a| {
                a.req == Some(r)
                    && if a.hop {
                        Some(h) != target
                    } else {
                        h != s.host
                    }
            });
            if stray {
                return fail(format!("request {r} reached host {h}"));
            }
        }
        let result = me.result.as_ref().unwrap();
        if s.cancel == CancelPlan::WhenAnnounced && !(attempts.is_empty() && me.cancelled) {
            return fail(format!(
                "request {r}: cancelled from about_to_send_request, yet sent ({attempts:?}, cancel {})",
                me.cancelled
            ));
        }
        if me.was_cancelled() {
            if !matches!(result, Err(HttpError::Cancelled)) {
                return fail(format!("request {r}: cancelled but got {result:?}"));
            }
            // At most one replay, cancelled or not.
            if attempts.len() > 2 || hops.len() > 2 {
                return fail(format!("request {r}: attempts {attempts:?} {hops:?}"));
            }
            continue;
        }
        // A connection of a host the request went to was dropped by its server while idle.
        let stale_any = stale[s.host] || target.is_some_and(|t| stale[t]);
        match result {
            Err(HttpError::Cancelled) => {
                return fail(format!("request {r}: Cancelled without a cancel"));
            }
            Ok(response) => {
                let Some(last) = attempts.last() else {
                    return fail(format!("request {r}: a response the server never sent"));
                };
                let (path, last, status, redirects) = match answer_of(last) {
                    Answer::Reply { status, .. } => (format!("/c{case}/r{r}"), *last, status, 0),
                    Answer::ReplyThenDrop => (format!("/c{case}/r{r}"), *last, 200, 0),
                    Answer::Redirect(_) => match hops.as_slice() {
                        [hop] => (format!("/c{case}/r{r}h"), *hop, 200, 1),
                        _ => {
                            return fail(format!(
                                "request {r}: a response after redirect hops {hops:?}"
                            ));
                        }
                    },
                    Answer::Silent => {
                        return fail(format!("request {r}: a response to a silent attempt"));
                    }
                };
                let tag = format!("{path} attempt={}", last.attempt);
                if response.header("x-req") != Some(tag.as_str()) {
                    return fail(format!(
                        "request {r}: response of {:?}, expected {tag}",
                        response.header("x-req")
                    ));
                }
                if response.status() != status || response.redirect_count() != redirects {
                    return fail(format!(
                        "request {r}: status {} after {} redirects",
                        response.status(),
                        response.redirect_count()
                    ));
                }
                let expected = if s.method == Method::Head {
                    String::new()
                } else {
                    response_text(&last.method, &path, last.attempt, &last.body)
                };
                // A stream's body went to `on_event`, after its head (the response's, without
                // the body).
                let body = if s.stream {
                    let head_ok = matches!(me.heads.as_slice(), [head]
                        if head.status() == status
                            && head.header("x-req") == Some(tag.as_str())
                            && head.body().is_empty());
                    if !head_ok || !response.body().is_empty() {
                        return fail(format!(
                            "request {r}: stream heads {:?}, response {response:?}",
                            me.heads
                        ));
                    }
                    String::from_utf8_lossy(&me.data).into_owned()
                } else {
                    response.text().into_owned()
                };
                if body != expected {
                    return fail(format!("request {r}: body {body:?}, expected {expected:?}"));
                }
                check_replays(r, s, &attempts, &answer_of).or_else(&fail)?;
            }
            Err(e) => {
                let last_silent = attempts
                    .last()
                    .is_some_and(|a| answer_of(a) == Answer::Silent);
                let explained = last_silent
                    || (stale[s.host] && attempts.is_empty())
                    || (target.is_some_and(|t| stale[t]) && hops.is_empty());
                if !explained {
                    return fail(format!(
                        "request {r}: failed with {e:?} after attempts {attempts:?} {hops:?}"
                    ));
                }
                if !stale_any {
                    if !matches!(e, HttpError::EmptyResponse) {
                        return fail(format!("request {r}: {e:?}, expected EmptyResponse"));
                    }
                    // Not replayed though it could have been.
                    let last = attempts.last().unwrap();
                    let idempotent = s.method != Method::Post;
                    if last.reused && idempotent && attempts.len() == 1 {
                        return fail(format!(
                            "request {r}: a {:?} closed unanswered on a reused connection was not sent again",
                            s.method
                        ));
                    }
                }
                check_replays(r, s, &attempts, &answer_of).or_else(&fail)?;
            }
        }
    }
    // With one connection per host, requests reach it in the order they were sent (each is
    // written once the one before it was answered).
    if script.max_per_host == 1 && script.new_max.is_none_or(|(max, _)| max == 1) {
        for (h, arrivals) in arrivals.iter().enumerate() {
            let firsts: Vec<usize> = arrivals
                .iter()
                // A hop to another host may come after requests sent later to this one.
                .filter(|a| {
                    a.attempt == 1
                        && a.req
                            .is_some_and(|r| !a.hop || script.requests[r].host == h)
                })
                .filter_map(|a| a.req)
                // A cancelled request's connection was closed under it, and the next one opened:
                // the server may read the two connections in either order.
                .filter(|&r| !seen[r].was_cancelled())
                .collect();
            let order: Vec<u64> = firsts
                .iter()
                .map(|&r| seen[r].sent_at.unwrap_or(0))
                .collect();
            if order.windows(2).any(|w| w[0] > w[1]) {
                return fail(format!(
                    "host {h}: requests {firsts:?} arrived out of send order (sent at {order:?})"
                ));
            }
        }
    }
    // Cookies: back to their host name only, and with every request sent after the callback
    // of the response that set them.
    for (j, s) in script.requests.iter().enumerate() {
        let name = cookie_name(case, j);
        let pair = format!("{name}=v{j}");
        for (h, arrivals) in arrivals.iter().enumerate() {
            for a in arrivals {
                let carries = a.cookie.as_deref().is_some_and(|c| {
                    c.split(';')
                        .any(|p| p.trim().starts_with(&format!("{name}=")))
                });
                if carries && !same_name(h, s.host) {
                    return fail(format!(
                        "cookie of request {j} (host {}) sent to host {h}",
                        s.host
                    ));
                }
                if carries
                    && !a
                        .cookie
                        .as_deref()
                        .is_some_and(|c| c.split(';').any(|p| p.trim() == pair))
                {
                    return fail(format!("cookie {name} with a wrong value: {:?}", a.cookie));
                }
            }
        }
        let Some(Ok(response)) = seen[j].result.as_ref() else {
            continue;
        };
        if seen[j].cancelled || !response.headers().contains("set-cookie") {
            continue;
        }
        let set_at = seen[j].done_at.unwrap();
        for (k, t) in script.requests.iter().enumerate() {
            if !same_name(t.host, s.host) || seen[k].sent_at.is_none_or(|at| at < set_at) {
                continue;
            }
            for a in arrivals[t.host].iter().filter(|a| a.req == Some(k)) {
                let carries = a
                    .cookie
                    .as_deref()
                    .is_some_and(|c| c.split(';').any(|p| p.trim() == pair));
                if !carries {
                    return fail(format!(
                        "request {k}, sent after request {j}'s cookie was set, went without it ({:?})",
                        a.cookie
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A second attempt only after a first that the server closed on unanswered (or an attempt
/// the server never saw, on a host that drops idle connections), on a reused connection, of
/// an idempotent request; never a third.
fn check_replays(
    r: usize,
    s: &ReqScript,
    attempts: &[&Arrival],
    answer_of: &dyn Fn(&Arrival) -> Answer,
) -> Result<(), String> {
    if attempts.len() > 2 {
        return Err(format!("request {r}: {} attempts", attempts.len()));
    }
    if attempts.len() == 2 {
        let first = attempts[0];
        if answer_of(first) != Answer::Silent || !first.reused || s.method == Method::Post {
            return Err(format!(
                "request {r}: sent again after {first:?} ({:?})",
                answer_of(first)
            ));
        }
        // On another connection: a new one, or an idle pooled one (peeked for a close first,
        // as a request that cannot be replayed again is).
        if attempts[1].conn == first.conn {
            return Err(format!(
                "request {r}: sent again on the connection that closed ({:?})",
                attempts[1]
            ));
        }
    }
    Ok(())
}

// ---- the tests -------------------------------------------------------------------------------

/// `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> Config {
    Config {
        max_shrink_iters: 2000,
        // A failing case may take its guards' time (a request stuck in its queue): shrinking
        // stops after a minute, with the smallest case found by then.
        max_shrink_time: 60_000,
        ..support::model::config(default)
    }
}

#[test]
fn scheduling_and_pool_match_the_model() {
    let servers = Servers::start();
    let mut runner = TestRunner::new(config(200));
    let started = Instant::now();
    let result = runner.run(&script_strategy(), |script| run_case(&servers, &script));
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
