//! EventLoop and LoopHandle: posting, quitting, waking, deferred slots and the embedding API
//! (KDFoundation A2-A5, A8, A10, L5, L7 and kdnet's additions).
//!
//! Every `run()` is guarded by a safety timer that exits with [`SAFETY_EXIT`] after a few seconds,
//! so a broken loop fails the test instead of hanging it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use kdnet::foundation::post;
use kdnet::{EventLoop, LoopError, Signal, Timer};

mod support;
use support::is_readable;

const SAFETY_EXIT: i32 = 99;

/// A timer that makes `run()` return [`SAFETY_EXIT`] if the test has not finished after `secs`.
fn safety_timer(event_loop: &EventLoop, secs: u64) -> Rc<Timer> {
    let handle = event_loop.handle();
    Timer::create_timeout(Duration::from_secs(secs), move || handle.exit(SAFETY_EXIT)).unwrap()
}

/// Sets a flag when dropped (to see whether a closure was dropped rather than leaked).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---- posting ------------------------------------------------------------------------------------

#[test]
fn a2_a3_posted_closures_run_in_posting_order_on_the_next_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5 {
        let o = order.clone();
        event_loop.post(move || o.borrow_mut().push(i));
    }
    assert!(order.borrow().is_empty(), "post never runs synchronously");
    assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 5);
    assert_eq!(*order.borrow(), [0, 1, 2, 3, 4]);
    assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 0);
}

fn repost_forever(count: Rc<Cell<u32>>) {
    count.set(count.get() + 1);
    post(move || repost_forever(count)).unwrap();
}

#[test]
fn a5_a_closure_posted_while_processing_waits_for_the_next_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    post(move || repost_forever(c)).unwrap();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(count.get(), 1);
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(count.get(), 2);
    for _ in 0..10 {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(count.get(), 12);
}

/// A closure posted by one that a nested turn ran (a posted closure waiting in
/// `foundation::process_events`, the next closure of its batch posting again) was posted after
/// the outer turn's posted stage began: it waits for the next turn, as one posted by the outer
/// turn's own closures does. The outer stage ran it (it kept popping as many closures as were
/// queued when it began, and counted the ones the nested turn ran as its own).
#[test]
fn a_closure_posted_inside_a_nested_turn_waits_for_the_next_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    event_loop.post(move || {
        l.borrow_mut().push("a");
        let nested = kdnet::foundation::process_events(Some(Duration::ZERO)).unwrap();
        l.borrow_mut().push(if nested == 1 {
            "nested ran 1"
        } else {
            "nested ran ?"
        });
    });
    let l = log.clone();
    event_loop.post(move || {
        l.borrow_mut().push("b");
        let l = l.clone();
        post(move || l.borrow_mut().push("c")).unwrap();
    });
    let outer = event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        *log.borrow(),
        ["a", "b", "nested ran 1"],
        "c ran in the outer turn"
    );
    assert_eq!(
        outer, 1,
        "the outer turn ran only a (b ran in the nested one)"
    );
    assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(*log.borrow(), ["a", "b", "nested ran 1", "c"]);
}

#[test]
fn post_without_a_loop_fails() {
    thread::spawn(|| {
        assert!(matches!(post(|| {}), Err(LoopError::NoEventLoop)));
    })
    .join()
    .unwrap();
}

#[test]
fn handle_post_from_another_thread_runs_on_the_loop_thread_in_order() {
    const POSTS: usize = 1_000;
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let handle = event_loop.handle();
    let ran: Arc<Mutex<Vec<(usize, thread::ThreadId)>>> = Arc::default();
    let r = ran.clone();
    let poster = thread::spawn(move || {
        for i in 0..POSTS {
            let r = r.clone();
            handle
                .post(move || r.lock().unwrap().push((i, thread::current().id())))
                .unwrap();
        }
        handle.quit();
    });
    assert_eq!(event_loop.run(), 0);
    poster.join().unwrap();
    let ran = ran.lock().unwrap();
    let me = thread::current().id();
    assert_eq!(ran.len(), POSTS, "everything posted before quit() ran");
    assert!(ran.iter().enumerate().all(|(i, &(n, t))| n == i && t == me));
}

/// A closure posted from another thread before (happens-before: the poster was joined, or told the
/// loop's thread through a channel) a closure posted on the loop's thread runs first, as in
/// KDFoundation's single queue. The loop kept two queues and appended the other threads' at the
/// start of a turn, behind everything posted on its own thread meanwhile: a worker's "result"
/// closure ran after the "use the result" closure the loop's thread posted once it knew the worker
/// had finished.
#[test]
fn posts_from_other_threads_and_from_the_loops_thread_run_in_causal_order() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();

    // Between turns: the worker posts, is joined, then host code posts.
    let (handle, o) = (event_loop.handle(), order.clone());
    thread::spawn(move || {
        handle
            .post(move || o.lock().unwrap().push("worker"))
            .unwrap()
    })
    .join()
    .unwrap();
    let o = order.clone();
    event_loop.post(move || o.lock().unwrap().push("after worker"));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(*order.lock().unwrap(), ["worker", "after worker"]);
    order.lock().unwrap().clear();

    // A handle used on the loop's own thread, then a plain post.
    let o = order.clone();
    event_loop
        .handle()
        .post(move || o.lock().unwrap().push("handle"))
        .unwrap();
    let o = order.clone();
    post(move || o.lock().unwrap().push("after handle")).unwrap();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(*order.lock().unwrap(), ["handle", "after handle"]);
    order.lock().unwrap().clear();

    // Inside a turn: a slot learns through a channel that the worker posted, then posts.
    let (posted_tx, posted_rx) = mpsc::channel::<()>();
    let (handle, o) = (event_loop.handle(), order.clone());
    let worker = thread::spawn(move || {
        handle
            .post(move || o.lock().unwrap().push("worker"))
            .unwrap();
        posted_tx.send(()).unwrap();
    });
    let (o, h) = (order.clone(), event_loop.handle());
    event_loop.post(move || {
        posted_rx.recv().unwrap();
        post(move || {
            o.lock().unwrap().push("after worker");
            h.quit();
        })
        .unwrap();
    });
    assert_eq!(event_loop.run(), 0);
    worker.join().unwrap();
    assert_eq!(*order.lock().unwrap(), ["worker", "after worker"]);
}

#[test]
fn closures_posted_before_a_cross_thread_quit_always_run() {
    // The poster's post and quit race with the loop's turn; whatever the interleaving, a closure
    // posted before quit() must run before run() returns.
    for round in 0..200 {
        let mut event_loop = EventLoop::new().unwrap();
        let _safety = safety_timer(&event_loop, 5);
        let handle = event_loop.handle();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let poster = thread::spawn(move || {
            handle
                .post(move || r.store(true, Ordering::SeqCst))
                .unwrap();
            handle.quit();
        });
        let code = event_loop.run();
        poster.join().unwrap();
        assert_eq!(code, 0, "round {round}");
        assert!(
            ran.load(Ordering::SeqCst),
            "round {round}: posted closure lost"
        );
    }
}

#[test]
fn post_after_the_loop_is_dropped_fails_with_loop_gone() {
    let event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    assert!(handle.is_alive());
    drop(event_loop);
    assert!(!handle.is_alive());
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let result = thread::spawn(move || {
        handle.post(move || {
            let _keep = &flag;
        })
    })
    .join()
    .unwrap();
    assert!(matches!(result, Err(LoopError::LoopGone)));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the refused closure is dropped"
    );
}

#[test]
fn dropping_the_loop_drops_queued_closures_without_running_them() {
    let event_loop = EventLoop::new().unwrap();
    let local_dropped = Arc::new(AtomicBool::new(false));
    let remote_dropped = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicBool::new(false));
    let (flag, r) = (DropFlag(local_dropped.clone()), ran.clone());
    event_loop.post(move || {
        let _keep = &flag;
        r.store(true, Ordering::SeqCst);
    });
    let (flag, r) = (DropFlag(remote_dropped.clone()), ran.clone());
    event_loop
        .handle()
        .post(move || {
            let _keep = &flag;
            r.store(true, Ordering::SeqCst);
        })
        .unwrap();
    drop(event_loop);
    assert!(local_dropped.load(Ordering::SeqCst));
    assert!(remote_dropped.load(Ordering::SeqCst));
    assert!(!ran.load(Ordering::SeqCst));
}

/// Work queued while the loop drops its queue (a closure's captured value whose `Drop` sends a
/// request that fails at once, so its callback is posted) is dropped too. The callback holds the
/// client, which holds the loop: left queued it kept the loop, the client and the callback alive
/// for ever (a reference cycle).
#[test]
fn work_queued_while_the_loop_drops_its_queue_is_dropped_too() {
    struct SendOnDrop {
        client: Option<Rc<kdnet::network::http::HttpClient>>,
        callback_dropped: Arc<AtomicBool>,
    }
    impl Drop for SendOnDrop {
        fn drop(&mut self) {
            let client = self.client.take().unwrap();
            let keep = client.clone();
            let flag = DropFlag(self.callback_dropped.clone());
            client.get("not a url", move |_| {
                let _keep = (&keep, &flag);
            });
        }
    }
    let event_loop = EventLoop::new().unwrap();
    let client = kdnet::network::http::HttpClient::new().unwrap();
    let weak_client = Rc::downgrade(&client);
    let callback_dropped = Arc::new(AtomicBool::new(false));
    let guard = SendOnDrop {
        client: Some(client),
        callback_dropped: callback_dropped.clone(),
    };
    event_loop.post(move || drop(guard));
    drop(event_loop);
    assert!(
        callback_dropped.load(Ordering::SeqCst),
        "the callback posted during the drop is still queued"
    );
    assert!(weak_client.upgrade().is_none(), "the client leaked");
}

/// Work queued by an object that outlived its loop (a request that fails at once posts its
/// callback) is dropped at once: nothing will ever run it, and kept queued it held the callback,
/// its captures (here the client itself) and the dead loop alive for ever.
#[test]
fn work_queued_after_the_loop_is_dropped_is_dropped_at_once() {
    let event_loop = EventLoop::new().unwrap();
    let client = kdnet::network::http::HttpClient::new().unwrap();
    drop(event_loop);
    let weak_client = Rc::downgrade(&client);
    let callback_dropped = Arc::new(AtomicBool::new(false));
    let (keep, flag) = (client.clone(), DropFlag(callback_dropped.clone()));
    client.get("not a url", move |_| {
        let _keep = (&keep, &flag);
    });
    assert!(
        callback_dropped.load(Ordering::SeqCst),
        "the callback stays queued on the dropped loop"
    );
    drop(client);
    assert!(weak_client.upgrade().is_none(), "the client leaked");
}

