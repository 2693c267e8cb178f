//! UdpSocket over loopback.

mod support;

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use kdnet::network::udp::{DEFAULT_MAX_PENDING_DATAGRAMS, UdpSocket};
use kdnet::network::{SocketError, SocketOperation};
use kdnet::{EventLoop, LoopError};
use support::wait_until;

fn bound(address: &str) -> Rc<UdpSocket> {
    let socket = UdpSocket::new().unwrap();
    socket.bind(address.parse().unwrap()).unwrap();
    socket
}

fn port_of(socket: &UdpSocket) -> u16 {
    socket.local_address().unwrap().port()
}

fn count_ready_reads(socket: &UdpSocket) -> Rc<Cell<usize>> {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    socket
        .ready_read
        .connect(move |_| c.set(c.get() + 1))
        .release();
    count
}

fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

#[test]
fn creating_a_socket_needs_a_loop() {
    assert!(matches!(UdpSocket::new(), Err(LoopError::NoEventLoop)));
}

#[test]
fn datagrams_travel_both_ways() {
    let mut event_loop = EventLoop::new().unwrap();
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    let a_reads = count_ready_reads(&a);
    let b_reads = count_ready_reads(&b);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);

    assert_eq!(
        a.write_datagram(b"ping", localhost, port_of(&b)).unwrap(),
        4
    );
    wait_until(&mut event_loop, || b.has_pending_datagrams());
    assert_eq!(b_reads.get(), 1);
    let (data, from) = b.read_datagram().unwrap();
    assert_eq!(data, b"ping");
    assert_eq!(from, a.local_address().unwrap());
    assert!(b.read_datagram().is_none());

    assert_eq!(
        b.write_datagram(b"pong", from.ip(), from.port()).unwrap(),
        4
    );
    wait_until(&mut event_loop, || a.has_pending_datagrams());
    assert_eq!(a_reads.get(), 1);
    let (data, from) = a.read_datagram().unwrap();
    assert_eq!(data, b"pong");
    assert_eq!(from, b.local_address().unwrap());
}

#[test]
fn a_burst_is_drained_in_one_event() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let ready_reads = count_ready_reads(&receiver);
    let sender = UdpSocket::new().unwrap();
    let port = port_of(&receiver);
    // Small enough for the default kernel receive buffer, big enough that one read per
    // readiness edge would strand most of them.
    const BURST: usize = 100;
    for i in 0..BURST {
        let payload = format!("datagram {i}");
        sender
            .write_datagram(payload.as_bytes(), IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            .unwrap();
    }
    assert!(sender.is_bound(), "the first write bound the sender");
    wait_until(&mut event_loop, || {
        receiver.pending_datagram_count() == BURST
    });
    assert_eq!(ready_reads.get(), 1, "one drain, one signal");
    for i in 0..BURST {
        let (data, _) = receiver.read_datagram().unwrap();
        assert_eq!(data, format!("datagram {i}").as_bytes());
    }
    assert!(!receiver.has_pending_datagrams());
}

