//! Signal, ConnectionHandle, ScopedConnection, ConnectionBlocker and ConnectionEvaluator.
//!
//! The first part ports KDBindings' own signal tests (ids S, H, B, C, M, E from the reference
//! notes); the second part pins down kdnet's answers to the cases KDBindings leaves undefined
//! (see the module docs of `kdnet::bindings::signal`).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use kdnet::{
    ConnectionBlocker, ConnectionError, ConnectionEvaluator, ConnectionHandle, ScopedConnection,
    Signal,
};

/// A shared, ordered record of which slot ran with which value.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.borrow_mut().push(entry.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    /// A slot that records `name`.
    fn slot<A>(&self, name: &'static str) -> impl FnMut(&A) + 'static {
        let log = self.clone();
        move |_| log.push(name)
    }
}

fn counter() -> (Rc<Cell<u32>>, impl FnMut(&()) + 'static) {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    (count, move |_: &()| c.set(c.get() + 1))
}

/// Counts how often the value it is captured in gets dropped.
struct DropTracker(Rc<Cell<u32>>);

impl Drop for DropTracker {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

// ---- KDBindings: connect and emit ---------------------------------------------------------------

#[test]
fn s1_connect_and_emit_passes_the_arguments() {
    let signal: Signal<(String, i32)> = Signal::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let handle = signal.connect(move |(name, n)| s.borrow_mut().push(format!("{name}={n}")));
    assert!(handle.is_active());
    assert!(handle.belongs_to(&signal));

    let args = ("a".to_string(), 1);
    signal.emit(&args);
    signal.emit(&("b".to_string(), 2));
    assert_eq!(*seen.borrow(), ["a=1", "b=2"]);
    assert_eq!(args.0, "a", "emit only borrows the arguments");
}

#[test]
fn emit_without_connections_is_a_no_op() {
    let signal: Signal<i32> = Signal::default();
    signal.emit(&1);
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn s5_method_and_plain_closure_on_one_signal() {
    struct Collector {
        values: RefCell<Vec<i32>>,
    }
    impl Collector {
        fn push(&self, v: i32) {
            self.values.borrow_mut().push(v);
        }
    }
    let signal: Signal<i32> = Signal::new();
    let collector = Rc::new(Collector {
        values: RefCell::new(Vec::new()),
    });
    let flag = Rc::new(Cell::new(false));
    let c = collector.clone();
    let _a = signal.connect(move |v| c.push(*v));
    let f = flag.clone();
    let _b = signal.connect(move |_| f.set(true));
    signal.emit(&4);
    assert_eq!(*collector.values.borrow(), [4]);
    assert!(flag.get());
}

#[test]
fn s9_connecting_from_a_constructor() {
    struct Button {
        clicked: Signal<()>,
        clicks: Rc<Cell<u32>>,
        _conn: ScopedConnection,
    }
    impl Button {
        fn new() -> Self {
            let clicked = Signal::new();
            let clicks = Rc::new(Cell::new(0));
            let c = clicks.clone();
            let conn = clicked.connect(move |_| c.set(c.get() + 1)).into();
            Button {
                clicked,
                clicks,
                _conn: conn,
            }
        }
    }
    let button = Button::new();
    for _ in 0..3 {
        button.clicked.emit(&());
    }
    assert_eq!(button.clicks.get(), 3);
}

// ---- KDBindings: disconnecting ------------------------------------------------------------------

#[test]
fn s6_h2_disconnect_via_handle_stops_only_that_slot() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let a = signal.connect(log.slot("a"));
    let _b = signal.connect(log.slot("b"));
    signal.emit(&());
    a.disconnect();
    signal.emit(&());
    assert_eq!(log.take(), ["a", "b", "b"]);
    assert_eq!(signal.connection_count(), 1);
}

#[test]
fn h3_disconnect_through_any_copy_deactivates_all_copies() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let handle = signal.connect(slot);
    let copy = handle.clone();
    assert_eq!(copy, handle);
    copy.disconnect();
    assert!(!handle.is_active());
    assert!(!copy.is_active());
    signal.emit(&());
    assert_eq!(count.get(), 0);

    let other = signal.connect(|_| {});
    assert_eq!(signal.disconnect(&other), Ok(()));
    assert!(!other.is_active());
    assert_eq!(signal.disconnect(&other), Err(ConnectionError::Inactive));
}

#[test]
fn h6_double_disconnect_is_harmless() {
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    handle.disconnect();
    handle.disconnect();
    ConnectionHandle::default().disconnect();
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn s7_disconnect_from_inside_the_slot_via_a_stored_handle() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let own: Rc<RefCell<ConnectionHandle>> = Rc::default();
    let (l, o) = (log.clone(), own.clone());
    *own.borrow_mut() = signal.connect(move |_| {
        l.push("self");
        o.borrow().disconnect();
    });
    let _other = signal.connect(log.slot("other"));
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["self", "other", "other"]);
    assert!(!own.borrow().is_active());
}

#[test]
fn s8_disconnect_all_from_outside() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let a = signal.connect(slot);
    let b = signal.connect(move |_| panic!("disconnected slot ran"));
    signal.disconnect_all();
    signal.emit(&());
    assert_eq!(count.get(), 0);
    assert!(!a.is_active() && !b.is_active());
    assert_eq!(signal.connection_count(), 0);

    // The signal is usable afterwards and old handles never come back.
    let (count, slot) = counter();
    let c = signal.connect(slot);
    signal.emit(&());
    assert_eq!(count.get(), 1);
    assert!(c.is_active() && !a.is_active());
}

#[test]
fn s10_single_shot_runs_once_and_its_handle_goes_inactive() {
    let signal: Signal<i32> = Signal::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let handle = signal.connect_single_shot(move |v| s.borrow_mut().push(*v));
    assert!(handle.is_active());
    signal.emit(&1);
    assert!(!handle.is_active());
    signal.emit(&2);
    assert_eq!(*seen.borrow(), [1]);
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn single_shot_slot_may_emit_the_same_signal_without_running_twice() {
    let signal = Rc::new(Signal::<u32>::new());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (s, sig) = (seen.clone(), Rc::downgrade(&signal));
    signal
        .connect_single_shot(move |v| {
            s.borrow_mut().push(*v);
            if let Some(sig) = sig.upgrade() {
                sig.emit(&(v + 1));
            }
        })
        .release();
    signal.emit(&1);
    signal.emit(&10);
    assert_eq!(*seen.borrow(), [1]);
}

#[test]
fn s11_reflective_slot_blocks_itself() {
    let signal: Signal<()> = Signal::new();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let handle = signal.connect_reflective(move |own, _| {
        c.set(c.get() + 1);
        assert_eq!(own.block(true), Ok(false));
    });
    signal.emit(&());
    assert_eq!(handle.is_blocked(), Ok(true));
    signal.emit(&());
    assert_eq!(count.get(), 1, "blocked slot must not run");
    assert_eq!(handle.block(false), Ok(true));
    signal.emit(&());
    assert_eq!(count.get(), 2);
}

#[test]
fn s12_reflective_self_disconnect_keeps_the_closure_alive_while_it_runs() {
    let signal: Signal<()> = Signal::new();
    let drops = Rc::new(Cell::new(0));
    let tracker = DropTracker(drops.clone());
    let outer: Rc<RefCell<ConnectionHandle>> = Rc::default();
    let (d, o) = (drops.clone(), outer.clone());
    let handle = signal.connect_reflective(move |own, _| {
        let _keep = &tracker;
        own.disconnect();
        assert!(
            !own.is_active(),
            "the slot's own handle is inactive at once"
        );
        assert!(!o.borrow().is_active(), "copies are inactive at once too");
        assert_eq!(d.get(), 0, "closure destroyed while running");
    });
    *outer.borrow_mut() = handle.clone();
    signal.emit(&());
    assert_eq!(drops.get(), 1, "closure dropped once the emit finished");
    assert!(!handle.is_active());
    assert_eq!(signal.connection_count(), 0);
}

// ---- KDBindings: blocking -----------------------------------------------------------------------

#[test]
fn b1_h4_block_connection_returns_the_previous_state() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let handle = signal.connect(slot);
    assert_eq!(signal.block_connection(&handle, true), Ok(false));
    assert_eq!(signal.is_connection_blocked(&handle), Ok(true));
    assert_eq!(handle.is_blocked(), Ok(true));
    signal.emit(&());
    assert_eq!(count.get(), 0);
    assert_eq!(handle.block(true), Ok(true));
    assert_eq!(handle.block(false), Ok(true));
    assert_eq!(signal.is_connection_blocked(&handle), Ok(false));
    signal.emit(&());
    assert_eq!(count.get(), 1);
    assert_eq!(signal.connection_count(), 1, "blocked slots still count");
}

#[test]
fn b2_blocking_a_disconnected_handle_fails() {
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    handle.disconnect();
    assert_eq!(
        signal.block_connection(&handle, true),
        Err(ConnectionError::Inactive)
    );
    assert_eq!(
        signal.is_connection_blocked(&handle),
        Err(ConnectionError::Inactive)
    );
    assert_eq!(handle.block(true), Err(ConnectionError::Inactive));
    assert_eq!(handle.is_blocked(), Err(ConnectionError::Inactive));
}

#[test]
fn handle_of_another_signal_is_refused() {
    let a: Signal<()> = Signal::new();
    let b: Signal<()> = Signal::new();
    let handle = a.connect(|_| {});
    assert_eq!(b.disconnect(&handle), Err(ConnectionError::ForeignHandle));
    assert_eq!(
        b.block_connection(&handle, true),
        Err(ConnectionError::ForeignHandle)
    );
    assert_eq!(
        b.is_connection_blocked(&handle),
        Err(ConnectionError::ForeignHandle)
    );
    assert!(
        handle.is_active(),
        "a refused disconnect leaves it connected"
    );
    assert_eq!(
        b.disconnect(&ConnectionHandle::default()),
        Err(ConnectionError::Inactive)
    );
}

