//! A model-based test of [`Signal`]: generated scripts of connects, disconnects, blocks,
//! `disconnect_all`s and emits, run from outside and from inside slots (nested emits, panics
//! included), against a plain reference model of the documented behaviour (the re-entrancy table
//! in the module docs of `kdnet::bindings::signal` and the method docs).
//!
//! Two `Signal<u32>`s, so that handles of the other signal and emits of one signal from the
//! other's slots are covered. Every slot records each call (`slot`, value, nesting depth) in one
//! shared log, and a value it captures records when the closure is dropped; every operation's
//! result and the queries (`connection_count`, `is_active`, `is_blocked`,
//! `is_connection_blocked`, `belongs_to`, the evaluator's `has_pending`) go to the same log, and
//! the queries run after every step. The model writes the log it expects; the two must be equal
//! after every step.
//!
//! Besides plain, single-shot and reflective slots, a script connects:
//! - `connect_weak` slots on one of three `Rc` owners, which the script, a slot, or a dropped
//!   closure's captures may drop (an owner's own `Drop` may act too, dropping a signal say);
//! - `connect_deferred` slots on the evaluator of a real [`EventLoop`], whose calls run when the
//!   script or a slot turns the loop (`foundation::process_events`), and which the script may
//!   drop (and replace) with calls queued.
//!
//! The signals are held through an `Rc`, as an object owning a signal is: the script, a slot or
//! a dropped closure may drop one (from inside its own slot too); whoever emits it or connects to
//! it holds a reference meanwhile, so it is dropped when the last of them lets go.
//!
//! What the model says (from the docs):
//! - slots run in connection order; one disconnected before its turn does not run; blocking is
//!   checked when a slot's turn comes;
//! - a slot connected while an emit of its signal runs (at any nesting level) runs from the next
//!   outermost emit on: not in the running emit, nor in emits nested in it;
//! - a nested emit runs every slot but the ones running further up the stack and those connected
//!   during the outer emit; `disconnect_all` leaves no slot to run;
//! - a single-shot slot is disconnected just before it is called (so a nested emit started from
//!   it does not run it again);
//! - a slot's closure (and what it captured) is dropped at its disconnect, or, when it was
//!   running then (it disconnected itself, or was disconnected from a nested emit), right after
//!   its call returns (also when the call panics, innermost slot first); `disconnect_all` and
//!   dropping a signal drop the closures in connection order (not documented: what the code
//!   does, pinned so that a change is noticed). What a closure captured may itself connect,
//!   disconnect, block, emit, `disconnect_all`, drop an owner or a signal, or turn the loop when
//!   dropped (a `ScopedConnection` it owns, an object announcing its end): that counts as done
//!   at that moment, by the code running then;
//! - a panic propagates to the caller of `emit` (a slot may catch it around a nested emit, and
//!   the outer emit goes on); the signal stays fully usable and the panicking slot connected;
//! - a captured value whose `Drop` panics: the panic propagates out of whatever dropped the
//!   closure (a disconnect, `disconnect_all`, an emit, a connect_weak's sweep, a loop turn, the
//!   signal's or the loop's drop), after that operation is complete: the other closures it drops
//!   are dropped too (while the panic unwinds), and the signal stays usable (module docs). A
//!   `connect_weak` whose sweep panics has connected nothing;
//! - `connect_weak`: the slot runs with the owner while it lives (and keeps it alive while it
//!   runs); once the owner is gone the connection stays (active, counted) until its next turn in
//!   an emit, which disconnects it without calling it, or until a later `connect_weak` sweeps it
//!   (when the signal's list of weak owners has doubled since the last sweep: the internal rule,
//!   modelled as the code has it);
//! - `connect_deferred`: an emit queues the call (blocking checked then); calls run in queueing
//!   order at the next turn of the loop, not within it for calls queued during it, and never in
//!   a turn nested in a deferred slot; a disconnect (or dropping the signal) removes the
//!   connection's queued calls at once, and one taken by the running evaluation is skipped; the
//!   slot's closure is dropped once the connection and every call of it are gone; a deferred slot
//!   that panics leaves the rest of its batch queued, ahead of newer calls (but for the calls of
//!   connections disconnected meanwhile, which are dropped); once the loop is
//!   dropped, its queued calls are dropped and each connection to it disconnects itself at its
//!   next emit;
//! - a stale handle gets [`ConnectionError::Inactive`], a live one of the other signal
//!   [`ConnectionError::ForeignHandle`].
//!
//! Not covered here: `ScopedConnection`/`ConnectionBlocker` (tests/signal.rs), the owner's
//! pinned wiring (internal), deferred calls from other threads (tests/signal.rs), `Property`
//! (tests/property.rs).
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdnet::{
    ConnectionError, ConnectionEvaluator, ConnectionHandle, EventLoop, LoopError, Signal,
    foundation,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Signals in a script.
const SIGNALS: usize = 2;
/// `connect_weak` owners in a script.
const OWNERS: usize = 3;
/// Connections a script makes at most (later connects are refused, on both sides alike), so that
/// slots that connect a slot on every call cannot grow the list exponentially.
const MAX_SLOTS: usize = 20;
/// Emits and loop turns on the stack at most (the outermost one included).
const MAX_DEPTH: u32 = 3;
/// Emits a script makes at most (later ones are skipped, on both sides alike): deferred slots
/// that emit their own signal double their queued calls at every turn.
const MAX_EMITS: u32 = 300;
/// The fewest weak owners a signal remembers before a `connect_weak` sweeps the gone ones
/// (`MIN_SWEEP` in src/bindings/signal.rs).
const MIN_SWEEP: usize = 8;
/// Scripts run by a plain `cargo test`.
const DEFAULT_CASES: u32 = 4000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    SingleShot,
    Reflective,
    /// `connect_weak` on this owner.
    Weak(usize),
    /// `connect_deferred` on the current loop's evaluator.
    Deferred,
}

/// One action, from outside (a script step) or from inside a slot (a step of its program).
/// Slot numbers are taken modulo the number of slots connected so far.
#[derive(Clone, Debug)]
enum Act {
    /// Connects a slot made from the spec with this index (modulo the specs).
    Connect(usize),
    /// The running slot disconnects itself: through the handle it is given (reflective slots) or
    /// the one `connect` returned.
    DisconnectSelf,
    /// `sig.disconnect(&handle)` (`Some(sig)`) or `handle.disconnect()` (`None`).
    Disconnect {
        sig: Option<usize>,
        slot: usize,
    },
    /// `sig.block_connection(&handle, blocked)` or `handle.block(blocked)`.
    Block {
        sig: Option<usize>,
        slot: usize,
        blocked: bool,
    },
    DisconnectAll(usize),
    /// Emits `sig` (unless `MAX_DEPTH` emits and turns are on the stack); `catch`: inside
    /// `catch_unwind` (the outermost emit always is).
    Emit {
        sig: usize,
        value: u32,
        catch: bool,
    },
    /// Logs both connection counts and one slot's `is_active` and `is_blocked`.
    Query {
        slot: usize,
    },
    Panic,
    /// Drops the script's `Rc` of an owner.
    DropOwner(usize),
    /// Drops the script's `Rc` of a signal.
    DropSignal(usize),
    /// One turn of the loop, not waiting (`catch` as for `Emit`).
    Turn {
        catch: bool,
    },
    /// Drops the loop (with calls queued, maybe) and makes a new one; `keep`: the script keeps
    /// the old loop's evaluator. From outside only.
    RestartLoop {
        keep: bool,
    },
}

