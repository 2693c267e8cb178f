//! KDNetwork counterparts: sockets, TLS, name resolution, HTTP/1.1 and Server-Sent Events.

pub mod error;
pub mod http;

pub use error::{SocketError, SocketOperation, TimeoutPhase, TlsFailure};
