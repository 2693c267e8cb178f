//! [`HttpCookieJar`]: the cookies a session keeps (KDNetwork `HttpCookieJar`), stored in a
//! `cookie_store::CookieStore` with the extra rules a client needs.

use std::collections::HashMap;
use std::fmt;

use cookie_store::{Cookie as StoreCookie, CookieStore, StoreAction};
use log::debug;
use url::Url;

use crate::network::http::cookie::{
    domain_key, from_store_cookie, holds_replacement_character, is_secure_context, labels_match,
    owned_key, path_matches, path_of, prepare_set_cookie, to_store_cookie,
};
use crate::network::http::logged_url::LoggedUrl;
use crate::network::http::{DEFAULT_MAX_SET_COOKIE_BYTES, HttpCookie};

/// Most cookies kept per cookie domain: 50 (the RFC 6265 §6.1 minimum). Beyond it the jar drops
/// that domain's expired cookies, then its oldest.
pub const DEFAULT_MAX_COOKIES_PER_DOMAIN: usize = 50;

/// Most cookies kept in a jar: 3000 (the RFC 6265 §6.1 minimum). Beyond it the jar drops expired
/// cookies, then the oldest of the site holding the most (see [`HttpCookieJar`]).
pub const DEFAULT_MAX_COOKIES: usize = 3000;

/// Why [`HttpCookieJar::with_public_suffix_list`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSuffixListError(String);

impl fmt::Display for PublicSuffixListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid public suffix list: {}", self.0)
    }
}

impl std::error::Error for PublicSuffixListError {}

