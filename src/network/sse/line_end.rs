//! [`find_line_end`]: where the next line of an event stream ends.
//!
//! Most lines of real streams are short: IDs, event types, data lines of tens to a couple of
//! hundred bytes (an OpenAI delta is ~150). For them the call into `memchr2` costs more than
//! the search: it picks its implementation through a function pointer and sets up for long
//! inputs (measured: ~60 instructions on a 47-byte line, ~100 on a 150-byte one). So on x86_64
//! [`find_line_end`] checks the first 256 bytes itself, 32 bytes per step with AVX2 where the
//! CPU has it (detected at run time), else with SSE2 (in every x86_64 CPU), and only hands a
//! longer line to `memchr2`, whose unrolled loop wins there. For a data line expected to be
//! longer than that, the inline look is wasted: the parser (which picks by what the stream's
//! previous data lines were like) uses `long_line`'s search instead, which also proves the line
//! ASCII; so do the pieces of a line being streamed across chunks. Elsewhere than x86_64 the
//! search is `memchr2`. Inputs under 16 bytes (tiny chunks, the end of a chunk) are searched a
//! 64-bit word or two at a time instead (see `swar`): a 7-byte piece was ~50 instructions in a
//! byte loop.
//!
//! Checking the CPU's features and calling the AVX2 search for every line cost more than the
//! search itself (~40 instructions around ~15 on a 47-byte line). So the parser's line loop is
//! compiled three times, generic over a [`LineEndSearch`] picked once per chunk by
//! [`with_best_search`]: for chunks under 16 bytes with [`Portable`], which is the search above
//! (a word check, as every search in such a chunk is); for larger chunks inside a function
//! compiled for AVX2, where the AVX2 search is inlined into it, where the CPU has AVX2, else with
//! [`PortableLarge`], the SSE2 search (x86_64) or `memchr2` (elsewhere) with no feature check per
//! line. The copies for large chunks share the loop's structure for them (the run of short
//! `data: ` lines, the rare paths out of line); only the search differs.
//!
//! The SIMD code is `unsafe` (as are `long_line` and `data_buffer`; nothing else is): unaligned
//! loads from references to fixed-size arrays, and AVX2 code run only after the CPU was seen to
//! support it. Tests compare every path with the plain loop at every position and length.

/// Inputs shorter than this are scanned a word at a time, without SIMD: for the tiny chunks some
/// servers and proxies produce, any setup costs more than it saves.
const SCALAR_SCAN_BELOW: usize = super::swar::SHORT;

/// Lines up to this long (256 bytes) count as short: [`find_line_end`] finds their ends without
/// calling `memchr2`.
pub(super) const SHORT_LINE: usize = 256;

/// The index of the first CR or LF in `bytes`, for a line expected to be short.
#[inline]
pub(super) fn find_line_end(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < SCALAR_SCAN_BELOW {
        return find_line_end_in_words(bytes);
    }
    #[cfg(target_arch = "x86_64")]
    {
        avx2::find_line_end_checked(bytes)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        memchr::memchr2(b'\r', b'\n', bytes)
    }
}

/// A way to find a short line's end, picked once per chunk rather than per line (see
/// [`with_best_search`]).
pub(super) trait LineEndSearch: Copy {
    /// Whether this search serves chunks of a few bytes (where nearly every line began in an
    /// earlier chunk), so that code compiled with it inlines what those chunks need; the search
    /// for large chunks keeps that code out of its loop.
    const SERVES_TINY_CHUNKS: bool;

    /// The index of the first CR or LF in `bytes`, for a line expected to be short.
    fn find_line_end(self, bytes: &[u8]) -> Option<usize>;
}

/// [`find_line_end`] as is: it checks the CPU's features on every call (in chunks under one
/// SIMD block, the only ones it serves, it never gets that far).
#[derive(Clone, Copy)]
pub(super) struct Portable;

impl LineEndSearch for Portable {
    // Every chunk under one SIMD block is parsed with it, whatever the CPU.
    const SERVES_TINY_CHUNKS: bool = true;

