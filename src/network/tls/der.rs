//! Reading the few facts the TLS layer names in its errors from DER certificates and keys: a
//! certificate's issuer, subject, key and IP-address SANs, whether a key is of a kind *ring* can
//! use, and what a refused private key lacks.
//!
//! Only ever run after rustls or *ring* refused something, to say why in a person's words; every
//! step returns `None` (or the answer that says nothing) on bytes that do not parse, never panics,
//! and always advances, so any input ends.

use std::net::IpAddr;

use rustls::pki_types::PrivateKeyDer;

/// The DER of the object identifiers looked for (tag and length included, as [`der_element`]
/// returns them).
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
];
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
/// OID 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x1D, 0x11];

/// Whether a certificate's issuer name is its subject name (byte for byte, as a self-signed
/// certificate writes it). False for anything that does not parse.
pub(super) fn is_self_issued(certificate: &[u8]) -> bool {
    issuer_subject_key(certificate).is_some_and(|(issuer, subject, _)| issuer == subject)
}

/// The contents of a certificate's issuer name, subject name and subjectPublicKeyInfo (without
/// their tags and lengths, as a trust anchor keeps them).
pub(super) fn issuer_subject_key(certificate: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let tbs = tbs_after_version(certificate)?;
    let rest = der_element(tbs)?.1; // serialNumber
    let rest = der_element(rest)?.1; // signature algorithm
    let (issuer, rest) = der_contents(rest)?;
    let rest = der_element(rest)?.1; // validity
    let (subject, rest) = der_contents(rest)?;
    let (key, _) = der_contents(rest)?;
    Some((issuer, subject, key))
}

/// Whether a subjectPublicKeyInfo's contents hold a key that can check signatures here: RSA
/// (rsaEncryption) of 2048 to 8192 bits, ECDSA on P-256 or P-384, Ed25519 (what *ring*'s
/// webpki algorithms take). One that does not parse counts as usable (nothing to say of it).
pub(super) fn key_is_usable(spki: &[u8]) -> bool {
    let Some((identifier, key)) = der_contents(spki) else {
        return true;
    };
    let Some((algorithm, parameters)) = der_element(identifier) else {
        return true;
    };
    if algorithm != RSA_ENCRYPTION {
        return is_supported_elliptic(algorithm, parameters);
    }
    // BIT STRING { 0 unused bits, RSAPublicKey SEQUENCE { modulus INTEGER, … } }
    let modulus = der_contents(key)
        .and_then(|(bits, _)| bits.split_first())
        .and_then(|(_, public_key)| der_contents(public_key))
        .and_then(|(fields, _)| der_contents(fields));
    let Some((modulus, _)) = modulus else {
        return true;
    };
    let modulus = match modulus.iter().position(|&b| b != 0) {
        Some(first) => &modulus[first..],
        None => &[],
    };
    // No underflow: a first byte that is not zero has at most 7 leading zeros.
    let bits =
        modulus.len().saturating_mul(8) - modulus.first().map_or(0, |b| b.leading_zeros() as usize);
    (2048..=8192).contains(&bits)
}

/// The iPAddress entries (IPv4 and IPv6) of a certificate's subjectAltName extension, in order
/// (none without the extension); `None` when the certificate does not parse.
pub(super) fn ip_address_sans(certificate: &[u8]) -> Option<Vec<IpAddr>> {
    let mut tbs = tbs_after_version(certificate)?;
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    for _ in 0..6 {
        tbs = der_element(tbs)?.1;
    }
    // Then the optional [1] issuerUniqueID, [2] subjectUniqueID and [3] extensions.
    while let Some(&tag) = tbs.first() {
        let (element, rest) = der_element(tbs)?;
        tbs = rest;
        if tag != 0xA3 {
            continue;
        }
        let (sequence, _) = der_contents(element)?;
        let (mut extensions, _) = der_contents(sequence)?;
        while !extensions.is_empty() {
            let (extension, rest) = der_element(extensions)?;
            extensions = rest;
            let (fields, _) = der_contents(extension)?;
            let (oid, mut fields) = der_element(fields)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if fields.first() == Some(&0x01) {
                fields = der_element(fields)?.1; // critical
            }
            let (value, _) = der_contents(fields)?; // the OCTET STRING's contents
            let (mut names, _) = der_contents(value)?; // GeneralNames
            let mut addresses = Vec::new();
            while !names.is_empty() {
                let (name, rest) = der_element(names)?;
                names = rest;
                if name.first() != Some(&0x87) {
                    continue; // [7] iPAddress
                }
                let (header, _) = der_header(name)?;
                let bytes = &name[header..];
                if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                    addresses.push(IpAddr::from(v4));
                } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                    addresses.push(IpAddr::from(v6));
                }
            }
            return Some(addresses);
        }
    }
    Some(Vec::new())
}

/// Whether a key that *ring* refused is broken rather than of an unsupported kind: its DER is
/// not one whole element (a line of base64 lost, the text cut short), or it is a PKCS#8 key of
/// a kind that is supported (ECDSA on P-256 or P-384, Ed25519) and still refused.
pub(super) fn key_is_damaged(key: &PrivateKeyDer<'_>) -> bool {
    if !is_one_element(key.secret_der()) {
        return true;
    }
    match key {
        PrivateKeyDer::Pkcs8(key) => pkcs8_parts(key.secret_pkcs8_der())
            .is_some_and(|(algorithm, parameters, _)| is_supported_elliptic(algorithm, parameters)),
        _ => false,
    }
}

