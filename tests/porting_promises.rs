//! The port's promises, pinned: what PORTING.md and the reference notes on the C++ originals
//! (`/work/shared/reference/kdnetwork.md`, `kdfoundation-kdbindings.md`, `sse-spec.md`) say a
//! porter can rely on — names, defaults, the order of a normal lifecycle's signals, and each
//! "C++ defect fixed" entry — over real loopback. Grouped by class; each test names its
//! PORTING.md row or reference-note entry. Promises other test files already pin are not
//! repeated here (`usage.rs`'s `porting_*_rows` walk most rows' names).

mod support;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, RequestId};
use kdnet::network::sse::{ReadyState, SseClient};
use kdnet::network::{ServerState, SocketError, SocketState, TcpServer, TcpSocket};
use support::{Reply, ScriptServer, run_until, wait_until};

/// A log of what slots saw, in order.
type Log = Rc<RefCell<Vec<String>>>;

/// Where a slot puts what it saw.
type Slot<T> = Rc<RefCell<Option<T>>>;

/// An accepted socket and the log of its signals.
type Peer = (Rc<TcpSocket>, Log);

/// A download progress report: bytes received, total if known.
type Progress = (u64, Option<u64>);

fn push(log: &Log, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

/// Records every signal of `socket` into a log, in emission order.
fn record_socket(socket: &Rc<TcpSocket>) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    socket
        .state_changed
        .connect(move |s| push(&l, format!("state {s:?}")))
        .release();
    let l = log.clone();
    socket
        .connected
        .connect(move |_| push(&l, "connected"))
        .release();
    let l = log.clone();
    socket
        .bytes_written
        .connect(move |n| push(&l, format!("bytes_written {n}")))
        .release();
    let l = log.clone();
    socket
        .bytes_received
        .connect(move |n| push(&l, format!("bytes_received {n}")))
        .release();
    let l = log.clone();
    socket
        .ready_read
        .connect(move |_| push(&l, "ready_read"))
        .release();
    let l = log.clone();
    socket
        .error_occurred
        .connect(move |e| push(&l, format!("error_occurred {e}")))
        .release();
    let l = log.clone();
    socket
        .disconnected
        .connect(move |_| push(&l, "disconnected"))
        .release();
    log
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- Names: every counterpart PORTING.md gives exists under that name ---------------------------

/// PORTING.md, every table: the names a porter looks up, as functions, fields and variants.
/// (Compiling is the test; `usage.rs` walks the rest of the rows' names.)
#[test]
fn porting_names_exist_as_porting_md_spells_them() {
    use kdnet::network::http::{HttpResponse, HttpSession};
    use kdnet::network::sse::{SseError, SseParser};
    use kdnet::network::{SocketOperation, TimeoutPhase, TlsFailure, UdpSocket};
    // Sockets, TLS, DNS.
    let _ = TcpSocket::abort;
    let _ = TcpSocket::read;
    let _ = TcpSocket::set_connect_timeout;
    let _ = TcpSocket::set_read_buffer_limit;
    let _ = TcpSocket::connect_to_addresses;
    let _ = TcpSocket::local_address;
    let _ = TcpSocket::is_encrypted;
    let _ = TcpSocket::alpn_protocol;
    let _ = kdnet::network::SslSocket::add_ca_certificate;
    let _ = kdnet::network::SslSocket::set_client_certificate;
    let _ = kdnet::network::SslSocket::dangerous_disable_certificate_verification;
    let _ = kdnet::network::SslSocket::protocol_version;
    let _ = kdnet::network::SslSocket::cipher_suite;
    let _ = kdnet::network::SslSocket::connect_to_addresses;
    let _ = TcpServer::listen_on;
    let _ = TcpServer::set_backlog;
    let _ = TcpServer::set_ipv6_only;
    let _ = TcpServer::server_addresses;
    let _ = TcpServer::set_tls_config;
    let _ = TcpServer::set_handshake_timeout;
    let _ = kdnet::network::TlsServerConfig::from_pem;
    let _ = kdnet::network::TlsClientConfig::with_only_ca_certificates;
    let _ = kdnet::network::DnsResolver::set_timeout;
    let _ = kdnet::network::DnsResolver::set_cache_ttl;
    let _ = kdnet::network::DnsResolver::clear_cache;
    let _ = UdpSocket::dropped_datagram_count;
    let _ = |u: &UdpSocket| -> *const kdnet::bindings::Signal<SocketError> { &u.error_occurred };
    let _ = SocketError::is_timeout;
    let _ = SocketError::is_retryable;
    let _ = [
        SocketOperation::Configure,
        SocketOperation::Bind,
        SocketOperation::Listen,
        SocketOperation::Accept,
        SocketOperation::Connect,
        SocketOperation::Read,
        SocketOperation::Write,
    ];
    let _ = [TimeoutPhase::Resolve, TimeoutPhase::TlsHandshake];
    let _ = [
        TlsFailure::UnknownIssuer,
        TlsFailure::Expired,
        TlsFailure::SelfSigned,
        TlsFailure::Truncated,
    ];
    let _ = |f: &TlsFailure| {
        matches!(
            f,
            TlsFailure::NameMismatch { .. }
                | TlsFailure::PlainHttp { .. }
                | TlsFailure::NotTls { .. }
                | TlsFailure::NotTlsClient { .. }
        )
    };
    // HTTP.
    let _ = HttpClient::cancel;
    let _ = HttpClient::send_and_wait;
    let _ = HttpClient::open_connections;
    let _ = HttpResponse::into_body;
    let _ = HttpResponse::body_as_str;
    let _ = HttpResponse::is_redirect;
    let _ = HttpResponse::is_client_error;
    let _ = HttpResponse::is_server_error;
    let _ = HttpResponse::redirect_url;
    let _ = HttpResponse::elapsed;
    let _ = HttpResponse::is_chunked;
    let _ = HttpSession::remove_default_header;
    let _ = HttpSession::default_headers_mut;
    let _ = HttpSession::apply_default_headers;
    let _ = HttpSession::read_timeout;
    let _ = HttpSession::clear_ca_certificates;
    let _ = HttpSession::clear_client_certificate;
    let _ = HttpSession::enable_certificate_verification;
    let _ = kdnet::network::http::HttpCookieJar::all_cookies;
    let _ = kdnet::network::http::HttpCookieJar::cookies_for_url;
    let _ = kdnet::network::http::HttpCookieJar::remove_cookie;
    let _ = kdnet::network::http::HttpCookieJar::with_public_suffix_list;
    let _ = kdnet::network::http::redirect_action;
    assert_eq!(
        kdnet::network::http::REDIRECT_STATUSES,
        [301, 302, 303, 307, 308]
    );
    let _ = |e: &HttpError| {
        matches!(
            e,
            HttpError::TooManyRedirects { .. }
                | HttpError::IncompleteBody { .. }
                | HttpError::EmptyResponse
                | HttpError::NoFinalResponse { .. }
                | HttpError::BadRedirect(_)
                | HttpError::Cancelled
                | HttpError::InvalidUrl { .. }
                | HttpError::InvalidRequest(_)
                | HttpError::LoopGone
        )
    };
    // Server-Sent Events.
    let _ = SseError::is_fatal;
    let _ = |e: &SseError| matches!(e, SseError::LoopGone | SseError::BadStatus { .. });
    let _ = SseParser::with_max_event_size;
    let _ = SseParser::set_flush_unterminated_at_eof;
    let _ = SseParser::set_report_comments;
    let _ = SseParser::last_event_id;
    let _ = SseParser::set_last_event_id;
    let _ = SseClient::set_last_event_id;
    let _ = SseClient::http_client;
    // Foundation: the embedding and nested-loop names.
    let _ = EventLoop::as_raw_fd;
    let _ = EventLoop::next_timeout;
    let _ = EventLoop::take_exit_request;
    let _ = kdnet::foundation::exit_requested;
    let _ = kdnet::foundation::dispatch_depth;
    let _ = kdnet::foundation::process_events;
    let _ = kdnet::foundation::LoopHandle::exit;
}

// ---- TcpServer -----------------------------------------------------------------------------------

/// PORTING.md `errorOccurred`, `listeningStarted()`, `stateChanged(State)` and
/// `setNewConnectionCallback` rows: `listen` announces `state_changed(Listening)` then
/// `listening_started`; a client's connection comes as `new_connection` with a connected socket
/// that never emits `connected` (it is connected from the start); `close` announces
/// `state_changed(NotListening)`.
#[test]
fn tcp_server_lifecycle_signals_come_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    let log: Log = Rc::default();
    let l = log.clone();
    server
        .state_changed
        .connect(move |s| push(&l, format!("state {s:?}")))
        .release();
    let l = log.clone();
    server
        .listening_started
        .connect(move |_| push(&l, "listening_started"))
        .release();
    let accepted: Slot<Peer> = Rc::default();
    let (l, a) = (log.clone(), accepted.clone());
    server
        .new_connection
        .connect(move |peer| {
            push(&l, format!("new_connection {:?}", peer.state()));
            *a.borrow_mut() = Some((peer.clone(), record_socket(peer)));
        })
        .release();
    server.listen("127.0.0.1", 0).unwrap();
    let port = server.server_port().unwrap();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_until(&mut ev, || accepted.borrow().is_some());
    // The signal's argument: the accepted socket, whose peer is the client.
    let peer_address = accepted.borrow().as_ref().unwrap().0.peer_address();
    assert_eq!(peer_address, Some(client.local_addr().unwrap()));
    assert_eq!(server.state(), ServerState::Listening);
    server.close();
    assert_eq!(server.state(), ServerState::NotListening);
    assert_eq!(
        *log.borrow(),
        [
            "state Listening",
            "listening_started",
            "new_connection Connected",
            "state NotListening"
        ]
    );
    // The accepted socket's own lifecycle: data, then the peer's end: no `connected` ever.
    (&client).write_all(b"hi").unwrap();
    client.shutdown(Shutdown::Both).unwrap();
    let peer_log = accepted.borrow().as_ref().unwrap().1.clone();
    wait_until(&mut ev, || {
        peer_log.borrow().last().map(String::as_str) == Some("disconnected")
    });
    assert_eq!(
        *peer_log.borrow(),
        [
            "bytes_received 2",
            "ready_read",
            "state Unconnected",
            "disconnected"
        ]
    );
}

