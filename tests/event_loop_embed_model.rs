//! A model-based test of embedding the event loop in another main loop (the `EventLoop` docs'
//! "Embedding in another main loop", PORTING.md's `as_raw_fd()`/`next_timeout()` row): a host of
//! the test's own (a second `mio::Poll` watching `as_raw_fd()`, edge-triggered as mio registers
//! it, or level-triggered in effect by re-registering before every wait) that sleeps only in its
//! own poll, for at most `next_timeout()`, then calls `process_events(Some(ZERO))` (the
//! `EventLoop`'s or the free `foundation::process_events`) and `take_exit_request()`, as a
//! GTK/Qt/winit program does instead of `run()`. Or Qt-shaped (nineteenth round): it reads
//! `next_timeout()` only after each turn (a single-shot `QTimer` set to it), with no "about to
//! block" hook, and sleeps for what it read then; a timer the host starts between turns due
//! before that (any, after `None`) must make the descriptor readable at once.
//!
//! Generated scripts of what a GUI program does, from the host between its iterations: timers
//! (single-shot restarted from their own slot, periodic, 0 ms, stopping themselves after some
//! fires, starting another timer or posting a closure from their slot), closures posted on the
//! loop's thread (some posting again from their own run) and from other threads after a delay,
//! quit/exit requests (the host's `EventLoop::exit`, a posted closure's, a timer slot's and
//! another thread's `LoopHandle::exit`), bytes written by a kdnet `TcpSocket` to a kdnet
//! `TcpServer`'s peer in the same loop (from the host and from posted closures), bytes a std
//! server thread writes to a kdnet `TcpSocket` (sometimes more than one turn reads), events a
//! std server thread writes to an `SseClient`, each after a delay, a posted closure waiting
//! in a nested loop for another thread's answer, and host code (a GUI handler) waiting in the
//! loop itself (`foundation::process_events` with a timeout, as `send_and_wait` does) while a
//! timer slot in one of its turns starts a timer or posts a closure (twentieth round).
//!
//! What the reference says (the docs):
//! - every timer fires as under `run()`: never before its interval since it was (re)started (a
//!   periodic one's k-th tick not before k intervals), exactly as often as its slot lets it
//!   (the slot stops it after its count), and not much later (a generous bound: the host must
//!   not oversleep); `next_timeout()` after a turn is never later than a running timer's
//!   `remaining()` (rounded up to the millisecond), so a timer started from a slot shortens it;
//! - every posted closure runs once; those posted on the loop's thread in posting order, those
//!   of one other thread in its posting order;
//! - host code's wait in the loop leaves the descriptor readable when it returns with work the
//!   host would sleep past by what `next_timeout()` last told it (a timer due earlier, any after
//!   `None`; a closure queued);
//! - bytes arrive in full and in order; SSE events arrive once each, in order; a nested wait
//!   gets its answer;
//! - a quit or exit is reported by `take_exit_request()` once, promptly, with a code that was
//!   asked for; every request is reported;
//! - never sleeps through work: the host's wait is unbounded by us when `next_timeout()` is
//!   `None` (capped only by a watchdog that fails the case): a cross-thread post, a socket's
//!   data or an SSE event must make the descriptor readable;
//! - never busy-spins: a wake-up (readable descriptor or `next_timeout()` passed) whose turn
//!   dispatched nothing and reported no exit is empty; a few are allowed (a wake-up written for
//!   work a turn then took before its poll, a timer the host starts: `as_raw_fd` promises that
//!   a timer started between turns and due before the timeout `next_timeout()` last gave makes
//!   the descriptor readable, though a host that reads it before every wait would not need
//!   it), never more than three in a row
//!   without a host action between them, and in all no more than the work items that may cause
//!   one; at the end, with nothing running, `next_timeout()` is `None` and the descriptor is not
//!   readable.
//!
//! Not covered here: more readiness than one poll takes (256 events; `tests/usage.rs` and
//! `tests/event_loop.rs` cover it), deferred slots, notifiers (`event_loop_model.rs`).
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kdnet::network::http::HttpRequest;
use kdnet::network::sse::SseClient;
use kdnet::network::{TcpServer, TcpSocket};
use kdnet::{EventLoop, LoopHandle, Timer};
use proptest::prelude::*;

use support::is_readable;
use support::model::{config, finish_counted};

