//! Evaluates answers: math accuracy against reference solutions, or pairwise win rates of aligned
//! over original answers judged by a local model or an OpenAI-compatible endpoint
//! (`aligner::app::evaluate`). Writes `report.json`, `report.md` and a PNG chart into `--out`.
//!
//! Run: `cargo run --release --example evaluate -- math --problems PROBLEMS.jsonl --answers ANSWERS.jsonl`
//! (problems carry `question` and a GSM8K-style `answer`; answers carry `question` and `output`;
//! several `--answers` files are compared pairwise against the first).
//!
//! `cargo run --release --example evaluate -- judge --original A.jsonl --aligned B.jsonl`
//! (or `judge --records R.jsonl`, the records of `stream_align --records`: each draft against
//! its aligned answer) judges with the embedded model; `--endpoint http://127.0.0.1:8000/v1 --model NAME` uses a
//! server (API key from `$OPENAI_API_KEY`).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::evaluate::{self, JudgeOptions, Pairs};
use aligner::eval::stats::BootstrapConfig;
use anyhow::bail;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Score answers: math accuracy, or helpful/harmless win rates")]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Folder for report.json, report.md and the chart.
    #[arg(long, global = true, default_value = "target/eval")]
    out: PathBuf,
    /// Seed of the bootstrap intervals.
    #[arg(long, global = true, default_value_t = 42)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Accuracy of one or more answer files against reference solutions.
    Math {
        /// JSONL with `question` and a GSM8K-style `answer` (`... #### N`).
        #[arg(long)]
        problems: PathBuf,
        /// JSONL with `question` and `output` (repeatable; the first is the baseline). Name a
        /// run with `NAME=PATH`.
        #[arg(long = "answers", required = true)]
        answers: Vec<String>,
    },
    /// Win rates of aligned over original answers on helpfulness and harmlessness.
    Judge {
        /// JSONL with `question` and `output`: the original answers.
        #[arg(long, required_unless_present = "records", requires = "aligned")]
        original: Option<PathBuf>,
        /// JSONL with `question` and `output`: the aligned answers to the same questions.
        #[arg(long, requires = "original")]
        aligned: Option<PathBuf>,
        /// Run records as `stream_align --records` writes them: each record's `draft` is judged
        /// against its `answer` (instead of `--original` and `--aligned`).
        #[arg(long, conflicts_with_all = ["original", "aligned"])]
        records: Option<PathBuf>,
        /// OpenAI-compatible endpoint; without it the local `--judge-dir` model judges.
        #[arg(long)]
        endpoint: Option<String>,
        /// Model name at the endpoint.
        #[arg(long, default_value = "default")]
        model: String,
        /// Requests in flight at once (endpoint only).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Local judge model folder (default: the embedded SmolLM2-135M-Instruct, a weak judge).
        #[arg(long)]
        judge_dir: Option<PathBuf>,
        /// Only this dimension.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bootstrap = BootstrapConfig {
        seed: args.seed,
        ..BootstrapConfig::default()
    };
    let written = match args.command {
        Command::Math { problems, answers } => {
            let report = evaluate::math(&problems, &answers, &bootstrap)?;
            print!("{}", evaluate::math_summary(&report));
            let (markdown, chart) = (report.to_markdown(), report.chart());
            evaluate::write_reports(&args.out, &report, &markdown, &chart, "accuracy.png")?
        }
        Command::Judge {
            original,
            aligned,
            records,
            endpoint,
            model,
            concurrency,
            judge_dir,
            only,
        } => {
            let pairs = match (records, original, aligned) {
                (Some(records), _, _) => Pairs::Records(records),
                (None, Some(original), Some(aligned)) => Pairs::Files { original, aligned },
                _ => bail!("give --records, or --original and --aligned"),
            };
            // Without an endpoint, the local judge (by default the embedded model, fetched
            // here with a progress bar).
            let judge_dir = match endpoint {
                Some(_) => judge_dir,
                None => Some(common::model_dir(judge_dir.as_deref())?),
            };
            let options = JudgeOptions {
                pairs,
                endpoint,
                model,
                concurrency,
                judge_dir,
                only,
                cache_dir: args.out.join("judge-cache"),
            };
            let report = evaluate::judge(&options, &bootstrap)?;
            print!("{}", evaluate::judge_summary(&report));
            let (markdown, chart) = (report.to_markdown(), report.chart());
            evaluate::write_reports(&args.out, &report, &markdown, &chart, "winrate.png")?
        }
    };
    println!("{written}");
    Ok(())
}
