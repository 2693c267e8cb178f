//! [`HttpCookie`]: one cookie (KDNetwork `HttpCookie`), and the conversions between it, the
//! `Set-Cookie` syntax and `cookie_store`'s form that the cookie jar relies on.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use cookie_store::{Cookie as StoreCookie, CookieDomain, CookieExpiration, CookiePath, RawCookie};
use url::{Host, Url};

use crate::network::dns::is_localhost;

/// Longest `Set-Cookie` value (name, value and attributes) that is read: 8192 bytes. Longer
/// values are ignored. The cookie itself is bounded more tightly, as RFC 6265bis §5.6 bounds it:
/// a name and value longer than [`MAX_NAME_VALUE_BYTES`] together make the cookie ignored.
pub const DEFAULT_MAX_SET_COOKIE_BYTES: usize = 8192;

/// Longest name and value, together (after trimming), of a cookie from `Set-Cookie`: 4096 bytes
/// (RFC 6265bis §5.6 step 5, as browsers do). A longer one is ignored.
pub const MAX_NAME_VALUE_BYTES: usize = 4096;

/// Longest attribute value (after trimming) of a `Set-Cookie` attribute that counts: 1024 bytes
/// (RFC 6265bis §5.6, as browsers do). A longer one is ignored, as if it were not there.
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// The longest a server may keep a cookie for: 400 days (RFC 6265bis §5.6.1, §5.6.2, as
/// browsers do). A later `Expires` or a longer `Max-Age` is cut to it.
const MAX_COOKIE_AGE_SECS: u64 = 400 * 24 * 60 * 60;

/// The `SameSite` attribute of a cookie. An HTTP client has no "site" to protect, so the value
/// is only stored and reported, as in KDNetwork.
///
/// ```
/// use kdnet::network::http::SameSitePolicy;
///
/// assert_eq!(SameSitePolicy::from_attribute("lax"), SameSitePolicy::Lax);
/// assert_eq!(SameSitePolicy::from_attribute("bogus"), SameSitePolicy::None);
/// assert_eq!(SameSitePolicy::Strict.to_string(), "Strict");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SameSitePolicy {
    /// `SameSite=None`, also used when the attribute is absent or has an unknown value (as
    /// KDNetwork did).
    #[default]
    None,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

impl SameSitePolicy {
    /// The attribute value: `"None"`, `"Lax"` or `"Strict"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSitePolicy::None => "None",
            SameSitePolicy::Lax => "Lax",
            SameSitePolicy::Strict => "Strict",
        }
    }

    /// Reads an attribute value case-insensitively; unknown values give
    /// [`SameSitePolicy::None`] (KDNetwork's `sameSitePolicyFromString`).
    pub fn from_attribute(value: &str) -> Self {
        let value = value.trim();
        if value.eq_ignore_ascii_case("lax") {
            SameSitePolicy::Lax
        } else if value.eq_ignore_ascii_case("strict") {
            SameSitePolicy::Strict
        } else {
            SameSitePolicy::None
        }
    }
}

