//! [`SseClient`]: a reconnecting event-stream client (KDNetwork `SseClient`, WHATWG `EventSource`).
//!
//! ```text
//!            connect()                 200 + text/event-stream
//!  Closed ─────────────▶ Connecting ───────────────────────────▶ Open ──▶ message_received …
//!    ▲                    ▲   │ other status / type,                │
//!    │  fail (error;      │   │ 204, redirect trouble               │ end of stream, network
//!    │  disconnected      │   ▼                                     │ error, idle timeout
//!    │  if it was Open)   │                                         │
//!    └────────────────────┼─ fail ◀───────────────────────────────  │
//!                         └──── wait reconnection time (+ backoff) ◀┘   (error, disconnected)
//!  disconnect(): from any state to Closed; cancels the stream or the pending reconnect.
//!  `disconnected` comes once for each `connected`, when that open stream ends, and never else.
//! ```
//!
//! The stream's bytes never pass through a buffer of the whole body: the HTTP client's
//! `RequestState` for the stream runs in `sse_mode` and owns this client's [`SseParser`], so bytes
//! go from the socket straight into the parser. When a connection ends the parser comes back with
//! its last event ID (each `retry:` already reached the client with the events around it), and is reset so
//! that a half-received block never leaks into the next connection.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use smol_str::SmolStr;

use super::error::{WithoutBody, is_permanent};
use super::{DEFAULT_MAX_EVENT_SIZE, SseBatch, SseError, SseEvent, SseParser};
use crate::bindings::{ConnectionHandle, Signal};
use crate::foundation::{LoopCore, LoopError, TimerKey};
#[cfg(doc)]
use crate::network::http::HttpSession;
use crate::network::http::{
    HttpClient, HttpError, HttpRequest, HttpResponse, LoggedUrl, RequestId, SseTarget,
    is_event_stream_response,
};

/// The reconnection time before a server sets one with `retry:` (as Chrome and undici).
pub const DEFAULT_RECONNECTION_TIME: Duration = Duration::from_secs(3);
/// The least a reconnection time counts for once an attempt failed (doubled per failure, like
/// any reconnection time), so that `retry: 0` does not retry a failing server in a tight loop.
const MIN_FAILURE_BACKOFF: Duration = Duration::from_millis(100);
/// How long a stream that delivers no event must stay open for its attempt to count as a
/// success (LaunchDarkly's "backoff reset threshold"): one that opens and ends sooner is a
/// failed attempt, so that a server cutting every stream at once is not asked again in a loop.
const BACKOFF_RESET_THRESHOLD: Duration = Duration::from_secs(5);
/// The longest wait between reconnection attempts after repeated failures, jitter included
/// (a server's longer `retry:` is still waited in full).
pub const DEFAULT_MAX_RECONNECTION_DELAY: Duration = Duration::from_secs(60);

/// Who runs a step that ends a stream: a delivery (the HTTP client's, or the reconnect timer's)
/// or a user's call (`connect`, `set_auto_reconnect`). See
/// [`SseClient::dropped_in_delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Delivery,
    User,
}

/// The connection state (WHATWG `EventSource.readyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadyState {
    /// Connecting, or waiting to reconnect.
    Connecting,
    /// Connected; events are being dispatched.
    Open,
    /// Not connected and not reconnecting.
    Closed,
}

