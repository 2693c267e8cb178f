//! HttpClient against scripted loopback servers: the issue's rules and KDNetwork's regressions.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{
    HttpClient, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession, StreamEvent,
};
use support::{
    Outcome, Reply, ScriptServer, captured_logs, get_text, ok_response, run_until, send, wait,
    wait_at_most, wait_until,
};

fn get(ev: &mut EventLoop, client: &HttpClient, url: &str) -> Result<HttpResponse, HttpError> {
    let out = send(client, HttpRequest::get(url).unwrap());
    wait(ev, &out)
}

/// A client limited to two connections per host, with two idle connections to `server` (two
/// concurrent GETs of `/warm`, answered).
fn client_with_two_idle_connections(ev: &mut EventLoop, server: &ScriptServer) -> Rc<HttpClient> {
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_max_connections_per_host(2));
    let warm: Vec<_> = (0..2)
        .map(|_| send(&client, HttpRequest::get(&server.url("/warm")).unwrap()))
        .collect();
    assert!(run_until(ev, Duration::from_secs(5), || warm
        .iter()
        .all(|o| o.borrow().is_some())));
    assert_eq!(client.open_connections(), 2);
    client
}

/// A server whose `/login` sets the cookie `session=abc`, and whose other paths answer with the
/// `Cookie` field they got (`none` without one).
fn login_server() -> ScriptServer {
    ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /login") {
            Reply::Bytes(ok_response("in", "Set-Cookie: session=abc; Path=/\r\n"))
        } else {
            Reply::Bytes(ok_response(req.header("cookie").unwrap_or("none"), ""))
        }
    })
}

#[test]
fn set_cookie_response_completes_and_the_cookie_is_sent_next_time() {
    let mut ev = EventLoop::new().unwrap();
    let server = login_server();
    let client = HttpClient::new().unwrap();
    let started = Instant::now();
    let first = get(&mut ev, &client, &server.url("/login")).unwrap();
    assert_eq!(first.text(), "in");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "KDNetwork H1: Set-Cookie responses never completed"
    );
    let second = get(&mut ev, &client, &server.url("/me")).unwrap();
    assert_eq!(second.text(), "session=abc");
}

/// A jar shared between clients is one jar: a cookie another client stored (on another thread,
/// with its own loop) or user code put in through the jar's lock goes out with the next request
/// of a client that found the jar empty before, and one taken out no longer does. (The client
/// skips the jar's lock while the jar is known to be empty: that knowledge must be the jar's,
/// not one client's.)
#[test]
fn a_cookie_stored_through_a_shared_jar_goes_out_with_the_next_request() {
    let mut ev = EventLoop::new().unwrap();
    let server = login_server();
    let session = HttpSession::new();
    let client = HttpClient::with_session(session.clone()).unwrap();
    let me = server.url("/me");
    assert_eq!(get(&mut ev, &client, &me).unwrap().text(), "none");

    // Another client on another thread, sharing the jar, logs in.
    let (other_session, login) = (session.clone(), server.url("/login"));
    std::thread::spawn(move || {
        let mut ev = EventLoop::new().unwrap();
        let other = HttpClient::with_session(other_session).unwrap();
        assert_eq!(get(&mut ev, &other, &login).unwrap().text(), "in");
    })
    .join()
    .unwrap();
    assert_eq!(get(&mut ev, &client, &me).unwrap().text(), "session=abc");

    // User code empties the jar, then puts a cookie in through the lock.
    session.cookie_jar().lock().clear();
    assert_eq!(get(&mut ev, &client, &me).unwrap().text(), "none");
    let url = url::Url::parse(&me).unwrap();
    assert!(
        session
            .cookie_jar()
            .lock()
            .insert_cookie(kdnet::network::http::HttpCookie::new("mine", "1"), &url)
    );
    assert_eq!(get(&mut ev, &client, &me).unwrap().text(), "mine=1");

    // A response without Set-Cookie leaves the jar as it was.
    assert_eq!(get(&mut ev, &client, &me).unwrap().text(), "mine=1");
}

#[test]
fn head_with_content_length_completes_and_the_connection_is_reused() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("HEAD") {
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n".to_vec())
        } else {
            Reply::Bytes(ok_response("after head", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let head = wait(
        &mut ev,
        &send(
            &client,
            HttpRequest::get(&server.url("/"))
                .unwrap()
                .with_method(HttpMethod::Head),
        ),
    )
    .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.body().is_empty());
    let next = get(&mut ev, &client, &server.url("/next")).unwrap();
    assert_eq!(next.text(), "after head");
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].connection, seen[1].connection,
        "second request should reuse the connection"
    );
}

#[test]
fn sequential_requests_on_one_connection_each_get_their_own_response_once() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, n| Reply::Bytes(ok_response(&format!("response {n}"), "")));
    let client = HttpClient::new().unwrap();
    let calls = Rc::new(RefCell::new(Vec::new()));
    for i in 0..3 {
        let c = calls.clone();
        let out: Outcome = Rc::default();
        let o = out.clone();
        client.get(&server.url(&format!("/{i}")), move |r| {
            c.borrow_mut().push(
                r.as_ref()
                    .map(|r| r.text().into_owned())
                    .unwrap_or_default(),
            );
            *o.borrow_mut() = Some(r);
        });
        wait(&mut ev, &out).unwrap();
    }
    // Let any stray second callback surface.
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*calls.borrow(), ["response 0", "response 1", "response 2"]);
    let conns: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "connections: {conns:?}"
    );
}

#[test]
fn a_seventh_concurrent_request_waits_for_a_free_connection() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(vec![ok_response("slow", "")], Duration::from_millis(300))
    });
    let client = HttpClient::new().unwrap();
    let outs: Vec<Outcome> = (0..7)
        .map(|i| {
            send(
                &client,
                HttpRequest::get(&server.url(&format!("/{i}"))).unwrap(),
            )
        })
        .collect();
    // While the first six are being answered, only six connections exist.
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        >= 6));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(server.requests().len(), 6, "the seventh request must wait");
    assert!(client.open_connections() <= 6);
    for out in &outs {
        assert_eq!(wait(&mut ev, out).unwrap().text(), "slow");
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 7);
    let distinct: std::collections::HashSet<usize> = seen.iter().map(|r| r.connection).collect();
    assert_eq!(
        distinct.len(),
        6,
        "the seventh request reused a freed connection"
    );
}

#[test]
fn repeated_and_alternating_urls_each_reach_their_own_path() {
    // The client reuses its last URL parse for the same text: every request must still go to
    // the URL it was given, and a bad URL must fail every time, not only the first.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("", "")));
    let client = HttpClient::new().unwrap();
    let paths = ["/a", "/a", "/b", "/a?q=1", "/a", "/b"];
    for path in paths {
        let out = get_text(&client, &server.url(path));
        wait(&mut ev, &out).unwrap();
    }
    let lines: Vec<String> = server.requests().iter().map(|r| r.line.clone()).collect();
    let expected: Vec<String> = paths.iter().map(|p| format!("GET {p} HTTP/1.1")).collect();
    assert_eq!(lines, expected);
    for _ in 0..2 {
        let out = get_text(&client, "http://[::1");
        match wait(&mut ev, &out) {
            Err(HttpError::InvalidUrl { url, .. }) => assert_eq!(url, "http://[::1"),
            other => panic!("expected InvalidUrl, got {other:?}"),
        }
    }
}

#[test]
fn query_is_sent_and_fragment_never() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("", "")));
    let client = HttpClient::new().unwrap();
    get(
        &mut ev,
        &client,
        &format!("http://{}?x=1&y=2#frag", server.addr),
    )
    .unwrap();
    get(&mut ev, &client, &server.url("/p/q?z=3#other")).unwrap();
    let lines: Vec<String> = server.requests().iter().map(|r| r.line.clone()).collect();
    assert_eq!(lines, ["GET /?x=1&y=2 HTTP/1.1", "GET /p/q?z=3 HTTP/1.1"]);
}

#[test]
fn ipv6_literal_urls_work() {
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let host = req
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("host:"))
            .unwrap_or("")
            .to_string();
        s.write_all(&ok_response(&host, "")).unwrap();
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let r = get(&mut ev, &client, &format!("http://[::1]:{port}/")).unwrap();
    assert_eq!(r.text(), format!("Host: [::1]:{port}"));
}

#[test]
fn url_user_info_becomes_padded_basic_auth() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        Reply::Bytes(ok_response(req.header("authorization").unwrap_or(""), ""))
    });
    let client = HttpClient::new().unwrap();
    let r = get(
        &mut ev,
        &client,
        &format!("http://Aladdin:open%20sesame@{}/", server.addr),
    )
    .unwrap();
    assert_eq!(r.text(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
}

#[test]
fn redirect_post_to_get_and_cross_origin_drops_authorization() {
    let mut ev = EventLoop::new().unwrap();
    let other = ScriptServer::start(|req, _| {
        Reply::Bytes(ok_response(
            &format!(
                "{} auth={}",
                req.line,
                req.header("authorization").unwrap_or("-")
            ),
            "",
        ))
    });
    let target = other.url("/final");
    let server = ScriptServer::start(move |req, _| {
        if req.line.starts_with("POST /start") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /same\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            Reply::Bytes(
                format!(
                    "HTTP/1.1 307 Temporary\r\nLocation: {target}\r\nContent-Length: 3\r\n\r\nxyz"
                )
                .into_bytes(),
            )
        }
    });
    let client = HttpClient::new().unwrap();
    let mut req = HttpRequest::post(&server.url("/start"), "data").unwrap();
    req.set_bearer_auth("secret");
    let r = wait(&mut ev, &send(&client, req)).unwrap();
    assert_eq!(r.text(), "GET /final HTTP/1.1 auth=-");
    assert_eq!(r.redirect_count(), 2);
    assert_eq!(r.url().as_str(), other.url("/final"));
    let first_hop = &server.requests()[1];
    assert_eq!(
        first_hop.line, "GET /same HTTP/1.1",
        "302 turns POST into GET"
    );
    assert_eq!(
        first_hop.header("authorization"),
        Some("Bearer secret"),
        "same origin keeps credentials"
    );
}

/// RELIABILITY promise 7: a redirect's log line names the next URL without its query or
/// fragment (signed URLs and `?key=` carry credentials there), as the SSE client's does.
#[test]
fn the_redirect_log_line_shows_no_query_of_the_next_url() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /start") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /next?sig=redirect-marker-71d0#frag\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response("done", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let r = wait(
        &mut ev,
        &send(&client, HttpRequest::get(&server.url("/start")).unwrap()),
    )
    .unwrap();
    assert_eq!(r.text(), "done");
    assert!(
        server.requests()[1].line.contains("redirect-marker-71d0"),
        "the query is followed"
    );
    let logs = logs.0.lock().unwrap();
    let line = format!("redirect to {}?…", server.url("/next"));
    assert!(logs.iter().any(|l| l.contains(&line)), "{logs:?}");
    let leaks: Vec<&String> = logs.iter().filter(|l| l.contains("marker-71d0")).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A `Cookie` field the caller set goes with a redirect that stays on the origin, as the first
/// request combined it: the caller's field wins and the jar adds none, so no cookie is sent
/// twice (it was dropped on every hop, logging the caller out after any same-origin redirect).
/// A hop to another origin drops it (curl CVE-2022-27776) and sends what the jar holds for the
/// new URL instead.
#[test]
fn a_user_cookie_is_kept_on_a_same_origin_redirect_and_dropped_cross_origin() {
    let mut ev = EventLoop::new().unwrap();
    let other = ScriptServer::start(|_, _| Reply::Bytes(ok_response("other", "")));
    let target = other.url("/final");
    let server = ScriptServer::start(move |req, _| {
        let path = req.line.split(' ').nth(1).unwrap_or_default();
        match path {
            "/start" => Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nSet-Cookie: jar=1; Path=/\r\nLocation: /same\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            ),
            _ => Reply::Bytes(
                format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n")
                    .into_bytes(),
            ),
        }
    });
    let client = HttpClient::new().unwrap();
    let request = HttpRequest::get(&server.url("/start"))
        .unwrap()
        .with_header("Cookie", "mine=1");
    let r = wait(&mut ev, &send(&client, request)).unwrap();
    assert_eq!(r.text(), "other");
    assert_eq!(r.redirect_count(), 2);
    let cookies = |seen: &support::SeenRequest| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
            .map(|(_, value)| value.clone())
            .collect()
    };
    let here = server.requests();
    assert_eq!(here.len(), 2);
    assert_eq!(cookies(&here[0]), ["mine=1"]);
    assert_eq!(cookies(&here[1]), ["mine=1"], "same-origin hop");
    let there = other.requests();
    assert_eq!(there.len(), 1);
    // Cookies are not isolated by port (RFC 6265 §8.5): the jar's cookie for 127.0.0.1 goes to
    // the other port, the caller's field does not.
    assert_eq!(cookies(&there[0]), ["jar=1"], "cross-origin hop");
}

/// A redirect that drops the body drops `Expect: 100-continue` with it: RFC 9110 §10.1.1 says a
/// client MUST NOT send that expectation without content, and the bodiless GET after a 303 went
/// out with it (a server may then wait for a body that never comes, or refuse with 417). A 307,
/// which keeps the body, keeps it.
#[test]
fn a_redirect_that_drops_the_body_drops_its_expectation() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let target = req.line.split(' ').nth(1).unwrap_or_default();
        match target {
            "/see" => Reply::Bytes(
                b"HTTP/1.1 303 See Other\r\nLocation: /seen\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            "/again" => Reply::Bytes(
                b"HTTP/1.1 307 Temporary\r\nLocation: /kept\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            _ => Reply::Bytes(ok_response(
                &format!(
                    "{} expect={}",
                    req.line,
                    req.header("expect").unwrap_or("-")
                ),
                "",
            )),
        }
    });
    let client = HttpClient::new().unwrap();
    let post = |path: &str| {
        HttpRequest::post(&server.url(path), "data")
            .unwrap()
            .with_header("Expect", "100-continue")
    };
    let seen = wait(&mut ev, &send(&client, post("/see"))).unwrap();
    assert_eq!(seen.text(), "GET /seen HTTP/1.1 expect=-");
    let kept = wait(&mut ev, &send(&client, post("/again"))).unwrap();
    assert_eq!(kept.text(), "POST /kept HTTP/1.1 expect=100-continue");
}

#[test]
fn too_many_redirects_is_an_error() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n".to_vec(),
        )
    });
    let client = HttpClient::new().unwrap();
    let err = get(&mut ev, &client, &server.url("/")).unwrap_err();
    assert!(
        matches!(err, HttpError::TooManyRedirects { limit: 5 }),
        "{err}"
    );
}

#[test]
fn stale_pooled_connection_is_retried_once_on_a_fresh_one() {
    let mut ev = EventLoop::new().unwrap();
    // The first connection answers once and then closes without saying so.
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::BytesThenClose(ok_response("first", ""))
        } else {
            Reply::Bytes(ok_response("second", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/a")).unwrap().text(),
        "first"
    );
    assert_eq!(
        get(&mut ev, &client, &server.url("/b")).unwrap().text(),
        "second"
    );
}

/// A GET replayed because its reused connection turned out closed goes on a new connection,
/// not on another idle one: servers time idle connections out together, so the next idle one
/// is as likely to be closed as the request reaches it, and a replay that fails is final. Here
/// every reused connection is closed by the server as the request arrives; the GET failed with
/// `EmptyResponse` after its replay went on the second idle connection.
#[test]
fn a_replayed_get_goes_on_a_new_connection_not_on_another_idle_one() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let path = req.line.split(' ').nth(1).unwrap_or_default();
        match (path, req.connection) {
            ("/warm", _) => Reply::Bytes(ok_response("warm", "")),
            // The two warmed connections: closed as their next request arrives.
            (_, 0 | 1) => Reply::Close,
            _ => Reply::Bytes(ok_response(&format!("{path} on {}", req.connection), "")),
        }
    });
    let client = client_with_two_idle_connections(&mut ev, &server);
    assert_eq!(
        get(&mut ev, &client, &server.url("/r")).unwrap().text(),
        "/r on 2"
    );
    let lines: Vec<(usize, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.connection, r.line))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[2].0 < 2,
        "the first try went on a pooled connection: {lines:?}"
    );
    // The idle connection the replay passed over stays pooled (and is closed by the server
    // only when a request reaches it).
    assert_eq!(client.open_connections(), 2);
}

/// The retry budget is per hop: a GET that was already sent again once (its pooled connection
/// closed without answering) and is then redirected onto another pooled connection that also
/// closes without answering is sent again for that hop too. It failed with `EmptyResponse` (or
/// `ConnectionReset`), because the first hop's retry counted against the second.
#[test]
fn a_redirect_hop_on_a_stale_connection_is_retried_after_an_earlier_hop_was() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let path = req.line.split(' ').nth(1).unwrap_or_default();
        match (path, req.connection) {
            // Each request that comes second on its connection finds it closed.
            ("/start", 0) | ("/next", 1) => Reply::Close,
            ("/start", _) => Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            _ => Reply::Bytes(ok_response(&format!("{path} on {}", req.connection), "")),
        }
    });
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/warm")).unwrap().text(),
        "/warm on 0"
    );
    let response = get(&mut ev, &client, &server.url("/start")).unwrap();
    assert_eq!(response.text(), "/next on 2");
    assert_eq!(response.redirect_count(), 1);
    let lines: Vec<(usize, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.connection, r.line))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
}

#[test]
fn close_delimited_body_completes_at_eof() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec())
    });
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/")).unwrap().text(),
        "until the end"
    );
}

#[test]
fn eof_in_the_middle_of_a_body_is_an_error_not_a_hang() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("chunked") {
            Reply::BytesThenClose(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
            )
        } else {
            Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf".to_vec())
        }
    });
    let client = HttpClient::new().unwrap();
    let e = get(&mut ev, &client, &server.url("/length")).unwrap_err();
    assert!(
        matches!(
            e,
            HttpError::IncompleteBody {
                received: 4,
                expected: Some(10)
            }
        ),
        "{e}"
    );
    let e = get(&mut ev, &client, &server.url("/chunked")).unwrap_err();
    assert!(matches!(e, HttpError::IncompleteBody { .. }), "{e}");
}

#[test]
fn closed_without_a_response_is_empty_response() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Close);
    let client = HttpClient::new().unwrap();
    let e = get(&mut ev, &client, &server.url("/")).unwrap_err();
    assert!(matches!(e, HttpError::EmptyResponse), "{e}");
}

#[test]
fn total_timeout_fires() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Stall(Duration::from_secs(5)));
    let client = HttpClient::new().unwrap();
    let started = Instant::now();
    let out = send(
        &client,
        HttpRequest::get(&server.url("/"))
            .unwrap()
            .with_timeout(Duration::from_millis(300)),
    );
    let e = wait(&mut ev, &out).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Requests with different total timeouts each end at their own deadline, whatever the order
