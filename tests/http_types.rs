//! The HTTP value types: KDNetwork's own HttpCookie / HttpCookieJar / HttpRequest / HttpSession
//! tests ported, plus the redirect rules and the cookie-jar rules kdnet adds.
//! (Response helpers are tested in `response.rs`: responses can only be made by the client.)

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kdnet::network::http::{
    AuthType, DEFAULT_MAX_COOKIES, DEFAULT_MAX_COOKIES_PER_DOMAIN, DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_SET_COOKIE_BYTES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_USER_AGENT, HeaderMap,
    HttpCookie, HttpCookieJar, HttpError, HttpMethod, HttpRequest, HttpSession, RedirectAction,
    RedirectPolicy, SameSitePolicy, redirect_action,
};
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn cookie_at(name: &str, value: &str, domain: &str) -> HttpCookie {
    let mut cookie = HttpCookie::new(name, value);
    cookie.domain = domain.to_string();
    cookie
}

fn header_for(jar: &HttpCookieJar, u: &str) -> Option<String> {
    jar.cookie_header_for_url(&url(u))
}

fn names(cookies: &[HttpCookie]) -> Vec<&str> {
    cookies.iter().map(|c| c.name.as_str()).collect()
}

// ==== HttpCookie (KDNetwork tests/http_cookie) =============================================

#[test]
fn cookie_default_is_empty_with_root_path() {
    let cookie = HttpCookie::default();
    assert!(cookie.name.is_empty() && cookie.value.is_empty() && cookie.domain.is_empty());
    assert_eq!(cookie.path, "/");
    assert_eq!(cookie.expiration, None);
    assert!(!cookie.secure && !cookie.http_only && !cookie.host_only);
    assert_eq!(cookie.same_site, SameSitePolicy::None);
    assert!(cookie.is_session_cookie());
    assert!(!cookie.is_expired());
}

#[test]
fn cookie_fields_can_be_set() {
    let mut cookie = HttpCookie::new("name", "value");
    cookie.domain = "example.com".into();
    cookie.path = "/test".into();
    let later = SystemTime::now() + Duration::from_secs(3600);
    cookie.expiration = Some(later);
    cookie.secure = true;
    cookie.http_only = true;
    cookie.same_site = SameSitePolicy::Lax;
    assert_eq!(
        (cookie.name.as_str(), cookie.value.as_str()),
        ("name", "value")
    );
    assert_eq!(
        (cookie.domain.as_str(), cookie.path.as_str()),
        ("example.com", "/test")
    );
    assert_eq!(cookie.expiration, Some(later));
    assert!(!cookie.is_session_cookie());
    assert!(cookie.secure && cookie.http_only);
    assert_eq!(cookie.same_site, SameSitePolicy::Lax);
}

#[test]
fn parse_simple_set_cookie_takes_domain_and_default_path_from_the_url() {
    let cookie =
        HttpCookie::from_set_cookie_header("name=value", &url("https://example.com/path")).unwrap();
    assert_eq!(cookie.name, "name");
    assert_eq!(cookie.value, "value");
    assert_eq!(cookie.domain, "example.com");
    assert!(cookie.host_only);
    assert_eq!(cookie.path, "/");
    assert!(cookie.is_session_cookie());
    assert!(!cookie.secure && !cookie.http_only);
}

#[test]
fn parse_set_cookie_with_every_attribute() {
    let cookie = HttpCookie::from_set_cookie_header(
        "name=value; Domain=.example.com; Path=/test; Secure; HttpOnly; SameSite=Strict",
        &url("https://example.com/test"),
    )
    .unwrap();
    assert_eq!(cookie.domain, "example.com", "leading dot stripped");
    assert!(!cookie.host_only);
    assert_eq!(cookie.path, "/test");
    assert!(cookie.secure && cookie.http_only);
    assert_eq!(cookie.same_site, SameSitePolicy::Strict);
}

/// RFC 6265bis §5.6 (RFC 6265 ignored such a string; KDNetwork too): without `=`, the pair is
/// the value of a nameless cookie, as browsers read it; `=value` is the same. Neither a name
/// nor a value: ignored.
#[test]
fn parse_reads_a_pair_without_equals_as_a_nameless_cookie() {
    let u = url("https://example.com/");
    let nameless = |text: &str| {
        HttpCookie::from_set_cookie_header(text, &u)
            .map(|c| (c.name.clone(), c.value.clone(), c.to_cookie_header()))
    };
    let token = Some((String::new(), "token".to_string(), "token".to_string()));
    assert_eq!(nameless("token"), token);
    assert_eq!(nameless(" token ; Path=/"), token);
    assert_eq!(nameless("=token"), token);
    assert_eq!(nameless(""), None);
    assert_eq!(nameless(" = ; Secure"), None);
    assert!(HttpCookie::from_set_cookie_header("empty=", &u).is_some());
}

#[test]
fn parse_max_age_sets_an_expiry_time() {
    let before = SystemTime::now();
    let cookie = HttpCookie::from_set_cookie_header(
        "name=value; Max-Age=3600",
        &url("https://example.com/"),
    )
    .unwrap();
    let expiry = cookie.expiration.expect("Max-Age gives an expiry");
    let lifetime = expiry.duration_since(before).unwrap();
    assert!((3595..=3605).contains(&lifetime.as_secs()), "{lifetime:?}");
    assert!(!cookie.is_session_cookie() && !cookie.is_expired());
}

#[test]
fn parse_expires_and_max_age_precedence() {
    let u = url("https://example.com/");
    let by_date =
        HttpCookie::from_set_cookie_header("a=1; Expires=Wed, 21 Oct 2009 07:28:00 GMT", &u)
            .unwrap();
    let year_2009 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_256_110_080);
    assert_eq!(by_date.expiration, Some(year_2009));
    let both = HttpCookie::from_set_cookie_header(
        "a=1; Expires=Wed, 21 Oct 2009 07:28:00 GMT; Max-Age=60",
        &u,
    )
    .unwrap();
    let remaining = both
        .expiration
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        remaining <= Duration::from_secs(60),
        "Max-Age wins over Expires"
    );
}

#[test]
fn parse_same_site_values() {
    let u = url("https://example.com/");
    let same_site = |attr: &str| {
        HttpCookie::from_set_cookie_header(&format!("a=b; SameSite={attr}"), &u)
            .unwrap()
            .same_site
    };
    assert_eq!(same_site("Lax"), SameSitePolicy::Lax);
    assert_eq!(same_site("strict"), SameSitePolicy::Strict);
    assert_eq!(same_site("None"), SameSitePolicy::None);
    assert_eq!(same_site("invalid"), SameSitePolicy::None);
    assert_eq!(
        SameSitePolicy::from_attribute("STRICT"),
        SameSitePolicy::Strict
    );
    assert_eq!(SameSitePolicy::Lax.as_str(), "Lax");
}

#[test]
fn cookie_domain_matching() {
    let cookie = cookie_at("a", "b", "example.com");
    assert!(cookie.matches_url(&url("http://example.com/")));
    assert!(cookie.matches_url(&url("http://sub.example.com/")));
    assert!(cookie.matches_url(&url("http://deep.sub.example.com/x")));
    assert!(!cookie.matches_url(&url("http://other.com/")));
    assert!(!cookie.matches_url(&url("http://badexample.com/")));
    assert!(!cookie.matches_url(&url("http://example.com.evil.org/")));

    let mut host_only = cookie_at("a", "b", "example.com");
    host_only.host_only = true;
    assert!(host_only.matches_url(&url("http://example.com/")));
    assert!(!host_only.matches_url(&url("http://sub.example.com/")));

    assert!(!HttpCookie::new("no", "domain").matches_url(&url("http://example.com/")));
}

#[test]
fn cookie_path_matching() {
    let mut cookie = cookie_at("a", "b", "example.com");
    cookie.path = "/test".into();
    assert!(cookie.matches_url(&url("http://example.com/test")));
    assert!(cookie.matches_url(&url("http://example.com/test/subpath")));
    assert!(!cookie.matches_url(&url("http://example.com/other")));
    assert!(!cookie.matches_url(&url("http://example.com/")));
    assert!(!cookie.matches_url(&url("http://example.com/testing")));
}

#[test]
fn secure_cookie_matches_only_https() {
    let mut cookie = cookie_at("a", "b", "example.com");
    cookie.secure = true;
    assert!(cookie.matches_url(&url("https://example.com/")));
    assert!(!cookie.matches_url(&url("http://example.com/")));
    assert!(!cookie.matches_url(&url("ws://example.com/")));
}

#[test]
fn cookie_header_is_name_equals_value() {
    assert_eq!(
        HttpCookie::new("name", "value").to_cookie_header(),
        "name=value"
    );
    assert_eq!(
        HttpCookie::new("q", "\"x y\"").to_cookie_header(),
        "q=\"x y\""
    );
}

#[test]
fn expired_and_future_cookies() {
    let mut cookie = HttpCookie::new("a", "b");
    cookie.expiration = Some(SystemTime::now() - Duration::from_secs(1));
    assert!(cookie.is_expired());
    cookie.expiration = Some(SystemTime::now() + Duration::from_secs(3600));
    assert!(!cookie.is_expired());
}

// ==== HttpCookieJar (KDNetwork tests/http_cookie_jar) ======================================

#[test]
fn new_jar_is_empty() {
    let jar = HttpCookieJar::new();
    assert!(jar.is_empty());
    assert_eq!(jar.len(), 0);
    assert!(jar.all_cookies().is_empty());
    assert_eq!(header_for(&jar, "https://example.com/"), None);
}

#[test]
fn insert_and_retrieve() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert!(jar.insert_cookie(cookie_at("name", "value", "example.com"), &u));
    assert_eq!(jar.len(), 1);
    let all = jar.all_cookies();
    assert_eq!(all[0].name, "name");
    assert_eq!(all[0].value, "value");
    assert_eq!(all[0].domain, "example.com");
    assert_eq!(all[0].path, "/");
    assert_eq!(jar.cookies_for_url(&u), all);
}

#[test]
fn duplicate_insert_is_rejected_and_changes_nothing() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert!(jar.insert_cookie(cookie_at("name", "first", "example.com"), &u));
    assert!(!jar.insert_cookie(cookie_at("name", "second", "example.com"), &u));
    assert!(!jar.insert_cookie(cookie_at("name", "third", ".EXAMPLE.com"), &u));
    assert_eq!(jar.len(), 1);
    assert_eq!(jar.all_cookies()[0].value, "first");
    let mut other_path = cookie_at("name", "other", "example.com");
    other_path.path = "/sub".into();
    assert!(
        jar.insert_cookie(other_path, &u),
        "another path is another cookie"
    );
}

#[test]
fn update_replaces_or_inserts() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert!(jar.update_cookie(cookie_at("name", "one", "example.com"), &u));
    assert!(jar.update_cookie(cookie_at("name", "two", "example.com"), &u));
    assert_eq!(jar.len(), 1);
    assert_eq!(jar.all_cookies()[0].value, "two");
}

#[test]
fn update_with_an_expired_cookie_deletes() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.update_cookie(cookie_at("name", "one", "example.com"), &u);
    let mut expired = cookie_at("name", "", "example.com");
    expired.expiration = Some(SystemTime::UNIX_EPOCH);
    assert!(jar.update_cookie(expired.clone(), &u));
    assert!(jar.is_empty());
    assert!(
        !jar.insert_cookie(expired, &u),
        "expired cookies are not stored"
    );
}

