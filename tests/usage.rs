//! kdnet used from the outside, as three kinds of users would: a C++ KDUtils porter following
//! PORTING.md row by row, a GUI developer wiring closures to signals (and embedding the loop in a
//! host loop), and an LLM streaming user reading an OpenAI-style event stream. Real loopback
//! servers only. Tests marked `#[ignore = "r6api: …"]` assert behaviour the library does not have
//! yet (each names the fix in its reason).

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdnet::bindings::{
    ConnectionBlocker, ConnectionError, ConnectionEvaluator, ConnectionHandle, Property,
    ScopedConnection, Signal,
};
use kdnet::foundation::{EventLoop, FileDescriptorNotifier, LoopError, NotificationType, Timer};
use kdnet::network::http::{
    AuthType, DEFAULT_MAX_REDIRECTS, DEFAULT_REQUEST_TIMEOUT, HttpClient, HttpCookie,
    HttpCookieJar, HttpError, HttpMethod, HttpRequest, HttpSession, RedirectPolicy, SameSitePolicy,
    StreamEvent,
};
use kdnet::network::sse::{ReadyState, SseClient, SseError, SseEvent, SseParser, SseWriter};
use kdnet::network::{
    AddressFamily, DnsResolver, ServerState, SocketError, SocketState, SslSocket, TcpServer,
    TcpSocket, TlsClientConfig, UdpSocket,
};

/// Turns `event_loop` until `done` holds; panics after 20 s so that nothing hangs.
fn spin(event_loop: &mut EventLoop, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not done within 20 s");
        event_loop
            .process_events(Some(Duration::from_millis(20)))
            .unwrap();
    }
}

/// A blocking one-connection-at-a-time HTTP server on a thread: for each request, reads the head
/// and `Content-Length` body, then writes what `answer` returns (raw bytes) and closes.
fn serve(answer: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(value) = line
                    .to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
                {
                    length = value.parse().unwrap_or(0);
                }
                let end = line == "\r\n";
                head.push_str(&line);
                if end {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut stream = stream;
            for piece in answer(&head) {
                if piece.is_empty() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                if stream.write_all(&piece).is_err() {
                    break;
                }
                let _ = stream.flush();
            }
        }
    });
    address
}

fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        .to_vec()
}

// ---- 1. the KDUtils porter, PORTING.md row by row -----------------------------------------------

/// The KDBindings table: every name it gives exists and behaves as its row says.
#[test]
fn porting_kdbindings_rows() {
    // Signal<Args...> → Signal<A>, several arguments as a tuple; emit(&args).
    let signal: Signal<(i32, String)> = Signal::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let first = signal.connect(move |(n, text)| s.borrow_mut().push(format!("a{n}{text}")));
    // connectReflective / connectSingleShot.
    let s = seen.clone();
    let reflective = signal.connect_reflective(move |handle, (n, _)| {
        s.borrow_mut().push(format!("r{n}"));
        handle.disconnect();
    });
    let s = seen.clone();
    let single = signal.connect_single_shot(move |(n, _)| s.borrow_mut().push(format!("s{n}")));
    signal.emit(&(1, "x".into()));
    signal.emit(&(2, "y".into()));
    assert_eq!(*seen.borrow(), ["a1x", "r1", "s1", "a2y"]);
    assert!(!reflective.is_active() && !single.is_active());

    // Order after disconnect + reconnect: connection order (KDB: LIFO reuse).
    seen.borrow_mut().clear();
    let s = seen.clone();
    let second = signal.connect(move |_| s.borrow_mut().push("b".into()));
    signal.disconnect(&first).unwrap();
    let s = seen.clone();
    let third = signal.connect(move |_| s.borrow_mut().push("c".into()));
    signal.emit(&(3, String::new()));
    assert_eq!(*seen.borrow(), ["b", "c"]);
    // disconnect → Result; a second disconnect is an Err (KDB throws out_of_range).
    assert_eq!(signal.disconnect(&first), Err(ConnectionError::Inactive));
    // blockConnection / isConnectionBlocked, and the handle's block/is_blocked.
    assert_eq!(signal.block_connection(&second, true), Ok(false));
    assert_eq!(signal.is_connection_blocked(&second), Ok(true));
    assert_eq!(second.block(false), Ok(true));
    assert_eq!(second.is_blocked(), Ok(false));
    assert!(second.belongs_to(&signal));
    assert_eq!(second.clone(), second);
    assert!(!ConnectionHandle::default().is_active());
    assert!(!ConnectionHandle::default().belongs_to(&signal));
    assert_eq!(signal.connection_count(), 2);
    // ConnectionBlocker restores the previous state.
    {
        let _blocker = ConnectionBlocker::new(&third).unwrap();
        assert_eq!(third.is_blocked(), Ok(true));
    }
    assert_eq!(third.is_blocked(), Ok(false));
    assert!(ConnectionBlocker::new(&first).is_err());
    // ScopedConnection: new, From, set, handle, is_active, release.
    {
        let mut scoped: ScopedConnection = signal.connect(|_| {}).into();
        assert!(scoped.is_active());
        let old = scoped.handle().clone();
        scoped.set(signal.connect(|_| {}));
        assert!(!old.is_active(), "set disconnects the previous connection");
        let kept = ScopedConnection::new(signal.connect(|_| {})).release();
        assert!(kept.is_active());
        kept.disconnect();
    }
    assert_eq!(signal.connection_count(), 2);
    // connect_weak: gone owner → disconnected at the next emit.
    let owner = Rc::new(Cell::new(0));
    let weak_handle = signal.connect_weak(&owner, |owner, (n, _)| owner.set(*n));
    signal.emit(&(4, String::new()));
    assert_eq!(owner.get(), 4);
    drop(owner);
    signal.emit(&(5, String::new()));
    assert!(!weak_handle.is_active());
    // disconnect_all inside a slot: later slots of that emit do not run.
    signal.disconnect_all();
    assert_eq!(signal.connection_count(), 0);
    assert!(!second.is_active());

    // connectDeferred + ConnectionEvaluator (evaluate_deferred_connections → usize, has_pending,
    // set_on_invocation_added).
    let evaluator = ConnectionEvaluator::new();
    let added = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = added.clone();
    evaluator.set_on_invocation_added(move || {
        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let numbers: Signal<u32> = Signal::new();
    let total = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t = total.clone();
    let deferred = numbers.connect_deferred(&evaluator, move |n| {
        t.fetch_add(*n, std::sync::atomic::Ordering::SeqCst);
    });
    numbers.emit(&4);
    numbers.emit(&5);
    assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(evaluator.has_pending());
    assert_eq!(added.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(evaluator.evaluate_deferred_connections(), 2);
    assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), 9);
    // Disconnecting removes queued invocations at once.
    numbers.emit(&100);
    deferred.disconnect();
    assert!(!evaluator.has_pending());
    assert_eq!(evaluator.evaluate_deferred_connections(), 0);

    // Property<T>: value_about_to_change (old, new), value_changed, destroyed, get, set → bool.
    let property = Property::new(1);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    property
        .value_about_to_change
        .connect(move |(old, new)| l.borrow_mut().push(format!("about {old}->{new}")))
        .release();
    let l = log.clone();
    property
        .value_changed
        .connect(move |new| l.borrow_mut().push(format!("changed {new}")))
        .release();
    let l = log.clone();
    property
        .destroyed
        .connect(move |_| l.borrow_mut().push("destroyed".into()))
        .release();
    assert!(property.set(2));
    assert!(!property.set(2), "equal values emit nothing");
    assert_eq!(property.get(), 2);
    drop(property);
    assert_eq!(*log.borrow(), ["about 1->2", "changed 2", "destroyed"]);
}

/// The KDFoundation table.
#[test]
fn porting_kdfoundation_rows() {
    let mut event_loop = EventLoop::new().unwrap();
    // A second loop on a thread → AlreadyExists.
    assert!(matches!(EventLoop::new(), Err(LoopError::AlreadyExists)));
    // A thread without a loop → NoEventLoop for loop-bound objects.
    std::thread::spawn(|| {
        assert!(matches!(Timer::new(), Err(LoopError::NoEventLoop)));
        assert!(matches!(TcpSocket::new(), Err(LoopError::NoEventLoop)));
        assert!(matches!(
            kdnet::foundation::post(|| {}),
            Err(LoopError::NoEventLoop)
        ));
    })
    .join()
    .unwrap();

    // quit before run returns at once; run returns the exit code.
    event_loop.quit();
    assert_eq!(event_loop.run(), 0);
    event_loop.exit(4);
    assert_eq!(event_loop.run(), 4);

    // processEvents(timeout): None, Some(ZERO); posted closures in order; N-at-entry.
    let order = Rc::new(RefCell::new(Vec::new()));
    for n in 0..3 {
        let o = order.clone();
        event_loop.post(move || {
            o.borrow_mut().push(n);
            if n == 0 {
                let o = o.clone();
                kdnet::foundation::post(move || o.borrow_mut().push(9)).unwrap();
            }
        });
    }
    let ran = event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran, 3);
    assert_eq!(*order.borrow(), [0, 1, 2]);
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(*order.borrow(), [0, 1, 2, 9]);
    assert_eq!(event_loop.dispatch_depth(), 0);

    // LoopHandle: Send + Sync + Clone; post, wake_up, is_alive, quit from another thread.
    let handle = event_loop.handle();
    fn assert_send_sync<T: Send + Sync + Clone>(_: &T) {}
    assert_send_sync(&handle);
    assert!(handle.is_alive());
    handle.wake_up();
    let h = handle.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        h.post(|| {}).unwrap();
        h.exit(6);
    });
    assert_eq!(event_loop.run(), 6);

    // Timer: interval Property<Duration>, single_shot, running; start/start_with/stop/remaining.
    let timer = Timer::new().unwrap();
    assert_eq!(timer.interval.get(), Duration::ZERO);
    assert!(!timer.single_shot.get() && !timer.running.get());
    timer.single_shot.set(true);
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    timer.timeout.connect(move |_| f.set(f.get() + 1)).release();
    timer.start(); // zero interval fires on the next turn (KDU never fires, D4)
    spin(&mut event_loop, || fired.get() == 1);
    assert!(!timer.running.get());
    timer.start_with(Duration::from_secs(60));
    assert!(timer.remaining().unwrap() > Duration::from_secs(50));
    timer.stop();
    assert_eq!(timer.remaining(), None);
    assert!(event_loop.timer_count() >= 1);

    // createTimeout(f, ms) → create_timeout(delay, f); setTimeout/cancelTimer/isTimerActive.
    let hit = Rc::new(Cell::new(false));
    let h = hit.clone();
    let once = Timer::create_timeout(Duration::from_millis(1), move || h.set(true)).unwrap();
    assert!(once.running.get());
    let recurring = Timer::create_recurring(Duration::from_secs(60), || {}).unwrap();
    assert!(recurring.running.get());
    spin(&mut event_loop, || hit.get());
    let id = Timer::set_timeout(Duration::from_secs(60), || {}).unwrap();
    assert!(id.as_u64() > 0);
    assert!(Timer::is_timer_active(id));
    assert!(Timer::cancel_timer(id));
    assert!(!Timer::cancel_timer(id));
    let _ = Timer::set_recurring(Duration::from_secs(60), || {}).unwrap();
    assert_eq!(Timer::cancel_all_timers(), 1);

    // FileDescriptorNotifier(fd, type): enabled on creation, triggered(fd), set_enabled,
    // DuplicateNotifier for a second one of the same type.
    let (mut writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    use std::os::fd::AsRawFd;
    let notifier = FileDescriptorNotifier::new(reader.as_raw_fd(), NotificationType::Read).unwrap();
    assert!(notifier.is_enabled());
    assert_eq!(notifier.fd(), reader.as_raw_fd());
    assert_eq!(notifier.kind(), NotificationType::Read);
    assert!(matches!(
        FileDescriptorNotifier::new(reader.as_raw_fd(), NotificationType::Read),
        Err(LoopError::DuplicateNotifier { .. })
    ));
    let triggered = Rc::new(Cell::new(None));
    let t = triggered.clone();
    notifier
        .triggered
        .connect(move |fd| t.set(Some(*fd)))
        .release();
    writer.write_all(b"x").unwrap();
    spin(&mut event_loop, || triggered.get().is_some());
    assert_eq!(triggered.get(), Some(reader.as_raw_fd()));
    assert_eq!(event_loop.registered_sources(), 1);
    notifier.set_enabled(false).unwrap();
    assert!(!notifier.is_enabled());
    assert_eq!(
        event_loop.registered_sources(),
        0,
        "disabling unregisters, as in KDU"
    );
    // The evaluator each loop owns.
    let _evaluator: Arc<ConnectionEvaluator> = event_loop.connection_evaluator();
}

