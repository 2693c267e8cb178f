//! A randomised, model-based test of `HttpSession`'s settings as `HttpClient` applies them.
//!
//! Two loopback servers (std listeners on threads, through `support::served`): `http://127.0.0.1`
//! and `https://127.0.0.1` (the test PKI's server certificate; it asks for a client certificate
//! from the test CA but takes connections without one). Each generated case picks one of them
//! and a script of one to four steps. A step first changes the client's session with
//! `update_session` while the connections of earlier steps sit in the pool: default headers set
//! and removed (`User-Agent`, `Accept`, `Accept-Encoding`, others), the user agent, the connect,
//! idle and read timeouts (the idle one 0, 60 s or `Duration::MAX`; the others usual or
//! `Duration::MAX`), the connection limit (0, 1, 6, `usize::MAX`), `follow_redirects`,
//! `max_redirects` (0 to 2), the response head, header-count and body limits (0, exactly the
//! coming response's size, one less, `usize::MAX`), content decoding on or off, the cookie jar
//! (a fresh one, the same one again, or a cookie the caller stores into it through a handle of
//! its own), CA certificates (the test CA or an unrelated one, as PEM or DER, or cleared),
//! trusting the system roots or only the added CAs, verification on or off, and the client
//! certificate. Then it sends one GET (or two at once), each with a few headers of its own,
//! some with the automatic common headers off. The answer is scripted: a 200 (a body of 0 to
//! 40 bytes, some gzip-encoded, 0 to 3 extra fields, some with a `Set-Cookie`), for a single
//! request some after a 302 to the same server.
//!
//! The reference is a plain model of what `session.rs`'s docs, `HttpClient::set_session`'s,
//! PORTING.md and `reference/kdnetwork.md` promise:
//! - the exact header fields each server read, in order: the request's own, then the session's
//!   defaults it lacks (in the session's order; a `set` moves a field to the end), then `Host`,
//!   then `Accept-Encoding: gzip, deflate` unless the request (or the defaults) have one, the
//!   request's common headers are off or decoding is off, then the jar's `Cookie` as it is when
//!   the request is written (for a request of a pair on a new connection, before or after the
//!   other's answer; for one queued behind the other, after it); a redirect hop carries the
//!   same fields;
//! - the outcome: `HeadTooLarge` for a head over the byte limit (a head of exactly the limit
//!   passes), `TooManyHeaders` over the field limit (the redirect's head too), `LimitExceeded`
//!   for an announced body over the body limit ("announced response body") or a decoded one
//!   ("response body"); the 302 itself with `follow_redirects` off, `TooManyRedirects` with a
//!   limit of 0; else the 200, its body decoded (its `Content-Encoding` and `Content-Length`
//!   gone) or, with decoding off, as sent with both fields kept;
//! - TLS: verification off accepts the server; on, the test CA must be among the added CAs
//!   (`UnknownIssuer` else, and the server reads no request); with the system roots off and no
//!   CA added the request fails with a `Configuration` error before any connection; the server
//!   sees the session's client certificate exactly when one is set;
//! - the pool: a request goes on an idle connection when there is one made under the current
//!   TLS settings (any change of them retires the others), else on a new one; a response
//!   leaves its connection idle unless the idle timeout is 0, and lowering it to 0 retires the
//!   idle ones; an error closes it; a redirect hop goes on its first hop's connection (handed
//!   over, never idle, whatever the idle timeout); with a limit of one connection the second
//!   request of a pair waits for the first's connection (a new one when the first failed);
//!   after a lowered limit closed idle connections, the next request may go on any idle one
//!   left or a new one;
//! - cookies: a 200's `Set-Cookie` (once its head passed the limits) and one the caller stored
//!   go with every later request while the jar stays; a fresh jar has none;
//! - nothing panics, and every request ends.
//!
//! Not covered: timeouts that fire (`http_redirect_model.rs`, `http_scheduler_model.rs`), a
//! timeout of 0 (it races what the same turn reads: a connect or answer that comes in the turn
//! its deadline passes wins), a server that closes, requests in flight while settings change.

mod support;

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{
    DEFAULT_USER_AGENT, HttpClient, HttpCookieJar, HttpError, HttpRequest, HttpResponse,
    SharedCookieJar,
};
use kdnet::network::{SocketError, TlsFailure};
use proptest::prelude::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use support::model::{config, finish_counted};
use support::served::{self, Stream};

// ---- the script ---------------------------------------------------------------------------

