//! Right-padding collation.

use serde::{Deserialize, Serialize};

use crate::tokenize::{Encoded, IGNORE_INDEX};

/// A collated batch, row-major, shape `[batch, seq]` for every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// `[batch, seq]`.
    pub shape: [usize; 2],
    /// Token ids, padded with the pad id.
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding.
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

    /// Labelled positions (what the loss averages over).
    pub fn trained_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Right-pads `rows` to the longest (rounded up to `pad_to_multiple_of`
/// when given). Padding never touches labels of real tokens, so EOS stays
/// trained even when `pad_id` equals the EOS id.
pub fn collate(rows: &[&Encoded], pad_id: u32, pad_to_multiple_of: Option<usize>) -> Batch {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let t = round_up(longest, pad_to_multiple_of);
    let b = rows.len();
    let mut batch = Batch {
        shape: [b, t],
        input_ids: vec![i64::from(pad_id); b * t],
        attention_mask: vec![0; b * t],
        labels: vec![IGNORE_INDEX; b * t],
        position_ids: None,
        sequence_ids: None,
    };
    for (i, r) in rows.iter().enumerate() {
        let row = i * t..i * t + r.len();
        batch.input_ids[row.clone()].copy_from_slice(&r.input_ids);
        batch.labels[row.clone()].copy_from_slice(&r.labels);
        batch.attention_mask[row].fill(1);
    }
    batch
}

pub(super) fn round_up(n: usize, multiple: Option<usize>) -> usize {
    match multiple {
        Some(m) if m > 1 => n.div_ceil(m) * m,
        _ => n,
    }
}
