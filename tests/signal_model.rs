//! A model-based test of [`Signal`]: generated scripts of connects, disconnects, blocks,
//! `disconnect_all`s and emits, run from outside and from inside slots (nested emits, panics
//! included), against a plain reference model of the documented behaviour (the re-entrancy table
//! in the module docs of `kdnet::bindings::signal` and the method docs).
//!
//! Two `Signal<u32>`s, so that handles of the other signal and emits of one signal from the
//! other's slots are covered. Every slot records each call (`slot`, value, nesting depth) in one
//! shared log, and a value it captures records when the closure is dropped; every operation's
//! result and the queries (`connection_count`, `is_active`, `is_blocked`,
//! `is_connection_blocked`, `belongs_to`) go to the same log, and the queries run after every
//! step. The model writes the log it expects; the two must be equal after every step.
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
//!   does, pinned so that a change is noticed). What a closure captured may itself connect, disconnect, block, emit or
//!   `disconnect_all` when dropped (a `ScopedConnection` it owns, an object announcing its end):
//!   that counts as done at that moment, by the code running then;
//! - a panic propagates to the caller of `emit` (a slot may catch it around a nested emit, and
//!   the outer emit goes on); the signal stays fully usable and the panicking slot connected;
//! - a stale handle gets [`ConnectionError::Inactive`], a live one of the other signal
//!   [`ConnectionError::ForeignHandle`].
//!
//! Not covered here: `connect_weak`, `connect_deferred`, `ScopedConnection`/`ConnectionBlocker`
//! (tests/signal.rs), the owner's pinned wiring (internal), and dropping a signal from its own
//! slot.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::{Rc, Weak};

use kdnet::{ConnectionError, ConnectionHandle, Signal};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Signals in a script.
const SIGNALS: usize = 2;
/// Connections a script makes at most (later connects are refused, on both sides alike), so that
/// slots that connect a slot on every call cannot grow the list exponentially.
const MAX_SLOTS: usize = 14;
/// Emits on the stack at most (the outermost one included).
const MAX_DEPTH: u32 = 3;
/// Scripts run by a plain `cargo test`.
const DEFAULT_CASES: u32 = 4000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    SingleShot,
    Reflective,
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
    /// Emits `sig` (unless `MAX_DEPTH` emits are on the stack); `catch`: inside
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
    /// a connect, disconnect, block, `disconnect_all`, query, or an emit (caught; skipped while a
    /// panic unwinds, where a second panic would abort).
    on_drop: Option<Act>,
}

#[derive(Clone, Debug)]
struct Script {
    specs: Vec<Spec>,
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
    Connected(usize),
    Capped,
    Disconnect(Result<(), ConnectionError>),
    Block(Result<bool, ConnectionError>),
    Panicking(usize),
    Caught,
    Count {
        sig: usize,
        count: usize,
    },
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

// ---- The real run -----------------------------------------------------------------------------

struct Real {
    sigs: [Signal<u32>; SIGNALS],
    handles: RefCell<Vec<ConnectionHandle>>,
    log: Rc<RefCell<Vec<Ev>>>,
    specs: Vec<Spec>,
    depth: Cell<u32>,
}

/// Captured by every slot's closure: records when the closure (and so its captures) is dropped,
/// and then runs the spec's `on_drop` action (unless the signals are being dropped).
struct DropRecorder {
    slot: usize,
    log: Rc<RefCell<Vec<Ev>>>,
    real: Weak<Real>,
    on_drop: Option<Act>,
}

impl Drop for DropRecorder {
    fn drop(&mut self) {
        self.log.borrow_mut().push(Ev::Dropped(self.slot));
        if let (Some(act), Some(real)) = (&self.on_drop, self.real.upgrade()) {
            if !(matches!(act, Act::Emit { .. }) && std::thread::panicking()) {
                real.perform(None, act);
            }
        }
    }
}

/// Counts an emit on the stack while it lives (also when the emit unwinds).
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
    fn push(&self, ev: Ev) {
        self.log.borrow_mut().push(ev);
    }

    fn handle(&self, slot: usize) -> Option<(usize, ConnectionHandle)> {
        let handles = self.handles.borrow();
        let n = handles.len();
        (n > 0).then(|| (slot % n, handles[slot % n].clone()))
    }

