//! Fault injection for the HTTP client: 300 requests for bodies of known content (Content-Length,
//! chunked and close-delimited framing, 0 B to 100 KB) go through seeded chaos proxies that cut
//! connections at arbitrary byte offsets (reset, clean close or silent hang), stall and split
//! writes. Every request must either complete with the byte-exact body or fail with a typed error
//! naming the cause (reset, closed early, incomplete body, timeout) — never `Ok` with a truncated
//! body — and every request ends before its timeout plus a margin.
//!
//! A close-delimited body ends at a clean end of stream, so a clean close in the middle of one is
//! indistinguishable from its end; those bodies therefore go through a proxy whose cuts are all
//! resets, which the client must report as errors, not as the end of the body.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::TimeoutPhase;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use support::chaos::{ChaosPlan, ChaosProxy};
use support::{Reply, ScriptServer, pattern, run_until};

const REQUESTS: usize = 300;
const SIZES: [usize; 7] = [0, 1, 17, 1000, 4096, 30_000, 100_000];
const TIMEOUT: Duration = Duration::from_millis(1000);
/// Scheduling slack on a loaded 2-core machine; a hang would overshoot it by seconds.
const MARGIN: Duration = Duration::from_millis(1500);
const IN_FLIGHT: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Framing {
    Length,
    Chunked,
    Close,
}

impl Framing {
    fn name(self) -> &'static str {
        match self {
            Framing::Length => "length",
            Framing::Chunked => "chunked",
            Framing::Close => "close",
        }
    }

    fn parse(name: &str) -> Framing {
        match name {
            "length" => Framing::Length,
            "chunked" => Framing::Chunked,
            _ => Framing::Close,
        }
    }
}

/// The response for `/{framing}/{size}/{seed}`: `pattern(size, seed)` in that framing.
fn response(framing: Framing, size: usize, seed: u64) -> Reply {
    let body = pattern(size, seed);
    match framing {
        Framing::Length => {
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
            out.extend_from_slice(&body);
            Reply::Bytes(out)
        }
        Framing::Chunked => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            // Chunk sizes 1..=4096 drawn from the seed; every third one carries an extension.
            let sizes = pattern(size, seed ^ 0x5555);
            let mut at = 0;
            let mut i = 0;
            while at < size {
                let n = (1 + usize::from(sizes[at]) * 16).min(size - at);
                let ext = if i % 3 == 0 { ";note=x" } else { "" };
                out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                out.extend_from_slice(&body[at..at + n]);
                out.extend_from_slice(b"\r\n");
                at += n;
                i += 1;
            }
            out.extend_from_slice(b"0\r\n\r\n");
            Reply::Bytes(out)
        }
        Framing::Close => {
            let mut out = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            out.extend_from_slice(&body);
            Reply::BytesThenClose(out)
        }
    }
}

fn body_server() -> ScriptServer {
    ScriptServer::start(|req, _| {
        let path = req.line.split(' ').nth(1).unwrap_or("/");
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let [framing, size, seed] = parts[..] else {
            return Reply::Close;
        };
        response(
            Framing::parse(framing),
            size.parse().unwrap(),
            seed.parse().unwrap(),
        )
    })
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Complete,
    Reset,
    ClosedBeforeResponse,
    ClosedInHead,
    IncompleteBody,
    TimedOut,
}

/// Checks one result against the body it asked for; panics on anything but an exact body or an
/// error that names a cause the proxy can produce.
fn classify(
    framing: Framing,
    size: usize,
    seed: u64,
    result: &Result<HttpResponse, HttpError>,
) -> Outcome {
    let what = format!("{} body of {size} bytes (seed {seed})", framing.name());
    match result {
        Ok(response) => {
            assert_eq!(response.status(), 200, "{what}");
            let body = response.body();
            assert!(
                body.len() == size,
                "{what}: Ok with {} bytes — a truncated body reported as complete",
                body.len()
            );
            assert!(
                body[..] == pattern(size, seed)[..],
                "{what}: Ok with corrupted bytes"
            );
            Outcome::Complete
        }
        Err(HttpError::Transport(e))
            if matches!(
                e.io_kind(),
                Some(
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                )
            ) =>
        {
            Outcome::Reset
        }
        Err(HttpError::EmptyResponse) if framing != Framing::Close => Outcome::ClosedBeforeResponse,
        Err(HttpError::Protocol(reason))
            if framing != Framing::Close
                && reason.contains("closed in the middle of the response head") =>
        {
            Outcome::ClosedInHead
        }
        Err(HttpError::IncompleteBody { received, expected }) if framing != Framing::Close => {
            // A chunked body may be cut after its last data byte, in the chunk that ends it:
            // every byte came, but the body's end did not.
            assert!(
                *received < size as u64
                    || (framing == Framing::Chunked && *received == size as u64),
                "{what}: incomplete after {received} bytes"
            );
            if framing == Framing::Length {
                assert_eq!(*expected, Some(size as u64), "{what}");
            }
            Outcome::IncompleteBody
        }
        Err(HttpError::Timeout(TimeoutPhase::Total)) => Outcome::TimedOut,
        Err(e) => panic!("{what}: unexpected error {e:?} ({e})"),
    }
}

