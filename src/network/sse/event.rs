//! [`SseEvent`]: one dispatched server-sent event (type, data, last event ID, retry), and
//! [`SseEventRef`], the same event borrowed from the parser for allocation-free reading.

use std::sync::Arc;
use std::time::Duration;

use smol_str::SmolStr;

/// The event type a block without an `event` field (or with an empty one) dispatches as.
const DEFAULT_EVENT_TYPE: &str = "message";

/// One server-sent event, as the WHATWG "dispatch the event" steps produce it.
///
/// The event type is a reference-counted string: the parser hands the same allocation to every
/// event while it stays unchanged, so a stream whose events all carry `event: delta` costs no
/// allocation per event for the type. The last event ID is kept inline when it is short (up to
/// 23 bytes, e.g. a sequence number or a timestamp), so a short ID that changes with every event
/// costs no allocation either; a longer one (a UUID, 32 bytes even without dashes) is allocated
/// once per new ID and shared by the events that repeat it. Cloning an event copies its data.
///
/// The default event is a `message` with empty data, no last event ID and no retry.
///
/// Equality compares what the accessors return: an event built with type `""` equals one built
/// with type `"message"`, because both dispatch as `message`.
///
/// # Example
///
/// ```
/// use kdnet::network::sse::SseEvent;
/// use std::time::Duration;
///
/// let event = SseEvent::new("update", "{\"n\":1}")
///     .with_id("42")
///     .with_retry(Duration::from_secs(3));
/// assert_eq!(event.event_type(), "update");
/// assert_eq!(event.data(), "{\"n\":1}");
/// assert_eq!(event.last_event_id(), "42");
/// assert_eq!(event.retry(), Some(Duration::from_secs(3)));
///
/// let plain = SseEvent::new("", "hello");
/// assert_eq!(plain.event(), "message");
/// assert_eq!(plain.id(), "");
/// assert_eq!(plain.retry(), None);
/// assert_eq!(SseEvent::default(), SseEvent::new("message", ""));
/// ```
#[derive(Clone, Default)]
pub struct SseEvent {
    /// `None` stands for `message`; never `Some("")` or `Some("message")`, so comparing the
    /// options compares the dispatched type.
    event_type: Option<Arc<str>>,
    data: String,
    /// `None` stands for the empty ID; never `Some("")`.
    last_event_id: Option<SmolStr>,
    retry: Option<Duration>,
    /// Where the event sits among its stream's `id` fields (see
    /// [`SseEventRef::committed_id_fields`]); 0 for an event not from a parser. Not part of
    /// equality, hashing or `Debug`: it is no property of the event.
    committed_id_fields: u32,
}

impl PartialEq for SseEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event_type == other.event_type
            && self.data == other.data
            && self.last_event_id == other.last_event_id
            && self.retry == other.retry
    }
}

impl Eq for SseEvent {}

impl std::hash::Hash for SseEvent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.event_type.hash(state);
        self.data.hash(state);
        self.last_event_id.hash(state);
        self.retry.hash(state);
    }
}

impl std::fmt::Debug for SseEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseEvent")
            .field("event_type", &self.event_type)
            .field("data", &self.data)
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry)
            .finish()
    }
}

impl SseEvent {
    /// An event of type `event_type` (an empty type means `message`) carrying `data`, with no
    /// last event ID and no retry.
    ///
    /// # Example
    ///
    /// ```
    /// use kdnet::network::sse::SseEvent;
    ///
    /// let event = SseEvent::new("message", String::from("line 1\nline 2"));
    /// assert_eq!(event, SseEvent::new("", "line 1\nline 2"));
    /// ```
    pub fn new(event_type: &str, data: impl Into<String>) -> Self {
        SseEvent {
            event_type: shared_event_type(event_type),
            data: data.into(),
            last_event_id: None,
            retry: None,
            committed_id_fields: 0,
        }
    }

    /// The same event with `id` as its last event ID (`""` means none).
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_id(mut self, id: &str) -> Self {
        self.last_event_id = shared_id(id);
        self
    }

    /// The same event carrying a `retry` (reconnection time) value.
    #[must_use = "the changed value is returned; the one this was called on is consumed"]
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The event type: the block's `event` field, or `message` when it had none or an empty one.
    pub fn event_type(&self) -> &str {
        self.event_type.as_deref().unwrap_or(DEFAULT_EVENT_TYPE)
    }

    /// KDNetwork's name for [`event_type`](Self::event_type).
    pub fn event(&self) -> &str {
        self.event_type()
    }

