//! The loop's timers: one binary heap of deadlines, no kernel timer per [`Timer`](super::Timer).
//!
//! A timer is a slot in a slab (its [`TimerKey`] carries a generation so a stale key never touches
//! a reused slot). Arming pushes `(deadline, seq)` onto the heap; disarming or re-arming only bumps
//! the slot's `armed_seq`, leaving the old heap item to be discarded lazily when it surfaces. When
//! stale items outnumber live ones the heap is rebuilt, so cancel-heavy use stays bounded.
//!
//! Expiry takes one timer at a time off the heap ([`TimerQueue::pop_due`]), just before the loop
//! calls its handler. A timer that an earlier handler of the same batch removed, disarmed or
//! re-armed is therefore not called for its old deadline, and the due timers not taken yet stay on
//! the heap, where a loop nested in a handler finds them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

/// The furthest a deadline is set: a century, "never" in practice. `Instant` cannot hold
/// `Duration::MAX` (how callers spell "no timeout") added to now.
const FURTHEST_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `from + delay`, with a delay too long for `Instant` arithmetic clamped to a century.
pub(crate) fn deadline_after(from: Instant, delay: Duration) -> Instant {
    from.checked_add(delay)
        .unwrap_or_else(|| from + FURTHEST_DELAY)
}

/// Generations come from one process-wide counter, so a key (and so a `TimerId`) of one loop
/// never matches a timer of another thread's loop.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Something a timer slot calls when its deadline passes.
pub(crate) trait TimerHandler {
    fn fire(&self, key: TimerKey);

    /// The loop was dropped: this timer will never fire again.
    fn loop_gone(&self) {}
}

/// Who keeps a timer's handler alive: the queue (closure timers) or its owner (`Timer` objects, sockets).
pub(crate) enum TimerTarget {
    Owned(Rc<dyn TimerHandler>),
    Borrowed(Weak<dyn TimerHandler>),
}

/// Identifies one timer slot of one loop.
///
/// The generation is never zero, so `Option<TimerKey>` (held by every socket, request and
/// connection for its timers) is no bigger than the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    index: usize,
    generation: NonZeroU64,
}

impl TimerKey {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }
}

struct TimerSlot {
    generation: NonZeroU64,
    /// The heap item that is current for this slot, if armed.
    armed_seq: Option<u64>,
    deadline: Option<Instant>,
    target: TimerTarget,
    /// Created by the `set_timeout`/`set_recurring` helpers (so `cancel_all_timers` may remove it).
    managed: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct HeapItem {
    deadline: Instant,
    seq: u64,
    index: usize,
}

pub(crate) struct TimerQueue {
    slots: Slab<TimerSlot>,
    heap: BinaryHeap<Reverse<HeapItem>>,
    next_seq: u64,
    armed: usize,
}

impl TimerQueue {
    pub(crate) fn new() -> Self {
        TimerQueue {
            slots: Slab::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
            armed: 0,
        }
    }

    pub(crate) fn insert(&mut self, target: TimerTarget, managed: bool) -> TimerKey {
        let generation =
            NonZeroU64::MIN.saturating_add(NEXT_GENERATION.fetch_add(1, Ordering::Relaxed));
        let index = self.slots.insert(TimerSlot {
            generation,
            armed_seq: None,
            deadline: None,
            target,
            managed,
        });
        TimerKey { index, generation }
    }

    fn slot_mut(&mut self, key: TimerKey) -> Option<&mut TimerSlot> {
        self.slots
            .get_mut(key.index)
            .filter(|s| s.generation == key.generation)
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        self.slots
            .get(key.index)
            .is_some_and(|s| s.generation == key.generation)
    }

    #[cfg(test)]
    pub(crate) fn is_armed(&self, key: TimerKey) -> bool {
        self.slots
            .get(key.index)
            .is_some_and(|s| s.generation == key.generation && s.armed_seq.is_some())
    }

