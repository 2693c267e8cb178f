//! [`LoopError`]: what can go wrong with the event loop and the objects bound to it.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::NotificationType;

/// Failures of the event loop layer.
///
/// ```
/// use kdnet::foundation::{EventLoop, LoopError, Timer};
///
/// // Loop-bound objects need the thread's loop.
/// assert!(matches!(Timer::new(), Err(LoopError::NoEventLoop)));
///
/// let _event_loop = EventLoop::new().unwrap();
/// let second = EventLoop::new().unwrap_err();
/// assert!(matches!(second, LoopError::AlreadyExists));
/// assert_eq!(second.to_string(), "this thread already has an EventLoop");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LoopError {
    /// A loop-bound object (timer, notifier, socket, client) was created on a thread without an
    /// [`EventLoop`](super::EventLoop).
    NoEventLoop,
    /// [`EventLoop::new`](super::EventLoop::new) was called on a thread that already has a loop.
    AlreadyExists,
    /// The loop a [`LoopHandle`](super::LoopHandle) points to, or a
    /// [`FileDescriptorNotifier`](super::FileDescriptorNotifier) belongs to, has been dropped.
    LoopGone,
    /// The operating system refused a loop operation.
    Io {
        /// What the loop was doing.
        operation: &'static str,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// A notifier of the same type already watches this descriptor (as in KDFoundation, one per type).
    DuplicateNotifier {
        /// The descriptor.
        fd: i32,
        /// The notification type already taken.
        kind: NotificationType,
    },
}

impl LoopError {
    pub(crate) fn io(operation: &'static str, source: io::Error) -> Self {
        LoopError::Io {
            operation,
            source: Arc::new(source),
        }
    }
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopError::NoEventLoop => f.write_str(
                "no EventLoop on this thread: create one with EventLoop::new() before creating timers, notifiers, sockets or clients",
            ),
            LoopError::AlreadyExists => f.write_str("this thread already has an EventLoop"),
            LoopError::LoopGone => f.write_str("the event loop has been dropped"),
            LoopError::Io { operation, source } => write!(f, "{operation} failed: {source}"),
            LoopError::DuplicateNotifier { fd, kind } => {
                let kind = match kind {
                    NotificationType::Read => "read",
                    NotificationType::Write => "write",
                    NotificationType::Exception => "exception",
                };
                write!(f, "descriptor {fd} already has a {kind} notifier")
            }
        }
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoopError::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_notifier_message_names_the_type_in_words() {
        let cases = [
            (NotificationType::Read, "read"),
            (NotificationType::Write, "write"),
            (NotificationType::Exception, "exception"),
        ];
        for (kind, word) in cases {
            let error = LoopError::DuplicateNotifier { fd: 7, kind };
            assert_eq!(
                error.to_string(),
                format!("descriptor 7 already has a {word} notifier")
            );
        }
    }
}
