//! Entry points into the crate-internal HTTP/1.1 wire codec (and the host-name and TLS-name
//! helpers the client's URLs and certificates go through) for integration tests and fuzz
//! targets. Thin wrappers with owned, public result types; not a stable API.

use crate::network::http::body::BodyDecoder;
use crate::network::http::content::ContentDecoder;
use crate::network::http::encode::{encode_request_head, host_header_value};
use crate::network::http::error::HttpError;
use crate::network::http::framing::{BodyFraming, body_framing};
use crate::network::http::head::{HeadParser, HeadStatus, parse_response_head};
use crate::network::http::{HeadLimits, HeaderMap, ResponseHead};

/// Where a response body ends (mirror of the internal framing decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes.
    UntilClose,
}

/// A body decoded by [`decode_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBody {
    /// The decoded body bytes.
    pub body: Vec<u8>,
    /// Input bytes the decoder consumed over all pieces.
    pub consumed: usize,
    /// The decoder's count of body bytes.
    pub received: u64,
    /// Whether the body is complete.
    pub complete: bool,
}

/// A response read by [`read_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResponse {
    /// Status codes of the interim (1xx) heads that were skipped.
    pub informational: Vec<u16>,
    /// The final head.
    pub head: ResponseHead,
    /// The body framing of the final head.
    pub framing: Framing,
    /// Whether the connection may be reused (before looking at leftover bytes).
    pub reusable: bool,
    /// The body, as delivered by the body decoder.
    pub body: Vec<u8>,
    /// Whether the body is complete.
    pub complete: bool,
    /// Bytes after the end of the body (next response, upgraded protocol or garbage).
    pub leftover: usize,
}

/// Parses one head from the start of `buf` in a single call: `None` while incomplete.
pub fn parse_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    Ok(match parse_response_head(buf, limits)? {
        HeadStatus::Partial => None,
        HeadStatus::Complete { head, consumed, .. } => Some((head, consumed)),
    })
}

/// Parses one head from `buf` revealed `step` bytes at a time to one incremental parser, the
/// way a client re-calls it with its growing read buffer. Returns the first non-partial result.
pub fn parse_head_in_steps(
    buf: &[u8],
    limits: &HeadLimits,
    step: usize,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut parser = HeadParser::new(*limits);
    let step = step.max(1);
    let mut end = 0;
    loop {
        end = (end + step).min(buf.len());
        if let HeadStatus::Complete { head, consumed, .. } = parser.parse(&buf[..end])? {
            return Ok(Some((head, consumed)));
        }
        if end == buf.len() {
            return Ok(None);
        }
    }
}

/// The body framing and connection reuse decided for `head`.
pub fn framing(
    request_method_is_head: bool,
    head: &ResponseHead,
) -> Result<(Framing, bool), HttpError> {
    let framing = body_framing(request_method_is_head, head)?;
    Ok((framing.body.into(), framing.reusable))
}

/// Decodes a body with `framing` from `pieces` (one decode call each, stopping once complete),
/// then reports EOF when `eof`.
pub fn decode_body(
    framing: Framing,
    pieces: &[&[u8]],
    eof: bool,
) -> Result<DecodedBody, HttpError> {
    let mut decoder = BodyDecoder::new(framing.into());
    let mut body = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        if decoder.is_complete() {
            break;
        }
        let progress = decoder.decode(piece, &mut |data| body.extend_from_slice(data))?;
        consumed += progress.consumed;
    }
    if eof {
        decoder.finish_at_eof()?;
    }
    Ok(DecodedBody {
        body,
        consumed,
        received: decoder.received(),
        complete: decoder.is_complete(),
    })
}

/// Reads one response to a `request_method` request from `raw`, delivered in reads of
/// `read_size` bytes, the way the client drives the codec: heads (skipping 1xx except 101),
/// framing, body, and EOF after the last read when `eof`.
pub fn read_response(
    request_method: &str,
    raw: &[u8],
    read_size: usize,
    eof: bool,
) -> Result<WireResponse, HttpError> {
    let limits = HeadLimits::default();
    let mut reads = raw.chunks(read_size.max(1));
    let mut head_buf: Vec<u8> = Vec::new();
    let mut parser = HeadParser::new(limits);
    let mut informational = Vec::new();

    let (head, rest) = 'head: loop {
        while let HeadStatus::Complete { head, consumed, .. } = parser.parse(&head_buf)? {
            head_buf.drain(..consumed);
            if !head.is_informational() {
                break 'head (head, head_buf);
            }
            informational.push(head.status);
            parser = HeadParser::new(limits);
        }
        match reads.next() {
            Some(read) => head_buf.extend_from_slice(read),
            None if !eof => {
                return Err(HttpError::Protocol("test input ended inside a head".into()));
            }
            None if raw.is_empty() => return Err(HttpError::EmptyResponse),
            None if head_buf.is_empty() && !informational.is_empty() => {
                return Err(HttpError::NoFinalResponse {
                    interim: informational[informational.len() - 1],
                });
            }
            None => {
                return Err(HttpError::Protocol(
                    "connection closed before the response head was complete".into(),
                ));
            }
        }
    };

    let framing = body_framing(request_method == "HEAD", &head)?;
    let mut decoder = BodyDecoder::new(framing.body);
    let mut body = Vec::new();
    let mut leftover = 0;
    for read in std::iter::once(rest.as_slice()).chain(reads) {
        if decoder.is_complete() {
            leftover += read.len();
            continue;
        }
        let progress = decoder.decode(read, &mut |data| body.extend_from_slice(data))?;
        leftover += read.len() - progress.consumed;
    }
    if eof {
        decoder.finish_at_eof()?;
    }
    Ok(WireResponse {
        informational,
        head,
        framing: framing.body.into(),
        reusable: framing.reusable,
        body,
        complete: decoder.is_complete(),
        leftover,
    })
}