#[test]
fn every_request_through_cuts_is_byte_exact_or_a_typed_error_within_its_timeout() {
    let mut ev = EventLoop::new().unwrap();
    let server = body_server();
    // Content-Length and chunked (keep-alive, so one connection carries many responses): every
    // connection is cut in its first 150 KB; half of the cuts are resets, an eighth silent hangs,
    // the rest clean closes.
    let mixed = ChaosProxy::start(
        server.addr,
        ChaosPlan {
            seed: 0xC0FF_EE00_1234_5678,
            uncut_one_in: 0,
            max_cut_offset: 150_000,
            hang_one_in: 4,
            hang_for: TIMEOUT + MARGIN + Duration::from_secs(2),
            ..ChaosPlan::default()
        },
    );
    // Close-delimited (one response per connection): 3 in 4 connections cut in their first
    // 60 KB, every cut a reset.
    let resets_only = ChaosProxy::start(
        server.addr,
        ChaosPlan {
            seed: 0x0BAD_CAFE_8765_4321,
            uncut_one_in: 4,
            max_cut_offset: 60_000,
            reset_one_in: 1,
            ..ChaosPlan::default()
        },
    );
    let client = HttpClient::new().unwrap();
    let mut plan: VecDeque<(Framing, usize, u64)> = (0..REQUESTS)
        .map(|i| {
            let framing = [Framing::Length, Framing::Chunked, Framing::Close][i % 3];
            (framing, SIZES[(i / 3) % SIZES.len()], i as u64)
        })
        .collect();
    type Done = Rc<
        RefCell<
            Vec<(
                Framing,
                usize,
                u64,
                Duration,
                Result<HttpResponse, HttpError>,
            )>,
        >,
    >;
    let done: Done = Rc::default();
    let started = Instant::now();
    let mut sent = 0;
    while done.borrow().len() < REQUESTS {
        // Keep IN_FLIGHT requests running (within the pool's limit, so none waits in a queue while
        // its timeout runs).
        while sent - done.borrow().len() < IN_FLIGHT {
            let Some((framing, size, seed)) = plan.pop_front() else {
                break;
            };
            let proxy = if framing == Framing::Close {
                &resets_only
            } else {
                &mixed
            };
            let url = proxy.url(&format!("/{}/{size}/{seed}", framing.name()));
            let request = HttpRequest::get(&url).unwrap().with_timeout(TIMEOUT);
            let d = done.clone();
            let at = Instant::now();
            client.send(request, move |r| {
                d.borrow_mut().push((framing, size, seed, at.elapsed(), r))
            });
            sent += 1;
        }
        let finished = done.borrow().len();
        assert!(
            run_until(&mut ev, TIMEOUT + MARGIN, || done.borrow().len() > finished),
            "no request finished within its timeout plus {MARGIN:?}"
        );
    }
    let total = started.elapsed();

    let mut counts: BTreeMap<(Framing, Outcome), usize> = BTreeMap::new();
    for (framing, size, seed, elapsed, result) in done.borrow().iter() {
        let outcome = classify(*framing, *size, *seed, result);
        assert!(
            *elapsed <= TIMEOUT + MARGIN,
            "{} {size} ({seed}) took {elapsed:?}: {outcome:?}",
            framing.name()
        );
        *counts.entry((*framing, outcome)).or_default() += 1;
    }
    let count = |f: &dyn Fn(Framing, Outcome) -> bool| -> usize {
        counts
            .iter()
            .filter(|((fr, o), _)| f(*fr, *o))
            .map(|(_, n)| n)
            .sum()
    };
    eprintln!("{REQUESTS} requests in {total:?}: {counts:?}");
    eprintln!(
        "mixed proxy: {} connections, {} resets, {} closes, {} hangs; resets-only proxy: {} connections, {} resets",
        mixed
            .counters
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        mixed
            .counters
            .resets
            .load(std::sync::atomic::Ordering::SeqCst),
        mixed
            .counters
            .closes
            .load(std::sync::atomic::Ordering::SeqCst),
        mixed
            .counters
            .hangs
            .load(std::sync::atomic::Ordering::SeqCst),
        resets_only
            .counters
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        resets_only
            .counters
            .resets
            .load(std::sync::atomic::Ordering::SeqCst),
    );
    // Both paths are proven, for every framing, and every kind of cut was seen and named.
    for framing in [Framing::Length, Framing::Chunked, Framing::Close] {
        assert!(
            count(&|f, o| f == framing && o == Outcome::Complete) > 0,
            "no {} body completed",
            framing.name()
        );
        assert!(
            count(&|f, o| f == framing && o != Outcome::Complete) > 0,
            "no {} request failed",
            framing.name()
        );
    }
    assert!(
        count(&|f, o| f == Framing::Close && o == Outcome::Reset) > 0,
        "no close-delimited body was cut by a reset"
    );
    assert!(count(&|_, o| o == Outcome::IncompleteBody) > 0);
    assert!(count(&|_, o| o == Outcome::TimedOut) > 0);
    assert_eq!(client.pending_requests(), 0);
}