/// The KDNetwork socket, DNS and UDP rows.
#[test]
fn porting_socket_rows() {
    let mut event_loop = EventLoop::new().unwrap();
    // TcpServer: listen(host, port), state, server_port, listening_started, state_changed,
    // new_connection (keep the Rc), a second listen → InvalidState.
    let server = TcpServer::new().unwrap();
    let states = Rc::new(RefCell::new(Vec::new()));
    let s = states.clone();
    server
        .state_changed
        .connect(move |state| s.borrow_mut().push(*state))
        .release();
    let started = Rc::new(Cell::new(false));
    let st = started.clone();
    server
        .listening_started
        .connect(move |_| st.set(true))
        .release();
    assert_eq!(server.state(), ServerState::NotListening);
    server.listen("127.0.0.1", 0).unwrap();
    assert!(server.is_listening() && started.get());
    assert_eq!(*states.borrow(), [ServerState::Listening]);
    assert!(matches!(
        server.listen("127.0.0.1", 0),
        Err(SocketError::InvalidState(_))
    ));
    let port = server.server_port().unwrap();
    assert_eq!(server.server_address().unwrap().port(), port);
    let accepted: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let a = accepted.clone();
    server
        .new_connection
        .connect(move |peer| {
            // An echo server: what arrives goes back.
            let weak = Rc::downgrade(peer);
            peer.ready_read
                .connect(move |_| {
                    if let Some(peer) = weak.upgrade() {
                        let data = peer.read_all();
                        peer.write(&data).unwrap();
                    }
                })
                .release();
            a.borrow_mut().push(peer.clone());
        })
        .release();

    // TcpSocket: write before connected is queued (T6); state_changed HostLookup → Connecting →
    // Connected; bytes_written; ready_read and bytes_received.
    let socket = TcpSocket::new().unwrap();
    assert_eq!(socket.state(), SocketState::Unconnected);
    let socket_states = Rc::new(RefCell::new(Vec::new()));
    let s = socket_states.clone();
    socket
        .state_changed
        .connect(move |state| s.borrow_mut().push(*state))
        .release();
    let received = Rc::new(RefCell::new(Vec::new()));
    let r = received.clone();
    let weak = Rc::downgrade(&socket);
    socket
        .ready_read
        .connect(move |_| {
            if let Some(socket) = weak.upgrade() {
                r.borrow_mut().extend_from_slice(&socket.read_all());
            }
        })
        .release();
    let counted = Rc::new(Cell::new(0usize));
    let c = counted.clone();
    socket
        .bytes_received
        .connect(move |n| c.set(c.get() + n))
        .release();
    let written = Rc::new(Cell::new(0usize));
    let w = written.clone();
    socket
        .bytes_written
        .connect(move |n| w.set(w.get() + n))
        .release();
    socket.connect_to_host("localhost", port).unwrap();
    assert_eq!(socket.write(b"hello").unwrap(), 5);
    spin(&mut event_loop, || received.borrow().len() == 5);
    assert_eq!(&received.borrow()[..], b"hello");
    assert_eq!(counted.get(), 5);
    assert_eq!(written.get(), 5);
    assert_eq!(socket.bytes_to_write(), 0);
    assert_eq!(socket.bytes_available(), 0);
    assert_eq!(socket.peer_port(), Some(port));
    assert!(socket.local_port().is_some() && socket.peer_address().is_some());
    assert_eq!(socket.state(), SocketState::Connected);
    assert!(
        socket_states
            .borrow()
            .ends_with(&[SocketState::Connecting, SocketState::Connected])
    );
    socket.set_no_delay(true).unwrap();
    socket.set_keep_alive(true).unwrap();
    assert!(socket.last_error().is_none());
    // disconnect_from_host flushes queued writes first, state Closing meanwhile.
    let disconnected = Rc::new(Cell::new(false));
    let d = disconnected.clone();
    socket.disconnected.connect(move |_| d.set(true)).release();
    socket.write(b"bye").unwrap();
    socket.disconnect_from_host();
    spin(&mut event_loop, || disconnected.get());
    assert_eq!(socket.state(), SocketState::Unconnected);

    // error_occurred: the socket is already Unconnected when it is emitted, so a slot may connect
    // again. A refused connect.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let failing = TcpSocket::new().unwrap();
    let error = Rc::new(RefCell::new(None));
    let e = error.clone();
    let weak = Rc::downgrade(&failing);
    failing
        .error_occurred
        .connect(move |err| {
            let state = weak.upgrade().map(|s| s.state());
            *e.borrow_mut() = Some((err.clone(), state));
        })
        .release();
    failing
        .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), closed_port)
        .unwrap();
    spin(&mut event_loop, || error.borrow().is_some());
    let (err, state) = error.borrow().clone().unwrap();
    assert_eq!(state, Some(SocketState::Unconnected));
    assert!(err.io_kind().is_some(), "{err}");
    assert_eq!(
        failing.last_error().map(|e| e.to_string()),
        Some(err.to_string())
    );

    // UdpSocket: bind, write_datagram(data, ip, port), read_datagram, ready_read.
    let udp_a = UdpSocket::new().unwrap();
    let udp_b = UdpSocket::new().unwrap();
    udp_a.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    udp_b.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(udp_a.is_bound());
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let weak = Rc::downgrade(&udp_b);
    udp_b
        .ready_read
        .connect(move |_| {
            if let Some(udp) = weak.upgrade() {
                while let Some(datagram) = udp.read_datagram() {
                    *g.borrow_mut() = Some(datagram);
                }
            }
        })
        .release();
    let to = udp_b.local_address().unwrap();
    udp_a.write_datagram(b"ping", to.ip(), to.port()).unwrap();
    spin(&mut event_loop, || got.borrow().is_some());
    let (data, from) = got.borrow().clone().unwrap();
    assert_eq!(data, b"ping");
    assert_eq!(from, udp_a.local_address().unwrap());
    assert!(!udp_b.has_pending_datagrams());
    assert_eq!(udp_b.dropped_datagram_count(), 0);
    udp_a.close();

    // DnsResolver::instance(), lookup: the callback runs on a later turn, never inside lookup.
    let resolver = DnsResolver::instance().unwrap();
    let answer = Rc::new(RefCell::new(None));
    let an = answer.clone();
    let _id = resolver.lookup("localhost", move |result| *an.borrow_mut() = Some(result));
    assert!(answer.borrow().is_none());
    spin(&mut event_loop, || answer.borrow().is_some());
    let addresses = answer.borrow_mut().take().unwrap().unwrap();
    assert!(addresses.iter().all(|ip| ip.is_loopback()), "{addresses:?}");
    let an = answer.clone();
    resolver.lookup_family("localhost", AddressFamily::IPv4, move |result| {
        *an.borrow_mut() = Some(result)
    });
    spin(&mut event_loop, || answer.borrow().is_some());
    assert!(
        answer
            .borrow_mut()
            .take()
            .unwrap()
            .unwrap()
            .iter()
            .all(IpAddr::is_ipv4)
    );
    let id = resolver.lookup("localhost.", |_| {
        panic!("cancelled lookups never call back")
    });
    assert!(resolver.cancel(id));
    resolver.cancel_lookups();
    assert_eq!(
        kdnet::network::dns::DEFAULT_LOOKUP_TIMEOUT,
        Duration::from_secs(10)
    );

    // SslSocket derefs to TcpSocket; TlsClientConfig; the TLS knobs PORTING names.
    let mut config = TlsClientConfig::new();
    config.set_alpn_protocols(vec![b"http/1.1".to_vec()]);
    assert!(config.verifies_certificates());
    let ssl = SslSocket::with_config(config).unwrap();
    ssl.set_peer_verify_name("example.com");
    ssl.set_handshake_timeout(Some(Duration::from_secs(5)));
    let _: &Signal<()> = &ssl.connected; // through Deref
    let _: &Signal<()> = &ssl.handshake_completed;
    let _: &Signal<SocketError> = &ssl.handshake_error;
    let _: &Rc<TcpSocket> = ssl.tcp_socket();
    assert!(!ssl.is_encrypted());
    assert!(ssl.peer_certificate_chain().is_empty());
    assert_eq!(
        kdnet::network::tcp::DEFAULT_HANDSHAKE_TIMEOUT,
        Duration::from_secs(30)
    );
    assert_eq!(kdnet::network::tcp::DEFAULT_BACKLOG, 128);
    assert_eq!(
        kdnet::network::tcp::DEFAULT_READ_BUFFER_LIMIT,
        4 * 1024 * 1024
    );
    assert_eq!(
        kdnet::network::tcp::CONNECTION_ATTEMPT_DELAY,
        Duration::from_millis(250)
    );
    assert_eq!(kdnet::network::udp::DEFAULT_MAX_PENDING_DATAGRAMS, 1024);
    assert_eq!(
        kdnet::network::udp::DEFAULT_MAX_PENDING_BYTES,
        4 * 1024 * 1024
    );
    server.close();
    assert_eq!(server.state(), ServerState::NotListening);
}

