//! [`HttpResponse`]: a complete response as delivered to the caller (KDNetwork `HttpResponse`).

use std::borrow::Cow;
use std::fmt;
use std::str::Utf8Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use crate::network::http::{HeaderMap, HttpVersion, REDIRECT_STATUSES, extract_mime_type};

/// A response: status, headers, body, and where and how it was obtained.
///
/// Any status code is a response, not an error; transport failures are reported as
/// [`HttpError`](crate::network::http::HttpError) instead (KDNetwork mixed both into
/// `isError()`). Responses are made by the HTTP client; `url()` is the URL after redirects.
///
/// ```
/// use kdnet::network::http::HttpResponse;
///
/// /// What a response callback might log.
/// fn describe(response: &HttpResponse) -> String {
///     if response.is_success() {
///         format!("{} bytes of {:?}", response.body().len(), response.content_type())
///     } else if let Some(next) = response.redirect_url() {
///         format!("{} points to {next}", response.status())
///     } else {
///         format!("{} {}", response.status(), response.reason())
///     }
/// }
/// # let _ = describe;
/// ```
///
/// `Debug` shows the body's length, not the body (it may be large, or a credential such as a
/// token endpoint's answer), and hides credential headers as [`HeaderMap`] does.
#[derive(Clone)]
pub struct HttpResponse {
    /// Shared with the request it answers (see `HttpRequest`'s).
    url: Arc<Url>,
    status: u16,
    /// A standard phrase is shared, not copied (see `HeadParser::sharing_standard_reasons`).
    reason: Cow<'static, str>,
    version: HttpVersion,
    headers: HeaderMap,
    body: Bytes,
    redirect_count: u32,
    elapsed: Duration,
}

impl HttpResponse {
    /// The status code, e.g. 200.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as the server sent it (may be empty; never use it for decisions).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The server's HTTP version.
    pub fn version(&self) -> HttpVersion {
        self.version
    }

