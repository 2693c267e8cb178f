//! Workload 1: SSE parser throughput, bytes → events, in memory.
//!
//! Three stream shapes — (a) OpenAI-like ~170-byte `event:`+`data:` blocks, (b) events whose data
//! is one 1 MiB line, (c) events of ten 40-byte `data:` lines — each fed whole and in 4 KiB,
//! 7-byte and 1-byte chunks to kdnet's `SseParser` (borrowed events, and owned `SseEvent`s as a
//! second row) and to every peer parser, plus a memchr-only
//! line scan of the same chunks as the ceiling. Every subject must produce the same number of
//! events and the same total data length (checked, panics otherwise). Figures are MB/s
//! (10^6 bytes of input per second), median of `COMPARE_REPS` runs; each run builds a fresh
//! parser and parses the whole input.
//!
//! Stream-based peers are driven without a runtime (`Waker::noop()`) from a
//! `futures_util::stream::iter` over `&'static [u8]` chunks (zero-copy for every peer; sseer turns
//! them into `Bytes::from_static`). A peer whose cost grows quadratically is measured on a smaller
//! input; the subject name then says which (e.g. `eventsource-stream [256 KiB input]`).
//!
//! Finally two rows show kdnet's time ratio between inputs of size N and 4N (≈4 means linear).

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use eventsource_stream::Eventsource;
use futures_util::Stream;
use kdnet::network::sse::{SseEvent, SseEventRef, SseParser};
use kdnet_compare::{Better, Row, median, median_of, reps};

const MIB: usize = 1024 * 1024;

/// What a subject found: number of events and the sum of their data lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Tally {
    events: u64,
    data_bytes: u64,
}

impl Tally {
    fn add(&mut self, data_len: usize) {
        self.events += 1;
        self.data_bytes += data_len as u64;
    }
}

/// One input stream and what a correct parser must find in it.
struct Input {
    bytes: &'static [u8],
    expected: Tally,
    /// Line terminators in `bytes` (what the memchr ceiling counts).
    lines: u64,
}

impl Input {
    fn new(bytes: Vec<u8>, expected: Tally) -> Input {
        let lines = memchr::memchr2_iter(b'\r', b'\n', &bytes).count() as u64;
        // Leaked once: peers that take `Into<Bytes>` get zero-copy `Bytes::from_static` chunks.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        Input {
            bytes,
            expected,
            lines,
        }
    }
}

impl Input {
    /// The same bytes, expecting what the memchr ceiling counts (line ends, no data).
    fn as_lines(&self) -> Input {
        Input {
            bytes: self.bytes,
            expected: Tally {
                events: self.lines,
                data_bytes: 0,
            },
            lines: self.lines,
        }
    }
}

/// (a) An OpenAI Responses-API-like stream of `response.output_text.delta` blocks (~170 bytes).
fn openai_stream(target_len: usize) -> Input {
    let mut out = Vec::with_capacity(target_len + 256);
    let mut expected = Tally::default();
    let mut sequence_number = 0u64;
    while out.len() < target_len {
        let data = format!(
            "{{\"type\":\"response.output_text.delta\",\"sequence_number\":{sequence_number},\
             \"item_id\":\"msg_68c1f\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\"}}"
        );
        out.extend_from_slice(b"event: response.output_text.delta\ndata: ");
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\n\n");
        expected.add(data.len());
        sequence_number += 1;
    }
    Input::new(out, expected)
}

/// (b) `events` events whose data is one line of `line_len` printable ASCII bytes.
fn long_line_stream(events: usize, line_len: usize) -> Input {
    let pattern = b"{\"delta\":\"The quick brown fox jumps over the lazy dog 0123456789\"},";
    let mut out = Vec::with_capacity(events * (line_len + 8));
    let mut expected = Tally::default();
    for _ in 0..events {
        out.extend_from_slice(b"data: ");
        let start = out.len();
        out.extend(pattern.iter().copied().cycle().take(line_len));
        debug_assert_eq!(out.len() - start, line_len);
        out.extend_from_slice(b"\n\n");
        expected.add(line_len);
    }
    Input::new(out, expected)
}