/// PORTING.md Defaults "Listen backlog" row and the `listen(host, port, backlog = 128)` row:
/// `DEFAULT_BACKLOG` = 128, as KDN. Over loopback while the loop does not turn: the kernel
/// completes about 128 handshakes (Linux: backlog + 1) and holds the rest of a burst of 200 back
/// (their SYNs dropped until the server accepts).
#[test]
fn tcp_server_default_backlog_holds_about_128_connections_for_the_loop() {
    let _ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let addr: std::net::SocketAddr = server.server_address().unwrap();
    let clients: Vec<socket2::Socket> = (0..200)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into()); // in progress
            s
        })
        .collect();
    // Handshakes over loopback complete at once; give the kernel a moment all the same.
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut established = 0;
    while Instant::now() < deadline {
        established = clients.iter().filter(|s| s.peer_addr().is_ok()).count();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        (120..=136).contains(&established),
        "{established} of 200 connections completed with the default backlog"
    );
}

/// PORTING.md `close, isListening, …` row: "`close` leaves accepted connections open".
#[test]
fn tcp_server_close_leaves_accepted_connections_open() {
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    let accepted: Slot<Rc<TcpSocket>> = Rc::default();
    let a = accepted.clone();
    server
        .new_connection
        .connect(move |peer| *a.borrow_mut() = Some(peer.clone()))
        .release();
    server.listen("127.0.0.1", 0).unwrap();
    let port = server.server_port().unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_until(&mut ev, || accepted.borrow().is_some());
    server.close();
    assert!(!server.is_listening());
    let peer = accepted.borrow().clone().unwrap();
    assert_eq!(peer.state(), SocketState::Connected);
    // Both directions still work after the close.
    peer.write(b"still here").unwrap();
    client.write_all(b"and you").unwrap();
    wait_until(&mut ev, || peer.bytes_available() == 7);
    let mut got = [0u8; 10];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
    assert_eq!(&peer.read_all()[..], b"and you");
    // A new client is refused: the server no longer listens.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// PORTING.md `close, isListening, …, lastError` row: "a failed `listen` is its `Err` and is
/// also emitted as `error_occurred` (as KDN's `setError` emitted `errorOccurred`), with no state
/// change". A failed `listen` (the port is taken) returns the error and emits the same one on
/// `error_occurred` before it returns; no `state_changed`: the server stays `NotListening` and
/// can listen elsewhere.
#[test]
fn tcp_server_failed_listen_is_its_result_and_error_occurred() {
    let _ev = EventLoop::new().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let server = TcpServer::new().unwrap();
    let log: Log = Rc::default();
    let l = log.clone();
    server
        .error_occurred
        .connect(move |e| push(&l, format!("error_occurred {e}")))
        .release();
    let l = log.clone();
    server
        .state_changed
        .connect(move |s| push(&l, format!("state {s:?}")))
        .release();
    let result = server.listen("127.0.0.1", port);
    let error = match &result {
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(server.state(), ServerState::NotListening);
    assert_eq!(*log.borrow(), [format!("error_occurred {error}")]);
    log.borrow_mut().clear();
    server.listen("127.0.0.1", 0).unwrap();
    assert_eq!(*log.borrow(), ["state Listening"]);
}

/// KDN `TcpServer`: "socket closed if no callback"; kdnet's `TcpServer` docs: "keep the `Rc` to
/// keep the connection (a connection nobody keeps is closed)". A server whose `new_connection`
/// has no slot closes what it accepts: the client reads the end of the stream.
#[test]
fn tcp_server_closes_a_connection_nobody_keeps() {
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", server.server_port().unwrap())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut end = None;
    wait_until(&mut ev, || {
        let mut byte = [0u8; 1];
        match client.read(&mut byte) {
            Ok(n) => end = Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => end = Some(0),
            Err(_) => {}
        }
        end.is_some()
    });
    assert_eq!(end, Some(0));
}

// ---- TcpSocket -----------------------------------------------------------------------------------

/// PORTING.md `Socket::stateChanged`, `connected()`, `bytesWritten`, `bytesReceived`,
/// `readyRead` and `disconnected()` rows, one normal client lifecycle: lookup, connect, a write
/// queued before the connection (T6), the answer, the peer's close.
#[test]
fn tcp_socket_client_lifecycle_signals_come_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).unwrap();
        stream.write_all(b"pong!").unwrap();
        stream.shutdown(Shutdown::Both).unwrap();
        ping
    });
    let socket = TcpSocket::new().unwrap();
    let log = record_socket(&socket);
    socket.connect_to_host("localhost", port).unwrap();
    assert_eq!(socket.state(), SocketState::HostLookup);
    assert_eq!(
        socket.write(b"ping").unwrap(),
        4,
        "queued before connected (T6)"
    );
    wait_until(&mut ev, || {
        log.borrow().last().map(String::as_str) == Some("disconnected")
    });
    assert_eq!(&server.join().unwrap(), b"ping");
    assert_eq!(
        *log.borrow(),
        [
            "state HostLookup",
            "state Connecting",
            "state Connected",
            "connected",
            "bytes_written 4",
            "bytes_received 5",
            "ready_read",
            "state Unconnected",
            "disconnected"
        ]
    );
    assert_eq!(
        &socket.read_all()[..],
        b"pong!",
        "unread data stays readable after the close"
    );
}