/// A step of a slot's program: `once` runs at the slot's first call only.
#[derive(Clone, Debug)]
struct Step {
    act: Act,
    once: bool,
}

/// What `Act::Connect` connects.
#[derive(Clone, Debug)]
struct Spec {
    sig: usize,
    kind: Kind,
    program: Vec<Step>,
    /// Run by a value the closure captures when the closure is dropped (while the script runs):
    /// a connect, disconnect, block, `disconnect_all`, query, drop, or an emit or turn (caught;
    /// skipped while a panic unwinds, where a second panic would abort).
    on_drop: Option<Act>,
    /// That value's `Drop` panics afterwards (unless a panic unwinds already).
    panics_on_drop: bool,
}

#[derive(Clone, Debug)]
struct Script {
    specs: Vec<Spec>,
    /// What each owner's `Drop` does (as `Spec::on_drop`).
    owner_drops: Vec<Option<Act>>,
    ops: Vec<Act>,
}

/// What the real run and the model write to their logs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Call {
        slot: usize,
        value: u32,
        depth: u32,
    },
    Dropped(usize),
    DropPanicking(usize),
    OwnerDropped(usize),
    Connected(usize),
    Capped,
    /// A connect to a signal or owner the script dropped.
    Gone,
    Disconnect(Result<(), ConnectionError>),
    Block(Result<bool, ConnectionError>),
    Panicking(usize),
    Caught,
    /// A turn of the loop returned, with how many callbacks it ran.
    Turned(usize),
    /// A turn while the loop is being dropped.
    NoLoop,
    Count {
        sig: usize,
        count: usize,
    },
    NoSignal(usize),
    Pending(bool),
    Active {
        slot: usize,
        active: bool,
    },
    IsBlocked {
        slot: usize,
        result: Result<bool, ConnectionError>,
    },
    IsConnectionBlocked {
        slot: usize,
        sig: usize,
        result: Result<bool, ConnectionError>,
    },
    BelongsTo {
        slot: usize,
        sig: usize,
        belongs: bool,
    },
}

/// Emits and turns skipped when done by a `Drop` while a panic unwinds.
fn skipped_while_unwinding(act: &Act) -> bool {
    matches!(act, Act::Emit { .. } | Act::Turn { .. })
}

// ---- The real run -----------------------------------------------------------------------------

thread_local! {
    /// The real run's log (thread-local: deferred slots must be `Send`, so they capture no `Rc`).
    static LOG: RefCell<Vec<Ev>> = const { RefCell::new(Vec::new()) };
    /// The script running on this thread.
    static REAL: RefCell<Weak<Real>> = const { RefCell::new(Weak::new()) };
}

fn log(ev: Ev) {
    LOG.with(|l| l.borrow_mut().push(ev));
}

fn current_real() -> Option<Rc<Real>> {
    REAL.with(|r| r.borrow().upgrade())
}

struct Real {
    /// The script's references to the signals (`None` once it dropped one).
    sigs: [RefCell<Option<Rc<Signal<u32>>>>; SIGNALS],
    handles: RefCell<Vec<ConnectionHandle>>,
    owners: RefCell<Vec<Option<Rc<Owner>>>>,
    event_loop: RefCell<Option<EventLoop>>,
    /// The current loop's evaluator.
    evaluator: RefCell<Arc<ConnectionEvaluator>>,
    /// Evaluators of dropped loops the script keeps.
    old_evaluators: RefCell<Vec<Arc<ConnectionEvaluator>>>,
    specs: Vec<Spec>,
    /// Emits and turns on the stack.
    depth: Cell<u32>,
    /// Emits so far.
    emits: Cell<u32>,
}

/// Captured by every slot's closure: records when the closure (and so its captures) is dropped,
/// runs the spec's `on_drop` action, and then panics if the spec says so.
struct DropRecorder {
    slot: usize,
    on_drop: Option<Act>,
    panics: bool,
}

impl Drop for DropRecorder {
    fn drop(&mut self) {
        log(Ev::Dropped(self.slot));
        let real = current_real();
        if let (Some(act), Some(real)) = (&self.on_drop, &real) {
            if !(skipped_while_unwinding(act) && std::thread::panicking()) {
                real.perform(None, act);
            }
        }
        // Not when the script is dropped after a failed step (its report would be lost).
        if self.panics && !std::thread::panicking() && real.is_some() {
            log(Ev::DropPanicking(self.slot));
            resume_unwind(Box::new(SlotPanic));
        }
    }
}

/// A `connect_weak` owner: records its drop and runs its action then.
struct Owner {
    index: usize,
    on_drop: Option<Act>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        log(Ev::OwnerDropped(self.index));
        if let (Some(act), Some(real)) = (&self.on_drop, current_real()) {
            if !(skipped_while_unwinding(act) && std::thread::panicking()) {
                real.perform(None, act);
            }
        }
    }
}

/// Counts an emit or turn on the stack while it lives (also when it unwinds).
struct Depth<'a>(&'a Cell<u32>);

impl<'a> Depth<'a> {
    fn enter(depth: &'a Cell<u32>) -> Self {
        depth.set(depth.get() + 1);
        Depth(depth)
    }
}

impl Drop for Depth<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The payload of a slot's panic (`resume_unwind` skips the panic hook: no noise on stderr).
struct SlotPanic;

impl Real {
    fn handle(&self, slot: usize) -> Option<(usize, ConnectionHandle)> {
        let handles = self.handles.borrow();
        let n = handles.len();
        (n > 0).then(|| (slot % n, handles[slot % n].clone()))
    }

    /// A reference to signal `sig`, unless the script dropped it.
    fn sig(&self, sig: usize) -> Option<Rc<Signal<u32>>> {
        self.sigs[sig].borrow().clone()
    }

