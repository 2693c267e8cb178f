//! Workload 5: signals and the loop.
//!
//! * Emit cost: a kdnet `Signal<u64>` with 1, 4 and 16 connected slots against a plain
//!   `Vec<Box<dyn FnMut(&u64)>>` holding the same closures, called in a loop. Every slot does the
//!   same tiny work: `acc += black_box(arg)` (wrapping) into a captured `Rc<Cell<u64>>`. Figure:
//!   ns per slot call = elapsed / (emits × slots), 16 M slot calls per sample; the accumulated sum
//!   is checked against the closed form.
//! * Cross-thread post: a poster thread hands a closure to a loop running on the main thread —
//!   kdnet `LoopHandle::post` to `EventLoop::run`, tokio `Handle::spawn` (async block) to a
//!   current-thread runtime (`enable_all`) inside `block_on`. One at a time: the poster stamps an
//!   `Instant`, posts, the closure/task sends `stamp.elapsed()` back on a std channel as its first
//!   act, and the poster waits for it before the next post. `one-way` is that elapsed time (post
//!   call → execution start), `RTT` is the poster's time until it has the reply. Median over
//!   10 000 posts (after 200 warm-up posts) per run, median over runs. `burst`: 100 000 posts in a
//!   row, each closure/task bumping a static counter; posts/s = 100 000 / (time from before the
//!   first post until the last one has run).
//! * The same latency pinned: the loop's thread on CPU 0 and the poster on CPU 1
//!   (`sched_setaffinity`). Left to the scheduler, a post either wakes the loop on the other CPU
//!   or preempts the poster on its own, and which of the two a run's median lands in changes from
//!   run to run (one-way ~3 µs against ~6 µs on one CPU, ~12–24 µs across CPUs on these VMs); pinned,
//!   every post takes the cross-CPU path, so the rows compare like with like.
//!
//! kdnet and tokio runs alternate within each repetition, so a load change on the shared machine
//! hits both. `w5_signals profile <emit|post|burst|post-tokio> [n]` runs one part, for callgrind.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kdnet::{EventLoop, Signal};
use kdnet_compare::{Better, Row, median, reps};

/// Slot calls per emit sample (whatever the slot count).
const SLOT_CALLS: u64 = 16 * 1024 * 1024;
const LATENCY_POSTS: usize = 10_000;
const LATENCY_WARMUP: usize = 200;
const BURST_POSTS: u64 = 100_000;

/// Where the two threads of a post run run: left to the scheduler, or pinned to CPUs 0 and 1.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    Free,
    TwoCpus,
}

/// The calling thread's CPU set (to be restored after a pinned run).
fn cpu_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, valid all zero; the call writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(rc, 0, "sched_getaffinity");
        set
    }
}

fn set_cpu_set(set: &libc::cpu_set_t) {
    // SAFETY: reads `set`, a valid cpu_set_t, for its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(rc, 0, "sched_setaffinity");
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit array, valid all zero; CPU_SET writes bit `cpu` < 1024.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_cpu_set(&set);
}

/// Whether CPUs 0 and 1 are both available to this process.
fn two_cpus() -> bool {
    let set = cpu_set();
    // SAFETY: CPU_ISSET reads bit 0 or 1 of a valid set.
    unsafe { libc::CPU_ISSET(0, &set) && libc::CPU_ISSET(1, &set) }
}

// ----- emit -----

type BoxedSlot = Box<dyn FnMut(&u64)>;

/// The closed form of what `slots` slots accumulate over args 0..emits.
fn expected_sum(emits: u64, slots: u64) -> u64 {
    (emits.wrapping_mul(emits.wrapping_sub(1)) / 2).wrapping_mul(slots)
}

fn slot(acc: &Rc<Cell<u64>>) -> impl FnMut(&u64) + 'static {
    let acc = Rc::clone(acc);
    move |&x: &u64| acc.set(acc.get().wrapping_add(black_box(x)))
}

/// ns per slot call of a kdnet `Signal` with `slots` slots. Not inlined (nor is `emit_boxed`), so
/// each timed loop gets its own register allocation instead of sharing `main`'s.
#[inline(never)]
fn emit_kdnet(slots: u64) -> f64 {
    let emits = SLOT_CALLS / slots;
    let acc = Rc::new(Cell::new(0u64));
    let signal: Signal<u64> = Signal::new();
    for _ in 0..slots {
        signal.connect(slot(&acc)).release();
    }
    let signal = black_box(&signal);
    let start = Instant::now();
    for i in 0..emits {
        signal.emit(black_box(&i));
    }
    let ns = start.elapsed().as_nanos() as f64;
    assert_eq!(
        acc.get(),
        expected_sum(emits, slots),
        "kdnet Signal: wrong sum"
    );
    ns / (emits * slots) as f64
}

