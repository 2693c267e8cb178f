//! [`HttpClient`]: HTTP/1.1 requests on the event loop (KDNetwork `HttpClient`).
//!
//! ```text
//!  send ─▶ Queued ──(free slot: request written)──▶ RecvHead ─▶ RecvBody ─▶ Done
//!            ▲                                   │           │ 1xx: stay     │
//!            └───────── redirect hop ◀──────────────────────────────────────┘
//! ```
//!
//! Each request has a [`RequestState`]; each connection a `Conn` in a per-host pool (at most
//! `max_connections_per_host` active, further requests queue). Socket bytes reach the request's
//! parsers straight from the loop's read buffer through a data sink: the head is accumulated until
//! complete, body bytes are decoded in place (chunked, then gzip/deflate) and either appended to
//! the body, handed to a streaming callback, or — with `sse_mode` — fed to the request's SSE parser.
//! No `RefCell` borrow is held while user code runs: work is collected under the borrow and
//! delivered after it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use url::Url;

use super::body::BodyDecoder;
use super::content::ContentDecoder;
use super::encode::{encode_request_head, host_header_value};
use super::framing::{BodyFraming, body_framing};
use super::head::{HeadLimits, HeadParser, HeadStatus, ResponseHead};
use super::id_map::IdMap;
use super::redirect::{RedirectAction, redirect_action};
use super::request::parse_url;
use super::response::content_length;
use super::{HeaderMap, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession};
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, TimerKey};
use crate::network::error::{SocketError, TimeoutPhase, TlsFailure};
use crate::network::sse::{SseBatch, SseParser};
use crate::network::tcp::{DataSink, SocketState, TcpSocket};
use crate::network::tls::TlsClientConfig;

/// How much of a non-event-stream body an SSE request keeps for its error message.
const SSE_ERROR_BODY_LIMIT: usize = 1024;