/// (c) Events of ten `data:` lines with 40-byte values each.
fn multi_line_stream(target_len: usize) -> Input {
    let value = "0123456789".repeat(4);
    let mut out = Vec::with_capacity(target_len + 512);
    let mut expected = Tally::default();
    while out.len() < target_len {
        for _ in 0..10 {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        expected.add(10 * value.len() + 9);
    }
    Input::new(out, expected)
}

// ----- subjects: each parses `input` fed in `chunk`-byte pieces and tallies the events -----

/// kdnet's fastest public path: borrowed events (`feed_borrowed`), as a peer's zero-copy events.
fn kdnet(input: &'static [u8], chunk: usize) -> Tally {
    let mut parser = SseParser::new();
    let mut tally = Tally::default();
    let mut sink = |event: SseEventRef<'_>| tally.add(event.data().len());
    for piece in input.chunks(chunk) {
        parser
            .feed_borrowed(piece, &mut sink)
            .expect("kdnet: within the size limit");
    }
    parser.finish_borrowed(&mut sink).expect("kdnet: finish");
    tally
}

/// kdnet with an owned `SseEvent` per event (`feed`), what `SseClient` delivers.
fn kdnet_owned(input: &'static [u8], chunk: usize) -> Tally {
    let mut parser = SseParser::new();
    let mut tally = Tally::default();
    let mut sink = |event: SseEvent| tally.add(event.data().len());
    for piece in input.chunks(chunk) {
        parser
            .feed(piece, &mut sink)
            .expect("kdnet: within the size limit");
    }
    parser.finish(&mut sink).expect("kdnet: finish");
    tally
}

fn sse_parse(input: &'static [u8], chunk: usize) -> Tally {
    let mut parser = sse_parse::SseParser::new();
    let mut tally = Tally::default();
    for piece in input.chunks(chunk) {
        parser.feed(piece);
        while let Some(event) = parser.next_event() {
            tally.add(event.data.len());
        }
    }
    parser.finish();
    while let Some(event) = parser.next_event() {
        tally.add(event.data.len());
    }
    tally
}

fn sse_core(input: &'static [u8], chunk: usize) -> Tally {
    // Same limit as kdnet's default (sse-core's own default, 512 KiB, would reject workload b).
    let limit = std::num::NonZeroUsize::new(16 * MIB).expect("non-zero");
    let mut decoder = sse_core::SseDecoder::with_limit(limit);
    let mut tally = Tally::default();
    for piece in input.chunks(chunk) {
        let mut buf: &[u8] = piece;
        while let Some(item) = decoder.next(&mut buf) {
            match item.expect("sse-core: within the size limit") {
                sse_core::SseEvent::Message(message) => tally.add(message.data.len()),
                sse_core::SseEvent::Retry(_) => {}
            }
        }
        assert!(buf.is_empty(), "sse-core left input unconsumed");
    }
    tally
}

/// Polls an in-memory stream to its end with a no-op waker (it never returns `Pending`).
fn drain<S, T, E>(stream: S, mut on_item: impl FnMut(T))
where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Debug,
{
    let mut stream = pin!(stream);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(item))) => on_item(item),
            Poll::Ready(Some(Err(error))) => panic!("stream error: {error:?}"),
            Poll::Ready(None) => return,
            Poll::Pending => panic!("an in-memory stream returned Pending"),
        }
    }
}

fn chunk_stream<E>(
    input: &'static [u8],
    chunk: usize,
) -> impl Stream<Item = Result<&'static [u8], E>> {
    futures_util::stream::iter(input.chunks(chunk).map(Ok))
}

fn eventsource_stream(input: &'static [u8], chunk: usize) -> Tally {
    let mut tally = Tally::default();
    let stream = chunk_stream::<std::convert::Infallible>(input, chunk).eventsource();
    drain(stream, |event| tally.add(event.data.len()));
    tally
}