/// A Server-Sent Events client that follows the WHATWG rules and reconnects on its own (unless
/// [`set_auto_reconnect`](Self::set_auto_reconnect) turns that off, as one-shot streams such as
/// LLM answers want).
///
/// Any method, headers and body may be used (OpenAI needs `POST` with JSON and `Authorization`);
/// they are sent again on every reconnect, with `Last-Event-ID` when an ID is known.
/// `Accept: text/event-stream` and `Cache-Control: no-cache` are added unless set. Redirects are
/// followed (`Last-Event-ID` goes along), but each reconnect starts again from the request's own
/// URL, as the WHATWG rules reuse the request (npm `eventsource` does the same).
///
/// Dropping the last handle to the client stops its stream and any pending reconnect; dropped
/// from one of its slots, it emits nothing after that slot (no later event, no `connected`,
/// `error` or `disconnected` of that stream). Once the event loop it was created on is dropped,
/// its [`ready_state`](Self::ready_state) is `Closed`.
///
/// An open stream holds one of its [`HttpClient`]'s connections for as long as it lasts, and
/// the per-host cap ([`HttpSession::set_max_connections_per_host`], 6 by default) counts it:
/// a seventh stream to one host through the same `HttpClient` waits in `Connecting` until one
/// of the others ends. Raise the cap, or give such streams their own `HttpClient`.
///
/// Only a `200` response of type `text/event-stream` opens the stream; any other status (204
/// included, the usual "stop") or type fails for good, except 429 and 503 when
/// [`set_retry_on_throttle`](Self::set_retry_on_throttle) is on (and the answer does not say
/// that waiting will not help, as OpenAI's `insufficient_quota` does). A clean end of stream or a network
/// error reconnects after the reconnection time (3 s unless the server's `retry:` says otherwise),
/// doubled per consecutive failed attempt (counting at least 100 ms, so `retry: 0` does not
/// hammer a server that is down), plus up to 25 % jitter, and never longer than the maximum
/// delay (or the reconnection time, when that is longer). An attempt fails
/// unless its stream delivers an event or stays open for 5 s: a server that opens streams and
/// cuts them at once is backed off from too. A request that can never be sent (an invalid
/// header, URL or host name, an unusable TLS configuration) fails for good with
/// [`SseError::Request`].
///
/// ```no_run
/// use std::io::Write;
///
/// use kdnet::EventLoop;
/// use kdnet::network::http::HttpRequest;
/// use kdnet::network::sse::{ReadyState, SseClient};
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let sse = SseClient::new().unwrap();
/// sse.set_auto_reconnect(false); // a reconnect would ask for a second answer
/// // An event's data is JSON, not text:
/// // {"type":"response.output_text.delta","item_id":"msg_1",…,"delta":"Hel",…}
/// sse.add_event_listener("response.output_text.delta", |event| {
///     if let Some(text) = json_string_member(event.data(), "delta") {
///         print!("{text}");
///         let _ = std::io::stdout().flush(); // now, not at the next line break
///     }
/// })
/// .release();
/// // A refused request's message quotes the start of its body: the API's reason.
/// sse.error.connect(|error| eprintln!("{error}")).release();
/// // With auto reconnect off, `state_changed(Closed)` ends every outcome: the server closing the
/// // stream after `response.completed`, a refused request (401, 429, ...) or a broken
/// // connection. (`disconnected` pairs with `connected`: a refused request never opened.)
/// let handle = event_loop.handle();
/// sse.state_changed
///     .connect(move |state| {
///         if *state == ReadyState::Closed {
///             handle.quit();
///         }
///     })
///     .release();
/// let body = r#"{"model":"gpt-4o-mini","input":"Say hello","stream":true}"#;
/// let request = HttpRequest::post("http://127.0.0.1:8080/v1/responses", body)
///     .unwrap()
///     .with_header("Content-Type", "application/json");
/// sse.connect(request);
/// event_loop.run();
///
/// /// The string member `name` of a JSON object, unescaped: enough for OpenAI's events (no
/// /// string before their "delta" holds that key). Real code would use a JSON crate
/// /// (`serde_json::from_str::<serde_json::Value>(json)?[name]`); `examples/openai_chat.rs`
/// /// has a complete reader.
/// fn json_string_member(json: &str, name: &str) -> Option<String> {
///     let key = format!("\"{name}\":");
///     let value = json[json.find(&key)? + key.len()..].trim_start();
///     let mut chars = value.strip_prefix('"')?.chars();
///     let mut text = String::new();
///     loop {
///         match chars.next()? {
///             '"' => return Some(text),
///             '\\' => match chars.next()? {
///                 'n' => text.push('\n'),
///                 'r' => text.push('\r'),
///                 't' => text.push('\t'),
///                 'b' => text.push('\u{8}'),
///                 'f' => text.push('\u{c}'),
///                 'u' => {
///                     let hex: String = chars.by_ref().take(4).collect();
///                     let unit = u32::from_str_radix(&hex, 16).ok()?;
///                     // (Each half of a UTF-16 surrogate pair becomes U+FFFD.)
///                     text.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
///                 }
///                 escaped => text.push(escaped), // \" \\ \/
///             },
///             c => text.push(c),
///         }
///     }
/// }
/// ```
pub struct SseClient {
    /// The response that opened a stream (status 200, its headers, no body), just before
    /// `connected`: where to read headers such as an API's `x-request-id` or rate limits. Once
    /// per connection, reconnects included.
    pub opened: Signal<HttpResponse>,
    /// The stream opened (WHATWG `open`).
    pub connected: Signal<()>,
    /// An event arrived. A slot may run a nested loop: the stream's later events (and its end)
    /// wait until the slot returns, then arrive in order. Each event is an emission of its own,
    /// also among the several one read delivers: a slot connected while an event is delivered
    /// gets every later one (not that one), and one disconnected gets none after (the signal's
    /// rules), none lost or repeated.
    pub message_received: Signal<SseEvent>,
    /// The stream whose `connected` came last ended: once for each `connected`, as a
    /// [`TcpSocket`](crate::network::TcpSocket)'s, whether the client then reconnects (state
    /// `Connecting`) or stops (`Closed`), and never for a stream that did not open (a refused
    /// request, a `disconnect()` while connecting: `state_changed(Closed)` and `error` tell
    /// those). A slot of a stream's end (`state_changed`, `error`) that connects again gets the
    /// ended stream's `disconnected` inside that `connect`, before the new stream's first
    /// signal; nothing of the old stream follows the new one's.
    pub disconnected: Signal<()>,
    /// Something went wrong; see [`SseError::is_fatal`] for whether a reconnect follows (with
    /// auto reconnect off none does: the state is already `Closed` when this is emitted). Not
    /// emitted for a failure whose `state_changed` slot already connected again, whatever that
    /// new stream did meanwhile (a slot of it may have disconnected it in turn): no signal of
    /// the old stream follows the new one's.
    pub error: Signal<SseError>,
    /// The ready state changed. A slot of it that calls [`disconnect`](Self::disconnect) is
    /// still running when the `Closed` that follows is emitted, so that nested emission skips
    /// it (the signal's re-entrancy rule); the other slots and `disconnected` see it.
    pub state_changed: Signal<ReadyState>,
    http: Rc<HttpClient>,
    core: Rc<LoopCore>,
    inner: RefCell<Inner>,
    /// The last request user code cancelled through the HTTP client (`cancel`, `cancel_all`):
    /// none of its events reaches a slot after that, although its end comes later. Outside
    /// `inner` so that the HTTP client can set it whatever is borrowed.
    cancelled: Cell<Option<RequestId>>,
    self_weak: Weak<SseClient>,
}

struct Inner {
    state: ReadyState,
    request: Option<HttpRequest>,
    current: Option<RequestId>,
    /// Ours while no request is in flight; lent to the HTTP request while one is. Boxed: it is
    /// moved in and out of the request on every connection.
    parser: Option<Box<SseParser>>,
    /// Parser settings, kept here so they survive a parser lost with an abandoned request and
    /// apply to one lent out when they were changed.
    max_event_size: usize,
    flush_unterminated: bool,
    /// The last event ID seen (`""` for none); a short ID is inline, so following it per event
    /// costs no allocation.
    last_event_id: SmolStr,
    /// An ID set with `set_last_event_id` while the parser was lent to a request, and the
    /// stream's count of committed `id` fields at that moment (`stream_id_fields`): it replaces
    /// the parser's ID when the parser comes back, unless the stream has sent an `id` since —
    /// counted, not compared: an `id` repeating the stream's ID is one of its own too.
    /// Boxed: rarely set, and every stream of a client carrying thousands pays for the field.
    user_last_event_id: Option<Box<(SmolStr, u32)>>,
    /// The lent parser's count of committed `id` fields (`SseParser::committed_id_fields`) as of
    /// what was delivered last: where in the stream a `set_last_event_id` is made.
    stream_id_fields: u32,
    reconnection_time: Duration,
    max_delay: Duration,
    failures: u32,
    /// When the current stream opened, and whether it delivered an event: an open stream's end
    /// resets `failures` only if it did, or stayed open [`BACKOFF_RESET_THRESHOLD`].
    opened_at: Option<std::time::Instant>,
    delivered: bool,
    reconnect_timer: Option<TimerKey>,
    read_timeout: Option<Duration>,
    retry_throttled: bool,
    auto_reconnect: bool,
    opened: bool,
    /// `connected` was emitted and its `disconnected` is owed: each `connected` gets one
    /// `disconnected` and nothing else does. The first end to come emits it and clears this; a
    /// slot that connects again from a stream's end reports that end so, before the new
    /// stream's first signal.
    announced: bool,
    /// Counts `stop`s: a `connect` or `open` that ran user code (a `state_changed` slot, an
    /// `about_to_send_request` slot of the HTTP client) sees from it whether that code
    /// connected or disconnected meanwhile, and then leaves the stream to it.
    epoch: u64,
    /// Counts `connect`s that started a stream: an end being reported (`stop`,
    /// `close_for_good`, a flushed final event's slots in `on_end`) sees from it whether a slot
    /// connected again, even when a slot of that new stream disconnected it in turn (the client
    /// is `Closed` again then, but the new stream's `disconnected` came already: nothing of the
    /// old one may follow it, nor its parser replace the new one's ID). The `epoch` cannot
    /// tell: a `disconnect` from such a slot moves it too, and the end is reported then. (Fits
    /// in `Inner`'s padding: the struct does not grow.)
    connects: u32,
    jitter_seed: Cell<u64>,
}

