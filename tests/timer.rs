//! Timer and the managed timer helpers (KDFoundation T1-T11, A6, A7, A13 and kdnet's additions).
//!
//! Timing assertions only use bounds the implementation guarantees (a timer never fires before its
//! deadline) or generous upper bounds: the machine running the tests may be slow and noisy.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use kdnet::{EventLoop, LoopError, Timer};

const SAFETY_EXIT: i32 = 99;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A timer that makes `run()` return [`SAFETY_EXIT`] if the test has not finished after `secs`.
fn safety_timer(event_loop: &EventLoop, secs: u64) -> Rc<Timer> {
    let handle = event_loop.handle();
    Timer::create_timeout(Duration::from_secs(secs), move || handle.exit(SAFETY_EXIT)).unwrap()
}

/// Turns the loop for about `duration` (the loop is otherwise idle).
fn spin_for(event_loop: &mut EventLoop, duration: Duration) {
    let end = Instant::now() + duration;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        event_loop.process_events(Some(left)).unwrap();
    }
}

fn counting_slot(timer: &Timer) -> Rc<Cell<u32>> {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    timer.timeout.connect(move |_| c.set(c.get() + 1)).release();
    count
}

#[test]
fn t1_new_timer_is_stopped_periodic_with_zero_interval() {
    let event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    assert!(!timer.running.get());
    assert_eq!(timer.interval.get(), Duration::ZERO);
    assert!(!timer.single_shot.get());
    assert_eq!(timer.remaining(), None);
    assert_eq!(event_loop.timer_count(), 1);
    drop(timer);
    assert_eq!(event_loop.timer_count(), 0);
}

#[test]
fn t2_properties_round_trip_and_running_starts_and_stops() {
    let _event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(1500));
    timer.single_shot.set(true);
    assert_eq!(timer.interval.get(), ms(1500));
    assert!(timer.single_shot.get());

    timer.running.set(true);
    let left = timer.remaining().expect("running");
    assert!(left > ms(1000) && left <= ms(1500), "{left:?}");
    timer.running.set(false);
    assert_eq!(timer.remaining(), None);
    assert!(format!("{timer:?}").contains("running: false"));
}

#[test]
fn t3_t4_single_shot_fires_once_and_stops() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(20));
    let running_in_slot = Rc::new(Cell::new(true));
    let (t, r) = (Rc::downgrade(&timer), running_in_slot.clone());
    let handle = event_loop.handle();
    timer
        .timeout
        .connect(move |_| {
            r.set(t.upgrade().unwrap().running.get());
            handle.quit();
        })
        .release();
    let count = counting_slot(&timer);
    let started = Instant::now();
    timer.start();
    assert!(timer.running.get());
    assert_eq!(event_loop.run(), 0);
    assert!(started.elapsed() >= ms(20), "fired early");
    assert!(
        !running_in_slot.get(),
        "running is false before timeout is emitted"
    );
    assert!(!timer.running.get());

    spin_for(&mut event_loop, ms(100));
    assert_eq!(count.get(), 1, "a single-shot timer fires once");
}

#[test]
fn t5_periodic_timer_fires_repeatedly_and_never_early() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(15));
    let fired_at = Rc::new(RefCell::new(Vec::new()));
    let (f, handle) = (fired_at.clone(), event_loop.handle());
    timer
        .timeout
        .connect(move |_| {
            f.borrow_mut().push(Instant::now());
            if f.borrow().len() == 5 {
                handle.quit();
            }
        })
        .release();
    let started = Instant::now();
    timer.start();
    assert_eq!(event_loop.run(), 0);
    assert!(timer.running.get(), "a periodic timer keeps running");
    for (n, at) in fired_at.borrow().iter().enumerate() {
        let earliest = started + ms(15) * (n as u32 + 1);
        assert!(*at >= earliest, "fire {n} came early");
    }
}

#[test]
fn t6_create_timeout_is_a_running_single_shot_timer() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let handle = event_loop.handle();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let timer = Timer::create_timeout(ms(50), move || {
        c.set(c.get() + 1);
        handle.quit();
    })
    .unwrap();
    assert!(timer.running.get());
    assert!(timer.single_shot.get());
    assert_eq!(timer.interval.get(), ms(50));
    assert_eq!(event_loop.run(), 0);
    assert!(!timer.running.get());
    spin_for(&mut event_loop, ms(80));
    assert_eq!(count.get(), 1);
}

#[test]
fn t7_create_recurring_fires_until_stopped() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let count = Rc::new(Cell::new(0));
    let (c, handle) = (count.clone(), event_loop.handle());
    let timer = Timer::create_recurring(ms(5), move || {
        c.set(c.get() + 1);
        if c.get() == 3 {
            handle.quit();
        }
    })
    .unwrap();
    assert!(!timer.single_shot.get());
    assert_eq!(event_loop.run(), 0);
    timer.running.set(false);
    let at_stop = count.get();
    spin_for(&mut event_loop, ms(50));
    assert_eq!(count.get(), at_stop, "no timeout after running = false");
    assert!(at_stop >= 3);
}

#[test]
fn t8_set_timeout_is_active_until_it_fires() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let handle = event_loop.handle();
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    let id = Timer::set_timeout(ms(20), move || {
        f.set(f.get() + 1);
        handle.quit();
    })
    .unwrap();
    assert!(id.as_u64() > 0);
    assert!(Timer::is_timer_active(id));
    assert_eq!(event_loop.run(), 0);
    assert_eq!(fired.get(), 1);
    assert!(!Timer::is_timer_active(id));
    assert!(!Timer::cancel_timer(id), "already fired");
}