fn sse_stream(input: &'static [u8], chunk: usize) -> Tally {
    let mut tally = Tally::default();
    let stream = sse_stream::SseByteStream::new(chunk_stream::<std::io::Error>(input, chunk));
    drain(stream, |block| {
        // sse-stream also yields blocks without data; none of these inputs has one.
        let data = block
            .data
            .expect("sse-stream: every block here carries data");
        tally.add(data.len());
    });
    tally
}

fn sseer(input: &'static [u8], chunk: usize) -> Tally {
    let mut tally = Tally::default();
    let stream = sseer::EventStream::new(chunk_stream::<std::convert::Infallible>(input, chunk));
    drain(stream, |event| tally.add(event.data.len()));
    tally
}

/// The ceiling: find every line end in the same chunks, do nothing else.
fn memchr_ceiling(input: &'static [u8], chunk: usize) -> u64 {
    let mut lines = 0u64;
    for piece in input.chunks(chunk) {
        lines += memchr::memchr2_iter(b'\r', b'\n', piece).count() as u64;
    }
    lines
}

type Parse = fn(&'static [u8], usize) -> Tally;

const PEERS: &[(&str, Parse)] = &[
    ("eventsource-stream", eventsource_stream),
    ("sse-stream", sse_stream),
    ("sse-core", sse_core),
    ("sseer", sseer),
    ("sse-parse", sse_parse),
];

const FEEDS: &[(&str, usize)] = &[("whole", usize::MAX), ("4KiB", 4096), ("7B", 7), ("1B", 1)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    OpenAi,
    LongLines,
    MultiLine,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::OpenAi => "1a openai",
            Shape::LongLines => "1b 1MiB-lines",
            Shape::MultiLine => "1c 10x40B-lines",
        }
    }

    /// The input every subject gets (unless capped below): 16 MiB, whatever the feeding.
    fn input(self) -> Input {
        match self {
            Shape::OpenAi => openai_stream(16 * MIB),
            Shape::LongLines => long_line_stream(16, MIB),
            Shape::MultiLine => multi_line_stream(16 * MIB),
        }
    }
}

/// A smaller input for a peer whose cost is quadratic on this shape and feeding, and the note that
/// goes into its subject name. `None`: the peer gets the row's full input.
fn cap(peer: &str, shape: Shape, chunk: usize) -> Option<(Input, &'static str)> {
    if peer != "eventsource-stream" {
        return None;
    }
    // eventsource-stream re-copies the whole unparsed buffer after every line (`String::split_off`)
    // and re-scans a partial line from its start on every chunk (nom streaming parser), so its
    // cost grows with (buffered bytes)²: whole inputs and long lines in small chunks.
    match (shape, chunk) {
        (Shape::OpenAi, usize::MAX) => Some((openai_stream(MIB), "[1 MiB input]")),
        (Shape::MultiLine, usize::MAX) => Some((multi_line_stream(MIB), "[1 MiB input]")),
        // On 1 MiB lines in 7-byte chunks one event alone would take about a minute (1-byte: ten).
        (Shape::LongLines, 7 | 1) => Some((
            long_line_stream(2, 16 * 1024),
            "[2 events of 16 KiB lines, not 1 MiB]",
        )),
        _ => None,
    }
}

/// Shortest timed sample: fast subjects parse the input several times per sample, so that timer
/// resolution and scheduler noise do not decide the figure.
const MIN_SAMPLE_SECS: f64 = 0.05;

/// One line of a row: who, on which bytes, and what they must find.
struct Subject<'a> {
    name: String,
    input: &'a Input,
    parse: Parse,
    expected: Tally,
    /// Parses per timed sample (from the warm-up run).
    runs: u32,
    samples: Vec<f64>,
}

