//! [`HttpError`]: why an HTTP exchange failed.

use std::fmt;

use crate::network::error::{SocketError, TimeoutPhase};

/// Why an HTTP request failed. Responses with any status code are *not* errors.
///
/// ```
/// use kdnet::network::http::{HttpError, HttpRequest};
/// use kdnet::network::{SocketError, TimeoutPhase};
///
/// let refused = HttpRequest::new("ftp://example.com/").unwrap_err();
/// assert!(matches!(refused, HttpError::InvalidUrl { .. }));
/// assert_eq!(
///     refused.to_string(),
///     r#"invalid URL "ftp://example.com/": scheme "ftp" is not http or https"#
/// );
/// assert!(!refused.is_retryable());
///
/// // Transport timeouts and cancellations get their own variants.
/// let timeout = HttpError::from(SocketError::Timeout(TimeoutPhase::Connect));
/// assert!(matches!(timeout, HttpError::Timeout(TimeoutPhase::Connect)));
/// assert!(timeout.is_timeout() && timeout.is_retryable());
/// assert_eq!(timeout.to_string(), "timed out during connect");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HttpError {
    /// The connection failed (lookup, connect, TLS, reset, …).
    Transport(SocketError),
    /// The URL cannot be requested.
    InvalidUrl {
        /// The URL as given, except that its user information (`user:password@`, often a
        /// credential) is replaced by `***@`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request itself is malformed (caller misuse), e.g. CR/LF/NUL in a header.
    InvalidRequest(String),
    /// The server broke HTTP/1.1 framing or syntax.
    Protocol(String),
    /// The response head exceeded the byte limit.
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The response head had more header fields than allowed.
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A bounded part of the response (chunk extension, trailers, …) exceeded its limit.
    LimitExceeded {
        /// What overflowed.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// The connection ended before the body was complete.
    IncompleteBody {
        /// Body bytes received.
        received: u64,
        /// Body bytes announced, when known (`Content-Length`).
        expected: Option<u64>,
    },
    /// The connection closed before any response byte arrived.
    EmptyResponse,
    /// The connection closed after an interim response (`100 Continue`, `103 Early Hints`, …)
    /// and before any byte of the final one. The server had received the request (it may have
    /// started on it) and closed without answering it.
    NoFinalResponse {
        /// The status of the last interim response received.
        interim: u16,
    },
    /// More redirects than allowed.
    TooManyRedirects {
        /// The limit that was hit.
        limit: u32,
    },
    /// A redirect could not be followed.
    BadRedirect(String),
    /// A phase ran out of time.
    Timeout(TimeoutPhase),
    /// The request was cancelled.
    Cancelled,
    /// The body's `Content-Encoding` could not be decoded.
    Decode(String),
    /// The event loop the client was created on has been dropped (a client belongs to the loop
    /// of its thread at creation, not to one created later): no request can be sent or answered.
    /// Reported at once, from inside the call that sent the request.
    LoopGone,
}

impl HttpError {
    /// Whether this is a timeout of any phase.
    pub fn is_timeout(&self) -> bool {
        match self {
            HttpError::Timeout(_) => true,
            HttpError::Transport(e) => e.is_timeout(),
            _ => false,
        }
    }

    /// Whether the same request could succeed later (network trouble, not a usage or server
    /// syntax problem).
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport(e) => e.is_retryable(),
            HttpError::Timeout(_)
            | HttpError::IncompleteBody { .. }
            | HttpError::EmptyResponse
            | HttpError::NoFinalResponse { .. } => true,
            _ => false,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Transport(e) => write!(f, "transport error: {e}"),
            HttpError::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            HttpError::InvalidRequest(reason) => write!(f, "invalid request: {reason}"),
            HttpError::Protocol(reason) => write!(f, "server broke HTTP/1.1: {reason}"),
            HttpError::HeadTooLarge { limit } => {
                write!(f, "response head larger than the limit of {limit} bytes")
            }
            HttpError::TooManyHeaders { limit } => {
                write!(
                    f,
                    "response has more than the limit of {limit} header fields"
                )
            }
            HttpError::LimitExceeded { what, limit } => {
                write!(f, "{what} larger than the limit of {limit} bytes")
            }
            HttpError::IncompleteBody { received, expected } => match expected {
                Some(n) => write!(f, "connection closed after {received} of {n} body bytes"),
                None => write!(
                    f,
                    "connection closed in the middle of the body after {received} bytes"
                ),
            },
            HttpError::EmptyResponse => {
                f.write_str("connection closed before any response byte arrived")
            }
            HttpError::NoFinalResponse { interim } => write!(
                f,
                "connection closed after an interim {interim} response, before the final response"
            ),
            HttpError::TooManyRedirects { limit } => {
                write!(f, "more than the limit of {limit} redirects")
            }
            HttpError::BadRedirect(reason) => write!(f, "cannot follow redirect: {reason}"),
            HttpError::Timeout(phase) => write!(f, "timed out during {phase}"),
            HttpError::Cancelled => f.write_str("request cancelled"),
            HttpError::Decode(reason) => write!(f, "cannot decode response body: {reason}"),
            HttpError::LoopGone => {
                f.write_str("the client's event loop has been dropped: no request can be sent")
            }
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SocketError> for HttpError {
    fn from(e: SocketError) -> Self {
        match e {
            SocketError::Timeout(phase) => HttpError::Timeout(phase),
            SocketError::Cancelled => HttpError::Cancelled,
            other => HttpError::Transport(other),
        }
    }
}
