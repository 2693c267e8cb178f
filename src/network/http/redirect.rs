//! Redirect rules as a pure function: given a request and the 3xx answer to it, what to send next.
//!
//! KDNetwork resolved only absolute and `/path` locations (H10), never stripped credentials when
//! a redirect left the origin (H11), and ignored the session's `follow_redirects` (H12). Here:
//!
//! | status | method change | body |
//! |---|---|---|
//! | 301, 302 | POST becomes GET | dropped for POST, kept otherwise |
//! | 303 | everything but HEAD becomes GET | dropped |
//! | 307, 308 | kept | kept |
//!
//! - `Location` is resolved against the request URL with [`Url::join`] (relative paths,
//!   `//host/x`, `?query`, absolute URLs); its fragment is never sent. The client refuses a
//!   redirect with several differing `Location` fields ([`HttpError::BadRedirect`]), as browsers
//!   do: which one is meant cannot be told.
//! - A hop to another origin (scheme, host or port differ) drops `Authorization`,
//!   `Proxy-Authorization`, `WWW-Authenticate`, `Cookie` and `Host` (curl CVE-2022-27776).
//!   A `Cookie` field the caller set stays on a same-origin hop (as in reqwest and curl), and
//!   there, as on the first request, it stands instead of the jar's cookies: the client adds the
//!   jar's `Cookie` per hop only to a request without one.
//! - Whenever the body is dropped, the headers describing it go too, and so does `Expect`.

use bytes::Bytes;
use url::Url;

use crate::network::http::request::{check_url_is_requestable, redact_userinfo};
use crate::network::http::{HttpError, HttpMethod, HttpRequest};

/// Status codes that redirect: 301, 302, 303, 307 and 308. Other 3xx codes (300, 304, 305, …)
/// are ordinary responses.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Which redirects a request follows (KDNetwork `RedirectPolicy`).
///
/// ```
/// use kdnet::network::http::{HttpRequest, RedirectPolicy};
///
/// let request = HttpRequest::new("https://example.com/")
///     .unwrap()
///     .with_redirect_policy(RedirectPolicy::FollowSameHost);
/// assert_eq!(request.redirect_policy(), RedirectPolicy::FollowSameHost);
/// assert_eq!(RedirectPolicy::default(), RedirectPolicy::FollowAll);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RedirectPolicy {
    /// Hand every redirect response to the caller.
    DontFollow,
    /// Follow redirects that stay on the same host (any scheme or port).
    FollowSameHost,
    /// Follow redirects that keep both the host and the scheme (no `https` → `http` downgrade,
    /// no upgrade either).
    FollowSameHostAndProtocol,
    /// Follow every redirect to an `http` or `https` URL (the default).
    #[default]
    FollowAll,
}

/// What the client does with a response, decided by [`redirect_action`].
#[derive(Debug)]
pub enum RedirectAction {
    /// Send this request next (one more hop).
    Follow(HttpRequest),
    /// Deliver the response to the caller as it is: not a redirect, no usable `Location`, or the
    /// policy does not allow the hop.
    Return,
    /// Fail the request: the redirect limit was hit ([`HttpError::TooManyRedirects`]) or the
    /// `Location` cannot be followed ([`HttpError::BadRedirect`]).
    Error(HttpError),
}

/// Decides whether to follow a response to `request`.
///
/// `status` and `location` (the `Location` value, if any) come from the response (the client
/// refuses a redirect with several differing `Location` fields before asking: pass the first
/// only when they agree); `redirects_followed` counts the hops already made for the original
/// request. The policy and limit are the request's own (the session applies its settings to the request before it is
/// sent, see `HttpSession::apply_redirect_settings`).
///
/// Checks, in order: a redirect status and a policy other than
/// [`RedirectPolicy::DontFollow`], else `Return`; a non-empty `Location`, else `Return`; a
/// `Location` that parses as a URL, else `Error(BadRedirect)`; a hop the policy allows, else
/// `Return` (whatever the URL's scheme: `ftp://other.example/` under
/// [`RedirectPolicy::FollowSameHost`] is returned); an `http`/`https` URL with a host, else
/// `Error(BadRedirect)`; fewer than `max_redirects` hops so far, else
/// `Error(TooManyRedirects)`.
///
/// ```
/// use kdnet::network::http::{redirect_action, HttpMethod, HttpRequest, RedirectAction};
///
/// let login = HttpRequest::post("https://example.com/login", "user=a").unwrap();
/// match redirect_action(&login, 303, Some("/home"), 0) {
///     RedirectAction::Follow(next) => {
///         assert_eq!(next.url().as_str(), "https://example.com/home");
///         assert_eq!(next.method(), &HttpMethod::Get);
///         assert!(next.body().is_empty());
///     }
///     other => panic!("expected to follow, got {other:?}"),
/// }
/// assert!(matches!(redirect_action(&login, 200, None, 0), RedirectAction::Return));
/// ```
pub fn redirect_action(
    request: &HttpRequest,
    status: u16,
    location: Option<&str>,
    redirects_followed: u32,
) -> RedirectAction {
    let policy = request.redirect_policy();
    if !REDIRECT_STATUSES.contains(&status) || policy == RedirectPolicy::DontFollow {
        return RedirectAction::Return;
    }
    let Some(location) = location.map(str::trim).filter(|l| !l.is_empty()) else {
        return RedirectAction::Return;
    };
    let target = match resolve_location(request.url(), location) {
        Ok(target) => target,
        Err(e) => return RedirectAction::Error(e),
    };
    // The policy decides first: a hop it would not follow is the caller's answer, whatever its
    // scheme; only one it would follow fails for an unsupported scheme.
    if !policy_allows(policy, request.url(), &target) {
        return RedirectAction::Return;
    }
    if let Err(e) = check_requestable_location(&target, location) {
        return RedirectAction::Error(e);
    }
    let limit = request.max_redirects();
    if redirects_followed >= limit {
        return RedirectAction::Error(HttpError::TooManyRedirects { limit });
    }
    match next_request(request, status, target) {
        Ok(next) => RedirectAction::Follow(next),
        Err(e) => RedirectAction::Error(e),
    }
}

