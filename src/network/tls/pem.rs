//! Reading certificates and keys from PEM for the TLS configurations, with errors that say
//! what the file holds instead (wrong kind, DER, PKCS#12, UTF-16, encrypted, cut short, a chain
//! in the wrong order) rather than the decoder's words.

use std::borrow::Cow;
use std::sync::Arc;

use rustls::InconsistentKeys;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::config::{certificate_text, configuration, provider};
use super::der::{ec_key_lacks_public_key, key_is_damaged};
use crate::network::SocketError;

pub(super) fn parse_certificates(
    given: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, SocketError> {
    let pem = normalized(given);
    let pem = &pem[..];
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let failure = failure(pem, given);
            configuration(format!(
                "{what} PEM, section {}: {}",
                failure.section,
                pem_error_text(&e, &failure)
            ))
        })?;
    // The decoder reads a section whose END line was lost into the next one; when that is of
    // a kind it skips, both are dropped without an error.
    if let Some(lost) = lost_end(pem, given, !certificates.is_empty()) {
        return Err(configuration(format!("{what} PEM: {lost}")));
    }
    if certificates.is_empty() {
        return Err(configuration(format!(
            "no CERTIFICATE section found in the {what} PEM{}",
            pem_contents_hint(
                pem,
                given,
                "openssl x509 -inform der -in cert.der -out cert.pem"
            )
        )));
    }
    Ok(certificates)
}

/// Parses a chain and its key and checks that they belong together.
pub(super) fn certified_key(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    role: &str,
) -> Result<CertifiedKey, SocketError> {
    let chain = parse_certificates(cert_chain_pem, &format!("{role} certificate"))?;
    let given_key_pem = key_pem;
    let key_pem = normalized(key_pem);
    let key_pem = &key_pem[..];
    if let Some(form) = encrypted_key_form(key_pem) {
        return Err(configuration(format!(
            "the {role} key PEM holds an encrypted private key ({form}), which cannot be used \
             without its password: decrypt it first, e.g. with \
             `openssl pkey -in key.pem -out plain-key.pem`"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => configuration(format!(
            "no PRIVATE KEY section found in the {role} key PEM{}",
            pem_contents_hint(
                key_pem,
                given_key_pem,
                "openssl pkey -inform der -in key.der -out key.pem"
            )
        )),
        e => configuration(format!(
            "{role} key PEM: {}",
            pem_error_text(&e, &failure(key_pem, given_key_pem))
        )),
    })?;
    // What `CertifiedKey::from_der` does, in steps, so that each failure can be named.
    let damaged = key_is_damaged(&key);
    let no_public_key = ec_key_lacks_public_key(&key);
    let key = provider().key_provider.load_private_key(key).map_err(|_| {
        configuration(if no_public_key {
            format!(
                "the {role} key lacks its public key, which is optional in an ECDSA key's \
                 encoding but needed here: write it out with it, e.g. with \
                 `openssl ec -in key.pem -out key-with-public-key.pem`"
            )
        } else if damaged {
            format!(
                "the {role} key is damaged: its DER encoding is broken (is the file cut short, \
                 or a line of it lost?)"
            )
        } else {
            format!(
                "the {role} key is of a kind that cannot be used (supported: RSA of 2048 to \
                 4096 bits, ECDSA on P-256 or P-384, Ed25519)"
            )
        })
    })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => {
            // A chain in the wrong order (CA first) is a common mistake: name it.
            let owner = certified.cert.iter().skip(1).position(|certificate| {
                CertifiedKey::new(vec![certificate.clone()], Arc::clone(&certified.key))
                    .keys_match()
                    .is_ok()
            });
            Err(configuration(match owner {
                Some(index) => format!(
                    "the {role} key belongs to certificate {} of the {role} certificate PEM, but \
                     the chain must start with the end-entity certificate (the one the key \
                     belongs to)",
                    index + 2
                ),
                None => format!("the {role} key does not belong to the {role} certificate"),
            }))
        }
        Err(e) => Err(configuration(format!(
            "{role} certificate 1 cannot be parsed: {}",
            local_certificate_text(&e)
        ))),
    }
}

/// What [`local_certificate_text`] says of a PEM certificate whose DER cannot be read.
const MALFORMED: &str = "its content is not a well-formed X.509 certificate (its base64 \
                         text decodes, but not to a certificate): was a line of it lost or \
                         changed? Get the file again";

/// [`local_certificate_text`] for a certificate given as DER (`der`): there is no base64 text
/// or line to speak of, and PEM text given as DER is named as such.
pub(super) fn der_certificate_text(der: &[u8], error: &rustls::Error) -> String {
    if der.windows(11).any(|w| w == b"-----BEGIN ") {
        return "it is PEM text, not DER: give it to add_ca_certificate (or convert it with \
                `openssl x509 -in cert.pem -outform der -out cert.der`)"
            .to_owned();
    }
    let text = local_certificate_text(error);
    match text.strip_prefix(MALFORMED) {
        Some(rest) => format!(
            "it is not a well-formed X.509 certificate in DER (binary) form: is it cut short, \
             or another kind of file?{rest}"
        ),
        None => text,
    }
}

/// rustls' text for a problem with a certificate from a local file, without the "invalid peer
/// certificate" prefix (there is no peer yet), and in words for a certificate whose DER cannot
/// be read (rustls says `BadEncoding`, webpki names the part it stopped at).
pub(super) fn local_certificate_text(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(C::BadEncoding) => MALFORMED.to_owned(),
        rustls::Error::InvalidCertificate(certificate) => {
            let text = certificate_text(certificate);
            // webpki's names for the part of a certificate it could not read, which
            // `certificate_text` passes on as they are.
            let unreadable = [
                "MalformedExtensions",
                "ExtensionValueInvalid",
                "InvalidSerialNumber",
                "SignatureAlgorithmMismatch",
                "UnsupportedNameType",
                "MalformedDnsIdentifier",
                "MalformedNameConstraint",
                "EmptyEkuExtension",
                "TrailingData",
            ];
            if unreadable.iter().any(|name| text.starts_with(name)) {
                format!("{MALFORMED} (webpki: {text})")
            } else {
                text
            }
        }
        other => other.to_string(),
    }
}

