//! [`TcpServer`]: listening for TCP (optionally TLS) connections on the event loop.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use mio::Interest;
use mio::net::TcpListener;

use super::{DEFAULT_HANDSHAKE_TIMEOUT, TcpSocket};
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, Readiness, ReadyHandler, SourceKey, TimerKey};
use crate::network::dns::{is_localhost, resolve_literal};
use crate::network::error::{SocketError, SocketOperation};
use crate::network::tls::session::TlsSession;

/// Connections accepted per readiness event before yielding to other sources.
const ACCEPT_BUDGET_PER_TURN: usize = 256;
/// Pause after an accept error such as EMFILE before trying again: the pending connection stays
/// readable, so retrying at once would spin the loop at 100% CPU.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Default listen backlog (KDNetwork's).
pub const DEFAULT_BACKLOG: i32 = 128;

/// Whether a [`TcpServer`] listens (KDNetwork `TcpServer::State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// Not listening.
    NotListening,
    /// Accepting connections.
    Listening,
}

/// Accepts TCP connections on the current thread's loop (KDNetwork `TcpServer`).
///
/// Each accepted connection is handed over through [`new_connection`](Self::new_connection) as a
/// connected [`TcpSocket`]; keep the `Rc` to keep the connection (a connection nobody keeps is
/// closed). With [`set_tls_config`](Self::set_tls_config) the sockets speak TLS (their reads and
/// writes are plaintext). Such a socket is handed over before its handshake: it emits
/// [`handshake_completed`](TcpSocket::handshake_completed) once the client is through (writes
/// made earlier wait for it), or [`handshake_error`](TcpSocket::handshake_error) then
/// `error_occurred` when the handshake fails; a client ending the stream without close_notify
/// arrives as `error_occurred`. [`close`](Self::close), or dropping
/// the server, stops accepting at once, also from a `new_connection` slot; connections waiting in
/// the backlog are then refused.
pub struct TcpServer {
    /// A connection was accepted.
    pub new_connection: Signal<Rc<TcpSocket>>,
    /// Listening or accepting failed.
    pub error_occurred: Signal<SocketError>,
    /// `listen` succeeded.
    pub listening_started: Signal<()>,
    /// The state changed.
    pub state_changed: Signal<ServerState>,
    core: Rc<LoopCore>,
    inner: RefCell<ServerInner>,
    self_weak: Weak<TcpServer>,
}

struct ServerInner {
    listener: Option<TcpListener>,
    key: Option<SourceKey>,
    address: Option<SocketAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    backlog: i32,
    /// Set while accepting is paused after an accept error.
    retry: Option<TimerKey>,
    /// For the TLS handshake of each accepted connection.
    handshake_timeout: Option<Duration>,
}

impl TcpServer {
    /// A server that is not listening yet.
    pub fn new() -> Result<Rc<TcpServer>, LoopError> {
        let core = LoopCore::current()?;
        Ok(Rc::new_cyclic(|weak| TcpServer {
            new_connection: Signal::new(),
            error_occurred: Signal::new(),
            listening_started: Signal::new(),
            state_changed: Signal::new(),
            core,
            inner: RefCell::new(ServerInner {
                listener: None,
                key: None,
                address: None,
                tls: None,
                backlog: DEFAULT_BACKLOG,
                retry: None,
                handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            }),
            self_weak: weak.clone(),
        }))
    }

    /// Listens on `host_or_ip` (an IP literal, IPv6 optionally in brackets, `localhost`, or a
    /// name resolved synchronously)
    /// and `port` (0 picks a free port; see [`server_port`](Self::server_port)).
    pub fn listen(&self, host_or_ip: &str, port: u16) -> Result<(), SocketError> {
        let host = host_or_ip;
        let addr = if let Some(ip) = resolve_literal(host) {
            SocketAddr::new(ip, port)
        } else if host.starts_with('[') || host.ends_with(']') {
            return Err(SocketError::InvalidAddress(format!(
                "{host:?}: brackets are only allowed around a whole IPv6 address"
            )));
        } else if is_localhost(host) {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        } else {
            (host, port)
                .to_socket_addrs()
                .map_err(|e| SocketError::Lookup {
                    host: host.to_string(),
                    reason: e.to_string(),
                })?
                .next()
                .ok_or_else(|| SocketError::Lookup {
                    host: host.to_string(),
                    reason: "no addresses".into(),
                })?
        };
        self.listen_on(addr)
    }

