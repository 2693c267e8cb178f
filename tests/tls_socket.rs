//! SslSocket and TLS TcpServer over real loopback TLS, certificates made with rcgen at test time.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpRequest, HttpSession};
use kdnet::network::{
    SocketError, SslSocket, TcpServer, TcpSocket, TlsClientConfig, TlsFailure, TlsServerConfig,
};
use support::certs::{TestPki, test_pki};
use support::{Holder, drop_on_signal, emissions, latest, pattern, run_until};

type Peers = Rc<RefCell<Vec<Rc<TcpSocket>>>>;

/// The test PKI's server certificate and key, as a server configuration.
fn test_server_config(pki: &TestPki) -> std::sync::Arc<rustls::ServerConfig> {
    TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap()
}

/// A `TcpServer` with the test PKI's certificate, listening on a free loopback port.
fn listening_tls_server(pki: &TestPki) -> Rc<TcpServer> {
    let server = TcpServer::new().unwrap();
    server.set_tls_config(test_server_config(pki));
    server.listen("127.0.0.1", 0).unwrap();
    server
}

/// A TLS server whose connections echo (or collect) what they read.
fn tls_server(cert: &str, key: &str, echo: bool) -> (Rc<TcpServer>, Peers, Rc<RefCell<Vec<u8>>>) {
    let server = TcpServer::new().unwrap();
    server.set_tls_config(TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    server.listen("127.0.0.1", 0).unwrap();
    let peers: Peers = Rc::default();
    let collected: Rc<RefCell<Vec<u8>>> = Rc::default();
    let (keep, sink) = (peers.clone(), collected.clone());
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let weak = Rc::downgrade(peer);
            let sink = sink.clone();
            peer.ready_read
                .connect(move |_| {
                    let s = weak.upgrade().unwrap();
                    let data = s.read_all();
                    if echo {
                        s.write(&data).unwrap();
                    } else {
                        sink.borrow_mut().extend_from_slice(&data);
                    }
                })
                .release();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    (server, peers, collected)
}

fn client_trusting_test_ca() -> Rc<SslSocket> {
    SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn handshake_error_for(cert: &str, key: &str, host: &str) -> SocketError {
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers, _) = tls_server(cert, key, true);
    let client = client_trusting_test_ca();
    let error = latest(&client.handshake_error);
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    client
        .connect_to_host(host, server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert!(!completed.get());
    error.borrow().clone().unwrap()
}

#[test]
fn trusted_certificate_data_flows_both_ways() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let client = client_trusting_test_ca();
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let weak = Rc::downgrade(client.tcp_socket());
    client
        .ready_read
        .connect(move |_| {
            g.borrow_mut()
                .extend_from_slice(&weak.upgrade().unwrap().read_all())
        })
        .release();
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    client.write(b"hello over TLS").unwrap(); // queued until the handshake completes
    assert!(run_until(&mut ev, Duration::from_secs(10), || got
        .borrow()
        .len()
        >= 14));
    assert_eq!(&got.borrow()[..], b"hello over TLS");
    assert!(completed.get() && client.is_encrypted());
    assert!(client.protocol_version().is_some());
    assert!(client.cipher_suite().is_some());
    assert!(!client.peer_certificate_chain().is_empty());
}

#[test]
fn ip_address_connection_verifies_against_ip_san() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let client = client_trusting_test_ca();
    client
        .connect_to_host("127.0.0.1", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || client.is_encrypted()));
}

#[test]
fn untrusted_issuer_is_named() {
    let pki = test_pki();
    let err = handshake_error_for(&pki.untrusted_cert_pem, &pki.untrusted_key_pem, "localhost");
    assert!(
        matches!(err, SocketError::Tls(TlsFailure::UnknownIssuer)),
        "{err}"
    );
}

#[test]
fn wrong_host_name_is_named() {
    let pki = test_pki();
    let err = handshake_error_for(
        &pki.wrong_name_cert_pem,
        &pki.wrong_name_key_pem,
        "localhost",
    );
    assert!(
        matches!(&err, SocketError::Tls(TlsFailure::NameMismatch { expected, presented })
            if expected == "localhost" && presented == &["wrong.example"]),
        "{err:?}"
    );
    // The message says what the certificate is valid for: the usual cause is connecting by
    // another name (or an address) than the certificate's.
    assert!(
        err.to_string().contains(
            r#"certificate is not valid for name "localhost" (it is valid for wrong.example)"#
        ),
        "{err}"
    );
}

#[test]
fn expired_certificate_is_named() {
    let pki = test_pki();
    let err = handshake_error_for(&pki.expired_cert_pem, &pki.expired_key_pem, "localhost");
    assert!(
        matches!(err, SocketError::Tls(TlsFailure::Expired)),
        "{err}"
    );
}

#[test]
fn a_peer_sending_garbage_is_a_typed_error() {
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nthis is not TLS at all\r\n\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let client = client_trusting_test_ca();
    let error = latest(&client.error_occurred);
    client.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert!(
        matches!(error.borrow().as_ref(), Some(SocketError::Tls(_))),
        "{:?}",
        error.borrow()
    );
}

#[test]
fn eight_mib_upload_to_a_slow_reader_arrives_byte_exact() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let server = listening_tls_server(pki);
    let collected: Rc<RefCell<Vec<u8>>> = Rc::default();
    let peers: Peers = Rc::default();
    let (sink, keep) = (collected.clone(), peers.clone());
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            // A slow reader: a small read buffer limit, drained by a timer in small pieces.
            peer.set_read_buffer_limit(64 * 1024);
            let weak = Rc::downgrade(peer);
            let sink = sink.clone();
            kdnet::Timer::set_recurring(Duration::from_millis(1), move || {
                if let Some(s) = weak.upgrade() {
                    sink.borrow_mut().extend_from_slice(&s.read(32 * 1024));
                }
            })
            .unwrap();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    let payload = pattern(8 * 1024 * 1024, 11);
    let client = client_trusting_test_ca();
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    client.write(&payload).unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(60), || collected
            .borrow()
            .len()
            >= payload.len()),
        "stalled at {} bytes",
        collected.borrow().len()
    );
    assert!(*collected.borrow() == payload, "upload corrupted");
}

/// A TLS server (the test PKI's certificate) whose connections answer each request head with
/// `response`; the accepted connections are kept in the returned list.
fn https_server(response: &'static [u8]) -> (Rc<TcpServer>, Peers) {
    let pki = test_pki();
    let server = listening_tls_server(pki);
    let peers: Peers = Rc::default();
    let keep = peers.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let weak = Rc::downgrade(peer);
            let request = Rc::new(RefCell::new(Vec::new()));
            peer.ready_read
                .connect(move |_| {
                    let s = weak.upgrade().unwrap();
                    request.borrow_mut().extend_from_slice(&s.read_all());
                    if request.borrow().windows(4).any(|w| w == b"\r\n\r\n") {
                        request.borrow_mut().clear();
                        s.write(response).unwrap();
                    }
                })
                .release();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    (server, peers)
}

#[test]
fn https_through_the_http_client() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers) = https_server(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
    let mut session = HttpSession::new();
    session
        .add_ca_certificate(pki.ca_pem.as_bytes().to_vec())
        .unwrap();
    let client = HttpClient::with_session(session).unwrap();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    client.send(
        HttpRequest::get(&format!(
            "https://localhost:{}/",
            server.server_port().unwrap()
        ))
        .unwrap(),
        move |r| *o.borrow_mut() = Some(r),
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || out
        .borrow()
        .is_some()));
    assert_eq!(out.borrow_mut().take().unwrap().unwrap().text(), "secure");

    // Without the CA the same server is refused with the reason.
    let strict = HttpClient::new().unwrap();
    let out2 = Rc::new(RefCell::new(None));
    let o2 = out2.clone();
    strict.get(
        &format!("https://localhost:{}/", server.server_port().unwrap()),
        move |r| *o2.borrow_mut() = Some(r),
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || out2
        .borrow()
        .is_some()));
    let err = out2.borrow_mut().take().unwrap().unwrap_err();
    assert!(err.to_string().contains("unknown issuer"), "{err}");
}

#[test]
fn a_silent_server_fails_the_handshake_with_a_timeout() {
    let mut ev = EventLoop::new().unwrap();
    // Accepts (the kernel does) but never says anything.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let client = client_trusting_test_ca();
    client.set_handshake_timeout(Some(Duration::from_millis(200)));
    let error = latest(&client.handshake_error);
    let started = std::time::Instant::now();
    client.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert!(
        matches!(
            error.borrow().as_ref(),
            Some(SocketError::Timeout(
                kdnet::network::TimeoutPhase::TlsHandshake
            ))
        ),
        "{:?}",
        error.borrow()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}

#[test]
fn a_tls_session_that_cannot_start_never_announces_the_connection_nor_sends_in_plain_text() {
    let mut ev = EventLoop::new().unwrap();
    // A plain TCP peer that records every byte it receives until the client goes away.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        all
    });
    let client = client_trusting_test_ca();
    // Not a name a certificate can be checked against: the TLS session fails to start once
    // the TCP connection is up.
    client.set_peer_verify_name("not a host name!");
    let connected = Rc::new(Cell::new(false));
    let c = connected.clone();
    let weak = Rc::downgrade(&client);
    client
        .connected
        .connect(move |_| {
            c.set(true);
            // What a protocol would send first; it must never reach the wire unencrypted.
            if let Some(client) = weak.upgrade() {
                let _ = client.write(b"Authorization: Bearer secret\r\n");
            }
        })
        .release();
    let error = latest(&client.error_occurred);
    client
        .connect_to_address(std::net::Ipv4Addr::LOCALHOST.into(), port)
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert!(
        matches!(
            error.borrow().as_ref(),
            Some(SocketError::InvalidAddress(_))
        ),
        "{:?}",
        error.borrow()
    );
    assert!(
        !connected.get(),
        "connected was emitted for a TLS session that never started"
    );
    drop(client);
    assert_eq!(
        peer.join().unwrap(),
        b"",
        "bytes reached the peer unencrypted"
    );
}

#[test]
fn bytes_after_close_notify_in_the_same_read_do_not_hang_the_loop() {
    // rustls takes ciphertext 4 KiB at a time and refuses more after close_notify; the rest of
    // the kernel read must be dropped, not offered again and again.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = test_pki();
    let config = test_server_config(pki);
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        conn.writer().write_all(b"bye").unwrap();
        conn.send_close_notify();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        wire.extend_from_slice(&[0x17; 16 * 1024]);
        tcp.write_all(&wire).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ev = EventLoop::new().unwrap();
        let client = client_trusting_test_ca();
        let ended = Rc::new(Cell::new(false));
        let e = ended.clone();
        client.disconnected.connect(move |_| e.set(true)).release();
        let e = ended.clone();
        client
            .error_occurred
            .connect(move |_| e.set(true))
            .release();
        client.connect_to_host("localhost", port).unwrap();
        let done = run_until(&mut ev, Duration::from_secs(10), || ended.get());
        let _ = tx.send((done, client.read_all().to_vec()));
    });
    let (done, data) = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the event loop hung on bytes after close_notify");
    assert!(done, "the connection never ended");
    assert_eq!(data, b"bye");
}

#[test]
fn a_refused_second_connect_does_not_change_the_name_the_first_verifies() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let port = server.server_port().unwrap();
    let client = client_trusting_test_ca();
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    let error = latest(&client.error_occurred);
    client.connect_to_host("localhost", port).unwrap();
    assert!(client.connect_to_host("wrong.example", port).is_err());
    assert!(run_until(&mut ev, Duration::from_secs(10), || completed
        .get()
        || error.borrow().is_some()));
    assert!(completed.get(), "{:?}", error.borrow());
}

/// A pooled https connection made under one session's TLS settings is not reused once they
/// change: turning certificate verification back on must verify the next request's server.
#[test]
fn an_https_connection_is_not_reused_after_the_tls_settings_change() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers) = https_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let url = format!("https://localhost:{}/", server.server_port().unwrap());
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.dangerous_disable_certificate_verification());
    let fetch = |ev: &mut EventLoop| {
        let out = Rc::new(RefCell::new(None));
        let o = out.clone();
        client.send(HttpRequest::get(&url).unwrap(), move |r| {
            *o.borrow_mut() = Some(r)
        });
        assert!(run_until(ev, Duration::from_secs(10), || out
            .borrow()
            .is_some()));
        out.borrow_mut().take().unwrap()
    };
    assert_eq!(fetch(&mut ev).unwrap().text(), "ok");
    assert_eq!(client.open_connections(), 1);
    // The test CA is not trusted: with verification on, this server must be refused.
    client.update_session(|s| s.enable_certificate_verification());
    let err = fetch(&mut ev).expect_err("an unverified connection was reused");
    assert!(err.to_string().contains("unknown issuer"), "{err}");
    // Trusting the CA: a new, verified connection; unrelated session changes keep it.
    client.update_session(|s| {
        s.add_ca_certificate(pki.ca_pem.as_bytes().to_vec())
            .unwrap();
    });
    assert_eq!(fetch(&mut ev).unwrap().text(), "ok");
    client.update_session(|s| s.set_user_agent("changed"));
    assert_eq!(fetch(&mut ev).unwrap().text(), "ok");
    assert_eq!(
        peers.borrow().len(),
        3,
        "a user-agent change dropped the pool"
    );
}