/// How late a timer may fire, a turn may come or a quit may be reported (a loaded machine).
const LATE: Duration = Duration::from_millis(1500);
/// The longest the host sleeps when kdnet gives no timeout: reaching it fails the case, since
/// every script's outside work (posts, bytes, events) comes within a fraction of it.
const WATCHDOG: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq)]
enum QuitVia {
    /// `EventLoop::exit` from the host.
    Host,
    /// A closure posted on the loop's thread calls `LoopHandle::exit`.
    Posted,
    /// A single-shot timer's slot calls `LoopHandle::exit`.
    Slot(u8),
    /// Another thread calls `LoopHandle::exit` after a delay.
    Remote(u8),
}

#[derive(Debug, Clone)]
enum Step {
    /// A timer that fires `fires` times and then stops itself from its slot. `single`: a
    /// single-shot timer its slot restarts; else periodic. The slot may post a closure, or start
    /// a helper single-shot timer of `spawn_ms` (checked like the others).
    Timer {
        interval_ms: u8,
        single: bool,
        fires: u8,
        post_in_slot: bool,
        spawn_ms: Option<u8>,
    },
    /// `n` closures posted by the host; each posts `reposts` more from its own run.
    Post {
        n: u8,
        reposts: u8,
    },
    /// Another thread posts `n` closures after `delay_ms`.
    Remote {
        delay_ms: u8,
        n: u8,
    },
    Quit(QuitVia),
    /// The kdnet client writes `len` bytes to the kdnet server's peer (`posted`: from a
    /// posted closure, else from the host).
    TcpWrite {
        len: u16,
        posted: bool,
    },
    /// The std server thread writes `len` bytes to the kdnet socket after `delay_ms` (some more
    /// than one turn's read budget of 1 MiB: the rest waits for later turns, with no new edge).
    ServerWrite {
        delay_ms: u8,
        len: u32,
    },
    /// A posted closure waits in a nested loop (`foundation::process_events`) for a closure
    /// another thread posts after `delay_ms`; what the nested turns handle is not left for the host.
    NestedWait {
        delay_ms: u8,
    },
    /// Host code (a GUI handler, between the host's iterations) waits in the loop itself
    /// (`foundation::process_events` with a timeout, as `send_and_wait` does) until a slot of a
    /// `delay_ms` timer ran in one of its turns; that slot starts a single-shot timer of
    /// `timer_ms` and/or posts a closure. The host then sleeps for what it was told before the
    /// wait: what the wait left must wake it (twentieth round).
    HostCodeWait {
        delay_ms: u8,
        timer_ms: Option<u8>,
        post: bool,
    },
    /// The SSE server thread writes `n` events after `delay_ms`.
    Sse {
        delay_ms: u8,
        n: u8,
    },
    /// The host runs its loop for this long before the next step.
    Pause {
        ms: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..=12, any::<bool>(), 1u8..=4, any::<bool>(), proptest::option::weighted(0.3, 0u8..=8))
            .prop_map(|(interval_ms, single, fires, post_in_slot, spawn_ms)| Step::Timer {
                interval_ms,
                single,
                fires,
                post_in_slot,
                spawn_ms,
            }),
        2 => (1u8..=4, 0u8..=2).prop_map(|(n, reposts)| Step::Post { n, reposts }),
        2 => (0u8..=20, 1u8..=4).prop_map(|(delay_ms, n)| Step::Remote { delay_ms, n }),
        1 => prop_oneof![
            Just(QuitVia::Host),
            Just(QuitVia::Posted),
            (0u8..=10).prop_map(QuitVia::Slot),
            (0u8..=20).prop_map(QuitVia::Remote),
        ]
        .prop_map(Step::Quit),
        1 => (1u16..=40_000, any::<bool>()).prop_map(|(len, posted)| Step::TcpWrite { len, posted }),
        1 => (0u8..=20, prop_oneof![9 => 1u32..=40_000, 1 => Just(1_500_000u32)])
            .prop_map(|(delay_ms, len)| Step::ServerWrite { delay_ms, len }),
        1 => (0u8..=10).prop_map(|delay_ms| Step::NestedWait { delay_ms }),
        1 => (0u8..=8, proptest::option::weighted(0.8, 0u8..=12), any::<bool>())
            .prop_map(|(delay_ms, timer_ms, post)| Step::HostCodeWait { delay_ms, timer_ms, post }),
        1 => (0u8..=20, 1u8..=5).prop_map(|(delay_ms, n)| Step::Sse { delay_ms, n }),
        2 => (0u8..=25).prop_map(|ms| Step::Pause { ms }),
    ]
}

