//! A randomised, model-based test of the bytes of one HTTP exchange, in both directions, between
//! `HttpClient` and a loopback server (what the scheduler and redirect models leave out: they
//! use small bodies and a few fixed framings).
//!
//! Each generated case is a short sequence (1–3) of exchanges on one host — `http://127.0.0.1`,
//! `http://[::1]`, `https://127.0.0.1` or `https://[::1]` (rcgen certificates) — sent one after the
//! other: from the test's code between loop turns, from the previous exchange's callback, or from a
//! timer's slot. The session may have a small `max_response_body_bytes`; the progress signals may
//! be watched. Each request has a method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or the
//! extension `PROPFIND`), no body, an empty one or 1 B–2 MiB, goes through `send`, a shortcut
//! (`get`, `post`, …) or `send_streaming`, may have the common headers off, and may carry headers
//! that touch framing: its own `Content-Length` (right or wrong), `Transfer-Encoding`, `Host` (one
//! or two), `Connection: close` or `keep-alive`, `Expect: 100-continue`, `Accept-Encoding`,
//! `Range`. The server reads the request fast or slowly and then answers, or answers right after
//! its head and reads its body afterwards. It answers after up to two interim responses (100, 103):
//! HTTP/1.1 or 1.0 (with `keep-alive` or not), status 200, 201, 204, 206, 304, 404 or 500, framed
//! by `Content-Length`, chunked (with extensions, with trailers, with an extension or a trailer
//! section at or one byte past the client's limit; size lines in upper case, with leading zeros,
//! lines ended by a bare LF), chunked with a `Content-Length` besides, another transfer coding, or
//! the close; coded identity, gzip, zlib or raw deflate, an unknown coding, gzip with a bad
//! checksum, or gzip on no bytes at all; 0 B–4 MiB; written in 1–6 pieces with pauses; perhaps with
//! `Connection: close`; perhaps cut short (an abrupt close, without close_notify over TLS). A HEAD,
//! 204 or 304 answer carries the framing headers a body would have had, and may lie with body bytes
//! after its head.
//!
//! A plain model of the documented behaviour (`HttpRequest::validate`,
//! `auto_add_common_headers`, `HttpSession::apply_default_headers`, `framing.rs`, `body.rs`,
//! `content.rs`, the progress signals' docs, PORTING.md, RFC 9112 §6 and §9) predicts:
//! - the exact bytes the server reads: request line, the request's own fields, the session's
//!   defaults, then `Host`, `Accept-Encoding` and `Content-Length` where the client adds them,
//!   and the body; a request the client must refuse (`Transfer-Encoding`, a wrong
//!   `Content-Length`, two `Host` fields) is `InvalidRequest` and reaches no server; no byte
//!   beyond the requests ever reaches the server;
//! - the status, reason, version, header fields (without `Content-Encoding` and
//!   `Content-Length` when the client decoded the body) and the exact body bytes (decoded or as
//!   received); a stream's head once, its data (all of it on success, a prefix on failure), and
//!   never after `on_done`; or the typed error: `InvalidRequest`, `Protocol` (a close in a head),
//!   `NoFinalResponse` (a close after interim responses), `IncompleteBody` with the exact
//!   counts, `LimitExceeded` (the announced or decoded body over the session's limit, an
//!   extension or trailers over theirs), `Decode`;
//! - `download_progress`: only before the callback, counts of the body as transferred, each once
//!   (the end may repeat the last count with its total), the total the announced length (0 for
//!   no body) or `None` until a body of unknown length ends, and on success a last report
//!   `(n, Some(n))`, never one that claims the end on failure; `upload_progress`: none without a
//!   body, else counts to the body's length, each report with that total;
//! - `response_received` or `error` once per exchange, after its callback;
//! - whether the connection is reused by the next exchange: only after a cleanly framed response
//!   (HTTP/1.1 without `Connection: close`, not read to the close, not chunked with a length
//!   besides, nothing after it) to a request without `Connection: close`; a connection with bytes
//!   after its response is closed by the client (waited for, so the next exchange never races
//!   them), and no other is left open after a response that may not be reused; after an early
//!   answer, reused or not (reused only if the whole request had left: the server then reads
//!   it all before the next one).
//!
//! Found by it: upload progress lost, or counted as the next request's, when the answer came
//! before the socket's deferred report of the written bytes (`http_client.rs`,
//! `upload_progress_reaches_its_total_when_the_answer_comes_before_the_written_report`).
//!
//! Nothing may hang: every wait is bounded (20 s).
//!
//! `PROPTEST_CASES` sets the number of cases (default 32, about 2–3 s in a debug build).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use kdnet::network::http::{
    DEFAULT_MAX_CHUNK_EXTENSION, DEFAULT_MAX_TRAILERS, DEFAULT_USER_AGENT, HttpClient, HttpError,
    HttpMethod, HttpRequest, HttpResponse, HttpSession, HttpVersion, RequestId, StreamEvent,
};
use kdnet::{EventLoop, Timer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::served::{self, Stream};

// ---- the script ------------------------------------------------------------------------------

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
];

/// The hosts: https, and the URL's host (the servers listen on these addresses).
const HOSTS: [(bool, &str); 4] = [
    (false, "127.0.0.1"),
    (false, "[::1]"),
    (true, "127.0.0.1"),
    (true, "[::1]"),
];

/// A request's body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ReqBody {
    /// Never set.
    None,
    /// Set, empty.
    Empty,
    /// This many bytes.
    Bytes(u32),
}

/// How the request is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    /// `HttpClient::send`.
    Send,
    /// `get`, `head`, `post`, … (without headers of its own; a body only for POST, PUT, PATCH).
    Shortcut,
    /// `send_streaming`.
    Streaming,
}

/// Where the request is sent from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SendFrom {
    /// The test's code, between loop turns (after the previous exchange's callback).
    Outside,
    /// The previous exchange's callback.
    Callback,
    /// A timer's slot, armed by the previous exchange's callback.
    Timer(u8),
}

/// The request's own fields that touch framing.
#[derive(Debug, Clone, Default)]
struct Own {
    /// `Content-Length`: true for the body's length, false for a wrong one.
    content_length: Option<bool>,
    transfer_encoding: bool,
    /// `Host` fields of its own: 0, 1 or 2.
    hosts: u8,
    /// `Connection`: true for `close`, false for `keep-alive`.
    connection: Option<bool>,
    expect: bool,
    accept_encoding: Option<&'static str>,
    range: bool,
    content_type: bool,
}

/// How the server frames the body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    Length,
    Chunked,
    /// Chunked, with a `Content-Length` besides (the smuggling shape: never reused).
    ChunkedAndLength,
    /// `Transfer-Encoding: x-stream`, not ending in chunked: read to the close.
    OtherTe,
    /// No framing header: read to the close.
    Close,
}

/// What the chunks carry besides data.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunks {
    Plain,
    Extensions,
    Trailers,
    /// An extension on the first chunk of exactly the limit, or (true) one byte more.
    ExtensionAtLimit(bool),
    /// A trailer section of exactly the limit, or (true) one byte more.
    TrailersAtLimit(bool),
}

/// The body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coding {
    Absent,
    Identity,
    Gzip,
    Zlib,
    RawDeflate,
    /// `x-unknown`: delivered as received.
    Unknown,
    /// gzip whose CRC is wrong.
    CorruptGzip,
    /// `gzip` on a body of no bytes at all (accepted as empty whatever the coding).
    EmptyGzip,
}

