//! A model-based test of deferred connections through standalone [`ConnectionEvaluator`]s, of
//! [`ScopedConnection`] and [`ConnectionBlocker`] held by the caller, and of [`Property`]'s
//! signals connected deferred; and a threaded test of deferred calls emitted on other threads
//! and evaluated on one (a standalone evaluator, or an [`EventLoop`]'s, which must wake up for
//! them). `tests/signal_model.rs` covers re-entrancy inside emits and the loop's evaluator from
//! one thread; `tests/signal_model_property.rs` covers a property set from its own direct slots.
//!
//! The single-thread model (`evaluator_scripts_match_the_model`): two `Signal<Tracked>`s, one
//! `Property<Tracked>` (its `value_changed`, `value_about_to_change` and `destroyed` signals),
//! two evaluator places holding a standalone evaluator each (the script may drop or replace
//! one, also from a deferred slot while it is being evaluated). A script connects plain and
//! deferred slots, emits, sets the property, evaluates, disconnects (through the handle or the
//! signal: a foreign or stale handle is refused), blocks, `disconnect_all`s, drops and
//! remakes signals and the property, and keeps `ScopedConnection`s and `ConnectionBlocker`s
//! (replaced, released, dropped in any order). A deferred slot may, when it runs, emit, set the
//! property (a property set from its own change slot, deferred), disconnect or block a
//! connection, evaluate an evaluator (its own: refused), drop or replace an evaluator, drop a
//! signal or the property, connect, make a blocker, or drop or replace what the script's
//! blockers and scoped connections hold. What the model says (from the docs of `connect_deferred`,
//! `ConnectionEvaluator`, `ScopedConnection`, `ConnectionBlocker`, `Property`):
//! - an emit queues one call per unblocked deferred connection (blocking is checked at emit
//!   time: a call queued before a block still runs), in connection order, and calls
//!   `on_invocation_added` once per call queued;
//! - an evaluation runs the calls queued before it, first in first out, and returns how many
//!   ran; calls queued meanwhile wait for the next one; a nested evaluation of the evaluator
//!   being evaluated returns 0 and, if something was waiting, the owner is notified again
//!   when the running evaluation ends;
//! - a disconnect (handle, signal, `disconnect_all`, a `ScopedConnection` dropped or replaced,
//!   the signal or property dropped) removes the connection's queued calls at once, and one
//!   already taken by the running evaluation does not run;
//! - an evaluator dropped (by everyone: an evaluation under way keeps it) drops its queued calls
//!   unrun; a deferred connection to it stays active until its next unblocked emit, which
//!   disconnects it without queueing;
//! - a blocker blocks and restores the state it found when dropped (whatever the order); on an
//!   inactive handle it is refused; `ScopedConnection::set` disconnects the old connection unless
//!   it is the same one;
//! - `Property::set` of an equal value emits nothing; otherwise `value_about_to_change(old,
//!   new)` then `value_changed(new)`; dropping it emits `destroyed`, whose deferred calls are
//!   cancelled by the signals' drop right after (so they never run, as in KDBindings);
//! - memory: the slot closures alive are exactly those of active connections, and the argument
//!   copies alive are exactly those of queued calls (plus the property's value), after every
//!   step; nothing is left once the script's objects are dropped.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kdnet::{
    ConnectionBlocker, ConnectionError, ConnectionEvaluator, ConnectionHandle, EventLoop, Property,
    ScopedConnection, Signal,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// Scripts run by a plain `cargo test`.
const DEFAULT_CASES: u32 = 1000;
/// Threaded scripts run by a plain `cargo test`.
const DEFAULT_THREAD_CASES: u32 = 80;
/// Connections a script makes at most.
const MAX_CONNS: usize = 16;
/// Emits and sets a script makes at most (deferred slots emitting their own signal).
const MAX_EMITS: u32 = 200;
/// Evaluations on the stack at most.
const MAX_DEPTH: u32 = 3;
/// Evaluator places.
const EVALUATORS: usize = 2;
/// Sources: signal 0, signal 1, `value_changed`, `value_about_to_change`, `destroyed`.
const SOURCES: usize = 5;
const CHANGED: usize = 2;
const ABOUT: usize = 3;
const DESTROYED: usize = 4;

static CASES: AtomicU64 = AtomicU64::new(0);
static THREAD_CASES: AtomicU64 = AtomicU64::new(0);
const STAT_NAMES: [&str; 4] = [
    "deferred calls run",
    "calls cancelled in a running batch",
    "nested evaluations refused",
    "connections ended by a gone evaluator",
];
static STATS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
const CALLS: usize = 0;
const CANCELLED_IN_BATCH: usize = 1;
const REFUSED: usize = 2;
const GONE_DISCONNECTS: usize = 3;

fn stat(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
}

/// Counts the live values that hold it (clones included).
struct Live(Arc<AtomicIsize>);

impl Live {
    fn new(counter: &Arc<AtomicIsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Live(counter.clone())
    }
}

