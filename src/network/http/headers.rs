//! [`HeaderMap`]: ordered, case-insensitive, multi-valued header fields.

use std::fmt;

/// Header fields in the order they were added; names compare case-insensitively and keep the
/// spelling they were given; a name may have several values. Two maps are equal when they hold
/// the same fields in the same order, spelled the same way. `Debug` hides credential values
/// (`Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`).
///
/// ```
/// use kdnet::network::http::HeaderMap;
///
/// let mut h = HeaderMap::new();
/// h.append("Set-Cookie", "a=1");
/// h.append("set-cookie", "b=2");
/// h.set("Content-Type", "text/plain");
/// assert_eq!(h.get("content-type"), Some("text/plain"));
/// assert_eq!(h.get_all("SET-COOKIE").collect::<Vec<_>>(), ["a=1", "b=2"]);
/// ```
#[derive(Default, PartialEq, Eq)]
pub struct HeaderMap {
    /// Every name and value back to back, in order: one allocation for the whole map rather
    /// than two per field (a long-lived stream keeps its request's and its response's headers).
    text: String,
    /// Where each field's name and value end in `text`; a field starts where the previous one
    /// ends. Two equal maps have equal `text` and `fields`, so the derived equality holds.
    fields: Vec<FieldEnds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldEnds {
    name: u32,
    value: u32,
}

impl Clone for HeaderMap {
    fn clone(&self) -> Self {
        HeaderMap {
            text: self.text.clone(),
            fields: self.fields.clone(),
        }
    }

    /// Copies `source` into this map's buffers, allocating only where they are too small (the
    /// derived `clone_from` would make a new map): the client copies the session's default
    /// headers into an emptied map it kept from an earlier request.
    fn clone_from(&mut self, source: &Self) {
        self.text.clone_from(&source.text);
        self.fields.clone_from(&source.fields);
    }
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        HeaderMap::default()
    }

    /// An empty map with room for `fields` fields of `text_bytes` bytes of names and values.
    pub(crate) fn with_capacity(fields: usize, text_bytes: usize) -> Self {
        HeaderMap {
            text: String::with_capacity(text_bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Makes room for `fields` more fields of `text_bytes` more bytes of names and values, so
    /// adding a known set of fields grows the map once.
    pub(crate) fn reserve(&mut self, fields: usize, text_bytes: usize) {
        self.fields.reserve(fields);
        self.text.reserve(text_bytes);
    }

    /// Whether the map holds no allocation (nothing to reuse).
    pub(crate) fn has_no_capacity(&self) -> bool {
        self.text.capacity() == 0 && self.fields.capacity() == 0
    }

    /// Whether the map's buffers are small enough to keep for reuse once emptied (a map made
    /// large by one request is not kept for all the following ones).
    pub(crate) fn small_enough_to_keep(&self) -> bool {
        self.text.capacity() <= MAX_KEPT_TEXT && self.fields.capacity() <= MAX_KEPT_FIELDS
    }

    /// The text bytes (names plus values) the map holds.
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let mut start = 0usize;
        self.fields
            .iter()
            .find_map(|field| self.value_if_named(&mut start, field, name))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let mut start = 0usize;
        self.fields
            .iter()
            .filter_map(move |field| self.value_if_named(&mut start, field, name))
    }

    /// The value of `field` (which starts at `start`, moved past it) if its name is `name`.
    /// Several lookups run on every response head (framing, coding, cookies, redirects,
    /// keep-alive): a name is compared only when its length matches, and the text is cut into
    /// a `str` (a char-boundary check per end) only for a field that matched.
    #[inline]
    fn value_if_named(&self, start: &mut usize, field: &FieldEnds, name: &str) -> Option<&str> {
        let (name_start, name_end) = (*start, field.name as usize);
        *start = field.value as usize;
        (name_end - name_start == name.len()
            && self.text.as_bytes()[name_start..name_end].eq_ignore_ascii_case(name.as_bytes()))
        .then(|| &self.text[name_end..*start])
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Adds a value, keeping existing values of the same name.
    ///
    /// # Panics
    ///
    /// If the map's names and values together would exceed 4 GiB.
    pub fn append(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        self.push(name.as_ref(), value.as_ref());
    }

    /// Replaces every value of `name` with `value`.
    ///
    /// # Panics
    ///
    /// As [`HeaderMap::append`]: if the map's names and values together would exceed 4 GiB.
    pub fn set(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        let name = name.as_ref();
        self.remove(name);
        self.push(name, value.as_ref());
    }

    /// Sets `name` only when it is absent; returns whether it was set.
    ///
    /// # Panics
    ///
    /// As [`HeaderMap::append`]: if the map's names and values together would exceed 4 GiB.
    pub fn set_if_absent(&mut self, name: &str, value: impl AsRef<str>) -> bool {
        if self.contains(name) {
            return false;
        }
        self.push(name, value.as_ref());
        true
    }

    /// Removes every value of `name`; returns whether anything was removed.
    pub fn remove(&mut self, name: &str) -> bool {
        let HeaderMap { text, fields } = self;
        let before = fields.len();
        // `start` walks the original layout; `cut` is how much text was removed before it.
        let mut start = 0usize;
        let mut cut = 0usize;
        fields.retain_mut(|field| {
            let (name_end, value_end) = (field.name as usize, field.value as usize);
            let (name_len, field_len) = (name_end - start, value_end - start);
            let at = start - cut;
            start = value_end;
            if text[at..at + name_len].eq_ignore_ascii_case(name) {
                text.drain(at..at + field_len);
                cut += field_len;
                false
            } else {
                // Offsets only shrink here, so they still fit in `u32`.
                field.name -= cut as u32;
                field.value -= cut as u32;
                true
            }
        });
        fields.len() != before
    }

    /// All `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.fields.iter().map(move |field| {
            let (name_end, value_end) = (field.name as usize, field.value as usize);
            let pair = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            pair
        })
    }