    /// The data: the block's `data` values joined by LF (no trailing LF).
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The last event ID in effect when the event was dispatched (it sticks across events until
    /// the server sends another `id`), or `""` if there is none.
    pub fn last_event_id(&self) -> &str {
        self.last_event_id.as_deref().unwrap_or("")
    }

    /// KDNetwork's name for [`last_event_id`](Self::last_event_id).
    pub fn id(&self) -> &str {
        self.last_event_id()
    }

    /// The reconnection time from a valid `retry` field in this event's own block, if it had one.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Overwrites this event with the given parts (and its place among its stream's `id` fields),
    /// reusing its data buffer (unless a huge event left it large) and keeping its shared type
    /// when it is the same allocation.
    #[inline(always)]
    pub(crate) fn assign(
        &mut self,
        event_type: Option<&Arc<str>>,
        data: &str,
        last_event_id: Option<&SmolStr>,
        retry: Option<Duration>,
        committed_id_fields: u32,
    ) {
        self.committed_id_fields = committed_id_fields;
        let same_type = match (&self.event_type, event_type) {
            (Some(mine), Some(theirs)) => Arc::ptr_eq(mine, theirs),
            (None, None) => true,
            _ => false,
        };
        if !same_type {
            self.event_type = event_type.cloned();
        }
        if self.data.capacity() > MAX_REUSED_DATA_CAPACITY && data.len() <= MAX_REUSED_DATA_CAPACITY
        {
            self.data = String::new();
        }
        self.data.clear();
        self.data.push_str(data);
        // In place when both have an ID (every event of a stream with IDs): no temporary.
        match (&mut self.last_event_id, last_event_id) {
            (Some(mine), Some(theirs)) => mine.clone_from(theirs),
            (mine, theirs) => *mine = theirs.cloned(),
        }
        self.retry = retry;
    }

    /// The capacity of the data buffer (what a reused event keeps allocated).
    pub(crate) fn data_capacity(&self) -> usize {
        self.data.capacity()
    }

    /// The last event ID as the parser shares it (cheap to clone; empty for none).
    pub(crate) fn shared_last_event_id(&self) -> SmolStr {
        self.last_event_id.clone().unwrap_or_default()
    }

    /// Makes `to` this event's last event ID (empty for none), as
    /// [`shared_last_event_id`](Self::shared_last_event_id) would, without the temporary.
    #[inline(always)]
    pub(crate) fn copy_last_event_id_to(&self, to: &mut SmolStr) {
        match &self.last_event_id {
            Some(id) => to.clone_from(id),
            None => *to = SmolStr::default(),
        }
    }

    /// Takes the data out of the event without copying it.
    pub fn into_data(self) -> String {
        self.data
    }

    /// Assembles a dispatched event from parser state that is already normalised.
    pub(crate) fn from_parts(
        event_type: Option<Arc<str>>,
        data: String,
        last_event_id: Option<SmolStr>,
        retry: Option<Duration>,
    ) -> Self {
        debug_assert!(event_type.as_deref().is_none_or(is_custom_event_type));
        debug_assert!(last_event_id.as_deref().is_none_or(|id| !id.is_empty()));
        SseEvent {
            event_type,
            data,
            last_event_id,
            retry,
            committed_id_fields: 0,
        }
    }

    /// How many `id` fields of its stream were committed when this event was dispatched
    /// (wrapping; see [`SseEventRef::committed_id_fields`]).
    #[inline(always)]
    pub(crate) fn committed_id_fields(&self) -> u32 {
        self.committed_id_fields
    }

    /// Places the event after `count` committed `id` fields of its stream.
    #[inline(always)]
    pub(crate) fn set_committed_id_fields(&mut self, count: u32) {
        self.committed_id_fields = count;
    }
}

/// A dispatched event borrowed from the parser: what [`SseParser::feed_borrowed`] hands its sink.
///
/// It reads like an [`SseEvent`] but owns nothing: its data usually points straight into the
/// chunk being parsed (or into the parser's reused buffer when the data spans lines or chunks),
/// so reading a stream this way allocates nothing per event. It lives only for the sink call;
/// [`to_event`](Self::to_event) makes an owned copy of the events worth keeping.
///
/// [`SseParser::feed_borrowed`]: super::SseParser::feed_borrowed
///
/// # Example
///
/// ```
/// use kdnet::network::sse::{SseEvent, SseEventRef, SseParser};
///
/// let mut parser = SseParser::new();
/// let mut total = 0;
/// let mut kept = Vec::new();
/// let stream = b"id: 1\nevent: delta\ndata: Hel\n\ndata: lo\n\nevent: done\ndata: !\n\n";
/// parser
///     .feed_borrowed(stream, &mut |event: SseEventRef<'_>| {
///         total += event.data().len();
///         if event.event_type() == "done" {
///             kept.push(event.to_event());
///         }
///     })
///     .unwrap();
/// assert_eq!(total, 6);
/// assert_eq!(kept, [SseEvent::new("done", "!").with_id("1")]);
/// ```
///
/// Equality and hashing compare what the accessors return, as for [`SseEvent`].
#[derive(Clone, Copy)]
pub struct SseEventRef<'a> {
    /// As in [`SseEvent`]: `None` stands for `message`.
    event_type: Option<&'a Arc<str>>,
    data: &'a str,
    /// `None` stands for the empty ID.
    last_event_id: Option<&'a SmolStr>,
    retry: Option<Duration>,
    /// The parser's count of committed `id` fields at this event (see
    /// `SseParser::committed_id_fields`): where the event sits among the stream's IDs.
    committed_id_fields: u32,
}

