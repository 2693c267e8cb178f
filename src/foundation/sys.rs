//! The one platform seam of kdnet: raw descriptors and how they meet mio.
//!
//! Supplies: [`RawFd`] (the descriptor type of the public API), [`raw_source`] (a mio source for a
//! descriptor kdnet does not own), [`interest_for`] (our notification types as mio interests,
//! including the Linux-only priority interest), [`poll_fd`] (the loop's own descriptor for
//! embedding in a foreign main loop) and [`file_identity`] (which open file a descriptor number
//! stands for). kdnet supports Unix-like systems.

use mio::Interest;
use mio::unix::SourceFd;

use super::NotificationType;

/// A raw file descriptor, as KDFoundation's `FileDescriptorNotifier` takes it.
pub type RawFd = std::os::fd::RawFd;

/// A mio source for a descriptor owned by someone else.
pub(crate) fn raw_source(fd: &RawFd) -> SourceFd<'_> {
    SourceFd(fd)
}

/// The mio interest for one notification type; `None` when the platform cannot watch it.
pub(crate) fn interest_for(kind: NotificationType) -> Option<Interest> {
    match kind {
        NotificationType::Read => Some(Interest::READABLE),
        NotificationType::Write => Some(Interest::WRITABLE),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        NotificationType::Exception => Some(Interest::PRIORITY),
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        NotificationType::Exception => None,
    }
}

/// The epoll/kqueue descriptor behind a mio `Poll`.
pub(crate) fn poll_fd(poll: &mio::Poll) -> RawFd {
    use std::os::fd::AsRawFd;
    poll.as_raw_fd()
}

/// Whether re-arming failed because the descriptor was closed (and perhaps its number reused)
/// since it was registered: ENOENT (epoll forgot it) or EBADF (no such descriptor). Both values
/// are the same on every Unix kdnet supports.
pub(crate) fn is_stale_registration(error: &std::io::Error) -> bool {
    const ENOENT: i32 = 2;
    const EBADF: i32 = 9;
    matches!(error.raw_os_error(), Some(ENOENT | EBADF))
}

/// The device and inode of the open file `fd` refers to, or `None` if it is not open (or the
/// system has no `/proc/self/fd` or `/dev/fd` to ask). Tells a watched descriptor from another
/// file that took its number after it was closed. Sockets and pipes have inodes of their own;
/// eventfds, timerfds and other anonymous-inode descriptors all share one, so they cannot be told
/// apart this way.
pub(crate) fn file_identity(fd: RawFd) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    if fd < 0 {
        return None;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let path = format!("/proc/self/fd/{fd}");
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let path = format!("/dev/fd/{fd}");
    // metadata follows the descriptor's link to the open file itself.
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The errno of a socket of an address family the system does not have (`socket(AF_INET6, …)`
/// on a kernel without IPv6): the same on the BSDs and macOS, different on Linux and Solaris.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const EAFNOSUPPORT: i32 = 97;
/// The errno of a socket of an address family the system does not have.
#[cfg(any(target_os = "solaris", target_os = "illumos"))]
pub(crate) const EAFNOSUPPORT: i32 = 124;
/// The errno of a socket of an address family the system does not have.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "solaris",
    target_os = "illumos"
)))]
pub(crate) const EAFNOSUPPORT: i32 = 47;
