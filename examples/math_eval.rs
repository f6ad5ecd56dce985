//! Math accuracy of four ways to answer, on any problem set: the upstream alone, the upstream
//! corrected by a whole-answer Aligner, the upstream corrected sentence by sentence by a Stream
//! Aligner, and the aligner alone (the Stream Aligner answering the question as an upstream, a
//! control for "the aligner just knows the answers"). Scoring is deterministic (final-number
//! extraction and matching), with Wilson and bootstrap 95% intervals, paired flips against the
//! upstream alone with McNemar's exact test, and the mean time per answer.
//!
//! Run: `cargo xtask math-eval --problems data/math/test.jsonl --limit 20`
//! (or `cargo run --release --example math_eval -- ...`; `--help` lists the options).
//!
//! Writes into `--out`: `results.json`, `results.md` and `outputs/SETTING.jsonl` (per problem:
//! question, output, draft, extracted answer, reference, correct, seconds; the files also work
//! as `--answers` of `examples/evaluate.rs`).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::eval::math::{Answer, Problem, is_correct, load_problems};
use aligner::eval::report::{MathReport, markdown_table, math_report};
use aligner::eval::stats::BootstrapConfig;
use aligner::model::adapter::load_any;
use aligner::model::generate::SamplingConfig;
use aligner::model::{DType, Llama, ModelTokenizer};
use aligner::stream::machine::join_correction;
use aligner::stream::modes::upstream_only;
use aligner::stream::{
    CorrectorConfig, LocalCorrector, LocalUpstream, MachineConfig, StreamMachine, UpstreamConfig,
};
use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

/// Where a trained Stream Aligner is looked for when `--stream-aligner` is not given
/// (relative to the repository).
const DEFAULT_STREAM_ALIGNER: &str = "assets/stream-aligner";
/// Where a trained whole-answer Aligner is looked for when `--whole-aligner` is not given.
const DEFAULT_WHOLE_ALIGNER: &str = "assets/aligner";
/// The default problem set (from `cargo xtask math-data`).
const DEFAULT_PROBLEMS: &str = "data/math/test.jsonl";
/// The default output folder.
const DEFAULT_OUT: &str = "target/math-eval";

const UPSTREAM: &str = "upstream";
const WHOLE: &str = "upstream+aligner";
const STREAM: &str = "upstream+stream";
const ALONE: &str = "aligner-alone";

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
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// LibTorch intra-op threads (default: LibTorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

/// One answer of one setting, as written to `outputs/SETTING.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct Output {
    id: String,
    question: String,
    /// The final answer text.
    output: String,
    /// The upstream's uncorrected text (corrected settings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    draft: Option<String>,
    /// The extracted final answer, if any.
    prediction: Option<String>,
    reference: String,
    correct: bool,
    seconds: f64,
    upstream_tokens: usize,
    corrector_tokens: usize,
    /// Sentences (stream) or answers (whole) the aligner changed.
    changed: usize,
}

/// Totals of one setting.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    setting: String,
    answers: usize,
    seconds_per_answer: f64,
    upstream_tokens: usize,
    corrector_tokens: usize,
    changed: usize,
}

/// A model with the folder of its tokenizer.
struct Loaded {
    model: Llama,
    _vs: tch::nn::VarStore,
    tokenizer_dir: PathBuf,
}

fn load(dir: &Path, dtype: DType, device: tch::Device) -> anyhow::Result<Loaded> {
    let (model, vs, tokenizer_dir) = load_any(dir, dtype.kind(), device)
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok(Loaded {
        model,
        _vs: vs,
        tokenizer_dir,
    })
}

fn new_upstream<'m>(
    m: &'m Loaded,
    config: &UpstreamConfig,
) -> anyhow::Result<LocalUpstream<'m, Llama>> {
    Ok(LocalUpstream::new(
        &m.model,
        ModelTokenizer::from_dir(&m.tokenizer_dir)?,
        config.clone(),
    )?)
}

fn new_corrector<'m>(
    m: &'m Loaded,
    config: &CorrectorConfig,
) -> anyhow::Result<LocalCorrector<'m, Llama>> {
    Ok(LocalCorrector::new(
        &m.model,
        ModelTokenizer::from_dir(&m.tokenizer_dir)?,
        config.clone(),
    )?)
}