/// How an encrypted private key in `pem` is written, if there is one: PKCS#8's
/// `ENCRYPTED PRIVATE KEY` section, or OpenSSL's legacy form (a `… PRIVATE KEY` section with a
/// `Proc-Type: 4,ENCRYPTED` header, which the PEM decoder would only call bad base64).
fn encrypted_key_form(pem: &[u8]) -> Option<String> {
    let mut section: Option<&str> = None;
    for line in pem_lines(pem) {
        if let Some(label) = pem_label(line, "-----BEGIN ") {
            if label == "ENCRYPTED PRIVATE KEY" {
                return Some(label.to_owned());
            }
            section = Some(label);
        } else if pem_label(line, "-----END ").is_some() {
            section = None;
        } else if let Some(label) = section {
            let header = line.strip_prefix("Proc-Type:").map(str::trim);
            if label.ends_with("PRIVATE KEY") && header.is_some_and(|h| h.ends_with("ENCRYPTED")) {
                return Some(format!("{label}, Proc-Type: 4,ENCRYPTED"));
            }
        }
    }
    None
}

/// What `pem` ([`normalized`] from `given`) holds instead of the section that was looked for,
/// as a suffix for the error: the distinct labels of its sections (` (it holds: PRIVATE KEY)`),
/// or a note that it looks like DER, with `convert`, the command that turns it into PEM. Empty
/// if there is nothing to say.
fn pem_contents_hint(pem: &[u8], given: &[u8], convert: &str) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for label in pem_lines(pem).filter_map(|line| pem_label(line, "-----BEGIN ")) {
        if !labels.contains(&label) {
            labels.push(label); // each kind once: a bundle may hold hundreds of sections
        }
    }
    if !labels.is_empty() {
        return format!(" (it holds: {})", labels.join(", "));
    }
    // Binary forms are told from the bytes as given ([`normalized`] changes lone CRs).
    if given.starts_with(&[0xFF, 0xFE]) || given.starts_with(&[0xFE, 0xFF]) {
        return " (it is UTF-16 text: save it as ASCII or UTF-8)".to_owned();
    }
    if pem_lines(pem).any(|line| line.trim_start().starts_with("-----BEGIN ")) {
        return " (its -----BEGIN lines are indented: they must start at the beginning of a line)"
            .to_owned();
    }
    if looks_like_pkcs12(given) {
        return " (it looks like a PKCS#12 bundle (.p12/.pfx), not PEM text: convert it with \
                `openssl pkcs12 -in bundle.p12 -out bundle.pem -nodes`: it holds \
                the certificates and the key)"
            .to_owned();
    }
    // Every DER certificate and key is an ASN.1 SEQUENCE: tag 0x30.
    if given.first() == Some(&0x30) && std::str::from_utf8(given).is_err() {
        return format!(" (it looks like binary DER, not PEM text: convert it with `{convert}`)");
    }
    String::new()
}

