//! Fuzz target `location`: redirect decisions and `Location` resolution
//! (`kdnet::network::http::redirect_action`).
//!
//! Byte 0 picks the status, byte 1 the method, byte 2 the policy and the hops already made,
//! byte 3 the base URL from a fixed list. The rest is `base-url LF location` when it holds an LF
//! and the part before it is a requestable URL, otherwise it is all `location`.
//!
//! Oracles:
//! 1. Decision, in the documented order: a non-redirect status, `DontFollow` or an empty
//!    `Location` return the response; a `Location` that does not resolve against the base is
//!    `BadRedirect`; a hop the policy forbids returns the response, whatever its scheme; one it
//!    allows that is not an http(s) URL with a host is `BadRedirect`; the hop limit gives
//!    `TooManyRedirects`.
//! 2. The followed URL: http or https, with a host, no fragment, no credentials, equal to the
//!    WHATWG resolution of the trimmed `Location` against the base (minus fragment and
//!    credentials), stable when serialised and parsed again, and encodable as a request head
//!    whose `Host` field is just the authority.
//! 3. The followed request: method and body rewritten per status (301/302 POST→GET, 303 all but
//!    HEAD→GET, 307/308 unchanged), body headers dropped with the body, the caller's `Cookie`
//!    kept on a same-origin hop and dropped across origins (as reqwest and curl do), credentials
//!    and `Host` dropped across origins (credentials written in the `Location` itself are sent,
//!    as Basic auth).
#![no_main]

use kdnet::network::http::__fuzz::{encode_request, host_header};
use kdnet::network::http::{
    HttpError, HttpMethod, HttpRequest, REDIRECT_STATUSES, RedirectAction, RedirectPolicy,
    redirect_action,
};
use libfuzzer_sys::fuzz_target;
use url::Url;

const HEADER_LEN: usize = 4;

const STATUSES: [u16; 8] = [301, 302, 303, 307, 308, 200, 300, 304];

const BASES: [&str; 8] = [
    "http://example.com/a/b/c?q=1#frag",
    "https://example.com/",
    "https://user:pa%20ss@example.com:8443/dir/file",
    "http://[2001:db8::1]:8080/x/y",
    "http://127.0.0.1/",
    "https://xn--bcher-kva.example/p?x",
    "http://localhost:3000/api/v1/stream",
    "https://api.example.com",
];

const POLICIES: [RedirectPolicy; 4] = [
    RedirectPolicy::FollowAll,
    RedirectPolicy::FollowSameHost,
    RedirectPolicy::FollowSameHostAndProtocol,
    RedirectPolicy::DontFollow,
];

