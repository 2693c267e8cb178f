//! TLS configuration: which roots to trust, client certificates, ALPN (rustls with *ring*).
//!
//! A [`TlsClientConfig`] describes what a person chooses (trust the system store, add a private
//! CA, present a client certificate, …) and builds the `rustls::ClientConfig` once; sockets share
//! the built `Arc`, so disconnecting never loses settings (KDNetwork T2). IP-literal hosts are
//! verified against IP-address SANs and sent no SNI (T4). Verification can only be switched off
//! through [`TlsClientConfig::dangerous_disable_certificate_verification`].
//!
//! Default trust: the operating system's store (rustls-native-certs, honouring `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`), loaded once per process; Mozilla's roots (webpki-roots) when the system store
//! yields no usable certificate, e.g. in a container without a CA bundle.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::der::{ip_address_sans, is_self_issued, issuer_subject_key, key_is_usable};
use super::pem::{certified_key, der_certificate_text, local_certificate_text, parse_certificates};
use crate::network::{SocketError, TlsFailure};

/// Settings for TLS client connections; [`build`](Self::build) turns them into a shareable
/// `rustls::ClientConfig`.
///
/// ```
/// use kdnet::network::tls::TlsClientConfig;
///
/// let mut config = TlsClientConfig::new();
/// config.set_alpn_protocols(vec![b"http/1.1".to_vec()]);
/// let rustls_config = config.build().unwrap();
/// assert_eq!(rustls_config.alpn_protocols, vec![b"http/1.1".to_vec()]);
/// assert!(std::sync::Arc::ptr_eq(&rustls_config, &config.build().unwrap())); // cached
/// ```
#[derive(Clone)]
pub struct TlsClientConfig {
    trust: Trust,
    /// Added with `add_ca_certificate` (on top of `trust`).
    extra_roots: RootCertStore,
    client_certificate: Option<Arc<CertifiedKey>>,
    verify: bool,
    alpn: Vec<Vec<u8>>,
    resume_sessions: bool,
    built: OnceLock<Arc<ClientConfig>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trust {
    /// The process-wide default store (system roots, or Mozilla's).
    Default,
    /// Only `extra_roots`.
    OnlyExtra,
}

impl TlsClientConfig {
    /// Verifies servers against the default roots (system store, falling back to Mozilla's),
    /// presents no client certificate, offers no ALPN protocol, resumes TLS sessions.
    pub fn new() -> Self {
        TlsClientConfig {
            trust: Trust::Default,
            extra_roots: RootCertStore::empty(),
            client_certificate: None,
            verify: true,
            alpn: Vec::new(),
            resume_sessions: true,
            built: OnceLock::new(),
        }
    }

    /// Trusts exactly the CA certificates in `pem` (one or more `CERTIFICATE` sections) and no
    /// default root: for private PKIs and tests.
    ///
    /// ```
    /// use kdnet::network::tls::TlsClientConfig;
    ///
    /// let err = TlsClientConfig::with_only_ca_certificates(b"not a certificate").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "TLS failed: TLS configuration: no CERTIFICATE section found in the CA certificate PEM"
    /// );
    /// ```
    pub fn with_only_ca_certificates(pem: &[u8]) -> Result<Self, SocketError> {
        let mut config = TlsClientConfig::new();
        config.trust = Trust::OnlyExtra;
        config.add_ca_certificate(pem)?;
        Ok(config)
    }

    /// Also trusts the CA certificates in `pem` (one or more `CERTIFICATE` sections), in
    /// addition to the roots already trusted (KDNetwork `addCaCertificate`).
    pub fn add_ca_certificate(&mut self, pem: &[u8]) -> Result<(), SocketError> {
        let certificates = parse_certificates(pem, "CA certificate")?;
        let mut added = self.extra_roots.clone();
        for (index, certificate) in certificates.into_iter().enumerate() {
            added.add(certificate).map_err(|e| {
                configuration(format!(
                    "CA certificate {} is not usable as a trust anchor: {}",
                    index + 1,
                    local_certificate_text(&e)
                ))
            })?;
        }
        self.extra_roots = added;
        self.changed();
        Ok(())
    }