/// Whether `bytes` start like a PKCS#12 file (what Windows and macOS export certificates with
/// keys as): a SEQUENCE holding version 3 and then a PKCS#7 ContentInfo (its OID starts
/// 1.2.840.113549.1.7).
fn looks_like_pkcs12(bytes: &[u8]) -> bool {
    const VERSION_3_THEN_SEQUENCE: &[u8] = &[0x02, 0x01, 0x03, 0x30];
    const PKCS7_OID: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07];
    let header = match bytes {
        [0x30, length, ..] if *length < 0x80 => 2,
        [0x30, length, ..] => 2 + usize::from(length & 0x7F),
        _ => return false,
    };
    let Some(rest) = bytes.get(header..) else {
        return false;
    };
    // After the ContentInfo's SEQUENCE tag and its (up to 5-byte) length comes the OID.
    rest.starts_with(VERSION_3_THEN_SEQUENCE)
        && rest
            .get(VERSION_3_THEN_SEQUENCE.len()..)
            .is_some_and(|info| {
                info.windows(PKCS7_OID.len())
                    .take(6)
                    .any(|w| w == PKCS7_OID)
            })
}

/// `pem` as the PEM decoder can read all of it: without a leading UTF-8 byte order mark
/// (Windows editors write one; the decoder would take the first `-----BEGIN` line for text
/// outside any section and skip the section), and with a line break between an END line and a
/// BEGIN line glued to it (`-----END CERTIFICATE----------BEGIN CERTIFICATE-----`, what
/// `cat a.pem b.pem` makes when `a.pem` lacks its final line break; the decoder would read the
/// END marker, ignore the rest of the line and so drop the next section without a word).
/// A lone CR (one not followed by LF) becomes LF: the decoder ends a line there too (old Mac line
/// ends), and kdnet's own checks of the lines (a lost END line, where an error is) read lines
/// between LFs (the offsets stay the same). Borrowed unless a break is inserted or a CR changed.
fn normalized(pem: &[u8]) -> Cow<'_, [u8]> {
    let pem = pem.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(pem);
    let lone_cr = |at: usize| pem[at] == b'\r' && pem.get(at + 1) != Some(&b'\n');
    let has_lone_cr = memchr::memchr_iter(b'\r', pem).any(lone_cr);
    if !has_lone_cr && !pem.windows(GLUED.len()).any(|w| w == GLUED) {
        return Cow::Borrowed(pem);
    }
    let lf_ends: Vec<u8>;
    let pem = if has_lone_cr {
        lf_ends = (0..pem.len())
            .map(|at| if lone_cr(at) { b'\n' } else { pem[at] })
            .collect();
        &lf_ends[..]
    } else {
        pem
    };
    let mut separated = Vec::with_capacity(pem.len() + 16);
    let mut rest = pem;
    while let Some(at) = rest.windows(GLUED.len()).position(|w| w == GLUED) {
        // The first five dashes end the END line, the next five start the BEGIN line.
        separated.extend_from_slice(&rest[..at + 5]);
        separated.push(b'\n');
        rest = &rest[at + 5..];
    }
    separated.extend_from_slice(rest);
    Cow::Owned(separated)
}

