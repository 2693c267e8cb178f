//! A request's timers: the total timeout and the read (idle) timeout, which arrivals move
//! without re-arming its timer.

use std::time::{Duration, Instant};

use super::state::{Phase, RequestState};
use super::{ClientInner, HttpClient};
use crate::foundation::{TimerKey, deadline_after};
use crate::network::error::TimeoutPhase;
use crate::network::http::HttpError;
use crate::network::tcp::SocketState;

/// Notes the total deadline of `state`'s request, its timeout from `now`, and returns it for
/// [`HttpClient::watch_total_deadline`]; `None` for a streaming request or one without a timeout.
pub(super) fn note_total_deadline(state: &mut RequestState, now: Instant) -> Option<Instant> {
    if state.request.is_streaming() {
        return None;
    }
    let deadline = deadline_after(now, state.request.timeout()?);
    state.total_deadline = Some(deadline);
    Some(deadline)
}

/// A request's read (idle) timeout.
pub(super) struct IdleWatch {
    pub(super) timer: Option<TimerKey>,
    /// The read timeout expires here; arrivals move it without touching the timer, which re-arms
    /// itself for the rest when it fires early (no timer churn per arrival).
    deadline: Instant,
    /// When the armed `timer` fires.
    fires_at: Instant,
}

impl HttpClient {
    /// Notes request `id`'s total deadline, its timeout from `now` (the caller's clock reading:
    /// `submit` has just taken one for the request's start).
    pub(super) fn arm_total_timer(&self, inner: &mut ClientInner, id: u64, now: Instant) {
        let deadline = inner
            .requests
            .get_mut(&id)
            .and_then(|state| note_total_deadline(state, now));
        if let Some(deadline) = deadline {
            self.watch_total_deadline(inner, deadline);
        }
    }

    /// Makes the client's total-timeout timer fire by `deadline`, a request's (see
    /// [`note_total_deadline`]). Usually it fires first (requests share one timeout), and then
    /// looks for the next deadline.
    pub(super) fn watch_total_deadline(&self, inner: &mut ClientInner, deadline: Instant) {
        self.watch_deadline(&mut inner.total_timer, deadline, HttpClient::on_total_timer);
    }

    /// Makes `timer`, one of the client's shared deadline timers (every request's total
    /// timeout, every idle connection's deadline), fire by `at`, calling `fire` on the client:
    /// left alone when it is armed for `at` or sooner (the usual case; it re-arms itself for what
    /// is left when it fires), else armed anew. One timer per client instead of one per request
    /// or connection saves the timer queue's work (and an allocation) on every request.
    pub(super) fn watch_deadline(
        &self,
        timer: &mut Option<(TimerKey, Instant)>,
        at: Instant,
        fire: fn(&HttpClient),
    ) {
        if timer.is_some_and(|(_, armed)| armed <= at) {
            return;
        }
        if let Some((key, _)) = timer.take() {
            self.core.timer_remove(key);
        }
        let weak = self.self_weak.clone();
        let delay = at.saturating_duration_since(Instant::now());
        let key = self.core.call_after(delay, move || {
            if let Some(client) = weak.upgrade() {
                fire(&client);
            }
        });
        *timer = Some((key, at));
    }

