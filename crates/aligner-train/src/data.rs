//! Tokenised rows, right-padded batches and the seeded data order.
//!
//! [`TokenizedRow`] and [`Batch`] are the narrow interface to the dataset crate: anything that
//! yields input ids with labels (`-100` on positions without loss) can be trained on.

use aligner_model::ModelTokenizer;

use crate::{Error, Result};

/// Label value of positions that carry no loss (prompt and padding), as in PyTorch.
pub const IGNORE_INDEX: i64 = -100;

/// One tokenised training example: `labels[i]` is `input_ids[i]` where the loss applies and
/// [`IGNORE_INDEX`] elsewhere (the shift to next-token targets happens in the loss).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenizedRow {
    /// Token ids, BOS first where the tokenizer adds one.
    pub input_ids: Vec<i64>,
    /// Same length as `input_ids`.
    pub labels: Vec<i64>,
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

/// SplitMix64: a tiny, well-mixed deterministic generator for data order and derived seeds.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection to avoid modulo bias.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
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
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// The Aligner correction prompt (seed facts, section 2), byte-exact:
/// `BEGINNING OF CONVERSATION: USER: ##Question: {q}\n##Answer: {a}\n##Correction:  ASSISTANT:`.
pub fn aligner_prompt(question: &str, answer: &str) -> String {
    format!(
        "BEGINNING OF CONVERSATION: USER: ##Question: {question}\n##Answer: {answer}\n##Correction:  ASSISTANT:"
    )
}

/// Tokenises one `(question, answer, correction)` row as `prompt + correction + EOS` with labels
/// on the correction and EOS only.
///
/// Temporary glue until `aligner-data` provides tokenised datasets: the prompt and the target are
/// encoded separately (BOS only on the prompt) and concatenated, so the label boundary is exact.
pub fn tokenize_correction(
    tokenizer: &ModelTokenizer,
    question: &str,
    answer: &str,
    correction: &str,
) -> Result<TokenizedRow> {
    let prompt = tokenizer.encode(&aligner_prompt(question, answer), true)?;
    let target = tokenizer.encode(correction, false)?;
    let eos = *tokenizer
        .eos_ids()
        .first()
        .ok_or_else(|| Error::Data("the tokenizer has no EOS token".into()))?;
    let mut input_ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let mut labels = vec![IGNORE_INDEX; input_ids.len()];
    for t in target.into_iter().chain([eos]) {
        input_ids.push(i64::from(t));
        labels.push(i64::from(t));
    }
    Ok(TokenizedRow { input_ids, labels })
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

    #[test]
    fn prompt_is_byte_exact() {
        assert_eq!(
            aligner_prompt("Q?", "A."),
            "BEGINNING OF CONVERSATION: USER: ##Question: Q?\n##Answer: A.\n##Correction:  ASSISTANT:"
        );
    }
}