impl fmt::Display for SameSitePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cookie, as stored in or taken from a cookie jar (KDNetwork `HttpCookie`).
///
/// A plain value: changing it does not change any jar. `domain` is stored without a leading
/// dot. A cookie with `host_only` set matches only `domain` itself; otherwise it also matches
/// its subdomains.
///
/// ```
/// use kdnet::network::http::{HttpCookie, SameSitePolicy};
/// use url::Url;
///
/// let url = Url::parse("https://example.com/account/login").unwrap();
/// let cookie = HttpCookie::from_set_cookie_header(
///     "id=a3fWa; Domain=.example.com; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600",
///     &url,
/// )
/// .unwrap();
/// assert_eq!((cookie.name.as_str(), cookie.domain.as_str()), ("id", "example.com"));
/// assert!(cookie.secure && cookie.http_only && !cookie.host_only);
/// assert_eq!(cookie.same_site, SameSitePolicy::Strict);
/// assert!(!cookie.is_session_cookie());
/// assert_eq!(cookie.to_cookie_header(), "id=a3fWa");
/// assert!(cookie.matches_url(&Url::parse("https://www.example.com/").unwrap()));
/// assert!(!cookie.matches_url(&Url::parse("http://example.com/").unwrap()));
///
/// let mut manual = HttpCookie::new("theme", "dark");
/// manual.domain = "example.com".into();
/// assert_eq!(manual.path, "/");
/// assert!(manual.is_session_cookie());
/// ```
///
/// `Debug` shows every field but the value (often a session credential), which it prints as
/// `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpCookie {
    /// The cookie name; empty for a nameless cookie (`Set-Cookie: token`, RFC 6265bis §5.6),
    /// which goes back as its value alone.
    pub name: String,
    /// The cookie value, exactly as the server sent it (quotes included).
    pub value: String,
    /// The domain, lower-case, without a leading dot; empty means "the host of the URL it is
    /// inserted for".
    pub domain: String,
    /// Whether only `domain` itself matches (no `Domain` attribute was given), not its
    /// subdomains.
    pub host_only: bool,
    /// The path prefix the cookie applies to (default `/`).
    pub path: String,
    /// When the cookie expires; `None` for a session cookie.
    pub expiration: Option<SystemTime>,
    /// Whether the cookie is only sent over `https`.
    pub secure: bool,
    /// Whether scripts may not read the cookie (stored and reported only).
    pub http_only: bool,
    /// The `SameSite` attribute (stored and reported only).
    pub same_site: SameSitePolicy,
}

impl Default for HttpCookie {
    fn default() -> Self {
        HttpCookie {
            name: String::new(),
            value: String::new(),
            domain: String::new(),
            host_only: false,
            path: "/".to_string(),
            expiration: None,
            secure: false,
            http_only: false,
            same_site: SameSitePolicy::None,
        }
    }
}

impl fmt::Debug for HttpCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HttpCookie {
            name,
            value,
            domain,
            host_only,
            path,
            expiration,
            secure,
            http_only,
            same_site,
        } = self;
        let value: &dyn fmt::Debug = if value.is_empty() {
            &""
        } else {
            &format_args!("<redacted>")
        };
        f.debug_struct("HttpCookie")
            .field("name", name)
            .field("value", value)
            .field("domain", domain)
            .field("host_only", host_only)
            .field("path", path)
            .field("expiration", expiration)
            .field("secure", secure)
            .field("http_only", http_only)
            .field("same_site", same_site)
            .finish()
    }
}

impl HttpCookie {
    /// A session cookie with path `/` and no domain yet.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        HttpCookie {
            name: name.into(),
            value: value.into(),
            ..HttpCookie::default()
        }
    }

    /// Parses one `Set-Cookie` header value received from `url`, with the rules
    /// [`HttpCookieJar`](crate::network::http::HttpCookieJar) applies to a single cookie.
    /// `None` when the cookie would be ignored: an empty name and value, a nameless cookie whose
    /// value starts with `__Host-` or `__Secure-`, a `Domain` the URL is not in or that is not
    /// ASCII, a Secure cookie from plain `http`, … Without `=`, the text before the first `;`
    /// is the value of a nameless cookie (RFC 6265bis §5.6, as browsers read it). (The jar also
    /// ignores a value holding U+FFFD, which stands for bytes that were not UTF-8: see
    /// [`HttpCookieJar`](crate::network::http::HttpCookieJar).)
    pub fn from_set_cookie_header(value: &str, url: &Url) -> Option<HttpCookie> {
        let cookie = prepare_set_cookie(value, url, DEFAULT_MAX_SET_COOKIE_BYTES)?;
        Some(from_store_cookie(&cookie))
    }

    /// The `name=value` pair for a `Cookie` request header; the value alone for a nameless
    /// cookie (RFC 6265bis §5.8.3, as browsers send it).
    pub fn to_cookie_header(&self) -> String {
        if self.name.is_empty() {
            self.value.clone()
        } else {
            format!("{}={}", self.name, self.value)
        }
    }

    /// Whether the cookie lasts only for the session (no expiry time).
    pub fn is_session_cookie(&self) -> bool {
        self.expiration.is_none()
    }

    /// Whether the expiry time has passed.
    pub fn is_expired(&self) -> bool {
        self.expiration.is_some_and(|at| at <= SystemTime::now())
    }

    /// Whether the cookie would be sent to `url`: an `http`/`https` URL whose host
    /// domain-matches (exactly, for host-only cookies), whose path path-matches (RFC 6265
    /// §5.1.4), over `https` or to a loopback host for Secure cookies (see
    /// [`HttpCookieJar`](crate::network::http::HttpCookieJar)). Expiry is not considered.
    pub fn matches_url(&self, url: &Url) -> bool {
        let domain = self.domain.strip_prefix('.').unwrap_or(&self.domain);
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        let domain_ok = if self.host_only {
            host.eq_ignore_ascii_case(domain)
        } else {
            domain_matches(url, domain)
        };
        matches!(url.scheme(), "http" | "https")
            && (!self.secure || is_secure_context(url))
            && !domain.is_empty()
            && domain_ok
            && path_matches(url.path(), path)
    }
}

