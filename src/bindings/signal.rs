//! [`Signal`]: KDBindings' `Signal<Args...>` for one thread.
//!
//! # Re-entrancy rules (where KDBindings is undefined, kdnet defines)
//!
//! A slot may do anything to the signal that is calling it. While an emit runs:
//!
//! | a slot… | effect on the running emit | afterwards |
//! |---|---|---|
//! | disconnects itself or another slot | a disconnected slot that has not run yet does **not** run | gone |
//! | blocks / unblocks another slot | checked when that slot's turn comes | as set |
//! | connects a new slot | the new slot does **not** run in this emit | runs from the next emit |
//! | calls [`Signal::disconnect_all`] | no further slot runs | all handles inactive |
//! | drops its last `Rc` to the object owning the signal | the emitter (a loop callback) holds its own reference, so the emit finishes normally | the object is dropped right after the emit, and with it every connection |
//! | emits the same signal again (nested emit) | the nested emit runs every slot except the ones already running further up the stack and those connected during the outer emit | — |
//! | panics | the panic propagates to the caller of `emit` | the signal is fully usable; the panicking slot stays connected |
//!
//! A slot's closure (with what it captured) is dropped when it is disconnected, or, if it is
//! running then, right after its call returns (also when the call panics). What it captured may
//! act on the signal as it is dropped (a [`ScopedConnection`](super::ScopedConnection) it owns
//! disconnects another slot): that counts as done at that moment, under the rules above.
//! [`Signal::disconnect_all`] and dropping the signal first disconnect every connection they
//! remove, then drop the closures in the order they were connected, so a `Drop` that looks at
//! the signal sees every one of them disconnected already.
//!
//! A captured value whose `Drop` panics: the panic propagates out of the call that dropped the
//! closure (a disconnect, [`Signal::disconnect_all`], dropping the signal, the emit that called
//! a slot which disconnected itself, a [`Signal::connect_weak`] sweeping, and for a deferred
//! slot the evaluation or the event loop's drop) once that call has done its work: every
//! connection it removes is gone, the other closures it drops are dropped as the panic unwinds
//! (each closure is dropped once), and the signal stays fully usable (an emit stops there, as
//! after a slot's panic). A `Drop` that panics while a panic unwinds aborts the process (Rust's
//! rule): such a value must check [`std::thread::panicking`].
//!
//! Slots always run in the order they were connected (KDBindings reuses freed entries
//! last-in-first-out, so its order changes after a disconnect; kdnet's does not).
//!
//! The first connection sits inline in the signal's internals and the others in a list; an emit
//! calls each closure through its own `RefCell`, so a nested emit sees a running slot as busy.
//! Nothing a slot can do to the signal changes the list's structure while an emit runs
//! (connections made during an emit wait in a side list; disconnects and blocks only flip
//! per-entry cells), and a steady-state emit allocates nothing. One byte of signal-wide state
//! says whether anything is out of the ordinary (an entry blocked, removed or skipped,
//! connections waiting, a checked emit running); when nothing is, an emit calls the slots
//! without looking at their per-entry state, and looks at that byte again after each call.
//! Such an emit writes nothing to the signal but the borrow flag of the closure it calls: the
//! borrows it holds (the running closure's, and the list's while it calls the later slots) are
//! what tells a connect or a settle that an emit is under way.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::connection::{ConnectionError, ConnectionHandle, ConnectionTarget};
use super::evaluator::ConnectionEvaluator;

type SlotFn<A> = Box<dyn FnMut(&A)>;

/// A signal carrying a value of type `A` to every connected slot (KDBindings `Signal`).
///
/// Signals with several arguments use a tuple: `Signal<(u16, String)>`; signals without arguments
/// use `Signal<()>`. Slots receive the value by reference. A `Signal` belongs to one thread (it is
/// `!Send`); to run a slot on another thread's loop use [`Signal::connect_deferred`].
///
/// ```
/// use kdnet::Signal;
/// use std::{cell::Cell, rc::Rc};
///
/// let clicked: Signal<(i32, i32)> = Signal::new();
/// let sum = Rc::new(Cell::new(0));
/// let s = sum.clone();
/// let handle = clicked.connect(move |&(x, y)| s.set(s.get() + x + y));
/// clicked.emit(&(2, 3));
/// assert_eq!(sum.get(), 5);
/// handle.disconnect();
/// clicked.emit(&(2, 3));
/// assert_eq!(sum.get(), 5);
/// ```
pub struct Signal<A: 'static> {
    /// Allocated on the first connect: objects carry many signals nobody connects to.
    inner: OnceCell<Rc<SignalInner<A>>>,
}

/// One connection. Its state and closure sit behind cells so that an emit can walk the list with
/// a shared borrow held, while slots block, unblock and disconnect entries (which only touch
/// these cells). The list itself is never resized during an emit (see [`SignalInner`]).
struct SlotEntry<A> {
    /// The connection id (a `Cell` for [`SignalInner::first`], which settling refills; 0 there
    /// while the signal has no connection).
    id: Cell<u64>,
    /// [`BLOCKED`], [`REMOVED`] and [`SKIPPED`] bits; an emit runs the slot only when this is
    /// zero.
    state: Cell<u8>,
    /// The owner's own wiring (see [`Signal::pin`]): left alone by `disconnect_all` and not
    /// counted by `connection_count`. Sits in what was padding, so the entry is no bigger.
    pinned: Cell<bool>,
    /// Mutably borrowed while the slot runs, so a nested emit sees it busy and skips it. Replaced
    /// by a no-op on removal, dropping the user's closure (and its captures) right away.
    func: RefCell<SlotFn<A>>,
}

