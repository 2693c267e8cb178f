//! A randomised, model-based test of the TLS connection life cycle of an `SslSocket`.
//!
//! Each generated case makes one `SslSocket` (trusting the test CA, offering one of a few ALPN
//! lists) and connects it 1–3 times in a row (the same socket, its configuration reused, a
//! fresh session each time), each round to a new peer over loopback (127.0.0.1 or ::1, by
//! `connect_to_address` or `connect_to_addresses` with a refused address of the other loopback
//! family first; every server's certificate names only the address it listens on):
//! - the crate's `TcpServer` with TLS (TLS 1.2 only, 1.3 only or both; ALPN lists; client
//!   certificates required or not), which writes 0–3 pieces of 0–150 KiB (in `new_connection`,
//!   before its handshake; in `handshake_completed`; from outside) and then ends gracefully,
//!   aborts, or waits for the client to end;
//! - a raw rustls server on a thread (where the crate's server cannot misbehave the way needed)
//!   that writes a reply and then either sends close_notify and reads on until the client's
//!   (close_notify answered after queued writes), or ends TCP without close_notify (truncation);
//! - a silent TCP listener (never answers the ClientHello): the handshake timeout.
//!
//! The client presents no certificate, the test client certificate, or one from an untrusted
//! CA (set before a round, kept for the next ones: `set_client_certificate`); writes 0–4 pieces
//! of 0–150 KiB right after the connect, in `connected` (handshake running), in
//! `handshake_completed`, `bytes_written`, `ready_read` or from outside; and ends gracefully
//! (`disconnect_from_host`) or by `abort`, with its last write (bytes queued), once every byte
//! was reported written, or at one of those moments (so before, during and after the
//! handshake, with and without bytes queued), or not at all (the peer ends).
//!
//! The model is the documented behaviour (the module docs and doc comments of `tls::socket`,
//! `tcp::socket`, the `TcpSocket` signal docs, and PORTING.md's Socket/SslSocket/TcpServer
//! rows): the signal order of both ends (`state_changed` along the diagram, `connected` then
//! `handshake_completed` or `handshake_error` + `error_occurred` with the same error, then
//! `disconnected`; nothing written or read before `handshake_completed`; nothing after the
//! close), which error each ending produces (handshake timeout `Timeout(TlsHandshake)`; ALPN
//! mismatch `AlertReceived(NoApplicationProtocol)`; a refused client certificate a handshake
//! error in TLS 1.2 and an `AlertReceived` after `handshake_completed` in TLS 1.3; a TCP end
//! without close_notify `Truncated`; a graceful close during the handshake with nothing queued
//! cancels it with no error here and `ClosedByPeer` at a kdnet peer; with bytes queued it
//! completes and closes cleanly), the negotiated ALPN protocol and version, that every byte
//! arrives in order, never duplicated (all of them when nothing cut the stream),
//! `bytes_written` totals, and the final states.
//!
//! `PROPTEST_CASES` sets the number of cases (default 36, about 3.5 s in a debug build).

mod support;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::{
    SocketError, SocketOperation, SocketState, SslSocket, TcpServer, TcpSocket, TimeoutPhase,
    TlsClientConfig, TlsFailure, TlsServerConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use support::certs::test_pki;
use support::pattern;
use support::socket_events::SocketEvent as Ev;
use support::socket_model::{
    self, SocketModel, Writes, check, handshake_errors_reported, state_path, watch,
};

// ---- the script --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V12,
    V13,
    Both,
}

/// The client certificate set before a round (`Keep`: whatever an earlier round set, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCert {
    Keep,
    Good,
    Untrusted,
}

/// From where a client write (or close) is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Right after the connect call (connecting).
    Early,
    /// In `connected` (TCP up, handshake running).
    InConnected,
    /// In `handshake_completed`.
    InHandshake,
    InBytesWritten,
    InReadyRead,
    /// Between loop turns.
    Outside,
}

/// From where a write of the crate's server is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SWhen {
    /// In `new_connection` (before the handshake).
    InNewConnection,
    InHandshake,
    Outside,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// This side does not end the connection.
    Nothing,
    Graceful,
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseAt {
    /// In the same call as the last write.
    WithLastWrite,
    /// Once `bytes_written` reported every accepted byte (from outside).
    AfterAllWritten,
    /// At this trigger once every write was issued.
    At(When),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawEnd {
    /// close_notify after the reply, then read on until the client's close_notify.
    CloseNotifyThenRead,
    /// TCP end (shutdown of the write side) without close_notify, then read on.
    Truncate,
}

#[derive(Debug, Clone)]
enum Peer {
    Kdnet {
        version: Version,
        require_cert: bool,
        alpn: usize,
        writes: Vec<(usize, SWhen)>,
        end: End,
    },
    Raw {
        version: Version,
        reply: usize,
        end: RawEnd,
        /// Send the reply with the server's handshake flight (TLS 1.3 0.5-RTT data), so the
        /// client reads it with the end of its handshake.
        half_rtt: bool,
        /// A TLS 1.3 key update (requesting ours) halfway through the reply.
        key_update: bool,
    },
    /// Accepts TCP and never answers; the client's handshake timeout (or its connect timeout,
    /// which covers the handshake too) is this long.
    Silent {
        timeout_ms: u64,
        by_connect_timeout: bool,
    },
}

#[derive(Debug, Clone)]
struct Round {
    peer: Peer,
    /// Connect to the previous round's server (same configuration; the session may resume).
    same_server: bool,
    v6: bool,
    via_addresses: bool,
    cert: ClientCert,
    writes: Vec<(usize, When)>,
    end: End,
    close_at: CloseAt,
}

#[derive(Debug, Clone)]
struct Case {
    client_alpn: usize,
    rounds: Vec<Round>,
    seed: u64,
}

/// ALPN lists, by index (the client's and the server's are picked among them).
const ALPN: [&[&[u8]]; 4] = [&[], &[b"a"], &[b"b", b"a"], &[b"c"]];

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        3 => 1usize..300,
        2 => 300usize..20_000,
        1 => 20_000usize..150_000,
    ]
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        1 => Just(When::Early),
        2 => Just(When::InConnected),
        2 => Just(When::InHandshake),
        1 => Just(When::InBytesWritten),
        1 => Just(When::InReadyRead),
        2 => Just(When::Outside),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V12), Just(Version::V13), Just(Version::Both)]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        1 => Just(End::Nothing),
        3 => Just(End::Graceful),
        1 => Just(End::Abort),
    ]
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        5 => (
            version(),
            prop::bool::weighted(0.3),
            0..ALPN.len(),
            prop::collection::vec(
                (
                    size(),
                    prop_oneof![
                        Just(SWhen::InNewConnection),
                        Just(SWhen::InHandshake),
                        Just(SWhen::Outside)
                    ]
                ),
                0..=3
            ),
            end(),
        )
            .prop_map(|(version, require_cert, alpn, writes, end)| Peer::Kdnet {
                version,
                require_cert,
                alpn,
                writes,
                end
            }),
        2 => (
            version(),
            size(),
            prop_oneof![Just(RawEnd::CloseNotifyThenRead), Just(RawEnd::Truncate)],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(version, reply, end, half_rtt, key_update)| Peer::Raw {
                version,
                reply,
                end,
                half_rtt,
                key_update,
            }),
        1 => (50u64..300, any::<bool>()).prop_map(|(timeout_ms, by_connect_timeout)| {
            Peer::Silent {
                timeout_ms,
                by_connect_timeout,
            }
        }),
    ]
}

