//! Latency of the ways to answer, with the same models and questions in one run: Stream Aligner
//! (sentence by sentence), the upstream alone, the whole-answer Aligner, and the published
//! reference loop; plus the time to the first corrected sentence against the whole-answer
//! Aligner's latency (`aligner::app::bench::stream` does the work).
//!
//! Run: `cargo run --release --example bench_stream -- --json target/bench_stream.json`
//! (`cargo xtask bench` runs it and renders the results into docs/benchmarks.md).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::bench::{QUESTIONS, stream};
use aligner::model::DType;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Wall time of stream, upstream-only, whole-answer and reference modes")]
struct Args {
    /// Upstream model folder (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    upstream_dir: Option<PathBuf>,
    /// Aligner folder, model or LoRA adapter (default: assets/stream-aligner if present, else
    /// the upstream's model).
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    /// Whole-answer Aligner folder, model or LoRA adapter (default: assets/aligner if present,
    /// else the Stream Aligner).
    #[arg(long)]
    whole_aligner_dir: Option<PathBuf>,
    /// Questions to use (the first N of the fixed set; default all five, so that one answer
    /// that flips on a near-tie moves the totals less).
    #[arg(long, default_value_t = QUESTIONS.len())]
    questions: usize,
    /// Most upstream tokens per answer (and per continuation of the reference loop).
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    /// Activations (and dense weights): f32, bf16 or f16 (default: f32 on the CPU, bf16 on a
    /// GPU).
    #[arg(long, value_parser = common::dtype)]
    dtype: Option<DType>,
    /// Upstream weights: dense, int8, int4 or gguf (default: a GGUF model's own blocks on the
    /// CPU, dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    weights: common::Weights,
    /// Aligner weights, both aligners (default: int8 on the CPU, dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    aligner_weights: common::Weights,
    /// Also answer all the questions at once in this many slots (`StreamBatch`), in stream mode
    /// and upstream-only, against the same runs one question at a time (0: skip; default: one
    /// slot per question).
    #[arg(long)]
    batch: Option<usize>,
    /// LibTorch intra-op threads (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = stream::Options {
        upstream_dir: Some(common::model_dir(args.upstream_dir.as_deref())?),
        aligner_dir: args.aligner_dir,
        whole_aligner_dir: args.whole_aligner_dir,
        questions: args.questions,
        max_tokens: args.max_tokens,
        dtype: args.dtype,
        weights: args.weights.0,
        aligner_weights: args.aligner_weights.0,
        batch: args.batch,
        threads: args.threads,
    };
    let bench = stream::run(&options, |line| eprintln!("{line}"))?;
    bench.publish(args.json.as_deref(), None)?;
    Ok(())
}
