//! Right-padding collation.

use serde::{Deserialize, Serialize};

use super::row::{LabelledTokens, check_lengths};
use crate::error::Result;
use crate::tokenize::IGNORE_INDEX;

/// A collated batch, row-major, shape `[batch, seq]` for every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// `[batch, seq]`.
    pub shape: [usize; 2],
    /// Token ids, padded with the pad id.
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding (a prefix of ones per row).
    pub attention_mask: Vec<i64>,
    /// Labels, padded with [`IGNORE_INDEX`].
    pub labels: Vec<i64>,
    /// Packed batches only: position of each token within its own row
    /// (restarting at 0 per packed row; 0 on padding).
    pub position_ids: Option<Vec<i64>>,
    /// Packed batches only: index of the packed row each token belongs to
    /// within its sequence (0, 1, ...; -1 on padding). Tokens attend only to
    /// earlier tokens with the same id (block-diagonal causal mask).
    pub sequence_ids: Option<Vec<i64>>,
}

impl Batch {
    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.shape[0]
    }

    /// Padded sequence length.
    pub fn seq_len(&self) -> usize {
        self.shape[1]
    }

    /// The next-token targets: flat indices into the shifted `[batch, seq - 1]` grid of the
    /// positions whose next label is not [`IGNORE_INDEX`], and those labels. Position `p`
    /// predicts the label at `p + 1`, so a row's first label is never a target (and in a
    /// packed batch no row predicts the next row's first token).
    pub fn targets(&self) -> (Vec<i64>, Vec<i64>) {
        let (b, t) = (self.batch_size(), self.seq_len());
        let (mut index, mut target) = (Vec::new(), Vec::new());
        if t < 2 {
            return (index, target);
        }
        for r in 0..b {
            for p in 0..t - 1 {
                let label = self.labels[r * t + p + 1];
                if label != IGNORE_INDEX {
                    index.push((r * (t - 1) + p) as i64);
                    target.push(label);
                }
            }
        }
        (index, target)
    }

    /// Number of next-token targets (what the loss averages over; see [`Batch::targets`]).
    pub fn target_tokens(&self) -> usize {
        let t = self.seq_len();
        if t < 2 {
            return 0;
        }
        self.labels
            .chunks_exact(t)
            .map(|row| row[1..].iter().filter(|&&l| l != IGNORE_INDEX).count())
            .sum()
    }

    /// Number of real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

/// Right-pads `rows`, each cut to its first `max_length` tokens when given, to the longest
/// (rounded up to `pad_to_multiple_of` when given). Padding never touches labels of real
/// tokens, so EOS stays trained even when `pad_id` equals the EOS id. No rows give an empty
/// `[0, 0]` batch.
///
/// # Errors
/// [`Error::RowLengths`](crate::Error::RowLengths) when a row has not one label per token.
pub fn collate<R: LabelledTokens>(
    rows: &[&R],
    pad_id: i64,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<Batch> {
    check_lengths(rows.iter().copied())?;
    let len = |r: &R| r.input_ids().len().min(max_length.unwrap_or(usize::MAX));
    let longest = rows.iter().map(|r| len(r)).max().unwrap_or(0);
    let t = round_up(longest, pad_to_multiple_of);
    let b = rows.len();
    let mut batch = Batch {
        shape: [b, t],
        input_ids: vec![pad_id; b * t],
        attention_mask: vec![0; b * t],
        labels: vec![IGNORE_INDEX; b * t],
        position_ids: None,
        sequence_ids: None,
    };
    for (i, r) in rows.iter().enumerate() {
        let n = len(r);
        let row = i * t..i * t + n;
        batch.input_ids[row.clone()].copy_from_slice(&r.input_ids()[..n]);
        batch.labels[row.clone()].copy_from_slice(&r.labels()[..n]);
        batch.attention_mask[row].fill(1);
    }
    Ok(batch)
}

pub(super) fn round_up(n: usize, multiple: Option<usize>) -> usize {
    match multiple {
        Some(m) if m > 1 => n.div_ceil(m) * m,
        _ => n,
    }
}
