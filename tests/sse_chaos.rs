//! Fault injection: an SseClient receives 10,000 events with IDs through a chaos proxy that cuts
//! connections at arbitrary byte offsets, stalls, and splits writes into 1-byte segments, from a
//! server that resumes after Last-Event-ID. Nothing may be lost or duplicated.

mod support;

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::SseClient;
use support::run_until;

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
                let mut last = 0u64;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("last-event-id:") {
                        last = v.trim().parse().unwrap_or(0);
                    }
                }
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

/// xorshift, seeded: the chaos plan is the same on every run.
struct Plan(u64);
impl Plan {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Forwards to `upstream`, cutting the downstream after a planned number of bytes (reset or
/// clean close), sometimes stalling, sometimes writing in 1-byte segments.
fn chaos_proxy(upstream: std::net::SocketAddr, cuts: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut plan = Plan(0x9E37_79B9_7F4A_7C15);
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
            });
            // Most connections are cut somewhere in the first 40 KB; every 8th runs to the end.
            let cut_at = if plan.next(8) == 0 {
                u64::MAX
            } else {
                1 + plan.next(40_000)
            };
            let one_byte = plan.next(4) == 0;
            let stall = plan.next(5) == 0;
            let reset = plan.next(2) == 0;
            if cut_at != u64::MAX {
                cuts.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut buf = [0u8; 8192];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let take = (n as u64).min(cut_at - sent) as usize;
                    let piece = &buf[..take];
                    let ok = if one_byte && sent < 2000 {
                        piece.iter().all(|b| client.write_all(&[*b]).is_ok())
                    } else {
                        client.write_all(piece).is_ok()
                    };
                    sent += take as u64;
                    if !ok || sent >= cut_at {
                        break;
                    }
                    if stall && sent > 1000 && sent < 9000 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                if reset {
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                }
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn ten_thousand_events_through_cuts_arrive_once_each_in_order() {
    let mut ev = EventLoop::new().unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let proxy = chaos_proxy(resuming_server(), cuts.clone());
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
    sse.connect(HttpRequest::get(&format!("http://{proxy}/stream")).unwrap());
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
    let cut = cuts.load(Ordering::SeqCst);
    assert!(cut >= 5, "the plan cut only {cut} connections");
    // Every event arrived although `cut` connections broke: the stream was re-opened many times.
    assert!(
        reconnects.get() >= 5,
        "only {} opens for {cut} cuts",
        reconnects.get()
    );
    eprintln!("{cut} cuts, {} opens", reconnects.get());
}
