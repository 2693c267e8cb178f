//! [`Timer`] (KDFoundation `Timer`) and the one-shot helpers.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::LoopError;
use super::event_loop::LoopCore;
use super::timer_queue::{TimerHandler, TimerKey, TimerTarget, deadline_after};
use crate::bindings::{Property, Signal};

/// A timer of the current thread's loop (KDFoundation `Timer`).
///
/// Set [`interval`](Self::interval) and [`single_shot`](Self::single_shot), then
/// [`start`](Self::start) (or set [`running`](Self::running) to `true`). Every interval,
/// [`timeout`](Self::timeout) is emitted on the loop's thread.
///
/// Differences from KDFoundation, on purpose:
/// - timers live in the loop's deadline heap, not one kernel timer each;
/// - an interval of zero fires on the next loop turn (KDFoundation's never fires);
/// - a periodic timer that falls behind fires once and re-aligns, never a burst of missed ticks;
/// - the loop sleeps in whole milliseconds (the poller's unit; KDFoundation's timerfd counts in
///   nanoseconds), so a non-zero interval under a millisecond ticks about once per millisecond,
///   its missed ticks coalesced as above (a 100 µs timer ticks some 850 times a second, not
///   10,000); intervals of a few milliseconds and more keep their rate;
/// - [`start`](Self::start) on a running timer restarts the countdown (as `QTimer::start`).
///
/// Changing `interval` of a running timer restarts it from now. A single-shot timer sets `running`
/// to `false` before emitting `timeout`, so a slot may start it again. `running` is `true` exactly
/// while a countdown is armed: a `value_about_to_change` slot that refuses a change of `running`
/// (see [`Property`]) keeps the timer as it was: a refused start leaves it stopped, a refused
/// stop (also the one a single-shot timer makes when it fires) leaves it counting down. The timer follows
/// `running` and `interval` through connections of its own on their `value_changed`, which
/// [`Signal::disconnect_all`] leaves in place and [`Signal::connection_count`] does not count.
///
/// A timer is not fired inside its own `timeout` emission (a slot that waits in a nested loop,
/// such as [`HttpClient::send_and_wait`](crate::network::http::HttpClient::send_and_wait)): the
/// periodic ticks due meanwhile are skipped (the next one comes an interval after the last tick
/// or, if that has passed, an interval after the slot returned), and a single-shot countdown the
/// slot restarted that ends meanwhile fires on the first turn after the slot returns.
///
/// Dropping the last `Rc<Timer>` inside its own `timeout` slot stops it for good: the loop holds
/// it until the emission under way ends (its other slots still run, as after Qt's
/// `deleteLater`), then frees it with its slots; it never fires again, not even inside a nested
/// loop the slot runs, and the timers due with it fire.
///
/// ```
/// use kdnet::{EventLoop, Timer};
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let ticks = Rc::new(Cell::new(0));
/// let timer = Timer::new().unwrap();
/// timer.interval.set(Duration::from_millis(1));
/// let handle = event_loop.handle();
/// let t = ticks.clone();
/// timer.timeout.connect(move |_| {
///     t.set(t.get() + 1);
///     if t.get() == 3 {
///         handle.quit();
///     }
/// }).release();
/// timer.start();
/// event_loop.run();
/// assert_eq!(ticks.get(), 3);
/// ```
pub struct Timer {
    /// Emitted when the interval elapses.
    pub timeout: Signal<()>,
    /// Time between timeouts (default zero: fires on the next loop turn).
    pub interval: Property<Duration>,
    /// Fire once, then stop (default `false`).
    pub single_shot: Property<bool>,
    /// Whether the timer is counting; setting it starts or stops the timer.
    pub running: Property<bool>,
    core: Rc<LoopCore>,
    key: TimerKey,
    /// When the current countdown ends (to re-arm periodic timers without drift).
    deadline: Cell<Option<Instant>>,
    /// `timeout` is being emitted (a slot may wait in a nested loop meanwhile).
    emitting: Cell<bool>,
    /// A single-shot countdown ended while `timeout` was being emitted: fire once it ends.
    overdue: Cell<bool>,
}

