//! Workload 4: HTTP/1.1 keep-alive, 20,000 sequential GETs of a 100-byte body on one connection.
//!
//! One keep-alive server on a std thread of this process (httparse for the request head, a fixed
//! response with `Content-Length: 100`; the same server for every subject, one thread per
//! connection). Each subject sends 20,000 GETs one after another, waiting for each whole response
//! before sending the next, and checks status 200 and the 100-byte body; the server counts the
//! connections it accepted so that a subject that does not reuse its connection is caught.
//! Figure: requests per second of wall time (median of `COMPARE_REPS` runs, after one warm-up).

mod common_net;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kdnet_compare::{Better, Row, reps, thread_cpu_time};

const REQUESTS: usize = 20_000;
const BODY_LEN: usize = 100;
const WORKLOAD: &str = "4 keep-alive 20k GETs";

fn main() {
    let only: Option<String> = std::env::var("W4_ONLY").ok();
    let requests: usize = std::env::var("W4_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REQUESTS);
    let accepted = Arc::new(AtomicUsize::new(0));
    let port = start_server(accepted.clone());
    let url = format!("http://127.0.0.1:{port}/item");
    eprintln!(
        "w4: server on port {port}; {requests} requests, {} reps",
        reps()
    );

    type Subject = (&'static str, fn(&str, u16, usize) -> usize);
    let subjects: [Subject; 6] = [
        ("kdnet", run_kdnet),
        ("ureq", run_ureq),
        ("reqwest", run_reqwest),
        ("hyper-util", run_hyper_util),
        ("mio+httparse", run_mio),
        ("blocking std+httparse", run_blocking),
    ];
    let chosen: Vec<Subject> = subjects
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    // One run: (req/s, client-thread CPU µs per request). Every subject runs on this thread and
    // the server on its own threads, so this thread's CPU time is the client's alone.
    let measure = |name: &str, run: fn(&str, u16, usize) -> usize| {
        let before = accepted.load(Ordering::SeqCst);
        let (t0, cpu0) = (Instant::now(), thread_cpu_time());
        let done = run(&url, port, requests);
        let (wall, cpu) = (t0.elapsed(), thread_cpu_time() - cpu0);
        assert_eq!(
            done, requests,
            "w4: {name} completed {done} of {requests} requests"
        );
        let connections = accepted.load(Ordering::SeqCst) - before;
        assert_eq!(
            connections, 1,
            "w4: {name} used {connections} connections, not one"
        );
        (
            requests as f64 / wall.as_secs_f64(),
            cpu.as_nanos() as f64 / requests as f64 / 1e3,
        )
    };
    let medians = common_net::take_turns(&chosen, measure);
    for (i, (name, _)) in chosen.iter().enumerate() {
        let (rate, cpu) = medians[i];
        eprintln!(
            "w4: {name}: {:.1} k req/s, {cpu:.2} µs client CPU/request",
            rate / 1e3
        );
        Row::new(WORKLOAD, name, rate, "req/s", Better::Higher).emit();
        Row::new(
            &format!("{WORKLOAD}: client CPU/request"),
            name,
            cpu,
            "µs",
            Better::Lower,
        )
        .emit();
    }
}

// ---- server ------------------------------------------------------------------------------------

fn response_bytes() -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {BODY_LEN}\r\n\r\n"
    )
    .into_bytes();
    out.extend((0..BODY_LEN).map(|i| b'a' + (i % 26) as u8));
    out
}

fn start_server(accepted: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            accepted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve_connection(stream));
        }
    });
    port
}

fn serve_connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let response = response_bytes();
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        // Answer every complete request head in the buffer (GETs carry no body).
        let mut start = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf[start..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    start += len;
                    if stream.write_all(&response).is_err() {
                        return;
                    }
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return;
        }
    }
}

// ---- subjects ----------------------------------------------------------------------------------

fn check_body(name: &str, status: u16, body: &[u8]) {
    assert!(
        status == 200 && body.len() == BODY_LEN && body[0] == b'a',
        "w4: {name}: bad response (status {status}, {} body bytes)",
        body.len()
    );
}

