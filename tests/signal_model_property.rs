//! A generated test of [`Property`]'s re-entrancy rules (its type docs): scripts of sets from
//! outside, with `value_about_to_change` and `value_changed` slots that set the property
//! themselves (a new value, the current one to veto, the value being set), read it, panic, or
//! disconnect themselves, checked against what the docs promise rather than a trace model (the
//! exact order of nested announcements is the property's own business):
//!
//! - a set of the current value emits nothing and returns `false`;
//! - a `value_about_to_change` slot hears `(old, new)` with `old` the property's value at that
//!   moment and `new` different from it;
//! - every `value_changed` observer sees the newest value last: once a set from outside returns,
//!   each connected `value_changed` slot that heard anything during it last heard the
//!   property's value (also when its slots kept changing it until the property refused);
//! - a set that returns `false` left the value as it was;
//! - a value a `value_about_to_change` slot sets while it hears the pair of a set from outside
//!   stands (a veto, when it is the current value): unless a later set from a slot changed it,
//!   it is the property's value when that set returns;
//! - a slot's panic propagates out of the `set` (with the slot's payload), and the next set
//!   from outside announces as usual (the later steps check it);
//! - dropping the property emits `destroyed` once.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::{Rc, Weak};
use std::time::Instant;

use kdnet::Property;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// Scripts run by a plain `cargo test`.
const DEFAULT_CASES: u32 = 5000;
/// Sets the slots of a script make at most (later ones are skipped): slots that always set a
/// new value would otherwise keep one outside set going until the property refuses, every time.
const MAX_SLOT_SETS: u32 = 400;

#[derive(Clone, Copy, Debug)]
enum Act {
    /// Sets this value.
    Set(u8),
    /// Sets the current value (from a `value_about_to_change` slot: a veto).
    SetCurrent,
    /// Sets the value being announced (the `new` of the pair, or the announced value).
    SetAnnounced,
    /// Disconnects the running slot.
    DisconnectSelf,
    Panic,
}

#[derive(Clone, Debug)]
struct Step {
    act: Act,
    /// Only when the slot hears this value (`None`: always).
    when: Option<u8>,
    /// At the slot's first matching call only.
    once: bool,
}

#[derive(Clone, Debug)]
struct SlotSpec {
    /// On `value_about_to_change` (else `value_changed`).
    about: bool,
    program: Vec<Step>,
}

#[derive(Clone, Debug)]
struct Script {
    initial: u8,
    slots: Vec<SlotSpec>,
    sets: Vec<u8>,
}

/// What a slot heard, for the checks after each set.
#[derive(Default)]
struct Heard {
    /// `value_changed` values heard during the current outside set.
    changed: Vec<u8>,
    connected: bool,
}

struct Run {
    property: Property<u8>,
    heard: RefCell<Vec<Heard>>,
    /// The first broken promise, reported by the script (slots cannot return errors).
    broken: RefCell<Option<String>>,
    slot_sets: Cell<u32>,
    /// The pair the running set from outside announces.
    outer: Cell<Option<(u8, u8)>>,
    /// `value_about_to_change` slots on the stack.
    about_depth: Cell<u32>,
    /// The last value an about slot set while hearing `outer` from the outermost emit, and
    /// `slot_sets` after that set.
    stand: Cell<Option<(u8, u32)>>,
}

thread_local! {
    /// Counted over the run: sets from slots, vetoes and overrides from about slots that stood,
    /// announcements that reached a slot more than once, sets a slot's panic cut short, and sets
    /// the property refused.
    static STATS: RefCell<[u64; 5]> = const { RefCell::new([0; 5]) };
}

const STAT_NAMES: [&str; 5] = [
    "sets from slots",
    "about slots' values that stood (checked)",
    "outside sets whose value_changed slot heard several values",
    "outside sets a slot's panic cut short",
    "sets of a new value from slots that did not change it (vetoed or refused)",
];