#[test]
fn t9_set_recurring_runs_until_cancelled() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let count = Rc::new(Cell::new(0));
    let (c, handle) = (count.clone(), event_loop.handle());
    let id = Timer::set_recurring(ms(5), move || {
        c.set(c.get() + 1);
        if c.get() == 3 {
            handle.quit();
        }
    })
    .unwrap();
    assert!(Timer::is_timer_active(id));
    assert_eq!(event_loop.run(), 0);
    assert!(Timer::is_timer_active(id), "still recurring");
    assert!(Timer::cancel_timer(id));
    assert!(!Timer::is_timer_active(id));
    let at_cancel = count.get();
    spin_for(&mut event_loop, ms(40));
    assert_eq!(count.get(), at_cancel);
}

#[test]
fn t10_cancel_timer_before_it_fires() {
    let mut event_loop = EventLoop::new().unwrap();
    let id = Timer::set_timeout(ms(10), || panic!("cancelled timer fired")).unwrap();
    let other = Timer::set_timeout(ms(10), || {}).unwrap();
    assert_ne!(id, other);
    assert!(Timer::cancel_timer(id));
    assert!(!Timer::cancel_timer(id), "second cancel");
    assert!(!Timer::is_timer_active(id));
    spin_for(&mut event_loop, ms(40));
    assert!(!Timer::is_timer_active(other), "the other one fired");
}

#[test]
fn a_recurring_callback_may_cancel_itself() {
    let mut event_loop = EventLoop::new().unwrap();
    let count = Rc::new(Cell::new(0));
    let own_id = Rc::new(Cell::new(None));
    let (c, own) = (count.clone(), own_id.clone());
    let id = Timer::set_recurring(ms(1), move || {
        c.set(c.get() + 1);
        if c.get() == 2 {
            assert!(Timer::cancel_timer(own.get().unwrap()));
        }
    })
    .unwrap();
    own_id.set(Some(id));
    spin_for(&mut event_loop, ms(60));
    assert_eq!(count.get(), 2);
    assert!(!Timer::is_timer_active(id));
}

#[test]
fn cancel_all_timers_cancels_only_managed_timers() {
    let mut event_loop = EventLoop::new().unwrap();
    Timer::set_timeout(ms(5), || panic!("cancelled")).unwrap();
    Timer::set_recurring(ms(5), || panic!("cancelled")).unwrap();
    let object_timer = Timer::new().unwrap();
    object_timer.interval.set(ms(5));
    let count = counting_slot(&object_timer);
    object_timer.start();
    assert_eq!(event_loop.timer_count(), 3);
    assert_eq!(Timer::cancel_all_timers(), 2);
    assert_eq!(Timer::cancel_all_timers(), 0);
    assert_eq!(event_loop.timer_count(), 1);
    spin_for(&mut event_loop, ms(40));
    assert!(count.get() >= 1, "Timer objects are not managed timers");
}

#[test]
fn t11_timers_fire_in_deadline_order() {
    // Started in an order that differs from their deadlines, with wide gaps so a slow machine
    // cannot reorder them; then all become due before one turn handles them together.
    let mut event_loop = EventLoop::new().unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    let mut timers = Vec::new();
    for delay in [300, 100, 200] {
        let o = order.clone();
        timers.push(Timer::create_timeout(ms(delay), move || o.borrow_mut().push(delay)).unwrap());
    }
    for delay in [250, 50, 150] {
        let o = order.clone();
        Timer::set_timeout(ms(delay), move || o.borrow_mut().push(delay)).unwrap();
    }
    thread::sleep(ms(350));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(*order.borrow(), [50, 100, 150, 200, 250, 300]);
}

#[test]
fn a7_changing_the_interval_restarts_the_countdown() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(300));
    let fired_at = Rc::new(Cell::new(None));
    let (f, handle) = (fired_at.clone(), event_loop.handle());
    timer
        .timeout
        .connect(move |_| {
            f.set(Some(Instant::now()));
            handle.quit();
        })
        .release();
    let started = Instant::now();
    timer.start();
    let changed_at = Rc::new(Cell::new(None));
    let (t, c) = (Rc::downgrade(&timer), changed_at.clone());
    Timer::set_timeout(ms(200), move || {
        c.set(Some(Instant::now()));
        t.upgrade().unwrap().interval.set(ms(250));
    })
    .unwrap();
    assert_eq!(event_loop.run(), 0);
    let fired = fired_at.get().unwrap();
    let changed = changed_at
        .get()
        .expect("the interval changed before the timer fired");
    assert!(
        fired >= changed + ms(250),
        "countdown restarted at the change"
    );
    assert!(fired >= started + ms(300));
}

#[test]
fn start_restarts_a_running_timer_but_setting_running_again_does_not() {
    let _event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(1000));
    timer.start();
    thread::sleep(ms(30));
    let before = timer.remaining().unwrap();
    timer.running.set(true); // equal value: the property ignores it
    let after = timer.remaining().unwrap();
    assert!(
        after <= before,
        "running = true on a running timer must not restart it"
    );

    timer.start(); // QTimer::start semantics
    let restarted = timer.remaining().unwrap();
    assert!(restarted > before, "start() restarts the countdown");
}

#[test]
fn stop_cancels_a_pending_timeout() {
    let mut event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(10));
    let count = counting_slot(&timer);
    timer.start();
    timer.stop();
    spin_for(&mut event_loop, ms(50));
    assert_eq!(count.get(), 0);
    assert!(!timer.running.get());
}

