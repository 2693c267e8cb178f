//! Request head serialisation (RFC 9112 §3, §5): `METHOD origin-form HTTP/1.1`, fields, blank
//! line.
//!
//! Everything is validated before the first byte is written, so a bad header can never leave a
//! half-written head behind, and no caller-supplied CR/LF can split the request (response
//! splitting through our own headers).

use std::fmt::Write as _;

use crate::network::http::error::HttpError;
use crate::network::http::headers::HeaderMap;

/// Appends the request head for `method` on `url` with `headers` to `out`: request line with the
/// origin-form target (path and query, never the fragment), each field as `name: value`, and the
/// blank line. The caller has already put `Host`, `Content-Length` and friends into `headers`.
///
/// [`HttpError::InvalidRequest`] when the method or a header name is not a token, a value holds
/// a control character other than HTAB (CR, LF and NUL above all), the target is not an absolute
/// path or holds a space or control character, or both `Content-Length` and `Transfer-Encoding` are set (RFC 9112 §6.2).
/// On error `out` is unchanged.
pub(crate) fn encode_request_head(
    method: &str,
    url: &url::Url,
    headers: &HeaderMap,
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
    for part in [Some(path), query].into_iter().flatten() {
        if let Some(bad) = part.bytes().find(|&b| b <= b' ' || b == 0x7f) {
            return Err(HttpError::InvalidRequest(format!(
                "request target contains byte 0x{bad:02x}"
            )));
        }
    }
    let mut head_len =
        method.len() + path.len() + query.map_or(0, |q| q.len() + 1) + " HTTP/1.1\r\n".len() + 1;
    for (name, value) in headers.iter() {
        validate_field(name, value)?;
        head_len += name.len() + value.len() + 4;
    }
    if headers.contains("content-length") && headers.contains("transfer-encoding") {
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
    for (name, value) in headers.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// The `Host` field value for `url` (RFC 9112 §3.2): the host (an IPv6 literal in brackets),
/// plus `:port` only when the URL names a port other than its scheme's default. Userinfo never
/// appears. Empty for a URL without a host (http and https URLs always have one).
pub(crate) fn host_header_value(url: &url::Url) -> String {
    // `host_str` keeps IPv6 brackets; `port` is `None` for the scheme's default port.
    let mut value = url.host_str().unwrap_or_default().to_owned();
    if let Some(port) = url.port() {
        // Writing to a String cannot fail.
        let _ = write!(value, ":{port}");
    }
    value
}

fn validate_field(name: &str, value: &str) -> Result<(), HttpError> {
    if !is_token(name) {
        return Err(HttpError::InvalidRequest(format!(
            "header name {name:?} is not an HTTP token"
        )));
    }
    // field-value is VCHAR / obs-text / SP / HTAB (RFC 9110 §5.5); CR and LF would end the
    // field early and let the value inject fields of its own.
    if let Some(bad) = value
        .bytes()
        .find(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(HttpError::InvalidRequest(format!(
            "value of header {name:?} contains byte 0x{bad:02x}"
        )));
    }
    Ok(())
}

/// `token = 1*tchar` (RFC 9110 §5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
        assert!(encode_request_head("GET", &url, &headers, &mut out).is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn urls_without_an_absolute_path_are_refused() {
        let url = url::Url::parse("mailto:someone@example.com").unwrap();
        let result = encode_request_head("GET", &url, &HeaderMap::new(), &mut Vec::new());
        assert!(
            matches!(result, Err(HttpError::InvalidRequest(_))),
            "{result:?}"
        );
    }
}
