//! Review of the transport and foundation layers: each test pins one defect found by reading the
//! code (real loopback only).

mod support;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use kdnet::network::{SocketState, TcpSocket};
use kdnet::{EventLoop, Timer};
use support::run_until;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn spin_for(event_loop: &mut EventLoop, duration: Duration) {
    run_until(event_loop, duration, || false);
}

/// A peer sends "bye" and closes; the client's `ready_read` slot reacts by aborting and
/// reconnecting (a protocol-level "goodbye, come back"). The old connection's EOF, read in the
/// same drain as "bye", must not close the *new* connection attempt.
#[test]
fn reconnect_from_ready_read_is_not_killed_by_the_old_connections_eof() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        go_rx.recv().unwrap();
        first.write_all(b"bye").unwrap();
        drop(first); // FIN right behind the data
        closed_tx.send(()).unwrap();
        // The reconnect: keep it open until the test is done.
        let (second, _) = listener.accept().unwrap();
        let _ = go_rx.recv_timeout(Duration::from_secs(10));
        drop(second);
    });

    let client = TcpSocket::new().unwrap();
    let states: Rc<RefCell<Vec<SocketState>>> = Rc::default();
    let s = states.clone();
    client
        .state_changed
        .connect(move |st| s.borrow_mut().push(*st))
        .release();
    let connects = Rc::new(Cell::new(0u32));
    let c = connects.clone();
    client
        .connected
        .connect(move |_| c.set(c.get() + 1))
        .release();
    let weak = Rc::downgrade(&client);
    let reconnect_result: Rc<RefCell<Option<String>>> = Rc::default();
    let rr = reconnect_result.clone();
    client
        .ready_read
        .connect(move |_| {
            let sock = weak.upgrade().unwrap();
            if &sock.read_all()[..] == b"bye" {
                sock.abort();
                *rr.borrow_mut() = Some(format!("{:?}", sock.connect_to_address(LOCALHOST, port)));
            }
        })
        .release();

    client.connect_to_address(LOCALHOST, port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(5), || connects
        .get()
        == 1));
    // Let the data and the FIN both arrive before the loop looks again, so one drain sees both.
    go_tx.send(()).unwrap();
    closed_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let reconnected = run_until(&mut ev, Duration::from_secs(5), || connects.get() == 2);
    let final_state = client.state();
    let _ = go_tx.send(());
    server.join().unwrap();
    assert_eq!(reconnect_result.borrow().as_deref(), Some("Ok(())"));
    assert!(
        reconnected && final_state == SocketState::Connected,
        "the reconnect made from ready_read never connected: final state {final_state:?}, \
         state_changed sequence {:?}",
        states.borrow()
    );
}

/// A `state_changed(Connected)` slot that aborts the socket: `connected` must not be emitted
/// afterwards (it was, after `disconnected`, on an Unconnected socket). The connection is never
/// announced, so its close emits no `disconnected` either.
#[test]
fn connected_is_not_emitted_after_a_state_changed_slot_aborted_the_socket() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (peer, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(peer);
    });
    let client = TcpSocket::new().unwrap();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let weak = Rc::downgrade(&client);
    let l = log.clone();
    client
        .state_changed
        .connect(move |st| {
            l.borrow_mut().push(format!("state_changed({st:?})"));
            if *st == SocketState::Connected {
                weak.upgrade().unwrap().abort();
            }
        })
        .release();
    let l = log.clone();
    client
        .connected
        .connect(move |_| l.borrow_mut().push("connected".into()))
        .release();
    let l = log.clone();
    client
        .disconnected
        .connect(move |_| l.borrow_mut().push("disconnected".into()))
        .release();
    client.connect_to_address(LOCALHOST, port).unwrap();
    // (The slot's own nested `state_changed(Unconnected)` does not reach it: read the state.)
    let done = run_until(&mut ev, Duration::from_secs(5), || {
        log.borrow().iter().any(|e| e == "state_changed(Connected)")
            && client.state() == SocketState::Unconnected
    });
    spin_for(&mut ev, Duration::from_millis(50));
    server.join().unwrap();
    assert!(done, "never aborted: {:?}", log.borrow());
    let log = log.borrow();
    assert!(
        !log.iter().any(|e| e == "connected" || e == "disconnected"),
        "the aborted connection was announced (socket in state {:?}): {log:?}",
        client.state()
    );
}

