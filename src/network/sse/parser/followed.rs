//! Lines followed across chunks without buffering: a `data:` or `event:` name piece by piece,
//! a repeated event type, and a data value streamed into the data buffer.

use super::block::strip_one_space;
use super::lines::split_at_terminator;
use super::{
    DATA_PREFIX, EVENT_PREFIX, FollowedField, NameStart, Partial, SseParseError, SseParser,
    StreamedLine, TypeLine,
};
use crate::network::sse::long_line::scan_line_piece;

impl SseParser {
    /// How to follow a line that so far is the start of `data:` or `event:`
    /// ([`Partial::FieldName`]): `event` only when a recent type can follow it, and either only
    /// when what it leads to surely fits the limit (so no piece of the name needs a size check).
    pub(super) fn field_name_start(&self, line: &[u8]) -> Option<NameStart> {
        let (field, longest_held) = match line.first()? {
            // `data:` and the space: the line's size when its value begins.
            b'd' => (FollowedField::Data, DATA_PREFIX.len() + 1),
            // Followed into `RecentType`, which needs the whole repeated line to fit.
            b'e' => (
                FollowedField::Event,
                EVENT_PREFIX.len() + 1 + self.recent_event_type.as_deref()?.len(),
            ),
            _ => return None,
        };
        let name = field.name();
        // As in `check_data_line`: three times the raw data, plus the held bytes, within the
        // limit settles it without the closer bound.
        let fits = self.data.len().saturating_add(longest_held) <= self.surely_fitting_raw || {
            let (_, data_at_most) = self.decoded_bounds(self.data.len());
            data_at_most.saturating_add(longest_held) <= self.max_event_size
        };
        (fits && starts_with_tiny(name, line)).then_some(NameStart {
            field,
            matched: line.len(),
        })
    }