#[test]
fn connection_error_messages() {
    for e in [ConnectionError::Inactive, ConnectionError::ForeignHandle] {
        let text = e.to_string();
        assert!(!text.is_empty() && !text.ends_with('.'), "{text:?}");
        assert_eq!(text, text.to_lowercase(), "{text:?}");
    }
    let boxed: Box<dyn std::error::Error> = Box::new(ConnectionError::Inactive);
    assert!(boxed.to_string().contains("not active"));
}

#[test]
fn b3_blocker_on_a_disconnected_handle_fails() {
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    handle.disconnect();
    assert_eq!(
        ConnectionBlocker::new(&handle).err(),
        Some(ConnectionError::Inactive)
    );
    assert!(ConnectionBlocker::new(&ConnectionHandle::default()).is_err());
}

#[test]
fn b4_blocker_blocks_inside_its_scope_only() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let handle = signal.connect(slot);
    {
        let _blocker = ConnectionBlocker::new(&handle).unwrap();
        assert_eq!(handle.is_blocked(), Ok(true));
        signal.emit(&());
        assert_eq!(count.get(), 0);
    }
    assert_eq!(handle.is_blocked(), Ok(false));
    signal.emit(&());
    assert_eq!(count.get(), 1);
}

#[test]
fn b5_blocker_leaves_an_already_blocked_connection_blocked() {
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    handle.block(true).unwrap();
    drop(ConnectionBlocker::new(&handle).unwrap());
    assert_eq!(handle.is_blocked(), Ok(true));
}

#[test]
fn blocker_outliving_its_connection_is_harmless() {
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    let blocker = ConnectionBlocker::new(&handle).unwrap();
    handle.disconnect();
    drop(blocker);
    assert!(
        !handle.is_active(),
        "restoring must not revive the connection"
    );
    assert_eq!(signal.connection_count(), 0);
}

// ---- KDBindings: handles ------------------------------------------------------------------------

#[test]
fn h1_default_handle_is_inactive_and_belongs_to_nothing() {
    let handle = ConnectionHandle::default();
    let empty: Signal<()> = Signal::new();
    assert!(!handle.is_active());
    assert!(!handle.belongs_to(&empty));
    assert_eq!(handle, ConnectionHandle::default());
    assert_eq!(handle.block(true), Err(ConnectionError::Inactive));
    assert!(format!("{handle:?}").contains("active: false"));
}

#[test]
fn handles_compare_by_connection() {
    let signal: Signal<()> = Signal::new();
    let a = signal.connect(|_| {});
    let b = signal.connect(|_| {});
    assert_ne!(a, b);
    assert_eq!(a, a.clone());
    assert_ne!(a, ConnectionHandle::default());
}

#[test]
fn h5_handles_go_inactive_when_the_signal_is_dropped() {
    let signal: Signal<()> = Signal::new();
    let drops = Rc::new(Cell::new(0));
    let tracker = DropTracker(drops.clone());
    let handle = signal.connect(move |_| {
        let _keep = &tracker;
    });
    drop(signal);
    assert_eq!(drops.get(), 1, "dropping the signal drops its slots");
    assert!(!handle.is_active());
    assert_eq!(handle.block(true), Err(ConnectionError::Inactive));
    assert_eq!(handle.is_blocked(), Err(ConnectionError::Inactive));
    handle.disconnect();
    let mut scoped = ScopedConnection::new(handle);
    scoped.set(ConnectionHandle::default());
}

#[test]
fn m1_m2_h7_moving_a_signal_keeps_connections_and_handles() {
    let (count, slot) = counter();
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(slot);

    let boxed = Box::new(signal); // move-construct
    boxed.emit(&());
    assert!(handle.belongs_to(&boxed));

    let mut other: Signal<()> = Signal::new();
    let stale = other.connect(|_| panic!("replaced signal's slot ran"));
    other = *boxed; // move-assign: the old `other` is dropped
    assert!(!stale.is_active());
    other.emit(&());
    assert_eq!(count.get(), 2);
    assert!(handle.belongs_to(&other));
    assert_eq!(other.block_connection(&handle, true), Ok(false));

    let mut third: Signal<()> = Signal::new();
    std::mem::swap(&mut other, &mut third);
    assert!(handle.belongs_to(&third) && !handle.belongs_to(&other));
}

#[test]
fn h8_release_keeps_the_connection() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    signal.connect(slot).release();
    signal.emit(&());
    assert_eq!(count.get(), 1);
    assert_eq!(signal.connection_count(), 1);
}

// ---- KDBindings: ScopedConnection ---------------------------------------------------------------

#[test]
fn c1_default_scoped_connection_is_inactive() {
    let scoped = ScopedConnection::default();
    assert!(!scoped.is_active());
    assert!(!scoped.handle().is_active());
}

#[test]
fn c2_scoped_connection_disconnects_at_end_of_scope() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    {
        let scoped: ScopedConnection = signal.connect(slot).into();
        assert!(scoped.is_active());
        signal.emit(&());
    }
    signal.emit(&());
    assert_eq!(count.get(), 1);
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn c3_assigning_a_new_handle_disconnects_the_old_one() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let first = signal.connect(slot);
    let mut scoped = ScopedConnection::new(first.clone());
    signal.emit(&());
    assert_eq!(count.get(), 1);

    let c = count.clone();
    scoped.set(signal.connect(move |_| c.set(c.get() + 1)));
    assert!(!first.is_active());
    signal.emit(&());
    assert_eq!(count.get(), 2);
    assert_eq!(signal.connection_count(), 1);
}

#[test]
fn c4_move_assign_drops_the_destinations_connection() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let mut a: ScopedConnection = signal.connect(log.slot("a")).into();
    let b: ScopedConnection = signal.connect(log.slot("b")).into();
    let a_handle = a.handle().clone();
    let b_handle = b.handle().clone();
    a = b;
    assert!(!a_handle.is_active());
    assert!(b_handle.is_active() && a.is_active());
    signal.emit(&());
    assert_eq!(log.take(), ["b"]);
    drop(a);
    assert!(!b_handle.is_active());
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn c5_moving_into_an_outer_scoped_connection_keeps_it_active() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let outer: ScopedConnection;
    {
        let inner: ScopedConnection = signal.connect(slot).into();
        outer = inner;
    }
    assert!(outer.is_active());
    signal.emit(&());
    assert_eq!(count.get(), 1);
}

#[test]
fn scoped_connection_release_gives_up_ownership() {
    let signal: Signal<()> = Signal::new();
    let scoped: ScopedConnection = signal.connect(|_| {}).into();
    let handle = scoped.release();
    assert!(handle.is_active());
    assert_eq!(signal.connection_count(), 1);
}

// ---- KDBindings: deferred connections -----------------------------------------------------------

#[test]
fn e1_deferred_slots_run_on_evaluation_and_disconnect_drops_queued_calls() {
    let evaluator = ConnectionEvaluator::new();
    let total = Arc::new(AtomicUsize::new(0));
    let signal: Signal<usize> = Signal::new();
    let t = total.clone();
    let kept = signal.connect_deferred(&evaluator, move |v| {
        t.fetch_add(*v, Ordering::SeqCst);
    });
    let t = total.clone();
    let dropped = signal.connect_deferred(&evaluator, move |v| {
        t.fetch_add(100 * v, Ordering::SeqCst);
    });
    signal.emit(&4);
    signal.emit(&5);
    assert_eq!(total.load(Ordering::SeqCst), 0, "emit only queues");
    assert!(evaluator.has_pending());
    dropped.disconnect();
    assert_eq!(evaluator.evaluate_deferred_connections(), 2);
    assert_eq!(total.load(Ordering::SeqCst), 9);
    assert!(kept.is_active());
    assert!(!evaluator.has_pending());
}

