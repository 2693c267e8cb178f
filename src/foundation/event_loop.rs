//! [`EventLoop`]: the per-thread reactor (KDFoundation `EventLoop` + `LinuxPlatformEventLoop`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};

use super::LoopError;
use super::handle::{LoopHandle, RemoteFn, Shared, unbox};
use super::notifier::FdWatchTable;
use super::registry::{Readiness, ReadyHandler, SourceKey, SourceRegistry, WAKER_TOKEN};
use super::sys;
use super::timer_queue::{TimerHandler, TimerKey, TimerQueue, TimerTarget, deadline_after};
use crate::bindings::ConnectionEvaluator;

/// Readiness events taken from the kernel per poll; more wait for the next turn.
const EVENTS_PER_POLL: usize = 256;

thread_local! {
    static CURRENT: RefCell<Weak<LoopCore>> = const { RefCell::new(Weak::new()) };
}

type Posted = Box<dyn FnOnce()>;

/// The state shared by an [`EventLoop`] and every object bound to it on its thread.
pub(crate) struct LoopCore {
    poll: RefCell<Poll>,
    registry: Registry,
    events: RefCell<Events>,
    sources: RefCell<SourceRegistry>,
    timers: RefCell<TimerQueue>,
    posted: RefCell<VecDeque<Posted>>,
    /// How many posted closures were taken off `posted` so far (by any turn, nested or not): a
    /// posted stage runs those whose number is below the count queued when it began.
    posted_taken: Cell<u64>,
    shared: Arc<Shared>,
    quit: Cell<Option<i32>>,
    /// A turn (also one nested in a callback) took a quit through a handle while `quit` was
    /// pending: a later one, whose closures posted before it ran in that turn.
    /// [`EventLoop::take_exit_request`] then takes the pending quit (and any asked since) instead
    /// of waiting for yet another turn (`run()` asks it too). Cleared when the quit is taken.
    later_quit_taken: Cell<bool>,
    depth: Cell<u32>,
    /// Readiness polled and not dispatched yet, from `ready_next` on. Kept here, not in the
    /// polling turn's frame: a loop nested in a handler (a slot waiting in `send_and_wait`)
    /// dispatches the rest of the batch, whose edges the kernel will not report again.
    ready: RefCell<Vec<(Token, Readiness)>>,
    ready_next: Cell<usize>,
    /// The last poll filled its event buffer: the kernel may hold more readiness, which brings
    /// no new edge on the poller's descriptor, so the next turn must not wait for one.
    poll_was_full: Cell<bool>,
    /// One read buffer per loop, lent to sockets while they drain the kernel (not one per connection).
    read_buffer: RefCell<Vec<u8>>,
    fd_watches: FdWatchTable,
    /// What [`EventLoop::next_timeout`] last told an embedding host: by when it turns the loop.
    host_wait: Cell<HostWait>,
    /// A turn begun from host code wrote a wake-up for the host (see
    /// [`LoopCore::wake_host_if_behind`]) that no poll has taken yet: a nested turn of the same
    /// wait that finds only that wake-up polls again instead of returning at once.
    host_rung: Cell<bool>,
}

/// By when an embedding host turns the loop, as the last [`EventLoop::next_timeout`] told it (a
/// host reads it before every wait and sleeps at most that long).
#[derive(Clone, Copy)]
enum HostWait {
    /// Never asked: no host, or one that reads it before its first wait.
    Never,
    /// Told `None`: it sleeps until the descriptor is readable.
    Unknown,
    /// Told zero: it turns the loop without sleeping.
    Now,
    /// Told the time to this deadline (rounded up): it turns the loop by then.
    By(Instant),
}

impl LoopCore {
    /// The loop of the calling thread.
    pub(crate) fn current() -> Result<Rc<LoopCore>, LoopError> {
        // try_with: during thread-local teardown (a thread exiting with objects alive) this is
        // "no loop", not a panic.
        CURRENT
            .try_with(|c| c.borrow().upgrade())
            .ok()
            .flatten()
            .ok_or(LoopError::NoEventLoop)
    }

    pub(crate) fn handle(&self) -> LoopHandle {
        LoopHandle::from_shared(Arc::clone(&self.shared))
    }

    pub(crate) fn evaluator(&self) -> &Arc<ConnectionEvaluator> {
        self.shared.evaluator()
    }

    /// The exit code of a quit taken by a turn and not yet by `run()` (see [`exit_requested`]).
    pub(crate) fn exit_requested(&self) -> Option<i32> {
        self.quit.get()
    }

    // ---- I/O sources -------------------------------------------------------------------------

