//! [`ChunkText`]: a chunk's complete lines checked as UTF-8 a window at a time, so that the
//! values parsed from them become text without a check of their own.
//!
//! Checking each value separately costs a call per value, and a short value (an event ID, most
//! events' data) is too short for the SIMD validator: it falls back to a byte loop. One SIMD
//! check of the lines ahead covers many values (measured: ~150 fewer instructions per
//! OpenAI-like event with an ID). The check runs when a value is first asked for, over the
//! complete lines of the next 16 KiB (or of the whole value, if longer): a chunk from which no
//! value is taken as text (the middle of a long data line) costs nothing, and a huge chunk is
//! not read twice from memory, as a check of all of it up front would.

/// A chunk, and the checked text of the window of its lines that values were last taken from.
pub(super) struct ChunkText<'a> {
    chunk: &'a [u8],
    /// Checked lines of the chunk: valid UTF-8 ending with a line terminator, or "" when not
    /// checked yet or found invalid.
    window: &'a str,
    /// Values starting before this offset in the chunk were already covered by a check, valid
    /// or not.
    checked_to: usize,
    /// Whether `window` holds no NUL byte (IDs with one are ignored, so each would need a look);
    /// found out when first asked.
    window_nul_free: Option<bool>,
}

impl<'a> ChunkText<'a> {
    /// Chunks shorter than this are never checked here: their few values are checked alone.
    const CHECK_FROM: usize = 64;

    /// How much of the chunk one check covers, at least: small enough to stay in cache until
    /// the parser reaches it, large enough that one check serves many events.
    const WINDOW: usize = 16 * 1024;

    pub(super) fn new(chunk: &'a [u8]) -> Self {
        Self {
            chunk,
            window: "",
            checked_to: 0,
            window_nul_free: None,
        }
    }

