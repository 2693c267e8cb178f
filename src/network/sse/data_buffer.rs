//! [`DataBuffer`]: an event's data as it is collected, and how much of it is already known to be
//! text.
//!
//! The data is raw bytes until dispatch, where it is checked as UTF-8. For a large event that
//! arrived in many pieces that check is a pass over the whole buffer, long after the pieces left
//! the cache. But the pieces of a long line are searched for the line end anyway, and that search
//! proves a piece ASCII on the way (see `long_line`): such a piece is appended as `&str`, and the
//! buffer keeps the length of its prefix made only of text. At dispatch only what follows that
//! prefix is checked — nothing, for a long ASCII line fed in network-sized chunks. The values of
//! short lines (up to 64 bytes) are copied with a few fixed-size moves whose bytes are also
//! OR-ed together: an ASCII value grows the prefix too, so an event made of short ASCII lines
//! needs no check at dispatch either.
//!
//! The invariant — `bytes[..text_len]` is valid UTF-8 — is kept by this type alone: the bytes
//! can only be appended to, cleared or taken (which resets `text_len`), and `text_len` only
//! grows over a `&str` appended right at its end, over bytes just checked, or over bytes just
//! copied and seen to be ASCII (each valid UTF-8 on its own). Joining two valid
//! UTF-8 sequences gives a valid one (each ends with a complete character), so a text prefix
//! followed by a checked tail is text.

use std::mem::MaybeUninit;
use std::ops::Deref;

/// An event's data buffer (see the module docs). Reads go through `Deref` to the bytes; every
/// change goes through a method, so that the text prefix stays true.
#[derive(Debug, Default)]
pub(super) struct DataBuffer {
    bytes: Vec<u8>,
    /// `bytes[..text_len]` is valid UTF-8.
    text_len: usize,
    /// The bytes after `text_len` failed a check: they stay unproven until cleared, so as not to
    /// be checked again for every proven piece.
    tail_invalid: bool,
}

impl DataBuffer {
    /// Appends raw bytes (the text prefix does not grow); see [`extend_bytes`].
    #[inline(always)]
    pub(super) fn extend_from_slice(&mut self, bytes: &[u8]) {
        extend_bytes(&mut self.bytes, bytes);
    }

    /// Appends one raw byte.
    #[inline(always)]
    pub(super) fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    /// Appends LF (the separator before a data line's value that is still to come).
    #[inline(always)]
    pub(super) fn push_lf(&mut self) {
        // LF is ASCII: text before it stays text with it.
        let all_text = self.text_len == self.bytes.len();
        self.bytes.push(b'\n');
        if all_text {
            self.text_len = self.bytes.len();
        }
    }

    /// Appends LF and then `value`: the join of a block's data lines.
    #[inline(always)]
    pub(super) fn push_lf_and(&mut self, value: &[u8]) {
        // A slice is at most `isize::MAX` bytes, so this does not overflow.
        self.bytes.reserve(value.len() + 1);
        self.append_reserved(true, value);
    }

    /// Appends a block's first data value, into an allocation of at least `capacity` bytes
    /// (usually the block's final size, from the last event).
    #[inline]
    pub(super) fn push_first_value(&mut self, value: &[u8], capacity: usize) {
        self.bytes.reserve_exact(value.len().max(capacity));
        self.append_reserved(false, value);
    }

    /// Appends `value`, after an LF when `lf` is set, into capacity already reserved, with one
    /// capacity check and, for values up to 64 bytes (most data lines), no `memcpy` call. A copy
    /// that saw only ASCII bytes grows the text prefix when everything before it is text, so
    /// that events made of short ASCII lines need no UTF-8 check at dispatch.
    #[inline(always)]
    fn append_reserved(&mut self, lf: bool, value: &[u8]) {
        let len = self.bytes.len();
        let start = usize::from(lf);
        let additional = start + value.len();
        let spare = &mut self.bytes.spare_capacity_mut()[..additional];
        if lf {
            spare[0].write(b'\n');
        }
        let ascii = copy_to_uninit(value, &mut spare[start..]);
        // SAFETY: `spare` is `additional` bytes of the capacity right after `len` (the slicing
        // above would have panicked otherwise), and all of them were just written: the LF when
        // `start` is 1, then `value.len()` bytes (`copy_to_uninit` writes every byte of its
        // destination, which is exactly as long as `value`).
        #[allow(unsafe_code)]
        unsafe {
            self.bytes.set_len(len + additional)
        };
        // Text before, and only ASCII (LF included) appended: still text.
        if ascii && self.text_len == len {
            self.text_len = self.bytes.len();
        }
    }

