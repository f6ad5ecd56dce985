//! Greedy decoding against llama.cpp on the same GGUF file, alternating: each round
//! measures our model packed in the file's own blocks ([`WeightFormat::Gguf`]; for the embedded
//! Q4_1 file the int4 pack) and then llama.cpp
//! (`xtask/reference/llamacpp_bench.py`, llama-cpp-python in the cached environment, a process
//! per round), both decoding 128 tokens from the same 16 prompt tokens, each figure the fastest
//! of 2 calls after a warm-up. The report gives both sides' medians and spreads over the
//! rounds, the ratio of the medians, every round's pair, and our roofline share (weight bytes
//! read per token times tokens per second, over the measured read bandwidth).
//!
//! With batch sizes ([`Options::batches`]), each round then measures batched greedy decoding on
//! both sides, alternating the same way: `b` sequences decoding together ([`generate`] on a
//! `b`-row batch here, llama.cpp's own batched `llama_decode` with one `seq_id` per sequence
//! there), sequence `i` from the prompt rotated left by `i` tokens, [`BATCH_NEW_TOKENS`] tokens
//! each; the figure is all sequences' new tokens over the wall time of the call. Our steps of
//! more than [`QUANT_MAX_ROWS`] rows run on the packed model's dense copy of its layers, not on
//! the blocks; llama.cpp's batched side runs with its own context defaults (flash attention
//! `auto`), its batch-1 side with llama-cpp-python's `Llama` defaults (flash attention off).
//!
//! [`QUANT_MAX_ROWS`]: crate::model::cpu::QUANT_MAX_ROWS
//!
//! JSON keys: `ours_tok_s` and `llama_cpp_tok_s` as `[median, min, max]`, `ratio` (of the
//! medians), `rounds` (the pairs), `read_gb_s`, `weight_bytes_per_token`, `roofline_share`,
//! `cpu`, and `batched`: for each batch size, `ours_tok_s`, `llama_cpp_tok_s`, `ratio` and
//! `rounds` as above.
//!
//! [`generate`]: crate::model::generate::generate

use crate::data::file::WrapFileError as _;
use std::path::PathBuf;
use std::process::Command;

use aligner_serve::bench::{machine_now, spread};
use serde_json::json;

use super::model::{decode_rate, read_bandwidth};
use super::{Bench, ratio};
use crate::app::{Error, Result, load_for_inference};
use crate::model::cpu::QUANT_MAX_ROWS;
use crate::model::{InferenceModel, ModelTokenizer, WeightFormat};

/// The heading of the section `bench_versus --doc` writes into docs/benchmarks.md.
pub const HEADING: &str = "## Decoding against llama.cpp";

/// The prompt both sides decode from (its first 16 tokens).
const PROMPT: &str = "The library opens at nine in the morning and closes at six in the evening. \
On Saturdays it closes two hours earlier.";

/// Tokens decoded per call.
const NEW_TOKENS: usize = 128;

/// Tokens decoded per sequence in a batched call.
pub const BATCH_NEW_TOKENS: usize = 32;

/// What to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// The imported model folder (the GGUF's weights in the Hugging Face layout).
    pub model_dir: PathBuf,
    /// The GGUF file llama.cpp runs.
    pub gguf: PathBuf,
    /// The Python with llama-cpp-python.
    pub python: PathBuf,
    /// `xtask/reference/llamacpp_bench.py`.
    pub script: PathBuf,
    /// Alternated rounds.
    pub rounds: usize,
    /// Batch sizes of batched decoding to compare as well (none: batch 1 only).
    pub batches: Vec<usize>,
}

/// Each side's rate per round, alternated.
#[derive(Debug, Default, Clone)]
struct Pairs {
    ours: Vec<f64>,
    theirs: Vec<f64>,
}

/// A side's `(median, min, max)`.
type Spread = (f64, f64, f64);

impl Pairs {
    /// Ours and theirs as `(median, min, max)`.
    fn spreads(&self) -> (Spread, Spread) {
        (spread(&self.ours), spread(&self.theirs))
    }

    /// Medians, spreads, their ratio and the rounds as JSON.
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let ((a, a_min, a_max), (b, b_min, b_max)) = self.spreads();
        let mut json = serde_json::Map::new();
        json.insert("ours_tok_s".into(), json!([a, a_min, a_max]));
        json.insert("llama_cpp_tok_s".into(), json!([b, b_min, b_max]));
        json.insert("ratio".into(), ratio(a, b).into());
        let rounds = self
            .ours
            .iter()
            .zip(&self.theirs)
            .map(|(a, b)| json!([a, b]));
        json.insert("rounds".into(), rounds.collect::<Vec<_>>().into());
        json
    }
}

/// The prompts of a batch of `b`: sequence `i` starts from `prompt` rotated left by `i`.
fn rotated(prompt: &[u32], b: usize) -> Vec<Vec<u32>> {
    (0..b)
        .map(|i| {
            let mut p = prompt.to_vec();
            p.rotate_left(i % prompt.len().max(1));
            p
        })
        .collect()
}

