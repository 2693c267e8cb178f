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
//! | emits the same signal again (nested emit) | the nested emit runs every slot except the ones already running further up the stack | — |
//! | panics | the panic propagates to the caller of `emit` | the signal is fully usable; the panicking slot stays connected |
//!
//! Slots always run in the order they were connected (KDBindings reuses freed entries
//! last-in-first-out, so its order changes after a disconnect; kdnet's does not).
//!
//! No `RefCell` borrow is held while a slot runs: each slot's closure is taken out of the slot
//! list, called, and put back, so a steady-state emit allocates nothing.

use std::cell::{Cell, RefCell};
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
    inner: Rc<SignalInner<A>>,
}

struct SlotEntry<A> {
    id: u64,
    blocked: bool,
    removed: bool,
    /// `None` while the slot is running (taken out by an emit) or after removal.
    func: Option<SlotFn<A>>,
}

pub(crate) struct SignalInner<A> {
    /// Sorted by `id` (ids only grow), so lookups are binary searches and order is connection order.
    slots: RefCell<Vec<SlotEntry<A>>>,
    next_id: Cell<u64>,
    emit_depth: Cell<u32>,
    /// Entries marked `removed` but not yet compacted away.
    removed: Cell<usize>,
}

impl<A: 'static> Signal<A> {
    /// Creates a signal with no connections.
    pub fn new() -> Self {
        Signal {
            inner: Rc::new(SignalInner {
                slots: RefCell::new(Vec::new()),
                next_id: Cell::new(1),
                emit_depth: Cell::new(0),
                removed: Cell::new(0),
            }),
        }
    }

    /// Connects `slot`; it runs on every [`emit`](Self::emit) until disconnected.
    ///
    /// Keep the returned handle (or wrap it in a [`ScopedConnection`](super::ScopedConnection)) to
    /// disconnect later; [`ConnectionHandle::release`] states that you never will.
    pub fn connect<F>(&self, slot: F) -> ConnectionHandle
    where
        F: FnMut(&A) + 'static,
    {
        let id = self.inner.push(Box::new(slot));
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
    pub fn connect_reflective<F>(&self, mut slot: F) -> ConnectionHandle
    where
        F: FnMut(&ConnectionHandle, &A) + 'static,
    {
        let id = self.inner.reserve_id();
        let own = self.handle_for(id);
        self.inner
            .push_with_id(id, Box::new(move |args: &A| slot(&own, args)));
        self.handle_for(id)
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
    /// The slot holds only a `Weak` to `owner`; once the owner is dropped the connection
    /// disconnects itself (at the next emit). This breaks the usual
    /// owner → signal → closure → owner reference cycle.
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
        let weak: Weak<T> = Rc::downgrade(owner);
        self.connect_reflective(move |handle, args| match weak.upgrade() {
            Some(owner) => slot(&owner, args),
            None => handle.disconnect(),
        })
    }

    /// Connects a slot that runs later, on whichever thread calls
    /// [`ConnectionEvaluator::evaluate_deferred_connections`] (KDBindings `connectDeferred`).
    ///
    /// Each emit copies the arguments into a queued invocation. Blocking is checked at emit time;
    /// disconnecting (or dropping the signal) cancels invocations still queued. Every
    /// [`EventLoop`](crate::EventLoop) owns an evaluator and runs it each turn, so
    /// `connect_deferred(&event_loop.connection_evaluator(), …)` runs the slot on the loop's thread.
    ///
    /// If the evaluator is gone when the signal is emitted, the invocation is dropped with a
    /// warning (KDBindings throws and leaves the signal unusable).
    pub fn connect_deferred<F>(
        &self,
        evaluator: &Arc<ConnectionEvaluator>,
        slot: F,
    ) -> ConnectionHandle
    where
        A: Clone + Send,
        F: FnMut(&A) + Send + 'static,
    {
        let alive = AliveFlag(Arc::new(AtomicBool::new(true)));
        let evaluator = Arc::downgrade(evaluator);
        let slot = Arc::new(std::sync::Mutex::new(slot));
        self.connect(move |args: &A| {
            let Some(evaluator) = evaluator.upgrade() else {
                log::warn!("deferred slot not queued: its ConnectionEvaluator is gone");
                return;
            };
            let slot = Arc::clone(&slot);
            let args = args.clone();
            evaluator.enqueue(
                Arc::clone(&alive.0),
                Box::new(move || {
                    let mut f = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    f(&args);
                }),
            );
        })
    }

    /// Calls every connected, unblocked slot with `args`, in connection order.
    pub fn emit(&self, args: &A) {
        SignalInner::emit(&self.inner, args);
    }

    /// Disconnects the connection behind `handle`.
    ///
    /// Fails when the handle is inactive or belongs to another signal.
    pub fn disconnect(&self, handle: &ConnectionHandle) -> Result<(), ConnectionError> {
        let id = self.own_id(handle)?;
        if self.inner.remove(id) {
            Ok(())
        } else {
            Err(ConnectionError::Inactive)
        }
    }

    /// Disconnects every slot. Handles of these connections become inactive for good.
    pub fn disconnect_all(&self) {
        self.inner.remove_all();
    }

    /// Blocks (`true`) or unblocks (`false`) one connection; returns whether it was blocked before.
    pub fn block_connection(
        &self,
        handle: &ConnectionHandle,
        blocked: bool,
    ) -> Result<bool, ConnectionError> {
        let id = self.own_id(handle)?;
        self.inner
            .set_blocked(id, blocked)
            .ok_or(ConnectionError::Inactive)
    }

    /// Whether the connection behind `handle` is blocked.
    pub fn is_connection_blocked(
        &self,
        handle: &ConnectionHandle,
    ) -> Result<bool, ConnectionError> {
        let id = self.own_id(handle)?;
        self.inner.is_blocked(id).ok_or(ConnectionError::Inactive)
    }

    /// Number of live connections (blocked ones included).
    pub fn connection_count(&self) -> usize {
        self.inner.slots.borrow().len() - self.inner.removed.get()
    }

    pub(crate) fn target_ptr(&self) -> *const () {
        Rc::as_ptr(&self.inner) as *const ()
    }

    fn handle_for(&self, id: u64) -> ConnectionHandle {
        let strong: Rc<dyn ConnectionTarget> = self.inner.clone();
        ConnectionHandle::new(Rc::downgrade(&strong), id)
    }

    fn own_id(&self, handle: &ConnectionHandle) -> Result<u64, ConnectionError> {
        match handle.id_for(self.target_ptr()) {
            Some(id) => Ok(id),
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
        self.inner.remove_all();
    }
}

impl<A: 'static> fmt::Debug for Signal<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("connections", &self.connection_count())
            .field("emitting", &(self.inner.emit_depth.get() > 0))
            .finish()
    }
}