    fn connect(self: &Rc<Self>, spec: usize) {
        let slot = self.handles.borrow().len();
        if slot >= MAX_SLOTS {
            return self.push(Ev::Capped);
        }
        let spec = self.specs[spec % self.specs.len()].clone();
        let weak = Rc::downgrade(self);
        let recorder = DropRecorder {
            slot,
            log: self.log.clone(),
            real: weak.clone(),
            on_drop: spec.on_drop,
        };
        let program = spec.program;
        let mut fired = vec![false; program.len()];
        let signal = &self.sigs[spec.sig];
        let handle = match spec.kind {
            Kind::Plain => signal.connect(move |value| {
                let _captured = &recorder;
                run_slot(&weak, slot, None, &program, &mut fired, *value);
            }),
            Kind::Reflective => signal.connect_reflective(move |own, value| {
                let _captured = &recorder;
                run_slot(&weak, slot, Some(own), &program, &mut fired, *value);
            }),
            Kind::SingleShot => signal.connect_single_shot(move |value| {
                let _captured = &recorder;
                run_slot(&weak, slot, None, &program, &mut fired, *value);
            }),
        };
        self.handles.borrow_mut().push(handle);
        self.push(Ev::Connected(slot));
    }

    /// Runs `act`; `me` is the running slot and the handle it was given, if any.
    fn perform(self: &Rc<Self>, me: Option<(usize, Option<&ConnectionHandle>)>, act: &Act) {
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
                        let result = self.sigs[sig].disconnect(&handle);
                        self.push(Ev::Disconnect(result));
                    }
                    None => handle.disconnect(),
                }
            }
            Act::Block { sig, slot, blocked } => {
                let Some((_, handle)) = self.handle(slot) else {
                    return;
                };
                let result = match sig {
                    Some(sig) => self.sigs[sig].block_connection(&handle, blocked),
                    None => handle.block(blocked),
                };
                self.push(Ev::Block(result));
            }
            Act::DisconnectAll(sig) => self.sigs[sig].disconnect_all(),
            Act::Emit { sig, value, catch } => {
                if self.depth.get() >= MAX_DEPTH {
                    return;
                }
                let emit = || {
                    let _depth = Depth::enter(&self.depth);
                    self.sigs[sig].emit(&value);
                };
                if catch || me.is_none() {
                    if catch_unwind(AssertUnwindSafe(emit)).is_err() {
                        self.push(Ev::Caught);
                    }
                } else {
                    emit();
                }
            }
            Act::Query { slot } => {
                for sig in 0..SIGNALS {
                    let count = self.sigs[sig].connection_count();
                    self.push(Ev::Count { sig, count });
                }
                let Some((slot, handle)) = self.handle(slot) else {
                    return;
                };
                let active = handle.is_active();
                self.push(Ev::Active { slot, active });
                let result = handle.is_blocked();
                self.push(Ev::IsBlocked { slot, result });
            }
            Act::Panic => {
                if let Some((slot, _)) = me {
                    self.push(Ev::Panicking(slot));
                    resume_unwind(Box::new(SlotPanic));
                }
            }
        }
    }

    /// Every query, on every slot and both signals.
    fn query_all(&self) {
        for sig in 0..SIGNALS {
            let count = self.sigs[sig].connection_count();
            self.push(Ev::Count { sig, count });
        }
        let handles = self.handles.borrow().clone();
        for (slot, handle) in handles.iter().enumerate() {
            self.push(Ev::Active {
                slot,
                active: handle.is_active(),
            });
            self.push(Ev::IsBlocked {
                slot,
                result: handle.is_blocked(),
            });
            for sig in 0..SIGNALS {
                self.push(Ev::IsConnectionBlocked {
                    slot,
                    sig,
                    result: self.sigs[sig].is_connection_blocked(handle),
                });
                self.push(Ev::BelongsTo {
                    slot,
                    sig,
                    belongs: handle.belongs_to(&self.sigs[sig]),
                });
            }
        }
    }
}

fn run_slot(
    real: &Weak<Real>,
    slot: usize,
    own: Option<&ConnectionHandle>,
    program: &[Step],
    fired: &mut [bool],
    value: u32,
) {
    let real = real
        .upgrade()
        .expect("slots run only while the script runs");
    let depth = real.depth.get() - 1;
    real.push(Ev::Call { slot, value, depth });
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
    fired: Vec<bool>,
    connected: bool,
    blocked: bool,
    /// The closure (and its captures) is not dropped yet.
    alive: bool,
    running: bool,
    /// Connected while an emit of its signal ran, which has not ended yet.
    fresh: bool,
}

struct Model {
    slots: Vec<MSlot>,
    specs: Vec<Spec>,
    log: Vec<Ev>,
    /// Emits on the stack.
    depth: u32,
    /// Emits of each signal on the stack.
    emitting: [u32; SIGNALS],
    /// A panic is unwinding (what closures dropped meanwhile do happens during it).
    unwinding: bool,
}

/// A panic unwinding through the model.
struct Unwind;

impl Model {
    fn slot_index(&self, slot: usize) -> Option<usize> {
        let n = self.slots.len();
        (n > 0).then(|| slot % n)
    }