/// Identifies one request of an [`HttpClient`] (it keeps its id across redirects and retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a streaming request reports as it goes.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// The final response head arrived (the response's body is empty).
    Head(&'a HttpResponse),
    /// Decoded body bytes, valid only during the call.
    Data(&'a [u8]),
}

type Callback = Box<dyn FnOnce(Result<HttpResponse, HttpError>)>;
type StreamFn = Rc<RefCell<dyn FnMut(StreamEvent<'_>)>>;

/// Receives an SSE request's stream (implemented by the SSE client).
pub(crate) trait SseTarget {
    /// The response head; `true` when it opens an event stream (status 200, `text/event-stream`).
    fn on_head(&self, id: RequestId, response: &HttpResponse) -> bool;
    /// The events of one delivery, held in the client's reused event pool; emitted from there.
    fn on_events(&self, id: RequestId, events: &SseBatch);
    fn on_retry(&self, id: RequestId, retry: Duration);
    /// The stream ended: `Ok(response)` for a clean end of an opened stream or for a rejected
    /// response (with the start of its body), `Err` for failures. The request's parser comes back
    /// with it (it holds the last event ID and reconnection time).
    fn on_end(
        &self,
        id: RequestId,
        result: Result<HttpResponse, HttpError>,
        parser: Option<Box<SseParser>>,
    );
}

enum Delivery {
    Buffered(Option<Callback>),
    Streaming {
        on_event: StreamFn,
        on_done: Option<Callback>,
    },
    Sse {
        target: Weak<dyn SseTarget>,
        parser: Option<Box<SseParser>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    RecvHead,
    RecvBody,
}

/// Everything one request needs while in flight (the seed design's `RequestState`).
struct RequestState {
    request: HttpRequest,
    phase: Phase,
    delivery: Delivery,
    conn: Option<u64>,
    host: Rc<HostKey>,
    head_limits: HeadLimits,
    /// A head that arrived in pieces: its bytes so far and the parser's progress. Boxed and
    /// only made then; a head that arrives in one read is parsed where it lies.
    partial_head: Option<Box<PartialHead>>,
    /// The final head, kept until the response is complete. Not an `HttpResponse`: that would
    /// carry a second copy of the URL for as long as a stream lasts.
    /// Boxed, like `decoder`: made when the head arrives, and a request waiting for its
    /// connection (thousands may at once) would otherwise carry their size.
    response_head: Option<Box<ResponseHead>>,
    decoder: Option<Box<BodyDecoder>>,
    /// Boxed (like `redirect_next`): rarely present, and every request would carry its size.
    content: Option<Box<ContentDecoder>>,
    body: BytesMut,
    /// Keep only this much of the body (the start of a rejected SSE response, for its message).
    body_limit: Option<usize>,
    /// A buffered body beyond this is an error (the session's `max_response_body_bytes`).
    max_body: usize,
    reusable: bool,
    redirect_next: Option<Box<HttpRequest>>,
    redirects: u32,
    started: Instant,
    got_bytes: bool,
    retried: bool,
    total_timer: Option<TimerKey>,
    /// The read timeout's timer; made on first use, so a request without one carries none of it.
    idle: Option<Box<IdleWatch>>,
    upload_total: u64,
    /// Bytes of the request head, which `wire_written` counts but upload progress does not.
    upload_head_len: u64,
    /// Bytes of this request the socket reported written.
    wire_written: u64,
    /// Longest silence allowed while waiting for response bytes (idle/read timeout).
    read_timeout: Option<Duration>,
    /// Assigned to a connection still on its way up: the request is written when it connects.
    write_when_connected: bool,
    /// Set once the head opened an event stream: body bytes go to `sse_parser`.
    sse_mode: bool,
    sse_parser: Option<Box<SseParser>>,
}

/// A request's read (idle) timeout.
struct IdleWatch {
    timer: Option<TimerKey>,
    /// The read timeout expires here; arrivals move it without touching the timer, which re-arms
    /// itself for the rest when it fires early (no timer churn per arrival).
    deadline: Instant,
    /// When the armed `timer` fires.
    fires_at: Instant,
}

/// The bytes of a response head received so far, and how far the parser got in them.
struct PartialHead {
    buf: BytesMut,
    parser: HeadParser,
}

/// One pool's (scheme, host, port). Shared through an `Rc` by the pool map, its connections
/// and its requests: one copy of the host name per host, not one per connection and request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HostKey {
    https: bool,
    host: String,
    port: u16,
}

struct Conn {
    host: Rc<HostKey>,
    socket: Rc<TcpSocket>,
    request: Option<u64>,
    served: u32,
    idle_timer: Option<TimerKey>,
    _sink: Rc<ConnSink>,
}

#[derive(Default)]
struct HostState {
    active: usize,
    idle: Vec<u64>,
    queue: VecDeque<u64>,
}

struct ClientInner {
    session: HttpSession,
    requests: IdMap<Box<RequestState>>,
    /// Boxed: a table sized for thousands of connections would otherwise hold up to twice as
    /// many empty `Conn`-sized buckets.
    conns: IdMap<Box<Conn>>,
    hosts: HashMap<Rc<HostKey>, HostState>,
    next_id: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Work found under the borrow and done after it (user code, socket closes).
enum Action {
    Finish(u64, Delivery, Result<HttpResponse, HttpError>),
    StreamHead(StreamFn, HttpResponse),
    StreamData(StreamFn, Bytes),
    SseHead(u64, Weak<dyn SseTarget>, HttpResponse),
    SseEvents(u64, Weak<dyn SseTarget>, SseBatch),
    SseRetry(u64, Weak<dyn SseTarget>, Duration),
    Progress(u64, u64, Option<u64>),
    Close(Rc<TcpSocket>),
    ResponseReceived(HttpResponse),
    Failed(u64, HttpError),
}

/// An HTTP/1.1 client on the current thread's loop (KDNetwork `HttpClient`).
///
/// Results arrive through the callback given to [`send`](Self::send) (or its `get`/`post`/…
/// shortcuts) on the loop's thread — never from inside `send`. The client keeps connections alive
/// per (scheme, host, port), follows redirects, stores and sends cookies, decodes gzip/deflate,
/// and applies the [`HttpSession`]'s defaults.
///
/// ```no_run
/// use kdnet::EventLoop;
/// use kdnet::network::http::HttpClient;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let client = HttpClient::new().unwrap();
/// let handle = event_loop.handle();
/// client.get("http://127.0.0.1:8080/", move |result| {
///     match result {
///         Ok(response) => println!("{} {}", response.status(), response.text()),
///         Err(e) => eprintln!("failed: {e}"),
///     }
///     handle.quit();
/// });
/// event_loop.run();
/// ```
pub struct HttpClient {
    /// Emitted with each request (after session defaults, before any byte is sent).
    pub about_to_send_request: Signal<(RequestId, HttpRequest)>,
    /// Emitted with every final response (after its callback ran).
    pub response_received: Signal<HttpResponse>,
    /// Emitted with every failed request (after its callback ran).
    pub error: Signal<(RequestId, HttpError)>,
    /// `(request, body bytes received, total if known)` as the body arrives.
    pub download_progress: Signal<(RequestId, u64, Option<u64>)>,
    /// `(request, body bytes sent, total)` as the request body leaves.
    pub upload_progress: Signal<(RequestId, u64, u64)>,
    core: Rc<LoopCore>,
    inner: RefCell<ClientInner>,
    /// The action list of the last data arrival, kept (empty) for the next: no allocation per read.
    spare_actions: Cell<Vec<Action>>,
    /// The SSE event batch of the last delivery, kept (emptied, its events' buffers kept) for the
    /// next, so a busy stream allocates nothing per event.
    spare_batch: Cell<SseBatch>,
    /// The URL text of the last `get`/`post`/… call and its parse: a client that sends to one URL
    /// over and over (polling, keep-alive loops) parses it once (a parse was ~6,000 instructions,
    /// a fifth of a keep-alive request). Parsing is a pure function of the text, so the copy is
    /// exactly what a new parse would give.
    last_url: RefCell<Option<(Box<str>, Url)>>,
    self_weak: Weak<HttpClient>,
}

impl HttpClient {
    /// A client with a default [`HttpSession`].
    pub fn new() -> Result<Rc<HttpClient>, LoopError> {
        Self::with_session(HttpSession::new())
    }

    /// A client with `session`'s defaults, cookie jar and limits.
    pub fn with_session(session: HttpSession) -> Result<Rc<HttpClient>, LoopError> {
        let core = LoopCore::current()?;
        Ok(Rc::new_cyclic(|weak| HttpClient {
            about_to_send_request: Signal::new(),
            response_received: Signal::new(),
            error: Signal::new(),
            download_progress: Signal::new(),
            upload_progress: Signal::new(),
            core,
            inner: RefCell::new(ClientInner {
                session,
                requests: IdMap::default(),
                conns: IdMap::default(),
                hosts: HashMap::new(),
                next_id: 1,
                tls: None,
            }),
            spare_actions: Cell::new(Vec::new()),
            spare_batch: Cell::default(),
            last_url: RefCell::new(None),
            self_weak: weak.clone(),
        }))
    }

    /// A copy of the session settings.
    pub fn session(&self) -> HttpSession {
        self.inner.borrow().session.clone()
    }

    /// Replaces the session settings (for requests sent afterwards).
    pub fn set_session(&self, session: HttpSession) {
        let mut inner = self.inner.borrow_mut();
        inner.session = session;
        inner.tls = None;
    }

    /// Changes the session settings in place.
    pub fn update_session(&self, f: impl FnOnce(&mut HttpSession)) {
        let mut session = self.session();
        f(&mut session);
        self.set_session(session);
    }

    /// Sends `request`; `callback` receives the final response or the error.
    pub fn send(
        &self,
        request: HttpRequest,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.submit(request, Delivery::Buffered(Some(Box::new(callback))))
    }

    /// Sends `request` and delivers the body as it arrives instead of buffering it: `on_event`
    /// gets the head, then each piece of decoded body; `on_done` gets the response (with an empty
    /// body) or the error. Streaming requests have no total timeout.
    pub fn send_streaming(
        &self,
        mut request: HttpRequest,
        on_event: impl FnMut(StreamEvent<'_>) + 'static,
        on_done: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        request.set_streaming(true);
        self.submit(
            request,
            Delivery::Streaming {
                on_event: Rc::new(RefCell::new(on_event)),
                on_done: Some(Box::new(on_done)),
            },
        )
    }

    /// `GET url`.
    pub fn get(
        &self,
        url: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(HttpMethod::Get, url, None, callback)
    }

    /// `HEAD url`.
    pub fn head(
        &self,
        url: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(HttpMethod::Head, url, None, callback)
    }

    /// `POST url` with `body` of `content_type`.
    pub fn post(
        &self,
        url: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(
            HttpMethod::Post,
            url,
            Some((body.into(), content_type)),
            callback,
        )
    }

    /// `PUT url` with `body` of `content_type`.
    pub fn put(
        &self,
        url: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(
            HttpMethod::Put,
            url,
            Some((body.into(), content_type)),
            callback,
        )
    }

    /// `PATCH url` with `body` of `content_type`.
    pub fn patch(
        &self,
        url: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(
            HttpMethod::Patch,
            url,
            Some((body.into(), content_type)),
            callback,
        )
    }

    /// `DELETE url` (KDNetwork `deleteResource`).
    pub fn delete(
        &self,
        url: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(HttpMethod::Delete, url, None, callback)
    }

    /// `OPTIONS url`.
    pub fn options(
        &self,
        url: &str,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        self.send_method(HttpMethod::Options, url, None, callback)
    }

    /// Sends `request` and runs the current thread's loop until it completes (for scripts and
    /// tests). Other work on the loop keeps running meanwhile.
    pub fn send_and_wait(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let result: Rc<RefCell<Option<Result<HttpResponse, HttpError>>>> = Rc::default();
        let slot = result.clone();
        self.send(request, move |r| *slot.borrow_mut() = Some(r));
        loop {
            if let Some(r) = result.borrow_mut().take() {
                return r;
            }
            if let Err(e) = self.core.turn(None) {
                log::error!("event loop failed while waiting for a response: {e}");
                return Err(HttpError::Transport(SocketError::InvalidState(
                    "the event loop's poller failed while waiting for the response",
                )));
            }
        }
    }

    /// Cancels one request: its callback receives [`HttpError::Cancelled`] (on a later turn).
    /// Returns false if it already finished.
    pub fn cancel(&self, id: RequestId) -> bool {
        let mut actions = Vec::new();
        let found = {
            let mut inner = self.inner.borrow_mut();
            let found = inner.requests.contains_key(&id.0);
            if found {
                self.fail(&mut inner, id.0, HttpError::Cancelled, false, &mut actions);
            }
            found
        };
        self.post_actions(actions);
        found
    }

    /// Cancels every request of this client (and only of this client).
    pub fn cancel_all(&self) {
        let ids: Vec<u64> = self.inner.borrow().requests.keys().copied().collect();
        for id in ids {
            self.cancel(RequestId(id));
        }
    }

    pub(crate) fn core(&self) -> &Rc<LoopCore> {
        &self.core
    }

    /// Requests in flight or queued.
    pub fn pending_requests(&self) -> usize {
        self.inner.borrow().requests.len()
    }

    /// Open connections (active and idle) to all hosts.
    pub fn open_connections(&self) -> usize {
        self.inner.borrow().conns.len()
    }

    /// Sends an SSE request: the response head is offered to `target`, and an event stream's
    /// body goes straight from the socket into the request's parser.
    pub(crate) fn send_sse(
        &self,
        mut request: HttpRequest,
        parser: Box<SseParser>,
        read_timeout: Option<Duration>,
        target: Weak<dyn SseTarget>,
    ) -> RequestId {
        request.set_streaming(true);
        let id = self.submit(
            request,
            Delivery::Sse {
                target,
                parser: None,
            },
        );
        let mut inner = self.inner.borrow_mut();
        if let Some(state) = inner.requests.get_mut(&id.0) {
            state.sse_parser = Some(parser);
            state.read_timeout = read_timeout;
            // `submit` may already have written the request on an idle connection and armed the
            // session's read timer; the stream's own setting replaces it, and "none" must not
            // leave that timer behind (nothing would move its deadline).
            if read_timeout.is_none()
                && let Some(key) = state.idle.take().and_then(|watch| watch.timer)
            {
                self.core.timer_remove(key);
            }
        }
        self.arm_idle_timer(&mut inner, id.0);
        drop(inner);
        id
    }

    /// Ends one request silently (no callback): for owners that stop a stream themselves.
    pub(crate) fn abandon(&self, id: RequestId) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(mut state) = self.take_request(&mut inner, id.0) {
                self.release_conn(&mut inner, &mut state, false, &mut actions);
            }
        }
        self.run_actions(actions);
    }

    // ---- submitting --------------------------------------------------------------------------

    fn send_method(
        &self,
        method: HttpMethod,
        url: &str,
        body: Option<(Bytes, &str)>,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        match self.parse_url(url).and_then(HttpRequest::from_url) {
            Ok(mut request) => {
                request.set_method(method);
                if let Some((body, content_type)) = body {
                    request.set_body(body);
                    request.set_header("Content-Type", content_type);
                }
                self.send(request, callback)
            }
            Err(e) => {
                let id = self.next_id();
                self.core.post(Box::new(move || callback(Err(e))));
                id
            }
        }
    }

    /// `url` parsed, reusing the last parse when the text is the same.
    fn parse_url(&self, url: &str) -> Result<Url, HttpError> {
        if let Some((text, parsed)) = &*self.last_url.borrow()
            && **text == *url
        {
            return Ok(parsed.clone());
        }
        let parsed = parse_url(url)?;
        *self.last_url.borrow_mut() = Some((url.into(), parsed.clone()));
        Ok(parsed)
    }

    fn next_id(&self) -> RequestId {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id += 1;
        RequestId(id)
    }

    fn submit(&self, mut request: HttpRequest, delivery: Delivery) -> RequestId {
        let id = self.next_id();
        {
            let inner = self.inner.borrow();
            inner.session.prepare_request(&mut request);
        }
        request.take_url_credentials();
        if let Err(e) = request.validate() {
            self.post_actions(vec![Action::Finish(id.0, delivery, Err(e))]);
            return id;
        }
        // Clone the request for the signal only when someone listens.
        if self.about_to_send_request.connection_count() > 0 {
            self.about_to_send_request.emit(&(id, request.clone()));
        }
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let limits = HeadLimits {
                max_head_bytes: inner.session.max_response_head_bytes(),
                max_headers: inner.session.max_response_headers(),
            };
            let host = intern_host(&mut inner.hosts, host_key(request.url()));
            let now = Instant::now();
            let state = RequestState {
                request,
                phase: Phase::Queued,
                delivery,
                conn: None,
                host,
                head_limits: limits,
                partial_head: None,
                response_head: None,
                decoder: None,
                content: None,
                body: BytesMut::new(),
                body_limit: None,
                max_body: inner.session.max_response_body_bytes(),
                reusable: false,
                redirect_next: None,
                redirects: 0,
                started: now,
                got_bytes: false,
                retried: false,
                total_timer: None,
                idle: None,
                upload_total: 0,
                upload_head_len: 0,
                wire_written: 0,
                read_timeout: inner.session.read_timeout(),
                write_when_connected: false,
                sse_mode: false,
                sse_parser: None,
            };
            inner.requests.insert(id.0, Box::new(state));
            self.arm_total_timer(&mut inner, id.0);
            self.schedule(&mut inner, id.0, &mut actions);
        }
        // Failures found while scheduling are reported from the loop, never from inside send().
        self.post_actions(actions);
        id
    }

    fn arm_total_timer(&self, inner: &mut ClientInner, id: u64) {
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        if state.request.is_streaming() {
            return;
        }
        if let Some(timeout) = state.request.timeout() {
            let weak = self.self_weak.clone();
            state.total_timer = Some(self.core.call_after(timeout, move || {
                if let Some(client) = weak.upgrade() {
                    client.on_timeout(id, TimeoutPhase::Total);
                }
            }));
        }
    }

    fn arm_idle_timer(&self, inner: &mut ClientInner, id: u64) {
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        let Some(timeout) = state.read_timeout else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let watch = state.idle.get_or_insert_with(|| {
            Box::new(IdleWatch {
                timer: None,
                deadline,
                fires_at: deadline,
            })
        });
        watch.deadline = deadline;
        if watch.timer.is_some() && watch.fires_at <= deadline {
            // The armed timer fires first and then waits out the rest (see `on_idle_timeout`).
            return;
        }
        if let Some(key) = watch.timer.take() {
            self.core.timer_remove(key);
        }
        self.start_idle_timer(watch, id, timeout, deadline);
    }

    fn start_idle_timer(&self, watch: &mut IdleWatch, id: u64, delay: Duration, at: Instant) {
        let weak = self.self_weak.clone();
        watch.fires_at = at;
        watch.timer = Some(self.core.call_after(delay, move || {
            if let Some(client) = weak.upgrade() {
                client.on_idle_timeout(id);
            }
        }));
    }

    /// The read timer fired: re-armed for the rest when bytes moved the deadline since, else the
    /// read timeout. Its phase is the request's phase now, not when the timer was armed: the head
    /// may have completed in the same read that armed it.
    fn on_idle_timeout(&self, id: u64) {
        let phase = {
            let mut inner = self.inner.borrow_mut();
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            let Some(watch) = state.idle.as_deref_mut() else {
                return;
            };
            watch.timer = None;
            let now = Instant::now();
            if now < watch.deadline {
                let deadline = watch.deadline;
                self.start_idle_timer(watch, id, deadline - now, deadline);
                return;
            }
            match state.phase {
                Phase::RecvBody => TimeoutPhase::BodyIdle,
                _ => TimeoutPhase::ResponseHead,
            }
        };
        self.on_timeout(id, phase);
    }

    /// Puts the request on a connection of its host, or queues it.
    fn schedule(&self, inner: &mut ClientInner, id: u64, actions: &mut Vec<Action>) {
        let Some(host) = inner.requests.get(&id).map(|s| s.host.clone()) else {
            return;
        };
        let max = inner.session.max_connections_per_host().max(1);
        // Most recently used idle connection first (warmest); skip ones the server already closed
        // (their close notice may still be queued).
        while let Some(conn_id) = inner.hosts.get_mut(&host).and_then(|h| h.idle.pop()) {
            match inner.conns.get(&conn_id).map(|c| c.socket.state()) {
                Some(SocketState::Connected) => {
                    return self.assign(inner, conn_id, id, actions);
                }
                Some(_) => self.forget_conn(inner, conn_id),
                None => {}
            }
        }
        let host_state = inner.hosts.entry(host.clone()).or_default();
        if host_state.active >= max {
            host_state.queue.push_back(id);
            return;
        }
        match self.open_conn(inner, &host) {
            Ok(conn_id) => self.assign(inner, conn_id, id, actions),
            Err(e) => self.fail(inner, id, e, true, actions),
        }
    }

    fn open_conn(&self, inner: &mut ClientInner, host: &Rc<HostKey>) -> Result<u64, HttpError> {
        let socket = TcpSocket::new().map_err(|e| {
            HttpError::Transport(SocketError::InvalidState(
                if matches!(e, LoopError::NoEventLoop) {
                    "no event loop on this thread"
                } else {
                    "event loop unavailable"
                },
            ))
        })?;
        let connect_timeout = inner.session.connect_timeout();
        socket.set_connect_timeout(Some(connect_timeout));
        if host.https {
            let config = self.tls_config(inner)?;
            socket.enable_client_tls(config, &host.host);
            socket.set_handshake_timeout(Some(connect_timeout));
        }
        let conn_id = inner.next_id;
        inner.next_id += 1;
        let sink = Rc::new(ConnSink {
            client: self.self_weak.clone(),
            conn: conn_id,
        });
        let weak_sink: Weak<dyn DataSink> = Rc::downgrade(&sink) as Weak<dyn DataSink>;
        socket.set_data_sink(Some(weak_sink));
        socket.connect_to_host(&host.host, host.port)?;
        inner.conns.insert(
            conn_id,
            Box::new(Conn {
                host: Rc::clone(host),
                socket,
                request: None,
                served: 0,
                idle_timer: None,
                _sink: sink,
            }),
        );
        inner.hosts.entry(host.clone()).or_default().active += 1;
        log::debug!("opened connection {conn_id} to {}:{}", host.host, host.port);
        Ok(conn_id)
    }

    fn tls_config(&self, inner: &mut ClientInner) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        if let Some(config) = &inner.tls {
            return Ok(Arc::clone(config));
        }
        let session = &inner.session;
        let mut config = TlsClientConfig::new();
        for pem in session.extra_ca_certificates() {
            config.add_ca_certificate(pem)?;
        }
        if let Some((cert, key)) = session.client_certificate() {
            config.set_client_certificate(cert, key)?;
        }
        if !session.verifies_certificates() {
            config.dangerous_disable_certificate_verification();
        }
        let built = config.build()?;
        inner.tls = Some(Arc::clone(&built));
        Ok(built)
    }

    /// Writes the request on the connection (queued by the socket until it connects).
    ///
    /// On a connection still on its way up the request is only checked (so it fails as early
    /// as before) and written once connected: thousands of connecting sockets then don't each
    /// hold a copy of their request's bytes.
    fn assign(&self, inner: &mut ClientInner, conn_id: u64, id: u64, actions: &mut Vec<Action>) {
        let (Some(conn), Some(state)) =
            (inner.conns.get_mut(&conn_id), inner.requests.get_mut(&id))
        else {
            return;
        };
        if let Some(key) = conn.idle_timer.take() {
            self.core.timer_remove(key);
        }
        conn.request = Some(id);
        state.conn = Some(conn_id);
        state.phase = Phase::RecvHead;
        let connecting = matches!(
            conn.socket.state(),
            SocketState::HostLookup | SocketState::Connecting
        );
        state.write_when_connected = connecting;
        if let Err(e) = self.write_request(inner, conn_id, id, connecting) {
            return self.fail(inner, id, e, true, actions);
        }
        self.arm_idle_timer(inner, id);
    }

    /// Encodes request `id` and writes it to connection `conn_id`; with `check_only`, encodes
    /// just its head, to report what would fail.
    fn write_request(
        &self,
        inner: &mut ClientInner,
        conn_id: u64,
        id: u64,
        check_only: bool,
    ) -> Result<(), HttpError> {
        let cookie = inner
            .requests
            .get(&id)
            .and_then(|s| inner.session.cookie_header_for_url(s.request.url()));
        let (Some(conn), Some(state)) = (inner.conns.get(&conn_id), inner.requests.get_mut(&id))
        else {
            return Ok(());
        };
        let body = state.request.body();
        let mut wire = Vec::with_capacity(256 + if check_only { 0 } else { body.len() });
        encode_request_head_for(&state.request, cookie, &mut wire)?;
        if check_only {
            return Ok(());
        }
        state.upload_total = body.len() as u64;
        state.upload_head_len = wire.len() as u64;
        state.wire_written = 0;
        wire.extend_from_slice(body);
        conn.socket.write(&wire)?;
        Ok(())
    }

    /// A new connection is up: write the request that was waiting for it.
    fn on_conn_connected(&self, conn_id: u64) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let Some(id) = inner.conns.get(&conn_id).and_then(|c| c.request) else {
                return;
            };
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            if !std::mem::take(&mut state.write_when_connected) {
                return;
            }
            if let Err(e) = self.write_request(&mut inner, conn_id, id, false) {
                self.fail(&mut inner, id, e, true, &mut actions);
            }
        }
        self.run_actions(actions);
    }

    // ---- receiving ---------------------------------------------------------------------------

    fn on_data(&self, conn_id: u64, data: &[u8]) {
        // Taken, not borrowed: a nested arrival (from user code) simply starts an empty list.
        let mut actions = self.spare_actions.take();
        // A large read is handled a slice at a time, as if it had arrived in smaller reads: each
        // slice's SSE events reach the slots while they (and the slice) are still in cache.
        for slice in data.chunks(DELIVERY_SLICE) {
            {
                let mut inner = self.inner.borrow_mut();
                self.process_data(&mut inner, conn_id, slice, &mut actions);
            }
            self.run_action_list(&mut actions);
        }
        self.spare_actions.set(actions);
    }

    fn process_data(
        &self,
        inner: &mut ClientInner,
        conn_id: u64,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) {
        let Some(conn) = inner.conns.get(&conn_id) else {
            return;
        };
        let Some(id) = conn.request else {
            // Bytes nobody asked for on an idle connection: it cannot be trusted any more.
            log::debug!("unexpected bytes on idle connection {conn_id}; closing it");
            self.drop_conn(inner, conn_id, actions);
            return;
        };
        // The head wait is a deadline from the request write (a peer dripping bytes cannot stretch
        // it); only body waits restart on each arrival.
        let in_head = inner
            .requests
            .get(&id)
            .is_some_and(|s| s.phase == Phase::RecvHead);
        if !in_head {
            self.arm_idle_timer(inner, id);
        }
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        state.got_bytes = true;
        let mut input = data;
        // Holds the bytes `input` points into when the head came in pieces.
        let partial_holder: Box<PartialHead>;
        if state.phase == Phase::RecvHead {
            let limits = state.head_limits;
            let mut partial = state.partial_head.take();
            let mut parser = match partial.as_deref_mut() {
                Some(p) => {
                    p.buf.extend_from_slice(input);
                    p.parser.clone()
                }
                None => HeadParser::new(limits),
            };
            let bytes: &[u8] = partial.as_deref().map_or(input, |p| &p.buf[..]);
            // Where the current head starts in `bytes` (after any 1xx heads).
            let mut start = 0;
            let outcome = loop {
                match parser.parse(&bytes[start..]) {
                    Ok(HeadStatus::Partial) => break Ok(None),
                    Ok(HeadStatus::Complete { head, consumed }) => {
                        start += consumed;
                        if head.is_informational() {
                            // 1xx: skip it and parse the next head from what follows.
                            parser = HeadParser::new(limits);
                            continue;
                        }
                        break Ok(Some(head));
                    }
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Ok(None) => {
                    // Keep the unfinished head (without any 1xx before it) for the next read.
                    let p = match partial {
                        Some(mut p) => {
                            let _ = p.buf.split_to(start);
                            p.parser = parser;
                            p
                        }
                        None => Box::new(PartialHead {
                            buf: BytesMut::from(&input[start..]),
                            parser,
                        }),
                    };
                    state.partial_head = Some(p);
                    return;
                }
                Ok(Some(head)) => {
                    if let Err(e) = self.on_head(inner, id, head, actions) {
                        return self.fail(inner, id, e, true, actions);
                    }
                    self.arm_idle_timer(inner, id);
                    match partial {
                        Some(p) => {
                            partial_holder = p;
                            input = &partial_holder.buf[start..];
                        }
                        None => input = &input[start..],
                    }
                }
                Err(e) => return self.fail(inner, id, e, true, actions),
            }
        }
        if !input.is_empty() || self.body_done(inner, id) {
            self.feed_body(inner, id, input, actions);
        }
    }

    fn body_done(&self, inner: &ClientInner, id: u64) -> bool {
        inner
            .requests
            .get(&id)
            .and_then(|s| s.decoder.as_ref())
            .is_some_and(|d| d.is_complete())
    }

    /// The final head arrived: framing, cookies, redirect decision, streaming hand-off.
    fn on_head(
        &self,
        inner: &mut ClientInner,
        id: u64,
        head: ResponseHead,
        actions: &mut Vec<Action>,
    ) -> Result<(), HttpError> {
        let ClientInner {
            session, requests, ..
        } = inner;
        let Some(state) = requests.get_mut(&id) else {
            return Ok(());
        };
        let is_head = state.request.method() == &HttpMethod::Head;
        let framing = body_framing(is_head, &head)?;
        state.reusable = framing.reusable;
        state.decoder = Some(Box::new(BodyDecoder::new(framing.body)));
        // An identity "decoder" would only copy: bytes then go to the body as received, and no
        // stream carries a boxed decoder for nothing.
        state.content = if framing.body == BodyFraming::NoBody {
            None
        } else {
            ContentDecoder::for_headers(&head.headers)
                .filter(|d| !d.is_identity())
                .map(Box::new)
        };
        if let BodyFraming::Length(n) = framing.body {
            let buffered = matches!(state.delivery, Delivery::Buffered(_));
            if buffered && n > state.max_body as u64 {
                return Err(HttpError::LimitExceeded {
                    what: "announced response body",
                    limit: state.max_body,
                });
            }
            // Reserve the announced size up front (bounded: a lying header must not allocate).
            state.body.reserve(n.min(16 * 1024 * 1024) as usize);
        }
        session
            .cookie_jar()
            .lock()
            .store_response_cookies(state.request.url(), head.headers.get_all("set-cookie"));
        match redirect_action(
            &state.request,
            head.status,
            head.headers.get("location"),
            state.redirects,
        ) {
            RedirectAction::Follow(next) => {
                // Read (and discard) this body so the connection can be reused.
                state.redirect_next = Some(Box::new(next));
                state.body_limit = Some(0);
            }
            RedirectAction::Error(e) => return Err(e),
            RedirectAction::Return => {}
        }
        state.phase = Phase::RecvBody;
        if state.redirect_next.is_none() {
            match &state.delivery {
                Delivery::Streaming { on_event, .. } => {
                    let response = state.response_from(head.clone(), Bytes::new());
                    actions.push(Action::StreamHead(Rc::clone(on_event), response));
                }
                Delivery::Sse { target, .. } => {
                    let response = state.response_from(head.clone(), Bytes::new());
                    let opens = response.status() == 200
                        && response.content_type().is_some_and(is_event_stream_mime);
                    if opens {
                        state.sse_mode = true;
                        // Nothing reads the request again (no retry after bytes, no redirect
                        // from a 200); its owner keeps the copy it reconnects with.
                        state.request.shed_headers_and_body();
                    } else {
                        state.body_limit = Some(SSE_ERROR_BODY_LIMIT);
                    }
                    actions.push(Action::SseHead(id, target.clone(), response));
                }
                Delivery::Buffered(_) => {}
            }
        }
        state.response_head = Some(Box::new(head));
        Ok(())
    }

    fn feed_body(&self, inner: &mut ClientInner, id: u64, input: &[u8], actions: &mut Vec<Action>) {
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        let RequestState {
            decoder,
            content,
            body,
            body_limit,
            max_body,
            delivery,
            sse_mode,
            sse_parser,
            ..
        } = &mut **state;
        let Some(decoder) = decoder.as_mut() else {
            return;
        };
        let mut collected = self.spare_batch.take();
        let mut stream_chunk = BytesMut::new();
        let mut failure: Option<HttpError> = None;
        let mut parse_failure: Option<HttpError> = None;
        let is_stream = matches!(delivery, Delivery::Streaming { .. });
        let mut sink = |plain: &[u8]| {
            if parse_failure.is_some() {
                return;
            }
            if *sse_mode {
                if let Some(parser) = sse_parser.as_mut() {
                    if let Err(e) = parser.feed_borrowed(plain, &mut collected) {
                        parse_failure = Some(HttpError::LimitExceeded {
                            what: "server-sent event",
                            limit: match e {
                                crate::network::sse::SseParseError::EventTooLarge { limit } => {
                                    limit
                                }
                            },
                        });
                    }
                }
            } else if is_stream {
                stream_chunk.extend_from_slice(plain);
            } else if body_limit.is_none() && body.len().saturating_add(plain.len()) > *max_body {
                parse_failure = Some(HttpError::LimitExceeded {
                    what: "response body",
                    limit: *max_body,
                });
            } else {
                let room = body_limit.map_or(usize::MAX, |l| l.saturating_sub(body.len()));
                body.extend_from_slice(&plain[..plain.len().min(room)]);
            }
        };
        let progress = decoder.decode(input, &mut |raw: &[u8]| match content.as_mut() {
            Some(c) => {
                if let Err(e) = c.decode(raw, &mut sink) {
                    failure = failure.take().or(Some(e));
                }
            }
            None => sink(raw),
        });
        if let Some(e) = parse_failure {
            failure = Some(e);
        }
        let complete = match progress {
            Ok(p) => {
                if p.complete && p.consumed < input.len() {
                    // Bytes beyond the response (pipelining garbage): never reuse this connection.
                    state.reusable = false;
                }
                p.complete
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        };
        if complete && failure.is_none() {
            if let Some(c) = state.content.as_mut() {
                let mut tail = BytesMut::new();
                if let Err(e) = c.finish(&mut |p: &[u8]| tail.extend_from_slice(p)) {
                    failure = Some(e);
                } else if !tail.is_empty() {
                    // Rare: the decoder held back output until the end.
                    if state.sse_mode {
                        if let Some(parser) = state.sse_parser.as_mut() {
                            let _ = parser.feed_borrowed(&tail, &mut collected);
                        }
                    } else if is_stream {
                        stream_chunk.extend_from_slice(&tail);
                    } else {
                        state.body.extend_from_slice(&tail);
                    }
                }
            }
        }
        // A rejected SSE response only needs the start of its body for the error message: stop
        // reading there (the body may never end) and give up the connection.
        let complete = complete
            || (matches!(state.delivery, Delivery::Sse { .. })
                && !state.sse_mode
                && state.body_limit.is_some_and(|l| state.body.len() >= l)
                && {
                    state.reusable = false;
                    true
                });
        let received = state.decoder.as_ref().map_or(0, |d| d.received());
        let total = state
            .response_head
            .as_ref()
            .and_then(|head| content_length(&head.headers));
        if let Some(e) = failure {
            self.flush_stream_outputs(inner, id, collected, stream_chunk, actions);
            return self.fail(inner, id, e, true, actions);
        }
        self.flush_stream_outputs(inner, id, collected, stream_chunk, actions);
        // Checked here, not when run: no action (and no list allocation) per chunk otherwise.
        if self.download_progress.connection_count() > 0 {
            actions.push(Action::Progress(id, received, total));
        }
        if complete {
            self.complete(inner, id, actions);
        }
    }

    fn flush_stream_outputs(
        &self,
        inner: &mut ClientInner,
        id: u64,
        collected: SseBatch,
        chunk: BytesMut,
        actions: &mut Vec<Action>,
    ) {
        let Some(state) = inner.requests.get(&id) else {
            return;
        };
        match &state.delivery {
            Delivery::Sse { target, .. } => {
                if let Some(retry) = collected.retry() {
                    actions.push(Action::SseRetry(id, target.clone(), retry));
                }
                if collected.is_empty() {
                    self.recycle_batch(collected);
                } else {
                    actions.push(Action::SseEvents(id, target.clone(), collected));
                }
            }
            Delivery::Streaming { on_event, .. } if !chunk.is_empty() => {
                actions.push(Action::StreamData(Rc::clone(on_event), chunk.freeze()));
            }
            _ => {}
        }
    }

    /// The body is complete: follow a redirect, or finish the request.
    fn complete(&self, inner: &mut ClientInner, id: u64, actions: &mut Vec<Action>) {
        let Some(mut state) = self.take_request(inner, id) else {
            return;
        };
        let reusable = state.reusable;
        self.release_conn(inner, &mut state, reusable, actions);
        if let Some(next) = state.redirect_next.take() {
            log::debug!("request {id}: redirect to {}", next.url());
            state.redirects += 1;
            state.request = *next;
            state.host = intern_host(&mut inner.hosts, host_key(state.request.url()));
            state.reset_for_hop();
            inner.requests.insert(id, Box::new(state));
            return self.schedule(inner, id, actions);
        }
        if let Some(key) = state.total_timer.take() {
            self.core.timer_remove(key);
        }
        let Some(head) = state.response_head.take().map(|h| *h) else {
            return;
        };
        let body = state.body.split().freeze();
        let response = state.response_from(head, body);
        actions.push(Action::Finish(id, state.into_delivery(), Ok(response)));
    }

    /// Removes the request and its timers.
    fn take_request(&self, inner: &mut ClientInner, id: u64) -> Option<RequestState> {
        let mut state = *inner.requests.remove(&id)?;
        if let Some(key) = state.idle.as_deref_mut().and_then(|w| w.timer.take()) {
            self.core.timer_remove(key);
        }
        if let Some(host) = inner.hosts.get_mut(&state.host) {
            host.queue.retain(|q| *q != id);
        }
        Some(state)
    }

    /// Frees the request's connection: back to the pool (or to the next queued request) when
    /// `reusable`, else closed.
    fn release_conn(
        &self,
        inner: &mut ClientInner,
        state: &mut RequestState,
        reusable: bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(conn_id) = state.conn.take() else {
            return;
        };
        if !reusable {
            return self.drop_conn(inner, conn_id, actions);
        }
        let Some(conn) = inner.conns.get_mut(&conn_id) else {
            return;
        };
        conn.request = None;
        conn.served += 1;
        let host = conn.host.clone();
        let next = inner.hosts.get_mut(&host).and_then(|h| h.queue.pop_front());
        if let Some(next) = next {
            return self.assign(inner, conn_id, next, actions);
        }
        let idle = inner.session.idle_connection_timeout();
        let weak = self.self_weak.clone();
        if let Some(conn) = inner.conns.get_mut(&conn_id) {
            conn.idle_timer = Some(self.core.call_after(idle, move || {
                if let Some(client) = weak.upgrade() {
                    client.on_idle_expired(conn_id);
                }
            }));
        }
        let host_state = inner.hosts.entry(host).or_default();
        host_state.idle.push(conn_id);
    }

    /// Closes a connection (after the borrow) and lets a queued request of its host start.
    fn drop_conn(&self, inner: &mut ClientInner, conn_id: u64, actions: &mut Vec<Action>) {
        let Some(mut conn) = inner.conns.remove(&conn_id) else {
            return;
        };
        if let Some(key) = conn.idle_timer.take() {
            self.core.timer_remove(key);
        }
        if let Some(host) = inner.hosts.get_mut(&conn.host) {
            host.active = host.active.saturating_sub(1);
            host.idle.retain(|c| *c != conn_id);
        }
        actions.push(Action::Close(conn.socket));
        let next = inner
            .hosts
            .get_mut(&conn.host)
            .and_then(|h| h.queue.pop_front());
        if let Some(next) = next {
            self.schedule(inner, next, actions);
        }
    }

    /// Removes a connection that is already closed from the pool's books.
    fn forget_conn(&self, inner: &mut ClientInner, conn_id: u64) {
        if let Some(mut conn) = inner.conns.remove(&conn_id) {
            if let Some(key) = conn.idle_timer.take() {
                self.core.timer_remove(key);
            }
            if let Some(host) = inner.hosts.get_mut(&conn.host) {
                host.active = host.active.saturating_sub(1);
                host.idle.retain(|c| *c != conn_id);
            }
        }
    }

    fn on_idle_expired(&self, conn_id: u64) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            if inner
                .conns
                .get(&conn_id)
                .is_some_and(|c| c.request.is_none())
            {
                if let Some(conn) = inner.conns.get_mut(&conn_id) {
                    conn.idle_timer = None;
                }
                log::debug!("closing idle connection {conn_id}");
                self.drop_conn(&mut inner, conn_id, &mut actions);
            }
        }
        self.run_actions(actions);
    }

    /// The connection closed (peer EOF, reset, TLS failure, …).
    fn on_conn_closed(&self, conn_id: u64, error: Option<SocketError>) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let Some(conn) = inner.conns.get(&conn_id) else {
                return;
            };
            let request = conn.request;
            let served = conn.served;
            let host = conn.host.clone();
            let unauthenticated_eof = error.is_none() && conn.socket.closed_without_close_notify();
            // Already closed by the peer: drop it without another close.
            self.forget_conn(&mut inner, conn_id);
            if let Some(id) = request {
                let end = ConnEnd {
                    served,
                    error,
                    unauthenticated_eof,
                };
                self.on_request_conn_closed(&mut inner, id, end, &mut actions);
            }
            // A slot of this host was freed: start a queued request on a new connection.
            let next = inner.hosts.get_mut(&host).and_then(|h| h.queue.pop_front());
            if let Some(next) = next {
                self.schedule(&mut inner, next, &mut actions);
            }
        }
        self.run_actions(actions);
    }

    fn on_request_conn_closed(
        &self,
        inner: &mut ClientInner,
        id: u64,
        end: ConnEnd,
        actions: &mut Vec<Action>,
    ) {
        let ConnEnd {
            served,
            error,
            unauthenticated_eof,
        } = end;
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        state.conn = None;
        // A reused keep-alive connection the server had already closed: replay once on a fresh one.
        if !state.got_bytes && served > 0 && !state.retried {
            log::debug!("request {id}: pooled connection was closed by the server; retrying");
            state.retried = true;
            state.reset_for_hop();
            return self.schedule(inner, id, actions);
        }
        if let Some(e) = error {
            return self.fail(inner, id, e.into(), false, actions);
        }
        match state.phase {
            Phase::RecvBody => {
                let finished = state.decoder.as_mut().map(|d| {
                    if unauthenticated_eof {
                        d.finish_at_unauthenticated_eof()
                    } else {
                        d.finish_at_eof()
                    }
                });
                match finished {
                    Some(Ok(())) => {
                        state.reusable = false;
                        self.feed_body(inner, id, &[], actions);
                    }
                    Some(Err(e)) => self.fail(inner, id, e, false, actions),
                    None => self.fail(inner, id, HttpError::EmptyResponse, false, actions),
                }
            }
            Phase::RecvHead if state.got_bytes => self.fail(
                inner,
                id,
                HttpError::Protocol("connection closed in the middle of the response head".into()),
                false,
                actions,
            ),
            _ => self.fail(inner, id, HttpError::EmptyResponse, false, actions),
        }
    }

    fn on_timeout(&self, id: u64, phase: TimeoutPhase) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(state) = inner.requests.get_mut(&id) {
                match phase {
                    TimeoutPhase::Total => state.total_timer = None,
                    _ => {
                        if let Some(watch) = state.idle.as_deref_mut() {
                            watch.timer = None;
                        }
                    }
                }
                self.fail(
                    &mut inner,
                    id,
                    HttpError::Timeout(phase),
                    true,
                    &mut actions,
                );
            }
        }
        self.run_actions(actions);
    }

    fn on_bytes_written(&self, conn_id: u64, n: usize) {
        let update = {
            let mut inner = self.inner.borrow_mut();
            let Some(id) = inner.conns.get(&conn_id).and_then(|c| c.request) else {
                return;
            };
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            if state.upload_total == 0 {
                return;
            }
            state.wire_written += n as u64;
            let sent = state
                .wire_written
                .saturating_sub(state.upload_head_len)
                .min(state.upload_total);
            (id, sent, state.upload_total)
        };
        self.upload_progress
            .emit(&(RequestId(update.0), update.1, update.2));
    }

    /// Ends a request with `error`; `close_conn` when its connection is now unusable.
    fn fail(
        &self,
        inner: &mut ClientInner,
        id: u64,
        error: HttpError,
        close_conn: bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(mut state) = self.take_request(inner, id) else {
            return;
        };
        if let Some(key) = state.total_timer.take() {
            self.core.timer_remove(key);
        }
        if close_conn {
            self.release_conn(inner, &mut state, false, actions);
        } else {
            state.conn = None;
        }
        log::debug!("request {id} failed: {error}");
        actions.push(Action::Finish(id, state.into_delivery(), Err(error)));
    }

    // ---- delivering --------------------------------------------------------------------------

    fn post_actions(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let weak = self.self_weak.clone();
        self.core.post(Box::new(move || {
            if let Some(client) = weak.upgrade() {
                client.run_actions(actions);
            }
        }));
    }

    /// Runs collected work with no borrow held.
    fn run_actions(&self, mut actions: Vec<Action>) {
        self.run_action_list(&mut actions);
    }

    /// Keeps an SSE batch (emptied) for the next delivery, unless a burst made it large.
    fn recycle_batch(&self, mut batch: SseBatch) {
        if batch.clear() {
            self.spare_batch.set(batch);
        }
    }

    /// Runs and empties `actions` (keeping its capacity).
    fn run_action_list(&self, actions: &mut Vec<Action>) {
        for action in actions.drain(..) {
            match action {
                Action::Close(socket) => socket.abort(),
                Action::StreamHead(f, response) => (f.borrow_mut())(StreamEvent::Head(&response)),
                Action::StreamData(f, data) => (f.borrow_mut())(StreamEvent::Data(&data)),
                Action::SseHead(id, target, response) => {
                    if let Some(t) = target.upgrade() {
                        t.on_head(RequestId(id), &response);
                    }
                }
                Action::SseEvents(id, target, batch) => {
                    if let Some(t) = target.upgrade() {
                        t.on_events(RequestId(id), &batch);
                    }
                    self.recycle_batch(batch);
                }
                Action::SseRetry(id, target, retry) => {
                    if let Some(t) = target.upgrade() {
                        t.on_retry(RequestId(id), retry);
                    }
                }
                Action::Progress(id, received, total) => {
                    if self.download_progress.connection_count() > 0 {
                        self.download_progress
                            .emit(&(RequestId(id), received, total));
                    }
                }
                Action::ResponseReceived(response) => self.response_received.emit(&response),
                Action::Failed(id, e) => self.error.emit(&(RequestId(id), e)),
                Action::Finish(id, delivery, result) => self.finish(id, delivery, result),
            }
        }
    }

    fn finish(&self, id: u64, delivery: Delivery, result: Result<HttpResponse, HttpError>) {
        let signal_copy = match &result {
            Ok(response) if self.response_received.connection_count() > 0 => {
                Some(Action::ResponseReceived(response.clone()))
            }
            Err(e) if self.error.connection_count() > 0 => Some(Action::Failed(id, e.clone())),
            _ => None,
        };
        match delivery {
            Delivery::Buffered(Some(callback)) => callback(result),
            Delivery::Buffered(None) => {}
            Delivery::Streaming { on_done, .. } => {
                if let Some(done) = on_done {
                    done(result);
                }
            }
            Delivery::Sse { target, parser } => {
                if let Some(t) = target.upgrade() {
                    t.on_end(RequestId(id), result, parser);
                }
            }
        }
        if let Some(action) = signal_copy {
            self.run_actions(vec![action]);
        }
    }
}

