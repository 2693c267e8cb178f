//! A randomised, model-based test of the byte-stream sockets (`TcpSocket`, `SslSocket`, the
//! sockets a `TcpServer` accepts) over real loopback.
//!
//! Each generated case connects a kdnet socket (a client `TcpSocket`/`SslSocket` to a std peer
//! listening on a thread, or a socket the crate's `TcpServer` accepted from a std peer client;
//! 127.0.0.1 or ::1; plain TCP or TLS with the test PKI) and scripts it: 1–6 writes of 0 B to a
//! few hundred KiB, each made from outside (between loop turns), right after the connect (or in
//! `new_connection`), or from a `connected`, `bytes_written` or `ready_read` slot; everything
//! that arrives is read from `ready_read` (and what is left, from `disconnected`); then a
//! graceful `disconnect_from_host`, an `abort`, dropping the last handle, or nothing (the peer
//! ends it), either in the same call as the last write (data still queued) or once
//! `bytes_written` has reported every byte (from its slot or from outside). The peer writes a
//! reply of 0–64 KiB in 1–3 pieces, reads fast or slowly (a small receive buffer and pauses, so
//! the kdnet side's kernel buffer fills and its writes queue), and ends by reading to the end
//! of stream, by half-closing after its reply (TLS: close_notify first) and reading on, or by
//! resetting the connection after reading some bytes.
//!
//! The model is the documented behaviour (module docs of `tcp::socket`, the signal docs on
//! `TcpSocket`, PORTING.md's socket rows): `write` is accepted (all of it) exactly while the
//! state is `HostLookup`, `Connecting` or `Connected`, else `InvalidState`; the peer receives a
//! prefix of the accepted bytes in order, and all of them when nothing cut the connection (no
//! abort, drop, reset or error); `bytes_written` sums to no more than what was accepted, and to
//! all of it on such a clean end, is never emitted before `connected`, and never after the
//! close; what the peer sent arrives in order, complete before `disconnected` when the peer
//! ended the connection; `bytes_received` sums to what was read; `connected` and `disconnected`
//! come at most once each, in that order (`disconnected` for an accepted socket without
//! `connected`), `error_occurred` at most once, before `disconnected`, only when the peer
//! reset, typed as a read or write failure (or, over TLS, a truncation); every slot sees the
//! state its signal implies; a graceful close ends a TLS stream with close_notify; after the
//! last handle is dropped nothing is emitted; and every case ends within a generous bound.
//!
//! `PROPTEST_CASES` sets the number of cases (default 100, about 4 s in a debug build).

mod support;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::{
    SocketError, SocketOperation, SocketState, SslSocket, TcpServer, TcpSocket, TlsClientConfig,
    TlsFailure, TlsServerConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use support::certs::test_pki;
use support::pattern;
use support::socket_events::SocketEvent as Ev;
use support::socket_model::{
    self, SocketModel, Writes, check, handshake_errors_reported, state_path, watch,
};

/// Where the kdnet side's socket comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A client socket connecting to a std peer.
    Client,
    /// A socket the crate's `TcpServer` accepted from a std peer client.
    Accepted,
}