fn count(stat: usize) {
    STATS.with(|s| s.borrow_mut()[stat] += 1);
}

/// The payload of a slot's panic (`resume_unwind` skips the panic hook: no noise on stderr).
struct SlotPanic;

impl Run {
    fn broke(&self, what: String) {
        self.broken.borrow_mut().get_or_insert(what);
    }

    /// A set from a slot; `outer_pair`: an about slot hearing the outside set's pair.
    fn slot_set(&self, value: u8, outer_pair: bool) {
        if self.slot_sets.get() >= MAX_SLOT_SETS {
            return;
        }
        if outer_pair {
            self.stand.set(Some((value, self.slot_sets.get() + 1)));
        }
        self.slot_sets.set(self.slot_sets.get() + 1);
        count(0);
        let before = self.property.get();
        let changed = self.property.set(value);
        if !changed && value != before && self.property.get() == before {
            count(4);
        }
        if !changed && self.property.get() != before {
            self.broke(format!(
                "a set of {value} from a slot returned false but the value went {before} -> {}",
                self.property.get()
            ));
        }
    }

    /// Runs slot `k`'s program; `announced` is the value it heard.
    fn run_program(
        &self,
        k: usize,
        program: &[Step],
        fired: &mut [bool],
        announced: u8,
        own: &kdnet::ConnectionHandle,
        outer_pair: bool,
    ) {
        for (step, fired) in program.iter().zip(fired.iter_mut()) {
            if step.when.is_some_and(|v| v != announced) {
                continue;
            }
            if step.once && std::mem::replace(fired, true) {
                continue;
            }
            match step.act {
                Act::Set(v) => self.slot_set(v, outer_pair),
                Act::SetCurrent => self.slot_set(self.property.get(), outer_pair),
                Act::SetAnnounced => self.slot_set(announced, outer_pair),
                Act::DisconnectSelf => {
                    own.disconnect();
                    self.heard.borrow_mut()[k].connected = false;
                }
                Act::Panic => resume_unwind(Box::new(SlotPanic)),
            }
        }
    }
}

fn connect(run: &Rc<Run>, k: usize, spec: &SlotSpec) {
    let weak: Weak<Run> = Rc::downgrade(run);
    let program = spec.program.clone();
    let mut fired = vec![false; program.len()];
    if spec.about {
        run.property
            .value_about_to_change
            .connect_reflective(move |own, &(old, new)| {
                let run = weak.upgrade().expect("the script runs");
                let current = run.property.get();
                if old != current || old == new {
                    run.broke(format!(
                        "about slot {k} heard ({old}, {new}) while the value was {current}"
                    ));
                }
                run.about_depth.set(run.about_depth.get() + 1);
                let outer_pair = run.about_depth.get() == 1 && run.outer.get() == Some((old, new));
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    run.run_program(k, &program, &mut fired, new, own, outer_pair)
                }));
                run.about_depth.set(run.about_depth.get() - 1);
                if let Err(panic) = ran {
                    resume_unwind(panic);
                }
            })
            .release();
    } else {
        run.property
            .value_changed
            .connect_reflective(move |own, &value| {
                let run = weak.upgrade().expect("the script runs");
                run.heard.borrow_mut()[k].changed.push(value);
                run.run_program(k, &program, &mut fired, value, own, false);
            })
            .release();
    }
    run.heard.borrow_mut().push(Heard {
        connected: true,
        ..Heard::default()
    });
}

