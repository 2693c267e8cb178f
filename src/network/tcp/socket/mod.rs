//! [`TcpSocket`]: a non-blocking TCP (optionally TLS) stream on the event loop.
//!
//! ```text
//!                connect_to_host            lookup done               first attempt connects
//!  Unconnected ─────────────────▶ HostLookup ──────────▶ Connecting ─────────────────────────▶ Connected
//!       ▲  ▲  connect_to_address ────────────────────────────▲  │ all attempts failed / timeout     │
//!       │  └───────────────────────── error_occurred ◀────────────┘                                 │
//!       │      disconnect_from_host, or the peer's end of stream with writes still queued            │
//!       └──────────── Closing ◀──────────────────────────────────────────────────────────────────────┘
//!       ▲  flushed          (or: error, abort, peer EOF with nothing queued → Unconnected at once)
//! ```
//!
//! A peer's end of stream only means it sends no more: a half-closed peer still reads, so what
//! is queued for it is flushed before the socket closes (as Qt's `QAbstractSocket` does; KDNetwork
//! dropped it). If the peer closed entirely, the flush fails and `error_occurred` says so.
//! Over TLS the peer's end of data is its close_notify: a bare end of stream (while connected,
//! not while closing) is reported after the last data as `error_occurred` with
//! [`TlsFailure::Truncated`](crate::network::TlsFailure::Truncated), queued writes dropped.
//! A peer's close_notify is answered with ours, after what is queued (through `Closing`), as
//! RFC 8446 §6.1 asks.
//!
//! # From the kernel to a slot
//!
//! mio reports an edge; the socket reads into the loop's shared buffer until `WouldBlock`, or for
//! plain TCP until a read returns less than the buffer (or a fairness budget of 1 MiB, after which
//! it re-arms itself), decrypts through rustls when TLS is on, and
//! appends to its read buffer. Then it emits `bytes_received(n)` and `ready_read` once per drain.
//! Internal users (the HTTP client) install a data sink instead and parse straight from the
//! shared buffer, so a connection costs no read buffer of its own.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mio::Interest;
use mio::net::TcpStream;

use super::connect::ConnectRace;
use super::server::unmapped;
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, ReadyHandler, SourceKey};
use crate::network::dns::{DnsResolver, numeric_ipv4, resolve_literal};
use crate::network::error::{SocketError, SocketOperation};
use crate::network::tls::session::TlsSession;

mod closing;
mod connecting;
mod dispatch;
mod lingering;
mod reading;
mod tls;
mod writing;

use connecting::{Addresses, Connecting};
pub(crate) use reading::DataSink;
pub(crate) use tls::TlsObserver;
use tls::TlsState;

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

