//! Request head serialisation (RFC 9112 §3, §5): `METHOD origin-form HTTP/1.1`, fields, blank
//! line.
//!
//! Everything is validated before the first byte is written, so a bad header can never leave a
//! half-written head behind, and no caller-supplied CR/LF can split the request (response
//! splitting through our own headers).

use crate::network::decimal::{MAX_DECIMAL_LEN, decimal};
use crate::network::http::error::HttpError;
use crate::network::http::headers::{HeaderMap, forbidden_value_byte};
use crate::network::http::method::is_token;

/// A field written after the request's own: its name and its value in pieces (so that a value
/// such as `host:port` needs no allocation of its own).
pub(crate) type AddedField<'a> = (&'a str, &'a [&'a str]);

/// Appends the request head for `method` on `url` with `headers`, then `added`, to `out`: request
/// line with the origin-form target (path and query, never the fragment), each field as
/// `name: value`, and the blank line. The caller chose `Host`, `Content-Length` and friends for
/// `added` (only those `headers` lacks, `Cookie` included), so the request's own map is never
/// copied.
///
/// Several `Cookie` fields in `headers` go out as one (RFC 6265 §5.4: a user agent must not
/// attach more than one), where the first was, with the name as spelled there: their values in
/// order, each trimmed of blanks and `;` at its ends, the empty ones left out, joined with `; `.
///
/// [`HttpError::InvalidRequest`] when the method or a header name is not a token, a value holds
/// a control character other than HTAB (CR, LF and NUL above all), the target is not an absolute
/// path or holds a space or control character, or both `Content-Length` and `Transfer-Encoding` are set (RFC 9112 §6.2).
/// On error `out` is unchanged.
pub(crate) fn encode_request_head(
    method: &str,
    url: &url::Url,
    headers: &HeaderMap,
    added: &[AddedField<'_>],
    out: &mut Vec<u8>,
) -> Result<(), HttpError> {
    encode_head(method, url, headers, None, added, out)
}

/// [`encode_request_head`] for a request whose own fields (`headers`) passed
/// [`HttpRequest::validate`](crate::network::http::HttpRequest::validate) and have not changed
/// since: their names and values are not looked at again (the fields in `added`, the method and
/// the target still are). The client sends a request this way only on its first hop, which
/// `send` validated; a redirect hop's request is a new one, checked here in full. `own` is
/// [`OwnFields::of`] `headers`, which the caller needed too.
pub(crate) fn encode_validated_request_head(
    method: &str,
    url: &url::Url,
    headers: &HeaderMap,
    own: &OwnFields,
    added: &[AddedField<'_>],
    out: &mut Vec<u8>,
) -> Result<(), HttpError> {
    encode_head(method, url, headers, Some(own), added, out)
}

/// What one pass over a request's own fields finds: which of the fields the client may add or
/// must not mix are there, and how many bytes they take on the wire. Names are compared only
/// when their length matches.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OwnFields {
    /// Bytes of `name: value` CRLF lines.
    pub(crate) wire_len: usize,
    /// `Cookie` fields (several go out as one).
    pub(crate) cookies: usize,
    pub(crate) host: bool,
    pub(crate) accept_encoding: bool,
    pub(crate) range: bool,
    pub(crate) content_length: bool,
    pub(crate) transfer_encoding: bool,
}

impl OwnFields {
    /// The pass over `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut own = OwnFields::default();
        for (name, value) in headers.iter() {
            own.wire_len += name.len() + value.len() + 4;
            let is = |known: &str| name.eq_ignore_ascii_case(known);
            match name.len() {
                4 => own.host |= is("host"),
                5 => own.range |= is("range"),
                6 => own.cookies += usize::from(is("cookie")),
                14 => own.content_length |= is("content-length"),
                15 => own.accept_encoding |= is("accept-encoding"),
                17 => own.transfer_encoding |= is("transfer-encoding"),
                _ => {}
            }
        }
        own
    }
}

