//! Tokenised rows, right-padded batches and the seeded data order.
//!
//! [`TokenizedRow`] and [`Batch`] are the narrow interface to the dataset crate: anything that
//! yields input ids with labels (`-100` on positions without loss) can be trained on, and
//! `aligner-data`'s tokenised examples ([`Encoded`]) convert into rows with `From`.

use aligner_data::rng::SplitMix64;
use aligner_data::tokenize::Encoded;

use crate::{Error, Result};

/// Label value of positions that carry no loss (prompt and padding), as in PyTorch.
pub use aligner_data::tokenize::IGNORE_INDEX;

/// One tokenised training example: `labels[i]` is `input_ids[i]` where the loss applies and
/// [`IGNORE_INDEX`] elsewhere (the shift to next-token targets happens in the loss).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenizedRow {
    /// Token ids, BOS first where the tokenizer adds one.
    pub input_ids: Vec<i64>,
    /// Same length as `input_ids`.
    pub labels: Vec<i64>,
}

impl From<Encoded> for TokenizedRow {
    fn from(e: Encoded) -> Self {
        Self {
            input_ids: e.input_ids,
            labels: e.labels,
        }
    }
}

impl TokenizedRow {
    /// Rows from `aligner-data`'s encoder output, in order.
    pub fn from_encoded(encoded: impl IntoIterator<Item = Encoded>) -> Vec<Self> {
        encoded.into_iter().map(Self::from).collect()
    }
}

/// A right-padded batch in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `(batch, seq)` token ids; padding uses the pad id.
    pub input_ids: Vec<i64>,
    /// `(batch, seq)` labels; padding and prompt positions are [`IGNORE_INDEX`].
    pub labels: Vec<i64>,
    /// `(batch, seq)`: 1 for real tokens, 0 for padding (always a prefix of ones per row).
    pub attention_mask: Vec<i64>,
    /// Rows.
    pub batch: usize,
    /// Columns (the longest row).
    pub seq: usize,
}

impl Batch {
    /// Flat indices into the shifted `(batch, seq - 1)` grid of the positions whose next-token
    /// target is not ignored, and those targets.
    pub fn targets(&self) -> (Vec<i64>, Vec<i64>) {
        let mut index = Vec::new();
        let mut target = Vec::new();
        if self.seq < 2 {
            return (index, target);
        }
        for r in 0..self.batch {
            for p in 0..self.seq - 1 {
                let label = self.labels[r * self.seq + p + 1];
                if label != IGNORE_INDEX {
                    index.push((r * (self.seq - 1) + p) as i64);
                    target.push(label);
                }
            }
        }
        (index, target)
    }

    /// Number of tokens that carry loss.
    pub fn target_tokens(&self) -> usize {
        if self.seq < 2 {
            return 0;
        }
        (0..self.batch)
            .map(|r| {
                self.labels[r * self.seq + 1..(r + 1) * self.seq]
                    .iter()
                    .filter(|&&l| l != IGNORE_INDEX)
                    .count()
            })
            .sum()
    }

    /// Number of real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

/// Pads `rows` on the right to the longest (after truncation to `max_length`) into a [`Batch`].
pub fn collate(rows: &[&TokenizedRow], pad_id: i64, max_length: usize) -> Result<Batch> {
    if rows.is_empty() {
        return Err(Error::Data("cannot collate an empty batch".into()));
    }
    let seq = rows
        .iter()
        .map(|r| r.input_ids.len().min(max_length))
        .max()
        .unwrap_or(0);
    let mut batch = Batch {
        input_ids: Vec::with_capacity(rows.len() * seq),
        labels: Vec::with_capacity(rows.len() * seq),
        attention_mask: Vec::with_capacity(rows.len() * seq),
        batch: rows.len(),
        seq,
    };
    for row in rows {
        if row.input_ids.len() != row.labels.len() {
            return Err(Error::Data(format!(
                "a row has {} input ids but {} labels",
                row.input_ids.len(),
                row.labels.len()
            )));
        }
        let n = row.input_ids.len().min(max_length);
        batch.input_ids.extend_from_slice(&row.input_ids[..n]);
        batch.input_ids.extend(std::iter::repeat_n(pad_id, seq - n));
        batch.labels.extend_from_slice(&row.labels[..n]);
        batch
            .labels
            .extend(std::iter::repeat_n(IGNORE_INDEX, seq - n));
        batch.attention_mask.extend(std::iter::repeat_n(1, n));
        batch.attention_mask.extend(std::iter::repeat_n(0, seq - n));
    }
    Ok(batch)
}

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
/// `(seed, epoch)`, or `0..n` when not shuffling.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SplitMix64::new(derive_seed(seed, &[0xDA7A, epoch as u64]));
        for i in (1..n).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collate_pads_right_and_counts_shifted_targets() {
        let a = TokenizedRow {
            input_ids: vec![5, 6, 7],
            labels: vec![IGNORE_INDEX, 6, 7],
        };
        let b = TokenizedRow {
            input_ids: vec![8, 9],
            labels: vec![IGNORE_INDEX, 9],
        };
        let batch = collate(&[&a, &b], 0, 16).unwrap();
        assert_eq!(batch.seq, 3);
        assert_eq!(batch.input_ids, vec![5, 6, 7, 8, 9, 0]);
        assert_eq!(batch.labels, vec![-100, 6, 7, -100, 9, -100]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(batch.target_tokens(), 3);
        let (index, target) = batch.targets();
        assert_eq!(index, vec![0, 1, 2]);
        assert_eq!(target, vec![6, 7, 9]);
        let truncated = collate(&[&a], 0, 2).unwrap();
        assert_eq!((truncated.seq, truncated.target_tokens()), (2, 1));
    }

    #[test]
    fn mismatched_row_is_an_error() {
        let bad = TokenizedRow {
            input_ids: vec![1, 2],
            labels: vec![1],
        };
        assert!(matches!(collate(&[&bad], 0, 8), Err(Error::Data(_))));
        assert!(matches!(collate(&[], 0, 8), Err(Error::Data(_))));
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 42, 0, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 42, 0, true));
        assert_ne!(a, epoch_order(50, 42, 1, true));
        assert_ne!(a, epoch_order(50, 43, 0, true));
        assert_eq!(epoch_order(5, 42, 0, false), vec![0, 1, 2, 3, 4]);
    }
}