impl Subject<'_> {
    /// One warm-up parse: checks the tally and sizes `runs` from its time.
    fn warm_up(&mut self, chunk: usize) {
        let secs = self.timed_parses(chunk, 1);
        self.runs = (MIN_SAMPLE_SECS / secs).ceil().clamp(1.0, 1000.0) as u32;
    }

    /// Seconds for `runs` parses (each tally checked).
    fn timed_parses(&self, chunk: usize, runs: u32) -> f64 {
        let start = Instant::now();
        for _ in 0..runs {
            let tally = (self.parse)(black_box(self.input.bytes), chunk);
            assert_eq!(
                tally, self.expected,
                "{} found different events (chunk {chunk})",
                self.name
            );
        }
        start.elapsed().as_secs_f64()
    }

    fn sample(&mut self, chunk: usize) {
        let secs = self.timed_parses(chunk, self.runs);
        let bytes = self.input.bytes.len() as f64 * f64::from(self.runs);
        self.samples.push(bytes / secs / 1e6);
    }
}

/// The row of kdnet's owned-event path.
const KDNET_OWNED: &str = "kdnet owned SseEvent";

/// The memchr ceiling as a subject: its "events" are line terminators, its data length 0.
fn ceiling(input: &'static [u8], chunk: usize) -> Tally {
    Tally {
        events: memchr_ceiling(input, chunk),
        data_bytes: 0,
    }
}