/// Parses a `Set-Cookie` value from `url` and applies every acceptance rule that does not need
/// the jar's contents.
pub(super) fn prepare_set_cookie(
    value: &str,
    url: &Url,
    max_bytes: usize,
) -> Option<StoreCookie<'static>> {
    if value.len() > max_bytes || !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    // WHATWG URLs allow hosts with empty labels (`..x`); no DNS name has one, and domain
    // matching (which strips one leading dot) cannot treat them consistently: refuse them.
    if url
        .host_str()
        .is_some_and(|h| h.starts_with('.') || h.contains(".."))
    {
        return None;
    }
    // RFC 6265bis §5.6 step 1: a control character (but tab) anywhere, attributes included,
    // and the whole string is ignored (as browsers do).
    if !is_sendable(value) {
        return None;
    }
    let mut cookie = parse_rfc_6265(value, url)?;
    apply_rfc_6265_expiry(&mut cookie, value);
    cap_expiry(&mut cookie);
    apply_single_label_rule(&mut cookie, url)?;
    let secure = cookie.secure() == Some(true);
    if secure && !is_secure_context(url) {
        return None;
    }
    if cookie.name().is_empty() && !is_nameless_value_allowed(cookie.value(), false) {
        return None;
    }
    if has_prefix(cookie.name(), "__Secure-") && !secure {
        return None;
    }
    if has_prefix(cookie.name(), "__Host-")
        && !(secure
            && matches!(cookie.domain, CookieDomain::HostOnly(_))
            && cookie.path.is_from_path_attr()
            && path_of(&cookie) == "/")
    {
        return None;
    }
    Some(cookie)
}

