//! How long a response body is, and whether the connection survives it (RFC 9112 §6.3, §9.3).
//!
//! This is where request smuggling and hangs are decided, so the rules are strict where the
//! peer is ambiguous: differing or non-numeric `Content-Length` is an error; a `Transfer-Encoding`
//! that does not end in `chunked` means read-to-close; and a response with a body that carried
//! both `Transfer-Encoding` and `Content-Length` never leaves its connection for reuse (HEAD,
//! 204 and 304 responses have no body whatever their headers say, RFC 9112 §6.3 rule 1).

use crate::network::http::error::HttpError;
use crate::network::http::head::ResponseHead;
use crate::network::http::headers::HeaderMap;
use crate::network::http::version::HttpVersion;

/// Where the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body, whatever the headers say (HEAD request, 1xx, 204, 304).
    NoBody,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked transfer coding, ended by the zero-size chunk and trailers.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// The framing decision for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Where the body ends.
    pub(crate) body: BodyFraming,
    /// Whether the connection may carry another request once this body is complete (the caller
    /// must still close it if bytes beyond the body arrive).
    pub(crate) reusable: bool,
}

/// Decides the body framing of `head`, a final response to a request whose method was `HEAD`
/// when `request_method_is_head` (RFC 9112 §6.3, in order):
///
/// 1. HEAD request, 1xx, 204 and 304 have no body, whatever the headers say;
/// 2. `Transfer-Encoding` ending in `chunked` is chunked (HTTP/1.0: read to close); with
///    `Content-Length` as well the connection is not reused;
/// 3. any other `Transfer-Encoding` is read to close;
/// 4. `Content-Length` (all values equal, digits only) gives the length;
/// 5. otherwise read to close.
///
/// A read-to-close body never leaves the connection reusable. Otherwise HTTP/1.1 keeps the
/// connection unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
pub(crate) fn body_framing(
    request_method_is_head: bool,
    head: &ResponseHead,
) -> Result<Framing, HttpError> {
    let headers = &head.headers;
    let keep_alive = connection_persists(head.version, headers);
    let no_body = request_method_is_head
        || (100..200).contains(&head.status)
        || matches!(head.status, 204 | 304);
    if no_body {
        // 101 hands the connection to another protocol; it is never back in the pool.
        let reusable = keep_alive && head.status != 101;
        return Ok(Framing {
            body: BodyFraming::NoBody,
            reusable,
        });
    }

    if headers.contains("transfer-encoding") {
        let chunked = final_coding_is_chunked(headers)?;
        let body = if chunked && head.version == HttpVersion::Http11 {
            BodyFraming::Chunked
        } else {
            // HTTP/1.0 has no chunked coding, and an unknown final coding has no end marker
            // we could recognise: either way only the close ends the body.
            BodyFraming::UntilClose
        };
        // Content-Length beside Transfer-Encoding is the classic smuggling shape: obey TE for
        // this response, but never trust the rest of this connection.
        let reusable =
            keep_alive && body == BodyFraming::Chunked && !headers.contains("content-length");
        return Ok(Framing { body, reusable });
    }

    match content_length(headers)? {
        Some(length) => Ok(Framing {
            body: BodyFraming::Length(length),
            reusable: keep_alive,
        }),
        None => Ok(Framing {
            body: BodyFraming::UntilClose,
            reusable: false,
        }),
    }
}

/// Whether the connection persists after this response as far as versions and `Connection`
/// go (RFC 9112 §9.3).
fn connection_persists(version: HttpVersion, headers: &HeaderMap) -> bool {
    let has_option = |option: &str| has_connection_option(headers, option);
    match version {
        HttpVersion::Http11 => !has_option("close"),
        HttpVersion::Http10 => has_option("keep-alive") && !has_option("close"),
    }
}

/// Whether the `Connection` fields of `headers` list `option` (case-insensitive). A request
/// listing `close` must be the last on its connection (RFC 9112 §9.6), whatever the response
/// says.
pub(crate) fn has_connection_option(headers: &HeaderMap, option: &str) -> bool {
    // Nested `any`s rather than a flat map: asked twice per response, mostly of maps with
    // no `Connection` field at all.
    headers
        .get_all("connection")
        .any(|field| list_elements(field).any(|token| token.eq_ignore_ascii_case(option)))
}

/// What a response's `Keep-Alive` fields say about its connection (RFC 2068 §19.7.1.1; nginx,
/// Apache and Node's http server still send it): `timeout=N`, the seconds the server keeps the
/// connection idle before closing it, and `max=M`, how many more requests it takes on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KeepAlive {
    /// `timeout`, at least 1 (0 says nothing usable and is ignored, as a malformed value is).
    pub(crate) timeout_secs: Option<u64>,
    /// `max`.
    pub(crate) max: Option<u64>,
}

/// The `Keep-Alive` fields of `headers`, read leniently: parameter names in any case, whitespace
/// around elements and `=`, elements separated by `,` or `;`, quoted values, other parameters
/// ignored. A value that is not digits only is ignored (never an error: the field is advice); an
/// overlong one counts as the largest number; of several, the smallest counts.
pub(crate) fn keep_alive(headers: &HeaderMap) -> KeepAlive {
    let mut found = KeepAlive::default();
    for field in headers.get_all("keep-alive") {
        for element in split_outside_quotes(field, b",;") {
            let Some((name, value)) = element.split_once('=') else {
                continue;
            };
            let value = trim_ows(value);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let Some(number) = parse_decimal_saturating(value) else {
                continue;
            };
            let slot = match trim_ows(name) {
                n if n.eq_ignore_ascii_case("timeout") && number > 0 => &mut found.timeout_secs,
                n if n.eq_ignore_ascii_case("max") => &mut found.max,
                _ => continue,
            };
            *slot = Some(slot.map_or(number, |before| before.min(number)));
        }
    }
    found
}

