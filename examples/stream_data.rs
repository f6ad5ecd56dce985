//! Makes Stream Aligner training rows from an upstream's real mistakes: for every problem and
//! reference step, the sentence the upstream writes when it continues the reference prefix,
//! paired with the reference step; plus identity rows and whole-answer rows
//! (`aligner::app::stream_data` does the work; this program parses the options and shows a
//! progress bar). Resumable: run it again with the same `--out` and it goes on where it stopped.
//!
//! Run: `cargo xtask stream-data --limit 20` (or `cargo run --release --example stream_data --
//! --problems data/math/train.jsonl --out data/stream-math`; make the problems with
//! `cargo xtask math-data`; `--help` lists the options).
//!
//! Writes `OUT/stream.jsonl` (`question, prefix, last, correction, problem_id, step,
//! identity`), `OUT/whole.jsonl` (`question, answer, correction, problem_id`; `correction` is
//! the reference solution: the steps joined with single spaces, ending with "The answer is N.",
//! without the GSM8K `#### N` line) and `OUT/config.json` (the settings, checked on resume).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::stream_data::{self, Options, Progress};
use aligner::model::DType;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    about = "Make Stream Aligner training rows from an upstream's real sentences after reference prefixes"
)]
struct Args {
    /// Problem set: JSONL with `question`, a GSM8K-style `answer` and optionally `steps`
    /// (default: data/math/train.jsonl in the repository, from `cargo xtask math-data`).
    #[arg(long)]
    problems: Option<PathBuf>,
    /// Identity rows instead: the upstream answers the 500 everyday training questions
    /// (`aligner::data::everyday::train`) as the main job would, and each of its sentences,
    /// after its real prefix, becomes a row that keeps it (default --out: data/stream-everyday).
    #[arg(long, conflicts_with_all = ["problems", "identity_share", "greedy_whole"])]
    everyday: bool,
    /// With --everyday: only the questions of this category (code, how-to, advice, ...).
    #[arg(long, requires = "everyday")]
    category: Option<aligner::data::everyday::Category>,
    /// Output folder (default: data/stream-math in the repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the first N problems only.
    #[arg(long)]
    limit: Option<usize>,
    /// Expected share of identity rows among the step rows, in [0, 1).
    #[arg(long, default_value_t = 0.2)]
    identity_share: f64,
    /// Seed of the upstream's sampler and of the identity rows.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Upstream model folder, Hugging Face layout (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Weights and activations: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = common::dtype)]
    dtype: DType,
    /// The upstream's weights: auto, dense, int8, int4 or gguf (auto: what the main job
    /// runs, a GGUF model's own blocks on the CPU, dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    weights: common::Weights,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// Most upstream tokens for one sentence.
    #[arg(long, default_value_t = 96)]
    max_sentence_tokens: usize,
    /// Most upstream tokens for a whole answer.
    #[arg(long, default_value_t = 256)]
    max_answer_tokens: usize,
    /// Write the whole answers greedily (the sentences are always sampled as the reference
    /// loop samples: top-k 40, top-p 0.95, temperature 0.7, frequency penalty 1.2).
    #[arg(long)]
    greedy_whole: bool,
    /// LibTorch intra-op threads (default: LibTorch's choice, one per core).
    #[arg(long)]
    threads: Option<i32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options {
        // The embedded model is fetched here, with a progress bar, when it is not given.
        model_dir: Some(common::model_dir(args.model_dir.as_deref())?),
        problems: args.problems,
        everyday: args.everyday,
        category: args.category,
        out: args.out,
        limit: args.limit,
        identity_share: args.identity_share,
        seed: args.seed,
        dtype: args.dtype,
        weights: args.weights.0,
        device: args.device,
        max_sentence_tokens: args.max_sentence_tokens,
        max_answer_tokens: args.max_answer_tokens,
        greedy_whole: args.greedy_whole,
        threads: args.threads,
    };
    // The bar counts the problems of this run only, so that its rate and ETA are right.
    let bar = ProgressBar::hidden();
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} problems {elapsed_precise} eta {eta_precise} {msg}",
    )?);
    let made = stream_data::run(&options, |event| match event {
        Progress::Planned {
            problems,
            done_before,
            path,
            out,
        } => {
            let todo = problems - done_before;
            eprintln!(
                "{problems} problems from {}: {done_before} already in {}, {todo} to do",
                path.display(),
                out.display()
            );
            bar.set_length(todo as u64);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        Progress::Problem { stats, seconds } => {
            bar.inc(1);
            let secs = seconds.max(1e-9);
            let rows = stats.step_rows() + stats.whole;
            bar.set_message(format!(
                "{rows} rows, {:.2} rows/s, {:.1} tok/s",
                rows as f64 / secs,
                stats.upstream_tokens as f64 / secs
            ));
        }
    })?;
    bar.finish_and_clear();
    if let Some(made) = made {
        println!("{made}");
    }
    Ok(())
}