/// From where a write is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// From outside, between loop turns.
    Outside,
    /// Right after `connect_to_address` (client) or in `new_connection` (accepted).
    Early,
    /// In a `connected` slot (accepted sockets: in `new_connection`).
    InConnected,
    /// In a `bytes_written` slot.
    InBytesWritten,
    /// In a `ready_read` slot.
    InReadyRead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The kdnet side never closes: the peer ends the connection.
    Nothing,
    Graceful,
    Abort,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseAt {
    /// In the same call as the last write (its bytes still queued).
    WithLastWrite,
    /// Once `bytes_written` reported every accepted byte: from the slot, or from outside.
    AfterAllWritten { in_slot: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEnd {
    /// Reads until the kdnet side's end of stream.
    ReadToEof,
    /// Shuts down its sending side after its reply (TLS: close_notify first), reads on to the end.
    HalfClose,
    /// Resets the connection after reading this many bytes (or at the end of stream).
    Reset { after: usize },
}

#[derive(Debug, Clone)]
struct Case {
    side: Side,
    v6: bool,
    tls: bool,
    writes: Vec<(usize, When)>,
    close: Close,
    close_at: CloseAt,
    slow: bool,
    reply: usize,
    reply_pieces: usize,
    peer_end: PeerEnd,
    seed: u64,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        3 => 1usize..200,
        3 => 200usize..20_000,
        2 => 20_000usize..300_000,
    ]
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        3 => Just(When::Outside),
        1 => Just(When::Early),
        1 => Just(When::InConnected),
        2 => Just(When::InBytesWritten),
        1 => Just(When::InReadyRead),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            prop_oneof![Just(Side::Client), Just(Side::Accepted)],
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec((size(), when()), 1..=6),
        ),
        (
            prop_oneof![
                1 => Just(Close::Nothing),
                3 => Just(Close::Graceful),
                1 => Just(Close::Abort),
                1 => Just(Close::Drop),
            ],
            prop_oneof![
                Just(CloseAt::WithLastWrite),
                any::<bool>().prop_map(|in_slot| CloseAt::AfterAllWritten { in_slot }),
            ],
            any::<bool>(),
            prop_oneof![Just(0usize), 1usize..2_000, 2_000usize..65_536],
            1usize..=3,
            prop_oneof![
                2 => Just(PeerEnd::ReadToEof),
                2 => Just(PeerEnd::HalfClose),
                1 => (0usize..400_000).prop_map(|after| PeerEnd::Reset { after }),
            ],
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (side, v6, tls, writes),
                (close, close_at, slow, reply, reply_pieces, peer_end, seed),
            )| {
                // Somebody must end the connection.
                let total: usize = writes.iter().map(|w| w.0).sum();
                let peer_end = match (close, peer_end) {
                    (Close::Nothing, PeerEnd::ReadToEof) => PeerEnd::HalfClose,
                    (Close::Nothing, PeerEnd::Reset { after }) => PeerEnd::Reset {
                        after: after.min(total),
                    },
                    (_, end) => end,
                };
                Case {
                    side,
                    v6,
                    tls,
                    writes,
                    close,
                    close_at,
                    slow,
                    reply,
                    reply_pieces,
                    peer_end,
                    seed,
                }
            },
        )
}

// ---- the peer (a std thread) -----------------------------------------------------------------

/// How the peer's reading ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerSaw {
    /// End of stream (over TLS: after close_notify).
    Eof,
    /// Over TLS: a TCP end without close_notify.
    Truncated,
    /// It reset the connection itself.
    ResetItself,
    /// A read error (a reset from the kdnet side's abort, say).
    Error(ErrorKind),
}

#[derive(Debug)]
struct PeerReport {
    received: Vec<u8>,
    saw: PeerSaw,
    reply_written: bool,
}

trait PeerStream: Read + Write {
    fn tcp(&self) -> &TcpStream;
    /// Half-close: close_notify over TLS, then the TCP write side.
    fn half_close(&mut self);
    /// Completes the TLS handshake (nothing for plain TCP): a close_notify queued before it
    /// would go out unencrypted, which proves nothing.
    fn handshake(&mut self) -> bool {
        true
    }
}

