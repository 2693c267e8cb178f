//! A steady-state emit allocates nothing.
//!
//! This binary installs a counting global allocator (one test binary per allocator). Counts are
//! per thread, so tests running in parallel and the test harness do not disturb each other.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::cell::Cell;
use std::rc::Rc;

use counting_alloc::allocations_during;
use kdnet::{ConnectionBlocker, Property, Signal};

#[test]
fn the_counter_sees_allocations() {
    // Guards the other tests against a counter that never counts.
    let n = allocations_during(|| {
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(8));
        drop(v);
    });
    assert_eq!(n, 1);
}

#[test]
fn steady_state_emit_allocates_nothing() {
    let signal: Signal<(u64, u64)> = Signal::new();
    let sum = Rc::new(Cell::new(0u64));
    let mut handles = Vec::new();
    for _ in 0..16 {
        let s = sum.clone();
        handles.push(signal.connect(move |&(a, b)| s.set(s.get() + a + b)));
    }
    signal.emit(&(0, 0)); // warm-up
    let n = allocations_during(|| {
        for i in 0..10_000 {
            signal.emit(&(i, 1));
        }
    });
    assert_eq!(n, 0, "{n} allocations in 10,000 emits to 16 slots");
    // Each emit of (i, 1) adds i + 1 in each of the 16 slots.
    assert_eq!(sum.get(), 16 * (1..=10_000).sum::<u64>());
}

#[test]
fn blocked_reflective_and_single_shot_slots_allocate_nothing_per_emit() {
    let signal: Signal<u32> = Signal::new();
    let calls = Rc::new(Cell::new(0u32));
    let c = calls.clone();
    let reflective = signal.connect_reflective(move |_own, _| c.set(c.get() + 1));
    let blocked = signal.connect(|_| panic!("blocked slot ran"));
    let _blocker = ConnectionBlocker::new(&blocked).unwrap();
    let c = calls.clone();
    let _single = signal.connect_single_shot(move |_| c.set(c.get() + 100));
    signal.emit(&0); // warm-up; fires and removes the single-shot slot
    assert_eq!(calls.get(), 101);

    let n = allocations_during(|| {
        for i in 0..1_000 {
            signal.emit(&i);
        }
    });
    assert_eq!(n, 0, "{n} allocations");
    assert_eq!(calls.get(), 1_101);
    assert!(reflective.is_active());
}

#[test]
fn disconnecting_from_inside_an_emit_does_not_allocate() {
    let signal: Signal<()> = Signal::new();
    let victim: Rc<Cell<Option<kdnet::ConnectionHandle>>> = Rc::default();
    let armed = Rc::new(Cell::new(false));
    let (v, a) = (victim.clone(), armed.clone());
    signal
        .connect(move |_| {
            if a.get() {
                if let Some(h) = v.take() {
                    h.disconnect();
                }
            }
        })
        .release();
    for i in 0..8 {
        let h = signal.connect(|_| {});
        if i == 3 {
            victim.set(Some(h));
        }
    }
    signal.emit(&());
    armed.set(true);
    let n = allocations_during(|| signal.emit(&()));
    assert_eq!(n, 0, "{n} allocations");
    assert_eq!(signal.connection_count(), 8);
}

#[test]
fn setting_a_copy_property_allocates_nothing() {
    let property = Property::new(0u64);
    let total = Rc::new(Cell::new(0u64));
    let t = total.clone();
    property
        .value_about_to_change
        .connect(move |(old, new)| t.set(t.get() + new - old))
        .release();
    let t = total.clone();
    property
        .value_changed
        .connect(move |v| t.set(t.get() + v))
        .release();
    property.set(1);
    let n = allocations_during(|| {
        for v in 2..1_002 {
            property.set(v);
        }
    });
    assert_eq!(n, 0, "{n} allocations");
    assert_eq!(property.get(), 1_001);
    assert!(total.get() > 0);
}

/// Disconnected slots leave the slot list (at once when no emit runs): connecting and
/// disconnecting in a loop reuses the list's capacity instead of growing it without bound.
#[test]
fn connect_disconnect_cycles_do_not_grow_the_slot_list() {
    let signal: Signal<u32> = Signal::new();
    for _ in 0..4 {
        signal.connect(|_| {}).release();
    }
    signal.disconnect_all();
    let mut connect_allocations = 0;
    for _ in 0..2_000 {
        connect_allocations += allocations_during(|| {
            for _ in 0..4 {
                signal.connect(|_| {}).release();
            }
        });
        signal.disconnect_all();
    }
    assert_eq!(
        connect_allocations, 0,
        "disconnect_all left its slots in the list"
    );
    let n = allocations_during(|| {
        for _ in 0..2_000 {
            signal.connect(|_| {}).disconnect();
        }
    });
    assert_eq!(n, 0, "disconnect left its slot in the list");
    assert_eq!(signal.connection_count(), 0);
}