/// llama.cpp's decoding speed, from one run of the script.
fn llama_cpp_rate(options: &Options, prompt: &[u32], batch: Option<usize>) -> Result<f64> {
    let ids = prompt
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let out = Command::new(&options.python)
        .arg(&options.script)
        .arg(&options.gguf)
        .args(["--prompt", &ids, "--threads", &threads.to_string()])
        .args(match batch {
            Some(b) => vec![
                "--new".to_owned(),
                BATCH_NEW_TOKENS.to_string(),
                "--batch".to_owned(),
                b.to_string(),
            ],
            None => vec!["--new".to_owned(), NEW_TOKENS.to_string()],
        })
        .output()
        .map_err(|e| Error::io(&options.python, e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "{} failed ({}): {}",
            options.script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::json(&options.script, e))?;
    value["decode_tok_s"].as_f64().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no decode_tok_s in {}",
            options.script.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    })
}

/// Runs the comparison; `progress` gets a line per round.
///
/// # Errors
/// Loading the model, decoding, or a failing llama.cpp run.
pub fn run(options: &Options, mut progress: impl FnMut(&str)) -> Result<Bench> {
    if options.batches.contains(&0) {
        return Err(Error::Invalid("batch sizes must be at least 1".into()));
    }
    let (model, tokenizer_dir) = load_for_inference(
        &options.model_dir,
        tch::Device::Cpu,
        None,
        Some(WeightFormat::Gguf),
        WeightFormat::Gguf,
    )?;
    let tokenizer = ModelTokenizer::from_dir(&tokenizer_dir)?;
    let mut prompt = tokenizer.encode(PROMPT, false)?;
    prompt.truncate(16);
    let bytes = match &model {
        InferenceModel::Packed(p) => p.weight_bytes_per_token(),
        InferenceModel::Llama(_) => {
            return Err(Error::Invalid(format!(
                "{} did not pack in its GGUF blocks",
                options.model_dir.display()
            )));
        }
    };
    let mut single = Pairs::default();
    let mut batched = vec![Pairs::default(); options.batches.len()];
    for round in 0..options.rounds {
        let a = decode_rate(&model, &tokenizer, &[prompt.clone()], NEW_TOKENS, 2)?;
        let b = llama_cpp_rate(options, &prompt, None)?;
        let mut line = format!(
            "round {}/{}: ours {a:.1} tok/s, llama.cpp {b:.1} tok/s ({:.2}x)",
            round + 1,
            options.rounds,
            ratio(a, b)
        );
        single.ours.push(a);
        single.theirs.push(b);
        for (&size, pairs) in options.batches.iter().zip(&mut batched) {
            let prompts = rotated(&prompt, size);
            let a = decode_rate(&model, &tokenizer, &prompts, BATCH_NEW_TOKENS, 2)?;
            let b = llama_cpp_rate(options, &prompt, Some(size))?;
            line += &format!("; batch {size}: {a:.1} / {b:.1} ({:.2}x)", ratio(a, b));
            pairs.ours.push(a);
            pairs.theirs.push(b);
        }
        progress(&line);
    }
    let bandwidth = read_bandwidth()?;
    let mut bench = report(&single, bytes, bandwidth, options);
    if !options.batches.is_empty() {
        add_batched(&mut bench, &options.batches, &batched);
    }
    Ok(bench)
}

/// The batched comparison: a JSON entry per batch size and a table after the batch-1 report.
fn add_batched(bench: &mut Bench, sizes: &[usize], pairs: &[Pairs]) {
    let mut rows = String::new();
    let mut entries = serde_json::Map::new();
    for (size, p) in sizes.iter().zip(pairs) {
        let ((a, a_min, a_max), (b, b_min, b_max)) = p.spreads();
        rows += &format!(
            "| {size} | {a:.1} ({a_min:.1}–{a_max:.1}) | {b:.1} ({b_min:.1}–{b_max:.1}) | {:.2}x |\n",
            ratio(a, b)
        );
        entries.insert(size.to_string(), p.json().into());
    }
    bench.json.insert("batched".into(), entries.into());
    bench.summary += &format!(
        "\nBatched greedy decoding in the same rounds: sequence i starts from the prompt rotated \
         left by i tokens, {BATCH_NEW_TOKENS} new tokens each; ours decodes the sequences as one \
         batch (`generate`; steps of more than {QUANT_MAX_ROWS} rows run on the packed model's \
         dense copy of its layers, not on the blocks), llama.cpp with its own batched \
         `llama_decode` (one `seq_id` per sequence, greedy sampler in C, its context defaults). \
         Figures: all sequences' new tokens over the wall time of the call, the fastest of 2 \
         after a warm-up, median (min–max) over the rounds.\n\n\
         | sequences | aligner-rs, tok/s | llama.cpp, tok/s | ratio of the medians |\n\
         |---:|---:|---:|---:|\n{rows}"
    );
}

