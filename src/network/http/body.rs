//! Sans-IO response body decoder: fixed length, chunked (RFC 9112 §7.1) or read-to-close.
//!
//! Body bytes go straight from the input slice to the caller's callback (no copy, no buffer),
//! and the chunked state machine keeps everything it needs between calls, so any split of the
//! input gives the same body. Bytes after the end of the body are never consumed: they belong
//! to the next response, or tell the caller to close the connection.
//!
//! Chunked states (CR LF may always be a lone LF; a CR must be followed by LF):
//!
//! ```text
//!   SizeDigits ──SP/HTAB──▶ SizeSpace ──';'──▶ Extension
//!   SizeDigits ──';'────────────────────────▶ Extension
//!   SizeDigits / SizeSpace / Extension ──CR LF──▶ (size > 0) Data ──size bytes──▶ DataEnd
//!                                          └──▶ (size = 0) TrailerLineStart
//!   DataEnd ──CR LF──▶ SizeDigits
//!   TrailerLineStart ──other byte──▶ TrailerLine ──CR LF──▶ TrailerLineStart
//!   TrailerLineStart ──CR LF──▶ Done
//! ```

use memchr::memchr2;

use crate::network::http::error::HttpError;
use crate::network::http::framing::BodyFraming;

/// Largest chunk extension accepted on one chunk-size line: 4 KiB (4 096 bytes), counted from
/// the first byte after the size digits to the line end. Extensions are skipped, never stored.
///
/// ```
/// assert_eq!(kdnet::network::http::DEFAULT_MAX_CHUNK_EXTENSION, 4096);
/// ```
pub const DEFAULT_MAX_CHUNK_EXTENSION: usize = 4 * 1024;

/// Largest trailer section accepted after the last chunk: 16 KiB (16 384 bytes), line ends and
/// the final empty line included. Trailers are skipped, never stored.
///
/// ```
/// assert_eq!(kdnet::network::http::DEFAULT_MAX_TRAILERS, 16_384);
/// ```
pub const DEFAULT_MAX_TRAILERS: usize = 16 * 1024;

/// What one [`BodyDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Input bytes used; less than the input only when the body completed before its end.
    pub(crate) consumed: usize,
    /// Whether the body is complete (no more input needed).
    pub(crate) complete: bool,
}

/// Decodes one response body framed as decided by [`body_framing`](super::framing::body_framing).
#[derive(Debug, Clone)]
pub(crate) struct BodyDecoder {
    kind: Kind,
    received: u64,
}

impl BodyDecoder {
    /// A decoder for a body with this framing.
    pub(crate) fn new(framing: BodyFraming) -> Self {
        let kind = match framing {
            BodyFraming::NoBody => Kind::Length { expected: 0 },
            BodyFraming::Length(expected) => Kind::Length { expected },
            BodyFraming::Chunked => Kind::Chunked(ChunkedState::SizeDigits { size: 0, digits: 0 }),
            BodyFraming::UntilClose => Kind::UntilClose { closed: false },
        };
        BodyDecoder { kind, received: 0 }
    }