/// The KDNetwork HTTP rows: request, response, session, cookie and client names and defaults.
#[test]
fn porting_http_rows() {
    let mut event_loop = EventLoop::new().unwrap();
    // HttpRequest defaults as KDN: GET, 30 s, FollowAll, 5 redirects, common headers on.
    let mut request = HttpRequest::new("http://user:pw@127.0.0.1:1/a?b=c#frag").unwrap();
    assert_eq!(*request.method(), HttpMethod::Get);
    assert_eq!(request.timeout(), Some(DEFAULT_REQUEST_TIMEOUT));
    assert_eq!(DEFAULT_REQUEST_TIMEOUT, Duration::from_secs(30));
    assert_eq!(request.redirect_policy(), RedirectPolicy::FollowAll);
    assert_eq!(request.max_redirects(), DEFAULT_MAX_REDIRECTS);
    assert_eq!(DEFAULT_MAX_REDIRECTS, 5);
    assert!(request.auto_add_common_headers());
    // URL user info → Basic auth, removed from the URL.
    assert_eq!(request.auth_type(), AuthType::Basic);
    assert_eq!(request.url().username(), "");
    assert_eq!(request.header("authorization"), Some("Basic dXNlcjpwdw=="));
    request.set_bearer_auth("tok");
    assert_eq!(request.auth_type(), AuthType::Bearer);
    request.add_header("X-A", "1");
    request.add_header("x-a", "2");
    assert_eq!(request.header_values("X-a").collect::<Vec<_>>(), ["1", "2"]);
    request.set_header("X-A", "3");
    assert_eq!(request.header_values("X-a").collect::<Vec<_>>(), ["3"]);
    assert!(request.remove_header("x-A") && !request.has_header("X-A"));
    request.set_method("PROPFIND".parse().unwrap());
    assert_eq!(request.method().as_str(), "PROPFIND");
    assert!(HttpMethod::Put.is_idempotent() && !HttpMethod::Post.is_safe());
    assert!(HttpRequest::new("ftp://x/").is_err());
    let connect = HttpRequest::get("http://127.0.0.1:1/")
        .unwrap()
        .with_method(HttpMethod::Connect);
    assert!(matches!(
        connect.validate(),
        Err(HttpError::InvalidRequest(_))
    ));

    // HttpSession defaults.
    let session = HttpSession::new();
    assert_eq!(
        session.user_agent(),
        Some(kdnet::network::http::DEFAULT_USER_AGENT)
    );
    assert!(kdnet::network::http::DEFAULT_USER_AGENT.starts_with("kdnet/"));
    assert_eq!(session.default_header("accept"), Some("*/*"));
    assert_eq!(session.connect_timeout(), Duration::from_secs(30));
    assert_eq!(session.idle_connection_timeout(), Duration::from_secs(60));
    assert_eq!(session.max_connections_per_host(), 6);
    assert!(session.follow_redirects());
    assert_eq!(session.max_redirects(), 5);
    assert_eq!(session.max_response_head_bytes(), 64 * 1024);
    assert_eq!(session.max_response_headers(), 100);
    assert_eq!(session.max_response_body_bytes(), 1 << 30);
    assert!(session.verifies_certificates());

    // Cookies.
    let url = url::Url::parse("https://example.com/test/page").unwrap();
    let cookie = HttpCookie::from_set_cookie_header(
        "n=v; Domain=.example.com; Path=/test; Secure; HttpOnly; SameSite=Strict",
        &url,
    )
    .unwrap();
    assert_eq!(cookie.domain, "example.com");
    assert_eq!(cookie.path, "/test");
    assert!(cookie.secure && cookie.http_only && !cookie.host_only);
    assert_eq!(cookie.same_site, SameSitePolicy::Strict);
    assert_eq!(cookie.to_cookie_header(), "n=v");
    assert!(cookie.is_session_cookie() && !cookie.is_expired());
    assert!(cookie.matches_url(&url::Url::parse("https://a.example.com/test/x").unwrap()));
    assert_eq!(SameSitePolicy::from_attribute("lax"), SameSitePolicy::Lax);
    assert_eq!(SameSitePolicy::None.as_str(), "None");
    let mut jar = HttpCookieJar::new();
    assert!(jar.insert_cookie(cookie.clone(), &url));
    assert!(
        !jar.insert_cookie(cookie.clone(), &url),
        "duplicate insert rejected"
    );
    let mut changed = cookie.clone();
    changed.value = "w".into();
    assert!(jar.update_cookie(changed, &url));
    assert_eq!(jar.cookie_header_for_url(&url).as_deref(), Some("n=w"));
    jar.store_response_cookies(&url, ["m=1"]);
    assert_eq!(jar.len(), 2);
    assert_eq!(jar.remove_cookies("m", "example.com"), 1);
    assert_eq!(jar.remove_expired_cookies(), 0);
    jar.clear();
    assert!(jar.is_empty());

    // HttpClient: callbacks never run inside send; a bad URL is Err(InvalidUrl) on a later turn.
    let client = HttpClient::new().unwrap();
    let result = Rc::new(RefCell::new(None));
    let r = result.clone();
    client.get("not a url", move |outcome| *r.borrow_mut() = Some(outcome));
    assert!(result.borrow().is_none());
    spin(&mut event_loop, || result.borrow().is_some());
    assert!(matches!(
        result.borrow_mut().take().unwrap(),
        Err(HttpError::InvalidUrl { .. })
    ));

    // A real exchange: get, response_received after the callback, status()/reason()/body().
    let address = serve(|_| {
        vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi".to_vec()]
    });
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    client
        .response_received
        .connect(move |response| o.borrow_mut().push(format!("signal {}", response.status())))
        .release();
    let o = order.clone();
    let id = client.get(&format!("http://{address}/x"), move |outcome| {
        let response = outcome.unwrap();
        assert_eq!(response.reason(), "OK");
        assert_eq!(response.version().as_str(), "HTTP/1.1");
        assert_eq!(response.text(), "hi");
        assert_eq!(response.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(response.content_length(), Some(2));
        assert!(response.is_success() && response.is_successful() && !response.is_keep_alive());
        assert_eq!(response.redirect_count(), 0);
        o.borrow_mut().push("callback".into());
    });
    assert_eq!(client.pending_requests(), 1);
    let _ = id;
    spin(&mut event_loop, || order.borrow().len() == 2);
    assert_eq!(*order.borrow(), ["callback", "signal 200"]);
    assert_eq!(client.pending_requests(), 0);
}

// ---- 2. the GUI application developer -----------------------------------------------------------

/// A window-ish object: a title property, a click signal, a status label updated from a slot.
struct Window {
    title: Property<String>,
    clicked: Signal<u32>,
    status: RefCell<String>,
}

/// Closures on signals, properties, `run()`, quit from a slot; objects dropped from their own
/// slots (a timer, a socket, an SSE client, an HTTP client) without a panic or a hang.
#[test]
fn gui_app_slots_properties_quit_and_drops_from_slots() {
    let mut event_loop = EventLoop::new().unwrap();
    let window = Rc::new(Window {
        title: Property::new("untitled".to_string()),
        clicked: Signal::new(),
        status: RefCell::new(String::new()),
    });
    // A slot that refers to its emitter's owner: connect_weak, no cycle.
    window
        .title
        .value_changed
        .connect_weak(&window, |window, title| {
            *window.status.borrow_mut() = format!("title is now {title}")
        })
        .release();
    window
        .clicked
        .connect_weak(&window, |window, n| {
            window.title.set(format!("clicked {n} times"));
        })
        .release();

    // A self-dropping timer: the slot drops the last Rc of the timer that is emitting.
    let holder: Rc<RefCell<Option<Rc<Timer>>>> = Rc::default();
    let timer = Timer::create_recurring(Duration::from_millis(5), {
        let holder = holder.clone();
        let window = Rc::downgrade(&window);
        let clicks = Cell::new(0);
        move || {
            clicks.set(clicks.get() + 1);
            if let Some(window) = window.upgrade() {
                window.clicked.emit(&clicks.get());
            }
            if clicks.get() == 3 {
                holder.borrow_mut().take(); // drops the timer from its own slot
            }
        }
    })
    .unwrap();
    *holder.borrow_mut() = Some(timer);

    // An SSE client dropped from its own message slot; then quit from a slot.
    let address = serve(|_| {
        vec![
            sse_head(),
            b"data: one\n\n".to_vec(),
            Vec::new(),
            b"data: two\n\n".to_vec(),
            Vec::new(),
            Vec::new(),
        ]
    });
    let sse_holder: Rc<RefCell<Option<Rc<SseClient>>>> = Rc::default();
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let got = Rc::new(RefCell::new(Vec::new()));
    {
        let sse_holder = sse_holder.clone();
        let got = got.clone();
        let handle = event_loop.handle();
        sse.message_received
            .connect(move |event| {
                got.borrow_mut().push(event.data().to_string());
                sse_holder.borrow_mut().take(); // the last Rc, from inside its emit
                handle.quit();
            })
            .release();
    }
    sse.connect(HttpRequest::get(&format!("http://{address}/events")).unwrap());
    *sse_holder.borrow_mut() = Some(sse);
    assert_eq!(event_loop.run(), 0);
    assert_eq!(*got.borrow(), ["one"]);
    assert!(sse_holder.borrow().is_none());

    // An HTTP client dropped from its own request callback.
    let address = serve(|_| vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()]);
    let client_holder: Rc<RefCell<Option<Rc<HttpClient>>>> = Rc::default();
    let client = HttpClient::new().unwrap();
    let done = Rc::new(Cell::new(false));
    {
        let client_holder = client_holder.clone();
        let done = done.clone();
        client.get(&format!("http://{address}/"), move |result| {
            assert_eq!(result.unwrap().body().as_ref(), b"ok");
            client_holder.borrow_mut().take();
            done.set(true);
        });
    }
    *client_holder.borrow_mut() = Some(client);
    spin(&mut event_loop, || done.get());

    // A socket dropped from its own ready_read slot, with the peer still sending.
    let address = serve(|_| vec![b"x".repeat(100_000)]);
    let socket_holder: Rc<RefCell<Option<Rc<TcpSocket>>>> = Rc::default();
    let socket = TcpSocket::new().unwrap();
    let reads = Rc::new(Cell::new(0));
    {
        let socket_holder = socket_holder.clone();
        let reads = reads.clone();
        socket
            .ready_read
            .connect(move |_| {
                reads.set(reads.get() + 1);
                socket_holder.borrow_mut().take();
            })
            .release();
    }
    socket
        .connect_to_address(address.ip(), address.port())
        .unwrap();
    socket.write(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    *socket_holder.borrow_mut() = Some(socket);
    spin(&mut event_loop, || reads.get() == 1);
    event_loop
        .process_events(Some(Duration::from_millis(50)))
        .unwrap();
    assert_eq!(reads.get(), 1);
    assert_eq!(
        event_loop.registered_sources(),
        0,
        "the dropped socket left the poller"
    );

    // The self-dropping timer clicked three times, each click updating title and status.
    spin(&mut event_loop, || holder.borrow().is_none());
    assert_eq!(window.title.get(), "clicked 3 times");
    assert_eq!(*window.status.borrow(), "title is now clicked 3 times");
    assert_eq!(event_loop.timer_count(), 0);
    // The window's own signals hold only weak references to it.
    let weak = Rc::downgrade(&window);
    drop(window);
    assert!(weak.upgrade().is_none());
}

/// A host loop (here a second mio poller, edge-triggered as winit's and mio's are) embedding
/// kdnet as `EventLoop`'s docs say: watch `as_raw_fd()`, sleep at most `next_timeout()`, call
/// `process_events(Some(ZERO))`, re-read `next_timeout()`. Timers, posts from other threads and
/// a 4 MiB download must all arrive, without the host spinning.
#[test]
fn gui_embedding_in_a_host_loop_through_fd_and_next_timeout() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Poll::new().unwrap();
    let fd = event_loop.as_raw_fd();
    host.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);

    // Work: a timer, a post from another thread after 100 ms, and a 4 MiB download.
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let _timer = Timer::create_timeout(Duration::from_millis(30), move || f.set(true)).unwrap();
    let posted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = event_loop.handle();
    let p = posted.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        handle
            .post(move || p.store(true, std::sync::atomic::Ordering::SeqCst))
            .unwrap();
    });
    const SIZE: usize = 4 * 1024 * 1024;
    let address = serve(|_| {
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
        reply.extend(std::iter::repeat_n(b'z', SIZE));
        vec![reply]
    });
    let client = HttpClient::new().unwrap();
    let body_len = Rc::new(Cell::new(None));
    let b = body_len.clone();
    client.get(&format!("http://{address}/big"), move |result| {
        b.set(Some(result.unwrap().body().len()))
    });

    let started = Instant::now();
    let mut host_wakeups = 0u32;
    let mut stalls = 0u32;
    while !(fired.get()
        && posted.load(std::sync::atomic::Ordering::SeqCst)
        && body_len.get().is_some())
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the host stalled: timer {} post {} body {:?}; next_timeout {:?}",
            fired.get(),
            posted.load(std::sync::atomic::Ordering::SeqCst),
            body_len.get(),
            event_loop.next_timeout()
        );
        // Sleep at most 1 s beyond what kdnet asks for, so a stall shows as a failure above
        // rather than as a hang.
        let asked = event_loop.next_timeout();
        let timeout = asked.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1)));
        host.poll(&mut events, Some(timeout)).unwrap();
        host_wakeups += 1;
        let ran = event_loop.process_events(Some(Duration::ZERO)).unwrap();
        if ran > 0 && events.is_empty() && asked.is_none_or(|t| t > Duration::from_secs(1)) {
            stalls += 1; // kdnet had work but neither the fd nor next_timeout said so
        }
    }
    assert_eq!(body_len.get(), Some(SIZE));
    assert!(
        host_wakeups < 5_000,
        "the host spun: {host_wakeups} wake-ups"
    );
    assert_eq!(stalls, 0, "the host slept through kdnet's work");
}

