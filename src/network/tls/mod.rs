//! TLS on top of [`TcpSocket`](crate::network::TcpSocket) with rustls (ring provider):
//! [`SslSocket`] for clients, [`TlsServerConfig`] for [`TcpServer`](crate::network::TcpServer).
//!
//! ```text
//!  TCP connected ─▶ handshaking ─▶ handshake_completed ─▶ plaintext flows both ways
//!                       │ certificate / alert / garbage / timeout
//!                       └─▶ handshake_error + error_occurred(TlsFailure) ─▶ closed
//! ```

#[doc(hidden)]
#[path = "fuzz_api.rs"]
pub mod __fuzz;
pub(crate) mod config;
mod der;
mod pem;
pub(crate) mod session;
mod socket;

pub use config::{TlsClientConfig, TlsServerConfig};
pub use socket::SslSocket;
