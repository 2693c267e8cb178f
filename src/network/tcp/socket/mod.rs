//! [`TcpSocket`]: a non-blocking TCP (optionally TLS) stream on the event loop.
//!
//! ```text
//!                connect_to_host            lookup done               first attempt connects
//!  Unconnected ─────────────────▶ HostLookup ──────────▶ Connecting ─────────────────────────▶ Connected
//!       ▲  ▲  connect_to_address ────────────────────────────▲  │ all attempts failed / timeout     │
//!       │  └───────────────────────── error_occurred ◀────────────┘                                 │
//!       │                 disconnect_from_host (pending writes)                                      │
//!       └──────────── Closing ◀──────────────────────────────────────────────────────────────────────┘
//!       ▲  flushed          (or: peer EOF, error, abort → Unconnected at once)
//! ```
//!
//! # From the kernel to a slot
//!
//! mio reports an edge; the socket reads into the loop's shared buffer until `WouldBlock` (or a
//! fairness budget, after which it re-arms itself), decrypts through rustls when TLS is on, and
//! appends to its read buffer. Then it emits `bytes_received(n)` and `ready_read` once per drain.
//! Internal users (the HTTP client) install a data sink instead and parse straight from the
//! shared buffer, so a connection costs no read buffer of its own.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::Interest;
use mio::net::TcpStream;

use super::connect::{AttemptOutcome, AttemptOwner, CONNECTION_ATTEMPT_DELAY, ConnectRace};
use crate::bindings::Signal;
use crate::foundation::{
    LoopCore, LoopError, Readiness, ReadyHandler, SourceKey, TimerHandler, TimerKey, TimerTarget,
};
use crate::network::dns::{DnsResolver, LookupId, resolve_literal};
use crate::network::error::{SocketError, SocketOperation, TimeoutPhase};
use crate::network::tls::session::TlsSession;

/// Bytes read from the kernel per `read` call (the loop's shared buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one socket may read per readiness event before yielding to other sources.
const READ_BUDGET_PER_TURN: usize = 1024 * 1024;
/// Default cap of a socket's own read buffer; reading pauses (flow control) when it is full.
pub const DEFAULT_READ_BUFFER_LIMIT: usize = 4 * 1024 * 1024;
/// Default time allowed for a TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The lifecycle of a [`TcpSocket`] (KDNetwork `Socket::State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketState {
    /// Not connected.
    Unconnected,
    /// Resolving the host name.
    HostLookup,
    /// TCP connection attempts are in flight.
    Connecting,
    /// Connected (for TLS sockets, the handshake may still be running).
    Connected,
    /// Flushing pending writes before closing.
    Closing,
}

/// Receives the bytes of a socket directly (internal users such as the HTTP client).
pub(crate) trait DataSink {
    /// Plaintext as it arrives; the slice is only valid during the call.
    fn on_data(&self, data: &[u8]);
    /// This many bytes were handed to the kernel (as `bytes_written` reports them). A method
    /// rather than a `bytes_written` connection: a signal with a slot costs every connection
    /// three allocations.
    fn on_written(&self, n: usize);
    /// The connection is up (a TLS handshake may still be running); called before the first
    /// flush, so what the sink writes now goes out with it.
    fn on_connected(&self);
    /// The peer closed (`None`) or the connection failed. Not called for `abort()`.
    fn on_closed(&self, error: Option<&SocketError>);
}

/// Told about the TLS handshake of a socket (the SslSocket wrapper).
pub(crate) trait TlsObserver {
    fn handshake_completed(&self);
    fn handshake_failed(&self, error: &SocketError);
}

/// A TCP connection on the current thread's event loop (KDNetwork `TcpSocket`).
///
/// Writes may be queued from `connect_to_host` on and are flushed once connected.
/// `ready_read` fires once per batch of newly arrived data: read what you need then (for example
/// with [`read_all`](Self::read_all)); data left in the buffer stays there for later reads.
///
/// ```
/// use kdnet::EventLoop;
/// use kdnet::network::{TcpServer, TcpSocket};
/// use std::rc::Rc;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let server = TcpServer::new().unwrap();
/// server.listen("127.0.0.1", 0).unwrap();
/// let peers: Rc<std::cell::RefCell<Vec<Rc<TcpSocket>>>> = Default::default();
/// let p = peers.clone();
/// server.new_connection.connect(move |peer: &Rc<TcpSocket>| {
///     let echo = Rc::downgrade(peer);
///     peer.ready_read.connect(move |_| {
///         if let Some(s) = echo.upgrade() { let data = s.read_all(); s.write(&data).unwrap(); }
///     }).release();
///     p.borrow_mut().push(peer.clone());
/// }).release();
///
/// let client = TcpSocket::new().unwrap();
/// let handle = event_loop.handle();
/// let c = Rc::downgrade(&client);
/// client.ready_read.connect(move |_| {
///     let c = c.upgrade().unwrap();
///     if c.bytes_available() == 5 {
///         assert_eq!(&c.read_all()[..], b"hello");
///         handle.quit();
///     }
/// }).release();
/// client.connect_to_host("127.0.0.1", server.server_port().unwrap()).unwrap();
/// client.write(b"hello").unwrap();
/// event_loop.run();
/// ```
pub struct TcpSocket {
    /// Emitted with the new state on every transition.
    pub state_changed: Signal<SocketState>,
    /// The TCP connection is established.
    pub connected: Signal<()>,
    /// A connection that had emitted `connected` is closed.
    pub disconnected: Signal<()>,
    /// New data can be read.
    pub ready_read: Signal<()>,
    /// This many bytes arrived (plaintext for TLS) in the last batch.
    pub bytes_received: Signal<usize>,
    /// This many bytes were handed to the kernel (plaintext for TLS, counted when its records left).
    pub bytes_written: Signal<usize>,
    /// The connection failed; the socket is closed afterwards.
    pub error_occurred: Signal<SocketError>,
    core: Rc<LoopCore>,
    inner: RefCell<Inner>,
    self_weak: Weak<TcpSocket>,
}

