//! Fuzz target `chunked_decoder`: the chunked transfer-coding decoder alone (RFC 9112 §7.1).
//!
//! Byte 0 picks the mode, bytes 1..4 the piece sizes for split decoding; the rest is the input.
//!
//! Oracles:
//! 1. Chunking (both modes): decoding the input in one piece, in pieces of the sizes above
//!    (cycled) and one byte at a time gives the same result: the same body, consumed count,
//!    completeness and received count, or the same error.
//! 2. Bookkeeping: `received` equals the body length, `consumed` never exceeds the input, and
//!    input is left unconsumed only once the body is complete.
//! 3. Round trip (when byte 0 is odd): the input is not fed as is but read as a list of chunks
//!    and trailers, encoded with the line ends and extensions the bits ask for, followed by
//!    bytes of a next response. The decoder must return exactly the chunk data, be complete,
//!    and consume exactly the encoded body.
#![no_main]

use kdnet::network::http::__fuzz::{DecodedBody, Framing, decode_body};
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 4;
/// Trailer fields in a round-trip body: at most 15 bytes each, far below the 16 KiB limit.
const MAX_TRAILER_FIELDS: usize = 200;

/// What is compared across splits: errors by their full debug text (the decoder's messages
/// depend only on the offending byte, never on where the input was cut).
fn outcome(pieces: &[&[u8]]) -> Result<DecodedBody, String> {
    decode_body(Framing::Chunked, pieces, false).map_err(|e| format!("{e:?}"))
}

fn split<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn check_bookkeeping(input: &[u8], decoded: &DecodedBody) {
    assert_eq!(
        decoded.received,
        decoded.body.len() as u64,
        "received count"
    );
    assert!(decoded.consumed <= input.len(), "consumed past the input");
    if decoded.consumed < input.len() {
        assert!(decoded.complete, "input left over but body incomplete");
    }
}

/// Builds a valid chunked body from `spec`, returning (encoding, expected data).
///
/// `spec` is read as records: a control byte, then (for a chunk) a length byte and that many
/// data bytes. Control bits: 0 = LF only instead of CRLF, 1 = add an extension, 2 = this record
/// is a trailer field instead of a chunk, 3 = whitespace before the extension.
fn encode(spec: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut data = Vec::new();
    let mut trailers = Vec::new();
    let mut rest = spec;
    while let Some((&control, tail)) = rest.split_first() {
        rest = tail;
        let eol: &[u8] = if control & 1 != 0 { b"\n" } else { b"\r\n" };
        if control & 4 != 0 {
            // Stay well inside the decoder's trailer limit (DEFAULT_MAX_TRAILERS).
            if trailers.len() < MAX_TRAILER_FIELDS {
                trailers.push(format!("X-T{}: v{}", control >> 4, control));
            }
            continue;
        }
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        let take = usize::from(len).min(rest.len());
        if take == 0 {
            // A zero-size chunk would end the body early.
            continue;
        }
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        // Hex digit case and leading zeros vary with the control bits too.
        let size = if control & 16 != 0 {
            format!("{take:04X}")
        } else {
            format!("{take:x}")
        };
        wire.extend_from_slice(size.as_bytes());
        if control & 8 != 0 {
            wire.extend_from_slice(b" \t");
        }
        if control & 2 != 0 {
            wire.extend_from_slice(b";name=\"quoted;value\"");
        }
        wire.extend_from_slice(eol);
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(eol);
        data.extend_from_slice(chunk);
    }
    wire.extend_from_slice(b"0\r\n");
    for trailer in &trailers {
        wire.extend_from_slice(trailer.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    (wire, data)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER_LEN {
        return;
    }
    let (header, rest) = input.split_at(HEADER_LEN);
    let sizes: Vec<usize> = header[1..].iter().map(|&b| usize::from(b) + 1).collect();
    let round_trip = header[0] & 1 != 0;

    let (wire, expected) = if round_trip {
        let (mut wire, data) = encode(rest);
        let body_len = wire.len();
        // The start of the next response on a kept-alive connection must stay unconsumed.
        wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        (wire, Some((data, body_len)))
    } else {
        (rest.to_vec(), None)
    };

    let whole = outcome(&[&wire]);
    if let Ok(decoded) = &whole {
        check_bookkeeping(&wire, decoded);
    }
    assert_eq!(whole, outcome(&split(&wire, &sizes)), "whole vs {sizes:?}");
    if wire.len() <= 4096 {
        assert_eq!(whole, outcome(&split(&wire, &[1])), "whole vs bytes");
    }

    if let Some((data, body_len)) = expected {
        let decoded = whole.expect("a valid encoding must decode");
        assert!(decoded.complete, "valid encoding left incomplete");
        assert_eq!(decoded.body, data, "decoded data");
        assert_eq!(decoded.consumed, body_len, "consumed bytes");
    }
});
