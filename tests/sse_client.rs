//! SseClient against loopback SSE servers: reconnection, Last-Event-ID, retry, fatal responses.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpRequest, HttpSession};
use kdnet::network::sse::{ReadyState, SseClient, SseError};
use support::{Reply, ScriptServer, captured_logs, ok_response, run_until};

fn stream(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Recorder {
    events: Rc<RefCell<Vec<String>>>,
    errors: Rc<RefCell<Vec<SseError>>>,
}

fn record(sse: &SseClient) -> Recorder {
    let events: Rc<RefCell<Vec<String>>> = Rc::default();
    let errors: Rc<RefCell<Vec<SseError>>> = Rc::default();
    let e = events.clone();
    sse.message_received
        .connect(move |ev| {
            e.borrow_mut().push(format!(
                "{}:{}:{}",
                ev.event_type(),
                ev.data(),
                ev.last_event_id()
            ))
        })
        .release();
    let r = errors.clone();
    sse.error
        .connect(move |err| r.borrow_mut().push(err.clone()))
        .release();
    Recorder { events, errors }
}

#[test]
fn reconnects_after_the_stream_ends_sending_last_event_id_and_honouring_retry() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, n| match n {
        0 => {
            assert_eq!(req.header("last-event-id"), None);
            Reply::BytesThenClose(stream("retry: 50\n\nid: 1\ndata: first\n\n"))
        }
        1 => Reply::BytesThenClose(stream("event: update\ndata: second\n\n")),
        _ => Reply::Bytes(stream("id: 3\ndata: third\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let started = Instant::now();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 3));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "retry: 50 was not honoured (default is 3 s)"
    );
    assert_eq!(
        *rec.events.borrow(),
        ["message:first:1", "update:second:1", "message:third:3"]
    );
    let seen = server.requests();
    assert_eq!(seen[1].header("last-event-id"), Some("1"));
    assert_eq!(
        seen[2].header("last-event-id"),
        Some("1"),
        "the ID persists across connections without id fields"
    );
    assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    assert_eq!(seen[0].header("cache-control"), Some("no-cache"));
    assert!(
        rec.errors.borrow().is_empty(),
        "a clean end is not an error"
    );
    assert_eq!(sse.last_event_id(), "3");
}

/// A checkpoint written with `SseWriter::write_id` (an `id`-only block) dispatches nothing but
/// moves the client's last event ID, so the reconnect resumes from it.
#[test]
fn a_writer_checkpoint_moves_the_id_a_reconnect_resumes_from() {
    use kdnet::network::sse::{SseEvent, SseWriter};
    let mut first = String::new();
    let mut writer = SseWriter::new();
    writer.write_retry(&mut first, Duration::from_millis(20));
    writer
        .write_event(&mut first, &SseEvent::new("", "a").with_id("1"))
        .unwrap();
    writer.write_id(&mut first, "cp-2").unwrap();
    assert_eq!(writer.client_last_event_id(), "cp-2");
    let mut resumed = SseWriter::resuming("cp-2").unwrap();
    let mut second = String::new();
    resumed
        .write_event(&mut second, &SseEvent::new("", "b").with_id("cp-2"))
        .unwrap();
    assert_eq!(
        second, "data: b\n\n",
        "the resumed writer knows the client's ID"
    );
    let server = ScriptServer::start(move |_, n| match n {
        0 => Reply::BytesThenClose(stream(&first)),
        _ => Reply::Bytes(stream(&second)),
    });
    let mut ev = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 2));
    assert_eq!(*rec.events.borrow(), ["message:a:1", "message:b:cp-2"]);
    assert_eq!(server.requests()[1].header("last-event-id"), Some("cp-2"));
    sse.disconnect();
}

#[test]
fn no_last_event_id_header_when_no_id_was_seen() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 20\ndata: x\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || server
        .requests()
        .len()
        >= 2));
    sse.disconnect();
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("last-event-id").is_none())
    );
    assert!(!rec.events.borrow().is_empty());
}

#[test]
fn initial_last_event_id_is_sent() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(stream("data: resumed\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.set_last_event_id("41");
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    assert_eq!(server.requests()[0].header("last-event-id"), Some("41"));
    assert_eq!(rec.events.borrow()[0], "message:resumed:41");
}

#[test]
fn status_204_stops_for_good() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::Bytes(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()));
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(server.requests().len(), 1, "no reconnect after 204");
    let errors = rec.errors.borrow();
    assert!(
        matches!(&errors[..], [SseError::BadStatus { status: 204, .. }]),
        "{errors:?}"
    );
    assert!(errors[0].is_fatal());
}

#[test]
fn non_200_fails_with_status_and_start_of_body_and_wrong_type_fails() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/json") {
            Reply::Bytes(ok_response("{}", "Content-Type: application/json\r\n"))
        } else {
            let body = r#"{"error":{"message":"bad key"}}"#;
            Reply::Bytes(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/auth")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    let err = rec.errors.borrow()[0].clone();
    assert!(
        matches!(&err, SseError::BadStatus { status: 401, body } if body.contains("bad key")),
        "{err:?}"
    );
    assert!(err.to_string().contains("401"));
    assert_eq!(sse.ready_state(), ReadyState::Closed);

    rec.errors.borrow_mut().clear();
    sse.connect(HttpRequest::get(&server.url("/json")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    assert!(
        matches!(&rec.errors.borrow()[0], SseError::BadContentType { content_type: Some(ct), .. } if ct == "application/json")
    );
}

#[test]
fn post_body_and_headers_are_resent_on_every_reconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 10\nid: 7\ndata: x\n\n")));
    let sse = SseClient::new().unwrap();
    let _rec = record(&sse);
    let req = HttpRequest::post(&server.url("/v1/responses"), r#"{"stream":true}"#)
        .unwrap()
        .with_header("Content-Type", "application/json")
        .with_header("Authorization", "Bearer sk-test");
    sse.connect(req);
    assert!(run_until(&mut ev, Duration::from_secs(10), || server
        .requests()
        .len()
        >= 3));
    sse.disconnect();
    for r in server.requests() {
        assert_eq!(r.line, "POST /v1/responses HTTP/1.1");
        assert_eq!(r.body, br#"{"stream":true}"#);
        assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    }
}

#[test]
fn partial_block_of_a_broken_connection_never_leaks_into_the_next() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            // Close-delimited body that stops in the middle of a block.
            Reply::BytesThenClose(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 10\n\nevent: leak\ndata: partial".to_vec())
        } else {
            Reply::Bytes(stream("data: clean\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    assert_eq!(*rec.events.borrow(), ["message:clean:"]);
}

#[test]
fn idle_timeout_treats_a_silent_stream_as_broken() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::Pieces(
                vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n13\r\nretry: 10\ndata: a\n\n\r\n".to_vec()],
                Duration::from_secs(5),
            )
        } else {
            Reply::Bytes(stream("data: b\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200)));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 2));
    assert_eq!(rec.events.borrow()[..2], ["message:a:", "message:b:"]);
    let errors = rec.errors.borrow();
    assert!(
        matches!(&errors[0], SseError::Http(e) if e.is_timeout()),
        "{errors:?}"
    );
    assert!(!errors[0].is_fatal());
}

#[test]
fn disconnect_during_the_reconnect_wait_cancels_the_reconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 300\ndata: once\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let disconnected = Rc::new(std::cell::Cell::new(0));
    let d = disconnected.clone();
    sse.disconnected
        .connect(move |_| d.set(d.get() + 1))
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Connecting
        && !rec.events.borrow().is_empty()));
    sse.disconnect();
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    run_until(&mut ev, Duration::from_millis(700), || false);
    assert_eq!(
        server.requests().len(),
        1,
        "a reconnect happened after disconnect()"
    );
    assert!(disconnected.get() >= 1);
}

#[test]
fn disconnect_from_a_slot_stops_delivery_and_touches_no_other_request() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/slow") {
            Reply::Pieces(
                vec![ok_response("other request survived", "")],
                Duration::from_millis(300),
            )
        } else {
            Reply::Bytes(stream("data: 1\n\ndata: 2\n\ndata: 3\n\n"))
        }
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |ev| {
            s.borrow_mut().push(ev.data().to_string());
            weak.upgrade().unwrap().disconnect();
        })
        .release();
    let other = Rc::new(RefCell::new(None));
    let o = other.clone();
    http.get(&server.url("/slow"), move |r| *o.borrow_mut() = Some(r));
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        other.borrow().is_some() && !seen.borrow().is_empty()
    }));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(
        *seen.borrow(),
        ["1"],
        "events after disconnect() were delivered"
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(
        other.borrow_mut().take().unwrap().unwrap().text(),
        "other request survived"
    );
}

/// 3,000 events, ~50 KiB: written at once, they arrive in reads far larger than the slices the
/// client delivers events from.
fn many_events() -> Vec<u8> {
    let body: String = (0..3_000)
        .map(|i| format!("id: {i}\ndata: event number {i}\n\n"))
        .collect();
    stream(&body)
}

#[test]
fn a_large_read_delivers_every_event_once_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(many_events()));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        rec.events.borrow().len() >= 3_000
    }));
    sse.disconnect();
    let expected: Vec<String> = (0..3_000)
        .map(|i| format!("message:event number {i}:{i}"))
        .collect();
    assert_eq!(*rec.events.borrow(), expected);
    assert!(rec.errors.borrow().is_empty(), "{:?}", rec.errors.borrow());
}

#[test]
fn disconnect_deep_inside_a_large_read_stops_delivery_there() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(many_events()));
    let sse = SseClient::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |ev| {
            s.borrow_mut().push(ev.last_event_id().to_owned());
            if ev.last_event_id() == "2000" {
                weak.upgrade().unwrap().disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || {
        seen.borrow().len() > 2_000
    }));
    run_until(&mut ev, Duration::from_millis(100), || false);
    let expected: Vec<String> = (0..=2_000).map(|i| i.to_string()).collect();
    assert_eq!(
        *seen.borrow(),
        expected,
        "events after disconnect() were delivered"
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

#[test]
fn add_event_listener_sees_one_type_only() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(stream(
            "event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: a\ndata: 3\n\n",
        ))
    });
    let sse = SseClient::new().unwrap();
    let only_a = Rc::new(RefCell::new(Vec::new()));
    let a = only_a.clone();
    sse.add_event_listener("a", move |ev| a.borrow_mut().push(ev.data().to_string()))
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || only_a
        .borrow()
        .len()
        == 2));
    assert_eq!(*only_a.borrow(), ["1", "3"]);
}

#[test]
fn redirects_are_followed_to_the_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/old") {
            Reply::Bytes(
                b"HTTP/1.1 307 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            Reply::Bytes(stream("data: moved\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/old")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    assert_eq!(rec.events.borrow()[0], "message:moved:");
}

#[test]
fn consecutive_failures_back_off_exponentially() {
    let mut ev = EventLoop::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(40));
    let times = Rc::new(RefCell::new(Vec::new()));
    let t = times.clone();
    sse.error
        .connect(move |_| t.borrow_mut().push(Instant::now()))
        .release();
    sse.connect(HttpRequest::get(&format!("http://127.0.0.1:{port}/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || times
        .borrow()
        .len()
        >= 4));
    sse.disconnect();
    let t = times.borrow();
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[2] > gaps[0] * 2, "no backoff: {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(40), "{gaps:?}");
}

#[test]
fn retry_on_throttle_honours_retry_after_when_enabled() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::Bytes(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::Bytes(stream("data: finally\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    let rec = record(&sse);
    let started = Instant::now();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 not honoured"
    );
    assert!(matches!(
        rec.errors.borrow()[0],
        SseError::Throttled { status: 429, .. }
    ));
}

#[test]
fn max_event_size_set_while_connected_applies_from_the_next_connection_and_keeps_the_id() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 20\nid: 7\ndata: short\n\n")),
        _ => Reply::BytesThenClose(stream(&format!("data: {}\n\n", "x".repeat(100)))),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let limit_set = Rc::new(std::cell::Cell::new(false));
    let (client, flag) = (Rc::downgrade(&sse), limit_set.clone());
    // Changed from a slot, while the first stream is open and its parser lent to the request.
    sse.message_received
        .connect(move |_| {
            if let Some(sse) = client.upgrade() {
                sse.set_max_event_size(16);
                flag.set(true);
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    assert!(limit_set.get());
    assert_eq!(*rec.events.borrow(), ["message:short:7"]);
    assert_first_error_is_event_too_large(&rec, 16);
    assert_eq!(server.requests()[1].header("last-event-id"), Some("7"));
    sse.disconnect();
}

#[test]
fn max_event_size_survives_a_disconnect_in_the_middle_of_a_request() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::Stall(Duration::from_secs(5)),
        _ => Reply::BytesThenClose(stream(&format!("data: {}\n\n", "x".repeat(100)))),
    });
    let sse = SseClient::new().unwrap();
    sse.set_max_event_size(16);
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        == 1));
    // The in-flight request (and the parser lent to it) is abandoned.
    sse.disconnect();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    assert_first_error_is_event_too_large(&rec, 16);
    assert!(rec.events.borrow().is_empty());
    sse.disconnect();
}

fn assert_first_error_is_event_too_large(rec: &Recorder, limit: usize) {
    let errors = rec.errors.borrow();
    assert!(
        matches!(errors.first(), Some(SseError::EventTooLarge { limit: l }) if *l == limit),
        "{errors:?}"
    );
}

#[test]
fn a_session_read_timeout_does_not_cut_a_flowing_stream_on_a_reused_connection() {
    // The session has a 300 ms read timeout, the SseClient none. The stream goes out on a
    // kept-alive connection (a GET ran first), where the request is written at once; events then
    // flow every 100 ms for 1.5 s. Nothing may time out: the SseClient's setting (none) governs
    // the stream, also on that path.
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            return Reply::Bytes(ok_response("warm", ""));
        }
        let mut pieces = vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
        ];
        for i in 0..15 {
            let event = format!("data: {i}\n\n");
            pieces.push(format!("{:x}\r\n{event}\r\n", event.len()).into_bytes());
        }
        pieces.push(b"0\r\n\r\n".to_vec());
        Reply::Pieces(pieces, Duration::from_millis(100))
    });
    let mut session = HttpSession::new();
    session.set_read_timeout(Duration::from_millis(300));
    let http = HttpClient::with_session(session).unwrap();
    let warmed = Rc::new(RefCell::new(None));
    let w = warmed.clone();
    http.get(&server.url("/warm"), move |result| {
        *w.borrow_mut() = Some(result.map(|response| response.body().to_vec()));
    });
    assert!(run_until(&mut ev, Duration::from_secs(5), || warmed
        .borrow()
        .is_some()));
    assert_eq!(warmed.borrow_mut().take().unwrap().unwrap(), b"warm");

    let sse = http.create_sse_client();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/stream")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 15
        || !rec.errors.borrow().is_empty()));
    let errors = rec.errors.borrow();
    assert!(errors.is_empty(), "no error while events flow: {errors:?}");
    let expected: Vec<String> = (0..15).map(|i| format!("message:{i}:")).collect();
    assert_eq!(*rec.events.borrow(), expected);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "no reconnect");
    assert_eq!(
        requests[1].connection, 0,
        "the stream reused the warm connection"
    );
}

/// The client's lifecycle in order: state changes, `connected`, `error` (with the state it was
/// emitted in) and `disconnected`.
fn lifecycle(sse: &Rc<SseClient>) -> Rc<RefCell<Vec<String>>> {
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l = log.clone();
    sse.state_changed
        .connect(move |state| l.borrow_mut().push(format!("state {state:?}")))
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    let (l, weak) = (log.clone(), Rc::downgrade(sse));
    sse.error
        .connect(move |_| {
            let state = weak.upgrade().map(|sse| sse.ready_state());
            l.borrow_mut().push(format!("error in {state:?}"));
        })
        .release();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    log
}

/// The lifecycle of a client with auto reconnect off whose only connection fails: closed first,
/// so that the `error` slot sees that no reconnect follows.
/// (No `disconnected`: it pairs with a `connected`, which never came.)
const CLOSED_WITH_AN_ERROR: [&str; 3] =
    ["state Connecting", "state Closed", "error in Some(Closed)"];

/// A client with auto reconnect off (and a 10 ms reconnection time, so that a reconnect would
/// come at once), further set up by `configure`, run against `server` until it closes, and
/// 300 ms beyond: the server must have seen exactly one request.
fn run_until_closed_without_auto_reconnect(
    ev: &mut EventLoop,
    server: &ScriptServer,
    configure: impl FnOnce(&SseClient),
) -> (Rc<SseClient>, Recorder, Rc<RefCell<Vec<String>>>) {
    let sse = SseClient::new().unwrap();
    assert!(sse.auto_reconnect(), "on by default, as in EventSource");
    sse.set_reconnection_time(Duration::from_millis(10));
    sse.set_auto_reconnect(false);
    configure(&sse);
    let rec = record(&sse);
    let log = lifecycle(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(ev, Duration::from_secs(10), || sse.ready_state()
        == ReadyState::Closed));
    run_until(ev, Duration::from_millis(300), || false);
    assert_eq!(
        server.requests().len(),
        1,
        "reconnected with auto reconnect off"
    );
    (sse, rec, log)
}

#[test]
fn without_auto_reconnect_a_clean_end_closes_the_client_and_connect_starts_again() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        Reply::BytesThenClose(stream(&format!("retry: 10\ndata: {n}\n\n")))
    });
    let (sse, rec, log) = run_until_closed_without_auto_reconnect(&mut ev, &server, |_| {});
    assert_eq!(*rec.events.borrow(), ["message:0:"]);
    assert!(
        rec.errors.borrow().is_empty(),
        "a clean end is not an error"
    );
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "connected",
            "state Closed",
            "disconnected"
        ]
    );

    // connect() starts a new stream; with auto reconnect back on, its end brings a reconnect.
    sse.set_auto_reconnect(true);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 3));
    sse.disconnect();
    assert_eq!(
        *rec.events.borrow(),
        ["message:0:", "message:1:", "message:2:"]
    );
}