    fn connect(&self, spec: usize) {
        let slot = self.handles.borrow().len();
        if slot >= MAX_SLOTS {
            return log(Ev::Capped);
        }
        let spec = self.specs[spec % self.specs.len()].clone();
        let Some(signal) = self.sig(spec.sig) else {
            return log(Ev::Gone);
        };
        let owner = match spec.kind {
            Kind::Weak(owner) => match self.owners.borrow()[owner].clone() {
                Some(owner) => Some(owner),
                None => return log(Ev::Gone),
            },
            _ => None,
        };
        // The slot's number is taken now: a `connect_weak` may run other code (a swept
        // closure's captures) before it returns, which may connect too.
        self.handles.borrow_mut().push(ConnectionHandle::default());
        let recorder = DropRecorder {
            slot,
            on_drop: spec.on_drop,
            panics: spec.panics_on_drop,
        };
        let program = spec.program;
        let mut fired = vec![false; program.len()];
        let handle = match spec.kind {
            Kind::Plain => signal.connect(move |value| {
                let _captured = &recorder;
                run_slot(slot, None, &program, &mut fired, *value);
            }),
            Kind::Reflective => signal.connect_reflective(move |own, value| {
                let _captured = &recorder;
                run_slot(slot, Some(own), &program, &mut fired, *value);
            }),
            Kind::SingleShot => signal.connect_single_shot(move |value| {
                let _captured = &recorder;
                run_slot(slot, None, &program, &mut fired, *value);
            }),
            Kind::Deferred => {
                let evaluator = self.evaluator.borrow().clone();
                signal.connect_deferred(&evaluator, move |value| {
                    let _captured = &recorder;
                    run_slot(slot, None, &program, &mut fired, *value);
                })
            }
            Kind::Weak(_) => {
                let owner = owner.expect("looked up above");
                let slot_fn = move |_: &Owner, value: &u32| {
                    let _captured = &recorder;
                    run_slot(slot, None, &program, &mut fired, *value);
                };
                match catch_unwind(AssertUnwindSafe(|| signal.connect_weak(&owner, slot_fn))) {
                    Ok(handle) => {
                        self.handles.borrow_mut()[slot] = handle;
                        log(Ev::Connected(slot));
                        // Our references go, owner first (they may be the last ones now).
                        drop(owner);
                        drop(signal);
                        return;
                    }
                    // No handle came back; the slot number is spent.
                    Err(panic) => resume_unwind(panic),
                }
            }
        };
        self.handles.borrow_mut()[slot] = handle;
        log(Ev::Connected(slot));
    }

    /// Runs `act`; `me` is the running slot and the handle it was given, if any.
    fn perform(&self, me: Option<(usize, Option<&ConnectionHandle>)>, act: &Act) {
        match *act {
            Act::Connect(spec) => self.connect(spec),
            Act::DisconnectSelf => {
                let Some((slot, own)) = me else { return };
                match own {
                    Some(own) => own.disconnect(),
                    None => {
                        let handle = self.handles.borrow()[slot].clone();
                        handle.disconnect();
                    }
                }
            }
            Act::Disconnect { sig, slot } => {
                let Some((_, handle)) = self.handle(slot) else {
                    return;
                };
                match sig {
                    Some(sig) => {
                        let Some(signal) = self.sig(sig) else { return };
                        let result = signal.disconnect(&handle);
                        log(Ev::Disconnect(result));
                        drop(signal);
                    }
                    None => handle.disconnect(),
                }
            }
            Act::Block { sig, slot, blocked } => {
                let Some((_, handle)) = self.handle(slot) else {
                    return;
                };
                let result = match sig {
                    Some(sig) => {
                        let Some(signal) = self.sig(sig) else { return };
                        signal.block_connection(&handle, blocked)
                    }
                    None => handle.block(blocked),
                };
                log(Ev::Block(result));
            }
            Act::DisconnectAll(sig) => {
                if let Some(signal) = self.sig(sig) {
                    signal.disconnect_all();
                }
            }
            Act::Emit { sig, value, catch } => {
                if self.depth.get() >= MAX_DEPTH || self.emits.get() >= MAX_EMITS {
                    return;
                }
                self.emits.set(self.emits.get() + 1);
                let emit = || {
                    let _depth = Depth::enter(&self.depth);
                    if let Some(signal) = self.sig(sig) {
                        signal.emit(&value);
                    }
                };
                self.maybe_catch(me.is_none() || catch, emit);
            }
            Act::Turn { catch } => {
                if self.depth.get() >= MAX_DEPTH {
                    return;
                }
                let turn = || {
                    let _depth = Depth::enter(&self.depth);
                    match foundation::process_events(Some(Duration::ZERO)) {
                        Ok(ran) => log(Ev::Turned(ran)),
                        // A closure dropped with the loop's queued calls turns it.
                        Err(LoopError::NoEventLoop) => log(Ev::NoLoop),
                        Err(e) => panic!("a turn failed: {e}"),
                    }
                };
                self.maybe_catch(me.is_none() || catch, turn);
            }
            Act::Query { slot } => {
                for sig in 0..SIGNALS {
                    match self.sig(sig) {
                        Some(signal) => log(Ev::Count {
                            sig,
                            count: signal.connection_count(),
                        }),
                        None => log(Ev::NoSignal(sig)),
                    }
                }
                let Some((slot, handle)) = self.handle(slot) else {
                    return;
                };
                let active = handle.is_active();
                log(Ev::Active { slot, active });
                let result = handle.is_blocked();
                log(Ev::IsBlocked { slot, result });
            }
            Act::Panic => {
                if let Some((slot, _)) = me {
                    log(Ev::Panicking(slot));
                    resume_unwind(Box::new(SlotPanic));
                }
            }
            Act::DropOwner(owner) => {
                let owner = self.owners.borrow_mut()[owner].take();
                drop(owner);
            }
            Act::DropSignal(sig) => {
                let signal = self.sigs[sig].borrow_mut().take();
                drop(signal);
            }
            Act::RestartLoop { keep } => {
                if me.is_none() {
                    self.restart_loop(true, keep);
                }
            }
        }
    }

    fn maybe_catch(&self, catch: bool, f: impl FnOnce()) {
        if catch {
            if catch_unwind(AssertUnwindSafe(f)).is_err() {
                log(Ev::Caught);
            }
        } else {
            f();
        }
    }

    /// Drops the loop and, if `new`, makes another; a panic out of the drop (a closure dropped
    /// with a queued call) propagates once the new loop is there.
    fn restart_loop(&self, new: bool, keep: bool) {
        let old = self.event_loop.borrow_mut().take();
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(old)));
        if new {
            let event_loop = EventLoop::new().expect("the old loop is gone");
            let evaluator = event_loop.connection_evaluator();
            *self.event_loop.borrow_mut() = Some(event_loop);
            let old = self.evaluator.replace(evaluator);
            if keep {
                self.old_evaluators.borrow_mut().push(old);
            }
        }
        if let Err(panic) = dropped {
            resume_unwind(panic);
        }
    }

    /// Every query, on every slot and both signals.
    fn query_all(&self) {
        let sigs: Vec<_> = (0..SIGNALS).map(|sig| self.sig(sig)).collect();
        for (sig, signal) in sigs.iter().enumerate() {
            match signal {
                Some(signal) => log(Ev::Count {
                    sig,
                    count: signal.connection_count(),
                }),
                None => log(Ev::NoSignal(sig)),
            }
        }
        log(Ev::Pending(self.evaluator.borrow().has_pending()));
        let handles = self.handles.borrow().clone();
        for (slot, handle) in handles.iter().enumerate() {
            log(Ev::Active {
                slot,
                active: handle.is_active(),
            });
            log(Ev::IsBlocked {
                slot,
                result: handle.is_blocked(),
            });
            for (sig, signal) in sigs.iter().enumerate() {
                let Some(signal) = signal else { continue };
                log(Ev::IsConnectionBlocked {
                    slot,
                    sig,
                    result: signal.is_connection_blocked(handle),
                });
                log(Ev::BelongsTo {
                    slot,
                    sig,
                    belongs: handle.belongs_to(signal),
                });
            }
        }
    }
}

