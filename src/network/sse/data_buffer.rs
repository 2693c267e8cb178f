//! [`DataBuffer`]: an event's data as it is collected, and how much of it is already known to be
//! text.
//!
//! The data is raw bytes until dispatch, where it is checked as UTF-8. For a large event that
//! arrived in many pieces that check is a pass over the whole buffer, long after the pieces left
//! the cache. But the pieces of a long line are searched for the line end anyway, and that search
//! proves a piece ASCII on the way (see `long_line`): such a piece is appended as `&str`, and the
//! buffer keeps the length of its prefix made only of text. At dispatch only what follows that
//! prefix is checked — nothing, for a long ASCII line fed in network-sized chunks.
//!
//! The invariant — `bytes[..text_len]` is valid UTF-8 — is kept by this type alone: the bytes
//! can only be appended to, cleared or taken (which resets `text_len`), and `text_len` only
//! grows over a `&str` appended right at its end or over bytes just checked. Joining two valid
//! UTF-8 sequences gives a valid one (each ends with a complete character), so a text prefix
//! followed by a checked tail is text.

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
    /// Appends raw bytes (the text prefix does not grow).
    #[inline(always)]
    pub(super) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends one raw byte.
    #[inline(always)]
    pub(super) fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
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

    /// Reserves room for `additional` more bytes.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.bytes.reserve(additional);
    }

    /// Reserves room for exactly `additional` more bytes.
    pub(super) fn reserve_exact(&mut self, additional: usize) {
        self.bytes.reserve_exact(additional);
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
    /// checked.
    #[inline]
    pub(super) fn text(&self) -> Option<&str> {
        // Fails closed: were the prefix ever longer than the bytes, nothing would be text.
        let tail = self.bytes.get(self.text_len..)?;
        simdutf8::basic::from_utf8(tail).ok()?;
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
        // SAFETY: the only caller, `text`, returns this only when the bytes after `text_len`
        // were just checked valid; `bytes[..text_len]` is valid UTF-8 by the type's
        // invariant (module docs); and a valid sequence followed by a valid one is valid.
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }
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