    /// Appends `text`. The text prefix grows over it when everything before it is text — after
    /// a check of the raw bytes since the prefix (the start of a line, usually, and small).
    pub(super) fn push_str(&mut self, text: &str) {
        let all_text = self.text_len == self.bytes.len() || self.prove_tail();
        self.bytes.extend_from_slice(text.as_bytes());
        if all_text {
            self.text_len = self.bytes.len();
        }
    }

    /// Checks the raw bytes after the text prefix; true (and the prefix covers them) when valid.
    #[cold]
    fn prove_tail(&mut self) -> bool {
        if self.tail_invalid {
            return false;
        }
        // Fails closed: were the prefix ever longer than the bytes, nothing would be proven.
        let Some(tail) = self.bytes.get(self.text_len..) else {
            return false;
        };
        if simdutf8::basic::from_utf8(tail).is_err() {
            self.tail_invalid = true;
            return false;
        }
        self.text_len = self.bytes.len();
        true
    }

    /// Empties the buffer, keeping its allocation.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.text_len = 0;
        self.tail_invalid = false;
    }

    /// Empties the buffer and gives its allocation back.
    pub(super) fn release(&mut self) {
        self.bytes = Vec::new();
        self.text_len = 0;
        self.tail_invalid = false;
    }

    /// The whole buffer as text, if it is valid UTF-8: only the bytes after the text prefix are
    /// checked, and nothing when the prefix is the whole buffer (an event of short ASCII lines:
    /// the validator's call on an empty tail cost ~40 instructions per event).
    #[inline]
    pub(super) fn text(&self) -> Option<&str> {
        if self.text_len != self.bytes.len() {
            // Fails closed: were the prefix ever longer than the bytes, nothing would be text.
            let tail = self.bytes.get(self.text_len..)?;
            simdutf8::basic::from_utf8(tail).ok()?;
        }
        Some(self.as_text_unchecked())
    }

    /// Takes the bytes out (the buffer is left empty, without an allocation): as a `String` when
    /// they are valid UTF-8 (no copy, and only the tail after the text prefix checked), else raw.
    pub(super) fn take(&mut self) -> Result<String, Vec<u8>> {
        let valid = self.text().is_some();
        let bytes = std::mem::take(&mut self.bytes);
        self.text_len = 0;
        self.tail_invalid = false;
        if valid {
            Ok(into_string_unchecked(bytes))
        } else {
            Err(bytes)
        }
    }

    /// The whole buffer as `&str`; only for when [`text`](Self::text) found the tail valid.
    #[allow(unsafe_code)]
    fn as_text_unchecked(&self) -> &str {
        debug_assert!(std::str::from_utf8(&self.bytes).is_ok());
        // SAFETY: the only caller, `text`, returns this only when `text_len` is the whole
        // length, or when the bytes after `text_len` were just checked valid; `bytes[..text_len]`
        // is valid UTF-8 by the type's invariant (module docs); and a valid sequence followed by
        // a valid one is valid.
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }
}

/// Appends `bytes` to `vec`. A piece under 16 bytes — a chunk of a stream fed a few bytes at a
/// time, the start or the end of a line — is copied with two overlapping word moves: a `memcpy`
/// call's dispatch costs more than such a copy (a tenth of the instructions of parsing a stream
/// fed in 7-byte chunks went to those calls).
#[inline(always)]
pub(super) fn extend_bytes(vec: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= SHORT_COPY {
        vec.extend_from_slice(bytes);
        return;
    }
    vec.reserve(bytes.len());
    let len = vec.len();
    copy_short(bytes, &mut vec.spare_capacity_mut()[..bytes.len()]);
    // SAFETY: the `bytes.len()` elements of spare capacity right after `len` were reserved
    // (the slicing above would have panicked otherwise) and all of them were just written
    // (`copy_short` writes every byte of its destination, which is exactly as long as `bytes`).
    #[allow(unsafe_code)]
    unsafe {
        vec.set_len(len + bytes.len())
    };
}

/// Below this length [`extend_bytes`] copies without `memcpy`.
const SHORT_COPY: usize = 16;

/// [`copy_to_uninit`] for fewer than [`SHORT_COPY`] bytes, without the ASCII check.
#[inline(always)]
fn copy_short(src: &[u8], dst: &mut [MaybeUninit<u8>]) {
    debug_assert_eq!(src.len(), dst.len());
    match src.len() {
        0..4 => copy_small(src, dst),
        4..8 => copy_ends::<4>(src, dst),
        8..16 => copy_ends::<8>(src, dst),
        // Not reached from `extend_bytes`; correct for any length all the same.
        _ => {
            copy_exact(src, dst);
            false
        }
    };
}

