//! A randomised, model-based test of TLS verification and configuration: certificates made
//! with rcgen at test time, a kdnet client (`SslSocket`, or `HttpClient` over https) and a TLS
//! server (the crate's `TcpServer`, or plain rustls on a thread, which sees the SNI and can
//! speak TLS 1.2 only) over real loopback.
//!
//! Each generated case picks the server's certificate (ECDSA P-256, P-384 or Ed25519, for the
//! leaf and for its CAs; signed by the root, by an intermediate that the server sends or not, by
//! an untrusted CA, or self-signed; valid, expired or not yet valid; DNS names exact and
//! wildcard, IPv4 and IPv6 addresses, or no subjectAltName at all, its one name then only in
//! the common name), what the client trusts (the system store with CAs added, or only the CAs
//! given, in one PEM or added one by one, on the config or on the socket; or nothing checked,
//! through the dangerous switch), how it connects (`localhost`, `127.0.0.1`, `::1`, or an
//! address with `set_peer_verify_name`), the ALPN lists of both sides, and whether the server
//! asks for a client certificate (required, optional, not; trusting one CA or two) and which
//! one the client has (one the server trusts, of any key type; an untrusted or expired one;
//! none). PEM inputs are given in a benign variant
//! (CRLF line ends, text around the sections, a byte order mark). Some cases connect a second
//! time with the same socket (KDNetwork T2: settings survive a disconnect). A client connecting
//! to `localhost` tries `::1` first: the crate's server listens there too, the thread server
//! (on 127.0.0.1) holds its port on `::1` bound but not listening, so that attempt is refused
//! and the client goes on to 127.0.0.1, and no other process's listener can take the attempt.
//!
//! The reference model (RFC 5280 path validation and RFC 6125 name matching as webpki applies
//! them, RFC 7301 for ALPN, the crate's docs: `tls` module, `TlsClientConfig`, `SslSocket`,
//! `TcpSocket::handshake_error`, PORTING.md's TLS rows) predicts, in this order of precedence:
//! an ALPN mismatch (both lists non-empty, nothing in common) fails at the server
//! (`NoApplicationProtocol` on the client); with verification on, an expired or not yet valid
//! leaf is `Expired`/`NotValidYet`, a chain that does not reach a trusted certificate is
//! `SelfSigned` for a self-issued leaf and `UnknownIssuer` otherwise, and a leaf not valid
//! for the name is `NameMismatch` listing its subjectAltNames (the common name never counts;
//! a wildcard stands for exactly one label and needs two labels after it; IP literals match
//! IP-address SANs only and send no SNI, KDNetwork T4); then the server checks the client
//! certificate (none when required: `BadCertificate`; an untrusted one: `UnknownIssuer`; an
//! expired one: `Expired`). A CA that only has a trusted root's name (another key) vouches for
//! nothing: its certificates are `UnknownIssuer`, a self-signed one still `SelfSigned`.
//! The end that finds the problem reports `handshake_error` then `error_occurred` with the same
//! typed error, the other end the alert it received; TLS 1.3 completes the client's handshake
//! before the server judges its certificate, so there the client sees `handshake_completed`
//! and then only `error_occurred`. A connection that fails never delivers application data to
//! either side; one that succeeds reports `is_encrypted()`, the negotiated ALPN protocol (the
//! server's first choice the client offered), the TLS version, and the peer's certificate
//! chain on both ends (the server's as sent; the client's only where the server asked).
//!
//! A second, network-free property feeds broken and odd PEM to every PEM-taking entry point
//! (`TlsClientConfig::{with_only_ca_certificates, add_ca_certificate, set_client_certificate}`,
//! `TlsServerConfig::from_pem`, `HttpSession::{add_ca_certificate, set_client_certificate}`)
//! and predicts success or the `TlsFailure::Configuration` error and the words its message
//! uses for the reason.
//!
//! `PROPTEST_CASES` sets the number of cases of each (default 100 handshakes and 128 PEM inputs,
//! about 2 s in a debug build).

mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, HttpSession};
use kdnet::network::{
    SocketError, SocketState, SslSocket, TcpServer, TcpSocket, TlsClientConfig, TlsFailure,
    TlsServerConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::model::{config, finish_counted};
use support::socket_events::SocketEvent as Ev;

// ---- certificates ------------------------------------------------------------------------

/// A key type rcgen makes with *ring*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Alg {
    P256,
    P384,
    Ed25519,
}

const ALGS: [Alg; 3] = [Alg::P256, Alg::P384, Alg::Ed25519];

fn key_pair(alg: Alg) -> KeyPair {
    KeyPair::generate_for(match alg {
        Alg::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Alg::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Alg::Ed25519 => &rcgen::PKCS_ED25519,
    })
    .expect("key pair")
}

/// Who signed a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Signer {
    Root,
    /// The intermediate, which the root signed.
    Intermediate,
    /// A CA that the client trusts only when the case says so.
    Other,
    /// A CA with the root's name and a key of another type (never trusted: a trust anchor is
    /// its key, not its name).
    Impostor,
    /// A CA with the root's name and another key of the same type (a CA made again).
    Twin,
    SelfSigned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Validity {
    Valid,
    /// 2000 only.
    Expired,
    /// From 2100 on.
    NotYetValid,
}

/// A subjectAltName entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum San {
    Localhost,
    Svc,
    /// `*.svc.localhost`: one label before `svc.localhost`.
    WildSvc,
    /// `*.localhost`: only one label after the wildcard, which webpki (as NSS) never matches.
    WildLocalhost,
    Ip4,
    Ip6,
    OtherName,
}

const SANS: [San; 7] = [
    San::Localhost,
    San::Svc,
    San::WildSvc,
    San::WildLocalhost,
    San::Ip4,
    San::Ip6,
    San::OtherName,
];

impl San {
    fn text(self) -> &'static str {
        match self {
            San::Localhost => "localhost",
            San::Svc => "svc.localhost",
            San::WildSvc => "*.svc.localhost",
            San::WildLocalhost => "*.localhost",
            San::Ip4 => "127.0.0.1",
            San::Ip6 => "::1",
            San::OtherName => "other.example",
        }
    }
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// The CAs of one key type: a root, an intermediate it signed, an unrelated CA, a CA with the
/// root's name and another key type, and a CA named like the server leaves (`CN=localhost`).
struct Cas {
    root: Ca,
    intermediate: Ca,
    other: Ca,
    impostor: Ca,
    twin: Ca,
    namesake: Ca,
}

