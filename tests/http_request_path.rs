//! The keep-alive request path's shortcuts (eleventh review round): what a request reuses from
//! the one before it (the emptied header map, the host's `Host` value), and the header checks
//! that are not repeated for a request already checked, must never change what goes on the wire.

mod support;

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest};
use support::{Reply, ScriptServer, get_text, ok_response, send, wait};

/// A request sent after one that had fields of its own (and after the session's defaults
/// changed) carries exactly the session's current defaults: nothing of the earlier request's
/// map, which the client keeps emptied for the next one.
#[test]
fn a_request_after_one_with_its_own_fields_carries_only_the_defaults() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();

    let first = HttpRequest::get(&server.url("/1"))
        .unwrap()
        .with_header("X-First", "only-once")
        .with_header("Authorization", "Bearer first-secret")
        .with_header("User-Agent", "first-agent");
    let out = send(&client, first);
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    let out = send(&client, HttpRequest::get(&server.url("/2")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    client.update_session(|session| {
        session.set_default_header("X-Default", "second-default");
        session.set_user_agent("agent/3");
    });
    let out = send(&client, HttpRequest::get(&server.url("/3")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("X-First"), Some("only-once"));
    assert_eq!(seen[0].header("User-Agent"), Some("first-agent"));
    for later in &seen[1..] {
        assert_eq!(later.header("X-First"), None, "{later:?}");
        assert_eq!(later.header("Authorization"), None, "{later:?}");
    }
    let names = |r: &support::SeenRequest| -> Vec<String> {
        r.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    };
    assert_eq!(
        names(&seen[1]),
        ["user-agent", "accept", "host", "accept-encoding"]
    );
    assert!(seen[1].header("User-Agent").unwrap().starts_with("kdnet/"));
    assert_eq!(seen[2].header("User-Agent"), Some("agent/3"));
    assert_eq!(seen[2].header("X-Default"), Some("second-default"));
    assert_eq!(
        names(&seen[2]),
        // (`set_user_agent` replaces the field: it moves to the end of the defaults.)
        [
            "accept",
            "x-default",
            "user-agent",
            "host",
            "accept-encoding"
        ]
    );
}

/// Each hop's `Host` names that hop's host and port (the value the client keeps per host): an
/// explicit port, a redirect to another host and port, and an IPv6 literal in brackets.
#[test]
fn every_hop_names_its_own_host_and_port() {
    let v6 = std::net::TcpListener::bind("[::1]:0").ok().map(|l| {
        let port = l.local_addr().unwrap().port();
        drop(l);
        port
    });
    let last = ScriptServer::start(|_, _| Reply::Bytes(ok_response("end", "")));
    let last_url = last.url("/end");
    let middle = ScriptServer::start(move |_, _| {
        Reply::Bytes(
            format!("HTTP/1.1 302 Found\r\nLocation: {last_url}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    });
    let middle_url = middle.url("/middle").replace("127.0.0.1", "localhost");
    let first = ScriptServer::start(move |_, _| {
        Reply::Bytes(
            format!("HTTP/1.1 301 Moved\r\nLocation: {middle_url}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    for _ in 0..2 {
        let out = send(&client, HttpRequest::get(&first.url("/start")).unwrap());
        let response = wait(&mut ev, &out).unwrap();
        assert_eq!(response.body().as_ref(), b"end");
    }
    let hosts = |server: &ScriptServer| -> Vec<String> {
        server
            .requests()
            .iter()
            .map(|r| r.header("Host").unwrap_or("<none>").to_owned())
            .collect()
    };
    assert_eq!(
        hosts(&first),
        vec![format!("127.0.0.1:{}", first.addr.port()); 2]
    );
    assert_eq!(
        hosts(&middle),
        vec![format!("localhost:{}", middle.addr.port()); 2]
    );
    assert_eq!(
        hosts(&last),
        vec![format!("127.0.0.1:{}", last.addr.port()); 2]
    );
    // A default port is not written, even when the URL spells it.
    assert_eq!(
        kdnet::network::http::__fuzz::host_header(&url::Url::parse("http://h:80/").unwrap()),
        "h"
    );

    if v6.is_some() {
        let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{BufReader, Write};
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let head = support::read_request_head(&mut reader).unwrap();
            let mut stream = stream;
            stream.write_all(&ok_response("v6", "")).unwrap();
            head
        });
        let out = send(
            &client,
            HttpRequest::get(&format!("http://[::1]:{port}/six")).unwrap(),
        );
        assert_eq!(wait(&mut ev, &out).unwrap().body().as_ref(), b"v6");
        let head = server.join().unwrap();
        assert_eq!(head.header("host"), Some(format!("[::1]:{port}").as_str()));
    }
}

/// A session default header whose value could split the request is refused when the request
/// is sent (the encoder does not look at the request's own fields again on its first hop: the
/// check at `send` is the one that catches it), and nothing reaches the server.
#[test]
fn a_default_header_that_could_split_the_request_is_refused() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let out = send(&client, HttpRequest::get(&server.url("/ok")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    for bad in ["v\r\nX-Injected: 1", "nul\0byte", "del\x7f"] {
        client.update_session(|s| s.set_default_header("X-Bad", bad));
        let out = send(&client, HttpRequest::get(&server.url("/bad")).unwrap());
        let result = wait(&mut ev, &out);
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{bad:?}: {result:?}"
        );
        // On a request with fields of its own too.
        let own = HttpRequest::get(&server.url("/bad"))
            .unwrap()
            .with_header("X-Own", "fine");
        let result = wait(&mut ev, &send(&client, own));
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{bad:?}: {result:?}"
        );
    }
    client.update_session(|s| {
        s.remove_default_header("X-Bad");
    });
    let out = send(&client, HttpRequest::get(&server.url("/after")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);
    let lines: Vec<String> = server.requests().iter().map(|r| r.line.clone()).collect();
    assert_eq!(lines, ["GET /ok HTTP/1.1", "GET /after HTTP/1.1"]);
}

/// Responses on one keep-alive connection, each different from the one before (status, reason,
/// fields, framing): each is delivered with exactly its own head and body, nothing of the one
/// before (whose head's box the client keeps for the next).
#[test]
fn each_response_on_a_kept_connection_has_only_its_own_head() {
    let replies: [&[u8]; 4] = [
        b"HTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 2\r\n\r\nde",
        b"HTTP/1.1 204 \r\nX-C: 3\r\n\r\n",
        b"HTTP/1.1 299 Odd Reason Here\r\nContent-Length: 1\r\n\r\nf",
    ];
    let server = ScriptServer::start(move |_, n| Reply::Bytes(replies[n % 4].to_vec()));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    type Expected<'a> = (u16, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);
    let expected: [Expected; 4] = [
        (
            201,
            "Created",
            &[("X-A", "1"), ("Transfer-Encoding", "chunked")],
            b"abc",
        ),
        (200, "OK", &[("Content-Length", "2"), ("X-B", "2")], b"de"),
        (204, "", &[("X-C", "3")], b""),
        (299, "Odd Reason Here", &[("Content-Length", "1")], b"f"),
    ];
    for round in 0..8 {
        let out = send(&client, HttpRequest::get(&server.url("/r")).unwrap());
        let response = wait(&mut ev, &out).unwrap();
        let (status, reason, fields, body) = expected[round % 4];
        assert_eq!(response.status(), status, "round {round}");
        assert_eq!(response.reason(), reason, "round {round}");
        let got: Vec<(&str, &str)> = response.headers().iter().collect();
        assert_eq!(got, fields, "round {round}");
        assert_eq!(response.body().as_ref(), body, "round {round}");
    }
    let connections: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [0; 8], "one kept connection");
}

/// Drops set a flag: tells when the client let go of a request's body.
struct Owned(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicBool>);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A finished request's body is let go of when its response is delivered, although the
/// client keeps the request's state box for the next request: a large upload is not held
/// until some later request replaces it.
#[test]
fn a_finished_requests_body_is_not_kept() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = bytes::Bytes::from_owner(Owned(vec![7; 256 * 1024], dropped.clone()));
    let out = send(
        &client,
        HttpRequest::post(&server.url("/upload"), body).unwrap(),
    );
    let response = wait(&mut ev, &out).unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the body is still held after its response"
    );
    assert_eq!(server.requests()[0].body.len(), 256 * 1024);
}

/// The fields the client adds (`Host`, `Accept-Encoding`, `Content-Length`) are left out when
/// the request has them, however spelled, and `Range` keeps `Accept-Encoding` out: the one pass
/// over the request's fields that finds them must find each.
#[test]
fn fields_the_request_has_are_not_added_again() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let requests = [
        HttpRequest::get(&server.url("/a"))
            .unwrap()
            .with_header("HOST", "custom.example")
            .with_header("rAnGe", "bytes=0-1"),
        HttpRequest::get(&server.url("/b"))
            .unwrap()
            .with_header("accept-ENCODING", "identity"),
        HttpRequest::post(&server.url("/c"), "abc")
            .unwrap()
            .with_header("CONTENT-length", "3"),
        HttpRequest::get(&server.url("/d")).unwrap(),
    ];
    for request in requests {
        let out = send(&client, request);
        assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);
    }
    let seen = server.requests();
    let count = |i: usize, name: &str| {
        seen[i]
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(seen[0].header("host"), Some("custom.example"));
    assert_eq!((count(0, "host"), count(0, "accept-encoding")), (1, 0));
    assert_eq!(seen[1].header("accept-encoding"), Some("identity"));
    assert_eq!(count(1, "accept-encoding"), 1);
    assert_eq!(
        (count(2, "content-length"), seen[2].body.as_slice()),
        (1, &b"abc"[..])
    );
    assert_eq!((count(3, "host"), count(3, "accept-encoding")), (1, 1));
    assert_eq!(count(3, "content-length"), 0);
}

/// `get` with the same URL text again (the client reuses its parse and, for a plain http(s)
/// URL, the checks it passed) refuses what it refused the first time, and moves credentials
/// out of the URL every time.
#[test]
fn the_same_url_text_again_gets_the_same_checks() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let get = |ev: &mut EventLoop, url: &str| wait(ev, &get_text(&client, url));
    for _ in 0..3 {
        let refused = get(&mut ev, "ftp://127.0.0.1/file");
        assert!(
            matches!(refused, Err(HttpError::InvalidUrl { .. })),
            "{refused:?}"
        );
    }
    let with_user = server.url("/user").replace("http://", "http://user:pw@");
    let plain = server.url("/plain");
    for _ in 0..3 {
        let response = get(&mut ev, &with_user).unwrap();
        assert_eq!(response.url().as_str(), server.url("/user"));
    }
    for _ in 0..3 {
        let response = get(&mut ev, &plain).unwrap();
        assert_eq!(response.url().as_str(), plain);
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 6);
    for (i, request) in seen.iter().enumerate() {
        let expected = (i < 3).then_some("Basic dXNlcjpwdw==");
        assert_eq!(request.header("Authorization"), expected, "{request:?}");
    }
}

/// A response's reason phrase is exactly the server's, whether it is its status's standard one
/// (which responses share rather than copy), another text, another case, or empty.
#[test]
fn reason_phrases_are_the_servers_exactly() {
    let replies: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 All Good\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 404 not found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    ];
    let expected = [
        "OK",
        "All Good",
        "not found",
        "Not Found",
        "",
        "Service Unavailable",
    ];
    let server = ScriptServer::start(move |_, n| Reply::Bytes(replies[n % 6].to_vec()));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    for round in 0..12 {
        let out = send(&client, HttpRequest::get(&server.url("/r")).unwrap());
        let response = wait(&mut ev, &out).unwrap();
        assert_eq!(response.reason(), expected[round % 6], "round {round}");
    }
}

/// Requests to one URL whose connections all close (so the client forgets the host between
/// them) and then to one that keeps them: each finds its host's books (the key the client
/// remembers for the last URL is used only while the host is still known).
#[test]
fn the_same_url_after_its_host_was_forgotten_still_pools() {
    let closing = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(ok_response("bye", "Connection: close\r\n"))
    });
    let keeping = ScriptServer::start(|_, _| Reply::Bytes(ok_response("hi", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let get =
        |ev: &mut EventLoop, url: &str| wait(ev, &get_text(&client, url)).unwrap().body().clone();
    let (closing_url, keeping_url) = (closing.url("/c"), keeping.url("/k"));
    for _ in 0..3 {
        assert_eq!(get(&mut ev, &closing_url).as_ref(), b"bye");
    }
    for _ in 0..3 {
        assert_eq!(get(&mut ev, &keeping_url).as_ref(), b"hi");
    }
    assert_eq!(get(&mut ev, &closing_url).as_ref(), b"bye");
    assert_eq!(get(&mut ev, &keeping_url).as_ref(), b"hi");
    let connections =
        |s: &ScriptServer| -> Vec<usize> { s.requests().iter().map(|r| r.connection).collect() };
    assert_eq!(connections(&closing), [0, 1, 2, 3]);
    assert_eq!(connections(&keeping), [0, 0, 0, 0]);
    assert_eq!(client.open_connections(), 1);
}
