//! Fuzz target `set_cookie`: one `Set-Cookie` value read by `HttpCookie::from_set_cookie_header`,
//! against a plain transcription of RFC 6265 §5.2 and §5.3 (with the rules kdnet documents on
//! top: RFC 6265bis' control characters, name prefixes, nameless cookies, size limits and
//! 400-day cap, a Secure cookie only from a secure context (`https` or a loopback host), a
//! single-label `Domain` only as the host itself).
//!
//! Input layout: byte 0 picks the request URL from a fixed list; the rest (at most 512 bytes,
//! read as UTF-8 with replacement) is the header value.
//!
//! Oracle: the cookie is ignored exactly when the reference ignores it, and otherwise has the
//! reference's name, value (white space trimmed to SP/HTAB only), domain and host-only flag,
//! path (the last `Path`, the default path for an empty or relative one), Secure, HttpOnly,
//! SameSite (the last one; unknown values mean the default), and expiry from the last valid
//! `Max-Age` (which wins over `Expires`: at or before now for zero and below, `now + delta`
//! otherwise). Expiry from `Expires` alone is not modelled (only that the cookie parses), nor
//! is a `Domain` on the public suffix list.
#![no_main]

use std::time::{Duration, SystemTime};

use kdnet::network::http::{HttpCookie, SameSitePolicy};
use libfuzzer_sys::fuzz_target;
use url::Url;

const URLS: [&str; 6] = [
    "https://www.example.com/a/b/c",
    "http://example.com/",
    "https://sub.www.example.com/dir/",
    "http://127.0.0.1/x/y",
    "https://example.com",
    "http://www.example.com/a//b/",
];
/// Public suffixes a fuzzed `Domain` may name (the reference does not model the list).
const PUBLIC: [&str; 6] = ["com", "org", "net", "uk", "co.uk", "example"];

#[derive(Debug, PartialEq)]
enum Expiry {
    Session,
    Past,
    In(u64),
    /// `Expires` without a valid `Max-Age`: not modelled.
    Unknown,
}

#[derive(Debug)]
struct Expected {
    name: String,
    value: String,
    domain: String,
    host_only: bool,
    path: String,
    secure: bool,
    http_only: bool,
    same_site: SameSitePolicy,
    expiry: Expiry,
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 6265 §5.1.4.
fn default_path(url: &Url) -> String {
    let path = url.path();
    if !path.starts_with('/') {
        return "/".into();
    }
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(at) => path[..at].into(),
    }
}

