//! TLS configuration: PEM handling, root choice, client certificates, ALPN, and in-memory rustls
//! handshakes proving the built configs verify (or deliberately don't).

#[path = "support/certs.rs"]
mod certs;

use std::sync::Arc;

use certs::test_pki;
use kdnet::network::tls::{TlsClientConfig, TlsServerConfig};
use kdnet::network::{SocketError, TlsFailure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};

#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Runs a client/server handshake by handing bytes between two rustls connections in memory.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<ClientConnection, Failed> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(client, name).map_err(Failed::Client)?;
    let mut server = ServerConnection::new(server).map_err(Failed::Server)?;
    for _ in 0..20 {
        let to_server = drain_tls(&mut client);
        feed(&mut server, &to_server).map_err(Failed::Server)?;
        let to_client = drain_tls(&mut server);
        feed(&mut client, &to_client).map_err(Failed::Client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            // The server may still judge the client's last flight (client certificates).
            let to_server = drain_tls(&mut client);
            feed(&mut server, &to_server).map_err(Failed::Server)?;
            return Ok(client);
        }
    }
    panic!("handshake did not finish in 20 rounds");
}

fn drain_tls<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls to a Vec");
    }
    out
}

fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> Result<(), rustls::Error> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).expect("read_tls from a slice");
        conn.process_new_packets()?;
    }
    Ok(())
}

fn trusting_test_ca() -> TlsClientConfig {
    TlsClientConfig::with_only_ca_certificates(test_pki().ca_pem.as_bytes()).unwrap()
}

fn server(cert: &str, key: &str) -> Arc<ServerConfig> {
    TlsServerConfig::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
}

fn good_server() -> Arc<ServerConfig> {
    let pki = test_pki();
    server(&pki.server_cert_pem, &pki.server_key_pem)
}

fn client_error(result: Result<ClientConnection, Failed>) -> rustls::Error {
    match result {
        Err(Failed::Client(e)) => e,
        other => panic!("expected the client to reject the server, got {other:?}"),
    }
}

fn configuration_reason(err: SocketError) -> String {
    match err {
        SocketError::Tls(TlsFailure::Configuration(reason)) => reason,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn trusted_server_verifies_by_name_and_by_ip() {
    let client = trusting_test_ca().build().unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let conn = handshake(client.clone(), good_server(), name)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!conn.is_handshaking());
    }
}