/// they were sent in: a later request with a shorter timeout ends first, and none ends before
/// its deadline (the client watches every deadline with one timer; tenth round).
#[test]
fn total_timeouts_of_several_requests_each_fire_at_their_own_deadline() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Stall(Duration::from_secs(5)));
    let client = HttpClient::new().unwrap();
    let started = Instant::now();
    let with_timeout = |ms| {
        let request = HttpRequest::get(&server.url("/")).unwrap();
        send(&client, request.with_timeout(Duration::from_millis(ms)))
    };
    let long = with_timeout(1500);
    let short = with_timeout(200);
    let middle = with_timeout(700);
    let is_total = |r: &Result<HttpResponse, HttpError>| {
        matches!(
            r,
            Err(HttpError::Timeout(kdnet::network::TimeoutPhase::Total))
        )
    };
    let r = wait_at_most(&mut ev, &short, Duration::from_secs(10));
    assert!(is_total(&r), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(middle.borrow().is_none() && long.borrow().is_none());
    let r = wait_at_most(&mut ev, &middle, Duration::from_secs(10));
    assert!(is_total(&r), "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(long.borrow().is_none());
    let r = wait_at_most(&mut ev, &long, Duration::from_secs(10));
    assert!(is_total(&r), "{r:?}");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(client.pending_requests(), 0);
}

#[test]
fn read_timeout_names_the_phase_it_fired_in() {
    use kdnet::network::TimeoutPhase;
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /silent-head ") {
            Reply::Stall(Duration::from_secs(5))
        } else {
            // The head and part of the body arrive together, then nothing more.
            Reply::Pieces(
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf".to_vec()],
                Duration::from_secs(5),
            )
        }
    });
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_read_timeout(Duration::from_millis(200)));
    let head = get(&mut ev, &client, &server.url("/silent-head")).unwrap_err();
    assert!(
        matches!(head, HttpError::Timeout(TimeoutPhase::ResponseHead)),
        "{head:?}"
    );
    let body = get(&mut ev, &client, &server.url("/silent-body")).unwrap_err();
    assert!(
        matches!(body, HttpError::Timeout(TimeoutPhase::BodyIdle)),
        "the head had arrived, yet: {body:?}"
    );
}

#[test]
fn gzip_body_is_decoded_transparently() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(b"compressed hello").unwrap();
    let body = gz.finish().unwrap();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(move |req, _| {
        assert!(req.header("accept-encoding").unwrap_or("").contains("gzip"));
        Reply::Bytes(response.clone())
    });
    let client = HttpClient::new().unwrap();
    let response = get(&mut ev, &client, &server.url("/")).unwrap();
    assert_eq!(response.text(), "compressed hello");
    // The fields describing the encoded body are gone: they would be wrong about this one.
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(response.content_length(), None);
}

#[test]
fn streaming_delivers_body_pieces_as_they_arrive() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                b"5\r\nfirst\r\n".to_vec(),
                b"6\r\nsecond\r\n0\r\n\r\n".to_vec(),
            ],
            Duration::from_millis(50),
        )
    });
    let client = HttpClient::new().unwrap();
    let pieces = Rc::new(RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));
    let (p, d) = (pieces.clone(), done.clone());
    client.send_streaming(
        HttpRequest::get(&server.url("/")).unwrap(),
        move |ev| match ev {
            StreamEvent::Head(r) => p.borrow_mut().push(format!("head {}", r.status())),
            StreamEvent::Data(b) => p.borrow_mut().push(String::from_utf8_lossy(b).into_owned()),
        },
        move |r| {
            assert!(r.unwrap().body().is_empty());
            d.set(true);
        },
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || done.get()));
    assert_eq!(*pieces.borrow(), ["head 200", "first", "second"]);
}

/// A gzip body flushed by the server reaches a streaming callback at once, not when the next
/// compressed bytes arrive (the decoder used to keep its last output until then).
#[test]
fn streaming_gzip_body_is_delivered_when_its_flushed_piece_arrives() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(b"first").unwrap();
    gz.flush().unwrap();
    let first = std::mem::take(gz.get_mut());
    gz.write_all(b" second").unwrap();
    let rest = gz.finish().unwrap();
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    let mut head =
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    head.extend_from_slice(&chunk(&first));
    let mut tail = chunk(&rest);
    tail.extend_from_slice(b"0\r\n\r\n");
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(move |_, _| {
        Reply::Pieces(vec![head.clone(), tail.clone()], Duration::from_secs(3))
    });
    let client = HttpClient::new().unwrap();
    let data = Rc::new(RefCell::new(Vec::<u8>::new()));
    let done = Rc::new(Cell::new(false));
    let (d, f) = (data.clone(), done.clone());
    client.send_streaming(
        HttpRequest::get(&server.url("/")).unwrap(),
        move |ev| {
            if let StreamEvent::Data(b) = ev {
                d.borrow_mut().extend_from_slice(b);
            }
        },
        move |r| {
            r.unwrap();
            f.set(true);
        },
    );
    // The second piece comes 3 s after the first.
    assert!(
        run_until(&mut ev, Duration::from_millis(1500), || data
            .borrow()
            .as_slice()
            == b"first"),
        "got {:?} before the next piece",
        String::from_utf8_lossy(&data.borrow())
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || done.get()));
    assert_eq!(data.borrow().as_slice(), b"first second");
}

#[test]
fn malformed_and_hostile_heads_are_typed_errors() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let raw: Vec<u8> = if req.line.contains("/huge-length") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 1180591620717411303424\r\n\r\n".to_vec()
        } else if req.line.contains("/plus") {
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec()
        } else {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..10_000 {
                h.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        Reply::BytesThenClose(raw)
    });
    let client = HttpClient::new().unwrap();
    assert!(matches!(
        get(&mut ev, &client, &server.url("/huge-length")),
        Err(HttpError::Protocol(_))
    ));
    assert!(matches!(
        get(&mut ev, &client, &server.url("/plus")),
        Err(HttpError::Protocol(_))
    ));
    assert!(matches!(
        get(&mut ev, &client, &server.url("/many")),
        Err(HttpError::TooManyHeaders { .. } | HttpError::HeadTooLarge { .. })
    ));
}

#[test]
fn cancel_reports_cancelled_and_leaves_other_requests_alone() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            Reply::Stall(Duration::from_secs(3))
        } else {
            Reply::Bytes(ok_response("fast", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let slow: Outcome = Rc::default();
    let s = slow.clone();
    let id = client.get(&server.url("/slow"), move |r| *s.borrow_mut() = Some(r));
    let fast = send(&client, HttpRequest::get(&server.url("/fast")).unwrap());
    assert!(client.cancel(id));
    assert!(matches!(wait(&mut ev, &slow), Err(HttpError::Cancelled)));
    assert_eq!(wait(&mut ev, &fast).unwrap().text(), "fast");
}

#[test]
fn send_and_wait_runs_the_loop_until_done() {
    let _ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("waited", "")));
    let client = HttpClient::new().unwrap();
    let r = client
        .send_and_wait(HttpRequest::get(&server.url("/")).unwrap())
        .unwrap();
    assert_eq!(r.text(), "waited");
}

/// A server that accepts and never answers (its connections held for 10 s).
fn silent_server() -> std::net::SocketAddr {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let _held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(10));
    });
    addr
}

/// A quit (from another thread, or from a slot) ends `send_and_wait`'s nested loop, as Qt's
/// `exit()` ends nested loops: the request is cancelled and the quit stays for `run()`. It
/// waited for the response (here, for ever), so a program asked to end did not.
#[test]
fn a_quit_ends_send_and_wait_and_stays_for_run() {
    let mut ev = EventLoop::new().unwrap();
    let addr = silent_server();
    let client = HttpClient::new().unwrap();
    let handle = ev.handle();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        handle.exit(3);
    });
    let started = Instant::now();
    let r = client.send_and_wait(HttpRequest::get(&format!("http://{addr}/")).unwrap());
    assert!(matches!(r, Err(HttpError::Cancelled)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(kdnet::foundation::exit_requested(), Some(3));
    assert_eq!(ev.run(), 3, "the quit is left for run()");
    assert_eq!(kdnet::foundation::exit_requested(), None);

    // From a slot that asked for the quit before waiting: at once.
    let handle = ev.handle();
    let outcome = Rc::new(RefCell::new(None));
    let o = outcome.clone();
    let c = client.clone();
    ev.post(move || {
        handle.quit();
        let started = Instant::now();
        let r = c.send_and_wait(HttpRequest::get(&format!("http://{addr}/")).unwrap());
        *o.borrow_mut() = Some((r.map(|_| ()), started.elapsed()));
    });
    assert_eq!(ev.run(), 0);
    let (r, took) = outcome.borrow_mut().take().unwrap();
    assert!(matches!(r, Err(HttpError::Cancelled)), "{r:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn upload_progress_counts_body_bytes_only_and_ends_at_the_total() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|req, _| Reply::Bytes(ok_response(&req.body.len().to_string(), "")));
    let client = HttpClient::new().unwrap();
    let progress = upload_reports(&client);
    let body = vec![b'u'; 4 * 1024 * 1024];
    let r = wait(
        &mut ev,
        &send(
            &client,
            HttpRequest::post(&server.url("/up"), body).unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(r.text(), (4 * 1024 * 1024).to_string());
    let progress = progress.borrow();
    assert!(!progress.is_empty());
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "not monotonic: {progress:?}"
    );
    assert!(
        progress
            .iter()
            .all(|&(s, t)| t == 4 * 1024 * 1024 && s <= t)
    );
    assert_eq!(progress.last().unwrap().0, 4 * 1024 * 1024);
    if progress.len() > 1 {
        // The first report covers the head plus some body: it must not count the head.
        assert!(progress[0].0 < progress[0].1);
    }
}

/// Upload progress is per hop, as curl's progress callback counts it (its counters restart with
/// each followed redirect): a 307 or 308, which sends the body again, reports it again from the
/// start after the first hop's `(total, total)`, with the same total, each hop's reports
/// monotonic; a 303 (and a 301/302 of a POST), which sends no body, reports nothing more.
#[test]
fn upload_progress_starts_again_on_a_redirect_that_sends_the_body_again() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let status = ["/307", "/308", "/303"]
            .into_iter()
            .find(|p| req.line.contains(&format!("{p} ")));
        Reply::Bytes(match status {
            Some(path) => format!(
                "HTTP/1.1 {} Moved\r\nLocation: /done\r\nContent-Length: 0\r\n\r\n",
                &path[1..]
            )
            .into_bytes(),
            None => ok_response(&req.body.len().to_string(), ""),
        })
    });
    let client = HttpClient::new().unwrap();
    let progress = upload_reports(&client);
    const TOTAL: u64 = 1024 * 1024;
    for (path, hops_with_body) in [("/307", 2), ("/308", 2), ("/303", 1)] {
        progress.borrow_mut().clear();
        let request = HttpRequest::post(&server.url(path), vec![b'u'; TOTAL as usize]).unwrap();
        let r = wait(&mut ev, &send(&client, request)).unwrap();
        let sent_last = if hops_with_body == 2 { TOTAL } else { 0 };
        assert_eq!(r.text(), sent_last.to_string(), "{path}");
        let progress = progress.borrow();
        assert!(
            progress.iter().all(|&(s, t)| t == TOTAL && s <= t),
            "{path}: {progress:?}"
        );
        // Each hop's reports end with its `(total, total)`, once.
        let runs: Vec<&[(u64, u64)]> = progress.split_inclusive(|&(s, _)| s == TOTAL).collect();
        assert_eq!(runs.len(), hops_with_body, "{path}: {progress:?}");
        for run in &runs {
            assert_eq!(run.last(), Some(&(TOTAL, TOTAL)), "{path}: {progress:?}");
            assert!(
                run.windows(2).all(|w| w[0].0 < w[1].0),
                "{path}: {progress:?}"
            );
        }
    }
}

/// KDNetwork H17 asks for download progress that reports the bytes actually received, once. The
/// body of a redirect being followed is read and thrown away: it is not the response's and is
/// not reported (it came as `(10, Some(10))` before the real body's `(0, …)`). The total is the
/// announced length of the body as transferred, also when the client decodes it (it was `None`
/// for a gzip body, whose `Content-Length` the response no longer carries); a HEAD response has
/// no body whatever its `Content-Length` says (it was reported as `(0, Some(12345))`); and a
/// read that brings no body bytes reports nothing new, except the end, which is reported with
/// its total (`(n, Some(n))`, also for a chunked body).
#[test]
fn download_progress_reports_the_delivered_body_once_with_its_transfer_total() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let mut ev = EventLoop::new().unwrap();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&[b'a'; 50_000]).unwrap();
    let gz = encoder.finish().unwrap();
    let gz_len = gz.len() as u64;
    let server = ScriptServer::start(move |req, _| {
        if req.line.starts_with("HEAD") {
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n".to_vec())
        } else if req.line.contains("/redirect") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /gz\r\nContent-Length: 10\r\n\r\n0123456789"
                    .to_vec(),
            )
        } else if req.line.contains("/chunked") {
            Reply::Pieces(
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
                    // A read of framing only: no body byte, so nothing new to report.
                    b"6\r\n".to_vec(),
                    b" world\r\n".to_vec(),
                    b"0\r\n\r\n".to_vec(),
                ],
                Duration::from_millis(50),
            )
        } else {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                gz.len()
            )
            .into_bytes();
            r.extend_from_slice(&gz);
            Reply::Bytes(r)
        }
    });
    let client = HttpClient::new().unwrap();
    type Reports = Vec<(u64, Option<u64>)>;
    let progress: Rc<RefCell<Reports>> = Rc::default();
    let p = progress.clone();
    client
        .download_progress
        .connect(move |&(_, received, total)| p.borrow_mut().push((received, total)))
        .release();

    let r = get(&mut ev, &client, &server.url("/redirect")).unwrap();
    assert_eq!(r.body().len(), 50_000);
    assert_eq!(
        progress.take(),
        [(gz_len, Some(gz_len))],
        "the redirect's body is not reported, the gzip body's total is its announced length"
    );

    let head = wait(
        &mut ev,
        &send(
            &client,
            HttpRequest::get(&server.url("/head"))
                .unwrap()
                .with_method(HttpMethod::Head),
        ),
    )
    .unwrap();
    assert_eq!(head.content_length(), Some(12345));
    assert_eq!(
        progress.take(),
        [(0, Some(0))],
        "a HEAD response has no body"
    );

    let chunked = get(&mut ev, &client, &server.url("/chunked")).unwrap();
    assert_eq!(chunked.text(), "hello world");
    assert_eq!(
        progress.take(),
        [(5, None), (11, None), (11, Some(11))],
        "each count once; the end with its total"
    );
}

#[test]
fn heads_split_across_reads_are_reassembled_with_and_without_interim_responses() {
    // Each piece is a separate write with a pause, so the client sees separate reads: a 1xx
    // plus the start of the final head, the rest of the head plus part of the body, then the
    // rest of the body; a 1xx split so that it completes in a read that ends inside the final
    // head; and a head split in the middle of a field.
    let splits: [&[&[u8]]; 3] = [
        &[
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nConte",
            b"nt-Length: 5\r\nX-Final: 1\r\n\r\nhel",
            b"lo",
        ],
        &[
            b"HTTP/1.1 100 Cont",
            b"inue\r\n\r\nHTTP/1.1 200 OK\r\nX-Final: 1\r\n",
            b"Content-Length: 5\r\n\r\nhello",
        ],
        &[
            b"HTTP/1.1 200 OK\r\nX-Fin",
            b"al: 1\r\nContent-Length: 5\r\n",
            b"\r\nhello",
        ],
    ];
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    for pieces in splits {
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let server = ScriptServer::start(move |_, _| {
            Reply::Pieces(pieces.clone(), Duration::from_millis(50))
        });
        let response = get(&mut ev, &client, &server.url("/")).unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("x-final"), Some("1"));
        assert_eq!(response.text(), "hello");
    }
}

#[test]
fn fields_the_request_sets_itself_are_sent_once_and_win_over_the_added_ones() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /login") {
            Reply::Bytes(ok_response("in", "Set-Cookie: session=abc; Path=/\r\n"))
        } else {
            Reply::Bytes(ok_response("ok", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    get(&mut ev, &client, &server.url("/login")).unwrap();

    // Added by the client: Host (with the port), Accept-Encoding, Content-Length, the jar's cookie.
    let post = HttpRequest::post(&server.url("/auto"), "12345").unwrap();
    wait(&mut ev, &send(&client, post)).unwrap();
    // Set by the request: each is sent once, as given.
    let own = HttpRequest::post(&server.url("/own"), "12345")
        .unwrap()
        .with_header("Host", "example.test")
        .with_header("Accept-Encoding", "identity")
        .with_header("Content-Length", "5")
        .with_header("Cookie", "mine=1");
    wait(&mut ev, &send(&client, own)).unwrap();

    let seen = server.requests();
    let fields = |n: usize, name: &str| -> Vec<String> {
        seen[n]
            .headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .collect()
    };
    let port = server.addr.port();
    assert_eq!(fields(1, "host"), [format!("127.0.0.1:{port}")]);
    assert_eq!(fields(1, "content-length"), ["5"]);
    assert_eq!(fields(1, "cookie"), ["session=abc"]);
    assert_eq!(fields(1, "accept-encoding").len(), 1);
    assert_eq!(fields(2, "host"), ["example.test"]);
    assert_eq!(fields(2, "accept-encoding"), ["identity"]);
    assert_eq!(fields(2, "content-length"), ["5"]);
    assert_eq!(fields(2, "cookie"), ["mine=1"]);
    assert_eq!(seen[2].body, b"12345");
}

#[test]
fn a_redirect_whose_body_is_not_valid_gzip_is_still_followed() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /old") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let response = get(&mut ev, &client, &server.url("/old")).unwrap();
    assert_eq!(response.text(), "arrived");
    assert_eq!(server.requests().len(), 2);
}

fn client_with_one_connection_per_host() -> Rc<HttpClient> {
    let mut session = HttpSession::new();
    session.set_max_connections_per_host(1);
    HttpClient::with_session(session).unwrap()
}

/// A keep-alive server answering "done" (after 300 ms for `/slow`), and a `/slow` request to it
/// from `client` cancelled once the server has it; the request has reported `Cancelled`.
fn cancel_a_request_the_server_is_working_on(
    ev: &mut EventLoop,
    client: &HttpClient,
) -> ScriptServer {
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            std::thread::sleep(Duration::from_millis(300));
        }
        Reply::Bytes(ok_response("done", ""))
    });
    let slow: Outcome = Rc::default();
    let s = slow.clone();
    let id = client.get(&server.url("/slow"), move |r| *s.borrow_mut() = Some(r));
    assert!(run_until(ev, Duration::from_secs(5), || !server
        .requests()
        .is_empty()));
    assert!(client.cancel(id));
    assert!(matches!(
        wait_at_most(ev, &slow, Duration::from_secs(5)),
        Err(HttpError::Cancelled)
    ));
    server
}

/// `cancel()` of a request on a connection closes that connection (its answer may be on the way),
/// which frees the host's slot: the next request to the host does not wait behind it (it once
/// waited for as long as the server kept the connection open).
#[test]
fn cancelling_an_in_flight_request_frees_its_connection_for_the_next_one() {
    let mut ev = EventLoop::new().unwrap();
    let client = client_with_one_connection_per_host();
    let server = cancel_a_request_the_server_is_working_on(&mut ev, &client);
    // The user moves on: the next request to the same host.
    let next = send(&client, HttpRequest::get(&server.url("/next")).unwrap());
    let result = wait_at_most(&mut ev, &next, Duration::from_secs(5));
    assert_eq!(result.unwrap().text(), "done");
}

/// Without a per-host limit: a cancelled request's connection is not left open and counted as
/// active; sequential requests afterwards use one connection.
#[test]
fn a_connection_whose_request_was_cancelled_is_not_leaked() {
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let server = cancel_a_request_the_server_is_working_on(&mut ev, &client);
    // Let the cancelled request's response arrive and be dealt with.
    run_until(&mut ev, Duration::from_millis(600), || false);
    assert_eq!(client.pending_requests(), 0);
    for i in 0..3 {
        let out = send(&client, HttpRequest::get(&server.url("/x")).unwrap());
        assert_eq!(
            wait_at_most(&mut ev, &out, Duration::from_secs(5))
                .unwrap()
                .text(),
            "done"
        );
        assert!(
            client.open_connections() <= 1,
            "request {i}: {} connections open to one host for sequential requests",
            client.open_connections()
        );
    }
}

