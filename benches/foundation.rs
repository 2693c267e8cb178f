//! Event loop costs: scheduling and cancelling 100,000 timers, re-arm churn on one timer, and
//! post-to-run latency (same thread and across threads).
//! Run: `cargo bench --bench foundation`.

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kdnet::{EventLoop, Timer};

const TIMERS: usize = 100_000;

fn timers(c: &mut Criterion) {
    let mut event_loop = EventLoop::new().unwrap();
    let mut group = c.benchmark_group("timers");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TIMERS as u64));

    group.bench_function("set_timeout_then_cancel/100k", |b| {
        b.iter_batched(
            || Vec::with_capacity(TIMERS),
            |mut ids| {
                for i in 0..TIMERS as u64 {
                    // Spread deadlines so the heap does real ordering work.
                    let delay = Duration::from_secs(60) + Duration::from_micros(i * 7919 % 100_000);
                    ids.push(Timer::set_timeout(delay, || {}).unwrap());
                }
                for id in ids.drain(..) {
                    assert!(Timer::cancel_timer(id));
                }
                ids
            },
            BatchSize::LargeInput,
        )
    });

    let timer = Timer::new().unwrap();
    group.bench_function("restart_one_timer/100k", |b| {
        b.iter(|| {
            for i in 0..TIMERS as u64 {
                timer.start_with(Duration::from_secs(60) + Duration::from_nanos(i % 2));
            }
            timer.stop();
        })
    });
    group.finish();
    drop(timer);
    // Leave nothing armed for the next benchmark.
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
}

fn post_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("post_to_run");

    // Same thread: post, then one non-blocking turn runs it.
    let mut event_loop = EventLoop::new().unwrap();
    group.bench_function("same_thread", |b| {
        b.iter(|| {
            event_loop.post(|| {
                black_box(());
            });
            event_loop.process_events(Some(Duration::ZERO)).unwrap()
        })
    });
    drop(event_loop);

    // Across threads: the loop runs on its own thread; we post and wait for the closure to run.
    let (handle_tx, handle_rx) = mpsc::channel();
    let loop_thread = thread::spawn(move || {
        let mut event_loop = EventLoop::new().unwrap();
        handle_tx.send(event_loop.handle()).unwrap();
        event_loop.run()
    });
    let handle = handle_rx.recv().unwrap();
    let (ran_tx, ran_rx) = mpsc::channel::<()>();
    group.bench_function("cross_thread_round_trip", |b| {
        b.iter(|| {
            let ran = ran_tx.clone();
            handle.post(move || ran.send(()).unwrap()).unwrap();
            ran_rx.recv().unwrap();
        })
    });
    group.finish();
    handle.quit();
    loop_thread.join().unwrap();
}

criterion_group!(benches, timers, post_latency);
criterion_main!(benches);