    /// [`add_ca_certificate`](Self::add_ca_certificate) for one certificate in DER (binary,
    /// as a `.der`/`.cer` file or another library hands it out).
    ///
    /// ```
    /// use kdnet::network::tls::TlsClientConfig;
    ///
    /// let err = TlsClientConfig::new().add_ca_certificate_der(b"not DER").unwrap_err();
    /// assert!(err.to_string().contains("CA certificate (DER) is not usable as a trust anchor"));
    /// ```
    pub fn add_ca_certificate_der(&mut self, der: &[u8]) -> Result<(), SocketError> {
        // One certificate: a failed `add` leaves the store as it was (no copy to fall back on).
        self.extra_roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| {
                configuration(format!(
                    "CA certificate (DER) is not usable as a trust anchor: {}",
                    der_certificate_text(der, &e)
                ))
            })?;
        self.changed();
        Ok(())
    }

    /// Whether the default roots (system store, or Mozilla's) are trusted besides the added CA
    /// certificates: true from [`new`](Self::new), false from
    /// [`with_only_ca_certificates`](Self::with_only_ca_certificates).
    pub fn trusts_default_roots(&self) -> bool {
        self.trust == Trust::Default
    }

    /// Trusts the default roots besides the added CA certificates (`true`), or only the added
    /// ones (`false`: for a private PKI, where a public CA's certificate must not be accepted).
    /// With neither a default root nor an added one, [`build`](Self::build) fails (with
    /// verification on).
    pub fn set_trust_default_roots(&mut self, trusted: bool) {
        self.trust = if trusted {
            Trust::Default
        } else {
            Trust::OnlyExtra
        };
        self.changed();
    }