static CASES: AtomicU64 = AtomicU64::new(0);
/// Run counters, by index: see `STAT_NAMES`.
static STATS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
const STAT_NAMES: [&str; 7] = [
    "host wake-ups",
    "empty wake-ups",
    "timer fires",
    "posts run",
    "bytes",
    "SSE events",
    "exits taken",
];
const WAKEUPS: usize = 0;
const EMPTY: usize = 1;
const FIRES: usize = 2;
const POSTS: usize = 3;
const BYTES: usize = 4;
const EVENTS: usize = 5;
const QUITS: usize = 6;

/// One timer's record: when each (re)start began, and when each fire came.
#[derive(Default)]
struct TimerLog {
    interval: Duration,
    single: bool,
    wanted: u32,
    /// (instant before the start, fires counted before it)
    starts: Vec<(Instant, usize)>,
    fires: Vec<Instant>,
}

/// What the loop's callbacks record, shared with the host.
#[derive(Default)]
struct World {
    timers: Vec<(Rc<Timer>, Rc<RefCell<TimerLog>>)>,
    /// Sequence numbers of closures posted on the loop's thread, in the order they ran.
    local_ran: Vec<u64>,
    local_posted: u64,
    /// Quit requests asked on the loop's thread: code, when.
    quits_asked: Vec<(i32, Instant)>,
    /// Quit requests the script scheduled on the loop's thread and not asked yet.
    quits_to_come: u32,
    /// What `take_exit_request` reported: code, when.
    takes: Vec<(i32, Instant)>,
    sent: Vec<u8>,
    received: Vec<u8>,
    next_code: i32,
}

type Shared = Rc<RefCell<World>>;

fn post_local(world: &Shared, reposts: u8) {
    let seq = {
        let mut w = world.borrow_mut();
        w.local_posted += 1;
        w.local_posted
    };
    let world2 = world.clone();
    kdnet::foundation::post(move || {
        world2.borrow_mut().local_ran.push(seq);
        if reposts > 0 {
            post_local(&world2, reposts - 1);
        }
    })
    .unwrap();
}

/// A new code, recorded as asked now on the loop's thread.
fn new_quit(world: &Shared) -> i32 {
    let mut w = world.borrow_mut();
    w.next_code += 1;
    let code = w.next_code;
    w.quits_asked.push((code, Instant::now()));
    code
}

fn ask_quit(world: &Shared, handle: &LoopHandle) {
    world.borrow_mut().quits_to_come -= 1;
    handle.exit(new_quit(world));
}

/// Quit requests asked from other threads: code, when (recorded before the call).
type RemoteQuits = Arc<Mutex<Vec<(i32, Instant)>>>;

/// Every request asked so far, from any thread.
fn all_quits(world: &World, remote: &RemoteQuits) -> Vec<(i32, Instant)> {
    let mut all = world.quits_asked.clone();
    all.extend(remote.lock().unwrap().iter().copied());
    all
}

/// A timer as the script asks for it; its slot records the fire and restarts or stops it.
fn start_timer(
    world: &Shared,
    interval: Duration,
    single: bool,
    fires: u8,
    post: bool,
    spawn: Option<u8>,
) {
    let timer = Timer::new().unwrap();
    timer.interval.set(interval);
    timer.single_shot.set(single);
    let log = Rc::new(RefCell::new(TimerLog {
        interval,
        single,
        wanted: u32::from(fires),
        ..TimerLog::default()
    }));
    let (weak, l, w) = (Rc::downgrade(&timer), log.clone(), world.clone());
    timer
        .timeout
        .connect(move |_| {
            let now = Instant::now();
            let Some(timer) = weak.upgrade() else { return };
            let done = {
                let mut log = l.borrow_mut();
                log.fires.push(now);
                log.fires.len() as u32 >= log.wanted
            };
            if post {
                post_local(&w, 0);
            }
            if let Some(ms) = spawn {
                if !done {
                    start_timer(
                        &w,
                        Duration::from_millis(u64::from(ms)),
                        true,
                        1,
                        false,
                        None,
                    );
                }
            }
            if done {
                timer.stop();
            } else if single {
                let fired = l.borrow().fires.len();
                l.borrow_mut().starts.push((Instant::now(), fired));
                timer.start();
            }
        })
        .release();
    log.borrow_mut().starts.push((Instant::now(), 0));
    timer.start();
    world.borrow_mut().timers.push((timer, log));
}