fn run_kdnet(url: &str, _port: u16, requests: usize) -> usize {
    use kdnet::EventLoop;
    use kdnet::network::http::HttpClient;

    struct Driver {
        client: Rc<HttpClient>,
        url: String,
        left: Cell<usize>,
        done: Cell<usize>,
        handle: kdnet::LoopHandle,
    }
    impl Driver {
        // The next request goes out from the previous one's completion callback.
        fn next(self: &Rc<Self>) {
            if self.left.get() == 0 {
                return self.handle.quit();
            }
            self.left.set(self.left.get() - 1);
            let me = Rc::clone(self);
            self.client.get(&self.url, move |result| {
                let response = result.unwrap_or_else(|e| panic!("w4: kdnet request failed: {e}"));
                check_body("kdnet", response.status(), response.body());
                me.done.set(me.done.get() + 1);
                me.next();
            });
        }
    }

    let mut event_loop = EventLoop::new().expect("event loop");
    let driver = Rc::new(Driver {
        client: HttpClient::new().expect("http client"),
        url: url.to_owned(),
        left: Cell::new(requests),
        done: Cell::new(0),
        handle: event_loop.handle(),
    });
    driver.next();
    event_loop.run();
    assert_eq!(
        driver.client.open_connections(),
        1,
        "kdnet did not keep its connection"
    );
    driver.done.get()
}

fn run_ureq(url: &str, _port: u16, requests: usize) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let mut done = 0;
    for _ in 0..requests {
        let mut response = agent.get(url).call().expect("ureq request");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec().expect("ureq body");
        check_body("ureq", status, &body);
        done += 1;
    }
    done
}

fn run_reqwest(url: &str, _port: u16, requests: usize) -> usize {
    let runtime = common_net::current_thread_runtime();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client");
    runtime.block_on(async {
        let mut done = 0;
        for _ in 0..requests {
            let response = client.get(url).send().await.expect("reqwest request");
            let status = response.status().as_u16();
            let body = response.bytes().await.expect("reqwest body");
            check_body("reqwest", status, &body);
            done += 1;
        }
        done
    })
}

fn run_hyper_util(url: &str, _port: u16, requests: usize) -> usize {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let runtime = common_net::current_thread_runtime();
    let uri: hyper::Uri = url.parse().expect("uri");
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let mut done = 0;
        for _ in 0..requests {
            let response = client.get(uri.clone()).await.expect("hyper request");
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("hyper body")
                .to_bytes();
            check_body("hyper-util", status, &body);
            done += 1;
        }
        done
    })
}

const REQUEST_HEAD: &[u8] = b"GET /item HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n";

/// Parses a response in `buf[..filled]`: `Some((status, body range))` once the whole response
/// (head and `Content-Length` body) is there.
fn parse_response(buf: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).expect("bad response head") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .expect("content-length");
    let end = head_len + length;
    (buf.len() >= end).then(|| (response.code.unwrap_or(0), head_len..end))
}

/// Reference: blocking `std::net::TcpStream`, one write per request, read until complete.
fn run_blocking(_url: &str, port: u16, requests: usize) -> usize {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 16 * 1024];
    let mut done = 0;
    for _ in 0..requests {
        stream.write_all(REQUEST_HEAD).expect("write");
        let mut filled = 0;
        loop {
            let n = stream.read(&mut buf[filled..]).expect("read");
            assert!(n > 0, "server closed");
            filled += n;
            if let Some((status, body)) = parse_response(&buf[..filled]) {
                check_body("blocking std+httparse", status, &buf[body.clone()]);
                assert_eq!(body.end, filled, "unexpected extra bytes");
                break;
            }
        }
        done += 1;
    }
    done
}

/// Reference: a hand-written mio loop (non-blocking socket, edge-triggered readiness).
fn run_mio(_url: &str, port: u16, requests: usize) -> usize {
    use mio::{Events, Interest, Poll, Token};

    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut stream = mio::net::TcpStream::connect(addr).expect("connect");
    poll.registry()
        .register(
            &mut stream,
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )
        .expect("register");
    // Wait for the connection to complete.
    loop {
        poll.poll(&mut events, None).expect("poll");
        if events.iter().any(|e| e.is_writable()) {
            break;
        }
    }
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 16 * 1024];
    let mut done = 0;
    for _ in 0..requests {
        // A 50-byte request always fits the empty send buffer of an idle keep-alive connection.
        let written = stream.write(REQUEST_HEAD).expect("write");
        assert_eq!(written, REQUEST_HEAD.len(), "short write");
        let mut filled = 0;
        'response: loop {
            loop {
                match stream.read(&mut buf[filled..]) {
                    Ok(0) => panic!("server closed"),
                    Ok(n) => {
                        filled += n;
                        if let Some((status, body)) = parse_response(&buf[..filled]) {
                            check_body("mio+httparse", status, &buf[body]);
                            break 'response;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            poll.poll(&mut events, None).expect("poll");
        }
        done += 1;
    }
    done
}
