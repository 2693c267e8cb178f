//! FileDescriptorNotifier (KDFoundation L1-L4, L6 and kdnet's additions: level triggering,
//! generational tokens, fairness).
//!
//! Descriptors are Unix socket pairs; the "remote" end is written from the test or another thread.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use kdnet::{EventLoop, FileDescriptorNotifier, LoopError, NotificationType, Timer};

const SAFETY_EXIT: i32 = 99;

/// A timer that makes `run()` return [`SAFETY_EXIT`] if the test has not finished after `secs`.
fn safety_timer(event_loop: &EventLoop, secs: u64) -> Rc<Timer> {
    let handle = event_loop.handle();
    Timer::create_timeout(Duration::from_secs(secs), move || handle.exit(SAFETY_EXIT)).unwrap()
}

/// A connected pair whose `local` end is non-blocking (the one we watch).
fn socket_pair() -> (UnixStream, UnixStream) {
    let (local, remote) = UnixStream::pair().unwrap();
    local.set_nonblocking(true).unwrap();
    (local, remote)
}

fn watch(fd: RawFd, kind: NotificationType) -> (Rc<FileDescriptorNotifier>, Rc<Cell<u32>>) {
    let notifier = FileDescriptorNotifier::new(fd, kind).unwrap();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    notifier
        .triggered
        .connect(move |_| c.set(c.get() + 1))
        .release();
    (notifier, count)
}

fn turn(event_loop: &mut EventLoop) {
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
}

/// Closes `old` and opens socket pairs until one end gets the same descriptor number. Other tests
/// open descriptors concurrently, so this may fail; callers retry their whole scenario.
fn reopen_with_same_number(old: UnixStream) -> Option<(UnixStream, UnixStream)> {
    let number = old.as_raw_fd();
    drop(old);
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let (a, b) = socket_pair();
        if a.as_raw_fd() == number {
            return Some((a, b));
        }
        if b.as_raw_fd() == number {
            b.set_nonblocking(true).unwrap();
            return Some((b, a));
        }
        // Both took lower free numbers: keep them open so the next pair moves up.
        let lowest = a.as_raw_fd().min(b.as_raw_fd());
        fillers.push((a, b));
        if lowest > number {
            return None;
        }
    }
    None
}

// ---- registration (KDFoundation L1-L4) ----------------------------------------------------------

#[test]
fn l1_register_unregister_reregister_for_each_type() {
    let event_loop = EventLoop::new().unwrap();
    let (local, _remote) = socket_pair();
    for kind in [
        NotificationType::Read,
        NotificationType::Write,
        NotificationType::Exception,
    ] {
        let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), kind).unwrap();
        assert_eq!(notifier.kind(), kind);
        assert_eq!(notifier.fd(), local.as_raw_fd());
        assert!(notifier.is_enabled());
        assert_eq!(event_loop.registered_sources(), 1, "{kind:?}");
        notifier.set_enabled(false).unwrap();
        assert!(!notifier.is_enabled());
        assert_eq!(event_loop.registered_sources(), 0, "{kind:?}");
        notifier.set_enabled(false).unwrap(); // no-op
        notifier.set_enabled(true).unwrap();
        assert_eq!(event_loop.registered_sources(), 1, "{kind:?}");
        drop(notifier);
        assert_eq!(event_loop.registered_sources(), 0, "{kind:?}");
    }
}

#[test]
fn l3_three_descriptors_three_registrations() {
    let event_loop = EventLoop::new().unwrap();
    let pairs: Vec<_> = (0..3).map(|_| socket_pair()).collect();
    let notifiers: Vec<_> = pairs
        .iter()
        .map(|(l, _)| FileDescriptorNotifier::new(l.as_raw_fd(), NotificationType::Read).unwrap())
        .collect();
    assert_eq!(event_loop.registered_sources(), 3);
    drop(notifiers);
    assert_eq!(event_loop.registered_sources(), 0);
}

#[test]
fn l4_read_and_write_on_one_descriptor_share_one_registration() {
    let event_loop = EventLoop::new().unwrap();
    let (local, _remote) = socket_pair();
    let read = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let write = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Write).unwrap();
    assert_eq!(event_loop.registered_sources(), 1);
    drop(read);
    assert_eq!(event_loop.registered_sources(), 1);
    drop(write);
    assert_eq!(event_loop.registered_sources(), 0);
}

#[test]
fn a_second_notifier_of_the_same_type_is_refused() {
    let _event_loop = EventLoop::new().unwrap();
    let (local, _remote) = socket_pair();
    let fd = local.as_raw_fd();
    let first = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
    match FileDescriptorNotifier::new(fd, NotificationType::Read) {
        Err(LoopError::DuplicateNotifier { fd: f, kind }) => {
            assert_eq!((f, kind), (fd, NotificationType::Read));
        }
        other => panic!("expected DuplicateNotifier, got {other:?}"),
    }
    drop(first);
    assert!(FileDescriptorNotifier::new(fd, NotificationType::Read).is_ok());
}