/// The last error a signal reported.
type LastError = Rc<RefCell<Option<SocketError>>>;

/// What a [`collecting_tls_server`] saw: the bytes its connections read, whether one was
/// disconnected, and the last error one reported.
type Collected = (Rc<RefCell<Vec<u8>>>, Rc<Cell<bool>>, LastError);

/// A TLS server whose connections collect what they read.
fn collecting_tls_server() -> (Rc<TcpServer>, Peers, Collected) {
    let pki = test_pki();
    let (server, peers, collected) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, false);
    let closed = Rc::new(Cell::new(false));
    let error: LastError = Rc::default();
    let (c, e) = (closed.clone(), error.clone());
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let c = c.clone();
            peer.disconnected.connect(move |_| c.set(true)).release();
            let e = e.clone();
            peer.error_occurred
                .connect(move |err| *e.borrow_mut() = Some(err.clone()))
                .release();
        })
        .release();
    (server, peers, (collected, closed, error))
}

#[test]
fn a_graceful_disconnect_sends_every_queued_byte_before_close_notify() {
    // close_notify was queued the moment disconnect_from_host was called, ahead of the bytes
    // still waiting for the kernel (or, during the handshake, for the session): the peer stops
    // reading at close_notify, so they were lost (here about half of 8 MiB, or all of it) while
    // both sides saw a clean close.
    for during_handshake in [false, true] {
        graceful_disconnect_delivers_everything(during_handshake);
    }
}

fn graceful_disconnect_delivers_everything(during_handshake: bool) {
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers, (collected, closed, server_error)) = collecting_tls_server();
    let payload = Rc::new(pattern(8 * 1024 * 1024, 5));
    let client = client_trusting_test_ca();
    let weak = Rc::downgrade(&client);
    let p = payload.clone();
    let write_and_disconnect = move |_: &()| {
        let client = weak.upgrade().unwrap();
        client.write(&p).unwrap();
        client.disconnect_from_host();
    };
    if during_handshake {
        // `connected` is TCP's: the handshake has not even started.
        client.connected.connect(write_and_disconnect).release();
    } else {
        client
            .handshake_completed
            .connect(write_and_disconnect)
            .release();
    }
    let client_error = latest(&client.error_occurred);
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(60), || closed.get()),
        "during_handshake {during_handshake}: the server's connection never closed ({} bytes \
         arrived)",
        collected.borrow().len()
    );
    assert_eq!(
        collected.borrow().len(),
        payload.len(),
        "during_handshake {during_handshake}: bytes lost"
    );
    assert!(*collected.borrow() == *payload, "upload corrupted");
    assert!(
        server_error.borrow().is_none(),
        "{:?}",
        server_error.borrow()
    );
    assert!(
        client_error.borrow().is_none(),
        "{:?}",
        client_error.borrow()
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || client
        .state()
        == kdnet::network::SocketState::Unconnected));
}

#[test]
fn a_stream_cut_without_close_notify_is_told_apart_from_a_clean_end() {
    // Both ended in a plain `disconnected`: a client could not tell an attacker's (or a broken
    // path's) cut from the server's real end of data.
    for clean in [true, false] {
        let mut ev = EventLoop::new().unwrap();
        let (server, peers, _) = collecting_tls_server();
        let client = client_trusting_test_ca();
        let got = Rc::new(RefCell::new(Vec::new()));
        let events = Rc::new(RefCell::new(Vec::<String>::new()));
        let (g, weak, ev1) = (
            got.clone(),
            Rc::downgrade(client.tcp_socket()),
            events.clone(),
        );
        client
            .ready_read
            .connect(move |_| {
                g.borrow_mut()
                    .extend_from_slice(&weak.upgrade().unwrap().read_all());
                ev1.borrow_mut().push("ready_read".into());
            })
            .release();
        let ev2 = events.clone();
        client
            .error_occurred
            .connect(move |e| ev2.borrow_mut().push(format!("error: {e}")))
            .release();
        let ev3 = events.clone();
        client
            .disconnected
            .connect(move |_| ev3.borrow_mut().push("disconnected".into()))
            .release();
        client
            .connect_to_host("localhost", server.server_port().unwrap())
            .unwrap();
        assert!(run_until(&mut ev, Duration::from_secs(10), || {
            client.is_encrypted() && peers.borrow().len() == 1
        }));
        let peer = peers.borrow()[0].clone();
        peer.write(b"the whole answer").unwrap();
        if clean {
            peer.disconnect_from_host();
        } else {
            // Let the data go out, then cut the TCP connection with no close_notify.
            assert!(run_until(&mut ev, Duration::from_secs(10), || !got
                .borrow()
                .is_empty()));
            peer.abort();
        }
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || events
                .borrow()
                .iter()
                .any(|e| e == "disconnected")),
            "{:?}",
            events.borrow()
        );
        assert_eq!(&got.borrow()[..], b"the whole answer");
        let events = events.borrow().clone();
        if clean {
            assert_eq!(events, ["ready_read", "disconnected"]);
            assert!(client.last_error().is_none());
        } else {
            assert_eq!(
                events,
                [
                    "ready_read",
                    "error: TLS failed: the peer closed the connection without close_notify \
                     (the data may be truncated)",
                    "disconnected"
                ]
            );
            assert!(matches!(
                client.last_error(),
                Some(SocketError::Tls(TlsFailure::Truncated))
            ));
        }
    }
}

#[test]
fn connecting_an_ssl_socket_to_addresses_speaks_tls_with_a_fresh_session() {
    // `connect_to_addresses` reached the TcpSocket underneath through Deref: the connection was
    // plain TCP, the bytes written went out unencrypted, and a session of an earlier connection
    // stayed in place (`is_encrypted()` still said true after the disconnect).
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, collected) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, false);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.server_port().unwrap()));
    let client = client_trusting_test_ca();
    let handshakes = Rc::new(Cell::new(0usize));
    let h = handshakes.clone();
    client
        .handshake_completed
        .connect(move |_| h.set(h.get() + 1))
        .release();
    let errors = latest(&client.error_occurred);
    for round in 1..=2usize {
        client.connect_to_addresses(&[addr]).unwrap();
        client.write(b"secret").unwrap();
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || handshakes.get()
                == round
                && collected.borrow().len() == 6 * round),
            "round {round}: handshakes {}, server read {:?}, client error {:?}",
            handshakes.get(),
            String::from_utf8_lossy(&collected.borrow()),
            errors.borrow()
        );
        assert!(client.is_encrypted());
        client.disconnect_from_host();
        assert!(run_until(&mut ev, Duration::from_secs(10), || client
            .state()
            == kdnet::network::SocketState::Unconnected));
        assert!(
            !client.is_encrypted(),
            "round {round}: encrypted once disconnected"
        );
    }
    assert_eq!(&collected.borrow()[..], b"secretsecret");
    assert!(errors.borrow().is_none(), "{:?}", errors.borrow());
}

/// The DER of the first certificate in `pem`.
fn first_certificate_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn a_tls_server_can_require_client_certificates_and_see_who_connected() {
    // A server could not ask for client certificates (TlsServerConfig had no such constructor)
    // and, given a rustls config that did, could not see the certificate, the negotiated ALPN
    // protocol or even whether the handshake was done: those were SslSocket-only.
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let server = TcpServer::new().unwrap();
    server.set_tls_config(
        TlsServerConfig::with_client_certificates(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            pki.ca_pem.as_bytes(),
            vec![b"kdnet-test".to_vec()],
        )
        .unwrap(),
    );
    server.listen("127.0.0.1", 0).unwrap();
    let port = server.server_port().unwrap();
    // Per accepted connection: what it read, and its error.
    type Seen = Rc<
        RefCell<
            Vec<(
                Rc<TcpSocket>,
                Rc<RefCell<Vec<u8>>>,
                Rc<RefCell<Option<SocketError>>>,
            )>,
        >,
    >;
    let seen: Seen = Rc::default();
    let s = seen.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            assert!(!peer.is_encrypted(), "encrypted before the handshake");
            let data: Rc<RefCell<Vec<u8>>> = Rc::default();
            let (d, weak) = (data.clone(), Rc::downgrade(peer));
            peer.ready_read
                .connect(move |_| {
                    d.borrow_mut()
                        .extend_from_slice(&weak.upgrade().unwrap().read_all())
                })
                .release();
            let error = latest(&peer.error_occurred);
            s.borrow_mut().push((peer.clone(), data, error));
        })
        .release();
    let client_with_certificate = || {
        let mut config = TlsClientConfig::with_only_ca_certificates(pki.ca_pem.as_bytes()).unwrap();
        config
            .set_client_certificate(
                pki.client_cert_pem.as_bytes(),
                pki.client_key_pem.as_bytes(),
            )
            .unwrap();
        config.set_alpn_protocols(vec![b"kdnet-test".to_vec()]);
        SslSocket::with_config(config).unwrap()
    };

    // With a certificate: the server sees it, and the protocol chosen.
    let client = client_with_certificate();
    client.connect_to_host("localhost", port).unwrap();
    client.write(b"hello").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || seen
        .borrow()
        .first()
        .is_some_and(|(_, data, _)| data.borrow().len() == 5)));
    {
        let seen = seen.borrow();
        let (peer, _, error) = &seen[0];
        assert!(peer.is_encrypted());
        let chain = peer.peer_certificate_chain();
        assert_eq!(chain.len(), 1);
        assert_eq!(
            chain[0].to_vec(),
            first_certificate_der(&pki.client_cert_pem)
        );
        assert_eq!(peer.alpn_protocol().as_deref(), Some(&b"kdnet-test"[..]));
        assert!(error.borrow().is_none());
    }

    // Without one: refused on both sides with a typed reason.
    let anonymous = client_trusting_test_ca();
    let anonymous_error = latest(&anonymous.error_occurred);
    anonymous.connect_to_host("localhost", port).unwrap();
    anonymous.write(b"let me in").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        anonymous_error.borrow().is_some()
            && seen
                .borrow()
                .get(1)
                .is_some_and(|(_, _, error)| error.borrow().is_some())
    }));
    {
        let seen = seen.borrow();
        let (peer, data, error) = &seen[1];
        assert!(
            data.borrow().is_empty(),
            "read from an unauthenticated client"
        );
        assert!(!peer.is_encrypted());
        assert!(
            matches!(&*error.borrow(), Some(SocketError::Tls(TlsFailure::BadCertificate(r))) if r.contains("no certificate")),
            "{:?}",
            error.borrow()
        );
    }
    assert!(
        matches!(
            &*anonymous_error.borrow(),
            Some(SocketError::Tls(TlsFailure::AlertReceived(_)))
        ),
        "{:?}",
        anonymous_error.borrow()
    );

    // And it goes on serving.
    let again = client_with_certificate();
    again.connect_to_host("localhost", port).unwrap();
    again.write(b"again").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || seen
        .borrow()
        .get(2)
        .is_some_and(|(_, data, _)| data.borrow().len() == 5)));
}

#[test]
fn a_tls_server_limits_the_handshake_of_accepted_connections() {
    // Accepted connections always had 30 s to finish their handshake: a server could not
    // shorten that for clients that connect and say nothing.
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    server.set_handshake_timeout(Some(Duration::from_millis(300)));
    let _silent =
        std::net::TcpStream::connect(("127.0.0.1", server.server_port().unwrap())).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || peers
        .borrow()
        .len()
        == 1));
    let peer = peers.borrow()[0].clone();
    let error = latest(&peer.error_occurred);
    let start = std::time::Instant::now();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(
        *error.borrow(),
        Some(SocketError::Timeout(
            kdnet::network::TimeoutPhase::TlsHandshake
        ))
    ));
}