/// The host: a mio poller on the loop's descriptor, the only place the test sleeps.
struct Host {
    poll: mio::Poll,
    events: mio::Events,
    level: bool,
    /// Turns through `foundation::process_events` rather than the `EventLoop`'s.
    free: bool,
    /// Qt-shaped: reads `next_timeout()` only after each turn (a single-shot `QTimer` set to it)
    /// and sleeps for what it read then, through the host's own actions in between, with no
    /// "about to block" hook: a timer an action starts due before that must wake it.
    qt: bool,
    /// The deadline the Qt-shaped host read after its last turn (`None` inside: none given).
    told: Option<Option<Instant>>,
    fd: std::os::fd::RawFd,
    empty_in_a_row: u32,
    empty: u64,
    wakeups: u64,
}

impl Host {
    fn new(event_loop: &EventLoop, level: bool, free: bool, qt: bool) -> Host {
        let poll = mio::Poll::new().unwrap();
        let fd = event_loop.as_raw_fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        Host {
            poll,
            events: mio::Events::with_capacity(4),
            level,
            free,
            qt,
            told: None,
            fd,
            empty_in_a_row: 0,
            empty: 0,
            wakeups: 0,
        }
    }

    /// One iteration: sleep for at most `next_timeout()` (and at most until `until`, the host's
    /// own next task), then one turn and the exit request. Returns the exit code taken.
    fn iterate(
        &mut self,
        event_loop: &mut EventLoop,
        world: &Shared,
        remote_quits: &RemoteQuits,
        until: Option<Instant>,
    ) -> Result<(), String> {
        let asked = match self.told {
            Some(told) if self.qt => told.map(|d| d.saturating_duration_since(Instant::now())),
            _ => event_loop.next_timeout(),
        };
        let own = until.map(|u| u.saturating_duration_since(Instant::now()));
        let wait = match (asked, own) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        };
        if self.level {
            self.poll
                .registry()
                .reregister(
                    &mut mio::unix::SourceFd(&self.fd),
                    mio::Token(0),
                    mio::Interest::READABLE,
                )
                .unwrap();
        }
        let slept = Instant::now();
        self.poll
            .poll(&mut self.events, Some(wait.unwrap_or(WATCHDOG)))
            .unwrap();
        let readable = !self.events.is_empty();
        if wait.is_none() && !readable {
            return Err(format!(
                "the host slept {WATCHDOG:?} with no timeout from kdnet and the descriptor never readable (work pending)"
            ));
        }
        // Whether kdnet's own timeout (not the host's) ended the wait.
        let kdnet_woke =
            readable || asked.is_some_and(|a| own.is_none_or(|o| a <= o) && slept.elapsed() >= a);
        let ran = if self.free {
            kdnet::foundation::process_events(Some(Duration::ZERO))
        } else {
            event_loop.process_events(Some(Duration::ZERO))
        }
        .map_err(|e| e.to_string())?;
        let mut took_exit = false;
        if let Some(code) = event_loop.take_exit_request() {
            took_exit = true;
            let now = Instant::now();
            let mut w = world.borrow_mut();
            let asked = all_quits(&w, remote_quits);
            let Some(&(_, at)) = asked.iter().find(|(c, _)| *c == code) else {
                return Err(format!(
                    "take_exit_request gave {code}, never asked for ({asked:?})"
                ));
            };
            if w.takes.iter().any(|(c, _)| *c == code) {
                return Err(format!("take_exit_request gave {code} twice"));
            }
            if now.duration_since(at) > LATE + LATE {
                return Err(format!(
                    "the exit {code} was reported {:?} after it was asked",
                    now.duration_since(at)
                ));
            }
            w.takes.push((code, now));
            STATS[QUITS].fetch_add(1, Ordering::Relaxed);
        }
        if kdnet_woke {
            self.wakeups += 1;
            if ran == 0 && !took_exit {
                self.empty += 1;
                self.empty_in_a_row += 1;
                if self.empty_in_a_row > 3 {
                    return Err(format!(
                        "the host spins: {} wake-ups in a row found nothing to do (readable {readable}, next_timeout {:?})",
                        self.empty_in_a_row,
                        event_loop.next_timeout()
                    ));
                }
            } else {
                self.empty_in_a_row = 0;
            }
        }
        // A running timer's turn is never later than next_timeout says. The timers are asked
        // first: next_timeout, asked later, is rounded up from a shorter wait.
        let soonest = world
            .borrow()
            .timers
            .iter()
            .filter_map(|(timer, _)| timer.remaining())
            .min();
        let read = Instant::now();
        let next = event_loop.next_timeout();
        self.told = Some(next.map(|n| read + n));
        if let Some(remaining) = soonest {
            if next.is_none_or(|n| n > remaining + Duration::from_millis(1)) {
                return Err(format!(
                    "a timer is due in {remaining:?}, but next_timeout says {next:?}"
                ));
            }
        }
        Ok(())
    }
}

