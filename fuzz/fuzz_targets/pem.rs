//! Fuzz target `pem`: the PEM (and DER) readers behind the TLS configurations' public
//! constructors: `TlsClientConfig::add_ca_certificate`, `with_only_ca_certificates`,
//! `add_ca_certificate_der`, `set_client_certificate`, `TlsServerConfig::from_pem` and
//! `with_client_certificates`.
//!
//! Input layout: byte 0 picks the mode, byte 1 holds style bits (CRLF line ends, a UTF-8 BOM,
//! no final line break, END lines glued to the next BEGIN line, the key as SEC1), byte 2 the
//! base64 line width (0 means 64); the rest is mode 0's raw bytes, or parts (an opcode byte and
//! operands) that assemble a PEM: a certificate from a fixed pool (three self-signed CAs, the
//! first with its key, in `fuzz/certs/`), a `CERTIFICATE` section of arbitrary bytes, a section
//! of another label, a line of text; mode 2 then damages the text (delete, insert, replace a
//! byte; delete a line) before it is read.
//!
//! Oracles:
//! 1. Nothing panics; every refusal is `TlsFailure::Configuration`.
//! 2. Every line an error names lies within the input and is the line it says: a
//!    `line N, column C: 'x'` is the character at that place, a line quoted is that line, a
//!    section said to begin at line N has a BEGIN line there.
//! 3. Assembled (mode 1): rustls-pki-types' reader yields exactly the DER of the `CERTIFICATE`
//!    sections (checks the assembler); a client chain of those sections is accepted and
//!    `set_client_certificate` presents exactly those DER bytes, in order (also with a BOM and
//!    glued END/BEGIN lines, which kdnet reads); a CA bundle of pool certificates is accepted
//!    by every constructor with exactly as many roots as it has sections.
//! 4. Never fewer: a bundle (mode 0 or damaged, mode 2) that is accepted trusts at least as
//!    many roots as it has `-----BEGIN CERTIFICATE-----` lines and as it has
//!    `-----END CERTIFICATE-----` lines (a certificate whose BEGIN or END line was lost or
//!    damaged is refused, never dropped), and a client chain presents at least as many.
//! 5. DER: `add_ca_certificate_der(bytes)` accepts exactly when `add_ca_certificate` accepts
//!    the same bytes written as one PEM section; PEM text given as DER is named as such.
#![no_main]

use kdnet::network::SocketError;
use kdnet::network::tls::{TlsClientConfig, TlsServerConfig};
use libfuzzer_sys::fuzz_target;
use rustls::SignatureScheme;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const POOL: [&[u8]; 3] = [
    include_bytes!("../certs/ca1.der"),
    include_bytes!("../certs/ca2.der"),
    include_bytes!("../certs/ca3.der"),
];
/// The key of `POOL[0]`, as PKCS#8 and as SEC1.
const KEY_PKCS8: &[u8] = include_bytes!("../certs/ca1.p8.der");
const KEY_SEC1: &[u8] = include_bytes!("../certs/ca1.sec1.der");
const LABELS: [&str; 8] = [
    "X509 CRL",
    "PRIVATE KEY",
    "EC PARAMETERS",
    "PUBLIC KEY",
    "CERTIFICATE REQUEST",
    "TRUSTED CERTIFICATE",
    "FOO",
    "RSA PRIVATE KEY",
];

struct Style {
    crlf: bool,
    bom: bool,
    no_final_break: bool,
    glue: bool,
    sec1: bool,
    width: usize,
}

enum Part {
    Section { label: String, der: Vec<u8> },
    Text(String),
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The parts as PEM text; `plain` ignores the BOM and glue styles (what any reader takes).
fn render(parts: &[Part], style: &Style, plain: bool) -> Vec<u8> {
    let eol = if style.crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    if style.bom && !plain {
        out.push('\u{FEFF}');
    }
    for (index, part) in parts.iter().enumerate() {
        match part {
            Part::Section { label, der } => {
                out.push_str(&format!("-----BEGIN {label}-----{eol}"));
                let text = base64(der);
                for line in text.as_bytes().chunks(style.width) {
                    out.push_str(std::str::from_utf8(line).unwrap());
                    out.push_str(eol);
                }
                out.push_str(&format!("-----END {label}-----"));
                let next_is_section = matches!(parts.get(index + 1), Some(Part::Section { .. }));
                if !(style.glue && !plain && next_is_section) {
                    out.push_str(eol);
                }
            }
            Part::Text(text) => {
                out.push_str(text);
                out.push_str(eol);
            }
        }
    }
    if style.no_final_break && !plain {
        while out.ends_with(['\r', '\n']) {
            out.pop();
        }
    }
    out.into_bytes()
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken.to_vec()
    }
}

