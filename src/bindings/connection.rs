//! [`ConnectionHandle`], [`ScopedConnection`] and [`ConnectionBlocker`].

use std::fmt;
use std::rc::Weak;

/// What a handle needs from the signal it points into, independent of the signal's argument type.
pub(crate) trait ConnectionTarget {
    fn disconnect(&self, id: u64) -> bool;
    fn contains(&self, id: u64) -> bool;
    fn set_blocked(&self, id: u64, blocked: bool) -> Option<bool>;
    fn is_blocked(&self, id: u64) -> Option<bool>;
}

/// Why a connection operation was refused (KDBindings throws `std::out_of_range` for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection was disconnected, or its signal no longer exists.
    Inactive,
    /// The handle is live but belongs to a different signal.
    ForeignHandle,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Inactive => {
                f.write_str("connection is not active: it was disconnected or its signal is gone")
            }
            ConnectionError::ForeignHandle => {
                f.write_str("connection handle belongs to a different signal")
            }
        }
    }
}

impl std::error::Error for ConnectionError {}

/// Refers to one connection of a [`Signal`](super::Signal) (KDBindings `ConnectionHandle`).
///
/// Handles are cheap to clone; every copy refers to the same connection, so disconnecting through
/// one copy deactivates them all. A handle never keeps its signal alive: once the signal is
/// dropped the handle is inactive. A default handle refers to nothing.
#[must_use = "dropping a ConnectionHandle does not disconnect; keep it, wrap it in a ScopedConnection, or call release()"]
#[derive(Clone, Default)]
pub struct ConnectionHandle {
    target: Option<Weak<dyn ConnectionTarget>>,
    id: u64,
}

impl ConnectionHandle {
    pub(crate) fn new(target: Weak<dyn ConnectionTarget>, id: u64) -> Self {
        ConnectionHandle {
            target: Some(target),
            id,
        }
    }

    /// Disconnects the slot. Idempotent; does nothing on an inactive handle.
    pub fn disconnect(&self) {
        if let Some(target) = self.target.as_ref().and_then(Weak::upgrade) {
            target.disconnect(self.id);
        }
    }

    /// Whether the signal still exists and the slot is still connected.
    pub fn is_active(&self) -> bool {
        self.target
            .as_ref()
            .and_then(Weak::upgrade)
            .is_some_and(|t| t.contains(self.id))
    }

    /// Blocks (`true`) or unblocks (`false`) the slot; returns whether it was blocked before.
    pub fn block(&self, blocked: bool) -> Result<bool, ConnectionError> {
        self.target
            .as_ref()
            .and_then(Weak::upgrade)
            .and_then(|t| t.set_blocked(self.id, blocked))
            .ok_or(ConnectionError::Inactive)
    }

    /// Whether the slot is blocked.
    pub fn is_blocked(&self) -> Result<bool, ConnectionError> {
        self.target
            .as_ref()
            .and_then(Weak::upgrade)
            .and_then(|t| t.is_blocked(self.id))
            .ok_or(ConnectionError::Inactive)
    }

    /// Whether this handle is an active connection of `signal`.
    pub fn belongs_to<A: 'static>(&self, signal: &super::Signal<A>) -> bool {
        self.id_for(signal.target_ptr()).is_some()
    }

    /// Marks the handle as deliberately unused: the connection stays until the signal is dropped
    /// or [`disconnect_all`](super::Signal::disconnect_all)ed, or the slot disconnects itself
    /// (a reflective, single-shot or `connect_weak` slot).
    pub fn release(self) {}

    /// The connection id if the handle is active and points at the signal at `target`.
    pub(crate) fn id_for(&self, target: *const ()) -> Option<u64> {
        let weak = self.target.as_ref()?;
        (weak.as_ptr() as *const () == target && self.is_active()).then_some(self.id)
    }
}

impl PartialEq for ConnectionHandle {
    fn eq(&self, other: &Self) -> bool {
        match (&self.target, &other.target) {
            (None, None) => true,
            (Some(a), Some(b)) => Weak::ptr_eq(a, b) && self.id == other.id,
            _ => false,
        }
    }
}

