//! The general path: the complete lines of a chunk, the line ends split between chunks and
//! the unfinished line kept at a chunk's end.

use super::block::strip_one_space;
use super::followed::{started_data_value, strip_prefix_short};
use super::sink::{Emit, InChunkData};
use super::{BomState, Partial, RETAINED_BUFFER_CAPACITY, SseParseError, SseParser};
use crate::network::sse::chunk_text::ChunkText;
use crate::network::sse::data_buffer::extend_bytes;
use crate::network::sse::line_end::{
    LineEndSearch, SHORT_LINE, WithLineEndSearch, with_best_search,
};
use crate::network::sse::long_line::scan_long_line;
use crate::network::sse::swar;

impl SseParser {
    pub(super) fn parse_chunk(
        &mut self,
        chunk: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        let mut rest = self.skip_bom(chunk)?;
        if self.swallow_lf {
            match rest.split_first() {
                None => return Ok(()),
                Some((b'\n', tail)) => rest = tail,
                Some(_) => {}
            }
            self.swallow_lf = false;
        }
        if let Partial::FieldName(start) = self.partial
            && let Some(tail) = self.continue_field_name(start, rest)
        {
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
        }
        if let Partial::RecentType(line) = self.partial
            && let Some(tail) = self.continue_recent_type(line, rest)
        {
            if tail.is_empty() {
                return Ok(());
            }
            rest = tail;
        }
        if let Partial::DataValue(streamed) = self.partial {
            rest = self.continue_data_line(streamed, rest)?;
            if rest.is_empty() {
                return Ok(());
            }
        }
        // A tiny chunk's rest with no line end is the start of the next line (the usual end of
        // a piece that ended a line): kept without the setup of the line loop. A blank line
        // (an event's end) is told by its first byte, without the search.
        if rest.len() < swar::SHORT
            && !matches!(rest.first(), Some(b'\r' | b'\n'))
            && swar::find_in_short(rest, swar::line_end_marks).is_none()
        {
            return self.buffer_partial(rest);
        }
        with_best_search(
            rest.len(),
            ChunkLines {
                parser: self,
                rest,
                out,
            },
        )
    }

    /// The whole lines of `rest`, the chunk after what continues the previous one; keeps what
    /// is left of an unfinished line. Generic over the line-end search so that it is compiled
    /// once per search (see [`with_best_search`]).
    #[inline(always)]
    fn parse_lines<S: LineEndSearch>(
        &mut self,
        mut rest: &[u8],
        out: &mut impl Emit,
        search: S,
    ) -> Result<(), SseParseError> {
        let mut text = ChunkText::new(rest);
        // The block's only data value so far, while it is a whole line of this chunk: when the
        // blank line follows at once (the usual single-line event) it is dispatched from here,
        // uncopied; anything else moves it into the data buffer first.
        let mut in_chunk: Option<&[u8]> = None;
        loop {
            if rest.first() == Some(&b'e')
                && in_chunk.is_none()
                && self.line.is_empty()
                && let Some(after) = self.repeated_event_line(rest)?
            {
                rest = after;
                continue;
            }
            let Some((line, terminator, tail)) =
                split_line(rest, self.long_data_lines, &mut text, search)
            else {
                break;
            };
            rest = self.skip_line_end(terminator, tail);
            if let Some(value) = in_chunk.take() {
                if line.is_empty() {
                    let data = InChunkData {
                        raw: value,
                        text: text.text_of(value),
                    };
                    self.dispatch(Some(data), out);
                    continue;
                }
                self.push_data_value(value);
            }
            // Data, event and id lines are most lines: handled here, without the general field
            // dispatch, when they lie whole in the chunk.
            if self.line.is_empty() {
                match line {
                    // The blank line ending a block whose data is in the buffer (the data lines
                    // were checked against the limit as they came, so no check is due here).
                    [] => {
                        self.dispatch(None, out);
                        continue;
                    }
                    [b'd', b'a', b't', b'a', b':', value @ ..] => {
                        self.long_data_lines = line.len() > SHORT_LINE;
                        let value = strip_one_space(value);
                        self.check_data_line(line.len(), value)?;
                        if self.has_data {
                            self.data.push_lf_and(value);
                        } else if S::SERVES_TINY_CHUNKS
                            || self.long_data_lines
                            || rest.first() != Some(&b'd')
                        {
                            in_chunk = Some(value);
                            continue;
                        } else {
                            // Another data line (most likely) follows: the block's data will be
                            // assembled in the buffer, so the first value goes there now and
                            // the next lines join it in a run.
                            self.push_data_value(value);
                        }
                        // Not in the copy of the loop that serves tiny chunks: they hold no
                        // run of lines, and the code would only crowd their path (large chunks
                        // take another copy, with or without AVX2).
                        if !S::SERVES_TINY_CHUNKS && !self.long_data_lines {
                            rest = self.more_short_data_lines(rest, search);
                        }
                        continue;
                    }
                    [b'e', b'v', b'e', b'n', b't', b':', value @ ..] => {
                        self.check_line_size(line.len())?;
                        self.set_event_type(strip_one_space(value));
                        continue;
                    }
                    [b'i', b'd', b':', value @ ..] => {
                        self.check_line_size(line.len())?;
                        let value = strip_one_space(value);
                        self.set_id(value, text.nul_free_text_of(value));
                        continue;
                    }
                    _ => {}
                }
            }
            self.complete_line::<S>(line, out)?;
        }
        if let Some(value) = in_chunk {
            self.push_data_value(value);
        }
        self.buffer_partial(rest)
    }