fn make_ca(name: String, alg: Alg, signer: Option<&Ca>) -> Ca {
    let key = key_pair(alg);
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = match signer {
        None => params.self_signed(&key),
        Some(ca) => params.signed_by(&key, &ca.issuer),
    }
    .expect("CA certificate");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// The CAs of `alg`, made once per process.
fn cas(alg: Alg) -> &'static Cas {
    static CAS: [OnceLock<Cas>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let index = ALGS.iter().position(|&a| a == alg).unwrap();
    CAS[index].get_or_init(|| {
        let root = make_ca(format!("kdnet model root {alg:?}"), alg, None);
        let intermediate = make_ca(
            format!("kdnet model intermediate {alg:?}"),
            alg,
            Some(&root),
        );
        let other = make_ca(format!("kdnet model untrusted CA {alg:?}"), alg, None);
        let another = match alg {
            Alg::Ed25519 => Alg::P256,
            _ => Alg::Ed25519,
        };
        let impostor = make_ca(format!("kdnet model root {alg:?}"), another, None);
        let twin = make_ca(format!("kdnet model root {alg:?}"), alg, None);
        let namesake = make_ca("localhost".to_owned(), alg, None);
        Cas {
            root,
            intermediate,
            other,
            impostor,
            twin,
            namesake,
        }
    })
}

/// What a leaf certificate is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeafSpec {
    signer: Signer,
    ca_alg: Alg,
    alg: Alg,
    validity: Validity,
    sans: Vec<San>,
    /// A client certificate (clientAuth, common name `test-client`); else a server one
    /// (serverAuth, common name `localhost`).
    client: bool,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

/// The leaf for `spec`, made once per process.
fn leaf(spec: &LeafSpec) -> Arc<Leaf> {
    static LEAVES: OnceLock<Mutex<HashMap<LeafSpec, Arc<Leaf>>>> = OnceLock::new();
    let leaves = LEAVES.get_or_init(Mutex::default);
    if let Some(leaf) = leaves.lock().unwrap().get(spec) {
        return leaf.clone();
    }
    let made = Arc::new(make_leaf(spec));
    leaves
        .lock()
        .unwrap()
        .entry(spec.clone())
        .or_insert(made)
        .clone()
}

fn make_leaf(spec: &LeafSpec) -> Leaf {
    let cas = cas(spec.ca_alg);
    let key = key_pair(spec.alg);
    let names: Vec<String> = spec.sans.iter().map(|s| s.text().to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    let common_name = if spec.client {
        "test-client"
    } else {
        "localhost"
    };
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = spec.signer != Signer::SelfSigned;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if spec.client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    match spec.validity {
        Validity::Valid => {}
        Validity::Expired => {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        Validity::NotYetValid => {
            params.not_before = date_time_ymd(2100, 1, 1);
            params.not_after = date_time_ymd(2101, 1, 1);
        }
    }
    let cert = match spec.signer {
        Signer::Root => params.signed_by(&key, &cas.root.issuer),
        Signer::Intermediate => params.signed_by(&key, &cas.intermediate.issuer),
        Signer::Other => params.signed_by(&key, &cas.other.issuer),
        Signer::Impostor => params.signed_by(&key, &cas.impostor.issuer),
        Signer::Twin => params.signed_by(&key, &cas.twin.issuer),
        Signer::SelfSigned => params.self_signed(&key),
    }
    .expect("leaf certificate");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// A client certificate with a key of type `alg`, signed by the root or by the unrelated CA.
fn client_leaf(ca_alg: Alg, signer: Signer, alg: Alg, validity: Validity) -> Arc<Leaf> {
    leaf(&LeafSpec {
        signer,
        ca_alg,
        alg,
        validity,
        sans: Vec::new(),
        client: true,
    })
}

fn first_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// How a PEM text is written; each form reads as the same certificates or key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PemForm {
    AsIs,
    /// CRLF line ends (Windows).
    Crlf,
    /// Text lines before and after the sections (what `openssl pkcs12` and `openssl x509
    /// -text` write around them), the last without a line break.
    Junk,
    /// A UTF-8 byte order mark first (Windows editors).
    Bom,
}

fn written(pem: &str, form: PemForm) -> Vec<u8> {
    match form {
        PemForm::AsIs => pem.as_bytes().to_vec(),
        PemForm::Crlf => pem.replace('\n', "\r\n").into_bytes(),
        PemForm::Junk => format!(
            "Bag Attributes\n    friendlyName: kdnet\nsubject=/CN=whatever\n{pem}\nsome trailing text"
        )
        .into_bytes(),
        PemForm::Bom => [&b"\xEF\xBB\xBF"[..], pem.as_bytes()].concat(),
    }
}

// ---- the case --------------------------------------------------------------------------

/// A certificate the client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Root,
    Intermediate,
    Other,
    /// A CA named like the server's leaves (`CN=localhost`), as some systems trust a
    /// "snakeoil" certificate: it vouches for nothing here.
    Namesake,
    /// The server's own certificate (meaningful for a self-signed one).
    Leaf,
}

#[derive(Debug, Clone)]
struct Trust {
    /// The system store as well (`TlsClientConfig::new` and `add_ca_certificate`), else only
    /// the anchors (`with_only_ca_certificates`).
    system: bool,
    anchors: Vec<Anchor>,
    /// All anchors in one PEM, else added one by one.
    one_pem: bool,
    /// Added through `SslSocket::add_ca_certificate` rather than on the config.
    on_socket: bool,
    form: PemForm,
    /// `dangerous_disable_certificate_verification`.
    dangerous: bool,
}

/// How the client connects, and the name it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `connect_to_host` (an https URL's host for the HTTP client).
    Host(&'static str),
    /// `connect_to_address(127.0.0.1)` with `set_peer_verify_name(name)`.
    Named(&'static str),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Host(name) | Target::Named(name) => name,
        }
    }

    fn ip(self) -> Option<IpAddr> {
        self.name().parse().ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// The crate's `TcpServer`, configured through `TlsServerConfig` (a hand-built rustls
    /// config for optional client certificates, which `TlsServerConfig` does not offer).
    Kdnet,
    /// rustls on a thread speaking only this version, recording the SNI.
    Thread(Version),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCert {
    None,
    /// Signed by the root, with a key of this type.
    Trusted(Alg),
    /// Signed by the unrelated CA.
    Untrusted,
    /// Signed by the root, expired.
    Expired,
}

#[derive(Debug, Clone)]
struct Case {
    leaf: LeafSpec,
    send_intermediate: bool,
    server_form: PemForm,
    trust: Trust,
    target: Target,
    server: ServerKind,
    client_auth: ClientAuth,
    client_cert: ClientCert,
    /// The server trusts client certificates of the unrelated CA too (its client CA PEM holds
    /// both).
    server_trusts_other: bool,
    client_alpn: Vec<&'static [u8]>,
    server_alpn: Vec<&'static [u8]>,
    /// Through `HttpClient` (which offers `http/1.1`) instead of an `SslSocket`.
    http: bool,
    /// Connect a second time with the same socket (client).
    twice: bool,
}

impl Case {
    fn version(&self) -> Version {
        match self.server {
            ServerKind::Thread(version) => version,
            ServerKind::Kdnet => Version::Tls13,
        }
    }

    fn client_alpn(&self) -> Vec<&'static [u8]> {
        if self.http {
            vec![b"http/1.1"]
        } else {
            self.client_alpn.clone()
        }
    }
}

fn alpn_list() -> impl Strategy<Value = Vec<&'static [u8]>> {
    let names: [&'static [u8]; 3] = [b"h2", b"http/1.1", b"kd"];
    proptest::sample::subsequence(names.to_vec(), 0..=2).prop_shuffle()
}

fn pem_form() -> impl Strategy<Value = PemForm> {
    prop_oneof![
        3 => Just(PemForm::AsIs),
        1 => Just(PemForm::Crlf),
        1 => Just(PemForm::Junk),
        1 => Just(PemForm::Bom),
    ]
}

fn alg() -> impl Strategy<Value = Alg> {
    proptest::sample::select(ALGS.to_vec())
}

fn leaf_spec() -> impl Strategy<Value = LeafSpec> {
    (
        prop_oneof![
            8 => Just(Signer::Root),
            3 => Just(Signer::Intermediate),
            1 => Just(Signer::Other),
            1 => Just(Signer::Impostor),
            1 => Just(Signer::Twin),
            1 => Just(Signer::SelfSigned),
        ],
        alg(),
        alg(),
        prop_oneof![
            10 => Just(Validity::Valid),
            1 => Just(Validity::Expired),
            1 => Just(Validity::NotYetValid),
        ],
        prop_oneof![
            // Usually the names the test connects by; sometimes any others, or none.
            4 => Just(vec![San::Localhost, San::Ip4, San::Ip6]),
            2 => Just(vec![San::Localhost, San::Svc, San::WildSvc, San::Ip4, San::Ip6]),
            3 => proptest::sample::subsequence(SANS.to_vec(), 0..=4),
        ],
    )
        .prop_map(|(signer, ca_alg, alg, validity, sans)| LeafSpec {
            signer,
            ca_alg,
            alg,
            validity,
            sans,
            client: false,
        })
}

fn trust() -> impl Strategy<Value = Trust> {
    let anchor = prop_oneof![
        8 => Just(Anchor::Root),
        1 => Just(Anchor::Intermediate),
        1 => Just(Anchor::Other),
        1 => Just(Anchor::Namesake),
        1 => Just(Anchor::Leaf),
    ];
    (
        any::<bool>(),
        // Usually the root first, then any others.
        prop_oneof![3 => Just(vec![Anchor::Root]), 1 => Just(Vec::new())],
        proptest::collection::vec(anchor, 0..=2),
        any::<bool>(),
        prop_oneof![3 => Just(false), 1 => Just(true)],
        pem_form(),
        prop_oneof![6 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(system, mut anchors, more, one_pem, on_socket, form, dangerous)| {
                for anchor in more {
                    if !anchors.contains(&anchor) {
                        anchors.push(anchor);
                    }
                }
                if !system && anchors.is_empty() {
                    anchors.push(Anchor::Root);
                }
                Trust {
                    system,
                    anchors,
                    one_pem,
                    on_socket,
                    form,
                    dangerous,
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        leaf_spec(),
        any::<bool>(),
        pem_form(),
        trust(),
        prop_oneof![
            3 => Just(Target::Host("localhost")),
            3 => Just(Target::Host("127.0.0.1")),
            3 => Just(Target::Host("::1")),
            1 => Just(Target::Named("svc.localhost")),
            1 => Just(Target::Named("a.svc.localhost")),
            1 => Just(Target::Named("b.a.svc.localhost")),
            // DNS names compare without regard to case (RFC 6125 §6.4.1).
            1 => Just(Target::Named("A.Svc.LocalHost")),
        ],
        prop_oneof![
            2 => Just(ServerKind::Kdnet),
            1 => Just(ServerKind::Thread(Version::Tls13)),
            1 => Just(ServerKind::Thread(Version::Tls12)),
        ],
        prop_oneof![2 => Just(ClientAuth::None), 1 => Just(ClientAuth::Optional), 1 => Just(ClientAuth::Required)],
        (
            prop_oneof![
                2 => Just(ClientCert::None),
                3 => alg().prop_map(ClientCert::Trusted),
                1 => Just(ClientCert::Untrusted),
                1 => Just(ClientCert::Expired),
            ],
            prop_oneof![3 => Just(false), 1 => Just(true)],
        ),
        (alpn_list(), alpn_list()),
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(
                leaf,
                send_intermediate,
                server_form,
                trust,
                target,
                server,
                client_auth,
                (client_cert, server_trusts_other),
                (client_alpn, server_alpn),
                http,
                twice,
            )| {
                // The HTTP client connects by URL host (no verify-name override) and speaks
                // HTTP, which the thread server does not.
                let http = http && matches!(target, Target::Host(_));
                let server = if http { ServerKind::Kdnet } else { server };
                Case {
                    leaf,
                    send_intermediate,
                    server_form,
                    trust,
                    target,
                    server,
                    client_auth,
                    client_cert,
                    server_trusts_other,
                    client_alpn,
                    server_alpn,
                    http,
                    twice,
                }
            },
        )
}

// ---- the model ---------------------------------------------------------------------------

/// Why the client refuses the server's certificate.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    Expired,
    NotValidYet,
    SelfSigned,
    UnknownIssuer,
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
}

impl Refusal {
    /// The alert rustls sends for it (RFC 8446 §6.2), which the server reports.
    fn alert(&self) -> &'static str {
        match self {
            Refusal::Expired | Refusal::NotValidYet => "CertificateExpired",
            Refusal::UnknownIssuer => "UnknownCA",
            Refusal::NameMismatch { .. } => "BadCertificate",
            // An error of kdnet's own verifier (rustls: `CertificateError::Other`).
            Refusal::SelfSigned => "CertificateUnknown",
        }
    }

    fn failure(&self) -> TlsFailure {
        match self {
            Refusal::Expired => TlsFailure::Expired,
            Refusal::NotValidYet => TlsFailure::NotValidYet,
            Refusal::SelfSigned => TlsFailure::SelfSigned,
            Refusal::UnknownIssuer => TlsFailure::UnknownIssuer,
            Refusal::NameMismatch {
                expected,
                presented,
            } => TlsFailure::NameMismatch {
                expected: expected.clone(),
                presented: presented.clone(),
            },
        }
    }
}

/// What the server reports when its handshake fails.
#[derive(Debug, Clone, PartialEq)]
enum ServerFailure {
    /// It received this alert.
    Alert(String),
    /// The client offered none of its ALPN protocols.
    NoAlpn,
    /// A client certificate was required and none came.
    NoClientCertificate,
    /// The client's certificate does not lead to its client CA.
    UntrustedClient,
    /// The client's certificate has expired.
    ExpiredClient,
}

#[derive(Debug, Clone, PartialEq)]
enum Predicted {
    Up {
        alpn: Option<Vec<u8>>,
        /// The server sees the client's certificate.
        client_certificate: bool,
    },
    /// The client's verification refuses the server.
    ClientRefuses(Refusal),
    /// The server refuses the handshake; the client gets this alert.
    ServerRefuses(ServerFailure, &'static str),
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        // RFC 6125 §6.4.3 as webpki (and NSS) apply it: the wildcard is the whole left-most
        // label, stands for exactly one label, and needs at least two labels after it.
        Some(rest) => {
            rest.split('.').count() >= 2
                && name
                    .split_once('.')
                    .is_some_and(|(label, tail)| !label.is_empty() && tail == rest)
        }
        None => pattern == name,
    }
}

fn valid_for_name(sans: &[San], target: Target) -> bool {
    match target.ip() {
        // RFC 6125 §1.7.2 / RFC 5280: an IP reference identity matches iPAddress SANs only.
        Some(ip) => sans
            .iter()
            .any(|san| san.text().parse::<IpAddr>().ok() == Some(ip)),
        // A DNS reference identity matches dNSName SANs only; the common name never counts.
        None => sans
            .iter()
            .filter(|san| san.text().parse::<IpAddr>().is_err())
            .any(|san| dns_matches(san.text(), target.name())),
    }
}

/// Whether the chain the server sends reaches a certificate the client trusts.
fn chain_trusted(case: &Case) -> bool {
    let anchors = &case.trust.anchors;
    match case.leaf.signer {
        Signer::Root => anchors.contains(&Anchor::Root),
        Signer::Intermediate => {
            anchors.contains(&Anchor::Intermediate)
                || (case.send_intermediate && anchors.contains(&Anchor::Root))
        }
        Signer::Other => anchors.contains(&Anchor::Other),
        Signer::Impostor | Signer::Twin => false,
        Signer::SelfSigned => anchors.contains(&Anchor::Leaf),
    }
}

fn predict(case: &Case) -> Predicted {
    let client_alpn = case.client_alpn();
    // RFC 7301 §3.2 (rustls): the server's first protocol that the client offered; none in
    // common when both offered some is fatal, at the server, before any certificate.
    let alpn = case
        .server_alpn
        .iter()
        .find(|p| client_alpn.contains(p))
        .map(|p| p.to_vec());
    if alpn.is_none() && !client_alpn.is_empty() && !case.server_alpn.is_empty() {
        return Predicted::ServerRefuses(ServerFailure::NoAlpn, "NoApplicationProtocol");
    }
    if !case.trust.dangerous {
        let refusal = if case.leaf.validity == Validity::Expired {
            Some(Refusal::Expired)
        } else if case.leaf.validity == Validity::NotYetValid {
            Some(Refusal::NotValidYet)
        } else if !chain_trusted(case) {
            Some(if case.leaf.signer == Signer::SelfSigned {
                Refusal::SelfSigned
            } else {
                Refusal::UnknownIssuer
            })
        } else if !valid_for_name(&case.leaf.sans, case.target) {
            Some(Refusal::NameMismatch {
                expected: case.target.name().to_owned(),
                presented: case.leaf.sans.iter().map(|s| s.text().to_owned()).collect(),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Predicted::ClientRefuses(refusal);
        }
    }
    let presented = case.client_auth != ClientAuth::None && case.client_cert != ClientCert::None;
    match (case.client_auth, case.client_cert) {
        (ClientAuth::Required, ClientCert::None) => {
            Predicted::ServerRefuses(ServerFailure::NoClientCertificate, "CertificateRequired")
        }
        (ClientAuth::Required | ClientAuth::Optional, ClientCert::Untrusted)
            if !case.server_trusts_other =>
        {
            Predicted::ServerRefuses(ServerFailure::UntrustedClient, "UnknownCA")
        }
        (ClientAuth::Required | ClientAuth::Optional, ClientCert::Expired) => {
            Predicted::ServerRefuses(ServerFailure::ExpiredClient, "CertificateExpired")
        }
        _ => Predicted::Up {
            alpn,
            client_certificate: presented,
        },
    }
}

// ---- servers -------------------------------------------------------------------------------

/// The CA certificates whose client certificates the server accepts (PEM).
fn client_ca_pem(case: &Case) -> String {
    let cas = cas(case.leaf.ca_alg);
    if case.server_trusts_other {
        format!("{}{}", cas.root.pem, cas.other.pem)
    } else {
        cas.root.pem.clone()
    }
}

/// What the server sent as its certificate chain (PEM).
fn server_chain_pem(case: &Case) -> String {
    let leaf = leaf(&case.leaf);
    if case.leaf.signer == Signer::Intermediate && case.send_intermediate {
        format!(
            "{}{}",
            leaf.cert_pem,
            cas(case.leaf.ca_alg).intermediate.pem
        )
    } else {
        leaf.cert_pem.clone()
    }
}

fn server_chain_der(case: &Case) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(server_chain_pem(case).as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
}

/// A rustls server config built by hand (the thread server, and optional client certificates
/// on the kdnet server), recording the SNI of each ClientHello.
fn hand_built_server_config(
    case: &Case,
    sni: Arc<Mutex<Vec<Option<String>>>>,
) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match case.version() {
        Version::Tls12 => &[&rustls::version::TLS12],
        Version::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match case.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let mut roots = rustls::RootCertStore::empty();
            for pem in CertificateDer::pem_slice_iter(client_ca_pem(case).as_bytes()) {
                roots.add(pem.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().unwrap())
        }
    };
    let chain = CertificateDer::pem_slice_iter(server_chain_pem(case).as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf(&case.leaf).key_pem.as_bytes()).unwrap();
    let key = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let mut config = builder.with_cert_resolver(Arc::new(RecordingResolver { certified, sni }));
    config.alpn_protocols = case.server_alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[derive(Debug)]
struct RecordingResolver {
    certified: Arc<rustls::sign::CertifiedKey>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl rustls::server::ResolvesServerCert for RecordingResolver {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.sni
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_owned));
        Some(self.certified.clone())
    }
}

/// The rustls server config for the crate's `TcpServer`, through `TlsServerConfig` where it
/// can express the case.
fn kdnet_server_config(
    case: &Case,
    sni: Arc<Mutex<Vec<Option<String>>>>,
) -> Arc<rustls::ServerConfig> {
    let chain = written(&server_chain_pem(case), case.server_form);
    let key = written(&leaf(&case.leaf).key_pem, case.server_form);
    let alpn = case.server_alpn.iter().map(|p| p.to_vec()).collect();
    match case.client_auth {
        ClientAuth::None => TlsServerConfig::with_alpn(&chain, &key, alpn).unwrap(),
        ClientAuth::Required => TlsServerConfig::with_client_certificates(
            &chain,
            &key,
            client_ca_pem(case).as_bytes(),
            alpn,
        )
        .unwrap(),
        ClientAuth::Optional => Arc::new(hand_built_server_config(case, sni)),
    }
}

/// What one side of a kdnet connection saw.
#[derive(Default)]
struct Seen {
    events: RefCell<Vec<Ev>>,
    data: RefCell<Vec<u8>>,
    /// `is_encrypted()` inside each `handshake_completed` slot.
    encrypted_in_slot: RefCell<Vec<bool>>,
}

impl Seen {
    fn has_error(&self) -> bool {
        self.events
            .borrow()
            .iter()
            .any(|e| matches!(e, Ev::Error(_)))
    }

    fn has(&self, event: &Ev) -> bool {
        self.events.borrow().contains(event)
    }
}

/// Records `socket`'s signals into `seen`, and what it reads; with `http_reply` it answers each
/// request head with `200 OK` and the body `hi`.
fn record(socket: &Rc<TcpSocket>, seen: &Rc<Seen>, http_reply: bool) {
    let push = |seen: &Rc<Seen>| {
        let seen = seen.clone();
        move |e: Ev| seen.events.borrow_mut().push(e)
    };
    let p = push(seen);
    socket
        .connected
        .connect(move |_| p(Ev::Connected))
        .release();
    let p = push(seen);
    socket
        .disconnected
        .connect(move |_| p(Ev::Disconnected))
        .release();
    let p = push(seen);
    socket
        .state_changed
        .connect(move |s| p(Ev::State(*s)))
        .release();
    let p = push(seen);
    socket
        .error_occurred
        .connect(move |e| p(Ev::Error(e.clone())))
        .release();
    let p = push(seen);
    socket
        .handshake_error
        .connect(move |e| p(Ev::HandshakeError(e.clone())))
        .release();
    let (p, s, weak) = (push(seen), seen.clone(), Rc::downgrade(socket));
    socket
        .handshake_completed
        .connect(move |_| {
            p(Ev::Handshake);
            let encrypted = weak.upgrade().is_some_and(|s| s.is_encrypted());
            s.encrypted_in_slot.borrow_mut().push(encrypted);
        })
        .release();
    let (p, s, weak) = (push(seen), seen.clone(), Rc::downgrade(socket));
    socket
        .ready_read
        .connect(move |_| {
            p(Ev::ReadyRead);
            let Some(socket) = weak.upgrade() else { return };
            s.data.borrow_mut().extend_from_slice(&socket.read_all());
            let complete = s.data.borrow().windows(4).any(|w| w == b"\r\n\r\n");
            if http_reply && complete {
                s.data.borrow_mut().clear();
                let _ = socket.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
            }
        })
        .release();
}

/// The connections a [`KdnetServer`] accepted, in order, with what each saw.
type Accepted = Rc<RefCell<Vec<(Rc<TcpSocket>, Rc<Seen>)>>>;

/// The crate's TLS server: each accepted connection is recorded, greeted with `S` (sent once
/// its handshake completes) unless it serves HTTP.
struct KdnetServer {
    server: Rc<TcpServer>,
    accepted: Accepted,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

fn kdnet_server(case: &Case) -> KdnetServer {
    let sni: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let server = TcpServer::new().unwrap();
    server.set_tls_config(kdnet_server_config(case, sni.clone()));
    let host = match case.target {
        Target::Host("::1") => "::1",
        Target::Host("localhost") => "localhost",
        _ => "127.0.0.1",
    };
    server.listen(host, 0).unwrap();
    let accepted: Accepted = Rc::default();
    let (keep, http) = (accepted.clone(), case.http);
    server
        .new_connection
        .connect(move |peer: &Rc<TcpSocket>| {
            let seen = Rc::new(Seen::default());
            record(peer, &seen, http);
            if !http {
                peer.write(b"S").unwrap();
            }
            keep.borrow_mut().push((peer.clone(), seen));
        })
        .release();
    KdnetServer {
        server,
        accepted,
        sni,
    }
}

/// What the thread server saw of one connection.
#[derive(Debug, Default)]
struct ThreadSaw {
    handshake_done: bool,
    error: Option<rustls::Error>,
    /// An I/O error that was no TLS error (e.g. the peer closed).
    io_error: Option<String>,
    alpn: Option<Vec<u8>>,
    client_chain: Vec<Vec<u8>>,
    data: Vec<u8>,
}

/// rustls on a thread: serves `connections` connections one after the other.
struct ThreadServer {
    port: u16,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    results: mpsc::Receiver<ThreadSaw>,
    /// For a `localhost` case, `[::1]:port` held (see [`thread_listener`]).
    _refusing: Option<socket2::Socket>,
}

/// The thread server's listener for `target`, and for `localhost` the same port on `::1`, bound
/// but not listening.
///
/// A client connecting to `localhost` tries `[::1]:port` first (RFC 6761 §6.3, the crate's
/// resolver) and 127.0.0.1 when that is refused. Left free, `[::1]:port` is anyone's: another
/// process on the machine (another test binary's server) that listens there at the same port
/// number takes the client's handshake, and the case waits for an answer that never comes (a
/// flaky "not done within 15 s"). Bound without listening, and without `SO_REUSEADDR`, the
/// address refuses every connect and no one else can listen on it: the client's first attempt is
/// refused at once and its second reaches this server, every time. The port is picked again
/// when `::1` has it taken already.
fn thread_listener(target: Target) -> (TcpListener, Option<socket2::Socket>) {
    if target == Target::Host("::1") {
        return (TcpListener::bind("[::1]:0").unwrap(), None);
    }
    let listener = || TcpListener::bind("127.0.0.1:0").unwrap();
    if target != Target::Host("localhost") {
        return (listener(), None);
    }
    for _ in 0..32 {
        let listener = listener();
        let port = listener.local_addr().unwrap().port();
        let refusing =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        match refusing.bind(&v6.into()) {
            Ok(()) => return (listener, Some(refusing)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("holding {v6}: {e}"),
        }
    }
    panic!("no port free on both loopback addresses in 32 tries");
}

fn thread_server(case: &Case, connections: usize) -> ThreadServer {
    let sni: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let config = Arc::new(hand_built_server_config(case, sni.clone()));
    let (listener, refusing) = thread_listener(case.target);
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (tx, results) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let deadline = Instant::now() + Duration::from_secs(30);
            let tcp = loop {
                match listener.accept() {
                    Ok((tcp, _)) => break tcp,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            };
            if tx.send(serve_one(tcp, config.clone())).is_err() {
                return;
            }
        }
    });
    ThreadServer {
        port,
        sni,
        results,
        _refusing: refusing,
    }
}

fn serve_one(mut tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> ThreadSaw {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut saw = ThreadSaw::default();
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    let fail = |saw: &mut ThreadSaw, e: std::io::Error| match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => saw.error = Some(tls.clone()),
        None => saw.io_error = Some(e.to_string()),
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) => {
                saw.io_error = Some("end of stream in the handshake".into());
                return saw;
            }
            Ok(_) => {}
            Err(e) => {
                fail(&mut saw, e);
                return saw;
            }
        }
    }
    saw.handshake_done = true;
    saw.alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    saw.client_chain = conn
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default();
    conn.writer().write_all(b"S").unwrap();
    // Reads until the client's close_notify (or its end of stream), then answers it.
    let mut buf = [0u8; 256];
    loop {
        if let Err(e) = conn.complete_io(&mut tcp) {
            fail(&mut saw, e);
            return saw;
        }
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => saw.data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                saw.io_error = Some(e.to_string());
                return saw;
            }
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    saw
}

// ---- the client ----------------------------------------------------------------------------

fn anchor_pem(case: &Case, anchor: Anchor) -> String {
    let cas = cas(case.leaf.ca_alg);
    match anchor {
        Anchor::Root => cas.root.pem.clone(),
        Anchor::Intermediate => cas.intermediate.pem.clone(),
        Anchor::Other => cas.other.pem.clone(),
        Anchor::Namesake => cas.namesake.pem.clone(),
        Anchor::Leaf => leaf(&case.leaf).cert_pem.clone(),
    }
}

/// The anchors as the PEM texts they are added in.
fn anchor_pems(case: &Case) -> Vec<Vec<u8>> {
    let pems: Vec<String> = case
        .trust
        .anchors
        .iter()
        .map(|&a| anchor_pem(case, a))
        .collect();
    if case.trust.one_pem && !pems.is_empty() {
        vec![written(&pems.concat(), case.trust.form)]
    } else {
        pems.iter().map(|p| written(p, case.trust.form)).collect()
    }
}

fn client_certificate(case: &Case) -> Option<Arc<Leaf>> {
    match case.client_cert {
        ClientCert::None => None,
        ClientCert::Trusted(alg) => Some(client_leaf(
            case.leaf.ca_alg,
            Signer::Root,
            alg,
            Validity::Valid,
        )),
        ClientCert::Untrusted => Some(client_leaf(
            case.leaf.ca_alg,
            Signer::Other,
            Alg::P256,
            Validity::Valid,
        )),
        ClientCert::Expired => Some(client_leaf(
            case.leaf.ca_alg,
            Signer::Root,
            Alg::P256,
            Validity::Expired,
        )),
    }
}

fn ssl_socket(case: &Case) -> Rc<SslSocket> {
    let trust = &case.trust;
    let mut pems = anchor_pems(case);
    let mut config = if trust.system {
        TlsClientConfig::new()
    } else {
        TlsClientConfig::with_only_ca_certificates(&pems.remove(0)).unwrap()
    };
    if !trust.on_socket {
        for pem in pems.drain(..) {
            config.add_ca_certificate(&pem).unwrap();
        }
    }
    if let Some(client) = client_certificate(case) {
        config
            .set_client_certificate(client.cert_pem.as_bytes(), client.key_pem.as_bytes())
            .unwrap();
    }
    config.set_alpn_protocols(case.client_alpn.iter().map(|p| p.to_vec()).collect());
    if trust.dangerous {
        config.dangerous_disable_certificate_verification();
    }
    assert_eq!(config.verifies_certificates(), !trust.dangerous);
    let socket = SslSocket::with_config(config).unwrap();
    for pem in pems {
        socket.add_ca_certificate(&pem).unwrap();
    }
    if let Target::Named(name) = case.target {
        socket.set_peer_verify_name(name);
    }
    socket
}

fn http_client(case: &Case) -> Rc<HttpClient> {
    let mut session = HttpSession::new();
    for pem in anchor_pems(case) {
        session.add_ca_certificate(pem).unwrap();
    }
    if let Some(client) = client_certificate(case) {
        session
            .set_client_certificate(client.cert_pem.clone(), client.key_pem.clone())
            .unwrap();
    }
    if case.trust.dangerous {
        session.dangerous_disable_certificate_verification();
    }
    HttpClient::with_session(session).unwrap()
}

// ---- running a case ------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);
static STATS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
const STAT_NAMES: [&str; 6] = [
    "up",
    "refused by the client",
    "refused by the server",
    "through HttpClient",
    "second connects",
    "slowest case (ms, against a 15 s bound per wait)",
];
const UP: usize = 0;
const CLIENT_REFUSED: usize = 1;
const SERVER_REFUSED: usize = 2;
const VIA_HTTP: usize = 3;
const SECOND_CONNECTS: usize = 4;
const SLOWEST_MS: usize = 5;

fn count(stat: usize) {
    STATS[stat].fetch_add(1, Ordering::Relaxed);
}

fn turn_until(
    ev: &mut EventLoop,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<(), TestCaseError> {
    if support::run_until(ev, Duration::from_secs(15), &mut done) {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("not done within 15 s: {what}")))
    }
}