    #[inline(always)]
    fn find_line_end(self, bytes: &[u8]) -> Option<usize> {
        find_line_end(bytes)
    }
}

/// The search for chunks of at least one SIMD block where the CPU has no AVX2 (and on every
/// target but x86_64): SSE2 on x86_64 (every x86_64 CPU has it), `memchr2` elsewhere, as
/// [`find_line_end`] there, without its feature check per line.
#[derive(Clone, Copy)]
pub(super) struct PortableLarge;

impl LineEndSearch for PortableLarge {
    // Picked only for chunks of at least one block (see `with_best_search`).
    const SERVES_TINY_CHUNKS: bool = false;

    #[inline(always)]
    fn find_line_end(self, bytes: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            sse2::find_line_end(bytes)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            find_line_end(bytes)
        }
    }
}

/// Code that finds line ends and is worth compiling once per [`LineEndSearch`].
pub(super) trait WithLineEndSearch {
    /// What [`run`](Self::run) returns.
    type Output;

    /// Does the work with `search`. Implementations should be `#[inline(always)]`: that is what
    /// compiles them into [`with_best_search`]'s AVX2 function, where the AVX2 search is inlined.
    fn run<S: LineEndSearch>(self, search: S) -> Self::Output;
}

/// Runs `work`, which searches `len` bytes, with the best line-end search this CPU has. Under
/// one SIMD block (tiny chunks) every search is a word at a time anyway: [`Portable`], whatever
/// the CPU. With AVX2, `work` runs inside a function compiled for AVX2, so that the search is
/// inlined into it: no call and no feature check per line (the parser's loop spent ~40
/// instructions per line on those around a ~15-instruction search); entering that function
/// would cost tiny chunks more than it saves. Without AVX2 (and off x86_64), [`PortableLarge`].
#[inline(always)]
pub(super) fn with_best_search<W: WithLineEndSearch>(len: usize, work: W) -> W::Output {
    if len < SCALAR_SCAN_BELOW {
        return work.run(Portable);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(search) = avx2::Avx2Search::detect() {
        return avx2::run_with(search, work);
    }
    work.run(PortableLarge)
}

#[cfg(test)]
thread_local! {
    /// Set by tests that run the parser as on a CPU without AVX2: while it is set, `avx2::available`
    /// says no on this thread, so every search, the line loop's choice and `long_line`'s scan
    /// included, takes the path such a CPU takes.
    pub(in crate::network::sse) static FORCE_PORTABLE: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

/// Whether a test asked on this thread to be treated as a CPU without AVX2 (never outside tests).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tests_force_portable() -> bool {
    #[cfg(test)]
    {
        FORCE_PORTABLE.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// Inputs shorter than one SIMD block (tiny chunks, short ID lines): a word at a time, so a
/// 7-byte piece costs one word check and a 15-byte one two, not a compare per byte. Out of
/// line: inlined at every search it enlarged the parser's main loop, which then ran slower on
/// long chunks.
#[inline(never)]
fn find_line_end_in_words(bytes: &[u8]) -> Option<usize> {
    super::swar::find_in_short(bytes, super::swar::line_end_marks)
}

/// The `N` bytes at `offset` of `bytes`, if there are that many: a fixed-size block the SIMD
/// loads may read whole.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> Option<&[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// The plain loop: the reference in tests.
#[cfg(test)]
fn find_line_end_plain(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r' || b == b'\n')
}

/// 32 bytes per step with AVX2, where the CPU has it (detected at run time).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod avx2 {
    use super::{LineEndSearch, array_at};
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };

    /// Bytes per AVX2 block.
    pub(in crate::network::sse) const BLOCK: usize = 32;

    /// How far the inline blocks look before `memchr2` takes over.
    const INLINE_SCAN: usize = super::SHORT_LINE;

    /// Whether this CPU has AVX2 (std caches the answer after the first call); in tests, no
    /// while `FORCE_PORTABLE` is set on this thread.
    #[inline(always)]
    pub(in crate::network::sse) fn available() -> bool {
        !super::tests_force_portable() && std::is_x86_feature_detected!("avx2")
    }

    /// The AVX2 line-end search; it exists only where the CPU has AVX2 ([`Self::detect`] is
    /// its only constructor), so its safe methods may run AVX2 code.
    #[derive(Clone, Copy)]
    pub(in crate::network::sse) struct Avx2Search {
        _detected: (),
    }

    impl Avx2Search {
        /// The search, if this CPU has AVX2.
        #[inline(always)]
        pub(in crate::network::sse) fn detect() -> Option<Self> {
            available().then_some(Avx2Search { _detected: () })
        }
    }

    impl LineEndSearch for Avx2Search {
        // Picked only for chunks of at least one block (see `with_best_search`).
        const SERVES_TINY_CHUNKS: bool = false;

        #[inline(always)]
        fn find_line_end(self, bytes: &[u8]) -> Option<usize> {
            if bytes.len() < super::SCALAR_SCAN_BELOW {
                return super::find_line_end_in_words(bytes);
            }
            // SAFETY: an `Avx2Search` exists only after `available()` returned true.
            unsafe { find_line_end(bytes) }
        }
    }

    /// `work.run(search)` compiled for AVX2.
    #[inline(always)]
    pub(super) fn run_with<W: super::WithLineEndSearch>(search: Avx2Search, work: W) -> W::Output {
        // SAFETY: `search` exists, so the CPU has AVX2 (see `Avx2Search::detect`).
        unsafe { run_compiled_for_avx2(search, work) }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2 (the `Avx2Search` argument proves it).
    #[target_feature(enable = "avx2")]
    unsafe fn run_compiled_for_avx2<W: super::WithLineEndSearch>(
        search: Avx2Search,
        work: W,
    ) -> W::Output {
        work.run(search)
    }

    /// [`find_line_end`] where the CPU has AVX2, else the SSE2 scan.
    #[inline(always)]
    pub(super) fn find_line_end_checked(bytes: &[u8]) -> Option<usize> {
        match Avx2Search::detect() {
            Some(search) => search.find_line_end(bytes),
            None => super::sse2::find_line_end(bytes),
        }
    }

    /// The first CR or LF in `bytes`.
    ///
    /// Inlined only into code compiled for AVX2 (see [`run_with`]); a call elsewhere.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 ([`available`] returned `true`).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn find_line_end(bytes: &[u8]) -> Option<usize> {
        let mut offset = 0;
        while offset < INLINE_SCAN {
            let Some(block) = array_at::<BLOCK>(bytes, offset) else {
                // Fewer than 32 bytes left: the SSE2 scan handles short inputs.
                let rest = bytes.get(offset..)?;
                return super::sse2::find_line_end(rest).map(|found| offset + found);
            };
            // SAFETY: this function's caller guarantees AVX2.
            let mask = unsafe { line_end_mask(block) };
            if mask != 0 {
                return Some(offset + mask.trailing_zeros() as usize);
            }
            offset += BLOCK;
        }
        let rest = bytes.get(offset..)?;
        memchr::memchr2(b'\r', b'\n', rest).map(|found| offset + found)
    }

    /// Bit `i` set when byte `i` of `block` is CR or LF.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in crate::network::sse) unsafe fn line_end_mask(block: &[u8; BLOCK]) -> u32 {
        // SAFETY: `block` is a reference to 32 initialised bytes, so the 32-byte read from its
        // start stays inside it, and `_mm256_loadu_si256` accepts any alignment. The caller
        // guarantees AVX2, the only feature these intrinsics need.
        unsafe {
            let bytes = _mm256_loadu_si256(block.as_ptr().cast());
            let cr = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'\r' as i8));
            let lf = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'\n' as i8));
            // All 32 bits are used: reinterpret, do not sign-extend.
            _mm256_movemask_epi8(_mm256_or_si256(cr, lf)) as u32
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn matches_the_plain_loop_when_the_cpu_has_avx2() {
            if !available() {
                return;
            }
            let mut bytes = vec![b'x'; 600];
            for at in (0..600).step_by(7) {
                bytes[at] = if at % 2 == 0 { b'\r' } else { b'\n' };
                for start in [0, 1, 15, 31, 33] {
                    let hay = &bytes[start.min(at)..];
                    assert_eq!(
                        find_line_end_checked(hay),
                        super::super::find_line_end_plain(hay),
                        "terminator at {at}, start {start}"
                    );
                }
                bytes[at] = b'x';
            }
            let mut block = [0x8Du8; BLOCK];
            block[31] = b'\n';
            // SAFETY: AVX2 was detected above.
            assert_eq!(unsafe { line_end_mask(&block) }, 1 << 31);
        }
    }
}