    /// Listens on `addr`. An IPv6 address listens for IPv6 only (`IPV6_V6ONLY`, as Qt's
    /// `AnyIPv6`): to accept both families, listen on `0.0.0.0` and `::` with two servers.
    /// Fails with [`SocketError::InvalidState`] while already listening (close first).
    pub fn listen_on(&self, addr: SocketAddr) -> Result<(), SocketError> {
        if self.is_listening() {
            return Err(SocketError::InvalidState("server is already listening"));
        }
        let backlog = self.inner.borrow().backlog;
        let mut listener = bind_listener(addr, backlog)?;
        let handler: Weak<dyn ReadyHandler> = self.self_weak.clone();
        let key = self
            .core
            .register(&mut listener, Interest::READABLE, handler)
            .map_err(|e| SocketError::io(SocketOperation::Listen, e))?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.address = listener.local_addr().ok();
            inner.listener = Some(listener);
            inner.key = Some(key);
        }
        log::debug!("listening on {:?}", self.server_address());
        self.state_changed.emit(&ServerState::Listening);
        self.listening_started.emit(&());
        Ok(())
    }

    /// Stops listening; accepted connections stay open.
    pub fn close(&self) {
        let closed = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            if let (Some(listener), Some(key)) = (inner.listener.as_mut(), inner.key.take()) {
                self.core.deregister(listener, key);
            }
            if let Some(retry) = inner.retry.take() {
                self.core.timer_remove(retry);
            }
            inner.listener.take().is_some()
        };
        if closed {
            self.state_changed.emit(&ServerState::NotListening);
        }
    }

    /// Whether the server listens.
    pub fn is_listening(&self) -> bool {
        self.inner.borrow().listener.is_some()
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        if self.is_listening() {
            ServerState::Listening
        } else {
            ServerState::NotListening
        }
    }

    /// The address listened on.
    pub fn server_address(&self) -> Option<SocketAddr> {
        self.inner.borrow().address.filter(|_| self.is_listening())
    }

    /// The port listened on (the real one when 0 was asked for).
    pub fn server_port(&self) -> Option<u16> {
        self.server_address().map(|a| a.port())
    }

    /// Makes accepted connections TLS server connections with `config`.
    pub fn set_tls_config(&self, config: Arc<rustls::ServerConfig>) {
        self.inner.borrow_mut().tls = Some(config);
    }

    /// Limits the TLS handshake of connections accepted from now on (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`], 30 s; `None` = no limit): a client that has not completed
    /// it by then gets its socket closed with `error_occurred`
    /// ([`SocketError::Timeout`]`(`[`TimeoutPhase::TlsHandshake`](crate::network::TimeoutPhase::TlsHandshake)`)`).
    /// Without [`set_tls_config`](Self::set_tls_config) it has no effect.
    pub fn set_handshake_timeout(&self, timeout: Option<Duration>) {
        self.inner.borrow_mut().handshake_timeout = timeout;
    }

    /// The listen backlog for the next `listen` (default [`DEFAULT_BACKLOG`]).
    pub fn set_backlog(&self, backlog: i32) {
        self.inner.borrow_mut().backlog = backlog.max(0);
    }

    /// Whether someone besides the caller that is running this server's callback (the loop's
    /// dispatch, or the retry timer) still holds the server: a `new_connection` slot may have
    /// dropped the last `Rc`, and then no further connection is handed out.
    fn still_owned(&self) -> bool {
        self.self_weak.strong_count() > 1
    }

    fn accept_pending(&self) {
        for _ in 0..ACCEPT_BUDGET_PER_TURN {
            if !self.still_owned() {
                return;
            }
            let accepted = {
                let inner = self.inner.borrow();
                let Some(listener) = inner.listener.as_ref() else {
                    return;
                };
                listener.accept()
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (tls, handshake_timeout) = {
                        let inner = self.inner.borrow();
                        (inner.tls.clone(), inner.handshake_timeout)
                    };
                    let socket = tls.map(TlsSession::server).transpose().and_then(|tls| {
                        TcpSocket::from_accepted(
                            Rc::clone(&self.core),
                            stream,
                            peer,
                            tls,
                            handshake_timeout,
                        )
                    });
                    match socket {
                        Ok(socket) => self.new_connection.emit(&socket),
                        Err(e) => self.error_occurred.emit(&e),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A peer that connected and reset before it was accepted (some systems report
                // it here): nothing to hand over and nothing wrong with the listener.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // E.g. out of descriptors: report, and try again after a pause (the next
                    // readiness events are ignored until then).
                    let weak = self.self_weak.clone();
                    let retry = self.core.call_after(ACCEPT_RETRY_DELAY, move || {
                        if let Some(server) = weak.upgrade() {
                            server.inner.borrow_mut().retry = None;
                            server.accept_pending();
                        }
                    });
                    self.inner.borrow_mut().retry = Some(retry);
                    self.error_occurred
                        .emit(&SocketError::io(SocketOperation::Accept, e));
                    return;
                }
            }
        }
        // Budget used up: re-arm so the rest is accepted next turn.
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let (Some(listener), Some(key)) = (inner.listener.as_mut(), inner.key) {
            if let Err(e) = self.core.reregister(listener, key, Interest::READABLE) {
                log::warn!("re-arming listener: {e}");
            }
        }
    }
}

fn bind_listener(addr: SocketAddr, backlog: i32) -> Result<TcpListener, SocketError> {
    use socket2::{Domain, Socket, Type};
    let configure = |e| SocketError::io(SocketOperation::Configure, e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(configure)?;
    socket.set_reuse_address(true).map_err(configure)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(configure)?;
    }
    socket.set_nonblocking(true).map_err(configure)?;
    socket
        .bind(&addr.into())
        .map_err(|e| SocketError::io(SocketOperation::Bind, e))?;
    socket
        .listen(backlog)
        .map_err(|e| SocketError::io(SocketOperation::Listen, e))?;
    Ok(TcpListener::from_std(socket.into()))
}

impl ReadyHandler for TcpServer {
    fn on_ready(&self, _readiness: Readiness) {
        if self.inner.borrow().retry.is_none() {
            self.accept_pending();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if let (Some(listener), Some(key)) = (inner.listener.as_mut(), inner.key.take()) {
            self.core.deregister(listener, key);
        }
        if let Some(retry) = inner.retry.take() {
            self.core.timer_remove(retry);
        }
    }
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("address", &self.server_address())
            .finish()
    }
}
