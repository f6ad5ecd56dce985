//! Latency of the ways to answer, with the same models and questions in one run: Stream Aligner
//! (sentence by sentence), the upstream alone, the whole-answer Aligner, and the published
//! reference loop; plus the time to the first corrected sentence against the whole-answer
//! Aligner's latency.
//!
//! Run: `cargo run --release --example bench_stream -- --json target/bench_stream.json`
//!
//! Each run gets a fresh upstream and aligner (no cache carried between modes). The upstream
//! decodes greedily in every mode but the reference loop, which samples as the published code
//! does (it runs its fixed 16 rounds regardless).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::generate::SamplingConfig;
use aligner::model::{CausalLm, DType, InferenceModel, ModelTokenizer, WeightFormat};
use aligner::stream::modes::{self, ReferenceConfig};
use aligner::stream::{
    CorrectorConfig, Identity, LocalCorrector, LocalUpstream, MachineConfig, Record, StreamBatch,
    StreamMachine, UpstreamConfig,
};
use anyhow::Context;
use clap::Parser;

/// Fixed questions: arithmetic word problems (the shipped aligner's domain) written for this
/// benchmark, not taken from any training split.
const QUESTIONS: [&str; 5] = [
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?",
    "A baker makes 7 trays of 12 muffins and sells 50 of them. How many muffins are left?",
    "Omar saves $9 a week for 8 weeks, then spends $25 on a game. How many dollars does he have?",
    "A garden has 6 rows of 9 tulips. Half of the tulips are red. How many red tulips are there?",
    "A bus carries 38 people. At the first stop 11 get off and 7 get on. How many people are on the bus now?",
];

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
    /// Upstream weights: dense, int8 or int4 (default: int4 on the CPU, dense elsewhere).
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

#[derive(Default, Clone, Copy)]
struct Totals {
    wall_ms: f64,
    first_ms: f64,
    upstream_tokens: usize,
    corrector_tokens: usize,
    changed: usize,
    sentences: usize,
}

impl Totals {
    fn add(&mut self, r: &Record) {
        let s = &r.summary;
        self.wall_ms += s.wall_ms;
        self.first_ms += s.first_sentence_ms.unwrap_or(s.wall_ms);
        self.upstream_tokens += s.upstream_tokens;
        self.corrector_tokens += s.corrector_tokens;
        self.changed += s.changed;
        self.sentences += s.sentences;
    }
}

/// `overlapped` is stream mode with the two models working at the same time
/// (`StreamMachine::run_overlapped`); it is last so that the indices of the others stay put.
const MODES: [&str; 5] = ["stream", "upstream", "aligner", "reference", "overlapped"];

