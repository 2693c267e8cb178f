//! The loop's timers: one binary heap of deadlines, no kernel timer per [`Timer`](super::Timer).
//!
//! A timer is a slot in a slab (its [`TimerKey`] carries a generation so a stale key never touches
//! a reused slot). Arming pushes `(deadline, seq)` onto the heap; disarming or re-arming only bumps
//! the slot's `armed_seq`, leaving the old heap item to be discarded lazily when it surfaces. When
//! stale items outnumber live ones the heap is rebuilt, so cancel-heavy use stays bounded.
//!
//! Expiry is two steps: [`TimerQueue::take_expired`] takes the due items off the heap, and the
//! loop [`claim`](TimerQueue::claim)s each one just before calling its handler. A timer stays
//! armed until claimed, so one that an earlier handler of the same batch removed, disarmed or
//! re-armed is not called with it.

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

    /// Takes every timer due at `now` off the heap, in deadline order, as `(key, seq)` of the
    /// arming that expired. The timers stay armed until [`claim`](Self::claim)ed.
    pub(crate) fn take_expired(&mut self, now: Instant, out: &mut Vec<(TimerKey, u64)>) {
        loop {
            self.discard_stale_top();
            let Some(Reverse(top)) = self.heap.peek() else {
                break;
            };
            if top.deadline > now {
                break;
            }
            let Some(Reverse(item)) = self.heap.pop() else {
                break;
            };
            let key = TimerKey {
                index: item.index,
                generation: self.slots[item.index].generation,
            };
            out.push((key, item.seq));
        }
    }

    /// Disarms a timer taken by [`take_expired`](Self::take_expired) and returns its handler,
    /// unless since then the timer was removed, disarmed or re-armed (the arming `seq` is no
    /// longer current) or its owner is gone.
    pub(crate) fn claim(&mut self, key: TimerKey, seq: u64) -> Option<Rc<dyn TimerHandler>> {
        let slot = self.slot_mut(key)?;
        if slot.armed_seq != Some(seq) {
            return None;
        }
        slot.armed_seq = None;
        slot.deadline = None;
        let handler = match &slot.target {
            TimerTarget::Owned(rc) => Some(Rc::clone(rc)),
            TimerTarget::Borrowed(weak) => weak.upgrade(),
        };
        self.armed -= 1;
        handler
    }

    /// Puts a timer taken by [`take_expired`](Self::take_expired) but never claimed (a handler
    /// earlier in the batch panicked) back on the heap: it fires later, instead of staying armed
    /// without a heap item, never to fire.
    pub(crate) fn restore(&mut self, key: TimerKey, seq: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if slot.armed_seq != Some(seq) {
            return;
        }
        if let Some(deadline) = slot.deadline {
            self.heap.push(Reverse(HeapItem {
                deadline,
                seq,
                index: key.index,
            }));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
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
        let mut out = Vec::new();
        q.take_expired(now + Duration::from_millis(100), &mut out);
        let gens: Vec<u64> = out.iter().map(|(k, _)| k.generation()).collect();
        assert_eq!(gens, vec![keys[1].generation(), keys[0].generation()]);
        for &(key, seq) in &out {
            assert!(q.claim(key, seq).is_some());
        }
        assert_eq!(q.armed_len(), 0);
    }

    #[test]
    fn an_expired_timer_changed_before_its_claim_is_not_handed_out() {
        let rec = Rc::new(Record(RefCell::new(Vec::new())));
        let mut q = TimerQueue::new();
        let now = Instant::now();
        let keys: Vec<TimerKey> = (0..4)
            .map(|_| {
                let k = q.insert(TimerTarget::Owned(rec.clone()), false);
                q.arm(k, now);
                k
            })
            .collect();
        let mut out = Vec::new();
        q.take_expired(now, &mut out);
        assert_eq!(out.len(), 4);
        // What earlier handlers of the batch may do to later ones.
        q.disarm(keys[1]);
        q.remove(keys[2]);
        q.arm(keys[3], now + Duration::from_secs(1));
        let claimed: Vec<bool> = out.iter().map(|&(k, s)| q.claim(k, s).is_some()).collect();
        assert_eq!(claimed, [true, false, false, false]);
        // A claim is good once; the re-armed timer waits for its new deadline.
        assert!(q.claim(out[0].0, out[0].1).is_none());
        assert!(q.is_armed(keys[3]));
        assert_eq!(q.armed_len(), 1);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(1)));
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
