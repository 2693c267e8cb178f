//! [`SocketError`]: every failure of the transport layer (TCP, TLS, UDP, DNS).

use std::fmt;
use std::io;
use std::sync::Arc;

/// The phase of a connection or exchange that ran out of time.
///
/// ```
/// use kdnet::network::TimeoutPhase;
///
/// assert_eq!(TimeoutPhase::TlsHandshake.to_string(), "TLS handshake");
/// assert_eq!(TimeoutPhase::Total.to_string(), "the whole request");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Name resolution.
    Resolve,
    /// TCP connect (all addresses, Happy Eyeballs included).
    Connect,
    /// TLS handshake.
    TlsHandshake,
    /// Writing the request.
    SendRequest,
    /// Waiting for the complete response head.
    ResponseHead,
    /// No body byte arrived for the idle (read) timeout.
    BodyIdle,
    /// The whole exchange took longer than its total timeout.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Resolve => "name resolution",
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::TlsHandshake => "TLS handshake",
            TimeoutPhase::SendRequest => "sending the request",
            TimeoutPhase::ResponseHead => "waiting for the response head",
            TimeoutPhase::BodyIdle => "waiting for body data (idle)",
            TimeoutPhase::Total => "the whole request",
        })
    }
}

/// What the socket was doing when an I/O error happened.
///
/// ```
/// use kdnet::network::SocketOperation;
///
/// assert_eq!(SocketOperation::Connect.to_string(), "connect");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketOperation {
    /// Creating or configuring the socket.
    Configure,
    /// Binding to a local address.
    Bind,
    /// Listening.
    Listen,
    /// Accepting a connection.
    Accept,
    /// Connecting.
    Connect,
    /// Reading.
    Read,
    /// Writing.
    Write,
}

impl fmt::Display for SocketOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketOperation::Configure => "configure",
            SocketOperation::Bind => "bind",
            SocketOperation::Listen => "listen",
            SocketOperation::Accept => "accept",
            SocketOperation::Connect => "connect",
            SocketOperation::Read => "read",
            SocketOperation::Write => "write",
        })
    }
}

