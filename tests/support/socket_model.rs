//! What the byte-stream socket models (`tcp_socket_model.rs`, `tls_socket_model.rs`) share: the
//! recording slots with the invariants every emission must meet, the scripted writes, and the
//! checks of a recorded signal sequence that hold for any connection.

use std::cell::RefCell;
use std::rc::Rc;

use kdnet::network::{SocketError, SocketState, SslSocket, TcpSocket};

use super::socket_events::SocketEvent as Ev;

/// A socket the models watch: a [`TcpSocket`] or an [`SslSocket`] (whose signals are its
/// `TcpSocket`'s).
pub trait Watched: 'static {
    /// The socket whose signals and state are watched.
    fn tcp(&self) -> &TcpSocket;
    /// Whether the connection is TLS and encrypted.
    fn encrypted(&self) -> bool {
        self.tcp().is_encrypted()
    }
}

impl Watched for TcpSocket {
    fn tcp(&self) -> &TcpSocket {
        self
    }
}

impl Watched for SslSocket {
    fn tcp(&self) -> &TcpSocket {
        self
    }
}

/// The parts of a model's state the recording slots fill in (borrowed from the model).
pub struct Log<'a> {
    /// Every emission, in order.
    pub events: &'a mut Vec<Ev>,
    /// Invariants broken inside slots (reported after the run).
    pub violations: &'a mut Vec<String>,
    /// What `read_all` returned in `ready_read` and `disconnected`.
    pub received: &'a mut Vec<u8>,
    /// The sum of `bytes_written`.
    pub written: &'a mut usize,
    /// The test dropped the last handle: nothing may be emitted any more.
    pub dropped: bool,
}

/// A model with a recording.
pub trait Logged: Sized + 'static {
    /// The model's recording.
    fn log(&mut self) -> Log<'_>;
}

/// Implements [`Logged`] for a model struct with the fields `events`, `violations`,
/// `received` and `written`, and `dropped` when named: `logged!(Model)`, `logged!(Model,
/// dropped)`.
#[macro_export]
macro_rules! logged {
    ($model:ty) => {
        $crate::logged!($model, |_m| false);
    };
    ($model:ty, dropped) => {
        $crate::logged!($model, |m| m.dropped);
    };
    ($model:ty, |$m:ident| $dropped:expr) => {
        impl $crate::support::socket_model::Logged for $model {
            fn log(&mut self) -> $crate::support::socket_model::Log<'_> {
                let $m = &*self;
                let dropped = $dropped;
                $crate::support::socket_model::Log {
                    events: &mut self.events,
                    violations: &mut self.violations,
                    received: &mut self.received,
                    written: &mut self.written,
                    dropped,
                }
            }
        }
    };
}

/// A model driving a socket: the scripted actions its recording slots take (each hook runs
/// after the emission was recorded and checked).
pub trait SocketModel<S: Watched>: Logged {
    /// After `connected`.
    fn connected(_model: &Rc<RefCell<Self>>, _socket: &Rc<S>) {}
    /// After `handshake_completed`.
    fn handshake_completed(_model: &Rc<RefCell<Self>>, _socket: &Rc<S>) {}
    /// After `bytes_written`.
    fn bytes_written(_model: &Rc<RefCell<Self>>, _socket: &Rc<S>) {}
    /// After `ready_read` (its data is in `received` already).
    fn ready_read(_model: &Rc<RefCell<Self>>, _socket: &Rc<S>) {}
    /// After `error_occurred`.
    fn error_occurred(_model: &Rc<RefCell<Self>>, _socket: &Rc<S>) {}
}

/// Records an emission (a violation if the last handle was dropped before it).
pub fn record<M: Logged>(model: &Rc<RefCell<M>>, ev: Ev) {
    let mut m = model.borrow_mut();
    let log = m.log();
    if log.dropped {
        log.violations
            .push(format!("{ev:?} emitted after the last handle was dropped"));
    }
    log.events.push(ev);
}

/// Notes a violation unless `ok`.
pub fn check<M: Logged>(model: &Rc<RefCell<M>>, ok: bool, what: impl FnOnce() -> String) {
    if !ok {
        model.borrow_mut().log().violations.push(what());
    }
}

