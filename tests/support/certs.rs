//! A throw-away PKI made at test time with rcgen (ECDSA P-256): a CA, server certificates good,
//! expired, for the wrong name and for one loopback address each, an unrelated CA, and a client
//! certificate.
#![allow(dead_code)]

use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// PEM strings of the test PKI. Every certificate except `other_ca_pem` is signed by `ca_pem`.
#[derive(Debug)]
pub struct TestPki {
    /// The CA to trust.
    pub ca_pem: String,
    /// Server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// Same names as the server certificate, but valid only in 2000.
    pub expired_cert_pem: String,
    pub expired_key_pem: String,
    /// Valid, but only for `wrong.example`.
    pub wrong_name_cert_pem: String,
    pub wrong_name_key_pem: String,
    /// A CA nobody trusts, and a `localhost` server certificate it signed.
    pub other_ca_pem: String,
    pub untrusted_cert_pem: String,
    pub untrusted_key_pem: String,
    /// Client certificate (clientAuth) for `test-client`.
    pub client_cert_pem: String,
    pub client_key_pem: String,
    /// Server certificates naming one loopback address each: `127.0.0.1` only, `::1` only.
    pub ipv4_only_cert_pem: String,
    pub ipv4_only_key_pem: String,
    pub ipv6_only_cert_pem: String,
    pub ipv6_only_key_pem: String,
}

/// The test PKI, generated once per test binary.
pub fn test_pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(generate)
}

const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn generate() -> TestPki {
    let ca = make_ca("kdnet test CA");
    let other_ca = make_ca("kdnet untrusted CA");
    let (server_cert_pem, server_key_pem) = leaf(&ca, &SERVER_NAMES, Validity::Current, false);
    let (expired_cert_pem, expired_key_pem) = leaf(&ca, &SERVER_NAMES, Validity::Expired, false);
    let (wrong_name_cert_pem, wrong_name_key_pem) =
        leaf(&ca, &["wrong.example"], Validity::Current, false);
    let (untrusted_cert_pem, untrusted_key_pem) =
        leaf(&other_ca, &SERVER_NAMES, Validity::Current, false);
    let (client_cert_pem, client_key_pem) = leaf(&ca, &["test-client"], Validity::Current, true);
    let (ipv4_only_cert_pem, ipv4_only_key_pem) =
        leaf(&ca, &["127.0.0.1"], Validity::Current, false);
    let (ipv6_only_cert_pem, ipv6_only_key_pem) = leaf(&ca, &["::1"], Validity::Current, false);
    TestPki {
        ca_pem: ca.pem,
        server_cert_pem,
        server_key_pem,
        expired_cert_pem,
        expired_key_pem,
        wrong_name_cert_pem,
        wrong_name_key_pem,
        other_ca_pem: other_ca.pem,
        untrusted_cert_pem,
        untrusted_key_pem,
        client_cert_pem,
        client_key_pem,
        ipv4_only_cert_pem,
        ipv4_only_key_pem,
        ipv6_only_cert_pem,
        ipv6_only_key_pem,
    }
}

fn make_ca(common_name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

enum Validity {
    /// 1975 to 4096 (rcgen's defaults).
    Current,
    /// Only during the year 2000.
    Expired,
}

/// A certificate for `names` signed by `ca`, and its key, as PEM.
fn leaf(ca: &Ca, names: &[&str], validity: Validity, client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if let Validity::Expired = validity {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}