/// A pooled connection the server closed while the client's loop was busy (no turn since, so
/// its end of stream is still unread) is not given a request: a POST sent then went out on it
/// and failed (the server never saw it; a POST is never replayed), where curl and ureq check an
/// idle connection for an end of stream before reusing it. It now goes out on a new connection.
#[test]
fn a_post_does_not_go_out_on_a_pooled_connection_the_server_closed_meanwhile() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        support::read_request_head(&mut reader).unwrap();
        (&stream).write_all(&ok_response("warm", "")).unwrap();
        // The client's loop stops turning; then the server's keep-alive timeout ends.
        close_rx.recv().unwrap();
        drop(reader);
        drop(stream);
        closed_tx.send(()).unwrap();
        // Whatever comes next comes on a new connection.
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let head = support::read_request_head(&mut reader).unwrap();
        let mut body = vec![0; head.header("content-length").unwrap().parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        let reply = format!("{} {}", head.request_line, String::from_utf8_lossy(&body));
        stream.write_all(&ok_response(&reply, "")).unwrap();
        std::thread::sleep(Duration::from_secs(5));
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let warm = send(
        &client,
        HttpRequest::get(&format!("http://{addr}/warm")).unwrap(),
    );
    assert_eq!(wait(&mut ev, &warm).unwrap().text(), "warm");
    assert_eq!(client.open_connections(), 1);
    close_tx.send(()).unwrap();
    closed_rx.recv().unwrap();
    // The FIN crosses loopback within the server's close; this leaves it time to, without the
    // client's loop turning (which would read it and close the connection: no race left).
    std::thread::sleep(Duration::from_millis(50));
    let pay = send(
        &client,
        HttpRequest::post(&format!("http://{addr}/pay"), "amount=100").unwrap(),
    );
    let result = wait_at_most(&mut ev, &pay, Duration::from_secs(5));
    assert_eq!(
        result.unwrap().text(),
        "POST /pay HTTP/1.1 amount=100",
        "the POST went out on the closed connection"
    );
}

/// A server that closes right after a response without announcing it (no `Connection: close`):
/// its end of stream comes in the same read as the response. A POST queued for the host's only
/// connection was handed that connection as the response completed, went out on it and failed
/// with `EmptyResponse`. The pool looks for unread input before handing a connection on, as it
/// does before reusing an idle one.
#[test]
fn a_queued_post_is_not_handed_a_connection_whose_close_waits_unread() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let Some(head) = support::read_request_head(&mut reader) else {
                continue;
            };
            let length = head
                .header("content-length")
                .map_or(0, |l| l.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let reply = format!("{} {}", head.request_line, String::from_utf8_lossy(&body));
            // One request per connection, closed at once, unannounced. Corked, the response and
            // the end of stream leave in one segment: the client reads both in one go.
            socket2::SockRef::from(&stream).set_tcp_cork(true).unwrap();
            let _ = stream.write_all(&ok_response(&reply, ""));
        }
    });
    let mut ev = EventLoop::new().unwrap();
    let client = client_with_one_connection_per_host();
    let first = send(
        &client,
        HttpRequest::get(&format!("http://{addr}/first")).unwrap(),
    );
    let pay = send(
        &client,
        HttpRequest::post(&format!("http://{addr}/pay"), "amount=100").unwrap(),
    );
    assert_eq!(
        wait(&mut ev, &first).unwrap().text(),
        "GET /first HTTP/1.1 "
    );
    assert_eq!(
        wait_at_most(&mut ev, &pay, Duration::from_secs(5))
            .unwrap()
            .text(),
        "POST /pay HTTP/1.1 amount=100"
    );
}

/// A POST written in full on a reused keep-alive connection that the server closes without
/// answering is not sent again (RFC 9112 §9.3.1: no automatic retry of a non-idempotent method —
/// the server may have applied it); it fails instead.
#[test]
fn a_post_is_never_replayed_after_the_connection_drops_without_a_response() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("POST") {
            // Reads the whole request (it may have charged the card), then the connection dies.
            // The replay, if any, is answered.
            static POSTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if POSTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Reply::Close;
            }
            return Reply::Bytes(ok_response("charged again", ""));
        }
        Reply::Bytes(ok_response("warm", ""))
    });
    let client = HttpClient::new().unwrap();
    // Warm a keep-alive connection.
    let warm = send(&client, HttpRequest::get(&server.url("/warm")).unwrap());
    assert_eq!(
        wait_at_most(&mut ev, &warm, Duration::from_secs(5))
            .unwrap()
            .text(),
        "warm"
    );
    let pay = send(
        &client,
        HttpRequest::post(&server.url("/pay"), "amount=100").unwrap(),
    );
    let result = wait_at_most(&mut ev, &pay, Duration::from_secs(5));
    let posts = server
        .requests()
        .iter()
        .filter(|r| r.line.starts_with("POST"))
        .count();
    assert_eq!(
        posts,
        1,
        "the POST reached the server {posts} times; the client reported {:?}",
        result.map(|r| r.text().into_owned())
    );
}

/// Bytes after a response in the same read make its connection unusable also when the response
/// ends exactly at a 16 KiB delivery slice: they never become the next queued request's response
/// (they were sent before that request was written).
#[test]
fn bytes_after_a_response_never_become_the_next_requests_response() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/a") {
            let head_for = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            // head + body = exactly 16 KiB
            let mut len = 16 * 1024 - head_for(16_000).len();
            len = 16 * 1024 - head_for(len).len();
            let mut bytes = head_for(len).into_bytes();
            bytes.extend(std::iter::repeat_n(b'a', len));
            assert_eq!(bytes.len(), 16 * 1024);
            bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!");
            Reply::Bytes(bytes)
        } else {
            Reply::Bytes(ok_response("real-b", ""))
        }
    });
    let client = client_with_one_connection_per_host();
    let a = send(&client, HttpRequest::get(&server.url("/a")).unwrap());
    let b = send(&client, HttpRequest::get(&server.url("/b")).unwrap());
    let a = wait_at_most(&mut ev, &a, Duration::from_secs(5)).unwrap();
    assert_eq!(a.body().len(), 16 * 1024 - 42);
    let b = wait_at_most(&mut ev, &b, Duration::from_secs(5));
    assert_eq!(
        b.map(|r| r.text().into_owned()).unwrap(),
        "real-b",
        "the second request got bytes the server sent before it was written"
    );
}

/// A server that answers before reading the request body (a 413, say) and keeps the connection:
/// the unsent rest of that body must not go out ahead of the next request on the same connection
/// (the server would take it for the next request; here it never reads it, so the next request
/// would never be answered).
#[test]
fn a_connection_still_sending_its_request_body_is_not_reused() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                if support::read_request_head(&mut reader).is_none() {
                    return;
                }
                let reply = if n == 0 {
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n".to_vec()
                } else {
                    ok_response("second", "")
                };
                let _ = stream.write_all(&reply);
                // Keeps the connection open without reading another byte.
                std::thread::sleep(Duration::from_secs(15));
            });
        }
    });
    let mut ev = EventLoop::new().unwrap();
    let client = client_with_one_connection_per_host();
    // Far more than the kernel buffers take: most of it is still queued when the 413 arrives.
    let upload = HttpRequest::post(&format!("http://{addr}/upload"), vec![b'x'; 64 << 20]).unwrap();
    let first = send(&client, upload);
    let second = send(
        &client,
        HttpRequest::get(&format!("http://{addr}/next")).unwrap(),
    );
    assert_eq!(wait(&mut ev, &first).unwrap().status(), 413);
    let second = wait_at_most(&mut ev, &second, Duration::from_secs(5))
        .expect("the next request is answered on a connection of its own");
    assert_eq!(second.text(), "second");
}

/// A redirect hop and a request queued for the host's only connection after the redirected
/// request was sent: the hop belongs to the earlier request, so the connection its redirect
/// frees goes to it (`send`: "served in the order they were sent"), and the later request,
/// which the read timeout does not end while it waits, follows.
#[test]
fn a_redirect_hop_waiting_for_a_busy_connection_is_not_timed_out_while_queued() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /from ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /to\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else if req.line.starts_with("GET /slow ") {
            // The head at once, then the body in pieces, each well inside the read timeout,
            // for far longer than it.
            let mut pieces = vec![b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n".to_vec()];
            pieces.extend((0..8).map(|_| b"x".to_vec()));
            Reply::Pieces(pieces, Duration::from_millis(150))
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let client = client_with_one_connection_per_host();
    client.update_session(|s| s.set_read_timeout(Duration::from_millis(400)));
    let redirected = send(&client, HttpRequest::get(&server.url("/from")).unwrap());
    // Queued behind /from; gets the connection after /from's second hop.
    let slow = send(&client, HttpRequest::get(&server.url("/slow")).unwrap());
    assert_eq!(
        wait_at_most(&mut ev, &slow, Duration::from_secs(5))
            .unwrap()
            .text(),
        "xxxxxxxx"
    );
    let redirected = wait_at_most(&mut ev, &redirected, Duration::from_secs(5))
        .expect("the second hop is answered once it has a connection");
    assert_eq!(redirected.text(), "arrived");
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        [
            "GET /from HTTP/1.1",
            "GET /to HTTP/1.1",
            "GET /slow HTTP/1.1"
        ],
        "the second hop went after a request sent later"
    );
}

/// A redirect hop to another host whose only connection is busy waits in that host's line in
/// the order its request was sent: behind a request sent to it before the redirected request,
/// ahead of one sent after it (it went behind it); and the read timeout does not end it while
/// it waits: the head deadline runs from its write.
#[test]
fn a_redirect_hop_to_a_busy_host_waits_in_send_order_and_is_not_timed_out() {
    let mut ev = EventLoop::new().unwrap();
    let target = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /slow ") {
            // The head at once, then the body in pieces, each well inside the read timeout,
            // for far longer than it.
            let mut pieces = vec![b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n".to_vec()];
            pieces.extend((0..8).map(|_| b"x".to_vec()));
            Reply::Pieces(pieces, Duration::from_millis(150))
        } else {
            Reply::Bytes(ok_response(&req.line, ""))
        }
    });
    let to = target.url("/to");
    let origin = ScriptServer::start(move |_, _| {
        let head = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n");
        Reply::Bytes(head.into_bytes())
    });
    let client = client_with_one_connection_per_host();
    client.update_session(|s| s.set_read_timeout(Duration::from_millis(400)));
    let slow = send(&client, HttpRequest::get(&target.url("/slow")).unwrap());
    let earlier = send(&client, HttpRequest::get(&target.url("/earlier")).unwrap());
    let redirected = send(&client, HttpRequest::get(&origin.url("/from")).unwrap());
    let later = send(&client, HttpRequest::get(&target.url("/later")).unwrap());
    assert_eq!(wait(&mut ev, &slow).unwrap().text(), "xxxxxxxx");
    assert_eq!(
        wait(&mut ev, &redirected).unwrap().text(),
        "GET /to HTTP/1.1"
    );
    assert_eq!(wait(&mut ev, &later).unwrap().text(), "GET /later HTTP/1.1");
    assert_eq!(
        wait(&mut ev, &earlier).unwrap().text(),
        "GET /earlier HTTP/1.1"
    );
    let lines: Vec<String> = target.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        [
            "GET /slow HTTP/1.1",
            "GET /earlier HTTP/1.1",
            "GET /to HTTP/1.1",
            "GET /later HTTP/1.1"
        ]
    );
}

#[test]
fn a_body_is_always_framed_even_with_common_headers_turned_off() {
    // Without Content-Length a server reads a request as having no body (RFC 9112 §6.3), so the
    // body's bytes would be taken for the next request on the connection.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut post = HttpRequest::post(&server.url("/upload"), smuggled)
        .unwrap()
        .with_header("Host", "example.test");
    post.set_auto_add_common_headers(false);
    wait(&mut ev, &send(&client, post)).unwrap();
    run_until(&mut ev, Duration::from_millis(100), || false);
    let seen = server.requests();
    let lines: Vec<&str> = seen.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines, ["POST /upload HTTP/1.1"]);
    assert_eq!(seen[0].body, smuggled.as_bytes());
    assert_eq!(seen[0].header("host"), Some("example.test"));
    assert!(seen[0].header("accept-encoding").is_none());
}

/// Every HTTP/1.1 request carries `Host` (RFC 9112 §3.2: a client MUST send it; a server MUST
/// answer 400 without it), as KDNetwork's did whatever `autoAddCommonHeaders` said: with the
/// common headers off the client sent none, neither for the request nor for a redirect hop to
/// another origin (which drops the request's own `Host`), so every such request was refused.
/// The setting still governs `Accept-Encoding`.
#[test]
fn host_is_sent_even_with_common_headers_turned_off() {
    let mut ev = EventLoop::new().unwrap();
    let target = ScriptServer::start(|_, _| Reply::Bytes(ok_response("there", "")));
    let location = target.url("/there");
    let server = ScriptServer::start(move |req, _| {
        if req.line.starts_with("GET /away ") {
            Reply::Bytes(
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                    .into_bytes(),
            )
        } else {
            Reply::Bytes(ok_response("here", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let mut plain = HttpRequest::get(&server.url("/here")).unwrap();
    plain.set_auto_add_common_headers(false);
    assert_eq!(wait(&mut ev, &send(&client, plain)).unwrap().text(), "here");
    let mut away = HttpRequest::get(&server.url("/away"))
        .unwrap()
        .with_header("Host", "example.test");
    away.set_auto_add_common_headers(false);
    assert_eq!(wait(&mut ev, &send(&client, away)).unwrap().text(), "there");

    let seen = server.requests();
    assert_eq!(seen[0].header("host"), Some(&*server.addr.to_string()));
    assert!(seen[0].header("accept-encoding").is_none());
    assert_eq!(seen[1].header("host"), Some("example.test"));
    let hop = target.requests();
    assert_eq!(hop[0].header("host"), Some(&*target.addr.to_string()));
}

#[test]
fn a_request_transfer_encoding_the_body_does_not_follow_is_refused() {
    // The client writes the body as it is: announcing `Transfer-Encoding: chunked` over it would
    // let the body's bytes pass for chunk framing and further requests.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    let post = HttpRequest::post(
        &server.url("/upload"),
        "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap()
    .with_header("Transfer-Encoding", "chunked");
    let result = wait(&mut ev, &send(&client, post));
    assert!(
        matches!(result, Err(HttpError::InvalidRequest(_))),
        "{result:?}"
    );
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn a_request_that_sent_connection_close_is_the_last_on_its_connection() {
    // RFC 9112 §9.6: a client that sends `Connection: close` must not send further requests on
    // that connection, even when the response does not say close.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    let last = HttpRequest::get(&server.url("/last"))
        .unwrap()
        .with_header("Connection", "Close");
    wait(&mut ev, &send(&client, last)).unwrap();
    get(&mut ev, &client, &server.url("/next")).unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].connection, seen[1].connection,
        "the connection of a request that sent close was reused"
    );
}

#[test]
fn a_redirect_body_larger_than_the_body_limit_does_not_stop_the_redirect() {
    // The body of a redirect that is followed is read and thrown away, never collected: the
    // limit on collected bodies has nothing to guard there (a chunked one was never counted).
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /old") {
            let page = "<a href=\"/new\">moved</a>".repeat(10);
            Reply::Bytes(
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                )
                .into_bytes(),
            )
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let mut session = HttpSession::new();
    session.set_max_response_body_bytes(64);
    let client = HttpClient::with_session(session).unwrap();
    let response = get(&mut ev, &client, &server.url("/old")).unwrap();
    assert_eq!(response.text(), "arrived");
    assert_eq!(response.redirect_count(), 1);
}

/// The body of a redirect being followed is read (so that its connection can serve again) only
/// while it is small: past 64 KiB the connection is given up and the redirect followed at
/// once, as browsers follow a redirect without its body. A redirect whose body never ended
/// (here an endless chunked stream) was read until the total timeout, and the request failed
/// with `Timeout(Total)` although the next hop was ready; a streaming request, which has no
/// total timeout, waited for ever.
#[test]
fn a_redirect_whose_body_does_not_end_is_followed_anyway() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /moved ") {
            let mut pieces = vec![
                b"HTTP/1.1 302 Found\r\nLocation: /target\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec(),
            ];
            let chunk = chunk(&"x".repeat(4096));
            pieces.extend(std::iter::repeat_n(chunk, 2000));
            Reply::Pieces(pieces, Duration::from_millis(5))
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let started = Instant::now();
    let request = HttpRequest::get(&server.url("/moved"))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let response = wait(&mut ev, &send(&client, request)).expect("the redirect is followed");
    assert_eq!(response.text(), "arrived");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let done: Outcome = Rc::default();
    let d = done.clone();
    client.send_streaming(
        HttpRequest::get(&server.url("/moved")).unwrap(),
        |_| {},
        move |r| *d.borrow_mut() = Some(r),
    );
    let streamed = wait_at_most(&mut ev, &done, Duration::from_secs(5));
    assert_eq!(streamed.unwrap().redirect_count(), 1);
}

/// The 64 KiB bound on reading a followed redirect's body, from both sides: a redirect announcing
/// a larger body is given up once more than 64 KiB of it came (here the rest never comes, and
/// the request is still answered at once), while one of 60 KiB is read to its end and its
/// connection carries the next hop.
#[test]
fn a_redirect_body_is_read_for_reuse_up_to_64_kib_only() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let (announced, sent) = if req.line.starts_with("GET /large ") {
            (1024 * 1024, 100 * 1024)
        } else if req.line.starts_with("GET /small ") {
            (60 * 1024, 60 * 1024)
        } else {
            return Reply::Bytes(ok_response("arrived", ""));
        };
        let mut reply = format!(
            "HTTP/1.1 302 Found\r\nLocation: /target\r\nContent-Length: {announced}\r\n\r\n"
        )
        .into_bytes();
        reply.extend(std::iter::repeat_n(b'x', sent));
        Reply::Bytes(reply)
    });
    let client = HttpClient::new().unwrap();
    let started = Instant::now();
    let request = HttpRequest::get(&server.url("/large"))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let response = wait(&mut ev, &send(&client, request)).expect("the redirect is followed");
    assert_eq!(response.text(), "arrived");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let small = get(&mut ev, &client, &server.url("/small")).unwrap();
    assert_eq!(small.text(), "arrived");
    let seen: Vec<(String, usize)> = server
        .requests()
        .into_iter()
        .map(|r| (r.line, r.connection))
        .collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_ne!(
        seen[0].1, seen[1].1,
        "the large redirect's connection is given up: {seen:?}"
    );
    assert_eq!(
        seen[2].1, seen[3].1,
        "the small redirect's connection serves its hop: {seen:?}"
    );
}

