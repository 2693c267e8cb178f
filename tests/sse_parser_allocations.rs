//! `SseParser::feed_borrowed` allocates nothing per event once warmed up, counted by a global
//! allocator wrapper per thread (tests run in parallel threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kdnet::network::sse::{SseEventRef, SseParser};

struct CountingAllocator;

thread_local! {
    /// Allocations (and reallocations) made by this thread; const-initialised, so reading it never
    /// allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|count| count.set(count.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the wrapper only increments a thread-local counter,
// which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same layout, as the caller guaranteed for this call.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (via `alloc`/`realloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees for `ptr`, `layout` and `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// OpenAI-like events (type, single data line, short changing IDs) plus multi-line events, fed in
/// 4 KiB chunks so some events straddle chunks.
fn stream(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..events {
        out.extend_from_slice(
            format!(
                "event: response.output_text.delta\nid: {n}\ndata: {{\"sequence_number\":{n},\"delta\":\"Hel\"}}\n\n\
                 data: line one\ndata: line two {n}\n\n"
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn borrowed_parsing_allocates_nothing_per_event() {
    let input = stream(5_000);
    let mut parser = SseParser::new();
    let mut events = 0usize;
    let mut data_bytes = 0usize;
    let mut sink = |event: SseEventRef<'_>| {
        events += 1;
        data_bytes += event.data().len() + event.last_event_id().len() + event.event_type().len();
    };
    // The first pass grows the parser's buffers to what this stream needs; the second must not
    // allocate at all.
    let mut allocations_per_pass = Vec::new();
    for _ in 0..2 {
        let before = allocations();
        for chunk in input.chunks(4096) {
            parser.feed_borrowed(chunk, &mut sink).unwrap();
        }
        allocations_per_pass.push(allocations() - before);
    }
    assert_eq!(events, 2 * 10_000);
    assert!(data_bytes > 0);
    assert!(allocations_per_pass[0] <= 16, "{allocations_per_pass:?}");
    assert_eq!(
        allocations_per_pass[1], 0,
        "allocations while parsing 10,000 events again"
    );
}

#[test]
fn owned_parsing_allocates_only_the_event_data() {
    // The counterpart, so the counter is known to work: one allocation per owned event (its data);
    // IDs of up to 23 bytes are stored inline and the repeated type is shared.
    let measured = stream(1_000);
    let mut parser = SseParser::new();
    let mut events = 0usize;
    let before = allocations();
    for chunk in measured.chunks(4096) {
        parser.feed(chunk, &mut |_event| events += 1).unwrap();
    }
    let allocations = allocations() - before;
    assert_eq!(events, 2_000);
    // A few more for the first type and the parser's buffers.
    assert!(
        (2_000..=2_000 + 16).contains(&allocations),
        "{allocations} allocations for 2,000 owned events"
    );
}