    /// All header fields, in the order received. When the client decoded the body (gzip,
    /// deflate), `Content-Encoding` and `Content-Length` are removed: they described the encoded
    /// body, not the one delivered.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every value of header `name`, in order (e.g. all `Set-Cookie` fields).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.get_all(name)
    }

    /// Whether header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains(name)
    }

    /// The decoded body (empty for streaming requests, whose bytes were delivered as they came).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out without copying it.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// The body as UTF-8, or why it is not.
    pub fn body_as_str(&self) -> Result<&str, Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body as text, decoded as a browser would (the WHATWG *decode* algorithm): a byte
    /// order mark (UTF-8, UTF-16BE, UTF-16LE) decides and is dropped; otherwise the `charset` of
    /// `Content-Type` does (with several values, of the one WHATWG Fetch's "extract a MIME type"
    /// finds, see [`HttpResponse::content_type`]), for UTF-8, UTF-16 (`utf-16`/`utf-16le`,
    /// `utf-16be`) and the Latin-1 family (`iso-8859-1`, `latin1`, `us-ascii`, `windows-1252`,
    /// … — all decoded as windows-1252, as WHATWG specifies); any other or no charset means
    /// UTF-8. Malformed sequences become U+FFFD. Borrows when the body is UTF-8 (or ASCII) and
    /// valid.
    ///
    /// [`HttpResponse::body_as_str`] is the strict UTF-8 view, [`HttpResponse::body`] the bytes.
    pub fn text(&self) -> Cow<'_, str> {
        let body = &self.body[..];
        let (charset, body) = match body {
            [0xef, 0xbb, 0xbf, rest @ ..] => (Charset::Utf8, rest),
            [0xfe, 0xff, rest @ ..] => (Charset::Utf16Be, rest),
            [0xff, 0xfe, rest @ ..] => (Charset::Utf16Le, rest),
            _ => (
                extract_mime_type(&self.headers)
                    .and_then(|mime| mime.charset)
                    .map_or(Charset::Utf8, Charset::from_label),
                body,
            ),
        };
        match charset {
            Charset::Utf8 => String::from_utf8_lossy(body),
            Charset::Windows1252 if body.is_ascii() => String::from_utf8_lossy(body),
            Charset::Windows1252 => Cow::Owned(body.iter().map(|&b| windows_1252(b)).collect()),
            Charset::Utf16Le => Cow::Owned(decode_utf16(body, u16::from_le_bytes)),
            Charset::Utf16Be => Cow::Owned(decode_utf16(body, u16::from_be_bytes)),
        }
    }

    /// The URL this response came from, after any redirects.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// How many redirects were followed to get here.
    pub fn redirect_count(&self) -> u32 {
        self.redirect_count
    }

    /// Time from starting the request to the complete response.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// KDNetwork's name for [`HttpResponse::is_success`].
    pub fn is_successful(&self) -> bool {
        self.is_success()
    }

    /// Whether the status is one of [`REDIRECT_STATUSES`] (301, 302, 303, 307, 308).
    pub fn is_redirect(&self) -> bool {
        REDIRECT_STATUSES.contains(&self.status)
    }

    /// Whether the status is 4xx.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
    }

    /// Whether the status is 5xx.
    pub fn is_server_error(&self) -> bool {
        (500..600).contains(&self.status)
    }

    /// The `Content-Type` header, parameters included (e.g. `text/html; charset=utf-8`).
    ///
    /// With several fields, or a comma-separated list, the one that counts is the one WHATWG
    /// Fetch's "extract a MIME type" finds (as for [`HttpResponse::text`] and the SSE client's
    /// check): the last value that parses as `type/subtype` and is not `*/*`, blanks trimmed.
    /// When none parses, the last field as sent. (Fetch also lends a value that names no
    /// `charset` the one of an earlier value of its type; [`HttpResponse::text`] decodes with it,
    /// but it is not added to the value returned here.)
    pub fn content_type(&self) -> Option<&str> {
        match extract_mime_type(&self.headers) {
            Some(mime) => Some(mime.value),
            None => self.headers.get_all("content-type").last(),
        }
    }

    /// The `Content-Length` header as a number: ASCII digits only (surrounding spaces allowed;
    /// `+8`, `-1`, `8x`, overflow are `None`). Several fields or a comma list must all agree.
    /// `None` when the client decoded the body (the field described the encoded one).
    pub fn content_length(&self) -> Option<u64> {
        content_length(&self.headers)
    }

    /// Whether the body was sent with chunked transfer coding (the last `Transfer-Encoding`
    /// coding is `chunked`).
    pub fn is_chunked(&self) -> bool {
        self.headers
            .get_all("transfer-encoding")
            .flat_map(|field| field.split(','))
            .map(str::trim)
            .filter(|coding| !coding.is_empty())
            .last()
            .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
    }

    /// Whether the server lets the connection stay open: HTTP/1.1 unless a `Connection: close`
    /// token is present; HTTP/1.0 only with a `Connection: keep-alive` token and no `close`.
    pub fn is_keep_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for token in self
            .headers
            .get_all("connection")
            .flat_map(|field| field.split(','))
            .map(str::trim)
        {
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
        match self.version {
            HttpVersion::Http11 => !close,
            HttpVersion::Http10 => keep_alive && !close,
        }
    }

    /// The `Location` header resolved against [`HttpResponse::url`], when present and valid.
    /// `None` too when the response has several `Location` fields that differ: which one the
    /// server meant cannot be told (the client refuses to follow such a redirect, as browsers
    /// do); identical repeats count as one.
    pub fn redirect_url(&self) -> Option<Url> {
        let mut locations = self.headers.get_all("location").map(str::trim);
        let location = locations.next()?;
        if location.is_empty() || locations.any(|other| other != location) {
            return None;
        }
        self.url.join(location).ok()
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("url", &self.url.as_str())
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("redirect_count", &self.redirect_count)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

// Only the HTTP client makes responses; crates built without it would warn about these.
#[allow(dead_code)]
impl HttpResponse {
    /// A response from its parts; redirect count and elapsed time start at zero.
    pub(crate) fn new(
        url: Arc<Url>,
        status: u16,
        reason: impl Into<Cow<'static, str>>,
        version: HttpVersion,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        let reason = reason.into();
        HttpResponse {
            url,
            status,
            reason,
            version,
            headers,
            body,
            redirect_count: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Sets how many redirects led to this response.
    pub(crate) fn with_redirect_count(mut self, redirect_count: u32) -> Self {
        self.redirect_count = redirect_count;
        self
    }

    /// Replaces the body.
    pub(crate) fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// Sets the time the whole exchange took.
    pub(crate) fn with_elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = elapsed;
        self
    }
}

/// The character encodings [`HttpResponse::text`] decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Windows1252,
    Utf16Le,
    Utf16Be,
}

impl Charset {
    /// The encoding of a WHATWG label (case-insensitive); UTF-8 for labels of other encodings.
    fn from_label(label: &str) -> Charset {
        const WINDOWS_1252: [&str; 17] = [
            "ansi_x3.4-1968",
            "ascii",
            "cp1252",
            "cp819",
            "csisolatin1",
            "ibm819",
            "iso-8859-1",
            "iso-ir-100",
            "iso8859-1",
            "iso88591",
            "iso_8859-1",
            "iso_8859-1:1987",
            "l1",
            "latin1",
            "us-ascii",
            "windows-1252",
            "x-cp1252",
        ];
        const UTF_16LE: [&str; 7] = [
            "csunicode",
            "iso-10646-ucs-2",
            "ucs-2",
            "unicode",
            "unicodefeff",
            "utf-16",
            "utf-16le",
        ];
        const UTF_16BE: [&str; 2] = ["unicodefffe", "utf-16be"];
        let is_in = |labels: &[&str]| labels.iter().any(|l| l.eq_ignore_ascii_case(label));
        if is_in(&WINDOWS_1252) {
            Charset::Windows1252
        } else if is_in(&UTF_16LE) {
            Charset::Utf16Le
        } else if is_in(&UTF_16BE) {
            Charset::Utf16Be
        } else {
            Charset::Utf8
        }
    }
}

/// The `charset` parameter of a media type (`text/html; charset="ISO-8859-1"` →
/// `ISO-8859-1`), unquoted and trimmed.
pub(crate) fn charset_parameter(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim_matches([' ', '\t'])
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim_matches([' ', '\t']).trim_matches('"'))
    })
}