#[test]
fn over_the_queue_limit_new_datagrams_are_dropped() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    assert_eq!(
        receiver.max_pending_datagrams(),
        DEFAULT_MAX_PENDING_DATAGRAMS
    );
    receiver.set_max_pending_datagrams(10);
    let sender = bound("127.0.0.1:0");
    let port = port_of(&receiver);
    for i in 0..50u8 {
        sender
            .write_datagram(&[i], IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            .unwrap();
    }
    wait_until(&mut event_loop, || receiver.dropped_datagram_count() == 40);
    assert_eq!(receiver.pending_datagram_count(), 10);
    let kept: Vec<u8> =
        std::iter::from_fn(|| receiver.read_datagram().map(|(d, _)| d[0])).collect();
    assert_eq!(kept, (0..10).collect::<Vec<u8>>(), "the oldest are kept");

    // With room again, new datagrams are queued.
    sender
        .write_datagram(b"after", IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .unwrap();
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(receiver.read_datagram().unwrap().0, b"after");
}

#[test]
fn the_default_queue_holds_1024_datagrams() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let sender = bound("127.0.0.1:0");
    let port = port_of(&receiver);
    // Sent in batches the kernel buffer can hold; nobody reads, so the queue fills up.
    let total = DEFAULT_MAX_PENDING_DATAGRAMS + 76;
    let mut sent = 0;
    while sent < total {
        let batch = (total - sent).min(100);
        for _ in 0..batch {
            sender
                .write_datagram(b"d", IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                .unwrap();
        }
        sent += batch;
        wait_until(&mut event_loop, || {
            receiver.pending_datagram_count() as u64 + receiver.dropped_datagram_count()
                == sent as u64
        });
    }
    assert_eq!(
        receiver.pending_datagram_count(),
        DEFAULT_MAX_PENDING_DATAGRAMS
    );
    assert_eq!(receiver.dropped_datagram_count(), 76);
}

#[test]
fn ipv6_loopback_works() {
    if !has_ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("[::1]:0");
    let sender = UdpSocket::new().unwrap();
    sender
        .write_datagram(b"six", IpAddr::V6(Ipv6Addr::LOCALHOST), port_of(&receiver))
        .unwrap();
    assert!(
        sender.local_address().unwrap().is_ipv6(),
        "bound to the destination's family"
    );
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    let (data, from) = receiver.read_datagram().unwrap();
    assert_eq!(data, b"six");
    assert_eq!(from.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(from.port(), sender.local_address().unwrap().port());
}

#[test]
fn dual_stack_socket_reaches_ipv4_and_reports_ipv4_senders() {
    if !has_ipv6_loopback() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let mut event_loop = EventLoop::new().unwrap();
    let v4 = bound("127.0.0.1:0");
    let v6 = UdpSocket::new().unwrap();
    if v6.bind("[::]:0".parse().unwrap()).is_err() {
        eprintln!("skipped: cannot bind [::]");
        return;
    }
    match v6.write_datagram(b"mapped", IpAddr::V4(Ipv4Addr::LOCALHOST), port_of(&v4)) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("skipped: IPv6-only sockets on this machine ({e})");
            return;
        }
    }
    wait_until(&mut event_loop, || v4.has_pending_datagrams());
    let (_, from) = v4.read_datagram().unwrap();
    v4.write_datagram(b"back", from.ip(), from.port()).unwrap();
    wait_until(&mut event_loop, || v6.has_pending_datagrams());
    let (data, from) = v6.read_datagram().unwrap();
    assert_eq!(data, b"back");
    assert_eq!(from, v4.local_address().unwrap(), "unmapped to IPv4");
}