#[test]
fn a_single_shot_slot_may_restart_its_timer() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(5));
    let count = Rc::new(Cell::new(0));
    let (c, t, handle) = (count.clone(), Rc::downgrade(&timer), event_loop.handle());
    timer
        .timeout
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() < 3 {
                t.upgrade().unwrap().start();
            } else {
                handle.quit();
            }
        })
        .release();
    timer.start();
    assert_eq!(event_loop.run(), 0);
    assert_eq!(count.get(), 3);
    assert!(!timer.running.get());
}

#[test]
fn zero_interval_timer_fires_on_the_next_turn_once_per_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    let count = counting_slot(&timer);
    timer.start(); // interval zero, periodic
    assert_eq!(count.get(), 0, "never synchronously");
    assert_eq!(event_loop.next_timeout(), Some(Duration::ZERO));
    let started = Instant::now();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(count.get(), 1);
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        count.get(),
        2,
        "once per turn, not in a loop within one turn"
    );
    // A blocking process_events must not block either: the timer is due.
    event_loop.process_events(None).unwrap();
    assert_eq!(count.get(), 3);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_periodic_timer_that_falls_behind_does_not_fire_a_burst() {
    let mut event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(50));
    let count = counting_slot(&timer);
    timer.start();
    thread::sleep(ms(400)); // about 8 periods missed
    let started = Instant::now();
    for _ in 0..3 {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    let elapsed = started.elapsed();
    // At most the one coalesced tick plus the periods that really passed meanwhile.
    let allowed = 1 + (elapsed.as_millis() / 50) as u32;
    assert!(count.get() >= 1);
    assert!(
        count.get() <= allowed,
        "{} timeouts in {elapsed:?} after falling behind",
        count.get()
    );
    // Re-aligned to now: the next tick is about one interval away, not overdue.
    let next = timer.remaining().unwrap();
    assert!(next > Duration::ZERO || elapsed >= ms(50), "{next:?}");
}

#[test]
fn a_slot_may_drop_its_own_timer() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let holder: Rc<RefCell<Option<Rc<Timer>>>> = Rc::default();
    let count = Rc::new(Cell::new(0));
    let (h, c, handle) = (holder.clone(), count.clone(), event_loop.handle());
    let timer = Timer::create_recurring(ms(5), move || {
        c.set(c.get() + 1);
        h.borrow_mut().take();
        handle.quit();
    })
    .unwrap();
    let weak = Rc::downgrade(&timer);
    *holder.borrow_mut() = Some(timer);
    let timers_before = event_loop.timer_count();
    assert_eq!(event_loop.run(), 0);
    assert!(weak.upgrade().is_none(), "the timer is gone after its emit");
    assert_eq!(event_loop.timer_count(), timers_before - 1);
    spin_for(&mut event_loop, ms(30));
    assert_eq!(count.get(), 1);
}

#[test]
fn a_timer_dropped_by_a_timer_due_in_the_same_turn_does_not_fire() {
    let mut event_loop = EventLoop::new().unwrap();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let victim = Timer::create_recurring(ms(20), move || c.set(c.get() + 1)).unwrap();
    let weak = Rc::downgrade(&victim);
    let holder = Rc::new(RefCell::new(Some(victim)));
    let h = holder.clone();
    Timer::set_timeout(ms(1), move || drop(h.borrow_mut().take())).unwrap();
    let timers_before = event_loop.timer_count();
    // Both deadlines pass before the loop looks: they are due in the same turn.
    thread::sleep(ms(60));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(weak.upgrade().is_none(), "the dropped timer is gone");
    assert_eq!(event_loop.timer_count(), timers_before - 2);
    spin_for(&mut event_loop, ms(60));
    assert_eq!(count.get(), 0, "the dropped timer fired");
}

#[test]
fn a_timer_re_armed_by_a_timer_due_in_the_same_turn_fires_at_its_new_deadline() {
    let mut event_loop = EventLoop::new().unwrap();
    let victim = Timer::new().unwrap();
    victim.single_shot.set(true);
    let fired_at = Rc::new(RefCell::new(Vec::new()));
    let f = fired_at.clone();
    victim
        .timeout
        .connect(move |_| f.borrow_mut().push(Instant::now()))
        .release();
    victim.start_with(ms(20));
    let rearmed_at = Rc::new(Cell::new(None));
    let (v, r) = (victim.clone(), rearmed_at.clone());
    Timer::set_timeout(ms(1), move || {
        r.set(Some(Instant::now()));
        v.start_with(ms(100));
    })
    .unwrap();
    thread::sleep(ms(60));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    let rearmed_at = rearmed_at.get().expect("the re-arming timer ran");
    assert!(fired_at.borrow().is_empty(), "fired at its old deadline");
    assert!(victim.running.get());
    spin_for(&mut event_loop, ms(300));
    let fired_at = fired_at.borrow();
    assert_eq!(fired_at.len(), 1, "fires once, at its new deadline");
    assert!(fired_at[0] >= rearmed_at + ms(100), "fired early");
}

#[test]
fn a13_a_timer_fires_on_the_thread_that_created_it() {
    let worker = thread::spawn(|| {
        let mut event_loop = EventLoop::new().unwrap();
        let _safety = safety_timer(&event_loop, 5);
        let fired_on = Rc::new(Cell::new(None));
        let (f, handle) = (fired_on.clone(), event_loop.handle());
        let _timer = Timer::create_timeout(ms(5), move || {
            f.set(Some(thread::current().id()));
            handle.quit();
        })
        .unwrap();
        assert_eq!(event_loop.run(), 0);
        (fired_on.get(), thread::current().id())
    });
    let (fired_on, worker_id) = worker.join().unwrap();
    assert_eq!(fired_on, Some(worker_id));
}

