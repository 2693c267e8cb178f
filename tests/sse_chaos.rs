//! Fault injection: an SseClient receives 10,000 events with IDs through a chaos proxy that cuts
//! connections at arbitrary byte offsets, stalls, and splits writes into 1-byte segments, from a
//! server that resumes after Last-Event-ID. Nothing may be lost or duplicated.

mod support;

use std::cell::RefCell;
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::HttpError;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{SseClient, SseError};
use support::chaos::{ChaosPlan, ChaosProxy};
use support::{read_request_head, run_until};

const EVENTS: u64 = 10_000;

/// Streams `id: n` events from Last-Event-ID + 1 to EVENTS, then ends the stream.
fn resuming_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some(head) = read_request_head(&mut reader) else {
                    return;
                };
                let last: u64 = head
                    .header("last-event-id")
                    .map_or(0, |v| v.parse().unwrap_or(0));
                let mut out =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 5\n\n"
                        .to_vec();
                for id in last + 1..=EVENTS {
                    out.extend_from_slice(
                        format!("id: {id}\ndata: event number {id}\n\n").as_bytes(),
                    );
                }
                let _ = stream.write_all(&out);
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn ten_thousand_events_through_cuts_arrive_once_each_in_order() {
    let mut ev = EventLoop::new().unwrap();
    // 7 in 8 connections cut in their first 40 KB (half by reset, half by clean close); a
    // quarter start with 1-byte writes, a fifth stall.
    let proxy = ChaosProxy::start(resuming_server(), ChaosPlan::default());
    let sse = SseClient::new().unwrap();
    sse.set_reconnection_time(Duration::from_millis(5));
    sse.set_max_reconnection_delay(Duration::from_millis(50));
    let ids: Rc<RefCell<Vec<u64>>> = Rc::default();
    let i = ids.clone();
    sse.message_received
        .connect(move |e| {
            let id: u64 = e.last_event_id().parse().unwrap();
            assert_eq!(e.data(), format!("event number {id}"), "event body damaged");
            i.borrow_mut().push(id);
        })
        .release();
    let reconnects = Rc::new(std::cell::Cell::new(0usize));
    let r = reconnects.clone();
    sse.connected.connect(move |_| r.set(r.get() + 1)).release();
    let reset_errors = Rc::new(std::cell::Cell::new(0usize));
    let re = reset_errors.clone();
    sse.error
        .connect(move |e| {
            assert!(
                !e.is_fatal(),
                "a cut must never end the stream for good: {e}"
            );
            if let SseError::Http(HttpError::Transport(t)) = e {
                if t.io_kind() == Some(std::io::ErrorKind::ConnectionReset) {
                    re.set(re.get() + 1);
                }
            }
        })
        .release();
    sse.connect(HttpRequest::get(&proxy.url("/stream")).unwrap());
    assert!(
        run_until(&mut ev, Duration::from_secs(120), || ids.borrow().last()
            == Some(&EVENTS)),
        "stalled after {} events",
        ids.borrow().len()
    );
    sse.disconnect();
    let ids = ids.borrow();
    let expected: Vec<u64> = (1..=EVENTS).collect();
    assert_eq!(ids.len(), expected.len(), "lost or duplicated events");
    assert!(*ids == expected, "events out of order or duplicated");
    let cut = proxy.counters.cuts();
    assert!(cut >= 5, "the plan cut only {cut} connections");
    let resets = proxy.counters.resets.load(Ordering::SeqCst);
    assert!(
        resets >= 1 && resets < cut,
        "{resets} of {cut} cuts were resets: both kinds must occur"
    );
    // Every event arrived although `cut` connections broke: the stream was re-opened many times.
    assert!(
        reconnects.get() >= 5,
        "only {} opens for {cut} cuts",
        reconnects.get()
    );
    // The proxy's resets reach the client as resets (no FIN before them).
    assert!(reset_errors.get() >= 1, "no reset was reported as one");
    eprintln!(
        "{cut} cuts ({resets} resets, {} reported), {} opens",
        reset_errors.get(),
        reconnects.get()
    );
}