/// Whether `error` is what the model predicts the client reports.
fn client_error_matches(predicted: &Predicted, error: &SocketError) -> bool {
    match (predicted, error) {
        (Predicted::ClientRefuses(refusal), SocketError::Tls(failure)) => {
            *failure == refusal.failure()
        }
        (Predicted::ServerRefuses(_, alert), SocketError::Tls(TlsFailure::AlertReceived(got))) => {
            got == alert
        }
        _ => false,
    }
}

fn server_failure_of(error: &SocketError) -> Option<ServerFailure> {
    match error {
        SocketError::Tls(TlsFailure::AlertReceived(alert)) => {
            Some(ServerFailure::Alert(alert.clone()))
        }
        SocketError::Tls(TlsFailure::Other(text)) if text.contains("ALPN") => {
            Some(ServerFailure::NoAlpn)
        }
        SocketError::Tls(TlsFailure::BadCertificate(text)) if text.contains("no certificate") => {
            Some(ServerFailure::NoClientCertificate)
        }
        SocketError::Tls(TlsFailure::UnknownIssuer) => Some(ServerFailure::UntrustedClient),
        SocketError::Tls(TlsFailure::Expired) => Some(ServerFailure::ExpiredClient),
        _ => None,
    }
}

fn thread_failure_of(error: &rustls::Error) -> Option<ServerFailure> {
    match error {
        rustls::Error::AlertReceived(alert) => Some(ServerFailure::Alert(format!("{alert:?}"))),
        rustls::Error::NoApplicationProtocol => Some(ServerFailure::NoAlpn),
        rustls::Error::NoCertificatesPresented => Some(ServerFailure::NoClientCertificate),
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            Some(ServerFailure::UntrustedClient)
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
        ) => Some(ServerFailure::ExpiredClient),
        _ => None,
    }
}