/// The cookies a session keeps between requests (KDNetwork `HttpCookieJar`).
///
/// The RFC 6265 storage and matching rules (domain and host-only matching, default path, path
/// matching, Max-Age over Expires, expiry) come from [`cookie_store::CookieStore`]. kdnet adds
/// what a client library needs on top of it:
///
/// - Secure cookies are only accepted from and only sent to secure contexts: `https` URLs, and
///   plain `http` to a loopback host (`localhost` and names under it, 127.0.0.0/8, `::1`), which
///   browsers, curl and `cookie_store` treat as secure too: traffic to them never leaves the
///   machine (kdnet resolves `localhost` names itself), and a development server over plain
///   http gets its Secure and `__Host-` cookies back.
/// - A plain-`http` response from elsewhere cannot overwrite or shadow a Secure cookie (RFC
///   6265bis §5.7).
/// - `__Secure-` and `__Host-` name prefixes are enforced (RFC 6265bis §4.1.3).
/// - A `Domain` attribute (the last with a value) that is not ASCII makes the cookie ignored
///   (RFC 6265bis §5.7 step 8, as Chromium and Firefox do): servers write internationalised
///   domains as A-labels (`xn--…`), and IDNA would map some characters to nothing
///   (`Domain=\u{200B}` would have become no `Domain` at all).
/// - A `Domain` attribute with a single label (`Domain=com`) is refused unless it names the
///   request host itself, in which case the cookie becomes host-only. No public suffix list is
///   bundled, so multi-label public suffixes (`co.uk`, `github.io`) are only refused after
///   [`HttpCookieJar::with_public_suffix_list`] was given the list.
/// - A `Set-Cookie` value with a control character other than tab anywhere, attributes
///   included, is ignored (RFC 6265bis §5.6, as browsers do), and so is a name or value with
///   one given through the API (it could not be sent back).
/// - A `Set-Cookie` value holding U+FFFD is ignored, logged at `DEBUG`: the client reads a
///   field received as bytes that are not UTF-8 (a Latin-1 value, say) with U+FFFD for each
///   invalid sequence, and cookies are held as text, so the cookie could not go back as the
///   server set it (browsers and curl keep the bytes; the response still shows the field). A
///   U+FFFD the server sent as UTF-8 cannot be told apart and goes the same way.
/// - `Set-Cookie: token` (no `=`) is a nameless cookie with the value `token`, sent back as
///   `Cookie: token` (RFC 6265bis §5.6, §5.8.3, as browsers do); `=token` is the same cookie.
///   One with neither name nor value is ignored, and so is a nameless one whose value starts
///   with `__Host-` or `__Secure-` (§5.7). A server's `=a=b` is kept and goes back as `a=b`, as
///   in browsers; through the API a nameless cookie's value may not contain `=`.
/// - A cookie given through the API ([`insert_cookie`](Self::insert_cookie),
///   [`update_cookie`](Self::update_cookie)) is also refused when a server would read its
///   `Cookie` field as another cookie: a name with `=` or `;`, a value with `;`, a space or tab
///   at either end of the name or value (RFC 6265 §5.2 drops them, so `" a"` would be read as
///   `a`). Other characters RFC 6265 §4.1.1 does not let a server send (white space inside, `"`,
///   `,`, `\`, non-ASCII) are kept and sent as they are, as browsers do: they are read back the
///   same, and the jar keeps them from `Set-Cookie` too.
/// - Memory is bounded: a `Set-Cookie` value longer than [`DEFAULT_MAX_SET_COOKIE_BYTES`] is
///   ignored, and so is a cookie whose name and value are together longer than
///   [`MAX_NAME_VALUE_BYTES`](crate::network::http::MAX_NAME_VALUE_BYTES) (4,096 bytes,
///   RFC 6265bis §5.6, as browsers do), as is an attribute whose value is longer than 1,024
///   bytes (the cookie is read as if it were not there); beyond [`DEFAULT_MAX_COOKIES_PER_DOMAIN`] per domain
///   or [`DEFAULT_MAX_COOKIES`] in all, expired cookies are evicted (RFC 6265 §6.1), then the
///   domain's oldest cookie, or in all the oldest cookie of the largest group: one site
///   cannot push another's cookies out by setting them from many subdomains (the per-domain
///   limit counts each host on its own). A site is taken to be the last two labels of the
///   domain (`example.com`; an IP address or a single label is a group of its own), with or
///   without a public suffix list (the list decides which `Domain` attributes are refused, not
///   the grouping); the group with the most cookies is split by the next label (a domain's
///   own cookies are one part, each subdomain's another) and the largest part taken, until one
///   domain is left, so a group such as `co.uk`, which holds many sites, gives from its largest
///   site. Of groups with as many cookies, the one holding the oldest gives. Such a group is
///   weighed as one against other sites, though: one site with more cookies than all of
///   `co.uk`'s sites together takes from them until the two are level.
///
///   Eviction looks at every domain the jar holds (a few milliseconds for a full jar of
///   3,000 cookies); lowering the limit by thousands at once takes longer (about a second to
///   empty a full jar of one site's 3,000 subdomains).
/// - A server keeps a cookie for 400 days at most: a later `Expires` or a longer `Max-Age` is
///   cut to 400 days from when the response was read (RFC 6265bis §5.6.1, §5.6.2, as browsers
///   do). A cookie given through the API keeps the expiry the caller gave.
/// - The `Cookie` header lists longer paths first, then older cookies first (RFC 6265 §5.4), so
///   the order is deterministic. A cookie that replaces an unexpired one keeps its creation
///   time; one stored where an expired cookie was is a new cookie.
///
/// The jar is `Send`; share it through the session's handle rather than cloning it (a clone is
/// an independent copy).
///
/// ```
/// use kdnet::network::http::HttpCookieJar;
/// use url::Url;
///
/// let mut jar = HttpCookieJar::new();
/// let login = Url::parse("https://shop.example.com/login").unwrap();
/// jar.store_response_cookies(
///     &login,
///     ["session=abc; Path=/; Secure", "lang=en; Domain=example.com"],
/// );
///
/// let cart = Url::parse("https://shop.example.com/cart").unwrap();
/// assert_eq!(jar.cookie_header_for_url(&cart).as_deref(), Some("session=abc; lang=en"));
/// let blog = Url::parse("http://blog.example.com/").unwrap();
/// assert_eq!(jar.cookie_header_for_url(&blog).as_deref(), Some("lang=en"));
/// assert_eq!(jar.len(), 2);
/// ```
#[derive(Clone)]
pub struct HttpCookieJar {
    store: CookieStore,
    order: CreationOrder,
    max_cookies: usize,
    max_cookies_per_domain: usize,
    max_set_cookie_bytes: usize,
}

impl Default for HttpCookieJar {
    fn default() -> Self {
        HttpCookieJar::new()
    }
}