// Pinning did not make an entry bigger: the emit walks these. (On 64-bit targets: elsewhere the
// `u64` id and the word-sized fields pad differently.)
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<SlotEntry<()>>() == 5 * std::mem::size_of::<usize>());

const BLOCKED: u8 = 1;
const REMOVED: u8 = 2;
/// Set by [`Signal::skip_running_emits`] until [`Signal::clear_skipped`].
const SKIPPED: u8 = 4;

// Bits of `SignalInner::mode`. An emit takes the fast path (no per-entry state checks) when the
// mode is at most `HAS_REST`, and leaves it as soon as the mode changes under it.
/// `rest` is not empty.
const HAS_REST: u8 = 1;
/// A checked emit ([`SignalInner::emit_slow`]) is running. The fast emits do not set it: the
/// borrows they hold say they run (see [`SignalInner::emit_running`]). Either way, connections
/// wait in `pending` and the list keeps its structure.
const EMITTING: u8 = 2;
/// Entries are removed but not compacted away, connections wait in `pending`, or an entry was
/// unblocked: the next operation while no emit runs settles the list and recomputes the mode.
const UNSETTLED: u8 = 4;
/// An entry may be blocked (exact after settling).
const ANY_BLOCKED: u8 = 8;
/// Entries are marked [`SKIPPED`].
const ANY_SKIPPED: u8 = 16;
/// `first` holds no connection (and `rest` is empty once settled).
const VACANT: u8 = 32;

pub(crate) struct SignalInner<A> {
    /// The first connection, stored inline: most signals have one slot, and an emit reaches it
    /// without borrowing the list. Vacant (id 0, [`REMOVED`], a no-op closure) while the signal
    /// has no connection ([`VACANT`]); when it is removed, settling moves `rest`'s first entry
    /// here.
    first: SlotEntry<A>,
    /// The connections after `first`, sorted by `id` (ids only grow), so lookups are binary
    /// searches and order is connection order. Structurally changed only while no emit runs:
    /// an emit holds a shared borrow of it across the slot calls.
    rest: RefCell<Vec<SlotEntry<A>>>,
    /// Connections made during an emit; moved to the end of the list by the first operation
    /// after the outermost emit ends.
    pending: RefCell<Vec<SlotEntry<A>>>,
    next_id: Cell<u64>,
    /// Entries (`first` included) marked removed but not yet compacted away.
    removed: Cell<u32>,
    /// Live pinned entries (see [`Signal::pin`]).
    pinned: Cell<u32>,
    /// [`HAS_REST`], [`EMITTING`], [`UNSETTLED`], [`ANY_BLOCKED`], [`ANY_SKIPPED`], [`VACANT`].
    mode: Cell<u8>,
    /// The owners of [`Signal::connect_weak`] connections (see [`WeakOwners`]); allocated by
    /// the first `connect_weak`, so other signals pay one word for it.
    weak_owners: OnceCell<Box<RefCell<WeakOwners>>>,
}

/// The owners of a signal's [`Signal::connect_weak`] connections, by connection id: a later
/// `connect_weak` sweeps the connections whose owner is gone (see `add_weak_owner`).
struct WeakOwners {
    owners: Vec<(u64, Weak<dyn Any>)>,
    /// `owners` is swept when it grows to this length.
    sweep_at: usize,
}

/// The fewest `connect_weak` owners a signal remembers before it sweeps the gone ones.
const MIN_SWEEP: usize = 8;

