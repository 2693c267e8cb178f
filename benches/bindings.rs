//! Signal costs: emit with 1, 4 and 16 slots next to a plain `Vec<Box<dyn FnMut(&i32)>>` call
//! baseline measured in the same run, and connect + disconnect churn.
//!
//! Compare `emit/signal/N` with `emit/vec_box_fnmut/N`: the difference divided by N is what a
//! slot call costs on top of a boxed-closure call (the target is at most 1.2× the plain call).
//! Run: `cargo bench --bench bindings`.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kdnet::{Property, ScopedConnection, Signal};

const SLOT_COUNTS: [usize; 3] = [1, 4, 16];

/// The baseline: what a hand-written callback list costs.
type BoxedSlot = Box<dyn FnMut(&i32)>;

/// The work every slot does: small enough that call overhead dominates, visible enough that the
/// optimiser cannot drop it.
fn accumulate(sink: &Cell<i64>, v: i32) {
    sink.set(sink.get().wrapping_add(i64::from(v)));
}

fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");
    for slots in SLOT_COUNTS {
        group.throughput(Throughput::Elements(slots as u64));

        let sink = Rc::new(Cell::new(0i64));
        let mut baseline: Vec<BoxedSlot> = (0..slots)
            .map(|_| {
                let s = sink.clone();
                Box::new(move |v: &i32| accumulate(&s, *v)) as BoxedSlot
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("vec_box_fnmut", slots), &slots, |b, _| {
            b.iter(|| {
                let arg = black_box(&1);
                for f in black_box(&mut baseline).iter_mut() {
                    f(arg);
                }
            })
        });

        let signal: Signal<i32> = Signal::new();
        for _ in 0..slots {
            let s = sink.clone();
            signal.connect(move |v| accumulate(&s, *v)).release();
        }
        group.bench_with_input(BenchmarkId::new("signal", slots), &slots, |b, _| {
            b.iter(|| black_box(&signal).emit(black_box(&1)))
        });
        black_box(sink.get());
    }
    group.finish();
}

fn emit_with_blocked_and_reflective_slots(c: &mut Criterion) {
    // 16 slots: half blocked, the rest reflective (the shape sockets use internally).
    let signal: Signal<i32> = Signal::new();
    let sink = Rc::new(Cell::new(0i64));
    for i in 0..16 {
        let s = sink.clone();
        let handle = signal.connect_reflective(move |_own, v| accumulate(&s, *v));
        if i % 2 == 0 {
            handle.block(true).unwrap();
        }
    }
    c.bench_function("emit/blocked_half_reflective/16", |b| {
        b.iter(|| black_box(&signal).emit(black_box(&1)))
    });
}

fn connect_disconnect(c: &mut Criterion) {
    let mut group = c.benchmark_group("connect_disconnect");
    for existing in [0usize, 16] {
        let signal: Signal<i32> = Signal::new();
        for _ in 0..existing {
            signal
                .connect(|v| {
                    black_box(*v);
                })
                .release();
        }
        group.bench_with_input(BenchmarkId::new("handle", existing), &existing, |b, _| {
            b.iter(|| {
                let handle = signal.connect(|v| {
                    black_box(*v);
                });
                handle.disconnect();
            })
        });
        group.bench_with_input(BenchmarkId::new("scoped", existing), &existing, |b, _| {
            b.iter(|| {
                let scoped: ScopedConnection = signal
                    .connect(|v| {
                        black_box(*v);
                    })
                    .into();
                drop(black_box(scoped));
            })
        });
    }
    group.finish();
}

fn property_set(c: &mut Criterion) {
    let property = Property::new(0u64);
    let sink = Rc::new(Cell::new(0u64));
    let s = sink.clone();
    property
        .value_changed
        .connect(move |v| s.set(s.get().wrapping_add(*v)))
        .release();
    let mut next = 0u64;
    c.bench_function("property/set_with_one_listener", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            property.set(black_box(next))
        })
    });
}

criterion_group!(
    benches,
    emit,
    emit_with_blocked_and_reflective_slots,
    connect_disconnect,
    property_set
);
criterion_main!(benches);