impl HttpCookieJar {
    /// An empty jar with the default limits and no public suffix list.
    pub fn new() -> Self {
        HttpCookieJar {
            store: CookieStore::new(),
            order: CreationOrder::default(),
            max_cookies: DEFAULT_MAX_COOKIES,
            max_cookies_per_domain: DEFAULT_MAX_COOKIES_PER_DOMAIN,
            max_set_cookie_bytes: DEFAULT_MAX_SET_COOKIE_BYTES,
        }
    }

    /// Enables public-suffix rejection (RFC 6265 §5.3 step 5) with a list in the
    /// `public_suffix_list.dat` format from <https://publicsuffix.org/list/>: a cookie whose
    /// `Domain` is a listed suffix is refused unless that suffix is the request host itself.
    ///
    /// ```
    /// use kdnet::network::http::HttpCookieJar;
    /// use url::Url;
    ///
    /// let list = "// ===BEGIN ICANN DOMAINS===\nuk\nco.uk\n// ===END ICANN DOMAINS===\n";
    /// let mut jar = HttpCookieJar::new().with_public_suffix_list(list).unwrap();
    /// let url = Url::parse("https://shop.example.co.uk/").unwrap();
    /// assert_eq!(jar.store_response_cookies(&url, ["all=1; Domain=co.uk"]), 0);
    /// assert_eq!(jar.store_response_cookies(&url, ["mine=1; Domain=example.co.uk"]), 1);
    /// ```
    pub fn with_public_suffix_list(mut self, list: &str) -> Result<Self, PublicSuffixListError> {
        // The list type is inferred from `with_suffix_list`, so `publicsuffix` need not be a
        // direct dependency.
        match list.parse() {
            Ok(parsed) => {
                self.store = std::mem::take(&mut self.store).with_suffix_list(parsed);
                Ok(self)
            }
            Err(e) => Err(PublicSuffixListError(e.to_string())),
        }
    }