/// `None`: ignored; `Some(None)`: a case the reference does not decide.
fn reference(line: &str, url: &Url) -> Option<Option<Expected>> {
    if line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    let (pair, attributes) = line.split_at(line.find(';').unwrap_or(line.len()));
    // RFC 6265bis §5.6: without `=` the pair is a nameless cookie's value.
    let (name, value) = pair.split_once('=').unwrap_or(("", pair));
    let (name, value) = (name.trim_matches(is_wsp), value.trim_matches(is_wsp));
    if (name.is_empty() && value.is_empty()) || name.len() + value.len() > 4096 {
        return None;
    }
    let lower_value = value.to_ascii_lowercase();
    if name.is_empty()
        && (lower_value.starts_with("__secure-") || lower_value.starts_with("__host-"))
    {
        return None;
    }
    let mut domain: Option<String> = None;
    let mut path: Option<(String, bool)> = None;
    let (mut secure, mut http_only) = (false, false);
    let mut same_site = SameSitePolicy::None;
    let mut max_age: Option<i128> = None;
    let mut expires = false;
    let mut domain_not_ascii = false;
    for attribute in attributes.split(';').skip(1) {
        let (key, v) = attribute.split_once('=').unwrap_or((attribute, ""));
        let (key, v) = (key.trim_matches(is_wsp), v.trim_matches(is_wsp));
        if v.len() > 1024 {
            continue; // RFC 6265bis §5.6: the attribute is ignored
        }
        match key.to_ascii_lowercase().as_str() {
            "max-age" => {
                let digits = v.strip_prefix('-').unwrap_or(v);
                if digits.is_empty() && !v.is_empty() {
                    return Some(None); // "-": §5.2.2 does not say what number it is
                }
                if !v.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    let magnitude = digits
                        .bytes()
                        .fold(0i128, |n, d| (n * 10 + i128::from(d - b'0')).min(1 << 80));
                    max_age = Some(if v.starts_with('-') {
                        -magnitude
                    } else {
                        magnitude
                    });
                }
            }
            "expires" => expires = true,
            "domain" if !v.is_empty() => {
                // RFC 6265bis §5.7 step 8: the last `Domain` with a value decides, and one that
                // is not ASCII makes the cookie ignored.
                domain_not_ascii = !v.is_ascii();
                let v = v.strip_prefix('.').unwrap_or(v);
                domain = Some(v.to_ascii_lowercase());
            }
            "path" => {
                path = Some(if v.starts_with('/') {
                    (v.to_owned(), true)
                } else {
                    (default_path(url), false)
                })
            }
            "secure" => secure = true,
            "httponly" => http_only = true,
            "samesite" => {
                same_site = match v.to_ascii_lowercase().as_str() {
                    "lax" => SameSitePolicy::Lax,
                    "strict" => SameSitePolicy::Strict,
                    _ => SameSitePolicy::None,
                }
            }
            _ => {}
        }
    }
    if domain_not_ascii {
        return None;
    }
    let host = url.host_str().unwrap().to_owned();
    let is_ip = url.host_str().unwrap().parse::<std::net::IpAddr>().is_ok();
    let (domain, host_only) = match domain {
        Some(d) => {
            if PUBLIC.contains(&d.as_str()) || d.ends_with('.') || d.is_empty() {
                return Some(None);
            }
            let matches = host == d || (!is_ip && host.ends_with(&format!(".{d}")));
            if !matches {
                return None;
            }
            if is_ip {
                return Some(None); // cookie_store's handling of an IP `Domain` is not modelled
            }
            // kdnet: a single-label domain only as the host itself, and then host-only.
            (d.clone(), !d.contains('.'))
        }
        None => (host.clone(), true),
    };
    // A secure context: `https`, or a loopback host (as browsers treat it).
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if secure && url.scheme() != "https" && !loopback {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("__secure-") && !secure {
        return None;
    }
    if lower.starts_with("__host-")
        && !(secure
            && host_only
            && path
                .as_ref()
                .is_some_and(|(p, from_attribute)| *from_attribute && p == "/"))
    {
        return None;
    }
    let expiry = match max_age {
        Some(delta) if delta <= 0 => Expiry::Past,
        // RFC 6265bis §5.6.1: at most 400 days.
        Some(delta) => Expiry::In(u64::try_from(delta).unwrap_or(u64::MAX).min(400 * 86_400)),
        None if expires => Expiry::Unknown,
        None => Expiry::Session,
    };
    Some(Some(Expected {
        name: name.to_owned(),
        value: value.to_owned(),
        domain,
        host_only,
        path: path.map_or_else(|| default_path(url), |(p, _)| p),
        secure,
        http_only,
        same_site,
        expiry,
    }))
}

fn check(cookie: &HttpCookie, expected: &Expected, now: SystemTime, line: &str) {
    let got = (
        cookie.name.as_str(),
        cookie.value.as_str(),
        cookie.domain.as_str(),
        cookie.host_only,
        cookie.path.as_str(),
        cookie.secure,
        cookie.http_only,
        cookie.same_site,
    );
    let want = (
        expected.name.as_str(),
        expected.value.as_str(),
        expected.domain.as_str(),
        expected.host_only,
        expected.path.as_str(),
        expected.secure,
        expected.http_only,
        expected.same_site,
    );
    assert_eq!(got, want, "cookie vs reference for {line:?}");
    match expected.expiry {
        Expiry::Session => assert_eq!(cookie.expiration, None, "{line:?}"),
        Expiry::Past => assert!(
            cookie.expiration.is_some_and(|at| at <= now),
            "Max-Age <= 0 must expire it: {:?} for {line:?}",
            cookie.expiration
        ),
        Expiry::In(delta) => {
            let at = cookie.expiration.expect("Max-Age gives an expiry");
            assert!(at > now, "Max-Age {delta} expired at once: {line:?}");
            if delta < 1 << 30 {
                let want = now + Duration::from_secs(delta);
                let off = at.duration_since(want).unwrap_or_else(|e| e.duration());
                assert!(
                    off < Duration::from_secs(5),
                    "Max-Age {delta}: off by {off:?}: {line:?}"
                );
            }
        }
        Expiry::Unknown => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if rest.len() > 512 {
        return;
    }
    let url = Url::parse(URLS[usize::from(which) % URLS.len()]).unwrap();
    let line = String::from_utf8_lossy(rest);
    let now = SystemTime::now();
    let cookie = HttpCookie::from_set_cookie_header(&line, &url);
    match reference(&line, &url) {
        None => assert!(
            cookie.is_none(),
            "reference ignores {line:?} from {url}, kdnet read {cookie:?}"
        ),
        Some(None) => {}
        Some(Some(expected)) => {
            let cookie = cookie.unwrap_or_else(|| {
                panic!("kdnet ignores {line:?} from {url}, the reference reads {expected:?}")
            });
            check(&cookie, &expected, now, &line);
        }
    }
});