/// An END line's dashes and the BEGIN line glued to it (see [`normalized`]).
const GLUED: &[u8] = b"----------BEGIN ";

/// How many line breaks [`normalized`] added to `given` before offset `at` of its result: the
/// lines an error names are those of the file as written.
fn breaks_added_before(given: &[u8], at: usize) -> usize {
    let given = given.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(given);
    let mut added = 0;
    let mut from = 0;
    while let Some(found) = given[from..].windows(GLUED.len()).position(|w| w == GLUED) {
        // In the result, this break follows the END line's five dashes and the breaks before.
        let glued = from + found + 5;
        if glued + added >= at {
            break;
        }
        added += 1;
        from = glued;
    }
    added
}

/// Where the PEM decoder failed: the number (from 1) of the section, counting the sections it
/// reads (those of the kinds it knows), so that a broken entry of a bundle of hundreds can be
/// found; the line (from 1) of its BEGIN line; its text from that line to where the decoder
/// stopped (the END line, a malformed BEGIN line, or the end of the input); and the number in
/// `given` of each line of that text (a line [`normalized`] split off a glued END line has the
/// number of the line it was part of). `pem` is what the decoder read ([`normalized`]), `given`
/// what the caller gave.
struct Failure<'a> {
    section: usize,
    first_line: usize,
    text: &'a [u8],
    numbers: Vec<usize>,
}

fn failure<'a>(pem: &'a [u8], given: &[u8]) -> Failure<'a> {
    let mut rest = pem;
    let mut section = 1;
    loop {
        let start = pem.len() - rest.len();
        match rustls::pki_types::pem::from_buf(&mut rest) {
            Ok(Some(_)) => section += 1,
            Ok(None) => break,
            Err(_) => {
                let read = &pem[start..pem.len() - rest.len()];
                // Unknown sections and text before the failing one are read in the same call:
                // the failing section starts at the first BEGIN line after the last section
                // closed. (A BEGIN line inside an open section, whose END line was lost, does
                // not close it: the decoder reads on with the new label.)
                let mut begin = 0;
                let mut open: Option<&[u8]> = None;
                for at in line_starts(read) {
                    let line = read[at..].split(|&b| b == b'\n').next().unwrap_or(&[]);
                    if line.starts_with(b"-----BEGIN ") {
                        if open.is_none() {
                            begin = at;
                        }
                        open = Some(section_label(line));
                    } else if open.is_some_and(|label| is_end_of(line, label)) {
                        open = None;
                    }
                }
                let number = |at| line_number(pem, at) - breaks_added_before(given, at);
                let numbers = line_starts(&read[begin..])
                    .map(|at| number(start + begin + at))
                    .collect();
                return Failure {
                    section,
                    first_line: number(start + begin),
                    text: &read[begin..],
                    numbers,
                };
            }
        }
    }
    Failure {
        section,
        first_line: 1,
        text: &[],
        numbers: vec![1],
    }
}

