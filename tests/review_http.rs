//! Review of the HTTP client: each test pins one defect found by reading the code (they fail on
//! the code as reviewed).

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, HttpResponse, HttpSession};
use support::{Reply, ScriptServer, ok_response, run_until};

type Outcome = Rc<RefCell<Option<Result<HttpResponse, HttpError>>>>;

fn send(client: &HttpClient, request: HttpRequest) -> Outcome {
    let out: Outcome = Rc::default();
    let o = out.clone();
    client.send(request, move |r| *o.borrow_mut() = Some(r));
    out
}

fn wait(ev: &mut EventLoop, out: &Outcome, limit: Duration) -> Result<HttpResponse, HttpError> {
    assert!(
        run_until(ev, limit, || out.borrow().is_some()),
        "request did not finish within {limit:?}"
    );
    out.borrow_mut().take().unwrap()
}

fn client_with_one_connection_per_host() -> Rc<HttpClient> {
    let mut session = HttpSession::new();
    session.set_max_connections_per_host(1);
    HttpClient::with_session(session).unwrap()
}

/// `cancel()` of a request that is on a connection ends the request but leaves the connection
/// marked as serving it: the connection is neither closed nor returned to the pool, so it holds
/// one of the host's slots for as long as the server keeps it open, and the next request to the
/// host waits behind it forever.
#[test]
fn cancelling_an_in_flight_request_frees_its_connection_for_the_next_one() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            std::thread::sleep(Duration::from_millis(300));
        }
        // keep-alive: the server keeps the connection open after answering
        Reply::Bytes(ok_response("done", ""))
    });
    let client = client_with_one_connection_per_host();
    let slow: Outcome = Rc::default();
    let s = slow.clone();
    let id = client.get(&server.url("/slow"), move |r| *s.borrow_mut() = Some(r));
    // The request is on the wire and the server is working on it.
    assert!(run_until(&mut ev, Duration::from_secs(5), || !server
        .requests()
        .is_empty()));
    assert!(client.cancel(id));
    assert!(matches!(
        wait(&mut ev, &slow, Duration::from_secs(5)),
        Err(HttpError::Cancelled)
    ));
    // The user moves on: the next request to the same host.
    let next = send(&client, HttpRequest::get(&server.url("/next")).unwrap());
    let result = wait(&mut ev, &next, Duration::from_secs(5));
    assert_eq!(result.unwrap().text(), "done");
}

/// Same leak without any per-host limit: after cancelling an in-flight request whose response
/// then arrives, nothing is pending, yet the connection is still counted as active and is
/// never reused: the next request opens a second connection.
#[test]
fn a_connection_whose_request_was_cancelled_is_not_leaked() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            std::thread::sleep(Duration::from_millis(200));
        }
        Reply::Bytes(ok_response("done", ""))
    });
    let client = HttpClient::new().unwrap();
    let slow: Outcome = Rc::default();
    let s = slow.clone();
    let id = client.get(&server.url("/slow"), move |r| *s.borrow_mut() = Some(r));
    assert!(run_until(&mut ev, Duration::from_secs(5), || !server
        .requests()
        .is_empty()));
    assert!(client.cancel(id));
    let _ = wait(&mut ev, &slow, Duration::from_secs(5));
    // Let the cancelled request's response arrive and be dealt with.
    run_until(&mut ev, Duration::from_millis(600), || false);
    assert_eq!(client.pending_requests(), 0);
    for i in 0..3 {
        let out = send(&client, HttpRequest::get(&server.url("/x")).unwrap());
        assert_eq!(
            wait(&mut ev, &out, Duration::from_secs(5)).unwrap().text(),
            "done"
        );
        assert!(
            client.open_connections() <= 1,
            "request {i}: {} connections open to one host for sequential requests",
            client.open_connections()
        );
    }
}

/// A POST written in full on a reused keep-alive connection, which the server then closes
/// without answering, is sent again on a new connection: the server runs it twice. RFC 9112
/// §9.3.1: a user agent MUST NOT automatically retry a request with a non-idempotent method
/// (the server may have applied it before the connection went down).
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
        wait(&mut ev, &warm, Duration::from_secs(5)).unwrap().text(),
        "warm"
    );
    let pay = send(
        &client,
        HttpRequest::post(&server.url("/pay"), "amount=100").unwrap(),
    );
    let result = wait(&mut ev, &pay, Duration::from_secs(5));
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

/// Bytes beyond a response make its connection unusable ("pipelining garbage: never reuse this
/// connection"), but only when they sit in the same 16 KiB delivery slice as the response's
/// end. When the response ends exactly at a slice boundary, the connection goes to the next
/// queued request first, and the bytes that followed the response in the same read (sent
/// before that request was even written) become that request's response.
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
    let a = wait(&mut ev, &a, Duration::from_secs(5)).unwrap();
    assert_eq!(a.body().len(), 16 * 1024 - 42);
    let b = wait(&mut ev, &b, Duration::from_secs(5));
    assert_eq!(
        b.map(|r| r.text().into_owned()).unwrap(),
        "real-b",
        "the second request got bytes the server sent before it was written"
    );
}