/// `dense` or the packed format of a loaded model.
fn weights_name(model: &InferenceModel) -> String {
    match model {
        InferenceModel::Llama(_) => "dense".into(),
        InferenceModel::Packed(p) => p.format().to_string(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let device = tch::Device::Cpu;
    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let shipped = common::repo_path("assets/stream-aligner");
    let aligner_dir = match &args.aligner_dir {
        Some(d) => d.clone(),
        None if shipped.is_dir() => shipped,
        None => upstream_dir.clone(),
    };
    let shipped_whole = common::repo_path("assets/aligner");
    let whole_dir = match &args.whole_aligner_dir {
        Some(d) => d.clone(),
        None if shipped_whole.is_dir() => shipped_whole,
        None => aligner_dir.clone(),
    };
    let load = |dir: &PathBuf, weights, cpu_format| {
        common::load_for_inference(dir, device, args.dtype, weights, cpu_format)
    };
    let (up_model, up_tok_dir) = load(&upstream_dir, args.weights, WeightFormat::Int4)?;
    let (al_model, al_tok_dir) = load(&aligner_dir, args.aligner_weights, WeightFormat::Int8)?;
    let (wh_model, wh_tok_dir) = load(&whole_dir, args.aligner_weights, WeightFormat::Int8)?;
    let up_tok = ModelTokenizer::from_dir(&up_tok_dir)?;
    let al_tok = ModelTokenizer::from_dir(&al_tok_dir)?;
    let wh_tok = ModelTokenizer::from_dir(&wh_tok_dir)?;
    let questions = &QUESTIONS[..args.questions.clamp(1, QUESTIONS.len())];
    let upstream = |sampling: SamplingConfig| -> anyhow::Result<LocalUpstream<'_, InferenceModel>> {
        let config = UpstreamConfig {
            sampling,
            system: Some(MATH_SYSTEM_PROMPT.to_owned()),
            ..UpstreamConfig::default()
        };
        Ok(LocalUpstream::new(&up_model, up_tok.clone(), config)?)
    };
    let corrector = || -> anyhow::Result<LocalCorrector<'_, InferenceModel>> {
        Ok(LocalCorrector::new(
            &al_model,
            al_tok.clone(),
            CorrectorConfig::default(),
        )?)
    };
    let whole = || -> anyhow::Result<LocalCorrector<'_, InferenceModel>> {
        Ok(LocalCorrector::new(
            &wh_model,
            wh_tok.clone(),
            CorrectorConfig::default(),
        )?)
    };
    eprintln!(
        "upstream {} ({}), stream aligner {}, whole-answer aligner {} ({}), {} questions, {:?} activations, {} threads",
        upstream_dir.display(),
        weights_name(&up_model),
        aligner_dir.display(),
        whole_dir.display(),
        weights_name(&al_model),
        questions.len(),
        up_model.kind(),
        tch::get_num_threads()
    );
    // Warm-up: one short answer, not counted.
    modes::upstream_only(
        &mut upstream(SamplingConfig::greedy())?,
        questions[0],
        8,
        |_| {},
    )?;

    let mut totals = [Totals::default(); 5];
    // Questions whose overlapped answer equals the sequential stream answer.
    let mut same_answers = 0;
    let mut stream_answer = String::new();
    for (qi, q) in questions.iter().enumerate() {
        for (mi, mode) in MODES.iter().enumerate() {
            let record = match *mode {
                "stream" | "overlapped" => {
                    let config = MachineConfig {
                        max_total_tokens: args.max_tokens,
                        ..MachineConfig::default()
                    };
                    let mut machine = StreamMachine::new(q.to_string(), config)?;
                    let (mut up, mut al) = (upstream(SamplingConfig::greedy())?, corrector()?);
                    if *mode == "stream" {
                        let record = machine.run(&mut up, &mut al, |_| {})?;
                        stream_answer.clone_from(&record.answer);
                        record
                    } else {
                        let record = machine.run_overlapped(&mut up, &mut al, |_| {})?;
                        same_answers += usize::from(record.answer == stream_answer);
                        eprintln!(
                            "q{qi} overlapped: {} drafts written ahead used, {} dropped, answer {} the sequential one",
                            record.summary.drafts_ahead,
                            record.summary.drafts_ahead_wasted,
                            if record.answer == stream_answer {
                                "equals"
                            } else {
                                "differs from"
                            }
                        );
                        record
                    }
                }
                "upstream" => modes::upstream_only(
                    &mut upstream(SamplingConfig::greedy())?,
                    q,
                    args.max_tokens,
                    |_| {},
                )?,
                "aligner" => modes::whole_answer(
                    &mut upstream(SamplingConfig::greedy())?,
                    &mut whole()?,
                    q,
                    args.max_tokens,
                    |_| {},
                )?,
                _ => modes::reference(
                    &mut upstream(SamplingConfig::reference_upstream(42))?,
                    &mut corrector()?,
                    q,
                    ReferenceConfig {
                        rounds: 16,
                        max_continuation_tokens: args.max_tokens,
                    },
                    |_| {},
                )?,
            };
            eprintln!(
                "q{qi} {mode:>9}: {:6.2} s, first sentence {:6.2} s, upstream {} + aligner {} tokens",
                record.summary.wall_ms / 1e3,
                record.summary.first_sentence_ms.unwrap_or(f64::NAN) / 1e3,
                record.summary.upstream_tokens,
                record.summary.corrector_tokens
            );
            totals[mi].add(&record);
        }
    }
    let stream_config = MachineConfig {
        max_total_tokens: args.max_tokens,
        ..MachineConfig::default()
    };
    // Batches: every question at once, against the sum of the one-at-a-time runs above.
    let slots = args.batch.unwrap_or(questions.len());
    let mut batches = serde_json::Map::new();
    if slots > 0 {
        for (mi, mode) in [(0, "stream"), (1, "upstream")] {
            let upstreams = (0..slots)
                .map(|_| upstream(SamplingConfig::greedy()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let started = std::time::Instant::now();
            let records = if mode == "stream" {
                let correctors = (0..slots)
                    .map(|_| corrector())
                    .collect::<anyhow::Result<_>>()?;
                StreamBatch::from_parts(upstreams, correctors, stream_config.clone())?
                    .run(questions, |_, _| {})?
            } else {
                let config = MachineConfig {
                    max_total_tokens: args.max_tokens,
                    max_rounds: usize::MAX,
                    max_sentence_tokens: args.max_tokens,
                    stop_after: Vec::new(),
                };
                StreamBatch::from_parts(upstreams, vec![Identity; slots], config)?
                    .run(questions, |_, _| {})?
            };
            let wall = started.elapsed().as_secs_f64();
            let alone = totals[mi].wall_ms / 1e3;
            let tokens: usize = records.iter().map(|r| r.summary.upstream_tokens).sum();
            let first = records
                .iter()
                .map(|r| r.summary.first_sentence_ms.unwrap_or(r.summary.wall_ms))
                .sum::<f64>()
                / 1e3
                / questions.len() as f64;
            eprintln!(
                "batch of {} in {slots} slots, {mode}: {wall:.2} s ({:.2} s one at a time, {:.2}x faster), {tokens} upstream tokens",
                questions.len(),
                alone,
                alone / wall.max(1e-9)
            );
            batches.insert(
                mode.to_owned(),
                serde_json::json!({
                    "slots": slots,
                    "wall_s": wall,
                    "one_at_a_time_s": alone,
                    "speedup": alone / wall.max(1e-9),
                    "first_sentence_s": first,
                    "upstream_tokens": tokens,
                    "upstream_tok_s": tokens as f64 / wall.max(1e-9),
                }),
            );
        }
    }

    let n = questions.len() as f64;
    let base = totals[1].wall_ms.max(1e-9);
    println!(
        "| mode | wall s / question | vs upstream alone | first sentence s | upstream tokens | aligner tokens | sentences changed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut json = serde_json::Map::new();
    for (mode, t) in MODES.iter().zip(&totals) {
        println!(
            "| {mode} | {:.2} | {:.2}x | {:.2} | {} | {} | {}/{} |",
            t.wall_ms / 1e3 / n,
            t.wall_ms / base,
            t.first_ms / 1e3 / n,
            t.upstream_tokens,
            t.corrector_tokens,
            t.changed,
            t.sentences
        );
        json.insert(
            (*mode).to_owned(),
            serde_json::json!({
                "wall_s_per_question": t.wall_ms / 1e3 / n,
                "first_sentence_s": t.first_ms / 1e3 / n,
                "upstream_tokens": t.upstream_tokens,
                "aligner_tokens": t.corrector_tokens,
                "changed": t.changed,
                "sentences": t.sentences,
            }),
        );
    }
    let stream_vs_upstream = totals[0].wall_ms / base;
    let reference_vs_stream = totals[3].wall_ms / totals[0].wall_ms.max(1e-9);
    let first_vs_whole = totals[0].first_ms / totals[2].wall_ms.max(1e-9);
    let overlapped_vs_upstream = totals[4].wall_ms / base;
    let reference_vs_overlapped = totals[3].wall_ms / totals[4].wall_ms.max(1e-9);
    let overlapped_first_vs_whole = totals[4].first_ms / totals[2].wall_ms.max(1e-9);
    println!(
        "\nstream / upstream alone: {stream_vs_upstream:.2}x (goal <= 1.5x); reference loop / stream: {reference_vs_stream:.2}x (goal >= 5x); first corrected sentence / whole-answer latency: {first_vs_whole:.2}x (goal <= 0.2x)"
    );
    println!(
        "overlapped: / upstream alone {overlapped_vs_upstream:.2}x; reference loop / overlapped {reference_vs_overlapped:.2}x; first corrected sentence / whole-answer {overlapped_first_vs_whole:.2}x; answers equal to the sequential stream mode: {same_answers}/{}",
        questions.len()
    );
    if !batches.is_empty() {
        json.insert("batch".into(), batches.into());
    }
    json.insert("questions".into(), questions.len().into());
    json.insert("max_tokens".into(), args.max_tokens.into());
    json.insert("threads".into(), tch::get_num_threads().into());
    json.insert("dtype".into(), format!("{:?}", up_model.kind()).into());
    json.insert("upstream_weights".into(), weights_name(&up_model).into());
    json.insert("aligner_weights".into(), weights_name(&al_model).into());
    json.insert(
        "stream_aligner_dir".into(),
        aligner_dir.display().to_string().into(),
    );
    json.insert(
        "whole_aligner_dir".into(),
        whole_dir.display().to_string().into(),
    );
    json.insert("stream_vs_upstream".into(), stream_vs_upstream.into());
    json.insert("reference_vs_stream".into(), reference_vs_stream.into());
    json.insert("first_sentence_vs_whole".into(), first_vs_whole.into());
    json.insert(
        "overlapped_vs_upstream".into(),
        overlapped_vs_upstream.into(),
    );
    json.insert(
        "reference_vs_overlapped".into(),
        reference_vs_overlapped.into(),
    );
    json.insert(
        "overlapped_first_sentence_vs_whole".into(),
        overlapped_first_vs_whole.into(),
    );
    json.insert("overlapped_same_answers".into(), same_answers.into());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