impl SseClient {
    /// A client with its own [`HttpClient`] on the current thread's loop.
    pub fn new() -> Result<Rc<SseClient>, LoopError> {
        Ok(Self::with_http_client(HttpClient::new()?))
    }

    /// A client whose requests go through `http` (sharing its session, cookies and pool).
    /// [`HttpClient::create_sse_client`] is the KDNetwork spelling.
    pub fn with_http_client(http: Rc<HttpClient>) -> Rc<SseClient> {
        let core = Rc::clone(http.core());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = now ^ (Rc::as_ptr(&http) as u64);
        Rc::new_cyclic(|weak| SseClient {
            opened: Signal::new(),
            connected: Signal::new(),
            message_received: Signal::new(),
            disconnected: Signal::new(),
            error: Signal::new(),
            state_changed: Signal::new(),
            http,
            core,
            cancelled: Cell::new(None),
            inner: RefCell::new(Inner {
                state: ReadyState::Closed,
                request: None,
                current: None,
                parser: Some(Box::new(SseParser::new())),
                max_event_size: DEFAULT_MAX_EVENT_SIZE,
                flush_unterminated: false,
                last_event_id: SmolStr::default(),
                user_last_event_id: None,
                stream_id_fields: 0,
                reconnection_time: DEFAULT_RECONNECTION_TIME,
                max_delay: DEFAULT_MAX_RECONNECTION_DELAY,
                failures: 0,
                opened_at: None,
                delivered: false,
                reconnect_timer: None,
                read_timeout: None,
                retry_throttled: false,
                auto_reconnect: true,
                opened: false,
                announced: false,
                epoch: 0,
                connects: 0,
                jitter_seed: Cell::new(seed | 1),
            }),
            self_weak: weak.clone(),
        })
    }

    /// Opens the stream described by `request` (any method, headers and body), replacing any
    /// stream this client had (an open one ends with `disconnected`, as with
    /// [`disconnect`](Self::disconnect)). A `Last-Event-ID` header in `request` sets the ID to
    /// resume from, as [`set_last_event_id`](Self::set_last_event_id) does.
    ///
    /// When the event loop the client was created on has been dropped, it fails at once with
    /// [`SseError::LoopGone`] (state `Closed`, then `error`).
    pub fn connect(&self, mut request: HttpRequest) {
        let stopped = self.stop(true);
        // A `state_changed` slot of the old stream's close that connected or disconnected has
        // the last word.
        if self.inner.borrow().epoch != stopped {
            return;
        }
        // The header is written from the client's ID on every connection: one the caller put in
        // the request is the ID to resume from.
        if let Some(id) = request.header("Last-Event-ID") {
            let id = id.to_owned();
            self.set_last_event_id(&id);
        }
        if !request.has_header("Accept") {
            request.set_header("Accept", "text/event-stream");
        }
        if !request.has_header("Cache-Control") {
            request.set_header("Cache-Control", "no-cache");
        }
        // The stream has no total timeout; its liveness is the read timeout's job.
        request.set_timeout(None);
        let epoch = {
            let mut inner = self.inner.borrow_mut();
            inner.request = Some(request);
            inner.failures = 0;
            inner.connects = inner.connects.wrapping_add(1);
            inner.epoch
        };
        self.set_state(ReadyState::Connecting);
        // A `state_changed` slot that connected or disconnected has settled the stream.
        if self.inner.borrow().epoch == epoch {
            self.open();
        }
    }

    /// Stops the stream and any pending reconnect; no other request of the shared
    /// [`HttpClient`] is touched. Emits `state_changed(Closed)` if the client was not closed
    /// already, then `disconnected` if the stream was open (its `connected` came; none while
    /// connecting or waiting to reconnect, whose open stream's `disconnected` came when it
    /// ended). Called from a slot of an open stream's end that comes before that end's
    /// `disconnected` (`state_changed(Connecting)`, or `error` before a reconnect), it emits
    /// that `disconnected` itself, after its `Closed`, and the end emits nothing more. A slot of
    /// that `Closed` that connects again reports the end itself, before the new stream's first
    /// signal.
    pub fn disconnect(&self) {
        self.stop(false);
    }

    /// Whether the stream is open.
    pub fn is_connected(&self) -> bool {
        self.ready_state() == ReadyState::Open
    }

    /// The ready state.
    ///
    /// `Closed` once the event loop the client was created on has been dropped, whatever was
    /// under way: nothing reads an open stream's socket or fires a pending reconnect any more.
    /// No signal says so then (the loop's drop runs no slot); [`disconnect`](Self::disconnect)
    /// or dropping the client ends the stream's request, and `disconnect` emits
    /// `state_changed(Closed)` for a stream that was open or connecting, and `disconnected` for
    /// one that was open.
    pub fn ready_state(&self) -> ReadyState {
        if self.core.is_closed() {
            return ReadyState::Closed;
        }
        self.state()
    }

    /// The state as the client's own transitions left it (what its signals said last), the
    /// loop being gone or not.
    fn state(&self) -> ReadyState {
        self.inner.borrow().state
    }

    /// The last event ID received (sent as `Last-Event-ID` when reconnecting, unless it holds a
    /// control character, which no header value can carry).
    ///
    /// It follows the stream as its events are delivered: a slot sees its event's ID. An `id` in
    /// a block without data (which dispatches no event) counts at that block's blank line, as the
    /// WHATWG rules say, once the events before it were delivered (an empty `id` resets it to
    /// `""`; one holding NUL is ignored; a block cut off by the end of the stream counts for
    /// nothing). When a slot disconnects (or cancels the stream's request through the
    /// [`HttpClient`]), the rest of what was received, IDs included, does not count.
    pub fn last_event_id(&self) -> String {
        self.inner.borrow().last_event_id.to_string()
    }