/// Where a section of `pem` (as [`normalized`] made `given`) has no END line before the next
/// BEGIN line, a certificate's BEGIN marker does not start its line (a byte order mark or a
/// space before it, or an END marker: the decoder reads that section as text and skips it), or
/// an END line closes no section (its BEGIN line was lost), in words; `None` if every section
/// is closed before the next begins, every END line closes one, and every certificate's BEGIN
/// marker starts a line. A BEGIN line indented with white space only counts when other
/// certificates were read (`read_any`): a PEM indented throughout has its own error. One pass
/// over the lines, made once a PEM was read (not on a hot path).
fn lost_end(pem: &[u8], given: &[u8], read_any: bool) -> Option<String> {
    let number = |at| line_number(pem, at) - breaks_added_before(given, at);
    // Where a BEGIN marker on `line` from offset `from` on is, if there is one.
    let begin_marker = |line: &[u8], from: usize| {
        let found = line
            .get(from..)?
            .windows(11)
            .position(|w| w == b"-----BEGIN ")?;
        Some(from + found)
    };
    let misplaced_certificate = |at| {
        format!(
            "line {} holds \"-----BEGIN CERTIFICATE-----\" but not at its start, so the \
             certificate it begins would be skipped: start it on a line of its own, with \
             nothing before it (a space, or a byte order mark that joining files left)",
            number(at)
        )
    };
    let mut open: Option<(usize, &[u8])> = None;
    // The first line since the last section closed that holds a BEGIN marker (of a kind other
    // than a certificate) not at its start.
    let mut misplaced_begin: Option<usize> = None;
    for at in line_starts(pem) {
        let line = pem[at..].split(|&b| b == b'\n').next().unwrap_or(&[]);
        if line.starts_with(b"-----END ") && open.is_none() {
            let hint = match misplaced_begin {
                Some(begin) => format!(
                    "line {}'s \"-----BEGIN \" is not at the start of the line: remove what \
                     comes before it (a space, or a byte order mark that joining files left)",
                    number(begin)
                ),
                None => "is its BEGIN line missing?".to_owned(),
            };
            return Some(format!(
                "line {}, {:?}, ends a section that did not begin: {hint}",
                number(at),
                quoted(line)
            ));
        }
        if open.is_none()
            && !line.starts_with(b"-----BEGIN ")
            && let Some(marker) = begin_marker(line, 0)
        {
            let indented = line[..marker].iter().all(|&b| b == b' ' || b == b'\t');
            if line[marker..].starts_with(CERTIFICATE_BEGIN) && (read_any || !indented) {
                return Some(misplaced_certificate(at));
            }
            misplaced_begin.get_or_insert(at);
        }
        if line.starts_with(b"-----BEGIN ") {
            if let Some((begin, label)) = open {
                let (first, next) = (number(begin), number(at));
                return Some(format!(
                    "the section that begins at line {first} has no END line: line {next} \
                     begins another section before it (add \"-----END {}-----\" before line \
                     {next})",
                    String::from_utf8_lossy(label)
                ));
            }
            open = Some((at, section_label(line)));
        } else if open.is_some_and(|(_, label)| is_end_of(line, label)) {
            open = None;
            misplaced_begin = None;
            // A BEGIN marker after the END marker (a byte order mark between them).
            if let Some(marker) = begin_marker(line, 1) {
                if line[marker..].starts_with(CERTIFICATE_BEGIN) {
                    return Some(misplaced_certificate(at));
                }
                misplaced_begin = Some(at);
            }
        }
    }
    None
}

const CERTIFICATE_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The label of a BEGIN line, as the decoder reads it (between `-----BEGIN ` and the final
/// five dashes, trailing spaces and line breaks ignored).
fn section_label(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ') {
        end -= 1;
    }
    let line = &line[..end];
    let line = line.strip_suffix(b"-----").unwrap_or(line);
    line.get(11..).unwrap_or(&[])
}

/// Whether `line` ends a section labelled `label`, as the decoder reads it.
fn is_end_of(line: &[u8], label: &[u8]) -> bool {
    line.strip_prefix(b"-----END ")
        .and_then(|rest| rest.strip_prefix(label))
        .is_some_and(|rest| rest.starts_with(b"-----"))
}

/// The offsets at which the lines of `text` start.
fn line_starts(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(
        text.iter()
            .enumerate()
            .filter(|&(at, &b)| b == b'\n' && at + 1 < text.len())
            .map(|(at, _)| at + 1),
    )
}

/// The number (from 1) of the line holding offset `at` of `text`.
fn line_number(text: &[u8], at: usize) -> usize {
    1 + text[..at].iter().filter(|&&b| b == b'\n').count()
}

