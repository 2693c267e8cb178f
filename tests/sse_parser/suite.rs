//! WHATWG event-stream parsing rules, each checked with the input fed whole, byte at a time and
//! split in two at every position, through both `feed` (owned events) and `feed_borrowed`
//! (borrowed events), which must agree; property tests against a naive reference parser; writer
//! round trips.
//!
//! Run twice: as the integration test `sse_parser` (on the line-end search this CPU picks) and
//! inside the crate's unit tests as on a CPU without AVX2 (`parser/tests.rs`). Each sets the
//! `sse` path and [`super::on_the_search`], through which every parse here runs.
use std::time::Duration;

use super::sse::{
    DEFAULT_MAX_EVENT_SIZE, SseBorrowedSink, SseEvent, SseEventRef, SseParseError, SseParser,
    SseSink, SseWriter,
};
use proptest::prelude::*;

// ----- harness -----

/// Everything a sink saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Event(SseEvent),
    Comment(String),
    Retry(Duration),
}

/// Records what either kind of sink hears; borrowed events as owned copies.
#[derive(Default)]
struct Recorder(Vec<Seen>);

impl SseSink for Recorder {
    fn on_event(&mut self, event: SseEvent) {
        self.0.push(Seen::Event(event));
    }
    fn on_comment(&mut self, comment: &str) {
        self.0.push(Seen::Comment(comment.to_owned()));
    }
    fn on_retry(&mut self, retry: Duration) {
        self.0.push(Seen::Retry(retry));
    }
}

impl SseBorrowedSink for Recorder {
    fn on_event(&mut self, event: SseEventRef<'_>) {
        let owned = event.to_event();
        assert_eq!(event, owned, "a borrowed event equals its owned copy");
        self.0.push(Seen::Event(owned));
    }
    fn on_comment(&mut self, comment: &str) {
        SseSink::on_comment(self, comment);
    }
    fn on_retry(&mut self, retry: Duration) {
        SseSink::on_retry(self, retry);
    }
}

/// Which parser entry points a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    /// `feed` / `finish`.
    Owned,
    /// `feed_borrowed` / `finish_borrowed`.
    Borrowed,
}

/// The full observable result of parsing one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    seen: Vec<Seen>,
    error: Option<SseParseError>,
    last_event_id: String,
    reconnection_time: Option<Duration>,
}