/// Embedding with an edge-triggered host (mio, tokio's `AsyncFd`) when more sources are ready at
/// once than one turn polls (256): the rest must show, through the fd or `next_timeout() ==
/// Some(ZERO)`, or the host sleeps while datagrams wait.
#[test]
fn gui_embedding_edge_triggered_host_with_more_ready_sources_than_one_poll() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Poll::new().unwrap();
    let fd = event_loop.as_raw_fd();
    host.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);

    const SOCKETS: usize = 400;
    let received = Rc::new(Cell::new(0usize));
    let sockets: Vec<Rc<UdpSocket>> = (0..SOCKETS)
        .map(|_| {
            let socket = UdpSocket::new().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let weak = Rc::downgrade(&socket);
            let r = received.clone();
            socket
                .ready_read
                .connect(move |_| {
                    if let Some(socket) = weak.upgrade() {
                        while socket.read_datagram().is_some() {
                            r.set(r.get() + 1);
                        }
                    }
                })
                .release();
            socket
        })
        .collect();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in &sockets {
        sender
            .send_to(b"d", socket.local_address().unwrap())
            .unwrap();
    }
    let started = Instant::now();
    let mut stalls = 0;
    while received.get() < SOCKETS && started.elapsed() < Duration::from_secs(5) {
        let asked = event_loop.next_timeout();
        let timeout = asked.map_or(Duration::from_millis(500), |t| {
            t.min(Duration::from_millis(500))
        });
        host.poll(&mut events, Some(timeout)).unwrap();
        let ran = event_loop.process_events(Some(Duration::ZERO)).unwrap();
        if ran > 0 && events.is_empty() && asked.is_none() {
            stalls += 1; // datagrams were waiting, and nothing told the host
        }
    }
    assert_eq!(received.get(), SOCKETS);
    assert_eq!(stalls, 0, "the host slept while datagrams were waiting");
}

