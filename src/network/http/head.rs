//! Sans-IO parser for the response head: status line and header fields (RFC 9112 §4–5).
//!
//! httparse tokenizes; this module adds what httparse leaves to its caller: the byte and count
//! limits (KDNetwork H18), the status range, empty values kept as empty values (H14), and a
//! search for the blank line that ends the head, so that a head arriving one byte per read is
//! tokenized once instead of once per read.
//!
//! The caller keeps every byte it received since the head began in one buffer and passes the
//! whole buffer on each call. [`HeadStatus::Complete`] says how many bytes the head took; the
//! rest of the buffer is body (or the next response).

use std::mem::MaybeUninit;

use memchr::{memchr, memchr_iter, memmem};

use crate::network::http::error::HttpError;
use crate::network::http::headers::HeaderMap;
use crate::network::http::version::HttpVersion;

/// Default for [`HeadLimits::max_head_bytes`]: 64 KiB (65 536 bytes), from the status line up to
/// and including the blank line.
///
/// ```
/// assert_eq!(kdnet::network::http::DEFAULT_MAX_HEAD_BYTES, 65_536);
/// ```
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;

/// Default for [`HeadLimits::max_headers`]: 100 header fields.
///
/// ```
/// assert_eq!(kdnet::network::http::DEFAULT_MAX_HEADERS, 100);
/// ```
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Bounds on one response head; exceeding them fails the response instead of buffering without
/// end.
///
/// ```
/// use kdnet::network::http::{HeadLimits, DEFAULT_MAX_HEADERS};
///
/// let limits = HeadLimits { max_head_bytes: 16 * 1024, ..HeadLimits::default() };
/// assert_eq!(limits.max_headers, DEFAULT_MAX_HEADERS);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head in bytes, status line and final blank line included
    /// ([`HttpError::HeadTooLarge`] beyond it).
    pub max_head_bytes: usize,
    /// Most header fields; a repeated name counts once per field line
    /// ([`HttpError::TooManyHeaders`] beyond it).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// A parsed response head: status line and header fields, in the order received.
///
/// ```
/// use kdnet::network::http::{HeaderMap, HttpVersion, ResponseHead};
///
/// let head = ResponseHead {
///     version: HttpVersion::Http11,
///     status: 103,
///     reason: "Early Hints".into(),
///     headers: HeaderMap::new(),
/// };
/// assert!(head.is_informational());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Protocol version of the status line.
    pub version: HttpVersion,
    /// Status code, always in `100..=999`.
    pub status: u16,
    /// Reason phrase; empty when absent, or when it held non-ASCII bytes (they carry no meaning).
    pub reason: String,
    /// Header fields; names keep the server's spelling, empty values are kept. Values that are not
    /// UTF-8 have the offending bytes replaced by U+FFFD, except `Location`, whose bytes above
    /// 0x7F are then percent-encoded (`%E9`), as browsers request them; a `Set-Cookie` holding
    /// U+FFFD is then not stored in the cookie jar (it could not go back as the server set it).
    pub headers: HeaderMap,
}