fn round() -> impl Strategy<Value = Round> {
    (
        (peer(), prop::bool::weighted(0.4)),
        any::<bool>(),
        prop::bool::weighted(0.25),
        prop_oneof![
            3 => Just(ClientCert::Keep),
            1 => Just(ClientCert::Good),
            1 => Just(ClientCert::Untrusted)
        ],
        prop::collection::vec((size(), when()), 0..=4),
        end(),
        prop_oneof![
            2 => Just(CloseAt::WithLastWrite),
            2 => Just(CloseAt::AfterAllWritten),
            3 => when().prop_map(CloseAt::At),
        ],
    )
        .prop_map(
            |((peer, same_server), v6, via_addresses, cert, writes, end, close_at)| {
                // Somebody must end a connection that goes well.
                let end = match (&peer, end) {
                    (
                        Peer::Kdnet {
                            end: End::Nothing, ..
                        },
                        End::Nothing,
                    ) => End::Graceful,
                    (_, end) => end,
                };
                Round {
                    peer,
                    same_server,
                    v6,
                    via_addresses,
                    cert,
                    writes,
                    end,
                    close_at,
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..ALPN.len(),
        prop::collection::vec(round(), 1..=3),
        any::<u64>(),
    )
        .prop_map(|(client_alpn, mut rounds, seed)| {
            // A round on the previous round's server takes its configuration and address.
            for i in 0..rounds.len() {
                let previous = i.checked_sub(1).map(|p| rounds[p].clone());
                let round = &mut rounds[i];
                match (previous, &mut round.peer) {
                    (
                        Some(Round {
                            peer:
                                Peer::Kdnet {
                                    version: v,
                                    require_cert: r,
                                    alpn: a,
                                    ..
                                },
                            v6,
                            ..
                        }),
                        Peer::Kdnet {
                            version,
                            require_cert,
                            alpn,
                            ..
                        },
                    ) if round.same_server => {
                        (*version, *require_cert, *alpn) = (v, r, a);
                        round.v6 = v6;
                    }
                    _ => round.same_server = false,
                }
            }
            Case {
                client_alpn,
                rounds,
                seed,
            }
        })
}

// ---- what the model expects of a round's handshake -----------------------------------------------

/// How the handshake of a round goes, if nobody ends it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    Completes,
    /// The silent peer: the client's handshake timeout.
    TimesOut,
    /// Both offer ALPN, nothing in common: the server refuses.
    NoCommonAlpn,
    /// The server refuses the client's certificate (or its lack) in TLS 1.2: a handshake error.
    CertRefused12,
    /// … in TLS 1.3: the client completes, then the server's alert arrives.
    CertRefused13,
}

fn expected_alpn(client: usize, server: usize) -> Result<Option<Vec<u8>>, ()> {
    let (c, s) = (ALPN[client], ALPN[server]);
    if c.is_empty() || s.is_empty() {
        return Ok(None);
    }
    // rustls: the server's most preferred protocol that the client offers.
    s.iter()
        .find(|p| c.contains(p))
        .map(|p| Some(p.to_vec()))
        .ok_or(())
}

fn expected_handshake(case: &Case, round: &Round, cert: ClientCert) -> Handshake {
    match &round.peer {
        Peer::Silent { .. } => Handshake::TimesOut,
        Peer::Raw { .. } => Handshake::Completes,
        Peer::Kdnet {
            version,
            require_cert,
            alpn,
            ..
        } => {
            if expected_alpn(case.client_alpn, *alpn).is_err() {
                Handshake::NoCommonAlpn
            } else if *require_cert && cert != ClientCert::Good {
                if *version == Version::V12 {
                    Handshake::CertRefused12
                } else {
                    Handshake::CertRefused13
                }
            } else {
                Handshake::Completes
            }
        }
    }
}

fn negotiated(version: Version) -> rustls::ProtocolVersion {
    match version {
        Version::V12 => rustls::ProtocolVersion::TLSv1_2,
        Version::V13 | Version::Both => rustls::ProtocolVersion::TLSv1_3,
    }
}

// ---- peers ---------------------------------------------------------------------------------------

fn versions(version: Version) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    match version {
        Version::V12 => &V12,
        Version::V13 => &V13,
        Version::Both => &BOTH,
    }
}

/// The server configuration: the crate's builders for TLS 1.2 + 1.3, rustls' for one version.
/// Its certificate names only the loopback address it listens on (`::1` when `v6`, else
/// `127.0.0.1`): a client must verify it against the address it connected to.
fn server_config(
    version: Version,
    require_cert: bool,
    alpn: usize,
    v6: bool,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = test_pki();
    let protocols: Vec<Vec<u8>> = ALPN[alpn].iter().map(|p| p.to_vec()).collect();
    let (cert, key) = if v6 {
        (&pki.ipv6_only_cert_pem, &pki.ipv6_only_key_pem)
    } else {
        (&pki.ipv4_only_cert_pem, &pki.ipv4_only_key_pem)
    };
    let (cert, key) = (cert.as_bytes(), key.as_bytes());
    if version == Version::Both {
        return if require_cert {
            TlsServerConfig::with_client_certificates(cert, key, pki.ca_pem.as_bytes(), protocols)
        } else {
            TlsServerConfig::with_alpn(cert, key, protocols)
        }
        .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(version))
        .unwrap();
    let builder = if require_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert).unwrap()],
            PrivateKeyDer::from_pem_slice(key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = protocols;
    Arc::new(config)
}

/// What the raw rustls peer saw.
#[derive(Debug)]
struct RawReport {
    handshake: bool,
    reply_written: bool,
    received: Vec<u8>,
    /// Its reading ended with the client's close_notify.
    clean_end: bool,
    end: String,
}

fn accept_within(listener: &std::net::TcpListener, limit: Duration) -> Option<std::net::TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                return Some(tcp);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return None,
        }
    }
}

