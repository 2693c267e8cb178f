//! A model-based test of the event loop and its timers: generated scripts of timer operations
//! (single-shot and periodic `Timer`s started, stopped, restarted, their interval or
//! `single_shot` changed, dropped and made again, from outside the loop, from their own and each
//! other's `timeout` slots and from posted closures), closures posted (through the loop on its
//! thread, through a `LoopHandle` on its thread, and from other threads), quit/exit requests
//! (the `EventLoop`'s, a `LoopHandle`'s on the loop's thread and from other threads), the loop
//! driven by a host (`process_events` with waits from none to unbounded, then
//! `take_exit_request`) or by `run()`. A plain reference model of the documented rules (module
//! docs of `kdnet::foundation`, the docs of `EventLoop`, `LoopHandle` and `Timer`, PORTING.md)
//! reads the log the real run wrote and checks it step by step.
//!
//! What the model says (from the docs):
//! - one turn: the closures queued when it began, in posting order across threads (a closure
//!   posted while they run waits for the next turn), then the timers due, then (no deferred slots
//!   here) nothing else; `process_events` returns how many callbacks ran;
//! - a timer fires only while running, never before its interval since it was (re)started
//!   (`start` on a running timer, a changed `interval` of a running one, `running` set to true on
//!   a stopped one; setting an equal value changes nothing), and due timers fire in deadline
//!   order; a timer armed during the timer stage (by a slot) waits for a later turn; a stopped
//!   or dropped timer never fires afterwards;
//! - a single-shot timer stops before its slot runs (which may start it again); a periodic one
//!   counts its next period from the deadline that passed, or from now if that is gone too;
//! - `EventLoop::exit` before `run` makes it return at once; a `LoopHandle` quit is taken by the
//!   next turn, which runs the closures queued then and, under `run()`, ends it there (as a quit
//!   asked by a posted closure ends `run()`'s turn after its closures: no timer fires); a host
//!   learns of it from `take_exit_request` after that turn; the latest code wins (an
//!   `EventLoop::exit` spends a handle's quit not taken yet, and a handle's quit asked while
//!   the loop's is pending replaces it once a turn took it: `run()` turns once more, ending
//!   after that turn's closures, and `take_exit_request` says nothing until a turn took it,
//!   then spends one asked since with it, as `run()` does; the turn that took it may be one
//!   nested in a callback of `run()`'s turn, which then ends `run()` with a quit asked since).
//!
//! Time is real: the log records when each timer was armed (an instant before and one after the
//! call) and when each slot ran, and each turn records an instant before its timer stage (for a
//! host, when `process_events` was called; under `run()`, when a ticker closure that re-posts
//! itself ran). A timer "due for certain" is one whose latest possible deadline is not after that
//! instant, or after the earliest possible deadline of a timer that fired in the same turn: it
//! must fire in that turn (before any timer whose deadline is later for certain). Whether a timer
//! whose deadline falls inside a turn fires in it is left to the run (the model follows the log).
//! No slack is needed either way: every bound is a measured instant.
//!
//! Under `run()` the ticker closure re-posts itself every turn (so that turns can be told apart),
//! which keeps the loop from sleeping; the ticker asks the loop to quit after some turns and
//! milliseconds. Sleeping turns are covered by the host's waits.
//!
//! Sixteenth round, on top of that:
//! - managed timers (`Timer::set_timeout`/`set_recurring`, replaced, cancelled with
//!   `cancel_timer`, whose answer is checked, and `is_timer_active`) share the heap, the order
//!   and the no-early/must-fire rules with the `Timer`s; a single-shot one is gone before its
//!   callback runs;
//! - nested turns: a slot, timer callback or posted closure (also at the top, outside a turn)
//!   calls `foundation::process_events` (waits of 0–4 ms, up to three turns deep). A nested turn
//!   is a turn: the closures queued when it began (the rest of an outer batch included), the
//!   readiness the outer turn polled and had not dispatched plus its own poll, the timers due
//!   and armed before its timer stage; it does not deliver a notifier or timer whose emission is
//!   on the stack (a periodic tick due meanwhile is skipped and taken up when the slot returns);
//!   the outer stage goes on with the work there when it began and not handled meanwhile
//!   (a closure posted meanwhile waits for the next turn); each turn returns how many callbacks
//!   it dispatched itself; `exit_requested()` after it shows a quit it took, and
//!   `dispatch_depth()` in every callback says how deep it runs;
//! - I/O: a read notifier on each of two Unix socket pairs and a write notifier sharing the
//!   second pair's descriptor with its read notifier, enabled, disabled, dropped and made again
//!   from outside and from slots (their own too), the peers writing from outside and from slots.
//!   Level-triggered: in a turn at the top (a host's or `run()`'s), every notifier enabled when
//!   its turn polled, with its condition holding then (unread bytes; always writable), is
//!   triggered in that turn (or one nested in it), unless a slot enabled, disabled, dropped or
//!   replaced it meanwhile; no notifier is triggered while disabled or dropped, inside its own
//!   emission, twice from one poll, with nothing to read, or outside the readiness stage (after
//!   the posted closures, before the timers); each read takes what the model says is there;
//!   `registered_sources()` counts the descriptors with an enabled notifier;
//! - `LoopHandle::wake_up` from the loop's thread and others; after one from outside a turn, a
//!   host may wait without a bound (a watchdog fails the test should that wait not end).
//!
//! A turn's count: the closures it ran, the notifiers' readiness events it dispatched and the
//! timers it fired, plus at most the readiness events it dispatched without a delivery (a
//! notifier disabled meanwhile) and the timers whose emission was on the stack (taken off the
//! heap, not fired).
//!
//! Not covered here: deferred slots.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kdnet::{
    EventLoop, FileDescriptorNotifier, LoopHandle, NotificationType, Timer, TimerId, foundation,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const DEFAULT_CASES: u32 = 48;
/// `Timer` objects are timers `0..TIMERS`; managed ones (`set_timeout`/`set_recurring`) are
/// `TIMERS..ALL_TIMERS`.
const TIMERS: usize = 3;
const ALL_TIMERS: usize = TIMERS + 2;
/// Intervals a timer may have: next turn, a few milliseconds, and "never" within a script.
const INTERVALS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(2),
    Duration::from_millis(7),
    Duration::from_millis(20),
    Duration::from_secs(3600),
];
/// How long a host's `process_events` may wait; the last is `None` when a timer or a wake-up
/// will end it.
const WAITS: [Option<Duration>; 5] = [
    Some(Duration::ZERO),
    Some(Duration::from_millis(1)),
    Some(Duration::from_millis(5)),
    Some(Duration::from_millis(15)),
    None,
];
/// How long a nested `foundation::process_events` may wait.
const NEST_WAITS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(4),
];
/// Nested turns are made only this many turns deep.
const MAX_DEPTH: u32 = 3;
/// Unix socket pairs; the notifiers watch the second end of each.
const PAIRS: usize = 2;
/// Notifiers: 0 reads pair 0, 1 reads pair 1, 2 waits for pair 1 to be writable.
const NOTIFIERS: usize = 3;
const NOTIFIER_PAIR: [usize; NOTIFIERS] = [0, 1, 1];
const READS: [bool; NOTIFIERS] = [true, true, false];
/// A peer writes only while its pair holds fewer unread bytes than this (each small write takes
/// a buffer of its own in the kernel: unbounded, they would fill the socket and block the peer).
const MAX_UNREAD: usize = 48;
/// How many bytes a read notifier's slot reads per trigger.
const CHUNKS: [usize; 3] = [1, 3, 64];