/// What the server reports, predicted.
fn predicted_server_failure(predicted: &Predicted) -> Option<ServerFailure> {
    match predicted {
        Predicted::Up { .. } => None,
        Predicted::ClientRefuses(refusal) => Some(ServerFailure::Alert(refusal.alert().to_owned())),
        Predicted::ServerRefuses(failure, _) => Some(failure.clone()),
    }
}

/// Checks the order of a failed connection's events: `handshake_error` (when the handshake
/// had not completed) right before `error_occurred` with the same error, once; nothing read.
fn check_failed_events(
    side: &str,
    seen: &Seen,
    handshake_completed: bool,
) -> Result<(), TestCaseError> {
    let events = seen.events.borrow();
    let errors: Vec<usize> = (0..events.len())
        .filter(|&i| matches!(events[i], Ev::Error(_)))
        .collect();
    prop_assert_eq!(
        errors.len(),
        1,
        "{}: one error_occurred: {:?}",
        side,
        events
    );
    let at = errors[0];
    let handshakes = events.iter().filter(|e| **e == Ev::Handshake).count();
    let handshake_errors = events
        .iter()
        .filter(|e| matches!(e, Ev::HandshakeError(_)))
        .count();
    if handshake_completed {
        prop_assert_eq!(handshakes, 1, "{}: {:?}", side, events);
        prop_assert_eq!(handshake_errors, 0, "{}: {:?}", side, events);
    } else {
        prop_assert_eq!(handshakes, 0, "{}: {:?}", side, events);
        prop_assert_eq!(handshake_errors, 1, "{}: {:?}", side, events);
        let (Ev::HandshakeError(first), Ev::Error(second)) = (&events[at - 1], &events[at]) else {
            return Err(TestCaseError::fail(format!(
                "{side}: handshake_error is not right before error_occurred: {events:?}"
            )));
        };
        prop_assert_eq!(first.to_string(), second.to_string());
    }
    prop_assert!(
        !events.contains(&Ev::ReadyRead) && seen.data.borrow().is_empty(),
        "{}: a failed connection delivered data: {:?} {:?}",
        side,
        events,
        seen.data.borrow()
    );
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::Relaxed);
    let predicted = predict(case);
    count(match &predicted {
        Predicted::Up { .. } => UP,
        Predicted::ClientRefuses(_) => CLIENT_REFUSED,
        Predicted::ServerRefuses(..) => SERVER_REFUSED,
    });
    if case.http {
        count(VIA_HTTP);
        return run_http_case(case, &predicted);
    }
    let mut ev = EventLoop::new().unwrap();
    let attempts = if case.twice { 2 } else { 1 };
    let (kdnet, thread) = match case.server {
        ServerKind::Kdnet => (Some(kdnet_server(case)), None),
        ServerKind::Thread(_) => (None, Some(thread_server(case, attempts))),
    };
    let port = match (&kdnet, &thread) {
        (Some(k), _) => k.server.server_port().unwrap(),
        (_, Some(t)) => t.port,
        _ => unreachable!(),
    };
    let client = ssl_socket(case);
    let seen = Rc::new(Seen::default());
    record(client.tcp_socket(), &seen, false);
    for attempt in 0..attempts {
        if attempt > 0 {
            count(SECOND_CONNECTS);
        }
        seen.events.borrow_mut().clear();
        seen.data.borrow_mut().clear();
        seen.encrypted_in_slot.borrow_mut().clear();
        match case.target {
            Target::Host(host) => client.connect_to_host(host, port).unwrap(),
            Target::Named(_) => client
                .connect_to_address(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                .unwrap(),
        }
        client.write(b"C").unwrap();
        let label = format!("attempt {attempt}");
        let server_seen =
            |k: &KdnetServer| k.accepted.borrow().get(attempt).map(|(_, s)| s.clone());
        let mut thread_saw: Option<ThreadSaw> = None;
        // Until both ends know how it went.
        let outcome = turn_until(&mut ev, &format!("{label}: handshake outcome"), || {
            let client_up = seen.data.borrow().as_slice() == b"S";
            let client_done = seen.has_error() || client_up;
            let server_done = match (&kdnet, &thread) {
                (Some(k), _) => server_seen(k)
                    .is_some_and(|s| s.has_error() || s.data.borrow().as_slice() == b"C"),
                (_, Some(t)) => {
                    if thread_saw.is_none() {
                        thread_saw = t.results.try_recv().ok();
                    }
                    // On success the thread only reports after the client's close.
                    thread_saw.is_some() || client_up
                }
                _ => unreachable!(),
            };
            client_done && server_done
        });
        if let Err(TestCaseError::Fail(stalled)) = outcome {
            // Where each end stands, so that a stall says which end waits for what (and whom
            // the client reached).
            let server = match (&kdnet, &thread) {
                (Some(k), _) => format!(
                    "kdnet server accepted {}, this connection saw {:?}",
                    k.accepted.borrow().len(),
                    server_seen(k).map(|s| s.events.borrow().clone())
                ),
                _ => format!("thread server reported {thread_saw:?}"),
            };
            return Err(TestCaseError::fail(format!(
                "{}; client {:?} connected from {:?} to {:?} saw {:?}; {server}",
                stalled.message(),
                client.state(),
                client.local_address(),
                client.peer_address(),
                seen.events.borrow()
            )));
        }
        outcome?;
        let up = matches!(predicted, Predicted::Up { .. });
        if !up && seen.data.borrow().as_slice() == b"S" {
            let events = seen.events.borrow();
            return Err(TestCaseError::fail(format!(
                "{label}: predicted {predicted:?}, but the connection is up: {events:?}"
            )));
        }
        if up {
            // Checked while up, then closed gracefully.
            prop_assert!(
                client.is_encrypted(),
                "{}: not encrypted: {:?}",
                label,
                seen.events.borrow()
            );
            let Predicted::Up { alpn, .. } = &predicted else {
                unreachable!()
            };
            prop_assert_eq!(&client.alpn_protocol(), alpn, "{}: client ALPN", label);
            prop_assert_eq!(
                client.protocol_version(),
                Some(match case.version() {
                    Version::Tls12 => rustls::ProtocolVersion::TLSv1_2,
                    Version::Tls13 => rustls::ProtocolVersion::TLSv1_3,
                })
            );
            let chain: Vec<Vec<u8>> = client
                .peer_certificate_chain()
                .iter()
                .map(|c| c.to_vec())
                .collect();
            prop_assert_eq!(
                chain,
                server_chain_der(case),
                "{}: the chain the client saw",
                label
            );
            client.disconnect_from_host();
        }
        turn_until(&mut ev, &format!("{label}: closed"), || {
            let client_closed = client.state() == SocketState::Unconnected;
            let server_closed = match (&kdnet, &thread) {
                (Some(k), _) => server_seen(k).is_some_and(|s| s.has(&Ev::Disconnected)),
                (_, Some(t)) => {
                    if thread_saw.is_none() {
                        thread_saw = t.results.try_recv().ok();
                    }
                    thread_saw.is_some()
                }
                _ => unreachable!(),
            };
            client_closed && server_closed
        })?;
        prop_assert!(
            !client.is_encrypted(),
            "{}: encrypted after the close",
            label
        );

        // The client's events.
        let events = seen.events.borrow().clone();
        prop_assert_eq!(
            events.iter().filter(|e| **e == Ev::Connected).count(),
            1,
            "{}: connected once: {:?}",
            label,
            events
        );
        prop_assert_eq!(
            events.last(),
            Some(&Ev::Disconnected),
            "{}: {:?}",
            label,
            events
        );
        let client_error = events.iter().find_map(|e| match e {
            Ev::Error(e) => Some(e.clone()),
            _ => None,
        });
        match &predicted {
            Predicted::Up { .. } => {
                prop_assert!(
                    client_error.is_none(),
                    "{}: client error {:?}",
                    label,
                    client_error
                );
                prop_assert_eq!(
                    events.iter().filter(|e| **e == Ev::Handshake).count(),
                    1,
                    "{}: {:?}",
                    label,
                    events
                );
                prop_assert_eq!(&*seen.encrypted_in_slot.borrow(), &[true]);
                prop_assert_eq!(seen.data.borrow().clone(), b"S".to_vec());
                let connected = events.iter().position(|e| *e == Ev::Connected);
                let handshake = events.iter().position(|e| *e == Ev::Handshake);
                prop_assert!(connected < handshake, "{}: {:?}", label, events);
            }
            _ => {
                let Some(error) = &client_error else {
                    return Err(TestCaseError::fail(format!(
                        "{label}: no client error: {events:?}"
                    )));
                };
                prop_assert!(
                    client_error_matches(&predicted, error),
                    "{}: client error {:?}, predicted {:?}",
                    label,
                    error,
                    predicted
                );
                // TLS 1.3: the client's handshake is done before the server judges its
                // certificate (RFC 8446 §4.4.2.4).
                let completed = matches!(
                    predicted,
                    Predicted::ServerRefuses(
                        ServerFailure::NoClientCertificate
                            | ServerFailure::UntrustedClient
                            | ServerFailure::ExpiredClient,
                        _
                    )
                ) && case.version() == Version::Tls13;
                check_failed_events(&format!("{label} client"), &seen, completed)?;
                if completed {
                    prop_assert_eq!(&*seen.encrypted_in_slot.borrow(), &[true]);
                }
            }
        }

        // The server's side.
        let predicted_failure = predicted_server_failure(&predicted);
        match (&kdnet, thread_saw) {
            (Some(k), _) => {
                let (peer, server) = k.accepted.borrow()[attempt].clone();
                let events = server.events.borrow().clone();
                let error = events.iter().find_map(|e| match e {
                    Ev::Error(e) => Some(e.clone()),
                    _ => None,
                });
                match &predicted_failure {
                    None => {
                        prop_assert!(error.is_none(), "{}: server error {:?}", label, error);
                        prop_assert_eq!(server.data.borrow().clone(), b"C".to_vec());
                        prop_assert_eq!(&*server.encrypted_in_slot.borrow(), &[true]);
                        let Predicted::Up {
                            alpn,
                            client_certificate,
                        } = &predicted
                        else {
                            unreachable!()
                        };
                        prop_assert_eq!(&peer.alpn_protocol(), alpn, "{}: server ALPN", label);
                        let chain: Vec<Vec<u8>> = peer
                            .peer_certificate_chain()
                            .iter()
                            .map(|c| c.to_vec())
                            .collect();
                        let expected: Vec<Vec<u8>> = if *client_certificate {
                            vec![client_certificate_der(case)]
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(
                            chain,
                            expected,
                            "{}: the client chain the server saw",
                            label
                        );
                    }
                    Some(failure) => {
                        let got = error.as_ref().and_then(server_failure_of);
                        prop_assert_eq!(
                            got.as_ref(),
                            Some(failure),
                            "{}: server error {:?}: {:?}",
                            label,
                            error,
                            events
                        );
                        check_failed_events(&format!("{label} server"), &server, false)?;
                    }
                }
                prop_assert_eq!(
                    events.last(),
                    Some(&Ev::Disconnected),
                    "{}: server {:?}",
                    label,
                    events
                );
            }
            (_, Some(saw)) => {
                let got = saw.error.as_ref().and_then(thread_failure_of);
                prop_assert_eq!(
                    got.as_ref(),
                    predicted_failure.as_ref(),
                    "{}: thread server: {:?}",
                    label,
                    saw
                );
                if let Predicted::Up {
                    alpn,
                    client_certificate,
                } = &predicted
                {
                    prop_assert!(
                        saw.handshake_done && saw.io_error.is_none(),
                        "{}: {:?}",
                        label,
                        saw
                    );
                    prop_assert_eq!(saw.data.as_slice(), b"C");
                    prop_assert_eq!(&saw.alpn, alpn);
                    let expected: Vec<Vec<u8>> = if *client_certificate {
                        vec![client_certificate_der(case)]
                    } else {
                        Vec::new()
                    };
                    prop_assert_eq!(&saw.client_chain, &expected);
                } else {
                    prop_assert!(
                        saw.data.is_empty(),
                        "{}: the server read data: {:?}",
                        label,
                        saw
                    );
                }
            }
            _ => {
                return Err(TestCaseError::fail(format!(
                    "{label}: the thread server said nothing"
                )));
            }
        }
        // SNI: the verified name, never an IP literal (RFC 6066 §3); the server saw the
        // ClientHello whenever the client sent one.
        let sni = match (&kdnet, &thread) {
            (Some(k), _) => k.sni.lock().unwrap().clone(),
            (_, Some(t)) => t.sni.lock().unwrap().clone(),
            _ => unreachable!(),
        };
        let recorded = matches!(case.server, ServerKind::Thread(_))
            || case.client_auth == ClientAuth::Optional;
        let alpn_refused = matches!(
            predicted,
            Predicted::ServerRefuses(ServerFailure::NoAlpn, _)
        );
        if recorded && !alpn_refused {
            let expected = case
                .target
                .ip()
                .is_none()
                .then(|| case.target.name().to_ascii_lowercase());
            let sent = sni
                .get(attempt)
                .map(|name| name.as_ref().map(|name| name.to_ascii_lowercase()));
            prop_assert_eq!(sent, Some(expected), "{}: SNI {:?}", label, sni);
        }
    }
    Ok(())
}

fn client_certificate_der(case: &Case) -> Vec<u8> {
    client_certificate(case)
        .map(|c| c.der.clone())
        .unwrap_or_default()
}

fn run_http_case(case: &Case, predicted: &Predicted) -> Result<(), TestCaseError> {
    let mut ev = EventLoop::new().unwrap();
    let server = kdnet_server(case);
    let client = http_client(case);
    let host = match case.target.name() {
        "::1" => "[::1]",
        name => name,
    };
    let url = format!("https://{host}:{}/", server.server.server_port().unwrap());
    for attempt in 0..if case.twice { 2 } else { 1 } {
        let out = support::send(&client, HttpRequest::get(&url).unwrap());
        let label = format!("http attempt {attempt}");
        turn_until(&mut ev, &label, || out.borrow().is_some())?;
        let result = out.borrow_mut().take().unwrap();
        match (predicted, result) {
            (Predicted::Up { .. }, Ok(response)) => {
                prop_assert_eq!(response.status(), 200);
                prop_assert_eq!(response.text(), "hi");
            }
            (Predicted::Up { .. }, Err(e)) => {
                return Err(TestCaseError::fail(format!(
                    "{label}: predicted success, got {e:?}"
                )));
            }
            (_, Ok(response)) => {
                return Err(TestCaseError::fail(format!(
                    "{label}: predicted {predicted:?}, got a response {}",
                    response.status()
                )));
            }
            (_, Err(HttpError::Transport(error))) => prop_assert!(
                client_error_matches(predicted, &error),
                "{}: {:?}, predicted {:?}",
                label,
                error,
                predicted
            ),
            (_, Err(other)) => {
                return Err(TestCaseError::fail(format!(
                    "{label}: {other:?}, predicted {predicted:?}"
                )));
            }
        }
        // No request reached a server that refused the handshake.
        if !matches!(predicted, Predicted::Up { .. }) {
            for (_, seen) in server.accepted.borrow().iter() {
                prop_assert!(
                    seen.data.borrow().is_empty(),
                    "{}: the server read a request",
                    label
                );
            }
        }
    }
    Ok(())
}

#[test]
fn tls_handshakes_match_the_model() {
    let started = Instant::now();
    // A case that hangs takes 15 s: shrink briefly.
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        max_shrink_iters: 200,
        ..config(100)
    });
    let result = runner.run(&case(), |case| {
        let began = Instant::now();
        let result = run_case(&case);
        let ms = began.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        STATS[SLOWEST_MS].fetch_max(ms, Ordering::Relaxed);
        result
    });
    finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}