    /// The `data: ` lines that follow a short data line whose value went into the data buffer
    /// (events of many short data lines): while `rest` starts with one that lies whole in it and
    /// surely fits the limit, its value is joined to the buffer without the line loop's general
    /// steps (the tests for a line begun in an earlier chunk, a repeated type, a blank line,
    /// the expected length of a data line, the chunk's pending value; the field name and its
    /// space are one word compare): ~90 instructions per 47-byte line instead of ~130. Returns
    /// the rest of `rest`; anything else (another field, a blank line, `data:` without its
    /// space, a long line, a line near the limit, a line the chunk does not end) is left to the
    /// loop.
    #[inline(always)]
    fn more_short_data_lines<'a, S: LineEndSearch>(
        &mut self,
        mut rest: &'a [u8],
        search: S,
    ) -> &'a [u8] {
        while let Some(head) = rest.first_chunk::<8>()
            && u64::from_le_bytes(*head) & DATA_SPACE_MASK == DATA_SPACE
            && let Some(after_name) = rest.get(DATA_SPACE_LEN..)
            && let Some(end) = search.find_line_end(after_name)
            && let Some((value, terminator, tail)) = split_at_terminator(after_name, end)
        {
            let line_len = rest.len() - after_name.len() + value.len();
            // The rule of `check_data_line` (no overflow: both are at most `isize::MAX`), and no
            // long line (the loop looks for its successor with the other search,
            // `long_data_lines`).
            if line_len > SHORT_LINE || self.data.len() + line_len > self.surely_fitting_raw {
                break;
            }
            self.data.push_lf_and(value);
            rest = self.skip_line_end(terminator, tail);
        }
        rest
    }

    /// Recognises an `event: <recent type>` line at the start of `rest` by comparing it with the
    /// recent type, which also says where the line ends: no line-end search, no decoding. Streams
    /// such as OpenAI's repeat one type on most events. Returns what follows the line.
    #[inline(always)]
    fn repeated_event_line<'a>(
        &mut self,
        rest: &'a [u8],
    ) -> Result<Option<&'a [u8]>, SseParseError> {
        let Some(recent) = self.recent_event_type.as_deref() else {
            return Ok(None);
        };
        let Some(after_name) = rest.strip_prefix(b"event: ") else {
            return Ok(None);
        };
        let Some(after_value) = strip_prefix_short(after_name, recent.as_bytes()) else {
            return Ok(None);
        };
        let Some((&terminator @ (b'\r' | b'\n'), tail)) = after_value.split_first() else {
            return Ok(None);
        };
        let line_len = rest.len() - after_value.len();
        self.check_line_size(line_len)?;
        self.custom_type = true;
        Ok(Some(self.skip_line_end(terminator, tail)))
    }

    /// The bytes after a line terminator, minus the LF of a CRLF pair (remembered when the chunk
    /// ends between the two).
    pub(super) fn skip_line_end<'a>(&mut self, terminator: u8, tail: &'a [u8]) -> &'a [u8] {
        if terminator != b'\r' {
            return tail;
        }
        match tail.split_first() {
            Some((b'\n', after_lf)) => after_lf,
            Some(_) => tail,
            None => {
                self.swallow_lf = true;
                tail
            }
        }
    }

    /// Consumes the leading BOM bytes of a stream, remembering a partial match across chunks.
    fn skip_bom<'a>(&mut self, mut rest: &'a [u8]) -> Result<&'a [u8], SseParseError> {
        while let BomState::Expecting { matched } = self.bom {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            if BOM.get(matched) == Some(&byte) {
                rest = tail;
                self.bom = if matched + 1 == BOM.len() {
                    BomState::Done
                } else {
                    BomState::Expecting {
                        matched: matched + 1,
                    }
                };
            } else {
                self.release_held_bom_bytes()?;
            }
        }
        Ok(rest)
    }

    /// The stream did not start with a whole BOM: the bytes held back so far are text.
    pub(super) fn release_held_bom_bytes(&mut self) -> Result<(), SseParseError> {
        if let BomState::Expecting { matched } = self.bom {
            self.bom = BomState::Done;
            self.buffer_partial(BOM.get(..matched).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Handles a line whose terminator was found; `tail_of_line` is its part in the current chunk.
    /// Inlined into both compilations of the line loop (as it was when there was one).
    #[inline(always)]
    fn complete_line<S: LineEndSearch>(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        if self.line.is_empty() {
            self.check_line_size(tail_of_line.len())?;
            return self.process_line(tail_of_line, out);
        }
        if S::SERVES_TINY_CHUNKS {
            // Nearly every line began in an earlier chunk here: a call per line would show.
            return self.join_buffered_line(tail_of_line, out);
        }
        self.join_buffered_line_out_of_loop(tail_of_line, out)
    }

    /// [`join_buffered_line`](Self::join_buffered_line) as a call: in the loop over large chunks,
    /// which meets a line begun in an earlier chunk at most once per chunk, the inlined code
    /// crowded the common path (out of line, events of 40-byte lines parse 12–17 % faster).
    #[inline(never)]
    fn join_buffered_line_out_of_loop(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        self.join_buffered_line(tail_of_line, out)
    }

    /// Completes the line kept from earlier chunks with `tail_of_line` and handles it.
    #[inline(always)]
    fn join_buffered_line(
        &mut self,
        tail_of_line: &[u8],
        out: &mut impl Emit,
    ) -> Result<(), SseParseError> {
        self.check_line_size(self.line.len().saturating_add(tail_of_line.len()))?;
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(tail_of_line);
        let result = self.process_line(&line, out);
        self.recycle_line_buffer(line);
        result
    }

    /// Keeps a small buffer for the next partial line; gives a huge one back to the allocator.
    fn recycle_line_buffer(&mut self, mut line: Vec<u8>) {
        if line.capacity() <= RETAINED_BUFFER_CAPACITY {
            line.clear();
            self.line = line;
        }
    }

    /// Keeps the unfinished line at the end of a chunk. A line that so far is the start of
    /// `data:` or `event:` is only compared with the name (see [`Partial::FieldName`]); this test
    /// is inlined here, the rest of a line's start is out of line.
    pub(super) fn buffer_partial(&mut self, bytes: &[u8]) -> Result<(), SseParseError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.line.is_empty()
            && let Some(start) = self.field_name_start(bytes)
        {
            self.partial = Partial::FieldName(start);
            return Ok(());
        }
        if self.line.len() < FIELD_PREFIX_LEN {
            return self.buffer_line_start(bytes);
        }
        self.check_line_size(self.line.len().saturating_add(bytes.len()))?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Buffers the start of a line. A `data` line whose value has begun goes straight into the
    /// data buffer instead, so a long data line is copied once, not twice; an `event` line that
    /// so far repeats the recent type is only compared with it (see [`Partial::RecentType`]).
    #[inline(never)]
    fn buffer_line_start(&mut self, bytes: &[u8]) -> Result<(), SseParseError> {
        if self.line.is_empty() {
            if let Some(value) = started_data_value(bytes) {
                return self.start_data_line(bytes.len(), value);
            }
            if let Some(line) = self.recent_type_start(bytes) {
                self.partial = Partial::RecentType(line);
                return Ok(());
            }
            self.check_line_size(bytes.len())?;
            extend_bytes(&mut self.line, bytes);
            return Ok(());
        }
        self.check_line_size(self.line.len().saturating_add(bytes.len()))?;
        extend_bytes(&mut self.line, bytes);
        // A line fed in pieces shorter than its field name is recognised once enough has arrived.
        if let Some(line) = self.recent_type_start(&self.line) {
            self.line.clear();
            self.partial = Partial::RecentType(line);
            return Ok(());
        }
        let Some(value_len) = started_data_value(&self.line).map(<[u8]>::len) else {
            return Ok(());
        };
        let line = std::mem::take(&mut self.line);
        let value = line.get(line.len() - value_len..).unwrap_or_default();
        let result = self.start_data_line(line.len(), value);
        self.recycle_line_buffer(line);
        result
    }
}

/// Splits off the first terminated line: (line, its terminator byte, the bytes after it).
/// `long_data_lines`: whether a `data` line is expected to be long (the stream's last one was).
/// Always inlined: as a call (returning three values through memory) it costs more than a short
/// line's search.
#[inline(always)]
fn split_line<'a>(
    bytes: &'a [u8],
    long_data_lines: bool,
    text: &mut ChunkText<'a>,
    search: impl LineEndSearch,
) -> Option<(&'a [u8], u8, &'a [u8])> {
    let end = match bytes.first() {
        // A blank line (every event ends with one) needs no search at all.
        Some(b'\r' | b'\n') => Some(0),
        // Data lines are as long as the stream's data; other lines (IDs, types) are short.
        Some(b'd') if long_data_lines => find_long_data_line_end(bytes, text),
        _ => search.find_line_end(bytes),
    }?;
    split_at_terminator(bytes, end)
}

/// The end of a data line expected to be long; a line the search proved ASCII becomes the
/// chunk's checked text, so that its value is not checked again at dispatch (one pass over a
/// long line instead of two).
#[inline(never)]
fn find_long_data_line_end<'a>(bytes: &'a [u8], text: &mut ChunkText<'a>) -> Option<usize> {
    let scan = scan_long_line(bytes);
    let end = scan.end?;
    if let Some(line) = scan.ascii_text {
        text.add_checked_line(line);
    }
    Some(end)
}