#[derive(Clone, Copy, Debug)]
enum Via {
    /// `EventLoop::post` outside a turn, `foundation::post` inside one.
    Loop,
    /// `LoopHandle::post` on the loop's thread.
    Handle,
    /// `LoopHandle::post` on another thread (joined before the script goes on).
    Remote,
}

#[derive(Clone, Debug)]
enum Act {
    Start(usize),
    Stop(usize),
    SetRunning(usize, bool),
    SetInterval(usize, usize),
    SetSingleShot(usize, bool),
    Drop(usize),
    /// Drops timer `.0` if it exists and makes a new stopped one (interval index, single shot).
    Create(usize, usize, bool),
    Post(Via, Vec<Act>),
    /// `LoopHandle::exit(code)`, on another thread if `.0`.
    Quit(bool, i32),
    /// Managed timer `.0` (cancelled first if it has one) becomes a `set_timeout` of `INTERVALS[.1]`.
    SetTimeout(usize, usize),
    /// The same with `set_recurring`.
    SetRecurring(usize, usize),
    /// `cancel_timer` on managed timer `.0`'s id, if it has one.
    Cancel(usize),
    /// `foundation::process_events(Some(NEST_WAITS[.0]))`, unless `MAX_DEPTH` turns run already.
    Nest(usize),
    /// `LoopHandle::wake_up()`, on another thread if `.0`.
    Wake(bool),
    /// The peer of pair `.0` writes `.1` bytes.
    Write(usize, usize),
    /// `set_enabled` on notifier `.0`, if it exists.
    Enable(usize, bool),
    DropNotifier(usize),
    /// Drops notifier `.0` if it exists and makes a new (enabled) one.
    CreateNotifier(usize),
}

#[derive(Clone, Debug)]
enum Step {
    Act(Act),
    /// `EventLoop::exit(code)`.
    LoopQuit(i32),
    /// A host turn: `process_events(WAITS[.0])`, then `take_exit_request`.
    Turn(usize),
    /// `run()`; the ticker quits with `code` once it ran `min_ticks` times and `min_ms` passed.
    Run {
        min_ticks: u32,
        min_ms: u64,
        code: i32,
    },
}

#[derive(Clone, Debug)]
struct Script {
    /// Each timer object's first incarnation: interval index, single shot.
    initial: Vec<(usize, bool)>,
    /// What timer `i`'s slot (or managed callback) does at its `k`th call: `slots[i][k % len]`.
    slots: Vec<Vec<Vec<Act>>>,
    /// Whether each notifier starts enabled.
    enabled: Vec<bool>,
    /// How many bytes each read notifier's slot reads (an index into `CHUNKS`).
    chunks: Vec<usize>,
    /// What notifier `n`'s slot does (after reading) at its `k`th call: `reactions[n][k % len]`.
    reactions: Vec<Vec<Vec<Act>>>,
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Ev {
    /// A timer operation on an existing timer, between these instants.
    Act {
        before: Instant,
        after: Instant,
    },
    Closure {
        id: u32,
        at: Instant,
        depth: u32,
    },
    Fire {
        timer: usize,
        inc: u32,
        at: Instant,
        depth: u32,
    },
    Trigger {
        notifier: usize,
        inc: u32,
        /// Bytes read (0 for the write notifier, or when nothing was there).
        got: usize,
        at: Instant,
        depth: u32,
    },
    Cancelled(bool),
    Tick {
        at: Instant,
        active: bool,
        quit: bool,
    },
    TurnStart {
        at: Instant,
    },
    TurnEnd {
        count: usize,
        exit: Option<i32>,
    },
    NestStart {
        at: Instant,
        depth: u32,
    },
    NestEnd {
        count: usize,
        exit: Option<i32>,
        depth: u32,
    },
    RunReturned(i32),
    State {
        running: Vec<Option<bool>>,
        count: usize,
        enabled: Vec<Option<bool>>,
        sources: usize,
    },
}

// ---- the real run ---------------------------------------------------------------------------

struct RunState {
    started: Instant,
    ticks: u32,
    min_ticks: u32,
    min_ms: u64,
    code: i32,
    quit_sent: bool,
}

struct Real {
    handle: LoopHandle,
    timers: RefCell<Vec<Option<Rc<Timer>>>>,
    /// The managed timers' ids (at `TIMERS..`).
    managed: RefCell<Vec<Option<TimerId>>>,
    incs: RefCell<Vec<u32>>,
    fires: RefCell<Vec<usize>>,
    slots: Vec<Vec<Vec<Act>>>,
    /// (peer end, watched end) of each pair.
    pairs: Vec<(UnixStream, UnixStream)>,
    /// Bytes written to each pair and not read yet.
    unread: Vec<Cell<usize>>,
    notifiers: RefCell<Vec<Option<Rc<FileDescriptorNotifier>>>>,
    notifier_incs: RefCell<Vec<u32>>,
    triggers: RefCell<Vec<usize>>,
    chunks: Vec<usize>,
    reactions: Vec<Vec<Vec<Act>>>,
    log: RefCell<Vec<Ev>>,
    next_closure: Cell<u32>,
    run: RefCell<Option<RunState>>,
    /// A wake-up was asked for outside a turn since the last host turn.
    woken: Cell<bool>,
}

thread_local! {
    static REAL: RefCell<Option<Rc<Real>>> = const { RefCell::new(None) };
}

fn real() -> Rc<Real> {
    REAL.with(|r| r.borrow().clone())
        .expect("a script is running")
}

fn log(ev: Ev) {
    real().log.borrow_mut().push(ev);
}

fn make_timer(r: &Real, i: usize, interval: usize, single: bool) -> Rc<Timer> {
    let inc = r.incs.borrow()[i];
    let timer = Timer::new().unwrap();
    timer.interval.set(INTERVALS[interval]);
    timer.single_shot.set(single);
    timer.timeout.connect(move |_| on_fire(i, inc)).release();
    timer
}

fn make_notifier(r: &Real, n: usize) -> Rc<FileDescriptorNotifier> {
    let inc = r.notifier_incs.borrow()[n];
    let fd = r.pairs[NOTIFIER_PAIR[n]].1.as_raw_fd();
    let kind = if READS[n] {
        NotificationType::Read
    } else {
        NotificationType::Write
    };
    let notifier = FileDescriptorNotifier::new(fd, kind).unwrap();
    notifier
        .triggered
        .connect(move |_| on_trigger(n, inc))
        .release();
    notifier
}

fn on_fire(i: usize, inc: u32) {
    let r = real();
    log(Ev::Fire {
        timer: i,
        inc,
        at: Instant::now(),
        depth: foundation::dispatch_depth(),
    });
    react(&r, &r.fires, &r.slots, i);
}

/// Counts callback `i`'s call in `calls` and runs the reaction of that call from `reactions`
/// (they repeat in turn).
fn react(r: &Real, calls: &RefCell<Vec<usize>>, reactions: &[Vec<Vec<Act>>], i: usize) {
    let k = {
        let mut calls = calls.borrow_mut();
        calls[i] += 1;
        calls[i] - 1
    };
    let reaction = &reactions[i];
    if !reaction.is_empty() {
        for act in reaction[k % reaction.len()].clone() {
            exec(r, &act);
        }
    }
}

fn on_trigger(n: usize, inc: u32) {
    let r = real();
    let got = if READS[n] {
        let mut buf = [0u8; 64];
        let chunk = CHUNKS[r.chunks[n]];
        let got = match (&r.pairs[NOTIFIER_PAIR[n]].1).read(&mut buf[..chunk]) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("reading pair {}: {e}", NOTIFIER_PAIR[n]),
        };
        let unread = &r.unread[NOTIFIER_PAIR[n]];
        unread.set(unread.get().saturating_sub(got));
        got
    } else {
        0
    };
    log(Ev::Trigger {
        notifier: n,
        inc,
        got,
        at: Instant::now(),
        depth: foundation::dispatch_depth(),
    });
    react(&r, &r.triggers, &r.reactions, n);
}