#[test]
fn without_auto_reconnect_a_broken_connection_reports_the_error_in_the_closed_state() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Close);
    let (_sse, rec, log) = run_until_closed_without_auto_reconnect(&mut ev, &server, |_| {});
    let errors = rec.errors.borrow();
    assert!(matches!(&errors[..], [SseError::Http(_)]), "{errors:?}");
    assert!(
        !errors[0].is_fatal(),
        "the error itself would allow a reconnect"
    );
    assert_eq!(*log.borrow(), CLOSED_WITH_AN_ERROR);
}

#[test]
fn without_auto_reconnect_a_throttled_answer_closes_even_with_retry_on_throttle() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
    });
    let (_sse, rec, log) = run_until_closed_without_auto_reconnect(&mut ev, &server, |sse| {
        sse.set_retry_on_throttle(true)
    });
    assert!(
        matches!(
            &rec.errors.borrow()[..],
            [SseError::Throttled { status: 503, .. }]
        ),
        "{:?}",
        rec.errors.borrow()
    );
    assert_eq!(*log.borrow(), CLOSED_WITH_AN_ERROR);
}

/// A refused stream fails for good ("any other status … fails for good: error with the status,
/// state Closed, no reconnect") also when the server cuts its error body short — a common way for
/// a proxy to answer — instead of counting as a network error that reconnects.
#[test]
fn non_200_status_with_a_truncated_error_body_still_fails_for_good() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nno such stream"
                .to_vec(),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/gone")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    run_until(&mut ev, Duration::from_millis(500), || false);
    let errors = rec.errors.borrow();
    assert!(
        matches!(&errors[0], SseError::BadStatus { status: 404, .. }),
        "a 404 must fail with BadStatus, got {:?}",
        errors[0]
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(server.requests().len(), 1, "no reconnect after a 404");
}

/// A refused stream whose error body never ends is reported after a short wait, not left in
/// `Connecting` (a stream has no total timeout).
#[test]
fn non_200_status_whose_error_body_never_ends_is_reported() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(
            vec![
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nbusy.\r\n"
                    .to_vec(),
            ],
            Duration::from_secs(20),
        )
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/busy")).unwrap());
    run_until(&mut ev, Duration::from_secs(2), || {
        !rec.errors.borrow().is_empty()
    });
    let errors = rec.errors.borrow();
    assert!(
        matches!(&errors[..], [SseError::BadStatus { status: 503, .. }]),
        "the 503 was never reported (state {:?}): {errors:?}",
        sse.ready_state()
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

/// `set_last_event_id` while a request is in flight (e.g. right after `connect`) is sent with the
/// next connection: the parser lent to the request does not overwrite it when it comes back.
#[test]
fn set_last_event_id_while_a_request_is_in_flight_is_sent_with_the_next_connection() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 10\n\n")),
        _ => Reply::Bytes(stream("data: resumed\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    sse.set_last_event_id("resume-42");
    assert_eq!(sse.last_event_id(), "resume-42");
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    let seen = server.requests();
    assert_eq!(
        seen[1].header("last-event-id"),
        Some("resume-42"),
        "the ID set with set_last_event_id was not sent on the next connection"
    );
}

/// An event ID holding a control character (valid in SSE: anything but NUL, CR and LF) cannot be a
/// header value; reconnects go without `Last-Event-ID` rather than failing for ever.
#[test]
fn an_event_id_with_a_control_character_does_not_break_every_reconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 10\nid: a\u{1}b\ndata: first\n\n")),
        _ => Reply::Bytes(stream("data: second\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    let reconnected = run_until(&mut ev, Duration::from_secs(3), || {
        rec.events.borrow().len() >= 2
    });
    assert!(
        reconnected,
        "no reconnect reached the server ({} request(s)); events {:?}, errors {:?}",
        server.requests().len(),
        rec.events.borrow(),
        rec.errors.borrow()
    );
}

/// With `set_flush_unterminated_event(true)`, `connect()` from a slot of the flushed final event
/// starts the new stream (its head and events are not ignored, and no reconnect timer starts a
/// third request).
#[test]
fn connect_from_a_slot_of_the_flushed_final_event_starts_the_new_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/second") {
            Reply::Bytes(stream("data: from second\n\n"))
        } else {
            Reply::BytesThenClose(stream("data: tail"))
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_flush_unterminated_event(true);
    let rec = record(&sse);
    let second = HttpRequest::get(&server.url("/second")).unwrap();
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |event| {
            if event.data() == "tail"
                && let Some(sse) = weak.upgrade()
            {
                sse.connect(second.clone());
            }
        })
        .release();
    let connected = Rc::new(RefCell::new(0));
    let c = connected.clone();
    sse.connected
        .connect(move |_| *c.borrow_mut() += 1)
        .release();
    sse.connect(HttpRequest::get(&server.url("/first")).unwrap());
    run_until(&mut ev, Duration::from_secs(2), || {
        rec.events.borrow().len() >= 2
    });
    assert_eq!(
        *rec.events.borrow(),
        ["message:tail:", "message:from second:"],
        "the stream opened from the slot delivered nothing (connected {} time(s), {} request(s))",
        connected.borrow(),
        server.requests().len()
    );
}

/// The other side of `set_last_event_id` during a request: an ID the stream sends after the call
/// is newer than the user's, and is the one sent when reconnecting.
#[test]
fn an_id_the_stream_sends_after_set_last_event_id_wins() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 10\nid: 7\ndata: x\n\n")),
        _ => Reply::Bytes(stream("data: resumed\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let seen_in_slot = Rc::new(RefCell::new(String::new()));
    let (seen, weak) = (seen_in_slot.clone(), Rc::downgrade(&sse));
    sse.message_received
        .connect(move |event| {
            if event.data() == "x"
                && let Some(sse) = weak.upgrade()
            {
                *seen.borrow_mut() = sse.last_event_id();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    sse.set_last_event_id("user-set");
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 2));
    assert_eq!(
        *seen_in_slot.borrow(),
        "7",
        "the client's ID while the event is delivered"
    );
    assert_eq!(server.requests()[1].header("last-event-id"), Some("7"));
    assert_eq!(sse.last_event_id(), "7");
}

/// `disconnect()` from an `error` slot while an open stream is being re-established: one
/// `disconnected`, not two.
#[test]
fn disconnect_from_an_error_slot_after_an_open_stream_broke_reports_one_disconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(
            vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n".to_vec()],
            Duration::from_secs(20),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200)));
    let disconnects = Rc::new(RefCell::new(0));
    let d = disconnects.clone();
    sse.disconnected
        .connect(move |_| *d.borrow_mut() += 1)
        .release();
    let weak = Rc::downgrade(&sse);
    sse.error
        .connect(move |_| {
            if let Some(sse) = weak.upgrade() {
                sse.disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(*disconnects.borrow(), 1);
}

/// `connect()` from the `error` slot of a refused stream starts a new stream: the client did not
/// stop, so no `disconnected` follows the error, and the new stream opens.
#[test]
fn connect_from_the_error_slot_of_a_refused_stream_is_not_followed_by_disconnected() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/ok") {
            // An open stream that stays open.
            Reply::Pieces(
                vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nc\r\ndata: fine\n\n\r\n".to_vec()],
                Duration::from_secs(20),
            )
        } else {
            Reply::Bytes(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec())
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let log: Rc<RefCell<Vec<&str>>> = Rc::default();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected"))
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected"))
        .release();
    let (weak, ok) = (
        Rc::downgrade(&sse),
        HttpRequest::get(&server.url("/ok")).unwrap(),
    );
    let l = log.clone();
    sse.error
        .connect(move |_| {
            l.borrow_mut().push("error");
            if let Some(sse) = weak.upgrade() {
                sse.connect(ok.clone());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/gone")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    assert_eq!(*log.borrow(), ["error", "connected"]);
    assert_eq!(sse.ready_state(), ReadyState::Open);
}

/// `set_reconnection_time` holds until the server sends `retry:` again: a `retry:` from an
/// earlier connection must not come back when a later connection (without `retry:`) ends.
#[test]
fn set_reconnection_time_is_not_undone_by_an_earlier_retry_at_the_next_connection_end() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 20\ndata: first\n\n")),
        _ => Reply::BytesThenClose(stream("data: second\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    sse.add_event_listener("message", move |event| {
        if event.data() == "second" {
            // The server's 20 ms applied so far; from now on the user's value does.
            weak.upgrade()
                .unwrap()
                .set_reconnection_time(Duration::from_secs(30));
        }
    })
    .release();
    let ends = Rc::new(RefCell::new(0));
    let e = ends.clone();
    sse.disconnected
        .connect(move |_| *e.borrow_mut() += 1)
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || *ends
        .borrow()
        >= 2));
    assert_eq!(*rec.events.borrow(), ["message:first:", "message:second:"]);
    assert_eq!(
        sse.reconnection_time(),
        Duration::from_secs(30),
        "the stale retry: 20 came back"
    );
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(
        server.requests().len(),
        2,
        "reconnected after the stale 20 ms"
    );
    sse.disconnect();
}

/// A `retry:` on the unterminated last line counts when the client flushes that line at the end
/// of the stream.
#[test]
fn retry_on_a_flushed_unterminated_last_line_sets_the_reconnection_time() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("data: first\n\nretry: 25")),
        _ => Reply::Stall(Duration::from_secs(5)),
    });
    let sse = SseClient::new().unwrap();
    sse.set_flush_unterminated_event(true);
    let ends = Rc::new(RefCell::new(0));
    let e = ends.clone();
    sse.disconnected
        .connect(move |_| *e.borrow_mut() += 1)
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || *ends
        .borrow()
        >= 1));
    assert_eq!(sse.reconnection_time(), Duration::from_millis(25));
    sse.disconnect();
}

/// `Duration::MAX` as the reconnection time or the read timeout means "wait for ever": the
/// client waits in `Connecting` after the stream ends, where adding the jitter (or the deadline
/// arithmetic) used to panic.
#[test]
fn a_reconnection_time_of_duration_max_waits_without_panicking() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::BytesThenClose(stream("data: once\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.set_reconnection_time(Duration::MAX);
    sse.set_max_reconnection_delay(Duration::MAX);
    sse.set_read_timeout(Some(Duration::MAX));
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || !rec
        .events
        .borrow()
        .is_empty()
        && sse.ready_state() == ReadyState::Connecting));
    let deadline = Instant::now() + Duration::from_millis(200);
    assert!(!run_until(&mut ev, Duration::from_millis(200), || server
        .requests()
        .len()
        > 1));
    assert!(Instant::now() >= deadline);
    assert_eq!(server.requests().len(), 1);
    sse.disconnect();
}

/// A request that can never be sent as it is (a header value with a line break) fails for good,
/// once, with the reason: reconnecting could only fail the same way, for ever.
#[test]
fn a_request_that_can_never_be_sent_fails_for_good() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(stream("data: x\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.set_reconnection_time(Duration::from_millis(10));
    let mut request = HttpRequest::get(&server.url("/")).unwrap();
    request.set_header("X-Token", "abc\r\nInjected: yes");
    sse.connect(request);
    assert!(run_until(&mut ev, Duration::from_secs(5), || sse
        .ready_state()
        == ReadyState::Closed));
    // Long enough for several 10 ms reconnects, had it gone on.
    run_until(&mut ev, Duration::from_millis(200), || false);
    let errors = rec.errors.borrow();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].is_fatal(), "{:?}", errors[0]);
    assert!(
        errors[0].to_string().contains("control character"),
        "{}",
        errors[0]
    );
    assert!(server.requests().is_empty());
}

/// A reconnection time of zero (`retry: 0`) still backs off after failed attempts: a server that
/// is down is not hammered in a tight loop.
#[test]
fn a_zero_reconnection_time_still_backs_off_after_failures() {
    let mut ev = EventLoop::new().unwrap();
    // A port nothing listens on: every attempt is refused at once.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.set_reconnection_time(Duration::ZERO);
    sse.connect(HttpRequest::get(&format!("http://127.0.0.1:{port}/")).unwrap());
    run_until(&mut ev, Duration::from_millis(500), || false);
    let attempts = rec.errors.borrow().len();
    assert!(attempts >= 2, "it does retry: {attempts}");
    assert!(attempts <= 10, "{attempts} attempts in 500 ms");
    sse.disconnect();
}

/// A message slot that waits for another request (a nested loop) while the stream goes on and
/// ends: the events after it and the end come after the slot returns, in order. The events
/// arriving during the wait used to be lost (the busy slot skipped them), then the end was
/// handled and the rest of the running batch dropped; the last event ID stayed behind.
#[test]
fn a_nested_wait_in_a_message_slot_loses_no_event_and_keeps_their_order() {
    let mut ev = EventLoop::new().unwrap();
    let first = "id: 1\ndata: 1\n\nid: 2\ndata: 2\n\n";
    let second = "id: 3\ndata: 3\n\n";
    let server = ScriptServer::start(move |req, _| {
        if req.line.contains("/slow") {
            Reply::Pieces(
                vec![Vec::new(), ok_response("slow", "")],
                Duration::from_millis(300),
            )
        } else {
            let mut head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
                first.len() + second.len()
            )
            .into_bytes();
            head.extend_from_slice(first.as_bytes());
            Reply::Pieces(
                vec![head, second.as_bytes().to_vec()],
                Duration::from_millis(50),
            )
        }
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    sse.set_auto_reconnect(false);
    let seen = Rc::new(RefCell::new(Vec::<String>::new()));
    let s = seen.clone();
    let h = http.clone();
    let slow = server.url("/slow");
    sse.message_received
        .connect(move |ev| {
            s.borrow_mut().push(ev.data().to_string());
            if ev.data() == "1" {
                let r = h.send_and_wait(HttpRequest::get(&slow).unwrap()).unwrap();
                s.borrow_mut().push(r.text().to_string());
            }
        })
        .release();
    let disconnected = Rc::new(std::cell::Cell::new(0));
    let d = disconnected.clone();
    sse.disconnected
        .connect(move |_| d.set(d.get() + 1))
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || disconnected
        .get()
        > 0));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*seen.borrow(), ["1", "slow", "2", "3"]);
    assert_eq!(sse.last_event_id(), "3");
    assert_eq!(disconnected.get(), 1);
    assert_eq!(http.pending_requests(), 0);
}

/// A `state_changed` slot that connects elsewhere when `connect` reports `Connecting`: the
/// slot's stream is the only one. `connect` used to send its own request after the slot's too,
/// and that second stream ran on unseen (a request and a connection held until the client died).
#[test]
fn connect_from_a_state_changed_slot_inside_connect_leaves_one_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
        head.extend_from_slice(format!("data: {}\n\n", req.line).as_bytes());
        Reply::Pieces(vec![head], Duration::from_secs(3))
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    let url_b = server.url("/b");
    let once = Rc::new(std::cell::Cell::new(true));
    sse.state_changed
        .connect(move |s| {
            if *s == ReadyState::Connecting && once.replace(false) {
                weak.upgrade()
                    .unwrap()
                    .connect(HttpRequest::get(&url_b).unwrap());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || !rec
        .events
        .borrow()
        .is_empty()));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(*rec.events.borrow(), ["message:GET /b HTTP/1.1:"]);
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["GET /b HTTP/1.1"]);
    assert_eq!(http.pending_requests(), 1);
    sse.disconnect();
    assert_eq!(http.pending_requests(), 0);
}

/// `disconnect` from an `about_to_send_request` slot of the HTTP client while the SSE client
/// reconnects: the client stays closed. The reconnect used to go ahead and open the stream again
/// (state `Open`, events delivered) after `disconnect`.
#[test]
fn disconnect_from_an_about_to_send_slot_during_a_reconnect_stays_disconnected() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::BytesThenClose(stream("data: first\n\nretry: 10\n\n"))
        } else {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
            head.extend_from_slice(b"data: second\n\n");
            Reply::Pieces(vec![head], Duration::from_secs(3))
        }
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    let count = Rc::new(std::cell::Cell::new(0));
    let c = count.clone();
    http.about_to_send_request
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() == 2 {
                weak.upgrade().unwrap().disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || count.get() >= 2));
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(*rec.events.borrow(), ["message:first:"]);
    assert_eq!(http.pending_requests(), 0);
}

/// A `state_changed` slot that disconnects when the stream opens: `connected` is not emitted
/// after that (it used to come after `disconnected`).
#[test]
fn disconnect_from_the_open_state_slot_is_not_followed_by_connected() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(stream("data: 1\n\n")));
    let sse = SseClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let weak = Rc::downgrade(&sse);
    let l = log.clone();
    sse.state_changed
        .connect(move |s| {
            l.borrow_mut().push(format!("{s:?}"));
            if *s == ReadyState::Open {
                weak.upgrade().unwrap().disconnect();
            }
        })
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    let l = log.clone();
    sse.message_received
        .connect(move |ev| l.borrow_mut().push(ev.data().to_string()))
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(100), || false);
    // ("Closed" is not seen: the slot is busy when its own disconnect() announces it. No
    // `disconnected`: it pairs with a `connected`, which never came.)
    assert_eq!(*log.borrow(), ["Connecting", "Open"]);
    assert_eq!(sse.http_client().pending_requests(), 0);
}

