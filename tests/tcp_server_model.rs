//! A randomised, model-based test of `TcpServer` and of kdnet client sockets talking to the
//! sockets it accepted, both ends in the SAME event loop, over real loopback (127.0.0.1, ::1, or
//! a server on `localhost` or the dual-stack `::` reached over both), plain TCP or TLS
//! (`SslSocket` clients, a TLS server with the test PKI).
//!
//! Each generated case listens, then runs a script of 1–14 steps, each made from outside (between
//! loop turns), from a `new_connection` slot, from a `ready_read` or `bytes_written` slot of the
//! step's own end, or from a `ready_read` slot of the other end of its connection (also right
//! after the step before, in the same call): connect a new client (`TcpSocket`/`SslSocket`);
//! write 0 B to 1 MB from either end; close either end gracefully
//! (`disconnect_from_host`), abort it, or drop its last handle; close the server, listen again
//! (a new port), or drop the server, with connections alive. `new_connection` keeps the socket
//! or leaves it (the documented way to refuse one: a connection nobody keeps is closed). After
//! the script every connection still open exchanges what was written and is closed gracefully
//! by its client. Either side's sockets may read slowly (a 16 KiB read buffer limit, 4 KiB per
//! `ready_read`, 32 KiB per turn), so reading pauses with data in flight and closes meet
//! unread data (the lingering close).
//!
//! The model is the documented behaviour (`TcpServer` and `TcpSocket` docs, the `tcp::socket`
//! module doc, PORTING.md's socket and server rows):
//! - server: `listen` succeeds exactly when not listening and emits `state_changed(Listening)`
//!   then `listening_started`, a second one fails with `InvalidState` (also emitted as
//!   `error_occurred`, the server listening on); `close` emits
//!   `state_changed(NotListening)` only when listening; `new_connection` hands over sockets
//!   only while listening (never after `close` or the drop of the server, also when they came
//!   from a `new_connection` slot), each `Connected`, from the listened family, and only once
//!   per client; a client connecting while nothing listens fails with a typed connect error
//!   and is never handed over; one that connected while the server listened and was not stopped
//!   is handed over; `close` leaves accepted connections open (they go on exchanging bytes);
//! - each end: `write` is accepted exactly while `HostLookup`/`Connecting`/`Connected`; the
//!   other end receives a prefix of the accepted bytes, in order, and all of them when nothing
//!   cut the connection (no abort, drop, cancel, leaving, refusal or error) and the receiver
//!   did not close first; `bytes_written` sums to no more than what was accepted, to all of it
//!   when nothing cut; `connected`/`disconnected` at most once, in order, `disconnected` last
//!   (accepted sockets: no `connected`, always `disconnected` unless dropped); state changes
//!   follow the diagram; at most one error, only when something cut the connection, typed, before
//!   `disconnected`; `handshake_error` just before its `error_occurred`; over TLS no data signal
//!   before `handshake_completed`, and every connection left open completes its handshake on
//!   both ends; nothing emitted after the last handle is dropped; every case settles within a
//!   generous bound.
//!
//! `PROPTEST_CASES` sets the number of cases (default 40).

mod support;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::{
    ServerState, SocketError, SocketOperation, SocketState, SslSocket, TcpServer, TcpSocket,
    TlsClientConfig, TlsServerConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::certs::test_pki;
use support::pattern;
use support::socket_events::SocketEvent as Ev;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    /// The server listens on `localhost` (both loopbacks); clients alternate families.
    Localhost,
    /// The server listens on `::` (dual stack); clients alternate `::1` and `127.0.0.1`.
    DualStack,
}

/// Which end of a connection a step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Graceful,
    Abort,
    Drop,
}

/// From where a step is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Outside,
    /// A `new_connection` slot.
    NewConnection,
    /// A `ready_read` slot of the step's own end (any socket for server and connect steps).
    OwnReadyRead,
    /// A `ready_read` slot of the other end of the step's connection.
    PeerReadyRead,
    /// A `bytes_written` slot of the step's own end (any socket for server and connect steps).
    OwnBytesWritten,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Connect,
    /// Connection `conn` modulo the connections made so far.
    Write {
        conn: usize,
        end: End,
        size: usize,
    },
    Close {
        conn: usize,
        end: End,
        how: How,
    },
    ServerClose,
    ServerListen,
    ServerDrop,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    op: Op,
    trigger: Trigger,
    /// Made in the same call as the step before (whatever made that one).
    with_previous: bool,
}

#[derive(Debug, Clone)]
struct Case {
    family: Family,
    tls: bool,
    /// Whether `new_connection` keeps the k-th connection (k modulo the length).
    keep: Vec<bool>,
    steps: Vec<Step>,
    /// Slow readers (clients, accepted sockets): they cap their read buffers at 16 KiB and
    /// read 4 KiB per `ready_read` and 32 KiB per loop turn from outside, so reading pauses
    /// with data in flight.
    slow: (bool, bool),
    seed: u64,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => 1usize..200,
        3 => 200usize..20_000,
        1 => 20_000usize..300_000,
        1 => 300_000usize..1_000_000,
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Client), Just(End::Server)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Connect),
        8 => (0usize..4, end(), size()).prop_map(|(conn, end, size)| Op::Write { conn, end, size }),
        3 => (
            0usize..4,
            end(),
            prop_oneof![3 => Just(How::Graceful), 1 => Just(How::Abort), 1 => Just(How::Drop)]
        )
            .prop_map(|(conn, end, how)| Op::Close { conn, end, how }),
        1 => Just(Op::ServerClose),
        1 => Just(Op::ServerListen),
        1 => Just(Op::ServerDrop),
    ]
}