fn run_closure(id: u32, acts: Vec<Act>) {
    log(Ev::Closure {
        id,
        at: Instant::now(),
        depth: foundation::dispatch_depth(),
    });
    let r = real();
    for act in &acts {
        exec(&r, act);
    }
}

fn ticker() {
    let r = real();
    let at = Instant::now();
    let mut run = r.run.borrow_mut();
    let Some(state) = run.as_mut() else {
        drop(run);
        log(Ev::Tick {
            at,
            active: false,
            quit: false,
        });
        return;
    };
    state.ticks += 1;
    // A run() that does not end fails the test instead of hanging it.
    assert!(
        state.started.elapsed() < support::SAFETY_TIMEOUT,
        "run() did not return within {:?}",
        support::SAFETY_TIMEOUT
    );
    let quit = !state.quit_sent
        && state.ticks >= state.min_ticks
        && state.started.elapsed() >= Duration::from_millis(state.min_ms);
    if quit {
        state.quit_sent = true;
        r.handle.exit(state.code);
    }
    drop(run);
    log(Ev::Tick {
        at,
        active: true,
        quit,
    });
    foundation::post(ticker).unwrap();
}

fn with_timer(r: &Real, i: usize, f: impl FnOnce(&Timer)) {
    let timer = r.timers.borrow()[i].clone();
    if let Some(timer) = timer {
        let before = Instant::now();
        f(&timer);
        let after = Instant::now();
        log(Ev::Act { before, after });
    }
}

fn on_another_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

fn exec(r: &Real, act: &Act) {
    match *act {
        Act::Start(i) => with_timer(r, i, |t| t.start()),
        Act::Stop(i) => with_timer(r, i, |t| t.stop()),
        Act::SetRunning(i, b) => with_timer(r, i, |t| {
            t.running.set(b);
        }),
        Act::SetInterval(i, k) => with_timer(r, i, |t| {
            t.interval.set(INTERVALS[k]);
        }),
        Act::SetSingleShot(i, b) => with_timer(r, i, |t| {
            t.single_shot.set(b);
        }),
        Act::Drop(i) => {
            let timer = r.timers.borrow_mut()[i].take();
            drop(timer);
        }
        Act::Create(i, k, single) => {
            let old = r.timers.borrow_mut()[i].take();
            drop(old);
            r.incs.borrow_mut()[i] += 1;
            r.fires.borrow_mut()[i] = 0;
            let timer = make_timer(r, i, k, single);
            r.timers.borrow_mut()[i] = Some(timer);
        }
        Act::Post(via, ref acts) => {
            let id = r.next_closure.get();
            r.next_closure.set(id + 1);
            let acts = acts.clone();
            match via {
                Via::Loop => foundation::post(move || run_closure(id, acts)).unwrap(),
                Via::Handle => r.handle.post(move || run_closure(id, acts)).unwrap(),
                Via::Remote => {
                    let handle = r.handle.clone();
                    on_another_thread(move || handle.post(move || run_closure(id, acts)).unwrap());
                }
            }
        }
        Act::Quit(remote, code) => {
            if remote {
                let handle = r.handle.clone();
                on_another_thread(move || handle.exit(code));
            } else {
                r.handle.exit(code);
            }
        }
        Act::SetTimeout(m, k) | Act::SetRecurring(m, k) => {
            let old = r.managed.borrow_mut()[m].take();
            if let Some(old) = old {
                Timer::cancel_timer(old);
            }
            r.incs.borrow_mut()[m] += 1;
            r.fires.borrow_mut()[m] = 0;
            let inc = r.incs.borrow()[m];
            let before = Instant::now();
            let id = if matches!(act, Act::SetTimeout(..)) {
                Timer::set_timeout(INTERVALS[k], move || on_fire(m, inc))
            } else {
                Timer::set_recurring(INTERVALS[k], move || on_fire(m, inc))
            };
            let after = Instant::now();
            r.managed.borrow_mut()[m] = Some(id.unwrap());
            log(Ev::Act { before, after });
        }
        Act::Cancel(m) => {
            let id = r.managed.borrow()[m];
            if let Some(id) = id {
                log(Ev::Cancelled(Timer::cancel_timer(id)));
            }
        }
        Act::Nest(w) => {
            let depth = foundation::dispatch_depth();
            if depth == 0 {
                // Its poll takes a pending wake-up.
                r.woken.set(false);
            }
            if depth < MAX_DEPTH {
                log(Ev::NestStart {
                    at: Instant::now(),
                    depth,
                });
                let count = foundation::process_events(Some(NEST_WAITS[w])).unwrap();
                log(Ev::NestEnd {
                    count,
                    exit: foundation::exit_requested(),
                    depth: foundation::dispatch_depth(),
                });
            }
        }
        Act::Wake(remote) => {
            if foundation::dispatch_depth() == 0 {
                r.woken.set(true);
            }
            if remote {
                let handle = r.handle.clone();
                on_another_thread(move || handle.wake_up());
            } else {
                r.handle.wake_up();
            }
        }
        Act::Write(p, len) => {
            if r.unread[p].get() < MAX_UNREAD {
                (&r.pairs[p].0).write_all(&[b'x'; 8][..len]).unwrap();
                r.unread[p].set(r.unread[p].get() + len);
            }
        }
        Act::Enable(n, b) => {
            let notifier = r.notifiers.borrow()[n].clone();
            if let Some(notifier) = notifier {
                notifier.set_enabled(b).unwrap();
            }
        }
        Act::DropNotifier(n) => {
            let notifier = r.notifiers.borrow_mut()[n].take();
            drop(notifier);
        }
        Act::CreateNotifier(n) => {
            let old = r.notifiers.borrow_mut()[n].take();
            drop(old);
            r.notifier_incs.borrow_mut()[n] += 1;
            r.triggers.borrow_mut()[n] = 0;
            let notifier = make_notifier(r, n);
            r.notifiers.borrow_mut()[n] = Some(notifier);
        }
    }
}

fn state(r: &Real, event_loop: &EventLoop) -> Ev {
    let mut running: Vec<Option<bool>> = r
        .timers
        .borrow()
        .iter()
        .map(|t| t.as_ref().map(|t| t.running.get()))
        .collect();
    running.extend(
        r.managed.borrow()[TIMERS..]
            .iter()
            .map(|id| id.map(Timer::is_timer_active)),
    );
    Ev::State {
        running,
        count: event_loop.timer_count(),
        enabled: r
            .notifiers
            .borrow()
            .iter()
            .map(|n| n.as_ref().map(|n| n.is_enabled()))
            .collect(),
        sources: event_loop.registered_sources(),
    }
}

/// A host turn's wait: `WAITS[w]`, or for the unbounded one, 5 ms unless a timer or a wake-up
/// will end it.
fn host_wait(r: &Real, w: usize) -> Option<Duration> {
    WAITS[w].or_else(|| {
        let soon =
            r.timers.borrow().iter().flatten().any(|t| {
                t.running.get() && t.remaining().is_some_and(|d| d < Duration::from_secs(60))
            });
        if soon || r.woken.get() {
            None
        } else {
            Some(Duration::from_millis(5))
        }
    })
}