const NAMES: [&str; 5] = [
    "User-Agent",
    "Accept",
    "X-Api-Key",
    "Accept-Encoding",
    "X-Trace",
];
const VALUES: [&str; 3] = ["v1", "text/plain, */*", "gzip"];

/// A limit relative to the response of the request that follows the change.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Zero,
    /// The response's size (or count) minus this (0 or 1).
    Exact(usize),
    Huge,
}

#[derive(Debug, Clone, Copy)]
enum Ca {
    Test,
    Other,
}

#[derive(Debug, Clone)]
enum Change {
    SetHeader(usize, usize),
    RemoveHeader(usize),
    UserAgent(usize),
    HeadBytes(Limit),
    Headers(Limit),
    BodyBytes(Limit),
    FollowRedirects(bool),
    MaxRedirects(u32),
    IdleTimeout(Duration),
    MaxConns(usize),
    ReadTimeout(Option<Duration>),
    ConnectTimeout(Duration),
    NewJar,
    SameJarAgain,
    OutsideCookie,
    AddCa(Ca, bool),
    ClearCas,
    TrustDefaultRoots(bool),
    Verify(bool),
    ClientCert(bool),
    Decompress(bool),
}

#[derive(Debug, Clone)]
struct Reply {
    redirect_first: bool,
    body_len: usize,
    gzip: bool,
    extra_fields: usize,
    set_cookie: bool,
}

#[derive(Debug, Clone)]
struct Step {
    changes: Vec<Change>,
    own_headers: Vec<(usize, usize)>,
    common_headers: bool,
    /// A second request (same answer, no redirect) sent with the first, before either ends.
    pair: bool,
    reply: Reply,
}

#[derive(Debug, Clone)]
struct Case {
    https: bool,
    /// TLS settings made before the first request (so that most https cases connect).
    trust_test_ca: bool,
    steps: Vec<Step>,
}

fn limit() -> impl Strategy<Value = Limit> {
    prop_oneof![
        1 => Just(Limit::Zero),
        3 => (0usize..2).prop_map(Limit::Exact),
        4 => Just(Limit::Huge),
    ]
}

fn change(https: bool) -> BoxedStrategy<Change> {
    let common = prop_oneof![
        3 => (0..NAMES.len(), 0..VALUES.len()).prop_map(|(n, v)| Change::SetHeader(n, v)),
        2 => (0..NAMES.len()).prop_map(Change::RemoveHeader),
        1 => (0..VALUES.len()).prop_map(Change::UserAgent),
        2 => limit().prop_map(Change::HeadBytes),
        2 => limit().prop_map(Change::Headers),
        2 => limit().prop_map(Change::BodyBytes),
        1 => any::<bool>().prop_map(Change::FollowRedirects),
        1 => (0u32..3).prop_map(Change::MaxRedirects),
        2 => prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_secs(60)),
            Just(Duration::MAX)
        ]
        .prop_map(Change::IdleTimeout),
        1 => prop_oneof![Just(0usize), Just(1), Just(6), Just(usize::MAX)].prop_map(Change::MaxConns),
        1 => prop_oneof![
            Just(None),
            Just(Some(Duration::from_secs(30))),
            Just(Some(Duration::MAX))
        ]
        .prop_map(Change::ReadTimeout),
        1 => prop_oneof![Just(Duration::from_secs(30)), Just(Duration::MAX)]
            .prop_map(Change::ConnectTimeout),
        1 => Just(Change::NewJar),
        1 => Just(Change::SameJarAgain),
        1 => Just(Change::OutsideCookie),
        2 => any::<bool>().prop_map(Change::Decompress),
    ];
    if !https {
        return common.boxed();
    }
    prop_oneof![
        6 => common,
        1 => (prop_oneof![3 => Just(Ca::Test), 1 => Just(Ca::Other)], any::<bool>())
            .prop_map(|(ca, der)| Change::AddCa(ca, der)),
        1 => Just(Change::ClearCas),
        1 => any::<bool>().prop_map(Change::TrustDefaultRoots),
        1 => any::<bool>().prop_map(Change::Verify),
        1 => any::<bool>().prop_map(Change::ClientCert),
    ]
    .boxed()
}

