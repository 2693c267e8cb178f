//! Workload 3: many concurrent SSE streams on one thread (1,000 and 5,000), each receiving one
//! ~100-byte event per second.
//!
//! Every run uses two child processes of this binary, so that nothing but the measured client
//! is in the measured process and every run starts from fresh ports:
//! - `server`: one mio thread accepting the connections; after a stream's request head it sends
//!   `200 text/event-stream`, then one event per connection per second, spread evenly across the
//!   second (every 10 ms a hundredth of the streams gets its event).
//! - `client SUBJECT N PORT`: opens N streams on one thread (kdnet: N `SseClient`s of one
//!   `HttpClient` on one `EventLoop`; peers: N tasks on one current-thread tokio runtime), waits
//!   until every stream has received at least 2 events, then reports
//!   (RSS after − RSS before opening the streams) / N, and the process CPU time
//!   (`getrusage`) over a 5 s window divided by the events received in it. A second memory row
//!   counts only anonymous memory (`RssAnon`): the code and libraries that opening streams
//!   pages in from their files for the first time are a one-off cost, not a per-stream one.
//!
//! Reps: `W3_REPS`, else min(`COMPARE_REPS`, 3) (each run takes ~8 s).

mod common_net;

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common_net::{SelfChild, cpu_time, median_of_samples};
use kdnet_compare::{Better, Row, reps, rss_anon_kib, rss_kib};

const STREAM_COUNTS: [usize; 2] = [1_000, 5_000];
const MIN_EVENTS_PER_STREAM: u32 = 2;
const WINDOW: Duration = Duration::from_secs(5);
const ESTABLISH_LIMIT: Duration = Duration::from_secs(60);
const SUBJECTS: [&str; 4] = [
    "kdnet",
    "reqwest-eventsource",
    "eventsource-client",
    MIO_REFERENCE,
];
/// Reference: the floor of this design (one mio loop, one shared read buffer, no parsing).
const MIO_REFERENCE: &str = "mio+memchr floor";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => return serve(),
        Some("client") => {
            let n: usize = args[2].parse().expect("stream count");
            let port: u16 = args[3].parse().expect("port");
            return client(&args[1], n, port);
        }
        _ => {}
    }
    let w3_reps = std::env::var("W3_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| reps().min(3));
    let only: Option<String> = std::env::var("W3_ONLY").ok();
    let counts: Vec<usize> = std::env::var("W3_COUNTS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|c| c.parse().expect("W3_COUNTS"))
                .collect()
        })
        .unwrap_or(STREAM_COUNTS.to_vec());
    eprintln!("w3: {w3_reps} reps per figure, window {WINDOW:?}");
    let subjects: Vec<&str> = SUBJECTS
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == *s))
        .collect();
    for &n in &counts {
        // Subjects take turns in every repetition (load from other processes hits all alike).
        let mut kib = vec![Vec::new(); subjects.len()];
        let mut anon_kib = vec![Vec::new(); subjects.len()];
        let mut cpu_us = vec![Vec::new(); subjects.len()];
        for _ in 0..w3_reps {
            for (i, subject) in subjects.iter().enumerate() {
                let (k, a, c) = run_once(subject, n);
                kib[i].push(k);
                anon_kib[i].push(a);
                cpu_us[i].push(c);
            }
        }
        for (i, subject) in subjects.iter().enumerate() {
            let (kib, cpu_us) = (median_of_samples(&kib[i]), median_of_samples(&cpu_us[i]));
            let anon_kib = median_of_samples(&anon_kib[i]);
            eprintln!(
                "w3: {subject} N={n}: {kib:.2} KiB/stream ({anon_kib:.2} anonymous), \
                 {cpu_us:.2} µs CPU/event"
            );
            let workload = format!("3 many streams N={n}");
            Row::new(
                &format!("{workload}: RSS/stream"),
                subject,
                kib,
                "KiB",
                Better::Lower,
            )
            .emit();
            Row::new(
                &format!("{workload}: anonymous RSS/stream"),
                subject,
                anon_kib,
                "KiB",
                Better::Lower,
            )
            .emit();
            Row::new(
                &format!("{workload}: CPU/event"),
                subject,
                cpu_us,
                "µs",
                Better::Lower,
            )
            .emit();
        }
    }
}