#[test]
fn timers_need_a_loop_on_the_current_thread() {
    thread::spawn(|| {
        assert!(matches!(Timer::new(), Err(LoopError::NoEventLoop)));
        assert!(matches!(
            Timer::create_timeout(ms(1), || {}),
            Err(LoopError::NoEventLoop)
        ));
        assert!(matches!(
            Timer::create_recurring(ms(1), || {}),
            Err(LoopError::NoEventLoop)
        ));
        assert!(matches!(
            Timer::set_timeout(ms(1), || {}),
            Err(LoopError::NoEventLoop)
        ));
        assert!(matches!(
            Timer::set_recurring(ms(1), || {}),
            Err(LoopError::NoEventLoop)
        ));
        assert_eq!(Timer::cancel_all_timers(), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn managed_timer_ids_belong_to_their_loop() {
    // Both loops make their first managed timer; an id from one loop must never name (or cancel)
    // the other loop's timer.
    let _event_loop = EventLoop::new().unwrap();
    let id = Timer::set_timeout(Duration::from_secs(60), || {}).unwrap();
    let (same_id, seen_elsewhere, own_still_active) = thread::spawn(move || {
        let _other = EventLoop::new().unwrap();
        let own = Timer::set_timeout(Duration::from_secs(60), || {}).unwrap();
        let seen = (Timer::is_timer_active(id), Timer::cancel_timer(id));
        (own == id, seen, Timer::is_timer_active(own))
    })
    .join()
    .unwrap();
    assert!(!same_id, "ids of different loops compare equal");
    assert_eq!(seen_elsewhere, (false, false));
    assert!(
        own_still_active,
        "another loop's id cancelled this loop's timer"
    );
    assert!(Timer::is_timer_active(id));
}

/// A `set_timeout` callback that cancels another managed timer due in the same turn: the
/// cancelled callback does not run (`cancel_timer` returned true).
#[test]
fn a_timer_cancelled_by_a_timer_due_in_the_same_turn_does_not_fire() {
    let mut ev = EventLoop::new().unwrap();
    let b_ran = Rc::new(Cell::new(false));
    let b = b_ran.clone();
    let b_id = Rc::new(Cell::new(None));
    let cancelled = Rc::new(Cell::new(None::<bool>));
    let (id_slot, cancel_result) = (b_id.clone(), cancelled.clone());
    Timer::set_timeout(Duration::from_millis(1), move || {
        cancel_result.set(Some(Timer::cancel_timer(id_slot.get().unwrap())));
    })
    .unwrap();
    b_id.set(Some(
        Timer::set_timeout(Duration::from_millis(20), move || b.set(true)).unwrap(),
    ));
    // Both deadlines pass before the loop looks: they are due in the same turn.
    std::thread::sleep(Duration::from_millis(60));
    spin_for(&mut ev, Duration::from_millis(100));
    assert_eq!(
        cancelled.get(),
        Some(true),
        "cancel_timer said it cancelled"
    );
    assert!(
        !b_ran.get(),
        "the timer ran although cancel_timer returned true before its turn"
    );
}

/// A periodic `Timer` stopped by another timer's slot in the same turn does not fire, and does not
/// re-arm itself (it once kept firing with `running == false`).
#[test]
fn a_periodic_timer_stopped_by_a_timer_due_in_the_same_turn_stays_stopped() {
    let mut ev = EventLoop::new().unwrap();
    let periodic = Timer::new().unwrap();
    periodic.interval.set(Duration::from_millis(20));
    let fired_after_stop = Rc::new(Cell::new(0u32));
    let stopped = Rc::new(Cell::new(false));
    let (f, s) = (fired_after_stop.clone(), stopped.clone());
    periodic
        .timeout
        .connect(move |_| {
            if s.get() {
                f.set(f.get() + 1);
            }
        })
        .release();
    let stopper = Timer::new().unwrap();
    stopper.interval.set(Duration::from_millis(1));
    stopper.single_shot.set(true);
    let p = Rc::downgrade(&periodic);
    let s = stopped.clone();
    stopper
        .timeout
        .connect(move |_| {
            p.upgrade().unwrap().stop();
            s.set(true);
        })
        .release();
    stopper.start();
    periodic.start();
    std::thread::sleep(Duration::from_millis(60));
    spin_for(&mut ev, Duration::from_millis(200));
    assert!(stopped.get());
    assert!(!periodic.running.get());
    assert_eq!(
        fired_after_stop.get(),
        0,
        "the stopped periodic timer fired {} times after stop() (running = {})",
        fired_after_stop.get(),
        periodic.running.get()
    );
}

/// A timer callback that panics out of the loop does not take the other timers due in the same
/// turn with it: run on, the loop fires them (they do not stay armed without ever firing).
#[test]
fn timers_due_with_one_that_panicked_still_fire_when_the_loop_runs_on() {
    let mut ev = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    Timer::set_timeout(Duration::from_millis(1), || panic!("deliberate")).unwrap();
    let later = Timer::set_timeout(Duration::from_millis(20), move || f.set(true)).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        spin_for(&mut ev, Duration::from_millis(50))
    }));
    assert!(result.is_err(), "the callback's panic reaches the caller");
    assert!(!fired.get());
    spin_for(&mut ev, Duration::from_millis(100));
    assert!(fired.get(), "the other due timer never fired");
    assert!(!Timer::is_timer_active(later));
}

/// `Duration::MAX` is how a caller says "never" (the resolver and socket timeouts read it so):
/// a timer of that length is running and never fires, instead of panicking on `Instant`
/// arithmetic in `start`, `create_*`, `set_timeout`/`set_recurring` or a periodic re-arm.
#[test]
fn a_timer_of_duration_max_runs_and_never_fires() {
    let mut event_loop = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    let single = Timer::create_timeout(Duration::MAX, move || f.set(f.get() + 1)).unwrap();
    let f = fired.clone();
    let recurring = Timer::create_recurring(Duration::MAX, move || f.set(f.get() + 1)).unwrap();
    let f = fired.clone();
    let managed = Timer::set_timeout(Duration::MAX, move || f.set(f.get() + 1)).unwrap();
    let f = fired.clone();
    let managed_recurring =
        Timer::set_recurring(Duration::MAX, move || f.set(f.get() + 1)).unwrap();
    // A running periodic timer given the longest interval from its own slot (a periodic re-arm).
    let periodic = Timer::new().unwrap();
    let weak = Rc::downgrade(&periodic);
    let f = fired.clone();
    periodic
        .timeout
        .connect(move |_| {
            f.set(f.get() + 1);
            if let Some(t) = weak.upgrade() {
                t.interval.set(Duration::MAX);
            }
        })
        .release();
    periodic.start_with(Duration::ZERO);
    spin_for(&mut event_loop, Duration::from_millis(50));
    assert_eq!(
        fired.get(),
        1,
        "only the periodic timer's first, zero-length tick"
    );
    for timer in [&single, &recurring] {
        assert!(timer.running.get());
        assert!(timer.remaining().unwrap() > Duration::from_secs(365 * 24 * 3600));
    }
    assert!(Timer::is_timer_active(managed));
    assert!(Timer::cancel_timer(managed));
    assert!(Timer::cancel_timer(managed_recurring));
    assert!(periodic.running.get());
}

/// A `Timer` belongs to the loop that was current when it was made. Once that loop is dropped the
/// timer can never fire again, so it must not report `running` (it kept saying `true`, and
/// `start()` or `running = true` on it claimed to start a timer that could never fire). The stop
/// is announced on `running`, and a loop made later on the same thread does not adopt the timer.
#[test]
fn a_timer_whose_loop_was_dropped_is_not_running() {
    let event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(5));
    let count = counting_slot(&timer);
    let announced = Rc::new(RefCell::new(Vec::new()));
    let a = announced.clone();
    timer
        .running
        .value_changed
        .connect(move |r| a.borrow_mut().push(*r))
        .release();
    timer.start();
    let helper = Timer::create_recurring(ms(5), || {}).unwrap();
    assert!(timer.running.get() && helper.running.get());
    drop(event_loop);
    assert!(!timer.running.get(), "running after its loop was dropped");
    assert!(!helper.running.get(), "running after its loop was dropped");
    assert_eq!(timer.remaining(), None);
    assert_eq!(*announced.borrow(), [true, false], "the stop is announced");

    timer.start();
    assert!(!timer.running.get(), "start() on a timer without a loop");
    timer.running.set(true);
    assert!(
        !timer.running.get(),
        "running = true on a timer without a loop"
    );
    timer.start_with(ms(1));
    assert!(!timer.running.get());
    assert_eq!(timer.remaining(), None);

    let mut event_loop = EventLoop::new().unwrap();
    timer.start();
    assert!(!timer.running.get(), "a later loop adopted the timer");
    spin_for(&mut event_loop, ms(30));
    assert_eq!(count.get(), 0);
    drop(timer);
    drop(helper);
    assert_eq!(event_loop.timer_count(), 0);
}