impl Coding {
    fn name(self) -> Option<&'static str> {
        match self {
            Coding::Absent => None,
            Coding::Identity => Some("identity"),
            Coding::Gzip | Coding::CorruptGzip | Coding::EmptyGzip => Some("gzip"),
            Coding::Zlib | Coding::RawDeflate => Some("deflate"),
            Coding::Unknown => Some("x-unknown"),
        }
    }

    /// Whether the client decodes it.
    fn decoded(self) -> bool {
        matches!(
            self,
            Coding::Gzip
                | Coding::Zlib
                | Coding::RawDeflate
                | Coding::CorruptGzip
                | Coding::EmptyGzip
        )
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
struct Answer {
    interim: Vec<u16>,
    status: u16,
    http10: bool,
    frame: Frame,
    chunks: Chunks,
    /// Largest chunk's data.
    chunk_size: u32,
    coding: Coding,
    /// The plain body's length and content.
    size: u32,
    seed: u64,
    /// A bodiless answer (HEAD, 204, 304) followed by body bytes anyway.
    lie: bool,
    conn_close: bool,
    /// An HTTP/1.0 answer says `Connection: keep-alive`.
    keep_alive_10: bool,
    /// Chunk size lines: bit 0 upper-case hex, bit 1 leading zeros, bit 2 bare LF line ends.
    chunk_style: u8,
    pieces: u8,
    delay_ms: u8,
    /// Cut short after this many thousandths of the answer's bytes.
    cut: Option<u16>,
    /// The server reads the request slowly.
    slow_read: bool,
    /// The server answers after the request's head, and reads its body only after answering.
    early: bool,
}

#[derive(Debug, Clone)]
struct Exchange {
    method: usize,
    body: ReqBody,
    body_seed: u64,
    api: Api,
    from: SendFrom,
    auto_common: bool,
    own: Own,
    answer: Answer,
}

#[derive(Debug, Clone)]
struct Case {
    host: usize,
    limit: Option<Limit>,
    progress: bool,
    exchanges: Vec<Exchange>,
}

/// The session's `max_response_body_bytes`.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Fixed(u32),
    /// The first exchange's delivered body's length plus this.
    Near(i8),
}

fn size_strategy(big: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        5 => 0u32..=2048,
        3 => 0u32..=65_536,
        1 => 0u32..=big,
    ]
}

