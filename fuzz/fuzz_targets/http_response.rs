//! Fuzz target `http_response`: response head parsing and body framing, driven the way the
//! client drives them (`kdnet::network::http::__fuzz::read_response`).
//!
//! Byte 0: bit 0 = the request was HEAD, bit 1 = the peer closed after the last byte; byte 1:
//! the read size for the split run. The rest is what the server sent.
//!
//! Oracles:
//! 1. Chunking: reading the response in one read, in reads of the size from byte 1 and one
//!    byte at a time gives the same response (heads, framing, body, completeness, leftover) or
//!    the same kind of error. Protocol errors are compared by kind only: a head rejected early
//!    (from its first bytes) and the same head rejected whole may word the reason differently.
//! 2. Head parser: the stateless and the incremental head parsers agree on every input.
//! 3. Framing rules (RFC 9112 §6.3): HEAD, 1xx, 204 and 304 have no body; chunked needs a
//!    `Transfer-Encoding` on HTTP/1.1; a length needs `Content-Length` and no
//!    `Transfer-Encoding`; a read-to-close body and a 101 never leave the connection reusable;
//!    a response with a body and both `Content-Length` and `Transfer-Encoding` never does either.
//! 4. Body bookkeeping: head + body + leftover never exceed the input; a complete length body
//!    has exactly that length; a read-to-close body after EOF is complete with nothing left.
//! 5. Header lookups on the final head: `get`, `get_all` and `contains` (which compare a name's
//!    length first) equal a naive case-insensitive scan over `iter()`, for every field name of
//!    the head in its own, upper and lower case and for the names the client looks up; the
//!    `Keep-Alive` reader never panics and never reports `timeout=0`.
#![no_main]

use std::mem::discriminant;

use kdnet::network::http::__fuzz::{
    Framing, WireResponse, framing, keep_alive, parse_head, parse_head_in_steps, read_response,
};
use kdnet::network::http::{HeadLimits, HeaderMap, HttpError, HttpVersion};
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 2;

/// An error reduced to what must not depend on read sizes.
#[derive(Debug, PartialEq, Eq)]
enum ErrorKey {
    /// Kind only (see the module comment).
    Protocol,
    /// Everything else, by its full debug text.
    Other(String),
}

fn key(error: &HttpError) -> ErrorKey {
    if discriminant(error) == discriminant(&HttpError::Protocol(String::new())) {
        ErrorKey::Protocol
    } else {
        ErrorKey::Other(format!("{error:?}"))
    }
}

fn read(method: &str, raw: &[u8], read_size: usize, eof: bool) -> Result<WireResponse, ErrorKey> {
    read_response(method, raw, read_size, eof).map_err(|e| key(&e))
}

fn check_head_parsers(raw: &[u8], step: usize) {
    let limits = HeadLimits::default();
    let whole = parse_head(raw, &limits).map_err(|e| key(&e));
    let steps = parse_head_in_steps(raw, &limits, step).map_err(|e| key(&e));
    assert_eq!(
        whole, steps,
        "stateless vs incremental head parser, step {step}"
    );
    if let Ok(Some((head, consumed))) = &whole {
        assert!(*consumed <= raw.len());
        assert!((100..=999).contains(&head.status), "status {}", head.status);
    }
}

/// Names the client looks up in a response head.
const CLIENT_NAMES: [&str; 12] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
    "content-type",
    "location",
    "set-cookie",
    "retry-after",
    "www-authenticate",
    "upgrade",
    "",
];

fn check_lookup(headers: &HeaderMap, name: &str) {
    let naive: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect();
    let all: Vec<&str> = headers.get_all(name).collect();
    assert_eq!(all, naive, "get_all({name:?})");
    assert_eq!(headers.get(name), naive.first().copied(), "get({name:?})");
    assert_eq!(
        headers.contains(name),
        !naive.is_empty(),
        "contains({name:?})"
    );
}

fn check_headers(headers: &HeaderMap) {
    for name in CLIENT_NAMES {
        check_lookup(headers, name);
    }
    for (name, _) in headers.iter() {
        check_lookup(headers, name);
        check_lookup(headers, &name.to_ascii_uppercase());
        check_lookup(headers, &name.to_ascii_lowercase());
    }
    let (timeout, _max) = keep_alive(headers);
    assert_ne!(timeout, Some(0), "Keep-Alive timeout=0 reported");
}

fn check_response(is_head: bool, eof: bool, raw: &[u8], response: &WireResponse) {
    let head = &response.head;
    assert!(!head.is_informational(), "final head is 1xx");
    for &status in &response.informational {
        assert!(
            (100..200).contains(&status) && status != 101,
            "interim {status}"
        );
    }
    // The framing reported is the framing rule applied to the final head.
    let decided = framing(is_head, head).expect("framing was decided once already");
    assert_eq!(decided, (response.framing, response.reusable), "framing");

    let headers = &head.headers;
    check_headers(headers);
    let has_te = headers.contains("transfer-encoding");
    let has_cl = headers.contains("content-length");
    let no_body = is_head || (100..200).contains(&head.status) || matches!(head.status, 204 | 304);
    if no_body {
        assert_eq!(response.framing, Framing::NoBody, "status {}", head.status);
    }
    match response.framing {
        Framing::NoBody => assert!(response.body.is_empty() && response.complete),
        Framing::Chunked => assert!(has_te && head.version == HttpVersion::Http11),
        Framing::Length(n) => {
            assert!(
                has_cl && !has_te,
                "length framing without a sole Content-Length"
            );
            assert!(response.body.len() as u64 <= n);
            assert_eq!(response.complete, response.body.len() as u64 == n);
        }
        Framing::UntilClose => {
            assert!(!response.reusable, "read-to-close body left reusable");
            assert_eq!(response.complete, eof);
            if eof {
                assert_eq!(response.leftover, 0, "leftover after a read-to-close body");
            }
        }
    }
    // Rule 1 (no body) comes first: a HEAD, 204 or 304 answer has no length to be ambiguous
    // about, so only a response with a body loses its connection for carrying both fields.
    if head.status == 101 || (has_te && has_cl && !no_body) {
        assert!(
            !response.reusable,
            "connection reusable after status {}",
            head.status
        );
    }
    if !response.complete {
        assert_eq!(response.leftover, 0, "leftover before the body ended");
    }
    // The body is never longer than the input (chunked framing only shrinks it).
    assert!(
        response.body.len() + response.leftover <= raw.len(),
        "more out than in"
    );
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER_LEN {
        return;
    }
    let (header, raw) = input.split_at(HEADER_LEN);
    let is_head = header[0] & 1 != 0;
    let eof = header[0] & 2 != 0;
    let method = if is_head { "HEAD" } else { "GET" };
    let read_size = usize::from(header[1]) + 1;

    check_head_parsers(raw, read_size);

    let whole = read(method, raw, raw.len(), eof);
    if let Ok(response) = &whole {
        check_response(is_head, eof, raw, response);
    }
    let split = read(method, raw, read_size, eof);
    assert_eq!(whole, split, "one read vs reads of {read_size}");
    if raw.len() <= 2048 {
        let bytes = read(method, raw, 1, eof);
        assert_eq!(whole, bytes, "one read vs one byte per read");
    }
});
