//! The trainer's data: tokenised rows, their batches and the seeded order they are visited in,
//! and prepared folders read back.
//!
//! Rows and batches are `aligner-data`'s ([`TokenizedRow`], [`Batch`], [`collate`]): anything
//! that yields input ids with labels (`-100` on positions without loss) can be trained on, and
//! `aligner-data`'s tokenised examples (`Encoded`) convert into rows with `From`. A folder that
//! `cargo xtask prepare` wrote loads with [`load_prepared`].

use std::path::Path;

use aligner_data::batch::shuffled_in_phases;
use aligner_data::prepare::{Manifest, read_prepared};
use aligner_data::rng::SplitMix64;

use crate::{Result, TrainData};

pub use aligner_data::batch::{Batch, LabelledTokens, TokenizedRow, collate, collate_packed, pack};
/// Label value of positions that carry no loss (prompt and padding), as in PyTorch.
pub use aligner_data::tokenize::IGNORE_INDEX;

/// A seed derived from a base seed and a tuple of counters (stable across runs and platforms).
pub(crate) fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut rng = SplitMix64::new(seed);
    let mut out = rng.next_u64();
    for &p in parts {
        rng = SplitMix64::new(out ^ p.wrapping_mul(0xA24B_AED4_963E_E407));
        out = rng.next_u64();
    }
    out
}

/// The order in which the rows `0..n` are visited in `epoch`: a Fisher-Yates shuffle seeded by
/// `(seed, epoch)`, or `0..n` when not shuffling. In epoch 0 the first `warmup_rows` rows (a
/// warm-up phase, see [`DataConfig::warmup_rows`](crate::DataConfig::warmup_rows)) come before
/// all the others, each phase shuffled on its own; later epochs shuffle all rows together.
pub fn epoch_order(
    n: usize,
    warmup_rows: usize,
    seed: u64,
    epoch: usize,
    shuffle: bool,
) -> Vec<usize> {
    if !shuffle {
        return (0..n).collect();
    }
    let warmup = if epoch == 0 { warmup_rows } else { 0 };
    shuffled_in_phases(n, warmup, derive_seed(seed, &[0xDA7A, epoch as u64]))
}

/// Training data read from a folder that `cargo xtask prepare` (`aligner_data::prepare`) wrote.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Every row of the shards as training rows (no held-out rows) and the pad id they were
    /// prepared with.
    pub data: TrainData,
    /// Rows at the start that form a warm-up phase (identity rows placed first): set
    /// [`DataConfig::warmup_rows`](crate::DataConfig::warmup_rows) to it.
    pub warmup_rows: usize,
    /// The folder's manifest.
    pub manifest: Manifest,
}

/// Reads the manifest and shards of a prepared folder into the trainer's data.
///
/// # Errors
/// [`Error::Dataset`](crate::Error::Dataset) naming the file for a missing or broken manifest
/// or shard; [`Error::Data`](crate::Error::Data) for a folder without rows.
///
/// ```no_run
/// # fn main() -> aligner_train::Result<()> {
/// let mut config = aligner_train::TrainConfig::default();
/// let prepared = aligner_train::data::load_prepared(std::path::Path::new("shards"))?;
/// config.data.warmup_rows = prepared.warmup_rows;
/// let data = prepared.data;
/// # Ok(()) }
/// ```
pub fn load_prepared(dir: &Path) -> Result<PreparedData> {
    let prepared = read_prepared(dir)?;
    if prepared.rows.is_empty() {
        return Err(crate::Error::Data(format!(
            "{}: the prepared folder holds no rows",
            dir.display()
        )));
    }
    let (warmup_rows, pad_id) = (prepared.warmup_rows(), prepared.pad_id());
    Ok(PreparedData {
        data: TrainData {
            train: prepared.rows,
            eval: Vec::new(),
            pad_id,
        },
        warmup_rows,
        manifest: prepared.manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 0, 42, 0, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 0, 42, 0, true));
        assert_ne!(a, epoch_order(50, 0, 42, 1, true));
        assert_ne!(a, epoch_order(50, 0, 43, 0, true));
        assert_eq!(epoch_order(5, 0, 42, 0, false), vec![0, 1, 2, 3, 4]);
    }

    /// The order of the epochs before the warm-up phase existed, which recorded runs used.
    #[test]
    fn without_a_warm_up_the_order_is_the_plain_shuffle() {
        let n = 37;
        let mut old: Vec<usize> = (0..n).collect();
        let mut rng = SplitMix64::new(derive_seed(42, &[0xDA7A, 0]));
        for i in (1..n).rev() {
            let j = rng.below(i + 1);
            old.swap(i, j);
        }
        assert_eq!(epoch_order(n, 0, 42, 0, true), old);
    }

    #[test]
    fn the_warm_up_rows_come_first_in_the_first_epoch_only() {
        let (n, warmup) = (40, 8);
        let first = epoch_order(n, warmup, 42, 0, true);
        assert!(first[..warmup].iter().all(|&i| i < warmup), "{first:?}");
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        // Later epochs mix them in as before.
        assert_eq!(
            epoch_order(n, warmup, 42, 1, true),
            epoch_order(n, 0, 42, 1, true)
        );
        assert!(
            epoch_order(n, warmup, 42, 1, true)[..warmup]
                .iter()
                .any(|&i| i >= warmup)
        );
        // Unshuffled, the data's own order already puts them first.
        assert_eq!(
            epoch_order(n, warmup, 42, 0, false),
            (0..n).collect::<Vec<_>>()
        );
    }
}
