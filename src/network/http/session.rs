//! [`HttpSession`]: settings shared by every request of a client (KDNetwork `HttpSession`), and
//! [`SharedCookieJar`], the handle through which the session and client share cookies.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use url::Url;

use crate::network::http::{HeaderMap, HttpCookieJar, HttpRequest, RedirectPolicy};
use crate::network::{SocketError, TlsClientConfig};

/// The default `User-Agent`: `kdnet/<crate version>` (KDNetwork sent `KDNetwork HttpClient/1.0`).
pub const DEFAULT_USER_AGENT: &str = concat!("kdnet/", env!("CARGO_PKG_VERSION"));

/// Time allowed to establish a connection: 30 s (KDNetwork stored this value but never used it).
/// The name lookup and the TCP connect over all addresses must end within it
/// (`Timeout(Resolve)` / `Timeout(Connect)`), and an https connection's TLS handshake then gets
/// as long again (`Timeout(TlsHandshake)`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an unused pooled connection is kept: 60 s (less when the server's `Keep-Alive:
/// timeout` is shorter, see [`HttpSession::set_idle_connection_timeout`]).
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Most connections open at once to one host (scheme, host, port): 6. Requests beyond it wait in
/// a queue (KDNetwork only capped idle connections, H7).
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 6;

/// Largest response head (status line and header fields) accepted: 65 536 bytes (64 KiB, as
/// ureq). Larger heads fail with `HttpError::HeadTooLarge`.
pub const DEFAULT_MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields accepted in a response head: 100 (as hyper). More fail with
/// `HttpError::TooManyHeaders`.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 100;

/// Default largest body (after content decoding) a buffered response may collect in memory: 1 GiB.
/// Streaming and SSE requests hand their body out as it arrives and are not limited by it.
///
/// ```
/// assert_eq!(kdnet::network::http::DEFAULT_MAX_RESPONSE_BODY_BYTES, 1 << 30);
/// ```
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: usize = 1 << 30;

/// A cookie jar shared between a session, its clones and the client using it. Cloning the handle
/// shares the jar; it is `Send` and `Sync`.
///
/// ```
/// use kdnet::network::http::{HttpCookieJar, SharedCookieJar};
/// use url::Url;
///
/// let jar = SharedCookieJar::new(HttpCookieJar::new());
/// let same_jar = jar.clone();
/// let url = Url::parse("https://example.com/").unwrap();
/// jar.lock().store_response_cookies(&url, ["a=1"]);
/// assert_eq!(same_jar.lock().cookie_header_for_url(&url).as_deref(), Some("a=1"));
/// ```
#[derive(Clone)]
pub struct SharedCookieJar(Arc<JarCell>);

/// The jar behind a [`SharedCookieJar`], and whether it may hold cookies.
struct JarCell {
    jar: Mutex<HttpCookieJar>,
    /// False only while the jar holds no cookie at all (expired ones included): the client's
    /// lookup for a request then takes no lock. Written only with the lock held: set by every
    /// [`SharedCookieJar::lock`] (its holder may add cookies), and made exact again by the
    /// client's own lookups and stores. A cookie stored through another handle (another
    /// client's, on any thread) sets it before that lock is released, so a request sent after
    /// the store finds it set, and the cookie.
    may_hold_cookies: AtomicBool,
}

impl SharedCookieJar {
    /// Wraps `jar` for sharing.
    pub fn new(jar: HttpCookieJar) -> Self {
        let may_hold_cookies = AtomicBool::new(!jar.holds_no_cookie());
        SharedCookieJar(Arc::new(JarCell {
            jar: Mutex::new(jar),
            may_hold_cookies,
        }))
    }

