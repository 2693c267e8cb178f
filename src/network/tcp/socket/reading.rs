//! The read path of a [`TcpSocket`]: draining the kernel into the read buffer or a data sink,
//! the read budget per turn, and pausing at the read buffer limit (flow control).

use std::io::{self, Read};
use std::rc::{Rc, Weak};

use bytes::BytesMut;
use mio::Interest;

use super::{SocketState, TcpSocket};
use crate::network::error::{SocketError, SocketOperation, TlsFailure};

/// Bytes read from the kernel per `read` call (the loop's shared buffer).
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one socket may read per readiness event before yielding to other sources.
const READ_BUDGET_PER_TURN: usize = 1024 * 1024;

/// Receives the bytes of a socket directly (internal users such as the HTTP client).
pub(crate) trait DataSink {
    /// Plaintext as it arrives; the slice is only valid during the call.
    fn on_data(&self, data: &[u8]);
    /// This many bytes were handed to the kernel (as `bytes_written` reports them). A method
    /// rather than a `bytes_written` connection: a signal with a slot costs every connection
    /// three allocations.
    fn on_written(&self, n: usize);
    /// Whether bytes that `write` hands to the kernel now should reach
    /// [`on_written`](Self::on_written): when neither the sink nor a `bytes_written` slot wants
    /// them, `write` posts no report (a report costs a posted box and a turn's work). Asked at
    /// each `write`; reports from the writability flush are always made.
    fn counts_written(&self) -> bool;
    /// The connection is up (a TLS handshake may still be running); called before the first
    /// flush, so what the sink writes now goes out with it.
    fn on_connected(&self);
    /// The peer closed (`None`) or the connection failed. Not called for `abort()`.
    fn on_closed(&self, error: Option<&SocketError>);
}

/// How a [`TcpSocket::read_available`] ended.
pub(super) struct Drained {
    /// The connection is TLS (records may wait to be sent).
    used_tls: bool,
    /// The read budget ran out with data left (re-arm).
    exhausted: bool,
    /// The peer's end of stream (`Ok`) or a read error; `None` while the connection is open.
    pub(super) end: Option<Result<(), SocketError>>,
}

/// What one read step produced, so signals are emitted after the borrow is released.
enum ReadStep {
    Plain(usize),
    Tls {
        added: usize,
        completed: bool,
        peer_closed: bool,
        /// The session failed after decrypting `added` bytes.
        failed: Option<SocketError>,
    },
    Eof,
    Failed(SocketError),
    Paused,
    Exhausted,
    Done,
}

impl TcpSocket {
    fn drain_reads(&self) {
        self.drain_reads_until(true);
    }

    /// `until_would_block == false`: a short plain read (fewer bytes than the buffer) is taken as
    /// "drained" (edge-triggered: more data raises a new edge), saving the `EAGAIN` read.
    pub(super) fn drain_reads_until(&self, until_would_block: bool) {
        let connection = self.connection();
        let drained = self.read_available(until_would_block);
        // A slot may have aborted and connected again: what was read belongs to the old connection
        // (its end of stream must not close the new one).
        if self.connection() != connection {
            return;
        }
        if drained.used_tls {
            // The handshake (or a key update) may have produced records to send.
            self.flush();
            // A slot of that flush (`bytes_written` of writes queued for the handshake) may
            // have aborted and connected again: the end of stream read is the old connection's.
            if self.connection() != connection {
                return;
            }
        }
        match drained.end {
            Some(Ok(())) => self.on_peer_closed(),
            Some(Err(e)) => self.close_with(Some(e)),
            None if drained.exhausted => self.rearm(),
            None => {}
        }
    }