/// A redirect whose body runs to the end of the connection (no `Content-Length`, not chunked)
/// is followed at once: its connection can never serve again, so there is nothing to wait for.
/// The client waited for the server to close it, and a server that kept it open made the
/// request fail with `Timeout(Total)` (a streaming request waited for ever).
#[test]
fn a_redirect_read_to_close_is_followed_without_waiting_for_the_close() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /moved ") {
            // Keeps the connection open after it.
            Reply::Bytes(b"HTTP/1.1 302 Found\r\nLocation: /target\r\n\r\nmoved".to_vec())
        } else if req.line.starts_with("GET /bare ") {
            // The head alone, no body byte yet (none ever comes): followed all the same.
            Reply::Bytes(b"HTTP/1.1 302 Found\r\nLocation: /target\r\n\r\n".to_vec())
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    for path in ["/moved", "/bare"] {
        let request = HttpRequest::get(&server.url(path))
            .unwrap()
            .with_timeout(Duration::from_secs(3));
        let response = wait(&mut ev, &send(&client, request)).expect("the redirect is followed");
        assert_eq!(response.text(), "arrived", "{path}");
        assert_eq!(response.redirect_count(), 1, "{path}");
    }
}

/// A streaming request's `on_event` sees the final response only: the head, then its body.
/// The body of a redirect being followed went to it as `Data` (before any `Head`), so the
/// consumer's body began with the 302's HTML.
#[test]
fn a_streaming_request_is_not_given_the_body_of_a_redirect_it_follows() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /old ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 11\r\n\r\nmoved here!"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response("arrived", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let events: Rc<RefCell<Vec<String>>> = Rc::default();
    let (e, done): (_, Outcome) = (events.clone(), Rc::default());
    let d = done.clone();
    client.send_streaming(
        HttpRequest::get(&server.url("/old")).unwrap(),
        move |event| {
            e.borrow_mut().push(match event {
                StreamEvent::Head(response) => format!("head {}", response.status()),
                StreamEvent::Data(data) => String::from_utf8_lossy(data).into_owned(),
            })
        },
        move |r| *d.borrow_mut() = Some(r),
    );
    let response = wait(&mut ev, &done).unwrap();
    assert_eq!(response.redirect_count(), 1);
    assert_eq!(events.take().concat(), "head 200arrived");
}

#[test]
fn a_location_in_latin_1_is_followed_to_its_percent_encoded_bytes() {
    // Old servers send raw ISO-8859-1 in Location; browsers request the bytes percent-encoded
    // (`é` = 0xE9 → `%E9`), where replacing them with U+FFFD requested `%EF%BF%BD`.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /old ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /caf\xe9?q=\xfc\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response(&req.line, ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let response = get(&mut ev, &client, &server.url("/old")).unwrap();
    assert_eq!(response.text(), "GET /caf%E9?q=%FC HTTP/1.1");
}

/// `Duration::MAX` as a request's total timeout, the session's read timeout or its idle-connection
/// timeout means "none": the request completes and the connection is pooled, where `Instant`
/// arithmetic used to panic.
#[test]
fn timeouts_of_duration_max_mean_none() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("fine", "")));
    let mut session = HttpSession::new();
    session.set_read_timeout(Duration::MAX);
    session.set_idle_connection_timeout(Duration::MAX);
    let client = HttpClient::with_session(session).unwrap();
    for _ in 0..2 {
        let mut request = HttpRequest::get(&server.url("/")).unwrap();
        request.set_timeout(Duration::MAX);
        let out = send(&client, request);
        assert_eq!(wait(&mut ev, &out).unwrap().text(), "fine");
    }
    let connections: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [0, 0], "the connection was pooled and reused");
}

/// The pool's per-host books go once a host has no connection and nothing queued: a long-running
/// client talking to ever new hosts (or following redirects a server points at ever new names)
/// kept an entry per host it had ever seen.
#[test]
fn the_pool_forgets_hosts_it_no_longer_talks_to() {
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    // A host is (scheme, name, port): twenty servers are twenty hosts.
    for _ in 0..20 {
        let server = ScriptServer::start(|_, _| {
            Reply::BytesThenClose(ok_response("bye", "Connection: close\r\n"))
        });
        assert_eq!(
            get(&mut ev, &client, &server.url("/")).unwrap().text(),
            "bye"
        );
    }
    assert!(run_until(&mut ev, Duration::from_secs(5), || client
        .open_connections()
        == 0));
    assert_eq!(client.tracked_hosts(), 0);
}

/// One chunk of a chunked body.
fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// A streaming callback that waits for another request (a nested loop) while its own stream
/// goes on: the rest of the stream arrives after the callback returns, in order, and the
/// callback is never re-entered (it used to panic with "already borrowed").
#[test]
fn a_nested_wait_in_a_streaming_callback_gets_the_rest_of_its_stream_afterwards() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            Reply::Pieces(
                vec![Vec::new(), ok_response("slow", "")],
                Duration::from_millis(300),
            )
        } else {
            let mut first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            first.extend(chunk("one"));
            let mut second = chunk("two");
            second.extend(b"0\r\n\r\n");
            Reply::Pieces(vec![first, second], Duration::from_millis(50))
        }
    });
    let client = HttpClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));
    let (l, l2, d) = (log.clone(), log.clone(), done.clone());
    let c = client.clone();
    let slow = server.url("/slow");
    client.send_streaming(
        HttpRequest::get(&server.url("/stream")).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => l.borrow_mut().push("head".into()),
            StreamEvent::Data(b) => {
                let text = String::from_utf8_lossy(b).into_owned();
                l.borrow_mut().push(text.clone());
                if text == "one" {
                    // The stream's last piece and its end arrive during this wait.
                    let r = c.send_and_wait(HttpRequest::get(&slow).unwrap()).unwrap();
                    l.borrow_mut().push(r.text().to_string());
                }
            }
        },
        move |r| {
            r.unwrap();
            l2.borrow_mut().push("done".into());
            d.set(true);
        },
    );
    assert!(run_until(&mut ev, Duration::from_secs(5), || done.get()));
    assert_eq!(*log.borrow(), ["head", "one", "slow", "two", "done"]);
    assert_eq!(client.pending_requests(), 0);
}

/// A streaming request cancelled from its head callback gets no data after the cancel, even
/// data that came in the same read as the head (it used to get that piece, then `Cancelled`).
#[test]
fn a_stream_cancelled_from_its_head_callback_gets_no_data_afterwards() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let mut first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        first.extend(chunk("one"));
        Reply::Pieces(vec![first, chunk("two")], Duration::from_millis(500))
    });
    let client = HttpClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));
    let (l, l2, d) = (log.clone(), log.clone(), done.clone());
    let c = client.clone();
    let id = Rc::new(Cell::new(None));
    let own_id = id.clone();
    let sent = client.send_streaming(
        HttpRequest::get(&server.url("/stream")).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => {
                let cancelled = c.cancel(own_id.get().unwrap());
                l.borrow_mut().push(format!("head, cancel: {cancelled}"));
            }
            StreamEvent::Data(b) => l.borrow_mut().push(String::from_utf8_lossy(b).into_owned()),
        },
        move |r| {
            let cancelled = matches!(r, Err(HttpError::Cancelled));
            l2.borrow_mut()
                .push(format!("done, cancelled: {cancelled}"));
            d.set(true);
        },
    );
    id.set(Some(sent));
    assert!(run_until(&mut ev, Duration::from_secs(5), || done.get()));
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(
        *log.borrow(),
        ["head, cancel: true", "done, cancelled: true"]
    );
    assert!(run_until(&mut ev, Duration::from_secs(2), || client
        .open_connections()
        == 0));
    assert_eq!(client.pending_requests(), 0);
}

/// An `about_to_send_request` slot that cancels the request: it is cancelled (the callback gets
/// `Cancelled`, nothing is sent). The cancel used to return false and the request went out.
#[test]
fn cancel_from_an_about_to_send_slot_cancels_the_request() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("sent", "")));
    let client = HttpClient::new().unwrap();
    let c = client.clone();
    let cancelled = Rc::new(Cell::new(None));
    let cc = cancelled.clone();
    client
        .about_to_send_request
        .connect(move |(id, request)| {
            if request.url().path() == "/blocked" {
                cc.set(Some(c.cancel(*id)));
            }
        })
        .release();
    let out = send(&client, HttpRequest::get(&server.url("/blocked")).unwrap());
    assert_eq!(cancelled.get(), Some(true));
    assert!(matches!(
        wait_at_most(&mut ev, &out, Duration::from_secs(5)),
        Err(HttpError::Cancelled)
    ));
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(client.tracked_hosts(), 0);
    // Others pass, and the blocked one never reached the server.
    assert_eq!(
        get(&mut ev, &client, &server.url("/ok")).unwrap().text(),
        "sent"
    );
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["GET /ok HTTP/1.1"]);
}

/// A callback that waits in a nested loop while a large read is delivered a slice at a time:
/// what the nested loop reads on that connection comes after the read's remaining slices. It
/// used to be parsed before them, so the body arrived with its pieces swapped.
#[test]
fn a_nested_wait_in_the_middle_of_a_large_read_keeps_the_body_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let body = support::pattern(200_000, 7);
    let expected = body.clone();
    let server = ScriptServer::start(move |req, _| {
        if req.line.contains("/slow") {
            Reply::Pieces(
                vec![Vec::new(), ok_response("slow", "")],
                Duration::from_millis(200),
            )
        } else {
            let mut first =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            first.extend_from_slice(&body[..50_000]);
            Reply::Pieces(
                vec![first, body[50_000..].to_vec()],
                Duration::from_millis(50),
            )
        }
    });
    let client = HttpClient::new().unwrap();
    let got = Rc::new(RefCell::new(Vec::<u8>::new()));
    let done = Rc::new(Cell::new(false));
    let (g, d) = (got.clone(), done.clone());
    let c = client.clone();
    let slow = server.url("/slow");
    let waited = Rc::new(Cell::new(false));
    client.send_streaming(
        HttpRequest::get(&server.url("/big")).unwrap(),
        move |event| {
            if let StreamEvent::Data(b) = event {
                g.borrow_mut().extend_from_slice(b);
                if !waited.replace(true) {
                    c.send_and_wait(HttpRequest::get(&slow).unwrap()).unwrap();
                }
            }
        },
        move |r| {
            r.unwrap();
            d.set(true);
        },
    );
    assert!(run_until(&mut ev, Duration::from_secs(5), || done.get()));
    assert_eq!(got.borrow().len(), expected.len());
    assert!(*got.borrow() == expected, "body bytes out of order");
}

/// Raising the per-host connection limit starts the requests queued behind the old one at once;
/// they waited for a connection to free up, while requests sent afterwards overtook them.
#[test]
fn raising_the_connection_limit_starts_queued_requests() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut ev = EventLoop::new().unwrap();
    // How many requests the server holds at once: the queued ones overlap the first only if they
    // start when the limit is raised, not when a connection frees up.
    let (answering, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, m) = (answering.clone(), most.clone());
    let server = ScriptServer::start(move |_, _| {
        m.fetch_max(a.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        a.fetch_sub(1, Ordering::SeqCst);
        Reply::Bytes(ok_response("slow", ""))
    });
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_max_connections_per_host(1));
    let outs: Vec<_> = (0..3)
        .map(|_| send(&client, HttpRequest::get(&server.url("/")).unwrap()))
        .collect();
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(server.requests().len(), 1, "one connection, two queued");
    client.update_session(|s| s.set_max_connections_per_host(3));
    assert!(run_until(&mut ev, Duration::from_secs(5), || outs
        .iter()
        .all(|o| o.borrow().is_some())));
    assert!(
        most.load(Ordering::SeqCst) >= 2,
        "the queued requests waited for the first to finish"
    );
    let mut connections: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert_eq!(connections.len(), 3);
}

/// The read timeout bounds the wait for the response head once the request is out: a large
/// upload that the server reads slowly but steadily (every read well inside the timeout) is not
/// cut off by it while it is still being sent (it failed with `Timeout(ResponseHead)` one read
/// timeout after the request was handed to the socket).
#[test]
fn a_slow_but_steady_upload_is_not_timed_out_by_the_read_timeout() {
    use std::io::{Read, Write};
    const BODY: usize = 16 << 20;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive buffer (inherited by the accepted socket, and no autotuning): what the
    // kernels hold once the last byte is written drains well inside the read timeout.
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(8).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        if support::read_request_head(&mut reader).is_none() {
            return;
        }
        // About 8 MB/s: the upload takes ~2 s, twice the read timeout.
        let mut buf = vec![0; 128 * 1024];
        let mut got = 0;
        while got < BODY {
            let want = buf.len().min(BODY - got);
            match reader.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        let _ = (&stream).write_all(&ok_response(&got.to_string(), ""));
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_read_timeout(Duration::from_secs(1)));
    let upload = HttpRequest::post(&format!("http://{addr}/upload"), vec![b'u'; BODY]).unwrap();
    let started = Instant::now();
    let response = wait(&mut ev, &send(&client, upload))
        .unwrap_or_else(|e| panic!("upload failed after {:?}: {e:?}", started.elapsed()));
    assert_eq!(response.text(), BODY.to_string());
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the upload was not slower than the read timeout: {:?}",
        started.elapsed()
    );
}
/// A server that refuses an upload at once and closes without reading the body (the close then
/// resets the connection): its response is delivered, not the reset the next write meets (the
/// client failed with `Transport(… ConnectionReset …)` on writing and never read the response).
/// A read-to-close response cut by such a reset is still never `Ok`.
#[test]
fn an_upload_refused_early_gets_its_response() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let Some(head) = support::read_request_head(&mut reader) else {
                continue;
            };
            let reply: &[u8] = if head.target() == "/framed" {
                b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!"
            } else {
                b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\nuntil close"
            };
            let _ = stream.write_all(reply);
            // Unread bytes in the receive queue: the close becomes a reset.
            drop(reader);
            drop(stream);
        }
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let body = bytes::Bytes::from(vec![b'x'; 64 << 20]);
    let upload =
        |path: &str| HttpRequest::post(&format!("http://{addr}{path}"), body.clone()).unwrap();
    let response = wait(&mut ev, &send(&client, upload("/framed"))).unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.text(), "too big!");
    // No framing: the reset may have cut the body, so it is not a complete response.
    let cut = wait(&mut ev, &send(&client, upload("/until-close")));
    assert!(cut.is_err(), "{cut:?}");
}

/// `text()` decodes the body by the `charset` of its `Content-Type` (WHATWG labels: the Latin-1
/// family as windows-1252, UTF-16 either way) and by a byte order mark, which wins over the label;
/// without either the body is UTF-8. It read every body as UTF-8, so a Latin-1 page lost each
/// accented letter to U+FFFD.
#[test]
fn text_decodes_the_body_by_its_charset() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let (content_type, body): (&str, &[u8]) = match req.line.split(' ').nth(1).unwrap() {
            "/latin1" => (
                "text/html; Charset=\"ISO-8859-1\"",
                b"caf\xe9 \x93\x80\x94\x81",
            ),
            "/utf16le" => (
                "text/plain; charset=utf-16le",
                b"c\0a\0f\0\xe9\0=\0\x3d\xd8\x00\xde",
            ),
            "/utf16be-bom" => ("text/plain; charset=latin1", b"\xfe\xff\0c\0\xe9"),
            "/utf8-bom" => ("text/plain", b"\xef\xbb\xbfcaf\xc3\xa9"),
            "/unknown" => ("text/plain; charset=x-unheard-of", b"caf\xc3\xa9 \xff"),
            _ => ("application/json", b"{\"a\":\"\xc3\xa9\"}"),
        };
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(body);
        Reply::Bytes(reply)
    });
    let client = HttpClient::new().unwrap();
    let text = |ev: &mut EventLoop, path: &str| {
        get(ev, &client, &server.url(path))
            .unwrap()
            .text()
            .into_owned()
    };
    assert_eq!(text(&mut ev, "/latin1"), "café \u{201c}€\u{201d}\u{81}");
    assert_eq!(text(&mut ev, "/utf16le"), "café=😀");
    assert_eq!(text(&mut ev, "/utf16be-bom"), "cé");
    assert_eq!(text(&mut ev, "/utf8-bom"), "café");
    assert_eq!(text(&mut ev, "/unknown"), "café \u{fffd}");
    assert_eq!(text(&mut ev, "/json"), "{\"a\":\"é\"}");
}

/// A request for a byte range does not ask for a compressed body (as reqwest): a range of a
/// gzip stream cannot be decoded on its own. The client offered gzip with `Range` too, and a
/// server serving a precompressed file (nginx `gzip_static`) answered with bytes from the middle
/// of its gzip stream, which failed to decode.
#[test]
fn a_range_request_does_not_offer_compressed_codings() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let file: Vec<u8> = (0..4000)
        .flat_map(|i: u32| i.to_string().into_bytes())
        .collect();
    let server = ScriptServer::start(move |req, _| {
        let offered = req
            .header("accept-encoding")
            .is_some_and(|v| v.contains("gzip"));
        let served = if offered {
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&file).unwrap();
            gz.finish().unwrap()
        } else {
            file.clone()
        };
        let range = &served[100..200];
        let mut reply = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 100-199/{}\r\n{}Content-Length: 100\r\n\r\n",
            served.len(),
            if offered { "Content-Encoding: gzip\r\n" } else { "" },
        )
        .into_bytes();
        reply.extend_from_slice(range);
        Reply::Bytes(reply)
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let request = HttpRequest::get(&server.url("/file"))
        .unwrap()
        .with_header("Range", "bytes=100-199");
    let response = wait(&mut ev, &send(&client, request)).unwrap();
    assert_eq!(response.status(), 206);
    let expected: Vec<u8> = (0..4000)
        .flat_map(|i: u32| i.to_string().into_bytes())
        .collect();
    assert_eq!(response.body().as_ref(), &expected[100..200]);
    assert_eq!(server.requests()[0].header("accept-encoding"), None);
}

/// The session's connect timeout bounds the TCP connect (`Timeout(Connect)`: a listener whose
/// accept queue is full drops the SYN) and, for https, the TLS handshake too — one budget for
/// both (`Timeout(TlsHandshake)`: a server that accepts and never answers the ClientHello).
#[test]
fn connect_and_handshake_timeouts_fire_and_name_their_phase() {
    use kdnet::network::TimeoutPhase;
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..4)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&full_addr.into());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let _held: Vec<_> = silent.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(10));
    });
    let mut ev = EventLoop::new().unwrap();
    let mut session = HttpSession::new();
    session.set_connect_timeout(Duration::from_millis(300));
    let client = HttpClient::with_session(session).unwrap();
    for (url, phase) in [
        (format!("http://{full_addr}/"), TimeoutPhase::Connect),
        (
            format!("https://{silent_addr}/"),
            TimeoutPhase::TlsHandshake,
        ),
    ] {
        let started = Instant::now();
        let e = get(&mut ev, &client, &url).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(e, HttpError::Timeout(p) if p == phase),
            "{url}: {e:?}"
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{url}: {took:?}"
        );
    }
    drop(fillers);
}

/// A server that times out an idle keep-alive connection just as the next request reaches it
/// answers `408 Request Timeout` and closes: the request never got to it, so the client repeats
/// it once on another connection (RFC 9110 §15.5.9, as browsers do) instead of handing the 408 to
/// the caller. A 408 on a fresh connection is a real answer and is returned.
#[test]
fn a_408_on_a_reused_connection_is_repeated_on_a_fresh_one() {
    let server = ScriptServer::start(|req, _| {
        let path = req.line.split(' ').nth(1).unwrap_or_default();
        if req.connection == 0 && path != "/first" || path == "/always-408" {
            Reply::BytesThenClose(
                b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response(&format!("{path} on {}", req.connection), ""))
        }
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/first")).unwrap().text(),
        "/first on 0"
    );
    let post = HttpRequest::post(&server.url("/post"), "data").unwrap();
    let response = wait(&mut ev, &send(&client, post)).unwrap();
    assert_eq!(response.text(), "/post on 1");
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].body, b"data");
    let other_client = HttpClient::new().unwrap();
    let fresh = get(&mut ev, &other_client, &server.url("/always-408")).unwrap();
    assert_eq!(
        fresh.status(),
        408,
        "a fresh connection's 408 is the answer"
    );
    assert_eq!(server.requests().len(), 4, "and is not repeated");
}

