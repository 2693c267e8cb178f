//! The per-host connection pool: requests are dispatched to a connection of their host (an idle
//! one, a new one, or a queue when the host is at its limit), and connections are released,
//! reused, expired and closed.
//!
//! An idle connection is kept for the session's idle timeout, or until a second before the
//! server's `Keep-Alive: timeout=N` when that is sooner (undici's `keepAliveTimeoutThreshold`):
//! reused just as the server closes it, a request that cannot be replayed would fail. Each idle
//! connection notes its deadline at release; one timer of the client watches them all (armed
//! for the earliest, and left alone while it fires before the new deadline). `timeout=1` keeps no
//! connection for reuse; `max=M` retires it after M more requests. The field is read once per
//! response, of a response that leaves its connection reusable (`HttpClient::complete`).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::actions::Action;
use super::send::write_request_to;
use super::state::{Phase, RequestState};
use super::{ClientInner, HttpClient};
use crate::foundation::{LoopError, deadline_after};
use crate::network::error::{SocketError, TlsFailure};
use crate::network::http::HttpError;
use crate::network::http::encode::host_header_value;
use crate::network::http::framing::KeepAlive;
use crate::network::http::id_map::IdHasher;
use crate::network::tcp::{DataSink, SocketState, TcpSocket, TlsObserver};
use crate::network::tls::TlsClientConfig;

/// One pool's (scheme, host, port). Shared through an `Rc` by the pool map, its connections
/// and its requests: one copy of the host name per host, not one per connection and request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostKey {
    https: bool,
    /// The request's `Host` field value: the host name (an IPv6 literal in brackets), then
    /// `:port` when the port is not the scheme's default. Made once per host, where every
    /// request had written the port's digits out anew.
    host_field: String,
    /// Where the name ends in `host_field`.
    name_len: u32,
    port: u16,
    /// Computed once when the key is made: the pool map is consulted several times per
    /// request, and SipHash over the name each time cost about a thousand instructions.
    digest: u64,
}

impl HostKey {
    /// The host name (an IPv6 literal in brackets), as the URL spells it.
    pub(super) fn name(&self) -> &str {
        &self.host_field[..self.name_len as usize]
    }

    /// The `Host` field value of a request to this host (see [`host_header_value`]).
    pub(super) fn host_field(&self) -> &str {
        &self.host_field
    }
}

impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// The pool's books, by host (keys hash by their digest).
pub(super) type HostMap = HashMap<Rc<HostKey>, HostState, BuildHasherDefault<IdHasher>>;

pub(super) struct Conn {
    pub(super) host: Rc<HostKey>,
    pub(super) socket: Rc<TcpSocket>,
    pub(super) request: Option<u64>,
    /// Requests this connection completed.
    pub(super) served: u32,
    /// Not reused once `served` reaches this: the server's `Keep-Alive: max` said it takes no
    /// more (`u32::MAX`: it never said). Fits in the padding beside `served`.
    retire_after: u32,
    /// While idle: when the idle timeout ends (the session's, or a second before the server's
    /// `Keep-Alive: timeout` if that is sooner), and the client's idle timer closes it. Once it
    /// has passed, no request gets the connection (a new one, a redirect hop, a replay or a
    /// queued one: each is judged at the time it is scheduled), even if that timer has not run
    /// yet (the loop did not turn meanwhile, or read a redirect in the turn the deadline passed).
    idle_until: Option<Instant>,
    /// The TLS settings an https connection was made with: it is reused only while they are
    /// the client's (a session change may have dropped a trusted CA or the verification).
    tls: Option<Arc<rustls::ClientConfig>>,
    sink: Rc<ConnSink>,
}

// `retire_after` sits in the padding beside `served`; the idle timer is the client's: a pooled
// connection's books are 72 bytes.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<Conn>() == 72);

impl Conn {
    /// Says whether the bytes written next are a request body's, whose written-bytes reports
    /// the client counts (`HttpClient::on_bytes_written` ignores all others).
    pub(super) fn count_written(&self, body: bool) {
        self.sink.counts_written.set(body);
    }