fn start_raw(
    listener: std::net::TcpListener,
    version: Version,
    reply: Vec<u8>,
    end: RawEnd,
    half_rtt: bool,
    key_update: bool,
) -> mpsc::Receiver<RawReport> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut report = RawReport {
            handshake: false,
            reply_written: false,
            received: Vec::new(),
            clean_end: false,
            end: "never connected".into(),
        };
        let Some(tcp) = accept_within(&listener, Duration::from_secs(3)) else {
            let _ = tx.send(report);
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(15)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(15)));
        let v6 = tcp.local_addr().is_ok_and(|a| a.is_ipv6());
        let mut config = server_config(version, false, 0, v6);
        Arc::make_mut(&mut config).send_half_rtt_data = half_rtt;
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let mut reply = &reply[..];
        if half_rtt {
            // Read the ClientHello, queue the reply (as much as rustls takes now), then send
            // the handshake flight with it.
            while !stream.conn.wants_write() {
                if !matches!(stream.conn.read_tls(&mut stream.sock), Ok(n) if n > 0)
                    || stream.conn.process_new_packets().is_err()
                {
                    break;
                }
            }
            let n = stream.conn.writer().write(reply).unwrap_or(0);
            if n > 0 && version != Version::V12 {
                stat(S_HALF_RTT);
            }
            reply = &reply[n..];
            while stream.conn.wants_write() {
                if stream.conn.write_tls(&mut stream.sock).is_err() {
                    break;
                }
            }
        }
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                report.end = format!("handshake: {e}");
                let _ = tx.send(report);
                return;
            }
        }
        report.handshake = true;
        let half = if key_update {
            reply.len() / 2
        } else {
            reply.len()
        };
        report.reply_written = stream
            .write_all(&reply[..half])
            .and_then(|()| stream.flush())
            .is_ok();
        if key_update && stream.conn.refresh_traffic_keys().is_ok() {
            stat(S_KEY_UPDATE);
        }
        report.reply_written = report.reply_written
            && stream
                .write_all(&reply[half..])
                .and_then(|()| stream.flush())
                .is_ok();
        match end {
            RawEnd::CloseNotifyThenRead => {
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
            RawEnd::Truncate => {
                let _ = stream.sock.shutdown(Shutdown::Write);
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    report.clean_end = true;
                    report.end = "close_notify".into();
                    break;
                }
                Ok(n) => report.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    report.end = format!("{:?}: {e}", e.kind());
                    break;
                }
            }
        }
        let _ = tx.send(report);
    });
    rx
}

/// Accepts, never answers, and reads until the client goes.
fn start_silent(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        let Some(mut tcp) = accept_within(&listener, Duration::from_secs(3)) else {
            return;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(15)));
        let mut buf = [0u8; 4096];
        while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    });
}

// ---- the crate's server --------------------------------------------------------------------------

struct Server {
    writes: Writes<SWhen>,
    end: End,
    written: usize,
    received: Vec<u8>,
    events: Vec<Ev>,
    violations: Vec<String>,
    socket: Option<Rc<TcpSocket>>,
    connections: usize,
    ended: bool,
    alpn: Option<Option<Vec<u8>>>,
}

type Srv = Rc<RefCell<Server>>;

logged!(Server);

impl SocketModel<TcpSocket> for Server {
    fn handshake_completed(srv: &Srv, sock: &Rc<TcpSocket>) {
        srv.borrow_mut().alpn = Some(sock.alpn_protocol());
        server_write(srv, sock, Some(SWhen::InHandshake));
    }
}

fn server_write(srv: &Srv, socket: &TcpSocket, from: Option<SWhen>) {
    let Some(data) = srv.borrow_mut().writes.take(from) else {
        return;
    };
    let state = socket.state();
    let result = socket.write(&data);
    let mut s = srv.borrow_mut();
    if let Err(v) = s.writes.settle(&data, state, &result) {
        s.violations.push(format!("server: {v}"));
    }
}

// ---- the client ----------------------------------------------------------------------------------

/// What a client close turned out to be, by the state it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Graceful while connecting, nothing queued: cancelled.
    CancelConnect,
    /// Graceful while connecting, bytes queued: connects, handshakes, sends, closes.
    QueuedConnect,
    /// Graceful during the handshake, nothing queued: cancelled.
    CancelHandshake,
    /// Graceful during the handshake, bytes queued: waits for it.
    QueuedHandshake,
    /// Graceful once encrypted.
    Graceful,
    Abort,
    /// The socket was already closing or closed.
    NoOp,
}

struct Client {
    round: Round,
    writes: Writes<When>,
    written: usize,
    received: Vec<u8>,
    events: Vec<Ev>,
    violations: Vec<String>,
    closed: Option<Closed>,
    /// Events recorded before the close was made.
    closed_after: usize,
    alpn: Option<Option<Vec<u8>>>,
    version: Option<Option<rustls::ProtocolVersion>>,
    started: bool,
    connect_at: Option<Instant>,
    error_at: Option<Instant>,
}

type Cli = Rc<RefCell<Client>>;

impl Client {
    /// A client with nothing done yet for `round`, its writes' payload from `seed`.
    fn new(round: &Round, seed: u64) -> Client {
        Client {
            round: round.clone(),
            writes: Writes::new(round.writes.clone(), seed),
            written: 0,
            received: Vec::new(),
            events: Vec::new(),
            violations: Vec::new(),
            closed: None,
            closed_after: 0,
            alpn: None,
            version: None,
            started: false,
            connect_at: None,
            error_at: None,
        }
    }

    fn all_issued(&self) -> bool {
        self.writes.all_issued()
    }
}

logged!(Client);

impl SocketModel<SslSocket> for Client {
    fn connected(c: &Cli, s: &Rc<SslSocket>) {
        let now = s.state();
        check(
            c,
            now == SocketState::Connected && !s.is_encrypted(),
            || format!("connected while {now:?}, encrypted {}", s.is_encrypted()),
        );
        client_write(c, s, Some(When::InConnected));
        maybe_close_at(c, s, When::InConnected);
    }

    fn handshake_completed(c: &Cli, s: &Rc<SslSocket>) {
        let chain = s.peer_certificate_chain().len();
        check(c, chain == 1, || {
            format!("handshake_completed: {chain} peer certificates")
        });
        {
            let mut m = c.borrow_mut();
            m.alpn = Some(s.alpn_protocol());
            m.version = Some(s.protocol_version());
        }
        client_write(c, s, Some(When::InHandshake));
        maybe_close_at(c, s, When::InHandshake);
    }

    fn bytes_written(c: &Cli, s: &Rc<SslSocket>) {
        client_write(c, s, Some(When::InBytesWritten));
        maybe_close_at(c, s, When::InBytesWritten);
    }

    fn ready_read(c: &Cli, s: &Rc<SslSocket>) {
        client_write(c, s, Some(When::InReadyRead));
        maybe_close_at(c, s, When::InReadyRead);
    }

    fn error_occurred(c: &Cli, _s: &Rc<SslSocket>) {
        c.borrow_mut().error_at = Some(Instant::now());
    }
}

fn client_write(cli: &Cli, socket: &TcpSocket, from: Option<When>) {
    let data = {
        let mut c = cli.borrow_mut();
        if !c.started {
            return;
        }
        let Some(data) = c.writes.take(from) else {
            return;
        };
        data
    };
    let state = socket.state();
    let result = socket.write(&data);
    {
        let mut c = cli.borrow_mut();
        match c.writes.settle(&data, state, &result) {
            Ok(true) => stat(S_REFUSED),
            Ok(false) => {}
            Err(v) => c.violations.push(format!("client: {v}")),
        }
    }
    let close_now = {
        let c = cli.borrow();
        c.all_issued() && c.round.close_at == CloseAt::WithLastWrite
    };
    if close_now {
        client_close(cli, socket);
    }
}

