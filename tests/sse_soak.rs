//! Soak: one SseClient receives 1,000,000 events from a loopback server, which ends the stream
//! once half-way so that the client reconnects and resumes with `Last-Event-ID`. Every event must
//! arrive exactly once, in order, with its own data, and the resident memory must stay flat: the
//! largest VmRSS sample (taken every 50,000 events) may exceed the sample at 100,000 events by at
//! most 8 MiB ([`RSS_GROWTH_BOUND`]); a leak of 10 bytes per event (9 MB over the remaining
//! 900,000 events) would break it.
//!
//! Ignored by default (it streams ~30 MB and takes seconds in release mode); run it with
//! `cargo test --release --test sse_soak -- --ignored --nocapture`.

mod support;

use std::cell::{Cell, RefCell};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::SseClient;
use support::{read_request_head, rss_bytes, run_until};

const EVENTS: u64 = 1_000_000;
/// The server ends the first connection after this event.
const HALF_WAY: u64 = EVENTS / 2;
const SAMPLE_EVERY: u64 = 50_000;
/// Largest sample minus the sample at 100,000 events.
const RSS_GROWTH_BOUND: u64 = 8 * 1024 * 1024;

/// Streams `id: n / data: event n` from Last-Event-ID + 1, up to [`HALF_WAY`] on a connection
/// without Last-Event-ID and up to [`EVENTS`] otherwise, then closes cleanly. Records each
/// connection's Last-Event-ID header.
fn server(seen: Arc<Mutex<Vec<Option<String>>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some(head) = read_request_head(&mut reader) else {
                    return;
                };
                let last: Option<String> = head.header("last-event-id").map(str::to_string);
                seen.lock().unwrap().push(last.clone());
                let from = last.as_deref().map_or(0, |v| v.parse::<u64>().unwrap()) + 1;
                let to = if last.is_none() { HALF_WAY } else { EVENTS };
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 10\n\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut batch = Vec::with_capacity(64 * 1024);
                for id in from..=to {
                    writeln!(batch, "id: {id}\ndata: event {id}\n").unwrap();
                    if batch.len() >= 60 * 1024 || id == to {
                        if stream.write_all(&batch).is_err() {
                            return;
                        }
                        batch.clear();
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
#[ignore = "soak: 1,000,000 events; run with `cargo test --release --test sse_soak -- --ignored`"]
fn a_million_events_arrive_once_in_order_across_a_resume_with_flat_memory() {
    let mut ev = EventLoop::new().unwrap();
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let addr = server(seen.clone());
    let sse = SseClient::new().unwrap();
    let received = Rc::new(Cell::new(0u64));
    let samples: Rc<RefCell<Vec<(u64, u64)>>> = Rc::default();
    let (r, s) = (received.clone(), samples.clone());
    sse.message_received
        .connect(move |e| {
            let expected = r.get() + 1;
            assert_eq!(
                e.last_event_id(),
                expected.to_string(),
                "event lost, duplicated or out of order"
            );
            assert_eq!(e.data(), format!("event {expected}"), "event body damaged");
            r.set(expected);
            if expected % SAMPLE_EVERY == 0 {
                s.borrow_mut()
                    .push((expected, rss_bytes().expect("VmRSS in /proc/self/status")));
            }
        })
        .release();
    let opens = Rc::new(Cell::new(0usize));
    let o = opens.clone();
    sse.connected.connect(move |_| o.set(o.get() + 1)).release();
    sse.error
        .connect(|e| panic!("unexpected stream error: {e}"))
        .release();

    let started = Instant::now();
    sse.connect(HttpRequest::get(&format!("http://{addr}/soak")).unwrap());
    assert!(
        run_until(&mut ev, Duration::from_secs(600), || received.get()
            == EVENTS),
        "stalled after {} events",
        received.get()
    );
    let took = started.elapsed();
    sse.disconnect();

    assert_eq!(received.get(), EVENTS);
    assert_eq!(opens.get(), 2, "one server-initiated reconnect");
    assert_eq!(
        seen.lock().unwrap()[..2],
        [None, Some(HALF_WAY.to_string())],
        "the second connection resumes after the last event of the first"
    );
    let samples = samples.borrow();
    assert_eq!(samples.len() as u64, EVENTS / SAMPLE_EVERY);
    let at_100k = samples.iter().find(|(n, _)| *n == 100_000).unwrap().1;
    let max = samples.iter().map(|(_, rss)| *rss).max().unwrap();
    eprintln!(
        "{EVENTS} events in {took:.2?} ({:.0} events/s)",
        EVENTS as f64 / took.as_secs_f64()
    );
    for (n, rss) in samples.iter() {
        eprintln!("  after {n:>7} events: VmRSS {:>6} KiB", rss / 1024);
    }
    assert!(
        max.saturating_sub(at_100k) <= RSS_GROWTH_BOUND,
        "RSS grew by {} KiB after 100,000 events (bound {} KiB)",
        (max - at_100k) / 1024,
        RSS_GROWTH_BOUND / 1024
    );
}