    /// Notes `n` more written bytes of a finished request still to be reported by the socket.
    pub(super) fn owe_written(&self, n: u64) {
        let owed = u64::from(self.sink.owed_written.get()).saturating_add(n);
        self.sink
            .owed_written
            .set(u32::try_from(owed).unwrap_or(u32::MAX));
    }

    /// Takes the owed bytes out of a report of `n` written bytes; returns the rest (the
    /// current request's).
    pub(super) fn settle_written(&self, n: usize) -> usize {
        let owed = self.sink.owed_written.get();
        if owed == 0 {
            return n;
        }
        let taken = owed.min(u32::try_from(n).unwrap_or(u32::MAX));
        self.sink.owed_written.set(owed - taken);
        n - taken as usize
    }

    fn tls_current(&self, current: Option<&Arc<rustls::ClientConfig>>) -> bool {
        self.tls
            .as_ref()
            .is_none_or(|mine| current.is_some_and(|c| Arc::ptr_eq(mine, c)))
    }
}

#[derive(Default)]
pub(super) struct HostState {
    active: usize,
    idle: Vec<u64>,
    pub(super) queue: VecDeque<u64>,
}

/// Whether request `id` waits in `host`'s line: for the debug checks that a request out of
/// `Queued` has left it.
pub(super) fn in_host_line(hosts: &HostMap, host: &HostKey, id: u64) -> bool {
    hosts.get(host).is_some_and(|h| h.queue.contains(&id))
}

impl HttpClient {
    /// Puts the request on a connection of its host, or queues it (last in line). `now` is the
    /// caller's clock reading if it has just taken one (an idle connection is judged expired
    /// against it); with `None` the clock is read only if an idle connection is there to judge.
    pub(super) fn schedule(
        &self,
        inner: &mut ClientInner,
        id: u64,
        now: Option<Instant>,
        actions: &mut Vec<Action>,
    ) {
        self.schedule_in_line(inner, id, false, now, actions);
    }

    /// [`schedule`](Self::schedule), queueing the request, when it must wait, `in_send_order`
    /// in its host's line (by id: before the first request sent after it) rather than last: a
    /// redirect hop belongs to a request that may have been sent before others queued there.
    pub(super) fn schedule_in_line(
        &self,
        inner: &mut ClientInner,
        id: u64,
        in_send_order: bool,
        mut now: Option<Instant>,
        actions: &mut Vec<Action>,
    ) {
        let Some((host, replay, replayable)) = inner.requests.get(&id).map(|s| {
            let replayable = s.request.method().is_idempotent() && !s.retried;
            (s.host.clone(), s.retried, replayable)
        }) else {
            return;
        };
        let max = inner.session.max_connections_per_host().max(1);
        // A replay (its reused connection was closed by the server, or answered 408) goes on a
        // new connection while its host is under the limit: servers time idle connections out
        // together, so another idle one may be closed just as the request reaches it, and a
        // replay that fails is final. At the limit it takes an idle one that passes the peek
        // below, as a request that cannot be replayed does, rather than wait.
        let new_for_replay = replay && inner.hosts.get(&host).is_none_or(|h| h.active < max);
        // Most recently used idle connection first (warmest); skip ones the server already closed
        // (their close notice may still be queued, or still unread in the kernel: the loop may
        // not have turned since it came). A request that could not be replayed (a POST, or a
        // replay) is not sent on one whose close waits unread: it would fail for good. Others
        // skip that peek (a system call per reuse, on the keep-alive path): should the server
        // have closed, they are replayed once on another connection (an idle one that passes
        // this peek only when the host is at its limit, else a new one).
        // Idle past the idle timeout (judged now, for a new request, a redirect hop, a replay
        // and a queued request alike: the loop may have read a redirect in the turn in which
        // the deadline passed, before the idle timer's turn to fire). Over a lowered connection
        // limit: closed rather than reused.
        while !new_for_replay
            && let Some((conn_id, over_limit)) = inner
                .hosts
                .get_mut(&host)
                .and_then(|h| Some((h.idle.pop()?, h.active > max)))
        {
            // Read once, and only when there is an idle connection to judge (a new request
            // brings the reading its send took).
            let now = *now.get_or_insert_with(Instant::now);
            let current = inner.tls.as_ref();
            let usable = |c: &Conn| {
                c.tls_current(current)
                    && c.idle_until.is_none_or(|until| now < until)
                    && !over_limit
                    // Last: the one check that costs a system call (a peek).
                    && (replayable || !c.socket.has_unread_input())
            };
            match inner
                .conns
                .get(&conn_id)
                .map(|c| (c.socket.state(), usable(c)))
            {
                Some((SocketState::Connected, true)) => {
                    return self.assign(inner, conn_id, id, actions);
                }
                Some((SocketState::Connected, false)) => {
                    // Made with TLS settings since replaced, idle for longer than the idle
                    // timeout (its timer did not get to run), over a lowered limit, or with
                    // unread input (the server's close, or bytes nobody asked for): closed, its
                    // slot used below.
                    if let Some(conn) = inner.conns.get(&conn_id) {
                        actions.push(Action::Close(Rc::clone(&conn.socket)));
                    }
                    self.forget_conn(inner, conn_id);
                }
                Some(_) => self.forget_conn(inner, conn_id),
                None => {}
            }
        }
        let host_state = inner.hosts.entry(host.clone()).or_default();
        if host_state.active >= max {
            if in_send_order {
                queue_in_send_order(&mut host_state.queue, id);
            } else {
                host_state.queue.push_back(id);
            }
            return self.release_holds_of_host(inner, &host);
        }
        match self.open_conn(inner, &host) {
            Ok(conn_id) => self.assign(inner, conn_id, id, actions),
            Err(e) => self.fail(inner, id, e, true, actions),
        }
    }