#[test]
fn untrusted_issuer_is_rejected() {
    let pki = test_pki();
    let client = trusting_test_ca().build().unwrap();
    let untrusted = server(&pki.untrusted_cert_pem, &pki.untrusted_key_pem);
    let err = client_error(handshake(client, untrusted, "localhost"));
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn server_trusted_only_by_another_ca_is_rejected() {
    let pki = test_pki();
    let client = TlsClientConfig::with_only_ca_certificates(pki.other_ca_pem.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    let err = client_error(handshake(client, good_server(), "localhost"));
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn expired_certificate_is_rejected() {
    let pki = test_pki();
    let client = trusting_test_ca().build().unwrap();
    let expired = server(&pki.expired_cert_pem, &pki.expired_key_pem);
    let err = client_error(handshake(client, expired, "localhost"));
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_name_is_rejected() {
    let pki = test_pki();
    let client = trusting_test_ca().build().unwrap();
    let wrong = server(&pki.wrong_name_cert_pem, &pki.wrong_name_key_pem);
    let err = client_error(handshake(client.clone(), wrong, "localhost"));
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
    // The same certificate is fine for the name it was made for.
    let wrong = server(&pki.wrong_name_cert_pem, &pki.wrong_name_key_pem);
    handshake(client, wrong, "wrong.example").unwrap();
}

#[test]
fn extra_ca_is_trusted_alongside_the_default_roots() {
    let mut config = TlsClientConfig::new();
    config
        .add_ca_certificate(test_pki().ca_pem.as_bytes())
        .unwrap();
    handshake(config.build().unwrap(), good_server(), "localhost").unwrap();
    // Without it the default roots do not know the test CA.
    let err = client_error(handshake(
        TlsClientConfig::new().build().unwrap(),
        good_server(),
        "localhost",
    ));
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn dangerous_mode_accepts_any_certificate() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    assert!(config.verifies_certificates());
    config.dangerous_disable_certificate_verification();
    assert!(!config.verifies_certificates());
    let client = config.build().unwrap();
    for (cert, key, name) in [
        (&pki.untrusted_cert_pem, &pki.untrusted_key_pem, "localhost"),
        (&pki.expired_cert_pem, &pki.expired_key_pem, "localhost"),
        (
            &pki.wrong_name_cert_pem,
            &pki.wrong_name_key_pem,
            "localhost",
        ),
    ] {
        handshake(client.clone(), server(cert, key), name).unwrap();
    }
}

#[test]
fn alpn_is_negotiated() {
    let pki = test_pki();
    let mut config = trusting_test_ca();
    config.set_alpn_protocols(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let server = TlsServerConfig::with_alpn(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        vec![b"http/1.1".to_vec()],
    )
    .unwrap();
    let conn = handshake(config.build().unwrap(), server, "localhost").unwrap();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

fn server_requiring_client_certificates() -> Arc<ServerConfig> {
    let pki = test_pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

#[test]
fn client_certificate_is_presented() {
    let pki = test_pki();
    let mut config = trusting_test_ca();
    config
        .set_client_certificate(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .unwrap();
    handshake(
        config.build().unwrap(),
        server_requiring_client_certificates(),
        "localhost",
    )
    .unwrap();

    let without = trusting_test_ca().build().unwrap();
    match handshake(without, server_requiring_client_certificates(), "localhost") {
        Err(Failed::Server(rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected the server to miss the client certificate, got {other:?}"),
    }
}

#[test]
fn mismatched_key_is_a_configuration_error() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    let reason = configuration_reason(
        config
            .set_client_certificate(
                pki.client_cert_pem.as_bytes(),
                pki.server_key_pem.as_bytes(),
            )
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "the client key does not belong to the client certificate"
    );

    let reason = configuration_reason(
        TlsServerConfig::from_pem(
            pki.server_cert_pem.as_bytes(),
            pki.wrong_name_key_pem.as_bytes(),
        )
        .unwrap_err(),
    );
    assert_eq!(
        reason,
        "the server key does not belong to the server certificate"
    );
}

#[test]
fn bad_pem_is_a_configuration_error_naming_the_problem() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();

    let reason = configuration_reason(
        config
            .set_client_certificate(
                pki.client_cert_pem.as_bytes(),
                pki.client_cert_pem.as_bytes(),
            )
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "no PRIVATE KEY section found in the client key PEM (it holds: CERTIFICATE)"
    );

    let reason = configuration_reason(
        config
            .set_client_certificate(pki.client_key_pem.as_bytes(), pki.client_key_pem.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the client certificate PEM (it holds: PRIVATE KEY)"
    );

    let reason = configuration_reason(config.add_ca_certificate(b"hello").unwrap_err());
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the CA certificate PEM"
    );

    let truncated = &pki.ca_pem[..pki.ca_pem.len() / 2];
    let reason = configuration_reason(config.add_ca_certificate(truncated.as_bytes()).unwrap_err());
    assert!(
        reason.starts_with("CA certificate PEM, section 1: missing section end"),
        "{reason}"
    );

    let reason = configuration_reason(
        TlsServerConfig::from_pem(pki.server_cert_pem.as_bytes(), b"").unwrap_err(),
    );
    assert_eq!(reason, "no PRIVATE KEY section found in the server key PEM");

    let display = SocketError::Tls(TlsFailure::Configuration(reason)).to_string();
    assert_eq!(
        display,
        "TLS failed: TLS configuration: no PRIVATE KEY section found in the server key PEM"
    );
}

#[test]
fn several_cas_in_one_pem_are_all_trusted() {
    let pki = test_pki();
    let both = format!("{}{}", pki.other_ca_pem, pki.ca_pem);
    let client = TlsClientConfig::with_only_ca_certificates(both.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    handshake(client.clone(), good_server(), "localhost").unwrap();
    let untrusted = server(&pki.untrusted_cert_pem, &pki.untrusted_key_pem);
    handshake(client, untrusted, "localhost").unwrap();
}

#[test]
fn built_config_is_cached_until_a_setting_changes() {
    let mut config = trusting_test_ca();
    let first = config.build().unwrap();
    assert!(Arc::ptr_eq(&first, &config.build().unwrap()));
    let copy = config.clone();
    assert!(
        Arc::ptr_eq(&first, &copy.build().unwrap()),
        "clones share the built config"
    );
    config.set_alpn_protocols(vec![b"http/1.1".to_vec()]);
    let second = config.build().unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(second.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(
        copy.build().unwrap().alpn_protocols.is_empty(),
        "the clone is independent"
    );
}

#[test]
fn debug_output_hides_key_material() {
    let pki = test_pki();
    let mut config = trusting_test_ca();
    config
        .set_client_certificate(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("client_certificate: true"), "{debug}");
    assert!(debug.contains("extra_roots: 1"), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
}

#[test]
fn default_roots_build() {
    let config = TlsClientConfig::default().build().unwrap();
    assert!(config.alpn_protocols.is_empty());
}

/// An EC P-256 key encrypted with the password `secret` (PKCS#8, `openssl pkcs8 -topk8`).
const ENCRYPTED_PKCS8_KEY: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAjM7etfsIuKZwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEOAZ4C7HJB5q4yMhS2Oox9YEgZD8
49YiGUZBVGHBBQgDBtRjQs83qjUBQlFEhJX6CAwZpr1+/K0JXK16NBLPWYCRay6z
WHQfJJjewz/qtvBDrPEk5dY/WzMjOAxZ4KqNN9dwTIzRceCpJxM1UlgmBdFIAXMN
hEyYzVoe1Z40N5XyI6tr5xDZbT+jNd87Xq+bpziHVBpRSnKF4+s1OO54GSvxCSc=
-----END ENCRYPTED PRIVATE KEY-----
";

/// The same kind of key in OpenSSL's legacy encrypted form (`openssl ec -aes128`).
const ENCRYPTED_LEGACY_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-128-CBC,8FB658AFEDA408F366BFF22CBF351166

BMsVh9hOfKVAFupLMm2UGx5pqflXiGJQp6/EkGSlbfJVEw93Mzsu/1ZPKp5lQ/fT
5dFg/SSXyi8RTQq2Qvy33HgNqQDE53y269gmqR+/Boi74bUa/q9qpkobUjRxaPkp
vutYBk3V8fK1qzcAy0dVSPB5MeipFCZaAVK5P1BDocA=
-----END EC PRIVATE KEY-----
";

#[test]
fn encrypted_keys_are_named_as_encrypted() {
    let pki = test_pki();
    for (key, form) in [
        (ENCRYPTED_PKCS8_KEY, "ENCRYPTED PRIVATE KEY"),
        (
            ENCRYPTED_LEGACY_KEY,
            "EC PRIVATE KEY, Proc-Type: 4,ENCRYPTED",
        ),
    ] {
        let mut config = TlsClientConfig::new();
        let reason = configuration_reason(
            config
                .set_client_certificate(pki.client_cert_pem.as_bytes(), key.as_bytes())
                .unwrap_err(),
        );
        assert_eq!(
            reason,
            format!(
                "the client key PEM holds an encrypted private key ({form}), which cannot be \
                 used without its password: decrypt it first, e.g. with \
                 `openssl pkey -in key.pem -out plain-key.pem`"
            )
        );
        let reason = configuration_reason(
            TlsServerConfig::from_pem(pki.server_cert_pem.as_bytes(), key.as_bytes()).unwrap_err(),
        );
        assert!(
            reason.starts_with("the server key PEM holds an encrypted private key"),
            "{reason}"
        );
    }
}

#[test]
fn pem_of_the_wrong_kind_or_der_says_what_it_holds() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    // A key, and OpenSSL's TRUSTED CERTIFICATE form, where CA certificates were expected.
    let reason = configuration_reason(
        config
            .add_ca_certificate(pki.server_key_pem.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the CA certificate PEM (it holds: PRIVATE KEY)"
    );
    let trusted = pki.ca_pem.replace("CERTIFICATE", "TRUSTED CERTIFICATE");
    let both = format!("{trusted}{trusted}{}", pki.server_key_pem);
    let reason = configuration_reason(config.add_ca_certificate(both.as_bytes()).unwrap_err());
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the CA certificate PEM \
         (it holds: TRUSTED CERTIFICATE, PRIVATE KEY)"
    );

    // DER (binary) where PEM (text) was expected.
    let ca_der = CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    let reason = configuration_reason(config.add_ca_certificate(ca_der.as_ref()).unwrap_err());
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the CA certificate PEM (it looks like binary DER, \
         not PEM text: convert it with `openssl x509 -inform der -in cert.der -out cert.pem`)"
    );
    let key_der = PrivateKeyDer::from_pem_slice(pki.client_key_pem.as_bytes()).unwrap();
    let reason = configuration_reason(
        config
            .set_client_certificate(pki.client_cert_pem.as_bytes(), key_der.secret_der())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "no PRIVATE KEY section found in the client key PEM (it looks like binary DER, \
         not PEM text: convert it with `openssl pkey -inform der -in key.der -out key.pem`)"
    );
    assert!(format!("{config:?}").contains("extra_roots: 0"));
}

/// An Ed448 key (`openssl genpkey -algorithm ed448`): valid PKCS#8, but not a kind *ring* signs
/// with.
const ED448_KEY: &str = "-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEOTYsVrHvaLT9vs3pXhIWMj/NFE0nrSlH5bt9zi/js96L
7GVDD4+iCbdhf/ZnfS6BREtgGffHkKpaJg==
-----END PRIVATE KEY-----
";

#[test]
fn unusable_keys_and_certificates_are_named_without_rustls_jargon() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();

    let reason = configuration_reason(
        config
            .set_client_certificate(pki.client_cert_pem.as_bytes(), ED448_KEY.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "the client key is of a kind that cannot be used (supported: RSA of 2048 to 4096 bits, \
         ECDSA on P-256 or P-384, Ed25519)"
    );

    // A CERTIFICATE section whose content is no certificate: it is our file, not a peer's.
    let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let reason = configuration_reason(
        config
            .set_client_certificate(broken.as_bytes(), pki.client_key_pem.as_bytes())
            .unwrap_err(),
    );
    let malformed = "its content is not a well-formed X.509 certificate (its base64 text \
                     decodes, but not to a certificate): was a line of it lost or changed? Get \
                     the file again";
    assert_eq!(
        reason,
        format!("client certificate 1 cannot be parsed: {malformed}")
    );
    let bundle = format!("{}{broken}", pki.ca_pem);
    let reason = configuration_reason(config.add_ca_certificate(bundle.as_bytes()).unwrap_err());
    assert_eq!(
        reason,
        format!("CA certificate 2 is not usable as a trust anchor: {malformed}")
    );
    assert!(
        !format!("{config:?}").contains("extra_roots: 1"),
        "nothing added"
    );
}

#[test]
fn duplicate_ca_certificates_are_harmless() {
    let pki = test_pki();
    let twice = format!("{}{}", pki.ca_pem, pki.ca_pem);
    let mut config = TlsClientConfig::with_only_ca_certificates(twice.as_bytes()).unwrap();
    config.add_ca_certificate(pki.ca_pem.as_bytes()).unwrap();
    handshake(config.build().unwrap(), good_server(), "localhost").unwrap();
}
#[test]
fn a_chain_that_does_not_start_with_its_end_entity_certificate_says_so() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    let ca_first = format!("{}{}", pki.ca_pem, pki.client_cert_pem);
    let reason = configuration_reason(
        config
            .set_client_certificate(ca_first.as_bytes(), pki.client_key_pem.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "the client key belongs to certificate 2 of the client certificate PEM, but the chain \
         must start with the end-entity certificate (the one the key belongs to)"
    );
    // The right order works.
    let leaf_first = format!("{}{}", pki.client_cert_pem, pki.ca_pem);
    config
        .set_client_certificate(leaf_first.as_bytes(), pki.client_key_pem.as_bytes())
        .unwrap();
}

#[test]
fn the_key_kinds_named_as_supported_work() {
    for algorithm in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["kinds.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut config = TlsClientConfig::new();
        config
            .set_client_certificate(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
    }
}

#[test]
fn pem_syntax_errors_quote_the_line_instead_of_listing_bytes() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    let truncated = &pki.ca_pem[..pki.ca_pem.len() / 2];
    let reason = configuration_reason(config.add_ca_certificate(truncated.as_bytes()).unwrap_err());
    assert_eq!(
        reason,
        "CA certificate PEM, section 1: missing section end \"-----END CERTIFICATE-----\" \
         for the section that begins at line 1 (is the file cut short?)"
    );

    let tab_after_begin = pki.ca_pem.replacen("-----\n", "-----\t\n", 1);
    let reason = configuration_reason(
        config
            .add_ca_certificate(tab_after_begin.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "CA certificate PEM, section 1: line 1, \"-----BEGIN CERTIFICATE-----\\t\", is not a \
         valid BEGIN line: it must read \"-----BEGIN <label>-----\", five dashes on each side \
         and nothing after them"
    );

    let truncated_key = &pki.client_key_pem[..pki.client_key_pem.len() - 10];
    let reason = configuration_reason(
        config
            .set_client_certificate(pki.client_cert_pem.as_bytes(), truncated_key.as_bytes())
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "client key PEM: missing section end \"-----END PRIVATE KEY-----\" for the section \
         that begins at line 1 (is the file cut short?)"
    );
}

#[test]
fn pem_files_saved_with_a_byte_order_mark_are_read() {
    // Windows editors like to start UTF-8 text files with EF BB BF.
    let pki = test_pki();
    let bom = |pem: &str| format!("\u{feff}{pem}");
    let mut config = TlsClientConfig::with_only_ca_certificates(bom(&pki.ca_pem).as_bytes())
        .unwrap_or_else(|e| panic!("CA with a BOM: {e}"));
    config
        .set_client_certificate(
            bom(&pki.client_cert_pem).as_bytes(),
            bom(&pki.client_key_pem).as_bytes(),
        )
        .unwrap_or_else(|e| panic!("client certificate and key with a BOM: {e}"));
    handshake(
        config.build().unwrap(),
        server_requiring_client_certificates(),
        "localhost",
    )
    .unwrap();
    TlsServerConfig::from_pem(
        bom(&pki.server_cert_pem).as_bytes(),
        bom(&pki.server_key_pem).as_bytes(),
    )
    .unwrap();
}

#[test]
fn pem_that_cannot_be_read_as_written_says_why() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    // Indented sections are not PEM (the BEGIN line must start the line): the hint must not
    // claim the PEM holds a CERTIFICATE.
    let indented: String = pki.ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    let reason = configuration_reason(config.add_ca_certificate(indented.as_bytes()).unwrap_err());
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the CA certificate PEM (its -----BEGIN lines are \
         indented: they must start at the beginning of a line)"
    );
    // UTF-16 text, as PowerShell's `>` writes it.
    for bom in [[0xFF, 0xFE], [0xFE, 0xFF]] {
        let mut utf16 = bom.to_vec();
        for unit in pki.ca_pem.encode_utf16() {
            let bytes = if bom[0] == 0xFF {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            };
            utf16.extend_from_slice(&bytes);
        }
        let reason = configuration_reason(config.add_ca_certificate(&utf16).unwrap_err());
        assert_eq!(
            reason,
            "no CERTIFICATE section found in the CA certificate PEM (it is UTF-16 text: save \
             it as ASCII or UTF-8)"
        );
    }
}

#[test]
fn a_broken_entry_in_a_ca_bundle_is_located() {
    let pki = test_pki();
    let mut config = TlsClientConfig::new();
    let corrupt = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let bundle = format!("{}{}{corrupt}{}", pki.ca_pem, pki.other_ca_pem, pki.ca_pem);
    let reason = configuration_reason(config.add_ca_certificate(bundle.as_bytes()).unwrap_err());
    let line = pki.ca_pem.lines().count() + pki.other_ca_pem.lines().count() + 2;
    assert_eq!(
        reason,
        format!(
            "CA certificate PEM, section 3: base64 decode error at line {line}, column 1: '!' is \
             not a base64 character (between its BEGIN and END lines a section holds only A-Z, \
             a-z, 0-9, +, / and =): remove it, or get the file again"
        )
    );
    // Nothing of a bundle that fails is trusted.
    assert!(format!("{config:?}").contains("extra_roots: 0"));
}

/// The base64 decoder's own words (`base64 decode error: InvalidCharacter(33)`,
/// `PrematurePadding`, `InvalidTrailingPadding`) told nobody which line to look at or what to do.
#[test]
fn base64_errors_name_the_line_the_character_and_what_to_do() {
    let pki = test_pki();
    let reason = |pem: &str| {
        configuration_reason(
            TlsClientConfig::new()
                .add_ca_certificate(pem.as_bytes())
                .unwrap_err(),
        )
    };
    let lines: Vec<&str> = pki.ca_pem.lines().collect();
    let with_line = |index: usize, line: &str| {
        let mut changed = lines.clone();
        changed[index] = line;
        changed.join("\n") + "\n"
    };

    // A no-break space pasted from a web page, in line 3.
    let nbsp = format!("{}\u{a0}{}", &lines[2][..4], &lines[2][5..]);
    assert_eq!(
        reason(&with_line(2, &nbsp)),
        "CA certificate PEM, section 1: base64 decode error at line 3, column 5: '\\u{a0}' \
         (U+00A0) is not a base64 character (between its BEGIN and END lines a section holds \
         only A-Z, a-z, 0-9, +, / and =): remove it, or get the file again"
    );

    // Lines joined with a written-out `\n`, as in a JSON string.
    let joined = format!("{}\\n{}", lines[1], lines[2]);
    let mut escaped: Vec<&str> = lines.clone();
    escaped.splice(1..3, [joined.as_str()]);
    assert_eq!(
        reason(&(escaped.join("\n") + "\n")),
        "CA certificate PEM, section 1: base64 decode error at line 2: it holds \"\\n\" (a \
         backslash and an n) where line breaks belong, as a PEM copied out of a quoted string \
         (JSON, YAML, an environment variable) does: replace each \"\\n\" with a line break"
    );
    // The whole PEM on one line, so: no BEGIN line of its own.
    let one_line = lines.join("\\n");
    let shown: String = one_line
        .chars()
        .take(64)
        .collect::<String>()
        .replace('\\', "\\\\");
    assert_eq!(
        reason(&one_line),
        format!(
            "CA certificate PEM, section 1: line 1, \"{shown}…\", is not a valid BEGIN line: \
             it holds \"\\n\" (a backslash and an n) where line breaks belong, as \
             a PEM copied out of a quoted string (JSON, YAML, an environment variable) does: \
             replace each \"\\n\" with a line break"
        )
    );

    let without_end = lines[..lines.len() - 1].join("\\n");
    let shown: String = without_end
        .chars()
        .take(64)
        .collect::<String>()
        .replace('\\', "\\\\");
    assert!(
        reason(&without_end).starts_with(&format!(
            "CA certificate PEM, section 1: line 1, \"{shown}…\", is not a valid BEGIN line: it \
             holds \"\\n\""
        )),
        "{}",
        reason(&without_end)
    );

    // A character added to line 3 (a PEM's base64 text is a whole number of groups of four,
    // so one more is never a whole number).
    let long = format!("{}A{}", &lines[2][..10], &lines[2][10..]);
    assert_eq!(
        reason(&with_line(2, &long)),
        format!(
            "CA certificate PEM, section 1: base64 decode error at line 3: it is {} characters \
             long where the lines before it have {}, and the base64 text does not decode: a \
             character was lost or added there (get the file again)",
            lines[2].len() + 1,
            lines[1].len()
        )
    );

    // The same before a final `==` (the decoder calls it misplaced padding, not a bad length).
    assert_eq!(
        reason(
            "-----BEGIN CERTIFICATE-----\nAAAAAAAA\nAAAAAAAAA\nAAAAAA==\n-----END CERTIFICATE-----\n"
        ),
        "CA certificate PEM, section 1: base64 decode error at line 3: it is 9 characters long \
         where the lines before it have 8, and the base64 text does not decode: a character was \
         lost or added there (get the file again)"
    );

    // Two contents in one section: padding, then more base64.
    assert_eq!(
        reason("-----BEGIN CERTIFICATE-----\nAAAAAA==\nAAAA\n-----END CERTIFICATE-----\n"),
        "CA certificate PEM, section 1: base64 decode error at line 2: the base64 text ends \
         there (with '=') but goes on after it (the contents of two sections run together?): \
         each certificate or key needs its own BEGIN and END lines"
    );

    // An END line that does not match its BEGIN line.
    let last = lines.len() - 1;
    assert_eq!(
        reason(&with_line(last, "-----END CERTIFICATE----")),
        format!(
            "CA certificate PEM, section 1: the section that begins at line 1 ends at line {} \
             with \"-----END CERTIFICATE----\", which does not match its BEGIN line: it must \
             read \"-----END CERTIFICATE-----\"",
            last + 1
        )
    );

    // The last line cut short by three characters (it has four at least): no line is odd, the
    // text does not end on a whole group of four.
    let cut = &lines[last - 1][..lines[last - 1].len() - 3];
    let text = with_line(last - 1, cut);
    let reason = reason(&text);
    assert!(
        reason.starts_with(&format!(
            "CA certificate PEM, section 1: base64 decode error: the base64 text of lines 2 to \
             {last} does not end on a whole group of four characters"
        )),
        "{reason}"
    );

    // The same words for a key.
    let key: Vec<&str> = pki.client_key_pem.lines().collect();
    let mut bad_key = key.clone();
    let changed = format!("{}!{}", &key[1][..3], &key[1][4..]);
    bad_key[1] = &changed;
    let reason = configuration_reason(
        TlsClientConfig::new()
            .set_client_certificate(
                pki.client_cert_pem.as_bytes(),
                (bad_key.join("\n") + "\n").as_bytes(),
            )
            .unwrap_err(),
    );
    assert_eq!(
        reason,
        "client key PEM: base64 decode error at line 2, column 4: '!' is not a base64 character \
         (between its BEGIN and END lines a section holds only A-Z, a-z, 0-9, +, / and =): \
         remove it, or get the file again"
    );
}

#[test]
fn alpn_names_a_handshake_cannot_carry_are_a_configuration_error_not_a_panic() {
    // rustls asserts on these when it builds the ClientHello: the connection would panic.
    let mut config = trusting_test_ca();
    config.set_alpn_protocols(vec![b"http/1.1".to_vec(), Vec::new()]);
    assert_eq!(
        configuration_reason(config.build().unwrap_err()),
        "ALPN protocol 2 is empty: protocol names are 1 to 255 bytes"
    );
    config.set_alpn_protocols(vec![vec![b'a'; 256]]);
    assert_eq!(
        configuration_reason(config.build().unwrap_err()),
        "ALPN protocol 1 is 256 bytes long: protocol names are 1 to 255 bytes"
    );
    let reason = configuration_reason(
        TlsServerConfig::with_alpn(
            test_pki().server_cert_pem.as_bytes(),
            test_pki().server_key_pem.as_bytes(),
            vec![Vec::new()],
        )
        .unwrap_err(),
    );
    assert_eq!(
        reason,
        "ALPN protocol 1 is empty: protocol names are 1 to 255 bytes"
    );
    // The longest name a handshake carries is fine.
    config.set_alpn_protocols(vec![vec![b'a'; 255]]);
    handshake(config.build().unwrap(), good_server(), "localhost").unwrap();
}

#[test]
fn a_server_requiring_client_certificates_checks_them_against_its_client_cas() {
    let pki = test_pki();
    let server = |client_ca: &str| {
        TlsServerConfig::with_client_certificates(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            client_ca.as_bytes(),
            Vec::new(),
        )
    };
    let mut with_certificate = trusting_test_ca();
    with_certificate
        .set_client_certificate(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .unwrap();
    let with_certificate = with_certificate.build().unwrap();
    handshake(
        with_certificate.clone(),
        server(&pki.ca_pem).unwrap(),
        "localhost",
    )
    .unwrap();
    match handshake(
        trusting_test_ca().build().unwrap(),
        server(&pki.ca_pem).unwrap(),
        "localhost",
    ) {
        Err(Failed::Server(rustls::Error::NoCertificatesPresented)) => {}
        other => panic!("expected the server to miss the client certificate, got {other:?}"),
    }
    // A certificate from a CA the server does not trust for clients.
    match handshake(
        with_certificate,
        server(&pki.other_ca_pem).unwrap(),
        "localhost",
    ) {
        Err(Failed::Server(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))) => {
        }
        other => panic!("expected an unknown issuer, got {other:?}"),
    }
    let reason = configuration_reason(server("not a certificate").unwrap_err());
    assert_eq!(
        reason,
        "no CERTIFICATE section found in the client CA certificate PEM"
    );
}

/// `cat a.pem b.pem` where `a.pem` has no final line break glues an END line to the next BEGIN
/// line (`-----END CERTIFICATE----------BEGIN CERTIFICATE-----`). The PEM decoder read the
/// first section and silently dropped the next one: a CA bundle lost a CA, a chain its
/// intermediate, a combined file its key.
#[test]
fn pem_sections_glued_without_a_line_break_are_all_read() {
    let pki = test_pki();
    let glue = |a: &str, b: &str| format!("{}{}", a.trim_end(), b);

    let bundle = glue(&pki.ca_pem, &pki.other_ca_pem);
    let client = TlsClientConfig::with_only_ca_certificates(bundle.as_bytes())
        .unwrap()
        .build()
        .unwrap();
    handshake(client.clone(), good_server(), "localhost").unwrap();
    let untrusted = server(&pki.untrusted_cert_pem, &pki.untrusted_key_pem);
    handshake(client, untrusted, "localhost").expect("the second CA of a glued bundle is trusted");

    // A certificate and its key in one file, glued.
    let combined = glue(&pki.client_cert_pem, &pki.client_key_pem);
    TlsClientConfig::new()
        .set_client_certificate(combined.as_bytes(), combined.as_bytes())
        .expect("the key after a glued certificate is found");

    // A server chain whose CA certificate is glued to the leaf is presented whole: a client
    // trusting only the CA verifies it (the leaf alone would do too; the chain length says).
    let chain = glue(&pki.server_cert_pem, &pki.ca_pem);
    let config = server(&chain, &pki.server_key_pem);
    let conn = handshake(trusting_test_ca().build().unwrap(), config, "localhost").unwrap();
    assert_eq!(
        conn.peer_certificates().map(|c| c.len()),
        Some(2),
        "the glued CA certificate was dropped from the chain"
    );
}

/// A PKCS#12 file (.p12/.pfx, how Windows and macOS export a certificate with its key) is
/// named as such, with the command that converts it; it was called DER and the suggested
/// `openssl x509 -inform der` cannot read it.
#[test]
fn a_pkcs12_file_is_named_with_the_command_that_converts_it() {
    // The opening of every PKCS#12 file: SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data,
    // [0] { OCTET STRING … } } … }, here around a certificate's bytes.
    let payload = CertificateDer::from_pem_slice(test_pki().ca_pem.as_bytes())
        .unwrap()
        .to_vec();
    let der = |tag: u8, contents: &[u8]| {
        let mut out = vec![tag, 0x82];
        out.extend_from_slice(&u16::try_from(contents.len()).unwrap().to_be_bytes());
        out.extend_from_slice(contents);
        out
    };
    let octets = der(0x04, &payload);
    let explicit = der(0xA0, &octets);
    let mut content_info = vec![
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01,
    ];
    content_info.extend_from_slice(&explicit);
    let mut pfx = vec![0x02, 0x01, 0x03];
    pfx.extend_from_slice(&der(0x30, &content_info));
    let p12 = der(0x30, &pfx);

    let hint = " (it looks like a PKCS#12 bundle (.p12/.pfx), not PEM text: convert it with \
                `openssl pkcs12 -in bundle.p12 -out bundle.pem -nodes`: it holds \
                the certificates and the key)";
    let reason =
        configuration_reason(TlsClientConfig::with_only_ca_certificates(&p12).unwrap_err());
    assert_eq!(
        reason,
        format!("no CERTIFICATE section found in the CA certificate PEM{hint}")
    );
    let reason = configuration_reason(
        TlsServerConfig::from_pem(test_pki().server_cert_pem.as_bytes(), &p12).unwrap_err(),
    );
    assert_eq!(
        reason,
        format!("no PRIVATE KEY section found in the server key PEM{hint}")
    );
    // Plain DER is still called DER.
    let reason =
        configuration_reason(TlsClientConfig::with_only_ca_certificates(&payload).unwrap_err());
    assert!(reason.contains("it looks like binary DER"), "{reason}");
}

/// A key of a supported kind whose DER is broken (a base64 line lost in a copy and paste, a
/// file cut inside its base64) is named as damaged; it was "of a kind that cannot be used
/// (supported: … ECDSA on P-256 …)" for a P-256 key.
#[test]
fn a_damaged_key_is_named_damaged_not_unsupported() {
    let pki = test_pki();
    let lines: Vec<&str> = pki.client_key_pem.lines().collect();
    assert!(lines.len() >= 5, "{lines:?}");
    // Without its second base64 line; and with the last one cut to a multiple of 4 characters.
    let mut missing_line = lines.clone();
    missing_line.remove(2);
    let mut cut = lines.clone();
    let last = cut.len() - 2;
    let shortened = &cut[last][..(cut[last].len() / 2) & !3];
    cut[last] = shortened;
    for damaged in [missing_line.join("\n"), cut.join("\n")] {
        let reason = configuration_reason(
            TlsClientConfig::new()
                .set_client_certificate(pki.client_cert_pem.as_bytes(), damaged.as_bytes())
                .unwrap_err(),
        );
        assert!(
            reason.starts_with("the client key is damaged"),
            "{reason}\n{damaged}"
        );
    }
}

/// An ECDSA key without its public key (optional in the format, RFC 5915; Java's encoder and
/// `openssl ec -no_public` leave it out), which *ring* refuses, is named for what it lacks and
/// how to add it: as PKCS#8 it was "damaged: its DER encoding is broken (is the file cut short,
/// or a line of it lost?)", as SEC1 "of a kind that cannot be used (supported: … P-256 …)" for a
/// P-256 key. (A throwaway P-256 key made with OpenSSL for this test.)
#[test]
fn an_ecdsa_key_without_its_public_key_is_named_so() {
    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MDECAQEEIBUIhL7NbkFAXWkfJINj2clbcXSLzspUxpNNDmZp5s+aoAoGCCqGSM49
AwEH
-----END EC PRIVATE KEY-----
";
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MEECAQAwEwYHKoZIzj0CAQYIKoZIzj0DAQcEJzAlAgEBBCAVCIS+zW5BQF1pHySD
Y9nJW3F0i87KVMaTTQ5maebPmg==
-----END PRIVATE KEY-----
";
    let pki = test_pki();
    for key in [PKCS8, SEC1] {
        let reason = configuration_reason(
            TlsClientConfig::new()
                .set_client_certificate(pki.client_cert_pem.as_bytes(), key.as_bytes())
                .unwrap_err(),
        );
        assert!(
            reason.starts_with("the client key lacks its public key"),
            "{reason}\n{key}"
        );
    }
}

/// A private RSA key over 4096 bits, which *ring* cannot sign with, is named with the sizes that
/// can be used; the reason said "supported: RSA of 2048 bits or more", which it is. (A throwaway
/// key of 4608 bits made with OpenSSL for this test.)
#[test]
fn an_rsa_key_over_4096_bits_is_named_with_the_sizes_that_can_be_used() {
    const KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIKYgIBADANBgkqhkiG9w0BAQEFAASCCkwwggpIAgEAAoICQQDLWctnQZkBFm96\n\
i4CFVoUNSiV4XL2AQuG3BE6PN9fSV3gvS9J2/s0dMnCmB5txfRz8L0SfRyXfM7jt\n\
eAec5RtvCsBV8XP7GbNEX8WDjMieXu7V0rObYpor5oNhBOY5zZMIWRVsmCJ6GmTl\n\
tFQL0TMIzLopcaN+91yprPifGTEUXl4VnB81yAkFT2+P9biRktcVgI6roldjrED5\n\
WuQHCbXxDrV6slulRls6CngDORFiu8RKpFaHoECkbU1BsHBEFuYy3A3VnUR4bQ2U\n\
GFcFR+SO5E12Vz7yKEmAsyyWG6XwzBGt5p3nI7y9lLCDM3/n/DuwlCu8Tx4NHHyv\n\
22KtL3/lYU28C6Hjs+ZfWFb8yrqyPt5iVzHyoedwHDHM2L7+BlUXNz4eGLPYDV7O\n\
+i1hu8bVeu1ypjTlxELzpJnf+uZcAMYMbAzMq9M8gb+9zAIGzZla6IJYbDQYlhVa\n\
eNibwdAOl7QyEb64i+ws+iW682EY0Gy73AAjyYydlF7wJw+oGbm3Gvu+Nfz9vDW7\n\
5aNyTThuCgf0J4WYEMjXKJhxKWEWESpJZ1kMb3wIde6SvoKbLeMfb2XXbb1z/AsQ\n\
RKxhBYSnKTmqONBNyOU/f8UcyPhy06cNPunV+MsJwqFZOj2ldMMvHYCJ+vWRWqqW\n\
W8J8pvnrQgcqAjeVpOigbCaIJs9qra6ifH98JFa+qzYZhRviE4dQ+hO98+8YurgU\n\
yu3fJAO/rJl+Ib145mAnQ3/UMAA194SbFfMG4OU3dlCi4xOxuRsCAwEAAQKCAkBE\n\
ywTn0qZLWuatw2HgOevbGhlhBabKLFYlzxwwkUi/DP5IqdLylLKZTQYU9P/ePeA/\n\
ZFJHvA8Q2nOWSoPwzQUh5LY6nOuKqCAgYnH0Vf1MrnsH9Tbzu0DC10Hc4YZtSaGT\n\
MmfwC+ul+SXnG8FPGh+0u2XDPYF9I3vCnxSg5inXZTFZCC76x8hddokcX5loDhAb\n\
Yxlg8RO1UYHNmbUIuH1Hpp04e/xLBmk4UnBVTsoV58W5Jq1rRoh3185KCcGBF2ob\n\
DJzVhlWyk9oDHtTZoX+t44hdH5jY3U44buUHhyT1OGRGu3zxxAJG9HVefV6pAYjD\n\
7Ox60R0ufFOmPoa8ZhRTaj6c/iZvXN3zpXQQIxlT0bbz9+Ga3rDoGXGzhiPe1g76\n\
qtyewQhmMFX0fUPZKiSV8U+Z1Ab7OLVcAUUbQNTTeNoC5FyLPwds6DyUgMF5b0Sr\n\
+JYZDcGeb9vT99vd1zQjS2ecyVurRmEth2vjn5X0E1HfOK9eRdLyq13Jkhm//8bz\n\
OMLICm1N9M/bhLhOZ3TVW8xQRp44CPVqsxc7PgjYPypKDyu1EGtnmUfFEpUBJlKv\n\
4OqumrKmytJI5t21clVm5O9hT1ND/WikFG30RWV+wGiSBaZNMv//Z4WJLxfXM5GD\n\
wqS6HQZ9Ls3jgebG3tWwNiBv3fPcH4JDnCYe5EYRJjjdGx4KiiMPWRrjib/Icza4\n\
xcQ5a1uZ8dsuAJMuHVp5Uf/QewOVByABsKwQmLiBjm8nvjDdOKWSHJRMh/UIBMEC\n\
ggEhAPCYurpvX3YPn/6rT8AfppOlxARowTE4y4PgDwK+Zl4p5Y28UWtsaofo0BsH\n\
svluElHu7XKVElVoVRNehfKcC+E2Uo5cpkbEJyd05KHJL0eB5rlMTwvIJ3u1VsUk\n\
2VlUpEK23vRLLOPJ4OT4sa+yZoIOkbequezgksM0qXrfGRJUiwnJY7tPIawH7WLy\n\
Mwc4hCBIX/a+cd1s2RU1/nl413nsi4CrJHeDOzcW6ArdyxaYG41bcM2NkDoysXQ7\n\
wCIXkOeSTw7Y6RJkIoSYl8MlA075b+wddZhKq+cVeI2hAAgCunjhMb5VLTqHB3J3\n\
TMzfYtSidgh8m+q4HJdcwpxwsN0GgyQwj0jpo0udlqOyIeyHvm0K9w3DYtRD5TcF\n\
c9MHOwKCASEA2F6fXBFZ7yPb7Lu5LHVAXgfbU+Uca+ibPAIwQ2+mis3dcB8yrCfP\n\
v4k0NtNAGOBl5L0Zg8y7byAZlM25fJ96vCvOYh97EX4Y0/Sd1xbwklQODrmZY5lS\n\
putS4wo10lNuWiA35BRXksfUmVozUgcrsulfQfYcMuTFoSChlZiCNM9PUft9EVdm\n\
3abJYLqEQbg+xIvgTImL4rQtm5Oet5Kl14uzwnUDN9hDp6jjntFlc7gyzhdcCoRR\n\
eN1BAFc8vqmpT0ooOTFx7jkKCNPlCCruFqsTb+6fKgicFgql9Ado54Ic/NFLQFd2\n\
ib1Sf1ODGpKpP7SQ+3picNwcCkF1WOMM+W+zgbvVlvyHjKZdMfXn3grQWbJYbwMJ\n\
DAG5CVLufbehAoIBIBwVl+ZfTcNYO5LcqGiCyUz+0oy5NaPrP0ZbhyUI2KYxOcx7\n\
qP1jIGRQ9snQ8kFPafAKdckkQYmariOeqwAQ2wok7yoTAo3MI83lRTLlaxFrxmTm\n\
1WtIp+M23bQRgxV8XdgzxH67r7e/PvM7XHJn3rNbxAKueRl/dWI36XigRirvl3ND\n\
ANNCf2m3WyxrnS1AmZuzFxCUVnJEXGqvbM79HhnrVLVmRNF2jhj2IYvzK9utUboE\n\
bHxyA93nQPOSbfEM0ytU1smi5EHzUlwr+7sZvPMhBsGHBs0KGlrVFMdjfb9xohau\n\
IsJW6vqj/GiOKHbZtI2hkSmYchLJ/vxkJYthVCPYuMImsPMP4rHW6VieWHtltQLB\n\
fukqX4Trj/wGNOjzNQKCASEAybzH1v7ynI8RshOB3trgDgxDSmC3dEFn47aiq23B\n\
mW/CxJTCGVPxVsOlpGypOciYGILb9FCCfmUulNiP1ouX0zUA8+ooRDIPEijktjRU\n\
UAsBJGeWhg/hyXJmUPwnHJjfrjaWBhmVYWziY61/Zj77VpBTWdwPhMBbKBWVszaE\n\
SJr2eRkEDpQwe//TiVW+lMwl8fn9Qz+H5vNaBtHHzZ9085j1HR0eyAXjZsKIoH7a\n\
md+ntxJ+peujTw70WU39fEQScbRR9qmMcbJLEdoHlOr6HLabo+SYEIgAiGibPQFf\n\
pWNihbLa9/3Ury6PadpCxhbyqUxBVchRWqtPlZxcvmjMoxGsDA1HY8TG2bQP9tIx\n\
w4zPoKIx5CevWruMfA4QAbWhAoIBIHkJrU53NukLCbt57IHieLagRIoe/Xud0aaT\n\
XTkYgSxq28gSqoAJJh4elcSMqM6fxdTrgYeoOje4mbjvHrp5Ewc6hQBN0wFimU2N\n\
n18Mg4Iq8+54eMuHQE7YMnvC/jCMDwEJr9rhp5FbfdfDs318Idl03/ERpNUQbwIS\n\
s/YywfpQH6F+4hrS5jcOxztPLQqlKSCyk0yQr1xf3S1CUf3tGIUd0AdkuGlEZFa6\n\
RQKwx10d0DPCCQrM3tLKQ9Mk46YSJsHy1zWeKNInHFCZ7iv2owqwUV8wLkDXDV9q\n\
vefStkZzEZBB9gQnSwgZ4vcrP4WTVoVxrQjJM9lWL86lMMRbzCD0ZKsOkgIqaWXr\n\
83D0jYnlKI5OFx/fPEDrZCQrIVKPtw==\n\
-----END PRIVATE KEY-----\n\
";
    let pki = test_pki();
    let reason = configuration_reason(
        TlsClientConfig::new()
            .set_client_certificate(pki.client_cert_pem.as_bytes(), KEY.as_bytes())
            .unwrap_err(),
    );
    assert!(
        reason.contains("cannot be used") && reason.contains("RSA of 2048 to 4096 bits"),
        "{reason}"
    );
}

/// A character lost from the *first* line of a section's base64 text: the lines after it are
/// the regular ones. The length check took the first line's length as the rule and named the
/// second line, which is intact, as the odd one.
#[test]
fn a_character_lost_from_the_first_base64_line_names_that_line() {
    let reason = |pem: &str| {
        configuration_reason(
            TlsClientConfig::new()
                .add_ca_certificate(pem.as_bytes())
                .unwrap_err(),
        )
    };
    assert_eq!(
        reason(
            "-----BEGIN CERTIFICATE-----\nAAAAAAA\nAAAAAAAA\nAAAAAAAA\nAAAAAA==\n\
             -----END CERTIFICATE-----\n"
        ),
        "CA certificate PEM, section 1: base64 decode error at line 2: it is 7 characters long \
         where the lines after it have 8, and the base64 text does not decode: a character was \
         lost or added there (get the file again)"
    );
    // Two full lines only: the one that is not 64 characters long (as PEM writers make them).
    let full = "A".repeat(64);
    let short = "A".repeat(63);
    assert_eq!(
        reason(&format!(
            "-----BEGIN CERTIFICATE-----\n{short}\n{full}\nAAAAAA==\n-----END CERTIFICATE-----\n"
        )),
        "CA certificate PEM, section 1: base64 decode error at line 2: it is 63 characters long \
         where the lines after it have 64, and the base64 text does not decode: a character was \
         lost or added there (get the file again)"
    );
}

/// `cat a.pem b.pem` with `a.pem` lacking its final line break glues an END line to the next
/// BEGIN line; the decoder is given a line break there, but the lines an error names are the
/// file's: they were counted in the text with the break added, one too many per glued pair.
#[test]
fn pem_error_lines_count_the_file_as_written_when_sections_are_glued() {
    let pki = test_pki();
    let corrupt = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let bundle = format!(
        "{}{}{corrupt}",
        pki.ca_pem.trim_end(),
        pki.other_ca_pem.trim_end()
    );
    let reason = configuration_reason(
        TlsClientConfig::new()
            .add_ca_certificate(bundle.as_bytes())
            .unwrap_err(),
    );
    let line = bundle.lines().position(|l| l == "!!!!").unwrap() + 1;
    assert_eq!(
        reason,
        format!(
            "CA certificate PEM, section 3: base64 decode error at line {line}, column 1: '!' is \
             not a base64 character (between its BEGIN and END lines a section holds only A-Z, \
             a-z, 0-9, +, / and =): remove it, or get the file again"
        )
    );
    // A key's section is located the same way (the key PEM is normalised too).
    let key = format!(
        "-----BEGIN FOO-----\nAAAA\n-----END FOO-----{}",
        "-----BEGIN PRIVATE KEY-----\nAA!A\n-----END PRIVATE KEY-----\n"
    );
    let reason = configuration_reason(
        TlsClientConfig::new()
            .set_client_certificate(pki.client_cert_pem.as_bytes(), key.as_bytes())
            .unwrap_err(),
    );
    assert!(
        reason.starts_with("client key PEM: base64 decode error at line 4, column 3:"),
        "{reason}"
    );
}

/// A section whose END line was lost (or mistyped) before the next section of a bundle: the
/// decoder reads on into the next section, and the error named that section's lines, which are
/// intact ("the base64 text of lines 11 to 19 does not end on a whole group of four").
#[test]
fn a_section_without_its_end_line_before_the_next_one_is_named() {
    let pki = test_pki();
    let reason = |pem: &str| {
        configuration_reason(
            TlsClientConfig::new()
                .add_ca_certificate(pem.as_bytes())
                .unwrap_err(),
        )
    };
    assert_eq!(
        reason(
            "-----BEGIN CERTIFICATE-----\nAAAAAA==\n-----BEGIN CERTIFICATE-----\nAAAA\n\
             -----END CERTIFICATE-----\n"
        ),
        "CA certificate PEM, section 1: the section that begins at line 1 has no END line: \
         line 3 begins another section before it (add \"-----END CERTIFICATE-----\" before \
         line 3)"
    );
    // In a bundle, after a complete certificate and a section of a kind the decoder skips.
    let lines: Vec<&str> = pki.ca_pem.lines().collect();
    let n = lines.len();
    let bundle = format!(
        "{}-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n-----BEGIN CERTIFICATE-----\n\
         AAAAAA==\n{}",
        pki.ca_pem, pki.other_ca_pem
    );
    assert_eq!(
        reason(&bundle),
        format!(
            "CA certificate PEM, section 2: the section that begins at line {} has no END \
             line: line {} begins another section before it (add \"-----END CERTIFICATE-----\" \
             before line {})",
            n + 4,
            n + 6,
            n + 6
        )
    );
    // A mistyped END line before the next section.
    let mut typo: Vec<&str> = lines.clone();
    typo[n - 1] = "-----END CERTIFICATE----";
    let bundle = format!("{}\n{}", typo.join("\n"), pki.other_ca_pem);
    assert_eq!(
        reason(&bundle),
        format!(
            "CA certificate PEM, section 1: the section that begins at line 1 ends at line {n} \
             with \"-----END CERTIFICATE----\", which does not match its BEGIN line: it must \
             read \"-----END CERTIFICATE-----\""
        )
    );
    // A malformed BEGIN line inside an open section is named by its own line.
    assert_eq!(
        reason("-----BEGIN CERTIFICATE-----\nAAAA\n-----BEGIN CERTIFICATE----- x\n"),
        "CA certificate PEM, section 1: line 3, \"-----BEGIN CERTIFICATE----- x\", is not a \
         valid BEGIN line: it must read \"-----BEGIN <label>-----\", five dashes on each side \
         and nothing after them"
    );
}

/// A certificate given as DER that is not one: the text said "its base64 text decodes, but not
/// to a certificate: was a line of it lost or changed?", which fits a PEM file, not binary DER
/// (there is no base64 text and no line), and PEM given to the DER call was told the same.
#[test]
fn a_der_ca_certificate_that_is_not_one_is_not_described_as_pem() {
    let pki = test_pki();
    let reason = |der: &[u8]| {
        configuration_reason(
            TlsClientConfig::new()
                .add_ca_certificate_der(der)
                .unwrap_err(),
        )
    };
    for der in [&b"\x30\x03\x02\x01\x01"[..], b"not DER", b""] {
        let reason = reason(der);
        assert!(
            reason.starts_with(
                "CA certificate (DER) is not usable as a trust anchor: it is not a well-formed \
                 X.509 certificate in DER"
            ) && !reason.contains("base64")
                && !reason.contains("line"),
            "{reason}"
        );
    }
    let reason = reason(pki.ca_pem.as_bytes());
    assert!(
        reason.starts_with(
            "CA certificate (DER) is not usable as a trust anchor: it is PEM text, not DER: give \
             it to add_ca_certificate"
        ),
        "{reason}"
    );
}

/// A certificate whose END line was lost, followed by a section of a kind the decoder skips
/// (`TRUSTED CERTIFICATE`, `FOO`): the decoder reads the certificate's text into that section
/// and drops both without a word, so the bundle was accepted with one CA fewer.
#[test]
fn a_certificate_without_its_end_line_is_not_dropped_silently() {
    let pki = test_pki();
    let lines: Vec<&str> = pki.ca_pem.lines().collect();
    let n = lines.len();
    let pem = format!(
        "{}\n-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n{}",
        lines[..n - 1].join("\n"),
        pki.other_ca_pem
    );
    let mut config = TlsClientConfig::new();
    let reason = configuration_reason(config.add_ca_certificate(pem.as_bytes()).unwrap_err());
    assert_eq!(
        reason,
        format!(
            "CA certificate PEM: the section that begins at line 1 has no END line: line {n} \
             begins another section before it (add \"-----END CERTIFICATE-----\" before line \
             {n})"
        )
    );
    assert!(format!("{config:?}").contains("extra_roots: 0"));
}