impl Timer {
    /// A stopped timer on the current thread's loop.
    ///
    /// The timer belongs to that loop for good. When the loop is dropped the timer stops
    /// (`running` becomes `false`, announced on [`running`](Self::running)'s `value_changed`; a
    /// `value_about_to_change` slot cannot refuse this stop) and
    /// cannot be started again: `start()` and `running = true` leave it stopped, also once the
    /// thread has a new loop.
    ///
    /// Fails with [`LoopError::NoEventLoop`] on a thread without an [`EventLoop`](super::EventLoop).
    pub fn new() -> Result<Rc<Timer>, LoopError> {
        let core = LoopCore::current()?;
        let timer = Rc::new_cyclic(|weak: &Weak<Timer>| {
            let handler: Weak<dyn TimerHandler> = weak.clone();
            let key = core.timer_insert(TimerTarget::Borrowed(handler), false);
            Timer {
                timeout: Signal::new(),
                interval: Property::new(Duration::ZERO),
                single_shot: Property::new(false),
                running: Property::new(false),
                core: Rc::clone(&core),
                key,
                deadline: Cell::new(None),
                emitting: Cell::new(false),
                overdue: Cell::new(false),
            }
        });
        // Pinned: the timer's own wiring survives `disconnect_all` on these public signals.
        let running = timer
            .running
            .value_changed
            .connect_weak(&timer, |t, &running| {
                if !running {
                    t.disarm();
                } else if !t.arm_from_now() {
                    // Its loop is gone: it can never fire, so it does not run (no slot can
                    // refuse that).
                    t.running.force_set(false);
                }
            });
        timer.running.value_changed.pin(&running);
        let interval = timer.interval.value_changed.connect_weak(&timer, |t, _| {
            if t.running.get() {
                t.arm_from_now();
            }
        });
        timer.interval.value_changed.pin(&interval);
        Ok(timer)
    }

    /// A running single-shot timer that calls `f` after `delay` (KDFoundation `createTimeout`).
    /// Dropping the returned timer cancels it: keep it (`let _timer = …`, not `let _ = …`) until
    /// it fired, or use [`set_timeout`](Self::set_timeout), whose timer lives on its own.
    #[must_use = "dropping the returned timer cancels it; keep it until it fired, or use Timer::set_timeout"]
    pub fn create_timeout(
        delay: Duration,
        f: impl FnMut() + 'static,
    ) -> Result<Rc<Timer>, LoopError> {
        Self::create(delay, true, f)
    }

    /// A running periodic timer that calls `f` every `interval` (KDFoundation `createRecurring`).
    /// Dropping the returned timer cancels it: keep it as long as it should tick, or use
    /// [`set_recurring`](Self::set_recurring), whose timer lives until cancelled.
    #[must_use = "dropping the returned timer cancels it; keep it as long as it should tick, or use Timer::set_recurring"]
    pub fn create_recurring(
        interval: Duration,
        f: impl FnMut() + 'static,
    ) -> Result<Rc<Timer>, LoopError> {
        Self::create(interval, false, f)
    }

    fn create(
        interval: Duration,
        single_shot: bool,
        mut f: impl FnMut() + 'static,
    ) -> Result<Rc<Timer>, LoopError> {
        let timer = Timer::new()?;
        timer.interval.set(interval);
        timer.single_shot.set(single_shot);
        timer.timeout.connect(move |_| f()).release();
        timer.start();
        Ok(timer)
    }

    /// Starts the countdown; restarts it if the timer is already running.
    ///
    /// Does nothing once the timer's loop was dropped (see [`Timer::new`]).
    pub fn start(&self) {
        if self.core.is_closed() {
            return;
        }
        if self.running.get() {
            self.arm_from_now();
        } else {
            // Armed by the timer's wiring on `value_changed`; a `value_about_to_change` slot
            // that refuses the start leaves the timer stopped and nothing armed.
            self.running.set(true);
        }
    }

    /// Sets the interval, then starts (or restarts) the timer.
    pub fn start_with(&self, interval: Duration) {
        self.interval.set(interval);
        self.start();
    }

    /// Stops the timer; no further `timeout` until started again.
    pub fn stop(&self) {
        self.running.set(false);
    }