// ---- 3. the LLM streaming user ------------------------------------------------------------------

/// One Responses API event as a server sends it.
fn responses_event(kind: &str, json: &str) -> Vec<u8> {
    format!("event: {kind}\ndata: {json}\n\n").into_bytes()
}

/// A Responses API stream: created, three text deltas, completed; the server then keeps the
/// connection open (as a proxy may).
fn responses_stream() -> Vec<Vec<u8>> {
    let mut pieces = vec![sse_head()];
    pieces.push(responses_event(
        "response.created",
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress"}}"#,
    ));
    for (n, delta) in ["Hel", "lo, ", "wörld"].iter().enumerate() {
        pieces.push(responses_event(
            "response.output_text.delta",
            &format!(
                r#"{{"type":"response.output_text.delta","sequence_number":{},"item_id":"msg_1","output_index":0,"content_index":0,"delta":"{delta}","logprobs":[]}}"#,
                n + 1
            ),
        ));
        pieces.push(Vec::new()); // a pause
    }
    pieces.push(responses_event(
        "response.completed",
        r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","status":"completed"}}"#,
    ));
    for _ in 0..40 {
        pieces.push(Vec::new()); // 2 s of silence before the server hangs up
    }
    pieces
}

/// What an LLM user records from one stream.
#[derive(Default, Debug)]
struct Transcript {
    text: String,
    events: Vec<String>,
    errors: Vec<SseError>,
    disconnected: usize,
    /// `state_changed(Closed)` (with auto reconnect off: the end of every outcome).
    closed: usize,
    states_at_error: Vec<ReadyState>,
}

