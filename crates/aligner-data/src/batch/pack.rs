//! Packing several rows into one sequence.

use super::collate::{Batch, round_up};
use super::row::{LabelledTokens, check_lengths};
use crate::error::{Error, Result};
use crate::tokenize::IGNORE_INDEX;

/// Groups row indices into sequences of at most `max_length` tokens,
/// first-fit in the given order (shuffle first for random packs). Fails if a
/// row alone is longer than `max_length`.
pub fn pack(lengths: &[usize], max_length: usize) -> Result<Vec<Vec<usize>>> {
    let mut bins: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        if len > max_length {
            return Err(Error::InvalidOption {
                name: "max_length",
                reason: format!(
                    "row {i} has {len} tokens, more than the packing length {max_length}"
                ),
            });
        }
        match bins.iter_mut().find(|(used, _)| used + len <= max_length) {
            Some((used, rows)) => {
                *used += len;
                rows.push(i);
            }
            None => bins.push((len, vec![i])),
        }
    }
    Ok(bins.into_iter().map(|(_, rows)| rows).collect())
}

/// Collates packed sequences: each entry of `sequences` is the rows packed
/// into one sequence, each row cut to its first `max_length` tokens when given
/// (as [`collate`](super::collate) does). Adds `position_ids` (restarting at 0 per row) and
/// `sequence_ids` (0, 1, ... per row; -1 on padding). The first label of
/// every packed row is set to [`IGNORE_INDEX`] so no row is trained to
/// predict its first token from the previous row (with a shifted loss that
/// label is never used in an unpacked batch either).
///
/// # Errors
/// [`Error::RowLengths`] when a row has not one label per token (`row` counts the rows of all
/// sequences in order).
pub fn collate_packed<R: LabelledTokens>(
    sequences: &[Vec<&R>],
    pad_id: i64,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<Batch> {
    check_lengths(sequences.iter().flatten().copied())?;
    let len = |r: &R| r.input_ids().len().min(max_length.unwrap_or(usize::MAX));
    let longest = sequences
        .iter()
        .map(|s| s.iter().map(|r| len(r)).sum::<usize>())
        .max()
        .unwrap_or(0);
    let t = round_up(longest, pad_to_multiple_of);
    let b = sequences.len();
    let mut batch = Batch {
        shape: [b, t],
        input_ids: vec![pad_id; b * t],
        attention_mask: vec![0; b * t],
        labels: vec![IGNORE_INDEX; b * t],
        position_ids: Some(vec![0; b * t]),
        sequence_ids: Some(vec![-1; b * t]),
    };
    let (Some(pos), Some(seq)) = (batch.position_ids.as_mut(), batch.sequence_ids.as_mut()) else {
        return Ok(batch);
    };
    for (i, rows) in sequences.iter().enumerate() {
        let mut at = i * t;
        for (k, r) in rows.iter().enumerate() {
            let len = len(r);
            let span = at..at + len;
            batch.input_ids[span.clone()].copy_from_slice(&r.input_ids()[..len]);
            batch.labels[span.clone()].copy_from_slice(&r.labels()[..len]);
            if len > 0 {
                batch.labels[at] = IGNORE_INDEX;
            }
            batch.attention_mask[span.clone()].fill(1);
            seq[span.clone()].fill(k as i64);
            for (p, slot) in pos[span].iter_mut().enumerate() {
                *slot = p as i64;
            }
            at += len;
        }
    }
    Ok(batch)
}