impl<A: 'static> Signal<A> {
    /// Creates a signal with no connections.
    pub const fn new() -> Self {
        Signal {
            inner: OnceCell::new(),
        }
    }

    /// The slot list, created on first use.
    fn core(&self) -> &Rc<SignalInner<A>> {
        self.inner.get_or_init(|| {
            Rc::new(SignalInner {
                first: SlotEntry::new(0, REMOVED, noop()),
                rest: RefCell::new(Vec::new()),
                pending: RefCell::new(Vec::new()),
                next_id: Cell::new(1),
                removed: Cell::new(0),
                pinned: Cell::new(0),
                mode: Cell::new(VACANT),
                weak_owners: OnceCell::new(),
            })
        })
    }

    /// Connects `slot`; it runs on every [`emit`](Self::emit) until disconnected.
    ///
    /// Keep the returned handle (or wrap it in a [`ScopedConnection`](super::ScopedConnection)) to
    /// disconnect later; [`ConnectionHandle::release`] states that you never will.
    pub fn connect<F>(&self, slot: F) -> ConnectionHandle
    where
        F: FnMut(&A) + 'static,
    {
        let id = self.core().push(Box::new(slot));
        self.handle_for(id)
    }

    /// Connects a slot that receives its own connection handle, so it can block or disconnect itself.
    ///
    /// ```
    /// use kdnet::Signal;
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let tick: Signal<()> = Signal::new();
    /// let count = Rc::new(Cell::new(0));
    /// let c = count.clone();
    /// tick.connect_reflective(move |handle, _| {
    ///     c.set(c.get() + 1);
    ///     if c.get() == 2 {
    ///         handle.disconnect();
    ///     }
    /// })
    /// .release();
    /// for _ in 0..5 {
    ///     tick.emit(&());
    /// }
    /// assert_eq!(count.get(), 2);
    /// ```
    pub fn connect_reflective<F>(&self, slot: F) -> ConnectionHandle
    where
        F: FnMut(&ConnectionHandle, &A) + 'static,
    {
        let id = self.connect_reflective_id(slot);
        self.handle_for(id)
    }

    fn connect_reflective_id<F>(&self, mut slot: F) -> u64
    where
        F: FnMut(&ConnectionHandle, &A) + 'static,
    {
        let id = self.core().reserve_id();
        let own = self.handle_for(id);
        self.core()
            .push_with_id(id, Box::new(move |args: &A| slot(&own, args)));
        id
    }

    /// Connects a slot that runs at most once: it is disconnected just before it is called.
    pub fn connect_single_shot<F>(&self, slot: F) -> ConnectionHandle
    where
        F: FnOnce(&A) + 'static,
    {
        let mut slot = Some(slot);
        self.connect_reflective(move |handle, args| {
            handle.disconnect();
            if let Some(f) = slot.take() {
                f(args);
            }
        })
    }

    /// Connects a method-like slot on an `Rc` owner without keeping the owner alive.
    ///
    /// The slot holds only a `Weak` to `owner`, and a strong reference while it runs (an owner
    /// a slot drops meanwhile goes when that call returns). Once the owner is dropped the
    /// connection disconnects itself: at its next turn in an emit (which does not call the
    /// slot), or when a later `connect_weak` on this signal finds the owner gone (so
    /// connections of short-lived owners to a rarely emitted signal do not pile up). Until
    /// then it is active and counted. This breaks the usual owner → signal → closure → owner
    /// reference cycle.
    ///
    /// That later `connect_weak` sweeps before it connects: the swept closures are dropped
    /// (each one's captures may act on the signal) before the new slot is connected. If a
    /// captured value panics when dropped, the panic propagates out of `connect_weak` once every
    /// swept connection is gone (the other closures are dropped as it unwinds), and nothing is
    /// connected: `slot` is dropped.
    ///
    /// ```
    /// use kdnet::Signal;
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// struct Counter { hits: Cell<u32>, bumped: Signal<()> }
    ///
    /// let counter = Rc::new(Counter { hits: Cell::new(0), bumped: Signal::new() });
    /// // Capturing `counter` itself would make a cycle; connect_weak does not.
    /// let h = counter.bumped.connect_weak(&counter, |c, _| c.hits.set(c.hits.get() + 1));
    /// counter.bumped.emit(&());
    /// assert_eq!(counter.hits.get(), 1);
    /// assert_eq!(Rc::strong_count(&counter), 1);
    /// drop(counter);
    /// assert!(!h.is_active()); // the signal went with its owner
    /// ```
    pub fn connect_weak<T, F>(&self, owner: &Rc<T>, mut slot: F) -> ConnectionHandle
    where
        T: 'static,
        F: FnMut(&T, &A) + 'static,
    {
        // First: a swept closure's `Drop` may panic, and then nothing is connected.
        self.core().sweep_weak_owners();
        let weak: Weak<T> = Rc::downgrade(owner);
        let probe: Weak<dyn Any> = weak.clone();
        let id = self.connect_reflective_id(move |handle, args| match weak.upgrade() {
            Some(owner) => slot(&owner, args),
            None => handle.disconnect(),
        });
        self.core().add_weak_owner(id, probe);
        self.handle_for(id)
    }

    /// Connects a slot that runs later, on whichever thread calls
    /// [`ConnectionEvaluator::evaluate_deferred_connections`] (KDBindings `connectDeferred`).
    ///
    /// Each emit copies the arguments into a queued invocation. Blocking is checked at emit time;
    /// disconnecting (or dropping the signal) cancels invocations still queued: they are removed
    /// from the evaluator's queue at once, with their copies of the arguments (one taken by an
    /// evaluation already under way on another thread is skipped when its turn comes). Every
    /// [`EventLoop`](crate::EventLoop) owns an evaluator and runs it each turn, so
    /// `connect_deferred(&event_loop.connection_evaluator(), …)` runs the slot on the loop's thread.
    ///
    /// The slot's closure (with what it captured) is dropped once the connection and every
    /// call of it are gone: at the disconnect, or when the call running then returns, or when
    /// an evaluation that had already taken a call of it reaches that call (or a slot's panic
    /// ends that evaluation first).
    ///
    /// If the evaluator is gone when the signal is emitted (dropped, or closed because its
    /// [`EventLoop`](crate::EventLoop) was dropped), nothing will ever run the slot: the emit
    /// drops the invocation and disconnects the connection, which drops the slot and what it
    /// captured, and makes its handle inactive (as Qt drops a queued connection whose receiver
    /// is gone; KDBindings throws and leaves the signal unusable).
    pub fn connect_deferred<F>(
        &self,
        evaluator: &Arc<ConnectionEvaluator>,
        slot: F,
    ) -> ConnectionHandle
    where
        A: Clone + Send,
        F: FnMut(&A) + Send + 'static,
    {
        let alive = AliveFlag {
            alive: Arc::new(AtomicBool::new(true)),
            evaluator: Arc::downgrade(evaluator),
        };
        let slot = Arc::new(std::sync::Mutex::new(slot));
        self.connect_reflective(move |own: &ConnectionHandle, args: &A| {
            let slot = Arc::clone(&slot);
            let args = args.clone();
            let call = Box::new(move || {
                let mut f = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(&args);
            });
            let queued = alive
                .evaluator
                .upgrade()
                .is_some_and(|evaluator| evaluator.enqueue(Arc::clone(&alive.alive), call));
            if !queued {
                // Nothing will ever evaluate this connection's calls: it ends here, dropping the
                // slot (and what it captured) once this call returns.
                log::debug!(
                    "deferred connection disconnected: its ConnectionEvaluator is gone \
                     (or its event loop was dropped)"
                );
                own.disconnect();
            }
        })
    }

    /// Calls every connected, unblocked slot with `args`, in connection order.
    #[inline]
    pub fn emit(&self, args: &A) {
        if let Some(inner) = self.inner.get() {
            inner.emit(args);
        }
    }

    /// Disconnects the connection behind `handle`.
    ///
    /// Fails when the handle is inactive or belongs to another signal.
    pub fn disconnect(&self, handle: &ConnectionHandle) -> Result<(), ConnectionError> {
        let (inner, id) = self.own_id(handle)?;
        if inner.remove(id) {
            Ok(())
        } else {
            Err(ConnectionError::Inactive)
        }
    }

    /// Disconnects every slot. Handles of these connections become inactive for good.
    ///
    /// The object owning the signal keeps its own wiring, if any: a [`Timer`](crate::Timer)
    /// still starts, stops and restarts on its `running` and `interval` properties after
    /// `disconnect_all` on their signals (it is not counted by
    /// [`connection_count`](Self::connection_count) either). Dropping the signal drops it too.
    pub fn disconnect_all(&self) {
        if let Some(inner) = self.inner.get() {
            inner.remove_all(true);
        }
    }

    /// Makes `handle`'s connection part of the owning object's wiring: `disconnect_all` leaves it
    /// and `connection_count` does not count it (see [`disconnect_all`](Self::disconnect_all)).
    pub(crate) fn pin(&self, handle: &ConnectionHandle) {
        if let Ok((inner, id)) = self.own_id(handle) {
            inner.with_entry(id, |entry| {
                if !entry.pinned.replace(true) {
                    inner.pinned.set(inner.pinned.get() + 1);
                }
            });
        }
    }

    /// Blocks (`true`) or unblocks (`false`) one connection; returns whether it was blocked before.
    pub fn block_connection(
        &self,
        handle: &ConnectionHandle,
        blocked: bool,
    ) -> Result<bool, ConnectionError> {
        let (inner, id) = self.own_id(handle)?;
        inner
            .set_blocked(id, blocked)
            .ok_or(ConnectionError::Inactive)
    }

    /// Whether the connection behind `handle` is blocked.
    pub fn is_connection_blocked(
        &self,
        handle: &ConnectionHandle,
    ) -> Result<bool, ConnectionError> {
        let (inner, id) = self.own_id(handle)?;
        inner.is_blocked(id).ok_or(ConnectionError::Inactive)
    }

    /// Number of live connections (blocked ones included; the owning object's own wiring, see
    /// [`disconnect_all`](Self::disconnect_all), excluded).
    pub fn connection_count(&self) -> usize {
        self.inner.get().map_or(0, |inner| {
            let first = usize::from(inner.mode.get() & VACANT == 0);
            first + inner.rest.borrow().len() + inner.pending.borrow().len()
                - inner.removed.get() as usize
                - inner.pinned.get() as usize
        })
    }

    /// Makes the emits running now (further up the stack) call no further slot, until
    /// [`clear_skipped`](Self::clear_skipped): `Property` stops announcing a change a slot has
    /// superseded. Skipped slots carry a state bit; the signal's mode says some do, so running
    /// emits check each slot's state from their next slot on.
    pub(crate) fn skip_running_emits(&self) {
        if let Some(inner) = self.inner.get() {
            let rest = inner.rest.borrow();
            for entry in std::iter::once(&inner.first).chain(rest.iter()) {
                entry.state.set(entry.state.get() | SKIPPED);
            }
            inner.mode.set(inner.mode.get() | ANY_SKIPPED);
        }
    }

    /// Undoes [`skip_running_emits`](Self::skip_running_emits).
    pub(crate) fn clear_skipped(&self) {
        if let Some(inner) = self.inner.get() {
            let rest = inner.rest.borrow();
            for entry in std::iter::once(&inner.first).chain(rest.iter()) {
                entry.state.set(entry.state.get() & !SKIPPED);
            }
            inner.mode.set(inner.mode.get() & !ANY_SKIPPED);
        }
    }

    /// Identifies this signal's slot list for handles; null (matching no handle) before the
    /// first connect.
    pub(crate) fn target_ptr(&self) -> *const () {
        self.inner
            .get()
            .map_or(std::ptr::null(), |inner| Rc::as_ptr(inner) as *const ())
    }

    fn handle_for(&self, id: u64) -> ConnectionHandle {
        let strong: Rc<dyn ConnectionTarget> = self.core().clone();
        ConnectionHandle::new(Rc::downgrade(&strong), id)
    }

    /// The slot list and connection id `handle` refers to, if it is one of this signal's.
    fn own_id(
        &self,
        handle: &ConnectionHandle,
    ) -> Result<(&Rc<SignalInner<A>>, u64), ConnectionError> {
        let found = self
            .inner
            .get()
            .and_then(|inner| Some((inner, handle.id_for(self.target_ptr())?)));
        match found {
            Some(found) => Ok(found),
            None if handle.is_active() => Err(ConnectionError::ForeignHandle),
            None => Err(ConnectionError::Inactive),
        }
    }
}