    /// Access to the jar. Keep the guard short-lived (never across a callback). A panic while
    /// it was held elsewhere does not poison it: the jar is still consistent between calls.
    pub fn lock(&self) -> MutexGuard<'_, HttpCookieJar> {
        let guard = self.lock_unmarked();
        // The holder may add cookies: from now on requests look (see `JarCell`).
        self.0.may_hold_cookies.store(true, Ordering::Relaxed);
        guard
    }

    /// Whether both handles share one jar.
    pub fn ptr_eq(&self, other: &SharedCookieJar) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The lock, for the client's own reads and stores, which keep `may_hold_cookies` exact
    /// themselves (see [`note_contents`](Self::note_contents)).
    fn lock_unmarked(&self) -> MutexGuard<'_, HttpCookieJar> {
        self.0.jar.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether `jar` (this handle's, locked) holds any cookie.
    fn note_contents(&self, jar: &HttpCookieJar) {
        self.0
            .may_hold_cookies
            .store(!jar.holds_no_cookie(), Ordering::Relaxed);
    }

    /// [`HttpCookieJar::cookie_header_for_url`], without taking the lock when the jar holds no
    /// cookie (the usual case for a client that talks to APIs).
    pub(crate) fn cookie_header_for_url(&self, url: &Url) -> Option<String> {
        if !self.0.may_hold_cookies.load(Ordering::Relaxed) {
            return None;
        }
        let jar = self.lock_unmarked();
        self.note_contents(&jar);
        jar.cookie_header_for_url(url)
    }

    /// [`HttpCookieJar::store_response_cookies`], without taking the lock for a response that
    /// sets no cookie.
    pub(crate) fn store_response_cookies<'a>(
        &self,
        url: &Url,
        set_cookie_values: impl IntoIterator<Item = &'a str>,
    ) {
        let mut values = set_cookie_values.into_iter().peekable();
        if values.peek().is_none() {
            return;
        }
        let mut jar = self.lock_unmarked();
        jar.store_response_cookies(url, values);
        self.note_contents(&jar);
    }
}

impl Default for SharedCookieJar {
    fn default() -> Self {
        SharedCookieJar::new(HttpCookieJar::new())
    }
}

impl From<HttpCookieJar> for SharedCookieJar {
    fn from(jar: HttpCookieJar) -> Self {
        SharedCookieJar::new(jar)
    }
}

impl fmt::Debug for SharedCookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.jar.try_lock() {
            Ok(jar) => f.debug_tuple("SharedCookieJar").field(&*jar).finish(),
            Err(_) => f.write_str("SharedCookieJar(<locked>)"),
        }
    }
}

/// Settings every request of a client shares: default headers, cookies, timeouts, connection
/// limits, redirects and TLS.
///
/// Defaults (KDNetwork's where it had one): `User-Agent: kdnet/<version>`, `Accept: */*`,
/// connect timeout 30 s, idle pooled connections kept 60 s, 6 connections per host,
/// redirects followed up to 5 hops, no read (idle) timeout, response heads up to 64 KiB and 100
/// fields, gzip/deflate bodies decoded (see [`HttpSession::set_decompress`]), certificates
/// verified against the system roots and the added CA certificates.
///
/// **Redirects, one source of truth:** before a request is sent the client calls
/// [`HttpSession::prepare_request`], which applies [`HttpSession::apply_redirect_settings`]:
/// with `follow_redirects` off the request's policy becomes [`RedirectPolicy::DontFollow`]
/// whatever it was; otherwise the request's policy stands. A request's
/// `max_redirects` wins when it was set explicitly on the request; else the session's applies.
///
/// Cloning a session copies the settings but shares the cookie jar.
///
/// ```
/// use kdnet::network::http::{HttpRequest, HttpSession, RedirectPolicy};
/// use std::time::Duration;
///
/// let mut session = HttpSession::new();
/// session.set_default_header("Authorization", "Bearer abc");
/// session.set_connect_timeout(Duration::from_secs(5));
/// session.set_follow_redirects(false);
///
/// let mut request = HttpRequest::new("https://api.example.com/v1").unwrap();
/// request.set_header("Accept", "application/json");
/// session.prepare_request(&mut request);
/// assert_eq!(request.header("accept"), Some("application/json"));
/// assert_eq!(request.header("authorization"), Some("Bearer abc"));
/// assert!(request.header("user-agent").unwrap().starts_with("kdnet/"));
/// assert_eq!(request.redirect_policy(), RedirectPolicy::DontFollow);
/// ```
#[derive(Clone)]
pub struct HttpSession {
    default_headers: HeaderMap,
    cookie_jar: SharedCookieJar,
    connect_timeout: Duration,
    idle_connection_timeout: Duration,
    read_timeout: Option<Duration>,
    max_connections_per_host: usize,
    follow_redirects: bool,
    max_redirects: u32,
    max_response_head_bytes: usize,
    max_response_headers: usize,
    max_response_body_bytes: usize,
    extra_ca_certificates: Vec<Vec<u8>>,
    trust_default_roots: bool,
    client_certificate: Option<(Vec<u8>, Vec<u8>)>,
    verify_certificates: bool,
    resume_tls_sessions: bool,
    decompress: bool,
}