#[test]
fn a_descriptor_the_poller_cannot_watch_is_an_io_error() {
    let _event_loop = EventLoop::new().unwrap();
    let path = std::env::temp_dir().join(format!("kdnet-notifier-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let result = FileDescriptorNotifier::new(file.as_raw_fd(), NotificationType::Read);
    drop(file);
    std::fs::remove_file(&path).unwrap();
    match result {
        Err(e @ LoopError::Io { .. }) => {
            assert!(std::error::Error::source(&e).is_some());
            assert!(
                e.to_string()
                    .starts_with("registering the descriptor failed")
            );
        }
        other => panic!("regular files cannot be polled, got {other:?}"),
    }
}

#[test]
fn notifiers_need_a_loop_on_the_current_thread() {
    let (local, _remote) = socket_pair();
    let fd = local.as_raw_fd();
    thread::spawn(move || {
        assert!(matches!(
            FileDescriptorNotifier::new(fd, NotificationType::Read),
            Err(LoopError::NoEventLoop)
        ));
    })
    .join()
    .unwrap();
}

// ---- delivery -----------------------------------------------------------------------------------

#[test]
fn l6_a_write_from_another_thread_wakes_run_and_triggers_the_notifier() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let (local, mut remote) = socket_pair();
    let fd = local.as_raw_fd();
    let notifier = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
    let received = Rc::new(RefCell::new(Vec::new()));
    let (r, handle) = (received.clone(), event_loop.handle());
    notifier
        .triggered
        .connect(move |&triggered_fd| {
            assert_eq!(triggered_fd, fd);
            let mut buf = [0u8; 64];
            let n = (&local).read(&mut buf).unwrap();
            r.borrow_mut().extend_from_slice(&buf[..n]);
            handle.quit();
        })
        .release();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        remote.write_all(b"hello").unwrap();
        remote
    });
    assert_eq!(event_loop.run(), 0);
    let _remote = writer.join().unwrap();
    assert_eq!(*received.borrow(), b"hello");
}

#[test]
fn level_triggered_a_partial_read_triggers_again_on_the_next_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let bytes = Rc::new(RefCell::new(Vec::new()));
    let b = bytes.clone();
    notifier
        .triggered
        .connect(move |_| {
            let mut one = [0u8; 1];
            if let Ok(1) = (&local).read(&mut one) {
                b.borrow_mut().push(one[0]);
            }
        })
        .release();
    remote.write_all(b"abc").unwrap();
    for expected in [&b"a"[..], b"ab", b"abc"] {
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(*bytes.borrow(), expected, "one read per turn");
    }
    // Drained: nothing more to report.
    assert_eq!(
        event_loop
            .process_events(Some(Duration::from_millis(50)))
            .unwrap(),
        0
    );
    assert_eq!(*bytes.borrow(), b"abc");
}

#[test]
fn a_write_notifier_fires_every_turn_while_enabled() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, _remote) = socket_pair();
    let (notifier, count) = watch(local.as_raw_fd(), NotificationType::Write);
    turn(&mut event_loop);
    turn(&mut event_loop);
    assert_eq!(count.get(), 2, "a writable socket stays writable");
    notifier.set_enabled(false).unwrap();
    turn(&mut event_loop);
    assert_eq!(count.get(), 2);
}

#[test]
fn a_disabled_notifier_keeps_quiet_until_re_enabled() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let (notifier, count) = watch(local.as_raw_fd(), NotificationType::Read);
    notifier.set_enabled(false).unwrap();
    remote.write_all(b"x").unwrap();
    event_loop
        .process_events(Some(Duration::from_millis(30)))
        .unwrap();
    assert_eq!(count.get(), 0);
    notifier.set_enabled(true).unwrap();
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(count.get(), 1, "data that arrived meanwhile is reported");
}

#[test]
fn hang_up_triggers_the_read_notifier() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let (local, remote) = socket_pair();
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let saw_eof = Rc::new(Cell::new(false));
    let (eof, handle) = (saw_eof.clone(), event_loop.handle());
    notifier
        .triggered
        .connect(move |_| {
            let mut buf = [0u8; 8];
            if let Ok(0) = (&local).read(&mut buf) {
                eof.set(true);
                handle.quit();
            }
        })
        .release();
    drop(remote);
    assert_eq!(event_loop.run(), 0);
    assert!(saw_eof.get());
}