/// `cancel_all` on the shared HTTP client (here from a message slot) cancels the stream's
/// request too: the SSE client closes and says so. It used to stay `Open` for good, with no
/// request, no reconnect and no `disconnected`.
#[test]
fn cancel_all_on_the_shared_http_client_closes_the_event_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
        head.extend_from_slice(b"data: 1\n\n");
        Reply::Pieces(vec![head, b"data: 2\n\n".to_vec()], Duration::from_secs(3))
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    let disconnected = Rc::new(std::cell::Cell::new(0));
    let d = disconnected.clone();
    sse.disconnected
        .connect(move |_| d.set(d.get() + 1))
        .release();
    let h = http.clone();
    sse.message_received
        .connect(move |_| h.cancel_all())
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || disconnected
        .get()
        > 0));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*rec.events.borrow(), ["message:1:"]);
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(disconnected.get(), 1);
    assert_eq!(http.pending_requests(), 0);
    assert_eq!(http.open_connections(), 0);
}

/// `HttpClient::cancel_all` cancels requests: an SseClient waiting to reconnect has none, and
/// reconnects when its wait ends, as its docs say (only `disconnect()` stops it).
#[test]
fn cancel_all_leaves_an_sse_client_waiting_to_reconnect_to_reconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 300\ndata: a\n\n")));
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()
        && sse.ready_state() == ReadyState::Connecting));
    http.cancel_all();
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 2));
    assert!(server.requests().len() >= 2);
    sse.disconnect();
}

/// `connect(A)` while a stream is open: a `state_changed` slot that connects to B when the old
/// stream closes has the last word, on this connection and on every reconnect. `connect(A)` used
/// to carry on over it: the stream stayed on B but reconnects went to A.
#[test]
fn connect_from_a_slot_of_the_close_inside_connect_has_the_last_word() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/first") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        } else {
            Reply::BytesThenClose(stream(&format!("data: {}\nretry: 10\n\n", req.line)))
        }
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/first")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || !rec
        .events
        .borrow()
        .is_empty()));
    let weak = Rc::downgrade(&sse);
    let url_b = server.url("/b");
    let once = Rc::new(std::cell::Cell::new(true));
    sse.state_changed
        .connect(move |s| {
            if *s == ReadyState::Closed && once.replace(false) {
                weak.upgrade()
                    .unwrap()
                    .connect(HttpRequest::get(&url_b).unwrap());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || server
        .requests()
        .len()
        >= 4));
    sse.disconnect();
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines[0], "GET /first HTTP/1.1");
    assert!(
        lines[1..].iter().all(|l| l == "GET /b HTTP/1.1"),
        "{lines:?}"
    );
}

/// Without auto reconnect, a `state_changed` slot that connects again when an ended stream
/// closes the client: the ended stream's `disconnected` comes once, inside that slot's
/// `connect` (before the new stream's first signal), and the new stream carries on.
#[test]
fn connect_from_the_closed_state_slot_of_an_ended_stream_reports_its_end_once_before_the_new_stream()
 {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/b") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: b\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        } else {
            Reply::BytesThenClose(stream("data: a\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let rec = record(&sse);
    let disconnected = Rc::new(std::cell::Cell::new(0));
    let d = disconnected.clone();
    sse.disconnected
        .connect(move |_| d.set(d.get() + 1))
        .release();
    let weak = Rc::downgrade(&sse);
    let url_b = server.url("/b");
    sse.state_changed
        .connect(move |s| {
            let sse = weak.upgrade().unwrap();
            if *s == ReadyState::Closed && sse.last_event_id().is_empty() {
                sse.set_last_event_id("x");
                sse.connect(HttpRequest::get(&url_b).unwrap());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(2), || rec
        .events
        .borrow()
        .len()
        >= 2));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*rec.events.borrow(), ["message:a:", "message:b:x"]);
    assert_eq!(sse.ready_state(), ReadyState::Open);
    assert_eq!(disconnected.get(), 1);
}

/// `Retry-After: 0` on a throttled answer is no licence to ask again at once: with retry on
/// throttle on, a server that keeps answering `503` with it is asked with the failure backoff.
/// It was asked again immediately, over 10,000 times in half a second.
#[test]
fn retry_after_zero_backs_off_like_any_failed_attempt() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    run_until(&mut ev, Duration::from_millis(600), || false);
    assert_eq!(sse.ready_state(), ReadyState::Connecting, "it retries");
    sse.disconnect();
    let asked = server.requests().len();
    assert!(
        asked <= 10,
        "{asked} requests in 600 ms (backoff from 100 ms would make 2 or 3)"
    );
    assert!(matches!(
        rec.errors.borrow()[0],
        SseError::Throttled {
            status: 503,
            retry_after: Some(Duration::ZERO),
            ..
        }
    ));
}

/// The message of a throttled answer says what the server asked, not what the client does next:
/// with auto reconnect off the client closes, and it said "retrying in 5s".
#[test]
fn a_throttled_answer_message_promises_no_retry() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        )
    });
    let (_sse, rec, _log) = run_until_closed_without_auto_reconnect(&mut ev, &server, |sse| {
        sse.set_retry_on_throttle(true)
    });
    let messages: Vec<String> = rec.errors.borrow().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        ["server throttled us (status 429, retry-after 5s)"]
    );
}

/// A `Last-Event-ID` header in the request given to `connect` is the ID to resume from: sent
/// (KDNetwork sends a caller's header as it is), carried by the events until the stream sends
/// its own, and sent again on reconnects. The client dropped it and asked from the start.
#[test]
fn a_last_event_id_header_in_the_request_is_the_id_to_resume_from() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 10\ndata: resumed\n\n")),
        _ => Reply::Bytes(stream("id: 43\ndata: next\n\n")),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(
        HttpRequest::get(&server.url("/"))
            .unwrap()
            .with_header("Last-Event-ID", "42"),
    );
    assert!(run_until(&mut ev, Duration::from_secs(5), || rec
        .events
        .borrow()
        .len()
        >= 2));
    let sent: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_string))
        .collect();
    assert_eq!(sent, [Some("42".to_string()), Some("42".to_string())]);
    assert_eq!(
        *rec.events.borrow(),
        ["message:resumed:42", "message:next:43"]
    );
    assert_eq!(sse.last_event_id(), "43");
}

/// `disconnect()` from the `state_changed(Connecting)` slot of a broken open stream is the end:
/// no `error` follows `disconnected` (like `EventSource.close()`, after which no event fires).
/// The stream's error came after the disconnect, in the `Closed` state, as a non-fatal error.
#[test]
fn disconnect_from_the_connecting_slot_of_a_broken_stream_is_followed_by_nothing() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Pieces(
            vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n".to_vec()],
            Duration::from_secs(5),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200)));
    let log = lifecycle(&sse);
    let weak = Rc::downgrade(&sse);
    let opened = Rc::new(std::cell::Cell::new(false));
    let o = opened.clone();
    sse.connected.connect(move |_| o.set(true)).release();
    sse.state_changed
        .connect(move |state| {
            // Only the reconnect's `Connecting` (the stream opened before it).
            if *state == ReadyState::Connecting && opened.get() {
                weak.upgrade().unwrap().disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "connected",
            "state Connecting",
            "state Closed",
            "disconnected"
        ]
    );
    assert_eq!(server.requests().len(), 1);
}

/// `set_last_event_id` while a request is in flight, then `disconnect()` and `connect()`: the
/// user's ID is sent, and from then on the stream's IDs count as any stream's. The pending
/// user ID outlived the disconnect: when the new stream sent the ID the old one had at the
/// call, the client took it for the old stream's and kept reporting (and sending) the user's.
#[test]
fn an_id_set_before_a_disconnect_does_not_override_the_next_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: A\ndata: a\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        }
        1 => Reply::BytesThenClose(stream("retry: 10\nid: A\ndata: b\n\n")),
        _ => Reply::Stall(Duration::from_secs(3)),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || !rec
        .events
        .borrow()
        .is_empty()));
    sse.set_last_event_id("U");
    sse.disconnect();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        >= 3));
    sse.disconnect();
    let sent: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_string))
        .collect();
    assert_eq!(sent, [None, Some("U".to_string()), Some("A".to_string())]);
    assert_eq!(*rec.events.borrow(), ["message:a:A", "message:b:A"]);
    assert_eq!(sse.last_event_id(), "A");
}

/// `connect()` while a stream is open ends that stream as `disconnect()` would (KDNetwork's
/// `connect` disconnects first): `disconnected` pairs the old stream's `connected` before the new
/// stream opens. The open stream was dropped silently: `connected` came twice in a row.
#[test]
fn connect_while_open_reports_the_end_of_the_open_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: a\n\n";
        Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
    });
    let sse = SseClient::new().unwrap();
    let log = lifecycle(&sse);
    let connected =
        |log: &Rc<RefCell<Vec<String>>>| log.borrow().iter().filter(|l| *l == "connected").count();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || connected(
        &log
    ) == 1));
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || connected(
        &log
    ) == 2));
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "connected",
            "state Closed",
            "disconnected",
            "state Connecting",
            "state Open",
            "connected"
        ]
    );
    sse.disconnect();
    assert_eq!(sse.http_client().pending_requests(), 0);
}

/// As documented: a reconnect after a redirect starts from the request's own URL, and the
/// redirect carries `Last-Event-ID` along.
#[test]
fn a_reconnect_after_a_redirect_starts_from_the_original_url_with_the_id() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/old") {
            Reply::Bytes(
                b"HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::BytesThenClose(stream("retry: 10\nid: 5\ndata: moved\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/old")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || rec
        .events
        .borrow()
        .len()
        >= 2));
    sse.disconnect();
    let seen: Vec<String> = server
        .requests()
        .iter()
        .take(4)
        .map(|r| format!("{} {:?}", r.line, r.header("last-event-id")))
        .collect();
    assert_eq!(
        seen,
        [
            "GET /old HTTP/1.1 None",
            "GET /new HTTP/1.1 None",
            "GET /old HTTP/1.1 Some(\"5\")",
            "GET /new HTTP/1.1 Some(\"5\")"
        ]
    );
    assert!(rec.errors.borrow().is_empty());
}

/// The WHATWG last-event-ID rules end to end, as the reconnects' `Last-Event-ID` shows them: an
/// `id` in a block without data still counts (from the reconnect on, as documented), an `id`
/// holding NUL is ignored, an empty `id` resets the ID and the header is no longer sent, and a
/// final event without its blank line is not delivered (nor is its ID taken).
#[test]
fn last_event_id_rules_across_reconnects() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::BytesThenClose(stream("retry: 10\nid: 1\ndata: a\n\nid: 2\n\n")),
        1 => Reply::BytesThenClose(stream("id: x\0y\ndata: b\n\n")),
        2 => Reply::BytesThenClose(stream("id\ndata: c\n\n")),
        3 => Reply::BytesThenClose(stream("id: 9\ndata: d\n\nid: 10\ndata: cut")),
        _ => Reply::Stall(Duration::from_secs(3)),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        >= 5));
    sse.disconnect();
    let sent: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("last-event-id").map(str::to_string))
        .collect();
    let some = |id: &str| Some(id.to_string());
    assert_eq!(sent, [None, some("2"), some("2"), None, some("9")]);
    assert_eq!(
        *rec.events.borrow(),
        ["message:a:1", "message:b:2", "message:c:", "message:d:9"]
    );
    assert!(rec.errors.borrow().is_empty());
}

/// Auto reconnect turned off while the client waits to reconnect (from the `disconnected` slot
/// of the ended stream, or later from outside) cancels that reconnect and closes the client.
/// The reconnect went ahead anyway, with the request sent again.
#[test]
fn turning_auto_reconnect_off_while_waiting_to_reconnect_closes_the_client() {
    for from_slot in [true, false] {
        let mut ev = EventLoop::new().unwrap();
        let server =
            ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 400\ndata: a\n\n")));
        let sse = SseClient::new().unwrap();
        let log = lifecycle(&sse);
        if from_slot {
            let weak = Rc::downgrade(&sse);
            sse.disconnected
                .connect(move |_| weak.upgrade().unwrap().set_auto_reconnect(false))
                .release();
        }
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(5), || log
            .borrow()
            .iter()
            .any(|l| l == "disconnected")));
        if !from_slot {
            sse.set_auto_reconnect(false);
        }
        run_until(&mut ev, Duration::from_millis(900), || false);
        assert_eq!(server.requests().len(), 1, "from slot: {from_slot}");
        assert_eq!(
            sse.ready_state(),
            ReadyState::Closed,
            "from slot: {from_slot}"
        );
        assert_eq!(
            *log.borrow(),
            [
                "state Connecting",
                "state Open",
                "connected",
                "state Connecting",
                "disconnected",
                "state Closed",
            ],
            "from slot: {from_slot}"
        );
    }
}

/// `set_flush_unterminated_event(true)` while a stream is open applies to that stream's end, as
/// it does before `connect`. The setting reached only the next connection's parser, so the
/// open stream's unterminated final event was dropped.
#[test]
fn flush_unterminated_set_while_open_applies_to_the_open_stream() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        Reply::Pieces(
            vec![
                format!("{head}d\r\ndata: first\n\n\r\n").into_bytes(),
                b"a\r\ndata: tail\r\n0\r\n\r\n".to_vec(),
            ],
            Duration::from_millis(200),
        )
    });
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |_| weak.upgrade().unwrap().set_flush_unterminated_event(true))
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || sse
        .ready_state()
        == ReadyState::Closed));
    assert_eq!(*rec.events.borrow(), ["message:first:", "message:tail:"]);
}

/// `set_last_event_id` called twice while a request is in flight: the second ID is sent with
/// the next connection, as the first alone would be. The first call's ID was taken for the
/// stream's, so the stream's next event (still carrying its old ID) looked like a new stream ID
/// and replaced the user's.
#[test]
fn set_last_event_id_twice_during_a_request_keeps_the_second() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            let a = "retry: 10\nid: A\ndata: a\n\n";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n",
                a.len()
            );
            Reply::Pieces(
                vec![head.into_bytes(), b"9\r\ndata: b\n\n\r\n0\r\n\r\n".to_vec()],
                Duration::from_millis(200),
            )
        } else {
            Reply::Stall(Duration::from_secs(3))
        }
    });
    let sse = SseClient::new().unwrap();
    // (The server keeps the stream open: the read timeout ends it.)
    sse.set_read_timeout(Some(Duration::from_millis(600)));
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |event| {
            if event.data() == "a" {
                let sse = weak.upgrade().unwrap();
                sse.set_last_event_id("U1");
                sse.set_last_event_id("U2");
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || server
        .requests()
        .len()
        >= 2));
    sse.disconnect();
    assert_eq!(*rec.events.borrow(), ["message:a:A", "message:b:A"]);
    assert_eq!(server.requests()[1].header("last-event-id"), Some("U2"));
    assert_eq!(sse.last_event_id(), "U2");
}

/// As documented: open streams count against the per-host connection cap of their shared
/// `HttpClient`; a stream beyond it waits in `Connecting` and opens when another ends.
#[test]
fn streams_beyond_the_per_host_cap_wait_until_one_ends() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: a\n\n";
        Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(5))
    });
    let http = HttpClient::new().unwrap();
    let cap = http.session().max_connections_per_host();
    let clients: Vec<_> = (0..=cap).map(|_| http.create_sse_client()).collect();
    for client in &clients {
        client.connect(HttpRequest::get(&server.url("/")).unwrap());
    }
    let open = || clients.iter().filter(|c| c.is_connected()).count();
    assert!(run_until(&mut ev, Duration::from_secs(5), || open() == cap));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(open(), cap);
    assert_eq!(clients[cap].ready_state(), ReadyState::Connecting);
    clients[0].disconnect();
    assert!(run_until(&mut ev, Duration::from_secs(5), || clients[cap]
        .is_connected()));
    for client in &clients {
        client.disconnect();
    }
}

/// Which answers open the stream (status 200 and a `Content-Type` whose essence is
/// `text/event-stream`: case, parameters and whitespace around them ignored, as WPT's
/// `format-mime-*` tests ask) and which fail it for good (any other type or status, other 2xx
/// included).
#[test]
fn only_200_with_the_event_stream_essence_opens_the_stream() {
    let cases = [
        ("200 OK", "text/event-stream", true),
        ("200 OK", "TEXT/Event-Stream", true),
        ("200 OK", "text/event-stream;", true),
        ("200 OK", "text/event-stream ; charset=windows-1252", true),
        ("200 OK", "text/event-stream;charset=\"utf-8\"", true),
        ("200 OK", "text/x-bogus", false),
        ("200 OK", "x bogus", false),
        ("200 OK", "text/event-streams", false),
        ("201 Created", "text/event-stream", false),
        ("205 Reset Content", "text/event-stream", false),
        ("206 Partial Content", "text/event-stream", false),
    ];
    for (status, content_type, opens) in cases {
        let mut ev = EventLoop::new().unwrap();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: 9\r\n\r\ndata: x\n\n"
        );
        let server = ScriptServer::start(move |_, _| Reply::Bytes(response.clone().into_bytes()));
        let sse = SseClient::new().unwrap();
        let rec = record(&sse);
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        assert!(
            run_until(&mut ev, Duration::from_secs(5), || sse.ready_state()
                == ReadyState::Closed
                || !rec.events.borrow().is_empty()),
            "{status} {content_type:?}"
        );
        let case = format!("{status} {content_type:?}");
        if opens {
            assert_eq!(*rec.events.borrow(), ["message:x:"], "{case}");
            assert!(rec.errors.borrow().is_empty(), "{case}");
        } else {
            assert!(rec.events.borrow().is_empty(), "{case}");
            let errors = rec.errors.borrow();
            let expected = if status.starts_with("200") {
                matches!(errors[..], [SseError::BadContentType { .. }])
            } else {
                matches!(errors[..], [SseError::BadStatus { .. }])
            };
            assert!(expected, "{case}: {errors:?}");
            assert_eq!(sse.ready_state(), ReadyState::Closed, "{case}");
        }
        sse.disconnect();
    }
}

