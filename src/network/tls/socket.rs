//! [`SslSocket`]: a TLS client connection (KDNetwork `SslSocket`, on rustls).

use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::config::TlsClientConfig;
use crate::foundation::LoopError;
use crate::network::error::SocketError;
use crate::network::tcp::{SocketState, TcpSocket};

/// A TLS client socket: everything a [`TcpSocket`] does (it derefs to one), encrypted.
///
/// `connected` fires when TCP connects (as in KDNetwork);
/// [`handshake_completed`](TcpSocket::handshake_completed) when the TLS session is up (both
/// handshake signals are the [`TcpSocket`]'s, so sockets a TLS
/// [`TcpServer`](crate::network::TcpServer) accepts have them too). Writes made earlier are sent
/// once the handshake completes. Plaintext read together with the end of the handshake (a TLS
/// 1.3 server's 0.5-RTT data, a TLS 1.2 server's first records sent with its Finished) is
/// already readable in a `handshake_completed` slot and announced (`bytes_received`,
/// `ready_read`) right after it. A slot there that leaves the socket `Unconnected` (by
/// [`abort`](TcpSocket::abort), or by [`disconnect_from_host`](TcpSocket::disconnect_from_host)
/// with nothing left to send) gets no such signal for it, as a closed socket emits nothing more
/// (a server rejecting a client there is not handed its data); it stays readable
/// ([`read_all`](TcpSocket::read_all), as after `disconnected`) until the next connect. A close
/// that waits in `Closing` for queued writes still announces it.
/// Certificate problems arrive as [`handshake_error`](TcpSocket::handshake_error) and `error_occurred`
/// with a [`TlsFailure`](crate::network::TlsFailure) naming the reason. A server that refuses
/// the client certificate (none, or one it does not trust) does so in TLS 1.3 only after the
/// client's handshake completed (RFC 8446 §4.4.2.4): the client then sees `handshake_completed`
/// and, when the server's alert arrives, `error_occurred` with
/// [`TlsFailure::AlertReceived`](crate::network::TlsFailure::AlertReceived) (no
/// `handshake_error`); what it wrote never reaches the server's reader. A peer that ends the
/// stream without close_notify is reported after its last data as `error_occurred` with
/// [`TlsFailure::Truncated`](crate::network::TlsFailure::Truncated) (then `disconnected`): only a
/// close_notify proves that nothing was cut off. A
/// [`disconnect_from_host`](TcpSocket::disconnect_from_host) before the handshake completed
/// cancels it when nothing is queued, and waits for it otherwise (see there).
///
/// Trust comes from the [`TlsClientConfig`]: by default the operating system's store (falling
/// back to the Mozilla roots when it is empty); verification can only be turned off through its
/// `dangerous_…` method. SNI is sent for host names; IP literals (IPv4 also in the forms URLs
/// allow, such as `127.1`) are verified against IP SANs and sent no SNI.
pub struct SslSocket {
    socket: Rc<TcpSocket>,
    config: std::cell::RefCell<TlsClientConfig>,
    peer_verify_name: std::cell::RefCell<Option<String>>,
}

impl SslSocket {
    /// An unconnected TLS socket with the default trust settings.
    pub fn new() -> Result<Rc<SslSocket>, LoopError> {
        Self::with_config(TlsClientConfig::new())
    }

    /// An unconnected TLS socket with `config`.
    pub fn with_config(config: TlsClientConfig) -> Result<Rc<SslSocket>, LoopError> {
        let socket = TcpSocket::new()?;
        socket.set_ssl_owned();
        Ok(Rc::new(SslSocket {
            socket,
            config: std::cell::RefCell::new(config),
            peer_verify_name: std::cell::RefCell::new(None),
        }))
    }

    /// Connects to `host` and starts TLS with `host` as the name to verify (and SNI).
    pub fn connect_to_host(&self, host: &str, port: u16) -> Result<(), SocketError> {
        self.prepare_tls(Some(host))?;
        self.socket.connect_to_host(host, port)
    }

    /// Connects to an address; the name verified is the one set with
    /// [`set_peer_verify_name`](Self::set_peer_verify_name), else the IP address itself.
    pub fn connect_to_address(&self, ip: std::net::IpAddr, port: u16) -> Result<(), SocketError> {
        self.prepare_tls(Some(&ip.to_string()))?;
        self.socket.connect_to_address(ip, port)
    }

