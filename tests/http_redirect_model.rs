//! A randomised, model-based test of `HttpClient`'s redirects, TLS connections, host names and
//! timeouts (what `http_scheduler_model.rs` leaves out).
//!
//! Five loopback hosts that answer: `http://localhost` (served on 127.0.0.1 only: `localhost`
//! resolves to `::1` first, refused there), `http://[::1]`, `https://localhost` (served on
//! `::1`), `https://127.0.0.1` and `http://127.0.0.1`, each on a port of its own, the https ones
//! with rcgen certificates made at test time; a sixth, `http://127.0.0.1` on a listener whose
//! accept queue is full, where connects time out; two https hosts whose TLS handshakes never
//! end (`https://localhost`, served on 127.0.0.1 only, accepts and never answers the
//! ClientHello; `https://[::1]` answers it with its ServerHello and stops there); and
//! `https://127.0.0.1` on a server that requires a client certificate from the test CA. The
//! session's client certificate is the test CA's, none, or a server certificate of an
//! unrelated CA. Each generated case is a script of requests (GET, HEAD, POST or PUT; buffered
//! or streaming; with or without a body and its `Content-Type`/`Content-Language`, an
//! `Authorization` and `Proxy-Authorization`, a `Cookie` of the caller's, a redirect policy and
//! limit, a short total timeout, sent at once or from a timer) in two phases; in the second the
//! session's TLS settings may be replaced (another CA added, verification off, or only an
//! unrelated CA trusted), before its requests or while they are in flight. For each request the
//! script says what its chain of hosts answers: a list of redirects (301, 302, 303, 307 or 308,
//! to any host; the `Location` absolute, a path, scheme-relative, with `user:password@`, with a
//! fragment, or missing; some with a `Set-Cookie`, Secure or not; the body framed by length,
//! chunked, or by the close, some with `Connection: close`), then a final answer (200, some
//! with `Connection: close`, a server that stalls before the head or in the body, or one that
//! closes after interim responses); any answer may come after up to four interim responses
//! (100, 102, 103 with a `Link`, 199), each written on its own, and a redirect may be delayed
//! by up to 120 ms. The session may have `follow_redirects` off, its own redirect limit, a read
//! timeout, a connection limit of 1 or 2 per host and a short idle timeout. User code may keep
//! the loop busy for up to 200 ms (a timer's slot early in a phase, or a request's callback),
//! so that answers and passed deadlines meet in the turns after it. The servers record every
//! request they read (method, body, headers, connection, client certificate, when) and when
//! they began each answer.
//!
//! The checks are those of a plain model of the documented behaviour (`redirect.rs`'s table and
//! rules, the session's and request's docs):
//! - the hops the model follows are the requests the servers saw, in order: 301/302 turn a
//!   POST into a GET without its body, 303 turns all but HEAD into a GET without a body, 307/308
//!   keep both; the body's headers go with the body; `Authorization`, `Proxy-Authorization` and
//!   the caller's `Cookie` go at the first hop to another origin and do not come back;
//!   credentials in a `Location` become the hop's Basic `Authorization`; `Host` is the hop's own;
//!   a fragment is never sent;
//! - the policy (`DontFollow`, the session's `follow_redirects` off, same host, same host and
//!   scheme) and a 3xx without `Location` hand the 3xx to the caller with the hops made so far
//!   counted; the limit (the request's, else the session's, else 5) fails with
//!   `TooManyRedirects`; the response's URL is the last hop's; a stream's `on_event` gets the
//!   final response's head once (never a followed redirect's) and its body, never after
//!   `on_done`;
//! - cookies: a `Set-Cookie` on a redirect is sent with every later hop to that host name (not
//!   another name, whatever the port or scheme), a Secure one too (every host is loopback, a
//!   secure context for cookies over plain http as well, as in browsers); a caller's `Cookie` on a same-origin hop stands instead of the jar's;
//!   cookies of the first phase go with every request of the second;
//! - TLS: https connections are pooled and reused; no request sent after the TLS settings
//!   changed goes on a connection made before; with only an unrelated CA trusted, a request (or
//!   hop) to an https host fails with `UnknownIssuer` and reaches no server (one in flight at the
//!   change may also fail so at a later hop);
//! - client certificates: the host that asks for one gets the session's, and only it does; a
//!   hop to it with none fails with the alert `CertificateRequired`, with the wrong one with
//!   `UnsupportedCertificate` (`TlsFailure::AlertReceived`), and its server reads no request;
//!   hops to hosts that ask for none work whatever the session's certificate;
//! - interim responses are skipped on every hop (never a stream's head, never counted as a
//!   redirect; the head deadline is not stretched by them); a close after only interim
//!   responses fails with `NoFinalResponse` naming the last one;
//! - timeouts: a stalled head fails with `Timeout(ResponseHead)`, a stalled body with
//!   `Timeout(BodyIdle)` (the session's read timeout, counted from the request's write), a hop
//!   to the full listener with `Timeout(Connect)`, to a host whose handshake never ends with
//!   `Timeout(TlsHandshake)` (the connect timeout covers the handshake), never before their
//!   time; a request with a short total timeout (not a stream) may fail with `Timeout(Total)`
//!   anywhere, including while queued behind the connection limit, but within its time;
//!   nothing else fails;
//! - a request (or redirect hop, sent after its previous hop's server read it, and after a busy
//!   spell of the loop during which that answer was begun) sent more than the idle timeout
//!   after every earlier use of a pooled connection does not go on it, and the
//!   client closes the connections the idle timeout retires (their servers see the close); a
//!   connection the server closed after a response is not used again (a request sent on it
//!   would be replayed: an extra arrival);
//! - afterwards nothing is pending and a fresh request to every serving host works (to the one
//!   that requires a client certificate, with the right one; it refuses the others again).
//!
//! Not covered: cancellation, replays and the connection limit's accounting (the scheduler
//! model); `localhost` answering on both `::1` and 127.0.0.1; the session's client certificate
//! replaced mid-flight; `101 Switching Protocols`; `Expect: 100-continue`; request bodies that
//! stall.
//!
//! `PROPTEST_CASES` sets the number of cases (default 15, about 6–9 s in a debug build: most of
//! it is the timeouts).

mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::BufReader;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdnet::network::http::{
    HttpClient, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession, RedirectPolicy,
    StreamEvent,
};
use kdnet::network::{SocketError, TimeoutPhase, TlsFailure};
use kdnet::{EventLoop, Timer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::served::{self, Stream};

// ---- the hosts -------------------------------------------------------------------------------

/// The hosts: whether https, the URL's host name, and where the server listens (`None`:
/// 127.0.0.1, with the port refused on `::1`, which `localhost` tries first). The first
/// [`SERVING`] answer; then [`BLACKHOLE`] never completes a connect (its accept queue is full),
/// [`SILENT`] accepts and never answers the ClientHello, [`MIDWAY`] answers it with its
/// ServerHello and stops there (only redirects go to these three), and [`MTLS`] asks for a
/// client certificate from the test CA.
const HOSTS: [(bool, &str, Option<&str>); 9] = [
    (false, "localhost", None),
    (false, "[::1]", Some("[::1]:0")),
    (true, "localhost", Some("[::1]:0")),
    (true, "127.0.0.1", Some("127.0.0.1:0")),
    (false, "127.0.0.1", Some("127.0.0.1:0")),
    (false, "127.0.0.1", Some("full")),
    (true, "localhost", None),
    (true, "[::1]", Some("[::1]:0")),
    (true, "127.0.0.1", Some("127.0.0.1:0")),
];

/// The host whose connects time out.
const BLACKHOLE: usize = 5;
/// The https host that never answers a ClientHello.
const SILENT: usize = 6;
/// The https host that stops after its ServerHello.
const MIDWAY: usize = 7;
/// The https host that requires a client certificate (from the test CA).
const MTLS: usize = 8;
/// The hosts that answer any client (before [`BLACKHOLE`]).
const SERVING: usize = BLACKHOLE;

/// Whether a hop to host `h` stalls in the TLS handshake.
fn handshake_stalls(h: usize) -> bool {
    h == SILENT || h == MIDWAY
}

fn https(h: usize) -> bool {
    HOSTS[h].0
}

fn name(h: usize) -> &'static str {
    HOSTS[h].1
}