fn trigger() -> impl Strategy<Value = Trigger> {
    prop_oneof![
        4 => Just(Trigger::Outside),
        1 => Just(Trigger::NewConnection),
        1 => Just(Trigger::OwnReadyRead),
        2 => Just(Trigger::PeerReadyRead),
        2 => Just(Trigger::OwnBytesWritten),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Family::V4),
            Just(Family::V6),
            Just(Family::Localhost),
            Just(Family::DualStack)
        ],
        any::<bool>(),
        prop::collection::vec(prop::bool::weighted(0.85), 1..4),
        prop::collection::vec(
            (op(), trigger(), prop::bool::weighted(0.2)).prop_map(
                |(op, trigger, with_previous)| Step {
                    op,
                    trigger,
                    with_previous,
                },
            ),
            1..14,
        ),
        (prop::bool::weighted(0.3), prop::bool::weighted(0.3)),
        any::<u64>(),
    )
        .prop_map(|(family, tls, keep, mut steps, slow, seed)| {
            // A connection first, so the script has something to act on.
            steps.insert(
                0,
                Step {
                    op: Op::Connect,
                    trigger: Trigger::Outside,
                    with_previous: false,
                },
            );
            Case {
                family,
                tls,
                keep,
                steps,
                slow,
                seed,
            }
        })
}

// ---- recording ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerEv {
    State(ServerState),
    ListeningStarted,
    /// `new_connection`, with whether the server said it listens then.
    NewConnection {
        listening: bool,
    },
    Error(String),
    /// The test dropped the server here (it emits nothing for that).
    Dropped,
}

enum Handle {
    Plain(Rc<TcpSocket>),
    Ssl(Rc<SslSocket>),
}

/// One end of a connection.
#[derive(Default)]
struct EndRec {
    events: Vec<Ev>,
    accepted: Vec<u8>,
    written: usize,
    received: Vec<u8>,
    handle: Option<Handle>,
    socket: Weak<TcpSocket>,
    dropped: bool,
    /// Closed by the script (graceful, abort or drop).
    closed: bool,
    /// Closed gracefully by the script.
    graceful: bool,
    /// Aborted, dropped, left by `new_connection`, or a connect cancelled by the script.
    hard: bool,
    /// Closed gracefully during a TLS handshake with nothing queued, which cancels the
    /// handshake (see `disconnect_from_host`): the other end's handshake may fail, as
    /// `ClosedByPeer`.
    cancelled: bool,
    /// The client's local address (the accepted socket's peer), or the accepted socket's peer.
    addr: Option<SocketAddr>,
}

impl EndRec {
    fn cut(&self) -> bool {
        self.hard || self.cancelled
    }
}

#[derive(Default)]
struct Conn {
    client: EndRec,
    /// Index into `Driver::accepted` once paired.
    server: Option<usize>,
    /// Connected while nothing listened.
    refused: bool,
    /// The server was closed or dropped after this client's connect.
    stopped_after: bool,
}

struct Accepted {
    end: EndRec,
    kept: bool,
    paired: bool,
}

struct Driver {
    case: Case,
    ip_v4: IpAddr,
    ip_v6: IpAddr,
    conns: Vec<Conn>,
    accepted: Vec<Accepted>,
    server: Option<Rc<TcpServer>>,
    server_events: Vec<ServerEv>,
    expected_server_events: Vec<ServerEv>,
    listening: bool,
    port: u16,
    next: usize,
    idle_turns: u32,
    new_connections: usize,
    violations: Vec<String>,
}

type Drv = Rc<RefCell<Driver>>;

/// An end of a connection, by where its record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndId {
    Client(usize),
    Accepted(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    NewConnection,
    ReadyRead,
    BytesWritten,
}

impl Driver {
    fn end(&mut self, id: EndId) -> &mut EndRec {
        match id {
            EndId::Client(i) => &mut self.conns[i].client,
            EndId::Accepted(j) => &mut self.accepted[j].end,
        }
    }

    fn end_ref(&self, id: EndId) -> &EndRec {
        match id {
            EndId::Client(i) => &self.conns[i].client,
            EndId::Accepted(j) => &self.accepted[j].end,
        }
    }

    /// Pairs client `i` with the accepted socket whose peer is its local address.
    fn pair(&mut self, i: usize) -> Option<usize> {
        if let Some(j) = self.conns[i].server {
            return Some(j);
        }
        if self.conns[i].client.addr.is_none() {
            let local = self.conns[i]
                .client
                .socket
                .upgrade()
                .and_then(|s| s.local_address());
            self.conns[i].client.addr = local;
        }
        let local = self.conns[i].client.addr?;
        let j = self
            .accepted
            .iter()
            .position(|a| !a.paired && a.end.addr == Some(local))?;
        self.accepted[j].paired = true;
        self.conns[i].server = Some(j);
        Some(j)
    }

    /// The step's connection and its two ends (the server end when paired).
    fn ends_of(&mut self, conn: usize, end: End) -> Option<(usize, Option<EndId>, Option<EndId>)> {
        if self.conns.is_empty() {
            return None;
        }
        let i = conn % self.conns.len();
        let server = self.pair(i).map(EndId::Accepted);
        let client = Some(EndId::Client(i));
        Some(match end {
            End::Client => (i, client, server),
            End::Server => (i, server, client),
        })
    }
}

fn violation(drv: &Drv, what: String) {
    drv.borrow_mut().violations.push(what);
}

fn record(drv: &Drv, id: EndId, ev: Ev) {
    let mut d = drv.borrow_mut();
    if d.end_ref(id).dropped {
        d.violations.push(format!(
            "{id:?}: {ev:?} emitted after the last handle was dropped"
        ));
    }
    d.end(id).events.push(ev);
}

