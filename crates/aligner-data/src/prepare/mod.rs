//! Offline preparation: specs in, tokenised safetensors shards and a JSON
//! manifest out.
//!
//! Each shard `shard-NNNNN.safetensors` holds three i64 tensors:
//! `input_ids` and `labels` (all rows concatenated) and `offsets`
//! (`rows + 1` entries; row `i` is `offsets[i]..offsets[i+1]`). Every file is
//! written to a temporary name and renamed into place; `manifest.json` is
//! written last, so a directory with a manifest is complete. [`read_prepared`] reads such a
//! directory back, checked against its manifest.

mod load;
mod manifest;
mod shard;

use crate::file::WrapFileError as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use load::{MANIFEST_VERSION, Prepared, read_prepared};
pub use manifest::{DroppedRow, HistogramBin, MANIFEST_FILE, Manifest, ShardInfo};

use crate::error::{Error, Result};
use crate::format::{Example, Registry};
use crate::mix::{MixOptions, load_mix};
use crate::spec::DatasetSpec;
use crate::tokenize::{Encoded, Encoder, TokenizeStats};

/// One input of [`prepare`]: a dataset spec, or a bare file path read with
/// [`PrepareOptions::default_format`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetInput {
    /// `NAME[:PROPORTION[:PATH]]`.
    Spec(DatasetSpec),
    /// A data file, all rows.
    Path(PathBuf),
}

impl DatasetInput {
    /// A spec when the text before the first `:` is a registered format
    /// name, otherwise a path.
    pub fn parse(s: &str, registry: &Registry) -> Result<Self> {
        let name = s.split(':').next().unwrap_or_default();
        if registry.get(name).is_ok() {
            Ok(DatasetInput::Spec(s.parse()?))
        } else {
            Ok(DatasetInput::Path(s.into()))
        }
    }

    fn into_spec(self, default_format: &str) -> DatasetSpec {
        match self {
            DatasetInput::Spec(s) => s,
            DatasetInput::Path(p) => DatasetSpec::new(default_format, p),
        }
    }
}

/// Options of [`prepare`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareOptions {
    /// Mixing: seed, bad-row skipping, identity warm-up.
    pub mix: MixOptions,
    /// Format for bare paths.
    pub default_format: String,
    /// Rows per shard (at least 1).
    pub rows_per_shard: usize,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            mix: MixOptions::default(),
            default_format: "correction-json".into(),
            rows_per_shard: 65_536,
        }
    }
}

/// A stage of [`prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Reading and sampling the inputs (`done`/`total` count inputs).
    Reading,
    /// Tokenising (`done`/`total` count examples).
    Tokenizing,
    /// Writing shards (`done`/`total` count shards).
    Writing,
}

/// A progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The current stage.
    pub stage: Stage,
    /// Units done in this stage.
    pub done: u64,
    /// Units in this stage.
    pub total: u64,
}

const CHUNK: usize = 4096;

/// Reads, mixes and tokenises `inputs` and writes shards and a manifest to
/// `output_dir` (created if needed). Tokenisation runs on rayon's pool.
/// `progress` is called from the calling thread.
pub fn prepare(
    inputs: &[DatasetInput],
    output_dir: &Path,
    encoder: &Encoder,
    registry: &Registry,
    options: &PrepareOptions,
    progress: &dyn Fn(Progress),
) -> Result<Manifest> {
    if options.rows_per_shard == 0 {
        return Err(Error::InvalidOption {
            name: "rows_per_shard",
            reason: "must be at least 1".into(),
        });
    }
    let specs: Vec<DatasetSpec> = inputs
        .iter()
        .cloned()
        .map(|i| i.into_spec(&options.default_format))
        .collect();
    let total_inputs = specs.len() as u64;
    progress(Progress {
        stage: Stage::Reading,
        done: 0,
        total: total_inputs,
    });
    let mix = load_mix(&specs, registry, &options.mix)?;
    progress(Progress {
        stage: Stage::Reading,
        done: total_inputs,
        total: total_inputs,
    });

    let examples: Vec<&Example> = mix.examples.iter().map(|m| &m.example).collect();
    let total = examples.len() as u64;
    let mut encoded: Vec<Option<Encoded>> = Vec::with_capacity(examples.len());
    let mut stats = TokenizeStats::default();
    progress(Progress {
        stage: Stage::Tokenizing,
        done: 0,
        total,
    });
    for (c, chunk) in examples.chunks(CHUNK).enumerate() {
        let part: Vec<Encoded> = chunk
            .par_iter()
            .map(|e| encoder.encode(e))
            .collect::<Result<_>>()?;
        for (j, e) in part.into_iter().enumerate() {
            stats.add(c * CHUNK + j, &e);
            encoded.push((e.trained_tokens() > 0).then_some(e));
        }
        progress(Progress {
            stage: Stage::Tokenizing,
            done: encoded.len() as u64,
            total,
        });
    }

    std::fs::create_dir_all(output_dir).map_err(|e| Error::io(output_dir, e))?;
    let kept: Vec<&Encoded> = encoded.iter().flatten().collect();
    let shard_count = kept.len().div_ceil(options.rows_per_shard);
    let mut shards = Vec::with_capacity(shard_count);
    progress(Progress {
        stage: Stage::Writing,
        done: 0,
        total: shard_count as u64,
    });
    for (s, rows) in kept.chunks(options.rows_per_shard).enumerate() {
        let file = format!("shard-{s:05}.safetensors");
        let tokens = shard::write(&output_dir.join(&file), rows)?;
        shards.push(ShardInfo {
            file,
            rows: rows.len(),
            tokens,
            first_row: s * options.rows_per_shard,
        });
        progress(Progress {
            stage: Stage::Writing,
            done: (s + 1) as u64,
            total: shard_count as u64,
        });
    }

    let manifest = Manifest::build(&mix, &stats, &kept, shards, encoder, options);
    manifest.write(output_dir)?;
    Ok(manifest)
}

/// Reads back one shard: `(input_ids, labels, offsets)`.
pub fn read_shard(path: &Path) -> Result<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    shard::read(path)
}

#[cfg(test)]
mod tests;