/// How long a stalling server says nothing before it closes.
const STALL: Duration = Duration::from_millis(2500);
/// The session's read timeout, when the case has one.
const READ_TIMEOUT: Duration = Duration::from_millis(300);
/// The session's connect timeout (lookup, connect and TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(600);
/// Every other request's total timeout (a guard: nothing in a script takes this long).
const GUARD_TOTAL: Duration = Duration::from_secs(6);
/// Timers fire late, never early; this covers the clock's granularity.
const EARLY: Duration = Duration::from_millis(5);
/// How late a timeout may fire on a loaded machine.
const LATE: Duration = Duration::from_millis(1500);

// ---- the script ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// How a redirect's `Location` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Absolute,
    /// `/path` (only to the same host).
    Path,
    /// `//host:port/path` (only to a host of the same scheme).
    SchemeRelative,
    /// No `Location` at all.
    Missing,
    /// Absolute, with `u:p@` before the host: Basic auth for the hop.
    Credentials,
    /// Absolute, with a fragment (never sent).
    Fragment,
}

#[derive(Debug, Clone, Copy)]
struct Hop {
    status: u16,
    to: usize,
    form: Form,
    /// A `Set-Cookie` with the response; `Some(true)`: a Secure one.
    cookie: Option<bool>,
    frame: Frame,
    /// Interim responses before it.
    interim: Interim,
    /// The server waits this many milliseconds (after the interim responses) before it.
    delay: u8,
}

/// Interim (1xx) responses a server sends, each written (and flushed) on its own, before a
/// response: `count` of them, the statuses picked by two bits each of `codes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Interim {
    count: u8,
    codes: u8,
}

impl Interim {
    fn statuses(self) -> impl Iterator<Item = u16> {
        (0..self.count).map(move |i| [100, 103, 102, 199][usize::from((self.codes >> (2 * i)) & 3)])
    }

    /// The heads, in order.
    fn heads(self) -> Vec<Vec<u8>> {
        self.statuses()
            .map(|status| match status {
                100 => b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                103 => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".to_vec(),
                102 => b"HTTP/1.1 102 Processing\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 199 Something\r\nX-Interim: yes\r\n\r\n".to_vec(),
            })
            .collect()
    }

    fn last(self) -> Option<u16> {
        self.statuses().last()
    }
}

fn interim_strategy() -> impl Strategy<Value = Interim> {
    (
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => 2u8..=4],
        any::<u8>(),
    )
        .prop_map(|(count, codes)| Interim { count, codes })
}

/// How a redirect's body (`moved`) is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Length,
    Chunked,
    /// With `Connection: close`; the server closes after it.
    LengthThenClose,
    /// No length: the body ends with the connection.
    ToClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    /// 200, echoing the request; a `Set-Cookie` (Secure or not) with it.
    Ok(Option<bool>),
    /// Reads the request and says nothing.
    StallHead,
    /// Sends the head and half the body, then says nothing.
    StallBody,
    /// Sends its interim responses (at least one), then closes.
    OnlyInterim,
}

/// The session's client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCert {
    None,
    /// The test CA's client certificate: [`MTLS`] accepts it.
    Good,
    /// A certificate of an unrelated CA: [`MTLS`] refuses it.
    Wrong,
}

#[derive(Debug, Clone)]
struct ReqScript {
    host: usize,
    method: Method,
    body_len: u8,
    /// With `Authorization: Bearer …` and a `Proxy-Authorization`.
    auth: bool,
    /// Sent with `send_streaming` (no total timeout).
    stream: bool,
    /// A `Cookie` of the caller's.
    cookie: bool,
    policy: RedirectPolicy,
    /// Set with `set_max_redirects`.
    max_redirects: Option<u32>,
    /// A short total timeout (milliseconds) instead of the guard.
    short_total: Option<u64>,
    /// Sent from a timer this many milliseconds after its phase starts.
    later: Option<u8>,
    phase: u8,
    hops: Vec<Hop>,
    fin: Final,
    /// The final 200 comes with `Connection: close`.
    fin_close: bool,
    /// Interim responses before the final answer.
    fin_interim: Interim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsChange {
    None,
    /// Another CA added to the one trusted.
    AddCa,
    /// Certificate verification off.
    NoVerify,
    /// Only an unrelated CA trusted: https fails in the second phase.
    OnlyOtherCa,
}

#[derive(Debug, Clone)]
struct Script {
    max_per_host: usize,
    idle_ms: u64,
    read_timeout: bool,
    follow: bool,
    session_max: Option<u32>,
    tls_change: TlsChange,
    /// The TLS settings change this many milliseconds into the second phase (requests are in
    /// flight then), else before it.
    change_at: Option<u8>,
    client_cert: ClientCert,
    /// User code keeps the loop busy (a timer's slot that does not return) for `.2`
    /// milliseconds, `.1` milliseconds into phase `.0`: what arrives meanwhile, and the
    /// deadlines that pass, meet in the turns after it.
    busy: Option<(u8, u8, u8)>,
    /// The callback of request `.0` (modulo their number) keeps the loop busy for `.1`
    /// milliseconds: its connection's idle deadline may pass meanwhile.
    busy_callback: Option<(u8, u8)>,
    requests: Vec<ReqScript>,
}

/// A hop as generated: status, target host, `Location` form (a number), cookie, framing.
type RawHop = (u16, usize, u8, Option<bool>, Frame);

fn hop_strategy() -> impl Strategy<Value = (RawHop, Interim, u8)> {
    let hop = (
        prop::sample::select(vec![301u16, 302, 303, 307, 308]),
        prop_oneof![
            28 => 0..SERVING,
            2 => Just(BLACKHOLE),
            2 => Just(SILENT),
            2 => Just(MIDWAY),
            4 => Just(MTLS)
        ],
        0u8..10,
        prop::option::weighted(0.25, any::<bool>()),
        prop_oneof![
            6 => Just(Frame::Length),
            2 => Just(Frame::Chunked),
            1 => Just(Frame::LengthThenClose),
            1 => Just(Frame::ToClose)
        ],
    );
    let delay = prop_oneof![3 => Just(0u8), 1 => 5u8..120];
    (hop, interim_strategy(), delay)
}

fn script_strategy() -> impl Strategy<Value = Script> {
    let request = (
        (
            prop_oneof![5 => 0..SERVING, 1 => Just(MTLS)],
            prop_oneof![
                3 => Just(Method::Get),
                1 => Just(Method::Head),
                3 => Just(Method::Post),
                2 => Just(Method::Put)
            ],
            prop_oneof![1 => Just(0u8), 4 => 1u8..30],
            prop::bool::weighted(0.4),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.25),
        ),
        (
            prop_oneof![
                1 => Just(RedirectPolicy::DontFollow),
                2 => Just(RedirectPolicy::FollowSameHost),
                2 => Just(RedirectPolicy::FollowSameHostAndProtocol),
                6 => Just(RedirectPolicy::FollowAll)
            ],
            prop::option::weighted(0.3, 0u32..4),
            prop_oneof![6 => Just(None), 1 => Just(Some(700u64)), 1 => Just(Some(150u64))],
            prop::option::weighted(0.3, 0u8..200),
            0u8..2,
            prop::bool::weighted(0.15),
        ),
        prop::collection::vec(hop_strategy(), 0..5),
        (
            prop_oneof![
                12 => prop::option::weighted(0.3, any::<bool>()).prop_map(Final::Ok),
                2 => Just(Final::StallHead),
                2 => Just(Final::StallBody),
                2 => Just(Final::OnlyInterim)
            ],
            interim_strategy(),
        ),
    );
    (
        1usize..=2,
        prop_oneof![2 => Just(5_000u64), 1 => Just(60u64)],
        prop::bool::weighted(0.5),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, 0u32..4),
        prop_oneof![
            4 => Just(TlsChange::None),
            1 => Just(TlsChange::AddCa),
            1 => Just(TlsChange::NoVerify),
            1 => Just(TlsChange::OnlyOtherCa)
        ],
        prop::collection::vec(request, 1..8),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.5, 0u8..80),
        prop_oneof![
            2 => Just(ClientCert::Good),
            1 => Just(ClientCert::None),
            1 => Just(ClientCert::Wrong)
        ],
        prop::option::weighted(0.4, (0u8..2, 0u8..60, 90u8..200)),
        prop::option::weighted(0.2, (any::<u8>(), 80u8..200)),
    )
        .prop_map(
            |(
                max_per_host,
                idle_ms,
                read_timeout,
                no_follow,
                session_max,
                tls_change,
                raw,
                one_host,
                change_at,
                client_cert,
                busy,
                busy_callback,
            )| {
                let first_host = raw[0].0.0;
                let mut requests: Vec<ReqScript> = raw
                    .into_iter()
                    .map(
                        |(
                            (mut host, method, body_len, auth, cookie, stream),
                            (policy, max_redirects, short_total, later, phase, fin_close),
                            hops,
                            (fin, mut fin_interim),
                        )| {
                            if one_host {
                                // Requests queue behind each other's connections.
                                host = first_host;
                            }
                            let body_len = match method {
                                Method::Post | Method::Put => body_len,
                                _ => 0,
                            };
                            let mut from = host;
                            let hops = hops
                                .into_iter()
                                .map(|((status, to, form, cookie, frame), interim, delay)| {
                                    let form = match form {
                                        0 => Form::Missing,
                                        1..=3 if to == from => Form::Path,
                                        4..=5 if https(to) == https(from) => Form::SchemeRelative,
                                        6 => Form::Credentials,
                                        7 => Form::Fragment,
                                        _ => Form::Absolute,
                                    };
                                    from = to;
                                    Hop {
                                        status,
                                        to,
                                        form,
                                        cookie,
                                        frame,
                                        interim,
                                        delay,
                                    }
                                })
                                .collect();
                            // A stall must end in a timeout: without a read timeout, the
                            // request's own short one.
                            let stalls = matches!(fin, Final::StallHead | Final::StallBody);
                            let short_total = match short_total {
                                None if stalls && !read_timeout => Some(700),
                                other => other,
                            };
                            // A stream has no total timeout: its stall needs the read timeout.
                            let stream = stream && (read_timeout || !stalls);
                            if fin == Final::OnlyInterim {
                                fin_interim.count = fin_interim.count.max(1);
                            }
                            ReqScript {
                                host,
                                method,
                                body_len,
                                auth,
                                stream,
                                cookie,
                                policy,
                                max_redirects,
                                short_total,
                                later,
                                phase,
                                hops,
                                fin,
                                fin_close,
                                fin_interim,
                            }
                        },
                    )
                    .collect();
                if one_host && max_per_host == 1 {
                    // First a request the host stalls on: the others wait for its connection,
                    // and those with a short total timeout time out while queued.
                    requests.insert(
                        0,
                        ReqScript {
                            host: first_host,
                            method: Method::Get,
                            body_len: 0,
                            auth: false,
                            stream: false,
                            cookie: false,
                            policy: RedirectPolicy::FollowAll,
                            max_redirects: None,
                            short_total: (!read_timeout).then_some(700),
                            later: None,
                            phase: 0,
                            hops: Vec::new(),
                            fin: Final::StallHead,
                            fin_close: false,
                            fin_interim: Interim::default(),
                        },
                    );
                }
                Script {
                    max_per_host,
                    idle_ms,
                    read_timeout,
                    follow: !no_follow,
                    session_max,
                    tls_change,
                    change_at,
                    client_cert,
                    busy,
                    busy_callback,
                    requests,
                }
            },
        )
}