fn run_slot(
    slot: usize,
    own: Option<&ConnectionHandle>,
    program: &[Step],
    fired: &mut [bool],
    value: u32,
) {
    let real = current_real().expect("slots run only while the script runs");
    let depth = real.depth.get() - 1;
    log(Ev::Call { slot, value, depth });
    for (step, fired) in program.iter().zip(fired.iter_mut()) {
        if step.once && std::mem::replace(fired, true) {
            continue;
        }
        real.perform(Some((slot, own)), &step.act);
    }
}

// ---- The model --------------------------------------------------------------------------------

struct MSlot {
    sig: usize,
    kind: Kind,
    program: Vec<Step>,
    on_drop: Option<Act>,
    panics: bool,
    fired: Vec<bool>,
    connected: bool,
    blocked: bool,
    /// The connection's closure in the signal is not dropped yet (for a deferred slot, the
    /// wrapper that queues its calls; for the others, the slot's closure itself).
    wrapped: bool,
    /// The slot's closure (and its captures) is not dropped yet.
    alive: bool,
    /// Its connection's closure is running in an emit.
    running: bool,
    /// Connected while an emit of its signal ran, which has not ended yet.
    fresh: bool,
    /// The evaluator a deferred slot was connected to (an index into `Model::evals`).
    eval: usize,
    /// A deferred call of it is running.
    deferred_running: bool,
}

#[derive(Default)]
struct MEval {
    /// Its loop was dropped.
    closed: bool,
    /// Queued calls: slot and value.
    queue: VecDeque<(usize, u32)>,
}

struct Model {
    slots: Vec<MSlot>,
    /// The slots in the order they were connected (a slot's number is taken when its connect
    /// begins, and a `connect_weak` may run other code, connecting other slots, before it
    /// connects: see `Real::connect`).
    order: Vec<usize>,
    specs: Vec<Spec>,
    owner_drops: Vec<Option<Act>>,
    log: Vec<Ev>,
    /// Emits and turns on the stack.
    depth: u32,
    /// Emits so far.
    emits: u32,
    /// Emits of each signal on the stack.
    emitting: [u32; SIGNALS],
    /// A panic is unwinding (what closures dropped meanwhile do happens during it).
    unwinding: bool,
    /// The script holds the signal.
    sig_held: [bool; SIGNALS],
    /// References to the signal held by running emits and connects.
    sig_refs: [u32; SIGNALS],
    /// The signal is not dropped yet.
    sig_alive: [bool; SIGNALS],
    /// `connect_weak` slots each signal remembers, and the length that makes it sweep them.
    weak_list: [Vec<usize>; SIGNALS],
    sweep_at: [usize; SIGNALS],
    owner_held: [bool; OWNERS],
    /// Strong references to the owner held by running slots (and connects).
    owner_pins: [u32; OWNERS],
    owner_alive: [bool; OWNERS],
    /// Each loop's evaluator; the last is the current loop's.
    evals: Vec<MEval>,
    /// The calls the running evaluation took and has not reached yet.
    batch: VecDeque<(usize, u32)>,
    /// The calls an evaluator took out of its queue and is dropping (its loop was dropped, or
    /// they were cancelled while a panicking evaluation had taken them).
    closing: VecDeque<(usize, u32)>,
    evaluating: bool,
    /// The thread has a loop (not while one is being dropped).
    has_loop: bool,
    stats: [u64; 14],
}

/// What the scripts made happen, counted by the model (printed after the run, so that a
/// generator change that stops reaching a case shows).
#[derive(Clone, Copy)]
enum Stat {
    DeferredCalls,
    DeferredSkipped,
    BatchesPutBack,
    NestedTurnsRefused,
    LoopsDroppedWithCalls,
    DeferredDisconnectedByDeadLoop,
    WeakCalls,
    WeakDisconnectedAtTurn,
    SweptSlots,
    SweepsPanicked,
    OwnersDroppedBySlots,
    SignalsDroppedAfterTheirEmit,
    SignalsDroppedInsideSlotsOrDrops,
    DropPanics,
}

const STAT_NAMES: [&str; 14] = [
    "deferred calls run",
    "deferred calls skipped (disconnected after the evaluation took them)",
    "batches put back after a panic",
    "nested turns refused (an evaluation is running)",
    "loops dropped with calls queued",
    "deferred connections disconnected by an emit (loop gone)",
    "connect_weak slots called",
    "connect_weak slots disconnected at their turn (owner gone)",
    "connect_weak slots swept by a later connect_weak",
    "connect_weak sweeps that panicked",
    "owners dropped while one of their slots ran",
    "signals dropped at the end of their own emit",
    "signals dropped from a slot or a Drop",
    "closure drops that panicked",
];

thread_local! {
    static STATS: RefCell<[u64; 14]> = const { RefCell::new([0; 14]) };
    static CASES: Cell<u64> = const { Cell::new(0) };
}

/// A panic unwinding through the model.
struct Unwind;

/// `a`, or `b` if `a` went well (the first panic is the one that propagates).
fn first_err(a: Result<(), Unwind>, b: Result<(), Unwind>) -> Result<(), Unwind> {
    a.and(b)
}

impl Model {
    fn new(script: &Script) -> Self {
        Model {
            slots: Vec::new(),
            order: Vec::new(),
            specs: script.specs.clone(),
            owner_drops: script.owner_drops.clone(),
            log: Vec::new(),
            depth: 0,
            emits: 0,
            emitting: [0; SIGNALS],
            unwinding: false,
            sig_held: [true; SIGNALS],
            sig_refs: [0; SIGNALS],
            sig_alive: [true; SIGNALS],
            weak_list: std::array::from_fn(|_| Vec::new()),
            sweep_at: [MIN_SWEEP; SIGNALS],
            owner_held: [true; OWNERS],
            owner_pins: [0; OWNERS],
            owner_alive: [true; OWNERS],
            evals: vec![MEval::default()],
            batch: VecDeque::new(),
            closing: VecDeque::new(),
            evaluating: false,
            has_loop: true,
            stats: [0; 14],
        }
    }

    fn count_stat(&mut self, stat: Stat) {
        self.stats[stat as usize] += 1;
    }

    fn slot_index(&self, slot: usize) -> Option<usize> {
        let n = self.slots.len();
        (n > 0).then(|| slot % n)
    }

    /// Runs `f` with `unwinding` (a panic unwinds meanwhile) added.
    fn unwinding<R>(&mut self, unwinding: bool, f: impl FnOnce(&mut Self) -> R) -> R {
        let was = self.unwinding;
        self.unwinding |= unwinding;
        let r = f(self);
        self.unwinding = was;
        r
    }

