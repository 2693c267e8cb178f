//! KDBindings counterparts: signals, connections and properties.
//!
//! | KDBindings | kdnet |
//! |---|---|
//! | `Signal<Args...>` | [`Signal<A>`] (several arguments as a tuple) |
//! | `Signal::connect` / `connectReflective` / `connectSingleShot` / `connectDeferred` | [`Signal::connect`] / [`Signal::connect_reflective`] / [`Signal::connect_single_shot`] / [`Signal::connect_deferred`] |
//! | — | [`Signal::connect_weak`] (auto-disconnects when its `Rc` owner is gone) |
//! | `ConnectionHandle` | [`ConnectionHandle`] |
//! | `ScopedConnection` | [`ScopedConnection`] |
//! | `ConnectionBlocker` | [`ConnectionBlocker`] |
//! | `ConnectionEvaluator` | [`ConnectionEvaluator`] |
//! | `Property<T>` | [`Property<T>`] |
//! | `std::out_of_range` from handle operations | [`ConnectionError`] |
//!
//! See [`signal`](Signal) for what happens when a slot changes the signal that is calling it.

mod connection;
mod evaluator;
mod property;
mod signal;

pub use connection::{ConnectionBlocker, ConnectionError, ConnectionHandle, ScopedConnection};
pub use evaluator::ConnectionEvaluator;
pub use property::Property;
pub use signal::Signal;
