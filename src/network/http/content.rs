//! Transparent `Content-Encoding` decoding: gzip, deflate, identity (and brotli with the
//! `brotli` feature), streaming, bytes in and decoded pieces out.
//!
//! Output is produced in pieces of about two internal buffers (2 × 32 KiB) at most per step and
//! handed to the callback at once, so a small compressed input never turns into one huge
//! allocation; the total size (decompression bombs) is for the caller to bound.

use std::fmt;
use std::io::{self, Write};

use flate2::write::MultiGzDecoder;
use flate2::{Decompress, FlushDecompress, Status};

use crate::network::http::error::HttpError;
use crate::network::http::headers::HeaderMap;

/// Streaming decoder for one response body's content coding.
pub(crate) struct ContentDecoder {
    coding: Coding,
    saw_input: bool,
}

impl ContentDecoder {
    /// A decoder for a `Content-Encoding` value (a comma-separated list of codings, matched
    /// case-insensitively): `gzip`/`x-gzip`, `deflate`, `identity` (or nothing), and `br` with
    /// the `brotli` feature. `None` when the coding is unknown or several codings are stacked;
    /// the caller then delivers the body as received.
    pub(crate) fn for_encoding(content_encoding: &str) -> Option<Self> {
        Self::for_codings(content_encoding.split(','))
    }

    /// [`ContentDecoder::for_encoding`] over every `Content-Encoding` field of `headers`.
    pub(crate) fn for_headers(headers: &HeaderMap) -> Option<Self> {
        Self::for_codings(
            headers
                .get_all("content-encoding")
                .flat_map(|value| value.split(',')),
        )
    }

    /// Whether this decoder passes bytes through unchanged (no coding, or only `identity`).
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self.coding, Coding::Identity)
    }

    /// Decodes `input`, passing decoded pieces (never empty) to `out`.
    /// [`HttpError::Decode`] for corrupt data, data after the end of the compressed stream, or a
    /// call after [`ContentDecoder::finish`] or after an error.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<(), HttpError> {
        if input.is_empty() {
            return Ok(());
        }
        self.saw_input = true;
        let result = self.coding.decode(input, out);
        if result.is_err() {
            self.coding = Coding::Closed;
        }
        result
    }

    /// Ends the stream at the end of the body: flushes what is left to `out`, and fails with
    /// [`HttpError::Decode`] when the compressed stream is truncated or its checksum is wrong.
    /// An empty body is accepted whatever the coding.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(&[u8])) -> Result<(), HttpError> {
        let coding = std::mem::replace(&mut self.coding, Coding::Closed);
        if !self.saw_input {
            return Ok(());
        }
        coding.finish(out)
    }

    fn for_codings<'a>(elements: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut codings = elements
            .map(|e| e.trim_matches([' ', '\t']))
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        let coding = match codings.next() {
            None => Coding::Identity,
            Some(name) if codings.next().is_none() => Coding::named(name)?,
            // Stacked codings are not undone: each layer multiplies a bomb's ratio (two deflate
            // layers reach about a million to one) and a decoder cannot stop inside its input.
            Some(_) => return None,
        };
        Some(ContentDecoder {
            coding,
            saw_input: false,
        })
    }
}

impl fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentDecoder")
            .field("coding", &self.coding.name())
            .field("saw_input", &self.saw_input)
            .finish()
    }
}

enum Coding {
    Identity,
    Gzip(MultiGzDecoder<Vec<u8>>),
    /// `deflate` is meant to be zlib-wrapped, but some servers send raw deflate; the first two
    /// bytes tell which.
    DeflateUndecided {
        first: Option<u8>,
    },
    Zlib(Inflate),
    RawDeflate(Inflate),
    #[cfg(feature = "brotli")]
    Brotli(Box<brotli::BrotliStream>),
    /// Finished or failed; flate2's writers must not be written to after finishing.
    Closed,
}

