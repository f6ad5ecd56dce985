//! Batch-1 greedy decoding against llama.cpp on the same GGUF file, alternating: each round
//! measures our model packed in the file's own blocks ([`WeightFormat::Gguf`]; for the embedded
//! Q4_1 file the int4 pack) and then llama.cpp
//! (`xtask/reference/llamacpp_bench.py`, llama-cpp-python in the cached environment, a process
//! per round), both decoding 128 tokens from the same 16 prompt tokens, each figure the fastest
//! of 2 calls after a warm-up. The report gives both sides' medians and spreads over the
//! rounds, the ratio of the medians, every round's pair, and our roofline share (weight bytes
//! read per token times tokens per second, over the measured read bandwidth).
//!
//! JSON keys: `ours_tok_s` and `llama_cpp_tok_s` as `[median, min, max]`, `ratio` (of the
//! medians), `rounds` (the pairs), `read_gb_s`, `weight_bytes_per_token`, `roofline_share`,
//! `cpu`.

use crate::data::file::WrapFileError as _;
use std::path::PathBuf;
use std::process::Command;

use aligner_serve::bench::{machine_now, spread};
use serde_json::json;

use super::model::{decode_rate, read_bandwidth};
use super::{Bench, ratio};
use crate::app::{Error, Result, load_for_inference};
use crate::model::{InferenceModel, ModelTokenizer, WeightFormat};

/// The heading of the section `bench_versus --doc` writes into docs/benchmarks.md.
pub const HEADING: &str = "## Decoding against llama.cpp";

/// The prompt both sides decode from (its first 16 tokens).
const PROMPT: &str = "The library opens at nine in the morning and closes at six in the evening. \
On Saturdays it closes two hours earlier.";

/// Tokens decoded per call.
const NEW_TOKENS: usize = 128;

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
}

/// llama.cpp's decoding speed, from one run of the script.
fn llama_cpp_rate(options: &Options, prompt: &[u32]) -> Result<f64> {
    let ids = prompt
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let out = Command::new(&options.python)
        .arg(&options.script)
        .arg(&options.gguf)
        .args(["--prompt", &ids, "--new", &NEW_TOKENS.to_string()])
        .args(["--threads", &threads.to_string()])
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
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let a = decode_rate(&model, &tokenizer, &prompt, NEW_TOKENS, 2)?;
        let b = llama_cpp_rate(options, &prompt)?;
        progress(&format!(
            "round {}/{}: ours {a:.1} tok/s, llama.cpp {b:.1} tok/s ({:.2}x)",
            round + 1,
            options.rounds,
            ratio(a, b)
        ));
        ours.push(a);
        theirs.push(b);
    }
    let bandwidth = read_bandwidth()?;
    Ok(report(&ours, &theirs, bytes, bandwidth, options))
}

fn report(ours: &[f64], theirs: &[f64], bytes: usize, read_gb_s: f64, options: &Options) -> Bench {
    let (cpu, cores, load) = machine_now();
    let (a, a_min, a_max) = spread(ours);
    let (b, b_min, b_max) = spread(theirs);
    let roofline = a * bytes as f64 / (read_gb_s * 1e9);
    let mut json = serde_json::Map::new();
    json.insert("ours_tok_s".into(), json!([a, a_min, a_max]));
    json.insert("llama_cpp_tok_s".into(), json!([b, b_min, b_max]));
    json.insert("ratio".into(), ratio(a, b).into());
    json.insert(
        "rounds".into(),
        ours.iter()
            .zip(theirs)
            .map(|(a, b)| json!([a, b]))
            .collect::<Vec<_>>()
            .into(),
    );
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
        };
        let bench = report(
            &[90.0, 110.0, 100.0],
            &[80.0, 100.0, 90.0],
            100_000_000,
            40.0,
            &options,
        );
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
}
