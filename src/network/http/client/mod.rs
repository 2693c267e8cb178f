//! [`HttpClient`]: HTTP/1.1 requests on the event loop (KDNetwork `HttpClient`).
//!
//! ```text
//!  send ─▶ Queued ──(free slot: request written)──▶ RecvHead ─▶ RecvBody ─▶ Done
//!            ▲                                   │           │ 1xx: stay     │
//!            └───────── redirect hop ◀──────────────────────────────────────┘
//! ```
//!
//! Each request has a [`RequestState`]; each connection a `Conn` in a per-host pool (at most
//! `max_connections_per_host` open, busy and idle ones alike; further requests queue). Socket bytes reach the request's
//! parsers straight from the loop's read buffer through a data sink: the head is accumulated until
//! complete, body bytes are decoded in place (chunked, then gzip/deflate) and either appended to
//! the body, handed to a streaming callback, or — with `sse_mode` — fed to the request's SSE parser.
//! No `RefCell` borrow is held while user code runs: work is collected under the borrow and
//! delivered after it.

mod actions;
mod pool;
mod receive;
mod send;
mod state;
mod timers;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use self::actions::Action;
use self::pool::{Conn, HostKey, HostMap};
use self::state::{Arrived, Delivery, Fate, Finishing, RequestState, StreamCallback};
use super::id_map::IdMap;
use super::{HeaderMap, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession};
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, TimerKey};
use crate::network::error::SocketError;
use crate::network::sse::{SseBatch, SseParser};
use crate::network::tcp::SocketState;

pub(crate) use self::receive::{extract_mime_type, is_event_stream_response};

/// Identifies one request of an [`HttpClient`] (it keeps its id across redirects and retries).
///
/// Never zero, so an `Option<RequestId>` takes 8 bytes: an SSE client keeps two per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(NonZeroU64);

const _: () = assert!(std::mem::size_of::<Option<RequestId>>() == 8);

impl RequestId {
    /// The id of the client's request `raw`. The client counts from 1, so `raw` is never 0;
    /// a 0 would name no request (it maps to `u64::MAX`, which is never handed out either).
    pub(crate) fn from_raw(raw: u64) -> RequestId {
        debug_assert_ne!(raw, 0, "request ids start at 1");
        RequestId(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MAX))
    }

    /// The number the client's tables are keyed by.
    pub(crate) fn raw(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a streaming request reports as it goes.
pub enum StreamEvent<'a> {
    /// The final response head arrived (the response's body is empty).
    Head(&'a HttpResponse),
    /// Decoded body bytes, valid only during the call.
    Data(&'a [u8]),
}

/// Gives a piece's length, not its bytes (a body may carry a token), as `HttpResponse` does.
impl fmt::Debug for StreamEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEvent::Head(response) => f.debug_tuple("Head").field(response).finish(),
            StreamEvent::Data(data) => f.debug_struct("Data").field("len", &data.len()).finish(),
        }
    }
}

