//! Getting a [`TcpSocket`] connected: the connect-only state, the name lookup, the Happy Eyeballs
//! race of connection attempts and the connect timeout, up to the connected stream.

use std::net::{IpAddr, SocketAddr};
use std::rc::Weak;
use std::sync::Arc;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;

use super::tls::TlsState;
use super::{Inner, SocketState, TcpSocket};
use crate::foundation::{Readiness, ReadyHandler, TimerKey, deadline_after};
use crate::network::dns::LookupId;
use crate::network::error::{SocketError, SocketOperation};
use crate::network::tcp::connect::{
    AttemptOutcome, AttemptOwner, CONNECTION_ATTEMPT_DELAY, ConnectRace,
};
use crate::network::tls::session::TlsSession;

/// What a socket needs only on its way to being connected. Made on demand; dropped once
/// connected, and on close unless a TLS request still waits for the next connect.
#[derive(Default)]
pub(super) struct Connecting {
    pub(super) race: Option<ConnectRace>,
    pub(super) stagger_timer: Option<TimerKey>,
    pub(super) connect_timer: Option<TimerKey>,
    /// When the connect timeout runs out; a TLS handshake must complete by then too.
    pub(super) deadline: Option<Instant>,
    pub(super) lookup: Option<LookupId>,
    /// Set by `enable_client_tls`: the configuration and the name to verify (`None`: the
    /// address the connection is made to, known only once an attempt won the race); the
    /// session is made when the TCP connection is up. Boxed: a plain connection never sets it.
    pub(super) tls_pending: Option<Box<(Arc<rustls::ClientConfig>, Option<String>)>>,
    /// Set by `disconnect_from_host` while bytes were queued: the connect goes on, and once
    /// connected the socket sends them and closes (as Qt's `disconnectFromHost` does).
    pub(super) close_when_connected: bool,
}

/// The two ends of a connection, kept after it closes.
pub(super) struct Addresses {
    pub(super) peer: SocketAddr,
    pub(super) local: Option<SocketAddr>,
}

impl Addresses {
    pub(super) fn of(stream: &TcpStream, peer: SocketAddr) -> Box<Addresses> {
        Box::new(Addresses {
            peer,
            local: stream.local_addr().ok(),
        })
    }
}

impl TcpSocket {
    pub(super) fn ensure_unconnected(&self) -> Result<(), SocketError> {
        match self.state() {
            SocketState::Unconnected => Ok(()),
            _ => Err(SocketError::InvalidState(
                "socket is already connected or connecting",
            )),
        }
    }

    pub(super) fn on_lookup(&self, result: Result<Vec<IpAddr>, SocketError>, port: u16) {
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
    pub(super) fn advance_race(&self, parallel: bool) {
        if let Some(e) = self.step_race(parallel) {
            self.close_with(Some(e));
        }
    }

    /// Starts the first attempt from `connect_to_addresses`. If every address failed at once,
    /// the failure is reported from the loop: never from inside the caller's call.
    pub(super) fn start_race(&self) {
        let Some(e) = self.step_race(false) else {
            return;
        };
        let connection = self.connection();
        self.post_call(move |s| {
            // Unless aborted (and maybe connected anew) or timed out meanwhile.
            if s.connection() == connection && s.state() == SocketState::Connecting {
                s.close_with(Some(e));
            }
        });
    }

    /// [`advance_race`](Self::advance_race) without the close: returns the error to fail with.
    fn step_race(&self, parallel: bool) -> Option<SocketError> {
        let owner: Weak<dyn AttemptOwner> = self.self_weak.clone();
        let mut inner = self.inner.borrow_mut();
        let connecting = inner.connecting.as_deref_mut()?;
        let race = connecting.race.as_mut()?;
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
    }

    pub(super) fn arm_connect_timer(&self) {
        let mut inner = self.inner.borrow_mut();
        let Some(timeout) = inner.connect_timeout else {
            return;
        };
        let deadline = deadline_after(Instant::now(), timeout);
        let key = self.start_timer_at(deadline);
        let connecting = inner.connecting();
        connecting.connect_timer = Some(key);
        connecting.deadline = Some(deadline);
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
        let (tls_start, close_when_connected) = {
            let mut inner = self.inner.borrow_mut();
            let _ = stream.set_nodelay(inner.no_delay);
            if inner.keep_alive {
                let _ = socket2::SockRef::from(&stream).set_keepalive(true);
            }
            inner.addresses = Some(Addresses::of(&stream, peer));
            inner.stream = Some(stream);
            inner.key = Some(key);
            inner.state = SocketState::Connected;
            // Connected: nothing of the way here is needed any more (but the connect
            // timeout's deadline, which a TLS handshake has to meet as well, and whether a
            // graceful close waits for the connection).
            match inner.connecting.take() {
                Some(c) => (
                    c.tls_pending.map(|t| (*t, c.deadline)),
                    c.close_when_connected,
                ),
                None => (None, false),
            }
        };
        log::debug!("connected to {peer}");
        if let Some(((config, host), connect_deadline)) = tls_start {
            let host = host.unwrap_or_else(|| peer.ip().to_string());
            match TlsSession::client(config, &host) {
                Ok(session) => {
                    self.inner.borrow_mut().tls = Some(TlsState::new(session));
                    self.arm_handshake_timer(connect_deadline);
                }
                // Closed before `connected` is announced: no slot can write to a stream that
                // was to be encrypted and carry its bytes in plain text.
                Err(e) => return self.close_with(Some(e)),
            }
        }
        let connection = self.connection();
        let still_connected =
            || self.state() == SocketState::Connected && self.connection() == connection;
        self.emit_held(&self.state_changed, &SocketState::Connected);
        // A `state_changed` slot may have closed the socket (or connected it anew): then this
        // connection is never announced, so its close emitted no `disconnected` either.
        if !still_connected() {
            return;
        }
        self.inner.borrow_mut().announced = true;
        self.emit_held(&self.connected, &());
        // A `connected` slot may have closed the socket already.
        if still_connected() {
            if let Some(sink) = self.sink() {
                sink.on_connected();
            }
            // `disconnect_from_host` came while connecting, with bytes queued: they go out
            // first (over TLS once the handshake is through), then the socket closes.
            if close_when_connected {
                return self.close_gracefully();
            }
        }
        self.flush();
    }
}

impl AttemptOwner for TcpSocket {
    fn attempt_ready(&self, id: u64, readiness: Readiness) {
        let _call = self.loop_call();
        let outcome = {
            let mut inner = self.inner.borrow_mut();
            match inner.connecting.as_mut().and_then(|c| c.race.as_mut()) {
                Some(race) => race.on_ready(&self.core, id, readiness),
                None => return,
            }
        };
        match outcome {
            AttemptOutcome::Pending => {}
            // The next address starts at once, even while an earlier attempt still hangs
            // (RFC 8305: after the delay or as soon as an attempt fails).
            AttemptOutcome::Failed => self.advance_race(true),
            AttemptOutcome::Connected(stream, addr) => self.on_connected(stream, addr),
        }
    }
}

impl Inner {
    /// The connect-only state, made on first use.
    pub(super) fn connecting(&mut self) -> &mut Connecting {
        self.connecting.get_or_insert_with(Box::default)
    }
}