#[test]
fn e2_e3_deferred_emits_from_two_threads_are_evaluated_on_one() {
    let evaluator = ConnectionEvaluator::new();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let (emitted_tx, emitted_rx) = mpsc::channel();
    let mut done = Vec::new();
    let mut workers = Vec::new();
    for id in 0..2u32 {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        done.push(done_tx);
        let (evaluator, ran_on, emitted_tx) =
            (evaluator.clone(), ran_on.clone(), emitted_tx.clone());
        workers.push(thread::spawn(move || {
            let signal: Signal<u32> = Signal::new();
            signal
                .connect_deferred(&evaluator, move |v| {
                    ran_on.lock().unwrap().push((*v, thread::current().id()));
                })
                .release();
            signal.emit(&id);
            emitted_tx.send(()).unwrap();
            // The signal must outlive the evaluation: dropping it cancels its queued call.
            done_rx.recv().unwrap();
        }));
    }
    for _ in 0..2 {
        emitted_rx.recv().unwrap();
    }
    assert_eq!(evaluator.evaluate_deferred_connections(), 2);
    for tx in done {
        tx.send(()).unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    let mut ran = ran_on.lock().unwrap().clone();
    ran.sort_by_key(|(v, _)| *v);
    let me = thread::current().id();
    assert_eq!(ran, [(0, me), (1, me)]);
}

#[test]
fn e4_connect_emit_disconnect_evaluate_runs_nothing() {
    let evaluator = ConnectionEvaluator::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let signal: Signal<()> = Signal::new();
    let r = ran.clone();
    let handle = signal.connect_deferred(&evaluator, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    signal.emit(&());
    handle.disconnect();
    assert_eq!(evaluator.evaluate_deferred_connections(), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn e5_evaluating_twice_runs_once() {
    let evaluator = ConnectionEvaluator::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let signal: Signal<()> = Signal::new();
    let r = ran.clone();
    signal
        .connect_deferred(&evaluator, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    signal.emit(&());
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(evaluator.evaluate_deferred_connections(), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    signal.emit(&());
    evaluator.evaluate_deferred_connections();
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

#[test]
fn e6_dropping_a_signal_removes_only_its_queued_calls() {
    let evaluator = ConnectionEvaluator::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let gone: Signal<()> = Signal::new();
    let kept: Signal<()> = Signal::new();
    let r = ran.clone();
    gone.connect_deferred(&evaluator, move |_| r.lock().unwrap().push("gone"))
        .release();
    let r = ran.clone();
    kept.connect_deferred(&evaluator, move |_| r.lock().unwrap().push("kept"))
        .release();
    gone.emit(&());
    kept.emit(&());
    drop(gone);
    evaluator.evaluate_deferred_connections();
    assert_eq!(*ran.lock().unwrap(), ["kept"]);
}

#[test]
fn e7_on_invocation_added_fires_once_per_enqueue() {
    let evaluator = ConnectionEvaluator::new();
    let added = Arc::new(AtomicUsize::new(0));
    let a = added.clone();
    evaluator.set_on_invocation_added(move || {
        a.fetch_add(1, Ordering::SeqCst);
    });
    let signal: Signal<()> = Signal::new();
    signal.connect_deferred(&evaluator, |_| {}).release();
    signal.connect_deferred(&evaluator, |_| {}).release();
    signal.emit(&());
    assert_eq!(added.load(Ordering::SeqCst), 2);
    evaluator.evaluate_deferred_connections();
    assert_eq!(added.load(Ordering::SeqCst), 2, "evaluation adds nothing");
}

#[test]
fn deferred_blocking_is_checked_at_emit_time() {
    let evaluator = ConnectionEvaluator::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let signal: Signal<()> = Signal::new();
    let r = ran.clone();
    let handle = signal.connect_deferred(&evaluator, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    handle.block(true).unwrap();
    signal.emit(&()); // blocked: not queued
    handle.block(false).unwrap();
    signal.emit(&()); // queued ...
    handle.block(true).unwrap(); // ... and blocking now does not cancel it
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn r12_deferred_emit_after_the_evaluator_is_gone_leaves_the_signal_usable() {
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<()> = Signal::new();
    signal
        .connect_deferred(&evaluator, |_| panic!("must not run"))
        .release();
    let (count, slot) = counter();
    signal.connect(slot).release();
    drop(evaluator);
    signal.emit(&());
    signal.emit(&());
    assert_eq!(count.get(), 2);
}

#[test]
fn deferred_slot_that_panics_does_not_poison_the_evaluator() {
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<bool> = Signal::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    signal
        .connect_deferred(&evaluator, move |&fail| {
            assert!(!fail, "deliberate panic in a deferred slot");
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    signal.emit(&true);
    let result = catch_unwind(AssertUnwindSafe(|| {
        evaluator.evaluate_deferred_connections()
    }));
    assert!(result.is_err());
    signal.emit(&false);
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

// ---- kdnet: order -------------------------------------------------------------------------------

#[test]
fn slots_run_in_connection_order_also_after_disconnect_and_reconnect() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let one = signal.connect(log.slot("1"));
    let _two = signal.connect(log.slot("2"));
    one.disconnect();
    let _three = signal.connect(log.slot("3"));
    signal.emit(&());
    assert_eq!(log.take(), ["2", "3"], "KDBindings would give 3, 2");

    let mut handles = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        handles.push(signal.connect(log.slot(name)));
    }
    handles[1].disconnect();
    handles[3].disconnect();
    let _f = signal.connect(log.slot("f"));
    signal.emit(&());
    assert_eq!(log.take(), ["2", "3", "a", "c", "e", "f"]);
}

// ---- kdnet: the cases KDBindings leaves undefined -----------------------------------------------

#[test]
fn r6_slot_disconnecting_a_later_slot_stops_it_in_this_emit() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let later: Rc<RefCell<ConnectionHandle>> = Rc::default();
    let (l, h) = (log.clone(), later.clone());
    let _first = signal.connect(move |_| {
        l.push("first");
        h.borrow().disconnect();
    });
    *later.borrow_mut() = signal.connect(log.slot("later"));
    let _last = signal.connect(log.slot("last"));
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["first", "last", "first", "last"]);
    assert_eq!(signal.connection_count(), 2);
}

#[test]
fn slot_disconnecting_an_earlier_slot_takes_effect_from_the_next_emit() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let earlier = signal.connect(log.slot("earlier"));
    let l = log.clone();
    let _second = signal.connect(move |_| {
        l.push("second");
        earlier.disconnect();
    });
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["earlier", "second", "second"]);
}

#[test]
fn r7_slot_blocking_and_unblocking_other_slots() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let target: Rc<RefCell<ConnectionHandle>> = Rc::default();
    let round = Rc::new(Cell::new(0));
    let (l, t, r) = (log.clone(), target.clone(), round.clone());
    let _controller = signal.connect(move |_| {
        l.push("controller");
        // Round 0: block the later slot; round 1: unblock it again.
        t.borrow().block(r.get() == 0).unwrap();
        r.set(r.get() + 1);
    });
    *target.borrow_mut() = signal.connect(log.slot("target"));
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["controller", "controller", "target"]);
}

#[test]
fn r9_slot_connected_during_emit_runs_from_the_next_emit() {
    let signal = Rc::new(Signal::<u32>::new());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (sig, s) = (Rc::downgrade(&signal), seen.clone());
    signal
        .connect(move |v| {
            s.borrow_mut().push(format!("connector {v}"));
            let s2 = s.clone();
            if let Some(sig) = sig.upgrade() {
                sig.connect(move |v| s2.borrow_mut().push(format!("new {v}")))
                    .release();
            }
        })
        .release();
    signal.emit(&1);
    assert_eq!(*seen.borrow(), ["connector 1"]);
    assert_eq!(signal.connection_count(), 2);
    signal.emit(&2);
    assert_eq!(*seen.borrow(), ["connector 1", "connector 2", "new 2"]);
}

#[test]
fn r10_slot_calling_disconnect_all_stops_the_emit() {
    let signal = Rc::new(Signal::<()>::new());
    let log = Log::default();
    let _before = signal.connect(log.slot("before"));
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    let clearer = signal.connect(move |_| {
        l.push("clearer");
        sig.upgrade().unwrap().disconnect_all();
    });
    let after = signal.connect(log.slot("after"));
    signal.emit(&());
    assert_eq!(log.take(), ["before", "clearer"]);
    assert!(!clearer.is_active() && !after.is_active());
    assert_eq!(signal.connection_count(), 0);

    // Still usable: a slot connected now runs, and a slot may disconnect_all then connect.
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |_| {
            l.push("resetter");
            let sig = sig.upgrade().unwrap();
            sig.disconnect_all();
            let l2 = l.clone();
            sig.connect(move |_| l2.push("fresh")).release();
        })
        .release();
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["resetter", "fresh"]);
}

#[test]
fn r10_slot_dropping_the_object_that_owns_the_signal() {
    struct Owner {
        changed: Signal<()>,
        dropped: Rc<Cell<bool>>,
    }
    impl Drop for Owner {
        fn drop(&mut self) {
            self.dropped.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let holder: Rc<RefCell<Option<Rc<Owner>>>> = Rc::new(RefCell::new(Some(Rc::new(Owner {
        changed: Signal::new(),
        dropped: dropped.clone(),
    }))));
    let log = Log::default();
    let owner = holder.borrow().clone().unwrap();
    let (h, l, d) = (holder.clone(), log.clone(), dropped.clone());
    let dropper = owner.changed.connect(move |_| {
        l.push("dropper");
        h.borrow_mut().take(); // the last reference besides the emitter's
        assert!(!d.get(), "the emitter's reference keeps the owner alive");
    });
    let after = owner.changed.connect(log.slot("after"));

    // Emit through a temporary reference, as an event source would.
    owner.changed.emit(&());
    drop(owner);
    assert!(dropped.get(), "owner dropped once nobody refers to it");
    assert_eq!(log.take(), ["dropper", "after"]);
    assert!(!dropper.is_active() && !after.is_active());
}

#[test]
fn r4_nested_emit_skips_only_the_slots_already_running() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |depth| {
            l.push(format!("a{depth}"));
            if *depth == 0 {
                sig.upgrade().unwrap().emit(&1);
            }
        })
        .release();
    let l = log.clone();
    signal
        .connect(move |depth| l.push(format!("b{depth}")))
        .release();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |depth| {
            l.push(format!("c{depth}"));
            if *depth == 0 {
                // Nested from a later slot: `a` is not running now, `c` is.
                sig.upgrade().unwrap().emit(&2);
            }
        })
        .release();
    signal.emit(&0);
    assert_eq!(
        log.take(),
        ["a0", "b1", "c1", "b0", "c0", "a2", "b2"],
        "nested emits run every slot except the running ones"
    );
    signal.emit(&5);
    assert_eq!(log.take(), ["a5", "b5", "c5"]);
}

#[test]
fn r11_panicking_slot_leaves_the_signal_usable() {
    let signal: Signal<bool> = Signal::new();
    let log = Log::default();
    let _before = signal.connect(log.slot("before"));
    let l = log.clone();
    let panicker = signal.connect(move |&fail| {
        l.push("panicker");
        assert!(!fail, "deliberate panic in a slot");
    });
    let _after = signal.connect(log.slot("after"));

    let result = catch_unwind(AssertUnwindSafe(|| signal.emit(&true)));
    assert!(result.is_err(), "the panic reaches the caller of emit");
    assert_eq!(log.take(), ["before", "panicker"]);
    assert!(panicker.is_active(), "the panicking slot stays connected");
    assert!(format!("{signal:?}").contains("emitting: false"));

    signal.emit(&false);
    assert_eq!(log.take(), ["before", "panicker", "after"]);
    let _late = signal.connect(log.slot("late"));
    panicker.disconnect();
    signal.emit(&false);
    assert_eq!(log.take(), ["before", "after", "late"]);
}

#[test]
fn panic_in_a_nested_emit_leaves_the_signal_usable() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |v| {
            l.push(format!("outer{v}"));
            if *v == 0 {
                let sig = sig.upgrade().unwrap();
                let nested = catch_unwind(AssertUnwindSafe(|| sig.emit(&1)));
                assert!(nested.is_err());
            }
        })
        .release();
    let l = log.clone();
    signal
        .connect(move |v| {
            l.push(format!("inner{v}"));
            assert_ne!(*v, 1, "deliberate panic in a nested emit");
        })
        .release();
    signal.emit(&0);
    assert_eq!(log.take(), ["outer0", "inner1", "inner0"]);
    signal.emit(&2);
    assert_eq!(log.take(), ["outer2", "inner2"]);
}

