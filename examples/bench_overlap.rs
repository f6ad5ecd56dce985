//! The Stream Aligner loop with an upstream that runs elsewhere: sequential (`run`) against
//! overlapped (`run_overlapped`, the aligner working while the upstream writes).
//!
//! The upstream is simulated: a completions endpoint on 127.0.0.1 that streams, at a fixed
//! pace per chunk of about one token (`--token-ms`), the answers the embedded
//! SmolLM2-135M-Instruct wrote; the aligner is the shipped Stream Aligner on this machine
//! (`aligner::app::bench::overlap` does the work and says more).
//!
//! Run: `cargo run --release --example bench_overlap -- --json target/bench_overlap.json`

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::bench::overlap;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Sequential against overlapped Stream Aligner loop with a remote-like upstream")]
struct Args {
    /// Milliseconds per streamed chunk (about one token) of the simulated upstream.
    #[arg(long, default_value_t = 25)]
    token_ms: u64,
    /// Most upstream tokens per answer.
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    /// Aligner folder, model or LoRA adapter (default: assets/stream-aligner).
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    /// Do not prepare the aligner's prompt while the upstream writes
    /// (`CorrectorConfig::prepare = false`): the overlapped answers are then the sequential ones.
    #[arg(long)]
    no_prepare: bool,
    /// Runs of each mode per question (alternated; the best is kept).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The embedded model is the upstream; fetched here, with a progress bar, if need be.
    common::model_dir(None)?;
    let options = overlap::Options {
        token_ms: args.token_ms,
        max_tokens: args.max_tokens,
        aligner_dir: args.aligner_dir,
        no_prepare: args.no_prepare,
        repeats: args.repeats,
    };
    let bench = overlap::run(&options, |line| eprintln!("{line}"))?;
    bench.publish(args.json.as_deref(), None)?;
    Ok(())
}