impl Eq for ConnectionHandle {}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id)
            .field("active", &self.is_active())
            .finish()
    }
}

/// Owns a connection and disconnects it when dropped (KDBindings `ScopedConnection`).
///
/// The idiomatic field type for connections an object makes to signals it does not own:
///
/// ```
/// use kdnet::{ScopedConnection, Signal};
///
/// let signal: Signal<i32> = Signal::new();
/// {
///     let _conn: ScopedConnection = signal.connect(|v| println!("{v}")).into();
///     assert_eq!(signal.connection_count(), 1);
/// }
/// assert_eq!(signal.connection_count(), 0);
/// ```
///
/// Dropped at once, it disconnects at once; the compiler says so:
///
/// ```compile_fail
/// # use kdnet::{ScopedConnection, Signal};
/// # let signal: Signal<i32> = Signal::new();
/// ScopedConnection::new(signal.connect(|v| println!("{v}"))); // unused_must_use
/// ```
#[derive(Debug, Default)]
#[must_use = "dropping a ScopedConnection disconnects it at once; keep it as long as the slot should run"]
pub struct ScopedConnection {
    handle: ConnectionHandle,
}

impl ScopedConnection {
    /// Takes ownership of `handle`.
    pub fn new(handle: ConnectionHandle) -> Self {
        ScopedConnection { handle }
    }

    /// Replaces the owned connection, disconnecting the previous one first (unless `handle`
    /// refers to that same connection, which then stays connected).
    pub fn set(&mut self, handle: ConnectionHandle) {
        let old = std::mem::replace(&mut self.handle, handle);
        if old != self.handle {
            old.disconnect();
        }
    }

    /// The owned handle.
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// Whether the owned connection is active.
    pub fn is_active(&self) -> bool {
        self.handle.is_active()
    }

    /// Gives up ownership without disconnecting.
    pub fn release(mut self) -> ConnectionHandle {
        std::mem::take(&mut self.handle)
    }
}

impl From<ConnectionHandle> for ScopedConnection {
    fn from(handle: ConnectionHandle) -> Self {
        ScopedConnection::new(handle)
    }
}

impl Drop for ScopedConnection {
    fn drop(&mut self) {
        self.handle.disconnect();
    }
}

/// Blocks a connection for its lifetime and then restores the previous blocked state
/// (KDBindings `ConnectionBlocker`), so an already-blocked connection stays blocked.
///
/// Nested blockers on one connection must be dropped in reverse order (as scopes do): each
/// restores the state it found, so dropping the outer one first unblocks the connection while
/// the inner one lives, and the inner one then leaves it blocked.
///
/// ```
/// use kdnet::{ConnectionBlocker, Signal};
///
/// let signal: Signal<()> = Signal::new();
/// let handle = signal.connect(|_| panic!("must not run while blocked"));
/// {
///     let _blocker = ConnectionBlocker::new(&handle).unwrap();
///     signal.emit(&());
/// }
/// assert_eq!(handle.is_blocked(), Ok(false));
/// ```
///
/// Dropped at once, it blocks nothing; the compiler says so:
///
/// ```compile_fail
/// # use kdnet::{ConnectionBlocker, Signal};
/// # let signal: Signal<()> = Signal::new();
/// # let handle = signal.connect(|_| {});
/// ConnectionBlocker::new(&handle).unwrap(); // unused_must_use
/// ```
#[derive(Debug)]
#[must_use = "dropping a ConnectionBlocker unblocks the connection at once; keep it for the scope to block"]
pub struct ConnectionBlocker {
    handle: ConnectionHandle,
    was_blocked: bool,
}

impl ConnectionBlocker {
    /// Blocks `handle`'s connection; fails if the handle is inactive.
    pub fn new(handle: &ConnectionHandle) -> Result<Self, ConnectionError> {
        let was_blocked = handle.block(true)?;
        Ok(ConnectionBlocker {
            handle: handle.clone(),
            was_blocked,
        })
    }
}

impl Drop for ConnectionBlocker {
    fn drop(&mut self) {
        // The connection may have gone meanwhile; then there is nothing to restore.
        let _ = self.handle.block(self.was_blocked);
    }
}
