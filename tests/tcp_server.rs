//! TcpServer over real loopback: accept errors, peers that vanish, close and drop from slots.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::{TcpServer, TcpSocket};
use support::run_until;

const EMFILE_CHILD: &str = "KDNET_TCP_SERVER_EMFILE_CHILD";

/// Runs the `#[ignore]`d test `name` alone in a child process (it changes process-wide state).
fn run_in_child(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EMFILE_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_of_descriptors_neither_spins_nor_stops_accepting() {
    run_in_child("emfile_child");
}

#[test]
#[ignore = "run by out_of_descriptors_neither_spins_nor_stops_accepting in a child process"]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let errors = Rc::new(Cell::new(0usize));
    let e = errors.clone();
    server
        .error_occurred
        .connect(move |_| e.set(e.get() + 1))
        .release();
    let accepted: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let a = accepted.clone();
    server
        .new_connection
        .connect(move |s: &Rc<TcpSocket>| a.borrow_mut().push(s.clone()))
        .release();
    // The kernel completes the connection into the backlog; accepting it needs a descriptor.
    let _client =
        std::net::TcpStream::connect(("127.0.0.1", server.server_port().unwrap())).unwrap();
    let mut hogs = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hogs.push(f);
    }
    let until = Instant::now() + Duration::from_millis(500);
    let mut busy_turns = 0usize;
    while Instant::now() < until {
        if ev.process_events(Some(Duration::from_millis(50))).unwrap() > 0 {
            busy_turns += 1;
        }
    }
    assert!(errors.get() >= 1, "EMFILE was not reported");
    assert!(
        busy_turns < 50 && errors.get() < 50,
        "the loop spins on EMFILE: {busy_turns} busy turns, {} errors in 500 ms",
        errors.get()
    );
    drop(hogs);
    assert!(
        run_until(&mut ev, Duration::from_secs(5), || accepted.borrow().len()
            == 1),
        "the pending connection was never accepted once descriptors were free"
    );
}

/// A server whose `new_connection` slot stops it — by `close()` or by dropping the last `Rc` —
/// hands out no further connection, even with more waiting in the backlog.
#[test]
fn a_server_stopped_from_its_new_connection_slot_hands_out_no_more_connections() {
    for drop_it in [false, true] {
        let mut ev = EventLoop::new().unwrap();
        let server = TcpServer::new().unwrap();
        server.listen("127.0.0.1", 0).unwrap();
        let port = server.server_port().unwrap();
        let holder: Rc<RefCell<Option<Rc<TcpServer>>>> = Rc::new(RefCell::new(Some(server)));
        let handed_out = Rc::new(Cell::new(0usize));
        let (count, owner) = (handed_out.clone(), holder.clone());
        holder
            .borrow()
            .as_ref()
            .unwrap()
            .new_connection
            .connect(move |_: &Rc<TcpSocket>| {
                count.set(count.get() + 1);
                if drop_it {
                    // The accept loop was still running on the server it was dropped from.
                    owner.borrow_mut().take();
                } else if let Some(server) = owner.borrow().as_ref() {
                    server.close();
                }
            })
            .release();
        // All five wait in the backlog before the loop turns, so one readiness report covers them.
        let clients: Vec<std::net::TcpStream> = (0..5)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        run_until(&mut ev, Duration::from_millis(300), || false);
        assert_eq!(handed_out.get(), 1, "drop_it {drop_it}");
        drop(clients);
    }
}

/// `listen` reads hosts as connects do: brackets only around an IPv6 address, and whole.
#[test]
fn listen_takes_brackets_only_around_a_whole_ipv6_address() {
    let _ev = EventLoop::new().unwrap();
    for bad in ["[127.0.0.1]", "[::1", "::1]", "[[::1]]"] {
        let server = TcpServer::new().unwrap();
        let result = server.listen(bad, 0);
        assert!(
            matches!(result, Err(kdnet::network::SocketError::InvalidAddress(_))),
            "{bad:?}: {result:?}"
        );
        assert!(!server.is_listening());
    }
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let server = TcpServer::new().unwrap();
        server.listen("[::1]", 0).unwrap();
        assert!(server.server_address().unwrap().is_ipv6());
    }
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Accepts connections to `port` from a std client on each of `targets`; returns each accepted
/// socket's (peer, local) address, in order.
fn accept_from(
    ev: &mut EventLoop,
    server: &TcpServer,
    targets: &[&str],
) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    let port = server.server_port().unwrap();
    let accepted: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let a = accepted.clone();
    let connection = server
        .new_connection
        .connect(move |s: &Rc<TcpSocket>| a.borrow_mut().push(s.clone()));
    let mut clients = Vec::new();
    let mut seen = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let ip: std::net::IpAddr = target.parse().unwrap();
        let client = std::net::TcpStream::connect((ip, port))
            .unwrap_or_else(|e| panic!("connecting to {target} port {port}: {e}"));
        assert!(
            run_until(ev, Duration::from_secs(5), || accepted.borrow().len()
                == i + 1),
            "the connection to {target} was not accepted"
        );
        let socket = accepted.borrow()[i].clone();
        assert_eq!(
            socket.peer_address(),
            Some(client.local_addr().unwrap()),
            "{target}"
        );
        seen.push((
            socket.peer_address().unwrap(),
            socket.local_address().unwrap(),
        ));
        clients.push(client);
    }
    connection.disconnect();
    seen
}