fn report(single: &Pairs, bytes: usize, read_gb_s: f64, options: &Options) -> Bench {
    let (cpu, cores, load) = machine_now();
    let ((a, a_min, a_max), (b, b_min, b_max)) = single.spreads();
    let (ours, theirs) = (&single.ours, &single.theirs);
    let roofline = a * bytes as f64 / (read_gb_s * 1e9);
    let mut json = single.json();
    json.insert("read_gb_s".into(), read_gb_s.into());
    json.insert("weight_bytes_per_token".into(), bytes.into());
    json.insert("roofline_share".into(), roofline.into());
    json.insert("cpu".into(), cpu.clone().into());
    let pairs = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| format!("{a:.0}/{b:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let md = format!(
        "{HEADING}\n\nBatch-1 greedy decoding of the GGUF file {}, {} rounds alternating our \
         model packed in the file's own blocks (for the embedded Q4_1 file: int4, Q8_0 head) with \
         llama.cpp (llama-cpp-python, {cores} threads, built from source for this CPU by `cargo \
         xtask setup`, without its AMX kernels); {NEW_TOKENS} tokens from the same 16 \
         prompt tokens, each figure the fastest of 2 calls after a warm-up (`bench_versus`; \
         {cpu}, {cores} cores, load {load}).\n\n\
         | | median (min–max), tok/s |\n|---|---:|\n\
         | aligner-rs, the file's blocks | {a:.1} ({a_min:.1}–{a_max:.1}) |\n\
         | llama.cpp | {b:.1} ({b_min:.1}–{b_max:.1}) |\n\
         | ratio of the medians | {:.2}x |\n\n\
         Rounds (ours/llama.cpp): {pairs}. Ours reads {:.1} MB of weights per token; at the \
         measured {read_gb_s:.1} GB/s of read bandwidth that is a roofline of {:.0} tok/s, of \
         which the median reaches {:.0}%.\n",
        options
            .gguf
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        ours.len(),
        ratio(a, b),
        bytes as f64 / 1e6,
        read_gb_s * 1e9 / bytes as f64,
        roofline * 100.0,
    );
    Bench { json, summary: md }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_compares_medians_and_keeps_every_round() {
        let options = Options {
            model_dir: PathBuf::from("m"),
            gguf: PathBuf::from("/x/model.Q4_1.gguf"),
            python: PathBuf::from("python3"),
            script: PathBuf::from("s.py"),
            rounds: 3,
            batches: vec![],
        };
        let single = Pairs {
            ours: vec![90.0, 110.0, 100.0],
            theirs: vec![80.0, 100.0, 90.0],
        };
        let bench = report(&single, 100_000_000, 40.0, &options);
        assert_eq!(bench.json["ours_tok_s"], json!([100.0, 90.0, 110.0]));
        assert_eq!(bench.json["llama_cpp_tok_s"], json!([90.0, 80.0, 100.0]));
        let ratio = bench.json["ratio"].as_f64().unwrap_or_default();
        assert!((ratio - 100.0 / 90.0).abs() < 1e-12);
        // 100 tok/s x 100 MB = 10 GB/s of 40.
        let share = bench.json["roofline_share"].as_f64().unwrap_or_default();
        assert!((share - 0.25).abs() < 1e-12);
        assert!(bench.summary.contains("| ratio of the medians | 1.11x |"));
        assert!(bench.summary.contains("90/80, 110/100, 100/90"));
        assert!(bench.summary.contains("model.Q4_1.gguf"));
    }

    #[test]
    fn batched_rows_give_each_size_its_medians() {
        let mut bench = Bench::default();
        let pairs = [
            Pairs {
                ours: vec![300.0, 320.0, 310.0],
                theirs: vec![200.0, 250.0, 240.0],
            },
            Pairs {
                ours: vec![900.0],
                theirs: vec![600.0],
            },
        ];
        add_batched(&mut bench, &[8, 32], &pairs);
        assert_eq!(
            bench.json["batched"]["8"]["ours_tok_s"],
            json!([310.0, 300.0, 320.0])
        );
        assert_eq!(
            bench.json["batched"]["8"]["llama_cpp_tok_s"],
            json!([240.0, 200.0, 250.0])
        );
        assert_eq!(bench.json["batched"]["32"]["ratio"], json!(1.5));
        assert!(
            bench
                .summary
                .contains("| 8 | 310.0 (300.0–320.0) | 240.0 (200.0–250.0) | 1.29x |")
        );
        assert!(
            bench
                .summary
                .contains("| 32 | 900.0 (900.0–900.0) | 600.0 (600.0–600.0) | 1.50x |")
        );
    }

    #[test]
    fn batch_prompts_are_rotations() {
        assert_eq!(
            rotated(&[1, 2, 3], 4),
            [vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]
        );
    }
}
