//! Host names: what may be handed to the system resolver, and the key a name is cached (and
//! resolved once at a time) under.

use super::MAX_HOST_NAME_LEN;
use crate::network::SocketError;

/// Longest label (the part between two dots) of a host name, in bytes: 63 (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Refuses, with the reason, a host no resolver can answer: empty, too long, a label empty or
/// over 63 bytes (DNS limits, which an IPv4 address in a URL form such as `0…0177.1` is not
/// held to), brackets around a non-IPv6 name, NUL, a port, an IPv6 zone id, a character no URL
/// host may hold, or a host ending in a number that is no IPv4 address (`1.2.3.256`: URLs
/// refuse it, and getaddrinfo would send it to the DNS servers as a name).
pub(crate) fn check_host_name(host: &str) -> Result<(), SocketError> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(SocketError::InvalidAddress(format!(
            "empty host name {host:?}"
        )));
    }
    // Also in brackets (`[fe80::1%25eth0]` in a URL): the brackets are not the problem.
    if host.contains('%') && host.contains(':') {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?}: IPv6 zone ids are not supported"
        )));
    }
    if host.starts_with('[') || host.ends_with(']') {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?}: brackets are only allowed around an IPv6 address"
        )));
    }
    if host.contains('\0') {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?}: host name contains a NUL byte"
        )));
    }
    if host.contains(':') {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?} is neither an IP address nor a host name (a port goes in its own argument)"
        )));
    }
    if let Some(c) = host.chars().find(|&c| is_forbidden_in_host(c)) {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?}: {c:?} cannot appear in a host name"
        )));
    }
    // WHATWG: a host ending in a number is an IPv4 address or invalid (never a name). An
    // address is not held to the DNS limits below: `0…0177.1` (any number of leading zeros) is
    // 127.0.0.1 to URLs, to `inet_aton` and to `numeric_ipv4`, which a socket connects by.
    if ends_in_a_number(host) {
        return match numeric_ipv4(host) {
            Some(_) => Ok(()),
            None => Err(SocketError::InvalidAddress(format!(
                "{host:?} ends in a number but is not an IPv4 address (a part out of range, \
                 too many parts, or a bad digit)"
            ))),
        };
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err(SocketError::InvalidAddress(format!(
            "host name is {} bytes long, the limit is {MAX_HOST_NAME_LEN}",
            name.len()
        )));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(SocketError::InvalidAddress(format!(
                "{host:?}: empty label (two dots in a row, or a leading dot)"
            )));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(SocketError::InvalidAddress(format!(
                "{host:?}: a label is {} bytes long, the limit is {MAX_LABEL_LEN}",
                label.len()
            )));
        }
    }
    Ok(())
}

/// The WHATWG URL standard's forbidden domain code points (control characters, space, `#`, `%`,
/// `/`, `:`, `<`, `>`, `?`, `@`, `[`, `\`, `]`, `^`, `|`, DEL): no URL can carry a host with
/// one, and no resolver answers for it.
fn is_forbidden_in_host(c: char) -> bool {
    c.is_ascii_control()
        || matches!(
            c,
            ' ' | '#' | '%' | '/' | ':' | '<' | '>' | '?' | '@' | '[' | '\\' | ']' | '^' | '|'
        )
}