impl Clone for Live {
    fn clone(&self) -> Self {
        Live::new(&self.0)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A signal argument whose copies are counted (queued calls hold one each).
#[derive(Clone)]
struct Tracked {
    v: u32,
    _live: Live,
}

impl PartialEq for Tracked {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    /// `connect_deferred` on the evaluator in this place.
    Deferred(usize),
}

#[derive(Clone, Copy, Debug)]
enum Act {
    /// Emits signal 0 or 1 (`src` < 2) or sets the property (`src` 2).
    Emit {
        src: usize,
        v: u32,
    },
    Disconnect {
        k: usize,
        via: Option<usize>,
    },
    Block {
        k: usize,
        blocked: bool,
        via: Option<usize>,
    },
    DisconnectAll(usize),
    Evaluate(usize),
    /// Drops the evaluator in this place (`renew`: puts a new one there).
    DropEvaluator {
        e: usize,
        renew: bool,
    },
    /// Drops signal 0 or 1, or (2) the property, and makes a new one.
    DropSource(usize),
    // From the script only:
    Connect {
        src: usize,
        kind: Kind,
        program: usize,
    },
    Scope(usize),
    ScopeDrop(usize),
    ScopeSet {
        i: usize,
        k: usize,
    },
    ScopeRelease(usize),
    Blocker(usize),
    BlockerDrop(usize),
}

#[derive(Clone, Copy, Debug)]
struct Step {
    act: Act,
    once: bool,
}

#[derive(Clone, Debug)]
struct Script {
    programs: Vec<Vec<Step>>,
    ops: Vec<Act>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Call { k: usize, v: u32 },
    Evaluated { e: usize, ran: usize },
    Result(&'static str, usize, Result<bool, ConnectionError>),
    Set(u32, bool),
    Count(usize, usize),
    Pending(usize, bool, u32),
    Conn(usize, bool, Result<bool, ConnectionError>, bool),
    Value(u32),
    LiveClosures(isize),
    LiveArgs(isize),
}

thread_local! {
    static REAL: RefCell<Option<Rc<Real>>> = const { RefCell::new(None) };
    static LOG: RefCell<Vec<Ev>> = const { RefCell::new(Vec::new()) };
}

fn log(ev: Ev) {
    LOG.with(|l| l.borrow_mut().push(ev));
}

fn real() -> Rc<Real> {
    REAL.with(|r| r.borrow().clone().expect("a script runs"))
}

/// The code under test, driven by the script.
struct Real {
    sigs: [RefCell<Rc<Signal<Tracked>>>; 2],
    prop: RefCell<Rc<Property<Tracked>>>,
    evs: [RefCell<Option<Arc<ConnectionEvaluator>>>; EVALUATORS],
    notified: [RefCell<Arc<AtomicU32>>; EVALUATORS],
    conns: RefCell<Vec<(usize, ConnectionHandle)>>,
    scoped: RefCell<Vec<Option<ScopedConnection>>>,
    blockers: RefCell<Vec<Option<ConnectionBlocker>>>,
    budget: Cell<u32>,
    depth: Cell<u32>,
    closures: Arc<AtomicIsize>,
    args: Arc<AtomicIsize>,
    programs: Vec<Vec<Step>>,
}

fn new_evaluator() -> (Arc<ConnectionEvaluator>, Arc<AtomicU32>) {
    let ev = ConnectionEvaluator::new();
    let n = Arc::new(AtomicU32::new(0));
    let counter = n.clone();
    ev.set_on_invocation_added(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    (ev, n)
}

fn connect_on<A: Clone + Send + 'static>(
    sig: &Signal<A>,
    k: usize,
    kind: Kind,
    evaluator: Option<Arc<ConnectionEvaluator>>,
    token: Live,
    program: Vec<Step>,
    value: fn(&A) -> u32,
) -> ConnectionHandle {
    match kind {
        Kind::Plain => sig.connect(move |a| {
            let _token = &token;
            log(Ev::Call { k, v: value(a) });
        }),
        Kind::Deferred(_) => {
            let mut first = true;
            sig.connect_deferred(&evaluator.expect("checked by the caller"), move |a| {
                let _token = &token;
                log(Ev::Call { k, v: value(a) });
                let was_first = std::mem::replace(&mut first, false);
                let real = real();
                for step in &program {
                    if !step.once || was_first {
                        real.perform(&step.act);
                    }
                }
            })
        }
    }
}

impl Real {
    fn new(script: &Script) -> Rc<Self> {
        let args = Arc::new(AtomicIsize::new(0));
        let (e0, n0) = new_evaluator();
        let (e1, n1) = new_evaluator();
        Rc::new(Real {
            sigs: [
                RefCell::new(Rc::new(Signal::new())),
                RefCell::new(Rc::new(Signal::new())),
            ],
            prop: RefCell::new(Rc::new(Property::new(Tracked {
                v: 0,
                _live: Live::new(&args),
            }))),
            evs: [RefCell::new(Some(e0)), RefCell::new(Some(e1))],
            notified: [RefCell::new(n0), RefCell::new(n1)],
            conns: RefCell::new(Vec::new()),
            scoped: RefCell::new(Vec::new()),
            blockers: RefCell::new(Vec::new()),
            budget: Cell::new(MAX_EMITS),
            depth: Cell::new(0),
            closures: Arc::new(AtomicIsize::new(0)),
            args,
            programs: script.programs.clone(),
        })
    }

    /// Connection `k` (modulo the number made) and its handle.
    fn handle(&self, k: usize) -> Option<(usize, ConnectionHandle)> {
        let conns = self.conns.borrow();
        let k = k.checked_rem(conns.len())?;
        Some((k, conns[k].1.clone()))
    }

    fn tracked_sig(&self, src: usize) -> Rc<dyn TrackedSignal> {
        match src {
            0 | 1 => Rc::new(self.sigs[src].borrow().clone()),
            _ => Rc::new(self.prop.borrow().clone()),
        }
    }

    fn perform(&self, act: &Act) {
        match *act {
            Act::Emit { src, v } => {
                if self.budget.get() == 0 {
                    return;
                }
                self.budget.set(self.budget.get() - 1);
                let t = Tracked {
                    v,
                    _live: Live::new(&self.args),
                };
                if src < 2 {
                    let sig = self.sigs[src].borrow().clone();
                    sig.emit(&t);
                } else {
                    let prop = self.prop.borrow().clone();
                    let changed = prop.set(t);
                    log(Ev::Set(v, changed));
                }
            }
            Act::Disconnect { k, via } => {
                let Some((k, h)) = self.handle(k) else { return };
                let r = match via {
                    None => {
                        h.disconnect();
                        Ok(true)
                    }
                    Some(src) => self.tracked_sig(src).disconnect(&h).map(|()| true),
                };
                log(Ev::Result("disconnect", k, r));
            }
            Act::Block { k, blocked, via } => {
                let Some((k, h)) = self.handle(k) else { return };
                let r = match via {
                    None => h.block(blocked),
                    Some(src) => self.tracked_sig(src).block(&h, blocked),
                };
                log(Ev::Result("block", k, r));
            }
            Act::DisconnectAll(src) => match src {
                0 | 1 => self.sigs[src].borrow().clone().disconnect_all(),
                _ => {
                    let prop = self.prop.borrow().clone();
                    match src {
                        CHANGED => prop.value_changed.disconnect_all(),
                        ABOUT => prop.value_about_to_change.disconnect_all(),
                        _ => prop.destroyed.disconnect_all(),
                    }
                }
            },
            Act::Evaluate(e) => {
                let Some(ev) = self.evs[e].borrow().clone() else {
                    return;
                };
                if self.depth.get() >= MAX_DEPTH {
                    return;
                }
                self.depth.set(self.depth.get() + 1);
                let ran = ev.evaluate_deferred_connections();
                self.depth.set(self.depth.get() - 1);
                log(Ev::Evaluated { e, ran });
                drop(ev);
            }
            Act::DropEvaluator { e, renew } => {
                let new = renew.then(new_evaluator);
                let old = match new {
                    Some((ev, n)) => {
                        *self.notified[e].borrow_mut() = n;
                        self.evs[e].borrow_mut().replace(ev)
                    }
                    None => self.evs[e].borrow_mut().take(),
                };
                drop(old);
            }
            Act::DropSource(src) => {
                if src < 2 {
                    let old = std::mem::replace(
                        &mut *self.sigs[src].borrow_mut(),
                        Rc::new(Signal::new()),
                    );
                    drop(old);
                } else {
                    let new = Rc::new(Property::new(Tracked {
                        v: 0,
                        _live: Live::new(&self.args),
                    }));
                    let old = std::mem::replace(&mut *self.prop.borrow_mut(), new);
                    drop(old);
                }
            }
            Act::Connect { src, kind, program } => {
                if self.conns.borrow().len() >= MAX_CONNS {
                    return;
                }
                let evaluator = match kind {
                    Kind::Plain => None,
                    Kind::Deferred(e) => match self.evs[e].borrow().clone() {
                        Some(ev) => Some(ev),
                        None => return,
                    },
                };
                let k = self.conns.borrow().len();
                let token = Live::new(&self.closures);
                let program = self.programs[program % self.programs.len()].clone();
                let h = match src {
                    0 | 1 => {
                        let sig = self.sigs[src].borrow().clone();
                        connect_on(&sig, k, kind, evaluator, token, program, |t: &Tracked| t.v)
                    }
                    _ => {
                        let prop = self.prop.borrow().clone();
                        match src {
                            CHANGED => connect_on(
                                &prop.value_changed,
                                k,
                                kind,
                                evaluator,
                                token,
                                program,
                                |t| t.v,
                            ),
                            ABOUT => connect_on(
                                &prop.value_about_to_change,
                                k,
                                kind,
                                evaluator,
                                token,
                                program,
                                |(o, n)| o.v * 100 + n.v,
                            ),
                            _ => connect_on(
                                &prop.destroyed,
                                k,
                                kind,
                                evaluator,
                                token,
                                program,
                                |_| 1000,
                            ),
                        }
                    }
                };
                self.conns.borrow_mut().push((src, h));
            }
            Act::Scope(k) => {
                let Some((_, h)) = self.handle(k) else { return };
                self.scoped
                    .borrow_mut()
                    .push(Some(ScopedConnection::new(h)));
            }
            Act::ScopeDrop(i) => {
                let taken = self.nth(&self.scoped, i);
                drop(taken);
            }
            Act::ScopeSet { i, k } => {
                let Some((k, h)) = self.handle(k) else { return };
                let Some(mut scoped) = self.nth(&self.scoped, i) else {
                    return;
                };
                scoped.set(h);
                log(Ev::Result("scope-set", k, Ok(scoped.is_active())));
                let len = self.scoped.borrow().len();
                self.scoped.borrow_mut()[i % len] = Some(scoped);
            }
            Act::ScopeRelease(i) => {
                if let Some(scoped) = self.nth(&self.scoped, i) {
                    scoped.release().release();
                }
            }
            Act::Blocker(k) => {
                let Some((k, h)) = self.handle(k) else { return };
                match ConnectionBlocker::new(&h) {
                    Ok(b) => {
                        log(Ev::Result("blocker", k, Ok(true)));
                        self.blockers.borrow_mut().push(Some(b));
                    }
                    Err(e) => {
                        log(Ev::Result("blocker", k, Err(e)));
                        self.blockers.borrow_mut().push(None);
                    }
                }
            }
            Act::BlockerDrop(i) => {
                let taken = self.nth(&self.blockers, i);
                drop(taken);
            }
        }
    }

    /// Takes entry `i` (modulo the length) of a list, leaving `None`.
    fn nth<T>(&self, list: &RefCell<Vec<Option<T>>>, i: usize) -> Option<T> {
        let mut list = list.borrow_mut();
        let len = list.len();
        if len == 0 {
            return None;
        }
        list[i % len].take()
    }

    fn query(&self) {
        let prop = self.prop.borrow().clone();
        let sigs = [self.sigs[0].borrow().clone(), self.sigs[1].borrow().clone()];
        for (k, (src, h)) in self.conns.borrow().iter().enumerate() {
            let belongs = match *src {
                0 | 1 => h.belongs_to(&*sigs[*src]),
                CHANGED => h.belongs_to(&prop.value_changed),
                ABOUT => h.belongs_to(&prop.value_about_to_change),
                _ => h.belongs_to(&prop.destroyed),
            };
            log(Ev::Conn(k, h.is_active(), h.is_blocked(), belongs));
        }
        let counts = [
            sigs[0].connection_count(),
            sigs[1].connection_count(),
            prop.value_changed.connection_count(),
            prop.value_about_to_change.connection_count(),
            prop.destroyed.connection_count(),
        ];
        for (src, n) in counts.into_iter().enumerate() {
            log(Ev::Count(src, n));
        }
        for e in 0..EVALUATORS {
            if let Some(ev) = self.evs[e].borrow().as_ref() {
                let n = self.notified[e].borrow().load(Ordering::SeqCst);
                log(Ev::Pending(e, ev.has_pending(), n));
            }
        }
        log(Ev::Value(prop.get().v));
        drop((prop, sigs));
        log(Ev::LiveClosures(self.closures.load(Ordering::SeqCst)));
        log(Ev::LiveArgs(self.args.load(Ordering::SeqCst)));
    }
}

/// The operations a script does on a `Signal<Tracked>` (signal 0, 1, or the property's
/// `value_changed`) through a handle that may be of another signal.
trait TrackedSignal {
    fn disconnect(&self, h: &ConnectionHandle) -> Result<(), ConnectionError>;
    fn block(&self, h: &ConnectionHandle, blocked: bool) -> Result<bool, ConnectionError>;
}

impl TrackedSignal for Rc<Signal<Tracked>> {
    fn disconnect(&self, h: &ConnectionHandle) -> Result<(), ConnectionError> {
        Signal::disconnect(self, h)
    }
    fn block(&self, h: &ConnectionHandle, blocked: bool) -> Result<bool, ConnectionError> {
        self.block_connection(h, blocked)
    }
}

impl TrackedSignal for Rc<Property<Tracked>> {
    fn disconnect(&self, h: &ConnectionHandle) -> Result<(), ConnectionError> {
        self.value_changed.disconnect(h)
    }
    fn block(&self, h: &ConnectionHandle, blocked: bool) -> Result<bool, ConnectionError> {
        self.value_changed.block_connection(h, blocked)
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
struct MConn {
    src: usize,
    kind: MKind,
    active: bool,
    blocked: bool,
    program: Vec<Step>,
    called: bool,
}

#[derive(Clone, Copy, Debug)]
enum MKind {
    Plain,
    /// An evaluator instance.
    Deferred(usize),
}

#[derive(Default, Debug)]
struct MEval {
    queue: VecDeque<(usize, u32)>,
    held: bool,
    evaluating: u32,
    refused: bool,
    notified: u32,
}

impl MEval {
    fn alive(&self) -> bool {
        self.held || self.evaluating > 0
    }
}

struct Model {
    conns: Vec<MConn>,
    insts: Vec<MEval>,
    places: [Option<usize>; EVALUATORS],
    value: u32,
    scoped: Vec<Option<usize>>,
    blockers: Vec<Option<(usize, bool)>>,
    budget: u32,
    depth: u32,
    programs: Vec<Vec<Step>>,
    log: Vec<Ev>,
}

impl Model {
    fn new(script: &Script) -> Self {
        let mut insts = Vec::new();
        for _ in 0..EVALUATORS {
            insts.push(MEval {
                held: true,
                ..MEval::default()
            });
        }
        Model {
            conns: Vec::new(),
            insts,
            places: [Some(0), Some(1)],
            value: 0,
            scoped: Vec::new(),
            blockers: Vec::new(),
            budget: MAX_EMITS,
            depth: 0,
            programs: script.programs.clone(),
            log: Vec::new(),
        }
    }

    fn k(&self, k: usize) -> Option<usize> {
        (!self.conns.is_empty()).then(|| k % self.conns.len())
    }

    /// Disconnects connection `k` if active: its queued calls go.
    fn disconnect(&mut self, k: usize) -> bool {
        let c = &mut self.conns[k];
        if !c.active {
            return false;
        }
        c.active = false;
        if let MKind::Deferred(i) = c.kind {
            self.insts[i].queue.retain(|&(q, _)| q != k);
        }
        true
    }

    fn disconnect_src(&mut self, src: usize) {
        for k in 0..self.conns.len() {
            if self.conns[k].src == src {
                self.disconnect(k);
            }
        }
    }

    fn emit(&mut self, src: usize, v: u32) {
        for k in 0..self.conns.len() {
            let c = &self.conns[k];
            if c.src != src || !c.active || c.blocked {
                continue;
            }
            match c.kind {
                MKind::Plain => self.log.push(Ev::Call { k, v }),
                MKind::Deferred(i) => {
                    if self.insts[i].alive() {
                        self.insts[i].queue.push_back((k, v));
                        self.insts[i].notified += 1;
                    } else {
                        stat(GONE_DISCONNECTS);
                        self.conns[k].active = false;
                    }
                }
            }
        }
    }

    fn release_inst(&mut self, i: usize) {
        let inst = &mut self.insts[i];
        if !inst.alive() {
            inst.queue.clear();
        }
    }

    fn evaluate(&mut self, i: usize) -> usize {
        if self.insts[i].queue.is_empty() {
            return 0;
        }
        if self.insts[i].evaluating > 0 {
            stat(REFUSED);
            self.insts[i].refused = true;
            return 0;
        }
        self.insts[i].evaluating += 1;
        let batch = std::mem::take(&mut self.insts[i].queue);
        let mut ran = 0;
        for (k, v) in batch {
            if !self.conns[k].active {
                stat(CANCELLED_IN_BATCH);
                continue;
            }
            ran += 1;
            stat(CALLS);
            self.log.push(Ev::Call { k, v });
            let first = !std::mem::replace(&mut self.conns[k].called, true);
            for step in self.conns[k].program.clone() {
                if !step.once || first {
                    self.perform(&step.act);
                }
            }
        }
        let inst = &mut self.insts[i];
        inst.evaluating -= 1;
        if std::mem::take(&mut inst.refused) {
            inst.notified += 1;
        }
        ran
    }

    fn set(&mut self, v: u32) -> bool {
        if v == self.value {
            return false;
        }
        let old = self.value;
        self.emit(ABOUT, old * 100 + v);
        self.value = v;
        self.emit(CHANGED, v);
        true
    }

    fn perform(&mut self, act: &Act) {
        match *act {
            Act::Emit { src, v } => {
                if self.budget == 0 {
                    return;
                }
                self.budget -= 1;
                if src < 2 {
                    self.emit(src, v);
                } else {
                    let changed = self.set(v);
                    self.log.push(Ev::Set(v, changed));
                }
            }
            Act::Disconnect { k, via } => {
                let Some(k) = self.k(k) else { return };
                let c = &self.conns[k];
                let r = match via {
                    _ if !c.active => Err(ConnectionError::Inactive),
                    Some(src) if src != c.src => Err(ConnectionError::ForeignHandle),
                    _ => Ok(true),
                };
                if via.is_none() {
                    self.disconnect(k);
                    self.log.push(Ev::Result("disconnect", k, Ok(true)));
                } else {
                    if r.is_ok() {
                        self.disconnect(k);
                    }
                    self.log.push(Ev::Result("disconnect", k, r));
                }
            }
            Act::Block { k, blocked, via } => {
                let Some(k) = self.k(k) else { return };
                let c = &mut self.conns[k];
                let r = match via {
                    _ if !c.active => Err(ConnectionError::Inactive),
                    Some(src) if src != c.src => Err(ConnectionError::ForeignHandle),
                    _ => Ok(std::mem::replace(&mut c.blocked, blocked)),
                };
                self.log.push(Ev::Result("block", k, r));
            }
            Act::DisconnectAll(src) => self.disconnect_src(src),
            Act::Evaluate(e) => {
                let Some(i) = self.places[e] else { return };
                if self.depth >= MAX_DEPTH {
                    return;
                }
                self.depth += 1;
                let ran = self.evaluate(i);
                self.depth -= 1;
                self.log.push(Ev::Evaluated { e, ran });
                self.release_inst(i);
            }
            Act::DropEvaluator { e, renew } => {
                let new = renew.then(|| {
                    self.insts.push(MEval {
                        held: true,
                        ..MEval::default()
                    });
                    self.insts.len() - 1
                });
                if let Some(old) = std::mem::replace(&mut self.places[e], new) {
                    self.insts[old].held = false;
                    self.release_inst(old);
                }
            }
            Act::DropSource(src) => {
                if src < 2 {
                    self.disconnect_src(src);
                } else {
                    self.emit(DESTROYED, 1000);
                    for s in [ABOUT, CHANGED, DESTROYED] {
                        self.disconnect_src(s);
                    }
                    self.value = 0;
                }
            }
            Act::Connect { src, kind, program } => {
                if self.conns.len() >= MAX_CONNS {
                    return;
                }
                let kind = match kind {
                    Kind::Plain => MKind::Plain,
                    Kind::Deferred(e) => match self.places[e] {
                        Some(i) => MKind::Deferred(i),
                        None => return,
                    },
                };
                let program = self.programs[program % self.programs.len()].clone();
                self.conns.push(MConn {
                    src,
                    kind,
                    active: true,
                    blocked: false,
                    program,
                    called: false,
                });
            }
            Act::Scope(k) => {
                let Some(k) = self.k(k) else { return };
                self.scoped.push(Some(k));
            }
            Act::ScopeDrop(i) => {
                if let Some(k) = self.nth_scoped(i) {
                    self.disconnect(k);
                }
            }
            Act::ScopeSet { i, k } => {
                let Some(k) = self.k(k) else { return };
                if self.scoped.is_empty() {
                    return;
                }
                let len = self.scoped.len();
                if let Some(old) = self.scoped[i % len] {
                    if old != k {
                        self.disconnect(old);
                    }
                } else {
                    // A released or dropped one: nothing in it.
                    if self.scoped[i % len].is_none() {
                        return;
                    }
                }
                self.scoped[i % len] = Some(k);
                let active = self.conns[k].active;
                self.log.push(Ev::Result("scope-set", k, Ok(active)));
            }
            Act::ScopeRelease(i) => {
                self.nth_scoped(i);
            }
            Act::Blocker(k) => {
                let Some(k) = self.k(k) else { return };
                let c = &mut self.conns[k];
                if c.active {
                    let was = std::mem::replace(&mut c.blocked, true);
                    self.blockers.push(Some((k, was)));
                    self.log.push(Ev::Result("blocker", k, Ok(true)));
                } else {
                    self.blockers.push(None);
                    self.log
                        .push(Ev::Result("blocker", k, Err(ConnectionError::Inactive)));
                }
            }
            Act::BlockerDrop(i) => {
                if self.blockers.is_empty() {
                    return;
                }
                let len = self.blockers.len();
                if let Some((k, was)) = self.blockers[i % len].take() {
                    if self.conns[k].active {
                        self.conns[k].blocked = was;
                    }
                }
            }
        }
    }

    fn nth_scoped(&mut self, i: usize) -> Option<usize> {
        if self.scoped.is_empty() {
            return None;
        }
        let len = self.scoped.len();
        self.scoped[i % len].take()
    }

    fn query(&mut self) {
        for k in 0..self.conns.len() {
            let c = &self.conns[k];
            let blocked = if c.active {
                Ok(c.blocked)
            } else {
                Err(ConnectionError::Inactive)
            };
            self.log.push(Ev::Conn(k, c.active, blocked, c.active));
        }
        for src in 0..SOURCES {
            let n = self
                .conns
                .iter()
                .filter(|c| c.src == src && c.active)
                .count();
            self.log.push(Ev::Count(src, n));
        }
        for e in 0..EVALUATORS {
            if let Some(i) = self.places[e] {
                let inst = &self.insts[i];
                self.log
                    .push(Ev::Pending(e, !inst.queue.is_empty(), inst.notified));
            }
        }
        self.log.push(Ev::Value(self.value));
        let live = self.conns.iter().filter(|c| c.active).count();
        self.log.push(Ev::LiveClosures(live as isize));
        let args: usize = self
            .insts
            .iter()
            .flat_map(|inst| inst.queue.iter())
            .map(|&(k, _)| match self.conns[k].src {
                ABOUT => 2,
                DESTROYED => 0,
                _ => 1,
            })
            .sum();
        self.log.push(Ev::LiveArgs(args as isize + 1));
    }
}

fn diff(real: &[Ev], model: &[Ev]) -> String {
    let at = real
        .iter()
        .zip(model)
        .position(|(a, b)| a != b)
        .unwrap_or(real.len().min(model.len()));
    let from = at.saturating_sub(12);
    format!(
        "logs differ at {at}\n real:  {:?}\n model: {:?}",
        &real[from..real.len().min(at + 8)],
        &model[from..model.len().min(at + 8)]
    )
}

fn run(script: &Script) -> Result<(), TestCaseError> {
    CASES.fetch_add(1, Ordering::Relaxed);
    LOG.with(|l| l.borrow_mut().clear());
    let real_state = Real::new(script);
    REAL.with(|r| *r.borrow_mut() = Some(real_state.clone()));
    let mut model = Model::new(script);
    let mut checked = 0;
    for (n, op) in script.ops.iter().enumerate() {
        real_state.perform(op);
        real_state.query();
        model.perform(op);
        model.query();
        let real_log = LOG.with(|l| l.borrow().clone());
        if real_log != model.log {
            REAL.with(|r| r.borrow_mut().take());
            return Err(TestCaseError::fail(format!(
                "after step {n} ({op:?}): {}",
                diff(&real_log[checked..], &model.log[checked..])
            )));
        }
        checked = real_log.len().saturating_sub(64);
    }
    // Teardown: everything goes; nothing may be left.
    REAL.with(|r| r.borrow_mut().take());
    let closures = real_state.closures.clone();
    let args = real_state.args.clone();
    drop(real_state);
    prop_assert_eq!(closures.load(Ordering::SeqCst), 0, "slot closures left");
    prop_assert_eq!(args.load(Ordering::SeqCst), 0, "argument copies left");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn via() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 1 => (0..3usize).prop_map(Some)]
}

fn shared_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        10 => (0..3usize, 0..4u32).prop_map(|(src, v)| Act::Emit { src, v }),
        2 => (any::<usize>(), via()).prop_map(|(k, via)| Act::Disconnect { k, via }),
        2 => (any::<usize>(), any::<bool>(), via()).prop_map(|(k, blocked, via)| Act::Block { k, blocked, via }),
        1 => (0..SOURCES).prop_map(Act::DisconnectAll),
        6 => (0..EVALUATORS).prop_map(Act::Evaluate),
        1 => (0..EVALUATORS, any::<bool>()).prop_map(|(e, renew)| Act::DropEvaluator { e, renew }),
        1 => (0..3usize).prop_map(Act::DropSource),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![1 => Just(Kind::Plain), 3 => (0..EVALUATORS).prop_map(Kind::Deferred)]
}

fn script_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        14 => shared_act(),
        6 => (0..SOURCES, kind(), any::<usize>()).prop_map(|(src, kind, program)| Act::Connect { src, kind, program }),
        1 => any::<usize>().prop_map(Act::Scope),
        1 => any::<usize>().prop_map(Act::ScopeDrop),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, k)| Act::ScopeSet { i, k }),
        1 => any::<usize>().prop_map(Act::ScopeRelease),
        1 => any::<usize>().prop_map(Act::Blocker),
        1 => any::<usize>().prop_map(Act::BlockerDrop),
    ]
}