    /// Sets the event ID to resume from: sent as `Last-Event-ID` with the next connection when
    /// non-empty, unless the stream in flight sends an ID of its own after this call, or the ID
    /// holds a control character.
    ///
    /// While a stream is in flight, "an ID of its own" is any `id` field the stream commits
    /// after the call (at its block's blank line), whatever its value: one repeating the
    /// stream's ID counts too, as every `id` field sets the WHATWG last event ID buffer. Called
    /// from a `message_received` slot, the call sits right after that slot's event: an `id` in
    /// a later event of the same read wins over it, an event without one does not.
    pub fn set_last_event_id(&self, id: &str) {
        let mut inner = self.inner.borrow_mut();
        let id = SmolStr::new(id);
        inner.last_event_id = id.clone();
        match inner.parser.as_mut() {
            Some(parser) => parser.set_last_event_id(&id),
            // Lent to the request in flight: applied when it comes back, unless the stream sends
            // an `id` after this point. (An earlier call's ID still pending is replaced: the
            // stream sent none since, or following it would have dropped that call's.)
            None => {
                let at = inner.stream_id_fields;
                inner.user_last_event_id = Some(Box::new((id, at)));
            }
        }
    }

    /// The current reconnection time: the last value set by a `retry:` field or by
    /// [`set_reconnection_time`](Self::set_reconnection_time), whichever came last (default 3 s).
    /// A `retry:` counts in its place in the stream: a `message_received` slot sees the values
    /// sent before its event, not those after it.
    pub fn reconnection_time(&self) -> Duration {
        self.inner.borrow().reconnection_time
    }

    /// Sets the reconnection time used until the server sends `retry:` (default 3 s); called
    /// from a `message_received` slot, until a `retry:` after that slot's event.
    pub fn set_reconnection_time(&self, time: Duration) {
        self.inner.borrow_mut().reconnection_time = time;
    }

    /// Caps the wait before a reconnect, the backoff's up to 25 % jitter included, and the wait
    /// a throttled answer asks for (see [`set_retry_on_throttle`](Self::set_retry_on_throttle))
    /// (default 60 s). A reconnection time longer than the cap (a server's `retry:`) is not
    /// shortened: it is then both the least and the most a reconnect waits.
    pub fn set_max_reconnection_delay(&self, max: Duration) {
        self.inner.borrow_mut().max_delay = max;
    }