/// A server that stops reading the request body stalls the upload: the read timeout then names
/// the phase it fired in, `SendRequest` (it said `ResponseHead`, and `SendRequest` was never
/// reported).
#[test]
fn a_stalled_upload_times_out_as_send_request() {
    use kdnet::network::TimeoutPhase;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(8).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(stream);
        let _ = support::read_request_head(&mut reader);
        // Reads nothing more: the body stalls in the kernels' buffers.
        std::thread::sleep(Duration::from_secs(10));
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_read_timeout(Duration::from_millis(300)));
    let upload = HttpRequest::post(&format!("http://{addr}/upload"), vec![b'u'; 32 << 20]).unwrap();
    let started = Instant::now();
    let e = wait(&mut ev, &send(&client, upload)).unwrap_err();
    assert!(
        matches!(e, HttpError::Timeout(TimeoutPhase::SendRequest)),
        "{e:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// `101 Switching Protocols` is only an answer to a request that asked to upgrade (RFC 9110
/// §15.2.2): to any other request it is a protocol error, not a bodiless success (the real
/// response, in the other protocol, was silently dropped).
#[test]
fn switching_protocols_without_an_upgrade_request_is_an_error() {
    let server = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n\0\0\x12\x04"
                .to_vec(),
        )
    });
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let e = get(&mut ev, &client, &server.url("/plain")).unwrap_err();
    assert!(
        matches!(&e, HttpError::Protocol(m) if m.contains("101")),
        "{e:?}"
    );
    let asked = HttpRequest::get(&server.url("/upgrade"))
        .unwrap()
        .with_header("Connection", "Upgrade")
        .with_header("Upgrade", "h2c");
    let response = wait(&mut ev, &send(&client, asked)).unwrap();
    assert_eq!(response.status(), 101);
}

/// `get`/`post`/… with a URL that does not parse fail like any other request: the callback gets
/// the error, then the `error` signal carries it (it was posted to the callback alone, so a
/// program logging failures through the signal never heard of it).
#[test]
fn a_url_that_does_not_parse_is_reported_on_the_error_signal_too() {
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    client
        .error
        .connect(move |(id, e)| o.borrow_mut().push(format!("signal {id} {e}")))
        .release();
    let o = order.clone();
    let id = client.get("not a url", move |result| {
        o.borrow_mut()
            .push(format!("callback {}", result.unwrap_err()))
    });
    let o = order.clone();
    let post_id = client.post("http://", b"x".to_vec(), "text/plain", move |result| {
        o.borrow_mut().push(format!("callback {}", result.is_err()))
    });
    assert!(order.borrow().is_empty(), "nothing runs inside the call");
    wait_until(&mut ev, || order.borrow().len() == 4);
    let order = order.borrow();
    assert!(order[0].starts_with("callback "), "{order:?}");
    assert!(order[1].starts_with(&format!("signal {id} ")), "{order:?}");
    assert_eq!(order[2], "callback true");
    assert!(
        order[3].starts_with(&format!("signal {post_id} ")),
        "{order:?}"
    );
}

/// A request stays cancellable until its callback runs: a cancel from user code that runs
/// before it — here a streaming request's own `on_event`, while the rest of the response (its
/// end included) came in the same read — returns true, no further `on_event` follows, and
/// `on_done` gets `Cancelled`. It returned false and then delivered the data and `Ok`.
#[test]
fn a_stream_cancelled_from_its_callback_after_its_whole_response_arrived_is_cancelled() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let mut all = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        all.extend(chunk("one"));
        all.extend(b"0\r\n\r\n");
        Reply::Bytes(all)
    });
    let client = HttpClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let done = Rc::new(Cell::new(false));
    let (l, l2, d) = (log.clone(), log.clone(), done.clone());
    let c = client.clone();
    let id = Rc::new(Cell::new(None));
    let own_id = id.clone();
    let sent = client.send_streaming(
        HttpRequest::get(&server.url("/stream")).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => {
                let cancelled = c.cancel(own_id.get().unwrap());
                l.borrow_mut().push(format!("head, cancel: {cancelled}"));
            }
            StreamEvent::Data(b) => l.borrow_mut().push(String::from_utf8_lossy(b).into_owned()),
        },
        move |r| {
            l2.borrow_mut().push(match r {
                Ok(_) => "done: ok".to_string(),
                Err(e) => format!("done: {e:?}"),
            });
            d.set(true);
        },
    );
    id.set(Some(sent));
    assert!(run_until(&mut ev, Duration::from_secs(5), || done.get()));
    run_until(&mut ev, Duration::from_millis(50), || false);
    assert_eq!(*log.borrow(), ["head, cancel: true", "done: Cancelled"]);
    assert_eq!(client.pending_requests(), 0);
    // Cancelling it again, or once its callback ran, changes nothing.
    assert!(!client.cancel(sent));
}

/// The same for a buffered request cancelled (one by id, one by `cancel_all`) from a
/// `download_progress` slot that runs after its whole body arrived but before its callback.
#[test]
fn a_request_cancelled_after_its_body_arrived_but_before_its_callback_is_cancelled() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("body", "")));
    let client = HttpClient::new().unwrap();
    for by_id in [true, false] {
        let returned = Rc::new(Cell::new(None));
        let (r2, c) = (returned.clone(), Rc::downgrade(&client));
        let slot = client.download_progress.connect(move |(id, _, _)| {
            let c = c.upgrade().unwrap();
            if by_id {
                r2.set(Some(c.cancel(*id)));
            } else {
                c.cancel_all();
                r2.set(Some(true));
            }
        });
        let out = send(&client, HttpRequest::get(&server.url("/")).unwrap());
        let result = wait_at_most(&mut ev, &out, Duration::from_secs(5));
        assert_eq!(returned.get(), Some(true), "by id: {by_id}");
        assert!(
            matches!(result, Err(HttpError::Cancelled)),
            "by id: {by_id}: {result:?}"
        );
        slot.disconnect();
        assert_eq!(client.pending_requests(), 0);
    }
}

/// A pooled connection idle for longer than the idle timeout is not reused, even when the loop
/// did not run in between (its expiry timer had no chance to fire): the next request goes out
/// on a new connection. It was reused, though the server may have dropped it meanwhile.
/// An idle connection the loop does run for is closed by its timer.
#[test]
fn a_connection_idle_past_the_idle_timeout_is_not_reused_even_if_its_timer_did_not_run() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_idle_connection_timeout(Duration::from_millis(100)));
    assert_eq!(
        get(&mut ev, &client, &server.url("/1")).unwrap().text(),
        "ok"
    );
    // Busy elsewhere: the loop does not turn for longer than the idle timeout.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(&mut ev, &client, &server.url("/2")).unwrap().text(),
        "ok"
    );
    // Within the idle timeout a connection is reused.
    assert_eq!(
        get(&mut ev, &client, &server.url("/3")).unwrap().text(),
        "ok"
    );
    let conns: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 3);
    assert_ne!(conns[0], conns[1], "an expired connection was reused");
    assert_eq!(conns[1], conns[2], "a fresh idle connection was not reused");
    // With the loop running, the idle timer closes it (re-armed after each reuse).
    assert_eq!(client.open_connections(), 1);
    assert!(run_until(&mut ev, Duration::from_secs(3), || client
        .open_connections()
        == 0));
}

/// An idle timeout lowered while a connection sits in the pool applies to that connection
/// too, as a lowered connection limit does: with the timeout set to 0 ("keep nothing idle")
/// the next request goes out on a new connection. The pooled one kept the deadline it was
/// given under the old timeout (60 s) and was reused.
#[test]
fn an_idle_timeout_lowered_while_a_connection_is_pooled_applies_to_it() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/1")).unwrap().text(),
        "ok"
    );
    assert_eq!(client.open_connections(), 1);
    client.update_session(|s| s.set_idle_connection_timeout(Duration::ZERO));
    assert_eq!(
        get(&mut ev, &client, &server.url("/2")).unwrap().text(),
        "ok"
    );
    let conns: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 2);
    assert_ne!(
        conns[0], conns[1],
        "a connection idle past the lowered timeout was reused"
    );
    // Nothing is kept idle under a timeout of 0.
    assert!(run_until(&mut ev, Duration::from_secs(3), || client
        .open_connections()
        == 0));
}

/// A redirect hop judges a pooled connection's idleness by the time of the hop, not by when its
/// request was first sent: in the turn in which an idle connection's deadline passes, the
/// redirect answer is read before the client's idle timer fires, and the hop took the expired
/// connection (which the server may have closed meanwhile: a GET hop was then replayed, a
/// POST's failed). It now goes out on a new connection, and the expired one is closed.
#[test]
fn a_redirect_hop_does_not_take_a_connection_whose_idle_deadline_passed_before_the_hop() {
    use std::io::{BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    let mut ev = EventLoop::new().unwrap();
    let target = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let idle = Duration::from_secs(1);
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_idle_connection_timeout(idle));

    // The redirecting server answers only when told to, and says when its answer is written.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redirector = listener.local_addr().unwrap();
    let (asked, go, written) = (
        Arc::new(AtomicBool::new(false)),
        mpsc::channel(),
        mpsc::channel(),
    );
    let (asked2, go_rx, written_tx, location) =
        (asked.clone(), go.1, written.0, target.url("/hop"));
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        support::read_request(&mut reader).unwrap();
        asked2.store(true, Ordering::SeqCst);
        go_rx.recv().unwrap();
        let answer =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(answer.as_bytes()).unwrap();
        written_tx.send(()).unwrap();
        // Held open until the test ends.
        let _ = go_rx.recv();
    });
    // The request is sent (and read) first, then a connection to the hop's host goes idle.
    let out = send(
        &client,
        HttpRequest::get(&format!("http://{redirector}/go")).unwrap(),
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || asked
        .load(Ordering::SeqCst)));
    assert_eq!(
        get(&mut ev, &client, &target.url("/warm")).unwrap().text(),
        "ok"
    );
    // Released no later than this: its idle deadline has passed by `expired`.
    let expired = Instant::now() + idle + Duration::from_millis(100);
    assert_eq!(client.open_connections(), 2);
    // The loop does not turn while the idle connection's deadline passes; then the redirect
    // answer and the idle timer are due in the same turn.
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    go.0.send(()).unwrap();
    written.1.recv().unwrap();
    assert_eq!(wait(&mut ev, &out).unwrap().text(), "ok");
    let conns: Vec<usize> = target.requests().iter().map(|r| r.connection).collect();
    assert_eq!(
        conns,
        [0, 1],
        "the hop went out on the connection whose idle deadline had passed"
    );
    drop(go.0);
}

/// Lowering `max_connections_per_host` applies to connections already open: idle ones over the
/// new limit close, busy ones close when their request ends, and from then on at most the new
/// number of connections serve the host (the old ones went on serving requests side by side).
#[test]
fn lowering_the_connection_limit_applies_to_connections_already_open() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut ev = EventLoop::new().unwrap();
    let (answering, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, m) = (answering.clone(), most.clone());
    let server = ScriptServer::start(move |req, _| {
        if req.line.contains("/slow") {
            m.fetch_max(a.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(150));
            a.fetch_sub(1, Ordering::SeqCst);
        }
        Reply::Bytes(ok_response("ok", ""))
    });
    let client = HttpClient::new().unwrap();
    // Three connections open and idle.
    let outs: Vec<_> = (0..3)
        .map(|_| send(&client, HttpRequest::get(&server.url("/warm")).unwrap()))
        .collect();
    assert!(run_until(&mut ev, Duration::from_secs(5), || outs
        .iter()
        .all(|o| o.borrow().is_some())));
    assert_eq!(client.open_connections(), 3);
    client.update_session(|s| s.set_max_connections_per_host(1));
    assert!(
        run_until(&mut ev, Duration::from_secs(2), || client
            .open_connections()
            <= 1),
        "{} connections stay open over a limit of 1",
        client.open_connections()
    );
    let outs: Vec<_> = (0..3)
        .map(|i| {
            send(
                &client,
                HttpRequest::get(&server.url(&format!("/slow{i}"))).unwrap(),
            )
        })
        .collect();
    assert!(run_until(&mut ev, Duration::from_secs(5), || outs
        .iter()
        .all(|o| o.borrow().is_some())));
    assert_eq!(most.load(Ordering::SeqCst), 1, "requests ran side by side");
    assert!(client.open_connections() <= 1);
    // Served one after the other, in the order sent.
    let lines: Vec<String> = server
        .requests()
        .into_iter()
        .skip(3)
        .map(|r| r.line)
        .collect();
    assert_eq!(
        lines,
        [
            "GET /slow0 HTTP/1.1",
            "GET /slow1 HTTP/1.1",
            "GET /slow2 HTTP/1.1"
        ]
    );
}

/// Lowered while the connections are busy and requests wait behind them: the connections close
/// as their requests end until the host is within the new limit, and the waiting requests are
/// served within it, in the order sent (each freed connection took the next one, side by side).
#[test]
fn lowering_the_connection_limit_while_busy_serves_the_queue_within_it_in_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut ev = EventLoop::new().unwrap();
    let (answering, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, m) = (answering.clone(), most.clone());
    let server = ScriptServer::start(move |req, _| {
        if req.line.contains("/busy") {
            std::thread::sleep(Duration::from_millis(200));
        } else {
            m.fetch_max(a.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            a.fetch_sub(1, Ordering::SeqCst);
        }
        Reply::Bytes(ok_response("ok", ""))
    });
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_max_connections_per_host(3));
    let mut outs: Vec<_> = (0..3)
        .map(|_| send(&client, HttpRequest::get(&server.url("/busy")).unwrap()))
        .collect();
    outs.extend((0..3).map(|i| {
        send(
            &client,
            HttpRequest::get(&server.url(&format!("/q{i}"))).unwrap(),
        )
    }));
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        == 3));
    client.update_session(|s| s.set_max_connections_per_host(1));
    assert!(run_until(&mut ev, Duration::from_secs(5), || outs
        .iter()
        .all(|o| o.borrow().is_some())));
    assert!(outs.iter().all(|o| o.borrow().as_ref().unwrap().is_ok()));
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "queued requests ran side by side"
    );
    let lines: Vec<String> = server
        .requests()
        .into_iter()
        .skip(3)
        .map(|r| r.line)
        .collect();
    assert_eq!(
        lines,
        ["GET /q0 HTTP/1.1", "GET /q1 HTTP/1.1", "GET /q2 HTTP/1.1"]
    );
    assert!(client.open_connections() <= 1);
}

/// Dropping the last `Rc<HttpClient>` with a request in flight, one queued behind the host's
/// only connection and one announced for the next turn: no callback runs (each is dropped, with
/// what it captured: nothing leaks), nothing panics, and the connection is closed (the server
/// reads its end).
#[test]
fn dropping_the_client_drops_unfinished_callbacks_and_closes_its_connections() {
    use std::io::Read;
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (eof_tx, eof_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        // Reads the request, never answers, reports the client's close.
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = eof_tx.send(());
    });
    let client = client_with_one_connection_per_host();
    struct Captured(Rc<Cell<usize>>);
    impl Drop for Captured {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let (called, dropped) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let url = format!("http://{addr}/");
    for _ in 0..2 {
        let (c, d) = (called.clone(), Captured(dropped.clone()));
        client.get(&url, move |_| {
            let _keep = &d;
            c.set(c.get() + 1);
        });
    }
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(client.pending_requests(), 2);
    // Fails at once: its callback is posted for the next turn.
    let (c, d) = (called.clone(), Captured(dropped.clone()));
    client.get("http://[::1", move |_| {
        let _keep = &d;
        c.set(c.get() + 1);
    });
    drop(client);
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(
        called.get(),
        0,
        "a callback ran after the client was dropped"
    );
    assert_eq!(dropped.get(), 3, "callbacks were leaked");
    eof_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the connection was closed");
}

/// A request queued behind the host's only connection has its total timeout counted from when
/// it was sent: it fires while the request still waits (`Timeout(Total)`), and the request is
/// then never written.
#[test]
fn a_total_timeout_fires_for_a_request_still_waiting_for_a_connection() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            std::thread::sleep(Duration::from_millis(600));
        }
        Reply::Bytes(ok_response("ok", ""))
    });
    let client = client_with_one_connection_per_host();
    let slow = send(&client, HttpRequest::get(&server.url("/slow")).unwrap());
    let started = Instant::now();
    let queued = send(
        &client,
        HttpRequest::get(&server.url("/queued"))
            .unwrap()
            .with_timeout(Some(Duration::from_millis(200))),
    );
    let result = wait_at_most(&mut ev, &queued, Duration::from_secs(5));
    assert!(
        matches!(
            result,
            Err(HttpError::Timeout(kdnet::network::TimeoutPhase::Total))
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(550));
    assert_eq!(wait(&mut ev, &slow).unwrap().text(), "ok");
    run_until(&mut ev, Duration::from_millis(100), || false);
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["GET /slow HTTP/1.1"]);
    assert_eq!(client.pending_requests(), 0);
}

/// `cancel_all` from a request's callback cancels the requests still waiting (the one already
/// given the connection the finished one left, and one queued behind it), not the one whose
/// callback runs; `send_and_wait` from that callback, on the same client with one connection per
/// host, then gets a connection and its answer.
#[test]
fn send_and_wait_and_cancel_all_from_a_callback_of_the_same_client() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        Reply::Bytes(ok_response(req.line.split(' ').nth(1).unwrap(), ""))
    });
    let client = client_with_one_connection_per_host();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let (c, l) = (client.clone(), log.clone());
    let nested_url = server.url("/nested");
    client.get(&server.url("/outer"), move |r| {
        l.borrow_mut().push(r.unwrap().text().into_owned());
        // The first queued request already has the connection; the second waits for it.
        c.cancel_all();
        let nested = c.send_and_wait(HttpRequest::get(&nested_url).unwrap());
        l.borrow_mut().push(nested.unwrap().text().into_owned());
    });
    let queued: Vec<_> = (0..2)
        .map(|_| send(&client, HttpRequest::get(&server.url("/queued")).unwrap()))
        .collect();
    assert!(run_until(&mut ev, Duration::from_secs(5), || queued
        .iter()
        .all(|o| o.borrow().is_some())));
    assert_eq!(*log.borrow(), ["/outer", "/nested"]);
    for out in &queued {
        let result = out.borrow_mut().take().unwrap();
        assert!(matches!(result, Err(HttpError::Cancelled)), "{result:?}");
    }
    assert_eq!(client.pending_requests(), 0);
}

/// A request replayed because its reused connection turned out closed keeps its place: when the
/// host has no free connection for it at once (its limit was lowered meanwhile), it goes first
/// in line, before requests sent after it (it went to the back of the queue).
#[test]
fn a_request_replayed_after_a_stale_connection_keeps_its_place_in_the_queue() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut ev = EventLoop::new().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let server = ScriptServer::start(move |req, _| {
        if req.line.contains("/r1") && !d.swap(true, Ordering::SeqCst) {
            return Reply::Close;
        }
        if req.line.contains("/r2") {
            std::thread::sleep(Duration::from_millis(300));
        }
        Reply::Bytes(ok_response("ok", ""))
    });
    let client = client_with_two_idle_connections(&mut ev, &server);
    // Both go out at once on the two idle connections; /r1's is closed without an answer.
    let r1 = send(&client, HttpRequest::get(&server.url("/r1")).unwrap());
    let r2 = send(&client, HttpRequest::get(&server.url("/r2")).unwrap());
    client.update_session(|s| s.set_max_connections_per_host(1));
    let r3 = send(&client, HttpRequest::get(&server.url("/r3")).unwrap());
    for out in [&r1, &r2, &r3] {
        assert_eq!(
            wait_at_most(&mut ev, out, Duration::from_secs(5))
                .unwrap()
                .text(),
            "ok"
        );
    }
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(
        lines[4..],
        ["GET /r1 HTTP/1.1", "GET /r3 HTTP/1.1"],
        "{lines:?}"
    );
}

