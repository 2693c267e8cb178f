//! [`SseError`]: why an event stream failed or had to be re-established.

use std::fmt;

use crate::network::http::HttpError;
use crate::network::{SocketError, TlsFailure};

/// Whether `error` comes from the request itself and so would come back on every attempt.
pub(super) fn is_permanent(error: &HttpError) -> bool {
    matches!(
        error,
        HttpError::InvalidUrl { .. }
            | HttpError::InvalidRequest(_)
            | HttpError::Transport(
                SocketError::InvalidAddress(_)
                    | SocketError::Tls(
                        TlsFailure::Configuration(_)
                            // The server does not speak TLS: the URL's scheme is wrong.
                            | TlsFailure::PlainHttp { .. }
                            | TlsFailure::NotTls { .. }
                    )
            )
    )
}

/// Why an [`SseClient`](super::SseClient) reported an error.
///
/// [`is_fatal`](Self::is_fatal) tells whether the client gave up (state `Closed`) or will
/// reconnect after the reconnection time (state `Connecting`). With
/// [`SseClient::set_auto_reconnect`](super::SseClient::set_auto_reconnect) off no error is followed
/// by a reconnect; the state is `Closed` when `error` is emitted.
///
/// ```
/// use kdnet::network::sse::SseError;
/// use std::time::Duration;
///
/// let stop = SseError::BadStatus { status: 204, body: String::new() };
/// assert!(stop.is_fatal());
/// assert_eq!(stop.to_string(), "server answered with status 204 instead of 200");
///
/// // The message quotes the body on one line; `body()` has it as received.
/// let page = "<html>\r\n  <h1>502 Bad Gateway</h1>\r\n</html>\r\n";
/// let refused = SseError::BadStatus { status: 502, body: page.to_string() };
/// assert_eq!(
///     refused.to_string(),
///     "server answered with status 502 instead of 200: <html> <h1>502 Bad Gateway</h1> </html>"
/// );
/// assert_eq!(refused.body(), Some(page));
///
/// let throttled = SseError::Throttled {
///     status: 503,
///     retry_after: Some(Duration::from_secs(5)),
///     body: String::new(),
/// };
/// assert!(!throttled.is_fatal());
/// assert_eq!(throttled.to_string(), "server throttled us (status 503, retry-after 5s)");
/// ```
///
/// `Debug` (what `unwrap()` prints) quotes a body no further than the message does: its first
/// 300 characters, escaped, then `…` and its length.
#[derive(Clone)]
#[non_exhaustive]
pub enum SseError {
    /// The connection failed or broke (network error, timeout, truncated response).
    /// The client reconnects — unless asking again cannot help: a request that cannot be sent
    /// (bad URL, header or host name, unusable TLS settings) or an `https://` server that does
    /// not speak TLS ([`TlsFailure::PlainHttp`], [`TlsFailure::NotTls`]) is fatal, reported as
    /// [`Request`](Self::Request) instead.
    Http(HttpError),
    /// The server answered with a status other than 200 (204 is the usual "stop" signal).
    /// Fatal.
    BadStatus {
        /// The status code.
        status: u16,
        /// The start of the response body (at most 1 KiB, lossily decoded), for diagnosis. The
        /// message quotes at most its first 300 characters, on one line.
        body: String,
    },
    /// The response was not `text/event-stream`. Fatal.
    BadContentType {
        /// The `Content-Type` received, if any.
        content_type: Option<String>,
        /// The start of the response body (at most 1 KiB, lossily decoded), for diagnosis: a
        /// sign-in page, or an API's JSON answer to a request that did not ask for a stream. The
        /// message quotes at most its first 300 characters, on one line.
        body: String,
    },
    /// Redirects could not be followed (too many, or a bad `Location`). Fatal.
    Redirect(HttpError),
    /// The request can never be sent as it is: an invalid URL, header or host name, an unusable
    /// TLS configuration, or an `https://` URL of a server that does not speak TLS. Reconnecting
    /// would fail the same way. Fatal.
    Request(HttpError),
    /// One event exceeded the parser's size limit. Fatal.
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The server is overloaded or rate-limits us (429/503) and retrying on it is enabled:
    /// the client waits as long as `retry-after-ms` or else `Retry-After` asks (at most the maximum reconnection delay,
    /// 60 s unless set), or backs off as after any failed attempt
    /// when it asks for no wait (or does not say). An answer that says waiting will not help
    /// (OpenAI's `insufficient_quota`, `x-should-retry: false`) is a [`BadStatus`](Self::BadStatus)
    /// instead; see [`SseClient::set_retry_on_throttle`](super::SseClient::set_retry_on_throttle).
    Throttled {
        /// The status code.
        status: u16,
        /// The wait the server asked for, if it said (`retry-after-ms`, or else `Retry-After`).
        retry_after: Option<std::time::Duration>,
        /// The start of the response body (at most 1 KiB, lossily decoded): what the server
        /// said about the limit. The message quotes at most its first 300 characters, on one
        /// line.
        body: String,
    },
    /// The event loop the client was created on has been dropped (a client belongs to the loop
    /// of its thread at creation, not to one created later), so no stream can run. Fatal:
    /// [`connect`](super::SseClient::connect) reports it at once.
    LoopGone,
}