    /// Treats a stream that sends nothing (not even a comment) for `timeout` as broken, and
    /// reconnects (default: no read timeout). There is never a total timeout on a stream.
    /// Applies from the next connection on: call it before [`connect`](Self::connect) for the
    /// first one.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().read_timeout = timeout;
    }

    /// Retry (instead of failing) on 429 and 503 responses, waiting as long as `retry-after-ms`
    /// (which OpenAI and Azure send) or else `Retry-After` says (at most the [maximum reconnection delay](Self::set_max_reconnection_delay), 60 s
    /// unless set, as OpenAI's SDK ignores a longer wait), or, when it says nothing or `0`, the
    /// backoff of any failed attempt (off by default;
    /// a retry is a reconnect, so with auto reconnect off such a response closes the client with
    /// [`SseError::Throttled`]).
    ///
    /// An answer that says no wait will help still fails for good, with
    /// [`SseError::BadStatus`]: a body naming `insufficient_quota` (OpenAI refuses an account
    /// out of credit with 429, as it does a rate limit; retrying would ask again for ever) or an
    /// `x-should-retry: false` header (which OpenAI's and Anthropic's SDKs obey). Either way the
    /// error's [`body`](SseError::body) says why.
    pub fn set_retry_on_throttle(&self, enabled: bool) {
        self.inner.borrow_mut().retry_throttled = enabled;
    }

    /// Whether the client reconnects on its own after the stream ends or breaks (default: on,
    /// as WHATWG `EventSource` does).
    ///
    /// Off, a clean end of the stream, a network error, a read timeout or (with
    /// [`set_retry_on_throttle`](Self::set_retry_on_throttle)) a 429/503 closes the client
    /// instead: state `Closed`, then `error` if there was one, then `disconnected`. A
    /// one-shot stream such as an LLM response usually wants this off: its request is sent
    /// again on every reconnect. [`connect`](Self::connect) starts a new stream either way.
    /// Turned off while the client waits to reconnect (in an `error` or `disconnected` slot, say),
    /// the reconnect is cancelled and the client closes (state `Closed`; the ended stream's
    /// `disconnected` came already).
    ///
    /// ```
    /// use kdnet::EventLoop;
    /// use kdnet::network::sse::SseClient;
    ///
    /// let _event_loop = EventLoop::new().unwrap();
    /// let sse = SseClient::new().unwrap();
    /// assert!(sse.auto_reconnect());
    /// sse.set_auto_reconnect(false);
    /// assert!(!sse.auto_reconnect());
    /// ```
    pub fn set_auto_reconnect(&self, enabled: bool) {
        let waiting = {
            let mut inner = self.inner.borrow_mut();
            inner.auto_reconnect = enabled;
            if enabled {
                None
            } else {
                inner.reconnect_timer.take()
            }
        };
        // Off while waiting to reconnect: the reconnect is cancelled and the client closes.
        if let Some(key) = waiting {
            self.core.timer_remove(key);
            self.close_for_good(None, Caller::User);
        }
    }

    /// Whether the client reconnects on its own (see [`set_auto_reconnect`](Self::set_auto_reconnect)).
    pub fn auto_reconnect(&self) -> bool {
        self.inner.borrow().auto_reconnect
    }

    /// Sets the parser's limit on one event's size (default 16 MiB); bigger events fail the stream.
    /// A connection already under way keeps its limit; the next one gets the new limit.
    pub fn set_max_event_size(&self, bytes: usize) {
        let mut inner = self.inner.borrow_mut();
        inner.max_event_size = bytes;
        if inner.parser.is_some() {
            inner.parser = Some(inner.fresh_parser());
        }
    }

    /// Delivers a final event whose terminating blank line never arrived before the stream ended
    /// (some gateways drop it). Off by default, as the WHATWG rules discard such an event.
    /// Changed while a stream is open, it applies to that stream's end too.
    pub fn set_flush_unterminated_event(&self, enabled: bool) {
        let mut inner = self.inner.borrow_mut();
        inner.flush_unterminated = enabled;
        if let Some(parser) = inner.parser.as_mut() {
            parser.set_flush_unterminated_at_eof(enabled);
        }
    }

    /// Calls `slot` for events of one type only (like `addEventListener(type, …)`).
    pub fn add_event_listener(
        &self,
        event_type: &str,
        mut slot: impl FnMut(&SseEvent) + 'static,
    ) -> ConnectionHandle {
        let wanted = event_type.to_string();
        self.message_received.connect(move |event| {
            if event.event_type() == wanted {
                slot(event);
            }
        })
    }

    /// The HTTP client the stream's requests go through.
    pub fn http_client(&self) -> &Rc<HttpClient> {
        &self.http
    }

    // ---- lifecycle ---------------------------------------------------------------------------

    fn set_state(&self, state: ReadyState) {
        let changed = {
            let mut inner = self.inner.borrow_mut();
            std::mem::replace(&mut inner.state, state) != state
        };
        if changed {
            self.state_changed.emit(&state);
        }
    }

    fn open(&self) {
        let (request, parser, read_timeout, epoch) = {
            let mut inner = self.inner.borrow_mut();
            if inner.state == ReadyState::Closed || inner.current.is_some() {
                return;
            }
            if self.core.is_closed() {
                // No request could ever be answered: nothing would wake it. Said at once,
                // instead of `Connecting` for ever.
                drop(inner);
                return self.fail(SseError::LoopGone, Caller::User);
            }
            let Some(mut request) = inner.request.clone() else {
                return;
            };
            if inner.last_event_id.is_empty() {
                request.remove_header("Last-Event-ID");
            } else if inner
                .last_event_id
                .bytes()
                .any(|b| b.is_ascii_control() && b != b'\t')
            {
                // A valid event ID, but no valid header value (control characters): sending it
                // would fail every reconnect. The server is asked without it.
                // The ID is not shown: it is part of the stream's body, which logs never show.
                log::warn!(
                    "event stream reconnecting without Last-Event-ID: the ID ({} bytes) holds a control character",
                    inner.last_event_id.len()
                );
                request.remove_header("Last-Event-ID");
            } else {
                request.set_header("Last-Event-ID", inner.last_event_id.as_str());
            }
            let parser = match inner.parser.take() {
                Some(parser) => parser,
                None => inner.fresh_parser(),
            };
            inner.stream_id_fields = parser.committed_id_fields();
            (request, parser, inner.read_timeout, inner.epoch)
        };
        log::debug!("opening event stream {}", LoggedUrl(request.url()));
        let target: Weak<dyn SseTarget> = self.self_weak.clone();
        // Runs the HTTP client's `about_to_send_request` slots, which may use this client.
        let id = self.http.send_sse(request, parser, read_timeout, target);
        let superseded = {
            let mut inner = self.inner.borrow_mut();
            let superseded = inner.epoch != epoch || inner.current.is_some();
            if !superseded {
                inner.current = Some(id);
            }
            superseded
        };
        if superseded {
            // A slot disconnected, or connected again (its stream is `current`): this request
            // is not the client's.
            self.http.abandon(id);
        }
    }

    /// Stops the stream, with `disconnected` if its `connected` came; returns the stop count it
    /// set (before any slot ran). `replacing`: a new stream starts next (`connect`).
    fn stop(&self, replacing: bool) -> u64 {
        let (current, timer, was, epoch, connects) = {
            let mut inner = self.inner.borrow_mut();
            inner.opened = false;
            inner.epoch += 1;
            (
                inner.current.take(),
                inner.reconnect_timer.take(),
                inner.state,
                inner.epoch,
                inner.connects,
            )
        };
        if let Some(key) = timer {
            self.core.timer_remove(key);
        }
        if let Some(id) = current {
            self.http.abandon(id);
        }
        {
            let mut inner = self.inner.borrow_mut();
            if inner.parser.is_none() {
                // The abandoned request took the parser with it; keep what it knew.
                inner.parser = Some(inner.fresh_parser());
            }
            // An ID set while that request was in flight is `last_event_id` now (and so the new
            // parser's): no stream is left for it to be weighed against.
            inner.user_last_event_id = None;
        }
        if was != ReadyState::Closed {
            self.set_state(ReadyState::Closed);
        }
        // An announced stream's end is always reported (`connect` replacing it, too, as
        // KDNetwork's `connect` disconnects first), once: a slot of the `Closed` that connected
        // again has reported it already, before the new stream's first signal (and that new
        // stream is not this one's to report), as one that disconnected has. A `connect` from a
        // slot of an end under way (the client `Closed` already) reports that end so; a
        // `disconnect` from one leaves it to that end, after its `error`.
        if self.state() == ReadyState::Closed
            && self.inner.borrow().connects == connects
            && (was != ReadyState::Closed || replacing)
            && self.take_announced()
        {
            self.disconnected.emit(&());
        }
        epoch
    }

    /// Whether a `disconnected` is owed (see `Inner::announced`), which the caller emits.
    fn take_announced(&self) -> bool {
        std::mem::take(&mut self.inner.borrow_mut().announced)
    }

    /// Whether a slot dropped the client's last handle: only the delivery running this (the
    /// HTTP client's, or the reconnect timer's, each holding a handle of its own for the call)
    /// keeps it alive. Nothing is emitted after that, as a socket dropped from its slot emits
    /// nothing more. Meaningless in a user's call, whose only handle may be the caller's.
    fn dropped_in_delivery(&self) -> bool {
        self.self_weak.strong_count() <= 1
    }

    /// The WHATWG "fail the connection": closed for good.
    fn fail(&self, error: SseError, from: Caller) {
        // Not the body: logs never show one (the `error` signal carries it).
        log::debug!("event stream failed: {}", WithoutBody(&error));
        self.close_for_good(Some(error), from);
    }

    /// State `Closed` first, so that an `error` slot sees that no reconnect follows; then the
    /// error, if any, and `disconnected` if the stream was announced, unless a slot dropped the
    /// client meanwhile.
    fn close_for_good(&self, error: Option<SseError>, from: Caller) {
        let dropped = || from == Caller::Delivery && self.dropped_in_delivery();
        if dropped() {
            // (Its `Drop` ends what is left.)
            return;
        }
        let connects = {
            let mut inner = self.inner.borrow_mut();
            inner.opened = false;
            inner.connects
        };
        self.set_state(ReadyState::Closed);
        // A `state_changed` or `error` slot that connected again has started a new stream: this
        // client did not stop after all, and nothing of the old stream follows the new one's
        // start (as in `reestablish`), also when a slot of the new stream disconnected it (its
        // `Closed` and `disconnected` came already).
        let carried_on = || {
            self.state() != ReadyState::Closed
                || self.inner.borrow().connects != connects
                || dropped()
        };
        if let Some(error) = &error {
            if carried_on() {
                return;
            }
            self.error.emit(error);
        }
        if carried_on() {
            return;
        }
        if self.take_announced() {
            self.disconnected.emit(&());
        }
    }

    /// The WHATWG "reestablish the connection": wait, then connect again (or, with auto
    /// reconnect off, close). Run by deliveries only (the end of a stream or of a refused
    /// answer).
    fn reestablish(&self, cause: Option<SseError>, delay_override: Option<Duration>) {
        // (A slot of the stream's flushed last event may have dropped the client.)
        if self.state() == ReadyState::Closed || self.dropped_in_delivery() {
            return;
        }
        if !self.inner.borrow().auto_reconnect {
            log::debug!("event stream ended; auto reconnect is off");
            return self.close_for_good(cause, Caller::Delivery);
        }
        let epoch = {
            let mut inner = self.inner.borrow_mut();
            inner.opened = false;
            inner.epoch
        };
        self.set_state(ReadyState::Connecting);
        // A `state_changed` slot that called disconnect() has ended it all: nothing follows its
        // `disconnected` (as no event follows `EventSource.close()`). One that connected again
        // has the last word too: nothing of the old stream follows the new one's start. One
        // that dropped the client hears nothing more of it.
        if self.inner.borrow().epoch != epoch || self.dropped_in_delivery() {
            return;
        }
        if let Some(e) = &cause {
            self.error.emit(e);
        }
        // A slot that called disconnect() or connect() meanwhile has reported the end already
        // (and a new stream may be under way).
        if self.inner.borrow().epoch == epoch
            && !self.dropped_in_delivery()
            && self.take_announced()
        {
            self.disconnected.emit(&());
        }
        // A slot may have disconnected, reconnected or dropped the client meanwhile.
        if self.state() != ReadyState::Connecting
            || self.inner.borrow().current.is_some()
            || self.dropped_in_delivery()
        {
            return;
        }
        // ...or turned auto reconnect off.
        if !self.inner.borrow().auto_reconnect {
            return self.close_for_good(None, Caller::Delivery);
        }
        let delay = delay_override.unwrap_or_else(|| self.next_delay());
        log::debug!("event stream reconnecting in {delay:?}");
        let weak = self.self_weak.clone();
        let key = self.core.call_after(delay, move || {
            if let Some(client) = weak.upgrade() {
                client.inner.borrow_mut().reconnect_timer = None;
                client.open();
            }
        });
        self.inner.borrow_mut().reconnect_timer = Some(key);
    }

    /// Reconnection time, doubled per consecutive failure, plus up to 25 % jitter; never more
    /// than the maximum delay, or the reconnection time when that is longer.
    fn next_delay(&self) -> Duration {
        let inner = self.inner.borrow();
        let base = inner.reconnection_time;
        let cap = inner.max_delay.max(base);
        let factor = 1u32 << inner.failures.min(16);
        let backoff = if inner.failures == 0 {
            base
        } else {
            // A short reconnection time (`retry: 0`) must not turn failures into a tight loop
            // against a server that is down.
            base.max(MIN_FAILURE_BACKOFF)
                .saturating_mul(factor)
                .min(cap)
        };
        // xorshift: enough to spread many clients' reconnects apart; no crypto needed.
        let mut x = inner.jitter_seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        inner.jitter_seed.set(x);
        let jitter_range = backoff.as_millis() as u64 / 4;
        let jitter = if jitter_range == 0 {
            0
        } else {
            x % (jitter_range + 1)
        };
        // Capped after the jitter: clients that fail together were spread apart by the jitter
        // of the waits that led up to the cap, and keep that spread while they wait the cap.
        backoff
            .saturating_add(Duration::from_millis(jitter))
            .min(cap)
    }

    /// Whether request `id`'s stream still delivers to this client: it is the current one, open,
    /// not cancelled through the HTTP client, and the client is held by more than the delivery
    /// (a slot may have dropped the last handle).
    #[inline(always)]
    fn delivers(&self, inner: &Inner, id: RequestId) -> bool {
        inner.current == Some(id)
            && inner.state == ReadyState::Open
            && self.cancelled.get() != Some(id)
            && self.self_weak.strong_count() > 1
    }

    /// Emits `events` of request `id`'s stream in order; `false` when a slot stopped the
    /// delivery (disconnected, reconnected or dropped the client): the rest of the batch is
    /// dropped.
    fn emit_events(&self, id: RequestId, events: &[SseEvent]) -> bool {
        for event in events {
            {
                let mut inner = self.inner.borrow_mut();
                if !self.delivers(&inner, id) {
                    return false;
                }
                // The event's own (shared or inline) ID: a copy of at most 24 bytes, no compare.
                inner.follow_event_id(event);
            }
            self.message_received.emit(event);
        }
        true
    }

    fn take_back_parser(&self, parser: Option<Box<SseParser>>) {
        let mut inner = self.inner.borrow_mut();
        let Some(mut parser) = parser else {
            // An ID set while the request was in flight is `last_event_id` now (and so the new
            // parser's): no stream is left for it to be weighed against.
            inner.user_last_event_id = None;
            inner.parser = Some(inner.fresh_parser());
            return;
        };
        // Whatever a broken block held must not leak into the next connection.
        parser.reset();
        match inner.user_last_event_id.take().map(|ids| *ids) {
            // The stream sent no `id` after the call (in what was delivered, or in a block the
            // connection ended before): the user's ID stands.
            Some((user, at)) if at == parser.committed_id_fields() => {
                parser.set_last_event_id(&user);
            }
            _ => {}
        }
        inner.last_event_id = SmolStr::new(parser.last_event_id());
        // The parser's reconnection time is not copied back: it keeps the last `retry:` of any
        // earlier connection and would undo a later `set_reconnection_time`. Each `retry:`
        // already reached `reconnection_time` in its place among the events (`on_events`, and
        // `on_end` for a flushed last line).
        // The limit may have changed while the parser was lent out.
        if parser.max_event_size() != inner.max_event_size {
            parser = inner.fresh_parser();
        }
        parser.set_flush_unterminated_at_eof(inner.flush_unterminated);
        inner.parser = Some(parser);
    }
}