/// Parses a `Set-Cookie` value into the store's form: the name and value as RFC 6265 §5.2
/// reads them (the text before the first `;`, split at its first `=`, each trimmed of spaces
/// and tabs only; without `=`, the text is the value of a nameless cookie, RFC 6265bis §5.6;
/// `None` when both are empty or they are longer than [`MAX_NAME_VALUE_BYTES`] together), the
/// attributes as the `cookie`
/// crate reads them, but for a bare `Path`, which sets the default path, a `SameSite` with
/// an unknown value or none, which sets the default, an attribute whose value is longer than
/// [`MAX_ATTRIBUTE_VALUE_BYTES`], which is ignored (RFC 6265bis §5.6), and attribute names and
/// values with
/// white space other than spaces and tabs at an end, which are read as RFC 6265 §5.2 reads
/// them (the crate trims all Unicode white space: `\u{a0}Secure` made a cookie Secure,
/// `Max-Age\u{2003}=0` deleted one, `Path=\u{a0}/x` gave it the path `/x`). The crate trimmed
/// the name and value that way too, so a value starting or ending with a no-break space lost it.
fn parse_rfc_6265(value: &str, url: &Url) -> Option<StoreCookie<'static>> {
    let (pair, attributes) = value.split_at(value.find(';').unwrap_or(value.len()));
    // RFC 6265bis §5.6 step 3: without `=`, the pair is the value of a nameless cookie.
    let (name, pair_value) = pair.split_once('=').unwrap_or(("", pair));
    let (name, pair_value) = (name.trim_matches(is_wsp), pair_value.trim_matches(is_wsp));
    if (name.is_empty() && pair_value.is_empty())
        || name.len() + pair_value.len() > MAX_NAME_VALUE_BYTES
    {
        return None;
    }
    // The crate reads the attributes after a stand-in pair; the real one is put in after. It
    // skips two kinds of attribute that count: a bare `Path` has the empty value (§5.2), which
    // means the default path (§5.2.4), and gets its `=`; a `SameSite` with an unknown value or
    // none means the default (RFC 6265bis §5.6.7), reported as `None`, and becomes that. The
    // last of each decides.
    let mut text = String::with_capacity(3 + attributes.len() + 8);
    text.push_str("n=v");
    // The path of the last `Path`, if the crate would read its value differently, and whether
    // the last `Domain` with a value is one no host can match or one that is not ASCII.
    let mut padded_path: Option<&str> = None;
    let mut padded_domain = false;
    for attribute in attributes.split(';').skip(1) {
        let (key, attribute_value) = match attribute.split_once('=') {
            Some((key, v)) => (key, Some(v.trim_matches(is_wsp))),
            None => (attribute, None),
        };
        // RFC 6265bis §5.6: a value over 1,024 bytes, and the attribute is ignored.
        if attribute_value.is_some_and(|v| v.len() > MAX_ATTRIBUTE_VALUE_BYTES) {
            continue;
        }
        let key = key.trim_matches(is_wsp);
        // The crate trims all Unicode white space off attribute names and values; RFC 6265
        // §5.2 only spaces and tabs. A name with other white space at an end is none the RFC
        // knows (ignored); a value with it at an end makes a `Max-Age` no number (ignored),
        // a `Domain` one no host can match (the cookie is ignored, §5.3 step 6), a `Path`
        // one that does not start with `/` (the default path) or one with the white space in
        // it; `Expires` and `SameSite` are read from the RFC's value below. (The last of each
        // decides.)
        if key.trim() != key {
            continue;
        }
        // So is a `Domain` whose leading dot white space follows: §5.2.3 removes only the dot,
        // leaving a domain that starts with white space (the crate would trim it again).
        let is_domain = key.eq_ignore_ascii_case("domain");
        let padded = |v: &&str| {
            let after_dot = v.strip_prefix('.').filter(|_| is_domain).unwrap_or(v);
            v.trim() != *v || after_dot.trim() != after_dot
        };
        if let Some(v) = attribute_value.filter(padded) {
            if key.eq_ignore_ascii_case("max-age") {
                continue;
            }
            if is_domain {
                padded_domain = true;
                continue;
            }
            if key.eq_ignore_ascii_case("path") {
                padded_path = Some(v);
                continue;
            }
        } else if key.eq_ignore_ascii_case("path") {
            padded_path = None;
        } else if let Some(v) = attribute_value.filter(|v| is_domain && !v.is_empty()) {
            // The last `Domain` with a value decides (an empty one is ignored, §5.2.3). One
            // with a character outside US-ASCII makes the cookie ignored (RFC 6265bis §5.7
            // step 8, as Chromium and Firefox do): a server writes an internationalised domain
            // as its A-label, and IDNA would map some characters (`\u{200B}`) to nothing,
            // turning the attribute into none.
            padded_domain = !v.is_ascii();
        }
        text.push(';');
        if key.eq_ignore_ascii_case("samesite")
            && !attribute_value.is_some_and(|v| {
                ["lax", "strict", "none"]
                    .iter()
                    .any(|known| v.eq_ignore_ascii_case(known))
            })
        {
            text.push_str("SameSite=None");
            continue;
        }
        text.push_str(attribute);
        if attribute_value.is_none() && key.eq_ignore_ascii_case("path") {
            text.push('=');
        }
    }
    if padded_domain {
        return None;
    }
    let mut raw = RawCookie::parse(text).ok()?;
    raw.set_name(name.to_string());
    raw.set_value(pair_value.to_string());
    let mut cookie = StoreCookie::try_from_raw_cookie(&raw, url)
        .ok()?
        .into_owned();
    if let Some(path) = padded_path {
        cookie.path = CookiePath::new(path, url);
    }
    Some(cookie)
}