    /// Reads what the kernel holds (up to the budget) and delivers it: the sink, or the read
    /// buffer and `bytes_received` + `ready_read`. How the reading ended is left to the caller.
    pub(super) fn read_available(&self, until_would_block: bool) -> Drained {
        let connection = self.connection();
        let mut buf = self.core.take_read_buffer();
        if buf.len() < READ_CHUNK {
            // Zeroed allocation rather than `resize`: fresh zero pages need not be written, so
            // the loop's one buffer costs resident memory only for what reads actually fill.
            buf = vec![0; READ_CHUNK];
        }
        let mut budget = READ_BUDGET_PER_TURN;
        let mut received = 0usize;
        let mut used_tls = false;
        let mut end: Option<Result<(), SocketError>> = None;
        let mut exhausted = false;
        loop {
            let step = self.read_step(&mut buf, &mut budget);
            match step {
                ReadStep::Plain(n) => {
                    received += n;
                    match self.sink() {
                        Some(sink) => sink.on_data(&buf[..n]),
                        None => self
                            .inner
                            .borrow_mut()
                            .read_buf
                            .extend_from_slice(&buf[..n]),
                    }
                    if !until_would_block && n < buf.len() {
                        break;
                    }
                }
                ReadStep::Tls {
                    added,
                    completed,
                    peer_closed,
                    failed,
                } => {
                    used_tls = true;
                    received += added;
                    if added > 0 {
                        self.deliver_tls_plaintext();
                    }
                    if completed {
                        self.on_handshake_completed();
                    }
                    if let Some(e) = failed {
                        end = Some(Err(e));
                        break;
                    }
                    if peer_closed {
                        end = Some(Ok(()));
                        break;
                    }
                }
                ReadStep::Eof => {
                    end = Some(Ok(()));
                    break;
                }
                ReadStep::Failed(e) => {
                    end = Some(Err(e));
                    break;
                }
                ReadStep::Exhausted => {
                    exhausted = true;
                    break;
                }
                ReadStep::Paused | ReadStep::Done => break,
            }
        }
        self.core.return_read_buffer(buf);
        // Not for a socket a `handshake_completed` slot aborted (or closed and connected anew)
        // meanwhile: a server rejecting a client there is not handed the client's data.
        let announce = received > 0 && {
            let inner = self.inner.borrow();
            inner.sink.is_none()
                && inner.connection == connection
                && inner.state != SocketState::Unconnected
        };
        if announce {
            self.emit_held(&self.bytes_received, &received);
            // Unless a `bytes_received` slot closed the socket (or connected it anew).
            let still_open = {
                let inner = self.inner.borrow();
                inner.connection == connection && inner.state != SocketState::Unconnected
            };
            if still_open {
                self.emit_held(&self.ready_read, &());
            }
        }
        Drained {
            used_tls,
            exhausted,
            end,
        }
    }

    /// One `read` from the kernel (plus TLS decryption), under a short borrow.
    fn read_step(&self, buf: &mut [u8], budget: &mut usize) -> ReadStep {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let buffer_full = inner.sink.is_none()
            && inner.read_limit > 0
            && inner.read_buf.len() >= inner.read_limit;
        if buffer_full || inner.sink_read_holds > 0 {
            inner.read_paused = true;
            return ReadStep::Paused;
        }
        if *budget == 0 {
            return ReadStep::Exhausted;
        }
        let Some(stream) = inner.stream.as_mut() else {
            return ReadStep::Done;
        };
        let n = loop {
            match stream.read(buf) {
                Ok(0) => return ReadStep::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStep::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadStep::Failed(SocketError::io(SocketOperation::Read, e)),
            }
        };
        *budget = budget.saturating_sub(n);
        let Some(tls) = inner.tls.as_deref_mut() else {
            return ReadStep::Plain(n);
        };
        let target = if inner.sink.is_some() {
            &mut tls.scratch
        } else {
            &mut inner.read_buf
        };
        let before = target.len();
        let was_handshaking = tls.session.is_handshaking();
        let received = tls.session.receive(&buf[..n], target);
        let after = if inner.sink.is_some() {
            tls.scratch.len()
        } else {
            inner.read_buf.len()
        };
        let added = after - before;
        match received {
            Ok(r) => ReadStep::Tls {
                added,
                completed: r.handshake_completed,
                peer_closed: r.peer_closed,
                failed: None,
            },
            Err(e) => {
                // Best effort: let rustls send its alert before we close.
                if let Some(stream) = inner.stream.as_mut() {
                    let mut nothing = BytesMut::new();
                    let _ = tls.session.flush(&mut nothing, stream);
                }
                // What the records before the failing one held is delivered, then the error.
                ReadStep::Tls {
                    added,
                    completed: was_handshaking && !tls.session.is_handshaking(),
                    peer_closed: false,
                    failed: Some(e),
                }
            }
        }
    }

