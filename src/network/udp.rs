//! [`UdpSocket`]: datagrams on the event loop (KDNetwork's `UdpSocket` was an empty stub).
//!
//! ```text
//!  kernel ──readable edge──► drain: recv_from until WouldBlock ──► queue (≤ 1024, ≤ 4 MiB) ──► ready_read
//!                                   (1024 reads per turn at most; then re-armed for the next turn)
//!  read_datagram() ◄── queue
//!  write_datagram() ──► send_to (binds an ephemeral port of the destination's family first)
//!                        no send queue: sent within the call, or the call fails
//! ```
//!
//! mio reports readiness as edges, so every readable event empties the kernel buffer into the
//! socket's queue; waiting datagrams would otherwise never be reported again. When the queue is
//! full (in datagrams or in payload bytes), newly arriving datagrams are dropped (as the kernel does when its buffer is full), counted
//! in [`UdpSocket::dropped_datagram_count`] and logged at `WARN` once per drain.
//!
//! Sending has no queue, so there is nothing to drain and no `bytes_written` signal (unlike
//! [`TcpSocket`](crate::network::TcpSocket)): [`UdpSocket::write_datagram`] hands the datagram
//! to the kernel before it returns, and its return value is the report. When the kernel cannot
//! take it (its send buffer is full, which a fast sender can meet on a slow interface but never
//! on loopback, where sending completes at once), the call fails with
//! [`io_kind`](SocketError::io_kind) `Some(WouldBlock)` and the datagram is not sent, as
//! QUdpSocket does: send it again on a later turn (a timer), or drop it, as UDP allows.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::{Rc, Weak};

use mio::Interest;

use super::{SocketError, SocketOperation};
use crate::bindings::Signal;
use crate::foundation::{LoopCore, LoopError, Readiness, ReadyHandler, SourceKey};

/// Datagrams a [`UdpSocket`] queues before it drops new arrivals: 1024.
/// Change it per socket with [`UdpSocket::set_max_pending_datagrams`].
pub const DEFAULT_MAX_PENDING_DATAGRAMS: usize = 1024;

/// Payload bytes a [`UdpSocket`] queues before it drops new arrivals: 4 MiB (1024 datagrams of
/// up to 4 KiB fit). Change it per socket with [`UdpSocket::set_max_pending_bytes`].
pub const DEFAULT_MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Room for the largest UDP payload (65 507 bytes over IPv4, 65 527 over IPv6).
const RECEIVE_BUFFER_LEN: usize = 65_536;

/// Reads per readiness event; a socket flooded faster than we read yields to other sources after
/// this many and is re-armed, so it is reported again on the next turn.
const READS_PER_EVENT: usize = 1024;

/// A UDP socket bound to the current thread's event loop.
///
/// ```
/// use kdnet::EventLoop;
/// use kdnet::network::udp::UdpSocket;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let receiver = UdpSocket::new().unwrap();
/// receiver.bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let port = receiver.local_address().unwrap().port();
///
/// let handle = event_loop.handle();
/// // `connect_weak`: a slot holding its own socket strongly would keep it alive for ever.
/// receiver.ready_read.connect_weak(&receiver, move |r, _| {
///     let (data, _from) = r.read_datagram().unwrap();
///     assert_eq!(data, b"ping");
///     handle.quit();
/// }).release();
///
/// let sender = UdpSocket::new().unwrap();
/// sender.write_datagram(b"ping", "127.0.0.1".parse().unwrap(), port).unwrap();
/// event_loop.run();
/// ```
pub struct UdpSocket {
    /// Emitted once per drain of the kernel buffer that queued at least one datagram, and again
    /// on a later turn while datagrams are left after slots that read some of them (so a slot may
    /// read one datagram per signal, as with QUdpSocket). Slots that read none are not asked
    /// again until the next datagram arrives.
    pub ready_read: Signal<()>,
    /// Emitted when receiving fails (sending errors are returned by
    /// [`write_datagram`](Self::write_datagram) instead).
    pub error_occurred: Signal<SocketError>,
    core: Rc<LoopCore>,
    self_weak: Weak<UdpSocket>,
    bound: RefCell<Option<BoundSocket>>,
    queue: RefCell<VecDeque<(Vec<u8>, SocketAddr)>>,
    max_pending: Cell<usize>,
    max_pending_bytes: Cell<usize>,
    /// Payload bytes in `queue`.
    pending_bytes: Cell<usize>,
    dropped: Cell<u64>,
    /// Datagrams taken by `read_datagram` since the socket was created.
    reads: Cell<u64>,
    /// A repeated `ready_read` is posted for a later turn.
    reannounce_posted: Cell<bool>,
}