struct Inner {
    state: SocketState,
    stream: Option<TcpStream>,
    key: Option<SourceKey>,
    /// Boxed: set once connected, and every socket on its way there would carry 64 B of it.
    addresses: Option<Box<Addresses>>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    read_limit: usize,
    read_paused: bool,
    close_when_flushed: bool,
    announced: bool,
    /// Boxed: only needed until connected, and every connected socket would carry its size.
    connecting: Option<Box<Connecting>>,
    /// Boxed with its buffers: a plain connection carries none of it.
    tls: Option<Box<TlsState>>,
    sink: Option<Weak<dyn DataSink>>,
    tls_observer: Option<Weak<dyn TlsObserver>>,
    no_delay: bool,
    keep_alive: bool,
    connect_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    /// Boxed: rarely set, and an error is large.
    last_error: Option<Box<SocketError>>,
}

/// What a socket needs only on its way to being connected. Made on demand; dropped once
/// connected, and on close unless a TLS request still waits for the next connect.
#[derive(Default)]
struct Connecting {
    race: Option<ConnectRace>,
    stagger_timer: Option<TimerKey>,
    connect_timer: Option<TimerKey>,
    lookup: Option<LookupId>,
    /// Set by `enable_client_tls`; the session is made when the TCP connection is up. Boxed: a
    /// plain connection never sets it.
    tls_pending: Option<Box<(Arc<rustls::ClientConfig>, String)>>,
}

/// The two ends of a connection, kept after it closes.
struct Addresses {
    peer: SocketAddr,
    local: Option<SocketAddr>,
}

impl Addresses {
    fn of(stream: &TcpStream, peer: SocketAddr) -> Box<Addresses> {
        Box::new(Addresses {
            peer,
            local: stream.local_addr().ok(),
        })
    }
}

/// A TLS connection's session and what only it needs.
struct TlsState {
    session: TlsSession,
    /// Plaintext decrypted for a data sink, reused across reads.
    scratch: BytesMut,
    handshake_timer: Option<TimerKey>,
}

impl TlsState {
    fn new(session: TlsSession) -> Box<TlsState> {
        Box::new(TlsState {
            session,
            scratch: BytesMut::new(),
            handshake_timer: None,
        })
    }
}

/// What one read step produced, so signals are emitted after the borrow is released.
enum ReadStep {
    Plain(usize),
    Tls {
        added: usize,
        completed: bool,
        peer_closed: bool,
    },
    Eof,
    Failed(SocketError),
    Paused,
    Exhausted,
    Done,
}

impl TcpSocket {
    /// An unconnected socket on the current thread's loop.
    pub fn new() -> Result<Rc<TcpSocket>, LoopError> {
        let core = LoopCore::current()?;
        Ok(Self::with_state(core, SocketState::Unconnected))
    }

    fn with_state(core: Rc<LoopCore>, state: SocketState) -> Rc<TcpSocket> {
        Rc::new_cyclic(|weak| TcpSocket {
            state_changed: Signal::new(),
            connected: Signal::new(),
            disconnected: Signal::new(),
            ready_read: Signal::new(),
            bytes_received: Signal::new(),
            bytes_written: Signal::new(),
            error_occurred: Signal::new(),
            core,
            inner: RefCell::new(Inner {
                state,
                stream: None,
                key: None,
                addresses: None,
                read_buf: BytesMut::new(),
                write_buf: BytesMut::new(),
                read_limit: DEFAULT_READ_BUFFER_LIMIT,
                read_paused: false,
                close_when_flushed: false,
                announced: false,
                connecting: None,
                tls: None,
                sink: None,
                tls_observer: None,
                no_delay: true,
                keep_alive: false,
                connect_timeout: None,
                handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
                last_error: None,
            }),
            self_weak: weak.clone(),
        })
    }

