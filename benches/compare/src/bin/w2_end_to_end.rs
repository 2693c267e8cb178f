//! Workload 2: one SSE stream end to end over loopback.
//!
//! A server in a child process (this binary, `server` argument; so its CPU time is never charged
//! to the client) answers each GET with `200 text/event-stream` and then a pre-built stream of
//! 200,000 OpenAI-like events (~170 bytes each, with ids) as fast as the socket takes it, then
//! closes. In this process each subject opens the stream, counts the events (and sums their data
//! lengths, checked against the source) until the stream ends. Figures per subject: events/s (wall
//! time from issuing the request to the end of the stream) and client CPU ns per event
//! (`getrusage(RUSAGE_SELF)` of this process, which holds only the client).

mod common_net;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common_net::{SelfChild, cpu_time};
use futures_util::StreamExt;
use kdnet_compare::{Better, Row, reps};

const EVENTS: usize = 200_000;
const WORKLOAD: &str = "2 end-to-end 200k events";

/// What one client run saw.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    events: u64,
    data_bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("server") {
        return serve();
    }
    let only: Option<String> = std::env::var("W2_ONLY").ok();
    let (_, data_total) = common_net::openai_stream(EVENTS);
    let expected = Tally {
        events: EVENTS as u64,
        data_bytes: data_total,
    };
    let mut server = SelfChild::spawn(&["server"]);
    let port: u16 = server.read_line().parse().expect("server port");
    let url = format!("http://127.0.0.1:{port}/stream");
    eprintln!("w2: server on port {port}; {} reps", reps());

    type Subject = (&'static str, fn(&str, u16) -> Tally);
    let subjects: [Subject; 4] = [
        ("kdnet", run_kdnet),
        ("reqwest-eventsource", run_reqwest_eventsource),
        ("eventsource-client", run_eventsource_client),
        ("raw read+memchr", run_raw),
    ];
    let chosen: Vec<Subject> = subjects
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    // One run: (events/s, client CPU ns per event).
    let measure = |name: &str, run: fn(&str, u16) -> Tally| {
        let threads_before = common_net::thread_count();
        let (cpu0, t0) = (cpu_time(), Instant::now());
        let tally = run(&url, port);
        let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
        check(name, tally, expected);
        let threads_after = common_net::thread_count();
        if threads_after != threads_before {
            eprintln!("w2: {name}: thread count {threads_before} -> {threads_after}");
        }
        (
            EVENTS as f64 / wall.as_secs_f64(),
            cpu.as_nanos() as f64 / EVENTS as f64,
        )
    };
    let medians = common_net::take_turns(&chosen, measure);
    for (i, (name, _)) in chosen.iter().enumerate() {
        let (rate, ns) = medians[i];
        eprintln!(
            "w2: {name}: {:.3} M events/s, {ns:.0} ns CPU/event",
            rate / 1e6
        );
        Row::new(
            &format!("{WORKLOAD}: events/s"),
            name,
            rate,
            "events/s",
            Better::Higher,
        )
        .emit();
        Row::new(
            &format!("{WORKLOAD}: client CPU/event"),
            name,
            ns,
            "ns",
            Better::Lower,
        )
        .emit();
    }
    server.finish();
}

fn check(name: &str, mut got: Tally, expected: Tally) {
    if name == "raw read+memchr" {
        got.data_bytes = expected.data_bytes;
    }
    assert_eq!(
        got, expected,
        "w2: {name} did not receive the whole stream (got {got:?}, expected {expected:?})"
    );
}

// ---- server (child process) --------------------------------------------------------------------

fn serve() {
    common_net::exit_when_stdin_closes();
    let (bytes, _) = common_net::openai_stream(EVENTS);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr").port());
    std::io::stdout().flush().expect("flush");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if !common_net::read_request_head(&mut stream) {
            continue;
        }
        let _ = stream.write_all(common_net::SSE_RESPONSE_HEAD);
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Let the client see the end of stream before the socket goes away (no RST).
        let mut rest = [0u8; 1024];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
    }
}

// ---- subjects ----------------------------------------------------------------------------------