impl RequestState {
    /// The delivery, with an SSE request's parser handed back to its owner.
    fn into_delivery(mut self) -> Delivery {
        if let Delivery::Sse { parser, .. } = &mut self.delivery {
            *parser = self.sse_parser.take();
        }
        self.delivery
    }

    /// The response made of `head` and `body`, for this request's URL as it stands.
    fn response_from(&self, head: ResponseHead, body: Bytes) -> HttpResponse {
        HttpResponse::new(
            self.request.url().clone(),
            head.status,
            head.reason,
            head.version,
            head.headers,
            body,
        )
        .with_redirect_count(self.redirects)
        .with_elapsed(self.started.elapsed())
    }

    /// Clears everything a response wrote, for a redirect hop or a retry.
    fn reset_for_hop(&mut self) {
        self.phase = Phase::Queued;
        self.conn = None;
        self.partial_head = None;
        self.response_head = None;
        self.decoder = None;
        self.content = None;
        self.body = BytesMut::new();
        self.body_limit = None;
        self.reusable = false;
        self.got_bytes = false;
        self.write_when_connected = false;
        self.sse_mode = false;
    }
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        for (_, state) in inner.requests.drain() {
            let idle_timer = state.idle.as_ref().and_then(|w| w.timer);
            for key in [state.total_timer, idle_timer].into_iter().flatten() {
                self.core.timer_remove(key);
            }
        }
        for (_, conn) in inner.conns.drain() {
            if let Some(key) = conn.idle_timer {
                self.core.timer_remove(key);
            }
            conn.socket.abort();
        }
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("HttpClient")
                .field("requests", &inner.requests.len())
                .field("connections", &inner.conns.len())
                .finish(),
            Err(_) => f.write_str("HttpClient { <busy> }"),
        }
    }
}