#[test]
fn r8_copies_of_a_handle_see_a_disconnect_at_once_during_emit() {
    let signal: Signal<()> = Signal::new();
    let copy: Rc<RefCell<ConnectionHandle>> = Rc::default();
    let c = copy.clone();
    let checked = Rc::new(Cell::new(false));
    let ch = checked.clone();
    let handle = signal.connect_reflective(move |own, _| {
        assert!(c.borrow().is_active());
        own.disconnect();
        assert!(!c.borrow().is_active());
        ch.set(true);
    });
    *copy.borrow_mut() = handle.clone();
    signal.emit(&());
    assert!(checked.get());
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn slot_can_drop_other_slots_captures_while_running() {
    // Disconnecting another slot from inside a slot drops that slot's closure right away
    // (outside any internal borrow), even if dropping it touches the signal again.
    let signal = Rc::new(Signal::<()>::new());
    struct TouchesSignalOnDrop(std::rc::Weak<Signal<()>>, Rc<Cell<u32>>);
    impl Drop for TouchesSignalOnDrop {
        fn drop(&mut self) {
            if let Some(sig) = self.0.upgrade() {
                self.1.set(sig.connection_count() as u32);
            }
        }
    }
    let seen_count = Rc::new(Cell::new(99));
    let guard = TouchesSignalOnDrop(Rc::downgrade(&signal), seen_count.clone());
    let victim = signal.connect(move |_| {
        let _keep = &guard;
    });
    signal.connect(move |_| victim.disconnect()).release();
    signal.emit(&());
    assert_eq!(
        seen_count.get(),
        1,
        "victim's closure dropped, one slot left"
    );
}

// ---- kdnet: connect_weak ------------------------------------------------------------------------

#[test]
fn connect_weak_calls_through_the_owner_and_disconnects_once_it_is_gone() {
    struct Label {
        text: RefCell<String>,
    }
    let signal: Signal<String> = Signal::new();
    let label = Rc::new(Label {
        text: RefCell::new(String::new()),
    });
    let handle = signal.connect_weak(&label, |l, text| *l.text.borrow_mut() = text.clone());
    assert_eq!(Rc::strong_count(&label), 1, "the slot holds no strong ref");
    signal.emit(&"hello".to_string());
    assert_eq!(*label.text.borrow(), "hello");

    let observer = Rc::downgrade(&label);
    drop(label);
    assert!(observer.upgrade().is_none());
    signal.emit(&"ignored".to_string());
    assert!(!handle.is_active());
    assert_eq!(signal.connection_count(), 0);
}

#[test]
fn connect_weak_on_an_owner_that_holds_the_signal_leaks_nothing() {
    struct Model {
        changed: Signal<u32>,
        last: Cell<u32>,
        drops: Rc<Cell<u32>>,
    }
    impl Drop for Model {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let model = Rc::new(Model {
        changed: Signal::new(),
        last: Cell::new(0),
        drops: drops.clone(),
    });
    let handle = model.changed.connect_weak(&model, |m, v| m.last.set(*v));
    model.changed.emit(&7);
    assert_eq!(model.last.get(), 7);
    drop(model);
    assert_eq!(
        drops.get(),
        1,
        "no owner -> signal -> closure -> owner cycle"
    );
    assert!(!handle.is_active());
}

#[test]
fn slot_connected_during_an_emit_can_be_blocked_and_disconnected_in_the_same_emit() {
    let signal = Rc::new(Signal::<u32>::new());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let drops = Rc::new(Cell::new(0));
    let (sig, s, d) = (Rc::downgrade(&signal), seen.clone(), drops.clone());
    let handles: Rc<RefCell<Vec<ConnectionHandle>>> = Rc::default();
    let h = handles.clone();
    signal
        .connect_single_shot(move |_| {
            let sig = sig.upgrade().expect("signal alive during its emit");
            let (s1, s2) = (s.clone(), s.clone());
            let blocked = sig.connect(move |v| s1.borrow_mut().push(format!("blocked {v}")));
            let tracker = DropTracker(d.clone());
            let gone = sig.connect(move |v| {
                let _keep = &tracker;
                s2.borrow_mut().push(format!("gone {v}"));
            });
            assert_eq!(blocked.block(true), Ok(false));
            assert_eq!(sig.is_connection_blocked(&blocked), Ok(true));
            assert!(gone.is_active());
            gone.disconnect();
            assert!(!gone.is_active());
            assert_eq!(
                d.get(),
                1,
                "a slot disconnected before it ever ran is dropped at once"
            );
            h.borrow_mut().push(blocked);
        })
        .release();
    signal.emit(&1);
    assert_eq!(
        signal.connection_count(),
        1,
        "only the blocked slot is left"
    );
    signal.emit(&2);
    assert!(
        seen.borrow().is_empty(),
        "still blocked: {:?}",
        seen.borrow()
    );
    handles.borrow()[0].block(false).unwrap();
    signal.emit(&3);
    assert_eq!(*seen.borrow(), ["blocked 3"]);
    assert_eq!(drops.get(), 1);
}

#[test]
fn closure_of_a_slot_that_disconnects_itself_is_dropped_before_the_emit_returns() {
    // Even when the signal is never touched again, a finished slot's captures must not linger.
    let signal: Signal<()> = Signal::new();
    let drops = Rc::new(Cell::new(0));
    let tracker = DropTracker(drops.clone());
    let (d1, d2) = (drops.clone(), drops.clone());
    let after = Rc::new(Cell::new(0));
    let a = after.clone();
    signal
        .connect_reflective(move |own, _| {
            let _keep = &tracker;
            own.disconnect();
            assert_eq!(d1.get(), 0, "not dropped while it runs");
        })
        .release();
    signal.connect(move |_| a.set(d2.get())).release();
    signal.emit(&());
    assert_eq!(
        after.get(),
        1,
        "dropped right after it returned, before the next slot ran"
    );
    assert_eq!(drops.get(), 1);
}

#[test]
fn slot_connected_during_an_emit_keeps_its_place_before_slots_connected_after_it() {
    let signal = Rc::new(Signal::<()>::new());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (sig, s) = (Rc::downgrade(&signal), seen.clone());
    signal
        .connect_single_shot(move |_| {
            let s2 = s.clone();
            let sig = sig.upgrade().expect("signal alive during its emit");
            sig.connect(move |_| s2.borrow_mut().push("during"))
                .release();
        })
        .release();
    signal.emit(&());
    let s3 = seen.clone();
    let after = signal.connect(move |_| s3.borrow_mut().push("after"));
    signal.emit(&());
    assert_eq!(*seen.borrow(), ["during", "after"]);
    // Lookups still find both (the list stays sorted by connection order).
    assert_eq!(after.block(true), Ok(false));
    signal.emit(&());
    assert_eq!(*seen.borrow(), ["during", "after", "during"]);
}

// ---- review: remaining rows and lifetimes -------------------------------------------------------

#[test]
fn slot_blocking_itself_during_emit_is_skipped_from_the_next_emit_and_unblocks_from_outside() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let l = log.clone();
    let handle = signal.connect_reflective(move |handle, _| {
        l.push("self");
        handle.block(true).unwrap();
    });
    let _after = signal.connect(log.slot("after"));
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["self", "after", "after"]);
    assert_eq!(handle.block(false), Ok(true));
    signal.emit(&());
    assert_eq!(log.take(), ["self", "after"]);
}

#[test]
fn disconnect_all_in_a_nested_emit_also_stops_the_outer_emit() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |depth| {
            l.push(format!("outer{depth}"));
            if *depth == 0 {
                sig.upgrade().unwrap().emit(&1);
            }
        })
        .release();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |depth| {
            l.push(format!("clearer{depth}"));
            if *depth == 1 {
                sig.upgrade().unwrap().disconnect_all();
            }
        })
        .release();
    let _after = signal.connect(log.slot("after"));
    signal.emit(&0);
    assert_eq!(log.take(), ["outer0", "clearer1"]);
    assert_eq!(signal.connection_count(), 0);
    signal.emit(&0);
    assert!(log.take().is_empty());
}

#[test]
fn scoped_connection_outliving_its_signal_drops_harmlessly() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let scoped: ScopedConnection = signal.connect(slot).into();
    signal.emit(&());
    drop(signal);
    assert!(!scoped.is_active());
    assert!(!scoped.handle().is_active());
    drop(scoped);
    assert_eq!(count.get(), 1);
}

#[test]
fn scoped_connection_may_be_dropped_by_its_own_slot() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let holder: Rc<RefCell<Option<ScopedConnection>>> = Rc::default();
    let (h, l) = (holder.clone(), log.clone());
    *holder.borrow_mut() = Some(
        signal
            .connect(move |_| {
                l.push("owned");
                h.borrow_mut().take();
            })
            .into(),
    );
    let _after = signal.connect(log.slot("after"));
    signal.emit(&());
    signal.emit(&());
    assert_eq!(log.take(), ["owned", "after", "after"]);
    assert_eq!(signal.connection_count(), 1);
}

#[test]
fn nested_blockers_restore_in_reverse_order() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let handle = signal.connect(slot);
    {
        let _outer = ConnectionBlocker::new(&handle).unwrap();
        {
            let _inner = ConnectionBlocker::new(&handle).unwrap();
            signal.emit(&());
        }
        assert_eq!(
            handle.is_blocked(),
            Ok(true),
            "the outer blocker still holds"
        );
        signal.emit(&());
    }
    assert_eq!(handle.is_blocked(), Ok(false));
    signal.emit(&());
    assert_eq!(count.get(), 1);
}