/// A slot that panics out of the loop while a response is delivered drops the rest of that
/// delivery (the request's callback among it); the request is then not left registered as
/// still cancellable: `cancel` of it returns false (it returned true, for ever, and each such
/// panic left an entry behind).
#[test]
fn a_delivery_dropped_by_a_panicking_slot_leaves_nothing_cancellable_behind() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("body", "")));
    let client = HttpClient::new().unwrap();
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let id = client.get(&server.url("/"), move |_| c.set(true));
    let slot = client
        .download_progress
        .connect(|_| panic!("a slot panics"));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_until(&mut ev, Duration::from_secs(5), || false)
    }));
    assert!(unwound.is_err());
    slot.disconnect();
    assert!(!called.get());
    assert!(!client.cancel(id), "a dropped delivery stayed cancellable");
    // The client goes on working.
    assert_eq!(
        get(&mut ev, &client, &server.url("/")).unwrap().text(),
        "body"
    );
}

/// A server answering `/chunked` with an endless chunked body and `/close` with an endless body
/// delimited by the connection's close, as fast as the socket takes them (counting the bytes the
/// kernel accepted), and anything else with a small keep-alive `ok`; a thread per connection.
fn endless_body_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let written = std::sync::Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let w = w.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                while let Some(head) = support::read_request_head(&mut reader) {
                    let (head, piece) = match head.target() {
                        "/chunked" => {
                            let data = "x".repeat(4096);
                            let piece = format!("1000\r\n{data}\r\n").repeat(16);
                            (
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                piece,
                            )
                        }
                        "/close" => (
                            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                            "y".repeat(64 * 1024),
                        ),
                        "/burst" => {
                            // The head with 1 MiB of body in one write: the client's first
                            // read is a large one, handed out a piece at a time.
                            let data = "w".repeat(64 * 1024);
                            let piece = format!("10000\r\n{data}\r\n").repeat(16);
                            let first = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                .to_string()
                                + &piece;
                            if conn.write_all(first.as_bytes()).is_err() {
                                return;
                            }
                            ("", piece)
                        }
                        "/finite" => {
                            // 8 MiB and 16 bytes, chunked, then the connection serves the next
                            // request.
                            let data = "z".repeat(64 * 1024);
                            let mut body = String::new();
                            for _ in 0..128 {
                                body.push_str(&format!("10000\r\n{data}\r\n"));
                            }
                            body.push_str("0\r\n\r\n");
                            // The head and a first small piece alone, as a trickling stream
                            // (an LLM's answer) starts.
                            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                        10\r\n0123456789abcdef\r\n";
                            if conn.write_all(head.as_bytes()).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(300));
                            if conn.write_all(body.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        "/pause" => {
                            // The head and a small first piece alone, then (once the client
                            // has taken them in a read of their own) an endless body.
                            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                        10\r\n0123456789abcdef\r\n";
                            if conn.write_all(head.as_bytes()).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(300));
                            let data = "p".repeat(4096);
                            ("", format!("1000\r\n{data}\r\n").repeat(16))
                        }
                        _ => {
                            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if conn.write_all(ok.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    if conn.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    while conn.write_all(piece.as_bytes()).is_ok() {
                        w.fetch_add(piece.len(), Ordering::Relaxed);
                    }
                    return;
                }
            });
        }
    });
    (base, written)
}

/// What a streaming request whose first `on_event(Data)` waits in a nested loop saw.
#[derive(Default)]
struct HeldStream {
    received: Cell<usize>,
    /// The bytes the server had written when the nested wait ended.
    written_during_wait: Cell<Option<usize>>,
    done: RefCell<Option<Result<HttpResponse, HttpError>>>,
}

/// Streams `url` on `client`; the first `on_event(Data)` runs `wait` (a nested loop) once.
fn stream_with_a_waiting_callback(
    client: &HttpClient,
    url: &str,
    written: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    wait: impl Fn() + 'static,
) -> (Rc<HeldStream>, kdnet::network::http::RequestId) {
    let seen = Rc::new(HeldStream::default());
    let (s, s2) = (seen.clone(), seen.clone());
    let id = client.send_streaming(
        HttpRequest::get(url).unwrap(),
        move |event| {
            if let StreamEvent::Data(data) = event {
                let first = s.received.get() == 0;
                s.received.set(s.received.get() + data.len());
                if first {
                    wait();
                    let now = written.load(std::sync::atomic::Ordering::Relaxed);
                    s.written_during_wait.set(Some(now));
                }
            }
        },
        move |result| *s2.done.borrow_mut() = Some(result),
    );
    (seen, id)
}

fn nested_wait(how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
    }
}

/// An `on_event(Data)` callback that waits in a nested loop (a modal dialog, `send_and_wait`)
/// while the server keeps sending an endless body, chunked or delimited by the close: the
/// client stops reading that connection until the callback returns, so TCP flow control holds
/// the server back, instead of queueing all it sends in memory. The body goes on afterwards.
#[test]
fn a_streaming_callback_waiting_in_a_nested_loop_holds_its_body_back_instead_of_queueing_it() {
    for path in ["/chunked", "/close"] {
        let mut ev = EventLoop::new().unwrap();
        let (base, written) = endless_body_server();
        let client = HttpClient::new().unwrap();
        let (seen, id) = stream_with_a_waiting_callback(
            &client,
            &format!("{base}{path}"),
            written.clone(),
            || nested_wait(Duration::from_millis(1500)),
        );
        let ok = run_until(&mut ev, Duration::from_secs(20), || {
            seen.written_during_wait.get().is_some() && seen.received.get() > 16 * 1024 * 1024
        });
        let during = seen.written_during_wait.get();
        assert!(ok, "{path}: {during:?} {} bytes", seen.received.get());
        let during = during.unwrap();
        assert!(
            during < 32 * 1024 * 1024,
            "{path}: the server wrote {during} bytes while the callback waited: the client kept reading"
        );
        assert!(
            seen.done.borrow().is_none(),
            "{path}: {:?}",
            seen.done.borrow()
        );
        client.cancel(id);
    }
}

/// An `on_event(Head)` that waits in a nested loop, its head having come in a small read of its
/// own (not one handed out a piece at a time): what the loop reads for the request meanwhile
/// waits for the callback, so the connection is held back (TCP flow control stops the server)
/// rather than read into memory, and it reads again once the callback returns.
#[test]
fn a_head_callback_waiting_in_a_nested_loop_holds_its_body_back_and_releases_it_on_return() {
    use std::sync::atomic::Ordering;
    let mut ev = EventLoop::new().unwrap();
    let (base, written) = endless_body_server();
    let client = HttpClient::new().unwrap();
    let received = Rc::new(Cell::new(0usize));
    let during = Rc::new(Cell::new(None));
    let done: Outcome = Rc::default();
    let (r, d, o) = (received.clone(), during.clone(), done.clone());
    let id = client.send_streaming(
        HttpRequest::get(&format!("{base}/pause")).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => {
                nested_wait(Duration::from_millis(1500));
                d.set(Some(written.load(Ordering::Relaxed)));
            }
            StreamEvent::Data(data) => r.set(r.get() + data.len()),
        },
        move |result| *o.borrow_mut() = Some(result),
    );
    let ok = run_until(&mut ev, Duration::from_secs(20), || {
        during.get().is_some() && received.get() > 16 * 1024 * 1024
    });
    assert!(ok, "{:?} {} bytes", during.get(), received.get());
    let during = during.get().unwrap();
    assert!(
        during < 32 * 1024 * 1024,
        "the server wrote {during} bytes while the callback waited: the client kept reading"
    );
    assert!(done.borrow().is_none(), "{:?}", done.borrow());
    client.cancel(id);
}

/// A client dropped by a callback that waited in a nested loop: what arrived for the request
/// while it waited (queued for after the callback) is dropped uncalled with the client, as the
/// client's drop promises, not handed to `on_event` once the callback returns.
#[test]
fn a_client_dropped_by_a_waiting_callback_delivers_nothing_that_waited() {
    let mut ev = EventLoop::new().unwrap();
    let (base, _written) = endless_body_server();
    let holder: Rc<RefCell<Option<Rc<HttpClient>>>> = Rc::default();
    let client = HttpClient::new().unwrap();
    let after_drop: Rc<RefCell<Vec<String>>> = Rc::default();
    let dropped = Rc::new(Cell::new(false));
    let (h, a, d) = (holder.clone(), after_drop.clone(), dropped.clone());
    let a2 = after_drop.clone();
    let d2 = dropped.clone();
    client.send_streaming(
        HttpRequest::get(&format!("{base}/pause")).unwrap(),
        move |event| {
            if d.get() {
                a.borrow_mut().push(format!("{event:?}"));
            } else if let StreamEvent::Head(_) = event {
                // The body comes while this waits, and waits for it.
                nested_wait(Duration::from_millis(800));
                d.set(true);
                h.borrow_mut().take(); // the last Rc of the client
            }
        },
        move |r| {
            if d2.get() {
                a2.borrow_mut().push(format!("on_done {r:?}"));
            }
        },
    );
    *holder.borrow_mut() = Some(client);
    assert!(run_until(&mut ev, Duration::from_secs(20), || dropped.get()));
    ev.process_events(Some(Duration::from_millis(200))).unwrap();
    assert!(after_drop.borrow().is_empty(), "{:?}", after_drop.borrow());
}

/// Body bytes that came in the same read as the head reach `on_event` before those a nested loop
/// run by `on_event(Head)` read meanwhile: the head's own bytes were delivered after the later
/// ones (the callback's turn ended, and what waited for it ran, before the rest of the head's
/// read), so the body came out of order ("bac" for "abc").
#[test]
fn a_head_callback_waiting_in_a_nested_loop_gets_the_body_in_order() {
    use std::io::Write;
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        support::read_request_head(&mut reader);
        let pieces = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
            "1\r\nb\r\n",
            "1\r\nc\r\n",
            "0\r\n\r\n",
        ];
        for piece in pieces {
            if conn.write_all(piece.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let client = HttpClient::new().unwrap();
    let body = Rc::new(RefCell::new(Vec::new()));
    let done: Outcome = Rc::default();
    let (b, o) = (body.clone(), done.clone());
    client.send_streaming(
        HttpRequest::get(&url).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => nested_wait(Duration::from_millis(250)),
            StreamEvent::Data(data) => b.borrow_mut().extend_from_slice(data),
        },
        move |result| *o.borrow_mut() = Some(result),
    );
    let result = wait(&mut ev, &done);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(String::from_utf8_lossy(&body.borrow()), "abc");
}

/// The read timeout of a request whose connection was held back for its waiting callback starts
/// afresh when the callback returns (the silence until then was the client's own): the body's
/// next bytes, due well within one timeout after the return, are waited for. (Time line, read
/// timeout 1 s: the callback waits from 0 to 2.6 s; the timer deferred for it at 1 and 2 s
/// would have expired at 3 s; the next piece comes at 3.3 s.)
#[test]
fn a_held_back_request_gets_a_whole_read_timeout_after_its_callback_returns() {
    use std::io::Write;
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        support::read_request_head(&mut reader);
        let steps: [(&str, u64); 3] = [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
                100,
            ),
            // Arrives while the callback waits: the connection is held back from here on.
            ("1\r\nb\r\n", 3200),
            ("1\r\nc\r\n0\r\n\r\n", 0),
        ];
        for (piece, pause) in steps {
            if conn.write_all(piece.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(pause));
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let mut session = HttpSession::new();
    session.set_read_timeout(Duration::from_secs(1));
    let client = HttpClient::with_session(session).unwrap();
    let body = Rc::new(RefCell::new(Vec::new()));
    let done: Outcome = Rc::default();
    let (b, o) = (body.clone(), done.clone());
    client.send_streaming(
        HttpRequest::get(&url).unwrap(),
        move |event| match event {
            StreamEvent::Head(_) => nested_wait(Duration::from_millis(2600)),
            StreamEvent::Data(data) => b.borrow_mut().extend_from_slice(data),
        },
        move |result| *o.borrow_mut() = Some(result),
    );
    let result = wait(&mut ev, &done);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(&body.borrow()[..], b"abc");
}

/// While a waiting `on_event` holds its body back, the request's read timeout does not run (the
/// silence is the client's own); the body goes on once the callback returns.
#[test]
fn a_streamed_body_held_back_by_a_waiting_callback_does_not_time_out() {
    for path in ["/chunked", "/close"] {
        let mut ev = EventLoop::new().unwrap();
        let (base, written) = endless_body_server();
        let mut session = HttpSession::new();
        session.set_read_timeout(Duration::from_millis(200));
        let client = HttpClient::with_session(session).unwrap();
        let (seen, id) =
            stream_with_a_waiting_callback(&client, &format!("{base}{path}"), written, || {
                nested_wait(Duration::from_millis(800))
            });
        run_until(&mut ev, Duration::from_secs(20), || {
            seen.received.get() > 16 * 1024 * 1024 || seen.done.borrow().is_some()
        });
        assert!(
            seen.done.borrow().is_none(),
            "{path}: {:?}",
            seen.done.borrow()
        );
        assert!(seen.written_during_wait.get().is_some(), "{path}");
        assert!(seen.received.get() > 16 * 1024 * 1024, "{path}");
        client.cancel(id);
    }
}

/// A request to the same host sent from inside that nested loop (a callback asking the server
/// something while its stream is held back) is answered on another connection: the held
/// connection does not block it.
#[test]
fn a_request_sent_from_a_waiting_streaming_callback_is_answered() {
    for path in ["/chunked", "/close"] {
        let mut ev = EventLoop::new().unwrap();
        let (base, written) = endless_body_server();
        let client = HttpClient::new().unwrap();
        let answer: Outcome = Rc::default();
        let (a, c, url) = (
            answer.clone(),
            Rc::downgrade(&client),
            format!("{base}/small"),
        );
        let (seen, id) =
            stream_with_a_waiting_callback(&client, &format!("{base}{path}"), written, move || {
                let client = c.upgrade().unwrap();
                // The total timeout turns a wait that would never end into a failure.
                let request = HttpRequest::get(&url)
                    .unwrap()
                    .with_timeout(Duration::from_secs(10));
                *a.borrow_mut() = Some(client.send_and_wait(request));
            });
        run_until(&mut ev, Duration::from_secs(20), || {
            seen.written_during_wait.get().is_some()
        });
        let answer = answer.borrow_mut().take();
        match answer {
            Some(Ok(response)) => assert_eq!(response.text(), "ok", "{path}"),
            other => panic!("{path}: {other:?}"),
        }
        // The stream goes on after the callback returned.
        let before = seen.received.get();
        assert!(run_until(&mut ev, Duration::from_secs(10), || {
            seen.received.get() > before + 1024 * 1024
        }));
        client.cancel(id);
    }
}

/// A redirect with several `Location` fields that differ (a response-splitting sign: which one
/// is meant?) is refused, as browsers refuse it (Chrome's ERR_RESPONSE_HEADERS_MULTIPLE_LOCATION),
/// with a `BadRedirect` naming the reason, and neither target is requested; repeated identical
/// fields are one location and are followed.
#[test]
fn a_redirect_with_differing_location_fields_is_refused() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /split ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nSet-Cookie: planted=1\r\nLocation: /a\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else if req.line.starts_with("GET /same ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /a\r\nLocation: /a \r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(ok_response(&req.line, ""))
        }
    });
    let client = HttpClient::new().unwrap();
    match get(&mut ev, &client, &server.url("/split")) {
        Err(HttpError::BadRedirect(reason)) => {
            assert!(reason.contains("Location"), "{reason}");
            let shown = HttpError::BadRedirect(reason).to_string();
            assert!(!shown.ends_with('.'), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        get(&mut ev, &client, &server.url("/same")).unwrap().text(),
        "GET /a HTTP/1.1"
    );
    let seen = server.requests();
    let lines: Vec<&str> = seen.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /split HTTP/1.1",
            "GET /same HTTP/1.1",
            "GET /a HTTP/1.1"
        ]
    );
    // The refused response set no cookie (a browser refuses it before looking at its fields).
    assert_eq!(seen[1].header("cookie"), None);
}

/// A caller following redirects itself (`DontFollow`) gets the response with differing
/// `Location` fields as it is, but `redirect_url` names no target for it: which one the server
/// meant cannot be told (it named the first). Identical repeats name theirs.
#[test]
fn redirect_url_of_a_response_with_differing_location_fields_is_none() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let second = if req.line.starts_with("GET /split ") {
            "/b"
        } else {
            "/a"
        };
        Reply::Bytes(
            format!("HTTP/1.1 302 Found\r\nLocation: /a\r\nLocation: {second}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    });
    let client = HttpClient::new().unwrap();
    let manual = |path: &str| {
        HttpRequest::get(&server.url(path))
            .unwrap()
            .with_redirect_policy(kdnet::network::http::RedirectPolicy::DontFollow)
    };
    let split = wait(&mut ev, &send(&client, manual("/split"))).unwrap();
    assert_eq!(split.status(), 302);
    assert_eq!(split.redirect_url(), None);
    let same = wait(&mut ev, &send(&client, manual("/same"))).unwrap();
    assert_eq!(same.redirect_url().unwrap().path(), "/a");
}

/// `send_and_wait`'s doc: from a streaming request's `on_event`, a request to the same host at
/// its `max_connections_per_host` waits for a connection, possibly that stream's own, "and
/// returns only once that stream has ended". The stream waiting for it must then go on being
/// read (not held back for the waiting callback), or neither ever ends.
#[test]
fn a_request_queued_behind_a_waiting_streaming_callback_s_own_connection_is_answered() {
    // Sent at once, or after a first wait during which the rest of the stream arrived (its
    // connection was held back then).
    for first_wait in [Duration::ZERO, Duration::from_millis(800)] {
        let mut ev = EventLoop::new().unwrap();
        let (base, written) = endless_body_server();
        let client = client_with_one_connection_per_host();
        let answer: Outcome = Rc::default();
        let (a, c, url) = (
            answer.clone(),
            Rc::downgrade(&client),
            format!("{base}/small"),
        );
        let (seen, _id) = stream_with_a_waiting_callback(
            &client,
            &format!("{base}/finite"),
            written,
            move || {
                nested_wait(first_wait);
                let client = c.upgrade().unwrap();
                // The total timeout turns a wait that would never end into a failure.
                let request = HttpRequest::get(&url)
                    .unwrap()
                    .with_timeout(Duration::from_secs(10));
                *a.borrow_mut() = Some(client.send_and_wait(request));
            },
        );
        run_until(&mut ev, Duration::from_secs(20), || {
            seen.written_during_wait.get().is_some() && seen.done.borrow().is_some()
        });
        let answer = answer.borrow_mut().take();
        match answer {
            Some(Ok(response)) => assert_eq!(response.text(), "ok", "{first_wait:?}"),
            other => panic!("{first_wait:?}: {other:?}"),
        }
        assert_eq!(seen.received.get(), (8 << 20) + 16, "{first_wait:?}");
        assert!(
            matches!(*seen.done.borrow(), Some(Ok(_))),
            "{first_wait:?}: {:?}",
            seen.done.borrow()
        );
    }
}

/// A streaming callback handed a piece of a large read (handed out a piece at a time) that
/// waits in a nested loop for a request queued behind its own connection: that request cannot
/// be served before the callback returns (the rest of the read waits for it; `send_and_wait`'s
/// doc), so the connection stays held back meanwhile instead of reading the endless stream into
/// memory for nothing.
#[test]
fn a_stream_whose_read_waits_for_its_callback_stays_held_while_a_request_queues_behind_it() {
    let mut ev = EventLoop::new().unwrap();
    let (base, written) = endless_body_server();
    let client = client_with_one_connection_per_host();
    let answer: Outcome = Rc::default();
    let (a, c, url) = (
        answer.clone(),
        Rc::downgrade(&client),
        format!("{base}/small"),
    );
    let (seen, id) =
        stream_with_a_waiting_callback(&client, &format!("{base}/burst"), written, move || {
            let client = c.upgrade().unwrap();
            let request = HttpRequest::get(&url)
                .unwrap()
                .with_timeout(Duration::from_millis(1500));
            *a.borrow_mut() = Some(client.send_and_wait(request));
        });
    assert!(run_until(&mut ev, Duration::from_secs(20), || {
        seen.written_during_wait.get().is_some()
    }));
    let during = seen.written_during_wait.get().unwrap();
    assert!(
        during < 32 * 1024 * 1024,
        "the server wrote {during} bytes while the callback waited: the client kept reading"
    );
    let answer = answer.borrow_mut().take();
    assert!(
        matches!(answer, Some(Err(HttpError::Timeout(_)))),
        "{answer:?}"
    );
    // The stream goes on after the callback returned.
    let before = seen.received.get();
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        seen.received.get() > before + 1024 * 1024
    }));
    client.cancel(id);
}

