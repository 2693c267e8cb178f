//! TEMPORARY stand-in for the TLS configuration module (being written separately).

use rustls::pki_types::ServerName;

use crate::network::error::{SocketError, TlsFailure};

pub(crate) fn server_name_for(host: &str) -> Result<ServerName<'static>, SocketError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| SocketError::InvalidAddress(e.to_string()))
}

pub(crate) fn tls_failure(err: &rustls::Error, _expected: &str) -> TlsFailure {
    TlsFailure::Other(err.to_string())
}

/// TEMPORARY stub.
#[derive(Debug, Clone, Default)]
pub struct TlsClientConfig {
    extra: Vec<Vec<u8>>,
}

impl TlsClientConfig {
    /// Stub.
    pub fn new() -> Self {
        TlsClientConfig::default()
    }
    /// Stub.
    pub fn add_ca_certificate(&mut self, pem: &[u8]) -> Result<(), SocketError> {
        self.extra.push(pem.to_vec());
        Ok(())
    }
    /// Stub.
    pub fn set_client_certificate(&mut self, _c: &[u8], _k: &[u8]) -> Result<(), SocketError> {
        Ok(())
    }
    /// Stub.
    pub fn dangerous_disable_certificate_verification(&mut self) {}
    /// Stub.
    pub fn build(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, SocketError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for pem in &self.extra {
            for c in CertificateDer::pem_slice_iter(pem).flatten() {
                let _ = roots.add(c);
            }
        }
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SocketError::Tls(TlsFailure::Configuration(e.to_string())))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(std::sync::Arc::new(cfg))
    }
}