/// Runs the script on a fresh loop; returns the log.
fn run_real(script: &Script) -> Vec<Ev> {
    let mut event_loop = EventLoop::new().unwrap();
    let pairs = (0..PAIRS)
        .map(|_| {
            let (a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            (a, b)
        })
        .collect();
    let r = Rc::new(Real {
        handle: event_loop.handle(),
        timers: RefCell::new(vec![None; TIMERS]),
        managed: RefCell::new(vec![None; ALL_TIMERS]),
        incs: RefCell::new(vec![0; ALL_TIMERS]),
        fires: RefCell::new(vec![0; ALL_TIMERS]),
        slots: script.slots.clone(),
        pairs,
        unread: (0..PAIRS).map(|_| Cell::new(0)).collect(),
        notifiers: RefCell::new(vec![None; NOTIFIERS]),
        notifier_incs: RefCell::new(vec![0; NOTIFIERS]),
        triggers: RefCell::new(vec![0; NOTIFIERS]),
        chunks: script.chunks.clone(),
        reactions: script.reactions.clone(),
        log: RefCell::new(Vec::new()),
        next_closure: Cell::new(0),
        run: RefCell::new(None),
        woken: Cell::new(false),
    });
    REAL.with(|x| *x.borrow_mut() = Some(r.clone()));
    for (i, &(interval, single)) in script.initial.iter().enumerate() {
        let timer = make_timer(&r, i, interval, single);
        r.timers.borrow_mut()[i] = Some(timer);
    }
    for (n, &enabled) in script.enabled.iter().enumerate() {
        let notifier = make_notifier(&r, n);
        notifier.set_enabled(enabled).unwrap();
        r.notifiers.borrow_mut()[n] = Some(notifier);
    }
    for step in &script.steps {
        match *step {
            Step::Act(Act::Post(Via::Loop, ref acts)) => {
                // Outside a turn: through the EventLoop itself.
                let id = r.next_closure.get();
                r.next_closure.set(id + 1);
                let acts = acts.clone();
                event_loop.post(move || run_closure(id, acts));
            }
            Step::Act(ref act) => exec(&r, act),
            Step::LoopQuit(code) => event_loop.exit(code),
            Step::Turn(w) => {
                let wait = host_wait(&r, w);
                r.woken.set(false);
                // An unbounded wait that does not end fails the test instead of hanging it.
                let (done, watched) = mpsc::channel::<()>();
                if wait.is_none() {
                    let handle = r.handle.clone();
                    std::thread::spawn(move || {
                        if watched.recv_timeout(support::SAFETY_TIMEOUT)
                            == Err(mpsc::RecvTimeoutError::Timeout)
                        {
                            let _ = handle.post(|| panic!("process_events(None) did not return"));
                        }
                    });
                }
                log(Ev::TurnStart { at: Instant::now() });
                let count = event_loop.process_events(wait).unwrap();
                let exit = event_loop.take_exit_request();
                let _ = done.send(());
                log(Ev::TurnEnd { count, exit });
            }
            Step::Run {
                min_ticks,
                min_ms,
                code,
            } => {
                *r.run.borrow_mut() = Some(RunState {
                    started: Instant::now(),
                    ticks: 0,
                    min_ticks,
                    min_ms,
                    code,
                    quit_sent: false,
                });
                event_loop.post(ticker);
                r.woken.set(false);
                let code = event_loop.run();
                *r.run.borrow_mut() = None;
                log(Ev::RunReturned(code));
            }
        }
        let s = state(&r, &event_loop);
        log(s);
    }
    let log = std::mem::take(&mut *r.log.borrow_mut());
    // The timers and notifiers go before the loop (whose drop stops them), then the loop with
    // what it queued.
    r.timers.borrow_mut().clear();
    r.notifiers.borrow_mut().clear();
    REAL.with(|x| *x.borrow_mut() = None);
    drop(r);
    drop(event_loop);
    log
}

// ---- the model ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Arm {
    /// The deadline is no earlier than this…
    lo: Instant,
    /// …and no later than this.
    hi: Instant,
    /// Arming order: a timer armed during a timer stage waits for a later one.
    seq: u64,
}

#[derive(Debug)]
struct MTimer {
    inc: u32,
    interval: Duration,
    single: bool,
    /// Running (a `Timer`), or pending (a managed timer).
    running: bool,
    arm: Option<Arm>,
    fires: usize,
    /// Its slot (or callback) runs.
    emitting: bool,
    /// A nested turn's timer stage may have taken it off the heap while its slot ran (without
    /// firing it); the slot's return re-arms it then.
    maybe_taken: bool,
}

#[derive(Debug)]
struct MNotifier {
    inc: u32,
    enabled: bool,
    emitting: bool,
    triggers: usize,
}

/// What a poll reported (or, in a nested turn, may have reported) for one descriptor.
#[derive(Debug)]
struct Entry {
    id: u64,
    pair: usize,
    parts: Vec<Part>,
    /// The depth of the turn that dispatches it (set by its first delivery).
    level: Option<u32>,
    /// Slots of it running.
    active: u32,
}

/// A notifier whose condition held when the entry was polled.
#[derive(Debug)]
struct Part {
    notifier: usize,
    /// It must be triggered (a top-level poll reported it for certain), unless touched since.
    must: bool,
    /// The notifier's `touched` count at the poll.
    touched: u64,
    delivered: bool,
    /// A later part of the entry was delivered: this one no longer can be.
    closed: bool,
}

enum Queued {
    Acts(u32, Vec<Act>),
    Ticker,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Host,
    Run,
    Nested,
}

struct Model<'a> {
    script: &'a Script,
    evs: &'a [Ev],
    pos: usize,
    timers: Vec<Option<MTimer>>,
    incs: Vec<u32>,
    notifiers: Vec<Option<MNotifier>>,
    notifier_incs: Vec<u32>,
    /// Bumped whenever a notifier is enabled, disabled, dropped or made.
    touched: Vec<u64>,
    /// Unread bytes of each pair.
    bytes: Vec<usize>,
    /// Readiness polled and not dispatched yet (or being dispatched).
    batch: Vec<Entry>,
    next_entry: u64,
    /// Per turn on the stack: the readiness events it delivered.
    delivered: Vec<usize>,
    queue: VecDeque<Queued>,
    /// Closures taken off the queue so far (by any turn).
    taken: u64,
    seq: u64,
    next_closure: u32,
    /// A `LoopHandle` quit not taken by a turn yet.
    shared_quit: Option<i32>,
    /// A quit `run()` or `take_exit_request` will return.
    core_quit: Option<i32>,
    /// A turn took a handle's quit while `core_quit` was pending: `take_exit_request` takes
    /// `core_quit` (and a handle's quit asked since) without waiting for another turn.
    later_taken: bool,
    /// The `Run` step running (its min_ticks, code, ticks so far, quit sent).
    run: Option<(u32, i32, u32, bool)>,
    /// Timer objects dropped while their emission is on the stack (timer, incarnation).
    ghosts: Vec<(usize, u32)>,
    /// Turns on the stack.
    depth: u32,
    /// The latest instant the log showed: the loop's clock is at least this from then on.
    clock: Instant,
    /// Counters for the run's report (see [`STAT_NAMES`]).
    stats: [u64; STATS_LEN],
}

type Check = Result<(), String>;

/// Far enough that a deadline bound by it is never "due for certain" in a script.
const UNKNOWN: Duration = Duration::from_secs(3600);

