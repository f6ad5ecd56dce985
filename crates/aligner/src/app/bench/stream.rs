//! Latency of the ways to answer, with the same models and questions in one run: Stream Aligner
//! (sentence by sentence, sequential and overlapped), the upstream alone, the whole-answer
//! Aligner, and the published reference loop; plus the time to the first corrected sentence
//! against the whole-answer Aligner's latency, and all the questions at once (`StreamBatch`).
//!
//! Each run gets a fresh upstream and aligner (no cache carried between modes). The upstream
//! decodes greedily in every mode but the reference loop, which samples as the published code
//! does (it runs its fixed 16 rounds regardless).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Bench, QUESTIONS, ratio};
use crate::app::{Result, load_for_inference, model_dir, repo_path, weights_name};
use crate::data::template::MATH_SYSTEM_PROMPT;
use crate::model::generate::SamplingConfig;
use crate::model::{CausalLm, DType, InferenceModel, ModelTokenizer, WeightFormat};
use crate::stream::modes::{self, ReferenceConfig};
use crate::stream::{
    CorrectorConfig, Identity, LocalCorrector, LocalUpstream, MachineConfig, Record, StreamBatch,
    StreamMachine, UpstreamConfig,
};

/// What to measure with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Upstream model folder (default: the embedded SmolLM2-135M-Instruct).
    pub upstream_dir: Option<PathBuf>,
    /// Aligner folder, model or LoRA adapter (default: assets/stream-aligner if present, else
    /// the upstream's model).
    pub aligner_dir: Option<PathBuf>,
    /// Whole-answer Aligner folder, model or LoRA adapter (default: assets/aligner if present,
    /// else the Stream Aligner).
    pub whole_aligner_dir: Option<PathBuf>,
    /// Questions to use (the first N of [`QUESTIONS`], at least one).
    pub questions: usize,
    /// Most upstream tokens per answer (and per continuation of the reference loop).
    pub max_tokens: usize,
    /// Activations (and dense weights); `None`: f32 on the CPU, bf16 on a GPU.
    pub dtype: Option<DType>,
    /// Upstream weights; `None`: int4 on the CPU, dense elsewhere.
    pub weights: Option<WeightFormat>,
    /// Aligner weights, both aligners; `None`: int8 on the CPU, dense elsewhere.
    pub aligner_weights: Option<WeightFormat>,
    /// Also answer all the questions at once in this many slots (`StreamBatch`), in stream
    /// mode and upstream-only, against the same runs one question at a time (0: skip; `None`:
    /// one slot per question).
    pub batch: Option<usize>,
    /// LibTorch intra-op threads (default: LibTorch's choice).
    pub threads: Option<i32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream_dir: None,
            aligner_dir: None,
            whole_aligner_dir: None,
            questions: QUESTIONS.len(),
            max_tokens: 160,
            dtype: None,
            weights: None,
            aligner_weights: None,
            batch: None,
            threads: None,
        }
    }
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

/// `given`, else `shipped` (relative to the repository) if it is a folder, else `fallback`.
fn default_dir(given: Option<&Path>, shipped: &str, fallback: &Path) -> PathBuf {
    let shipped = repo_path(shipped);
    match given {
        Some(d) => d.to_path_buf(),
        None if shipped.is_dir() => shipped,
        None => fallback.to_path_buf(),
    }
}

