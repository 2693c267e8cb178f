//! Content-Encoding end to end through HttpClient against real loopback servers: every shape a
//! server sends a compressed body in (gzip with several members, zlib-wrapped and raw deflate,
//! unknown and stacked codings left as received, codings on bodiless responses, chunked bodies with
//! extensions and trailers), and every way it can be broken (cut short under each framing, trailing garbage,
//! bad checksums): a broken body is a `HttpError::Decode`, never a silently shorter `Ok` body.

mod support;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use kdnet::EventLoop;
use kdnet::network::http::{
    HttpClient, HttpError, HttpMethod, HttpRequest, HttpResponse, StreamEvent,
};
use support::{Reply, ScriptServer, run_until};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn sample_text() -> Vec<u8> {
    (0..3000u32)
        .flat_map(|i| format!("line {i} of the sample body\n").into_bytes())
        .collect()
}

/// How the body of a test response is framed.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Length,
    Chunked,
    UntilClose,
}

const FRAMES: [Frame; 3] = [Frame::Length, Frame::Chunked, Frame::UntilClose];

/// A 200 response with `Content-Encoding: encoding` carrying `body` framed as `frame`.
fn encoded(encoding: &str, body: &[u8], frame: Frame) -> Vec<u8> {
    let mut raw = format!("HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n").into_bytes();
    match frame {
        Frame::Length => {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(body);
        }
        Frame::Chunked => {
            raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(1000) {
                raw.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
                raw.extend_from_slice(piece);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        }
        Frame::UntilClose => {
            raw.extend_from_slice(b"Connection: close\r\n\r\n");
            raw.extend_from_slice(body);
        }
    }
    raw
}

/// `method /` against a server that answers with `raw`, then closes.
fn fetch_raw(method: HttpMethod, raw: Vec<u8>) -> Result<HttpResponse, HttpError> {
    let server = ScriptServer::start(move |_, _| Reply::BytesThenClose(raw.clone()));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let out: Rc<RefCell<Option<Result<HttpResponse, HttpError>>>> = Rc::default();
    let o = out.clone();
    let request = HttpRequest::get(&server.url("/"))
        .unwrap()
        .with_method(method);
    client.send(request, move |r| *o.borrow_mut() = Some(r));
    assert!(
        run_until(&mut ev, Duration::from_secs(20), || out.borrow().is_some()),
        "no result"
    );
    out.borrow_mut().take().unwrap()
}

fn fetch(raw: Vec<u8>) -> Result<HttpResponse, HttpError> {
    fetch_raw(HttpMethod::Get, raw)
}

fn assert_decode_error(result: &Result<HttpResponse, HttpError>, what: &str) {
    assert!(
        matches!(result, Err(HttpError::Decode(_))),
        "{what}: {:?}",
        result.as_ref().map(|r| r.body().len())
    );
}

#[test]
fn concatenated_gzip_members_are_one_body_under_every_framing() {
    let text = sample_text();
    let (first, second) = text.split_at(text.len() / 3);
    let mut body = gzip(first);
    body.extend_from_slice(&gzip(second));
    for frame in FRAMES {
        let response = fetch(encoded("gzip", &body, frame)).unwrap();
        assert!(response.body().as_ref() == text, "{frame:?}");
    }
}

#[test]
fn compressed_bodies_cut_short_are_decode_errors_under_every_framing() {
    let text = sample_text();
    let gz = gzip(&text);
    let mut two_members = gzip(b"first member");
    two_members.extend_from_slice(&gzip(&text));
    let cases = [
        ("gzip", gz.clone()),
        ("deflate", zlib(&text)),
        ("deflate", raw_deflate(&text)),
        ("gzip", two_members),
    ];
    for (encoding, full) in &cases {
        for cut in [1, 2, 4, 8, 9, full.len() / 2, full.len() - 10] {
            let body = &full[..full.len() - cut];
            for frame in FRAMES {
                let result = fetch(encoded(encoding, body, frame));
                assert_decode_error(&result, &format!("{encoding} less {cut} bytes, {frame:?}"));
            }
        }
    }
}

#[test]
fn broken_compressed_bodies_are_decode_errors_under_every_framing() {
    let text = sample_text();
    let gz = gzip(&text);
    let flip = |data: &[u8], from_end: usize| {
        let mut data = data.to_vec();
        let at = data.len() - from_end;
        data[at] ^= 0x01;
        data
    };
    let with = |data: &[u8], extra: &[u8]| [data, extra].concat();
    let cases = [
        ("gzip crc", "gzip", flip(&gz, 8)),
        ("gzip isize", "gzip", flip(&gz, 4)),
        ("zlib adler-32", "deflate", flip(&zlib(&text), 1)),
        ("gzip + garbage", "gzip", with(&gz, b"garbage")),
        ("zlib + garbage", "deflate", with(&zlib(&text), b"garbage")),
        (
            "raw deflate + garbage",
            "deflate",
            with(&raw_deflate(&text), b"garbage"),
        ),
        ("not compressed", "gzip", text.clone()),
    ];
    for (what, encoding, body) in &cases {
        for frame in FRAMES {
            let result = fetch(encoded(encoding, body, frame));
            assert_decode_error(&result, &format!("{what}, {frame:?}"));
        }
    }
}

#[test]
fn coding_names_are_matched_case_insensitively_around_whitespace_and_identity() {
    let text = sample_text();
    let cases = [
        ("GZip", gzip(&text)),
        ("x-gzip", gzip(&text)),
        ("identity, gzip", gzip(&text)),
        (" gzip ,identity", gzip(&text)),
        ("Deflate", zlib(&text)),
        ("deflate", raw_deflate(&text)),
        ("identity", text.clone()),
        ("IDENTITY", text.clone()),
    ];
    for (encoding, body) in &cases {
        let response = fetch(encoded(encoding, body, Frame::Length)).unwrap();
        assert!(response.body().as_ref() == text, "{encoding:?}");
        // Nothing to undo for `identity` alone: the field may stay.
        if !encoding.eq_ignore_ascii_case("identity") {
            assert_eq!(response.header("content-encoding"), None, "{encoding:?}");
        }
    }
}

/// Stacked codings are not undone either: each layer multiplies a bomb's ratio (two deflate
/// layers reach about a million to one), beyond what the body limit can stop in time.
#[test]
fn unknown_or_stacked_codings_leave_the_body_and_its_headers_as_received() {
    for encoding in [
        "compress",
        "x-unknown, gzip",
        "gzip, zstd",
        "gzip;q=1",
        "gzip, gzip",
    ] {
        let body = b"opaque bytes".to_vec();
        let response = fetch(encoded(encoding, &body, Frame::Length)).unwrap();
        assert_eq!(response.body().as_ref(), body, "{encoding:?}");
        assert_eq!(response.header("content-encoding"), Some(encoding));
        assert_eq!(response.header("content-length"), Some("12"));
    }
}

#[test]
fn codings_on_responses_without_a_body_are_left_alone() {
    let head = |status: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Encoding: gzip\r\nContent-Length: 30\r\n\r\n")
            .into_bytes()
    };
    let response = fetch_raw(HttpMethod::Head, head("200 OK")).unwrap();
    assert!(response.body().is_empty());
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert_eq!(response.header("content-length"), Some("30"));
    for status in ["204 No Content", "304 Not Modified"] {
        let response = fetch(head(status)).unwrap();
        assert!(response.body().is_empty(), "{status}");
        assert_eq!(
            response.header("content-encoding"),
            Some("gzip"),
            "{status}"
        );
    }
    // An empty body with a coding is an empty body (servers send it for empty files).
    for frame in FRAMES {
        let response = fetch(encoded("gzip", b"", frame)).unwrap();
        assert!(response.body().is_empty(), "{frame:?}");
    }
}