#[test]
fn a_read_slot_disabling_the_write_notifier_stops_it_in_the_same_dispatch() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let fd = local.as_raw_fd();
    let (write, write_count) = watch(fd, NotificationType::Write);
    let read = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
    let w = Rc::downgrade(&write);
    read.triggered
        .connect(move |_| w.upgrade().unwrap().set_enabled(false).unwrap())
        .release();
    remote.write_all(b"x").unwrap(); // readable and writable in the same event
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    assert!(!write.is_enabled());
    assert_eq!(write_count.get(), 0);
}

#[test]
fn a_slot_may_drop_its_own_notifier() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let holder: Rc<RefCell<Option<Rc<FileDescriptorNotifier>>>> = Rc::default();
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let count = Rc::new(Cell::new(0));
    let (h, c) = (holder.clone(), count.clone());
    notifier
        .triggered
        .connect(move |_| {
            c.set(c.get() + 1);
            h.borrow_mut().take();
        })
        .release();
    let weak = Rc::downgrade(&notifier);
    *holder.borrow_mut() = Some(notifier);
    remote.write_all(b"unread").unwrap();
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    assert!(weak.upgrade().is_none());
    assert_eq!(event_loop.registered_sources(), 0);
    turn(&mut event_loop);
    assert_eq!(count.get(), 1, "data still unread, but nobody watches");
}

// ---- descriptors closed and reused ----------------------------------------------------------------

#[test]
fn l2_a_new_notifier_on_a_reused_descriptor_number_works() {
    let mut event_loop = EventLoop::new().unwrap();
    for _attempt in 0..20 {
        let (local, _remote) = socket_pair();
        let number = local.as_raw_fd();
        let old = FileDescriptorNotifier::new(number, NotificationType::Read).unwrap();
        drop(old);
        let Some((reused, mut remote)) = reopen_with_same_number(local) else {
            continue;
        };
        let (_new, count) = watch(reused.as_raw_fd(), NotificationType::Read);
        remote.write_all(b"x").unwrap();
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(count.get(), 1);
        return;
    }
    panic!("could not get a descriptor number reused");
}

#[test]
fn re_enabling_after_the_descriptor_was_closed_and_its_number_reused() {
    let mut event_loop = EventLoop::new().unwrap();
    for _attempt in 0..20 {
        let (local, _remote) = socket_pair();
        let (notifier, count) = watch(local.as_raw_fd(), NotificationType::Read);
        // Closed while still registered: the kernel forgets the registration on its own.
        let Some((reused, mut remote)) = reopen_with_same_number(local) else {
            continue;
        };
        remote.write_all(b"x").unwrap();
        notifier.set_enabled(false).unwrap(); // deregistering a forgotten fd is fine
        notifier.set_enabled(true).unwrap(); // and registering the new one works
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(
            count.get(),
            1,
            "the notifier now watches the new descriptor"
        );
        drop(reused);
        return;
    }
    panic!("could not get a descriptor number reused");
}

#[test]
fn readiness_for_a_closed_descriptor_never_reaches_a_notifier_that_reused_its_number() {
    // Two readable descriptors in one poll batch. Whichever slot runs first closes the other
    // descriptor, opens a new one with the same number and watches it. The batch still holds the
    // old descriptor's event; it must be recognised as stale (generational token) and dropped.
    struct Watched {
        notifier: Rc<FileDescriptorNotifier>,
        local: UnixStream,
        _remote: UnixStream,
    }
    #[derive(Default)]
    struct Scenario {
        watched: [Option<Watched>; 2],
        replacement: Option<Watched>,
        reused: bool,
    }

    let mut event_loop = EventLoop::new().unwrap();
    let mut reuse_seen = 0;
    for _attempt in 0..20 {
        let scenario: Rc<RefCell<Scenario>> = Rc::default();
        let stale_hits = Rc::new(Cell::new(0));
        for i in 0..2 {
            let (local, mut remote) = socket_pair();
            remote.write_all(b"ready").unwrap();
            let notifier =
                FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
            let (s, hits) = (Rc::downgrade(&scenario), stale_hits.clone());
            notifier
                .triggered
                .connect(move |_| {
                    let Some(s) = s.upgrade() else { return };
                    let mut s = s.borrow_mut();
                    if s.replacement.is_some() || s.reused {
                        return;
                    }
                    let Some(other) = s.watched[1 - i].take() else {
                        return;
                    };
                    drop(other.notifier);
                    let Some((local, remote)) = reopen_with_same_number(other.local) else {
                        s.reused = false;
                        return;
                    };
                    s.reused = true;
                    let notifier =
                        FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read)
                            .unwrap();
                    let hits = hits.clone();
                    notifier
                        .triggered
                        .connect(move |_| hits.set(hits.get() + 1))
                        .release();
                    s.replacement = Some(Watched {
                        notifier,
                        local,
                        _remote: remote,
                    });
                })
                .release();
            scenario.borrow_mut().watched[i] = Some(Watched {
                notifier,
                local,
                _remote: remote,
            });
        }
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
        turn(&mut event_loop);
        assert_eq!(
            stale_hits.get(),
            0,
            "stale readiness reached the new notifier"
        );
        if scenario.borrow().reused {
            reuse_seen += 1;
        }
        if reuse_seen >= 3 {
            return;
        }
    }
    assert!(reuse_seen > 0, "could not get a descriptor number reused");
}