/// What a deferred slot does when it runs: the shared acts, and (less often) connect, or drop
/// or replace what the script's scoped connections and blockers hold, or make a blocker.
fn program_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        12 => shared_act(),
        1 => (0..SOURCES, kind(), any::<usize>()).prop_map(|(src, kind, program)| Act::Connect { src, kind, program }),
        1 => any::<usize>().prop_map(Act::ScopeDrop),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, k)| Act::ScopeSet { i, k }),
        1 => any::<usize>().prop_map(Act::Blocker),
        1 => any::<usize>().prop_map(Act::BlockerDrop),
    ]
}

fn program() -> impl Strategy<Value = Vec<Step>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => prop::collection::vec(
            (program_act(), any::<bool>()).prop_map(|(act, once)| Step { act, once }),
            1..3
        ),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(program(), 1..5),
        prop::collection::vec(script_act(), 1..80),
    )
        .prop_map(|(programs, ops)| Script { programs, ops })
}

#[test]
fn evaluator_scripts_match_the_model() {
    let started = Instant::now();
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let result = runner.run(&script(), |script| run(&script));
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}

// ---------------------------------------------------------------------------------------------
// Deferred calls emitted on other threads.
//
// Worker threads each own two signals and connect deferred slots to one evaluator: a
// standalone one that the main thread (and maybe a second thread, concurrently) evaluates
// whenever `on_invocation_added` says something was queued, or an `EventLoop`'s, which must
// wake up by itself. Each worker emits, blocks and disconnects, records what each emit queued,
// and then either waits until the main thread has seen its calls or drops its signals at once
// (cancelling what is queued). The checks (from the docs of `connect_deferred` and
// `ConnectionEvaluator`):
// - each connection's calls run in the order its emits queued them, each at most once, and
//   never one of a value emitted while it was blocked or after it was disconnected: what ran is
//   a prefix of what was queued (up to the disconnect);
// - a connection neither disconnected nor dropped early runs every call queued for it, and the
//   evaluating side learns of each one (it waits on the notifications or the loop's wake-up
//   only, with a generous time limit: a lost wake-up fails);
// - across one worker's connections, the calls run in the order they were queued;
// - afterwards nothing is pending, and no slot closure and no argument copy is left.