// ---- one loop per thread ------------------------------------------------------------------------

#[test]
fn one_loop_per_thread() {
    let first = EventLoop::new().unwrap();
    assert!(matches!(EventLoop::new(), Err(LoopError::AlreadyExists)));
    drop(first);
    let second = EventLoop::new().unwrap();
    assert_eq!(second.timer_count(), 0);
}

/// A loop kept in a `thread_local!` is dropped when its thread exits, possibly after kdnet's own
/// thread-local state is gone. Dropping it then must not panic (the thread's exit aborted the
/// process: "cannot access a Thread Local Storage value during or after destruction").
#[test]
fn a_loop_kept_in_a_thread_local_is_dropped_cleanly_when_its_thread_exits() {
    thread_local! {
        static LOOP: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
        static TIMER: RefCell<Option<Rc<Timer>>> = const { RefCell::new(None) };
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    // Run in a child process: a panic in a thread-local destructor aborts the whole process.
    if std::env::var_os("KDNET_TLS_LOOP_CHILD").is_some() {
        let worker = thread::spawn(move || {
            // Touched first, so it is destroyed after kdnet's thread-locals.
            LOOP.with(|l| {
                let event_loop = EventLoop::new().unwrap();
                event_loop.post(move || {
                    let _keep = &flag;
                });
                *l.borrow_mut() = Some(event_loop);
            });
            TIMER.with(|t| {
                let timer = Timer::create_recurring(Duration::from_millis(5), || {}).unwrap();
                *t.borrow_mut() = Some(timer);
            });
        });
        worker.join().unwrap();
        assert!(dropped.load(Ordering::SeqCst), "the loop was not dropped");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_loop_kept_in_a_thread_local_is_dropped_cleanly_when_its_thread_exits",
            "--nocapture",
        ])
        .env("KDNET_TLS_LOOP_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
}

#[test]
fn a10_a11_loops_on_two_threads_are_independent() {
    let mut main_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&main_loop, 10);
    let (handle_tx, handle_rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let mut worker_loop = EventLoop::new().unwrap();
        let _safety = safety_timer(&worker_loop, 10);
        handle_tx.send(worker_loop.handle()).unwrap();
        worker_loop.run()
    });
    let worker_handle = handle_rx.recv().unwrap();
    let worker_thread = worker.thread().id();
    let on_worker = Arc::new(AtomicUsize::new(0));
    for _ in 0..16 {
        let n = on_worker.clone();
        worker_handle
            .post(move || {
                assert_eq!(thread::current().id(), worker_thread);
                n.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    let on_main = Rc::new(Cell::new(0));
    for _ in 0..5 {
        let n = on_main.clone();
        main_loop.post(move || n.set(n.get() + 1));
    }
    let wh = worker_handle.clone();
    let main_handle = main_loop.handle();
    main_loop.post(move || {
        wh.quit();
        main_handle.quit();
    });
    assert_eq!(main_loop.run(), 0);
    assert_eq!(worker.join().unwrap(), 0);
    assert_eq!(on_main.get(), 5);
    assert_eq!(on_worker.load(Ordering::SeqCst), 16);
}

// ---- quitting -----------------------------------------------------------------------------------

#[test]
fn a8_quit_from_another_thread_ends_run_promptly() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let handle = event_loop.handle();
    let quit_at = Arc::new(Mutex::new(None));
    let q = quit_at.clone();
    let quitter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        *q.lock().unwrap() = Some(Instant::now());
        handle.quit();
    });
    assert_eq!(event_loop.run(), 0);
    let returned_at = Instant::now();
    quitter.join().unwrap();
    let quit_at = quit_at.lock().unwrap().expect("quit was called");
    assert!(
        returned_at.duration_since(quit_at) < Duration::from_secs(1),
        "run() took {:?} to notice quit()",
        returned_at.duration_since(quit_at)
    );
}

/// This thread's CPU time so far (user + system), from `/proc/thread-self/stat`, in clock ticks.
#[cfg(target_os = "linux")]
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A quit from another thread taken by one turn makes that turn's wait zero (so `run()` sees it
/// at once), but not every later turn's: a loop driven by `process_events` alone (an embedding
/// host, a test) returned at once from every call while the quit stayed unconsumed by `run()`.
#[test]
fn a_taken_quit_does_not_make_later_process_events_calls_return_at_once() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    thread::spawn(move || handle.quit()).join().unwrap();
    event_loop
        .process_events(Some(Duration::from_secs(1)))
        .unwrap();
    let started = Instant::now();
    event_loop
        .process_events(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "process_events returned after {:?} with nothing to do",
        started.elapsed()
    );
    // The quit is still there for run().
    let _safety = safety_timer(&event_loop, 5);
    assert_eq!(event_loop.run(), 0);
}

#[cfg(target_os = "linux")]
/// A loopback HTTP server that answers one request with `200 ok` after 600 ms: (its port, the
/// thread, which returns the connection so that it stays open until joined).
fn slow_http_server() -> (u16, thread::JoinHandle<std::net::TcpStream>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        thread::sleep(Duration::from_millis(600));
        (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        stream
    });
    (port, server)
}

/// A quit from another thread while `HttpClient::send_and_wait` turns the loop (a nested wait)
/// ends the wait (the request cancelled, as Qt's `exit()` ends nested loops) and then `run()`;
/// until the quit the wait sleeps in the poller. It once spun at full CPU, every nested turn
/// polling with a zero timeout because a quit was pending; later it waited for the response
/// (600 ms here, for ever from a silent server) before the program could end.
#[cfg(target_os = "linux")]
#[test]
fn a_quit_during_a_nested_wait_ends_it_without_spinning() {
    let (port, server) = slow_http_server();
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let handle = event_loop.handle();
    let cpu = Rc::new(Cell::new(0));
    let waited = Rc::new(Cell::new(Duration::ZERO));
    let (c, w) = (cpu.clone(), waited.clone());
    event_loop.post(move || {
        let client = kdnet::network::http::HttpClient::new().unwrap();
        let quitter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            handle.exit(7);
        });
        let before = thread_cpu_ticks();
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{port}/");
        let response = client.send_and_wait(kdnet::network::http::HttpRequest::get(&url).unwrap());
        w.set(started.elapsed());
        c.set(thread_cpu_ticks() - before);
        assert!(
            matches!(response, Err(kdnet::network::http::HttpError::Cancelled)),
            "{response:?}"
        );
        assert_eq!(kdnet::foundation::exit_requested(), Some(7));
        quitter.join().unwrap();
    });
    let started = Instant::now();
    assert_eq!(event_loop.run(), 7);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "run() took {:?} to return after the nested wait",
        started.elapsed()
    );
    assert!(
        waited.get() < Duration::from_millis(550),
        "the wait lasted {:?}: it waited for the response",
        waited.get()
    );
    let _stream = server.join().unwrap();
    assert!(
        cpu.get() < 15,
        "the nested wait used {} ticks of CPU in ~100 ms",
        cpu.get()
    );
}

/// A nested wait (`HttpClient::send_and_wait` from a timer's callback) whose request is finished by
/// a closure the wait itself runs (a request refused before it is sent reports from the loop)
/// returns as soon as that closure ran. The turn that ran it went on to block in the poller with
/// nothing to wake it (a post inside a turn writes no wake-up): the wait lasted until an unrelated
/// event, here a timer 3 s later.
#[test]
fn a_nested_wait_finished_by_a_posted_closure_returns_without_waiting_for_another_event() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let handle = event_loop.handle();
    let _unrelated = Timer::create_timeout(Duration::from_secs(3), || {}).unwrap();
    let outcome = Rc::new(RefCell::new(None));
    let o = outcome.clone();
    Timer::set_timeout(Duration::from_millis(1), move || {
        let client = kdnet::network::http::HttpClient::new().unwrap();
        let mut request = kdnet::network::http::HttpRequest::get("http://127.0.0.1:9/").unwrap();
        request.set_header("X-Bad", "a\nb");
        let started = Instant::now();
        let result = client.send_and_wait(request);
        *o.borrow_mut() = Some((result.is_err(), started.elapsed()));
        handle.quit();
    })
    .unwrap();
    assert_eq!(event_loop.run(), 0);
    let (failed, elapsed) = outcome.borrow_mut().take().unwrap();
    assert!(failed, "the invalid request was sent");
    assert!(
        elapsed < Duration::from_secs(1),
        "the nested wait took {elapsed:?} to see its result"
    );
}

/// A host that turns the loop until a flag is set (`while !done { process_events(None) }`), the
/// flag set by a closure a timer's callback posted: the turn that runs the closure returns
/// without waiting for another event. It blocked until unrelated work came (a timer 3 s later).
#[test]
fn process_events_returns_after_running_a_closure_posted_inside_an_earlier_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let _unrelated = Timer::create_timeout(Duration::from_secs(3), || {}).unwrap();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    Timer::set_timeout(Duration::from_millis(1), move || {
        let d = d.clone();
        post(move || d.set(true)).unwrap();
    })
    .unwrap();
    let started = Instant::now();
    while !done.get() {
        event_loop.process_events(None).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the flag was seen after {:?}",
        started.elapsed()
    );
}

/// The same for a closure posted from another thread: the post's wake-up ends the wait of one
/// turn, which returns before the closure runs (closures run at the start of a turn); the next
/// turn runs it and must not then wait, or a host turning the loop until the closure's effect
/// shows waited for unrelated work (here 3 s; with `process_events(None)`, for ever).
#[test]
fn process_events_returns_after_running_a_closure_posted_from_another_thread() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        handle
            .post(move || d.store(true, Ordering::SeqCst))
            .unwrap();
    });
    let started = Instant::now();
    while !done.load(Ordering::SeqCst) {
        event_loop
            .process_events(Some(Duration::from_secs(3)))
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    poster.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the closure's effect was seen after {:?}",
        started.elapsed()
    );
}

#[test]
fn a10_quit_before_run_returns_at_once() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    event_loop.exit(3);
    let started = Instant::now();
    assert_eq!(event_loop.run(), 3);

    // Through a handle (e.g. from another thread before the loop started).
    let handle = event_loop.handle();
    thread::spawn(move || handle.exit(4)).join().unwrap();
    assert_eq!(event_loop.run(), 4);

    event_loop.quit();
    assert_eq!(event_loop.run(), 0);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn quit_is_consumed_by_run() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 1);
    event_loop.exit(5);
    assert_eq!(event_loop.run(), 5);
    // Nothing asks it to quit now: only the safety timer ends this run.
    assert_eq!(event_loop.run(), SAFETY_EXIT);
}