/// Bytes a server flushed (a sync flush of its compressor) reach a streaming callback at once,
/// whatever the coding, not when the next compressed bytes arrive.
#[test]
fn flushed_compressed_pieces_reach_a_stream_before_the_rest_arrives() {
    type Encoder = Box<dyn Fn() -> Box<dyn EncoderWrite>>;
    trait EncoderWrite: Write {
        fn take_output(&mut self) -> Vec<u8>;
        fn finish_box(self: Box<Self>) -> Vec<u8>;
    }
    macro_rules! encoder_write {
        ($t:ty) => {
            impl EncoderWrite for $t {
                fn take_output(&mut self) -> Vec<u8> {
                    std::mem::take(self.get_mut())
                }
                fn finish_box(self: Box<Self>) -> Vec<u8> {
                    self.finish().unwrap()
                }
            }
        };
    }
    encoder_write!(GzEncoder<Vec<u8>>);
    encoder_write!(ZlibEncoder<Vec<u8>>);
    encoder_write!(DeflateEncoder<Vec<u8>>);
    let encoders: [(&str, Encoder); 3] = [
        (
            "gzip",
            Box::new(|| Box::new(GzEncoder::new(Vec::new(), Compression::default()))),
        ),
        (
            "deflate",
            Box::new(|| Box::new(ZlibEncoder::new(Vec::new(), Compression::default()))),
        ),
        (
            "deflate",
            Box::new(|| Box::new(DeflateEncoder::new(Vec::new(), Compression::default()))),
        ),
    ];
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    for (encoding, new_encoder) in &encoders {
        let mut encoder = new_encoder();
        encoder.write_all(b"first").unwrap();
        encoder.flush().unwrap();
        let first = encoder.take_output();
        encoder.write_all(b" second").unwrap();
        let rest = encoder.finish_box();
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        head.extend_from_slice(&chunk(&first));
        let mut tail = chunk(&rest);
        tail.extend_from_slice(b"0\r\n\r\n");
        let mut ev = EventLoop::new().unwrap();
        let server = ScriptServer::start(move |_, _| {
            Reply::Pieces(vec![head.clone(), tail.clone()], Duration::from_secs(3))
        });
        let client = HttpClient::new().unwrap();
        let data = Rc::new(RefCell::new(Vec::<u8>::new()));
        let done = Rc::new(Cell::new(false));
        let (d, f) = (data.clone(), done.clone());
        client.send_streaming(
            HttpRequest::get(&server.url("/")).unwrap(),
            move |event| {
                if let StreamEvent::Data(piece) = event {
                    d.borrow_mut().extend_from_slice(piece);
                }
            },
            move |r| {
                r.unwrap();
                f.set(true);
            },
        );
        // The second piece comes 3 s after the first.
        assert!(
            run_until(&mut ev, Duration::from_millis(1500), || data
                .borrow()
                .as_slice()
                == b"first"),
            "{encoding}: got {:?} before the next piece",
            String::from_utf8_lossy(&data.borrow())
        );
        assert!(run_until(&mut ev, Duration::from_secs(10), || done.get()));
        assert_eq!(data.borrow().as_slice(), b"first second", "{encoding}");
    }
}