    /// Starts queued requests of every host while it is under the connection limit (after the
    /// limit was raised), oldest first.
    pub(super) fn start_queued_within_limit(
        &self,
        inner: &mut ClientInner,
        actions: &mut Vec<Action>,
    ) {
        let max = inner.session.max_connections_per_host().max(1);
        let waiting: Vec<Rc<HostKey>> = inner
            .hosts
            .iter()
            .filter(|(_, h)| !h.queue.is_empty() && h.active < max)
            .map(|(key, _)| Rc::clone(key))
            .collect();
        for host in waiting {
            loop {
                let next = inner
                    .hosts
                    .get_mut(&host)
                    .filter(|h| h.active < max)
                    .and_then(|h| h.queue.pop_front());
                let Some(id) = next else { break };
                self.schedule(inner, id, None, actions);
            }
        }
    }

    /// A connection of `host` closed: the oldest request queued for it starts if the host is
    /// under its limit now (over a lowered limit it stays first in line).
    fn start_next_queued(
        &self,
        inner: &mut ClientInner,
        host: &HostKey,
        actions: &mut Vec<Action>,
    ) {
        let max = inner.session.max_connections_per_host().max(1);
        let next = inner
            .hosts
            .get_mut(host)
            .filter(|h| h.active < max)
            .and_then(|h| h.queue.pop_front());
        if let Some(next) = next {
            self.schedule(inner, next, None, actions);
        }
    }

    /// Closes the idle connections of every host over the connection limit (after it was
    /// lowered), the longest idle first; busy ones close when their request ends.
    pub(super) fn close_idle_over_limit(&self, inner: &mut ClientInner, actions: &mut Vec<Action>) {
        let max = inner.session.max_connections_per_host().max(1);
        let over: Vec<u64> = inner
            .hosts
            .values()
            .filter(|h| h.active > max)
            .flat_map(|h| h.idle.iter().take(h.active - max).copied())
            .collect();
        for conn_id in over {
            self.drop_conn(inner, conn_id, actions);
        }
    }