impl Model<'_> {
    fn next(&mut self, what: &str) -> Result<&Ev, String> {
        let ev = self
            .evs
            .get(self.pos)
            .ok_or_else(|| format!("log ended; expected {what}"))?;
        self.pos += 1;
        Ok(ev)
    }

    fn fail<T>(&self, msg: String) -> Result<T, String> {
        let from = self.pos.saturating_sub(8);
        let to = (self.pos + 3).min(self.evs.len());
        let mut context = String::new();
        for (i, ev) in self.evs[from..to].iter().enumerate() {
            let at = from + i;
            let mark = if at + 1 == self.pos { ">>" } else { "  " };
            context.push_str(&format!("\n{mark} {at}: {ev:?}"));
        }
        Err(format!("{msg} (log position {}){context}", self.pos))
    }

    fn unexpected<T>(&self, expected: &str) -> Result<T, String> {
        let got = format!("{:?}", self.evs.get(self.pos - 1));
        self.fail(format!("expected {expected}, got {got}"))
    }

    fn see(&mut self, at: Instant) {
        self.clock = self.clock.max(at);
    }

    fn expect_act(&mut self) -> Result<(Instant, Instant), String> {
        match *self.next("a timer operation")? {
            Ev::Act { before, after } => {
                self.see(after);
                Ok((before, after))
            }
            _ => self.unexpected("a timer operation"),
        }
    }

    fn arm(&mut self, i: usize, before: Instant, after: Instant) {
        let seq = self.seq;
        self.seq += 1;
        let t = self.timers[i].as_mut().unwrap();
        t.maybe_taken = false;
        t.arm = Some(Arm {
            lo: before + t.interval,
            hi: after + t.interval,
            seq,
        });
    }

    fn disarm(&mut self, i: usize) {
        let t = self.timers[i].as_mut().unwrap();
        t.running = false;
        t.arm = None;
        t.maybe_taken = false;
    }

    /// Drops a timer object; one whose emission is on the stack stays on the loop's heap until
    /// that emission ends (not fired, but a nested turn may take it off the heap and count it).
    fn drop_timer(&mut self, i: usize) {
        if let Some(t) = self.timers[i].take() {
            if t.emitting && t.running {
                self.ghosts.push((i, t.inc));
            }
        }
    }

    fn act(&mut self, act: &Act) -> Check {
        match *act {
            Act::Start(i)
            | Act::Stop(i)
            | Act::SetRunning(i, _)
            | Act::SetInterval(i, _)
            | Act::SetSingleShot(i, _)
                if self.timers[i].is_none() => {}
            Act::Start(i) => {
                let (before, after) = self.expect_act()?;
                self.timers[i].as_mut().unwrap().running = true;
                self.arm(i, before, after);
            }
            Act::Stop(i) => {
                self.expect_act()?;
                self.disarm(i);
            }
            Act::SetRunning(i, b) => {
                let (before, after) = self.expect_act()?;
                if self.timers[i].as_ref().unwrap().running != b {
                    if b {
                        self.timers[i].as_mut().unwrap().running = true;
                        self.arm(i, before, after);
                    } else {
                        self.disarm(i);
                    }
                }
            }
            Act::SetInterval(i, k) => {
                let (before, after) = self.expect_act()?;
                let t = self.timers[i].as_mut().unwrap();
                if t.interval != INTERVALS[k] {
                    t.interval = INTERVALS[k];
                    if t.running {
                        self.arm(i, before, after);
                    }
                }
            }
            Act::SetSingleShot(i, b) => {
                self.expect_act()?;
                self.timers[i].as_mut().unwrap().single = b;
            }
            Act::Drop(i) => self.drop_timer(i),
            Act::Create(i, k, single) => {
                self.drop_timer(i);
                self.incs[i] += 1;
                self.timers[i] = Some(MTimer {
                    inc: self.incs[i],
                    interval: INTERVALS[k],
                    single,
                    running: false,
                    arm: None,
                    fires: 0,
                    emitting: false,
                    maybe_taken: false,
                });
            }
            Act::Post(_, ref acts) => {
                let id = self.next_closure;
                self.next_closure += 1;
                self.queue.push_back(Queued::Acts(id, acts.clone()));
            }
            Act::Quit(_, code) => self.shared_quit = Some(code),
            Act::SetTimeout(m, k) | Act::SetRecurring(m, k) => {
                if self.timers[m].is_some() {
                    self.disarm(m);
                }
                self.incs[m] += 1;
                self.timers[m] = Some(MTimer {
                    inc: self.incs[m],
                    interval: INTERVALS[k],
                    single: matches!(act, Act::SetTimeout(..)),
                    running: true,
                    arm: None,
                    fires: 0,
                    emitting: false,
                    maybe_taken: false,
                });
                let (before, after) = self.expect_act()?;
                self.arm(m, before, after);
            }
            Act::Cancel(m) => {
                if let Some(t) = self.timers[m].as_ref() {
                    let pending = t.running;
                    match *self.next("cancel_timer's answer")? {
                        Ev::Cancelled(ok) if ok == pending => {}
                        Ev::Cancelled(ok) => {
                            return self.fail(format!(
                                "cancel_timer said {ok} for a timer that was pending: {pending}"
                            ));
                        }
                        _ => return self.unexpected("cancel_timer's answer"),
                    }
                    self.disarm(m);
                }
            }
            Act::Nest(_) => {
                if self.depth < MAX_DEPTH {
                    self.stats[7] += 1;
                    self.turn(Kind::Nested)?;
                }
            }
            Act::Wake(_) => self.stats[8] += 1,
            Act::Write(p, len) => {
                if self.bytes[p] < MAX_UNREAD {
                    self.bytes[p] += len;
                }
            }
            Act::Enable(n, b) => {
                if let Some(notifier) = self.notifiers[n].as_mut() {
                    notifier.enabled = b;
                    self.touched[n] += 1;
                }
            }
            Act::DropNotifier(n) => {
                if self.notifiers[n].take().is_some() {
                    self.touched[n] += 1;
                }
            }
            Act::CreateNotifier(n) => {
                self.notifier_incs[n] += 1;
                self.touched[n] += 1;
                self.notifiers[n] = Some(MNotifier {
                    inc: self.notifier_incs[n],
                    enabled: true,
                    emitting: false,
                    triggers: 0,
                });
            }
        }
        Ok(())
    }

    /// The timers that may fire in the running timer stage (armed before it began, their
    /// emission not on the stack).
    fn candidates(&self, limit: u64) -> impl Iterator<Item = (usize, Arm)> + '_ {
        self.timers.iter().enumerate().filter_map(move |(i, t)| {
            let t = t.as_ref()?;
            let arm = t.arm?;
            (arm.seq < limit && !t.emitting && !t.maybe_taken).then_some((i, arm))
        })
    }

    /// A poll: every descriptor with an enabled notifier whose condition holds. At the top (no
    /// turn around this one) it is reported for certain; in a nested turn it may have been
    /// reported already to the outer turn, or not re-armed since.
    fn poll(&mut self) {
        let must = self.depth == 1;
        for pair in 0..PAIRS {
            let parts: Vec<Part> = (0..NOTIFIERS)
                .filter(|&n| NOTIFIER_PAIR[n] == pair)
                .filter_map(|n| {
                    let notifier = self.notifiers[n].as_ref()?;
                    let ready = !READS[n] || self.bytes[pair] > 0;
                    (notifier.enabled && ready).then_some(Part {
                        notifier: n,
                        must,
                        touched: self.touched[n],
                        delivered: false,
                        closed: false,
                    })
                })
                .collect();
            if !parts.is_empty() {
                self.batch.push(Entry {
                    id: self.next_entry,
                    pair,
                    parts,
                    level: None,
                    active: 0,
                });
                self.next_entry += 1;
            }
        }
    }

    fn trigger(&mut self, n: usize, inc: u32, got: usize, depth: u32) -> Check {
        if depth != self.depth {
            return self.fail(format!(
                "notifier {n} was triggered at dispatch depth {depth}, in a turn {} deep",
                self.depth
            ));
        }
        match self.notifiers[n].as_ref() {
            Some(notifier) if notifier.inc == inc => {
                if !notifier.enabled {
                    return self.fail(format!("notifier {n}#{inc} was triggered while disabled"));
                }
                if notifier.emitting {
                    return self.fail(format!(
                        "notifier {n}#{inc} was triggered inside its own emission"
                    ));
                }
            }
            _ => return self.fail(format!("notifier {n}#{inc} was triggered after its drop")),
        }
        let level = self.depth;
        let pair = NOTIFIER_PAIR[n];
        let Some(e) = self.batch.iter().position(|e| {
            e.pair == pair
                && e.level.is_none_or(|l| l == level)
                && e.parts
                    .iter()
                    .any(|p| p.notifier == n && !p.delivered && !p.closed)
        }) else {
            return self.fail(format!(
                "notifier {n}#{inc} was triggered but no poll of this turn reported it (again)"
            ));
        };
        let entry = &mut self.batch[e];
        if entry.level.is_none() {
            entry.level = Some(level);
            *self.delivered.last_mut().unwrap() += 1;
        }
        let j = entry.parts.iter().position(|p| p.notifier == n).unwrap();
        for part in &mut entry.parts[..j] {
            part.closed = true;
        }
        entry.parts[j].delivered = true;
        entry.active += 1;
        let id = entry.id;
        if READS[n] {
            let expected = CHUNKS[self.script.chunks[n]].min(self.bytes[pair]);
            if self.bytes[pair] == 0 {
                return self.fail(format!(
                    "read notifier {n}#{inc} was triggered with nothing to read"
                ));
            }
            if got != expected {
                return self.fail(format!(
                    "notifier {n}'s slot read {got} bytes; {expected} expected ({} unread)",
                    self.bytes[pair]
                ));
            }
            self.bytes[pair] -= got;
            self.stats[9] += got as u64;
        }
        self.stats[6] += 1;
        let notifier = self.notifiers[n].as_mut().unwrap();
        notifier.emitting = true;
        let k = notifier.triggers;
        notifier.triggers += 1;
        let reaction = &self.script.reactions[n];
        if !reaction.is_empty() {
            for act in reaction[k % reaction.len()].clone() {
                self.act(&act)?;
            }
        }
        if let Some(notifier) = self.notifiers[n].as_mut().filter(|x| x.inc == inc) {
            notifier.emitting = false;
        }
        if let Some(entry) = self.batch.iter_mut().find(|e| e.id == id) {
            entry.active -= 1;
        }
        Ok(())
    }

    /// A fire of timer `timer`#`inc` in a timer stage that began with `limit`, `now_at_least`.
    fn fire(
        &mut self,
        timer: usize,
        inc: u32,
        at: Instant,
        limit: u64,
        now: &mut Instant,
    ) -> Check {
        let Some(t) = self.timers[timer].as_ref().filter(|t| t.inc == inc) else {
            return self.fail(format!("timer {timer}#{inc} fired after it was dropped"));
        };
        if !t.running {
            return self.fail(format!("timer {timer}#{inc} fired while stopped"));
        }
        if t.emitting {
            return self.fail(format!("timer {timer}#{inc} fired inside its own emission"));
        }
        let Some(arm) = t.arm.filter(|a| a.seq < limit) else {
            return self.fail(format!(
                "timer {timer}#{inc} fired but was armed during this timer stage"
            ));
        };
        if at < arm.lo {
            return self.fail(format!("timer {timer}#{inc} fired {:?} early", arm.lo - at));
        }
        if let Some((other, _)) = self
            .candidates(limit)
            .find(|&(j, a)| j != timer && a.hi < arm.lo)
        {
            return self.fail(format!(
                "timer {timer}#{inc} fired before timer {other}, whose deadline is earlier"
            ));
        }
        *now = (*now).max(arm.lo);
        let seq = self.seq;
        let t = self.timers[timer].as_mut().unwrap();
        if t.single {
            t.running = false;
            t.arm = None;
        } else {
            // The next period counts from the deadline that passed or, when that period is
            // over already (for certain: its latest end is not after the loop's clock), from
            // the loop's clock: missed ticks coalesce, never a burst.
            let from = if arm.hi + t.interval <= *now {
                *now
            } else {
                arm.lo
            };
            t.arm = Some(Arm {
                lo: from + t.interval,
                hi: arm.hi.max(at) + t.interval,
                seq,
            });
            self.seq += 1;
        }
        let k = t.fires;
        t.fires += 1;
        t.emitting = true;
        self.stats[if timer < TIMERS { 0 } else { 5 }] += 1;
        if self.run.is_some() {
            self.stats[2] += 1;
        }
        let slot = &self.script.slots[timer];
        if !slot.is_empty() {
            for act in slot[k % slot.len()].clone() {
                self.act(&act)?;
            }
        }
        self.ghosts.retain(|&g| g != (timer, inc));
        let seq = self.seq;
        if let Some(t) = self.timers[timer].as_mut().filter(|t| t.inc == inc) {
            t.emitting = false;
            if std::mem::take(&mut t.maybe_taken) && t.running {
                // Re-armed when its emission ended: at the deadline it had (single shot) or the
                // next period's; when exactly, the log does not say.
                if let Some(arm) = t.arm {
                    t.arm = Some(Arm {
                        lo: arm.lo,
                        hi: arm.hi + UNKNOWN,
                        seq,
                    });
                    self.seq += 1;
                }
            }
        }
        Ok(())
    }

    /// One turn; returns the callbacks it dispatched itself, and how many more it may have
    /// counted.
    fn turn_stages(&mut self, kind: Kind) -> Result<(usize, usize), String> {
        if let Some(code) = self.shared_quit.take() {
            self.later_taken |= self.core_quit.is_some();
            self.core_quit = Some(code);
        }
        let mut ran = 0;
        let mut slack = 0;
        let end = self.taken + self.queue.len() as u64;
        while self.taken < end {
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            self.taken += 1;
            ran += 1;
            match queued {
                Queued::Acts(id, acts) => {
                    match *self.next("a posted closure")? {
                        Ev::Closure { id: got, at, depth } if got == id => {
                            self.see(at);
                            if depth != self.depth {
                                return self.fail(format!(
                                    "closure {id} ran at dispatch depth {depth}, in a turn {} deep",
                                    self.depth
                                ));
                            }
                        }
                        _ => return self.unexpected(&format!("posted closure {id} to run")),
                    }
                    self.stats[1] += 1;
                    for act in &acts {
                        self.act(act)?;
                    }
                }
                Queued::Ticker => {
                    let (at, active, quit) = match *self.next("the ticker")? {
                        Ev::Tick { at, active, quit } => (at, active, quit),
                        _ => return self.unexpected("the ticker to run"),
                    };
                    self.see(at);
                    if active != self.run.is_some() {
                        return self.fail(format!("the ticker ran with run() active: {active}"));
                    }
                    if let Some((min_ticks, code, ticks, sent)) = self.run.as_mut() {
                        *ticks += 1;
                        if quit {
                            if *ticks < *min_ticks || *sent {
                                return self.fail("the ticker quit too early or twice".into());
                            }
                            *sent = true;
                            self.shared_quit = Some(*code);
                        }
                        self.queue.push_back(Queued::Ticker);
                    }
                }
            }
        }
        if kind == Kind::Run && (self.core_quit.is_some() || self.shared_quit.is_some()) {
            // run() ends this turn after the posted closures.
            return Ok((ran, slack));
        }

        // The poll and its readiness: all of it is dispatched in this stage (here, or by a turn
        // nested in it) but the parts of a descriptor whose slot is on the stack.
        self.poll();
        slack += self.batch.len();
        while let Some(&Ev::Trigger {
            notifier,
            inc,
            got,
            at,
            depth,
        }) = self.evs.get(self.pos)
        {
            self.pos += 1;
            self.see(at);
            self.trigger(notifier, inc, got, depth)?;
        }
        for entry in self.batch.iter().filter(|e| e.active == 0) {
            for part in &entry.parts {
                let n = part.notifier;
                if part.must
                    && !part.delivered
                    && part.touched == self.touched[n]
                    && self.notifiers[n].is_some()
                {
                    return self.fail(format!(
                        "notifier {n} was enabled with its condition holding when the turn \
                         polled, untouched since, and was not triggered"
                    ));
                }
            }
        }
        self.batch.retain(|e| e.active > 0);
        ran += *self.delivered.last().unwrap();

        // The timers due.
        let limit = self.seq;
        let mut now_at_least = self.clock;
        for t in self.timers.iter_mut().flatten() {
            if t.emitting && t.arm.is_some_and(|a| a.seq < limit) {
                // Taken off the heap if due, not fired.
                t.maybe_taken = true;
                slack += 1;
            }
        }
        slack += self.ghosts.len();
        while let Some(&Ev::Fire {
            timer,
            inc,
            at,
            depth,
        }) = self.evs.get(self.pos)
        {
            self.pos += 1;
            self.see(at);
            if depth != self.depth {
                return self.fail(format!(
                    "timer {timer} fired at dispatch depth {depth}, in a turn {} deep",
                    self.depth
                ));
            }
            self.fire(timer, inc, at, limit, &mut now_at_least)?;
            ran += 1;
        }
        if let Some((late, arm)) = self.candidates(limit).find(|&(_, a)| a.hi <= now_at_least) {
            return self.fail(format!(
                "timer {late} was due (at the latest {:?} before the timer stage) and did not fire",
                now_at_least - arm.hi
            ));
        }
        Ok((ran, slack))
    }

    /// One turn: a host's `process_events`, one of `run()`, or one nested in a callback.
    fn turn(&mut self, kind: Kind) -> Check {
        let mine = self.depth;
        match kind {
            Kind::Host => match *self.next("a host turn")? {
                Ev::TurnStart { at } => self.see(at),
                _ => return self.unexpected("a host turn"),
            },
            Kind::Nested => match *self.next("a nested turn")? {
                Ev::NestStart { at, depth } if depth == mine => self.see(at),
                _ => return self.unexpected(&format!("a turn nested {} deep", self.depth)),
            },
            Kind::Run => {}
        }
        self.depth += 1;
        self.delivered.push(0);
        let stages = self.turn_stages(kind);
        self.delivered.pop();
        self.depth -= 1;
        let (ran, slack) = stages?;
        let count = match kind {
            Kind::Run => return Ok(()),
            Kind::Host => match *self.next("the end of a host turn")? {
                Ev::TurnEnd { count, exit } => {
                    // A handle's quit asked while the loop's was pending is later: it wins
                    // once a turn took it (after the closures posted before it); one asked
                    // after a turn took such a quit is spent with it, as in `run()`.
                    let expected = if self.core_quit.is_none()
                        || (self.shared_quit.is_some() && !self.later_taken)
                    {
                        None
                    } else {
                        self.later_taken = false;
                        let code = self.core_quit.take();
                        self.shared_quit.take().or(code)
                    };
                    if expected.is_some() {
                        self.stats[4] += 1;
                    }
                    if exit != expected {
                        return self.fail(format!(
                            "take_exit_request gave {exit:?}, expected {expected:?}"
                        ));
                    }
                    count
                }
                _ => return self.unexpected("the host turn to end"),
            },
            Kind::Nested => match *self.next("the end of a nested turn")? {
                Ev::NestEnd { count, exit, depth } if depth == mine => {
                    if exit != self.core_quit {
                        return self.fail(format!(
                            "exit_requested() gave {exit:?} after a nested turn, expected {:?}",
                            self.core_quit
                        ));
                    }
                    count
                }
                _ => return self.unexpected("the nested turn to end"),
            },
        };
        if count < ran || count > ran + slack {
            return self.fail(format!(
                "a {kind:?} turn returned {count}; it ran {ran} callbacks (and may count {slack} \
                 more)"
            ));
        }
        Ok(())
    }

    fn expect_return(&mut self, code: i32) -> Check {
        match *self.next("run() to return")? {
            Ev::RunReturned(got) if got == code => Ok(()),
            _ => self.unexpected(&format!("run() to return {code}")),
        }
    }

    fn step(&mut self, step: &Step) -> Check {
        match *step {
            Step::Act(ref act) => self.act(act)?,
            Step::LoopQuit(code) => {
                // The latest request wins: a handle's quit not taken yet is spent with it.
                self.shared_quit = None;
                self.later_taken = false;
                self.core_quit = Some(code);
            }
            Step::Turn(_) => self.turn(Kind::Host)?,
            Step::Run {
                min_ticks, code, ..
            } => {
                self.queue.push_back(Queued::Ticker);
                self.run = Some((min_ticks, code, 0, false));
                self.stats[3] += 1;
                loop {
                    if self.core_quit.is_some() {
                        if self.shared_quit.is_some() && !self.later_taken {
                            // A later quit through a handle: the turn that takes it runs the
                            // closures posted before it first. Once a turn took one (also a
                            // turn nested in one of run()'s), a quit asked since is spent with
                            // it, as `take_exit_request` spends it.
                            self.turn(Kind::Run)?;
                        }
                        let code = self.core_quit.take().unwrap_or_default();
                        let code = self.shared_quit.take().unwrap_or(code);
                        self.later_taken = false;
                        self.expect_return(code)?;
                        break;
                    }
                    self.turn(Kind::Run)?;
                }
                self.run = None;
            }
        }
        let running: Vec<Option<bool>> = self
            .timers
            .iter()
            .map(|t| t.as_ref().map(|t| t.running))
            .collect();
        let count = self
            .timers
            .iter()
            .enumerate()
            .filter(|(i, t)| t.as_ref().is_some_and(|t| *i < TIMERS || t.running))
            .count();
        let enabled: Vec<Option<bool>> = self
            .notifiers
            .iter()
            .map(|n| n.as_ref().map(|n| n.enabled))
            .collect();
        let sources = (0..PAIRS)
            .filter(|&pair| {
                (0..NOTIFIERS).any(|n| {
                    NOTIFIER_PAIR[n] == pair
                        && self.notifiers[n].as_ref().is_some_and(|n| n.enabled)
                })
            })
            .count();
        match *self.next("the state after a step")? {
            Ev::State {
                running: ref got,
                count: got_count,
                enabled: ref got_enabled,
                sources: got_sources,
            } if *got == running
                && got_count == count
                && *got_enabled == enabled
                && got_sources == sources =>
            {
                Ok(())
            }
            _ => self.unexpected(&format!(
                "after {step:?}: running {running:?}, {count} timers, notifiers enabled \
                 {enabled:?} on {sources} descriptors"
            )),
        }
    }
}