// ---- fairness -----------------------------------------------------------------------------------

#[test]
fn a_busy_descriptor_cannot_starve_timers() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let (local, mut remote) = socket_pair();
    remote.write_all(b"never read").unwrap();
    let (_busy, busy_count) = watch(local.as_raw_fd(), NotificationType::Read);
    let handle = event_loop.handle();
    let _timer = Timer::create_timeout(Duration::from_millis(20), move || handle.exit(1)).unwrap();
    assert_eq!(
        event_loop.run(),
        1,
        "the timer fired despite the busy descriptor"
    );
    assert!(busy_count.get() > 1);
}

#[test]
fn a_busy_descriptor_cannot_starve_other_descriptors() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let (busy_local, mut busy_remote) = socket_pair();
    busy_remote.write_all(b"never read").unwrap();
    let (_busy, busy_count) = watch(busy_local.as_raw_fd(), NotificationType::Read);
    let (quiet_local, mut quiet_remote) = socket_pair();
    let quiet =
        FileDescriptorNotifier::new(quiet_local.as_raw_fd(), NotificationType::Read).unwrap();
    let handle = event_loop.handle();
    quiet.triggered.connect(move |_| handle.exit(2)).release();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        quiet_remote.write_all(b"x").unwrap();
        quiet_remote
    });
    assert_eq!(event_loop.run(), 2);
    let _quiet_remote = writer.join().unwrap();
    assert!(busy_count.get() > 1);
}

#[test]
fn a_zero_interval_timer_cannot_starve_descriptors() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let _spinner = Timer::create_recurring(Duration::ZERO, move || t.set(t.get() + 1)).unwrap();
    let (local, mut remote) = socket_pair();
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let handle = event_loop.handle();
    notifier
        .triggered
        .connect(move |_| handle.exit(3))
        .release();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        remote.write_all(b"x").unwrap();
        remote
    });
    assert_eq!(event_loop.run(), 3);
    let _remote = writer.join().unwrap();
    assert!(ticks.get() > 1);
}

// ---- conditions no enabled notifier matches ---------------------------------------------------

/// An exception notifier alone on a socket whose peer hangs up: epoll reports the hang-up whatever
/// the interest, the exception notifier does not match it, and re-arming after that unmatched
/// event made the kernel report it again at once: the loop spun at full CPU and a bounded
/// `process_events` never waited.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn a_hang_up_no_enabled_notifier_matches_does_not_spin_the_loop() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, remote) = socket_pair();
    let (_notifier, count) = watch(local.as_raw_fd(), NotificationType::Exception);
    drop(remote);
    let started = std::time::Instant::now();
    let mut turns = 0;
    while started.elapsed() < Duration::from_millis(300) {
        event_loop
            .process_events(Some(Duration::from_millis(100)))
            .unwrap();
        turns += 1;
    }
    assert_eq!(count.get(), 0, "a hang-up is not priority data");
    assert!(turns <= 5, "{turns} turns in 300 ms: the loop spins");
}

// ---- a descriptor closed while watched, its number taken by one of kdnet's sockets -------------

/// The inode of the UDP socket bound to `port` on this machine, from `/proc/net/udp`.
fn udp_socket_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port).then(|| fields.get(9)?.parse().ok())?
    })
}

fn inode_of_fd(fd: RawFd) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// Closes `local` (still watched by `notifier`) and binds kdnet UDP sockets until one gets its
/// descriptor number; `None` if another thread took the number first.
fn udp_socket_on_the_same_number(local: UnixStream) -> Option<Rc<kdnet::network::udp::UdpSocket>> {
    let number = local.as_raw_fd();
    drop(local);
    let socket = kdnet::network::udp::UdpSocket::new().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_address().unwrap().port();
    let ours = udp_socket_inode(port)?;
    (inode_of_fd(number) == Some(ours)).then_some(socket)
}