/// A client whose event loop was dropped (a GUI tearing down, a test re-creating its loop) can
/// never get an answer: `send` posted its failure to that loop, which dropped it, so the
/// callback was dropped uncalled (no error, no `error` signal), and `send_and_wait` waited for
/// ever. Every request fails at once with `LoopGone` — the callback runs inside `send`, since
/// nothing could run it later — then the `error` signal; a loop made later does not help.
#[test]
fn send_after_the_event_loop_is_gone_fails_at_once_with_loop_gone() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let event_loop = EventLoop::new().unwrap();
        let client = HttpClient::new().unwrap();
        drop(event_loop);
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let l = log.clone();
        client
            .error
            .connect(move |(_, e)| l.borrow_mut().push(format!("signal {e:?}")))
            .release();
        let l = log.clone();
        client.get("http://127.0.0.1:1/", move |r| {
            l.borrow_mut().push(format!("get {:?}", r.err()))
        });
        let (l, l2) = (log.clone(), log.clone());
        client.send_streaming(
            HttpRequest::get("http://127.0.0.1:1/").unwrap(),
            move |_| l.borrow_mut().push("event".into()),
            move |r| l2.borrow_mut().push(format!("stream {:?}", r.err())),
        );
        let waited = client.send_and_wait(HttpRequest::get("http://127.0.0.1:1/").unwrap());
        log.borrow_mut()
            .push(format!("send_and_wait {:?}", waited.err()));
        let _second = EventLoop::new().unwrap();
        let l = log.clone();
        client.get("http://127.0.0.1:1/", move |r| {
            l.borrow_mut().push(format!("later {:?}", r.err()))
        });
        let shown = HttpError::LoopGone.to_string();
        let _ = tx.send((log.take(), shown));
    });
    let (log, shown) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("send_and_wait after the loop was dropped waited for ever");
    assert_eq!(
        log,
        [
            "get Some(LoopGone)",
            "signal LoopGone",
            "stream Some(LoopGone)",
            "signal LoopGone",
            "signal LoopGone",
            "send_and_wait Some(LoopGone)",
            "later Some(LoopGone)",
            "signal LoopGone",
        ]
    );
    assert_eq!(
        shown,
        "the client's event loop has been dropped: no request can be sent"
    );
}

/// A request sent before its client's event loop was dropped can never be answered; cancelling
/// it then runs its callback at once with `Cancelled`: the cancel's delivery went to the dead
/// loop, which dropped it, so the callback was dropped uncalled.
#[test]
fn cancelling_a_request_after_the_event_loop_is_gone_calls_its_callback_at_once() {
    let event_loop = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let got: Rc<RefCell<Option<String>>> = Rc::default();
    let g = got.clone();
    let id = client.get("http://127.0.0.1:1/", move |r| {
        *g.borrow_mut() = Some(format!("{:?}", r.err()))
    });
    drop(event_loop);
    assert!(client.cancel(id));
    assert_eq!(got.borrow().as_deref(), Some("Some(Cancelled)"));
}

/// A server answering every request with `extra` header lines (each ending in CRLF).
fn server_answering_with(extra: &'static str) -> ScriptServer {
    ScriptServer::start(move |_, _| Reply::Bytes(ok_response("ok", extra)))
}

/// The connection index each request the server saw came on, in order.
fn connections_seen(server: &ScriptServer) -> Vec<usize> {
    server.requests().iter().map(|r| r.connection).collect()
}

/// A response's `Keep-Alive: timeout=N` (the server drops an idle connection after N s; nginx
/// sends 75, Node 5) retires the idle connection a second before that, as undici does: reused
/// when the next request comes at once, not when it comes 1.3 s later with `timeout=2` (it used
/// to be kept for the session's 60 s idle timeout, racing the server's close: a POST sent just
/// as the server closed failed with `EmptyResponse`). With the loop running, the idle timer
/// closes it about a second after the response. Parameter names in any case, whitespace, a
/// quoted value, other parameters and several fields are all understood.
#[test]
fn a_keep_alive_timeout_retires_the_idle_connection_a_second_before_the_server_would() {
    let mut ev = EventLoop::new().unwrap();
    let forms = [
        "Keep-Alive: timeout=2\r\n",
        "keep-alive:  Timeout = 2 , MAX=100\r\n",
        "Keep-Alive: max=100, TIMEOUT=\"2\"\r\n",
        "Keep-Alive: max=100\r\nKeep-Alive: timeout=2\r\n",
        "Keep-Alive: timeout=2; max=100\r\n",
        "Keep-Alive: timeout=abc, timeout=2\r\n",
    ];
    let cases: Vec<(ScriptServer, Rc<HttpClient>)> = forms
        .iter()
        .map(|form| (server_answering_with(form), HttpClient::new().unwrap()))
        .collect();
    for (server, client) in &cases {
        for path in ["/1", "/2"] {
            assert_eq!(
                get(&mut ev, client, &server.url(path)).unwrap().text(),
                "ok"
            );
        }
    }
    // Busy elsewhere: the loop does not turn for longer than the server's timeout minus a second.
    std::thread::sleep(Duration::from_millis(1300));
    for (server, client) in &cases {
        assert_eq!(
            get(&mut ev, client, &server.url("/3")).unwrap().text(),
            "ok"
        );
    }
    for ((server, _), form) in cases.iter().zip(forms) {
        let conns = connections_seen(server);
        assert_eq!(conns[0], conns[1], "{form:?}: not reused at once");
        assert_ne!(
            conns[1], conns[2],
            "{form:?}: reused 1.3 s later, past timeout=2 minus a second"
        );
    }
    // With the loop running, the idle timer retires each connection about a second after its
    // response (not after the session's 60 s).
    let started = Instant::now();
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || cases
            .iter()
            .all(|(_, client)| client.open_connections() == 0)),
        "idle connections kept past the server's keep-alive timeout"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "retired after {took:?}, before timeout=2 minus a second"
    );
}

/// `Keep-Alive: timeout=1` (or less): the server may close as soon as the response is out, so the
/// connection is not kept for reuse at all; the next request opens a new one.
#[test]
fn a_keep_alive_timeout_of_one_second_keeps_no_connection_for_reuse() {
    let mut ev = EventLoop::new().unwrap();
    let server = server_answering_with("Keep-Alive: timeout=1, max=100\r\n");
    let client = HttpClient::new().unwrap();
    assert_eq!(
        get(&mut ev, &client, &server.url("/1")).unwrap().text(),
        "ok"
    );
    assert_eq!(client.open_connections(), 0, "kept for reuse");
    let post = HttpRequest::post(&server.url("/2"), "x".as_bytes().to_vec()).unwrap();
    assert_eq!(wait(&mut ev, &send(&client, post)).unwrap().text(), "ok");
    let conns = connections_seen(&server);
    assert_ne!(conns[0], conns[1], "reused despite timeout=1");
}

/// Keep-Alive values that say nothing usable — `timeout=0`, malformed or absent — change nothing:
/// the connection is kept for the session's idle timeout (still reused 1.3 s later). A server
/// timeout longer than the session's idle timeout does not lengthen it.
#[test]
fn keep_alive_values_that_say_nothing_usable_leave_the_idle_timeout_alone() {
    let mut ev = EventLoop::new().unwrap();
    let forms = [
        "",
        "Keep-Alive: timeout=0\r\n",
        "Keep-Alive: timeout=\r\n",
        "Keep-Alive: timeout=abc\r\n",
        "Keep-Alive: timeout=-5\r\n",
        "Keep-Alive: timeout=2.5\r\n",
        "Keep-Alive: timeout=\"2\r\n",
        "Keep-Alive: timeout=99999999999999999999999999\r\n",
        "Keep-Alive: max=5\r\n",
        "Keep-Alive: =2, , timeout\r\n",
        "Keep-Alive: xtimeout=2\r\n",
        "X-Keep-Alive: timeout=2\r\n",
    ];
    let cases: Vec<(ScriptServer, Rc<HttpClient>)> = forms
        .iter()
        .map(|form| (server_answering_with(form), HttpClient::new().unwrap()))
        .collect();
    for (server, client) in &cases {
        assert_eq!(
            get(&mut ev, client, &server.url("/1")).unwrap().text(),
            "ok"
        );
    }
    std::thread::sleep(Duration::from_millis(1300));
    for ((server, client), form) in cases.iter().zip(forms) {
        let second = get(&mut ev, client, &server.url("/2"));
        assert_eq!(second.unwrap().text(), "ok", "{form:?}");
        let conns = connections_seen(server);
        assert_eq!(conns[0], conns[1], "{form:?}: not reused 1.3 s later");
    }
}

/// The session's idle timeout still wins when it is shorter than the server's keep-alive timeout.
#[test]
fn a_session_idle_timeout_shorter_than_the_keep_alive_timeout_wins() {
    let mut ev = EventLoop::new().unwrap();
    let server = server_answering_with("Keep-Alive: timeout=75\r\n");
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_idle_connection_timeout(Duration::from_millis(200)));
    assert_eq!(
        get(&mut ev, &client, &server.url("/1")).unwrap().text(),
        "ok"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        get(&mut ev, &client, &server.url("/2")).unwrap().text(),
        "ok"
    );
    let conns = connections_seen(&server);
    assert_ne!(conns[0], conns[1], "kept past the session's idle timeout");
    assert!(run_until(&mut ev, Duration::from_secs(5), || client
        .open_connections()
        == 0));
}

/// `Keep-Alive: max=M` (requests the server still takes on the connection): after M more
/// requests it is not reused, even when later responses do not repeat the field; `max=0` ends it
/// at once. A later response's `max` replaces an earlier one.
#[test]
fn a_keep_alive_max_retires_the_connection_after_that_many_more_requests() {
    let mut ev = EventLoop::new().unwrap();
    // max=1 on the first response only: one more request, then a new connection.
    let once = ScriptServer::start(|_, n| {
        let extra = if n == 0 { "Keep-Alive: max=1\r\n" } else { "" };
        Reply::Bytes(ok_response("ok", extra))
    });
    // max=0: none more.
    let none = server_answering_with("Keep-Alive: timeout=30, max=0\r\n");
    // max=1 then max=5: the second replaces the first.
    let raised = ScriptServer::start(|_, n| {
        let extra = if n == 0 {
            "Keep-Alive: max=1\r\n"
        } else {
            "Keep-Alive: max=5\r\n"
        };
        Reply::Bytes(ok_response("ok", extra))
    });
    for (server, expected) in [
        (&once, [0, 0, 1, 1]),
        (&none, [0, 1, 2, 3]),
        (&raised, [0, 0, 0, 0]),
    ] {
        let client = HttpClient::new().unwrap();
        for i in 0..4 {
            let path = format!("/{i}");
            assert_eq!(
                get(&mut ev, &client, &server.url(&path)).unwrap().text(),
                "ok"
            );
        }
        assert_eq!(connections_seen(server), expected);
    }
}

// ---- http10: Cookie fields, Content-Type, interim-only responses, redirect policy ----

/// RFC 6265 §5.4: a user agent sends at most one `Cookie` field. Several a caller added went out
/// as several fields (a server reading the first only lost the rest); they go out as one, the
/// values joined with "; " in the order added, on the first request and on a same-origin
/// redirect hop alike (where the caller's cookies stay).
#[test]
fn several_cookie_fields_a_caller_adds_go_out_as_one_field() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /start") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            Reply::Bytes(ok_response("ok", ""))
        }
    });
    let client = HttpClient::new().unwrap();
    let mut request = HttpRequest::get(&server.url("/start")).unwrap();
    request.add_header("Cookie", "a=1");
    request.add_header("X-Between", "x");
    request.add_header("cookie", "b=2; c=3");
    request.add_header("Cookie", "d=4");
    let response = wait(&mut ev, &send(&client, request)).unwrap();
    assert_eq!(response.text(), "ok");
    assert_eq!(response.redirect_count(), 1);
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        let cookies: Vec<&str> = request
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(cookies, ["a=1; b=2; c=3; d=4"], "{}", request.line);
    }
}

/// `text()` took its charset from the first `Content-Type` field, while the SSE client's check
/// took the last, as WHATWG Fetch's "extract a MIME type" does: a response with two fields
/// decoded by one and streamed by the other. All of them now follow Fetch: the last value
/// (fields and comma lists alike) that parses as a MIME type other than `*/*` counts, and it
/// keeps the charset of the value that began its run of the same type when it names none.
#[test]
fn text_and_content_type_use_the_last_content_type_as_fetch_does() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let fields: &[u8] = match req.line.split(' ').nth(1).unwrap() {
            "/two-fields" => {
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            }
            "/list" => b"Content-Type: text/plain; charset=utf-8, text/html; charset=latin1\r\n",
            "/inherits" => b"Content-Type: text/plain; charset=latin1\r\nContent-Type: text/plain\r\n",
            "/star" => b"Content-Type: text/plain; charset=latin1\r\nContent-Type: */*\r\n",
            "/run" => {
                b"Content-Type: text/plain; charset=latin1, text/plain; charset=utf-8, text/plain\r\n"
            }
            "/other-type" => {
                b"Content-Type: text/html; charset=latin1\r\nContent-Type: text/plain\r\n"
            }
            _ => b"Content-Type: garbage\r\n",
        };
        let mut reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n".to_vec();
        reply.extend_from_slice(fields);
        reply.extend_from_slice(b"\r\ncaf\xe9");
        Reply::Bytes(reply)
    });
    let client = HttpClient::new().unwrap();
    for (path, content_type, text) in [
        ("/two-fields", "text/plain; charset=iso-8859-1", "café"),
        ("/list", "text/html; charset=latin1", "café"),
        ("/inherits", "text/plain", "café"),
        ("/star", "text/plain; charset=latin1", "café"),
        // Fetch keeps the charset of the value that began the run of `text/plain`.
        ("/run", "text/plain", "café"),
        ("/other-type", "text/plain", "caf\u{fffd}"),
        ("/garbage", "garbage", "caf\u{fffd}"),
    ] {
        let response = get(&mut ev, &client, &server.url(path)).unwrap();
        assert_eq!(response.content_type(), Some(content_type), "{path}");
        assert_eq!(response.text(), text, "{path}");
    }
}

/// A server that sent an interim response (`100 Continue`, `103 Early Hints`) and then closed
/// was reported as having "closed in the middle of the response head" (a syntax error, though
/// no byte of the final head had come). It is now `NoFinalResponse`, naming the interim status;
/// a close inside the final head after an interim one is still a cut head.
#[test]
fn a_close_after_an_interim_response_says_no_final_response_came() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let reply: &[u8] = match req.line.split(' ').nth(1).unwrap() {
            "/continue" => b"HTTP/1.1 100 Continue\r\n\r\n",
            "/hints" => {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            }
            _ => b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le",
        };
        Reply::BytesThenClose(reply.to_vec())
    });
    let client = HttpClient::new().unwrap();
    for (path, interim) in [("/continue", 100), ("/hints", 103)] {
        let e = get(&mut ev, &client, &server.url(path)).unwrap_err();
        assert!(
            matches!(e, HttpError::NoFinalResponse { interim: status } if status == interim),
            "{path}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "connection closed after an interim {interim} response, before the final response"
            )
        );
        assert!(e.is_retryable(), "{path}");
    }
    let e = get(&mut ev, &client, &server.url("/cut")).unwrap_err();
    assert!(
        matches!(&e, HttpError::Protocol(reason) if reason.contains("closed in the middle of the response head")),
        "{e:?}"
    );
}

/// A redirect to an unsupported scheme (`ftp://…`) failed with `BadRedirect` even under a policy
/// that would not follow that hop anyway, where the 3xx is the caller's answer. The policy now
/// decides first (KDNetwork's names: `FollowSameHost` follows any scheme or port on the same
/// host, `FollowSameHostAndProtocol` the same host and scheme); only a hop it would follow fails
/// for its scheme.
#[test]
fn a_redirect_to_an_unsupported_scheme_the_policy_would_not_follow_is_returned() {
    use kdnet::network::http::RedirectPolicy::{self, *};
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let location = match req.line.split(' ').nth(1).unwrap() {
            "/other-host" => "ftp://files.example/x",
            _ => "ftp://127.0.0.1/x",
        };
        Reply::Bytes(
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    });
    let client = HttpClient::new().unwrap();
    let fetch = |ev: &mut EventLoop, path: &str, policy: RedirectPolicy| {
        let request = HttpRequest::get(&server.url(path))
            .unwrap()
            .with_redirect_policy(policy);
        wait(ev, &send(&client, request))
    };
    for (path, policy) in [
        ("/other-host", FollowSameHost),
        ("/other-host", FollowSameHostAndProtocol),
        ("/same-host", FollowSameHostAndProtocol),
        ("/same-host", DontFollow),
    ] {
        let response = fetch(&mut ev, path, policy).unwrap();
        assert_eq!(response.status(), 302, "{path} {policy:?}");
        assert_eq!(response.redirect_count(), 0);
    }
    for (path, policy) in [("/same-host", FollowSameHost), ("/other-host", FollowAll)] {
        let e = fetch(&mut ev, path, policy).unwrap_err();
        assert!(
            matches!(&e, HttpError::BadRedirect(reason) if reason.contains("not an http or https URL")),
            "{path} {policy:?}: {e:?}"
        );
    }
}

