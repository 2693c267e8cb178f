//! The write path of a [`TcpSocket`]: flushing queued bytes to the kernel (through TLS when on),
//! reporting written bytes, and closing once a graceful disconnect has flushed.

use std::io::{self, Write};
use std::net::Shutdown;
use std::rc::Weak;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;

use super::{SocketState, TcpSocket};
use crate::network::error::{SocketError, SocketOperation};
use crate::network::tls::session::Flushed;

impl TcpSocket {
    /// Whether anyone hears about the bytes `write` hands to the kernel now (a `bytes_written`
    /// slot, or the data sink if it counts them: the HTTP client does only for a request body).
    pub(super) fn reports_written(&self) -> bool {
        self.bytes_written.connection_count() > 0
            || (self.inner.borrow().sink.as_ref())
                .and_then(Weak::upgrade)
                .is_some_and(|sink| sink.counts_written())
    }

    /// Reports `n` bytes taken by the kernel inside `write` from a later turn (never from inside
    /// the call), adding them to a report already due; a close before then reports them first.
    pub(super) fn report_written_later(&self, n: usize) {
        let first = {
            let mut inner = self.inner.borrow_mut();
            let first = inner.unreported_written == 0;
            inner.unreported_written += n;
            first
        };
        if first {
            self.post_call(|s| {
                s.report_unreported_written();
                // A graceful close that waited for this report (see `flush`) ends now.
                if s.inner.borrow().close_when_flushed {
                    s.flush();
                }
            });
        }
    }

    /// Emits the report [`report_written_later`](Self::report_written_later) left due, if any.
    pub(super) fn report_unreported_written(&self) {
        let n = std::mem::take(&mut self.inner.borrow_mut().unreported_written);
        if n > 0 {
            self.report_written(n);
        }
    }

    pub(super) fn report_written(&self, n: usize) {
        self.emit_held(&self.bytes_written, &n);
        if let Some(sink) = self.sink() {
            sink.on_written(n);
        }
    }

    /// Offers `data` to the kernel straight from the caller's buffer (plain TCP, nothing queued)
    /// and queues what it does not take; returns `(written, blocked)`.
    pub(super) fn write_to_kernel(&self, data: &[u8]) -> Result<(usize, bool), SocketError> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        debug_assert!(inner.tls.is_none() && inner.write_buf.is_empty());
        let Some(stream) = inner.stream.as_mut() else {
            inner.write_buf.extend_from_slice(data);
            return Ok((0, false));
        };
        let result = write_slice(data, stream);
        if let Ok((written, _)) = result {
            inner.write_buf.extend_from_slice(&data[written..]);
        }
        result.map_err(|e| SocketError::io(SocketOperation::Write, e))
    }

    /// Offers queued bytes to the kernel; returns `(plaintext written, blocked)`.
    pub(super) fn flush_to_kernel(&self) -> Result<(usize, bool), SocketError> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(stream) = inner.stream.as_mut() else {
            return Ok((0, false));
        };
        let result = match inner.tls.as_mut() {
            Some(tls) => {
                let mut result = tls.session.flush(&mut inner.write_buf, stream);
                // Closing: close_notify goes after the last queued byte (the peer ignores
                // anything after it), so only once the queue is all in the session.
                if inner.close_when_flushed
                    && inner.write_buf.is_empty()
                    && !tls.session.close_notify_sent()
                {
                    if let Ok(first) = result {
                        tls.session.send_close_notify();
                        result =
                            tls.session
                                .flush(&mut inner.write_buf, stream)
                                .map(|then| Flushed {
                                    plaintext_written: first.plaintext_written
                                        + then.plaintext_written,
                                    blocked: then.blocked,
                                });
                    }
                }
                result.map(|f| (f.plaintext_written, f.blocked))
            }
            None => write_plain(&mut inner.write_buf, stream),
        };
        if inner.write_buf.is_empty() {
            // All sent: an idle connection (a long stream after its request) keeps no buffer.
            // (Not `capacity() > 0`: a buffer advanced to its end reports 0 yet holds its block.)
            inner.write_buf = BytesMut::new();
        }
        result.map_err(|e| SocketError::io(SocketOperation::Write, e))
    }

    pub(super) fn flush(&self) {
        // Nothing queued, plain TCP, not closing: the usual case, since the kernel reports a
        // connected socket writable along with every read. Nothing to write, report or finish
        // (what `flush_to_kernel` and the close check below would conclude), so no more of the
        // socket's state is touched for it.
        if self.nothing_to_flush() {
            return;
        }
        match self.flush_to_kernel() {
            Ok((written, blocked)) => {
                if written > 0 {
                    self.report_written(written);
                }
                // Not while a report of bytes `write` handed over is due: the close would emit
                // it from inside this call, which may run in a `bytes_written` slot (a last
                // chunk written and closed there), and a nested emit skips the running slot, so
                // it would never hear of them. The posted report ends the close instead.
                let finish = {
                    let inner = self.inner.borrow();
                    !blocked
                        && inner.close_when_flushed
                        && inner.write_buf.is_empty()
                        && inner.unreported_written == 0
                        && inner.tls.as_ref().is_none_or(|t| !t.session.wants_write())
                };
                if finish {
                    {
                        let mut inner = self.inner.borrow_mut();
                        if let Some(stream) = inner.stream.as_ref() {
                            let _ = stream.shutdown(Shutdown::Write);
                        }
                        inner.linger = true;
                    }
                    self.close_with(None);
                }
            }
            Err(e) => self.fail_write(e),
        }
    }

    /// Whether a [`flush`](Self::flush) has nothing to do: no queued bytes, no TLS session
    /// (which may hold records of its own), no graceful close waiting for the queue to empty.
    #[inline]
    fn nothing_to_flush(&self) -> bool {
        let inner = self.inner.borrow();
        inner.write_buf.is_empty() && inner.tls.is_none() && !inner.close_when_flushed
    }

    /// A write failed (typically: the peer reset the connection). What the peer sent before
    /// that (an early answer, then the reset) is still read and delivered first; then the socket
    /// closes with `error` (the read after it may see only an end of stream: the reset was
    /// reported to the write), or with the TLS failure that read ended in: a TLS 1.3 server
    /// refusing the client certificate sends its alert, then resets, and the alert is the reason
    /// a user needs, not the write's broken pipe.
    pub(super) fn fail_write(&self, error: SocketError) {
        let connection = self.connection();
        let error = match self.read_available(true).end {
            Some(Err(tls @ SocketError::Tls(_))) => tls,
            _ => error,
        };
        // A slot may have closed the socket, or connected it anew, meanwhile.
        if self.connection() == connection && self.state() != SocketState::Unconnected {
            self.close_with(Some(error));
        }
    }
}

fn write_plain(buf: &mut BytesMut, stream: &mut TcpStream) -> io::Result<(usize, bool)> {
    let result = write_slice(buf, stream);
    if let Ok((written, _)) = result {
        buf.advance(written);
    }
    result
}

/// Writes as much of `data` as the kernel takes: `(bytes written, blocked)`.
fn write_slice(data: &[u8], stream: &mut TcpStream) -> io::Result<(usize, bool)> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((written, false))
}