/// The script of a case that failed once on a loaded machine ("not done within 15 s: attempt 0:
/// handshake outcome"; it passes when run alone): TLS 1.2 from the thread server to a client
/// connecting to `localhost`, which refuses the chain (the intermediate is not sent).
fn flaky_localhost_case() -> Case {
    Case {
        leaf: LeafSpec {
            signer: Signer::Intermediate,
            ca_alg: Alg::P256,
            alg: Alg::P384,
            validity: Validity::Valid,
            sans: vec![San::Localhost, San::Svc, San::WildSvc, San::Ip4, San::Ip6],
            client: false,
        },
        send_intermediate: false,
        server_form: PemForm::Bom,
        trust: Trust {
            system: false,
            anchors: vec![Anchor::Root],
            one_pem: false,
            on_socket: true,
            form: PemForm::AsIs,
            dangerous: false,
        },
        target: Target::Host("localhost"),
        server: ServerKind::Thread(Version::Tls12),
        client_auth: ClientAuth::Optional,
        client_cert: ClientCert::None,
        server_trusts_other: false,
        client_alpn: vec![b"h2", b"http/1.1"],
        server_alpn: vec![],
        http: false,
        twice: false,
    }
}

/// A client connecting to `localhost` tries `::1` first (RFC 6761; the crate's resolver), so a
/// thread server for a `localhost` case must own its port on `::1` as well as on 127.0.0.1:
/// were `[::1]:port` free, any other process on the machine (another test binary's server) could
/// listen there, take the client's handshake and never answer it, and the case hung for its 15 s.
/// No one else can listen on the server's port on either loopback address, and the script runs.
#[test]
fn a_localhost_thread_server_leaves_no_one_its_port_on_the_other_loopback_address() {
    let case = flaky_localhost_case();
    let server = thread_server(&case, 1);
    for ip in [
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        IpAddr::from(Ipv4Addr::LOCALHOST),
    ] {
        let stranger = TcpListener::bind((ip, server.port));
        assert!(
            stranger.is_err(),
            "another listener took {ip} port {} from the case's server",
            server.port
        );
    }
    // Ends the server's thread (it reads the end of stream as its one connection).
    drop(TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap());
    assert!(server.results.recv_timeout(Duration::from_secs(15)).is_ok());
    run_case(&case).unwrap();
}