/// PORTING.md `disconnectFromHost()` row: queued writes are flushed first, `Closing` meanwhile;
/// the report of the flushed bytes comes before the close (the `bytes_written` field docs).
#[test]
fn tcp_socket_graceful_close_signals_come_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    let socket = TcpSocket::new().unwrap();
    socket
        .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .unwrap();
    wait_until(&mut ev, || socket.state() == SocketState::Connected);
    let log = record_socket(&socket);
    socket.write(b"last words").unwrap();
    socket.disconnect_from_host();
    wait_until(&mut ev, || {
        log.borrow().last().map(String::as_str) == Some("disconnected")
    });
    assert_eq!(&server.join().unwrap(), b"last words");
    assert_eq!(
        *log.borrow(),
        [
            "state Closing",
            "bytes_written 10",
            "state Unconnected",
            "disconnected"
        ]
    );
}

/// PORTING.md `connected(), disconnected(), …` row: "`disconnected` only for a connection that
/// emitted `connected`"; and `Socket::errorOccurred`: "the socket is already `Unconnected` when
/// it is emitted". A refused connect: no `connected`, no `disconnected` (KDN's
/// `handleConnectionResult` emitted `disconnected` for it, through `disconnectFromHost`). The
/// order is KDN's: `errorOccurred` (its `setError`), then `stateChanged(Unconnected)`.
#[test]
fn tcp_socket_refused_connect_emits_error_without_disconnected() {
    let mut ev = EventLoop::new().unwrap();
    let socket = TcpSocket::new().unwrap();
    let log = record_socket(&socket);
    socket
        .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), closed_port())
        .unwrap();
    wait_until(&mut ev, || {
        log.borrow().iter().any(|e| e.starts_with("error_occurred"))
    });
    run_until(&mut ev, Duration::from_millis(50), || false);
    let log = log.borrow();
    // `state()` is already `Unconnected` inside `error_occurred` (usage.rs pins that); the
    // `state_changed(Unconnected)` announcement follows it, and is left out when an
    // `error_occurred` slot connected again (tcp_socket.rs
    // `reconnect_from_error_occurred_is_not_followed_by_a_stale_unconnected`).
    assert_eq!(log[0], "state Connecting", "{log:?}");
    assert!(log[1].starts_with("error_occurred"), "{log:?}");
    assert_eq!(log[2..], ["state Unconnected"], "{log:?}");
}

/// PORTING.md `write(ByteArray)` row: writes are accepted "from `connect_to_host` on",
/// "queued until connected" (T6), with `InvalidState` "when unconnected or closing"; the `write`
/// docs: "until `disconnect_from_host`". A write after a graceful close began is refused and
/// changes nothing: the peer gets exactly what was written before.
#[test]
fn tcp_socket_write_while_closing_is_invalid_state() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    let socket = TcpSocket::new().unwrap();
    socket
        .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .unwrap();
    wait_until(&mut ev, || socket.state() == SocketState::Connected);
    assert_eq!(socket.write(b"before").unwrap(), 6);
    socket.disconnect_from_host();
    assert!(
        matches!(socket.write(b"after"), Err(SocketError::InvalidState(_))),
        "a write while {:?}",
        socket.state()
    );
    wait_until(&mut ev, || socket.state() == SocketState::Unconnected);
    assert!(matches!(
        socket.write(b"later"),
        Err(SocketError::InvalidState(_))
    ));
    assert_eq!(&server.join().unwrap(), b"before");
}

/// PORTING.md `disconnectFromHost()` row: "flushes pending writes … first (KDN dropped them)",
/// with T6: writes are "queued until connected". Bytes written while the socket still looks the
/// host up, then a graceful close: the connect goes on, the bytes go out, and the socket closes
/// (as Qt's `disconnectFromHost` while connecting, and as kdnet's own close during a TLS
/// handshake with bytes queued). They were dropped without a word: `write` had accepted them.
/// A write after the close is refused, although the socket still connects.
#[test]
fn disconnect_from_host_while_connecting_sends_the_queued_writes_first() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    });
    let socket = TcpSocket::new().unwrap();
    let log = record_socket(&socket);
    socket.connect_to_host("localhost", port).unwrap();
    assert_eq!(socket.write(b"fire and forget").unwrap(), 15);
    socket.disconnect_from_host();
    assert!(
        matches!(socket.write(b"after"), Err(SocketError::InvalidState(_))),
        "a write after disconnect_from_host while {:?}",
        socket.state()
    );
    wait_until(&mut ev, || {
        log.borrow().last().map(String::as_str) == Some("disconnected")
            || log.borrow().iter().any(|e| e == "state Unconnected")
    });
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(
        *log.borrow(),
        [
            "state HostLookup",
            "state Connecting",
            "state Connected",
            "connected",
            "state Closing",
            "bytes_written 15",
            "state Unconnected",
            "disconnected"
        ]
    );
    assert_eq!(&server.join().unwrap(), b"fire and forget");
}

/// T5 ("`disconnectFromHost` during DNS does nothing") → PORTING.md: "cancels the lookup/connect".
/// A close right after `connect_to_host` ends in `Unconnected`, and nothing connects later.
#[test]
fn t5_disconnect_from_host_during_the_lookup_cancels_the_connect() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = TcpSocket::new().unwrap();
    let log = record_socket(&socket);
    // A name (not a literal), so that the socket really is in its lookup.
    socket.connect_to_host("localhost", port).unwrap();
    assert_eq!(socket.state(), SocketState::HostLookup);
    socket.disconnect_from_host();
    assert_eq!(socket.state(), SocketState::Unconnected);
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(socket.state(), SocketState::Unconnected);
    assert!(
        listener.accept().is_err(),
        "the cancelled lookup went on to connect"
    );
    assert_eq!(
        *log.borrow(),
        ["state HostLookup", "state Unconnected"],
        "no connect, no error, no disconnected"
    );
}

