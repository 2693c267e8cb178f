//! The TLS side of a [`TcpSocket`]: its session state, the handshake timer, the observer told
//! about the handshake, and handing decrypted plaintext to a data sink.

use std::rc::Weak;
use std::time::Instant;

use bytes::BytesMut;

use super::TcpSocket;
use crate::foundation::{TimerKey, deadline_after};
use crate::network::error::SocketError;
use crate::network::tls::session::TlsSession;

/// Told about the TLS handshake of a socket, before its signals (the HTTP client's connections).
pub(crate) trait TlsObserver {
    fn handshake_completed(&self);
    fn handshake_failed(&self, error: &SocketError);
}

/// A TLS connection's session and what only it needs.
pub(super) struct TlsState {
    pub(super) session: TlsSession,
    /// Plaintext decrypted for a data sink, reused across reads.
    pub(super) scratch: BytesMut,
    pub(super) handshake_timer: Option<TimerKey>,
}

impl TlsState {
    pub(super) fn new(session: TlsSession) -> Box<TlsState> {
        Box::new(TlsState {
            session,
            scratch: BytesMut::new(),
            handshake_timer: None,
        })
    }
}

impl TcpSocket {
    /// Limits the handshake starting now to the handshake timeout and to `connect_deadline`
    /// (what is left of the connect timeout), whichever ends first.
    pub(super) fn arm_handshake_timer(&self, connect_deadline: Option<Instant>) {
        let mut inner = self.inner.borrow_mut();
        let handshake_deadline = inner
            .handshake_timeout
            .map(|timeout| deadline_after(Instant::now(), timeout));
        let deadline = match (handshake_deadline, connect_deadline) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        let Some(tls) = inner.tls.as_mut() else {
            return;
        };
        tls.handshake_timer = Some(self.start_timer_at(deadline));
    }

    /// Hands plaintext decrypted into the scratch buffer to the sink (without a sink it went
    /// straight into the read buffer).
    pub(super) fn deliver_tls_plaintext(&self) {
        let Some(sink) = self.sink() else {
            return;
        };
        let mut plain = match self.inner.borrow_mut().tls.as_mut() {
            Some(tls) => std::mem::take(&mut tls.scratch),
            None => return,
        };
        sink.on_data(&plain);
        plain.clear();
        if let Some(tls) = self.inner.borrow_mut().tls.as_mut() {
            if tls.scratch.capacity() < plain.capacity() {
                tls.scratch = plain;
            }
        }
    }

    pub(super) fn on_handshake_completed(&self) {
        let observer = {
            let mut inner = self.inner.borrow_mut();
            if let Some(key) = inner.tls.as_mut().and_then(|t| t.handshake_timer.take()) {
                self.core.timer_remove(key);
            }
            inner.tls_observer.as_ref().and_then(Weak::upgrade)
        };
        log::debug!("TLS handshake completed");
        if let Some(observer) = observer {
            observer.handshake_completed();
        }
        self.emit_held(&self.handshake_completed, &());
    }
}