/// `::` listens on both families, as Qt's `QHostAddress::Any`, Go and Node do: an IPv4 client
/// is accepted and reported with its IPv4 addresses (not `::ffff:127.0.0.1`).
/// `set_ipv6_only(true)` listens for IPv6 only (Qt's `AnyIPv6`).
#[test]
fn listening_on_the_unspecified_ipv6_address_accepts_both_families() {
    if !ipv6_loopback_available() {
        return;
    }
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("::", 0).unwrap();
    let port = server.server_port().unwrap();
    let seen = accept_from(&mut ev, &server, &["127.0.0.1", "::1"]);
    assert_eq!(
        seen[0].0.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        seen[0].1,
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    );
    assert_eq!(seen[1].0.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    server.close();

    let v6_only = TcpServer::new().unwrap();
    v6_only.set_ipv6_only(true);
    v6_only.listen("::", 0).unwrap();
    let port = v6_only.server_port().unwrap();
    accept_from(&mut ev, &v6_only, &["::1"]);
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        refused.is_err(),
        "an IPv6-only server accepted IPv4: {refused:?}"
    );
}

/// `localhost` is both loopbacks (the resolver answers `[::1, 127.0.0.1]`): a server listening
/// on it accepts clients of either family on one port, so a client trying `::1` first and
/// one trying `127.0.0.1` both reach it.
#[test]
fn listening_on_localhost_accepts_both_loopback_addresses_on_one_port() {
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("localhost", 0).unwrap();
    let port = server.server_port().unwrap();
    let addresses = server.server_addresses();
    assert!(
        addresses
            .iter()
            .all(|a| a.port() == port && a.ip().is_loopback()),
        "{addresses:?}"
    );
    assert!(addresses.iter().any(|a| a.is_ipv4()), "{addresses:?}");
    if !ipv6_loopback_available() {
        assert_eq!(addresses.len(), 1);
        accept_from(&mut ev, &server, &["127.0.0.1"]);
        return;
    }
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_eq!(server.server_address(), Some(addresses[0]));
    let seen = accept_from(&mut ev, &server, &["::1", "127.0.0.1", "::1"]);
    assert_eq!(seen.len(), 3);
    // Closing stops every listener.
    server.close();
    assert!(server.server_addresses().is_empty());
    for target in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = target.parse().unwrap();
        assert!(
            std::net::TcpStream::connect((ip, port)).is_err(),
            "{target} still listens"
        );
    }
}

/// A `state_changed` slot that closes the server as it starts listening: `listening_started`
/// must not follow the `NotListening` it caused (a server that is not listening did not start).
#[test]
fn a_server_closed_from_its_state_changed_slot_does_not_announce_listening_started() {
    use kdnet::network::ServerState;
    let _ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    let events: Rc<RefCell<Vec<String>>> = Rc::default();
    let weak = Rc::downgrade(&server);
    let e = events.clone();
    // Connected first, so it also hears the nested NotListening (the closing slot, still
    // running, is skipped by that nested emit).
    server
        .state_changed
        .connect(move |state: &ServerState| e.borrow_mut().push(format!("{state:?}")))
        .release();
    server
        .state_changed
        .connect(move |state: &ServerState| {
            if *state == ServerState::Listening {
                weak.upgrade().unwrap().close();
            }
        })
        .release();
    let e = events.clone();
    server
        .listening_started
        .connect(move |_| e.borrow_mut().push("started".into()))
        .release();
    server.listen("127.0.0.1", 0).unwrap();
    assert!(!server.is_listening());
    assert_eq!(*events.borrow(), ["Listening", "NotListening"]);
}