/// PORTING.md `read(max), readAll(), …` row: "reading stops while the read buffer holds
/// `DEFAULT_READ_BUFFER_LIMIT` (4 MiB …), so TCP flow control slows the peer". The default, with
/// a socket nobody reads: the buffer stops growing near 4 MiB, well short of what the peer sends.
#[test]
fn tcp_socket_default_read_buffer_limit_holds_the_peer_back_at_4_mib() {
    const LIMIT: usize = kdnet::network::tcp::DEFAULT_READ_BUFFER_LIMIT;
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(0usize));
    let s = sent.clone();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let chunk = vec![7u8; 64 * 1024];
        // 32 MiB: far beyond the limit plus every kernel buffer on the way.
        for _ in 0..512 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
            *s.lock().unwrap() += chunk.len();
        }
    });
    let socket = TcpSocket::new().unwrap();
    socket
        .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .unwrap();
    wait_until(&mut ev, || socket.bytes_available() >= LIMIT);
    // Let it run on: the buffer must not grow much past the limit (one read's worth at most).
    run_until(&mut ev, Duration::from_millis(300), || false);
    let held = socket.bytes_available();
    assert!(
        (LIMIT..LIMIT + 2 * 1024 * 1024).contains(&held),
        "read buffer holds {held} bytes"
    );
    assert!(
        *sent.lock().unwrap() < 32 * 1024 * 1024,
        "the peer was not held back"
    );
    // Reading frees the buffer and reading resumes.
    socket.read_all();
    wait_until(&mut ev, || socket.bytes_available() > 0);
}

// ---- HttpClient / HttpSession (tests only: src/network/http/ is another helper's area) ----------