// ---- the model -------------------------------------------------------------------------------

/// One request the model says a server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Visit {
    host: usize,
    /// Index in the request's chain (the path's last segment).
    hop: usize,
    method: &'static str,
    body: Vec<u8>,
    /// `Content-Type` and `Content-Language`, which go with the body.
    content_type: bool,
    /// The `Authorization` value.
    auth: Option<String>,
    proxy_auth: bool,
    /// The caller's `Cookie` still stands.
    caller_cookie: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A response with this status after this many hops.
    Status(u16, u32),
    TooMany(u32),
    /// A timeout of the read phase (or the total one).
    Stall(TimeoutPhase),
    /// A TLS failure on the way to an https host.
    Tls,
    /// [`MTLS`] refused the session's client certificate (or its lack of one).
    CertRefused,
    /// The server closed after interim responses only, the last of this status.
    NoFinal(u16),
}

fn body_of(r: usize, len: u8) -> Vec<u8> {
    (0..len).map(|i| b'a' + (r as u8 + i) % 26).collect()
}

/// What the documented behaviour makes of request `r`.
/// `tls_fails`: an https hop fails (only an unrelated CA trusted).
fn expect(script: &Script, r: usize, tls_fails: bool) -> (Vec<Visit>, Outcome) {
    let s = &script.requests[r];
    let policy = if script.follow {
        s.policy
    } else {
        RedirectPolicy::DontFollow
    };
    let limit = s.max_redirects.or(script.session_max).unwrap_or(5);
    let mut visit = Visit {
        host: s.host,
        hop: 0,
        method: s.method.as_str(),
        body: body_of(r, s.body_len),
        content_type: s.body_len > 0,
        auth: s.auth.then(|| format!("Bearer t{r}")),
        proxy_auth: s.auth,
        caller_cookie: s.cookie,
    };
    let mut visits = Vec::new();
    loop {
        // No certificate comes from these to be refused.
        if handshake_stalls(visit.host) {
            return (visits, Outcome::Stall(TimeoutPhase::TlsHandshake));
        }
        if tls_fails && https(visit.host) {
            return (visits, Outcome::Tls);
        }
        if visit.host == BLACKHOLE {
            return (visits, Outcome::Stall(TimeoutPhase::Connect));
        }
        if visit.host == MTLS && script.client_cert != ClientCert::Good {
            return (visits, Outcome::CertRefused);
        }
        visits.push(visit.clone());
        let k = visit.hop;
        let Some(hop) = s.hops.get(k) else {
            let outcome = match s.fin {
                Final::Ok(_) => Outcome::Status(200, k as u32),
                Final::StallHead => Outcome::Stall(TimeoutPhase::ResponseHead),
                // A HEAD's response has no body to stall in.
                Final::StallBody if visit.method == "HEAD" => Outcome::Status(200, k as u32),
                Final::StallBody => Outcome::Stall(TimeoutPhase::BodyIdle),
                Final::OnlyInterim => Outcome::NoFinal(s.fin_interim.last().unwrap_or(100)),
            };
            return (visits, outcome);
        };
        let (from, to) = (visit.host, hop.to);
        let allowed = match policy {
            RedirectPolicy::DontFollow => false,
            RedirectPolicy::FollowSameHost => name(from) == name(to),
            RedirectPolicy::FollowSameHostAndProtocol => {
                name(from) == name(to) && https(from) == https(to)
            }
            RedirectPolicy::FollowAll => true,
        };
        if !allowed || hop.form == Form::Missing {
            return (visits, Outcome::Status(hop.status, k as u32));
        }
        if k as u32 >= limit {
            return (visits, Outcome::TooMany(limit));
        }
        let post = visit.method == "POST";
        let (to_get, drop_body) = match hop.status {
            301 | 302 => (post, post),
            303 => (visit.method != "HEAD", true),
            _ => (false, false),
        };
        if to_get {
            visit.method = "GET";
        }
        if drop_body {
            visit.body.clear();
            visit.content_type = false;
        }
        if from != to {
            visit.auth = None;
            visit.proxy_auth = false;
            visit.caller_cookie = false;
        }
        if hop.form == Form::Credentials {
            visit.auth = Some("Basic dTpw".to_string());
        }
        visit.host = to;
        visit.hop = k + 1;
    }
}

// ---- the servers -----------------------------------------------------------------------------

/// One request as a server read it.
#[derive(Debug, Clone)]
struct Arrival {
    case: u64,
    req: Option<usize>,
    hop: usize,
    method: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    /// The connection's serial (per host) and whether it had served before.
    conn: u64,
    reused: bool,
    at: Instant,
    /// The DER of the client certificate presented on the connection, if any.
    client_cert: Option<Vec<u8>>,
    /// Just before the server began to write its answer (after any interim responses): the
    /// client cannot have read the answer earlier.
    answering: Option<Instant>,
}