/// `listen` refuses what no resolver can answer as `connect_to_host` does (an invalid address
/// naming the problem), without a blocking system lookup that may ask the network's name
/// servers about `localhost:8080`.
#[test]
fn listen_refuses_malformed_host_names_as_invalid_addresses() {
    let _ev = EventLoop::new().unwrap();
    for (host, reason) in [
        ("", "empty host name"),
        ("localhost:8080", "a port goes in its own argument"),
        ("a..example", "empty label"),
        ("local host", "cannot appear in a host name"),
    ] {
        let server = TcpServer::new().unwrap();
        match server.listen(host, 0) {
            Err(err @ kdnet::network::SocketError::InvalidAddress(_)) => {
                assert!(err.to_string().contains(reason), "{host:?}: {err}");
            }
            other => panic!("{host:?}: {other:?}"),
        }
        assert!(!server.is_listening());
    }
}

/// `listen` takes an internationalized name in its IDNA form, as `connect_to_host` does: the
/// full-width `ｌｏｃａｌｈｏｓｔ` is `localhost`, so the server listens on loopback (not a
/// lookup failure for the Unicode name).
#[test]
fn listen_maps_an_internationalized_name_to_its_ascii_form() {
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("ｌｏｃａｌｈｏｓｔ", 0).unwrap();
    let addresses = server.server_addresses();
    assert!(
        !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()),
        "{addresses:?}"
    );
    accept_from(&mut ev, &server, &["127.0.0.1"]);
}

/// A handler written on `TcpServer` serves, in the loop its clients run in, an `HttpClient`
/// request (a chunked body written piece by piece from `bytes_written`, then a graceful close)
/// and an `SseClient` stream (events written the same way, then a graceful close): both arrive
/// whole and in order, and the stream's end is a plain `disconnected`.
#[test]
fn a_tcp_server_handler_serves_an_http_request_and_an_event_stream_in_the_same_loop() {
    use kdnet::network::http::{HttpClient, HttpRequest};
    use kdnet::network::sse::{SseClient, SseEvent, SseWriter};

    /// What one connection still has to write, piece by piece.
    type Pieces = Rc<RefCell<std::collections::VecDeque<Vec<u8>>>>;
    fn write_next(socket: &TcpSocket, pieces: &Pieces) {
        let next = pieces.borrow_mut().pop_front();
        match next {
            Some(piece) => {
                socket.write(&piece).unwrap();
            }
            None => socket.disconnect_from_host(),
        }
    }

    let body: Vec<u8> = support::pattern(64 * 4096, 9)
        .iter()
        .map(|b| b'a' + b % 26)
        .collect();
    let events: Vec<SseEvent> = (0..50)
        .map(|i| SseEvent::new("tick", format!("event {i}")).with_id(&i.to_string()))
        .collect();
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let peers: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let (keep, body_s, events_s) = (peers.clone(), body.clone(), events.clone());
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let request = Rc::new(RefCell::new(Vec::new()));
            let pieces: Pieces = Rc::default();
            let (weak, p) = (Rc::downgrade(peer), pieces.clone());
            peer.bytes_written
                .connect(move |_| {
                    if let Some(s) = weak.upgrade() {
                        write_next(&s, &p);
                    }
                })
                .release();
            let (weak, body, events) = (Rc::downgrade(peer), body_s.clone(), events_s.clone());
            peer.ready_read
                .connect(move |_| {
                    let s = weak.upgrade().unwrap();
                    request.borrow_mut().extend_from_slice(&s.read_all());
                    let head = String::from_utf8_lossy(&request.borrow()).into_owned();
                    if !head.contains("\r\n\r\n") || !pieces.borrow().is_empty() {
                        return;
                    }
                    let mut out = pieces.borrow_mut();
                    if head.starts_with("GET /body ") {
                        out.push_back(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
                              Connection: close\r\n\r\n"
                                .to_vec(),
                        );
                        for chunk in body.chunks(4096) {
                            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
                            piece.extend_from_slice(chunk);
                            piece.extend_from_slice(b"\r\n");
                            out.push_back(piece);
                        }
                        out.push_back(b"0\r\n\r\n".to_vec());
                    } else {
                        out.push_back(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                              Cache-Control: no-cache\r\n\r\n"
                                .to_vec(),
                        );
                        let mut writer = SseWriter::new();
                        for event in &events {
                            let mut piece = Vec::new();
                            writer.write_event(&mut piece, event).unwrap();
                            out.push_back(piece);
                        }
                    }
                    drop(out);
                    write_next(&s, &pieces);
                })
                .release();
            keep.borrow_mut().push(peer.clone());
        })
        .release();
    let port = server.server_port().unwrap();

    let http = HttpClient::new().unwrap();
    let out = support::send(
        &http,
        HttpRequest::get(&format!("http://127.0.0.1:{port}/body")).unwrap(),
    );
    let response = support::wait(&mut ev, &out).expect("the response");
    assert_eq!(response.status(), 200);
    assert!(response.body() == &body[..], "body differs");

    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let got: Rc<RefCell<Vec<SseEvent>>> = Rc::default();
    let g = got.clone();
    sse.message_received
        .connect(move |e| g.borrow_mut().push(e.clone()))
        .release();
    let ended = Rc::new(Cell::new(false));
    let e = ended.clone();
    sse.disconnected.connect(move |_| e.set(true)).release();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let er = errors.clone();
    sse.error
        .connect(move |e| er.borrow_mut().push(e.to_string()))
        .release();
    sse.connect(HttpRequest::get(&format!("http://127.0.0.1:{port}/events")).unwrap());
    support::wait_until(&mut ev, || ended.get());
    assert_eq!(*got.borrow(), events, "errors {:?}", errors.borrow());
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert!(run_until(&mut ev, Duration::from_secs(10), || peers
        .borrow()
        .iter()
        .all(|p| p.state() == kdnet::network::SocketState::Unconnected)));
}

