//! An `HttpClient` that carries an event stream and ordinary requests at once keeps the stream's
//! pool of event buffers across those requests' reads (counted by a global allocator wrapper
//! per thread, as in `sse_allocations.rs`).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use counting_alloc::allocations;
use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpRequest};
use kdnet::network::sse::SseClient;
use support::{Reply, ScriptServer, accept_event_stream, get_text, ok_response, run_until, wait};

/// Events per burst of the stream.
const BURST: usize = 100;

/// A stream sent in bursts of [`BURST`] events, each when the test says so. Between bursts the
/// same `HttpClient` fetches a plain response from another server. Every read of that response
/// took the client's spare event batch (the pool whose event buffers each delivery reuses) and
/// dropped it, so the next burst allocated its events' buffers anew: about one allocation per
/// event. Now a burst after the first few allocates only what the plain request itself does.
#[test]
fn plain_requests_between_deliveries_keep_the_streams_event_pool() {
    const CYCLES: usize = 8;
    const WARM: usize = 3;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, bursts) = mpsc::channel::<usize>();
    std::thread::spawn(move || {
        let mut stream = accept_event_stream(&listener);
        while let Ok(cycle) = bursts.recv() {
            let mut burst = String::new();
            for n in 0..BURST {
                burst.push_str(&format!(
                    "event: delta\ndata: {{\"cycle\":{cycle},\"n\":{n},\"text\":\"some words here\"}}\n\n"
                ));
            }
            if stream.write_all(burst.as_bytes()).is_err() {
                return;
            }
        }
    });
    let plain = ScriptServer::start(|_, _| Reply::Bytes(ok_response("plain", "")));

    let mut event_loop = EventLoop::new().unwrap();
    let http = HttpClient::new().unwrap();
    let sse = SseClient::with_http_client(Rc::clone(&http));
    let seen = Rc::new(Cell::new(0usize));
    let s = seen.clone();
    sse.message_received
        .connect(move |_| s.set(s.get() + 1))
        .release();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let e = errors.clone();
    sse.error
        .connect(move |err| e.borrow_mut().push(err.to_string()))
        .release();
    sse.connect(HttpRequest::get(&format!("http://{addr}/stream")).unwrap());

    let mut per_cycle = Vec::new();
    for cycle in 0..CYCLES {
        let before = allocations();
        go.send(cycle).unwrap();
        assert!(
            run_until(&mut event_loop, Duration::from_secs(20), || seen.get()
                >= BURST * (cycle + 1)
                || !errors.borrow().is_empty()),
            "burst {cycle} did not arrive"
        );
        assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
        let response = wait(&mut event_loop, &get_text(&http, &plain.url("/plain"))).unwrap();
        assert_eq!(response.text(), "plain");
        per_cycle.push(allocations() - before);
    }
    sse.disconnect();
    assert_eq!(seen.get(), BURST * CYCLES);
    // A plain request costs a few allocations (its response, the callback); events allocating
    // their buffers again would be about one per event.
    assert!(
        per_cycle[WARM..].iter().all(|&n| n < BURST / 2),
        "allocations per cycle of {BURST} events and one plain request: {per_cycle:?}"
    );
}