/// A loopback HTTP server that answers one request after `delay` (for a nested wait in a slot:
/// `HttpClient::send_and_wait` turns the loop until the response is in).
fn slow_http_server(delay: Duration) -> (String, thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        thread::sleep(delay);
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
    });
    (url, server)
}

fn wait_nested(url: &str) {
    let client = kdnet::network::http::HttpClient::new().unwrap();
    let response = client
        .send_and_wait(kdnet::network::http::HttpRequest::get(url).unwrap())
        .unwrap();
    assert_eq!(response.text(), "ok");
}

/// A single-shot timer restarted by its own slot, which then waits in a nested loop longer than
/// the interval: the restarted countdown ends during the nested wait, while the slot is still
/// running. The timeout is delivered once the slot returns; it was lost (the nested turn stopped
/// the timer and skipped the busy slot, so the timer stood stopped and the slot never ran again).
#[test]
fn a_single_shot_timer_restarted_by_its_slot_that_then_waits_in_a_nested_loop_fires_again() {
    let (url, server) = slow_http_server(ms(300));
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(20));
    let count = Rc::new(Cell::new(0));
    let returned_at = Rc::new(Cell::new(None));
    let (c, r, t, handle) = (
        count.clone(),
        returned_at.clone(),
        Rc::downgrade(&timer),
        event_loop.handle(),
    );
    timer
        .timeout
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                t.upgrade().unwrap().start();
                wait_nested(&url);
                r.set(Some(Instant::now()));
            } else {
                handle.quit();
            }
        })
        .release();
    timer.start();
    assert_eq!(event_loop.run(), 0, "the restarted timer never fired again");
    assert_eq!(count.get(), 2);
    assert!(!timer.running.get());
    server.join().unwrap();
}

/// A periodic timer whose slot waits in a nested loop for several intervals: the ticks that come
/// due meanwhile do not reach the timer's other slots while the first one still runs (each slot
/// sees the same ticks, as Qt skips a timer whose activation is on the stack), and the timer
/// keeps its period afterwards.
#[test]
fn a_periodic_timer_whose_slot_waits_in_a_nested_loop_is_not_fired_inside_it() {
    let (url, server) = slow_http_server(ms(200));
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(20));
    let first = Rc::new(Cell::new(0));
    let second = Rc::new(Cell::new(0));
    let (f, handle) = (first.clone(), event_loop.handle());
    let mut url = Some(url);
    timer
        .timeout
        .connect(move |_| {
            f.set(f.get() + 1);
            if let Some(url) = url.take() {
                wait_nested(&url);
            } else if f.get() == 4 {
                handle.quit();
            }
        })
        .release();
    let s = second.clone();
    timer.timeout.connect(move |_| s.set(s.get() + 1)).release();
    timer.start();
    assert_eq!(event_loop.run(), 0);
    assert_eq!(first.get(), 4);
    assert_eq!(
        second.get(),
        first.get(),
        "the second slot was called inside the first one's nested wait"
    );
    assert!(timer.running.get());
    server.join().unwrap();
}