// ---- PEM input -----------------------------------------------------------------------------

/// An entry point that takes PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// `TlsClientConfig::with_only_ca_certificates`.
    OnlyCa,
    /// `TlsClientConfig::add_ca_certificate`.
    AddCa,
    /// `SslSocket::add_ca_certificate`.
    SocketCa,
    /// `HttpSession::add_ca_certificate`.
    SessionCa,
    /// `TlsClientConfig::set_client_certificate`.
    ClientCertificate,
    /// `HttpSession::set_client_certificate`.
    SessionClientCertificate,
    /// `TlsServerConfig::from_pem`.
    Server,
}

impl Entry {
    fn takes_key(self) -> bool {
        matches!(
            self,
            Entry::ClientCertificate | Entry::SessionClientCertificate | Entry::Server
        )
    }

    /// The words its errors use for the certificate PEM and for the key PEM.
    fn what(self) -> (&'static str, &'static str) {
        match self {
            Entry::OnlyCa | Entry::AddCa | Entry::SocketCa | Entry::SessionCa => {
                ("CA certificate", "")
            }
            Entry::ClientCertificate | Entry::SessionClientCertificate => {
                ("client certificate", "client key")
            }
            Entry::Server => ("server certificate", "server key"),
        }
    }
}

/// What is done to the PEM given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Nothing, written in this form.
    None(PemForm),
    /// Two certificates (a CA bundle; a chain, end-entity first).
    Several,
    /// Two certificates glued: `-----END CERTIFICATE----------BEGIN CERTIFICATE-----`.
    Glued,
    /// A chain whose intermediate comes first.
    WrongOrder,
    /// An empty file.
    Empty,
    /// The other kind of PEM (a key for a certificate, a certificate for a key).
    WrongKind,
    /// The DER bytes instead of PEM.
    Der,
    /// Cut after a base64 line: no END line.
    CutShort,
    /// A character that is not base64 in the middle.
    NotBase64,
    /// A whole base64 line left out: the DER inside is broken.
    LineMissing,
    /// An encrypted key, PKCS#8 (`ENCRYPTED PRIVATE KEY`) or legacy (`Proc-Type: 4,ENCRYPTED`).
    Encrypted { legacy: bool },
    /// A key of another type than the certificate's (P-384 for a P-256 certificate).
    OtherKey,
}

