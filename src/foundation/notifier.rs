//! [`FileDescriptorNotifier`]: level-triggered descriptor watching on top of edge-triggered mio.
//!
//! As in KDFoundation, a descriptor has one registration whose interest is the union of its
//! enabled notifiers (at most one per [`NotificationType`]). mio only reports edges, so after
//! every dispatch that reached a notifier a still-enabled registration is re-armed
//! (`EPOLL_CTL_MOD` re-evaluates current readiness): a slot that reads only part of the data is
//! triggered again on the next turn. Readiness no enabled notifier matches is not re-armed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};

use mio::Interest;

use super::LoopError;
use super::event_loop::LoopCore;
use super::registry::{Readiness, ReadyHandler, SourceKey};
use super::sys::{self, RawFd};
use crate::bindings::Signal;

/// What a [`FileDescriptorNotifier`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationType {
    /// The descriptor is readable (or hung up, or in error).
    Read,
    /// The descriptor is writable (or hung up, or in error).
    Write,
    /// Priority / out-of-band data (Linux and Android only).
    Exception,
}

impl NotificationType {
    fn index(self) -> usize {
        match self {
            NotificationType::Read => 0,
            NotificationType::Write => 1,
            NotificationType::Exception => 2,
        }
    }

    fn matches(self, r: Readiness) -> bool {
        match self {
            NotificationType::Read => r.readable || r.read_closed || r.error,
            NotificationType::Write => r.writable || r.write_closed || r.error,
            NotificationType::Exception => r.priority || r.error,
        }
    }
}

const KINDS: [NotificationType; 3] = [
    NotificationType::Read,
    NotificationType::Write,
    NotificationType::Exception,
];

/// Watches a descriptor someone else owns and emits [`triggered`](Self::triggered) with it while
/// the condition holds (KDFoundation `FileDescriptorNotifier`).
///
/// Enabled on creation; dropping it unregisters. Dropping its loop disables it for good. Level-triggered: as long as the descriptor stays
/// readable (say) and the notifier enabled, `triggered` fires once per loop turn. Not while its
/// own `triggered` is being emitted, though: a slot that waits in a nested loop (such as
/// [`HttpClient::send_and_wait`](crate::network::http::HttpClient::send_and_wait)) is triggered
/// again after it returns, if the condition still holds.
///
/// Drop (or disable) the notifier before closing the descriptor. One whose descriptor was closed
/// goes quiet; should another file take the number meanwhile (a socket of kdnet's own, say), the
/// notifier leaves that file's registration alone when dropped or disabled, and watches the new
/// file only when enabled again. (The file is recognised by device and inode; eventfds, timerfds
/// and other anonymous-inode descriptors cannot be told apart that way.)
///
/// ```
/// use kdnet::{EventLoop, FileDescriptorNotifier, NotificationType};
/// use std::io::{Read, Write};
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let (mut a, b) = UnixStream::pair().unwrap();
/// b.set_nonblocking(true).unwrap();
/// let notifier = FileDescriptorNotifier::new(b.as_raw_fd(), NotificationType::Read).unwrap();
/// let handle = event_loop.handle();
/// notifier.triggered.connect(move |_fd| {
///     let mut buf = [0u8; 16];
///     let n = (&b).read(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
///     handle.quit();
/// }).release();
/// a.write_all(b"ping").unwrap();
/// event_loop.run();
/// ```
pub struct FileDescriptorNotifier {
    /// Emitted with the descriptor when the watched condition holds.
    pub triggered: Signal<RawFd>,
    fd: RawFd,
    kind: NotificationType,
    enabled: Cell<bool>,
    /// `triggered` is being emitted (a slot may wait in a nested loop meanwhile).
    emitting: Cell<bool>,
    watch: Rc<FdWatch>,
}

impl FileDescriptorNotifier {
    /// Watches `fd` for `kind` on the current thread's loop.
    ///
    /// Fails without a loop, if a notifier of the same type already watches `fd`, or if the
    /// descriptor cannot be registered (not a pollable descriptor, or closed).
    ///
    /// A slot may drop its own notifier and create its replacement at once (a handler switch, a
    /// reconnect whose new socket took the number): the old notifier, kept alive by its running
    /// emission until the slot returns, is not counted as the descriptor's notifier of that type
    /// any more (it reports itself disabled).
    ///
    /// Dropping the returned notifier stops the watch: keep it as long as `triggered` should be
    /// emitted.
    #[must_use = "dropping the returned notifier stops watching the descriptor; keep it"]
    pub fn new(fd: RawFd, kind: NotificationType) -> Result<Rc<Self>, LoopError> {
        let core = LoopCore::current()?;
        if sys::interest_for(kind).is_none() {
            return Err(LoopError::io(
                "watching for exceptions",
                io::Error::from(io::ErrorKind::Unsupported),
            ));
        }
        let watch = FdWatch::for_fd(&core, fd);
        if let Some(existing) = watch.notifier(kind) {
            // Dropped by its owner from one of its own slots (a handler switch, a reconnect):
            // only its running emission holds it (that emission's reference and `existing`), and
            // it goes when the emission ends. The new notifier takes its place now.
            if !(existing.emitting.get() && Rc::strong_count(&existing) == 2) {
                return Err(LoopError::DuplicateNotifier { fd, kind });
            }
            existing.enabled.set(false);
        }
        let notifier = Rc::new(FileDescriptorNotifier {
            triggered: Signal::new(),
            fd,
            kind,
            enabled: Cell::new(true),
            emitting: Cell::new(false),
            watch: Rc::clone(&watch),
        });
        watch.notifiers.borrow_mut()[kind.index()] = Rc::downgrade(&notifier);
        if let Err(e) = watch.update_registration() {
            watch.notifiers.borrow_mut()[kind.index()] = Weak::new();
            return Err(LoopError::io("registering the descriptor", e));
        }
        Ok(notifier)
    }