/// The pieces of a header field split at any of `separators` (ASCII) outside `"…"` quoted
/// strings (with `\` escapes): the elements of a `Keep-Alive` field (`,` and `;`), the values
/// of a comma-separated list such as `Content-Type` (`,`).
pub(crate) fn split_outside_quotes<'a>(
    field: &'a str,
    separators: &'static [u8],
) -> impl Iterator<Item = &'a str> {
    let mut rest = Some(field);
    std::iter::from_fn(move || {
        let text = rest?;
        let bytes = text.as_bytes();
        let (mut i, mut quoted) = (0, false);
        while i < bytes.len() {
            match bytes[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => i += 1,
                b if !quoted && separators.contains(&b) => {
                    rest = text.get(i + 1..);
                    return Some(&text[..i]);
                }
                _ => {}
            }
            i += 1;
        }
        rest = None;
        Some(text)
    })
}

/// Digits only (no sign, no spaces, not empty); past `u64::MAX`, `u64::MAX`.
fn parse_decimal_saturating(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(parse_decimal(digits).unwrap_or(u64::MAX))
}

/// Whether the last transfer coding over all `Transfer-Encoding` fields is `chunked`.
/// `chunked` anywhere else is an error: RFC 9112 §6.1 forbids applying it twice, and before
/// another coding it would hide where the body ends.
fn final_coding_is_chunked(headers: &HeaderMap) -> Result<bool, HttpError> {
    let mut codings = headers
        .get_all("transfer-encoding")
        .flat_map(list_elements)
        .map(coding_name)
        .peekable();
    let mut chunked_seen = false;
    while let Some(coding) = codings.next() {
        let is_chunked = coding.eq_ignore_ascii_case("chunked");
        if is_chunked && chunked_seen {
            return Err(HttpError::Protocol(
                "transfer-encoding applies chunked more than once".into(),
            ));
        }
        chunked_seen |= is_chunked;
        if codings.peek().is_none() {
            return Ok(is_chunked);
        }
    }
    // Present but empty: no coding we can recognise the end of.
    Ok(false)
}

/// The agreed `Content-Length`, if any. Every element of every field must be digits only (after
/// trimming whitespace) and all must be equal (RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    let mut agreed: Option<u64> = None;
    for value in headers.get_all("content-length") {
        for element in value.split(',') {
            let length = parse_decimal(trim_ows(element))
                .ok_or_else(|| HttpError::Protocol(format!("invalid content-length {value:?}")))?;
            match agreed {
                Some(previous) if previous != length => {
                    return Err(HttpError::Protocol(format!(
                        "conflicting content-length values {previous} and {length}"
                    )));
                }
                _ => agreed = Some(length),
            }
        }
    }
    Ok(agreed)
}

/// Digits only (no sign, no spaces, not empty); `None` on anything else or on u64 overflow.
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |acc, b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// The non-empty elements of a comma-separated field value, trimmed (RFC 9110 §5.6.1).
fn list_elements(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(trim_ows).filter(|e| !e.is_empty())
}

/// A transfer coding without its parameters (`chunked;x=y` → `chunked`).
fn coding_name(element: &str) -> &str {
    trim_ows(element.split(';').next().unwrap_or_default())
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parsing_is_digits_only() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("0018"), Some(18));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+8",
            "-6",
            "6badness",
            "6 7",
            "18446744073709551616",
            "0x10",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keep_alive_is_read_leniently_and_ignores_what_it_cannot_read() {
        let read = |fields: &[&str]| {
            let mut headers = HeaderMap::new();
            for field in fields {
                headers.append("Keep-Alive", field);
            }
            let k = keep_alive(&headers);
            (k.timeout_secs, k.max)
        };
        assert_eq!(read(&[]), (None, None));
        assert_eq!(read(&["timeout=5, max=1000"]), (Some(5), Some(1000)));
        assert_eq!(read(&[" Timeout = \"75\" ;MAX=3 "]), (Some(75), Some(3)));
        assert_eq!(read(&["max=3", "timeout=4"]), (Some(4), Some(3)));
        assert_eq!(
            read(&["timeout=9, timeout=4", "timeout=7"]),
            (Some(4), None)
        );
        assert_eq!(
            read(&["x=\"a, timeout=1; \\\" b\", timeout=6"]),
            (Some(6), None)
        );
        assert_eq!(
            read(&["timeout=99999999999999999999999"]),
            (Some(u64::MAX), None)
        );
        assert_eq!(read(&["max=0"]), (None, Some(0)));
        for bad in [
            "timeout=0",
            "timeout=",
            "timeout",
            "timeout=-5",
            "timeout=+5",
            "timeout=2.5",
            "timeout=\"2",
            "timeout=2 s",
            "xtimeout=2",
            "=2",
            ",,;",
            "timeout=\"\"",
        ] {
            assert_eq!(read(&[bad]), (None, None), "{bad:?}");
        }
    }

    #[test]
    fn list_elements_skip_empty_entries_and_whitespace() {
        let got: Vec<_> = list_elements(" close ,, \tUpgrade,").collect();
        assert_eq!(got, ["close", "Upgrade"]);
    }

    #[test]
    fn coding_parameters_are_ignored_for_the_name() {
        assert_eq!(coding_name(" chunked ; foo=bar"), "chunked");
    }
}