#[derive(Debug, Clone)]
struct PemCase {
    entry: Entry,
    /// The damage is done to the key PEM (entries that take one), else to the certificate PEM.
    to_key: bool,
    damage: Damage,
}

fn pem_case() -> impl Strategy<Value = PemCase> {
    let entry = proptest::sample::select(vec![
        Entry::OnlyCa,
        Entry::AddCa,
        Entry::SocketCa,
        Entry::SessionCa,
        Entry::ClientCertificate,
        Entry::SessionClientCertificate,
        Entry::Server,
    ]);
    let damage = prop_oneof![
        3 => pem_form().prop_map(Damage::None),
        1 => Just(Damage::Several),
        1 => Just(Damage::Glued),
        1 => Just(Damage::WrongOrder),
        1 => Just(Damage::Empty),
        1 => Just(Damage::WrongKind),
        1 => Just(Damage::Der),
        1 => Just(Damage::CutShort),
        1 => Just(Damage::NotBase64),
        1 => Just(Damage::LineMissing),
        1 => any::<bool>().prop_map(|legacy| Damage::Encrypted { legacy }),
        1 => Just(Damage::OtherKey),
    ];
    (entry, any::<bool>(), damage).prop_map(|(entry, to_key, damage)| {
        // Damage only one kind of PEM can have goes to that one.
        let to_key = match damage {
            _ if !entry.takes_key() => false,
            Damage::Encrypted { .. } | Damage::OtherKey => true,
            Damage::Several | Damage::Glued | Damage::WrongOrder => false,
            _ => to_key,
        };
        let damage = match damage {
            Damage::Encrypted { .. } | Damage::OtherKey if !entry.takes_key() => Damage::Empty,
            damage => damage,
        };
        PemCase {
            entry,
            to_key,
            damage,
        }
    })
}

