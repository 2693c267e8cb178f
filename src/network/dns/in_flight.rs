//! Lookups of one name share one pool task: N connections opened at once to one host cost one
//! getaddrinfo, not N, and retries of a slow name wait for the call already running instead of
//! taking the pool's other threads (which would starve lookups of every other name).
//!
//! A task is known by its name (the cache key) and the cache epoch it started in: after
//! `clear_cache` a new lookup starts its own task rather than joining one whose answer may
//! predate the change the clearing was for.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Identifies one pool task: the name it resolves and the cache epoch it started in.
pub(super) type TaskKey = (String, u64);

struct Task {
    /// Lookups waiting for this task's answer, in the order they joined.
    waiters: Vec<u64>,
    /// Set when nobody waits any more: a task still queued then skips getaddrinfo.
    nobody_waits: Arc<AtomicBool>,
}

/// The pool tasks in flight, with the lookups waiting for each.
#[derive(Default)]
pub(super) struct InFlight {
    tasks: HashMap<TaskKey, Task>,
}

impl InFlight {
    /// Lookup `id` waits for the task of `key`. Returns the flag to hand to a new task when none
    /// was in flight (the caller starts it), `None` when the lookup joined a running one.
    pub(super) fn join(&mut self, key: TaskKey, id: u64) -> Option<Arc<AtomicBool>> {
        match self.tasks.entry(key) {
            Entry::Occupied(mut task) => {
                let task = task.get_mut();
                task.waiters.push(id);
                // Everyone before had left; the task has not skipped yet (it tells us when it
                // does, and we start another then) or is resolving anyway.
                task.nobody_waits.store(false, Ordering::Release);
                None
            }
            Entry::Vacant(slot) => {
                let flag = Arc::new(AtomicBool::new(false));
                slot.insert(Task {
                    waiters: vec![id],
                    nobody_waits: Arc::clone(&flag),
                });
                Some(flag)
            }
        }
    }

    /// Lookup `id` no longer waits (cancelled or timed out). When it was the last, a task still
    /// queued will not run; one already running finishes, and its answer is cached.
    pub(super) fn leave(&mut self, key: &TaskKey, id: u64) {
        if let Some(task) = self.tasks.get_mut(key) {
            task.waiters.retain(|w| *w != id);
            if task.waiters.is_empty() {
                task.nobody_waits.store(true, Ordering::Release);
            }
        }
    }

    /// The task of `key` is over: the lookups that wait for its answer.
    pub(super) fn finish(&mut self, key: &TaskKey) -> Vec<u64> {
        self.tasks
            .remove(key)
            .map(|task| task.waiters)
            .unwrap_or_default()
    }

    /// Tasks in flight (for tests and `Debug`).
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, epoch: u64) -> TaskKey {
        (name.to_owned(), epoch)
    }

    #[test]
    fn lookups_of_one_name_and_epoch_share_a_task() {
        let mut in_flight = InFlight::default();
        let flag = in_flight
            .join(key("a", 0), 1)
            .expect("the first starts a task");
        assert!(in_flight.join(key("a", 0), 2).is_none());
        assert!(in_flight.join(key("a", 1), 3).is_some(), "another epoch");
        assert!(in_flight.join(key("b", 0), 4).is_some(), "another name");
        assert_eq!(in_flight.finish(&key("a", 0)), [1, 2]);
        assert!(in_flight.finish(&key("a", 0)).is_empty());
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(in_flight.len(), 2);
    }

    #[test]
    fn the_last_to_leave_stops_a_queued_task_and_a_joiner_restores_it() {
        let mut in_flight = InFlight::default();
        let flag = in_flight.join(key("a", 0), 1).unwrap();
        assert!(in_flight.join(key("a", 0), 2).is_none());
        in_flight.leave(&key("a", 0), 1);
        assert!(!flag.load(Ordering::Acquire), "one still waits");
        in_flight.leave(&key("a", 0), 2);
        assert!(flag.load(Ordering::Acquire));
        assert!(
            in_flight.join(key("a", 0), 3).is_none(),
            "joins the same task"
        );
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(in_flight.finish(&key("a", 0)), [3]);
    }
}