impl<A: 'static> Default for Signal<A> {
    fn default() -> Self {
        Signal::new()
    }
}

impl<A: 'static> Drop for Signal<A> {
    /// Dropping a signal disconnects everything (KDBindings: the destructor calls `disconnectAll`).
    /// An emit in progress keeps the internals alive and stops calling slots.
    fn drop(&mut self) {
        if let Some(inner) = self.inner.get() {
            inner.remove_all(false);
        }
    }
}

impl<A: 'static> fmt::Debug for Signal<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("connections", &self.connection_count())
            .field(
                "emitting",
                &self.inner.get().is_some_and(|inner| inner.emit_running()),
            )
            .finish()
    }
}

/// The "still connected" flag of a deferred connection, shared with its queued invocations.
/// Dropped with the connection's slot (on disconnect, or with the signal): it clears the flag,
/// so that an evaluation already under way skips them, and removes them from the evaluator's
/// queue, dropping their copied arguments (KDBindings dequeues them too).
struct AliveFlag {
    alive: Arc<AtomicBool>,
    evaluator: std::sync::Weak<ConnectionEvaluator>,
}

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        if let Some(evaluator) = self.evaluator.upgrade() {
            evaluator.cancel(&self.alive);
        }
    }
}

impl<A> SlotEntry<A> {
    fn new(id: u64, state: u8, func: SlotFn<A>) -> Self {
        SlotEntry {
            id: Cell::new(id),
            state: Cell::new(state),
            pinned: Cell::new(false),
            func: RefCell::new(func),
        }
    }

