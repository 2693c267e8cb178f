//! What the loop calls a [`TcpSocket`] back with: readiness of its stream, and its one-shot
//! timers (connection attempt stagger, connect timeout, TLS handshake timeout).

use std::rc::Weak;
use std::time::{Duration, Instant};

use super::{SocketState, TcpSocket};
use crate::bindings::Signal;
use crate::foundation::{
    Readiness, ReadyHandler, TimerHandler, TimerKey, TimerTarget, deadline_after,
};
use crate::network::error::{SocketError, TimeoutPhase};

impl TcpSocket {
    /// A one-shot timer that calls back this socket's [`TimerHandler::fire`], which tells the
    /// socket's timers apart by key. Not `call_after`: that costs every connecting socket a
    /// closure and a handler allocation besides the timer slot.
    pub(super) fn start_timer(&self, delay: Duration) -> TimerKey {
        self.start_timer_at(deadline_after(Instant::now(), delay))
    }

    /// [`start_timer`](Self::start_timer) firing at `deadline`.
    pub(super) fn start_timer_at(&self, deadline: Instant) -> TimerKey {
        let handler: Weak<dyn TimerHandler> = self.self_weak.clone();
        let key = self
            .core
            .timer_insert(TimerTarget::Borrowed(handler), false);
        self.core.timer_arm(key, deadline);
        key
    }
}

/// A call from the loop into a socket (readiness, a timer, a posted report, a lookup's answer),
/// counted while it runs: the caller holds one `Rc` of the socket for it.
pub(super) struct LoopCall<'a>(&'a TcpSocket);

impl Drop for LoopCall<'_> {
    fn drop(&mut self) {
        self.0.loop_calls.set(self.0.loop_calls.get() - 1);
    }
}

impl TcpSocket {
    /// Counts a call from the loop for as long as the returned guard lives. Taken at every
    /// entry from the loop, with the one `Rc` upgraded for that call held.
    pub(super) fn loop_call(&self) -> LoopCall<'_> {
        self.loop_calls.set(self.loop_calls.get() + 1);
        LoopCall(self)
    }

    /// Whether anyone holds the socket besides the loop's calls into it: false once a slot
    /// dropped the last handle of its user (the socket is gone when the call returns), and
    /// then it emits nothing more. Always true inside a call made by user code, whose handle
    /// counts.
    #[inline]
    pub(super) fn held(&self) -> bool {
        self.self_weak.strong_count() > self.loop_calls.get()
    }

    /// Runs `f` on a later turn, as a call from the loop (counted, see
    /// [`loop_call`](Self::loop_call)), unless the socket is gone by then. Every closure the
    /// socket posts to itself goes through here, so none can forget the count.
    pub(super) fn post_call(&self, f: impl FnOnce(&TcpSocket) + 'static) {
        let weak = self.self_weak.clone();
        self.core.post(Box::new(move || {
            if let Some(socket) = weak.upgrade() {
                let _call = socket.loop_call();
                f(&socket);
            }
        }));
    }

    /// Emits `value` on `signal` unless no one holds the socket any more (see [`held`](Self::held)).
    #[inline]
    pub(super) fn emit_held<T>(&self, signal: &Signal<T>, value: &T) {
        if self.held() {
            signal.emit(value);
        }
    }
}

impl ReadyHandler for TcpSocket {
    fn on_ready(&self, r: Readiness) {
        let _call = self.loop_call();
        // Reads first: when the peer answered and then reset the connection (an early answer
        // to an upload it does not want), a flush of queued writes fails with the reset, and
        // closing then would drop the answer still waiting in the kernel.
        if r.readable || r.read_closed || r.error {
            self.drain_reads_until(r.read_closed || r.error);
        }
        if r.writable || r.write_closed || r.error {
            self.flush();
        }
    }
}

/// Which of a socket's timers fired.
enum SocketTimer {
    Stagger,
    Connect,
    Handshake,
}

impl TimerHandler for TcpSocket {
    fn fire(&self, key: TimerKey) {
        let _call = self.loop_call();
        // One-shot: the slot is done whichever timer it was.
        self.core.timer_remove(key);
        let fired = {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            // Takes the slot's key if it is the one that fired.
            let fired = |slot: &mut Option<TimerKey>| slot.take_if(|k| *k == key).is_some();
            let mut which = None;
            if let Some(c) = inner.connecting.as_deref_mut() {
                if fired(&mut c.stagger_timer) {
                    which = Some(SocketTimer::Stagger);
                } else if fired(&mut c.connect_timer) {
                    which = Some(SocketTimer::Connect);
                }
            }
            if let Some(t) = inner.tls.as_deref_mut() {
                if which.is_none() && fired(&mut t.handshake_timer) {
                    which = Some(SocketTimer::Handshake);
                }
            }
            which
        };
        match fired {
            Some(SocketTimer::Stagger) => self.advance_race(true),
            Some(SocketTimer::Connect) => {
                let phase = if self.state() == SocketState::HostLookup {
                    TimeoutPhase::Resolve
                } else {
                    TimeoutPhase::Connect
                };
                self.close_with(Some(SocketError::Timeout(phase)));
            }
            Some(SocketTimer::Handshake) => {
                self.close_with(Some(SocketError::Timeout(TimeoutPhase::TlsHandshake)));
            }
            None => {}
        }
    }
}