#[test]
fn blockers_dropped_out_of_order_restore_what_each_saw() {
    // Each blocker restores the state it found (KDBindings): dropping the outer one first
    // unblocks, and the inner one then restores "blocked". Documented on ConnectionBlocker.
    let signal: Signal<()> = Signal::new();
    let handle = signal.connect(|_| {});
    let outer = ConnectionBlocker::new(&handle).unwrap();
    let inner = ConnectionBlocker::new(&handle).unwrap();
    drop(outer);
    assert_eq!(handle.is_blocked(), Ok(false));
    drop(inner);
    assert_eq!(handle.is_blocked(), Ok(true));
}

#[test]
fn blocker_dropped_inside_a_slot_unblocks_a_later_slot_for_this_emit() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let blocker: Rc<RefCell<Option<ConnectionBlocker>>> = Rc::default();
    let (b, l) = (blocker.clone(), log.clone());
    let _first = signal.connect(move |_| {
        l.push("first");
        b.borrow_mut().take();
    });
    let later = signal.connect(log.slot("later"));
    *blocker.borrow_mut() = Some(ConnectionBlocker::new(&later).unwrap());
    signal.emit(&());
    assert_eq!(log.take(), ["first", "later"]);
}

thread_local! {
    /// A handle a deferred slot disconnects: handles are `!Send`, but the evaluation runs on the
    /// thread that owns the signal, so the slot reaches it through a thread-local.
    static VICTIM: RefCell<Option<ConnectionHandle>> = const { RefCell::new(None) };
}

#[test]
fn deferred_slot_disconnecting_another_cancels_its_invocation_in_the_same_evaluation() {
    let evaluator = ConnectionEvaluator::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let a: Signal<()> = Signal::new();
    let b: Signal<()> = Signal::new();
    let r = ran.clone();
    a.connect_deferred(&evaluator, move |_| {
        r.lock().unwrap().push("a");
        if let Some(victim) = VICTIM.with(|v| v.borrow_mut().take()) {
            victim.disconnect();
        }
    })
    .release();
    let r = ran.clone();
    let hb = b.connect_deferred(&evaluator, move |_| r.lock().unwrap().push("b"));
    VICTIM.with(|v| *v.borrow_mut() = Some(hb.clone()));
    a.emit(&());
    b.emit(&());
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(*ran.lock().unwrap(), ["a"]);
    assert!(!hb.is_active());
}

#[test]
fn queued_invocations_die_with_their_evaluator() {
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<()> = Signal::new();
    let token = Arc::new(());
    let t = token.clone();
    let handle = signal.connect_deferred(&evaluator, move |_| {
        let _keep = &t;
    });
    signal.emit(&());
    signal.emit(&());
    drop(evaluator);
    // The slot itself still holds one reference; the queued calls held none of their own.
    assert_eq!(Arc::strong_count(&token), 2);
    // The connection can never run its slot again: the emit that finds the evaluator gone
    // disconnects it (as Qt drops a queued connection with its receiver), dropping the slot.
    signal.emit(&());
    assert!(!handle.is_active());
    assert_eq!(signal.connection_count(), 0);
    assert_eq!(Arc::strong_count(&token), 1, "the slot is dropped");
}

#[test]
fn slot_that_disconnects_itself_and_then_panics_leaves_the_signal_usable() {
    // The closure of a slot disconnected while running is dropped after it returns. When it
    // panics instead, that drop must still happen outside any borrow of the slot list: here the
    // closure owns a ScopedConnection to the same signal, whose drop disconnects `other`.
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let other = signal.connect(log.slot("other"));
    let scoped: ScopedConnection = other.clone().into();
    let panicker = signal.connect_reflective(move |handle, _| {
        let _keep = &scoped;
        handle.disconnect();
        panic!("deliberate panic after disconnecting itself");
    });
    let result = catch_unwind(AssertUnwindSafe(|| signal.emit(&())));
    assert!(result.is_err());
    assert_eq!(log.take(), ["other"]);
    assert!(!panicker.is_active());
    assert!(
        !other.is_active(),
        "the panicking closure (and its ScopedConnection) is dropped"
    );
    signal.emit(&());
    assert!(log.take().is_empty());
    assert_eq!(signal.connection_count(), 0);
    let _late = signal.connect(log.slot("late"));
    signal.emit(&());
    assert_eq!(log.take(), ["late"]);
}

#[test]
fn a_nested_evaluation_returns_at_once_and_the_order_stays_first_in_first_out() {
    let evaluator = ConnectionEvaluator::new();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    // A worker owns `c` (signals are not Send) and emits it on request, during the batch.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (emitted_tx, emitted_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn({
        let (evaluator, order) = (evaluator.clone(), order.clone());
        move || {
            let c: Signal<()> = Signal::new();
            c.connect_deferred(&evaluator, move |_| order.lock().unwrap().push("c".into()))
                .release();
            go_rx.recv().unwrap();
            c.emit(&());
            emitted_tx.send(()).unwrap();
            // Dropping `c` would cancel its queued call: wait until it ran.
            go_rx.recv().unwrap();
        }
    });
    let a: Signal<()> = Signal::new();
    let b: Signal<()> = Signal::new();
    let (o, nested_evaluator, go) = (order.clone(), evaluator.clone(), go_tx.clone());
    a.connect_deferred(&evaluator, move |_| {
        o.lock().unwrap().push("a".into());
        go.send(()).unwrap();
        emitted_rx.recv().unwrap();
        // E.g. a slot turning a nested event loop.
        let ran = nested_evaluator.evaluate_deferred_connections();
        o.lock().unwrap().push(format!("nested ran {ran}"));
    })
    .release();
    let o = order.clone();
    b.connect_deferred(&evaluator, move |_| o.lock().unwrap().push("b".into()))
        .release();
    a.emit(&());
    b.emit(&());
    assert_eq!(evaluator.evaluate_deferred_connections(), 2);
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    go_tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["a", "nested ran 0", "b", "c"]);
}

#[test]
fn a_panicking_deferred_slot_leaves_the_rest_of_its_batch_queued() {
    use std::sync::atomic::AtomicU32;
    let evaluator = ConnectionEvaluator::new();
    let b_ran = Arc::new(AtomicU32::new(0));
    let a: Signal<()> = Signal::new();
    let b: Signal<()> = Signal::new();
    a.connect_deferred(&evaluator, |_| panic!("deliberate"))
        .release();
    let r = b_ran.clone();
    b.connect_deferred(&evaluator, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    })
    .release();
    a.emit(&());
    b.emit(&());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluator.evaluate_deferred_connections()
    }));
    assert!(result.is_err());
    assert!(evaluator.has_pending(), "b is still queued");
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(b_ran.load(Ordering::SeqCst), 1);
}