    /// Stores the cookies of the `Set-Cookie` header values of a response from `url`; invalid
    /// or refused ones are skipped (logged at `DEBUG`). Returns how many were stored, updated
    /// or deleted (a cookie with a past expiry deletes its namesake).
    pub fn store_response_cookies<'a>(
        &mut self,
        url: &Url,
        set_cookie_values: impl IntoIterator<Item = &'a str>,
    ) -> usize {
        let mut accepted = 0;
        for value in set_cookie_values {
            if holds_replacement_character(value) {
                debug!(
                    "ignoring Set-Cookie from {}: it holds U+FFFD, which stands for bytes \
                     that are not UTF-8 (it could not go back as the server set it)",
                    LoggedUrl(url)
                );
                continue;
            }
            let Some(cookie) = prepare_set_cookie(value, url, self.max_set_cookie_bytes) else {
                debug!(
                    "ignoring Set-Cookie from {}: invalid or refused",
                    LoggedUrl(url)
                );
                continue;
            };
            if self.shadows_secure_cookie(&cookie, url) {
                debug!(
                    "ignoring Set-Cookie from {}: would overwrite a Secure cookie",
                    LoggedUrl(url)
                );
                continue;
            }
            if self.insert_store_cookie(cookie, url, InsertMode::Upsert) {
                accepted += 1;
            }
        }
        accepted
    }

    /// The value for a `Cookie` request header to `url` (`"a=1; b=2"`), or `None` when no
    /// cookie matches.
    pub fn cookie_header_for_url(&self, url: &Url) -> Option<String> {
        let mut header = String::new();
        for cookie in self.matching(url) {
            if !header.is_empty() {
                header.push_str("; ");
            }
            // A nameless cookie goes as its value alone (RFC 6265bis §5.8.3).
            if !cookie.name().is_empty() {
                header.push_str(cookie.name());
                header.push('=');
            }
            header.push_str(cookie.value());
        }
        (!header.is_empty()).then_some(header)
    }

    /// The unexpired cookies that would be sent to `url`, in `Cookie` header order.
    pub fn cookies_for_url(&self, url: &Url) -> Vec<HttpCookie> {
        self.matching(url)
            .into_iter()
            .map(from_store_cookie)
            .collect()
    }

    /// Every unexpired cookie, oldest first.
    pub fn all_cookies(&self) -> Vec<HttpCookie> {
        let mut cookies: Vec<_> = self
            .store
            .iter_unexpired()
            .map(|c| (self.order.seq_of(c), c))
            .collect();
        cookies.sort_by_key(|(seq, _)| *seq);
        cookies
            .into_iter()
            .map(|(_, c)| from_store_cookie(c))
            .collect()
    }

    /// Adds `cookie` as if received from `url` (an empty `domain` means the host of `url`,
    /// host-only). Returns false, changing nothing, when an unexpired cookie with the same name,
    /// domain and path exists, or when the cookie is invalid for `url` (an empty name with an
    /// empty value, a value with `=` or one starting with `__Host-` or `__Secure-`, control
    /// characters, a name with `=` or `;` or a value with `;`, a space or tab at either end of
    /// the name or value, a domain `url` is not in, a single-label domain, a domain that is not
    /// ASCII: write an internationalised one as its A-label, `xn--…`) or already expired.
    /// Names and values are not trimmed for you: `" a"` is refused rather than stored as `a`,
    /// since reading the cookie back would not give what was put in. The rules
    /// that guard against servers (Secure only from `https`, name prefixes, no shadowing of
    /// Secure cookies) do not apply: the caller is trusted.
    pub fn insert_cookie(&mut self, cookie: HttpCookie, url: &Url) -> bool {
        match to_store_cookie(&cookie, url) {
            Some(c) => self.insert_store_cookie(c, url, InsertMode::New),
            None => false,
        }
    }

    /// Adds `cookie` or replaces the one with the same name, domain and path (an expired
    /// `cookie` deletes it). Returns false, changing nothing, when the cookie is invalid for
    /// `url` (see [`insert_cookie`](Self::insert_cookie)).
    pub fn update_cookie(&mut self, cookie: HttpCookie, url: &Url) -> bool {
        match to_store_cookie(&cookie, url) {
            Some(c) => self.insert_store_cookie(c, url, InsertMode::Upsert),
            None => false,
        }
    }

    /// Removes the cookie with `cookie`'s name, domain and path; returns whether one was there
    /// (an expired cookie is not: like [`len`](Self::len), this counts unexpired ones only).
    pub fn remove_cookie(&mut self, cookie: &HttpCookie) -> bool {
        let domain = domain_key(&cookie.domain);
        let path = if cookie.path.is_empty() {
            "/"
        } else {
            &cookie.path
        };
        let unexpired = self.store.contains(&domain, path, &cookie.name);
        self.remove_key(&domain, path, &cookie.name);
        unexpired
    }

    /// Removes every cookie called `name` stored for `domain` (any path); returns how many
    /// unexpired ones there were.
    pub fn remove_cookies(&mut self, name: &str, domain: &str) -> usize {
        let domain = domain_key(domain);
        let paths: Vec<String> = self
            .order
            .entries_in(&domain)
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.path.clone())
            .collect();
        paths
            .iter()
            .filter(|path| {
                let unexpired = self.store.contains(&domain, path, name);
                self.remove_key(&domain, path, name);
                unexpired
            })
            .count()
    }

    /// Removes every cookie.
    pub fn clear(&mut self) {
        self.store.clear();
        self.order = CreationOrder::default();
    }

    /// Drops expired cookies (they are never sent, but take memory until dropped; the jar also
    /// drops them whenever a limit is reached). Returns how many were dropped.
    pub fn remove_expired_cookies(&mut self) -> usize {
        let expired: Vec<_> = self
            .store
            .iter_any()
            .filter(|c| c.is_expired())
            .filter_map(owned_key)
            .collect();
        expired
            .iter()
            .filter(|(domain, path, name)| self.remove_key(domain, path, name))
            .count()
    }

    /// Number of unexpired cookies.
    pub fn len(&self) -> usize {
        self.store.iter_unexpired().count()
    }

    /// Whether there is no unexpired cookie.
    pub fn is_empty(&self) -> bool {
        self.store.iter_unexpired().next().is_none()
    }

    /// Whether the jar holds no cookie at all, expired ones included.
    pub(crate) fn holds_no_cookie(&self) -> bool {
        self.store.iter_any().next().is_none()
    }

    /// The limit on stored cookies (default [`DEFAULT_MAX_COOKIES`]).
    pub fn max_cookies(&self) -> usize {
        self.max_cookies
    }

    /// Sets the limit on stored cookies; applied at once by evicting expired cookies, then the
    /// oldest of the largest group (see [`HttpCookieJar`]).
    pub fn set_max_cookies(&mut self, max: usize) {
        self.max_cookies = max;
        self.enforce_total_limit();
    }

    /// The limit on cookies per cookie domain (default [`DEFAULT_MAX_COOKIES_PER_DOMAIN`]).
    pub fn max_cookies_per_domain(&self) -> usize {
        self.max_cookies_per_domain
    }

    /// Sets the per-domain limit; applied at once.
    pub fn set_max_cookies_per_domain(&mut self, max: usize) {
        self.max_cookies_per_domain = max;
        let domains: Vec<String> = self.order.by_domain.keys().cloned().collect();
        for domain in domains {
            self.enforce_domain_limit(&domain);
        }
    }

    /// The longest `Set-Cookie` value stored (default [`DEFAULT_MAX_SET_COOKIE_BYTES`]).
    pub fn max_set_cookie_bytes(&self) -> usize {
        self.max_set_cookie_bytes
    }

    /// Sets the longest `Set-Cookie` value stored.
    pub fn set_max_set_cookie_bytes(&mut self, max: usize) {
        self.max_set_cookie_bytes = max;
    }

    /// Unexpired cookies for `url` in `Cookie` header order: longer paths first, then older.
    /// None for a scheme other than `http`/`https`: `cookie_store` alone would match any scheme
    /// for cookies without `HttpOnly`, unlike [`HttpCookie::matches_url`].
    fn matching(&self, url: &Url) -> Vec<&StoreCookie<'static>> {
        // The common case is a jar with nothing in it: the store's matching would still hash
        // the URL's domain a dozen times per request.
        if !matches!(url.scheme(), "http" | "https") || self.holds_no_cookie() {
            return Vec::new();
        }
        let secure_ok = is_secure_context(url);
        // The store treats `http://localhost` and loopback addresses as secure, but not names
        // under `localhost`: match those as the same URL over https (matching looks at neither
        // the scheme nor the port otherwise).
        let as_https;
        let store_url = if secure_ok && url.scheme() == "http" {
            let mut https = url.clone();
            let _ = https.set_scheme("https");
            as_https = https;
            &as_https
        } else {
            url
        };
        let mut cookies: Vec<_> = self
            .store
            .matches(store_url)
            .into_iter()
            .filter(|c| secure_ok || c.secure() != Some(true))
            .map(|c| (path_of(c).len(), self.order.seq_of(c), c))
            .collect();
        cookies.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        cookies.into_iter().map(|(_, _, c)| c).collect()
    }

    fn insert_store_cookie(
        &mut self,
        cookie: StoreCookie<'static>,
        url: &Url,
        mode: InsertMode,
    ) -> bool {
        let Some((domain, path, name)) = owned_key(&cookie) else {
            return false;
        };
        if mode == InsertMode::New && self.store.contains(&domain, &path, &name) {
            return false;
        }
        // An expired cookie is gone (RFC 6265 §5.3): one stored under its key is a new cookie,
        // with a creation time of its own. The store would update it in place, and the
        // creation order would keep the expired one's place.
        if self
            .store
            .get_any(&domain, &path, &name)
            .is_some_and(|old| old.is_expired())
        {
            self.remove_key(&domain, &path, &name);
        }
        match self.store.insert(cookie, url) {
            Ok(StoreAction::Inserted) => {
                self.order.add(&domain, path, name);
                self.enforce_domain_limit(&domain);
                self.enforce_total_limit();
                true
            }
            Ok(StoreAction::UpdatedExisting) => {
                if !self.order.contains(&domain, &path, &name) {
                    self.order.add(&domain, path, name);
                }
                true
            }
            Ok(StoreAction::ExpiredExisting) => {
                self.remove_key(&domain, &path, &name);
                true
            }
            Err(e) => {
                debug!("cookie {name:?} for {domain:?} not stored: {e}");
                false
            }
        }
    }

    /// RFC 6265bis §5.7 step 16: a cookie set from a context that is not secure is ignored when a Secure cookie
    /// of the same name exists whose domain overlaps and whose path covers the new path.
    fn shadows_secure_cookie(&self, cookie: &StoreCookie<'_>, url: &Url) -> bool {
        if is_secure_context(url) {
            return false;
        }
        let Some(new_domain) = cookie.domain.as_cow() else {
            return false;
        };
        let new_path = path_of(cookie);
        self.store.iter_unexpired().any(|old| {
            let Some(old_domain) = old.domain.as_cow() else {
                return false;
            };
            old.secure() == Some(true)
                && old.name() == cookie.name()
                && (labels_match(&new_domain, &old_domain)
                    || labels_match(&old_domain, &new_domain))
                && path_matches(new_path, path_of(old))
        })
    }

    fn remove_key(&mut self, domain: &str, path: &str, name: &str) -> bool {
        let in_order = self.order.remove(domain, path, name);
        self.store.remove(domain, path, name).is_some() || in_order
    }

    fn enforce_domain_limit(&mut self, domain: &str) {
        if self.order.entries_in(domain).len() <= self.max_cookies_per_domain {
            return;
        }
        let expired: Vec<_> = self
            .order
            .entries_in(domain)
            .iter()
            .filter(|e| {
                self.store
                    .get_any(domain, &e.path, &e.name)
                    .is_none_or(|c| c.is_expired())
            })
            .map(|e| (e.path.clone(), e.name.clone()))
            .collect();
        for (path, name) in expired {
            self.remove_key(domain, &path, &name);
        }
        while self.order.entries_in(domain).len() > self.max_cookies_per_domain {
            let Some((path, name)) = self.order.oldest_in(domain) else {
                break;
            };
            debug!("cookie limit for {domain:?} reached: evicting {name:?}");
            self.remove_key(domain, &path, &name);
        }
    }

    fn enforce_total_limit(&mut self) {
        if self.order.total <= self.max_cookies {
            return;
        }
        self.remove_expired_cookies();
        if self.order.total <= self.max_cookies {
            return;
        }
        // The sites are counted once, then kept up to date: lowering the limit a long way
        // evicts thousands of cookies.
        let mut sites = self.order.sites();
        while self.order.total > self.max_cookies {
            let Some(site) = sites
                .iter_mut()
                .filter(|site| site.cookies > 0)
                .max_by(|a, b| a.cookies.cmp(&b.cookies).then(b.oldest.cmp(&a.oldest)))
            else {
                break;
            };
            let Some((domain, path, name)) = self.order.eviction_candidate(&site.domains) else {
                break;
            };
            debug!("cookie jar limit reached: evicting {name:?} of {domain:?}");
            self.remove_key(&domain, &path, &name);
            site.cookies -= 1;
            site.oldest = self.order.oldest_of(&site.domains);
        }
    }
}