/// `host` in the ASCII form resolvers and certificates use: an internationalized name
/// (`bücher.example`) becomes its IDNA form (`xn--bcher-kva.example`), as Qt (`QUrl::toAce`),
/// curl and browsers do; ASCII hosts are returned as they are. Fails with
/// [`SocketError::InvalidAddress`] for a name IDNA refuses, and for one with `%`, which
/// `url::Host::parse` would percent-decode (`ex%61mple.test` is no host name, whether or not
/// non-ASCII characters come with it).
pub(crate) fn ascii_host(host: &str) -> Result<std::borrow::Cow<'_, str>, SocketError> {
    if host.is_ascii() {
        return Ok(std::borrow::Cow::Borrowed(host));
    }
    if host.contains('%') {
        return Err(SocketError::InvalidAddress(format!(
            "{host:?}: '%' cannot appear in a host name"
        )));
    }
    match url::Host::parse(host) {
        Ok(url::Host::Domain(ascii)) => Ok(std::borrow::Cow::Owned(ascii)),
        // Full-width digits and dots map to an IPv4 address.
        Ok(ip) => Ok(std::borrow::Cow::Owned(ip.to_string())),
        Err(e) => Err(SocketError::InvalidAddress(format!(
            "{host:?} is not a valid internationalized host name: {e}"
        ))),
    }
}

/// An IPv4 address in a form the WHATWG URL standard reads as one (as browsers, curl and
/// `inet_aton` do) besides the dotted-decimal [`resolve_literal`](super::resolve_literal)
/// takes: fewer parts (`127.1`), hex or octal parts (`0x7f.1`, `0177.0.0.1`), one number
/// (`2130706433`), a trailing dot. `None` for anything else, names included. An
/// [`SslSocket`](crate::network::SslSocket) given such a host connects to and verifies that
/// address (no SNI), as `https://127.1/` does; as a name it was refused as a TLS server name.
/// A host with `%` is no address: `url::Host::parse` would percent-decode it first (`%3127.1`
/// as `127.1`), but a host given to a socket is not a URL's text, and the resolver refuses it.
pub(crate) fn numeric_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    // Only a host that ends in a number is read as IPv4 (else it is a domain).
    if !ends_in_a_number(host) || host.contains('%') {
        return None;
    }
    match url::Host::parse(host) {
        Ok(url::Host::Ipv4(ip)) => Some(ip),
        _ => None,
    }
}

/// WHATWG's "ends in a number": the last label (a trailing dot aside) is decimal digits, or
/// `0x` and hex digits. Such a host is an IPv4 address or invalid, never a domain name.
pub(crate) fn ends_in_a_number(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    let decimal = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    hex || decimal
}

/// Whether `host` is `localhost` or a name under it (`app.localhost`), any case, with or
/// without the trailing dot: RFC 6761 §6.3 reserves them for loopback, so they are answered
/// without asking the system (as curl and browsers do): a broken /etc/hosts or a name server
/// cannot send them elsewhere.
pub(crate) fn is_localhost(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).as_bytes();
    const LOCALHOST: &[u8] = b"localhost";
    let Some(start) = name.len().checked_sub(LOCALHOST.len()) else {
        return false;
    };
    name[start..].eq_ignore_ascii_case(LOCALHOST) && (start == 0 || name[start - 1] == b'.')
}