    /// Wraps a stream accepted by a [`TcpServer`](super::TcpServer) (server-side TLS when `tls` is set).
    pub(crate) fn from_accepted(
        core: Rc<LoopCore>,
        mut stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsSession>,
    ) -> Result<Rc<TcpSocket>, SocketError> {
        let socket = Self::with_state(core, SocketState::Connected);
        let _ = stream.set_nodelay(true);
        let handler: Weak<dyn ReadyHandler> = socket.self_weak.clone();
        let key = socket
            .core
            .register(
                &mut stream,
                Interest::READABLE | Interest::WRITABLE,
                handler,
            )
            .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        {
            let mut inner = socket.inner.borrow_mut();
            inner.addresses = Some(Addresses::of(&stream, peer));
            inner.stream = Some(stream);
            inner.key = Some(key);
            inner.announced = true;
            inner.tls = tls.map(TlsState::new);
        }
        if socket.inner.borrow().tls.is_some() {
            socket.arm_handshake_timer();
        }
        Ok(socket)
    }

    /// The current state.
    pub fn state(&self) -> SocketState {
        self.inner.borrow().state
    }

    /// Resolves `host` (off the loop thread; IP literals skip the resolver) and connects to the
    /// first address that answers, racing them (Happy Eyeballs, RFC 8305).
    pub fn connect_to_host(&self, host: &str, port: u16) -> Result<(), SocketError> {
        self.ensure_unconnected()?;
        if let Some(ip) = resolve_literal(host) {
            return self.connect_to_address(ip, port);
        }
        let resolver = DnsResolver::instance()
            .map_err(|_| SocketError::InvalidState("no event loop on this thread"))?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.state = SocketState::HostLookup;
        }
        self.state_changed.emit(&SocketState::HostLookup);
        self.arm_connect_timer();
        let weak = self.self_weak.clone();
        let id = resolver.lookup(host, move |result| {
            if let Some(socket) = weak.upgrade() {
                socket.on_lookup(result, port);
            }
        });
        self.inner.borrow_mut().connecting().lookup = Some(id);
        Ok(())
    }

    /// Connects to one address.
    pub fn connect_to_address(&self, ip: IpAddr, port: u16) -> Result<(), SocketError> {
        self.connect_to_addresses(&[SocketAddr::new(ip, port)])
    }

    /// Races connections to `addrs` (Happy Eyeballs: IPv6 first, families interleaved, next
    /// attempt after 250 ms or as soon as one fails); the first to connect wins.
    pub fn connect_to_addresses(&self, addrs: &[SocketAddr]) -> Result<(), SocketError> {
        if self.state() != SocketState::HostLookup {
            self.ensure_unconnected()?;
        }
        if addrs.is_empty() {
            return Err(SocketError::InvalidAddress(
                "no address to connect to".into(),
            ));
        }
        let was = {
            let mut inner = self.inner.borrow_mut();
            let connecting = inner.connecting();
            connecting.lookup = None;
            connecting.race = Some(ConnectRace::new(addrs));
            std::mem::replace(&mut inner.state, SocketState::Connecting)
        };
        if was != SocketState::Connecting {
            self.state_changed.emit(&SocketState::Connecting);
        }
        if was == SocketState::Unconnected {
            self.arm_connect_timer();
        }
        self.advance_race(false);
        Ok(())
    }

    /// Takes up to `max` buffered bytes.
    pub fn read(&self, max: usize) -> Bytes {
        let data = {
            let mut inner = self.inner.borrow_mut();
            let n = max.min(inner.read_buf.len());
            inner.read_buf.split_to(n).freeze()
        };
        self.resume_reading_if_paused();
        data
    }

    /// Takes every buffered byte.
    pub fn read_all(&self) -> Bytes {
        let data = self.inner.borrow_mut().read_buf.split().freeze();
        self.resume_reading_if_paused();
        data
    }

    /// Bytes buffered for reading.
    pub fn bytes_available(&self) -> usize {
        self.inner.borrow().read_buf.len()
    }

    /// Queues `data` for sending. Allowed from `connect_to_host` until `disconnect_from_host`;
    /// while connected the kernel is offered the data at once and the rest is flushed on
    /// writability. Returns the number of bytes accepted (all of them).
    pub fn write(&self, data: &[u8]) -> Result<usize, SocketError> {
        let connected = {
            let mut inner = self.inner.borrow_mut();
            match inner.state {
                SocketState::Unconnected => {
                    return Err(SocketError::InvalidState("write on an unconnected socket"));
                }
                SocketState::Closing => {
                    return Err(SocketError::InvalidState("write on a closing socket"));
                }
                _ => {}
            }
            inner.write_buf.extend_from_slice(data);
            inner.state == SocketState::Connected
        };
        if connected {
            // Flush now, but report (bytes_written / errors) from the loop, never from inside write().
            match self.flush_to_kernel() {
                Ok((written, _)) if written > 0 && self.reports_written() => {
                    let weak = self.self_weak.clone();
                    self.core.post(Box::new(move || {
                        if let Some(s) = weak.upgrade() {
                            s.report_written(written);
                        }
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    let weak = self.self_weak.clone();
                    self.core.post(Box::new(move || {
                        if let Some(s) = weak.upgrade() {
                            s.close_with(Some(e));
                        }
                    }));
                }
            }
        }
        Ok(data.len())
    }

    /// Bytes queued but not yet handed to the kernel.
    pub fn bytes_to_write(&self) -> usize {
        self.inner.borrow().write_buf.len()
    }

    /// Closes gracefully: pending writes (and TLS close_notify) are flushed first, then the
    /// connection closes and `disconnected` is emitted. While still looking up or connecting,
    /// the attempt is cancelled.
    pub fn disconnect_from_host(&self) {
        let state = self.state();
        match state {
            SocketState::Unconnected | SocketState::Closing => {}
            SocketState::HostLookup | SocketState::Connecting => self.abort(),
            SocketState::Connected => {
                {
                    let mut inner = self.inner.borrow_mut();
                    inner.state = SocketState::Closing;
                    inner.close_when_flushed = true;
                    if let Some(tls) = inner.tls.as_mut() {
                        tls.session.send_close_notify();
                    }
                }
                self.state_changed.emit(&SocketState::Closing);
                self.flush();
            }
        }
    }

    /// Whether this is a TLS connection whose peer closed without sending close_notify (so the
    /// end of its data is not authenticated). False for plain TCP.
    pub(crate) fn closed_without_close_notify(&self) -> bool {
        self.inner
            .borrow()
            .tls
            .as_ref()
            .is_some_and(|t| !t.session.close_notify_received())
    }

    /// Closes at once, discarding pending writes.
    pub fn abort(&self) {
        self.inner.borrow_mut().sink = None;
        self.close_with(None);
    }

    /// The connected peer's address.
    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.inner.borrow().addresses.as_ref().map(|a| a.peer)
    }

    /// The connected peer's port.
    pub fn peer_port(&self) -> Option<u16> {
        self.peer_address().map(|a| a.port())
    }

    /// The local address of the connection.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.inner.borrow().addresses.as_ref().and_then(|a| a.local)
    }

    /// The local port of the connection.
    pub fn local_port(&self) -> Option<u16> {
        self.local_address().map(|a| a.port())
    }

    /// The last error reported through `error_occurred`.
    pub fn last_error(&self) -> Option<SocketError> {
        self.inner.borrow().last_error.as_deref().cloned()
    }

    /// Disables (true, the default) or enables Nagle's algorithm.
    pub fn set_no_delay(&self, no_delay: bool) -> Result<(), SocketError> {
        let mut inner = self.inner.borrow_mut();
        inner.no_delay = no_delay;
        if let Some(stream) = inner.stream.as_ref() {
            stream
                .set_nodelay(no_delay)
                .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        }
        Ok(())
    }

    /// Enables or disables TCP keep-alive probes (off by default).
    pub fn set_keep_alive(&self, keep_alive: bool) -> Result<(), SocketError> {
        let mut inner = self.inner.borrow_mut();
        inner.keep_alive = keep_alive;
        if let Some(stream) = inner.stream.as_ref() {
            socket2::SockRef::from(stream)
                .set_keepalive(keep_alive)
                .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        }
        Ok(())
    }

    /// Caps the read buffer (default [`DEFAULT_READ_BUFFER_LIMIT`]; 0 = unlimited). When it is
    /// full the socket stops reading (TCP flow control slows the peer) until data is read.
    pub fn set_read_buffer_limit(&self, limit: usize) {
        self.inner.borrow_mut().read_limit = limit;
        self.resume_reading_if_paused();
    }

    /// Fails the connect with a timeout after `timeout` (lookup and all attempts; default none).
    pub fn set_connect_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().connect_timeout = timeout;
    }

    // ---- crate-internal API ------------------------------------------------------------------

    pub(crate) fn set_data_sink(&self, sink: Option<Weak<dyn DataSink>>) {
        self.inner.borrow_mut().sink = sink;
    }

    pub(crate) fn set_tls_observer(&self, observer: Weak<dyn TlsObserver>) {
        self.inner.borrow_mut().tls_observer = Some(observer);
    }

    /// Makes the next connect a TLS client connection to `host`.
    pub(crate) fn enable_client_tls(&self, config: Arc<rustls::ClientConfig>, host: &str) {
        self.inner.borrow_mut().connecting().tls_pending =
            Some(Box::new((config, host.to_string())));
    }

    pub(crate) fn set_handshake_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().handshake_timeout = timeout;
    }

    pub(crate) fn with_tls<R>(&self, f: impl FnOnce(&TlsSession) -> R) -> Option<R> {
        self.inner.borrow().tls.as_deref().map(|t| f(&t.session))
    }

    pub(crate) fn is_encrypted(&self) -> bool {
        self.inner
            .borrow()
            .tls
            .as_ref()
            .is_some_and(|t| !t.session.is_handshaking())
    }

    // ---- connecting --------------------------------------------------------------------------

    fn ensure_unconnected(&self) -> Result<(), SocketError> {
        match self.state() {
            SocketState::Unconnected => Ok(()),
            _ => Err(SocketError::InvalidState(
                "socket is already connected or connecting",
            )),
        }
    }

    fn on_lookup(&self, result: Result<Vec<IpAddr>, SocketError>, port: u16) {
        if let Some(connecting) = self.inner.borrow_mut().connecting.as_mut() {
            connecting.lookup = None;
        }
        if self.state() != SocketState::HostLookup {
            return;
        }
        match result {
            Ok(ips) => {
                let addrs: Vec<SocketAddr> = ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect();
                if let Err(e) = self.connect_to_addresses(&addrs) {
                    self.close_with(Some(e));
                }
            }
            Err(e) => self.close_with(Some(e)),
        }
    }

    /// Starts the next attempt (if none is in flight or `parallel`), re-arms the stagger timer,
    /// and fails the connect when nothing is left.
    fn advance_race(&self, parallel: bool) {
        let owner: Weak<dyn AttemptOwner> = self.self_weak.clone();
        let failed = {
            let mut inner = self.inner.borrow_mut();
            let Some(connecting) = inner.connecting.as_deref_mut() else {
                return;
            };
            let Some(race) = connecting.race.as_mut() else {
                return;
            };
            if parallel || race.in_flight() == 0 {
                race.start_next(&self.core, &owner);
            }
            if let Some(key) = connecting.stagger_timer.take() {
                self.core.timer_remove(key);
            }
            if race.in_flight() == 0 {
                let e = race.final_error();
                connecting.race = None;
                Some(e)
            } else {
                if race.has_queued() {
                    connecting.stagger_timer = Some(self.start_timer(CONNECTION_ATTEMPT_DELAY));
                }
                None
            }
        };
        if let Some(e) = failed {
            self.close_with(Some(e));
        }
    }

    fn arm_connect_timer(&self) {
        let mut inner = self.inner.borrow_mut();
        let Some(timeout) = inner.connect_timeout else {
            return;
        };
        let key = self.start_timer(timeout);
        inner.connecting().connect_timer = Some(key);
    }

    fn arm_handshake_timer(&self) {
        let mut inner = self.inner.borrow_mut();
        let Some(timeout) = inner.handshake_timeout else {
            return;
        };
        let Some(tls) = inner.tls.as_mut() else {
            return;
        };
        tls.handshake_timer = Some(self.start_timer(timeout));
    }

    /// A one-shot timer that calls back this socket's [`TimerHandler::fire`], which tells the
    /// socket's timers apart by key. Not `call_after`: that costs every connecting socket a
    /// closure and a handler allocation besides the timer slot.
    fn start_timer(&self, delay: Duration) -> TimerKey {
        let handler: Weak<dyn TimerHandler> = self.self_weak.clone();
        let key = self
            .core
            .timer_insert(TimerTarget::Borrowed(handler), false);
        self.core.timer_arm(key, Instant::now() + delay);
        key
    }

    fn on_connected(&self, mut stream: TcpStream, peer: SocketAddr) {
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(connecting) = inner.connecting.as_deref_mut() {
                for key in [
                    connecting.stagger_timer.take(),
                    connecting.connect_timer.take(),
                ]
                .into_iter()
                .flatten()
                {
                    self.core.timer_remove(key);
                }
                connecting.race = None;
            }
        }
        let handler: Weak<dyn ReadyHandler> = self.self_weak.clone();
        let key = match self.core.register(
            &mut stream,
            Interest::READABLE | Interest::WRITABLE,
            handler,
        ) {
            Ok(key) => key,
            Err(e) => {
                return self.close_with(Some(SocketError::io(SocketOperation::Configure, e)));
            }
        };
        let tls_start = {
            let mut inner = self.inner.borrow_mut();
            let _ = stream.set_nodelay(inner.no_delay);
            if inner.keep_alive {
                let _ = socket2::SockRef::from(&stream).set_keepalive(true);
            }
            inner.addresses = Some(Addresses::of(&stream, peer));
            inner.stream = Some(stream);
            inner.key = Some(key);
            inner.state = SocketState::Connected;
            inner.announced = true;
            // Connected: nothing of the way here is needed any more.
            inner
                .connecting
                .take()
                .and_then(|c| c.tls_pending)
                .map(|t| *t)
        };
        log::debug!("connected to {peer}");
        let tls_error =
            tls_start.and_then(|(config, host)| match TlsSession::client(config, &host) {
                Ok(session) => {
                    self.inner.borrow_mut().tls = Some(TlsState::new(session));
                    self.arm_handshake_timer();
                    None
                }
                Err(e) => Some(e),
            });
        self.state_changed.emit(&SocketState::Connected);
        self.connected.emit(&());
        match tls_error {
            Some(e) => self.close_with(Some(e)),
            None => {
                // A `connected` slot may have closed the socket already.
                if self.state() == SocketState::Connected {
                    if let Some(sink) = self.sink() {
                        sink.on_connected();
                    }
                }
                self.flush();
            }
        }
    }

    // ---- reading -----------------------------------------------------------------------------

    fn drain_reads(&self) {
        self.drain_reads_until(true);
    }

    /// `until_would_block == false`: a short plain read (fewer bytes than the buffer) is taken as
    /// "drained" (edge-triggered: more data raises a new edge), saving the `EAGAIN` read.
    fn drain_reads_until(&self, until_would_block: bool) {
        let mut buf = self.core.take_read_buffer();
        if buf.len() < READ_CHUNK {
            // Zeroed allocation rather than `resize`: fresh zero pages need not be written, so
            // the loop's one buffer costs resident memory only for what reads actually fill.
            buf = vec![0; READ_CHUNK];
        }
        let mut budget = READ_BUDGET_PER_TURN;
        let mut received = 0usize;
        let mut used_tls = false;
        let mut end: Option<Result<(), SocketError>> = None;
        let mut exhausted = false;
        loop {
            let step = self.read_step(&mut buf, &mut budget);
            match step {
                ReadStep::Plain(n) => {
                    received += n;
                    match self.sink() {
                        Some(sink) => sink.on_data(&buf[..n]),
                        None => self
                            .inner
                            .borrow_mut()
                            .read_buf
                            .extend_from_slice(&buf[..n]),
                    }
                    if !until_would_block && n < buf.len() {
                        break;
                    }
                }
                ReadStep::Tls {
                    added,
                    completed,
                    peer_closed,
                } => {
                    used_tls = true;
                    received += added;
                    if added > 0 {
                        self.deliver_tls_plaintext();
                    }
                    if completed {
                        self.on_handshake_completed();
                    }
                    if peer_closed {
                        end = Some(Ok(()));
                        break;
                    }
                }
                ReadStep::Eof => {
                    end = Some(Ok(()));
                    break;
                }
                ReadStep::Failed(e) => {
                    end = Some(Err(e));
                    break;
                }
                ReadStep::Exhausted => {
                    exhausted = true;
                    break;
                }
                ReadStep::Paused | ReadStep::Done => break,
            }
        }
        self.core.return_read_buffer(buf);
        if received > 0 && self.inner.borrow().sink.is_none() {
            self.bytes_received.emit(&received);
            self.ready_read.emit(&());
        }
        if used_tls {
            // The handshake (or a key update) may have produced records to send.
            self.flush();
        }
        match end {
            Some(Ok(())) => self.on_peer_closed(),
            Some(Err(e)) => self.close_with(Some(e)),
            None if exhausted => self.rearm(),
            None => {}
        }
    }

    /// One `read` from the kernel (plus TLS decryption), under a short borrow.
    fn read_step(&self, buf: &mut [u8], budget: &mut usize) -> ReadStep {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if inner.sink.is_none() && inner.read_limit > 0 && inner.read_buf.len() >= inner.read_limit
        {
            inner.read_paused = true;
            return ReadStep::Paused;
        }
        if *budget == 0 {
            return ReadStep::Exhausted;
        }
        let Some(stream) = inner.stream.as_mut() else {
            return ReadStep::Done;
        };
        let n = loop {
            match stream.read(buf) {
                Ok(0) => return ReadStep::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStep::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadStep::Failed(SocketError::io(SocketOperation::Read, e)),
            }
        };
        *budget = budget.saturating_sub(n);
        let Some(tls) = inner.tls.as_deref_mut() else {
            return ReadStep::Plain(n);
        };
        let target = if inner.sink.is_some() {
            &mut tls.scratch
        } else {
            &mut inner.read_buf
        };
        let before = target.len();
        match tls.session.receive(&buf[..n], target) {
            Ok(r) => {
                let after = if inner.sink.is_some() {
                    tls.scratch.len()
                } else {
                    inner.read_buf.len()
                };
                let added = after - before;
                ReadStep::Tls {
                    added,
                    completed: r.handshake_completed,
                    peer_closed: r.peer_closed,
                }
            }
            Err(e) => {
                // Best effort: let rustls send its alert before we close.
                if let Some(stream) = inner.stream.as_mut() {
                    let mut nothing = BytesMut::new();
                    let _ = tls.session.flush(&mut nothing, stream);
                }
                ReadStep::Failed(e)
            }
        }
    }

    /// Hands plaintext decrypted into the scratch buffer to the sink (without a sink it went
    /// straight into the read buffer).
    fn deliver_tls_plaintext(&self) {
        let Some(sink) = self.sink() else {
            return;
        };
        let mut plain = match self.inner.borrow_mut().tls.as_mut() {
            Some(tls) => std::mem::take(&mut tls.scratch),
            None => return,
        };
        sink.on_data(&plain);
        plain.clear();
        if let Some(tls) = self.inner.borrow_mut().tls.as_mut() {
            if tls.scratch.capacity() < plain.capacity() {
                tls.scratch = plain;
            }
        }
    }

    /// Whether anyone hears about written bytes (the signal or the data sink).
    fn reports_written(&self) -> bool {
        self.bytes_written.connection_count() > 0 || self.inner.borrow().sink.is_some()
    }

    fn report_written(&self, n: usize) {
        self.bytes_written.emit(&n);
        if let Some(sink) = self.sink() {
            sink.on_written(n);
        }
    }

    fn sink(&self) -> Option<Rc<dyn DataSink>> {
        self.inner.borrow().sink.as_ref().and_then(Weak::upgrade)
    }

    fn resume_reading_if_paused(&self) {
        let resume = {
            let mut inner = self.inner.borrow_mut();
            let below = inner.read_limit == 0 || inner.read_buf.len() < inner.read_limit;
            if inner.read_paused && below {
                inner.read_paused = false;
                true
            } else {
                false
            }
        };
        if resume {
            // Edge-triggered: no new edge will come for data already waiting, so read on a later turn.
            let weak = self.self_weak.clone();
            self.core.post(Box::new(move || {
                if let Some(s) = weak.upgrade() {
                    s.drain_reads();
                }
            }));
        }
    }

    /// Re-arms the registration so the kernel reports the socket again on the next poll.
    fn rearm(&self) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let (Some(stream), Some(key)) = (inner.stream.as_mut(), inner.key) {
            if let Err(e) =
                self.core
                    .reregister(stream, key, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("re-arming socket: {e}");
            }
        }
    }

    fn on_handshake_completed(&self) {
        let observer = {
            let mut inner = self.inner.borrow_mut();
            if let Some(key) = inner.tls.as_mut().and_then(|t| t.handshake_timer.take()) {
                self.core.timer_remove(key);
            }
            inner.tls_observer.as_ref().and_then(Weak::upgrade)
        };
        log::debug!("TLS handshake completed");
        if let Some(observer) = observer {
            observer.handshake_completed();
        }
    }

    fn on_peer_closed(&self) {
        log::debug!("peer closed the connection");
        let handshaking = self
            .inner
            .borrow()
            .tls
            .as_ref()
            .is_some_and(|t| t.session.is_handshaking());
        if handshaking {
            self.close_with(Some(SocketError::ClosedByPeer));
        } else {
            self.close_with(None);
        }
    }

    // ---- writing -----------------------------------------------------------------------------

    /// Offers queued bytes to the kernel; returns `(plaintext written, blocked)`.
    fn flush_to_kernel(&self) -> Result<(usize, bool), SocketError> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(stream) = inner.stream.as_mut() else {
            return Ok((0, false));
        };
        let result = match inner.tls.as_mut() {
            Some(tls) => tls
                .session
                .flush(&mut inner.write_buf, stream)
                .map(|f| (f.plaintext_written, f.blocked)),
            None => write_plain(&mut inner.write_buf, stream),
        };
        if inner.write_buf.is_empty() {
            // All sent: an idle connection (a long stream after its request) keeps no buffer.
            // (Not `capacity() > 0`: a buffer advanced to its end reports 0 yet holds its block.)
            inner.write_buf = BytesMut::new();
        }
        result.map_err(|e| SocketError::io(SocketOperation::Write, e))
    }

    fn flush(&self) {
        match self.flush_to_kernel() {
            Ok((written, blocked)) => {
                if written > 0 {
                    self.report_written(written);
                }
                let finish = {
                    let inner = self.inner.borrow();
                    !blocked
                        && inner.close_when_flushed
                        && inner.write_buf.is_empty()
                        && inner.tls.as_ref().is_none_or(|t| !t.session.wants_write())
                };
                if finish {
                    if let Some(stream) = self.inner.borrow().stream.as_ref() {
                        let _ = stream.shutdown(Shutdown::Write);
                    }
                    self.close_with(None);
                }
            }
            Err(e) => self.close_with(Some(e)),
        }
    }

    // ---- closing -----------------------------------------------------------------------------

    /// Closes the connection and reports: `error_occurred` (if `error`), `state_changed`,
    /// `disconnected` (if `connected` was emitted), and the data sink.
    fn close_with(&self, error: Option<SocketError>) {
        let (stream, was_state, announced, sink, observer) = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            if inner.state == SocketState::Unconnected && inner.stream.is_none() {
                return;
            }
            inner.release_loop_resources(&self.core);
            let handshaking = inner
                .tls
                .as_ref()
                .is_some_and(|t| t.session.is_handshaking());
            let observer = if handshaking && error.is_some() {
                inner.tls_observer.as_ref().and_then(Weak::upgrade)
            } else {
                None
            };
            inner.write_buf.clear();
            inner.close_when_flushed = false;
            inner.read_paused = false;
            if error.is_some() {
                inner.last_error = error.clone().map(Box::new);
            }
            (
                inner.stream.take(),
                std::mem::replace(&mut inner.state, SocketState::Unconnected),
                std::mem::take(&mut inner.announced),
                inner.sink.take().and_then(|w| w.upgrade()),
                observer,
            )
        };
        drop(stream);
        if let Some(e) = &error {
            log::debug!("socket error: {e}");
            if let Some(observer) = observer {
                observer.handshake_failed(e);
            }
            self.error_occurred.emit(e);
        }
        if was_state != SocketState::Unconnected {
            self.state_changed.emit(&SocketState::Unconnected);
        }
        if announced {
            self.disconnected.emit(&());
        }
        if let Some(sink) = sink {
            sink.on_closed(error.as_ref());
        }
    }
}