/// An HTTPS server (rustls on threads) answering `/close/{size}/{seed}` with that close-delimited
/// body, ended by close_notify.
fn tls_body_server() -> std::net::SocketAddr {
    use std::io::{BufReader, Write};
    let pki = support::certs::test_pki();
    let config = kdnet::network::TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let target = {
                    let mut reader = BufReader::new(&mut tls);
                    let Some(head) = support::read_request_head(&mut reader) else {
                        return;
                    };
                    head.target().to_string()
                };
                let parts: Vec<&str> = target.trim_start_matches('/').split('/').collect();
                let (size, seed): (usize, u64) =
                    (parts[1].parse().unwrap(), parts[2].parse().unwrap());
                let mut out = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
                out.extend_from_slice(&pattern(size, seed));
                if tls.write_all(&out).is_err() {
                    return;
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn https_close_delimited_bodies_cut_by_clean_closes_fail_instead_of_ending_short() {
    use kdnet::network::SocketError;
    let mut ev = EventLoop::new().unwrap();
    // Every cut a clean TCP close: without TLS these would be indistinguishable from the end of
    // a close-delimited body; with TLS only close_notify ends it.
    let proxy = ChaosProxy::start(
        tls_body_server(),
        ChaosPlan {
            seed: 0x7157_0000_0000_0001,
            uncut_one_in: 3,
            max_cut_offset: 60_000,
            reset_one_in: 0,
            ..ChaosPlan::default()
        },
    );
    let client = HttpClient::new().unwrap();
    client.update_session(|s| {
        s.add_ca_certificate(support::certs::test_pki().ca_pem.as_bytes())
            .unwrap()
    });
    let (mut complete, mut incomplete, mut in_handshake) = (0, 0, 0);
    for i in 0..60u64 {
        let size = SIZES[(i as usize) % SIZES.len()];
        let url = format!("https://{}/close/{size}/{i}", proxy.addr);
        let out: Rc<RefCell<Option<Result<HttpResponse, HttpError>>>> = Rc::default();
        let o = out.clone();
        let at = Instant::now();
        client.send(
            HttpRequest::get(&url).unwrap().with_timeout(TIMEOUT),
            move |r| *o.borrow_mut() = Some(r),
        );
        assert!(run_until(&mut ev, TIMEOUT + MARGIN, || out
            .borrow()
            .is_some()));
        assert!(at.elapsed() <= TIMEOUT + MARGIN);
        match out.borrow_mut().take().unwrap() {
            Ok(response) => {
                assert!(
                    response.body()[..] == pattern(size, i)[..],
                    "body of {size} bytes (seed {i}) reported complete with {} bytes",
                    response.body().len()
                );
                complete += 1;
            }
            Err(HttpError::IncompleteBody {
                received,
                expected: None,
            }) => {
                assert!(received < size as u64);
                incomplete += 1;
            }
            // Cut before or during the handshake, or inside the response head.
            Err(HttpError::Transport(SocketError::ClosedByPeer) | HttpError::EmptyResponse) => {
                in_handshake += 1
            }
            Err(HttpError::Protocol(reason))
                if reason.contains("closed in the middle of the response head") =>
            {
                in_handshake += 1
            }
            Err(e) => panic!("body of {size} bytes (seed {i}): unexpected error {e:?}"),
        }
    }
    eprintln!("{complete} complete, {incomplete} incomplete, {in_handshake} cut before the body");
    assert!(complete > 0, "no body completed");
    assert!(incomplete > 0, "no body was cut by a clean close");
    assert!(
        proxy
            .counters
            .closes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
}
