//! [`SseBatch`]: the events one read of a stream produced, held compactly until the SSE client
//! emits them.
//!
//! The HTTP client parses a read while it holds its own state borrowed, so events cannot reach
//! user slots until that borrow ends; they wait in a batch. Keeping them as owned `SseEvent`s
//! cost an allocation and a free per event; the batch instead appends every event's data to one
//! reused string, and the SSE client hands each event to its slots through one reused
//! `SseEvent` (see [`SseBatch::fill`]). A busy stream then allocates nothing per event.

use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

use super::event::{SseEvent, SseEventRef};
use super::parser::SseBorrowedSink;

/// Events of one delivery: their data back to back in `text`, the rest per event.
#[derive(Debug, Default)]
pub(crate) struct SseBatch {
    text: String,
    /// The distinct custom event types of this batch, in order of first use; a run of events of
    /// one type shares one entry (no reference counting per event).
    types: Vec<Arc<str>>,
    events: Vec<BatchedEvent>,
    /// The last valid `retry` value parsed in this delivery, if any.
    retry: Option<Duration>,
}

#[derive(Debug)]
struct BatchedEvent {
    /// Index into `types`; `None` for the default type.
    event_type: Option<usize>,
    last_event_id: Option<SmolStr>,
    retry: Option<Duration>,
    /// Where this event's data ends in `text` (it starts where the previous one ends).
    data_end: usize,
}

impl SseBatch {
    /// Number of events held.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The `retry` value of this delivery, if one was parsed.
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Writes event `index` into `out`, reusing `out`'s data buffer. Does nothing when `index` is
    /// out of range.
    pub(crate) fn fill(&self, index: usize, out: &mut SseEvent) {
        let Some(event) = self.events.get(index) else {
            return;
        };
        let start = match index.checked_sub(1) {
            Some(previous) => self.events.get(previous).map_or(0, |e| e.data_end),
            None => 0,
        };
        let data = self.text.get(start..event.data_end).unwrap_or_default();
        let event_type = event.event_type.and_then(|index| self.types.get(index));
        out.assign(event_type, data, event.last_event_id.as_ref(), event.retry);
    }

    /// Empties the batch for reuse; returns `false` when it grew too large to be worth keeping.
    pub(crate) fn clear(&mut self) -> bool {
        self.text.clear();
        self.types.clear();
        self.events.clear();
        self.retry = None;
        self.text.capacity() <= MAX_KEPT_TEXT && self.events.capacity() <= MAX_KEPT_EVENTS
    }
}

impl SseBatch {
    /// The index of `event_type` in `types`, added if it is not the most recent entry.
    fn type_index(&mut self, event_type: &Arc<str>) -> usize {
        if !self
            .types
            .last()
            .is_some_and(|last| Arc::ptr_eq(last, event_type))
        {
            self.types.push(Arc::clone(event_type));
        }
        self.types.len() - 1
    }
}

impl SseBorrowedSink for SseBatch {
    fn on_event(&mut self, event: SseEventRef<'_>) {
        self.text.push_str(event.data());
        let (event_type, last_event_id) = event.shared_parts();
        let event_type = event_type.map(|shared| self.type_index(shared));
        self.events.push(BatchedEvent {
            event_type,
            last_event_id: last_event_id.cloned(),
            retry: event.retry(),
            data_end: self.text.len(),
        });
    }

    fn on_retry(&mut self, retry: Duration) {
        self.retry = Some(retry);
    }
}

/// The largest batch kept between deliveries: 256 KiB of data, 1,024 events (a 64 KiB read of
/// the smallest events holds about 9,000; such a burst is not kept).
const MAX_KEPT_TEXT: usize = 256 * 1024;
const MAX_KEPT_EVENTS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sse::SseParser;

    #[test]
    fn fill_reproduces_each_event_and_reuses_the_buffer() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        parser
            .feed_borrowed(
                b"retry: 50\nid: 1\nevent: a\ndata: first\n\ndata: x\ndata: y\n\nevent: a\ndata:\n\n",
                &mut batch,
            )
            .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.retry(), Some(Duration::from_millis(50)));
        let expected = [
            SseEvent::new("a", "first")
                .with_id("1")
                .with_retry(Duration::from_millis(50)),
            SseEvent::new("", "x\ny").with_id("1"),
            SseEvent::new("a", "").with_id("1"),
        ];
        let mut out = SseEvent::new("", String::with_capacity(64));
        let buffer = out.data().as_ptr();
        for (index, want) in expected.iter().enumerate() {
            batch.fill(index, &mut out);
            assert_eq!(&out, want);
        }
        assert_eq!(out.data().as_ptr(), buffer, "the data buffer was reused");
        batch.fill(3, &mut out);
        assert_eq!(out, expected[2], "out of range leaves the event alone");
        assert!(batch.clear());
        assert!(batch.is_empty());
        assert_eq!(batch.retry(), None);
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
        let mut out = SseEvent::new("", String::new());
        let types: Vec<String> = (0..batch.len())
            .map(|index| {
                batch.fill(index, &mut out);
                format!("{}:{}", out.event_type(), out.data())
            })
            .collect();
        assert_eq!(types, ["a:1", "b:2", "a:3", "message:4"]);
    }

    #[test]
    fn a_huge_batch_is_not_kept() {
        let mut batch = SseBatch::default();
        let mut parser = SseParser::new();
        let big = format!("data: {}\n\n", "x".repeat(MAX_KEPT_TEXT + 1));
        parser.feed_borrowed(big.as_bytes(), &mut batch).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(!batch.clear());
    }
}