impl Arrival {
    fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A cookie a server set: its name, the host that set it, Secure or not.
#[derive(Debug, Clone)]
struct SetCookie {
    case: u64,
    name: String,
    host: usize,
    secure: bool,
}

#[derive(Default)]
struct Shared {
    scripts: Mutex<HashMap<(u64, usize), ReqScript>>,
    arrivals: Mutex<Vec<Vec<Arrival>>>,
    cookies: Mutex<Vec<SetCookie>>,
    /// When the client closed each (host, connection), as its server saw: the close read, or a
    /// write failed on the client's reset.
    closed: Mutex<HashMap<(usize, u64), Instant>>,
    /// Why the server stopped serving a (host, connection) without reading its close (a
    /// failure message names it).
    left: Mutex<HashMap<(usize, u64), &'static str>>,
}

struct Servers {
    ports: Vec<u16>,
    shared: Arc<Shared>,
    /// The blackhole's listener and the connections that fill its queue.
    _held: Vec<socket2::Socket>,
}

fn origin(h: usize, ports: &[u16]) -> String {
    let scheme = if https(h) { "https" } else { "http" };
    format!("{scheme}://{}:{}", name(h), ports[h])
}

impl Servers {
    fn start() -> Servers {
        let shared = Arc::new(Shared::default());
        *shared.arrivals.lock().unwrap() = vec![Vec::new(); HOSTS.len()];
        let ports = Arc::new(Mutex::new(Vec::new()));
        let mut held = Vec::new();
        for (h, (tls, _, bind)) in HOSTS.iter().enumerate() {
            let (shared, all) = (Arc::clone(&shared), Arc::clone(&ports));
            if *bind == Some("full") {
                let (addr, sockets) = served::full_listener();
                held = sockets;
                ports.lock().unwrap().push(addr.port());
                continue;
            }
            let listener = match *bind {
                Some(bind) => std::net::TcpListener::bind(bind).unwrap(),
                None => served::ipv4_only_listener(),
            };
            let addr = match h {
                SILENT => served::silent(listener, STALL),
                MIDWAY => served::stalls_mid_handshake(listener, STALL),
                MTLS => {
                    let pki = support::certs::test_pki();
                    let config = kdnet::network::TlsServerConfig::with_client_certificates(
                        pki.server_cert_pem.as_bytes(),
                        pki.server_key_pem.as_bytes(),
                        pki.ca_pem.as_bytes(),
                        Vec::new(),
                    )
                    .unwrap();
                    served::listen_tls_with(
                        listener,
                        config,
                        move |reader, conn, cert| {
                            let ports = all.lock().unwrap().clone();
                            serve(reader, h, conn, cert, &shared, &ports);
                        },
                        |_, _| {},
                    )
                }
                _ => served::listen(listener, *tls, move |reader, conn| {
                    let ports = all.lock().unwrap().clone();
                    serve(reader, h, conn, None, &shared, &ports);
                }),
            };
            ports.lock().unwrap().push(addr.port());
        }
        let ports = ports.lock().unwrap().clone();
        Servers {
            ports,
            shared,
            _held: held,
        }
    }

    fn url(&self, h: usize, path: &str) -> String {
        format!("{}{path}", origin(h, &self.ports))
    }
}

/// `/c{case}/r{req}/{hop}` or `/c{case}/fresh`.
fn parse_path(path: &str) -> Option<(u64, Option<(usize, usize)>)> {
    let rest = path.strip_prefix("/c")?;
    let (case, what) = rest.split_once('/')?;
    let case = case.parse().ok()?;
    if what == "fresh" {
        return Some((case, None));
    }
    let (req, hop) = what.strip_prefix('r')?.split_once('/')?;
    Some((case, Some((req.parse().ok()?, hop.parse().ok()?))))
}

fn response_text(method: &str, path: &str, body: &[u8]) -> String {
    format!("{method} {path} body={}", String::from_utf8_lossy(body))
}

fn serve(
    reader: &mut BufReader<Box<dyn Stream>>,
    host: usize,
    conn: u64,
    client_cert: Option<Vec<u8>>,
    shared: &Shared,
    ports: &[u16],
) {
    let mut served = 0;
    while let Some(seen) = support::read_request(reader) {
        let at = Instant::now();
        let mut parts = seen.line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return leave(shared, host, conn, "unparsable request line");
        };
        let (method, path) = (method.to_string(), path.to_string());
        let Some((case, which)) = parse_path(&path) else {
            return leave(shared, host, conn, "unknown path");
        };
        shared.arrivals.lock().unwrap()[host].push(Arrival {
            case,
            req: which.map(|(r, _)| r),
            hop: which.map_or(0, |(_, k)| k),
            method: method.clone(),
            body: seen.body.clone(),
            headers: seen.headers.clone(),
            conn,
            reused: served > 0,
            at,
            client_cert: client_cert.clone(),
            answering: None,
        });
        let index = shared.arrivals.lock().unwrap()[host].len() - 1;
        served += 1;
        let script = which.and_then(|(r, k)| {
            let s = shared.scripts.lock().unwrap().get(&(case, r)).cloned()?;
            Some((r, k, s))
        });
        let head_only = method == "HEAD";
        let mut head;
        let mut body = Vec::new();
        let mut stall = false;
        let mut close = false;
        let mut cookie = None;
        let interim = match &script {
            Some((_, k, s)) => s.hops.get(*k).map_or(s.fin_interim, |hop| hop.interim),
            None => Interim::default(),
        };
        for head in interim.heads() {
            if !served::write_all(reader, &head) {
                return reset(shared, host, conn, "an interim head's write failed");
            }
        }
        match &script {
            Some((r, k, s)) if *k < s.hops.len() => {
                let hop = s.hops[*k];
                let next = format!("/c{case}/r{r}/{}", k + 1);
                head = format!("HTTP/1.1 {} Moved\r\n", hop.status);
                match hop.form {
                    Form::Absolute => {
                        head.push_str(&format!("Location: {}{next}\r\n", origin(hop.to, ports)))
                    }
                    Form::Path => head.push_str(&format!("Location: {next}\r\n")),
                    Form::SchemeRelative => head.push_str(&format!(
                        "Location: //{}:{}{next}\r\n",
                        name(hop.to),
                        ports[hop.to]
                    )),
                    Form::Missing => {}
                    Form::Credentials => {
                        let to = origin(hop.to, ports).replacen("://", "://u:p@", 1);
                        head.push_str(&format!("Location: {to}{next}\r\n"))
                    }
                    Form::Fragment => head.push_str(&format!(
                        "Location: {}{next}#top\r\n",
                        origin(hop.to, ports)
                    )),
                }
                if !head_only {
                    body = b"moved".to_vec();
                }
                match hop.frame {
                    Frame::Length => head.push_str("Content-Length: 5\r\n"),
                    Frame::Chunked => {
                        head.push_str("Transfer-Encoding: chunked\r\n");
                        if !head_only {
                            body = b"2\r\nmo\r\n3\r\nved\r\n0\r\n\r\n".to_vec();
                        }
                    }
                    Frame::LengthThenClose => {
                        head.push_str("Content-Length: 5\r\nConnection: close\r\n");
                        close = true;
                    }
                    // A HEAD's response has no body, so nothing ends with the close: the
                    // server says it closes (else the client may send its next request on the
                    // connection as it closes, a race no client can win).
                    Frame::ToClose if head_only => {
                        head.push_str("Connection: close\r\n");
                        close = true;
                    }
                    Frame::ToClose => close = true,
                }
                cookie = hop
                    .cookie
                    .map(|secure| (format!("k{case}r{r}h{k}"), secure));
            }
            Some((r, _, s)) => match s.fin {
                Final::Ok(set) => {
                    head = "HTTP/1.1 200 OK\r\n".to_string();
                    let text = response_text(&method, &path, &seen.body);
                    head.push_str(&format!("Content-Length: {}\r\n", text.len()));
                    if !head_only {
                        body = text.into_bytes();
                    }
                    cookie = set.map(|secure| (format!("k{case}r{r}f"), secure));
                    if s.fin_close {
                        head.push_str("Connection: close\r\n");
                        close = true;
                    }
                }
                Final::StallHead => {
                    std::thread::sleep(STALL);
                    return leave(shared, host, conn, "stalled its head");
                }
                Final::StallBody => {
                    head = "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n".to_string();
                    if !head_only {
                        body = vec![b'x'; 20];
                        stall = true;
                    }
                }
                Final::OnlyInterim => {
                    reader.get_mut().finish();
                    break;
                }
            },
            None => {
                head = "HTTP/1.1 200 OK\r\n".to_string();
                let text = response_text(&method, &path, &seen.body);
                head.push_str(&format!("Content-Length: {}\r\n", text.len()));
                if !head_only {
                    body = text.into_bytes();
                }
            }
        }
        if let Some((name, secure)) = cookie {
            let attrs = if secure { "; Secure" } else { "" };
            head.push_str(&format!("Set-Cookie: {name}=v; Path=/{attrs}\r\n"));
            shared.cookies.lock().unwrap().push(SetCookie {
                case,
                name,
                host,
                secure,
            });
        }
        head.push_str("\r\n");
        let delay = script
            .as_ref()
            .and_then(|(_, k, s)| s.hops.get(*k))
            .map_or(0, |hop| hop.delay);
        std::thread::sleep(Duration::from_millis(delay.into()));
        shared.arrivals.lock().unwrap()[host][index].answering = Some(Instant::now());
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        if !served::write_all(reader, &bytes) {
            return reset(shared, host, conn, "the response's write failed");
        }
        if stall {
            std::thread::sleep(STALL);
            return leave(shared, host, conn, "stalled its body");
        }
        if close {
            reader.get_mut().finish();
            break;
        }
    }
    shared
        .closed
        .lock()
        .unwrap()
        .insert((host, conn), Instant::now());
}