/// A call turned away because an evaluation was running leaves its invocations for later; the
/// owner learns of them through `on_invocation_added` once that evaluation ends (an event loop
/// wakes itself then). The wake-up that led to the refused call was spent on it: an owner that
/// evaluates on its own thread while another thread's evaluation runs was not told again.
#[test]
fn an_evaluation_that_turned_a_call_away_notifies_the_owner_when_it_ends() {
    let evaluator = ConnectionEvaluator::new();
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    evaluator.set_on_invocation_added(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (emitted_tx, emitted_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn({
        let evaluator = evaluator.clone();
        move || {
            let c: Signal<()> = Signal::new();
            c.connect_deferred(&evaluator, |_| {}).release();
            go_rx.recv().unwrap();
            c.emit(&());
            emitted_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        }
    });
    let a: Signal<()> = Signal::new();
    let (nested_evaluator, go) = (evaluator.clone(), go_tx.clone());
    a.connect_deferred(&evaluator, move |_| {
        go.send(()).unwrap();
        emitted_rx.recv().unwrap();
        assert_eq!(nested_evaluator.evaluate_deferred_connections(), 0);
    })
    .release();
    a.emit(&());
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(
        notified.load(Ordering::SeqCst),
        3,
        "queued once by the worker, once more when the evaluation that refused a call ended"
    );
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    go_tx.send(()).unwrap();
    worker.join().unwrap();
}

/// KDBindings removes a deferred connection's queued invocations when it is disconnected or its
/// signal is destroyed. Skipping them at evaluation instead kept their copied arguments (and the
/// slot's captures) alive until the evaluator next ran, and a connect-emit-disconnect cycle
/// against an evaluator that runs rarely piled dead invocations up without bound.
#[test]
fn disconnecting_a_deferred_connection_drops_its_queued_calls_at_once() {
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<Arc<()>> = Signal::new();
    let argument = Arc::new(());
    let captured = Arc::new(());
    let c = captured.clone();
    let handle = signal.connect_deferred(&evaluator, move |_| {
        let _keep = &c;
    });
    signal.emit(&argument);
    signal.emit(&argument);
    assert_eq!(Arc::strong_count(&argument), 3, "two queued copies");
    handle.disconnect();
    assert_eq!(
        Arc::strong_count(&argument),
        1,
        "the queued copies of the argument are dropped with the connection"
    );
    assert_eq!(
        Arc::strong_count(&captured),
        1,
        "the slot's captures are dropped with the connection"
    );
    assert!(!evaluator.has_pending());
    assert_eq!(evaluator.evaluate_deferred_connections(), 0);

    // Dropping the signal cancels the same way; another signal's queued call stays.
    let other: Signal<Arc<()>> = Signal::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    other
        .connect_deferred(&evaluator, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    signal
        .connect_deferred(&evaluator, |_| panic!("must not run"))
        .release();
    signal.emit(&argument);
    other.emit(&argument);
    drop(signal);
    assert_eq!(
        Arc::strong_count(&argument),
        2,
        "only `other`'s copy is left"
    );
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(Arc::strong_count(&argument), 1);

    // Connect, emit, disconnect many times without evaluating: nothing accumulates.
    let signal: Signal<Arc<()>> = Signal::new();
    for _ in 0..10_000 {
        let handle = signal.connect_deferred(&evaluator, |_| {});
        signal.emit(&argument);
        handle.disconnect();
    }
    assert_eq!(Arc::strong_count(&argument), 1);
    assert!(!evaluator.has_pending());
}

/// Handing a `ScopedConnection` the connection it already owns keeps that connection (it used
/// to disconnect it first, and then own a dead handle).
#[test]
fn scoped_connection_set_to_its_own_connection_keeps_it() {
    let signal: Signal<()> = Signal::new();
    let (count, slot) = counter();
    let handle = signal.connect(slot);
    let mut scoped = ScopedConnection::new(handle.clone());
    scoped.set(handle.clone());
    assert!(scoped.is_active());
    signal.emit(&());
    assert_eq!(count.get(), 1);
    drop(scoped);
    assert!(!handle.is_active());
}

/// A long-lived signal that is rarely emitted, and short-lived owners connecting to it with
/// `connect_weak`: the connections of owners that are gone used to stay until the next emit,
/// one per owner, without bound (each keeping its closure and the owner's allocation). A later
/// `connect_weak` on the signal now sweeps them, so their number stays proportional to the
/// live ones; the live owners' connections are kept, in order.
#[test]
fn connect_weak_connections_of_dropped_owners_do_not_pile_up_between_emits() {
    let signal: Signal<()> = Signal::new();
    let drops = Rc::new(Cell::new(0));
    let keep: Vec<Rc<Cell<u32>>> = (0..20).map(|_| Rc::new(Cell::new(0))).collect();
    let mut kept_handles = Vec::new();
    for round in 0..10_000usize {
        if round % 500 == 0 {
            let owner = &keep[round / 500];
            kept_handles.push(signal.connect_weak(owner, |o, _| o.set(o.get() + 1)));
        }
        let owner = Rc::new(Cell::new(0u32));
        let tracker = DropTracker(drops.clone());
        signal
            .connect_weak(&owner, move |o, _| {
                let _keep = &tracker;
                o.set(o.get() + 1);
            })
            .release();
        drop(owner);
        assert!(
            signal.connection_count() <= 64,
            "round {round}: {} connections for 20 live owners",
            signal.connection_count()
        );
    }
    assert!(
        drops.get() >= 10_000 - 64,
        "the swept closures were dropped"
    );
    assert!(kept_handles.iter().all(ConnectionHandle::is_active));
    signal.emit(&());
    assert!(
        keep.iter().all(|o| o.get() == 1),
        "every live owner's slot ran once"
    );
    assert_eq!(signal.connection_count(), 20);
    assert_eq!(drops.get(), 10_000);
}

// Mutation audit (round 5): each test below fails when the check it names is removed.

#[test]
fn a_disconnected_handle_no_longer_belongs_to_its_signal() {
    let signal: Signal<i32> = Signal::new();
    let handle = signal.connect(|_| {});
    assert!(handle.belongs_to(&signal));
    handle.disconnect();
    assert!(
        !handle.belongs_to(&signal),
        "belongs_to is about active connections"
    );
}

#[test]
fn handles_of_two_signals_are_never_equal_even_with_the_same_id() {
    // Both signals hand out their first id; the handles still differ.
    let a: Signal<i32> = Signal::new();
    let b: Signal<i32> = Signal::new();
    let ha = a.connect(|_| {});
    let hb = b.connect(|_| {});
    assert_ne!(ha, hb);
    // So ScopedConnection::set with b's handle disconnects a's connection.
    let mut scoped = ScopedConnection::new(ha.clone());
    scoped.set(hb.clone());
    assert!(!ha.is_active(), "the replaced connection was kept");
    assert!(hb.is_active());
}

#[test]
fn disconnect_all_after_disconnecting_a_slot_in_the_same_emit_counts_each_slot_once() {
    let signal: Rc<Signal<()>> = Rc::new(Signal::new());
    let victim: Rc<RefCell<Option<ConnectionHandle>>> = Rc::default();
    let counts: Rc<RefCell<Vec<usize>>> = Rc::default();
    {
        let weak = Rc::downgrade(&signal);
        let victim = Rc::clone(&victim);
        let counts = Rc::clone(&counts);
        signal
            .connect(move |_| {
                let signal = weak.upgrade().unwrap();
                let handle = victim.borrow_mut().take();
                if let Some(handle) = handle {
                    handle.disconnect();
                }
                signal.disconnect_all();
                counts.borrow_mut().push(signal.connection_count());
            })
            .release();
    }
    *victim.borrow_mut() = Some(signal.connect(|_| {}));
    signal.connect(|_| {}).release();
    signal.emit(&());
    assert_eq!(*counts.borrow(), [0]);
    assert_eq!(signal.connection_count(), 0);
    signal.emit(&());
    assert_eq!(*counts.borrow(), [0], "nothing ran after disconnect_all");
}

#[test]
fn disconnect_all_releases_every_weak_reference_to_connect_weak_owners() {
    let signal: Signal<i32> = Signal::new();
    let owner = Rc::new(Cell::new(0));
    signal.connect_weak(&owner, |o, v| o.set(*v)).release();
    signal.emit(&3);
    assert_eq!(owner.get(), 3);
    assert!(Rc::weak_count(&owner) > 0);
    signal.disconnect_all();
    assert_eq!(
        Rc::weak_count(&owner),
        0,
        "the signal still holds a Weak to the owner's allocation"
    );
}

#[test]
fn disconnect_all_drops_the_closures_outside_every_borrow_and_before_it_returns() {
    // A closure owning a ScopedConnection to the same signal disconnects when dropped.
    let signal: Signal<()> = Signal::new();
    let other = signal.connect(|_| {});
    let scoped: ScopedConnection = other.clone().into();
    signal
        .connect(move |_| {
            let _keep = &scoped;
        })
        .release();
    signal.disconnect_all();
    assert!(!other.is_active());
    assert_eq!(signal.connection_count(), 0);

    // From inside an emit: the other slots' closures are gone when disconnect_all returns.
    let signal: Rc<Signal<()>> = Rc::new(Signal::new());
    let marker = Rc::new(());
    let seen: Rc<Cell<usize>> = Rc::default();
    {
        let weak = Rc::downgrade(&signal);
        let marker = Rc::clone(&marker);
        let seen = Rc::clone(&seen);
        signal
            .connect(move |_| {
                weak.upgrade().unwrap().disconnect_all();
                seen.set(Rc::strong_count(&marker));
            })
            .release();
    }
    let m = Rc::clone(&marker);
    signal
        .connect(move |_| {
            let _keep = &m;
        })
        .release();
    signal.emit(&());
    // The running slot's own closure holds one count, the test another.
    assert_eq!(seen.get(), 2, "the later slot's closure was kept");
    assert_eq!(Rc::strong_count(&marker), 1);
}

#[test]
fn debug_shows_whether_an_emit_is_running() {
    let signal: Rc<Signal<()>> = Rc::new(Signal::new());
    let inside: Rc<RefCell<String>> = Rc::default();
    {
        let weak = Rc::downgrade(&signal);
        let inside = Rc::clone(&inside);
        signal
            .connect(move |_| *inside.borrow_mut() = format!("{:?}", weak.upgrade().unwrap()))
            .release();
    }
    assert!(format!("{signal:?}").contains("emitting: false"));
    signal.emit(&());
    assert!(
        inside.borrow().contains("emitting: true"),
        "{}",
        inside.borrow()
    );
}

#[test]
fn connect_weak_then_disconnect_in_a_loop_does_not_pile_up_owner_references() {
    let signal: Signal<i32> = Signal::new();
    let owner = Rc::new(Cell::new(0));
    for _ in 0..1_000 {
        signal.connect_weak(&owner, |o, v| o.set(*v)).disconnect();
    }
    assert_eq!(signal.connection_count(), 0);
    assert!(
        Rc::weak_count(&owner) <= 16,
        "{} weak references kept",
        Rc::weak_count(&owner)
    );
}

/// Every log record of this test binary with the thread that wrote it (the tests run in
/// parallel: each counts its own thread's records).
struct ThreadLogs(Mutex<Vec<(thread::ThreadId, String)>>);

impl log::Log for ThreadLogs {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push((thread::current().id(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static LOGS: ThreadLogs = ThreadLogs(Mutex::new(Vec::new()));

/// The records this thread logged that contain `marker`.
fn logged_here(marker: &str) -> usize {
    let me = thread::current().id();
    LOGS.0
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, line)| *id == me && line.contains(marker))
        .count()
}

/// A deferred connection whose evaluator is gone cannot run its slot again. It said so with a
/// warning at every emit (a signal emitted per event filled the log with one line per event);
/// it now disconnects itself at the first emit that finds the evaluator gone, with one log line.
#[test]
fn a_deferred_connection_whose_evaluator_is_gone_logs_once_and_disconnects() {
    if log::set_logger(&LOGS).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<u32> = Signal::new();
    let first = signal.connect_deferred(&evaluator, |_| {});
    let second = signal.connect_deferred(&evaluator, |_| {});
    drop(evaluator);
    for value in 0..50 {
        signal.emit(&value);
    }
    assert_eq!(
        logged_here("ConnectionEvaluator is gone"),
        2,
        "one line per connection"
    );
    assert!(!first.is_active() && !second.is_active());
    assert_eq!(signal.connection_count(), 0);
}

// ---- The emit's fast paths (tenth round) --------------------------------------------------------
// An emit calls the slots without looking at their state while nothing is out of the ordinary
// (one byte of signal-wide state says so; the first connection sits inline and needs no list
// borrow). These pin down that every change a slot makes under such an emit still takes effect
// as the module docs say, wherever in the list it happens.

/// A lone slot that emits its own signal: the nested emit finds it running and calls nothing, and
/// the signal is back to normal afterwards (the slot runs on the next emit, a connect goes
/// straight into the list).
#[test]
fn a_lone_slot_emitting_its_own_signal_is_not_re_entered() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |depth| {
            l.push(format!("a{depth}"));
            if *depth < 3 {
                let sig = sig.upgrade().unwrap();
                assert!(format!("{sig:?}").contains("emitting: true"));
                sig.emit(&(depth + 1));
            }
        })
        .release();
    signal.emit(&0);
    assert_eq!(log.take(), ["a0"], "the running slot is not called again");
    assert!(format!("{signal:?}").contains("emitting: false"));
    signal.emit(&5);
    assert_eq!(log.take(), ["a5"]);
    let _b = signal.connect(log.slot("b"));
    signal.emit(&5);
    assert_eq!(log.take(), ["a5", "b"]);
}

/// Several slots that each emit the signal again, recursively, until a depth: every nested emit
/// runs exactly the slots not running further up the stack, in order.
#[test]
fn slots_emitting_their_own_signal_recursively_run_once_per_emit_that_can_reach_them() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    for name in ["a", "b", "c"] {
        let (sig, l) = (Rc::downgrade(&signal), log.clone());
        signal
            .connect(move |depth| {
                l.push(format!("{name}{depth}"));
                if *depth < 2 {
                    sig.upgrade().unwrap().emit(&(depth + 1));
                }
            })
            .release();
    }
    signal.emit(&0);
    assert_eq!(
        log.take(),
        [
            "a0", "b1", "c2", "c1", "b2", "b0", "a1", "c2", "c1", "a2", "c0", "a1", "b2", "b1",
            "a2"
        ]
    );
    assert!(format!("{signal:?}").contains("emitting: false"));
    signal.emit(&9);
    assert_eq!(log.take(), ["a9", "b9", "c9"]);
}

/// A lone slot that connects a second one and then emits again: the new slot runs neither in the
/// nested emit nor in the rest of this one, and from the next emit on after the first.
#[test]
fn a_slot_connected_by_a_lone_slot_waits_for_the_next_emit_also_in_a_nested_one() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    let (sig, l) = (Rc::downgrade(&signal), log.clone());
    signal
        .connect(move |v| {
            l.push(format!("a{v}"));
            if *v == 0 {
                let sig = sig.upgrade().unwrap();
                sig.connect(l.slot("new")).release();
                assert_eq!(sig.connection_count(), 2);
                sig.emit(&1);
            }
        })
        .release();
    signal.emit(&0);
    assert_eq!(log.take(), ["a0"]);
    signal.emit(&2);
    assert_eq!(log.take(), ["a2", "new"]);
}

/// The fast emit marks itself as running only by the borrows it holds: the first slot's closure
/// while it runs, the list while the later ones run. A slot connected by the first of three
/// slots (before the list is borrowed) still waits for the next emit, also when a later slot
/// emits again from inside; the nested emit skips the running slot, and the signal says it is
/// emitting from inside every slot and not afterwards.
#[test]
fn a_slot_connected_by_the_first_of_several_waits_for_the_next_emit_also_in_a_nested_one() {
    let signal = Rc::new(Signal::<u32>::new());
    let log = Log::default();
    for name in ["a", "b", "c"] {
        let (sig, l) = (Rc::downgrade(&signal), log.clone());
        signal
            .connect(move |v| {
                let sig = sig.upgrade().unwrap();
                l.push(format!("{name}{v}"));
                assert!(format!("{sig:?}").contains("emitting: true"), "{name}{v}");
                if name == "a" && *v == 0 {
                    sig.connect(l.slot("new")).release();
                    assert_eq!(sig.connection_count(), 4);
                }
                if name == "c" && *v == 0 {
                    sig.emit(&1);
                }
            })
            .release();
    }
    signal.emit(&0);
    assert_eq!(log.take(), ["a0", "b0", "c0", "a1", "b1"]);
    assert!(format!("{signal:?}").contains("emitting: false"));
    signal.emit(&2);
    assert_eq!(log.take(), ["a2", "b2", "c2", "new"]);
}

/// Slots that disconnect themselves at the first, a middle and the last position: each one's
/// closure is dropped right after it returns (before the next slot runs), the others run, and
/// the order of the remaining slots (and of slots connected later) is kept.
#[test]
fn slots_disconnecting_themselves_anywhere_in_the_list_are_dropped_at_once_and_the_order_stays() {
    for position in 0..4 {
        let signal: Signal<()> = Signal::new();
        let log = Log::default();
        let drops = Rc::new(Cell::new(0));
        for i in 0..4 {
            let (l, d) = (log.clone(), drops.clone());
            let tracker = DropTracker(drops.clone());
            signal
                .connect_reflective(move |own, _| {
                    let _keep = &tracker;
                    l.push(format!("s{i} saw {} drops", d.get()));
                    if i == position {
                        own.disconnect();
                    }
                })
                .release();
        }
        signal.emit(&());
        let expected: Vec<String> = (0..4)
            .map(|i| format!("s{i} saw {} drops", u32::from(i > position)))
            .collect();
        assert_eq!(log.take(), expected, "position {position}");
        assert_eq!(
            drops.get(),
            1,
            "position {position}: dropped before emit returned"
        );
        assert_eq!(signal.connection_count(), 3);
        let _late = signal.connect(log.slot("late"));
        signal.emit(&());
        let mut expected: Vec<String> = (0..4)
            .filter(|&i| i != position)
            .map(|i| format!("s{i} saw 1 drops"))
            .collect();
        expected.push("late".into());
        assert_eq!(log.take(), expected, "position {position}, next emit");
    }
}

/// The first connection, disconnected from outside, leaves its place to the next one; the
/// signal emptied and refilled works as a new one.
#[test]
fn disconnecting_the_first_connection_moves_the_next_one_up() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let a = signal.connect(log.slot("a"));
    let b = signal.connect(log.slot("b"));
    let c = signal.connect(log.slot("c"));
    a.disconnect();
    assert!(!a.is_active() && b.is_active());
    assert_eq!(b.block(true), Ok(false));
    let d = signal.connect(log.slot("d"));
    signal.emit(&());
    assert_eq!(log.take(), ["c", "d"]);
    assert_eq!(b.block(false), Ok(true));
    signal.emit(&());
    assert_eq!(log.take(), ["b", "c", "d"]);
    for handle in [&b, &c, &d] {
        handle.disconnect();
    }
    assert_eq!(signal.connection_count(), 0);
    signal.emit(&());
    assert!(log.take().is_empty());
    let e = signal.connect(log.slot("e"));
    let _f = signal.connect(log.slot("f"));
    assert_eq!(signal.connection_count(), 2);
    signal.emit(&());
    assert_eq!(log.take(), ["e", "f"]);
    assert!(e.is_active() && e.belongs_to(&signal));
    assert!(!a.belongs_to(&signal));
}