fn step(https: bool) -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(change(https), 0..4),
        prop::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..3),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.3),
        (
            prop::bool::weighted(0.25),
            0usize..41,
            prop::bool::weighted(0.35),
            0usize..4,
            prop::bool::weighted(0.3),
        ),
    )
        .prop_map(|(changes, mut own_headers, common_headers, pair, r)| {
            let mut seen = Vec::new();
            own_headers.retain(|(n, _)| {
                let fresh = !seen.contains(n);
                seen.push(*n);
                fresh
            });
            Step {
                changes,
                own_headers,
                common_headers,
                pair,
                reply: Reply {
                    redirect_first: r.0 && !pair,
                    body_len: r.1,
                    gzip: r.2,
                    extra_fields: r.3,
                    set_cookie: r.4,
                },
            }
        })
}

fn case() -> impl Strategy<Value = Case> {
    any::<bool>().prop_flat_map(|https| {
        (
            prop::bool::weighted(0.8),
            prop::collection::vec(step(https), 1..5),
        )
            .prop_map(move |(trust_test_ca, steps)| Case {
                https,
                trust_test_ca,
                steps,
            })
    })
}

// ---- the servers --------------------------------------------------------------------------

/// One request a server read.
#[derive(Debug, Clone)]
struct Seen {
    /// Which listener's connection counter (0 plain, 1 TLS) and the connection's serial.
    conn: (usize, u64),
    line: String,
    headers: Vec<(String, String)>,
    client_cert: Option<Vec<u8>>,
}

struct Servers {
    http_port: u16,
    https_port: u16,
    /// The reply to each path (set before the request is sent).
    replies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn serve(
    reader: &mut BufReader<Box<dyn Stream>>,
    conn: (usize, u64),
    client_cert: Option<Vec<u8>>,
    replies: &Mutex<HashMap<String, Vec<u8>>>,
    seen: &Mutex<Vec<Seen>>,
) {
    while let Some(request) = support::read_request(reader) {
        let path = request
            .line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(Seen {
            conn,
            line: request.line.clone(),
            headers: request.headers.clone(),
            client_cert: client_cert.clone(),
        });
        let reply = replies.lock().unwrap().get(&path).cloned();
        let Some(reply) = reply else {
            served::write_all(
                reader,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        };
        if !served::write_all(reader, &reply) {
            return;
        }
    }
    reader.get_mut().finish();
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let replies: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, s) = (replies.clone(), seen.clone());
        let http = served::listen(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            false,
            move |reader, serial| serve(reader, (0, serial), None, &r, &s),
        );
        let (r, s) = (replies.clone(), seen.clone());
        let https = served::listen_tls_with(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            tls_server_config(),
            move |reader, serial, cert| serve(reader, (1, serial), cert, &r, &s),
            // A refused handshake: the client's error says it all.
            |_, _| {},
        );
        Servers {
            http_port: http.port(),
            https_port: https.port(),
            replies,
            seen,
        }
    })
}

/// The test PKI's server certificate; a client certificate of the test CA is asked for and
/// checked, but not required.
fn tls_server_config() -> Arc<rustls::ServerConfig> {
    let pki = support::certs::test_pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let chain = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

// ---- responses ----------------------------------------------------------------------------

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The scripted answer to step `index` of case `case_no`: its 200's head and body, and the
/// 302's head when it comes first.
struct Answer {
    plain_body: Vec<u8>,
    wire_body: Vec<u8>,
    head: String,
    fields: usize,
    cookie: Option<String>,
    redirect_head: Option<String>,
}

fn answer(case_no: u64, index: usize, reply: &Reply) -> Answer {
    let plain_body = support::pattern(reply.body_len, case_no * 8 + index as u64);
    let wire_body = if reply.gzip {
        gzip(&plain_body)
    } else {
        plain_body.clone()
    };
    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", wire_body.len());
    let mut fields = 1;
    if reply.gzip {
        head.push_str("Content-Encoding: gzip\r\n");
        fields += 1;
    }
    for k in 0..reply.extra_fields {
        head.push_str(&format!("X-F{k}: value {k}\r\n"));
        fields += 1;
    }
    let cookie = reply.set_cookie.then(|| format!("c{index}=k{case_no}"));
    if let Some(c) = &cookie {
        head.push_str(&format!("Set-Cookie: {c}; Path=/\r\n"));
        fields += 1;
    }
    head.push_str("\r\n");
    let redirect_head = reply.redirect_first.then(|| {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: /c{case_no}/s{index}r0/next\r\nContent-Length: 0\r\n\r\n"
        )
    });
    Answer {
        plain_body,
        wire_body,
        head,
        fields,
        cookie,
        redirect_head,
    }
}

// ---- the model ----------------------------------------------------------------------------