impl<'a> SseEventRef<'a> {
    /// The event type: the block's `event` field, or `message` when it had none or an empty one.
    pub fn event_type(&self) -> &'a str {
        self.event_type.map_or(DEFAULT_EVENT_TYPE, |shared| shared)
    }

    /// The data: the block's `data` values joined by LF (no trailing LF).
    pub fn data(&self) -> &'a str {
        self.data
    }

    /// The last event ID in effect when the event was dispatched, or `""` if there is none.
    pub fn last_event_id(&self) -> &'a str {
        self.last_event_id.map_or("", SmolStr::as_str)
    }

    /// The reconnection time from a valid `retry` field in this event's own block, if it had one.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// An owned copy: the data is copied, the event type and ID are shared, not copied.
    pub fn to_event(&self) -> SseEvent {
        let mut event = SseEvent::from_parts(
            self.event_type.cloned(),
            self.data.to_owned(),
            self.last_event_id.cloned(),
            self.retry,
        );
        event.set_committed_id_fields(self.committed_id_fields);
        event
    }

    /// The shared event type and ID behind this event (for owned copies that share them).
    pub(crate) fn shared_parts(&self) -> (Option<&'a Arc<str>>, Option<&'a SmolStr>) {
        (self.event_type, self.last_event_id)
    }

    /// Assembles a borrowed event from parser state that is already normalised.
    pub(crate) fn from_parts(
        event_type: Option<&'a Arc<str>>,
        data: &'a str,
        last_event_id: Option<&'a SmolStr>,
        retry: Option<Duration>,
    ) -> Self {
        SseEventRef {
            event_type,
            data,
            last_event_id,
            retry,
            committed_id_fields: 0,
        }
    }

    /// The same event placed after `count` committed `id` fields of its stream.
    #[inline(always)]
    pub(crate) fn with_committed_id_fields(mut self, count: u32) -> Self {
        self.committed_id_fields = count;
        self
    }

    /// How many `id` fields of its stream were committed when this event was dispatched
    /// (wrapping): two events with the same count had no `id` field between them.
    pub(crate) fn committed_id_fields(&self) -> u32 {
        self.committed_id_fields
    }
}

impl PartialEq for SseEventRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.event_type() == other.event_type()
            && self.data == other.data
            && self.last_event_id() == other.last_event_id()
            && self.retry == other.retry
    }
}

impl Eq for SseEventRef<'_> {}

impl std::fmt::Debug for SseEventRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseEventRef")
            .field("event_type", &self.event_type())
            .field("data", &self.data)
            .field("last_event_id", &self.last_event_id())
            .field("retry", &self.retry)
            .finish()
    }
}

impl std::hash::Hash for SseEventRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.event_type().hash(state);
        self.data.hash(state);
        self.last_event_id().hash(state);
        self.retry.hash(state);
    }
}

impl PartialEq<SseEvent> for SseEventRef<'_> {
    fn eq(&self, other: &SseEvent) -> bool {
        self.event_type() == other.event_type()
            && self.data == other.data()
            && self.last_event_id() == other.last_event_id()
            && self.retry == other.retry()
    }
}

/// The largest data buffer [`SseEvent::assign`] keeps for reuse (64 KiB).
const MAX_REUSED_DATA_CAPACITY: usize = 64 * 1024;

/// Whether `event_type` must be stored, i.e. it does not dispatch as the default `message`.
pub(crate) fn is_custom_event_type(event_type: &str) -> bool {
    !event_type.is_empty() && event_type != DEFAULT_EVENT_TYPE
}

fn shared_event_type(event_type: &str) -> Option<Arc<str>> {
    is_custom_event_type(event_type).then(|| Arc::from(event_type))
}