/// ns per call of the same closures in a `Vec<Box<dyn FnMut(&u64)>>`.
#[inline(never)]
fn emit_boxed(slots: u64) -> f64 {
    let emits = SLOT_CALLS / slots;
    let acc = Rc::new(Cell::new(0u64));
    let mut closures: Vec<BoxedSlot> = Vec::new();
    for _ in 0..slots {
        closures.push(Box::new(slot(&acc)));
    }
    let closures = black_box(&mut closures);
    let start = Instant::now();
    for i in 0..emits {
        let arg = black_box(&i);
        for f in closures.iter_mut() {
            f(arg);
        }
    }
    let ns = start.elapsed().as_nanos() as f64;
    assert_eq!(
        acc.get(),
        expected_sum(emits, slots),
        "boxed closures: wrong sum"
    );
    ns / (emits * slots) as f64
}

fn emit_rows() {
    for slots in [1u64, 4, 16] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..reps() {
            ours.push(emit_kdnet(slots));
            theirs.push(emit_boxed(slots));
        }
        let workload = format!("5 emit {slots} slot{}", if slots == 1 { "" } else { "s" });
        let unit = "ns/slot call";
        Row::new(&workload, "kdnet", median(&mut ours), unit, Better::Lower).emit();
        Row::new(
            &workload,
            "Vec<Box<dyn FnMut>>",
            median(&mut theirs),
            unit,
            Better::Lower,
        )
        .emit();
    }
}

// ----- cross-thread post -----

/// How a poster thread hands a closure to the loop under test.
trait Poster: Send + 'static {
    fn post(&self, f: Box<dyn FnOnce() + Send>);
}

struct KdnetPoster(kdnet::LoopHandle);

impl Poster for KdnetPoster {
    fn post(&self, f: Box<dyn FnOnce() + Send>) {
        self.0.post(f).expect("kdnet loop alive");
    }
}

struct TokioPoster(tokio::runtime::Handle);

impl Poster for TokioPoster {
    fn post(&self, f: Box<dyn FnOnce() + Send>) {
        // The JoinHandle is dropped: fire and forget, like a kdnet post.
        drop(self.0.spawn(async move { f() }));
    }
}

/// Median one-way latency and RTT in µs over `LATENCY_POSTS` posts, one at a time.
fn latency_run(poster: &impl Poster) -> (f64, f64) {
    let (tx, rx) = mpsc::channel::<Duration>();
    let mut one_way = Vec::with_capacity(LATENCY_POSTS);
    let mut rtt = Vec::with_capacity(LATENCY_POSTS);
    for i in 0..LATENCY_WARMUP + LATENCY_POSTS {
        let tx = tx.clone();
        let stamp = Instant::now();
        poster.post(Box::new(move || {
            tx.send(stamp.elapsed()).expect("poster waiting");
        }));
        let started = rx.recv().expect("posted closure ran");
        let round_trip = stamp.elapsed();
        if i >= LATENCY_WARMUP {
            one_way.push(started.as_secs_f64() * 1e6);
            rtt.push(round_trip.as_secs_f64() * 1e6);
        }
    }
    (median(&mut one_way), median(&mut rtt))
}

static BURST_COUNT: AtomicU64 = AtomicU64::new(0);
static BURST_DONE: (Mutex<Option<Duration>>, Condvar) = (Mutex::new(None), Condvar::new());

/// Posts/s for `BURST_POSTS` posts in a row (until the last one has run).
fn burst_run(poster: &impl Poster) -> f64 {
    BURST_COUNT.store(0, Ordering::SeqCst);
    *BURST_DONE.0.lock().expect("lock") = None;
    let start = Instant::now();
    for _ in 0..BURST_POSTS {
        poster.post(Box::new(move || {
            if BURST_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == BURST_POSTS {
                *BURST_DONE.0.lock().expect("lock") = Some(start.elapsed());
                BURST_DONE.1.notify_all();
            }
        }));
    }
    let mut done = BURST_DONE.0.lock().expect("lock");
    let elapsed = loop {
        if let Some(elapsed) = *done {
            break elapsed;
        }
        done = BURST_DONE.1.wait(done).expect("lock");
    };
    BURST_POSTS as f64 / elapsed.as_secs_f64()
}

#[derive(Clone, Copy, Default)]
struct PostFigures {
    one_way_us: f64,
    rtt_us: f64,
    posts_per_sec: f64,
}

