//! [`scan_long_line`]: where a long line ends and, in the same pass, whether it is ASCII.
//!
//! A data line of hundreds of kilobytes that lies whole in a chunk was read twice: once by
//! `memchr2` for its end, once more by the UTF-8 check when its event was dispatched. Both facts
//! come out of one pass: a byte below 14 as a *signed* byte is either a control character
//! (CR, LF, tab, …) or part of a multi-byte character (every byte ≥ 0x80 is negative), so one
//! compare per 32 bytes flags every byte that can end the line or stop it from being ASCII, and
//! a run of unflagged blocks is ASCII text with no line end. Only a flagged block is looked at
//! closely. That is fewer instructions per byte than `memchr2`'s two compares, and it spares the
//! second pass: a line proven ASCII is valid UTF-8, so its text is handed on without a check
//! (see [`ChunkText::add_checked_line`](super::chunk_text::ChunkText::add_checked_line) for a line
//! that lies whole in a chunk, `DataBuffer` for the pieces of a line that spans chunks).
//!
//! Once a byte ≥ 0x80 shows up no proof is possible any more, and the rest of the search is
//! `memchr2`'s; the dispatch then checks the text as before. On x86_64 CPUs without AVX2 the same
//! scan runs with SSE2 (16 bytes per compare, which every x86_64 CPU has); off x86_64 the search
//! is `memchr2` alone, with no proof.
//!
//! `unsafe` here: the AVX2 and SSE2 loads (as in `line_end`) and the conversion of a line proven
//! ASCII into `&str` in [`ascii_text`], the only place a `&str` is made without a check.

/// What [`scan_long_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineScan<'a> {
    /// Index of the first CR or LF, if there is one.
    pub(super) end: Option<usize>,
    /// The bytes before `end` (all of them when there is no end) as text, when the search proved
    /// them ASCII.
    pub(super) ascii_text: Option<&'a str>,
}

/// The first CR or LF in `bytes` (a line expected to be long), and the line before it (all of
/// `bytes` when there is none) as text when it is ASCII.
#[inline]
pub(super) fn scan_long_line(bytes: &[u8]) -> LineScan<'_> {
    #[cfg(target_arch = "x86_64")]
    {
        avx2::scan_checked(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        without_proof(bytes)
    }
}

/// [`scan_long_line`] for the next piece of a line already being streamed. Pieces under 16 bytes
/// (tiny chunks) get a word-at-a-time search and no proof: for them the set-up would cost more
/// than the check the proof spares.
#[inline(always)]
pub(super) fn scan_line_piece(bytes: &[u8]) -> LineScan<'_> {
    if bytes.len() < super::swar::SHORT {
        return LineScan {
            end: super::swar::find_in_short(bytes, super::swar::line_end_marks),
            ascii_text: None,
        };
    }
    scan_long_line(bytes)
}

/// The search without an ASCII proof: `memchr2`.
fn without_proof(bytes: &[u8]) -> LineScan<'_> {
    LineScan {
        end: memchr::memchr2(b'\r', b'\n', bytes),
        ascii_text: None,
    }
}

/// The scan of `bytes` whose first `checked` bytes are known ASCII without a line end; for short
/// remainders.
fn scan_rest(bytes: &[u8], checked: usize) -> LineScan<'_> {
    let rest = bytes.get(checked..).unwrap_or_default();
    let found = memchr::memchr2(b'\r', b'\n', rest);
    let rest_of_line = rest.get(..found.unwrap_or(rest.len())).unwrap_or_default();
    let line = bytes
        .get(..checked + rest_of_line.len())
        .unwrap_or_default();
    LineScan {
        end: found.map(|found| checked + found),
        // Proven: the first `checked` bytes by the caller, the rest of the line just now.
        ascii_text: rest_of_line.is_ascii().then(|| ascii_text(line)),
    }
}

/// `line` as text.
///
/// Callers must have seen every byte of `line` below 0x80; that is checked in debug builds (and
/// so in every test and fuzz run).
#[allow(unsafe_code)]
fn ascii_text(line: &[u8]) -> &str {
    debug_assert!(line.is_ascii(), "a line taken for ASCII is not");
    // SAFETY: every caller proved each byte of `line` below 0x80 (see the call sites), and a
    // sequence of such bytes is valid UTF-8: each is a complete one-byte character.
    unsafe { std::str::from_utf8_unchecked(line) }
}