    /// `part` as text, when it is a value of the chunk's complete lines and those are valid
    /// UTF-8. Values must be asked for in the order they appear. `part` should be a sub-slice of
    /// the chunk; any other slice gets `None` (or, were it to share the chunk's memory, its own
    /// correct text).
    #[inline(always)]
    pub(super) fn text_of(&mut self, part: &'a [u8]) -> Option<&'a str> {
        match self.in_window(part) {
            Some(text) => Some(text),
            None => self.check_for(part),
        }
    }

    /// [`text_of`](Self::text_of), but only for a `part` known to hold no NUL byte either (an
    /// event ID, which is ignored when it holds one).
    #[inline(always)]
    pub(super) fn nul_free_text_of(&mut self, part: &'a [u8]) -> Option<&'a str> {
        let text = self.text_of(part)?;
        let nul_free = match self.window_nul_free {
            Some(known) => known,
            None => self.look_for_nul(),
        };
        nul_free.then_some(text)
    }

    /// Whether the window holds no NUL byte, looked for once per window (out of line: the
    /// usual ID finds the answer known).
    #[cold]
    #[inline(never)]
    fn look_for_nul(&mut self) -> bool {
        let nul_free = memchr::memchr(0, self.window.as_bytes()).is_none();
        self.window_nul_free = Some(nul_free);
        nul_free
    }

    /// Takes `line`, a complete line of the chunk that the search for its end already proved
    /// ASCII (see `long_line`), as the checked window, so that its values need no check of their
    /// own. A line an earlier window covered, or one from elsewhere, is left to the usual check.
    pub(super) fn add_checked_line(&mut self, line: &'a str) {
        let offset = (line.as_ptr() as usize).wrapping_sub(self.chunk.as_ptr() as usize);
        let Some(end) = offset.checked_add(line.len()) else {
            return;
        };
        if offset < self.checked_to || end > self.chunk.len() {
            return;
        }
        self.window = line;
        self.window_nul_free = None;
        // Past the line's terminator, as after a check of lines.
        self.checked_to = end.saturating_add(1);
    }

    /// `part` from the checked window, if it lies inside.
    #[inline(always)]
    fn in_window(&self, part: &[u8]) -> Option<&'a str> {
        let start = (part.as_ptr() as usize).wrapping_sub(self.window.as_ptr() as usize);
        // `get` refuses a start past the end (also when the subtraction wrapped), an end past
        // the window, and either end inside a character; values parsed from lines start and end
        // next to ASCII delimiters, so they never are.
        self.window.get(start..start.checked_add(part.len())?)
    }

    /// Checks the next window if `part` starts beyond the last one, then looks again.
    #[cold]
    #[inline(never)]
    fn check_for(&mut self, part: &'a [u8]) -> Option<&'a str> {
        if self.chunk.len() < Self::CHECK_FROM {
            return None;
        }
        let offset = (part.as_ptr() as usize).wrapping_sub(self.chunk.as_ptr() as usize);
        let end = offset.checked_add(part.len())?;
        if end > self.chunk.len() || offset < self.checked_to {
            return None;
        }
        self.check_lines_from(offset, end);
        self.in_window(part)
    }

    /// Checks the complete lines of the next window, which starts at `offset` and reaches at
    /// least past `end` (the terminator after the value being asked for).
    fn check_lines_from(&mut self, offset: usize, end: usize) {
        let window_end = offset
            .saturating_add(Self::WINDOW)
            .max(end.saturating_add(1))
            .min(self.chunk.len());
        let span = self.chunk.get(offset..window_end).unwrap_or_default();
        // A line terminator never lies inside a multi-byte sequence: cutting after the last one
        // never splits a character, even when the chunk itself ends inside one.
        let lines = match memchr::memrchr2(b'\n', b'\r', span) {
            Some(last_terminator) => span.get(..=last_terminator).unwrap_or_default(),
            None => &[],
        };
        self.window = simdutf8::basic::from_utf8(lines).unwrap_or_default();
        self.window_nul_free = None;
        self.checked_to = offset.saturating_add(lines.len().max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enough filler to reach the whole-chunk check.
    const FILLER: &[u8] = b": this comment line only makes the chunk long enough to check\n";

    fn chunk_with(lines: &[u8], tail: &[u8]) -> Vec<u8> {
        [FILLER, lines, tail].concat()
    }

    #[test]
    fn values_inside_complete_valid_lines_are_text() {
        let chunk = chunk_with("id: caf\u{e9}\n".as_bytes(), b"data: unfini");
        let mut text = ChunkText::new(&chunk);
        let id_start = FILLER.len() + 4;
        let id = &chunk[id_start..id_start + 5];
        assert_eq!(text.text_of(id), Some("caf\u{e9}"));
        // The unfinished line is not part of the checked text.
        let tail = &chunk[chunk.len() - 6..];
        assert_eq!(text.text_of(tail), None);
    }

    #[test]
    fn a_chunk_cut_inside_a_character_still_has_its_lines_checked() {
        let mut chunk = chunk_with(b"id: 7\n", b"data: ");
        chunk.extend_from_slice(&"\u{e9}".as_bytes()[..1]);
        let mut text = ChunkText::new(&chunk);
        let id_start = FILLER.len() + 4;
        assert_eq!(text.text_of(&chunk[id_start..id_start + 1]), Some("7"));
    }

    #[test]
    fn invalid_bytes_in_the_lines_turn_the_shortcut_off() {
        let chunk = chunk_with(b"id: \xff\n", b"");
        let mut text = ChunkText::new(&chunk);
        let id_start = FILLER.len() + 4;
        assert_eq!(text.text_of(&chunk[id_start..id_start + 1]), None);
        assert_eq!(text.text_of(&chunk[..4]), None, "nothing before it either");
    }

    #[test]
    fn windows_cover_a_long_chunk_and_resume_after_invalid_lines() {
        let mut chunk = FILLER.to_vec();
        let mut values = Vec::new();
        for i in 0..5_000 {
            let line = if i == 1_700 {
                b"id: \xff\n".to_vec()
            } else {
                format!("id: {i}\u{e9}\n").into_bytes()
            };
            values.push((chunk.len() + 4, line.len() - 5));
            chunk.extend_from_slice(&line);
        }
        assert!(chunk.len() > 2 * ChunkText::WINDOW);
        let mut text = ChunkText::new(&chunk);
        let mut known = 0;
        for (i, &(start, len)) in values.iter().enumerate() {
            let got = text.text_of(&chunk[start..start + len]);
            if i == 1_700 {
                assert_eq!(got, None);
            } else if let Some(got) = got {
                assert_eq!(got, format!("{i}\u{e9}"));
                known += 1;
            }
        }
        // Only the window holding the invalid line loses the shortcut.
        assert!(known > 3_000, "{known} of 5,000 values known");
    }

    #[test]
    fn a_value_longer_than_a_window_is_checked_whole() {
        let mut chunk = FILLER.to_vec();
        chunk.extend_from_slice(b"data: ");
        let start = chunk.len();
        chunk.extend(std::iter::repeat_n(b'x', 3 * ChunkText::WINDOW));
        let end = chunk.len();
        chunk.extend_from_slice(b"\n\n");
        let mut text = ChunkText::new(&chunk);
        assert_eq!(
            text.text_of(&chunk[start..end]).map(str::len),
            Some(end - start)
        );
    }

    #[test]
    fn only_a_window_without_nul_vouches_for_nul_free_values() {
        let chunk = chunk_with(b"id: 1\n", b"");
        let id_start = FILLER.len() + 4;
        let mut text = ChunkText::new(&chunk);
        assert_eq!(
            text.nul_free_text_of(&chunk[id_start..id_start + 1]),
            Some("1")
        );
        let chunk = chunk_with(b"id: 1\n: \0\n", b"");
        let mut text = ChunkText::new(&chunk);
        assert_eq!(text.nul_free_text_of(&chunk[id_start..id_start + 1]), None);
        assert_eq!(text.text_of(&chunk[id_start..id_start + 1]), Some("1"));
    }

    #[test]
    fn a_line_proven_ascii_is_text_and_the_lines_after_it_are_checked_as_usual() {
        let chunk = chunk_with(b"data: 0123456789\nid: \xff\nid: 9\n", b"");
        let line_start = FILLER.len();
        let line = std::str::from_utf8(&chunk[line_start..line_start + 16]).unwrap();
        let mut text = ChunkText::new(&chunk);
        text.add_checked_line(line);
        let value = &chunk[line_start + 6..line_start + 16];
        assert_eq!(text.text_of(value), Some("0123456789"));
        let bad_id = line_start + 21;
        assert_eq!(text.text_of(&chunk[bad_id..bad_id + 1]), None);
        // The window with the invalid ID covers the next line too (not checked on its own).
        assert_eq!(text.text_of(&chunk[bad_id + 6..bad_id + 7]), None);

        let chunk = chunk_with(b"data: 0123456789\nid: 9\n", b"");
        let mut text = ChunkText::new(&chunk);
        text.add_checked_line(std::str::from_utf8(&chunk[line_start..line_start + 16]).unwrap());
        let id = line_start + 21;
        assert_eq!(text.text_of(&chunk[id..id + 1]), Some("9"));
    }

    #[test]
    fn a_proven_line_inside_an_earlier_window_or_elsewhere_changes_nothing() {
        let chunk = chunk_with(b"id: 1\ndata: abc\n", b"");
        let id = FILLER.len() + 4;
        let mut text = ChunkText::new(&chunk);
        assert_eq!(text.text_of(&chunk[id..id + 1]), Some("1"));
        // Already covered by the window just checked: that window stays.
        let data_line = FILLER.len() + 6;
        text.add_checked_line(std::str::from_utf8(&chunk[data_line..data_line + 9]).unwrap());
        assert_eq!(text.text_of(&chunk[id..id + 1]), Some("1"));
        let elsewhere = String::from("data: abc");
        let mut text = ChunkText::new(&chunk);
        text.add_checked_line(&elsewhere);
        assert_eq!(text.text_of(&elsewhere.as_bytes()[6..]), None);
        assert_eq!(text.text_of(&chunk[id..id + 1]), Some("1"));
    }

    #[test]
    fn short_chunks_and_foreign_slices_are_never_text() {
        let short = b"id: 1\n";
        let mut text = ChunkText::new(short);
        assert_eq!(text.text_of(&short[4..5]), None);
        let chunk = chunk_with(b"id: 1\n", b"");
        let mut text = ChunkText::new(&chunk);
        let elsewhere = b"id: 1\n".to_vec();
        assert_eq!(text.text_of(&elsewhere[4..5]), None);
    }

    #[test]
    fn a_slice_ending_inside_a_character_is_not_text() {
        let chunk = chunk_with("id: \u{e9}\n".as_bytes(), b"");
        let mut text = ChunkText::new(&chunk);
        let id_start = FILLER.len() + 4;
        assert_eq!(text.text_of(&chunk[id_start..id_start + 1]), None);
        assert_eq!(text.text_of(&chunk[id_start..id_start + 2]), Some("\u{e9}"));
    }
}