fn parts(input: &mut Input<'_>) -> Vec<Part> {
    let mut parts = Vec::new();
    while parts.len() < 8 {
        let Some(op) = input.byte() else { break };
        match op % 4 {
            0 => parts.push(Part::Section {
                label: "CERTIFICATE".into(),
                der: POOL[usize::from(op >> 2) % 3].to_vec(),
            }),
            1 => {
                let len = usize::from(input.byte().unwrap_or(0));
                parts.push(Part::Section {
                    label: "CERTIFICATE".into(),
                    der: input.bytes(len),
                });
            }
            2 => {
                let len = usize::from(input.byte().unwrap_or(0));
                parts.push(Part::Section {
                    label: LABELS[usize::from(op >> 2) % LABELS.len()].into(),
                    der: input.bytes(len),
                });
            }
            _ => {
                let len = usize::from(input.byte().unwrap_or(0) % 80);
                let mut text: String = input
                    .bytes(len)
                    .into_iter()
                    .map(|b| char::from(0x20 + b % 0x5F))
                    .collect();
                if text.starts_with('-') {
                    text.replace_range(..1, "x");
                }
                parts.push(Part::Text(text));
            }
        }
    }
    parts
}

fn is_pool_certificate(part: &Part) -> bool {
    matches!(part, Part::Section { label, der } if label == "CERTIFICATE" && POOL.contains(&&der[..]))
}

fn certificate_ders(parts: &[Part]) -> Vec<Vec<u8>> {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::Section { label, der } if label == "CERTIFICATE" => Some(der.clone()),
            _ => None,
        })
        .collect()
}

fn pem_of(der: &[u8], style: &Style) -> Vec<u8> {
    let part = Part::Section {
        label: "CERTIFICATE".into(),
        der: der.to_vec(),
    };
    render(&[part], style, true)
}

fn key_pem(style: &Style) -> Vec<u8> {
    let (label, der) = if style.sec1 {
        ("EC PRIVATE KEY", KEY_SEC1)
    } else {
        ("PRIVATE KEY", KEY_PKCS8)
    };
    let part = Part::Section {
        label: label.into(),
        der: der.to_vec(),
    };
    render(&[part], style, true)
}

/// The refusal's text, after checking that it is a configuration error (oracle 1).
fn configuration_text(error: SocketError) -> String {
    let text = error.to_string();
    assert!(
        text.starts_with("TLS failed: TLS configuration: "),
        "not a configuration error: {error:?}"
    );
    text
}