impl SseError {
    /// Whether this error makes the client give up for good. A non-fatal one is followed by a
    /// reconnect unless auto reconnect is off.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, SseError::Http(_) | SseError::Throttled { .. })
    }

    /// The start of the refused response's body as received (at most 1 KiB, lossily decoded,
    /// line breaks included), for the errors that carry one; the message
    /// ([`Display`](fmt::Display)) quotes it shortened, on one line.
    pub fn body(&self) -> Option<&str> {
        match self {
            SseError::BadStatus { body, .. }
            | SseError::BadContentType { body, .. }
            | SseError::Throttled { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// How many characters of a refused response's body a message quotes.
const QUOTED_BODY_CHARS: usize = 300;

/// Writes `": "` and `body` for a one-line message, or nothing when the body shows nothing:
/// every run of white space, control characters and invisible format characters (bidi
/// overrides, zero-width spaces, BOMs) becomes one space, the ends are trimmed, and what is left
/// past [`QUOTED_BODY_CHARS`] is replaced by `…`. Without this an HTML error page spilled over
/// many lines, and an escape sequence reached the terminal.
fn write_quoted_body(f: &mut fmt::Formatter<'_>, body: &str) -> fmt::Result {
    use fmt::Write;
    let mut written = 0;
    let mut gap = false;
    for c in body.chars() {
        if c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        {
            gap = written > 0;
            continue;
        }
        if written == 0 {
            f.write_str(": ")?;
        }
        if written + usize::from(gap) >= QUOTED_BODY_CHARS {
            return f.write_char('…');
        }
        if std::mem::take(&mut gap) {
            f.write_char(' ')?;
            written += 1;
        }
        f.write_char(c)?;
        written += 1;
    }
    Ok(())
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_message(f)?;
        match self.body() {
            Some(body) => write_quoted_body(f, body),
            None => Ok(()),
        }
    }
}

/// A body as `Debug` shows it: escaped, cut after [`QUOTED_BODY_CHARS`] characters.
struct DebugBody<'a>(&'a str);

impl fmt::Debug for DebugBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTED_BODY_CHARS) {
            None => fmt::Debug::fmt(self.0, f),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

impl fmt::Debug for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::Http(e) => f.debug_tuple("Http").field(e).finish(),
            SseError::BadStatus { status, body } => f
                .debug_struct("BadStatus")
                .field("status", status)
                .field("body", &DebugBody(body))
                .finish(),
            SseError::BadContentType { content_type, body } => f
                .debug_struct("BadContentType")
                .field("content_type", content_type)
                .field("body", &DebugBody(body))
                .finish(),
            SseError::Redirect(e) => f.debug_tuple("Redirect").field(e).finish(),
            SseError::Request(e) => f.debug_tuple("Request").field(e).finish(),
            SseError::EventTooLarge { limit } => f
                .debug_struct("EventTooLarge")
                .field("limit", limit)
                .finish(),
            SseError::Throttled {
                status,
                retry_after,
                body,
            } => f
                .debug_struct("Throttled")
                .field("status", status)
                .field("retry_after", retry_after)
                .field("body", &DebugBody(body))
                .finish(),
            SseError::LoopGone => f.write_str("LoopGone"),
        }
    }
}

/// An error's message without the body it may quote: what logs show (RELIABILITY promise 7).
pub(super) struct WithoutBody<'a>(pub(super) &'a SseError);

impl fmt::Display for WithoutBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_message(f)
    }
}

impl SseError {
    /// The message up to the quoted body.
    fn write_message(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::Http(e) => write!(f, "event stream connection failed: {e}"),
            SseError::BadStatus { status, .. } => {
                write!(f, "server answered with status {status} instead of 200")
            }
            SseError::BadContentType { content_type, .. } => match content_type {
                Some(ct) => write!(f, "response is {ct:?}, not text/event-stream"),
                None => f.write_str("response has no Content-Type, expected text/event-stream"),
            },
            SseError::Redirect(e) => write!(f, "cannot follow the event stream's redirect: {e}"),
            SseError::Request(e) => write!(f, "the event stream's request cannot be sent: {e}"),
            SseError::LoopGone => f.write_str(
                "the event stream cannot start: the client's event loop has been dropped (create the client on the current loop)",
            ),
            SseError::EventTooLarge { limit } => {
                write!(
                    f,
                    "an event exceeded the limit of {limit} bytes (SseClient::set_max_event_size raises it)"
                )
            }
            SseError::Throttled {
                status,
                retry_after,
                ..
            } => match retry_after {
                // What the server asked: the client may close instead (auto reconnect off), or
                // wait longer (a `Retry-After` of 0 gets the failure backoff). The header counts
                // whole seconds: `0s`, not `Duration`'s `0ns`.
                Some(d) if d.subsec_nanos() == 0 => write!(
                    f,
                    "server throttled us (status {status}, retry-after {}s)",
                    d.as_secs()
                ),
                Some(d) => write!(
                    f,
                    "server throttled us (status {status}, retry-after {d:?})"
                ),
                None => write!(f, "server throttled us (status {status})"),
            },
        }
    }
}

impl std::error::Error for SseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SseError::Http(e) | SseError::Redirect(e) | SseError::Request(e) => Some(e),
            _ => None,
        }
    }
}
