//! Shared helpers for kdnet's integration tests: loop driving and logging.
#![allow(dead_code)]

pub mod certs;
pub mod chaos;
pub mod model;
pub mod served;
pub mod socket_events;
pub mod socket_model;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::bindings::Signal;
use kdnet::network::dns::{AddressFamily, DnsResolver, LookupResult};
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, HttpResponse};

/// Whether `fd` (an event loop's poller descriptor) is readable right now, asked through a
/// second, independent poller: registering evaluates the current readiness.
pub fn is_readable(fd: std::os::fd::RawFd) -> bool {
    let mut poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .unwrap();
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
    !events.is_empty()
}

/// How long [`wait_until`] waits before it fails the test.
pub const SAFETY_TIMEOUT: Duration = Duration::from_secs(20);

/// Turns the loop until `done` holds; fails the test after [`SAFETY_TIMEOUT`], so nothing hangs.
pub fn wait_until(event_loop: &mut EventLoop, done: impl FnMut() -> bool) {
    assert!(
        run_until(event_loop, SAFETY_TIMEOUT, done),
        "not done within {SAFETY_TIMEOUT:?}"
    );
}

/// Where a request's callback puts its outcome (see [`send`]).
pub type Outcome = Rc<RefCell<Option<Result<HttpResponse, HttpError>>>>;

/// Sends `request` on `client`; its outcome lands in the returned cell.
pub fn send(client: &HttpClient, request: HttpRequest) -> Outcome {
    let out: Outcome = Rc::default();
    let o = out.clone();
    client.send(request, move |r| *o.borrow_mut() = Some(r));
    out
}

/// Sends a GET through `HttpClient::get` (the URL-text path, with its cached parse); its
/// outcome lands in the returned cell.
pub fn get_text(client: &HttpClient, url: &str) -> Outcome {
    let out: Outcome = Rc::default();
    let o = out.clone();
    client.get(url, move |r| *o.borrow_mut() = Some(r));
    out
}

/// Turns the loop until `out` holds an outcome and takes it; fails the test after [`SAFETY_TIMEOUT`].
pub fn wait(event_loop: &mut EventLoop, out: &Outcome) -> Result<HttpResponse, HttpError> {
    wait_at_most(event_loop, out, SAFETY_TIMEOUT)
}

/// [`wait`] with its own limit.
pub fn wait_at_most(
    event_loop: &mut EventLoop,
    out: &Outcome,
    limit: Duration,
) -> Result<HttpResponse, HttpError> {
    assert!(
        run_until(event_loop, limit, || out.borrow().is_some()),
        "request did not finish within {limit:?}"
    );
    out.borrow_mut().take().unwrap()
}

/// Looks `host` up and turns the loop until the answer comes (see [`wait_until`]).
pub fn lookup_and_wait(
    event_loop: &mut EventLoop,
    resolver: &DnsResolver,
    host: &str,
    family: AddressFamily,
) -> LookupResult {
    let result = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&result);
    resolver.lookup_family(host, family, move |r| *sink.borrow_mut() = Some(r));
    wait_until(event_loop, || result.borrow().is_some());
    result.take().expect("answered")
}

/// The latest value `signal` emits, recorded by a slot that stays connected for the signal's life.
pub fn latest<T: Clone + 'static>(signal: &Signal<T>) -> Rc<RefCell<Option<T>>> {
    let latest: Rc<RefCell<Option<T>>> = Rc::default();
    let slot = latest.clone();
    signal
        .connect(move |value| *slot.borrow_mut() = Some(value.clone()))
        .release();
    latest
}

/// How many times `signal` emits, counted by a slot that stays connected for the signal's life.
pub fn emissions<T: 'static>(signal: &Signal<T>) -> Rc<std::cell::Cell<usize>> {
    let count: Rc<std::cell::Cell<usize>> = Rc::default();
    let slot = count.clone();
    signal.connect(move |_| slot.set(slot.get() + 1)).release();
    count
}

/// A request head read by a blocking test server: the request line and the header lines.
pub struct RawHead {
    /// `GET /path HTTP/1.1`.
    pub request_line: String,
    /// `name: value` lines, as sent.
    pub header_lines: Vec<String>,
}

impl RawHead {
    /// The request target (`/path`).
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }

    /// The trimmed value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_lines.iter().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Accepts one connection on `listener`, reads its request head and answers `200` with
/// `Content-Type: text/event-stream` (no length: the stream runs until the server closes it).
/// Returns the connection, for the caller to write events into.
pub fn accept_event_stream(listener: &std::net::TcpListener) -> std::net::TcpStream {
    use std::io::Write;
    let (mut stream, _) = listener.accept().unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    read_request_head(&mut reader).unwrap();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        .unwrap();
    stream
}

/// Reads one request head line by line up to its blank line; `None` when the peer closes first.
pub fn read_request_head(reader: &mut impl std::io::BufRead) -> Option<RawHead> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line.trim().is_empty() {
            break;
        }
        lines.push(line.trim_end().to_string());
    }
    let request_line = if lines.is_empty() {
        String::new()
    } else {
        lines.remove(0)
    };
    Some(RawHead {
        request_line,
        header_lines: lines,
    })
}

