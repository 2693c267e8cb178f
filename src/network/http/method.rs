//! [`HttpMethod`]: the request method (KDNetwork `HttpMethod`, plus validated extension methods).

use std::fmt;
use std::str::FromStr;

use crate::network::http::HttpError;

/// The method of a request. The nine methods KDNetwork knows have their own variants; any other
/// RFC 9110 token (WebDAV's `PROPFIND`, `PURGE`, …) is an [`HttpMethod::Other`] holding an
/// [`ExtensionMethod`], which can only be made from a valid token so it can never break the
/// request line.
///
/// Method names are case-sensitive (RFC 9110 §9.1): `"GET"` parses to [`HttpMethod::Get`], while
/// `"get"` is refused rather than silently sent as an unknown method the server would reject.
///
/// ```
/// use kdnet::network::http::HttpMethod;
///
/// let post: HttpMethod = "POST".parse().unwrap();
/// assert_eq!(post, HttpMethod::Post);
/// assert!(!post.is_idempotent());
/// assert!(HttpMethod::Get.is_safe());
///
/// let propfind: HttpMethod = "PROPFIND".parse().unwrap();
/// assert_eq!(propfind.as_str(), "PROPFIND");
/// assert!("get".parse::<HttpMethod>().is_err());
/// assert!("BAD METHOD".parse::<HttpMethod>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum HttpMethod {
    /// `GET` (the default).
    #[default]
    Get,
    /// `HEAD`: like GET, but the response never has a body.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// `PATCH`.
    Patch,
    /// `CONNECT`.
    Connect,
    /// `TRACE`.
    Trace,
    /// Any other method token.
    Other(ExtensionMethod),
}

/// A method name that is a valid RFC 9110 token and not one of [`HttpMethod`]'s own variants.
///
/// ```
/// use kdnet::network::http::ExtensionMethod;
///
/// assert_eq!(ExtensionMethod::new("MKCOL").unwrap().as_str(), "MKCOL");
/// assert_eq!(ExtensionMethod::new("PURGE").unwrap().to_string(), "PURGE");
/// assert!(ExtensionMethod::new("GET").is_err()); // use HttpMethod::Get
/// assert!(ExtensionMethod::new("A\r\nB").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtensionMethod(Box<str>);

impl ExtensionMethod {
    /// Validates `name`: it must be a non-empty token (letters, digits and ``!#$%&'*+-.^_`|~``)
    /// and must not spell one of the standard methods in any case.
    pub fn new(name: &str) -> Result<Self, HttpError> {
        if !is_token(name) {
            return Err(HttpError::InvalidRequest(format!(
                "method {name:?} is not a valid token"
            )));
        }
        if let Some(standard) = STANDARD_METHODS
            .iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
        {
            return Err(HttpError::InvalidRequest(format!(
                "method {name:?} spells a standard method in the wrong case; use {:?}",
                standard.as_str()
            )));
        }
        Ok(ExtensionMethod(name.into()))
    }

    /// The method name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl HttpMethod {
    /// The method as sent on the request line, e.g. `"GET"`.
    pub fn as_str(&self) -> &str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Other(method) => method.as_str(),
        }
    }

    /// Whether the method is safe (read-only): GET, HEAD, OPTIONS and TRACE (RFC 9110 §9.2.1).
    /// Extension methods are assumed unsafe.
    pub fn is_safe(&self) -> bool {
        matches!(
            self,
            HttpMethod::Get | HttpMethod::Head | HttpMethod::Options | HttpMethod::Trace
        )
    }

    /// Whether repeating the request has the same effect as sending it once: the safe methods
    /// plus PUT and DELETE (RFC 9110 §9.2.2). Used to decide whether a request may be retried on a
    /// fresh connection. Extension methods are assumed non-idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.is_safe() || matches!(self, HttpMethod::Put | HttpMethod::Delete)
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HttpMethod {
    type Err = HttpError;

    /// Parses an exact, upper-case standard method name or a valid extension token.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match STANDARD_METHODS.iter().find(|m| m.as_str() == name) {
            Some(standard) => Ok(standard.clone()),
            None => ExtensionMethod::new(name).map(HttpMethod::Other),
        }
    }
}

impl fmt::Display for ExtensionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ExtensionMethod> for HttpMethod {
    fn from(method: ExtensionMethod) -> Self {
        HttpMethod::Other(method)
    }
}

/// Whether `s` is a non-empty RFC 9110 token (method names, header field names).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

const STANDARD_METHODS: [HttpMethod; 9] = [
    HttpMethod::Get,
    HttpMethod::Head,
    HttpMethod::Post,
    HttpMethod::Put,
    HttpMethod::Delete,
    HttpMethod::Options,
    HttpMethod::Patch,
    HttpMethod::Connect,
    HttpMethod::Trace,
];

/// Whether a byte is a `tchar`: one table load, where scanning the list of symbols took up to
/// fifteen compares per byte (every field name of every request is checked, twice).
pub(crate) fn is_token_byte(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `tchar` (RFC 9110 §5.6.2) by byte value.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < table.len() {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bytes_are_the_tchars() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token_byte(b), tchar, "byte 0x{b:02x}");
        }
    }

    #[test]
    fn every_standard_method_round_trips() {
        for method in STANDARD_METHODS {
            assert_eq!(method.as_str().parse::<HttpMethod>().unwrap(), method);
            assert_eq!(method.to_string(), method.as_str());
        }
    }

    #[test]
    fn idempotency_and_safety_follow_rfc_9110() {
        let idempotent: Vec<_> = STANDARD_METHODS
            .iter()
            .filter(|m| m.is_idempotent())
            .map(HttpMethod::as_str)
            .collect();
        assert_eq!(
            idempotent,
            ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"]
        );
        let safe: Vec<_> = STANDARD_METHODS
            .iter()
            .filter(|m| m.is_safe())
            .map(HttpMethod::as_str)
            .collect();
        assert_eq!(safe, ["GET", "HEAD", "OPTIONS", "TRACE"]);
        let purge: HttpMethod = "PURGE".parse().unwrap();
        assert!(!purge.is_idempotent() && !purge.is_safe());
    }

    #[test]
    fn invalid_tokens_are_refused_with_a_reason() {
        for bad in ["", "GE T", "GET\r\n", "PÖST", "a/b", "Post"] {
            let err = bad.parse::<HttpMethod>().unwrap_err();
            assert!(matches!(err, HttpError::InvalidRequest(_)), "{bad:?}");
        }
        let err = "delete".parse::<HttpMethod>().unwrap_err().to_string();
        assert!(err.contains("\"DELETE\""), "{err}");
    }
}
