//! A small pool of threads for blocking work (getaddrinfo), shared by every loop of the process.
//!
//! Threads are started on demand, never more than the pool's maximum, and leave after they have
//! been idle for a while, so a program that resolves one name at start-up does not keep a thread
//! parked for ever. Tasks wait in a FIFO queue while every thread is busy.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// One unit of blocking work.
pub(super) type Task = Box<dyn FnOnce() + Send>;

pub(super) struct WorkerPool {
    thread_name: &'static str,
    max_threads: usize,
    idle_exit: Duration,
    state: Mutex<PoolState>,
    work_available: Condvar,
}

struct PoolState {
    queue: VecDeque<Task>,
    /// Threads alive (busy or idle).
    threads: usize,
    /// Threads parked waiting for work.
    idle: usize,
}

impl WorkerPool {
    pub(super) const fn new(
        thread_name: &'static str,
        max_threads: usize,
        idle_exit: Duration,
    ) -> Self {
        WorkerPool {
            thread_name,
            max_threads,
            idle_exit,
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
            }),
            work_available: Condvar::new(),
        }
    }

    /// Queues `task`. Starts a thread when more tasks wait than threads are idle and the maximum
    /// allows it. Fails (dropping `task`) only when no thread exists and none could be started,
    /// i.e. when the task would never run.
    pub(super) fn submit(&'static self, task: Task) -> io::Result<()> {
        let mut state = self.lock();
        state.queue.push_back(task);
        if state.queue.len() > state.idle && state.threads < self.max_threads {
            state.threads += 1;
            let spawned = std::thread::Builder::new()
                .name(self.thread_name.to_owned())
                .spawn(move || self.work());
            if let Err(e) = spawned {
                state.threads -= 1;
                if state.threads == 0 {
                    let task = state.queue.pop_back();
                    drop(state);
                    drop(task);
                    return Err(e);
                }
                log::warn!("could not start another {} thread: {e}", self.thread_name);
            }
        }
        drop(state);
        self.work_available.notify_one();
        Ok(())
    }

    /// Threads currently alive.
    pub(super) fn thread_count(&self) -> usize {
        self.lock().threads
    }

    fn work(&'static self) {
        while let Some(task) = self.next_task() {
            task();
        }
    }

    /// The next task, or `None` when this thread has been idle long enough to leave.
    fn next_task(&self) -> Option<Task> {
        let mut state = self.lock();
        loop {
            if let Some(task) = state.queue.pop_front() {
                return Some(task);
            }
            state.idle += 1;
            let (guard, wait) = self
                .work_available
                .wait_timeout(state, self.idle_exit)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = guard;
            state.idle -= 1;
            if wait.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return None;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Tasks run outside the lock, so a poisoned lock still holds consistent counters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    fn leaked_pool(max_threads: usize, idle_exit: Duration) -> &'static WorkerPool {
        Box::leak(Box::new(WorkerPool::new(
            "kdnet-test-pool",
            max_threads,
            idle_exit,
        )))
    }

    fn wait_for(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not reached in 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn never_runs_more_threads_than_the_maximum() {
        let pool = leaked_pool(4, Duration::from_secs(30));
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..10 {
            let release_rx = release_rx.clone();
            let done_tx = done_tx.clone();
            pool.submit(Box::new(move || {
                let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                PEAK.fetch_max(now, Ordering::SeqCst);
                // Blocks like a slow getaddrinfo until the test releases it.
                let _ = release_rx.lock().unwrap().recv();
                RUNNING.fetch_sub(1, Ordering::SeqCst);
                done_tx.send(()).unwrap();
            }))
            .unwrap();
        }
        wait_for(|| RUNNING.load(Ordering::SeqCst) == 4);
        assert_eq!(pool.thread_count(), 4);
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..10 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert_eq!(PEAK.load(Ordering::SeqCst), 4, "queued tasks waited");
    }

    #[test]
    fn idle_threads_leave_and_come_back_on_demand() {
        let pool = leaked_pool(2, Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        pool.submit(Box::new(move || tx2.send(1).unwrap())).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        wait_for(|| pool.thread_count() == 0);
        pool.submit(Box::new(move || tx.send(2).unwrap())).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    }
}