fn method(byte: u8) -> HttpMethod {
    match byte % 5 {
        0 => HttpMethod::Get,
        1 => HttpMethod::Post,
        2 => HttpMethod::Head,
        3 => HttpMethod::Put,
        _ => HttpMethod::Delete,
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether `policy` lets a hop go from `from` to `to` (any scheme: the policy is asked before
/// the scheme is checked).
fn policy_follows(policy: RedirectPolicy, from: &Url, to: &Url) -> bool {
    match policy {
        RedirectPolicy::FollowAll => true,
        RedirectPolicy::FollowSameHost => from.host() == to.host(),
        RedirectPolicy::FollowSameHostAndProtocol => {
            from.host() == to.host() && from.scheme() == to.scheme()
        }
        RedirectPolicy::DontFollow => false,
    }
}

/// What the followed URL must be: the WHATWG join, without fragment or credentials.
fn expected_target(base: &Url, location: &str) -> Option<Url> {
    let mut url = base.join(location).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_fragment(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(url)
}

fn request(base: Url, method: HttpMethod, policy: RedirectPolicy) -> HttpRequest {
    let mut request = HttpRequest::from_url(base).expect("bases are requestable");
    request.set_method(method);
    request.set_redirect_policy(policy);
    request.set_body(&b"payload"[..]);
    request.set_header("Content-Type", "text/plain");
    request.set_header("Cookie", "stale=1");
    request.set_header("X-Keep", "yes");
    if request.header("authorization").is_none() {
        request.set_bearer_auth("token");
    }
    request
}

fn check_follow(request: &HttpRequest, status: u16, location: &str, next: &HttpRequest) {
    let from = request.url();
    let to = next.url();
    assert!(matches!(to.scheme(), "http" | "https"), "scheme of {to}");
    assert!(to.host().is_some(), "no host in {to}");
    assert_eq!(to.fragment(), None, "fragment kept in {to}");
    assert!(
        to.username().is_empty() && to.password().is_none(),
        "credentials in {to}"
    );
    assert_eq!(
        Some(to),
        expected_target(from, location).as_ref(),
        "resolution"
    );
    let reparsed = Url::parse(to.as_str()).expect("a followed URL must parse again");
    assert_eq!(&reparsed, to, "serialisation is not stable");

    match request.redirect_policy() {
        RedirectPolicy::FollowSameHost => assert_eq!(from.host(), to.host()),
        RedirectPolicy::FollowSameHostAndProtocol => {
            assert_eq!(from.host(), to.host());
            assert_eq!(from.scheme(), to.scheme());
        }
        RedirectPolicy::FollowAll => {}
        RedirectPolicy::DontFollow => panic!("followed under DontFollow"),
    }

    let method = request.method();
    let (becomes_get, drops_body) = match status {
        301 | 302 => (*method == HttpMethod::Post, *method == HttpMethod::Post),
        303 => (*method != HttpMethod::Head, true),
        _ => (false, false),
    };
    let expected_method = if becomes_get {
        HttpMethod::Get
    } else {
        method.clone()
    };
    assert_eq!(next.method(), &expected_method, "method after {status}");
    if drops_body {
        assert!(next.body().is_empty(), "body kept after {status}");
        assert!(
            !next.has_header("content-type"),
            "content-type kept without body"
        );
    } else {
        assert_eq!(next.body(), request.body(), "body changed after {status}");
    }
    // The caller's Cookie stands instead of the jar's on the same origin, never beyond it.
    assert_eq!(
        next.header("cookie"),
        same_origin(from, to).then_some("stale=1"),
        "Cookie on a hop to {to}"
    );
    assert!(next.has_header("x-keep"), "unrelated header dropped");
    // Credentials written into the Location itself become Basic auth for the new hop.
    let joined = from.join(location).expect("followed, so it resolved");
    if !joined.username().is_empty() || joined.password().is_some() {
        let auth = next.header("authorization").unwrap_or_default();
        assert!(
            auth.starts_with("Basic "),
            "Location credentials not sent as Basic auth"
        );
    } else if !same_origin(from, to) {
        assert!(
            !next.has_header("authorization"),
            "credentials sent to {to}"
        );
    }
    if !same_origin(from, to) {
        assert!(!next.has_header("host"), "old Host sent to {to}");
    }

    // The client must be able to send what it decided to follow.
    let method_name = next.method().to_string();
    let head = encode_request(&method_name, to, next.headers())
        .unwrap_or_else(|e| panic!("followed request {to} cannot be encoded: {e}"));
    assert!(head.ends_with(b"\r\n\r\n"));
    let host = host_header(to);
    assert!(!host.is_empty(), "empty Host for {to}");
    assert!(
        !host.bytes().any(|b| b <= b' ' || b"/@?#".contains(&b)),
        "Host {host:?} for {to}"
    );
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER_LEN {
        return;
    }
    let (header, rest) = input.split_at(HEADER_LEN);
    let status = STATUSES[usize::from(header[0]) % STATUSES.len()];
    let method = method(header[1]);
    let policy = POLICIES[usize::from(header[2] & 3)];
    let hops = u32::from(header[2] >> 2) % 24;
    // Header values reach the redirect logic as lossily decoded strings.
    let text = String::from_utf8_lossy(rest);
    let fixed_base = || Url::parse(BASES[usize::from(header[3]) % BASES.len()]).unwrap();
    let (base, location) = match text.split_once('\n') {
        Some((base, location)) => match Url::parse(base) {
            Ok(url) if HttpRequest::from_url(url.clone()).is_ok() => (url, location),
            _ => (fixed_base(), &*text),
        },
        None => (fixed_base(), &*text),
    };
    let request = request(base, method, policy);

    let action = redirect_action(&request, status, Some(location), hops);
    let trimmed = location.trim();
    let redirects = REDIRECT_STATUSES.contains(&status) && policy != RedirectPolicy::DontFollow;
    match action {
        RedirectAction::Follow(next) => {
            assert!(redirects && !trimmed.is_empty(), "followed status {status}");
            assert!(hops < request.max_redirects(), "hop limit ignored");
            check_follow(&request, status, trimmed, &next);
        }
        RedirectAction::Return => {
            if redirects && !trimmed.is_empty() {
                // Only a policy refusal returns a redirect: its Location resolves (to any
                // scheme), and the policy does not follow that hop.
                let joined = request
                    .url()
                    .join(trimmed)
                    .expect("an unresolvable Location must be an error");
                assert!(
                    !policy_follows(policy, request.url(), &joined),
                    "{policy:?} refused {joined}"
                );
            }
        }
        RedirectAction::Error(HttpError::BadRedirect(_)) => {
            assert!(redirects, "error for status {status}");
            assert_eq!(
                expected_target(request.url(), trimmed),
                None,
                "valid Location refused"
            );
            // Unresolvable, or resolved to a hop the policy would follow but cannot be made.
            if let Ok(joined) = request.url().join(trimmed) {
                assert!(
                    policy_follows(policy, request.url(), &joined),
                    "{policy:?} would return {joined}, not fail"
                );
            }
        }
        RedirectAction::Error(HttpError::TooManyRedirects { limit }) => {
            assert!(redirects);
            assert_eq!(limit, request.max_redirects());
            assert!(hops >= limit);
        }
        RedirectAction::Error(other) => panic!("unexpected error {other:?}"),
    }
    // A missing Location never redirects.
    assert!(matches!(
        redirect_action(&request, status, None, hops),
        RedirectAction::Return
    ));
});