#[test]
fn remove_and_remove_missing() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    let cookie = cookie_at("name", "value", "example.com");
    jar.insert_cookie(cookie.clone(), &u);
    assert!(jar.remove_cookie(&cookie));
    assert!(jar.is_empty());
    assert!(!jar.remove_cookie(&cookie));
    assert!(!jar.remove_cookie(&cookie_at("nope", "", "example.com")));
}

#[test]
fn remove_cookies_by_name_and_domain() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/a/b");
    jar.store_response_cookies(&u, ["n=1; Path=/", "n=2; Path=/a", "m=3; Path=/"]);
    jar.store_response_cookies(&url("https://other.com/"), ["n=4"]);
    assert_eq!(jar.remove_cookies("n", "example.com"), 2);
    assert_eq!(names(&jar.all_cookies()), ["m", "n"]);
    assert_eq!(jar.all_cookies()[1].domain, "other.com");
}

#[test]
fn clear_removes_everything() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["a=1", "b=2"]);
    assert_eq!(jar.len(), 2);
    jar.clear();
    assert!(jar.is_empty());
    assert_eq!(header_for(&jar, "https://example.com/"), None);
    assert!(jar.insert_cookie(cookie_at("a", "1", "example.com"), &u));
}

#[test]
fn domain_cookie_matches_subdomains() {
    let mut jar = HttpCookieJar::new();
    assert!(jar.insert_cookie(
        cookie_at("a", "1", "example.com"),
        &url("https://example.com/")
    ));
    assert_eq!(
        header_for(&jar, "https://subdomain.example.com/").as_deref(),
        Some("a=1")
    );
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("a=1")
    );
    assert_eq!(header_for(&jar, "https://example.org/"), None);
}

#[test]
fn leading_dot_domain_matches_two_levels_down() {
    let mut jar = HttpCookieJar::new();
    assert!(jar.insert_cookie(
        cookie_at("a", "1", ".example.org"),
        &url("https://www.example.org/")
    ));
    assert_eq!(
        header_for(&jar, "https://a.b.example.org/").as_deref(),
        Some("a=1")
    );
    assert_eq!(
        header_for(&jar, "https://example.org/").as_deref(),
        Some("a=1")
    );
}

#[test]
fn jar_path_matching() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    let mut at = |name: &str, path: &str| {
        let mut cookie = cookie_at(name, "v", "example.com");
        cookie.path = path.into();
        assert!(jar.insert_cookie(cookie, &u));
    };
    at("root", "/");
    at("docs", "/docs");
    at("deep", "/docs/api/");
    let sent = |path: &str| {
        names(&jar.cookies_for_url(&url(&format!("https://example.com{path}")))).join(",")
    };
    assert_eq!(sent("/"), "root");
    assert_eq!(sent("/docs"), "docs,root");
    assert_eq!(sent("/docs/api/v1"), "deep,docs,root");
    assert_eq!(sent("/docs/api"), "docs,root");
    assert_eq!(sent("/documents"), "root");
    assert_eq!(sent("/other"), "root");
}

#[test]
fn https_gets_secure_and_plain_cookies_http_only_plain() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["plain=1", "safe=2; Secure"]);
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("plain=1; safe=2")
    );
    assert_eq!(
        header_for(&jar, "http://example.com/").as_deref(),
        Some("plain=1")
    );
}

#[test]
fn expired_cookies_are_filtered_and_purged() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["live=1; Max-Age=3600", "soon=2; Max-Age=1"]);
    assert_eq!(jar.len(), 2);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(jar.len(), 1);
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("live=1")
    );
    assert_eq!(names(&jar.all_cookies()), ["live"]);
    assert_eq!(jar.remove_expired_cookies(), 1);
    assert_eq!(jar.remove_expired_cookies(), 0);
    assert_eq!(jar.len(), 1);
}

#[test]
fn parse_single_multiple_update_and_invalid_set_cookie_values() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert_eq!(jar.store_response_cookies(&u, ["single=1"]), 1);
    assert_eq!(jar.store_response_cookies(&u, ["a=1", "b=2; Path=/"]), 2);
    assert_eq!(jar.store_response_cookies(&u, ["a=updated"]), 1);
    // Without `=`: a nameless cookie (RFC 6265bis), which `=value` replaces; neither name nor
    // value: ignored.
    assert_eq!(
        jar.store_response_cookies(&u, ["nameless", "=", " ; Path=/", "=novalue", "ok=1"]),
        3
    );
    assert_eq!(jar.len(), 5);
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("single=1; a=updated; b=2; novalue; ok=1")
    );
}

#[test]
fn cookie_header_for_matching_other_and_non_matching_domains() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("https://example.com/"), ["a=1; Domain=example.com"]);
    jar.store_response_cookies(&url("https://other.org/"), ["b=2"]);
    assert_eq!(
        header_for(&jar, "https://www.example.com/").as_deref(),
        Some("a=1")
    );
    assert_eq!(
        header_for(&jar, "https://other.org/").as_deref(),
        Some("b=2")
    );
    assert_eq!(header_for(&jar, "https://nothing.net/"), None);
}

// ==== cookie jar rules kdnet adds ==========================================================

#[test]
fn host_only_cookie_is_not_sent_to_subdomains() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(
        &url("https://example.com/"),
        ["host=1", "wide=2; Domain=example.com"],
    );
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("host=1; wide=2")
    );
    assert_eq!(
        header_for(&jar, "https://www.example.com/").as_deref(),
        Some("wide=2")
    );
    let host = jar
        .all_cookies()
        .into_iter()
        .find(|c| c.name == "host")
        .unwrap();
    assert!(host.host_only);
}

#[test]
fn domain_attribute_must_cover_the_request_host() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://www.example.com/");
    assert_eq!(jar.store_response_cookies(&u, ["a=1; Domain=other.com"]), 0);
    assert_eq!(
        jar.store_response_cookies(&u, ["a=1; Domain=sub.www.example.com"]),
        0
    );
    assert_eq!(
        jar.store_response_cookies(&u, ["a=1; Domain=example.com"]),
        1
    );
}

#[test]
fn default_path_is_the_directory_of_the_request_path() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("https://example.com/a/b/page"), ["d=1"]);
    assert_eq!(jar.all_cookies()[0].path, "/a/b");
    assert_eq!(
        header_for(&jar, "https://example.com/a/b/other").as_deref(),
        Some("d=1")
    );
    assert_eq!(header_for(&jar, "https://example.com/a/"), None);
}

#[test]
fn secure_cookie_from_plain_http_is_refused() {
    let mut jar = HttpCookieJar::new();
    assert_eq!(
        jar.store_response_cookies(&url("http://example.com/"), ["s=1; Secure"]),
        0
    );
    assert!(
        HttpCookie::from_set_cookie_header("s=1; Secure", &url("http://example.com/")).is_none()
    );
    assert!(jar.is_empty());
}

/// Plain http to a loopback host is a secure context for cookies, as in browsers: Secure
/// cookies go to and come from `localhost`, names under it, 127.0.0.0/8 and `::1`, and nowhere
/// else over plain http.
#[test]
fn loopback_http_is_treated_as_secure() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("https://localhost/"), ["s=1; Secure", "p=2"]);
    jar.store_response_cookies(&url("https://127.0.0.1/"), ["s=1; Secure"]);
    assert_eq!(
        jar.store_response_cookies(&url("http://a.localhost./"), ["t=3; Secure"]),
        1
    );
    assert_eq!(
        jar.store_response_cookies(&url("http://[::1]/"), ["u=4; Secure"]),
        1
    );
    assert_eq!(
        header_for(&jar, "http://localhost/").as_deref(),
        Some("s=1; p=2")
    );
    assert_eq!(
        header_for(&jar, "http://127.0.0.1/").as_deref(),
        Some("s=1")
    );
    assert_eq!(
        header_for(&jar, "http://a.localhost./").as_deref(),
        Some("t=3")
    );
    assert_eq!(
        header_for(&jar, "http://[::1]:8080/").as_deref(),
        Some("u=4")
    );
    // 127.0.0.2 is loopback too; a name that merely starts with `localhost` is not.
    assert_eq!(
        jar.store_response_cookies(&url("http://127.0.0.2/"), ["v=5; Secure"]),
        1
    );
    for elsewhere in [
        "http://localhost.example/",
        "http://10.0.0.1/",
        "http://[::2]/",
    ] {
        assert_eq!(
            jar.store_response_cookies(&url(elsewhere), ["w=6; Secure"]),
            0,
            "{elsewhere}"
        );
    }
}

#[test]
fn plain_http_cannot_overwrite_a_secure_cookie() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(
        &url("https://example.com/"),
        ["id=good; Secure; Domain=example.com"],
    );
    let http = url("http://www.example.com/");
    assert_eq!(
        jar.store_response_cookies(&http, ["id=evil; Domain=example.com"]),
        0
    );
    assert_eq!(
        jar.store_response_cookies(&http, ["id=evil"]),
        0,
        "shadowing refused too"
    );
    assert_eq!(jar.store_response_cookies(&http, ["other=fine"]), 1);
    assert_eq!(
        header_for(&jar, "https://www.example.com/").as_deref(),
        Some("id=good; other=fine")
    );
}

#[test]
fn max_age_zero_and_past_expires_delete_the_cookie() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["a=1", "b=2"]);
    assert_eq!(jar.store_response_cookies(&u, ["a=; Max-Age=0"]), 1);
    assert_eq!(
        jar.store_response_cookies(&u, ["b=; Expires=Thu, 01 Jan 1970 00:00:01 GMT"]),
        1
    );
    assert!(jar.is_empty());
    assert_eq!(
        jar.remove_expired_cookies(),
        0,
        "deleted at once, nothing left to purge"
    );
    assert_eq!(jar.store_response_cookies(&u, ["c=1; Max-Age=-5"]), 0);
}

/// RFC 6265 §5.2.2 ignores a `Max-Age` without digits. An empty one (`Max-Age=`) was read as the
/// largest age: a deletion with a past `Expires` kept the cookie (emptied) until the year 9999,
/// and a session cookie became persistent.
#[test]
fn an_empty_max_age_is_ignored() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["a=1"]);
    assert_eq!(
        jar.store_response_cookies(&u, ["a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age="]),
        1
    );
    assert_eq!(header_for(&jar, "https://example.com/"), None, "deleted");
    let session = HttpCookie::from_set_cookie_header("s=1; Max-Age=", &u).unwrap();
    assert!(session.is_session_cookie(), "{:?}", session.expiration);
    // The last valid Max-Age stands.
    let hour = HttpCookie::from_set_cookie_header("h=1; Max-Age=3600; Max-Age= ", &u).unwrap();
    let left = hour
        .expiration
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    let past = HttpCookie::from_set_cookie_header("p=1; Max-Age=-1; Max-Age=", &u).unwrap();
    assert!(past.is_expired());
}