/// Host names are case-insensitive. A trailing dot is kept: `name.` is absolute (no search
/// domains, and glibc's /etc/hosts lookup does not match it), `name` is not, so the two can
/// resolve differently.
pub(super) fn cache_key(host: &str) -> String {
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalized_names_become_ascii() {
        assert_eq!(ascii_host("example.com").unwrap(), "example.com");
        assert_eq!(
            ascii_host("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            ascii_host("ＢÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(ascii_host("１２７．０．０．１").unwrap(), "127.0.0.1");
        assert!(ascii_host("a\u{200b}b.example").is_ok_and(|h| h.is_ascii()));
        assert!(matches!(
            ascii_host("bü cher.example"),
            Err(SocketError::InvalidAddress(_))
        ));
    }

    #[test]
    fn ipv4_addresses_in_url_forms() {
        use std::net::Ipv4Addr;
        let loopback = Some(Ipv4Addr::LOCALHOST);
        for host in [
            "127.1",
            "0x7f.1",
            "0X7F.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "0x7F000001",
            "127.0.0.1.",
            "127.000.000.001",
        ] {
            assert_eq!(numeric_ipv4(host), loopback, "{host}");
        }
        // Octal, as URLs (and inet_aton) read a leading zero.
        assert_eq!(numeric_ipv4("010.0.0.1"), Some(Ipv4Addr::new(8, 0, 0, 1)));
        for host in [
            "example.com",
            "1.example",
            "0x7f.example",
            "256.0.0.1",
            "1.2.3.4.5",
            "4294967296",
            "",
            ".",
            "::1",
        ] {
            assert_eq!(numeric_ipv4(host), None, "{host}");
        }
    }

    #[test]
    fn host_name_checks() {
        assert!(check_host_name("example.com").is_ok());
        assert!(check_host_name("example.com.").is_ok());
        assert!(check_host_name("").is_err());
        assert!(check_host_name(".").is_err());
        assert!(check_host_name("[example.com]").is_err());
        assert!(check_host_name("a\0b").is_err());
        let long = "a".repeat(MAX_HOST_NAME_LEN + 1);
        let err = check_host_name(&long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid address: host name is 254 bytes long, the limit is 253"
        );
        let labels = vec!["a".repeat(63); 4].join(".");
        assert_eq!(labels.len(), 255);
        assert!(check_host_name(&labels[..MAX_HOST_NAME_LEN]).is_ok());
        assert!(check_host_name(&labels[..MAX_HOST_NAME_LEN + 1]).is_err());
        assert!(check_host_name(&format!("{}.", &labels[..MAX_HOST_NAME_LEN])).is_ok());
        assert!(check_host_name(&format!("{}.x", "a".repeat(64))).is_err());
        assert!(check_host_name(&format!("{}.x", "a".repeat(63))).is_ok());
        for bad in [
            "a..b",
            ".a",
            "a:80",
            "fe80::1%lo",
            "a b",
            "a/b",
            "a\x7fb",
            "a%b",
        ] {
            assert!(check_host_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "my_service",
            "xn--bcher-kva.example",
            "b\u{fc}cher.example",
            "a-b.c",
        ] {
            assert!(check_host_name(good).is_ok(), "{good:?}");
        }
    }

    /// Only the last label (a trailing dot aside) makes a host a number: other numeric labels
    /// are names; `0x` and `0X` both start a hex number; an empty last label is an empty label,
    /// not a number.
    #[test]
    fn only_the_last_label_makes_a_host_a_number() {
        use std::net::Ipv4Addr;
        for name in [
            "1.example",
            "123.example.com",
            "0x10.example",
            "example.1a",
            "example.0xg",
        ] {
            assert!(check_host_name(name).is_ok(), "{name:?}");
            assert_eq!(numeric_ipv4(name), None, "{name:?}");
        }
        assert_eq!(numeric_ipv4("0X7F000001"), Some(Ipv4Addr::LOCALHOST));
        for not_an_address in ["example.0X1", "example.0x1", "example.1."] {
            let why = check_host_name(not_an_address).unwrap_err().to_string();
            assert!(why.contains("IPv4"), "{not_an_address:?}: {why}");
        }
        let why = check_host_name("example..").unwrap_err().to_string();
        assert!(why.contains("empty label"), "{why}");
    }

    #[test]
    fn localhost_names_are_localhost_and_its_subdomains() {
        for yes in ["localhost", "LOCALHOST.", "a.localhost", "b.A.LocalHost."] {
            assert!(is_localhost(yes), "{yes:?}");
        }
        for no in [
            "",
            ".",
            "xlocalhost",
            "localhost.com",
            "localhost..",
            "localhos",
            "host",
        ] {
            assert!(!is_localhost(no), "{no:?}");
        }
    }

    #[test]
    fn cache_keys_ignore_case_but_keep_a_trailing_dot() {
        assert_eq!(cache_key("LocalHost"), "localhost");
        assert_eq!(cache_key("LocalHost."), "localhost.");
        assert_eq!(cache_key("example.COM"), "example.com");
    }
}