/// Two timers due in the same turn; the first one's slot waits in a nested loop for a request
/// that only the second one ends (a watchdog cancelling it). The nested loop fires the second
/// timer: it was held in the outer turn's batch of due timers until the first slot returned, so
/// the nested wait hung until the server answered by itself (here after 2 s).
#[test]
fn a_timer_due_with_one_whose_slot_waits_in_a_nested_loop_fires_inside_that_wait() {
    let (url, server) = slow_http_server(Duration::from_secs(2));
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let client = kdnet::network::http::HttpClient::new().unwrap();
    let outcome = Rc::new(RefCell::new(None));
    let (c, o, handle) = (client.clone(), outcome.clone(), event_loop.handle());
    let started = Instant::now();
    Timer::set_timeout(ms(1), move || {
        let result = c.send_and_wait(kdnet::network::http::HttpRequest::get(&url).unwrap());
        *o.borrow_mut() = Some((result.map(|r| r.text().to_string()), started.elapsed()));
        handle.quit();
    })
    .unwrap();
    let c = client.clone();
    let watchdog = Timer::create_timeout(ms(20), move || c.cancel_all()).unwrap();
    // Both deadlines pass before the loop looks: they are due in the same turn.
    thread::sleep(ms(60));
    assert_eq!(event_loop.run(), 0);
    let (result, elapsed) = outcome.borrow_mut().take().unwrap();
    assert!(
        matches!(result, Err(kdnet::network::http::HttpError::Cancelled)),
        "the watchdog did not cancel the request inside the wait: {result:?} after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert!(!watchdog.running.get());
    server.join().unwrap();
}

/// `disconnect_all` on a timer's property signals (KDBindings' `disconnectAll`, to drop the
/// observers one connected there) leaves the timer working: `running` and `interval` still start,
/// stop and restart it. The timer's own wiring was an ordinary connection on those signals, so the
/// timer then claimed to run and never fired, and interval changes no longer restarted it.
#[test]
fn disconnect_all_on_a_timers_property_signals_leaves_the_timer_working() {
    let mut event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    let count = counting_slot(&timer);
    let observed = Rc::new(Cell::new(0));
    let o = observed.clone();
    timer
        .running
        .value_changed
        .connect(move |_| o.set(o.get() + 1))
        .release();
    timer.running.value_changed.disconnect_all();
    timer.interval.value_changed.disconnect_all();
    timer.running.value_about_to_change.disconnect_all();
    timer.single_shot.value_changed.disconnect_all();

    timer.single_shot.set(true);
    timer.interval.set(ms(5));
    timer.running.set(true);
    assert!(timer.remaining().is_some(), "running = true arms the timer");
    spin_for(&mut event_loop, ms(60));
    assert_eq!(
        count.get(),
        1,
        "a single-shot started with running = true fires once"
    );
    assert!(!timer.running.get());
    assert_eq!(observed.get(), 0, "the user's own observer is gone");

    // interval changes restart a running timer; running = false stops it.
    timer.single_shot.set(false);
    timer.interval.set(Duration::from_secs(10));
    timer.start();
    timer.interval.set(ms(5));
    spin_for(&mut event_loop, ms(60));
    assert!(
        count.get() >= 3,
        "the shorter interval took effect: {}",
        count.get()
    );
    timer.running.set(false);
    assert_eq!(timer.remaining(), None);
    let stopped_at = count.get();
    spin_for(&mut event_loop, ms(30));
    assert_eq!(count.get(), stopped_at);

    // The timer's own wiring is not counted as a connection the user can see or drop.
    assert_eq!(timer.running.value_changed.connection_count(), 0);
}

/// A timer callback that counts its calls in `fired`: the first waits 200 ms in a nested loop
/// (counting its turns in `nested`), the third quits.
fn wait_nested_then_quit(
    fired: &Rc<Cell<u32>>,
    nested: &Rc<Cell<u32>>,
    handle: kdnet::LoopHandle,
) -> impl FnMut() + 'static {
    let (f, n) = (fired.clone(), nested.clone());
    move || {
        f.set(f.get() + 1);
        if f.get() == 1 {
            let started = Instant::now();
            while started.elapsed() < ms(200) {
                kdnet::foundation::process_events(Some(ms(200))).unwrap();
                n.set(n.get() + 1);
            }
        } else if f.get() == 3 {
            handle.quit();
        }
    }
}

/// A zero-interval periodic timer (Qt's idle-work idiom) whose slot waits in a nested loop (a
/// modal dialog): the timer is due at every nested turn, is not fired inside its own emission,
/// and was re-armed for "now" each time, so the wait polled without sleeping (hundreds of
/// thousands of turns at full CPU). It now waits until the slot returns, then ticks again.
#[test]
fn a_zero_interval_timer_whose_slot_waits_in_a_nested_loop_does_not_make_it_spin() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let nested_turns = Rc::new(Cell::new(0u32));
    let fired = Rc::new(Cell::new(0u32));
    let mut callback = wait_nested_then_quit(&fired, &nested_turns, event_loop.handle());
    let timer = Timer::new().unwrap();
    timer.timeout.connect(move |_| callback()).release();
    timer.start();
    assert_eq!(event_loop.run(), 0, "the timer did not tick after the wait");
    assert!(fired.get() >= 3);
    assert!(
        nested_turns.get() < 50,
        "the nested wait spun: {} turns in 200 ms",
        nested_turns.get()
    );
    assert!(timer.running.get());
}