#[test]
fn a_plain_client_at_a_tls_server_fails_typed_and_the_server_serves_the_next() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let port = server.server_port().unwrap();
    let plain = TcpSocket::new().unwrap();
    let plain_closed = Rc::new(Cell::new(false));
    let p = plain_closed.clone();
    plain.disconnected.connect(move |_| p.set(true)).release();
    plain.connect_to_host("127.0.0.1", port).unwrap();
    plain.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || peers
        .borrow()
        .len()
        == 1));
    let peer_error = latest(&peers.borrow()[0].error_occurred);
    assert!(run_until(&mut ev, Duration::from_secs(10), || plain_closed
        .get()
        && peer_error.borrow().is_some()));
    // Named for what it is (not rustls' "peer misbehaved: received corrupt message").
    let expected = TlsFailure::NotTlsClient {
        first_line: "GET / HTTP/1.1".into(),
    };
    assert!(
        matches!(&*peer_error.borrow(), Some(SocketError::Tls(failure)) if *failure == expected),
        "{:?}",
        peer_error.borrow()
    );
    assert_eq!(
        expected.to_string(),
        "the client does not speak TLS; it sent \"GET / HTTP/1.1\""
    );
    let client = client_trusting_test_ca();
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g, weak) = (got.clone(), Rc::downgrade(client.tcp_socket()));
    client
        .ready_read
        .connect(move |_| {
            g.borrow_mut()
                .extend_from_slice(&weak.upgrade().unwrap().read_all())
        })
        .release();
    client.connect_to_host("localhost", port).unwrap();
    client.write(b"still here").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || got
        .borrow()
        .len()
        == 10));
}

#[test]
fn data_decrypted_before_a_bad_record_is_delivered_before_the_error() {
    // Records that arrived in one read with a corrupt one after them: the session decrypted the
    // good ones, the error was returned first, and their plaintext was never handed out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = test_pki();
    let config = test_server_config(pki);
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        conn.writer().write_all(b"the last words").unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        // An application-data record whose contents do not decrypt.
        wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
        wire.extend_from_slice(&[0xAB; 0x20]);
        tcp.write_all(&wire).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut ev = EventLoop::new().unwrap();
    let client = client_trusting_test_ca();
    let events = Rc::new(RefCell::new(Vec::<String>::new()));
    let (e1, e2, weak) = (
        events.clone(),
        events.clone(),
        Rc::downgrade(client.tcp_socket()),
    );
    client
        .ready_read
        .connect(move |_| {
            let data = weak.upgrade().unwrap().read_all();
            e1.borrow_mut()
                .push(String::from_utf8_lossy(&data).into_owned());
        })
        .release();
    client
        .error_occurred
        .connect(move |e| e2.borrow_mut().push(format!("error: {e}")))
        .release();
    client.connect_to_host("localhost", port).unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || events
            .borrow()
            .iter()
            .any(|e| e.starts_with("error"))),
        "{:?}",
        events.borrow()
    );
    let events = events.borrow();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], "the last words");
    assert!(events[1].starts_with("error: TLS failed"), "{events:?}");
}

/// An https server selecting among `protocols` with ALPN; each accepted connection is kept.
fn https_server_with_alpn(protocols: &[&[u8]]) -> (Rc<TcpServer>, Peers) {
    let (server, peers) = https_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let pki = test_pki();
    server.set_tls_config(
        TlsServerConfig::with_alpn(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            protocols.iter().map(|p| p.to_vec()).collect(),
        )
        .unwrap(),
    );
    (server, peers)
}

/// The HTTP client offers `http/1.1` with ALPN, so a server speaking several protocols on one
/// port knows what comes, and one that speaks only h2 refuses the handshake instead of
/// receiving an HTTP/1.1 request it cannot read (it offered nothing, and the h2-only server
/// was sent HTTP/1.1).
#[test]
fn the_http_client_offers_http_1_1_with_alpn_and_an_h2_only_server_refuses_it() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let mut session = HttpSession::new();
    session
        .add_ca_certificate(pki.ca_pem.as_bytes().to_vec())
        .unwrap();
    let client = HttpClient::with_session(session).unwrap();
    let mut fetch = |server: &TcpServer| {
        let out = Rc::new(RefCell::new(None));
        let o = out.clone();
        let url = format!("https://localhost:{}/", server.server_port().unwrap());
        client.send(HttpRequest::get(&url).unwrap(), move |r| {
            *o.borrow_mut() = Some(r)
        });
        assert!(run_until(&mut ev, Duration::from_secs(10), || out
            .borrow()
            .is_some()));
        out.borrow_mut().take().unwrap()
    };

    let (both, peers) = https_server_with_alpn(&[b"h2", b"http/1.1"]);
    assert_eq!(fetch(&both).unwrap().text(), "ok");
    assert_eq!(
        peers.borrow()[0].alpn_protocol().as_deref(),
        Some(&b"http/1.1"[..]),
        "the client offered no ALPN protocol"
    );

    let (h2_only, h2_peers) = https_server_with_alpn(&[b"h2"]);
    let err = fetch(&h2_only).expect_err("HTTP/1.1 was spoken to an h2-only server");
    match &err {
        kdnet::network::http::HttpError::Transport(SocketError::Tls(
            TlsFailure::AlertReceived(alert),
        )) => assert_eq!(alert, "NoApplicationProtocol"),
        other => panic!("expected the server's no_application_protocol alert, got {other:?}"),
    }
    assert!(
        h2_peers
            .borrow()
            .iter()
            .all(|p| p.alpn_protocol().is_none()),
        "the h2-only server agreed on a protocol"
    );
}

/// A self-signed server certificate is named as such (OpenSSL's "self-signed certificate"),
/// not as a certificate whose issuer is unknown: the remedy is to trust that certificate
/// itself, which then works.
#[test]
fn a_self_signed_certificate_is_named_self_signed_and_works_once_trusted() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert, key) = (cert.pem(), key.serialize_pem());
    let err = handshake_error_for(&cert, &key, "localhost");
    assert!(
        matches!(err, SocketError::Tls(TlsFailure::SelfSigned)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "TLS failed: certificate is self-signed (not trusted)"
    );
    // A certificate signed by an untrusted CA is still an unknown issuer.
    let pki = test_pki();
    let err = handshake_error_for(&pki.untrusted_cert_pem, &pki.untrusted_key_pem, "localhost");
    assert!(
        matches!(err, SocketError::Tls(TlsFailure::UnknownIssuer)),
        "{err:?}"
    );

    let mut ev = EventLoop::new().unwrap();
    let (server, _peers, _) = tls_server(&cert, &key, true);
    let client = SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(cert.as_bytes()).unwrap(),
    )
    .unwrap();
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || completed.get()));
}

/// A server presenting a CA certificate (CA:TRUE, as `openssl req -x509` makes self-signed
/// certificates by default) as its own is refused, trusted or not, with words saying so; the
/// reason read `bad certificate: Other(OtherError(CaUsedAsEndEntity))`.
#[test]
fn a_ca_certificate_presented_as_the_server_certificate_is_named_in_words() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert, key) = (cert.pem(), key.serialize_pem());
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers, _) = tls_server(&cert, &key, true);
    let port = server.server_port().unwrap();
    for trusted in [cert.as_str(), test_pki().ca_pem.as_str()] {
        let client = SslSocket::with_config(
            TlsClientConfig::with_only_ca_certificates(trusted.as_bytes()).unwrap(),
        )
        .unwrap();
        let error = latest(&client.handshake_error);
        client.connect_to_host("localhost", port).unwrap();
        assert!(run_until(&mut ev, Duration::from_secs(10), || error
            .borrow()
            .is_some()));
        let err = error.borrow().clone().unwrap();
        match &err {
            SocketError::Tls(TlsFailure::BadCertificate(reason)) => {
                assert!(
                    reason.starts_with("a CA certificate (basic constraints CA:TRUE) is presented"),
                    "{reason}"
                );
                assert!(!err.to_string().contains("OtherError"), "{err}");
            }
            other => panic!("expected BadCertificate, got {other:?}"),
        }
    }
}

/// A rustls server config with the test PKI's certificate speaking only `versions`.
fn server_config_for_versions(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let pki = test_pki();
    let cert =
        rustls::pki_types::CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    std::sync::Arc::new(config)
}

/// SNI carries host names only (RFC 6066: "literal IPv4 and IPv6 addresses are not
/// permitted"), while the certificate is still checked against the IP address SAN; TLS 1.2
/// and TLS 1.3 servers both work. The server is plain rustls on a thread, to see the SNI.
#[test]
fn sni_is_sent_for_names_only_and_tls_1_2_and_1_3_both_work() {
    let mut ev = EventLoop::new().unwrap();
    for (versions, expected) in [
        (
            &[&rustls::version::TLS12][..],
            rustls::ProtocolVersion::TLSv1_2,
        ),
        (
            &[&rustls::version::TLS13][..],
            rustls::ProtocolVersion::TLSv1_3,
        ),
    ] {
        for host in ["localhost", "127.0.0.1"] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let config = server_config_for_versions(versions);
            let server = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut tcp, _) = listener.accept().unwrap();
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).unwrap();
                }
                let sni = conn.server_name().map(str::to_owned);
                conn.writer().write_all(b"hi").unwrap();
                conn.complete_io(&mut tcp).unwrap();
                let _ = tcp.read(&mut [0u8; 1]); // until the client goes
                sni
            });
            let client = client_trusting_test_ca();
            let weak = Rc::downgrade(client.tcp_socket());
            let got = Rc::new(RefCell::new(Vec::new()));
            let g = got.clone();
            client
                .ready_read
                .connect(move |_| {
                    g.borrow_mut()
                        .extend_from_slice(&weak.upgrade().unwrap().read_all())
                })
                .release();
            let error = latest(&client.error_occurred);
            client.connect_to_host(host, port).unwrap();
            assert!(
                run_until(&mut ev, Duration::from_secs(10), || got.borrow().len() >= 2),
                "{host} {expected:?}: {:?}",
                error.borrow()
            );
            assert_eq!(client.protocol_version(), Some(expected));
            client.disconnect_from_host();
            let sni = server.join().unwrap();
            let want = (host == "localhost").then(|| host.to_owned());
            assert_eq!(sni, want, "SNI sent connecting to {host} ({expected:?})");
        }
    }
}

/// A server that answers the ClientHello with close_notify and hangs up fails the handshake
/// at once, typed, rather than waiting for the handshake timeout.
#[test]
fn close_notify_during_the_handshake_fails_it_typed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut tcp, _) = listener.accept().unwrap();
        let _ = tcp.read(&mut [0u8; 4096]);
        tcp.write_all(&[21, 3, 3, 0, 2, 1, 0]).unwrap(); // alert: warning, close_notify
    });
    let mut ev = EventLoop::new().unwrap();
    let client = client_trusting_test_ca();
    let handshake_error = latest(&client.handshake_error);
    let started = std::time::Instant::now();
    client.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        handshake_error.borrow().is_some()
    }));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(*handshake_error.borrow(), Some(SocketError::ClosedByPeer)),
        "{:?}",
        handshake_error.borrow()
    );
    assert!(!client.is_encrypted());
    server.join().unwrap();
}

/// Each accepted socket of a TLS server: (handshake_completed count, is_encrypted when it fired,
/// handshake_error, error_occurred).
type ServerSide = Rc<
    RefCell<
        Vec<(
            Rc<Cell<u32>>,
            Rc<Cell<bool>>,
            Rc<RefCell<Option<SocketError>>>,
        )>,
    >,
>;

fn tls_server_watching_handshakes(cert: &str, key: &str) -> (Rc<TcpServer>, Peers, ServerSide) {
    let server = TcpServer::new().unwrap();
    server.set_tls_config(TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    server.listen("127.0.0.1", 0).unwrap();
    let peers: Peers = Rc::default();
    let seen: ServerSide = Rc::default();
    let (keep, s) = (peers.clone(), seen.clone());
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let count = Rc::new(Cell::new(0u32));
            let encrypted = Rc::new(Cell::new(false));
            let (c, e, weak) = (count.clone(), encrypted.clone(), Rc::downgrade(peer));
            assert!(!peer.is_encrypted(), "handed out before its handshake");
            peer.handshake_completed
                .connect(move |_| {
                    c.set(c.get() + 1);
                    e.set(weak.upgrade().unwrap().is_encrypted());
                })
                .release();
            let error = latest(&peer.handshake_error);
            s.borrow_mut().push((count, encrypted, error));
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    (server, peers, seen)
}

#[test]
fn sockets_accepted_by_a_tls_server_signal_their_handshake_like_a_client() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, seen) =
        tls_server_watching_handshakes(&pki.server_cert_pem, &pki.server_key_pem);
    let port = server.server_port().unwrap();

    // A client that trusts the server: the accepted socket says when it is ready.
    let good = client_trusting_test_ca();
    good.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || seen
        .borrow()
        .first()
        .is_some_and(|(count, _, _)| count.get() == 1)));
    {
        let seen = seen.borrow();
        let (count, encrypted, error) = &seen[0];
        assert!(
            encrypted.get(),
            "is_encrypted is true when handshake_completed fires"
        );
        assert!(error.borrow().is_none());
        assert_eq!(count.get(), 1);
    }

    // A client that does not trust it: the accepted socket says why it failed, before
    // error_occurred, and never that it completed.
    let bad = SslSocket::new().unwrap(); // the system's roots: the test CA is unknown
    bad.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || seen
        .borrow()
        .get(1)
        .is_some_and(|(_, _, error)| error.borrow().is_some())));
    let seen = seen.borrow();
    let (count, _, error) = &seen[1];
    assert_eq!(count.get(), 0);
    let error = error.borrow().clone().unwrap();
    assert!(matches!(error, SocketError::Tls(_)), "{error:?}");
}

