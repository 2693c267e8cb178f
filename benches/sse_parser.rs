//! Throughput of `SseParser` on three stream shapes, each fed whole and in 4 KiB, 7-byte and
//! 1-byte chunks, against a memchr-only line scan of the same bytes (the ceiling).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kdnet::network::sse::{SseEvent, SseParser};

/// An OpenAI Responses-API-like stream: ~170-byte `response.output_text.delta` blocks.
fn openai_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for sequence_number in 0..6_000 {
        out.extend_from_slice(
            format!(
                "event: response.output_text.delta\n\
                 data: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{sequence_number},\
                 \"item_id\":\"msg_68c1f\",\"output_index\":0,\"content_index\":0,\
                 \"delta\":\"Hel\"}}\n\n"
            )
            .as_bytes(),
        );
    }
    out
}

/// Four events whose data is one 1 MiB line.
fn huge_line_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.extend_from_slice(b"data: ");
        out.extend(std::iter::repeat_n(b'a', 1024 * 1024));
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// Events of ten 40-byte data lines each.
fn multi_line_stream() -> Vec<u8> {
    let line = format!("data: {}\n", "0123456789".repeat(4));
    let mut out = Vec::new();
    for _ in 0..2_500 {
        for _ in 0..10 {
            out.extend_from_slice(line.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

fn parse_in_chunks(input: &[u8], chunk_size: usize) -> usize {
    let mut parser = SseParser::new();
    let mut data_bytes = 0usize;
    let mut sink = |event: SseEvent| data_bytes += event.data().len();
    for chunk in input.chunks(chunk_size) {
        parser.feed(chunk, &mut sink).expect("within the limit");
    }
    parser.finish(&mut sink).expect("within the limit");
    data_bytes
}

/// The ceiling: find every line end, do nothing else.
fn memchr_line_scan(input: &[u8]) -> usize {
    memchr::memchr2_iter(b'\r', b'\n', input).count()
}

fn bench_stream(c: &mut Criterion, name: &str, input: &[u8]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(10);
    group.bench_function("memchr_baseline", |b| {
        b.iter(|| memchr_line_scan(black_box(input)))
    });
    for (label, chunk_size) in [("whole", input.len()), ("4KiB", 4096), ("7B", 7), ("1B", 1)] {
        group.bench_with_input(BenchmarkId::new("parse", label), &chunk_size, |b, &size| {
            b.iter(|| parse_in_chunks(black_box(input), size))
        });
    }
    group.finish();
}

fn sse_parser(c: &mut Criterion) {
    bench_stream(c, "openai_170B_blocks", &openai_stream());
    bench_stream(c, "one_1MiB_line", &huge_line_stream());
    bench_stream(c, "ten_40B_lines", &multi_line_stream());
}

criterion_group!(benches, sse_parser);
criterion_main!(benches);