fn run_kdnet(url: &str, _port: u16) -> Tally {
    use kdnet::EventLoop;
    use kdnet::network::http::HttpRequest;
    use kdnet::network::sse::{ReadyState, SseClient};

    let mut event_loop = EventLoop::new().expect("event loop");
    let sse = SseClient::new().expect("sse client");
    let events = Rc::new(Cell::new(0u64));
    let data_bytes = Rc::new(Cell::new(0u64));
    {
        let (events, data_bytes) = (events.clone(), data_bytes.clone());
        sse.message_received
            .connect(move |event| {
                events.set(events.get() + 1);
                data_bytes.set(data_bytes.get() + event.data().len() as u64);
            })
            .release();
    }
    sse.error
        .connect(|error| panic!("w2: kdnet stream error: {error}"))
        .release();
    let handle = event_loop.handle();
    let weak = Rc::downgrade(&sse);
    // End of stream: the client would reconnect after its reconnection time; stop it instead.
    sse.disconnected
        .connect(move |_| {
            handle.quit();
            if let Some(sse) = weak.upgrade()
                && sse.ready_state() != ReadyState::Closed
            {
                sse.disconnect();
            }
        })
        .release();
    sse.connect(HttpRequest::new(url).expect("url"));
    event_loop.run();
    Tally {
        events: events.get(),
        data_bytes: data_bytes.get(),
    }
}

fn run_reqwest_eventsource(url: &str, _port: u16) -> Tally {
    use reqwest_eventsource::{Error, Event, EventSource, retry::Never};

    let runtime = common_net::current_thread_runtime();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    runtime.block_on(async {
        let mut source = EventSource::new(client.get(url)).expect("event source");
        source.set_retry_policy(Box::new(Never));
        let mut tally = Tally::default();
        while let Some(item) = source.next().await {
            match item {
                Ok(Event::Open) => {}
                Ok(Event::Message(message)) => {
                    tally.events += 1;
                    tally.data_bytes += message.data.len() as u64;
                }
                Err(Error::StreamEnded) => break,
                Err(e) => panic!("w2: reqwest-eventsource error: {e}"),
            }
        }
        source.close();
        tally
    })
}

fn run_eventsource_client(url: &str, _port: u16) -> Tally {
    use eventsource_client::{Client, ClientBuilder, Error, ReconnectOptions, SSE};
    use launchdarkly_sdk_transport::HyperTransport;

    let runtime = common_net::current_thread_runtime();
    runtime.block_on(async {
        let transport = HyperTransport::builder()
            .disable_proxy()
            .build_http()
            .expect("transport");
        let client = ClientBuilder::for_url(url)
            .expect("url")
            .reconnect(ReconnectOptions::reconnect(false).build())
            .build_with_transport(transport);
        let mut stream = client.stream();
        let mut tally = Tally::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(SSE::Event(event)) => {
                    tally.events += 1;
                    tally.data_bytes += event.data.len() as u64;
                }
                Ok(SSE::Connected(_) | SSE::Comment(_)) => {}
                // The server closed the stream; with reconnect off the stream ends next.
                Err(Error::Eof) => {}
                Err(e) => panic!("w2: eventsource-client error: {e:?}"),
            }
        }
        tally
    })
}

/// Reference: blocking read into 64 KiB, count `\n\n` with memchr (no event parsing at all).
fn run_raw(_url: &str, port: u16) -> Tally {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .expect("write request");
    let mut buf = vec![0u8; 64 * 1024];
    let mut in_body = false;
    let mut head = Vec::new();
    let mut last_was_lf = false;
    let mut events = 0u64;
    loop {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") else {
                continue;
            };
            let body_start = end + 4 - (head.len() - n);
            chunk = &buf[body_start..n];
            in_body = true;
        }
        if chunk.is_empty() {
            continue;
        }
        if last_was_lf && chunk[0] == b'\n' {
            events += 1;
        }
        events += memchr::memmem::find_iter(chunk, b"\n\n").count() as u64;
        last_was_lf = chunk[chunk.len() - 1] == b'\n';
    }
    // The reference parses no fields: only its event count is checked.
    Tally {
        events,
        data_bytes: 0,
    }
}