struct BoundSocket {
    socket: mio::net::UdpSocket,
    key: SourceKey,
}

/// What one drain of the kernel buffer did.
#[derive(Default)]
struct Drain {
    queued: usize,
    dropped: usize,
    /// The budget ran out before the kernel said WouldBlock.
    needs_rearm: bool,
    error: Option<SocketError>,
}

impl UdpSocket {
    /// Creates an unbound socket on the current thread's loop.
    ///
    /// Fails with [`LoopError::NoEventLoop`] without a loop.
    pub fn new() -> Result<Rc<UdpSocket>, LoopError> {
        let core = LoopCore::current()?;
        Ok(Rc::new_cyclic(|self_weak| UdpSocket {
            ready_read: Signal::new(),
            error_occurred: Signal::new(),
            core,
            self_weak: self_weak.clone(),
            bound: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            max_pending: Cell::new(DEFAULT_MAX_PENDING_DATAGRAMS),
            max_pending_bytes: Cell::new(DEFAULT_MAX_PENDING_BYTES),
            pending_bytes: Cell::new(0),
            dropped: Cell::new(0),
            reads: Cell::new(0),
            reannounce_posted: Cell::new(false),
        }))
    }

    /// Binds to `address` (port 0: an ephemeral port, see [`local_address`](Self::local_address))
    /// and starts receiving.
    ///
    /// Fails with [`SocketError::InvalidState`] if already bound, or the OS error.
    pub fn bind(&self, address: SocketAddr) -> Result<(), SocketError> {
        if self.bound.borrow().is_some() {
            return Err(SocketError::InvalidState("the UDP socket is already bound"));
        }
        let mut socket = mio::net::UdpSocket::bind(address)
            .map_err(|e| SocketError::io(SocketOperation::Bind, e))?;
        // As QUdpSocket (and Go) do: datagrams to broadcast addresses are allowed.
        socket
            .set_broadcast(true)
            .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        let handler: Weak<dyn ReadyHandler> = self.self_weak.clone();
        let key = self
            .core
            .register(&mut socket, Interest::READABLE, handler)
            .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        *self.bound.borrow_mut() = Some(BoundSocket { socket, key });
        Ok(())
    }

    /// Whether the socket is bound (explicitly or by a first write).
    pub fn is_bound(&self) -> bool {
        self.bound.borrow().is_some()
    }