/// The session as the model keeps it.
#[derive(Debug, Clone)]
struct Model {
    defaults: Vec<(String, String)>,
    head_bytes: usize,
    headers: usize,
    body_bytes: usize,
    follow: bool,
    max_redirects: u32,
    idle_zero: bool,
    decompress: bool,
    jar: Vec<String>,
    cas: Vec<Ca>,
    default_roots: bool,
    verify: bool,
    client_cert: bool,
    /// Bumped by every change of the TLS settings (the client's equality).
    tls_generation: u64,
    tls_key: (Vec<bool>, bool, bool, bool),
    /// The connections left idle in the pool, oldest first.
    pooled: Vec<Pooled>,
    /// The session's connection limit (0 counts as 1).
    max_conns: usize,
}

/// An idle connection of the pool as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Pooled {
    conn: (usize, u64),
    /// The TLS settings' generation it was made under.
    generation: u64,
    /// False once a lowered connection limit closed some idle connections: the model does not
    /// tell which (two that went idle in the same step have no known order), so each may be
    /// gone.
    certain: bool,
}

impl Model {
    fn new() -> Self {
        Model {
            defaults: vec![
                ("User-Agent".into(), DEFAULT_USER_AGENT.into()),
                ("Accept".into(), "*/*".into()),
            ],
            head_bytes: 64 * 1024,
            headers: 100,
            body_bytes: 1 << 30,
            follow: true,
            max_redirects: 5,
            idle_zero: false,
            decompress: true,
            jar: Vec::new(),
            cas: Vec::new(),
            default_roots: true,
            verify: true,
            client_cert: false,
            tls_generation: 0,
            tls_key: (Vec::new(), true, true, false),
            pooled: Vec::new(),
            max_conns: 6,
        }
    }

    fn set_default(&mut self, name: &str, value: &str) {
        self.defaults.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.defaults.push((name.into(), value.into()));
    }

    fn tls_changed(&mut self) {
        let key = (
            self.cas.iter().map(|c| matches!(c, Ca::Test)).collect(),
            self.default_roots,
            self.verify,
            self.client_cert,
        );
        if key != self.tls_key {
            self.tls_key = key;
            self.tls_generation += 1;
        }
    }
}

fn resolve(limit: Limit, exact: usize) -> usize {
    match limit {
        Limit::Zero => 0,
        Limit::Exact(less) => exact.saturating_sub(less),
        Limit::Huge => usize::MAX,
    }
}

/// What the model expects of one request.
#[derive(Debug)]
enum Expected {
    /// A configuration error before any connection.
    Configuration,
    /// The handshake fails with an unknown issuer; the server reads nothing.
    UnknownIssuer,
    HeadTooLarge(usize),
    TooManyHeaders(usize),
    TooManyRedirects(u32),
    Limit(&'static str, usize),
    /// The 302, returned.
    Redirect,
    Ok {
        body: Vec<u8>,
        content_encoding: bool,
        /// Kept, as sent, unless the body was decoded.
        content_length: Option<usize>,
    },
}

/// What the model expects of one request: its outcome and how many requests the servers read
/// for it.
#[derive(Debug)]
struct Plan {
    outcome: Expected,
    hops: usize,
}

impl Model {
    /// The idle connections a request may take: made under the current TLS settings.
    fn usable(&self, https: bool) -> Vec<Pooled> {
        (self.pooled.iter())
            .filter(|p| !https || p.generation == self.tls_generation)
            .copied()
            .collect()
    }

