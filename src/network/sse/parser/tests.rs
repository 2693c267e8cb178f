use super::block::{parse_retry_millis, split_field};
use super::decode::{lossy_len, push_lossy};
use super::followed::strip_prefix_short;
use super::*;
use crate::network::sse::event::SseEventRef;

/// The parser's integration suite, run again here as on a CPU without AVX2 (which only a test
/// inside the crate can choose): every split, every piece size, flushed or not, every size
/// limit, the runs of short data lines, on the line loops and scans such a CPU takes.
#[path = "../../../../tests/sse_parser/suite.rs"]
mod suite_without_avx2;

/// The API the suite tests, for [`suite_without_avx2`].
use crate::network::sse;

/// Runs one parse of [`suite_without_avx2`] as on a CPU without AVX2.
fn on_the_search<T>(parse: impl FnOnce() -> T) -> T {
    /// Puts the switch back as it was, even when `parse` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            super::super::line_end::FORCE_PORTABLE.with(|force| force.set(self.0));
        }
    }
    let _restore =
        Restore(super::super::line_end::FORCE_PORTABLE.with(|force| force.replace(true)));
    parse()
}

/// [`suite_without_avx2`]'s property tests' configuration: `cases` cases, and the suite's own
/// file of failure seeds (proptest would look for it under `src/` for code compiled here).
fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/sse_parser/suite.proptest-regressions",
            ),
        )),
        ..proptest::test_runner::Config::with_cases(cases)
    }
}

/// The events of `stream` fed in `chunk`-byte pieces.
fn events_in_chunks(stream: &[u8], chunk: usize) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in stream.chunks(chunk) {
        parser.feed(piece, &mut events).expect("within the limit");
    }
    parser.finish(&mut events).expect("finish");
    events
}

#[test]
fn the_portable_line_loop_parses_like_the_avx2_one() {
    let long = "y".repeat(700);
    let stream = format!(
        "\u{feff}event: delta\r\nid: 1\r\ndata: {long}\r\ndata: caf\u{e9}\r\n\r\n\
         : comment\nretry: 250\ndata: a\ndata:b\ndata:  c\n\n\
         event: delta\ndata: {}\ndata: \u{1F600} {long}\rdata: x\r\r\
         data: 0123456789012345678901234567890123456789\ndata\nid: 2\n\n",
        "z".repeat(40),
    );
    let mut bytes = stream.into_bytes();
    bytes.extend_from_slice(b"data: in\xFFvalid\ndata: 0123456789abcdef\xC3\n\n");
    for chunk in [1, 7, 15, 16, 17, 33, 100, 4096, usize::MAX] {
        let expected = events_in_chunks(&bytes, chunk);
        assert_eq!(expected.len(), 5, "chunk {chunk}");
        super::super::line_end::FORCE_PORTABLE.with(|force| force.set(true));
        let portable = events_in_chunks(&bytes, chunk);
        super::super::line_end::FORCE_PORTABLE.with(|force| force.set(false));
        assert_eq!(portable, expected, "chunk {chunk}");
        assert_eq!(
            expected,
            events_in_chunks(&bytes, usize::MAX),
            "chunk {chunk}"
        );
    }
}

#[test]
fn split_field_takes_the_first_colon_and_one_space() {
    assert_eq!(split_field(b"a: b: c"), (&b"a"[..], &b"b: c"[..]));
    assert_eq!(split_field(b"a:  b"), (&b"a"[..], &b" b"[..]));
    assert_eq!(split_field(b"a:\tb"), (&b"a"[..], &b"\tb"[..]));
    assert_eq!(split_field(b"name"), (&b"name"[..], &b""[..]));
    assert_eq!(split_field(b":c"), (&b""[..], &b"c"[..]));
}

#[test]
fn retry_values() {
    assert_eq!(parse_retry_millis(b"0"), Some(0));
    assert_eq!(parse_retry_millis(b"03000"), Some(3000));
    assert_eq!(
        parse_retry_millis(b"99999999999999999999999"),
        Some(u64::MAX)
    );
    for bad in [&b""[..], b"+5", b"-1", b" 5", b"5ms", b"1e3", b"\xd9\xa3"] {
        assert_eq!(parse_retry_millis(bad), None, "{bad:?}");
    }
}

