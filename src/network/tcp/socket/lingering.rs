//! A lingering close: after a graceful close, the peer's data still arriving is read and
//! discarded until the peer closes too (or goes quiet), as web servers do.
//!
//! Closing a descriptor while received data waits unread in the kernel, or before more of it
//! arrives, makes the kernel reset the connection, and a reset throws away whatever written data
//! it had not sent yet: the end of an answer the peer was still receiving. So a graceful close
//! hands the stream, its sending side already shut down, to a [`Lingering`] that drains it until
//! the peer's end of stream: data left unread (the application stopped reading, say an upload
//! it answers with an error) or sent later (a pipelined request, a TLS session ticket) is
//! discarded instead of answered with a reset. A peer whose end of stream was already read ends
//! it at once. The socket itself is closed (`Unconnected`, `disconnected`) as before; only the
//! descriptor stays open a while.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use mio::Interest;
use mio::net::TcpStream;

use crate::foundation::{LoopCore, Readiness, ReadyHandler, SourceKey};

/// The peer may stay quiet this long before the descriptor is closed (Apache's 2 s).
const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Longest a descriptor lingers, however much the peer sends (Apache's and nginx's 30 s).
const LINGER_MAX: Duration = Duration::from_secs(30);
/// Bytes discarded per readiness event before yielding to other sources.
const DISCARD_BUDGET_PER_TURN: usize = 1024 * 1024;

/// A gracefully closed stream whose peer's data is still read and discarded.
pub(super) struct Lingering {
    core: Weak<LoopCore>,
    stream: RefCell<Option<(TcpStream, SourceKey)>>,
    started: Instant,
    last_data: Cell<Instant>,
}

impl Lingering {
    /// Drains `stream` (its sending side shut down) until the peer closes, stays quiet for
    /// [`LINGER_IDLE`] or [`LINGER_MAX`] has passed; then the descriptor closes. If it cannot
    /// be watched, what is unread now is discarded and it closes at once.
    pub(super) fn start(core: &Rc<LoopCore>, mut stream: TcpStream) {
        let now = Instant::now();
        let lingering = Rc::new(Lingering {
            core: Rc::downgrade(core),
            stream: RefCell::new(None),
            started: now,
            last_data: Cell::new(now),
        });
        let handler: Weak<dyn ReadyHandler> = Rc::downgrade(&lingering) as Weak<dyn ReadyHandler>;
        match core.register(&mut stream, Interest::READABLE, handler) {
            Ok(key) => *lingering.stream.borrow_mut() = Some((stream, key)),
            Err(_) => {
                discard_available(&mut stream, usize::MAX);
                return;
            }
        }
        // Data may have arrived before the registration: read it now (no edge will come).
        lingering.drain();
        if lingering.stream.borrow().is_some() {
            Lingering::check_after(core, lingering, LINGER_IDLE);
        }
    }

    /// The timer keeps the lingering stream alive: it ends it once the peer has been quiet
    /// long enough (or it lingered long enough), or looks again later.
    fn check_after(core: &LoopCore, lingering: Rc<Lingering>, delay: Duration) {
        core.call_after(delay, move || {
            if lingering.stream.borrow().is_none() {
                return;
            }
            let now = Instant::now();
            let quiet = now.saturating_duration_since(lingering.last_data.get());
            let lingered = now.saturating_duration_since(lingering.started);
            if quiet >= LINGER_IDLE || lingered >= LINGER_MAX {
                lingering.finish();
            } else if let Some(core) = lingering.core.upgrade() {
                let next = (LINGER_IDLE - quiet).min(LINGER_MAX - lingered);
                Lingering::check_after(&core, lingering, next);
            }
        });
    }

    /// Reads and discards what the peer sent; ends the lingering at its end of stream or an
    /// error.
    fn drain(&self) {
        let ended = {
            let mut slot = self.stream.borrow_mut();
            let Some((stream, key)) = slot.as_mut() else {
                return;
            };
            match discard_available(stream, DISCARD_BUDGET_PER_TURN) {
                Drained::Open { read } => {
                    if read > 0 {
                        self.last_data.set(Instant::now());
                    }
                    false
                }
                Drained::Budget => {
                    self.last_data.set(Instant::now());
                    // Edge-triggered: ask to be told again for the rest.
                    if let Some(core) = self.core.upgrade() {
                        let _ = core.reregister(stream, *key, Interest::READABLE);
                    }
                    false
                }
                Drained::Ended => true,
            }
        };
        if ended {
            self.finish();
        }
    }

    /// Closes the descriptor (after discarding what is unread, so the close is not a reset).
    fn finish(&self) {
        let Some((mut stream, key)) = self.stream.borrow_mut().take() else {
            return;
        };
        if let Some(core) = self.core.upgrade() {
            core.deregister(&mut stream, key);
        }
        discard_available(&mut stream, DISCARD_BUDGET_PER_TURN);
    }
}

impl ReadyHandler for Lingering {
    fn on_ready(&self, _readiness: Readiness) {
        self.drain();
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some((stream, key)), Some(core)) = (self.stream.get_mut(), self.core.upgrade()) {
            core.deregister(stream, *key);
        }
    }
}

/// How [`discard_available`] ended.
enum Drained {
    /// Nothing more to read for now (`read` bytes discarded).
    Open { read: usize },
    /// The budget ran out with data left.
    Budget,
    /// The peer's end of stream, or an error: nothing more will come.
    Ended,
}

/// Reads and drops up to `budget` bytes of what `stream` holds.
fn discard_available(stream: &mut TcpStream, budget: usize) -> Drained {
    let mut buf = [0; 16 * 1024];
    let mut read = 0usize;
    loop {
        if read >= budget {
            return Drained::Budget;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Drained::Ended,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Open { read },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Drained::Ended,
        }
    }
}