/// A write to `(host, conn)` failed: the client reset the connection (it closed it with bytes
/// unread, or before an earlier write of the answer), which is its close as much as one read.
fn reset(shared: &Shared, host: usize, conn: u64, why: &'static str) {
    leave(shared, host, conn, why);
    shared
        .closed
        .lock()
        .unwrap()
        .insert((host, conn), Instant::now());
}

/// Notes why the server stopped serving `(host, conn)` without seeing it close.
fn leave(shared: &Shared, host: usize, conn: u64, why: &'static str) {
    shared.left.lock().unwrap().insert((host, conn), why);
}

// ---- the client side -------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    sent_at: Option<Instant>,
    done_at: Option<Instant>,
    calls: u32,
    result: Option<Result<HttpResponse, HttpError>>,
    /// A stream's heads and data as `on_event` got them, and whether an event came after
    /// `on_done`.
    heads: Vec<HttpResponse>,
    data: Vec<u8>,
    late_event: bool,
}

struct Ctx {
    case: u64,
    script: Script,
    client: Rc<HttpClient>,
    ports: Vec<u16>,
    seen: RefCell<Vec<Seen>>,
    /// When the TLS settings changed, and how many requests each server had read by then.
    changed: RefCell<Option<(Instant, Vec<usize>)>>,
    /// When the loop was kept busy (see [`Script::busy`] and [`Script::busy_callback`]), from
    /// and until.
    busy: RefCell<Vec<(Instant, Instant)>>,
}

impl Ctx {
    fn request(&self, r: usize) -> HttpRequest {
        let s = &self.script.requests[r];
        let url = format!("{}/c{}/r{r}/0", origin(s.host, &self.ports), self.case);
        let mut request = HttpRequest::new(&url).unwrap();
        request.set_method(match s.method {
            Method::Get => HttpMethod::Get,
            Method::Head => HttpMethod::Head,
            Method::Post => HttpMethod::Post,
            Method::Put => HttpMethod::Put,
        });
        if s.body_len > 0 {
            request.set_body(body_of(r, s.body_len));
            request.set_header("Content-Type", "text/plain");
            request.set_header("Content-Language", "en");
        }
        if s.auth {
            request.set_header("Authorization", format!("Bearer t{r}"));
            request.set_header("Proxy-Authorization", "Basic cDp4");
        }
        if s.cookie {
            request.set_header("Cookie", format!("own=r{r}"));
        }
        request.set_header("X-Custom", "keep");
        request.set_redirect_policy(s.policy);
        if let Some(max) = s.max_redirects {
            request.set_max_redirects(max);
        }
        request.set_timeout(s.short_total.map_or(GUARD_TOTAL, Duration::from_millis));
        request
    }
}

fn submit(ctx: &Rc<Ctx>, r: usize) {
    let request = ctx.request(r);
    ctx.seen.borrow_mut()[r].sent_at = Some(Instant::now());
    let c = Rc::clone(ctx);
    let busy = (ctx.script.busy_callback)
        .filter(|(q, _)| usize::from(*q) % ctx.script.requests.len() == r)
        .map(|(_, ms)| Duration::from_millis(ms.into()));
    let on_done = move |result| {
        let from = {
            let mut seen = c.seen.borrow_mut();
            seen[r].calls += 1;
            seen[r].result.get_or_insert(result);
            *seen[r].done_at.get_or_insert_with(Instant::now)
        };
        if let Some(busy) = busy {
            std::thread::sleep(busy);
            c.busy.borrow_mut().push((from, Instant::now()));
        }
    };
    if ctx.script.requests[r].stream {
        let e = Rc::clone(ctx);
        let on_event = move |event: StreamEvent<'_>| {
            let mut seen = e.seen.borrow_mut();
            let me = &mut seen[r];
            me.late_event |= me.calls > 0;
            match event {
                StreamEvent::Head(head) => me.heads.push(head.clone()),
                StreamEvent::Data(data) => me.data.extend_from_slice(data),
            }
        };
        ctx.client.send_streaming(request, on_event, on_done);
    } else {
        ctx.client.send(request, on_done);
    }
}

// ---- one case --------------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);

static STATS: [AtomicU64; 22] = [const { AtomicU64::new(0) }; 22];
const STAT_NAMES: [&str; 22] = [
    "requests",
    "hops followed",
    "cross-origin hops",
    "3xx returned",
    "too many redirects",
    "timeouts (read)",
    "timeouts (total)",
    "total timeouts before reaching any server",
    "https requests on reused connections",
    "tls failures",
    "streams answered",
    "requests in flight at a TLS change",
    "connect timeouts",
    "requests sent past another connection's idle timeout",
    "connections seen closed by the idle timeout",
    "TLS handshake timeouts",
    "interim responses before a response the model follows",
    "closes after interim responses only",
    "client certificates refused (none or a wrong one)",
    "requests answered by the host requiring a client certificate",
    "hops checked against the idle timeout",
    "previous answers written while the loop was busy",
];

fn count(stat: usize, n: usize) {
    STATS[stat].fetch_add(n as u64, Ordering::Relaxed);
}

fn trust(session: &mut HttpSession, change: TlsChange) {
    let pki = support::certs::test_pki();
    match change {
        TlsChange::None => {
            session.enable_certificate_verification();
            session.clear_ca_certificates();
            session.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap();
        }
        TlsChange::AddCa => {
            session
                .add_ca_certificate(pki.other_ca_pem.as_bytes())
                .unwrap();
        }
        TlsChange::NoVerify => session.dangerous_disable_certificate_verification(),
        TlsChange::OnlyOtherCa => {
            session.clear_ca_certificates();
            session
                .add_ca_certificate(pki.other_ca_pem.as_bytes())
                .unwrap();
        }
    }
}