/// Copies `src` into `dst`, which must be exactly as long (panics otherwise), writing every
/// byte of it; returns whether the bytes are all ASCII, as far as it looked (it does not for
/// more than 64 bytes: `false` then). Lengths from 16 to 64 take two overlapping fixed-size
/// copies (a couple of loads and stores each) instead of a `memcpy` call, whose dispatch costs
/// more than such a copy, and the ASCII check is an OR of the same registers.
#[inline(always)]
fn copy_to_uninit(src: &[u8], dst: &mut [MaybeUninit<u8>]) -> bool {
    assert_eq!(src.len(), dst.len(), "copy_to_uninit: lengths differ");
    match src.len() {
        0..16 => copy_small(src, dst),
        16..=32 => copy_ends::<16>(src, dst),
        33..=64 => copy_ends::<32>(src, dst),
        _ => {
            copy_exact(src, dst);
            false
        }
    }
}

/// A short `src` into `dst` (same length), byte by byte; whether it was all ASCII.
#[inline(always)]
fn copy_small(src: &[u8], dst: &mut [MaybeUninit<u8>]) -> bool {
    let mut seen = 0;
    for (to, &from) in dst.iter_mut().zip(src) {
        to.write(from);
        seen |= from;
    }
    seen.is_ascii()
}

/// `src` into `dst` (same length): a `memcpy` call, or a load and a store or two where the length
/// is a constant (the arrays of [`copy_ends`]).
#[inline(always)]
fn copy_exact(src: &[u8], dst: &mut [MaybeUninit<u8>]) {
    let len = src.len().min(dst.len());
    // SAFETY: both regions are `len` bytes inside their slices (`MaybeUninit<u8>` has the
    // layout of `u8`), valid for reads and writes respectively, and they do not overlap (one
    // is borrowed shared, the other mutably).
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), len)
    };
}

/// `src` into `dst` (same length, `N..=2N` bytes) as the first `N` and the last `N` bytes: the
/// two copies overlap in the middle, and together write every byte. Whether it was all ASCII.
#[inline(always)]
fn copy_ends<const N: usize>(src: &[u8], dst: &mut [MaybeUninit<u8>]) -> bool {
    let (Some(src_head), Some(src_tail)) = (src.first_chunk::<N>(), src.last_chunk::<N>()) else {
        return copy_small(src, dst);
    };
    let Some(dst_head) = dst.first_chunk_mut::<N>() else {
        return copy_small(src, dst);
    };
    copy_exact(src_head, dst_head);
    if let Some(dst_tail) = dst.last_chunk_mut::<N>() {
        copy_exact(src_tail, dst_tail);
    }
    // Written so that it compiles to a vector OR and one mask test, not an OR reduction.
    let mut seen = *src_head;
    for (seen, &tail) in seen.iter_mut().zip(src_tail) {
        *seen |= tail;
    }
    seen.iter()
        .fold(true, |ascii, &byte| ascii & byte.is_ascii())
}

/// `bytes` as a `String`; only for bytes [`DataBuffer::take`] just found valid.
#[allow(unsafe_code)]
fn into_string_unchecked(bytes: Vec<u8>) -> String {
    debug_assert!(std::str::from_utf8(&bytes).is_ok());
    // SAFETY: `take` calls this only after `text` found these same bytes valid UTF-8 (they were
    // moved out, not changed, since).
    unsafe { String::from_utf8_unchecked(bytes) }
}

impl Deref for DataBuffer {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sse::MIRI_STRIDE;

    #[test]
    fn text_pieces_need_no_check_and_raw_ones_are_checked() {
        let mut data = DataBuffer::default();
        assert_eq!(data.text(), Some(""));
        data.push_str("caf\u{e9}");
        data.push(b'\n');
        data.push_str("ok");
        assert_eq!(data.text(), Some("caf\u{e9}\nok"));
        assert_eq!(
            data.text_len,
            data.len(),
            "the raw LF was proven with the next piece"
        );
        data.extend_from_slice(b" \xC3");
        assert_eq!(data.text(), None, "an unfinished character at the end");
        data.push(0xA9);
        assert_eq!(data.text(), Some("caf\u{e9}\nok \u{e9}"));
    }

    #[test]
    fn an_invalid_tail_is_never_taken_for_text() {
        let mut data = DataBuffer::default();
        data.extend_from_slice(b"a\xFFb");
        data.push_str("more");
        assert!(data.tail_invalid);
        assert_eq!(data.text_len, 0);
        data.push_str("and more");
        assert_eq!(data.text(), None);
        assert_eq!(data.take(), Err(b"a\xFFbmoreand more".to_vec()));
        // Taken: empty, text again, and proofs start over.
        assert_eq!(data.text(), Some(""));
        data.push_str("fresh");
        assert_eq!(data.take(), Ok("fresh".to_owned()));
    }