    /// Runs a `Drop`'s action (from outside any slot: emits and turns catch their panics).
    fn drop_action(&mut self, act: Option<Act>) -> Result<(), Unwind> {
        match act {
            Some(act) if skipped_while_unwinding(&act) && self.unwinding => Ok(()),
            Some(act) => self.perform(None, &act),
            None => Ok(()),
        }
    }

    /// Disconnects `k`; its connection's closure is dropped now, or when its running call
    /// returns.
    fn disconnect(&mut self, k: usize) -> Result<bool, Unwind> {
        let s = &mut self.slots[k];
        if !s.connected {
            return Ok(false);
        }
        s.connected = false;
        if !s.running {
            self.drop_wrapper(k, false)?;
        }
        Ok(true)
    }

    /// Drops the closure of `k`'s connection: a deferred slot's wrapper takes its queued calls
    /// with it (the slot's closure goes once no call of it is left); any other slot's closure
    /// is the slot's.
    fn drop_wrapper(&mut self, k: usize, unwinding: bool) -> Result<(), Unwind> {
        if !self.slots[k].wrapped {
            return Ok(());
        }
        self.slots[k].wrapped = false;
        if self.slots[k].kind == Kind::Deferred {
            let eval = self.slots[k].eval;
            self.evals[eval].queue.retain(|&(slot, _)| slot != k);
            self.maybe_drop_deferred(k, unwinding)
        } else {
            self.drop_closure(k, unwinding)
        }
    }

    /// A deferred slot's closure is dropped when nothing holds it any more: its connection,
    /// queued calls, calls the running evaluation took, the running call.
    fn maybe_drop_deferred(&mut self, k: usize, unwinding: bool) -> Result<(), Unwind> {
        let s = &self.slots[k];
        let held = !s.alive
            || s.wrapped
            || s.deferred_running
            || self.evals[s.eval].queue.iter().any(|&(slot, _)| slot == k)
            || self.batch.iter().any(|&(slot, _)| slot == k)
            || self.closing.iter().any(|&(slot, _)| slot == k);
        if held {
            return Ok(());
        }
        self.drop_closure(k, unwinding)
    }

    /// Slot `k`'s closure is dropped (`unwinding`: while a panic unwinds): its captured value
    /// logs it, runs its `on_drop`, and panics if it is to.
    fn drop_closure(&mut self, k: usize, unwinding: bool) -> Result<(), Unwind> {
        self.slots[k].alive = false;
        self.log.push(Ev::Dropped(k));
        let act = self.slots[k].on_drop.clone();
        let panics = self.slots[k].panics;
        self.unwinding(unwinding, |m| {
            m.drop_action(act)?;
            if panics && !m.unwinding {
                m.count_stat(Stat::DropPanics);
                m.log.push(Ev::DropPanicking(k));
                return Err(Unwind);
            }
            Ok(())
        })
    }

    /// The owner is dropped once neither the script nor a running slot holds it.
    fn release_owner(&mut self, o: usize, unwinding: bool) -> Result<(), Unwind> {
        if !self.owner_alive[o] || self.owner_held[o] || self.owner_pins[o] > 0 {
            return Ok(());
        }
        self.owner_alive[o] = false;
        if unwinding || self.depth > 0 {
            self.count_stat(Stat::OwnersDroppedBySlots);
        }
        self.log.push(Ev::OwnerDropped(o));
        let act = self.owner_drops[o].clone();
        self.unwinding(unwinding, |m| m.drop_action(act))
    }

    fn owner_strong(&self, o: usize) -> bool {
        self.owner_held[o] || self.owner_pins[o] > 0
    }

    /// The signal is dropped once neither the script nor an emit or connect holds it.
    fn release_sig(&mut self, sig: usize, unwinding: bool) -> Result<(), Unwind> {
        if !self.sig_alive[sig] || self.sig_held[sig] || self.sig_refs[sig] > 0 {
            return Ok(());
        }
        self.sig_alive[sig] = false;
        if self.depth > 0 {
            self.count_stat(Stat::SignalsDroppedInsideSlotsOrDrops);
        }
        self.remove_all(sig, unwinding)
    }

    /// `disconnect_all` (and dropping the signal): all are disconnected first; then the
    /// closures are dropped, in order, the ones after a panicking one while it unwinds.
    fn remove_all(&mut self, sig: usize, unwinding: bool) -> Result<(), Unwind> {
        let mut dropped = Vec::new();
        for &k in &self.order {
            let s = &mut self.slots[k];
            if s.sig == sig && s.connected {
                s.connected = false;
                if !s.running {
                    dropped.push(k);
                }
            }
        }
        self.weak_list[sig].clear();
        self.drop_wrappers(dropped, unwinding)
    }

    fn drop_wrappers(&mut self, ks: Vec<usize>, unwinding: bool) -> Result<(), Unwind> {
        let mut result = Ok(());
        for k in ks {
            let r = self.drop_wrapper(k, unwinding || result.is_err());
            result = first_err(result, r);
        }
        result
    }

    /// A `connect_weak` first sweeps the connections whose owner is gone, when the signal's
    /// list of weak owners has doubled since the last sweep.
    fn sweep(&mut self, sig: usize) -> Result<(), Unwind> {
        if self.weak_list[sig].len() < self.sweep_at[sig] {
            return Ok(());
        }
        let mut gone = Vec::new();
        let list = std::mem::take(&mut self.weak_list[sig]);
        for k in list {
            let Kind::Weak(o) = self.slots[k].kind else {
                unreachable!()
            };
            if !self.slots[k].connected {
            } else if !self.owner_strong(o) {
                gone.push(k);
            } else {
                self.weak_list[sig].push(k);
            }
        }
        self.sweep_at[sig] = (self.weak_list[sig].len() * 2).max(MIN_SWEEP);
        for &k in &gone {
            self.count_stat(Stat::SweptSlots);
            self.slots[k].connected = false;
        }
        // One may be running: its owner went as its call ended (its slot's reference to it
        // was the last), and that owner's `Drop` made this `connect_weak`. The emit drops its
        // closure when the call returns.
        gone.retain(|&k| !self.slots[k].running);
        let result = self.drop_wrappers(gone, false);
        if result.is_err() {
            self.count_stat(Stat::SweepsPanicked);
        }
        result
    }

    /// `sig`'s view of slot `k`'s handle.
    fn own(&self, sig: usize, k: usize) -> Result<(), ConnectionError> {
        let s = &self.slots[k];
        if !s.connected {
            Err(ConnectionError::Inactive)
        } else if s.sig != sig {
            Err(ConnectionError::ForeignHandle)
        } else {
            Ok(())
        }
    }

    fn count(&self, sig: usize) -> usize {
        self.slots
            .iter()
            .filter(|s| s.sig == sig && s.connected)
            .count()
    }

    fn is_blocked(&self, k: usize) -> Result<bool, ConnectionError> {
        let s = &self.slots[k];
        if s.connected {
            Ok(s.blocked)
        } else {
            Err(ConnectionError::Inactive)
        }
    }

