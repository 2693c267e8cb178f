//! Review of the SSE client: each test shows one defect found in review (loopback servers only).

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{ReadyState, SseClient, SseError};
use support::{Reply, ScriptServer, run_until};

fn stream(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
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

/// Issue: "Any other status ... fails for good: error (with the status ...), state Closed, no
/// reconnect." A 404 whose error body is cut short by the server (a very common way for a proxy
/// to answer) is treated as a network error instead: the client reconnects again and again.
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

/// The same root cause, other face: a 503 whose (chunked) error body never ends leaves the client
/// in `Connecting` with no error at all, although the status was known at once.
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

/// `set_last_event_id` documents "Sets the event ID to resume from (sent with the next connection
/// when non-empty)". Called while a request is in flight (e.g. right after `connect`), it is lost:
/// the parser lent to the request hands back its own (empty) ID when the connection ends.
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

/// A valid event ID (the spec allows anything but NUL, CR and LF) holding another control
/// character cannot be sent back: the request encoder refuses the `Last-Event-ID` value, and the
/// client fails every reconnect, forever, never reaching the server again.
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

/// With `set_flush_unterminated_event(true)`, a slot that calls `connect()` from inside the
/// flushed final event gets its new connection orphaned: `on_end` clears `current` after the
/// flush, so the new request's head and events are ignored and a reconnect timer starts a
/// third request later.
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