/// A compressed body handed out as a stream comes in pieces of bounded size whatever its ratio:
/// 64 MiB of zeros gzipped (~64 KiB) came as one 16 MiB piece per 16 KiB of input (deflate's
/// ratio is ~1,000:1), all of it decoded before any of it was handed out. Every piece now stays
/// near 1 MiB, and the whole body still arrives.
#[test]
fn a_streamed_compressed_body_comes_in_pieces_of_bounded_size() {
    const SIZE: usize = 64 << 20;
    let bomb = gzip(&vec![0u8; SIZE]);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    response.extend_from_slice(&bomb);
    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(move |_, _| Reply::Bytes(response.clone()));
    let client = HttpClient::new().unwrap();
    let total = Rc::new(Cell::new(0usize));
    let largest = Rc::new(Cell::new(0usize));
    let done = Rc::new(Cell::new(false));
    let (t, l, f) = (total.clone(), largest.clone(), done.clone());
    client.send_streaming(
        HttpRequest::get(&server.url("/")).unwrap(),
        move |event| {
            if let StreamEvent::Data(piece) = event {
                assert!(piece.iter().all(|&b| b == 0));
                t.set(t.get() + piece.len());
                l.set(l.get().max(piece.len()));
            }
        },
        move |r| {
            r.unwrap();
            f.set(true);
        },
    );
    assert!(run_until(&mut ev, Duration::from_secs(60), || done.get()));
    assert_eq!(total.get(), SIZE);
    assert!(
        largest.get() <= 2 << 20,
        "a {}-byte piece of a streamed compressed body",
        largest.get()
    );
}