impl Outcome {
    fn events(&self) -> Vec<SseEvent> {
        self.seen
            .iter()
            .filter_map(|seen| match seen {
                Seen::Event(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Options {
    flush: bool,
    comments: bool,
    max_event_size: Option<usize>,
}

impl Options {
    fn parser(self) -> SseParser {
        let mut parser = match self.max_event_size {
            Some(max) => SseParser::with_max_event_size(max),
            None => SseParser::new(),
        };
        parser.set_flush_unterminated_at_eof(self.flush);
        parser.set_report_comments(self.comments);
        parser
    }
}

const DEFAULTS: Options = Options {
    flush: false,
    comments: false,
    max_event_size: None,
};
const FLUSH: Options = Options {
    flush: true,
    comments: false,
    max_event_size: None,
};
const COMMENTS: Options = Options {
    flush: false,
    comments: true,
    max_event_size: None,
};

/// Feeds `chunks` then finishes, once with owned and once with borrowed events; asserts both
/// give the same outcome. Stops at the first error.
fn run_chunks(options: Options, chunks: &[&[u8]]) -> Outcome {
    let owned = run_chunks_with(options, chunks, Events::Owned);
    assert_eq!(
        run_chunks_with(options, chunks, Events::Borrowed),
        owned,
        "feed_borrowed disagrees with feed"
    );
    owned
}

fn run_chunks_with(options: Options, chunks: &[&[u8]], events: Events) -> Outcome {
    super::on_the_search(|| run_chunks_on_this_search(options, chunks, events))
}

fn run_chunks_on_this_search(options: Options, chunks: &[&[u8]], events: Events) -> Outcome {
    let mut parser = options.parser();
    let mut recorder = Recorder::default();
    let mut error = None;
    for chunk in chunks {
        let fed = match events {
            Events::Owned => parser.feed(chunk, &mut recorder),
            Events::Borrowed => parser.feed_borrowed(chunk, &mut recorder),
        };
        if let Err(e) = fed {
            error = Some(e);
            break;
        }
    }
    if error.is_none() {
        let finished = match events {
            Events::Owned => parser.finish(&mut recorder),
            Events::Borrowed => parser.finish_borrowed(&mut recorder),
        };
        error = finished.err();
    }
    Outcome {
        seen: recorder.0,
        error,
        last_event_id: parser.last_event_id().to_owned(),
        reconnection_time: parser.reconnection_time(),
    }
}

/// Parses `input` whole, byte at a time, and split in two at every position; asserts all agree.
fn parse_every_way(options: Options, input: &[u8]) -> Outcome {
    let whole = run_chunks(options, &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_chunks(options, &bytes), whole, "byte at a time");
    // Pieces shorter than a line take the parser's small-chunk paths.
    for size in 2..=17 {
        let pieces: Vec<&[u8]> = input.chunks(size).collect();
        assert_eq!(run_chunks(options, &pieces), whole, "{size}-byte pieces");
    }
    for split in 0..=input.len() {
        let (head, tail) = input.split_at(split);
        assert_eq!(
            run_chunks(options, &[head, tail]),
            whole,
            "split at {split}"
        );
    }
    whole
}

/// Events of `input` with default options; no error allowed.
fn events(input: &[u8]) -> Vec<SseEvent> {
    let outcome = parse_every_way(DEFAULTS, input);
    assert_eq!(outcome.error, None);
    outcome.events()
}

fn message(data: &str) -> SseEvent {
    SseEvent::new("message", data)
}

/// Each event's type and data, for comparing many events at a glance.
fn types_and_data(events: &[SseEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|event| (event.event_type(), event.data()))
        .collect()
}

// ----- spec worked examples (§9.2.6) -----

#[test]
fn data_lines_join_with_lf() {
    assert_eq!(
        events(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
        [message("YHOO\n+2\n10")]
    );
}

#[test]
fn one_space_after_colon_is_optional() {
    assert_eq!(
        events(b"data:test\n\ndata: test\n\n"),
        [message("test"), message("test")]
    );
}

#[test]
fn bare_data_line_dispatches_empty_event() {
    assert_eq!(events(b"data\n\n"), [message("")]);
    assert_eq!(events(b"data:\n\n"), [message("")]);
}

#[test]
fn two_bare_data_lines_give_one_lf() {
    assert_eq!(events(b"data\ndata\n\n"), [message("\n")]);
    assert_eq!(events(b"data:\ndata:x\n\n"), [message("\nx")]);
}

#[test]
fn spec_example_with_ids_and_comments() {
    let input = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
    let outcome = parse_every_way(DEFAULTS, input);
    assert_eq!(
        outcome.events(),
        [
            message("first event").with_id("1"),
            message("second event"),
            message(" third event"),
        ]
    );
    assert_eq!(outcome.last_event_id, "");
}

// ----- end of stream -----

#[test]
fn unterminated_final_block_is_discarded() {
    for input in [
        &b"data: a\n\ndata: b"[..],
        b"data: a\n\ndata: b\n",
        b"data: a\n\ndata: b\r",
        b"data: a\n\ndata: b\r\n",
    ] {
        assert_eq!(events(input), [message("a")], "{input:?}");
    }
}

#[test]
fn unterminated_final_block_is_flushed_when_asked() {
    for input in [
        &b"data: a\n\ndata: b"[..],
        b"data: a\n\ndata: b\n",
        b"data: a\n\ndata: b\r",
        b"data: a\n\ndata: b\r\n",
    ] {
        let outcome = parse_every_way(FLUSH, input);
        assert_eq!(outcome.events(), [message("a"), message("b")], "{input:?}");
    }
    // Nothing pending: flushing adds nothing.
    assert_eq!(
        parse_every_way(FLUSH, b"data: a\n\n").events(),
        [message("a")]
    );
    // A pending block without data still fires nothing, but its ID is committed.
    let outcome = parse_every_way(FLUSH, b"event: x\nid: 9");
    assert_eq!(outcome.events(), []);
    assert_eq!(outcome.last_event_id, "9");
}

#[test]
fn unterminated_block_id_is_not_committed() {
    let outcome = parse_every_way(DEFAULTS, b"id: 1\n\nid: 2\ndata: x\n");
    assert_eq!(outcome.events(), []);
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn finish_starts_a_fresh_body() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(b"data: lost", &mut events).unwrap();
    parser.finish(&mut events).unwrap();
    parser
        .feed(b"\xEF\xBB\xBFdata: next\n\n", &mut events)
        .unwrap();
    assert_eq!(events, [message("next")]);
}

#[test]
fn finish_starts_a_fresh_body_even_when_its_flush_fails() {
    // Three raw bytes that decode to nine: the limit is met only when the flush decodes them.
    let mut parser = SseParser::with_max_event_size(8);
    parser.set_flush_unterminated_at_eof(true);
    let mut events = Vec::new();
    parser.feed(b"data:\xFF\xFF\xFF", &mut events).unwrap();
    assert_eq!(
        parser.finish(&mut events),
        Err(SseParseError::EventTooLarge { limit: 8 })
    );
    // The error was that body's: the next one is parsed, as after `reset`.
    parser.feed(b"data:ok\n\n", &mut events).unwrap();
    parser.finish(&mut events).unwrap();
    assert_eq!(events, [message("ok")]);
    // So does a body whose `feed` failed: `finish` reports that error again, then ends it.
    let error = SseParseError::EventTooLarge { limit: 8 };
    assert_eq!(
        parser.feed(b"data: far too long", &mut events),
        Err(error.clone())
    );
    assert_eq!(parser.finish(&mut events), Err(error));
    parser.feed(b"data:ok\n\n", &mut events).unwrap();
    assert_eq!(events, [message("ok"), message("ok")]);
}

// ----- BOM -----

#[test]
fn one_leading_bom_is_stripped() {
    assert_eq!(events(b"\xEF\xBB\xBFdata: x\n\n"), [message("x")]);
}

#[test]
fn bom_split_over_chunks_is_stripped() {
    let outcome = run_chunks(DEFAULTS, &[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
    assert_eq!(outcome.events(), [message("x")]);
    let outcome = run_chunks(DEFAULTS, &[b"\xEF\xBB", b"", b"\xBF", b"data: x\n\n"]);
    assert_eq!(outcome.events(), [message("x")]);
}

#[test]
fn second_bom_is_text() {
    // The second BOM becomes part of the field name, so the line is an unknown field.
    assert_eq!(events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"), []);
    assert_eq!(
        events(b"\xEF\xBB\xBFdata: \xEF\xBB\xBFx\n\n"),
        [message("\u{FEFF}x")]
    );
}

#[test]
fn bom_not_at_start_is_text() {
    assert_eq!(
        events(b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n"),
        [message("a"), message("c")]
    );
    assert_eq!(events(b"data: \xEF\xBB\xBF\n\n"), [message("\u{FEFF}")]);
}

#[test]
fn incomplete_bom_is_text() {
    // EF BB without BF: one invalid sequence, so U+FFFD starts the field name.
    assert_eq!(events(b"\xEF\xBBdata: x\n\n"), []);
    assert_eq!(events(b"\xEF\xBB\ndata: x\n\n"), [message("x")]);
    assert_eq!(events(b"\xEFdata: x\n\ndata: y\n\n"), [message("y")]);
    let outcome = parse_every_way(FLUSH, b"\xEF\xBB");
    assert_eq!(outcome.seen, []);
}

#[test]
fn reset_expects_a_new_bom() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser
        .feed(b"\xEF\xBB\xBFdata: a\n\n", &mut events)
        .unwrap();
    parser.reset();
    parser
        .feed(b"\xEF\xBB\xBFdata: b\n\n", &mut events)
        .unwrap();
    assert_eq!(events, [message("a"), message("b")]);
}

// ----- line ends -----

#[test]
fn lf_crlf_and_lone_cr_all_end_lines() {
    for input in [
        &b"data: a\ndata: b\n\n"[..],
        b"data: a\r\ndata: b\r\n\r\n",
        b"data: a\rdata: b\r\r",
        b"data: a\r\ndata: b\n\r\n",
        b"data: a\rdata: b\n\r",
        b"data: a\ndata: b\r\r\n",
    ] {
        assert_eq!(events(input), [message("a\nb")], "{input:?}");
    }
}

#[test]
fn lf_then_cr_is_two_line_ends() {
    assert_eq!(
        events(b"data: a\n\rdata: b\n\n"),
        [message("a"), message("b")]
    );
}

#[test]
fn cr_at_chunk_end_then_lf_is_one_line_end() {
    let outcome = run_chunks(
        DEFAULTS,
        &[b"data: a\r", b"\ndata: b\r", b"\n", b"\r", b"\n"],
    );
    assert_eq!(outcome.events(), [message("a\nb")]);
    // The swallowed LF may arrive after empty chunks.
    let outcome = run_chunks(DEFAULTS, &[b"data: a\r", b"", b"", b"\n\n"]);
    assert_eq!(outcome.events(), [message("a")]);
    // A CR at a chunk end followed by something else is a lone CR.
    let outcome = run_chunks(DEFAULTS, &[b"data: a\r", b"\r"]);
    assert_eq!(outcome.events(), [message("a")]);
}

// ----- field parsing -----

#[test]
fn field_name_ends_at_first_colon() {
    assert_eq!(
        events(b"data: a: b\nevent:x:y\n\n"),
        [SseEvent::new("x:y", "a: b")]
    );
}

#[test]
fn only_one_leading_space_is_removed() {
    assert_eq!(
        events(b"data:  two\ndata:\tt\ndata: \n\n"),
        [message(" two\n\tt\n")]
    );
}

#[test]
fn field_names_are_case_sensitive() {
    assert_eq!(events(b"Data: x\nDATA: y\n\n"), []);
    assert_eq!(events(b"Event: e\nID: 1\ndata: x\n\n"), [message("x")]);
}

#[test]
fn line_without_colon_is_a_name_with_empty_value() {
    // `event` alone sets an empty type (message); `id` alone resets the ID.
    assert_eq!(
        events(b"id: 5\nevent: t\nevent\ndata\n\nid\ndata\n\n"),
        [message("").with_id("5"), message("")]
    );
    // `data ` (trailing space, no colon) is an unknown field named "data ".
    assert_eq!(events(b"data \n\n"), []);
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        events(b"foo: bar\ndata: x\nbaz\nevent : t\n\n"),
        [message("x")]
    );
}

#[test]
fn event_field_sets_type_until_dispatch() {
    assert_eq!(
        events(b"event: a\nevent: b\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\nevent: message\ndata: 4\n\n"),
        [
            SseEvent::new("b", "1"),
            message("2"),
            message("3"),
            message("4"),
        ]
    );
}

#[test]
fn block_without_data_fires_nothing_and_clears_type() {
    assert_eq!(events(b"event: lonely\n\ndata: x\n\n"), [message("x")]);
    assert_eq!(events(b"\n\n\n"), []);
}

#[test]
fn repeated_event_types_compare_equal() {
    let events = events(b"event: delta\ndata: 1\n\nevent: delta\ndata: 2\n\nevent: other\ndata: 3\n\nevent: delta\ndata: 4\n\n");
    let types: Vec<&str> = events.iter().map(SseEvent::event_type).collect();
    assert_eq!(types, ["delta", "delta", "other", "delta"]);
}

#[test]
fn lines_that_only_start_like_the_repeated_type_are_their_own_types() {
    // After `delta` is the recent type: a longer type, a second space, a trailing space, no
    // space, CRLF, a lone CR, and the type at the very end of the stream.
    let input = b"event: delta\ndata: 0\n\n\
        event: deltas\ndata: 1\n\n\
        event:  delta\ndata: 2\n\n\
        event: delta \ndata: 3\n\n\
        event:delta\ndata: 4\n\n\
        event: delta\r\ndata: 5\n\n\
        event: delt\ndata: 6\n\n\
        event: delta\rdata: 7\n\n\
        data: 8\nevent: delta\n\n\
        event: delta";
    let events = events(input);
    let got = types_and_data(&events);
    assert_eq!(
        got,
        [
            ("delta", "0"),
            ("deltas", "1"),
            (" delta", "2"),
            ("delta ", "3"),
            ("delta", "4"),
            ("delta", "5"),
            ("delt", "6"),
            ("delta", "7"),
            ("delta", "8"),
        ]
    );
}

#[test]
fn a_repeated_type_arriving_in_pieces_is_told_from_types_that_start_like_it() {
    // Fed in pieces (every split, every size up to 17 bytes, a byte at a time), an `event` line
    // that so far repeats the recent type is only compared with it: these lines part from it
    // at every point, before and after its end, and across every piece boundary.
    const RECENT: &str = "response.output_text.delta";
    let others = [
        "response.output_text.done",
        "response.output_text.deltas",
        "response.output_text.delt",
        "response.output_text.delta ",
        " response.output_text.delta",
        "response",
        "r",
        "Response.output_text.delta",
    ];
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for (n, other) in others.iter().enumerate() {
        for event_type in [RECENT, other, RECENT] {
            input.extend_from_slice(
                format!(
                    "event: {event_type}
data: {n}

"
                )
                .as_bytes(),
            );
            expected.push((event_type.to_owned(), n.to_string()));
        }
    }
    // No space after the colon, CRLF and lone CR line ends, and the type ending a block.
    input.extend_from_slice(
        b"event:response.output_text.delta
data: x

",
    );
    expected.push((RECENT.to_owned(), "x".to_owned()));
    input.extend_from_slice(
        b"data: y
event: response.output_text.delta

",
    );
    expected.push((RECENT.to_owned(), "y".to_owned()));
    let got: Vec<(String, String)> = events(&input)
        .iter()
        .map(|event| (event.event_type().to_owned(), event.data().to_owned()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn an_unterminated_repeated_type_line_is_flushed_as_far_as_it_came() {
    // At the end of the stream the line that so far repeated the recent type is parsed as it
    // stands (a shorter type), when the unterminated block is flushed.
    let outcome = parse_every_way(
        FLUSH,
        b"event: delta
data: 1

data: 2
event: del",
    );
    assert_eq!(
        outcome.events(),
        [SseEvent::new("delta", "1"), SseEvent::new("del", "2")]
    );
}

#[test]
fn a_repeated_type_that_would_not_fit_is_parsed_like_any_line() {
    // 10 bytes of data: `event: delta` (12) would exceed 21 bytes, `event: de` (9) does not.
    // The first is rejected wherever the stream is split, the second accepted.
    let options = Options {
        max_event_size: Some(21),
        ..DEFAULTS
    };
    let fits = parse_every_way(
        options,
        b"event: delta
data: 1

data: 0123456789
event: de

",
    );
    assert_eq!(fits.error, None);
    assert_eq!(
        fits.events(),
        [
            SseEvent::new("delta", "1"),
            SseEvent::new("de", "0123456789")
        ]
    );
    let too_large = parse_every_way(
        options,
        b"event: delta
data: 1

data: 0123456789
event: delta

",
    );
    assert_eq!(too_large.events(), [SseEvent::new("delta", "1")]);
    assert_eq!(
        too_large.error,
        Some(SseParseError::EventTooLarge { limit: 21 })
    );
}

#[test]
fn lines_that_start_like_data_or_event_part_from_the_name_at_every_point() {
    // Fed in pieces, a line that so far is the start of `data:` or `event:` is compared with the
    // name, not buffered. These lines part from the names before, at and after the colon, end
    // right after the name (a field with an empty value), and use every line end.
    let input = b"event: delta\ndata: 0\n\n\
        data\n\n\
        data:\ndata\n\n\
        dat: x\ndatum: y\nd\nDATA: z\ndata:x\n\n\
        data:  two\n\n\
        event\ndata: 6\n\n\
        even: x\neventful: y\ne\nevent: delta\ndata: 7\n\n\
        event:\ndata: 8\n\n\
        event:delta\ndata: 9\n\n\
        data\r\ndata:\rdata:\r\ndata: 10\r\n\r\n\
        event\r\nevent:\rdata: 11\n\n\
        d";
    let events = events(input);
    let got = types_and_data(&events);
    assert_eq!(
        got,
        [
            ("delta", "0"),
            ("message", ""),
            ("message", "\n"),
            ("message", "x"),
            ("message", " two"),
            ("message", "6"),
            ("delta", "7"),
            ("message", "8"),
            ("delta", "9"),
            ("message", "\n\n\n10"),
            ("message", "11"),
        ]
    );
}

#[test]
fn an_unterminated_line_starting_like_a_name_is_flushed_as_far_as_it_came() {
    // At the end of the stream a line cut inside `data:` or `event:` is parsed as it stands:
    // `dat` and `ev` are unknown fields, `data` and `data:` add an empty value, `event:` sets
    // the default type.
    let cases: [(&str, Option<&str>); 5] = [
        ("dat", None),
        ("data", Some("")),
        ("data:", Some("")),
        ("data: 2\nev", Some("2")),
        ("data: 2\nevent:", Some("2")),
    ];
    for (last_block, flushed) in cases {
        let input = format!("event: delta\ndata: 1\n\n{last_block}");
        let events = parse_every_way(FLUSH, input.as_bytes()).events();
        let mut expected = vec![SseEvent::new("delta", "1")];
        expected.extend(flushed.map(message));
        assert_eq!(events, expected, "{input:?}");
    }
}

#[test]
fn a_line_starting_like_a_name_counts_towards_the_size_limit() {
    // Wherever the stream is split (also inside or right after the name): after 5 bytes of data
    // a 7-byte `data: 5` line fits a 12-byte limit and an 8-byte `data: 56` does not; as a
    // block's first line, the space after the colon counts too.
    let cases: [(usize, &[u8], Option<&str>); 5] = [
        (12, b"data: 01234\ndata: 5\n\n", Some("01234\n5")),
        (12, b"data: 01234\ndata: 56\n\n", None),
        (8, b"data: 12\n\n", Some("12")),
        (8, b"data: 123\n\n", None),
        (8, b"data:1234\n\n", None),
    ];
    for (limit, input, data) in cases {
        let options = Options {
            max_event_size: Some(limit),
            ..DEFAULTS
        };
        let outcome = parse_every_way(options, input);
        let expected_error = data
            .is_none()
            .then_some(SseParseError::EventTooLarge { limit });
        assert_eq!(outcome.error, expected_error);
        assert_eq!(outcome.events(), Vec::from_iter(data.map(message)));
    }
}

#[test]
fn repeated_type_line_counts_towards_the_size_limit() {
    // 10 bytes of data plus the 13-byte `event: delta` line exceed a 20-byte limit, also when
    // the type is the recent one.
    // Split everywhere: where a chunk starts at the second `event:` line, that line takes the
    // repeated-type path with the data already buffered.
    let outcome = parse_every_way(
        Options {
            max_event_size: Some(20),
            ..DEFAULTS
        },
        b"event: delta\ndata: 1\n\ndata: 0123456789\nevent: delta\n\n",
    );
    assert_eq!(outcome.events(), [SseEvent::new("delta", "1")]);
    assert_eq!(
        outcome.error,
        Some(SseParseError::EventTooLarge { limit: 20 })
    );
}

// ----- id -----

#[test]
fn id_sticks_until_changed() {
    let outcome = parse_every_way(DEFAULTS, b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n");
    assert_eq!(
        outcome.events(),
        [
            message("a").with_id("1"),
            message("b").with_id("1"),
            message("c").with_id("2"),
        ]
    );
    assert_eq!(outcome.last_event_id, "2");
}

#[test]
fn id_with_nul_is_ignored() {
    let outcome = parse_every_way(DEFAULTS, b"id: 1\n\nid: a\0b\ndata: x\n\n");
    assert_eq!(outcome.events(), [message("x").with_id("1")]);
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn id_with_nul_is_ignored_in_a_long_chunk() {
    // Long enough that the parser checks the chunk's lines as a whole (not value by value).
    let mut input = b": padding to make the chunk long enough to be checked as a whole\n".to_vec();
    input.extend_from_slice(b"id: 1\n\nid: a\0b\ndata: x\n\nid: c\0\n\n");
    let outcome = parse_every_way(DEFAULTS, &input);
    assert_eq!(outcome.events(), [message("x").with_id("1")]);
    assert_eq!(outcome.last_event_id, "1");
}

#[test]
fn empty_id_resets() {
    for input in [
        &b"id: 1\n\nid\ndata: x\n\n"[..],
        b"id: 1\n\nid:\ndata: x\n\n",
        b"id: 1\n\nid: \ndata: x\n\n",
    ] {
        let outcome = parse_every_way(DEFAULTS, input);
        assert_eq!(outcome.events(), [message("x")], "{input:?}");
        assert_eq!(outcome.last_event_id, "");
    }
}

#[test]
fn id_only_block_commits_without_event() {
    let outcome = parse_every_way(DEFAULTS, b"id: 7\n\n");
    assert_eq!(outcome.seen, []);
    assert_eq!(outcome.last_event_id, "7");
    // The committed ID reaches the next event even though that block has no id.
    assert_eq!(events(b"id: 7\n\ndata: x\n\n"), [message("x").with_id("7")]);
}

#[test]
fn id_keeps_leading_space_beyond_the_first_and_decodes_lossily() {
    let outcome = parse_every_way(DEFAULTS, b"id:  a\xFF\n\n");
    assert_eq!(outcome.last_event_id, " a\u{FFFD}");
}

#[test]
fn initial_last_event_id_applies_until_changed() {
    let mut parser = SseParser::new();
    parser.set_last_event_id("resume-9");
    assert_eq!(parser.last_event_id(), "resume-9");
    let events = parser.parse_all(b"data: a\n\nid: 10\n\n").unwrap();
    assert_eq!(events, [message("a").with_id("resume-9")]);
    assert_eq!(parser.last_event_id(), "10");
}

// ----- retry -----

#[test]
fn valid_retry_sets_reconnection_time_and_fires_at_once() {
    let outcome = parse_every_way(COMMENTS, b"retry: 1500\ndata: x\n\n");
    assert_eq!(
        outcome.seen,
        [
            Seen::Retry(Duration::from_millis(1500)),
            Seen::Event(message("x").with_retry(Duration::from_millis(1500))),
        ]
    );
    assert_eq!(outcome.reconnection_time, Some(Duration::from_millis(1500)));
}

#[test]
fn retry_in_undispatched_block_still_counts() {
    let outcome = parse_every_way(DEFAULTS, b"retry: 10\n\nretry: 20\n");
    assert_eq!(
        outcome.seen,
        [
            Seen::Retry(Duration::from_millis(10)),
            Seen::Retry(Duration::from_millis(20))
        ]
    );
    assert_eq!(outcome.reconnection_time, Some(Duration::from_millis(20)));
}

#[test]
fn event_retry_is_only_its_own_blocks() {
    assert_eq!(
        events(b"retry: 5\n\ndata: a\n\nretry: 6\nretry: 7\ndata: b\n\ndata: c\n\n"),
        [
            message("a"),
            message("b").with_retry(Duration::from_millis(7)),
            message("c"),
        ]
    );
}

#[test]
fn retry_accepts_digits_and_leading_zeros() {
    for (input, millis) in [
        (&b"retry: 0\n"[..], 0),
        (b"retry:03000\n", 3000),
        (b"retry: 0000000000000000000000042\n", 42),
    ] {
        let outcome = parse_every_way(DEFAULTS, input);
        assert_eq!(
            outcome.reconnection_time,
            Some(Duration::from_millis(millis)),
            "{input:?}"
        );
    }
}

#[test]
fn retry_ignores_anything_but_digits() {
    for value in [
        &b""[..],
        b" ",
        b"  5",
        b"+5",
        b"-1",
        b"5ms",
        b"1e3",
        b"1.5",
        b"5 ",
        b"\t5",
        b"\xd9\xa3",
    ] {
        let mut input = b"retry: 100\n\nretry:".to_vec();
        input.extend_from_slice(if value.is_empty() { b"" } else { b" " });
        input.extend_from_slice(value);
        input.extend_from_slice(b"\ndata: x\n\n");
        let outcome = parse_every_way(DEFAULTS, &input);
        assert_eq!(outcome.events(), [message("x")], "{value:?}");
        assert_eq!(
            outcome.reconnection_time,
            Some(Duration::from_millis(100)),
            "{value:?}"
        );
    }
    // `retry` without a colon has an empty value: ignored too.
    assert_eq!(
        parse_every_way(DEFAULTS, b"retry\n\n").reconnection_time,
        None
    );
}

#[test]
fn retry_too_large_for_u64_saturates() {
    let outcome = parse_every_way(DEFAULTS, b"retry: 18446744073709551616\n\n");
    assert_eq!(
        outcome.reconnection_time,
        Some(Duration::from_millis(u64::MAX))
    );
    let outcome = parse_every_way(DEFAULTS, b"retry: 18446744073709551615\n\n");
    assert_eq!(
        outcome.reconnection_time,
        Some(Duration::from_millis(u64::MAX))
    );
}

// ----- comments -----

#[test]
fn comments_are_ignored_by_default() {
    let outcome = parse_every_way(DEFAULTS, b": hi\ndata: a\n:\n: more\ndata: b\n\n");
    assert_eq!(outcome.seen, [Seen::Event(message("a\nb"))]);
}

#[test]
fn comments_are_reported_when_asked() {
    let outcome = parse_every_way(
        COMMENTS,
        b": keep-alive\n:raw\n:  two\n:\n:\xFF\ndata: a\n\n",
    );
    assert_eq!(
        outcome.seen,
        [
            Seen::Comment("keep-alive".into()),
            Seen::Comment("raw".into()),
            Seen::Comment(" two".into()),
            Seen::Comment(String::new()),
            Seen::Comment("\u{FFFD}".into()),
            Seen::Event(message("a")),
        ]
    );
}

#[test]
fn comment_does_not_end_a_block() {
    assert_eq!(events(b"data: a\n: note\ndata: b\n\n"), [message("a\nb")]);
}

// ----- UTF-8 -----

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(
        events(b"data: a\xFFb\xC0\xAFc\xED\xA0\x80\n\n"),
        [message(
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}\u{FFFD}\u{FFFD}"
        )]
    );
    assert_eq!(
        events(b"event: t\xFE\ndata: x\n\n"),
        [SseEvent::new("t\u{FFFD}", "x")]
    );
}

#[test]
fn truncated_sequence_before_line_end_is_one_replacement() {
    assert_eq!(
        events(b"data: \xE2\x82\ndata: \xF0\x9F\x98\r\n\n"),
        [message("\u{FFFD}\n\u{FFFD}")]
    );
}

#[test]
fn multibyte_characters_survive_any_split() {
    // parse_every_way splits inside each of these sequences.
    assert_eq!(
        events("data: é€😀\nevent: ünï\n\n".as_bytes()),
        [SseEvent::new("ünï", "é€😀")]
    );
}

#[test]
fn nul_in_data_is_kept() {
    assert_eq!(events(b"data: a\0b\n\n"), [message("a\0b")]);
}

#[test]
fn invalid_bytes_in_field_name_make_it_unknown() {
    assert_eq!(events(b"dat\xE1: x\n\ndata\xFF: y\n\n"), []);
}

// ----- size limit -----

#[test]
fn event_at_the_limit_is_accepted() {
    // Line "data:" + 10 bytes = 15 bytes.
    let options = Options {
        max_event_size: Some(15),
        ..DEFAULTS
    };
    let outcome = parse_every_way(options, b"data:0123456789\n\n");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.events(), [message("0123456789")]);
}

#[test]
fn line_over_the_limit_is_rejected() {
    let options = Options {
        max_event_size: Some(14),
        ..DEFAULTS
    };
    let outcome = parse_every_way(options, b"data: a\n\ndata:0123456789\n\n");
    assert_eq!(
        outcome.error,
        Some(SseParseError::EventTooLarge { limit: 14 })
    );
    assert_eq!(outcome.events(), [message("a")]);
    // Non-data lines count too: the limit bounds what the parser must buffer.
    let outcome = parse_every_way(options, b": 0123456789abcdef\n");
    assert_eq!(
        outcome.error,
        Some(SseParseError::EventTooLarge { limit: 14 })
    );
}

#[test]
fn data_accumulated_over_lines_counts() {
    let options = Options {
        max_event_size: Some(30),
        ..DEFAULTS
    };
    let two = parse_every_way(options, b"data:0123456789\ndata:0123456789\n\n");
    assert_eq!(two.error, None);
    // A third line: 21 bytes of data + a 15-byte line > 30.
    let three = parse_every_way(
        options,
        b"data:0123456789\ndata:0123456789\ndata:0123456789\n\n",
    );
    assert_eq!(
        three.error,
        Some(SseParseError::EventTooLarge { limit: 30 })
    );
    // The count starts over after each dispatch.
    let separate = parse_every_way(
        options,
        b"data:0123456789\n\ndata:0123456789\n\ndata:0123456789\n\n",
    );
    assert_eq!(separate.error, None);
    assert_eq!(separate.events().len(), 3);
}

#[test]
fn replacement_characters_count_at_decoded_size() {
    // The 9-byte line fits, but four invalid bytes decode to 12 bytes of U+FFFD.
    let options = Options {
        max_event_size: Some(10),
        ..DEFAULTS
    };
    let outcome = parse_every_way(options, b"data:\xFF\xFF\xFF\xFF\n\n");
    assert_eq!(
        outcome.error,
        Some(SseParseError::EventTooLarge { limit: 10 })
    );
    let fits = parse_every_way(options, b"data:\xFF\xFF\xFF\n\n");
    assert_eq!(fits.error, None);
}

#[test]
fn never_ending_line_is_rejected_once_the_limit_is_hit() {
    let limit = 64 * 1024;
    let mut parser = SseParser::with_max_event_size(limit);
    let chunk = [b'x'; 1024];
    let mut sink = |_: SseEvent| panic!("no event expected");
    let mut accepted = 0usize;
    let error = loop {
        match parser.feed(&chunk, &mut sink) {
            Ok(()) => accepted += chunk.len(),
            Err(e) => break e,
        }
        assert!(accepted <= limit, "accepted {accepted} bytes of one line");
    };
    assert_eq!(accepted, limit);
    assert_eq!(error, SseParseError::EventTooLarge { limit });
    // The partial line was dropped, and the parser keeps refusing input until the body ends.
    assert!(format!("{parser:?}").contains("partial_line_len: 0"));
    assert_eq!(
        parser.feed(b"\n\ndata: x\n\n", &mut sink),
        Err(error.clone())
    );
    assert_eq!(parser.finish(&mut sink), Err(error));
    parser.reset();
    assert_eq!(parser.parse_all(b"data: x\n\n").unwrap(), [message("x")]);
}

#[test]
fn never_ending_data_line_in_small_pieces_is_rejected_at_the_limit() {
    // Tiny pieces of a data value are appended without the general path; the limit still holds
    // there: memory for one line never grows past it, whatever the piece size.
    let limit = 256;
    for size in 1..=17 {
        let mut parser = SseParser::with_max_event_size(limit);
        let mut sink = |_: SseEventRef<'_>| panic!("no event expected");
        parser.feed_borrowed(b"data: ", &mut sink).unwrap();
        let piece = vec![b'x'; size];
        let mut accepted = "data: ".len();
        let error = loop {
            match parser.feed_borrowed(&piece, &mut sink) {
                Ok(()) => accepted += size,
                Err(e) => break e,
            }
            assert!(accepted <= limit, "{size}-byte pieces: accepted {accepted}");
        };
        assert_eq!(error, SseParseError::EventTooLarge { limit });
        assert!(accepted + size > limit, "{size}-byte pieces: refused early");
    }
}

#[test]
fn default_limit_applies() {
    assert_eq!(DEFAULT_MAX_EVENT_SIZE, 16 * 1024 * 1024);
    let mut at_limit = b"data:".to_vec();
    at_limit.resize(DEFAULT_MAX_EVENT_SIZE, b'x');
    at_limit.extend_from_slice(b"\n\n");
    let events = SseParser::new().parse_all(&at_limit).unwrap();
    assert_eq!(events[0].data().len(), DEFAULT_MAX_EVENT_SIZE - 5);

    let mut over = at_limit.clone();
    over.insert(10, b'x');
    assert_eq!(
        SseParser::new().parse_all(&over),
        Err(SseParseError::EventTooLarge {
            limit: DEFAULT_MAX_EVENT_SIZE
        })
    );
    let mut parser = SseParser::new();
    let result = over
        .chunks(4096)
        .try_for_each(|chunk| parser.feed(chunk, &mut |_| {}));
    assert_eq!(
        result,
        Err(SseParseError::EventTooLarge {
            limit: DEFAULT_MAX_EVENT_SIZE
        })
    );
}

// ----- reset and sinks -----

#[test]
fn reset_keeps_id_and_reconnection_time_but_drops_the_partial_block() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser
        .feed(
            b"id: 1\nretry: 2500\n\nid: 2\nevent: t\ndata: partial\nda",
            &mut events,
        )
        .unwrap();
    parser.reset();
    assert_eq!(parser.last_event_id(), "1");
    assert_eq!(
        parser.reconnection_time(),
        Some(Duration::from_millis(2500))
    );
    parser.feed(b"ta: fresh\n\n", &mut events).unwrap();
    parser.feed(b"data: b\r", &mut events).unwrap();
    parser.reset();
    // The CR of the old body must not swallow this body's first LF.
    parser.feed(b"\ndata: c\n\n", &mut events).unwrap();
    assert_eq!(events, [message("c").with_id("1")]);
}

#[test]
fn closures_and_vectors_are_sinks() {
    let mut parser = SseParser::new();
    let mut collected = Vec::new();
    parser
        .feed(b"data: 1\n\n", &mut |event: SseEvent| {
            collected.push(event.into_data())
        })
        .unwrap();
    let mut vector: Vec<SseEvent> = Vec::new();
    parser.feed(b"data: 2\n\n", &mut vector).unwrap();
    assert_eq!(collected, ["1"]);
    assert_eq!(vector, [message("2")]);
}

#[test]
fn parse_error_is_an_error_with_lower_case_display() {
    let error: Box<dyn std::error::Error> = Box::new(SseParseError::EventTooLarge { limit: 3 });
    assert_eq!(
        error.to_string(),
        "server-sent event exceeds the size limit of 3 bytes"
    );
}

// ----- property tests -----

/// The naive oracle: strip one BOM, decode the whole stream with replacement, split into lines,
/// and apply WHATWG §9.2.6 literally (data buffer with trailing LF and all).
fn reference_parse(input: &[u8], flush: bool) -> Outcome {
    let body = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut text = String::from_utf8_lossy(body).into_owned();
    if flush {
        text.push_str("\n\n");
    }
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut current));
            }
            '\n' => lines.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }

    let mut seen = Vec::new();
    let (mut data, mut event_type, mut id_buffer, mut last_event_id) =
        (String::new(), String::new(), String::new(), String::new());
    let (mut block_retry, mut reconnection_time) = (None, None);
    for line in lines {
        if line.is_empty() {
            last_event_id = id_buffer.clone();
            let retry = block_retry.take();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let mut event =
                SseEvent::new(&event_type, std::mem::take(&mut data)).with_id(&last_event_id);
            if let Some(retry) = retry {
                event = event.with_retry(retry);
            }
            seen.push(Seen::Event(event));
            event_type.clear();
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            seen.push(Seen::Comment(
                comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
            ));
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match name {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let millis = value.parse::<u64>().unwrap_or(u64::MAX);
                let retry = Duration::from_millis(millis);
                block_retry = Some(retry);
                reconnection_time = Some(retry);
                seen.push(Seen::Retry(retry));
            }
            _ => {}
        }
    }
    Outcome {
        seen,
        error: None,
        last_event_id,
        reconnection_time,
    }
}

/// Streams built from pieces that exercise every rule (and their boundaries).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"data",
        b"data:",
        b"data: ",
        b"event:",
        b"event: ",
        b"id",
        b"id:",
        b"id: ",
        b"retry:",
        b"retry: ",
        b":",
        b" ",
        b"x",
        b"yz",
        b"msg",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\0",
        b"\t",
        b"123",
        b"007",
        b"+5",
        b"Data",
        "é€".as_bytes(),
        "😀".as_bytes(),
        b"\xFF",
        b"\xE2\x82",
        b"\xEF\xBB\xBF",
        b"\xEF",
        b"\xEF\xBB",
        b"99999999999999999999",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 0..48).prop_map(|pieces| pieces.concat())
}

/// Splits `input` at the given (arbitrary) positions.
fn split_at_indices<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut positions: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len() + 1)).collect();
    positions.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for position in positions {
        chunks.push(&input[start..position]);
        start = position;
    }
    chunks.push(&input[start..]);
    chunks
}