/// Runs `event_loop` until `done()` holds or `timeout` passes; returns whether `done()` held.
pub fn run_until(
    event_loop: &mut EventLoop,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        event_loop
            .process_events(Some((deadline - now).min(Duration::from_millis(20))))
            .expect("event loop turn");
    }
    true
}

/// Deterministic pseudo-random bytes (xorshift), for payloads that must arrive byte-exact.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One request as a scripted server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The request line, e.g. `GET /x HTTP/1.1`.
    pub line: String,
    /// Header fields, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (by Content-Length).
    pub body: Vec<u8>,
    /// Index of the connection it came on (0-based, in accept order).
    pub connection: usize,
}

impl SeenRequest {
    /// The first value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a scripted server does with one request.
pub enum Reply {
    /// Write these bytes, keep the connection open for the next request.
    Bytes(Vec<u8>),
    /// Write these bytes, then close the connection.
    BytesThenClose(Vec<u8>),
    /// Write these pieces with a pause between them, then keep the connection.
    Pieces(Vec<Vec<u8>>, Duration),
    /// Close without answering.
    Close,
    /// Say nothing for this long, then close.
    Stall(Duration),
}

/// A loopback HTTP/1.1 server on a thread: answers each request with `handler(request, n)`,
/// where `n` counts requests across all connections. Records every request.
pub struct ScriptServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Every request seen, in order.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl ScriptServer {
    /// Starts the server (accepts until the test process ends).
    pub fn start<F>(handler: F) -> ScriptServer
    where
        F: Fn(&SeenRequest, usize) -> Reply + Send + Sync + 'static,
    {
        use std::io::Write;
        use std::sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let handler = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let (handler, seen, count) = (handler.clone(), seen2.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    while let Some(mut req) = read_request(&mut reader) {
                        req.connection = connection;
                        seen.lock().unwrap().push(req.clone());
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        match handler(&req, n) {
                            Reply::Bytes(b) => {
                                if stream.write_all(&b).is_err() {
                                    return;
                                }
                            }
                            Reply::BytesThenClose(b) => {
                                let _ = stream.write_all(&b);
                                return;
                            }
                            Reply::Pieces(pieces, pause) => {
                                for p in pieces {
                                    if stream.write_all(&p).is_err() {
                                        return;
                                    }
                                    let _ = stream.flush();
                                    std::thread::sleep(pause);
                                }
                            }
                            Reply::Close => return,
                            Reply::Stall(d) => {
                                std::thread::sleep(d);
                                return;
                            }
                        }
                    }
                });
            }
        });
        ScriptServer { addr, seen }
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request (line, header fields, a `Content-Length` body) from `reader`; `None` at
/// the end of the stream or on a malformed head. `connection` is left 0.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<SeenRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(SeenRequest {
        line,
        headers,
        body,
        connection: 0,
    })
}

/// A complete `200 OK` response with `body` and extra header lines (each ending in CRLF).
pub fn ok_response(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), where Linux has it.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Every log record of this test binary (its tests run in parallel: each looks for its own
/// markers).
pub struct CapturedLogs(pub std::sync::Mutex<Vec<String>>);

impl log::Log for CapturedLogs {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGS: CapturedLogs = CapturedLogs(std::sync::Mutex::new(Vec::new()));

pub fn captured_logs() -> &'static CapturedLogs {
    if log::set_logger(&LOGS).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    &LOGS
}

/// The socket held in an `Option` that a slot empties (a GUI dropping its connection object).
pub type Holder<T> = Rc<RefCell<Option<Rc<T>>>>;

/// Watches every signal of `socket` (owned by `owner`, which the returned holder holds): the
/// emission named `drop_on` (`state_changed` as `state_changed(State)`) drops the holder's
/// handle, the last one; what is emitted after that is recorded in the returned list.
pub fn drop_on_signal<T: 'static>(
    owner: Rc<T>,
    socket: &kdnet::network::TcpSocket,
    drop_on: &'static str,
) -> (Holder<T>, Rc<RefCell<Vec<String>>>) {
    let holder: Holder<T> = Rc::new(RefCell::new(Some(owner)));
    let after: Rc<RefCell<Vec<String>>> = Rc::default();
    let seen = {
        let (holder, after) = (holder.clone(), after.clone());
        Rc::new(move |name: String| {
            if holder.borrow().is_none() {
                after.borrow_mut().push(name);
            } else if name == drop_on {
                let last = holder.borrow_mut().take();
                drop(last);
            }
        })
    };
    macro_rules! watch {
        ($($signal:ident),*) => {$({
            let seen = seen.clone();
            socket.$signal.connect(move |_| seen(stringify!($signal).to_string())).release();
        })*};
    }
    watch!(
        connected,
        disconnected,
        ready_read,
        bytes_received,
        bytes_written,
        error_occurred,
        handshake_completed,
        handshake_error
    );
    socket
        .state_changed
        .connect(move |s| seen(format!("state_changed({s:?})")))
        .release();
    (holder, after)
}
