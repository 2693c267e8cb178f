//! [`LoopHandle`]: reaching a loop from other threads (post, wake, quit).

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::LoopError;
use crate::bindings::ConnectionEvaluator;

pub(crate) type RemoteFn = Box<dyn FnOnce() + Send>;

/// The part of a loop that other threads may touch.
pub(crate) struct Shared {
    remote: Mutex<VecDeque<RemoteFn>>,
    /// `remote` may be non-empty: lets every turn skip the lock when nothing was posted.
    remote_queued: AtomicBool,
    /// Set by the first waker since the loop's last poll returned; later wakers skip the syscall.
    /// True only while that wake-up is unconsumed (see [`Shared::wake_consumed`]).
    wake_pending: AtomicBool,
    waker: mio::Waker,
    quit: Mutex<Option<i32>>,
    /// `quit` holds a code: lets every turn skip the lock when nobody asked to quit.
    quit_requested: AtomicBool,
    closed: AtomicBool,
    /// [`LoopHandle::wake_up`] was called since a poll last asked (see [`Shared::take_woken_up`]).
    woken_up: AtomicBool,
    evaluator: Arc<ConnectionEvaluator>,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Arc<Shared> {
        Arc::new(Shared {
            remote: Mutex::new(VecDeque::new()),
            remote_queued: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            waker,
            quit: Mutex::new(None),
            quit_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            woken_up: AtomicBool::new(false),
            evaluator: ConnectionEvaluator::new(),
        })
    }

    pub(crate) fn evaluator(&self) -> &Arc<ConnectionEvaluator> {
        &self.evaluator
    }

    pub(crate) fn wake(&self) {
        // SeqCst, with the flags a waker sets before it and `wake_consumed`: see there.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::warn!("waking the event loop failed: {e}");
            }
        }
    }

    /// The loop's poll returned: any wake-up written so far is consumed (the waker is
    /// edge-triggered), so the next waker must write again.
    ///
    /// Cleared here, not when the loop drains its queues: a wake-up written between the drain and
    /// the poll (a deferred slot queued by a posted closure, a post from another thread) is
    /// consumed by that poll, and a flag still set afterwards made every later waker skip its
    /// write, so a host sleeping on the loop's descriptor never woke. A waker that sets the flag
    /// after this store writes after the poll returned: its wake-up stays pending for the next poll.
    ///
    /// A store-buffering pair: a waker sets its flag (`remote_queued`, `quit_requested`), then
    /// reads `wake_pending`; the loop clears `wake_pending`, then reads those flags. With
    /// acquire/release alone both reads may see the old values (x86 lets a load pass an earlier
    /// store to another address): the waker skips its write, the loop misses the work, and it
    /// sleeps with a closure queued. All four accesses are SeqCst, which forbids that outcome:
    /// one side sees the other's store. Here that is a locked exchange instead of a plain
    /// store, once per poll.
    pub(crate) fn wake_consumed(&self) {
        self.wake_pending.swap(false, Ordering::SeqCst);
    }

    /// Moves closures posted from other threads to `sink`, oldest first.
    pub(crate) fn drain_remote(&self, mut sink: impl FnMut(RemoteFn)) {
        let batch = std::mem::take(&mut *lock(&self.remote));
        for f in batch {
            sink(f);
        }
    }

    /// Moves closures posted from other threads to the end of `dst`, oldest first, keeping the
    /// queue's buffer: the next post does not allocate, and this thread does not free memory the
    /// posting thread allocated. Only boxes move under the lock; no closure runs or drops there.
    pub(crate) fn move_remote_into(&self, dst: &mut VecDeque<Box<dyn FnOnce()>>) {
        // A post racing with us sets `remote_queued` after pushing, so its closure moves now or
        // on the next turn, and its wake-up (if written) keeps the next poll from waiting.
        if !self.remote_queued.load(Ordering::SeqCst) {
            return;
        }
        let mut remote = lock(&self.remote);
        // Cleared under the lock posts push under: a post is drained now or flagged for the next
        // turn, never flagged with nothing queued (a stale flag made `next_timeout` zero).
        self.remote_queued.store(false, Ordering::Release);
        // One by one rather than through `drain(..)`, whose guard and iterator adapter cost more
        // than the move itself for the usual batch of one.
        while let Some(f) = remote.pop_front() {
            dst.push_back(f);
        }
    }

    /// Whether something was posted since the loop last drained. Lock-free (asked every turn): a
    /// post sets the flag after pushing, and one racing with this check writes the waker, so the
    /// next poll returns at once either way.
    pub(crate) fn has_remote_work(&self) -> bool {
        self.remote_queued.load(Ordering::SeqCst)
    }

    pub(crate) fn request_quit(&self, code: i32) {
        *lock(&self.quit) = Some(code);
        // SeqCst: read by the loop after it cleared `wake_pending` (see `wake_consumed`).
        self.quit_requested.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether a quit was asked for and not taken yet (one load).
    pub(crate) fn quit_requested(&self) -> bool {
        self.quit_requested.load(Ordering::SeqCst)
    }

    pub(crate) fn take_quit(&self) -> Option<i32> {
        // Looked at before it is taken: every turn asks, and a plain load is cheaper than the
        // swap (a locked read-modify-write) when nobody asked to quit.
        if !self.quit_requested.load(Ordering::SeqCst)
            || !self.quit_requested.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        lock(&self.quit).take()
    }

    /// Whether [`LoopHandle::wake_up`] was called since the last call: a poll that took the
    /// wake-up a wait of host code left for its host asks, so as not to take a `wake_up` made
    /// meanwhile (whose write that poll may have taken with ours) for that one and wait again.
    pub(crate) fn take_woken_up(&self) -> bool {
        self.woken_up.load(Ordering::SeqCst) && self.woken_up.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        // Under the queue lock, so a concurrent post either lands before the final drain or fails.
        let _queue = lock(&self.remote);
        self.closed.store(true, Ordering::Release);
    }
}