/// The same for a zero-interval `set_recurring` callback that waits in a nested loop: it was
/// re-armed before each call, found busy at every nested turn and re-armed for "now" again.
#[test]
fn a_zero_interval_recurring_callback_waiting_in_a_nested_loop_does_not_make_it_spin() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let nested_turns = Rc::new(Cell::new(0u32));
    let fired = Rc::new(Cell::new(0u32));
    let id = Timer::set_recurring(
        Duration::ZERO,
        wait_nested_then_quit(&fired, &nested_turns, event_loop.handle()),
    )
    .unwrap();
    assert_eq!(event_loop.run(), 0, "the timer did not run after the wait");
    assert!(fired.get() >= 3);
    assert!(
        nested_turns.get() < 50,
        "the nested wait spun: {} turns in 200 ms",
        nested_turns.get()
    );
    assert!(Timer::is_timer_active(id));
    assert!(Timer::cancel_timer(id));
}

/// A recurring callback that panics while it waited in a nested loop past its period still
/// runs on when the loop goes on.
#[test]
fn a_recurring_callback_that_panics_after_a_nested_wait_runs_on() {
    let mut event_loop = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(0u32));
    let f = fired.clone();
    let id = Timer::set_recurring(ms(5), move || {
        f.set(f.get() + 1);
        if f.get() == 1 {
            let started = Instant::now();
            while started.elapsed() < ms(50) {
                kdnet::foundation::process_events(Some(ms(50))).unwrap();
            }
            panic!("deliberate panic after a nested wait");
        }
    })
    .unwrap();
    let started = Instant::now();
    while fired.get() == 0 && started.elapsed() < Duration::from_secs(5) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            event_loop.process_events(Some(ms(100)))
        }));
    }
    while fired.get() < 3 && started.elapsed() < Duration::from_secs(5) {
        event_loop.process_events(Some(ms(100))).unwrap();
    }
    assert!(
        fired.get() >= 3,
        "the recurring timer stopped after the panic"
    );
    assert!(Timer::cancel_timer(id));
}

/// A `running.value_about_to_change` slot may veto a change by setting the current value (see
/// `Property`). Vetoing the stop a single-shot timer makes when it fires left the timer saying
/// it runs (`running` true) while nothing was armed (`remaining()` `None`): it never fired again,
/// and `start()` was the only way out. A timer whose stop is refused keeps running: it counts
/// down again and fires once more, then stops for good when the veto is lifted.
#[test]
fn a_single_shot_timer_whose_stop_is_vetoed_keeps_running_and_fires_again() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(5));
    let vetoes = Rc::new(Cell::new(1));
    let (v, weak) = (vetoes.clone(), Rc::downgrade(&timer));
    timer
        .running
        .value_about_to_change
        .connect(move |&(_, running)| {
            if !running && v.get() > 0 {
                v.set(v.get() - 1);
                weak.upgrade().unwrap().running.set(true);
            }
        })
        .release();
    let fired = Rc::new(Cell::new(0));
    let (f, weak, handle) = (fired.clone(), Rc::downgrade(&timer), event_loop.handle());
    timer
        .timeout
        .connect(move |_| {
            let timer = weak.upgrade().unwrap();
            f.set(f.get() + 1);
            // Consistent inside the slot already: running means a countdown is armed.
            assert_eq!(timer.running.get(), timer.remaining().is_some());
            if f.get() == 2 {
                handle.quit();
            }
        })
        .release();
    timer.start();
    assert_eq!(event_loop.run(), 0, "the vetoed timer never fired again");
    assert_eq!(fired.get(), 2);
    assert!(!timer.running.get());
    assert_eq!(timer.remaining(), None);
}

/// A single-shot timer whose stop is vetoed counts down again from the deadline that just
/// passed, as a periodic timer does, not from when the late `timeout` was handled: fired 100 ms
/// or more late (the thread was busy), its next countdown has at most the rest of an interval
/// to run, not a whole one.
#[test]
fn a_vetoed_single_shot_timer_counts_down_again_from_its_deadline() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let timer = Timer::new().unwrap();
    timer.single_shot.set(true);
    timer.interval.set(ms(200));
    let vetoed = Rc::new(Cell::new(false));
    let (v, weak) = (vetoed.clone(), Rc::downgrade(&timer));
    timer
        .running
        .value_about_to_change
        .connect(move |&(_, running)| {
            if !running && !v.replace(true) {
                weak.upgrade().unwrap().running.set(true);
            }
        })
        .release();
    let remaining = Rc::new(Cell::new(None));
    let (r, weak, handle) = (
        remaining.clone(),
        Rc::downgrade(&timer),
        event_loop.handle(),
    );
    timer
        .timeout
        .connect(move |_| {
            r.set(weak.upgrade().unwrap().remaining());
            handle.quit();
        })
        .release();
    timer.start();
    // Busy past the deadline: the timeout comes at least 100 ms late.
    std::thread::sleep(ms(300));
    assert_eq!(event_loop.run(), 0);
    let remaining = remaining.get().expect("the vetoed timer counts down again");
    assert!(
        remaining < ms(150),
        "{remaining:?} left: the countdown restarted from the late timeout"
    );
    timer.stop();
}

