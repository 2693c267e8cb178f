//! [`TcpServer`]: listening for TCP (optionally TLS) connections on the event loop.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use mio::Interest;
use mio::net::TcpListener;

use super::{DEFAULT_HANDSHAKE_TIMEOUT, TcpSocket};
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, Readiness, ReadyHandler, SourceKey, TimerKey};
use crate::network::dns::{ascii_host, check_host_name, is_localhost, resolve_literal};
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
    /// Listening or accepting failed: a failed [`listen`](Self::listen) or
    /// [`listen_on`](Self::listen_on) (the error its `Err` also returns, emitted before it
    /// returns, as KDNetwork's `setError` emitted `errorOccurred`), an accept error such as
    /// running out of descriptors (accepting pauses for 100 ms, then goes on), or an accepted
    /// connection that could not be set up.
    pub error_occurred: Signal<SocketError>,
    /// `listen` succeeded (after `state_changed(Listening)`; not emitted when a slot of that
    /// closed the server again).
    pub listening_started: Signal<()>,
    /// The state changed.
    pub state_changed: Signal<ServerState>,
    core: Rc<LoopCore>,
    inner: RefCell<ServerInner>,
    self_weak: Weak<TcpServer>,
}

/// One listening socket (a server listens on several when its host has several addresses).
struct Listener {
    listener: TcpListener,
    key: SourceKey,
    address: SocketAddr,
}

