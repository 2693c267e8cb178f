//! Fuzz target `der_certificate`: the TLS layer's own DER readers
//! (`kdnet::network::tls::__fuzz`: `issuer_subject_key`, `is_self_issued`, `ip_address_sans`,
//! `key_is_usable`, `key_is_damaged`, `ec_key_lacks_public_key`), which run on what a server
//! or a configuration hands over once rustls or *ring* refused it, to say why.
//!
//! Input layout: byte 0 picks the mode. Mode 0: the rest is raw bytes, given to every reader
//! (as a certificate, a subjectPublicKeyInfo's contents and a key in each form). Mode 1: the
//! rest assembles a certificate with a DER writer of this file: flags (version field, subject
//! equal to issuer, unique IDs, a critical subjectAltName, a second subjectAltName extension,
//! an extension before it), names, a serial number, a key (P-256, Ed25519, RSA of a modulus
//! length from the input, or an unknown algorithm) and up to 8 subjectAltName entries (DNS
//! names, IPv4, IPv6 and odd-length iPAddress entries, other tags); the certificate is then
//! read whole and cut at a point from the input. Mode 2: the rest assembles an EC private key
//! (SEC1, or PKCS#8 around it; P-256, P-384 or another curve; with or without `[0]`
//! parameters and `[1] publicKey`) and cuts it.
//!
//! Oracles:
//! 1. Nothing panics, on any bytes.
//! 2. Assembled certificates (mode 1) read back exactly: issuer, subject and key contents as
//!    written; self-issued exactly when the names are equal; the iPAddress entries of 4 or 16
//!    bytes of the first subjectAltName extension, in order; a key usable exactly when it is
//!    P-256, Ed25519 or RSA of 2048 to 8192 bits.
//! 3. A certificate cut short (any strict prefix) reads as nothing (`None`, not self-issued).
//! 4. rustls-webpki agrees wherever it parses the bytes (modes 0 and 1): the same issuer,
//!    subject and key; and where the subjectAltName parses too (webpki reads it only to
//!    verify a name), every address read is one webpki verifies the certificate for, and
//!    every address webpki verifies it for (of the ones read, 127.0.0.1, ::1 and two from
//!    the input) is read.
//! 5. Keys (mode 2): a whole SEC1 or PKCS#8 EC key lacks its public key exactly when it was
//!    written without `[1] publicKey`; a whole PKCS#8 key on P-256 or P-384 counts as
//!    damaged (a supported kind refused), on another curve not; a key cut short is damaged
//!    and never said to lack its public key.
#![no_main]

use std::net::IpAddr;

use kdnet::network::tls::__fuzz::{
    KeyForm, ec_key_lacks_public_key, ip_address_sans, is_self_issued, issuer_subject_key,
    key_is_damaged, key_is_usable,
};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::{CertificateDer, ServerName};

const RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
/// secp256k1: a curve *ring* does not take.
const K256: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x0A];
const ED25519: &[u8] = &[0x2B, 0x65, 0x70];
const ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];

/// A DER element: `tag`, the length (short or long form, minimal), `contents`.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = contents.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(bytes: &[u8]) -> Vec<u8> {
    tlv(0x06, bytes)
}

/// A positive INTEGER with `magnitude` (leading zero bytes dropped, one added if the top bit
/// is set).
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|&b| b == 0).collect();
    let mut contents = Vec::new();
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend(trimmed);
    tlv(0x02, &contents)
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&first, rest)) => {
                self.0 = rest;
                first
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken.to_vec()
    }
}

/// A Name: one CN of printable characters from the input.
fn name(input: &mut Input<'_>) -> Vec<u8> {
    let len = usize::from(input.byte() % 24);
    let text: Vec<u8> = input
        .bytes(len)
        .into_iter()
        .map(|b| b'a' + b % 26)
        .collect();
    seq(&[tlv(0x31, &seq(&[oid(COMMON_NAME), tlv(0x0C, &text)]))])
}

