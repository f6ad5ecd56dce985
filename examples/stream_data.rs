//! Makes Stream Aligner training rows from an upstream's real mistakes: for every problem and
//! reference step, the sentence the upstream writes when it continues the reference prefix,
//! paired with the reference step; plus identity rows and whole-answer rows. Resumable: run it
//! again with the same `--out` and it goes on where it stopped.
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
use std::time::Instant;

use aligner::data::math::{MathProblem, read_problems_with};
use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::generate::SamplingConfig;
use aligner::model::{DType, Llama, ModelTokenizer};
use aligner::stream::rows::{RowFiles, RowsConfig, collect};
use aligner::stream::{LocalUpstream, Upstream, UpstreamConfig};
use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(
    about = "Make Stream Aligner training rows from an upstream's real sentences after reference prefixes"
)]
struct Args {
    /// Problem set: JSONL with `question`, a GSM8K-style `answer` and optionally `steps`
    /// (default: data/math/train.jsonl in the repository, from `cargo xtask math-data`).
    #[arg(long)]
    problems: Option<PathBuf>,
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
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let problems_path = args
        .problems
        .clone()
        .unwrap_or_else(|| common::repo_path("data/math/train.jsonl"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| common::repo_path("data/stream-math"));
    let mut problems: Vec<MathProblem> = read_problems_with(&problems_path, common::sentence_steps)
        .with_context(|| {
            format!(
                "reading {} (make it with `cargo xtask math-data`)",
                problems_path.display()
            )
        })?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    let model_dir = common::model_dir(args.model_dir.as_deref())?;
    let config = RowsConfig {
        identity_share: args.identity_share,
        seed: args.seed,
        max_sentence_tokens: args.max_sentence_tokens,
        max_answer_tokens: args.max_answer_tokens,
    };
    config.validate()?;

    // The settings that decide the rows; a resumed run must use the same.
    let settings = json!({
        "problems": std::fs::canonicalize(&problems_path).unwrap_or(problems_path.clone()),
        "model_dir": std::fs::canonicalize(&model_dir).unwrap_or(model_dir.clone()),
        "dtype": format!("{:?}", args.dtype),
        "rows": config,
        "sampling": common::sampling_json(&SamplingConfig::reference_upstream(args.seed)),
        "greedy_whole": args.greedy_whole,
        "system": MATH_SYSTEM_PROMPT,
        "chat_template": true,
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let settings_path = out.join("config.json");
    if settings_path.is_file() {
        let before: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&settings_path)?)
                .with_context(|| format!("reading {}", settings_path.display()))?;
        if before != settings {
            bail!(
                "{} was made with other settings:\n{}\nnow:\n{}\nuse another --out, or the same settings to resume",
                out.display(),
                serde_json::to_string_pretty(&before)?,
                serde_json::to_string_pretty(&settings)?
            );
        }
    } else {
        std::fs::write(
            &settings_path,
            serde_json::to_string_pretty(&settings)? + "\n",
        )?;
    }

    let mut files = RowFiles::open(&out)?;
    let todo = problems.iter().filter(|p| !files.is_done(&p.id)).count();
    eprintln!(
        "{} problems from {}: {} already in {}, {todo} to do",
        problems.len(),
        problems_path.display(),
        problems.len() - todo,
        out.display()
    );
    if todo == 0 {
        return Ok(());
    }

    let kind = args.dtype.kind();
    let (model, _vs) = Llama::load(&model_dir, kind, args.device)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let upstream_config = |sampling| UpstreamConfig {
        sampling,
        chat_template: true,
        system: Some(MATH_SYSTEM_PROMPT.to_owned()),
    };
    let mut upstream = LocalUpstream::new(
        &model,
        ModelTokenizer::from_dir(&model_dir)?,
        upstream_config(SamplingConfig::reference_upstream(args.seed)),
    )?;
    let mut greedy = if args.greedy_whole {
        Some(LocalUpstream::new(
            &model,
            ModelTokenizer::from_dir(&model_dir)?,
            upstream_config(SamplingConfig::greedy()),
        )?)
    } else {
        None
    };

    // The bar counts the problems of this run only, so that its rate and ETA are right.
    let bar = ProgressBar::new(todo as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} problems {elapsed_precise} eta {eta_precise} {msg}",
    )?);
    let started = Instant::now();
    let totals = collect(
        &problems,
        &mut upstream,
        greedy.as_mut().map(|g| g as &mut dyn Upstream),
        &mut files,
        &config,
        |p| {
            if p.skipped {
                return;
            }
            bar.inc(1);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{} rows, {:.2} rows/s, {:.1} tok/s",
                p.stats.step_rows() + p.stats.whole,
                (p.stats.step_rows() + p.stats.whole) as f64 / secs,
                p.stats.upstream_tokens as f64 / secs
            ));
        },
    )?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let rows = totals.step_rows() + totals.whole;
    println!(
        "{} problems in {secs:.1} s: {} sentence rows ({} equal to the reference step, {} cut at the token cap; {} steps with no sentence), {} identity rows ({:.1}% of step rows), {} whole-answer rows",
        totals.problems,
        totals.sentences,
        totals.matched,
        totals.capped,
        totals.empty,
        totals.identity,
        100.0 * totals.identity as f64 / totals.step_rows().max(1) as f64,
        totals.whole,
    );
    println!(
        "{:.2} rows/s, {:.2} s/problem, upstream {:.1} tok/s -> {}/{{{},{}}}",
        rows as f64 / secs,
        secs / totals.problems.max(1) as f64,
        totals.upstream_tokens as f64 / secs,
        out.display(),
        RowFiles::STREAM_FILE,
        RowFiles::WHOLE_FILE,
    );
    Ok(())
}
