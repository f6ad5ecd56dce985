//! The row every batch is made of.

use crate::error::{Error, Result};
use crate::tokenize::Encoded;

/// Input ids and their labels: what collation reads from a row. `labels[i]` is `input_ids[i]`
/// where the loss applies and [`IGNORE_INDEX`](crate::IGNORE_INDEX) elsewhere (the shift to
/// next-token targets happens in the loss).
pub trait LabelledTokens {
    /// Token ids.
    fn input_ids(&self) -> &[i64];
    /// One label per token id.
    fn labels(&self) -> &[i64];
}

/// Checks that each of `rows` has one label per token ([`Error::RowLengths`] counts the rows
/// from 0 in order).
pub(super) fn check_lengths<'a, R: LabelledTokens + 'a>(
    rows: impl IntoIterator<Item = &'a R>,
) -> Result<()> {
    for (row, r) in rows.into_iter().enumerate() {
        let (input_ids, labels) = (r.input_ids().len(), r.labels().len());
        if input_ids != labels {
            return Err(Error::RowLengths {
                row,
                input_ids,
                labels,
            });
        }
    }
    Ok(())
}

/// One tokenised training example, as the trainer takes it and a shard stores it: `labels[i]`
/// is `input_ids[i]` where the loss applies and [`IGNORE_INDEX`](crate::IGNORE_INDEX)
/// elsewhere. [`Encoded`] rows convert with `From`.
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
    /// Rows from the encoder's output, in order.
    pub fn from_encoded(encoded: impl IntoIterator<Item = Encoded>) -> Vec<Self> {
        encoded.into_iter().map(Self::from).collect()
    }

    /// Sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the row has no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

impl LabelledTokens for TokenizedRow {
    fn input_ids(&self) -> &[i64] {
        &self.input_ids
    }

    fn labels(&self) -> &[i64] {
        &self.labels
    }
}

impl LabelledTokens for Encoded {
    fn input_ids(&self) -> &[i64] {
        &self.input_ids
    }

    fn labels(&self) -> &[i64] {
        &self.labels
    }
}