#[derive(Clone, Copy, Debug)]
enum TAct {
    Connect(usize),
    Emit { s: usize, v: u32 },
    Disconnect(usize),
    Block(usize, bool),
    Yield,
}

#[derive(Clone, Debug)]
struct Worker {
    acts: Vec<TAct>,
    drop_early: bool,
}

#[derive(Clone, Debug)]
struct ThreadScript {
    workers: Vec<Worker>,
    on_loop: bool,
    second_evaluator: bool,
}

/// What one worker queued: per connection, the values queued and (if disconnected) how many
/// were queued before; and the order of all its queued calls.
#[derive(Debug, Default)]
struct Queued {
    per_conn: Vec<(Vec<u32>, Option<usize>)>,
    order: Vec<(usize, u32)>,
    drop_early: bool,
}

type Observed = Arc<Mutex<Vec<(usize, usize, u32)>>>;

/// What a worker's script queues (a deferred connection is active until disconnected: the
/// evaluator outlives the workers).
fn queued_by(worker: &Worker) -> Queued {
    // (signal, active, blocked)
    let mut conns: Vec<(usize, bool, bool)> = Vec::new();
    let mut queued = Queued {
        drop_early: worker.drop_early,
        ..Queued::default()
    };
    for act in &worker.acts {
        match *act {
            TAct::Connect(s) => {
                conns.push((s, true, false));
                queued.per_conn.push((Vec::new(), None));
            }
            TAct::Emit { s, v } => {
                for (c, &(cs, active, blocked)) in conns.iter().enumerate() {
                    if cs == s && active && !blocked {
                        queued.per_conn[c].0.push(v);
                        queued.order.push((c, v));
                    }
                }
            }
            TAct::Disconnect(c) => {
                if !conns.is_empty() {
                    let c = c % conns.len();
                    conns[c].1 = false;
                    let (values, cut) = &mut queued.per_conn[c];
                    cut.get_or_insert(values.len());
                }
            }
            TAct::Block(c, b) => {
                if !conns.is_empty() {
                    let c = c % conns.len();
                    if conns[c].1 {
                        conns[c].2 = b;
                    }
                }
            }
            TAct::Yield => {}
        }
    }
    queued
}