/// The aligner folder: the option when given, else `default` when it exists.
fn aligner_dir(given: Option<&Path>, default: &str) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(dir) if !dir.exists() => anyhow::bail!("{} does not exist", dir.display()),
        Some(dir) => Ok(Some(dir.to_path_buf())),
        None => {
            let dir = common::repo_path(default);
            Ok(dir.exists().then_some(dir))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    for name in &args.only {
        if ![UPSTREAM, WHOLE, STREAM, ALONE].contains(&name.as_str()) {
            anyhow::bail!(
                "unknown setting `{name}` (upstream, upstream+aligner, upstream+stream, aligner-alone)"
            );
        }
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|n| n == name);
    let problems_path = args
        .problems
        .clone()
        .unwrap_or_else(|| common::repo_path(DEFAULT_PROBLEMS));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| common::repo_path(DEFAULT_OUT));
    let mut problems = load_problems(&problems_path)
        .with_context(|| format!("reading {}", problems_path.display()))?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        anyhow::bail!("{} holds no problems", problems_path.display());
    }
    std::fs::create_dir_all(out.join("outputs"))
        .with_context(|| format!("creating {}", out.display()))?;

    let whole_dir = aligner_dir(args.whole_aligner.as_deref(), DEFAULT_WHOLE_ALIGNER)?;
    let stream_dir = aligner_dir(args.stream_aligner.as_deref(), DEFAULT_STREAM_ALIGNER)?;
    let mut notes = Vec::new();
    if whole_dir.is_none() && wanted(WHOLE) {
        notes.push(format!(
            "{WHOLE}: skipped (no --whole-aligner and no {DEFAULT_WHOLE_ALIGNER})"
        ));
    }
    if stream_dir.is_none() {
        for name in [STREAM, ALONE].into_iter().filter(|n| wanted(n)) {
            notes.push(format!(
                "{name}: skipped (no --stream-aligner and no {DEFAULT_STREAM_ALIGNER})"
            ));
        }
    }
    for note in &notes {
        eprintln!("{note}");
    }

    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let upstream_model = load(&upstream_dir, args.dtype, args.device)?;
    let stream_model = match (&stream_dir, wanted(STREAM) || wanted(ALONE)) {
        (Some(dir), true) => Some(load(dir, args.dtype, args.device)?),
        _ => None,
    };
    // One copy of the weights when both aligners are the same folder.
    let whole_loaded = match (&whole_dir, wanted(WHOLE)) {
        (Some(dir), true) if stream_model.is_some() && stream_dir.as_ref() == Some(dir) => None,
        (Some(dir), true) => Some(load(dir, args.dtype, args.device)?),
        _ => None,
    };
    let whole_model = if whole_dir.is_some() && wanted(WHOLE) {
        whole_loaded.as_ref().or(stream_model.as_ref())
    } else {
        None
    };

    let sampling = if args.sample {
        SamplingConfig::reference_upstream(args.seed)
    } else {
        SamplingConfig::greedy()
    };
    let upstream_config = UpstreamConfig {
        sampling: sampling.clone(),
        chat_template: true,
        system: Some(MATH_SYSTEM_PROMPT.to_owned()),
    };
    let corrector_config = CorrectorConfig {
        max_sentence_tokens: args.max_sentence_tokens,
        max_answer_tokens: args.max_correction_tokens,
        chat_template: !args.raw_aligner_prompt,
        reject_repeats: !args.allow_repeats,
        ..CorrectorConfig::default()
    };
    let mut runs: Vec<(String, Vec<Output>)> = Vec::new();

    // (a) The upstream alone; its answers are also the drafts of the whole-answer setting.
    let mut upstream = new_upstream(&upstream_model, &upstream_config)?;
    let baseline = run_setting(UPSTREAM, &problems, &out, |p| {
        let t = Instant::now();
        let record = upstream_only(&mut upstream, &p.question, args.max_tokens, |_| {})?;
        Ok(output(
            p,
            record.answer,
            None,
            t.elapsed().as_secs_f64(),
            (record.summary.upstream_tokens, 0, 0),
        ))
    })?;

    // (b) The whole-answer Aligner rewrites each upstream answer once.
    if let Some(model) = whole_model {
        let mut corrector = new_corrector(model, &corrector_config)?;
        let outputs = run_setting(WHOLE, &problems, &out, |p| {
            let first = baseline
                .iter()
                .find(|o| o.id == p.id)
                .context("no upstream answer")?;
            let t = Instant::now();
            let correction = corrector.rewrite_answer(&p.question, &first.output)?;
            let answer = join_correction(&first.output, &correction.text);
            let changed = usize::from(answer != first.output);
            Ok(output(
                p,
                answer,
                Some(first.output.clone()),
                first.seconds + t.elapsed().as_secs_f64(),
                (first.upstream_tokens, correction.tokens, changed),
            ))
        })?;
        runs.push((WHOLE.to_owned(), outputs));
    }

    // (c) The Stream Aligner corrects each sentence as the upstream writes it.
    if let (Some(model), true) = (&stream_model, wanted(STREAM)) {
        let mut upstream = new_upstream(&upstream_model, &upstream_config)?;
        let mut corrector = new_corrector(model, &corrector_config)?;
        let config = MachineConfig {
            max_rounds: args.max_rounds,
            max_sentence_tokens: args.max_sentence_tokens,
            max_total_tokens: args.max_tokens,
            ..MachineConfig::default()
        };
        let outputs = run_setting(STREAM, &problems, &out, |p| {
            let t = Instant::now();
            let record = StreamMachine::new(p.question.clone(), config.clone())?.run(
                &mut upstream,
                &mut corrector,
                |_| {},
            )?;
            let s = &record.summary;
            Ok(output(
                p,
                record.answer.clone(),
                Some(record.draft.clone()),
                t.elapsed().as_secs_f64(),
                (s.upstream_tokens, s.corrector_tokens, s.changed),
            ))
        })?;
        runs.push((STREAM.to_owned(), outputs));
    }

    // (d) The aligner alone answers the question, as an upstream.
    if let (Some(model), true) = (&stream_model, wanted(ALONE)) {
        let mut alone = new_upstream(model, &upstream_config)?;
        let outputs = run_setting(ALONE, &problems, &out, |p| {
            let t = Instant::now();
            let record = upstream_only(&mut alone, &p.question, args.max_tokens, |_| {})?;
            Ok(output(
                p,
                record.answer,
                None,
                t.elapsed().as_secs_f64(),
                (record.summary.upstream_tokens, 0, 0),
            ))
        })?;
        runs.push((ALONE.to_owned(), outputs));
    }
    runs.insert(0, (UPSTREAM.to_owned(), baseline));

    // Scores, intervals and paired flips against the upstream alone.
    let answers: Vec<(String, Vec<Answer>)> = runs
        .iter()
        .map(|(name, outputs)| {
            let answers = outputs
                .iter()
                .enumerate()
                .map(|(i, o)| Answer {
                    line: i + 1,
                    question: o.question.clone(),
                    output: o.output.clone(),
                })
                .collect();
            (name.clone(), answers)
        })
        .collect();
    let bootstrap = BootstrapConfig {
        seed: args.seed,
        ..BootstrapConfig::default()
    };
    let report = math_report(&problems, &answers, &bootstrap)?;
    let timings: Vec<Timing> = runs.iter().map(|(name, o)| timing(name, o)).collect();
    println!();
    for (run, t) in report.runs.iter().zip(&timings) {
        println!(
            "{}: accuracy {:.1}% [{:.1}, {:.1}] ({}/{})  {:.1} s/answer",
            run.name,
            run.accuracy.estimate,
            run.accuracy.lower,
            run.accuracy.upper,
            run.correct,
            run.problems,
            t.seconds_per_answer
        );
    }
    for (a, b, p) in &report.paired {
        println!(
            "  {b} vs {a}: {:+.1} points, {} wrong->right, {} right->wrong, McNemar p = {:.3}",
            p.accuracy_gain().unwrap_or(0.0),
            p.wrong_to_right.len(),
            p.right_to_wrong.len(),
            p.p_value
        );
    }
    for note in &notes {
        println!("  {note}");
    }

    let settings = json!({
        "problems": problems_path,
        "problems_evaluated": problems.len(),
        "upstream_dir": upstream_dir,
        "whole_aligner": whole_dir,
        "stream_aligner": stream_dir,
        "system": MATH_SYSTEM_PROMPT,
        "sampling": common::sampling_json(&sampling),
        "max_tokens": args.max_tokens,
        "max_sentence_tokens": args.max_sentence_tokens,
        "max_rounds": args.max_rounds,
        "max_correction_tokens": args.max_correction_tokens,
        "aligner_chat_template": !args.raw_aligner_prompt,
        "reject_repeats": !args.allow_repeats,
        "dtype": format!("{:?}", args.dtype),
        "device": format!("{:?}", args.device),
        "threads": tch::get_num_threads(),
        "bootstrap_seed": args.seed,
    });
    let results = json!({
        "settings": settings,
        "report": report,
        "timing": timings,
        "skipped": notes,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(
        out.join("results.md"),
        markdown(&problems_path, &report, &timings, &notes),
    )?;
    println!(
        "results: {}/results.{{json,md}}, per-problem outputs in {}/outputs/",
        out.display(),
        out.display()
    );
    Ok(())
}

/// An [`Output`] scored against the problem's reference.
fn output(
    p: &Problem,
    answer: String,
    draft: Option<String>,
    seconds: f64,
    (upstream_tokens, corrector_tokens, changed): (usize, usize, usize),
) -> Output {
    let judgement = is_correct(&answer, &p.answer);
    Output {
        id: p.id.clone(),
        question: p.question.clone(),
        output: answer,
        draft,
        prediction: judgement.prediction,
        reference: p.reference.clone(),
        correct: judgement.correct,
        seconds,
        upstream_tokens,
        corrector_tokens,
        changed,
    }
}

/// Answers every problem with `answer`, showing progress and appending each output to
/// `out/outputs/NAME.jsonl` as it comes.
fn run_setting(
    name: &str,
    problems: &[Problem],
    out: &Path,
    mut answer: impl FnMut(&Problem) -> anyhow::Result<Output>,
) -> anyhow::Result<Vec<Output>> {
    let path = out.join("outputs").join(format!("{name}.jsonl"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let bar = ProgressBar::new(problems.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{prefix:>17} {bar:30} {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}",
    )?);
    bar.set_prefix(name.to_owned());
    let mut outputs = Vec::with_capacity(problems.len());
    let mut correct = 0;
    for p in problems {
        let o = answer(p).with_context(|| format!("{name}, problem {}", p.id))?;
        correct += usize::from(o.correct);
        serde_json::to_writer(&mut file, &o)?;
        file.write_all(b"\n")?;
        file.flush()?;
        outputs.push(o);
        bar.inc(1);
        bar.set_message(format!("{correct}/{} right", outputs.len()));
    }
    bar.finish_and_clear();
    Ok(outputs)
}

fn timing(name: &str, outputs: &[Output]) -> Timing {
    let n = outputs.len().max(1) as f64;
    Timing {
        setting: name.to_owned(),
        answers: outputs.len(),
        seconds_per_answer: outputs.iter().map(|o| o.seconds).sum::<f64>() / n,
        upstream_tokens: outputs.iter().map(|o| o.upstream_tokens).sum(),
        corrector_tokens: outputs.iter().map(|o| o.corrector_tokens).sum(),
        changed: outputs.iter().map(|o| o.changed).sum(),
    }
}

fn markdown(problems: &Path, report: &MathReport, timings: &[Timing], notes: &[String]) -> String {
    let mut s = format!(
        "# Math evaluation\n\n{} problems from `{}`; deterministic final-answer matching; 95% intervals.\n\n",
        report.problems,
        problems.display()
    );
    s.push_str(&report.to_markdown());
    s.push('\n');
    let rows: Vec<Vec<String>> = timings
        .iter()
        .map(|t| {
            vec![
                t.setting.clone(),
                format!("{:.2}", t.seconds_per_answer),
                t.upstream_tokens.to_string(),
                t.corrector_tokens.to_string(),
                t.changed.to_string(),
            ]
        })
        .collect();
    s.push_str(&markdown_table(
        &[
            "setting",
            "s/answer",
            "upstream tokens",
            "aligner tokens",
            "changed by the aligner",
        ],
        &rows,
    ));
    for note in notes {
        s.push_str(&format!("\n- {note}"));
    }
    s.push('\n');
    s
}