#[test]
fn an_accepted_tls_socket_that_times_out_in_its_handshake_signals_handshake_error() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers, seen) =
        tls_server_watching_handshakes(&pki.server_cert_pem, &pki.server_key_pem);
    server.set_handshake_timeout(Some(Duration::from_millis(200)));
    // A plain TCP client that never speaks TLS.
    let silent = TcpSocket::new().unwrap();
    silent
        .connect_to_host("127.0.0.1", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || seen
        .borrow()
        .first()
        .is_some_and(|(_, _, error)| error.borrow().is_some())));
    let error = seen.borrow()[0].2.borrow().clone().unwrap();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(
        peers.borrow()[0].last_error().map(|e| e.to_string()),
        Some(error.to_string())
    );
}

/// A server that rejects a client in `handshake_completed` (say, after looking at its
/// certificate) by `abort()` must not then be handed that client's data: what arrived with the
/// handshake's last flight (the client's early writes) is not announced by `ready_read` once
/// the socket is aborted.
#[test]
fn a_socket_aborted_in_handshake_completed_announces_no_data_that_came_with_the_handshake() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let server = listening_tls_server(pki);
    let peers: Peers = Rc::default();
    let rejected = Rc::new(Cell::new(0u32));
    let announced = Rc::new(Cell::new(0u32));
    let received = Rc::new(Cell::new(0u32));
    let (keep, r, a, b) = (
        peers.clone(),
        rejected.clone(),
        announced.clone(),
        received.clone(),
    );
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let weak = Rc::downgrade(peer);
            let r = r.clone();
            peer.handshake_completed
                .connect(move |_| {
                    r.set(r.get() + 1);
                    weak.upgrade().unwrap().abort();
                })
                .release();
            let a = a.clone();
            peer.ready_read
                .connect(move |_| a.set(a.get() + 1))
                .release();
            let b = b.clone();
            peer.bytes_received
                .connect(move |_| b.set(b.get() + 1))
                .release();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    let port = server.server_port().unwrap();
    // Several clients, each writing before its handshake: the write leaves with its Finished.
    let clients: Vec<Rc<SslSocket>> = (0..5)
        .map(|_| {
            let client = client_trusting_test_ca();
            client.connect_to_host("127.0.0.1", port).unwrap();
            client
                .write(b"data of a client the server rejects")
                .unwrap();
            client
        })
        .collect();
    assert!(run_until(&mut ev, Duration::from_secs(10), || rejected
        .get()
        == 5));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(announced.get(), 0, "ready_read fired on an aborted socket");
    assert_eq!(
        received.get(),
        0,
        "bytes_received fired on an aborted socket"
    );
    drop(clients);
}

/// `name.` is the absolute form of `name`: a certificate for `localhost` is valid for
/// `localhost.` (as curl and browsers treat it), and the connection is encrypted.
#[test]
fn a_trailing_dot_host_verifies_against_the_name_without_it() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let client = client_trusting_test_ca();
    let error = latest(&client.error_occurred);
    client
        .connect_to_host("localhost.", server.server_port().unwrap())
        .unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || client.is_encrypted()
            || error.borrow().is_some()),
        "neither encrypted nor failed"
    );
    assert!(client.is_encrypted(), "{:?}", error.borrow());
}

/// An `SslSocket` dropped from its `handshake_completed` slot does not report the flush of the
/// writes queued for the handshake (`bytes_written`), and one dropped from `handshake_error`
/// emits no `error_occurred`, `state_changed` or `disconnected` after it.
#[test]
fn an_ssl_socket_dropped_from_its_handshake_slots_emits_nothing_more() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    for drop_on in ["handshake_completed", "handshake_error"] {
        let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
        let client = if drop_on == "handshake_error" {
            // Does not trust the test CA: the handshake fails.
            SslSocket::with_config(
                TlsClientConfig::with_only_ca_certificates(pki.untrusted_cert_pem.as_bytes())
                    .unwrap(),
            )
            .unwrap()
        } else {
            client_trusting_test_ca()
        };
        let (holder, after) = drop_on_signal(client.clone(), client.tcp_socket(), drop_on);
        client
            .connect_to_host("localhost", server.server_port().unwrap())
            .unwrap();
        client.write(b"queued for the handshake").unwrap();
        drop(client);
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || holder
                .borrow()
                .is_none()),
            "{drop_on} was not emitted"
        );
        run_until(&mut ev, Duration::from_millis(300), || false);
        assert!(
            after.borrow().is_empty(),
            "dropped in {drop_on}, then: {:?}",
            after.borrow()
        );
    }
}

/// A socket a TLS server accepted, dropped from its `handshake_completed` slot (the server
/// rejecting the client), does not announce the data that came with the client's last
/// handshake flight (`bytes_received`, `ready_read`).
#[test]
fn an_accepted_tls_socket_dropped_from_handshake_completed_emits_nothing_more() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let server = listening_tls_server(pki);
    type Watched = (Holder<TcpSocket>, Rc<RefCell<Vec<String>>>);
    let watched: Rc<RefCell<Option<Watched>>> = Rc::default();
    let w = watched.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            *w.borrow_mut() = Some(drop_on_signal(peer.clone(), peer, "handshake_completed"));
        })
        .release();
    let client = client_trusting_test_ca();
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    // Sent right after the client's Finished: usually in the server's same read.
    client.write(b"data after the handshake").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || watched
        .borrow()
        .as_ref()
        .is_some_and(|(holder, _)| holder.borrow().is_none())));
    run_until(&mut ev, Duration::from_millis(300), || false);
    let (_, after) = watched.borrow_mut().take().unwrap();
    assert!(after.borrow().is_empty(), "then: {:?}", after.borrow());
}

/// A `handshake_error` slot that connects again (a retry, say with other trust settings): the
/// failed connection's `error_occurred` is not emitted after it, while the new connection is
/// under way (a slot there would take it for the retry's failure).
#[test]
fn error_occurred_is_not_emitted_for_the_old_connection_after_a_handshake_error_slot_reconnected() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let port = server.server_port().unwrap();
    let client = SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(pki.untrusted_cert_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let events: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let (e, weak) = (events.clone(), Rc::downgrade(&client));
    client
        .handshake_error
        .connect(move |_| {
            e.borrow_mut().push("handshake_error");
            if e.borrow().len() == 1 {
                weak.upgrade()
                    .unwrap()
                    .connect_to_host("localhost", port)
                    .unwrap();
            }
        })
        .release();
    let e = events.clone();
    client
        .error_occurred
        .connect(move |_| e.borrow_mut().push("error_occurred"))
        .release();
    client.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || events
        .borrow()
        .len()
        >= 3));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(
        *events.borrow(),
        ["handshake_error", "handshake_error", "error_occurred"]
    );
}

/// One connect timeout covers the whole way to an encrypted connection, TCP connect and TLS
/// handshake together (curl's CONNECTTIMEOUT, reqwest's connect_timeout): a server that accepts
/// and never answers the ClientHello fails the connect once the connect timeout is spent, not
/// after the handshake's own 30 s default.
#[test]
fn the_connect_timeout_covers_the_tls_handshake() {
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (_silent, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(10));
    });
    let client = client_trusting_test_ca();
    client.set_connect_timeout(Some(Duration::from_millis(300)));
    let error = latest(&client.error_occurred);
    let started = std::time::Instant::now();
    client.connect_to_host("localhost", port).unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(8), || error.borrow().is_some()),
        "no error 8 s after a connect limited to 300 ms"
    );
    let elapsed = started.elapsed();
    let error = error.borrow().clone().unwrap();
    assert!(
        matches!(
            error,
            SocketError::Timeout(kdnet::network::TimeoutPhase::TlsHandshake)
        ),
        "{error:?}"
    );
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
}

/// A server that answers with `reply` (after reading the ClientHello unless `first`), then
/// holds the connection open.
fn server_answering(reply: &'static [u8], first: bool) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        if !first {
            let _ = std::io::Read::read(&mut peer, &mut [0; 1024]);
        }
        let _ = std::io::Write::write_all(&mut peer, reply);
        std::thread::sleep(Duration::from_secs(2));
    });
    port
}

/// An https:// address of a plain-HTTP server (a common slip): the server answers the
/// ClientHello with an HTTP error. The failure says so, with the status line, instead of
/// "peer misbehaved: received corrupt message of type InvalidContentType". A server speaking
/// another protocol (an SSH banner) is named as not speaking TLS, with what it sent.
#[test]
fn a_server_that_does_not_speak_tls_is_named_as_such() {
    let mut ev = EventLoop::new().unwrap();
    let http = server_answering(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request",
        false,
    );
    let ssh = server_answering(b"SSH-2.0-OpenSSH_9.6\r\n", true);
    for (port, expected) in [
        (
            http,
            TlsFailure::PlainHttp {
                first_line: "HTTP/1.1 400 Bad Request".into(),
            },
        ),
        (
            ssh,
            TlsFailure::NotTls {
                first_line: "SSH-2.0-OpenSSH_9.6".into(),
            },
        ),
    ] {
        let client = client_trusting_test_ca();
        let handshake_error = latest(&client.handshake_error);
        client.connect_to_host("localhost", port).unwrap();
        assert!(run_until(&mut ev, Duration::from_secs(10), || {
            handshake_error.borrow().is_some()
        }));
        let error = handshake_error.borrow().clone().unwrap();
        match &error {
            SocketError::Tls(failure) => assert_eq!(*failure, expected),
            other => panic!("{other:?}"),
        }
        assert!(!error.is_retryable(), "{error}");
    }
    let plain_http = TlsFailure::PlainHttp {
        first_line: "HTTP/1.1 400 Bad Request".into(),
    };
    assert_eq!(
        plain_http.to_string(),
        "the server answered in plain HTTP, not TLS (is the URL http://?): \"HTTP/1.1 400 Bad Request\""
    );
    let ssh = TlsFailure::NotTls {
        first_line: "SSH-2.0-OpenSSH_9.6".into(),
    };
    assert_eq!(
        ssh.to_string(),
        "the server does not speak TLS; it sent \"SSH-2.0-OpenSSH_9.6\""
    );
}

/// An internationalized host name (`bücher.localhost`) is connected to as Qt does: resolved
/// and verified (SNI and certificate name) in its ASCII form (`xn--bcher-kva.localhost`), not
/// refused as "not a valid TLS server name".
#[test]
fn an_internationalized_host_name_is_verified_in_its_ascii_form() {
    use rcgen::{CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["xn--bcher-kva.localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers, _) = tls_server(&cert.pem(), &key.serialize_pem(), true);
    let client = SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(ca_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    let error = latest(&client.error_occurred);
    client
        .connect_to_host("bücher.localhost", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || completed
        .get()
        || error.borrow().is_some()));
    assert!(completed.get(), "{:?}", error.borrow());
}

/// `handshake_error` reports failed handshakes only: a connection that fails after its
/// handshake (the server drops it without close_notify) gets `error_occurred` (a truncation
/// or a reset) and no `handshake_error`.
#[test]
fn a_failure_after_the_handshake_is_no_handshake_error() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let client = client_trusting_test_ca();
    let handshake_errors = Rc::new(Cell::new(0u32));
    let h = handshake_errors.clone();
    client
        .handshake_error
        .connect(move |_| h.set(h.get() + 1))
        .release();
    let error = latest(&client.error_occurred);
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || completed
        .get()
        && peers.borrow().len() == 1));
    // The server side drops the connection without close_notify.
    peers.borrow()[0].abort();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    assert_eq!(handshake_errors.get(), 0, "{:?}", error.borrow());
}