/// One windows-1252 byte as a character (WHATWG index: 0x80–0x9F differ from ISO-8859-1).
fn windows_1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    match byte {
        0x80..=0x9f => HIGH[usize::from(byte - 0x80)],
        _ => char::from(byte),
    }
}

/// UTF-16 in the given byte order; unpaired surrogates and an odd last byte become U+FFFD.
fn decode_utf16(body: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = body.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if body.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// [`HttpResponse::content_length`] of a response with these `headers`.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut agreed = None;
    for field in headers.get_all("content-length") {
        for item in field.split(',') {
            let value = parse_content_length(item)?;
            if agreed.is_some_and(|previous| previous != value) {
                return None;
            }
            agreed = Some(value);
        }
    }
    agreed
}

/// Parses one `Content-Length` value: optional surrounding spaces/tabs, then ASCII digits only;
/// `None` for anything else or a value that does not fit in `u64`.
pub(crate) fn parse_content_length(value: &str) -> Option<u64> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(version: HttpVersion, status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse::new(
            Arc::new(Url::parse("http://example.com/a/b?q#frag").unwrap()),
            status,
            "Reason".to_string(),
            version,
            headers.iter().copied().collect(),
            Bytes::from_static(b"hello"),
        )
    }

    #[test]
    fn keep_alive_rules_for_http_1_1() {
        let r = |h: &[(&str, &str)]| response(HttpVersion::Http11, 200, h).is_keep_alive();
        assert!(r(&[]));
        assert!(r(&[("Connection", "keep-alive")]));
        assert!(!r(&[("Connection", "close")]));
        assert!(!r(&[("connection", "Upgrade, CLOSE")]));
        assert!(!r(&[("Connection", "foo"), ("Connection", " close ")]));
    }

    #[test]
    fn keep_alive_rules_for_http_1_0() {
        let r = |h: &[(&str, &str)]| response(HttpVersion::Http10, 200, h).is_keep_alive();
        assert!(!r(&[]));
        assert!(r(&[("Connection", "Keep-Alive")]));
        assert!(r(&[("Connection", "foo, keep-alive")]));
        assert!(!r(&[("Connection", "keep-alive, close")]));
        assert!(!r(&[("Connection", "keep-alive-ish")]));
    }

    #[test]
    fn content_length_accepts_digits_only() {
        let cl = |h: &[(&str, &str)]| response(HttpVersion::Http11, 200, h).content_length();
        assert_eq!(cl(&[]), None);
        assert_eq!(cl(&[("Content-Length", "42")]), Some(42));
        assert_eq!(cl(&[("Content-Length", " 42\t")]), Some(42));
        assert_eq!(cl(&[("Content-Length", "0")]), Some(0));
        assert_eq!(cl(&[("Content-Length", "007")]), Some(7));
        for bad in ["+8", "-6", "6badness", "", " ", "0x10", "1 2", "٣"] {
            assert_eq!(cl(&[("Content-Length", bad)]), None, "{bad:?}");
        }
        assert_eq!(
            cl(&[("Content-Length", "18446744073709551615")]),
            Some(u64::MAX)
        );
        assert_eq!(cl(&[("Content-Length", "18446744073709551616")]), None);
        assert_eq!(
            cl(&[("Content-Length", "6, 6"), ("content-length", "6")]),
            Some(6)
        );
        assert_eq!(
            cl(&[("Content-Length", "6"), ("Content-Length", "7")]),
            None
        );
        assert_eq!(cl(&[("Content-Length", "6,")]), None);
    }

    #[test]
    fn status_classes() {
        let at = |status| response(HttpVersion::Http11, status, &[]);
        assert!(at(200).is_success() && at(299).is_successful());
        assert!(!at(199).is_success() && !at(300).is_success());
        for status in [301, 302, 303, 307, 308] {
            assert!(at(status).is_redirect(), "{status}");
        }
        for status in [300, 304, 305, 306, 200] {
            assert!(!at(status).is_redirect(), "{status}");
        }
        assert!(at(404).is_client_error() && !at(404).is_server_error());
        assert!(at(503).is_server_error() && !at(503).is_client_error());
    }

    #[test]
    fn redirect_url_resolves_against_the_final_url() {
        let r = |loc| {
            response(HttpVersion::Http11, 302, &[("Location", loc)])
                .redirect_url()
                .map(|u| u.to_string())
        };
        assert_eq!(r("c").as_deref(), Some("http://example.com/a/c"));
        assert_eq!(r("/x").as_deref(), Some("http://example.com/x"));
        assert_eq!(r("//other.org/y").as_deref(), Some("http://other.org/y"));
        assert_eq!(r("?z=1").as_deref(), Some("http://example.com/a/b?z=1"));
        assert_eq!(r("  ").as_deref(), None);
        assert_eq!(r("http://[::1").as_deref(), None);
        assert_eq!(response(HttpVersion::Http11, 302, &[]).redirect_url(), None);
    }

    #[test]
    fn text_decodes_charsets_and_boms() {
        let text = |content_type: &str, body: &'static [u8]| {
            response(HttpVersion::Http11, 200, &[("Content-Type", content_type)])
                .with_body(Bytes::from_static(body))
                .text()
                .into_owned()
        };
        assert_eq!(
            text("text/plain; charset=windows-1252", b"\x80\x9f\xa0\xff"),
            "\u{20ac}\u{178}\u{a0}\u{ff}"
        );
        assert_eq!(text("text/plain;charset=US-ASCII", b"plain"), "plain");
        assert_eq!(
            text("text/plain; charset=utf-16be", b"\xd8\x3d\0a\0"),
            "\u{fffd}a\u{fffd}"
        );
        assert_eq!(text("text/plain; charset=utf-16", b"\xff\xfe"), "");
        assert_eq!(
            text("text/plain; format=flowed", b"\xef\xbb\xbf\xef\xbb\xbfx"),
            "\u{feff}x"
        );
        let ascii = response(
            HttpVersion::Http11,
            200,
            &[("Content-Type", "text/plain; charset=latin1")],
        );
        assert!(matches!(ascii.text(), Cow::Borrowed("hello")));
    }

    #[test]
    fn debug_output_hides_set_cookie_values() {
        let r = response(
            HttpVersion::Http11,
            200,
            &[
                ("Set-Cookie", "sid=secret-1; HttpOnly"),
                ("set-cookie", "csrf=secret-2"),
                ("Content-Type", "text/plain"),
            ],
        );
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(
            debug.contains("Set-Cookie") && debug.contains("text/plain"),
            "{debug}"
        );
    }

    #[test]
    fn debug_output_gives_the_body_length_not_the_body() {
        // A token endpoint's answer is a credential, and a large body would flood a log.
        let r = response(HttpVersion::Http11, 200, &[])
            .with_body(Bytes::from_static(br#"{"access_token":"secret-token"}"#));
        let debug = format!("{r:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("body_len: 31"), "{debug}");
        assert!(debug.contains("status: 200"), "{debug}");
    }

    #[test]
    fn body_and_header_helpers() {
        let mut r = response(
            HttpVersion::Http11,
            200,
            &[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Transfer-Encoding", "gzip, chunked"),
            ],
        )
        .with_redirect_count(2)
        .with_elapsed(Duration::from_millis(7));
        assert_eq!(r.content_type(), Some("text/plain; charset=utf-8"));
        assert_eq!(r.header("CONTENT-TYPE"), r.content_type());
        assert!(r.is_chunked());
        assert_eq!(r.body_as_str(), Ok("hello"));
        assert_eq!(r.text(), "hello");
        assert_eq!(r.redirect_count(), 2);
        assert_eq!(r.elapsed(), Duration::from_millis(7));
        assert_eq!(r.reason(), "Reason");
        r.body = Bytes::from_static(b"caf\xc3");
        assert!(r.body_as_str().is_err());
        assert_eq!(r.text(), "caf\u{fffd}");
        assert_eq!(r.into_body().len(), 4);

        let not_chunked = response(
            HttpVersion::Http11,
            200,
            &[("Transfer-Encoding", "chunked, gzip")],
        );
        assert!(!not_chunked.is_chunked());
    }
}