/// Replaces CRLF and lone CR by LF, as the writer does to data.
fn normalize_line_ends(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Whole milliseconds, at most `u64::MAX` of them, as the writer writes a retry time.
fn normalize_retry(retry: Duration) -> Duration {
    Duration::from_millis(u64::try_from(retry.as_millis()).unwrap_or(u64::MAX))
}

/// The writer's retry line is what any client can read: digits only, within u64 milliseconds.
#[test]
fn writer_caps_retry_at_u64_milliseconds_and_truncates_to_whole_ones() {
    let mut out = String::new();
    let mut writer = SseWriter::new();
    for retry in [Duration::MAX, Duration::from_micros(2_999)] {
        writer
            .write_event(&mut out, &SseEvent::new("", "x").with_retry(retry))
            .unwrap();
    }
    assert_eq!(
        out,
        format!("retry: {}\ndata: x\n\nretry: 2\ndata: x\n\n", u64::MAX)
    );
    let events = SseParser::new().parse_all(out.as_bytes()).unwrap();
    assert_eq!(events[0].retry(), Some(normalize_retry(Duration::MAX)));
    assert_eq!(events[1].retry(), Some(Duration::from_millis(2)));
}

fn text_from(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(pieces), 0..8).prop_map(|pieces| pieces.concat())
}