    fn connect(&mut self, spec: usize) -> Result<(), Unwind> {
        let k = self.slots.len();
        if k >= MAX_SLOTS {
            self.log.push(Ev::Capped);
            return Ok(());
        }
        let spec = self.specs[spec % self.specs.len()].clone();
        let sig = spec.sig;
        if !self.sig_held[sig] {
            self.log.push(Ev::Gone);
            return Ok(());
        }
        let owner = match spec.kind {
            Kind::Weak(o) if !self.owner_held[o] => {
                self.log.push(Ev::Gone);
                return Ok(());
            }
            Kind::Weak(o) => Some(o),
            _ => None,
        };
        // The slot's number is taken now (see `Real::connect`); it is connected below.
        self.slots.push(MSlot {
            sig,
            kind: spec.kind,
            fired: vec![false; spec.program.len()],
            program: spec.program,
            on_drop: spec.on_drop,
            panics: spec.panics_on_drop,
            connected: false,
            blocked: false,
            wrapped: true,
            alive: true,
            running: false,
            fresh: false,
            eval: self.evals.len() - 1,
            deferred_running: false,
        });
        self.sig_refs[sig] += 1;
        let mut result = Ok(());
        if let Some(o) = owner {
            self.owner_pins[o] += 1;
            result = self.sweep(sig);
        }
        if result.is_ok() {
            self.order.push(k);
            self.slots[k].connected = true;
            self.slots[k].fresh = self.emitting[sig] > 0;
            if owner.is_some() {
                self.weak_list[sig].push(k);
            }
            self.log.push(Ev::Connected(k));
        } else {
            // The sweep panicked: nothing was connected, and the slot's closure is dropped as
            // the panic leaves `connect_weak`.
            let _ = self.drop_wrapper(k, true);
        }
        if let Some(o) = owner {
            self.owner_pins[o] -= 1;
            let r = self.release_owner(o, result.is_err());
            result = first_err(result, r);
        }
        self.sig_refs[sig] -= 1;
        let r = self.release_sig(sig, result.is_err());
        first_err(result, r)
    }

    fn perform(&mut self, me: Option<usize>, act: &Act) -> Result<(), Unwind> {
        match *act {
            Act::Connect(spec) => return self.connect(spec),
            Act::DisconnectSelf => {
                if let Some(k) = me {
                    self.disconnect(k)?;
                }
            }
            Act::Disconnect { sig, slot } => {
                let Some(k) = self.slot_index(slot) else {
                    return Ok(());
                };
                match sig {
                    Some(sig) => {
                        if !self.sig_held[sig] {
                            return Ok(());
                        }
                        let result = self.own(sig, k);
                        self.sig_refs[sig] += 1;
                        let mut r = Ok(());
                        if result.is_ok() {
                            r = self.disconnect(k).map(drop);
                        }
                        if r.is_ok() {
                            self.log.push(Ev::Disconnect(result));
                        }
                        self.sig_refs[sig] -= 1;
                        let r2 = self.release_sig(sig, r.is_err());
                        return first_err(r, r2);
                    }
                    None => {
                        self.disconnect(k)?;
                    }
                }
            }
            Act::Block { sig, slot, blocked } => {
                let Some(k) = self.slot_index(slot) else {
                    return Ok(());
                };
                let result = match sig {
                    Some(sig) if !self.sig_held[sig] => return Ok(()),
                    Some(sig) => self.own(sig, k),
                    None if self.slots[k].connected => Ok(()),
                    None => Err(ConnectionError::Inactive),
                }
                .map(|()| std::mem::replace(&mut self.slots[k].blocked, blocked));
                self.log.push(Ev::Block(result));
            }
            Act::DisconnectAll(sig) => {
                if !self.sig_held[sig] {
                    return Ok(());
                }
                // The caller holds a reference meanwhile: a closure dropped here may drop the
                // script's.
                self.sig_refs[sig] += 1;
                let r = self.remove_all(sig, false);
                self.sig_refs[sig] -= 1;
                let r2 = self.release_sig(sig, r.is_err());
                return first_err(r, r2);
            }
            Act::Emit { sig, value, catch } => {
                if self.depth >= MAX_DEPTH || self.emits >= MAX_EMITS {
                    return Ok(());
                }
                self.emits += 1;
                if self.emit(sig, value).is_err() {
                    if catch || me.is_none() {
                        self.log.push(Ev::Caught);
                    } else {
                        return Err(Unwind);
                    }
                }
            }
            Act::Turn { catch } => {
                if self.depth >= MAX_DEPTH {
                    return Ok(());
                }
                if self.turn().is_err() {
                    if catch || me.is_none() {
                        self.log.push(Ev::Caught);
                    } else {
                        return Err(Unwind);
                    }
                }
            }
            Act::Query { slot } => {
                self.log_counts();
                let Some(slot) = self.slot_index(slot) else {
                    return Ok(());
                };
                let active = self.slots[slot].connected;
                self.log.push(Ev::Active { slot, active });
                let result = self.is_blocked(slot);
                self.log.push(Ev::IsBlocked { slot, result });
            }
            Act::Panic => {
                if let Some(k) = me {
                    self.log.push(Ev::Panicking(k));
                    return Err(Unwind);
                }
            }
            Act::DropOwner(o) => {
                if self.owner_held[o] {
                    self.owner_held[o] = false;
                    return self.release_owner(o, false);
                }
            }
            Act::DropSignal(sig) => {
                if self.sig_held[sig] {
                    self.sig_held[sig] = false;
                    return self.release_sig(sig, false);
                }
            }
            Act::RestartLoop { .. } => {
                if me.is_none() {
                    return self.restart_loop(true);
                }
            }
        }
        Ok(())
    }

    /// The loop is dropped: its queued calls are taken out of the queue and dropped in order;
    /// a new loop takes its place.
    fn restart_loop(&mut self, new: bool) -> Result<(), Unwind> {
        let cur = self.evals.len() - 1;
        self.evals[cur].closed = true;
        self.has_loop = false;
        self.closing = std::mem::take(&mut self.evals[cur].queue);
        if !self.closing.is_empty() {
            self.count_stat(Stat::LoopsDroppedWithCalls);
        }
        let mut result = Ok(());
        while let Some((k, _)) = self.closing.pop_front() {
            let r = self.maybe_drop_deferred(k, result.is_err());
            result = first_err(result, r);
        }
        if new {
            self.evals.push(MEval::default());
            self.has_loop = true;
        }
        result
    }

    fn emit(&mut self, sig: usize, value: u32) -> Result<(), Unwind> {
        if !self.sig_held[sig] {
            return Ok(());
        }
        self.depth += 1;
        self.emitting[sig] += 1;
        self.sig_refs[sig] += 1;
        let mut result = Ok(());
        // Slots connected meanwhile are `fresh`: the loop may see them, and skips them.
        let mut i = 0;
        while i < self.order.len() {
            let k = self.order[i];
            let s = &self.slots[k];
            if s.sig == sig && s.connected && !s.blocked && !s.running && !s.fresh {
                result = self.call(k, value);
                if result.is_err() {
                    break;
                }
            }
            i += 1;
        }
        self.emitting[sig] -= 1;
        if self.emitting[sig] == 0 {
            for s in self.slots.iter_mut().filter(|s| s.sig == sig) {
                s.fresh = false;
            }
        }
        self.sig_refs[sig] -= 1;
        if self.sig_alive[sig] && !self.sig_held[sig] && self.sig_refs[sig] == 0 {
            self.count_stat(Stat::SignalsDroppedAfterTheirEmit);
        }
        let r = self.release_sig(sig, result.is_err());
        result = first_err(result, r);
        self.depth -= 1;
        result
    }

