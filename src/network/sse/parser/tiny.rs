//! Chunks under 16 bytes: more of a streamed data value, the pieces around its end and the start
//! of the next line, compared without the general path's setup.

use super::sink::Emit;
use super::{
    BomState, DATA_PREFIX, FollowedField, NameStart, Partial, SseParseError, SseParser,
    StreamedLine, TypeLine,
};
use crate::network::sse::swar;

impl SseParser {
    /// A one-byte chunk that is not a line end only continues the current line: it is appended
    /// at once, without the general setup (what the loop below would do with it too). Some
    /// proxies forward a stream a byte at a time; for them the setup was most of the cost. The
    /// byte of a streamed data value with room left, the usual case, is pushed right here
    /// (inlined into the caller: no call per byte); the rest goes out of line, so as not to weigh
    /// on the general path. Longer tiny chunks: [`continue_data_value`](Self::continue_data_value).
    #[inline(always)]
    pub(super) fn continue_line(&mut self, chunk: &[u8]) -> Option<Result<(), SseParseError>> {
        let &[byte] = chunk else {
            return None;
        };
        // A streamed value implies the BOM is behind and no LF of a CRLF is pending.
        if let Partial::DataValue(streamed) = &self.partial
            && self.data.len() < streamed.data_room
            && byte != b'\r'
            && byte != b'\n'
        {
            debug_assert!(!self.swallow_lf && self.bom == BomState::Done);
            self.data.push(byte);
            return Some(Ok(()));
        }
        self.continue_other_line(byte)
    }

    /// A chunk of a few bytes inside a streamed data value (no line end, room left): appended at
    /// once, without the general setup. Tiny chunks mostly fall inside data values, the longest
    /// lines of most streams. Otherwise says where the value ends in the chunk, if it does with
    /// room for all of it, for [`feed_tiny_piece`](Self::feed_tiny_piece).
    #[inline(always)]
    pub(super) fn continue_data_value(&mut self, chunk: &[u8]) -> TinyPiece {
        let Partial::DataValue(streamed) = self.partial else {
            return TinyPiece::Other;
        };
        // No overflow: the data is at most `isize::MAX` bytes, the chunk under 16.
        if self.data.len() + chunk.len() > streamed.data_room {
            return TinyPiece::Other;
        }
        // As in `continue_line`: a streamed value implies neither state needs a look.
        debug_assert!(!self.swallow_lf && self.bom == BomState::Done);
        match swar::find_in_short(chunk, swar::line_end_marks) {
            None => {
                self.data.extend_from_slice(chunk);
                TinyPiece::Appended
            }
            Some(end) => TinyPiece::EndsValueAt(streamed, end),
        }
    }

    /// A tiny chunk that is not simply more of a data value. A line of a stream fed a few bytes
    /// at a time starts in one piece and goes on in the next: the piece that ends a data value
    /// and starts the next line (often after the blank line that ends an event), the piece that
    /// completes the field name, the pieces of a repeated `event:` type. They are handled here,
    /// by comparison, without the general setup; what they leave, and every other piece, goes
    /// to the general path. Out of line, so that the loop appending data pieces stays small.
    #[inline(never)]
    pub(super) fn feed_tiny_piece(
        &mut self,
        piece: TinyPiece,
        chunk: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        let rest = match piece {
            TinyPiece::Appended => return Ok(()),
            TinyPiece::EndsValueAt(streamed, end) => {
                let rest = self.end_tiny_data_line(streamed, chunk, end)?;
                self.start_tiny_line(rest, out)?
            }
            _ => self.continue_tiny_line(chunk, out)?,
        };
        if rest.is_empty() {
            return Ok(());
        }
        self.parse_chunk(rest, out)
    }