fn run_worker(
    t: usize,
    worker: Worker,
    evaluator: Arc<ConnectionEvaluator>,
    observed: Observed,
    (closures, args): (Arc<AtomicIsize>, Arc<AtomicIsize>),
    permit: mpsc::Receiver<()>,
) {
    let sigs: [Signal<Tracked>; 2] = [Signal::new(), Signal::new()];
    let mut conns: Vec<ConnectionHandle> = Vec::new();
    for act in worker.acts {
        match act {
            TAct::Connect(s) => {
                let c = conns.len();
                let observed = observed.clone();
                let token = Live::new(&closures);
                let h = sigs[s].connect_deferred(&evaluator, move |a: &Tracked| {
                    let _token = &token;
                    observed.lock().unwrap().push((t, c, a.v));
                });
                conns.push(h);
            }
            TAct::Emit { s, v } => sigs[s].emit(&Tracked {
                v,
                _live: Live::new(&args),
            }),
            TAct::Disconnect(c) => {
                if !conns.is_empty() {
                    conns[c % conns.len()].disconnect();
                }
            }
            TAct::Block(c, b) => {
                if !conns.is_empty() {
                    let _ = conns[c % conns.len()].block(b);
                }
            }
            TAct::Yield => std::thread::yield_now(),
        }
    }
    drop(evaluator);
    if !worker.drop_early {
        // Dropping the signals would cancel what is still queued.
        permit.recv().unwrap();
    }
    drop(conns);
    drop(sigs);
}

