//! Fuzz target `host_name`: the host checks a lookup, a connect and a TLS server name go
//! through (`check_host_name`, `numeric_ipv4`, `ends_in_a_number`, `ascii_host`), and the
//! display form of the names a certificate presents (`connectable_name`), all reached through
//! `kdnet::network::http::__fuzz`.
//!
//! Input: the host, as UTF-8 (invalid bytes replaced by U+FFFD).
//!
//! Oracles (besides "no panic"):
//! 1. `numeric_ipv4(x) == Some(ip)` implies that `x` ends in a number, that `url::Host::parse(x)`
//!    is that IPv4 address, and that `check_host_name(x)` accepts it: what a socket connects to
//!    as an address, the resolver also accepts (and URLs read the same way); and the lookup's
//!    path (`ascii_host`, then `resolve_literal` or `numeric_ipv4`) reaches the same address.
//! 2. For an ASCII host without `%` (which URLs percent-decode first): `url::Host::parse(x)` is
//!    `Ipv4(ip)` exactly when `numeric_ipv4(x) == Some(ip)`; a host that ends in a number is
//!    never read by URLs as a domain.
//! 3. `check_host_name(x)` on an ASCII host agrees with URLs: what it accepts `url::Host::parse`
//!    accepts too (unless a label is an `xn--` punycode label URLs cannot decode), and a URL
//!    domain within the length limits (253 bytes, labels 1 to 63) is accepted.
//! 4. `ascii_host(x)`, when it succeeds, is ASCII, and `x` itself when `x` is ASCII.
//! 5. `connectable_name`: a name it returns is part of its input; `DirectoryName` gives none;
//!    `DnsName("…")` and `IpAddress(…)` wrappers around the input give the inside back; a plain
//!    name without `(` is kept as it is.
#![no_main]

use kdnet::network::dns::resolve_literal;
use kdnet::network::http::__fuzz::{
    ascii_host, check_host_name, connectable_name, ends_in_a_number, numeric_ipv4,
};
use libfuzzer_sys::fuzz_target;

const MAX_HOST_NAME_LEN: usize = 253;

fn check_hosts(host: &str) {
    let checked = check_host_name(host);
    let numeric = numeric_ipv4(host);
    let ends_in_number = ends_in_a_number(host);
    let url_host = url::Host::parse(host);

    // 1.
    if let Some(ip) = numeric {
        assert!(
            ends_in_number,
            "{host:?} read as {ip} but does not end in a number"
        );
        assert_eq!(
            url_host.as_ref().ok(),
            Some(&url::Host::Ipv4(ip)),
            "{host:?}: numeric_ipv4 and URLs disagree"
        );
        assert!(
            checked.is_ok(),
            "{host:?} is connected to as {ip} but the resolver refuses it: {checked:?}"
        );
        let ascii = ascii_host(host);
        let looked_up = ascii
            .as_deref()
            .ok()
            .and_then(|a| resolve_literal(a).or_else(|| numeric_ipv4(a).map(std::net::IpAddr::V4)));
        assert_eq!(
            looked_up,
            Some(std::net::IpAddr::V4(ip)),
            "{host:?}: connected to as {ip}, looked up as {ascii:?}"
        );
    }

    if host.is_ascii() && !host.contains('%') {
        // 2.
        if let Ok(url::Host::Ipv4(ip)) = url_host {
            assert_eq!(numeric, Some(ip), "{host:?}: URLs read it as {ip}");
        }
        if ends_in_number {
            assert!(
                !matches!(url_host, Ok(url::Host::Domain(_))),
                "{host:?} ends in a number but URLs read it as a domain"
            );
        }
        // 3.
        if checked.is_ok() {
            let punycode = host.split('.').any(|label| {
                label
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
            });
            assert!(
                url_host.is_ok() || punycode,
                "{host:?} accepted, URLs refuse it: {url_host:?}"
            );
        }
        if let Ok(url::Host::Domain(_)) = url_host {
            let name = host.strip_suffix('.').unwrap_or(host);
            let fits = name.len() <= MAX_HOST_NAME_LEN
                && name.split('.').all(|l| (1..=63).contains(&l.len()));
            if fits {
                assert!(
                    checked.is_ok(),
                    "{host:?} is a URL domain within the limits, refused: {checked:?}"
                );
            }
        }
    }

    // 4.
    if let Ok(ascii) = ascii_host(host) {
        assert!(ascii.is_ascii(), "{host:?} -> {ascii:?}");
        if host.is_ascii() {
            assert_eq!(ascii, host);
        }
    }
}

fn check_presented(text: &str) {
    // 5.
    if let Some(name) = connectable_name(text) {
        assert!(text.contains(&name), "{text:?} -> {name:?}");
    }
    if !text.contains('(') {
        let expected = (text != "DirectoryName").then(|| text.to_owned());
        assert_eq!(connectable_name(text), expected, "{text:?}");
    }
    let debug = format!("{text:?}");
    assert_eq!(
        connectable_name(&format!("DnsName({debug})")).as_deref(),
        Some(&debug[1..debug.len() - 1]),
        "DnsName({debug})"
    );
    assert_eq!(
        connectable_name(&format!("IpAddress({text})")).as_deref(),
        Some(text),
        "IpAddress({text})"
    );
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    check_hosts(&text);
    check_presented(&text);
});