    /// The idle timeout was lowered to `idle`: no idle connection is kept for longer than
    /// that from now (each deadline was set under the old timeout), and none is reused once
    /// its deadline passed; with 0 none is reused at all.
    pub(super) fn shorten_idle_deadlines(&self, inner: &mut ClientInner, idle: Duration) {
        let latest = deadline_after(Instant::now(), idle);
        let mut shortened = false;
        for conn in inner.conns.values_mut() {
            if conn.request.is_none()
                && let Some(until) = conn.idle_until.as_mut()
                && *until > latest
            {
                *until = latest;
                shortened = true;
            }
        }
        if shortened {
            self.watch_idle_until(inner, latest);
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
        let mut tls = None;
        if host.https {
            let config = self.tls_config(inner)?;
            socket.enable_client_tls(Arc::clone(&config), host.name());
            socket.set_handshake_timeout(Some(connect_timeout));
            tls = Some(config);
        }
        let conn_id = inner.next_id;
        inner.next_id += 1;
        let sink = Rc::new(ConnSink {
            client: self.self_weak.clone(),
            conn: conn_id,
            tls: host.https,
            counts_written: Cell::new(false),
            owed_written: Cell::new(0),
        });
        let weak_sink: Weak<dyn DataSink> = Rc::downgrade(&sink) as Weak<dyn DataSink>;
        socket.set_data_sink(Some(weak_sink));
        if host.https {
            let observer: Weak<dyn TlsObserver> = Rc::downgrade(&sink) as Weak<dyn TlsObserver>;
            socket.set_tls_observer(observer);
        }
        socket.connect_to_host(host.name(), host.port)?;
        inner.conns.insert(
            conn_id,
            Box::new(Conn {
                host: Rc::clone(host),
                socket,
                request: None,
                served: 0,
                retire_after: u32::MAX,
                idle_until: None,
                tls,
                sink,
            }),
        );
        inner.hosts.entry(host.clone()).or_default().active += 1;
        log::debug!(
            "opened connection {conn_id} to {}:{}",
            host.name(),
            host.port
        );
        Ok(conn_id)
    }

    fn tls_config(&self, inner: &mut ClientInner) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        if let Some(config) = &inner.tls {
            return Ok(Arc::clone(config));
        }
        let session = &inner.session;
        let mut config = TlsClientConfig::new();
        // Say what will be spoken: a server that speaks only h2 then refuses the handshake
        // rather than being sent HTTP/1.1 (and rustls refuses any other protocol it picks).
        config.set_alpn_protocols(vec![b"http/1.1".to_vec()]);
        config.set_trust_default_roots(session.trusts_default_roots());
        for pem in session.extra_ca_certificates() {
            config.add_ca_certificate(pem)?;
        }
        if let Some((cert, key)) = session.client_certificate() {
            config.set_client_certificate(cert, key)?;
        }
        if !session.verifies_certificates() {
            config.dangerous_disable_certificate_verification();
        }
        config.set_session_resumption(session.resumes_tls_sessions());
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
        // Both looked up once: writing the request and starting its head deadline use them too.
        let (Some(conn), Some(state)) =
            (inner.conns.get_mut(&conn_id), inner.requests.get_mut(&id))
        else {
            return;
        };
        // The client's idle timer stays armed: it skips connections in use when it fires.
        conn.idle_until = None;
        conn.request = Some(id);
        state.conn = Some(conn_id);
        // Leaving `Queued` for good (until a new hop): `take_request` relies on it having left its
        // host's line.
        debug_assert!(
            !in_host_line(&inner.hosts, &state.host, id),
            "request {id} assigned while still in its host's line"
        );
        state.phase = Phase::RecvHead;
        let connecting = matches!(
            conn.socket.state(),
            SocketState::HostLookup | SocketState::Connecting
        );
        state.write_when_connected = connecting;
        if let Err(e) = write_request_to(conn, state, &inner.session, &mut inner.wire, connecting) {
            return self.fail(inner, id, e, true, actions);
        }
        // The head deadline runs from the request write: on a connection still on its way up it
        // starts once connected (after the TLS handshake for https, see `ConnSink`), so a slow
        // connect does not eat into it (that has its own timeout).
        if connecting {
            self.disarm_idle(state);
        } else {
            self.arm_idle(state, id);
        }
    }

    /// Connection `conn_id` can carry its request now (connected, and past the TLS handshake):
    /// the request's head deadline starts.
    fn on_conn_ready(&self, conn_id: u64) {
        let mut inner = self.inner.borrow_mut();
        let Some(id) = inner.conns.get(&conn_id).and_then(|c| c.request) else {
            return;
        };
        if inner
            .requests
            .get(&id)
            .is_some_and(|s| s.phase == Phase::RecvHead && s.idle.is_none())
        {
            self.arm_idle_timer(&mut inner, id);
        }
    }

