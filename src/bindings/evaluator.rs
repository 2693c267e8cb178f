//! [`ConnectionEvaluator`]: the queue behind deferred connections.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type Notify = Arc<dyn Fn() + Send + Sync>;

struct Invocation {
    /// Cleared when the connection is disconnected or its signal dropped: the call is then skipped.
    alive: Arc<AtomicBool>,
    call: Box<dyn FnOnce() + Send>,
}

/// A thread-safe queue of slot invocations made by [`Signal::connect_deferred`](super::Signal::connect_deferred)
/// (KDBindings `ConnectionEvaluator`).
///
/// Emitting threads enqueue; one thread calls [`evaluate_deferred_connections`](Self::evaluate_deferred_connections)
/// to run them in FIFO order. Each [`EventLoop`](crate::EventLoop) owns one, wakes itself when an
/// invocation is added, and evaluates it every turn; once that loop is dropped, invocations queued
/// on its evaluator are dropped without running, and a connection to it disconnects itself at its
/// next emit.
///
/// A standalone evaluator is dropped with its last `Arc` (deferred connections hold only a weak
/// reference): the invocations still queued are dropped without running, and each connection
/// to it disconnects itself at its next emit, as for a dropped loop. An evaluation under way
/// holds the evaluator until it returns; invocations queued meanwhile on an evaluator nobody
/// else holds are dropped then.
///
/// ```
/// use kdnet::{ConnectionEvaluator, Signal};
/// use std::sync::{Arc, mpsc, atomic::{AtomicI32, Ordering}};
///
/// let evaluator = ConnectionEvaluator::new();
/// let total = Arc::new(AtomicI32::new(0));
/// let (emitted_tx, emitted_rx) = mpsc::channel();
/// let (done_tx, done_rx) = mpsc::channel::<()>();
/// let worker = std::thread::spawn({
///     let (evaluator, total) = (evaluator.clone(), total.clone());
///     move || {
///         let signal: Signal<i32> = Signal::new();
///         signal
///             .connect_deferred(&evaluator, move |v| { total.fetch_add(*v, Ordering::SeqCst); })
///             .release();
///         signal.emit(&5);
///         signal.emit(&4);
///         emitted_tx.send(()).unwrap();
///         // Dropping the signal would cancel its queued calls, so wait until they ran.
///         done_rx.recv().unwrap();
///     }
/// });
/// emitted_rx.recv().unwrap();
/// assert_eq!(total.load(Ordering::SeqCst), 0); // queued, not run
/// assert_eq!(evaluator.evaluate_deferred_connections(), 2);
/// assert_eq!(total.load(Ordering::SeqCst), 9);
/// done_tx.send(()).unwrap();
/// worker.join().unwrap();
/// ```
pub struct ConnectionEvaluator {
    queue: Mutex<Vec<Invocation>>,
    /// Set after each enqueue, cleared before each evaluation: an idle evaluator costs a loop
    /// turn one atomic load instead of a lock.
    queued: AtomicBool,
    /// An evaluation is running (see `evaluate_deferred_connections`).
    evaluating: AtomicBool,
    /// A call was turned away while an evaluation ran: when it ends, the owner is notified again
    /// (the wake-up that led to the refused call was spent on it).
    refused: AtomicBool,
    /// Closed by its owner (an event loop that is gone): nothing will evaluate it again, so what
    /// is queued is dropped (see `close`).
    closed: AtomicBool,
    on_invocation_added: Mutex<Option<Notify>>,
    /// How the owning event loop wakes itself; kept apart from `on_invocation_added`, which users
    /// may set too (KDBindings' hook) without silencing the loop.
    wake_owner: OnceLock<Notify>,
}

impl ConnectionEvaluator {
    /// Creates an empty evaluator.
    pub fn new() -> Arc<Self> {
        Arc::new(ConnectionEvaluator {
            queue: Mutex::new(Vec::new()),
            queued: AtomicBool::new(false),
            evaluating: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            on_invocation_added: Mutex::new(None),
            wake_owner: OnceLock::new(),
        })
    }