    pub(crate) fn register<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        interest: Interest,
        handler: Weak<dyn ReadyHandler>,
    ) -> io::Result<SourceKey> {
        let key = self.sources.borrow_mut().insert(handler);
        if let Err(e) = self.registry.register(source, key.token(), interest) {
            self.sources.borrow_mut().remove(key);
            return Err(e);
        }
        Ok(key)
    }

    pub(crate) fn reregister<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        key: SourceKey,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.reregister(source, key.token(), interest)
    }

    /// Forgets the registration. A descriptor that was already closed (EBADF/ENOENT) counts as
    /// deregistered, as in KDFoundation.
    pub(crate) fn deregister<S: mio::event::Source + ?Sized>(
        &self,
        source: &mut S,
        key: SourceKey,
    ) {
        self.sources.borrow_mut().remove(key);
        if let Err(e) = self.registry.deregister(source) {
            log::trace!("deregister of a closed descriptor: {e}");
        }
    }

    /// Drops the registration entry only (for sources whose descriptor is already closed).
    pub(crate) fn forget(&self, key: SourceKey) {
        self.sources.borrow_mut().remove(key);
    }

    pub(crate) fn fd_watches(&self) -> &FdWatchTable {
        &self.fd_watches
    }

    pub(crate) fn source_count(&self) -> usize {
        self.sources.borrow().len()
    }

    /// Lends the loop's shared read buffer; an empty one if it is already lent (nested use).
    pub(crate) fn take_read_buffer(&self) -> Vec<u8> {
        std::mem::take(&mut *self.read_buffer.borrow_mut())
    }

    pub(crate) fn return_read_buffer(&self, buffer: Vec<u8>) {
        let mut slot = self.read_buffer.borrow_mut();
        if slot.capacity() < buffer.capacity() {
            *slot = buffer;
        }
    }

    // ---- timers ------------------------------------------------------------------------------

    pub(crate) fn timer_insert(&self, target: TimerTarget, managed: bool) -> TimerKey {
        self.timers.borrow_mut().insert(target, managed)
    }

    pub(crate) fn timer_arm(&self, key: TimerKey, deadline: Instant) -> bool {
        let armed = self.timers.borrow_mut().arm(key, deadline);
        // Outside a turn (host code), a timer due before the host turns the loop anyway must
        // make the descriptor readable; one due later is found by the `next_timeout()` the host
        // reads after that turn. Inside a turn the host re-reads it after its own turn, and a
        // wait of host code wakes it on return if need be (see `wake_host_if_behind`).
        if self.depth.get() == 0 && self.host_may_sleep_past(deadline) {
            self.shared.wake();
        }
        armed
    }

    /// Whether an embedding host may sleep past `deadline` (see [`HostWait`]).
    fn host_may_sleep_past(&self, deadline: Instant) -> bool {
        match self.host_wait.get() {
            HostWait::Never | HostWait::Unknown => true,
            HostWait::Now => false,
            HostWait::By(turn) => deadline < turn,
        }
    }

    /// Whether the loop was dropped (its timers can no longer be armed).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    pub(crate) fn timer_disarm(&self, key: TimerKey) {
        self.timers.borrow_mut().disarm(key);
    }

    pub(crate) fn timer_remove(&self, key: TimerKey) -> bool {
        let target = self.timers.borrow_mut().remove(key);
        let removed = target.is_some();
        drop(target);
        removed
    }

    pub(crate) fn timer_is_managed(&self, key: TimerKey) -> bool {
        self.timers.borrow().is_managed(key)
    }

    pub(crate) fn timer_remove_managed(&self) -> usize {
        let targets = self.timers.borrow_mut().remove_managed();
        let n = targets.len();
        drop(targets);
        n
    }

    /// Runs `f` once after `delay` on this loop; returns a key for [`Self::timer_remove`].
    pub(crate) fn call_after(&self, delay: Duration, f: impl FnOnce() + 'static) -> TimerKey {
        let key = self.timer_insert(
            TimerTarget::Owned(Rc::new(OnceTimer(Cell::new(Some(Box::new(f)))))),
            false,
        );
        self.timer_arm(key, deadline_after(Instant::now(), delay));
        key
    }

    // ---- posting -----------------------------------------------------------------------------

    pub(crate) fn post(&self, f: Posted) {
        let mut posted = self.posted.borrow_mut();
        let was_empty = posted.is_empty();
        // Closures other threads posted before this one go first (one queue in posting order, as
        // KDFoundation's): a worker's closure must not run after one this thread posted once it
        // knew the worker had posted. One atomic load when nothing came from other threads.
        if self.shared.has_remote_work() {
            self.shared.move_remote_into(&mut posted);
        }
        posted.push_back(f);
        drop(posted);
        // Checked only outside a turn with the queue empty: once the loop is gone every post is
        // made so (and inside a turn the loop is alive).
        if was_empty && self.depth.get() == 0 {
            if self.shared.is_closed() {
                // Nothing will run it (an object outliving its loop queued it). Kept, it would
                // hold its captures, and so often this core, alive for ever: drop it now, outside
                // the borrow (its `Drop` may post again).
                let dead = std::mem::take(&mut *self.posted.borrow_mut());
                drop(dead);
                return;
            }
            self.shared.wake();
        }
    }

    // ---- running -----------------------------------------------------------------------------

    fn has_immediate_work(&self) -> bool {
        // A pending quit is not "work": run() checks it between turns, and a quit from another
        // thread wakes the poller itself. Counting it would make a host that never calls run()
        // (or a nested send_and_wait) spin with a zero timeout. Readiness polled and not yet
        // dispatched (by the turn whose handler runs this nested one, or left by a handler that
        // panicked) is work.
        !self.posted.borrow().is_empty()
            || self.shared.has_remote_work()
            || self.ready_next.get() < self.ready.borrow().len()
            || self.poll_was_full.get()
            || self.evaluator().has_runnable()
    }

    fn next_timeout(&self) -> Option<Duration> {
        if self.has_immediate_work() {
            return Some(Duration::ZERO);
        }
        let deadline = self.timers.borrow_mut().next_deadline()?;
        Some(ceil_millis(
            deadline.saturating_duration_since(Instant::now()),
        ))
    }

    /// [`next_timeout`](Self::next_timeout) for an embedding host, remembered (see
    /// [`HostWait`]): a timer started between turns wakes the host only if it is due earlier.
    fn host_next_timeout(&self) -> Option<Duration> {
        if self.has_immediate_work() {
            self.host_wait.set(HostWait::Now);
            return Some(Duration::ZERO);
        }
        let deadline = self.timers.borrow_mut().next_deadline();
        self.host_wait
            .set(deadline.map_or(HostWait::Unknown, HostWait::By));
        deadline.map(|d| ceil_millis(d.saturating_duration_since(Instant::now())))
    }

    /// One turn: posted closures queued before the turn, a poll, fd readiness, due timers, deferred
    /// slots. Each stage handles only work that existed when it began, so a busy descriptor or a
    /// closure that re-posts itself cannot starve the rest.
    ///
    /// For callers that wait for a condition between turns (`process_events` loops, nested waits
    /// such as `send_and_wait`): a turn that ran posted closures does not wait.
    ///
    /// A turn that may wait (`timeout` not zero) begun outside any turn is a wait of host code
    /// (`send_and_wait`, a GUI handler's `process_events` loop), not an embedding host's own
    /// turn (`process_events(Some(ZERO))`, after which the host reads `next_timeout()`): work it
    /// leaves for later wakes the host (see [`Self::wake_host_if_behind`]).
    pub(crate) fn turn(&self, timeout: Option<Duration>) -> Result<usize, LoopError> {
        let host_code_wait = self.depth.get() == 0 && timeout != Some(Duration::ZERO);
        let result = self.turn_inner(timeout, true);
        if host_code_wait {
            self.wake_host_if_behind();
        }
        result
    }

    /// After a turn begun from host code: makes the descriptor readable if the host, sleeping
    /// for what [`EventLoop::next_timeout`] last told it, would sleep past work the turn left (a
    /// timer it started that is due earlier, a closure it posted, a quit to report): such work, added
    /// inside a turn, wrote no wake-up, and the host does not read the timeout again before it
    /// sleeps (a Qt `QTimer` set after its own last turn, a GLib `prepare` run before the
    /// handler that waited). Written after every such turn while it holds; a later turn of the
    /// same wait that its poll finds only this wake-up polls again (see `host_rung`).
    fn wake_host_if_behind(&self) {
        if matches!(self.host_wait.get(), HostWait::Never | HostWait::Now) {
            // No host asked (or it reads the timeout before its first wait), or it turns the
            // loop at once anyway.
            return;
        }
        // A quit this wait took (it ended the wait, as `exit_requested` told it) is reported
        // by `take_exit_request` after the host's own turn, which must come.
        let behind = self.has_immediate_work()
            || self.shared.quit_requested()
            || self.quit.get().is_some()
            || self
                .timers
                .borrow_mut()
                .next_deadline()
                .is_some_and(|deadline| self.host_may_sleep_past(deadline));
        if behind {
            self.host_rung.set(true);
            self.shared.wake();
        }
    }

    /// After a poll that may have taken the wake-up [`Self::wake_host_if_behind`] wrote: if
    /// that was all it found, polls once more with the same timeout, rather than return at once
    /// (a wait of host code that goes on would spin on the wake-up it writes after each turn).
    /// Not when the poll found anything else, or something came from another thread meanwhile
    /// (whose wake-up this poll may have taken with ours). Out of line: the common turn only
    /// asks `host_rung`.
    #[cold]
    #[inline(never)]
    fn poll_past_host_wake(
        &self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> Result<(), LoopError> {
        self.host_rung.set(false);
        let only_ours = timeout != Some(Duration::ZERO)
            && !events.is_empty()
            && events.iter().all(|e| e.token() == WAKER_TOKEN)
            && !self.shared.has_remote_work()
            && !self.shared.quit_requested()
            && !self.evaluator().has_runnable()
            && !self.shared.take_woken_up();
        if only_ours {
            let polled = poll.poll(events, timeout);
            self.shared.wake_consumed();
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LoopError::io("poll", e)),
            }
        }
        Ok(())
    }

    /// `return_after_posted`: false for `run()`, which checks only for a quit between turns (a quit
    /// ends the wait by itself), so the non-blocking poll is not needed.
    fn turn_inner(
        &self,
        timeout: Option<Duration>,
        return_after_posted: bool,
    ) -> Result<usize, LoopError> {
        self.depth.set(self.depth.get() + 1);
        let _depth = DepthGuard(&self.depth);
        let mut dispatched = 0;

        let quit_was_pending = self.quit.get().is_some();
        if let Some(code) = self.shared.take_quit() {
            // Only when a quit is taken: no cost to the other turns.
            if quit_was_pending {
                self.later_quit_taken.set(true);
            }
            self.quit.set(Some(code));
        }
        // Asked here (one load) before borrowing the queue and calling out: most turns of a
        // loop busy with I/O have nothing from other threads.
        if self.shared.has_remote_work() {
            self.shared.move_remote_into(&mut self.posted.borrow_mut());
        }
        let ran_posted = self.run_posted();
        dispatched += ran_posted;
        if !return_after_posted && (self.quit.get().is_some() || self.shared.quit_requested()) {
            // run() ends once the closures posted before the quit ran: nothing that became
            // ready or due after the turn that asked for it is dispatched (a quit asked for
            // during those closures is taken by the next turn, which runs what other threads
            // posted before it, then ends here too). It stays ready or due for a later turn.
            return Ok(dispatched);
        }

        // run() must see a quit that came during this turn (taken above, asked for by a posted
        // closure, or taken by a nested turn one of them ran) without waiting for an unrelated
        // event. A quit already pending when the turn began does not cut it short: it waits for
        // an outer run() that cannot look before a nested wait (send_and_wait) ends, or for a
        // host that drives the loop with process_events alone, and every turn meanwhile would
        // poll without waiting (a busy loop at full CPU).
        //
        // Likewise a turn that ran posted closures does not wait for another event (unless
        // run() drives it): one of them may have done what its caller waits for (finished the
        // request a nested `send_and_wait` waits on, set a flag a `process_events` loop checks).
        // Nothing else would end this wait: a post inside a turn writes no wake-up, and the
        // wake-up of a post from another thread was spent by the poll it interrupted, which
        // returned before the closure ran (closures run here, at the start of the next turn).
        // KDFoundation runs posted events before its wait, which a post's wake-up then ends.
        let ran_posted = return_after_posted && ran_posted > 0;
        let timeout = if ran_posted || (self.quit.get().is_some() && !quit_was_pending) {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let timeout = match (timeout, self.next_timeout()) {
            (Some(t), Some(n)) => Some(t.min(n)),
            (t, n) => t.or(n),
        };
        dispatched += self.poll_and_dispatch(timeout)?;
        dispatched += self.fire_timers();
        // Asked first with a load: evaluating begins with a swap (a locked read-modify-write),
        // which every turn paid when no deferred slot was queued.
        if self.evaluator().has_pending() {
            dispatched += self.evaluator().evaluate_deferred_connections();
        }
        Ok(dispatched)
    }

    /// Runs the closures queued when it began; returns how many it ran itself. A closure of the
    /// batch that nests a turn lets that turn run the rest of the batch (and what was queued
    /// since): this stage then stops at the end of its batch, so a closure posted meanwhile waits
    /// for the next turn, as one posted by this stage's own closures does.
    fn run_posted(&self) -> usize {
        let end = self.posted_taken.get() + self.posted.borrow().len() as u64;
        let mut ran = 0;
        while self.posted_taken.get() < end {
            let Some(f) = self.posted.borrow_mut().pop_front() else {
                break;
            };
            self.posted_taken.set(self.posted_taken.get() + 1);
            f();
            ran += 1;
        }
        ran
    }

    fn poll_and_dispatch(&self, timeout: Option<Duration>) -> Result<usize, LoopError> {
        {
            let mut poll = self.poll.borrow_mut();
            let mut events = self.events.borrow_mut();
            let polled = poll.poll(&mut events, timeout);
            // Whatever the result: a wake-up written before this point is spent.
            self.shared.wake_consumed();
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LoopError::io("poll", e)),
            }
            // One load per poll; set only by a wait of host code behind its host.
            if self.host_rung.get() {
                self.poll_past_host_wake(&mut poll, &mut events, timeout)?;
            }
            // Appended: readiness an outer turn polled and has not dispatched yet goes first.
            let mut ready = self.ready.borrow_mut();
            let before = ready.len();
            let pending = self.ready_next.get()..before;
            let polled = if pending.is_empty() {
                ready.extend(events.iter().map(|e| (e.token(), Readiness::from_event(e))));
                ready.len() - before
            } else {
                // A turn nested in a handler: a source still waiting in the outer batch that the
                // kernel reports again (new data since) is dispatched once, with both reports,
                // not twice in this turn (the second time finding nothing).
                for e in events.iter() {
                    let readiness = Readiness::from_event(e);
                    match ready[pending.clone()]
                        .iter_mut()
                        .find(|(t, _)| *t == e.token())
                    {
                        Some((_, waiting)) => waiting.merge(readiness),
                        None => ready.push((e.token(), readiness)),
                    }
                }
                events.iter().count()
            };
            self.poll_was_full.set(polled >= events.capacity());
        }
        let mut dispatched = 0;
        loop {
            let next = self.ready_next.get();
            let entry = self.ready.borrow().get(next).copied();
            let Some((token, readiness)) = entry else {
                break;
            };
            // Taken before the handler runs: a nested turn continues after it, and a handler
            // that panics leaves the rest for the next turn.
            self.ready_next.set(next + 1);
            if token == WAKER_TOKEN {
                continue;
            }
            // Looked up per event: an earlier handler in this batch may have closed this source.
            let handler = self.sources.borrow().handler(token);
            if let Some(handler) = handler {
                handler.on_ready(readiness);
                dispatched += 1;
            }
        }
        // Everything polled so far is dispatched (here or by a turn nested in a handler).
        self.ready.borrow_mut().clear();
        self.ready_next.set(0);
        Ok(dispatched)
    }

    fn fire_timers(&self) -> usize {
        // The timers due now and armed before this point, earliest first, taken off the heap one
        // at a time (see `TimerQueue::pop_due`): what an earlier handler did to a later timer
        // counts, and a loop nested in a handler (a slot waiting in `send_and_wait`) fires the
        // rest instead of leaving them to wait for the handler's return.
        if !self.timers.borrow().has_armed() {
            // Nothing can be due: no clock read (a turn per event or post when no timer runs).
            return 0;
        }
        let now = Instant::now();
        let limit = self.timers.borrow().seq_limit();
        let mut n = 0;
        loop {
            let next = self.timers.borrow_mut().pop_due(now, limit);
            let Some((key, handler)) = next else {
                break;
            };
            handler.fire(key);
            n += 1;
        }
        n
    }

    fn shutdown(&self) {
        self.shared.close();
        // Nothing evaluates the deferred slots queued for this loop any more.
        self.evaluator().close();
        // Break reference cycles through queued closures and closure timers. Dropping them runs
        // user `Drop` code, which may queue more (a request that fails at once posts its
        // callback, which may hold the client and so this core): drop until nothing is left.
        // A `Drop` that always queues again would never end; after many rounds the rest leaks.
        for _ in 0..SHUTDOWN_ROUNDS {
            let posted = std::mem::take(&mut *self.posted.borrow_mut());
            let timers = self.timers.borrow_mut().clear();
            if posted.is_empty() && timers.is_empty() {
                break;
            }
            // Timer objects outlive their slots: tell them they stopped for good.
            for target in &timers {
                if let TimerTarget::Borrowed(weak) = target {
                    if let Some(handler) = weak.upgrade() {
                        handler.loop_gone();
                    }
                }
            }
            drop((posted, timers));
        }
        // Notifiers can never be triggered again: they say so (disabled), and their
        // descriptors leave the poller.
        let watches: Vec<_> = self
            .fd_watches
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for watch in watches {
            watch.loop_gone();
        }
        // Sources hold only weak references to their handlers.
        self.sources.borrow_mut().clear();
        self.shared.drain_remote(drop);
    }
}

