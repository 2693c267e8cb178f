//! What the socket model tests record of a kdnet socket's signals, one entry per emission.

use kdnet::network::SocketError;
use kdnet::network::SocketState;

/// One signal emission of a `TcpSocket` (or `SslSocket`), in the order they came.
#[derive(Debug, Clone)]
pub enum SocketEvent {
    /// `state_changed`.
    State(SocketState),
    /// `connected`.
    Connected,
    /// `bytes_written`.
    Written(usize),
    /// `bytes_received`.
    Received(usize),
    /// `ready_read`.
    ReadyRead,
    /// `error_occurred`.
    Error(SocketError),
    /// `disconnected`.
    Disconnected,
    /// `handshake_completed`.
    Handshake,
    /// `handshake_error`.
    HandshakeError(SocketError),
    /// The test dropped the last handle here.
    Dropped,
}

/// Errors compare by their description (`SocketError` has no `PartialEq`).
impl PartialEq for SocketEvent {
    fn eq(&self, other: &SocketEvent) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}