/// A burst of connections larger than what one readiness event accepts (256, so other sources
/// get their turn) is accepted in full: the server re-arms itself for the rest, which wait in
/// the backlog with no new readiness edge coming.
#[test]
fn a_burst_of_connections_beyond_one_turns_accepts_is_accepted_in_full() {
    const BURST: usize = 300;
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.set_backlog(1024);
    server.listen("127.0.0.1", 0).unwrap();
    let accepted: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let a = accepted.clone();
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| a.borrow_mut().push(peer.clone()))
        .release();
    let port = server.server_port().unwrap();
    // Every connect completes in the backlog before the loop turns once.
    let clients: Vec<std::net::TcpStream> = (0..BURST)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || accepted.borrow().len()
            == BURST),
        "{} of {BURST} accepted",
        accepted.borrow().len()
    );
    let mut locals: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    let mut peers: Vec<_> = accepted
        .borrow()
        .iter()
        .map(|s| s.peer_address().unwrap())
        .collect();
    locals.sort();
    peers.sort();
    assert_eq!(locals, peers, "each client accepted once");
}

/// KDNetwork's `TcpServer` emitted `errorOccurred` for a failed `listen` (its `setError`), and a
/// failed name lookup reached only that signal; kdnet's `listen` and `listen_on` returned the
/// error as their `Err` only, so a porter's `error_occurred` slot heard nothing. Each failure is
/// now also emitted, the same error, before `listen` returns; the state does not change
/// (`NotListening` after a failed listen, `Listening` for one on a listening server), and a
/// slot can listen again from there.
#[test]
fn a_failed_listen_is_also_emitted_as_error_occurred() {
    let _ev = EventLoop::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let server = TcpServer::new().unwrap();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l = log.clone();
    server
        .error_occurred
        .connect(move |e| l.borrow_mut().push(format!("error_occurred {e:?}")))
        .release();
    let l = log.clone();
    server
        .state_changed
        .connect(move |s| l.borrow_mut().push(format!("state {s:?}")))
        .release();
    let mut failures = vec![
        server.listen("127.0.0.1", port).unwrap_err(),
        server
            .listen_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_err(),
        server.listen("not a host", 0).unwrap_err(),
        server.listen("[127.0.0.1]", 0).unwrap_err(),
    ];
    assert_eq!(server.state(), kdnet::network::ServerState::NotListening);
    server.listen("127.0.0.1", 0).unwrap();
    failures.push(server.listen("127.0.0.1", 0).unwrap_err());
    assert!(
        server.is_listening(),
        "a listen on a listening server changes nothing"
    );
    let mut expected: Vec<String> = failures
        .iter()
        .map(|e| format!("error_occurred {e:?}"))
        .collect();
    expected.insert(4, "state Listening".to_owned());
    assert_eq!(*log.borrow(), expected);
    assert!(
        matches!(failures[0].io_kind(), Some(std::io::ErrorKind::AddrInUse)),
        "{:?}",
        failures[0]
    );

    // A slot that listens elsewhere: the server listens; the `Err` still tells of the attempt.
    let retry = TcpServer::new().unwrap();
    let weak = Rc::downgrade(&retry);
    retry
        .error_occurred
        .connect(move |_| {
            if let Some(server) = weak.upgrade() {
                server.listen("127.0.0.1", 0).unwrap();
            }
        })
        .release();
    assert!(retry.listen("127.0.0.1", port).is_err());
    assert!(retry.is_listening());
    assert_ne!(retry.server_port(), Some(port));
}