    /// Runs every queued invocation whose connection is still alive, in the order they were queued;
    /// returns how many ran.
    ///
    /// Invocations queued while this runs (for example by a deferred slot emitting another signal)
    /// wait for the next call. No lock is held while a slot runs. A call made while an evaluation
    /// runs (a deferred slot turning a nested event loop, say) returns 0 at once, as KDBindings'
    /// does: it would run later invocations before the rest of the running batch; when the running
    /// evaluation ends, the [`set_on_invocation_added`](Self::set_on_invocation_added) callback is
    /// called again, so that the owner comes back for what is left. If a slot
    /// panics, the invocations after it stay queued, ahead of newer ones (those of connections
    /// disconnected meanwhile are dropped, as a disconnect drops the queued ones), and the panic
    /// goes on to the caller; the owner is notified as above, for those and for a call turned
    /// away meanwhile.
    ///
    /// A call made while the thread unwinds from a panic runs nothing and returns 0, leaving the
    /// calls queued for the next evaluation: an owner whose notification callback evaluates at
    /// once is called as a slot's panic ends an evaluation, and a slot run then would run in the
    /// middle of that unwinding, where a panic of its own either aborts the process or, caught,
    /// never reaches a caller. So every slot's panic reaches the caller of the evaluation that
    /// ran it. Such an owner evaluates again once it has handled the panic (the next emit
    /// notifies it too); an event loop's evaluator is evaluated by the loop's next turn.
    pub fn evaluate_deferred_connections(&self) -> usize {
        // One load of a process-wide count unless some thread is panicking.
        if std::thread::panicking() {
            return 0;
        }
        // Cleared before taking: an enqueue racing with us sets it again after pushing, so its
        // invocation runs in this call or the next one.
        if !self.queued.swap(false, Ordering::AcqRel) {
            return 0;
        }
        if self.evaluating.swap(true, Ordering::AcqRel) {
            // Nested (or concurrent): what is queued waits for the next call.
            self.queued.store(true, Ordering::Release);
            self.refused.store(true, Ordering::SeqCst);
            // A concurrent evaluation may have ended since we saw it run, and looked for a
            // refusal before we marked ours: then nobody would tell the owner. Either it sees
            // the mark or we see it ended (both SeqCst), and whoever takes the mark notifies.
            if !self.evaluating.load(Ordering::SeqCst) && self.refused.swap(false, Ordering::SeqCst)
            {
                self.notify();
            }
            return 0;
        }
        let mut batch = Batch {
            evaluator: self,
            rest: std::mem::take(&mut *lock(&self.queue)).into_iter(),
        };
        let mut ran = 0;
        for invocation in batch.rest.by_ref() {
            if invocation.alive.load(Ordering::Acquire) {
                (invocation.call)();
                ran += 1;
            }
        }
        ran
    }

    /// Whether any invocation is waiting (may briefly say `true` for one that a concurrent
    /// evaluation already took).
    pub fn has_pending(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Sets a callback run on the emitting thread each time an invocation is queued
    /// (KDBindings `onInvocationAdded`), replacing the one set before. It runs after the
    /// invocation is queued (and, on an event loop's evaluator, after the loop was woken), so the
    /// call may already be under way or done on the evaluating thread when it runs. It also runs
    /// once more when an evaluation ends with work left, so that the owner comes back for it:
    /// one that turned a call away, on the thread of that evaluation (or, if it ended just as
    /// the call was turned away, on the thread of the turned-away call), and one that a
    /// panicking slot ended with invocations left after it. An evaluation that a slot's panic
    /// ends calls it while the panic unwinds: a panic of the callback's own is caught there
    /// (the panic hook reports it) and the slot's goes on, since a second panic escaping would
    /// abort the process; and an evaluation it asks for then runs nothing (see
    /// [`evaluate_deferred_connections`](Self::evaluate_deferred_connections)), so a callback
    /// that evaluates at once runs the rest only when it is next called, or evaluated, after
    /// the panic. It may run more often than invocations are queued. On an
    /// event loop's evaluator it runs in addition to the loop's own wake-up.
    pub fn set_on_invocation_added<F>(&self, callback: F)
    where
        F: Fn() + Send + Sync + 'static,
    {
        *lock(&self.on_invocation_added) = Some(Arc::new(callback));
    }

    /// Whether a call to [`evaluate_deferred_connections`](Self::evaluate_deferred_connections)
    /// would run something now: invocations are waiting and no evaluation is running. While one
    /// runs (a deferred slot turning a nested loop), the nested turns cannot run what is queued,
    /// so they must not count it as work to do at once: they would poll without waiting, a busy
    /// loop for as long as the slot waits. Nor while the thread unwinds from a panic, when an
    /// evaluation runs nothing (a guard's `Drop` that waits in the loop would spin).
    pub(crate) fn has_runnable(&self) -> bool {
        self.queued.load(Ordering::Acquire)
            && !self.evaluating.load(Ordering::Acquire)
            && !std::thread::panicking()
    }

    /// Queues `call`; false (dropping it) when the evaluator is closed: nothing will run it.
    pub(crate) fn enqueue(&self, alive: Arc<AtomicBool>, call: Box<dyn FnOnce() + Send>) -> bool {
        let mut queue = lock(&self.queue);
        if self.closed.load(Ordering::Acquire) {
            drop(queue);
            // Dropped outside the lock: its captures' `Drop` may emit again.
            drop(call);
            return false;
        }
        queue.push(Invocation { alive, call });
        drop(queue);
        self.queued.store(true, Ordering::Release);
        self.notify();
        true
    }

    /// Removes the invocations of the connection whose flag is `alive` (it was disconnected),
    /// dropping them outside the lock: their captures' `Drop` may emit again.
    pub(crate) fn cancel(&self, alive: &Arc<AtomicBool>) {
        let cancelled: Vec<Invocation> = {
            let mut queue = lock(&self.queue);
            if !queue.iter().any(|i| Arc::ptr_eq(&i.alive, alive)) {
                return;
            }
            let (cancelled, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *queue)
                .into_iter()
                .partition(|i| Arc::ptr_eq(&i.alive, alive));
            *queue = kept;
            if queue.is_empty() {
                // Under the lock: an enqueue pushes under it and sets the flag after.
                self.queued.store(false, Ordering::Release);
            }
            cancelled
        };
        drop(cancelled);
    }

    /// Called by the owning event loop when it is dropped: nothing will evaluate this evaluator
    /// again, so the queued invocations are dropped now and later ones as they are queued (as
    /// `LoopHandle::post` refuses closures once the loop is gone), instead of piling up for as
    /// long as an emitting thread keeps the evaluator alive.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut queue = lock(&self.queue);
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        self.queued.store(false, Ordering::Release);
        drop(dropped);
    }