fn watch(drv: &Drv, id: EndId, socket: &Rc<TcpSocket>) {
    if slow(drv, id) {
        socket.set_read_buffer_limit(16 * 1024);
    }
    macro_rules! slot {
        ($signal:ident, |$d:ident, $s:ident, $v:ident| $body:block) => {{
            let $d = drv.clone();
            let weak = Rc::downgrade(socket);
            socket
                .$signal
                .connect(move |$v| {
                    let Some($s) = weak.upgrade() else { return };
                    $body
                })
                .release();
        }};
    }
    slot!(state_changed, |d, s, state| {
        record(&d, id, Ev::State(*state));
        let now = s.state();
        if now != *state {
            violation(
                &d,
                format!("{id:?}: state_changed({state:?}) while {now:?}"),
            );
        }
        if *state == SocketState::Connected {
            if let EndId::Client(_) = id {
                d.borrow_mut().end(id).addr = s.local_address();
            }
        }
    });
    slot!(connected, |d, s, _v| {
        record(&d, id, Ev::Connected);
        if s.state() != SocketState::Connected || s.peer_address().is_none() {
            violation(&d, format!("{id:?}: connected while {:?}", s.state()));
        }
        d.borrow_mut().end(id).addr = s.local_address();
    });
    slot!(handshake_completed, |d, s, _v| {
        record(&d, id, Ev::Handshake);
        if !s.is_encrypted() {
            violation(&d, format!("{id:?}: handshake_completed, not encrypted"));
        }
    });
    slot!(handshake_error, |d, _s, e| {
        record(&d, id, Ev::HandshakeError(e.clone()));
    });
    slot!(error_occurred, |d, s, e| {
        record(&d, id, Ev::Error(e.clone()));
        if s.state() != SocketState::Unconnected {
            violation(&d, format!("{id:?}: error_occurred while {:?}", s.state()));
        }
    });
    slot!(bytes_written, |d, _s, n| {
        record(&d, id, Ev::Written(*n));
        d.borrow_mut().end(id).written += *n;
        fired(&d, id, Fired::BytesWritten);
    });
    slot!(bytes_received, |d, _s, n| {
        record(&d, id, Ev::Received(*n));
    });
    slot!(ready_read, |d, s, _v| {
        record(&d, id, Ev::ReadyRead);
        let data = if slow(&d, id) {
            s.read(4096)
        } else {
            s.read_all()
        };
        d.borrow_mut().end(id).received.extend_from_slice(&data);
        fired(&d, id, Fired::ReadyRead);
    });
    slot!(disconnected, |d, s, _v| {
        record(&d, id, Ev::Disconnected);
        let data = s.read_all();
        d.borrow_mut().end(id).received.extend_from_slice(&data);
    });
}

// ---- the script --------------------------------------------------------------------------------

/// A signal fired on `id` (or `new_connection` on the server, `id` being the new socket): makes
/// the current step if that is its trigger.
fn fired(drv: &Drv, id: EndId, what: Fired) {
    let due = {
        let mut d = drv.borrow_mut();
        let Some(step) = d.case.steps.get(d.next).copied() else {
            return;
        };
        match (step.trigger, what) {
            (Trigger::NewConnection, Fired::NewConnection) => true,
            (Trigger::OwnReadyRead, Fired::ReadyRead)
            | (Trigger::OwnBytesWritten, Fired::BytesWritten)
            | (Trigger::PeerReadyRead, Fired::ReadyRead) => match step.op {
                Op::Write { conn, end, .. } | Op::Close { conn, end, .. } => {
                    match d.ends_of(conn, end) {
                        Some((_, own, peer)) => {
                            let at = if step.trigger == Trigger::PeerReadyRead {
                                peer
                            } else {
                                own
                            };
                            at == Some(id)
                        }
                        None => false,
                    }
                }
                _ => true,
            },
            _ => false,
        }
    };
    if due {
        run_steps(drv);
    }
}

/// Makes the current step and those that go with it.
fn run_steps(drv: &Drv) {
    loop {
        let step = {
            let mut d = drv.borrow_mut();
            let Some(step) = d.case.steps.get(d.next).copied() else {
                return;
            };
            d.next += 1;
            d.idle_turns = 0;
            step
        };
        make(drv, step.op);
        let more = {
            let d = drv.borrow();
            d.case.steps.get(d.next).is_some_and(|s| s.with_previous)
        };
        if !more {
            return;
        }
    }
}

fn socket_of(drv: &Drv, id: EndId) -> Option<Rc<TcpSocket>> {
    let d = drv.borrow();
    let end = d.end_ref(id);
    if end.dropped {
        return None;
    }
    end.socket.upgrade()
}