    /// Frees the request's connection: back to the pool (or to the next queued request) when
    /// `reuse` is given (reusable, with what the response's `Keep-Alive` said, and the clock
    /// reading its idle deadline runs from), else closed.
    pub(super) fn release_conn(
        &self,
        inner: &mut ClientInner,
        state: &mut RequestState,
        reuse: Option<(KeepAlive, Instant)>,
        actions: &mut Vec<Action>,
    ) {
        self.release_conn_id(inner, state.conn.take(), reuse, actions);
    }

    /// [`release_conn`](Self::release_conn) for connection `conn` (if any).
    ///
    /// The server's `Keep-Alive` is honoured: the connection is kept idle until a second before
    /// its `timeout` if that is sooner than the session's idle timeout (undici's rule), so that
    /// it is not reused just as the server closes it; with `timeout=1` it is not kept at all;
    /// after `max` more requests it is not reused.
    pub(super) fn release_conn_id(
        &self,
        inner: &mut ClientInner,
        conn: Option<u64>,
        reuse: Option<(KeepAlive, Instant)>,
        actions: &mut Vec<Action>,
    ) {
        let Some(conn_id) = conn else {
            return;
        };
        let Some((keep_alive, now)) = reuse else {
            return self.drop_conn(inner, conn_id, actions);
        };
        let current = inner.tls.as_ref();
        let max = inner.session.max_connections_per_host().max(1);
        // The connection and its host's books, each looked up once for the checks, the
        // hand-over to a queued request and the idle list.
        let Some(conn) = inner.conns.get_mut(&conn_id) else {
            return;
        };
        let mut host = inner.hosts.get_mut(&conn.host);
        // A host over a lowered limit loses the connections its requests finish with. One
        // handed straight to a queued request must not have the server's close (or stray bytes)
        // waiting unread: it came with the response, which did not announce it, and the request
        // would go out on a closed connection (an idle one is checked when reused).
        // With `Keep-Alive: timeout=1` the server closes it within a second: not worth racing.
        if keep_alive.timeout_secs.is_some_and(|secs| secs <= 1)
            || !conn.tls_current(current)
            || host.as_ref().is_some_and(|h| {
                h.active > max || (!h.queue.is_empty() && conn.socket.has_unread_input())
            })
        {
            return self.drop_conn(inner, conn_id, actions);
        }
        conn.request = None;
        conn.served = conn.served.saturating_add(1);
        if let Some(more) = keep_alive.max {
            conn.retire_after = conn
                .served
                .saturating_add(u32::try_from(more).unwrap_or(u32::MAX));
        }
        if conn.served >= conn.retire_after {
            // The server's `Keep-Alive: max` said it takes no more requests on it.
            return self.drop_conn(inner, conn_id, actions);
        }
        if let Some(next) = host.as_mut().and_then(|h| h.queue.pop_front()) {
            return self.assign(inner, conn_id, next, actions);
        }
        let idle = inner.session.idle_connection_timeout();
        let idle = keep_alive.timeout_secs.map_or(idle, |secs| {
            idle.min(Duration::from_secs(secs.saturating_sub(1)))
        });
        let until = deadline_after(now, idle);
        conn.idle_until = Some(until);
        match host {
            Some(host) => host.idle.push(conn_id),
            None => {
                let key = Rc::clone(&conn.host);
                inner.hosts.entry(key).or_default().idle.push(conn_id);
            }
        }
        self.watch_idle_until(inner, until);
    }

    /// Makes the client's idle timer fire by `until` (an idle connection's deadline). Usually
    /// it is armed for an earlier deadline already, which then re-arms it for the rest: a timer
    /// armed (and disarmed on reuse) per release cost the timer queue's work per request.
    fn watch_idle_until(&self, inner: &mut ClientInner, until: Instant) {
        self.watch_deadline(&mut inner.idle_timer, until, HttpClient::on_idle_timer);
    }

    /// Closes a connection (after the borrow) and lets a queued request of its host start.
    pub(super) fn drop_conn(
        &self,
        inner: &mut ClientInner,
        conn_id: u64,
        actions: &mut Vec<Action>,
    ) {
        let Some(conn) = inner.conns.remove(&conn_id) else {
            return;
        };
        if let Some(host) = inner.hosts.get_mut(&conn.host) {
            host.active = host.active.saturating_sub(1);
            host.idle.retain(|c| *c != conn_id);
        }
        actions.push(Action::Close(conn.socket));
        self.start_next_queued(inner, &conn.host, actions);
        forget_host_if_unused(&mut inner.hosts, &conn.host);
    }

