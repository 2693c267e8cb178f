//! What the model-based tests (`signal_model.rs`, `signal_model_property.rs`,
//! `http_scheduler_model.rs`, `http_redirect_model.rs`, `sse_client_model.rs`,
//! `sse_client_reconnect_model.rs`) share: the configuration and case count, the report of a
//! run, and loopback listeners for scripted servers.

use std::fmt::Display;
use std::time::Instant;

/// `PROPTEST_CASES` when set, else `default` (a `Config` with `cases` set explicitly would
/// otherwise ignore the variable).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A model test's proptest configuration: [`cases`]`(default)` cases, and no regression file
/// (a failure becomes a named test). Shrinking settings are the caller's, by struct update.
pub fn config(default: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: cases(default),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// A counter a model test keeps in a static, read for its run report.
pub trait Counter {
    /// The count so far.
    fn count(&self) -> u64;
}

impl Counter for std::sync::atomic::AtomicU64 {
    fn count(&self) -> u64 {
        self.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Counter for std::sync::atomic::AtomicUsize {
    fn count(&self) -> u64 {
        self.load(std::sync::atomic::Ordering::Relaxed) as u64
    }
}

/// [`finish_run`] with the case count and the named counters read from their statics.
pub fn finish_counted<C: Counter, const N: usize>(
    started: Instant,
    cases: &C,
    names: [&'static str; N],
    counters: &[C; N],
    result: Result<(), impl Display>,
) {
    finish_run(
        started,
        cases.count(),
        names.into_iter().zip(counters.iter().map(C::count)),
        result,
    );
}

/// Prints how many cases ran since `started` and the run's counters, then fails with
/// proptest's report (the shrunk case) if a case failed.
pub fn finish_run(
    started: Instant,
    cases: u64,
    counters: impl IntoIterator<Item = (&'static str, u64)>,
    result: Result<(), impl Display>,
) {
    eprintln!("{cases} cases in {:?}", started.elapsed());
    for (name, count) in counters {
        eprintln!("  {name}: {count}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Loopback listeners on threads for a model's scripted servers: each accepted connection is
/// handed to `serve(listener index, stream)` on a thread of its own. Dropping it stops the
/// accept loops (the connections' threads end with their connections).
pub struct Listeners {
    /// The port of each listener, in order.
    pub ports: Vec<u16>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Listeners {
    /// Binds `count` listeners on 127.0.0.1 and starts accepting.
    pub fn start<F>(count: usize, serve: F) -> Listeners
    where
        F: Fn(usize, std::net::TcpStream) + Send + Sync + 'static,
    {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listeners: Vec<std::net::TcpListener> = (0..count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        for (index, listener) in listeners.into_iter().enumerate() {
            let (stop, serve) = (stop.clone(), serve.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(index, stream));
                }
            });
        }
        Listeners { ports, stop }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes each accept loop, which then sees `stop`.
        for port in &self.ports {
            let _ = std::net::TcpStream::connect(("127.0.0.1", *port));
        }
    }
}