/// A TCP connection on the current thread's event loop (KDNetwork `TcpSocket`).
///
/// Writes may be queued from `connect_to_host` on and are flushed once connected.
/// `ready_read` fires once per batch of newly arrived data: read what you need then (for example
/// with [`read_all`](Self::read_all)); data left in the buffer stays there for later reads, also
/// once the connection is closed, until the next connect discards it.
///
/// A slot may drop the last handle of its socket (a window closing on `connected` or
/// `error_occurred`): the socket then emits nothing more, not even the rest of the signals of
/// that event (`bytes_written` after `connected`, `state_changed` and `disconnected` after
/// `error_occurred`), and it closes when the slot returns.
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
    /// The TCP connection is established (not emitted by sockets a
    /// [`TcpServer`](super::TcpServer) accepted: they are connected from the start).
    pub connected: Signal<()>,
    /// A connection that had emitted `connected`, or was accepted by a
    /// [`TcpServer`](super::TcpServer), is closed. Emitted after `error_occurred` when that
    /// closed it, also when a slot there already connected again (each `connected` has its
    /// `disconnected`).
    pub disconnected: Signal<()>,
    /// New data can be read.
    pub ready_read: Signal<()>,
    /// This many bytes arrived (plaintext for TLS) in the last batch.
    pub bytes_received: Signal<usize>,
    /// This many bytes were handed to the kernel (plaintext for TLS, counted when its records left).
    /// Never emitted from inside [`write`](Self::write): bytes it hands over are reported on a
    /// later turn (several writes in one report), or before the close if one comes first (a
    /// graceful close made in a `bytes_written` slot ends on that later turn, after the report,
    /// so the slot hears of the last write's bytes too).
    pub bytes_written: Signal<usize>,
    /// The connection failed; the socket is already closed (`Unconnected`) when this is emitted,
    /// so a slot may connect again.
    pub error_occurred: Signal<SocketError>,
    /// The TLS handshake completed: [`is_encrypted`](Self::is_encrypted) is true from here on.
    /// Emitted by TLS connections only, an [`SslSocket`](crate::network::SslSocket)'s or one a
    /// TLS [`TcpServer`](super::TcpServer) accepted (whose `new_connection` hands the socket
    /// over before its handshake, so a slot connected there sees this). Never for plain TCP.
    pub handshake_completed: Signal<()>,
    /// The TLS handshake failed (certificate, alert, garbage, the peer closing, or the handshake
    /// timeout; a peer that closed or sent close_notify, such as one whose
    /// [`disconnect_from_host`](Self::disconnect_from_host) cancelled the handshake, is
    /// [`SocketError::ClosedByPeer`]): emitted just before `error_occurred` with the same
    /// error, the socket already closed (a slot that connects again here gets no
    /// `error_occurred` for the failed connection). Not emitted for an [`abort`](Self::abort)
    /// or a failure after the handshake.
    pub handshake_error: Signal<SocketError>,
    core: Rc<LoopCore>,
    inner: RefCell<Inner>,
    self_weak: Weak<TcpSocket>,
    /// How many calls from the loop into this socket are running, each holding one `Rc` of it
    /// for its length (see [`TcpSocket::held`]).
    loop_calls: Cell<usize>,
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
    /// How many holders asked the data sink's reading to stop for now (user code waits in a
    /// nested loop; see [`TcpSocket::hold_sink_reads`]): while any does, reading stops, so TCP
    /// flow control holds the peer back.
    sink_read_holds: u32,
    close_when_flushed: bool,
    /// Set by a graceful close once flushed: the close hands the stream to a lingering close
    /// (see `lingering`).
    linger: bool,
    announced: bool,
    /// Bytes `write` handed to the kernel whose `bytes_written` report is posted (one report for
    /// all of them; a close reports them first).
    unreported_written: usize,
    /// Counts the connections started (connects from Unconnected). A slot may abort and connect
    /// again while the socket still acts on the old connection (a read's end of stream, a posted
    /// write report): that outcome is dropped when the count has moved on.
    connection: u64,
    /// Boxed: only needed until connected, and every connected socket would carry its size.
    connecting: Option<Box<Connecting>>,
    /// Boxed with its buffers: a plain connection carries none of it.
    tls: Option<Box<TlsState>>,
    sink: Option<Weak<dyn DataSink>>,
    tls_observer: Option<Weak<dyn TlsObserver>>,
    no_delay: bool,
    keep_alive: bool,
    /// The socket of an [`SslSocket`](crate::network::SslSocket): it connects only through the
    /// SslSocket, which asks for TLS first (see [`TcpSocket::ensure_encrypted_if_ssl`]).
    ssl_owned: bool,
    connect_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    /// Boxed: rarely set, and an error is large.
    last_error: Option<Box<SocketError>>,
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
            handshake_completed: Signal::new(),
            handshake_error: Signal::new(),
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
                sink_read_holds: 0,
                close_when_flushed: false,
                linger: false,
                announced: false,
                unreported_written: 0,
                connection: 0,
                connecting: None,
                tls: None,
                sink: None,
                tls_observer: None,
                no_delay: true,
                keep_alive: false,
                ssl_owned: false,
                connect_timeout: None,
                handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
                last_error: None,
            }),
            self_weak: weak.clone(),
            loop_calls: Cell::new(0),
        })
    }

    /// Wraps a stream accepted by a [`TcpServer`](super::TcpServer) (server-side TLS when `tls` is set).
    pub(crate) fn from_accepted(
        core: Rc<LoopCore>,
        mut stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsSession>,
        handshake_timeout: Option<Duration>,
    ) -> Result<Rc<TcpSocket>, SocketError> {
        let socket = Self::with_state(core, SocketState::Connected);
        socket.inner.borrow_mut().handshake_timeout = handshake_timeout;
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
            // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: reported as IPv4.
            let mut addresses = Addresses::of(&stream, unmapped(peer));
            addresses.local = addresses.local.map(unmapped);
            inner.addresses = Some(addresses);
            inner.stream = Some(stream);
            inner.key = Some(key);
            inner.announced = true;
            inner.tls = tls.map(TlsState::new);
        }
        if socket.inner.borrow().tls.is_some() {
            socket.arm_handshake_timer(None);
        }
        Ok(socket)
    }

    /// The current state.
    pub fn state(&self) -> SocketState {
        self.inner.borrow().state
    }

    /// Resolves `host` (off the loop thread; IP literals skip the resolver, also IPv4 written
    /// as URLs allow, `127.1`, `0x7f.1` or `0177.0.0.1`, read as browsers read them; `localhost` is
    /// `::1` and `127.0.0.1` without asking the system, see
    /// [`DnsResolver::lookup`](crate::network::dns::DnsResolver::lookup)) and connects to the
    /// first address that answers, racing them (Happy Eyeballs, RFC 8305).
    ///
    /// The socket of an [`SslSocket`](crate::network::SslSocket) (its
    /// [`tcp_socket`](crate::network::SslSocket::tcp_socket), which `connect_weak` slots get)
    /// refuses to connect this way with [`SocketError::InvalidState`]: connect through the
    /// SslSocket, so the connection is encrypted. The same holds for the other connects.
    pub fn connect_to_host(&self, host: &str, port: u16) -> Result<(), SocketError> {
        self.ensure_unconnected()?;
        self.ensure_encrypted_if_ssl()?;
        // Also `127.1` or `0x7f.1` (an address as URLs read it): the address a TLS socket
        // verifies, whatever the system resolver would make of the string.
        let literal = resolve_literal(host).or_else(|| numeric_ipv4(host).map(IpAddr::V4));
        if let Some(ip) = literal {
            return self.connect_to_address(ip, port);
        }
        let resolver = DnsResolver::instance()
            .map_err(|_| SocketError::InvalidState("no event loop on this thread"))?;
        let connection = {
            let mut inner = self.inner.borrow_mut();
            inner.state = SocketState::HostLookup;
            inner.connection += 1;
            inner.forget_previous_connection();
            inner.connection
        };
        self.emit_held(&self.state_changed, &SocketState::HostLookup);
        // A slot aborted (and maybe connected again): this connect is over before its lookup.
        if self.connection() != connection {
            return Ok(());
        }
        match self.state() {
            SocketState::HostLookup => {}
            // The slot gave the addresses (`connect_to_addresses`, which replaces a lookup's
            // answer and leaves the connect timer to this connect): no lookup, the same timeout.
            SocketState::Connecting => {
                self.arm_connect_timer();
                return Ok(());
            }
            _ => return Ok(()),
        }
        self.arm_connect_timer();
        let weak = self.self_weak.clone();
        let id = resolver.lookup(host, move |result| {
            if let Some(socket) = weak.upgrade() {
                let _call = socket.loop_call();
                // Only for this connect: the socket may have been aborted and connected anew.
                if socket.connection() == connection {
                    socket.on_lookup(result, port);
                }
            }
        });
        self.inner.borrow_mut().connecting().lookup = Some(id);
        Ok(())
    }

    /// Connects to one address.
    pub fn connect_to_address(&self, ip: IpAddr, port: u16) -> Result<(), SocketError> {
        self.connect_to_addresses(&[SocketAddr::new(ip, port)])
    }

    /// Races connections to `addrs` (Happy Eyeballs: families interleaved starting with the
    /// first address's, next attempt after 250 ms or as soon as one fails); the first to
    /// connect wins.
    pub fn connect_to_addresses(&self, addrs: &[SocketAddr]) -> Result<(), SocketError> {
        if self.state() != SocketState::HostLookup {
            self.ensure_unconnected()?;
        }
        self.ensure_encrypted_if_ssl()?;
        if addrs.is_empty() {
            return Err(SocketError::InvalidAddress(
                "no address to connect to".into(),
            ));
        }
        let (was, superseded) = {
            let mut inner = self.inner.borrow_mut();
            let connecting = inner.connecting();
            let superseded = connecting.lookup.take();
            connecting.race = Some(ConnectRace::new(addrs));
            let was = std::mem::replace(&mut inner.state, SocketState::Connecting);
            if was == SocketState::Unconnected {
                inner.connection += 1;
                inner.forget_previous_connection();
            }
            (was, superseded)
        };
        // Called during a host lookup: these addresses replace its answer.
        if let (Some(id), Ok(resolver)) = (superseded, DnsResolver::instance()) {
            resolver.cancel(id);
        }
        if was != SocketState::Connecting {
            let connection = self.connection();
            self.emit_held(&self.state_changed, &SocketState::Connecting);
            // A slot aborted (and maybe connected again): no timer, no attempt for this one.
            if self.connection() != connection || self.state() != SocketState::Connecting {
                return Ok(());
            }
        }
        if was == SocketState::Unconnected {
            self.arm_connect_timer();
        }
        self.start_race();
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
        let (connected, direct, connection) = {
            let mut inner = self.inner.borrow_mut();
            match inner.state {
                SocketState::Unconnected => {
                    return Err(SocketError::InvalidState("write on an unconnected socket"));
                }
                SocketState::Closing => {
                    return Err(SocketError::InvalidState("write on a closing socket"));
                }
                SocketState::HostLookup | SocketState::Connecting
                    if inner
                        .connecting
                        .as_ref()
                        .is_some_and(|c| c.close_when_connected) =>
                {
                    return Err(SocketError::InvalidState(
                        "write after disconnect_from_host",
                    ));
                }
                _ => {}
            }
            // Plain TCP with nothing queued: the kernel takes the data straight from `data`
            // (usually all of it: no copy, no buffer). Otherwise it queues behind what waits.
            let connected = inner.state == SocketState::Connected;
            let direct = connected && inner.tls.is_none() && inner.write_buf.is_empty();
            if !direct {
                inner.write_buf.extend_from_slice(data);
            }
            (connected, direct, inner.connection)
        };
        if connected {
            let flushed = if direct {
                self.write_to_kernel(data)
            } else {
                self.flush_to_kernel()
            };
            // Flush now, but report (bytes_written / errors) from the loop, never from inside write().
            // Only to this connection: by then the socket may have been aborted and connected anew.
            match flushed {
                Ok((written, _)) if written > 0 && self.reports_written() => {
                    self.report_written_later(written);
                }
                Ok(_) => {}
                Err(e) => {
                    self.post_call(move |s| {
                        if s.connection() == connection {
                            s.fail_write(e);
                        }
                    });
                }
            }
        }
        Ok(data.len())
    }

    /// Bytes queued but not yet handed to the kernel (over TLS: not yet handed to the session,
    /// which may hold up to 64 KiB of encrypted records more).
    pub fn bytes_to_write(&self) -> usize {
        self.inner.borrow().write_buf.len()
    }

    /// Whether any of the bytes written so far still waits to reach the kernel: in the queue
    /// [`TcpSocket::bytes_to_write`] counts, or as TLS records inside the session (which take up
    /// to 64 KiB more once that queue is empty).
    pub(crate) fn has_unsent_output(&self) -> bool {
        let inner = self.inner.borrow();
        !inner.write_buf.is_empty() || inner.tls.as_ref().is_some_and(|t| t.session.wants_write())
    }

    /// Whether the kernel holds something from the peer that this socket has not read yet —
    /// data, its end of stream or a reset — found with one non-blocking peek (nothing is read).
    /// The HTTP pool asks before giving an idle connection a request: there should be nothing
    /// to read on it, and the server's close may wait there unseen while the loop has not
    /// turned since it came.
    pub(crate) fn has_unread_input(&self) -> bool {
        let inner = self.inner.borrow();
        inner.stream.as_ref().is_some_and(|stream| {
            !matches!(stream.peek(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
    }

    /// Closes gracefully: pending writes (and TLS close_notify) are flushed first, then the
    /// connection closes and `disconnected` is emitted. While still looking up or connecting,
    /// the attempt is cancelled when nothing is queued (`Unconnected` at once, no signal but
    /// `state_changed`). With bytes queued (written since `connect_to_host`) it goes on, as Qt's
    /// `disconnectFromHost` does: once connected the socket emits `connected`, sends them and
    /// closes through `Closing`. Until connected, further writes and `connect_to_host` are
    /// refused (`InvalidState`); a write from a `connected` slot is still sent before the close.
    /// A failed connect is `error_occurred` as ever, and [`abort`](Self::abort) still cancels at
    /// once.
    ///
    /// During a TLS handshake (`Connected`, not yet [`is_encrypted`](Self::is_encrypted)) it
    /// depends on what is queued. With bytes queued the close waits for the handshake (at most
    /// its timeout), then sends them and close_notify: both ends complete the handshake and
    /// close cleanly. With nothing queued it cancels the handshake, as a close while connecting
    /// does: close_notify goes out at once and this socket closes through `Closing` with
    /// `disconnected` and no error (neither `handshake_completed` nor `handshake_error`), while
    /// the peer's handshake fails: a kdnet peer reports `handshake_error` and `error_occurred`
    /// with [`SocketError::ClosedByPeer`], other TLS stacks their own handshake error (rustls:
    /// `InvalidData`, an unexpected close_notify). Write something first, or close from
    /// [`handshake_completed`](Self::handshake_completed), for the peer to see a clean end.
    ///
    /// Closing the descriptor then while the peer's data waits unread (reading was paused at
    /// the read buffer limit, or more arrived), or before more of it arrives, would make the
    /// kernel reset the connection and drop the written bytes it has not sent yet; instead the
    /// descriptor lingers: what the peer still sends is read and discarded until it closes too
    /// (at once if its end of stream was already read), is quiet for 2 s, or 30 s have passed
    /// (as web servers' lingering close). The socket is closed all the same.
    pub fn disconnect_from_host(&self) {
        let state = self.state();
        match state {
            SocketState::Unconnected | SocketState::Closing => {}
            SocketState::HostLookup | SocketState::Connecting => {
                let mut inner = self.inner.borrow_mut();
                if inner.write_buf.is_empty() {
                    drop(inner);
                    self.abort();
                } else {
                    inner.connecting().close_when_connected = true;
                }
            }
            SocketState::Connected => self.close_gracefully(),
        }
    }

    /// Connected → Closing: queued writes, then TLS close_notify, are flushed, then the socket
    /// closes (`flush` finishes the close; it queues close_notify once every queued byte is in
    /// the session, since the peer discards whatever follows close_notify).
    pub(super) fn close_gracefully(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.state = SocketState::Closing;
            inner.close_when_flushed = true;
        }
        self.emit_held(&self.state_changed, &SocketState::Closing);
        self.flush();
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

    /// Closes at once, discarding pending writes (and the `bytes_written` report still due for
    /// bytes the kernel took).
    pub fn abort(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.sink = None;
            inner.unreported_written = 0;
            // Even from a slot of a graceful close's last report: at once, no lingering.
            inner.linger = false;
        }
        self.close_with(None);
    }

    /// The connected peer's address (still known once closed, until the next connect).
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

    /// Fails the connect with a timeout after `timeout` (default none): one budget for the name
    /// lookup, all connection attempts and, for TLS, the handshake (as curl's connect timeout
    /// and reqwest's `connect_timeout`), reported as
    /// [`SocketError::Timeout`] with the phase it ran out in. The handshake is also limited by
    /// its own timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`]), whichever ends first. A timeout too
    /// large to be a point in time, such as `Duration::MAX`, means none. Applies from the next
    /// connect.
    pub fn set_connect_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().connect_timeout = timeout;
    }

    // ---- crate-internal API ------------------------------------------------------------------

    /// Which connection the socket is on (see `Inner::connection`).
    pub(super) fn connection(&self) -> u64 {
        self.inner.borrow().connection
    }

    pub(crate) fn set_data_sink(&self, sink: Option<Weak<dyn DataSink>>) {
        self.inner.borrow_mut().sink = sink;
    }

    pub(crate) fn set_tls_observer(&self, observer: Weak<dyn TlsObserver>) {
        self.inner.borrow_mut().tls_observer = Some(observer);
    }

    /// Marks this as an [`SslSocket`](crate::network::SslSocket)'s socket (see
    /// [`ensure_encrypted_if_ssl`](Self::ensure_encrypted_if_ssl)).
    pub(crate) fn set_ssl_owned(&self) {
        self.inner.borrow_mut().ssl_owned = true;
    }

    /// Refuses a connect of an SslSocket's socket that did not come through the SslSocket (no
    /// TLS was asked for): it would be made, and written to, in plain text.
    fn ensure_encrypted_if_ssl(&self) -> Result<(), SocketError> {
        let inner = self.inner.borrow();
        let tls_asked = inner
            .connecting
            .as_ref()
            .is_some_and(|c| c.tls_pending.is_some());
        if inner.ssl_owned && !tls_asked {
            return Err(SocketError::InvalidState(
                "this is an SslSocket's socket: connect through the SslSocket, or the connection \
                 would not be encrypted",
            ));
        }
        Ok(())
    }

    /// Makes the next connect a TLS client connection to `host`.
    pub(crate) fn enable_client_tls(&self, config: Arc<rustls::ClientConfig>, host: &str) {
        self.enable_client_tls_for(config, Some(host));
    }

    /// [`enable_client_tls`](Self::enable_client_tls) verified against `host`, or with `None`
    /// against the IP address of the attempt that wins the connect race.
    pub(crate) fn enable_client_tls_for(
        &self,
        config: Arc<rustls::ClientConfig>,
        host: Option<&str>,
    ) {
        self.inner.borrow_mut().connecting().tls_pending =
            Some(Box::new((config, host.map(str::to_string))));
    }

    pub(crate) fn set_handshake_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().handshake_timeout = timeout;
    }

    /// The TLS peer's certificate chain (DER), leaf first: the server's for a client, the
    /// client's for a connection accepted by a server that asks for client certificates
    /// ([`TlsServerConfig::with_client_certificates`](crate::network::TlsServerConfig::with_client_certificates)).
    /// Empty for plain TCP and before the peer presented one; kept after the connection closes,
    /// until the next connect.
    pub fn peer_certificate_chain(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.with_tls(|t| t.peer_certificates()).unwrap_or_default()
    }

    /// The ALPN protocol the TLS handshake agreed on, if any (`None` for plain TCP).
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.with_tls(|t| t.alpn_protocol()).flatten()
    }

    pub(crate) fn with_tls<R>(&self, f: impl FnOnce(&TlsSession) -> R) -> Option<R> {
        self.inner.borrow().tls.as_deref().map(|t| f(&t.session))
    }

    /// Whether this is a TLS connection (an [`SslSocket`](crate::network::SslSocket)'s, or one
    /// accepted by a TLS [`TcpServer`](super::TcpServer)) that is up with its handshake
    /// completed. False for plain TCP, during the handshake and once closed.
    pub fn is_encrypted(&self) -> bool {
        let inner = self.inner.borrow();
        matches!(inner.state, SocketState::Connected | SocketState::Closing)
            && inner
                .tls
                .as_ref()
                .is_some_and(|t| !t.session.is_handshaking())
    }
}

impl Inner {
    /// A new connect starts: the ends, the TLS session and the unread bytes of the connection
    /// before are over (they stay readable after a close until then).
    fn forget_previous_connection(&mut self) {
        self.addresses = None;
        self.tls = None;
        self.read_buf = BytesMut::new();
        self.linger = false;
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        self.inner.get_mut().release_loop_resources(&self.core);
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
