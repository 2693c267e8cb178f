//! TCP: [`TcpSocket`] and [`TcpServer`].

mod connect;
mod server;
mod socket;

pub use connect::CONNECTION_ATTEMPT_DELAY;
pub use server::{DEFAULT_BACKLOG, ServerState, TcpServer};
pub use socket::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_READ_BUFFER_LIMIT, SocketState, TcpSocket};
pub(crate) use socket::{DataSink, TlsObserver};