fn receives_a_datagram(
    event_loop: &mut EventLoop,
    socket: &kdnet::network::udp::UdpSocket,
) -> bool {
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(b"x", socket.local_address().unwrap())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while !socket.has_pending_datagrams() && std::time::Instant::now() < deadline {
        event_loop
            .process_events(Some(Duration::from_millis(20)))
            .unwrap();
    }
    socket.read_datagram().is_some()
}

/// A notifier dropped after its descriptor was closed (a struct whose file field drops before its
/// notifier field) must not touch the registration of whatever file now has that number. Its
/// `EPOLL_CTL_DEL` by number removed a kdnet socket's registration: the socket went deaf.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn dropping_a_notifier_whose_descriptor_was_closed_leaves_a_socket_on_the_reused_number_alone() {
    let mut event_loop = EventLoop::new().unwrap();
    for _attempt in 0..20 {
        let (local, _remote) = socket_pair();
        let notifier =
            FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
        let Some(socket) = udp_socket_on_the_same_number(local) else {
            continue;
        };
        drop(notifier);
        assert!(
            receives_a_datagram(&mut event_loop, &socket),
            "the socket lost its registration"
        );
        return;
    }
    panic!("could not get a descriptor number reused");
}

/// Disabling and enabling such a notifier must not take over that registration either (its
/// `EPOLL_CTL_MOD` by number gave the socket's registration the notifier's token: the socket's
/// readiness went to the notifier).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn toggling_a_notifier_whose_descriptor_was_closed_leaves_a_socket_on_the_reused_number_alone() {
    let mut event_loop = EventLoop::new().unwrap();
    for _attempt in 0..20 {
        let (local, _remote) = socket_pair();
        let (read, _reads) = watch(local.as_raw_fd(), NotificationType::Read);
        let (write, _writes) = watch(local.as_raw_fd(), NotificationType::Write);
        let Some(socket) = udp_socket_on_the_same_number(local) else {
            continue;
        };
        // One of the two goes: the other's interest is written to the registration (MOD).
        let _ = write.set_enabled(false);
        assert!(
            receives_a_datagram(&mut event_loop, &socket),
            "the socket lost its registration"
        );
        drop((read, write));
        assert!(receives_a_datagram(&mut event_loop, &socket));
        return;
    }
    panic!("could not get a descriptor number reused");
}

// ---- nested loops -------------------------------------------------------------------------------

/// A slot that waits in a nested loop (`HttpClient::send_and_wait`) before reading its descriptor,
/// while more data arrives: the nested turns do not deliver the notifier whose emission is on the
/// stack. They did: the busy slot was skipped, the notifier's other slots were called inside it,
/// and the re-arm after each such delivery reported the unread descriptor again at once, so the
/// nested wait spun, calling the other slots thousands of times.
#[test]
fn a_notifier_whose_slot_waits_in_a_nested_loop_is_not_delivered_inside_it() {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let (local, mut remote) = socket_pair();
    remote.write_all(b"first").unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        // More data for the watched descriptor while the slot waits, then the response.
        thread::sleep(Duration::from_millis(50));
        remote.write_all(b"more").unwrap();
        thread::sleep(Duration::from_millis(150));
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .unwrap();
        remote
    });
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let first = Rc::new(Cell::new(0));
    let (f, handle) = (first.clone(), event_loop.handle());
    notifier
        .triggered
        .connect(move |_| {
            f.set(f.get() + 1);
            if f.get() == 1 {
                let client = kdnet::network::http::HttpClient::new().unwrap();
                let response = client
                    .send_and_wait(kdnet::network::http::HttpRequest::get(&url).unwrap())
                    .unwrap();
                assert_eq!(response.text(), "ok");
            } else {
                let mut buf = [0u8; 64];
                while (&local).read(&mut buf).is_ok_and(|n| n > 0) {}
                handle.quit();
            }
        })
        .release();
    let second = Rc::new(Cell::new(0));
    let s = second.clone();
    notifier
        .triggered
        .connect(move |_| s.set(s.get() + 1))
        .release();
    assert_eq!(event_loop.run(), 0);
    let _remote = server.join().unwrap();
    assert_eq!(first.get(), 2);
    assert_eq!(
        second.get(),
        first.get(),
        "the other slot was called inside the first one's nested wait"
    );
}