#[test]
fn binding_twice_or_to_a_taken_port_fails() {
    let _event_loop = EventLoop::new().unwrap();
    let a = bound("127.0.0.1:0");
    assert!(matches!(
        a.bind("127.0.0.1:0".parse().unwrap()),
        Err(SocketError::InvalidState(_))
    ));
    let b = UdpSocket::new().unwrap();
    let taken: SocketAddr = a.local_address().unwrap();
    match b.bind(taken) {
        Err(err @ SocketError::Io { .. }) => {
            assert_eq!(err.io_kind(), Some(std::io::ErrorKind::AddrInUse));
            assert!(matches!(
                err,
                SocketError::Io {
                    operation: SocketOperation::Bind,
                    ..
                }
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!b.is_bound());
}

#[test]
fn close_releases_the_port_and_drops_the_queue() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let address = receiver.local_address().unwrap();
    let sender = bound("127.0.0.1:0");
    sender
        .write_datagram(b"x", address.ip(), address.port())
        .unwrap();
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    let sources = event_loop.registered_sources();
    receiver.close();
    assert!(!receiver.is_bound());
    assert_eq!(receiver.local_address(), None);
    assert_eq!(receiver.pending_datagram_count(), 0);
    assert_eq!(event_loop.registered_sources(), sources - 1);
    // The port is free again, and the closed socket can be bound anew.
    receiver.bind(address).unwrap();
    assert_eq!(receiver.local_address(), Some(address));
}

#[test]
fn slots_may_close_the_socket_while_it_is_reporting() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let address = receiver.local_address().unwrap();
    let weak = Rc::downgrade(&receiver);
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    receiver
        .ready_read
        .connect(move |_| {
            f.set(true);
            if let Some(socket) = weak.upgrade() {
                let _ = socket.read_datagram();
                socket.close();
            }
        })
        .release();
    let sender = UdpSocket::new().unwrap();
    sender
        .write_datagram(b"bye", address.ip(), address.port())
        .unwrap();
    wait_until(&mut event_loop, || fired.get());
    assert!(!receiver.is_bound());
}

#[test]
fn dropping_the_socket_unregisters_it() {
    let event_loop = EventLoop::new().unwrap();
    let before = event_loop.registered_sources();
    let socket = bound("127.0.0.1:0");
    assert_eq!(event_loop.registered_sources(), before + 1);
    drop(socket);
    assert_eq!(event_loop.registered_sources(), before);
}

/// A `ready_read` slot that reads one datagram per signal (the common QUdpSocket pattern),
/// collecting their payloads.
fn read_one_per_signal(receiver: &Rc<UdpSocket>) -> Rc<std::cell::RefCell<Vec<Vec<u8>>>> {
    let received = Rc::new(std::cell::RefCell::new(Vec::new()));
    let (weak, r) = (Rc::downgrade(receiver), received.clone());
    receiver
        .ready_read
        .connect(move |_| {
            let socket = weak.upgrade().unwrap();
            r.borrow_mut().push(socket.read_datagram().unwrap().0);
        })
        .release();
    received
}

/// A `ready_read` slot that takes one datagram per signal (as QUdpSocket users often do) gets
/// them all: `ready_read` comes again on a later turn while datagrams are left. It came once per
/// drain, so the rest of a burst waited for the next arrival, and with a full queue every later
/// arrival was dropped without a signal: the socket went deaf for good.
#[test]
fn a_slot_reading_one_datagram_per_signal_gets_a_whole_burst() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let address = receiver.local_address().unwrap();
    let received = read_one_per_signal(&receiver);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3u8 {
        sender.send_to(&[i], address).unwrap();
    }
    // Loopback delivers at once: the three wait in the kernel before the first turn.
    support::run_until(&mut event_loop, std::time::Duration::from_secs(1), || {
        received.borrow().len() == 3
    });
    assert_eq!(*received.borrow(), [[0u8], [1], [2]]);
    assert!(!receiver.has_pending_datagrams());
    // Nothing left: no further signal.
    event_loop
        .process_events(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    assert_eq!(received.borrow().len(), 3);
}

/// The same slot on a full queue: once it has read one, new arrivals are queued and announced.
#[test]
fn a_full_queue_read_one_per_signal_does_not_go_deaf() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    receiver.set_max_pending_datagrams(2);
    let address = receiver.local_address().unwrap();
    let received = read_one_per_signal(&receiver);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..4u8 {
        sender.send_to(&[i], address).unwrap();
    }
    support::run_until(&mut event_loop, std::time::Duration::from_secs(1), || {
        received.borrow().len() == 2
    });
    assert_eq!(
        *received.borrow(),
        [[0u8], [1]],
        "2 and 3 found the queue full"
    );
    assert_eq!(receiver.dropped_datagram_count(), 2);
    sender.send_to(&[4], address).unwrap();
    support::run_until(&mut event_loop, std::time::Duration::from_secs(1), || {
        received.borrow().len() == 3
    });
    assert_eq!(*received.borrow(), [[0u8], [1], [4]]);
}

/// A flood of large datagrams the application does not read takes at most the byte limit of
/// memory. With only the datagram limit, 1024 datagrams of up to 64 KiB, a peer could make every
/// socket hold 64 MiB.
#[test]
fn queued_datagrams_are_bounded_in_bytes_too() {
    use kdnet::network::udp::DEFAULT_MAX_PENDING_BYTES;
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let address = receiver.local_address().unwrap();
    assert_eq!(receiver.max_pending_bytes(), DEFAULT_MAX_PENDING_BYTES);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = vec![7u8; 60_000];
    let mut sent = 0;
    for _ in 0..120 {
        if sender.send_to(&big, address).is_ok() {
            sent += 1;
        }
        // One at a time: the kernel's own buffer holds only a few of these.
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    let fit = DEFAULT_MAX_PENDING_BYTES / big.len();
    assert!(receiver.pending_datagram_bytes() <= DEFAULT_MAX_PENDING_BYTES);
    assert!(receiver.pending_datagram_count() <= fit);
    assert!(
        receiver.pending_datagram_count() > fit / 2,
        "loopback lost most datagrams"
    );
    assert!(receiver.dropped_datagram_count() > 0);
    assert!(receiver.pending_datagram_count() as u64 + receiver.dropped_datagram_count() <= sent);

    // Reading frees room; the byte count follows the queue.
    let (data, _) = receiver.read_datagram().unwrap();
    assert_eq!(data.len(), big.len());
    assert_eq!(
        receiver.pending_datagram_bytes(),
        receiver.pending_datagram_count() * big.len()
    );
    receiver.close();
    assert_eq!(receiver.pending_datagram_bytes(), 0);
}

/// A datagram larger than the byte limit still gets through an empty queue.
#[test]
fn a_datagram_over_the_byte_limit_reaches_an_empty_queue() {
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    receiver.set_max_pending_bytes(100);
    let address = receiver.local_address().unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&[1u8; 500], address).unwrap();
    sender.send_to(&[2u8; 10], address).unwrap();
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(
        receiver.pending_datagram_count(),
        1,
        "the second did not fit"
    );
    assert_eq!(receiver.read_datagram().unwrap().0, [1u8; 500]);
    assert_eq!(receiver.dropped_datagram_count(), 1);
}