impl fmt::Debug for HttpCookieJar {
    /// Lists cookies as `name@domain/path`, without values (they are often credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for c in self.store.iter_any() {
            let domain = c.domain.as_cow().unwrap_or_default();
            list.entry(&format_args!("{}@{}{}", c.name(), domain, path_of(c)));
        }
        list.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertMode {
    /// Fail when the cookie exists.
    New,
    /// Insert or replace.
    Upsert,
}

/// Creation order of the stored cookies, keyed like the store (domain, path, name), because
/// `cookie_store` keeps no creation time and iterates in hash order. Also counts cookies per
/// domain and in total for the limits.
#[derive(Debug, Clone, Default)]
struct CreationOrder {
    by_domain: HashMap<String, Vec<OrderEntry>>,
    total: usize,
    next_seq: u64,
}

/// One site's domains and cookies, for the total limit.
struct Site {
    domains: Vec<String>,
    cookies: usize,
    oldest: u64,
}

#[derive(Debug, Clone)]
struct OrderEntry {
    path: String,
    name: String,
    seq: u64,
}

impl CreationOrder {
    fn add(&mut self, domain: &str, path: String, name: String) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.by_domain
            .entry(domain.to_string())
            .or_default()
            .push(OrderEntry { path, name, seq });
        self.total = self.total.saturating_add(1);
    }

    fn entries_in(&self, domain: &str) -> &[OrderEntry] {
        self.by_domain.get(domain).map_or(&[], Vec::as_slice)
    }

    fn contains(&self, domain: &str, path: &str, name: &str) -> bool {
        self.entries_in(domain)
            .iter()
            .any(|e| e.path == path && e.name == name)
    }

    /// The creation sequence number; cookies not found sort last.
    fn seq_of(&self, cookie: &StoreCookie<'_>) -> u64 {
        let Some(domain) = cookie.domain.as_cow() else {
            return u64::MAX;
        };
        let path = path_of(cookie);
        self.entries_in(&domain)
            .iter()
            .find(|e| e.path == path && e.name == cookie.name())
            .map_or(u64::MAX, |e| e.seq)
    }

    fn remove(&mut self, domain: &str, path: &str, name: &str) -> bool {
        let Some(entries) = self.by_domain.get_mut(domain) else {
            return false;
        };
        let Some(index) = entries
            .iter()
            .position(|e| e.path == path && e.name == name)
        else {
            return false;
        };
        entries.remove(index);
        if entries.is_empty() {
            self.by_domain.remove(domain);
        }
        self.total = self.total.saturating_sub(1);
        true
    }

    /// A domain's entries are in creation order: added at the end, removed in place.
    fn oldest_in(&self, domain: &str) -> Option<(String, String)> {
        self.entries_in(domain)
            .first()
            .map(|e| (e.path.clone(), e.name.clone()))
    }

    /// The domains grouped by site as the total limit sees them: by their last two labels (an
    /// IP address, or a domain with fewer labels, is a group of its own).
    fn sites(&self) -> Vec<Site> {
        let mut sites: HashMap<&str, Site> = HashMap::new();
        for (domain, entries) in &self.by_domain {
            let site = sites.entry(group_of(domain, 2)).or_insert(Site {
                domains: Vec::new(),
                cookies: 0,
                oldest: u64::MAX,
            });
            site.domains.push(domain.clone());
            site.cookies += entries.len();
            site.oldest = site.oldest.min(entries.first().map_or(u64::MAX, |e| e.seq));
        }
        sites.into_values().collect()
    }

    /// The creation sequence number of the oldest cookie of `domains`.
    fn oldest_of(&self, domains: &[String]) -> u64 {
        domains
            .iter()
            .filter_map(|d| self.entries_in(d).first())
            .map(|e| e.seq)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The cookie of `domains` (one site's) the total limit evicts: the oldest of the largest
    /// group. The domains are grouped by their last three labels (a domain with fewer labels
    /// is a group of its own); the group with the most cookies (of equal ones, the one holding
    /// the oldest cookie) is split by one more label, and so on, until the group taken holds
    /// one domain.
    fn eviction_candidate(&self, domains: &[String]) -> Option<(String, String, String)> {
        struct Group<'a> {
            cookies: usize,
            oldest: u64,
            domains: usize,
            domain: &'a str,
        }
        let mut within: Option<&str> = None;
        for labels in 3.. {
            let mut groups: HashMap<&str, Group<'_>> = HashMap::new();
            for domain in domains {
                if within.is_some_and(|parent| !labels_match(domain, parent)) {
                    continue;
                }
                let entries = self.entries_in(domain);
                let Some(oldest) = entries.first().map(|e| e.seq) else {
                    continue;
                };
                let group = groups.entry(group_of(domain, labels)).or_insert(Group {
                    cookies: 0,
                    oldest,
                    domains: 0,
                    domain,
                });
                group.cookies += entries.len();
                group.oldest = group.oldest.min(oldest);
                group.domains += 1;
                group.domain = domain;
            }
            let (key, largest) = groups
                .into_iter()
                .max_by(|(_, a), (_, b)| a.cookies.cmp(&b.cookies).then(b.oldest.cmp(&a.oldest)))?;
            // More labels than the domain has would not split the group any further.
            if largest.domains == 1 || labels > largest.domain.len() {
                let domain = largest.domain;
                let oldest = self.entries_in(domain).first()?;
                return Some((domain.to_string(), oldest.path.clone(), oldest.name.clone()));
            }
            within = Some(key);
        }
        None
    }
}

/// The group [`CreationOrder::eviction_candidate`] puts `domain` in at `labels` labels: its last
/// `labels` labels, or the whole domain when it has no more than that or is an IP address.
fn group_of(domain: &str, labels: usize) -> &str {
    if domain.starts_with('[') || domain.parse::<std::net::Ipv4Addr>().is_ok() {
        return domain;
    }
    match domain.rmatch_indices('.').nth(labels - 1) {
        Some((dot, _)) => &domain[dot + 1..],
        None => domain,
    }
}