impl PeerStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn half_close(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl<C, D> PeerStream for rustls::StreamOwned<C, TcpStream>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
    rustls::StreamOwned<C, TcpStream>: Read + Write,
{
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn handshake(&mut self) -> bool {
        while self.conn.is_handshaking() {
            if self.conn.complete_io(&mut self.sock).is_err() {
                return false;
            }
        }
        true
    }
    fn half_close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// The peer's script on an established stream.
fn run_peer(mut stream: Box<dyn PeerStream>, case: &Case, reply: &[u8]) -> PeerReport {
    let _ = stream.tcp().set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream
        .tcp()
        .set_write_timeout(Some(Duration::from_secs(30)));
    let mut reply_written = stream.handshake();
    let piece = reply.len().div_ceil(case.reply_pieces).max(1);
    for chunk in reply.chunks(piece) {
        if !reply_written {
            break;
        }
        if stream
            .write_all(chunk)
            .and_then(|()| stream.flush())
            .is_err()
        {
            reply_written = false;
            break;
        }
    }
    if case.peer_end == PeerEnd::HalfClose && reply_written {
        stream.half_close();
    }
    if case.slow {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut received = Vec::new();
    let mut buf = vec![0u8; if case.slow { 4096 } else { 64 * 1024 }];
    let saw = loop {
        if let PeerEnd::Reset { after } = case.peer_end {
            if received.len() >= after {
                let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
                break PeerSaw::ResetItself;
            }
        }
        let want = match case.peer_end {
            PeerEnd::Reset { after } => buf.len().min(after - received.len()),
            _ => buf.len(),
        };
        match stream.read(&mut buf[..want]) {
            Ok(0) => {
                if let PeerEnd::Reset { .. } = case.peer_end {
                    let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
                }
                break PeerSaw::Eof;
            }
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if case.slow {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break PeerSaw::Truncated,
            Err(e) => break PeerSaw::Error(e.kind()),
        }
    };
    PeerReport {
        received,
        saw,
        reply_written,
    }
}

fn rustls_client_config() -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(test_pki().ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn server_config() -> Arc<rustls::ServerConfig> {
    let pki = test_pki();
    TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap()
}

fn small_receive_buffer(socket: &socket2::Socket) {
    let _ = socket.set_recv_buffer_size(4096);
}

/// A listening std socket for the peer (small receive buffer when slow), and its address.
fn peer_listener(ip: IpAddr, slow: bool) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    if slow {
        small_receive_buffer(&socket);
    }
    socket.bind(&addr.into()).unwrap();
    socket.listen(8).unwrap();
    socket.into()
}

/// Starts the peer on a thread: it accepts from `listener` (client side) or connects to
/// `connect_to` (accepted side).
fn start_peer(
    case: &Case,
    listener: Option<std::net::TcpListener>,
    connect_to: Option<SocketAddr>,
    reply: Vec<u8>,
) -> mpsc::Receiver<PeerReport> {
    let (tx, rx) = mpsc::channel();
    let case = case.clone();
    std::thread::spawn(move || {
        let tcp = match (listener, connect_to) {
            (Some(listener), _) => {
                // A connect the kdnet side cancelled may never reach the listener.
                listener.set_nonblocking(true).unwrap();
                let deadline = Instant::now() + Duration::from_secs(3);
                loop {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            tcp.set_nonblocking(false).unwrap();
                            break tcp;
                        }
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => {
                            let _ = tx.send(PeerReport {
                                received: Vec::new(),
                                saw: PeerSaw::Eof,
                                reply_written: false,
                            });
                            return;
                        }
                    }
                }
            }
            (None, Some(addr)) => {
                use socket2::{Domain, Socket, Type};
                let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
                if case.slow {
                    small_receive_buffer(&socket);
                }
                if socket.connect(&addr.into()).is_err() {
                    return;
                }
                socket.into()
            }
            (None, None) => unreachable!(),
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn PeerStream> = match (case.tls, case.side) {
            (false, _) => Box::new(tcp),
            (true, Side::Client) => {
                let conn = rustls::ServerConnection::new(server_config()).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
            (true, Side::Accepted) => {
                let ip = tcp.peer_addr().unwrap().ip();
                let name = rustls::pki_types::ServerName::IpAddress(ip.into());
                let conn = rustls::ClientConnection::new(rustls_client_config(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let _ = tx.send(run_peer(stream, &case, &reply));
    });
    rx
}

// ---- the kdnet side ----------------------------------------------------------------------------

/// Keeps the kdnet socket alive: the `SslSocket` (which holds its `TcpSocket`) or the socket.
enum Owner {
    Plain(Rc<TcpSocket>),
    Ssl(Rc<SslSocket>),
}

struct Driver {
    case: Case,
    writes: Writes<When>,
    written: usize,
    received: Vec<u8>,
    events: Vec<Ev>,
    /// Violations seen inside slots (reported after the run).
    violations: Vec<String>,
    closed: bool,
    /// Closed gracefully during a TLS handshake with nothing queued.
    closed_in_handshake: bool,
    dropped: bool,
    aborted_or_dropped: bool,
    owner: Option<Owner>,
    socket: Weak<TcpSocket>,
}

type Drv = Rc<RefCell<Driver>>;

logged!(Driver, dropped);

impl SocketModel<TcpSocket> for Driver {
    fn connected(drv: &Drv, s: &Rc<TcpSocket>) {
        let now = s.state();
        check(
            drv,
            now == SocketState::Connected && s.peer_address().is_some(),
            || format!("connected while {now:?}, peer {:?}", s.peer_address()),
        );
        try_write(drv, s, Some(When::InConnected));
    }

    fn bytes_written(drv: &Drv, s: &Rc<TcpSocket>) {
        try_write(drv, s, Some(When::InBytesWritten));
        if matches!(
            drv.borrow().case.close_at,
            CloseAt::AfterAllWritten { in_slot: true }
        ) {
            close_if_all_written(drv, s);
        }
    }

    fn ready_read(drv: &Drv, s: &Rc<TcpSocket>) {
        try_write(drv, s, Some(When::InReadyRead));
    }
}

/// Issues the next write if it is to be made from `from` (`None`: from outside, whatever its
/// trigger, as a fallback); then the close if it goes with the last write.
fn try_write(drv: &Drv, socket: &TcpSocket, from: Option<When>) {
    let (data, state) = {
        let mut d = drv.borrow_mut();
        if d.dropped {
            return;
        }
        let Some(data) = d.writes.take(from) else {
            return;
        };
        (data, socket.state())
    };
    let result = socket.write(&data);
    {
        let mut d = drv.borrow_mut();
        match d.writes.settle(&data, state, &result) {
            Ok(true) => stat(3),
            Ok(false) => {}
            Err(v) => d.violations.push(v),
        }
    }
    let close_now = {
        let d = drv.borrow();
        d.writes.all_issued() && d.case.close_at == CloseAt::WithLastWrite
    };
    if close_now {
        close(drv, socket);
    }
}

fn close(drv: &Drv, socket: &TcpSocket) {
    let (how, owner) = {
        let mut d = drv.borrow_mut();
        if d.closed || d.dropped {
            return;
        }
        d.closed = true;
        match d.case.close {
            Close::Nothing => return,
            // Documented: while looking up or connecting, a graceful close with nothing
            // queued cancels (an abort); with bytes queued it connects, sends them and closes.
            Close::Graceful
                if d.writes.accepted.is_empty()
                    && matches!(
                        socket.state(),
                        SocketState::HostLookup | SocketState::Connecting
                    ) =>
            {
                d.aborted_or_dropped = true;
                (Close::Graceful, None)
            }
            Close::Graceful => (Close::Graceful, None),
            Close::Abort => {
                d.aborted_or_dropped = true;
                (Close::Abort, None)
            }
            Close::Drop => {
                d.aborted_or_dropped = true;
                d.dropped = true;
                d.events.push(Ev::Dropped);
                (Close::Drop, d.owner.take())
            }
        }
    };
    if how == Close::Graceful {
        // A graceful close during a TLS handshake with nothing queued sends close_notify at
        // once, which ends the handshake (see the report): the peer sees its handshake fail.
        let mut d = drv.borrow_mut();
        d.closed_in_handshake = d.case.tls
            && socket.state() == SocketState::Connected
            && !socket.is_encrypted()
            && d.writes.accepted.is_empty();
    }
    match how {
        Close::Graceful => socket.disconnect_from_host(),
        Close::Abort => socket.abort(),
        _ => drop(owner),
    }
}

/// Closes once every accepted byte has been reported written.
fn close_if_all_written(drv: &Drv, socket: &TcpSocket) {
    let due = {
        let d = drv.borrow();
        d.writes.all_issued()
            && !d.closed
            && matches!(d.case.close_at, CloseAt::AfterAllWritten { .. })
            && d.written == d.writes.accepted.len()
    };
    if due {
        close(drv, socket);
    }
}

static CASES: AtomicU64 = AtomicU64::new(0);
static STATS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
const STAT_NAMES: [&str; 6] = [
    "clean ends",
    "kdnet errors",
    "peer resets",
    "writes refused (InvalidState)",
    "bytes queued at the close (close with data still queued)",
    "TLS cases",
];

fn stat(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
}

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::SeqCst);
    if case.tls {
        stat(5);
    }
    let ip: IpAddr = if case.v6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let reply = pattern(case.reply, case.seed ^ 0x5eed);
    let drv: Drv = Rc::new(RefCell::new(Driver {
        case: case.clone(),
        writes: Writes::new(case.writes.clone(), case.seed),
        written: 0,
        received: Vec::new(),
        events: Vec::new(),
        violations: Vec::new(),
        closed: false,
        closed_in_handshake: false,
        dropped: false,
        aborted_or_dropped: false,
        owner: None,
        socket: Weak::new(),
    }));

    // Set up the connection.
    let mut server_keep = None;
    let peer = match case.side {
        Side::Client => {
            let listener = peer_listener(ip, case.slow);
            let port = listener.local_addr().unwrap().port();
            let rx = start_peer(case, Some(listener), None, reply.clone());
            let (owner, socket) = if case.tls {
                let ssl = SslSocket::with_config(
                    TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes())
                        .unwrap(),
                )
                .unwrap();
                let socket = ssl.tcp_socket().clone();
                (Owner::Ssl(ssl), socket)
            } else {
                let socket = TcpSocket::new().unwrap();
                (Owner::Plain(socket.clone()), socket)
            };
            watch(&drv, &socket);
            {
                let mut d = drv.borrow_mut();
                d.socket = Rc::downgrade(&socket);
            }
            let connect = match &owner {
                Owner::Ssl(ssl) => ssl.connect_to_address(ip, port),
                Owner::Plain(s) => s.connect_to_address(ip, port),
            };
            drv.borrow_mut().owner = Some(owner);
            prop_assert!(connect.is_ok(), "connect: {connect:?}");
            try_write(&drv, &socket, Some(When::Early));
            drop(socket);
            rx
        }
        Side::Accepted => {
            let server = TcpServer::new().unwrap();
            if case.tls {
                server.set_tls_config(server_config());
            }
            server.listen_on(SocketAddr::new(ip, 0)).unwrap();
            let d = drv.clone();
            server
                .new_connection
                .connect(move |socket: &Rc<TcpSocket>| {
                    if d.borrow().socket.strong_count() > 0 || d.borrow().dropped {
                        d.borrow_mut().violations.push("a second connection".into());
                        return;
                    }
                    watch(&d, socket);
                    {
                        let mut dm = d.borrow_mut();
                        dm.socket = Rc::downgrade(socket);
                        dm.owner = Some(Owner::Plain(socket.clone()));
                    }
                    let state = socket.state();
                    check(&d, state == SocketState::Connected, || {
                        format!("accepted socket in state {state:?}")
                    });
                    try_write(&d, socket, Some(When::Early));
                    try_write(&d, socket, Some(When::InConnected));
                })
                .release();
            let addr = server.server_address().unwrap();
            server_keep = Some(server);
            start_peer(case, None, Some(addr), reply.clone())
        }
    };

    // Drive: outside writes, fallbacks, the close; until the kdnet side is done and the peer
    // reported.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut report = None;
    loop {
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .expect("loop turn");
        let socket = drv.borrow().socket.upgrade();
        if let Some(socket) = &socket {
            let started = match case.side {
                Side::Client => true,
                Side::Accepted => drv.borrow().owner.is_some(),
            };
            if started {
                try_write(&drv, socket, Some(When::Outside));
                let stalled = {
                    let mut d = drv.borrow_mut();
                    d.writes.idle_turns += 1;
                    d.writes.idle_turns > 4 || socket.state() == SocketState::Unconnected
                };
                if stalled {
                    try_write(&drv, socket, None);
                }
                if matches!(case.close_at, CloseAt::AfterAllWritten { in_slot: false })
                    || drv.borrow().writes.idle_turns > 4
                {
                    close_if_all_written(&drv, socket);
                }
            }
        }
        if report.is_none() {
            if let Ok(r) = peer.try_recv() {
                report = Some(r);
            }
        }
        let kdnet_done = {
            let d = drv.borrow();
            d.dropped
                || (d.writes.all_issued()
                    && socket
                        .as_ref()
                        .is_some_and(|s| s.state() == SocketState::Unconnected))
        };
        if kdnet_done && report.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let d = drv.borrow();
            let state = socket.as_ref().map(|s| s.state());
            prop_assert!(
                false,
                "hung: kdnet done {kdnet_done} (state {state:?}, {} of {} writes issued, \
                 written {} of {}), peer reported {}; events {:?}",
                d.writes.next,
                d.case.writes.len(),
                d.written,
                d.writes.accepted.len(),
                report.is_some(),
                d.events
            );
        }
    }
    // Nothing more after the end (a turn or two for stray posted reports).
    for _ in 0..3 {
        event_loop
            .process_events(Some(Duration::from_millis(1)))
            .expect("loop turn");
    }
    let socket = drv.borrow().socket.upgrade();
    if let Some(s) = &socket {
        let data = s.read_all();
        drv.borrow_mut().received.extend_from_slice(&data);
    }
    drop(server_keep);
    let report = report.unwrap();
    let d = drv.borrow();
    check_model(&d, case, &reply, &report)
}

fn check_model(
    d: &Driver,
    case: &Case,
    reply: &[u8],
    peer: &PeerReport,
) -> Result<(), TestCaseError> {
    let ev = &d.events;
    let ctx = || {
        format!(
            "events {:?}; accepted {} B, written {} B, peer got {} B ({:?}), kdnet got {} of {} B",
            ev,
            d.writes.accepted.len(),
            d.written,
            peer.received.len(),
            peer.saw,
            d.received.len(),
            reply.len()
        )
    };
    prop_assert!(d.violations.is_empty(), "{:?}; {}", d.violations, ctx());

    let count = |f: &dyn Fn(&Ev) -> bool| ev.iter().filter(|e| f(e)).count();
    let pos = |f: &dyn Fn(&Ev) -> bool| ev.iter().position(f);
    let connected = count(&|e| *e == Ev::Connected);
    let disconnected = count(&|e| *e == Ev::Disconnected);
    let errors: Vec<&SocketError> = ev
        .iter()
        .filter_map(|e| match e {
            Ev::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    let reset = matches!(peer.saw, PeerSaw::ResetItself);
    if reset {
        stat(2);
    }
    if errors.is_empty() && !d.aborted_or_dropped && !reset {
        stat(0);
    }
    if !errors.is_empty() {
        stat(1);
    }

    // connected / disconnected: at most once, in order; accepted sockets never `connected`.
    match case.side {
        Side::Client => prop_assert!(connected <= 1, "{}", ctx()),
        Side::Accepted => prop_assert_eq!(connected, 0, "{}", ctx()),
    }
    prop_assert!(disconnected <= 1, "{}", ctx());
    if case.side == Side::Client && disconnected == 1 {
        prop_assert!(
            pos(&|e| *e == Ev::Connected) < pos(&|e| *e == Ev::Disconnected),
            "disconnected before connected: {}",
            ctx()
        );
    }
    // Unless dropped, the socket ends closed with `disconnected` if it connected or was
    // accepted (a connect cancelled before that ends with `state_changed(Unconnected)`).
    if !d.dropped {
        let announced = case.side == Side::Accepted || connected == 1;
        prop_assert_eq!(disconnected, usize::from(announced), "{}", ctx());
        if announced {
            prop_assert_eq!(ev.last(), Some(&Ev::Disconnected), "{}", ctx());
        } else {
            prop_assert_eq!(
                ev.last(),
                Some(&Ev::State(SocketState::Unconnected)),
                "{}",
                ctx()
            );
        }
    }
    // Nothing before `connected` but state changes (and nothing written before it).
    if case.side == Side::Client {
        if let Some(c) = pos(&|e| *e == Ev::Connected) {
            prop_assert!(
                ev[..c].iter().all(|e| matches!(e, Ev::State(_))),
                "{}",
                ctx()
            );
        }
    }
    // State changes follow the diagram.
    let start = match case.side {
        Side::Client => SocketState::Unconnected,
        Side::Accepted => SocketState::Connected,
    };
    if let Err(e) = state_path(ev, start) {
        prop_assert!(false, "{e}: {}", ctx());
    }

    // Errors: at most one, only when the peer reset, typed; before `disconnected`.
    prop_assert!(errors.len() <= 1, "{}", ctx());
    if let Some(e) = errors.first() {
        // The peer resets also after the end of stream it read (the kdnet side may still be
        // closing then, waiting for a report, and then it reports the reset).
        let resets = matches!(case.peer_end, PeerEnd::Reset { .. });
        prop_assert!(resets, "an error without a reset: {e:?}; {}", ctx());
        let typed = match e {
            SocketError::Io { operation, .. } => {
                matches!(operation, SocketOperation::Read | SocketOperation::Write)
            }
            SocketError::ClosedByPeer => case.tls,
            SocketError::Tls(TlsFailure::Truncated) => case.tls,
            _ => false,
        };
        prop_assert!(typed, "error not typed as documented: {e:?}; {}", ctx());
        let at = pos(&|e| matches!(e, Ev::Error(_))).unwrap();
        prop_assert!(
            pos(&|e| *e == Ev::Disconnected).is_none_or(|dis| at < dis),
            "{}",
            ctx()
        );
    }

    // A handshake error comes just before its error_occurred, with the same error.
    if let Err(e) = handshake_errors_reported(ev) {
        prop_assert!(false, "{e}: {}", ctx());
    }

    // Written: never more than accepted; all of it on a clean end; none after the close.
    prop_assert!(d.written <= d.writes.accepted.len(), "{}", ctx());
    let reported: usize = ev
        .iter()
        .map(|e| if let Ev::Written(n) = e { *n } else { 0 })
        .sum();
    prop_assert_eq!(reported, d.written);
    let close_at = pos(&|e| matches!(e, Ev::State(SocketState::Unconnected)));
    if let Some(c) = close_at {
        prop_assert!(
            !ev[c..].iter().any(|e| matches!(
                e,
                Ev::Written(_) | Ev::Received(_) | Ev::ReadyRead | Ev::Connected
            )),
            "a data signal after the close: {}",
            ctx()
        );
    }
    let clean = errors.is_empty() && !d.aborted_or_dropped && !reset;
    if clean {
        prop_assert_eq!(
            d.written,
            d.writes.accepted.len(),
            "not all reported written: {}",
            ctx()
        );
    }
    if d.aborted_or_dropped || !errors.is_empty() {
        // Was anything still queued when it was cut?
        if d.written < d.writes.accepted.len() {
            stat(4);
        }
    }

    // The peer got a prefix of the accepted bytes, in order; all of them on a clean end, and
    // (over TLS) ended with close_notify.
    prop_assert!(
        peer.received.len() <= d.writes.accepted.len()
            && peer.received[..] == d.writes.accepted[..peer.received.len()],
        "the peer got bytes out of order or never accepted: {}",
        ctx()
    );
    if clean {
        prop_assert!(
            peer.received == d.writes.accepted,
            "the peer did not get every accepted byte: {}",
            ctx()
        );
    }
    // The peer's end of stream is clean (TLS: close_notify), also when its own data was still
    // on the way as the kdnet side closed first (a lingering close takes it, no reset).
    if clean && !d.closed_in_handshake {
        prop_assert_eq!(&peer.saw, &PeerSaw::Eof, "{}", ctx());
    }
    let peer_ended =
        case.close == Close::Nothing || (!d.closed && case.peer_end == PeerEnd::HalfClose);

    // What the peer sent arrives in order; complete when the peer ended the connection
    // (the kdnet side did not close first, nothing was cut).
    prop_assert!(
        d.received.len() <= reply.len() && d.received[..] == reply[..d.received.len()],
        "received bytes out of order or not sent: {}",
        ctx()
    );
    if clean && peer_ended && peer.reply_written {
        prop_assert_eq!(d.received.len(), reply.len(), "reply incomplete: {}", ctx());
    }
    if !d.dropped {
        let announced: usize = ev
            .iter()
            .map(|e| match e {
                Ev::Received(n) => *n,
                _ => 0,
            })
            .sum();
        prop_assert_eq!(announced, d.received.len(), "bytes_received sum: {}", ctx());
    }
    Ok(())
}

#[test]
fn byte_stream_sockets_match_the_model() {
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(socket_model::config(100, 300));
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    support::model::finish_run(
        started,
        CASES.load(Ordering::SeqCst),
        STAT_NAMES
            .iter()
            .zip(&STATS)
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed))),
        result,
    );
}
