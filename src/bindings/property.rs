//! [`Property`]: a value that announces its changes (KDBindings `Property<T>`).

use std::cell::RefCell;
use std::fmt;

use super::Signal;

/// A value with change signals (KDBindings `Property`).
///
/// [`set`](Self::set) with a value equal to the current one does nothing; otherwise it emits
/// [`value_about_to_change`](Self::value_about_to_change) with `(old, new)`, stores the value, and
/// emits [`value_changed`](Self::value_changed) with the new value. Dropping the property emits
/// [`destroyed`](Self::destroyed). A slot may set the property it observes: the nested set emits again,
/// skipping the slot that is running.
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
    /// Emitted before a change with `(old, new)`.
    pub value_about_to_change: Signal<(T, T)>,
    /// Emitted after a change with the new value.
    pub value_changed: Signal<T>,
    /// Emitted when the property is dropped.
    pub destroyed: Signal<()>,
}

impl<T: Clone + PartialEq + 'static> Property<T> {
    /// Creates a property holding `value`.
    pub fn new(value: T) -> Self {
        Property {
            value: RefCell::new(value),
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
        let old = {
            let current = self.value.borrow();
            if *current == value {
                return false;
            }
            // Only pay for the (old, new) copies when somebody listens.
            (self.value_about_to_change.connection_count() > 0).then(|| current.clone())
        };
        if let Some(old) = old {
            self.value_about_to_change.emit(&(old, value.clone()));
        }
        let previous = self.value.replace(value.clone());
        drop(previous);
        self.value_changed.emit(&value);
        true
    }
}

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