/// Dropping the client's last handle from one of its own slots, or while it connects, stops it:
/// no panic, its request is abandoned, and nothing reconnects afterwards.
#[test]
fn dropping_the_client_from_its_own_slots_or_while_connecting_stops_it() {
    for slot in [
        "connecting",
        "connected",
        "message",
        "disconnected",
        "error",
        "state",
    ] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(|_, n| match n {
            0 => Reply::BytesThenClose(stream("retry: 10\ndata: a\n\ndata: b\n\n")),
            _ => Reply::Close,
        });
        let http = HttpClient::new().unwrap();
        let sse = http.create_sse_client();
        let holder: Rc<RefCell<Option<Rc<SseClient>>>> = Rc::new(RefCell::new(Some(sse.clone())));
        let dropped = Rc::new(std::cell::Cell::new(false));
        let (h, d) = (holder.clone(), dropped.clone());
        let drop_it = move || {
            h.borrow_mut().take();
            d.set(true);
        };
        match slot {
            "connected" => sse.connected.connect(move |_| drop_it()).release(),
            "message" => sse.message_received.connect(move |_| drop_it()).release(),
            "disconnected" => sse.disconnected.connect(move |_| drop_it()).release(),
            "error" => sse.error.connect(move |_| drop_it()).release(),
            // The reconnect after the first stream's clean end.
            "state" => {
                let connecting = std::cell::Cell::new(0);
                sse.state_changed
                    .connect(move |state| {
                        if *state == ReadyState::Connecting {
                            connecting.set(connecting.get() + 1);
                            if connecting.get() == 2 {
                                drop_it();
                            }
                        }
                    })
                    .release()
            }
            _ => {}
        }
        let events = record(&sse).events;
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        drop(sse);
        if slot == "connecting" {
            holder.borrow_mut().take();
            dropped.set(true);
        }
        assert!(
            run_until(&mut ev, Duration::from_secs(5), || dropped.get()),
            "{slot}"
        );
        run_until(&mut ev, Duration::from_millis(200), || false);
        assert!(holder.borrow().is_none(), "{slot}");
        assert_eq!(http.pending_requests(), 0, "{slot}");
        let asked = server.requests().len();
        run_until(&mut ev, Duration::from_millis(200), || false);
        assert_eq!(
            server.requests().len(),
            asked,
            "{slot}: reconnected after the drop"
        );
        if slot == "message" {
            assert_eq!(*events.borrow(), ["message:a:"], "no event after the drop");
        }
    }
}

/// The MIME type is extracted as WHATWG Fetch does (what a browser's `EventSource` checks): every
/// `Content-Type` field, split on commas outside quoted strings, and the last value that parses as
/// `type/subtype` (and is not `*/*`) counts. `text/plain, text/event-stream` was refused.
#[test]
fn the_content_type_is_the_last_valid_mime_type_of_all_fields() {
    let cases = [
        ("Content-Type: text/plain, text/event-stream", true),
        ("Content-Type: text/event-stream, */*", true),
        ("Content-Type: text/event-stream, bogus", true),
        (
            "Content-Type: text/html\r\nContent-Type: text/event-stream",
            true,
        ),
        ("Content-Type: text/event-stream;x=\"a,b\"", true),
        ("Content-Type: text/event-stream, text/plain", false),
        (
            "Content-Type: text/event-stream\r\nContent-Type: text/html",
            false,
        ),
        (
            "Content-Type: text/plain; x=\"a, text/event-stream\"",
            false,
        ),
        (
            "Content-Type: text/plain; x=\"a\\\", text/event-stream\"",
            false,
        ),
        ("Content-Type: */*", false),
    ];
    for (fields, opens) in cases {
        let mut ev = EventLoop::new().unwrap();
        let response =
            format!("HTTP/1.1 200 OK\r\n{fields}\r\nContent-Length: 9\r\n\r\ndata: x\n\n");
        let server = ScriptServer::start(move |_, _| Reply::Bytes(response.clone().into_bytes()));
        let sse = SseClient::new().unwrap();
        let rec = record(&sse);
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        assert!(
            run_until(&mut ev, Duration::from_secs(5), || sse.ready_state()
                == ReadyState::Closed
                || !rec.events.borrow().is_empty()),
            "{fields:?}"
        );
        if opens {
            assert_eq!(*rec.events.borrow(), ["message:x:"], "{fields:?}");
        } else {
            assert!(rec.events.borrow().is_empty(), "{fields:?}");
            let errors = rec.errors.borrow();
            assert!(
                matches!(errors[..], [SseError::BadContentType { .. }]),
                "{fields:?}: {errors:?}"
            );
        }
        sse.disconnect();
    }
}

/// A stream head without a length: the body lasts until the server closes.
fn open_ended_head(first: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n{first}").into_bytes()
}

/// WHATWG "dispatch the event" step 1 sets the last event ID string at every blank line, before
/// the step that drops a block without data: an `id` in such a block counts as soon as the read
/// carrying the blank line is delivered (an empty `id` resets it, one holding NUL is ignored,
/// an unterminated block counts for nothing), for `last_event_id()` and for a `connect()` after
/// `disconnect()`.
#[test]
fn an_id_in_a_block_without_data_counts_at_its_blank_line() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::Pieces(
            vec![
                open_ended_head("id: 1\ndata: a\n\n"),
                b"id: 2\n\n".to_vec(),
                b"id\n\n".to_vec(),
                b"id: 4\nid: x\0y\n\n".to_vec(),
                b"id: 5\ndata: cut".to_vec(),
            ],
            Duration::from_millis(300),
        ),
        _ => Reply::Stall(Duration::from_secs(5)),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let request = HttpRequest::get(&server.url("/")).unwrap();
    sse.connect(request.clone());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        == 1));
    assert_eq!(sse.last_event_id(), "1");
    for expected in ["2", "", "4"] {
        assert!(
            run_until(&mut ev, Duration::from_secs(5), || sse.last_event_id()
                == expected),
            "the id-only block setting {expected:?} did not count (the client has {:?})",
            sse.last_event_id()
        );
    }
    // The unterminated block's `id: 5` was never dispatched.
    run_until(&mut ev, Duration::from_millis(600), || false);
    assert_eq!(sse.last_event_id(), "4");
    sse.disconnect();
    assert_eq!(sse.last_event_id(), "4");
    sse.connect(request);
    assert!(run_until(&mut ev, Duration::from_secs(10), || server
        .requests()
        .len()
        >= 2));
    assert_eq!(server.requests()[1].header("last-event-id"), Some("4"));
    assert_eq!(*rec.events.borrow(), ["message:a:1"]);
    sse.disconnect();
}

/// An id-only block in the same read as events counts after them, never ahead: a slot sees its
/// event's ID, and a slot that disconnects leaves the ID of the last event delivered (the rest
/// of the read, and the IDs in it, never count).
#[test]
fn an_id_only_block_counts_in_order_and_not_after_a_disconnect_from_a_slot() {
    for disconnect_in_slot in [false, true] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(|_, n| match n {
            0 => Reply::Bytes(open_ended_head(
                "id: 1\ndata: a\n\nid: 7\n\ndata: b\n\nid: 8\n\n",
            )),
            _ => Reply::Stall(Duration::from_secs(5)),
        });
        let sse = SseClient::new().unwrap();
        let rec = record(&sse);
        let in_slot = Rc::new(RefCell::new(Vec::new()));
        let (seen, weak) = (in_slot.clone(), Rc::downgrade(&sse));
        sse.message_received
            .connect(move |_| {
                let sse = weak.upgrade().unwrap();
                seen.borrow_mut().push(sse.last_event_id());
                if disconnect_in_slot {
                    sse.disconnect();
                }
            })
            .release();
        let request = HttpRequest::get(&server.url("/")).unwrap();
        sse.connect(request.clone());
        let expected_events: &[&str] = if disconnect_in_slot {
            &["message:a:1"]
        } else {
            &["message:a:1", "message:b:7"]
        };
        assert!(run_until(&mut ev, Duration::from_secs(10), || rec
            .events
            .borrow()
            .len()
            == expected_events.len()));
        run_until(&mut ev, Duration::from_millis(200), || false);
        assert_eq!(*rec.events.borrow(), expected_events);
        let (in_slots, after): (&[&str], &str) = if disconnect_in_slot {
            (&["1"], "1")
        } else {
            (&["1", "7"], "8")
        };
        assert_eq!(*in_slot.borrow(), in_slots, "the ID seen by the slots");
        assert_eq!(
            sse.last_event_id(),
            after,
            "disconnect in slot: {disconnect_in_slot}"
        );
        sse.disconnect();
        sse.connect(request);
        assert!(run_until(&mut ev, Duration::from_secs(10), || server
            .requests()
            .len()
            >= 2));
        assert_eq!(server.requests()[1].header("last-event-id"), Some(after));
        sse.disconnect();
    }
}

/// A `retry:` takes effect in stream order relative to the events around it: a slot sees the
/// reconnection time of the `retry:` fields before its event only, and its own
/// `set_reconnection_time` stands until a `retry:` after its event overrides it.
#[test]
fn retry_takes_effect_in_stream_order_relative_to_events() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::Bytes(open_ended_head(
            "data: a\n\nretry: 40000\ndata: b\n\nretry: 45000\n\ndata: c\n\n",
        )),
        _ => Reply::Stall(Duration::from_secs(5)),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let in_slot = Rc::new(RefCell::new(Vec::new()));
    let (seen, weak) = (in_slot.clone(), Rc::downgrade(&sse));
    sse.message_received
        .connect(move |event| {
            let sse = weak.upgrade().unwrap();
            seen.borrow_mut()
                .push(sse.reconnection_time().as_millis() as u64);
            let mine = match event.data() {
                "a" => 100,
                "b" => 200,
                _ => 300,
            };
            sse.set_reconnection_time(Duration::from_millis(mine));
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        == 3));
    run_until(&mut ev, Duration::from_millis(100), || false);
    // a: the default 3 s (the retry after it not yet); b: its own block's retry (after the
    // slot of a set 100 ms); c: the retry after b (overriding the slot of b's 200 ms).
    assert_eq!(*in_slot.borrow(), [3000, 40000, 45000]);
    assert_eq!(
        sse.reconnection_time(),
        Duration::from_millis(300),
        "the slot of c set it after every retry"
    );
    sse.disconnect();
}

/// A `retry:` after the event whose slot disconnects is never processed, like the rest of that
/// read: the reconnection time stays what it was (it used to be applied before the read's first
/// event).
#[test]
fn a_retry_after_the_event_whose_slot_disconnects_does_not_count() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(open_ended_head("data: a\n\nretry: 40000\n\ndata: b\n\n"))
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    sse.message_received
        .connect(move |_| weak.upgrade().unwrap().disconnect())
        .release();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*rec.events.borrow(), ["message:a:"]);
    assert_eq!(sse.reconnection_time(), Duration::from_secs(3));
}

