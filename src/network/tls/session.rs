//! A rustls connection pumped by a non-blocking socket.
//!
//! ```text
//!   kernel ──read──▶ ciphertext ──read_tls/process_new_packets──▶ rustls ──reader──▶ plaintext
//!   plaintext ──writer──▶ rustls (records) ──write_tls──▶ kernel   (leftover records stay in rustls
//!                                                                   until the next writable edge)
//! ```
//!
//! Encrypted output is never dropped on a short write (KDNetwork defect T1): rustls keeps what the
//! kernel did not take and `write_tls` resumes there.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::CertificateDer;

use super::config::{server_name_for, tls_failure};
use crate::network::error::{SocketError, TlsFailure};

/// What receiving ciphertext produced besides plaintext.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Received {
    /// The handshake finished during this call.
    pub(crate) handshake_completed: bool,
    /// The peer sent close_notify: no more plaintext will come.
    pub(crate) peer_closed: bool,
}

/// What flushing achieved.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flushed {
    /// Plaintext bytes whose records have now all reached the kernel.
    pub(crate) plaintext_written: usize,
    /// The kernel refused more (wait for the next writable edge).
    pub(crate) blocked: bool,
}

pub(crate) struct TlsSession {
    conn: rustls::Connection,
    expected_name: String,
    /// Plaintext handed to rustls whose records are not yet all written to the kernel.
    unconfirmed: usize,
    /// The peer sent close_notify: its end of the stream is authenticated.
    close_notify_received: bool,
    /// We queued close_notify: nothing written after it reaches the peer's reader.
    close_notify_sent: bool,
    /// The first bytes the peer sent (`first_len` of them), to name a peer that does not speak
    /// TLS at all (a plain-HTTP server behind an https:// URL) instead of "corrupt message".
    first: [u8; FIRST_BYTES],
    first_len: u8,
}

/// How many of the peer's first bytes are kept to describe a peer that does not speak TLS.
const FIRST_BYTES: usize = 64;