/// Builds the store's form of a cookie given through the API.
pub(super) fn to_store_cookie(cookie: &HttpCookie, url: &Url) -> Option<StoreCookie<'static>> {
    if (cookie.name.is_empty() && !is_nameless_value_allowed(&cookie.value, true))
        || !is_sendable(&cookie.name)
        || !is_sendable(&cookie.value)
        || cookie.name.contains('=')
        || cookie.name.contains(';')
        || cookie.value.contains(';')
        || is_padded(&cookie.name)
        || is_padded(&cookie.value)
        // As from `Set-Cookie` (RFC 6265bis §5.7 step 8): IDNA would map some characters to
        // nothing (`\u{200B}`), making the domain another one or none.
        || !cookie.domain.is_ascii()
        || !matches!(url.scheme(), "http" | "https")
    {
        return None;
    }
    let domain = cookie.domain.strip_prefix('.').unwrap_or(&cookie.domain);
    let mut raw = RawCookie::new(cookie.name.clone(), cookie.value.clone());
    if !domain.is_empty() {
        if cookie.host_only {
            // Host-only cookies take their domain from the URL, which must be that host.
            if domain_key(domain) != CookieDomain::host_only(url).ok()?.as_cow()? {
                return None;
            }
        } else {
            raw.set_domain(domain.to_string());
        }
    }
    if cookie.path.starts_with('/') {
        raw.set_path(cookie.path.clone());
    }
    if cookie.secure {
        raw.set_secure(true);
    }
    if cookie.http_only {
        raw.set_http_only(true);
    }
    set_same_site(&mut raw, cookie.same_site);
    let mut stored = StoreCookie::try_from_raw_cookie(&raw, url).ok()?;
    stored.expires = match cookie.expiration {
        Some(at) => CookieExpiration::AtUtc(clamp_to_cookie_range(at).into()),
        None => CookieExpiration::SessionEnd,
    };
    apply_single_label_rule(&mut stored, url)?;
    Some(stored.into_owned())
}

pub(super) fn from_store_cookie(cookie: &StoreCookie<'_>) -> HttpCookie {
    let same_site = match cookie.same_site() {
        Some(s) if s.is_lax() => SameSitePolicy::Lax,
        Some(s) if s.is_strict() => SameSitePolicy::Strict,
        _ => SameSitePolicy::None,
    };
    HttpCookie {
        name: cookie.name().to_string(),
        value: cookie.value().to_string(),
        domain: cookie
            .domain
            .as_cow()
            .map(Cow::into_owned)
            .unwrap_or_default(),
        host_only: matches!(cookie.domain, CookieDomain::HostOnly(_)),
        path: path_of(cookie).to_string(),
        expiration: match &cookie.expires {
            CookieExpiration::AtUtc(at) => Some(system_time_from_unix(at.unix_timestamp())),
            CookieExpiration::SessionEnd => None,
        },
        secure: cookie.secure() == Some(true),
        http_only: cookie.http_only() == Some(true),
        same_site,
    }
}