/// `HttpClient::cancel_all` from a message slot, while the stream's whole body (framed by its
/// `Content-Length`) came in the same read: the stream's end, not yet handed to the client, is
/// cancelled too — the client closes instead of taking it as a clean end and reconnecting.
#[test]
fn cancel_all_from_a_slot_of_a_stream_whose_end_arrived_in_the_same_read_closes_it() {
    let mut ev = EventLoop::new().unwrap();
    let body = "retry: 10\ndata: a\n\ndata: b\n\n";
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let server = ScriptServer::start(move |_, _| Reply::Bytes(response.clone().into_bytes()));
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    let weak_http = Rc::downgrade(&http);
    sse.message_received
        .connect(move |_| {
            if let Some(http) = weak_http.upgrade() {
                http.cancel_all();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    // Long enough for several reconnects at `retry: 10`.
    run_until(&mut ev, Duration::from_millis(500), || false);
    assert_eq!(
        server.requests().len(),
        1,
        "the cancelled stream reconnected"
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    // As after `disconnect()`, the rest of that read's batch, `b`, does not reach the slots.
    assert_eq!(*rec.events.borrow(), ["message:a:"]);
    assert!(rec.errors.borrow().is_empty(), "{:?}", rec.errors.borrow());
}

#[test]
fn cancelling_the_stream_request_from_a_slot_delivers_no_later_event_of_that_read() {
    let mut ev = EventLoop::new().unwrap();
    // A stream that stays open: the three events arrive in one read, the end never.
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nretry: 7\nid: 3\n\n"
                .to_vec(),
        )
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let rec = record(&sse);
    let weak_http = Rc::downgrade(&http);
    let ids = Rc::new(RefCell::new(Vec::new()));
    let seen_ids = ids.clone();
    // The stream's request ID, as the HttpClient's signal gives it.
    http.about_to_send_request
        .connect(move |(id, _)| seen_ids.borrow_mut().push(*id))
        .release();
    let ids2 = ids.clone();
    sse.message_received
        .connect(move |_| {
            if let (Some(http), Some(id)) = (weak_http.upgrade(), ids2.borrow().last()) {
                assert!(http.cancel(*id), "the stream's request was not cancellable");
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(200), || false);
    assert_eq!(*rec.events.borrow(), ["message:a:1"]);
    assert_eq!(
        server.requests().len(),
        1,
        "the cancelled stream reconnected"
    );
    // What followed the event in that read counts for nothing, as after `disconnect()`.
    assert_eq!(sse.last_event_id(), "1");
    assert_eq!(sse.reconnection_time(), Duration::from_secs(3));
    assert!(rec.errors.borrow().is_empty(), "{:?}", rec.errors.borrow());
}

#[test]
fn a_server_that_opens_streams_and_cuts_them_before_any_event_is_not_hammered_with_retry_0() {
    let mut ev = EventLoop::new().unwrap();
    // The first stream asks for `retry: 0` and delivers an event; every later one opens (200,
    // `text/event-stream`) and ends at once, with nothing in it.
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::BytesThenClose(stream("retry: 0\ndata: hello\n\n"))
        } else {
            Reply::BytesThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec(),
            )
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let opened = Rc::new(RefCell::new(0usize));
    let o = opened.clone();
    sse.connected
        .connect(move |_| *o.borrow_mut() += 1)
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    run_until(&mut ev, Duration::from_secs(1), || false);
    let requests = server.requests().len();
    sse.disconnect();
    // Each empty stream counts as a failed attempt: 0 ms, then about 200, 400, 800 ms... A
    // backoff reset by every open reconnected hundreds of times.
    assert!(
        (2..=8).contains(&requests),
        "{requests} requests in about 1 s"
    );
    assert!(*opened.borrow() >= 2, "the empty streams did open");
    assert_eq!(*rec.events.borrow(), ["message:hello:"]);
}

#[test]
fn a_stream_that_delivers_an_event_again_resets_the_backoff_of_empty_streams() {
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a = arrivals.clone();
    // Streams 1 to 3 open and end empty (failed attempts); stream 4 delivers an event again.
    let server = ScriptServer::start(move |_, n| {
        a.lock().unwrap().push(Instant::now());
        match n {
            0 => Reply::BytesThenClose(stream("retry: 0\ndata: first\n\n")),
            4 => Reply::BytesThenClose(stream("data: back\n\n")),
            _ => Reply::BytesThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec(),
            ),
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(20), || arrivals
        .lock()
        .unwrap()
        .len()
        >= 6));
    sse.disconnect();
    let at = arrivals.lock().unwrap().clone();
    // Backed off between the empty streams...
    assert!(
        at[4] - at[1] >= Duration::from_millis(500),
        "{:?}",
        at[4] - at[1]
    );
    // ...and not after the stream that delivered (`retry: 0`; it was 1.6 s before the reset).
    assert!(
        at[5] - at[4] < Duration::from_millis(800),
        "{:?}",
        at[5] - at[4]
    );
    assert_eq!(
        rec.events.borrow()[..2],
        ["message:first:", "message:back:"]
    );
}

/// A stream replaced by `connect` after it delivered an event ends without an end of its own;
/// the new stream that opens and ends empty is a failed attempt all the same (its backoff is
/// not reset by the old stream's events).
#[test]
fn an_empty_stream_after_a_replaced_one_that_delivered_backs_off() {
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a = arrivals.clone();
    let server = ScriptServer::start(move |_, n| {
        a.lock().unwrap().push(Instant::now());
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        match n {
            // Open until the client leaves it.
            0 => Reply::Bytes(format!("{head}data: first\n\n").into_bytes()),
            // Opens and ends at once, empty: a failed attempt.
            1 => Reply::BytesThenClose(head.as_bytes().to_vec()),
            _ => Reply::Bytes(head.as_bytes().to_vec()),
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(600));
    let rec = record(&sse);
    let request = HttpRequest::get(&server.url("/events")).unwrap();
    sse.connect(request.clone());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    sse.connect(request);
    assert!(run_until(&mut ev, Duration::from_secs(10), || arrivals
        .lock()
        .unwrap()
        .len()
        >= 3));
    sse.disconnect();
    let at = arrivals.lock().unwrap().clone();
    // 600 ms doubled for the failure (750 ms at most without it).
    assert!(
        at[2] - at[1] >= Duration::from_millis(1000),
        "{:?}",
        at[2] - at[1]
    );
}

/// Events of a stream replaced from a slot that waited in a nested loop still reach the client
/// after that slot returns (they were read meanwhile and wait for it); they are not delivered,
/// and they do not make the new stream's attempt a success: that one opens and ends empty, and
/// backs off.
#[test]
fn events_of_a_replaced_stream_do_not_reset_the_backoff_of_the_next() {
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a = arrivals.clone();
    let server = ScriptServer::start(move |_, n| {
        a.lock().unwrap().push(Instant::now());
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n";
        match n {
            0 => Reply::Pieces(
                vec![
                    format!("{head}\r\ndata: one\n\n").into_bytes(),
                    b"data: two\n\n".to_vec(),
                ],
                Duration::from_millis(100),
            ),
            // Opens, and ends empty 300 ms later: a failed attempt.
            1 => Reply::Pieces(
                vec![
                    format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes(),
                    b"0\r\n\r\n".to_vec(),
                ],
                Duration::from_millis(300),
            ),
            _ => Reply::Bytes(format!("{head}\r\n").into_bytes()),
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(600));
    let rec = record(&sse);
    let request = HttpRequest::get(&server.url("/events")).unwrap();
    let (weak, again) = (Rc::downgrade(&sse), request.clone());
    sse.message_received
        .connect(move |event| {
            if event.data() != "one" {
                return;
            }
            let sse = weak.upgrade().unwrap();
            // "two" arrives meanwhile and waits for this slot.
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
            }
            sse.connect(again.clone());
            let until = Instant::now() + Duration::from_secs(5);
            while !sse.is_connected() && Instant::now() < until {
                kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
            }
        })
        .release();
    sse.connect(request);
    assert!(run_until(&mut ev, Duration::from_secs(10), || arrivals
        .lock()
        .unwrap()
        .len()
        >= 3));
    sse.disconnect();
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(*rec.events.borrow(), ["message:one:"]);
    // The new stream lasted 300 ms, then waited 600 ms doubled for the failure (750 ms at most
    // without it).
    assert!(
        at[2] - at[1] >= Duration::from_millis(1300),
        "{:?}",
        at[2] - at[1]
    );
}

#[test]
fn cancel_all_from_the_slot_of_a_flushed_final_event_closes_the_client() {
    let mut ev = EventLoop::new().unwrap();
    // The final event lacks its blank line; the client is asked to deliver it anyway.
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 10\ndata: a\n\ndata: b")));
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    sse.set_flush_unterminated_event(true);
    let rec = record(&sse);
    let disconnected = Rc::new(std::cell::Cell::new(0));
    let d = disconnected.clone();
    sse.disconnected
        .connect(move |_| d.set(d.get() + 1))
        .release();
    let weak_http = Rc::downgrade(&http);
    sse.message_received
        .connect(move |event| {
            if event.data() == "b"
                && let Some(http) = weak_http.upgrade()
            {
                http.cancel_all();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 2));
    // Long enough for several reconnects at `retry: 10`.
    run_until(&mut ev, Duration::from_millis(500), || false);
    assert_eq!(
        server.requests().len(),
        1,
        "the stream reconnected after cancel_all"
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(*rec.events.borrow(), ["message:a:", "message:b:"]);
    assert_eq!(disconnected.get(), 1);
    assert!(rec.errors.borrow().is_empty(), "{:?}", rec.errors.borrow());
}

/// RELIABILITY promise 7: logs never show bodies. A refused stream's error body (which the
/// `error` signal does carry) and an event ID (part of the stream's body) stay out of them.
#[test]
fn logs_show_neither_an_error_body_nor_an_event_id() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/refused") {
            let body = "body-marker-8c1f: token sk-secret";
            return Reply::Bytes(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
        Reply::BytesThenClose(stream("retry: 10\nid: id-marker-8c1f\u{1}\ndata: x\n\n"))
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/refused")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    assert!(
        matches!(&rec.errors.borrow()[0], SseError::BadStatus { status: 401, body } if body.contains("body-marker-8c1f")),
        "{:?}",
        rec.errors.borrow()
    );
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || server
        .requests()
        .len()
        >= 3));
    sse.disconnect();
    let logs = logs.0.lock().unwrap();
    assert!(
        logs.iter().any(|line| line.contains("Last-Event-ID")),
        "the ID's trouble was not logged at all"
    );
    let leaks: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("marker-8c1f"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A server whose stream at `/b` opens with one event and stays open 3 s, and whose other
/// streams deliver one event and break (they announce more than they send: an error).
fn breaking_then_open_server() -> ScriptServer {
    ScriptServer::start(|req, _| {
        if req.line.contains("/b") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: b\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        } else {
            Reply::BytesThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100\r\n\r\ndata: a\n\n"
                    .to_vec(),
            )
        }
    })
}

/// A `state_changed(Connecting)` slot of an open stream's end that connects elsewhere has the
/// last word, as one of `Closed` does: neither the old stream's error nor its `disconnected`
/// follows the new stream's start.
#[test]
fn connect_from_the_connecting_slot_of_an_ended_stream_is_followed_by_nothing_of_it() {
    let mut ev = EventLoop::new().unwrap();
    let server = breaking_then_open_server();
    let sse = SseClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    let l = log.clone();
    sse.error
        .connect(move |_| l.borrow_mut().push("error".into()))
        .release();
    let l = log.clone();
    sse.message_received
        .connect(move |e| l.borrow_mut().push(format!("event {}", e.data())))
        .release();
    let l = log.clone();
    let weak = Rc::downgrade(&sse);
    let url_b = server.url("/b");
    let once = std::cell::Cell::new(true);
    sse.state_changed
        .connect(move |s| {
            l.borrow_mut().push(format!("{s:?}"));
            let sse = weak.upgrade().unwrap();
            if *s == ReadyState::Connecting && sse.last_event_id().is_empty() {
                // Only the open stream's end: not the first `Connecting`.
                if !l.borrow().iter().any(|e| e == "event a") || !once.replace(false) {
                    return;
                }
                l.borrow_mut().push("connect b".into());
                sse.connect(HttpRequest::get(&url_b).unwrap());
                l.borrow_mut().push("connected b".into());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || log
        .borrow()
        .iter()
        .any(|e| e == "event b")));
    sse.disconnect();
    let log = log.borrow();
    let at = log.iter().position(|e| e == "connected b").unwrap();
    let after: Vec<&String> = log[at..]
        .iter()
        .filter(|e| *e == "error" || *e == "disconnected")
        .collect();
    // (The last `disconnected` is the final `disconnect()`'s.)
    assert_eq!(after, ["disconnected"], "{log:?}");
}

/// As above, from the `error` slot of an open stream that broke: the new stream's start is not
/// followed by the old stream's `disconnected`.
#[test]
fn connect_from_the_error_slot_of_a_broken_open_stream_is_not_followed_by_its_disconnected() {
    let mut ev = EventLoop::new().unwrap();
    let server = breaking_then_open_server();
    let sse = SseClient::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    let l = log.clone();
    sse.message_received
        .connect(move |e| l.borrow_mut().push(format!("event {}", e.data())))
        .release();
    let l = log.clone();
    let weak = Rc::downgrade(&sse);
    let url_b = server.url("/b");
    sse.error
        .connect(move |_| {
            l.borrow_mut().push("error".into());
            weak.upgrade()
                .unwrap()
                .connect(HttpRequest::get(&url_b).unwrap());
            l.borrow_mut().push("connected b".into());
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || log
        .borrow()
        .iter()
        .any(|e| e == "event b")));
    sse.disconnect();
    let log = log.borrow();
    // The broken stream's `disconnected` comes before the new stream's start (inside the
    // `error` slot's `connect`), not after it.
    assert_eq!(
        *log,
        [
            "event a",
            "error",
            "disconnected",
            "connected b",
            "event b",
            "disconnected"
        ],
        "{log:?}"
    );
}

#[test]
fn a_stream_without_events_that_stays_open_5_s_resets_the_backoff() {
    use std::sync::{Arc, Mutex};
    let mut ev = EventLoop::new().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a = arrivals.clone();
    let empty = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
    // Stream 0 delivers (with `retry: 0`); 1 to 4 open and end empty (waits of about 0.2, 0.4,
    // 0.8 and 1.6 s follow); 5 sends only comments for about 5.5 s.
    let server = ScriptServer::start(move |_, n| {
        a.lock().unwrap().push(Instant::now());
        match n {
            0 => Reply::BytesThenClose(stream("retry: 0\ndata: first\n\n")),
            5 => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
                    12 * ": ping\n\n".len()
                );
                let mut pieces = vec![head.into_bytes()];
                pieces.extend((0..12).map(|_| b": ping\n\n".to_vec()));
                Reply::Pieces(pieces, Duration::from_millis(500))
            }
            _ => Reply::BytesThenClose(empty.clone()),
        }
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(30), || arrivals
        .lock()
        .unwrap()
        .len()
        >= 7));
    sse.disconnect();
    let at = arrivals.lock().unwrap().clone();
    assert!(
        at[5] - at[4] >= Duration::from_millis(1200),
        "the empty streams were not backed off: {:?}",
        at[5] - at[4]
    );
    // The comment-only stream lasted about 6 s; had it counted as a failure, 3.2 s more would
    // have followed it.
    let long_stream = at[6] - at[5];
    assert!(
        long_stream < Duration::from_millis(6000 + 1500),
        "{long_stream:?}"
    );
    assert_eq!(*rec.events.borrow(), ["message:first:"]);
}

/// A server that answers with an endless event stream as fast as the socket takes it, counting
/// the bytes the kernel accepted; stops when the client goes away.
fn endless_stream_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let written = std::sync::Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
        support::read_request_head(&mut reader);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let block = "data: ".to_string() + &"x".repeat(4000) + "\n\n";
        let chunk = block.repeat(16);
        while conn.write_all(chunk.as_bytes()).is_ok() {
            w.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    (url, written)
}

/// A `message_received` slot that waits in a nested loop (a modal dialog, `send_and_wait`)
/// while the server keeps streaming: the client stops reading that stream until the slot
/// returns, so TCP flow control holds the server back, instead of queueing everything it sends
/// in memory (it queued ~1.4 GB in 2 s). Every event still arrives, in order, afterwards.
#[test]
fn a_slot_waiting_in_a_nested_loop_holds_its_stream_back_instead_of_queueing_it() {
    use std::sync::atomic::Ordering;
    let mut ev = EventLoop::new().unwrap();
    let (url, written) = endless_stream_server();
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let count = Rc::new(std::cell::Cell::new(0usize));
    let written_after_wait = Rc::new(std::cell::Cell::new(None));
    let (c, w) = (count.clone(), written_after_wait.clone());
    let (c2, written2) = (count.clone(), written.clone());
    sse.message_received
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until {
                    kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
                }
                w.set(Some(written2.load(Ordering::Relaxed)));
            }
        })
        .release();
    let errors: Rc<RefCell<Vec<String>>> = Rc::default();
    let e = errors.clone();
    sse.error
        .connect(move |err| e.borrow_mut().push(err.to_string()))
        .release();
    sse.connect(HttpRequest::get(&url).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(20), || {
        written_after_wait.get().is_some() && c2.get() > 1000
    }));
    let during = written_after_wait.get().unwrap();
    assert!(
        during < 32 * 1024 * 1024,
        "the server wrote {during} bytes while the slot waited: the client kept reading"
    );
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert_eq!(sse.ready_state(), ReadyState::Open);
}

/// While a slot's nested loop holds its stream back, the stream's read timeout does not run:
/// the silence is the client's own. It runs again once the slot returns.
#[test]
fn a_stream_held_back_by_a_waiting_slot_does_not_time_out() {
    let mut ev = EventLoop::new().unwrap();
    let (url, _written) = endless_stream_server();
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    sse.set_read_timeout(Some(Duration::from_millis(200)));
    let count = Rc::new(std::cell::Cell::new(0usize));
    let c = count.clone();
    sse.message_received
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                let until = Instant::now() + Duration::from_millis(800);
                while Instant::now() < until {
                    kdnet::foundation::process_events(Some(Duration::from_millis(10))).unwrap();
                }
            }
        })
        .release();
    let errors: Rc<RefCell<Vec<String>>> = Rc::default();
    let e = errors.clone();
    sse.error
        .connect(move |err| e.borrow_mut().push(err.to_string()))
        .release();
    sse.connect(HttpRequest::get(&url).unwrap());
    run_until(&mut ev, Duration::from_secs(20), || {
        count.get() > 1000 || !errors.borrow().is_empty()
    });
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert!(count.get() > 1000, "{} events", count.get());
    assert_eq!(sse.ready_state(), ReadyState::Open);
}

/// A client whose event loop was dropped (a GUI tearing down, a test making a new loop) can
/// never stream: `connect` stayed `Connecting` for ever, with no error and no `disconnected`.
/// It fails at once, with the lifecycle of any fatal failure, and a loop created later does not
/// revive it (the client belongs to the loop it was made on).
#[test]
fn connect_after_the_loop_was_dropped_fails_at_once_with_loop_gone() {
    let event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let log = lifecycle(&sse);
    drop(event_loop);
    sse.connect(HttpRequest::get("http://127.0.0.1:1/events").unwrap());
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(*log.borrow(), CLOSED_WITH_AN_ERROR);
    {
        let errors = rec.errors.borrow();
        assert!(matches!(errors[..], [SseError::LoopGone]), "{errors:?}");
        assert!(errors[0].is_fatal());
        let shown = errors[0].to_string();
        assert!(shown.contains("event loop has been dropped"), "{shown}");
    }
    // A new loop on the thread does not help the old client.
    let _second = EventLoop::new().unwrap();
    log.borrow_mut().clear();
    sse.connect(HttpRequest::get("http://127.0.0.1:1/events").unwrap());
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(*log.borrow(), CLOSED_WITH_AN_ERROR);
    assert_eq!(rec.errors.borrow().len(), 2);
}