    /// Calls the slot unless it is blocked, removed, skipped or already running (further up
    /// the stack); drops its closure right after the call if it was disconnected meanwhile.
    fn call_checked(&self, args: &A) {
        if self.state.get() != 0 {
            return;
        }
        // Busy: the slot is running further up the stack (nested emit); skip it.
        let Ok(mut func) = self.func.try_borrow_mut() else {
            return;
        };
        func(args);
        if self.state.get() & REMOVED != 0 {
            // Disconnected while running: drop its closure now, outside its own borrow.
            let finished = std::mem::replace(&mut *func, noop());
            drop(func);
            drop(finished);
        }
    }

    /// Drops the closure of a removed entry that is not running (a no-op closure is left).
    fn drop_closure_if_removed(&self) {
        if self.state.get() & REMOVED == 0 {
            return;
        }
        // Busy: still running further up the stack; that frame drops it.
        if let Ok(mut func) = self.func.try_borrow_mut() {
            let finished = std::mem::replace(&mut *func, noop());
            drop(func);
            drop(finished);
        }
    }
}

impl<A> SignalInner<A> {
    fn reserve_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn push(&self, func: SlotFn<A>) -> u64 {
        let id = self.reserve_id();
        self.push_with_id(id, func);
        id
    }

    fn push_with_id(&self, id: u64, func: SlotFn<A>) {
        // Slots connected during an earlier emit go first: the list stays in connection order.
        self.settle_if_idle();
        let mode = self.mode.get();
        // An emit is running (or the list could not be settled): the new slot waits for the
        // next emit. (A fast emit calling `first` holds no borrow of `rest` yet: it is seen by
        // `first`'s borrow.)
        if mode & (EMITTING | UNSETTLED) == 0 && self.first.func.try_borrow_mut().is_ok() {
            if mode & VACANT != 0 {
                if let Ok(mut first) = self.first.func.try_borrow_mut() {
                    let old = std::mem::replace(&mut *first, func);
                    self.first.id.set(id);
                    self.first.state.set(0);
                    self.first.pinned.set(false);
                    self.mode.set(mode & !VACANT);
                    drop(first);
                    drop(old);
                    return;
                }
            } else if let Ok(mut rest) = self.rest.try_borrow_mut() {
                // Most signals get one slot more: skip Vec's default first capacity of four.
                if rest.capacity() == 0 {
                    rest.reserve_exact(1);
                }
                rest.push(SlotEntry::new(id, 0, func));
                self.mode.set(mode | HAS_REST);
                return;
            }
        }
        self.pending.borrow_mut().push(SlotEntry::new(id, 0, func));
        self.mode.set(self.mode.get() | UNSETTLED);
    }

    /// Runs `f` on the live entry with `id` in `first` or `rest`.
    fn with_slot<R>(&self, id: u64, f: impl FnOnce(&SlotEntry<A>) -> R) -> Option<R> {
        if self.first.id.get() == id {
            return Some(&self.first)
                .filter(|e| e.state.get() & REMOVED == 0)
                .map(f);
        }
        find_live(&self.rest.borrow(), id).map(f)
    }

    /// Runs `f` on the live entry with `id`, wherever it is.
    fn with_entry<R>(&self, id: u64, f: impl FnOnce(&SlotEntry<A>) -> R) -> Option<R> {
        if self.first.id.get() == id {
            return self.with_slot(id, f);
        }
        if let Some(entry) = find_live(&self.rest.borrow(), id) {
            return Some(f(entry));
        }
        find_live(&self.pending.borrow(), id).map(f)
    }