/// Connects the recording slots to `socket`: each emission is recorded and checked against
/// what holds whenever it comes, then the model's hook runs. Checked: `state_changed(s)` while
/// `state()` is `s`; `handshake_completed` while encrypted, `handshake_error` while not;
/// `ready_read`'s `read_all` leaves nothing; `error_occurred` while `Unconnected`, with
/// `last_error()` the same error; `disconnected` while `Unconnected`, not encrypted, nothing
/// left to write. What `read_all` returns in `ready_read` and `disconnected` (what arrived
/// stays readable after the close) goes to `received`.
pub fn watch<S: Watched, M: SocketModel<S>>(model: &Rc<RefCell<M>>, socket: &Rc<S>) {
    macro_rules! slot {
        ($signal:ident, |$m:ident, $s:ident, $v:ident| $body:block) => {{
            let $m = model.clone();
            let weak = Rc::downgrade(socket);
            socket
                .tcp()
                .$signal
                .connect(move |$v| {
                    let Some($s) = weak.upgrade() else { return };
                    $body
                })
                .release();
        }};
    }
    slot!(state_changed, |m, s, state| {
        record(&m, Ev::State(*state));
        let now = s.tcp().state();
        check(&m, now == *state, || {
            format!("state_changed({state:?}) while state() is {now:?}")
        });
    });
    slot!(connected, |m, s, _v| {
        record(&m, Ev::Connected);
        M::connected(&m, &s);
    });
    slot!(handshake_completed, |m, s, _v| {
        record(&m, Ev::Handshake);
        check(&m, s.encrypted(), || {
            "handshake_completed, not encrypted".into()
        });
        M::handshake_completed(&m, &s);
    });
    slot!(handshake_error, |m, s, e| {
        record(&m, Ev::HandshakeError(e.clone()));
        check(&m, !s.encrypted(), || {
            "handshake_error while encrypted".into()
        });
    });
    slot!(bytes_written, |m, s, n| {
        record(&m, Ev::Written(*n));
        *m.borrow_mut().log().written += *n;
        M::bytes_written(&m, &s);
    });
    slot!(bytes_received, |m, _s, n| {
        record(&m, Ev::Received(*n));
    });
    slot!(ready_read, |m, s, _v| {
        record(&m, Ev::ReadyRead);
        let data = s.tcp().read_all();
        let left = s.tcp().bytes_available();
        check(&m, left == 0, || format!("read_all left {left} B"));
        m.borrow_mut().log().received.extend_from_slice(&data);
        M::ready_read(&m, &s);
    });
    slot!(error_occurred, |m, s, e| {
        record(&m, Ev::Error(e.clone()));
        let now = s.tcp().state();
        check(&m, now == SocketState::Unconnected, || {
            format!("error_occurred while {now:?}")
        });
        let last = s.tcp().last_error();
        let same = last.as_ref().map(|l| format!("{l:?}")) == Some(format!("{e:?}"));
        check(&m, same, || {
            format!("error_occurred({e:?}) but last_error() is {last:?}")
        });
        M::error_occurred(&m, &s);
    });
    slot!(disconnected, |m, s, _v| {
        record(&m, Ev::Disconnected);
        let now = s.tcp().state();
        check(
            &m,
            now == SocketState::Unconnected && !s.encrypted(),
            || format!("disconnected while {now:?}, encrypted {}", s.encrypted()),
        );
        let queued = s.tcp().bytes_to_write();
        check(&m, queued == 0, || {
            format!("disconnected with {queued} B to write")
        });
        let data = s.tcp().read_all();
        m.borrow_mut().log().received.extend_from_slice(&data);
    });
}

/// A script of writes (`plan`: each write's size and the moment it is to be made) over one
/// payload, and what the socket accepted of it.
pub struct Writes<W> {
    /// Each write's size and when it is made.
    pub plan: Vec<(usize, W)>,
    /// The bytes written, all writes after each other.
    pub payload: Vec<u8>,
    /// Offset of each write in `payload`.
    pub offsets: Vec<usize>,
    /// The next write to make.
    pub next: usize,
    /// What the socket accepted, in order.
    pub accepted: Vec<u8>,
    /// Loop turns since the last write was made (a moment that does not come is replaced by a
    /// write from outside).
    pub idle_turns: u32,
}