impl Inner {
    /// [`follow_stream_id`](Self::follow_stream_id) of `event`'s ID, copied straight from the
    /// event in the usual case (no ID set by the user pending).
    #[inline(always)]
    fn follow_event_id(&mut self, event: &SseEvent) {
        if self.user_last_event_id.is_none() {
            event.copy_last_event_id_to(&mut self.last_event_id);
            self.stream_id_fields = event.committed_id_fields();
        } else {
            self.follow_stream_id(event.shared_last_event_id(), event.committed_id_fields());
        }
    }

    /// Makes `stream_id`, the stream's last event ID as of what was just delivered (after
    /// `id_fields` committed `id` fields), the client's, unless the user set one since the
    /// stream's last `id`.
    #[inline(always)]
    fn follow_stream_id(&mut self, stream_id: SmolStr, id_fields: u32) {
        self.stream_id_fields = id_fields;
        match &self.user_last_event_id {
            None => self.last_event_id = stream_id,
            // The stream sent an ID of its own since the user set one (the same value or not):
            // it wins.
            Some(ids) if ids.1 != id_fields => {
                self.user_last_event_id = None;
                self.last_event_id = stream_id;
            }
            Some(_) => {}
        }
    }

    /// A parser with this client's settings that continues from its last event ID.
    fn fresh_parser(&self) -> Box<SseParser> {
        let mut parser = SseParser::with_max_event_size(self.max_event_size);
        parser.set_flush_unterminated_at_eof(self.flush_unterminated);
        parser.set_last_event_id(&self.last_event_id);
        Box::new(parser)
    }
}