/// 16 bytes per step with SSE2, which every x86_64 CPU has.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod sse2 {
    use super::array_at;
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Bytes per SSE2 block.
    pub(in crate::network::sse) const BLOCK: usize = 16;

    /// How far the inline blocks look before `memchr2` takes over.
    const INLINE_SCAN: usize = super::SHORT_LINE;

    /// Out of line: it would bloat the parser's loop, where most lines take the other paths.
    #[inline(never)]
    pub(super) fn find_line_end(bytes: &[u8]) -> Option<usize> {
        if bytes.len() < BLOCK {
            return super::find_line_end_in_words(bytes);
        }
        let mut offset = 0;
        // Two blocks per step: one branch per 32 bytes.
        while offset < INLINE_SCAN {
            let Some((first, second)) =
                array_at::<BLOCK>(bytes, offset).zip(array_at::<BLOCK>(bytes, offset + BLOCK))
            else {
                break;
            };
            let mask = line_end_mask(first) | line_end_mask(second) << BLOCK;
            if mask != 0 {
                return Some(offset + mask.trailing_zeros() as usize);
            }
            offset += 2 * BLOCK;
        }
        if offset >= INLINE_SCAN {
            let rest = bytes.get(offset..)?;
            return memchr::memchr2(b'\r', b'\n', rest).map(|found| offset + found);
        }
        // Fewer than 32 bytes left: a block if there is one, then the last 16 bytes, minus those
        // already checked.
        if let Some(block) = array_at::<BLOCK>(bytes, offset) {
            let mask = line_end_mask(block);
            if mask != 0 {
                return Some(offset + mask.trailing_zeros() as usize);
            }
            offset += BLOCK;
        }
        let last_start = bytes.len().checked_sub(BLOCK)?;
        let unchecked =
            line_end_mask(array_at::<BLOCK>(bytes, last_start)?) >> (offset - last_start);
        (unchecked != 0).then(|| offset + unchecked.trailing_zeros() as usize)
    }

    /// Bit `i` set when byte `i` of `block` is CR or LF.
    #[inline(always)]
    pub(in crate::network::sse) fn line_end_mask(block: &[u8; BLOCK]) -> u32 {
        // SAFETY: `block` is a reference to 16 initialised bytes, so the 16-byte read from its
        // start stays inside it, and `_mm_loadu_si128` accepts any alignment. The intrinsics only
        // need SSE2, which every x86_64 target has (it is in the baseline `target_feature` set
        // of all of them), so they are always available where this module is compiled.
        unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().cast());
            let cr = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\r' as i8));
            let lf = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\n' as i8));
            // Only the low 16 bits can be set; the sign extension of `i32` never happens.
            _mm_movemask_epi8(_mm_or_si128(cr, lf)) as u32
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn matches_the_plain_loop_at_every_position_and_length() {
            for len in (0..300).step_by(crate::network::sse::MIRI_STRIDE) {
                let mut bytes = vec![b'a'; len];
                assert_eq!(find_line_end(&bytes), None, "len {len}");
                for at in (0..len).step_by(crate::network::sse::MIRI_STRIDE) {
                    bytes[at] = b'\r';
                    assert_eq!(find_line_end(&bytes), Some(at), "len {len}, at {at}");
                    bytes[at] = b'a';
                }
            }
        }

        #[test]
        fn the_mask_marks_exactly_the_line_ends() {
            let mut block = [b'x'; BLOCK];
            assert_eq!(line_end_mask(&block), 0);
            block[0] = b'\r';
            block[15] = b'\n';
            block[7] = 0x8D; // a byte whose low bits are CR's
            block[8] = 0x0A | 0x80;
            assert_eq!(line_end_mask(&block), 1 | 1 << 15);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::sse::MIRI_STRIDE;
    use proptest::prelude::*;

    #[test]
    fn finds_the_first_terminator_at_every_position_and_length() {
        for len in (0..300).step_by(MIRI_STRIDE) {
            for at in (0..len).step_by(MIRI_STRIDE) {
                for terminator in [b'\r', b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = terminator;
                    if at + 3 < len {
                        bytes[at + 3] = b'\n';
                    }
                    assert_eq!(find_line_end(&bytes), Some(at), "len {len}, at {at}");
                }
            }
            assert_eq!(find_line_end(&vec![b'a'; len]), None, "len {len}");
        }
    }

    #[test]
    fn a_sub_slice_never_looks_outside_itself() {
        let bytes = b"\n0123456789abcdefghijklmnopqrstuvwxyz0123456789\n";
        for start in 1..bytes.len() - 1 {
            for end in start..bytes.len() - 1 {
                assert_eq!(find_line_end(&bytes[start..end]), None);
            }
        }
    }

    /// Every line end of `bytes`, found with whichever search `with_best_search` picks.
    struct AllLineEnds<'a>(&'a [u8]);

    impl WithLineEndSearch for AllLineEnds<'_> {
        type Output = Vec<usize>;

        fn run<S: LineEndSearch>(self, search: S) -> Vec<usize> {
            let mut ends = Vec::new();
            let mut from = 0;
            while let Some(found) = self
                .0
                .get(from..)
                .and_then(|rest| search.find_line_end(rest))
            {
                ends.push(from + found);
                from += found + 1;
            }
            ends
        }
    }

    #[test]
    fn the_chosen_search_and_the_portable_one_find_every_line_end() {
        let mut bytes = Vec::new();
        for len in (0..300).step_by(MIRI_STRIDE) {
            bytes.extend(std::iter::repeat_n(b'x', len));
            bytes.push(if len % 3 == 0 { b'\r' } else { b'\n' });
        }
        let plain: Vec<usize> = (0..bytes.len())
            .filter(|&i| matches!(bytes[i], b'\r' | b'\n'))
            .collect();
        for start in [0, 1, 7, 40] {
            let hay = &bytes[start..];
            let expected: Vec<usize> = plain.iter().filter_map(|&i| i.checked_sub(start)).collect();
            assert_eq!(with_best_search(hay.len(), AllLineEnds(hay)), expected);
            FORCE_PORTABLE.with(|force| force.set(true));
            assert_eq!(with_best_search(hay.len(), AllLineEnds(hay)), expected);
            FORCE_PORTABLE.with(|force| force.set(false));
            assert_eq!(AllLineEnds(hay).run(Portable), expected);
            assert_eq!(AllLineEnds(hay).run(PortableLarge), expected);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_plain_loop(bytes in proptest::collection::vec(
            prop_oneof![
                60 => any::<u8>(),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                2 => Just(0x0B),
                2 => Just(0x0C),
            ], 0..600
        )) {
            prop_assert_eq!(find_line_end(&bytes), find_line_end_plain(&bytes));
            for end in 0..bytes.len().min(16) {
                let short = &bytes[..end];
                prop_assert_eq!(find_line_end_in_words(short), find_line_end_plain(short));
            }
            for start in [1usize, 7, 16, 33] {
                if let Some(tail) = bytes.get(start..) {
                    prop_assert_eq!(find_line_end(tail), find_line_end_plain(tail));
                }
            }
        }
    }
}