/// Clears the shared "still connected" flag of a deferred connection when its slot is dropped.
struct AliveFlag(Arc<AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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
        self.slots.borrow_mut().push(SlotEntry {
            id,
            blocked: false,
            removed: false,
            func: Some(func),
        });
    }

    fn position(slots: &[SlotEntry<A>], id: u64) -> Option<usize> {
        let pos = slots.binary_search_by_key(&id, |e| e.id).ok()?;
        (!slots[pos].removed).then_some(pos)
    }

    fn remove(&self, id: u64) -> bool {
        let func = {
            let mut slots = self.slots.borrow_mut();
            let Some(pos) = Self::position(&slots, id) else {
                return false;
            };
            let entry = &mut slots[pos];
            entry.removed = true;
            self.removed.set(self.removed.get() + 1);
            entry.func.take()
        };
        self.compact_if_idle();
        // Dropped outside the borrow: a closure's captures may touch this signal when dropped.
        drop(func);
        true
    }

    fn remove_all(&self) {
        let funcs: Vec<SlotFn<A>> = {
            let mut slots = self.slots.borrow_mut();
            let mut funcs = Vec::new();
            let mut removed = self.removed.get();
            for entry in slots.iter_mut().filter(|e| !e.removed) {
                entry.removed = true;
                removed += 1;
                funcs.extend(entry.func.take());
            }
            self.removed.set(removed);
            funcs
        };
        self.compact_if_idle();
        drop(funcs);
    }

    fn compact_if_idle(&self) {
        if self.emit_depth.get() == 0 && self.removed.get() > 0 {
            self.slots.borrow_mut().retain(|e| !e.removed);
            self.removed.set(0);
        }
    }

    fn set_blocked(&self, id: u64, blocked: bool) -> Option<bool> {
        let mut slots = self.slots.borrow_mut();
        let pos = Self::position(&slots, id)?;
        Some(std::mem::replace(&mut slots[pos].blocked, blocked))
    }

    fn is_blocked(&self, id: u64) -> Option<bool> {
        let slots = self.slots.borrow();
        Self::position(&slots, id).map(|pos| slots[pos].blocked)
    }

    fn emit(this: &Rc<Self>, args: &A) {
        let len = this.slots.borrow().len();
        if len == 0 {
            return;
        }
        // Keeps the internals alive even if a slot drops the owning Signal.
        let guard = EmitGuard::enter(Rc::clone(this));
        for index in 0..len {
            // Indices are stable: compaction waits for the outermost emit to finish.
            let func = {
                let mut slots = guard.inner.slots.borrow_mut();
                let entry = &mut slots[index];
                if entry.removed || entry.blocked {
                    continue;
                }
                entry.func.take()
            };
            // `None`: the slot is running further up the stack (nested emit); skip it.
            let Some(func) = func else { continue };
            let mut running = RunningSlot {
                inner: &guard.inner,
                index,
                func: Some(func),
            };
            if let Some(f) = running.func.as_mut() {
                f(args);
            }
        }
    }
}