/// Receives an SSE request's stream (implemented by the SSE client).
pub(crate) trait SseTarget {
    /// The response head; `true` when it opens an event stream (status 200, `text/event-stream`).
    fn on_head(&self, id: RequestId, response: &HttpResponse) -> bool;
    /// The events of one delivery, held in the client's reused event pool, with the `retry`
    /// values among them and the stream's last event ID after them; emitted from there.
    fn on_events(&self, id: RequestId, events: &SseBatch);
    /// User code cancelled the request ([`HttpClient::cancel`], [`HttpClient::cancel_all`]):
    /// nothing more of its stream may reach the user, not even events already read (its end
    /// follows as `on_end` with `Cancelled`). Runs no user code.
    fn on_cancel(&self, id: RequestId);
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

/// A URL's text, its parse, and whether a request took that parse as it was (see
/// `HttpClient::last_url`).
type LastUrl = (Box<str>, Arc<Url>, bool);

struct ClientInner {
    session: HttpSession,
    requests: IdMap<Box<RequestState>>,
    /// Boxed: a table sized for thousands of connections would otherwise hold up to twice as
    /// many empty `Conn`-sized buckets.
    conns: IdMap<Box<Conn>>,
    hosts: HostMap,
    next_id: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The connection whose read is being handled a slice at a time while more of that read
    /// follows the current slice: a response completing now has bytes after it, so its
    /// connection is not reused (they are not the next request's).
    read_continues: Option<u64>,
    /// Where a request is encoded before it is written; reused, so that a request costs no
    /// allocation for its head (the socket queues only what the kernel does not take at once).
    wire: Vec<u8>,
    /// Requests whose outcome is decided but whose callback has not run yet (still cancellable).
    /// Usually empty or one: an entry lives from the end of a response to its callback.
    finishing: Vec<Finishing>,
    /// The one timer of every request's total timeout, and when it fires: at the earliest
    /// deadline it was armed for. A request only notes its deadline (see `arm_total_timer`):
    /// a timer made and removed per request cost two allocations and the timer queue's work.
    total_timer: Option<(TimerKey, Instant)>,
    /// The one timer that closes idle connections past their deadline (`Conn::idle_until`),
    /// and when it fires (see `HttpClient::watch_idle_until`).
    idle_timer: Option<(TimerKey, Instant)>,
    /// The emptied header map of the last request that finished, handed to the next request
    /// sent without headers of its own (the usual `get(url)`): the session's default headers
    /// are copied into its buffers instead of two new allocations per request.
    spare_headers: HeaderMap,
    /// The box that held the last finished response's head and body decoder, emptied, for the
    /// next response's (`RequestState::arrived`): one allocation less per response.
    spare_arrived: Option<Box<Arrived>>,
    /// The box of the last request that finished with a response, its large parts dropped,
    /// for the next request's state (`requests`): one allocation less per request.
    spare_state: Option<Box<RequestState>>,
    /// The URL the last request was sent to and its host's key: a request for the same
    /// (shared) URL finds its key with one lookup by the key itself rather than by the URL's
    /// parts (a digest over the name, and its comparison).
    last_host: Option<(Arc<Url>, Rc<HostKey>)>,
}

/// An HTTP/1.1 client on the current thread's loop (KDNetwork `HttpClient`).
///
/// Results arrive through the callback given to [`send`](Self::send) (or its `get`/`post`/…
/// shortcuts) on the loop's thread — never from inside `send`, except once the event loop the
/// client was created on has been dropped: nothing could call it later, so it gets
/// [`HttpError::LoopGone`] at once. The client keeps connections alive
/// per (scheme, host, port), follows redirects, stores and sends cookies, decodes gzip/deflate
/// (unless [`HttpSession::set_decompress`] turned it off),
/// and applies the [`HttpSession`]'s defaults.
///
/// Dropping the last `Rc<HttpClient>` closes its connections and drops the callbacks of its
/// unfinished requests without calling them (no user code runs inside a drop); keep the client
/// for as long as its answers are wanted.
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
    /// Emitted with each request (after session defaults, before any byte is sent). A slot may
    /// cancel it: [`cancel`](Self::cancel) with its id (or [`cancel_all`](Self::cancel_all))
    /// stops it before it is sent.
    pub about_to_send_request: Signal<(RequestId, HttpRequest)>,
    /// Emitted with every final response (after its callback ran).
    pub response_received: Signal<HttpResponse>,
    /// Emitted with every failed request (after its callback ran).
    pub error: Signal<(RequestId, HttpError)>,
    /// `(request, body bytes received, total if known)` as the final response's body arrives:
    /// bytes as transferred (without chunk framing, before gzip/deflate decoding), each new count
    /// once. The total is the announced `Content-Length` (0 for a response that has no body, such
    /// as a HEAD's), or `None` until a body of unknown length ends; the last report of a complete
    /// body has `received == total`. A followed redirect's body is not reported.
    pub download_progress: Signal<(RequestId, u64, Option<u64>)>,
    /// `(request, body bytes sent, total)` as the request body leaves: bytes the kernel took (the
    /// head not counted), never for a request without a body. A request whose whole body left
    /// and whose server began to answer has its last report, `(total, total)`, before its
    /// callback, whether the answer succeeds or fails (also when it came before the socket
    /// reported the last bytes); one answered before its body all left (a server's early 413,
    /// say) or cancelled stops short.
    ///
    /// Progress is per hop, as curl's progress callback counts it (its counters restart with
    /// each followed redirect): a followed `307` or `308`, which sends the body again, reports
    /// it again from the start, with the same total, after the previous hop's
    /// `(total, total)`; a `303` (and a `301` or `302` of a POST) sends no body and reports
    /// nothing more. A progress bar over a request that may be redirected shows the latest
    /// report (it goes back to the start when the body is sent again).
    pub upload_progress: Signal<(RequestId, u64, u64)>,
    core: Rc<LoopCore>,
    inner: RefCell<ClientInner>,
    /// Connections whose read is being delivered a slice at a time, with the bytes a nested loop
    /// (run by user code between the slices) read for them meanwhile: they are processed after
    /// the read's remaining slices, in stream order.
    continuing: RefCell<Vec<receive::ContinuingEntry>>,
    /// Requests whose callbacks are running, with their actions that arrived meanwhile.
    delivering: RefCell<actions::Delivering>,
    /// The action list of the last data arrival, kept (empty) for the next: no allocation per read.
    spare_actions: Cell<Vec<Action>>,
    /// The SSE event batch of the last delivery, kept (emptied, its events' buffers kept) for the
    /// next, so a busy stream allocates nothing per event.
    spare_batch: Cell<SseBatch>,
    /// How many times `cancel_all` was called: an SSE client delivering the final event of a
    /// stream whose outcome is already being handled (no request left to cancel) sees from it
    /// that a slot called `cancel_all`, and closes instead of reconnecting.
    cancel_all_calls: Cell<u64>,
    /// The URL text of the last `get`/`post`/… call and its parse: a client that sends to one URL
    /// over and over (polling, keep-alive loops) parses it once (a parse was ~6,000 instructions,
    /// a fifth of a keep-alive request). Parsing is a pure function of the text, so the copy is
    /// exactly what a new parse would give. With it, whether that URL was taken for a request
    /// as it was (an http(s) URL without credentials): a request is then made of it unchecked.
    last_url: RefCell<Option<LastUrl>>,
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
                hosts: HostMap::default(),
                next_id: 1,
                tls: None,
                read_continues: None,
                wire: Vec::new(),
                finishing: Vec::new(),
                total_timer: None,
                idle_timer: None,
                spare_headers: HeaderMap::new(),
                spare_arrived: None,
                spare_state: None,
                last_host: None,
            }),
            continuing: RefCell::default(),
            delivering: RefCell::default(),
            spare_actions: Cell::new(Vec::new()),
            spare_batch: Cell::default(),
            cancel_all_calls: Cell::new(0),
            last_url: RefCell::new(None),
            self_weak: weak.clone(),
        }))
    }

    /// A copy of the session settings.
    pub fn session(&self) -> HttpSession {
        self.inner.borrow().session.clone()
    }

    /// Replaces the session settings (for requests sent afterwards). Changed TLS settings
    /// (trusted CAs, client certificate, verification) apply to every connection opened
    /// afterwards, also one opened for a request sent before (still waiting for a connection,
    /// or following a redirect); https connections made with the old settings finish the
    /// request they serve and are not reused. A higher
    /// `max_connections_per_host` also starts, at once, the requests queued behind the old limit;
    /// a lower one applies to the connections already open: idle ones over it close at once,
    /// busy ones when their request ends (requests queued meanwhile keep their order). A
    /// shorter idle connection timeout applies to the connections already idle too: none is
    /// kept (or reused) past the new timeout counted from the change, and with 0 none is
    /// reused by a later request.
    pub fn set_session(&self, session: HttpSession) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            // New TLS settings need a new config; https connections made with the old one are
            // then not reused (see `Conn::tls`): trust or identity changes apply to the next
            // connection opened, whichever request it is for.
            let old = &inner.session;
            let lowered_idle = (session.idle_connection_timeout() < old.idle_connection_timeout())
                .then(|| session.idle_connection_timeout());
            let (new_max, old_max) = (
                session.max_connections_per_host().max(1),
                old.max_connections_per_host().max(1),
            );
            if old.extra_ca_certificates() != session.extra_ca_certificates()
                || old.trusts_default_roots() != session.trusts_default_roots()
                || old.client_certificate() != session.client_certificate()
                || old.verifies_certificates() != session.verifies_certificates()
            {
                inner.tls = None;
            }
            inner.session = session;
            if let Some(idle) = lowered_idle {
                self.shorten_idle_deadlines(&mut inner, idle);
            }
            if new_max > old_max {
                self.start_queued_within_limit(&mut inner, &mut actions);
            } else if new_max < old_max {
                self.close_idle_over_limit(&mut inner, &mut actions);
            }
        }
        // Failures found while scheduling are reported from the loop, as from `send`.
        self.post_actions(actions);
    }

    /// Changes the session settings in place.
    pub fn update_session(&self, f: impl FnOnce(&mut HttpSession)) {
        let mut session = self.session();
        f(&mut session);
        self.set_session(session);
    }

    /// Sends `request`; `callback` receives the final response or the error (on a later turn of
    /// the loop; [`HttpError::LoopGone`] from inside this call when that loop has been dropped).
    ///
    /// Requests to a host at its `max_connections_per_host` wait for a connection, and are
    /// served in the order they were sent. The request's total timeout counts from this call
    /// (time spent waiting for a connection and on redirect hops included), so it also ends a
    /// request that is still waiting; the read timeout runs from when the request is written.
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
    ///
    /// A callback may run a nested loop (e.g. [`send_and_wait`](Self::send_and_wait)): what
    /// arrives for this request meanwhile — more data, its end — is delivered after the
    /// callback returns, in order (`on_event` is never re-entered). So a callback must not wait
    /// in a nested loop for this request's own later events or `on_done`.
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
                on_event: Rc::new(StreamCallback {
                    cancelled: Cell::new(false),
                    f: RefCell::new(on_event),
                }),
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

    /// `POST url` with `body` of `content_type` (`""`: the request carries no `Content-Type`).
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

    /// `PUT url` with `body` of `content_type` (`""`: the request carries no `Content-Type`).
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

    /// `PATCH url` with `body` of `content_type` (`""`: the request carries no `Content-Type`).
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
    /// tests). Other work on the loop keeps running meanwhile. A quit or exit asked of the loop
    /// (from a slot, or another thread through a [`LoopHandle`](crate::LoopHandle)) ends the
    /// wait: the request is cancelled ([`HttpError::Cancelled`]) and the quit stays pending for
    /// [`EventLoop::run`](crate::EventLoop::run) (see [`foundation::exit_requested`](crate::foundation::exit_requested)).
    ///
    /// It may be called from a callback of this client. From a streaming request's `on_event`,
    /// a request to the same host at its `max_connections_per_host` waits for a connection,
    /// possibly that stream's own: it then returns only once that stream has been read to its
    /// end — and never when the piece `on_event` is handling came from a read of more than
    /// 16 KiB, which is handed out a piece at a time: the rest of that read, and all the stream
    /// sends after it, wait for `on_event` to return. Raise `max_connections_per_host`, or send
    /// such a request without waiting, instead.
    pub fn send_and_wait(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let result: Rc<RefCell<Option<Result<HttpResponse, HttpError>>>> = Rc::default();
        let slot = result.clone();
        let id = self.send(request, move |r| *slot.borrow_mut() = Some(r));
        let mut cancelled = false;
        loop {
            if let Some(r) = result.borrow_mut().take() {
                return r;
            }
            // The program is asked to end: the wait ends, as Qt's `exit()` ends nested loops
            // (the quit stays for `run()`). The cancelled request's callback comes next turn.
            if !cancelled && self.core.exit_requested().is_some() {
                cancelled = true;
                if !self.cancel(id) {
                    return Err(HttpError::Cancelled);
                }
            }
            if let Err(e) = self.core.turn(None) {
                log::error!("event loop failed while waiting for a response: {e}");
                return Err(HttpError::Transport(SocketError::InvalidState(
                    "the event loop's poller failed while waiting for the response",
                )));
            }
        }
    }

    /// Cancels one request whose callback has not run yet: the callback receives
    /// [`HttpError::Cancelled`] instead of its outcome, and a streaming request's `on_event` is
    /// not called again (not even for data read before the cancel). Returns false, changing
    /// nothing, if the callback already ran (or is running) or the request was already cancelled.
    ///
    /// A request counts as finished only once its callback runs, as a `QNetworkReply` counts as
    /// finished only once it emitted `finished`: a cancel from user code that runs before the
    /// callback — the request's own `on_event`, a `download_progress` slot — cancels it even when
    /// the whole response has already arrived (that connection stays reusable then: the response
    /// was read to its end). A cancelled request's callback runs on a later turn (or, when its
    /// response was complete, where its outcome would have been delivered), never inside `cancel`
    /// while the client's event loop exists (once it has been dropped, at once: nothing else
    /// could run it).
    pub fn cancel(&self, id: RequestId) -> bool {
        let mut actions = Vec::new();
        // An event stream's owner, told once the borrow is released.
        let mut sse_owner = None;
        let found = {
            let mut inner = self.inner.borrow_mut();
            let state = inner.requests.get(&id.raw());
            match state.map(|s| &s.delivery) {
                Some(Delivery::Streaming { on_event, .. }) => on_event.cancelled.set(true),
                Some(Delivery::Sse { target, .. }) => sse_owner = Some(target.clone()),
                _ => {}
            }
            if state.is_some() {
                // Its response may be on the way: the connection cannot serve another request
                // (closing it also lets a request queued for its host start).
                self.fail(
                    &mut inner,
                    id.raw(),
                    HttpError::Cancelled,
                    true,
                    &mut actions,
                );
                true
            } else if let Some(entry) = inner
                .finishing
                .iter_mut()
                .find(|f| f.id == id.raw() && f.fate == Fate::Deliver)
            {
                // Decided, with the callback still to come: it gets `Cancelled` instead.
                entry.fate = Fate::Cancelled;
                if let Some(on_event) = &entry.on_event {
                    on_event.cancelled.set(true);
                }
                sse_owner = entry.sse_owner.clone();
                true
            } else {
                false
            }
        };
        if let Some(owner) = sse_owner.and_then(|owner| owner.upgrade()) {
            owner.on_cancel(id);
        }
        self.post_actions(actions);
        found
    }

    /// Cancels every request of this client (and only of this client) whose callback has not
    /// run yet, as [`cancel`](Self::cancel) does, in the order they were sent; the streams of
    /// the [`SseClient`](crate::network::sse::SseClient)s sharing it included: those deliver
    /// no further event (not even one read before the cancel), close (state `Closed`,
    /// `disconnected`) and do not reconnect. An `SseClient` waiting to reconnect has no request
    /// then, and reconnects when its wait ends: `disconnect()` is what stops it.
    pub fn cancel_all(&self) {
        self.cancel_all_calls
            .set(self.cancel_all_calls.get().wrapping_add(1));
        let mut ids: Vec<u64> = {
            let inner = self.inner.borrow();
            let finishing = inner.finishing.iter().filter(|f| f.fate == Fate::Deliver);
            (inner.requests.keys().copied())
                .chain(finishing.map(|f| f.id))
                .collect()
        };
        ids.sort_unstable();
        for id in ids {
            self.cancel(RequestId::from_raw(id));
        }
    }

    /// How many times [`cancel_all`](Self::cancel_all) was called.
    pub(crate) fn cancel_all_calls(&self) -> u64 {
        self.cancel_all_calls.get()
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

    /// Hosts the pool keeps books for (those with connections or queued requests).
    #[doc(hidden)]
    pub fn tracked_hosts(&self) -> usize {
        self.inner.borrow().hosts.len()
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
        let inner = &mut *inner;
        let mut written = false;
        if let Some(state) = inner.requests.get_mut(&id.raw()) {
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
            written = state
                .conn
                .and_then(|c| inner.conns.get(&c))
                .is_some_and(|c| c.socket.state() == SocketState::Connected);
        }
        // The head deadline runs from the request write: a request queued or on a connection
        // still on its way up gets it once it can go out (`assign`, `on_conn_ready`).
        if written {
            self.arm_idle_timer(inner, id.raw());
        }
        id
    }

    /// Ends one request silently (no callback): for owners that stop a stream themselves.
    pub(crate) fn abandon(&self, id: RequestId) {
        // The caller's handle is not a delivery's: with this one besides it, the actions below
        // (another request started on the freed connection) are not taken for a dropped
        // client's (see `dropped_by_user`).
        let _caller = self.self_weak.upgrade();
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(mut state) = self.take_request(&mut inner, id.raw()) {
                self.release_conn(&mut inner, &mut state, None, &mut actions);
            } else if let Some(entry) = inner.finishing.iter_mut().find(|f| f.id == id.raw()) {
                // Its outcome is on the way: it is dropped instead.
                entry.fate = Fate::Dropped;
            }
        }
        self.run_actions(actions);
    }
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        for (key, _) in [inner.total_timer.take(), inner.idle_timer.take()]
            .into_iter()
            .flatten()
        {
            self.core.timer_remove(key);
        }
        for (_, state) in inner.requests.drain() {
            if let Some(key) = state.idle.as_ref().and_then(|w| w.timer) {
                self.core.timer_remove(key);
            }
        }
        for (_, conn) in inner.conns.drain() {
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
