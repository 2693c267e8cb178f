//! Fuzz target `sse_parser`: the WHATWG `text/event-stream` parser.
//!
//! Input layout: byte 0 holds option bits (flush the unterminated block at EOF, report comments,
//! use a tiny size limit), byte 1 the size limit when tiny, bytes 2..6 the chunk sizes for the
//! split feeding; everything after that is the stream.
//!
//! Oracles:
//! 1. Chunking: feeding the stream whole, in chunks of the sizes above (cycled), and one byte at
//!    a time gives the same sequence of events, comments, retry values and error, and the same
//!    last event ID and reconnection time afterwards.
//! 2. Reference model: with the default limit (never reached by fuzz-sized inputs) the result
//!    equals a direct transcription of the spec (HTML §9.2.6): decode the whole stream with
//!    replacement after removing one leading BOM, split into lines, interpret each line.
//! 3. Limits: no event's data is longer than the parser's limit, and an error is only ever
//!    `EventTooLarge` with the configured limit.
//! 4. An error is sticky: `finish` after a failed `feed` fails with the same error.
//! 5. Borrowed events: `feed_borrowed`/`finish_borrowed` (split feeding) report exactly what
//!    `feed`/`finish` do, and each borrowed event equals its owned copy.
#![no_main]

use std::time::Duration;

use kdnet::network::sse::{
    DEFAULT_MAX_EVENT_SIZE, SseBorrowedSink, SseEvent, SseEventRef, SseParseError, SseParser,
    SseSink,
};
use libfuzzer_sys::fuzz_target;

const FLUSH_AT_EOF: u8 = 1;
const REPORT_COMMENTS: u8 = 2;
const TINY_LIMIT: u8 = 4;
const HEADER_LEN: usize = 6;

/// Everything the parser reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Event(SseEvent),
    Comment(String),
    Retry(Duration),
    Error(SseParseError),
}

#[derive(Default)]
struct Log(Vec<Item>);

impl SseSink for Log {
    fn on_event(&mut self, event: SseEvent) {
        self.0.push(Item::Event(event));
    }
    fn on_comment(&mut self, comment: &str) {
        self.0.push(Item::Comment(comment.to_owned()));
    }
    fn on_retry(&mut self, retry: Duration) {
        self.0.push(Item::Retry(retry));
    }
}

impl SseBorrowedSink for Log {
    fn on_event(&mut self, event: SseEventRef<'_>) {
        let owned = event.to_event();
        assert_eq!(event, owned, "borrowed event vs its owned copy");
        self.0.push(Item::Event(owned));
    }
    fn on_comment(&mut self, comment: &str) {
        self.0.push(Item::Comment(comment.to_owned()));
    }
    fn on_retry(&mut self, retry: Duration) {
        self.0.push(Item::Retry(retry));
    }
}

/// Which parser entry points a run uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Events {
    Owned,
    Borrowed,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Item>,
    last_event_id: String,
    reconnection_time: Option<Duration>,
}

#[derive(Clone, Copy)]
struct Options {
    flush: bool,
    comments: bool,
    limit: usize,
}

fn parser(options: Options) -> SseParser {
    let mut parser = SseParser::with_max_event_size(options.limit);
    parser.set_flush_unterminated_at_eof(options.flush);
    parser.set_report_comments(options.comments);
    parser
}

/// Feeds `stream` in pieces of the given sizes (cycled), then finishes.
fn run(options: Options, stream: &[u8], sizes: &[usize]) -> Outcome {
    run_with(options, stream, sizes, Events::Owned)
}

fn run_with(options: Options, stream: &[u8], sizes: &[usize], events: Events) -> Outcome {
    let mut parser = parser(options);
    let mut log = Log::default();
    let mut rest = stream;
    let mut failed = None;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        let fed = match events {
            Events::Owned => parser.feed(chunk, &mut log),
            Events::Borrowed => parser.feed_borrowed(chunk, &mut log),
        };
        if let Err(e) = fed {
            failed = Some(e);
            break;
        }
    }
    let finished = match events {
        Events::Owned => parser.finish(&mut log),
        Events::Borrowed => parser.finish_borrowed(&mut log),
    };
    match failed {
        Some(e) => {
            // The error is sticky until the body ends: `finish` returns it too.
            assert_eq!(finished, Err(e.clone()), "finish after a failed feed");
            log.0.push(Item::Error(e));
        }
        None => {
            if let Err(e) = finished {
                log.0.push(Item::Error(e));
            }
        }
    }
    Outcome {
        items: log.0,
        last_event_id: parser.last_event_id().to_owned(),
        reconnection_time: parser.reconnection_time(),
    }
}