fn run_case(servers: &Servers, script: &Script) -> Result<(), TestCaseError> {
    let case = CASES.fetch_add(1, Ordering::SeqCst);
    {
        let mut scripts = servers.shared.scripts.lock().unwrap();
        for (r, s) in script.requests.iter().enumerate() {
            scripts.insert((case, r), s.clone());
        }
    }
    let mut event_loop = EventLoop::new().unwrap();
    let mut session = HttpSession::new();
    session.set_max_connections_per_host(script.max_per_host);
    session.set_idle_connection_timeout(Duration::from_millis(script.idle_ms));
    if script.read_timeout {
        session.set_read_timeout(READ_TIMEOUT);
    }
    session.set_follow_redirects(script.follow);
    session.set_connect_timeout(CONNECT_TIMEOUT);
    if let Some(max) = script.session_max {
        session.set_max_redirects(max);
    }
    trust(&mut session, TlsChange::None);
    let pki = support::certs::test_pki();
    match script.client_cert {
        ClientCert::None => {}
        ClientCert::Good => session
            .set_client_certificate(
                pki.client_cert_pem.as_bytes(),
                pki.client_key_pem.as_bytes(),
            )
            .unwrap(),
        ClientCert::Wrong => session
            .set_client_certificate(
                pki.untrusted_cert_pem.as_bytes(),
                pki.untrusted_key_pem.as_bytes(),
            )
            .unwrap(),
    }
    let client = HttpClient::with_session(session).unwrap();
    let ctx = Rc::new(Ctx {
        case,
        script: script.clone(),
        client: Rc::clone(&client),
        ports: servers.ports.clone(),
        seen: RefCell::new(
            (0..script.requests.len())
                .map(|_| Seen::default())
                .collect(),
        ),
        changed: RefCell::new(None),
        busy: RefCell::new(Vec::new()),
    });
    // The arrivals before the TLS change (none when there is none).
    let change_tls = {
        let (c, shared) = (Rc::clone(&ctx), Arc::clone(&servers.shared));
        move || {
            let read = shared
                .arrivals
                .lock()
                .unwrap()
                .iter()
                .map(Vec::len)
                .collect();
            *c.changed.borrow_mut() = Some((Instant::now(), read));
            c.client.update_session(|s| trust(s, c.script.tls_change));
        }
    };
    for phase in 0..2u8 {
        if phase == 1 && script.tls_change != TlsChange::None {
            match script.change_at {
                None => change_tls(),
                Some(ms) => {
                    Timer::set_timeout(Duration::from_millis(ms.into()), change_tls.clone())
                        .unwrap();
                }
            }
        }
        if let Some((_, at, ms)) = script.busy.filter(|(p, ..)| *p == phase) {
            let c = Rc::clone(&ctx);
            Timer::set_timeout(Duration::from_millis(at.into()), move || {
                let from = Instant::now();
                std::thread::sleep(Duration::from_millis(ms.into()));
                c.busy.borrow_mut().push((from, Instant::now()));
            })
            .unwrap();
        }
        let mine: Vec<usize> = (0..script.requests.len())
            .filter(|&r| script.requests[r].phase == phase)
            .collect();
        for &r in &mine {
            match script.requests[r].later {
                None => submit(&ctx, r),
                Some(ms) => {
                    let c = Rc::clone(&ctx);
                    Timer::set_timeout(Duration::from_millis(ms.into()), move || submit(&c, r))
                        .unwrap();
                }
            }
        }
        let done = || {
            mine.iter().all(|&r| ctx.seen.borrow()[r].calls > 0)
                && (script.busy.is_none_or(|(p, ..)| p != phase) || !ctx.busy.borrow().is_empty())
                && (phase == 0
                    || script.tls_change == TlsChange::None
                    || ctx.changed.borrow().is_some())
        };
        let finished = support::run_until(&mut event_loop, Duration::from_secs(15), done);
        prop_assert!(
            finished,
            "case {case}: phase {phase}: callbacks still to run (pending {})",
            client.pending_requests()
        );
    }
    // A moment more, for a callback that would run twice.
    support::run_until(&mut event_loop, Duration::from_millis(5), || false);
    prop_assert_eq!(client.pending_requests(), 0, "case {}: requests left", case);
    if script.idle_ms < 1000 {
        // The idle timeout closes the connections it retires: every one whose last request
        // was answered (not stalled on) is closed soon.
        let answered: Vec<(usize, u64)> = {
            let all = servers.shared.arrivals.lock().unwrap();
            let mut last: HashMap<(usize, u64), &Arrival> = HashMap::new();
            for (h, list) in all.iter().enumerate() {
                for a in list.iter().filter(|a| a.case == case) {
                    last.insert((h, a.conn), a);
                }
            }
            last.into_iter()
                .filter(|(_, a)| {
                    let Some(s) = a.req.map(|r| &script.requests[r]) else {
                        return true;
                    };
                    a.hop < s.hops.len()
                        || matches!(s.fin, Final::Ok(_))
                        || (s.fin == Final::StallBody && a.method == "HEAD")
                })
                .map(|(key, _)| key)
                .collect()
        };
        let all_closed = || {
            let closed = servers.shared.closed.lock().unwrap();
            answered.iter().all(|key| closed.contains_key(key))
        };
        let limit = Duration::from_millis(script.idle_ms) + LATE;
        prop_assert!(
            support::run_until(&mut event_loop, limit, all_closed),
            "case {}: connections idle past the idle timeout still open: {:?} of {:?} (client: {} open)",
            case,
            {
                let closed = servers.shared.closed.lock().unwrap();
                let left = servers.shared.left.lock().unwrap();
                let arrivals = servers.shared.arrivals.lock().unwrap();
                answered
                    .iter()
                    .filter(|key| !closed.contains_key(key))
                    .map(|&(h, c)| {
                        let on_it: Vec<String> = arrivals[h]
                            .iter()
                            .filter(|a| a.case == case && a.conn == c)
                            .map(|a| {
                                format!(
                                    "{} r{:?} hop {} reused {} answered {}",
                                    a.method,
                                    a.req,
                                    a.hop,
                                    a.reused,
                                    a.answering.is_some()
                                )
                            })
                            .collect();
                        (h, c, left.get(&(h, c)).copied(), on_it)
                    })
                    .collect::<Vec<_>>()
            },
            answered,
            client.open_connections()
        );
        count(14, answered.len());
    }

    let arrivals: Vec<Vec<(usize, Arrival)>> = {
        let all = servers.shared.arrivals.lock().unwrap();
        all.iter()
            .map(|list| {
                (list.iter().enumerate())
                    .filter(|(_, a)| a.case == case)
                    .map(|(i, a)| (i, a.clone()))
                    .collect()
            })
            .collect()
    };
    let cookies: Vec<SetCookie> = (servers.shared.cookies.lock().unwrap().iter())
        .filter(|c| c.case == case)
        .cloned()
        .collect();
    check_model(case, script, &ctx, &arrivals, &cookies)?;

    // Afterwards: every host still serves (with the test CA trusted again). Without the read
    // timeout: these requests ask whether the client's connections still work, and on a loaded
    // machine a server thread may wait longer than the short `READ_TIMEOUT` for a core (a
    // fresh request failed so once, with `Timeout(ResponseHead)`, under two CPU burners).
    if script.tls_change == TlsChange::OnlyOtherCa {
        client.update_session(|s| trust(s, TlsChange::None));
    }
    client.update_session(|s| s.set_read_timeout(None));
    for h in (0..SERVING).chain([MTLS]) {
        let path = format!("/c{case}/fresh");
        let sent = Instant::now();
        let out = support::get_text(&client, &servers.url(h, &path));
        match support::wait(&mut event_loop, &out) {
            Ok(response) if h != MTLS || script.client_cert == ClientCert::Good => {
                prop_assert_eq!(response.status(), 200);
                prop_assert_eq!(response.text(), response_text("GET", &path, b""));
            }
            Err(e) if h == MTLS && is_cert_refusal(&e, script.client_cert) => {}
            other => {
                return Err(TestCaseError::fail(format!(
                    "case {case}: fresh request to host {h}: {other:?} after {:?} (client certificate {:?})",
                    sent.elapsed(),
                    script.client_cert
                )));
            }
        }
    }
    prop_assert_eq!(client.pending_requests(), 0);
    drop(ctx);
    drop(client);
    drop(event_loop);
    Ok(())
}

/// The pairs of a `Cookie` field.
fn cookie_pairs(value: Option<&str>) -> Vec<String> {
    value.map_or(Vec::new(), |v| {
        v.split(';').map(|p| p.trim().to_string()).collect()
    })
}