fn client_close(cli: &Cli, socket: &TcpSocket) {
    let end = {
        let mut c = cli.borrow_mut();
        if c.closed.is_some() || c.round.end == End::Nothing || !c.all_issued() {
            return;
        }
        let state = socket.state();
        let queued = !c.writes.accepted.is_empty();
        let kind = match (c.round.end, state) {
            (_, SocketState::Unconnected | SocketState::Closing) => Closed::NoOp,
            (End::Abort, _) => Closed::Abort,
            (_, SocketState::HostLookup | SocketState::Connecting) if queued => {
                Closed::QueuedConnect
            }
            (_, SocketState::HostLookup | SocketState::Connecting) => Closed::CancelConnect,
            (_, _) if socket.is_encrypted() => Closed::Graceful,
            (_, _) if queued => Closed::QueuedHandshake,
            (_, _) => Closed::CancelHandshake,
        };
        c.closed = Some(kind);
        c.closed_after = c.events.len();
        c.round.end
    };
    match end {
        End::Abort => socket.abort(),
        _ => socket.disconnect_from_host(),
    }
}

fn maybe_close_at(cli: &Cli, socket: &TcpSocket, trigger: When) {
    if cli.borrow().round.close_at == CloseAt::At(trigger) {
        client_close(cli, socket);
    }
}

// ---- statistics ----------------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);
const S_ROUNDS: usize = 0;
const S_RECONNECTS: usize = 1;
const S_COMPLETED: usize = 2;
const S_TIMEOUT: usize = 3;
const S_ALPN: usize = 4;
const S_CERT12: usize = 5;
const S_CERT13: usize = 6;
const S_TRUNCATED: usize = 7;
const S_CANCEL_HS: usize = 8;
const S_QUEUED_HS: usize = 9;
const S_PEER_CLOSE_NOTIFY: usize = 10;
const S_REFUSED: usize = 11;
const S_ADDRESSES: usize = 12;
const S_UNANNOUNCED: usize = 13;
const S_HIDDEN_ALERT: usize = 14;
const S_SAME_SERVER: usize = 15;
const S_HALF_RTT: usize = 16;
const S_KEY_UPDATE: usize = 17;
static STATS: [AtomicU64; 18] = [const { AtomicU64::new(0) }; 18];
const STAT_NAMES: [&str; 18] = [
    "rounds",
    "reconnects on the same SslSocket",
    "client handshakes completed",
    "handshake timeouts",
    "ALPN refusals",
    "client certificates refused (TLS 1.2)",
    "client certificates refused (TLS 1.3)",
    "truncations reported",
    "handshakes cancelled by the client",
    "closes during the handshake with bytes queued",
    "peer close_notify answered",
    "writes refused (InvalidState)",
    "connect_to_addresses",
    "data readable but unannounced after a close in handshake_completed",
    "TLS 1.3 refusals reported as the write's error (known, TCP layer)",
    "rounds on the previous round's server (session resumption)",
    "raw replies sent as 0.5-RTT data (with the server's handshake flight)",
    "raw replies with a TLS 1.3 key update in the middle",
];

/// Tolerate the known defect that a write error hides the TLS 1.3 alert read just before it
/// (false: the model fails on it).
const ALLOW_WRITE_ERROR_HIDING_ALERT: bool = false;

fn stat(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
}

// ---- running a case ------------------------------------------------------------------------------

fn run_case(event_loop: &mut EventLoop, case: &Case) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::SeqCst);
    let pki = test_pki();
    let mut config = TlsClientConfig::with_only_ca_certificates(pki.ca_pem.as_bytes()).unwrap();
    if !ALPN[case.client_alpn].is_empty() {
        config.set_alpn_protocols(ALPN[case.client_alpn].iter().map(|p| p.to_vec()).collect());
    }
    let ssl = SslSocket::with_config(config).unwrap();
    let cli: Cli = Rc::new(RefCell::new(Client::new(&case.rounds[0], case.seed)));
    watch(&cli, &ssl);
    let mut cert = ClientCert::Keep;
    let mut kept: Option<KeptServer> = None;
    for (index, round) in case.rounds.iter().enumerate() {
        stat(S_ROUNDS);
        if index > 0 {
            stat(S_RECONNECTS);
        }
        match round.cert {
            ClientCert::Keep => {}
            ClientCert::Good => {
                ssl.set_client_certificate(
                    pki.client_cert_pem.as_bytes(),
                    pki.client_key_pem.as_bytes(),
                )
                .unwrap();
                cert = ClientCert::Good;
            }
            ClientCert::Untrusted => {
                ssl.set_client_certificate(
                    pki.untrusted_cert_pem.as_bytes(),
                    pki.untrusted_key_pem.as_bytes(),
                )
                .unwrap();
                cert = ClientCert::Untrusted;
            }
        }
        let seed = case.seed.wrapping_add(index as u64 * 0x9e37_79b9);
        run_round(event_loop, case, round, &ssl, &cli, cert, seed, &mut kept)
            .map_err(|e| TestCaseError::fail(format!("round {index}: {e}")))?;
    }
    Ok(())
}