/// What a flagged SIMD block of `WIDTH` bytes at `offset` of `bytes` says, given its masks (bit
/// `i` for the block's byte `i`: `line_ends` CR or LF, `non_ascii` a byte ≥ 0x80), while
/// `bytes[..offset]` is known to be ASCII without a line end: the line's end (proven text when
/// no byte of the block before it is non-ASCII), the end found without proof once a non-ASCII
/// byte was seen, or `None` when the block held only other control bytes (a tab) and the scan
/// goes on after it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn after_flagged_block<const WIDTH: usize>(
    bytes: &[u8],
    offset: usize,
    line_ends: u32,
    non_ascii: u32,
) -> Option<LineScan<'_>> {
    if line_ends != 0 {
        let at = line_ends.trailing_zeros();
        let end = offset + at as usize;
        // The bytes of this block before the line end: ASCII if none has its top bit.
        let before = (1u32 << at) - 1;
        let ascii = non_ascii & before == 0;
        return Some(LineScan {
            end: Some(end),
            // Proven: `bytes[..offset]` by the invariant, the rest of the block before `at`
            // just now.
            ascii_text: ascii.then(|| ascii_text(bytes.get(..end).unwrap_or_default())),
        });
    }
    if non_ascii != 0 {
        // No proof possible any more: find the end only, after this block (it has none).
        let after = offset + WIDTH;
        let rest = bytes.get(after..).unwrap_or_default();
        return Some(LineScan {
            end: without_proof(rest).end.map(|found| after + found),
            ascii_text: None,
        });
    }
    None
}

/// 32 bytes per compare, four blocks per step.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    use super::super::line_end::array_at;
    use super::super::line_end::avx2::{BLOCK, available, line_end_mask};
    use super::{LineScan, scan_rest};
    /// Bytes per step of the fast loop: one branch for four blocks.
    const GROUP: usize = 4 * BLOCK;
    /// Signed bytes below this are flagged: controls up to CR, and every byte ≥ 0x80.
    const FLAG_BELOW: i8 = 0x0E;

    /// [`scan`] where the CPU has AVX2, else the SSE2 scan.
    #[inline(always)]
    pub(super) fn scan_checked(bytes: &[u8]) -> LineScan<'_> {
        if !available() {
            return super::sse2::scan(bytes);
        }
        // SAFETY: `available()` just confirmed the CPU supports AVX2, the only requirement of
        // `scan`.
        unsafe { scan(bytes) }
    }

    /// [`scan_long_line`](super::scan_long_line) with AVX2.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 ([`available`] returned `true`).
    #[target_feature(enable = "avx2")]
    unsafe fn scan(bytes: &[u8]) -> LineScan<'_> {
        // Invariant: `bytes[..offset]` is ASCII and holds no CR or LF.
        let mut offset = 0;
        while let Some(group) = array_at::<GROUP>(bytes, offset) {
            // SAFETY: this function's caller guarantees AVX2.
            if !unsafe { any_flagged(group) } {
                offset += GROUP;
                continue;
            }
            for block in group.chunks_exact(BLOCK) {
                let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
                    // Never (the blocks are exact); the plain scan would still be right.
                    return scan_rest(bytes, offset);
                };
                // SAFETY: this function's caller guarantees AVX2.
                let line_ends = unsafe { line_end_mask(block) };
                // SAFETY: as above.
                let non_ascii = unsafe { non_ascii_mask(block) };
                if let Some(found) =
                    super::after_flagged_block::<BLOCK>(bytes, offset, line_ends, non_ascii)
                {
                    return found;
                }
                offset += BLOCK;
            }
        }
        // Fewer than 128 bytes left (`bytes[..offset]` still ASCII without a line end).
        scan_rest(bytes, offset)
    }

    /// The 32 bytes at `at` of `group`, loaded.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, and `at + 32 <= 128`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load(group: &[u8; GROUP], at: usize) -> __m256i {
        debug_assert!(at + BLOCK <= GROUP);
        // SAFETY: `group` is a reference to 128 initialised bytes and the caller keeps
        // `at + 32` within them, so the 32-byte read stays inside; `_mm256_loadu_si256` accepts
        // any alignment.
        unsafe { _mm256_loadu_si256(group.as_ptr().add(at).cast()) }
    }

    /// Whether any byte of `group` is flagged (a control up to CR, or ≥ 0x80).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn any_flagged(group: &[u8; GROUP]) -> bool {
        // SAFETY: the caller guarantees AVX2; every `at` is a multiple of 32 below 128.
        unsafe {
            let limit = _mm256_set1_epi8(FLAG_BELOW);
            let a = _mm256_cmpgt_epi8(limit, load(group, 0));
            let b = _mm256_cmpgt_epi8(limit, load(group, BLOCK));
            let c = _mm256_cmpgt_epi8(limit, load(group, 2 * BLOCK));
            let d = _mm256_cmpgt_epi8(limit, load(group, 3 * BLOCK));
            let any = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
            _mm256_movemask_epi8(any) != 0
        }
    }

    /// Bit `i` set when byte `i` of `block` is ≥ 0x80 (its top bit, which `movemask` gathers).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn non_ascii_mask(block: &[u8; BLOCK]) -> u32 {
        // SAFETY: `block` is a reference to 32 initialised bytes, so the 32-byte read from its
        // start stays inside it, and `_mm256_loadu_si256` accepts any alignment. The caller
        // guarantees AVX2, the only feature these intrinsics need.
        unsafe {
            // All 32 bits are used: reinterpret, do not sign-extend.
            _mm256_movemask_epi8(_mm256_loadu_si256(block.as_ptr().cast())) as u32
        }
    }
}