/// The handshake timeout fires from the loop's timer: an SSL socket whose last handle a
/// `handshake_error` slot drops there gets no `error_occurred` after it.
#[test]
fn an_ssl_socket_dropped_when_its_handshake_times_out_emits_nothing_more() {
    let mut ev = EventLoop::new().unwrap();
    // Accepts (the kernel does) but never says anything.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let client = client_trusting_test_ca();
    client.set_handshake_timeout(Some(Duration::from_millis(200)));
    let holder = Rc::new(RefCell::new(Some(client.clone())));
    let errors_after = Rc::new(Cell::new(0u32));
    let h = holder.clone();
    client
        .handshake_error
        .connect(move |_| drop(h.borrow_mut().take()))
        .release();
    let (h, e) = (holder.clone(), errors_after.clone());
    client
        .error_occurred
        .connect(move |_| {
            if h.borrow().is_none() {
                e.set(e.get() + 1);
            }
        })
        .release();
    client.connect_to_host("localhost", port).unwrap();
    drop(client);
    assert!(run_until(&mut ev, Duration::from_secs(10), || holder
        .borrow()
        .is_none()));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(errors_after.get(), 0);
    drop(silent);
}

/// The request line a plain-HTTP client sends to a TLS server is named in the server's error
/// without its query, where credentials travel (`?api_key=…`): diagnostics carry no secrets.
#[test]
fn a_plain_client_s_query_stays_out_of_the_server_s_error() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let port = server.server_port().unwrap();
    let plain = TcpSocket::new().unwrap();
    plain.connect_to_host("127.0.0.1", port).unwrap();
    plain
        .write(b"GET /v1/items?api_key=SECRET123 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || peers
        .borrow()
        .len()
        == 1));
    let peer_error = latest(&peers.borrow()[0].error_occurred);
    assert!(run_until(&mut ev, Duration::from_secs(10), || peer_error
        .borrow()
        .is_some()));
    let error = peer_error.borrow().clone().unwrap();
    assert!(
        !format!("{error} {error:?}").contains("SECRET123"),
        "{error:?}"
    );
    assert!(
        matches!(&error, SocketError::Tls(TlsFailure::NotTlsClient { first_line }) if first_line == "GET /v1/items?… HTTP/1.1"),
        "{error:?}"
    );
}

/// The read that completes the handshake can also bring the server's close_notify and end of
/// stream; the writes queued for the handshake go out after that read, and a `bytes_written`
/// slot of theirs that aborts and connects elsewhere starts a connection the old one's end must
/// not close: it connects and completes its handshake.
#[test]
fn a_reconnect_from_bytes_written_after_a_read_that_ended_the_stream_is_not_closed_by_it() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = test_pki();
    let config = test_server_config(pki);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        // The ClientHello; the server's whole flight, then close_notify, go out in one write.
        while !conn.wants_write() {
            conn.read_tls(&mut tcp).unwrap();
            conn.process_new_packets().unwrap();
        }
        conn.send_close_notify();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        tcp.write_all(&wire).unwrap();
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
        sent_tx.send(()).unwrap();
        let _ = tcp.read_to_end(&mut Vec::new());
    });
    let (second, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let second_port = second.server_port().unwrap();
    let client = client_trusting_test_ca();
    let weak = Rc::downgrade(&client);
    let reconnected = Rc::new(Cell::new(false));
    let r = reconnected.clone();
    client
        .bytes_written
        .connect(move |_| {
            if !r.replace(true) {
                let client = weak.upgrade().unwrap();
                client.abort();
                client.connect_to_host("localhost", second_port).unwrap();
            }
        })
        .release();
    let states = Rc::new(RefCell::new(Vec::new()));
    let s = states.clone();
    client
        .state_changed
        .connect(move |state| s.borrow_mut().push(*state))
        .release();
    let handshakes = Rc::new(Cell::new(0));
    let h = handshakes.clone();
    client
        .handshake_completed
        .connect(move |_| h.set(h.get() + 1))
        .release();
    client.connect_to_host("localhost", port).unwrap();
    client.write(b"queued for the handshake").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || ready_rx
        .try_recv()
        .is_ok()));
    // The flight, close_notify and the end of stream all wait in the kernel for one read.
    go_tx.send(()).unwrap();
    sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || handshakes.get() == 2),
        "states {:?}, error {:?}",
        states.borrow(),
        client.last_error()
    );
    assert!(reconnected.get());
    assert!(client.is_encrypted());
    assert_eq!(client.peer_port(), Some(second_port));
}

/// An IPv4 address in one of the shorter or other-base forms URLs and `inet_aton` accept
/// (`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`: all 127.0.0.1, as a browser reads them)
/// is an address, not a name: no SNI is sent (RFC 6066 allows no address there), and the
/// certificate is verified against the address (its IP SAN), so the connection succeeds.
#[test]
fn an_ipv4_address_in_a_short_or_other_base_form_is_verified_as_an_address_without_sni() {
    let mut ev = EventLoop::new().unwrap();
    for host in ["127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7F000001"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = server_config_for_versions(&[&rustls::version::TLS13]);
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    return Err(conn.server_name().map(str::to_owned));
                }
            }
            let sni = conn.server_name().map(str::to_owned);
            conn.writer().write_all(b"hi").unwrap();
            conn.complete_io(&mut tcp).unwrap();
            let _ = tcp.read(&mut [0u8; 1]); // until the client goes
            Ok(sni)
        });
        let client = client_trusting_test_ca();
        let weak = Rc::downgrade(client.tcp_socket());
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        client
            .ready_read
            .connect(move |_| {
                g.borrow_mut()
                    .extend_from_slice(&weak.upgrade().unwrap().read_all())
            })
            .release();
        let error = latest(&client.error_occurred);
        if let Err(e) = client.connect_to_host(host, port) {
            panic!("{host}: {e}");
        }
        let done = run_until(&mut ev, Duration::from_secs(10), || {
            got.borrow().len() >= 2 || error.borrow().is_some()
        });
        let error = error.borrow().clone();
        client.abort();
        let sni = server.join().unwrap();
        assert!(done && error.is_none(), "{host}: {error:?}, SNI {sni:?}");
        assert_eq!(sni, Ok(None), "SNI sent connecting to {host}");
        assert_eq!(
            client.peer_address(),
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        );
    }
}

/// An `SslSocket`'s connection is always encrypted: connecting its [`SslSocket::tcp_socket`]
/// directly (a `connect_weak` slot gets that socket, and `connect_to_host` there is
/// `TcpSocket`'s) is refused with `InvalidState`, before and after a TLS connection, instead
/// of connecting in plain TCP and sending what was written in clear text.
#[test]
fn an_ssl_socket_cannot_be_connected_in_plain_text_through_its_tcp_socket() {
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, collected) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, false);
    let port = server.server_port().unwrap();
    let client = client_trusting_test_ca();
    let plain = client.tcp_socket().clone();
    let refused = |result: Result<(), SocketError>| {
        assert!(
            matches!(result, Err(SocketError::InvalidState(_))),
            "{result:?}"
        );
    };
    refused(plain.connect_to_host("localhost", port));
    refused(plain.connect_to_address(std::net::Ipv4Addr::LOCALHOST.into(), port));
    refused(plain.connect_to_addresses(&[std::net::SocketAddr::from(([127, 0, 0, 1], port))]));
    assert_eq!(plain.state(), kdnet::network::SocketState::Unconnected);
    // Through the SslSocket: encrypted; then, from a slot, again through the TcpSocket.
    let reconnect = Rc::new(RefCell::new(None));
    let r = reconnect.clone();
    client
        .disconnected
        .connect_weak(client.tcp_socket(), move |socket, _| {
            *r.borrow_mut() = Some(socket.connect_to_host("localhost", port));
            if socket.state() != kdnet::network::SocketState::Unconnected {
                socket.write(b"secret").unwrap();
            }
        })
        .release();
    client.connect_to_host("localhost", port).unwrap();
    client.write(b"hello").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || collected
        .borrow()
        .len()
        == 5));
    client.disconnect_from_host();
    assert!(run_until(&mut ev, Duration::from_secs(10), || reconnect
        .borrow()
        .is_some()));
    refused(reconnect.borrow_mut().take().unwrap());
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(&collected.borrow()[..], b"hello");
}

/// A TLS client that sends its request then close_notify, keeping the connection open for the
/// answer (a half-close, as TLS 1.3 allows): the answer a `ready_read` slot writes reaches it,
/// followed by the server's own close_notify (RFC 8446 §6.1: each party sends one before closing
/// its side), not a bare end of stream the client must take for a truncation.
#[test]
fn a_peer_s_close_notify_is_answered_with_close_notify_after_the_last_data() {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let server = listening_tls_server(pki);
    let port = server.server_port().unwrap();
    let peers: Peers = Rc::default();
    let keep = peers.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let weak = Rc::downgrade(peer);
            peer.ready_read
                .connect(move |_| {
                    let s = weak.upgrade().unwrap();
                    if &s.read_all()[..] == b"request" {
                        s.write(b"answer").unwrap();
                    }
                })
                .release();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let client = std::thread::spawn(move || {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        conn.writer().write_all(b"request").unwrap();
        conn.send_close_notify();
        while conn.wants_write() {
            conn.write_tls(&mut tcp).unwrap();
        }
        let mut answer = Vec::new();
        let end = loop {
            let mut buf = [0u8; 1024];
            match conn.reader().read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(e.to_string()),
            }
            match conn.read_tls(&mut tcp) {
                Ok(0) => {
                    // The end of stream: a clean one only after the server's close_notify.
                    let _ = conn.process_new_packets();
                    match conn.reader().read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                        Err(e) => break Err(e.to_string()),
                    }
                }
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        break Err(e.to_string());
                    }
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        (String::from_utf8_lossy(&answer).into_owned(), end)
    });
    let mut outcome = None;
    let started = std::time::Instant::now();
    while outcome.is_none() && started.elapsed() < Duration::from_secs(10) {
        ev.process_events(Some(Duration::from_millis(20))).unwrap();
        if client.is_finished() {
            outcome = Some(client.join().unwrap());
            break;
        }
    }
    let client_error = peers.borrow().first().and_then(|p| p.last_error());
    assert_eq!(
        outcome,
        Some(("answer".to_owned(), Ok(()))),
        "server socket error: {client_error:?}"
    );
    assert!(client_error.is_none(), "{client_error:?}");
}

/// No application protocol in common (the client offers `http/1.1` with ALPN, the server speaks
/// only `h2`): both sides' errors say it is about ALPN, not only the alert's name
/// (`NoApplicationProtocol`) or "peer doesn't support any known protocol". The alert's name
/// stays what [`TlsFailure::AlertReceived`] carries.
#[test]
fn no_application_protocol_in_common_is_named_as_alpn_on_both_sides() {
    let mut ev = EventLoop::new().unwrap();
    let (server, peers) = https_server_with_alpn(&[b"h2"]);
    let pki = test_pki();
    let mut config = TlsClientConfig::with_only_ca_certificates(pki.ca_pem.as_bytes()).unwrap();
    config.set_alpn_protocols(vec![b"http/1.1".to_vec()]);
    let client = SslSocket::with_config(config).unwrap();
    let error = latest(&client.error_occurred);
    client
        .connect_to_host("localhost", server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        error.borrow().is_some() && peers.borrow().iter().any(|p| p.last_error().is_some())
    }));
    let client_error = error.borrow().clone().unwrap();
    assert!(
        matches!(&client_error, SocketError::Tls(TlsFailure::AlertReceived(a)) if a == "NoApplicationProtocol"),
        "{client_error:?}"
    );
    assert!(
        client_error.to_string().contains("ALPN"),
        "client: {client_error}"
    );
    let server_error = peers.borrow()[0].last_error().unwrap();
    assert!(
        server_error.to_string().contains("ALPN"),
        "server: {server_error}"
    );
}

