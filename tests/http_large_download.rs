//! A 100 MiB chunked download: linear time and peak memory well under twice the body.
//! (Its own test binary, so the process's peak-memory mark belongs to this test alone.)

mod support;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpRequest};
use support::run_until;

const MIB: usize = 1024 * 1024;

/// Serves `GET /<n>` with `n` MiB of chunked body in 64 KiB chunks, from one reused buffer.
fn chunked_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mib: usize = line.split_whitespace().nth(1).unwrap()[1..]
                        .parse()
                        .unwrap();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                    }
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .unwrap();
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(&chunk);
                    framed.extend_from_slice(b"\r\n");
                    for _ in 0..mib * 16 {
                        stream.write_all(&framed).unwrap();
                    }
                    stream.write_all(b"0\r\n\r\n").unwrap();
                }
            });
        }
    });
    addr
}

fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn download(
    ev: &mut EventLoop,
    client: &HttpClient,
    addr: std::net::SocketAddr,
    mib: usize,
) -> Duration {
    let out = std::rc::Rc::new(std::cell::RefCell::new(None));
    let o = out.clone();
    let started = Instant::now();
    client.send(
        HttpRequest::get(&format!("http://{addr}/{mib}"))
            .unwrap()
            .with_timeout(Duration::from_secs(300)),
        move |r| *o.borrow_mut() = Some(r),
    );
    assert!(run_until(ev, Duration::from_secs(300), || out
        .borrow()
        .is_some()));
    let elapsed = started.elapsed();
    let response = out.borrow_mut().take().unwrap().unwrap();
    assert_eq!(response.body().len(), mib * MIB);
    assert!(response.body().iter().all(|b| *b == b'x'));
    elapsed
}

#[test]
fn hundred_mib_chunked_download_is_linear_and_memory_stays_under_twice_the_body() {
    let mut ev = EventLoop::new().unwrap();
    let addr = chunked_server();
    let client = HttpClient::new().unwrap();
    let before = peak_rss_bytes();
    let small = download(&mut ev, &client, addr, 10);
    let large = download(&mut ev, &client, addr, 100);
    // Linear: ten times the bytes may take at most ~25x as long (generous for a noisy VM;
    // a quadratic body copy, KDNetwork H8, would take ~100x).
    assert!(
        large < small * 25 + Duration::from_millis(500),
        "10 MiB took {small:?}, 100 MiB took {large:?}"
    );
    if let (Some(before), Some(after)) = (before, peak_rss_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < 150 * MIB,
            "peak memory grew by {} MiB for a 100 MiB body",
            grown / MIB
        );
        eprintln!(
            "peak RSS grew by {} MiB; 10 MiB in {small:?}, 100 MiB in {large:?}",
            grown / MIB
        );
    }
}