fn write_plain(buf: &mut BytesMut, stream: &mut TcpStream) -> io::Result<(usize, bool)> {
    let mut written = 0;
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf.advance(n);
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((written, false))
}

impl ReadyHandler for TcpSocket {
    fn on_ready(&self, r: Readiness) {
        if r.writable || r.write_closed || r.error {
            self.flush();
        }
        if r.readable || r.read_closed || r.error {
            self.drain_reads_until(r.read_closed || r.error);
        }
    }
}

/// Which of a socket's timers fired.
enum SocketTimer {
    Stagger,
    Connect,
    Handshake,
}

impl TimerHandler for TcpSocket {
    fn fire(&self, key: TimerKey) {
        // One-shot: the slot is done whichever timer it was.
        self.core.timer_remove(key);
        let fired = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            // Takes the slot's key if it is the one that fired.
            let fired = |slot: &mut Option<TimerKey>| slot.take_if(|k| *k == key).is_some();
            let mut which = None;
            if let Some(c) = inner.connecting.as_deref_mut() {
                if fired(&mut c.stagger_timer) {
                    which = Some(SocketTimer::Stagger);
                } else if fired(&mut c.connect_timer) {
                    which = Some(SocketTimer::Connect);
                }
            }
            if let Some(t) = inner.tls.as_deref_mut() {
                if which.is_none() && fired(&mut t.handshake_timer) {
                    which = Some(SocketTimer::Handshake);
                }
            }
            which
        };
        match fired {
            Some(SocketTimer::Stagger) => self.advance_race(true),
            Some(SocketTimer::Connect) => {
                let phase = if self.state() == SocketState::HostLookup {
                    TimeoutPhase::Resolve
                } else {
                    TimeoutPhase::Connect
                };
                self.close_with(Some(SocketError::Timeout(phase)));
            }
            Some(SocketTimer::Handshake) => {
                self.close_with(Some(SocketError::Timeout(TimeoutPhase::TlsHandshake)));
            }
            None => {}
        }
    }
}