impl Coding {
    fn named(name: &str) -> Option<Coding> {
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip(MultiGzDecoder::new(Vec::new())))
        } else if name.eq_ignore_ascii_case("deflate") {
            Some(Coding::DeflateUndecided { first: None })
        } else {
            #[cfg(feature = "brotli")]
            if name.eq_ignore_ascii_case("br") {
                return Some(Coding::Brotli(Box::new(brotli::BrotliStream::new())));
            }
            None
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip(_) => "gzip",
            Coding::DeflateUndecided { .. } => "deflate",
            Coding::Zlib(_) => "deflate (zlib)",
            Coding::RawDeflate(_) => "deflate (raw)",
            #[cfg(feature = "brotli")]
            Coding::Brotli(_) => "br",
            Coding::Closed => "closed",
        }
    }

    fn decode(&mut self, input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), HttpError> {
        match self {
            Coding::Identity => {
                out(input);
                Ok(())
            }
            Coding::Gzip(decoder) => pump(decoder, input, out),
            Coding::Zlib(inflate) | Coding::RawDeflate(inflate) => inflate.decode(input, out),
            #[cfg(feature = "brotli")]
            Coding::Brotli(stream) => stream.decode(input, out),
            Coding::DeflateUndecided { first: None } => match input {
                [only] => {
                    *self = Coding::DeflateUndecided { first: Some(*only) };
                    Ok(())
                }
                [a, b, ..] => {
                    *self = Coding::deflate_for_header(*a, *b);
                    self.decode(input, out)
                }
                [] => Ok(()),
            },
            Coding::DeflateUndecided { first: Some(a) } => match input.first() {
                Some(&b) => {
                    let a = *a;
                    *self = Coding::deflate_for_header(a, b);
                    self.decode(&[a], out)?;
                    self.decode(input, out)
                }
                None => Ok(()),
            },
            Coding::Closed => Err(HttpError::Decode(
                "content decoder used after it finished or failed".into(),
            )),
        }
    }

    fn finish(self, out: &mut impl FnMut(&[u8])) -> Result<(), HttpError> {
        match self {
            Coding::Identity => Ok(()),
            Coding::Gzip(mut decoder) => finish_writer(&mut decoder, out),
            Coding::Zlib(inflate) | Coding::RawDeflate(inflate) => inflate.finish(),
            #[cfg(feature = "brotli")]
            Coding::Brotli(stream) => stream.finish(),
            Coding::DeflateUndecided { .. } => Err(truncated()),
            Coding::Closed => Err(HttpError::Decode(
                "content decoder finished twice or after an error".into(),
            )),
        }
    }

    /// zlib (RFC 1950) when the first two bytes form a valid zlib header with the deflate method
    /// and no preset dictionary; raw deflate (RFC 1951) otherwise.
    fn deflate_for_header(cmf: u8, flg: u8) -> Coding {
        let deflate_method = cmf & 0x0f == 8 && cmf >> 4 <= 7;
        let check_ok = (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
        let preset_dictionary = flg & 0x20 != 0;
        if deflate_method && check_ok && !preset_dictionary {
            Coding::Zlib(Inflate::new(true))
        } else {
            Coding::RawDeflate(Inflate::new(false))
        }
    }
}

/// flate2's write-side gzip decoder, writing into a `Vec<u8>` that is drained after each step.
trait WriteDecoder: Write {
    fn output(&mut self) -> &mut Vec<u8>;
    fn try_finish(&mut self) -> io::Result<()>;
}

impl WriteDecoder for MultiGzDecoder<Vec<u8>> {
    fn output(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn try_finish(&mut self) -> io::Result<()> {
        MultiGzDecoder::try_finish(self)
    }
}

/// Output of one inflate step: 32 KiB.
const INFLATE_BUFFER_BYTES: usize = 32 * 1024;

/// A zlib or raw deflate stream through flate2's low-level inflater, which says when the stream
/// has ended: a body that stops before that is truncated, whatever flate2's version (its write
/// decoders finished such a stream without an error before 1.1.11).
struct Inflate {
    state: Decompress,
    buffer: Box<[u8]>,
    ended: bool,
}

impl Inflate {
    fn new(zlib_header: bool) -> Self {
        Inflate {
            state: Decompress::new(zlib_header),
            buffer: vec![0; INFLATE_BUFFER_BYTES].into_boxed_slice(),
            ended: false,
        }
    }

