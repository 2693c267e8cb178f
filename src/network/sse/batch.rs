//! [`SseBatch`]: the events one read of a stream produced, held until the SSE client emits them.
//!
//! The HTTP client parses a read while it holds its own state borrowed, so events cannot reach
//! user slots until that borrow ends; they wait in a batch. The batch is a pool of `SseEvent`s
//! kept from one read to the next: each parsed event is written into a pooled event, reusing its
//! data buffer (see [`SseEvent::assign`]), and the SSE client hands that same event to its slots.
//! A busy stream then allocates nothing per event, and each event's data is copied once, from
//! the read into the event its slots see.

use std::time::Duration;

use smol_str::SmolStr;

use super::event::{SseEvent, SseEventRef};
use super::parser::SseBorrowedSink;

/// Events of one delivery, written into reused events.
#[derive(Debug, Default)]
pub(crate) struct SseBatch {
    /// The pool: the first `len` events are this delivery's; the rest keep their buffers for
    /// the next one.
    events: Vec<SseEvent>,
    len: usize,
    /// The valid `retry` values parsed in this delivery, each with the number of events before
    /// it (so the client applies it in stream order); of several between the same two events
    /// only the last is kept, so this holds at most one more entry than there are events.
    /// Reused: no allocation per delivery once a stream sent a `retry`.
    retries: Vec<(usize, Duration)>,
    /// The stream's last event ID string (WHATWG) at the end of this delivery's bytes, `None`
    /// when not recorded. It differs from the last event's ID when a block without data set it
    /// (dispatching no event), which is why it is carried: one copy per delivery.
    end_id: Option<SmolStr>,
    /// The stream's count of committed `id` fields with `end_id`.
    end_id_fields: u32,
    /// Whether the stream committed an `id` field in this delivery's bytes: a delivery without
    /// events or `retry` is worth handing over only then.
    id_moved: bool,
}

impl SseBatch {
    /// This delivery's events, in order.
    pub(crate) fn events(&self) -> &[SseEvent] {
        self.events.get(..self.len).unwrap_or_default()
    }

    /// The `retry` values of this delivery, each after the number of events it follows.
    pub(crate) fn retries(&self) -> &[(usize, Duration)] {
        &self.retries
    }

    /// Records the stream's last event ID after this delivery's bytes, with its count of
    /// committed `id` fields before and after them.
    pub(crate) fn set_ids(&mut self, id_fields_before: u32, end: SmolStr, end_id_fields: u32) {
        // Every change of the ID is a committed `id` field; a repeated ID is one too.
        self.id_moved = id_fields_before != end_id_fields;
        self.end_id = Some(end);
        self.end_id_fields = end_id_fields;
    }

    /// The stream's last event ID at the end of this delivery, if recorded, with its count of
    /// committed `id` fields: it counts once every event before it was delivered.
    pub(crate) fn end_id(&self) -> Option<(&SmolStr, u32)> {
        self.end_id.as_ref().map(|id| (id, self.end_id_fields))
    }

    /// Whether the delivery carries anything for the client: an event, a `retry` value, or a
    /// new last event ID.
    pub(crate) fn has_news(&self) -> bool {
        self.len != 0 || !self.retries.is_empty() || self.id_moved
    }

    /// Empties the batch for reuse; returns `false` when it grew too large to be worth keeping.
    pub(crate) fn clear(&mut self) -> bool {
        self.len = 0;
        self.retries.clear();
        self.end_id = None;
        self.id_moved = false;
        if self.events.len() > MAX_KEPT_EVENTS || self.retries.capacity() > MAX_KEPT_EVENTS {
            return false;
        }
        let kept_data: usize = self.events.iter().map(SseEvent::data_capacity).sum();
        kept_data <= MAX_KEPT_DATA
    }
}

impl SseBorrowedSink for SseBatch {
    #[inline(always)]
    fn on_event(&mut self, event: SseEventRef<'_>) {
        let (event_type, last_event_id) = event.shared_parts();
        match self.events.get_mut(self.len) {
            Some(pooled) => {
                // With where it sits among the stream's `id` fields: the client weighs a
                // `set_last_event_id` by it.
                pooled.assign(
                    event_type,
                    event.data(),
                    last_event_id,
                    event.retry(),
                    event.committed_id_fields(),
                );
            }
            None => self.events.push(event.to_event()),
        }
        self.len += 1;
    }

    fn on_retry(&mut self, retry: Duration) {
        match self.retries.last_mut() {
            // A later `retry` with no event in between replaces the earlier one.
            Some((at, value)) if *at == self.len => *value = retry,
            _ => self.retries.push((self.len, retry)),
        }
    }
}