impl Default for HttpSession {
    fn default() -> Self {
        HttpSession::new()
    }
}

impl HttpSession {
    /// A session with the defaults listed above and an empty cookie jar.
    pub fn new() -> Self {
        let mut default_headers = HeaderMap::new();
        default_headers.append("User-Agent", DEFAULT_USER_AGENT);
        default_headers.append("Accept", "*/*");
        HttpSession {
            default_headers,
            cookie_jar: SharedCookieJar::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            read_timeout: None,
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            follow_redirects: true,
            max_redirects: crate::network::http::DEFAULT_MAX_REDIRECTS,
            max_response_head_bytes: DEFAULT_MAX_RESPONSE_HEAD_BYTES,
            max_response_headers: DEFAULT_MAX_RESPONSE_HEADERS,
            max_response_body_bytes: DEFAULT_MAX_RESPONSE_BODY_BYTES,
            extra_ca_certificates: Vec::new(),
            trust_default_roots: true,
            client_certificate: None,
            verify_certificates: true,
            resume_tls_sessions: true,
            decompress: true,
        }
    }

    // ---- default headers -------------------------------------------------------------------

    /// The headers added to every request that lacks them.
    pub fn default_headers(&self) -> &HeaderMap {
        &self.default_headers
    }

    /// The default headers, for editing (e.g. to add a second value of a name).
    pub fn default_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.default_headers
    }

    /// The first default value of header `name`.
    pub fn default_header(&self, name: &str) -> Option<&str> {
        self.default_headers.get(name)
    }

    /// Sets default header `name` to `value`, replacing earlier values.
    pub fn set_default_header(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.default_headers.set(name, value);
    }

    /// Removes default header `name`; returns whether it was there.
    pub fn remove_default_header(&mut self, name: &str) -> bool {
        self.default_headers.remove(name)
    }

    /// The default `User-Agent` ([`DEFAULT_USER_AGENT`] unless changed or removed).
    pub fn user_agent(&self) -> Option<&str> {
        self.default_headers.get("user-agent")
    }

    /// Sets the default `User-Agent`.
    pub fn set_user_agent(&mut self, user_agent: impl AsRef<str>) {
        self.default_headers.set("User-Agent", user_agent);
    }

    /// Adds each default header the request does not have (all its values); headers the request
    /// has are left alone.
    pub fn apply_default_headers(&self, request: &mut HttpRequest) {
        let headers = request.headers_mut();
        if headers.is_empty() {
            // Nothing of its own (the usual `get(url)`): the defaults are copied whole.
            headers.clone_from(&self.default_headers);
            return;
        }
        // The request's own fields come first; a default is added unless one of them has its name.
        let own = headers.len();
        // One allocation for all of them rather than regrowing per field.
        headers.reserve(self.default_headers.len(), self.default_headers.text_len());
        for (name, value) in self.default_headers.iter() {
            let request_has_it = headers
                .iter()
                .take(own)
                .any(|(n, _)| n.eq_ignore_ascii_case(name));
            if !request_has_it {
                headers.push(name, value);
            }
        }
    }

    /// Applies the redirect settings to the request (see the type docs): `follow_redirects` off
    /// forces [`RedirectPolicy::DontFollow`]; the session's `max_redirects` replaces a limit the
    /// request did not set explicitly.
    pub fn apply_redirect_settings(&self, request: &mut HttpRequest) {
        if !self.follow_redirects {
            request.set_redirect_policy(RedirectPolicy::DontFollow);
        }
        if !request.has_explicit_max_redirects() {
            request.set_max_redirects(self.max_redirects);
        }
    }

    /// Everything the session contributes before a request is sent: default headers and
    /// redirect settings. (The client adds the jar's `Cookie` per hop, to a request without one.)
    pub fn prepare_request(&self, request: &mut HttpRequest) {
        self.apply_default_headers(request);
        self.apply_redirect_settings(request);
    }

    // ---- cookies ---------------------------------------------------------------------------

    /// The session's cookie jar (a shared handle).
    pub fn cookie_jar(&self) -> &SharedCookieJar {
        &self.cookie_jar
    }

    /// Replaces the cookie jar; accepts a [`HttpCookieJar`] or a handle shared with others.
    pub fn set_cookie_jar(&mut self, jar: impl Into<SharedCookieJar>) {
        self.cookie_jar = jar.into();
    }

    /// The `Cookie` header value for `url` from the jar.
    pub fn cookie_header_for_url(&self, url: &Url) -> Option<String> {
        self.cookie_jar.cookie_header_for_url(url)
    }

    // ---- timeouts and limits ---------------------------------------------------------------

    /// Time allowed for the name lookup, the TCP connect over all addresses and the TLS
    /// handshake of an https connection, together (as curl's connect timeout); default
    /// [`DEFAULT_CONNECT_TIMEOUT`] (30 s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Sets the connect timeout.
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    /// How long idle pooled connections are kept at most; default
    /// [`DEFAULT_IDLE_CONNECTION_TIMEOUT`] (60 s). A server's `Keep-Alive: timeout=N` shortens
    /// it for that server's connections (see [`set_idle_connection_timeout`](Self::set_idle_connection_timeout)).
    pub fn idle_connection_timeout(&self) -> Duration {
        self.idle_connection_timeout
    }

    /// Sets the idle connection timeout: how long a connection is kept after its last response
    /// for a later request to reuse. It is the most: a response carrying `Keep-Alive:
    /// timeout=N` (as nginx, Apache and Node's http server send) has its connection retired a
    /// second before the server would close it, after N − 1 s when that is sooner, so that a
    /// request (a POST cannot be sent again) is not sent just as the server closes it; with
    /// N = 1 the connection is not kept at all. `Keep-Alive: max=M` retires it after M more
    /// requests. A malformed value, or `timeout=0`, is ignored. Once a connection's idle time is
    /// up, no request gets it (a new one, a redirect hop, a replay, a queued one), even before
    /// the client's loop has had the turn that closes it. 0 keeps no connection idle: one is
    /// reused only by a request already waiting for it (a redirect hop, a queued request).
    /// Lowered on a client's session ([`HttpClient::set_session`](super::HttpClient::set_session)),
    /// it applies to the connections idle at the time too: none is kept past the new timeout
    /// counted from the change.
    pub fn set_idle_connection_timeout(&mut self, timeout: Duration) {
        self.idle_connection_timeout = timeout;
    }

    /// How long the response head may take from the moment the request is written (a deadline:
    /// a peer dripping head bytes cannot extend it; while a request body is still going out, it
    /// runs from the last body bytes the kernel took), and the longest silence allowed between
    /// body bytes afterwards; also for streaming requests. It fails the request with
    /// `Timeout(SendRequest)` when the body stopped going out, `Timeout(ResponseHead)` when the
    /// head did not come, `Timeout(BodyIdle)` when the body paused. Default `None` (no limit
    /// beyond the request's total timeout). It does not run while the request's own callback or
    /// slot waits in a nested loop (the client holds its connection back then, so the silence
    /// is not the server's); it runs again once that code returns. A close of the connection
    /// that the client read before the timeout's turn came (the loop was late: other user code
    /// kept it busy) ends the request as that close does (a body read to the close complete,
    /// else its error), not with a timeout; the total timeout alike.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Sets the read (idle) timeout; accepts a `Duration` or `None`.
    pub fn set_read_timeout(&mut self, timeout: impl Into<Option<Duration>>) {
        self.read_timeout = timeout.into();
    }

    /// Most connections open at once per host, active and idle together; default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_HOST`] (6). Further requests wait for a free connection.
    pub fn max_connections_per_host(&self) -> usize {
        self.max_connections_per_host
    }

    /// Sets the per-host connection limit; 0 is treated as 1 (a request always needs one).
    pub fn set_max_connections_per_host(&mut self, max: usize) {
        self.max_connections_per_host = max.max(1);
    }

    /// Whether redirects are followed at all (default true). When false, no request follows
    /// redirects, whatever its own policy.
    pub fn follow_redirects(&self) -> bool {
        self.follow_redirects
    }

    /// Turns following redirects on or off for every request.
    pub fn set_follow_redirects(&mut self, follow: bool) {
        self.follow_redirects = follow;
    }

    /// The redirect limit for requests that do not set their own; default 5.
    pub fn max_redirects(&self) -> u32 {
        self.max_redirects
    }

    /// Sets the session's redirect limit.
    pub fn set_max_redirects(&mut self, max: u32) {
        self.max_redirects = max;
    }

    /// Largest response head accepted; default [`DEFAULT_MAX_RESPONSE_HEAD_BYTES`] (64 KiB).
    pub fn max_response_head_bytes(&self) -> usize {
        self.max_response_head_bytes
    }

    /// Sets the response head size limit.
    pub fn set_max_response_head_bytes(&mut self, max: usize) {
        self.max_response_head_bytes = max;
    }

    /// Most header fields accepted per response; default [`DEFAULT_MAX_RESPONSE_HEADERS`] (100).
    pub fn max_response_headers(&self) -> usize {
        self.max_response_headers
    }

    /// Sets the header count limit.
    pub fn set_max_response_headers(&mut self, max: usize) {
        self.max_response_headers = max;
    }

    /// Largest body (after content decoding, so also a decompression bomb's) a buffered response
    /// may collect; default [`DEFAULT_MAX_RESPONSE_BODY_BYTES`] (1 GiB). Beyond it the request
    /// fails with [`HttpError::LimitExceeded`](super::HttpError::LimitExceeded); a larger announced
    /// `Content-Length` fails as soon as the head arrives. Streaming requests are not limited, nor
    /// is the body of a redirect that is followed (it is read and discarded, never collected;
    /// beyond 64 KiB, or when only the end of the connection would end it, its connection is
    /// closed and the redirect followed without the rest).
    pub fn max_response_body_bytes(&self) -> usize {
        self.max_response_body_bytes
    }

    /// Sets the buffered response body limit.
    pub fn set_max_response_body_bytes(&mut self, max: usize) {
        self.max_response_body_bytes = max;
    }

    /// Whether response bodies are decoded (default true): see
    /// [`set_decompress`](Self::set_decompress).
    pub fn decompresses(&self) -> bool {
        self.decompress
    }

    /// Turns automatic content decoding on (the default) or off, as reqwest's `gzip(false)`
    /// and `deflate(false)` together.
    ///
    /// On, a request without an `Accept-Encoding` of its own (or a default one) is sent with
    /// `Accept-Encoding: gzip, deflate` (and `br` with the `brotli` feature), and a response
    /// body in one of those codings is handed out decoded, its `Content-Encoding` and
    /// `Content-Length` fields removed (they describe the encoded body). Off, no
    /// `Accept-Encoding` is added and every body is handed out as it was received, its fields
    /// kept: set `Accept-Encoding` yourself to get, say, the gzip bytes as the server sent them.
    ///
    /// The request's `Accept-Encoding` follows the setting when the request is sent (a
    /// redirect hop: when the hop is sent); the body's decoding follows it when the response
    /// head arrives.
    pub fn set_decompress(&mut self, enabled: bool) {
        self.decompress = enabled;
    }

    // ---- TLS -------------------------------------------------------------------------------

    /// The added CA certificates, as PEM (one added as DER is kept in its PEM form), trusted
    /// in addition to the system roots (instead of them after
    /// [`set_trust_default_roots(false)`](Self::set_trust_default_roots)).
    pub fn extra_ca_certificates(&self) -> &[Vec<u8>] {
        &self.extra_ca_certificates
    }

    /// Trusts the CA certificate(s) in `pem` in addition to the system roots. Fails, saying why
    /// (no `CERTIFICATE` section, a broken one, a key given instead, …), when `pem` holds no
    /// usable certificate; nothing is added then.
    pub fn add_ca_certificate(&mut self, pem: impl Into<Vec<u8>>) -> Result<(), SocketError> {
        let pem = pem.into();
        // Checked now, not when the first https request builds the TLS configuration.
        TlsClientConfig::new().add_ca_certificate(&pem)?;
        self.extra_ca_certificates.push(pem);
        Ok(())
    }

    /// Trusts the CA certificate `der` (one certificate, DER: binary, as a `.der`/`.cer` file
    /// holds it), as [`add_ca_certificate`](Self::add_ca_certificate) does a PEM one. Fails,
    /// saying why, when it is not a usable certificate; nothing is added then.
    ///
    /// ```
    /// use kdnet::network::http::HttpSession;
    ///
    /// let mut session = HttpSession::new();
    /// assert!(session.add_ca_certificate_der(b"not DER").is_err());
    /// assert!(session.extra_ca_certificates().is_empty());
    /// ```
    pub fn add_ca_certificate_der(&mut self, der: impl AsRef<[u8]>) -> Result<(), SocketError> {
        use base64::Engine as _;
        let der = der.as_ref();
        // Checked now, not when the first https request builds the TLS configuration.
        TlsClientConfig::new().add_ca_certificate_der(der)?;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = Vec::with_capacity(text.len() + text.len() / 64 + 64);
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        self.extra_ca_certificates.push(pem);
        Ok(())
    }

    /// Forgets every added CA certificate.
    pub fn clear_ca_certificates(&mut self) {
        self.extra_ca_certificates.clear();
    }

    /// Whether the system roots are trusted besides the added CA certificates (default true).
    pub fn trusts_default_roots(&self) -> bool {
        self.trust_default_roots
    }

    /// Trusts the system roots (the default store: the system's, else Mozilla's) besides the
    /// added CA certificates (`true`, the default), or only the added ones (`false`: a private
    /// PKI's servers, where a certificate from a public CA must not be accepted; reqwest's
    /// `tls_built_in_root_certs(false)`). With `false` and no CA certificate added, every https
    /// request fails with `Transport(Tls(Configuration("no trusted root certificate")))`
    /// (unless verification is off).
    pub fn set_trust_default_roots(&mut self, trusted: bool) {
        self.trust_default_roots = trusted;
    }

    /// The client certificate chain and private key (both PEM), if set.
    pub fn client_certificate(&self) -> Option<(&[u8], &[u8])> {
        self.client_certificate
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()))
    }

    /// Presents this certificate chain and key (PEM) when a server asks for client
    /// authentication. Fails, saying why, when they are unusable (no certificate, an encrypted
    /// or unsupported key, a key that does not belong to the first certificate); the previous
    /// setting stays then.
    pub fn set_client_certificate(
        &mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<(), SocketError> {
        let (cert_pem, key_pem) = (cert_pem.into(), key_pem.into());
        TlsClientConfig::new().set_client_certificate(&cert_pem, &key_pem)?;
        self.client_certificate = Some((cert_pem, key_pem));
        Ok(())
    }

    /// Stops presenting a client certificate.
    pub fn clear_client_certificate(&mut self) {
        self.client_certificate = None;
    }

    /// Whether server certificates are verified (default true).
    pub fn verifies_certificates(&self) -> bool {
        self.verify_certificates
    }

    /// Accepts any server certificate for any name: anyone on the network path can then read and
    /// change the traffic. For tests against self-signed servers only; prefer
    /// [`HttpSession::add_ca_certificate`].
    pub fn dangerous_disable_certificate_verification(&mut self) {
        log::warn!("TLS certificate verification disabled for an HTTP session");
        self.verify_certificates = false;
    }

    /// Turns certificate verification back on.
    pub fn enable_certificate_verification(&mut self) {
        self.verify_certificates = true;
    }

    /// Whether https connections resume TLS sessions (default true; see
    /// [`set_tls_session_resumption`](Self::set_tls_session_resumption)).
    pub fn resumes_tls_sessions(&self) -> bool {
        self.resume_tls_sessions
    }

    /// Resumes TLS sessions on new https connections (`true`, the default: a later connection
    /// to a server skips the certificate exchange, as browsers and curl do) or makes every
    /// handshake a full one (`false`, curl's `CURLOPT_SSL_SESSIONID_CACHE` 0): a resumed
    /// connection tells the server it comes from the client it saw before, which matters where
    /// connections must not be linkable. The client's sessions live with its TLS settings (see
    /// [`TlsClientConfig::set_session_resumption`]); changing them through
    /// [`HttpClient::set_session`](crate::network::http::HttpClient::set_session) starts anew.
    pub fn set_tls_session_resumption(&mut self, enabled: bool) {
        self.resume_tls_sessions = enabled;
    }
}

impl fmt::Debug for HttpSession {
    /// Hides credential headers and the client key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSession")
            .field("default_headers", &self.default_headers)
            .field("cookie_jar", &self.cookie_jar)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_connection_timeout", &self.idle_connection_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_connections_per_host", &self.max_connections_per_host)
            .field("follow_redirects", &self.follow_redirects)
            .field("max_redirects", &self.max_redirects)
            .field("max_response_head_bytes", &self.max_response_head_bytes)
            .field("max_response_headers", &self.max_response_headers)
            .field("max_response_body_bytes", &self.max_response_body_bytes)
            .field("decompress", &self.decompress)
            .field("extra_ca_certificates", &self.extra_ca_certificates.len())
            .field("trust_default_roots", &self.trust_default_roots)
            .field("client_certificate", &self.client_certificate.is_some())
            .field("verify_certificates", &self.verify_certificates)
            .field("resume_tls_sessions", &self.resume_tls_sessions)
            .finish()
    }
}