/// Enabling a notifier whose descriptor now stands for a file the poller refuses (`/dev/null`
/// took the number of the closed socket) fails, and the notifier says it is disabled: it said
/// `is_enabled() == true` while nothing was registered.
#[test]
fn a_failed_enable_leaves_the_notifier_disabled() {
    let _event_loop = EventLoop::new().unwrap();
    for _attempt in 0..20 {
        let (local, _remote) = socket_pair();
        let number = local.as_raw_fd();
        let (notifier, _count) = watch(number, NotificationType::Read);
        notifier.set_enabled(false).unwrap();
        drop(local);
        let mut files = Vec::new();
        let reused = loop {
            let file = std::fs::File::open("/dev/null").unwrap();
            let fd = file.as_raw_fd();
            files.push(file);
            if fd == number {
                break true;
            }
            if fd > number || files.len() > 8 {
                break false;
            }
        };
        if !reused {
            continue;
        }
        assert!(notifier.set_enabled(true).is_err());
        assert!(
            !notifier.is_enabled(),
            "the enable failed, yet the notifier says it is enabled"
        );
        // Disabling again is a no-op that succeeds.
        notifier.set_enabled(false).unwrap();
        return;
    }
    panic!("could not get a descriptor number reused");
}

/// Two descriptors readable in the same poll; the first slot to run waits in a nested loop for a
/// request that only the other slot ends (it cancels it). The nested loop delivers the other
/// descriptor: its readiness was held in the outer turn's batch (the kernel reports an edge once)
/// until the first slot returned, so the nested wait lasted until the server answered by itself
/// (here after 2 s).
#[test]
fn a_descriptor_ready_with_one_whose_slot_waits_in_a_nested_loop_is_delivered_inside_that_wait() {
    use std::io::BufRead;
    use std::time::Instant;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        thread::sleep(Duration::from_secs(2));
        let _ = (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    });
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let client = kdnet::network::http::HttpClient::new().unwrap();
    let waiting = Rc::new(Cell::new(false));
    let outcome = Rc::new(RefCell::new(None));
    let mut pairs = Vec::new();
    let mut notifiers = Vec::new();
    for _ in 0..2 {
        let (local, mut remote) = socket_pair();
        remote.write_all(b"x").unwrap();
        let notifier =
            FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
        let (c, w, o, handle, url) = (
            client.clone(),
            waiting.clone(),
            outcome.clone(),
            event_loop.handle(),
            url.clone(),
        );
        let local = Rc::new(local);
        let reader = local.clone();
        notifier
            .triggered
            .connect(move |_| {
                let mut buf = [0u8; 8];
                let _ = (&*reader).read(&mut buf);
                if w.replace(true) {
                    c.cancel_all();
                    return;
                }
                let started = Instant::now();
                let result = c.send_and_wait(kdnet::network::http::HttpRequest::get(&url).unwrap());
                *o.borrow_mut() = Some((result.map(|r| r.text().to_string()), started.elapsed()));
                handle.quit();
            })
            .release();
        pairs.push((local, remote));
        notifiers.push(notifier);
    }
    assert_eq!(event_loop.run(), 0);
    let (result, elapsed) = outcome.borrow_mut().take().unwrap();
    assert!(
        matches!(result, Err(kdnet::network::http::HttpError::Cancelled)),
        "the other slot did not run inside the wait: {result:?} after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    server.join().unwrap();
}

/// A slot that panics out of the loop does not take the readiness of other descriptors polled in
/// the same batch with it: run on, the loop delivers them. It lost them (the kernel reports an
/// edge once, and they were not re-armed), so the other notifier stayed quiet with data unread.
#[test]
fn descriptors_ready_with_one_whose_slot_panicked_are_delivered_when_the_loop_runs_on() {
    let mut event_loop = EventLoop::new().unwrap();
    let panicked = Rc::new(Cell::new(false));
    let delivered = Rc::new(Cell::new(0));
    let mut keep = Vec::new();
    for _ in 0..2 {
        let (local, mut remote) = socket_pair();
        remote.write_all(b"x").unwrap();
        let notifier =
            FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
        let (p, d) = (panicked.clone(), delivered.clone());
        notifier
            .triggered
            .connect(move |_| {
                if !p.replace(true) {
                    panic!("deliberate");
                }
                d.set(d.get() + 1);
            })
            .release();
        keep.push((local, remote, notifier));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
    }));
    assert!(result.is_err(), "the slot's panic reaches the caller");
    assert_eq!(delivered.get(), 0);
    event_loop
        .process_events(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        delivered.get() >= 1,
        "the other descriptor's readiness was lost with the panic"
    );
}

/// A notifier whose slot panicked out of the loop stays level-triggered: run on, with its data
/// still unread, it is triggered again. The re-arm after the delivery was skipped by the panic,
/// so the kernel never reported the descriptor again and the notifier went quiet for good.
#[test]
fn a_notifier_whose_slot_panicked_is_triggered_again_while_its_condition_holds() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let notifier = FileDescriptorNotifier::new(local.as_raw_fd(), NotificationType::Read).unwrap();
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    notifier
        .triggered
        .connect(move |_| {
            c.set(c.get() + 1);
            if c.get() == 1 {
                panic!("deliberate");
            }
        })
        .release();
    remote.write_all(b"unread").unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        event_loop
            .process_events(Some(Duration::from_secs(1)))
            .unwrap();
    }));
    assert!(result.is_err(), "the slot's panic reaches the caller");
    event_loop
        .process_events(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(calls.get(), 2, "the notifier went quiet after the panic");
    drop(local);
}