impl ResponseHead {
    /// A head with nothing in it (status 0), to stand in for one taken out of a box that is
    /// kept for reuse; allocates nothing.
    pub(crate) fn empty() -> Self {
        ResponseHead {
            version: HttpVersion::Http11,
            status: 0,
            reason: String::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Whether this is an interim `1xx` response that the client skips before the final one
    /// (`100 Continue`, `103 Early Hints`, …). `101 Switching Protocols` is not: after it the
    /// connection speaks another protocol, so it ends the HTTP exchange.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// What [`parse_response_head`] / [`HeadParser::parse`] found in the buffer so far.
#[derive(Debug)]
pub(crate) enum HeadStatus {
    /// No complete head yet; call again with more bytes appended.
    Partial,
    /// The head is complete and took the first `consumed` bytes of the buffer.
    Complete {
        /// The parsed head.
        head: ResponseHead,
        /// Bytes of the buffer that belong to the head.
        consumed: usize,
        /// The reason phrase is its status's standard one ([`standard_reason`]) and was left
        /// out of `head` (empty there, not allocated), as a parser made with
        /// [`HeadParser::sharing_standard_reasons`] does.
        standard_reason: bool,
    },
}

/// Parses the head at the start of `buf`, the whole of what was received for this response so
/// far. Stateless: each call looks at the whole buffer again, so a caller that reads in many small
/// pieces should keep a [`HeadParser`] instead (same results, linear total work).
pub(crate) fn parse_response_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<HeadStatus, HttpError> {
    HeadParser::new(*limits).parse(buf)
}

/// Incremental form of [`parse_response_head`]: remembers how far it has searched, so re-calling
/// with a growing buffer costs only the new bytes. One parser per head; every call must pass the
/// same buffer, possibly longer than last time.
#[derive(Debug, Clone)]
pub(crate) struct HeadParser {
    limits: HeadLimits,
    /// Length of the CR/LF run before the status line (httparse skips such empty lines), once a
    /// byte that is neither has arrived.
    leading_blank: Option<usize>,
    /// Whether the start of the status line has been checked, so garbage (a non-HTTP server,
    /// HTTP/0.9) fails at once rather than at the head limit.
    status_line_checked: bool,
    /// Offset from which the search for the end of the head resumes.
    searched: usize,
    /// Leave a standard reason phrase out of the head (see [`HeadStatus::Complete`]).
    share_standard_reason: bool,
}

impl HeadParser {
    /// A parser for one head under `limits`.
    pub(crate) fn new(limits: HeadLimits) -> Self {
        HeadParser {
            limits,
            leading_blank: None,
            status_line_checked: false,
            searched: 0,
            share_standard_reason: false,
        }
    }

    /// A parser for one head that leaves a standard reason phrase (`200 OK`, `404 Not Found`,
    /// …) out of the head it returns and says so instead: the client's responses then share the
    /// static text (an allocation less per response).
    pub(crate) fn sharing_standard_reasons(limits: HeadLimits) -> Self {
        HeadParser {
            share_standard_reason: true,
            ..HeadParser::new(limits)
        }
    }

    /// Looks for a complete head at the start of `buf`.
    ///
    /// Errors: [`HttpError::HeadTooLarge`] as soon as `buf` holds more than the byte limit without
    /// a complete head, [`HttpError::TooManyHeaders`], and [`HttpError::Protocol`] for a malformed
    /// status line or field (obs-fold, bare CR, status outside `100..=999`, …).
    pub(crate) fn parse(&mut self, buf: &[u8]) -> Result<HeadStatus, HttpError> {
        // A head must end within the limit, so nothing past it is ever examined.
        let window = &buf[..buf.len().min(self.limits.max_head_bytes)];
        if self.searched == 0
            && !self.status_line_checked
            // (Header slots on the stack: a larger limit over a large read would allocate.)
            && self.limits.max_headers <= INLINE_HEADER_SLOTS
            && window.first().is_some_and(|&b| b != b'\r' && b != b'\n')
        {
            // A head that came whole (the usual case: one read) is tokenized where it lies,
            // without a search for its end first. Anything else (a partial head, a malformed one)
            // takes the path below, which gives it the same answer as if this had not been
            // tried.
            if let Ok(Some((head, consumed, standard_reason))) = self.tokenize(window) {
                return Ok(HeadStatus::Complete {
                    head,
                    consumed,
                    standard_reason,
                });
            }
        }
        if let Some(lead) = self.leading_blank(window) {
            let mut from = self.searched.max(lead);
            loop {
                match find_blank_line(window, from) {
                    BlankLine::EndsAt(end) => match self.tokenize(&window[..end])? {
                        Some((head, _, standard_reason)) => {
                            return Ok(HeadStatus::Complete {
                                head,
                                consumed: end,
                                standard_reason,
                            });
                        }
                        // Not reachable for input past the leading empty lines; move on
                        // rather than trust that.
                        None => from = end - 1,
                    },
                    BlankLine::NotYet { resume_at } => {
                        // An unfinished head is checked as far as its status line goes, so that
                        // garbage fails now rather than at the byte limit. A complete one was
                        // just parsed whole: its status line errs there, the same way.
                        if !self.status_line_checked {
                            self.check_status_line_start(window, lead)?;
                        }
                        self.searched = resume_at;
                        break;
                    }
                }
            }
        }
        if buf.len() > self.limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge {
                limit: self.limits.max_head_bytes,
            });
        }
        Ok(HeadStatus::Partial)
    }

    fn leading_blank(&mut self, window: &[u8]) -> Option<usize> {
        if self.leading_blank.is_none() {
            self.leading_blank = window.iter().position(|&b| b != b'\r' && b != b'\n');
        }
        self.leading_blank
    }

    fn check_status_line_start(&mut self, window: &[u8], lead: usize) -> Result<(), HttpError> {
        let rest = window.get(lead..).unwrap_or_default();
        let (probe_len, line_complete) = match memchr(b'\n', rest) {
            Some(i) => (i + 1, true),
            None => (rest.len(), false),
        };
        let probe_len = probe_len.min(STATUS_PROBE_BYTES);
        let probe = window.get(..lead + probe_len).unwrap_or_default();
        let mut no_headers: [httparse::Header<'_>; 0] = [];
        match httparse::Response::new(&mut no_headers).parse(probe) {
            Ok(_) => {}
            Err(e) => return Err(malformed(e, probe)),
        }
        self.status_line_checked = line_complete || probe_len == STATUS_PROBE_BYTES;
        Ok(())
    }

    /// Runs httparse over a candidate head (ending in a blank line), or over everything received
    /// (the head and what follows it). `None` if httparse still wants more, which for a candidate
    /// head only leading empty lines can cause; with the head, how many bytes it took, and
    /// whether its reason phrase was left out as the standard one.
    fn tokenize(
        &self,
        head_bytes: &[u8],
    ) -> Result<Option<(ResponseHead, usize, bool)>, HttpError> {
        // A HeaderMap addresses its text with 32-bit offsets, and lossy decoding can triple a
        // byte: refuse heads that could not fit, whatever limit was configured.
        if head_bytes.len() > MAX_HEAD_BYTES_ANY_LIMIT {
            return Err(HttpError::HeadTooLarge {
                limit: MAX_HEAD_BYTES_ANY_LIMIT,
            });
        }
        // A field line takes at least three bytes (`a:` LF), so more slots than that could never
        // fill: this keeps a huge configured limit from turning into a huge allocation.
        let slots = self.limits.max_headers.min(head_bytes.len() / 3 + 1);
        // Left uninitialised: httparse writes the slots it fills, and filling 128 empty ones
        // first cost more than the parse of a short head.
        let mut inline =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; INLINE_HEADER_SLOTS];
        let mut heap = Vec::new();
        let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if slots <= INLINE_HEADER_SLOTS {
            &mut inline[..slots]
        } else {
            heap.resize_with(slots, MaybeUninit::uninit);
            &mut heap
        };
        let mut response = httparse::Response::new(&mut []);
        let consumed = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            head_bytes,
            headers,
        ) {
            Ok(httparse::Status::Complete(consumed)) => consumed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            Err(e) => return Err(malformed(e, head_bytes)),
        };
        let version = match response.version {
            Some(0) => HttpVersion::Http10,
            Some(1) => HttpVersion::Http11,
            other => {
                return Err(HttpError::Protocol(format!(
                    "unsupported HTTP version 1.{}",
                    other.unwrap_or_default()
                )));
            }
        };
        let status = response.code.unwrap_or_default();
        if !(100..=999).contains(&status) {
            return Err(HttpError::Protocol(format!(
                "status code {status:03} outside 100..=999"
            )));
        }
        // One exact-size allocation for the whole map (it may live as long as a stream).
        let text_bytes = response
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        let mut headers = HeaderMap::with_capacity(response.headers.len(), text_bytes);
        // The head checked as UTF-8 in one pass (as a rule it is ASCII): each value is then cut
        // out of it rather than checked on its own, which cost more per value than the pass.
        let head_text = std::str::from_utf8(&head_bytes[..consumed]).ok();
        let base = head_bytes.as_ptr() as usize;
        for h in response.headers.iter() {
            let checked = head_text.and_then(|text| {
                let at = (h.value.as_ptr() as usize).checked_sub(base)?;
                text.get(at..at + h.value.len())
            });
            match checked.map_or_else(|| std::str::from_utf8(h.value), Ok) {
                Ok(value) => headers.push(h.name, value),
                // A URL in a legacy charset: its bytes, percent-encoded, are what a browser
                // requests; U+FFFD would point somewhere else.
                Err(_) if h.name.eq_ignore_ascii_case("location") => {
                    headers.push(h.name, &percent_encode_non_ascii(h.value));
                }
                Err(_) => headers.push(h.name, &String::from_utf8_lossy(h.value)),
            }
        }
        let reason = response.reason.unwrap_or_default();
        let standard =
            self.share_standard_reason && standard_reason(status).is_some_and(|r| r == reason);
        Ok(Some((
            ResponseHead {
                version,
                status,
                reason: if standard {
                    String::new()
                } else {
                    reason.to_owned()
                },
                headers,
            },
            consumed,
            standard,
        )))
    }
}