fn make(drv: &Drv, op: Op) {
    match op {
        Op::Connect => connect(drv),
        Op::Write { conn, end, size } => {
            let Some((_, Some(id), _)) = drv.borrow_mut().ends_of(conn, end) else {
                return;
            };
            let Some(socket) = socket_of(drv, id) else {
                return;
            };
            let data = {
                let d = drv.borrow();
                let offset = d.end_ref(id).accepted.len() as u64;
                pattern(size, d.case.seed ^ (offset << 8) ^ size as u64)
            };
            let state = socket.state();
            let closed = drv.borrow().end_ref(id).closed;
            let result = socket.write(&data);
            // Documented: after a graceful close made while connecting with bytes queued (the
            // socket stays `Connecting` until it has sent them), writes are refused.
            let open = match state {
                SocketState::HostLookup | SocketState::Connecting => !closed,
                SocketState::Connected => true,
                _ => false,
            };
            match (&result, open) {
                (Ok(n), true) if *n == data.len() => {
                    drv.borrow_mut().end(id).accepted.extend_from_slice(&data);
                }
                (Err(SocketError::InvalidState(_)), false) => stat(Stat::WriteRefused),
                (r, _) => violation(
                    drv,
                    format!(
                        "{id:?}: write of {} B in state {state:?} returned {r:?}",
                        data.len()
                    ),
                ),
            }
        }
        Op::Close { conn, end, how } => {
            let Some((_, Some(id), _)) = drv.borrow_mut().ends_of(conn, end) else {
                return;
            };
            let Some(socket) = socket_of(drv, id) else {
                return;
            };
            let tls = drv.borrow().case.tls;
            let state = socket.state();
            {
                let mut d = drv.borrow_mut();
                let e = d.end(id);
                e.closed = true;
                match how {
                    How::Graceful => {
                        let connecting =
                            matches!(state, SocketState::HostLookup | SocketState::Connecting);
                        // Documented: while connecting a graceful close with nothing queued
                        // cancels the attempt; with bytes queued it connects, sends them and
                        // closes. During a TLS handshake with nothing queued it ends the
                        // handshake.
                        e.graceful |= state == SocketState::Connected
                            || (connecting && !e.accepted.is_empty());
                        e.hard |= connecting && e.accepted.is_empty();
                        e.cancelled |= tls
                            && state == SocketState::Connected
                            && !socket.is_encrypted()
                            && socket.bytes_to_write() == 0;
                    }
                    How::Abort => e.hard |= state != SocketState::Unconnected,
                    How::Drop => e.hard = true,
                }
            }
            match how {
                How::Graceful => socket.disconnect_from_host(),
                How::Abort => socket.abort(),
                How::Drop => {
                    let handle = {
                        let mut d = drv.borrow_mut();
                        let e = d.end(id);
                        e.dropped = true;
                        e.events.push(Ev::Dropped);
                        e.handle.take()
                    };
                    drop(socket);
                    drop(handle);
                }
            }
        }
        Op::ServerClose => {
            let server = drv.borrow().server.clone();
            let Some(server) = server else { return };
            {
                let mut d = drv.borrow_mut();
                if d.listening {
                    d.expected_server_events
                        .push(ServerEv::State(ServerState::NotListening));
                    stop_listening(&mut d);
                }
            }
            server.close();
            if server.is_listening()
                || server.state() != ServerState::NotListening
                || !server.server_addresses().is_empty()
            {
                violation(drv, "still listening after close".into());
            }
        }
        Op::ServerListen => {
            let server = drv.borrow().server.clone();
            let Some(server) = server else { return };
            let (host, was) = {
                let d = drv.borrow();
                let host = match d.case.family {
                    Family::V4 => "127.0.0.1",
                    Family::V6 => "::1",
                    Family::Localhost => "localhost",
                    Family::DualStack => "::",
                };
                (host, d.listening)
            };
            if !was {
                let mut d = drv.borrow_mut();
                d.expected_server_events
                    .push(ServerEv::State(ServerState::Listening));
                d.expected_server_events.push(ServerEv::ListeningStarted);
                d.listening = true;
            } else {
                // Also emitted (KDNetwork's `setError`), the server listening on.
                let error = SocketError::InvalidState("server is already listening");
                drv.borrow_mut()
                    .expected_server_events
                    .push(ServerEv::Error(error.to_string()));
            }
            let result = server.listen(host, 0);
            match (&result, was) {
                (Ok(()), false) => {
                    let port = server.server_port();
                    let mut d = drv.borrow_mut();
                    d.port = port.unwrap_or(0);
                    if port.is_none() {
                        d.violations.push("listening without a port".into());
                    }
                }
                (Err(SocketError::InvalidState(_)), true) => {}
                (r, _) => violation(drv, format!("listen while listening {was}: {r:?}")),
            }
        }
        Op::ServerDrop => {
            let server = {
                let mut d = drv.borrow_mut();
                stop_listening(&mut d);
                let server = d.server.take();
                if server.is_some() {
                    d.server_events.push(ServerEv::Dropped);
                    d.expected_server_events.push(ServerEv::Dropped);
                }
                server
            };
            drop(server);
        }
    }
}

fn stop_listening(d: &mut Driver) {
    d.listening = false;
    for c in &mut d.conns {
        c.stopped_after = true;
    }
}