/// A quit a slot asks for through a `LoopHandle` ends `run()` once the closures posted before it
/// ran: nothing that became due or ready after the slot's turn is dispatched by that run (it
/// used to take one more turn that also polled and fired due timers, so a periodic timer could
/// tick once more after its slot quit, on a loaded machine); the next turn picks it up.
#[test]
fn run_dispatches_nothing_after_a_slots_quit_but_the_closures_posted_before_it() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let log = Rc::new(RefCell::new(Vec::<&str>::new()));
    let later = Timer::new().unwrap();
    later.single_shot.set(true);
    let l = log.clone();
    later
        .timeout
        .connect(move |_| l.borrow_mut().push("later"))
        .release();
    let quitter = Timer::new().unwrap();
    quitter.single_shot.set(true);
    let (l, handle, later) = (log.clone(), event_loop.handle(), later.clone());
    quitter
        .timeout
        .connect(move |_| {
            l.borrow_mut().push("quitter");
            let posted = l.clone();
            post(move || posted.borrow_mut().push("posted")).unwrap();
            handle.quit();
            // Due on the next turn: after the quit.
            later.start();
        })
        .release();
    quitter.start();
    assert_eq!(event_loop.run(), 0);
    assert_eq!(*log.borrow(), ["quitter", "posted"]);
    // Not lost: the next turn fires it.
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(*log.borrow(), ["quitter", "posted", "later"]);
}

#[test]
fn exit_code_from_a_slot() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let handle = event_loop.handle();
    let signal: Signal<i32> = Signal::new();
    signal.connect(move |code| handle.exit(*code)).release();
    event_loop.post(move || signal.emit(&42));
    assert_eq!(event_loop.run(), 42);
}

// ---- waiting ------------------------------------------------------------------------------------

#[test]
fn l5_process_events_honours_its_timeout() {
    let mut event_loop = EventLoop::new().unwrap();
    let started = Instant::now();
    assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(1));

    let started = Instant::now();
    assert_eq!(
        event_loop
            .process_events(Some(Duration::from_millis(100)))
            .unwrap(),
        0
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
}

#[test]
fn l7_wake_up_from_another_thread_ends_the_wait() {
    let mut event_loop = EventLoop::new().unwrap();
    // Bounds the wait if wake_up were broken.
    let _safety = safety_timer(&event_loop, 10);
    let handle = event_loop.handle();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        handle.wake_up();
    });
    let started = Instant::now();
    event_loop.process_events(None).unwrap();
    let waited = started.elapsed();
    waker.join().unwrap();
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

// ---- deferred connections -----------------------------------------------------------------------

#[test]
fn deferred_slots_emitted_on_two_threads_run_on_the_loop_thread() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let evaluator = event_loop.connection_evaluator();
    let ran: Arc<Mutex<Vec<(u32, thread::ThreadId)>>> = Arc::default();
    let mut releases = Vec::new();
    let mut workers = Vec::new();
    for id in 0..2u32 {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        releases.push(release_tx);
        let (evaluator, ran, handle) = (evaluator.clone(), ran.clone(), event_loop.handle());
        workers.push(thread::spawn(move || {
            let signal: Signal<u32> = Signal::new();
            signal
                .connect_deferred(&evaluator, move |v| {
                    let mut ran = ran.lock().unwrap();
                    ran.push((*v, thread::current().id()));
                    if ran.len() == 2 {
                        handle.quit();
                    }
                })
                .release();
            signal.emit(&id);
            // Keep the signal (and so its queued call) alive until the loop ran it.
            release_rx.recv().unwrap();
        }));
    }
    assert_eq!(event_loop.run(), 0, "the emits woke the loop");
    for tx in releases {
        tx.send(()).unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_by_key(|(v, _)| *v);
    let me = thread::current().id();
    assert_eq!(ran, [(0, me), (1, me)]);
}

// ---- fairness -----------------------------------------------------------------------------------

#[test]
fn a_self_reposting_closure_cannot_starve_timers() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    post(move || repost_forever(c)).unwrap();
    let handle = event_loop.handle();
    let _timer = Timer::create_timeout(Duration::from_millis(20), move || handle.exit(1)).unwrap();
    assert_eq!(
        event_loop.run(),
        1,
        "the timer fired despite the busy poster"
    );
    assert!(count.get() > 1);
}

// ---- embedding ----------------------------------------------------------------------------------