/// Whether every call a worker that waits queued for a connection it kept has run.
fn all_seen(reports: &[Option<Queued>], observed: &[(usize, usize, u32)]) -> bool {
    reports.iter().enumerate().all(|(t, q)| {
        let Some(q) = q else { return false };
        q.drop_early
            || q.per_conn.iter().enumerate().all(|(c, (values, cut))| {
                cut.is_some()
                    || observed
                        .iter()
                        .filter(|&&(ot, oc, _)| ot == t && oc == c)
                        .count()
                        >= values.len()
            })
    })
}

fn check_threaded(
    reports: &[Option<Queued>],
    observed: &[(usize, usize, u32)],
) -> Result<(), String> {
    for (t, q) in reports.iter().enumerate() {
        let q = q.as_ref().unwrap();
        let mine: Vec<(usize, u32)> = observed
            .iter()
            .filter(|o| o.0 == t)
            .map(|&(_, c, v)| (c, v))
            .collect();
        for (c, (values, cut)) in q.per_conn.iter().enumerate() {
            let ran: Vec<u32> = mine.iter().filter(|o| o.0 == c).map(|o| o.1).collect();
            let allowed = &values[..cut.unwrap_or(values.len())];
            if !allowed.starts_with(&ran) {
                return Err(format!(
                    "worker {t} connection {c}: ran {ran:?}, not a prefix of the queued {allowed:?}"
                ));
            }
            if !q.drop_early && cut.is_none() && ran.len() != values.len() {
                return Err(format!(
                    "worker {t} connection {c}: ran {ran:?} of {values:?}"
                ));
            }
        }
        // A subsequence of the queueing order.
        let mut order = q.order.iter();
        for call in &mine {
            if !order.any(|o| o == call) {
                return Err(format!(
                    "worker {t}: calls ran as {mine:?}, out of the queueing order {:?}",
                    q.order
                ));
            }
        }
    }
    Ok(())
}