/// Whether an ECDSA key (PKCS#8 of id-ecPublicKey, or SEC1), whole otherwise, leaves out its
/// public key, the optional `[1] publicKey` of its ECPrivateKey (RFC 5915), which *ring* requires.
pub(super) fn ec_key_lacks_public_key(key: &PrivateKeyDer<'_>) -> bool {
    if !is_one_element(key.secret_der()) {
        return false; // damaged
    }
    let ec_private_key = match key {
        PrivateKeyDer::Sec1(key) => Some(key.secret_sec1_der()),
        PrivateKeyDer::Pkcs8(key) => pkcs8_parts(key.secret_pkcs8_der())
            .filter(|&(algorithm, _, _)| algorithm == EC_PUBLIC_KEY)
            .and_then(|(_, _, after)| Some(der_contents(after)?.0)),
        _ => None,
    };
    // ECPrivateKey: SEQUENCE { version, privateKey, [0] parameters OPTIONAL,
    //                          [1] publicKey OPTIONAL }
    let Some((mut fields, _)) = ec_private_key.and_then(der_contents) else {
        return false;
    };
    while let Some((field, rest)) = der_element(fields) {
        if field.first() == Some(&0xA1) {
            return false;
        }
        fields = rest;
    }
    fields.is_empty()
}

/// Ed25519, or ECDSA on P-256 or P-384: the elliptic-curve keys *ring* takes, told by an
/// AlgorithmIdentifier's algorithm and the parameters after it.
fn is_supported_elliptic(algorithm: &[u8], parameters: &[u8]) -> bool {
    match algorithm {
        ED25519 => true,
        EC_PUBLIC_KEY => der_element(parameters).is_some_and(|(c, _)| c == P256 || c == P384),
        _ => false,
    }
}

/// A PKCS#8 PrivateKeyInfo's algorithm, the parameters after it, and what follows its
/// AlgorithmIdentifier (the privateKey OCTET STRING first):
/// SEQUENCE { version, AlgorithmIdentifier { algorithm, parameters }, privateKey, … }.
fn pkcs8_parts(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (info, _) = der_contents(der)?;
    let (_, rest) = der_element(info)?; // version
    let (identifier, after) = der_contents(rest)?;
    let (algorithm, parameters) = der_element(identifier)?;
    Some((algorithm, parameters, after))
}

/// A certificate's TBSCertificate fields from its serialNumber on (the `[0] version` skipped).
fn tbs_after_version(certificate: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_contents(certificate)?;
    let (tbs, _) = der_contents(certificate)?;
    match tbs.first() {
        Some(0xA0) => Some(der_element(tbs)?.1),
        _ => Some(tbs),
    }
}

/// Whether `der` is exactly one whole element (nothing cut off, nothing after it).
fn is_one_element(der: &[u8]) -> bool {
    der_element(der).is_some_and(|(_, rest)| rest.is_empty())
}

/// The first DER element of `der` (tag, length and contents) and what follows it.
fn der_element(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (header, length) = der_header(der)?;
    let end = header.checked_add(length).filter(|&end| end <= der.len())?;
    Some(der.split_at(end))
}

/// The contents of the first DER element of `der` (without tag and length), and what follows.
fn der_contents(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (element, rest) = der_element(der)?;
    let (header, _) = der_header(element)?;
    Some((&element[header..], rest))
}

/// The size of the tag and length bytes that start `der`, and the contents' length.
fn der_header(der: &[u8]) -> Option<(usize, usize)> {
    let length_byte = *der.get(1)?;
    if length_byte < 0x80 {
        return Some((2, usize::from(length_byte)));
    }
    let count = usize::from(length_byte & 0x7F);
    if count == 0 || count > 4 {
        return None;
    }
    let bytes = der.get(2..2 + count)?;
    let length = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
    Some((2 + count, length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn self_signed(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let names = names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>();
        rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn self_issued_names_are_read_from_any_bytes_without_panicking() {
        let der = self_signed(&["a.example"], &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(is_self_issued(&der));
        for end in 0..der.len() {
            assert!(!is_self_issued(&der[..end]), "a {end}-byte prefix");
        }
        let mut long_length = der.clone();
        long_length[1] = 0x85; // a five-byte length
        assert!(!is_self_issued(&long_length));
        assert!(!is_self_issued(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]));
    }

    #[test]
    fn ip_address_sans_are_read_from_any_bytes_without_panicking() {
        let der = self_signed(
            &["a.example", "::1", "10.0.0.1"],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        assert_eq!(
            ip_address_sans(&der),
            Some(vec![
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
            ])
        );
        for end in 0..der.len() {
            assert_eq!(ip_address_sans(&der[..end]), None, "a {end}-byte prefix");
        }
    }

    #[test]
    fn issuer_keys_are_read_from_any_bytes_without_panicking() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let der = self_signed(&["a.example"], alg);
            let (issuer, subject, spki) = issuer_subject_key(&der).unwrap();
            assert_eq!(issuer, subject);
            assert!(key_is_usable(spki), "{alg:?}");
            for end in 0..spki.len() {
                key_is_usable(&spki[..end]);
            }
            for end in 0..der.len() {
                assert_eq!(issuer_subject_key(&der[..end]), None, "a {end}-byte prefix");
            }
        }
    }
}