#[derive(Debug, Clone)]
enum Item {
    Event(SseEvent),
    Comment(String),
}

fn writer_item() -> impl Strategy<Value = Item> {
    const DATA: &[&str] = &[
        "a", "é", "😀", "\r", "\n", "\r\n", "\0", " ", ":", "data: ", "\u{FEFF}", "id",
    ];
    const NAME: &[&str] = &["a", "é", " ", ":", "\0", "message", "id", "\u{FEFF}"];
    const ID: &[&str] = &["1", "a", "é", " ", ":", "\u{FEFF}"];
    let event = (
        text_from(NAME),
        text_from(DATA),
        text_from(ID),
        prop::option::of(prop_oneof![
            (0u64..10_000_000).prop_map(Duration::from_millis),
            // Sub-millisecond parts and times beyond u64::MAX ms: the writer normalises these.
            (0u64..10_000_000).prop_map(Duration::from_micros),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::MAX),
        ]),
    )
        .prop_map(|(event_type, data, id, retry)| {
            // The writer refuses an ID with a space at either end (it would not come back in
            // `Last-Event-ID`); inner ones stay.
            let id = if id.starts_with(' ') || id.ends_with(' ') {
                format!("[{id}]")
            } else {
                id
            };
            let event = SseEvent::new(&event_type, data).with_id(&id);
            Item::Event(match retry {
                Some(retry) => event.with_retry(retry),
                None => event,
            })
        });
    prop_oneof![4 => event, 1 => text_from(DATA).prop_map(Item::Comment)]
}