    /// Continues a line that so far is the start of a followed field name with the start of
    /// `rest`. Returns what follows the name and its optional space (empty when the next chunk
    /// has to say more), the line now being a streamed value or a [`Partial::RecentType`]; `None`
    /// when the line turned out to be something else: it is then in the line buffer, as if it had
    /// been buffered all along, and `rest` still has to be parsed.
    #[inline(always)]
    pub(super) fn continue_field_name<'a>(
        &mut self,
        start: NameStart,
        rest: &'a [u8],
    ) -> Option<&'a [u8]> {
        let name = start.field.name();
        let remaining = name.get(start.matched..).unwrap_or_default();
        let common = remaining.len().min(rest.len());
        let (more_name, after_name) = rest.split_at(common);
        if !starts_with_tiny(remaining, more_name) {
            self.buffer_field_name(start);
            return None;
        }
        // Whether the space that is dropped follows the colon is known with the next byte.
        let Some((&first, after_space)) = after_name.split_first() else {
            self.partial = Partial::FieldName(NameStart {
                matched: start.matched + common,
                ..start
            });
            return Some(&[]);
        };
        let spaced = first == b' ';
        let value = if spaced { after_space } else { after_name };
        match start.field {
            // The size rule was settled when the line began (`field_name_start`).
            FollowedField::Data => self.start_fitting_data_line(name.len() + usize::from(spaced)),
            // The size rule for the whole line was settled when it began (`field_name_start`),
            // and the recent type cannot have changed since: no line was processed.
            FollowedField::Event => {
                self.partial = Partial::RecentType(TypeLine { spaced, matched: 0 });
            }
        }
        Some(value)
    }

    /// Puts the bytes of a [`Partial::FieldName`] line into the line buffer.
    #[cold]
    #[inline(never)]
    pub(super) fn buffer_field_name(&mut self, start: NameStart) {
        self.partial = Partial::Buffered;
        self.line.clear();
        let held = start.field.name().get(..start.matched).unwrap_or_default();
        self.line.extend_from_slice(held);
    }

    /// How to follow an unfinished `event` line by comparison ([`Partial::RecentType`]), if its
    /// value so far is the start of the recent type and the whole line, were it to repeat that
    /// type, surely fits the limit (so none of its pieces needs a size check).
    pub(super) fn recent_type_start(&self, line: &[u8]) -> Option<TypeLine> {
        let recent = self.recent_event_type.as_deref()?;
        let after_colon = line.strip_prefix(EVENT_PREFIX)?;
        // `event:` alone: whether a space follows, to be dropped, is not known yet.
        if after_colon.is_empty() {
            return None;
        }
        let value = strip_one_space(after_colon);
        let skipped = line.len() - value.len();
        let (_, data_at_most) = self.decoded_bounds(self.data.len());
        let whole_line_fits = data_at_most
            .saturating_add(skipped)
            .saturating_add(recent.len())
            <= self.max_event_size;
        (whole_line_fits && recent.as_bytes().starts_with(value)).then_some(TypeLine {
            spaced: skipped > EVENT_PREFIX.len(),
            matched: value.len(),
        })
    }

    /// Continues an `event` line that so far repeats the recent type with the start of `rest`.
    /// Returns what follows the line (empty when the line goes on in the next chunk); `None` when
    /// the line turned out to be something else: it is then in the line buffer, as if it had
    /// been buffered all along, and `rest` still has to be parsed.
    #[inline(always)]
    pub(super) fn continue_recent_type<'a>(
        &mut self,
        line: TypeLine,
        rest: &'a [u8],
    ) -> Option<&'a [u8]> {
        let recent = self.recent_event_type.as_deref().map(str::as_bytes);
        let remaining = recent.and_then(|recent| recent.get(line.matched..));
        if let Some(remaining) = remaining {
            // A type holds no CR or LF, so a piece equal to part of it has no line end.
            if strip_prefix_short(remaining, rest).is_some() {
                self.partial = Partial::RecentType(TypeLine {
                    matched: line.matched + rest.len(),
                    ..line
                });
                return Some(&[]);
            }
            if let Some(after_value) = strip_prefix_short(rest, remaining)
                && let Some((&terminator @ (b'\r' | b'\n'), tail)) = after_value.split_first()
            {
                // The size rule was settled when the line began (`recent_type_start`).
                self.partial = Partial::Buffered;
                self.custom_type = true;
                return Some(self.skip_line_end(terminator, tail));
            }
        }
        self.buffer_recent_type(line);
        None
    }

    /// Puts the bytes of a [`Partial::RecentType`] line into the line buffer.
    #[cold]
    #[inline(never)]
    pub(super) fn buffer_recent_type(&mut self, line: TypeLine) {
        self.partial = Partial::Buffered;
        let recent = self.recent_event_type.as_deref().map(str::as_bytes);
        let value = recent
            .and_then(|recent| recent.get(..line.matched))
            .unwrap_or_default();
        self.line.clear();
        self.line.extend_from_slice(EVENT_PREFIX);
        if line.spaced {
            self.line.push(b' ');
        }
        self.line.extend_from_slice(value);
    }

    /// Begins streaming an unfinished `data` line of `line_len` raw bytes whose value so far is
    /// `value`.
    pub(super) fn start_data_line(
        &mut self,
        line_len: usize,
        value: &[u8],
    ) -> Result<(), SseParseError> {
        let block_len = self.data.len();
        let (_, block_at_most) = self.decoded_bounds(block_len);
        // `check_line_size`, with the bound just computed.
        self.check_size_within(block_len, block_at_most, line_len)?;
        self.push_data_value(value);
        let skipped = line_len.saturating_sub(value.len());
        self.follow_data_value(block_len, block_at_most, skipped, value.len());
        Ok(())
    }

    /// [`start_data_line`](Self::start_data_line) for a line of `skipped` bytes (`data:` and
    /// its space) whose value has not begun, known to fit the limit (the rule of
    /// [`Partial::FieldName`]): only the separator is appended, inline.
    #[inline(always)]
    fn start_fitting_data_line(&mut self, skipped: usize) {
        let block_len = self.data.len();
        let (_, block_at_most) = self.decoded_bounds(block_len);
        if self.has_data {
            self.data.push_lf();
        } else {
            self.push_data_value(&[]);
        }
        self.follow_data_value(block_len, block_at_most, skipped, 0);
    }

    /// Follows the `data` line whose value (`value_len` bytes so far) ends the data buffer as
    /// [`Partial::DataValue`]: `block_len` bytes of data before it, whose decoded size is at
    /// most `block_at_most`, and `skipped` bytes of the line not in the data.
    #[inline(always)]
    fn follow_data_value(
        &mut self,
        block_len: usize,
        block_at_most: usize,
        skipped: usize,
        value_len: usize,
    ) {
        let value_start = self.data.len().saturating_sub(value_len);
        let value_room = self
            .max_event_size
            .saturating_sub(block_at_most)
            .saturating_sub(skipped);
        self.partial = Partial::DataValue(StreamedLine {
            block_len,
            value_start,
            skipped,
            data_room: value_start.saturating_add(value_room),
        });
    }

    /// Appends the start of `rest` to the streamed `data` line; returns what follows the line, or
    /// nothing when the line goes on in the next chunk.
    #[inline(always)]
    pub(super) fn continue_data_line<'a>(
        &mut self,
        streamed: StreamedLine,
        rest: &'a [u8],
    ) -> Result<&'a [u8], SseParseError> {
        let scan = scan_line_piece(rest);
        let Some((more_value, terminator, tail)) =
            scan.end.and_then(|end| split_at_terminator(rest, end))
        else {
            // No line end: the proof, if any, covers all of `rest`.
            let text = scan.ascii_text.filter(|text| text.len() == rest.len());
            self.stream_value(&streamed, rest, text)?;
            return Ok(&[]);
        };
        self.stream_value(&streamed, more_value, scan.ascii_text)?;
        self.partial = Partial::Buffered;
        // All the data decoded, at most three times its raw size plus the trailing LF, within
        // the limit settles the rule at once (as for a whole data line, `check_data_line`).
        if self.data.len() > self.surely_fitting_raw {
            self.check_streamed_value(streamed)?;
        }
        Ok(self.skip_line_end(terminator, tail))
    }

    /// Appends more of a streamed value (`text`: the same bytes, when the line-end search proved
    /// them ASCII); the limit needs a look only once the line outgrows the room it surely has.
    #[inline(always)]
    pub(super) fn stream_value(
        &mut self,
        streamed: &StreamedLine,
        bytes: &[u8],
        text: Option<&str>,
    ) -> Result<(), SseParseError> {
        // No overflow: both lengths are at most `isize::MAX`.
        if self.data.len() + bytes.len() > streamed.data_room {
            self.check_streamed_line(streamed, bytes.len())?;
        }
        match text {
            Some(text) => self.data.push_str(text),
            None => self.data.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// The value so far of an unfinished `data` line, once it is known: after `data:` and the byte
/// that decides whether there is a space to drop.
pub(super) fn started_data_value(partial_line: &[u8]) -> Option<&[u8]> {
    match partial_line {
        [b'd', b'a', b't', b'a', b':', value @ ..] if !value.is_empty() => {
            Some(strip_one_space(value))
        }
        _ => None,
    }
}

/// `bytes` without `prefix`, if it starts with it. Event types and the pieces of tiny chunks are
/// short: 4 to 32 bytes are compared as two overlapping words each side instead of through a
/// `memcmp` call (measured: ~25 fewer instructions per repeated 26-byte type).
#[inline]
pub(super) fn strip_prefix_short<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(prefix.len())?;
    let equal = match prefix.len() {
        4..=8 => equal_by_ends::<4>(head, prefix),
        9..=16 => equal_by_ends::<8>(head, prefix),
        17..=32 => equal_by_ends::<16>(head, prefix),
        _ => head == prefix,
    };
    equal.then_some(rest)
}

/// Whether `a` and `b`, of one length from `N` to `2 * N`, are equal: compared as their first
/// and their last `N` bytes (overlapping in the middle), a fixed-size compare each.
#[inline(always)]
fn equal_by_ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
    fn ends<const N: usize>(bytes: &[u8]) -> Option<([u8; N], [u8; N])> {
        let first = bytes.get(..N)?.try_into().ok()?;
        let last = bytes.get(bytes.len().checked_sub(N)?..)?.try_into().ok()?;
        Some((first, last))
    }
    match (ends::<N>(a), ends::<N>(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Whether `bytes` starts with `prefix`, for the few bytes of a field name: a byte loop, not
/// a `memcmp` call.
#[inline(always)]
fn starts_with_tiny(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes.iter().zip(prefix).all(|(a, b)| a == b)
}
