//! [`Property`]: a value that announces its changes (KDBindings `Property<T>`).

use std::cell::{Cell, RefCell};
use std::fmt;

use super::Signal;

/// A value with change signals (KDBindings `Property`).
///
/// [`set`](Self::set) with a value equal to the current one does nothing; otherwise it emits
/// [`value_about_to_change`](Self::value_about_to_change) with `(old, new)`, stores the value, and
/// emits [`value_changed`](Self::value_changed) with the new value. Dropping the property emits
/// [`destroyed`](Self::destroyed).
///
/// A slot may set the property it observes (KDBindings throws here). From a `value_changed` slot
/// the new value is stored at once, and announced to every slot when the current announcement
/// ends, so every observer sees the newest value last. From a `value_about_to_change` slot (a
/// clamp, say) the slot's value is announced and stands: the set that was about to happen is
/// dropped. Setting the current value from there is how such a slot rejects a change: the
/// property keeps its value, and the interrupted `set` returns `false`. Either way the
/// `value_about_to_change` slots after that slot do not hear the interrupted `(old, new)` pair
/// (a change that does not happen); they heard the slot's own change, if any.
///
/// Slots that keep changing the property never let the announcement end (two properties bound
/// to each other as `b = a + 1` and `a = b + 1`; KDBindings throws at the first nested set, Qt
/// recurses until the stack overflows). After 100 newer values in one announcement, a further
/// change from its slots is refused: `set` returns `false` and logs an error, the property
/// keeps (and every slot has heard) its value, and the next `set` from outside the announcement
/// works as usual.
///
/// ```
/// use kdnet::Property;
/// use std::{cell::RefCell, rc::Rc};
///
/// let width = Property::new(10u32);
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let s = seen.clone();
/// width.value_changed.connect(move |w| s.borrow_mut().push(*w)).release();
/// width.set(10); // equal: nothing emitted
/// width.set(12);
/// assert_eq!(width.get(), 12);
/// assert_eq!(*seen.borrow(), vec![12]);
/// ```
pub struct Property<T: 'static> {
    value: RefCell<T>,
    /// Counts the values stored: a set whose signals ran while it moved knows a slot stored a
    /// newer value.
    stores: Cell<u64>,
    /// Counts the calls to `set`, equal values included: a set whose `value_about_to_change`
    /// slots set the property (even to its current value, a veto) leaves the value to them.
    sets: Cell<u64>,
    /// A `value_changed` announcement is running: a set from one of its slots stores its value
    /// and leaves announcing it to that announcement.
    announcing: Cell<bool>,
    /// How many times the running announcement announced a newer value a slot stored; at
    /// `MAX_REANNOUNCEMENTS` further sets from its slots are refused.
    reannounced: Cell<u32>,
    /// How many `value_about_to_change` emits of this property are running: a set made from
    /// one of their slots supersedes their change, so they stop announcing it.
    about_depth: Cell<u32>,
    /// `value_about_to_change`'s slots are marked to sit out the running emits (see
    /// `Signal::skip_running_emits`); cleared when the outermost of them ends.
    about_skipped: Cell<bool>,
    /// Emitted before a change with `(old, new)`.
    pub value_about_to_change: Signal<(T, T)>,
    /// Emitted after a change with the new value.
    pub value_changed: Signal<T>,
    /// Emitted when the property is dropped.
    ///
    /// Connect a slot that runs at once: the property's signals go with it right after this
    /// emit, and dropping a signal cancels its deferred calls still queued (as in KDBindings),
    /// so a [`connect_deferred`](Signal::connect_deferred) slot here never runs (nor do the
    /// queued deferred calls of `value_changed` and `value_about_to_change`).
    pub destroyed: Signal<()>,
}