/// Works the expiry out again by RFC 6265 where the `cookie` crate reads the attributes
/// differently, so the cookie expires when a browser's would:
///
/// - §5.2.2 ignores a `Max-Age` without digits, so the last one *with* digits (or `Expires`, or
///   nothing) decides. The crate reads an empty one (`Max-Age=`) as the largest age, which kept
///   a cookie its server was deleting (`Expires` in the past) until the year 9999.
/// - §5.2.1 reads `Expires` with the lenient cookie-date algorithm of §5.1.1. The crate knows
///   three exact formats ending in `GMT`: a one-digit day (`Tue, 3 Jun 2099 …`, as Java writes
///   it), `UTC` or lower case made the date unreadable, the cookie a session cookie, and a
///   deletion in such a format kept the cookie.
///
/// Only values with such an attribute are looked at again.
fn apply_rfc_6265_expiry(cookie: &mut StoreCookie<'_>, set_cookie: &str) {
    let mut empty_max_age = false;
    // The last valid Max-Age: `Some(None)` for a negative one.
    let mut max_age: Option<Option<u64>> = None;
    let mut has_expires = false;
    let mut expires: Option<SystemTime> = None;
    for attribute in set_cookie.split(';').skip(1) {
        let Some((name, value)) = attribute.split_once('=') else {
            continue;
        };
        let (name, value) = (name.trim_matches(is_wsp), value.trim_matches(is_wsp));
        if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            continue;
        }
        if name.eq_ignore_ascii_case("max-age") {
            let digits = value.strip_prefix('-').unwrap_or(value);
            if value.is_empty() {
                empty_max_age = true;
            } else if digits.bytes().all(|b| b.is_ascii_digit()) {
                max_age = Some(if value.starts_with('-') {
                    None
                } else {
                    // Too many digits for a u64 is still "a very long time".
                    Some(digits.parse().unwrap_or(u64::MAX))
                });
            }
        } else if name.eq_ignore_ascii_case("expires") {
            has_expires = true;
            if let Some(at) = cookie_date(value) {
                expires = Some(at);
            }
        }
    }
    if !empty_max_age && !has_expires {
        return;
    }
    cookie.expires = match (max_age, expires) {
        (Some(Some(seconds)), _) => CookieExpiration::from(seconds),
        (Some(None), _) => CookieExpiration::from(0u64),
        (None, Some(at)) => CookieExpiration::AtUtc(clamp_to_cookie_range(at).into()),
        (None, None) => CookieExpiration::SessionEnd,
    };
}

/// Cuts an expiry further than [`MAX_COOKIE_AGE_SECS`] ahead to that (RFC 6265bis §5.6.1,
/// §5.6.2: "cookie-age-limit").
fn cap_expiry(cookie: &mut StoreCookie<'_>) {
    if let CookieExpiration::AtUtc(at) = &cookie.expires {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let latest = now.saturating_add(MAX_COOKIE_AGE_SECS);
        if u64::try_from(at.unix_timestamp()).is_ok_and(|at| at > latest) {
            cookie.expires = CookieExpiration::from(MAX_COOKIE_AGE_SECS);
        }
    }
}

/// Parses a cookie date with the algorithm of RFC 6265 §5.1.1: the first tokens that look like
/// a time (`h:m:s`, one or two digits each), a day of the month (one or two digits), a month
/// (its first three letters, any case) and a year (two to four digits) are taken, whatever their
/// order and whatever else is there (weekday, `GMT`, `UTC`, offsets). `None` when one is
/// missing or out of range, or the date does not exist.
fn cookie_date(text: &str) -> Option<SystemTime> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let is_delimiter =
        |b: u8| matches!(b, 0x09 | 0x20..=0x2f | 0x3b..=0x40 | 0x5b..=0x60 | 0x7b..=0x7e);
    let (mut time, mut day, mut month, mut year) = (None, None, None, None);
    for token in text.as_bytes().split(|&b| is_delimiter(b)) {
        if token.is_empty() {
            continue;
        }
        if time.is_none()
            && let Some(hms) = time_of_day(token)
        {
            time = Some(hms);
        } else if day.is_none()
            && let Some((d, _)) = leading_number(token, 1, 2)
        {
            day = Some(d);
        } else if month.is_none()
            && let Some(m) = token.get(..3).and_then(|start| {
                MONTHS
                    .iter()
                    .position(|name| start.eq_ignore_ascii_case(*name))
            })
        {
            month = Some(m as u32 + 1);
        } else if year.is_none()
            && let Some((y, _)) = leading_number(token, 2, 4)
        {
            year = Some(y);
        }
    }
    let ((hour, minute, second), day, month, year) = (time?, day?, month?, year?);
    let year = match year {
        70..=99 => year + 1900,
        0..=69 => year + 2000,
        _ => year,
    };
    if !(1..=31).contains(&day) || year < 1601 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > month_days {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(system_time_from_unix(seconds))
}

/// `h:m:s` at the start of a token (one or two digits each), then the end or a non-digit.
fn time_of_day(token: &[u8]) -> Option<(u32, u32, u32)> {
    let (hour, rest) = leading_number(token, 1, 2)?;
    let (minute, rest) = leading_number(rest.strip_prefix(b":")?, 1, 2)?;
    let (second, _) = leading_number(rest.strip_prefix(b":")?, 1, 2)?;
    Some((hour, minute, second))
}