/// `Content-Length`-framed `200` with `body`, keeping the connection.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// PORTING.md Defaults "Default headers" row and the `HttpSession` default-headers row: what a
/// plain `get` puts on the wire is `User-Agent: kdnet/<version>` (`DEFAULT_USER_AGENT`, not
/// KDN's `KDNetwork HttpClient/1.0`), `Accept: */*`, `Host` with the port, and
/// `Accept-Encoding: gzip, deflate` (plus `br` with the `brotli` feature) since common headers
/// are on.
#[test]
fn http_default_request_head_on_the_wire() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok("x")));
    let client = HttpClient::new().unwrap();
    support::wait(&mut ev, &support::get_text(&client, &server.url("/d"))).unwrap();
    let seen = &server.requests()[0];
    assert_eq!(seen.line, "GET /d HTTP/1.1");
    assert_eq!(
        seen.header("user-agent"),
        Some(concat!("kdnet/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        kdnet::network::http::DEFAULT_USER_AGENT,
        concat!("kdnet/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(seen.header("accept"), Some("*/*"));
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", server.addr.port()).as_str())
    );
    let encodings = if cfg!(feature = "brotli") {
        "gzip, deflate, br"
    } else {
        "gzip, deflate"
    };
    assert_eq!(seen.header("accept-encoding"), Some(encodings));
    assert_eq!(seen.header("content-length"), None, "a GET has no body");
}

/// H20 ("no `Content-Length: 0` on empty POST/PUT") → PORTING.md: "an empty `POST`/`PUT`/`PATCH`
/// sends `Content-Length: 0` (with common headers on)"; with them off it is left out (the
/// `url, method, body, …` row: common headers "govern … an empty `POST`/`PUT`/`PATCH` body's
/// `Content-Length: 0`").
#[test]
fn h20_an_empty_post_put_or_patch_sends_content_length_zero() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok("")));
    let client = HttpClient::new().unwrap();
    for method in ["POST", "PUT", "PATCH"] {
        let request = HttpRequest::new(&server.url("/e"))
            .unwrap()
            .with_method(method.parse().unwrap());
        support::wait(&mut ev, &support::send(&client, request)).unwrap();
    }
    let mut bare = HttpRequest::new(&server.url("/bare"))
        .unwrap()
        .with_method("POST".parse().unwrap());
    bare.set_auto_add_common_headers(false);
    support::wait(&mut ev, &support::send(&client, bare)).unwrap();
    let seen = server.requests();
    for request in &seen[..3] {
        assert_eq!(request.header("content-length"), Some("0"), "{request:?}");
    }
    assert_eq!(seen[3].header("content-length"), None, "{:?}", seen[3]);
}

/// PORTING.md `aboutToSendRequest`, `uploadProgress`/`downloadProgress`, `responseReceived`
/// rows, one request's signals in order: announced before any byte is sent, upload progress
/// ending at the body's length, download progress ending at `(n, Some(n))`, then the callback,
/// then `response_received` ("after the request's callback").
#[test]
fn http_request_signals_come_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok("answer")));
    let client = HttpClient::new().unwrap();
    let log: Log = Rc::default();
    // The announced request is the one sent: its id, with the session's defaults applied
    // ("after session defaults, before any byte is sent").
    let announced: Slot<(RequestId, Option<String>)> = Rc::default();
    let (l, a) = (log.clone(), announced.clone());
    client
        .about_to_send_request
        .connect(move |(id, r)| {
            *a.borrow_mut() = Some((*id, r.header("user-agent").map(str::to_string)));
            push(&l, format!("about_to_send {}", r.method().as_str()))
        })
        .release();
    let l = log.clone();
    client
        .upload_progress
        .connect(move |(_, sent, total)| push(&l, format!("upload {sent}/{total}")))
        .release();
    let l = log.clone();
    client
        .download_progress
        .connect(move |(_, got, total)| push(&l, format!("download {got}/{total:?}")))
        .release();
    let l = log.clone();
    client
        .response_received
        .connect(move |r| push(&l, format!("response_received {}", r.status())))
        .release();
    let l = log.clone();
    client
        .error
        .connect(move |(_, e)| push(&l, format!("error {e}")))
        .release();
    let l = log.clone();
    let id = client.post(&server.url("/p"), "12345", "text/plain", move |r| {
        push(&l, format!("callback {}", r.unwrap().text()))
    });
    wait_until(&mut ev, || {
        log.borrow()
            .iter()
            .any(|e| e.starts_with("response_received"))
    });
    let log = log.borrow();
    assert_eq!(log.first().map(String::as_str), Some("about_to_send POST"));
    assert_eq!(
        log[log.len() - 3..],
        [
            "download 6/Some(6)",
            "callback answer",
            "response_received 200"
        ]
    );
    let uploads: Vec<&String> = log.iter().filter(|e| e.starts_with("upload")).collect();
    assert_eq!(uploads.last().map(|s| s.as_str()), Some("upload 5/5"));
    let last_upload = log.iter().rposition(|e| e.starts_with("upload")).unwrap();
    let first_download = log.iter().position(|e| e.starts_with("download")).unwrap();
    assert!(last_upload < first_download, "{log:?}");
    assert!(!log.iter().any(|e| e.starts_with("error")), "{log:?}");
    assert_eq!(
        *announced.borrow(),
        Some((
            id,
            Some(kdnet::network::http::DEFAULT_USER_AGENT.to_string())
        ))
    );
}

/// PORTING.md `downloadProgress` row (H17): "the total is the announced length (0 for a
/// bodiless response) and the end comes as `(n, Some(n))`". A `HEAD` announcing 100 bytes ends
/// at `(0, Some(0))`; a chunked body of unknown length reports `None` until it ends, then
/// `(n, Some(n))` with `n` the body bytes without the chunk framing.
#[test]
fn h17_download_progress_totals_for_bodiless_and_chunked_responses() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("HEAD") {
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec())
        } else {
            Reply::Pieces(
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
                    b"4\r\ndefg\r\n0\r\n\r\n".to_vec(),
                ],
                Duration::from_millis(30),
            )
        }
    });
    let client = HttpClient::new().unwrap();
    let reports: Rc<RefCell<Vec<Progress>>> = Rc::default();
    let r = reports.clone();
    client
        .download_progress
        .connect(move |(_, got, total)| r.borrow_mut().push((*got, *total)))
        .release();
    let head = HttpRequest::new(&server.url("/h"))
        .unwrap()
        .with_method("HEAD".parse().unwrap());
    support::wait(&mut ev, &support::send(&client, head)).unwrap();
    assert_eq!(
        reports.borrow().last(),
        Some(&(0, Some(0))),
        "{:?}",
        reports.borrow()
    );
    reports.borrow_mut().clear();
    let body = support::wait(&mut ev, &support::get_text(&client, &server.url("/c"))).unwrap();
    assert_eq!(body.text(), "abcdefg");
    let reports = reports.borrow();
    assert_eq!(reports.last(), Some(&(7, Some(7))), "{reports:?}");
    assert!(
        reports[..reports.len() - 1]
            .iter()
            .all(|(_, total)| total.is_none()),
        "{reports:?}"
    );
    assert!(
        reports.windows(2).all(|w| w[0].0 < w[1].0),
        "each count once: {reports:?}"
    );
}

/// PORTING.md `error(const HttpRequest&, const std::string&)` row: the `error` signal comes
/// "after the request's callback", with the request's id; `response_received` does not come.
#[test]
fn http_failed_request_calls_back_then_emits_error() {
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let log: Log = Rc::default();
    let ids: Rc<RefCell<Vec<RequestId>>> = Rc::default();
    let (l, i) = (log.clone(), ids.clone());
    client
        .error
        .connect(move |(id, e)| {
            i.borrow_mut().push(*id);
            push(
                &l,
                format!("error {}", matches!(e, HttpError::Transport(_))),
            );
        })
        .release();
    let l = log.clone();
    client
        .response_received
        .connect(move |_| push(&l, "response_received"))
        .release();
    let l = log.clone();
    let id = client.get(&format!("http://127.0.0.1:{}/", closed_port()), move |r| {
        push(
            &l,
            format!("callback {}", matches!(r, Err(HttpError::Transport(_)))),
        )
    });
    wait_until(&mut ev, || log.borrow().len() >= 2);
    run_until(&mut ev, Duration::from_millis(30), || false);
    assert_eq!(*log.borrow(), ["callback true", "error true"]);
    assert_eq!(*ids.borrow(), [id]);
}

/// H12 ("limit exceeded returns the 3xx silently") with the defaults: `DEFAULT_MAX_REDIRECTS`
/// (5) hops are followed, a sixth is `Err(TooManyRedirects)`.
#[test]
fn h12_the_default_redirect_limit_follows_five_hops_and_refuses_the_sixth() {
    let mut ev = EventLoop::new().unwrap();
    // /r/N redirects to /r/N-1; /r/0 answers.
    let server = ScriptServer::start(|req, _| {
        let n: u32 = req.line.split(' ').nth(1).unwrap()[3..].parse().unwrap();
        if n == 0 {
            Reply::Bytes(ok("arrived"))
        } else {
            let next = n - 1;
            Reply::Bytes(
                format!("HTTP/1.1 302 Found\r\nLocation: /r/{next}\r\nContent-Length: 0\r\n\r\n")
                    .into_bytes(),
            )
        }
    });
    let client = HttpClient::new().unwrap();
    // `responseReceived` row: "once per final response": no report of the hops' 3xx.
    let log: Log = Rc::default();
    let l = log.clone();
    client
        .response_received
        .connect(move |r| push(&l, format!("response_received {}", r.status())))
        .release();
    let l = log.clone();
    client
        .error
        .connect(move |(_, e)| {
            let too_many = matches!(e, HttpError::TooManyRedirects { .. });
            push(&l, format!("error too_many_redirects={too_many}"))
        })
        .release();
    let five = support::wait(&mut ev, &support::get_text(&client, &server.url("/r/5"))).unwrap();
    assert_eq!(
        (five.text().as_ref(), five.redirect_count()),
        ("arrived", 5)
    );
    let six = support::wait(&mut ev, &support::get_text(&client, &server.url("/r/6")));
    assert!(
        matches!(six, Err(HttpError::TooManyRedirects { .. })),
        "{six:?}"
    );
    assert_eq!(
        *log.borrow(),
        ["response_received 200", "error too_many_redirects=true"]
    );
}

// ---- SseClient -----------------------------------------------------------------------------------

/// The head of an event stream with no length: it runs until the server closes.
fn sse_stream(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n{body}").into_bytes()
}

/// Records every signal of `sse` into a log, in emission order.
fn record_sse(sse: &Rc<SseClient>) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sse.state_changed
        .connect(move |s| push(&l, format!("state {s:?}")))
        .release();
    let l = log.clone();
    sse.opened
        .connect(move |r| push(&l, format!("opened {}", r.status())))
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| push(&l, "connected"))
        .release();
    let l = log.clone();
    sse.message_received
        .connect(move |e| push(&l, format!("message {}:{}", e.event_type(), e.data())))
        .release();
    let l = log.clone();
    sse.error
        .connect(move |e| push(&l, format!("error fatal={}", e.is_fatal())))
        .release();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| push(&l, "disconnected"))
        .release();
    log
}

/// PORTING.md Server-Sent Events defaults: a new client is `Closed`, reconnects by default
/// (`set_auto_reconnect`), with `DEFAULT_RECONNECTION_TIME` = 3 s, `DEFAULT_MAX_RECONNECTION_DELAY`
/// = 60 s, `DEFAULT_MAX_EVENT_SIZE` = 16 MiB, and no last event ID (sse-spec.md §1.5: "last
/// event ID string starts ''", reconnection time "a few seconds", Chrome's 3000 ms).
#[test]
fn sse_client_defaults() {
    let _ev = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert!(!sse.is_connected());
    assert!(sse.auto_reconnect());
    assert_eq!(sse.last_event_id(), "");
    assert_eq!(
        sse.reconnection_time(),
        kdnet::network::sse::DEFAULT_RECONNECTION_TIME
    );
    assert_eq!(
        kdnet::network::sse::DEFAULT_RECONNECTION_TIME,
        Duration::from_secs(3)
    );
    assert_eq!(
        kdnet::network::sse::DEFAULT_MAX_RECONNECTION_DELAY,
        Duration::from_secs(60)
    );
    assert_eq!(
        kdnet::network::sse::DEFAULT_MAX_EVENT_SIZE,
        16 * 1024 * 1024
    );
}

/// PORTING.md `messageReceived`, `connected()`, `disconnected()`, `error` row and `ready_state`,
/// `state_changed` row: a stream's normal lifecycle with auto reconnect off. `Connecting` at
/// `connect`, `Open` (WHATWG "announce": set OPEN, then fire `open`), `opened` "just before
/// `connected`", the events, and at the end of the stream
/// `disconnected` and `Closed`, with no `error` (sse-spec.md §1.6: a normal end is no failure).
#[test]
fn sse_client_lifecycle_signals_come_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(sse_stream("data: a\n\nevent: tick\ndata: b\n\n"))
    });
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let log = record_sse(&sse);
    // PORTING.md `responseReceived` row: "once per final response (KDN re-emitted it per SSE
    // chunk); for an `SseClient`'s stream it comes once the stream has ended (after
    // `disconnected`)".
    let l = log.clone();
    sse.http_client()
        .response_received
        .connect(move |r| push(&l, format!("response_received {}", r.status())))
        .release();
    sse.connect(HttpRequest::get(&server.url("/s")).unwrap());
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    wait_until(&mut ev, || {
        log.borrow()
            .iter()
            .any(|e| e.starts_with("response_received"))
    });
    run_until(&mut ev, Duration::from_millis(30), || false);
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "opened 200",
            "connected",
            "message message:a",
            "message tick:b",
            "state Closed",
            "disconnected",
            "response_received 200"
        ]
    );
    // sse-spec.md §1.5: the request asks for the stream: `Accept: text/event-stream`,
    // `Cache-Control: no-cache` (PORTING.md `connect` row: "added unless set").
    let seen = &server.requests()[0];
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    assert_eq!(seen.header("cache-control"), Some("no-cache"));
    assert_eq!(seen.header("last-event-id"), None, "no ID known yet");
}

/// PORTING.md `connect` row: `Accept` and `Cache-Control` are "added unless set": a request's
/// own values go out as given, once.
#[test]
fn sse_client_keeps_the_request_s_own_accept_and_cache_control() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::BytesThenClose(sse_stream("data: a\n\n")));
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let request = HttpRequest::get(&server.url("/s"))
        .unwrap()
        .with_header("accept", "text/event-stream, */*;q=0.1")
        .with_header("cache-control", "max-age=0");
    sse.connect(request);
    wait_until(&mut ev, || sse.ready_state() == ReadyState::Closed);
    let seen = &server.requests()[0];
    let count = |name: &str| {
        seen.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(seen.header("accept"), Some("text/event-stream, */*;q=0.1"));
    assert_eq!(seen.header("cache-control"), Some("max-age=0"));
    assert_eq!((count("accept"), count("cache-control")), (1, 1));
}

/// S3 ("no reconnect") → PORTING.md: "reconnects by default … `DEFAULT_RECONNECTION_TIME` =
/// 3 s": after a clean end of a stream that delivered an event, the reconnect comes no sooner
/// than 3 s (plus at most 25 % jitter, `set_max_reconnection_delay` docs), with `Last-Event-ID`.
/// The lifecycle across the reconnect: `disconnected` and `Connecting` at the end, no `error`.
#[test]
fn s3_the_default_reconnect_waits_three_seconds_and_resumes_from_the_id() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::BytesThenClose(sse_stream("id: 7\ndata: first\n\n"))
        } else {
            Reply::Bytes(sse_stream("data: second\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    let log = record_sse(&sse);
    sse.connect(HttpRequest::get(&server.url("/s")).unwrap());
    wait_until(&mut ev, || log.borrow().iter().any(|e| e == "disconnected"));
    let ended = Instant::now();
    wait_until(&mut ev, || {
        log.borrow().iter().any(|e| e == "message message:second")
    });
    let waited = ended.elapsed();
    sse.disconnect();
    assert!(
        waited >= Duration::from_secs(3),
        "reconnected after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "reconnected after {waited:?}"
    );
    assert_eq!(server.requests()[1].header("last-event-id"), Some("7"));
    assert_eq!(
        log.borrow()[..10],
        [
            "state Connecting",
            "state Open",
            "opened 200",
            "connected",
            "message message:first",
            "state Connecting",
            "disconnected",
            "state Open",
            "opened 200",
            "connected",
        ]
    );
}

/// PORTING.md `(no reconnect; retry parsed but unused, S3)` row: `set_retry_on_throttle` is
/// "off by default": with auto reconnect on, a `429` (even one saying when to come back) fails
/// the client for good, as any non-200 status does (sse-spec.md §1.6), with one request only.
#[test]
fn sse_client_does_not_retry_a_throttled_answer_by_default() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(10));
    let log = record_sse(&sse);
    sse.connect(HttpRequest::get(&server.url("/s")).unwrap());
    wait_until(&mut ev, || sse.ready_state() == ReadyState::Closed);
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        *log.borrow(),
        // (No `disconnected`: it pairs with a `connected`, which never came.)
        ["state Connecting", "state Closed", "error fatal=true"]
    );
}

/// S1 ("`disconnect` cancels every request of the client, and does nothing while connecting")
/// → PORTING.md: "cancels only its own request, in every phase". Disconnected while its request
/// waits for an answer, the stream's connection is closed (the server sees the end) and `Closed`
/// comes at once; a plain request on the same `HttpClient` completes.
#[test]
fn s1_disconnect_while_connecting_cancels_only_the_stream_s_request() {
    let mut ev = EventLoop::new().unwrap();
    // The stream's server reads the request and never answers; reports when the client closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream_url = format!("http://{}/s", listener.local_addr().unwrap());
    let closed = Arc::new(Mutex::new(None));
    let c = closed.clone();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        support::read_request_head(&mut reader).unwrap();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        *c.lock().unwrap() = Some(rest.len());
    });
    let slow = ScriptServer::start(|_, _| {
        std::thread::sleep(Duration::from_millis(200));
        Reply::Bytes(ok("other"))
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let log = record_sse(&sse);
    sse.connect(HttpRequest::get(&stream_url).unwrap());
    let other = support::get_text(&http, &slow.url("/o"));
    // Wait until the stream's request is on the wire, then stop the client.
    wait_until(&mut ev, || slow.requests().len() == 1);
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    sse.disconnect();
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    let response = support::wait(&mut ev, &other).unwrap();
    assert_eq!(response.text(), "other");
    wait_until(&mut ev, || closed.lock().unwrap().is_some());
    assert_eq!(
        *closed.lock().unwrap(),
        Some(0),
        "the server saw the stream's connection end"
    );
    // `disconnect` docs: "Emits `state_changed(Closed)` if the client was not closed already,
    // then `disconnected` if the stream was open": `disconnected` pairs with `connected`, as a
    // `TcpSocket`'s does, so none comes before any `connected`.
    assert_eq!(*log.borrow(), ["state Connecting", "state Closed"]);
}

/// S2 ("every `SseClient` emits `error` for any request's error") → PORTING.md: "`error` only
/// for the client's own stream". Two clients on one `HttpClient`: one refused for good, a plain
/// request failing too; the other client's stream hears of neither.
#[test]
fn s2_an_sse_client_hears_only_its_own_stream_s_errors() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/bad") {
            Reply::Bytes(
                b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(sse_stream("data: fine\n\n"))
        }
    });
    let http = HttpClient::new().unwrap();
    let good = http.create_sse_client();
    let bad = http.create_sse_client();
    let good_log = record_sse(&good);
    let bad_log = record_sse(&bad);
    good.connect(HttpRequest::get(&server.url("/good")).unwrap());
    wait_until(&mut ev, || {
        good_log
            .borrow()
            .iter()
            .any(|e| e == "message message:fine")
    });
    bad.connect(HttpRequest::get(&server.url("/bad")).unwrap());
    let failed = support::get_text(&http, &format!("http://127.0.0.1:{}/", closed_port()));
    wait_until(&mut ev, || bad.ready_state() == ReadyState::Closed);
    assert!(support::wait(&mut ev, &failed).is_err());
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert!(
        bad_log.borrow().iter().any(|e| e == "error fatal=true"),
        "{:?}",
        bad_log.borrow()
    );
    assert_eq!(good.ready_state(), ReadyState::Open);
    assert!(
        !good_log.borrow().iter().any(|e| e.starts_with("error")),
        "{:?}",
        good_log.borrow()
    );
    good.disconnect();
}