    /// The outcome of a request sent now (`pooled`: whether a usable idle connection waits).
    fn plan(&mut self, https: bool, answer: &Answer, reply: &Reply, pooled: bool) -> Plan {
        let mut plan = Plan {
            outcome: Expected::Redirect,
            hops: 0,
        };
        if !pooled && https && self.verify {
            if !self.default_roots && self.cas.is_empty() {
                plan.outcome = Expected::Configuration;
                return plan;
            }
            if !self.cas.iter().any(|c| matches!(c, Ca::Test)) {
                plan.outcome = Expected::UnknownIssuer;
                return plan;
            }
        }
        plan.hops = 1;
        if let Some(redirect) = &answer.redirect_head {
            if redirect.len() > self.head_bytes {
                plan.outcome = Expected::HeadTooLarge(self.head_bytes);
                return plan;
            }
            if 2 > self.headers {
                plan.outcome = Expected::TooManyHeaders(self.headers);
                return plan;
            }
            if !self.follow {
                plan.outcome = Expected::Redirect;
                return plan;
            }
            if self.max_redirects == 0 {
                plan.outcome = Expected::TooManyRedirects(0);
                return plan;
            }
            plan.hops = 2;
        }
        if answer.head.len() > self.head_bytes {
            plan.outcome = Expected::HeadTooLarge(self.head_bytes);
            return plan;
        }
        if answer.fields > self.headers {
            plan.outcome = Expected::TooManyHeaders(self.headers);
            return plan;
        }
        if let Some(c) = &answer.cookie
            && !self.jar.contains(c)
        {
            self.jar.push(c.clone());
        }
        if answer.wire_body.len() > self.body_bytes {
            plan.outcome = Expected::Limit("announced response body", self.body_bytes);
            return plan;
        }
        let raw = reply.gzip && !self.decompress;
        let body = if raw {
            answer.wire_body.clone()
        } else {
            answer.plain_body.clone()
        };
        if body.len() > self.body_bytes {
            plan.outcome = Expected::Limit("response body", self.body_bytes);
            return plan;
        }
        let decoded = reply.gzip && self.decompress;
        plan.outcome = Expected::Ok {
            content_length: (!decoded).then_some(body.len()),
            body,
            content_encoding: raw,
        };
        plan
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    change: &Change,
    client: &HttpClient,
    model: &mut Model,
    answer: &Answer,
    delivered_len: usize,
    origin: &str,
    outside: &mut Vec<SharedCookieJar>,
    label: &str,
) {
    let pki = support::certs::test_pki();
    match *change {
        Change::SetHeader(n, v) => {
            client.update_session(|s| s.set_default_header(NAMES[n], VALUES[v]));
            model.set_default(NAMES[n], VALUES[v]);
        }
        Change::RemoveHeader(n) => {
            client.update_session(|s| {
                s.remove_default_header(NAMES[n]);
            });
            model
                .defaults
                .retain(|(name, _)| !name.eq_ignore_ascii_case(NAMES[n]));
        }
        Change::UserAgent(v) => {
            client.update_session(|s| s.set_user_agent(VALUES[v]));
            model.set_default("User-Agent", VALUES[v]);
        }
        Change::HeadBytes(l) => {
            let max = resolve(l, answer.head.len());
            client.update_session(|s| s.set_max_response_head_bytes(max));
            model.head_bytes = max;
        }
        Change::Headers(l) => {
            let max = resolve(l, answer.fields);
            client.update_session(|s| s.set_max_response_headers(max));
            model.headers = max;
        }
        Change::BodyBytes(l) => {
            let max = resolve(l, delivered_len);
            client.update_session(|s| s.set_max_response_body_bytes(max));
            model.body_bytes = max;
        }
        Change::FollowRedirects(on) => {
            client.update_session(|s| s.set_follow_redirects(on));
            model.follow = on;
        }
        Change::MaxRedirects(max) => {
            client.update_session(|s| s.set_max_redirects(max));
            model.max_redirects = max;
        }
        Change::IdleTimeout(t) => {
            client.update_session(|s| s.set_idle_connection_timeout(t));
            model.idle_zero = t.is_zero();
            if t.is_zero() {
                // Lowered to nothing: no idle connection is reused any more.
                model.pooled.clear();
            }
        }
        Change::MaxConns(max) => {
            client.update_session(|s| s.set_max_connections_per_host(max));
            model.max_conns = max.max(1);
            if model.pooled.len() > model.max_conns {
                // The oldest idle ones close; which they are is not known for two that went
                // idle in one step: each may be left, or closed.
                for p in &mut model.pooled {
                    p.certain = false;
                }
            }
        }
        Change::ReadTimeout(t) => client.update_session(|s| s.set_read_timeout(t)),
        Change::ConnectTimeout(t) => client.update_session(|s| s.set_connect_timeout(t)),
        Change::NewJar => {
            client.update_session(|s| s.set_cookie_jar(HttpCookieJar::new()));
            model.jar.clear();
        }
        Change::SameJarAgain => {
            client.update_session(|s| {
                let same = s.cookie_jar().clone();
                s.set_cookie_jar(same);
            });
        }
        Change::OutsideCookie => {
            let handle = client.session().cookie_jar().clone();
            let cookie = format!("o{label}=x");
            let url = url::Url::parse(&format!("{origin}/")).unwrap();
            handle
                .lock()
                .store_response_cookies(&url, [cookie.as_str()]);
            outside.push(handle);
            model.jar.push(cookie);
        }
        Change::AddCa(ca, der) => {
            let pem = match ca {
                Ca::Test => &pki.ca_pem,
                Ca::Other => &pki.other_ca_pem,
            };
            client.update_session(|s| {
                if der {
                    s.add_ca_certificate_der(der_of(pem)).unwrap();
                } else {
                    s.add_ca_certificate(pem.clone()).unwrap();
                }
            });
            model.cas.push(ca);
            model.tls_changed();
        }
        Change::ClearCas => {
            client.update_session(|s| s.clear_ca_certificates());
            model.cas.clear();
            model.tls_changed();
        }
        Change::TrustDefaultRoots(on) => {
            client.update_session(|s| s.set_trust_default_roots(on));
            model.default_roots = on;
            model.tls_changed();
        }
        Change::Verify(on) => {
            client.update_session(|s| {
                if on {
                    s.enable_certificate_verification();
                } else {
                    s.dangerous_disable_certificate_verification();
                }
            });
            model.verify = on;
            model.tls_changed();
        }
        Change::ClientCert(on) => {
            client.update_session(|s| {
                if on {
                    s.set_client_certificate(
                        pki.client_cert_pem.clone(),
                        pki.client_key_pem.clone(),
                    )
                    .unwrap();
                } else {
                    s.clear_client_certificate();
                }
            });
            model.client_cert = on;
            model.tls_changed();
        }
        Change::Decompress(on) => {
            client.update_session(|s| s.set_decompress(on));
            model.decompress = on;
        }
    }
}

fn check_outcome(
    expected: &Expected,
    result: &Result<HttpResponse, HttpError>,
    index: usize,
) -> Result<(), TestCaseError> {
    let ok = match (expected, result) {
        (
            Expected::Configuration,
            Err(HttpError::Transport(SocketError::Tls(TlsFailure::Configuration(reason)))),
        ) => reason.contains("no trusted root certificate"),
        (
            Expected::UnknownIssuer,
            Err(HttpError::Transport(SocketError::Tls(TlsFailure::UnknownIssuer))),
        ) => true,
        (Expected::HeadTooLarge(l), Err(HttpError::HeadTooLarge { limit })) => l == limit,
        (Expected::TooManyHeaders(l), Err(HttpError::TooManyHeaders { limit })) => l == limit,
        (Expected::TooManyRedirects(l), Err(HttpError::TooManyRedirects { limit })) => l == limit,
        (Expected::Limit(w, l), Err(HttpError::LimitExceeded { what, limit })) => {
            w == what && l == limit
        }
        (Expected::Redirect, Ok(r)) => r.status() == 302 && r.body().is_empty(),
        (
            Expected::Ok {
                body,
                content_encoding,
                content_length,
            },
            Ok(r),
        ) => {
            r.status() == 200
                && r.body()[..] == body[..]
                && r.has_header("content-encoding") == *content_encoding
                && r.header("content-length").map(str::to_owned)
                    == content_length.map(|n| n.to_string())
        }
        _ => false,
    };
    prop_assert!(
        ok,
        "step {}: expected {:?}, got {:?}",
        index,
        expected,
        result
            .as_ref()
            .map(|r| (r.status(), r.headers().clone(), r.body().clone()))
    );
    Ok(())
}

static CASES: AtomicU64 = AtomicU64::new(0);
static COUNTERS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
const COUNTER_NAMES: [&str; 7] = [
    "requests",
    "responses",
    "limit errors",
    "tls errors",
    "reused connections",
    "redirects followed",
    "raw gzip bodies",
];

fn count(i: usize) {
    COUNTERS[i].fetch_add(1, Ordering::Relaxed);
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let case_no = CASES.fetch_add(1, Ordering::Relaxed);
    let servers = servers();
    let pki = support::certs::test_pki();
    let mut event_loop = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();
    let mut model = Model::new();
    let mut outside = Vec::new();
    let mut used_conns: Vec<(usize, u64)> = Vec::new();
    let (scheme, port) = if case.https {
        ("https", servers.https_port)
    } else {
        ("http", servers.http_port)
    };
    let origin = format!("{scheme}://127.0.0.1:{port}");
    if case.https && case.trust_test_ca {
        client.update_session(|s| s.add_ca_certificate(pki.ca_pem.clone()).unwrap());
        model.cas.push(Ca::Test);
        model.tls_changed();
    }
    let mut seen_before = servers.seen.lock().unwrap().len();
    for (index, step) in case.steps.iter().enumerate() {
        let answer = answer(case_no, index, &step.reply);
        let paths: Vec<String> = (0..1 + usize::from(step.pair))
            .map(|k| format!("/c{case_no}/s{index}r{k}"))
            .collect();
        {
            let mut replies = servers.replies.lock().unwrap();
            let with_body = |head: &str| {
                let mut bytes = head.as_bytes().to_vec();
                bytes.extend_from_slice(&answer.wire_body);
                bytes
            };
            for path in &paths {
                match &answer.redirect_head {
                    Some(redirect) => {
                        replies.insert(path.clone(), redirect.as_bytes().to_vec());
                        replies.insert(format!("{path}/next"), with_body(&answer.head));
                    }
                    None => {
                        replies.insert(path.clone(), with_body(&answer.head));
                    }
                }
            }
        }
        // The delivered body's length, for a body limit made to fit it.
        let delivered_len = if step.reply.gzip && !model.decompress_after(&step.changes) {
            answer.wire_body.len()
        } else {
            answer.plain_body.len()
        };
        for (k, change) in step.changes.iter().enumerate() {
            let label = format!("{case_no}_{index}_{k}");
            apply(
                change,
                &client,
                &mut model,
                &answer,
                delivered_len,
                &origin,
                &mut outside,
                &label,
            );
        }
        let outs: Vec<_> = paths
            .iter()
            .map(|path| {
                let mut request = HttpRequest::new(&format!("{origin}{path}")).unwrap();
                for (n, v) in &step.own_headers {
                    request.set_header(NAMES[*n], VALUES[*v]);
                }
                request.set_auto_add_common_headers(step.common_headers);
                support::send(&client, request)
            })
            .collect();
        let results: Vec<_> = outs
            .iter()
            .map(|out| support::wait(&mut event_loop, out))
            .collect();
        for _ in &results {
            count(0);
        }

        let mut expected_fields: Vec<(String, String)> = step
            .own_headers
            .iter()
            .map(|(n, v)| (NAMES[*n].to_string(), VALUES[*v].to_string()))
            .collect();
        let own_len = expected_fields.len();
        for (n, v) in &model.defaults {
            if !expected_fields[..own_len]
                .iter()
                .any(|(o, _)| o.eq_ignore_ascii_case(n))
            {
                expected_fields.push((n.clone(), v.clone()));
            }
        }
        expected_fields.push(("Host".into(), format!("127.0.0.1:{port}")));
        let has_accept_encoding = expected_fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"));
        if step.common_headers && model.decompress && !has_accept_encoding {
            let accepted = if cfg!(feature = "brotli") {
                "gzip, deflate, br"
            } else {
                "gzip, deflate"
            };
            expected_fields.push(("Accept-Encoding".into(), accepted.into()));
        }
        let cookie_before = (!model.jar.is_empty()).then(|| model.jar.join("; "));
        let usable = model.usable(case.https);
        if usable.is_empty() {
            // A request that finds no usable idle connection closes the stale ones it finds.
            model.pooled.clear();
        }
        let plan = model.plan(case.https, &answer, &step.reply, !usable.is_empty());
        let cookie_after = (!model.jar.is_empty()).then(|| model.jar.join("; "));
        let with_cookie = |cookie: &Option<String>| {
            let mut fields = expected_fields.clone();
            if let Some(cookie) = cookie {
                fields.push(("Cookie".to_string(), cookie.clone()));
            }
            fields
        };

        // Requests arrive at the server before the response that ends them is read.
        let seen: Vec<Seen> = {
            let all = servers.seen.lock().unwrap();
            let new = all[seen_before..].to_vec();
            seen_before = all.len();
            new
        };
        let mut available: Vec<Pooled> = usable.clone();
        let mut first_conn = None;
        let mut final_conns = Vec::new();
        for (k, path) in paths.iter().enumerate() {
            let mine: Vec<&Seen> = seen
                .iter()
                .filter(|s| {
                    s.line.starts_with(&format!("GET {path} "))
                        || s.line.starts_with(&format!("GET {path}/next "))
                })
                .collect();
            prop_assert_eq!(
                mine.len(),
                plan.hops,
                "step {} request {}: the servers read {:?}; expected {:?}; outcome {:?}",
                index,
                k,
                seen,
                plan,
                results[k].as_ref().map(|r| r.status())
            );
            for (hop, s) in mine.iter().enumerate() {
                let target = if hop == 0 {
                    path.clone()
                } else {
                    format!("{path}/next")
                };
                prop_assert_eq!(&s.line, &format!("GET {target} HTTP/1.1"));
                if case.https {
                    let want = model.client_cert.then(|| der_of(&pki.client_cert_pem));
                    prop_assert_eq!(&s.client_cert, &want, "step {}: client certificate", index);
                }
            }
            let Some(first) = mine.first() else { continue };
            let conn = first.conn;
            let is_new = !used_conns.contains(&conn);
            let pooled_at = available.iter().position(|p| p.conn == conn);
            if k == 1 && model.max_conns == 1 {
                // Queued behind the first, it gets the first's connection when that one is
                // reusable, else a new one.
                let handed = matches!(plan.outcome, Expected::Ok { .. });
                prop_assert!(
                    if handed {
                        Some(conn) == first_conn
                    } else {
                        is_new
                    },
                    "step {}: the queued request went on {:?} (first on {:?}, outcome {:?})",
                    index,
                    conn,
                    first_conn,
                    plan.outcome
                );
            } else if available.iter().any(|p| p.certain) {
                prop_assert!(
                    pooled_at.is_some(),
                    "step {} request {}: went on {:?}, not on an idle one of {:?}",
                    index,
                    k,
                    conn,
                    available
                );
            } else if !available.is_empty() {
                prop_assert!(
                    pooled_at.is_some() || is_new,
                    "step {} request {}: went on {:?}: neither idle ({:?}) nor new",
                    index,
                    k,
                    conn,
                    available
                );
            } else {
                prop_assert!(
                    is_new,
                    "step {} request {}: went on {:?}, a connection not in the pool ({:?})",
                    index,
                    k,
                    conn,
                    usable
                );
            }
            // The jar's cookies go as it is when the request is written: a request on a new
            // connection of a pair is written once connected, maybe after the other's answer
            // stored its cookie; one queued behind the other, after it.
            let cookies = if !step.pair {
                vec![&cookie_before]
            } else if k == 1 && model.max_conns == 1 {
                vec![&cookie_after]
            } else if pooled_at.is_some() {
                vec![&cookie_before]
            } else {
                vec![&cookie_before, &cookie_after]
            };
            for (hop, s) in mine.iter().enumerate() {
                prop_assert!(
                    cookies.iter().any(|c| s.headers == with_cookie(c)),
                    "step {} request {} hop {}: request fields {:?}; expected {:?} with a Cookie of {:?}",
                    index,
                    k,
                    hop,
                    s.headers,
                    expected_fields,
                    cookies
                );
            }
            if let Some(at) = pooled_at {
                available.remove(at);
                count(4);
            }
            // A hop goes on its first hop's connection, handed over as the 302 ends (never
            // idle, so whatever the idle timeout).
            for hop in &mine[1..] {
                prop_assert_eq!(hop.conn, conn, "step {}: the hop's connection", index);
                count(5);
            }
            first_conn.get_or_insert(conn);
            used_conns.push(conn);
            if !final_conns.contains(&conn) {
                final_conns.push(conn);
            }
        }
        for result in &results {
            check_outcome(&plan.outcome, result, index)?;
        }
        match &plan.outcome {
            Expected::Ok {
                content_encoding, ..
            } => {
                count(1);
                if *content_encoding {
                    count(6);
                }
            }
            Expected::Redirect => count(1),
            Expected::Configuration | Expected::UnknownIssuer => count(3),
            _ => count(2),
        }
        // The connections used now are idle again after a response (never with an idle
        // timeout of 0), closed after an error.
        model.pooled.retain(|p| !final_conns.contains(&p.conn));
        if matches!(plan.outcome, Expected::Ok { .. } | Expected::Redirect) && !model.idle_zero {
            for conn in final_conns {
                model.pooled.push(Pooled {
                    conn,
                    generation: model.tls_generation,
                    certain: true,
                });
            }
        }
    }
    drop(outside);
    Ok(())
}

impl Model {
    fn decompress_after(&self, changes: &[Change]) -> bool {
        changes.iter().fold(self.decompress, |d, c| match c {
            Change::Decompress(on) => *on,
            _ => d,
        })
    }
}

#[test]
fn session_settings_follow_the_model() {
    let started = Instant::now();
    let result =
        proptest::test_runner::TestRunner::new(config(40)).run(&case(), |case| run_case(&case));
    finish_counted(started, &CASES, COUNTER_NAMES, &COUNTERS, result);
}