/// A notifier whose loop was dropped can never be triggered again: it says it is disabled, and
/// enabling it fails with `LoopError::LoopGone` (it said it was enabled, and enabling it
/// succeeded, registering the descriptor with the dead loop's poller).
#[test]
fn a_notifier_whose_loop_was_dropped_is_disabled_and_cannot_be_enabled() {
    let event_loop = EventLoop::new().unwrap();
    let (local, _remote) = socket_pair();
    let (notifier, _count) = watch(local.as_raw_fd(), NotificationType::Read);
    assert!(notifier.is_enabled());
    drop(event_loop);
    assert!(!notifier.is_enabled(), "enabled after its loop was dropped");
    assert!(matches!(
        notifier.set_enabled(true),
        Err(LoopError::LoopGone)
    ));
    assert!(!notifier.is_enabled());
    notifier.set_enabled(false).unwrap();
    drop(notifier);
}

/// A slot that replaces its own notifier: it drops it and watches the descriptor (or a new file
/// that took its number) with a new notifier of the same type, as a socket wrapper does when it
/// switches handlers or reconnects. The old notifier is held by its running emission until the
/// slot returns, and `new` refused the new one as a duplicate of a notifier its owner had dropped.
#[test]
fn a_slot_may_replace_its_own_notifier_with_one_of_the_same_type() {
    type Holder = Rc<RefCell<Option<Rc<FileDescriptorNotifier>>>>;

    /// Watches `fd` with a new read notifier that counts its triggers.
    fn second_notifier(fd: RawFd, holder: &Holder, count: &Rc<Cell<u32>>) -> Result<(), LoopError> {
        let notifier = FileDescriptorNotifier::new(fd, NotificationType::Read)?;
        let c = count.clone();
        notifier
            .triggered
            .connect(move |_| c.set(c.get() + 1))
            .release();
        *holder.borrow_mut() = Some(notifier);
        Ok(())
    }

    for reopen in [false, true] {
        let mut done = false;
        for _attempt in 0..20 {
            let mut event_loop = EventLoop::new().unwrap();
            let (local, mut remote) = socket_pair();
            let fd = local.as_raw_fd();
            let holder: Holder = Rc::default();
            let first = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
            let second_count = Rc::new(Cell::new(0));
            let outcome: Rc<RefCell<Option<Result<(), LoopError>>>> = Rc::default();
            let files: Rc<RefCell<Vec<UnixStream>>> = Rc::new(RefCell::new(vec![local]));
            let (h, c, o, f) = (
                holder.clone(),
                second_count.clone(),
                outcome.clone(),
                files.clone(),
            );
            first
                .triggered
                .connect(move |&fd| {
                    if o.borrow().is_some() {
                        return;
                    }
                    // Drop this notifier first, as the docs ask before closing a descriptor.
                    h.borrow_mut().take();
                    if reopen {
                        let old = f.borrow_mut().pop().unwrap();
                        let Some((new_local, mut new_remote)) = reopen_with_same_number(old) else {
                            *o.borrow_mut() = Some(Ok(()));
                            return;
                        };
                        assert_eq!(new_local.as_raw_fd(), fd);
                        new_remote.write_all(b"new").unwrap();
                        f.borrow_mut().extend([new_local, new_remote]);
                    }
                    *o.borrow_mut() = Some(second_notifier(fd, &h, &c));
                })
                .release();
            let weak_first = Rc::downgrade(&first);
            *holder.borrow_mut() = Some(first);
            remote.write_all(b"x").unwrap();
            event_loop
                .process_events(Some(Duration::from_secs(1)))
                .unwrap();
            let result = outcome
                .borrow_mut()
                .take()
                .expect("the first notifier fired");
            if let Err(e) = result {
                panic!("reopen {reopen}: replacing the notifier from its slot failed: {e}");
            }
            if holder.borrow().is_none() {
                continue; // the number was not reused: retry
            }
            assert!(weak_first.upgrade().is_none(), "reopen {reopen}");
            // The data is still unread: the new notifier is triggered (level-triggered).
            event_loop
                .process_events(Some(Duration::from_secs(1)))
                .unwrap();
            assert!(second_count.get() >= 1, "reopen {reopen}");
            assert_eq!(event_loop.registered_sources(), 1, "reopen {reopen}");
            holder.borrow_mut().take();
            assert_eq!(event_loop.registered_sources(), 0, "reopen {reopen}");
            done = true;
            break;
        }
        assert!(
            done,
            "reopen {reopen}: never got the same descriptor number"
        );
    }
}

