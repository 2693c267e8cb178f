//! # kdnet
//!
//! KDAB's KDUtils networking stack for Rust: KDFoundation's event loop, KDBindings' signals and
//! properties, and KDNetwork's sockets, TLS, HTTP/1.1 client and Server-Sent Events client — on a
//! single-threaded [mio] reactor, with callbacks and signals instead of an async runtime.
//!
//! ## Layers
//!
//! | module | KDUtils library | what it holds |
//! |---|---|---|
//! | [`bindings`] | KDBindings | [`Signal`], [`ConnectionHandle`], [`ScopedConnection`], [`ConnectionBlocker`], [`ConnectionEvaluator`], [`Property`] |
//! | [`foundation`] | KDFoundation | [`EventLoop`], [`LoopHandle`], [`FileDescriptorNotifier`], [`Timer`] |
//! | [`network`] | KDNetwork | sockets, TLS, DNS, HTTP, SSE |
//!
//! ## Quick start
//!
//! ```
//! use kdnet::{EventLoop, Timer};
//! use std::time::Duration;
//!
//! let mut event_loop = EventLoop::new().unwrap();
//! let timer = Timer::new().unwrap();
//! timer.single_shot.set(true);
//! timer.interval.set(Duration::from_millis(5));
//! let handle = event_loop.handle();
//! let _conn = timer.timeout.connect(move |_| handle.exit(7));
//! timer.start();
//! assert_eq!(event_loop.run(), 7);
//! ```
//!
//! ## Logging
//!
//! kdnet logs through the [`log`] facade. Targets are module paths (`kdnet::foundation::event_loop`,
//! …). `WARN` is for problems the caller may not see otherwise, `DEBUG` for lifecycle (connect,
//! reconnect, pool reuse), `TRACE` for per-event detail; wire bytes are logged only at `TRACE`,
//! except the start of a refused event stream's body (inside the `SseError` logged at `DEBUG`) and
//! an event ID that cannot be sent back (`WARN`).
#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_code
)]
#![warn(clippy::undocumented_unsafe_blocks, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod bindings;
pub mod foundation;
pub mod network;

pub use bindings::{
    ConnectionBlocker, ConnectionError, ConnectionEvaluator, ConnectionHandle, Property,
    ScopedConnection, Signal,
};
pub use foundation::{
    EventLoop, FileDescriptorNotifier, LoopError, LoopHandle, NotificationType, Timer, TimerId,
};