/// Decodes a whole body with `Content-Encoding: encoding` from `pieces`; `None` when the coding
/// is not supported.
pub fn decode_content(encoding: &str, pieces: &[&[u8]]) -> Option<Result<Vec<u8>, HttpError>> {
    let mut body = Vec::new();
    let result = decode_content_with(encoding, pieces, &mut |data| body.extend_from_slice(data))?;
    Some(result.map(|()| body))
}

/// Like [`decode_content`], handing each decoded piece to `out` as the decoder produces it.
pub fn decode_content_with(
    encoding: &str,
    pieces: &[&[u8]],
    out: &mut dyn FnMut(&[u8]),
) -> Option<Result<(), HttpError>> {
    let mut decoder = ContentDecoder::for_encoding(encoding)?;
    let mut out = |data: &[u8]| out(data);
    let mut run = || {
        for piece in pieces {
            decoder.decode(piece, &mut out)?;
        }
        decoder.finish(&mut out)
    };
    Some(run())
}

/// Whether `headers` name a content coding the decoder supports.
pub fn content_coding_supported(headers: &HeaderMap) -> bool {
    ContentDecoder::for_headers(headers).is_some()
}

/// The request head bytes for `method` on `url` with `headers`.
pub fn encode_request(
    method: &str,
    url: &url::Url,
    headers: &HeaderMap,
) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    encode_request_head(method, url, headers, &[], &mut out)?;
    Ok(out)
}

/// The `Keep-Alive` fields of `headers` as the connection pool reads them:
/// `(timeout seconds, max requests)`.
pub fn keep_alive(headers: &HeaderMap) -> (Option<u64>, Option<u64>) {
    let found = crate::network::http::framing::keep_alive(headers);
    (found.timeout_secs, found.max)
}

/// Whether `host` may be handed to the resolver (the check a lookup runs on its IDNA form).
pub fn check_host_name(host: &str) -> Result<(), crate::network::SocketError> {
    crate::network::dns::check_host_name(host)
}

/// `host` read as an IPv4 address in one of the forms URLs accept (`127.1`, `0x7f.0.0.1`).
pub fn numeric_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    crate::network::dns::numeric_ipv4(host)
}

/// WHATWG's "ends in a number": such a host is an IPv4 address or invalid.
pub fn ends_in_a_number(host: &str) -> bool {
    crate::network::dns::ends_in_a_number(host)
}

/// `host` in its IDNA (ASCII) form, as lookups and TLS use it.
pub fn ascii_host(host: &str) -> Result<String, crate::network::SocketError> {
    crate::network::dns::ascii_host(host).map(|h| h.into_owned())
}

/// The display name of a name a certificate presents (rustls' `Debug` form of a
/// subjectAltName entry), or `None` for an entry no connection can be made to.
pub fn connectable_name(presented: &str) -> Option<String> {
    crate::network::tls::config::connectable_name(presented)
}

/// The `Host` header value for `url`.
pub fn host_header(url: &url::Url) -> String {
    host_header_value(url)
}

impl From<BodyFraming> for Framing {
    fn from(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::NoBody => Framing::NoBody,
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked,
            BodyFraming::UntilClose => Framing::UntilClose,
        }
    }
}

impl From<Framing> for BodyFraming {
    fn from(framing: Framing) -> Self {
        match framing {
            Framing::NoBody => BodyFraming::NoBody,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked,
            Framing::UntilClose => BodyFraming::UntilClose,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_after_interim_heads_only_is_no_final_response() {
        for read_size in [1, 7, 1000] {
            let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n";
            let e = read_response("GET", raw, read_size, true).unwrap_err();
            assert!(
                matches!(e, HttpError::NoFinalResponse { interim: 103 }),
                "{e:?}"
            );
            let cut = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2";
            let e = read_response("GET", cut, read_size, true).unwrap_err();
            assert!(matches!(e, HttpError::Protocol(_)), "{e:?}");
        }
    }
}