fn connect(drv: &Drv) {
    let (i, ip, port, tls, refused) = {
        let mut d = drv.borrow_mut();
        let i = d.conns.len();
        let ip = match d.case.family {
            Family::V4 => d.ip_v4,
            Family::V6 => d.ip_v6,
            Family::Localhost | Family::DualStack if i % 2 == 0 => d.ip_v6,
            Family::Localhost | Family::DualStack => d.ip_v4,
        };
        let refused = !d.listening;
        d.conns.push(Conn {
            refused,
            ..Conn::default()
        });
        (i, ip, d.port, d.case.tls, refused)
    };
    if refused {
        stat(Stat::Refused);
    }
    let (handle, socket) = if tls {
        let ssl = SslSocket::with_config(
            TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let socket = ssl.tcp_socket().clone();
        (Handle::Ssl(ssl), socket)
    } else {
        let socket = TcpSocket::new().unwrap();
        (Handle::Plain(socket.clone()), socket)
    };
    let id = EndId::Client(i);
    watch(drv, id, &socket);
    {
        let mut d = drv.borrow_mut();
        let e = d.end(id);
        e.socket = Rc::downgrade(&socket);
    }
    let result = match &handle {
        Handle::Ssl(ssl) => ssl.connect_to_address(ip, port),
        Handle::Plain(s) => s.connect_to_address(ip, port),
    };
    drv.borrow_mut().end(id).handle = Some(handle);
    if let Err(e) = result {
        violation(drv, format!("{id:?}: connect_to_address failed: {e}"));
    }
}

fn start_server(drv: &Drv) -> Result<(), TestCaseError> {
    let server = TcpServer::new().unwrap();
    if drv.borrow().case.tls {
        server.set_tls_config(server_config());
    }
    let weak = Rc::downgrade(&server);
    let d = drv.clone();
    server
        .state_changed
        .connect(move |state| d.borrow_mut().server_events.push(ServerEv::State(*state)))
        .release();
    let d = drv.clone();
    server
        .listening_started
        .connect(move |_| {
            d.borrow_mut()
                .server_events
                .push(ServerEv::ListeningStarted)
        })
        .release();
    let d = drv.clone();
    server
        .error_occurred
        .connect(move |e| {
            d.borrow_mut()
                .server_events
                .push(ServerEv::Error(e.to_string()))
        })
        .release();
    let d = drv.clone();
    server
        .new_connection
        .connect(move |socket: &Rc<TcpSocket>| {
            let listening = weak.upgrade().is_some_and(|s| s.is_listening());
            let (j, kept) = {
                let mut dm = d.borrow_mut();
                dm.server_events.push(ServerEv::NewConnection { listening });
                let k = dm.new_connections;
                dm.new_connections += 1;
                let kept = dm.case.keep[k % dm.case.keep.len()];
                let j = dm.accepted.len();
                dm.accepted.push(Accepted {
                    end: EndRec {
                        socket: Rc::downgrade(socket),
                        addr: socket.peer_address(),
                        ..EndRec::default()
                    },
                    kept,
                    paired: false,
                });
                (j, kept)
            };
            let id = EndId::Accepted(j);
            let state = socket.state();
            if state != SocketState::Connected || socket.is_encrypted() {
                violation(
                    &d,
                    format!(
                        "{id:?}: accepted in state {state:?}, encrypted {}",
                        socket.is_encrypted()
                    ),
                );
            }
            let family_ok = {
                let dm = d.borrow();
                match (dm.case.family, socket.peer_address()) {
                    (Family::V4, Some(a)) => a.ip() == dm.ip_v4,
                    (Family::V6, Some(a)) => a.ip() == dm.ip_v6,
                    // Over `::` too: an IPv4 client is reported as IPv4, not `::ffff:…`.
                    (Family::Localhost | Family::DualStack, Some(a)) => {
                        a.ip() == dm.ip_v4 || a.ip() == dm.ip_v6
                    }
                    (_, None) => false,
                }
            };
            if !family_ok {
                violation(
                    &d,
                    format!("{id:?}: accepted from {:?}", socket.peer_address()),
                );
            }
            watch(&d, id, socket);
            if kept {
                d.borrow_mut().end(id).handle = Some(Handle::Plain(socket.clone()));
            }
            fired(&d, id, Fired::NewConnection);
            if !kept {
                // Left: the socket is closed once this slot returns.
                let mut dm = d.borrow_mut();
                let e = dm.end(id);
                if !e.dropped {
                    e.dropped = true;
                    e.hard = true;
                    e.events.push(Ev::Dropped);
                }
            }
        })
        .release();
    drv.borrow_mut().server = Some(server);
    make(drv, Op::ServerListen);
    let d = drv.borrow();
    prop_assert!(d.violations.is_empty(), "{:?}", d.violations);
    Ok(())
}

fn server_config() -> Arc<rustls::ServerConfig> {
    let pki = test_pki();
    TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap()
}

// ---- running a case ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Stat {
    Cases,
    Connections,
    Clean,
    Cut,
    Refused,
    Left,
    Unaccepted,
    WriteRefused,
    Errors,
    HandshakeErrors,
    AliveAfterServerStop,
}

const STAT_NAMES: [&str; 11] = [
    "cases",
    "connections",
    "clean connections (full exchange checked)",
    "connections cut (abort, drop, cancel)",
    "connects refused (nothing listening)",
    "connections left by new_connection",
    "clients never accepted (server stopped first)",
    "writes refused (closed)",
    "error_occurred on an end",
    "handshake_error on an end",
    "accepted connections alive as the server stopped, still clean",
];

static STATS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

fn stat(s: Stat) {
    STATS[s as usize].fetch_add(1, Ordering::Relaxed);
}

fn slow(drv: &Drv, id: EndId) -> bool {
    let (client, server) = drv.borrow().case.slow;
    match id {
        EndId::Client(_) => client,
        EndId::Accepted(_) => server,
    }
}

/// A slow reader's reads from outside: 32 KiB per end and turn.
fn read_slowly(drv: &Drv) {
    let ids: Vec<EndId> = {
        let d = drv.borrow();
        (0..d.conns.len())
            .map(EndId::Client)
            .chain((0..d.accepted.len()).map(EndId::Accepted))
            .collect()
    };
    for id in ids.into_iter().filter(|&id| slow(drv, id)) {
        if let Some(s) = socket_of(drv, id) {
            let data = s.read(32 * 1024);
            drv.borrow_mut().end(id).received.extend_from_slice(&data);
        }
    }
}

/// Whether an end is done: its handle dropped, or closed.
fn gone(drv: &Drv, id: EndId) -> bool {
    socket_of(drv, id).is_none_or(|s| s.state() == SocketState::Unconnected)
}