/// 16 bytes per compare, eight blocks per step: the AVX2 scan's structure with SSE2, which every
/// x86_64 CPU has (for those without AVX2).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    use super::super::line_end::array_at;
    use super::super::line_end::sse2::{BLOCK, line_end_mask};
    use super::{LineScan, scan_rest};
    /// Bytes per step of the fast loop: one branch for eight blocks (128 bytes, as with AVX2).
    const GROUP: usize = 8 * BLOCK;
    /// Signed bytes below this are flagged: controls up to CR, and every byte ≥ 0x80.
    const FLAG_BELOW: i8 = 0x0E;

    /// [`scan_long_line`](super::scan_long_line) with SSE2.
    pub(super) fn scan(bytes: &[u8]) -> LineScan<'_> {
        // Invariant: `bytes[..offset]` is ASCII and holds no CR or LF.
        let mut offset = 0;
        while let Some(group) = array_at::<GROUP>(bytes, offset) {
            if !any_flagged(group) {
                offset += GROUP;
                continue;
            }
            for block in group.chunks_exact(BLOCK) {
                let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
                    // Never (the blocks are exact); the plain scan would still be right.
                    return scan_rest(bytes, offset);
                };
                let line_ends = line_end_mask(block);
                let non_ascii = non_ascii_mask(block);
                if let Some(found) =
                    super::after_flagged_block::<BLOCK>(bytes, offset, line_ends, non_ascii)
                {
                    return found;
                }
                offset += BLOCK;
            }
        }
        // Fewer than 128 bytes left (`bytes[..offset]` still ASCII without a line end).
        scan_rest(bytes, offset)
    }

    /// The 16 bytes at `at` of `group`, loaded.
    ///
    /// # Safety
    ///
    /// `at + 16 <= 128`.
    #[inline(always)]
    unsafe fn load(group: &[u8; GROUP], at: usize) -> __m128i {
        debug_assert!(at + BLOCK <= GROUP);
        // SAFETY: `group` is a reference to 128 initialised bytes and the caller keeps `at + 16`
        // within them, so the 16-byte read stays inside; `_mm_loadu_si128` accepts any alignment
        // and needs only SSE2, which every x86_64 target has (it is in the baseline
        // `target_feature` set of all of them), so it is available wherever this is compiled.
        unsafe { _mm_loadu_si128(group.as_ptr().add(at).cast()) }
    }

    /// Whether any byte of `group` is flagged (a control up to CR, or ≥ 0x80).
    #[inline(always)]
    fn any_flagged(group: &[u8; GROUP]) -> bool {
        // SAFETY: every `at` is a multiple of 16 below 128 (what `load` asks); the intrinsics
        // need only SSE2, in the baseline of every x86_64 target (see `load`).
        unsafe {
            let limit = _mm_set1_epi8(FLAG_BELOW);
            let flagged = |at| _mm_cmpgt_epi8(limit, load(group, at));
            let first = _mm_or_si128(
                _mm_or_si128(flagged(0), flagged(BLOCK)),
                _mm_or_si128(flagged(2 * BLOCK), flagged(3 * BLOCK)),
            );
            let second = _mm_or_si128(
                _mm_or_si128(flagged(4 * BLOCK), flagged(5 * BLOCK)),
                _mm_or_si128(flagged(6 * BLOCK), flagged(7 * BLOCK)),
            );
            _mm_movemask_epi8(_mm_or_si128(first, second)) != 0
        }
    }

    /// Bit `i` set when byte `i` of `block` is ≥ 0x80 (its top bit, which `movemask` gathers).
    #[inline(always)]
    fn non_ascii_mask(block: &[u8; BLOCK]) -> u32 {
        // SAFETY: `block` is a reference to 16 initialised bytes, so the 16-byte read from its
        // start stays inside it, and `_mm_loadu_si128` accepts any alignment; the intrinsics
        // need only SSE2, in the baseline of every x86_64 target (see `load`).
        unsafe {
            // Only the low 16 bits can be set; the sign extension of `i32` never happens.
            _mm_movemask_epi8(_mm_loadu_si128(block.as_ptr().cast())) as u32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sse::MIRI_STRIDE;
    use proptest::prelude::*;

    /// What the search must say: the first CR or LF, and the line (all of it without an end) as
    /// text if it is ASCII.
    fn expected(bytes: &[u8]) -> (Option<usize>, Option<&str>) {
        let end = bytes.iter().position(|&b| b == b'\r' || b == b'\n');
        let line = &bytes[..end.unwrap_or(bytes.len())];
        (
            end,
            line.is_ascii().then(|| std::str::from_utf8(line).unwrap()),
        )
    }

    fn found(bytes: &[u8]) -> (Option<usize>, Option<&str>) {
        let scan = scan_long_line(bytes);
        // The scan of CPUs without AVX2, whatever this one has.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(sse2::scan(bytes), scan, "the SSE2 scan agrees");
        let piece = scan_line_piece(bytes);
        assert_eq!(piece.end, scan.end, "the piece search finds the same end");
        if bytes.len() >= crate::network::sse::swar::SHORT {
            assert_eq!(piece.ascii_text, scan.ascii_text);
        }
        (scan.end, scan.ascii_text)
    }

    #[test]
    fn every_flagged_byte_at_every_position_of_every_length() {
        // Flagged bytes that end a line, that stop the proof, and that do neither (tab, NUL,
        // the control just past CR, DEL).
        let specials = [b'\r', b'\n', 0x80, 0xFF, 0xC3, b'\t', 0, 0x0E, 0x7F, 0x0B];
        for len in (0..300).step_by(MIRI_STRIDE) {
            let mut bytes = vec![b'a'; len];
            bytes.push(b'\n');
            assert_eq!(found(&bytes), expected(&bytes), "len {len}");
            assert_eq!(
                found(&bytes[..len]),
                expected(&bytes[..len]),
                "len {len}, no line end"
            );
            for at in (0..len).step_by(MIRI_STRIDE) {
                for special in specials {
                    bytes[at] = special;
                    assert_eq!(
                        found(&bytes),
                        expected(&bytes),
                        "len {len}, {special:#x} at {at}"
                    );
                    bytes[at] = b'a';
                }
            }
        }
    }

    #[test]
    fn a_non_ascii_byte_after_the_line_end_does_not_matter() {
        let mut bytes = vec![b'x'; 1000];
        bytes[500] = b'\n';
        bytes[501] = 0xE9;
        bytes[999] = 0x80;
        let found = scan_long_line(&bytes);
        assert_eq!(found.end, Some(500));
        assert_eq!(found.ascii_text.map(str::len), Some(500));
    }

    #[test]
    fn a_long_multi_byte_line_still_has_its_end_found() {
        let line = "caf\u{e9} \u{4e2d}\u{6587} ".repeat(200);
        let bytes = format!("{line}\r\nnext").into_bytes();
        let found = scan_long_line(&bytes);
        assert_eq!(found.end, Some(line.len()));
        assert_eq!(found.ascii_text, None);
    }

    #[test]
    fn the_fallback_finds_ends_without_proof() {
        let bytes = b"data: plain ascii\nrest";
        assert_eq!(
            without_proof(bytes),
            LineScan {
                end: Some(17),
                ascii_text: None
            }
        );
        assert_eq!(without_proof(b"no end").end, None);
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_definition(
            bytes in proptest::collection::vec(
                prop_oneof![
                    200 => b'a'..=b'z',
                    2 => any::<u8>(),
                    1 => Just(b'\r'),
                    1 => Just(b'\n'),
                    1 => Just(b'\t'),
                    1 => Just(0x80u8),
                ],
                0..1200,
            ),
            start in 0usize..64,
        ) {
            let bytes = bytes.get(start..).unwrap_or_default();
            prop_assert_eq!(found(bytes), expected(bytes));
        }
    }
}