/// Counts emit depth; restores it (and compacts) even when a slot panics.
struct EmitGuard<A> {
    inner: Rc<SignalInner<A>>,
}

impl<A> EmitGuard<A> {
    fn enter(inner: Rc<SignalInner<A>>) -> Self {
        inner.emit_depth.set(inner.emit_depth.get() + 1);
        EmitGuard { inner }
    }
}

impl<A> Drop for EmitGuard<A> {
    fn drop(&mut self) {
        self.inner.emit_depth.set(self.inner.emit_depth.get() - 1);
        self.inner.compact_if_idle();
    }
}

/// Holds a slot's closure while it runs and puts it back afterwards (also on panic).
struct RunningSlot<'a, A> {
    inner: &'a SignalInner<A>,
    index: usize,
    func: Option<SlotFn<A>>,
}

impl<A> Drop for RunningSlot<'_, A> {
    fn drop(&mut self) {
        let Some(func) = self.func.take() else { return };
        let leftover = {
            let mut slots = self.inner.slots.borrow_mut();
            let entry = &mut slots[self.index];
            if entry.removed {
                Some(func)
            } else {
                entry.func = Some(func);
                None
            }
        };
        drop(leftover);
    }
}

impl<A> ConnectionTarget for SignalInner<A> {
    fn disconnect(&self, id: u64) -> bool {
        self.remove(id)
    }

    fn contains(&self, id: u64) -> bool {
        Self::position(&self.slots.borrow(), id).is_some()
    }

    fn set_blocked(&self, id: u64, blocked: bool) -> Option<bool> {
        SignalInner::set_blocked(self, id, blocked)
    }

    fn is_blocked(&self, id: u64) -> Option<bool> {
        SignalInner::is_blocked(self, id)
    }
}