/// Runs every mode on every question, then the batches; `log` hears a line per run.
///
/// JSON keys: per mode (`stream`, `upstream`, `aligner`, `reference`, `overlapped`)
/// `wall_s_per_question`, `first_sentence_s`, `upstream_tokens`, `aligner_tokens`, `changed`,
/// `sentences`; `batch` (per mode: `slots`, `wall_s`, `one_at_a_time_s`, `speedup`,
/// `first_sentence_s`, `upstream_tokens`, `upstream_tok_s`); the settings and the ratios.
///
/// # Errors
/// Failures of loading or running the models.
pub fn run(args: &Options, mut log: impl FnMut(&str)) -> Result<Bench> {
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let device = tch::Device::Cpu;
    let upstream_dir = model_dir(args.upstream_dir.as_deref())?;
    let aligner_dir = default_dir(
        args.aligner_dir.as_deref(),
        "assets/stream-aligner",
        &upstream_dir,
    );
    let whole_dir = default_dir(
        args.whole_aligner_dir.as_deref(),
        "assets/aligner",
        &aligner_dir,
    );
    let load = |dir: &PathBuf, weights, cpu_format| {
        load_for_inference(dir, device, args.dtype, weights, cpu_format)
    };
    let (up_model, up_tok_dir) = load(&upstream_dir, args.weights, WeightFormat::Int4)?;
    let (al_model, al_tok_dir) = load(&aligner_dir, args.aligner_weights, WeightFormat::Int8)?;
    let (wh_model, wh_tok_dir) = load(&whole_dir, args.aligner_weights, WeightFormat::Int8)?;
    let up_tok = ModelTokenizer::from_dir(&up_tok_dir)?;
    let al_tok = ModelTokenizer::from_dir(&al_tok_dir)?;
    let wh_tok = ModelTokenizer::from_dir(&wh_tok_dir)?;
    let questions = &QUESTIONS[..args.questions.clamp(1, QUESTIONS.len())];
    let upstream = |sampling: SamplingConfig| -> Result<LocalUpstream<'_, InferenceModel>> {
        let config = UpstreamConfig {
            sampling,
            system: Some(MATH_SYSTEM_PROMPT.to_owned()),
            ..UpstreamConfig::default()
        };
        Ok(LocalUpstream::new(&up_model, up_tok.clone(), config)?)
    };
    let corrector = || -> Result<LocalCorrector<'_, InferenceModel>> {
        Ok(LocalCorrector::new(
            &al_model,
            al_tok.clone(),
            CorrectorConfig::default(),
        )?)
    };
    let whole = || -> Result<LocalCorrector<'_, InferenceModel>> {
        Ok(LocalCorrector::new(
            &wh_model,
            wh_tok.clone(),
            CorrectorConfig::default(),
        )?)
    };
    log(&format!(
        "upstream {} ({}), stream aligner {}, whole-answer aligner {} ({}), {} questions, {:?} activations, {} threads",
        upstream_dir.display(),
        weights_name(&up_model),
        aligner_dir.display(),
        whole_dir.display(),
        weights_name(&al_model),
        questions.len(),
        up_model.kind(),
        tch::get_num_threads()
    ));
    // Warm-up: one short answer, not counted.
    modes::upstream_only(
        &mut upstream(SamplingConfig::greedy())?,
        questions[0],
        8,
        |_| {},
    )?;

    let stream_config = MachineConfig {
        max_total_tokens: args.max_tokens,
        ..MachineConfig::default()
    };
    let mut totals = [Totals::default(); 5];
    // Questions whose overlapped answer equals the sequential stream answer.
    let mut same_answers = 0;
    let mut stream_answer = String::new();
    for (qi, q) in questions.iter().enumerate() {
        for (mi, mode) in MODES.iter().enumerate() {
            let record = match *mode {
                "stream" | "overlapped" => {
                    let mut machine = StreamMachine::new(q.to_string(), stream_config.clone())?;
                    let (mut up, mut al) = (upstream(SamplingConfig::greedy())?, corrector()?);
                    if *mode == "stream" {
                        let record = machine.run(&mut up, &mut al, |_| {})?;
                        stream_answer.clone_from(&record.answer);
                        record
                    } else {
                        let record = machine.run_overlapped(&mut up, &mut al, |_| {})?;
                        let same = record.answer == stream_answer;
                        same_answers += usize::from(same);
                        log(&format!(
                            "q{qi} overlapped: {} drafts written ahead used, {} dropped, answer {} the sequential one",
                            record.summary.drafts_ahead,
                            record.summary.drafts_ahead_wasted,
                            if same { "equals" } else { "differs from" }
                        ));
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
            log(&format!(
                "q{qi} {mode:>9}: {:6.2} s, first sentence {:6.2} s, upstream {} + aligner {} tokens",
                record.summary.wall_ms / 1e3,
                record.summary.first_sentence_ms.unwrap_or(f64::NAN) / 1e3,
                record.summary.upstream_tokens,
                record.summary.corrector_tokens
            ));
            totals[mi].add(&record);
        }
    }
    // Batches: every question at once, against the sum of the one-at-a-time runs above.
    let slots = args.batch.unwrap_or(questions.len());
    let mut batches = serde_json::Map::new();
    if slots > 0 {
        for (mi, mode) in [(0, "stream"), (1, "upstream")] {
            let upstreams = (0..slots)
                .map(|_| upstream(SamplingConfig::greedy()))
                .collect::<Result<Vec<_>>>()?;
            let started = std::time::Instant::now();
            let records = if mode == "stream" {
                let correctors = (0..slots).map(|_| corrector()).collect::<Result<_>>()?;
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
            log(&format!(
                "batch of {} in {slots} slots, {mode}: {wall:.2} s ({:.2} s one at a time, {:.2}x faster), {tokens} upstream tokens",
                questions.len(),
                alone,
                ratio(alone, wall)
            ));
            batches.insert(
                mode.to_owned(),
                json!({
                    "slots": slots,
                    "wall_s": wall,
                    "one_at_a_time_s": alone,
                    "speedup": ratio(alone, wall),
                    "first_sentence_s": first,
                    "upstream_tokens": tokens,
                    "upstream_tok_s": ratio(tokens as f64, wall),
                }),
            );
        }
    }

    let (mut bench, ratios) = summarize(&totals, questions.len(), same_answers);
    let json = &mut bench.json;
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
    json.extend(ratios);
    Ok(bench)
}

/// The per-mode table and ratios (console lines and JSON), from the totals over `n` questions;
/// the ratios come apart, to go last in the JSON.
fn summarize(
    totals: &[Totals; 5],
    n: usize,
    same_answers: usize,
) -> (Bench, Vec<(String, serde_json::Value)>) {
    let questions = n;
    let n = n as f64;
    let base = totals[1].wall_ms;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| mode | wall s / question | vs upstream alone | first sentence s | upstream tokens | aligner tokens | sentences changed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let mut json = serde_json::Map::new();
    for (mode, t) in MODES.iter().zip(totals) {
        let _ = writeln!(
            s,
            "| {mode} | {:.2} | {:.2}x | {:.2} | {} | {} | {}/{} |",
            t.wall_ms / 1e3 / n,
            ratio(t.wall_ms, base),
            t.first_ms / 1e3 / n,
            t.upstream_tokens,
            t.corrector_tokens,
            t.changed,
            t.sentences
        );
        json.insert(
            (*mode).to_owned(),
            json!({
                "wall_s_per_question": t.wall_ms / 1e3 / n,
                "first_sentence_s": t.first_ms / 1e3 / n,
                "upstream_tokens": t.upstream_tokens,
                "aligner_tokens": t.corrector_tokens,
                "changed": t.changed,
                "sentences": t.sentences,
            }),
        );
    }
    let stream_vs_upstream = ratio(totals[0].wall_ms, base);
    let reference_vs_stream = ratio(totals[3].wall_ms, totals[0].wall_ms);
    let first_vs_whole = ratio(totals[0].first_ms, totals[2].wall_ms);
    let overlapped_vs_upstream = ratio(totals[4].wall_ms, base);
    let reference_vs_overlapped = ratio(totals[3].wall_ms, totals[4].wall_ms);
    let overlapped_first_vs_whole = ratio(totals[4].first_ms, totals[2].wall_ms);
    let _ = writeln!(
        s,
        "\nstream / upstream alone: {stream_vs_upstream:.2}x (goal <= 1.5x); reference loop / stream: {reference_vs_stream:.2}x (goal >= 5x); first corrected sentence / whole-answer latency: {first_vs_whole:.2}x (goal <= 0.2x)"
    );
    let _ = writeln!(
        s,
        "overlapped: / upstream alone {overlapped_vs_upstream:.2}x; reference loop / overlapped {reference_vs_overlapped:.2}x; first corrected sentence / whole-answer {overlapped_first_vs_whole:.2}x; answers equal to the sequential stream mode: {same_answers}/{questions}"
    );
    let ratios = vec![
        ("stream_vs_upstream", stream_vs_upstream.into()),
        ("reference_vs_stream", reference_vs_stream.into()),
        ("first_sentence_vs_whole", first_vs_whole.into()),
        ("overlapped_vs_upstream", overlapped_vs_upstream.into()),
        ("reference_vs_overlapped", reference_vs_overlapped.into()),
        (
            "overlapped_first_sentence_vs_whole",
            overlapped_first_vs_whole.into(),
        ),
        ("overlapped_same_answers", same_answers.into()),
    ];
    let ratios = ratios
        .into_iter()
        .map(|(k, v): (&str, serde_json::Value)| (k.to_owned(), v))
        .collect();
    (Bench { json, summary: s }, ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(wall_s: f64, first_s: f64) -> Totals {
        Totals {
            wall_ms: wall_s * 1e3,
            first_ms: first_s * 1e3,
            upstream_tokens: 10,
            corrector_tokens: 4,
            changed: 1,
            sentences: 3,
        }
    }

    #[test]
    fn summary_divides_by_questions_and_by_the_upstream_alone() {
        // stream, upstream, aligner, reference, overlapped; two questions.
        let t = [
            totals(3.0, 1.0),
            totals(2.0, 2.0),
            totals(5.0, 5.0),
            totals(30.0, 3.0),
            totals(4.0, 0.5),
        ];
        let (bench, ratios) = summarize(&t, 2, 1);
        let stream = &bench.json["stream"];
        assert_eq!(stream["wall_s_per_question"], 1.5);
        assert_eq!(stream["first_sentence_s"], 0.5);
        assert!(
            bench
                .summary
                .contains("| stream | 1.50 | 1.50x | 0.50 | 10 | 4 | 1/3 |")
        );
        let ratio = |k: &str| {
            ratios
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(ratio("stream_vs_upstream"), Some(1.5.into()));
        assert_eq!(ratio("reference_vs_stream"), Some(10.0.into()));
        assert_eq!(ratio("first_sentence_vs_whole"), Some(0.2.into()));
        assert_eq!(ratio("overlapped_same_answers"), Some(1.into()));
        assert!(
            bench
                .summary
                .contains("answers equal to the sequential stream mode: 1/2")
        );
    }
}
