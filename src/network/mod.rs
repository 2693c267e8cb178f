//! KDNetwork counterparts: sockets, TLS, name resolution, HTTP/1.1 and Server-Sent Events.
//!
//! # How a byte travels from the kernel to a slot
//!
//! 1. epoll reports the socket readable; the [`EventLoop`](crate::EventLoop) looks the handler up by
//!    generational token and calls the [`TcpSocket`].
//! 2. The socket drains the kernel into the loop's shared read buffer (until `WouldBlock` or a
//!    fairness budget), decrypting through rustls for TLS.
//! 3. Plain users get the bytes in the socket's read buffer and `bytes_received` + `ready_read`.
//!    The HTTP client instead installs a data sink: bytes go straight to the request's head parser,
//!    body decoder, content decoder and — for event streams — the [`SseParser`](sse::SseParser).
//! 4. Complete events are collected, every borrow is released, and only then are user slots
//!    (`message_received`, callbacks) called.

mod decimal;
pub mod dns;
pub mod error;
pub mod http;
pub mod sse;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use dns::{AddressFamily, DnsResolver, LookupId};
pub use error::{SocketError, SocketOperation, TimeoutPhase, TlsFailure};
pub use tcp::{ServerState, SocketState, TcpServer, TcpSocket};
pub use tls::{SslSocket, TlsClientConfig, TlsServerConfig};
pub use udp::UdpSocket;
