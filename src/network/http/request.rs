//! [`HttpRequest`]: what to send (KDNetwork `HttpRequest`, with a real URL type and padded Basic
//! auth).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use url::Url;

use crate::network::http::headers::forbidden_value_byte;
use crate::network::http::method::is_token;
use crate::network::http::response::parse_content_length;
use crate::network::http::{HeaderMap, HttpError, HttpMethod, RedirectPolicy};

/// Total time a request may take unless changed: 30 s (KDNetwork's default). Streaming requests
/// have no total timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed before giving up with [`HttpError::TooManyRedirects`]: 5 (KDNetwork's
/// default, for both the request and the session).
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// Which kind of credentials the request's `Authorization` header carries (see
/// [`HttpRequest::auth_type`]). More schemes (Digest, …) may be told apart later, so matches
/// need a wildcard arm.
///
/// ```
/// use kdnet::network::http::{AuthType, HttpRequest};
///
/// let mut request = HttpRequest::new("https://example.com/").unwrap();
/// assert_eq!(request.auth_type(), AuthType::None);
/// request.set_bearer_auth("token");
/// assert_eq!(request.auth_type(), AuthType::Bearer);
/// request.set_header("Authorization", "Negotiate YII=");
/// assert_eq!(request.auth_type(), AuthType::None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AuthType {
    /// No `Authorization` header, or one with another scheme.
    #[default]
    None,
    /// `Authorization: Basic …`.
    Basic,
    /// `Authorization: Bearer …`.
    Bearer,
}

/// An HTTP request: URL, method, headers, body and per-request options.
///
/// Defaults follow KDNetwork: GET, a total timeout of [`DEFAULT_REQUEST_TIMEOUT`] (30 s),
/// [`RedirectPolicy::FollowAll`], at most [`DEFAULT_MAX_REDIRECTS`] (5) redirects, and
/// automatically added common headers.
///
/// Only `http` and `https` URLs are accepted. Credentials in the URL
/// (`http://user:pass@host/`) are percent-decoded, turned into Basic auth and removed from the
/// URL, so they are never sent in the request target or kept in the final URL.
///
/// Header names compare case-insensitively and keep the spelling given. The body is a
/// [`Bytes`], so cloning a request (as redirects do) never copies it.
///
/// ```
/// use kdnet::network::http::{AuthType, HttpMethod, HttpRequest};
/// use std::time::Duration;
///
/// let request = HttpRequest::post("https://api.example.com/v1/items", r#"{"id":1}"#)
///     .unwrap()
///     .with_header("Content-Type", "application/json")
///     .with_timeout(Duration::from_secs(5));
/// assert_eq!(request.method(), &HttpMethod::Post);
/// assert_eq!(request.header("content-type"), Some("application/json"));
/// assert_eq!(request.body().as_ref(), br#"{"id":1}"#);
///
/// let with_user = HttpRequest::new("http://Aladdin:open%20sesame@example.com/").unwrap();
/// assert_eq!(with_user.url().as_str(), "http://example.com/");
/// assert_eq!(with_user.auth_type(), AuthType::Basic);
/// assert_eq!(with_user.header("authorization"), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
/// ```
#[derive(Clone)]
pub struct HttpRequest {
    /// Shared, not copied: the client's last parse of the same text, the request (also the
    /// copy an SSE client keeps for reconnects) and its response point at one URL.
    url: Arc<Url>,
    method: HttpMethod,
    headers: HeaderMap,
    body: Bytes,
    timeout: Option<Duration>,
    redirect_policy: RedirectPolicy,
    /// `None` until set explicitly, so the session's limit can apply (see
    /// `HttpSession::apply_redirect_settings`).
    max_redirects: Option<u32>,
    auto_add_common_headers: bool,
    streaming: bool,
}