/// `Expires` is read with the lenient cookie-date algorithm of RFC 6265 §5.1.1, as browsers do:
/// a one-digit day or hour (Java's RFC_1123_DATE_TIME writes `Tue, 3 Jun 2009 …`), `UTC` or an
/// offset instead of `GMT`, any letter case. Such dates were ignored: the cookie became a session
/// cookie, and a deletion (`Expires=Thu, 01 Jan 1970 00:00:00 UTC`) kept the cookie.
#[test]
fn expires_dates_are_read_as_rfc_6265_cookie_dates() {
    let u = url("https://example.com/");
    let at = |date: &str| {
        HttpCookie::from_set_cookie_header(&format!("a=1; Expires={date}"), &u)
            .unwrap()
            .expiration
            .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
    };
    // 2009-06-03T11:05:30Z (dates in the past: one more than 400 days ahead is cut to that,
    // RFC 6265bis §5.6.1).
    let expected = Some(1_244_027_130);
    for date in [
        "Tue, 03 Jun 2009 11:05:30 GMT",
        "Tue, 3 Jun 2009 11:05:30 GMT",
        "Tue, 03 Jun 2009 11:05:30 UTC",
        "Tue, 03 Jun 2009 11:05:30 +0000",
        "tue, 03 jun 2009 11:05:30 gmt",
        "Tuesday, 03-June-2009 11:05:30",
        "Tue Jun  3 11:05:30 2009",
        "3 Jun 2009 11:5:30",
    ] {
        assert_eq!(at(date), expected, "{date:?}");
    }
    assert_eq!(at("Thu, 01-Jan-70 00:00:01 GMT"), Some(1));
    assert_eq!(at("Sat, 01 Jan 2000 00:00:00 GMT"), Some(946_684_800));
    assert_eq!(at("Fri, 29 Feb 2008 12:00:00 GMT"), Some(1_204_286_400));
    // Not dates: ignored, so a session cookie.
    for date in [
        "Fri, 30 Feb 2009 11:05:30 GMT",
        "Tue, 03 Jun 2009 24:00:00 GMT",
        "Tue, 03 Jun 1600 11:05:30 GMT",
        "Tue, 32 Jun 2009 11:05:30 GMT",
        "Tue, 03 2009 11:05:30 GMT",
        "Tue, 03 Jun 2009",
        "tomorrow",
    ] {
        assert_eq!(at(date), None, "{date:?}");
    }
    // A deletion in a date format the strict parsers did not know deletes.
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&u, ["gone=1"]);
    assert_eq!(
        jar.store_response_cookies(&u, ["gone=; Expires=Thu, 01 Jan 1970 00:00:00 UTC"]),
        1
    );
    assert!(jar.is_empty());
    // Max-Age still wins over Expires.
    let both = HttpCookie::from_set_cookie_header(
        "b=1; Max-Age=0; Expires=Tue, 3 Jun 2099 11:05:30 GMT",
        &u,
    )
    .unwrap();
    assert!(both.is_expired());
}

#[test]
fn single_label_domains_are_refused_unless_they_are_the_host() {
    let mut jar = HttpCookieJar::new();
    assert_eq!(
        jar.store_response_cookies(&url("https://example.com/"), ["a=1; Domain=com"]),
        0
    );
    assert_eq!(
        jar.store_response_cookies(&url("https://example.com/"), ["a=1; Domain=.com"]),
        0
    );
    assert_eq!(
        jar.store_response_cookies(&url("http://localhost/"), ["l=1; Domain=localhost"]),
        1
    );
    let local = &jar.all_cookies()[0];
    assert!(
        local.host_only,
        "a single-label Domain equal to the host becomes host-only"
    );
    assert!(!jar.insert_cookie(cookie_at("x", "1", "com"), &url("https://example.com/")));
}

#[test]
fn public_suffix_list_refuses_listed_suffixes() {
    let list = "// ===BEGIN ICANN DOMAINS===\nuk\nco.uk\n// ===END ICANN DOMAINS===\n\
                // ===BEGIN PRIVATE DOMAINS===\ngithub.io\n// ===END PRIVATE DOMAINS===\n";
    let mut jar = HttpCookieJar::new().with_public_suffix_list(list).unwrap();
    let shop = url("https://shop.example.co.uk/");
    assert_eq!(jar.store_response_cookies(&shop, ["a=1; Domain=co.uk"]), 0);
    assert_eq!(
        jar.store_response_cookies(&shop, ["b=1; Domain=example.co.uk"]),
        1
    );
    let pages = url("https://me.github.io/");
    assert_eq!(
        jar.store_response_cookies(&pages, ["c=1; Domain=github.io"]),
        0
    );
    assert_eq!(jar.store_response_cookies(&pages, ["d=1"]), 1);
    let err = HttpCookieJar::new()
        .with_public_suffix_list("!bad")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("invalid public suffix list"),
        "{err}"
    );
}

#[test]
fn header_lists_longer_paths_first_then_older_cookies() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/a/b");
    jar.store_response_cookies(&u, ["z=1; Path=/", "y=2; Path=/a", "x=3; Path=/"]);
    jar.store_response_cookies(&u, ["w=4; Path=/a/b"]);
    jar.store_response_cookies(&u, ["z=updated; Path=/"]);
    assert_eq!(
        header_for(&jar, "https://example.com/a/b/c").as_deref(),
        Some("w=4; y=2; z=updated; x=3")
    );
}

#[test]
fn secure_and_host_prefixes_are_enforced() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert_eq!(jar.store_response_cookies(&u, ["__Secure-a=1"]), 0);
    assert_eq!(jar.store_response_cookies(&u, ["__Secure-a=1; Secure"]), 1);
    assert_eq!(
        jar.store_response_cookies(&u, ["__Host-b=1; Secure"]),
        0,
        "needs Path=/"
    );
    assert_eq!(
        jar.store_response_cookies(&u, ["__Host-b=1; Secure; Path=/; Domain=example.com"]),
        0
    );
    assert_eq!(jar.store_response_cookies(&u, ["__host-b=1; Path=/"]), 0);
    assert_eq!(
        jar.store_response_cookies(&u, ["__Host-b=1; Secure; Path=/"]),
        1
    );
}

#[test]
fn control_characters_in_cookies_are_refused() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert_eq!(
        jar.store_response_cookies(&u, ["a=b\u{0}c", "d\u{1}=e", "f=g\u{7f}"]),
        0
    );
    assert_eq!(jar.store_response_cookies(&u, ["tab=a\tb"]), 1);
    assert!(!jar.insert_cookie(cookie_at("x", "a;b", "example.com"), &u));
    // Nameless with `=` in the value: it would go back as the cookie `k`.
    assert!(!jar.insert_cookie(cookie_at("", "k=v", "example.com"), &u));
    assert!(!jar.insert_cookie(cookie_at("x", "line\nbreak", "example.com"), &u));
}

/// A cookie given through the API with white space at either end of its name or value went
/// out as it was (`Cookie:  a=1`, `a= x`), and a server reads the field as RFC 6265 §5.2 does,
/// without spaces and tabs around the name and value: as the cookie `a` with the value `x`,
/// which is not the cookie the jar holds (and `" a"` and `"a"` were two cookies in the jar that
/// the server saw as two `a`s). Such cookies are refused, as control characters are; white
/// space inside a name or value, and other characters RFC 6265 §4.1.1 does not allow a server
/// to send, go out as they are and are read back the same (the jar keeps them from servers too).
#[test]
fn api_cookies_a_server_would_read_as_another_cookie_are_refused() {
    use kdnet::EventLoop;
    use kdnet::network::http::HttpClient;
    use support::{Reply, ScriptServer, ok_response, send, wait};

    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        Reply::Bytes(ok_response(req.header("cookie").unwrap_or("none"), ""))
    });
    let session = HttpSession::new();
    let client = HttpClient::with_session(session.clone()).unwrap();
    let me = server.url("/me");
    let u = url(&me);
    {
        let mut jar = session.cookie_jar().lock();
        for (name, value) in [
            (" a", "1"),
            ("a ", "1"),
            ("\ta", "1"),
            (" ", "1"),
            ("a", " x"),
            ("a", "x\t"),
            ("a", " "),
        ] {
            assert!(
                !jar.insert_cookie(HttpCookie::new(name, value), &u),
                "insert {name:?}={value:?}"
            );
            assert!(
                !jar.update_cookie(HttpCookie::new(name, value), &u),
                "update {name:?}={value:?}"
            );
        }
        assert!(jar.is_empty());
        assert!(jar.insert_cookie(HttpCookie::new("a b", "x y"), &u));
        assert!(jar.insert_cookie(HttpCookie::new("q", "{\"j\":1,\"k\":[2]}"), &u));
        assert!(jar.insert_cookie(HttpCookie::new("nb", "\u{a0}x"), &u));
    }
    let response = wait(&mut ev, &send(&client, HttpRequest::get(&me).unwrap())).unwrap();
    assert_eq!(
        response.text(),
        "a b=x y; q={\"j\":1,\"k\":[2]}; nb=\u{a0}x"
    );
}

/// RFC 6265 §5.2 trims only spaces and tabs off attribute names and values; the `cookie` crate
/// under the jar trimmed all Unicode white space, so `\u{a0}Path=/x` set the path `/x` (a
/// browser ignores the attribute: the cookie gets the default path), `Max-Age\u{2003}=0`
/// deleted a cookie a browser keeps, `Secure\u{a0}` made a cookie from plain http Secure (and
/// so refused), `Domain=\u{a0}127.0.0.1` was the host itself (a browser ignores the cookie: no
/// host matches that domain, unless a later `Domain` decides).
#[test]
fn set_cookie_attributes_are_trimmed_of_spaces_and_tabs_only() {
    use kdnet::EventLoop;
    use kdnet::network::http::HttpClient;
    use support::{Reply, ScriptServer, ok_response, send, wait};

    let mut ev = EventLoop::new().unwrap();
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /p/set") {
            Reply::Bytes(ok_response(
                "set",
                "Set-Cookie: a=1; \u{a0}Path=/x\r\n\
                 Set-Cookie: b=2; Path=\u{a0}/x\r\n\
                 Set-Cookie: c=3; Max-Age\u{2003}=0\r\n\
                 Set-Cookie: d=4; Max-Age=\u{2003}0\r\n\
                 Set-Cookie: e=5; Domain=\u{a0}127.0.0.1\r\n\
                 Set-Cookie: f=6; Secure\u{a0}\r\n\
                 Set-Cookie: g=7; Path=/p\u{a0}\r\n\
                 Set-Cookie: h=8; \u{a0}Path=/x; Path=/p/z; Path=\u{a0}/x\r\n\
                 Set-Cookie: i=9; Path=/x\u{3000}; Path=/p/z \t\r\n\
                 Set-Cookie: j=10; Domain=\u{a0}127.0.0.1; Domain=.\r\n",
            ))
        } else {
            Reply::Bytes(ok_response(req.header("cookie").unwrap_or("none"), ""))
        }
    });
    let session = HttpSession::new();
    let client = HttpClient::with_session(session.clone()).unwrap();
    let set = wait(
        &mut ev,
        &send(&client, HttpRequest::get(&server.url("/p/set")).unwrap()),
    );
    assert_eq!(set.unwrap().text(), "set");
    let sent = wait(
        &mut ev,
        &send(&client, HttpRequest::get(&server.url("/p/z")).unwrap()),
    );
    assert_eq!(
        sent.unwrap().text(),
        "i=9; a=1; b=2; c=3; d=4; f=6; h=8; j=10"
    );

    let jar = session.cookie_jar().lock();
    let all = jar.all_cookies();
    let path_of = |name: &str| all.iter().find(|c| c.name == name).map(|c| c.path.clone());
    assert_eq!(
        path_of("g").as_deref(),
        Some("/p\u{a0}"),
        "kept, never sent"
    );
    assert_eq!(path_of("h").as_deref(), Some("/p"), "the last Path decides");
    assert_eq!(path_of("i").as_deref(), Some("/p/z"));
    assert_eq!(path_of("e"), None);
    let cookie = |name: &str| all.iter().find(|c| c.name == name).unwrap();
    assert!(cookie("c").is_session_cookie() && cookie("d").is_session_cookie());
    assert!(!cookie("f").secure);
}