    /// Number of fields (a name with two values counts twice).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    /// Adds one field without taking ownership of its text (the parser's and encoder's path).
    pub(crate) fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        let value_end = self.text.len();
        let offset = |end: usize| u32::try_from(end).expect("header map text exceeds 4 GiB");
        self.fields.push(FieldEnds {
            name: offset(name_end),
            value: offset(value_end),
        });
    }
}

/// The largest text buffer [`HeaderMap::small_enough_to_keep`] accepts.
const MAX_KEPT_TEXT: usize = 1024;
/// The most field slots [`HeaderMap::small_enough_to_keep`] accepts.
const MAX_KEPT_FIELDS: usize = 32;

/// Header fields whose values are credentials: [`HeaderMap`]'s `Debug` prints `<redacted>`
/// instead of their values.
const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Whether the values of header `name` are credentials, never to be logged.
pub(crate) fn is_sensitive(name: &str) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|sensitive| sensitive.eq_ignore_ascii_case(name))
}

/// Lists the fields in order, with the values of `Authorization`, `Proxy-Authorization`,
/// `Cookie` and `Set-Cookie` shown as `<redacted>`, so requests, responses and sessions can be
/// logged without leaking credentials.
///
/// ```
/// use kdnet::network::http::HeaderMap;
///
/// let headers: HeaderMap = [("Authorization", "Bearer s3cr3t"), ("Accept", "*/*")]
///     .into_iter()
///     .collect();
/// assert_eq!(
///     format!("{headers:?}"),
///     r#"{"Authorization": "<redacted>", "Accept": "*/*"}"#
/// );
/// ```
impl fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(name, value)| {
                (
                    name,
                    if is_sensitive(name) {
                        "<redacted>"
                    } else {
                        value
                    },
                )
            }))
            .finish()
    }
}

/// Appends every `(name, value)` pair, keeping the values already there (like
/// [`HeaderMap::append`]).
///
/// ```
/// use kdnet::network::http::HeaderMap;
///
/// let mut h: HeaderMap = [("Accept", "text/html")].into_iter().collect();
/// h.extend([("accept", "text/plain"), ("X-Trace", "1")]);
/// assert_eq!(h.get_all("ACCEPT").collect::<Vec<_>>(), ["text/html", "text/plain"]);
/// assert_eq!(h.len(), 3);
/// ```
impl<N: AsRef<str>, V: AsRef<str>> Extend<(N, V)> for HeaderMap {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.fields.reserve(iter.size_hint().0);
        for (name, value) in iter {
            self.append(name, value);
        }
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut map = HeaderMap::with_capacity(iter.size_hint().0, 0);
        for (name, value) in iter {
            map.append(name, value);
        }
        map
    }
}