/// What each end of a TLS connection in one loop saw when one end closed gracefully during the
/// handshake: (closer's events, other end's events, bytes the other end read).
fn close_during_handshake(
    closer_is_client: bool,
    queued: &[u8],
) -> (Vec<String>, Vec<String>, Vec<u8>) {
    type Log = Rc<RefCell<Vec<String>>>;
    fn log_socket(socket: &Rc<TcpSocket>, log: &Log, read: &Rc<RefCell<Vec<u8>>>) {
        let l = log.clone();
        socket
            .state_changed
            .connect(move |s| l.borrow_mut().push(format!("{s:?}")))
            .release();
        let l = log.clone();
        socket
            .handshake_completed
            .connect(move |_| l.borrow_mut().push("handshake_completed".into()))
            .release();
        let l = log.clone();
        socket
            .handshake_error
            .connect(move |e| l.borrow_mut().push(format!("handshake_error({e:?})")))
            .release();
        let l = log.clone();
        socket
            .error_occurred
            .connect(move |e| l.borrow_mut().push(format!("error_occurred({e:?})")))
            .release();
        let l = log.clone();
        socket
            .disconnected
            .connect(move |_| l.borrow_mut().push("disconnected".into()))
            .release();
        let (r, weak) = (read.clone(), Rc::downgrade(socket));
        socket
            .ready_read
            .connect(move |_| {
                let s = weak.upgrade().unwrap();
                r.borrow_mut().extend_from_slice(&s.read_all());
            })
            .release();
    }
    let mut ev = EventLoop::new().unwrap();
    let server = listening_tls_server(test_pki());
    let client = client_trusting_test_ca();
    let (client_log, server_log): (Log, Log) = Default::default();
    type Read = Rc<RefCell<Vec<u8>>>;
    let (client_read, server_read): (Read, Read) = Default::default();
    log_socket(client.tcp_socket(), &client_log, &client_read);
    let accepted: Peers = Rc::default();
    let (keep, l, r, queued_s) = (
        accepted.clone(),
        server_log.clone(),
        server_read.clone(),
        queued.to_vec(),
    );
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            log_socket(peer, &l, &r);
            if !closer_is_client {
                assert!(!peer.is_encrypted());
                if !queued_s.is_empty() {
                    peer.write(&queued_s).unwrap();
                }
                peer.disconnect_from_host();
            }
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    let (weak, queued_c) = (Rc::downgrade(&client), queued.to_vec());
    if closer_is_client {
        // `connected` is TCP's: the handshake has not completed.
        client
            .connected
            .connect(move |_| {
                let c = weak.upgrade().unwrap();
                assert!(!c.is_encrypted());
                if !queued_c.is_empty() {
                    c.write(&queued_c).unwrap();
                }
                c.disconnect_from_host();
            })
            .release();
    }
    client
        .connect_to_host("127.0.0.1", server.server_port().unwrap())
        .unwrap();
    let done = |log: &Log| log.borrow().iter().any(|e| e == "disconnected");
    assert!(
        run_until(&mut ev, Duration::from_secs(20), || done(&client_log)
            && accepted.borrow().len() == 1
            && done(&server_log)),
        "client {:?}, server {:?}",
        client_log.borrow(),
        server_log.borrow()
    );
    let (closer, other, read) = if closer_is_client {
        (client_log, server_log, server_read)
    } else {
        (server_log, client_log, client_read)
    };
    let (a, b, c) = (
        closer.borrow().clone(),
        other.borrow().clone(),
        read.borrow().clone(),
    );
    (a, b, c)
}

/// `disconnect_from_host` during a TLS handshake, as its doc says: with nothing queued it
/// cancels the handshake (close_notify at once; the closing end closes without an error, the
/// other end's handshake fails with `ClosedByPeer`); with bytes queued it waits for the
/// handshake, sends them, and closes cleanly. Either end, in one loop.
#[test]
fn a_graceful_close_during_the_handshake_cancels_it_unless_bytes_are_queued() {
    for closer_is_client in [true, false] {
        let (closer, other, read) = close_during_handshake(closer_is_client, b"");
        let ctx = format!("client closes {closer_is_client}: {closer:?} / {other:?}");
        assert!(!closer.iter().any(|e| e.contains("rror")), "{ctx}");
        assert!(
            !closer
                .iter()
                .chain(&other)
                .any(|e| e == "handshake_completed"),
            "{ctx}"
        );
        assert_eq!(
            other
                .iter()
                .filter(|e| e.contains("rror"))
                .collect::<Vec<_>>(),
            [
                "handshake_error(ClosedByPeer)",
                "error_occurred(ClosedByPeer)"
            ],
            "{ctx}"
        );
        assert!(read.is_empty(), "{ctx}");

        let (closer, other, read) = close_during_handshake(closer_is_client, b"queued");
        let ctx = format!("client closes {closer_is_client}, bytes queued: {closer:?} / {other:?}");
        for log in [&closer, &other] {
            assert!(log.iter().any(|e| e == "handshake_completed"), "{ctx}");
            assert!(!log.iter().any(|e| e.contains("rror")), "{ctx}");
            assert_eq!(
                log.last().map(String::as_str),
                Some("disconnected"),
                "{ctx}"
            );
        }
        assert_eq!(read, b"queued", "{ctx}");
    }
}

/// A TLS server presenting `cert` and `key` listening on a free port of `ip`, and the
/// connections it accepted (kept open).
fn keeping_tls_server(ip: &str, cert: &str, key: &str) -> (Rc<TcpServer>, Peers) {
    let server = TcpServer::new().unwrap();
    server.set_tls_config(TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    server.listen(ip, 0).unwrap();
    let peers: Peers = Rc::default();
    let keep = peers.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| keep.borrow_mut().push(peer.clone()))
        .release();
    (server, peers)
}

/// The handshake error of a client trusting exactly `ca_pem` that connects to `host` on a
/// server presenting `cert` and `key`.
fn handshake_error_trusting(ca_pem: &str, cert: &str, key: &str, host: &str) -> SocketError {
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers) = keeping_tls_server("127.0.0.1", cert, key);
    let client = SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(ca_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let error = latest(&client.handshake_error);
    client
        .connect_to_host(host, server.server_port().unwrap())
        .unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    error.borrow().clone().unwrap()
}

/// A self-signed certificate is `SelfSigned` also when a trusted root happens to carry its
/// name (`CN=localhost`: some systems trust a "snakeoil" certificate of that name) with another
/// key: webpki then tries that root's key, and the reason read `bad certificate:
/// UnsupportedSignatureAlgorithmForPublicKeyContext { signature_algorithm_id: [6, 8, 42, …] }`
/// (a root of another key type) or `bad certificate: BadSignature` (same type).
#[test]
fn a_self_signed_certificate_is_self_signed_even_when_a_trusted_root_has_its_name() {
    let leaf_key = rcgen::KeyPair::generate().unwrap(); // P-256
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = params.self_signed(&leaf_key).unwrap().pem();
    for namesake_alg in [
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    ] {
        let key = rcgen::KeyPair::generate_for(namesake_alg).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let namesake = ca.self_signed(&key).unwrap().pem();
        let err =
            handshake_error_trusting(&namesake, &leaf, &leaf_key.serialize_pem(), "localhost");
        assert!(
            matches!(err, SocketError::Tls(TlsFailure::SelfSigned)),
            "a root named like the certificate, {namesake_alg:?}: {err:?}"
        );
    }
}

/// The addresses a `NameMismatch` lists are the certificate's IP SANs as one writes them
/// (RFC 5952): webpki's text for an IPv6 SAN wrote `::1` as `0::1`, dropped a run of zeros at
/// the end (`fe80::` became `fe80`) and wrote two runs as `::` each (`2001:db8::1:0:0:1` became
/// `2001:db8::1::1`, no address at all).
#[test]
fn a_name_mismatch_lists_ipv6_addresses_as_they_are_written() {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = [
        "::1",
        "fe80::",
        "2001:db8::1:0:0:1",
        "1::",
        "10.0.0.1",
        "a.example",
    ];
    let cert = rcgen::CertificateParams::new(names.map(str::to_owned).to_vec())
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let err = handshake_error_trusting(&cert, &cert, &key.serialize_pem(), "localhost");
    match err {
        SocketError::Tls(TlsFailure::NameMismatch {
            expected,
            presented,
        }) => {
            assert_eq!(expected, "localhost");
            assert_eq!(presented, names);
        }
        other => panic!("{other:?}"),
    }
}

/// A certificate signed by a CA that carries a trusted root's name but not its key is signed
/// by an unknown issuer (trust is in the root's key, not its name), as OpenSSL (KDNetwork's
/// library) says; with a key of another type the reason read `bad certificate:
/// UnsupportedSignatureAlgorithmForPublicKeyContext { signature_algorithm_id: [6, 3, 43, 101,
/// 112], … }`.
#[test]
fn a_certificate_from_a_ca_that_only_has_a_trusted_root_s_name_is_from_an_unknown_issuer() {
    let ca = |alg: &'static rcgen::SignatureAlgorithm| {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kdnet name-twin CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, rcgen::Issuer::new(params, key))
    };
    let (trusted, _) = ca(&rcgen::PKCS_ECDSA_P256_SHA256);
    // A key of another type, and one of the same type (a CA made again under the same name,
    // while the server still has a certificate from the first: the reason read `bad
    // certificate: BadSignature`).
    for impostor_alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P256_SHA256] {
        let (_, impostor) = ca(impostor_alg);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &impostor)
            .unwrap()
            .pem();
        let err = handshake_error_trusting(&trusted, &leaf, &key.serialize_pem(), "localhost");
        assert!(
            matches!(err, SocketError::Tls(TlsFailure::UnknownIssuer)),
            "{impostor_alg:?}: {err:?}"
        );
    }
}