/// [`SseParser::parse_lines`] waiting for its line-end search.
struct ChunkLines<'p, 'a, E> {
    parser: &'p mut SseParser,
    rest: &'a [u8],
    out: &'p mut E,
}

impl<E: Emit> WithLineEndSearch for ChunkLines<'_, '_, E> {
    type Output = Result<(), SseParseError>;

    #[inline(always)]
    fn run<S: LineEndSearch>(self, search: S) -> Self::Output {
        self.parser.parse_lines(self.rest, self.out, search)
    }
}

/// (line, terminator, the bytes after it) for the terminator at `end`.
#[inline(always)]
pub(super) fn split_at_terminator(bytes: &[u8], end: usize) -> Option<(&[u8], u8, &[u8])> {
    let (line, from_terminator) = bytes.split_at_checked(end)?;
    let (&terminator, tail) = from_terminator.split_first()?;
    Some((line, terminator, tail))
}

/// `data: ` in the low six bytes of a little-endian word, the mask that keeps them, and their
/// length.
const DATA_SPACE: u64 = u64::from_le_bytes(*b"data: \0\0");
const DATA_SPACE_MASK: u64 = 0xFFFF_FFFF_FFFF;
const DATA_SPACE_LEN: usize = 6;

/// `event:` plus the byte that tells whether a space follows: an unfinished line shorter than
/// this may still be recognised as a `data` line with its value begun (six bytes) or an `event`
/// line (seven).
const FIELD_PREFIX_LEN: usize = 7;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
