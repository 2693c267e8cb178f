//! Property: KDBindings' property tests (P1, P3-P6, P11, P12) and the self-set case (R13).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use kdnet::{Property, ScopedConnection};

type Seen<T> = Rc<RefCell<Vec<T>>>;

/// Records every `value_about_to_change` and `value_changed` emission of `property`.
fn record<T: Clone + PartialEq + 'static>(property: &Property<T>) -> (Seen<(T, T)>, Seen<T>) {
    let about: Seen<(T, T)> = Rc::default();
    let changed: Seen<T> = Rc::default();
    let a = about.clone();
    property
        .value_about_to_change
        .connect(move |pair| a.borrow_mut().push(pair.clone()))
        .release();
    let c = changed.clone();
    property
        .value_changed
        .connect(move |v| c.borrow_mut().push(v.clone()))
        .release();
    (about, changed)
}

#[test]
fn p1_builtin_and_custom_values_round_trip() {
    let number = Property::new(1i64);
    assert!(number.set(42));
    assert_eq!(number.get(), 42);

    #[derive(Clone, Debug, PartialEq)]
    struct Point {
        x: f64,
        y: f64,
    }
    let point = Property::new(Point { x: 0.0, y: 0.0 });
    point.set(Point { x: 1.5, y: -2.0 });
    assert_eq!(point.get(), Point { x: 1.5, y: -2.0 });
    assert_eq!(format!("{point:?}"), "Property(Point { x: 1.5, y: -2.0 })");

    let text: Property<String> = Property::default();
    assert_eq!(text.get(), "");
}

#[test]
fn p3_setting_an_equal_value_emits_nothing() {
    let property = Property::new(String::from("same"));
    let (about, changed) = record(&property);
    assert!(!property.set(String::from("same")));
    assert!(about.borrow().is_empty());
    assert!(changed.borrow().is_empty());
}

#[test]
fn p4_a_change_emits_both_signals_in_order() {
    let property = Property::new(1u32);
    let order: Rc<RefCell<Vec<String>>> = Rc::default();
    let prop = Rc::new(property);

    let (o, p) = (order.clone(), Rc::downgrade(&prop));
    prop.value_about_to_change
        .connect(move |(old, new)| {
            let now = p.upgrade().unwrap().get();
            o.borrow_mut()
                .push(format!("about {old}->{new}, holds {now}"));
        })
        .release();
    let (o, p) = (order.clone(), Rc::downgrade(&prop));
    prop.value_changed
        .connect(move |new| {
            let now = p.upgrade().unwrap().get();
            o.borrow_mut().push(format!("changed {new}, holds {now}"));
        })
        .release();

    assert!(prop.set(2));
    assert!(prop.set(3));
    assert_eq!(
        *order.borrow(),
        [
            "about 1->2, holds 1",
            "changed 2, holds 2",
            "about 2->3, holds 2",
            "changed 3, holds 3",
        ]
    );
}

#[test]
fn p5_dropping_a_property_emits_destroyed() {
    let destroyed = Rc::new(Cell::new(0));
    let property = Property::new(0u8);
    let d = destroyed.clone();
    property
        .destroyed
        .connect(move |_| d.set(d.get() + 1))
        .release();
    assert_eq!(destroyed.get(), 0);
    drop(property);
    assert_eq!(destroyed.get(), 1);
}

#[test]
fn p6_equality_is_the_value_types_partial_eq() {
    /// Two readings are "equal" when they differ only in when they were taken.
    #[derive(Clone, Debug)]
    struct Reading {
        celsius: i32,
        taken_at: u64,
    }
    impl PartialEq for Reading {
        fn eq(&self, other: &Self) -> bool {
            self.celsius == other.celsius
        }
    }
    let property = Property::new(Reading {
        celsius: 20,
        taken_at: 1,
    });
    let (_about, changed) = record(&property);
    assert!(!property.set(Reading {
        celsius: 20,
        taken_at: 2,
    }));
    assert_eq!(property.get().taken_at, 1, "an equal value is not stored");
    assert!(property.set(Reading {
        celsius: 21,
        taken_at: 3,
    }));
    assert_eq!(changed.borrow().len(), 1);
    assert_eq!(property.get().taken_at, 3);
}

#[test]
fn p11_p12_moving_a_property_keeps_value_and_connections() {
    let property = Property::new(vec![1u8]);
    let (_about, changed) = record(&property);
    let plain_calls = Rc::new(Cell::new(0));
    let p = plain_calls.clone();
    let _scoped: ScopedConnection = property
        .value_changed
        .connect(move |_| p.set(p.get() + 1))
        .into();

    let moved = Box::new(property); // move-construct
    assert_eq!(moved.get(), [1]);
    moved.set(vec![2]);

    let mut target = Property::new(Vec::new());
    let stale_calls = Rc::new(Cell::new(0));
    let s = stale_calls.clone();
    target
        .value_changed
        .connect(move |_| s.set(s.get() + 1))
        .release();
    target = *moved; // move-assign
    target.set(vec![3]);

    assert_eq!(target.get(), [3]);
    assert_eq!(*changed.borrow(), [vec![2], vec![3]]);
    assert_eq!(plain_calls.get(), 2);
    assert_eq!(
        stale_calls.get(),
        0,
        "the overwritten property's slots are gone"
    );
}

