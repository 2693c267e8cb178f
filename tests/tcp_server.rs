//! TcpServer over real loopback: accept errors, peers that vanish, close and drop from slots.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::{TcpServer, TcpSocket};
use support::run_until;

const EMFILE_CHILD: &str = "KDNET_TCP_SERVER_EMFILE_CHILD";

/// Runs the `#[ignore]`d test `name` alone in a child process (it changes process-wide state).
fn run_in_child(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EMFILE_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_of_descriptors_neither_spins_nor_stops_accepting() {
    run_in_child("emfile_child");
}

#[test]
#[ignore = "run by out_of_descriptors_neither_spins_nor_stops_accepting in a child process"]
fn emfile_child() {
    if std::env::var_os(EMFILE_CHILD).is_none() {
        return;
    }
    let mut ev = EventLoop::new().unwrap();
    let server = TcpServer::new().unwrap();
    server.listen("127.0.0.1", 0).unwrap();
    let errors = Rc::new(Cell::new(0usize));
    let e = errors.clone();
    server
        .error_occurred
        .connect(move |_| e.set(e.get() + 1))
        .release();
    let accepted: Rc<RefCell<Vec<Rc<TcpSocket>>>> = Rc::default();
    let a = accepted.clone();
    server
        .new_connection
        .connect(move |s: &Rc<TcpSocket>| a.borrow_mut().push(s.clone()))
        .release();
    // The kernel completes the connection into the backlog; accepting it needs a descriptor.
    let _client =
        std::net::TcpStream::connect(("127.0.0.1", server.server_port().unwrap())).unwrap();
    let mut hogs = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hogs.push(f);
    }
    let until = Instant::now() + Duration::from_millis(500);
    let mut busy_turns = 0usize;
    while Instant::now() < until {
        if ev.process_events(Some(Duration::from_millis(50))).unwrap() > 0 {
            busy_turns += 1;
        }
    }
    assert!(errors.get() >= 1, "EMFILE was not reported");
    assert!(
        busy_turns < 50 && errors.get() < 50,
        "the loop spins on EMFILE: {busy_turns} busy turns, {} errors in 500 ms",
        errors.get()
    );
    drop(hogs);
    assert!(
        run_until(&mut ev, Duration::from_secs(5), || accepted.borrow().len()
            == 1),
        "the pending connection was never accepted once descriptors were free"
    );
}