#[test]
fn lossy_helpers_match_std() {
    for bytes in [
        &b"ok"[..],
        b"\xff",
        b"a\xe2\x82b",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80x",
    ] {
        let expected = String::from_utf8_lossy(bytes);
        let mut pushed = String::new();
        push_lossy(&mut pushed, bytes);
        assert_eq!(pushed, expected);
        assert_eq!(lossy_len(bytes), expected.len());
    }
}

#[test]
fn borrowed_single_line_data_is_not_copied() {
    let chunk = b"event: x\ndata: hello\n\ndata: a\ndata: b\n\nid: 1\ndata: c\nid: 2\n\n";
    let inside = chunk.as_ptr_range();
    let mut seen = Vec::new();
    let mut parser = SseParser::new();
    parser
        .feed_borrowed(chunk, &mut |event: SseEventRef<'_>| {
            let uncopied = inside.contains(&event.data().as_ptr());
            seen.push((event.data().to_owned(), uncopied));
        })
        .unwrap();
    let expected = [("hello", true), ("a\nb", false), ("c", false)];
    assert_eq!(
        seen,
        expected.map(|(data, uncopied)| (data.to_owned(), uncopied))
    );
    assert_eq!(parser.last_event_id(), "2");
}

#[test]
fn a_large_data_buffer_is_kept_only_through_a_run_of_large_events() {
    let large = format!("data: {}\n\n", "x".repeat(RETAINED_BUFFER_CAPACITY + 1));
    let mut parser = SseParser::new();
    let feed = |parser: &mut SseParser, event: &str| {
        let mut count = 0;
        for chunk in event.as_bytes().chunks(4096) {
            parser
                .feed_borrowed(chunk, &mut |_: SseEventRef<'_>| count += 1)
                .unwrap();
        }
        assert_eq!(count, 1);
        parser.data.capacity()
    };
    assert!(feed(&mut parser, "data: small\n\n") <= RETAINED_BUFFER_CAPACITY);
    assert!(
        feed(&mut parser, &large) <= RETAINED_BUFFER_CAPACITY,
        "a lone large event"
    );
    let kept = feed(&mut parser, &large);
    assert!(
        kept > RETAINED_BUFFER_CAPACITY,
        "the second of a run keeps it"
    );
    let buffer = parser.data.as_ptr();
    assert_eq!(feed(&mut parser, &large), kept);
    assert_eq!(parser.data.as_ptr(), buffer, "reused, not reallocated");
    assert!(feed(&mut parser, "data: small\n\n") <= RETAINED_BUFFER_CAPACITY);
    // A run broken by a reset starts over.
    feed(&mut parser, &large);
    parser.reset();
    assert!(feed(&mut parser, &large) <= RETAINED_BUFFER_CAPACITY);
}

#[test]
fn short_prefixes_are_compared_exactly_at_every_length() {
    let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
    for len in 0..=text.len() {
        let prefix = &text[..len];
        assert_eq!(strip_prefix_short(&text, prefix), Some(&text[len..]));
        assert_eq!(
            strip_prefix_short(prefix, &text),
            (len == text.len()).then_some(&[][..])
        );
        for wrong in 0..len {
            let mut other = prefix.to_vec();
            other[wrong] ^= 0x20;
            assert_eq!(
                strip_prefix_short(&text, &other),
                None,
                "len {len}, byte {wrong}"
            );
        }
    }
}

#[test]
fn debug_hides_buffer_contents() {
    let mut parser = SseParser::new();
    parser.feed(b"data: secret", &mut |_| {}).unwrap();
    let debug = format!("{parser:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(debug.contains("partial_line_len: 12"), "{debug}");
}

#[test]
fn a_line_repeating_the_recent_type_is_compared_not_buffered() {
    let mut parser = SseParser::new();
    parser
        .feed(
            b"event: delta
data: 1

event: d",
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(
        parser.partial,
        Partial::RecentType(TypeLine {
            spaced: true,
            matched: 1
        })
    );
    assert!(parser.line.is_empty());
    parser.feed(b"el", &mut |_| {}).unwrap();
    parser.feed(b"t", &mut |_| {}).unwrap();
    assert!(format!("{parser:?}").contains("partial_line_len: 11"));
    // Parting from the type puts the line into the buffer, as if it had been there all along.
    parser.feed(b"x", &mut |_| {}).unwrap();
    assert_eq!(parser.partial, Partial::Buffered);
    assert_eq!(parser.line, b"event: deltx");
    let mut events = Vec::new();
    parser
        .feed(
            b"
data: 2

",
            &mut events,
        )
        .unwrap();
    assert_eq!(events, [SseEvent::new("deltx", "2")]);
}

#[test]
fn a_line_starting_like_a_field_name_is_compared_not_buffered() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(b"data: 1\n\nda", &mut events).unwrap();
    let data_start = NameStart {
        field: FollowedField::Data,
        matched: 2,
    };
    assert_eq!(parser.partial, Partial::FieldName(data_start));
    assert!(parser.line.is_empty());
    assert!(format!("{parser:?}").contains("partial_line_len: 2"));
    // The name and its colon, then the space: the value streams from the next byte.
    parser.feed(b"ta:", &mut events).unwrap();
    assert_eq!(
        parser.partial,
        Partial::FieldName(NameStart {
            matched: 5,
            ..data_start
        })
    );
    parser.feed(b" 2", &mut events).unwrap();
    assert!(matches!(parser.partial, Partial::DataValue(_)));
    assert!(parser.line.is_empty());
    // Parting from the name puts the line into the buffer, as if it had been there all along.
    parser.feed(b"\n\ndat", &mut events).unwrap();
    parser.feed(b"e: 3\n", &mut events).unwrap();
    assert_eq!(parser.partial, Partial::Buffered);
    parser.feed(b"dat", &mut events).unwrap();
    parser.feed(b"e", &mut events).unwrap();
    assert_eq!(parser.partial, Partial::Buffered);
    assert_eq!(parser.line, b"date");
    // An `event` name is followed only once there is a recent type to compare the value with.
    parser
        .feed(b"\n\nevent: delta\ndata: 4\n\nev", &mut events)
        .unwrap();
    assert_eq!(
        parser.partial,
        Partial::FieldName(NameStart {
            field: FollowedField::Event,
            matched: 2
        })
    );
    parser.feed(b"ent:d", &mut events).unwrap();
    assert_eq!(
        parser.partial,
        Partial::RecentType(TypeLine {
            spaced: false,
            matched: 1
        })
    );
    parser.feed(b"elta\ndata: 5\n\n", &mut events).unwrap();
    assert_eq!(
        events,
        [
            SseEvent::new("message", "1"),
            SseEvent::new("message", "2"),
            SseEvent::new("delta", "4"),
            SseEvent::new("delta", "5"),
        ]
    );
    let mut fresh = SseParser::new();
    fresh.feed(b"ev", &mut events).unwrap();
    assert_eq!(fresh.partial, Partial::Buffered);
    assert_eq!(fresh.line, b"ev");
}

/// `committed_id_fields` counts every `id` field a dispatch commits, its value repeating the ID
/// or not, on every path that reads a field (whole lines, fields split across chunks, one byte
/// at a time), and nothing else: not an `id` holding NUL (WHATWG ignores it), not one in a
/// block still open, not one a `reset` dropped, not `set_last_event_id`.
#[test]
fn committed_id_fields_count_each_committed_id_field_whatever_its_value() {
    let stream: &[u8] = b"id: 7\ndata: a\n\nid: 7\ndata: b\n\nid\n\nid: 7\0x\ndata: c\n\nid: a-long-event-id-that-is-not-inline-0123456789\n\nid: a-long-event-id-that-is-not-inline-0123456789\ndata: d\n\nid: 9\n";
    for piece in [stream.len(), 4096, 7, 1] {
        let mut parser = SseParser::new();
        let mut counts = Vec::new();
        for chunk in stream.chunks(piece) {
            parser
                .feed_borrowed(chunk, &mut |event: SseEventRef<'_>| {
                    counts.push((event.data().to_owned(), event.committed_id_fields()));
                })
                .unwrap();
        }
        let expected = [("a", 1), ("b", 2), ("c", 3), ("d", 5)];
        assert_eq!(
            counts,
            expected.map(|(data, n)| (data.to_owned(), n)),
            "pieces of {piece}"
        );
        // The open block's `id: 9` is buffered, not committed.
        assert_eq!(parser.committed_id_fields(), 5, "pieces of {piece}");
        parser.reset();
        parser.set_last_event_id("user");
        parser
            .feed_borrowed(b"data: e\n\n", &mut |event: SseEventRef<'_>| {
                assert_eq!(event.last_event_id(), "user");
                assert_eq!(event.committed_id_fields(), 5, "pieces of {piece}");
            })
            .unwrap();
        assert_eq!(parser.committed_id_fields(), 5, "pieces of {piece}");
    }
}
