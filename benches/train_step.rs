//! One SFT optimizer step (forward, backward, AdamW) of a SmolLM2-135M-shaped model in f32 on
//! batch 1 x 128 tokens: the hot path of `aligner-train`. Uses the embedded model when
//! imported, else random weights of its shapes. `examples/bench_train.rs` measures the
//! reference's batch 4 x 256 against transformers.
//!
//! Run: `cargo bench -p aligner-train --bench train_step`
#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use aligner_model::CausalLm;
use aligner_train::{Precision, ScheduleKind, TokenizedRow, TrainConfig, TrainData, Trainer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SEQ: usize = 128;

fn train_step(c: &mut Criterion) {
    let (model, vs) = common::smollm2();
    let vocab = model.config().vocab_size as i64;
    // Fixed pseudo-random ids, every position a target.
    let ids: Vec<i64> = (0..SEQ as i64).map(|i| (i * 7919 + 13) % vocab).collect();
    let row = TokenizedRow {
        input_ids: ids.clone(),
        labels: ids,
    };
    let mut config = TrainConfig::default();
    // The library default is the papers' bf16, which CPUs without native bf16 run far slower.
    config.model.precision = Precision::F32;
    config.optim.lr = 1e-5;
    config.optim.max_grad_norm = None;
    config.schedule.kind = ScheduleKind::Constant;
    config.schedule.warmup_ratio = 0.0;
    config.data.micro_batch_size = 1;
    config.data.grad_accum_steps = 1;
    config.data.max_length = SEQ;
    config.data.epochs = 1_000_000;
    config.data.shuffle = false;
    config.eval.every_steps = None;
    config.eval.progress_bar = false;
    config.checkpoint.every_steps = None;
    config.checkpoint.save_final = false;
    let run = std::env::temp_dir().join(format!("train_step_bench_{}", std::process::id()));
    std::fs::create_dir_all(&run).expect("run folder");
    let data = TrainData {
        train: vec![row],
        eval: vec![],
        pad_id: 0,
    };
    let mut trainer = Trainer::new(model, vs, config, data, &run).expect("trainer");
    let mut step = 0;
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SEQ as u64));
    group.bench_function("f32/1x128", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                step += 1;
                let start = Instant::now();
                trainer.train_until(step).expect("train step");
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&run);
}

criterion_group! {
    name = benches;
    // Numbers only: plotting needs system fonts, which servers often lack (criterion panics).
    config = Criterion::default().without_plots();
    targets = train_step
}
criterion_main!(benches);
