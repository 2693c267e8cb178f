//! The size limit: the block's data plus the line being parsed, counted as decoded bytes.

use super::decode::lossy_len;
use super::{EVENT_PREFIX, MAX_DECODED_GROWTH, Partial, SseParseError, SseParser, StreamedLine};

impl SseParser {
    /// The size rules for a whole `data` line of `line_len` raw bytes with `value`: the line
    /// against the limit, then the data grown by the value. Decoding at most triples a size, so
    /// one comparison with a precomputed bound settles both for all but events near the limit.
    #[inline(always)]
    pub(super) fn check_data_line(
        &mut self,
        line_len: usize,
        value: &[u8],
    ) -> Result<(), SseParseError> {
        // 3 × (data + line) + 1 (the LF) ≤ limit, with the division done once, at construction.
        let surely_fits = self.data.len().saturating_add(line_len) <= self.surely_fitting_raw;
        if surely_fits {
            return Ok(());
        }
        self.check_line_size(line_len)?;
        self.check_value(value)
    }

    /// The limit for a streamed line about to grow by `more` bytes: decoded block plus raw line.
    #[cold]
    pub(super) fn check_streamed_line(
        &mut self,
        streamed: &StreamedLine,
        more: usize,
    ) -> Result<(), SseParseError> {
        let line_len = self
            .data
            .len()
            .saturating_sub(streamed.value_start)
            .saturating_add(streamed.skipped)
            .saturating_add(more);
        self.check_size(streamed.block_len, line_len)
    }

    /// The size rule for a finished streamed value; see [`check_value`](Self::check_value).
    #[inline(never)]
    pub(super) fn check_streamed_value(
        &mut self,
        streamed: StreamedLine,
    ) -> Result<(), SseParseError> {
        let separator = streamed.value_start.saturating_sub(streamed.block_len);
        let value_len = self.data.len().saturating_sub(streamed.value_start);
        if self.value_surely_fits(streamed.block_len, separator, value_len) {
            return Ok(());
        }
        let block = self.measure(streamed.block_len);
        let value = self.data.get(streamed.value_start..).unwrap_or_default();
        self.check_decoded(block, separator, value)
    }

    /// The limit while a line is being read: the decoded data so far plus the raw line.
    #[inline(always)]
    pub(super) fn check_line_size(&mut self, line_len: usize) -> Result<(), SseParseError> {
        self.check_size(self.data.len(), line_len)
    }

    /// Checks that the first `block_len` bytes of data, decoded, plus `line_len` raw bytes fit in
    /// the limit. Decoded data is at least its raw size and at most three times it (an invalid
    /// byte becomes a 3-byte U+FFFD), so it is only decoded when those bounds disagree: near the
    /// limit, and then each byte once.
    #[inline(always)]
    fn check_size(&mut self, block_len: usize, line_len: usize) -> Result<(), SseParseError> {
        let (_, at_most) = self.decoded_bounds(block_len);
        self.check_size_within(block_len, at_most, line_len)
    }

    /// [`check_size`](Self::check_size) with the upper bound of the block's decoded size
    /// (`at_most`) already at hand.
    #[inline(always)]
    pub(super) fn check_size_within(
        &mut self,
        block_len: usize,
        at_most: usize,
        line_len: usize,
    ) -> Result<(), SseParseError> {
        if at_most.saturating_add(line_len) <= self.max_event_size {
            return Ok(());
        }
        self.check_size_closely(block_len, line_len)
    }

    /// [`check_size`](Self::check_size) when the upper bound does not settle it.
    #[cold]
    fn check_size_closely(
        &mut self,
        block_len: usize,
        line_len: usize,
    ) -> Result<(), SseParseError> {
        let (at_least, _) = self.decoded_bounds(block_len);
        if at_least.saturating_add(line_len) > self.max_event_size
            || self.measure(block_len).saturating_add(line_len) > self.max_event_size
        {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Lower and upper bound of the decoded size of `data[..block_len]`.
    pub(super) fn decoded_bounds(&self, block_len: usize) -> (usize, usize) {
        let unmeasured = block_len.saturating_sub(self.measured_raw);
        (
            self.measured_decoded.saturating_add(unmeasured),
            self.measured_decoded
                .saturating_add(unmeasured.saturating_mul(MAX_DECODED_GROWTH)),
        )
    }

    /// The decoded size of `data[..block_len]` (which must end at a value boundary), remembered.
    fn measure(&mut self, block_len: usize) -> usize {
        if let Some(unmeasured) = self.data.get(self.measured_raw..block_len) {
            self.measured_decoded = self.measured_decoded.saturating_add(lossy_len(unmeasured));
            self.measured_raw = block_len;
        }
        self.measured_decoded
    }

    /// Whether data grown by a separator and a value of `value_len` raw bytes surely stays within
    /// the limit, whatever the bytes decode to.
    fn value_surely_fits(&self, block_len: usize, separator: usize, value_len: usize) -> bool {
        let (_, at_most) = self.decoded_bounds(block_len);
        at_most
            .saturating_add(separator)
            .saturating_add(value_len.saturating_mul(MAX_DECODED_GROWTH))
            <= self.max_event_size
    }

    /// The exact rule for a value: decoded block, separator and decoded value within the limit.
    fn check_decoded(
        &self,
        block: usize,
        separator: usize,
        value: &[u8],
    ) -> Result<(), SseParseError> {
        let decoded = block
            .saturating_add(separator)
            .saturating_add(lossy_len(value));
        if decoded > self.max_event_size {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// Checks that the data grown by `value` (decoded, with its separator) stays within the limit.
    /// Only matters for invalid UTF-8: a valid value is never longer than its line.
    pub(super) fn check_value(&mut self, value: &[u8]) -> Result<(), SseParseError> {
        let block_len = self.data.len();
        let separator = usize::from(self.has_data);
        if self.value_surely_fits(block_len, separator, value.len()) {
            return Ok(());
        }
        let block = self.measure(block_len);
        self.check_decoded(block, separator, value)
    }

    /// The raw length of the unfinished line, wherever it is kept.
    pub(super) fn partial_line_len(&self) -> usize {
        match self.partial {
            Partial::Buffered => self.line.len(),
            Partial::FieldName(start) => start.matched,
            Partial::RecentType(line) => {
                EVENT_PREFIX.len() + usize::from(line.spaced) + line.matched
            }
            Partial::DataValue(streamed) => self
                .data
                .len()
                .saturating_sub(streamed.value_start)
                .saturating_add(streamed.skipped),
        }
    }

    /// The decoded size of the block's complete data values (for `Debug`).
    pub(super) fn complete_data_len(&self) -> usize {
        let complete = match self.partial {
            Partial::Buffered | Partial::FieldName(_) | Partial::RecentType(_) => self.data.len(),
            Partial::DataValue(streamed) => streamed.block_len,
        };
        lossy_len(self.data.get(..complete).unwrap_or_default())
    }

    pub(super) fn too_large(&self) -> SseParseError {
        SseParseError::EventTooLarge {
            limit: self.max_event_size,
        }
    }
}
