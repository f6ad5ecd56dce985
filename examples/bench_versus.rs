//! Greedy decoding of a GGUF file (the embedded model's by default), ours (packed in the file's
//! own blocks) against llama.cpp (llama-cpp-python in the cached environment), alternating
//! rounds: batch 1, then batched decoding of 8 and 32 sequences against llama.cpp's own batched
//! decoding; medians, spreads, their ratios and our roofline share
//! (`aligner::app::bench::versus` does the work).
//!
//! Run: `cargo run --release --example bench_versus -- --doc docs/benchmarks.md`
//! (`cargo xtask bench --llama-cpp` runs it), or `-- --gguf FILE.gguf --rounds 5` for any file.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::bench::versus;
use aligner::model::hub;
use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Decoding against llama.cpp on the same GGUF, alternating")]
struct Args {
    /// The GGUF file both sides decode (default: the embedded SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Alternated rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Batch sizes of batched decoding to compare too (`--batches` with no value: batch 1 only).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [8, 32])]
    batches: Vec<usize>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace (or add) the section of this markdown document.
    #[arg(long)]
    doc: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gguf = match args.gguf {
        Some(file) => file,
        None => hub::fetch_gguf(&hub::SMOLLM2_135M_INSTRUCT, &mut |_, _, _| {})?,
    };
    let model_dir = common::model_dir(Some(&gguf))?;
    let options = versus::Options {
        model_dir,
        gguf,
        python: hub::venv_python().context("no Python environment: run `cargo xtask setup`")?,
        script: common::repo_path("xtask/reference/llamacpp_bench.py"),
        rounds: args.rounds,
        batches: args.batches,
    };
    let bench = versus::run(&options, |line| eprintln!("{line}"))?;
    let section = args.doc.as_deref().map(|doc| (doc, versus::HEADING));
    bench.publish(args.json.as_deref(), section)?;
    Ok(())
}