// Made with OpenSSL (rcgen on ring can make neither key): a root with a key ring cannot check
// signatures with (P-521; RSA of 1024 bits), and a P-256 `localhost` certificate it signed
// (ecdsa-with-SHA256; sha256WithRSAEncryption), both valid for 100 years from 2026-11-26.
const P521_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICHTCCAYCgAwIBAgIUIcCxC09XoGbvy6qTqr1nY7e2L8kwCgYIKoZIzj0EAwIw\n\
GDEWMBQGA1UEAwwNa2RuZXQgcDUyMSBDQTAgFw0yNjExMjYxNDI5MDZaGA8yMTI2\n\
MTEwMjE0MjkwNlowGDEWMBQGA1UEAwwNa2RuZXQgcDUyMSBDQTCBmzAQBgcqhkjO\n\
PQIBBgUrgQQAIwOBhgAEAakCsV7LXNJA30+9DUK74ebnqt6WsziJ+S12rBtGQTw8\n\
XgqzWojFuXXni6vrZ7AnFQbkVzZKXYR2nNaX+dRsgg4dAU0QPm/m5WFCIhVpqCf0\n\
3pMx9YlRU/9mpkw/cWXiODQWPdPZ3mhXOqR/0IrpSJqu5ft0FcKANSvrfGrcN5EK\n\
rLTho2MwYTAdBgNVHQ4EFgQUoxVXiJldd52LfyU8tw4P8QCGK2wwHwYDVR0jBBgw\n\
FoAUoxVXiJldd52LfyU8tw4P8QCGK2wwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B\n\
Af8EBAMCAQYwCgYIKoZIzj0EAwIDgYoAMIGGAkFf6FGfKywVT0xghmmyl5IMrZeY\n\
2t/fbiZogsilcwKv/Bjc5DXmBhzchqoArr9hERnBvrj2Fvu8m5MXxp8KJBK0IAJB\n\
Gofm8nLwdIqh9/cCFEXYJMIVG3jf5ri4O7qpusMo6dIhfbrnZq605hGqD+Nsgdyg\n\
pUPprlkyiIKCyY+DeTyPG0M=\n\
-----END CERTIFICATE-----\n\
";
const P521_LEAF_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB1zCCATmgAwIBAgIUJSfmlM9VcDewS2wRYoyog6DrcSQwCgYIKoZIzj0EAwIw\n\
GDEWMBQGA1UEAwwNa2RuZXQgcDUyMSBDQTAgFw0yNjExMjYxNDI5MDZaGA8yMTI2\n\
MTEwMjE0MjkwNlowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAEeYxHAE9B5TcHaBpV7s5AzVWvLIsCBGp+yLI6c5aH6THn3mjL\n\
Rupt/Gn/6WVmZ49QIXCD6NN1xDbCMQJ+PzFySKNjMGEwFAYDVR0RBA0wC4IJbG9j\n\
YWxob3N0MAkGA1UdEwQCMAAwHwYDVR0jBBgwFoAUoxVXiJldd52LfyU8tw4P8QCG\n\
K2wwHQYDVR0OBBYEFJKM3I+SWy3m+XDXqgN4cfEDx84NMAoGCCqGSM49BAMCA4GL\n\
ADCBhwJCARRc6xyvYpEAM15mm/ThlPicfNIlO7/b7Uk6FjPK+WsneOgV4S4DjO2k\n\
In2Emzwr9mRps/HqYgS+JKu5pqRLomubAkEzBsp+F9+xIDc/O+cuaz72PunJIA54\n\
lBFUXd6KfIBi0NVZTOlagnkcDSvpSts4ZXor+r2BEZHrUNJQiVus4p9Fyw==\n\
-----END CERTIFICATE-----\n\
";
const P521_LEAF_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgr/IDEDkH6+iru/Z/\n\
b0ucQa3REx9jCZveN181IjuS4MmhRANCAAR5jEcAT0HlNwdoGlXuzkDNVa8siwIE\n\
an7IsjpzlofpMefeaMtG6m38af/pZWZnj1AhcIPo03XENsIxAn4/MXJI\n\
-----END PRIVATE KEY-----\n\
";
const RSA1024_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICJDCCAY2gAwIBAgIULnnWov6N5lYmMfI3X/u0sDwLmkswDQYJKoZIhvcNAQEL\n\
BQAwGzEZMBcGA1UEAwwQa2RuZXQgcnNhMTAyNCBDQTAgFw0yNjExMjYxNDI5MDZa\n\
GA8yMTI2MTEwMjE0MjkwNlowGzEZMBcGA1UEAwwQa2RuZXQgcnNhMTAyNCBDQTCB\n\
nzANBgkqhkiG9w0BAQEFAAOBjQAwgYkCgYEArJ5crVKm0Rhp2dL3PYlYXK2kZT2z\n\
MtqQ9MxBkWmjpNMnbKVzGEaYqpJ8wLhrrFcUiT0ptY3Ikwa8YndcOyLLAXBIRcRk\n\
kyGmVXKYxuHRXCgzDW7d3+pMsbY8j8mDqynEsGuzYtIzLmqySc/uXtQqBFAubAR0\n\
obUfJrxlAHS1q3kCAwEAAaNjMGEwHQYDVR0OBBYEFAYYDKSMggpoCW8O2UWJtIvk\n\
qdZGMB8GA1UdIwQYMBaAFAYYDKSMggpoCW8O2UWJtIvkqdZGMA8GA1UdEwEB/wQF\n\
MAMBAf8wDgYDVR0PAQH/BAQDAgEGMA0GCSqGSIb3DQEBCwUAA4GBAKD6KrsD/X6F\n\
20Fgi2zvqtalfxYpQPQY8r+3PN1h/Y85WnZFO+XUUxODw8zKR49TbcrwMtC7HgOi\n\
0lpBQQmHs8SJWrXXlGqWmak+kwS98kY6/LQgm5V6eabM0v4mZjtc2//hnsMjvS7F\n\
51dm2UvwJ/LdPCMWsXyp2tREKrhbMPFW\n\
-----END CERTIFICATE-----\n\
";
const RSA1024_LEAF_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB1jCCAT+gAwIBAgIUA3KdzapdpHQcxrAjWpe8JIt7k2UwDQYJKoZIhvcNAQEL\n\
BQAwGzEZMBcGA1UEAwwQa2RuZXQgcnNhMTAyNCBDQTAgFw0yNjExMjYxNDI5MDZa\n\
GA8yMTI2MTEwMjE0MjkwNlowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZI\n\
zj0CAQYIKoZIzj0DAQcDQgAEyrCSUUWQlSrYmbXJBjtRF8Pp7jRouoVpFXC8Kpz0\n\
Jxs/2C7MnLXrz2BqaT7VW+jQv7LPcR1cXvVcaPNfczNMZKNjMGEwFAYDVR0RBA0w\n\
C4IJbG9jYWxob3N0MAkGA1UdEwQCMAAwHwYDVR0jBBgwFoAUBhgMpIyCCmgJbw7Z\n\
RYm0i+Sp1kYwHQYDVR0OBBYEFDnprJC5NkIcpHn62gpcyRy009jjMA0GCSqGSIb3\n\
DQEBCwUAA4GBAGS61B0VhUMocrbOG4QDV//WMhuFHfTjlggm60moQBte3aR7DFP/\n\
7Gjoh9UY9HKCcJrv/fCI+7obn/TXfHkoFTUir37uKPolqjYvz1BAAp3mX02DOTRo\n\
3HC0WgKjQUc2n4Q+lhZtUniWdtewOF1noqpvvUcGWdsSMXOBy8s5BfeJ\n\
-----END CERTIFICATE-----\n\
";
const RSA1024_LEAF_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsU/+B/5mNYIlYrfo\n\
xYmUYhbE7yeOfhbnPtOQ8Drc5FWhRANCAATKsJJRRZCVKtiZtckGO1EXw+nuNGi6\n\
hWkVcLwqnPQnGz/YLsyctevPYGppPtVb6NC/ss9xHVxe9Vxo819zM0xk\n\
-----END PRIVATE KEY-----\n\
";

/// A certificate signed by a trusted root whose key this TLS stack cannot check signatures
/// with (an old CA's RSA key of 1024 bits, an ECDSA key on P-521) is not one from an unknown
/// issuer: the issuer is trusted, the remedy is another CA key, not trusting one more CA.
/// Naming a CA that only carries a trusted root's name (webpki's BadSignature or
/// UnsupportedSignatureAlgorithmForPublicKey) an unknown issuer also named these so.
#[test]
fn a_certificate_from_a_trusted_root_with_an_unusable_key_is_not_from_an_unknown_issuer() {
    for (what, ca, leaf, key) in [
        (
            "RSA-1024 root",
            RSA1024_CA_PEM,
            RSA1024_LEAF_PEM,
            RSA1024_LEAF_KEY,
        ),
        ("P-521 root", P521_CA_PEM, P521_LEAF_PEM, P521_LEAF_KEY),
    ] {
        let err = handshake_error_trusting(ca, leaf, key, "localhost");
        assert!(
            matches!(&err, SocketError::Tls(TlsFailure::BadCertificate(why))
                if why.contains("issuer's key")),
            "{what}: {err:?}"
        );
    }
}
const SELF_SIGNED_RSA1024_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICGTCCAYKgAwIBAgIUPs91J7z+eboyb0OJTCbu7XPgid4wDQYJKoZIhvcNAQEL\n\
BQAwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjE0MzIzM1oYDzIxMjYx\n\
MTAyMTQzMjMzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwgZ8wDQYJKoZIhvcNAQEB\n\
BQADgY0AMIGJAoGBANd6bVLUSPdfFWEKNeXBd1z/kAU7cZ/A7mksi687evv5abOS\n\
74uESxcAD8rshCoaimKFJZ3eBduJ/HgmPNoiUVbVLoYAUMdMkg8JoKbxUEWCQcsL\n\
fG3eSe25fLmh0mBaWu37hyAsd28zPUBS++R1bwTjs1ExeoF34SrNjidTtdyhAgMB\n\
AAGjZjBkMB0GA1UdDgQWBBSp6elU1pSyy5XN6+yCaoRgH9p9oTAfBgNVHSMEGDAW\n\
gBSp6elU1pSyy5XN6+yCaoRgH9p9oTAUBgNVHREEDTALgglsb2NhbGhvc3QwDAYD\n\
VR0TAQH/BAIwADANBgkqhkiG9w0BAQsFAAOBgQCgjM9EgBCOt+lpOwK106PlYlk+\n\
jwZ2JF3hVdIxrJCJM5CNfrRtXrCPYRPSMkb9HV0KQWAhhklqnky0g7PQy7gwMToP\n\
w4whLneKGFTjkB3YHZwKi/X7IRwxM4p6cstn3odjnEqXpZOwQKaA5E02XaOB9UsA\n\
108G6tx3G5IUujIYEA==\n\
-----END CERTIFICATE-----\n\
";

/// A self-signed certificate that is trusted itself (added as a CA: an old device's, made with
/// an RSA key of 1024 bits) but whose key cannot check its signature here is not "self-signed
/// (not trusted)": it is trusted, the key is the trouble. (The server is plain rustls with
/// another key for the handshake: no stack here signs with such a key, and the chain is
/// verified before the handshake's signature.)
#[test]
fn a_trusted_self_signed_certificate_with_an_unusable_key_is_not_named_untrusted() {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let handshake_key = rcgen::KeyPair::generate().unwrap();
    let signing_key = provider
        .key_provider
        .load_private_key(
            rustls::pki_types::PrivateKeyDer::from_pem_slice(
                handshake_key.serialize_pem().as_bytes(),
            )
            .unwrap(),
        )
        .unwrap();
    let chain = vec![
        rustls::pki_types::CertificateDer::from_pem_slice(SELF_SIGNED_RSA1024_PEM.as_bytes())
            .unwrap(),
    ];
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))),
    );
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        while conn.is_handshaking() && conn.complete_io(&mut tcp).is_ok() {}
    });
    let mut ev = EventLoop::new().unwrap();
    let client = SslSocket::with_config(
        TlsClientConfig::with_only_ca_certificates(SELF_SIGNED_RSA1024_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    let error = latest(&client.handshake_error);
    client.connect_to_host("localhost", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    let err = error.borrow().clone().unwrap();
    assert!(
        matches!(&err, SocketError::Tls(TlsFailure::BadCertificate(why))
            if why.contains("issuer's key")),
        "{err:?}"
    );
}

/// TLS 1.3: a server refusing the client certificate does so after the client's handshake
/// completed, and the documented report is `error_occurred(Tls(AlertReceived(…)))` when the
/// alert arrives (see `SslSocket`). A client that writes once the server's alert (and its
/// reset) are in its kernel learns of the refusal from the write instead: the write fails
/// (`EPIPE`/`ECONNRESET`), `fail_write` reads what the peer sent first (the alert: the session
/// fails with it) but then closes with the write's error, so the reason is lost
/// (`Io { Write, Broken pipe }`). Found by `tls_socket_model`; the fix belongs to the TCP
/// layer (`tcp/socket/writing.rs`, `fail_write`: a TLS failure read there should win over the
/// write error it explains).
#[test]
fn a_write_after_the_servers_tls_1_3_certificate_refusal_reports_the_alert_not_the_write_error() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        // The client has no certificate: the handshake fails on the server, which sends its
        // alert and goes (with a reset, as a server closing with unread input does).
        while conn.complete_io(&mut tcp).is_ok() {}
        while conn.wants_write() && conn.write_tls(&mut tcp).is_ok() {}
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
        drop(tcp);
        done_tx.send(()).unwrap();
    });

    let client = client_trusting_test_ca();
    let completed = Rc::new(Cell::new(false));
    let c = completed.clone();
    client
        .handshake_completed
        .connect(move |_| c.set(true))
        .release();
    let error = latest(&client.error_occurred);
    client.connect_to_host("127.0.0.1", port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || completed.get()));
    // Not turning the loop: the alert and the reset wait in the kernel, unread.
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    client.write(b"after the refusal").unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(10), || error
        .borrow()
        .is_some()));
    let error = error.borrow().clone().unwrap();
    assert!(
        matches!(&error, SocketError::Tls(TlsFailure::AlertReceived(a)) if a == "CertificateRequired"),
        "{error:?}"
    );
}

/// `SslSocket` has `TlsClientConfig`'s trust settings as well (a porter of `addCaCertificate`
/// holds only the socket): a CA in DER is trusted, and without the default roots nothing else
/// is — with no CA at all the connect is refused with the reason.
#[test]
fn an_ssl_socket_trusts_a_der_ca_and_can_trust_nothing_else() {
    use rustls::pki_types::pem::PemObject;
    let mut ev = EventLoop::new().unwrap();
    let pki = test_pki();
    let (server, _peers, _) = tls_server(&pki.server_cert_pem, &pki.server_key_pem, true);
    let port = server.server_port().unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    let handshake = |client: &Rc<SslSocket>, ev: &mut EventLoop| {
        let completed = Rc::new(Cell::new(false));
        let c = completed.clone();
        client
            .handshake_completed
            .connect(move |_| c.set(true))
            .release();
        let error = latest(&client.handshake_error);
        client.connect_to_host("localhost", port).unwrap();
        assert!(run_until(ev, Duration::from_secs(10), || completed.get()
            || error.borrow().is_some()));
        let error = error.borrow().as_ref().map(ToString::to_string);
        (completed.get(), error)
    };

    let client = SslSocket::new().unwrap();
    assert!(client.trusts_default_roots());
    assert!(client.add_ca_certificate_der(b"not DER").is_err());
    client.add_ca_certificate_der(&ca_der).unwrap();
    assert_eq!(handshake(&client, &mut ev), (true, None));

    let only = SslSocket::new().unwrap();
    only.set_trust_default_roots(false);
    assert!(!only.trusts_default_roots());
    let refused = only
        .connect_to_host("localhost", port)
        .expect_err("a socket that trusts nothing connected");
    assert!(refused.to_string().contains("trust"), "{refused}");
    only.add_ca_certificate_der(&ca_der).unwrap();
    assert_eq!(handshake(&only, &mut ev), (true, None));
}