/// Whether connection `i` is at rest: both ends closed, or both connected (TLS: encrypted)
/// with everything written delivered.
fn settled(drv: &Drv, i: usize) -> bool {
    let client = EndId::Client(i);
    let server = drv.borrow_mut().pair(i).map(EndId::Accepted);
    let Some(server) = server else {
        return gone(drv, client);
    };
    if gone(drv, client) && gone(drv, server) {
        return true;
    }
    let (Some(c), Some(s)) = (socket_of(drv, client), socket_of(drv, server)) else {
        return false;
    };
    let tls = drv.borrow().case.tls;
    let d = drv.borrow();
    let up = |x: &TcpSocket| {
        x.state() == SocketState::Connected && (!tls || x.is_encrypted()) && x.bytes_to_write() == 0
    };
    let (ce, se) = (d.end_ref(client), d.end_ref(server));
    up(&c)
        && up(&s)
        && ce.written == ce.accepted.len()
        && se.written == se.accepted.len()
        && se.received.len() == ce.accepted.len()
        && ce.received.len() == se.accepted.len()
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    stat(Stat::Cases);
    let v6 = ipv6_loopback_available();
    if !v6 && case.family != Family::V4 {
        return Ok(());
    }
    let drv: Drv = Rc::new(RefCell::new(Driver {
        case: case.clone(),
        ip_v4: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip_v6: IpAddr::V6(Ipv6Addr::LOCALHOST),
        conns: Vec::new(),
        accepted: Vec::new(),
        server: None,
        server_events: Vec::new(),
        expected_server_events: Vec::new(),
        listening: false,
        port: 0,
        next: 0,
        idle_turns: 0,
        new_connections: 0,
        violations: Vec::new(),
    }));
    start_server(&drv)?;

    let deadline = Instant::now() + Duration::from_secs(40);
    let hung = |drv: &Drv, phase: &str| -> Result<(), TestCaseError> {
        if Instant::now() > deadline {
            let d = drv.borrow();
            let states: Vec<String> = (0..d.conns.len())
                .map(|i| {
                    let c = &d.conns[i];
                    let server = c.server.map(|j| {
                        let e = &d.accepted[j].end;
                        (
                            e.socket.upgrade().map(|s| s.state()),
                            e.accepted.len(),
                            e.written,
                            e.received.len(),
                            &e.events,
                        )
                    });
                    format!(
                        "conn {i}: client {:?} accepted {} written {} received {} events {:?}; \
                         server {:?}",
                        c.client.socket.upgrade().map(|s| s.state()),
                        c.client.accepted.len(),
                        c.client.written,
                        c.client.received.len(),
                        c.client.events,
                        server
                    )
                })
                .collect();
            prop_assert!(false, "hung in {phase}: {states:#?}");
        }
        Ok(())
    };

    // The script.
    loop {
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .expect("loop turn");
        read_slowly(&drv);
        let step = {
            let mut d = drv.borrow_mut();
            d.idle_turns += 1;
            d.case.steps.get(d.next).copied().map(|s| (s, d.idle_turns))
        };
        let Some((step, idle)) = step else { break };
        // A trigger that does not come is replaced by the step made from outside.
        if step.trigger == Trigger::Outside || idle > 4 {
            run_steps(&drv);
        }
        hung(&drv, "the script")?;
    }
    // Every connection comes to rest, then those still open are closed by their clients.
    loop {
        let n = drv.borrow().conns.len();
        if (0..n).all(|i| settled(&drv, i)) {
            break;
        }
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .expect("loop turn");
        read_slowly(&drv);
        hung(&drv, "settling")?;
    }
    let n = drv.borrow().conns.len();
    for i in 0..n {
        if let Some(s) = socket_of(&drv, EndId::Client(i)) {
            s.disconnect_from_host();
        }
    }
    loop {
        let all_gone = {
            let n = drv.borrow().conns.len();
            let m = drv.borrow().accepted.len();
            (0..n).all(|i| gone(&drv, EndId::Client(i)))
                && (0..m).all(|j| gone(&drv, EndId::Accepted(j)))
        };
        if all_gone {
            break;
        }
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .expect("loop turn");
        read_slowly(&drv);
        hung(&drv, "closing")?;
    }
    for _ in 0..3 {
        event_loop
            .process_events(Some(Duration::from_millis(1)))
            .expect("loop turn");
    }
    let n = drv.borrow().conns.len();
    for i in 0..n {
        drv.borrow_mut().pair(i);
    }
    // What is left unread.
    let ids: Vec<EndId> = {
        let d = drv.borrow();
        (0..d.conns.len())
            .map(EndId::Client)
            .chain((0..d.accepted.len()).map(EndId::Accepted))
            .collect()
    };
    for id in ids {
        if let Some(s) = socket_of(&drv, id) {
            let data = s.read_all();
            drv.borrow_mut().end(id).received.extend_from_slice(&data);
        }
    }
    let server = drv.borrow_mut().server.take();
    drop(server);
    let d = drv.borrow();
    check_model(&d)
}

// ---- the model ---------------------------------------------------------------------------------