/// Why a TLS session failed, in the words a person needs. It is the
/// [`source`](std::error::Error::source) of the [`SocketError::Tls`] that carries it.
///
/// ```
/// use kdnet::network::TlsFailure;
///
/// let mismatch = TlsFailure::NameMismatch {
///     expected: "example.com".into(),
///     presented: vec!["www.example.com".into()],
/// };
/// assert_eq!(
///     mismatch.to_string(),
///     r#"certificate is not valid for name "example.com" (it is valid for www.example.com)"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate chain does not lead to a trusted root.
    UnknownIssuer,
    /// The peer's certificate is self-signed (it names itself as its issuer) and not trusted:
    /// trust that certificate itself (e.g. `add_ca_certificate`) if it is the expected one.
    SelfSigned,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotValidYet,
    /// The certificate is not valid for the name (or address) that was connected to. Names are
    /// matched as browsers match them: without regard to case, against the subjectAltName entries
    /// only (the common name never counts), and a wildcard only as a whole first label with at
    /// least two labels after it (`*.example.test` covers `a.example.test`; `*.localhost`
    /// covers nothing).
    NameMismatch {
        /// The name that was expected.
        expected: String,
        /// The names and addresses the certificate is valid for (its subjectAltName entries),
        /// when the TLS library reported them; often the name to connect by instead.
        presented: Vec<String>,
    },
    /// The certificate was revoked.
    Revoked,
    /// Any other certificate problem.
    BadCertificate(String),
    /// The peer sent a TLS alert.
    AlertReceived(String),
    /// The peer broke the TLS protocol (garbage, wrong record types, …).
    PeerMisbehaved(String),
    /// The local TLS configuration is unusable (bad PEM, key mismatch, …).
    Configuration(String),
    /// The server answered the TLS handshake in plain HTTP (`HTTP/1.1 400 …`): it does not
    /// speak TLS on that port, typically an `https://` URL of an `http://` server.
    PlainHttp {
        /// The first line the server sent, its status line (shortened to 64 bytes; quotes and
        /// backslashes escaped).
        first_line: String,
    },
    /// The server does not speak TLS: it answered with a line of text, not a TLS record
    /// (another protocol's greeting on that port, such as an SSH or SMTP banner). Binary
    /// garbage is [`PeerMisbehaved`](Self::PeerMisbehaved).
    NotTls {
        /// The first line the server sent (shortened to 64 bytes; quotes and backslashes
        /// escaped).
        first_line: String,
    },
    /// The client does not speak TLS: it sent a line of text rather than a TLS ClientHello
    /// (typically a plain-HTTP request, `GET / HTTP/1.1`, for an `http://` URL of an
    /// `https://` server). Reported by the server's side of a connection; binary garbage is
    /// [`PeerMisbehaved`](Self::PeerMisbehaved).
    NotTlsClient {
        /// The first line the client sent (shortened to 64 bytes; quotes and backslashes
        /// escaped; a query replaced by `?…`, since credentials travel there).
        first_line: String,
    },
    /// The peer closed the TCP connection without sending close_notify first, so the end of its
    /// data is not authenticated: what arrived may be cut short (by an attacker or a broken
    /// path). Reported by a TLS [`TcpSocket`](crate::network::TcpSocket) whose peer ends the
    /// stream this way while it is connected, after the data that did arrive.
    Truncated,
    /// Anything else rustls reported.
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => {
                f.write_str("certificate is signed by an unknown issuer (not trusted)")
            }
            TlsFailure::SelfSigned => f.write_str("certificate is self-signed (not trusted)"),
            TlsFailure::Expired => f.write_str("certificate has expired"),
            TlsFailure::NotValidYet => f.write_str("certificate is not valid yet"),
            TlsFailure::NameMismatch {
                expected,
                presented,
            } => {
                write!(f, "certificate is not valid for name {expected:?}")?;
                write_presented_names(f, presented)
            }
            TlsFailure::Revoked => f.write_str("certificate was revoked"),
            TlsFailure::BadCertificate(reason) => write!(f, "bad certificate: {reason}"),
            TlsFailure::AlertReceived(alert) => {
                write!(f, "peer sent alert: {alert}")?;
                match alert_meaning(alert) {
                    Some(meaning) => write!(f, " ({meaning})"),
                    None => Ok(()),
                }
            }
            TlsFailure::PeerMisbehaved(reason) => write!(f, "peer misbehaved: {reason}"),
            TlsFailure::Configuration(reason) => write!(f, "TLS configuration: {reason}"),
            TlsFailure::PlainHttp { first_line } => write!(
                f,
                "the server answered in plain HTTP, not TLS (is the URL http://?): \"{first_line}\""
            ),
            TlsFailure::NotTls { first_line } => {
                write!(f, "the server does not speak TLS; it sent \"{first_line}\"")
            }
            TlsFailure::NotTlsClient { first_line } => {
                write!(f, "the client does not speak TLS; it sent \"{first_line}\"")
            }
            TlsFailure::Truncated => f.write_str(
                "the peer closed the connection without close_notify (the data may be truncated)",
            ),
            TlsFailure::Other(reason) => f.write_str(reason),
        }
    }
}

/// ` (it is valid for a, b and 3 more)`: a certificate may list hundreds of names (a CDN's),
/// and they come from the peer, so a few are shown, control characters escaped.
fn write_presented_names(f: &mut fmt::Formatter<'_>, presented: &[String]) -> fmt::Result {
    const SHOWN: usize = 5;
    let Some((first, rest)) = presented.split_first() else {
        return Ok(());
    };
    write!(f, " (it is valid for {}", first.escape_debug())?;
    for name in rest.iter().take(SHOWN - 1) {
        write!(f, ", {}", name.escape_debug())?;
    }
    if presented.len() > SHOWN {
        write!(f, " and {} more", presented.len() - SHOWN)?;
    }
    f.write_str(")")
}

/// What an alert whose name alone says little to a person means for this connection.
fn alert_meaning(alert: &str) -> Option<&'static str> {
    Some(match alert {
        "NoApplicationProtocol" => {
            "the peer speaks none of the application protocols offered with ALPN"
        }
        "ProtocolVersion" => "no TLS version in common with the peer",
        "HandshakeFailure" => "no cipher suite or key exchange in common with the peer",
        "CertificateRequired" => "the server requires a client certificate",
        "UnknownCA" => "the peer does not trust the issuer of our certificate",
        "BadCertificate" | "UnsupportedCertificate" | "CertificateUnknown" => {
            "the peer refused our certificate"
        }
        "CertificateExpired" => "the peer says our certificate has expired",
        "UnrecognisedName" => "the server does not serve the name sent with SNI",
        _ => return None,
    })
}