const STATS_LEN: usize = 10;
const STAT_NAMES: [&str; STATS_LEN] = [
    "timer fires",
    "posted closures run",
    "timer fires under run()",
    "run() calls",
    "exit requests a host took",
    "managed timer fires",
    "notifier triggers",
    "nested turns",
    "wake-ups",
    "bytes read",
];

fn check(script: &Script, evs: &[Ev]) -> Result<[u64; STATS_LEN], String> {
    let mut timers: Vec<Option<MTimer>> = script
        .initial
        .iter()
        .map(|&(k, single)| {
            Some(MTimer {
                inc: 0,
                interval: INTERVALS[k],
                single,
                running: false,
                arm: None,
                fires: 0,
                emitting: false,
                maybe_taken: false,
            })
        })
        .collect();
    timers.resize_with(ALL_TIMERS, || None);
    let mut model = Model {
        script,
        evs,
        pos: 0,
        timers,
        incs: vec![0; ALL_TIMERS],
        notifiers: script
            .enabled
            .iter()
            .map(|&enabled| {
                Some(MNotifier {
                    inc: 0,
                    enabled,
                    emitting: false,
                    triggers: 0,
                })
            })
            .collect(),
        notifier_incs: vec![0; NOTIFIERS],
        touched: vec![0; NOTIFIERS],
        bytes: vec![0; PAIRS],
        batch: Vec::new(),
        next_entry: 0,
        delivered: Vec::new(),
        queue: VecDeque::new(),
        taken: 0,
        seq: 0,
        next_closure: 0,
        shared_quit: None,
        core_quit: None,
        later_taken: false,
        run: None,
        ghosts: Vec::new(),
        depth: 0,
        // The earliest instant of the log: before the first timer stage.
        clock: evs
            .iter()
            .filter_map(|ev| match *ev {
                Ev::TurnStart { at }
                | Ev::NestStart { at, .. }
                | Ev::Closure { at, .. }
                | Ev::Fire { at, .. }
                | Ev::Trigger { at, .. }
                | Ev::Tick { at, .. } => Some(at),
                Ev::Act { before, .. } => Some(before),
                _ => None,
            })
            .min()
            .unwrap_or_else(Instant::now),
        stats: [0; STATS_LEN],
    };
    for step in &script.steps {
        model.step(step)?;
    }
    if model.pos != evs.len() {
        return model.fail(format!(
            "the log goes on: {:?}",
            &evs[model.pos..(model.pos + 3).min(evs.len())]
        ));
    }
    Ok(model.stats)
}