/// A slot that blocks a later slot and unblocks it again within one call leaves it to run; one
/// that only blocks it stops it for this emit, wherever the two sit.
#[test]
fn blocking_and_unblocking_within_one_slot_call_is_seen_by_the_running_emit() {
    for (controller_at, target_at) in [(0, 1), (0, 3), (1, 2), (2, 3)] {
        for unblock in [false, true] {
            let signal: Signal<()> = Signal::new();
            let log = Log::default();
            let target: Rc<RefCell<ConnectionHandle>> = Rc::default();
            let mut handles = Vec::new();
            for i in 0..4 {
                let l = log.clone();
                let t = target.clone();
                handles.push(signal.connect(move |_| {
                    l.push(format!("s{i}"));
                    if i == controller_at {
                        t.borrow().block(true).unwrap();
                        if unblock {
                            t.borrow().block(false).unwrap();
                        }
                    }
                }));
            }
            *target.borrow_mut() = handles[target_at].clone();
            signal.emit(&());
            let ran: Vec<String> = (0..4)
                .filter(|&i| unblock || i != target_at)
                .map(|i| format!("s{i}"))
                .collect();
            assert_eq!(log.take(), ran, "{controller_at} → {target_at}, {unblock}");
        }
    }
}

/// A lone slot that panics: the signal is not left "emitting" (a connect made afterwards runs
/// at the next emit, not one later), and the slot runs again.
#[test]
fn a_lone_panicking_slot_leaves_the_signal_usable() {
    let signal: Signal<bool> = Signal::new();
    let log = Log::default();
    let l = log.clone();
    let panicker = signal.connect(move |&fail| {
        l.push("panicker");
        assert!(!fail, "deliberate panic in a slot");
    });
    let result = catch_unwind(AssertUnwindSafe(|| signal.emit(&true)));
    assert!(result.is_err());
    assert!(panicker.is_active());
    assert!(format!("{signal:?}").contains("emitting: false"));
    let _after = signal.connect(log.slot("after"));
    signal.emit(&false);
    assert_eq!(log.take(), ["panicker", "panicker", "after"]);
}

// ---- Model-based review (thirteenth round) ------------------------------------------------------
// Regressions found by tests/signal_model.rs.

/// A first slot that disconnects itself has its closure dropped right after its call, and what
/// it captured may touch the same signal when dropped: here a `ScopedConnection` to a third
/// slot, which disconnects it. The fast emit marked itself as
/// running only by the borrows it held, and dropped that closure while holding none: the
/// disconnect settled the list under the running emit, the second slot moved up into the first
/// one's place (already passed), and this emit skipped it.
#[test]
fn a_first_slot_whose_dropped_captures_disconnect_a_later_slot_skips_no_other_slot() {
    let signal: Signal<()> = Signal::new();
    let log = Log::default();
    let owned: Rc<RefCell<Option<ScopedConnection>>> = Rc::default();
    let (l, o) = (log.clone(), owned.clone());
    let _a = signal.connect_reflective(move |own, _| {
        let _owned = &o;
        l.push("a");
        own.disconnect();
    });
    let _b = signal.connect(log.slot("b"));
    let c = signal.connect(log.slot("c"));
    *owned.borrow_mut() = Some(c.clone().into());
    drop(owned);
    signal.emit(&());
    assert_eq!(
        log.take(),
        ["a", "b"],
        "c was disconnected before its turn, b was not"
    );
    assert!(!c.is_active());
    signal.emit(&());
    assert_eq!(log.take(), ["b"]);
}