impl std::error::Error for TlsFailure {}

/// Every transport failure: TCP, TLS, UDP and name lookup (KDNetwork `SocketError`, with reasons).
///
/// ```
/// use kdnet::network::{SocketError, SocketOperation, TlsFailure};
/// use std::error::Error as _;
/// use std::{io, sync::Arc};
///
/// let refused = SocketError::Io {
///     operation: SocketOperation::Connect,
///     source: Arc::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
/// };
/// assert_eq!(refused.io_kind(), Some(io::ErrorKind::ConnectionRefused));
/// assert!(refused.is_retryable() && !refused.is_timeout());
/// assert!(refused.to_string().starts_with("connect failed: "));
///
/// let expired = SocketError::Tls(TlsFailure::Expired);
/// assert_eq!(expired.to_string(), "TLS failed: certificate has expired");
/// assert!(!expired.is_retryable(), "a certificate problem does not go away by retrying");
/// assert_eq!(expired.source().unwrap().to_string(), "certificate has expired");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SocketError {
    /// An operating-system I/O error during `operation`.
    Io {
        /// What the socket was doing.
        operation: SocketOperation,
        /// The OS error (shared so the error can be cloned into several signals). For a failed
        /// connect it is an error of the same kind that names the address (and how many were
        /// tried), with the OS error as its `source()`: `raw_os_error()` is `None` on it.
        source: Arc<io::Error>,
    },
    /// The host name could not be resolved.
    Lookup {
        /// The name that was looked up.
        host: String,
        /// Why (the resolver's message, or "no addresses").
        reason: String,
    },
    /// The TLS handshake or session failed.
    Tls(TlsFailure),
    /// A phase ran out of time.
    Timeout(TimeoutPhase),
    /// The peer closed the connection while more was expected.
    ClosedByPeer,
    /// The operation needs a state the socket is not in (caller misuse), e.g. writing while unconnected.
    InvalidState(&'static str),
    /// An address or host string could not be used.
    InvalidAddress(String),
    /// The operation was cancelled (abort, disconnect, or dropped owner).
    Cancelled,
}

impl SocketError {
    pub(crate) fn io(operation: SocketOperation, source: io::Error) -> Self {
        SocketError::Io {
            operation,
            source: Arc::new(source),
        }
    }

    /// The I/O error kind, for I/O failures.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            SocketError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SocketError::Timeout(_)) || self.io_kind() == Some(io::ErrorKind::TimedOut)
    }

    /// Whether retrying the same operation later could succeed (network trouble rather than a
    /// certificate, configuration or usage problem).
    pub fn is_retryable(&self) -> bool {
        match self {
            SocketError::Io { .. }
            | SocketError::Lookup { .. }
            | SocketError::Timeout(_)
            | SocketError::ClosedByPeer => true,
            SocketError::Tls(t) => matches!(
                t,
                TlsFailure::AlertReceived(_)
                    | TlsFailure::PeerMisbehaved(_)
                    | TlsFailure::Truncated
            ),
            SocketError::InvalidState(_)
            | SocketError::InvalidAddress(_)
            | SocketError::Cancelled => false,
        }
    }
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::Io { operation, source } => write!(f, "{operation} failed: {source}"),
            SocketError::Lookup { host, reason } => {
                write!(f, "name lookup for {host:?} failed: {reason}")
            }
            SocketError::Tls(failure) => write!(f, "TLS failed: {failure}"),
            SocketError::Timeout(phase) => write!(f, "timed out during {phase}"),
            SocketError::ClosedByPeer => f.write_str("connection closed by peer"),
            SocketError::InvalidState(what) => write!(f, "invalid socket state: {what}"),
            SocketError::InvalidAddress(what) => write!(f, "invalid address: {what}"),
            SocketError::Cancelled => f.write_str("operation cancelled"),
        }
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SocketError::Io { source, .. } => Some(&**source),
            SocketError::Tls(failure) => Some(failure),
            _ => None,
        }
    }
}