    /// The watched descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The watched condition.
    pub fn kind(&self) -> NotificationType {
        self.kind
    }

    /// Whether the notifier emits `triggered`.
    pub fn is_enabled(&self) -> bool {
        self.enabled.get()
    }

    /// Enables or disables the notifier (a disabled one is removed from the poller).
    ///
    /// When enabling fails (the descriptor was closed, or its number now stands for a file the
    /// poller refuses) the notifier stays disabled. A disabled notifier is never triggered, even
    /// if updating the registration failed. A notifier whose loop was dropped is disabled for
    /// good: enabling it fails with [`LoopError::LoopGone`].
    pub fn set_enabled(&self, enabled: bool) -> Result<(), LoopError> {
        if enabled && !self.enabled.get() && self.watch.core.is_closed() {
            return Err(LoopError::LoopGone);
        }
        if self.enabled.replace(enabled) != enabled {
            if let Err(e) = self.watch.update_registration() {
                if enabled {
                    self.enabled.set(false);
                }
                return Err(LoopError::io("updating the descriptor registration", e));
            }
        }
        Ok(())
    }
}

impl Drop for FileDescriptorNotifier {
    fn drop(&mut self) {
        {
            let mut notifiers = self.watch.notifiers.borrow_mut();
            let slot = &mut notifiers[self.kind.index()];
            // A notifier that replaced this one (see `new`) keeps its place.
            if std::ptr::eq(slot.as_ptr(), self) {
                *slot = Weak::new();
            }
        }
        if let Err(e) = self.watch.update_registration() {
            log::trace!("unregistering descriptor {}: {e}", self.fd);
        }
    }
}

impl fmt::Debug for FileDescriptorNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDescriptorNotifier")
            .field("fd", &self.fd)
            .field("kind", &self.kind)
            .field("enabled", &self.enabled.get())
            .finish()
    }
}

/// The per-loop table of watched descriptors.
pub(crate) type FdWatchTable = RefCell<HashMap<RawFd, Weak<FdWatch>>>;

/// One descriptor's registration, shared by its notifiers.
pub(crate) struct FdWatch {
    fd: RawFd,
    core: Rc<LoopCore>,
    key: Cell<Option<SourceKey>>,
    /// The open file registered under `key` (see [`sys::file_identity`]); `None` if unknown.
    file: Cell<Option<(u64, u64)>>,
    notifiers: RefCell<[Weak<FileDescriptorNotifier>; 3]>,
    self_weak: Weak<FdWatch>,
}

impl FdWatch {
    fn for_fd(core: &Rc<LoopCore>, fd: RawFd) -> Rc<FdWatch> {
        let table = core.fd_watches();
        if let Some(existing) = table.borrow().get(&fd).and_then(Weak::upgrade) {
            return existing;
        }
        let watch = Rc::new_cyclic(|weak| FdWatch {
            fd,
            core: Rc::clone(core),
            key: Cell::new(None),
            file: Cell::new(None),
            notifiers: RefCell::new([Weak::new(), Weak::new(), Weak::new()]),
            self_weak: weak.clone(),
        });
        table.borrow_mut().insert(fd, Rc::downgrade(&watch));
        watch
    }

    /// The loop is being dropped: disable every notifier of this descriptor and unregister it.
    pub(crate) fn loop_gone(&self) {
        for kind in KINDS {
            if let Some(notifier) = self.notifier(kind) {
                notifier.enabled.set(false);
            }
        }
        if let Some(key) = self.key.get() {
            self.unregister(key);
        }
    }

    fn notifier(&self, kind: NotificationType) -> Option<Rc<FileDescriptorNotifier>> {
        self.notifiers.borrow()[kind.index()].upgrade()
    }

    fn interest(&self) -> Option<Interest> {
        KINDS
            .iter()
            .filter(|k| self.notifier(**k).is_some_and(|n| n.enabled.get()))
            .filter_map(|k| sys::interest_for(*k))
            .reduce(|a, b| a | b)
    }

