//! KDFoundation counterparts: the event loop, descriptor notifiers, timers and posting.
//!
//! # One turn of the loop
//!
//! ```text
//!  process_events(timeout) / run()
//!   1. closures posted before this turn (from this thread, or from others via LoopHandle)
//!   2. poll: epoll_wait for at most min(timeout, next timer, 0 if work is pending)
//!   3. fd readiness -> handler looked up by generational token -> slot(s)
//!   4. timers whose deadline passed (in deadline order)
//!   5. deferred slots queued on the loop's ConnectionEvaluator
//! ```
//!
//! Each stage only handles work that existed when it began, so a busy descriptor, a closure that
//! re-posts itself or a zero-interval timer cannot starve the others.
//!
//! | KDFoundation | kdnet |
//! |---|---|
//! | `EventLoop` (`processEvents`, `exec`, `quit`, `postEvent`, `wakeUp`) | [`EventLoop`] (`process_events`, `run`, `quit`/`exit`, `post`), [`LoopHandle`] (`post`, `quit`, `wake_up`) |
//! | `EventLoop::instance()->processEvents()` / `->postEvent()` from a slot | [`process_events`] / [`post`] (the calling thread's loop) |
//! | `FileDescriptorNotifier` (`triggered`, `setEnabled`) | [`FileDescriptorNotifier`] |
//! | `Timer` (`timeout`, `interval`, `singleShot`, `running`) | [`Timer`] |
//! | `Timer::setTimeout` / `setRecurring` / `cancelTimer` | [`Timer::set_timeout`] / [`Timer::set_recurring`] / [`Timer::cancel_timer`] |

mod error;
mod event_loop;
mod handle;
mod notifier;
mod registry;
mod sys;
mod timer;
mod timer_queue;

pub use error::LoopError;
pub use event_loop::{EventLoop, dispatch_depth, exit_requested, post, process_events};
pub use handle::LoopHandle;
pub use notifier::{FileDescriptorNotifier, NotificationType};
pub(crate) use sys::EAFNOSUPPORT;
pub use sys::RawFd;
pub use timer::{Timer, TimerId};

pub(crate) use event_loop::LoopCore;
pub(crate) use registry::{Readiness, ReadyHandler, SourceKey};
pub(crate) use timer_queue::{TimerHandler, TimerKey, TimerTarget, deadline_after};