impl Host {
    /// After a host action that started a timer due `interval` after it was armed (by `after`):
    /// a Qt-shaped host sleeps for what it read before the action, so a timer due earlier than
    /// that (any, if it read `None`) must have made the descriptor readable.
    fn check_woken_for(&self, interval: Duration, after: Instant) -> Result<(), String> {
        let Some(told) = self.told.filter(|_| self.qt) else {
            return Ok(());
        };
        let must = told.is_none_or(|deadline| after + interval < deadline);
        if must && !is_readable(self.fd) {
            return Err(format!(
                "a timer the host started, due in {interval:?}, left the Qt-shaped host asleep \
                 (it was told {:?})",
                told.map(|d| d.saturating_duration_since(after))
            ));
        }
        Ok(())
    }
}

/// Checks one timer's log against the reference.
fn check_timer(index: usize, log: &TimerLog) -> Result<(), String> {
    if log.fires.len() as u32 != log.wanted {
        return Err(format!(
            "timer {index} fired {} times, wanted {}",
            log.fires.len(),
            log.wanted
        ));
    }
    for (k, fire) in log.fires.iter().enumerate() {
        // The latest (re)start before this fire; its k-th interval since.
        let (start, before) = *log.starts.iter().rev().find(|(_, n)| *n <= k).unwrap();
        let nth = (k - before + 1) as u32;
        let earliest = start + log.interval * nth;
        if *fire < earliest {
            return Err(format!(
                "timer {index} ({:?}, single {}) fire {k} came {:?} before it was due",
                log.interval,
                log.single,
                earliest - *fire
            ));
        }
        let previous = if k == before { start } else { log.fires[k - 1] };
        if fire.duration_since(previous) > log.interval + LATE {
            return Err(format!(
                "timer {index} ({:?}) fire {k} came {:?} after the previous one",
                log.interval,
                fire.duration_since(previous)
            ));
        }
    }
    Ok(())
}