    /// Whether the descriptor number still stands for the file that was registered. When the
    /// owner closed it behind our back and another file (one of kdnet's own sockets, say) took
    /// the number, `EPOLL_CTL_DEL`/`MOD` by number would remove or take over that file's
    /// registration; the kernel already forgot ours when the file was closed.
    fn still_the_registered_file(&self) -> bool {
        match self.file.get() {
            Some(file) => sys::file_identity(self.fd) == Some(file),
            None => true,
        }
    }

    /// Removes the registration, without touching a file that took the descriptor's number.
    fn unregister(&self, key: SourceKey) {
        if self.still_the_registered_file() {
            let fd = self.fd;
            self.core.deregister(&mut sys::raw_source(&fd), key);
        } else {
            self.core.forget(key);
        }
        self.key.set(None);
        self.file.set(None);
    }

    /// Registers, re-arms, or removes the descriptor according to the enabled notifiers.
    fn update_registration(&self) -> io::Result<()> {
        self.update_registration_checked(true)
    }

    /// `check_file`: make sure the number still stands for the registered file first (a `stat`).
    /// The re-arm after a dispatch skips it: the kernel just reported our registration, so the
    /// file is the one registered (a slot that closes the descriptor must drop or disable its
    /// notifier, which checks), and a syscall per event would double the cost of a dispatch.
    fn update_registration_checked(&self, check_file: bool) -> io::Result<()> {
        let fd = self.fd;
        match (self.interest(), self.key.get()) {
            (None, None) => Ok(()),
            (None, Some(key)) => {
                self.unregister(key);
                Ok(())
            }
            (Some(interest), Some(key)) if check_file && !self.still_the_registered_file() => {
                // Our file is gone; register whatever has the number now, as a new descriptor
                // (refused if it is already registered, e.g. by a kdnet socket).
                self.unregister(key);
                self.register(interest)
            }
            (Some(interest), Some(key)) => {
                match self
                    .core
                    .reregister(&mut sys::raw_source(&fd), key, interest)
                {
                    Ok(()) => Ok(()),
                    // The descriptor was closed (and maybe reused) behind our back: start afresh.
                    Err(e) if sys::is_stale_registration(&e) => {
                        self.core.forget(key);
                        self.key.set(None);
                        self.file.set(None);
                        self.register(interest)
                    }
                    Err(e) => Err(e),
                }
            }
            (Some(interest), None) => self.register(interest),
        }
    }

    fn register(&self, interest: Interest) -> io::Result<()> {
        let fd = self.fd;
        let handler: Weak<dyn ReadyHandler> = self.self_weak.clone();
        let key = self
            .core
            .register(&mut sys::raw_source(&fd), interest, handler)?;
        self.key.set(Some(key));
        self.file.set(sys::file_identity(fd));
        Ok(())
    }
}

impl ReadyHandler for FdWatch {
    fn on_ready(&self, readiness: Readiness) {
        // Re-arms when dropped, also when a slot panics (or the notifier would go quiet).
        let mut rearm = Rearm {
            watch: self,
            delivered: false,
        };
        for kind in KINDS {
            if !kind.matches(readiness) {
                continue;
            }
            // Looked up per delivery: the previous slot may have dropped or disabled this one.
            // Not delivered inside its own emission (a slot waiting in a nested loop): its busy
            // slot would be skipped and the others called inside it, and the re-arm would report
            // the descriptor again at once, every nested turn. The emission's own re-arm, once
            // it ends, reports a condition that still holds.
            if let Some(notifier) = self
                .notifier(kind)
                .filter(|n| n.enabled.get() && !n.emitting.get())
            {
                rearm.delivered = true;
                notifier.emitting.set(true);
                let _emitting = Emitting(&notifier.emitting);
                notifier.triggered.emit(&self.fd);
            }
        }
    }
}

/// Re-arms a descriptor's registration after a dispatch that reached a notifier.
struct Rearm<'a> {
    watch: &'a FdWatch,
    delivered: bool,
}

impl Drop for Rearm<'_> {
    fn drop(&mut self) {
        // Level-triggered emulation: re-arming makes the kernel report the descriptor again on
        // the next poll if the condition still holds. Only after a delivery: a condition no
        // enabled notifier matches (a hang-up, which epoll reports whatever the interest, under
        // an exception notifier alone) would otherwise be reported again at once, every turn,
        // and the loop would spin. Left alone, the next change of state is reported as usual.
        if !self.delivered {
            return;
        }
        if let Err(e) = self.watch.update_registration_checked(false) {
            log::warn!("re-arming descriptor {}: {e}", self.watch.fd);
        }
    }
}

/// Clears a notifier's "emitting" mark when its emission ends (also when a slot panics).
struct Emitting<'a>(&'a Cell<bool>);

impl Drop for Emitting<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        if let Some(key) = self.key.get() {
            self.unregister(key);
        }
        let table = self.core.fd_watches();
        let mut table = table.borrow_mut();
        if table.get(&self.fd).is_some_and(|w| w.strong_count() == 0) {
            table.remove(&self.fd);
        }
    }
}
