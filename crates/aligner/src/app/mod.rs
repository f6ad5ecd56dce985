//! The applications behind the examples and `cargo xtask`: each module has a public options
//! struct with plain fields and a `run` function that returns a typed result; the programs in
//! `examples/` parse the command line into the options, show progress and print the result.
//!
//! - [`math_eval`]: math accuracy of the upstream alone, with a whole-answer Aligner, with a
//!   Stream Aligner and of the aligner alone (`cargo xtask math-eval`).
//! - [`stream_data`]: Stream Aligner training rows from the upstream's real sentences
//!   (`cargo xtask stream-data`).
//! - [`evaluate`]: math accuracy of answer files, helpful/harmless win rates.
//! - [`stream_align`]: answering questions with an upstream and an aligner in each mode (the
//!   README's main command).
//! - [`train`]: training an aligner from dataset specs or prepared shards, with its prompt
//!   record.
//! - [`bench`]: the speed benchmarks that `cargo xtask bench` runs (model, Stream Aligner
//!   modes, the overlapped loop with a remote upstream).

pub mod bench;
pub mod evaluate;
pub mod math_eval;
pub mod stream_align;
pub mod stream_data;
pub mod train;

use std::path::{Path, PathBuf};

use crate::model::generate::SamplingConfig;
use crate::model::{DType, InferenceModel, PackCache, PackOutcome, WeightFormat, hub};

/// Everything that can go wrong in an application.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing data files failed.
    #[error(transparent)]
    Data(#[from] crate::data::Error),
    /// A model, its tokenizer or a remote endpoint failed.
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    /// The correction loop failed.
    #[error(transparent)]
    Stream(#[from] crate::stream::Error),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::Error),
    /// Scoring or judging failed.
    #[error(transparent)]
    Eval(#[from] crate::eval::Error),
    /// A LibTorch operation failed.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A file could not be read, created, written or parsed; the error names it.
    #[error(transparent)]
    File(#[from] crate::data::FileError),
    /// The options or the inputs are unusable (a message for the user).
    #[error("{0}")]
    Invalid(String),
    /// An error with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

/// `Result` with the applications' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// The error, if any, with `context()` in front of it.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context(),
            source: Box::new(e.into()),
        })
    }
}

/// `rel` inside the repository this crate was built from: the applications' default data,
/// aligner and output paths are relative to it, whatever the working directory.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// `dir` if given, else the embedded default model, fetched and imported on first use
/// (silently; a program that wants a progress bar resolves the default itself first with
/// [`hub::ensure_default_model`]).
pub fn model_dir(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(hub::ensure_default_model(&mut |_, _, _| {})?),
    }
}

/// Sentences of `text` by the Stream Aligner's segmenter, trimmed, empty ones dropped: how
/// the steps of a GSM8K-style solution without `steps` are cut.
pub fn sentence_steps(text: &str) -> Vec<String> {
    crate::stream::sentences(text)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A sampling configuration as JSON, for the settings files next to outputs.
pub fn sampling_json(s: &SamplingConfig) -> serde_json::Value {
    serde_json::json!({
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty,
        "frequency_penalty": s.frequency_penalty,
        "seed": s.seed,
    })
}

/// The weights [`load_for_inference`] loads: `weights` when given, else `cpu_format` on the
/// CPU and dense elsewhere.
pub fn weight_format(
    device: tch::Device,
    weights: Option<WeightFormat>,
    cpu_format: WeightFormat,
) -> WeightFormat {
    weights.unwrap_or(if device == tch::Device::Cpu {
        cpu_format
    } else {
        WeightFormat::Dense
    })
}

/// Loads a model or adapter folder, or a GGUF file (imported into the cache the first time,
/// [`hub::ensure_gguf_imported`]), for inference. `dtype` and `weights` left `None` (`auto`)
/// pick, on the CPU, f32 activations with `cpu_format` blocks (the packed model's fast
/// decoding) and elsewhere bf16 dense weights; where `cpu_format` is int4 and the folder holds
/// its GGUF file's own blocks ([`aligner_model::import::GGUF_BLOCKS_FILE`]), `auto` packs those
/// ([`WeightFormat::Gguf`]: the file's Q4_K, Q6_K, ... code for code; for the embedded Q4_1
/// model the same pack as int4). Returns the model and its tokenizer folder.
pub fn load_for_inference(
    dir: &Path,
    device: tch::Device,
    dtype: Option<DType>,
    weights: Option<WeightFormat>,
    cpu_format: WeightFormat,
) -> Result<(InferenceModel, PathBuf)> {
    let cpu = device == tch::Device::Cpu;
    let format = weight_format(device, weights, cpu_format);
    let kind = dtype.map_or(
        if cpu {
            tch::Kind::Float
        } else {
            tch::Kind::BFloat16
        },
        DType::kind,
    );
    let imported;
    let dir = if hub::is_gguf_file(dir) {
        // The import reports progress only when it runs: say so once.
        let mut said = false;
        imported = hub::ensure_gguf_imported(dir, &mut |_, _, _| {
            if !std::mem::replace(&mut said, true) {
                eprintln!("importing {} into the cache (once)", dir.display());
            }
        })?;
        imported.as_path()
    } else {
        dir
    };
    let format = if weights.is_none()
        && format == WeightFormat::Int4
        && dir.join(aligner_model::import::GGUF_BLOCKS_FILE).is_file()
    {
        WeightFormat::Gguf
    } else {
        format
    };
    let packed = (format != WeightFormat::Dense).then_some(format);
    let cache = PackCache::from_env();
    let (model, tokenizer, outcome) =
        InferenceModel::load_cached(dir, kind, device, packed, cache.as_ref())
            .context_with(|| format!("loading {}", dir.display()))?;
    match outcome {
        Some(PackOutcome::NotStored(why)) => {
            eprintln!("note: the packed {} was not cached ({why})", dir.display());
        }
        Some(PackOutcome::Replaced(why)) => {
            eprintln!(
                "note: a cached pack of {} could not be opened and was rebuilt ({why})",
                dir.display()
            );
        }
        _ => {}
    }
    Ok((model, tokenizer))
}

/// `dense` or the packed format of a loaded model.
pub fn weights_name(model: &InferenceModel) -> String {
    match model {
        InferenceModel::Llama(_) => "dense".into(),
        InferenceModel::Packed(p) => p.format().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_steps_trims_and_drops_empty_sentences() {
        assert_eq!(
            sentence_steps("He has 3 apples.  He eats 1. The answer is 2."),
            ["He has 3 apples.", "He eats 1.", "The answer is 2."]
        );
        assert!(sentence_steps("   ").is_empty());
    }

    #[test]
    fn sampling_json_names_every_setting() {
        let json = sampling_json(&SamplingConfig::greedy());
        for key in [
            "temperature",
            "top_k",
            "top_p",
            "repetition_penalty",
            "frequency_penalty",
            "seed",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[test]
    fn context_is_shown_before_the_error() {
        let e: Result<()> = Err(Error::Invalid("bad".into())).context_with(|| "doing x".into());
        assert_eq!(e.unwrap_err().to_string(), "doing x: bad");
    }
}