fn run_shape(shape: Shape) {
    let input = shape.input();
    for &(feed, chunk) in FEEDS {
        let workload = format!("{} {feed}", shape.label());
        let started = Instant::now();
        let capped: Vec<Option<(Input, &str)>> = PEERS
            .iter()
            .map(|&(peer, _)| cap(peer, shape, chunk))
            .collect();
        let subject = |name: String, input, parse, expected| Subject {
            name,
            input,
            parse,
            expected,
            runs: 1,
            samples: Vec::new(),
        };
        // Every subject is checked against the generator's count, kdnet included.
        let mut subjects = vec![
            subject("kdnet".into(), &input, kdnet as Parse, input.expected),
            subject(
                KDNET_OWNED.into(),
                &input,
                kdnet_owned as Parse,
                input.expected,
            ),
        ];
        for (&(peer, parse), capped) in PEERS.iter().zip(&capped) {
            subjects.push(match capped {
                None => subject(peer.into(), &input, parse, input.expected),
                Some((small, note)) => {
                    eprintln!(
                        "  {workload}: {peer} measured on {} bytes instead of {} (quadratic)",
                        small.bytes.len(),
                        input.bytes.len()
                    );
                    subject(format!("{peer} {note}"), small, parse, small.expected)
                }
            });
        }
        let lines = Tally {
            events: input.lines,
            data_bytes: 0,
        };
        subjects.push(subject("memchr ceiling".into(), &input, ceiling, lines));
        for s in &mut subjects {
            s.warm_up(chunk);
        }
        // Round-robin: a load change on the shared machine hits every subject alike.
        for _ in 0..reps() {
            for s in &mut subjects {
                s.sample(chunk);
            }
        }
        for s in &mut subjects {
            let value = median(&mut s.samples);
            Row::new(&workload, &s.name, value, "MB/s", Better::Higher).emit();
        }
        eprintln!(
            "  {workload}: {} bytes, {} events, {:.1} s",
            input.bytes.len(),
            input.expected.events,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Median over repetitions of (time per parse of `large`) / (time per parse of `small`); the two
/// are timed back to back in each repetition, so a load change on the machine hits both.
fn time_ratio(name: &str, parse: Parse, small: &Input, large: &Input, chunk: usize) -> f64 {
    fn subject<'a>(name: &str, parse: Parse, input: &'a Input, chunk: usize) -> Subject<'a> {
        let mut s = Subject {
            name: format!("{name} (linearity)"),
            input,
            parse,
            expected: input.expected,
            runs: 1,
            samples: Vec::new(),
        };
        s.warm_up(chunk);
        s
    }
    let small = subject(name, parse, small, chunk);
    let large = subject(name, parse, large, chunk);
    median_of(|| {
        let per_small = small.timed_parses(chunk, small.runs) / f64::from(small.runs);
        let per_large = large.timed_parses(chunk, large.runs) / f64::from(large.runs);
        per_large / per_small
    })
}

/// Time ratio between inputs of size 4N and N: ≈4 for linear time, ≈16 for quadratic.
fn linearity() {
    let row = |workload: &str, name: &str, parse: Parse, small: &Input, large: &Input, chunk| {
        let ratio = time_ratio(name, parse, small, large, chunk);
        let subject = format!("{name} 4N/N");
        Row::new(workload, &subject, ratio, "× time", Better::Lower).emit();
    };
    // More events (2 MiB → 8 MiB of ~170-byte blocks), one byte at a time.
    let (small, large) = (openai_stream(2 * MIB), openai_stream(8 * MIB));
    let workload = "1 linearity 1a 1B (2→8 MiB)";
    row(workload, "kdnet", kdnet, &small, &large, 1);
    // Longer lines (4 events of 1 MiB → 4 events of 4 MiB), in 4 KiB chunks.
    let (small, large) = (long_line_stream(4, MIB), long_line_stream(4, 4 * MIB));
    let workload = "1 linearity 1b 4KiB (1→4 MiB lines)";
    row(workload, "kdnet", kdnet, &small, &large, 4096);
    // The same bytes through the scan alone: how much of the ratio is cache, not algorithm.
    let (small, large) = (small.as_lines(), large.as_lines());
    row(workload, "memchr ceiling", ceiling, &small, &large, 4096);
    // The quadratic peer, on lines short enough to finish: 16 KiB → 64 KiB lines in 7-byte chunks.
    let (small, large) = (
        long_line_stream(2, 16 * 1024),
        long_line_stream(2, 64 * 1024),
    );
    let workload = "1 linearity 1b 7B (16→64 KiB lines)";
    row(workload, "kdnet", kdnet, &small, &large, 7);
    row(
        workload,
        "eventsource-stream",
        eventsource_stream,
        &small,
        &large,
        7,
    );
}

/// `w1_parser profile <a|b|c> <whole|4KiB|7B|1B> <subject> [runs]`: runs one subject on one
/// input `runs` times (default 1) and prints nothing on stdout — for callgrind.
fn profile(args: &[String]) {
    let shape = match args.first().map(String::as_str) {
        Some("a") => Shape::OpenAi,
        Some("b") => Shape::LongLines,
        Some("c") => Shape::MultiLine,
        other => panic!("profile: unknown shape {other:?}"),
    };
    let feed = args.get(1).map(String::as_str).unwrap_or("whole");
    let chunk = FEEDS
        .iter()
        .find(|(name, _)| *name == feed)
        .map(|&(_, chunk)| chunk)
        .unwrap_or_else(|| panic!("profile: unknown feeding {feed}"));
    let subject = args.get(2).map(String::as_str).unwrap_or("kdnet");
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(1);
    let input = shape.input();
    let parse = match subject {
        "kdnet" => kdnet as Parse,
        KDNET_OWNED => kdnet_owned as Parse,
        peer => {
            PEERS
                .iter()
                .find(|(name, _)| *name == peer)
                .unwrap_or_else(|| panic!("profile: unknown subject {peer}"))
                .1
        }
    };
    for _ in 0..runs {
        assert_eq!(parse(black_box(input.bytes), chunk), input.expected);
    }
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    if only.first().map(String::as_str) == Some("profile") {
        return profile(&only[1..]);
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for (name, shape) in [
        ("a", Shape::OpenAi),
        ("b", Shape::LongLines),
        ("c", Shape::MultiLine),
    ] {
        if wanted(name) {
            eprintln!("w1 {}", shape.label());
            run_shape(shape);
        }
    }
    if wanted("linearity") {
        linearity();
    }
}
