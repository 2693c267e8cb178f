//! KDNetwork counterparts: sockets, TLS, name resolution, HTTP/1.1 and Server-Sent Events.

pub mod dns;
pub mod error;
pub mod http;
pub mod sse;
pub mod tcp;
pub mod tls;

pub use dns::DnsResolver;
pub use error::{SocketError, SocketOperation, TimeoutPhase, TlsFailure};
pub use tcp::{ServerState, SocketState, TcpServer, TcpSocket};
pub use tls::{SslSocket, TlsClientConfig};