/// The largest batch kept between deliveries: 256 KiB of data buffers, 1,024 events (a 64 KiB
/// read of the smallest events holds about 9,000; such a burst is not kept).
const MAX_KEPT_DATA: usize = 256 * 1024;
const MAX_KEPT_EVENTS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sse::SseParser;

    #[test]
    fn holds_each_event_and_reuses_the_buffers() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        let stream =
            b"retry: 50\nid: 1\nevent: a\ndata: first\n\ndata: x\ndata: y\n\nevent: a\ndata:\n\n";
        parser.feed_borrowed(stream, &mut batch).unwrap();
        assert_eq!(batch.retries(), [(0, Duration::from_millis(50))]);
        let expected = [
            SseEvent::new("a", "first")
                .with_id("1")
                .with_retry(Duration::from_millis(50)),
            SseEvent::new("", "x\ny").with_id("1"),
            SseEvent::new("a", "").with_id("1"),
        ];
        assert_eq!(batch.events(), expected);
        let buffer = batch.events().first().map(|e| e.data().as_ptr());

        assert!(batch.clear());
        assert!(batch.events().is_empty(), "a cleared batch holds no events");
        assert!(batch.retries().is_empty());

        parser
            .feed_borrowed(b"data: again\n\n", &mut batch)
            .unwrap();
        // One event now, though the pool holds three: the stale ones stay hidden.
        assert_eq!(batch.events(), [SseEvent::new("", "again").with_id("1")]);
        assert_eq!(
            batch.events().first().map(|e| e.data().as_ptr()),
            buffer,
            "the first event's data buffer was reused"
        );
    }

    #[test]
    fn a_reused_event_takes_the_new_events_id_or_none() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        let long = "a-long-event-id-that-is-not-inline-0123456789";
        let first = format!("id: 1\ndata: a\n\nid: {long}\ndata: b\n\nid\ndata: c\n\n");
        parser.feed_borrowed(first.as_bytes(), &mut batch).unwrap();
        let ids: Vec<&str> = batch.events().iter().map(SseEvent::last_event_id).collect();
        assert_eq!(ids, ["1", long, ""]);
        assert!(batch.clear());
        // The same pooled events again, each now with another kind of ID than it held.
        let second = format!("id: {long}\ndata: d\n\nid\ndata: e\n\nid: 2\ndata: f\n\n");
        parser.feed_borrowed(second.as_bytes(), &mut batch).unwrap();
        let expected = [
            SseEvent::new("", "d").with_id(long),
            SseEvent::new("", "e"),
            SseEvent::new("", "f").with_id("2"),
        ];
        assert_eq!(batch.events(), expected);
        let mut copied = SmolStr::new("old");
        for event in batch.events() {
            event.copy_last_event_id_to(&mut copied);
            assert_eq!(copied, event.shared_last_event_id());
        }
    }

    #[test]
    fn retries_keep_their_place_among_the_events() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        let ms = Duration::from_millis;
        parser
            .feed_borrowed(
                b"data: a\n\nretry: 1\nretry: 2\ndata: b\n\nretry: 3\n\nretry: x\ndata: c\n\nretry: 4\n",
                &mut batch,
            )
            .unwrap();
        assert_eq!(batch.events().len(), 3);
        // Between a and b the later of two; an invalid value is no entry.
        assert_eq!(batch.retries(), [(1, ms(2)), (2, ms(3)), (3, ms(4))]);
        assert!(batch.clear());
        assert!(!batch.has_news());
        parser.feed_borrowed(b"retry: 5\n", &mut batch).unwrap();
        assert_eq!(batch.retries(), [(0, ms(5))]);
        assert!(batch.has_news(), "a retry alone is delivered");
    }

    #[test]
    fn alternating_types_keep_their_own_names() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        parser
            .feed_borrowed(
                b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\nevent: a\ndata: 3\n\ndata: 4\n\n",
                &mut batch,
            )
            .unwrap();
        let types: Vec<String> = batch
            .events()
            .iter()
            .map(|event| format!("{}:{}", event.event_type(), event.data()))
            .collect();
        assert_eq!(types, ["a:1", "b:2", "a:3", "message:4"]);
    }

    #[test]
    fn a_huge_batch_is_not_kept() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        let big = format!("data: {}\n\n", "x".repeat(MAX_KEPT_DATA + 1));
        parser.feed_borrowed(big.as_bytes(), &mut batch).unwrap();
        assert_eq!(batch.events().len(), 1);
        assert!(!batch.clear());

        let mut batch = SseBatch::default();
        let many = "data: x\n\n".repeat(MAX_KEPT_EVENTS + 1);
        parser.feed_borrowed(many.as_bytes(), &mut batch).unwrap();
        assert_eq!(batch.events().len(), MAX_KEPT_EVENTS + 1);
        assert!(!batch.clear());
    }
}