/// The base64 lines of a PEM section and its BEGIN and END lines.
fn pem_parts(pem: &str) -> (String, Vec<String>, String) {
    let lines: Vec<&str> = pem.lines().collect();
    let body = lines[1..lines.len() - 1]
        .iter()
        .map(|l| l.to_string())
        .collect();
    (lines[0].to_owned(), body, lines[lines.len() - 1].to_owned())
}

/// The PEM texts of the case: certificate and key, and what the model predicts (the words the
/// error message must contain, or success).
fn pem_inputs(case: &PemCase) -> (Vec<u8>, Vec<u8>, Result<(), Vec<String>>) {
    let (cert_what, key_what) = case.entry.what();
    let ca_entry = !case.entry.takes_key();
    // The certificate (a CA, or a leaf signed by the intermediate with its chain), and the key.
    let cas = cas(Alg::P256);
    let leaf = leaf(&LeafSpec {
        signer: Signer::Intermediate,
        ca_alg: Alg::P256,
        alg: Alg::P256,
        validity: Validity::Valid,
        sans: vec![San::Localhost],
        client: case.entry != Entry::Server,
    });
    let (first, second) = if ca_entry {
        (cas.root.pem.clone(), cas.other.pem.clone())
    } else {
        (leaf.cert_pem.clone(), cas.intermediate.pem.clone())
    };
    let key = leaf.key_pem.clone();
    let original = if case.to_key { &key } else { &first };
    let what = if case.to_key { key_what } else { cert_what };
    let label = if case.to_key {
        "PRIVATE KEY"
    } else {
        "CERTIFICATE"
    };
    let words = |w: &[&str]| Err(w.iter().map(|w| w.to_string()).collect());
    let (damaged, predicted): (Vec<u8>, Result<(), Vec<String>>) = match case.damage {
        Damage::None(form) => (written(original, form), Ok(())),
        Damage::Several => (format!("{first}{second}").into_bytes(), Ok(())),
        Damage::Glued => (format!("{}{second}", first.trim_end()).into_bytes(), Ok(())),
        Damage::WrongOrder if ca_entry => (format!("{second}{first}").into_bytes(), Ok(())),
        Damage::WrongOrder => (
            format!("{second}{first}").into_bytes(),
            words(&[&format!(
                "the {key_what} belongs to certificate 2 of the {cert_what} PEM, but the chain \
                 must start with the end-entity certificate"
            )]),
        ),
        Damage::Empty => (
            Vec::new(),
            words(&[&format!("no {label} section found in the {what} PEM")]),
        ),
        Damage::WrongKind => {
            let (other, holds) = if case.to_key {
                (&first, "CERTIFICATE")
            } else {
                (&key, "PRIVATE KEY")
            };
            (
                other.clone().into_bytes(),
                words(&[&format!(
                    "no {label} section found in the {what} PEM (it holds: {holds})"
                )]),
            )
        }
        Damage::Der => {
            let der = if case.to_key {
                PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .unwrap()
                    .secret_der()
                    .to_vec()
            } else {
                first_der(&first)
            };
            (
                der,
                words(&[
                    &format!("no {label} section found in the {what} PEM"),
                    "binary DER",
                ]),
            )
        }
        Damage::CutShort => {
            let (begin, body, _) = pem_parts(original);
            (
                format!("{begin}\n{}\n", body[..body.len() - 1].join("\n")).into_bytes(),
                words(&[&format!("{what} PEM"), "missing section end", "cut short"]),
            )
        }
        Damage::NotBase64 => {
            let (begin, mut body, end) = pem_parts(original);
            body[0].replace_range(10..11, "!");
            (
                format!("{begin}\n{}\n{end}\n", body.join("\n")).into_bytes(),
                // A key PEM holds one section: its errors have no section number.
                words(&[&format!("{what} PEM"), "base64"]),
            )
        }
        Damage::LineMissing => {
            let (begin, mut body, end) = pem_parts(original);
            body.remove(1);
            let predicted = if case.to_key {
                format!("the {key_what} is damaged")
            } else if ca_entry {
                "CA certificate 1 is not usable as a trust anchor".to_owned()
            } else {
                format!("{cert_what} 1 cannot be parsed")
            };
            (
                format!("{begin}\n{}\n{end}\n", body.join("\n")).into_bytes(),
                words(&[&predicted]),
            )
        }
        Damage::Encrypted { legacy } => {
            let (_, body, _) = pem_parts(&key);
            let text = if legacy {
                format!(
                    "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: \
                     AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n{}\n-----END EC PRIVATE KEY-----\n",
                    body.join("\n")
                )
            } else {
                format!(
                    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}\n-----END ENCRYPTED PRIVATE KEY-----\n",
                    body.join("\n")
                )
            };
            (
                text.into_bytes(),
                words(&[
                    &format!("the {key_what} PEM holds an encrypted private key"),
                    "decrypt it",
                ]),
            )
        }
        Damage::OtherKey => (
            key_pair(Alg::P384).serialize_pem().into_bytes(),
            words(&[&format!(
                "the {key_what} does not belong to the {cert_what}"
            )]),
        ),
    };
    if case.to_key {
        (first.into_bytes(), damaged, predicted)
    } else {
        (damaged, key.into_bytes(), predicted)
    }
}

fn run_pem_case(case: &PemCase) -> Result<(), TestCaseError> {
    PEM_CASES.fetch_add(1, Ordering::Relaxed);
    let (cert, key, predicted) = pem_inputs(case);
    let result: Result<(), SocketError> = match case.entry {
        Entry::OnlyCa => TlsClientConfig::with_only_ca_certificates(&cert).map(|config| {
            config.build().expect("a config trusting a CA builds");
        }),
        Entry::AddCa => TlsClientConfig::new().add_ca_certificate(&cert),
        Entry::SocketCa => {
            let _ev = EventLoop::new().unwrap();
            SslSocket::new().unwrap().add_ca_certificate(&cert)
        }
        Entry::SessionCa => {
            let mut session = HttpSession::new();
            let result = session.add_ca_certificate(cert.clone());
            // Nothing is added on failure.
            let added = usize::from(result.is_ok());
            prop_assert_eq!(session.extra_ca_certificates().len(), added);
            result
        }
        Entry::ClientCertificate => {
            let mut config = TlsClientConfig::new();
            let result = config.set_client_certificate(&cert, &key);
            config.build().expect("a client config builds");
            result
        }
        Entry::SessionClientCertificate => {
            let mut session = HttpSession::new();
            let result = session.set_client_certificate(cert.clone(), key.clone());
            prop_assert_eq!(session.client_certificate().is_some(), result.is_ok());
            result
        }
        Entry::Server => TlsServerConfig::from_pem(&cert, &key).map(|_| ()),
    };
    match (predicted, result) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(e)) => {
            return Err(TestCaseError::fail(format!("predicted success, got {e}")));
        }
        (Err(words), Ok(())) => {
            return Err(TestCaseError::fail(format!(
                "predicted an error saying {words:?}, got success"
            )));
        }
        (Err(words), Err(SocketError::Tls(TlsFailure::Configuration(reason)))) => {
            for w in &words {
                prop_assert!(
                    reason.contains(w.as_str()),
                    "{:?} does not say {:?}",
                    reason,
                    w
                );
            }
        }
        (Err(_), Err(other)) => {
            return Err(TestCaseError::fail(format!(
                "not a configuration error: {other:?}"
            )));
        }
    }
    Ok(())
}

static PEM_CASES: AtomicU64 = AtomicU64::new(0);

#[test]
fn pem_inputs_are_read_or_refused_as_the_model_says() {
    let started = Instant::now();
    let mut runner = TestRunner::new(config(128));
    let result = runner.run(&pem_case(), |case| run_pem_case(&case));
    finish_counted(started, &PEM_CASES, [], &[] as &[AtomicU64; 0], result);
}
