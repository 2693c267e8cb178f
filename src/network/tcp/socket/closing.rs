//! Closing a [`TcpSocket`]: giving back what it holds on the loop and reporting the close to
//! signals, the data sink and the TLS observer.

use std::rc::Weak;

use super::lingering::Lingering;
use super::{Inner, SocketState, TcpSocket};
use crate::foundation::LoopCore;
use crate::network::dns::DnsResolver;
use crate::network::error::SocketError;

impl TcpSocket {
    /// Closes the connection and reports: `bytes_written` still due from `write`,
    /// `handshake_error` (if `error` ends a TLS handshake), `error_occurred` (if `error`, unless
    /// a `handshake_error` slot connected again), `state_changed` (unless one of those slots
    /// connected again), `disconnected` (if `connected` was emitted), and the data sink.
    pub(super) fn close_with(&self, error: Option<SocketError>) {
        // Bytes `write` handed to the kernel are reported before the close, not after it; a
        // slot of that report may write again (reported in turn, until nothing is due).
        let connection = self.connection();
        while self.inner.borrow().unreported_written > 0 {
            self.report_unreported_written();
            // A slot connected again: the close was for the connection before.
            if self.connection() != connection {
                return;
            }
        }
        let (stream, was_state, announced, sink, handshaking, linger) = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let linger = std::mem::take(&mut inner.linger);
            if inner.state == SocketState::Unconnected && inner.stream.is_none() {
                return;
            }
            inner.release_loop_resources(&self.core);
            // A graceful close: closing the descriptor while the peer's data waits unread, or
            // before more of it arrives (a pipelined request, a TLS session ticket, data in
            // flight), would reset the connection and lose what the kernel has not sent yet,
            // so it lingers until the peer's end of stream (at once when that was read).
            let linger = linger && error.is_none();
            let handshaking = inner
                .tls
                .as_ref()
                .is_some_and(|t| t.session.is_handshaking());
            let handshaking = handshaking && error.is_some();
            inner.write_buf.clear();
            inner.close_when_flushed = false;
            inner.read_paused = false;
            inner.sink_read_holds = 0;
            if error.is_some() {
                inner.last_error = error.clone().map(Box::new);
            }
            (
                inner.stream.take(),
                std::mem::replace(&mut inner.state, SocketState::Unconnected),
                std::mem::take(&mut inner.announced),
                inner.sink.take().and_then(|w| w.upgrade()),
                handshaking,
                linger,
            )
        };
        match stream {
            Some(stream) if linger => Lingering::start(&self.core, stream),
            stream => drop(stream),
        }
        let connection = self.connection();
        if let Some(e) = &error {
            log::debug!("socket error: {e}");
            if handshaking {
                let observer = self.inner.borrow().tls_observer.clone();
                if let Some(observer) = observer.as_ref().and_then(Weak::upgrade) {
                    observer.handshake_failed(e);
                }
                self.emit_held(&self.handshake_error, e);
            }
            // A `handshake_error` slot may have connected again: this error is the old
            // connection's, already reported, and must not pass for the new one's.
            if self.connection() == connection {
                self.emit_held(&self.error_occurred, e);
            }
        }
        // An `error_occurred` slot may have connected again (a retry): the socket is no longer
        // Unconnected, and observers already heard of the new state, so this one is not reported.
        if was_state != SocketState::Unconnected && self.connection() == connection {
            self.emit_held(&self.state_changed, &SocketState::Unconnected);
        }
        if announced {
            self.emit_held(&self.disconnected, &());
        }
        if let Some(sink) = sink {
            sink.on_closed(error.as_ref());
        }
    }
}

impl Inner {
    /// Gives back everything registered with the loop: the stream's registration, connection
    /// attempts, timers and a pending name lookup. The stream itself stays (the caller drops it).
    pub(super) fn release_loop_resources(&mut self, core: &LoopCore) {
        if let (Some(stream), Some(key)) = (self.stream.as_mut(), self.key.take()) {
            core.deregister(stream, key);
        }
        if let Some(key) = self.tls.as_mut().and_then(|t| t.handshake_timer.take()) {
            core.timer_remove(key);
        }
        let Some(connecting) = self.connecting.as_deref_mut() else {
            return;
        };
        if let Some(mut race) = connecting.race.take() {
            race.close_all(core);
        }
        for key in [
            connecting.stagger_timer.take(),
            connecting.connect_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            core.timer_remove(key);
        }
        if let Some(id) = connecting.lookup.take() {
            if let Ok(resolver) = DnsResolver::instance() {
                resolver.cancel(id);
            }
        }
        // A close asked for while connecting was for this connection only.
        connecting.close_when_connected = false;
        // A TLS request made before connecting still holds for the next connect.
        if connecting.tls_pending.is_none() {
            self.connecting = None;
        }
    }
}