fn run_threaded(script: &ThreadScript) -> Result<(), TestCaseError> {
    THREAD_CASES.fetch_add(1, Ordering::Relaxed);
    let closures = Arc::new(AtomicIsize::new(0));
    let args = Arc::new(AtomicIsize::new(0));
    let observed: Observed = Arc::new(Mutex::new(Vec::new()));
    let mut event_loop = script.on_loop.then(|| EventLoop::new().unwrap());
    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let evaluator = match &event_loop {
        Some(l) => l.connection_evaluator(),
        None => {
            let ev = ConnectionEvaluator::new();
            let wake_tx = Mutex::new(wake_tx.clone());
            ev.set_on_invocation_added(move || {
                let _ = wake_tx.lock().unwrap().send(());
            });
            ev
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let second = (script.second_evaluator && !script.on_loop).then(|| {
        let (ev, stop) = (evaluator.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                ev.evaluate_deferred_connections();
                std::thread::yield_now();
            }
        })
    });
    let mut permits = Vec::new();
    let mut threads = Vec::new();
    for (t, worker) in script.workers.iter().cloned().enumerate() {
        let (permit_tx, permit_rx) = mpsc::channel();
        permits.push(permit_tx);
        let (ev, obs, cl, ar) = (
            evaluator.clone(),
            observed.clone(),
            closures.clone(),
            args.clone(),
        );
        threads.push(std::thread::spawn(move || {
            run_worker(t, worker, ev, obs, (cl, ar), permit_rx)
        }));
    }
    drop(wake_tx);
    // The workers' scripts say what they queue; only a queued call's wake-up (the
    // notification, or the loop's own) makes the main thread evaluate.
    let reports: Vec<Option<Queued>> = script.workers.iter().map(|w| Some(queued_by(w))).collect();
    let limit = Duration::from_secs(30);
    let started = Instant::now();
    let fail = |what: &str, reports: &[Option<Queued>]| {
        stop.store(true, Ordering::SeqCst);
        Err(TestCaseError::fail(format!(
            "{what}: queued {reports:?}, ran {:?}",
            observed.lock().unwrap()
        )))
    };
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if all_seen(&reports, &observed.lock().unwrap()) {
            if left.is_zero() {
                // The last wait ran out: a turn that slept through a queued call's wake-up
                // still evaluates when its timeout ends.
                return fail("deferred calls run only when the wait timed out", &reports);
            }
            break;
        }
        if left.is_zero() {
            return fail(
                &format!("deferred calls not all run within {limit:?}"),
                &reports,
            );
        }
        // Wait for a queued call's wake-up (the notification, or the loop's own), and evaluate
        // only then: a lost wake-up fails the time limit. A second evaluating thread takes
        // calls without the main thread hearing of it: then look again every few milliseconds.
        let wait = if second.is_some() {
            left.min(Duration::from_millis(5))
        } else {
            left
        };
        match &mut event_loop {
            Some(l) => {
                l.process_events(Some(wait)).unwrap();
            }
            None => match wake_rx.recv_timeout(wait) {
                Ok(()) => {
                    evaluator.evaluate_deferred_connections();
                }
                Err(_) if second.is_some() => {}
                Err(_) => return fail("no notification for a queued call", &reports),
            },
        }
    }
    for permit in permits {
        let _ = permit.send(());
    }
    for thread in threads {
        thread.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(second) = second {
        second.join().unwrap();
    }
    // Whatever the workers' drops cancelled is gone; nothing else may be queued.
    let seen = observed.lock().unwrap().len();
    match &mut event_loop {
        Some(l) => {
            l.process_events(Some(Duration::ZERO)).unwrap();
        }
        None => {
            evaluator.evaluate_deferred_connections();
        }
    }
    let ran_late = observed.lock().unwrap().len() - seen;
    let observed = observed.lock().unwrap().clone();
    check_threaded(&reports, &observed).map_err(TestCaseError::fail)?;
    prop_assert_eq!(ran_late, 0, "calls left after every signal was dropped");
    prop_assert!(!evaluator.has_pending());
    drop(evaluator);
    drop(event_loop);
    prop_assert_eq!(closures.load(Ordering::SeqCst), 0, "slot closures left");
    prop_assert_eq!(args.load(Ordering::SeqCst), 0, "argument copies left");
    Ok(())
}

fn worker() -> impl Strategy<Value = Worker> {
    let act = prop_oneof![
        2 => (0..2usize).prop_map(TAct::Connect),
        8 => (0..2usize, 0..100u32).prop_map(|(s, v)| TAct::Emit { s, v }),
        1 => any::<usize>().prop_map(TAct::Disconnect),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(c, b)| TAct::Block(c, b)),
        1 => Just(TAct::Yield),
    ];
    (
        prop::collection::vec(act, 1..200),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(acts, drop_early)| Worker { acts, drop_early })
}