/// A refused stream's error message quotes the start of the body on one line: a proxy's HTML
/// page (line breaks, indentation, a terminal escape sequence) was written raw, up to 1 KiB,
/// so one `eprintln!("{error}")` spilled over many lines and could drive the terminal. White
/// space and control characters collapse into single spaces, the ends are trimmed, and a long
/// body is cut with `…`; the body itself (line breaks included) stays in the error.
#[test]
fn a_refused_stream_message_quotes_the_body_on_one_short_line() {
    let mut ev = EventLoop::new().unwrap();
    let page = format!(
        "\r\n<html>\r\n  <head><title>502 Bad Gateway</title></head>\r\n\t<body>\x1b[2J\x1b[31m{}</body>\r\n</html>\r\n",
        "x".repeat(2000)
    );
    let body = page.clone();
    let server = ScriptServer::start(move |_, _| {
        Reply::Bytes(
            format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    let error = rec.errors.borrow()[0].clone();
    let shown = error.to_string();
    assert!(
        shown.starts_with(
            "server answered with status 502 instead of 200: <html> <head><title>502 Bad Gateway</title></head> <body> [2J [31mxxx"
        ),
        "{shown:?}"
    );
    assert!(!shown.contains(char::is_control), "{shown:?}");
    assert!(shown.ends_with("x…"), "{shown:?}");
    assert!(
        shown.chars().count() < 400,
        "{} chars",
        shown.chars().count()
    );
    // The body itself is kept as received (its first KiB).
    let SseError::BadStatus { body, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(body.as_str(), &page[..1024]);
    assert_eq!(error.body(), Some(&page[..1024]));
}

fn refusal(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A throttled answer keeps the start of its body, as a refused one does: OpenAI says in it why
/// (which limit, for how long), and `Throttled` dropped it. The message quotes it on one line;
/// logs do not show it (promise 7).
#[test]
fn a_throttled_answer_keeps_its_body_for_the_message_but_not_for_the_logs() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| {
        if n == 0 {
            Reply::Bytes(refusal(
                "429 Too Many Requests",
                "",
                "{\n  \"error\": {\n    \"message\": \"Rate limit reached (throttle-marker-5e2a)\",\n    \"type\": \"requests\",\n    \"code\": \"rate_limit_exceeded\"\n  }\n}\n",
            ))
        } else {
            Reply::Bytes(stream("data: finally\n\n"))
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    sse.disconnect();
    let error = rec.errors.borrow()[0].clone();
    assert!(
        matches!(&error, SseError::Throttled { status: 429, body, .. } if body.contains("rate_limit_exceeded")),
        "{error:?}"
    );
    assert!(!error.is_fatal());
    assert_eq!(
        error.to_string(),
        "server throttled us (status 429): { \"error\": { \"message\": \"Rate limit reached (throttle-marker-5e2a)\", \"type\": \"requests\", \"code\": \"rate_limit_exceeded\" } }"
    );
    assert!(error.body().is_some_and(|body| body.contains('\n')));
    let logs = logs.0.lock().unwrap();
    let leaks: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("throttle-marker-5e2a"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// OpenAI answers 429 both for a rate limit and for `insufficient_quota` (out of credit), where
/// no wait helps; a server may also say `x-should-retry: false` (the header OpenAI's and
/// Anthropic's SDKs obey). With retrying on throttle on, such an answer was retried for ever
/// (backing off up to a minute between asks, the user seeing only "throttled"). It fails for
/// good, as any refused status, with the body that says why.
#[test]
fn a_throttled_answer_that_says_waiting_will_not_help_fails_for_good() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|request, _| {
        if request.line.contains("/quota") {
            Reply::Bytes(refusal(
                "429 Too Many Requests",
                "",
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            ))
        } else {
            Reply::Bytes(refusal(
                "503 Service Unavailable",
                "Retry-After: 0\r\nx-should-retry: false\r\n",
                r#"{"error":{"message":"down for maintenance"}}"#,
            ))
        }
    });
    for (path, status, says) in [
        ("/quota", 429, "insufficient_quota"),
        ("/maintenance", 503, "down for maintenance"),
    ] {
        let sse = SseClient::new().unwrap();
        sse.set_retry_on_throttle(true);
        sse.set_reconnection_time(Duration::from_millis(10));
        let rec = record(&sse);
        let log = lifecycle(&sse);
        let asked = server.requests().len();
        sse.connect(HttpRequest::get(&server.url(path)).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(10), || sse
            .ready_state()
            == ReadyState::Closed));
        run_until(&mut ev, Duration::from_millis(300), || false);
        assert_eq!(server.requests().len(), asked + 1, "{path}: asked again");
        assert_eq!(*log.borrow(), CLOSED_WITH_AN_ERROR, "{path}");
        let errors = rec.errors.borrow();
        assert!(
            matches!(&errors[..], [SseError::BadStatus { status: s, body }] if *s == status && body.contains(says)),
            "{path}: {errors:?}"
        );
        assert!(errors[0].to_string().contains(says), "{}", errors[0]);
    }
}

/// `x-should-retry` is compared as the SDKs that obey it do, without regard to case: a
/// `False` from a proxy that rewrote it still means that waiting will not help.
#[test]
fn x_should_retry_false_counts_in_any_case() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(refusal(
            "429 Too Many Requests",
            "Retry-After: 0\r\nX-Should-Retry: False\r\n",
            "",
        ))
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(server.requests().len(), 1, "asked again");
    let errors = rec.errors.borrow();
    assert!(
        matches!(&errors[..], [SseError::BadStatus { status: 429, .. }]),
        "{errors:?}"
    );
}

/// A refused body's quote stops at exactly 300 visible characters (then `…`), and invisible
/// format characters (a BOM, a bidi override that would turn the rest of a terminal line
/// around, zero-width spaces) count as white space.
#[test]
fn a_refused_body_is_quoted_to_300_visible_characters() {
    let message = |body: String| SseError::BadStatus { status: 500, body }.to_string();
    let prefix = "server answered with status 500 instead of 200: ";
    assert_eq!(
        message("c".repeat(300)),
        format!("{prefix}{}", "c".repeat(300))
    );
    assert_eq!(
        message("c".repeat(301)),
        format!("{prefix}{}…", "c".repeat(300))
    );
    assert_eq!(
        message(format!(
            "\u{feff}{}\u{202e}\u{200b}{}\u{2066}",
            "a".repeat(10),
            "b".repeat(400)
        )),
        format!("{prefix}{} {}…", "a".repeat(10), "b".repeat(289))
    );
}

/// A `200` that is not an event stream (a captive portal's sign-in page, an API answering JSON
/// because the request lacked `"stream": true`) said only its type: "response is "text/html",
/// not text/event-stream", with nothing a user could act on. The message quotes the start of
/// the body, on one line, as for a refused status; logs still show no body (promise 7).
#[test]
fn a_response_of_the_wrong_type_quotes_its_body_in_the_message_only() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(ok_response(
            "<html>\n<head><title>Sign in to Hotel WiFi (portal-marker-7d3b)</title></head>\n</html>\n",
            "Content-Type: text/html\r\n",
        ))
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    let error = rec.errors.borrow()[0].clone();
    assert!(
        matches!(&error, SseError::BadContentType { content_type: Some(ct), .. } if ct == "text/html"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "response is \"text/html\", not text/event-stream: <html> <head><title>Sign in to Hotel WiFi (portal-marker-7d3b)</title></head> </html>"
    );
    assert!(error.body().is_some_and(|body| body.contains('\n')));
    let logs = logs.0.lock().unwrap();
    assert!(
        logs.iter()
            .any(|line| line.contains("event stream failed") && line.contains("text/html")),
        "the failure was not logged: {logs:?}"
    );
    let leaks: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("portal-marker-7d3b"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A refused status whose body holds only line breaks and white space (an empty page with a
/// trailing CRLF) ended its message in a dangling ": ": the message stops at the status.
#[test]
fn a_refused_stream_with_a_blank_body_quotes_nothing() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(refusal("500 Internal Server Error", "", "\r\n \t\r\n"))
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    let error = rec.errors.borrow()[0].clone();
    assert_eq!(error.body(), Some("\r\n \t\r\n"));
    assert_eq!(
        error.to_string(),
        "server answered with status 500 instead of 200"
    );
}

/// `Retry-After: 0` showed as "retry-after 0ns" (`Duration`'s debug form), a unit the header
/// never uses: the message gives the seconds the server sent.
#[test]
fn a_throttled_answer_message_gives_retry_after_in_seconds() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(refusal("503 Service Unavailable", "Retry-After: 0\r\n", ""))
    });
    let (_sse, rec, _log) = run_until_closed_without_auto_reconnect(&mut ev, &server, |sse| {
        sse.set_retry_on_throttle(true)
    });
    let messages: Vec<String> = rec.errors.borrow().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        ["server throttled us (status 503, retry-after 0s)"]
    );
}

/// The response that opened a stream reaches `opened` before `connected`, with its status and
/// headers (an API's `x-request-id`, its rate limits), once per connection.
#[test]
fn opened_gives_the_response_head_of_each_stream_before_connected() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(move |_, n| {
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: req_{n}\r\nContent-Length: 23\r\n\r\nretry: 10\ndata: hello\n\n"
            )
            .into_bytes(),
        )
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l = log.clone();
    sse.opened
        .connect(move |response| {
            l.borrow_mut().push(format!(
                "opened {} {}",
                response.status(),
                response.headers().get("x-request-id").unwrap_or("-")
            ))
        })
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || log
        .borrow()
        .len()
        >= 4));
    sse.disconnect();
    let log = log.borrow();
    assert_eq!(
        log[..4],
        [
            "opened 200 req_0",
            "connected",
            "opened 200 req_1",
            "connected"
        ]
    );
}

/// A `state_changed(Open)` slot that disconnects ends the stream there: neither `opened` nor
/// `connected` follows (nor any event), as nothing follows `EventSource.close()`.
#[test]
fn disconnect_from_the_open_state_slot_is_followed_by_neither_opened_nor_connected() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(stream("data: hello\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let (l, weak) = (log.clone(), Rc::downgrade(&sse));
    sse.state_changed
        .connect(move |state| {
            l.borrow_mut().push(format!("{state:?}"));
            if *state == ReadyState::Open {
                weak.upgrade().unwrap().disconnect();
            }
        })
        .release();
    let l = log.clone();
    sse.opened
        .connect(move |_| l.borrow_mut().push("opened".into()))
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .ready_state()
        == ReadyState::Closed));
    run_until(&mut ev, Duration::from_millis(200), || false);
    // (`Closed` is not heard by the slot that is still running.)
    // (No `disconnected` either: `connected` never came.)
    assert_eq!(*log.borrow(), ["Connecting", "Open"]);
    assert!(rec.events.borrow().is_empty());
    assert_eq!(server.requests().len(), 1);
}

/// An `https://` stream URL whose server speaks plain HTTP fails for good: the URL is wrong,
/// and asking again cannot help (it reconnected for ever).
#[test]
fn an_https_stream_to_a_plain_http_server_fails_for_good() {
    // What a plain-HTTP server answers to a TLS ClientHello, to every connection.
    assert_an_https_stream_fails_for_good(
        |mut conn| {
            use std::io::{Read, Write};
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        },
        "plain HTTP",
    );
}

/// An `https://` URL of a server that speaks another protocol on that port (an SSH banner)
/// fails for good, as one of a plain-HTTP server does: asking again gets the same banner.
#[test]
fn an_https_stream_to_a_server_of_another_protocol_fails_for_good() {
    assert_an_https_stream_fails_for_good(
        |mut conn| {
            use std::io::{Read, Write};
            // The banner first, as an SSH server sends it; then it waits for the client's.
            let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello);
            std::thread::sleep(Duration::from_millis(500));
        },
        "does not speak TLS",
    );
}

/// Streams from an `https://` URL whose server hands every connection to `answer` (it does not
/// speak TLS): one error, fatal, whose message contains `says`, and the client `Closed`.
fn assert_an_https_stream_fails_for_good(answer: fn(std::net::TcpStream), says: &str) {
    let mut ev = EventLoop::new().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/events", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            answer(conn);
        }
    });
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    sse.set_reconnection_time(Duration::from_millis(10));
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&url).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .errors
        .borrow()
        .is_empty()));
    run_until(&mut ev, Duration::from_millis(300), || false);
    let errors = rec.errors.borrow();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].is_fatal(), "{}", errors[0]);
    assert!(errors[0].to_string().contains(says), "{}", errors[0]);
    assert_eq!(sse.ready_state(), ReadyState::Closed);
}

/// A `Retry-After` of a day (or a typo's billions of seconds) left a client retrying on throttle
/// in `Connecting` for that long, asking nothing. The wait is bounded by the maximum
/// reconnection delay (60 s unless set, as openai-python ignores a wait over a minute); the
/// error still says what the server asked.
#[test]
fn retry_after_is_bounded_by_the_maximum_reconnection_delay() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::Bytes(refusal(
            "429 Too Many Requests",
            "Retry-After: 86400\r\n",
            "",
        )),
        _ => Reply::Bytes(stream("data: finally\n\n")),
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    sse.set_max_reconnection_delay(Duration::from_millis(300));
    let rec = record(&sse);
    let started = Instant::now();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(
        run_until(&mut ev, Duration::from_secs(10), || !rec
            .events
            .borrow()
            .is_empty()),
        "still waiting the day Retry-After asked for"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(matches!(
        rec.errors.borrow()[..],
        [SseError::Throttled {
            status: 429,
            retry_after: Some(asked),
            ..
        }] if asked == Duration::from_secs(86400)
    ));
}

/// OpenAI and Azure send `retry-after-ms` (milliseconds) with `Retry-After`, or instead of it,
/// and OpenAI's SDK prefers it. The client read `Retry-After` only: with `retry-after-ms` alone
/// it waited the failure backoff (6 s and more after a first throttle at the default 3 s), and
/// with both it waited the coarser header's whole seconds. It now waits what `retry-after-ms`
/// says, bounded as `Retry-After` is.
#[test]
fn retry_on_throttle_prefers_retry_after_ms() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, n| match n {
        0 => Reply::Bytes(refusal(
            "429 Too Many Requests",
            "retry-after-ms: 300\r\n",
            "",
        )),
        1 => Reply::Bytes(refusal(
            "429 Too Many Requests",
            "Retry-After: 30\r\nretry-after-ms: 250\r\n",
            "",
        )),
        2 => Reply::Bytes(refusal(
            "503 Service Unavailable",
            "retry-after-ms: 86400000\r\n",
            "",
        )),
        // A fraction rounds up: not a `0` that asks for no wait.
        3 => Reply::Bytes(refusal(
            "429 Too Many Requests",
            "retry-after-ms: 0.25\r\n",
            "",
        )),
        _ => Reply::Bytes(stream("data: finally\n\n")),
    });
    let sse = SseClient::new().unwrap();
    sse.set_retry_on_throttle(true);
    sse.set_max_reconnection_delay(Duration::from_millis(400));
    let rec = record(&sse);
    let started = Instant::now();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(
        run_until(&mut ev, Duration::from_secs(20), || !rec
            .events
            .borrow()
            .is_empty()),
        "retry-after-ms not honoured"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(850) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let asked: Vec<_> = rec
        .errors
        .borrow()
        .iter()
        .map(|e| match e {
            SseError::Throttled { retry_after, .. } => *retry_after,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        asked,
        [
            Some(Duration::from_millis(300)),
            Some(Duration::from_millis(250)),
            Some(Duration::from_secs(86400)),
            Some(Duration::from_millis(1)),
        ]
    );
}

/// An open stream, or one waiting to reconnect, whose event loop is dropped can never go on:
/// nothing reads its socket and its reconnect timer never fires. `ready_state()` said `Open` or
/// `Connecting` (and `is_connected()` true) for ever. It says `Closed` once the loop is gone;
/// the loop's drop runs no slot, and `disconnect()` afterwards ends the stream's request with
/// the usual `state_changed(Closed)` and `disconnected`.
#[test]
fn a_client_whose_loop_was_dropped_reports_closed() {
    for waiting in [false, true] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |_, _| {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 60000\ndata: a\n\n";
            if waiting {
                Reply::BytesThenClose(head.as_bytes().to_vec())
            } else {
                Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(5))
            }
        });
        let sse = SseClient::new().unwrap();
        let rec = record(&sse);
        let log = lifecycle(&sse);
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        let (expected_state, expected_log): (_, &[&str]) = if waiting {
            (
                ReadyState::Connecting,
                &[
                    "state Connecting",
                    "state Open",
                    "connected",
                    "state Connecting",
                    "disconnected",
                ],
            )
        } else {
            (
                ReadyState::Open,
                &["state Connecting", "state Open", "connected"],
            )
        };
        assert!(run_until(&mut ev, Duration::from_secs(5), || *log.borrow()
            == expected_log
            && !rec.events.borrow().is_empty()));
        assert_eq!(sse.ready_state(), expected_state, "waiting: {waiting}");
        drop(ev);
        assert_eq!(*log.borrow(), expected_log, "the loop's drop ran a slot");
        assert_eq!(sse.ready_state(), ReadyState::Closed, "waiting: {waiting}");
        assert!(!sse.is_connected());
        assert!(format!("{sse:?}").contains("Closed"), "{sse:?}");
        sse.disconnect();
        let mut after = expected_log.to_vec();
        // (`disconnected` once per `connected`: an open stream's end says it here, a stream
        // waiting to reconnect said it when it ended.)
        after.push("state Closed");
        if !waiting {
            after.push("disconnected");
        }
        assert_eq!(*log.borrow(), after, "waiting: {waiting}");
        assert_eq!(sse.ready_state(), ReadyState::Closed);
        assert_eq!(sse.http_client().pending_requests(), 0);
        assert!(rec.errors.borrow().is_empty());
    }
}

/// RELIABILITY promise 7: an event ID is part of the stream's body (a resume token may be a
/// credential), which diagnostics never show. The client's and the parser's `Debug` printed it
/// in full; they give its length.
#[test]
fn debug_output_shows_no_event_id() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| {
        Reply::BytesThenClose(stream("retry: 60000\nid: id-marker-3b7d\ndata: x\n\n"))
    });
    let sse = SseClient::new().unwrap();
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || sse
        .last_event_id()
        == "id-marker-3b7d"));
    let shown = format!("{sse:?}");
    assert!(!shown.contains("marker-3b7d"), "{shown}");
    assert!(shown.contains("last_event_id_len: 14"), "{shown}");
    sse.disconnect();
    let mut parser = kdnet::network::sse::SseParser::new();
    parser.parse_all(b"id: id-marker-3b7d\n\n").unwrap();
    assert_eq!(parser.last_event_id(), "id-marker-3b7d");
    let shown = format!("{parser:?}");
    assert!(!shown.contains("marker-3b7d"), "{shown}");
    assert!(shown.contains("last_event_id_len: 14"), "{shown}");
}

/// RELIABILITY promise 7: credentials travel in queries too (Gemini's `?key=`, signed URLs),
/// and the client logged each stream's URL whole at `DEBUG`. Its query is replaced by `?…`.
#[test]
fn logs_show_no_query_of_the_stream_url() {
    let logs = captured_logs();
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::Bytes(stream("data: x\n\n")));
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(
        HttpRequest::get(&server.url("/v1/stream?alt=sse&key=query-marker-5e2a#frag")).unwrap(),
    );
    assert!(run_until(&mut ev, Duration::from_secs(10), || !rec
        .events
        .borrow()
        .is_empty()));
    sse.disconnect();
    assert!(
        server.requests()[0].line.contains("query-marker-5e2a"),
        "the query is sent"
    );
    let logs = logs.0.lock().unwrap();
    let path = format!("opening event stream {}?…", server.url("/v1/stream"));
    assert!(logs.iter().any(|line| line.contains(&path)), "{logs:?}");
    let leaks: Vec<&String> = logs
        .iter()
        .filter(|line| line.contains("marker-5e2a"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A slot that drops the client's last handle hears nothing more from it (as with sockets):
/// `opened` and `connected` followed a drop in `state_changed(Open)` or `opened`, the broken
/// stream's `error` and `disconnected` a drop in `state_changed(Connecting)` or `error` of its
/// end, and `error` and `disconnected` a drop in `state_changed(Closed)` of a stream that ended
/// with auto reconnect off or was refused; `state_changed` of the stream's end a drop in the
/// slot of its flushed unterminated last event.
#[test]
fn a_slot_that_drops_the_client_hears_nothing_more_from_it() {
    // (the slot that drops it and which of its calls, auto reconnect, the server's answer)
    let cases = [
        ("state Open", 1, true, "cut"),
        ("opened", 1, true, "cut"),
        ("state Connecting", 2, true, "cut"),
        ("error", 1, true, "cut"),
        ("state Closed", 1, false, "cut"),
        ("state Closed", 1, false, "refused"),
        ("state Closed", 1, false, "ended"),
        ("disconnected", 1, true, "cut"),
        ("message", 1, true, "cut"),
        // The stream's unterminated last event, flushed at its end.
        ("message", 3, true, "flushed"),
        ("message", 3, false, "flushed"),
    ];
    for (slot, nth, auto_reconnect, answer) in cases {
        let case = format!("{slot} #{nth}, auto reconnect {auto_reconnect}, {answer}");
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |_, n| {
            let body = "retry: 10\ndata: a\n\ndata: b\n\ndata: c";
            match (n, answer) {
                (0, "cut") => Reply::BytesThenClose(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len() + 5
                    )
                    .into_bytes(),
                ),
                (0, "ended" | "flushed") => Reply::BytesThenClose(stream(body)),
                (0, _) => Reply::BytesThenClose(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
                ),
                _ => Reply::Close,
            }
        });
        let http = HttpClient::new().unwrap();
        let sse = http.create_sse_client();
        sse.set_auto_reconnect(auto_reconnect);
        sse.set_flush_unterminated_event(answer == "flushed");
        let holder = Rc::new(RefCell::new(Some(sse.clone())));
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let calls = Rc::new(std::cell::Cell::new(0));
        let note = {
            let (holder, log) = (holder.clone(), log.clone());
            move |name: String| {
                let drops = name == slot && {
                    calls.set(calls.get() + 1);
                    calls.get() == nth
                };
                log.borrow_mut().push(name);
                if drops {
                    holder.borrow_mut().take();
                    log.borrow_mut().push("dropped".into());
                }
            }
        };
        let n = note.clone();
        sse.state_changed
            .connect(move |state| n(format!("state {state:?}")))
            .release();
        let n = note.clone();
        sse.opened.connect(move |_| n("opened".into())).release();
        let n = note.clone();
        sse.connected
            .connect(move |_| n("connected".into()))
            .release();
        let n = note.clone();
        sse.message_received
            .connect(move |_| n("message".into()))
            .release();
        let n = note.clone();
        sse.error.connect(move |_| n("error".into())).release();
        let n = note;
        sse.disconnected
            .connect(move |_| n("disconnected".into()))
            .release();
        sse.connect(HttpRequest::get(&server.url("/")).unwrap());
        drop(sse);
        assert!(
            run_until(&mut ev, Duration::from_secs(5), || holder
                .borrow()
                .is_none()),
            "{case}: {:?}",
            log.borrow()
        );
        run_until(&mut ev, Duration::from_millis(100), || false);
        let log = log.borrow();
        assert_eq!(
            log.last().map(String::as_str),
            Some("dropped"),
            "{case}: {log:?}"
        );
        assert_eq!(http.pending_requests(), 0, "{case}");
    }
}