    /// Remembers the owner of `connect_weak` connection `id` (see
    /// [`sweep_weak_owners`](Self::sweep_weak_owners)).
    fn add_weak_owner(&self, id: u64, owner: Weak<dyn Any>) {
        let weak_owners = self.weak_owners.get_or_init(|| {
            Box::new(RefCell::new(WeakOwners {
                owners: Vec::new(),
                sweep_at: MIN_SWEEP,
            }))
        });
        weak_owners.borrow_mut().owners.push((id, owner));
    }

    /// Before a `connect_weak`: when the list of weak owners has doubled since the last sweep,
    /// disconnects the connections whose owner is gone (and forgets the ones disconnected
    /// otherwise): amortised constant work per call, and a list (and slot count) bounded by
    /// twice the live `connect_weak` connections.
    ///
    /// Every gone connection is disconnected before any of their closures is dropped, and the
    /// closures are dropped together, outside every borrow (their captures may act on this
    /// signal): one whose captured value panics when dropped leaves no other connected, and the
    /// others are dropped as the panic unwinds.
    fn sweep_weak_owners(&self) {
        let Some(weak_owners) = self.weak_owners.get() else {
            return;
        };
        let gone: Vec<u64> = {
            let mut weak_owners = weak_owners.borrow_mut();
            let WeakOwners { owners, sweep_at } = &mut *weak_owners;
            if owners.len() < *sweep_at {
                return;
            }
            let mut gone = Vec::new();
            owners.retain(|(id, owner)| {
                if !self.contains(*id) {
                    false
                } else if owner.strong_count() == 0 {
                    gone.push(*id);
                    false
                } else {
                    true
                }
            });
            *sweep_at = (owners.len() * 2).max(MIN_SWEEP);
            gone
        };
        if gone.is_empty() {
            return;
        }
        let funcs: Vec<Option<SlotFn<A>>> =
            gone.into_iter().filter_map(|id| self.detach(id)).collect();
        self.settle_if_idle();
        drop(funcs);
    }

    fn contains(&self, id: u64) -> bool {
        self.with_entry(id, |_| ()).is_some()
    }

    fn remove(&self, id: u64) -> bool {
        let Some(func) = self.detach(id) else {
            return false;
        };
        self.settle_if_idle();
        // Dropped outside every borrow: a closure's captures may touch this signal when dropped.
        drop(func);
        true
    }

    /// Marks connection `id` removed and takes its closure, for the caller to drop once it is
    /// done with the signal (none if it is running: the emit drops it after the call); `None`
    /// if there is no such connection.
    fn detach(&self, id: u64) -> Option<Option<SlotFn<A>>> {
        let taken = self.with_slot(id, |entry| {
            entry.state.set(entry.state.get() | REMOVED);
            self.unpin(entry);
            // A running slot keeps its closure until it returns; the emit drops it then.
            entry
                .func
                .try_borrow_mut()
                .ok()
                .map(|mut f| std::mem::replace(&mut *f, noop()))
        });
        match taken {
            Some(func) => {
                self.removed.set(self.removed.get() + 1);
                self.mode.set(self.mode.get() | UNSETTLED);
                Some(func)
            }
            None => {
                let mut pending = self.pending.borrow_mut();
                let pos = pending.binary_search_by_key(&id, |e| e.id.get()).ok()?;
                let entry = pending.remove(pos);
                self.unpin(&entry);
                Some(Some(entry.func.into_inner()))
            }
        }
    }

    /// Removes every connection, or (`keep_pinned`) every one but the pinned ones.
    fn remove_all(&self, keep_pinned: bool) {
        let mut funcs: Vec<SlotFn<A>> = Vec::new();
        let gone = |e: &SlotEntry<A>| !(keep_pinned && e.pinned.get());
        {
            let rest = self.rest.borrow();
            let mut removed = self.removed.get();
            for entry in std::iter::once(&self.first)
                .chain(rest.iter())
                .filter(|e| e.state.get() & REMOVED == 0 && gone(e))
            {
                entry.state.set(entry.state.get() | REMOVED);
                self.unpin(entry);
                removed += 1;
                if let Ok(mut f) = entry.func.try_borrow_mut() {
                    funcs.push(std::mem::replace(&mut *f, noop()));
                }
            }
            self.removed.set(removed);
            if removed > 0 || !self.pending.borrow().is_empty() {
                self.mode.set(self.mode.get() | UNSETTLED);
            }
        }
        let pending: Vec<SlotEntry<A>> = {
            let mut pending = self.pending.borrow_mut();
            let (dropped, kept) = std::mem::take(&mut *pending).into_iter().partition(gone);
            *pending = kept;
            dropped
        };
        if let Some(weak_owners) = self.weak_owners.get() {
            let owners = if keep_pinned {
                // The pinned ones stay (a later sweep still finds them); the rest go.
                let mut weak_owners = weak_owners.borrow_mut();
                let (kept, dropped) = std::mem::take(&mut weak_owners.owners)
                    .into_iter()
                    .partition(|(id, _)| self.contains(*id));
                weak_owners.owners = kept;
                dropped
            } else {
                std::mem::take(&mut weak_owners.borrow_mut().owners)
            };
            drop(owners);
        }
        for entry in pending {
            self.unpin(&entry);
            funcs.push(entry.func.into_inner());
        }
        self.settle_if_idle();
        drop(funcs);
    }

