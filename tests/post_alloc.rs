//! Posting a closure the caller already boxed queues that box: no second allocation.
//!
//! This binary installs a counting global allocator (one test binary per allocator). Counts are
//! per thread, so tests running in parallel and the test harness do not disturb each other.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use counting_alloc::allocations_during;
use kdnet::{EventLoop, foundation};

/// Runs turns until `done` (at most 5 s).
fn turn_until(event_loop: &mut EventLoop, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "closures did not run");
        event_loop
            .process_events(Some(Duration::from_millis(100)))
            .unwrap();
    }
}

#[test]
fn the_counter_sees_a_closure_boxed_by_post() {
    // Guards the other tests against a counter that never counts: an unboxed closure with
    // captures is boxed once by `post`.
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let ran = Arc::new(Mutex::new(0u32));
    let r = ran.clone();
    handle.post(move || *r.lock().unwrap() += 1).unwrap(); // warm-up: the queue's buffer
    turn_until(&mut event_loop, || *ran.lock().unwrap() == 1);
    let r = ran.clone();
    let n = allocations_during(|| handle.post(move || *r.lock().unwrap() += 1).unwrap());
    assert_eq!(n, 1);
    turn_until(&mut event_loop, || *ran.lock().unwrap() == 2);
}

#[test]
fn a_boxed_closure_posted_through_a_handle_is_not_boxed_again() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let boxed = |i: u32| -> Box<dyn FnOnce() + Send> {
        let r = ran.clone();
        Box::new(move || r.lock().unwrap().push(i))
    };
    handle.post(boxed(0)).unwrap(); // warm-up: the queue's buffer
    turn_until(&mut event_loop, || ran.lock().unwrap().len() == 1);
    for i in 1..=3 {
        let f = boxed(i);
        let n = allocations_during(|| handle.post(f).unwrap());
        assert_eq!(n, 0, "post {i} allocated");
    }
    // From another thread too, after the loop's own (order spans threads).
    let h = handle.clone();
    let f = boxed(4);
    std::thread::spawn(move || h.post(f).unwrap())
        .join()
        .unwrap();
    turn_until(&mut event_loop, || ran.lock().unwrap().len() == 5);
    assert_eq!(*ran.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn a_boxed_closure_posted_on_the_loop_thread_is_not_boxed_again() {
    let mut event_loop = EventLoop::new().unwrap();
    let ran = Rc::new(RefCell::new(Vec::new()));
    let local = |i: u32| -> Box<dyn FnOnce()> {
        let r = ran.clone();
        Box::new(move || r.borrow_mut().push(i))
    };
    let sendable = |i: u32| -> Box<dyn FnOnce() + Send> {
        Box::new(move || {
            foundation::post(move || {}).unwrap();
            let _ = i;
        })
    };
    event_loop.post(local(0)); // warm-up: the queue's buffer
    turn_until(&mut event_loop, || ran.borrow().len() == 1);
    let (a, b, c) = (local(1), sendable(2), local(3));
    let n = allocations_during(|| {
        event_loop.post(a);
        event_loop.post(b);
        foundation::post(c).unwrap();
    });
    assert_eq!(n, 0);
    turn_until(&mut event_loop, || ran.borrow().len() == 3);
    assert_eq!(*ran.borrow(), [0, 1, 3]);
}