/// An event over the size limit ended the stream with "an event exceeded the limit of N bytes":
/// what went wrong, but not what to do about it. The message names the setting that raises it.
#[test]
fn an_event_too_large_message_names_the_setting_that_raises_the_limit() {
    let error = SseError::EventTooLarge { limit: 8 };
    assert_eq!(
        error.to_string(),
        "an event exceeded the limit of 8 bytes (SseClient::set_max_event_size raises it)"
    );
    assert!(error.is_fatal());
}

/// A `state_changed(Closed)` slot that connects again when a stream fails for good (refused,
/// or broken with auto reconnect off) has the last word, as one of `Connecting` does: the old
/// stream's `error` came after the new stream's start, seen by its slots in `Connecting` (a
/// fatal error of a client that was not closed).
#[test]
fn connect_from_the_closed_state_slot_of_a_failed_stream_is_not_followed_by_its_error() {
    for answer in ["refused", "cut"] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |req, _| {
            if req.line.contains("/b") {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: b\n\n";
                Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
            } else if answer == "refused" {
                Reply::BytesThenClose(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
                )
            } else {
                Reply::BytesThenClose(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 99\r\n\r\ndata: a\n\n"
                        .to_vec(),
                )
            }
        });
        let sse = SseClient::new().unwrap();
        sse.set_auto_reconnect(false);
        let rec = record(&sse);
        let log = lifecycle(&sse);
        let weak = Rc::downgrade(&sse);
        let url_b = server.url("/b");
        let reconnected = Rc::new(std::cell::Cell::new(false));
        let r = reconnected.clone();
        sse.state_changed
            .connect(move |s| {
                if *s == ReadyState::Closed && !r.replace(true) {
                    weak.upgrade()
                        .unwrap()
                        .connect(HttpRequest::get(&url_b).unwrap());
                }
            })
            .release();
        sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(5), || rec
            .events
            .borrow()
            .iter()
            .any(|e| e == "message:b:")));
        run_until(&mut ev, Duration::from_millis(100), || false);
        assert_eq!(sse.ready_state(), ReadyState::Open, "{answer}");
        let opened: &[&str] = if answer == "cut" {
            &["state Connecting", "state Open", "connected"]
        } else {
            &["state Connecting"]
        };
        let mut expected = opened.to_vec();
        expected.push("state Closed");
        if answer == "cut" {
            // The old stream's end, before the new stream's first signal.
            expected.push("disconnected");
        }
        expected.extend(["state Connecting", "state Open", "connected"]);
        assert_eq!(*log.borrow(), expected, "{answer}");
        assert!(
            rec.errors.borrow().is_empty(),
            "{answer}: {:?}",
            rec.errors.borrow()
        );
    }
}

/// A refused answer's body is quoted to 300 characters by the message, but `Debug` (what
/// `unwrap()` and `{:?}` print) showed all of it, up to 1 KiB: whatever the server put there
/// (an echoed request, a token). `Debug` quotes the same 300 characters and gives the length.
#[test]
fn debug_of_an_error_quotes_no_more_of_the_body_than_the_message() {
    let body = format!("{}body-marker-2c9e{}", "a".repeat(300), "b".repeat(600));
    let errors = [
        SseError::BadStatus {
            status: 400,
            body: body.clone(),
        },
        SseError::BadContentType {
            content_type: Some("text/html".into()),
            body: body.clone(),
        },
        SseError::Throttled {
            status: 429,
            retry_after: None,
            body: body.clone(),
        },
    ];
    for error in errors {
        let shown = format!("{error:?}");
        assert!(!shown.contains("marker-2c9e"), "{shown}");
        assert!(shown.contains(&"a".repeat(300)), "{shown}");
        assert!(shown.contains("916 bytes"), "{shown}");
        assert_eq!(error.body(), Some(body.as_str()), "the error keeps it");
    }
    let short = SseError::BadStatus {
        status: 401,
        body: "no\nkey".into(),
    };
    assert_eq!(
        format!("{short:?}"),
        r#"BadStatus { status: 401, body: "no\nkey" }"#
    );
    assert_eq!(
        format!("{:?}", SseError::EventTooLarge { limit: 8 }),
        "EventTooLarge { limit: 8 }"
    );
}

/// Each connection's body is decoded afresh (WHATWG "UTF-8 decode" per response): its own
/// leading BOM is removed (the client's parser expected a BOM only at the start of its first
/// body unless reset between connections), a second one is text (the block's `data` line is
/// then an unknown field), the unterminated block before a CR ending one connection is dropped,
/// and a CR ending one read swallows the LF starting the next read of the same connection (one
/// line end: one event `f\ng`, not two).
#[test]
fn every_connection_is_decoded_afresh_and_line_ends_span_reads_only_within_one() {
    let mut ev = EventLoop::new().unwrap();
    // Bodies cut short of their Content-Length (the connection breaks: the parser is not
    // finished, only reset), or close-delimited (the last one).
    let cut = |body: &[u8]| {
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
            body.len() + 10
        )
        .into_bytes();
        reply.extend_from_slice(body);
        reply
    };
    let server = ScriptServer::start(move |_, n| match n {
        0 => Reply::BytesThenClose(cut(b"\xEF\xBB\xBFretry: 10\ndata: a\n\n")),
        1 => Reply::BytesThenClose(cut(b"\xEF\xBB\xBFdata: b\n\n")),
        2 => Reply::BytesThenClose(cut(
            b"\xEF\xBB\xBF\xEF\xBB\xBFdata: second BOM\n\ndata: c\n\ndata: d\r",
        )),
        3 => Reply::BytesThenClose(cut(b"\ndata: e\n\n")),
        _ => Reply::Pieces(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: f\r".to_vec(),
                b"\ndata: g\n\n".to_vec(),
            ],
            Duration::from_millis(100),
        ),
    });
    let sse = SseClient::new().unwrap();
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(10), || rec
        .events
        .borrow()
        .len()
        >= 5));
    run_until(&mut ev, Duration::from_millis(100), || false);
    sse.disconnect();
    assert_eq!(
        *rec.events.borrow(),
        [
            "message:a:",
            "message:b:",
            "message:c:",
            "message:e:",
            "message:f\ng:"
        ]
    );
}

/// `Debug` quotes exactly the characters the message quotes (300), not one more (mutation
/// audit: cutting after 301 failed no test), and counts a body's length in bytes.
#[test]
fn debug_of_an_error_cuts_the_body_after_exactly_300_characters() {
    // 'é' is two bytes: 299 of them and a marker past the cut.
    let body = format!("{}ab-marker-41f0", "é".repeat(299));
    let error = SseError::BadStatus {
        status: 400,
        body: body.clone(),
    };
    let quoted = format!("{}a", "é".repeat(299));
    assert_eq!(
        format!("{error:?}"),
        format!(
            "BadStatus {{ status: 400, body: {quoted:?}… ({} bytes) }}",
            body.len()
        )
    );
    assert!(error.to_string().contains(&quoted), "{error}");
    assert!(!error.to_string().contains("ab-marker"), "{error}");
    // Exactly 300 characters: nothing cut.
    let whole = SseError::BadStatus {
        status: 400,
        body: "é".repeat(300),
    };
    assert_eq!(
        format!("{whole:?}"),
        format!("BadStatus {{ status: 400, body: {:?} }}", "é".repeat(300))
    );
}

/// A slot of the flushed final event that calls `HttpClient::cancel_all` and drops the client's
/// last handle hears nothing more from it: the stream it stopped closes without a
/// `state_changed(Closed)` or `disconnected` after the drop (mutation audit: `close_for_good`
/// without its check for a dropped client failed no test).
#[test]
fn a_slot_of_the_flushed_final_event_that_cancels_all_and_drops_the_client_hears_nothing_more() {
    let mut ev = EventLoop::new().unwrap();
    let server =
        ScriptServer::start(|_, _| Reply::BytesThenClose(stream("retry: 10\ndata: a\n\ndata: b")));
    let http = HttpClient::new().unwrap();
    let sse = http.create_sse_client();
    sse.set_flush_unterminated_event(true);
    let log = lifecycle(&sse);
    let holder = Rc::new(RefCell::new(Some(sse.clone())));
    let (h, l, weak_http) = (holder.clone(), log.clone(), Rc::downgrade(&http));
    sse.message_received
        .connect(move |event| {
            l.borrow_mut().push(format!("message {}", event.data()));
            if event.data() == "b" {
                weak_http.upgrade().unwrap().cancel_all();
                h.borrow_mut().take();
                l.borrow_mut().push("dropped".into());
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
    drop(sse);
    assert!(run_until(&mut ev, Duration::from_secs(10), || holder
        .borrow()
        .is_none()));
    // Long enough for several reconnects at `retry: 10`.
    run_until(&mut ev, Duration::from_millis(300), || false);
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "connected",
            "message a",
            "message b",
            "dropped"
        ]
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(http.pending_requests(), 0);
}

/// A stream that ended cleanly on a connection the server keeps open (its chunked body ended):
/// the reconnect goes out on that connection, unless the stream's head said
/// `Keep-Alive: timeout=1` (too short to race), read when the stream ends (hours after its
/// head, which the client need not keep whole).
#[test]
fn the_reconnect_after_a_clean_end_reuses_the_connection_as_the_stream_s_keep_alive_allows() {
    for (keep_alive, reused) in [("", true), ("Keep-Alive: timeout=1, max=50\r\n", false)] {
        let mut ev = EventLoop::new().unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Padding: {}\r\n{keep_alive}Transfer-Encoding: chunked\r\n\r\n",
            "p".repeat(200)
        );
        let server = ScriptServer::start(move |_, n| {
            let event = format!("retry: 20\ndata: {n}\n\n");
            let body = format!("{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
            Reply::Bytes([head.as_bytes(), body.as_bytes()].concat())
        });
        let sse = SseClient::new().unwrap();
        let rec = record(&sse);
        sse.connect(HttpRequest::get(&server.url("/events")).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(10), || rec
            .events
            .borrow()
            .len()
            >= 2));
        sse.disconnect();
        assert_eq!(rec.events.borrow()[..2], ["message:0:", "message:1:"]);
        assert!(rec.errors.borrow().is_empty(), "{:?}", rec.errors.borrow());
        let requests = server.requests();
        assert_eq!(
            requests[1].connection == requests[0].connection,
            reused,
            "with {keep_alive:?}: connections {} and {}",
            requests[0].connection,
            requests[1].connection
        );
    }
}

/// `disconnect()` (or `connect()`) of an open stream whose `state_changed(Closed)` slot connects
/// again: the old stream's `disconnected` is not emitted after the new stream's
/// `state_changed(Connecting)`, as it is not for a stream that ended or failed (the new stream
/// carries on from there). It came last, with the client `Connecting`. (The reconnect model met
/// it.)
#[test]
fn a_user_s_stop_whose_closed_slot_connects_again_is_not_followed_by_disconnected() {
    for replace in [false, true] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(|_, _| {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        });
        let sse = SseClient::new().unwrap();
        let log = lifecycle(&sse);
        let rec = record(&sse);
        sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(5), || !rec
            .events
            .borrow()
            .is_empty()));
        let (weak, url_b) = (Rc::downgrade(&sse), server.url("/b"));
        let once = Rc::new(std::cell::Cell::new(true));
        sse.state_changed
            .connect(move |state| {
                if *state == ReadyState::Closed && once.replace(false) {
                    weak.upgrade()
                        .unwrap()
                        .connect(HttpRequest::get(&url_b).unwrap());
                }
            })
            .release();
        log.borrow_mut().clear();
        if replace {
            sse.connect(HttpRequest::get(&server.url("/c")).unwrap());
        } else {
            sse.disconnect();
        }
        // The replaced stream's `disconnected` comes before the new stream's first signal.
        assert_eq!(
            *log.borrow(),
            ["state Closed", "disconnected", "state Connecting"],
            "replace: {replace}"
        );
        assert_eq!(sse.ready_state(), ReadyState::Connecting);
        assert!(run_until(&mut ev, Duration::from_secs(5), || rec
            .events
            .borrow()
            .len()
            >= 2));
        let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
        assert_eq!(lines, ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]);
        sse.disconnect();
    }
}

/// `connect()` outside any slot while the client waits to reconnect: the pending reconnect is
/// cancelled (the old URL is not asked again), the new request goes out, and the signals say
/// `Closed` then `Connecting` (no `disconnected`: no stream was open). (The reconnect model's
/// user calls all come from slots, when no reconnect is pending.)
#[test]
fn connect_during_the_reconnect_wait_replaces_the_pending_reconnect() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.contains("/a") {
            Reply::BytesThenClose(stream("retry: 300\ndata: a\n\n"))
        } else {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: b\n\n";
            Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
        }
    });
    let sse = SseClient::new().unwrap();
    let log = lifecycle(&sse);
    let rec = record(&sse);
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || log
        .borrow()
        .iter()
        .any(|l| l == "disconnected")));
    assert_eq!(sse.ready_state(), ReadyState::Connecting);
    log.borrow_mut().clear();
    sse.connect(HttpRequest::get(&server.url("/b")).unwrap());
    assert_eq!(server.requests().len(), 1);
    assert!(run_until(&mut ev, Duration::from_secs(5), || rec
        .events
        .borrow()
        .len()
        >= 2));
    run_until(&mut ev, Duration::from_millis(600), || false);
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["GET /a HTTP/1.1", "GET /b HTTP/1.1"]);
    assert_eq!(
        *log.borrow(),
        [
            "state Closed",
            "state Connecting",
            "state Open",
            "connected"
        ]
    );
    assert_eq!(*rec.events.borrow(), ["message:a:", "message:b:"]);
    sse.disconnect();
}

/// A `state_changed(Closed)` slot connects again and a `state_changed(Connecting)` slot of that
/// new stream disconnects it: the new stream's `Closed` and `disconnected` end everything. The
/// old stream's end (a user's `disconnect()` or replacing `connect()` of an open stream, a
/// refused answer, a broken stream with auto reconnect off) then still emitted its `error` and
/// `disconnected`, after the new stream's: a user saw signals of a stream already replaced.
#[test]
fn an_old_stream_s_end_is_not_reported_after_a_newer_stream_connected_and_disconnected_in_its_slots()
 {
    for end in ["disconnect", "replace", "refused", "cut"] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |_, _| {
            match end {
            "refused" => Reply::BytesThenClose(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
            ),
            "cut" => Reply::BytesThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 99\r\n\r\ndata: a\n\n"
                    .to_vec(),
            ),
            _ => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: a\n\n";
                Reply::Pieces(vec![head.as_bytes().to_vec()], Duration::from_secs(3))
            }
        }
        });
        let sse = SseClient::new().unwrap();
        sse.set_auto_reconnect(false);
        let rec = record(&sse);
        let log = lifecycle(&sse);
        let armed = Rc::new(std::cell::Cell::new(false));
        for (on, call) in [
            (ReadyState::Closed, "connect"),
            (ReadyState::Connecting, "stop"),
        ] {
            let (weak, url_b, armed) = (Rc::downgrade(&sse), server.url("/b"), armed.clone());
            sse.state_changed
                .connect(move |state| {
                    if *state != on || !armed.get() {
                        return;
                    }
                    let sse = weak.upgrade().unwrap();
                    if call == "connect" {
                        sse.connect(HttpRequest::get(&url_b).unwrap());
                    } else {
                        armed.set(false);
                        sse.disconnect();
                    }
                })
                .release();
        }
        sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
        if matches!(end, "disconnect" | "replace") {
            assert!(run_until(&mut ev, Duration::from_secs(5), || !rec
                .events
                .borrow()
                .is_empty()));
        }
        log.borrow_mut().clear();
        armed.set(true);
        match end {
            "disconnect" => sse.disconnect(),
            "replace" => sse.connect(HttpRequest::get(&server.url("/c")).unwrap()),
            _ => assert!(run_until(&mut ev, Duration::from_secs(5), || !armed.get())),
        }
        run_until(&mut ev, Duration::from_millis(100), || false);
        // (A cut stream opened after the log was cleared.)
        let mut expected = if end == "cut" {
            vec!["state Open", "connected"]
        } else {
            vec![]
        };
        // The old stream's `disconnected` (when its `connected` came) before the new stream's
        // first signal; none for the new stream, which never opened.
        expected.push("state Closed");
        if end != "refused" {
            expected.push("disconnected");
        }
        expected.extend(["state Connecting", "state Closed"]);
        assert_eq!(*log.borrow(), expected, "{end}");
        assert!(
            rec.errors.borrow().is_empty(),
            "{end}: {:?}",
            rec.errors.borrow()
        );
        assert_eq!(sse.ready_state(), ReadyState::Closed, "{end}");
        let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
        assert_eq!(lines, ["GET /a HTTP/1.1"], "{end}");
    }
}