fn own_strategy() -> impl Strategy<Value = Own> {
    (
        prop_oneof![12 => Just(None), 3 => Just(Some(true)), 1 => Just(Some(false))],
        prop::bool::weighted(0.03),
        prop_oneof![16 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
        prop::bool::weighted(0.15),
        prop_oneof![
            6 => Just(None),
            1 => Just(Some("identity")),
            1 => Just(Some("gzip")),
        ],
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(
            |(content_length, transfer_encoding, hosts, connection, expect, ae, range, ct)| Own {
                content_length,
                transfer_encoding,
                hosts,
                connection,
                expect,
                accept_encoding: ae,
                range,
                content_type: ct,
            },
        )
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    let head = (
        prop::collection::vec(prop_oneof![Just(100u16), Just(103u16)], 0..=2),
        prop_oneof![
            6 => Just(200u16), 1 => Just(201u16), 1 => Just(204u16), 1 => Just(206u16),
            1 => Just(304u16), 1 => Just(404u16), 1 => Just(500u16),
        ],
        prop::bool::weighted(0.1),
        prop_oneof![
            5 => Just(Frame::Length),
            4 => Just(Frame::Chunked),
            1 => Just(Frame::ChunkedAndLength),
            1 => Just(Frame::OtherTe),
            2 => Just(Frame::Close),
        ],
        prop_oneof![
            4 => Just(Chunks::Plain),
            2 => Just(Chunks::Extensions),
            2 => Just(Chunks::Trailers),
            1 => any::<bool>().prop_map(Chunks::ExtensionAtLimit),
            1 => any::<bool>().prop_map(Chunks::TrailersAtLimit),
        ],
        prop_oneof![1u32..=16, 1u32..=4096, 1u32..=70_000],
    );
    let body = (
        prop_oneof![
            3 => Just(Coding::Absent),
            1 => Just(Coding::Identity),
            3 => Just(Coding::Gzip),
            1 => Just(Coding::Zlib),
            1 => Just(Coding::RawDeflate),
            1 => Just(Coding::Unknown),
            1 => Just(Coding::CorruptGzip),
            1 => Just(Coding::EmptyGzip),
        ],
        size_strategy(4 << 20),
        any::<u64>(),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
        any::<bool>(),
        0u8..8,
    );
    let delivery = (
        1u8..=6,
        0u8..=3,
        prop_oneof![5 => Just(None), 1 => (1u16..1000).prop_map(Some)],
        prop_oneof![3 => Just((false, false)), 3 => Just((true, false)), 1 => Just((false, true))],
    );
    (head, body, delivery).prop_map(
        |(
            (interim, status, http10, frame, chunks, chunk_size),
            (coding, size, seed, lie, conn_close, keep_alive_10, chunk_style),
            (pieces, delay_ms, cut, (slow_read, early)),
        )| {
            let mut answer = Answer {
                interim,
                status,
                http10,
                frame,
                chunks,
                chunk_size,
                coding,
                size,
                seed,
                lie,
                conn_close,
                keep_alive_10,
                chunk_style,
                pieces,
                delay_ms,
                cut,
                slow_read,
                early,
            };
            if answer.http10 {
                // No interim responses in HTTP/1.0, and a chunked body read to the close is
                // delivered with its chunk framing: only codings that leave it alone.
                answer.interim.clear();
                if answer.coding.decoded() {
                    answer.coding = Coding::Absent;
                }
            }
            if answer.coding.decoded() {
                // Debug-build compression is slow: compressed bodies stay under 512 KiB.
                answer.size = answer.size.min(512 * 1024);
            }
            if matches!(
                answer.chunks,
                Chunks::ExtensionAtLimit(true) | Chunks::TrailersAtLimit(true)
            ) {
                // Where a cut lands against the limit is not modelled.
                answer.cut = None;
            }
            answer
        },
    )
}

fn exchange_strategy() -> impl Strategy<Value = Exchange> {
    (
        (
            0..METHODS.len(),
            prop_oneof![
                2 => Just(ReqBody::None),
                1 => Just(ReqBody::Empty),
                4 => size_strategy(2 << 20).prop_map(|n| ReqBody::Bytes(n.max(1))),
            ],
            any::<u64>(),
            prop_oneof![4 => Just(Api::Send), 2 => Just(Api::Shortcut), 2 => Just(Api::Streaming)],
            prop_oneof![
                2 => Just(SendFrom::Outside),
                1 => Just(SendFrom::Callback),
                1 => (0u8..=5).prop_map(SendFrom::Timer),
            ],
            prop::bool::weighted(0.8),
        ),
        own_strategy(),
        answer_strategy(),
    )
        .prop_map(
            |((method, body, body_seed, api, from, auto_common), own, answer)| {
                let mut exchange = Exchange {
                    method,
                    body,
                    body_seed,
                    api,
                    from,
                    auto_common,
                    own,
                    answer,
                };
                if exchange.api == Api::Shortcut {
                    // The shortcuts take no headers, no options, and a body only for POST,
                    // PUT and PATCH; not the extension method.
                    let with_body = matches!(METHODS[method], "POST" | "PUT" | "PATCH");
                    if METHODS[method] == "PROPFIND" {
                        exchange.api = Api::Send;
                    } else {
                        exchange.own = Own {
                            content_type: exchange.own.content_type && with_body,
                            ..Own::default()
                        };
                        exchange.auto_common = true;
                        if !with_body {
                            exchange.body = ReqBody::None;
                        } else if exchange.body == ReqBody::None {
                            exchange.body = ReqBody::Empty;
                        }
                    }
                }
                exchange
            },
        )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0..HOSTS.len(),
        prop_oneof![
            6 => Just(None),
            1 => (0u32..=70_000).prop_map(|n| Some(Limit::Fixed(n))),
            1 => (-1i8..=1).prop_map(|d| Some(Limit::Near(d))),
        ],
        any::<bool>(),
        prop::collection::vec(exchange_strategy(), 1..=3),
    )
        .prop_map(|(host, limit, progress, exchanges)| Case {
            host,
            limit,
            progress,
            exchanges,
        })
}

// ---- the model: bodies and answers -----------------------------------------------------------

/// The plain body of an answer: random bytes or text, by the seed.
fn plain_body(size: u32, seed: u64) -> Vec<u8> {
    if seed % 2 == 0 {
        support::pattern(size as usize, seed)
    } else {
        let text = format!("line {seed} of a body that compresses well\n");
        text.bytes().cycle().take(size as usize).collect()
    }
}

fn compress<W: Write>(mut encoder: W, data: &[u8]) -> W {
    encoder.write_all(data).unwrap();
    encoder
}

/// The body as coded by `coding`.
fn encode(coding: Coding, plain: &[u8]) -> Vec<u8> {
    let level = Compression::fast();
    match coding {
        Coding::Absent | Coding::Identity | Coding::Unknown => plain.to_vec(),
        Coding::EmptyGzip => Vec::new(),
        Coding::Gzip => compress(GzEncoder::new(Vec::new(), level), plain)
            .finish()
            .unwrap(),
        Coding::CorruptGzip => {
            let mut gz = compress(GzEncoder::new(Vec::new(), level), plain)
                .finish()
                .unwrap();
            let crc = gz.len() - 8;
            gz[crc] ^= 0x5a;
            gz
        }
        Coding::Zlib => compress(ZlibEncoder::new(Vec::new(), level), plain)
            .finish()
            .unwrap(),
        Coding::RawDeflate => compress(DeflateEncoder::new(Vec::new(), level), plain)
            .finish()
            .unwrap(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        404 => "Not Found",
        _ => "Internal Server Error",
    }
}

/// Where the client's framing says the body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's bytes and what the model knows of them.
#[derive(Debug)]
struct Wire {
    bytes: Vec<u8>,
    /// Where each interim head ends, and its status.
    interim_ends: Vec<(usize, u16)>,
    /// Where the final head ends.
    head_end: usize,
    /// The final head's fields as sent.
    headers: Vec<(String, String)>,
    /// The body as the client's framing delimits it: what progress counts (without chunk
    /// framing) and what is delivered before content decoding.
    body: Body,
    transferred: Vec<u8>,
    /// For a chunked body: the wire ranges of its data bytes.
    data_ranges: Vec<(usize, usize)>,
    /// What the client delivers on success (decoded when it decodes).
    delivered: Vec<u8>,
    plain_len: usize,
    /// Whether the client may reuse the connection after it (the request's `Connection: close`
    /// aside, bytes after it aside).
    reusable: bool,
    /// The point (in the final head's body wire) where an extension or trailer limit fails.
    over_limit: Option<&'static str>,
}

fn build_wire(exchange: &Exchange, k: usize) -> Wire {
    let a = &exchange.answer;
    let is_head = METHODS[exchange.method] == "HEAD";
    let no_body = is_head || matches!(a.status, 204 | 304);
    let plain = match a.coding {
        Coding::EmptyGzip => Vec::new(),
        _ => plain_body(a.size, a.seed),
    };
    let encoded = encode(a.coding, &plain);
    let mut bytes = Vec::new();
    let mut interim_ends = Vec::new();
    for &status in &a.interim {
        bytes.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
        if status == 103 {
            bytes.extend_from_slice(b"Link: </style.css>; rel=preload\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        interim_ends.push((bytes.len(), status));
    }
    let version = if a.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    bytes.extend_from_slice(format!("{version} {} {}\r\n", a.status, reason(a.status)).as_bytes());
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/octet-stream".into()),
        ("X-Exchange".into(), k.to_string()),
    ];
    if let Some(name) = a.coding.name() {
        headers.push(("Content-Encoding".into(), name.into()));
    }
    match a.frame {
        Frame::Length => headers.push(("Content-Length".into(), encoded.len().to_string())),
        Frame::Chunked => headers.push(("Transfer-Encoding".into(), "chunked".into())),
        Frame::ChunkedAndLength => {
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            headers.push(("Content-Length".into(), encoded.len().to_string()));
        }
        Frame::OtherTe => headers.push(("Transfer-Encoding".into(), "x-stream".into())),
        Frame::Close => {}
    }
    if a.conn_close {
        headers.push(("Connection".into(), "close".into()));
    } else if a.http10 && a.keep_alive_10 {
        headers.push(("Connection".into(), "keep-alive".into()));
    }
    for (name, value) in &headers {
        bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    let head_end = bytes.len();

    // The body's wire form.
    let chunked = matches!(a.frame, Frame::Chunked | Frame::ChunkedAndLength);
    let mut data_ranges = Vec::new();
    let mut over_limit = None;
    let body_wire = if chunked {
        let mut wire = Vec::new();
        let step = a.chunk_size.max(1) as usize;
        let eol: &[u8] = if a.chunk_style & 4 != 0 {
            b"\n"
        } else {
            b"\r\n"
        };
        for (i, piece) in encoded.chunks(step).enumerate() {
            let size = match a.chunk_style & 3 {
                0 => format!("{:x}", piece.len()),
                1 => format!("{:X}", piece.len()),
                2 => format!("00{:x}", piece.len()),
                _ => format!("0{:X}", piece.len()),
            };
            wire.extend_from_slice(size.as_bytes());
            match a.chunks {
                Chunks::Extensions => {
                    wire.extend_from_slice(format!(";n{i}=\"v {i}\";flag").as_bytes())
                }
                Chunks::ExtensionAtLimit(over) if i == 0 => {
                    let len = DEFAULT_MAX_CHUNK_EXTENSION + usize::from(over);
                    wire.push(b';');
                    wire.extend(std::iter::repeat_n(b'e', len - 1));
                    if over {
                        over_limit = Some("chunk extension");
                    }
                }
                _ => {}
            }
            wire.extend_from_slice(eol);
            let start = head_end + wire.len();
            data_ranges.push((start, start + piece.len()));
            wire.extend_from_slice(piece);
            wire.extend_from_slice(eol);
        }
        wire.extend_from_slice(b"0");
        if a.chunks == Chunks::Extensions {
            wire.extend_from_slice(b";last");
        }
        wire.extend_from_slice(eol);
        match a.chunks {
            Chunks::Trailers => wire.extend_from_slice(b"X-Checksum: 1234\r\nX-More: a, b\r\n"),
            Chunks::TrailersAtLimit(over) => {
                // One field line; with the final empty line the section is the limit (+1).
                let total = DEFAULT_MAX_TRAILERS + usize::from(over);
                let pad = total - "X-Pad: \r\n\r\n".len();
                wire.extend_from_slice(b"X-Pad: ");
                wire.extend(std::iter::repeat_n(b'p', pad));
                wire.extend_from_slice(b"\r\n");
                if over {
                    over_limit = Some("trailer section");
                }
            }
            _ => {}
        }
        wire.extend_from_slice(b"\r\n");
        wire
    } else {
        encoded.clone()
    };
    if over_limit == Some("chunk extension") && encoded.is_empty() {
        // No data chunk: the extension went nowhere.
        over_limit = None;
    }

    let keep_alive = !a.conn_close && (!a.http10 || a.keep_alive_10);
    let (body, reusable) = if no_body {
        (Body::None, keep_alive)
    } else {
        match a.frame {
            Frame::Length => (Body::Length(encoded.len() as u64), keep_alive),
            Frame::Chunked if !a.http10 => (Body::Chunked, keep_alive),
            Frame::ChunkedAndLength if !a.http10 => (Body::Chunked, false),
            _ => (Body::UntilClose, false),
        }
    };
    match body {
        // Read to the close: the chunk framing (HTTP/1.0) is part of the body.
        Body::UntilClose => {
            data_ranges = vec![(head_end, head_end + body_wire.len())];
            over_limit = None;
        }
        Body::Length(n) => data_ranges = vec![(head_end, head_end + n as usize)],
        _ => {}
    }
    if body == Body::None {
        over_limit = None;
    }
    if !no_body || a.lie {
        bytes.extend_from_slice(&body_wire);
    }
    let transferred = match body {
        Body::None => Vec::new(),
        Body::UntilClose => body_wire.clone(),
        _ => encoded.clone(),
    };
    let decodes = a.coding.decoded() && body != Body::None;
    let delivered = if decodes {
        plain.clone()
    } else {
        transferred.clone()
    };
    let mut delivered_headers = headers.clone();
    if decodes {
        delivered_headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("content-encoding") && !n.eq_ignore_ascii_case("content-length")
        });
    }
    Wire {
        bytes,
        interim_ends,
        head_end,
        headers: delivered_headers,
        body,
        transferred,
        data_ranges,
        delivered,
        plain_len: plain.len(),
        reusable,
        over_limit,
    }
}

/// What the model expects of an exchange.
#[derive(Debug, Clone)]
enum Expected {
    Response {
        /// What the body is (the whole of it, or a cut read-to-close prefix).
        body: Vec<u8>,
        /// The transferred count at the end.
        transferred: u64,
    },
    Error {
        what: ErrorKind,
        /// Body bytes transferred before it (a bound for progress).
        transferred: u64,
        /// Another error that is as right (where the model cannot tell which comes first).
        or: Option<ErrorKind>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum ErrorKind {
    InvalidRequest,
    Protocol,
    NoFinalResponse(u16),
    Incomplete(u64, Option<u64>),
    Limit(&'static str),
    Decode,
}

fn error_kind(e: &HttpError) -> Option<ErrorKind> {
    Some(match e {
        HttpError::InvalidRequest(_) => ErrorKind::InvalidRequest,
        HttpError::Protocol(_) => ErrorKind::Protocol,
        HttpError::NoFinalResponse { interim } => ErrorKind::NoFinalResponse(*interim),
        HttpError::IncompleteBody { received, expected } => {
            ErrorKind::Incomplete(*received, *expected)
        }
        HttpError::LimitExceeded { what, .. } => ErrorKind::Limit(what),
        HttpError::Decode(_) => ErrorKind::Decode,
        _ => return None,
    })
}

/// Whether the client must refuse the request.
fn invalid(exchange: &Exchange) -> bool {
    exchange.own.transfer_encoding
        || exchange.own.content_length == Some(false)
        || exchange.own.hosts > 1
}

fn body_len(exchange: &Exchange) -> usize {
    match exchange.body {
        ReqBody::Bytes(n) => n as usize,
        _ => 0,
    }
}

fn expected(exchange: &Exchange, wire: &Wire, tls: bool, limit: Option<u32>) -> Expected {
    if invalid(exchange) {
        return Expected::Error {
            what: ErrorKind::InvalidRequest,
            transferred: 0,
            or: None,
        };
    }
    let a = &exchange.answer;
    let buffered = exchange.api != Api::Streaming;
    let limit = limit.filter(|_| buffered).map(|l| l as usize);
    let over = |n: usize| limit.is_some_and(|l| n > l);
    let decodes = a.coding.decoded() && wire.body != Body::None;
    let error = |what, transferred| Expected::Error {
        what,
        transferred,
        or: None,
    };
    let cut = a.cut.map(|_| cut_at(wire, a));
    if let Some(at) = cut.filter(|&at| at < wire.head_end) {
        return match wire.interim_ends.iter().rev().find(|(end, _)| *end == at) {
            Some(&(_, status)) => error(ErrorKind::NoFinalResponse(status), 0),
            None => error(ErrorKind::Protocol, 0),
        };
    }
    if let (Body::Length(n), Some(l)) = (wire.body, limit)
        && n > l as u64
    {
        return error(ErrorKind::Limit("announced response body"), 0);
    }
    let whole = wire.transferred.len() as u64;
    match cut {
        None => {
            if let Some(what) = wire.over_limit {
                if what == "trailer section" && over(wire.delivered.len()) {
                    return error(ErrorKind::Limit("response body"), whole);
                }
                return error(ErrorKind::Limit(what), whole);
            }
            if over(wire.delivered.len()) {
                return error(ErrorKind::Limit("response body"), whole);
            }
            if a.coding == Coding::CorruptGzip && decodes {
                return error(ErrorKind::Decode, whole);
            }
            Expected::Response {
                body: wire.delivered.clone(),
                transferred: whole,
            }
        }
        Some(at) => {
            let received: u64 = wire
                .data_ranges
                .iter()
                .map(|&(start, end)| at.clamp(start, end) - start)
                .sum::<usize>() as u64;
            // Decoded bytes of a prefix are not known exactly: past the limit, either error.
            let limit_or =
                (decodes && over(wire.plain_len)).then_some(ErrorKind::Limit("response body"));
            if !decodes && over(received as usize) {
                return error(ErrorKind::Limit("response body"), received);
            }
            let incomplete = |expected| Expected::Error {
                what: ErrorKind::Incomplete(received, expected),
                transferred: received,
                or: limit_or.clone(),
            };
            match wire.body {
                Body::Length(n) => incomplete(Some(n)),
                Body::Chunked => incomplete(None),
                Body::UntilClose if tls => incomplete(None),
                Body::UntilClose => {
                    let prefix = wire.transferred[..received as usize].to_vec();
                    if decodes && !prefix.is_empty() {
                        Expected::Error {
                            what: ErrorKind::Decode,
                            transferred: received,
                            or: limit_or,
                        }
                    } else if decodes {
                        Expected::Response {
                            body: Vec::new(),
                            transferred: 0,
                        }
                    } else {
                        Expected::Response {
                            body: prefix,
                            transferred: received,
                        }
                    }
                }
                Body::None => unreachable!("cut in the heads"),
            }
        }
    }
}

/// Whether the connection may serve the next exchange (before bytes after the answer).
fn reusable(exchange: &Exchange, wire: &Wire, expected: &Expected) -> bool {
    matches!(expected, Expected::Response { .. })
        && exchange.answer.cut.is_none()
        && !waits_before_next(exchange)
        && wire.reusable
        && exchange.own.connection != Some(true)
}

/// The request's URL path and query.
fn target(case: u64, k: usize) -> String {
    format!("/c{case}/e{k}?q={k}")
}

/// The exact bytes the server should read for exchange `k`.
fn request_bytes(exchange: &Exchange, target: &str, host_field: &str) -> Vec<u8> {
    let method = METHODS[exchange.method];
    let body = request_body(exchange);
    let mut fields: Vec<(String, String)> = own_fields(exchange);
    for (name, value) in [("User-Agent", DEFAULT_USER_AGENT), ("Accept", "*/*")] {
        if !fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            fields.push((name.into(), value.into()));
        }
    }
    let own = &exchange.own;
    if own.hosts == 0 {
        fields.push(("Host".into(), host_field.into()));
    }
    if exchange.auto_common && own.accept_encoding.is_none() && !own.range {
        fields.push(("Accept-Encoding".into(), "gzip, deflate".into()));
    }
    let method_has_body = matches!(method, "POST" | "PUT" | "PATCH");
    if (!body.is_empty() || (method_has_body && exchange.auto_common))
        && own.content_length.is_none()
    {
        fields.push(("Content-Length".into(), body.len().to_string()));
    }
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

fn request_body(exchange: &Exchange) -> Vec<u8> {
    support::pattern(body_len(exchange), exchange.body_seed)
}

/// The request's own fields, in the order the test sets them.
fn own_fields(exchange: &Exchange) -> Vec<(String, String)> {
    let own = &exchange.own;
    let len = body_len(exchange);
    let mut fields = Vec::new();
    let mut add = |name: &str, value: String| fields.push((name.to_string(), value));
    if own.content_type {
        add("Content-Type", "application/x-test".into());
    }
    match own.content_length {
        Some(true) => add("Content-Length", len.to_string()),
        Some(false) => add("Content-Length", (len + 1).to_string()),
        None => {}
    }
    if own.transfer_encoding {
        add("Transfer-Encoding", "chunked".into());
    }
    for i in 0..own.hosts {
        add("Host", format!("virtual{i}.example"));
    }
    match own.connection {
        Some(true) => add("Connection", "close".into()),
        Some(false) => add("Connection", "keep-alive".into()),
        None => {}
    }
    if own.expect {
        add("Expect", "100-continue".into());
    }
    if let Some(ae) = own.accept_encoding {
        add("Accept-Encoding", ae.into());
    }
    if own.range {
        add("Range", "bytes=0-".into());
    }
    fields
}

// ---- the servers -----------------------------------------------------------------------------

/// How the server answers one request.
#[derive(Clone)]
struct Served {
    bytes: Arc<Vec<u8>>,
    /// How many of the bytes to write (fewer when cut short).
    len: usize,
    pieces: u8,
    seed: u64,
    delay: Duration,
    end: End,
    slow_read: bool,
    early: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    /// Keep the connection for the next request.
    Keep,
    /// Close cleanly (close_notify first over TLS).
    Close,
    /// Close abruptly (no close_notify).
    Drop,
}

/// A request a server read.
#[derive(Debug, Clone)]
struct Seen {
    conn: u64,
    target: String,
    raw: Vec<u8>,
    /// Whether the whole body came (an early answer's may not: the client may close first).
    complete: bool,
}

#[derive(Default)]
struct ServerState {
    answers: HashMap<String, Served>,
    seen: Vec<Seen>,
    /// Bytes a server read that were no whole request.
    stray: Vec<String>,
}

struct Servers {
    ports: Vec<u16>,
    state: Arc<Mutex<ServerState>>,
}

impl Servers {
    fn start() -> Servers {
        let state: Arc<Mutex<ServerState>> = Arc::default();
        let ports = HOSTS
            .iter()
            .enumerate()
            .map(|(h, &(tls, host))| {
                let at = if host == "[::1]" {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let listener = TcpListener::bind(at).unwrap();
                let state = Arc::clone(&state);
                let addr: SocketAddr = served::listen(listener, tls, move |reader, serial| {
                    serve(reader, (h as u64) << 32 | serial, &state)
                });
                addr.port()
            })
            .collect();
        Servers { ports, state }
    }
}

/// Reads one request head: `None` at a clean end of the connection.
fn read_head(
    reader: &mut BufReader<Box<dyn Stream>>,
    conn: u64,
    state: &Mutex<ServerState>,
) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => {
                if !raw.is_empty() {
                    state.lock().unwrap().stray.push(format!(
                        "connection {conn:#x}: {} bytes of no whole request head: {:?}",
                        raw.len(),
                        String::from_utf8_lossy(&raw[..raw.len().min(200)])
                    ));
                }
                return None;
            }
            Ok(_) => {}
        }
        if raw.len() > 1 << 20 {
            return None;
        }
        if raw.ends_with(b"\r\n\r\n") || (before == 0 && raw == b"\r\n") {
            return Some(raw);
        }
    }
}

fn head_content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the answer in its pieces; false when the client is gone.
fn write_answer(reader: &mut BufReader<Box<dyn Stream>>, served: &Served) -> bool {
    let bytes = &served.bytes[..served.len];
    let pieces = usize::from(served.pieces.max(1));
    let mut cuts: Vec<usize> = (1..pieces)
        .map(|i| (served.seed.rotate_left(i as u32 * 7) as usize) % bytes.len().max(1))
        .collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).all(|pair| {
        if pair[0] > 0 && !served.delay.is_zero() {
            std::thread::sleep(served.delay);
        }
        served::write_all(reader, &bytes[pair[0]..pair[1]])
    })
}

fn serve(reader: &mut BufReader<Box<dyn Stream>>, conn: u64, state: &Mutex<ServerState>) {
    loop {
        let Some(mut raw) = read_head(reader, conn, state) else {
            return;
        };
        let line = String::from_utf8_lossy(&raw)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let served = state.lock().unwrap().answers.get(&target).cloned();
        let Some(served) = served else {
            state
                .lock()
                .unwrap()
                .stray
                .push(format!("connection {conn:#x}: unknown request {line:?}"));
            return;
        };
        let want = head_content_length(&raw);
        if served.early {
            // The answer first; the body after it (the client sent it meanwhile, or gave the
            // connection up).
            let written = write_answer(reader, &served);
            let mut body = Vec::new();
            let _ = Read::by_ref(reader)
                .take(want as u64)
                .read_to_end(&mut body);
            let complete = body.len() == want;
            raw.extend_from_slice(&body);
            state.lock().unwrap().seen.push(Seen {
                conn,
                target,
                raw,
                complete,
            });
            if !written || !complete {
                return;
            }
        } else {
            let mut body = vec![0; want];
            let read = if served.slow_read {
                std::thread::sleep(Duration::from_millis(2 + served.seed % 10));
                body.chunks_mut(8192).enumerate().all(|(i, piece)| {
                    if i % 16 == 15 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    reader.read_exact(piece).is_ok()
                })
            } else {
                reader.read_exact(&mut body).is_ok()
            };
            if !read {
                state.lock().unwrap().stray.push(format!(
                    "connection {conn:#x}: request {line:?} ended inside its body"
                ));
                return;
            }
            raw.extend_from_slice(&body);
            state.lock().unwrap().seen.push(Seen {
                conn,
                target,
                raw,
                complete: true,
            });
            if !write_answer(reader, &served) {
                return;
            }
        }
        match served.end {
            End::Keep => {}
            End::Close => {
                reader.get_mut().finish();
                return;
            }
            End::Drop => return,
        }
    }
}

// ---- running a case --------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);
const STAT_NAMES: [&str; 8] = [
    "exchanges",
    "responses",
    "invalid requests",
    "other errors",
    "connections reused",
    "streamed",
    "bodies over 1 MiB",
    "https exchanges",
];
static STATS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn count(stat: usize) {
    STATS[stat].fetch_add(1, Ordering::Relaxed);
}

/// What one exchange's client side saw.
#[derive(Default)]
struct Outcome {
    id: Option<RequestId>,
    result: Option<Result<HttpResponse, HttpError>>,
    /// `open_connections()` when the callback ran.
    open_at_done: usize,
    heads: Vec<HttpResponse>,
    data: Vec<u8>,
    /// Stream events after `on_done`, or data before the head.
    misordered: Vec<String>,
    in_send: bool,
}

/// A client-side event, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Down(RequestId, u64, Option<u64>),
    Up(RequestId, u64, u64),
    Done(usize),
    Received(u16),
    Failed(RequestId),
}

struct Ctx {
    case: Case,
    serial: u64,
    client: Weak<HttpClient>,
    base: String,
    outcomes: Vec<RefCell<Outcome>>,
    events: RefCell<Vec<Event>>,
    in_send: Cell<bool>,
}

fn send_exchange(ctx: &Rc<Ctx>, k: usize) {
    let Some(client) = ctx.client.upgrade() else {
        return;
    };
    let exchange = &ctx.case.exchanges[k];
    let url = format!("{}{}", ctx.base, target(ctx.serial, k));
    let body = request_body(exchange);
    let method = METHODS[exchange.method];
    let done = {
        let ctx = Rc::clone(ctx);
        move |result: Result<HttpResponse, HttpError>| on_done(&ctx, k, result)
    };
    ctx.in_send.set(true);
    let id = match exchange.api {
        Api::Shortcut => {
            let content_type = if exchange.own.content_type {
                "application/x-test"
            } else {
                ""
            };
            match method {
                "GET" => client.get(&url, done),
                "HEAD" => client.head(&url, done),
                "POST" => client.post(&url, body, content_type, done),
                "PUT" => client.put(&url, body, content_type, done),
                "PATCH" => client.patch(&url, body, content_type, done),
                "DELETE" => client.delete(&url, done),
                _ => client.options(&url, done),
            }
        }
        Api::Send | Api::Streaming => {
            let mut request = HttpRequest::new(&url)
                .unwrap()
                .with_method(method.parse::<HttpMethod>().unwrap());
            if exchange.body != ReqBody::None {
                request.set_body(body);
            }
            for (name, value) in own_fields(exchange) {
                request.add_header(name, value);
            }
            request.set_auto_add_common_headers(exchange.auto_common);
            if exchange.api == Api::Send {
                client.send(request, done)
            } else {
                let c = Rc::clone(ctx);
                client.send_streaming(request, move |event| on_event(&c, k, event), done)
            }
        }
    };
    ctx.in_send.set(false);
    ctx.outcomes[k].borrow_mut().id = Some(id);
}

fn on_event(ctx: &Ctx, k: usize, event: StreamEvent<'_>) {
    let mut outcome = ctx.outcomes[k].borrow_mut();
    if outcome.result.is_some() {
        outcome
            .misordered
            .push("a stream event after on_done".into());
    }
    match event {
        StreamEvent::Head(response) => outcome.heads.push(response.clone()),
        StreamEvent::Data(data) => {
            if outcome.heads.is_empty() {
                outcome.misordered.push("data before the head".into());
            }
            outcome.data.extend_from_slice(data);
        }
    }
}

fn on_done(ctx: &Rc<Ctx>, k: usize, result: Result<HttpResponse, HttpError>) {
    let open = ctx.client.upgrade().map_or(0, |c| c.open_connections());
    {
        let mut outcome = ctx.outcomes[k].borrow_mut();
        if outcome.result.is_some() {
            outcome.misordered.push("a second on_done".into());
        }
        outcome.in_send |= ctx.in_send.get();
        outcome.result = Some(result);
        outcome.open_at_done = open;
    }
    ctx.events.borrow_mut().push(Event::Done(k));
    let Some(next) = ctx.case.exchanges.get(k + 1) else {
        return;
    };
    match next.from {
        _ if waits_before_next(&ctx.case.exchanges[k]) => {}
        SendFrom::Outside => {}
        SendFrom::Callback => send_exchange(ctx, k + 1),
        SendFrom::Timer(ms) => {
            let c = Rc::clone(ctx);
            Timer::set_timeout(Duration::from_millis(ms.into()), move || {
                send_exchange(&c, k + 1)
            })
            .unwrap();
        }
    }
}

/// Whether the next exchange is sent only once the client closed this one's connection (bytes
/// after a bodiless answer, which may come after the callback).
fn waits_before_next(exchange: &Exchange) -> bool {
    let a = &exchange.answer;
    let no_body = METHODS[exchange.method] == "HEAD" || matches!(a.status, 204 | 304);
    // The body the lie sends may have no bytes.
    let chunked = matches!(a.frame, Frame::Chunked | Frame::ChunkedAndLength);
    let empty = a.coding == Coding::EmptyGzip || (a.size == 0 && !a.coding.decoded());
    no_body && a.lie && (chunked || !empty) && a.cut.is_none() && !invalid(exchange)
}

fn run_case(servers: &Servers, case: &Case) -> Result<(), TestCaseError> {
    let serial = CASES.fetch_add(1, Ordering::Relaxed);
    let (tls, host) = HOSTS[case.host];
    let port = servers.ports[case.host];
    let host_field = format!("{host}:{port}");
    let base = format!("{}://{host_field}", if tls { "https" } else { "http" });
    let wires: Vec<Wire> = (case.exchanges.iter().enumerate())
        .map(|(k, e)| build_wire(e, k))
        .collect();
    let limit = case.limit.map(|limit| match limit {
        Limit::Fixed(n) => n,
        Limit::Near(d) => (wires[0].delivered.len() as u32).saturating_add_signed(d.into()),
    });
    let expectations: Vec<Expected> = (case.exchanges.iter().zip(&wires))
        .map(|(e, w)| expected(e, w, tls, limit))
        .collect();
    {
        let mut state = servers.state.lock().unwrap();
        state.answers.clear();
        state.seen.clear();
        for (k, (exchange, wire)) in case.exchanges.iter().zip(&wires).enumerate() {
            let a = &exchange.answer;
            let len = match a.cut {
                Some(_) => cut_at(wire, a),
                None => wire.bytes.len(),
            };
            // The server closes where the client may not reuse the connection; where it may, the
            // client decides (it closes a connection with bytes after a bodiless answer, or one
            // whose answer it failed).
            let end = if a.cut.is_some() {
                End::Drop
            } else if wire.reusable && exchange.own.connection != Some(true) {
                End::Keep
            } else {
                End::Close
            };
            state.answers.insert(
                target(serial, k),
                Served {
                    bytes: Arc::new(wire.bytes.clone()),
                    len,
                    pieces: a.pieces,
                    seed: a.seed,
                    delay: Duration::from_millis(a.delay_ms.into()),
                    end,
                    slow_read: a.slow_read,
                    early: a.early,
                },
            );
        }
    }

    let mut event_loop = EventLoop::new().unwrap();
    let mut session = HttpSession::new();
    if tls {
        session
            .add_ca_certificate(support::certs::test_pki().ca_pem.as_bytes())
            .unwrap();
    }
    if let Some(limit) = limit {
        session.set_max_response_body_bytes(limit as usize);
    }
    let client = HttpClient::with_session(session).unwrap();
    let ctx = Rc::new(Ctx {
        case: case.clone(),
        serial,
        client: Rc::downgrade(&client),
        base,
        outcomes: case.exchanges.iter().map(|_| RefCell::default()).collect(),
        events: RefCell::default(),
        in_send: Cell::new(false),
    });
    if case.progress {
        let c = Rc::clone(&ctx);
        client
            .download_progress
            .connect(move |&(id, received, total)| {
                c.events.borrow_mut().push(Event::Down(id, received, total))
            })
            .release();
        let c = Rc::clone(&ctx);
        client
            .upload_progress
            .connect(move |&(id, sent, total)| {
                c.events.borrow_mut().push(Event::Up(id, sent, total))
            })
            .release();
    }
    {
        let c = Rc::clone(&ctx);
        client
            .response_received
            .connect(move |r| c.events.borrow_mut().push(Event::Received(r.status())))
            .release();
        let c = Rc::clone(&ctx);
        client
            .error
            .connect(move |(id, _)| c.events.borrow_mut().push(Event::Failed(*id)))
            .release();
    }

    send_exchange(&ctx, 0);
    let n = case.exchanges.len();
    for k in 0..n {
        let finished = support::run_until(&mut event_loop, Duration::from_secs(20), || {
            ctx.outcomes[k].borrow().result.is_some()
        });
        prop_assert!(
            finished,
            "case {serial}: exchange {k} did not finish within 20 s (pending {})",
            client.pending_requests()
        );
        if waits_before_next(&case.exchanges[k]) {
            let closed = support::run_until(&mut event_loop, Duration::from_secs(10), || {
                client.open_connections() == 0
            });
            prop_assert!(
                closed,
                "case {serial}: exchange {k}: the connection with bytes after a bodiless answer \
                 was kept"
            );
        }
        if k + 1 < n
            && (case.exchanges[k + 1].from == SendFrom::Outside
                || waits_before_next(&case.exchanges[k]))
        {
            send_exchange(&ctx, k + 1);
        }
    }
    // A moment more, for anything that would come after a callback.
    support::run_until(&mut event_loop, Duration::from_millis(5), || false);
    prop_assert_eq!(
        client.pending_requests(),
        0,
        "case {}: requests left",
        serial
    );

    // An early answer's request is recorded once its body was read (or given up).
    let valid: HashSet<String> = (0..n)
        .filter(|&k| !invalid(&case.exchanges[k]))
        .map(|k| target(serial, k))
        .collect();
    let recorded = || {
        let state = servers.state.lock().unwrap();
        valid
            .iter()
            .all(|t| state.seen.iter().any(|s| s.target == *t))
    };
    let all_recorded = support::run_until(&mut event_loop, Duration::from_secs(10), recorded);
    prop_assert!(
        all_recorded,
        "case {serial}: requests the servers never read"
    );
    let seen = servers.state.lock().unwrap().seen.clone();
    let stray = std::mem::take(&mut servers.state.lock().unwrap().stray);
    prop_assert!(stray.is_empty(), "case {serial}: servers saw {stray:?}");
    check_case(
        case,
        serial,
        &ctx,
        &wires,
        &expectations,
        &seen,
        &host_field,
        tls,
    )?;
    drop(client);
    Ok(())
}

/// Where a cut answer stops: at least one byte in, and in its heads when it has no body.
fn cut_at(wire: &Wire, a: &Answer) -> usize {
    let permille = usize::from(a.cut.unwrap_or(1000));
    let at = (wire.bytes.len() * permille / 1000).max(1);
    let at = if wire.body == Body::None {
        at.min(wire.head_end - 1)
    } else {
        at.min(wire.bytes.len() - 1)
    };
    at.max(1)
}

#[allow(clippy::too_many_arguments)]
fn check_case(
    case: &Case,
    serial: u64,
    ctx: &Ctx,
    wires: &[Wire],
    expectations: &[Expected],
    seen: &[Seen],
    host_field: &str,
    tls: bool,
) -> Result<(), TestCaseError> {
    let events = ctx.events.borrow().clone();
    // The idle connection, and whether the next exchange must take it (an early answer's
    // connection is reusable only if the whole request had left when the answer ended).
    let mut idle: Option<(u64, bool)> = None;
    let mut used: HashSet<u64> = HashSet::new();
    for (k, ((exchange, wire), expected)) in
        (case.exchanges.iter().zip(wires).zip(expectations)).enumerate()
    {
        count(0);
        if tls {
            count(7);
        }
        let tag = format!("case {serial}: exchange {k} ({exchange:?})");
        let outcome = ctx.outcomes[k].borrow();
        let id = outcome.id.unwrap();
        prop_assert!(!outcome.in_send, "{tag}: its callback ran inside send");
        prop_assert!(
            outcome.misordered.is_empty(),
            "{tag}: {:?}",
            outcome.misordered
        );
        let target = target(serial, k);
        let arrivals: Vec<&Seen> = seen.iter().filter(|s| s.target == target).collect();

        // The request's bytes, and its connection.
        if invalid(exchange) {
            prop_assert!(
                arrivals.is_empty(),
                "{tag}: an invalid request reached the server"
            );
        } else {
            prop_assert_eq!(arrivals.len(), 1, "{}: arrivals", tag);
            let arrival = arrivals[0];
            let want = request_bytes(exchange, &target, host_field);
            let read_all = arrival.raw == want;
            let read_start = !arrival.complete && want.starts_with(&arrival.raw);
            if !read_all && !read_start {
                let head_of = |b: &[u8]| {
                    let end = b
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .unwrap_or(b.len());
                    String::from_utf8_lossy(&b[..end]).into_owned()
                };
                return Err(TestCaseError::fail(format!(
                    "{tag}: the server read {} bytes, the model says {}:\n  read  {:?}\n  model {:?}",
                    arrival.raw.len(),
                    want.len(),
                    head_of(&arrival.raw),
                    head_of(&want)
                )));
            }
            match idle.take() {
                Some((conn, must)) if must || arrival.conn == conn => {
                    prop_assert_eq!(
                        arrival.conn,
                        conn,
                        "{}: not sent on the idle connection",
                        tag
                    );
                    count(4);
                }
                _ => prop_assert!(
                    !used.contains(&arrival.conn),
                    "{tag}: sent on connection {:#x}, which may not be reused",
                    arrival.conn
                ),
            }
            used.insert(arrival.conn);
            if reusable(exchange, wire, expected) && arrival.complete {
                let may = exchange.answer.early && body_len(exchange) > 0;
                idle = Some((arrival.conn, !may));
            }
        }
        let open_expected = match idle {
            Some((_, true)) => 1..=1,
            Some((_, false)) => 0..=1,
            None => 0..=0,
        };
        if !waits_before_next(exchange) {
            prop_assert!(
                open_expected.contains(&outcome.open_at_done),
                "{tag}: {} connections open when the callback ran, the model says {open_expected:?}",
                outcome.open_at_done
            );
        }

        // The outcome.
        let result = outcome.result.as_ref().unwrap();
        let streaming = exchange.api == Api::Streaming;
        let version = if exchange.answer.http10 {
            HttpVersion::Http10
        } else {
            HttpVersion::Http11
        };
        let check_head = |response: &HttpResponse| -> Result<(), TestCaseError> {
            prop_assert_eq!(response.status(), exchange.answer.status, "{}: status", tag);
            prop_assert_eq!(response.reason(), reason(exchange.answer.status), "{}", tag);
            prop_assert_eq!(response.version(), version, "{}: version", tag);
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            prop_assert_eq!(&headers, &wire.headers, "{}: headers", tag);
            prop_assert_eq!(
                response.url().path(),
                format!("/c{serial}/e{k}"),
                "{}: URL",
                tag
            );
            Ok(())
        };
        let delivered_so_far: &[u8] = &outcome.data;
        match (expected, result) {
            (Expected::Response { body, .. }, Ok(response)) => {
                count(1);
                check_head(response)?;
                if streaming {
                    count(5);
                    prop_assert!(response.body().is_empty(), "{tag}: a stream's body");
                    prop_assert_eq!(outcome.heads.len(), 1, "{}: stream heads", tag);
                    check_head(&outcome.heads[0])?;
                    if outcome.data != *body {
                        return Err(TestCaseError::fail(format!(
                            "{tag}: streamed {} bytes, the model says {} (first difference at {:?})",
                            outcome.data.len(),
                            body.len(),
                            first_difference(&outcome.data, body)
                        )));
                    }
                } else if response.body()[..] != body[..] {
                    return Err(TestCaseError::fail(format!(
                        "{tag}: body of {} bytes, the model says {} (first difference at {:?})",
                        response.body().len(),
                        body.len(),
                        first_difference(response.body(), body)
                    )));
                }
                if body.len() > 1 << 20 {
                    count(6);
                }
            }
            (Expected::Error { what, or, .. }, Err(e)) => {
                if *what == ErrorKind::InvalidRequest {
                    count(2);
                } else {
                    count(3);
                }
                let got = error_kind(e);
                prop_assert!(
                    got.as_ref() == Some(what) || (got.is_some() && got == *or),
                    "{tag}: failed with {e:?}, the model says {what:?} (or {or:?})"
                );
                // What was streamed is the start of what a success would have delivered.
                let whole: &[u8] = &wire.delivered;
                prop_assert!(
                    whole.starts_with(delivered_so_far),
                    "{tag}: streamed {} bytes that are not the start of the body",
                    delivered_so_far.len()
                );
                prop_assert!(outcome.heads.len() <= 1, "{tag}: stream heads");
            }
            (expected, result) => {
                return Err(TestCaseError::fail(format!(
                    "{tag}: got {:?}, the model says {expected:?}",
                    result.as_ref().map(|r| (r.status(), r.body().len()))
                )));
            }
        }

        // Signals.
        let done_at = events.iter().position(|e| *e == Event::Done(k)).unwrap();
        let next_done = events[done_at + 1..]
            .iter()
            .position(|e| matches!(e, Event::Done(_)))
            .map_or(events.len(), |p| done_at + 1 + p);
        let signals: Vec<Event> = events[done_at + 1..next_done]
            .iter()
            .filter(|e| matches!(e, Event::Received(_) | Event::Failed(_)))
            .cloned()
            .collect();
        match result {
            Ok(r) => prop_assert_eq!(
                signals,
                vec![Event::Received(r.status())],
                "{}: response_received",
                tag
            ),
            Err(_) => prop_assert_eq!(signals, vec![Event::Failed(id)], "{}: error", tag),
        }
        if case.progress {
            check_progress(&tag, exchange, wire, expected, id, &events, done_at)?;
        }
    }
    Ok(())
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

fn check_progress(
    tag: &str,
    exchange: &Exchange,
    wire: &Wire,
    expected: &Expected,
    id: RequestId,
    events: &[Event],
    done_at: usize,
) -> Result<(), TestCaseError> {
    let mut down = Vec::new();
    let mut up = Vec::new();
    for (at, event) in events.iter().enumerate() {
        match *event {
            Event::Down(i, received, total) if i == id => {
                prop_assert!(at < done_at, "{tag}: download progress after the callback");
                down.push((received, total));
            }
            Event::Up(i, sent, total) if i == id => {
                prop_assert!(at < done_at, "{tag}: upload progress after the callback");
                up.push((sent, total));
            }
            _ => {}
        }
    }
    // Upload: the body's bytes, up to its length.
    let len = body_len(exchange) as u64;
    if invalid(exchange) || len == 0 {
        prop_assert!(
            up.is_empty(),
            "{tag}: upload progress {up:?} without a body sent"
        );
    } else {
        prop_assert!(
            !up.is_empty() || exchange.answer.early,
            "{tag}: no upload progress"
        );
        prop_assert!(
            up.iter().all(|&(sent, total)| total == len && sent <= len),
            "{tag}: upload progress {up:?} for a body of {len}"
        );
        prop_assert!(
            up.windows(2).all(|w| w[0].0 <= w[1].0),
            "{tag}: upload progress {up:?} goes back"
        );
        if !exchange.answer.early {
            prop_assert_eq!(
                up.last().unwrap().0,
                len,
                "{}: upload progress {:?}",
                tag,
                up
            );
        }
    }
    // Download: the body as transferred, each count once.
    let announced = match wire.body {
        Body::Length(n) => Some(n),
        Body::None => Some(0),
        _ => None,
    };
    let bound = match expected {
        Expected::Response { transferred, .. } | Expected::Error { transferred, .. } => {
            *transferred
        }
    };
    for (i, &(received, total)) in down.iter().enumerate() {
        prop_assert!(
            received <= bound,
            "{tag}: download progress {down:?} past {bound}"
        );
        let last = i + 1 == down.len();
        if let Some(n) = announced {
            prop_assert_eq!(total, Some(n), "{}: download progress {:?}", tag, down);
        } else if !last {
            prop_assert_eq!(total, None, "{}: download progress {:?}", tag, down);
        }
        if i > 0 {
            let (before, before_total) = down[i - 1];
            prop_assert!(
                before < received
                    || (last && before == received && before_total.is_none() && total.is_some()),
                "{tag}: download progress {down:?} counts again"
            );
        }
    }
    let head_never_came = matches!(
        expected,
        Expected::Error {
            what: ErrorKind::InvalidRequest
                | ErrorKind::Protocol
                | ErrorKind::NoFinalResponse(_)
                | ErrorKind::Limit("announced response body"),
            ..
        }
    );
    if head_never_came {
        prop_assert!(
            down.is_empty(),
            "{tag}: download progress {down:?} without a body"
        );
    }
    match expected {
        Expected::Response { transferred, .. } => {
            prop_assert_eq!(
                down.last().copied(),
                Some((*transferred, Some(*transferred))),
                "{}: download progress {:?}",
                tag,
                down
            );
        }
        Expected::Error { .. } => prop_assert!(
            down.iter()
                .all(|&(received, total)| total != Some(received) || announced.is_some()),
            "{tag}: download progress {down:?} claims the end of a failed body"
        ),
    }
    if let (Expected::Error { .. }, Some(n)) = (expected, announced) {
        prop_assert!(
            down.iter().all(|&(received, _)| received < n || n == 0),
            "{tag}: download progress {down:?} claims the end of a failed body"
        );
    }
    Ok(())
}

// ---- the test --------------------------------------------------------------------------------

#[test]
fn exchange_bytes_match_the_model() {
    let servers = Servers::start();
    let mut runner = TestRunner::new(Config {
        max_shrink_iters: 1000,
        max_shrink_time: 60_000,
        ..support::model::config(32)
    });
    let started = Instant::now();
    let result = runner.run(&case_strategy(), |case| run_case(&servers, &case));
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