/// RFC 6265bis §5.6 step 1 (browsers since 2021, web-platform-tests `cookies/*/*-ctl.html`):
/// a `Set-Cookie` string with a control character other than tab anywhere, attributes
/// included, is ignored entirely. The jar looked only at the name and value, so
/// `a=1; Secure\u{1}` stored `a` as a plain cookie (the attribute named `Secure\u{1}` being
/// unknown) and `a=1; Path=/\u{7f}` stored one, where a browser stores nothing.
#[test]
fn a_set_cookie_string_with_a_control_character_anywhere_is_ignored() {
    let u = url("https://example.com/");
    let mut jar = HttpCookieJar::new();
    for text in [
        "a=1; Secure\u{1}",
        "a=1; Path=/\u{7f}",
        "a=1; Max-Age=5\u{0}",
        "a=1; \u{1b}[31m",
        "a=1;\u{b}",
    ] {
        assert_eq!(
            HttpCookie::from_set_cookie_header(text, &u),
            None,
            "{text:?}"
        );
        assert_eq!(jar.store_response_cookies(&u, [text]), 0, "{text:?}");
    }
    assert!(jar.is_empty());
    assert_eq!(jar.store_response_cookies(&u, ["a=1; Path=/\t; Secure"]), 1);
}

#[test]
fn oversized_set_cookie_is_ignored() {
    let mut jar = HttpCookieJar::new();
    assert_eq!(jar.max_set_cookie_bytes(), DEFAULT_MAX_SET_COOKIE_BYTES);
    let u = url("https://example.com/");
    // The field's bound, apart from the cookie's own (name and value at most 4,096 bytes): the
    // padding is an empty attribute, which is ignored.
    let fits = format!("a=1;{}", " ".repeat(DEFAULT_MAX_SET_COOKIE_BYTES - 4));
    let too_long = format!("b=1;{}", " ".repeat(DEFAULT_MAX_SET_COOKIE_BYTES - 3));
    assert_eq!(jar.store_response_cookies(&u, [fits.as_str()]), 1);
    assert_eq!(jar.store_response_cookies(&u, [too_long.as_str()]), 0);
    jar.set_max_set_cookie_bytes(10);
    assert_eq!(jar.store_response_cookies(&u, ["c=123456789"]), 0);
    assert_eq!(
        jar.store_response_cookies(&u, ["d=12345678"]),
        1,
        "exactly at the limit"
    );
}

#[test]
fn per_domain_limit_evicts_the_oldest_cookie() {
    let mut jar = HttpCookieJar::new();
    assert_eq!(jar.max_cookies_per_domain(), DEFAULT_MAX_COOKIES_PER_DOMAIN);
    let u = url("https://example.com/");
    let values: Vec<String> = (0..=DEFAULT_MAX_COOKIES_PER_DOMAIN)
        .map(|i| format!("c{i}=v"))
        .collect();
    jar.store_response_cookies(&u, values.iter().map(String::as_str));
    assert_eq!(jar.len(), DEFAULT_MAX_COOKIES_PER_DOMAIN);
    let all = jar.all_cookies();
    assert_eq!(all[0].name, "c1", "c0 was the oldest");
    jar.store_response_cookies(&url("https://other.com/"), ["o=1"]);
    assert_eq!(
        jar.len(),
        DEFAULT_MAX_COOKIES_PER_DOMAIN + 1,
        "other domains unaffected"
    );
}

#[test]
fn per_domain_limit_evicts_expired_cookies_first() {
    let mut jar = HttpCookieJar::new();
    jar.set_max_cookies_per_domain(2);
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["old=1", "brief=2; Max-Age=1"]);
    std::thread::sleep(Duration::from_millis(1100));
    jar.store_response_cookies(&u, ["new=3"]);
    assert_eq!(names(&jar.all_cookies()), ["old", "new"]);
}

#[test]
fn total_limit_evicts_the_oldest_cookie() {
    let mut jar = HttpCookieJar::new();
    assert_eq!(jar.max_cookies(), DEFAULT_MAX_COOKIES);
    for i in 0..=DEFAULT_MAX_COOKIES {
        let u = url(&format!("https://host{i}.example/"));
        assert_eq!(jar.store_response_cookies(&u, ["c=1"]), 1);
    }
    assert_eq!(jar.len(), DEFAULT_MAX_COOKIES);
    assert_eq!(header_for(&jar, "https://host0.example/"), None);
    assert!(header_for(&jar, "https://host1.example/").is_some());
    jar.set_max_cookies(2);
    assert_eq!(jar.len(), 2);
    assert_eq!(
        names(&jar.all_cookies()).len(),
        2,
        "lowering the limit evicts at once"
    );
    assert!(header_for(&jar, &format!("https://host{DEFAULT_MAX_COOKIES}.example/")).is_some());
}

#[test]
fn jar_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<HttpCookieJar>();
    assert_send::<HttpSession>();
}

#[test]
fn jar_debug_hides_values() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("https://example.com/"), ["token=very-secret"]);
    let debug = format!("{jar:?}");
    assert!(debug.contains("token@example.com/"), "{debug}");
    assert!(!debug.contains("very-secret"), "{debug}");
}

// ==== HttpRequest (KDNetwork tests/http_request) ===========================================

#[test]
fn request_defaults() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    assert_eq!(request.method(), &HttpMethod::Get);
    assert_eq!(request.timeout(), Some(Duration::from_secs(30)));
    assert_eq!(request.timeout(), Some(DEFAULT_REQUEST_TIMEOUT));
    assert_eq!(request.redirect_policy(), RedirectPolicy::FollowAll);
    assert_eq!(request.max_redirects(), 5);
    assert_eq!(request.max_redirects(), DEFAULT_MAX_REDIRECTS);
    assert!(request.auto_add_common_headers());
    assert!(!request.is_streaming());
    assert!(request.body().is_empty());
    assert!(request.headers().is_empty());
    assert_eq!(request.auth_type(), AuthType::None);
}

#[test]
fn request_headers_are_case_insensitive_and_multi_valued() {
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    request.set_header("Content-Type", "text/plain");
    assert!(request.has_header("content-type"));
    assert_eq!(request.header("CONTENT-TYPE"), Some("text/plain"));
    request.set_header("content-type", "application/json");
    assert_eq!(request.header("Content-Type"), Some("application/json"));
    assert_eq!(request.headers().len(), 1, "set replaces");
    request.add_header("Accept", "text/html");
    request.add_header("accept", "application/xml");
    assert_eq!(
        request.header_values("ACCEPT").collect::<Vec<_>>(),
        ["text/html", "application/xml"]
    );
    assert!(request.remove_header("Accept"));
    assert!(!request.has_header("accept"));
    assert!(!request.remove_header("accept"));
    assert_eq!(
        request.headers().iter().collect::<Vec<_>>(),
        [("content-type", "application/json")]
    );
}

#[test]
fn request_body_from_bytes_string_and_vec() {
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    request.set_body(vec![1u8, 2, 3]);
    assert_eq!(request.body().as_ref(), [1, 2, 3]);
    request.set_body(String::from("text body"));
    assert_eq!(request.body().as_ref(), b"text body");
    request.set_body("static");
    assert_eq!(request.body().as_ref(), b"static");
    let shared = Bytes::from_static(b"shared");
    request.set_body(shared.clone());
    assert_eq!(request.body(), &shared);
}