#[test]
fn a_broadcast_datagram_is_sent_as_with_qudpsocket() {
    // Sockets lacked SO_BROADCAST (QUdpSocket and Go set it on every UDP socket), so any
    // datagram to a broadcast address failed with "permission denied" and nothing could enable it.
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("0.0.0.0:0");
    let sender = UdpSocket::new().unwrap();
    // 127.255.255.255: the broadcast address of the loopback network.
    let broadcast = IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255));
    assert_eq!(
        sender
            .write_datagram(b"anyone?", broadcast, port_of(&receiver))
            .unwrap(),
        7
    );
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(receiver.read_datagram().unwrap().0, b"anyone?");
    // Explicitly bound sockets too.
    let bound_sender = bound("0.0.0.0:0");
    assert_eq!(
        bound_sender
            .write_datagram(b"again", broadcast, port_of(&receiver))
            .unwrap(),
        5
    );
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(receiver.read_datagram().unwrap().0, b"again");
}

/// A destination the socket's family cannot reach is refused as an invalid address naming
/// both sides, not reported as the kernel's misleading "network is unreachable" (a socket bound
/// to `::1` sending to 127.0.0.1) or "address family not supported"; nothing is sent.
#[test]
fn a_destination_of_a_family_the_bound_socket_cannot_reach_is_an_invalid_address() {
    let _event_loop = EventLoop::new().unwrap();
    let v4 = bound("127.0.0.1:0");
    match v4.write_datagram(b"x", IpAddr::V6(Ipv6Addr::LOCALHOST), 9) {
        Err(err @ SocketError::InvalidAddress(_)) => {
            let message = err.to_string();
            assert!(
                message.contains("::1") && message.contains("127.0.0.1"),
                "{message}"
            );
        }
        other => panic!("IPv4 socket to ::1: {other:?}"),
    }
    if !has_ipv6_loopback() {
        return;
    }
    let v6 = bound("[::1]:0");
    match v6.write_datagram(b"x", IpAddr::V4(Ipv4Addr::LOCALHOST), 9) {
        Err(err @ SocketError::InvalidAddress(_)) => {
            let message = err.to_string();
            assert!(
                message.contains("127.0.0.1") && message.contains("::1"),
                "{message}"
            );
        }
        other => panic!("socket bound to ::1 to 127.0.0.1: {other:?}"),
    }
}

/// An IPv4-mapped destination (`::ffff:127.0.0.1`) is the IPv4 address it holds, as senders
/// are reported and lookups answered: a socket bound to IPv4 sends to it (it was refused as
/// "IPv6"), and one bound to `::1`, which cannot reach IPv4, refuses it as an invalid address
/// naming both (it failed with the kernel's "network is unreachable"); a socket bound to a
/// mapped address reaches IPv4 only, and refuses `::1` the same way.
#[test]
fn a_mapped_destination_is_its_ipv4_address() {
    if !has_ipv6_loopback() {
        return;
    }
    let mut event_loop = EventLoop::new().unwrap();
    let receiver = bound("127.0.0.1:0");
    let port = port_of(&receiver);
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());

    let v4 = bound("127.0.0.1:0");
    assert_eq!(v4.write_datagram(b"four", mapped, port).unwrap(), 4);
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(
        receiver.read_datagram().unwrap(),
        (b"four".to_vec(), v4.local_address().unwrap())
    );

    let v6 = bound("[::1]:0");
    match v6.write_datagram(b"x", mapped, port) {
        Err(err @ SocketError::InvalidAddress(_)) => {
            let message = err.to_string();
            assert!(
                message.contains("127.0.0.1") && message.contains("::1"),
                "{message}"
            );
        }
        other => panic!("socket bound to ::1 to {mapped}: {other:?}"),
    }

    let bound_mapped = bound("[::ffff:127.0.0.1]:0");
    assert_eq!(bound_mapped.write_datagram(b"m", mapped, port).unwrap(), 1);
    wait_until(&mut event_loop, || receiver.has_pending_datagrams());
    assert_eq!(receiver.read_datagram().unwrap().0, b"m");
    match bound_mapped.write_datagram(b"x", IpAddr::V6(Ipv6Addr::LOCALHOST), port) {
        Err(SocketError::InvalidAddress(_)) => {}
        other => panic!("socket bound to a mapped address to ::1: {other:?}"),
    }
}