/// Wires an `SseClient` as the README and `openai_chat` teach: auto reconnect off, one listener
/// per event type, `error` and `state_changed(Closed)` for the outcome (`disconnected` pairs with
/// `connected`: a refused request never opened).
fn llm_client(transcript: &Rc<RefCell<Transcript>>) -> Rc<SseClient> {
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let t = transcript.clone();
    sse.add_event_listener("response.output_text.delta", move |event| {
        // The data is JSON; the text is its "delta" string (no JSON crate here: the test data has
        // no escapes).
        let data = event.data();
        let start = data.find(r#""delta":""#).unwrap() + 9;
        let end = start + data[start..].find('"').unwrap();
        t.borrow_mut().text.push_str(&data[start..end]);
    })
    .release();
    let t = transcript.clone();
    sse.message_received
        .connect(move |event| t.borrow_mut().events.push(event.event_type().to_string()))
        .release();
    let t = transcript.clone();
    let me = Rc::downgrade(&sse);
    sse.error
        .connect(move |error| {
            let state = me.upgrade().map_or(ReadyState::Closed, |s| s.ready_state());
            let mut t = t.borrow_mut();
            t.errors.push(error.clone());
            t.states_at_error.push(state);
        })
        .release();
    let t = transcript.clone();
    sse.disconnected
        .connect(move |_| t.borrow_mut().disconnected += 1)
        .release();
    let t = transcript.clone();
    sse.state_changed
        .connect(move |state| {
            if *state == ReadyState::Closed {
                t.borrow_mut().closed += 1;
            }
        })
        .release();
    sse
}

fn openai_request(address: SocketAddr) -> HttpRequest {
    let mut request = HttpRequest::post(
        &format!("http://{address}/v1/responses"),
        r#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#,
    )
    .unwrap()
    .with_header("Content-Type", "application/json");
    request.set_bearer_auth("sk-test");
    request
}

/// The happy path: the text arrives delta by delta, `response.completed` ends the answer, the
/// user disconnects from that slot, the server saw exactly one POST with the key and
/// `Accept: text/event-stream`.
#[test]
fn llm_streams_a_responses_api_answer_and_stops_at_completed() {
    let mut event_loop = EventLoop::new().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heads.clone();
    let address = serve(move |head| {
        h.lock().unwrap().push(head.to_string());
        responses_stream()
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let me = Rc::downgrade(&sse);
    sse.add_event_listener("response.completed", move |_| {
        if let Some(sse) = me.upgrade() {
            sse.disconnect();
        }
        d.set(true);
    })
    .release();
    sse.connect(openai_request(address));
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    let started = Instant::now();
    spin(&mut event_loop, || done.get());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped at completed, not at EOF"
    );
    let t = transcript.borrow();
    assert_eq!(t.text, "Hello, wörld");
    assert_eq!(
        t.events,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    assert!(t.errors.is_empty());
    assert_eq!(t.disconnected, 1);
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("post /v1/responses http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("authorization: bearer sk-test\r\n"));
    assert!(head.contains("accept: text/event-stream\r\n"));
    assert!(head.contains("content-type: application/json\r\n"));
}

/// 401, 429 and 500 with OpenAI's JSON error bodies: one fatal `BadStatus` each, carrying the
/// body so that the API's own message can be shown; the client is `Closed` when `error` is
/// emitted, no second request is sent (the prompt is not asked again), and — as `SseClient`'s
/// doc example promises — `state_changed(Closed)` comes, so a slot on it ends every outcome
/// (`disconnected` does not: the stream never opened).
#[test]
fn llm_refused_requests_are_fatal_errors_with_the_api_message() {
    let mut event_loop = EventLoop::new().unwrap();
    for (status, reason, message) in [
        (401, "Unauthorized", "Incorrect API key provided: sk-test."),
        (
            429,
            "Too Many Requests",
            "Rate limit reached for gpt-4o-mini",
        ),
        (500, "Internal Server Error", "The server had an error."),
    ] {
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = requests.clone();
        let address = serve(move |_| {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = format!(
                r#"{{"error":{{"message":"{message}","type":"invalid_request_error","code":null}}}}"#
            );
            vec![format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        });
        let transcript = Rc::new(RefCell::new(Transcript::default()));
        let sse = llm_client(&transcript);
        sse.connect(openai_request(address));
        spin(&mut event_loop, || transcript.borrow().closed > 0);
        event_loop
            .process_events(Some(Duration::from_millis(1500)))
            .unwrap();
        let t = transcript.borrow();
        assert_eq!(t.errors.len(), 1, "{status}: {:?}", t.errors);
        match &t.errors[0] {
            SseError::BadStatus { status: got, body } => {
                assert_eq!(*got, status);
                assert!(body.contains(message), "{body}");
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(t.errors[0].is_fatal());
        assert!(t.errors[0].to_string().contains(&status.to_string()));
        assert_eq!(t.states_at_error, [ReadyState::Closed]);
        assert_eq!((t.closed, t.disconnected), (1, 0));
        assert!(t.events.is_empty());
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{status}"
        );
    }
}

/// No server at all, and a host that does not resolve: the same shape of outcome (`Closed`,
/// one error), so that the doc example's "`state_changed(Closed)` ends every outcome" holds;
/// no `disconnected`, as no stream opened.
#[test]
fn llm_unreachable_server_ends_closed_with_one_error() {
    let mut event_loop = EventLoop::new().unwrap();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    sse.connect(openai_request(closed_port));
    spin(&mut event_loop, || transcript.borrow().closed > 0);
    let t = transcript.borrow();
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(!t.errors[0].to_string().is_empty());
    assert_eq!(t.states_at_error, [ReadyState::Closed]);
    assert_eq!((t.closed, t.disconnected), (1, 0));
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

/// The stream breaks in the middle of an event (chunked body cut mid-chunk): the half event is
/// never dispatched, one non-fatal error names the cut, the client closes (auto reconnect off)
/// and no second request is sent.
#[test]
fn llm_stream_cut_mid_event_is_reported_and_not_retried() {
    let mut event_loop = EventLoop::new().unwrap();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = requests.clone();
    let address = serve(move |_| {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let whole = responses_event(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
        );
        let half = b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\" wor";
        let mut body = format!("{:x}\r\n", whole.len()).into_bytes();
        body.extend_from_slice(&whole);
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(format!("{:x}\r\n", half.len() + 10).as_bytes());
        body.extend_from_slice(half);
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            body,
            Vec::new(),
        ]
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    sse.connect(openai_request(address));
    spin(&mut event_loop, || transcript.borrow().closed > 0);
    event_loop
        .process_events(Some(Duration::from_millis(300)))
        .unwrap();
    let t = transcript.borrow();
    assert_eq!(t.text, "Hi");
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(!t.errors[0].is_fatal());
    assert_eq!(t.states_at_error, [ReadyState::Closed]);
    assert_eq!(t.disconnected, 1);
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An `error` *event* in the stream (the Responses API's in-band failure) arrives as an event of
/// type "error" through `add_event_listener("error", …)` — not through the `error` signal,
/// which is about the connection.
#[test]
fn llm_in_band_error_event_is_an_event_not_a_connection_error() {
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| {
        vec![
            sse_head(),
            responses_event(
                "error",
                r#"{"type":"error","code":"server_error","message":"Something broke","param":null}"#,
            ),
        ]
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    let in_band = Rc::new(RefCell::new(None));
    let i = in_band.clone();
    sse.add_event_listener("error", move |event| {
        *i.borrow_mut() = Some(event.data().to_string())
    })
    .release();
    sse.connect(openai_request(address));
    spin(&mut event_loop, || transcript.borrow().closed > 0);
    assert!(
        in_band
            .borrow()
            .as_deref()
            .unwrap()
            .contains("Something broke")
    );
    assert!(
        transcript.borrow().errors.is_empty(),
        "{:?}",
        transcript.borrow().errors
    );
}

/// Chat Completions style: events without `event:` lines, ended by `data: [DONE]` — they arrive
/// as `message` events, `[DONE]` included, and a slot can stop there.
#[test]
fn llm_chat_completions_done_marker_arrives_as_a_message() {
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| {
        let mut pieces = vec![sse_head()];
        for word in ["Hel", "lo"] {
            pieces.push(
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n")
                    .into_bytes(),
            );
        }
        pieces.push(b"data: [DONE]\n\n".to_vec());
        pieces.extend(std::iter::repeat_n(Vec::new(), 40));
        pieces
    });
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let me = Rc::downgrade(&sse);
    sse.add_event_listener("message", move |event| {
        s.borrow_mut().push(event.data().to_string());
        if event.data() == "[DONE]" {
            if let Some(sse) = me.upgrade() {
                sse.disconnect();
            }
        }
    })
    .release();
    sse.connect(HttpRequest::post(&format!("http://{address}/v1/chat/completions"), "{}").unwrap());
    let started = Instant::now();
    spin(&mut event_loop, || sse.ready_state() == ReadyState::Closed);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(seen.borrow().len(), 3);
    assert_eq!(seen.borrow()[2], "[DONE]");
}

/// `SseClient`'s doc example (an OpenAI stream) printed `event.data()` of every
/// `response.output_text.delta` event — that is the event's JSON, not the answer's text. It now
/// prints the event's "delta" string, read by the example's own `json_string_member` (copied
/// here; the test checks that the doc still calls it so).
#[test]
fn llm_sse_client_doc_example_prints_the_answer_text() {
    /// Copied from the doc example in src/network/sse/client.rs.
    fn json_string_member(json: &str, name: &str) -> Option<String> {
        let key = format!("\"{name}\":");
        let value = json[json.find(&key)? + key.len()..].trim_start();
        let mut chars = value.strip_prefix('"')?.chars();
        let mut text = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(text),
                '\\' => match chars.next()? {
                    'n' => text.push('\n'),
                    'r' => text.push('\r'),
                    't' => text.push('\t'),
                    'b' => text.push('\u{8}'),
                    'f' => text.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let unit = u32::from_str_radix(&hex, 16).ok()?;
                        // (Each half of a UTF-16 surrogate pair becomes U+FFFD.)
                        text.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                    }
                    escaped => text.push(escaped), // \" \\ \/
                },
                c => text.push(c),
            }
        }
    }
    let doc = include_str!("../src/network/sse/client.rs");
    assert!(
        doc.contains("json_string_member(event.data(), \"delta\")")
            && doc
                .contains("/// fn json_string_member(json: &str, name: &str) -> Option<String> {"),
        "the doc example no longer reads the delta as this test does"
    );
    // The escapes an answer's text holds (code, quotes, line breaks) come out as text.
    assert_eq!(
        json_string_member(
            r#"{"type":"response.output_text.delta","item_id":"msg_1","delta": "say \"hi\"\n\tcaf\u00e9 \\o/","logprobs":[]}"#,
            "delta"
        )
        .as_deref(),
        Some("say \"hi\"\n\tcafé \\o/")
    );
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| responses_stream());
    let printed = Rc::new(RefCell::new(String::new()));
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    // As the doc example, which `print!`s the text.
    let p = printed.clone();
    sse.add_event_listener("response.output_text.delta", move |event| {
        if let Some(text) = json_string_member(event.data(), "delta") {
            p.borrow_mut().push_str(&text);
        }
    })
    .release();
    let handle = event_loop.handle();
    sse.state_changed
        .connect(move |state| {
            if *state == ReadyState::Closed {
                handle.quit();
            }
        })
        .release();
    sse.connect(openai_request(address));
    event_loop.run();
    assert_eq!(*printed.borrow(), "Hello, wörld");
}

/// Parsing a saved stream with the sans-IO parser, and writing one with `SseWriter`, as a test
/// server would: what the writer writes, the parser reads back.
#[test]
fn llm_writer_and_parser_round_trip() {
    let mut writer = SseWriter::new();
    let mut out = Vec::new();
    writer
        .write_event(
            &mut out,
            &SseEvent::new("response.output_text.delta", "line one\nline two").with_id("7"),
        )
        .unwrap();
    writer.write_comment(&mut out, "keep-alive");
    let events = SseParser::new().parse_all(&out).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type(), "response.output_text.delta");
    assert_eq!(events[0].data(), "line one\nline two");
    assert_eq!(events[0].id(), "7");
}

/// A chat that asks its next question from the `error` slot of the previous one (a refused
/// request): the new stream must not hear the old failure's `disconnected`, and its own events
/// arrive.
#[test]
fn llm_next_question_from_the_error_slot() {
    let mut event_loop = EventLoop::new().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let address = serve(move |_| {
        if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let body = r#"{"error":{"message":"busy"}}"#;
            vec![format!(
                "HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        } else {
            responses_stream()
        }
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let me = Rc::downgrade(&sse);
    sse.error
        .connect(move |_| {
            l.borrow_mut().push("error".to_string());
            if let Some(sse) = me.upgrade() {
                sse.connect(openai_request(address)); // ask again at once
            }
        })
        .release();
    let l = log.clone();
    let me = Rc::downgrade(&sse);
    sse.disconnected
        .connect(move |_| {
            let state = me.upgrade().map(|s| s.ready_state());
            l.borrow_mut().push(format!("disconnected {state:?}"));
        })
        .release();
    let l = log.clone();
    sse.add_event_listener("response.completed", move |_| {
        l.borrow_mut().push("completed".to_string())
    })
    .release();
    sse.connect(openai_request(address));
    spin(&mut event_loop, || {
        log.borrow().iter().any(|e| e == "completed")
    });
    assert_eq!(transcript.borrow().text, "Hello, wörld");
    let log = log.borrow();
    // Whatever the old failure emits after `error`, nothing may say the new stream ended while
    // it is connecting or open.
    assert!(
        !log.iter()
            .any(|e| e == "disconnected Some(Connecting)" || e == "disconnected Some(Open)"),
        "{log:?}"
    );
}

/// KDFoundation code runs a nested loop from a slot (`EventLoop::instance()->processEvents()`,
/// a modal dialog waiting for its answer); PORTING says nesting is allowed. `run()` holds the
/// `EventLoop` mutably borrowed, so the slot turns the loop with the free
/// `kdnet::foundation::process_events` (the calling thread's loop).
#[test]
fn gui_slot_runs_a_nested_loop_like_a_modal_dialog() {
    let mut event_loop = EventLoop::new().unwrap();
    let answered = Rc::new(Cell::new(false));
    let nested_ok = Rc::new(Cell::new(None));
    let depth_in_dialog = Rc::new(Cell::new(0));
    let (a, n, d) = (answered.clone(), nested_ok.clone(), depth_in_dialog.clone());
    let handle = event_loop.handle();
    let _dialog = Timer::create_timeout(Duration::from_millis(1), move || {
        // The "dialog": answered 20 ms later; wait for it without returning to the main loop.
        let a2 = a.clone();
        let d2 = d.clone();
        let _answer = Timer::create_timeout(Duration::from_millis(20), move || {
            d2.set(kdnet::foundation::dispatch_depth());
            a2.set(true);
        })
        .unwrap();
        let mut turns = 0;
        while !a.get() && turns < 100 {
            kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
            turns += 1;
        }
        n.set(Some(a.get()));
        handle.quit();
    })
    .unwrap();
    assert_eq!(event_loop.run(), 0);
    assert_eq!(
        nested_ok.get(),
        Some(true),
        "the slot could not wait in a nested loop"
    );
    assert_eq!(
        depth_in_dialog.get(),
        2,
        "the answer came from the nested turn"
    );
}

/// An `SseClient` whose loop is gone (a GUI tearing down, a test re-creating its loop) can never
/// connect; `connect` must not leave it `Connecting` for ever.
#[test]
fn sse_connect_after_the_loop_is_gone_does_not_stay_connecting() {
    let event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    drop(event_loop);
    sse.connect(HttpRequest::get("http://127.0.0.1:1/events").unwrap());
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

/// A proxy in front of the API answers 502 with an HTML page: the error's Display (what
/// `eprintln!("{error}")` shows, as the SseClient doc example does) should stay one line, with
/// the body's start quoted, not the raw page with its line breaks.
#[test]
fn llm_bad_status_with_an_html_page_displays_on_one_line() {
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| {
        let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        vec![format!(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()]
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    sse.connect(openai_request(address));
    spin(&mut event_loop, || transcript.borrow().closed > 0);
    let shown = transcript.borrow().errors[0].to_string();
    assert!(shown.contains("502"), "{shown}");
    assert!(!shown.contains(['\n', '\r']), "{shown:?}");
}

/// The Server-Sent Events rows and the HTTP client's signal rows.
#[test]
fn porting_sse_and_http_client_signal_rows() {
    let mut event_loop = EventLoop::new().unwrap();
    // SseEvent: id()/last_event_id(), event()/event_type() default "message", data, retry.
    let event = SseEvent::new("", "d")
        .with_id("5")
        .with_retry(Duration::from_millis(70));
    assert_eq!((event.id(), event.last_event_id()), ("5", "5"));
    assert_eq!((event.event(), event.event_type()), ("message", "message"));
    assert_eq!(event.retry(), Some(Duration::from_millis(70)));
    assert_eq!(event.into_data(), "d");
    // SseParser: feed/finish with an owned sink, feed_borrowed/finish_borrowed, reset.
    let mut parser = SseParser::new();
    let mut owned: Vec<SseEvent> = Vec::new();
    parser
        .feed(b"\xEF\xBB\xBFdata: a\r\n\r\ndata: b", &mut owned)
        .unwrap();
    parser.finish(&mut owned).unwrap();
    assert_eq!(
        owned.len(),
        1,
        "an unterminated event is dropped at the end (WHATWG)"
    );
    let mut types = Vec::new();
    parser.reset();
    parser
        .feed_borrowed(
            b"event: x\ndata: 1\n\n",
            &mut |e: kdnet::network::sse::SseEventRef<'_>| types.push(e.event_type().to_string()),
        )
        .unwrap();
    parser
        .finish_borrowed(&mut |_: kdnet::network::sse::SseEventRef<'_>| {})
        .unwrap();
    assert_eq!(types, ["x"]);
    // SseWriter: write_event, write_comment, write_retry.
    let mut writer = SseWriter::new();
    let mut out = String::new();
    writer.write_retry(&mut out, Duration::from_secs(1));
    writer
        .write_event(&mut out, &SseEvent::new("e", "x").with_id("1"))
        .unwrap();
    writer.write_comment(&mut out, "c");
    let mut parser = SseParser::new();
    let parsed = parser.parse_all(out.as_bytes()).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parser.reconnection_time(), Some(Duration::from_secs(1)));

    // SseClient through an HttpClient: create_sse_client / with_http_client; the client's
    // about_to_send_request, download_progress and response signals; state_changed,
    // last_event_id, set_last_event_id, add_event_listener, is_connected.
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heads.clone();
    let address = serve(move |head| {
        h.lock().unwrap().push(head.to_string());
        vec![
            sse_head(),
            b"id: 41\nevent: tick\ndata: 1\n\n".to_vec(),
            b"id: 42\nevent: done\ndata: 2\n\n".to_vec(),
            Vec::new(),
            Vec::new(),
        ]
    });
    let http = HttpClient::new().unwrap();
    let announced = Rc::new(Cell::new(0));
    let a = announced.clone();
    http.about_to_send_request
        .connect(move |(_, request)| {
            if request.url().path() == "/events" {
                assert_eq!(request.header("accept"), Some("text/event-stream"));
            }
            a.set(a.get() + 1)
        })
        .release();
    let sse = http.create_sse_client();
    assert!(Rc::ptr_eq(sse.http_client(), &http));
    let _other = SseClient::with_http_client(http.clone());
    sse.set_auto_reconnect(false);
    sse.set_last_event_id("40");
    sse.set_reconnection_time(Duration::from_millis(100));
    sse.set_max_reconnection_delay(Duration::from_secs(1));
    sse.set_retry_on_throttle(false);
    sse.set_read_timeout(Some(Duration::from_secs(5)));
    sse.set_max_event_size(1024);
    sse.set_flush_unterminated_event(false);
    let states = Rc::new(RefCell::new(Vec::new()));
    let s = states.clone();
    sse.state_changed
        .connect(move |state| s.borrow_mut().push(*state))
        .release();
    let opened = Rc::new(Cell::new(false));
    let o = opened.clone();
    sse.connected.connect(move |_| o.set(true)).release();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let me = Rc::downgrade(&sse);
    sse.add_event_listener("done", move |_| {
        let sse = me.upgrade().unwrap();
        assert!(sse.is_connected());
        assert_eq!(sse.last_event_id(), "42");
        sse.disconnect();
        d.set(true);
    })
    .release();
    sse.connect(HttpRequest::get(&format!("http://{address}/events")).unwrap());
    spin(&mut event_loop, || done.get());
    assert!(opened.get());
    assert_eq!(announced.get(), 1);
    assert_eq!(
        *states.borrow(),
        [ReadyState::Connecting, ReadyState::Open, ReadyState::Closed]
    );
    assert!(
        heads.lock().unwrap()[0]
            .to_ascii_lowercase()
            .contains("last-event-id: 40\r\n")
    );

    // send_streaming: StreamEvent::Head then Data pieces, on_done with an empty body;
    // download_progress counts decoded bytes; cancel_all reaches queued requests.
    let address = serve(|_| {
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc".to_vec(),
            Vec::new(),
            b"def".to_vec(),
        ]
    });
    let progress = Rc::new(Cell::new(0u64));
    let p = progress.clone();
    http.download_progress
        .connect(move |(_, received, total)| {
            assert_eq!(*total, Some(6));
            p.set(*received)
        })
        .release();
    let pieces = Rc::new(RefCell::new(Vec::new()));
    let outcome = Rc::new(RefCell::new(None));
    let (pc, oc) = (pieces.clone(), outcome.clone());
    http.send_streaming(
        HttpRequest::get(&format!("http://{address}/s")).unwrap(),
        move |event| match event {
            StreamEvent::Head(response) => {
                pc.borrow_mut().push(format!("head {}", response.status()))
            }
            StreamEvent::Data(data) => pc
                .borrow_mut()
                .push(String::from_utf8_lossy(data).into_owned()),
        },
        move |result| *oc.borrow_mut() = Some(result.map(|r| r.body().len())),
    );
    spin(&mut event_loop, || outcome.borrow().is_some());
    assert_eq!(outcome.borrow_mut().take().unwrap().unwrap(), 0);
    assert_eq!(pieces.borrow()[0], "head 200");
    assert_eq!(pieces.borrow()[1..].concat(), "abcdef");
    assert_eq!(progress.get(), 6);
    let cancelled = Rc::new(Cell::new(false));
    let c = cancelled.clone();
    http.get("http://127.0.0.1:9/never", move |result| {
        c.set(matches!(result, Err(HttpError::Cancelled)))
    });
    http.cancel_all();
    spin(&mut event_loop, || cancelled.get());
    http.update_session(|session| session.set_max_connections_per_host(2));
    assert_eq!(http.session().max_connections_per_host(), 2);
    let jar = http.session().cookie_jar().clone();
    assert!(jar.lock().is_empty());
    let mut session = HttpSession::new();
    session.set_cookie_jar(HttpCookieJar::new());
    http.set_session(session);
    assert!(!http.session().cookie_jar().ptr_eq(&jar));
}

/// A GUI drops a connection's last `Rc` from one of its slots (`connected`: "no longer needed";
/// `error_occurred`: "give up on it"). Like `SseClient` ("dropped from a `message_received`
/// slot, it delivers no later event"), the socket then emits nothing more: not the rest of the
/// event's signals (`bytes_written` after `connected`, `state_changed` and `disconnected` after
/// `error_occurred`).
#[test]
fn gui_socket_dropped_from_its_slot_emits_nothing_more() {
    let mut event_loop = EventLoop::new().unwrap();
    for drop_on in ["connected", "error_occurred"] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let _ = peer.write_all(b"hello");
            std::thread::sleep(Duration::from_millis(100));
            // Closing with the client's byte unread resets the connection: an error.
        });
        let holder: Rc<RefCell<Option<Rc<TcpSocket>>>> = Rc::default();
        let after_drop = Rc::new(RefCell::new(Vec::new()));
        let socket = TcpSocket::new().unwrap();
        let record = |name: &'static str| {
            let holder = holder.clone();
            let after_drop = after_drop.clone();
            move || {
                if holder.borrow().is_none() {
                    after_drop.borrow_mut().push(name);
                } else if name == drop_on {
                    holder.borrow_mut().take();
                }
            }
        };
        let f = record("connected");
        socket.connected.connect(move |_| f()).release();
        let f = record("bytes_written");
        socket.bytes_written.connect(move |_| f()).release();
        let f = record("error_occurred");
        socket.error_occurred.connect(move |_| f()).release();
        let f = record("state_changed");
        socket.state_changed.connect(move |_| f()).release();
        let f = record("disconnected");
        socket.disconnected.connect(move |_| f()).release();
        // Held before connecting: `state_changed(Connecting)` comes from the connect call.
        *holder.borrow_mut() = Some(socket.clone());
        socket
            .connect_to_address(address.ip(), address.port())
            .unwrap();
        socket.write(b"x").unwrap();
        drop(socket);
        spin(&mut event_loop, || holder.borrow().is_none());
        event_loop
            .process_events(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            after_drop.borrow().is_empty(),
            "dropped in {drop_on}, then: {:?}",
            after_drop.borrow()
        );
    }
}

/// A chat session: one `SseClient`, many prompts, each answer stopped at `response.completed`
/// while the server keeps the stream open. Every answer arrives (the per-host cap of 6 never
/// fills with abandoned streams) and no connection is left open behind.
#[test]
fn llm_many_prompts_on_one_client_do_not_leak_connections() {
    let mut event_loop = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                for piece in responses_stream().into_iter().filter(|p| !p.is_empty()) {
                    let _ = stream.write_all(&piece);
                }
                // Keep the stream open until the client goes.
                let mut sink = [0; 64];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    let completed = Rc::new(Cell::new(0));
    let c = completed.clone();
    let me = Rc::downgrade(&sse);
    sse.add_event_listener("response.completed", move |_| {
        c.set(c.get() + 1);
        if let Some(sse) = me.upgrade() {
            sse.disconnect();
        }
    })
    .release();
    for prompt in 1..=9 {
        sse.connect(openai_request(address));
        spin(&mut event_loop, || completed.get() == prompt);
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        assert!(
            sse.http_client().open_connections() <= 1,
            "after prompt {prompt}: {} open",
            sse.http_client().open_connections()
        );
    }
    assert_eq!(transcript.borrow().text, "Hello, wörld".repeat(9));
    assert!(transcript.borrow().errors.is_empty());
}

/// The host's own code (a GTK button handler, outside any kdnet turn) starts a timer and posts a
/// closure while the host sleeps on a timeout read earlier: as `as_raw_fd`'s doc says, the fd
/// becomes readable, so the host wakes and runs them.
#[test]
fn gui_embedding_work_added_by_host_code_between_turns_wakes_the_host() {
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Poll::new().unwrap();
    let fd = event_loop.as_raw_fd();
    host.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    // Nothing to do: kdnet asks for no wake-up.
    assert_eq!(event_loop.next_timeout(), None);

    // "Host code" between turns starts a 300 ms timer; the host, asleep on the timeout it had
    // (none), must be woken to learn the new deadline.
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let _timer = Timer::create_timeout(Duration::from_millis(300), move || f.set(true)).unwrap();
    let started = Instant::now();
    host.poll(&mut events, Some(Duration::from_secs(3)))
        .unwrap();
    assert!(!events.is_empty(), "starting a timer did not wake the host");
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    let asked = event_loop.next_timeout().expect("a timer is pending");
    assert!(asked <= Duration::from_millis(300), "{asked:?}");
    // Sleeping as asked (a wake a millisecond early only asks again) fires the timer.
    let mut asked = Some(asked);
    while !fired.get() && started.elapsed() < Duration::from_secs(3) {
        host.poll(&mut events, asked).unwrap();
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        asked = event_loop.next_timeout();
    }
    assert!(fired.get(), "not fired after {:?}", started.elapsed());

    // Then a closure posted from the loop's own thread between turns.
    let posted = Rc::new(Cell::new(false));
    let p = posted.clone();
    event_loop.post(move || p.set(true));
    host.poll(&mut events, Some(Duration::from_secs(3)))
        .unwrap();
    assert!(!events.is_empty(), "posting did not wake the host");
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(posted.get());
}

/// The commonest TLS mistake with a local OpenAI-compatible server (llama.cpp, Ollama, vLLM):
/// `https://` for a server that speaks plain HTTP. The server answers the ClientHello with an
/// HTTP 400; the error should say so, not only "peer misbehaved: received corrupt message of type
/// InvalidContentType".
#[test]
fn llm_https_to_a_plain_http_server_says_so() {
    let mut event_loop = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut hello = [0; 512];
        let _ = peer.read(&mut hello);
        let _ = peer.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request",
        );
        std::thread::sleep(Duration::from_millis(200));
    });
    let client = HttpClient::new().unwrap();
    let outcome = Rc::new(RefCell::new(None));
    let o = outcome.clone();
    client.get(&format!("https://{address}/v1/models"), move |result| {
        *o.borrow_mut() = Some(result.map(|r| r.status()))
    });
    spin(&mut event_loop, || outcome.borrow().is_some());
    let error = outcome
        .borrow_mut()
        .take()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(error.contains("plain HTTP"), "{error}");
}

/// A worker thread reports progress through a signal of its own, connected deferred to the GUI
/// loop's evaluator: the slot runs on the loop's thread, and the loop wakes for it by itself.
#[test]
fn gui_worker_thread_signal_delivered_on_the_loop_thread_through_its_evaluator() {
    let mut event_loop = EventLoop::new().unwrap();
    let evaluator = event_loop.connection_evaluator();
    let loop_thread = std::thread::current().id();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let progress: Signal<u32> = Signal::new();
        progress
            .connect_deferred(&evaluator, move |percent| {
                tx.send((*percent, std::thread::current().id())).unwrap();
            })
            .release();
        for percent in [10, 50, 100] {
            std::thread::sleep(Duration::from_millis(20));
            progress.emit(&percent);
        }
        // Keep the signal (and its connection) until the loop has run the slots.
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut seen = Vec::new();
    let started = Instant::now();
    while seen.len() < 3 && started.elapsed() < Duration::from_secs(10) {
        event_loop.process_events(None).unwrap();
        seen.extend(rx.try_iter());
    }
    assert_eq!(
        seen,
        [(10, loop_thread), (50, loop_thread), (100, loop_thread)]
    );
    worker.join().unwrap();
}

/// The next prompt sent straight from the `response.completed` listener (no post): the old
/// stream's later events (in the same read) are not delivered, the new answer arrives whole.
#[test]
fn llm_next_question_from_the_completed_listener() {
    let mut event_loop = EventLoop::new().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    let address = serve(move |_| {
        let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut reply = sse_head();
        reply.extend(responses_event(
            "response.output_text.delta",
            &format!(r#"{{"type":"response.output_text.delta","delta":"answer {n}."}}"#),
        ));
        reply.extend(responses_event(
            "response.completed",
            r#"{"type":"response.completed"}"#,
        ));
        reply.extend(responses_event("stale", "{}"));
        vec![reply, Vec::new(), Vec::new(), Vec::new()]
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    let completed = Rc::new(Cell::new(0));
    let c = completed.clone();
    let me = Rc::downgrade(&sse);
    sse.add_event_listener("response.completed", move |_| {
        c.set(c.get() + 1);
        if c.get() < 3 {
            if let Some(sse) = me.upgrade() {
                sse.connect(openai_request(address)); // straight from the slot
            }
        }
    })
    .release();
    sse.connect(openai_request(address));
    spin(&mut event_loop, || completed.get() == 3);
    let t = transcript.borrow();
    assert_eq!(t.text, "answer 0.answer 1.answer 2.");
    assert!(
        !t.events.iter().take(5).any(|e| e == "stale"),
        "{:?}",
        t.events
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
}

/// `HttpClient::post(url, body, content_type, cb)` with no content type to give (`""`, as a
/// KDNetwork porter passes for `post(url, data, cb)`): an empty `Content-Type` is not a media
/// type (RFC 9110 §8.3), so the request should carry none rather than `Content-Type: `.
#[test]
fn porting_post_without_a_content_type_sends_no_empty_content_type() {
    let mut event_loop = EventLoop::new().unwrap();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heads.clone();
    let address = serve(move |head| {
        h.lock().unwrap().push(head.to_ascii_lowercase());
        vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()]
    });
    let client = HttpClient::new().unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    client.post(&format!("http://{address}/"), "x=1", "", move |result| {
        assert_eq!(result.unwrap().status(), 204);
        d.set(true)
    });
    spin(&mut event_loop, || done.get());
    let head = heads.lock().unwrap()[0].clone();
    assert!(!head.contains("content-type"), "{head}");
}

/// OpenAI answers 429 both for a rate limit (wait and retry) and for `insufficient_quota` (no
/// amount of waiting helps): only the JSON body tells them apart. With `set_retry_on_throttle`
/// the refusal arrived as `SseError::Throttled`, which kept the status and `Retry-After` but
/// dropped the body, so a client could not tell the user why, nor stop retrying a quota error.
/// Now `Throttled` keeps the body, and a quota refusal, which no wait helps, is not retried: it
/// fails for good as `BadStatus` (its body says why).
#[test]
fn llm_throttled_refusal_keeps_the_api_message() {
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| {
        let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        vec![format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()]
    });
    let transcript = Rc::new(RefCell::new(Transcript::default()));
    let sse = llm_client(&transcript);
    sse.set_retry_on_throttle(true);
    sse.connect(openai_request(address));
    spin(&mut event_loop, || transcript.borrow().closed > 0);
    let t = transcript.borrow();
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
    assert!(
        matches!(t.errors[0], SseError::BadStatus { status: 429, .. }),
        "{:?}",
        t.errors[0]
    );
    assert!(t.errors[0].is_fatal());
    // The body, as BadStatus has it.
    let shown = format!("{:?}", t.errors[0]);
    assert!(shown.contains("insufficient_quota"), "{shown}");
}

/// `HttpClient`'s doc: "Dropping the last `Rc<HttpClient>` closes its connections and drops the
/// callbacks of its unfinished requests without calling them". Dropped from a streaming
/// request's `on_event` at the head, the body bytes that came in the same read are still
/// handed to `on_event`.
#[test]
fn gui_http_client_dropped_from_its_streaming_callback_calls_nothing_more() {
    let mut event_loop = EventLoop::new().unwrap();
    let address = serve(|_| {
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde".to_vec(),
            Vec::new(),
            b"fghij".to_vec(),
        ]
    });
    let holder: Rc<RefCell<Option<Rc<HttpClient>>>> = Rc::default();
    let client = HttpClient::new().unwrap();
    let after_drop = Rc::new(RefCell::new(Vec::new()));
    let heads = Rc::new(Cell::new(0));
    let (h, a, n) = (holder.clone(), after_drop.clone(), heads.clone());
    let (h2, a2) = (holder.clone(), after_drop.clone());
    client.send_streaming(
        HttpRequest::get(&format!("http://{address}/")).unwrap(),
        move |event| {
            if h.borrow().is_none() {
                a.borrow_mut().push(format!("{event:?}"));
            } else if let StreamEvent::Head(_) = event {
                n.set(1);
                h.borrow_mut().take(); // the last Rc of the client
            }
        },
        move |_| {
            if h2.borrow().is_none() {
                a2.borrow_mut().push("on_done".to_string());
            }
        },
    );
    *holder.borrow_mut() = Some(client);
    spin(&mut event_loop, || heads.get() == 1);
    event_loop
        .process_events(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(after_drop.borrow().is_empty(), "{:?}", after_drop.borrow());
}