fn check_model(d: &Driver) -> Result<(), TestCaseError> {
    prop_assert!(d.violations.is_empty(), "{:?}", d.violations);
    let tls = d.case.tls;

    // The server's own signals: exactly the listens and closes the model expects, and
    // `new_connection` only while listening.
    let own: Vec<&ServerEv> = d
        .server_events
        .iter()
        .filter(|e| !matches!(e, ServerEv::NewConnection { .. }))
        .collect();
    let expected: Vec<&ServerEv> = d.expected_server_events.iter().collect();
    prop_assert_eq!(own, expected, "server events {:?}", d.server_events);
    let mut listening = false;
    for e in &d.server_events {
        match e {
            ServerEv::State(s) => listening = *s == ServerState::Listening,
            ServerEv::Dropped => listening = false,
            ServerEv::NewConnection { listening: said } => {
                prop_assert!(
                    listening && *said,
                    "new_connection while not listening: {:?}",
                    d.server_events
                );
            }
            _ => {}
        }
    }

    for (i, c) in d.conns.iter().enumerate() {
        stat(Stat::Connections);
        let server = c.server.map(|j| &d.accepted[j]);
        let ctx = || {
            format!(
                "conn {i} (refused {}, stopped after {}): client events {:?}, accepted {} B, \
                 written {}, received {} B; server {:?}",
                c.refused,
                c.stopped_after,
                c.client.events,
                c.client.accepted.len(),
                c.client.written,
                c.client.received.len(),
                server.map(|a| (
                    a.kept,
                    &a.end.events,
                    a.end.accepted.len(),
                    a.end.written,
                    a.end.received.len()
                ))
            )
        };
        check_end(&c.client, true, tls)
            .map_err(|e| TestCaseError::fail(format!("{e}; {}", ctx())))?;
        if let Some(a) = server {
            check_end(&a.end, false, tls)
                .map_err(|e| TestCaseError::fail(format!("{e}; {}", ctx())))?;
        }
        if c.refused {
            // Nothing listened: the connect fails, typed.
            prop_assert!(server.is_none(), "a refused client was accepted: {}", ctx());
            let errors: Vec<&Ev> = c
                .client
                .events
                .iter()
                .filter(|e| matches!(e, Ev::Error(_)))
                .collect();
            if !c.client.cut() {
                prop_assert!(
                    matches!(
                        errors[..],
                        [Ev::Error(SocketError::Io {
                            operation: SocketOperation::Connect,
                            ..
                        })]
                    ),
                    "refused connect not reported as a connect error: {}",
                    ctx()
                );
            }
            prop_assert!(!c.client.events.contains(&Ev::Connected), "{}", ctx());
            continue;
        }
        let Some(a) = server else {
            // Not handed over: only when the server stopped first, or the client gave up.
            stat(Stat::Unaccepted);
            prop_assert!(
                c.stopped_after || c.client.cut(),
                "a client of a listening server was never accepted: {}",
                ctx()
            );
            prop_assert!(c.client.received.is_empty(), "{}", ctx());
            // Documented: connections waiting in the backlog are refused (reset), which the
            // client reports, unless it gave up first.
            if !c.client.cut() && !c.client.dropped {
                prop_assert!(
                    c.client.events.iter().any(|e| matches!(e, Ev::Error(_))),
                    "a client left in the backlog of a stopped server saw no error: {}",
                    ctx()
                );
            }
            continue;
        };
        if !a.kept {
            stat(Stat::Left);
        }
        let cut = c.client.cut() || a.end.cut() || !a.kept;
        let errors = [&c.client, &a.end]
            .iter()
            .flat_map(|e| e.events.iter())
            .filter(|e| matches!(e, Ev::Error(_)))
            .count();
        if errors > 0 {
            stat(Stat::Errors);
        }
        if [&c.client, &a.end]
            .iter()
            .any(|e| e.events.iter().any(|e| matches!(e, Ev::HandshakeError(_))))
        {
            stat(Stat::HandshakeErrors);
        }
        // An end's errors come from the other end's cut: an abort or drop (a reset, an end
        // without close_notify) or, when that end only cancelled the handshake with a graceful
        // close, the handshake failing as `ClosedByPeer`. Never from its own close.
        for (x, peer, what) in [(&c.client, &a.end, "client"), (&a.end, &c.client, "server")] {
            let errs: Vec<&Ev> = x
                .events
                .iter()
                .filter(|e| matches!(e, Ev::Error(_) | Ev::HandshakeError(_)))
                .collect();
            if errs.is_empty() || peer.hard {
                continue;
            }
            let closed_by_peer = errs.iter().all(|e| {
                matches!(
                    e,
                    Ev::Error(SocketError::ClosedByPeer)
                        | Ev::HandshakeError(SocketError::ClosedByPeer)
                )
            });
            prop_assert!(
                peer.cancelled && closed_by_peer && errs.len() == 2,
                "{what} end: an error the other end's actions do not explain: {}",
                ctx()
            );
        }
        // Each direction: a prefix of what was accepted, in order.
        for (from, to, what) in [
            (&c.client, &a.end, "client to server"),
            (&a.end, &c.client, "server to client"),
        ] {
            prop_assert!(
                to.received.len() <= from.accepted.len()
                    && to.received[..] == from.accepted[..to.received.len()],
                "{what}: bytes out of order or never written: {}",
                ctx()
            );
        }
        if cut {
            stat(Stat::Cut);
            continue;
        }
        stat(Stat::Clean);
        if c.stopped_after {
            stat(Stat::AliveAfterServerStop);
        }
        for (from, to, what) in [
            (&c.client, &a.end, "client to server"),
            (&a.end, &c.client, "server to client"),
        ] {
            prop_assert_eq!(
                from.written,
                from.accepted.len(),
                "{}: not all reported written: {}",
                what,
                ctx()
            );
            // Complete unless the receiver closed first (it lingers, discarding).
            if !to.graceful {
                prop_assert_eq!(
                    to.received.len(),
                    from.accepted.len(),
                    "{}: not all delivered: {}",
                    what,
                    ctx()
                );
            }
        }
        if tls {
            for e in [&c.client, &a.end] {
                prop_assert!(
                    e.events.contains(&Ev::Handshake),
                    "a clean TLS connection without handshake_completed: {}",
                    ctx()
                );
            }
        }
    }
    // Accepted sockets no client claims: a client that gave up before its address was known.
    let unclaimed = d.accepted.iter().filter(|a| !a.paired).count();
    let unknown = d
        .conns
        .iter()
        .filter(|c| c.server.is_none() && c.client.cut() && c.client.addr.is_none())
        .count();
    prop_assert!(
        unclaimed <= unknown,
        "{unclaimed} accepted sockets without their client ({unknown} clients gave up early)"
    );
    for a in d.accepted.iter().filter(|a| !a.paired) {
        check_end(&a.end, false, tls).map_err(TestCaseError::fail)?;
        prop_assert!(
            a.end.received.is_empty(),
            "an unclaimed socket received data"
        );
    }
    Ok(())
}