proptest! {
    #![proptest_config(super::proptest_config(512))]

    #[test]
    fn matches_the_reference_parser_however_split(
        input in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        flush in any::<bool>(),
    ) {
        let options = Options { flush, comments: true, max_event_size: None };
        let expected = reference_parse(&input, flush);
        let chunks = split_at_indices(&input, &cuts);
        prop_assert_eq!(&run_chunks(options, &chunks), &expected);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&run_chunks(options, &bytes), &expected);
    }

    #[test]
    fn random_bytes_never_panic_and_split_does_not_matter(
        input in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        flush in any::<bool>(),
        comments in any::<bool>(),
        max_event_size in prop::option::of(0usize..64),
    ) {
        let options = Options { flush, comments, max_event_size };
        let whole = run_chunks(options, &[&input]);
        let chunks = split_at_indices(&input, &cuts);
        prop_assert_eq!(&run_chunks(options, &chunks), &whole);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&run_chunks(options, &bytes), &whole);
    }
}

/// Long data lines (over 256 bytes, so the parser expects them after the first): bytes that end a
/// line, that stop an ASCII proof, and that are ASCII controls without ending one.
fn long_line_stream() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        300 => b'a'..=b'z',
        2 => Just(b'\t'),
        1 => Just(0x0Bu8),
        1 => Just(0x80u8),
        1 => Just(0xFFu8),
        1 => Just(0xC3u8),
        1 => Just(0xA9u8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
    ];
    let line = prop::collection::vec(byte, 200..1500);
    prop::collection::vec(line, 1..5).prop_map(|lines| {
        let mut out = Vec::new();
        for line in lines {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\n\n");
        }
        out
    })
}