    /// Slot `k`'s turn in an emit.
    fn call(&mut self, k: usize, value: u32) -> Result<(), Unwind> {
        let kind = self.slots[k].kind;
        let mut result = Ok(());
        self.slots[k].running = true;
        match kind {
            Kind::Deferred => {
                let eval = self.slots[k].eval;
                if self.evals[eval].closed {
                    // Nothing will run its calls: it disconnects itself.
                    self.count_stat(Stat::DeferredDisconnectedByDeadLoop);
                    result = self.disconnect(k).map(drop);
                } else {
                    self.evals[eval].queue.push_back((k, value));
                }
            }
            Kind::Weak(o) if !self.owner_strong(o) => {
                // The owner is gone: it disconnects itself, without calling the slot.
                self.count_stat(Stat::WeakDisconnectedAtTurn);
                result = self.disconnect(k).map(drop);
            }
            _ => {
                self.log.push(Ev::Call {
                    slot: k,
                    value,
                    depth: self.depth - 1,
                });
                if kind == Kind::SingleShot {
                    // Disconnected just before it is called.
                    result = self.disconnect(k).map(drop);
                }
                if let Kind::Weak(o) = kind {
                    self.count_stat(Stat::WeakCalls);
                    self.owner_pins[o] += 1;
                }
                if result.is_ok() {
                    result = self.run_program(k);
                }
                if let Kind::Weak(o) = kind {
                    self.owner_pins[o] -= 1;
                    let r = self.release_owner(o, result.is_err());
                    result = first_err(result, r);
                }
            }
        }
        let s = &mut self.slots[k];
        s.running = false;
        if !s.connected && s.wrapped {
            let r = self.drop_wrapper(k, result.is_err());
            result = first_err(result, r);
        }
        result
    }

    fn run_program(&mut self, k: usize) -> Result<(), Unwind> {
        let program = self.slots[k].program.clone();
        for (i, step) in program.iter().enumerate() {
            if step.once && std::mem::replace(&mut self.slots[k].fired[i], true) {
                continue;
            }
            self.perform(Some(k), &step.act)?;
        }
        Ok(())
    }

    /// One turn of the loop: the deferred calls queued before it, in order (none while an
    /// evaluation runs further up the stack).
    fn turn(&mut self) -> Result<(), Unwind> {
        if !self.has_loop {
            self.log.push(Ev::NoLoop);
            return Ok(());
        }
        self.depth += 1;
        let cur = self.evals.len() - 1;
        let mut result = Ok(());
        let mut ran = 0;
        if self.evaluating {
            self.count_stat(Stat::NestedTurnsRefused);
        } else {
            self.evaluating = true;
            let queue = std::mem::take(&mut self.evals[cur].queue);
            self.batch = queue;
            while let Some((k, value)) = self.batch.pop_front() {
                if !self.slots[k].wrapped {
                    self.count_stat(Stat::DeferredSkipped);
                } else {
                    self.count_stat(Stat::DeferredCalls);
                    self.slots[k].deferred_running = true;
                    self.log.push(Ev::Call {
                        slot: k,
                        value,
                        depth: self.depth - 1,
                    });
                    result = self.run_program(k);
                    self.slots[k].deferred_running = false;
                    ran += 1;
                }
                let r = self.maybe_drop_deferred(k, result.is_err());
                result = first_err(result, r);
                if result.is_err() {
                    break;
                }
            }
            // After a panic the rest goes back to the front of the queue, but for the calls of
            // connections disconnected meanwhile: those are dropped (as the panic unwinds).
            let rest = std::mem::take(&mut self.batch);
            if !rest.is_empty() {
                self.count_stat(Stat::BatchesPutBack);
            }
            let (live, cancelled): (VecDeque<_>, VecDeque<_>) =
                rest.into_iter().partition(|&(k, _)| self.slots[k].wrapped);
            for call in live.into_iter().rev() {
                self.evals[cur].queue.push_front(call);
            }
            self.closing = cancelled;
            while let Some((k, _)) = self.closing.pop_front() {
                // While the panic unwinds: nothing panics again.
                let _ = self.maybe_drop_deferred(k, true);
            }
            self.evaluating = false;
        }
        if result.is_ok() {
            self.log.push(Ev::Turned(ran));
        }
        self.depth -= 1;
        result
    }

    /// Each signal's connection count, or that the script dropped it.
    fn log_counts(&mut self) {
        for sig in 0..SIGNALS {
            if self.sig_held[sig] {
                let count = self.count(sig);
                self.log.push(Ev::Count { sig, count });
            } else {
                self.log.push(Ev::NoSignal(sig));
            }
        }
    }

    fn query_all(&mut self) {
        self.log_counts();
        let cur = self.evals.len() - 1;
        let pending = !self.evals[cur].queue.is_empty();
        self.log.push(Ev::Pending(pending));
        for slot in 0..self.slots.len() {
            let active = self.slots[slot].connected;
            self.log.push(Ev::Active { slot, active });
            let result = self.is_blocked(slot);
            self.log.push(Ev::IsBlocked { slot, result });
            for sig in (0..SIGNALS).filter(|&sig| self.sig_held[sig]) {
                let result = self.own(sig, slot).map(|()| self.slots[slot].blocked);
                self.log.push(Ev::IsConnectionBlocked { slot, sig, result });
                let belongs = self.own(sig, slot).is_ok();
                self.log.push(Ev::BelongsTo { slot, sig, belongs });
            }
        }
    }
}

// ---- Running a script on both -----------------------------------------------------------------

/// The first difference of two logs, with some context.
fn diff(real: &[Ev], model: &[Ev]) -> String {
    let at = real
        .iter()
        .zip(model)
        .position(|(a, b)| a != b)
        .unwrap_or(real.len().min(model.len()));
    let from = at.saturating_sub(12);
    format!(
        "logs differ at entry {at}\n  real  [{from}..]: {:?}\n  model [{from}..]: {:?}",
        &real[from..real.len().min(at + 6)],
        &model[from..model.len().min(at + 6)],
    )
}

/// What the script does at its end, after its steps: drops the signals, the owners, the loop.
fn teardown() -> Vec<Act> {
    (0..SIGNALS)
        .map(Act::DropSignal)
        .chain((0..OWNERS).map(Act::DropOwner))
        .collect()
}