#[test]
fn basic_auth_is_padded_base64() {
    // KDNetwork's hand-written encoder dropped the padding (H5) and its test only checked the
    // "Basic " prefix.
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    request.set_basic_auth("username", "password");
    assert_eq!(
        request.header("Authorization"),
        Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ=")
    );
    assert_eq!(request.auth_type(), AuthType::Basic);
    request.set_basic_auth("Aladdin", "open sesame");
    assert_eq!(
        request.header("authorization"),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
    request.set_basic_auth("a", "");
    assert_eq!(request.header("authorization"), Some("Basic YTo="));
    assert_eq!(request.header_values("authorization").count(), 1);
}

#[test]
fn bearer_auth_header_is_exact() {
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    request.set_bearer_auth("abc.def.ghi");
    assert_eq!(request.header("Authorization"), Some("Bearer abc.def.ghi"));
    assert_eq!(request.auth_type(), AuthType::Bearer);
    request.remove_header("authorization");
    assert_eq!(
        request.auth_type(),
        AuthType::None,
        "derived from the header"
    );
    request.set_header("Authorization", "Digest x");
    assert_eq!(request.auth_type(), AuthType::None);
}

#[test]
fn url_credentials_become_basic_auth_and_leave_the_url() {
    let request = HttpRequest::new("http://Aladdin:open%20sesame@example.com:8080/p?q=1").unwrap();
    assert_eq!(request.url().as_str(), "http://example.com:8080/p?q=1");
    assert_eq!(
        request.header("authorization"),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );

    let user_only = HttpRequest::new("https://bob@example.com/").unwrap();
    assert_eq!(user_only.url().as_str(), "https://example.com/");
    assert_eq!(user_only.header("authorization"), Some("Basic Ym9iOg=="));

    let mut plain = HttpRequest::new("https://example.com/").unwrap();
    assert!(!plain.take_url_credentials());
    plain
        .set_url(url("https://u%3Ax:p%40ss@example.com/"))
        .unwrap();
    assert_eq!(plain.url().as_str(), "https://example.com/");
    // "u:x" is not a valid RFC 7617 user name, but the bytes are passed on as given.
    assert_eq!(plain.header("authorization"), Some("Basic dTp4OnBAc3M="));
}

#[test]
fn invalid_urls_and_schemes_are_refused() {
    for bad in [
        "not a url",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://[::1",
        "ws://x/",
    ] {
        match HttpRequest::new(bad) {
            Err(HttpError::InvalidUrl { url, reason }) => {
                assert_eq!(url, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    assert!(request.set_url(url("mailto:a@example.com")).is_err());
    assert_eq!(
        request.url().as_str(),
        "https://example.com/",
        "unchanged on error"
    );
}

#[test]
fn query_without_path_and_ipv6_hosts_are_kept_apart() {
    // KDNetwork lost the query when the URL had no path and kept IPv6 brackets (H9).
    let request = HttpRequest::new("http://example.com?x=1#frag").unwrap();
    assert_eq!(request.url().path(), "/");
    assert_eq!(request.url().query(), Some("x=1"));
    let v6 = HttpRequest::new("http://[::1]:8080/").unwrap();
    assert_eq!(
        v6.url().host(),
        Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
}

#[test]
fn request_builders() {
    let request = HttpRequest::post("https://example.com/form", "a=1")
        .unwrap()
        .with_header("Content-Type", "application/x-www-form-urlencoded")
        .with_timeout(Duration::from_secs(3))
        .with_redirect_policy(RedirectPolicy::FollowSameHost)
        .with_max_redirects(2)
        .with_streaming(true);
    assert_eq!(request.method(), &HttpMethod::Post);
    assert_eq!(request.body().as_ref(), b"a=1");
    assert_eq!(request.timeout(), Some(Duration::from_secs(3)));
    assert_eq!(request.redirect_policy(), RedirectPolicy::FollowSameHost);
    assert_eq!(request.max_redirects(), 2);
    assert!(request.is_streaming());

    let request = HttpRequest::get("https://example.com/")
        .unwrap()
        .with_method(HttpMethod::Delete)
        .with_body(vec![0u8; 4])
        .with_timeout(None);
    assert_eq!(request.method(), &HttpMethod::Delete);
    assert_eq!(request.body().len(), 4);
    assert_eq!(request.timeout(), None);

    let mut request = request;
    request.set_auto_add_common_headers(false);
    request.set_streaming(false);
    request.set_timeout(Duration::from_millis(1));
    request.set_method("PROPFIND".parse().unwrap());
    assert!(!request.auto_add_common_headers() && !request.is_streaming());
    assert_eq!(request.method().as_str(), "PROPFIND");
}

#[test]
fn validate_catches_what_would_corrupt_the_wire() {
    let ok = HttpRequest::post("https://example.com/", "12345")
        .unwrap()
        .with_header("Content-Length", "5")
        .with_header("X-Tab", "a\tb");
    assert!(ok.validate().is_ok());
    let cases = [
        ok.clone().with_header("X-Evil", "a\r\nInjected: yes"),
        ok.clone().with_header("X-Nul", "a\0b"),
        ok.clone().with_header("Bad Name", "v"),
        ok.clone().with_header("", "v"),
        ok.clone().with_header("Content-Length", "6"),
        ok.clone().with_header("Content-Length", "+5"),
    ];
    for request in cases {
        assert!(
            matches!(request.validate(), Err(HttpError::InvalidRequest(_))),
            "{request:?}"
        );
    }
}

/// `CONNECT` asks a proxy for a tunnel: its target is `host:port` and a 2xx answer turns the
/// connection into raw bytes. kdnet sends origin-form targets and reads a response body, so such
/// a request is refused before anything is sent (it went out as `CONNECT / HTTP/1.1`).
#[test]
fn connect_requests_are_refused_with_the_reason() {
    let request = HttpRequest::get("http://proxy.example:3128/")
        .unwrap()
        .with_method(HttpMethod::Connect);
    match request.validate() {
        Err(HttpError::InvalidRequest(reason)) => assert!(reason.contains("CONNECT"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let trace = HttpRequest::get("http://example.com/")
        .unwrap()
        .with_method(HttpMethod::Trace);
    assert!(trace.validate().is_ok());
}

// ==== HttpSession (KDNetwork tests/http_session) ===========================================

#[test]
fn session_defaults() {
    let session = HttpSession::new();
    assert_eq!(session.user_agent(), Some(DEFAULT_USER_AGENT));
    assert_eq!(
        DEFAULT_USER_AGENT,
        concat!("kdnet/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(session.default_header("accept"), Some("*/*"));
    assert_eq!(session.default_headers().len(), 2);
    assert_eq!(session.connect_timeout(), Duration::from_secs(30));
    assert_eq!(session.idle_connection_timeout(), Duration::from_secs(60));
    assert_eq!(session.max_connections_per_host(), 6);
    assert!(session.follow_redirects());
    assert_eq!(session.max_redirects(), 5);
    assert_eq!(session.read_timeout(), None);
    assert_eq!(session.max_response_head_bytes(), 64 * 1024);
    assert_eq!(session.max_response_headers(), 100);
    assert!(session.verifies_certificates());
    assert!(session.extra_ca_certificates().is_empty());
    assert_eq!(session.client_certificate(), None);
    assert!(session.cookie_jar().lock().is_empty());
}

#[test]
fn session_default_headers_add_replace_remove() {
    let mut session = HttpSession::new();
    session.set_default_header("X-Custom", "one");
    assert_eq!(session.default_header("x-custom"), Some("one"));
    session.set_default_header("x-CUSTOM", "two");
    assert_eq!(session.default_header("X-Custom"), Some("two"));
    assert_eq!(session.default_headers().get_all("x-custom").count(), 1);
    assert!(session.remove_default_header("X-CUSTOM"));
    assert_eq!(session.default_header("x-custom"), None);
    assert!(!session.remove_default_header("x-custom"));
    session.set_user_agent("MyApp/2");
    assert_eq!(session.user_agent(), Some("MyApp/2"));
    assert_eq!(session.default_header("User-Agent"), Some("MyApp/2"));
}

#[test]
fn apply_default_headers_never_overrides_the_request() {
    let mut session = HttpSession::new();
    session.set_default_header("X-Session", "s");
    let mut request = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_header("user-agent", "Custom/1");
    session.apply_default_headers(&mut request);
    assert_eq!(request.header("User-Agent"), Some("Custom/1"));
    assert_eq!(request.header_values("user-agent").count(), 1);
    assert_eq!(request.header("accept"), Some("*/*"));
    assert_eq!(request.header("x-session"), Some("s"));
    session.apply_default_headers(&mut request);
    assert_eq!(request.headers().len(), 3, "applying twice adds nothing");
}

#[test]
fn multi_valued_default_headers_are_applied_whole() {
    let mut session = HttpSession::new();
    session.default_headers_mut().append("X-Multi", "a");
    session.default_headers_mut().append("x-multi", "b");
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    session.apply_default_headers(&mut request);
    assert_eq!(
        request.header_values("x-multi").collect::<Vec<_>>(),
        ["a", "b"]
    );

    let mut has_one = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_header("X-Multi", "mine");
    session.apply_default_headers(&mut has_one);
    assert_eq!(
        has_one.header_values("x-multi").collect::<Vec<_>>(),
        ["mine"]
    );
}

#[test]
fn cookie_jar_replace_and_sharing() {
    let mut session = HttpSession::new();
    let u = url("https://example.com/");
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&u, ["a=1"]);
    session.set_cookie_jar(jar);
    assert_eq!(session.cookie_header_for_url(&u).as_deref(), Some("a=1"));

    let clone = session.clone();
    assert!(clone.cookie_jar().ptr_eq(session.cookie_jar()));
    clone
        .cookie_jar()
        .lock()
        .store_response_cookies(&u, ["b=2"]);
    assert_eq!(
        session.cookie_header_for_url(&u).as_deref(),
        Some("a=1; b=2")
    );

    let mut other = HttpSession::new();
    other.set_cookie_jar(session.cookie_jar().clone());
    assert_eq!(other.cookie_header_for_url(&u).as_deref(), Some("a=1; b=2"));
    other.set_cookie_jar(HttpCookieJar::new());
    assert!(!other.cookie_jar().ptr_eq(session.cookie_jar()));
    assert_eq!(other.cookie_header_for_url(&u), None);
}

#[test]
fn follow_redirects_off_wins_over_the_request_policy() {
    let mut session = HttpSession::new();
    session.set_follow_redirects(false);
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    session.prepare_request(&mut request);
    assert_eq!(request.redirect_policy(), RedirectPolicy::DontFollow);
    assert!(matches!(
        redirect_action(&request, 302, Some("/next"), 0),
        RedirectAction::Return
    ));

    session.set_follow_redirects(true);
    let mut same_host = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_redirect_policy(RedirectPolicy::FollowSameHost);
    session.prepare_request(&mut same_host);
    assert_eq!(same_host.redirect_policy(), RedirectPolicy::FollowSameHost);
}

#[test]
fn explicit_request_redirect_limit_wins_over_the_session() {
    let mut session = HttpSession::new();
    session.set_max_redirects(1);
    let mut implicit = HttpRequest::new("https://example.com/").unwrap();
    session.apply_redirect_settings(&mut implicit);
    assert_eq!(implicit.max_redirects(), 1);
    let mut explicit = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_max_redirects(8);
    session.apply_redirect_settings(&mut explicit);
    assert_eq!(explicit.max_redirects(), 8);
    let mut explicit_default = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_max_redirects(DEFAULT_MAX_REDIRECTS);
    session.apply_redirect_settings(&mut explicit_default);
    assert_eq!(explicit_default.max_redirects(), DEFAULT_MAX_REDIRECTS);
}

#[test]
fn session_timeouts_limits_and_tls_settings() {
    let mut session = HttpSession::new();
    session.set_connect_timeout(Duration::from_secs(2));
    session.set_idle_connection_timeout(Duration::from_secs(9));
    session.set_read_timeout(Duration::from_secs(4));
    session.set_max_connections_per_host(0);
    session.set_max_redirects(7);
    session.set_max_response_head_bytes(1024);
    session.set_max_response_headers(10);
    let pki = support::certs::test_pki();
    // Checked when set: what cannot be used is refused, saying why, and changes nothing.
    let refused = session
        .add_ca_certificate(b"-----BEGIN CERTIFICATE-----".to_vec())
        .unwrap_err();
    assert!(refused.to_string().contains("CERTIFICATE"), "{refused}");
    assert!(
        session
            .set_client_certificate(b"cert".to_vec(), b"key".to_vec())
            .is_err()
    );
    assert!(session.extra_ca_certificates().is_empty());
    assert_eq!(session.client_certificate(), None);
    session.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap();
    session
        .set_client_certificate(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap();
    session.dangerous_disable_certificate_verification();
    assert_eq!(session.connect_timeout(), Duration::from_secs(2));
    assert_eq!(session.idle_connection_timeout(), Duration::from_secs(9));
    assert_eq!(session.read_timeout(), Some(Duration::from_secs(4)));
    assert_eq!(session.max_connections_per_host(), 1, "0 is treated as 1");
    assert_eq!(session.max_redirects(), 7);
    assert_eq!(session.max_response_head_bytes(), 1024);
    assert_eq!(session.max_response_headers(), 10);
    assert_eq!(session.extra_ca_certificates().len(), 1);
    assert_eq!(
        session.client_certificate(),
        Some((
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes()
        ))
    );
    assert!(!session.verifies_certificates());
    session.enable_certificate_verification();
    session.clear_ca_certificates();
    session.clear_client_certificate();
    session.set_read_timeout(None);
    assert!(session.verifies_certificates());
    assert!(session.extra_ca_certificates().is_empty());
    assert_eq!(session.client_certificate(), None);
    assert_eq!(session.read_timeout(), None);
}

#[test]
fn session_debug_hides_credentials_and_keys() {
    let mut session = HttpSession::new();
    session.set_default_header("Authorization", "Bearer top-secret");
    let pki = support::certs::test_pki();
    session
        .set_client_certificate(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap();
    let key_body = pki.server_key_pem.lines().nth(1).unwrap();
    let debug = format!("{session:?}");
    assert!(
        !debug.contains("top-secret") && !debug.contains(key_body),
        "{debug}"
    );
    assert!(debug.contains("User-Agent"), "{debug}");
}

// ==== redirect rules =======================================================================

fn follow(action: RedirectAction) -> HttpRequest {
    match action {
        RedirectAction::Follow(next) => next,
        other => panic!("expected Follow, got {other:?}"),
    }
}

fn post_with_body(u: &str) -> HttpRequest {
    HttpRequest::post(u, "payload")
        .unwrap()
        .with_header("Content-Type", "text/plain")
        .with_header("Content-Length", "7")
        .with_header("X-Keep", "yes")
}

#[test]
fn status_301_and_302_turn_post_into_get_and_drop_the_body() {
    for status in [301, 302] {
        let next = follow(redirect_action(
            &post_with_body("https://example.com/a"),
            status,
            Some("/b"),
            0,
        ));
        assert_eq!(next.method(), &HttpMethod::Get, "{status}");
        assert!(next.body().is_empty());
        assert!(!next.has_header("content-type") && !next.has_header("content-length"));
        assert_eq!(next.header("x-keep"), Some("yes"));
        assert_eq!(next.url().as_str(), "https://example.com/b");
    }
}

#[test]
fn status_301_and_302_keep_other_methods_and_their_bodies() {
    for status in [301, 302] {
        let put = post_with_body("https://example.com/a").with_method(HttpMethod::Put);
        let next = follow(redirect_action(&put, status, Some("/b"), 0));
        assert_eq!(next.method(), &HttpMethod::Put);
        assert_eq!(next.body().as_ref(), b"payload");
        assert_eq!(next.header("content-type"), Some("text/plain"));
    }
}

#[test]
fn status_303_turns_everything_but_head_into_get() {
    for method in [
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Delete,
        HttpMethod::Get,
    ] {
        let request = post_with_body("https://example.com/a").with_method(method.clone());
        let next = follow(redirect_action(&request, 303, Some("/see"), 0));
        assert_eq!(next.method(), &HttpMethod::Get, "{method}");
        assert!(next.body().is_empty(), "{method}");
        assert!(!next.has_header("content-length"), "{method}");
    }
    let head = HttpRequest::new("https://example.com/a")
        .unwrap()
        .with_method(HttpMethod::Head);
    let next = follow(redirect_action(&head, 303, Some("/see"), 0));
    assert_eq!(next.method(), &HttpMethod::Head);
}

#[test]
fn status_307_and_308_keep_method_and_body() {
    for status in [307, 308] {
        let next = follow(redirect_action(
            &post_with_body("https://example.com/a"),
            status,
            Some("/b"),
            0,
        ));
        assert_eq!(next.method(), &HttpMethod::Post, "{status}");
        assert_eq!(next.body().as_ref(), b"payload");
        assert_eq!(next.header("content-type"), Some("text/plain"));
        assert_eq!(next.header("content-length"), Some("7"));
    }
}

#[test]
fn locations_resolve_like_a_browser() {
    let request = HttpRequest::new("https://example.com/dir/page?old=1").unwrap();
    let target = |location: &str| {
        follow(redirect_action(&request, 302, Some(location), 0))
            .url()
            .to_string()
    };
    assert_eq!(target("next"), "https://example.com/dir/next");
    assert_eq!(target("../up"), "https://example.com/up");
    assert_eq!(target("/abs"), "https://example.com/abs");
    assert_eq!(target("//cdn.example.net/x"), "https://cdn.example.net/x");
    assert_eq!(target("?q=2"), "https://example.com/dir/page?q=2");
    assert_eq!(target("http://other.org:8080/y"), "http://other.org:8080/y");
    assert_eq!(target("  /trimmed  "), "https://example.com/trimmed");
    assert_eq!(target("/caf\u{e9}"), "https://example.com/caf%C3%A9");
}

#[test]
fn fragments_are_never_carried_onto_the_request() {
    let request = HttpRequest::new("https://example.com/start#section").unwrap();
    let next = follow(redirect_action(&request, 301, Some("/next#frag"), 0));
    assert_eq!(next.url().as_str(), "https://example.com/next");
    let next = follow(redirect_action(&request, 301, Some("/plain"), 0));
    assert_eq!(next.url().fragment(), None);
}

#[test]
fn redirect_without_location_or_non_redirect_status_is_returned() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    assert!(matches!(
        redirect_action(&request, 302, None, 0),
        RedirectAction::Return
    ));
    assert!(matches!(
        redirect_action(&request, 302, Some("   "), 0),
        RedirectAction::Return
    ));
    for status in [200, 204, 300, 304, 305, 306, 404] {
        assert!(
            matches!(
                redirect_action(&request, status, Some("/x"), 0),
                RedirectAction::Return
            ),
            "{status}"
        );
    }
}

#[test]
fn unusable_locations_are_bad_redirects() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    for location in [
        "ftp://example.com/file",
        "mailto:a@b.c",
        "http://[::1",
        "javascript:alert(1)",
    ] {
        match redirect_action(&request, 302, Some(location), 0) {
            RedirectAction::Error(HttpError::BadRedirect(reason)) => {
                assert!(reason.contains("Location"), "{reason}");
            }
            other => panic!("{location:?}: {other:?}"),
        }
    }
}

/// A refused `Location` is quoted in the error without its user information: a password in it
/// reached `Display`, and so every log of the error.
#[test]
fn a_refused_location_is_quoted_without_its_password() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    for location in [
        "ftp://user:hunter2@example.com/file",
        "http://user:hunter2@[::1/",
    ] {
        match redirect_action(&request, 302, Some(location), 0) {
            RedirectAction::Error(e @ HttpError::BadRedirect(_)) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(
                    shown.contains("example.com") || shown.contains("::1"),
                    "{shown}"
                );
            }
            other => panic!("{location:?}: {other:?}"),
        }
    }
}

#[test]
fn too_many_redirects_is_an_error() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    let _ = follow(redirect_action(&request, 302, Some("/x"), 4));
    match redirect_action(&request, 302, Some("/x"), 5) {
        RedirectAction::Error(HttpError::TooManyRedirects { limit }) => assert_eq!(limit, 5),
        other => panic!("{other:?}"),
    }
    let none_allowed = request.clone().with_max_redirects(0);
    assert!(matches!(
        redirect_action(&none_allowed, 301, Some("/x"), 0),
        RedirectAction::Error(HttpError::TooManyRedirects { limit: 0 })
    ));
    assert!(
        matches!(
            redirect_action(&none_allowed, 200, None, 0),
            RedirectAction::Return
        ),
        "the limit only matters for redirects"
    );
}

#[test]
fn dont_follow_policy_returns_every_redirect() {
    let request = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_redirect_policy(RedirectPolicy::DontFollow);
    assert!(matches!(
        redirect_action(&request, 302, Some("/x"), 0),
        RedirectAction::Return
    ));
    assert!(
        matches!(
            redirect_action(&request, 302, Some("ftp://x/"), 99),
            RedirectAction::Return
        ),
        "no error for a redirect that is not followed"
    );
}

#[test]
fn follow_same_host_policy() {
    let request = HttpRequest::new("http://example.com/")
        .unwrap()
        .with_redirect_policy(RedirectPolicy::FollowSameHost);
    let _ = follow(redirect_action(&request, 302, Some("/x"), 0));
    let _ = follow(redirect_action(
        &request,
        302,
        Some("https://example.com:8443/"),
        0,
    ));
    assert!(matches!(
        redirect_action(&request, 302, Some("http://www.example.com/"), 0),
        RedirectAction::Return
    ));
}

#[test]
fn follow_same_host_and_protocol_policy() {
    let request = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_redirect_policy(RedirectPolicy::FollowSameHostAndProtocol);
    let _ = follow(redirect_action(&request, 307, Some("/x"), 0));
    assert!(matches!(
        redirect_action(&request, 307, Some("http://example.com/x"), 0),
        RedirectAction::Return
    ));
    assert!(matches!(
        redirect_action(&request, 307, Some("https://other.com/x"), 0),
        RedirectAction::Return
    ));
}

#[test]
fn follow_all_policy_follows_other_hosts() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    let next = follow(redirect_action(
        &request,
        302,
        Some("http://elsewhere.org/"),
        0,
    ));
    assert_eq!(next.url().host_str(), Some("elsewhere.org"));
}

fn with_credentials(u: &str) -> HttpRequest {
    let mut request = HttpRequest::new(u)
        .unwrap()
        .with_header("Cookie", "session=1")
        .with_header("Proxy-Authorization", "Basic cHJveHk6cHc=")
        .with_header("WWW-Authenticate", "Basic")
        .with_header("Host", "example.com")
        .with_header("X-Custom", "kept");
    request.set_bearer_auth("token");
    request
}

#[test]
fn cross_origin_hops_drop_credentials() {
    for location in [
        "https://other.com/",        // host change
        "https://example.com:8443/", // port change
        "http://example.com/",       // scheme change
    ] {
        let next = follow(redirect_action(
            &with_credentials("https://example.com/"),
            302,
            Some(location),
            0,
        ));
        for header in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "www-authenticate",
            "host",
        ] {
            assert!(!next.has_header(header), "{location}: {header} kept");
        }
        assert_eq!(next.auth_type(), AuthType::None);
        assert_eq!(next.header("x-custom"), Some("kept"), "{location}");
    }
}

#[test]
fn same_origin_hops_keep_authorization_and_cookie() {
    let next = follow(redirect_action(
        &with_credentials("https://example.com/a"),
        302,
        Some("https://EXAMPLE.com:443/b"),
        0,
    ));
    assert_eq!(next.header("authorization"), Some("Bearer token"));
    assert_eq!(
        next.header("proxy-authorization"),
        Some("Basic cHJveHk6cHc=")
    );
    assert_eq!(next.header("host"), Some("example.com"));
    // The caller's field; the jar's cookies are added per hop only when a request has none.
    assert_eq!(next.header("cookie"), Some("session=1"));
}

#[test]
fn credentials_in_a_location_become_basic_auth() {
    let request = HttpRequest::new("https://example.com/").unwrap();
    let next = follow(redirect_action(
        &request,
        302,
        Some("https://u:p@other.com/x"),
        0,
    ));
    assert_eq!(next.url().as_str(), "https://other.com/x");
    assert_eq!(next.header("authorization"), Some("Basic dTpw"));
}

#[test]
fn following_keeps_the_other_request_options() {
    let request = HttpRequest::new("https://example.com/")
        .unwrap()
        .with_timeout(Duration::from_secs(2))
        .with_max_redirects(3)
        .with_streaming(true);
    let next = follow(redirect_action(&request, 308, Some("/n"), 1));
    assert_eq!(next.timeout(), Some(Duration::from_secs(2)));
    assert_eq!(next.max_redirects(), 3);
    assert!(next.is_streaming());
    assert_eq!(next.redirect_policy(), RedirectPolicy::FollowAll);
}

// ==== peer input never panics ==============================================================

mod arbitrary_peer_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn set_cookie_values_never_panic_and_stay_sendable(
            value in concat!(
                "[ -~\\x00-\\x1f\u{80}-\u{10ffff}]{0,12}=[ -~\u{e9}\\x00\\t]{0,12}",
                "(; ?(Domain|Path|Max-Age|Expires|Secure|HttpOnly|SameSite)(=[ -~]{0,16})?){0,4}",
            ),
            path in "(/[a-z%.]{0,4}){0,3}",
        ) {
            let u = url(&format!("https://www.example.com{path}"));
            let mut jar = HttpCookieJar::new();
            jar.store_response_cookies(&u, [value.as_str()]);
            let _ = HttpCookie::from_set_cookie_header(&value, &u);
            if let Some(header) = jar.cookie_header_for_url(&u) {
                prop_assert!(header.bytes().all(|b| (b >= 0x20 || b == b'\t') && b != 0x7f));
            }
            let _ = jar.all_cookies();
            prop_assert!(jar.len() <= 1);
        }

        #[test]
        fn locations_never_panic_and_never_leave_http(
            location in "(?s).{0,60}",
            status in 300u16..310,
        ) {
            let request = with_credentials("https://example.com/a/b?c#d");
            let action = redirect_action(&request, status, Some(&location), 0);
            if let RedirectAction::Follow(next) = action {
                prop_assert!(matches!(next.url().scheme(), "http" | "https"));
                prop_assert!(next.url().fragment().is_none());
                prop_assert!(next.url().password().is_none());
                // The caller's Cookie goes along only on a same-origin hop.
                let same_origin = next.url().scheme() == "https"
                    && next.url().host_str() == Some("example.com")
                    && next.url().port_or_known_default() == Some(443);
                prop_assert_eq!(next.has_header("cookie"), same_origin);
            }
        }
    }
}

#[test]
fn a_top_level_domain_with_a_trailing_dot_is_not_a_cookie_domain() {
    // `com.` is the single label `com` written as a fully qualified name: a cookie for it would
    // go to every `*.com.` host.
    let mut jar = HttpCookieJar::new();
    let u = url("http://example.com./");
    assert_eq!(jar.store_response_cookies(&u, ["tld=1; Domain=com."]), 0);
    assert_eq!(jar.store_response_cookies(&u, ["tld=2; Domain=.com."]), 0);
    assert_eq!(header_for(&jar, "http://bank.com./"), None);
    assert!(HttpCookie::from_set_cookie_header("tld=1; Domain=com.", &u).is_none());
    // The request host's own fully qualified name stays usable.
    assert_eq!(
        jar.store_response_cookies(&u, ["own=1; Domain=example.com."]),
        1
    );
    assert_eq!(
        header_for(&jar, "http://example.com./").as_deref(),
        Some("own=1")
    );
}

#[test]
fn validate_refuses_a_second_host_field() {
    // RFC 9112 §3.2: a server must answer 400 to more than one Host, and intermediaries that
    // pick different ones route the request to different hosts.
    let mut request = HttpRequest::new("http://example.com/").unwrap();
    request.add_header("Host", "example.com");
    assert!(request.validate().is_ok());
    request.add_header("host", "internal.example");
    assert!(
        matches!(request.validate(), Err(HttpError::InvalidRequest(_))),
        "{request:?}"
    );
}

// Mutation audit (round 5): each test below fails when the check it names is removed.

#[test]
fn a_cookie_without_a_domain_matches_no_url_even_a_fully_qualified_one() {
    // An empty domain "domain-matches" any host ending in a dot as a suffix; matches_url
    // refuses it before looking.
    let cookie = HttpCookie::new("no", "domain");
    assert!(!cookie.matches_url(&url("http://example.com./")));
    assert!(!cookie.matches_url(&url("https://example.com./x")));
}

#[test]
fn set_cookie_from_a_host_with_a_leading_empty_label_is_refused() {
    let mut jar = HttpCookieJar::new();
    let leading_dot = url("http://.example.com/");
    assert_eq!(leading_dot.host_str(), Some(".example.com"));
    assert_eq!(jar.store_response_cookies(&leading_dot, ["a=b"]), 0);
    assert_eq!(
        jar.store_response_cookies(&leading_dot, ["a=b; Domain=example.com"]),
        0
    );
    assert!(HttpCookie::from_set_cookie_header("a=b", &leading_dot).is_none());
    assert!(jar.is_empty());
}

#[test]
fn plain_http_may_set_a_cookie_beside_a_secure_one_on_a_path_it_does_not_cover() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(
        &url("https://example.com/admin/"),
        ["id=good; Secure; Path=/admin"],
    );
    let http = url("http://example.com/");
    // "/" does not path-match "/admin": no shadowing (RFC 6265bis §5.7 step 14).
    assert_eq!(jar.store_response_cookies(&http, ["id=plain; Path=/"]), 1);
    // "/admin/x" path-matches "/admin": refused.
    assert_eq!(
        jar.store_response_cookies(&http, ["id=evil; Path=/admin/x"]),
        0
    );
    assert_eq!(
        header_for(&jar, "https://example.com/admin/x").as_deref(),
        Some("id=good; id=plain")
    );
}

#[test]
fn plain_http_cannot_shadow_a_secure_cookie_of_a_subdomain_with_a_parent_domain_cookie() {
    let mut jar = HttpCookieJar::new();
    // Host-only Secure cookie of www.example.com.
    jar.store_response_cookies(&url("https://www.example.com/"), ["id=good; Secure"]);
    let http = url("http://www.example.com/");
    // The new cookie's domain (example.com) does not domain-match the old one's, but the old
    // one's domain-matches the new one's: still shadowing.
    assert_eq!(
        jar.store_response_cookies(&http, ["id=evil; Domain=example.com"]),
        0
    );
    assert_eq!(
        header_for(&jar, "https://www.example.com/").as_deref(),
        Some("id=good")
    );
}

#[test]
fn remove_cookie_treats_an_empty_path_as_the_root() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    let cookie = cookie_at("name", "value", "example.com");
    assert!(jar.insert_cookie(cookie.clone(), &u));
    let mut no_path = cookie;
    no_path.path = String::new();
    assert!(jar.remove_cookie(&no_path));
    assert!(jar.is_empty());
}

#[test]
fn total_limit_evicts_expired_cookies_first() {
    let mut jar = HttpCookieJar::new();
    jar.set_max_cookies(2);
    jar.store_response_cookies(&url("https://a.example/"), ["old=1"]);
    jar.store_response_cookies(&url("https://b.example/"), ["brief=2; Max-Age=1"]);
    std::thread::sleep(Duration::from_millis(1100));
    jar.store_response_cookies(&url("https://c.example/"), ["new=3"]);
    assert_eq!(
        names(&jar.all_cookies()),
        ["old", "new"],
        "a live cookie was evicted while an expired one was kept"
    );
}

#[test]
fn cookie_date_edge_cases_follow_rfc_6265() {
    let u = url("https://example.com/");
    let at = |date: &str| {
        HttpCookie::from_set_cookie_header(&format!("a=1; Expires={date}"), &u)
            .unwrap()
            .expiration
            .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
    };
    // Two-digit years 0-69 are 20xx: 2025-01-01T00:00:00Z.
    assert_eq!(at("Wed, 01 Jan 25 00:00:00 GMT"), Some(1_735_689_600));
    // '@' is a delimiter; a one-digit hour is a time (2009-06-03T01:05:30Z).
    assert_eq!(at("Tue,@03@Jun@2009 11:05:30 GMT"), Some(1_244_027_130));
    assert_eq!(at("Tue, 03 Jun 2009 1:05:30 GMT"), Some(1_243_991_130));
    // Not dates (RFC 6265 §5.1.1 step 5): a session cookie.
    for date in [
        "Tue, 03 Jun 2009 11:60:30 GMT",
        "Tue, 03 Jun 2009 11:05:60 GMT",
        "Tue, 31 Nov 2009 11:05:30 GMT",
        "Mon, 29 Feb 2100 11:05:30 GMT",
    ] {
        assert_eq!(at(date), None, "{date:?}");
    }
}

#[test]
fn max_age_without_only_digits_is_ignored_and_a_huge_one_saturates() {
    let u = url("https://example.com/");
    let past = "Expires=Thu, 01 Jan 1970 00:00:01 GMT";
    // §5.2.2: a Max-Age with a non-digit is ignored, so the past Expires decides.
    let ignored = HttpCookie::from_set_cookie_header(&format!("a=1; Max-Age=5x; {past}"), &u);
    assert!(ignored.unwrap().is_expired());
    // Too many digits for a u64 is still a very long time, and it wins over Expires.
    let huge = HttpCookie::from_set_cookie_header(
        &format!("a=1; Max-Age=99999999999999999999999; {past}"),
        &u,
    )
    .unwrap();
    assert!(!huge.is_expired());
    assert!(huge.expiration.is_some());
}

#[test]
fn insert_cookie_refuses_names_that_would_break_the_cookie_header() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    assert!(!jar.insert_cookie(cookie_at("a=b", "v", "example.com"), &u));
    assert!(!jar.insert_cookie(cookie_at("a;b", "v", "example.com"), &u));
    assert!(jar.is_empty());
}