    /// Arms (or re-arms) the slot for `deadline`. Returns false for a stale key.
    pub(crate) fn arm(&mut self, key: TimerKey, deadline: Instant) -> bool {
        let seq = self.next_seq;
        let Some(slot) = self.slot_mut(key) else {
            return false;
        };
        let was_armed = slot.armed_seq.replace(seq).is_some();
        slot.deadline = Some(deadline);
        self.next_seq += 1;
        if !was_armed {
            self.armed += 1;
        }
        self.heap.push(Reverse(HeapItem {
            deadline,
            seq,
            index: key.index,
        }));
        self.compact_if_sparse();
        true
    }

    pub(crate) fn disarm(&mut self, key: TimerKey) {
        if let Some(slot) = self.slot_mut(key) {
            slot.deadline = None;
            if slot.armed_seq.take().is_some() {
                self.armed -= 1;
            }
        }
        self.compact_if_sparse();
    }

    /// Removes the slot; returns its target so the caller can drop it outside any borrow.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<TimerTarget> {
        self.slot_mut(key)?;
        let slot = self.slots.remove(key.index);
        if slot.armed_seq.is_some() {
            self.armed -= 1;
        }
        self.compact_if_sparse();
        Some(slot.target)
    }

    /// Removes every slot made by the managed helpers; returns how many and their targets.
    pub(crate) fn remove_managed(&mut self) -> Vec<TimerTarget> {
        let keys: Vec<TimerKey> = self
            .slots
            .iter()
            .filter(|(_, s)| s.managed)
            .map(|(index, s)| TimerKey {
                index,
                generation: s.generation,
            })
            .collect();
        keys.into_iter().filter_map(|k| self.remove(k)).collect()
    }