#[test]
fn embedding_descriptor_is_readable_exactly_while_work_is_pending() {
    let mut event_loop = EventLoop::new().unwrap();
    let fd = event_loop.as_raw_fd();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(!is_readable(fd), "idle loop must not look busy");
    assert_eq!(event_loop.next_timeout(), None);

    // A closure posted on the loop's thread.
    let ran = Rc::new(Cell::new(0));
    let r = ran.clone();
    event_loop.post(move || r.set(r.get() + 1));
    assert!(is_readable(fd));
    assert_eq!(event_loop.next_timeout(), Some(Duration::ZERO));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(ran.get(), 1);
    assert!(!is_readable(fd));
    assert_eq!(event_loop.next_timeout(), None);

    // A closure posted from another thread.
    let handle = event_loop.handle();
    let remote_ran = Arc::new(AtomicBool::new(false));
    let r = remote_ran.clone();
    thread::spawn(move || {
        handle
            .post(move || r.store(true, Ordering::SeqCst))
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(is_readable(fd));
    assert_eq!(event_loop.next_timeout(), Some(Duration::ZERO));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(remote_ran.load(Ordering::SeqCst));
    assert!(!is_readable(fd));

    // A deferred invocation queued from another thread.
    let evaluator = event_loop.connection_evaluator();
    let deferred_ran = Arc::new(AtomicBool::new(false));
    let d = deferred_ran.clone();
    let (queued_tx, queued_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let emitter = thread::spawn(move || {
        let signal: Signal<()> = Signal::new();
        signal
            .connect_deferred(&evaluator, move |_| d.store(true, Ordering::SeqCst))
            .release();
        signal.emit(&());
        queued_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    queued_rx.recv().unwrap();
    assert!(is_readable(fd));
    assert_eq!(event_loop.next_timeout(), Some(Duration::ZERO));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(deferred_ran.load(Ordering::SeqCst));
    release_tx.send(()).unwrap();
    emitter.join().unwrap();
}

#[test]
fn embedding_next_timeout_follows_timers_and_process_events_zero_never_blocks() {
    let mut event_loop = EventLoop::new().unwrap();
    let fd = event_loop.as_raw_fd();
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    let timer = Timer::create_timeout(Duration::from_secs(10), move || f.set(f.get() + 1)).unwrap();
    assert!(
        is_readable(fd),
        "arming a timer wakes the host to re-read next_timeout"
    );
    let next = event_loop.next_timeout().expect("a timer is armed");
    assert!(
        next > Duration::from_secs(5) && next <= Duration::from_secs(10),
        "{next:?}"
    );

    let started = Instant::now();
    assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!is_readable(fd));
    assert_eq!(fired.get(), 0);

    timer.start_with(Duration::ZERO);
    assert_eq!(event_loop.next_timeout(), Some(Duration::ZERO));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(fired.get(), 1);
    assert_eq!(event_loop.next_timeout(), None, "single-shot: nothing left");
}

#[test]
fn debug_output_names_the_state() {
    let event_loop = EventLoop::new().unwrap();
    let text = format!("{event_loop:?} {:?}", event_loop.handle());
    assert!(
        text.contains("EventLoop") && text.contains("alive: true"),
        "{text}"
    );
}

#[test]
fn loop_error_messages() {
    let errors = [
        LoopError::NoEventLoop,
        LoopError::AlreadyExists,
        LoopError::LoopGone,
        LoopError::DuplicateNotifier {
            fd: 7,
            kind: kdnet::NotificationType::Read,
        },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with(|c: char| c.is_lowercase()), "{text:?}");
        assert!(!text.ends_with('.'), "{text:?}");
    }
    assert!(
        LoopError::DuplicateNotifier {
            fd: 7,
            kind: kdnet::NotificationType::Read
        }
        .to_string()
        .contains('7')
    );
}

/// A deferred slot queued during a turn (here by a posted closure on the loop's thread) wakes the
/// poller, and that turn's own poll consumes the wake-up. Afterwards, work that host code adds
/// between turns — a timer started, a closure posted from another thread — must still make the
/// descriptor readable: the loop remembered a wake-up as pending and skipped the write, so a host
/// sleeping on the descriptor (with `next_timeout()` read before the work came) hung.
#[test]
fn embedding_work_added_after_a_turn_that_consumed_a_wake_up_makes_the_descriptor_readable() {
    let mut event_loop = EventLoop::new().unwrap();
    let fd = event_loop.as_raw_fd();
    let evaluator = event_loop.connection_evaluator();
    let deferred_ran = Arc::new(AtomicUsize::new(0));
    let signal: Rc<Signal<()>> = Rc::new(Signal::new());
    let d = deferred_ran.clone();
    signal
        .connect_deferred(&evaluator, move |_| {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .release();

    // Host code posts a closure; the host dispatches it. The closure emits the deferred signal.
    let s = signal.clone();
    event_loop.post(move || s.emit(&()));
    assert!(is_readable(fd));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(deferred_ran.load(Ordering::SeqCst), 1);
    assert!(!is_readable(fd), "nothing is left to do");
    assert_eq!(
        event_loop.next_timeout(),
        None,
        "the host may sleep on the fd"
    );

    // A timer started by host code between turns.
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let _timer = Timer::create_timeout(Duration::from_millis(1), move || f.set(true)).unwrap();
    assert!(
        is_readable(fd),
        "a timer started between turns must wake a host sleeping on the descriptor"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();

    // The same with a deferred emit in the turn, then a post from another thread.
    let s = signal.clone();
    event_loop.post(move || s.emit(&()));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(deferred_ran.load(Ordering::SeqCst), 2);
    assert!(!is_readable(fd));
    let handle = event_loop.handle();
    let remote_ran = Arc::new(AtomicBool::new(false));
    let r = remote_ran.clone();
    thread::spawn(move || {
        handle
            .post(move || r.store(true, Ordering::SeqCst))
            .unwrap()
    })
    .join()
    .unwrap();
    assert!(
        is_readable(fd),
        "a cross-thread post between turns must wake a host sleeping on the descriptor"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(remote_ran.load(Ordering::SeqCst));
}

/// A deferred slot that waits in a nested loop (`send_and_wait`) while another deferred slot is
/// queued: the nested turns cannot run it (the evaluation is busy; it runs after the slot
/// returns), so they must sleep in the poller. Each nested turn counted it as immediate work and
/// polled with a zero timeout: a busy loop at full CPU for the whole wait.
#[cfg(target_os = "linux")]
#[test]
fn a_deferred_slot_queued_during_a_nested_wait_in_a_deferred_slot_does_not_spin_it() {
    let (port, server) = slow_http_server();
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 10);
    let evaluator = event_loop.connection_evaluator();
    let handle = event_loop.handle();
    let cpu = Arc::new(AtomicUsize::new(usize::MAX));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let worker = {
        let (cpu, order) = (cpu.clone(), order.clone());
        thread::spawn(move || {
            let signal: Signal<u32> = Signal::new();
            signal
                .connect_deferred(&evaluator, move |&n| {
                    order.lock().unwrap().push(n);
                    if n == 1 {
                        let client = kdnet::network::http::HttpClient::new().unwrap();
                        let before = thread_cpu_ticks();
                        let url = format!("http://127.0.0.1:{port}/");
                        let response = client
                            .send_and_wait(kdnet::network::http::HttpRequest::get(&url).unwrap())
                            .unwrap();
                        cpu.store((thread_cpu_ticks() - before) as usize, Ordering::SeqCst);
                        assert_eq!(response.text(), "ok");
                    } else {
                        handle.quit();
                    }
                })
                .release();
            signal.emit(&1);
            thread::sleep(Duration::from_millis(100));
            signal.emit(&2);
            release_rx.recv().unwrap();
        })
    };
    let started = Instant::now();
    assert_eq!(event_loop.run(), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    release_tx.send(()).unwrap();
    worker.join().unwrap();
    let _stream = server.join().unwrap();
    assert_eq!(*order.lock().unwrap(), [1, 2]);
    let cpu = cpu.load(Ordering::SeqCst);
    assert!(
        cpu < 15,
        "the nested wait used {cpu} ticks of CPU in ~500 ms"
    );
}

/// A host loop as GLib or Qt run it around an embedded loop: sleep until the loop's descriptor is
/// readable or `next_timeout()` passes (never longer than `limit`), then `process_events(ZERO)`.
/// Returns false if it slept the whole `limit` without the descriptor becoming readable and
/// without a timeout due: a host with no other wake-up would have slept for ever.
struct Host {
    poll: mio::Poll,
    events: mio::Events,
}

impl Host {
    fn new(event_loop: &EventLoop) -> Host {
        let poll = mio::Poll::new().unwrap();
        let fd = event_loop.as_raw_fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                // Level-triggered in effect: re-registered before every wait below.
                mio::Interest::READABLE,
            )
            .unwrap();
        Host {
            poll,
            events: mio::Events::with_capacity(4),
        }
    }

    fn iterate(&mut self, event_loop: &mut EventLoop, limit: Duration) -> bool {
        let wait = event_loop.next_timeout().map_or(limit, |t| t.min(limit));
        let woken_by_timeout = event_loop.next_timeout().is_some_and(|t| t <= limit);
        let readable = self.wait(event_loop, wait);
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        readable || woken_by_timeout
    }

    /// Sleeps until the loop's descriptor is readable or `wait` passed (level-triggered, as
    /// poll(2), GLib and Qt watch it); returns whether it is readable.
    fn wait(&mut self, event_loop: &EventLoop, wait: Duration) -> bool {
        let fd = event_loop.as_raw_fd();
        self.poll
            .registry()
            .reregister(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        !self.events.is_empty()
    }
}

/// Data beyond a socket's read budget for one turn is read on later turns: the host must learn
/// that the loop has more to do (the descriptor stays readable) rather than sleep on it.
#[test]
fn embedding_a_socket_with_more_than_one_turn_of_data_keeps_the_host_awake() {
    use std::io::Write;
    const TOTAL: usize = 6 * 1024 * 1024;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        accepted_rx.recv().unwrap();
        stream.write_all(&vec![7u8; TOTAL]).unwrap();
        stream
    });
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let socket = kdnet::network::TcpSocket::new().unwrap();
    let received = Rc::new(Cell::new(0usize));
    let (r, s) = (received.clone(), Rc::downgrade(&socket));
    socket
        .ready_read
        .connect(move |_| {
            if let Some(s) = s.upgrade() {
                r.set(r.get() + s.read_all().len());
            }
        })
        .release();
    socket
        .connect_to_address("127.0.0.1".parse().unwrap(), port)
        .unwrap();
    let started = Instant::now();
    while socket.state() != kdnet::network::SocketState::Connected {
        assert!(
            host.iterate(&mut event_loop, Duration::from_secs(2)),
            "connect"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    accepted_tx.send(()).unwrap();
    let mut turns = 0;
    while received.get() < TOTAL {
        assert!(
            host.iterate(&mut event_loop, Duration::from_secs(1)),
            "the host slept with {} of {TOTAL} bytes unread",
            received.get()
        );
        turns += 1;
        assert!(turns < 10_000);
    }
    assert!(turns > 1, "read in {turns} turn(s)");
    let _stream = server.join().unwrap();
}

/// A worker thread that keeps a deferred connection to a loop's evaluator (and a `LoopHandle`,
/// which keeps the evaluator alive) goes on emitting after the loop is gone: nothing will ever
/// evaluate those calls. They are dropped (with what they captured) as `LoopHandle::post` drops
/// its closure; they piled up in the queue without bound.
#[test]
fn deferred_calls_queued_after_the_loop_is_gone_are_dropped() {
    let event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let evaluator = event_loop.connection_evaluator();
    let queued_before = Arc::new(AtomicBool::new(false));
    let (emit_tx, emit_rx) = mpsc::channel::<()>();
    let (emitted_tx, emitted_rx) = mpsc::channel::<()>();
    let worker = {
        let (evaluator, queued_before) = (evaluator.clone(), queued_before.clone());
        thread::spawn(move || {
            let signal: Signal<Arc<DropFlag>> = Signal::new();
            signal.connect_deferred(&evaluator, |_| {}).release();
            // Queued while the loop lives, never evaluated: dropped with the loop.
            signal.emit(&Arc::new(DropFlag(queued_before)));
            emitted_tx.send(()).unwrap();
            emit_rx.recv().unwrap();
            let mut flags = Vec::new();
            for _ in 0..100 {
                let flag = Arc::new(AtomicBool::new(false));
                signal.emit(&Arc::new(DropFlag(flag.clone())));
                flags.push(flag);
            }
            // The signal still lives (it would cancel its queued calls when dropped).
            let dropped = flags.iter().filter(|f| f.load(Ordering::SeqCst)).count();
            emitted_tx.send(()).unwrap();
            emit_rx.recv().unwrap();
            drop(signal);
            dropped
        })
    };
    emitted_rx.recv().unwrap();
    drop(event_loop);
    assert!(!handle.is_alive());
    assert!(
        queued_before.load(Ordering::SeqCst),
        "a call queued before the loop was dropped is dropped with it"
    );
    emit_tx.send(()).unwrap();
    emitted_rx.recv().unwrap();
    assert!(!evaluator.has_pending(), "{evaluator:?}");
    assert_eq!(evaluator.evaluate_deferred_connections(), 0);
    emit_tx.send(()).unwrap();
    assert_eq!(
        worker.join().unwrap(),
        100,
        "calls queued after the loop is gone are dropped at once"
    );
}

/// A deferred connection to a loop that is gone (its evaluator kept alive by a `LoopHandle` or an
/// `Arc`) can never run its slot again, but stayed connected, keeping what the slot captured: a
/// worker waiting for the end of a channel whose sender the slot held waited for ever. The first
/// emit after the loop is gone disconnects it (Qt drops a queued connection whose receiver is
/// gone), dropping the slot and its captures.
#[test]
fn a_deferred_connection_to_a_dropped_loop_disconnects_at_its_next_emit() {
    let event_loop = EventLoop::new().unwrap();
    let evaluator = event_loop.connection_evaluator();
    let signal: Signal<u32> = Signal::new();
    let (tx, rx) = mpsc::channel::<u32>();
    let handle = signal.connect_deferred(&evaluator, move |&v| tx.send(v).unwrap());
    signal.emit(&1);
    drop(event_loop);
    assert!(handle.is_active(), "not emitted since: nothing told it yet");
    signal.emit(&2);
    assert!(!handle.is_active());
    assert_eq!(signal.connection_count(), 0);
    assert_eq!(
        rx.try_recv(),
        Err(mpsc::TryRecvError::Disconnected),
        "the slot (and the sender it held) is dropped, and nothing was delivered"
    );
}

/// `set_on_invocation_added` on a loop's evaluator (KDBindings' hook, e.g. to log or count) adds
/// to what happens on each queued call: the loop still wakes for it. It replaced the loop's own
/// wake-up, and a deferred slot emitted from another thread then waited for an unrelated event.
#[test]
fn a_user_callback_on_the_loops_evaluator_does_not_stop_the_loop_waking() {
    let mut event_loop = EventLoop::new().unwrap();
    // Without the wake-up only this timer ends the run (with another code). Generous: the test
    // once missed a 2 s bound on a machine loaded five times over.
    let _safety = safety_timer(&event_loop, 10);
    let evaluator = event_loop.connection_evaluator();
    let added = Arc::new(AtomicUsize::new(0));
    let a = added.clone();
    evaluator.set_on_invocation_added(move || {
        a.fetch_add(1, Ordering::SeqCst);
    });
    let handle = event_loop.handle();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let signal: Signal<()> = Signal::new();
        let h = handle.clone();
        signal
            .connect_deferred(&evaluator, move |_| h.exit(5))
            .release();
        thread::sleep(Duration::from_millis(100));
        signal.emit(&());
        release_rx.recv().unwrap();
    });
    let started = Instant::now();
    assert_eq!(event_loop.run(), 5, "the deferred slot woke the loop");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The hook runs on the emitting thread after the call is queued (and the loop woken), so
    // the loop may run the slot before the hook returns: the worker's emit has returned once
    // the worker is joined.
    release_tx.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(
        added.load(Ordering::SeqCst),
        1,
        "the user's callback ran too"
    );
}

/// An embedding host driving a periodic timer sleeps between ticks: it wakes about once per tick,
/// never spins on a descriptor left readable or a timeout that stays zero.
#[test]
fn embedding_a_periodic_timer_wakes_the_host_about_once_per_tick() {
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let _timer =
        Timer::create_recurring(Duration::from_millis(10), move || t.set(t.get() + 1)).unwrap();
    let started = Instant::now();
    let mut iterations = 0u32;
    while started.elapsed() < Duration::from_millis(300) {
        assert!(host.iterate(&mut event_loop, Duration::from_secs(1)));
        iterations += 1;
    }
    assert!(ticks.get() >= 5, "{} ticks", ticks.get());
    assert!(
        iterations <= 3 * ticks.get() + 10,
        "{iterations} host iterations for {} ticks",
        ticks.get()
    );
}

/// `next_timeout()` as a millisecond host takes it (poll(2)'s timeout, GLib's `prepare`, a Qt
/// timer): whole milliseconds, the fraction dropped as `as_millis()` does.
fn whole_millis(timeout: Duration) -> Duration {
    Duration::from_millis(timeout.as_millis() as u64)
}

/// A host that waits the timeout the loop advertises, in its own millisecond units, finds the timer
/// due when it wakes: it never wakes early to a timeout of less than a millisecond, which it waits
/// as zero, again and again, until the deadline (a busy loop before every tick). The advertised
/// timeout was exact to the nanosecond, while the loop's own wait (and so `run()`) rounds up to
/// whole milliseconds.
#[test]
fn embedding_a_millisecond_host_waiting_the_advertised_timeout_finds_the_timer_due() {
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let ticks = Rc::new(Cell::new(0u32));
    let t = ticks.clone();
    let _timer =
        Timer::create_recurring(Duration::from_micros(7_300), move || t.set(t.get() + 1)).unwrap();
    let fired_at = Rc::new(RefCell::new(Vec::new()));
    let (f, started) = (fired_at.clone(), Instant::now());
    let _single = Timer::create_timeout(Duration::from_micros(23_700), move || {
        f.borrow_mut().push(started.elapsed())
    })
    .unwrap();
    let mut idle = Vec::new();
    while ticks.get() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} ticks",
            ticks.get()
        );
        let timeout = event_loop.next_timeout().expect("a timer is armed");
        let readable = host.wait(&event_loop, whole_millis(timeout));
        let ran = event_loop.process_events(Some(Duration::ZERO)).unwrap();
        if ran == 0 && !readable {
            // Woken by the advertised timeout, with nothing due.
            idle.push(timeout);
        }
    }
    assert!(
        idle.len() <= 2,
        "{} host wake-ups found no timer due after waiting the advertised timeout (the first: {:?})",
        idle.len(),
        &idle[..idle.len().min(5)]
    );
    let fired_at = fired_at.borrow();
    assert_eq!(fired_at.len(), 1);
    assert!(
        fired_at[0] >= Duration::from_micros(23_700) && fired_at[0] < Duration::from_millis(500),
        "{fired_at:?}"
    );
}

/// A host asleep on the loop's descriptor with no timeout (nothing armed) is woken by a closure
/// another thread posts, runs it with one `process_events(ZERO)`, and then sleeps again: the
/// descriptor is not left readable and no zero timeout is advertised. Several threads posting in
/// bursts, many rounds: no wake-up is lost to a race.
#[test]
fn embedding_posts_from_other_threads_wake_a_sleeping_host_and_leave_nothing_behind() {
    const ROUNDS: usize = 50;
    const THREADS: usize = 3;
    const POSTS: usize = 20;
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let ran = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        assert_eq!(event_loop.next_timeout(), None, "round {round}");
        let posters: Vec<_> = (0..THREADS)
            .map(|i| {
                let (handle, ran) = (event_loop.handle(), ran.clone());
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis((i as u64 + round as u64) % 3));
                    for _ in 0..POSTS {
                        let ran = ran.clone();
                        handle
                            .post(move || {
                                ran.fetch_add(1, Ordering::SeqCst);
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        let target = (round + 1) * THREADS * POSTS;
        let started = Instant::now();
        while ran.load(Ordering::SeqCst) < target {
            let wait = event_loop.next_timeout().unwrap_or(Duration::from_secs(5));
            assert!(
                host.wait(&event_loop, wait) || wait < Duration::from_secs(5),
                "round {round}: the host slept 5 s with {} of {target} closures run",
                ran.load(Ordering::SeqCst)
            );
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        for poster in posters {
            poster.join().unwrap();
        }
        // Everything ran: at most one stale wake-up may remain, and it goes with one more turn.
        if is_readable(event_loop.as_raw_fd()) {
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
        }
        assert!(!is_readable(event_loop.as_raw_fd()), "round {round}");
        assert_eq!(event_loop.next_timeout(), None, "round {round}");
        assert_eq!(ran.load(Ordering::SeqCst), target);
    }
    assert!(
        !host.wait(&event_loop, Duration::from_millis(100)),
        "idle loop woke the host"
    );
}

/// A notifier's readiness wakes a sleeping host; a slot that reads one byte per signal is
/// triggered once per host wake-up while bytes are left (level-triggered), and once they are all
/// read the host sleeps: the descriptor does not stay readable.
#[test]
fn embedding_a_notifier_wakes_the_host_once_per_turn_while_its_condition_holds() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let (local, mut remote) = std::os::unix::net::UnixStream::pair().unwrap();
    local.set_nonblocking(true).unwrap();
    let notifier =
        kdnet::FileDescriptorNotifier::new(local.as_raw_fd(), kdnet::NotificationType::Read)
            .unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    notifier
        .triggered
        .connect(move |_| {
            let mut byte = [0u8; 1];
            if let Ok(1) = (&local).read(&mut byte) {
                g.borrow_mut().push(byte[0]);
            }
        })
        .release();
    // Settle the registration's own readiness reports, if any.
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(!host.wait(&event_loop, Duration::from_millis(50)), "idle");
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        remote.write_all(b"abcde").unwrap();
        remote
    });
    let started = Instant::now();
    let mut wakeups = 0;
    while got.borrow().len() < 5 {
        assert_eq!(event_loop.next_timeout(), None, "nothing timed is pending");
        assert!(
            host.wait(&event_loop, Duration::from_secs(5)),
            "the host slept 5 s with {} of 5 bytes read",
            got.borrow().len()
        );
        wakeups += 1;
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(*got.borrow(), b"abcde");
    assert!(wakeups <= 6, "{wakeups} wake-ups for 5 bytes");
    // All read: at most one more turn reports the empty descriptor, then the host sleeps.
    if host.wait(&event_loop, Duration::ZERO) {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    assert!(
        !host.wait(&event_loop, Duration::from_millis(100)),
        "the descriptor stayed readable with nothing to read"
    );
    assert_eq!(got.borrow().len(), 5);
    let _remote = writer.join().unwrap();
}

/// A slot that waits in a nested loop (`foundation::process_events`, KDFoundation's
/// `EventLoop::instance()->processEvents()`) while a host drives the loop: the nested turns
/// deliver a worker's post, a notifier's readiness and a timer, each once, whichever kind of
/// callback (posted closure, timer slot, notifier slot) waits; when it returns, the host finds
/// nothing left: the descriptor is not readable and no timeout is advertised.
#[test]
fn embedding_a_slot_waiting_in_a_nested_loop_leaves_nothing_for_the_host() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Waiter {
        Posted,
        Timer,
        Notifier,
    }

    /// What the nested wait waits for.
    struct World {
        got: RefCell<Vec<u8>>,
        fired: Cell<u32>,
        posted: Arc<AtomicUsize>,
        remote: RefCell<Option<UnixStream>>,
        handle: kdnet::LoopHandle,
        nested_turns: Cell<u32>,
        waited: Cell<u32>,
    }

    impl World {
        fn arrived(&self) -> bool {
            self.got.borrow().len() >= 3
                && self.fired.get() > 0
                && self.posted.load(Ordering::SeqCst) > 0
        }

        /// Starts a worker that writes to the watched socket and posts, then turns the loop
        /// (nested) until the write, the post and the timer arrived.
        fn wait(&self) {
            let Some(mut remote) = self.remote.borrow_mut().take() else {
                return;
            };
            self.waited.set(self.waited.get() + 1);
            assert_eq!(kdnet::foundation::dispatch_depth(), 1);
            let (handle, posted) = (self.handle.clone(), self.posted.clone());
            let worker = thread::spawn(move || {
                thread::sleep(Duration::from_millis(10));
                remote.write_all(b"xyz").unwrap();
                thread::sleep(Duration::from_millis(10));
                handle
                    .post(move || {
                        assert_eq!(kdnet::foundation::dispatch_depth(), 2, "nested");
                        posted.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap();
                remote
            });
            let started = Instant::now();
            while !self.arrived() {
                assert!(started.elapsed() < Duration::from_secs(5), "nested wait");
                kdnet::foundation::process_events(Some(Duration::from_secs(1))).unwrap();
                self.nested_turns.set(self.nested_turns.get() + 1);
            }
            // Kept open: a hang-up would make the watched end readable again.
            *self.remote.borrow_mut() = Some(worker.join().unwrap());
        }
    }

    for waiter in [Waiter::Posted, Waiter::Timer, Waiter::Notifier] {
        let mut event_loop = EventLoop::new().unwrap();
        let mut host = Host::new(&event_loop);
        let (local, remote) = UnixStream::pair().unwrap();
        local.set_nonblocking(true).unwrap();
        let world = Rc::new(World {
            got: RefCell::new(Vec::new()),
            fired: Cell::new(0),
            posted: Arc::new(AtomicUsize::new(0)),
            remote: RefCell::new(Some(remote)),
            handle: event_loop.handle(),
            nested_turns: Cell::new(0),
            waited: Cell::new(0),
        });
        let notifier =
            kdnet::FileDescriptorNotifier::new(local.as_raw_fd(), kdnet::NotificationType::Read)
                .unwrap();
        let w = world.clone();
        notifier
            .triggered
            .connect(move |_| {
                let mut buf = [0u8; 16];
                while let Ok(n @ 1..) = (&local).read(&mut buf) {
                    w.got.borrow_mut().extend_from_slice(&buf[..n]);
                }
            })
            .release();
        let w = world.clone();
        let _timer = Timer::create_timeout(Duration::from_millis(40), move || {
            w.fired.set(w.fired.get() + 1);
        })
        .unwrap();

        // What starts the wait.
        let (_trigger, _trigger_remote, _waiting_timer);
        match waiter {
            Waiter::Posted => {
                let w = world.clone();
                event_loop.post(move || w.wait());
            }
            Waiter::Timer => {
                let w = world.clone();
                _waiting_timer = Timer::create_timeout(Duration::ZERO, move || w.wait()).unwrap();
            }
            Waiter::Notifier => {
                let (a, mut b) = UnixStream::pair().unwrap();
                a.set_nonblocking(true).unwrap();
                b.write_all(b"!").unwrap();
                let notifier = kdnet::FileDescriptorNotifier::new(
                    a.as_raw_fd(),
                    kdnet::NotificationType::Read,
                )
                .unwrap();
                let w = world.clone();
                notifier
                    .triggered
                    .connect(move |_| {
                        let _ = (&a).read(&mut [0u8; 4]);
                        w.wait();
                    })
                    .release();
                _trigger = notifier;
                _trigger_remote = b;
            }
        }

        // The host: wake, dispatch, until the waiting callback has returned.
        let started = Instant::now();
        while !world.arrived() {
            assert!(started.elapsed() < Duration::from_secs(10), "{waiter:?}");
            host.iterate(&mut event_loop, Duration::from_secs(1));
        }
        assert_eq!(world.waited.get(), 1, "{waiter:?}");
        assert!(world.nested_turns.get() >= 1, "{waiter:?}");
        assert_eq!(*world.got.borrow(), b"xyz", "{waiter:?}");
        assert_eq!(world.fired.get(), 1, "{waiter:?}");
        assert_eq!(world.posted.load(Ordering::SeqCst), 1, "{waiter:?}");
        assert_eq!(event_loop.next_timeout(), None, "{waiter:?}");
        assert!(
            !is_readable(event_loop.as_raw_fd()),
            "{waiter:?}: the nested turns left work for the host"
        );
        assert!(
            !host.wait(&event_loop, Duration::from_millis(100)),
            "{waiter:?}: the idle loop woke the host"
        );
        assert_eq!(event_loop.process_events(Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(kdnet::foundation::dispatch_depth(), 0);
    }
}

/// More descriptors ready at once than one turn takes (256): the descriptor stays readable for a
/// level-triggered host until every one was dispatched, so none waits for unrelated work.
#[test]
fn embedding_readiness_beyond_one_turns_batch_keeps_the_descriptor_readable() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    const PAIRS: usize = 300;
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let delivered = Rc::new(Cell::new(0usize));
    let mut keep = Vec::new();
    for _ in 0..PAIRS {
        let (local, mut remote) = UnixStream::pair().unwrap();
        local.set_nonblocking(true).unwrap();
        let notifier =
            kdnet::FileDescriptorNotifier::new(local.as_raw_fd(), kdnet::NotificationType::Read)
                .unwrap();
        let d = delivered.clone();
        notifier
            .triggered
            .connect(move |_| {
                let mut buf = [0u8; 8];
                while let Ok(1..) = (&local).read(&mut buf) {}
                d.set(d.get() + 1);
            })
            .release();
        remote.write_all(b"x").unwrap();
        keep.push((notifier, remote));
    }
    let mut turns = 0;
    while delivered.get() < PAIRS {
        // After a turn whose poll was full, next_timeout says so too (for edge-triggered hosts).
        assert_eq!(
            event_loop.next_timeout(),
            (turns > 0).then_some(Duration::ZERO)
        );
        assert!(
            host.wait(&event_loop, Duration::from_secs(2)),
            "the host slept with {} of {PAIRS} descriptors dispatched",
            delivered.get()
        );
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        turns += 1;
        assert!(turns < 10);
    }
    assert_eq!(turns, 2, "256 per turn");
    assert_eq!(delivered.get(), PAIRS);
    assert!(!host.wait(&event_loop, Duration::from_millis(50)));
    assert_eq!(
        event_loop.next_timeout(),
        None,
        "the last poll had room to spare"
    );
}

// ---- an embedding host learns about quit/exit ---------------------------------------------------

/// Drives `event_loop` as an embedding host does (an edge-triggered mio poller on its descriptor,
/// `next_timeout`, `process_events(ZERO)`) until `take_exit_request` reports a code; `None` after
/// `limit`.
fn host_until_exit(event_loop: &mut EventLoop, limit: Duration) -> Option<i32> {
    let mut host = mio::Poll::new().unwrap();
    let fd = event_loop.as_raw_fd();
    host.registry()
        .register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .unwrap();
    let mut events = mio::Events::with_capacity(4);
    let started = Instant::now();
    while started.elapsed() < limit {
        let wait = event_loop
            .next_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.min(Duration::from_millis(100))
            });
        host.poll(&mut events, Some(wait)).unwrap();
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        if let Some(code) = event_loop.take_exit_request() {
            return Some(code);
        }
    }
    None
}

/// A slot asks to exit through a `LoopHandle` (all a slot can reach): a host driving the loop
/// with `process_events` learns the code from `take_exit_request`, promptly, once.
#[test]
fn an_embedding_host_learns_the_exit_code_a_slot_asked_for() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let _quitter =
        Timer::create_timeout(Duration::from_millis(20), move || handle.exit(5)).unwrap();
    let started = Instant::now();
    assert_eq!(
        host_until_exit(&mut event_loop, Duration::from_secs(5)),
        Some(5)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event_loop.take_exit_request(), None, "taken once");
    // Taken by the host: run() does not see it again.
    let _safety = safety_timer(&event_loop, 1);
    assert_eq!(event_loop.run(), SAFETY_EXIT);
}

/// A quit from another thread reaches the host after the closures posted before it ran, as it
/// ends `run()` only after they ran.
#[test]
fn an_embedding_host_learns_a_cross_thread_quit_after_the_closures_posted_before_it() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let poster = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        for _ in 0..100 {
            let r = r.clone();
            handle
                .post(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
        handle.quit();
    });
    assert_eq!(
        host_until_exit(&mut event_loop, Duration::from_secs(5)),
        Some(0)
    );
    poster.join().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 100);
}

/// `quit`/`exit` on the `EventLoop` itself: the latest code is taken, as `run()` would return it.
#[test]
fn take_exit_request_takes_what_run_would_return() {
    let mut event_loop = EventLoop::new().unwrap();
    assert_eq!(event_loop.take_exit_request(), None);
    event_loop.exit(3);
    event_loop.exit(4);
    assert_eq!(event_loop.take_exit_request(), Some(4));
    assert_eq!(event_loop.take_exit_request(), None);
    // Not taken: still there for run().
    event_loop.exit(6);
    assert_eq!(event_loop.run(), 6);
    assert_eq!(event_loop.take_exit_request(), None, "run() took it");
}

/// A posted closure asks to quit through a `LoopHandle` (a GUI's "quit once this turn is done"):
/// its wake-up is spent by the poll of the very turn that ran it, before any turn could take the
/// quit. The host must still learn of it without another event: `next_timeout()` is zero until a
/// turn takes it (it was `None` with the descriptor unreadable, so a host slept until some
/// unrelated event, for ever in an idle program).
#[test]
fn an_embedding_host_learns_a_quit_a_posted_closure_asked_for_without_another_event() {
    /// One host iteration after the turn that ran the closure: the quit is taken, or the host
    /// would not sleep, and the next turn takes it.
    fn host_learns(event_loop: &mut EventLoop, code: i32) {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        if event_loop.take_exit_request().is_none() {
            assert!(
                event_loop.next_timeout() == Some(Duration::ZERO)
                    || is_readable(event_loop.as_raw_fd()),
                "a quit is pending, yet the host would sleep: next_timeout {:?}, descriptor \
                 unreadable",
                event_loop.next_timeout()
            );
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
            assert_eq!(event_loop.take_exit_request(), Some(code));
        }
        assert_eq!(event_loop.next_timeout(), None, "nothing left once taken");
    }
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    event_loop.post(move || handle.exit(3));
    host_learns(&mut event_loop, 3);
    // The same from a closure a nested turn runs.
    let handle = event_loop.handle();
    event_loop.post(move || {
        kdnet::foundation::post(move || handle.exit(4)).unwrap();
        kdnet::foundation::process_events(Some(Duration::ZERO)).unwrap();
    });
    host_learns(&mut event_loop, 4);
}

/// A GLib-shaped host, as the `EventLoop` docs describe a custom `GSource`: `prepare` reports
/// ready when `next_timeout()` is zero, else that timeout; the host polls; `check` reports ready
/// when the descriptor is readable or `next_timeout()` is zero by then; only then `dispatch`
/// calls `process_events`. A due timer and a closure a slot posted do not make the descriptor
/// readable, so a `check` that looked at the descriptor alone (as the docs once said) never
/// dispatched them: GLib spun with a zero timeout and the timer never fired.
#[test]
fn embedding_a_glib_shaped_source_runs_timers_and_work_a_turn_left() {
    let mut event_loop = EventLoop::new().unwrap();
    let fd = event_loop.as_raw_fd();
    let mut poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&fd),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .unwrap();
    let mut events = mio::Events::with_capacity(4);
    let done = Rc::new(Cell::new(0));
    let d = done.clone();
    let _timer = Timer::create_timeout(Duration::from_millis(10), move || {
        let d = d.clone();
        // Work the turn leaves behind.
        post(move || d.set(d.get() + 1)).unwrap();
    })
    .unwrap();
    let mut fd_alone_would_dispatch = true;
    let mut iterations = 0;
    while done.get() == 0 {
        iterations += 1;
        assert!(iterations < 1000, "the GLib-shaped host spun");
        // prepare
        let timeout = event_loop.next_timeout();
        let ready = timeout == Some(Duration::ZERO);
        // GLib's poll, level-triggered, for the timeout in whole milliseconds (-1: none).
        let wait = if ready {
            Duration::ZERO
        } else {
            timeout.unwrap_or(Duration::from_secs(5))
        };
        poll.registry()
            .reregister(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(0),
                mio::Interest::READABLE,
            )
            .unwrap();
        poll.poll(&mut events, Some(wait)).unwrap();
        let readable = !events.is_empty();
        // check
        let due = event_loop.next_timeout() == Some(Duration::ZERO);
        if !readable && due {
            fd_alone_would_dispatch = false;
        }
        if ready || readable || due {
            // dispatch
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
        }
    }
    assert!(
        !fd_alone_would_dispatch,
        "the timer's turn came with the descriptor readable: a check on the descriptor alone \
         would do, and this test shows nothing"
    );
    assert!(iterations < 50, "{iterations} iterations");
}

/// Two requests to quit before `run()`: another thread's through a `LoopHandle`, then the
/// loop's own `exit`. The latest code ends `run()`, and the earlier request is spent with it: it
/// ended the next `run()` at once too, a stale quit (likewise a host's second
/// `take_exit_request`).
#[test]
fn an_exit_supersedes_a_handle_quit_asked_before_it_and_does_not_leave_it_for_the_next_run() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    thread::spawn(move || handle.exit(1)).join().unwrap();
    event_loop.exit(2);
    assert_eq!(event_loop.run(), 2);
    let _safety = safety_timer(&event_loop, 1);
    assert_eq!(
        event_loop.run(),
        SAFETY_EXIT,
        "a stale quit ended the next run()"
    );
    // The same for a host.
    let handle = event_loop.handle();
    thread::spawn(move || handle.exit(3)).join().unwrap();
    event_loop.exit(4);
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(event_loop.take_exit_request(), Some(4));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(event_loop.take_exit_request(), None, "a stale quit");
}