#[test]
fn insert_cookie_keeps_host_only_http_only_and_same_site() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    // A host-only cookie must be for the URL's host.
    let mut elsewhere = cookie_at("h", "1", "other.example");
    elsewhere.host_only = true;
    assert!(!jar.insert_cookie(elsewhere, &u));
    let mut cookie = cookie_at("a", "1", "example.com");
    cookie.http_only = true;
    cookie.same_site = SameSitePolicy::Lax;
    assert!(jar.insert_cookie(cookie, &u));
    let stored = jar.all_cookies();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].http_only);
    assert_eq!(stored[0].same_site, SameSitePolicy::Lax);
}

#[test]
fn matches_url_compares_host_only_domains_and_ip_addresses_case_insensitively() {
    let mut cookie = cookie_at("a", "b", "EXAMPLE.com");
    cookie.host_only = true;
    assert!(cookie.matches_url(&url("http://example.com/")));
    let ip = cookie_at("a", "b", "127.0.0.1");
    assert!(ip.matches_url(&url("http://127.0.0.1/")));
    assert!(!ip.matches_url(&url("http://127.0.0.2/")));
}

#[test]
fn cookies_are_never_sent_to_other_schemes() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("http://example.com/"), ["a=1"]);
    assert!(header_for(&jar, "http://example.com/").is_some());
    for other in ["ws://example.com/", "ftp://example.com/", "file:///"] {
        assert_eq!(header_for(&jar, other), None, "{other}");
        assert!(jar.cookies_for_url(&url(other)).is_empty(), "{other}");
    }
}