/// The first byte a field value may not hold (RFC 9110 §5.5: a control character other than
/// HTAB, or DEL; CR and LF above all). Every request's values are checked when it is sent, so
/// the common answer (none) is found eight bytes at a time: the value's words, its last eight
/// bytes as one more (overlapping) word, and a value shorter than a word as one word padded
/// with spaces. Only a value with a suspect word (a tab flags it too) is looked at bytewise.
pub(crate) fn forbidden_value_byte(value: &[u8]) -> Option<u8> {
    let suspect = if value.len() >= 8 {
        let mut words = value.chunks_exact(8);
        words.any(|chunk| suspect_word(load_word(chunk)))
            || (!words.remainder().is_empty() && suspect_word(load_word(&value[value.len() - 8..])))
    } else {
        suspect_word(load_short(value))
    };
    if !suspect {
        return None;
    }
    value
        .iter()
        .copied()
        .find(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
}

/// Eight bytes as a little-endian word (`bytes` holds exactly eight).
#[inline(always)]
fn load_word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

/// Fewer than eight bytes as one word, the missing bytes spaces (which a value may hold): the
/// first and last four (or two) bytes, overlapping where the value is shorter than their sum.
#[inline(always)]
fn load_short(v: &[u8]) -> u64 {
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let n = v.len();
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes(
            v[at..at + 4].try_into().unwrap_or_default(),
        ))
    };
    let u16_at = |at: usize| {
        u64::from(u16::from_le_bytes(
            v[at..at + 2].try_into().unwrap_or_default(),
        ))
    };
    match n {
        4.. => u32_at(0) | (u32_at(n - 4) << 32),
        2.. => u16_at(0) | (u16_at(n - 2) << 16) | (SPACES << 32),
        1 => u64::from(v[0]) | (SPACES << 8),
        0 => SPACES,
    }
}

/// Whether any byte of `word` is below 0x20 or is 0x7f (exact as a yes/no answer, though not
/// in which byte: a borrow may flag the byte after a real one).
#[inline(always)]
fn suspect_word(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Below 0x20 (a byte with its high bit set is not: `!word` clears it), or equal to 0x7f.
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let del = word ^ (ONES * 0x7f);
    let is_del = del.wrapping_sub(ONES) & !del & HIGH;
    below_space | is_del != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_value_bytes_are_found_wherever_they_sit() {
        let bytewise = |v: &[u8]| {
            v.iter()
                .copied()
                .find(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
        };
        // Every byte value at every position of values of 1 to 20 bytes, amid plain text,
        // tabs and bytes above 0x7f (UTF-8, allowed).
        for len in 1..=20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for filler in [b'a', b'\t', 0xc3] {
                        let mut value = vec![filler; len];
                        value[at] = b;
                        assert_eq!(
                            forbidden_value_byte(&value),
                            bytewise(&value),
                            "byte 0x{b:02x} at {at} of {len}, filler 0x{filler:02x}"
                        );
                    }
                }
            }
        }
        assert_eq!(forbidden_value_byte(b"ok\t\x7fnot\r\n"), Some(0x7f));
        assert_eq!(forbidden_value_byte(b""), None);
    }

    fn pairs(map: &HeaderMap) -> Vec<(&str, &str)> {
        map.iter().collect()
    }

    #[test]
    fn remove_keeps_the_other_fields_in_order() {
        let mut map: HeaderMap = [
            ("A", "1"),
            ("Set-Cookie", "x=1"),
            ("b", ""),
            ("SET-COOKIE", "y=2"),
            ("Ü-name", "välue"),
        ]
        .into_iter()
        .collect();
        assert!(map.remove("set-cookie"));
        assert_eq!(pairs(&map), [("A", "1"), ("b", ""), ("Ü-name", "välue")]);
        assert!(!map.remove("set-cookie"));
        assert!(map.remove("A"));
        assert!(map.remove("Ü-NAME"));
        assert_eq!(pairs(&map), [("b", "")]);
        assert_eq!(map.get("B"), Some(""));
        assert!(map.remove("b"));
        assert!(map.is_empty());
        assert_eq!(map, HeaderMap::new());
    }

    #[test]
    fn maps_with_the_same_fields_are_equal_however_built() {
        let mut built = HeaderMap::new();
        built.append("X", "drop");
        built.append("Accept", "text/event-stream");
        built.append("x", "drop too");
        built.set("Cache-Control", "no-cache");
        built.remove("X");
        let collected: HeaderMap = [
            ("Accept", "text/event-stream"),
            ("Cache-Control", "no-cache"),
        ]
        .into_iter()
        .collect();
        assert_eq!(built, collected);
        assert_eq!(built.clone(), collected);
        assert_eq!(built.len(), 2);
    }

    #[test]
    fn set_replaces_every_value_and_keeps_the_new_spelling() {
        let mut map = HeaderMap::new();
        map.append("accept", "a");
        map.append("Other", "o");
        map.append("ACCEPT", "b");
        map.set("Accept", "c");
        assert_eq!(pairs(&map), [("Other", "o"), ("Accept", "c")]);
        assert!(!map.set_if_absent("accept", "d"));
        assert!(map.set_if_absent("New", "n"));
        assert_eq!(map.get_all("accept").collect::<Vec<_>>(), ["c"]);
        map.clear();
        assert!(map.is_empty() && map.get("new").is_none());
        assert_eq!(format!("{map:?}"), "{}");
    }
}