impl<T: Clone + PartialEq + 'static> Property<T> {
    /// Creates a property holding `value`.
    pub fn new(value: T) -> Self {
        Property {
            value: RefCell::new(value),
            stores: Cell::new(0),
            sets: Cell::new(0),
            announcing: Cell::new(false),
            reannounced: Cell::new(0),
            about_depth: Cell::new(0),
            about_skipped: Cell::new(false),
            value_about_to_change: Signal::new(),
            value_changed: Signal::new(),
            destroyed: Signal::new(),
        }
    }

    /// A copy of the current value.
    pub fn get(&self) -> T {
        self.value.borrow().clone()
    }

    /// Stores `value` and emits the change signals, unless it equals the current value.
    /// Returns whether the value changed.
    pub fn set(&self, value: T) -> bool {
        self.set_inner(value, false)
    }

    /// Sets `value` as [`set`](Self::set) does, except that a `value_about_to_change` slot cannot
    /// refuse it: for an owner whose property states a fact (a timer whose loop is gone does not
    /// run). The slots hear the change; whatever they set, `value` is stored after them.
    pub(crate) fn force_set(&self, value: T) -> bool {
        self.set_inner(value, true)
    }

    fn set_inner(&self, value: T, forced: bool) -> bool {
        let changed = self.store_and_announce(value, forced);
        if self.about_depth.get() > 0 {
            // Set from a `value_about_to_change` slot (or further down): the change being
            // announced there does not happen, so its remaining slots must not hear of it.
            self.value_about_to_change.skip_running_emits();
            self.about_skipped.set(true);
        }
        changed
    }

    fn store_and_announce(&self, value: T, forced: bool) -> bool {
        let sets = self.sets.get().wrapping_add(1);
        self.sets.set(sets);
        let old = {
            let current = self.value.borrow();
            if *current == value {
                return false;
            }
            if self.announcing.get() && self.reannounced.get() >= MAX_REANNOUNCEMENTS {
                // Slots keep changing the property they are told about (two properties bound
                // to each other, b = a + 1 and a = b + 1): the change never settles.
                log::error!(
                    "property change refused: its slots changed it {MAX_REANNOUNCEMENTS} times \
                     while it announced a change (a binding cycle that never settles?)"
                );
                return false;
            }
            // Only pay for the (old, new) copies when somebody listens.
            (self.value_about_to_change.connection_count() > 0).then(|| current.clone())
        };
        let stores = self.stores.get();
        if let Some(old) = old {
            if self.about_skipped.replace(false) {
                // This change is announced to every slot (those after an earlier set's slot too).
                self.value_about_to_change.clear_skipped();
            }
            let about = AboutToChange::start(self);
            self.value_about_to_change.emit(&(old, value.clone()));
            drop(about);
            if self.sets.get() != sets && !(forced && *self.value.borrow() != value) {
                // A slot set a value of its own (announced by that set), or the current one to
                // reject this change: it stands (unless this set is forced and the slot's value
                // is not this one).
                return self.stores.get() != stores;
            }
        }
        let previous = self.value.replace(value.clone());
        drop(previous);
        self.stores.set(stores + 1);
        if self.announcing.get() {
            // Set from a `value_changed` slot: the running announcement ends with this value.
            return true;
        }
        let _announcing = Announcing::start(&self.announcing, &self.reannounced);
        let mut announced = self.stores.get();
        let mut value = value;
        loop {
            self.value_changed.emit(&value);
            if self.stores.get() == announced {
                return true;
            }
            // A slot stored a newer value meanwhile: every slot hears it, so the last value each
            // observer saw is the property's.
            self.reannounced.set(self.reannounced.get() + 1);
            announced = self.stores.get();
            value = self.get();
        }
    }
}

/// Counts a `value_about_to_change` emit as running until dropped (also when a slot panics);
/// the outermost one lets every slot hear later changes again.
struct AboutToChange<'a, T: 'static>(&'a Property<T>);

impl<'a, T: 'static> AboutToChange<'a, T> {
    fn start(property: &'a Property<T>) -> Self {
        property.about_depth.set(property.about_depth.get() + 1);
        AboutToChange(property)
    }
}

impl<T: 'static> Drop for AboutToChange<'_, T> {
    fn drop(&mut self) {
        let property = self.0;
        property.about_depth.set(property.about_depth.get() - 1);
        if property.about_depth.get() == 0 && property.about_skipped.replace(false) {
            property.value_about_to_change.clear_skipped();
        }
    }
}

/// Marks a `value_changed` announcement as running until dropped (also when a slot panics, so
/// that the property announces again afterwards), and counts its re-announcements from zero.
struct Announcing<'a>(&'a Cell<bool>, &'a Cell<u32>);

impl<'a> Announcing<'a> {
    fn start(flag: &'a Cell<bool>, reannounced: &'a Cell<u32>) -> Self {
        flag.set(true);
        reannounced.set(0);
        Announcing(flag, reannounced)
    }
}

impl Drop for Announcing<'_> {
    fn drop(&mut self) {
        self.0.set(false);
        self.1.set(0);
    }
}

/// How many times one `value_changed` announcement re-announces a newer value its slots stored
/// before it refuses their further changes: a change that has not settled by then never will.
const MAX_REANNOUNCEMENTS: u32 = 100;

impl<T: Clone + PartialEq + Default + 'static> Default for Property<T> {
    fn default() -> Self {
        Property::new(T::default())
    }
}

impl<T: 'static> Drop for Property<T> {
    fn drop(&mut self) {
        self.destroyed.emit(&());
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Property<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value.try_borrow() {
            Ok(v) => f.debug_tuple("Property").field(&*v).finish(),
            Err(_) => f.write_str("Property(<being replaced>)"),
        }
    }
}
