//! Allocations per SSE event, counted by a global allocator wrapper per thread (tests run in
//! parallel threads): `SseParser::feed_borrowed` and a whole `SseClient` (read, parse, emit)
//! allocate nothing per event once warmed up; `feed` allocates each owned event's data.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
mod support;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use counting_alloc::{allocations, largest_allocation};
use kdnet::EventLoop;
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{SseClient, SseEventRef, SseParser};
use support::{accept_event_stream, read_request_head, run_until};

/// OpenAI-like events (type, single data line, short changing IDs) plus multi-line events, fed in
/// 4 KiB chunks so some events straddle chunks.
fn stream(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..events {
        out.extend_from_slice(
            format!(
                "event: response.output_text.delta\nid: {n}\ndata: {{\"sequence_number\":{n},\"delta\":\"Hel\"}}\n\n\
                 data: line one\ndata: line two {n}\n\n"
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn borrowed_parsing_allocates_nothing_per_event() {
    let input = stream(5_000);
    let mut parser = SseParser::new();
    let mut events = 0usize;
    let mut data_bytes = 0usize;
    let mut sink = |event: SseEventRef<'_>| {
        events += 1;
        data_bytes += event.data().len() + event.last_event_id().len() + event.event_type().len();
    };
    // The first pass grows the parser's buffers to what this stream needs; the second must not
    // allocate at all.
    let mut allocations_per_pass = Vec::new();
    for _ in 0..2 {
        let before = allocations();
        for chunk in input.chunks(4096) {
            parser.feed_borrowed(chunk, &mut sink).unwrap();
        }
        allocations_per_pass.push(allocations() - before);
    }
    assert_eq!(events, 2 * 10_000);
    assert!(data_bytes > 0);
    assert!(allocations_per_pass[0] <= 16, "{allocations_per_pass:?}");
    assert_eq!(
        allocations_per_pass[1], 0,
        "allocations while parsing 10,000 events again"
    );
}

#[test]
fn owned_parsing_allocates_only_the_event_data() {
    // The counterpart, so the counter is known to work: one allocation per owned event (its data);
    // IDs of up to 23 bytes are stored inline and the repeated type is shared.
    let measured = stream(1_000);
    let mut parser = SseParser::new();
    let mut events = 0usize;
    let before = allocations();
    for chunk in measured.chunks(4096) {
        parser.feed(chunk, &mut |_event| events += 1).unwrap();
    }
    let allocations = allocations() - before;
    assert_eq!(events, 2_000);
    // A few more for the first type and the parser's buffers.
    assert!(
        (2_000..=2_000 + 16).contains(&allocations),
        "{allocations} allocations for 2,000 owned events"
    );
}

#[test]
fn a_streaming_sse_client_allocates_nothing_per_event() {
    // 40,000 OpenAI-like events with changing IDs from a loopback server, in writes of 100
    // events. Allocations on this (the loop's) thread are counted from the 5,000th event to the
    // last: reads, parsing, batching and the emit to a slot must not allocate per event (the
    // server thread's allocations are not counted).
    const EVENTS: usize = 40_000;
    const WARM: usize = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut stream = accept_event_stream(&listener);
        let mut burst = String::new();
        for n in 0..EVENTS {
            burst.push_str(&format!(
                "id: {n}\nevent: response.output_text.delta\ndata: {{\"sequence_number\":{n},\"delta\":\"Hel\"}}\n\n"
            ));
            if (n + 1) % 100 == 0 {
                stream.write_all(burst.as_bytes()).unwrap();
                burst.clear();
            }
        }
        // Keep the stream open until the client is done (it disconnects).
        std::thread::sleep(Duration::from_secs(30));
    });

    let mut event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    let seen = Rc::new(Cell::new(0usize));
    let at_warm: Rc<Cell<usize>> = Rc::default();
    let bytes = Rc::new(Cell::new(0usize));
    let (s, w, b) = (seen.clone(), at_warm.clone(), bytes.clone());
    sse.message_received
        .connect(move |event| {
            b.set(b.get() + event.data().len() + event.last_event_id().len());
            s.set(s.get() + 1);
            if s.get() == WARM {
                w.set(allocations());
            }
        })
        .release();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let e = errors.clone();
    sse.error
        .connect(move |err| e.borrow_mut().push(err.to_string()))
        .release();
    sse.connect(HttpRequest::get(&format!("http://{addr}/stream")).unwrap());
    assert!(run_until(&mut event_loop, Duration::from_secs(30), || seen
        .get()
        >= EVENTS
        || !errors.borrow().is_empty()));
    let allocated = allocations() - at_warm.get();
    sse.disconnect();
    assert!(errors.borrow().is_empty(), "{:?}", errors.borrow());
    assert_eq!(seen.get(), EVENTS);
    assert!(bytes.get() > 0);
    // Loop turns and timers may allocate now and then; per event would be 35,000 or more.
    assert!(
        allocated < (EVENTS - WARM) / 100,
        "{allocated} allocations for {} events",
        EVENTS - WARM
    );
}

/// An event stream whose response announces a (large) `Content-Length`: the body goes to the
/// parser as it arrives, so nothing is reserved for it. The client reserved the announced size
/// (up to 16 MiB) in a body buffer that a streamed response never fills.
#[test]
fn a_stream_announcing_its_length_reserves_no_body_buffer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        read_request_head(&mut reader).unwrap();
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                  Content-Length: 100000000\r\n\r\ndata: one\n\ndata: two\n\n",
            )
            .unwrap();
        std::thread::sleep(Duration::from_secs(30));
    });

    let mut event_loop = EventLoop::new().unwrap();
    let sse = SseClient::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    sse.message_received
        .connect(move |event| s.borrow_mut().push(event.data().to_owned()))
        .release();
    let largest_before = largest_allocation();
    sse.connect(HttpRequest::get(&format!("http://{addr}/stream")).unwrap());
    assert!(run_until(&mut event_loop, Duration::from_secs(20), || seen
        .borrow()
        .len()
        == 2));
    sse.disconnect();
    assert_eq!(*seen.borrow(), ["one", "two"]);
    let largest = largest_allocation();
    assert!(
        largest <= largest_before.max(1 << 20),
        "a {largest}-byte block for a stream of two events"
    );
}

/// `SseEvent`'s docs: an ID of up to 23 bytes is kept inline (no allocation even when it changes
/// with every event); a longer one, such as a UUID without dashes (32 bytes), is allocated once
/// per new ID.
#[test]
fn changing_ids_allocate_only_beyond_23_bytes() {
    fn allocations_for(id_len: usize) -> usize {
        let input: Vec<u8> = (0..1_000)
            .flat_map(|n| format!("id: {n:0id_len$}\ndata: x\n\n").into_bytes())
            .collect();
        let mut parser = SseParser::new();
        let mut sink = |_: SseEventRef<'_>| {};
        // Warm up the parser's buffers first.
        parser.feed_borrowed(&input, &mut sink).unwrap();
        let before = allocations();
        parser.feed_borrowed(&input, &mut sink).unwrap();
        allocations() - before
    }
    assert_eq!(allocations_for(23), 0);
    assert!(allocations_for(32) >= 1_000);
}