impl TlsSession {
    pub(crate) fn client(
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Self, SocketError> {
        let name = server_name_for(host)?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| SocketError::Tls(TlsFailure::Configuration(e.to_string())))?;
        Ok(TlsSession {
            conn: conn.into(),
            expected_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            unconfirmed: 0,
            close_notify_received: false,
            close_notify_sent: false,
            first: [0; FIRST_BYTES],
            first_len: 0,
        })
    }

    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, SocketError> {
        let conn = rustls::ServerConnection::new(config)
            .map_err(|e| SocketError::Tls(TlsFailure::Configuration(e.to_string())))?;
        Ok(TlsSession {
            conn: conn.into(),
            expected_name: String::new(),
            unconfirmed: 0,
            close_notify_received: false,
            close_notify_sent: false,
            first: [0; FIRST_BYTES],
            first_len: 0,
        })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the peer ended the session with close_notify. A TCP end of stream without it may
    /// be a truncation by an attacker or a broken path, not the peer's end of data.
    pub(crate) fn close_notify_received(&self) -> bool {
        self.close_notify_received
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Decrypts `ciphertext`, appending plaintext to `plaintext` (on an error too: what the
    /// records before the failing one held).
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut BytesMut,
    ) -> Result<Received, SocketError> {
        let was_handshaking = self.conn.is_handshaking();
        let kept = usize::from(self.first_len);
        if kept < FIRST_BYTES && was_handshaking {
            let n = ciphertext.len().min(FIRST_BYTES - kept);
            self.first[kept..kept + n].copy_from_slice(&ciphertext[..n]);
            self.first_len += n as u8;
        }
        let mut result = Received::default();
        while !ciphertext.is_empty() {
            let taken = self.conn.read_tls(&mut ciphertext).map_err(|e| {
                SocketError::Tls(
                    self.not_tls(was_handshaking)
                        .unwrap_or_else(|| TlsFailure::PeerMisbehaved(e.to_string())),
                )
            })?;
            if taken == 0 {
                // rustls takes nothing after close_notify: what follows it means nothing, and
                // offering it again would spin forever.
                break;
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The records before the bad one were decrypted: their plaintext is the
                    // peer's data all the same, handed out before the error.
                    drain_plaintext(&mut self.conn, plaintext);
                    // close_notify that rustls refuses (it came during the handshake): the peer
                    // closed, as a close_notify it takes followed by the end of stream is
                    // reported, so both ends of a cancelled handshake see the same error.
                    if matches!(
                        e,
                        rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify)
                    ) {
                        return Err(SocketError::ClosedByPeer);
                    }
                    let failure = self
                        .not_tls(was_handshaking)
                        .unwrap_or_else(|| tls_failure(&e, &self.expected_name));
                    return Err(SocketError::Tls(failure));
                }
            };
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plaintext.len();
                plaintext.resize(start + available, 0);
                let n = read_plaintext(&mut self.conn, &mut plaintext[start..])?;
                plaintext.truncate(start + n);
            }
            if state.peer_has_closed() {
                result.peer_closed = true;
                self.close_notify_received = true;
            }
        }
        result.handshake_completed = was_handshaking && !self.conn.is_handshaking();
        Ok(result)
    }

    /// When a handshake failed on a peer that sent a line of text rather than a TLS record:
    /// for a client, the server's line (a protocol's greeting or an HTTP status line) and
    /// whether it is plain HTTP; for a server, the client's line (a plain-HTTP request).
    /// Binary garbage keeps rustls' words.
    fn not_tls(&self, handshaking: bool) -> Option<TlsFailure> {
        let first = &self.first[..usize::from(self.first_len)];
        let client = matches!(self.conn, rustls::Connection::Client(_));
        if !handshaking {
            return None;
        }
        let line = first
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(first);
        // A TLS record starts with its content type (20 to 24), which is not printable.
        let text = !line.is_empty()
            && line
                .iter()
                .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        if !text {
            return None;
        }
        let first_line = line.escape_ascii().to_string();
        Some(if !client {
            TlsFailure::NotTlsClient {
                first_line: without_query(&first_line),
            }
        } else if line.starts_with(b"HTTP/") {
            TlsFailure::PlainHttp { first_line }
        } else {
            TlsFailure::NotTls { first_line }
        })
    }

    /// Moves plaintext from `pending` into rustls and records to `stream` until one side blocks.
    pub(crate) fn flush(
        &mut self,
        pending: &mut BytesMut,
        stream: &mut impl Write,
    ) -> Result<Flushed, io::Error> {
        let mut out = Flushed::default();
        loop {
            if !pending.is_empty() && !self.conn.is_handshaking() {
                let n = self.conn.writer().write(pending)?;
                pending.advance(n);
                self.unconfirmed += n;
            }
            let mut progressed = false;
            while self.conn.wants_write() {
                match self.conn.write_tls(stream) {
                    Ok(0) => break,
                    Ok(_) => progressed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        out.blocked = true;
                        return Ok(out);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if !self.conn.wants_write() {
                out.plaintext_written += std::mem::take(&mut self.unconfirmed);
            }
            if pending.is_empty() || self.conn.is_handshaking() || !progressed {
                return Ok(out);
            }
        }
    }

    /// Queues close_notify (sent by the next flush). The peer ignores whatever is written
    /// after it, so queue it only after the last plaintext.
    pub(crate) fn send_close_notify(&mut self) {
        self.close_notify_sent = true;
        self.conn.send_close_notify();
    }

    /// Whether close_notify has been queued.
    pub(crate) fn close_notify_sent(&self) -> bool {
        self.close_notify_sent
    }

    pub(crate) fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub(crate) fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    pub(crate) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.conn.alpn_protocol().map(<[u8]>::to_vec)
    }
}

/// Appends every plaintext byte the session holds to `plaintext` (after an error: what the
/// records decrypted before it held).
fn drain_plaintext(conn: &mut rustls::Connection, plaintext: &mut BytesMut) {
    const STEP: usize = 16 * 1024;
    loop {
        let start = plaintext.len();
        plaintext.resize(start + STEP, 0);
        let n = read_plaintext(conn, &mut plaintext[start..]).unwrap_or(0);
        plaintext.truncate(start + n);
        if n < STEP {
            break;
        }
    }
}

fn read_plaintext(conn: &mut rustls::Connection, buf: &mut [u8]) -> Result<usize, SocketError> {
    let mut filled = 0;
    while filled < buf.len() {
        match conn.reader().read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(SocketError::Tls(TlsFailure::PeerMisbehaved(e.to_string()))),
        }
    }
    Ok(filled)
}

/// A request line without the query of its target (`GET /a?key=x HTTP/1.1` → `GET /a?… HTTP/1.1`):
/// credentials travel there, and the line goes into an error.
fn without_query(line: &str) -> String {
    let Some(query) = line.find('?') else {
        return line.to_string();
    };
    let rest = line[query..]
        .find(' ')
        .map_or("", |end| &line[query + end..]);
    format!("{}?…{rest}", &line[..query])
}