    fn decode(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), HttpError> {
        loop {
            if self.ended {
                return match input.len() {
                    0 => Ok(()),
                    extra => Err(trailing(extra)),
                };
            }
            let (in_before, out_before) = (self.state.total_in(), self.state.total_out());
            let status = self
                .state
                .decompress(input, &mut self.buffer, FlushDecompress::None)
                .map_err(|e| HttpError::Decode(format!("corrupt compressed data: {e}")))?;
            let used = (self.state.total_in() - in_before) as usize;
            let made = (self.state.total_out() - out_before) as usize;
            if let Some(piece) = self.buffer.get(..made).filter(|p| !p.is_empty()) {
                out(piece);
            }
            input = input.get(used..).unwrap_or_default();
            self.ended = status == Status::StreamEnd;
            // A full buffer may leave decoded bytes behind: step again, even without input.
            if !self.ended && made < self.buffer.len() {
                if input.is_empty() {
                    return Ok(());
                }
                if used == 0 && made == 0 {
                    return Err(HttpError::Decode(
                        "compressed data the decoder cannot make progress with".into(),
                    ));
                }
            }
        }
    }

    fn finish(&self) -> Result<(), HttpError> {
        if self.ended { Ok(()) } else { Err(truncated()) }
    }
}

/// Feeds `input` through `decoder` one step at a time (each step and its flush yield a couple of
/// internal buffers of output at most), handing the output on after every step so it never
/// accumulates.
fn pump(
    decoder: &mut impl WriteDecoder,
    mut input: &[u8],
    out: &mut impl FnMut(&[u8]),
) -> Result<(), HttpError> {
    while !input.is_empty() {
        let used = decoder.write(input).map_err(corrupt);
        // flate2 keeps a step's output in its own buffer until the next write; flushed, it
        // reaches the caller now (a streamed or SSE body is not held back until more bytes come,
        // and the body limit sees every byte before the end).
        let used = used.and_then(|used| decoder.flush().map(|()| used).map_err(corrupt));
        hand_on(decoder.output(), out);
        match used? {
            // The compressed stream has ended and the rest cannot start a new one.
            0 => return Err(trailing(input.len())),
            used => input = input.get(used..).unwrap_or_default(),
        }
    }
    Ok(())
}

fn finish_writer(
    decoder: &mut impl WriteDecoder,
    out: &mut impl FnMut(&[u8]),
) -> Result<(), HttpError> {
    let result = decoder.try_finish();
    hand_on(decoder.output(), out);
    result.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(),
        _ => corrupt(e),
    })
}

fn hand_on(buffer: &mut Vec<u8>, out: &mut impl FnMut(&[u8])) {
    if !buffer.is_empty() {
        out(buffer);
        buffer.clear();
    }
}

fn corrupt(e: io::Error) -> HttpError {
    HttpError::Decode(format!("corrupt compressed data: {e}"))
}

fn trailing(extra: usize) -> HttpError {
    HttpError::Decode(format!(
        "{extra} bytes after the end of the compressed stream"
    ))
}

fn truncated() -> HttpError {
    HttpError::Decode("compressed data ends before the end of its stream".into())
}

#[cfg(feature = "brotli")]
mod brotli {
    //! Brotli through the decoder's streaming core, writing into one fixed buffer that is
    //! handed on whenever it fills.