    pub(crate) fn is_managed(&self, key: TimerKey) -> bool {
        self.slots
            .get(key.index)
            .is_some_and(|s| s.generation == key.generation && s.managed)
    }

    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.discard_stale_top();
        self.heap.peek().map(|Reverse(item)| item.deadline)
    }

    /// The sequence number the next arming gets: every timer armed from now on has one at least
    /// this high (see [`pop_due`](Self::pop_due)).
    pub(crate) fn seq_limit(&self) -> u64 {
        self.next_seq
    }

    /// Disarms the earliest timer due at `now` that was armed before `limit` (from
    /// [`seq_limit`](Self::seq_limit)) and returns it with its handler; `None` when there is none
    /// left. Timers whose owner is gone are disarmed and skipped.
    ///
    /// One at a time, so the heap is the only record of what is due: a handler sees the effect of
    /// an earlier one (a timer cancelled, stopped, dropped or re-armed is not handed out for its
    /// old deadline), a turn nested in a handler fires the rest, and a handler that panics leaves
    /// them armed. Armings made while the batch runs (a zero-interval timer re-armed by its own
    /// firing) wait for a later batch.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        limit: u64,
    ) -> Option<(TimerKey, Rc<dyn TimerHandler>)> {
        loop {
            self.discard_stale_top();
            let Reverse(top) = self.heap.peek()?;
            if top.deadline > now || top.seq >= limit {
                return None;
            }
            let Reverse(item) = self.heap.pop()?;
            // Live: `discard_stale_top` checked that the slot's current arming is this item.
            let slot = self.slots.get_mut(item.index)?;
            slot.armed_seq = None;
            slot.deadline = None;
            self.armed -= 1;
            let key = TimerKey {
                index: item.index,
                generation: slot.generation,
            };
            let handler = match &slot.target {
                TimerTarget::Owned(rc) => Some(Rc::clone(rc)),
                TimerTarget::Borrowed(weak) => weak.upgrade(),
            };
            if let Some(handler) = handler {
                return Some((key, handler));
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether any timer is armed (a loop without one reads no clock to fire timers).
    pub(crate) fn has_armed(&self) -> bool {
        self.armed > 0
    }

    #[cfg(test)]
    pub(crate) fn armed_len(&self) -> usize {
        self.armed
    }

    pub(crate) fn clear(&mut self) -> Vec<TimerTarget> {
        self.heap.clear();
        self.armed = 0;
        self.slots.drain().map(|s| s.target).collect()
    }

    fn is_live(&self, item: &HeapItem) -> bool {
        self.slots
            .get(item.index)
            .is_some_and(|s| s.armed_seq == Some(item.seq))
    }

    fn discard_stale_top(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap when most of its items are stale (cancelled or re-armed timers).
    fn compact_if_sparse(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.armed {
            let items = std::mem::take(&mut self.heap).into_vec();
            let live: Vec<_> = items
                .into_iter()
                .filter(|Reverse(item)| self.is_live(item))
                .collect();
            self.heap = BinaryHeap::from(live);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    struct Record(RefCell<Vec<u64>>);
    impl TimerHandler for Record {
        fn fire(&self, key: TimerKey) {
            self.0.borrow_mut().push(key.generation());
        }
    }

    /// Every timer `pop_due` hands out for `now` and `limit`, as generations.
    fn drain_due(q: &mut TimerQueue, now: Instant, limit: u64) -> Vec<u64> {
        std::iter::from_fn(|| q.pop_due(now, limit).map(|(k, _)| k.generation())).collect()
    }

    #[test]
    fn fires_in_deadline_order_and_skips_cancelled() {
        let rec = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let now = Instant::now();
        let mut keys = Vec::new();
        for ms in [30u64, 10, 20] {
            let k = q.insert(TimerTarget::Owned(rec.clone()), false);
            q.arm(k, now + Duration::from_millis(ms));
            keys.push(k);
        }
        q.disarm(keys[2]);
        let limit = q.seq_limit();
        let gens = drain_due(&mut q, now + Duration::from_millis(100), limit);
        assert_eq!(gens, vec![keys[1].generation(), keys[0].generation()]);
        assert_eq!(q.armed_len(), 0);
    }

    #[test]
    fn a_due_timer_changed_by_an_earlier_handler_is_not_handed_out() {
        let rec = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let now = Instant::now();
        let keys: Vec<TimerKey> = (0..5)
            .map(|_| {
                let k = q.insert(TimerTarget::Owned(rec.clone()), false);
                q.arm(k, now);
                k
            })
            .collect();
        let limit = q.seq_limit();
        let (first, _) = q.pop_due(now, limit).unwrap();
        assert_eq!(first, keys[0]);
        // What the first handler may do to the others.
        q.disarm(keys[1]);
        q.remove(keys[2]);
        q.arm(keys[3], now + Duration::from_secs(1));
        q.arm(keys[4], now); // re-armed, still due: waits for the next batch
        assert!(q.pop_due(now, limit).is_none());
        assert!(q.is_armed(keys[3]) && q.is_armed(keys[4]));
        assert_eq!(q.armed_len(), 2);
        let limit = q.seq_limit();
        assert_eq!(drain_due(&mut q, now, limit), [keys[4].generation()]);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_timer_whose_owner_is_gone_is_skipped_and_disarmed() {
        let rec: Rc<dyn TimerHandler> = Rc::new(Record(RefCell::new(Vec::new())));
        let gone: Rc<dyn TimerHandler> = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let now = Instant::now();
        let dead = q.insert(TimerTarget::Borrowed(Rc::downgrade(&gone)), false);
        let live = q.insert(TimerTarget::Borrowed(Rc::downgrade(&rec)), false);
        q.arm(dead, now);
        q.arm(live, now);
        drop(gone);
        let limit = q.seq_limit();
        assert_eq!(drain_due(&mut q, now, limit), [live.generation()]);
        assert!(!q.is_armed(dead));
        assert_eq!(q.armed_len(), 0);
    }

    #[test]
    fn heap_stays_bounded_under_rearm_churn() {
        let rec = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let k = q.insert(TimerTarget::Owned(rec), false);
        let now = Instant::now();
        for i in 0..100_000u64 {
            q.arm(k, now + Duration::from_millis(i));
        }
        assert!(q.heap.len() <= 130, "heap grew to {}", q.heap.len());
        assert_eq!(q.next_deadline(), Some(now + Duration::from_millis(99_999)));
    }

    #[test]
    fn stale_key_is_ignored_after_reuse() {
        let rec = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let old = q.insert(TimerTarget::Owned(rec.clone()), false);
        q.remove(old);
        let new = q.insert(TimerTarget::Owned(rec), false);
        assert!(!q.arm(old, Instant::now()));
        assert!(!q.is_armed(new));
        assert!(q.contains(new) && !q.contains(old));
    }
}