/// A subjectPublicKeyInfo (whole element) and whether *ring* can use its key.
fn spki(input: &mut Input<'_>) -> (Vec<u8>, bool) {
    match input.byte() % 4 {
        0 => {
            let mut point = vec![4];
            point.extend((0..64).map(|i| i as u8));
            let key = [vec![0], point].concat();
            (
                seq(&[seq(&[oid(EC_PUBLIC_KEY), oid(P256)]), tlv(0x03, &key)]),
                true,
            )
        }
        1 => (
            seq(&[
                seq(&[oid(ED25519)]),
                tlv(0x03, &[vec![0], vec![7; 32]].concat()),
            ]),
            true,
        ),
        2 => {
            // A modulus of 1 to 1100 bytes whose first byte is from the input.
            let len = 1 + (usize::from(input.byte()) << 8 | usize::from(input.byte())) % 1100;
            let first = input.byte();
            let mut modulus = vec![0xA5; len];
            modulus[0] = first;
            let significant: Vec<u8> = modulus.iter().copied().skip_while(|&b| b == 0).collect();
            let bits = match significant.first() {
                Some(&b) => significant.len() * 8 - b.leading_zeros() as usize,
                None => 0,
            };
            let rsa_key = seq(&[integer(&modulus), integer(&[1, 0, 1])]);
            let key = [vec![0], rsa_key].concat();
            (
                seq(&[seq(&[oid(RSA_ENCRYPTION), tlv(0x05, &[])]), tlv(0x03, &key)]),
                (2048..=8192).contains(&bits),
            )
        }
        _ => (seq(&[seq(&[oid(K256)]), tlv(0x03, &[0, 4, 1, 2])]), false),
    }
}

/// The contents of a DER element's first element (webpki's SPKI, which has its tag).
fn contents(der: &[u8]) -> &[u8] {
    let length_byte = der[1];
    let header = if length_byte < 0x80 {
        2
    } else {
        2 + usize::from(length_byte & 0x7F)
    };
    &der[header..]
}

/// Oracle 4: rustls-webpki's reading of `der`, where it parses.
fn compare_with_webpki(der: &[u8], extra: [IpAddr; 2]) {
    let certificate = CertificateDer::from(der);
    let Ok(parsed) = webpki::EndEntityCert::try_from(&certificate) else {
        return;
    };
    let spki = parsed.subject_public_key_info();
    let expected = (
        parsed.issuer().to_vec(),
        parsed.subject().to_vec(),
        contents(spki.as_ref()).to_vec(),
    );
    assert_eq!(
        issuer_subject_key(der),
        Some(expected),
        "webpki reads other names or key"
    );
    // webpki reads the subjectAltName only when it verifies a name (and stops at the first
    // match): a certificate whose names do not all parse is one it takes and ours does not
    // (`None`, which the errors treat as "no addresses known").
    let Some(ours) = ip_address_sans(der) else {
        return;
    };
    let mut candidates: Vec<IpAddr> = ours.clone();
    candidates.extend([
        "127.0.0.1".parse::<IpAddr>().unwrap(),
        "::1".parse().unwrap(),
    ]);
    candidates.extend(extra);
    for ip in candidates {
        let name = ServerName::IpAddress(ip.into());
        let valid = parsed.verify_is_valid_for_subject_name(&name).is_ok();
        assert_eq!(
            valid,
            ours.contains(&ip),
            "{ip}: webpki says valid {valid}, we read {ours:?}"
        );
    }
}