/// A slot of a flushed unterminated final event connects again with a `Last-Event-ID` and a
/// `state_changed(Connecting)` slot of that new stream disconnects it: the ID the user gave is
/// the client's (no stream delivered one since). The old stream's end took its parser back
/// after that and put the old stream's ID in its place, so the next `connect()` resumed from
/// the replaced stream.
#[test]
fn a_flushed_final_event_s_slot_that_connects_and_is_disconnected_keeps_the_id_it_gave() {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|_, _| Reply::BytesThenClose(stream("id: 7\ndata: tail")));
    let sse = SseClient::new().unwrap();
    sse.set_flush_unterminated_event(true);
    let rec = record(&sse);
    let log = lifecycle(&sse);
    let (weak, url_b) = (Rc::downgrade(&sse), server.url("/b"));
    sse.message_received
        .connect(move |_| {
            let request = HttpRequest::get(&url_b)
                .unwrap()
                .with_header("Last-Event-ID", "x");
            weak.upgrade().unwrap().connect(request);
        })
        .release();
    let weak = Rc::downgrade(&sse);
    let once = Rc::new(std::cell::Cell::new(true));
    sse.state_changed
        .connect(move |state| {
            let sse = weak.upgrade().unwrap();
            if *state == ReadyState::Connecting && sse.last_event_id() == "x" && once.replace(false)
            {
                sse.disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::get(&server.url("/a")).unwrap());
    assert!(run_until(&mut ev, Duration::from_secs(5), || !rec
        .events
        .borrow()
        .is_empty()));
    run_until(&mut ev, Duration::from_millis(100), || false);
    assert_eq!(*rec.events.borrow(), ["message:tail:7"]);
    assert_eq!(
        *log.borrow(),
        [
            "state Connecting",
            "state Open",
            "connected",
            "state Closed",
            "disconnected",
            "state Connecting",
            "state Closed",
        ]
    );
    assert_eq!(sse.ready_state(), ReadyState::Closed);
    assert_eq!(sse.last_event_id(), "x");
    let lines: Vec<String> = server.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["GET /a HTTP/1.1"]);
}

/// Every signal of `sse` that tells the stream's life, in order.
fn lifecycle_log(sse: &Rc<SseClient>) -> Rc<RefCell<Vec<String>>> {
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let l = log.clone();
    sse.state_changed
        .connect(move |s| l.borrow_mut().push(format!("{s:?}")))
        .release();
    let l = log.clone();
    sse.connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    let l = log.clone();
    sse.error
        .connect(move |_| l.borrow_mut().push("error".into()))
        .release();
    let l = log.clone();
    sse.disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    log
}

/// `disconnected` pairs with `connected`, as a `TcpSocket`'s do: once for each stream whose
/// `connected` came, never for one that did not open. It came without a `connected` for a
/// `disconnect()` while connecting, a refused request, and a `disconnect()` from the
/// `state_changed(Open)` slot; and twice for one `connected` when the client stopped while
/// waiting to reconnect (by `disconnect()`, `set_auto_reconnect(false)` or a refused reconnect).
#[test]
fn disconnected_comes_once_for_each_connected_and_never_without_one() {
    #[derive(Debug, Clone, Copy)]
    enum Path {
        DisconnectWhileConnecting,
        Refused,
        DisconnectFromOpenSlot,
        DisconnectWhileWaiting,
        AutoReconnectOffWhileWaiting,
        ReconnectRefused,
    }
    for path in [
        Path::DisconnectWhileConnecting,
        Path::Refused,
        Path::DisconnectFromOpenSlot,
        Path::DisconnectWhileWaiting,
        Path::AutoReconnectOffWhileWaiting,
        Path::ReconnectRefused,
    ] {
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |_, n| match (path, n) {
            (Path::DisconnectWhileConnecting, _) => Reply::Stall(Duration::from_secs(5)),
            (Path::Refused, _) | (Path::ReconnectRefused, 1..) => Reply::BytesThenClose(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            ),
            (Path::ReconnectRefused, 0) => Reply::BytesThenClose(stream("retry: 20\ndata: a\n\n")),
            (Path::DisconnectWhileWaiting | Path::AutoReconnectOffWhileWaiting, _) => {
                Reply::BytesThenClose(stream("retry: 60000\ndata: a\n\n"))
            }
            (Path::DisconnectFromOpenSlot, _) => Reply::Bytes(stream("data: a\n\n")),
        });
        let sse = SseClient::new().unwrap();
        let log = lifecycle_log(&sse);
        if let Path::DisconnectFromOpenSlot = path {
            let weak = Rc::downgrade(&sse);
            sse.state_changed
                .connect(move |s| {
                    if *s == ReadyState::Open {
                        weak.upgrade().unwrap().disconnect();
                    }
                })
                .release();
        }
        sse.connect(HttpRequest::get(&server.url("/s")).unwrap());
        match path {
            Path::DisconnectWhileConnecting => {
                assert!(run_until(&mut ev, Duration::from_secs(10), || !server
                    .requests()
                    .is_empty()));
                sse.disconnect();
            }
            Path::DisconnectWhileWaiting | Path::AutoReconnectOffWhileWaiting => {
                assert!(run_until(&mut ev, Duration::from_secs(10), || {
                    log.borrow().iter().any(|e| e == "disconnected")
                }));
                if let Path::DisconnectWhileWaiting = path {
                    sse.disconnect();
                } else {
                    sse.set_auto_reconnect(false);
                }
            }
            _ => {}
        }
        assert!(
            run_until(&mut ev, Duration::from_secs(10), || sse.ready_state()
                == ReadyState::Closed),
            "{path:?}"
        );
        run_until(&mut ev, Duration::from_millis(50), || false);
        let log = log.borrow();
        let mut open = false;
        for entry in log.iter() {
            match entry.as_str() {
                "connected" => {
                    assert!(!open, "{path:?}: connected twice: {log:?}");
                    open = true;
                }
                "disconnected" => {
                    assert!(open, "{path:?}: disconnected without connected: {log:?}");
                    open = false;
                }
                _ => {}
            }
        }
        assert!(!open, "{path:?}: connected without disconnected: {log:?}");
    }
}

/// Slots connected and disconnected while one read's events are delivered (one `emit` per
/// event): a slot connected during event k's delivery gets every later event of that read once,
/// from event k + 1 (the signal's rule: it first runs on the next emit), until it is
/// disconnected; one connected and disconnected during the same delivery never runs; one that
/// disconnects itself gets the event it ran for and nothing after. None is lost or repeated,
/// also when the connecting slot waits in a nested loop, and the slots connected before see
/// every event.
#[test]
fn slots_connected_and_disconnected_during_one_reads_delivery_see_each_later_event_once() {
    use kdnet::bindings::ConnectionHandle;
    let body: String = (1..=6).map(|i| format!("data: {i}\n\n")).collect();
    // The six events come in one read: one write, and the server waits before closing.
    let server = ScriptServer::start(move |_, _| {
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec();
        head.extend_from_slice(body.as_bytes());
        Reply::Pieces(vec![head], Duration::from_secs(2))
    });
    for nested in [false, true] {
        let mut ev = EventLoop::new().unwrap();
        let sse = SseClient::new().unwrap();
        let all: Rc<RefCell<Vec<String>>> = Rc::default();
        // B: connected at event 2, disconnected by the first slot at event 4 (before its turn).
        // C: connected and disconnected during event 2's delivery.
        // D: connected at event 3, disconnects itself at its first run.
        let seen: Rc<RefCell<Vec<(char, String)>>> = Rc::default();
        let handles: Rc<RefCell<Vec<ConnectionHandle>>> = Rc::default();
        let (a, weak, s, h) = (
            all.clone(),
            Rc::downgrade(&sse),
            seen.clone(),
            handles.clone(),
        );
        sse.message_received
            .connect(move |event| {
                let sse = weak.upgrade().unwrap();
                a.borrow_mut().push(event.data().to_owned());
                let record = |name: char| {
                    let s = s.clone();
                    move |e: &kdnet::network::sse::SseEvent| {
                        s.borrow_mut().push((name, e.data().to_owned()))
                    }
                };
                match event.data() {
                    "2" => {
                        h.borrow_mut()
                            .push(sse.message_received.connect(record('B')));
                        let c = sse.message_received.connect(record('C'));
                        c.disconnect();
                        if nested {
                            // A nested loop: the rest of the read waits for this slot.
                            let until = Instant::now() + Duration::from_millis(50);
                            while Instant::now() < until {
                                kdnet::foundation::process_events(Some(Duration::from_millis(5)))
                                    .unwrap();
                            }
                        }
                    }
                    "3" => {
                        let s = s.clone();
                        let own: Rc<RefCell<Option<ConnectionHandle>>> = Rc::default();
                        let o = own.clone();
                        let d = sse.message_received.connect(move |e| {
                            s.borrow_mut().push(('D', e.data().to_owned()));
                            if let Some(me) = o.borrow_mut().take() {
                                me.disconnect();
                            }
                        });
                        *own.borrow_mut() = Some(d);
                    }
                    "4" => {
                        for handle in h.borrow_mut().drain(..) {
                            handle.disconnect();
                        }
                    }
                    _ => {}
                }
            })
            .release();
        sse.connect(HttpRequest::get(&server.url("/batch")).unwrap());
        assert!(run_until(&mut ev, Duration::from_secs(10), || all
            .borrow()
            .len()
            == 6));
        sse.disconnect();
        assert_eq!(
            *all.borrow(),
            ["1", "2", "3", "4", "5", "6"],
            "nested: {nested}"
        );
        let seen: Vec<String> = seen
            .borrow()
            .iter()
            .map(|(name, data)| format!("{name}{data}"))
            .collect();
        // (At event 4 the first slot disconnects B before B's turn: B does not run for it.)
        assert_eq!(seen, ["B3", "D4"], "nested: {nested}");
    }
}

/// Serves `first` (the pieces of the first answer, 300 ms apart; the stream stays open and the
/// client's 600 ms read timeout ends it) and a 204 to the reconnect; a slot calls
/// `set_last_event_id("3")` at the event whose data is `a`. Returns the events seen
/// (`type:data:id`) and the `Last-Event-ID` the reconnect sent.
fn resumed_after_a_user_id_at_event_a(first: Vec<Vec<u8>>) -> (Vec<String>, Option<String>) {
    resumed_after_a_user_id(
        move || Reply::Pieces(first.clone(), Duration::from_millis(300)),
        None,
        false,
        false,
    )
}

/// The head of the first answer in [`resumed_after_a_user_id_at_event_a`], with `body` after it.
fn stream_head_then(body: &str) -> Vec<u8> {
    let mut reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 10\n".to_vec();
    reply.extend_from_slice(body.as_bytes());
    reply
}

/// `set_last_event_id` during a stream: "sent as `Last-Event-ID` with the next connection …
/// unless the stream in flight sends an ID of its own after this call". An `id:` field repeating
/// the stream's current ID is such an ID (WHATWG: every `id` field sets the last event ID
/// buffer, whatever its value). Until the twenty-sixth session the client compared IDs, could
/// not tell the repeat from an event without an `id`, and resumed from "3" instead of "7".
#[test]
fn an_id_field_repeating_the_streams_id_after_set_last_event_id_overrides_it() {
    let (events, resumed) = resumed_after_a_user_id_at_event_a(vec![
        stream_head_then("id: 7\ndata: a\n\n"),
        b"id: 7\ndata: b\n\n".to_vec(),
    ]);
    assert_eq!(events, ["message:a:7", "message:b:7"]);
    assert_eq!(
        resumed.as_deref(),
        Some("7"),
        "the stream's `id: 7` came after the call"
    );
}

/// A stream whose events all come in one read (one batch): a slot's `set_last_event_id` sits
/// right after its event, so of the events parsed with it in that read, one with its own `id`
/// (here repeating the stream's) wins over the call and one without does not; an `id` in a
/// block without data counts too, one in a block the stream never finished does not. Each case
/// is one connection; the second request shows which ID the client resumed from.
#[test]
fn set_last_event_id_from_a_slot_weighs_the_rest_of_the_same_read_by_its_id_fields() {
    // (stream after the head, resumed ID)
    let cases: [(&str, &str); 5] = [
        ("id: 7\ndata: a\n\nid: 7\ndata: b\n\n", "7"),
        ("id: 7\ndata: a\n\ndata: b\n\n", "3"),
        ("id: 7\ndata: a\n\nid: 7\n\ndata: b\n\n", "7"),
        ("id: 7\ndata: a\n\nid: 8\ndata: b\n\n", "8"),
        // An `id` in a block the stream ends (here: the read timeout) before its blank line
        // counts for nothing.
        ("id: 7\ndata: a\n\nid: 7\ndata: b\n", "3"),
    ];
    for (stream, expected) in cases {
        let (_, resumed) = resumed_after_a_user_id_at_event_a(vec![stream_head_then(stream)]);
        assert_eq!(resumed.as_deref(), Some(expected), "stream {stream:?}");
    }
}

/// Serves `first()` to the first request and a 204 to the reconnect (the client's read
/// timeout is 600 ms). `set_last_event_id("3")` is called in the `connected` slot
/// (`in_connected`), else in the `message_received` slot of the event whose data is `a`;
/// `resume_from` is the `Last-Event-ID` of the first request. Returns the events seen
/// (`type:data:id`) and the `Last-Event-ID` the reconnect sent.
fn resumed_after_a_user_id(
    first: impl Fn() -> Reply + Send + Sync + 'static,
    resume_from: Option<&str>,
    flush: bool,
    in_connected: bool,
) -> (Vec<String>, Option<String>) {
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(move |_, n| {
        if n == 0 {
            first()
        } else {
            Reply::BytesThenClose(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(600)));
    sse.set_flush_unterminated_event(flush);
    let rec = record(&sse);
    let weak = Rc::downgrade(&sse);
    if in_connected {
        sse.connected
            .connect(move |_| weak.upgrade().unwrap().set_last_event_id("3"))
            .release();
    } else {
        sse.message_received
            .connect(move |event| {
                if event.data() == "a" {
                    weak.upgrade().unwrap().set_last_event_id("3");
                }
            })
            .release();
    }
    let mut request = HttpRequest::get(&server.url("/s")).unwrap();
    if let Some(id) = resume_from {
        request.set_header("Last-Event-ID", id);
    }
    sse.connect(request);
    assert!(run_until(&mut ev, Duration::from_secs(10), || server
        .requests()
        .len()
        == 2));
    sse.disconnect();
    let events = rec.events.borrow().clone();
    let resumed = server.requests()[1]
        .header("last-event-id")
        .map(str::to_owned);
    (events, resumed)
}

/// `set_last_event_id` from the other places a user calls it (review, twentieth round): from
/// the `connected` slot (before any event: every `id` the stream then commits wins, a repeat of
/// the ID it resumed from too), across a `retry`-only block, twice, and with the final block
/// flushed at the stream's end (`set_flush_unterminated_event`): a flushed block's `id` is one
/// the stream sent after the call; a flushed block without one leaves the call's ID.
#[test]
fn set_last_event_id_from_connected_across_retry_and_before_a_flushed_final_event() {
    // (stream after the head, flush, call in `connected`, resumed ID)
    let cases: [(&str, bool, bool, &str); 9] = [
        ("data: a\n\n", false, true, "3"),
        ("id: 1\ndata: a\n\n", false, true, "1"),
        ("id: 9\n\ndata: a\n\n", false, true, "9"),
        (
            "id: 7\ndata: a\n\nretry: 20\n\ndata: b\n\n",
            false,
            false,
            "3",
        ),
        (
            "id: 7\ndata: a\n\nretry: 20\n\nid: 7\ndata: b\n\n",
            false,
            false,
            "7",
        ),
        (
            "id: 7\ndata: a\n\nretry: 20\nid: 7\n\ndata: b\n\n",
            false,
            false,
            "7",
        ),
        ("id: 7\ndata: a\n\nid: 7\ndata: b", true, false, "7"),
        ("id: 7\ndata: a\n\ndata: b", true, false, "3"),
        ("id: 7\ndata: a\n\nid: 7\ndata: b", false, false, "3"),
    ];
    for (stream, flush, in_connected, expected) in cases {
        // Whole, then closed: an orderly end, so a flushed final block is delivered.
        let mut reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nretry: 10\n".to_vec();
        reply.extend_from_slice(stream.as_bytes());
        let (events, resumed) = resumed_after_a_user_id(
            move || Reply::BytesThenClose(reply.clone()),
            Some("1"),
            flush,
            in_connected,
        );
        assert_eq!(
            resumed.as_deref(),
            Some(expected),
            "stream {stream:?} (flush {flush}, call in connected {in_connected}); events {events:?}"
        );
    }
}