/// The crate's server of a round, kept for the next round (which may connect to it again); its
/// `new_connection` slot scripts the round in `current`.
struct KeptServer {
    server: Rc<TcpServer>,
    current: Rc<RefCell<Srv>>,
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    event_loop: &mut EventLoop,
    case: &Case,
    round: &Round,
    ssl: &Rc<SslSocket>,
    cli: &Cli,
    cert: ClientCert,
    seed: u64,
    kept: &mut Option<KeptServer>,
) -> Result<(), TestCaseError> {
    let ip: IpAddr = if round.v6 {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    *cli.borrow_mut() = Client::new(round, seed);
    let state = ssl.state();
    prop_assert_eq!(state, SocketState::Unconnected, "before the round");

    // The peer.
    let (server_writes, server_end) = match &round.peer {
        Peer::Kdnet { writes, end, .. } => (writes.clone(), *end),
        _ => (Vec::new(), End::Nothing),
    };
    let srv: Srv = Rc::new(RefCell::new(Server {
        writes: Writes::new(server_writes, seed ^ 0x5eed),
        end: server_end,
        written: 0,
        received: Vec::new(),
        events: Vec::new(),
        violations: Vec::new(),
        socket: None,
        connections: 0,
        ended: false,
        alpn: None,
    }));
    if !round.same_server {
        *kept = None;
    }
    let mut raw = None;
    let mut raw_reply = Vec::new();
    let port = match &round.peer {
        Peer::Kdnet {
            version,
            require_cert,
            alpn,
            ..
        } if round.same_server && kept.is_some() => {
            let _ = (version, require_cert, alpn);
            stat(S_SAME_SERVER);
            let k = kept.as_ref().unwrap();
            *k.current.borrow_mut() = srv.clone();
            k.server.server_port().unwrap()
        }
        Peer::Kdnet {
            version,
            require_cert,
            alpn,
            ..
        } => {
            let server = TcpServer::new().unwrap();
            server.set_tls_config(server_config(*version, *require_cert, *alpn, round.v6));
            server.listen_on(SocketAddr::new(ip, 0)).unwrap();
            let current = Rc::new(RefCell::new(srv.clone()));
            let c = current.clone();
            server
                .new_connection
                .connect(move |socket: &Rc<TcpSocket>| {
                    let s = c.borrow().clone();
                    {
                        let mut m = s.borrow_mut();
                        m.connections += 1;
                        if m.connections > 1 {
                            m.violations.push("a second connection".into());
                            return;
                        }
                        m.socket = Some(socket.clone());
                    }
                    watch(&s, socket);
                    server_write(&s, socket, Some(SWhen::InNewConnection));
                })
                .release();
            let port = server.server_port().unwrap();
            *kept = Some(KeptServer { server, current });
            port
        }
        Peer::Raw {
            version,
            reply,
            end,
            half_rtt,
            key_update,
        } => {
            let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            raw_reply = pattern(*reply, seed ^ 0x5eed);
            raw = Some(start_raw(
                listener,
                *version,
                raw_reply.clone(),
                *end,
                *half_rtt,
                *key_update,
            ));
            port
        }
        Peer::Silent { .. } => {
            let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            start_silent(listener);
            port
        }
    };

    // The client connects.
    let generous = Duration::from_secs(20);
    match round.peer {
        Peer::Silent {
            timeout_ms,
            by_connect_timeout: true,
        } => {
            ssl.set_connect_timeout(Some(Duration::from_millis(timeout_ms)));
            ssl.set_handshake_timeout(Some(generous));
        }
        Peer::Silent { timeout_ms, .. } => {
            ssl.set_connect_timeout(None);
            ssl.set_handshake_timeout(Some(Duration::from_millis(timeout_ms)));
        }
        // Neither limits a connection that goes on (a connect timeout ends with the handshake).
        _ => {
            ssl.set_connect_timeout(if seed % 2 == 0 { Some(generous) } else { None });
            ssl.set_handshake_timeout(Some(generous));
        }
    }
    let live = SocketAddr::new(ip, port);
    // Before the call: the timeouts count from inside it.
    cli.borrow_mut().connect_at = Some(Instant::now());
    let connect = if round.via_addresses {
        stat(S_ADDRESSES);
        // A port nothing listens on (bound, then closed), on the other loopback address:
        // refused at once, the race moves on, and the certificate (which names only the
        // address that won) must be verified against the winner, not this first address.
        let other: IpAddr = if round.v6 {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        let dead = std::net::TcpListener::bind(SocketAddr::new(other, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        ssl.connect_to_addresses(&[dead, live])
    } else {
        ssl.connect_to_address(ip, port)
    };
    prop_assert!(connect.is_ok(), "connect: {connect:?}");
    let socket = ssl.tcp_socket().clone();
    cli.borrow_mut().started = true;
    client_write(cli, &socket, Some(When::Early));
    maybe_close_at(cli, &socket, When::Early);

    // Drive until both ends are done.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut raw_report = None;
    let mut after_client_done = 0u32;
    loop {
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .expect("loop turn");
        // Client, from outside.
        client_write(cli, &socket, Some(When::Outside));
        let idle = {
            let mut c = cli.borrow_mut();
            c.writes.idle_turns += 1;
            c.writes.idle_turns
        };
        if idle > 4 || socket.state() == SocketState::Unconnected {
            // A trigger that does not come (a handshake that fails, nothing to read).
            client_write(cli, &socket, None);
        }
        let (close_at, all_written) = {
            let c = cli.borrow();
            (
                c.round.close_at,
                c.all_issued() && c.written == c.writes.accepted.len(),
            )
        };
        match close_at {
            CloseAt::AfterAllWritten if all_written => client_close(cli, &socket),
            CloseAt::At(When::Outside) => client_close(cli, &socket),
            _ if idle > 8 => client_close(cli, &socket),
            _ => {}
        }
        // The crate's server, from outside.
        let server_socket = srv.borrow().socket.clone();
        if let Some(s) = &server_socket {
            let idle = {
                let mut m = srv.borrow_mut();
                m.writes.idle_turns += 1;
                m.writes.idle_turns
            };
            if s.is_encrypted() || idle > 4 {
                server_write(&srv, s, Some(SWhen::Outside));
            }
            if idle > 4 || s.state() == SocketState::Unconnected {
                server_write(&srv, s, None);
            }
            let end = {
                let m = srv.borrow();
                let due = m.writes.all_issued()
                    && m.written == m.writes.accepted.len()
                    && !m.ended
                    && s.is_encrypted();
                if due { Some(m.end) } else { None }
            };
            match end {
                Some(End::Graceful) => {
                    srv.borrow_mut().ended = true;
                    s.disconnect_from_host();
                }
                Some(End::Abort) => {
                    srv.borrow_mut().ended = true;
                    s.abort();
                }
                _ => {}
            }
        }
        if raw_report.is_none() {
            if let Some(rx) = &raw {
                if let Ok(r) = rx.try_recv() {
                    raw_report = Some(r);
                }
            }
        }
        let client_done = cli.borrow().all_issued() && socket.state() == SocketState::Unconnected;
        if client_done {
            after_client_done += 1;
        }
        let peer_done = match &round.peer {
            Peer::Kdnet { .. } => match &server_socket {
                Some(s) => s.state() == SocketState::Unconnected,
                // A cancelled connect may never be accepted.
                None => after_client_done > 40,
            },
            Peer::Raw { .. } => raw_report.is_some(),
            Peer::Silent { .. } => true,
        };
        if client_done && peer_done {
            break;
        }
        if Instant::now() > deadline {
            let c = cli.borrow();
            let m = srv.borrow();
            prop_assert!(
                false,
                "hung: client {:?} ({} of {} writes issued, written {} of {}), events {:?}; \
                 server events {:?}; raw reported {}",
                socket.state(),
                c.writes.next,
                c.round.writes.len(),
                c.written,
                c.writes.accepted.len(),
                c.events,
                m.events,
                raw_report.is_some()
            );
        }
    }
    // Nothing more after the end (a few turns for stray posted reports).
    for _ in 0..3 {
        event_loop
            .process_events(Some(Duration::from_millis(1)))
            .expect("loop turn");
    }
    let leftover = socket.read_all();
    cli.borrow_mut().received.extend_from_slice(&leftover);
    let expect = expected_handshake(case, round, cert);
    let c = cli.borrow();
    let m = srv.borrow();
    check_round(case, round, expect, &c, &m, raw_report.as_ref(), &raw_reply)
}

#[allow(clippy::too_many_arguments)]
fn check_round(
    case: &Case,
    round: &Round,
    expect: Handshake,
    c: &Client,
    m: &Server,
    raw: Option<&RawReport>,
    raw_reply: &[u8],
) -> Result<(), TestCaseError> {
    let ev = &c.events;
    let sev = &m.events;
    let ctx = || {
        format!(
            "expected {expect:?}; client closed {:?} after {} events; client events {ev:?}; \
             server events {sev:?}; client accepted {} B, written {} B, got {} B; server \
             accepted {} B, written {} B, got {} B; raw {:?}",
            c.closed,
            c.closed_after,
            c.writes.accepted.len(),
            c.written,
            c.received.len(),
            m.writes.accepted.len(),
            m.written,
            m.received.len(),
            raw.map(|r| (r.handshake, r.received.len(), &r.end)),
        )
    };
    prop_assert!(c.violations.is_empty(), "{:?}; {}", c.violations, ctx());
    prop_assert!(m.violations.is_empty(), "{:?}; {}", m.violations, ctx());

    let count = |ev: &[Ev], f: &dyn Fn(&Ev) -> bool| ev.iter().filter(|e| f(e)).count();
    let pos = |ev: &[Ev], f: &dyn Fn(&Ev) -> bool| ev.iter().position(f);
    let is_connected = |e: &Ev| *e == Ev::Connected;
    let is_handshake = |e: &Ev| *e == Ev::Handshake;
    let is_hs_error = |e: &Ev| matches!(e, Ev::HandshakeError(_));
    let is_error = |e: &Ev| matches!(e, Ev::Error(_));
    let is_disconnected = |e: &Ev| *e == Ev::Disconnected;
    let is_data = |e: &Ev| matches!(e, Ev::Written(_) | Ev::Received(_) | Ev::ReadyRead);
    let error_of = |ev: &[Ev]| {
        ev.iter().find_map(|e| match e {
            Ev::Error(e) => Some(e.clone()),
            _ => None,
        })
    };

    // ---- the client's signals: their order -------------------------------------------------
    let connected = count(ev, &is_connected);
    let completed = count(ev, &is_handshake);
    let hs_errors = count(ev, &is_hs_error);
    let errors = count(ev, &is_error);
    let disconnected = count(ev, &is_disconnected);
    prop_assert!(
        connected <= 1 && completed <= 1 && hs_errors <= 1 && errors <= 1,
        "{}",
        ctx()
    );
    prop_assert_eq!(
        disconnected,
        connected,
        "disconnected once per connected: {}",
        ctx()
    );
    prop_assert!(
        completed + hs_errors <= 1,
        "both handshake signals: {}",
        ctx()
    );
    // A fresh connect: the round starts connecting, and ends closed.
    prop_assert_eq!(
        ev.first(),
        Some(&Ev::State(SocketState::Connecting)),
        "{}",
        ctx()
    );
    if connected == 1 {
        prop_assert_eq!(ev.last(), Some(&Ev::Disconnected), "{}", ctx());
    } else {
        prop_assert_eq!(
            ev.last(),
            Some(&Ev::State(SocketState::Unconnected)),
            "{}",
            ctx()
        );
    }
    if let Err(e) = state_path(ev, SocketState::Unconnected) {
        prop_assert!(false, "{e}: {}", ctx());
    }
    let at_connected = pos(ev, &is_connected);
    let at_handshake = pos(ev, &is_handshake);
    let at_disconnected = pos(ev, &is_disconnected);
    if let Some(h) = at_handshake {
        prop_assert!(
            at_connected.is_some_and(|c| c < h) && at_disconnected.is_none_or(|d| h < d),
            "handshake_completed out of place: {}",
            ctx()
        );
    }
    // Plaintext flows only once the handshake completed.
    let first_data = pos(ev, &is_data);
    if let Some(d) = first_data {
        prop_assert!(
            at_handshake.is_some_and(|h| h < d),
            "data signal before handshake_completed: {}",
            ctx()
        );
    }
    // A handshake error comes right before its error_occurred, with the same error.
    if let Err(e) = handshake_errors_reported(ev) {
        prop_assert!(false, "{e}: {}", ctx());
    }
    if let Some(e) = pos(ev, &is_error) {
        prop_assert!(
            at_disconnected.is_none_or(|d| e < d),
            "error after disconnected: {}",
            ctx()
        );
    }
    // Nothing moves after the close.
    if let Some(u) = pos(ev, &|e| *e == Ev::State(SocketState::Unconnected)) {
        prop_assert!(
            !ev[u..]
                .iter()
                .any(|e| is_data(e) || is_connected(e) || is_handshake(e)),
            "a signal after the close: {}",
            ctx()
        );
    }

    // ---- the client's bytes ------------------------------------------------------------------
    let reported: usize = ev
        .iter()
        .map(|e| if let Ev::Written(n) = e { *n } else { 0 })
        .sum();
    prop_assert_eq!(reported, c.written, "{}", ctx());
    prop_assert!(
        c.written <= c.writes.accepted.len(),
        "more written than accepted: {}",
        ctx()
    );
    let announced: usize = ev
        .iter()
        .map(|e| if let Ev::Received(n) = e { *n } else { 0 })
        .sum();
    if announced != c.received.len() {
        // Data decrypted in the read that completed the handshake, when the
        // `handshake_completed` slot closed the socket: not announced after the close, but
        // still readable (see the report: a design question).
        let closed_in_handshake_slot =
            c.closed.is_some() && at_handshake.is_some_and(|h| c.closed_after == h + 1);
        prop_assert!(
            announced < c.received.len() && closed_in_handshake_slot,
            "bytes_received sum {announced}: {}",
            ctx()
        );
        stat(S_UNANNOUNCED);
    }
    let sent_to_client: &[u8] = match &round.peer {
        Peer::Kdnet { .. } => &m.writes.accepted,
        Peer::Raw { .. } => raw_reply,
        Peer::Silent { .. } => &[],
    };
    prop_assert!(
        c.received.len() <= sent_to_client.len()
            && c.received[..] == sent_to_client[..c.received.len()],
        "the client got bytes out of order, duplicated or never sent: {}",
        ctx()
    );
    let peer_got: &[u8] = match (&round.peer, raw) {
        (Peer::Kdnet { .. }, _) => &m.received,
        (Peer::Raw { .. }, Some(r)) => &r.received,
        _ => &[],
    };
    prop_assert!(
        peer_got.len() <= c.writes.accepted.len()
            && peer_got[..] == c.writes.accepted[..peer_got.len()],
        "the peer got bytes out of order, duplicated or never accepted: {}",
        ctx()
    );

    // ---- how the round ends --------------------------------------------------------------------
    let closed = c.closed.filter(|k| *k != Closed::NoOp);
    let client_error = error_of(ev);
    // What the client ended before anything else ended it.
    let closed_before =
        |i: Option<usize>| closed.is_some() && i.is_none_or(|i| c.closed_after <= i);
    let cancelled = matches!(
        closed,
        Some(Closed::CancelConnect | Closed::CancelHandshake)
    );
    let aborted = closed == Some(Closed::Abort);
    let error_at = pos(ev, &is_error);
    let abort_before_error = aborted && closed_before(error_at);
    if abort_before_error || cancelled {
        // An abort or a cancel is no error, and the handshake never completes after it.
        prop_assert!(
            client_error.is_none() || !closed_before(error_at),
            "an error after the client's own abort or cancel: {}",
            ctx()
        );
    }
    if cancelled {
        prop_assert!(
            completed == 0 && hs_errors == 0 && client_error.is_none(),
            "a cancelled handshake went on: {}",
            ctx()
        );
        stat(S_CANCEL_HS);
    }
    match closed {
        // Cancelled while connecting: `Unconnected` at once, never `connected`.
        Some(Closed::CancelConnect) => prop_assert!(
            connected == 0 && ev.len() == c.closed_after + 1,
            "a cancelled connect went on: {}",
            ctx()
        ),
        // Cancelled during the handshake: through `Closing`, `disconnected`, no error.
        Some(Closed::CancelHandshake) => prop_assert!(
            ev[c.closed_after..]
                == [
                    Ev::State(SocketState::Closing),
                    Ev::State(SocketState::Unconnected),
                    Ev::Disconnected
                ],
            "a cancelled handshake: {}",
            ctx()
        ),
        _ => {}
    }
    if matches!(
        closed,
        Some(Closed::QueuedHandshake | Closed::QueuedConnect)
    ) {
        stat(S_QUEUED_HS);
    }
    let client_ended_first = closed.is_some() && closed_before(error_at.or(at_disconnected));
    match expect {
        Handshake::TimesOut => {
            prop_assert_eq!(completed, 0, "{}", ctx());
            if !cancelled && !abort_before_error {
                prop_assert!(
                    matches!(
                        client_error,
                        Some(SocketError::Timeout(TimeoutPhase::TlsHandshake))
                    ) && hs_errors == 1,
                    "not a handshake timeout: {}",
                    ctx()
                );
                stat(S_TIMEOUT);
                if let (Peer::Silent { timeout_ms, .. }, Some(from), Some(to)) =
                    (&round.peer, c.connect_at, c.error_at)
                {
                    let took = to - from;
                    prop_assert!(
                        took >= Duration::from_millis(*timeout_ms)
                            && took < Duration::from_millis(*timeout_ms) + Duration::from_secs(10),
                        "a {timeout_ms} ms timeout fired after {took:?}: {}",
                        ctx()
                    );
                }
            }
        }
        Handshake::NoCommonAlpn => {
            prop_assert_eq!(completed, 0, "{}", ctx());
            if !cancelled && !abort_before_error {
                prop_assert!(
                    matches!(&client_error,
                        Some(SocketError::Tls(TlsFailure::AlertReceived(a))) if a == "NoApplicationProtocol")
                        && hs_errors == 1,
                    "not an ALPN refusal: {}",
                    ctx()
                );
                stat(S_ALPN);
            }
            prop_assert!(m.received.is_empty() && c.received.is_empty(), "{}", ctx());
        }
        Handshake::CertRefused12 => {
            prop_assert_eq!(completed, 0, "{}", ctx());
            if !cancelled && !abort_before_error {
                prop_assert!(
                    matches!(
                        &client_error,
                        Some(SocketError::Tls(TlsFailure::AlertReceived(_)))
                    ) && hs_errors == 1,
                    "TLS 1.2: a refused client certificate is a handshake error: {}",
                    ctx()
                );
                stat(S_CERT12);
            }
            prop_assert!(m.received.is_empty() && c.received.is_empty(), "{}", ctx());
        }
        Handshake::CertRefused13 => {
            prop_assert_eq!(hs_errors, 0, "TLS 1.3: no handshake_error: {}", ctx());
            // Known, not fixed here (TCP layer; see the ignored
            // `a_write_after_the_servers_tls_1_3_certificate_refusal_reports_the_alert_not_the_write_error`
            // in tls_socket.rs): a write that fails once the alert and the server's reset are in
            // the kernel reports the write's error instead of the alert read before it.
            let client_error = match client_error {
                Some(SocketError::Io {
                    operation: SocketOperation::Write,
                    ..
                }) if ALLOW_WRITE_ERROR_HIDING_ALERT => {
                    stat(S_HIDDEN_ALERT);
                    Some(SocketError::Tls(TlsFailure::AlertReceived("hidden".into())))
                }
                e => e,
            };
            if closed.is_none() {
                prop_assert!(
                    completed == 1
                        && matches!(
                            &client_error,
                            Some(SocketError::Tls(TlsFailure::AlertReceived(_)))
                        ),
                    "TLS 1.3: a refused client certificate is handshake_completed, then the alert: {}",
                    ctx()
                );
                stat(S_CERT13);
            } else if let Some(e) = &client_error {
                prop_assert!(
                    matches!(e, SocketError::Tls(TlsFailure::AlertReceived(_))),
                    "{}",
                    ctx()
                );
            }
            prop_assert!(
                m.received.is_empty() && c.received.is_empty(),
                "data crossed a refused connection: {}",
                ctx()
            );
        }
        Handshake::Completes => {
            if !cancelled && !abort_before_error {
                // An abort may come before the handshake's end; otherwise it completes.
                let aborted_early = aborted && closed_before(at_handshake);
                prop_assert!(
                    completed == 1 || aborted_early,
                    "the handshake did not complete: {}",
                    ctx()
                );
            }
            if completed == 1 {
                stat(S_COMPLETED);
                let (version, alpn) = match &round.peer {
                    Peer::Kdnet { version, alpn, .. } => (*version, *alpn),
                    Peer::Raw { version, .. } => (*version, 0),
                    Peer::Silent { .. } => unreachable!(),
                };
                let want = expected_alpn(case.client_alpn, alpn).unwrap();
                prop_assert_eq!(c.alpn.clone(), Some(want.clone()), "ALPN: {}", ctx());
                prop_assert_eq!(
                    c.version,
                    Some(Some(negotiated(version))),
                    "version: {}",
                    ctx()
                );
                if m.alpn.is_some() {
                    prop_assert_eq!(m.alpn.clone(), Some(want), "server ALPN: {}", ctx());
                }
            }
            // Which errors the client may see: a truncation (or a reset) when the peer ended
            // without close_notify; none otherwise.
            let peer_truncates = match &round.peer {
                Peer::Kdnet { end, .. } => *end == End::Abort,
                Peer::Raw { end, .. } => *end == RawEnd::Truncate,
                Peer::Silent { .. } => false,
            };
            if let Some(e) = &client_error {
                let typed = match e {
                    SocketError::Tls(TlsFailure::Truncated) => peer_truncates,
                    SocketError::Io { .. } => {
                        peer_truncates && matches!(round.peer, Peer::Kdnet { .. })
                    }
                    _ => false,
                };
                prop_assert!(typed, "unexpected client error {e:?}: {}", ctx());
                prop_assert_eq!(hs_errors, 0, "{}", ctx());
            }
            if matches!(client_error, Some(SocketError::Tls(TlsFailure::Truncated))) {
                stat(S_TRUNCATED);
            }
            let raw_truncates = matches!(
                round.peer,
                Peer::Raw {
                    end: RawEnd::Truncate,
                    ..
                }
            );
            let server_aborted = matches!(
                round.peer,
                Peer::Kdnet {
                    end: End::Abort,
                    ..
                }
            ) && m.ended;
            if server_aborted && !client_ended_first && completed == 1 {
                prop_assert!(
                    client_error.is_some(),
                    "a peer gone without close_notify is no clean end: {}",
                    ctx()
                );
            }
            if raw_truncates && !client_ended_first && completed == 1 {
                prop_assert!(
                    matches!(client_error, Some(SocketError::Tls(TlsFailure::Truncated))),
                    "an end without close_notify is a truncation: {}",
                    ctx()
                );
                prop_assert_eq!(
                    c.received.len(),
                    raw_reply.len(),
                    "data before the truncation: {}",
                    ctx()
                );
            }
            // The peer's close_notify: everything before it arrived, ours answers it after
            // every queued byte, and nothing is an error.
            let peer_close_notify = match (&round.peer, raw) {
                (
                    Peer::Kdnet {
                        end: End::Graceful, ..
                    },
                    _,
                ) => m.ended,
                (
                    Peer::Raw {
                        end: RawEnd::CloseNotifyThenRead,
                        ..
                    },
                    Some(r),
                ) => r.handshake && r.reply_written,
                _ => false,
            };
            if peer_close_notify && !client_ended_first && completed == 1 {
                stat(S_PEER_CLOSE_NOTIFY);
                prop_assert!(client_error.is_none(), "{}", ctx());
                prop_assert_eq!(
                    c.received.len(),
                    sent_to_client.len(),
                    "not all the peer sent before its close_notify arrived: {}",
                    ctx()
                );
                prop_assert_eq!(
                    c.written,
                    c.writes.accepted.len(),
                    "close_notify answered before every queued byte was written: {}",
                    ctx()
                );
                if let Some(r) = raw {
                    prop_assert!(
                        r.clean_end && r.received == c.writes.accepted,
                        "the raw peer did not get every byte and then close_notify: {}",
                        ctx()
                    );
                }
            }
            // The client's graceful close once it had written: every byte arrives, the peer
            // sees close_notify, nothing is an error.
            let graceful = matches!(
                closed,
                Some(Closed::Graceful | Closed::QueuedConnect | Closed::QueuedHandshake)
            );
            let server_stays = match &round.peer {
                Peer::Kdnet { end, .. } => *end == End::Nothing,
                Peer::Raw { end, .. } => *end == RawEnd::CloseNotifyThenRead,
                Peer::Silent { .. } => false,
            };
            if graceful && server_stays && completed == 1 {
                prop_assert!(client_error.is_none(), "{}", ctx());
                prop_assert_eq!(c.written, c.writes.accepted.len(), "{}", ctx());
                prop_assert!(
                    peer_got == c.writes.accepted,
                    "the peer did not get every accepted byte: {}",
                    ctx()
                );
                if let Some(r) = raw {
                    prop_assert!(r.clean_end, "no close_notify at the peer: {}", ctx());
                }
                prop_assert!(
                    error_of(sev).is_none(),
                    "the server saw an error at a graceful close: {}",
                    ctx()
                );
            }
            // Unless the client aborted or failed, a raw peer reading on sees its close_notify.
            if let Some(r) = raw {
                if completed == 1 && !aborted && client_error.is_none() && r.reply_written {
                    prop_assert!(
                        r.clean_end
                            || matches!(
                                round.peer,
                                Peer::Raw {
                                    end: RawEnd::Truncate,
                                    ..
                                }
                            ),
                        "the raw peer saw no close_notify: {}",
                        ctx()
                    );
                }
            }
        }
    }

    // ---- the crate's server ------------------------------------------------------------------
    if let Peer::Kdnet { version, .. } = &round.peer {
        if m.connections == 1 {
            prop_assert_eq!(count(sev, &is_connected), 0, "{}", ctx());
            prop_assert_eq!(count(sev, &is_disconnected), 1, "{}", ctx());
            prop_assert_eq!(sev.last(), Some(&Ev::Disconnected), "{}", ctx());
            prop_assert!(count(sev, &is_error) <= 1, "{}", ctx());
            let s_completed = count(sev, &is_handshake);
            let s_hs_error = count(sev, &is_hs_error);
            prop_assert!(s_completed + s_hs_error <= 1, "{}", ctx());
            if let Some(d) = pos(sev, &is_data) {
                prop_assert!(
                    pos(sev, &is_handshake).is_some_and(|h| h < d),
                    "server data before its handshake: {}",
                    ctx()
                );
            }
            if let Err(e) = handshake_errors_reported(sev) {
                prop_assert!(false, "server: {e}: {}", ctx());
            }
            let s_error = error_of(sev);
            match expect {
                Handshake::NoCommonAlpn | Handshake::CertRefused12 | Handshake::CertRefused13
                    if !cancelled && !aborted =>
                {
                    prop_assert!(
                        s_hs_error == 1 && matches!(s_error, Some(SocketError::Tls(_))),
                        "the server did not refuse the handshake: {}",
                        ctx()
                    );
                }
                _ => {}
            }
            // A cancelled TLS 1.3 handshake is ClosedByPeer at a kdnet peer (in TLS 1.2 the
            // server may have completed before the client's close_notify came).
            if closed == Some(Closed::CancelHandshake)
                && negotiated(*version) == rustls::ProtocolVersion::TLSv1_3
                && expect == Handshake::Completes
            {
                prop_assert!(
                    matches!(s_error, Some(SocketError::ClosedByPeer)) && s_hs_error == 1,
                    "the peer of a cancelled handshake: {}",
                    ctx()
                );
            }
            let s_reported: usize = sev
                .iter()
                .map(|e| if let Ev::Written(n) = e { *n } else { 0 })
                .sum();
            prop_assert_eq!(s_reported, m.written, "{}", ctx());
            prop_assert!(m.written <= m.writes.accepted.len(), "{}", ctx());
            // A server ending gracefully, or a client's graceful close answered: every byte
            // the server accepted was written (and the client got it when it was reading on).
            if m.end == End::Graceful && m.ended && s_error.is_none() {
                prop_assert_eq!(m.written, m.writes.accepted.len(), "{}", ctx());
            }
        }
    }
    Ok(())
}

#[test]
fn the_tls_life_cycle_matches_the_model() {
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(socket_model::config(36, 200));
    let started = Instant::now();
    let result = runner.run(&case(), |case| {
        run_case(&mut event_loop.borrow_mut(), &case)
    });
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