#[test]
fn long_lines_of_every_kind_are_delivered_exactly() {
    let ascii = "x".repeat(1_000);
    let tabs = "\tcol".repeat(300);
    let multi_byte = "caf\u{e9} \u{4e2d}\u{6587} ".repeat(100);
    let input = format!("data: {ascii}\n\ndata: {tabs}\n\ndata: {multi_byte}\n\ndata: {ascii}\n\n");
    let mut raw = input.into_bytes();
    // An invalid byte late in a long line that looks ASCII up to there, then one early in a
    // line that is ASCII after it.
    raw.extend_from_slice(b"data: ");
    raw.extend_from_slice(ascii.as_bytes());
    raw.extend_from_slice(b"\xFF!\n\ndata: \xC3");
    raw.extend_from_slice(ascii.as_bytes());
    raw.extend_from_slice(b"\n\n");
    // A character at the start of a line that goes on in ASCII pieces.
    raw.extend_from_slice(format!("data: \u{e9}{ascii}\n\n").as_bytes());
    let whole = run_chunks(DEFAULTS, &[&raw]);
    assert_eq!(whole.error, None);
    assert_eq!(
        whole.events(),
        [
            message(&ascii),
            message(&tabs),
            message(&multi_byte),
            message(&ascii),
            message(&format!("{ascii}\u{FFFD}!")),
            message(&format!("\u{FFFD}{ascii}")),
            message(&format!("\u{e9}{ascii}")),
        ]
    );
    for size in [7, 100, 333, 4096] {
        let pieces: Vec<&[u8]> = raw.chunks(size).collect();
        assert_eq!(run_chunks(DEFAULTS, &pieces), whole, "{size}-byte pieces");
    }
}