/// `d` rounded up to whole milliseconds, the poller's unit. A host that waits in milliseconds
/// (poll(2), GLib, Qt) and drops the fraction then never wakes before the deadline, to find a
/// timeout under a millisecond that it would wait as zero, again and again, until the deadline.
fn ceil_millis(d: Duration) -> Duration {
    match d.subsec_nanos() % 1_000_000 {
        0 => d,
        part => d.saturating_add(Duration::from_nanos(u64::from(1_000_000 - part))),
    }
}

/// Rounds of dropping queued work at shutdown before giving up on work that keeps queueing more.
const SHUTDOWN_ROUNDS: usize = 64;

struct DepthGuard<'a>(&'a Cell<u32>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

struct OnceTimer(Cell<Option<Box<dyn FnOnce()>>>);

impl TimerHandler for OnceTimer {
    fn fire(&self, key: TimerKey) {
        if let Some(f) = self.0.take() {
            // The slot is done; remove it once the closure ran (the queue holds our Rc).
            if let Ok(core) = LoopCore::current() {
                core.timer_remove(key);
            }
            f();
        }
    }
}

/// The event loop of one thread (KDFoundation `EventLoop`).
///
/// Creating an `EventLoop` makes it the thread's *current* loop: timers, notifiers, sockets and
/// clients created afterwards on this thread attach to it without being handed the loop. One loop
/// per thread; it is not `Send`. Use [`handle`](Self::handle) to reach it from other threads.
///
/// ```
/// use kdnet::EventLoop;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let handle = event_loop.handle();
/// event_loop.post(|| println!("runs on a later turn"));
/// std::thread::spawn(move || handle.exit(3));
/// assert_eq!(event_loop.run(), 3);
/// ```
///
/// # Embedding in another main loop
///
/// A GUI toolkit's main loop (GLib/GTK, Qt, winit) can drive the loop instead of [`run`](Self::run).
/// On the loop's thread, every iteration of the host:
///
/// 1. reads [`next_timeout`](Self::next_timeout): `Some(ZERO)` when work is waiting, the time
///    to the next timer (whole milliseconds, rounded up), or `None` when only the descriptor can
///    bring work. Read it again before every wait: work a turn left behind (a closure a slot
///    posted, a timer a slot started) shows there, not on the descriptor;
/// 2. sleeps until [`as_raw_fd`](Self::as_raw_fd) is readable or that timeout passed. The
///    descriptor may be watched level-triggered (poll(2), GLib's `unix_fd_add`, Qt's
///    `QSocketNotifier`) or edge-triggered (`EPOLLET`, mio, tokio's `AsyncFd`): readiness a turn
///    left for the next one (a turn takes at most 256 events) brings no new edge, and
///    `next_timeout` is zero while it waits. The descriptor becomes readable when work arrives
///    from outside a turn: I/O, a closure posted from any thread, a deferred slot queued, a
///    timer started (or restarted) that is due before the timeout `next_timeout` last gave (any
///    timer when it gave `None`, or was never asked): the host turns the loop by then anyway;
/// 3. calls `process_events(Some(Duration::ZERO))`, which never blocks and runs the slots on
///    the host's thread. A slot may turn the loop itself ([`foundation::process_events`](process_events)
///    for a nested wait); what it handles is not left for the host. If the host's dispatch can be
///    re-entered (a slot opens a modal dialog that runs the toolkit's loop), the dispatch calls
///    [`foundation::process_events`](process_events) too, which needs no `&mut EventLoop`; a
///    toolkit that does not re-enter a source by default (GLib: `g_source_set_can_recurse`)
///    must be told to, or kdnet's slots wait until the dialog closes.
///
/// Host code may also wait in the loop itself, outside the host's own turn: a handler of the
/// toolkit's that calls [`HttpClient::send_and_wait`](crate::network::http::HttpClient::send_and_wait),
/// or [`foundation::process_events`](process_events) with a timeout other than zero. The host
/// then does not read `next_timeout` again before it sleeps (GLib ran `prepare` before the
/// handler; a Qt `QTimer` was set after the host's last turn), so when such a turn returns and
/// has left work the host would sleep past (a timer it started that is due before the timeout
/// the host was last given, or any after `None`; a closure it posted; a quit it took, for
/// [`take_exit_request`](Self::take_exit_request)), it makes the
/// descriptor readable, as a post does. A turn with a zero timeout is taken for the host's
/// own, after which the host reads `next_timeout`, and does not.
///
/// With GLib, a custom `Source` fits: `prepare` reports ready when `next_timeout()` is zero,
/// else gives it as the timeout (whole milliseconds; none for `None`); `check` reports ready
/// when the descriptor (added with `add_unix_fd`, `G_IO_IN`) is readable **or** `next_timeout()`
/// is zero by then; `dispatch` calls `process_events(Some(ZERO))` and keeps the source. GLib
/// dispatches only what `prepare` or `check` reported ready, and a timer falling due or a
/// closure a slot posted does not make the descriptor readable: a `check` that looked at the
/// descriptor alone would never dispatch them, and GLib would spin with a zero timeout.
///
/// With Qt, a `QSocketNotifier` (`Read`) on the descriptor and a single-shot `QTimer` set to
/// `next_timeout()` after every `process_events` (stopped for `None`), both calling
/// `process_events`, suffice without an "about to block" hook: work a Qt slot or another
/// thread adds between turns (a post, a quit, a timer started that is due before the `QTimer`,
/// also by the turns of a nested wait such as `send_and_wait` in a Qt slot) makes the
/// descriptor readable.
///
/// With winit, which
/// watches no descriptors, a helper thread waits for the descriptor to be readable, wakes the
/// event loop with an `EventLoopProxy` user event and waits until the main thread has called
/// `process_events` before waiting again (the descriptor stays readable until then); the main
/// thread sets `ControlFlow::WaitUntil(now + next_timeout)`.
///
/// [`quit`](Self::quit) and [`exit`](Self::exit) (and a [`LoopHandle`]'s, which slots and other
/// threads call) end `run()`; a host learns of them from
/// [`take_exit_request`](Self::take_exit_request) after each `process_events`, and decides itself
/// what stopping means.
///
/// The host below is a second mio poller (edge-triggered):
///
/// ```
/// use kdnet::{EventLoop, Timer};
/// use mio::{Events, Interest, Poll, Token, unix::SourceFd};
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// let mut event_loop = EventLoop::new()?;
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let _timer = Timer::create_recurring(Duration::from_millis(5), move || t.set(t.get() + 1))?;
/// let (handle, posted) = (event_loop.handle(), Arc::new(AtomicBool::new(false)));
/// let p = posted.clone();
/// std::thread::spawn(move || handle.post(move || p.store(true, Ordering::SeqCst)));
///
/// let mut host = Poll::new()?;
/// let fd = event_loop.as_raw_fd();
/// host.registry().register(&mut SourceFd(&fd), Token(0), Interest::READABLE)?;
/// let mut events = Events::with_capacity(4);
/// while ticks.get() < 3 || !posted.load(Ordering::SeqCst) {
///     host.poll(&mut events, event_loop.next_timeout())?;
///     event_loop.process_events(Some(Duration::ZERO))?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EventLoop {
    core: Rc<LoopCore>,
}