/// The reason phrase RFC 9110 §15 gives `status`, for the statuses most responses carry.
pub(crate) fn standard_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// The largest head accepted even under a larger configured limit (about 1.4 GiB).
const MAX_HEAD_BYTES_ANY_LIMIT: usize = (u32::MAX / 3) as usize;

/// Header slots kept on the stack; larger limits use one heap array per head.
const INLINE_HEADER_SLOTS: usize = 128;

/// How much of the status line is checked before the head is complete: enough for the version,
/// the code and the start of the reason, little enough to stay cheap when re-checked per read.
const STATUS_PROBE_BYTES: usize = 32;

enum BlankLine {
    /// The head ends just before this offset.
    EndsAt(usize),
    /// No end yet; later bytes may complete a candidate starting at `resume_at`.
    NotYet { resume_at: usize },
}

/// Finds the first empty line (LF LF or LF CR LF) whose LF is at or after `from`.
fn find_blank_line(window: &[u8], from: usize) -> BlankLine {
    let rest = window.get(from..).unwrap_or_default();
    for i in memchr_iter(b'\n', rest) {
        let lf = from + i;
        match (window.get(lf + 1), window.get(lf + 2)) {
            (Some(b'\n'), _) => return BlankLine::EndsAt(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return BlankLine::EndsAt(lf + 3),
            (None, _) | (Some(b'\r'), None) => return BlankLine::NotYet { resume_at: lf },
            _ => {}
        }
    }
    BlankLine::NotYet {
        resume_at: window.len(),
    }
}

/// `bytes` with every byte above 0x7F written as `%XX` (the rest is ASCII, kept as is).
fn percent_encode_non_ascii(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn malformed(error: httparse::Error, head_bytes: &[u8]) -> HttpError {
    // httparse reports a folded line as a bad header name; say what it really is.
    let folded = matches!(error, httparse::Error::HeaderName)
        && (memmem::find(head_bytes, b"\n ").is_some()
            || memmem::find(head_bytes, b"\n\t").is_some());
    if folded {
        HttpError::Protocol("obsolete line folding (obs-fold) in a response header".into())
    } else {
        HttpError::Protocol(format!("malformed response head: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (ResponseHead, usize) {
        match parse_response_head(buf, &HeadLimits::default()) {
            Ok(HeadStatus::Complete { head, consumed, .. }) => (head, consumed),
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[test]
    fn parses_status_line_headers_and_reports_consumed() {
        let (head, consumed) = complete(b"HTTP/1.1 404 Not Found\r\nA: 1\r\nb:\r\n\r\nbody");
        assert_eq!(consumed, 36);
        assert_eq!(head.version, HttpVersion::Http11);
        assert_eq!(head.status, 404);
        assert_eq!(head.reason, "Not Found");
        assert_eq!(head.headers.get("a"), Some("1"));
        assert_eq!(head.headers.get("B"), Some(""));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (head, consumed) = complete(b"\r\n\nHTTP/1.0 200 OK\n\n");
        assert_eq!(head.version, HttpVersion::Http10);
        assert_eq!(consumed, 20);
    }

    #[test]
    fn incremental_parser_resumes_across_a_split_terminator() {
        let full = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n";
        let mut parser = HeadParser::new(HeadLimits::default());
        for end in 0..full.len() {
            assert!(matches!(
                parser.parse(&full[..end]),
                Ok(HeadStatus::Partial)
            ));
        }
        assert!(matches!(
            parser.parse(full),
            Ok(HeadStatus::Complete { consumed: 25, .. })
        ));
    }

    /// The outcome of parsing `buf` a byte at a time, as a string to compare.
    fn in_steps(buf: &[u8], limits: HeadLimits) -> String {
        let mut parser = HeadParser::new(limits);
        for end in 1..=buf.len() {
            match parser.parse(&buf[..end]) {
                Ok(HeadStatus::Partial) => continue,
                other => return format!("{other:?}"),
            }
        }
        "Partial".into()
    }

    #[test]
    fn a_head_parsed_where_it_lies_gives_what_it_gives_in_pieces() {
        let cases: [&[u8]; 10] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\nA: 1\n\nbody\r\n\r\n",
            b"HTTP/1.0 204 No Content\r\nA: \xff\xfe\r\nLocation: /\xe9\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nNOT A HEADER\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
            b"HTTP/1.1 99 Low\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        ];
        for limits in [
            HeadLimits::default(),
            HeadLimits {
                max_headers: 2,
                ..HeadLimits::default()
            },
            HeadLimits {
                max_head_bytes: 24,
                ..HeadLimits::default()
            },
        ] {
            for case in cases {
                let whole = format!("{:?}", HeadParser::new(limits).parse(case));
                assert_eq!(
                    whole,
                    in_steps(case, limits),
                    "{:?} under {limits:?}",
                    String::from_utf8_lossy(case)
                );
            }
        }
    }

    #[test]
    fn garbage_fails_before_the_head_ends() {
        let err = parse_response_head(b"SSH-2.0-OpenSSH", &HeadLimits::default()).unwrap_err();
        assert!(matches!(err, HttpError::Protocol(_)), "{err:?}");
    }

    #[test]
    fn huge_header_limit_does_not_allocate_per_limit() {
        let limits = HeadLimits {
            max_headers: usize::MAX,
            ..HeadLimits::default()
        };
        let status = parse_response_head(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", &limits);
        assert!(matches!(status, Ok(HeadStatus::Complete { .. })));
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_accepted() {
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let limits = HeadLimits {
            max_head_bytes: head.len(),
            ..HeadLimits::default()
        };
        assert!(matches!(
            parse_response_head(head, &limits),
            Ok(HeadStatus::Complete { .. })
        ));
        let limits = HeadLimits {
            max_head_bytes: head.len() - 1,
            ..limits
        };
        assert!(matches!(
            parse_response_head(head, &limits),
            Err(HttpError::HeadTooLarge { limit: 18 })
        ));
    }
}