    /// Sets how the owning event loop wakes itself when an invocation is queued (once).
    pub(crate) fn set_wake_owner(&self, wake: impl Fn() + Send + Sync + 'static) {
        if self.wake_owner.set(Arc::new(wake)).is_err() {
            log::warn!("a ConnectionEvaluator has one owning event loop");
        }
    }

    fn notify(&self) {
        if let Some(wake) = self.wake_owner.get() {
            wake();
        }
        let notify = lock(&self.on_invocation_added).clone();
        if let Some(notify) = notify {
            notify();
        }
    }
}

/// The invocations of a running evaluation not yet run. Dropped with some left only when a slot
/// panicked: they go back to the front of the queue (before anything queued since), except the
/// ones of connections disconnected meanwhile, which are dropped (their disconnect would have
/// removed them from the queue at once). Either way the evaluation ends, and the owner is told of
/// the calls put back and of any call turned away meanwhile (also while a panic unwinds).
struct Batch<'a> {
    evaluator: &'a ConnectionEvaluator,
    rest: std::vec::IntoIter<Invocation>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let mut put_back = false;
        if self.rest.len() > 0 {
            let (live, cancelled): (Vec<_>, Vec<_>) = self
                .rest
                .by_ref()
                .partition(|invocation| invocation.alive.load(Ordering::Acquire));
            let mut queue = lock(&self.evaluator.queue);
            let closed = self.evaluator.closed.load(Ordering::Acquire);
            if !closed && !live.is_empty() {
                queue.splice(0..0, live);
                self.evaluator.queued.store(true, Ordering::Release);
                drop(queue);
                put_back = true;
            } else {
                drop(queue);
                // Nothing will run them (closed): dropped outside the lock.
                drop(live);
            }
            // Outside the lock too: their captures' `Drop` may emit again.
            drop(cancelled);
        }
        // SeqCst, as the refused call's mark and check (see `evaluate_deferred_connections`).
        self.evaluator.evaluating.store(false, Ordering::SeqCst);
        // A call refused meanwhile (on another thread, say) left work for a later call, and so
        // did a slot that panicked (the calls after it were put back): tell the owner, whose
        // wake-up was spent on the refused call (or on this one). The mark is taken either way.
        let refused = self.evaluator.refused.swap(false, Ordering::SeqCst);
        if refused || put_back {
            if std::thread::panicking() {
                // Unwinding from a slot: a callback that panicked too would abort the process.
                // Its panic is caught here (the panic hook has reported it); the slot's goes on.
                let notify = std::panic::AssertUnwindSafe(|| self.evaluator.notify());
                let _ = std::panic::catch_unwind(notify);
            } else {
                self.evaluator.notify();
            }
        }
    }
}

impl fmt::Debug for ConnectionEvaluator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionEvaluator")
            .field("pending", &lock(&self.queue).len())
            .finish()
    }
}

/// A panicking slot must not make the queue unusable, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
