//! Evaluates answers: math accuracy against reference solutions, or pairwise win rates of aligned
//! over original answers judged by a local model or an OpenAI-compatible endpoint. Writes
//! `report.json`, `report.md` and a PNG chart into `--out`.
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

use std::path::{Path, PathBuf};

use aligner::eval::judge::{
    AnswerPair, Dimension, HttpJudge, Judge, LocalJudge, ResponseCache, judge_all,
    judge_all_parallel, load_record_pairs,
};
use aligner::eval::math::{Answer, load_answers, load_problems};
use aligner::eval::report::{BarChart, judge_report, math_report, write_bar_chart};
use aligner::eval::stats::BootstrapConfig;
use aligner::model::remote::{Client, EndpointConfig};
use aligner::model::{DType, Llama, ModelTokenizer};
use anyhow::{Context, bail};
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
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let bootstrap = BootstrapConfig {
        seed: args.seed,
        ..BootstrapConfig::default()
    };
    match args.command {
        Command::Math { problems, answers } => {
            let problems = load_problems(&problems)?;
            let runs = answers
                .iter()
                .map(|spec| {
                    let (name, path) = match spec.split_once('=') {
                        Some((n, p)) => (n.to_owned(), PathBuf::from(p)),
                        None => (
                            Path::new(spec)
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                            PathBuf::from(spec),
                        ),
                    };
                    Ok((name, load_answers(&path)?))
                })
                .collect::<anyhow::Result<Vec<(String, Vec<Answer>)>>>()?;
            let report = math_report(&problems, &runs, &bootstrap)?;
            for run in &report.runs {
                println!(
                    "{}: accuracy: {:.1}% ({}/{}, 95% CI [{:.1}, {:.1}])",
                    run.name,
                    run.accuracy.estimate,
                    run.correct,
                    run.problems,
                    run.accuracy.lower,
                    run.accuracy.upper
                );
            }
            for (a, b, p) in &report.paired {
                println!(
                    "{a} -> {b}: {:+.1} points, {} wrong->right, {} right->wrong, McNemar p = {:.3}",
                    p.accuracy_gain().unwrap_or(0.0),
                    p.wrong_to_right.len(),
                    p.right_to_wrong.len(),
                    p.p_value
                );
            }
            write_reports(
                &args.out,
                &report,
                &report.to_markdown(),
                &report.chart(),
                "accuracy.png",
            )
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
                (Some(records), _, _) => load_record_pairs(&records)?,
                (None, Some(original), Some(aligned)) => pair_answers(&original, &aligned)?,
                _ => bail!("give --records, or --original and --aligned"),
            };
            let dimensions: Vec<Dimension> = match only.as_deref() {
                None => Dimension::ALL.to_vec(),
                Some("helpfulness") => vec![Dimension::Helpfulness],
                Some("harmlessness") => vec![Dimension::Harmlessness],
                Some(other) => bail!("unknown dimension `{other}` (helpfulness, harmlessness)"),
            };
            let (name, judgements) = match endpoint {
                Some(base_url) => {
                    let client = Client::new(EndpointConfig {
                        base_url,
                        model,
                        ..EndpointConfig::default()
                    })?;
                    let judge = HttpJudge::new(client)
                        .with_cache(ResponseCache::new(args.out.join("judge-cache")));
                    (
                        judge.name(),
                        judge_all_parallel(&judge, &pairs, &dimensions, concurrency)?,
                    )
                }
                None => {
                    let dir = common::model_dir(judge_dir.as_deref())?;
                    let (model, _vs) = Llama::load(&dir, DType::F32.kind(), tch::Device::Cpu)?;
                    let judge = LocalJudge::new(
                        model,
                        ModelTokenizer::from_dir(&dir)?,
                        dir.display().to_string(),
                    )?;
                    (judge.name(), judge_all(&judge, &pairs, &dimensions)?)
                }
            };
            let report = judge_report(&name, pairs.len(), judgements, &bootstrap)?;
            for d in &report.dimensions {
                let c = d.tally.counts;
                match &d.win_rate {
                    Some(w) => println!(
                        "{}: win rate {:+.1}% (95% CI [{:.1}, {:.1}]), W {} L {} E {}, invalid {}",
                        d.dimension,
                        w.estimate,
                        w.lower,
                        w.upper,
                        c.wins,
                        c.losses,
                        c.equal,
                        d.tally.invalid
                    ),
                    None => println!(
                        "{}: no readable verdicts ({} invalid)",
                        d.dimension, d.tally.invalid
                    ),
                }
            }
            write_reports(
                &args.out,
                &report,
                &report.to_markdown(),
                &report.chart(),
                "winrate.png",
            )
        }
    }
}

/// Pairs original and aligned answers by question; every question must appear in both files.
fn pair_answers(original: &Path, aligned: &Path) -> anyhow::Result<Vec<AnswerPair>> {
    let original = load_answers(original)?;
    let aligned = load_answers(aligned)?;
    let by_question: std::collections::HashMap<&str, &str> = aligned
        .iter()
        .map(|a| (a.question.as_str(), a.output.as_str()))
        .collect();
    original
        .iter()
        .map(|o| {
            let a = by_question
                .get(o.question.as_str())
                .with_context(|| format!("no aligned answer for question {:?}", o.question))?;
            Ok(AnswerPair {
                question: o.question.clone(),
                original: o.output.clone(),
                aligned: (*a).to_owned(),
            })
        })
        .collect()
}

fn write_reports(
    out: &Path,
    report: &impl serde::Serialize,
    markdown: &str,
    chart: &BarChart,
    png: &str,
) -> anyhow::Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report.md"), markdown)?;
    match write_bar_chart(&out.join(png), chart) {
        Ok(()) => println!(
            "reports: {}/report.{{json,md}}, {}/{png}",
            out.display(),
            out.display()
        ),
        Err(e) => println!(
            "reports: {}/report.{{json,md}} (no chart: {e})",
            out.display()
        ),
    }
    Ok(())
}