/// `Keep-Alive: timeout=1` keeps the connection for no later request, a request already queued
/// for it included: it goes out on a new connection (mutation audit: handing the connection to
/// the queued request failed no test).
#[test]
fn a_keep_alive_timeout_of_one_second_does_not_hand_the_connection_to_a_queued_request() {
    let mut ev = EventLoop::new().unwrap();
    let server = server_answering_with("Keep-Alive: timeout=1\r\n");
    let client = client_with_one_connection_per_host();
    let first = send(&client, HttpRequest::get(&server.url("/1")).unwrap());
    let queued = send(&client, HttpRequest::get(&server.url("/2")).unwrap());
    assert_eq!(wait(&mut ev, &first).unwrap().text(), "ok");
    assert_eq!(wait(&mut ev, &queued).unwrap().text(), "ok");
    assert_eq!(
        connections_seen(&server),
        [0, 1],
        "handed to the queued request"
    );
}

/// Credentials in a URL go out as Basic auth and never in the request line or `Host` (taken out
/// when the request is made or its URL set; the client does not look for them again).
#[test]
fn url_credentials_are_sent_as_basic_auth_and_not_in_the_request_line() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let client = HttpClient::new().unwrap();
    let with_user = server
        .url("/p?q=1")
        .replacen("http://", "http://Aladdin:open%20sesame@", 1);
    let made = HttpRequest::get(&with_user).unwrap();
    let mut set = HttpRequest::get(&server.url("/other")).unwrap();
    set.set_url(url::Url::parse(&with_user).unwrap()).unwrap();
    for request in [made, set] {
        assert_eq!(wait(&mut ev, &send(&client, request)).unwrap().text(), "ok");
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.line, "GET /p?q=1 HTTP/1.1");
        assert_eq!(
            request.header("authorization"),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        let host = request.header("host").unwrap();
        assert!(!host.contains('@') && !host.contains("Aladdin"), "{host}");
    }
}

/// A connection's written bytes are counted per request: after a request without a body (whose
/// writes post no report) a POST on the same connection still reports its whole body, and one
/// without a body after it reports nothing.
#[test]
fn upload_progress_of_a_post_after_a_get_on_the_same_connection_reaches_its_total() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|req, _| Reply::Bytes(ok_response(&req.body.len().to_string(), "")));
    let client = HttpClient::new().unwrap();
    let progress = upload_reports_with_ids(&client);
    assert_eq!(
        get(&mut ev, &client, &server.url("/a")).unwrap().text(),
        "0"
    );
    let post = HttpRequest::post(&server.url("/up"), vec![b'u'; 1000]).unwrap();
    let out: Outcome = Rc::default();
    let o = out.clone();
    let post_id = client.send(post, move |r| *o.borrow_mut() = Some(r));
    assert_eq!(wait(&mut ev, &out).unwrap().text(), "1000");
    assert_eq!(
        get(&mut ev, &client, &server.url("/b")).unwrap().text(),
        "0"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.connection == 0), "not one connection");
    let progress = progress.borrow();
    assert!(!progress.is_empty(), "the POST's body was not reported");
    assert!(
        progress
            .iter()
            .all(|&(id, _, total)| id == post_id && total == 1000)
    );
    assert_eq!(progress.last().unwrap().1, 1000);
}

/// Idle connections of one client with different deadlines each close at their own: one
/// released later with an earlier deadline (`Keep-Alive: timeout=2`, kept 1 s) closes first,
/// while one released before it (the session's 4 s) stays open until its own.
#[test]
fn idle_connections_released_in_any_order_each_close_at_their_own_deadline() {
    let mut ev = EventLoop::new().unwrap();
    let long = server_answering_with("");
    let short = server_answering_with("Keep-Alive: timeout=2\r\n");
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_idle_connection_timeout(Duration::from_secs(4)));
    let started = Instant::now();
    for server in [&long, &short] {
        assert_eq!(
            get(&mut ev, &client, &server.url("/")).unwrap().text(),
            "ok"
        );
    }
    assert_eq!(client.open_connections(), 2);
    assert!(
        run_until(&mut ev, Duration::from_secs(3), || client
            .open_connections()
            == 1),
        "the connection with the earlier deadline was not closed at it"
    );
    let first = started.elapsed();
    assert!(
        first < Duration::from_millis(3500),
        "first close after {first:?}: the later deadline's"
    );
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || client
            .open_connections()
            == 0),
        "the other idle connection was never closed"
    );
    let second = started.elapsed();
    assert!(
        second >= Duration::from_millis(3900),
        "closed after {second:?}, before the session's 4 s idle timeout"
    );
}

/// Reusing an idle connection moves its deadline: the idle timeout runs from its last release,
/// not its first (the idle timer, armed for the first, must not close it then).
#[test]
fn a_reused_connection_s_idle_timeout_runs_from_its_last_release() {
    let mut ev = EventLoop::new().unwrap();
    let server = server_answering_with("");
    let client = HttpClient::new().unwrap();
    client.update_session(|s| s.set_idle_connection_timeout(Duration::from_millis(1500)));
    assert_eq!(
        get(&mut ev, &client, &server.url("/1")).unwrap().text(),
        "ok"
    );
    run_until(&mut ev, Duration::from_millis(900), || false);
    assert_eq!(
        get(&mut ev, &client, &server.url("/2")).unwrap().text(),
        "ok"
    );
    let released = Instant::now();
    // Past the first release's deadline, before the second's.
    run_until(&mut ev, Duration::from_millis(1000), || false);
    if released.elapsed() < Duration::from_millis(1450) {
        assert_eq!(
            client.open_connections(),
            1,
            "closed at the first release's deadline"
        );
    }
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || client
            .open_connections()
            == 0),
        "the idle connection was never closed"
    );
    assert!(released.elapsed() >= Duration::from_millis(1450));
    let conns = connections_seen(&server);
    assert_eq!(conns[0], conns[1], "not reused");
}

/// New TLS settings apply to every connection opened after the change, also one opened for a
/// request sent before it: here a request queued behind the host's only (https) connection when
/// the session comes to trust only an unrelated CA. The connection made under the old settings
/// serves its request and is not reused; the queued request's new connection fails with
/// `UnknownIssuer` and never reaches the server.
#[test]
fn new_tls_settings_apply_to_a_request_queued_before_the_change() {
    use kdnet::network::{SocketError, TlsFailure};
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let pki = support::certs::test_pki();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = {
        let seen = Arc::clone(&seen);
        support::served::listen(listener, true, move |reader, _| {
            while let Some(request) = support::read_request(reader) {
                seen.lock().unwrap().push(request.line.clone());
                if request.line.starts_with("GET /slow ") {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if !support::served::write_all(reader, &ok_response("done", "")) {
                    return;
                }
            }
        })
    };
    let client = client_with_one_connection_per_host();
    client.update_session(|s| s.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap());
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());
    let slow = send(&client, HttpRequest::get(&url("/slow")).unwrap());
    let queued = send(&client, HttpRequest::get(&url("/queued")).unwrap());
    // The first request is on its connection (made with the test CA trusted) ...
    wait_until(&mut ev, || !seen.lock().unwrap().is_empty());
    // ... when the session comes to trust only another CA.
    client.update_session(|s| {
        s.clear_ca_certificates();
        s.add_ca_certificate(pki.other_ca_pem.as_bytes()).unwrap();
    });
    assert_eq!(wait(&mut ev, &slow).unwrap().text(), "done");
    let e = wait(&mut ev, &queued).unwrap_err();
    assert!(
        matches!(
            e,
            HttpError::Transport(SocketError::Tls(TlsFailure::UnknownIssuer))
        ),
        "{e:?}"
    );
    assert_eq!(*seen.lock().unwrap(), ["GET /slow HTTP/1.1"]);
}

/// A response whose body ends with the connection, all of it read before the read timeout (or
/// the total timeout), is delivered whole even when user code kept the loop busy past that
/// timeout meanwhile: the end of stream read in the turn after is the response's end. The close
/// was handled a turn later than the timeout that fired in the same turn, and the complete
/// response failed with `Timeout(BodyIdle)` (`Timeout(Total)`).
#[test]
fn a_close_read_in_the_turn_its_read_timeout_fires_ends_the_response_rather_than_the_timeout() {
    for total in [false, true] {
        close_read_in_the_turn_a_timeout_fires(total);
    }
}

fn close_read_in_the_turn_a_timeout_fires(total: bool) {
    use std::io::{BufReader, Write};
    use std::sync::mpsc;
    let mut ev = EventLoop::new().unwrap();
    let timeout = Duration::from_millis(300);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        support::read_request(&mut reader).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello")
            .unwrap();
        close_rx.recv().unwrap();
        drop(reader);
        stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(stream);
        closed_tx.send(()).unwrap();
    });
    let client = HttpClient::new().unwrap();
    if !total {
        client.update_session(|s| s.set_read_timeout(timeout));
    }
    let received = Rc::new(Cell::new(false));
    let r = received.clone();
    client
        .download_progress
        .connect(move |_| r.set(true))
        .release();
    let mut request = HttpRequest::get(&format!("http://{addr}/")).unwrap();
    if total {
        request.set_timeout(timeout);
    }
    let sent = Instant::now();
    let out = send(&client, request);
    assert!(run_until(&mut ev, Duration::from_secs(10), || received.get()));
    // Busy user code: the server ends the response meanwhile, and the timeout passes.
    let busy_until = Instant::now().max(sent + timeout) + Duration::from_millis(200);
    close_tx.send(()).unwrap();
    closed_rx.recv().unwrap();
    std::thread::sleep(busy_until.saturating_duration_since(Instant::now()));
    let result = wait(&mut ev, &out);
    assert!(
        result.as_ref().is_ok_and(|r| r.text() == "hello"),
        "total timeout: {total}: {result:?}"
    );
}

/// The bytes a request hands to the kernel are reported from a later turn. A request written by
/// user code that runs in the loop's posted stage (here the callback of a request the client
/// refused, which comes from a posted closure), on an idle pooled connection, may get its whole
/// response in the same turn's poll, before that report: the report then found the connection
/// idle (or serving the next request) and was dropped (or counted as the next request's body),
/// so `upload_progress` never reported the body that went out. The callback keeps the loop busy
/// for a moment after sending, so that the answer is there by that poll.
#[test]
fn upload_progress_reaches_its_total_when_the_answer_comes_before_the_written_report() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|req, _| Reply::Bytes(ok_response(&req.body.len().to_string(), "")));
    let client = HttpClient::new().unwrap();
    let progress = upload_reports_with_ids(&client);
    assert_eq!(
        get(&mut ev, &client, &server.url("/warm")).unwrap().text(),
        "0"
    );
    assert_eq!(client.open_connections(), 1);

    let ids: Rc<RefCell<Vec<kdnet::network::http::RequestId>>> = Rc::default();
    let answers: Rc<RefCell<Vec<String>>> = Rc::default();
    let refused: Outcome = Rc::default();
    let (weak, url) = (Rc::downgrade(&client), server.url("/up"));
    let (i, a, r) = (ids.clone(), answers.clone(), refused.clone());
    let bad = HttpRequest::get(&server.url("/bad"))
        .unwrap()
        .with_header("Transfer-Encoding", "chunked");
    client.send(bad, move |result| {
        *r.borrow_mut() = Some(result);
        let client = weak.upgrade().unwrap();
        // A POST of 1,000 bytes whose callback sends a second one of 500 on the same connection.
        let (weak, url2, i2, a2) = (Rc::downgrade(&client), url.clone(), i.clone(), a.clone());
        let first = HttpRequest::post(&url, vec![b'a'; 1000]).unwrap();
        let id = client.send(first, move |result| {
            a2.borrow_mut().push(result.unwrap().text().into_owned());
            let client = weak.upgrade().unwrap();
            let second = HttpRequest::post(&url2, vec![b'b'; 500]).unwrap();
            let a3 = a2.clone();
            let id = client.send(second, move |result| {
                a3.borrow_mut().push(result.unwrap().text().into_owned())
            });
            i2.borrow_mut().push(id);
        });
        i.borrow_mut().push(id);
        // User code busy for a moment: the answer arrives meanwhile.
        std::thread::sleep(Duration::from_millis(100));
    });
    wait_until(&mut ev, || answers.borrow().len() == 2);
    assert!(matches!(
        refused.borrow_mut().take(),
        Some(Err(HttpError::InvalidRequest(_)))
    ));
    assert_eq!(*answers.borrow(), ["1000", "500"]);
    let seen = server.requests();
    assert!(seen.iter().all(|r| r.connection == 0), "not one connection");
    // A moment more for a report that would come late.
    run_until(&mut ev, Duration::from_millis(50), || false);
    let progress = progress.borrow();
    for (&id, total) in ids.borrow().iter().zip([1000, 500]) {
        let reports: Vec<(u64, u64)> = (progress.iter())
            .filter(|r| r.0 == id)
            .map(|r| (r.1, r.2))
            .collect();
        assert!(
            reports.iter().all(|&(sent, t)| t == total && sent <= total),
            "{id}: {reports:?}"
        );
        assert_eq!(
            reports.last().map(|r| r.0),
            Some(total),
            "{id}: {reports:?} of {progress:?}"
        );
    }
}

/// As above for a request whose answer fails after the server began it: a body over the
/// session's limit (the client closes the connection) and a body cut short by the server's
/// close. Its body all left before the answer, yet its upload progress stopped at nothing:
/// the written-bytes report came after the connection was gone.
#[test]
fn upload_progress_reaches_its_total_when_the_answer_fails_before_the_written_report() {
    for (path, limit) in [("/big", 100), ("/cut", usize::MAX)] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(|req, _| match req.line.split(' ').nth(1) {
            Some("/big") => Reply::Bytes(ok_response(&"x".repeat(5000), "")),
            Some("/cut") => {
                Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec())
            }
            _ => Reply::Bytes(ok_response("0", "")),
        });
        let mut session = HttpSession::new();
        session.set_max_response_body_bytes(limit);
        let client = HttpClient::with_session(session).unwrap();
        let progress = Rc::new(RefCell::new(Vec::new()));
        let p = progress.clone();
        client
            .upload_progress
            .connect(move |&(id, sent, total)| p.borrow_mut().push((id, sent, total)))
            .release();
        get(&mut ev, &client, &server.url("/warm")).unwrap();
        assert_eq!(client.open_connections(), 1);

        let id = Rc::new(Cell::new(None));
        let outcome: Outcome = Rc::default();
        let (weak, url, i, o) = (
            Rc::downgrade(&client),
            server.url(path),
            id.clone(),
            outcome.clone(),
        );
        let bad = HttpRequest::get(&server.url("/bad"))
            .unwrap()
            .with_header("Transfer-Encoding", "chunked");
        client.send(bad, move |_| {
            let client = weak.upgrade().unwrap();
            let post = HttpRequest::post(&url, vec![b'a'; 1000]).unwrap();
            i.set(Some(client.send(post, move |r| *o.borrow_mut() = Some(r))));
            // User code busy for a moment: the answer arrives meanwhile.
            std::thread::sleep(Duration::from_millis(100));
        });
        let result = wait(&mut ev, &outcome);
        match path {
            "/big" => assert!(
                matches!(result, Err(HttpError::LimitExceeded { .. })),
                "{result:?}"
            ),
            _ => assert!(
                matches!(
                    result,
                    Err(HttpError::IncompleteBody {
                        received: 3,
                        expected: Some(10)
                    })
                ),
                "{result:?}"
            ),
        }
        run_until(&mut ev, Duration::from_millis(50), || false);
        let id = id.get().unwrap();
        let reports: Vec<(u64, u64)> = (progress.borrow().iter())
            .filter(|r| r.0 == id)
            .map(|r| (r.1, r.2))
            .collect();
        assert!(
            reports
                .iter()
                .all(|&(sent, total)| total == 1000 && sent <= total),
            "{path}: {reports:?}"
        );
        assert_eq!(
            reports.last().map(|r| r.0),
            Some(1000),
            "{path}: {reports:?}"
        );
    }
}

/// CA certificates can be given as DER (`HttpSession::add_ca_certificate_der`), and the system
/// roots can be left out (`set_trust_default_roots(false)`, reqwest's
/// `tls_built_in_root_certs(false)`). With only the added CAs trusted and none added, an https
/// request fails with a configuration error before any connection; with the test CA added as
/// DER it succeeds. A DER that is no certificate is refused and adds nothing.
#[test]
fn a_der_ca_certificate_is_trusted_and_the_system_roots_can_be_left_out() {
    use kdnet::network::{SocketError, TlsFailure};
    use rustls::pki_types::pem::PemObject;
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let pki = support::certs::test_pki();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = {
        let seen = Arc::clone(&seen);
        support::served::listen(listener, true, move |reader, _| {
            while let Some(request) = support::read_request(reader) {
                seen.lock().unwrap().push(request.line.clone());
                if !support::served::write_all(reader, &ok_response("done", "")) {
                    return;
                }
            }
        })
    };
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let client = HttpClient::new().unwrap();
    assert!(client.session().trusts_default_roots());
    client.update_session(|s| s.set_trust_default_roots(false));
    let e = get(&mut ev, &client, &url).unwrap_err();
    assert!(
        matches!(
            &e,
            HttpError::Transport(SocketError::Tls(TlsFailure::Configuration(reason)))
                if reason == "no trusted root certificate"
        ),
        "{e:?}"
    );
    assert!(seen.lock().unwrap().is_empty());

    let mut session = client.session();
    assert!(
        session
            .add_ca_certificate_der(b"\x30\x03\x02\x01\x01")
            .is_err()
    );
    assert!(session.extra_ca_certificates().is_empty());
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    session.add_ca_certificate_der(&der).unwrap();
    // Kept in its PEM form, which reads back as the same certificate.
    let kept = &session.extra_ca_certificates()[0];
    assert_eq!(
        rustls::pki_types::CertificateDer::from_pem_slice(kept).unwrap(),
        der
    );
    client.set_session(session);
    assert_eq!(get(&mut ev, &client, &url).unwrap().text(), "done");
    assert_eq!(*seen.lock().unwrap(), ["GET / HTTP/1.1"]);
}

/// RELIABILITY promise 7: the cookie jar's log lines about a refused `Set-Cookie` name the URL
/// without its query (signed URLs and `?key=` carry credentials there), as the redirect's does.
#[test]
fn the_cookie_jar_log_lines_show_no_query_of_the_url() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(ok_response(
            "done",
            "Set-Cookie: a=1; Domain=elsewhere.example\r\nSet-Cookie: b=\u{FFFD}\r\n",
        ))
    });
    let client = HttpClient::new().unwrap();
    let url = server.url("/page?sig=cookie-marker-93c1");
    let r = wait(&mut ev, &send(&client, HttpRequest::get(&url).unwrap())).unwrap();
    assert_eq!(r.text(), "done");
    let logs = logs.0.lock().unwrap();
    let refused: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("ignoring Set-Cookie from") && l.contains(&server.url("/page")))
        .collect();
    assert_eq!(refused.len(), 2, "{logs:?}");
    let leaks: Vec<&String> = logs.iter().filter(|l| l.contains("marker-93c1")).collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// Every `(sent, total)` `client.upload_progress` reports, in order.
fn upload_reports(client: &HttpClient) -> Rc<RefCell<Vec<(u64, u64)>>> {
    let progress = Rc::new(RefCell::new(Vec::new()));
    let p = progress.clone();
    client
        .upload_progress
        .connect(move |&(_, sent, total)| p.borrow_mut().push((sent, total)))
        .release();
    progress
}

/// Every `(request, sent, total)` `client.upload_progress` reports, in order.
fn upload_reports_with_ids(
    client: &HttpClient,
) -> Rc<RefCell<Vec<(kdnet::network::http::RequestId, u64, u64)>>> {
    let progress = Rc::new(RefCell::new(Vec::new()));
    let p = progress.clone();
    client
        .upload_progress
        .connect(move |&(id, sent, total)| p.borrow_mut().push((id, sent, total)))
        .release();
    progress
}