    /// Ends a streamed data value at `end` of a tiny chunk (room for all of it checked).
    /// Returns what follows the line end.
    #[inline(always)]
    fn end_tiny_data_line<'a>(
        &mut self,
        streamed: StreamedLine,
        chunk: &'a [u8],
        end: usize,
    ) -> Result<&'a [u8], SseParseError> {
        // `end` is a line end the search found in `chunk`; were it not, the general path decides.
        let Some((value, after)) = chunk.split_at_checked(end) else {
            return Ok(chunk);
        };
        self.data.extend_from_slice(value);
        self.partial = Partial::Buffered;
        // As in `continue_data_line`.
        if self.data.len() > self.surely_fitting_raw {
            self.check_streamed_value(streamed)?;
        }
        let Some((&terminator, tail)) = after.split_first() else {
            return Ok(&[]);
        };
        Ok(self.skip_line_end(terminator, tail))
    }

    /// A tiny chunk that continues the current line: one that completes a field name begun in
    /// the last chunk or goes on with a repeated type, or one that begins a line (the last
    /// ended with its chunk). Returns what the general path has to parse.
    #[inline(always)]
    fn continue_tiny_line<'a>(
        &mut self,
        chunk: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        match self.partial {
            Partial::FieldName(start) => {
                let Some(value) = self.continue_field_name(start, chunk) else {
                    return Ok(chunk);
                };
                match self.partial {
                    Partial::DataValue(_) => Ok(self.append_tiny_value(value)),
                    Partial::RecentType(line) if !value.is_empty() => {
                        self.continue_tiny_type(line, value, out)
                    }
                    _ => Ok(value),
                }
            }
            Partial::RecentType(line) => self.continue_tiny_type(line, chunk, out),
            // Not at the start of the body (a BOM may follow) or after a CR (an LF may follow).
            Partial::Buffered
                if self.line.is_empty() && !self.swallow_lf && self.bom == BomState::Done =>
            {
                self.start_tiny_line(chunk, out)
            }
            _ => Ok(chunk),
        }
    }

    /// Goes on with a repeated `event:` type ([`Partial::RecentType`]) and, when it ends in
    /// `rest`, with the line after it. Returns what the general path has to parse.
    #[inline(always)]
    fn continue_tiny_type<'a>(
        &mut self,
        line: TypeLine,
        rest: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        match self.continue_recent_type(line, rest) {
            Some(after) => self.start_tiny_line(after, out),
            // Now in the line buffer: `rest` goes on with it.
            None => Ok(rest),
        }
    }

    /// The start of a line in a tiny chunk, the line buffer empty: a blank line (LF) dispatches
    /// the event, a line that so far spells the start of `data:` is compared with the name
    /// ([`Partial::FieldName`]), `data:` with the byte after it starts the data value here.
    /// Returns what the general path has to parse: any other line, or what follows a further
    /// line end.
    #[inline(always)]
    fn start_tiny_line<'a>(
        &mut self,
        mut start: &'a [u8],
        out: &mut impl Emit,
    ) -> Result<&'a [u8], SseParseError> {
        if let [b'\n', after @ ..] = start {
            self.dispatch(None, out);
            start = after;
        }
        // `field_name_start`'s rule for `data`, in its quick form: what the line leads to surely
        // fits, so neither the name nor the start of the value needs a size check.
        if start.first() != Some(&b'd')
            || self.data.len() + DATA_PREFIX.len() + 1 > self.surely_fitting_raw
        {
            return Ok(start);
        }
        // Compared as the continuation of a name nothing of which has been matched yet.
        let name = NameStart {
            field: FollowedField::Data,
            matched: 0,
        };
        match self.continue_field_name(name, start) {
            Some(value) if matches!(self.partial, Partial::DataValue(_)) => {
                Ok(self.append_tiny_value(value))
            }
            // The name so far: followed (`Partial::FieldName`).
            Some(rest) => Ok(rest),
            None => Ok(start),
        }
    }

    /// Appends the start of a streamed value that a tiny chunk holds, when it holds no line end
    /// and fits the room. Returns what the general path has to parse.
    #[inline(always)]
    fn append_tiny_value<'a>(&mut self, value: &'a [u8]) -> &'a [u8] {
        match self.continue_data_value(value) {
            TinyPiece::Appended => &[],
            _ => value,
        }
    }

    /// [`continue_line`](Self::continue_line) for a byte that is not simply more of a data value.
    #[inline(never)]
    fn continue_other_line(&mut self, byte: u8) -> Option<Result<(), SseParseError>> {
        if byte == b'\r' || byte == b'\n' || self.swallow_lf || self.bom != BomState::Done {
            return None;
        }
        let chunk = &[byte];
        Some(match self.partial {
            Partial::DataValue(streamed) => self.stream_value(&streamed, chunk, None),
            Partial::RecentType(line) => match self.continue_recent_type(line, chunk) {
                Some(_) => Ok(()),
                None => self.buffer_partial(chunk),
            },
            Partial::Buffered => self.buffer_partial(chunk),
            // A byte of `data:` or `event:`. The byte after the colon, unless it is the space
            // that is dropped, begins the value: the caller goes on with it in the new state, as
            // with a byte that parts from the name (now in the line buffer).
            Partial::FieldName(start) => match self.continue_field_name(start, chunk) {
                Some([]) => Ok(()),
                _ => return None,
            },
        })
    }
}

/// What [`SseParser::continue_data_value`] made of a tiny chunk.
pub(super) enum TinyPiece {
    /// More of the streamed value, appended.
    Appended,
    /// The streamed value (room checked for the whole chunk) ends at this index of the chunk.
    EndsValueAt(StreamedLine, usize),
    /// Anything else: the state is not a streamed value, or it has not room for the chunk.
    Other,
}
