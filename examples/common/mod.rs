//! Helpers shared by the examples: the model folder (the embedded default model unless given)
//! with a progress bar while it is fetched, and command-line parsing of dtype and device.
#![allow(dead_code)]

pub mod aligner_prompt;

use std::path::{Path, PathBuf};

use aligner::model::{DType, InferenceModel, WeightFormat, hub, parse_device};

/// `dir` if given (a GGUF file is imported into the cache on first use, as the applications do
/// with `load_for_inference`), else the embedded default model, fetched and imported on first use.
pub fn model_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if hub::is_gguf_file(dir) {
            return Ok(hub::ensure_gguf_imported(dir, &mut |_, _, _| {})?);
        }
        return Ok(dir.to_path_buf());
    }
    Ok(hub::ensure_default_model_with_bar()?)
}

/// clap parser for `--dtype`.
pub fn dtype(s: &str) -> Result<DType, String> {
    s.parse().map_err(|e: aligner::model::Error| e.to_string())
}

/// clap parser for `--device`.
pub fn device(s: &str) -> Result<tch::Device, String> {
    parse_device(s).map_err(|e| e.to_string())
}

/// `rel` inside the repository (the examples' default data and model paths are relative to it,
/// whatever the working directory).
pub fn repo_path(rel: &str) -> PathBuf {
    aligner::app::repo_path(rel)
}

/// `--weights`: a format, or `None` for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights(pub Option<WeightFormat>);

/// clap parser for `--weights`: `auto`, `dense`, `int8`, `int4` or `gguf`.
pub fn weights(s: &str) -> Result<Weights, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Weights(None));
    }
    s.parse()
        .map(|f| Weights(Some(f)))
        .map_err(|e: aligner::model::Error| e.to_string())
}

/// Loads a model or adapter folder for inference ([`aligner::app::load_for_inference`]:
/// `auto` settings pick f32 activations with `cpu_format` blocks on the CPU, bf16 dense weights
/// elsewhere). Returns the model and its tokenizer folder.
pub fn load_for_inference(
    dir: &Path,
    device: tch::Device,
    dtype: Option<DType>,
    weights: Weights,
    cpu_format: WeightFormat,
) -> anyhow::Result<(InferenceModel, PathBuf)> {
    Ok(aligner::app::load_for_inference(
        dir, device, dtype, weights.0, cpu_format,
    )?)
}

pub mod upstream;
