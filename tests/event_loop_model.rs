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
//!   learns of it from `take_exit_request` after that turn; the latest code wins.
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
//! Not covered here: nested turns (`foundation::process_events` from a slot; tests/timer.rs and
//! tests/event_loop.rs), managed timers (`set_timeout`/`set_recurring`; tests/timer.rs), I/O and
//! deferred slots.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::{EventLoop, LoopHandle, Timer, foundation};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const DEFAULT_CASES: u32 = 48;
const TIMERS: usize = 3;
/// Intervals a timer may have: next turn, a few milliseconds, and "never" within a script.
const INTERVALS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(2),
    Duration::from_millis(7),
    Duration::from_millis(20),
    Duration::from_secs(3600),
];
/// How long a host's `process_events` may wait; the last is `None` when a timer will end it.
const WAITS: [Option<Duration>; 5] = [
    Some(Duration::ZERO),
    Some(Duration::from_millis(1)),
    Some(Duration::from_millis(5)),
    Some(Duration::from_millis(15)),
    None,
];

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
    /// Each timer's first incarnation: interval index, single shot.
    initial: Vec<(usize, bool)>,
    /// What timer `i`'s slot does at its `k`th call: `slots[i][k % len]`.
    slots: Vec<Vec<Vec<Act>>>,
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
    },
    Fire {
        timer: usize,
        inc: u32,
        at: Instant,
    },
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
    RunReturned(i32),
    State {
        running: Vec<Option<bool>>,
        count: usize,
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
    incs: RefCell<Vec<u32>>,
    fires: RefCell<Vec<usize>>,
    slots: Vec<Vec<Vec<Act>>>,
    log: RefCell<Vec<Ev>>,
    next_closure: Cell<u32>,
    run: RefCell<Option<RunState>>,
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

fn on_fire(i: usize, inc: u32) {
    let r = real();
    log(Ev::Fire {
        timer: i,
        inc,
        at: Instant::now(),
    });
    let k = {
        let mut fires = r.fires.borrow_mut();
        fires[i] += 1;
        fires[i] - 1
    };
    let slot = &r.slots[i];
    if !slot.is_empty() {
        for act in slot[k % slot.len()].clone() {
            exec(&r, &act);
        }
    }
}

fn run_closure(id: u32, acts: Vec<Act>) {
    log(Ev::Closure { id });
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
                    std::thread::spawn(move || handle.post(move || run_closure(id, acts)).unwrap())
                        .join()
                        .unwrap();
                }
            }
        }
        Act::Quit(remote, code) => {
            if remote {
                let handle = r.handle.clone();
                std::thread::spawn(move || handle.exit(code))
                    .join()
                    .unwrap();
            } else {
                r.handle.exit(code);
            }
        }
    }
}

fn state(r: &Real, event_loop: &EventLoop) -> Ev {
    Ev::State {
        running: r
            .timers
            .borrow()
            .iter()
            .map(|t| t.as_ref().map(|t| t.running.get()))
            .collect(),
        count: event_loop.timer_count(),
    }
}

/// Runs the script on a fresh loop; returns the log.
fn run_real(script: &Script) -> Vec<Ev> {
    let mut event_loop = EventLoop::new().unwrap();
    let r = Rc::new(Real {
        handle: event_loop.handle(),
        timers: RefCell::new(vec![None; TIMERS]),
        incs: RefCell::new(vec![0; TIMERS]),
        fires: RefCell::new(vec![0; TIMERS]),
        slots: script.slots.clone(),
        log: RefCell::new(Vec::new()),
        next_closure: Cell::new(0),
        run: RefCell::new(None),
    });
    REAL.with(|x| *x.borrow_mut() = Some(r.clone()));
    for (i, &(interval, single)) in script.initial.iter().enumerate() {
        let timer = make_timer(&r, i, interval, single);
        r.timers.borrow_mut()[i] = Some(timer);
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
                let wait = WAITS[w].or_else(|| {
                    let soon = r.timers.borrow().iter().flatten().any(|t| {
                        t.running.get()
                            && t.remaining().is_some_and(|d| d < Duration::from_secs(60))
                    });
                    if soon {
                        None
                    } else {
                        Some(Duration::from_millis(5))
                    }
                });
                log(Ev::TurnStart { at: Instant::now() });
                let count = event_loop.process_events(wait).unwrap();
                let exit = event_loop.take_exit_request();
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
                let code = event_loop.run();
                *r.run.borrow_mut() = None;
                log(Ev::RunReturned(code));
            }
        }
        let s = state(&r, &event_loop);
        log(s);
    }
    let log = std::mem::take(&mut *r.log.borrow_mut());
    // The timers go before the loop (whose drop stops them), then the loop with what it queued.
    r.timers.borrow_mut().clear();
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
    running: bool,
    arm: Option<Arm>,
    fires: usize,
}