proptest! {
    #![proptest_config(super::proptest_config(256))]

    #[test]
    fn long_lines_match_the_reference_parser_however_split(
        input in long_line_stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let expected = reference_parse(&input, false);
        prop_assert_eq!(&run_chunks(DEFAULTS, &[&input]), &expected);
        let chunks = split_at_indices(&input, &cuts);
        prop_assert_eq!(&run_chunks(DEFAULTS, &chunks), &expected);
    }

    #[test]
    fn writer_output_parses_back_to_the_same_events(
        items in prop::collection::vec(writer_item(), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut writer = SseWriter::new();
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for item in &items {
            match item {
                Item::Event(event) => {
                    writer.write_event(&mut out, event).unwrap();
                    let retry = event.retry().map(normalize_retry);
                    if let Some(retry) = retry {
                        expected.push(Seen::Retry(retry));
                    }
                    let mut parsed = SseEvent::new(event.event_type(), normalize_line_ends(event.data()))
                        .with_id(event.last_event_id());
                    if let Some(retry) = retry {
                        parsed = parsed.with_retry(retry);
                    }
                    expected.push(Seen::Event(parsed));
                }
                Item::Comment(comment) => {
                    writer.write_comment(&mut out, comment);
                    for line in normalize_line_ends(comment).split('\n') {
                        expected.push(Seen::Comment(line.to_owned()));
                    }
                }
            }
        }
        let outcome = run_chunks(COMMENTS, &split_at_indices(&out, &cuts));
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.seen, expected);
        prop_assert_eq!(outcome.last_event_id, writer.client_last_event_id());
    }
}

/// Asserts that `input` fed in pieces of every size from 2 to 15 bytes, after a first piece of
/// every length up to that size, parses as it does whole; returns the outcome.
fn parse_in_tiny_pieces_at_every_offset(options: Options, input: &[u8]) -> Outcome {
    let whole = run_chunks(options, &[input]);
    for size in 2..16 {
        for first in 1..=size {
            let (head, tail) = input.split_at(first.min(input.len()));
            let pieces: Vec<&[u8]> = std::iter::once(head).chain(tail.chunks(size)).collect();
            assert_eq!(
                run_chunks(options, &pieces),
                whole,
                "{size}-byte pieces after {first}, {options:?}"
            );
        }
    }
    whole
}