impl EventLoop {
    /// Creates the calling thread's event loop.
    ///
    /// Fails with [`LoopError::AlreadyExists`] if the thread already has one.
    pub fn new() -> Result<EventLoop, LoopError> {
        if LoopCore::current().is_ok() {
            return Err(LoopError::AlreadyExists);
        }
        let poll = Poll::new().map_err(|e| LoopError::io("creating the poller", e))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| LoopError::io("cloning the poll registry", e))?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)
            .map_err(|e| LoopError::io("creating the waker", e))?;
        let shared = Shared::new(waker);
        let core = Rc::new(LoopCore {
            poll: RefCell::new(poll),
            registry,
            events: RefCell::new(Events::with_capacity(EVENTS_PER_POLL)),
            sources: RefCell::new(SourceRegistry::new()),
            timers: RefCell::new(TimerQueue::new()),
            posted: RefCell::new(VecDeque::new()),
            posted_taken: Cell::new(0),
            shared,
            quit: Cell::new(None),
            later_quit_taken: Cell::new(false),
            depth: Cell::new(0),
            ready: RefCell::new(Vec::with_capacity(EVENTS_PER_POLL)),
            ready_next: Cell::new(0),
            poll_was_full: Cell::new(false),
            read_buffer: RefCell::new(Vec::new()),
            fd_watches: FdWatchTable::default(),
            host_wait: Cell::new(HostWait::Never),
            host_rung: Cell::new(false),
        });
        let waker_shared = Arc::downgrade(&core.shared);
        core.evaluator().set_wake_owner(move || {
            if let Some(shared) = waker_shared.upgrade() {
                shared.wake();
            }
        });
        CURRENT.with(|c| *c.borrow_mut() = Rc::downgrade(&core));
        Ok(EventLoop { core })
    }

    /// Runs until [`quit`](Self::quit) or [`exit`](Self::exit) (from here, a slot, or any thread
    /// through a [`LoopHandle`]) and returns the exit code. A quit requested before `run` makes it
    /// return at once (after running the closures posted before it, if it came through a
    /// [`LoopHandle`]). A quit a slot asks for ends `run` after that slot's turn, once the
    /// closures posted before the quit ran: no I/O, timer or deferred slot that became ready or
    /// due after that turn is dispatched (it stays pending for the next `run` or
    /// [`process_events`](Self::process_events)). The last turn runs every closure queued when it
    /// began, also those posted after the quit by the slots of the turn that asked for it; a
    /// quit asked by a posted closure ends its turn once that turn's closures ran (no timer of
    /// that turn fires), and the next turn runs the closures queued by then. Of two quits the
    /// later wins, and one through a handle ends `run` only after the closures posted before it
    /// ran, also when it comes while an earlier quit is pending (`run` turns once more to take
    /// it). Once a turn took such a later quit (also a turn nested in a slot or closure, which
    /// ran the closures posted before it), a quit through a handle asked since is spent with it:
    /// `run` returns its code after the current turn, without another (as
    /// [`take_exit_request`](Self::take_exit_request) reports it after that turn), so that a
    /// slot asking on every turn cannot keep `run` from returning. Closures posted after the last
    /// turn began stay queued: the next `run` or `process_events` runs each once, and dropping
    /// the loop drops them without running them (as Qt keeps the events posted to a thread
    /// whose loop quit for the next loop, and deletes them with their receiver). Returns `-1` if
    /// the poller itself fails (logged at error level).
    pub fn run(&mut self) -> i32 {
        loop {
            // A quit through a handle asked after the pending one wins, once the closures posted
            // before it ran: `take_exit_request` leaves it to the turn below, which takes it,
            // runs them and ends there. One asked since a turn took such a quit (this loop's, or
            // one nested in it) is spent with it.
            if self.core.quit.get().is_some()
                && let Some(code) = self.take_exit_request()
            {
                return code;
            }
            // The only call of the turn here, so that it is inlined into this loop.
            if let Err(e) = self.core.turn_inner(None, false) {
                log::error!("event loop stopped: {e}");
                return -1;
            }
        }
    }

    /// Runs one turn, waiting at most `timeout` (`None`: until something happens,
    /// `Some(Duration::ZERO)`: not at all). Returns how many callbacks this turn dispatched
    /// itself (not those of a turn nested in one of them): posted closures, readiness events
    /// handed to a descriptor's handler (one each, also when a slot earlier in the turn disabled
    /// the notifier it was for, or the socket found nothing to read: the count says what the
    /// loop handed out, not what reached a slot), timers taken off the heap (also one whose own
    /// slot waits in a nested loop, which is not fired again) and deferred slots.
    ///
    /// It does not wait when work is already there: closures queued (a turn that runs closures
    /// posted earlier returns without waiting, since one may have done what the caller waits
    /// for), timers due, deferred slots queued.
    ///
    /// Slots and closures the loop runs cannot reach the `EventLoop`; they turn it (a nested
    /// loop) with [`foundation::process_events`](process_events).
    ///
    /// With a timeout other than zero it is taken for a wait of host code, not for an embedding
    /// host's own turn: see [Embedding](Self#embedding-in-another-main-loop).
    pub fn process_events(&mut self, timeout: Option<Duration>) -> Result<usize, LoopError> {
        self.core.turn(timeout)
    }

    /// Asks [`run`](Self::run) to return 0 (a host driving the loop learns it from
    /// [`take_exit_request`](Self::take_exit_request)).
    pub fn quit(&self) {
        self.exit(0);
    }

    /// Asks [`run`](Self::run) to return `code` (a host driving the loop learns it from
    /// [`take_exit_request`](Self::take_exit_request)).
    ///
    /// The latest request wins: one asked through a [`LoopHandle`] before this call and not yet
    /// taken by a turn is spent with this one (it does not end the `run()` after this one, nor
    /// replace `code`); one asked through a handle after it, before `run()` (or
    /// [`take_exit_request`](Self::take_exit_request)) took this one, replaces `code` and is
    /// spent with it, once the closures posted before it ran (`run()` runs the turn that takes
    /// it first).
    pub fn exit(&self, code: i32) {
        // Not on a hot path: one lock-free load when no handle asked.
        let _superseded = self.core.shared.take_quit();
        self.core.later_quit_taken.set(false);
        self.core.quit.set(Some(code));
    }

    /// Queues `f` to run on a later turn of this loop; closures run in posting order, and one
    /// posted while posted closures are running waits for the next turn.
    ///
    /// Posting order spans threads: a closure another thread posted through a [`LoopHandle`]
    /// before this call (that thread was joined, or said so through a channel) runs before `f`.
    ///
    /// A closure that already is a `Box<dyn FnOnce()>` (or `Box<dyn FnOnce() + Send>`) is queued
    /// as it is, not boxed again.
    pub fn post(&self, f: impl FnOnce() + 'static) {
        self.core.post(posted_box(f));
    }

    /// Takes the pending request to quit, as [`run`](Self::run) does between turns: for a host
    /// that drives the loop with [`process_events`](Self::process_events) (see
    /// [Embedding](Self#embedding-in-another-main-loop)) and must learn that a slot, or another
    /// thread, asked to stop. Check it after every `process_events`.
    ///
    /// Returns the code `run()` would have returned (the latest [`exit`](Self::exit) code, 0 for
    /// [`quit`](Self::quit)), once: the request is consumed, so a later `run()` or
    /// `take_exit_request` does not see it again. A quit asked through a [`LoopHandle`] (which is
    /// what a slot can reach, or another thread) is taken by the next turn, after the closures
    /// posted before it ran, exactly as it ends `run()`; until then
    /// [`next_timeout`](Self::next_timeout) is zero (and, asked from outside a turn or from a
    /// slot after the turn's poll, [`as_raw_fd`](Self::as_raw_fd) readable), so that turn comes
    /// at once. While an earlier request is pending here (an [`exit`](Self::exit), or a quit a
    /// turn took), a later one through a handle wins, but only once the closures posted before
    /// it ran, as for `run()`: until a turn took it this returns `None` (and `next_timeout` is
    /// zero), then its code, and the earlier request is spent with it, as is one asked through
    /// a handle since that turn took it (in that turn, or, when a turn nested in a callback took
    /// it, in the rest of the turn around it), so that a slot asking on every turn cannot keep the
    /// exit from being reported, as it cannot keep `run()` from returning.
    ///
    /// ```
    /// use kdnet::{EventLoop, Timer};
    /// use std::time::Duration;
    ///
    /// let mut event_loop = EventLoop::new()?;
    /// let handle = event_loop.handle();
    /// // A slot ends the program, as it would end run().
    /// let _timer = Timer::create_timeout(Duration::from_millis(5), move || handle.exit(2))?;
    /// let code = loop {
    ///     // A host would sleep here on as_raw_fd() for at most next_timeout().
    ///     event_loop.process_events(event_loop.next_timeout())?;
    ///     if let Some(code) = event_loop.take_exit_request() {
    ///         break code;
    ///     }
    /// };
    /// assert_eq!(code, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_exit_request(&self) -> Option<i32> {
        if self.core.quit.get().is_some()
            && !self.core.later_quit_taken.get()
            && self.core.shared.quit_requested()
        {
            // A later quit through a handle: the next turn takes it, after the closures posted
            // before it (as `run()` does); `next_timeout` is zero meanwhile. Once a turn took
            // one, a quit asked since is spent with it, as in `run()`: a slot that asks on every
            // turn would otherwise keep the host from ever learning of the exit.
            return None;
        }
        self.take_quit()
    }

    /// A `Send + Sync` handle for posting, waking and quitting from any thread.
    pub fn handle(&self) -> LoopHandle {
        self.core.handle()
    }

    /// The evaluator this loop runs every turn; connect deferred slots to it to run them on this
    /// loop's thread. When the loop is dropped, the calls still queued are dropped without
    /// running, and a deferred connection to it disconnects itself at its next emit
    /// (see [`Signal::connect_deferred`](crate::Signal::connect_deferred)).
    pub fn connection_evaluator(&self) -> Arc<ConnectionEvaluator> {
        Arc::clone(self.core.evaluator())
    }

    /// How long a host loop may sleep before calling [`process_events`](Self::process_events):
    /// zero when work is pending (including readiness the last poll had no room for: a poll
    /// takes at most 256 events), the time to the next timer, or `None` when only I/O can wake us.
    ///
    /// The time to a timer is rounded up to whole milliseconds, as the loop's own wait in
    /// [`run`](Self::run) is: a host that waits in milliseconds (poll(2), GLib, Qt) may drop the
    /// fraction and still finds the timer due when it wakes. It is zero only when something can
    /// be done at once (or, after a poll that filled its buffer, may be: the next turn finds out
    /// without waiting).
    ///
    /// A quit asked through a [`LoopHandle`] and not yet taken by a turn makes it zero too: a
    /// closure posted before the poll of a turn (`post(move || handle.quit())`) writes its
    /// wake-up before that poll, which spends it, so only the timeout tells the host that the
    /// next turn has something to take (see [`take_exit_request`](Self::take_exit_request)).
    ///
    /// The loop takes the host to sleep at most the time given (read before every wait, as
    /// [Embedding](Self#embedding-in-another-main-loop) says): a timer started or restarted between turns (from host
    /// code) then makes the descriptor readable only when it is due earlier than that, or
    /// whenever the last answer was `None` (or none was asked yet). One due later wakes nobody:
    /// the host turns the loop by the time it was given and reads the new timeout after that
    /// turn. The same holds for what a wait of host code in the loop leaves behind (a turn
    /// begun outside any turn with a timeout other than zero: `send_and_wait` from a GUI
    /// handler, [`foundation::process_events`](process_events) in its loop): a timer its turns
    /// started that is due earlier than the last answer (any after `None`), a closure they
    /// posted and left, a quit to report, make the descriptor readable when such a turn returns.
    pub fn next_timeout(&self) -> Option<Duration> {
        // Asked here, not in the turn's own timeout: a turn that ran posted closures does not
        // wait anyway, and run() checks for the quit itself.
        if self.core.shared.quit_requested() {
            self.core.host_wait.set(HostWait::Now);
            return Some(Duration::ZERO);
        }
        self.core.host_next_timeout()
    }

    /// The poller's descriptor, for a host loop to watch for readability, level- or
    /// edge-triggered (see [Embedding](Self#embedding-in-another-main-loop)). It becomes readable
    /// when work arrives between turns: I/O, a closure posted (from any thread), a deferred slot
    /// queued, a timer started that is due before the timeout
    /// [`next_timeout`](Self::next_timeout) last gave (see there), and when a wait of host code
    /// in the loop (`send_and_wait` from a GUI handler) returns with such work left. Work left
    /// by the host's own turn (a closure posted while it ran, a
    /// timer due meanwhile, readiness beyond the 256 events one poll takes) need not make it
    /// readable again: [`next_timeout`](Self::next_timeout), read after every
    /// [`process_events`](Self::process_events), is zero then.
    pub fn as_raw_fd(&self) -> sys::RawFd {
        sys::poll_fd(&self.core.poll.borrow())
    }

    /// How many `process_events`/`run` turns are on the stack. Zero whenever the caller holds
    /// the `EventLoop` (no turn can be running then); code running inside a turn (slots, posted
    /// closures) asks [`foundation::dispatch_depth`](dispatch_depth) instead.
    pub fn dispatch_depth(&self) -> u32 {
        self.core.depth.get()
    }

    /// Number of registered I/O sources (descriptors, sockets).
    pub fn registered_sources(&self) -> usize {
        self.core.source_count()
    }

    /// Number of existing timers (armed or not).
    pub fn timer_count(&self) -> usize {
        self.core.timers.borrow().len()
    }

    fn take_quit(&self) -> Option<i32> {
        // A quit from another thread is only taken at the start of a turn, just before that turn
        // drains the closures posted from other threads: everything posted before `quit()` runs.
        let code = self.core.quit.take()?;
        self.core.later_quit_taken.set(false);
        // But one asked through a handle while this one was pending is later (`exit` spends a
        // handle's earlier quit, a turn takes it): the latest wins, and it is spent with this
        // one rather than left to end the next `run()` at once. One load, only when quitting.
        Some(self.core.shared.take_quit().unwrap_or(code))
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // try_with: a loop kept in a thread-local may be dropped after CURRENT at thread exit
        // (nothing to unset then; a panic there aborts the process).
        let _ = CURRENT.try_with(|c| {
            let mut current = c.borrow_mut();
            if Weak::ptr_eq(&current, &Rc::downgrade(&self.core)) {
                *current = Weak::new();
            }
        });
        self.core.shutdown();
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("sources", &self.core.source_count())
            .field("timers", &self.core.timers.borrow().len())
            .field("posted", &self.core.posted.borrow().len())
            .field("depth", &self.core.depth.get())
            .finish()
    }
}