    /// The bytes of a destination the test initialised before the copy (with zeros).
    #[allow(unsafe_code)]
    fn initialised(bytes: &[MaybeUninit<u8>]) -> Vec<u8> {
        // SAFETY: the callers create every element with `MaybeUninit::new`.
        bytes.iter().map(|b| unsafe { b.assume_init() }).collect()
    }

    #[test]
    fn values_of_every_length_are_copied_whole_and_proven_only_when_ascii() {
        for len in (0..140).step_by(MIRI_STRIDE) {
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut copied = vec![MaybeUninit::new(0u8); len];
            assert_eq!(copy_to_uninit(&ascii, &mut copied), len <= 64, "len {len}");
            assert_eq!(initialised(&copied), ascii, "len {len}");
            for at in (0..len).step_by(MIRI_STRIDE) {
                for byte in [0x80, 0xC3, 0xFF] {
                    let mut value = ascii.clone();
                    value[at] = byte;
                    let mut copied = vec![MaybeUninit::new(0u8); len];
                    assert!(!copy_to_uninit(&value, &mut copied), "len {len}, at {at}");
                    assert_eq!(initialised(&copied), value, "len {len}, at {at}");
                }
            }
        }
    }

    #[test]
    fn joined_values_are_text_exactly_when_their_bytes_are() {
        let pieces: [&[u8]; 9] = [
            b"",
            b"short",
            b"0123456789abcdef",
            b"0123456789abcdef0123456789abcdef0",
            b"caf\xC3\xA9 and more text to pass sixteen",
            b"ends inside a character \xC3",
            b"\xA9 starts with a continuation byte",
            b"\xFF invalid",
            &[b'L'; 100],
        ];
        for first in pieces {
            for second in pieces {
                for third in pieces {
                    let mut data = DataBuffer::default();
                    data.push_first_value(first, 8);
                    data.push_lf_and(second);
                    data.push_lf_and(third);
                    let joined = [first, second, third].join(&b'\n');
                    assert_eq!(&data[..], &joined[..]);
                    assert!(data.text_len <= data.len());
                    assert!(std::str::from_utf8(&data[..data.text_len]).is_ok());
                    assert_eq!(data.text(), std::str::from_utf8(&joined).ok());
                }
            }
        }
    }

    #[test]
    fn short_ascii_values_need_no_check_at_dispatch() {
        let mut data = DataBuffer::default();
        data.push_first_value(b"first line, ASCII", 0);
        data.push_lf_and(b"second line, ASCII as well");
        assert_eq!(data.text_len, data.len());
        data.push_lf_and(b"caf\xC3\xA9");
        assert_eq!(
            data.text_len,
            data.len() - 6,
            "non-ASCII is left to the check"
        );
        data.push_lf_and(b"ASCII after it");
        assert!(
            data.text_len < data.len(),
            "the prefix does not jump a raw part"
        );
        assert_eq!(
            data.text(),
            Some("first line, ASCII\nsecond line, ASCII as well\ncaf\u{e9}\nASCII after it")
        );
    }

    #[test]
    fn short_pieces_are_appended_exactly() {
        // Every piece length around the word-copy thresholds, onto vectors with no spare
        // capacity (the copy must reserve) and with some (it must write at the right place).
        let source: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
        for before in [0, 1, 7, 8, 15] {
            for spare in [0, 3, 64] {
                for len in 0..source.len() {
                    let mut vec = Vec::with_capacity(before + spare);
                    vec.extend(std::iter::repeat_n(0xEE, before));
                    let piece = &source[..len];
                    extend_bytes(&mut vec, piece);
                    assert_eq!(vec.len(), before + len, "before {before}, len {len}");
                    assert!(vec[..before].iter().all(|&b| b == 0xEE));
                    assert_eq!(
                        &vec[before..],
                        piece,
                        "before {before}, spare {spare}, len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_lone_separator_extends_only_a_prefix_that_reaches_it() {
        let mut data = DataBuffer::default();
        data.push_str("text");
        data.push_lf();
        assert_eq!(data.text_len, data.len(), "LF after text is text");
        data.extend_from_slice(b"\xFF");
        data.push_lf();
        assert_eq!(data.text_len, 5, "the prefix does not jump a raw part");
        assert_eq!(&data[..], b"text\n\xFF\n");
        assert_eq!(data.text(), None);
    }

    #[test]
    fn clearing_forgets_the_prefix() {
        let mut data = DataBuffer::default();
        data.push_str("0123456789");
        data.clear();
        // Raw bytes of the same length as the old prefix: must still be checked.
        data.extend_from_slice(b"\xFF123456789");
        assert_eq!(data.text(), None);
        data.release();
        assert_eq!(data.capacity(), 0);
        data.extend_from_slice(b"\xFF123456789");
        assert_eq!(data.text(), None);
    }
}
