//! Fuzz target `content_decoder`: the `Content-Encoding` decoder alone (gzip, deflate as zlib or
//! raw deflate, identity), through `kdnet::network::http::__fuzz::decode_content_with`.
//!
//! Byte 0: bits 0..2 pick the coding, bit 3 = round trip, bits 4..7 the compression level;
//! bytes 1..4 the piece sizes for split decoding; byte 4 where to cut for the truncation check.
//! The rest is the body (as sent, or the data to compress in round-trip mode).
//!
//! Oracles:
//! 1. Chunking: decoding the body in one piece, in pieces of the sizes above (cycled) and one
//!    byte at a time gives the same decoded bytes, or fails with `HttpError::Decode` each time.
//!    Decoded pieces are never empty and never larger than the documented step (96 KiB).
//! 2. Truncation: a body that decodes cut short never decodes to `Ok`, except gzip cut at the
//!    end of a member (a complete gzip file on its own), whose output must then be a prefix of
//!    the whole body's; and a non-empty body that decodes never decodes with one more byte
//!    after it.
//! 3. Round trip (bit 3): the data compressed by flate2 as gzip (one member or two), zlib or raw
//!    deflate decodes to exactly the data.
#![no_main]

use std::io::Write;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use kdnet::network::http::__fuzz::decode_content_with;
use kdnet::network::http::HttpError;
use libfuzzer_sys::fuzz_target;

const HEADER_LEN: usize = 5;
/// A step's 32 KiB buffer plus what its flush drains from the 32 KiB window, with room to spare.
const LARGEST_PIECE: usize = 96 * 1024;
/// Output beyond this is not kept (a small input may be a bomb); only the oracles' work grows.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Gzip,
    GzipTwoMembers,
    Zlib,
    RawDeflate,
    Identity,
}

fn shape(bits: u8) -> (Shape, &'static str) {
    match bits & 7 {
        0 => (Shape::Gzip, "gzip"),
        1 => (Shape::GzipTwoMembers, "x-gzip"),
        2 => (Shape::Zlib, "deflate"),
        3 => (Shape::RawDeflate, "Deflate"),
        4 => (Shape::Identity, "identity"),
        5 => (Shape::Gzip, " GZIP , identity"),
        6 => (Shape::Zlib, "identity,deflate"),
        _ => (Shape::RawDeflate, "deflate"),
    }
}

/// The decoded body and whether it was cut at `MAX_OUTPUT`, or `None` for a decode error (any
/// other error fails the target).
fn decode(encoding: &str, pieces: &[&[u8]]) -> Option<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    let mut overflow = false;
    let result = decode_content_with(encoding, pieces, &mut |piece| {
        assert!(!piece.is_empty(), "empty decoded piece");
        assert!(
            piece.len() <= LARGEST_PIECE,
            "decoded piece of {}",
            piece.len()
        );
        if body.len() + piece.len() <= MAX_OUTPUT {
            body.extend_from_slice(piece);
        } else {
            overflow = true;
        }
    })
    .expect("every coding named here is supported");
    match result {
        Ok(()) => Some((body, overflow)),
        Err(HttpError::Decode(reason)) => {
            assert!(!reason.is_empty() && !reason.ends_with('.'), "{reason:?}");
            None
        }
        Err(other) => panic!("not a decode error: {other:?}"),
    }
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

fn compress(shape: Shape, level: u32, data: &[u8]) -> Vec<u8> {
    let level = Compression::new(level.min(9));
    match shape {
        Shape::Gzip => {
            let mut e = GzEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Shape::GzipTwoMembers => {
            let (a, b) = data.split_at(data.len() / 2);
            let mut body = compress(Shape::Gzip, level.level(), a);
            body.extend_from_slice(&compress(Shape::Gzip, level.level(), b));
            body
        }
        Shape::Zlib => {
            let mut e = ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Shape::RawDeflate => {
            let mut e = DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Shape::Identity => data.to_vec(),
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER_LEN {
        return;
    }
    let (header, rest) = input.split_at(HEADER_LEN);
    let (shape, encoding) = shape(header[0]);
    let round_trip = header[0] & 8 != 0;
    let sizes: Vec<usize> = header[1..4].iter().map(|&b| usize::from(b) + 1).collect();

    let body = if round_trip {
        compress(shape, u32::from(header[0] >> 4), rest)
    } else {
        rest.to_vec()
    };

    // 1. Chunking.
    let whole = decode(encoding, &[&body]);
    assert_eq!(
        whole,
        decode(encoding, &split(&body, &sizes)),
        "whole vs {sizes:?}"
    );
    if body.len() <= 4096 {
        assert_eq!(
            whole,
            decode(encoding, &split(&body, &[1])),
            "whole vs bytes"
        );
    }

    // 3. Round trip.
    if round_trip && rest.len() <= MAX_OUTPUT {
        assert!(
            whole.as_ref().is_some_and(|(data, _)| data == rest),
            "round trip"
        );
    }

    // 2. Truncation and one byte more.
    let Some((decoded, overflow)) = whole else {
        return;
    };
    if body.is_empty() || shape == Shape::Identity || overflow {
        return;
    }
    let cut = usize::from(header[4]) % body.len();
    let prefix = decode(encoding, &[&body[..cut]]);
    if cut > 0
        && let Some((short, _)) = prefix
    {
        let gzip = matches!(shape, Shape::Gzip | Shape::GzipTwoMembers);
        assert!(
            gzip && decoded.starts_with(&short),
            "cut to {cut} of {} bytes decoded",
            body.len()
        );
    }
    let longer = [body.as_slice(), &header[4..5]].concat();
    assert_eq!(
        decode(encoding, &[&longer]),
        None,
        "one byte after the body"
    );
});
