//! The JSON manifest written next to the shards.

use crate::file::WrapFileError as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PrepareOptions;
use super::shard::write_atomic;
use crate::error::{Error, Result};
use crate::mix::{Mix, SourceReport};
use crate::tokenize::{DropReason, Encoded, Encoder, TokenizeStats};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the output directory.
    pub file: String,
    /// Rows in the shard.
    pub rows: usize,
    /// Tokens in the shard.
    pub tokens: u64,
    /// Global index of the shard's first row.
    pub first_row: usize,
}

/// A row left out at tokenisation, traced back to its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRow {
    /// Index of its spec in the inputs.
    pub source: usize,
    /// 1-based row number in that spec's file.
    pub row: usize,
    /// Whether it was an identity (warm-up) example.
    pub identity: bool,
    /// Why.
    pub reason: DropReason,
    /// Tokens before truncation.
    pub full_length: usize,
}

/// Sequences with `min <= length <= max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramBin {
    /// Smallest length in the bin.
    pub min: usize,
    /// Largest length in the bin.
    pub max: usize,
    /// Sequences in the bin.
    pub count: usize,
}

/// Everything [`super::prepare`] did, saved as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest layout version.
    pub version: u32,
    /// `aligner-data <version>`.
    pub created_by: String,
    /// The options used.
    pub options: PrepareOptions,
    /// Truncation length.
    pub max_length: usize,
    /// BOS id, when prepended.
    pub bos_id: Option<u32>,
    /// EOS id (appended to every target).
    pub eos_id: u32,
    /// Pad id for collation.
    pub pad_id: u32,
    /// Per input: counts and skipped rows.
    pub sources: Vec<SourceReport>,
    /// Rows written.
    pub rows: usize,
    /// Identity rows among them (the first `identity_rows` rows with
    /// placement `first`).
    pub identity_rows: usize,
    /// Tokens written.
    pub tokens: u64,
    /// Tokenisation counts (prompt/target tokens, truncations).
    pub stats: TokenizeStats,
    /// Rows dropped at tokenisation.
    pub dropped: Vec<DroppedRow>,
    /// Sequence lengths in power-of-two bins.
    pub length_histogram: Vec<HistogramBin>,
    /// The shard files, in row order.
    pub shards: Vec<ShardInfo>,
}

impl Manifest {
    pub(super) fn build(
        mix: &Mix,
        stats: &TokenizeStats,
        kept: &[&Encoded],
        shards: Vec<ShardInfo>,
        encoder: &Encoder,
        options: &PrepareOptions,
    ) -> Self {
        let dropped = stats
            .dropped
            .iter()
            .map(|d| {
                let m = &mix.examples[d.index];
                DroppedRow {
                    source: m.source,
                    row: m.row,
                    identity: m.identity,
                    reason: d.reason,
                    full_length: d.full_length,
                }
            })
            .collect();
        let dropped_identity = stats
            .dropped
            .iter()
            .filter(|d| mix.examples[d.index].identity)
            .count();
        Self {
            version: super::MANIFEST_VERSION,
            created_by: concat!("aligner-data ", env!("CARGO_PKG_VERSION")).to_owned(),
            options: options.clone(),
            max_length: encoder.max_length(),
            bos_id: encoder.adds_bos().then(|| encoder.bos_id()).flatten(),
            eos_id: encoder.eos_id(),
            pad_id: encoder.pad_id(),
            sources: mix.sources.clone(),
            rows: kept.len(),
            identity_rows: mix.identity_rows - dropped_identity,
            tokens: kept.iter().map(|e| e.len() as u64).sum(),
            stats: stats.clone(),
            dropped,
            length_histogram: histogram(kept.iter().map(|e| e.len())),
            shards,
        }
    }

    /// Writes `manifest.json` into `dir` (through a temporary file).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json(&path, None, e))?;
        write_atomic(&path, &json)
    }

    /// Reads `manifest.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json(&path, None, e))
    }
}

/// Power-of-two bins `[1,1], [2,3], [4,7], ...`; empty bins left out.
pub(crate) fn histogram(lengths: impl Iterator<Item = usize>) -> Vec<HistogramBin> {
    let mut counts = [0usize; 65];
    for len in lengths {
        let bin = if len == 0 {
            0
        } else {
            (usize::BITS - len.leading_zeros()) as usize
        };
        counts[bin] += 1;
    }
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(b, &count)| match b {
            0 => HistogramBin {
                min: 0,
                max: 0,
                count,
            },
            _ => HistogramBin {
                min: 1 << (b - 1),
                max: 1usize.checked_shl(b as u32).map_or(usize::MAX, |m| m - 1),
                count,
            },
        })
        .collect()
}