#[test]
fn tiny_pieces_at_every_offset_parse_like_the_whole_stream() {
    // The pieces around a line end (a data value's end and the next line's start, a blank
    // line, the rest of `data:`, the repeated type) have their own path for chunks under 16
    // bytes: every piece size from 2 to 15, starting at every offset, must agree with the
    // whole stream — with LF, CR and CRLF line ends, a leading BOM, `data:` without its space,
    // lines that part from `data`, and an `event` line that stops repeating the type.
    let input: &[u8] = b"\xEF\xBB\xBFdata: first\n\ndata:x\ndata: 0123456789abcdef\r\n\r\n\
        event: delta\ndata: {\"a\":1}\n\nevent: delta\ndata: {\"b\":22}\r\rdate: no\ndat\n\
        data\ndata:\ndata: \n\nevent: deltb\ndata: y\n\nid: 7\ndata: z\r\n\n:c\ndata: end\n\n";
    let whole = parse_in_tiny_pieces_at_every_offset(COMMENTS, input);
    assert_eq!(whole.events().len(), 8, "{whole:?}");
}

#[test]
fn tiny_pieces_keep_the_size_limit_at_every_offset() {
    // Near the limit a line that starts a data value in a tiny piece must be refused exactly
    // where the whole stream refuses it: the name and its space count, as does the data
    // before it — decoded, so an invalid byte counts three times.
    let inputs: [&[u8]; 2] = [
        b"data: 0123\ndata: 45\ndata:\ndata: \n\ndata: 6789\n\n",
        b"data:\xFF\ndata: \n\ndata:\xFF\xFF\ndata:\n\n",
    ];
    for input in inputs {
        let (mut refused, mut accepted) = (false, false);
        for limit in 1..input.len() {
            let options = Options {
                max_event_size: Some(limit),
                ..DEFAULTS
            };
            let outcome = parse_in_tiny_pieces_at_every_offset(options, input);
            refused |= outcome.error.is_some();
            accepted |= outcome.error.is_none();
        }
        // The limits cover both sides of the line.
        assert!(refused && accepted);
    }
}

/// Events of many short `data: ` lines, ended and followed in every way a run of them can be:
/// LF, CRLF, lone CR, `data:` without its space and with two, empty values, UTF-8 (valid and
/// invalid) in values, a long line in the middle, other fields and lines that only start like
/// `data`, single-line events, and an unterminated last event.
fn many_short_data_lines() -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(b"data: one\ndata: two\ndata: three\ndata: four\n\n");
    input.extend_from_slice(b"data: a\r\ndata: bb\r\ndata: ccc\r\ndata: dddd\r\n\r\n");
    input.extend_from_slice(b"data: a\rdata: bb\rdata: ccc\rdata: dddd\r\r");
    input.extend_from_slice(b"data: a\ndata: bb\r\ndata: ccc\rdata: dddd\r\n\n");
    input.extend_from_slice(b"data: x\ndata: \ndata:  two spaces\ndata:no space\ndata: y\n\n");
    input.extend_from_slice("data: café\ndata: ok\ndata: €uro\n\n".as_bytes());
    input.extend_from_slice(b"data: before\ndata: \xFF\xFE bad\ndata: \xE2\x82\ndata: after\n\n");
    input.extend_from_slice(b"data: before\ndata: ");
    input.extend_from_slice(&[b'L'; 300]);
    input.extend_from_slice(b"\ndata: after\ndata: more\ndata: ");
    input.extend_from_slice(&[b'M'; 300]);
    input.extend_from_slice(b"\n\n");
    input.extend_from_slice(b"data: 1\ndata: 2\nid: 9\ndata: 3\nevent: t\ndata: 4\n: c\ndata: 5\n");
    input.extend_from_slice(b"date: no\ndata: 6\nDATA: no\ndata: 7\nd\ndata: 8\ndata\ndata: 9\n\n");
    input.extend_from_slice(b"data: only\n\ndata: solo\r\n\r\ndata: lone\rdata: then\n\n");
    input.extend_from_slice(
        b"data: 0123456789012345678901234567890123456789\n"
            .repeat(12)
            .as_slice(),
    );
    input.extend_from_slice(b"\ndata: last\ndata: line\ndata: unterminated");
    input
}

#[test]
fn runs_of_short_data_lines_parse_like_the_reference_however_split() {
    // A block's short `data: ` lines that lie whole in a chunk are appended in a run, without
    // the line loop's general steps: whole, in pieces of every size and split anywhere, they
    // must give what the reference parser gives.
    let input = many_short_data_lines();
    for (options, flush) in [(COMMENTS, false), (FLUSH, true)] {
        let outcome = parse_every_way(options, &input);
        let mut expected = reference_parse(&input, flush);
        if !options.comments {
            expected
                .seen
                .retain(|seen| !matches!(seen, Seen::Comment(_)));
        }
        assert_eq!(outcome, expected, "flush {flush}");
    }
}

#[test]
fn runs_of_short_data_lines_keep_the_size_limit() {
    // Lines are appended in a run only while they surely fit the limit (data decoded, so an
    // invalid byte counts three times); near it the general path decides, and a stream must
    // be refused exactly where it is when fed a byte at a time, which never takes the run.
    let input =
        b"data: 0123456789\ndata: abc\ndata: \xFF\xFF\xFF\ndata: \ndata: 0123456789abcdef\n\
        data: \xFF\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n\ndata: x\ndata: y\n\n";
    let (mut refused, mut accepted) = (false, false);
    for limit in 1..=4 * input.len() {
        let options = Options {
            max_event_size: Some(limit),
            ..DEFAULTS
        };
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let expected = run_chunks(options, &bytes);
        assert_eq!(run_chunks(options, &[input]), expected, "limit {limit}");
        for split in [1, 17, 40, 100] {
            let (head, tail) = input.split_at(split);
            assert_eq!(
                run_chunks(options, &[head, tail]),
                expected,
                "limit {limit}, split at {split}"
            );
        }
        refused |= expected.error.is_some();
        accepted |= expected.error.is_none();
    }
    assert!(refused && accepted);
}

#[test]
fn a_resuming_writer_omits_the_id_the_client_already_has() {
    let mut writer = SseWriter::resuming("7").unwrap();
    assert_eq!(writer.client_last_event_id(), "7");
    let mut out = String::new();
    writer
        .write_event(&mut out, &SseEvent::new("", "x").with_id("7"))
        .unwrap();
    writer
        .write_event(&mut out, &SseEvent::new("", "y").with_id("8"))
        .unwrap();
    assert_eq!(out, "data: x\n\nid: 8\ndata: y\n\n");
    assert_eq!(writer.client_last_event_id(), "8");
}

#[test]
fn a_borrowed_event_equals_an_owned_one_only_when_every_part_matches() {
    struct Compare(Vec<[bool; 5]>);
    impl SseBorrowedSink for Compare {
        fn on_event(&mut self, event: SseEventRef<'_>) {
            let retry = Duration::from_millis(5);
            self.0.push([
                event == SseEvent::new("t", "d").with_id("1").with_retry(retry),
                event == SseEvent::new("u", "d").with_id("1").with_retry(retry),
                event == SseEvent::new("t", "e").with_id("1").with_retry(retry),
                event == SseEvent::new("t", "d").with_id("2").with_retry(retry),
                event == SseEvent::new("t", "d").with_id("1"),
            ]);
        }
    }
    let mut sink = Compare(Vec::new());
    SseParser::new()
        .feed_borrowed(b"retry: 5\nevent: t\nid: 1\ndata: d\n\n", &mut sink)
        .unwrap();
    assert_eq!(sink.0, [[true, false, false, false, false]]);
}