    /// Presents `cert_chain_pem` (end-entity certificate first) with `key_pem` (PKCS#8, PKCS#1 or
    /// SEC1) when a server asks for a client certificate (KDNetwork `setClientCertificate`).
    ///
    /// A server that refuses the certificate fails the connection with
    /// [`TlsFailure::AlertReceived`]; in TLS 1.3 after `handshake_completed` (see
    /// [`SslSocket`](crate::network::SslSocket)).
    ///
    /// Fails if either PEM is unusable or the key does not belong to the certificate. An
    /// encrypted key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or OpenSSL's legacy `Proc-Type:
    /// 4,ENCRYPTED` form) is refused as such: decrypt it first.
    pub fn set_client_certificate(
        &mut self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<(), SocketError> {
        let certified = certified_key(cert_chain_pem, key_pem, "client")?;
        self.client_certificate = Some(Arc::new(certified));
        self.changed();
        Ok(())
    }

    /// Accepts any server certificate, for any name, from anyone. **Only for tests and
    /// debugging**: the connection is encrypted but not authenticated, so anyone in the path can
    /// read and change it. The handshake signatures are still checked, so the peer must at
    /// least own the key of the certificate it presents.
    pub fn dangerous_disable_certificate_verification(&mut self) {
        log::warn!("TLS certificate verification disabled: connections are not authenticated");
        self.verify = false;
        self.changed();
    }

    /// Whether server certificates are verified (`false` only after
    /// [`dangerous_disable_certificate_verification`](Self::dangerous_disable_certificate_verification)).
    pub fn verifies_certificates(&self) -> bool {
        self.verify
    }

    /// The protocols to offer with ALPN, most preferred first (e.g. `b"http/1.1"`); none by
    /// default. Each name must be 1 to 255 bytes long, or [`build`](Self::build) fails.
    pub fn set_alpn_protocols(&mut self, protocols: Vec<Vec<u8>>) {
        self.alpn = protocols;
        self.changed();
    }

    /// Resumes TLS sessions (`true`, the default) or makes every handshake a full one (`false`,
    /// as Qt's `SslOptionDisableSessionTickets` with `SslOptionDisableSessionSharing`, or curl's
    /// `CURLOPT_SSL_SESSIONID_CACHE` set to 0).
    ///
    /// When on, the sessions (TLS 1.3 tickets, TLS 1.2 session IDs and tickets) servers hand out
    /// are kept in memory (for the last 32 servers, up to 8 tickets each) per built
    /// configuration: the connections made with
    /// one [`build`](Self::build) result (the reconnects of an
    /// [`SslSocket`](crate::network::SslSocket), clones of this configuration made after it was
    /// built) offer them to the same server name and skip the certificate exchange. The server
    /// then knows the connection comes from the client it saw before; turn resumption off where
    /// connections must not be linkable to each other. Off, no session is stored or offered.
    /// Turned off and on again, the sessions kept before are gone; set to the value it has, it
    /// changes nothing (the sessions kept stay).
    pub fn set_session_resumption(&mut self, enabled: bool) {
        if self.resume_sessions == enabled {
            return;
        }
        self.resume_sessions = enabled;
        self.changed();
    }

    /// Whether TLS sessions are resumed (see
    /// [`set_session_resumption`](Self::set_session_resumption)).
    pub fn resumes_sessions(&self) -> bool {
        self.resume_sessions
    }

    /// The `rustls::ClientConfig` for these settings: TLS 1.2 and 1.3, *ring* cryptography.
    /// Built on the first call and shared afterwards (until a setter changes something).
    ///
    /// Fails with [`TlsFailure::Configuration`] when no root is trusted, or when an ALPN protocol
    /// name is empty or over 255 bytes (or the list is too long for the extension).
    pub fn build(&self) -> Result<Arc<ClientConfig>, SocketError> {
        if let Some(built) = self.built.get() {
            return Ok(Arc::clone(built));
        }
        let config = Arc::new(self.build_uncached()?);
        Ok(Arc::clone(self.built.get_or_init(|| config)))
    }

    fn build_uncached(&self) -> Result<ClientConfig, SocketError> {
        check_alpn_protocols(&self.alpn)?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| configuration(format!("protocol versions: {e}")))?;
        let builder = if self.verify {
            let mut roots = match self.trust {
                Trust::Default => RootCertStore::clone(default_roots()),
                Trust::OnlyExtra => RootCertStore::empty(),
            };
            roots.roots.extend(self.extra_roots.roots.iter().cloned());
            if roots.is_empty() {
                return Err(configuration("no trusted root certificate"));
            }
            let roots = Arc::new(roots);
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| configuration(format!("server certificate verifier: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamingSelfSigned { webpki, roots }))
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
        };
        let mut config = match &self.client_certificate {
            Some(certified) => builder
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(certified)))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        if !self.resume_sessions {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(config)
    }

    fn changed(&mut self) {
        self.built = OnceLock::new();
    }
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        TlsClientConfig::new()
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints key material.
        f.debug_struct("TlsClientConfig")
            .field("trust", &self.trust)
            .field("extra_roots", &self.extra_roots.len())
            .field("client_certificate", &self.client_certificate.is_some())
            .field("verify", &self.verify)
            .field("alpn", &self.alpn)
            .field("resume_sessions", &self.resume_sessions)
            .finish()
    }
}

/// Builds `rustls::ServerConfig`s from PEM (for server-side TLS and loopback tests). Not
/// instantiable: it only groups the constructors.
///
/// ```
/// use kdnet::network::tls::TlsServerConfig;
///
/// let err = TlsServerConfig::from_pem(b"", b"").unwrap_err();
/// assert!(err.to_string().contains("no CERTIFICATE section"));
/// ```
#[derive(Debug)]
pub enum TlsServerConfig {}

impl TlsServerConfig {
    /// A server presenting `cert_chain_pem` (end-entity first) with `key_pem`; no client
    /// authentication, TLS 1.2 and 1.3.
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Arc<ServerConfig>, SocketError> {
        TlsServerConfig::with_alpn(cert_chain_pem, key_pem, Vec::new())
    }

    /// Like [`from_pem`](Self::from_pem), selecting among `protocols` (most preferred first)
    /// when the client offers ALPN. Each name must be 1 to 255 bytes long.
    pub fn with_alpn(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        protocols: Vec<Vec<u8>>,
    ) -> Result<Arc<ServerConfig>, SocketError> {
        TlsServerConfig::build(cert_chain_pem, key_pem, None, protocols)
    }