impl HttpRequest {
    /// A GET request for `url`.
    ///
    /// Fails with [`HttpError::InvalidUrl`] when `url` does not parse or its scheme is not `http`
    /// or `https`.
    pub fn new(url: &str) -> Result<Self, HttpError> {
        Self::from_url(parse_url(url)?)
    }

    /// A GET request for an already parsed URL (same rules as [`HttpRequest::new`]).
    ///
    /// ```
    /// use kdnet::network::http::HttpRequest;
    /// use url::Url;
    ///
    /// let url = Url::parse("https://example.com/a?b=c").unwrap();
    /// assert_eq!(HttpRequest::from_url(url).unwrap().url().query(), Some("b=c"));
    /// assert!(HttpRequest::from_url(Url::parse("ftp://example.com/").unwrap()).is_err());
    /// ```
    pub fn from_url(url: Url) -> Result<Self, HttpError> {
        Self::from_shared_url(Arc::new(url))
    }

    /// [`HttpRequest::from_url`] for a URL shared with its other users (a URL with credentials
    /// is copied before they are taken out of it).
    pub(crate) fn from_shared_url(url: Arc<Url>) -> Result<Self, HttpError> {
        check_url_is_requestable(&url)?;
        let mut request = Self::from_checked_url(url);
        request.take_url_credentials();
        Ok(request)
    }

    /// A GET request for a URL known to be requestable and free of credentials: one that
    /// [`HttpRequest::from_shared_url`] took as it was before (the client's cached parse).
    pub(crate) fn from_checked_url(url: Arc<Url>) -> Self {
        HttpRequest {
            url,
            method: HttpMethod::Get,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            redirect_policy: RedirectPolicy::default(),
            max_redirects: None,
            auto_add_common_headers: true,
            streaming: false,
        }
    }

    /// A GET request (alias of [`HttpRequest::new`] that reads well in call chains).
    ///
    /// ```
    /// use kdnet::network::http::{HttpMethod, HttpRequest};
    ///
    /// let request = HttpRequest::get("https://example.com/feed")?.with_header("Accept", "*/*");
    /// assert_eq!(request.method(), &HttpMethod::Get);
    /// # Ok::<(), kdnet::network::http::HttpError>(())
    /// ```
    pub fn get(url: &str) -> Result<Self, HttpError> {
        Self::new(url)
    }

    /// A POST request carrying `body`.
    pub fn post(url: &str, body: impl Into<Bytes>) -> Result<Self, HttpError> {
        Ok(Self::new(url)?
            .with_method(HttpMethod::Post)
            .with_body(body))
    }

    // ---- URL -------------------------------------------------------------------------------

    /// The URL that is requested (without credentials).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL, to share with a response.
    pub(crate) fn shared_url(&self) -> &Arc<Url> {
        &self.url
    }

    /// Replaces the URL. Same rules as [`HttpRequest::new`]: only `http`/`https`, and URL
    /// credentials become Basic auth.
    pub fn set_url(&mut self, url: Url) -> Result<(), HttpError> {
        check_url_is_requestable(&url)?;
        self.url = Arc::new(url);
        self.take_url_credentials();
        Ok(())
    }

    /// Moves `user:password` from the URL into an `Authorization: Basic` header (percent-decoded)
    /// and removes it from the URL. Does nothing when the URL has no credentials. The
    /// constructors and [`HttpRequest::set_url`] (the only ways to give a request a URL) already
    /// call it, so a request's URL never holds credentials and calling it again finds none.
    ///
    /// Returns whether credentials were found.
    ///
    /// ```
    /// use kdnet::network::http::{AuthType, HttpRequest};
    ///
    /// let mut request = HttpRequest::new("https://user:pw@example.com/").unwrap();
    /// assert_eq!(request.url().as_str(), "https://example.com/");
    /// assert_eq!(request.auth_type(), AuthType::Basic);
    /// assert!(!request.take_url_credentials());
    /// ```
    pub fn take_url_credentials(&mut self) -> bool {
        // Every request passes here when made (the client does not look again): most URLs carry
        // no credentials.
        if self.url.username().is_empty() && self.url.password().is_none() {
            return false;
        }
        let username = percent_decode(self.url.username());
        let password = self.url.password().map(percent_decode);
        if username.is_empty() && password.is_none() {
            return false;
        }
        self.set_basic_auth_bytes(&username, password.as_deref().unwrap_or_default());
        // Cannot fail for http(s) URLs, which always have a host; ignoring is safe either way
        // because the credentials are then already part of the Authorization header.
        let url = Arc::make_mut(&mut self.url);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        true
    }