#[test]
fn no_about_to_change_listener_still_emits_value_changed() {
    let property = Property::new(0i32);
    let changed = Rc::new(Cell::new(0));
    let c = changed.clone();
    property.value_changed.connect(move |v| c.set(*v)).release();
    property.set(9);
    assert_eq!(changed.get(), 9);
}

#[test]
fn r13_a_slot_may_set_the_property_it_observes() {
    // An observer first, then a clamp: the clamp's value is announced to every slot after the
    // running announcement (the clamp hears it too, and leaves it be).
    let property = Rc::new(Property::new(0i32));
    let seen: Seen<i32> = Rc::default();
    let s = seen.clone();
    property
        .value_changed
        .connect(move |v| s.borrow_mut().push(*v))
        .release();
    let clamp_runs = Rc::new(Cell::new(0));
    let (p, runs) = (Rc::downgrade(&property), clamp_runs.clone());
    property
        .value_changed
        .connect(move |v| {
            runs.set(runs.get() + 1);
            if *v > 10 {
                p.upgrade().unwrap().set(10);
            }
        })
        .release();

    property.set(15);
    assert_eq!(property.get(), 10);
    assert_eq!(*seen.borrow(), [15, 10]);
    assert_eq!(clamp_runs.get(), 2, "the clamp heard 15, then 10");

    property.set(3);
    assert_eq!(*seen.borrow(), [15, 10, 3]);
    assert_eq!(clamp_runs.get(), 3);
}

#[test]
fn every_observer_sees_the_newest_value_last_when_a_slot_sets_the_property() {
    // A clamp first, then an observer: the observer hears 15 (the running announcement) and then
    // 10, never 15 last while the property holds 10 (KDBindings throws on such a set).
    let property = Rc::new(Property::new(0i32));
    let p = Rc::downgrade(&property);
    property
        .value_changed
        .connect(move |v| {
            if *v > 10 {
                p.upgrade().unwrap().set(10);
            }
        })
        .release();
    let seen: Seen<i32> = Rc::default();
    let s = seen.clone();
    property
        .value_changed
        .connect(move |v| s.borrow_mut().push(*v))
        .release();
    assert!(property.set(15));
    assert_eq!(property.get(), 10);
    assert_eq!(*seen.borrow(), [15, 10]);
}

#[test]
fn a_value_set_from_value_about_to_change_stands() {
    // A clamp on the way in: its value is stored and announced, and the set it interrupted is
    // dropped (it used to overwrite the clamp's value with its own).
    let property = Rc::new(Property::new(0i32));
    let p = Rc::downgrade(&property);
    property
        .value_about_to_change
        .connect(move |(_, new)| {
            if *new > 10 {
                p.upgrade().unwrap().set(10);
            }
        })
        .release();
    let seen: Seen<i32> = Rc::default();
    let s = seen.clone();
    property
        .value_changed
        .connect(move |v| s.borrow_mut().push(*v))
        .release();
    assert!(property.set(15));
    assert_eq!(property.get(), 10);
    assert_eq!(*seen.borrow(), [10]);
}

#[test]
fn a_panicking_observer_leaves_the_property_consistent() {
    let property = Property::new(1u32);
    property
        .value_changed
        .connect(|v| assert_ne!(*v, 13, "deliberate panic on 13"))
        .release();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property.set(13)));
    assert!(result.is_err());
    assert_eq!(
        property.get(),
        13,
        "the value was stored before the slot ran"
    );
    let seen: Seen<u32> = Rc::default();
    let s = seen.clone();
    property
        .value_changed
        .connect(move |v| s.borrow_mut().push(*v))
        .release();
    assert!(property.set(14));
    assert_eq!(property.get(), 14);
    assert_eq!(
        *seen.borrow(),
        [14],
        "the property announces again after a panic"
    );
}

/// A `value_about_to_change` slot that rejects a change by setting the current value: its value
/// stands, as for any other value it sets. Setting the current value does nothing by itself, so
/// the interrupted set used to go ahead: a clamp to 10 let 15 through whenever the property
/// already held 10.
#[test]
fn a_value_about_to_change_slot_setting_the_current_value_vetoes_the_change() {
    let property = Rc::new(Property::new(10i32));
    let p = Rc::downgrade(&property);
    property
        .value_about_to_change
        .connect(move |(_, new)| {
            if *new > 10 {
                p.upgrade().unwrap().set(10);
            }
        })
        .release();
    let seen: Seen<i32> = Rc::default();
    let s = seen.clone();
    property
        .value_changed
        .connect(move |v| s.borrow_mut().push(*v))
        .release();
    assert!(!property.set(15), "vetoed: the value did not change");
    assert_eq!(property.get(), 10);
    assert!(seen.borrow().is_empty());
    assert!(property.set(7));
    assert!(property.set(12));
    assert_eq!(property.get(), 10, "clamped from 7");
    assert_eq!(*seen.borrow(), [7, 10]);
}