/// A PEM syntax error in words a person can act on: which line, what is wrong with it, what to
/// do. The PEM decoder's own text lists the offending line as a byte array
/// (`missing section end marker: [67, 69, 82, …]`) or names the base64 decoder's state
/// (`base64 decode error: InvalidCharacter(33)`).
fn pem_error_text(error: &rustls::pki_types::pem::Error, failure: &Failure<'_>) -> String {
    use rustls::pki_types::pem::Error as E;
    let text = failure.text.strip_suffix(b"\n");
    let terminated = text.is_some();
    let lines: Vec<(usize, &[u8])> = text
        .unwrap_or(failure.text)
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(index, line)| {
            let number = failure.numbers.get(index).copied();
            (number.unwrap_or(failure.first_line + index), line)
        })
        .collect();
    let begin_line = lines.first().map_or(&[][..], |&(_, line)| line);
    // A malformed BEGIN line is the last line read (a section may be open before it).
    let (start_number, start_line) = match error {
        E::IllegalSectionStart { .. } => lines.last().copied().unwrap_or((failure.first_line, &[])),
        _ => (failure.first_line, begin_line),
    };
    let escaped = escaped_line_breaks_hint(start_line);
    // The END line the section needs: its BEGIN line's label.
    let end_marker = format!(
        "-----END {}-----",
        String::from_utf8_lossy(section_label(begin_line))
    );
    // An END line that does not match its BEGIN line is read as base64 text, and a BEGIN line
    // before the END line opens no section of its own: the decoder reads on to the next
    // matching END line, or to the end of the input. The first such line is where to look.
    // (An END line the input ends in, without a line break, is one cut short.)
    let unended = |body: &[(usize, &[u8])]| {
        let (number, line) = *body
            .iter()
            .find(|(_, line)| line.starts_with(b"-----END ") || line.starts_with(b"-----BEGIN "))?;
        Some(if line.starts_with(b"-----END ") {
            format!(
                "the section that begins at line {} ends at line {number} with {:?}, which does \
                 not match its BEGIN line: it must read \"{end_marker}\"",
                failure.first_line,
                quoted(line)
            )
        } else {
            format!(
                "the section that begins at line {} has no END line: line {number} begins \
                 another section before it (add \"{end_marker}\" before line {number})",
                failure.first_line
            )
        })
    };
    match error {
        // A PEM written on one line, its line breaks as `\n`: the decoder reads a BEGIN line
        // (with the whole PEM in its label, if it ends in five dashes) and no END line.
        E::MissingSectionEnd { .. } | E::IllegalSectionStart { .. } if !escaped.is_empty() => {
            format!(
                "line {start_number}, {:?}, is not a valid BEGIN line{escaped}",
                quoted(start_line)
            )
        }
        E::MissingSectionEnd { .. } => {
            let complete = if terminated {
                &lines[..]
            } else {
                &lines[..lines.len() - 1]
            };
            unended(complete.get(1..).unwrap_or(&[])).unwrap_or_else(|| {
                format!(
                    "missing section end \"{end_marker}\" for the section that begins at line {} \
                     (is the file cut short?)",
                    failure.first_line
                )
            })
        }
        E::IllegalSectionStart { line } => format!(
            "line {start_number}, {:?}, is not a valid BEGIN line: it must read \
             \"-----BEGIN <label>-----\", five dashes on each side and nothing after them",
            quoted(line)
        ),
        E::Base64Decode(reason) => {
            let body = match &lines[..] {
                [_, body @ .., _] => body,
                _ => &[],
            };
            unended(body).unwrap_or_else(|| base64_error_text(reason, &lines))
        }
        E::SectionTooLarge => format!(
            "the section that begins at line {} is larger than 256 MB: is this a certificate \
             or key file?",
            failure.first_line
        ),
        other => other.to_string(),
    }
}