    use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};

    use super::trailing;
    use crate::network::http::error::HttpError;

    const OUTPUT_BUFFER_BYTES: usize = 32 * 1024;

    pub(super) struct BrotliStream {
        state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
        buffer: Box<[u8]>,
        total_out: usize,
        ended: bool,
    }

    impl BrotliStream {
        pub(super) fn new() -> Self {
            BrotliStream {
                state: BrotliState::new(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                buffer: vec![0; OUTPUT_BUFFER_BYTES].into_boxed_slice(),
                total_out: 0,
                ended: false,
            }
        }

        pub(super) fn decode(
            &mut self,
            input: &[u8],
            out: &mut impl FnMut(&[u8]),
        ) -> Result<(), HttpError> {
            if self.ended {
                return Err(trailing(input.len()));
            }
            let mut available_in = input.len();
            let mut input_offset = 0;
            loop {
                let mut available_out = self.buffer.len();
                let mut output_offset = 0;
                let result = BrotliDecompressStream(
                    &mut available_in,
                    &mut input_offset,
                    input,
                    &mut available_out,
                    &mut output_offset,
                    &mut self.buffer,
                    &mut self.total_out,
                    &mut self.state,
                );
                if let Some(piece) = self.buffer.get(..output_offset).filter(|p| !p.is_empty()) {
                    out(piece);
                }
                match result {
                    BrotliResult::NeedsMoreOutput => {}
                    BrotliResult::NeedsMoreInput => return Ok(()),
                    BrotliResult::ResultSuccess => {
                        self.ended = true;
                        return match input.len().saturating_sub(input_offset) {
                            0 => Ok(()),
                            extra => Err(trailing(extra)),
                        };
                    }
                    BrotliResult::ResultFailure => {
                        return Err(HttpError::Decode("corrupt brotli data".into()));
                    }
                }
            }
        }

        pub(super) fn finish(&self) -> Result<(), HttpError> {
            if self.ended {
                Ok(())
            } else {
                Err(HttpError::Decode(
                    "brotli data ends before the end of its stream".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_header_detection() {
        assert!(matches!(
            Coding::deflate_for_header(0x78, 0x9c),
            Coding::Zlib(_)
        ));
        assert!(matches!(
            Coding::deflate_for_header(0x78, 0x01),
            Coding::Zlib(_)
        ));
        // A raw deflate stream starting with a fixed-Huffman final block.
        assert!(matches!(
            Coding::deflate_for_header(0xcb, 0x48),
            Coding::RawDeflate(_)
        ));
        // Preset dictionary flag: not something HTTP can use.
        assert!(matches!(
            Coding::deflate_for_header(0x78, 0xbb),
            Coding::RawDeflate(_)
        ));
    }

    #[test]
    fn coding_names() {
        assert!(ContentDecoder::for_encoding("X-GZIP").is_some());
        assert!(ContentDecoder::for_encoding(" identity , ").is_some());
        assert!(ContentDecoder::for_encoding("compress").is_none());
        assert!(ContentDecoder::for_encoding("gzip, deflate").is_none());
    }

    fn decode_pieces(encoding: &str, pieces: &[&[u8]]) -> Result<Vec<u8>, HttpError> {
        let mut decoder = ContentDecoder::for_encoding(encoding).unwrap();
        let mut body = Vec::new();
        let mut out = |piece: &[u8]| {
            assert!(!piece.is_empty());
            body.extend_from_slice(piece);
        };
        for piece in pieces {
            decoder.decode(piece, &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(body)
    }

    /// A coding, an encoded body, its decoded form, and where a cut body is still a whole gzip file.
    type Sample = (&'static str, Vec<u8>, Vec<u8>, Vec<usize>);

    fn encoded_samples(text: &[u8]) -> Vec<Sample> {
        use flate2::Compression;
        use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
        fn encode<W: Write>(mut encoder: W, data: &[u8]) -> W {
            encoder.write_all(data).unwrap();
            encoder
        }
        let level = Compression::default();
        let gzip = |data: &[u8]| encode(GzEncoder::new(Vec::new(), level), data);
        let gz = gzip(text).finish().unwrap();
        let first = gzip(&text[..7]).finish().unwrap();
        let two = [first.as_slice(), &gz].concat();
        let zlib = encode(ZlibEncoder::new(Vec::new(), level), text);
        let raw = encode(DeflateEncoder::new(Vec::new(), level), text);
        let text = text.to_vec();
        vec![
            ("gzip", gz, text.clone(), vec![]),
            // Cut at the end of the first member, it is a whole gzip file of its own.
            ("gzip", two, [&text[..7], &text].concat(), vec![first.len()]),
            ("deflate", zlib.finish().unwrap(), text.clone(), vec![]),
            ("deflate", raw.finish().unwrap(), text, vec![]),
        ]
    }

    /// Every split into two pieces and byte by byte decode as the whole does; every cut short
    /// body is a decode error (gzip only decodes when cut at the end of a member).
    #[test]
    fn every_split_agrees_and_every_cut_fails() {
        let text: Vec<u8> = (0..40u32)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect();
        for (encoding, encoded, text, member_ends) in encoded_samples(&text) {
            assert_eq!(decode_pieces(encoding, &[&encoded]).unwrap(), text);
            let bytes: Vec<&[u8]> = encoded.chunks(1).collect();
            assert_eq!(decode_pieces(encoding, &bytes).unwrap(), text);
            for at in 1..encoded.len() {
                let (a, b) = encoded.split_at(at);
                let split = decode_pieces(encoding, &[a, b]);
                assert_eq!(split.unwrap(), text, "{encoding} split at {at}");
                let cut = decode_pieces(encoding, &[a]);
                if member_ends.contains(&at) {
                    assert!(text.starts_with(&cut.unwrap()), "{encoding} cut at {at}");
                } else {
                    assert!(
                        matches!(cut, Err(HttpError::Decode(_))),
                        "{encoding} cut at {at} of {}: {cut:?}",
                        encoded.len()
                    );
                }
            }
        }
    }
}
