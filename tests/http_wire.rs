//! HTTP/1.1 client wire codec: response heads, framing, bodies, content codings and request
//! heads, through the `#[doc(hidden)]` entry points in `kdnet::network::http::__fuzz`.
//!
//! Each `wire_cases!` row is one response rule (RFC 9112 §6.3 and the malformed-input table of
//! the KDNetwork port notes): raw response bytes and the request method in, the expected
//! response or error out. Every row is replayed with several read sizes (whole, byte at a time,
//! odd splits), and rows whose body ends by itself are also replayed without EOF, which is how a
//! hang would show up.

use std::io::Write as _;

use kdnet::network::http::__fuzz::{
    DecodedBody, Framing, WireResponse, content_coding_supported, decode_body, decode_content,
    decode_content_with, encode_request, framing, host_header, parse_head, parse_head_in_steps,
    read_response,
};
use kdnet::network::http::{
    DEFAULT_MAX_CHUNK_EXTENSION, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS, DEFAULT_MAX_TRAILERS,
    HeadLimits, HeaderMap, HttpError, HttpVersion, ResponseHead,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Table harness

struct Resp {
    status: u16,
    framing: Framing,
    reusable: bool,
    body: Vec<u8>,
    complete: bool,
    leftover: usize,
    informational: Vec<u16>,
    headers: Vec<(&'static str, &'static str)>,
}

fn ok(status: u16, framing: Framing, reusable: bool, body: &[u8]) -> Resp {
    Resp {
        status,
        framing,
        reusable,
        body: body.to_vec(),
        complete: true,
        leftover: 0,
        informational: Vec::new(),
        headers: Vec::new(),
    }
}

impl Resp {
    fn leftover(mut self, bytes: usize) -> Self {
        self.leftover = bytes;
        self
    }
    fn after(mut self, informational: &[u16]) -> Self {
        self.informational = informational.to_vec();
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

enum Expect {
    Response(Resp),
    Error(&'static str, fn(&HttpError) -> bool),
}

impl From<Resp> for Expect {
    fn from(resp: Resp) -> Self {
        Expect::Response(resp)
    }
}

macro_rules! fails {
    ($pattern:pat) => {
        Expect::Error(stringify!($pattern), |e| matches!(e, $pattern))
    };
}

macro_rules! wire_cases {
    ($($name:ident: $method:literal $raw:expr => $expect:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check_case($method, &$raw[..], $expect.into());
            }
        )*
    };
}

const READ_SIZES: [usize; 5] = [usize::MAX, 1, 2, 7, 64];

fn check_case(method: &str, raw: &[u8], expect: Expect) {
    for read_size in READ_SIZES {
        let result = read_response(method, raw, read_size, true);
        match &expect {
            Expect::Response(want) => {
                let got = result.unwrap_or_else(|e| {
                    panic!("read size {read_size}: expected a response, got error {e:?}")
                });
                assert_response(&got, want, read_size);
            }
            Expect::Error(what, check) => match result {
                Err(e) => assert!(
                    check(&e),
                    "read size {read_size}: expected {what}, got {e:?}"
                ),
                Ok(got) => panic!("read size {read_size}: expected {what}, got {got:?}"),
            },
        }
    }
    // A body with its own end must complete without the peer closing (KDNetwork H2/H3 hangs).
    if let Expect::Response(want) = &expect {
        if want.framing != Framing::UntilClose {
            for read_size in READ_SIZES {
                let got = read_response(method, raw, read_size, false)
                    .unwrap_or_else(|e| panic!("read size {read_size} without EOF: {e:?}"));
                assert!(
                    got.complete,
                    "read size {read_size}: incomplete without EOF"
                );
            }
        }
    }
}

fn assert_response(got: &WireResponse, want: &Resp, read_size: usize) {
    let ctx = format!("read size {read_size}, got {got:?}");
    assert_eq!(got.head.status, want.status, "{ctx}");
    assert_eq!(got.framing, want.framing, "{ctx}");
    assert_eq!(got.reusable, want.reusable, "reusable, {ctx}");
    assert_eq!(got.body, want.body, "body, {ctx}");
    assert_eq!(got.complete, want.complete, "complete, {ctx}");
    assert_eq!(got.leftover, want.leftover, "leftover, {ctx}");
    assert_eq!(got.informational, want.informational, "{ctx}");
    for (name, value) in &want.headers {
        assert_eq!(
            got.head.headers.get(name),
            Some(*value),
            "header {name}, {ctx}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Framing: Content-Length

wire_cases! {
    content_length_body:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        => ok(200, Framing::Length(5), true, b"hello");
    content_length_zero:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        => ok(200, Framing::Length(0), true, b"");
    content_length_bytes_after_the_body_are_left_over:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
        => ok(200, Framing::Length(2), true, b"ok").leftover(17);
    duplicate_content_length_same_value:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 8\r\n\r\n12345678"
        => ok(200, Framing::Length(8), true, b"12345678");
    content_length_list_of_equal_values:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 6, 06, 6\r\n\r\nabcdef"
        => ok(200, Framing::Length(6), true, b"abcdef");
    duplicate_content_length_differing_values:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Length: 9\r\n\r\n123456789"
        => fails!(HttpError::Protocol(_));
    content_length_list_of_differing_values:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 6, 7\r\n\r\nabcdefg"
        => fails!(HttpError::Protocol(_));
    content_length_with_plus_sign:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: +8\r\n\r\n12345678"
        => fails!(HttpError::Protocol(_));
    content_length_negative:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: -6\r\n\r\nabcdef"
        => fails!(HttpError::Protocol(_));
    content_length_with_trailing_garbage:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 6badness\r\n\r\nabcdef"
        => fails!(HttpError::Protocol(_));
    content_length_with_surrounding_whitespace:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: \t6 \t\r\n\r\nabcdef"
        => ok(200, Framing::Length(6), true, b"abcdef");
    content_length_empty:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    content_length_list_with_empty_element:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 6,\r\n\r\nabcdef"
        => fails!(HttpError::Protocol(_));
    content_length_two_to_the_seventy:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 1180591620717411303424\r\n\r\nabc"
        => fails!(HttpError::Protocol(_));
    content_length_u64_max_is_a_length:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nabc"
        => fails!(HttpError::IncompleteBody { received: 3, expected: Some(u64::MAX) });
    eof_before_the_end_of_a_content_length_body:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"
        => fails!(HttpError::IncompleteBody { received: 3, expected: Some(5) });
}

// ---------------------------------------------------------------------------------------------
// Framing: Transfer-Encoding

wire_cases! {
    chunked_body:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, true, b"hello world");
    chunked_is_case_insensitive:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ChUnKeD\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, true, b"ok");
    chunked_as_final_coding_of_a_list:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, true, b"zz");
    chunked_as_final_coding_over_several_fields:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, true, b"z");
    content_length_and_chunked_uses_chunked_and_closes:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, false, b"hello");
    content_length_after_chunked_uses_chunked_and_closes:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        => ok(200, Framing::Chunked, false, b"ok");
    chunked_not_final_reads_until_close:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\nraw"
        => ok(200, Framing::UntilClose, false, b"0\r\n\r\nraw");
    chunkedchunked_is_not_chunked:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunkedchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        => ok(200, Framing::UntilClose, false, b"2\r\nok\r\n0\r\n\r\n");
    transfer_encoding_without_chunked_ignores_content_length:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef"
        => ok(200, Framing::UntilClose, false, b"abcdef");
    empty_transfer_encoding_reads_until_close:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\nabc"
        => ok(200, Framing::UntilClose, false, b"abc");
    chunked_applied_twice:
        "GET" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    http10_chunked_reads_until_close:
        "GET" b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        => ok(200, Framing::UntilClose, false, b"2\r\nok\r\n0\r\n\r\n");
    no_length_reads_until_close:
        "GET" b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
        => ok(200, Framing::UntilClose, false, b"until the end");
}

// ---------------------------------------------------------------------------------------------
// Connection reuse

wire_cases! {
    http11_connection_close:
        "GET" b"HTTP/1.1 200 OK\r\nConnection: Upgrade, CLOSE\r\nContent-Length: 2\r\n\r\nok"
        => ok(200, Framing::Length(2), false, b"ok");
    http10_without_keep_alive_closes:
        "GET" b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        => ok(200, Framing::Length(2), false, b"ok");
    http10_keep_alive_is_reusable:
        "GET" b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
        => ok(200, Framing::Length(2), true, b"ok");
    http10_keep_alive_and_close_closes:
        "GET" b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        => ok(200, Framing::Length(2), false, b"ok");
}

// ---------------------------------------------------------------------------------------------
// Responses without a body

wire_cases! {
    head_response_with_content_length_has_no_body:
        "HEAD" b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        => ok(200, Framing::NoBody, true, b"");
    head_response_with_body_bytes_leaves_them_over:
        "HEAD" b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        => ok(200, Framing::NoBody, true, b"").leftover(5);
    head_response_with_chunked_has_no_body:
        "HEAD" b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        => ok(200, Framing::NoBody, true, b"");
    no_content_with_content_length:
        "GET" b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"
        => ok(204, Framing::NoBody, true, b"");
    no_content_with_extra_bytes:
        "GET" b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc"
        => ok(204, Framing::NoBody, true, b"").leftover(3);
    not_modified_with_chunked:
        "GET" b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
        => ok(304, Framing::NoBody, true, b"");
    continue_then_final:
        "POST" b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        => ok(200, Framing::Length(2), true, b"ok").after(&[100]);
    early_hints_then_final_keeps_only_final_headers:
        "GET" b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Final: 1\r\n\r\n"
        => ok(200, Framing::Length(0), true, b"").after(&[103]).header("x-final", "1");
    several_interim_responses_then_final:
        "GET" b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 104 Odd\r\nContent-Length: 5\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nx"
        => ok(404, Framing::Length(1), true, b"x").after(&[100, 104]);
    switching_protocols_is_final_and_not_reusable:
        "GET" b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00"
        => ok(101, Framing::NoBody, false, b"").leftover(2);
}

// ---------------------------------------------------------------------------------------------
// Heads: syntax and limits

fn head_with_fields(count: usize) -> Vec<u8> {
    let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..count {
        raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    raw
}

fn head_of_size(bytes: usize) -> Vec<u8> {
    let mut raw = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    raw.resize(bytes - 4, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    raw
}

fn ten_thousand_headers() -> Vec<u8> {
    let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
    for _ in 0..10_000 {
        raw.extend_from_slice(b"a: b\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

wire_cases! {
    lf_only_line_ends:
        "GET" b"HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\nok"
        => ok(200, Framing::Length(2), true, b"ok").header("x", "y");
    empty_header_value_is_kept_not_glued:
        "GET" b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n"
        => ok(200, Framing::Length(0), true, b"").header("x-empty", "").header("content-type", "a");
    status_without_reason:
        "GET" b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"
        => ok(200, Framing::Length(0), true, b"");
    status_999_is_in_range:
        "GET" b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"
        => ok(999, Framing::Length(0), true, b"");
    leading_empty_lines_before_the_status_line:
        "GET" b"\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        => ok(200, Framing::Length(0), true, b"");
    negative_status:
        "GET" b"HTTP/1.1 -12 Bad\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    one_digit_status:
        "GET" b"HTTP/1.1 2 OK\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    four_digit_status:
        "GET" b"HTTP/1.1 2000 OK\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    status_below_100:
        "GET" b"HTTP/1.1 099 Low\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    misspelled_protocol:
        "GET" b"HTTPr/1.1 200 OK\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    http2_status_line:
        "GET" b"HTTP/2 200 OK\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    http09_response_is_rejected:
        "GET" b"<html>hello</html>"
        => fails!(HttpError::Protocol(_));
    obs_fold_is_rejected:
        "GET" b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    space_before_colon_is_rejected:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    bare_cr_in_status_line:
        "GET" b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    bare_cr_in_header_value:
        "GET" b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    nul_in_header_value:
        "GET" b"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n"
        => fails!(HttpError::Protocol(_));
    exactly_the_default_number_of_headers:
        "GET" head_with_fields(DEFAULT_MAX_HEADERS - 1)
        => ok(200, Framing::Length(0), true, b"");
    one_header_over_the_default_limit:
        "GET" head_with_fields(DEFAULT_MAX_HEADERS)
        => fails!(HttpError::TooManyHeaders { limit: 100 });
    ten_thousand_headers_are_too_many:
        "GET" ten_thousand_headers()
        => fails!(HttpError::TooManyHeaders { limit: 100 });
    head_of_exactly_the_byte_limit:
        "GET" head_of_size(DEFAULT_MAX_HEAD_BYTES)
        => ok(200, Framing::UntilClose, false, b"");
    head_one_byte_over_the_byte_limit:
        "GET" head_of_size(DEFAULT_MAX_HEAD_BYTES + 1)
        => fails!(HttpError::HeadTooLarge { limit: 65_536 });
    head_of_100_kib:
        "GET" head_of_size(100 * 1024)
        => fails!(HttpError::HeadTooLarge { limit: 65_536 });
    connection_closed_before_any_byte:
        "GET" b""
        => fails!(HttpError::EmptyResponse);
    connection_closed_inside_the_head:
        "GET" b"HTTP/1.1 200 OK\r\nContent-Len"
        => fails!(HttpError::Protocol(_));
}

/// An endless head fails as soon as the buffer passes the limit, not when the head ends.
#[test]
fn oversized_partial_head_fails_at_once() {
    let limits = HeadLimits::default();
    let partial = head_of_size(100 * 1024);
    let partial = &partial[..DEFAULT_MAX_HEAD_BYTES];
    assert!(matches!(parse_head(partial, &limits), Ok(None)));
    let over = &head_of_size(100 * 1024)[..DEFAULT_MAX_HEAD_BYTES + 1];
    assert!(matches!(
        parse_head(over, &limits),
        Err(HttpError::HeadTooLarge { limit: 65_536 })
    ));
}

#[test]
fn custom_head_limits_apply() {
    let raw = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let two_fields = HeadLimits {
        max_headers: 2,
        ..HeadLimits::default()
    };
    assert!(matches!(
        parse_head(raw, &two_fields),
        Err(HttpError::TooManyHeaders { limit: 2 })
    ));
    let small = HeadLimits {
        max_head_bytes: 20,
        ..HeadLimits::default()
    };
    assert!(matches!(
        parse_head(raw, &small),
        Err(HttpError::HeadTooLarge { limit: 20 })
    ));
}

#[test]
fn head_fields_keep_order_spelling_and_repeats() {
    let raw = b"HTTP/1.0 302 Found\r\nSet-Cookie: a=1\r\nLocation: /x\r\nset-cookie: b=2\r\n\r\n";
    let (head, consumed) = parse_head(raw, &HeadLimits::default()).unwrap().unwrap();
    assert_eq!(consumed, raw.len());
    assert_eq!(head.version, HttpVersion::Http10);
    assert_eq!(head.reason, "Found");
    let fields: Vec<_> = head.headers.iter().collect();
    assert_eq!(
        fields,
        [
            ("Set-Cookie", "a=1"),
            ("Location", "/x"),
            ("set-cookie", "b=2")
        ]
    );
}

#[test]
fn non_utf8_header_value_is_replaced_not_rejected() {
    let raw = b"HTTP/1.1 200 OK\r\nX-Latin1: caf\xe9\r\n\r\n";
    let (head, _) = parse_head(raw, &HeadLimits::default()).unwrap().unwrap();
    assert_eq!(head.headers.get("x-latin1"), Some("caf\u{fffd}"));
}

#[test]
fn obs_fold_error_says_so() {
    let raw = b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n";
    let err = parse_head(raw, &HeadLimits::default()).unwrap_err();
    assert!(err.to_string().contains("obs-fold"), "{err}");
}

#[test]
fn informational_classification() {
    let head = |status| ResponseHead {
        version: HttpVersion::Http11,
        status,
        reason: String::new(),
        headers: HeaderMap::new(),
    };
    assert!(head(100).is_informational());
    assert!(head(199).is_informational());
    assert!(!head(101).is_informational());
    assert!(!head(200).is_informational());
    assert!(!head(99).is_informational());
}

#[test]
fn framing_is_decided_before_any_body_byte() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n";
    let (head, _) = parse_head(raw, &HeadLimits::default()).unwrap().unwrap();
    assert_eq!(framing(false, &head).unwrap(), (Framing::Length(7), true));
    assert_eq!(framing(true, &head).unwrap(), (Framing::NoBody, true));
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies

fn chunked_response(body: &[u8]) -> Vec<u8> {
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(body);
    raw
}

fn long_extension(len: usize) -> Vec<u8> {
    let mut body = b"2;".to_vec();
    body.resize(1 + len, b'x');
    body.extend_from_slice(b"\r\nok\r\n0\r\n\r\n");
    chunked_response(&body)
}

fn trailers_of(len: usize) -> Vec<u8> {
    // `len` counts every trailer byte including the final empty line.
    let mut body = b"2\r\nok\r\n0\r\nX-Pad: ".to_vec();
    let start = body.len();
    body.resize(start + len - "X-Pad: ".len() - 4, b'p');
    body.extend_from_slice(b"\r\n\r\n");
    chunked_response(&body)
}

wire_cases! {
    chunk_extensions_are_skipped:
        "GET" chunked_response(b"2;name=\"quoted;value\";flag\r\nok\r\n0;last\r\n\r\n")
        => ok(200, Framing::Chunked, true, b"ok");
    chunk_extension_at_the_limit:
        "GET" long_extension(DEFAULT_MAX_CHUNK_EXTENSION)
        => ok(200, Framing::Chunked, true, b"ok");
    chunk_extension_over_the_limit:
        "GET" long_extension(DEFAULT_MAX_CHUNK_EXTENSION + 1)
        => fails!(HttpError::LimitExceeded { what: "chunk extension", limit: 4096 });
    chunk_size_in_upper_case_hex_with_leading_zeros:
        "GET" chunked_response(b"000A\r\n0123456789\r\n0\r\n\r\n")
        => ok(200, Framing::Chunked, true, b"0123456789");
    chunk_size_overflow_seventeen_digits:
        "GET" chunked_response(b"10000000000000000\r\nx\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_size_sixteen_digits_is_a_size:
        "GET" chunked_response(b"ffffffffffffffff\r\nabc")
        => fails!(HttpError::IncompleteBody { received: 3, expected: None });
    chunk_size_bad_hex:
        "GET" chunked_response(b"zz\r\nok\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_size_with_sign:
        "GET" chunked_response(b"+2\r\nok\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_size_missing:
        "GET" chunked_response(b"\r\nok\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_size_followed_by_a_second_number:
        "GET" chunked_response(b"2 3\r\nok\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_size_line_with_bare_cr:
        "GET" chunked_response(b"2\rok\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_data_not_followed_by_crlf:
        "GET" chunked_response(b"2\r\nokX\r\n0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunk_data_followed_by_cr_without_lf:
        "GET" chunked_response(b"2\r\nok\rX0\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    chunked_with_lf_only_everywhere:
        "GET" chunked_response(b"2\nok\n1;e\nx\n0\nA: b\n\n")
        => ok(200, Framing::Chunked, true, b"okx");
    trailers_are_skipped:
        "GET" chunked_response(b"2\r\nok\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n")
        => ok(200, Framing::Chunked, true, b"ok");
    trailers_with_lf_only:
        "GET" chunked_response(b"2\r\nok\r\n0\r\nA: b\nC: d\n\n")
        => ok(200, Framing::Chunked, true, b"ok");
    trailers_with_a_nul_byte_are_skipped:
        "GET" chunked_response(b"2\r\nok\r\n0\r\nA: \0b\r\n\r\n")
        => ok(200, Framing::Chunked, true, b"ok");
    trailer_with_bare_cr:
        "GET" chunked_response(b"2\r\nok\r\n0\r\nA: b\rC\r\n\r\n")
        => fails!(HttpError::Protocol(_));
    trailers_at_the_limit:
        "GET" trailers_of(DEFAULT_MAX_TRAILERS)
        => ok(200, Framing::Chunked, true, b"ok");
    trailers_over_the_limit:
        "GET" trailers_of(DEFAULT_MAX_TRAILERS + 1)
        => fails!(HttpError::LimitExceeded { what: "trailer section", limit: 16_384 });
    bytes_after_the_last_chunk_are_left_over:
        "GET" chunked_response(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1")
        => ok(200, Framing::Chunked, true, b"ok").leftover(8);
    eof_inside_chunk_data:
        "GET" chunked_response(b"5\r\nhel")
        => fails!(HttpError::IncompleteBody { received: 3, expected: None });
    eof_inside_a_size_line:
        "GET" chunked_response(b"2\r\nok\r\n1")
        => fails!(HttpError::IncompleteBody { received: 2, expected: None });
    eof_inside_the_trailers:
        "GET" chunked_response(b"2\r\nok\r\n0\r\nA: b\r\n")
        => fails!(HttpError::IncompleteBody { received: 2, expected: None });
}

#[test]
fn body_decoder_counts_received_bytes_and_stops_at_the_end() {
    let pieces: [&[u8]; 3] = [b"3\r\nabc\r", b"\n0\r\n\r\nNEXT", b"more"];
    let decoded = decode_body(Framing::Chunked, &pieces, false).unwrap();
    assert_eq!(
        decoded,
        DecodedBody {
            body: b"abc".to_vec(),
            consumed: 13,
            received: 3,
            complete: true
        }
    );
}

#[test]
fn read_to_close_ends_only_at_eof() {
    let pieces: [&[u8]; 2] = [b"abc", b"def"];
    let open = decode_body(Framing::UntilClose, &pieces, false).unwrap();
    assert!(!open.complete);
    assert_eq!(open.body, b"abcdef");
    let closed = decode_body(Framing::UntilClose, &pieces, true).unwrap();
    assert!(closed.complete);
}

// ---------------------------------------------------------------------------------------------
// Request heads

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    fields.iter().copied().collect()
}

#[test]
fn request_head_targets() {
    let cases = [
        ("http://h/p/q?x=1&y=2#frag", "/p/q?x=1&y=2"),
        ("http://h?x=1", "/?x=1"),
        ("http://h", "/"),
        ("http://h/p?", "/p?"),
        ("http://h/a b", "/a%20b"),
        ("http://h/#only-fragment", "/"),
    ];
    for (input, target) in cases {
        let head = encode_request("GET", &url(input), &HeaderMap::new()).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            format!("GET {target} HTTP/1.1\r\n\r\n"),
            "{input}"
        );
    }
}

#[test]
fn request_head_writes_fields_in_order() {
    let fields = headers(&[
        ("Host", "h:8080"),
        ("X-Empty", ""),
        ("Accept", "*/*"),
        ("accept", "a\tb"),
    ]);
    let head = encode_request("PATCH", &url("http://h:8080/x"), &fields).unwrap();
    assert_eq!(
        head,
        b"PATCH /x HTTP/1.1\r\nHost: h:8080\r\nX-Empty: \r\nAccept: */*\r\naccept: a\tb\r\n\r\n"
    );
}

#[test]
fn request_head_rejects_what_could_split_it() {
    let u = url("http://h/");
    let bad: [(&str, HeaderMap); 9] = [
        ("GE T", HeaderMap::new()),
        ("", HeaderMap::new()),
        ("GET\r\n", HeaderMap::new()),
        ("GET", headers(&[("X", "a\r\nInjected: 1")])),
        ("GET", headers(&[("X", "a\nb")])),
        ("GET", headers(&[("X", "a\0b")])),
        ("GET", headers(&[("Bad Name", "v")])),
        ("GET", headers(&[("", "v")])),
        (
            "POST",
            headers(&[("Content-Length", "3"), ("Transfer-Encoding", "chunked")]),
        ),
    ];
    for (method, fields) in bad {
        let result = encode_request(method, &u, &fields);
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{method:?} {fields:?}: {result:?}"
        );
    }
    let err = encode_request("GET", &u, &headers(&[("X-Trace", "a\rb")])).unwrap_err();
    assert!(err.to_string().contains("X-Trace"), "{err}");
}

#[test]
fn host_header_values() {
    let cases = [
        ("http://h/", "h"),
        ("http://h:80/", "h"),
        ("http://h:8080/", "h:8080"),
        ("https://h:443/", "h"),
        ("https://h:80/", "h:80"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://[::1]/", "[::1]"),
        ("http://user:secret@h/", "h"),
        ("http://127.0.0.1:1/", "127.0.0.1:1"),
        ("http://b\u{fc}cher.example/", "xn--bcher-kva.example"),
    ];
    for (input, host) in cases {
        assert_eq!(host_header(&url(input)), host, "{input}");
    }
}

// ---------------------------------------------------------------------------------------------
// Content codings

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn sample_text() -> Vec<u8> {
    (0..2000u32)
        .flat_map(|i| format!("line {i} of the sample body\n").into_bytes())
        .collect()
}

fn decode_split(encoding: &str, encoded: &[u8], piece: usize) -> Result<Vec<u8>, HttpError> {
    let pieces: Vec<&[u8]> = encoded.chunks(piece).collect();
    decode_content(encoding, &pieces).expect("supported coding")
}

#[test]
fn content_codings_round_trip_at_any_split() {
    let text = sample_text();
    let encoded = [
        ("gzip", gzip(&text)),
        ("x-gzip", gzip(&text)),
        ("GZIP", gzip(&text)),
        ("deflate", zlib(&text)),
        ("deflate", raw_deflate(&text)),
        ("identity", text.clone()),
        ("", text.clone()),
    ];
    for (encoding, data) in &encoded {
        for piece in [usize::MAX, 1, 2, 1000] {
            let decoded = decode_split(encoding, data, piece)
                .unwrap_or_else(|e| panic!("{encoding:?} in pieces of {piece}: {e}"));
            assert!(decoded == text, "{encoding:?} in pieces of {piece}");
        }
    }
}

#[test]
fn unknown_or_stacked_codings_are_reported() {
    assert!(decode_content("compress", &[b"x"]).is_none());
    assert!(decode_content("gzip, br, deflate", &[b"x"]).is_none());
    let stacked: HeaderMap = [
        ("Content-Encoding", "gzip"),
        ("Content-Encoding", "deflate"),
    ]
    .into_iter()
    .collect();
    assert!(!content_coding_supported(&stacked));
    let single: HeaderMap = [("Content-Encoding", "identity, gzip")]
        .into_iter()
        .collect();
    assert!(content_coding_supported(&single));
}

#[test]
fn concatenated_gzip_members_are_all_decoded() {
    let mut both = gzip(b"first ");
    both.extend_from_slice(&gzip(b"second"));
    for piece in [usize::MAX, 1, 5] {
        assert_eq!(decode_split("gzip", &both, piece).unwrap(), b"first second");
    }
}

#[test]
fn empty_body_with_a_coding_is_empty() {
    for encoding in ["gzip", "deflate"] {
        assert_eq!(decode_content(encoding, &[]).unwrap().unwrap(), b"");
    }
}

#[test]
fn broken_compressed_bodies_fail_with_decode() {
    let text = sample_text();
    let gz = gzip(&text);
    let mut bad_crc = gz.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let mut trailing = zlib(b"abc");
    trailing.extend_from_slice(b"junk");
    let mut gz_trailing = gzip(b"abc");
    gz_trailing.extend_from_slice(b"junk");
    let cases: [(&str, &str, Vec<u8>); 7] = [
        ("truncated gzip", "gzip", gz[..gz.len() / 2].to_vec()),
        (
            "gzip without its trailer",
            "gzip",
            gz[..gz.len() - 8].to_vec(),
        ),
        ("gzip with a wrong crc", "gzip", bad_crc),
        ("not gzip at all", "gzip", b"plain text, not gzip".to_vec()),
        ("junk after a zlib stream", "deflate", trailing),
        ("junk after a gzip member", "gzip", gz_trailing),
        ("a single byte of deflate", "deflate", vec![0x78]),
    ];
    for (what, encoding, data) in cases {
        for piece in [usize::MAX, 1] {
            let result = decode_split(encoding, &data, piece);
            assert!(
                matches!(result, Err(HttpError::Decode(_))),
                "{what} in pieces of {piece}: {result:?}"
            );
        }
    }
}

/// A highly compressible body comes out in bounded pieces, not as one allocation.
#[test]
fn decoded_output_is_handed_on_in_bounded_pieces() {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let compressed = gzip(&zeros);
    assert!(compressed.len() < 64 * 1024);
    let decoded = decode_split("gzip", &compressed, usize::MAX).unwrap();
    assert_eq!(decoded.len(), zeros.len());
    let mut largest = 0;
    decode_content_with("gzip", &[&compressed], &mut |piece| {
        largest = largest.max(piece.len())
    })
    .expect("supported coding")
    .unwrap();
    // A step's 32 KiB decoder buffer plus what its flush drains from the 32 KiB window.
    assert!(largest <= 96 * 1024, "largest piece {largest}");
}

#[cfg(feature = "brotli")]
mod brotli_coding {
    use super::*;

    /// A brotli stream holding `data` in one uncompressed meta-block (RFC 7932 §9.2), enough to
    /// test the plumbing without an encoder.
    fn brotli_stored(data: &[u8]) -> Vec<u8> {
        assert!((1..=65_536).contains(&data.len()));
        // WBITS=16 (1 bit 0), ISLAST=0, MNIBBLES=4 (2 bits 0), MLEN-1 (16 bits),
        // ISUNCOMPRESSED=1, then zero padding to the byte boundary.
        let bits: u32 = (((data.len() - 1) as u32) << 4) | (1 << 20);
        let mut out = vec![bits as u8, (bits >> 8) as u8, (bits >> 16) as u8];
        out.extend_from_slice(data);
        // ISLAST=1, ISLASTEMPTY=1.
        out.push(0b11);
        out
    }

    #[test]
    fn brotli_round_trip_at_any_split() {
        let stream = brotli_stored(b"hello, brotli\n");
        for piece in [usize::MAX, 1, 3] {
            assert_eq!(
                decode_split("br", &stream, piece).unwrap(),
                b"hello, brotli\n"
            );
        }
    }

    #[test]
    fn broken_brotli_fails_with_decode() {
        let stream = brotli_stored(b"hello");
        let truncated = &stream[..stream.len() - 1];
        let mut trailing = stream.clone();
        trailing.extend_from_slice(b"junk");
        for data in [truncated, &trailing[..], b"\xff\xff\xff\xff"] {
            let result = decode_split("br", data, usize::MAX);
            assert!(matches!(result, Err(HttpError::Decode(_))), "{result:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Deliberately naive chunked decoder over the whole input, by lines and slices, as the oracle.
/// `Ok((body, consumed, complete))`; `Err(())` for malformed framing. Mirrors the accepted
/// grammar: 1–16 hex digits, optional SP/HTAB, optional `;extension`, CRLF or LF; data; CRLF or
/// LF; trailer lines; empty line.
fn naive_dechunk(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ()> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (line, next) = match take_line(input, pos)? {
            Some(found) => found,
            None => {
                check_size_line_prefix(&input[pos..])?;
                return Ok((body, input.len(), false));
            }
        };
        let size = parse_size_line(line)?;
        pos = next;
        if size == 0 {
            loop {
                match take_line(input, pos)? {
                    None => return Ok((body, input.len(), false)),
                    Some((line, next)) => {
                        pos = next;
                        if line.is_empty() {
                            return Ok((body, pos, true));
                        }
                    }
                }
            }
        }
        let available = (input.len() - pos) as u64;
        if available < size {
            body.extend_from_slice(&input[pos..]);
            return Ok((body, input.len(), false));
        }
        let end = pos + size as usize;
        body.extend_from_slice(&input[pos..end]);
        pos = end;
        match &input[pos..] {
            [] | [b'\r'] => return Ok((body, input.len(), false)),
            [b'\r', b'\n', ..] => pos += 2,
            [b'\n', ..] => pos += 1,
            _ => return Err(()),
        }
    }
}

/// The line starting at `pos` without its CRLF/LF, and where the next line starts; `None` when
/// no LF yet. A CR anywhere but right before the LF is malformed.
fn take_line(input: &[u8], pos: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = &input[pos..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        return match rest.iter().position(|&b| b == b'\r') {
            Some(cr) if cr + 1 < rest.len() => Err(()),
            _ => Ok(None),
        };
    };
    let line = &rest[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return Err(());
    }
    Ok(Some((line, pos + lf + 1)))
}

fn parse_size_line(line: &[u8]) -> Result<u64, ()> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(());
    }
    let rest = &line[digits..];
    let after_space = rest.iter().skip_while(|&&b| b == b' ' || b == b'\t');
    let rest_trimmed: Vec<u8> = after_space.copied().collect();
    if !rest_trimmed.is_empty() && rest_trimmed[0] != b';' {
        return Err(());
    }
    let text = std::str::from_utf8(&line[..digits]).unwrap();
    Ok(u64::from_str_radix(text, 16).unwrap())
}

/// A size line cut short must already look like the start of a valid one.
fn check_size_line_prefix(partial: &[u8]) -> Result<(), ()> {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    if partial.is_empty() {
        return Ok(());
    }
    let digits = partial.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 && !partial.is_empty() {
        return Err(());
    }
    if digits > 16 {
        return Err(());
    }
    parse_size_line(partial).map(|_| ())
}

/// Chunked encoding of `body` cut into `sizes` (cycled), with surface variations.
fn encode_chunked(body: &[u8], sizes: &[usize], style: &ChunkStyle) -> Vec<u8> {
    let eol: &[u8] = if style.lf_only { b"\n" } else { b"\r\n" };
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let size = if style.upper_hex {
            format!("{:0width$X}", n, width = style.zero_pad)
        } else {
            format!("{:0width$x}", n, width = style.zero_pad)
        };
        out.extend_from_slice(size.as_bytes());
        if style.extension {
            out.extend_from_slice(b" ;ext=\"v;x\"");
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(eol);
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0");
    out.extend_from_slice(eol);
    for t in 0..style.trailers {
        out.extend_from_slice(format!("X-T{t}: v").as_bytes());
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out
}

#[derive(Debug, Clone)]
struct ChunkStyle {
    lf_only: bool,
    upper_hex: bool,
    zero_pad: usize,
    extension: bool,
    trailers: usize,
}

fn chunk_style() -> impl Strategy<Value = ChunkStyle> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..6,
        any::<bool>(),
        0usize..3,
    )
        .prop_map(
            |(lf_only, upper_hex, zero_pad, extension, trailers)| ChunkStyle {
                lf_only,
                upper_hex,
                zero_pad,
                extension,
                trailers,
            },
        )
}

/// `data` cut at the (sorted, deduplicated) `cuts`.
fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&data[start..cut]);
        start = cut;
    }
    pieces.push(&data[start..]);
    pieces
}

fn byte_pieces(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(1).collect()
}

/// Outcome of a body decode, comparable across splits.
fn outcome(result: Result<DecodedBody, HttpError>) -> Result<(Vec<u8>, usize, bool), String> {
    result
        .map(|d| {
            assert_eq!(d.received, d.body.len() as u64);
            (d.body, d.consumed, d.complete)
        })
        .map_err(|e| format!("{e:?}"))
}

/// A response head built from arbitrary fields.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let name = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}";
    let value = "[ -~]{0,20}";
    (
        any::<bool>(),
        100u16..=999,
        "[ -~]{0,12}",
        prop::collection::vec((name, value), 0..12),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(http10, status, reason, fields, lf_only, body)| {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let mut raw = format!("{version} {status} {reason}{eol}");
            for (n, v) in fields {
                raw.push_str(&format!("{n}: {v}{eol}"));
            }
            raw.push_str(eol);
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            raw
        })
}

/// A valid head with a few bytes changed, inserted or cut: mostly invalid, close to valid.
fn mutated_head() -> impl Strategy<Value = Vec<u8>> {
    (
        head_bytes(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(mut raw, edits)| {
            for (at, byte, kind) in edits {
                let i = at.index(raw.len() + 1);
                match kind {
                    0 if i < raw.len() => raw[i] = byte,
                    1 => raw.insert(i, byte),
                    _ if i < raw.len() => {
                        raw.remove(i);
                    }
                    _ => raw.push(byte),
                }
            }
            raw
        })
}

fn head_outcome(result: Result<Option<(ResponseHead, usize)>, HttpError>) -> String {
    format!("{result:?}")
}

/// Every growing prefix re-parsed from scratch, as a stateless caller would.
fn parse_head_by_prefixes(raw: &[u8], limits: &HeadLimits) -> String {
    for end in 0..=raw.len() {
        match parse_head(&raw[..end], limits) {
            Ok(None) => continue,
            other => return head_outcome(other),
        }
    }
    head_outcome(Ok(None))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunked_decoding_is_split_independent_and_matches_the_oracle(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in prop::collection::vec(1usize..700, 1..8),
        style in chunk_style(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut encoded = encode_chunked(&body, &sizes, &style);
        let framing_len = encoded.len();
        encoded.extend_from_slice(&tail);
        let oracle = naive_dechunk(&encoded).expect("oracle accepts the encoding");
        prop_assert_eq!(&oracle, &(body.clone(), framing_len, true));

        let whole = outcome(decode_body(Framing::Chunked, &[&encoded], false));
        prop_assert_eq!(&whole, &Ok(oracle.clone()));
        let split = outcome(decode_body(Framing::Chunked, &split_at_cuts(&encoded, &cuts), false));
        prop_assert_eq!(&split, &Ok(oracle.clone()));
        let bytewise = outcome(decode_body(Framing::Chunked, &byte_pieces(&encoded), false));
        prop_assert_eq!(&bytewise, &Ok(oracle));
    }

    #[test]
    fn chunked_decoder_agrees_with_the_oracle_on_damaged_input(
        body in prop::collection::vec(any::<u8>(), 0..200),
        sizes in prop::collection::vec(1usize..40, 1..4),
        style in chunk_style(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut encoded = encode_chunked(&body, &sizes, &style);
        for (at, byte, insert) in edits {
            let i = at.index(encoded.len());
            if insert { encoded.insert(i, byte) } else { encoded[i] = byte }
        }
        let whole = outcome(decode_body(Framing::Chunked, &[&encoded], false));
        let split = outcome(decode_body(Framing::Chunked, &split_at_cuts(&encoded, &cuts), false));
        let bytewise = outcome(decode_body(Framing::Chunked, &byte_pieces(&encoded), false));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(&bytewise, &whole);
        match (naive_dechunk(&encoded), whole) {
            (Ok(expected), Ok(got)) => prop_assert_eq!(expected, got),
            (Err(()), Err(_)) => {}
            (oracle, real) => prop_assert!(false, "oracle {:?} vs decoder {:?}", oracle, real),
        }
    }

    #[test]
    fn head_parse_is_split_independent(raw in head_bytes(), step in 1usize..9) {
        let limits = HeadLimits::default();
        let whole = head_outcome(parse_head(&raw, &limits));
        prop_assert!(whole.starts_with("Ok(Some("), "{}", whole);
        prop_assert_eq!(&head_outcome(parse_head_in_steps(&raw, &limits, 1)), &whole);
        prop_assert_eq!(&head_outcome(parse_head_in_steps(&raw, &limits, step)), &whole);
        prop_assert_eq!(&parse_head_by_prefixes(&raw, &limits), &whole);
    }

    #[test]
    fn damaged_head_parse_is_split_independent(raw in mutated_head(), max_headers in 0usize..6, max_bytes in 8usize..120) {
        let limits = HeadLimits { max_head_bytes: max_bytes, max_headers };
        for limits in [HeadLimits::default(), limits] {
            let whole = head_outcome(parse_head(&raw, &limits));
            prop_assert_eq!(&head_outcome(parse_head_in_steps(&raw, &limits, 1)), &whole);
            prop_assert_eq!(&head_outcome(parse_head_in_steps(&raw, &limits, 5)), &whole);
            prop_assert_eq!(&parse_head_by_prefixes(&raw, &limits), &whole);
        }
    }

    #[test]
    fn random_bytes_never_panic(
        raw in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        length in any::<u64>(),
    ) {
        let limits = HeadLimits { max_head_bytes: 256, max_headers: 4 };
        let _ = parse_head(&raw, &HeadLimits::default());
        let _ = parse_head_in_steps(&raw, &limits, 3);
        let pieces = split_at_cuts(&raw, &cuts);
        for framing in [Framing::Chunked, Framing::Length(length), Framing::UntilClose, Framing::NoBody] {
            let _ = decode_body(framing, &pieces, true);
        }
        for method in ["GET", "HEAD"] {
            let _ = read_response(method, &raw, 1 + cuts.len(), true);
        }
        for coding in ["gzip", "deflate", "br"] {
            let _ = decode_content(coding, &pieces);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_head_never_panic(
        head in head_bytes(),
        te in prop::sample::select(vec!["chunked", "gzip, chunked", "chunked, gzip", ""]),
        rest in prop::collection::vec(any::<u8>(), 0..400),
        read_size in 1usize..50,
    ) {
        // Put framing headers in front of the generated fields so the body path is exercised.
        let split = head.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut raw = head[..split].to_vec();
        if !te.is_empty() {
            raw.extend_from_slice(format!("Transfer-Encoding: {te}\r\n").as_bytes());
        }
        raw.extend_from_slice(&head[split..]);
        raw.extend_from_slice(&rest);
        let _ = read_response("GET", &raw, read_size, true);
        let _ = read_response("GET", &raw, read_size, false);
    }
}