/// The number written by the `min..=max` digits that start `token` (then the end or a
/// non-digit), and what follows them.
fn leading_number(token: &[u8], min: usize, max: usize) -> Option<(u32, &[u8])> {
    let digits = token.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(min..=max).contains(&digits) {
        return None;
    }
    let value = token[..digits]
        .iter()
        .fold(0, |n, &b| n * 10 + u32::from(b - b'0'));
    Some((value, &token[digits..]))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Refuses a single-label `Domain` (`com`, `localhost`, and `com.`, the same label written as a
/// fully qualified name) unless it is the request host, which makes the cookie host-only
/// (RFC 6265 §5.3 step 5, without a suffix list).
fn apply_single_label_rule(cookie: &mut StoreCookie<'_>, url: &Url) -> Option<()> {
    if let CookieDomain::Suffix(domain) = &cookie.domain {
        let labels = domain.strip_suffix('.').unwrap_or(domain);
        if !labels.contains('.') {
            if url.host_str() != Some(domain.as_str()) {
                return None;
            }
            cookie.domain = CookieDomain::host_only(url).ok()?;
        }
    }
    Some(())
}

/// The store's key of a cookie, owned.
pub(super) fn owned_key(cookie: &StoreCookie<'_>) -> Option<(String, String, String)> {
    let domain = cookie.domain.as_cow()?.into_owned();
    Some((
        domain,
        path_of(cookie).to_string(),
        cookie.name().to_string(),
    ))
}

pub(super) fn path_of<'c>(cookie: &'c StoreCookie<'_>) -> &'c str {
    cookie.path.as_ref()
}

/// The store's domain key for a user-given domain: no leading dot, lower-case, IDNA to ASCII,
/// IPv6 in brackets.
pub(super) fn domain_key(domain: &str) -> String {
    let domain = domain.trim();
    let domain = domain.strip_prefix('.').unwrap_or(domain);
    match Host::parse(domain) {
        Ok(Host::Domain(d)) => d,
        Ok(Host::Ipv4(ip)) => ip.to_string(),
        Ok(Host::Ipv6(ip)) => format!("[{ip}]"),
        Err(_) => domain.to_ascii_lowercase(),
    }
}

/// Whether `url`'s host domain-matches `domain` (RFC 6265 §5.1.3): identical, or a subdomain of
/// it when the host is a name rather than an IP address.
fn domain_matches(url: &Url, domain: &str) -> bool {
    match url.host() {
        Some(Host::Domain(host)) => labels_match(host, domain),
        Some(_) => url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(domain)),
        None => false,
    }
}

/// Whether host name `host` equals `domain` or ends with `.domain` (ASCII case-insensitive).
pub(super) fn labels_match(host: &str, domain: &str) -> bool {
    if host.eq_ignore_ascii_case(domain) {
        return true;
    }
    let Some(split) = host.len().checked_sub(domain.len()) else {
        return false;
    };
    split > 0
        && host.is_char_boundary(split)
        && host.as_bytes().get(split - 1) == Some(&b'.')
        && host[split..].eq_ignore_ascii_case(domain)
}

/// RFC 6265 §5.1.4 path-match.
pub(super) fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    match request_path.strip_prefix(cookie_path) {
        Some(rest) => rest.is_empty() || cookie_path.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Whether a cookie name or value can be sent back in a `Cookie` header, or a `Set-Cookie`
/// string is one to read: no control characters other than tab (RFC 6265bis §5.6 step 1).
fn is_sendable(text: &str) -> bool {
    !text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Whether a `Set-Cookie` value holds U+FFFD, which is what the client reads for a field value
/// that is not UTF-8: stored, the cookie would go back as bytes the server never set.
pub(super) fn holds_replacement_character(value: &str) -> bool {
    value.contains(char::REPLACEMENT_CHARACTER)
}

/// Whether a cookie name or value has a space or tab at either end, which a server reading the
/// `Cookie` header (RFC 6265 §5.2, and every common server) drops: it would read another cookie.
fn is_padded(text: &str) -> bool {
    text.starts_with(is_wsp) || text.ends_with(is_wsp)
}

/// Whether `url` is a secure context for cookies (RFC 6265bis §5.7: "secure" as the user agent
/// defines it): `https`, or `http` to a loopback host, which browsers treat as potentially
/// trustworthy (W3C Secure Contexts §3.2): `localhost` and names under it (kdnet resolves them
/// to loopback itself, never through DNS), 127.0.0.0/8 and `::1`.
pub(super) fn is_secure_context(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(Host::Domain(name)) => is_localhost(name),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// RFC 6265's white space (WSP, RFC 5234): a space or a tab, and nothing else.
fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Whether a nameless cookie may have `value`: not empty, not starting with a name prefix
/// (RFC 6265bis §5.7 step 22: it goes back as the value alone, which would look like a
/// `__Host-` or `__Secure-` cookie), and, when `from_api`, without `=` (it would go back
/// looking like another cookie: the Cookie Store API's rule; a server's `Set-Cookie: =a=b` is
/// kept and goes back as `a=b`, as in browsers, since the server could set `a` itself).
fn is_nameless_value_allowed(value: &str, from_api: bool) -> bool {
    let refused = value.is_empty()
        || has_prefix(value, "__Secure-")
        || has_prefix(value, "__Host-")
        || (from_api && value.contains('='));
    !refused
}

/// RFC 6265bis compares cookie name prefixes case-insensitively.
fn has_prefix(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

fn set_same_site(raw: &mut RawCookie<'_>, policy: SameSitePolicy) {
    // cookie_store does not re-export `cookie::SameSite`; take the value from a parsed cookie.
    let template = match policy {
        SameSitePolicy::None => return,
        SameSitePolicy::Lax => "x=; SameSite=Lax",
        SameSitePolicy::Strict => "x=; SameSite=Strict",
    };
    if let Ok(parsed) = RawCookie::parse(template) {
        raw.set_same_site(parsed.same_site());
    }
}

/// The latest instant a cookie expiry can hold: 9999-12-31T23:59:59Z (the `time` crate's range,
/// which `cookie_store` uses; converting later instants would panic).
const LATEST_COOKIE_EXPIRY_SECS: u64 = 253_402_300_799;

/// Clamps a caller's `SystemTime` into the range the `time` crate can represent. Times before
/// 1970 become 1970: they are all equally expired.
fn clamp_to_cookie_range(at: SystemTime) -> SystemTime {
    let latest = SystemTime::UNIX_EPOCH + Duration::from_secs(LATEST_COOKIE_EXPIRY_SECS);
    if at < SystemTime::UNIX_EPOCH {
        SystemTime::UNIX_EPOCH
    } else if at > latest {
        latest
    } else {
        at
    }
}

fn system_time_from_unix(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    let at = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    at.unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_match_follows_rfc_6265() {
        assert!(path_matches("/test", "/test"));
        assert!(path_matches("/test/sub", "/test"));
        assert!(path_matches("/test/sub", "/test/"));
        assert!(path_matches("/anything", "/"));
        assert!(!path_matches("/testing", "/test"));
        assert!(!path_matches("/", "/test"));
        assert!(!path_matches("/other", "/test"));
    }

    #[test]
    fn label_match_needs_a_dot_boundary() {
        assert!(labels_match("example.com", "example.com"));
        assert!(labels_match("a.b.EXAMPLE.com", "example.com"));
        assert!(!labels_match("badexample.com", "example.com"));
        assert!(!labels_match("com", "example.com"));
        assert!(!labels_match("é.example.com", "xample.com"));
    }

    #[test]
    fn expiry_conversion_never_panics_at_the_extremes() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000);
        assert!(clamp_to_cookie_range(far) < far);
        let stored: SystemTime = system_time_from_unix(i64::MAX);
        assert!(stored >= SystemTime::UNIX_EPOCH);
        let _ = system_time_from_unix(i64::MIN);
    }

    #[test]
    fn domain_keys_are_normalised_like_the_store() {
        assert_eq!(domain_key(".Example.COM"), "example.com");
        assert_eq!(domain_key("bücher.de"), "xn--bcher-kva.de");
        assert_eq!(domain_key("[::1]"), "[::1]");
    }
}
