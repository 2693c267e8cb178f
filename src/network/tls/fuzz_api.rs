//! Entry points into the TLS layer's DER readers (what it reads from certificates and keys to
//! say why rustls or *ring* refused them) for integration tests and fuzz targets. Thin wrappers
//! with owned results; not a stable API.

use std::net::IpAddr;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use super::der;

/// The contents of a certificate's issuer name, subject name and subjectPublicKeyInfo, as
/// read for a trust anchor; `None` when the certificate does not parse that far.
pub fn issuer_subject_key(certificate: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    der::issuer_subject_key(certificate)
        .map(|(issuer, subject, key)| (issuer.to_vec(), subject.to_vec(), key.to_vec()))
}

/// Whether a certificate's issuer name is its subject name.
pub fn is_self_issued(certificate: &[u8]) -> bool {
    der::is_self_issued(certificate)
}

/// Whether a subjectPublicKeyInfo's contents hold a key *ring* can check signatures with (one
/// that does not parse counts as usable).
pub fn key_is_usable(spki_contents: &[u8]) -> bool {
    der::key_is_usable(spki_contents)
}

/// The iPAddress entries of a certificate's subjectAltName extension, in order; `None` when
/// the certificate does not parse.
pub fn ip_address_sans(certificate: &[u8]) -> Option<Vec<IpAddr>> {
    der::ip_address_sans(certificate)
}

/// The form a private key's DER is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// PKCS#8 `PRIVATE KEY`.
    Pkcs8,
    /// SEC1 `EC PRIVATE KEY`.
    Sec1,
    /// PKCS#1 `RSA PRIVATE KEY`.
    Pkcs1,
}

fn key(form: KeyForm, der: &[u8]) -> PrivateKeyDer<'_> {
    match form {
        KeyForm::Pkcs8 => PrivatePkcs8KeyDer::from(der).into(),
        KeyForm::Sec1 => PrivateSec1KeyDer::from(der).into(),
        KeyForm::Pkcs1 => PrivatePkcs1KeyDer::from(der).into(),
    }
}

/// Whether a key *ring* refused is broken (not one whole DER element, or a supported kind
/// refused all the same) rather than of an unsupported kind.
pub fn key_is_damaged(form: KeyForm, der: &[u8]) -> bool {
    der::key_is_damaged(&key(form, der))
}

/// Whether an ECDSA key (PKCS#8 or SEC1), whole otherwise, leaves out its public key.
pub fn ec_key_lacks_public_key(form: KeyForm, der: &[u8]) -> bool {
    der::ec_key_lacks_public_key(&key(form, der))
}