fn shared_id(id: &str) -> Option<SmolStr> {
    (!id.is_empty()).then(|| SmolStr::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_type_and_empty_id_compare_equal_however_built() {
        let a = SseEvent::new("", "x").with_id("");
        let b = SseEvent::new("message", "x");
        assert_eq!(a, b);
        assert_eq!(a.event_type(), "message");
        assert_eq!(a.last_event_id(), "");
        assert_ne!(a, SseEvent::new("Message", "x"));
    }

    #[test]
    fn into_data_returns_the_data() {
        let event = SseEvent::new("t", "payload").with_id("7");
        assert_eq!(event.id(), "7");
        assert_eq!(event.event(), "t");
        assert_eq!(event.into_data(), "payload");
    }

    #[test]
    fn borrowed_event_reads_and_copies_like_the_owned_one() {
        let event_type: Arc<str> = Arc::from("delta");
        let id = SmolStr::new("a-rather-long-event-id-that-is-shared");
        let borrowed = SseEventRef::from_parts(
            Some(&event_type),
            "x\ny",
            Some(&id),
            Some(Duration::from_millis(5)),
        );
        let owned = borrowed.to_event();
        assert_eq!(borrowed, owned);
        assert_eq!(owned.event_type(), "delta");
        assert_eq!(owned.data(), "x\ny");
        assert_eq!(owned.id(), "a-rather-long-event-id-that-is-shared");
        assert_eq!(owned.retry(), Some(Duration::from_millis(5)));
        assert_eq!(
            Arc::strong_count(&event_type),
            2,
            "the type is shared, not copied"
        );

        let plain = SseEventRef::from_parts(None, "d", None, None);
        assert_eq!(plain.event_type(), "message");
        assert_eq!(plain.last_event_id(), "");
        assert_eq!(plain, SseEvent::new("", "d"));
        assert_ne!(plain, SseEvent::new("", "d").with_id("1"));
    }

    #[test]
    fn assign_replaces_every_part_of_a_reused_event() {
        // The SSE client's batch reuses events from one read to the next.
        let mut event = SseEvent::new("a", "old")
            .with_id("1")
            .with_retry(Duration::from_millis(5));
        let other_type: Arc<str> = Arc::from("b");
        event.assign(Some(&other_type), "new", None, None, 0);
        assert_eq!(event, SseEvent::new("b", "new"));
        let id = SmolStr::new("2");
        event.assign(None, "x", Some(&id), None, 0);
        assert_eq!(event, SseEvent::new("", "x").with_id("2"));
    }

    #[test]
    fn assign_gives_back_a_huge_data_buffer_for_a_small_event() {
        let mut event = SseEvent::new("", "x".repeat(4 * MAX_REUSED_DATA_CAPACITY));
        event.assign(None, "small", None, None, 0);
        assert_eq!(event.data(), "small");
        assert!(
            event.data_capacity() <= MAX_REUSED_DATA_CAPACITY,
            "kept {} bytes",
            event.data_capacity()
        );
        // A buffer within the bound is reused.
        let mut event = SseEvent::new("", "y".repeat(1024));
        let buffer = event.data().as_ptr();
        event.assign(None, "z", None, None, 0);
        assert_eq!(event.data().as_ptr(), buffer);
    }

    #[test]
    fn shared_last_event_id_is_the_events_id() {
        assert_eq!(
            SseEvent::new("", "x").with_id("7").shared_last_event_id(),
            "7"
        );
        assert_eq!(SseEvent::new("", "x").shared_last_event_id(), "");
    }

    #[test]
    fn event_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SseEvent>();
    }

    /// The count of `id` fields an event carries for the SSE client is no property of the
    /// event: equality, hashing and `Debug` ignore it, owned and borrowed alike.
    #[test]
    fn the_id_field_count_is_not_part_of_an_event() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let plain = SseEvent::new("a", "x").with_id("7");
        let mut counted = plain.clone();
        counted.set_committed_id_fields(3);
        assert_eq!(plain, counted);
        assert_eq!(hasher.hash_one(&plain), hasher.hash_one(&counted));
        assert_eq!(format!("{plain:?}"), format!("{counted:?}"));
        assert!(!format!("{counted:?}").contains("committed"));

        let id = SmolStr::new("7");
        let data = String::from("x");
        let one = SseEventRef::from_parts(None, &data, Some(&id), None);
        let other = one.with_committed_id_fields(9);
        assert_eq!(one, other);
        assert_eq!(hasher.hash_one(one), hasher.hash_one(other));
        assert_eq!(format!("{one:?}"), format!("{other:?}"));
        assert_eq!(other.to_event().committed_id_fields(), 9);
    }
}