impl SseTarget for SseClient {
    fn on_head(&self, id: RequestId, response: &HttpResponse) -> bool {
        if self.inner.borrow().current != Some(id) || self.cancelled.get() == Some(id) {
            return false;
        }
        let opens = response.status() == 200 && is_event_stream_response(response.headers());
        if opens {
            {
                let mut inner = self.inner.borrow_mut();
                inner.opened = true;
                // `failures` is reset only once the stream proves healthy (`on_end`).
                inner.opened_at = Some(std::time::Instant::now());
                inner.delivered = false;
            }
            log::debug!("event stream open");
            self.set_state(ReadyState::Open);
            // A `state_changed` or `opened` slot may have disconnected or connected elsewhere.
            // (Or dropped the client: it emits nothing more.)
            let still_open = || {
                let inner = self.inner.borrow();
                inner.current == Some(id)
                    && inner.state == ReadyState::Open
                    && !self.dropped_in_delivery()
            };
            if still_open() {
                self.opened.emit(response);
            }
            if still_open() {
                self.inner.borrow_mut().announced = true;
                self.connected.emit(&());
            }
        }
        opens
    }

    fn on_events(&self, id: RequestId, batch: &SseBatch) {
        let events = batch.events();
        // Once per batch: the stream delivers, so its attempt succeeded (see `on_end`).
        if !events.is_empty() {
            let mut inner = self.inner.borrow_mut();
            if self.delivers(&inner, id) {
                inner.delivered = true;
            }
        }
        // Each `retry` takes effect between the events around it, as in the stream: a slot sees
        // only the values before its event, and its own `set_reconnection_time` stands until a
        // later one. Work per `retry`, none per event.
        let mut from = 0;
        for &(at, retry) in batch.retries() {
            if !self.emit_events(id, events.get(from..at).unwrap_or_default()) {
                return;
            }
            let mut inner = self.inner.borrow_mut();
            if !self.delivers(&inner, id) {
                return;
            }
            inner.reconnection_time = retry;
            from = at;
        }
        if !self.emit_events(id, events.get(from..).unwrap_or_default()) {
            return;
        }
        // The ID after the last event (an `id` in a block without data) counts now that every
        // event before it was delivered, not before: one copy and check per batch.
        if let Some((end_id, end_id_fields)) = batch.end_id() {
            let mut inner = self.inner.borrow_mut();
            if self.delivers(&inner, id) {
                inner.follow_stream_id(end_id.clone(), end_id_fields);
            }
        }
    }

    fn on_cancel(&self, id: RequestId) {
        self.cancelled.set(Some(id));
    }

    fn on_end(
        &self,
        id: RequestId,
        result: Result<HttpResponse, HttpError>,
        parser: Option<Box<SseParser>>,
    ) {
        if self.inner.borrow().current != Some(id) {
            return;
        }
        let opened = {
            let mut inner = self.inner.borrow_mut();
            inner.current = None;
            inner.opened
        };
        let mut parser = parser;
        if self.cancelled.get() == Some(id) {
            // Cancelled through the HTTP client: what the parser read after the cancel (its last
            // event ID) counts for nothing, as after `disconnect`.
            parser = None;
        }
        // Whether a slot of the flushed final event called `HttpClient::cancel_all`: the
        // stream's request is past cancelling then, but it is stopped all the same.
        let mut cancelled_in_flush = false;
        // Flush an unterminated final block if asked to, before the parser is reset.
        if opened && result.is_ok() {
            if let Some(p) = parser.as_mut() {
                // The setting may have changed while the parser was lent out.
                p.set_flush_unterminated_at_eof(self.inner.borrow().flush_unterminated);
                let mut tail = SseBatch::default();
                // A failed flush (the last line too large) dispatches nothing.
                let _ = p.finish_borrowed(&mut tail);
                // A `retry:` on the flushed last line counts like any other, in its place.
                if tail.has_news() {
                    let cancel_alls = self.http.cancel_all_calls();
                    let connects = {
                        let mut inner = self.inner.borrow_mut();
                        inner.current = Some(id);
                        inner.connects
                    };
                    self.on_events(id, &tail);
                    let mut inner = self.inner.borrow_mut();
                    if inner.connects != connects
                        || (inner.current != Some(id) && inner.current.is_some())
                    {
                        // A slot started a new stream (which a slot of it may have stopped in
                        // turn): this one's end is settled; the new stream made its own parser
                        // from the ID the events (or the user) left, which this one's parser
                        // must not overwrite.
                        return;
                    }
                    inner.current = None;
                    cancelled_in_flush = self.http.cancel_all_calls() != cancel_alls;
                }
            }
        }
        self.take_back_parser(parser);
        if opened {
            // An attempt whose stream delivered an event, or stayed open a while, succeeded;
            // one that opened and ended at once failed like one that never opened.
            let mut inner = self.inner.borrow_mut();
            let lasted = inner
                .opened_at
                .take()
                .is_some_and(|at| at.elapsed() >= BACKOFF_RESET_THRESHOLD);
            if std::mem::take(&mut inner.delivered) || lasted {
                inner.failures = 0;
            } else {
                inner.failures = inner.failures.saturating_add(1);
            }
        }
        match result {
            // (Unless a slot closed the client already.)
            Ok(_) if cancelled_in_flush => {
                if self.state() != ReadyState::Closed {
                    self.close_for_good(None, Caller::Delivery);
                }
            }
            Ok(_) if opened => {
                log::debug!("event stream ended; reconnecting");
                self.reestablish(None, None);
            }
            Ok(response) => self.on_rejected(response),
            // Only a user's cancel of the stream's request gets here (this client abandons its
            // requests silently): stopped from outside, it closes, as with `disconnect`.
            Err(HttpError::Cancelled) => self.close_for_good(None, Caller::Delivery),
            Err(e @ (HttpError::TooManyRedirects { .. } | HttpError::BadRedirect(_))) => {
                self.fail(SseError::Redirect(e), Caller::Delivery)
            }
            Err(HttpError::LimitExceeded {
                what: "server-sent event",
                limit,
            }) => self.fail(SseError::EventTooLarge { limit }, Caller::Delivery),
            Err(e) if is_permanent(&e) => self.fail(SseError::Request(e), Caller::Delivery),
            Err(e) => {
                if !opened {
                    let mut inner = self.inner.borrow_mut();
                    inner.failures = inner.failures.saturating_add(1);
                }
                self.reestablish(Some(SseError::Http(e)), None);
            }
        }
    }
}