#[test]
fn remove_by_domain_normalises_the_domain_like_the_store() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["a=1", "b=2", "b=3; Path=/x"]);
    assert!(jar.remove_cookie(&cookie_at("a", "", ".Example.COM")));
    assert_eq!(jar.remove_cookies("b", ".EXAMPLE.com"), 2);
    assert!(jar.is_empty());
}

#[test]
fn a_jar_holding_only_expired_cookies_is_empty() {
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&url("https://example.com/"), ["brief=1; Max-Age=1"]);
    assert!(!jar.is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(jar.is_empty());
    assert_eq!(jar.len(), 0);
}

#[test]
fn lowering_the_per_domain_limit_evicts_at_once() {
    let mut jar = HttpCookieJar::new();
    let u = url("https://example.com/");
    jar.store_response_cookies(&u, ["a=1", "b=2", "c=3"]);
    jar.set_max_cookies_per_domain(1);
    assert_eq!(names(&jar.all_cookies()), ["c"]);
}

#[test]
fn plain_http_may_update_its_own_non_secure_cookie() {
    let mut jar = HttpCookieJar::new();
    let http = url("http://example.com/");
    assert_eq!(jar.store_response_cookies(&http, ["id=1"]), 1);
    assert_eq!(jar.store_response_cookies(&http, ["id=2"]), 1);
    assert_eq!(
        header_for(&jar, "http://example.com/").as_deref(),
        Some("id=2")
    );
}