    // ---- method and body -------------------------------------------------------------------

    /// The method (default GET).
    pub fn method(&self) -> &HttpMethod {
        &self.method
    }

    /// Sets the method.
    pub fn set_method(&mut self, method: HttpMethod) {
        self.method = method;
    }

    /// Builder form of [`HttpRequest::set_method`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_method(mut self, method: HttpMethod) -> Self {
        self.method = method;
        self
    }

    /// The body (empty by default).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Sets the body from anything that converts into [`Bytes`]: `String`, `Vec<u8>`, `Bytes`,
    /// `&'static str`, `&'static [u8]` (copy borrowed data with `Bytes::copy_from_slice`).
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.body = body.into();
    }

    /// Builder form of [`HttpRequest::set_body`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    // ---- headers ---------------------------------------------------------------------------

    /// All header fields.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// All header fields, for editing.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every value of header `name`, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.get_all(name)
    }

    /// Whether header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains(name)
    }

    /// Sets header `name` to `value`, replacing every earlier value.
    pub fn set_header(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.headers.set(name, value);
    }

    /// Adds a value for header `name`, keeping earlier values.
    pub fn add_header(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.headers.append(name, value);
    }

    /// Removes every value of header `name`; returns whether there was one.
    pub fn remove_header(&mut self, name: &str) -> bool {
        self.headers.remove(name)
    }

    /// Builder form of [`HttpRequest::set_header`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.headers.set(name, value);
        self
    }

    // ---- authentication --------------------------------------------------------------------

    /// Sets `Authorization: Basic base64(user:password)` (RFC 7617, padded Base64 — KDNetwork
    /// forgot the padding). The user name must not contain `:`.
    ///
    /// ```
    /// use kdnet::network::http::HttpRequest;
    ///
    /// let mut request = HttpRequest::new("https://example.com/").unwrap();
    /// request.set_basic_auth("username", "password");
    /// assert_eq!(request.header("Authorization"), Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ="));
    /// ```
    pub fn set_basic_auth(&mut self, user: &str, password: &str) {
        self.set_basic_auth_bytes(user.as_bytes(), password.as_bytes());
    }

    /// Sets `Authorization: Bearer <token>`.
    pub fn set_bearer_auth(&mut self, token: &str) {
        self.headers.set("Authorization", format!("Bearer {token}"));
    }

    /// The scheme of the `Authorization` header, read from the header itself so it can never
    /// disagree with what is sent.
    pub fn auth_type(&self) -> AuthType {
        match self.headers.get("authorization") {
            Some(value) if has_scheme(value, "basic") => AuthType::Basic,
            Some(value) if has_scheme(value, "bearer") => AuthType::Bearer,
            _ => AuthType::None,
        }
    }

    // ---- options ---------------------------------------------------------------------------

    /// The total timeout (default [`DEFAULT_REQUEST_TIMEOUT`], 30 s); `None` means no total
    /// timeout. Ignored for streaming requests.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sets the total timeout; accepts a `Duration` or `None`.
    pub fn set_timeout(&mut self, timeout: impl Into<Option<Duration>>) {
        self.timeout = timeout.into();
    }

    /// Builder form of [`HttpRequest::set_timeout`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Which redirects are followed (default [`RedirectPolicy::FollowAll`]). A session with
    /// `follow_redirects` off overrides this with [`RedirectPolicy::DontFollow`].
    pub fn redirect_policy(&self) -> RedirectPolicy {
        self.redirect_policy
    }

    /// Sets the redirect policy.
    pub fn set_redirect_policy(&mut self, policy: RedirectPolicy) {
        self.redirect_policy = policy;
    }

    /// Builder form of [`HttpRequest::set_redirect_policy`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_redirect_policy(mut self, policy: RedirectPolicy) -> Self {
        self.redirect_policy = policy;
        self
    }

    /// The most redirects this request follows: the value set with
    /// [`HttpRequest::set_max_redirects`], else [`DEFAULT_MAX_REDIRECTS`] (5). Before sending, the
    /// session replaces a value that was never set explicitly with its own limit.
    pub fn max_redirects(&self) -> u32 {
        self.max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS)
    }

    /// Sets the redirect limit explicitly; it then wins over the session's limit.
    pub fn set_max_redirects(&mut self, max: u32) {
        self.max_redirects = Some(max);
    }

    /// Builder form of [`HttpRequest::set_max_redirects`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_max_redirects(mut self, max: u32) -> Self {
        self.max_redirects = Some(max);
        self
    }

    /// Whether the client adds `Accept-Encoding` (not for a `Range` request: a range of a
    /// compressed body cannot be decoded alone; nor when the session's decoding is off, see
    /// [`HttpSession::set_decompress`](super::HttpSession::set_decompress)) and `Content-Length: 0` for an empty POST, PUT or
    /// PATCH, when they are missing (default true). `Host` is added whenever it is missing (an
    /// HTTP/1.1 request must have it, RFC 9112 §3.2), a non-empty body always gets its
    /// `Content-Length` (the server could not tell where it ends otherwise), and the session's
    /// default headers (`User-Agent`, `Accept`, …) are added either way.
    pub fn auto_add_common_headers(&self) -> bool {
        self.auto_add_common_headers
    }

    /// Turns automatic common headers on or off.
    pub fn set_auto_add_common_headers(&mut self, enabled: bool) {
        self.auto_add_common_headers = enabled;
    }

    /// Builder form of [`HttpRequest::set_auto_add_common_headers`].
    ///
    /// ```
    /// use kdnet::network::http::HttpRequest;
    ///
    /// let request = HttpRequest::new("http://127.0.0.1/")
    ///     .unwrap()
    ///     .with_auto_add_common_headers(false);
    /// assert!(!request.auto_add_common_headers());
    /// ```
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_auto_add_common_headers(mut self, enabled: bool) -> Self {
        self.auto_add_common_headers = enabled;
        self
    }

    /// Whether this is a streaming request (default false): one with no total timeout.
    /// [`HttpClient::send_streaming`](super::HttpClient::send_streaming) and the `SseClient` set
    /// it, and they deliver the body piece by piece; a request given to
    /// [`HttpClient::send`](super::HttpClient::send) has its body collected whatever the flag
    /// says (with the flag, only without the total timeout).
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// Turns streaming on or off. A streaming request has no total timeout (a stream may last
    /// forever); the session's read timeout still bounds silence between body bytes.
    pub fn set_streaming(&mut self, streaming: bool) {
        self.streaming = streaming;
    }

    /// Builder form of [`HttpRequest::set_streaming`].
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_streaming(mut self, streaming: bool) -> Self {
        self.streaming = streaming;
        self
    }

    /// Checks what would corrupt the request on the wire (called by the client before sending):
    /// header names must be tokens, header values must not contain CR, LF, NUL or other control
    /// characters except tab, a `Content-Length` header must match the body length, and there
    /// must be no `Transfer-Encoding` header (the client writes the body as it is, framed by
    /// `Content-Length`; a body announced as chunked but not encoded so would let its bytes pass
    /// for chunk framing and further requests), and at most one `Host` field (RFC 9112 §3.2).
    /// `CONNECT` is refused: kdnet does not open proxy tunnels.
    ///
    /// ```
    /// use kdnet::network::http::HttpRequest;
    ///
    /// let request = HttpRequest::new("http://example.com/").unwrap();
    /// assert!(request.validate().is_ok());
    /// assert!(request.with_header("X-Evil", "a\r\nInjected: 1").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), HttpError> {
        if self.method == HttpMethod::Connect {
            // A tunnel: an authority-form target, and a 2xx turns the connection into raw bytes.
            return Err(HttpError::InvalidRequest(
                "CONNECT (a proxy tunnel) is not supported: requests are sent with a path target \
                 and read a response body"
                    .into(),
            ));
        }
        // One pass over the fields: this runs for every request sent.
        let mut hosts = 0;
        for (name, value) in self.headers.iter() {
            if !is_token(name) {
                return Err(HttpError::InvalidRequest(format!(
                    "header name {name:?} is not a valid token"
                )));
            }
            if forbidden_value_byte(value.as_bytes()).is_some() {
                return Err(HttpError::InvalidRequest(format!(
                    "value of header {name:?} contains a control character"
                )));
            }
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
                if hosts > 1 {
                    return Err(HttpError::InvalidRequest(
                        "more than one Host header field".into(),
                    ));
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(HttpError::InvalidRequest(
                    "Transfer-Encoding is not supported in requests: the body is sent as it is, \
                     framed by Content-Length"
                        .into(),
                ));
            } else if name.eq_ignore_ascii_case("content-length")
                && parse_content_length(value) != u64::try_from(self.body.len()).ok()
            {
                return Err(HttpError::InvalidRequest(format!(
                    "Content-Length {value:?} does not match the body length of {} bytes",
                    self.body.len()
                )));
            }
        }
        Ok(())
    }

    /// Drops the header fields and body once they can no longer be needed (an event stream is
    /// open: no retry, no redirect), so a long-lived stream does not keep a second copy of them
    /// (its `SseClient` keeps the request it reconnects with).
    pub(crate) fn shed_headers_and_body(&mut self) {
        self.headers = HeaderMap::new();
        self.body = Bytes::new();
    }

    /// Whether the value was set explicitly (the session fills in its own limit otherwise).
    pub(crate) fn has_explicit_max_redirects(&self) -> bool {
        self.max_redirects.is_some()
    }

    fn set_basic_auth_bytes(&mut self, user: &[u8], password: &[u8]) {
        let mut credentials = Vec::with_capacity(user.len() + 1 + password.len());
        credentials.extend_from_slice(user);
        credentials.push(b':');
        credentials.extend_from_slice(password);
        self.headers.set(
            "Authorization",
            format!("Basic {}", BASE64.encode(credentials)),
        );
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("url", &self.url.as_str())
            .field("method", &self.method)
            .field("headers", &self.headers) // `HeaderMap`'s Debug hides credentials
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .field("redirect_policy", &self.redirect_policy)
            .field("max_redirects", &self.max_redirects)
            .field("auto_add_common_headers", &self.auto_add_common_headers)
            .field("streaming", &self.streaming)
            .finish()
    }
}

