//! Byte searches in inputs shorter than 16 bytes, a 64-bit word at a time ("SIMD within a
//! register"), in safe code.
//!
//! Short inputs are common in event streams: the 7-byte pieces some proxies forward, ID lines,
//! IDs. For them a SIMD search's setup or a `memchr` call costs more than the search, and a byte
//! loop costs a compare and a branch per byte. Two overlapping words cover any input of 8 to 15
//! bytes, and a shorter input fits in one word, so such an input takes one or two word checks.

/// Inputs shorter than this are what [`find_in_short`] serves.
pub(super) const SHORT: usize = 16;

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of each byte of `word` that equals `byte` set, and possibly of bytes above such
/// a byte (the subtraction's borrow runs upwards from a real match, never from elsewhere): the
/// lowest mark is always exact, and with no match nothing is marked.
#[inline(always)]
pub(super) fn marks(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Marks of CR and LF bytes (see [`marks`]).
#[inline(always)]
pub(super) fn line_end_marks(word: u64) -> u64 {
    marks(word, b'\r') | marks(word, b'\n')
}

/// Marks of NUL bytes (see [`marks`]).
#[inline(always)]
pub(super) fn nul_marks(word: u64) -> u64 {
    marks(word, 0)
}

/// The index of the first byte of `bytes` that `marks_of` marks. `bytes` must be shorter than
/// [`SHORT`] (of a longer input only the first and last eight bytes would be searched), and
/// `marks_of` must keep [`marks`]' promise: its lowest mark exact, and a byte marked only by
/// itself or by a real match below it (as [`marks`] and an OR of them are).
#[inline(always)]
pub(super) fn find_in_short(bytes: &[u8], marks_of: impl Fn(u64) -> u64) -> Option<usize> {
    debug_assert!(bytes.len() < SHORT);
    let len = bytes.len();
    let first = |word: u64| word.trailing_zeros() as usize / 8;
    if len >= 8 {
        let head = marks_of(bytes.first_chunk::<8>().map(|w| u64::from_le_bytes(*w))?);
        if head != 0 {
            return Some(first(head));
        }
        // Where the last eight bytes overlap the first eight nothing is marked, so the lowest
        // mark, if any, is the first match after them.
        let tail = marks_of(bytes.last_chunk::<8>().map(|w| u64::from_le_bytes(*w))?);
        return (tail != 0).then(|| len - 8 + first(tail));
    }
    // Fewer than eight bytes: all of them in one word, zeros above. Two overlapping 4-byte
    // reads (or the first, middle and last byte of a shorter input) put every byte at its own
    // place; where they overlap a byte is ORed with itself.
    let word = if len >= 4 {
        let low = u64::from(u32::from_le_bytes(*bytes.first_chunk::<4>()?));
        let high = u64::from(u32::from_le_bytes(*bytes.last_chunk::<4>()?));
        low | high << ((len - 4) * 8)
    } else {
        let byte_at = |i: usize| bytes.get(i).map(|&b| u64::from(b) << (i * 8));
        byte_at(0)? | byte_at(len / 2)? | byte_at(len - 1)?
    };
    // Only the input's own bytes count. The zeros above can only be marked by a search that
    // marks a zero byte (NUL): with no borrow coming from a real match below, a byte's mark
    // depends on that byte alone. Only such a search pays for the mask (`marks_of(0)` is a
    // constant once inlined); a line-end search does not.
    let found = if marks_of(0) == 0 {
        marks_of(word)
    } else {
        marks_of(word) & (u64::MAX >> ((8 - len) * 8))
    };
    (found != 0).then(|| first(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_the_first_match_next_to_bytes_that_borrow() {
        // One above the searched byte, right after a match, the subtraction also marks the
        // next byte; the first mark must still be the real one, and with no match nothing may
        // be marked. Fillers cover that case for CR (0x0C), LF (0x0B) and NUL (0x01), high-bit
        // twins of the searched bytes, and zero (a NUL in the upper bytes of a padded word).
        let fillers = [b'a', 0x01, 0x0B, 0x0C, 0x8A, 0x8D, 0x80, 0x00, 0xFF];
        for len in 0..SHORT {
            for filler in fillers {
                let mut bytes = vec![filler; len];
                let plain_line_end = bytes.iter().position(|&b| b == b'\r' || b == b'\n');
                assert_eq!(find_in_short(&bytes, line_end_marks), plain_line_end);
                let plain_nul = bytes.iter().position(|&b| b == 0);
                assert_eq!(find_in_short(&bytes, nul_marks), plain_nul);
                for at in 0..len {
                    for (searched, marks_of) in [
                        (b'\r', line_end_marks as fn(u64) -> u64),
                        (b'\n', line_end_marks),
                        (0, nul_marks),
                    ] {
                        bytes[at] = searched;
                        let expected = bytes.iter().position(|&b| {
                            if searched == 0 {
                                b == 0
                            } else {
                                b == b'\r' || b == b'\n'
                            }
                        });
                        assert_eq!(
                            find_in_short(&bytes, marks_of),
                            expected,
                            "len {len}, at {at}, searched {searched:#x}, filler {filler:#x}"
                        );
                        bytes[at] = filler;
                    }
                }
            }
        }
    }

    #[test]
    fn a_mark_sits_in_the_high_bit_of_the_matching_byte() {
        let word = u64::from_le_bytes(*b"ab\rcd\nef");
        assert_eq!(line_end_marks(word), 0x80 << 16 | 0x80 << 40);
        assert_eq!(nul_marks(word), 0);
        assert_eq!(nul_marks(u64::from_le_bytes(*b"abc\0defg")), 0x80 << 24);
    }
}