impl SseClient {
    fn on_rejected(&self, response: HttpResponse) {
        let body = String::from_utf8_lossy(response.body()).into_owned();
        let status = response.status();
        if self.inner.borrow().retry_throttled
            && matches!(status, 429 | 503)
            && !waiting_will_not_help(&response, &body)
        {
            let retry_after = requested_wait(&response);
            {
                let mut inner = self.inner.borrow_mut();
                inner.failures = inner.failures.saturating_add(1);
            }
            // `Retry-After: 0` asks for no wait at all: a server that keeps answering so would
            // be asked again in a tight loop. It gets the backoff of any failed attempt instead.
            // A wait of a day (or a typo's billions of seconds) would leave the client
            // `Connecting` that long, asking nothing: like any backoff, it is capped.
            let max_delay = self.inner.borrow().max_delay;
            let wait = retry_after
                .filter(|wait| !wait.is_zero())
                .map(|wait| wait.min(max_delay));
            return self.reestablish(
                Some(SseError::Throttled {
                    status,
                    retry_after,
                    body,
                }),
                wait,
            );
        }
        if status != 200 {
            return self.fail(SseError::BadStatus { status, body }, Caller::Delivery);
        }
        self.fail(
            SseError::BadContentType {
                content_type: response.content_type().map(str::to_string),
                body,
            },
            Caller::Delivery,
        );
    }
}

/// Whether a 429/503 answer says that no wait will help: OpenAI's `insufficient_quota` (out of
/// credit, refused with 429 like a rate limit: retrying it would ask again for ever), or
/// `x-should-retry: false` (the header OpenAI's and Anthropic's SDKs obey).
fn waiting_will_not_help(response: &HttpResponse, body: &str) -> bool {
    response
        .header("x-should-retry")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("false"))
        || body.contains("\"insufficient_quota\"")
}

/// The wait a throttled answer asks for: `retry-after-ms` (milliseconds, which OpenAI and Azure
/// send and OpenAI's SDK prefers), or else `Retry-After`.
fn requested_wait(response: &HttpResponse) -> Option<Duration> {
    response
        .header("retry-after-ms")
        .and_then(parse_retry_after_ms)
        .or_else(|| response.header("retry-after").and_then(parse_retry_after))
}

/// `retry-after-ms`: a decimal number of milliseconds (a fraction rounds up to the next one).
fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // Too many digits for a u64 is a wait beyond any bound anyway.
    let millis = whole.parse::<u64>().unwrap_or(u64::MAX);
    let part = u64::from(fraction.bytes().any(|b| b != b'0'));
    Some(Duration::from_millis(millis.saturating_add(part)))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the servers we target).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .map(Duration::from_secs)
}

impl Drop for SseClient {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if let Some(key) = inner.reconnect_timer.take() {
            self.core.timer_remove(key);
        }
        if let Some(id) = inner.current.take() {
            self.http.abandon(id);
        }
    }
}

impl fmt::Debug for SseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("SseClient")
                .field(
                    "state",
                    &if self.core.is_closed() {
                        ReadyState::Closed
                    } else {
                        inner.state
                    },
                )
                // Not the ID: it is part of the stream's body, which diagnostics never show.
                .field("last_event_id_len", &inner.last_event_id.len())
                .field("reconnection_time", &inner.reconnection_time)
                .finish(),
            Err(_) => f.write_str("SseClient { <busy> }"),
        }
    }
}

impl HttpClient {
    /// A new [`SseClient`] whose streams go through this client (KDNetwork `createSseClient`).
    pub fn create_sse_client(self: &Rc<Self>) -> Rc<SseClient> {
        SseClient::with_http_client(Rc::clone(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventLoop;

    const MS: Duration = Duration::from_millis(1);

    /// `count` waits the client would take before its next attempt after `failures` failed ones.
    fn next_delays(client: &SseClient, failures: u32, count: usize) -> Vec<Duration> {
        client.inner.borrow_mut().failures = failures;
        (0..count).map(|_| client.next_delay()).collect()
    }

    /// The maximum reconnection delay bounds the whole wait, jitter included: it is what a user
    /// sets it for. The jitter came on top of the capped backoff, so a 300 ms cap waited up to
    /// 375 ms (and the 60 s default up to 75 s).
    #[test]
    fn the_maximum_delay_bounds_the_wait_jitter_included() {
        let _event_loop = EventLoop::new().unwrap();
        let client = SseClient::new().unwrap();
        client.set_reconnection_time(100 * MS);
        client.set_max_reconnection_delay(300 * MS);
        // Under the cap: the reconnection time, or the doubled backoff, plus up to 25 %.
        for (failures, least) in [(0, 100 * MS), (1, 200 * MS)] {
            let delays = next_delays(&client, failures, 200);
            assert!(
                delays.iter().all(|d| *d >= least && *d <= least * 5 / 4),
                "{failures} failures: {delays:?}"
            );
            assert!(
                delays.iter().any(|d| *d > least),
                "{failures} failures: no jitter: {delays:?}"
            );
        }
        // At the cap: the cap.
        for failures in [2, 3, 10, 40] {
            let delays = next_delays(&client, failures, 200);
            assert!(
                delays.iter().all(|d| *d == 300 * MS),
                "{failures} failures: {delays:?}"
            );
        }
        // A reconnection time above the cap (a server's `retry:`) is waited, and no longer.
        client.set_reconnection_time(500 * MS);
        for failures in [0, 1, 5] {
            let delays = next_delays(&client, failures, 200);
            assert!(
                delays.iter().all(|d| *d == 500 * MS),
                "{failures} failures: {delays:?}"
            );
        }
    }
}