enum Queued {
    Acts(u32, Vec<Act>),
    Ticker,
}

struct Model<'a> {
    script: &'a Script,
    evs: &'a [Ev],
    pos: usize,
    timers: Vec<Option<MTimer>>,
    incs: Vec<u32>,
    queue: VecDeque<Queued>,
    seq: u64,
    next_closure: u32,
    /// A `LoopHandle` quit not taken by a turn yet.
    shared_quit: Option<i32>,
    /// A quit `run()` or `take_exit_request` will return.
    core_quit: Option<i32>,
    /// The `Run` step running (its min_ticks, code, ticks so far, quit sent).
    run: Option<(u32, i32, u32, bool)>,
    /// Counters for the run's report (see [`STAT_NAMES`]).
    stats: [u64; STATS_LEN],
}

type Check = Result<(), String>;

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
        let from = self.pos.saturating_sub(6);
        let to = (self.pos + 3).min(self.evs.len());
        let mut context = String::new();
        for (i, ev) in self.evs[from..to].iter().enumerate() {
            let at = from + i;
            let mark = if at + 1 == self.pos { ">>" } else { "  " };
            context.push_str(&format!("\n{mark} {at}: {ev:?}"));
        }
        Err(format!("{msg} (log position {}){context}", self.pos))
    }

    fn expect_act(&mut self) -> Result<(Instant, Instant), String> {
        match *self.next("a timer operation")? {
            Ev::Act { before, after } => Ok((before, after)),
            ref other => {
                let other = format!("{other:?}");
                self.fail(format!("expected a timer operation, got {other}"))
            }
        }
    }

    fn arm(&mut self, i: usize, before: Instant, after: Instant) {
        let seq = self.seq;
        self.seq += 1;
        let t = self.timers[i].as_mut().unwrap();
        t.arm = Some(Arm {
            lo: before + t.interval,
            hi: after + t.interval,
            seq,
        });
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
                let t = self.timers[i].as_mut().unwrap();
                t.running = false;
                t.arm = None;
            }
            Act::SetRunning(i, b) => {
                let (before, after) = self.expect_act()?;
                let t = self.timers[i].as_mut().unwrap();
                if t.running != b {
                    t.running = b;
                    if b {
                        self.arm(i, before, after);
                    } else {
                        t.arm = None;
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
            Act::Drop(i) => self.timers[i] = None,
            Act::Create(i, k, single) => {
                self.incs[i] += 1;
                self.timers[i] = Some(MTimer {
                    inc: self.incs[i],
                    interval: INTERVALS[k],
                    single,
                    running: false,
                    arm: None,
                    fires: 0,
                });
            }
            Act::Post(_, ref acts) => {
                let id = self.next_closure;
                self.next_closure += 1;
                self.queue.push_back(Queued::Acts(id, acts.clone()));
            }
            Act::Quit(_, code) => self.shared_quit = Some(code),
        }
        Ok(())
    }

    /// The timers that may fire in the running timer stage (armed before it began).
    fn candidates(&self, limit: u64) -> impl Iterator<Item = (usize, Arm)> + '_ {
        self.timers.iter().enumerate().filter_map(move |(i, t)| {
            let arm = t.as_ref()?.arm?;
            (arm.seq < limit).then_some((i, arm))
        })
    }

    /// One turn; `run`: driven by `run()` rather than a host.
    fn turn(&mut self, run: bool) -> Check {
        let mut t0 = None;
        if !run {
            match *self.next("a host turn")? {
                Ev::TurnStart { at } => t0 = Some(at),
                ref other => {
                    let other = format!("{other:?}");
                    return self.fail(format!("expected a host turn, got {other}"));
                }
            }
        }
        if let Some(code) = self.shared_quit.take() {
            self.core_quit = Some(code);
        }
        let n = self.queue.len();
        for _ in 0..n {
            match self.queue.pop_front().unwrap() {
                Queued::Acts(id, acts) => {
                    match *self.next("a posted closure")? {
                        Ev::Closure { id: got } if got == id => {}
                        ref other => {
                            let other = format!("{other:?}");
                            return self
                                .fail(format!("expected posted closure {id} to run, got {other}"));
                        }
                    }
                    self.stats[1] += 1;
                    for act in &acts {
                        self.act(act)?;
                    }
                }
                Queued::Ticker => {
                    let (at, active, quit) = match *self.next("the ticker")? {
                        Ev::Tick { at, active, quit } => (at, active, quit),
                        ref other => {
                            let other = format!("{other:?}");
                            return self.fail(format!("expected the ticker to run, got {other}"));
                        }
                    };
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
                        // The ticker is the latest thing run before the timers.
                        t0 = Some(at);
                        self.queue.push_back(Queued::Ticker);
                    }
                }
            }
        }
        if run && (self.core_quit.is_some() || self.shared_quit.is_some()) {
            // run() ends this turn after the posted closures.
            return Ok(());
        }
        let Some(t0) = t0 else {
            return self.fail("a run() turn without the ticker".into());
        };
        let limit = self.seq;
        // The loop's clock when it fired timers was at least this.
        let mut now_at_least = t0;
        let mut fired = 0;
        while let Some(&Ev::Fire { timer, inc, at }) = self.evs.get(self.pos) {
            self.pos += 1;
            let Some(t) = self.timers[timer].as_ref().filter(|t| t.inc == inc) else {
                return self.fail(format!("timer {timer}#{inc} fired after it was dropped"));
            };
            if !t.running {
                return self.fail(format!("timer {timer}#{inc} fired while stopped"));
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
            now_at_least = now_at_least.max(arm.lo);
            let seq = self.seq;
            let t = self.timers[timer].as_mut().unwrap();
            if t.single {
                t.running = false;
                t.arm = None;
            } else {
                // The next period counts from the deadline that passed or, when that period is
                // over already (for certain: its latest end is not after the loop's clock), from
                // the loop's clock: missed ticks coalesce, never a burst.
                let from = if arm.hi + t.interval <= now_at_least {
                    now_at_least
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
            fired += 1;
            self.stats[0] += 1;
            if run {
                self.stats[2] += 1;
            }
            let slot = &self.script.slots[timer];
            if !slot.is_empty() {
                for act in slot[k % slot.len()].clone() {
                    self.act(&act)?;
                }
            }
        }
        if let Some((late, arm)) = self.candidates(limit).find(|&(_, a)| a.hi <= now_at_least) {
            return self.fail(format!(
                "timer {late} was due (at the latest {:?} before the timer stage) and did not fire",
                now_at_least - arm.hi
            ));
        }
        if !run {
            match *self.next("the end of a host turn")? {
                Ev::TurnEnd { count, exit } => {
                    if count != n + fired {
                        return self.fail(format!(
                            "process_events returned {count}; {n} closures and {fired} timers ran"
                        ));
                    }
                    let expected = self.core_quit.take();
                    if expected.is_some() {
                        self.stats[4] += 1;
                    }
                    if exit != expected {
                        return self.fail(format!(
                            "take_exit_request gave {exit:?}, expected {expected:?}"
                        ));
                    }
                }
                ref other => {
                    let other = format!("{other:?}");
                    return self.fail(format!("expected the host turn to end, got {other}"));
                }
            }
        }
        Ok(())
    }

    fn expect_return(&mut self, code: i32) -> Check {
        match *self.next("run() to return")? {
            Ev::RunReturned(got) if got == code => Ok(()),
            ref other => {
                let other = format!("{other:?}");
                self.fail(format!("expected run() to return {code}, got {other}"))
            }
        }
    }

    fn step(&mut self, step: &Step) -> Check {
        match *step {
            Step::Act(ref act) => self.act(act)?,
            Step::LoopQuit(code) => self.core_quit = Some(code),
            Step::Turn(_) => self.turn(false)?,
            Step::Run {
                min_ticks, code, ..
            } => {
                self.queue.push_back(Queued::Ticker);
                self.run = Some((min_ticks, code, 0, false));
                self.stats[3] += 1;
                loop {
                    if let Some(code) = self.core_quit.take() {
                        self.expect_return(code)?;
                        break;
                    }
                    self.turn(true)?;
                }
                self.run = None;
            }
        }
        let running: Vec<Option<bool>> = self
            .timers
            .iter()
            .map(|t| t.as_ref().map(|t| t.running))
            .collect();
        let count = self.timers.iter().flatten().count();
        match *self.next("the state after a step")? {
            Ev::State {
                running: ref got,
                count: got_count,
            } if *got == running && got_count == count => Ok(()),
            ref other => {
                let other = format!("{other:?}");
                self.fail(format!(
                    "after {step:?}: expected running {running:?} and {count} timers, got {other}"
                ))
            }
        }
    }
}

const STATS_LEN: usize = 5;
const STAT_NAMES: [&str; STATS_LEN] = [
    "timer fires",
    "posted closures run",
    "timer fires under run()",
    "run() calls",
    "exit requests a host took",
];

fn check(script: &Script, evs: &[Ev]) -> Result<[u64; STATS_LEN], String> {
    let mut model = Model {
        script,
        evs,
        pos: 0,
        timers: script
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
                })
            })
            .collect(),
        incs: vec![0; TIMERS],
        queue: VecDeque::new(),
        seq: 0,
        next_closure: 0,
        shared_quit: None,
        core_quit: None,
        run: None,
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