fn check_model(
    case: u64,
    script: &Script,
    ctx: &Ctx,
    arrivals: &[Vec<(usize, Arrival)>],
    cookies: &[SetCookie],
) -> Result<(), TestCaseError> {
    let changed = ctx.changed.borrow().clone();
    let busy = ctx.busy.borrow();
    let seen = ctx.seen.borrow();
    let fail = |msg: String| Err(TestCaseError::fail(format!("case {case}: {msg}")));
    // Which cookies the jar may send to host `h`: set by a host of the same name, a Secure one
    // only by a secure context and only to one: https, or a loopback host over plain http too
    // (as browsers treat them; every host here is loopback).
    let secure_context = |h: usize| {
        https(h) || matches!(name(h), "localhost" | "[::1]") || name(h).starts_with("127.")
    };
    let may_go = |c: &SetCookie, h: usize| {
        name(c.host) == name(h) && (!c.secure || (secure_context(c.host) && secure_context(h)))
    };
    for (r, s) in script.requests.iter().enumerate() {
        let me = &seen[r];
        if me.calls != 1 || me.late_event {
            return fail(format!(
                "request {r}: callback ran {} times (an event after it: {})",
                me.calls, me.late_event
            ));
        }
        // Sent after the TLS settings changed (all of it under the new ones), or while
        // they changed (a hop or connection after the change is under the new ones).
        let after_change = s.phase == 1
            && changed
                .as_ref()
                .is_some_and(|(at, _)| me.sent_at.unwrap() >= *at);
        let in_flight = s.phase == 1 && changed.is_some() && !after_change;
        let other_ca = script.tls_change == TlsChange::OnlyOtherCa;
        let (mut visits, mut outcome) = expect(script, r, after_change && other_ca);
        if in_flight {
            count(11, 1);
            let got_len = (arrivals.iter().flatten())
                .filter(|(_, a)| a.req == Some(r))
                .count();
            if other_ca
                && matches!(
                    me.result,
                    Some(Err(HttpError::Transport(SocketError::Tls(
                        TlsFailure::UnknownIssuer
                    ))))
                )
                // The next hop is to an https host (the one that asks for a client
                // certificate is not among the visits when it refuses this one).
                && visits.get(got_len).map_or(
                    got_len == visits.len() && outcome == Outcome::CertRefused,
                    |v| https(v.host),
                )
            {
                visits.truncate(got_len);
                outcome = Outcome::Tls;
            }
        }
        // A stream's head is the final response's, once: a followed redirect's never shows.
        if me.heads.len() > 1
            || me.heads.first().is_some_and(|head| {
                head.status() != 200
                    && !matches!(outcome, Outcome::Status(status, _) if status == head.status())
            })
            || (!s.stream && !me.heads.is_empty())
        {
            return fail(format!("request {r}: stream heads {:?}", me.heads));
        }
        let mut got: Vec<&Arrival> = (arrivals.iter().flatten())
            .filter(|(_, a)| a.req == Some(r))
            .map(|(_, a)| a)
            .collect();
        // In chain order (the hosts' lists are apart).
        got.sort_by_key(|a| (a.hop, a.at));
        let result = me.result.as_ref().unwrap();
        let elapsed = me.done_at.unwrap() - me.sent_at.unwrap();
        count(0, 1);
        if got.iter().any(|a| https(host_of(arrivals, a)) && a.reused) {
            count(8, 1);
        }
        // A request with a short total timeout may end anywhere along its chain.
        let total_timeout = matches!(result, Err(HttpError::Timeout(TimeoutPhase::Total)));
        if total_timeout {
            count(6, 1);
            if got.is_empty() {
                count(7, 1);
            }
            let Some(short) = s
                .short_total
                .map(Duration::from_millis)
                .filter(|_| !s.stream)
            else {
                return fail(format!(
                    "request {r}: Timeout(Total) after {elapsed:?} (expected {outcome:?}, arrivals {got:?})"
                ));
            };
            if elapsed + EARLY < short || elapsed > short + LATE {
                return fail(format!("request {r}: Timeout(Total) after {elapsed:?}"));
            }
        }
        // The hops the servers saw: the model's, in order (a prefix of them when the total
        // timeout ended the request).
        if got.len() > visits.len() || (!total_timeout && got.len() != visits.len()) {
            return fail(format!(
                "request {r}: servers saw {} requests, the model {} ({visits:?}; saw {got:?}; result {result:?})",
                got.len(),
                visits.len()
            ));
        }
        for (v, a) in visits.iter().zip(&got) {
            let h = host_of(arrivals, a);
            let cookie = a.header("cookie");
            let wrong = if h != v.host || a.hop != v.hop {
                Some("at another host or hop".to_string())
            } else if (h == MTLS) != a.client_cert.is_some()
                || a.client_cert
                    .as_ref()
                    .is_some_and(|c| *c != client_cert_der())
            {
                // Only the host that asks for one gets it, and the session's.
                Some(format!(
                    "a client certificate: {}",
                    if a.client_cert.is_some() {
                        "another"
                    } else {
                        "none"
                    }
                ))
            } else if a.method != v.method || a.body != v.body {
                Some(format!("{} with body {:?}", a.method, a.body))
            } else if a.header("content-type").is_some() != v.content_type
                || a.header("content-language").is_some() != v.content_type
            {
                Some(format!("content-type {:?}", a.header("content-type")))
            } else if a.header("authorization") != v.auth.as_deref()
                || a.header("proxy-authorization").is_some() != v.proxy_auth
            {
                Some(format!(
                    "authorization {:?}, proxy {:?}",
                    a.header("authorization"),
                    a.header("proxy-authorization")
                ))
            } else if a.header("x-custom") != Some("keep") {
                Some("no X-Custom".to_string())
            } else if a.header("host") != Some(&format!("{}:{}", name(h), ctx.ports[h])[..]) {
                Some(format!("host {:?}", a.header("host")))
            } else {
                let own = format!("own=r{r}");
                let pairs = cookie_pairs(cookie);
                if v.caller_cookie {
                    (pairs != [own]).then(|| format!("cookie {cookie:?}, the caller's expected"))
                } else {
                    // Only jar cookies that may go here; all that must.
                    let stray = pairs.iter().find(|p| {
                        !cookies
                            .iter()
                            .any(|c| **p == format!("{}=v", c.name) && may_go(c, h))
                    });
                    let hops_before: Vec<String> =
                        (0..v.hop).map(|k| format!("k{case}r{r}h{k}")).collect();
                    let missing = cookies.iter().find(|c| {
                        let needed = hops_before.contains(&c.name)
                            || (s.phase == 1 && set_in_phase0(script, &seen, case, &c.name));
                        needed && may_go(c, h) && !pairs.contains(&format!("{}=v", c.name))
                    });
                    match (stray, missing) {
                        (Some(p), _) => Some(format!("cookie pair {p:?} should not go here")),
                        (_, Some(c)) => Some(format!("cookie {} missing ({cookie:?})", c.name)),
                        _ => None,
                    }
                }
            };
            if let Some(wrong) = wrong {
                return fail(format!(
                    "request {r} hop {}: server {h} saw {wrong}; model {v:?}",
                    a.hop
                ));
            }
            if h == MTLS {
                count(19, 1);
            }
            let interim = s.hops.get(v.hop).map_or(s.fin_interim, |hop| hop.interim);
            count(16, interim.count.into());
            // No request after the TLS settings changed goes on an https connection made
            // before.
            if let Some((_, before_change)) = changed.as_ref().filter(|_| after_change && https(h))
            {
                let old = arrivals[h]
                    .iter()
                    .any(|(i, b)| *i < before_change[h] && b.conn == a.conn);
                if old {
                    return fail(format!(
                        "request {r} hop {}: on an https connection made before the TLS settings changed",
                        a.hop
                    ));
                }
            }
        }
        if total_timeout {
            continue;
        }
        count(1, visits.len().saturating_sub(1));
        count(
            2,
            visits.windows(2).filter(|w| w[0].host != w[1].host).count(),
        );
        match (&outcome, result) {
            (Outcome::Status(status, hops), Ok(response)) => {
                if response.status() != *status || response.redirect_count() != *hops {
                    return fail(format!(
                        "request {r}: status {} after {} redirects, expected {outcome:?}",
                        response.status(),
                        response.redirect_count()
                    ));
                }
                if *status != 200 {
                    count(3, 1);
                }
                let last = visits.last().unwrap();
                let path = format!("/c{case}/r{r}/{}", last.hop);
                let url = format!("{}{path}", origin(last.host, &ctx.ports));
                if response.url().as_str() != url {
                    return fail(format!(
                        "request {r}: response URL {}, expected {url}",
                        response.url()
                    ));
                }
                let text = if s.method == Method::Head {
                    String::new()
                } else if *status == 200 {
                    response_text(last.method, &path, &last.body)
                } else {
                    "moved".to_string()
                };
                let body = if s.stream {
                    let head_ok = matches!(me.heads.as_slice(), [head]
                        if head.status() == *status && head.body().is_empty());
                    if !head_ok || !response.body().is_empty() {
                        return fail(format!(
                            "request {r}: stream heads {:?}, response {response:?}",
                            me.heads
                        ));
                    }
                    count(10, 1);
                    String::from_utf8_lossy(&me.data).into_owned()
                } else {
                    response.text().into_owned()
                };
                if body != text {
                    return fail(format!("request {r}: body {body:?}, expected {text:?}"));
                }
            }
            (Outcome::TooMany(limit), Err(HttpError::TooManyRedirects { limit: l }))
                if limit == l =>
            {
                count(4, 1);
            }
            (
                Outcome::Stall(TimeoutPhase::Connect),
                Err(HttpError::Timeout(TimeoutPhase::Connect)),
            ) => {
                count(12, 1);
                if elapsed + EARLY < CONNECT_TIMEOUT {
                    return fail(format!("request {r}: Timeout(Connect) after {elapsed:?}"));
                }
            }
            (
                Outcome::Stall(TimeoutPhase::TlsHandshake),
                Err(HttpError::Timeout(TimeoutPhase::TlsHandshake)),
            ) => {
                // The connect timeout covers the connect and the handshake together.
                count(15, 1);
                if elapsed + EARLY < CONNECT_TIMEOUT {
                    return fail(format!(
                        "request {r}: Timeout(TlsHandshake) after {elapsed:?}"
                    ));
                }
            }
            (Outcome::CertRefused, Err(e)) if is_cert_refusal(e, script.client_cert) => {
                count(18, 1);
            }
            (Outcome::NoFinal(status), Err(HttpError::NoFinalResponse { interim }))
                if status == interim =>
            {
                count(17, 1);
            }
            (Outcome::Stall(phase), Err(HttpError::Timeout(p))) if phase == p => {
                count(5, 1);
                // The read timeout runs from when the request was written (after the hops
                // and any wait for a connection; before the server read it).
                let written_by = got.last().map_or(me.sent_at.unwrap(), |a| a.at);
                if !script.read_timeout
                    || elapsed + EARLY < READ_TIMEOUT
                    || me.done_at.unwrap() > written_by + READ_TIMEOUT + LATE
                {
                    return fail(format!("request {r}: {p:?} after {elapsed:?}"));
                }
            }
            (
                Outcome::Tls,
                Err(HttpError::Transport(SocketError::Tls(TlsFailure::UnknownIssuer))),
            ) => {
                count(9, 1);
            }
            _ => {
                return fail(format!(
                    "request {r}: {result:?}, expected {outcome:?} (sent after {elapsed:?})"
                ));
            }
        }
    }
    // A request (or redirect hop) sent long after every earlier use of a connection ended does
    // not reuse it: the idle timeout retired it, whether or not its timer has run yet.
    let idle = Duration::from_millis(script.idle_ms);
    for (h, list) in arrivals.iter().enumerate() {
        for (n, (_, a)) in list.iter().enumerate() {
            let Some(r) = a.req else {
                continue;
            };
            // A hop goes out once the previous hop's answer came: after its server read it, and
            // after the loop was busy if that answer was written while it was (the loop read it
            // only then).
            let sent = if a.hop == 0 {
                seen[r].sent_at.unwrap()
            } else {
                let previous = (arrivals.iter().flatten())
                    .filter(|(_, b)| b.req == Some(r) && b.hop + 1 == a.hop)
                    .map(|(_, b)| {
                        let after = (busy.iter())
                            .filter(|(from, _)| b.answering.is_some_and(|w| w >= *from))
                            .map(|(_, until)| *until)
                            .max();
                        if after.is_some() {
                            count(21, 1);
                        }
                        after.map_or(b.at, |until| until.max(b.at))
                    })
                    .max();
                let Some(previous) = previous else {
                    continue;
                };
                count(20, 1);
                previous
            };
            // When each connection's last use before this request ended, at the latest.
            let mut last_uses: HashMap<u64, Instant> = HashMap::new();
            for (_, b) in &list[..n] {
                let end = match b.req {
                    Some(q) => seen[q].done_at.unwrap(),
                    None => b.at,
                };
                let at = last_uses.entry(b.conn).or_insert(end);
                *at = (*at).max(end);
            }
            if !a.reused {
                let past =
                    |(_, at): (&u64, &Instant)| sent > *at + idle + Duration::from_millis(30);
                if last_uses.iter().any(past) {
                    count(13, 1);
                }
                continue;
            }
            let last_use = last_uses.get(&a.conn).copied();
            if let Some(last_use) = last_use
                && sent > last_use + idle + Duration::from_millis(30)
            {
                return fail(format!(
                    "request {r}: sent {:?} after the last use of connection {} of host {h} ended, on it (idle timeout {idle:?})",
                    sent - last_use,
                    a.conn
                ));
            }
        }
    }
    Ok(())
}

