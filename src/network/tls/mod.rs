//! TLS on top of [`TcpSocket`](crate::network::TcpSocket) with rustls (ring provider).

pub(crate) mod config;
pub(crate) mod session;
mod socket;

pub use config::TlsClientConfig;
pub use socket::SslSocket;