/// S4 ("the 30 s total timeout kills streams") → PORTING.md: "no total timeout on streams".
/// A stream whose request carries a short total timeout outlives it: `connect` makes the request
/// a streaming one.
#[test]
fn s4_a_stream_outlives_its_request_s_total_timeout() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(
            vec![sse_stream("data: early\n\n"), b"data: late\n\n".to_vec()],
            Duration::from_millis(500),
        )
    });
    let sse = SseClient::new().unwrap();
    let log = record_sse(&sse);
    let request = HttpRequest::get(&server.url("/s"))
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    sse.connect(request);
    wait_until(&mut ev, || {
        log.borrow().iter().any(|e| e == "message message:late")
    });
    assert_eq!(sse.ready_state(), ReadyState::Open);
    assert!(
        !log.borrow()
            .iter()
            .any(|e| e.starts_with("error") || e == "disconnected"),
        "{:?}",
        log.borrow()
    );
    sse.disconnect();
}

/// S6 ("reference cycle `HttpClient` → request → `SseClient` → `HttpClient` while a stream is
/// open") → PORTING.md: "the request holds only a `Weak` to the `SseClient`". Dropping the last
/// handle of a client with an open stream frees it, and ends its request.
#[test]
fn s6_a_client_with_an_open_stream_is_freed_when_its_last_handle_goes() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(sse_stream("data: open\n\n")));
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let log = record_sse(&sse);
    sse.connect(HttpRequest::get(&server.url("/s")).unwrap());
    wait_until(&mut ev, || {
        log.borrow().iter().any(|e| e == "message message:open")
    });
    assert_eq!(http.pending_requests(), 1);
    let weak = Rc::downgrade(&sse);
    drop(sse);
    assert!(weak.upgrade().is_none(), "something still holds the client");
    wait_until(&mut ev, || http.pending_requests() == 0);
}