/// With `own` (the request's fields validated), `headers` is only written; without, it is
/// checked and scanned here.
fn encode_head(
    method: &str,
    url: &url::Url,
    headers: &HeaderMap,
    own: Option<&OwnFields>,
    added: &[AddedField<'_>],
    out: &mut Vec<u8>,
) -> Result<(), HttpError> {
    if !is_token(method) {
        return Err(HttpError::InvalidRequest(format!(
            "method {method:?} is not an HTTP token"
        )));
    }
    let path = match url.path() {
        "" => "/",
        path => path,
    };
    if !path.starts_with('/') {
        return Err(HttpError::InvalidRequest(format!(
            "URL {url} has no absolute path to request"
        )));
    }
    let query = url.query();
    for part in [path, query.unwrap_or_default()] {
        if let Some(&bad) = part.as_bytes().iter().find(|&&b| b <= b' ' || b == 0x7f) {
            return Err(HttpError::InvalidRequest(format!(
                "request target contains byte 0x{bad:02x}"
            )));
        }
    }
    let own = match own {
        Some(own) => *own,
        None => {
            for (name, value) in headers.iter() {
                validate_field(name, value)?;
            }
            OwnFields::of(headers)
        }
    };
    let mut head_len = method.len()
        + path.len()
        + query.map_or(0, |q| q.len() + 1)
        + " HTTP/1.1\r\n".len()
        + 1
        + own.wire_len;
    let (mut content_length, mut transfer_encoding) = (own.content_length, own.transfer_encoding);
    for &(name, value) in added {
        validate_name(name)?;
        for part in value {
            validate_value(name, part)?;
            head_len += part.len();
        }
        head_len += name.len() + 4;
        content_length |= name.eq_ignore_ascii_case("content-length");
        transfer_encoding |= name.eq_ignore_ascii_case("transfer-encoding");
    }
    if content_length && transfer_encoding {
        return Err(HttpError::InvalidRequest(
            "both content-length and transfer-encoding are set".into(),
        ));
    }

    out.reserve(head_len + 2);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut cookies_written = false;
    for (name, value) in headers.iter() {
        if own.cookies > 1 && is_cookie(name) {
            if !std::mem::replace(&mut cookies_written, true) {
                write_joined_cookies(name, headers, out);
            }
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for &(name, value) in added {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for part in value {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Whether a field is named `Cookie` (the length is compared first: most names differ in it).
fn is_cookie(name: &str) -> bool {
    name.len() == 6 && name.eq_ignore_ascii_case("cookie")
}

/// Writes every `Cookie` value of `headers` as one `name: …` field, the values trimmed of blanks
/// and `;` at their ends, empty ones left out, joined with `; ` (the cookie-string of RFC 6265
/// §5.4).
fn write_joined_cookies(name: &str, headers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b":");
    let mut separator: &[u8] = b" ";
    for value in headers.get_all("cookie") {
        let value = value.trim_matches([' ', '\t', ';']);
        if value.is_empty() {
            continue;
        }
        out.extend_from_slice(separator);
        out.extend_from_slice(value.as_bytes());
        separator = b"; ";
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Host` field value for `url` (RFC 9112 §3.2): the host (an IPv6 literal in brackets),
/// plus `:port` only when the URL names a port other than its scheme's default. Userinfo never
/// appears. Empty for a URL without a host (http and https URLs always have one).
pub(crate) fn host_header_value(url: &url::Url) -> String {
    // `host_str` keeps IPv6 brackets; `port` is `None` for the scheme's default port.
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => {
            let mut digits = [0; MAX_DECIMAL_LEN];
            [host, ":", decimal(u64::from(port), &mut digits)].concat()
        }
        None => host.to_owned(),
    }
}

fn validate_field(name: &str, value: &str) -> Result<(), HttpError> {
    validate_name(name)?;
    validate_value(name, value)
}

fn validate_name(name: &str) -> Result<(), HttpError> {
    if !is_token(name) {
        return Err(HttpError::InvalidRequest(format!(
            "header name {name:?} is not an HTTP token"
        )));
    }
    Ok(())
}

fn validate_value(name: &str, value: &str) -> Result<(), HttpError> {
    // field-value is VCHAR / obs-text / SP / HTAB (RFC 9110 §5.5); CR and LF would end the
    // field early and let the value inject fields of its own.
    if let Some(bad) = forbidden_value_byte(value.as_bytes()) {
        return Err(HttpError::InvalidRequest(format!(
            "value of header {name:?} contains byte 0x{bad:02x}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("GET"));
        assert!(is_token("X-Custom_1.2~"));
        for bad in ["", "GE T", "a:b", "é", "a\r", "(x)"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn failed_encoding_leaves_the_buffer_alone() {
        let url = url::Url::parse("http://h/").unwrap();
        let headers: HeaderMap = [("A", "ok"), ("B", "bad\r\nX: y")].into_iter().collect();
        let mut out = b"keep".to_vec();
        assert!(encode_request_head("GET", &url, &headers, &[], &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn added_fields_follow_the_requests_own_and_are_checked_alike() {
        let url = url::Url::parse("http://h:8080/p?q").unwrap();
        let headers: HeaderMap = [("A", "1")].into_iter().collect();
        let host = host_header_value(&url);
        let mut out = Vec::new();
        encode_request_head(
            "GET",
            &url,
            &headers,
            &[("Host", &[host.as_str()]), ("B", &["2"])],
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            b"GET /p?q HTTP/1.1\r\nA: 1\r\nHost: h:8080\r\nB: 2\r\n\r\n"
        );

        let mut out = b"keep".to_vec();
        let split = encode_request_head(
            "GET",
            &url,
            &headers,
            &[("B", &["x", "\r\nC: y"])],
            &mut out,
        );
        assert!(
            matches!(split, Err(HttpError::InvalidRequest(_))),
            "{split:?}"
        );
        let bad_name = encode_request_head("GET", &url, &headers, &[("B C", &["x"])], &mut out);
        assert!(
            matches!(bad_name, Err(HttpError::InvalidRequest(_))),
            "{bad_name:?}"
        );
        assert_eq!(out, b"keep");

        let chunked: HeaderMap = [("Transfer-Encoding", "chunked")].into_iter().collect();
        let both = encode_request_head(
            "GET",
            &url,
            &chunked,
            &[("Content-Length", &["0"])],
            &mut out,
        );
        assert!(
            matches!(both, Err(HttpError::InvalidRequest(_))),
            "{both:?}"
        );
    }

    #[test]
    fn a_validated_request_still_has_its_added_fields_method_and_target_checked() {
        let url = url::Url::parse("http://h/p").unwrap();
        let headers: HeaderMap = [("A", "1")].into_iter().collect();
        let mut out = b"keep".to_vec();
        let cookie = encode_validated_request_head(
            "GET",
            &url,
            &headers,
            &OwnFields::of(&headers),
            &[("Cookie", &["a=1\r\nX: y"])],
            &mut out,
        );
        assert!(
            matches!(cookie, Err(HttpError::InvalidRequest(_))),
            "{cookie:?}"
        );
        let method = encode_validated_request_head(
            "G T",
            &url,
            &headers,
            &OwnFields::of(&headers),
            &[],
            &mut out,
        );
        assert!(
            matches!(method, Err(HttpError::InvalidRequest(_))),
            "{method:?}"
        );
        let chunked: HeaderMap = [("Transfer-Encoding", "chunked")].into_iter().collect();
        let both = encode_validated_request_head(
            "GET",
            &url,
            &chunked,
            &OwnFields::of(&chunked),
            &[("Content-Length", &["0"])],
            &mut out,
        );
        assert!(
            matches!(both, Err(HttpError::InvalidRequest(_))),
            "{both:?}"
        );
        assert_eq!(out, b"keep");
        // The same head as the full check writes.
        let mut full = Vec::new();
        encode_request_head("GET", &url, &headers, &[("Host", &["h"])], &mut full).unwrap();
        let mut fast = Vec::new();
        encode_validated_request_head(
            "GET",
            &url,
            &headers,
            &OwnFields::of(&headers),
            &[("Host", &["h"])],
            &mut fast,
        )
        .unwrap();
        assert_eq!(full, fast);
    }

    #[test]
    fn several_cookie_fields_are_written_as_one_where_the_first_was() {
        let url = url::Url::parse("http://h/").unwrap();
        let headers: HeaderMap = [
            ("Cookie", "a=1;"),
            ("X", "y"),
            ("cookie", " "),
            ("COOKIE", "b=2"),
        ]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        encode_request_head("GET", &url, &headers, &[], &mut out).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\nCookie: a=1; b=2\r\nX: y\r\n\r\n");

        // One field is written as it is.
        let headers: HeaderMap = [("cookie", "a=1;")].into_iter().collect();
        let mut out = Vec::new();
        encode_request_head("GET", &url, &headers, &[], &mut out).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\ncookie: a=1;\r\n\r\n");
    }

    #[test]
    fn urls_without_an_absolute_path_are_refused() {
        let url = url::Url::parse("mailto:someone@example.com").unwrap();
        let result = encode_request_head("GET", &url, &HeaderMap::new(), &[], &mut Vec::new());
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{result:?}"
        );
    }
}