/// The mirror image: the loop's own `exit`, then another thread's quit through a `LoopHandle`,
/// both before `run()` (or a quit a posted closure asks during the turn that took an earlier
/// one). The latest code ends `run()` and the earlier is spent: `run()` returned the older code
/// and left the handle's quit pending, which ended the next `run()` at once (and reached a
/// host's second `take_exit_request`).
#[test]
fn a_handle_quit_asked_after_an_exit_wins_and_does_not_end_the_next_run() {
    let mut event_loop = EventLoop::new().unwrap();
    let handle = event_loop.handle();
    event_loop.exit(1);
    thread::spawn(move || handle.exit(2)).join().unwrap();
    assert_eq!(event_loop.run(), 2);
    let _safety = safety_timer(&event_loop, 1);
    assert_eq!(
        event_loop.run(),
        SAFETY_EXIT,
        "a stale quit ended the next run()"
    );

    // A posted closure quits again during the turn that took another thread's quit.
    let handle = event_loop.handle();
    let again = event_loop.handle();
    event_loop.post(move || again.exit(4));
    thread::spawn(move || handle.exit(3)).join().unwrap();
    assert_eq!(event_loop.run(), 4);
    let _safety = safety_timer(&event_loop, 1);
    assert_eq!(
        event_loop.run(),
        SAFETY_EXIT,
        "a stale quit ended the next run()"
    );

    // The same for a host, which learns of it from the turn that takes it (and runs the
    // closures posted before it).
    let handle = event_loop.handle();
    event_loop.exit(5);
    thread::spawn(move || handle.exit(6)).join().unwrap();
    assert_eq!(
        event_loop.take_exit_request(),
        None,
        "taken by the next turn"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(event_loop.take_exit_request(), Some(6));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(event_loop.take_exit_request(), None, "a stale quit");
}

/// Another thread posts a closure, then quits through a `LoopHandle`, while the loop's own quit
/// is pending (an `EventLoop::exit` before `run()`, or a quit the turn took before a posted
/// closure posted and quit again). The handle's quit wins, and as `LoopHandle::exit` promises,
/// the closures posted before it have run when `run()` returns its code: `run()` returned it at
/// once, and they ran only in the next `run()`, or never when the program then dropped the loop.
/// Likewise a host learns of the quit only after they ran.
#[test]
fn a_handle_quit_that_supersedes_a_pending_exit_runs_the_closures_posted_before_it_first() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let ran = Arc::new(AtomicUsize::new(0));
    let post_then_quit = |event_loop: &EventLoop, code: i32| {
        let (handle, r) = (event_loop.handle(), ran.clone());
        thread::spawn(move || {
            handle
                .post(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            handle.exit(code);
        })
        .join()
        .unwrap();
    };
    event_loop.exit(1);
    post_then_quit(&event_loop, 2);
    assert_eq!(event_loop.run(), 2);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "run() returned the handle's code before the closure posted before it ran"
    );

    // A turn takes another thread's quit; a closure it runs posts a closure, then quits.
    let (handle, r) = (event_loop.handle(), ran.clone());
    event_loop.post(move || {
        post(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        handle.exit(4);
    });
    let handle = event_loop.handle();
    thread::spawn(move || handle.exit(3)).join().unwrap();
    assert_eq!(event_loop.run(), 4);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "run() returned the handle's code before the closure posted before it ran"
    );

    // A host.
    event_loop.exit(5);
    post_then_quit(&event_loop, 6);
    let mut turns = 0;
    let code = loop {
        if let Some(code) = event_loop.take_exit_request() {
            break code;
        }
        assert_eq!(
            event_loop.next_timeout(),
            Some(Duration::ZERO),
            "a quit waits to be taken"
        );
        turns += 1;
        assert!(turns < 10, "the quit was never reported");
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    };
    assert_eq!(code, 6);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        3,
        "take_exit_request reported the handle's code before the closure posted before it ran"
    );
    // Nothing stale is left: the next run() waits for its own quit.
    let _safety = safety_timer(&event_loop, 1);
    assert_eq!(event_loop.run(), SAFETY_EXIT);
}