/// An `SslSocket` (trusting the test CA) raced to a refused 127.0.0.1 port and a TLS server on
/// `::1` presenting `cert`: `Ok` once encrypted, or the handshake error.
fn connect_raced_to_ipv6(
    cert: &str,
    key: &str,
    verify_name: Option<&str>,
) -> Result<(), SocketError> {
    let mut ev = EventLoop::new().unwrap();
    let (server, _peers) = keeping_tls_server("::1", cert, key);
    // A port on 127.0.0.1 nothing listens on: the first attempt is refused at once, so the
    // second address (::1) wins the race.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addrs = [
        dead,
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, server.server_port().unwrap())),
    ];
    let client = client_trusting_test_ca();
    if let Some(name) = verify_name {
        client.set_peer_verify_name(name);
    }
    let error = latest(&client.handshake_error);
    client.connect_to_addresses(&addrs).unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || client.is_encrypted()
            || error.borrow().is_some()),
        "neither encrypted nor failed: {:?}",
        client.last_error()
    );
    assert_eq!(
        client.peer_address(),
        Some(addrs[1]),
        "the ::1 attempt did not win"
    );
    match error.borrow().clone() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// `connect_to_addresses` without a peer verify name verifies the certificate against the
/// address whose connection won the race, not the first one given: the certificate of a server
/// reached on `::1` that names `::1` is accepted, one that names only `127.0.0.1` (the first,
/// refused, address) is not.
#[test]
fn connect_to_addresses_verifies_against_the_address_that_won() {
    let pki = test_pki();
    if let Err(e) = connect_raced_to_ipv6(&pki.ipv6_only_cert_pem, &pki.ipv6_only_key_pem, None) {
        panic!("a certificate for the address connected to was refused: {e:?}");
    }
    let err = connect_raced_to_ipv6(&pki.ipv4_only_cert_pem, &pki.ipv4_only_key_pem, None)
        .expect_err("a certificate for another address was accepted");
    assert!(
        matches!(&err, SocketError::Tls(TlsFailure::NameMismatch { expected, presented })
            if expected == "::1" && presented == &["127.0.0.1"]),
        "{err:?}"
    );
    // A peer verify name still overrides the address.
    let err = connect_raced_to_ipv6(
        &pki.ipv6_only_cert_pem,
        &pki.ipv6_only_key_pem,
        Some("127.0.0.1"),
    )
    .expect_err("the peer verify name was ignored");
    assert!(
        matches!(&err, SocketError::Tls(TlsFailure::NameMismatch { expected, .. }) if expected == "127.0.0.1"),
        "{err:?}"
    );
}

/// How a rustls server on a thread saw each of `connections` handshakes of one `SslSocket`
/// with `config` (and `set_up(socket, round)` before each connect) connecting again and again (`versions`: what the server
/// speaks). The server
/// writes a greeting after each handshake (its session tickets come before it), the client
/// disconnects once it read it.
fn server_handshake_kinds(
    config: TlsClientConfig,
    versions: &[&'static rustls::SupportedProtocolVersion],
    connections: usize,
    set_up: impl Fn(&SslSocket, usize),
) -> Vec<rustls::HandshakeKind> {
    use rustls::pki_types::pem::PemObject;
    let pki = test_pki();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let server_config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_protocol_versions(versions)
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let (port, server) = rustls_server_thread(server_config, connections, |tls| {
        use std::io::{Read, Write};
        tls.write_all(b"hello").unwrap();
        tls.flush().unwrap();
        // Until the client closes.
        let mut sink = [0u8; 64];
        while matches!(tls.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut ev = EventLoop::new().unwrap();
    let client = SslSocket::with_config(config).unwrap();
    let greeted = Rc::new(Cell::new(0usize));
    let g = greeted.clone();
    let weak = Rc::downgrade(client.tcp_socket());
    client
        .ready_read
        .connect(move |_| {
            let socket = weak.upgrade().unwrap();
            if socket.read_all().ends_with(b"hello") {
                g.set(g.get() + 1);
                socket.disconnect_from_host();
            }
        })
        .release();
    for round in 1..=connections {
        set_up(&client, round);
        client.connect_to_host("localhost", port).unwrap();
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || greeted.get() == round
                && client.state() == kdnet::network::SocketState::Unconnected),
            "connection {round}: {:?}",
            client.last_error()
        );
    }
    server.join().unwrap()
}

/// TLS sessions are resumed by default (TLS 1.3 tickets, TLS 1.2 session IDs or tickets): a
/// second connection of the same socket skips the full handshake. With
/// `set_session_resumption(false)` every handshake is a full one (as Qt's
/// `SslOptionDisableSessionTickets` and curl's `CURLOPT_SSL_SESSIONID_CACHE` 0 allow).
#[test]
fn sessions_are_resumed_unless_resumption_is_turned_off() {
    use rustls::HandshakeKind::{Full, Resumed};
    let trusting = || TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes());
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = trusting().unwrap();
        assert!(config.resumes_sessions());
        assert_eq!(
            server_handshake_kinds(config, versions, 3, |_, _| {}),
            [Full, Resumed, Resumed],
            "{versions:?}"
        );
        let mut config = trusting().unwrap();
        config.set_session_resumption(false);
        assert!(!config.resumes_sessions());
        assert_eq!(
            server_handshake_kinds(config, versions, 3, |_, _| {}),
            [Full, Full, Full],
            "{versions:?}"
        );
        // The same through the socket.
        assert_eq!(
            server_handshake_kinds(trusting().unwrap(), versions, 2, |s, _| s
                .set_session_resumption(false)),
            [Full, Full],
            "{versions:?}"
        );
    }
}

/// What a client saw when its `handshake_completed` slot did `action` while the server's first
/// data (TLS 1.3 0.5-RTT data: a rustls server writes it with its Finished) came in the same
/// read as the end of the handshake: (`ready_read` count, `bytes_received` total, `read_all`
/// after the socket is unconnected again).
fn data_with_the_handshake_after(action: &'static str) -> (usize, usize, Vec<u8>) {
    let pki = test_pki();
    let mut server_config = rustls::ServerConfig::clone(&test_server_config(pki));
    server_config.send_half_rtt_data = true;
    let server_config = std::sync::Arc::new(server_config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut conn = rustls::ServerConnection::new(server_config).unwrap();
        // Queued before the handshake: sent right after the server's Finished, in one write.
        conn.writer().write_all(b"server's first data").unwrap();
        while conn.is_handshaking() || conn.wants_write() {
            if conn.wants_write() {
                // In one write: the client reads its end of the handshake and the data together.
                let mut flight = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut flight).unwrap();
                }
                tcp.write_all(&flight).unwrap();
            } else if conn.read_tls(&mut tcp).unwrap_or(0) == 0
                || conn.process_new_packets().is_err()
            {
                return;
            }
        }
        // Until the client goes.
        let mut sink = [0u8; 1024];
        while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut ev = EventLoop::new().unwrap();
    let client = client_trusting_test_ca();
    let weak = Rc::downgrade(client.tcp_socket());
    client
        .handshake_completed
        .connect(move |_| {
            let socket = weak.upgrade().unwrap();
            match action {
                "abort" => socket.abort(),
                "disconnect" => socket.disconnect_from_host(),
                "write, disconnect" => {
                    // More than the kernel takes at once: the close waits in `Closing`.
                    socket.write(&pattern(32 << 20, 7)).unwrap();
                    socket.disconnect_from_host();
                }
                _ => {}
            }
        })
        .release();
    let ready = emissions(&client.ready_read);
    let handshakes = emissions(&client.handshake_completed);
    let received = Rc::new(Cell::new(0usize));
    let b = received.clone();
    client
        .bytes_received
        .connect(move |n| b.set(b.get() + n))
        .release();
    client.connect_to_host("127.0.0.1", port).unwrap();
    assert!(
        run_until(&mut ev, Duration::from_secs(20), || handshakes.get() == 1
            && (action == "none"
                || client.state() == kdnet::network::SocketState::Unconnected)
            && (action != "none" || ready.get() > 0)),
        "{action}: {:?} {:?}",
        client.state(),
        client.last_error()
    );
    let data = client.read_all().to_vec();
    client.abort();
    server.join().unwrap();
    (ready.get(), received.get(), data)
}

/// Data that arrives in the same read as the end of the handshake is announced after
/// `handshake_completed`, unless a slot there closed the socket: then no `ready_read` or
/// `bytes_received` follows for it (a closed socket emits nothing more, as a server rejecting a
/// client there must not be handed its data), yet `read_all` still returns it. A close that has
/// to wait for queued writes (`Closing`) still announces it.
#[test]
fn data_that_came_with_the_handshake_is_announced_unless_a_handshake_slot_closed_the_socket() {
    let first: &[u8] = b"server's first data";
    assert_eq!(
        data_with_the_handshake_after("none"),
        (1, first.len(), first.to_vec())
    );
    assert_eq!(
        data_with_the_handshake_after("abort"),
        (0, 0, first.to_vec())
    );
    assert_eq!(
        data_with_the_handshake_after("disconnect"),
        (0, 0, first.to_vec())
    );
    assert_eq!(
        data_with_the_handshake_after("write, disconnect"),
        (1, first.len(), first.to_vec())
    );
}

/// A rustls server on a thread, on a free 127.0.0.1 port: it accepts `connections` connections
/// one after another, runs `serve` on each, and returns how each handshake went.
fn rustls_server_thread(
    config: std::sync::Arc<rustls::ServerConfig>,
    connections: usize,
    serve: impl Fn(&mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>)
    + Send
    + 'static,
) -> (u16, std::thread::JoinHandle<Vec<rustls::HandshakeKind>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut kinds = Vec::new();
        for _ in 0..connections {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            serve(&mut tls);
            kinds.push(tls.conn.handshake_kind().unwrap());
        }
        kinds
    });
    (port, server)
}

/// The handshake kinds a rustls server (TLS 1.3) saw for `requests` GETs an `HttpClient` with
/// `session` made one after another, each on a new connection (`Connection: close`).
fn http_handshake_kinds(mut session: HttpSession, requests: usize) -> Vec<rustls::HandshakeKind> {
    let pki = test_pki();
    let (port, server) = rustls_server_thread(test_server_config(pki), requests, |tls| {
        use std::io::{Read, Write};
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && matches!(tls.read(&mut byte), Ok(1)) {
            head.push(byte[0]);
        }
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    session.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap();
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::with_session(session).unwrap();
    for n in 0..requests {
        let done: Rc<RefCell<Option<String>>> = Rc::default();
        let d = done.clone();
        client.get(&format!("https://localhost:{port}/{n}"), move |result| {
            *d.borrow_mut() = Some(match result {
                Ok(response) => response.text().into_owned(),
                Err(e) => format!("{e}"),
            });
        });
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || done.borrow().is_some()),
            "request {n}"
        );
        assert_eq!(done.borrow().as_deref(), Some("ok"), "request {n}");
    }
    server.join().unwrap()
}

/// An `HttpClient` resumes TLS sessions on new connections by default, and never with
/// `HttpSession::set_tls_session_resumption(false)` (the opt-out `TlsClientConfig` has).
#[test]
fn the_http_client_resumes_tls_sessions_unless_its_session_says_not_to() {
    use rustls::HandshakeKind::{Full, Resumed};
    let session = HttpSession::new();
    assert!(session.resumes_tls_sessions());
    assert_eq!(http_handshake_kinds(session, 3), [Full, Resumed, Resumed]);
    let mut session = HttpSession::new();
    session.set_tls_session_resumption(false);
    assert!(!session.resumes_tls_sessions());
    assert_eq!(http_handshake_kinds(session, 3), [Full, Full, Full]);
}

/// `SslSocket::set_session_resumption(true)` ("resumes TLS sessions of earlier connections")
/// called on a socket that resumes already (before each connect, say, to be sure) threw away
/// the sessions it held: every setter rebuilt the configuration, and with it its session cache,
/// so the next handshake was a full one (review, twentieth round). Setting the value it has
/// changes nothing.
#[test]
fn turning_resumption_on_when_it_is_on_keeps_the_sessions() {
    use rustls::HandshakeKind::{Full, Resumed};
    let config = TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes()).unwrap();
    assert_eq!(
        server_handshake_kinds(config, &[&rustls::version::TLS13], 3, |s, _| s
            .set_session_resumption(true)),
        [Full, Resumed, Resumed]
    );
    // Off and on again: the sessions are gone (a configuration built anew), as documented.
    let config = TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes()).unwrap();
    assert_eq!(
        server_handshake_kinds(config, &[&rustls::version::TLS13], 3, |s, round| {
            s.set_session_resumption(round != 2);
        }),
        [Full, Full, Full]
    );
}