/// One client run against a fresh server: (KiB per stream, anonymous KiB per stream, µs CPU per
/// event).
fn run_once(subject: &str, n: usize) -> (f64, f64, f64) {
    let mut server = SelfChild::spawn(&["server"]);
    let port = server.read_line();
    let mut client = SelfChild::spawn(&["client", subject, &n.to_string(), &port]);
    let line = loop {
        let line = client.read_line();
        if line.starts_with("RESULT") {
            break line;
        }
    };
    client.finish();
    server.finish();
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().expect("RESULT field"))
        .collect();
    let [
        rss_before,
        rss_after,
        events,
        cpu_ns,
        wall_ns,
        anon_before,
        anon_after,
    ] = fields[..]
    else {
        panic!("w3: bad RESULT line {line:?}");
    };
    // Every stream gets one event per second: the window must have seen (nearly) all of them.
    let expected = n as f64 * wall_ns / 1e9;
    assert!(
        events >= 0.95 * expected && events <= 1.05 * expected + n as f64,
        "w3: {subject} N={n}: {events} events in the window, expected about {expected:.0}"
    );
    let kib = (rss_after - rss_before) / n as f64;
    let anon_kib = (anon_after - anon_before) / n as f64;
    let cpu_us = cpu_ns / events / 1e3;
    eprintln!(
        "w3:   {subject} N={n}: RSS {rss_before} -> {rss_after} KiB (anonymous {anon_before} -> \
         {anon_after}), {events} events, {:.1} ms CPU",
        cpu_ns / 1e6
    );
    (kib, anon_kib, cpu_us)
}

// ---- server (child process) --------------------------------------------------------------------

struct ServerConn {
    stream: mio::net::TcpStream,
    head: Vec<u8>,
    streaming: bool,
    pending: Vec<u8>,
    seq: u64,
}

fn serve() {
    use mio::{Events, Interest, Poll, Token};

    common_net::exit_when_stdin_closes();
    common_net::raise_nofile_limit();
    let mut poll = Poll::new().expect("poll");
    let mut listener = common_net::deep_backlog_listener(8192);
    poll.registry()
        .register(&mut listener, Token(0), Interest::READABLE)
        .expect("register");
    println!("{}", listener.local_addr().expect("addr").port());
    std::io::stdout().flush().expect("flush");

    const TICKS: u64 = 100;
    let tick = Duration::from_millis(1000 / TICKS);
    let mut conns: Vec<Option<ServerConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let mut next_tick = 0u64;
    loop {
        let deadline = start + tick * next_tick as u32;
        let timeout = deadline.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(timeout)).expect("poll");
        for event in events.iter() {
            if event.token() == Token(0) {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry()
                                .register(&mut stream, Token(slot + 1), Interest::READABLE)
                                .expect("register conn");
                            conns[slot] = Some(ServerConn {
                                stream,
                                head: Vec::new(),
                                streaming: false,
                                pending: Vec::new(),
                                seq: 0,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                continue;
            }
            let slot = event.token().0 - 1;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            let mut closed = false;
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) if !conn.streaming => {
                        conn.head.extend_from_slice(&buf[..n]);
                        if memchr::memmem::find(&conn.head, b"\r\n\r\n").is_some() {
                            conn.streaming = true;
                            conn.head = Vec::new();
                            conn.pending
                                .extend_from_slice(common_net::SSE_RESPONSE_HEAD);
                            closed |= !flush(conn);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                let mut conn = conns[slot].take().expect("conn");
                let _ = poll.registry().deregister(&mut conn.stream);
                free.push(slot);
            }
        }
        // Tick: the streams whose slot falls on this hundredth of the second get their event.
        while Instant::now() >= start + tick * next_tick as u32 {
            let phase = (next_tick % TICKS) as usize;
            for slot in (phase..conns.len()).step_by(TICKS as usize) {
                let Some(conn) = conns[slot].as_mut() else {
                    continue;
                };
                if !conn.streaming {
                    continue;
                }
                conn.seq += 1;
                write!(
                    conn.pending,
                    "id: {}\nevent: tick\ndata: {{\"stream\":{slot},\"seq\":{},\"note\":\"one per second\"}}\n\n",
                    conn.seq, conn.seq
                )
                .expect("format event");
                if !flush(conn) {
                    let mut conn = conns[slot].take().expect("conn");
                    let _ = poll.registry().deregister(&mut conn.stream);
                    free.push(slot);
                }
            }
            next_tick += 1;
        }
    }
}

/// Writes what is pending; false if the connection is gone. (A stream that receives 100 bytes a
/// second never fills a socket buffer; anything left over waits for the next event.)
fn flush(conn: &mut ServerConn) -> bool {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

// ---- client (child process) --------------------------------------------------------------------

/// Per-stream event counters.
type Counts = Rc<Vec<Cell<u32>>>;

fn all_streams_warm(counts: &Counts) -> bool {
    counts.iter().all(|c| c.get() >= MIN_EVENTS_PER_STREAM)
}

fn total(counts: &Counts) -> u64 {
    counts.iter().map(|c| u64::from(c.get())).sum()
}

/// Resident memory in KiB: all of it (`VmRSS`, the headline figure) and its anonymous part
/// (`RssAnon`: without the program's code and libraries, paged in from their files once
/// whatever the number of streams).
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
}

fn rss_sample() -> Rss {
    Rss {
        total: rss_kib(),
        anon: rss_anon_kib(),
    }
}

fn report(rss_before: Rss, rss_after: Rss, events: u64, cpu: Duration, wall: Duration) {
    println!(
        "RESULT {} {} {events} {} {} {} {}",
        rss_before.total,
        rss_after.total,
        cpu.as_nanos(),
        wall.as_nanos(),
        rss_before.anon,
        rss_after.anon,
    );
    std::io::stdout().flush().expect("flush");
    // Skip tearing N streams down: the parent has what it needs.
    std::process::exit(0);
}

fn client(subject: &str, n: usize, port: u16) {
    common_net::raise_nofile_limit();
    let url = format!("http://127.0.0.1:{port}/events");
    match subject {
        "kdnet" => client_kdnet(&url, n),
        "reqwest-eventsource" => client_reqwest_eventsource(&url, n),
        "eventsource-client" => client_eventsource_client(&url, n),
        MIO_REFERENCE => client_mio(port, n),
        other => panic!("unknown subject {other}"),
    }
}

fn client_kdnet(url: &str, n: usize) {
    use kdnet::network::http::{HttpClient, HttpRequest};
    use kdnet::{EventLoop, Timer};

    let mut event_loop = EventLoop::new().expect("event loop");
    let http = HttpClient::new().expect("http client");
    // All N streams go to one host: allow N connections to it (the default pool allows a few).
    http.update_session(|s| s.set_max_connections_per_host(n));
    let counts: Counts = Rc::new((0..n).map(|_| Cell::new(0)).collect());
    let rss_before = rss_sample();

    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let sse = http.create_sse_client();
        let counts = counts.clone();
        sse.message_received
            .connect(move |_| counts[i].set(counts[i].get() + 1))
            .release();
        sse.error
            .connect(|e| panic!("w3: kdnet stream error: {e}"))
            .release();
        sse.connect(HttpRequest::new(url).expect("url"));
        streams.push(sse);
    }
    let started = Instant::now();
    let handle = event_loop.handle();
    let watch = counts.clone();
    let checker = Timer::create_recurring(Duration::from_millis(100), move || {
        if all_streams_warm(&watch) {
            handle.quit();
        }
        assert!(
            started.elapsed() < ESTABLISH_LIMIT,
            "w3: kdnet streams not all warm in time"
        );
    })
    .expect("timer");
    event_loop.run();
    drop(checker);
    let rss_after = rss_sample();

    let handle = event_loop.handle();
    let (events0, cpu0, t0) = (total(&counts), cpu_time(), Instant::now());
    let _stop = Timer::create_timeout(WINDOW, move || handle.quit()).expect("timer");
    event_loop.run();
    let (events, cpu, wall) = (total(&counts) - events0, cpu_time() - cpu0, t0.elapsed());
    report(rss_before, rss_after, events, cpu, wall);
    drop(streams);
}