// ---- scripts --------------------------------------------------------------------------------

/// An index into [`INTERVALS`], most often zero (fires on the next turn, also under `run()`).
fn interval() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0), 2 => Just(1), 1 => Just(2), 1 => Just(3), 1 => Just(4)]
}

fn timer_leaf() -> impl Strategy<Value = Act> {
    let t = 0..TIMERS;
    let m = TIMERS..ALL_TIMERS;
    prop_oneof![
        4 => t.clone().prop_map(Act::Start),
        2 => t.clone().prop_map(Act::Stop),
        1 => (t.clone(), any::<bool>()).prop_map(|(i, b)| Act::SetRunning(i, b)),
        2 => (t.clone(), interval()).prop_map(|(i, k)| Act::SetInterval(i, k)),
        1 => (t.clone(), any::<bool>()).prop_map(|(i, b)| Act::SetSingleShot(i, b)),
        1 => t.clone().prop_map(Act::Drop),
        1 => (t, interval(), any::<bool>()).prop_map(|(i, k, s)| Act::Create(i, k, s)),
        2 => (m.clone(), interval()).prop_map(|(i, k)| Act::SetTimeout(i, k)),
        1 => (m.clone(), interval()).prop_map(|(i, k)| Act::SetRecurring(i, k)),
        1 => m.prop_map(Act::Cancel),
    ]
}