/// Closures posted after a quit ended `run()` (on the loop's thread, or by another thread after
/// its quit) are neither lost nor run twice: the next `run()` runs each once, in posting order;
/// dropping the loop instead drops them without running them (Qt delivers events posted to a
/// thread whose loop quit when a loop runs there again, and deletes them with their receiver).
#[test]
fn closures_posted_after_a_quit_run_once_in_the_next_run_or_are_dropped_with_the_loop() {
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let rec = |name: &'static str| {
        let r = ran.clone();
        move || r.lock().unwrap().push(name)
    };
    let remote = |event_loop: &EventLoop, f: Box<dyn FnOnce() + Send>, quit: bool| {
        let handle = event_loop.handle();
        thread::spawn(move || {
            handle.post(f).unwrap();
            if quit {
                handle.quit();
            }
        })
        .join()
        .unwrap();
    };
    remote(&event_loop, Box::new(rec("before")), true);
    assert_eq!(event_loop.run(), 0);
    assert_eq!(*ran.lock().unwrap(), ["before"]);
    event_loop.post(rec("local, after"));
    remote(&event_loop, Box::new(rec("remote, after")), false);
    assert_eq!(*ran.lock().unwrap(), ["before"], "ran without a turn");
    let handle = event_loop.handle();
    event_loop.post(move || handle.quit());
    assert_eq!(event_loop.run(), 0);
    assert_eq!(
        *ran.lock().unwrap(),
        ["before", "local, after", "remote, after"]
    );
    for _ in 0..3 {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(ran.lock().unwrap().len(), 3, "a closure ran twice");

    // Posted after a quit, then the loop is dropped.
    let (local_dropped, remote_dropped) = (Arc::default(), Arc::default());
    let (flag, r) = (DropFlag(Arc::clone(&local_dropped)), rec("local, dropped"));
    event_loop.post(move || {
        let _keep = &flag;
        r();
    });
    let (flag, r) = (
        DropFlag(Arc::clone(&remote_dropped)),
        rec("remote, dropped"),
    );
    remote(
        &event_loop,
        Box::new(move || {
            let _keep = &flag;
            r();
        }),
        true,
    );
    drop(event_loop);
    assert!(local_dropped.load(Ordering::SeqCst) && remote_dropped.load(Ordering::SeqCst));
    assert_eq!(
        ran.lock().unwrap().len(),
        3,
        "ran while the loop was dropped"
    );
}