/// `f` itself when it already is the box `B` a queue holds (a closure the caller boxed, such as
/// a `Box<dyn FnOnce() + Send>` handed on through a trait object); else `f` back, to be boxed.
///
/// Boxing a box again cost an allocation on the posting thread, and on the loop's a second
/// indirect call and a second free (of memory another thread allocated: glibc takes that arena's
/// lock, which the posting thread's next allocation contends for). The type test is resolved at
/// compile time.
pub(crate) fn unbox<B: 'static, F: 'static>(f: F) -> Result<B, F> {
    let mut slot = Some(f);
    if let Some(boxed) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()
        .and_then(Option::take)
    {
        return Ok(boxed);
    }
    match slot {
        Some(f) => Err(f),
        // The downcast succeeds only when `F` is `B`, and then returned above.
        None => unreachable!("taken only when F is B"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread-safe handle to an [`EventLoop`](super::EventLoop): post closures, wake it or make it
/// quit from any thread. Cheap to clone.
///
/// ```
/// use kdnet::EventLoop;
/// use std::sync::mpsc;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let handle = event_loop.handle();
/// let (tx, rx) = mpsc::channel();
/// std::thread::spawn(move || {
///     handle.post(move || tx.send(std::thread::current().id()).unwrap()).unwrap();
///     handle.quit();
/// });
/// assert_eq!(event_loop.run(), 0);
/// assert_eq!(rx.recv().unwrap(), std::thread::current().id()); // ran on the loop's thread
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

impl LoopHandle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        LoopHandle { shared }
    }

    /// Queues `f` to run on the loop's thread on a later turn, in posting order: after the
    /// closures posted before it, from any thread (through a handle or on the loop's own thread).
    ///
    /// Fails with [`LoopError::LoopGone`] (dropping `f`) when the loop no longer exists.
    ///
    /// A closure that already is a `Box<dyn FnOnce() + Send>` is queued as it is, not boxed again.
    pub fn post(&self, f: impl FnOnce() + Send + 'static) -> Result<(), LoopError> {
        let f = unbox::<RemoteFn, _>(f).unwrap_or_else(|f| -> RemoteFn { Box::new(f) });
        let mut queue = lock(&self.shared.remote);
        if self.shared.closed.load(Ordering::Acquire) {
            drop(queue);
            // Dropped outside the lock: its captures' `Drop` may post again.
            drop(f);
            return Err(LoopError::LoopGone);
        }
        queue.push_back(f);
        // SeqCst: read by the loop after it cleared `wake_pending` (see `Shared::wake_consumed`).
        self.shared.remote_queued.store(true, Ordering::SeqCst);
        drop(queue);
        self.shared.wake();
        Ok(())
    }

    /// Makes the loop's `run()` return 0 (or its
    /// [`take_exit_request`](super::EventLoop::take_exit_request) report it), after the closures
    /// posted before this call ran.
    pub fn quit(&self) {
        self.exit(0);
    }

    /// Makes the loop's `run()` return `code` (or its
    /// [`take_exit_request`](super::EventLoop::take_exit_request) report it), after the closures
    /// posted before this call ran. The latest request wins: a later one through a handle
    /// replaces it, and so does an [`EventLoop::exit`](super::EventLoop::exit) made before a
    /// turn took it; asked while an earlier request is pending (an `EventLoop::exit`, or a quit
    /// a turn took and `run()` has not returned for yet), it replaces that one's code, and
    /// `run()` still returns only after the closures posted before this call ran, unless a turn
    /// already took such a later request: then this one is spent with it (`run()` returns this
    /// code after the current turn, see
    /// [`take_exit_request`](super::EventLoop::take_exit_request)). Until a turn takes it, the
    /// loop's [`next_timeout`](super::EventLoop::next_timeout) is zero.
    pub fn exit(&self, code: i32) {
        self.shared.request_quit(code);
    }

    /// Interrupts the loop's current wait without queuing anything.
    pub fn wake_up(&self) {
        // Always write: a wake-up must interrupt the wait even if a post is already pending.
        self.shared.woken_up.store(true, Ordering::SeqCst);
        self.shared.wake_pending.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            log::warn!("waking the event loop failed: {e}");
        }
    }

    /// Whether the loop still exists.
    pub fn is_alive(&self) -> bool {
        !self.shared.is_closed()
    }

    /// The loop's connection evaluator (for [`Signal::connect_deferred`](crate::Signal::connect_deferred)).
    /// Once the loop is gone, calls queued on it are dropped without running, and a deferred
    /// connection to it disconnects itself at its next emit.
    pub fn connection_evaluator(&self) -> Arc<ConnectionEvaluator> {
        Arc::clone(&self.shared.evaluator)
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("alive", &self.is_alive())
            .finish()
    }
}