fn run_case(steps: &[Step], level: bool, free: bool, qt: bool) -> Result<(), String> {
    CASES.fetch_add(1, Ordering::Relaxed);
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let world: Shared = Rc::default();

    // The pair in one loop: a kdnet server and a kdnet client.
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let peers: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let (p, w) = (peers.clone(), world.clone());
    server
        .new_connection
        .connect(move |peer| {
            let (weak, w) = (Rc::downgrade(peer), w.clone());
            peer.ready_read
                .connect(move |_| {
                    if let Some(peer) = weak.upgrade() {
                        w.borrow_mut().received.extend_from_slice(&peer.read_all());
                    }
                })
                .release();
            p.borrow_mut().push(peer.clone());
        })
        .release();
    let client = TcpSocket::new().unwrap();
    client
        .connect_to_address("127.0.0.1".parse().unwrap(), server.server_port().unwrap())
        .unwrap();

    // A std server writing to a kdnet socket, on command.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (write_tx, write_rx) = mpsc::channel::<(u8, u32)>();
    let writer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        for (seed, (delay, len)) in (0u64..).zip(write_rx) {
            std::thread::sleep(Duration::from_millis(u64::from(delay)));
            if stream
                .write_all(&support::pattern(len as usize, seed))
                .is_err()
            {
                return; // the case failed and dropped its socket
            }
        }
    });
    let downloaded = Rc::new(RefCell::new(Vec::new()));
    let reader = TcpSocket::new().unwrap();
    let (d, weak) = (downloaded.clone(), Rc::downgrade(&reader));
    reader
        .ready_read
        .connect(move |_| {
            if let Some(s) = weak.upgrade() {
                d.borrow_mut().extend_from_slice(&s.read_all());
            }
        })
        .release();
    reader
        .connect_to_address("127.0.0.1".parse().unwrap(), port)
        .unwrap();

    // An SSE server thread writing events on command.
    let sse_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sse_port = sse_listener.local_addr().unwrap().port();
    let (sse_tx, sse_rx) = mpsc::channel::<(u8, u8)>();
    let sse_server = std::thread::spawn(move || {
        let mut stream = support::accept_event_stream(&sse_listener);
        let mut next = 0u32;
        for (delay, n) in sse_rx {
            std::thread::sleep(Duration::from_millis(u64::from(delay)));
            let mut chunk = String::new();
            for _ in 0..n {
                chunk.push_str(&format!("data: {next}\n\n"));
                next += 1;
            }
            if stream.write_all(chunk.as_bytes()).is_err() {
                return; // the case failed and dropped its client
            }
        }
    });
    let sse = SseClient::new().unwrap();
    sse.set_auto_reconnect(false);
    let events = Rc::new(RefCell::new(Vec::<u32>::new()));
    let e = events.clone();
    sse.message_received
        .connect(move |event| e.borrow_mut().push(event.data().parse().unwrap()))
        .release();
    sse.connect(HttpRequest::get(&format!("http://127.0.0.1:{sse_port}/events")).unwrap());

    let remote_quits: RemoteQuits = Arc::default();
    let mut host = Host::new(&event_loop, level, free, qt);
    // Connected first (not part of the model: the script starts with a connected program).
    let started = Instant::now();
    while peers.borrow().is_empty()
        || client.state() != kdnet::network::SocketState::Connected
        || reader.state() != kdnet::network::SocketState::Connected
        || sse.ready_state() != kdnet::network::sse::ReadyState::Open
    {
        host.iterate(
            &mut event_loop,
            &world,
            &remote_quits,
            Some(Instant::now() + Duration::from_millis(50)),
        )?;
        if started.elapsed() > Duration::from_secs(10) {
            return Err("setup: the connections did not open".into());
        }
    }
    host.empty = 0;
    host.empty_in_a_row = 0;
    host.wakeups = 0;

    // Work items that may each bring one empty wake-up (a wake-up whose work a turn took before
    // its poll, or written for the host's own change).
    let mut may_wake_empty = 4u64;
    let remote_ran = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
    let mut remote_wanted = 0usize;
    // Counted by what the threads did, not by their ending: a thread that posted may end after
    // its closure ran, when nothing would wake the host any more.
    let mut remote_quits_wanted = 0usize;
    let mut threads = Vec::new();
    let mut download_wanted = Vec::new();
    let mut write_seed = 0u64;
    let mut server_seed = 0u64;
    let mut sse_wanted = 0u32;
    let mut nested_wanted = 0u32;
    let nested_done = Rc::new(std::cell::Cell::new(0u32));

    for (i, step) in steps.iter().enumerate() {
        may_wake_empty += 2;
        // A host's own action may bring one empty wake-up (a timer it starts makes the
        // descriptor readable, as `as_raw_fd` promises): a spin is empty wake-ups with no action.
        host.empty_in_a_row = 0;
        match *step {
            Step::Timer {
                interval_ms,
                single,
                fires,
                post_in_slot,
                spawn_ms,
            } => {
                let interval = Duration::from_millis(u64::from(interval_ms));
                start_timer(&world, interval, single, fires, post_in_slot, spawn_ms);
                host.check_woken_for(interval, Instant::now())?;
            }
            Step::Post { n, reposts } => {
                for _ in 0..n {
                    post_local(&world, reposts);
                }
            }
            Step::Remote { delay_ms, n } => {
                remote_wanted += usize::from(n);
                let (handle, ran) = (handle.clone(), remote_ran.clone());
                threads.push(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(u64::from(delay_ms)));
                    for k in 0..u64::from(n) {
                        let ran = ran.clone();
                        // Fails only once the case failed and dropped its loop.
                        let _ = handle.post(move || ran.lock().unwrap().push((i, k)));
                    }
                }));
            }
            Step::Quit(via) => match via {
                QuitVia::Host => event_loop.exit(new_quit(&world)),
                QuitVia::Posted => {
                    world.borrow_mut().quits_to_come += 1;
                    let (w, h) = (world.clone(), handle.clone());
                    event_loop.post(move || ask_quit(&w, &h));
                }
                QuitVia::Slot(ms) => {
                    world.borrow_mut().quits_to_come += 1;
                    let (w, h) = (world.clone(), handle.clone());
                    let delay = Duration::from_millis(u64::from(ms));
                    Timer::set_timeout(delay, move || ask_quit(&w, &h)).unwrap();
                    host.check_woken_for(delay, Instant::now())?;
                }
                QuitVia::Remote(ms) => {
                    let code = {
                        let mut w = world.borrow_mut();
                        w.next_code += 1;
                        w.next_code
                    };
                    remote_quits_wanted += 1;
                    let (h, asked) = (handle.clone(), remote_quits.clone());
                    threads.push(std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(u64::from(ms)));
                        asked.lock().unwrap().push((code, Instant::now()));
                        h.exit(code);
                    }));
                }
            },
            Step::TcpWrite { len, posted } => {
                let bytes = support::pattern(usize::from(len), 1000 + write_seed);
                write_seed += 1;
                world.borrow_mut().sent.extend_from_slice(&bytes);
                if posted {
                    let weak = Rc::downgrade(&client);
                    event_loop.post(move || {
                        weak.upgrade().unwrap().write(&bytes).unwrap();
                    });
                } else {
                    client.write(&bytes).unwrap();
                }
            }
            Step::ServerWrite { delay_ms, len } => {
                download_wanted.extend(support::pattern(len as usize, server_seed));
                server_seed += 1;
                write_tx.send((delay_ms, len)).unwrap();
            }
            Step::NestedWait { delay_ms } => {
                nested_wanted += 1;
                let (handle, waited) = (handle.clone(), nested_done.clone());
                event_loop.post(move || {
                    let answer = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let a = answer.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(u64::from(delay_ms)));
                        let _ = handle.post(move || a.store(true, Ordering::SeqCst));
                    });
                    let started = Instant::now();
                    while !answer.load(Ordering::SeqCst) && started.elapsed() < WATCHDOG {
                        kdnet::foundation::process_events(Some(WATCHDOG)).unwrap();
                    }
                    waited.set(waited.get() + u32::from(answer.load(Ordering::SeqCst)));
                });
            }
            Step::HostCodeWait {
                delay_ms,
                timer_ms,
                post,
            } => {
                let ran = Rc::new(std::cell::Cell::new(false));
                let (w, r) = (world.clone(), ran.clone());
                Timer::set_timeout(Duration::from_millis(u64::from(delay_ms)), move || {
                    if let Some(ms) = timer_ms {
                        let interval = Duration::from_millis(u64::from(ms));
                        start_timer(&w, interval, true, 1, false, None);
                    }
                    if post {
                        post_local(&w, 0);
                    }
                    r.set(true);
                })
                .unwrap();
                let began = Instant::now();
                while !ran.get() {
                    if began.elapsed() > WATCHDOG {
                        return Err("host code's wait in the loop never saw its timer".into());
                    }
                    kdnet::foundation::process_events(Some(WATCHDOG)).map_err(|e| e.to_string())?;
                }
                // The host sleeps for what it read before the wait (every host here does: the
                // Qt-shaped one by design, the others because a GUI's "about to block" hook ran
                // before the handler). A timer due before that, or a closure left queued, must
                // have made the descriptor readable (a millisecond of slack for the rounding).
                let returned = Instant::now();
                let slack = Duration::from_millis(1);
                if let Some(told) = host.told {
                    let sleeps_past = |due: Instant| told.is_none_or(|t| due + slack < t);
                    let timer_behind = timer_ms.is_some_and(|ms| {
                        sleeps_past(returned + Duration::from_millis(u64::from(ms)))
                    });
                    let post_behind = post && sleeps_past(returned);
                    if (timer_behind || post_behind) && !is_readable(host.fd) {
                        return Err(format!(
                            "host code's wait left a timer of {timer_ms:?} ms / a post ({post}) \
                             and the host asleep (it was told {:?})",
                            told.map(|t| t.saturating_duration_since(returned))
                        ));
                    }
                }
            }
            Step::Sse { delay_ms, n } => {
                sse_wanted += u32::from(n);
                sse_tx.send((delay_ms, n)).unwrap();
            }
            Step::Pause { ms } => {
                let until = Instant::now() + Duration::from_millis(u64::from(ms));
                while Instant::now() < until {
                    host.iterate(&mut event_loop, &world, &remote_quits, Some(until))?;
                }
            }
        }
        // One iteration after every step, as a GUI returns to its loop after a callback.
        host.iterate(&mut event_loop, &world, &remote_quits, Some(Instant::now()))?;
    }

    // Run until everything the script started is done.
    let done = |world: &World| {
        world
            .timers
            .iter()
            .all(|(_, l)| l.borrow().fires.len() as u32 >= l.borrow().wanted)
            && world.local_ran.len() as u64 == world.local_posted
            && world.received.len() >= world.sent.len()
            && world.quits_to_come == 0
            && all_quits(world, &remote_quits)
                .iter()
                .all(|(_, at)| world.takes.iter().any(|(_, taken)| taken > at))
            && downloaded.borrow().len() >= download_wanted.len()
            && events.borrow().len() as u32 >= sse_wanted
            && nested_done.get() >= nested_wanted
            && remote_ran.lock().unwrap().len() >= remote_wanted
            && remote_quits.lock().unwrap().len() == remote_quits_wanted
    };
    let finishing = Instant::now();
    loop {
        if done(&world.borrow()) {
            break;
        }
        if finishing.elapsed() > Duration::from_secs(20) {
            let w = world.borrow();
            return Err(format!(
                "not done after 20 s: timers {:?}, local posts {}/{}, bytes {}/{}, download {}/{}, events {}/{sse_wanted}, remote {}/{remote_wanted}, nested waits {}/{nested_wanted}, quits asked {:?} taken {:?}",
                w.timers
                    .iter()
                    .map(|(_, l)| (l.borrow().fires.len(), l.borrow().wanted))
                    .collect::<Vec<_>>(),
                w.local_ran.len(),
                w.local_posted,
                w.received.len(),
                w.sent.len(),
                downloaded.borrow().len(),
                download_wanted.len(),
                events.borrow().len(),
                remote_ran.lock().unwrap().len(),
                nested_done.get(),
                all_quits(&w, &remote_quits),
                w.takes
            ));
        }
        host.iterate(&mut event_loop, &world, &remote_quits, None)?;
    }
    for t in threads {
        t.join().unwrap();
    }

    // The reference.
    let w = world.borrow();
    for (index, (_, log)) in w.timers.iter().enumerate() {
        check_timer(index, &log.borrow())?;
        STATS[FIRES].fetch_add(log.borrow().fires.len() as u64, Ordering::Relaxed);
    }
    let expected: Vec<u64> = (1..=w.local_posted).collect();
    if w.local_ran != expected {
        return Err(format!(
            "closures posted on the loop's thread ran as {:?}",
            w.local_ran
        ));
    }
    let ran = remote_ran.lock().unwrap();
    let mut sorted = ran.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != ran.len() || ran.len() != remote_wanted {
        return Err(format!(
            "remote closures ran {} times for {remote_wanted} posted",
            ran.len()
        ));
    }
    for thread in 0..steps.len() {
        let mine: Vec<u64> = ran
            .iter()
            .filter(|(t, _)| *t == thread)
            .map(|(_, k)| *k)
            .collect();
        if !mine.windows(2).all(|p| p[0] < p[1]) {
            return Err(format!("one thread's closures ran out of order: {mine:?}"));
        }
    }
    STATS[POSTS].fetch_add(
        w.local_ran.len() as u64 + ran.len() as u64,
        Ordering::Relaxed,
    );
    if w.received != w.sent {
        return Err(format!(
            "the server's peer received {} bytes, not the {} sent in order",
            w.received.len(),
            w.sent.len()
        ));
    }
    if *downloaded.borrow() != download_wanted {
        return Err(format!(
            "the kdnet socket received {} bytes, not the {} written in order",
            downloaded.borrow().len(),
            download_wanted.len()
        ));
    }
    let wanted_events: Vec<u32> = (0..sse_wanted).collect();
    if *events.borrow() != wanted_events {
        return Err(format!("SSE events arrived as {:?}", events.borrow()));
    }
    STATS[BYTES].fetch_add(
        (w.sent.len() + download_wanted.len()) as u64,
        Ordering::Relaxed,
    );
    STATS[EVENTS].fetch_add(u64::from(sse_wanted), Ordering::Relaxed);
    drop(w);
    drop(ran);

    // Quiet at the end: nothing running, nothing due, the descriptor not readable.
    for _ in 0..3 {
        event_loop
            .process_events(Some(Duration::ZERO))
            .map_err(|e| e.to_string())?;
    }
    if let Some(code) = event_loop.take_exit_request() {
        return Err(format!("an exit ({code}) was still pending at the end"));
    }
    if let Some(next) = event_loop.next_timeout() {
        return Err(format!("with nothing running, next_timeout is {next:?}"));
    }
    if is_readable(event_loop.as_raw_fd()) {
        return Err("with nothing pending, the descriptor stays readable".into());
    }
    let remote_items = (remote_wanted + steps.len()) as u64;
    STATS[WAKEUPS].fetch_add(host.wakeups, Ordering::Relaxed);
    STATS[EMPTY].fetch_add(host.empty, Ordering::Relaxed);
    if host.empty > may_wake_empty + remote_items {
        return Err(format!(
            "{} of {} wake-ups found nothing to do (at most {} allowed)",
            host.empty,
            host.wakeups,
            may_wake_empty + remote_items
        ));
    }
    drop((write_tx, sse_tx));
    drop(sse);
    writer.join().unwrap();
    sse_server.join().unwrap();
    Ok(())
}

#[test]
fn an_embedding_host_runs_gui_scripts_as_run_would() {
    let started = Instant::now();
    let result = proptest::test_runner::TestRunner::new(config(32)).run(
        &(
            proptest::collection::vec(step(), 1..14),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        |(steps, level, free, qt)| {
            run_case(&steps, level, free, qt).map_err(TestCaseError::fail)?;
            Ok(())
        },
    );
    finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