struct ServerInner {
    /// Empty while not listening.
    listeners: Vec<Listener>,
    /// Counts the listens, so a listen can tell whether a slot closed (and maybe listened
    /// again) while it announced itself.
    listens: u64,
    ipv6_only: bool,
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
                listeners: Vec::new(),
                listens: 0,
                ipv6_only: false,
                tls: None,
                backlog: DEFAULT_BACKLOG,
                retry: None,
                handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            }),
            self_weak: weak.clone(),
        }))
    }

    /// Listens on `host_or_ip` and `port` (0 picks a free port; see
    /// [`server_port`](Self::server_port)).
    ///
    /// `host_or_ip` is an IP literal (IPv6 optionally in brackets), `localhost`, or a name
    /// resolved synchronously; a malformed one (empty, a port glued on, …) fails with
    /// [`SocketError::InvalidAddress`] without a lookup, as
    /// [`DnsResolver::lookup`](crate::network::dns::DnsResolver::lookup) does. A name listens
    /// on every address it has, on one port: `localhost` (and `*.localhost`) on `::1` and `127.0.0.1`, so clients of either family
    /// reach the server; addresses whose family the machine lacks are skipped (at least one
    /// must work). `::` listens on all interfaces for both families (only IPv4 on a machine
    /// without IPv6) and `0.0.0.0` for IPv4 only (see [`listen_on`](Self::listen_on)).
    ///
    /// A failure (a malformed host, a failed lookup, no address that can be bound, the port in
    /// use, [`SocketError::InvalidState`] while already listening) is returned and also emitted
    /// as [`error_occurred`](Self::error_occurred) before `listen` returns (KDNetwork reported
    /// it there, and a failed lookup only there). The state does not change: a server that was
    /// not listening stays [`ServerState::NotListening`] (no `state_changed`), one that was
    /// listening goes on. A slot may listen again; the `Err` still reports the failed attempt.
    pub fn listen(&self, host_or_ip: &str, port: u16) -> Result<(), SocketError> {
        let result = self.resolve_and_listen(host_or_ip, port);
        self.report(result)
    }

    fn resolve_and_listen(&self, host_or_ip: &str, port: u16) -> Result<(), SocketError> {
        // An internationalized name is resolved in its IDNA form.
        let ascii = ascii_host(host_or_ip)?;
        let host = &*ascii;
        let addrs: Vec<SocketAddr> = if let Some(ip) = resolve_literal(host) {
            vec![SocketAddr::new(ip, port)]
        } else if host.starts_with('[') || host.ends_with(']') {
            return Err(SocketError::InvalidAddress(format!(
                "{host:?}: brackets are only allowed around a whole IPv6 address"
            )));
        } else if let Err(e) = check_host_name(host).or_else(|e| {
            // An IPv6 address with a zone id (`fe80::1%eth0`): getaddrinfo reads it.
            if host.contains('%') && host.contains(':') {
                Ok(())
            } else {
                Err(e)
            }
        }) {
            return Err(e);
        } else if is_localhost(host) {
            LOCALHOST_LISTEN
                .map(|ip| SocketAddr::new(ip, port))
                .to_vec()
        } else {
            // Whole socket addresses: a link-local answer keeps its scope id.
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let found = (host, port)
                .to_socket_addrs()
                .map_err(|e| SocketError::Lookup {
                    host: host.to_string(),
                    reason: e.to_string(),
                })?;
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            if addrs.is_empty() {
                return Err(SocketError::Lookup {
                    host: host.to_string(),
                    reason: "no addresses".into(),
                });
            }
            addrs
        };
        self.listen_on_all(&addrs)
    }

    /// Listens on `addr`.
    ///
    /// The unspecified IPv6 address `::` listens for IPv6 and IPv4 (IPv4 clients are reported
    /// with their IPv4 addresses), as Qt's `QHostAddress::Any`, Go and Node do, unless
    /// [`set_ipv6_only`](Self::set_ipv6_only) asks for IPv6 only (Qt's `AnyIPv6`); `0.0.0.0`
    /// listens for IPv4 only. On a machine without IPv6 (no IPv6 socket can be made, or `::`
    /// cannot be bound) the dual-stack `::` listens on `0.0.0.0` instead, as Qt's `Any` does
    /// ([`server_address`](Self::server_address) says so); any other failure, such as the port
    /// being in use, is an error. Fails with [`SocketError::InvalidState`] while already
    /// listening (close first). A failure is also emitted as
    /// [`error_occurred`](Self::error_occurred), and leaves the state as it was, as for
    /// [`listen`](Self::listen).
    pub fn listen_on(&self, addr: SocketAddr) -> Result<(), SocketError> {
        let result = self.listen_on_all(&[addr]);
        self.report(result)
    }

    /// Emits a failed listen's error as `error_occurred`, and returns the result.
    fn report(&self, result: Result<(), SocketError>) -> Result<(), SocketError> {
        if let Err(e) = &result {
            self.error_occurred.emit(e);
        }
        result
    }

    /// Listens on each of `addrs` (all with one port); an address whose family the machine
    /// lacks is skipped when there are others.
    fn listen_on_all(&self, addrs: &[SocketAddr]) -> Result<(), SocketError> {
        let port = addrs.first().map_or(0, SocketAddr::port);
        if self.is_listening() {
            return Err(SocketError::InvalidState("server is already listening"));
        }
        let (backlog, ipv6_only) = {
            let inner = self.inner.borrow();
            (inner.backlog, inner.ipv6_only)
        };
        // With port 0 the first listener picks the port and the others take the same one; if
        // it is taken on another address, pick again.
        let mut attempts = if port == 0 && addrs.len() > 1 { 8 } else { 1 };
        let bound = loop {
            attempts -= 1;
            match bind_all(addrs, backlog, ipv6_only, &mut bind_listener) {
                Err(e) if attempts > 0 && is_addr_in_use(&e) => continue,
                result => break result?,
            }
        };
        let mut listeners: Vec<Listener> = Vec::with_capacity(bound.len());
        for mut listener in bound {
            let handler: Weak<dyn ReadyHandler> = self.self_weak.clone();
            let registered = listener
                .local_addr()
                .and_then(|address| {
                    let key = self
                        .core
                        .register(&mut listener, Interest::READABLE, handler)?;
                    Ok((key, address))
                })
                .map_err(|e| SocketError::io(SocketOperation::Listen, e));
            match registered {
                Ok((key, address)) => listeners.push(Listener {
                    listener,
                    key,
                    address,
                }),
                Err(e) => {
                    for mut l in listeners {
                        self.core.deregister(&mut l.listener, l.key);
                    }
                    return Err(e);
                }
            }
        }
        let listen = {
            let mut inner = self.inner.borrow_mut();
            inner.listeners = listeners;
            inner.listens += 1;
            inner.listens
        };
        log::debug!("listening on {:?}", self.server_addresses());
        self.state_changed.emit(&ServerState::Listening);
        // Unless a `state_changed` slot closed the server (and maybe listened anew) meanwhile.
        let still = self.is_listening() && self.inner.borrow().listens == listen;
        if still {
            self.listening_started.emit(&());
        }
        Ok(())
    }

    /// Stops listening; accepted connections stay open.
    pub fn close(&self) {
        let closed = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            if let Some(retry) = inner.retry.take() {
                self.core.timer_remove(retry);
            }
            let listeners = std::mem::take(&mut inner.listeners);
            let closed = !listeners.is_empty();
            for mut l in listeners {
                self.core.deregister(&mut l.listener, l.key);
            }
            closed
        };
        if closed {
            self.state_changed.emit(&ServerState::NotListening);
        }
    }

    /// Whether the server listens.
    pub fn is_listening(&self) -> bool {
        !self.inner.borrow().listeners.is_empty()
    }

    /// The state.
    pub fn state(&self) -> ServerState {
        if self.is_listening() {
            ServerState::Listening
        } else {
            ServerState::NotListening
        }
    }

    /// The address listened on (the first one when [`listen`](Self::listen) listens on
    /// several: see [`server_addresses`](Self::server_addresses)).
    pub fn server_address(&self) -> Option<SocketAddr> {
        self.inner.borrow().listeners.first().map(|l| l.address)
    }

    /// Every address listened on (all with one port); empty while not listening.
    pub fn server_addresses(&self) -> Vec<SocketAddr> {
        self.inner
            .borrow()
            .listeners
            .iter()
            .map(|l| l.address)
            .collect()
    }

    /// Whether the next listen on `::` accepts IPv6 clients only (`IPV6_V6ONLY`, Qt's
    /// `AnyIPv6`); by default (false) it accepts IPv4 clients too.
    pub fn set_ipv6_only(&self, ipv6_only: bool) {
        self.inner.borrow_mut().ipv6_only = ipv6_only;
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

    /// The listen backlog for the next `listen` (default [`DEFAULT_BACKLOG`]): how many
    /// connections the kernel holds for the server until the loop accepts them. A burst larger
    /// than that arriving before the loop's next turn is not refused but dropped by the kernel
    /// (Linux), and those clients wait for TCP to retransmit, from a second up to a minute when the
    /// loop stays busy: raise it for servers that expect bursts (the kernel caps it at
    /// `net.core.somaxconn`).
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
        let mut budget = ACCEPT_BUDGET_PER_TURN;
        let mut index = 0;
        // Each listener in turn until it would block; a slot may close the server (the list
        // empties) or close and listen again (the list is new: accepting from it is harmless).
        while budget > 0 {
            budget -= 1;
            if !self.still_owned() {
                return;
            }
            let accepted = {
                let inner = self.inner.borrow();
                let Some(listener) = inner.listeners.get(index) else {
                    return;
                };
                listener.listener.accept()
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => index += 1,
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
        for l in inner.listeners.iter_mut() {
            if let Err(e) = self
                .core
                .reregister(&mut l.listener, l.key, Interest::READABLE)
            {
                log::warn!("re-arming listener: {e}");
            }
        }
    }
}

/// What `listen("localhost")` listens on: both loopbacks, in the resolver's order.
const LOCALHOST_LISTEN: [IpAddr; 2] = [
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
];

/// An IPv4 address seen through a dual-stack IPv6 socket (`::ffff:a.b.c.d`), as IPv4.
pub(super) fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn is_addr_in_use(e: &SocketError) -> bool {
    e.io_kind() == Some(io::ErrorKind::AddrInUse)
}

/// Whether binding failed because the machine lacks the address or its family: no socket of
/// that family can be made (EAFNOSUPPORT: a kernel without IPv6), or the address cannot be
/// bound (EADDRNOTAVAIL: not configured here, such as `::1` with IPv6 disabled). Not any other
/// failure: a socket that cannot be made for want of descriptors or memory is an error.
fn family_unavailable(e: &SocketError) -> bool {
    match e {
        SocketError::Io {
            operation: SocketOperation::Configure,
            source,
        } if source.raw_os_error() == Some(crate::foundation::EAFNOSUPPORT) => true,
        _ => e.io_kind() == Some(io::ErrorKind::AddrNotAvailable),
    }
}

/// Binds a listener on each of `addrs`, all on their (common) port, or the one the first gets
/// when it is 0, skipping addresses whose family is unavailable when there is more than one.
/// The dual-stack `::` alone falls back to `0.0.0.0` on a machine without IPv6 (as Qt's
/// `QHostAddress::Any` does); not with `ipv6_only` (Qt's `AnyIPv6`).
fn bind_all(
    addrs: &[SocketAddr],
    backlog: i32,
    ipv6_only: bool,
    bind: &mut dyn FnMut(SocketAddr, i32, bool) -> Result<TcpListener, SocketError>,
) -> Result<Vec<TcpListener>, SocketError> {
    let mut port = addrs.first().map_or(0, SocketAddr::port);
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(addrs.len());
    let mut first_error = None;
    for &addr in addrs {
        let mut addr = addr;
        addr.set_port(port);
        match bind(addr, backlog, ipv6_only) {
            Ok(listener) => {
                if port == 0 {
                    port = listener
                        .local_addr()
                        .map_err(|e| SocketError::io(SocketOperation::Listen, e))?
                        .port();
                }
                listeners.push(listener);
            }
            Err(e)
                if addrs.len() == 1
                    && addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                    && !ipv6_only
                    && family_unavailable(&e) =>
            {
                log::debug!("no IPv6 ({e}): listening on 0.0.0.0 instead of ::");
                let any = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
                return Ok(vec![bind(any, backlog, ipv6_only)?]);
            }
            Err(e) if addrs.len() > 1 && family_unavailable(&e) => {
                log::debug!("not listening on {addr}: {e}");
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match first_error {
        Some(e) if listeners.is_empty() => Err(e),
        _ => Ok(listeners),
    }
}

fn bind_listener(
    addr: SocketAddr,
    backlog: i32,
    ipv6_only: bool,
) -> Result<TcpListener, SocketError> {
    use socket2::{Domain, Socket, Type};
    let configure = |e| SocketError::io(SocketOperation::Configure, e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(configure)?;
    socket.set_reuse_address(true).map_err(configure)?;
    if addr.is_ipv6() {
        // Set either way: the system default (Linux's net.ipv6.bindv6only) must not decide.
        socket.set_only_v6(ipv6_only).map_err(configure)?;
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
        for l in inner.listeners.iter_mut() {
            self.core.deregister(&mut l.listener, l.key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    const ANY_V6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

    /// A binder for a machine without IPv6: every IPv6 address fails as `fail` says (the real
    /// OS error and the step it comes from), IPv4 binds for real.
    fn without_ipv6(
        fail: fn() -> SocketError,
    ) -> impl FnMut(SocketAddr, i32, bool) -> Result<TcpListener, SocketError> {
        move |addr, backlog, ipv6_only| {
            if addr.is_ipv6() {
                Err(fail())
            } else {
                bind_listener(addr, backlog, ipv6_only)
            }
        }
    }

    /// What socket(AF_INET6, …) fails with on a kernel without IPv6 (`ipv6.disable=1`).
    fn no_ipv6_family() -> SocketError {
        SocketError::io(
            SocketOperation::Configure,
            io::Error::from_raw_os_error(crate::foundation::EAFNOSUPPORT),
        )
    }

    /// What bind fails with when the address cannot be had here.
    fn ipv6_address_unavailable() -> SocketError {
        SocketError::io(
            SocketOperation::Bind,
            io::Error::from(io::ErrorKind::AddrNotAvailable),
        )
    }

    fn in_use() -> SocketError {
        SocketError::io(
            SocketOperation::Bind,
            io::Error::from(io::ErrorKind::AddrInUse),
        )
    }

    /// socket() out of descriptors (EMFILE is 24 on every Unix kdnet supports).
    fn out_of_descriptors() -> SocketError {
        SocketError::io(SocketOperation::Configure, io::Error::from_raw_os_error(24))
    }

    fn bound(listeners: &[TcpListener]) -> Vec<SocketAddr> {
        listeners.iter().map(|l| l.local_addr().unwrap()).collect()
    }

    /// Without IPv6, `::` (dual stack, Qt's `QHostAddress::Any`) listens on `0.0.0.0` instead,
    /// whether the IPv6 socket cannot be made or `::` cannot be bound; an IPv4 client gets in.
    #[test]
    fn listening_on_the_dual_stack_any_address_falls_back_to_ipv4_without_ipv6() {
        for fail in [
            no_ipv6_family as fn() -> SocketError,
            ipv6_address_unavailable,
        ] {
            let listeners = bind_all(
                &[SocketAddr::new(ANY_V6, 0)],
                DEFAULT_BACKLOG,
                false,
                &mut without_ipv6(fail),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", fail()));
            let addrs = bound(&listeners);
            assert_eq!(addrs.len(), 1);
            assert_eq!(addrs[0].ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_ne!(addrs[0].port(), 0);
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, addrs[0].port())).unwrap();
        }
    }

    /// The fallback keeps the port asked for.
    #[test]
    fn the_ipv4_fallback_keeps_the_port() {
        let free = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let listeners = bind_all(
            &[SocketAddr::new(ANY_V6, port)],
            DEFAULT_BACKLOG,
            false,
            &mut without_ipv6(no_ipv6_family),
        )
        .unwrap();
        assert_eq!(
            bound(&listeners),
            [SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)]
        );
    }

    /// Only a missing IPv6 falls back: a port in use, or a socket() out of descriptors, is the
    /// error it is; so is `::` with `set_ipv6_only(true)` (Qt's `AnyIPv6` does not fall
    /// back), and an IPv6 address other than `::`.
    #[test]
    fn other_failures_and_other_addresses_do_not_fall_back() {
        let any = [SocketAddr::new(ANY_V6, 0)];
        for (fail, kind) in [
            (in_use as fn() -> SocketError, io::ErrorKind::AddrInUse),
            (out_of_descriptors, io::Error::from_raw_os_error(24).kind()),
        ] {
            let e = bind_all(&any, DEFAULT_BACKLOG, false, &mut without_ipv6(fail)).unwrap_err();
            assert_eq!(e.io_kind(), Some(kind), "{e}");
        }
        let e = bind_all(
            &any,
            DEFAULT_BACKLOG,
            true,
            &mut without_ipv6(no_ipv6_family),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), no_ipv6_family().to_string());
        for ip in [
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
        ] {
            let addr = SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, 0));
            for fail in [
                no_ipv6_family as fn() -> SocketError,
                ipv6_address_unavailable,
            ] {
                let e =
                    bind_all(&[addr], DEFAULT_BACKLOG, false, &mut without_ipv6(fail)).unwrap_err();
                assert_eq!(e.to_string(), fail().to_string());
            }
        }
    }

    /// Only `::` alone falls back to `0.0.0.0`: in a list of addresses a missing `::` is
    /// skipped like any address of a missing family, and the others are listened on as they
    /// are (not replaced by all interfaces).
    #[test]
    fn the_any_address_in_a_list_is_skipped_without_ipv6_not_replaced() {
        for addrs in [
            [
                SocketAddr::new(ANY_V6, 0),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            ],
            [
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                SocketAddr::new(ANY_V6, 0),
            ],
        ] {
            let listeners = bind_all(
                &addrs,
                DEFAULT_BACKLOG,
                false,
                &mut without_ipv6(no_ipv6_family),
            )
            .unwrap();
            let bound = bound(&listeners);
            assert_eq!(bound.len(), 1, "{addrs:?}: {bound:?}");
            assert_eq!(bound[0].ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{addrs:?}");
        }
    }

    /// `localhost` (`::1` and `127.0.0.1`) skips `::1` only when IPv6 is missing, not when
    /// its socket fails for another reason (such as running out of descriptors).
    #[test]
    fn listening_on_localhost_skips_ipv6_only_when_it_is_missing() {
        let localhost = LOCALHOST_LISTEN.map(|ip| SocketAddr::new(ip, 0));
        for fail in [
            no_ipv6_family as fn() -> SocketError,
            ipv6_address_unavailable,
        ] {
            let listeners =
                bind_all(&localhost, DEFAULT_BACKLOG, false, &mut without_ipv6(fail)).unwrap();
            let addrs = bound(&listeners);
            assert_eq!(addrs.len(), 1);
            assert_eq!(addrs[0].ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let e = bind_all(
            &localhost,
            DEFAULT_BACKLOG,
            false,
            &mut without_ipv6(out_of_descriptors),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), out_of_descriptors().to_string());
    }
}