/// Runs `open(i)` as one local task per stream, then the warm-up and measurement phases.
async fn tokio_phases<F>(n: usize, counts: Counts, name: &'static str, open: impl Fn(usize) -> F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    let rss_before = rss_sample();
    for i in 0..n {
        tokio::task::spawn_local(open(i));
    }
    let started = Instant::now();
    while !all_streams_warm(&counts) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < ESTABLISH_LIMIT,
            "w3: {name} streams not all warm in time"
        );
    }
    let rss_after = rss_sample();
    let (events0, cpu0, t0) = (total(&counts), cpu_time(), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (events, cpu, wall) = (total(&counts) - events0, cpu_time() - cpu0, t0.elapsed());
    report(rss_before, rss_after, events, cpu, wall);
}

fn client_reqwest_eventsource(url: &str, n: usize) {
    use futures_util::StreamExt;
    use reqwest_eventsource::{Event, EventSource, retry::Never};

    let runtime = common_net::current_thread_runtime();
    let local = tokio::task::LocalSet::new();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    let counts: Counts = Rc::new((0..n).map(|_| Cell::new(0)).collect());
    let open = |i: usize| {
        let (client, counts, url) = (client.clone(), counts.clone(), url.to_owned());
        async move {
            let mut source = EventSource::new(client.get(&url)).expect("event source");
            source.set_retry_policy(Box::new(Never));
            while let Some(item) = source.next().await {
                match item {
                    Ok(Event::Open) => {}
                    Ok(Event::Message(_)) => counts[i].set(counts[i].get() + 1),
                    Err(e) => panic!("w3: reqwest-eventsource stream error: {e}"),
                }
            }
        }
    };
    local.block_on(
        &runtime,
        tokio_phases(n, counts.clone(), "reqwest-eventsource", open),
    );
}