fn run(script: &Script) -> Result<(), TestCaseError> {
    LOG.with(|l| l.borrow_mut().clear());
    let event_loop = EventLoop::new().expect("no loop on this thread");
    let real = Rc::new(Real {
        sigs: std::array::from_fn(|_| RefCell::new(Some(Rc::new(Signal::new())))),
        handles: RefCell::new(Vec::new()),
        owners: RefCell::new(
            (0..OWNERS)
                .map(|index| {
                    Some(Rc::new(Owner {
                        index,
                        on_drop: script.owner_drops[index].clone(),
                    }))
                })
                .collect(),
        ),
        evaluator: RefCell::new(event_loop.connection_evaluator()),
        event_loop: RefCell::new(Some(event_loop)),
        old_evaluators: RefCell::new(Vec::new()),
        specs: script.specs.clone(),
        depth: Cell::new(0),
        emits: Cell::new(0),
    });
    REAL.with(|r| *r.borrow_mut() = Rc::downgrade(&real));
    let mut model = Model::new(script);
    let steps = script.ops.iter().map(|op| (op.clone(), true));
    let end = teardown().into_iter().map(|op| (op, false));
    for (i, (op, query)) in steps.chain(end).enumerate() {
        // Both runs catch what the step's panic themselves.
        if catch_unwind(AssertUnwindSafe(|| real.perform(None, &op))).is_err() {
            log(Ev::Caught);
        }
        if model.perform(None, &op).is_err() {
            model.log.push(Ev::Caught);
        }
        if query {
            real.query_all();
            model.query_all();
        }
        let real_log = LOG.with(|l| l.borrow().clone());
        prop_assert!(
            real_log == model.log,
            "after step {i} ({op:?}): {}",
            diff(&real_log, &model.log)
        );
    }
    // Last, the loop. Its queued calls went with the signals (each disconnect drops the
    // connection's queued calls): nothing is left to drop here, as the model says.
    if catch_unwind(AssertUnwindSafe(|| real.restart_loop(false, false))).is_err() {
        log(Ev::Caught);
    }
    if model.restart_loop(false).is_err() {
        model.log.push(Ev::Caught);
    }
    let handles = real.handles.borrow().clone();
    drop(real);
    let real_log = LOG.with(|l| l.borrow().clone());
    prop_assert!(
        real_log == model.log,
        "after dropping the loop: {}",
        diff(&real_log, &model.log)
    );
    prop_assert!(
        model.slots.iter().all(|s| !s.alive),
        "the model leaks a closure"
    );
    CASES.with(|c| c.set(c.get() + 1));
    STATS.with(|stats| {
        for (total, n) in stats.borrow_mut().iter_mut().zip(model.stats) {
            *total += n;
        }
    });
    prop_assert!(handles.iter().all(|h| !h.is_active()));
    Ok(())
}

// ---- Generating scripts -----------------------------------------------------------------------

fn sig() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0), 1 => Just(1)]
}

fn via() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![2 => Just(None), 3 => Just(Some(0)), 1 => Just(Some(1))]
}

/// An action from inside a slot (`inside`) or from outside.
fn act(inside: bool) -> impl Strategy<Value = Act> {
    let slot = 0..16usize;
    let catch = prop::bool::weighted(0.2);
    let (i, o) = (u32::from(inside), u32::from(!inside));
    let choices: Vec<(u32, BoxedStrategy<Act>)> = vec![
        (6 + 6 * o, (0..8usize).prop_map(Act::Connect).boxed()),
        (6 * i, Just(Act::DisconnectSelf).boxed()),
        (
            4,
            (via(), slot.clone())
                .prop_map(|(sig, slot)| Act::Disconnect { sig, slot })
                .boxed(),
        ),
        (
            6,
            (via(), slot.clone(), any::<bool>())
                .prop_map(|(sig, slot, blocked)| Act::Block { sig, slot, blocked })
                .boxed(),
        ),
        (2, sig().prop_map(Act::DisconnectAll).boxed()),
        (
            6 + 6 * o,
            (sig(), 0..100u32, catch)
                .prop_map(|(sig, value, catch)| Act::Emit { sig, value, catch })
                .boxed(),
        ),
        (2, slot.prop_map(|slot| Act::Query { slot }).boxed()),
        (2 * i, Just(Act::Panic).boxed()),
        (2, (0..OWNERS).prop_map(Act::DropOwner).boxed()),
        (1, sig().prop_map(Act::DropSignal).boxed()),
        (
            3 + 3 * o,
            catch.prop_map(|catch| Act::Turn { catch }).boxed(),
        ),
        (
            o,
            any::<bool>()
                .prop_map(|keep| Act::RestartLoop { keep })
                .boxed(),
        ),
    ];
    prop::strategy::Union::new_weighted(choices.into_iter().filter(|(w, _)| *w > 0).collect())
}

/// What a `Drop` does: an action from outside, but neither a slot's own nor a loop restart.
fn drop_action() -> impl Strategy<Value = Option<Act>> {
    prop::option::weighted(0.3, act(false)).prop_map(|act| {
        act.filter(|act| {
            !matches!(
                act,
                Act::DisconnectSelf | Act::Panic | Act::RestartLoop { .. }
            )
        })
    })
}

/// A slot's spec; `weak_heavy`: mostly `connect_weak` slots (so that a signal's list of weak
/// owners grows long enough to be swept).
fn spec(weak_heavy: bool) -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        4 => Just(Kind::Plain),
        1 => Just(Kind::SingleShot),
        2 => Just(Kind::Reflective),
        if weak_heavy { 30 } else { 2 } => (0..OWNERS).prop_map(Kind::Weak),
        2 => Just(Kind::Deferred),
    ];
    let step = (act(true), prop::bool::weighted(0.4)).prop_map(|(act, once)| Step { act, once });
    (
        sig(),
        kind,
        prop::collection::vec(step, 0..4),
        drop_action(),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(sig, kind, program, on_drop, panics_on_drop)| Spec {
            sig,
            kind,
            program,
            on_drop,
            panics_on_drop,
        })
}

fn script() -> impl Strategy<Value = Script> {
    prop::bool::weighted(0.25).prop_flat_map(script_of)
}

/// A script; a `weak_heavy` one begins with a burst of connects and an owner's drop, so that the
/// next `connect_weak`s sweep.
fn script_of(weak_heavy: bool) -> impl Strategy<Value = Script> {
    let burst = if weak_heavy { 8..12 } else { 0..1 };
    (
        prop::collection::vec(spec(weak_heavy), 1..6),
        prop::collection::vec(drop_action(), OWNERS),
        prop::collection::vec((0..8usize).prop_map(Act::Connect), burst),
        (0..OWNERS).prop_map(Act::DropOwner),
        prop::collection::vec(act(false), 1..32),
    )
        .prop_map(move |(specs, owner_drops, mut prefix, drop_owner, ops)| {
            if weak_heavy {
                prefix.push(drop_owner);
            }
            prefix.extend(ops);
            Script {
                specs,
                owner_drops,
                ops: prefix,
            }
        })
}

#[test]
fn signal_matches_the_model() {
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let started = Instant::now();
    let result = runner.run(&script(), |script| run(&script));
    let stats = STATS.with(|stats| *stats.borrow());
    support::model::finish_run(
        started,
        CASES.with(Cell::get),
        STAT_NAMES.into_iter().zip(stats),
        result,
    );
}
