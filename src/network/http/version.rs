//! [`HttpVersion`]: the protocol version of a response.

use std::fmt;

/// The HTTP version a server answered with. kdnet speaks HTTP/1.1 and understands HTTP/1.0
/// replies; anything else is rejected by the response parser.
///
/// ```
/// use kdnet::network::http::HttpVersion;
///
/// assert_eq!(HttpVersion::from_minor_version(0), Some(HttpVersion::Http10));
/// assert_eq!(HttpVersion::Http11.to_string(), "HTTP/1.1");
/// assert_eq!(HttpVersion::default(), HttpVersion::Http11);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    /// HTTP/1.0: connections close after the response unless `Connection: keep-alive` says
    /// otherwise.
    Http10,
    /// HTTP/1.1: connections stay open unless `Connection: close` says otherwise.
    #[default]
    Http11,
}

impl HttpVersion {
    /// The version for the minor number of an `HTTP/1.x` status line (what `httparse` reports);
    /// `None` for minor versions other than 0 and 1.
    pub fn from_minor_version(minor: u8) -> Option<Self> {
        match minor {
            0 => Some(HttpVersion::Http10),
            1 => Some(HttpVersion::Http11),
            _ => None,
        }
    }

    /// The version as written on the wire: `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