    /// Removes a connection that is already closed from the pool's books.
    fn forget_conn(&self, inner: &mut ClientInner, conn_id: u64) {
        if let Some(conn) = inner.conns.remove(&conn_id) {
            if let Some(host) = inner.hosts.get_mut(&conn.host) {
                host.active = host.active.saturating_sub(1);
                host.idle.retain(|c| *c != conn_id);
            }
            forget_host_if_unused(&mut inner.hosts, &conn.host);
        }
    }

    /// The client's idle timer fired: every idle connection past its deadline closes (oldest
    /// first), and the timer is armed for the earliest deadline left.
    fn on_idle_timer(&self) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            inner.idle_timer = None;
            let now = Instant::now();
            let idle_until = |c: &Conn| c.idle_until.filter(|_| c.request.is_none());
            let mut expired: Vec<u64> = (inner.conns.iter())
                .filter(|(_, c)| idle_until(c).is_some_and(|until| until <= now))
                .map(|(id, _)| *id)
                .collect();
            expired.sort_unstable();
            for conn_id in expired {
                log::debug!("closing idle connection {conn_id}");
                self.drop_conn(inner, conn_id, &mut actions);
            }
            if let Some(next) = inner.conns.values().filter_map(|c| idle_until(c)).min() {
                self.watch_idle_until(inner, next);
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
            self.start_next_queued(&mut inner, &host, &mut actions);
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
        // A reused keep-alive connection the server had already closed: replay once on another
        // connection (a new one; an idle one only at the host's limit and when no close waits
        // unread on it, see `schedule_in_line`) — an idempotent request only: the server may have carried out a POST before closing
        // (RFC 9112 §9.3.1: never retried automatically).
        if !state.got_bytes
            && served > 0
            && !state.retried
            && state.request.method().is_idempotent()
        {
            log::debug!("request {id}: pooled connection was closed by the server; retrying");
            state.retried = true;
            state.reset_for_hop();
            // First in its host's line: it was sent before anything queued there.
            let host = Rc::clone(&state.host);
            self.queue_first(inner, &host, id);
            return self.start_next_queued(inner, &host, actions);
        }
        if let Some(e) = error {
            return self.fail(inner, id, e.into(), false, actions);
        }
        match state.phase {
            Phase::RecvBody => {
                let finished = state.arrived.as_deref_mut().map(|a| {
                    let d = &mut a.decoder;
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
            Phase::RecvHead if state.got_bytes => {
                let e = match state.partial_head.as_deref().and_then(|p| p.only_interim()) {
                    Some(interim) => HttpError::NoFinalResponse { interim },
                    None => HttpError::Protocol(
                        "connection closed in the middle of the response head".into(),
                    ),
                };
                self.fail(inner, id, e, false, actions)
            }
            _ => self.fail(inner, id, HttpError::EmptyResponse, false, actions),
        }
    }

    /// Puts request `id`, to be sent again on another connection, first in `host`'s line (it was sent
    /// before anything queued there), and lets go of connections held back for that host (a
    /// request now waits for it; see `release_holds_of_host`).
    pub(super) fn queue_first(&self, inner: &mut ClientInner, host: &Rc<HostKey>, id: u64) {
        inner
            .hosts
            .entry(Rc::clone(host))
            .or_default()
            .queue
            .push_front(id);
        self.release_holds_of_host(inner, host);
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
    /// An https connection: ready for its request only after the TLS handshake.
    tls: bool,
    /// The request being written has a body, whose progress the written bytes report (see
    /// `HttpClient::on_bytes_written`); without one the socket posts no report for them.
    counts_written: Cell<bool>,
    /// Bytes of finished requests that the kernel took but the socket has not reported yet
    /// (its reports come from a later turn): the next reports are theirs, not the current
    /// request's (see `HttpClient::settle_upload`). In the padding beside the flags.
    owed_written: Cell<u32>,
}

// The sink is one small allocation per connection: the owed count must not grow it.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<ConnSink>() == 24);

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

    fn counts_written(&self) -> bool {
        self.counts_written.get()
    }

    fn on_connected(&self) {
        if let Some(client) = self.client.upgrade() {
            client.on_conn_connected(self.conn);
            if !self.tls {
                client.on_conn_ready(self.conn);
            }
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

impl TlsObserver for ConnSink {
    fn handshake_completed(&self) {
        if let Some(client) = self.client.upgrade() {
            client.on_conn_ready(self.conn);
        }
    }

    // The socket closes after a failed handshake; `on_closed` reports it.
    fn handshake_failed(&self, _error: &SocketError) {}
}

/// Queues request `id` before the first request in `queue` sent after it (ids grow with each
/// `send`), so that it is served in the order it was sent.
pub(super) fn queue_in_send_order(queue: &mut VecDeque<u64>, id: u64) {
    let at = queue.iter().position(|&queued| queued > id);
    queue.insert(at.unwrap_or(queue.len()), id);
}

/// Drops the books of a host with no connection and nothing queued: a client meeting ever new
/// hosts (or redirects to ever new names) keeps only those it still talks to. Its requests keep
/// their `Rc<HostKey>`; a later one interns the name anew.
pub(super) fn forget_host_if_unused(hosts: &mut HostMap, host: &HostKey) {
    if hosts
        .get(host)
        .is_some_and(|h| h.active == 0 && h.idle.is_empty() && h.queue.is_empty())
    {
        hosts.remove(host);
    }
}

/// The pool map's shared key for `url`'s host (added, with an empty pool, if new). The map is
/// searched with the URL's parts as they are: a key (and its copy of the name) is made only
/// for a host the map does not know.
pub(super) fn intern_host(hosts: &mut HostMap, url: &url::Url) -> Rc<HostKey> {
    let https = url.scheme() == "https";
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let digest = host_digest(https, host, port);
    let parts = HostParts {
        https,
        host,
        port,
        digest,
    };
    if let Some((shared, _)) = hosts.get_key_value(&parts as &dyn KeyParts) {
        return Rc::clone(shared);
    }
    let host_field = host_header_value(url);
    // The field starts with the name (`host_str`) whatever follows it.
    debug_assert!(host_field.starts_with(host));
    let shared = Rc::new(HostKey {
        https,
        // The url crate addresses a URL's text with `u32` offsets: a host name fits.
        name_len: u32::try_from(host.len()).unwrap_or(u32::MAX),
        host_field,
        port,
        digest,
    });
    hosts.insert(Rc::clone(&shared), HostState::default());
    shared
}

/// A host key's parts: what the pool map compares and hashes, for an owned key and a borrowed
/// one alike (the map's keys lend themselves as this, see `intern_host`).
trait KeyParts {
    fn parts(&self) -> (bool, &str, u16);
    fn digest(&self) -> u64;
}

/// A host key's parts borrowed from a URL.
struct HostParts<'a> {
    https: bool,
    host: &'a str,
    port: u16,
    digest: u64,
}

impl KeyParts for HostParts<'_> {
    fn parts(&self) -> (bool, &str, u16) {
        (self.https, self.host, self.port)
    }
    fn digest(&self) -> u64 {
        self.digest
    }
}

impl KeyParts for HostKey {
    fn parts(&self) -> (bool, &str, u16) {
        (self.https, self.name(), self.port)
    }
    fn digest(&self) -> u64 {
        self.digest
    }
}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for Rc<HostKey> {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        &**self
    }
}

/// Hashes as [`HostKey`] does (its digest), as `Borrow` requires.
impl Hash for dyn KeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest());
    }
}

/// Equal as [`HostKey`]s are (the digest follows from the parts).
impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

/// FNV-1a over the key's parts. Not flood-resistant, and need not be: hosts come from the
/// application's URLs and a few redirect hops per request, and the books of a host go when
/// its connections do.
fn host_digest(https: bool, host: &str, port: u16) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    [u8::from(https)]
        .iter()
        .chain(host.as_bytes())
        .chain(&port.to_le_bytes())
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

impl From<TlsFailure> for HttpError {
    fn from(f: TlsFailure) -> Self {
        HttpError::Transport(SocketError::Tls(f))
    }
}