/// Runs the latency and burst measurements from a poster thread against kdnet's loop on this thread.
fn post_kdnet(latency: bool, burst: bool, placement: Placement) -> PostFigures {
    let restore = cpu_set();
    if placement == Placement::TwoCpus {
        pin_to(0);
    }
    let mut event_loop = EventLoop::new().expect("one loop on this thread");
    let handle = event_loop.handle();
    let poster = thread::spawn(move || {
        if placement == Placement::TwoCpus {
            pin_to(1);
        }
        let p = KdnetPoster(handle.clone());
        let mut figures = PostFigures::default();
        if latency {
            (figures.one_way_us, figures.rtt_us) = latency_run(&p);
        }
        if burst {
            figures.posts_per_sec = burst_run(&p);
        }
        handle.quit();
        figures
    });
    assert_eq!(event_loop.run(), 0);
    let figures = poster.join().expect("poster thread");
    set_cpu_set(&restore);
    figures
}

/// The same against a tokio current-thread runtime driven by `block_on` on this thread.
fn post_tokio(latency: bool, burst: bool, placement: Placement) -> PostFigures {
    let restore = cpu_set();
    if placement == Placement::TwoCpus {
        pin_to(0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = runtime.handle().clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let poster = thread::spawn(move || {
        if placement == Placement::TwoCpus {
            pin_to(1);
        }
        let p = TokioPoster(handle);
        let mut figures = PostFigures::default();
        if latency {
            (figures.one_way_us, figures.rtt_us) = latency_run(&p);
        }
        if burst {
            figures.posts_per_sec = burst_run(&p);
        }
        done_tx.send(()).expect("runtime waiting");
        figures
    });
    runtime.block_on(async { done_rx.await.expect("poster finished") });
    let figures = poster.join().expect("poster thread");
    set_cpu_set(&restore);
    figures
}

fn post_rows() {
    let pinned = two_cpus();
    // [kdnet, tokio] × [one-way, RTT, burst, pinned one-way, pinned RTT]
    let mut samples: [[Vec<f64>; 5]; 2] = Default::default();
    for _ in 0..reps() {
        for (which, run) in [
            post_kdnet as fn(bool, bool, Placement) -> PostFigures,
            post_tokio,
        ]
        .iter()
        .enumerate()
        {
            let f = run(true, true, Placement::Free);
            samples[which][0].push(f.one_way_us);
            samples[which][1].push(f.rtt_us);
            samples[which][2].push(f.posts_per_sec);
        }
        if pinned {
            for (which, run) in [
                post_kdnet as fn(bool, bool, Placement) -> PostFigures,
                post_tokio,
            ]
            .iter()
            .enumerate()
            {
                let f = run(true, false, Placement::TwoCpus);
                samples[which][3].push(f.one_way_us);
                samples[which][4].push(f.rtt_us);
            }
        }
    }
    let names = ["kdnet", "tokio current-thread spawn"];
    for (which, name) in names.iter().enumerate() {
        let [one_way, rtt, burst, pinned_one_way, pinned_rtt] = &mut samples[which];
        Row::new(
            "5 post one-way latency",
            name,
            median(one_way),
            "µs",
            Better::Lower,
        )
        .emit();
        Row::new("5 post RTT", name, median(rtt), "µs", Better::Lower).emit();
        Row::new(
            "5 post burst 100k",
            name,
            median(burst),
            "posts/s",
            Better::Higher,
        )
        .emit();
        if pinned {
            Row::new(
                "5 post one-way, pinned to 2 CPUs",
                name,
                median(pinned_one_way),
                "µs",
                Better::Lower,
            )
            .emit();
            Row::new(
                "5 post RTT, pinned to 2 CPUs",
                name,
                median(pinned_rtt),
                "µs",
                Better::Lower,
            )
            .emit();
        }
    }
}

/// `profile emit [slots]`, `profile post|burst [runs]` (kdnet), `profile post-tokio [runs]`:
/// one part only, no rows.
fn profile(args: &[String]) {
    let n: u64 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    match args.first().map(String::as_str) {
        Some("emit") => {
            // `n` is the slot count here: the same loop as the rows (16 M slot calls).
            black_box(emit_kdnet(n.max(1)));
        }
        Some("post") => {
            for _ in 0..n {
                post_kdnet(true, false, Placement::Free);
            }
        }
        Some("post-tokio") => {
            for _ in 0..n {
                post_tokio(true, false, Placement::Free);
            }
        }
        Some("burst") => {
            for _ in 0..n {
                post_kdnet(false, true, Placement::Free);
            }
        }
        other => panic!("profile: unknown part {other:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("profile") {
        return profile(&args[1..]);
    }
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    if wanted("emit") {
        emit_rows();
    }
    if wanted("post") {
        post_rows();
    }
}