/// A timer started or restarted from host code (between turns) wakes the host only when it is
/// due before the timeout `next_timeout()` last gave the host: a host that sleeps at most that
/// long turns the loop by then anyway and reads the new timeout after that turn. Every start
/// woke it, for nothing when the new deadline was later (a GUI restarting a 30 s watchdog
/// after each user action while a 1 s timer ran woke the host each time). One due earlier, or
/// any while the host was told `None` (or never asked), still wakes it.
#[test]
fn embedding_a_timer_started_from_host_code_wakes_the_host_only_before_its_timeout() {
    let mut event_loop = EventLoop::new().unwrap();
    let fd = event_loop.as_raw_fd();
    let secs = Duration::from_secs;
    // Told `None`: the host sleeps on the descriptor alone, so any start must wake it.
    assert_eq!(event_loop.next_timeout(), None);
    let watchdog = Timer::new().unwrap();
    watchdog.start_with(secs(10));
    assert!(is_readable(fd), "a host told None must be woken");
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(!is_readable(fd));

    // Told about 10 s: later deadlines do not wake it.
    let told = event_loop.next_timeout().unwrap();
    assert!(told > secs(5) && told <= secs(10), "{told:?}");
    let later = Timer::new().unwrap();
    later.start_with(secs(20));
    watchdog.start(); // restarted: 10 s from now, after what the host was told
    later.interval.set(secs(30));
    let managed = Timer::set_timeout(secs(15), || {}).unwrap();
    assert!(
        !is_readable(fd),
        "woke the host for timers due after the timeout it sleeps for"
    );

    // One due before it does.
    let sooner = Timer::new().unwrap();
    sooner.start_with(secs(1));
    assert!(
        is_readable(fd),
        "a timer due before the host's timeout must wake it"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    let told = event_loop.next_timeout().unwrap();
    assert!(told > Duration::ZERO && told <= secs(1), "{told:?}");
    assert!(!is_readable(fd));
    // Nothing lost: what the host is told next follows every timer.
    sooner.stop();
    let told = event_loop.next_timeout().unwrap();
    assert!(told > secs(5) && told <= secs(10), "{told:?}");
    watchdog.stop();
    let told = event_loop.next_timeout().unwrap();
    assert!(told > secs(10) && told <= secs(15), "{told:?}");
    assert!(Timer::cancel_timer(managed));
    let told = event_loop.next_timeout().unwrap();
    assert!(told > secs(25) && told <= secs(30), "{told:?}");
    later.stop();
    assert_eq!(event_loop.next_timeout(), None);
    let again = Timer::new().unwrap();
    again.start_with(secs(40));
    assert!(is_readable(fd), "a host told None must be woken");
}

/// A slot that asks to exit through a handle on every turn (a self-posting closure here; a busy
/// socket's `ready_read` slot or a zero-interval timer that quits once some condition holds do
/// the same) while a quit is pending: `run()` returns after one more turn ("a stream of quits
/// cannot keep run() from returning"), and so must `take_exit_request` for a host. It returned
/// `None` after every turn, each of which took one quit and ran the slot that asked again, so
/// the host never learnt of the exit.
#[test]
fn a_quit_asked_on_every_turn_does_not_keep_a_host_from_learning_of_it() {
    fn quit_on_every_turn(handle: kdnet::LoopHandle, code: i32) {
        post(move || {
            handle.exit(code);
            quit_on_every_turn(handle, code);
        })
        .unwrap();
    }
    let mut event_loop = EventLoop::new().unwrap();
    let _safety = safety_timer(&event_loop, 5);
    event_loop.post({
        let handle = event_loop.handle();
        move || quit_on_every_turn(handle, 7)
    });
    assert_eq!(event_loop.run(), 7, "run() returns");
    drop((_safety, event_loop));

    let mut event_loop = EventLoop::new().unwrap();
    event_loop.post({
        let handle = event_loop.handle();
        move || quit_on_every_turn(handle, 8)
    });
    let mut turns = 0;
    let code = loop {
        if let Some(code) = event_loop.take_exit_request() {
            break code;
        }
        turns += 1;
        assert!(
            turns < 20,
            "take_exit_request never reported the exit asked on every turn"
        );
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    };
    assert_eq!(code, 8);
}

/// Found by the loop model in long release runs (twentieth round): `run()`'s turn takes a
/// handle's quit (1); a closure asks a later one (2) and waits in a nested turn, which takes it
/// while 1 is pending and runs the closures queued before it; one of them posts a closure and
/// asks for 3. The nested turn took the later quit (2) after the closures posted before it, and
/// 3, asked since, is spent with it: `run()` returns 3 after this turn, as a host's
/// `take_exit_request` reports 3 after it, and the closure posted meanwhile stays queued for the
/// next turn (run once there). The model expected `run()` to turn once more for 3, and the
/// library did until `run()` asked `take_exit_request`.
#[test]
fn a_quit_asked_after_a_nested_turn_took_a_later_quit_ends_run_and_a_host_at_the_same_turn() {
    fn script(event_loop: &EventLoop, late: &Rc<Cell<u32>>) {
        let handle = event_loop.handle();
        handle.exit(1);
        event_loop.post({
            let handle = handle.clone();
            move || {
                handle.exit(2);
                kdnet::foundation::process_events(Some(Duration::ZERO)).unwrap();
                assert_eq!(
                    kdnet::foundation::exit_requested(),
                    Some(2),
                    "the nested turn took the later quit"
                );
            }
        });
        let late = late.clone();
        event_loop.post(move || {
            post(move || late.set(late.get() + 1)).unwrap();
            handle.exit(3);
        });
    }
    for host in [false, true] {
        let mut event_loop = EventLoop::new().unwrap();
        let _safety = safety_timer(&event_loop, 5);
        let late = Rc::new(Cell::new(0));
        script(&event_loop, &late);
        let code = if host {
            event_loop.process_events(Some(Duration::ZERO)).unwrap();
            event_loop.take_exit_request()
        } else {
            Some(event_loop.run())
        };
        assert_eq!(code, Some(3), "host: {host}");
        assert_eq!(
            late.get(),
            0,
            "host: {host}: the loop turned once more for the quit asked after the nested turn \
             took the later one"
        );
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            late.get(),
            1,
            "host: {host}: the closure left queued runs once"
        );
        assert_eq!(
            event_loop.take_exit_request(),
            None,
            "host: {host}: nothing stale"
        );
    }
}