impl<W: Copy + PartialEq> Writes<W> {
    /// The script for `plan`, the payload being `super::pattern(total, seed)`.
    pub fn new(plan: Vec<(usize, W)>, seed: u64) -> Writes<W> {
        let sizes: Vec<usize> = plan.iter().map(|w| w.0).collect();
        let payload = super::pattern(sizes.iter().sum(), seed);
        Writes {
            plan,
            payload,
            offsets: offsets_of(&sizes),
            next: 0,
            accepted: Vec::new(),
            idle_turns: 0,
        }
    }

    /// Whether every write was made.
    pub fn all_issued(&self) -> bool {
        self.next == self.plan.len()
    }

    /// The next write's bytes if it is to be made from `from` (`None`: from outside, whatever
    /// its moment, as a fallback); counted as made.
    pub fn take(&mut self, from: Option<W>) -> Option<Vec<u8>> {
        let &(size, when) = self.plan.get(self.next)?;
        if from.is_some_and(|f| f != when) {
            return None;
        }
        let offset = self.offsets[self.next];
        self.next += 1;
        self.idle_turns = 0;
        Some(self.payload[offset..offset + size].to_vec())
    }

    /// Judges the result of writing `data` while the socket was in `state`: accepted in full
    /// while open (kept), refused with `InvalidState` once closing or closed (`Ok(true)`), or a
    /// violation (`Err`).
    pub fn settle(
        &mut self,
        data: &[u8],
        state: SocketState,
        result: &Result<usize, SocketError>,
    ) -> Result<bool, String> {
        let open = matches!(
            state,
            SocketState::HostLookup | SocketState::Connecting | SocketState::Connected
        );
        match (result, open) {
            (Ok(n), true) if *n == data.len() => {
                self.accepted.extend_from_slice(data);
                Ok(false)
            }
            (Err(SocketError::InvalidState(_)), false) => Ok(true),
            (r, _) => Err(format!(
                "write of {} B while {state:?} returned {r:?}",
                data.len()
            )),
        }
    }
}

/// Where each of writes of `sizes` starts when they follow each other.
pub fn offsets_of(sizes: &[usize]) -> Vec<usize> {
    sizes
        .iter()
        .scan(0, |at, s| {
            let o = *at;
            *at += s;
            Some(o)
        })
        .collect()
}

/// Whether the `state_changed` emissions in `events`, from `start`, follow the socket's state
/// diagram (an error says which step does not).
pub fn state_path(events: &[Ev], start: SocketState) -> Result<(), String> {
    let mut prev = start;
    for s in events.iter().filter_map(|e| match e {
        Ev::State(s) => Some(*s),
        _ => None,
    }) {
        let allowed = matches!(
            (prev, s),
            (SocketState::Unconnected, SocketState::Connecting)
                | (SocketState::Connecting, SocketState::Connected)
                | (SocketState::Connected, SocketState::Closing)
                | (SocketState::Connected, SocketState::Unconnected)
                | (SocketState::Closing, SocketState::Unconnected)
                | (SocketState::Connecting, SocketState::Unconnected)
        );
        if !allowed {
            return Err(format!("state {prev:?} -> {s:?}"));
        }
        prev = s;
    }
    Ok(())
}

/// Whether each `handshake_error` in `events` is followed at once by `error_occurred` with the
/// same error.
pub fn handshake_errors_reported(events: &[Ev]) -> Result<(), String> {
    for (h, ev) in events.iter().enumerate() {
        if let Ev::HandshakeError(he) = ev {
            if events.get(h + 1) != Some(&Ev::Error(he.clone())) {
                return Err(format!(
                    "handshake_error({he:?}) not followed by its error_occurred"
                ));
            }
        }
    }
    Ok(())
}

/// A byte-stream model's proptest configuration: [`super::model::config`] with the shrinking
/// limits these (slow, loopback) cases need.
pub fn config(default: u32, max_shrink_iters: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        max_shrink_iters,
        max_shrink_time: 120_000,
        ..super::model::config(default)
    }
}