/// Refuses URLs the client cannot request.
pub(crate) fn check_url_is_requestable(url: &Url) -> Result<(), HttpError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpError::InvalidUrl {
            url: redact_userinfo(url.as_str()).into_owned(),
            reason: format!("scheme {:?} is not http or https", url.scheme()),
        });
    }
    if url.host().is_none() {
        return Err(HttpError::InvalidUrl {
            url: redact_userinfo(url.as_str()).into_owned(),
            reason: "no host".to_string(),
        });
    }
    Ok(())
}

/// `url` (parsed or not) with its user information — `user:password@` — replaced by `***@`, so
/// it can be shown in errors and logs. Finds the authority the way the WHATWG URL parser does
/// (after the scheme's `:` and any slashes, up to the first `/`, `?` or `#`, or `\` for the
/// special schemes; the user information ends at its last `@`), and errs on the side of
/// hiding: anything looking like a scheme followed by slashes is treated as having an authority.
pub(crate) fn redact_userinfo(url: &str) -> Cow<'_, str> {
    const SPECIAL_SCHEMES: [&str; 6] = ["http", "https", "ws", "wss", "ftp", "file"];
    let Some(colon) = url.find(':') else {
        return Cow::Borrowed(url);
    };
    let scheme = &url[..colon];
    if scheme.contains(['/', '\\', '?', '#', '@']) {
        return Cow::Borrowed(url);
    }
    // The parser drops leading spaces and control characters, tabs and newlines anywhere.
    let scheme_name: String = scheme.chars().filter(|c| *c > ' ').collect();
    let special = SPECIAL_SCHEMES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&scheme_name));
    let rest = &url[colon + 1..];
    let authority = rest.trim_start_matches(['/', '\\']);
    let start = colon + 1 + (rest.len() - authority.len());
    if !special && start - colon - 1 < 2 {
        return Cow::Borrowed(url);
    }
    let end = if special {
        authority.find(['/', '\\', '?', '#'])
    } else {
        authority.find(['/', '?', '#'])
    };
    let authority = &authority[..end.unwrap_or(authority.len())];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..]))
}