    /// Forgets that a removed entry was pinned.
    fn unpin(&self, entry: &SlotEntry<A>) {
        if entry.pinned.replace(false) {
            self.pinned.set(self.pinned.get() - 1);
        }
    }

    /// Whether an emit is under way: a checked one says so in the mode; a fast one holds the
    /// running closure's borrow (`first`'s, or a later slot's under a shared borrow of `rest`).
    fn emit_running(&self) -> bool {
        self.mode.get() & EMITTING != 0
            || self.first.func.try_borrow_mut().is_err()
            || self.rest.try_borrow_mut().is_err()
    }

    /// Once no emit runs: drops removed entries and appends connections made during an emit.
    #[inline]
    fn settle_if_idle(&self) {
        if self.mode.get() & UNSETTLED != 0 {
            self.settle();
        }
    }

    #[cold]
    #[inline(never)]
    fn settle(&self) {
        // An emit is still walking the list; the next operation after it settles. (A fast emit
        // holds `first`'s closure or the list borrowed, so the borrows below fail for it.)
        if self.mode.get() & EMITTING != 0 {
            return;
        }
        let (Ok(mut rest), Ok(mut first_func)) =
            (self.rest.try_borrow_mut(), self.first.func.try_borrow_mut())
        else {
            return;
        };
        if self.removed.get() > 0 {
            rest.retain(|e| e.state.get() & REMOVED == 0);
            self.removed.set(0);
        }
        rest.append(&mut self.pending.borrow_mut());
        let mut mode = self.mode.get() & !(UNSETTLED | HAS_REST | ANY_BLOCKED | VACANT);
        let mut old = None;
        if self.first.state.get() & REMOVED != 0 {
            if rest.is_empty() {
                self.first.id.set(0);
                mode |= VACANT;
            } else {
                // The next connection in order moves up into `first`.
                let next = rest.remove(0);
                self.first.id.set(next.id.get());
                self.first.state.set(next.state.get());
                self.first.pinned.set(next.pinned.get());
                old = Some(std::mem::replace(&mut *first_func, next.func.into_inner()));
            }
        }
        if !rest.is_empty() {
            mode |= HAS_REST;
        }
        if std::iter::once(&self.first)
            .chain(rest.iter())
            .any(|e| e.state.get() & (BLOCKED | REMOVED) == BLOCKED)
        {
            mode |= ANY_BLOCKED;
        }
        self.mode.set(mode);
        drop(first_func);
        drop(rest);
        drop(old);
    }

    fn set_blocked(&self, id: u64, blocked: bool) -> Option<bool> {
        let was = self.with_entry(id, |entry| {
            let state = entry.state.get();
            entry.state.set(if blocked {
                state | BLOCKED
            } else {
                state & !BLOCKED
            });
            state & BLOCKED != 0
        })?;
        // Unblocking leaves `ANY_BLOCKED` to the next settle, which recomputes it.
        let mode = self.mode.get();
        self.mode
            .set(mode | if blocked { ANY_BLOCKED } else { UNSETTLED });
        Some(was)
    }

    fn is_blocked(&self, id: u64) -> Option<bool> {
        self.with_entry(id, |entry| entry.state.get() & BLOCKED != 0)
    }

    #[inline(always)]
    fn emit(&self, args: &A) {
        match self.mode.get() {
            0 => self.emit_one(args),
            HAS_REST => self.emit_many(args),
            _ => self.emit_slow(args),
        }
    }

    /// The emit when nothing is out of the ordinary and `first` is the only slot (the mode is
    /// 0): no checked emit runs, and `first` is not blocked, removed or skipped, so it is called
    /// without looking at its state (its closure is busy only when this is a nested emit, which
    /// then skips it). Whatever the slot does to the signal changes the mode; the emit then
    /// ends in [`finish_slow`](Self::finish_slow).
    ///
    /// It writes no "emit running" mark: while the slot runs, its closure's borrow is that mark
    /// (connects then go to `pending`, and removals only mark entries: see `push_with_id`,
    /// `settle`). Stores are what a one-slot emit costs on top of the call.
    #[inline(always)]
    fn emit_one(&self, args: &A) {
        let unwinding = DropClosuresOnUnwind {
            inner: self,
            was_emitting: false,
        };
        if let Ok(mut func) = self.first.func.try_borrow_mut() {
            func(args);
        }
        if self.mode.get() != 0 {
            return self.finish_slow(args, 1, unwinding);
        }
        // Not dropped on this path: no slot panicked.
        std::mem::forget(unwinding);
    }