fn leaf() -> impl Strategy<Value = Act> {
    let t = 0..TIMERS;
    prop_oneof![
        4 => t.clone().prop_map(Act::Start),
        2 => t.clone().prop_map(Act::Stop),
        1 => (t.clone(), any::<bool>()).prop_map(|(i, b)| Act::SetRunning(i, b)),
        2 => (t.clone(), interval()).prop_map(|(i, k)| Act::SetInterval(i, k)),
        1 => (t.clone(), any::<bool>()).prop_map(|(i, b)| Act::SetSingleShot(i, b)),
        1 => t.clone().prop_map(Act::Drop),
        1 => (t, interval(), any::<bool>()).prop_map(|(i, k, s)| Act::Create(i, k, s)),
        1 => (any::<bool>(), -2..3i32).prop_map(|(remote, code)| Act::Quit(remote, code)),
    ]
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

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec((interval(), any::<bool>()), TIMERS),
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(act(), 0..3), 1..4),
            TIMERS,
        ),
        prop::collection::vec(step(), 4..28),
    )
        .prop_map(|(initial, slots, mut steps)| {
            // Let what is armed come due, under the model's eye.
            steps.extend([Step::Turn(3), Step::Turn(3), Step::Turn(0)]);
            Script {
                initial,
                slots,
                steps,
            }
        })
}

fn config() -> Config {
    Config {
        cases: support::model::cases(DEFAULT_CASES),
        // A failure becomes a named test; no regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

thread_local! {
    static CASES: Cell<u64> = const { Cell::new(0) };
    static STATS: Cell<[u64; STATS_LEN]> = const { Cell::new([0; STATS_LEN]) };
}

#[test]
fn event_loop_and_timers_match_the_model() {
    let mut runner = TestRunner::new(config());
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