/// Why the base64 text between a section's BEGIN and END lines (`lines`, with their numbers,
/// from the BEGIN line to the END line) does not decode. `reason` is the decoder's name for it.
fn base64_error_text(reason: &str, lines: &[(usize, &[u8])]) -> String {
    let body = match lines {
        [_, body @ .., _] => body,
        _ => &[],
    };
    let is_space = |b: u8| matches!(b, b'\t'..=b'\r' | b' ');
    let is_base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/');
    if reason.starts_with("InvalidCharacter") {
        let invalid = body.iter().find_map(|&(number, line)| {
            let at = line
                .iter()
                .position(|&b| !is_base64(b) && b != b'=' && !is_space(b))?;
            Some((number, line, at))
        });
        if let Some((number, line, at)) = invalid {
            let hint = escaped_line_breaks_hint(line);
            if !hint.is_empty() {
                return format!("base64 decode error at line {number}{hint}");
            }
            let (column, what) = match std::str::from_utf8(line) {
                Ok(text) => {
                    let column = text[..at].chars().count() + 1;
                    let c = text[at..].chars().next().unwrap_or('?');
                    let what = if c.is_ascii() {
                        format!("{c:?}")
                    } else {
                        format!("{c:?} (U+{:04X})", u32::from(c))
                    };
                    (column, what)
                }
                Err(_) => (at + 1, format!("byte 0x{:02X}", line[at])),
            };
            return format!(
                "base64 decode error at line {number}, column {column}: {what} is not a base64 \
                 character (between its BEGIN and END lines a section holds only A-Z, a-z, 0-9, \
                 +, / and =): remove it, or get the file again"
            );
        }
    }
    // Padding with base64 text after it (the decoder also says `PrematurePadding` for a
    // misplaced final `==`, when a character was added before it).
    let padded = body.iter().position(|&(_, line)| line.contains(&b'='));
    if let Some(index) = padded {
        let (number, line) = body[index];
        let after_padding = line.iter().skip_while(|&&b| b != b'=');
        let continues = after_padding
            .chain(body[index + 1..].iter().flat_map(|&(_, line)| line.iter()))
            .any(|&b| is_base64(b));
        if continues {
            return format!(
                "base64 decode error at line {number}: the base64 text ends there (with '=') but \
                 goes on after it (the contents of two sections run together?): each \
                 certificate or key needs its own BEGIN and END lines"
            );
        }
    }
    // The lines of a PEM section are all as long as the first, but for the last: one that is
    // not is where a character was lost or added.
    let lengths: Vec<(usize, usize)> = body
        .iter()
        .map(|&(number, line)| (number, line.iter().filter(|&&b| !is_space(b)).count()))
        .collect();
    if lengths.len() >= 2 {
        let rows = &lengths[..lengths.len() - 1];
        // The first line's length is the rule unless the first line is the odd one: the next
        // two agree without it, or (two lines only) the next one has the 64 PEM writers use.
        let width = match rows {
            [(_, a), (_, b), (_, c), ..] if a != b && b == c => *b,
            [(_, a), (_, b)] if a != b && *b == 64 => *b,
            [(_, a), ..] => *a,
            [] => 0,
        };
        let odd = rows.iter().position(|&(_, length)| length != width);
        if let Some(index) = odd {
            let (number, length) = rows[index];
            let others = if index == 0 { "after" } else { "before" };
            return format!(
                "base64 decode error at line {number}: it is {length} characters long where the \
                 lines {others} it have {width}, and the base64 text does not decode: a \
                 character was lost or added there (get the file again)"
            );
        }
    }
    match (body.first(), body.last()) {
        (Some((first, _)), Some((last, _))) => format!(
            "base64 decode error: the base64 text of lines {first} to {last} does not end on a \
             whole group of four characters: a character was lost or added (is a line cut \
             short? get the file again)"
        ),
        _ => "base64 decode error: the section's base64 text does not decode (get the file \
              again)"
            .to_owned(),
    }
}

/// A hint for a line holding `\n` (a backslash and an `n`) where line breaks belong, as a PEM
/// copied out of a JSON or YAML string has: empty if it holds none.
fn escaped_line_breaks_hint(line: &[u8]) -> &'static str {
    if line.windows(2).any(|w| w == b"\\n") {
        ": it holds \"\\n\" (a backslash and an n) where line breaks belong, as a PEM copied \
         out of a quoted string (JSON, YAML, an environment variable) does: replace each \"\\n\" \
         with a line break"
    } else {
        ""
    }
}

/// `line` for an error message: without its line break, and cut after 64 characters (a PEM
/// written on one line would fill a screen).
fn quoted(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The text lines of `pem` without trailing white space (lines that are not UTF-8 are
/// skipped). Leading white space is kept: the PEM decoder reads a `-----BEGIN` line only at
/// the start of a line.
fn pem_lines(pem: &[u8]) -> impl Iterator<Item = &str> {
    pem.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .map(str::trim_end)
}

/// The label of a `-----BEGIN LABEL-----` (or END) line.
fn pem_label<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix("-----")
}