#[test]
fn a_dropped_body_takes_every_header_describing_it() {
    let request = post_with_body("https://example.com/a")
        .with_header("Content-Encoding", "gzip")
        .with_header("Content-Language", "en")
        .with_header("Content-Location", "/a/1");
    for status in [302, 303] {
        let next = follow(redirect_action(&request, status, Some("/b"), 0));
        for name in [
            "content-type",
            "content-length",
            "content-encoding",
            "content-language",
            "content-location",
        ] {
            assert!(!next.has_header(name), "{status}: {name} kept");
        }
        assert!(next.has_header("x-keep"), "{status}");
    }
}

// ==== public API: no secrets in Debug or Display; errors are std errors ====================

#[test]
fn header_map_debug_hides_every_credential_header() {
    let headers: HeaderMap = [
        ("Authorization", "Bearer secret-1"),
        ("proxy-authorization", "Basic secret-2"),
        ("COOKIE", "sid=secret-3"),
        ("Set-Cookie", "sid=secret-4; HttpOnly"),
        ("set-cookie", "other=secret-5"),
        ("Accept", "text/plain"),
    ]
    .into_iter()
    .collect();
    let debug = format!("{headers:?}");
    assert!(!debug.contains("secret"), "{debug}");
    for name in [
        "Authorization",
        "proxy-authorization",
        "COOKIE",
        "Set-Cookie",
    ] {
        assert!(debug.contains(name), "{name} missing from {debug}");
    }
    assert!(debug.contains("text/plain"), "{debug}");
}

#[test]
fn request_debug_hides_set_cookie_and_basic_auth() {
    let mut request = HttpRequest::new("http://alice:secret-pw@example.com/").unwrap();
    request.add_header("Set-Cookie", "sid=secret-cookie");
    let debug = format!("{request:?}");
    assert!(!debug.contains("secret"), "{debug}");
    // Base64 of "alice:secret-pw" would not contain "secret": look for the header value too.
    assert!(
        !debug.contains(request.header("authorization").unwrap()),
        "{debug}"
    );
}

#[test]
fn cookie_debug_hides_the_value() {
    let mut cookie = HttpCookie::new("session", "very-secret-value");
    cookie.domain = "example.com".into();
    let debug = format!("{cookie:?}");
    assert!(!debug.contains("very-secret-value"), "{debug}");
    assert!(
        debug.contains("session") && debug.contains("example.com"),
        "{debug}"
    );
}

#[test]
fn invalid_url_errors_hide_the_user_information() {
    for bad in [
        "ftp://alice:secret-pw@example.com/",
        "http://alice:secret-pw@exa mple.com/",
        "https://alice:secret-pw@[::1/",
        "http://secret-token@exa mple.com/",
        "http:\\\\alice:secret-pw@exa mple.com/",
        " http://alice:secret-pw@exa mple.com/",
        "HTTP://a:b@c:secret-pw@exa mple.com/x@y",
    ] {
        let error = HttpRequest::new(bad).unwrap_err();
        let (display, debug) = (error.to_string(), format!("{error:?}"));
        assert!(!display.contains("secret"), "{bad:?}: {display}");
        assert!(!debug.contains("secret"), "{bad:?}: {debug}");
        assert!(display.contains("***@"), "{bad:?}: {display}");
        match error {
            HttpError::InvalidUrl { url, .. } => {
                assert!(url.contains("mple.com") || url.contains("[::1"), "{url}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let mut request = HttpRequest::new("https://example.com/").unwrap();
    let error = request
        .set_url(url("ftp://alice:secret-pw@example.com/"))
        .unwrap_err();
    assert_eq!(error.to_string().matches("secret").count(), 0, "{error}");
    assert!(
        error.to_string().contains("ftp://***@example.com/"),
        "{error}"
    );
}

#[test]
fn every_public_error_is_a_thread_safe_std_error() {
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<HttpError>();
    assert_error::<kdnet::network::SocketError>();
    assert_error::<kdnet::network::TlsFailure>();
    assert_error::<kdnet::network::sse::SseError>();
    assert_error::<kdnet::network::sse::SseParseError>();
    assert_error::<kdnet::network::sse::SseWriteError>();
    assert_error::<kdnet::foundation::LoopError>();
    assert_error::<kdnet::network::http::PublicSuffixListError>();
}

#[test]
fn a_tls_failure_is_the_source_of_its_socket_error() {
    use kdnet::network::{SocketError, TlsFailure};
    use std::error::Error as _;
    let error = HttpError::from(SocketError::Tls(TlsFailure::Expired));
    let socket = error.source().expect("transport error has a source");
    let tls = socket
        .source()
        .expect("TLS failure is the socket error's source");
    assert_eq!(tls.to_string(), "certificate has expired");
}

/// A streamed piece's `Debug` gives its length, not its bytes (a body may carry a token), as
/// `HttpResponse`'s does.
#[test]
fn stream_event_debug_gives_the_data_length_not_the_data() {
    let shown = format!(
        "{:?}",
        kdnet::network::http::StreamEvent::Data(b"access_token=s3cr3t")
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("19"), "{shown}");
}

/// RFC 6265 §5.2 step 4 trims only spaces and tabs around a cookie's name and value: other
/// white space (a no-break space, an em space, …) is part of them. The jar trimmed all Unicode
/// white space, so a server's `a=\u{a0}x\u{a0}` came back as `a=x`.
#[test]
fn set_cookie_name_and_value_keep_white_space_other_than_spaces_and_tabs() {
    let u = url("https://example.com/");
    let mut jar = HttpCookieJar::new();
    let set = ["a=\u{a0}x\u{2003}", " \t\u{a0}b = \t y \t", "c\u{3000}=z"];
    assert_eq!(jar.store_response_cookies(&u, set), 3);
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("a=\u{a0}x\u{2003}; \u{a0}b=y; c\u{3000}=z")
    );
    let cookie = HttpCookie::from_set_cookie_header(" \u{a0} = v; Path=/p", &u).unwrap();
    assert_eq!(
        (
            cookie.name.as_str(),
            cookie.value.as_str(),
            cookie.path.as_str()
        ),
        ("\u{a0}", "v", "/p")
    );
}

/// An expired cookie is gone (RFC 6265 §5.3 evicts it): a cookie stored later under its name,
/// domain and path is a new cookie, listed after the cookies created before it. Only an
/// unexpired cookie's creation time carries over to its replacement. The jar kept the expired
/// one's place, so the new cookie went out before older ones.
#[test]
fn a_cookie_replacing_an_expired_one_is_newer_than_the_cookies_before_it() {
    let u = url("https://example.com/");
    let mut jar = HttpCookieJar::new();
    let expires = SystemTime::now() + Duration::from_millis(300);
    let mut brief = HttpCookie::new("old", "1");
    brief.expiration = Some(expires);
    assert!(jar.insert_cookie(brief.clone(), &u));
    assert_eq!(jar.store_response_cookies(&u, ["mid=2"]), 1);
    while SystemTime::now() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("mid=2")
    );
    assert_eq!(jar.store_response_cookies(&u, ["old=3"]), 1);
    assert_eq!(
        header_for(&jar, "https://example.com/").as_deref(),
        Some("mid=2; old=3")
    );
    assert_eq!(names(&jar.all_cookies()), ["mid", "old"]);

    // The same through the API.
    let expires = SystemTime::now() + Duration::from_millis(300);
    brief.name = "api".into();
    brief.expiration = Some(expires);
    assert!(jar.insert_cookie(brief, &u));
    assert_eq!(jar.store_response_cookies(&u, ["late=4"]), 1);
    while SystemTime::now() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(jar.insert_cookie(HttpCookie::new("api", "5"), &u));
    assert_eq!(names(&jar.all_cookies()), ["mid", "old", "late", "api"]);
}

/// RFC 6265 §5.2: an attribute without `=` has an empty value, and §5.2.4 makes a `Path` with an
/// empty value the default path; the last `Path` decides (§5.3 step 7). A bare `Path` after
/// `Path=/a` therefore gives the default path; the jar ignored it and kept `/a`.
#[test]
fn a_bare_path_attribute_sets_the_default_path() {
    let u = url("https://example.com/docs/page");
    let cookie = HttpCookie::from_set_cookie_header("a=1; Path=/a; Path", &u).unwrap();
    assert_eq!(cookie.path, "/docs");
    let cookie = HttpCookie::from_set_cookie_header("a=1; Path=/a; path ", &u).unwrap();
    assert_eq!(cookie.path, "/docs");
    let cookie = HttpCookie::from_set_cookie_header("a=1; Path; Path=/a", &u).unwrap();
    assert_eq!(cookie.path, "/a");
    let mut jar = HttpCookieJar::new();
    assert_eq!(jar.store_response_cookies(&u, ["b=2; Path=/a; Path"]), 1);
    assert_eq!(
        header_for(&jar, "https://example.com/docs/x").as_deref(),
        Some("b=2")
    );
    assert_eq!(header_for(&jar, "https://example.com/a"), None);
}

/// The last `SameSite` attribute decides (RFC 6265bis §5.6.7 appends each, §5.7 takes the
/// last); one with an unknown value, or none, means the default, which the jar reports as
/// `SameSitePolicy::None` (as the type's docs say). The jar skipped unknown and bare ones, so
/// `SameSite=Lax; SameSite=bogus` was reported `Lax`.
#[test]
fn the_last_same_site_attribute_decides_even_with_an_unknown_value() {
    let u = url("https://example.com/");
    let policy = |text: &str| {
        HttpCookie::from_set_cookie_header(text, &u)
            .unwrap()
            .same_site
    };
    assert_eq!(
        policy("a=1; SameSite=Lax; SameSite=bogus"),
        SameSitePolicy::None
    );
    assert_eq!(
        policy("a=1; SameSite=Strict; samesite"),
        SameSitePolicy::None
    );
    assert_eq!(
        policy("a=1; SameSite=Strict; SameSite="),
        SameSitePolicy::None
    );
    assert_eq!(
        policy("a=1; SameSite=bogus; SameSite=Lax"),
        SameSitePolicy::Lax
    );
    assert_eq!(
        policy("a=1; SameSite=Lax; SameSite=None"),
        SameSitePolicy::None
    );
    assert_eq!(
        policy("a=1; SAMESITE = strict ; Path=/"),
        SameSitePolicy::Strict
    );
    let mut jar = HttpCookieJar::new();
    jar.store_response_cookies(&u, ["b=2; SameSite=Strict; SameSite=x"]);
    assert_eq!(jar.all_cookies()[0].same_site, SameSitePolicy::None);
}

/// An expired cookie is not in the jar (`len`, `all_cookies` and the headers leave it out):
/// removing it reports nothing removed, as for a cookie that was never there.
#[test]
fn removing_an_expired_cookie_reports_nothing_removed() {
    let u = url("https://example.com/");
    let mut jar = HttpCookieJar::new();
    let expires = SystemTime::now() + Duration::from_millis(200);
    for name in ["one", "two"] {
        let mut brief = cookie_at(name, "1", "example.com");
        brief.expiration = Some(expires);
        assert!(jar.insert_cookie(brief, &u));
    }
    let mut lasting = cookie_at("two", "2", "example.com");
    lasting.path = "/p".into();
    assert!(jar.insert_cookie(lasting, &u));
    while SystemTime::now() <= expires {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(jar.len(), 1);
    assert!(!jar.remove_cookie(&cookie_at("one", "", "example.com")));
    assert_eq!(jar.remove_cookies("two", "example.com"), 1);
    assert!(jar.is_empty());
    assert_eq!(jar.remove_expired_cookies(), 0);
}