fn certificate(input: &mut Input<'_>) {
    let flags = input.byte();
    let with_version = flags & 1 != 0;
    let self_issued = flags & 2 != 0;
    let unique_ids = flags & 4 != 0;
    let critical = flags & 8 != 0;
    let second_san = flags & 16 != 0;
    let extension_before = flags & 32 != 0;
    let issuer = name(input);
    let subject = if self_issued {
        issuer.clone()
    } else {
        name(input)
    };
    let serial_len = 1 + usize::from(input.byte() % 20);
    let serial = integer(&input.bytes(serial_len));
    let (key, usable) = spki(input);

    // subjectAltName entries.
    let mut names = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..input.byte() % 9 {
        match input.byte() % 5 {
            0 => names.push(tlv(0x82, b"a.example")),
            1 => {
                let b = input.bytes(4);
                let mut v4 = [127, 0, 0, 1];
                v4[..b.len()].copy_from_slice(&b);
                names.push(tlv(0x87, &v4));
                addresses.push(IpAddr::from(v4));
            }
            2 => {
                let b = input.bytes(16);
                let mut v6 = [0u8; 16];
                v6[15] = 1;
                v6[..b.len()].copy_from_slice(&b);
                names.push(tlv(0x87, &v6));
                addresses.push(IpAddr::from(v6));
            }
            3 => {
                let len = usize::from(input.byte() % 20);
                let odd = if len == 4 || len == 16 { len + 1 } else { len };
                names.push(tlv(0x87, &vec![10; odd]));
            }
            _ => names.push(tlv(0x86, b"https://a.example/")),
        }
    }
    let san = |names: &[Vec<u8>], critical: bool| {
        let mut fields = vec![oid(SUBJECT_ALT_NAME)];
        if critical {
            fields.push(tlv(0x01, &[0xFF]));
        }
        fields.push(tlv(0x04, &seq(names)));
        seq(&fields)
    };
    let mut extensions = Vec::new();
    if extension_before {
        extensions.push(seq(&[
            oid(BASIC_CONSTRAINTS),
            tlv(0x01, &[0xFF]),
            tlv(0x04, &seq(&[])),
        ]));
    }
    extensions.push(san(&names, critical));
    if second_san {
        extensions.push(san(&[tlv(0x87, &[192, 0, 2, 7])], false));
    }

    let algorithm = seq(&[oid(ECDSA_SHA256)]);
    let mut tbs = Vec::new();
    if with_version {
        tbs.push(tlv(0xA0, &tlv(0x02, &[2])));
    }
    tbs.push(serial);
    tbs.push(algorithm.clone());
    tbs.push(issuer.clone());
    tbs.push(seq(&[
        tlv(0x17, b"200101000000Z"),
        tlv(0x17, b"491231235959Z"),
    ]));
    tbs.push(subject.clone());
    tbs.push(key.clone());
    if unique_ids {
        tbs.push(tlv(0x81, &[0, 1, 2]));
        tbs.push(tlv(0x82, &[0, 3]));
    }
    tbs.push(tlv(0xA3, &seq(&extensions)));
    let der = seq(&[seq(&tbs), algorithm, tlv(0x03, &[0, 0x30, 0x00])]);

    // Oracle 2.
    assert_eq!(
        issuer_subject_key(&der),
        Some((
            contents(&issuer).to_vec(),
            contents(&subject).to_vec(),
            contents(&key).to_vec()
        )),
        "names or key"
    );
    assert_eq!(is_self_issued(&der), issuer == subject);
    assert_eq!(ip_address_sans(&der), Some(addresses), "iPAddress entries");
    assert_eq!(key_is_usable(contents(&key)), usable, "usable key");

    // Oracle 3.
    let cut = (usize::from(input.byte()) << 8 | usize::from(input.byte())) % der.len();
    assert_eq!(issuer_subject_key(&der[..cut]), None, "a {cut}-byte prefix");
    assert_eq!(ip_address_sans(&der[..cut]), None, "a {cut}-byte prefix");
    assert!(!is_self_issued(&der[..cut]));

    // Oracle 4.
    let v4: [u8; 4] = std::array::from_fn(|_| input.byte());
    let v6: [u8; 16] = std::array::from_fn(|_| input.byte());
    compare_with_webpki(&der, [IpAddr::from(v4), IpAddr::from(v6)]);
}

fn ec_key(input: &mut Input<'_>) {
    let flags = input.byte();
    let curve = match flags % 3 {
        0 => P256,
        1 => P384,
        _ => K256,
    };
    let pkcs8 = flags & 4 != 0;
    let parameters = flags & 8 != 0;
    let public_key = flags & 16 != 0;
    let mut fields = vec![tlv(0x02, &[1]), tlv(0x04, &input.bytes(32))];
    if parameters {
        fields.push(tlv(0xA0, &oid(curve)));
    }
    if public_key {
        fields.push(tlv(0xA1, &tlv(0x03, &[0, 4, 9, 9])));
    }
    let sec1 = seq(&fields);
    let (form, der) = if pkcs8 {
        let der = seq(&[
            tlv(0x02, &[0]),
            seq(&[oid(EC_PUBLIC_KEY), oid(curve)]),
            tlv(0x04, &sec1),
        ]);
        (KeyForm::Pkcs8, der)
    } else {
        (KeyForm::Sec1, sec1)
    };
    // Oracle 5.
    assert_eq!(
        ec_key_lacks_public_key(form, &der),
        !public_key,
        "{form:?} with publicKey {public_key}"
    );
    let supported = curve != K256;
    assert_eq!(
        key_is_damaged(form, &der),
        form == KeyForm::Pkcs8 && supported,
        "{form:?} whole"
    );
    let cut = usize::from(input.byte()) % der.len();
    assert!(key_is_damaged(form, &der[..cut]), "a {cut}-byte prefix");
    assert!(!ec_key_lacks_public_key(form, &der[..cut]));
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    match input.byte() % 3 {
        0 => {
            let raw = input.0;
            // Oracle 1 (and 4 where webpki parses).
            issuer_subject_key(raw);
            ip_address_sans(raw);
            is_self_issued(raw);
            key_is_usable(raw);
            for form in [KeyForm::Pkcs8, KeyForm::Sec1, KeyForm::Pkcs1] {
                key_is_damaged(form, raw);
                ec_key_lacks_public_key(form, raw);
            }
            compare_with_webpki(
                raw,
                ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            );
        }
        1 => certificate(&mut input),
        _ => ec_key(&mut input),
    }
});