/// The `Location` of a response to `request` that redirects (status and policy as in
/// [`redirect_action`]): its first `Location` field, or, when the response has several that
/// differ, `BadRedirect` — which one the server meant cannot be told (a response-splitting
/// sign), and browsers refuse such a response too. Identical repeats (blanks aside) are one.
pub(crate) fn redirect_location<'a>(
    request: &HttpRequest,
    status: u16,
    mut locations: impl Iterator<Item = &'a str>,
) -> Result<Option<&'a str>, HttpError> {
    let first = locations.next();
    if !REDIRECT_STATUSES.contains(&status)
        || request.redirect_policy() == RedirectPolicy::DontFollow
    {
        return Ok(first);
    }
    let Some(first) = first else {
        return Ok(None);
    };
    match locations.find(|other| other.trim() != first.trim()) {
        None => Ok(Some(first)),
        Some(other) => Err(HttpError::BadRedirect(format!(
            "the response has several differing Location fields ({:?} and {:?})",
            shorten(&redact_userinfo(first.trim())),
            shorten(&redact_userinfo(other.trim()))
        ))),
    }
}

/// Headers that describe a request body, and `Expect` (a client must not send `100-continue`
/// without content, RFC 9110 §10.1.1); they go when the body goes.
const BODY_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-location",
    "transfer-encoding",
    "expect",
];

/// Headers that must not reach another origin (the reqwest/curl rule), plus `Host`, which would
/// name the old one.
const ORIGIN_BOUND_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "cookie",
    "host",
];

/// Longest piece of a peer's `Location` quoted in an error message.
const MAX_QUOTED_LOCATION_CHARS: usize = 200;

/// `location` resolved against `base`, its fragment dropped; `BadRedirect` when it is not a URL.
fn resolve_location(base: &Url, location: &str) -> Result<Url, HttpError> {
    let mut target = base.join(location).map_err(|e| {
        HttpError::BadRedirect(format!(
            "Location {:?} is not a valid URL: {e}",
            shorten(&redact_userinfo(location))
        ))
    })?;
    // Fragments are never sent; RFC 9110's fragment inheritance only matters for display.
    target.set_fragment(None);
    Ok(target)
}

/// `BadRedirect` when `target` (resolved from `location`) is not an `http`/`https` URL with a
/// host.
fn check_requestable_location(target: &Url, location: &str) -> Result<(), HttpError> {
    if check_url_is_requestable(target).is_err() {
        return Err(HttpError::BadRedirect(format!(
            "Location {:?} is not an http or https URL",
            shorten(&redact_userinfo(location))
        )));
    }
    Ok(())
}

fn policy_allows(policy: RedirectPolicy, from: &Url, to: &Url) -> bool {
    match policy {
        RedirectPolicy::DontFollow => false,
        RedirectPolicy::FollowSameHost => from.host() == to.host(),
        RedirectPolicy::FollowSameHostAndProtocol => {
            from.host() == to.host() && from.scheme() == to.scheme()
        }
        RedirectPolicy::FollowAll => true,
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn next_request(request: &HttpRequest, status: u16, target: Url) -> Result<HttpRequest, HttpError> {
    let method = request.method();
    let (becomes_get, drops_body) = match status {
        301 | 302 => (*method == HttpMethod::Post, *method == HttpMethod::Post),
        303 => (*method != HttpMethod::Head, true),
        _ => (false, false),
    };
    let cross_origin = !same_origin(request.url(), &target);

    let mut next = request.clone();
    if becomes_get {
        next.set_method(HttpMethod::Get);
    }
    if drops_body {
        next.set_body(Bytes::new());
        for name in BODY_HEADERS {
            next.remove_header(name);
        }
    }
    if cross_origin {
        for name in ORIGIN_BOUND_HEADERS {
            next.remove_header(name);
        }
    }
    // Also turns credentials in the Location into Basic auth for the new hop.
    next.set_url(target)?;
    Ok(next)
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_QUOTED_LOCATION_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn origin_compares_default_ports() {
        assert!(same_origin(&url("http://a/"), &url("http://a:80/x")));
        assert!(!same_origin(&url("http://a/"), &url("http://a:8080/")));
        assert!(!same_origin(&url("http://a/"), &url("https://a/")));
        assert!(!same_origin(&url("http://a/"), &url("http://b/")));
    }

    #[test]
    fn long_locations_are_quoted_shortened() {
        let request = HttpRequest::new("http://example.com/").unwrap();
        let location = format!("ftp://example.com/{}", "x".repeat(10_000));
        let RedirectAction::Error(e) = redirect_action(&request, 302, Some(&location), 0) else {
            panic!("expected an error");
        };
        assert!(e.to_string().len() < 400, "{e}");
    }
}