fn loop_leaf() -> impl Strategy<Value = Act> {
    let n = 0..NOTIFIERS;
    prop_oneof![
        1 => (any::<bool>(), -2..3i32).prop_map(|(remote, code)| Act::Quit(remote, code)),
        2 => (0..NEST_WAITS.len()).prop_map(Act::Nest),
        1 => any::<bool>().prop_map(Act::Wake),
        3 => (0..PAIRS, 1..6usize).prop_map(|(p, len)| Act::Write(p, len)),
        2 => (n.clone(), any::<bool>()).prop_map(|(i, b)| Act::Enable(i, b)),
        1 => n.clone().prop_map(Act::DropNotifier),
        1 => n.prop_map(Act::CreateNotifier),
    ]
}

fn leaf() -> impl Strategy<Value = Act> {
    prop_oneof![3 => timer_leaf(), 2 => loop_leaf()]
}

fn act() -> impl Strategy<Value = Act> {
    leaf().prop_recursive(2, 12, 3, |inner| {
        (
            prop_oneof![Just(Via::Loop), Just(Via::Handle), Just(Via::Remote)],
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(via, acts)| Act::Post(via, acts))
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => act().prop_map(Step::Act),
        1 => (-2..3i32).prop_map(Step::LoopQuit),
        6 => (0..WAITS.len()).prop_map(Step::Turn),
        3 => (1..5u32, prop_oneof![Just(0u64), Just(3), Just(12)], 10..13i32)
            .prop_map(|(min_ticks, min_ms, code)| Step::Run { min_ticks, min_ms, code }),
    ]
}

/// What each timer's slot or notifier's slot does, call by call.
fn reactions(count: usize) -> impl Strategy<Value = Vec<Vec<Vec<Act>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(act(), 0..3), 1..4),
        count,
    )
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec((interval(), any::<bool>()), TIMERS),
        reactions(ALL_TIMERS),
        prop::collection::vec(any::<bool>(), NOTIFIERS),
        prop::collection::vec(0..CHUNKS.len(), NOTIFIERS),
        reactions(NOTIFIERS),
        prop::collection::vec(step(), 4..28),
    )
        .prop_map(|(initial, slots, enabled, chunks, reactions, mut steps)| {
            // Let what is armed come due, under the model's eye.
            steps.extend([Step::Turn(3), Step::Turn(3), Step::Turn(0)]);
            Script {
                initial,
                slots,
                enabled,
                chunks,
                reactions,
                steps,
            }
        })
}

thread_local! {
    static CASES: Cell<u64> = const { Cell::new(0) };
    static STATS: Cell<[u64; STATS_LEN]> = const { Cell::new([0; STATS_LEN]) };
}

#[test]
fn event_loop_and_timers_match_the_model() {
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let started = Instant::now();
    let result = runner.run(&script(), |script| {
        let evs = run_real(&script);
        let stats = check(&script, &evs).map_err(TestCaseError::fail)?;
        CASES.with(|c| c.set(c.get() + 1));
        STATS.with(|s| {
            let mut sum = s.get();
            for (total, n) in sum.iter_mut().zip(stats) {
                *total += n;
            }
            s.set(sum);
        });
        Ok(())
    });
    support::model::finish_run(
        started,
        CASES.with(Cell::get),
        STAT_NAMES.into_iter().zip(STATS.with(Cell::get)),
        result,
    );
}

/// The shrunk script of a long release run, made deterministic: `run()`'s first turn takes a
/// handle's quit (1), a closure of it asks a later one (2) and nests a turn, which takes that one
/// while 1 is pending and runs the ticker, which asks for 11. The nested turn took the later quit
/// after the closures posted before it: the quit the ticker asked since is spent with it, and
/// `run()` returns 11 after this turn (as `take_exit_request` would report it), without turning
/// once more for the ticker.
#[test]
fn a_quit_asked_after_a_nested_turn_took_a_later_quit_is_spent_with_it_under_run() {
    let script = Script {
        initial: vec![(0, false); TIMERS],
        slots: vec![vec![vec![]]; ALL_TIMERS],
        enabled: vec![false; NOTIFIERS],
        chunks: vec![0; NOTIFIERS],
        reactions: vec![vec![vec![]]; NOTIFIERS],
        steps: vec![
            Step::Act(Act::Quit(false, 1)),
            Step::Act(Act::Post(
                Via::Handle,
                vec![Act::Quit(false, 2), Act::Nest(0)],
            )),
            Step::Run {
                min_ticks: 1,
                min_ms: 0,
                code: 11,
            },
            Step::Turn(0),
        ],
    };
    let evs = run_real(&script);
    assert!(
        evs.iter().any(|ev| matches!(ev, Ev::RunReturned(11))),
        "run() did not return the ticker's code: {evs:?}"
    );
    if let Err(e) = check(&script, &evs) {
        panic!("{e}");
    }
}