fn thread_script() -> impl Strategy<Value = ThreadScript> {
    (
        prop::collection::vec(worker(), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(workers, on_loop, second_evaluator)| ThreadScript {
            workers,
            on_loop,
            second_evaluator,
        })
}

#[test]
fn deferred_calls_from_other_threads_match_the_model() {
    let started = Instant::now();
    let mut runner = TestRunner::new(support::model::config(DEFAULT_THREAD_CASES));
    let result = runner.run(&thread_script(), |script| run_threaded(&script));
    support::model::finish_run(started, THREAD_CASES.load(Ordering::Relaxed), [], result);
}

/// An emitting thread that keeps the loop's evaluator alive after the loop is gone: the calls
/// queued then are dropped with the loop, the next emit disconnects the connection, and further
/// emits queue nothing (no queue grows for a loop that will never run it).
#[test]
fn emits_from_another_thread_after_its_loop_is_dropped_queue_nothing() {
    let closures = Arc::new(AtomicIsize::new(0));
    let args = Arc::new(AtomicIsize::new(0));
    let event_loop = EventLoop::new().unwrap();
    let evaluator = event_loop.connection_evaluator();
    let (loop_gone_tx, loop_gone_rx) = mpsc::channel::<()>();
    let (emitted_tx, emitted_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn({
        let (closures, args, evaluator) = (closures.clone(), args.clone(), evaluator.clone());
        move || {
            let sig: Signal<Tracked> = Signal::new();
            let token = Live::new(&closures);
            let handle = sig.connect_deferred(&evaluator, move |_| {
                let _token = &token;
                panic!("the loop never turned");
            });
            let emit = |v| {
                sig.emit(&Tracked {
                    v,
                    _live: Live::new(&args),
                })
            };
            for v in 0..100 {
                emit(v);
            }
            emitted_tx.send(()).unwrap();
            loop_gone_rx.recv().unwrap();
            assert!(handle.is_active(), "active until its next emit");
            emit(100);
            assert!(
                !handle.is_active(),
                "the emit after the loop was dropped disconnects"
            );
            for v in 0..1000 {
                emit(v);
            }
            assert_eq!(args.load(Ordering::SeqCst), 0, "nothing queued");
            assert_eq!(closures.load(Ordering::SeqCst), 0, "the slot was dropped");
            // The evaluator itself is still held here.
            assert!(!evaluator.has_pending());
        }
    });
    emitted_rx.recv().unwrap();
    assert_eq!(
        args.load(Ordering::SeqCst),
        100,
        "one argument copy per queued call"
    );
    assert!(evaluator.has_pending());
    drop(event_loop);
    assert_eq!(args.load(Ordering::SeqCst), 0, "dropped with the loop");
    assert!(!evaluator.has_pending());
    loop_gone_tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(closures.load(Ordering::SeqCst), 0);
}

/// An owner that evaluates a standalone evaluator when told to, coalescing notifications into
/// one flag (as an event loop's wake-up does): `on_invocation_added` raises it, `serve` evaluates
/// while it is raised.
struct CoalescingOwner {
    evaluator: Arc<ConnectionEvaluator>,
    asked: Arc<AtomicBool>,
}

impl CoalescingOwner {
    fn new() -> Self {
        let evaluator = ConnectionEvaluator::new();
        let asked = Arc::new(AtomicBool::new(false));
        let a = asked.clone();
        evaluator.set_on_invocation_added(move || a.store(true, Ordering::SeqCst));
        CoalescingOwner { evaluator, asked }
    }

    /// Evaluates while asked to; returns how many calls ran.
    fn serve(&self) -> usize {
        let mut ran = 0;
        while self.asked.swap(false, Ordering::SeqCst) {
            ran += self.evaluator.evaluate_deferred_connections();
        }
        ran
    }
}

/// A deferred slot that panics after its evaluation turned a call away (a nested loop inside the
/// slot served the owner's notification), or with calls queued after it: the owner must be told
/// to come back for them. The refused call's mark was taken without notifying (no callback while
/// unwinding), and the calls put back after the panicking slot notified nobody, so an owner that
/// evaluates when notified left them queued until an unrelated emit. (An event loop's next turn
/// runs them anyway: it asks `has_pending` every turn.)
#[test]
fn a_panicking_deferred_slot_does_not_lose_the_owners_notification() {
    // A call turned away, then the panic. Another thread queues a call while the slot runs (a
    // slot cannot emit a deferred signal itself: signals stay on their thread).
    let owner = Arc::new(CoalescingOwner::new());
    let ran = Arc::new(AtomicU32::new(0));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (emitted_tx, emitted_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn({
        let (evaluator, ran) = (owner.evaluator.clone(), ran.clone());
        move || {
            let later: Signal<()> = Signal::new();
            later
                .connect_deferred(&evaluator, move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .release();
            go_rx.recv().unwrap();
            later.emit(&());
            emitted_tx.send(()).unwrap();
            // Kept until the end: dropping the signal would cancel its queued call.
            go_rx.recv().unwrap();
        }
    });
    let nested = Arc::new(AtomicU32::new(u32::MAX));
    let first: Signal<()> = Signal::new();
    let (o, go, n) = (owner.clone(), go_tx.clone(), nested.clone());
    first
        .connect_deferred(&owner.evaluator, move |_| {
            go.send(()).unwrap();
            emitted_rx.recv().unwrap();
            // A nested loop serves the notification the worker's emit raised: refused.
            n.store(o.serve() as u32, Ordering::SeqCst);
            panic!("deliberate");
        })
        .release();
    first.emit(&());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| owner.serve()));
    assert!(result.is_err(), "the slot's panic reaches the owner");
    assert_eq!(
        nested.load(Ordering::SeqCst),
        0,
        "the nested call is refused"
    );
    assert!(owner.evaluator.has_pending());
    assert_eq!(
        owner.serve(),
        1,
        "the call turned away during the panicking evaluation was never asked for again"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    go_tx.send(()).unwrap();
    worker.join().unwrap();

    // Calls queued after the panicking slot: put back, and the owner told.
    let owner = CoalescingOwner::new();
    let ran = Arc::new(AtomicU32::new(0));
    let (panicking, after): (Signal<()>, Signal<()>) = (Signal::new(), Signal::new());
    panicking
        .connect_deferred(&owner.evaluator, |_| panic!("deliberate"))
        .release();
    let r = ran.clone();
    after
        .connect_deferred(&owner.evaluator, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    panicking.emit(&());
    after.emit(&());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| owner.serve()));
    assert!(result.is_err(), "the slot's panic reaches the owner");
    assert_eq!(
        owner.serve(),
        1,
        "the call put back after the panicking slot was never asked for again"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    // A callback that panics while the slot's panic unwinds: caught there (escaping, it would
    // abort the process); the slot's panic reaches the caller, the calls stay queued.
    let evaluator = ConnectionEvaluator::new();
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    evaluator.set_on_invocation_added(move || {
        if a.load(Ordering::SeqCst) {
            panic!("the callback's own panic");
        }
    });
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let (panicking, after): (Signal<()>, Signal<()>) = (Signal::new(), Signal::new());
    panicking
        .connect_deferred(&evaluator, |_| panic!("deliberate"))
        .release();
    after
        .connect_deferred(&evaluator, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    panicking.emit(&());
    after.emit(&());
    armed.store(true, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluator.evaluate_deferred_connections()
    }));
    let payload = result.expect_err("the slot's panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"deliberate"));
    armed.store(false, Ordering::SeqCst);
    assert!(evaluator.has_pending());
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// An owner whose notification callback evaluates at once (deferred slots run on the emitting
/// thread, in order) is called while a slot's panic unwinds (the calls after that slot were put
/// back). Evaluating there ran the next slots during the unwind, and a panic of one of them was
/// caught by the evaluator (only the panic hook reported it): a slot's panic never reached any
/// caller, and the rest of the batch ran in the middle of someone else's unwinding. No slot runs
/// while the thread unwinds: each panic reaches the caller of the evaluation it came from, and
/// the calls after it stay queued for the next evaluation (twentieth round).
#[test]
fn an_owner_evaluating_in_its_notification_runs_no_slot_while_a_panic_unwinds() {
    let evaluator = ConnectionEvaluator::new();
    let armed = Arc::new(AtomicBool::new(false));
    let (a, weak) = (armed.clone(), Arc::downgrade(&evaluator));
    evaluator.set_on_invocation_added(move || {
        if a.load(Ordering::SeqCst) {
            if let Some(evaluator) = weak.upgrade() {
                evaluator.evaluate_deferred_connections();
            }
        }
    });
    let log = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let signals: Vec<Signal<()>> = (0..3).map(|_| Signal::new()).collect();
    for (signal, name) in signals.iter().zip(["first", "second", "third"]) {
        let log = log.clone();
        signal
            .connect_deferred(&evaluator, move |_| {
                log.lock().unwrap().push(name);
                if name != "third" {
                    panic!("{name}");
                }
            })
            .release();
    }
    for signal in &signals {
        signal.emit(&());
    }
    armed.store(true, Ordering::SeqCst);
    let payload_of = |r: std::thread::Result<usize>| -> String {
        let payload = r.expect_err("a slot's panic reaches the caller");
        payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    };
    let evaluate = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            evaluator.evaluate_deferred_connections()
        }))
    };
    assert_eq!(payload_of(evaluate()), "first");
    assert_eq!(
        *log.lock().unwrap(),
        ["first"],
        "slots ran while the first slot's panic unwound"
    );
    assert!(evaluator.has_pending(), "the rest stays queued");
    assert_eq!(
        payload_of(evaluate()),
        "second",
        "the second panic was swallowed"
    );
    assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    assert_eq!(evaluate().expect("no panic left"), 1);
    assert_eq!(*log.lock().unwrap(), ["first", "second", "third"]);
    assert!(!evaluator.has_pending());
}