/// The roots a client configuration trusts besides the defaults (its `Debug` form says).
fn root_count(config: &TlsClientConfig) -> usize {
    let text = format!("{config:?}");
    let at = text.find("extra_roots: ").expect("Debug shows extra_roots") + 13;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The certificate chain a client configuration presents.
fn presented_chain(config: &TlsClientConfig) -> Vec<Vec<u8>> {
    let built = config.build().expect("a configuration with a root builds");
    let certified = built
        .client_auth_cert_resolver
        .resolve(&[], &[SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("a client certificate is presented");
    certified.cert.iter().map(|c| c.as_ref().to_vec()).collect()
}

/// `quoted` of pem.rs: how an error quotes a line.
fn quoted(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The text of the `Debug`-quoted string that starts `text` (as `{:?}` writes a `str`).
fn debug_quoted(text: &str) -> String {
    let mut chars = text.chars().skip(1);
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!("unterminated quote in {text:?}")
}

/// The numbers that follow each `word` in `text`, with the text after them.
fn numbers_after<'a>(text: &'a str, word: &str) -> Vec<(usize, &'a str)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        rest = &rest[at + word.len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            found.push((rest[..digits].parse().unwrap(), &rest[digits..]));
        }
    }
    found
}

/// Oracle 2: every line an error names is within `given` and is the line described.
fn check_positions(text: &str, given: &[u8]) {
    // kdnet reads (and quotes) the input without a leading byte order mark.
    let given = given.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(given);
    // `PEM_DUMP=1 cargo fuzz run -s none pem <artifact>` shows what a failing check read.
    if std::env::var_os("PEM_DUMP").is_some() {
        eprintln!("{text}\n{}", String::from_utf8_lossy(given));
    }
    // A lone CR ends a line, as it does for the decoder (old Mac line ends).
    let given: Vec<u8> = (0..given.len())
        .map(|at| match (given[at], given.get(at + 1)) {
            (b'\r', Some(b'\n')) => b'\r',
            (b'\r', _) => b'\n',
            (b, _) => b,
        })
        .collect();
    let lines: Vec<&[u8]> = given.split(|&b| b == b'\n').collect();
    let line = |n: usize| -> &[u8] {
        assert!(
            n >= 1 && n <= lines.len(),
            "line {n} of {}: {text}",
            lines.len()
        );
        lines[n - 1]
    };
    for word in ["line ", "lines ", " to "] {
        for (n, _) in numbers_after(text, word) {
            if word != " to " || text.contains("lines ") {
                line(n);
            }
        }
    }
    for (n, after) in numbers_after(text, "line ") {
        let this = line(n);
        if let Some(after) = after.strip_prefix(", column ") {
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let column: usize = after[..digits].parse().unwrap();
            let named = &after[digits..];
            let named = named.strip_prefix(": ").unwrap();
            match std::str::from_utf8(this) {
                Ok(line_text) => {
                    let c = line_text
                        .chars()
                        .nth(column - 1)
                        .unwrap_or_else(|| panic!("column {column} past the line: {text}"));
                    assert!(
                        named.starts_with(&format!("{c:?}")),
                        "line {n} column {column} holds {c:?}: {text}"
                    );
                }
                Err(_) => {
                    let b = this[column - 1];
                    assert!(
                        named.starts_with(&format!("byte 0x{b:02X}")),
                        "line {n} column {column} holds 0x{b:02X}: {text}"
                    );
                }
            }
        } else if let Some(quote) = after
            .strip_prefix(", ")
            .or_else(|| after.strip_prefix(" with "))
            .filter(|quote| quote.starts_with('"'))
        {
            // The quoted text is the line, or (a line holding an END and a BEGIN marker glued
            // together) the part of it up to the END marker's end or from the BEGIN marker on.
            let quote = debug_quoted(quote);
            let quote = quote.strip_suffix('…').unwrap_or(&quote);
            let full = String::from_utf8_lossy(this);
            let glued = full.contains("----------BEGIN ");
            assert!(
                quoted(this).starts_with(quote) || (glued && full.contains(quote)),
                "line {n} is {:?}: {text}",
                quoted(this)
            );
        } else if after.starts_with(" begins another section") {
            assert!(
                this.windows(11).any(|w| w == b"-----BEGIN "),
                "line {n} begins no section: {text}"
            );
        }
    }
    for (n, _) in numbers_after(text, "begins at line ") {
        assert!(
            line(n).windows(11).any(|w| w == b"-----BEGIN "),
            "no BEGIN line at line {n}: {text}"
        );
    }
}

/// How many BEGIN and END lines of certificates `pem` holds (wherever a line holds one).
fn certificate_markers(pem: &[u8]) -> usize {
    let count = |marker: &[u8]| pem.windows(marker.len()).filter(|w| *w == marker).count();
    count(b"-----BEGIN CERTIFICATE-----").max(count(b"-----END CERTIFICATE-----"))
}

/// Reads `bundle` with every CA constructor; returns the roots trusted when accepted (the
/// constructors must agree).
fn read_bundle(bundle: &[u8]) -> Option<usize> {
    let only = TlsClientConfig::with_only_ca_certificates(bundle);
    let mut added = TlsClientConfig::new();
    let result = added.add_ca_certificate(bundle);
    let server = TlsServerConfig::with_client_certificates(
        &pem_of(POOL[0], &PLAIN),
        &key_pem(&PLAIN),
        bundle,
        Vec::new(),
    );
    match (only, result) {
        (Ok(only), Ok(())) => {
            assert!(
                server.is_ok(),
                "client CA bundle refused: {:?}",
                server.err()
            );
            let count = root_count(&only);
            assert_eq!(count, root_count(&added), "two constructors, two counts");
            let markers = certificate_markers(bundle);
            assert!(
                count >= markers,
                "bundle accepted with {count} roots, but it has {markers} certificate lines"
            );
            Some(count)
        }
        (Err(a), Err(b)) => {
            let text = configuration_text(a);
            assert_eq!(text, configuration_text(b), "two constructors, two errors");
            check_positions(&text, bundle);
            let server = configuration_text(server.unwrap_err());
            check_positions(&server, bundle);
            assert_eq!(root_count(&added), 0, "a refused bundle added roots");
            None
        }
        (a, b) => panic!("constructors disagree: {:?} vs {:?}", a.err(), b.err()),
    }
}

/// Reads `chain` with the client-certificate and server constructors; returns the chain
/// presented when accepted.
fn read_chain(chain: &[u8], key: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut config = TlsClientConfig::with_only_ca_certificates(&pem_of(POOL[1], &PLAIN)).unwrap();
    let client = config.set_client_certificate(chain, key);
    let server = TlsServerConfig::from_pem(chain, key);
    match client {
        Ok(()) => {
            assert!(server.is_ok(), "server refused: {:?}", server.err());
            let presented = presented_chain(&config);
            let markers = certificate_markers(chain);
            if std::env::var_os("PEM_DUMP").is_some() && presented.len() < markers {
                eprintln!("{}", String::from_utf8_lossy(chain));
            }
            assert!(
                presented.len() >= markers,
                "chain of {} accepted from {markers} certificate lines",
                presented.len()
            );
            Some(presented)
        }
        Err(e) => {
            let text = configuration_text(e);
            let server = configuration_text(server.err().expect("server accepted a bad chain"));
            for text in [&text, &server] {
                // The error is about the key PEM or the certificate PEM.
                check_positions(
                    text,
                    if text.contains(" key PEM") {
                        key
                    } else {
                        chain
                    },
                );
            }
            None
        }
    }
}

const PLAIN: Style = Style {
    crlf: false,
    bom: false,
    no_final_break: false,
    glue: false,
    sec1: false,
    width: 64,
};

fn damage(text: &mut Vec<u8>, input: &mut Input<'_>) {
    for _ in 0..3 {
        let (Some(op), Some(a), Some(b)) = (input.byte(), input.byte(), input.byte()) else {
            return;
        };
        let at = (usize::from(a) << 8 | usize::from(b)) % (text.len() + 1);
        match op % 5 {
            0 if at < text.len() => {
                text.remove(at);
            }
            1 => text.insert(at, input.byte().unwrap_or(b' ')),
            2 if at < text.len() => text[at] = input.byte().unwrap_or(b'-'),
            3 => {
                // Delete the line holding `at`.
                let start = text[..at]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                let end = text[at..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(text.len(), |p| at + p + 1);
                text.drain(start..end);
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(mode), Some(flags), Some(width)) = (input.byte(), input.byte(), input.byte()) else {
        return;
    };
    let style = Style {
        crlf: flags & 1 != 0,
        bom: flags & 2 != 0,
        no_final_break: flags & 4 != 0,
        glue: flags & 8 != 0,
        sec1: flags & 16 != 0,
        width: if width == 0 { 64 } else { usize::from(width) },
    };
    match mode % 3 {
        0 => {
            let raw = input.0;
            read_bundle(raw);
            read_chain(raw, &key_pem(&style));
            read_chain(&pem_of(POOL[0], &PLAIN), raw);
            // Oracle 5.
            let der = TlsClientConfig::new().add_ca_certificate_der(raw);
            let pem = TlsClientConfig::new().add_ca_certificate(&pem_of(raw, &style));
            assert_eq!(
                der.is_ok(),
                pem.is_ok(),
                "DER {:?} vs PEM {:?}",
                der.err(),
                pem.err()
            );
            if let Err(e) = der {
                let text = configuration_text(e);
                if raw.windows(11).any(|w| w == b"-----BEGIN ") {
                    assert!(text.contains("it is PEM text, not DER"), "{text}");
                }
            }
        }
        1 => {
            let parts = parts(&mut input);
            // The assembler, checked against rustls-pki-types' reader.
            let expected = certificate_ders(&parts);
            let plain = render(&parts, &style, true);
            let read: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&plain)
                .map(|c| c.expect("the assembled PEM reads").as_ref().to_vec())
                .collect();
            assert_eq!(read, expected, "pki-types vs the assembled sections");

            // A client chain: the pool's first certificate (its key's), then the sections.
            let mut chain_parts = vec![Part::Section {
                label: "CERTIFICATE".into(),
                der: POOL[0].to_vec(),
            }];
            chain_parts.extend(parts.iter().map(|part| match part {
                Part::Section { label, der } => Part::Section {
                    label: label.clone(),
                    der: der.clone(),
                },
                Part::Text(text) => Part::Text(text.clone()),
            }));
            let chain = render(&chain_parts, &style, false);
            let presented = read_chain(&chain, &key_pem(&style)).unwrap_or_else(|| {
                panic!("valid chain refused: {:?}", String::from_utf8_lossy(&chain))
            });
            assert_eq!(presented, certificate_ders(&chain_parts), "presented chain");

            // A CA bundle of the pool's certificates and the other sections and text.
            let bundle_parts: Vec<Part> = parts
                .into_iter()
                .filter(|part| {
                    !matches!(part, Part::Section { label, .. } if label == "CERTIFICATE")
                        || is_pool_certificate(part)
                })
                .collect();
            let roots = certificate_ders(&bundle_parts).len();
            let bundle = render(&bundle_parts, &style, false);
            match read_bundle(&bundle) {
                Some(count) => assert_eq!(count, roots, "roots of {bundle:?}"),
                None => assert_eq!(roots, 0, "valid bundle refused: {bundle:?}"),
            }
        }
        _ => {
            let parts = parts(&mut input);
            let mut text = render(&parts, &style, false);
            let mut key = key_pem(&style);
            damage(&mut text, &mut input);
            damage(&mut key, &mut input);
            read_bundle(&text);
            read_chain(&text, &key_pem(&style));
            let mut leaf = render(
                &[Part::Section {
                    label: "CERTIFICATE".into(),
                    der: POOL[0].to_vec(),
                }],
                &style,
                false,
            );
            leaf.extend_from_slice(&text);
            read_chain(&leaf, &key);
        }
    }
});
