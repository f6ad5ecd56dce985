//! The decoding hot path of `PackedLlama`: block-quantised matrix-vector products (Q4_1 and
//! Q8_0 weights times 8-bit activations) at the shapes of SmolLM2-135M, and the activation
//! quantisation in front of each. Pure Rust, no model or LibTorch needed.
//!
//! Run: `cargo bench -p aligner-model --bench qmatmul`
#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;

use aligner_model::qmatmul::{Activations, Q4Matrix, Q8Matrix};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Deterministic values in about [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn kernels(c: &mut Criterion) {
    // (name, rows, cols): fused q/k/v, fused gate/up, down, and the tied LM head.
    let shapes = [
        ("qkv", 960, 576),
        ("gate_up", 3072, 576),
        ("down", 576, 1536),
        ("lm_head", 49152, 576),
    ];
    let mut group = c.benchmark_group("qmatmul");
    for (name, rows, cols) in shapes {
        let w = values(rows * cols, rows as u64);
        let x = values(cols, 7);
        let xq = Activations::quantize(&x, cols).expect("whole blocks");
        let q4 = Q4Matrix::from_f32(&w, rows, cols).expect("whole blocks");
        let q8 = Q8Matrix::from_f32(&w, rows, cols).expect("whole blocks");
        let mut out = vec![0f32; rows];
        group.throughput(Throughput::Bytes(q4.bytes() as u64));
        group.bench_function(format!("q4_1/{name}"), |b| {
            b.iter(|| q4.matmul_t(black_box(&xq), &mut out))
        });
        group.throughput(Throughput::Bytes(q8.bytes() as u64));
        group.bench_function(format!("q8_0/{name}"), |b| {
            b.iter(|| q8.matmul_t(black_box(&xq), &mut out))
        });
    }
    // Several activation rows at once (a batched decoding step, a drafted sentence): each
    // block's codes are unpacked once for a tile of rows.
    for m in [4, 16] {
        for (name, rows, cols) in [("gate_up", 3072, 576), ("lm_head", 49152, 576)] {
            let w = values(rows * cols, rows as u64);
            let xq = Activations::quantize(&values(m * cols, 9), cols).expect("whole blocks");
            let q4 = Q4Matrix::from_f32(&w, rows, cols).expect("whole blocks");
            let mut out = vec![0f32; rows * m];
            group.throughput(Throughput::Bytes(q4.bytes() as u64));
            group.bench_function(format!("q4_1/{name}/x{m}"), |b| {
                b.iter(|| q4.matmul_t(black_box(&xq), &mut out))
            });
        }
    }
    let x = values(1536, 3);
    group.throughput(Throughput::Elements(x.len() as u64));
    group.bench_function("quantize/1536", |b| {
        b.iter(|| Activations::quantize(black_box(&x), 1536))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Numbers only: plotting needs system fonts, which servers often lack (criterion panics).
    config = Criterion::default().without_plots();
    targets = kernels
}
criterion_main!(benches);