// ---- More KDNetwork defects, end to end ---------------------------------------------------------

/// H14 ("an empty header value glues two header names") → PORTING.md: "empty values kept". Over
/// loopback: `X-Empty:` is a field with an empty value, and the next field keeps its own name.
#[test]
fn h14_an_empty_header_value_is_kept_and_the_next_field_keeps_its_name() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Type: a/b\r\nContent-Length: 1\r\n\r\nx"
                .to_vec(),
        )
    });
    let client = HttpClient::new().unwrap();
    let response = support::wait(&mut ev, &support::get_text(&client, &server.url("/"))).unwrap();
    assert_eq!(response.header("x-empty"), Some(""));
    assert_eq!(response.content_type(), Some("a/b"));
    assert!(!response.has_header("x-emptycontent-type"));
}

/// H16 ("`cancelAll` misses requests in DNS") → PORTING.md `cancelAll()` row: "cancels only
/// this client's requests, also those still in DNS". A request to a name is in its lookup when
/// `cancel_all` comes: it ends `Err(Cancelled)` and never connects.
#[test]
fn h16_cancel_all_reaches_a_request_still_in_its_lookup() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = HttpClient::new().unwrap();
    let other = HttpClient::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok("kept")));
    let mine = support::get_text(&client, &format!("http://localhost:{port}/"));
    let theirs = support::get_text(&other, &server.url("/"));
    client.cancel_all();
    assert!(matches!(
        support::wait(&mut ev, &mine),
        Err(HttpError::Cancelled)
    ));
    assert_eq!(support::wait(&mut ev, &theirs).unwrap().text(), "kept");
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert!(
        listener.accept().is_err(),
        "the cancelled request connected"
    );
}

/// T9 ("port parsing wraps: `:99999` → 34463") → PORTING.md: "`url` rejects bad ports".
#[test]
fn t9_an_out_of_range_port_is_refused_not_wrapped() {
    for url in ["http://127.0.0.1:99999/", "http://127.0.0.1:65536/"] {
        assert!(
            matches!(HttpRequest::new(url), Err(HttpError::InvalidUrl { .. })),
            "{url}"
        );
    }
    assert_eq!(
        HttpRequest::new("http://127.0.0.1:65535/")
            .unwrap()
            .url()
            .port(),
        Some(65535)
    );
}