    /// The total-timeout timer fired: every request past its deadline fails (in the order they
    /// were sent), and the timer is armed for the earliest deadline left.
    fn on_total_timer(&self) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            inner.total_timer = None;
            let now = Instant::now();
            // One whose connection's close was read (in this turn, before the timers) is left
            // to that close, whose report comes first in the next turn: what arrived before
            // the deadline (the end of a body read to the close) counts.
            let mut expired: Vec<u64> = (inner.requests.iter())
                .filter(|(_, state)| state.total_deadline.is_some_and(|d| d <= now))
                .filter(|(_, state)| !close_unreported(inner, state.conn))
                .map(|(id, _)| *id)
                .collect();
            expired.sort_unstable();
            for id in expired {
                if let Some(state) = inner.requests.get_mut(&id) {
                    state.total_deadline = None;
                    self.fail(
                        inner,
                        id,
                        HttpError::Timeout(TimeoutPhase::Total),
                        true,
                        &mut actions,
                    );
                }
            }
            let next = (inner.requests.values())
                .filter_map(|state| state.total_deadline)
                .min();
            if let Some(at) = next {
                self.watch_deadline(&mut inner.total_timer, at, HttpClient::on_total_timer);
            }
        }
        self.run_actions(actions);
    }

    /// Starts request `id`'s read timeout afresh, when it has one (see [`arm_idle`](Self::arm_idle)).
    pub(super) fn arm_idle_timer(&self, inner: &mut ClientInner, id: u64) {
        if let Some(state) = inner.requests.get_mut(&id) {
            self.arm_idle(state, id);
        }
    }

    /// Starts the read timeout of `state` (request `id`) afresh: it expires one read timeout
    /// from now. The armed timer is left alone when it fires sooner (it then waits out the rest).
    pub(super) fn arm_idle(&self, state: &mut RequestState, id: u64) {
        let Some(timeout) = state.read_timeout else {
            return;
        };
        let deadline = deadline_after(Instant::now(), timeout);
        let watch = state.idle.get_or_insert_with(|| {
            Box::new(IdleWatch {
                timer: None,
                deadline,
                fires_at: deadline,
            })
        });
        watch.deadline = deadline;
        if watch.timer.is_some() && watch.fires_at <= deadline {
            // The armed timer fires first and then waits out the rest (see `on_idle_timeout`).
            return;
        }
        if let Some(key) = watch.timer.take() {
            self.core.timer_remove(key);
        }
        self.start_idle_timer(watch, id, timeout, deadline);
    }

    /// Stops the read timeout of `state` until [`HttpClient::arm_idle`] starts it again.
    pub(super) fn disarm_idle(&self, state: &mut RequestState) {
        if let Some(key) = state.idle.take().and_then(|watch| watch.timer) {
            self.core.timer_remove(key);
        }
    }

    fn start_idle_timer(&self, watch: &mut IdleWatch, id: u64, delay: Duration, at: Instant) {
        let weak = self.self_weak.clone();
        watch.fires_at = at;
        watch.timer = Some(self.core.call_after(delay, move || {
            if let Some(client) = weak.upgrade() {
                client.on_idle_timeout(id);
            }
        }));
    }

    /// The read timer fired: re-armed for the rest when bytes moved the deadline since, else the
    /// read timeout. Its phase is the request's phase now, not when the timer was armed: the head
    /// may have completed in the same read that armed it; before the head, a request body the
    /// kernel has not all taken yet means the send stalled.
    fn on_idle_timeout(&self, id: u64) {
        let phase = {
            let mut inner = self.inner.borrow_mut();
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            // The request's own callback or slot is running (waiting in a nested loop): the
            // client is not reading for it, so the silence is not the server's.
            let waiting_for_user_code = self.user_code_running(id, state.conn);
            let read_timeout = state.read_timeout;
            let Some(watch) = state.idle.as_deref_mut() else {
                return;
            };
            watch.timer = None;
            let now = Instant::now();
            if waiting_for_user_code {
                if let Some(timeout) = read_timeout {
                    let deadline = deadline_after(now, timeout);
                    watch.deadline = deadline;
                    self.start_idle_timer(watch, id, timeout, deadline);
                }
                return;
            }
            if now < watch.deadline {
                let deadline = watch.deadline;
                self.start_idle_timer(watch, id, deadline - now, deadline);
                return;
            }
            // The connection's close was read before this timer's turn came (the loop was
            // late: busy user code): the close, reported first in the next turn, ends the
            // request (a body read to the close is complete) rather than the timeout.
            let conn = state.conn;
            if close_unreported(&inner, conn) {
                return;
            }
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            let unsent = state.upload_head_len + state.upload_total;
            match state.phase {
                Phase::RecvBody => TimeoutPhase::BodyIdle,
                // The kernel stopped taking the request body: the server is not reading it.
                _ if state.upload_total > 0 && state.wire_written < unsent => {
                    TimeoutPhase::SendRequest
                }
                _ => TimeoutPhase::ResponseHead,
            }
        };
        self.on_timeout(id, phase);
    }

    fn on_timeout(&self, id: u64, phase: TimeoutPhase) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            if let Some(state) = inner.requests.get_mut(&id) {
                if let Some(watch) = state.idle.as_deref_mut() {
                    watch.timer = None;
                }
                self.fail(
                    &mut inner,
                    id,
                    HttpError::Timeout(phase),
                    true,
                    &mut actions,
                );
            }
        }
        self.run_actions(actions);
    }
}

/// Whether connection `conn` (a request's) has closed and the client has not yet taken its
/// report: the socket reports a close through a closure posted for the next turn, so a timer
/// of the same turn would otherwise decide what a close read before it already settled.
fn close_unreported(inner: &ClientInner, conn: Option<u64>) -> bool {
    conn.and_then(|c| inner.conns.get(&c))
        .is_some_and(|c| c.socket.state() == SocketState::Unconnected)
}