    /// Like [`with_alpn`](Self::with_alpn), and every client must present a certificate that
    /// leads to one of the CA certificates in `client_ca_pem` (one or more `CERTIFICATE`
    /// sections). A client without one, or with another, fails its handshake: the accepted
    /// socket reports a [`TlsFailure`] and is closed. The certificate of an accepted connection
    /// is [`TcpSocket::peer_certificate_chain`](crate::network::TcpSocket::peer_certificate_chain).
    pub fn with_client_certificates(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: &[u8],
        protocols: Vec<Vec<u8>>,
    ) -> Result<Arc<ServerConfig>, SocketError> {
        let mut roots = RootCertStore::empty();
        let certificates = parse_certificates(client_ca_pem, "client CA certificate")?;
        for (index, certificate) in certificates.into_iter().enumerate() {
            roots.add(certificate).map_err(|e| {
                configuration(format!(
                    "client CA certificate {} is not usable as a trust anchor: {}",
                    index + 1,
                    local_certificate_text(&e)
                ))
            })?;
        }
        TlsServerConfig::build(cert_chain_pem, key_pem, Some(roots), protocols)
    }

    fn build(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_roots: Option<RootCertStore>,
        protocols: Vec<Vec<u8>>,
    ) -> Result<Arc<ServerConfig>, SocketError> {
        check_alpn_protocols(&protocols)?;
        let certified = certified_key(cert_chain_pem, key_pem, "server")?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| configuration(format!("protocol versions: {e}")))?;
        let builder = match client_roots {
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| configuration(format!("client certificate verifier: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = protocols;
        Ok(Arc::new(config))
    }
}

/// The name to verify the server certificate against: IP literals (`127.0.0.1`, `::1`, `[::1]`)
/// become IP addresses (checked against IP SANs; rustls sends no SNI for them), anything else a
/// DNS name (an internationalized one in its IDNA form). Fails with [`SocketError::InvalidAddress`] for strings that are neither.
pub(crate) fn server_name_for(host: &str) -> Result<ServerName<'static>, SocketError> {
    // An internationalized name is sent (SNI) and verified in its IDNA form, which is the
    // one certificates carry.
    let host = &*crate::network::dns::ascii_host(host)?;
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    if let Ok(ip) = unbracketed.unwrap_or(host).parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    // `127.1`, `0x7f.1`: an address as URLs read it, connected to as one (no SNI).
    if let Some(ip) = crate::network::dns::numeric_ipv4(host) {
        return Ok(ServerName::from(IpAddr::V4(ip)));
    }
    ServerName::try_from(host.to_owned()).map_err(|e| {
        SocketError::InvalidAddress(format!("{host:?} is not a valid TLS server name: {e}"))
    })
}

/// A name a certificate presents, as one could connect by it: webpki reports each
/// subjectAltName entry in its `Debug` form (`DnsName("example.com")`, `IpAddress(127.0.0.1)`);
/// entries no connection can be made to (a directory name, a URI) are left out. A plain name (a
/// later webpki may give one) is kept as it is.
pub(crate) fn connectable_name(presented: &str) -> Option<String> {
    if let Some(name) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
    {
        return Some(name.to_owned());
    }
    if let Some(address) = presented
        .strip_prefix("IpAddress(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return Some(address.to_owned());
    }
    (!presented.contains('(') && presented != "DirectoryName").then(|| presented.to_owned())
}

/// Translates a rustls error into the reason a person needs; `expected_name` is the host the
/// certificate was checked against.
pub(crate) fn tls_failure(err: &rustls::Error, expected_name: &str) -> TlsFailure {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotValidYet
            }
            CertificateError::NotValidForName => TlsFailure::NameMismatch {
                expected: expected_name.to_owned(),
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext { presented, .. } => {
                TlsFailure::NameMismatch {
                    expected: expected_name.to_owned(),
                    presented: presented
                        .iter()
                        .filter_map(|p| connectable_name(p))
                        .collect(),
                }
            }
            CertificateError::Revoked => TlsFailure::Revoked,
            CertificateError::Other(OtherError(other)) if other.is::<SelfSigned>() => {
                TlsFailure::SelfSigned
            }
            other => TlsFailure::BadCertificate(certificate_text(other)),
        },
        E::NoCertificatesPresented => {
            TlsFailure::BadCertificate("the peer presented no certificate".to_owned())
        }
        E::AlertReceived(alert) => TlsFailure::AlertReceived(format!("{alert:?}")),
        // A server whose ALPN list has nothing the client offered (rustls: "peer doesn't
        // support any known protocol").
        E::NoApplicationProtocol => TlsFailure::Other(
            "the client offered none of the application protocols (ALPN) this server speaks"
                .to_owned(),
        ),
        E::InvalidMessage(_)
        | E::PeerMisbehaved(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerIncompatible(_)
        | E::PeerSentOversizedRecord => TlsFailure::PeerMisbehaved(err.to_string()),
        other => TlsFailure::Other(other.to_string()),
    }
}

/// rustls' verification (webpki, the trusted roots), telling a self-signed certificate apart
/// from one whose issuer is merely unknown: the remedy differs (trust that very certificate, or
/// its CA), and OpenSSL, KDNetwork's TLS library, names it too. Like OpenSSL it also calls a
/// certificate from a CA that merely has a trusted root's name (another key) one of an unknown
/// issuer, where webpki reports the trusted root's key failing to check its signature; and it
/// lists a name mismatch's IP addresses as they are written. A signature that the issuer's key
/// cannot check because that key is of a kind this TLS stack cannot use (an old CA's RSA key of
/// 1024 bits, ECDSA on P-521) is named as such, not as an unknown issuer.
#[derive(Debug)]
struct NamingSelfSigned {
    webpki: Arc<WebPkiServerVerifier>,
    /// The roots `webpki` trusts, looked at only when a signature fails to check.
    roots: Arc<RootCertStore>,
}

impl NamingSelfSigned {
    /// Whether a CA named as the issuer of a certificate of the chain (a trusted root, or a
    /// certificate the peer sent) has a key of a kind that cannot check signatures here.
    fn issuer_key_unusable(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> bool {
        // Each certificate of the chain as (issuer, subject, key), read once.
        let chain: Vec<_> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(|c| issuer_subject_key(c))
            .collect();
        chain.iter().any(|&(issuer, _, _)| {
            let root_keys = (self.roots.roots.iter())
                .filter(|root| root.subject.as_ref() == issuer)
                .map(|root| root.subject_public_key_info.as_ref());
            // A self-issued one's own key counts only when it is trusted (a root).
            let sent_keys = (chain.iter())
                .filter(|&&(own_issuer, subject, _)| subject == issuer && own_issuer != subject)
                .map(|&(_, _, key)| key);
            root_keys.chain(sent_keys).any(|key| !key_is_usable(key))
        })
    }
}

/// The certificate's key is of a kind that cannot check signatures here (carried through
/// rustls as a `CertificateError::Other`).
#[derive(Debug)]
struct UnusableIssuerKey;

impl fmt::Display for UnusableIssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "its issuer's key is of a kind that cannot check signatures (supported: RSA of 2048 \
             to 8192 bits, ECDSA on P-256 or P-384, Ed25519): the CA needs another key",
        )
    }
}