/// A `set_timeout` callback that cancels another managed timer due in the same turn:
/// `cancel_timer` returns true ("cancelled"), yet the cancelled callback still runs.
#[test]
fn a_timer_cancelled_by_a_timer_due_in_the_same_turn_does_not_fire() {
    let mut ev = EventLoop::new().unwrap();
    let b_ran = Rc::new(Cell::new(false));
    let b = b_ran.clone();
    let b_id = Rc::new(Cell::new(None));
    let cancelled = Rc::new(Cell::new(None::<bool>));
    let (id_slot, cancel_result) = (b_id.clone(), cancelled.clone());
    Timer::set_timeout(Duration::from_millis(1), move || {
        cancel_result.set(Some(Timer::cancel_timer(id_slot.get().unwrap())));
    })
    .unwrap();
    b_id.set(Some(
        Timer::set_timeout(Duration::from_millis(20), move || b.set(true)).unwrap(),
    ));
    // Both deadlines pass before the loop looks: they are due in the same turn.
    std::thread::sleep(Duration::from_millis(60));
    spin_for(&mut ev, Duration::from_millis(100));
    assert_eq!(
        cancelled.get(),
        Some(true),
        "cancel_timer said it cancelled"
    );
    assert!(
        !b_ran.get(),
        "the timer ran although cancel_timer returned true before its turn"
    );
}

/// A periodic `Timer` stopped (or dropped) by another timer's slot in the same turn still fires,
/// and a stopped periodic one even re-arms itself and keeps firing with `running == false`.
#[test]
fn a_periodic_timer_stopped_by_a_timer_due_in_the_same_turn_stays_stopped() {
    let mut ev = EventLoop::new().unwrap();
    let periodic = Timer::new().unwrap();
    periodic.interval.set(Duration::from_millis(20));
    let fired_after_stop = Rc::new(Cell::new(0u32));
    let stopped = Rc::new(Cell::new(false));
    let (f, s) = (fired_after_stop.clone(), stopped.clone());
    periodic
        .timeout
        .connect(move |_| {
            if s.get() {
                f.set(f.get() + 1);
            }
        })
        .release();
    let stopper = Timer::new().unwrap();
    stopper.interval.set(Duration::from_millis(1));
    stopper.single_shot.set(true);
    let p = Rc::downgrade(&periodic);
    let s = stopped.clone();
    stopper
        .timeout
        .connect(move |_| {
            p.upgrade().unwrap().stop();
            s.set(true);
        })
        .release();
    stopper.start();
    periodic.start();
    std::thread::sleep(Duration::from_millis(60));
    spin_for(&mut ev, Duration::from_millis(200));
    assert!(stopped.get());
    assert!(!periodic.running.get());
    assert_eq!(
        fired_after_stop.get(),
        0,
        "the stopped periodic timer fired {} times after stop() (running = {})",
        fired_after_stop.get(),
        periodic.running.get()
    );
}

/// Reports `write` posts for the loop (bytes written, a write error) belong to the connection
/// written to: after `abort()` and a new connect in the same turn they must not reach the new
/// connection (an old error closing it, old bytes counted as its own).
#[test]
fn reports_posted_by_write_do_not_reach_a_connection_made_after_abort() {
    let mut ev = EventLoop::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        drop(first); // the client's next write is answered with a reset
        closed_tx.send(()).unwrap();
        let (second, _) = listener.accept().unwrap();
        let _ = go_rx.recv_timeout(Duration::from_secs(10));
        drop(second);
    });

    let client = TcpSocket::new().unwrap();
    let connects = Rc::new(Cell::new(0u32));
    let c = connects.clone();
    client
        .connected
        .connect(move |_| c.set(c.get() + 1))
        .release();
    let written = Rc::new(Cell::new(0usize));
    let w = written.clone();
    client
        .bytes_written
        .connect(move |n| w.set(w.get() + n))
        .release();
    let errors: Rc<RefCell<Vec<String>>> = Rc::default();
    let e = errors.clone();
    client
        .error_occurred
        .connect(move |err| e.borrow_mut().push(err.to_string()))
        .release();

    client.connect_to_address(LOCALHOST, port).unwrap();
    assert!(run_until(&mut ev, Duration::from_secs(5), || connects
        .get()
        == 1));
    closed_rx.recv().unwrap();
    // Not turning the loop: the peer's FIN, then its reset, reach only the kernel.
    std::thread::sleep(Duration::from_millis(100));
    client.write(b"x").unwrap(); // taken by the kernel: a bytes_written report is posted
    assert_eq!(written.get(), 0, "reported from inside write()");
    std::thread::sleep(Duration::from_millis(100));
    client.write(b"y").unwrap(); // fails on the reset: a close with the error is posted
    client.abort();
    client.connect_to_address(LOCALHOST, port).unwrap();

    let reconnected = run_until(&mut ev, Duration::from_secs(5), || connects.get() == 2);
    spin_for(&mut ev, Duration::from_millis(50));
    let final_state = client.state();
    let _ = go_tx.send(());
    server.join().unwrap();
    assert!(
        errors.borrow().is_empty(),
        "the old connection's write error reached the new one: {:?}",
        errors.borrow()
    );
    assert_eq!(
        written.get(),
        0,
        "bytes written on the old connection were reported on the new one"
    );
    assert!(
        reconnected && final_state == SocketState::Connected,
        "the new connection did not stay connected: {final_state:?}"
    );
}