/// How a request's connection ended.
struct ConnEnd {
    /// Requests the connection completed before this one.
    served: u32,
    /// The failure, or `None` for the peer's end of stream.
    error: Option<SocketError>,
    /// A TLS end of stream without close_notify: it cannot end a read-to-close body.
    unauthenticated_eof: bool,
}

/// Connects one pooled socket's bytes to the client.
struct ConnSink {
    client: Weak<HttpClient>,
    conn: u64,
}

impl DataSink for ConnSink {
    fn on_data(&self, data: &[u8]) {
        if let Some(client) = self.client.upgrade() {
            client.on_data(self.conn, data);
        }
    }

    fn on_written(&self, n: usize) {
        if let Some(client) = self.client.upgrade() {
            client.on_bytes_written(self.conn, n);
        }
    }

    fn on_connected(&self) {
        if let Some(client) = self.client.upgrade() {
            client.on_conn_connected(self.conn);
        }
    }

    fn on_closed(&self, error: Option<&SocketError>) {
        // Deferred: a socket can close while the client is busy (e.g. a connect that fails at once).
        let client = self.client.clone();
        let conn = self.conn;
        let error = error.cloned();
        if let Some(c) = self.client.upgrade() {
            c.core.post(Box::new(move || {
                if let Some(client) = client.upgrade() {
                    client.on_conn_closed(conn, error);
                }
            }));
        }
    }
}