/// A kept-alive connection serves responses of every framing and coding in turn, a followed
/// redirect's chunked body among them: each response is decoded with its own framing and coding
/// (none carries the previous response's decoder state, whose place in the request's books is
/// reused), and the connection serves them all.
#[test]
fn responses_of_every_framing_and_coding_in_turn_on_one_connection_decode_afresh() {
    let text = sample_text();
    let packed = gzip(&text);
    let script: Vec<Vec<u8>> = vec![
        encoded("gzip", &packed, Frame::Chunked),
        support::ok_response("plain after gzip", ""),
        encoded("gzip", &packed, Frame::Length),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nchunk\r\n6\r\ned too\r\n0\r\nT: 1\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 302 Found\r\nLocation: /next\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmove\r\n0\r\n\r\n"
            .to_vec(),
        support::ok_response("after the redirect", ""),
        encoded("gzip", &packed, Frame::Chunked),
    ];
    let replies = script.clone();
    let server = ScriptServer::start(move |_, n| Reply::Bytes(replies[n].clone()));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let expected: [&[u8]; 6] = [
        &text,
        b"plain after gzip",
        &text,
        b"chunked too",
        b"after the redirect",
        &text,
    ];
    for (i, want) in expected.iter().enumerate() {
        let request = HttpRequest::get(&server.url("/")).unwrap();
        let response = support::wait(&mut ev, &support::send(&client, request))
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!(response.status(), 200, "response {i}");
        assert_eq!(response.body().len(), want.len(), "response {i}'s length");
        assert!(response.body()[..] == want[..], "response {i}'s body");
    }
    let seen = server.requests();
    assert_eq!(seen.len(), script.len());
    assert!(
        seen.iter().all(|r| r.connection == 0),
        "every response left the connection reusable: {:?}",
        seen.iter().map(|r| r.connection).collect::<Vec<_>>()
    );
}

/// Content decoding can be turned off (`HttpSession::set_decompress(false)`, reqwest's
/// `gzip(false)`): no `Accept-Encoding` is added then, and a gzip body the caller asked for
/// with an `Accept-Encoding` of its own comes as the server sent it, with its `Content-Encoding`
/// and `Content-Length`. Turned on again, the next request asks for the codings and gets the
/// body decoded. Before, a caller who wanted the raw bytes still got them decoded.
#[test]
fn with_decoding_off_no_codings_are_asked_for_and_a_gzip_body_comes_as_sent() {
    let text = sample_text();
    let packed = gzip(&text);
    let reply = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            packed.len()
        )
        .into_bytes(),
        packed.clone(),
    ]
    .concat();
    let server = ScriptServer::start(move |_, _| Reply::Bytes(reply.clone()));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    assert!(client.session().decompresses(), "on by default");
    client.update_session(|s| s.set_decompress(false));
    let fetch = |request: HttpRequest, ev: &mut EventLoop| {
        support::wait(ev, &support::send(&client, request)).unwrap()
    };

    let raw = fetch(HttpRequest::get(&server.url("/a")).unwrap(), &mut ev);
    let own = HttpRequest::get(&server.url("/b"))
        .unwrap()
        .with_header("Accept-Encoding", "gzip");
    let raw_asked = fetch(own, &mut ev);
    for response in [&raw, &raw_asked] {
        assert!(response.body()[..] == packed[..], "the body as sent");
        assert_eq!(response.header("content-encoding"), Some("gzip"));
        assert_eq!(
            response.header("content-length"),
            Some(packed.len().to_string().as_str())
        );
    }
    client.update_session(|s| s.set_decompress(true));
    let decoded = fetch(HttpRequest::get(&server.url("/c")).unwrap(), &mut ev);
    assert!(decoded.body()[..] == text[..], "decoded again");
    assert!(!decoded.has_header("content-encoding"));

    let seen = server.requests();
    let accepted: Vec<Option<&str>> = seen.iter().map(|r| r.header("accept-encoding")).collect();
    let codings = if cfg!(feature = "brotli") {
        "gzip, deflate, br"
    } else {
        "gzip, deflate"
    };
    assert_eq!(accepted, [None, Some("gzip"), Some(codings)]);
}