fn run(script: &Script) -> Result<(), TestCaseError> {
    let destroyed = Rc::new(Cell::new(0));
    let run = Rc::new(Run {
        property: Property::new(script.initial),
        heard: RefCell::new(Vec::new()),
        broken: RefCell::new(None),
        slot_sets: Cell::new(0),
        outer: Cell::new(None),
        about_depth: Cell::new(0),
        stand: Cell::new(None),
    });
    let d = destroyed.clone();
    run.property
        .destroyed
        .connect(move |_| d.set(d.get() + 1))
        .release();
    for (k, spec) in script.slots.iter().enumerate() {
        connect(&run, k, spec);
    }
    for (i, &value) in script.sets.iter().enumerate() {
        for heard in run.heard.borrow_mut().iter_mut() {
            heard.changed.clear();
        }
        let before = run.property.get();
        run.outer.set(Some((before, value)));
        run.stand.set(None);
        let result = catch_unwind(AssertUnwindSafe(|| run.property.set(value)));
        let after = run.property.get();
        let panicked = result.is_err();
        let returned = result.as_ref().ok().copied();
        match result {
            Ok(false) => prop_assert_eq!(
                after,
                before,
                "step {}: set({}) returned false but the value changed",
                i,
                value
            ),
            Ok(true) => {}
            Err(panic) => {
                count(3);
                prop_assert!(panic.is::<SlotPanic>(), "step {i}: a panic not of a slot");
                // The next set from outside announces as usual: checked by the next steps.
            }
        }
        if let (Some((stood, sets)), false) = (run.stand.get(), panicked) {
            if sets == run.slot_sets.get() {
                count(1);
                prop_assert_eq!(
                    after,
                    stood,
                    "step {}: set({}) from {}: the value an about slot set does not stand",
                    i,
                    value,
                    before
                );
            }
        }
        if value == before {
            prop_assert!(
                returned == Some(false),
                "step {i}: setting the current value {value} did something"
            );
        }
        if let Some(broken) = run.broken.borrow().clone() {
            return Err(TestCaseError::fail(format!("step {i}: {broken}")));
        }
        let heard = run.heard.borrow();
        if heard.iter().any(|h| h.changed.len() > 1) {
            count(2);
        }
        for (k, h) in heard.iter().enumerate() {
            // After a slot's panic the announcement was cut short: only the values must be
            // the property's.
            if !panicked && h.connected {
                if let Some(&last) = h.changed.last() {
                    prop_assert_eq!(
                        last,
                        after,
                        "step {}: set({}): slot {} last heard {} of {:?}, the value is {}",
                        i,
                        value,
                        k,
                        last,
                        h.changed,
                        after
                    );
                }
            }
        }
    }
    let run = Rc::try_unwrap(run).map_err(|_| TestCaseError::fail("slots hold the script"))?;
    drop(run);
    prop_assert_eq!(destroyed.get(), 1, "destroyed is emitted once");
    Ok(())
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (0..4u8).prop_map(Act::Set),
        2 => Just(Act::SetCurrent),
        2 => Just(Act::SetAnnounced),
        1 => Just(Act::DisconnectSelf),
        1 => Just(Act::Panic),
    ]
}

fn slot_spec() -> impl Strategy<Value = SlotSpec> {
    let step = (act(), prop::option::weighted(0.6, 0..4u8), any::<bool>())
        .prop_map(|(act, when, once)| Step { act, when, once });
    (any::<bool>(), prop::collection::vec(step, 0..3))
        .prop_map(|(about, program)| SlotSpec { about, program })
}

fn script() -> impl Strategy<Value = Script> {
    (
        0..4u8,
        prop::collection::vec(slot_spec(), 1..6),
        prop::collection::vec(0..4u8, 1..12),
    )
        .prop_map(|(initial, slots, sets)| Script {
            initial,
            slots,
            sets,
        })
}

#[test]
fn property_keeps_its_re_entrancy_promises() {
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let started = Instant::now();
    let cases = Cell::new(0u64);
    let result = runner.run(&script(), |script| {
        cases.set(cases.get() + 1);
        run(&script)
    });
    let stats = STATS.with(|s| *s.borrow());
    support::model::finish_run(
        started,
        cases.get(),
        STAT_NAMES.into_iter().zip(stats),
        result,
    );
}