/// When a `value_about_to_change` slot sets the property (a clamp, or a veto with the current
/// value), the slots after it in that emit no longer hear the interrupted `(old, new)` pair: it
/// announced a change that never happens, and reached them after the change that did (a
/// recorder heard `(0, 10)`, `value_changed(10)`, then `(0, 15)`).
#[test]
fn value_about_to_change_slots_after_one_that_set_the_property_do_not_hear_the_interrupted_pair() {
    let property = Rc::new(Property::new(0i32));
    let p = Rc::downgrade(&property);
    property
        .value_about_to_change
        .connect(move |&(_, new)| {
            let property = p.upgrade().unwrap();
            if new == 100 {
                // Two sets from one slot: both are announced to every slot.
                property.set(10);
                property.set(9);
            } else if new > 10 {
                property.set(10);
            }
        })
        .release();
    let (about, changed) = record(&property);

    assert!(property.set(15));
    assert_eq!(property.get(), 10);
    assert_eq!(*about.borrow(), [(0, 10)]);
    assert_eq!(*changed.borrow(), [10]);

    // A veto (the current value) is not announced either.
    assert!(!property.set(15));
    assert_eq!(*about.borrow(), [(0, 10)]);

    assert!(property.set(100));
    assert_eq!(property.get(), 9);
    assert_eq!(*about.borrow(), [(0, 10), (10, 9)]);
    assert_eq!(*changed.borrow(), [10, 9]);

    // Later sets reach every slot again.
    assert!(property.set(3));
    assert_eq!(*about.borrow(), [(0, 10), (10, 9), (9, 3)]);
    assert_eq!(*changed.borrow(), [10, 9, 3]);
}

/// Two properties wired as `b = a + 1` and `a = b + 1`, as `(a, b, the last value an observer of
/// each heard)`, after `a.set(1)`; `stop` ends the chain (`None`: never settles).
fn ping_pong(stop: Option<u64>) -> (u64, u64, u64, u64) {
    let a = Rc::new(Property::new(0u64));
    let b = Rc::new(Property::new(0u64));
    let (a_seen, b_seen) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let weak_b = Rc::downgrade(&b);
    a.value_changed
        .connect(move |v| {
            if stop.is_none_or(|stop| *v < stop) {
                weak_b.upgrade().unwrap().set(v + 1);
            }
        })
        .release();
    let weak_a = Rc::downgrade(&a);
    b.value_changed
        .connect(move |v| {
            weak_a.upgrade().unwrap().set(v + 1);
        })
        .release();
    let s = a_seen.clone();
    a.value_changed.connect(move |v| s.set(*v)).release();
    let s = b_seen.clone();
    b.value_changed.connect(move |v| s.set(*v)).release();
    a.set(1);
    (a.get(), b.get(), a_seen.get(), b_seen.get())
}

/// Two properties updating each other for ever (KDBindings throws on the nested emit, Qt
/// overflows its stack) spun at full CPU. The propagation is bounded: after 100 re-announcements
/// of one change, a further set from a slot is refused (logged), and every observer has heard
/// each property's value last.
#[test]
fn properties_updating_each_other_for_ever_are_stopped() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(ping_pong(None)).unwrap());
    let (a, b, a_seen, b_seen) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the properties never settled");
    assert_eq!((a_seen, b_seen), (a, b), "observers heard the values last");
    assert_eq!(b, a + 1, "the refused set was a's: b = a + 1 holds");
    assert!(a > 100 && a < 1_000, "a = {a}");
}

/// A chain that settles within the bound is not cut short, and the property works normally
/// after a refusal.
#[test]
fn properties_updating_each_other_until_they_settle_are_not_cut_short() {
    assert_eq!(ping_pong(Some(181)), (181, 180, 181, 180));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let property = Rc::new(Property::new(0u64));
        let p = Rc::downgrade(&property);
        let handle = property.value_changed.connect(move |v| {
            p.upgrade().unwrap().set(v + 1);
        });
        property.set(1);
        let stopped_at = property.get();
        handle.disconnect();
        // A new change is announced (and may be re-announced) again.
        let p = Rc::downgrade(&property);
        property
            .value_changed
            .connect(move |v| {
                if *v < 1_050 {
                    p.upgrade().unwrap().set(v + 1);
                }
            })
            .release();
        property.set(1_000);
        tx.send((stopped_at, property.get())).unwrap();
    });
    let (stopped_at, after) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a property setting itself for ever never settled");
    assert_eq!(stopped_at, 101, "1, then 100 re-announcements");
    assert_eq!(after, 1_050);
}