    /// Consumes body bytes from the start of `input`, passing every piece of body data to `out`
    /// (never an empty piece). Stops at the end of the body; anything after it is left unconsumed.
    ///
    /// Errors are [`HttpError::Protocol`] for malformed chunked framing and
    /// [`HttpError::LimitExceeded`] for an over-long chunk extension or trailer section; the
    /// connection must then be closed.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<Progress, HttpError> {
        let consumed = match &mut self.kind {
            Kind::Length { expected, .. } => {
                let remaining = *expected - self.received;
                let take = clamp_to_usize(remaining).min(input.len());
                emit(&input[..take], &mut self.received, out);
                take
            }
            Kind::Chunked(state) => decode_chunked(state, input, &mut self.received, out)?,
            Kind::UntilClose { closed: true } => 0,
            Kind::UntilClose { closed: false } => {
                emit(input, &mut self.received, out);
                input.len()
            }
        };
        Ok(Progress {
            consumed,
            complete: self.is_complete(),
        })
    }

    /// Tells the decoder the peer closed the connection. Ends a read-to-close body; for a body
    /// that is not complete yet it is [`HttpError::IncompleteBody`].
    pub(crate) fn finish_at_eof(&mut self) -> Result<(), HttpError> {
        if let Kind::UntilClose { closed } = &mut self.kind {
            *closed = true;
        }
        if self.is_complete() {
            return Ok(());
        }
        match &self.kind {
            Kind::Length { expected } => Err(HttpError::IncompleteBody {
                received: self.received,
                expected: Some(*expected),
            }),
            Kind::UntilClose { .. } => Ok(()),
            Kind::Chunked(_) => Err(HttpError::IncompleteBody {
                received: self.received,
                expected: None,
            }),
        }
    }

    /// Tells the decoder the connection ended without proof that the peer meant to end it (a TLS
    /// session closed without close_notify, RFC 9112 §9.8): only a body whose own framing has
    /// ended is complete; a read-to-close body is [`HttpError::IncompleteBody`], since the end of
    /// stream may be a truncation.
    pub(crate) fn finish_at_unauthenticated_eof(&self) -> Result<(), HttpError> {
        if self.is_complete() {
            return Ok(());
        }
        Err(HttpError::IncompleteBody {
            received: self.received,
            expected: match self.kind {
                Kind::Length { expected } => Some(expected),
                _ => None,
            },
        })
    }

    /// Whether the whole body has been decoded.
    pub(crate) fn is_complete(&self) -> bool {
        match &self.kind {
            Kind::Length { expected, .. } => self.received == *expected,
            Kind::Chunked(state) => matches!(state, ChunkedState::Done),
            Kind::UntilClose { closed } => *closed,
        }
    }

    /// Body bytes passed to `out` so far (decoded bytes, without chunk framing).
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Whether only the end of the connection ends this body (read-to-close framing).
    pub(crate) fn reads_to_close(&self) -> bool {
        matches!(self.kind, Kind::UntilClose { .. })
    }

    /// How many body bytes there are in all, when the framing says so before the end (a length,
    /// or no body) or once the body is complete.
    pub(crate) fn total(&self) -> Option<u64> {
        match self.kind {
            Kind::Length { expected } => Some(expected),
            _ if self.is_complete() => Some(self.received),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// `NoBody` is a length of zero.
    Length {
        expected: u64,
    },
    Chunked(ChunkedState),
    UntilClose {
        closed: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Reading the hex chunk size; `digits` so far (leading zeros count).
    SizeDigits { size: u64, digits: u8 },
    /// Whitespace after the size digits; only more of it, `;` or the line end may follow.
    /// `seen` bytes of the extension limit used so far.
    SizeSpace { size: u64, seen: usize },
    /// Skipping a chunk extension up to the end of the size line; `seen` bytes so far.
    Extension { size: u64, seen: usize },
    /// Got CR at the end of the size line, LF must follow.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Right after chunk data: CR LF or LF must follow.
    DataEnd,
    /// Got CR after chunk data, LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final empty line); `seen` trailer bytes so far.
    TrailerLineStart { seen: usize },
    /// Inside a trailer field line.
    TrailerLine { seen: usize },
    /// Got CR inside the trailers; LF must follow. `last` when this ends the empty final line.
    TrailerLf { seen: usize, last: bool },
    /// The body is complete.
    Done,
}

/// Chunk sizes have at most 16 hex digits, which always fit a u64.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

fn decode_chunked(
    state: &mut ChunkedState,
    input: &[u8],
    received: &mut u64,
    out: &mut impl FnMut(&[u8]),
) -> Result<usize, HttpError> {
    let mut pos = 0;
    while pos < input.len() {
        // Each arm consumes at least one byte or finishes the body.
        let byte = input[pos];
        *state = match *state {
            ChunkedState::Done => return Ok(pos),
            ChunkedState::SizeDigits { size, digits } => {
                pos += 1;
                match (hex_value(byte), digits) {
                    (Some(_), MAX_CHUNK_SIZE_DIGITS) => {
                        return Err(protocol("chunk size has more than 16 hex digits"));
                    }
                    (Some(value), _) => ChunkedState::SizeDigits {
                        size: (size << 4) | u64::from(value),
                        digits: digits + 1,
                    },
                    (None, 0) => {
                        return Err(protocol(format!(
                            "chunk size expected, got byte 0x{byte:02x}"
                        )));
                    }
                    (None, _) => end_of_size_digits(size, byte)?,
                }
            }
            ChunkedState::SizeSpace { size, seen } => {
                pos += 1;
                let seen = count_extension_bytes(seen, 1)?;
                match byte {
                    b' ' | b'\t' => ChunkedState::SizeSpace { size, seen },
                    b';' => ChunkedState::Extension { size, seen },
                    b'\r' | b'\n' => after_size_line_byte(size, byte),
                    _ => {
                        return Err(protocol(format!(
                            "invalid byte 0x{byte:02x} after chunk size"
                        )));
                    }
                }
            }
            ChunkedState::Extension { size, seen } => {
                let rest = &input[pos..];
                let skip = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                let seen = count_extension_bytes(seen, skip)?;
                pos += skip;
                match rest.get(skip) {
                    Some(&end) => {
                        pos += 1;
                        after_size_line_byte(size, end)
                    }
                    None => ChunkedState::Extension { size, seen },
                }
            }
            ChunkedState::SizeLf { size } => {
                pos += 1;
                if byte != b'\n' {
                    return Err(protocol("chunk size line has CR without LF"));
                }
                after_size_line(size)
            }
            ChunkedState::Data { remaining } => {
                let take = clamp_to_usize(remaining).min(input.len() - pos);
                emit(&input[pos..pos + take], received, out);
                pos += take;
                match remaining - take as u64 {
                    0 => ChunkedState::DataEnd,
                    remaining => ChunkedState::Data { remaining },
                }
            }
            ChunkedState::DataEnd => {
                pos += 1;
                match byte {
                    b'\r' => ChunkedState::DataLf,
                    b'\n' => ChunkedState::SizeDigits { size: 0, digits: 0 },
                    _ => return Err(protocol("chunk data not followed by CRLF")),
                }
            }
            ChunkedState::DataLf => {
                pos += 1;
                if byte != b'\n' {
                    return Err(protocol("chunk data not followed by CRLF"));
                }
                ChunkedState::SizeDigits { size: 0, digits: 0 }
            }
            ChunkedState::TrailerLineStart { seen } => {
                pos += 1;
                let seen = count_trailer_bytes(seen, 1)?;
                match byte {
                    b'\r' => ChunkedState::TrailerLf { seen, last: true },
                    b'\n' => ChunkedState::Done,
                    _ => ChunkedState::TrailerLine { seen },
                }
            }
            ChunkedState::TrailerLine { seen } => {
                let rest = &input[pos..];
                let skip = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                let seen = count_trailer_bytes(seen, skip)?;
                pos += skip;
                match rest.get(skip) {
                    Some(&end) => {
                        pos += 1;
                        let seen = count_trailer_bytes(seen, 1)?;
                        match end {
                            b'\r' => ChunkedState::TrailerLf { seen, last: false },
                            _ => ChunkedState::TrailerLineStart { seen },
                        }
                    }
                    None => ChunkedState::TrailerLine { seen },
                }
            }
            ChunkedState::TrailerLf { seen, last } => {
                pos += 1;
                if byte != b'\n' {
                    return Err(protocol("trailer line has CR without LF"));
                }
                let seen = count_trailer_bytes(seen, 1)?;
                if last {
                    ChunkedState::Done
                } else {
                    ChunkedState::TrailerLineStart { seen }
                }
            }
        };
    }
    Ok(pos)
}

/// The first byte after the size digits: the line end, or the start of whitespace/extensions.
fn end_of_size_digits(size: u64, byte: u8) -> Result<ChunkedState, HttpError> {
    match byte {
        b'\r' | b'\n' => Ok(after_size_line_byte(size, byte)),
        b';' => Ok(ChunkedState::Extension { size, seen: 1 }),
        // BWS before `;`; allowed, but it must not hide a second number (`3 4`).
        b' ' | b'\t' => Ok(ChunkedState::SizeSpace { size, seen: 1 }),
        _ => Err(protocol(format!("invalid byte 0x{byte:02x} in chunk size"))),
    }
}

/// State after a CR or LF that ends a size line.
fn after_size_line_byte(size: u64, line_end: u8) -> ChunkedState {
    if line_end == b'\r' {
        ChunkedState::SizeLf { size }
    } else {
        after_size_line(size)
    }
}

fn after_size_line(size: u64) -> ChunkedState {
    if size == 0 {
        ChunkedState::TrailerLineStart { seen: 0 }
    } else {
        ChunkedState::Data { remaining: size }
    }
}

fn count_extension_bytes(seen: usize, more: usize) -> Result<usize, HttpError> {
    let seen = seen.saturating_add(more);
    if seen > DEFAULT_MAX_CHUNK_EXTENSION {
        return Err(HttpError::LimitExceeded {
            what: "chunk extension",
            limit: DEFAULT_MAX_CHUNK_EXTENSION,
        });
    }
    Ok(seen)
}

fn count_trailer_bytes(seen: usize, more: usize) -> Result<usize, HttpError> {
    let seen = seen.saturating_add(more);
    if seen > DEFAULT_MAX_TRAILERS {
        return Err(HttpError::LimitExceeded {
            what: "trailer section",
            limit: DEFAULT_MAX_TRAILERS,
        });
    }
    Ok(seen)
}

fn emit(data: &[u8], received: &mut u64, out: &mut impl FnMut(&[u8])) {
    if !data.is_empty() {
        *received = received.saturating_add(data.len() as u64);
        out(data);
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn clamp_to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn protocol(reason: impl Into<String>) -> HttpError {
    HttpError::Protocol(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: BodyFraming, input: &[u8]) -> (Result<Progress, HttpError>, Vec<u8>) {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let progress = decoder.decode(input, &mut |piece| body.extend_from_slice(piece));
        (progress, body)
    }

    #[test]
    fn length_body_stops_at_its_end() {
        let (progress, body) = decode_all(BodyFraming::Length(3), b"abcdef");
        assert_eq!(
            progress.unwrap(),
            Progress {
                consumed: 3,
                complete: true
            }
        );
        assert_eq!(body, b"abc");
    }

    #[test]
    fn no_body_is_complete_before_any_input() {
        let decoder = BodyDecoder::new(BodyFraming::NoBody);
        assert!(decoder.is_complete());
        let (progress, body) = decode_all(BodyFraming::NoBody, b"junk");
        assert_eq!(progress.unwrap().consumed, 0);
        assert!(body.is_empty());
    }

    #[test]
    fn chunked_stops_after_the_final_crlf() {
        let (progress, body) = decode_all(
            BodyFraming::Chunked,
            b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nNEXT",
        );
        assert_eq!(
            progress.unwrap(),
            Progress {
                consumed: 23,
                complete: true
            }
        );
        assert_eq!(body, b"abc");
    }

    #[test]
    fn whitespace_after_chunk_size_may_only_precede_an_extension() {
        let (progress, body) = decode_all(BodyFraming::Chunked, b"3 \t\r\nabc\n0 ;a\n\n");
        assert!(progress.unwrap().complete);
        assert_eq!(body, b"abc");
        let (progress, _) = decode_all(BodyFraming::Chunked, b"3 4\r\nabc\r\n");
        assert!(matches!(progress, Err(HttpError::Protocol(_))));
    }

    #[test]
    fn sixteen_hex_digits_are_accepted_seventeen_are_not() {
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        let progress = decoder.decode(b"ffffffffffffffff\r\nab", &mut |_| {});
        assert!(!progress.unwrap().complete);
        assert_eq!(decoder.received(), 2);
        let (progress, _) = decode_all(BodyFraming::Chunked, b"00000000000000001\r\n");
        assert!(matches!(progress, Err(HttpError::Protocol(_))));
    }

    #[test]
    fn eof_ends_only_read_to_close_bodies() {
        let mut decoder = BodyDecoder::new(BodyFraming::UntilClose);
        decoder.decode(b"abc", &mut |_| {}).unwrap();
        assert!(!decoder.is_complete());
        decoder.finish_at_eof().unwrap();
        assert!(decoder.is_complete());
        assert_eq!(decoder.decode(b"more", &mut |_| {}).unwrap().consumed, 0);

        let mut decoder = BodyDecoder::new(BodyFraming::UntilClose);
        decoder.decode(b"abc", &mut |_| {}).unwrap();
        assert!(matches!(
            decoder.finish_at_unauthenticated_eof(),
            Err(HttpError::IncompleteBody {
                received: 3,
                expected: None
            })
        ));
        assert!(!decoder.is_complete());

        let mut decoder = BodyDecoder::new(BodyFraming::Length(3));
        decoder.decode(b"abc", &mut |_| {}).unwrap();
        assert!(decoder.finish_at_unauthenticated_eof().is_ok());

        let mut decoder = BodyDecoder::new(BodyFraming::Length(5));
        decoder.decode(b"abc", &mut |_| {}).unwrap();
        assert!(matches!(
            decoder.finish_at_eof(),
            Err(HttpError::IncompleteBody {
                received: 3,
                expected: Some(5)
            })
        ));
    }
}
