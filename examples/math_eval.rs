//! Math accuracy of four ways to answer, on any problem set: the upstream alone, + a
//! whole-answer Aligner, + a Stream Aligner, and the aligner alone (a control), with Wilson and
//! bootstrap intervals and paired flips (`aligner::app::math_eval` does the work; this program
//! parses the options and shows progress bars).
//!
//! Run: `cargo xtask math-eval --problems data/math/test.jsonl --limit 20`
//! (or `cargo run --release --example math_eval -- ...`; `--help` lists the options).
//!
//! Each aligner also answers the 100 held-out everyday questions (`--everyday`), and the results
//! say what it changed there: the share of sentences, and answers with an injected final-answer
//! phrase or number.
//!
//! Writes into `--out`: `results.json`, `results.md`, `outputs/SETTING.jsonl` (per problem:
//! question, output, draft, extracted answer, reference, correct, seconds; the files also work
//! as `--answers` of `examples/evaluate.rs`) and `everyday/SETTING.jsonl`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::math_eval::{self, Options, Progress};
use aligner::model::DType;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    about = "Math accuracy: upstream alone, + whole-answer Aligner, + Stream Aligner, and the aligner alone"
)]
struct Args {
    /// Problem set: JSONL with `question` and a GSM8K-style `answer` (`... #### N`)
    /// (default: data/math/test.jsonl in the repository).
    #[arg(long)]
    problems: Option<PathBuf>,
    /// Evaluate on the first N problems only.
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder (default: target/math-eval in the repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Upstream model folder (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    upstream_dir: Option<PathBuf>,
    /// Whole-answer Aligner (model or LoRA adapter folder); default: assets/aligner when it
    /// exists. Without one, the upstream+aligner setting is skipped.
    #[arg(long)]
    whole_aligner: Option<PathBuf>,
    /// Stream Aligner (model or LoRA adapter folder); default: assets/stream-aligner when it
    /// exists. Without one, the upstream+stream and aligner-alone settings are skipped.
    #[arg(long)]
    stream_aligner: Option<PathBuf>,
    /// Run only these settings (comma-separated: upstream, upstream+aligner, upstream+stream,
    /// aligner-alone); the upstream alone always runs, as the baseline.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Most upstream tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Most upstream tokens per sentence (stream setting).
    #[arg(long, default_value_t = 96)]
    max_sentence_tokens: usize,
    /// Most rounds of the stream setting.
    #[arg(long, default_value_t = 64)]
    max_rounds: usize,
    /// Most tokens of a whole-answer correction.
    #[arg(long, default_value_t = 512)]
    max_correction_tokens: usize,
    /// Sample the upstream (and the aligner-alone control) with the reference loop's settings
    /// and `--seed` instead of decoding greedily.
    #[arg(long)]
    sample: bool,
    /// Seed of the sampler (with `--sample`) and of the bootstrap intervals.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Feed the aligners the raw instruction instead of wrapping it in their chat template.
    #[arg(long)]
    raw_aligner_prompt: bool,
    /// Accept a sentence correction that repeats text of the accepted prefix (by default the
    /// draft is kept then, a guard for untrained aligners).
    #[arg(long)]
    allow_repeats: bool,
    /// Weights and activations: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = common::dtype)]
    dtype: DType,
    /// The upstream's weights: auto, dense, int8, int4 or gguf (auto: as the main job, a GGUF
    /// model's own blocks on the CPU, dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    weights: common::Weights,
    /// The aligners' weights: auto, dense, int8, int4 or gguf (auto: as the main job, int8 blocks on
    /// the CPU, dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    aligner_weights: common::Weights,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// LibTorch intra-op threads (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Held-out everyday questions each aligner also answers, to measure what it changes
    /// outside its domain (0: none; there are 100).
    #[arg(long, default_value_t = 100)]
    everyday: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    math_eval::check_only(&args.only)?;
    let options = Options {
        // The embedded model is fetched here, with a progress bar, when it is not given.
        upstream_dir: Some(common::model_dir(args.upstream_dir.as_deref())?),
        problems: args.problems,
        limit: args.limit,
        out: args.out,
        whole_aligner: args.whole_aligner,
        stream_aligner: args.stream_aligner,
        only: args.only,
        max_tokens: args.max_tokens,
        max_sentence_tokens: args.max_sentence_tokens,
        max_rounds: args.max_rounds,
        max_correction_tokens: args.max_correction_tokens,
        sample: args.sample,
        seed: args.seed,
        raw_aligner_prompt: args.raw_aligner_prompt,
        allow_repeats: args.allow_repeats,
        dtype: args.dtype,
        weights: args.weights.0,
        aligner_weights: args.aligner_weights.0,
        device: args.device,
        threads: args.threads,
        everyday: args.everyday,
    };
    let style = ProgressStyle::with_template(
        "{prefix:>17} {bar:30} {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}",
    )?;
    let mut bar = ProgressBar::hidden();
    let evaluation = math_eval::run(&options, |event| match event {
        Progress::Skipped(note) => eprintln!("{note}"),
        Progress::Started { setting, problems } => {
            bar = ProgressBar::new(problems as u64).with_style(style.clone());
            bar.set_prefix(setting.to_owned());
        }
        Progress::Answered { done, correct, .. } => {
            bar.inc(1);
            bar.set_message(format!("{correct}/{done} right"));
        }
        Progress::Checked { done, changed, .. } => {
            bar.inc(1);
            bar.set_message(format!("{changed}/{done} changed"));
        }
        Progress::Finished(_) => bar.finish_and_clear(),
    })?;
    println!("\n{}", evaluation.summary().trim_end());
    let out = evaluation.out.display();
    println!("results: {out}/results.{{json,md}}, per-problem outputs in {out}/outputs/");
    Ok(())
}