impl AttemptOwner for TcpSocket {
    fn attempt_ready(&self, id: u64, readiness: Readiness) {
        let outcome = {
            let mut inner = self.inner.borrow_mut();
            match inner.connecting.as_mut().and_then(|c| c.race.as_mut()) {
                Some(race) => race.on_ready(&self.core, id, readiness),
                None => return,
            }
        };
        match outcome {
            AttemptOutcome::Pending => {}
            AttemptOutcome::Failed => self.advance_race(false),
            AttemptOutcome::Connected(stream, addr) => self.on_connected(stream, addr),
        }
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        self.inner.get_mut().release_loop_resources(&self.core);
    }
}

impl Inner {
    /// The connect-only state, made on first use.
    fn connecting(&mut self) -> &mut Connecting {
        self.connecting.get_or_insert_with(Box::default)
    }

    /// Gives back everything registered with the loop: the stream's registration, connection
    /// attempts, timers and a pending name lookup. The stream itself stays (the caller drops it).
    fn release_loop_resources(&mut self, core: &LoopCore) {
        if let (Some(stream), Some(key)) = (self.stream.as_mut(), self.key.take()) {
            core.deregister(stream, key);
        }
        if let Some(key) = self.tls.as_mut().and_then(|t| t.handshake_timer.take()) {
            core.timer_remove(key);
        }
        let Some(connecting) = self.connecting.as_deref_mut() else {
            return;
        };
        if let Some(mut race) = connecting.race.take() {
            race.close_all(core);
        }
        for key in [
            connecting.stagger_timer.take(),
            connecting.connect_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            core.timer_remove(key);
        }
        if let Some(id) = connecting.lookup.take() {
            if let Ok(resolver) = DnsResolver::instance() {
                resolver.cancel(id);
            }
        }
        // A TLS request made before connecting still holds for the next connect.
        if connecting.tls_pending.is_none() {
            self.connecting = None;
        }
    }
}

impl fmt::Debug for TcpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("TcpSocket")
                .field("state", &inner.state)
                .field("peer", &inner.addresses.as_ref().map(|a| a.peer))
                .field("tls", &inner.tls.is_some())
                .field("bytes_available", &inner.read_buf.len())
                .field("bytes_to_write", &inner.write_buf.len())
                .finish(),
            Err(_) => f.write_str("TcpSocket { <busy> }"),
        }
    }
}