impl std::error::Error for UnusableIssuerKey {}

/// The certificate names itself as its issuer and is not trusted (carried through rustls as a
/// `CertificateError::Other`, told apart in [`tls_failure`]).
#[derive(Debug)]
struct SelfSigned;

impl fmt::Display for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("self-signed certificate")
    }
}

impl std::error::Error for SelfSigned {}

impl ServerCertVerifier for NamingSelfSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                }) => rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected,
                    presented: with_ip_addresses_written_out(presented, end_entity),
                }),
                // The issuer's key cannot check signatures at all (RSA of 1024 bits, P-521): the
                // issuer may well be the trusted one, and another trusted CA would not help. Also a
                // self-signed certificate trusted itself: it is trusted, its key is the trouble.
                rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature
                    | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
                ) if self.issuer_key_unusable(end_entity, intermediates) => {
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(UnusableIssuerKey),
                    )))
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                    | CertificateError::BadSignature
                    | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
                ) if is_self_issued(end_entity) => rustls::Error::InvalidCertificate(
                    // Not signed by a trusted certificate: webpki reports a trusted root that
                    // merely carries the same name (a "snakeoil" `CN=localhost`) by that root's
                    // key failing to check the signature.
                    CertificateError::Other(OtherError(Arc::new(SelfSigned))),
                ),
                // A CA with a trusted root's name but another key signed it (a CA made again
                // under the same name, an impostor): the signature is not that root's, so the
                // issuer is unknown, as OpenSSL says (the certificate's authority key
                // identifier names another key).
                rustls::Error::InvalidCertificate(
                    CertificateError::BadSignature
                    | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
                ) => rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                e => e,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The subjectAltName entries webpki reports for a name mismatch, with each `IpAddress(…)`