/// Queues `f` on the calling thread's loop (KDFoundation `postEvent` for closures).
pub fn post(f: impl FnOnce() + 'static) -> Result<(), LoopError> {
    LoopCore::current()?.post(posted_box(f));
    Ok(())
}

/// `f` boxed for the posted queue, or `f` itself when the caller already boxed it.
fn posted_box<F: FnOnce() + 'static>(f: F) -> Posted {
    unbox::<Posted, F>(f)
        .or_else(|f| unbox::<RemoteFn, F>(f).map(|f| -> Posted { f }))
        .unwrap_or_else(|f| Box::new(f))
}

/// Runs one turn of the calling thread's loop, as [`EventLoop::process_events`] does, from code
/// that cannot reach the `EventLoop` itself: a slot, a posted closure or a timer callback waiting
/// for something (KDFoundation's `EventLoop::instance()->processEvents()`, a modal dialog's
/// nested loop). Fails with [`LoopError::NoEventLoop`] on a thread without a loop.
///
/// Inside a turn this nests one (see [`dispatch_depth`]). The nested turn dispatches
/// everything but the emissions already on the stack: a notifier or timer whose own slot is
/// waiting is not delivered inside it (it is once the slot returns, if its condition still
/// holds), and deferred slots wait for the evaluation that runs them to end. What the nested
/// turns handle is not handled again by the outer one, so an embedding host (see
/// [`EventLoop::as_raw_fd`]) finds nothing left over when the slot returns. Each turn counts
/// only the callbacks it ran itself, and a stage the nested turn interrupted goes on only with
/// the work that was there when it began: a closure posted while the nested turn ran (say by the
/// rest of the outer turn's batch, which the nested turn runs) waits for the next turn.
///
/// Called outside any turn with a timeout other than zero (host code of an embedding program
/// waiting in the loop, see [Embedding](EventLoop#embedding-in-another-main-loop)), the turn
/// makes the loop's descriptor readable when it returns if it left work that the host, sleeping
/// for what [`EventLoop::next_timeout`] last told it, would sleep past.
///
/// ```
/// use kdnet::{EventLoop, foundation};
/// use std::{cell::Cell, rc::Rc, sync::mpsc, time::Duration};
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let handle = event_loop.handle();
/// let answer = Rc::new(Cell::new(0));
/// let a = answer.clone();
/// event_loop.post(move || {
///     // Ask a worker, and wait for its reply (posted to this loop) without returning.
///     let (tx, rx) = mpsc::channel();
///     std::thread::spawn(move || handle.post(move || tx.send(6 * 7).unwrap()).unwrap());
///     let reply = loop {
///         if let Ok(reply) = rx.try_recv() {
///             break reply;
///         }
///         foundation::process_events(Some(Duration::from_secs(5))).unwrap();
///     };
///     a.set(reply);
/// });
/// event_loop.process_events(Some(Duration::ZERO)).unwrap();
/// assert_eq!(answer.get(), 42);
/// ```
pub fn process_events(timeout: Option<Duration>) -> Result<usize, LoopError> {
    LoopCore::current()?.turn(timeout)
}

/// The exit code a quit or exit asked of the calling thread's loop will make
/// [`run`](EventLoop::run) return, while that request is pending (`None` without one, or
/// without a loop). A nested loop that a slot runs with [`process_events`] checks it to stop
/// waiting when the program is asked to end, as Qt's `exit()` ends nested loops; the request is
/// not taken, so the outer `run()` still ends. A quit through a [`LoopHandle`] (from a slot or
/// another thread) shows here once a turn has begun since it was asked, as it ends `run()`.
/// [`HttpClient::send_and_wait`](crate::network::http::HttpClient::send_and_wait) stops this
/// way.
pub fn exit_requested() -> Option<i32> {
    LoopCore::current()
        .ok()
        .and_then(|core| core.exit_requested())
}

/// How many turns of the calling thread's loop are on the stack: 0 outside any turn (or without
/// a loop), 1 in a slot or closure the loop called, more when it runs inside a nested loop
/// ([`process_events`] from a slot, or
/// [`HttpClient::send_and_wait`](crate::network::http::HttpClient::send_and_wait)).
pub fn dispatch_depth() -> u32 {
    LoopCore::current().map_or(0, |core| core.depth.get())
}
