//! Fields of a block (`data`, `event`, `id`, `retry`, comments) and the dispatch at its end.

use std::sync::Arc;
use std::time::Duration;

use memchr::memchr;
use smol_str::SmolStr;

use super::decode::{contains_nul, utf8};
use super::sink::{Dispatched, DispatchedData, Emit, InChunkData};
use super::{Partial, RETAINED_BUFFER_CAPACITY, SseParseError, SseParser};
use crate::network::sse::event::is_custom_event_type;

impl SseParser {
    /// Interprets one complete line (without its terminator), WHATWG §9.2.6.
    pub(super) fn process_line(
        &mut self,
        line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        if line.is_empty() {
            self.dispatch(None, out);
            return Ok(());
        }
        match parse_field(line) {
            (Field::Data, value) => {
                self.check_value(value)?;
                self.push_data_value(value);
            }
            (Field::Event, value) => self.set_event_type(value),
            (Field::Id, value) => self.set_id(value, None),
            (Field::Retry, value) => self.set_retry(value, out),
            (Field::Comment, value) if self.report_comments => {
                out.comment(&String::from_utf8_lossy(value));
            }
            // Comments when not reported, and unknown fields.
            _ => {}
        }
        Ok(())
    }

    /// Appends a value (limit already checked), preceded by LF unless it is the block's first.
    pub(super) fn push_data_value(&mut self, value: &[u8]) {
        if self.has_data {
            self.data.push_lf_and(value);
        } else {
            // The block's first allocation, sized like the last event: usually the final size.
            self.data.push_first_value(value, self.data_capacity_hint);
        }
        self.has_data = true;
    }

    pub(super) fn set_event_type(&mut self, value: &[u8]) {
        // Streams repeat one type: compare the raw bytes before decoding (the recent type is valid
        // UTF-8, so equal bytes decode to the same text).
        if let Some(recent) = &self.recent_event_type
            && recent.as_bytes() == value
        {
            self.custom_type = true;
            return;
        }
        let value = String::from_utf8_lossy(value);
        self.custom_type = is_custom_event_type(&value);
        if !self.custom_type {
            return;
        }
        if self.recent_event_type.as_deref() != Some(&*value) {
            self.recent_event_type = Some(Arc::from(&*value));
        }
    }

    /// Sets the ID buffer to `value`; `known` is `value` as text when it is already known to be
    /// valid UTF-8 without NUL.
    #[inline(always)]
    pub(super) fn set_id(&mut self, value: &[u8], known: Option<&str>) {
        // A short ID known valid is stored inline (no allocation) at once: cheaper than any
        // comparison with the stored one. Inlined (the rest is not): the usual case, every event
        // of many streams.
        if let Some(text) = known
            && !text.is_empty()
            && text.len() <= INLINE_ID_LEN
        {
            self.id_buffer = Some(SmolStr::new_inline(text));
            self.id_fields_buffered = self.id_fields_buffered.wrapping_add(1);
            return;
        }
        self.set_other_id(value, known);
    }

    /// [`set_id`](Self::set_id) for an empty, long, unchecked or invalid ID.
    #[inline(never)]
    fn set_other_id(&mut self, value: &[u8], known: Option<&str>) {
        // WHATWG ignores an `id` whose value holds NUL: it is no field at all (`known` is
        // NUL-free text).
        if known.is_none() && contains_nul(value) {
            return;
        }
        self.id_fields_buffered = self.id_fields_buffered.wrapping_add(1);
        if value.is_empty() {
            self.id_buffer = None;
            return;
        }
        if let Some(text) = known
            && text.len() <= INLINE_ID_LEN
        {
            self.id_buffer = Some(SmolStr::new_inline(text));
            return;
        }
        // Compare raw bytes before decoding: equal bytes decode to equal text, and a stored ID
        // never holds NUL, so a repeat needs no other check.
        if self.id_buffer.as_deref().map(str::as_bytes) == Some(value) {
            return;
        }
        self.id_buffer = Some(match known.or_else(|| utf8(value)) {
            Some(text) if text.len() <= INLINE_ID_LEN => SmolStr::new_inline(text),
            Some(text) => SmolStr::new(text),
            None => SmolStr::new(String::from_utf8_lossy(value)),
        });
    }

    fn set_retry(&mut self, value: &[u8], out: &mut impl Emit) {
        let Some(millis) = parse_retry_millis(value) else {
            return;
        };
        let retry = Duration::from_millis(millis);
        self.reconnection_time = Some(retry);
        self.block_retry = Some(retry);
        out.retry(retry);
    }