/// The signal rules of one end.
fn check_end(e: &EndRec, client: bool, tls: bool) -> Result<(), String> {
    let ev = &e.events;
    let count = |f: &dyn Fn(&Ev) -> bool| ev.iter().filter(|e| f(e)).count();
    let pos = |f: &dyn Fn(&Ev) -> bool| ev.iter().position(f);
    let connected = count(&|e| *e == Ev::Connected);
    let disconnected = count(&|e| *e == Ev::Disconnected);
    let fail = |what: &str| {
        Err(format!(
            "{} end: {what}",
            if client { "client" } else { "server" }
        ))
    };
    if (client && connected > 1) || (!client && connected > 0) || disconnected > 1 {
        return fail("connected/disconnected count");
    }
    if client
        && disconnected == 1
        && pos(&|e| *e == Ev::Connected) > pos(&|e| *e == Ev::Disconnected)
    {
        return fail("disconnected before connected");
    }
    if !e.dropped {
        let announced = !client || connected == 1;
        if disconnected != usize::from(announced) {
            return fail("disconnected missing or extra");
        }
        let last = ev.last();
        let want = if announced {
            Ev::Disconnected
        } else {
            Ev::State(SocketState::Unconnected)
        };
        if last != Some(&want) {
            return fail("does not end with its close");
        }
    }
    let mut prev = if client {
        SocketState::Unconnected
    } else {
        SocketState::Connected
    };
    for s in ev.iter().filter_map(|e| match e {
        Ev::State(s) => Some(*s),
        _ => None,
    }) {
        let allowed = matches!(
            (prev, s),
            (SocketState::Unconnected, SocketState::Connecting)
                | (SocketState::Connecting, SocketState::Connected)
                | (SocketState::Connected, SocketState::Closing)
                | (SocketState::Connected, SocketState::Unconnected)
                | (SocketState::Closing, SocketState::Unconnected)
                | (SocketState::Connecting, SocketState::Unconnected)
        );
        if !allowed {
            return fail(&format!("state {prev:?} -> {s:?}"));
        }
        prev = s;
    }
    let errors: Vec<&SocketError> = ev
        .iter()
        .filter_map(|e| match e {
            Ev::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    if errors.len() > 1 {
        return fail("more than one error");
    }
    if let Some(err) = errors.first() {
        let typed = match err {
            SocketError::Io { operation, .. } => matches!(
                operation,
                SocketOperation::Read | SocketOperation::Write | SocketOperation::Connect
            ),
            SocketError::ClosedByPeer | SocketError::Tls(_) => tls,
            _ => false,
        };
        if !typed {
            return fail(&format!("error not typed as documented: {err:?}"));
        }
        let at = pos(&|e| matches!(e, Ev::Error(_))).unwrap();
        if pos(&|e| *e == Ev::Disconnected).is_some_and(|dis| dis < at) {
            return fail("error after disconnected");
        }
    }
    if let Some(h) = pos(&|e| matches!(e, Ev::HandshakeError(_))) {
        let Ev::HandshakeError(he) = &ev[h] else {
            unreachable!()
        };
        if ev.get(h + 1) != Some(&Ev::Error(he.clone())) {
            return fail("handshake_error not followed by its error_occurred");
        }
    }
    let reported: usize = ev
        .iter()
        .map(|e| if let Ev::Written(n) = e { *n } else { 0 })
        .sum();
    if reported != e.written || e.written > e.accepted.len() {
        return fail("bytes_written sums to more than was accepted");
    }
    if let Some(c) = pos(&|e| matches!(e, Ev::State(SocketState::Unconnected))) {
        if ev[c..].iter().any(|e| {
            matches!(
                e,
                Ev::Written(_) | Ev::Received(_) | Ev::ReadyRead | Ev::Connected | Ev::Handshake
            )
        }) {
            return fail("a data signal after the close");
        }
    }
    let handshakes = count(&|e| *e == Ev::Handshake);
    if !tls && (handshakes > 0 || pos(&|e| matches!(e, Ev::HandshakeError(_))).is_some()) {
        return fail("a handshake signal on plain TCP");
    }
    if tls {
        if handshakes > 1 {
            return fail("handshake_completed twice");
        }
        let first_data = pos(&|e| matches!(e, Ev::Written(_) | Ev::Received(_) | Ev::ReadyRead));
        if let Some(f) = first_data {
            if pos(&|e| *e == Ev::Handshake).is_none_or(|h| h > f) {
                return fail("a data signal before handshake_completed");
            }
        }
    }
    if !e.dropped {
        let announced: usize = ev
            .iter()
            .map(|e| if let Ev::Received(n) = e { *n } else { 0 })
            .sum();
        if announced != e.received.len() {
            return fail("bytes_received does not sum to what was read");
        }
    }
    Ok(())
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn servers_and_their_clients_in_one_loop_match_the_model() {
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(Config {
        max_shrink_iters: 300,
        max_shrink_time: 120_000,
        ..support::model::config(40)
    });
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    support::model::finish_run(
        started,
        STATS[Stat::Cases as usize].load(Ordering::Relaxed),
        STAT_NAMES
            .iter()
            .skip(1)
            .zip(STATS.iter().skip(1))
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed))),
        result,
    );
}