/// The same with a slot that disconnects itself and whose dropped captures connect a slot: the
/// new slot waits for the next emit, and the second slot runs in this one.
#[test]
fn a_first_slot_whose_dropped_captures_connect_a_slot_skips_no_other_slot() {
    struct ConnectOnDrop(Rc<Signal<()>>, Log);
    impl Drop for ConnectOnDrop {
        fn drop(&mut self) {
            self.0.connect(self.1.slot("new")).release();
        }
    }
    let signal = Rc::new(Signal::<()>::new());
    let log = Log::default();
    let on_drop = ConnectOnDrop(signal.clone(), log.clone());
    let l = log.clone();
    signal
        .connect_reflective(move |own, _| {
            let _on_drop = &on_drop;
            l.push("a");
            own.disconnect();
        })
        .release();
    let _b = signal.connect(log.slot("b"));
    signal.emit(&());
    assert_eq!(log.take(), ["a", "b"]);
    signal.emit(&());
    assert_eq!(log.take(), ["b", "new"]);
    signal.disconnect_all();
}

// ---- Model-based review (fourteenth round) ------------------------------------------------------
// Regressions found by tests/signal_model.rs once it covered connect_weak, connect_deferred,
// dropped signals and captured values whose `Drop` panics.

/// Panics when dropped (unless a panic unwinds already, where a second one would abort).
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            std::panic::resume_unwind(Box::new("deliberate panic in a captured value's Drop"));
        }
    }
}

/// A `connect_weak` sweeps the connections of owners that are gone. It connected its own slot
/// first and then disconnected the gone ones one by one: when a swept closure's captured value
/// panicked in its `Drop`, the panic left `connect_weak` with the rest of the gone connections
/// still connected (and no longer remembered for a later sweep, so each stayed until the next
/// emit), and with the new slot connected but its handle lost. Now the sweep comes first and
/// disconnects every gone connection before it drops their closures (together: the others are
/// dropped while the panic unwinds); the panic then propagates with nothing connected.
#[test]
fn a_panicking_drop_in_a_connect_weak_sweep_leaves_no_swept_slot_and_connects_nothing() {
    let signal: Signal<()> = Signal::new();
    let drops = Rc::new(Cell::new(0));
    let live = Rc::new(Cell::new(0u32));
    let _kept = signal.connect_weak(&live, |l, _| l.set(l.get() + 1));
    let gone = Rc::new(());
    let panics = PanicOnDrop;
    signal
        .connect_weak(&gone, move |_, _| {
            let _keep = &panics;
        })
        .release();
    // Eight remembered owners: the next connect_weak sweeps.
    for _ in 0..6 {
        let tracker = DropTracker(drops.clone());
        signal
            .connect_weak(&gone, move |_, _| {
                let _keep = &tracker;
            })
            .release();
    }
    drop(gone);
    assert_eq!(
        signal.connection_count(),
        8,
        "not swept before a connect_weak"
    );

    let new_slot = DropTracker(drops.clone());
    let swept = catch_unwind(AssertUnwindSafe(|| {
        signal.connect_weak(&live, move |_, _| {
            let _keep = &new_slot;
            panic!("the slot of a connect_weak that panicked must not run");
        })
    }));
    assert!(swept.is_err(), "the captured value's panic propagates");
    assert_eq!(
        drops.get(),
        7,
        "every swept closure and the new slot are dropped"
    );
    assert_eq!(
        signal.connection_count(),
        1,
        "only the live owner's connection is left"
    );
    signal.emit(&());
    assert_eq!(live.get(), 1);
    // The signal is usable: the next connect_weak works.
    let again = signal.connect_weak(&live, |l, _| l.set(l.get() + 10));
    signal.emit(&());
    assert_eq!(live.get(), 12);
    assert!(again.is_active());
}

thread_local! {
    static DISCONNECTED_BY_A_PANICKING_SLOT: RefCell<Option<ConnectionHandle>> =
        const { RefCell::new(None) };
}

/// Counts its drops; `Send`, for deferred slots.
struct SendDropTracker(Arc<AtomicUsize>);

impl Drop for SendDropTracker {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A deferred slot that panics leaves the rest of its batch queued. The calls of a connection
/// that slot had disconnected went back too, though the disconnect removes a connection's
/// queued calls at once: they kept the slot's closure (and their copies of the arguments)
/// alive until the evaluator ran again (for good, if nothing does), and `has_pending` said
/// there was work with none left. They are dropped with the panic now; the live calls stay
/// queued, in order.
#[test]
fn a_panicking_deferred_slot_does_not_put_back_calls_of_a_connection_it_disconnected() {
    let evaluator = ConnectionEvaluator::new();
    let signal: Signal<Arc<()>> = Signal::new();
    signal
        .connect_deferred(&evaluator, |_| {
            if let Some(victim) = DISCONNECTED_BY_A_PANICKING_SLOT.with(|v| v.borrow_mut().take()) {
                victim.disconnect();
            }
            std::panic::resume_unwind(Box::new("deliberate panic in a deferred slot"));
        })
        .release();
    let drops = Arc::new(AtomicUsize::new(0));
    let tracker = SendDropTracker(drops.clone());
    let victim = signal.connect_deferred(&evaluator, move |_| {
        let _keep = &tracker;
        panic!("disconnected before its call's turn: must not run");
    });
    DISCONNECTED_BY_A_PANICKING_SLOT.with(|v| *v.borrow_mut() = Some(victim.clone()));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let other: Signal<()> = Signal::new();
    other
        .connect_deferred(&evaluator, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .release();
    let argument = Arc::new(());
    signal.emit(&argument);
    other.emit(&());

    let result = catch_unwind(AssertUnwindSafe(|| {
        evaluator.evaluate_deferred_connections()
    }));
    assert!(result.is_err());
    assert!(!victim.is_active());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the disconnected slot's closure is dropped with its call"
    );
    assert_eq!(
        Arc::strong_count(&argument),
        1,
        "no copy of the argument is left: one call ran, the other was cancelled"
    );
    assert!(
        evaluator.has_pending(),
        "the other signal's call is still queued"
    );
    assert_eq!(evaluator.evaluate_deferred_connections(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!evaluator.has_pending());
}

/// A call refused because another thread's evaluation runs must lead to a notification once
/// that evaluation ends (the wake-up that led to the refused call was spent on it). The refusing
/// thread marked the refusal only after it saw the evaluation running; when the evaluation
/// ended in between (it stopped running and looked for refusals before the mark was set),
/// nobody was notified and the call waited, queued, for an unrelated wake-up. The race is
/// narrow: this test runs the interleaving many times and checks each round.
#[test]
fn a_call_refused_just_as_another_threads_evaluation_ends_is_not_lost() {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    let evaluator = ConnectionEvaluator::new();
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    evaluator.set_on_invocation_added(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
    // The evaluating slot queues a second call (from inside the evaluation), says so, and
    // returns as soon as the other thread lets it: the other thread then evaluates at once,
    // racing with the end of this evaluation.
    let in_slot = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let round_done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let delay = Arc::new(AtomicUsize::new(0));
    let racer = thread::spawn({
        let (evaluator, in_slot, release, round_done, stop, delay) = (
            evaluator.clone(),
            in_slot.clone(),
            release.clone(),
            round_done.clone(),
            stop.clone(),
            delay.clone(),
        );
        move || {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                if !in_slot.swap(false, Ordering::SeqCst) {
                    std::hint::spin_loop();
                    continue;
                }
                release.store(true, Ordering::SeqCst);
                // A delay that follows the boundary between "refused" (the other thread's
                // evaluation still ran) and "evaluated" (it had ended), where the race is.
                for _ in 0..delay.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                evaluator.evaluate_deferred_connections();
                round += 1;
                round_done.store(round, Ordering::SeqCst);
            }
        }
    });
    let second: Rc<Signal<()>> = Rc::new(Signal::new());
    second.connect_deferred(&evaluator, |_| {}).release();
    let first: Signal<()> = Signal::new();
    first
        .connect_deferred(&evaluator, {
            let (in_slot, release) = (in_slot.clone(), release.clone());
            // `Signal` is not `Send`: the slot reaches `second` through a thread-local.
            move |_| {
                SECOND.with(|s| s.borrow().as_ref().unwrap().emit(&()));
                in_slot.store(true, Ordering::SeqCst);
                while !release.swap(false, Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            }
        })
        .release();
    thread_local! {
        static SECOND: RefCell<Option<Rc<Signal<()>>>> = const { RefCell::new(None) };
    }
    SECOND.with(|s| *s.borrow_mut() = Some(second));
    let started = Instant::now();
    let mut rounds = 0;
    let mut lost = 0;
    let mut refused = 0;
    while started.elapsed() < Duration::from_secs(2) && rounds < 200_000 {
        let before = notified.load(Ordering::SeqCst);
        first.emit(&());
        evaluator.evaluate_deferred_connections();
        rounds += 1;
        while round_done.load(Ordering::SeqCst) != rounds {
            std::hint::spin_loop();
        }
        // Queued: the first call, the second (from the slot). If the second is still waiting,
        // somebody must have been told after it was queued (a third notification).
        let after = notified.load(Ordering::SeqCst) - before;
        if evaluator.has_pending() {
            refused += 1;
            if after < 3 {
                lost += 1;
            }
            evaluator.evaluate_deferred_connections();
            delay.fetch_add(1, Ordering::SeqCst);
        } else {
            let _ = delay.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
        }
    }
    stop.store(true, Ordering::SeqCst);
    racer.join().unwrap();
    SECOND.with(|s| s.borrow_mut().take());
    eprintln!("{rounds} rounds, {refused} refused, {lost} lost");
    assert_eq!(
        lost, 0,
        "{lost} of {rounds} rounds left a call queued without a notification"
    );
}