/// Whether `e` is [`MTLS`]'s refusal of the session's client certificate `cert` (none, or one
/// of an unrelated CA), as the TLS alert it sends: the wrong one is a server certificate
/// (serverAuth only), refused for its purpose before its issuer is looked at.
fn is_cert_refusal(e: &HttpError, cert: ClientCert) -> bool {
    let expected = match cert {
        ClientCert::None => "CertificateRequired",
        ClientCert::Wrong => "UnsupportedCertificate",
        ClientCert::Good => return false,
    };
    matches!(e, HttpError::Transport(SocketError::Tls(TlsFailure::AlertReceived(alert))) if alert == expected)
}

/// The DER of the test PKI's client certificate.
fn client_cert_der() -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = &support::certs::test_pki().client_cert_pem;
    (rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).next())
        .unwrap()
        .unwrap()
        .to_vec()
}

fn host_of(arrivals: &[Vec<(usize, Arrival)>], a: &Arrival) -> usize {
    (0..HOSTS.len())
        .find(|&h| arrivals[h].iter().any(|(_, b)| std::ptr::eq(b, a)))
        .unwrap()
}

/// Whether cookie `name` (`k{case}r{req}…`) was set by a request of the first phase that did
/// not time out (which may have been before the response with the cookie was read).
fn set_in_phase0(script: &Script, seen: &[Seen], case: u64, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!("k{case}r")) else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<usize>().is_ok_and(|r| {
        script.requests.get(r).is_some_and(|s| s.phase == 0)
            && !matches!(seen[r].result, Some(Err(HttpError::Timeout(_))))
    })
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn redirects_tls_and_timeouts_match_the_model() {
    let servers = Servers::start();
    let mut runner = TestRunner::new(Config {
        max_shrink_iters: 1000,
        max_shrink_time: 60_000,
        ..support::model::config(15)
    });
    let started = Instant::now();
    let result = runner.run(&script_strategy(), |script| run_case(&servers, &script));
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}

/// The model's server counts a connection its client reset while an answer was due (the
/// answer's write failed) as closed by the client, as much as one whose close it read. It
/// counted only a close it read: a client that closed a connection with the server's interim
/// response unread (its total timeout passed during a busy spell of the loop, before the read)
/// reset it, the server's next write failed, and the idle-close check reported the connection
/// "idle past the idle timeout still open" (twice in ~2,000 release cases).
#[test]
fn a_connection_the_client_resets_before_the_answer_counts_as_closed() {
    use std::io::{Read, Write};
    let servers = Servers::start();
    let case = CASES.fetch_add(1, Ordering::SeqCst);
    let host = 4;
    assert_eq!((https(host), name(host)), (false, "127.0.0.1"));
    // A 307 after one interim response and a wait: the client is gone when it is written.
    let hop = Hop {
        status: 307,
        to: host,
        form: Form::Path,
        cookie: None,
        frame: Frame::Length,
        interim: Interim { count: 1, codes: 0 },
        delay: 120,
    };
    let script = ReqScript {
        host,
        method: Method::Get,
        body_len: 0,
        auth: false,
        stream: false,
        cookie: false,
        policy: RedirectPolicy::FollowAll,
        max_redirects: None,
        short_total: Some(30),
        later: None,
        phase: 0,
        hops: vec![hop],
        fin: Final::Ok(None),
        fin_close: false,
        fin_interim: Interim::default(),
    };
    servers
        .shared
        .scripts
        .lock()
        .unwrap()
        .insert((case, 0), script);
    let mut client = std::net::TcpStream::connect(("127.0.0.1", servers.ports[host])).unwrap();
    client
        .write_all(format!("GET /c{case}/r0/0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    // The interim response came: the server read the request and waits before the 307.
    let mut interim = [0; 12];
    client.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100");
    // Closed with bytes unread (forced here): the kernel resets the connection.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let conn = {
        let arrivals = servers.shared.arrivals.lock().unwrap();
        let arrival = arrivals[host].iter().find(|a| a.case == case).unwrap();
        arrival.conn
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !servers
        .shared
        .closed
        .lock()
        .unwrap()
        .contains_key(&(host, conn))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        servers
            .shared
            .closed
            .lock()
            .unwrap()
            .contains_key(&(host, conn)),
        "the server did not count the reset connection closed (it left it: {:?})",
        servers.shared.left.lock().unwrap().get(&(host, conn))
    );
}