    /// Time until the next timeout, if running.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Runs `f` once after `delay` on the current thread's loop (KDFoundation `setTimeout`).
    /// Returns an id for [`cancel_timer`](Self::cancel_timer).
    pub fn set_timeout(delay: Duration, f: impl FnOnce() + 'static) -> Result<TimerId, LoopError> {
        let mut f = Some(f);
        Self::managed(delay, false, move || {
            if let Some(f) = f.take() {
                f();
            }
        })
    }

    /// Runs `f` every `interval` until cancelled (KDFoundation `setRecurring`).
    pub fn set_recurring(
        interval: Duration,
        f: impl FnMut() + 'static,
    ) -> Result<TimerId, LoopError> {
        Self::managed(interval, true, f)
    }

    /// Cancels a timer made by [`set_timeout`](Self::set_timeout) or
    /// [`set_recurring`](Self::set_recurring); false if it already fired or was cancelled.
    pub fn cancel_timer(id: TimerId) -> bool {
        LoopCore::current()
            .is_ok_and(|core| core.timer_is_managed(id.key) && core.timer_remove(id.key))
    }

    /// Whether a managed timer is still pending.
    pub fn is_timer_active(id: TimerId) -> bool {
        LoopCore::current().is_ok_and(|core| core.timer_is_managed(id.key))
    }

    /// Cancels every managed timer of the current thread's loop; returns how many.
    pub fn cancel_all_timers() -> usize {
        LoopCore::current().map_or(0, |core| core.timer_remove_managed())
    }

    fn managed(
        interval: Duration,
        recurring: bool,
        f: impl FnMut() + 'static,
    ) -> Result<TimerId, LoopError> {
        let core = LoopCore::current()?;
        let handler = Rc::new(ManagedTimer {
            f: RefCell::new(Box::new(f)),
            interval,
            recurring,
            deadline: Cell::new(deadline_after(Instant::now(), interval)),
            overdue: Cell::new(false),
        });
        let deadline = handler.deadline.get();
        let key = core.timer_insert(TimerTarget::Owned(handler), true);
        core.timer_arm(key, deadline);
        Ok(TimerId { key })
    }

    /// Starts the countdown from now; false if the loop is gone (the timer stays disarmed).
    fn arm_from_now(&self) -> bool {
        self.overdue.set(false);
        let deadline = deadline_after(Instant::now(), self.interval.get());
        if self.core.timer_arm(self.key, deadline) {
            self.deadline.set(Some(deadline));
            true
        } else {
            self.deadline.set(None);
            false
        }
    }

    fn disarm(&self) {
        self.overdue.set(false);
        self.deadline.set(None);
        self.core.timer_disarm(self.key);
    }
}

impl TimerHandler for Timer {
    fn fire(&self, _key: TimerKey) {
        // A stopped timer neither emits nor re-arms (the queue skips it already; this keeps a
        // stale call from reviving a periodic timer).
        if !self.running.get() {
            return;
        }
        if self.emitting.get() {
            // Due again while a slot of this timer still runs (it waits in a nested loop): a
            // busy slot would be skipped and the others called inside it. A periodic tick is
            // skipped whole (as Qt skips a timer whose activation is on the stack); a single-shot
            // countdown (restarted by the slot) is delivered when the emission ends. Neither is
            // re-armed meanwhile: a periodic timer due again every period (every turn, with a
            // zero interval) would keep the nested wait from sleeping. See `Emitting::drop`.
            self.overdue.set(true);
            return;
        }
        if self.single_shot.get() {
            let due = self.deadline.take();
            self.running.set(false);
            if self.running.get() && self.deadline.get().is_none() {
                // A `value_about_to_change` slot refused the stop (see `Property`): the timer
                // still runs, so it counts down again, from the deadline that just passed.
                self.deadline.set(due);
                self.rearm_periodic();
            }
        } else {
            self.rearm_periodic();
        }
        let _emitting = Emitting::start(self);
        self.timeout.emit(&());
    }

    fn loop_gone(&self) {
        self.overdue.set(false);
        self.deadline.set(None);
        // A fact, not a request: a `value_about_to_change` slot cannot refuse it.
        self.running.force_set(false);
    }
}