    /// Races connections to `addrs` like [`TcpSocket::connect_to_addresses`] (Happy Eyeballs),
    /// then starts TLS on the winner; the name verified is the one set with
    /// [`set_peer_verify_name`](Self::set_peer_verify_name), else the IP address of the
    /// connection that won (its [`peer_address`](TcpSocket::peer_address)): the certificate
    /// must name the address actually connected to, whichever of `addrs` that is.
    pub fn connect_to_addresses(&self, addrs: &[std::net::SocketAddr]) -> Result<(), SocketError> {
        if addrs.is_empty() {
            return Err(SocketError::InvalidAddress(
                "no address to connect to".into(),
            ));
        }
        self.prepare_tls(None)?;
        self.socket.connect_to_addresses(addrs)
    }

    /// The name to verify the certificate against (overrides the host passed to connect).
    pub fn set_peer_verify_name(&self, name: &str) {
        *self.peer_verify_name.borrow_mut() = Some(name.to_string());
    }

    /// Adds a trusted CA certificate (PEM) for the next connection.
    pub fn add_ca_certificate(&self, pem: &[u8]) -> Result<(), SocketError> {
        self.config.borrow_mut().add_ca_certificate(pem)
    }

    /// Adds a trusted CA certificate in DER (binary) for the next connection (see
    /// [`TlsClientConfig::add_ca_certificate_der`]).
    pub fn add_ca_certificate_der(&self, der: &[u8]) -> Result<(), SocketError> {
        self.config.borrow_mut().add_ca_certificate_der(der)
    }

    /// Trusts the default roots besides the added CA certificates (`true`, the default), or
    /// only the added ones from the next connection (see
    /// [`TlsClientConfig::set_trust_default_roots`]).
    pub fn set_trust_default_roots(&self, trusted: bool) {
        self.config.borrow_mut().set_trust_default_roots(trusted);
    }

    /// Whether the default roots are trusted besides the added CA certificates.
    pub fn trusts_default_roots(&self) -> bool {
        self.config.borrow().trusts_default_roots()
    }

    /// Presents a client certificate chain and key (PEM) on the next connection.
    pub fn set_client_certificate(
        &self,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<(), SocketError> {
        self.config
            .borrow_mut()
            .set_client_certificate(cert_chain_pem, key_pem)
    }

    /// Resumes TLS sessions of earlier connections (`true`, the default) or makes every
    /// handshake a full one from the next connection (see
    /// [`TlsClientConfig::set_session_resumption`]).
    pub fn set_session_resumption(&self, enabled: bool) {
        self.config.borrow_mut().set_session_resumption(enabled);
    }

    /// Accepts any certificate on the next connection. Only for tests against throw-away
    /// servers: this removes all protection against impostors.
    pub fn dangerous_disable_certificate_verification(&self) {
        self.config
            .borrow_mut()
            .dangerous_disable_certificate_verification();
    }

    /// Limits the TLS handshake (default 30 s; `None` = no limit). A connect timeout
    /// ([`TcpSocket::set_connect_timeout`]) covers the handshake as well: whichever ends first
    /// fails it.
    pub fn set_handshake_timeout(&self, timeout: Option<Duration>) {
        self.socket.set_handshake_timeout(timeout);
    }

    /// Whether the connection is up and its handshake has completed (false again once it
    /// closes).
    pub fn is_encrypted(&self) -> bool {
        self.socket.is_encrypted()
    }

    /// The peer's certificate chain (DER), leaf first.
    pub fn peer_certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.socket.peer_certificate_chain()
    }

    /// The negotiated protocol version, once encrypted.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.socket.with_tls(|t| t.protocol_version()).flatten()
    }

    /// The negotiated cipher suite, once encrypted.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.socket
            .with_tls(|t| t.cipher_suite())
            .flatten()
            .map(|s| s.suite())
    }

    /// The negotiated ALPN protocol, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.socket.alpn_protocol()
    }

    /// The underlying socket (for `connect_weak` and friends).
    pub fn tcp_socket(&self) -> &Rc<TcpSocket> {
        &self.socket
    }

    /// `host: None`: verify against the address connected to.
    fn prepare_tls(&self, host: Option<&str>) -> Result<(), SocketError> {
        // Checked here, before the TLS settings are replaced: a connect that is refused must not
        // change the name (or trust) the connection already under way verifies against.
        if self.socket.state() != SocketState::Unconnected {
            return Err(SocketError::InvalidState(
                "socket is already connected or connecting",
            ));
        }
        let config = self.config.borrow().build()?;
        let name = self.peer_verify_name.borrow().clone();
        self.socket
            .enable_client_tls_for(config, name.as_deref().or(host));
        Ok(())
    }
}

impl Deref for SslSocket {
    type Target = TcpSocket;

    fn deref(&self) -> &TcpSocket {
        &self.socket
    }
}

impl fmt::Debug for SslSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SslSocket")
            .field("socket", &self.socket)
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}