/// `start()` on a stopped timer whose `running.value_about_to_change` slot vetoes the start left
/// it armed while `running` said `false`: `remaining()` reported a countdown that never ended
/// in a `timeout`. A vetoed start leaves the timer stopped, nothing armed.
#[test]
fn a_vetoed_start_leaves_the_timer_stopped_and_unarmed() {
    let mut event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(1));
    let weak = Rc::downgrade(&timer);
    timer
        .running
        .value_about_to_change
        .connect(move |&(_, running)| {
            if running {
                weak.upgrade().unwrap().running.set(false);
            }
        })
        .release();
    let fired = counting_slot(&timer);
    timer.start();
    assert!(!timer.running.get());
    assert_eq!(timer.remaining(), None, "stopped, yet a countdown is armed");
    spin_for(&mut event_loop, ms(20));
    assert_eq!(fired.get(), 0);
}

/// A timer whose loop is gone can never fire, whatever its `running` observers want: a
/// `running.value_about_to_change` slot refusing every stop (see `Property`) kept a timer of a
/// dropped loop saying it runs (`running` true, nothing armed, no `timeout` ever). The slot
/// still hears the stop, and it happens.
#[test]
fn a_timer_whose_loop_was_dropped_stops_even_if_a_slot_refuses_the_stop() {
    let event_loop = EventLoop::new().unwrap();
    let timer = Timer::new().unwrap();
    timer.interval.set(ms(5));
    let heard = Rc::new(RefCell::new(Vec::new()));
    let (h, weak) = (heard.clone(), Rc::downgrade(&timer));
    timer
        .running
        .value_about_to_change
        .connect(move |&(old, new)| {
            h.borrow_mut().push((old, new));
            if !new {
                weak.upgrade().unwrap().running.set(true);
            }
        })
        .release();
    timer.start();
    timer.stop();
    assert!(timer.running.get(), "an ordinary stop is refused");
    drop(event_loop);
    assert!(!timer.running.get(), "running after its loop was dropped");
    assert_eq!(timer.remaining(), None);
    assert_eq!(
        *heard.borrow(),
        [(false, true), (true, false), (true, false)]
    );
    timer.running.set(true);
    assert!(
        !timer.running.get(),
        "running = true on a timer without a loop"
    );
}

/// A `Timer` dropped (its last `Rc`) inside its own `timeout` slot, single-shot or periodic,
/// with other timers due in the same turn, the slot returning at once or first waiting in a
/// nested loop: it is freed when its emission ends (the emission under way completes, as after
/// Qt's `deleteLater`), never fires again (not inside the nested wait either), leaks nothing
/// (the slot's captures, which held the timer, are freed with it), and the timers due with it
/// fire (inside the nested wait, when there is one).
#[test]
fn a_timer_dropped_inside_its_own_slot_is_freed_and_the_timers_due_with_it_fire() {
    for single in [false, true] {
        for nested in [false, true] {
            let case = format!("single shot {single}, nested wait {nested}");
            let mut event_loop = EventLoop::new().unwrap();
            let _safety = safety_timer(&event_loop, 5);
            let log: Rc<RefCell<Vec<&'static str>>> = Rc::default();
            let push = |name: &'static str| {
                let l = log.clone();
                move || l.borrow_mut().push(name)
            };
            let before = Timer::create_timeout(ms(1), push("before")).unwrap();
            let victim = Timer::new().unwrap();
            victim.interval.set(ms(2));
            victim.single_shot.set(single);
            let holder: Rc<RefCell<Option<Rc<Timer>>>> = Rc::new(RefCell::new(None));
            let (h, p) = (holder.clone(), push("victim"));
            victim
                .timeout
                .connect(move |_| {
                    p();
                    drop(h.borrow_mut().take());
                    if nested {
                        let end = Instant::now() + ms(60);
                        while let Some(left) = end.checked_duration_since(Instant::now()) {
                            kdnet::foundation::process_events(Some(left)).unwrap();
                        }
                    }
                })
                .release();
            let p = push("victim, second slot");
            victim.timeout.connect(move |_| p()).release();
            victim.start();
            let weak = Rc::downgrade(&victim);
            *holder.borrow_mut() = Some(victim);
            let after = Timer::create_timeout(ms(3), push("after")).unwrap();
            Timer::set_timeout(ms(4), push("managed")).unwrap();
            let ticks = Rc::new(Cell::new(0));
            let t = ticks.clone();
            let ticker = Timer::create_recurring(ms(10), move || t.set(t.get() + 1)).unwrap();
            let timers = event_loop.timer_count();
            // Every deadline but the ticker's passes before the loop looks: due in one turn.
            thread::sleep(ms(8));
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
            let expected: &[&str] = if nested {
                &[
                    "before",
                    "victim",
                    "after",
                    "managed",
                    "victim, second slot",
                ]
            } else {
                &[
                    "before",
                    "victim",
                    "victim, second slot",
                    "after",
                    "managed",
                ]
            };
            assert_eq!(*log.borrow(), expected, "{case}");
            assert!(
                weak.upgrade().is_none(),
                "{case}: the timer outlived its emission"
            );
            assert_eq!(
                Rc::strong_count(&holder),
                1,
                "{case}: the slot's captures leaked"
            );
            // The victim and the managed timer are gone.
            assert_eq!(event_loop.timer_count(), timers - 2, "{case}");
            if nested {
                assert!(
                    ticks.get() >= 2,
                    "{case}: the ticker ticked {}",
                    ticks.get()
                );
            }
            spin_for(&mut event_loop, ms(30));
            assert_eq!(
                log.borrow()
                    .iter()
                    .filter(|e| e.starts_with("victim"))
                    .count(),
                2,
                "{case}: the dropped timer fired again"
            );
            assert!(!before.running.get() && !after.running.get());
            assert!(ticker.running.get());
        }
    }
}
