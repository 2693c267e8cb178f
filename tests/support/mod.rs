//! Shared helpers for kdnet's integration tests: loop driving and logging.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kdnet::EventLoop;

/// Runs `event_loop` until `done()` holds or `timeout` passes; returns whether `done()` held.
pub fn run_until(
    event_loop: &mut EventLoop,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        event_loop
            .process_events(Some((deadline - now).min(Duration::from_millis(20))))
            .expect("event loop turn");
    }
    true
}

/// Deterministic pseudo-random bytes (xorshift), for payloads that must arrive byte-exact.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