    pub(super) fn sink(&self) -> Option<Rc<dyn DataSink>> {
        self.inner.borrow().sink.as_ref().and_then(Weak::upgrade)
    }

    /// Stops (`true`) or lets resume (`false`) reading for the data sink: the HTTP client holds
    /// a connection back while user code its bytes run waits in a nested loop, since whatever
    /// it read meanwhile would have to wait in memory for that code to return. Holds nest (each
    /// `true` is undone by one `false`); reading resumes on a later turn once none is left (no
    /// new edge comes for data already waiting).
    pub(crate) fn hold_sink_reads(&self, held: bool) {
        let released = {
            let mut inner = self.inner.borrow_mut();
            if held {
                inner.sink_read_holds += 1;
                false
            } else {
                inner.sink_read_holds = inner.sink_read_holds.saturating_sub(1);
                inner.sink_read_holds == 0
            }
        };
        if released {
            self.resume_reading_if_paused();
        }
    }

    pub(super) fn resume_reading_if_paused(&self) {
        let resume = {
            let mut inner = self.inner.borrow_mut();
            let below = inner.read_limit == 0 || inner.read_buf.len() < inner.read_limit;
            if inner.read_paused && below && inner.sink_read_holds == 0 {
                inner.read_paused = false;
                true
            } else {
                false
            }
        };
        if resume {
            // Edge-triggered: no new edge will come for data already waiting, so read on a later turn.
            self.post_call(|s| s.drain_reads());
        }
    }

    /// Re-arms the registration so the kernel reports the socket again on the next poll.
    fn rearm(&self) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let (Some(stream), Some(key)) = (inner.stream.as_mut(), inner.key) {
            if let Err(e) =
                self.core
                    .reregister(stream, key, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("re-arming socket: {e}");
            }
        }
    }

    fn on_peer_closed(&self) {
        log::debug!("peer closed the connection");
        let (handshaking, truncated) = {
            let inner = self.inner.borrow();
            match inner.tls.as_ref() {
                Some(t) => (
                    t.session.is_handshaking(),
                    // The end of a TLS stream is close_notify; a bare TCP end may be a cut. Not
                    // while closing (we ended the session), and not for a data sink (the HTTP
                    // client judges by its message framing, see `closed_without_close_notify`).
                    !t.session.close_notify_received()
                        && !inner.close_when_flushed
                        && inner.sink.is_none(),
                ),
                None => (false, false),
            }
        };
        if handshaking {
            self.close_with(Some(SocketError::ClosedByPeer));
            return;
        }
        if truncated {
            self.close_with(Some(SocketError::Tls(TlsFailure::Truncated)));
            return;
        }
        // A peer that shut down only its sending side still reads (a request followed by a
        // half-close waits for its answer): bytes still queued are flushed, then the socket
        // closes; a peer that closed entirely makes the flush fail, which reports the loss.
        // A TLS peer's close_notify is answered with ours, after what is queued (RFC 8446
        // §6.1: each side sends one before closing its writing side; a half-closed TLS 1.3
        // client waiting for its answer takes a bare end of stream for a truncation).
        // The HTTP client (a data sink) is done with a connection its server closed.
        // What `write` handed to the kernel is reported first: a slot of that report may write
        // more, which is flushed too (the close would report it, but drop what the kernel did
        // not take).
        let connection = self.connection();
        while self.inner.borrow().unreported_written > 0 {
            self.report_unreported_written();
            if self.connection() != connection || self.state() == SocketState::Unconnected {
                return;
            }
        }
        let (queued, closing, has_sink, owes_close_notify) = {
            let inner = self.inner.borrow();
            let queued = !inner.write_buf.is_empty()
                || inner.tls.as_ref().is_some_and(|t| t.session.wants_write());
            let owes_close_notify = inner
                .tls
                .as_ref()
                .is_some_and(|t| !t.session.close_notify_sent());
            (
                queued,
                inner.close_when_flushed,
                inner.sink.is_some(),
                owes_close_notify,
            )
        };
        match (queued || owes_close_notify, closing) {
            (true, true) if queued => {}
            (true, false) if !has_sink && self.state() == SocketState::Connected => {
                self.close_gracefully();
            }
            _ => self.close_with(None),
        }
    }
}