// ---- a nested wait begun from host code (twentieth round) ---------------------------------------

/// A host that last read `next_timeout()` before one of its own callbacks waited in a nested loop
/// (`foundation::process_events` from a GUI handler, `send_and_wait`) sleeps for what it read
/// then. Work the nested turns left for later (a timer they started, a closure they posted)
/// wrote no wake-up (it was added inside a turn), so the host slept until its old deadline, or
/// for ever after `None`: the nested wait must make the descriptor readable when it returns.
#[test]
fn embedding_a_timer_started_in_a_nested_wait_from_host_code_wakes_the_host() {
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    assert_eq!(
        event_loop.next_timeout(),
        None,
        "the host is told: only I/O"
    );
    let fired = Rc::new(Cell::new(false));
    let started = Rc::new(Cell::new(false));
    let timer: Rc<RefCell<Option<Rc<Timer>>>> = Rc::default();
    {
        // Host code (a button's handler, say) waits in a nested loop for a closure, which
        // starts a timer (a reconnect, an idle timeout) inside the nested turn.
        let (fired, started, timer) = (fired.clone(), started.clone(), timer.clone());
        post(move || {
            let f = fired.clone();
            *timer.borrow_mut() = Some(
                Timer::create_timeout(Duration::from_millis(50), move || f.set(true)).unwrap(),
            );
            started.set(true);
        })
        .unwrap();
    }
    while !started.get() {
        kdnet::foundation::process_events(Some(Duration::from_secs(5))).unwrap();
    }
    // The host goes back to sleep for what it was told (`None`: a long wait here).
    let slept = Instant::now();
    assert!(
        host.wait(&event_loop, Duration::from_secs(3)),
        "the host slept through a timer its nested wait started"
    );
    assert!(slept.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !fired.get() && Instant::now() < deadline {
        assert!(host.iterate(&mut event_loop, Duration::from_secs(3)));
    }
    assert!(fired.get(), "the timer fired while the host drove the loop");
}

/// The same for a closure a nested turn posted and left for the next turn: the host, told
/// `None`, must not sleep with it queued.
#[test]
fn embedding_a_closure_posted_in_a_nested_wait_from_host_code_wakes_the_host() {
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    assert_eq!(event_loop.next_timeout(), None);
    let ran = Rc::new(Cell::new(false));
    let started = Rc::new(Cell::new(false));
    {
        let (ran, started) = (ran.clone(), started.clone());
        post(move || {
            // Posted inside a turn: it waits for the next one.
            post(move || ran.set(true)).unwrap();
            started.set(true);
        })
        .unwrap();
    }
    while !started.get() {
        kdnet::foundation::process_events(Some(Duration::from_secs(5))).unwrap();
    }
    assert!(!ran.get());
    assert!(
        host.wait(&event_loop, Duration::from_secs(3)),
        "the host slept with a closure queued by its nested wait"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(ran.get());
    assert_eq!(event_loop.next_timeout(), None);
    assert!(
        !host.wait(&event_loop, Duration::from_millis(50)),
        "nothing left"
    );
}

/// Over loopback: a host callback fetches with `send_and_wait`; the kept-alive connection's
/// idle timer, started in the nested turn that finished the response, must wake a host that was
/// told `None`, so that the idle connection closes on time rather than at the next I/O.
#[test]
fn embedding_send_and_wait_from_host_code_wakes_the_host_for_the_idle_timer() {
    use kdnet::network::http::{HttpClient, HttpRequest, HttpSession};
    let server =
        support::ScriptServer::start(|_, _| support::Reply::Bytes(support::ok_response("hi", "")));
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    let mut session = HttpSession::new();
    session.set_idle_connection_timeout(Duration::from_millis(200));
    let client = HttpClient::with_session(session).unwrap();
    assert_eq!(event_loop.next_timeout(), None);
    let response = client
        .send_and_wait(HttpRequest::get(&server.url("/")).unwrap())
        .unwrap();
    assert_eq!(&response.body()[..], b"hi");
    assert_eq!(client.open_connections(), 1, "kept alive");
    let slept = Instant::now();
    assert!(
        host.wait(&event_loop, Duration::from_secs(3)),
        "the host slept through the idle timer send_and_wait started"
    );
    assert!(slept.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.open_connections() > 0 && Instant::now() < deadline {
        assert!(host.iterate(&mut event_loop, Duration::from_secs(3)));
    }
    assert_eq!(client.open_connections(), 0, "the idle connection closed");
    assert!(slept.elapsed() < Duration::from_secs(2));
}

/// The wake-up a nested wait leaves for the host must not make the next nested turn of a wait
/// that goes on (host code calling `process_events` in a loop) return at once: that wait would
/// spin at full CPU for as long as the host's deadline is later than the loop's next timer.
#[test]
fn embedding_a_nested_wait_from_host_code_does_not_spin_on_the_wake_up_it_leaves() {
    let event_loop = EventLoop::new().unwrap();
    assert_eq!(event_loop.next_timeout(), None);
    let started = Rc::new(Cell::new(false));
    let timer: Rc<RefCell<Option<Rc<Timer>>>> = Rc::default();
    {
        let (started, timer) = (started.clone(), timer.clone());
        post(move || {
            *timer.borrow_mut() =
                Some(Timer::create_timeout(Duration::from_secs(30), || {}).unwrap());
            started.set(true);
        })
        .unwrap();
    }
    let began = Instant::now();
    let mut turns = 0;
    while began.elapsed() < Duration::from_millis(400) {
        kdnet::foundation::process_events(Some(Duration::from_millis(100))).unwrap();
        turns += 1;
    }
    assert!(started.get());
    assert!(turns <= 12, "{turns} turns in 400 ms of waiting");
    assert!(
        is_readable(event_loop.as_raw_fd()),
        "the host is woken once the wait ends"
    );
}

/// A quit another thread asks for while host code waits in the loop ends that wait (as
/// `exit_requested` tells it, and `send_and_wait` stops), and the nested turn took it: the host,
/// told `None`, learns of it from `take_exit_request` only after a turn of its own, so it must
/// be woken for one.
#[test]
fn embedding_a_quit_taken_by_a_wait_of_host_code_wakes_the_host() {
    let mut event_loop = EventLoop::new().unwrap();
    let mut host = Host::new(&event_loop);
    assert_eq!(event_loop.next_timeout(), None);
    let handle = event_loop.handle();
    let asker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        handle.exit(7);
    });
    let began = Instant::now();
    while kdnet::foundation::exit_requested().is_none() {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the wait never saw the quit"
        );
        kdnet::foundation::process_events(Some(Duration::from_secs(5))).unwrap();
    }
    asker.join().unwrap();
    assert!(
        host.wait(&event_loop, Duration::from_secs(3)),
        "the host slept with an exit to report"
    );
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(event_loop.take_exit_request(), Some(7));
}

/// A wait in the loop made while the thread unwinds from a panic (a guard's `Drop` that flushes
/// with `process_events` or `send_and_wait`) with a deferred slot queued: the evaluator runs
/// nothing while the thread panics, so that slot is no work the turn can do, yet the loop took
/// it for immediate work and turned with a zero timeout: the wait spun at full CPU instead of
/// sleeping (twentieth round, review).
#[test]
fn a_wait_during_unwinding_does_not_spin_on_a_deferred_slot_it_cannot_run() {
    let event_loop = EventLoop::new().unwrap();
    let evaluator = event_loop.connection_evaluator();
    let ran = Arc::new(AtomicBool::new(false));
    let signal = Signal::<()>::new();
    let r = ran.clone();
    signal
        .connect_deferred(&evaluator, move |_| r.store(true, Ordering::SeqCst))
        .release();
    struct WaitOnDrop(Rc<Cell<usize>>);
    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            assert!(thread::panicking());
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(300) {
                kdnet::foundation::process_events(Some(Duration::from_millis(100))).unwrap();
                self.0.set(self.0.get() + 1);
            }
        }
    }
    let turns = Rc::new(Cell::new(0));
    let guard_turns = turns.clone();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = WaitOnDrop(guard_turns);
        signal.emit(&());
        panic!("unwinding through a guard that waits");
    }));
    assert!(unwound.is_err());
    assert!(!ran.load(Ordering::SeqCst), "no slot runs while unwinding");
    // 300 ms of waits of 100 ms each: a few turns, not thousands.
    assert!(
        turns.get() <= 20,
        "the wait spun: {} turns in 300 ms",
        turns.get()
    );
    // Once the panic is over, the loop's next turn runs the slot.
    kdnet::foundation::process_events(Some(Duration::ZERO)).unwrap();
    assert!(ran.load(Ordering::SeqCst));
    drop(event_loop);
}