/// Whether an `Authorization` value starts with `scheme` followed by a space (case-insensitive,
/// RFC 9110 §11.1).
fn has_scheme(value: &str, scheme: &str) -> bool {
    value
        .get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && value.as_bytes().get(scheme.len()) == Some(&b' ')
}

/// Decodes `%XX` escapes; anything else (including a malformed `%`) is kept as is.
fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `url` parsed, or the error [`HttpRequest::new`] reports for it.
pub(crate) fn parse_url(url: &str) -> Result<Url, HttpError> {
    Url::parse(url).map_err(|e| HttpError::InvalidUrl {
        url: redact_userinfo(url).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_handles_escapes_and_stray_percent_signs() {
        assert_eq!(percent_decode("a%20b%3A%zz%4"), b"a b:%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é".as_bytes());
        assert_eq!(percent_decode(""), b"");
    }

    #[test]
    fn redact_userinfo_hides_user_and_password_only() {
        let cases = [
            ("http://u:p@host/a@b", "http://***@host/a@b"),
            ("http://token@host", "http://***@host"),
            ("http://host/path?x=a@b", "http://host/path?x=a@b"),
            ("http://a:b@c:d@host:80/", "http://***@host:80/"),
            ("http:u:p@host", "http:***@host"),
            ("HTTPS:\\\\u:p@host\\x", "HTTPS:\\\\***@host\\x"),
            (" \thttp://u:p@host", " \thttp://***@host"),
            ("foo://u:p@host/", "foo://***@host/"),
            ("mailto:someone@example.com", "mailto:someone@example.com"),
            ("not a url", "not a url"),
            ("", ""),
            ("http://u:p@", "http://***@"),
            ("http://é:ü@hôst/", "http://***@hôst/"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_userinfo(url), redacted, "{url:?}");
        }
        assert!(matches!(
            redact_userinfo("https://example.com/"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn auth_scheme_detection_needs_the_separating_space() {
        assert!(has_scheme("Basic abc", "basic"));
        assert!(has_scheme("bearer t", "bearer"));
        assert!(!has_scheme("Basicabc", "basic"));
        assert!(!has_scheme("Bas", "basic"));
        assert!(!has_scheme("Bé", "basic"));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let mut request = HttpRequest::new("http://example.com/").unwrap();
        request.set_bearer_auth("secret-token");
        request.set_header("Cookie", "session=secret-cookie");
        let debug = format!("{request:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