/// A notifier replaced from its own slot (see above) will never be triggered again: it reports
/// itself disabled to code that still reaches it (a weak reference, a later slot of the same
/// emission), instead of claiming to watch a descriptor another notifier now watches.
#[test]
fn a_notifier_replaced_from_its_own_slot_reports_itself_disabled() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let fd = local.as_raw_fd();
    let first = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
    let weak_first = Rc::downgrade(&first);
    let holder = Rc::new(RefCell::new(Some(first)));
    let seen: Rc<Cell<Option<Option<bool>>>> = Rc::default();
    let (h, s) = (holder.clone(), seen.clone());
    let slot = move |&fd: &RawFd| {
        if s.get().is_some() {
            return;
        }
        h.borrow_mut().take();
        let second = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
        s.set(Some(weak_first.upgrade().map(|old| old.is_enabled())));
        *h.borrow_mut() = Some(second);
    };
    let triggered = holder.borrow().as_ref().unwrap().triggered.connect(slot);
    triggered.release();
    remote.write_all(b"x").unwrap();
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(
        seen.get(),
        Some(Some(false)),
        "the replaced notifier, still held by its emission"
    );
    drop(local);
}

/// Only a notifier its owner dropped gives its place from its own slot: one still held (the
/// slot did not drop it) keeps refusing a second notifier of its type, as outside a slot.
#[test]
fn a_slot_cannot_add_a_second_notifier_while_its_own_is_still_held() {
    let mut event_loop = EventLoop::new().unwrap();
    let (local, mut remote) = socket_pair();
    let fd = local.as_raw_fd();
    let first = FileDescriptorNotifier::new(fd, NotificationType::Read).unwrap();
    let outcome: Rc<RefCell<Option<Result<(), LoopError>>>> = Rc::default();
    let o = outcome.clone();
    first
        .triggered
        .connect(move |&fd| {
            if o.borrow().is_none() {
                let second = FileDescriptorNotifier::new(fd, NotificationType::Read);
                *o.borrow_mut() = Some(second.map(drop));
            }
        })
        .release();
    remote.write_all(b"x").unwrap();
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    assert!(
        matches!(
            outcome.borrow_mut().take(),
            Some(Err(LoopError::DuplicateNotifier { .. }))
        ),
        "a second notifier was accepted beside the held one"
    );
    assert!(first.is_enabled());
    drop(local);
}

/// A descriptor reported by a turn's poll and not dispatched yet when an earlier slot of the
/// batch waits in a nested loop, which gets new data before the nested turn polls: the nested
/// poll reports it again, and it was dispatched twice in that one turn, the second time with
/// nothing left to read (a slot trusting the readiness, reading a blocking descriptor, would
/// hang there). It is dispatched once, with what both polls reported.
#[test]
fn a_descriptor_waiting_in_the_batch_is_not_triggered_twice_by_a_nested_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let (a, mut a_peer) = socket_pair();
    let (b, b_peer) = socket_pair();
    let b = Rc::new(b);
    let b_peer = Rc::new(RefCell::new(b_peer));
    // b's slot reads all there is, and notes a trigger that found nothing.
    let b_notifier = FileDescriptorNotifier::new(b.as_raw_fd(), NotificationType::Read).unwrap();
    let (b_triggers, b_empty) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (bt, be, br) = (b_triggers.clone(), b_empty.clone(), b.clone());
    b_notifier
        .triggered
        .connect(move |_| {
            bt.set(bt.get() + 1);
            let mut buf = [0u8; 64];
            let mut got = 0;
            while let Ok(n) = (&*br).read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            if got == 0 {
                be.set(be.get() + 1);
            }
        })
        .release();
    // a's slot: more for b, then a nested turn.
    let a_notifier = FileDescriptorNotifier::new(a.as_raw_fd(), NotificationType::Read).unwrap();
    let (ar, bp) = (Rc::new(a), b_peer.clone());
    a_notifier
        .triggered
        .connect(move |_| {
            let mut buf = [0u8; 64];
            let _ = (&*ar).read(&mut buf);
            bp.borrow_mut().write_all(b"more").unwrap();
            kdnet::foundation::process_events(Some(Duration::ZERO)).unwrap();
        })
        .release();
    // a became readable first, so the poll reports it first.
    a_peer.write_all(b"a").unwrap();
    b_peer.borrow_mut().write_all(b"b").unwrap();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        b_triggers.get(),
        1,
        "b was triggered more than once in one turn"
    );
    assert_eq!(b_empty.get(), 0, "b was triggered with nothing to read");
}