    /// [`emit_one`](Self::emit_one) for a signal with more slots (the mode is [`HAS_REST`]):
    /// it looks at the mode after each slot and goes on in [`finish_slow`](Self::finish_slow)
    /// once it changed. The later slots are called under a shared borrow of `rest`, which marks
    /// the emit as running while they run, as `first`'s borrow does while it runs.
    #[inline(always)]
    fn emit_many(&self, args: &A) {
        const RUNNING: u8 = HAS_REST;
        let unwinding = DropClosuresOnUnwind {
            inner: self,
            was_emitting: false,
        };
        if let Ok(mut func) = self.first.func.try_borrow_mut() {
            func(args);
        }
        if self.mode.get() != RUNNING {
            return self.finish_slow(args, 1, unwinding);
        }
        let changed = {
            let rest = self.rest.borrow();
            let mut slots = rest.iter();
            loop {
                let Some(entry) = slots.next() else {
                    break None;
                };
                if let Ok(mut func) = entry.func.try_borrow_mut() {
                    func(args);
                }
                if self.mode.get() != RUNNING {
                    // The position of the slot after `entry` (`first` being 0).
                    break Some(rest.len() - slots.len() + 1);
                }
            }
        };
        if let Some(next) = changed {
            return self.finish_slow(args, next, unwinding);
        }
        // Not dropped on this path: no slot panicked.
        std::mem::forget(unwinding);
    }

    /// A fast emit after the signal changed under it: the slot just called (at position
    /// `next - 1`, `first` being 0) may have been disconnected meanwhile (its closure is dropped
    /// now); the slots from `next` on are called with their state checked.
    ///
    /// From here on the emit marks itself as running in the mode, as a checked emit does: when
    /// `first` was the slot just called, its closure is dropped with no borrow held, and what it
    /// captured may connect or disconnect on this signal when dropped (a `ScopedConnection` it
    /// owns), which must not settle the list under this emit. (No checked emit runs further up
    /// the stack: a fast emit starts only when the mode says none does.)
    #[cold]
    #[inline(never)]
    fn finish_slow(&self, args: &A, next: usize, unwinding: DropClosuresOnUnwind<'_, A>) {
        self.mode.set(self.mode.get() | EMITTING);
        if next == 1 {
            self.first.drop_closure_if_removed();
        } else {
            let rest = self.rest.borrow();
            rest[next - 2].drop_closure_if_removed();
        }
        self.run_from(args, next);
        // Not dropped on this path: no slot panicked.
        std::mem::forget(unwinding);
        self.end_emit();
    }

    /// An emit while something is out of the ordinary (see [`emit_one`](Self::emit_one)):
    /// settles first if no emit runs, then checks each entry's state before calling it.
    #[inline(never)]
    fn emit_slow(&self, args: &A) {
        self.settle_if_idle();
        let mode = self.mode.get();
        match mode {
            0 => return self.emit_one(args),
            HAS_REST => return self.emit_many(args),
            _ => {}
        }
        let was_emitting = mode & EMITTING != 0;
        self.mode.set(mode | EMITTING);
        let unwinding = DropClosuresOnUnwind {
            inner: self,
            was_emitting,
        };
        self.run_from(args, 0);
        // Not dropped on this path: no slot panicked.
        std::mem::forget(unwinding);
        if !was_emitting {
            self.end_emit();
        }
        // Entries removed or connected during this emit are settled by the next operation on
        // the signal; their closures are already dropped (or queued in `pending`).
    }

    /// Calls the slots from position `start` on (`first` being 0), checking each one's state.
    fn run_from(&self, args: &A, start: usize) {
        if start == 0 {
            self.first.call_checked(args);
        }
        let rest = self.rest.borrow();
        for entry in rest.iter().skip(start.saturating_sub(1)) {
            entry.call_checked(args);
        }
    }

    /// The outermost emit has ended.
    fn end_emit(&self) {
        self.mode.set(self.mode.get() & !EMITTING);
    }
}

/// Dropped only when a slot panics out of an emit (the emit forgets it otherwise, so the
/// steady path pays nothing): a slot that disconnected itself and then panicked never reached
/// the drop of its closure after the call, so its closure is dropped here — as it would have
/// been had it returned — rather than later by `settle`, under the list's mutable borrow that
/// its captures' destructors could run into. The outermost emit also clears the "emit running"
/// mark.
struct DropClosuresOnUnwind<'a, A> {
    inner: &'a SignalInner<A>,
    was_emitting: bool,
}

impl<A> Drop for DropClosuresOnUnwind<'_, A> {
    fn drop(&mut self) {
        let inner = self.inner;
        if let Ok(rest) = inner.rest.try_borrow() {
            for entry in std::iter::once(&inner.first).chain(rest.iter()) {
                entry.drop_closure_if_removed();
            }
        }
        if !self.was_emitting {
            inner.end_emit();
        }
    }
}

/// The entry with `id` in a list sorted by id, unless it was removed.
fn find_live<A>(list: &[SlotEntry<A>], id: u64) -> Option<&SlotEntry<A>> {
    let pos = list.binary_search_by_key(&id, |e| e.id.get()).ok()?;
    Some(&list[pos]).filter(|e| e.state.get() & REMOVED == 0)
}

/// The closure a removed entry holds: zero-sized, so boxing it does not allocate.
fn noop<A>() -> SlotFn<A> {
    Box::new(|_: &A| {})
}

impl<A> ConnectionTarget for SignalInner<A> {
    fn disconnect(&self, id: u64) -> bool {
        self.remove(id)
    }

    fn contains(&self, id: u64) -> bool {
        SignalInner::contains(self, id)
    }

    fn set_blocked(&self, id: u64, blocked: bool) -> Option<bool> {
        SignalInner::set_blocked(self, id, blocked)
    }

    fn is_blocked(&self, id: u64) -> Option<bool> {
        SignalInner::is_blocked(self, id)
    }
}