/// T2 ("`disconnectFromHost` frees the TLS context: CA settings are lost and a second connect
/// fails") → PORTING.md `SslSocket` row: "config reusable across connects". One `SslSocket`
/// trusting only the test CA connects, closes, and connects again with the same trust.
#[test]
fn t2_an_ssl_socket_connects_again_after_a_disconnect_with_the_same_trust() {
    let mut ev = EventLoop::new().unwrap();
    let pki = support::certs::test_pki();
    let server = TcpServer::new().unwrap();
    server.set_tls_config(
        kdnet::network::TlsServerConfig::from_pem(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap(),
    );
    let peers: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let p = peers.clone();
    server
        .new_connection
        .connect(move |peer| p.borrow_mut().push(peer.clone()))
        .release();
    server.listen("127.0.0.1", 0).unwrap();
    let port = server.server_port().unwrap();
    let client = kdnet::network::SslSocket::with_config(
        kdnet::network::TlsClientConfig::with_only_ca_certificates(pki.ca_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let handshakes = Rc::new(Cell::new(0));
    let h = handshakes.clone();
    client
        .handshake_completed
        .connect(move |_| h.set(h.get() + 1))
        .release();
    for round in 1..=2 {
        client.connect_to_host("localhost", port).unwrap();
        wait_until(&mut ev, || handshakes.get() == round);
        assert!(client.is_encrypted());
        client.disconnect_from_host();
        wait_until(&mut ev, || client.state() == SocketState::Unconnected);
    }
    assert!(client.last_error().is_none(), "{:?}", client.last_error());
}

/// PORTING.md Defaults "DNS" row and the `DnsResolver` rows: a 10 s lookup timeout
/// (`DEFAULT_LOOKUP_TIMEOUT`, KDN had none, T8) and a 60 s cache (`DEFAULT_CACHE_TTL`).
#[test]
fn dns_resolver_defaults() {
    let _ev = EventLoop::new().unwrap();
    let resolver = kdnet::network::DnsResolver::instance().unwrap();
    assert_eq!(
        resolver.timeout(),
        kdnet::network::dns::DEFAULT_LOOKUP_TIMEOUT
    );
    assert_eq!(
        kdnet::network::dns::DEFAULT_LOOKUP_TIMEOUT,
        Duration::from_secs(10)
    );
    assert_eq!(
        kdnet::network::dns::DEFAULT_CACHE_TTL,
        Duration::from_secs(60)
    );
    assert!(kdnet::network::dns::DnsResolver::pool_threads() <= 4);
}

// ---- KDBindings ----------------------------------------------------------------------------------

/// PORTING.md `connectSingleShot(f)` row: "disconnected just before it is called, as in KDB"
/// (the reference notes, §2.1: a reflective wrapper that disconnects itself before calling `f`).
/// Inside the slot its handle is already inactive and the signal counts no connection.
#[test]
fn single_shot_slot_is_disconnected_before_it_runs() {
    use kdnet::bindings::{ConnectionHandle, Signal};
    let signal = Rc::new(Signal::<u8>::new());
    let handle: Slot<ConnectionHandle> = Rc::default();
    let seen: Slot<(bool, usize)> = Rc::default();
    let (h, s, sig) = (handle.clone(), seen.clone(), Rc::downgrade(&signal));
    let connection = signal.connect_single_shot(move |_| {
        let active = h.borrow().as_ref().unwrap().is_active();
        let count = sig.upgrade().unwrap().connection_count();
        *s.borrow_mut() = Some((active, count));
    });
    *handle.borrow_mut() = Some(connection);
    signal.emit(&1);
    assert_eq!(*seen.borrow(), Some((false, 0)));
}

/// The same over TLS (`SslSocket`, whose connect state outlives a close to keep its TLS
/// request): bytes queued before a `disconnect_from_host` made while connecting arrive
/// encrypted, the close is clean (close_notify); after a failed connect closed the same way, the
/// next connect of the socket, with nothing queued, is an ordinary connection rather than one
/// closed on arrival.
#[test]
fn ssl_socket_disconnect_while_connecting_sends_the_queued_writes_and_reconnects_normally() {
    let mut ev = EventLoop::new().unwrap();
    let pki = support::certs::test_pki();
    let server = TcpServer::new().unwrap();
    server.set_tls_config(
        kdnet::network::TlsServerConfig::from_pem(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap(),
    );
    let received: Rc<RefCell<Vec<u8>>> = Rc::default();
    let peers: Rc<RefCell<Vec<Peer>>> = Rc::default();
    let (p, r) = (peers.clone(), received.clone());
    server
        .new_connection
        .connect(move |peer| {
            let (weak, r) = (Rc::downgrade(peer), r.clone());
            peer.ready_read
                .connect(move |_| {
                    if let Some(peer) = weak.upgrade() {
                        r.borrow_mut().extend_from_slice(&peer.read_all());
                    }
                })
                .release();
            p.borrow_mut().push((peer.clone(), record_socket(peer)));
        })
        .release();
    server.listen("127.0.0.1", 0).unwrap();
    let port = server.server_port().unwrap();
    let client = kdnet::network::SslSocket::with_config(
        kdnet::network::TlsClientConfig::with_only_ca_certificates(pki.ca_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    client.connect_to_host("localhost", port).unwrap();
    client.write(b"sealed").unwrap();
    client.disconnect_from_host();
    wait_until(&mut ev, || {
        peers
            .borrow()
            .first()
            .is_some_and(|(_, log)| log.borrow().last().map(String::as_str) == Some("disconnected"))
    });
    assert_eq!(&received.borrow()[..], b"sealed");
    let first_peer_log = peers.borrow()[0].1.clone();
    assert!(
        !first_peer_log
            .borrow()
            .iter()
            .any(|e| e.starts_with("error_occurred")),
        "not a clean close: {:?}",
        first_peer_log.borrow()
    );
    wait_until(&mut ev, || client.state() == SocketState::Unconnected);
    // A close asked for while connecting to a port that refuses: the failed connect is an
    // error as ever, and the close it asked for does not carry over to the next connect.
    let errors = Rc::new(Cell::new(0));
    let e = errors.clone();
    client
        .error_occurred
        .connect(move |_| e.set(e.get() + 1))
        .release();
    client.connect_to_host("localhost", closed_port()).unwrap();
    client.write(b"lost").unwrap();
    client.disconnect_from_host();
    wait_until(&mut ev, || errors.get() == 1);
    assert_eq!(client.state(), SocketState::Unconnected);
    // Again, nothing queued: an ordinary connection that stays open.
    client.connect_to_host("localhost", port).unwrap();
    wait_until(&mut ev, || client.is_encrypted());
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(client.state(), SocketState::Connected);
    client.write(b"!").unwrap();
    wait_until(&mut ev, || received.borrow().len() == 7);
    assert_eq!(&received.borrow()[..], b"sealed!");
}

// ---- KDFoundation --------------------------------------------------------------------------------

/// PORTING.md `Timer::createTimeout(f, ms)` row: "dropping the returned timer cancels it".
#[test]
fn create_timeout_dropped_before_it_fires_never_runs() {
    use kdnet::foundation::Timer;
    let mut ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let timer = Timer::create_timeout(Duration::from_millis(5), move || f.set(true)).unwrap();
    let kept = Rc::new(Cell::new(false));
    let k = kept.clone();
    let _control = Timer::create_timeout(Duration::from_millis(30), move || k.set(true)).unwrap();
    drop(timer);
    wait_until(&mut ev, || kept.get());
    assert!(!fired.get());
}

/// D1 ("an emitter destroyed during its own emit": KDU's managed single-shot timer erased
/// itself from the map inside its own `timeout`) → PORTING.md `setTimeout … cancelTimer` row:
/// "a single-shot timer removing itself while it fires is safe". Its callback cancels its own
/// id: no crash, the id is no longer active, and nothing is left registered.
#[test]
fn d1_a_managed_single_shot_timer_may_cancel_itself_while_it_fires() {
    use kdnet::foundation::{Timer, TimerId};
    let mut ev = EventLoop::new().unwrap();
    let before = ev.timer_count();
    let own: Slot<TimerId> = Rc::default();
    let seen: Slot<(bool, bool)> = Rc::default();
    let (o, s) = (own.clone(), seen.clone());
    let id = Timer::set_timeout(Duration::from_millis(1), move || {
        let id = o.borrow().unwrap();
        let active = Timer::is_timer_active(id);
        *s.borrow_mut() = Some((active, Timer::cancel_timer(id)));
    })
    .unwrap();
    *own.borrow_mut() = Some(id);
    wait_until(&mut ev, || seen.borrow().is_some());
    // It is firing: no longer pending, so there is nothing left to cancel.
    assert_eq!(*seen.borrow(), Some((false, false)));
    assert!(!Timer::is_timer_active(id));
    run_until(&mut ev, Duration::from_millis(10), || false);
    assert_eq!(ev.timer_count(), before);
}
