//! The model's hot paths on SmolLM2-135M's shapes: one decoding step (batch 1, 4, 8 and 16
//! sequences with their own caches, `CausalLm::decode_step`) for the packed int4 / int8 model and
//! the f32 `Llama`, a 512-token prefill, and a draft verification pass (75 tokens after a cached
//! prompt) with logits at every position or only at the last 21 (`CausalLm::forward_tail`), and
//! passes of 4-75 new tokens with the dense copies in f32 and in bf16. Uses the embedded model
//! when `cargo xtask setup` has imported it, else random weights of the same shapes (the speed
//! does not depend on the values).
//!
//! Run: `cargo bench -p aligner-model --bench model`
#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use aligner_model::{CausalLm, KvCache, PackedLlama, WeightFormat};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor};

/// A one-row cache holding a 64-token context.
fn primed(lm: &dyn CausalLm) -> KvCache {
    let mut cache = lm.new_cache(1);
    let ids = Tensor::arange_start(100, 164, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let _ = lm
        .forward_last(&ids, &mut cache, None)
        .expect("prime the cache");
    cache
}

fn decode(c: &mut Criterion) {
    let _guard = tch::no_grad_guard();
    let (llama, _vs) = common::smollm2();
    let int4 = PackedLlama::from_model(&llama, Kind::Float, WeightFormat::Int4).expect("int4");
    let int8 = PackedLlama::from_model(&llama, Kind::Float, WeightFormat::Int8).expect("int8");
    let models: [(&str, &dyn CausalLm); 3] = [
        ("packed_int4", &int4),
        ("packed_int8", &int8),
        ("llama_f32", &llama),
    ];
    let mut group = c.benchmark_group("decode_step");
    group.sample_size(20);
    for (name, lm) in models {
        for rows in [1usize, 4, 8, 16] {
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_function(format!("{name}/{rows}"), |b| {
                let mut caches: Vec<KvCache> = (0..rows).map(|_| primed(lm)).collect();
                let tokens: Vec<u32> = (0..rows as u32).map(|r| 200 + r).collect();
                b.iter(|| {
                    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                    let logits = lm.decode_step(&tokens, &mut refs).expect("step");
                    // Back to the 64-token context (free), so every step sees the same length.
                    refs.iter_mut().for_each(|c| c.truncate(64));
                    black_box(logits)
                });
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("prefill");
    group.sample_size(10);
    group.throughput(Throughput::Elements(512));
    let ids = Tensor::arange_start(100, 612, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    for (name, lm) in [
        ("packed_int4", &int4 as &dyn CausalLm),
        ("llama_f32", &llama),
    ] {
        group.bench_function(format!("{name}/512"), |b| {
            b.iter(|| {
                let mut cache = lm.new_cache(1);
                black_box(lm.forward(&ids, &mut cache, None).expect("prefill"))
            });
        });
    }
    group.finish();

    // A Stream Aligner draft verification: 75 new tokens after a cached 120-token prompt, of
    // which the last 21 (a 20-token draft and the position before it) need logits.
    let mut group = c.benchmark_group("verify_pass");
    group.sample_size(10);
    group.throughput(Throughput::Elements(75));
    let context = Tensor::arange_start(100, 220, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let new = Tensor::arange_start(300, 375, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let mut cache = int8.new_cache(1);
    let _ = int8
        .forward_last(&context, &mut cache, None)
        .expect("prime the cache");
    for (name, tail) in [
        ("packed_int8/all_logits", None),
        ("packed_int8/last_21", Some(21)),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                cache.truncate(120);
                black_box(match tail {
                    None => int8.forward(&new, &mut cache, None),
                    Some(n) => int8.forward_tail(&new, &mut cache, None, n),
                })
                .expect("verify pass")
            });
        });
    }
    group.finish();

    // Passes of a few new tokens after a cached 120-token prompt, with the layers' dense copies
    // in f32 and in bf16 (`PackedLlama::dense_kind`): short ones run on the blocks whatever the
    // copies, longer ones on the copies (`cpu::Tuning::short_pass_rows` is where they meet).
    let mut group = c.benchmark_group("short_pass");
    group.sample_size(10);
    let with_dense = |kind| {
        PackedLlama::from_model_with(&llama, Kind::Float, WeightFormat::Int8, kind).expect("pack")
    };
    for (name, lm) in [
        ("dense_f32", with_dense(Kind::Float)),
        ("dense_bf16", with_dense(Kind::BFloat16)),
    ] {
        let mut cache = lm.new_cache(1);
        let _ = lm
            .forward_last(&context, &mut cache, None)
            .expect("prime the cache");
        for rows in [4i64, 8, 9, 12, 16, 32, 75] {
            group.throughput(Throughput::Elements(rows as u64));
            let new = new.narrow(1, 0, rows);
            group.bench_function(format!("packed_int8_{name}/{rows}"), |b| {
                b.iter(|| {
                    cache.truncate(120);
                    black_box(lm.forward_last(&new, &mut cache, None)).expect("pass")
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Numbers only: plotting needs system fonts, which servers often lack (criterion panics).
    config = Criterion::default().without_plots();
    targets = decode
}
criterion_main!(benches);