/// The most bytes of one read processed before the events they carry are delivered (16 KiB).
const DELIVERY_SLICE: usize = 16 * 1024;

/// The pool map's shared copy of `key` (added, with an empty pool, if new).
fn intern_host(hosts: &mut HashMap<Rc<HostKey>, HostState>, key: HostKey) -> Rc<HostKey> {
    if let Some((shared, _)) = hosts.get_key_value(&key) {
        return Rc::clone(shared);
    }
    let shared = Rc::new(key);
    hosts.insert(Rc::clone(&shared), HostState::default());
    shared
}

fn host_key(url: &url::Url) -> HostKey {
    HostKey {
        https: url.scheme() == "https",
        host: url.host_str().unwrap_or_default().to_string(),
        port: url.port_or_known_default().unwrap_or(80),
    }
}

/// Whether a `Content-Type` value's essence is `text/event-stream` (parameters and case ignored).
pub(crate) fn is_event_stream_mime(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// Serialises the request head with the automatic headers (the body goes after it).
fn encode_request_head_for(
    request: &HttpRequest,
    cookie: Option<String>,
    out: &mut Vec<u8>,
) -> Result<(), HttpError> {
    let mut headers: HeaderMap = request.headers().clone();
    if request.auto_add_common_headers() {
        headers.set_if_absent("Host", host_header_value(request.url()));
        headers.set_if_absent("Accept-Encoding", accepted_encodings());
        let body_len = request.body().len();
        let method_has_body = matches!(
            request.method(),
            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
        );
        if (body_len > 0 || method_has_body) && !headers.contains("Transfer-Encoding") {
            headers.set_if_absent("Content-Length", body_len.to_string());
        }
    }
    if let Some(cookie) = cookie {
        headers.set_if_absent("Cookie", cookie);
    }
    encode_request_head(request.method().as_str(), request.url(), &headers, out)
}

fn accepted_encodings() -> &'static str {
    if cfg!(feature = "brotli") {
        "gzip, deflate, br"
    } else {
        "gzip, deflate"
    }
}

impl From<TlsFailure> for HttpError {
    fn from(f: TlsFailure) -> Self {
        HttpError::Transport(SocketError::Tls(f))
    }
}