fn client_eventsource_client(url: &str, n: usize) {
    use eventsource_client::{Client, ClientBuilder, ReconnectOptions, SSE};
    use futures_util::StreamExt;
    use launchdarkly_sdk_transport::HyperTransport;

    let runtime = common_net::current_thread_runtime();
    let local = tokio::task::LocalSet::new();
    let counts: Counts = Rc::new((0..n).map(|_| Cell::new(0)).collect());
    local.block_on(&runtime, async {
        // One transport (one hyper connection pool) shared by all streams.
        let transport = HyperTransport::builder()
            .disable_proxy()
            .build_http()
            .expect("transport");
        let open = |i: usize| {
            let (transport, counts, url) = (transport.clone(), counts.clone(), url.to_owned());
            async move {
                let client = ClientBuilder::for_url(&url)
                    .expect("url")
                    .reconnect(ReconnectOptions::reconnect(false).build())
                    .build_with_transport(transport);
                let mut stream = client.stream();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(SSE::Event(_)) => counts[i].set(counts[i].get() + 1),
                        Ok(SSE::Connected(_) | SSE::Comment(_)) => {}
                        Err(e) => panic!("w3: eventsource-client stream error: {e:?}"),
                    }
                }
            }
        };
        tokio_phases(n, counts.clone(), "eventsource-client", open).await;
    });
}

/// Reference client: N mio sockets, one shared 64 KiB read buffer, events counted as `\n\n`
/// (only the event terminator; no field parsing). A read shorter than the buffer is taken as
/// "drained" (as tokio does), so a one-event wake-up costs one `recv`.
fn client_mio(port: u16, n: usize) {
    use mio::{Events, Interest, Poll, Token};

    struct Stream {
        socket: mio::net::TcpStream,
        in_body: bool,
        last_was_lf: bool,
    }

    let mut poll = Poll::new().expect("poll");
    let counts: Counts = Rc::new((0..n).map(|_| Cell::new(0)).collect());
    let rss_before = rss_sample();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut streams: Vec<Stream> = (0..n)
        .map(|i| {
            let mut socket = mio::net::TcpStream::connect(addr).expect("connect");
            poll.registry()
                .register(
                    &mut socket,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register");
            Stream {
                socket,
                in_body: false,
                last_was_lf: false,
            }
        })
        .collect();
    let request = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n";
    let mut sent = vec![false; n];
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut phase_end: Option<Instant> = None;
    let started = Instant::now();
    let mut measure: Option<(u64, Duration, Instant)> = None;
    let mut rss_after = Rss::default();
    loop {
        let timeout = phase_end.map_or(Duration::from_millis(100), |end| {
            end.saturating_duration_since(Instant::now())
        });
        poll.poll(&mut events, Some(timeout)).expect("poll");
        for event in events.iter() {
            let i = event.token().0;
            let stream = &mut streams[i];
            if event.is_writable() && !sent[i] {
                // Connected: a 70-byte request fits an empty send buffer.
                if stream.socket.peer_addr().is_ok() {
                    let written = stream.socket.write(request).expect("write request");
                    assert_eq!(written, request.len(), "short write");
                    sent[i] = true;
                }
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                let got = match stream.socket.read(&mut buf) {
                    Ok(0) => panic!("w3: reference stream {i} closed"),
                    Ok(got) => got,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("w3: reference read: {e}"),
                };
                let mut chunk = &buf[..got];
                if !stream.in_body {
                    // The head arrives in one piece on loopback (checked).
                    let end = memchr::memmem::find(chunk, b"\r\n\r\n").expect("whole head");
                    chunk = &chunk[end + 4..];
                    stream.in_body = true;
                }
                if !chunk.is_empty() {
                    let mut found = memchr::memmem::find_iter(chunk, b"\n\n").count() as u32;
                    if stream.last_was_lf && chunk[0] == b'\n' {
                        found += 1;
                    }
                    stream.last_was_lf = chunk[chunk.len() - 1] == b'\n';
                    counts[i].set(counts[i].get() + found);
                }
                if got < buf.len() {
                    break;
                }
            }
        }
        match (measure, phase_end) {
            (None, None) => {
                if all_streams_warm(&counts) {
                    rss_after = rss_sample();
                    measure = Some((total(&counts), cpu_time(), Instant::now()));
                    phase_end = Some(Instant::now() + WINDOW);
                }
                assert!(
                    started.elapsed() < ESTABLISH_LIMIT,
                    "w3: reference not warm in time"
                );
            }
            (Some((events0, cpu0, t0)), Some(end)) if Instant::now() >= end => {
                let (events, cpu, wall) =
                    (total(&counts) - events0, cpu_time() - cpu0, t0.elapsed());
                report(rss_before, rss_after, events, cpu, wall);
            }
            _ => {}
        }
    }
}