    /// Disconnects `k`; its closure is dropped now, or when its running call returns.
    fn disconnect(&mut self, k: usize) -> bool {
        let s = &mut self.slots[k];
        if !s.connected {
            return false;
        }
        s.connected = false;
        if !s.running {
            self.drop_closure(k, false);
        }
        true
    }

    /// Slot `k`'s closure is dropped (`unwinding`: while a panic unwinds): its captured value
    /// logs it and runs its `on_drop`.
    fn drop_closure(&mut self, k: usize, unwinding: bool) {
        self.slots[k].alive = false;
        self.log.push(Ev::Dropped(k));
        let was_unwinding = self.unwinding;
        self.unwinding |= unwinding;
        match self.slots[k].on_drop.clone() {
            Some(Act::Emit { .. }) if self.unwinding => {}
            // From outside a slot: an emit is caught, nothing else panics.
            Some(act) => {
                let _ = self.perform(None, &act);
            }
            None => {}
        }
        self.unwinding = was_unwinding;
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

    fn perform(&mut self, me: Option<usize>, act: &Act) -> Result<(), Unwind> {
        match *act {
            Act::Connect(spec) => {
                let k = self.slots.len();
                if k >= MAX_SLOTS {
                    self.log.push(Ev::Capped);
                    return Ok(());
                }
                let spec = self.specs[spec % self.specs.len()].clone();
                self.slots.push(MSlot {
                    sig: spec.sig,
                    kind: spec.kind,
                    fired: vec![false; spec.program.len()],
                    program: spec.program,
                    on_drop: spec.on_drop,
                    connected: true,
                    blocked: false,
                    alive: true,
                    running: false,
                    fresh: self.emitting[spec.sig] > 0,
                });
                self.log.push(Ev::Connected(k));
            }
            Act::DisconnectSelf => {
                if let Some(k) = me {
                    self.disconnect(k);
                }
            }
            Act::Disconnect { sig, slot } => {
                let Some(k) = self.slot_index(slot) else {
                    return Ok(());
                };
                match sig {
                    Some(sig) => {
                        let result = self.own(sig, k);
                        if result.is_ok() {
                            self.disconnect(k);
                        }
                        self.log.push(Ev::Disconnect(result));
                    }
                    None => {
                        self.disconnect(k);
                    }
                }
            }
            Act::Block { sig, slot, blocked } => {
                let Some(k) = self.slot_index(slot) else {
                    return Ok(());
                };
                let result = match sig {
                    Some(sig) => self.own(sig, k),
                    None if self.slots[k].connected => Ok(()),
                    None => Err(ConnectionError::Inactive),
                }
                .map(|()| std::mem::replace(&mut self.slots[k].blocked, blocked));
                self.log.push(Ev::Block(result));
            }
            Act::DisconnectAll(sig) => {
                // All are disconnected first; then the closures are dropped, in order.
                let mut dropped = Vec::new();
                for (k, s) in self.slots.iter_mut().enumerate() {
                    if s.sig == sig && s.connected {
                        s.connected = false;
                        if !s.running {
                            dropped.push(k);
                        }
                    }
                }
                for k in dropped {
                    self.drop_closure(k, false);
                }
            }
            Act::Emit { sig, value, catch } => {
                if self.depth >= MAX_DEPTH {
                    return Ok(());
                }
                if self.emit(sig, value).is_err() {
                    if catch || me.is_none() {
                        self.log.push(Ev::Caught);
                    } else {
                        return Err(Unwind);
                    }
                }
            }
            Act::Query { slot } => {
                for sig in 0..SIGNALS {
                    let count = self.count(sig);
                    self.log.push(Ev::Count { sig, count });
                }
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
        }
        Ok(())
    }

    fn emit(&mut self, sig: usize, value: u32) -> Result<(), Unwind> {
        self.depth += 1;
        self.emitting[sig] += 1;
        let mut result = Ok(());
        // Slots connected meanwhile are `fresh`: the loop may see them, and skips them.
        let mut k = 0;
        while k < self.slots.len() {
            let s = &self.slots[k];
            if s.sig == sig && s.connected && !s.blocked && !s.running && !s.fresh {
                result = self.call(k, value);
                if result.is_err() {
                    break;
                }
            }
            k += 1;
        }
        self.depth -= 1;
        self.emitting[sig] -= 1;
        if self.emitting[sig] == 0 {
            for s in self.slots.iter_mut().filter(|s| s.sig == sig) {
                s.fresh = false;
            }
        }
        result
    }

    fn call(&mut self, k: usize, value: u32) -> Result<(), Unwind> {
        self.log.push(Ev::Call {
            slot: k,
            value,
            depth: self.depth - 1,
        });
        self.slots[k].running = true;
        if self.slots[k].kind == Kind::SingleShot {
            // Disconnected just before it is called.
            self.disconnect(k);
        }
        let program = self.slots[k].program.clone();
        let mut result = Ok(());
        for (i, step) in program.iter().enumerate() {
            if step.once && std::mem::replace(&mut self.slots[k].fired[i], true) {
                continue;
            }
            result = self.perform(Some(k), &step.act);
            if result.is_err() {
                break;
            }
        }
        let s = &mut self.slots[k];
        s.running = false;
        if !s.connected && s.alive {
            self.drop_closure(k, result.is_err());
        }
        result
    }

    fn query_all(&mut self) {
        for sig in 0..SIGNALS {
            let count = self.count(sig);
            self.log.push(Ev::Count { sig, count });
        }
        for slot in 0..self.slots.len() {
            let active = self.slots[slot].connected;
            self.log.push(Ev::Active { slot, active });
            let result = self.is_blocked(slot);
            self.log.push(Ev::IsBlocked { slot, result });
            for sig in 0..SIGNALS {
                let result = self.own(sig, slot).map(|()| self.slots[slot].blocked);
                self.log.push(Ev::IsConnectionBlocked { slot, sig, result });
                let belongs = self.own(sig, slot).is_ok();
                self.log.push(Ev::BelongsTo { slot, sig, belongs });
            }
        }
    }

    /// Dropping the signals drops every closure left, signal by signal, in connection order.
    fn drop_signals(&mut self) {
        for sig in 0..SIGNALS {
            for (k, s) in self.slots.iter_mut().enumerate() {
                if s.sig == sig && s.alive {
                    s.alive = false;
                    s.connected = false;
                    self.log.push(Ev::Dropped(k));
                }
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

fn run(script: &Script) -> Result<(), TestCaseError> {
    let log = Rc::new(RefCell::new(Vec::new()));
    let real = Rc::new(Real {
        sigs: std::array::from_fn(|_| Signal::new()),
        handles: RefCell::new(Vec::new()),
        log: log.clone(),
        specs: script.specs.clone(),
        depth: Cell::new(0),
    });
    let mut model = Model {
        slots: Vec::new(),
        specs: script.specs.clone(),
        log: Vec::new(),
        depth: 0,
        emitting: [0; SIGNALS],
        unwinding: false,
    };
    for (i, op) in script.ops.iter().enumerate() {
        real.perform(None, op);
        real.query_all();
        // Both runs catch the outermost emit's panic themselves.
        let _ = model.perform(None, op);
        model.query_all();
        let real_log = log.borrow();
        prop_assert!(
            *real_log == model.log,
            "after step {i} ({op:?}): {}",
            diff(&real_log, &model.log)
        );
    }
    let handles = real.handles.borrow().clone();
    drop(real);
    model.drop_signals();
    let real_log = log.borrow();
    prop_assert!(
        *real_log == model.log,
        "after dropping the signals: {}",
        diff(&real_log, &model.log)
    );
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
    prop_oneof![
        if inside { 3 } else { 6 } => (0..8usize).prop_map(Act::Connect),
        if inside { 3 } else { 0 } => Just(Act::DisconnectSelf),
        2 => (via(), slot.clone()).prop_map(|(sig, slot)| Act::Disconnect { sig, slot }),
        3 => (via(), slot.clone(), any::<bool>())
            .prop_map(|(sig, slot, blocked)| Act::Block { sig, slot, blocked }),
        1 => sig().prop_map(Act::DisconnectAll),
        if inside { 3 } else { 6 } => (sig(), 0..100u32, prop::bool::weighted(0.2))
            .prop_map(|(sig, value, catch)| Act::Emit { sig, value, catch }),
        1 => slot.prop_map(|slot| Act::Query { slot }),
        if inside { 1 } else { 0 } => Just(Act::Panic),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        4 => Just(Kind::Plain),
        1 => Just(Kind::SingleShot),
        2 => Just(Kind::Reflective),
    ];
    let step = (act(true), prop::bool::weighted(0.4)).prop_map(|(act, once)| Step { act, once });
    let on_drop = prop::option::weighted(0.3, act(false))
        .prop_map(|act| act.filter(|act| !matches!(act, Act::DisconnectSelf | Act::Panic)));
    (sig(), kind, prop::collection::vec(step, 0..4), on_drop).prop_map(
        |(sig, kind, program, on_drop)| Spec {
            sig,
            kind,
            program,
            on_drop,
        },
    )
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(spec(), 1..6),
        prop::collection::vec(act(false), 1..32),
    )
        .prop_map(|(specs, ops)| Script { specs, ops })
}

fn config() -> Config {
    Config {
        cases: support::model::cases(DEFAULT_CASES),
        // A failure becomes a named test; no regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn signal_matches_the_model(script in script()) {
        run(&script)?;
    }
}