/// written as the address is usually written (RFC 5952): webpki's text for an IPv6 address
/// is no such form and at times another address (`::1` reads `0::1`, `fe80::` reads `fe80`,
/// `2001:db8::1:0:0:1` reads `2001:db8::1::1`). The addresses come from the certificate
/// itself; the list stays as it is when they cannot be matched up.
fn with_ip_addresses_written_out(presented: Vec<String>, certificate: &[u8]) -> Vec<String> {
    let addresses = ip_address_sans(certificate).unwrap_or_default();
    let is_address = |name: &String| name.starts_with("IpAddress(");
    if presented.iter().filter(|name| is_address(name)).count() != addresses.len() {
        return presented;
    }
    let mut addresses = addresses.into_iter();
    presented
        .into_iter()
        .map(|name| match is_address(&name) {
            true => addresses
                .next()
                .map_or(name, |address| format!("IpAddress({address})")),
            false => name,
        })
        .collect()
}

/// Accepts every server certificate but checks the handshake signatures with the provider's
/// algorithms (behind `dangerous_disable_certificate_verification` only).
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks that a handshake can carry every ALPN protocol name: 1 to 255 bytes each (rustls
/// asserts this while encoding a hello, so a bad name would panic in the middle of a connect),
/// and not more names than the extension's 16-bit length holds.
fn check_alpn_protocols(protocols: &[Vec<u8>]) -> Result<(), SocketError> {
    for (index, protocol) in protocols.iter().enumerate() {
        let problem = match protocol.len() {
            0 => "is empty".to_owned(),
            1..=255 => continue,
            len => format!("is {len} bytes long"),
        };
        return Err(configuration(format!(
            "ALPN protocol {} {problem}: protocol names are 1 to 255 bytes",
            index + 1
        )));
    }
    let encoded: usize = protocols.iter().map(|p| 1 + p.len()).sum();
    if encoded > usize::from(u16::MAX) {
        return Err(configuration(format!(
            "{} ALPN protocols take {encoded} bytes, more than a handshake carries (65535)",
            protocols.len()
        )));
    }
    Ok(())
}

/// The *ring* provider, made once per process.
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// The system roots, or Mozilla's when the system offers none; loaded once per process.
fn default_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            log::debug!("loading system root certificates: {error}");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            log::debug!("ignored {ignored} unparsable system root certificates");
        }
        if added == 0 {
            log::debug!("no system root certificates found: using the Mozilla root list");
            roots
                .roots
                .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

pub(super) fn configuration(reason: impl Into<String>) -> SocketError {
    SocketError::Tls(TlsFailure::Configuration(reason.into()))
}

/// rustls' text for a certificate error ("invalid peer certificate: …") without the prefix;
/// for the verifier's (webpki's) errors that rustls passes on as `Other` and prints as
/// `Other(OtherError(CaUsedAsEndEntity))`, words for the common ones and the bare name else.
pub(super) fn certificate_text(error: &CertificateError) -> String {
    if let CertificateError::Other(OtherError(inner)) = error {
        let name = inner.to_string();
        return match name.as_str() {
            "CaUsedAsEndEntity" => "a CA certificate (basic constraints CA:TRUE) is presented as \
                                   the peer's own certificate, as `openssl req -x509` makes by \
                                   default: use a certificate without CA:TRUE (signed by that \
                                   CA, or self-signed)"
                .to_owned(),
            "EndEntityUsedAsCa" => {
                "a certificate that is not a CA signs another one in the chain".to_owned()
            }
            "PathLenConstraintViolated" => {
                "the chain is longer than a CA's path length constraint allows".to_owned()
            }
            "NameConstraintViolation" => {
                "the certificate's names are outside its CA's name constraints".to_owned()
            }
            "MaximumPathDepthExceeded" => "the certificate chain is too long".to_owned(),
            "UnsupportedCertVersion" => "the certificate is not an X.509 v3 certificate".to_owned(),
            "UnsupportedCriticalExtension" => {
                "the certificate has a critical extension that is not understood".to_owned()
            }
            _ => name,
        };
    }
    let text = rustls::Error::InvalidCertificate(error.clone()).to_string();
    match text.strip_prefix("invalid peer certificate: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::DnsName;
    use rustls::{AlertDescription, InvalidMessage, PeerIncompatible, PeerMisbehaved};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn as_configuration(err: SocketError) -> String {
        match err {
            SocketError::Tls(TlsFailure::Configuration(reason)) => reason,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn server_names_for_hosts() {
        assert_eq!(
            server_name_for("example.com").unwrap(),
            ServerName::DnsName(DnsName::try_from("example.com").unwrap())
        );
        assert_eq!(
            server_name_for("127.0.0.1").unwrap(),
            ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            server_name_for("::1").unwrap(),
            ServerName::from(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            server_name_for("[::1]").unwrap(),
            ServerName::from(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        for bad in ["", "[127.0.0.1]", "exa mple.com", "[::1", "a..b"] {
            match server_name_for(bad) {
                Err(SocketError::InvalidAddress(reason)) => {
                    assert!(reason.contains("not a valid TLS server name"), "{reason}")
                }
                other => panic!("{bad:?}: expected InvalidAddress, got {other:?}"),
            }
        }
    }

    #[test]
    fn certificate_errors_map_to_reasons() {
        let cert = |e: CertificateError| tls_failure(&rustls::Error::InvalidCertificate(e), "h");
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(cert(CertificateError::Expired), TlsFailure::Expired);
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000));
        let before = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000_000));
        assert_eq!(
            cert(CertificateError::ExpiredContext {
                time: now,
                not_after: before
            }),
            TlsFailure::Expired
        );
        assert_eq!(cert(CertificateError::NotValidYet), TlsFailure::NotValidYet);
        assert_eq!(
            cert(CertificateError::NotValidYetContext {
                time: before,
                not_before: now
            }),
            TlsFailure::NotValidYet
        );
        assert_eq!(
            cert(CertificateError::NotValidForName),
            TlsFailure::NameMismatch {
                expected: "h".to_owned(),
                presented: Vec::new(),
            }
        );
        // webpki's forms of each subjectAltName entry, as names one could connect by.
        let mismatch = cert(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("h").unwrap(),
            presented: [
                r#"DnsName("other")"#,
                "IpAddress(127.0.0.1)",
                "IpAddress(::1)",
                "DirectoryName",
                r#"UniformResourceIdentifier("https://x/")"#,
                "Unsupported(0x80)",
                "plain.example",
            ]
            .map(str::to_owned)
            .to_vec(),
        });
        assert_eq!(
            mismatch,
            TlsFailure::NameMismatch {
                expected: "h".to_owned(),
                presented: ["other", "127.0.0.1", "::1", "plain.example"]
                    .map(str::to_owned)
                    .to_vec(),
            }
        );
        assert_eq!(
            mismatch.to_string(),
            r#"certificate is not valid for name "h" (it is valid for other, 127.0.0.1, ::1, plain.example)"#
        );
        // Many names: five shown, the rest counted; a control character cannot reach a log or
        // terminal as itself.
        let many = TlsFailure::NameMismatch {
            expected: "h".to_owned(),
            presented: (1..=8).map(|i| format!("n{i}")).collect(),
        };
        assert_eq!(
            many.to_string(),
            r#"certificate is not valid for name "h" (it is valid for n1, n2, n3, n4, n5 and 3 more)"#
        );
        // Five are all shown (none "more"), six are five and one more.
        for (count, tail) in [(5, "n5)"), (6, "n5 and 1 more)")] {
            let names = TlsFailure::NameMismatch {
                expected: "h".to_owned(),
                presented: (1..=count).map(|i| format!("n{i}")).collect(),
            };
            assert_eq!(
                names.to_string(),
                format!(
                    r#"certificate is not valid for name "h" (it is valid for n1, n2, n3, n4, {tail}"#
                )
            );
        }
        // Every name shown is escaped, the first and the others.
        let escaped = TlsFailure::NameMismatch {
            expected: "h".to_owned(),
            presented: vec!["evil\u{1b}[2J".to_owned(), "bad\u{7}\n".to_owned()],
        };
        assert_eq!(
            escaped.to_string(),
            r#"certificate is not valid for name "h" (it is valid for evil\u{1b}[2J, bad\u{7}\n)"#
        );
        assert_eq!(cert(CertificateError::Revoked), TlsFailure::Revoked);
        match cert(CertificateError::BadSignature) {
            TlsFailure::BadCertificate(text) => assert_eq!(text, "BadSignature"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            cert(CertificateError::InvalidPurpose),
            TlsFailure::BadCertificate(_)
        ));
    }

    #[test]
    fn protocol_errors_map_to_reasons() {
        assert_eq!(
            tls_failure(
                &rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                "h"
            ),
            TlsFailure::AlertReceived("HandshakeFailure".to_owned())
        );
        // Alerts whose names say little get their meaning; the others stay as they are.
        for (alert, meaning) in [
            (
                AlertDescription::CertificateRequired,
                "requires a client certificate",
            ),
            (
                AlertDescription::UnknownCA,
                "does not trust the issuer of our certificate",
            ),
            (
                AlertDescription::ProtocolVersion,
                "no TLS version in common",
            ),
            (
                AlertDescription::UnrecognisedName,
                "does not serve the name sent with SNI",
            ),
            (
                AlertDescription::NoApplicationProtocol,
                "none of the application protocols offered with ALPN",
            ),
            (
                AlertDescription::HandshakeFailure,
                "no cipher suite or key exchange in common",
            ),
            (
                AlertDescription::BadCertificate,
                "the peer refused our certificate",
            ),
            (
                AlertDescription::UnsupportedCertificate,
                "the peer refused our certificate",
            ),
            (
                AlertDescription::CertificateUnknown,
                "the peer refused our certificate",
            ),
            (
                AlertDescription::CertificateExpired,
                "says our certificate has expired",
            ),
        ] {
            let text = tls_failure(&rustls::Error::AlertReceived(alert), "h").to_string();
            assert!(text.contains(meaning), "{text}");
        }
        assert_eq!(
            tls_failure(
                &rustls::Error::AlertReceived(AlertDescription::DecryptError),
                "h"
            )
            .to_string(),
            "peer sent alert: DecryptError"
        );
        for err in [
            rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType),
            rustls::Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
            rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
            rustls::Error::InappropriateMessage {
                expect_types: vec![],
                got_type: rustls::ContentType::Heartbeat,
            },
            rustls::Error::InappropriateHandshakeMessage {
                expect_types: vec![],
                got_type: rustls::HandshakeType::HelloRequest,
            },
        ] {
            match tls_failure(&err, "h") {
                TlsFailure::PeerMisbehaved(text) => assert_eq!(text, err.to_string()),
                other => panic!("{err:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(
            tls_failure(&rustls::Error::General("boom".into()), "h"),
            TlsFailure::Other("unexpected error: boom".to_owned())
        );
        assert!(matches!(
            tls_failure(&rustls::Error::NoCertificatesPresented, "h"),
            TlsFailure::BadCertificate(_)
        ));
    }

    #[test]
    fn bad_pem_names_the_problem() {
        let reason = as_configuration(TlsClientConfig::with_only_ca_certificates(b"").unwrap_err());
        assert_eq!(
            reason,
            "no CERTIFICATE section found in the CA certificate PEM"
        );

        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let reason =
            as_configuration(TlsClientConfig::with_only_ca_certificates(truncated).unwrap_err());
        assert!(
            reason.starts_with("CA certificate PEM, section 1: missing section end"),
            "{reason}"
        );

        let bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let reason =
            as_configuration(TlsClientConfig::with_only_ca_certificates(bad_base64).unwrap_err());
        assert!(
            reason.starts_with("CA certificate PEM, section 1: base64 decode error"),
            "{reason}"
        );

        let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let reason =
            as_configuration(TlsClientConfig::with_only_ca_certificates(not_der).unwrap_err());
        assert!(
            reason.starts_with("CA certificate 1 is not usable as a trust anchor"),
            "{reason}"
        );
    }

    #[test]
    fn failed_additions_leave_the_config_unchanged() {
        let mut config = TlsClientConfig::new();
        assert!(config.add_ca_certificate(b"garbage").is_err());
        assert_eq!(config.extra_roots.len(), 0);
        assert!(config.set_client_certificate(b"", b"").is_err());
        assert!(config.client_certificate.is_none());
    }

    #[test]
    fn default_roots_are_never_empty() {
        assert!(!default_roots().is_empty());
    }
}