impl Timer {
    fn rearm_periodic(&self) {
        let next = next_periodic_deadline(self.deadline.get(), self.interval.get(), Instant::now());
        self.deadline.set(Some(next));
        self.core.timer_arm(self.key, next);
    }
}

/// Marks a timer's `timeout` emission as running until dropped (also when a slot panics): then
/// a single-shot countdown that ended meanwhile is re-armed to fire on the next turn.
struct Emitting<'a>(&'a Timer);

impl<'a> Emitting<'a> {
    fn start(timer: &'a Timer) -> Self {
        timer.emitting.set(true);
        Emitting(timer)
    }
}

impl Drop for Emitting<'_> {
    fn drop(&mut self) {
        let timer = self.0;
        timer.emitting.set(false);
        if timer.overdue.take() && timer.running.get() {
            if timer.single_shot.get() {
                // The restarted countdown ended: fire on the next turn.
                let deadline = timer.deadline.get().unwrap_or_else(Instant::now);
                timer.deadline.set(Some(deadline));
                timer.core.timer_arm(timer.key, deadline);
            } else {
                // The ticks due meanwhile were skipped: take up the period again.
                timer.rearm_periodic();
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.core.timer_remove(self.key);
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("interval", &self.interval.get())
            .field("single_shot", &self.single_shot.get())
            .field("running", &self.running.get())
            .finish()
    }
}

/// Identifies a timer made by [`Timer::set_timeout`] or [`Timer::set_recurring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: TimerKey,
}

impl TimerId {
    /// A number unique among all loops' timers (KDFoundation's ids are `u64` from 1).
    pub fn as_u64(&self) -> u64 {
        self.key.generation()
    }
}

struct ManagedTimer {
    f: RefCell<Box<dyn FnMut()>>,
    interval: Duration,
    recurring: bool,
    deadline: Cell<Instant>,
    /// Due while its callback was running (waiting in a nested loop): re-armed when it returns.
    overdue: Cell<bool>,
}

impl ManagedTimer {
    /// Arms the next period; false if the timer was cancelled.
    fn rearm(&self, core: &LoopCore, key: TimerKey) -> bool {
        let next = next_periodic_deadline(Some(self.deadline.get()), self.interval, Instant::now());
        self.deadline.set(next);
        core.timer_arm(key, next)
    }
}

impl TimerHandler for ManagedTimer {
    fn fire(&self, key: TimerKey) {
        let Ok(core) = LoopCore::current() else {
            return;
        };
        // Not re-entered if a nested loop inside the callback reaches this timer again; nor
        // re-armed then: due again every period (every turn, with a zero interval), it would keep
        // the nested wait from sleeping. The callback's return re-arms it (see `RearmOverdue`).
        let Ok(mut f) = self.f.try_borrow_mut() else {
            self.overdue.set(self.recurring);
            return;
        };
        let pending = if self.recurring {
            self.rearm(&core, key)
        } else {
            // Removing the slot drops the queue's reference; `self` lives on through the caller's clone.
            core.timer_remove(key)
        };
        // The slot is gone: the timer was cancelled, so `f` must not run.
        if !pending {
            return;
        }
        let _rearm = RearmOverdue {
            timer: self,
            core: &core,
            key,
        };
        f();
    }
}

/// Re-arms a recurring managed timer that came due while its callback ran, once the callback
/// returns (also when it panics). Does nothing for one cancelled meanwhile (a stale key).
struct RearmOverdue<'a> {
    timer: &'a ManagedTimer,
    core: &'a LoopCore,
    key: TimerKey,
}

impl Drop for RearmOverdue<'_> {
    fn drop(&mut self) {
        if self.timer.overdue.take() {
            self.timer.rearm(self.core, self.key);
        }
    }
}

/// The next deadline of a periodic timer: one interval after the last one, or — if that has
/// passed already — one interval from now, so missed ticks coalesce into the one being fired.
fn next_periodic_deadline(previous: Option<Instant>, interval: Duration, now: Instant) -> Instant {
    let next = deadline_after(previous.unwrap_or(now), interval);
    if next <= now {
        deadline_after(now, interval)
    } else {
        next
    }
}