fn check_limits(options: Options, outcome: &Outcome) {
    for item in &outcome.items {
        match item {
            Item::Event(event) => assert!(
                event.data().len() <= options.limit,
                "event data of {} bytes over the limit {}",
                event.data().len(),
                options.limit
            ),
            Item::Error(SseParseError::EventTooLarge { limit }) => {
                assert_eq!(*limit, options.limit)
            }
            Item::Error(other) => panic!("unexpected error {other:?}"),
            Item::Comment(_) | Item::Retry(_) => {}
        }
    }
    // Nothing may follow an error.
    if let Some(pos) = outcome
        .items
        .iter()
        .position(|i| matches!(i, Item::Error(_)))
    {
        assert_eq!(pos + 1, outcome.items.len(), "items after an error");
    }
}

/// The spec's algorithm written as plainly as possible, on the whole stream at once.
fn reference(options: Options, stream: &[u8]) -> Outcome {
    let stream = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let text = String::from_utf8_lossy(stream);

    // Split into lines; the text after the last line end is the unterminated line.
    let mut lines = Vec::new();
    let mut rest: &str = &text;
    while let Some(end) = rest.find(['\r', '\n']) {
        lines.push(&rest[..end]);
        let after = if rest[end..].starts_with("\r\n") {
            end + 2
        } else {
            end + 1
        };
        rest = &rest[after..];
    }
    let unterminated = rest;

    let mut model = Model::default();
    for line in lines {
        model.line(options, line);
    }
    if options.flush {
        if !unterminated.is_empty() {
            model.line(options, unterminated);
        }
        model.dispatch();
    }
    Outcome {
        items: model.items,
        last_event_id: model.last_event_id,
        reconnection_time: model.reconnection_time,
    }
}

#[derive(Default)]
struct Model {
    items: Vec<Item>,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    block_retry: Option<Duration>,
    reconnection_time: Option<Duration>,
}

impl Model {
    fn line(&mut self, options: Options, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "" if options.comments => self.items.push(Item::Comment(value.to_owned())),
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // kdnet saturates huge values instead of ignoring them.
                let millis = value.bytes().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                let retry = Duration::from_millis(millis);
                self.reconnection_time = Some(retry);
                self.block_retry = Some(retry);
                self.items.push(Item::Retry(retry));
            }
            // Comments when not reported, ignored ids and retries, unknown fields.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id = self.id_buffer.clone();
        let retry = self.block_retry.take();
        let event_type = std::mem::take(&mut self.event_type);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let mut event = SseEvent::new(&event_type, data).with_id(&self.last_event_id);
        if let Some(retry) = retry {
            event = event.with_retry(retry);
        }
        self.items.push(Item::Event(event));
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < HEADER_LEN {
        return;
    }
    let (header, stream) = input.split_at(HEADER_LEN);
    let options = Options {
        flush: header[0] & FLUSH_AT_EOF != 0,
        comments: header[0] & REPORT_COMMENTS != 0,
        limit: if header[0] & TINY_LIMIT != 0 {
            usize::from(header[1])
        } else {
            DEFAULT_MAX_EVENT_SIZE
        },
    };
    let sizes: Vec<usize> = header[2..].iter().map(|&b| usize::from(b) + 1).collect();

    let whole = run(options, stream, &[stream.len()]);
    check_limits(options, &whole);
    let split = run(options, stream, &sizes);
    assert_eq!(whole, split, "whole vs chunks of {sizes:?}");
    let borrowed = run_with(options, stream, &sizes, Events::Borrowed);
    assert_eq!(
        whole, borrowed,
        "owned vs borrowed events, chunks of {sizes:?}"
    );
    // Byte-at-a-time hits every split point at once; bounded to keep executions fast.
    if stream.len() <= 4096 {
        let bytes = run(options, stream, &[1]);
        assert_eq!(whole, bytes, "whole vs one byte at a time");
    }
    if options.limit == DEFAULT_MAX_EVENT_SIZE {
        assert_eq!(
            whole,
            reference(options, stream),
            "parser vs reference model"
        );
    }
});