    /// WHATWG "dispatch the event", steps 1–7. The data is `in_chunk` when the block's only value
    /// is still in the chunk, else the data buffer.
    #[inline(always)]
    pub(super) fn dispatch(&mut self, in_chunk: Option<InChunkData<'_>>, out: &mut impl Emit) {
        // In place when both hold an ID (every event of a stream with IDs): no temporary
        // copied through the stack.
        match (&self.id_buffer, &mut self.last_event_id) {
            (None, last) => *last = None,
            (Some(buffer), Some(last)) => last.clone_from(buffer),
            (Some(buffer), last) => *last = Some(buffer.clone()),
        }
        self.id_fields_committed = self.id_fields_buffered;
        let retry = self.block_retry.take();
        let custom_type = std::mem::take(&mut self.custom_type);
        if !self.has_data && in_chunk.is_none() {
            return;
        }
        self.has_data = false;
        self.measured_raw = 0;
        self.measured_decoded = 0;
        let Some(in_chunk) = in_chunk else {
            return self.dispatch_buffer(custom_type, retry, out);
        };
        // The next block's first allocation is sized like this one.
        self.data_capacity_hint = in_chunk.raw.len().min(RETAINED_BUFFER_CAPACITY);
        if self.last_event_large {
            // A smaller event ends a run of large ones: their buffer goes.
            self.last_event_large = false;
            self.data.release();
        }
        out.event(Dispatched {
            data: DispatchedData::InChunk(in_chunk),
            event_type: self.recent_event_type.as_ref().filter(|_| custom_type),
            last_event_id: self.last_event_id.as_ref(),
            committed_id_fields: self.id_fields_committed,
            retry,
        });
    }

    /// [`dispatch`](Self::dispatch) of data collected in the data buffer.
    fn dispatch_buffer(&mut self, custom_type: bool, retry: Option<Duration>, out: &mut impl Emit) {
        let data_len = self.data.len();
        self.data_capacity_hint = data_len.min(RETAINED_BUFFER_CAPACITY);
        // A data buffer over the retained size is kept through a run of large events, so that
        // each is not allocated, grown and faulted in anew; the first large event after smaller
        // ones, and the first smaller one after a run, give it back.
        let large = data_len > RETAINED_BUFFER_CAPACITY;
        let keep_large_buffer = large && self.last_event_large;
        self.last_event_large = large;
        out.event(Dispatched {
            data: DispatchedData::Buffer(&mut self.data),
            event_type: self.recent_event_type.as_ref().filter(|_| custom_type),
            last_event_id: self.last_event_id.as_ref(),
            committed_id_fields: self.id_fields_committed,
            retry,
        });
        // An owned sink took the buffer; a borrowed one left it for reuse.
        if self.data.capacity() > RETAINED_BUFFER_CAPACITY && !keep_large_buffer {
            self.data.release();
        }
        self.data.clear();
    }

    pub(super) fn end_of_stream(&mut self, out: &mut impl Emit) -> Result<(), SseParseError> {
        self.release_held_bom_bytes()?;
        if !self.flush_unterminated_at_eof {
            return Ok(());
        }
        if let Partial::FieldName(start) = self.partial {
            self.buffer_field_name(start);
        }
        if let Partial::RecentType(line) = self.partial {
            self.buffer_recent_type(line);
        }
        if let Partial::DataValue(streamed) = self.partial {
            self.partial = Partial::Buffered;
            self.check_streamed_value(streamed)?;
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(None, out);
        Ok(())
    }
}

/// The fields the parser acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Id,
    Retry,
    Comment,
    Unknown,
}

/// The field of a line and its value. The four field names are matched as prefixes first: that
/// skips the colon search on nearly every line.
/// (Slice patterns, not `strip_prefix`: they compile to a few byte compares instead of a
/// `memcmp` call.)
fn parse_field(line: &[u8]) -> (Field, &[u8]) {
    let known = match line {
        [b'd', b'a', b't', b'a', b':', value @ ..] => Some((Field::Data, value)),
        [b'e', b'v', b'e', b'n', b't', b':', value @ ..] => Some((Field::Event, value)),
        [b'i', b'd', b':', value @ ..] => Some((Field::Id, value)),
        [b'r', b'e', b't', b'r', b'y', b':', value @ ..] => Some((Field::Retry, value)),
        _ => None,
    };
    if let Some((field, value)) = known {
        return (field, strip_one_space(value));
    }
    let (name, value) = split_field(line);
    let field = match name {
        b"" => Field::Comment,
        b"data" => Field::Data,
        b"event" => Field::Event,
        b"id" => Field::Id,
        b"retry" => Field::Retry,
        _ => Field::Unknown,
    };
    (field, value)
}

pub(super) fn strip_one_space(value: &[u8]) -> &[u8] {
    match value {
        [b' ', rest @ ..] => rest,
        _ => value,
    }
}

/// Field name (before the first colon) and value (after it, minus one leading space). A line
/// without a colon is all name with an empty value; a comment has an empty name.
pub(super) fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    let Some(colon) = memchr(b':', line) else {
        return (line, &[]);
    };
    let (name, from_colon) = line.split_at_checked(colon).unwrap_or((line, &[]));
    let value = from_colon.get(1..).unwrap_or_default();
    (name, value.strip_prefix(b" ").unwrap_or(value))
}

/// A `retry` value in milliseconds: only a non-empty run of ASCII digits counts (no sign, no
/// space, no unit). Values beyond `u64::MAX` saturate: the server asked for "practically never".
pub(super) fn parse_retry_millis(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |millis, digit| {
        millis
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// The longest ID a `SmolStr` holds inline (its `INLINE_CAP`, public only in later versions than
/// our minimum Rust allows). `SmolStr::new` would also scan the text for its whitespace form.
const INLINE_ID_LEN: usize = 23;