    /// The bound address, `None` while unbound.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.bound
            .borrow()
            .as_ref()
            .and_then(|b| b.socket.local_addr().ok())
    }

    /// Sends `data` as one datagram to `address`:`port`; returns the bytes sent.
    ///
    /// Nothing is queued: the datagram has reached the kernel when this returns `Ok`. A full
    /// kernel send buffer fails with an `Io` error whose [`io_kind`](SocketError::io_kind) is
    /// `WouldBlock` (the datagram was not sent; see the [module docs](self)). A datagram larger
    /// than the path allows (over 65,507 bytes to IPv4, 65,527 to IPv6) fails with an `Io` error
    /// of [`SocketOperation::Write`] ("message too long").
    ///
    /// A datagram to a port nobody listens on is sent all the same (`Ok`): UDP reports no
    /// delivery. The ICMP "port unreachable" that comes back is not reported to an unconnected
    /// socket on Linux, so receiving goes on undisturbed; where the system reports it on a later
    /// receive (Windows), it comes as one [`error_occurred`](Self::error_occurred) with
    /// `ConnectionRefused` or `ConnectionReset`, and receiving goes on too.
    ///
    /// An unbound socket is first bound to an ephemeral port on the unspecified address of
    /// `address`'s family. Broadcast addresses are allowed (`SO_BROADCAST` is set on every
    /// socket, as QUdpSocket does). On a socket bound to `::`, IPv4 destinations are sent to as
    /// IPv4-mapped addresses (works unless the socket is IPv6-only); an IPv4-mapped destination
    /// (`::ffff:127.0.0.1`) is its IPv4 address; a destination of a family the bound address
    /// cannot reach (IPv6 from IPv4 or from a mapped address, IPv4 from `::1`) fails with
    /// [`SocketError::InvalidAddress`] naming both.
    pub fn write_datagram(
        &self,
        data: &[u8],
        address: IpAddr,
        port: u16,
    ) -> Result<usize, SocketError> {
        if !self.is_bound() {
            let unspecified = match address {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            self.bind(SocketAddr::new(unspecified, 0))?;
        }
        let bound = self.bound.borrow();
        let Some(bound) = bound.as_ref() else {
            return Err(SocketError::InvalidState("the UDP socket is not bound"));
        };
        // An IPv4-mapped destination is the IPv4 address it holds (as senders are reported).
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let local = bound.socket.local_addr().ok();
        let destination = match (local, address) {
            // Only a socket bound to `::` (or to a mapped address) reaches IPv4 through mapping;
            // the kernel's error for the others would say "network is unreachable".
            (Some(SocketAddr::V6(local)), IpAddr::V4(v4))
                if local.ip().is_unspecified() || local.ip().to_ipv4_mapped().is_some() =>
            {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port)
            }
            // A socket bound to a mapped address reaches IPv4 only.
            (Some(local @ SocketAddr::V6(v6)), IpAddr::V6(_))
                if v6.ip().to_ipv4_mapped().is_some() =>
            {
                return Err(SocketError::InvalidAddress(format!(
                    "{address} cannot be reached from a socket bound to {local}, an IPv4 \
                     address (bind to :: to reach both families)"
                )));
            }
            (Some(local), _) if local.is_ipv4() != address.is_ipv4() => {
                return Err(SocketError::InvalidAddress(format!(
                    "{address} cannot be reached from a socket bound to {local} (bind to :: to \
                     reach both families)"
                )));
            }
            _ => SocketAddr::new(address, port),
        };
        bound
            .socket
            .send_to(data, destination)
            .map_err(|e| SocketError::io(SocketOperation::Write, e))
    }

    /// The oldest received datagram and its sender, or `None` when none is queued.
    ///
    /// Senders reaching an IPv6 socket over IPv4 are reported with their IPv4 address.
    pub fn read_datagram(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let datagram = self.queue.borrow_mut().pop_front();
        if let Some((data, _)) = &datagram {
            self.reads.set(self.reads.get().wrapping_add(1));
            self.pending_bytes
                .set(self.pending_bytes.get().saturating_sub(data.len()));
        }
        datagram
    }

    /// Whether [`read_datagram`](Self::read_datagram) would return a datagram.
    pub fn has_pending_datagrams(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Datagrams queued for [`read_datagram`](Self::read_datagram).
    pub fn pending_datagram_count(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Payload bytes of the datagrams queued for [`read_datagram`](Self::read_datagram).
    pub fn pending_datagram_bytes(&self) -> usize {
        self.pending_bytes.get()
    }

    /// Sets how many payload bytes received datagrams may take in the queue before new ones are
    /// dropped ([`DEFAULT_MAX_PENDING_BYTES`] by default). A datagram arriving at an empty queue
    /// is always queued (if the datagram limit is not zero), so one larger than the limit is not
    /// lost for ever. Datagrams already queued stay.
    pub fn set_max_pending_bytes(&self, max: usize) {
        self.max_pending_bytes.set(max);
    }

    /// The queue's byte limit.
    pub fn max_pending_bytes(&self) -> usize {
        self.max_pending_bytes.get()
    }

    /// Sets how many received datagrams are queued before new ones are dropped
    /// ([`DEFAULT_MAX_PENDING_DATAGRAMS`] by default). Datagrams already queued stay.
    pub fn set_max_pending_datagrams(&self, max: usize) {
        self.max_pending.set(max);
    }

    /// The queue limit.
    pub fn max_pending_datagrams(&self) -> usize {
        self.max_pending.get()
    }

    /// Datagrams dropped because the queue was full (in datagrams or bytes), since the socket was
    /// created.
    pub fn dropped_datagram_count(&self) -> u64 {
        self.dropped.get()
    }

    /// Stops receiving, releases the port and discards queued datagrams. The socket may be bound
    /// again; signal connections stay.
    pub fn close(&self) {
        let bound = self.bound.borrow_mut().take();
        if let Some(mut bound) = bound {
            self.core.deregister(&mut bound.socket, bound.key);
        }
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        self.pending_bytes.set(0);
        drop(queued);
    }

    /// Empties the kernel buffer into the queue, up to the per-event budget.
    fn drain(&self, readiness: Readiness) -> Drain {
        let mut drain = Drain::default();
        let bound = self.bound.borrow();
        let Some(bound) = bound.as_ref() else {
            return drain;
        };
        if readiness.error {
            if let Ok(Some(e)) = bound.socket.take_error() {
                drain.error = Some(SocketError::io(SocketOperation::Read, e));
            }
        }
        let mut buffer = self.core.take_read_buffer();
        buffer.resize(RECEIVE_BUFFER_LEN, 0);
        let mut queue = self.queue.borrow_mut();
        let max_pending = self.max_pending.get();
        let max_bytes = self.max_pending_bytes.get();
        drain.needs_rearm = true;
        for _ in 0..READS_PER_EVENT {
            match bound.socket.recv_from(&mut buffer) {
                Ok((len, from)) => {
                    let bytes = self.pending_bytes.get();
                    let fits = queue.is_empty() || bytes.saturating_add(len) <= max_bytes;
                    if queue.len() < max_pending && fits {
                        let data = buffer.get(..len).unwrap_or_default().to_vec();
                        queue.push_back((data, unmapped(from)));
                        self.pending_bytes.set(bytes + len);
                        drain.queued += 1;
                    } else {
                        drain.dropped += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drain.needs_rearm = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors caused by earlier sends: reported once, the next datagram may be fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    drain
                        .error
                        .get_or_insert_with(|| SocketError::io(SocketOperation::Read, e));
                }
                Err(e) => {
                    drain.error = Some(SocketError::io(SocketOperation::Read, e));
                    // A persistent error would make re-arming spin; the owner has been told.
                    drain.needs_rearm = false;
                    break;
                }
            }
        }
        drop(queue);
        self.core.return_read_buffer(buffer);
        drain
    }

    /// Emits `ready_read`; if its slots read some datagrams but left others, emits it again on a
    /// later turn (level-like, as QUdpSocket re-arms its notifier on each read).
    fn announce(&self) {
        let reads_before = self.reads.get();
        self.ready_read.emit(&());
        let read_some = self.reads.get() != reads_before;
        if read_some && self.has_pending_datagrams() && !self.reannounce_posted.replace(true) {
            let weak = self.self_weak.clone();
            self.core.post(Box::new(move || {
                if let Some(socket) = weak.upgrade() {
                    socket.reannounce_posted.set(false);
                    if socket.has_pending_datagrams() {
                        socket.announce();
                    }
                }
            }));
        }
    }

    fn rearm(&self) {
        let mut bound = self.bound.borrow_mut();
        if let Some(bound) = bound.as_mut() {
            if let Err(e) = self
                .core
                .reregister(&mut bound.socket, bound.key, Interest::READABLE)
            {
                log::warn!("re-arming UDP socket: {e}");
            }
        }
    }
}

impl ReadyHandler for UdpSocket {
    fn on_ready(&self, readiness: Readiness) {
        let drain = self.drain(readiness);
        if drain.dropped > 0 {
            self.dropped
                .set(self.dropped.get().saturating_add(drain.dropped as u64));
            log::warn!(
                "UDP socket {:?}: queue full ({} datagrams or {} bytes), dropped {} new datagrams",
                self.local_address(),
                self.max_pending.get(),
                self.max_pending_bytes.get(),
                drain.dropped
            );
        }
        if drain.needs_rearm {
            self.rearm();
        }
        // No borrow is held from here on: slots may read, write, close or drop the socket.
        if drain.queued > 0 {
            self.announce();
        }
        if let Some(error) = drain.error {
            self.error_occurred.emit(&error);
        }
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        if let Some(mut bound) = self.bound.get_mut().take() {
            self.core.deregister(&mut bound.socket, bound.key);
        }
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_address", &self.local_address())
            .field("pending", &self.queue.borrow().len())
            .field("dropped", &self.dropped.get())
            .finish()
    }
}

/// An IPv4 sender seen through a dual-stack IPv6 socket, as its IPv4 address.
fn unmapped(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => from,
        },
        SocketAddr::V4(_) => from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_senders_are_reported_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(unmapped(mapped), "127.0.0.1:5000".parse().unwrap());
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }
}
