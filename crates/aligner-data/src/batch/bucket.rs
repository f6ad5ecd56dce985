//! Seeded shuffling with length buckets.

use crate::rng::SplitMix64;

/// A seeded permutation of `0..n`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut idx);
    idx
}

/// Batches of indices with similar lengths, in random order.
///
/// The indices are shuffled, cut into buckets of `batch_size *
/// bucket_batches` rows, each bucket is sorted by length and cut into
/// batches, and the batches are shuffled. Every index appears exactly once;
/// only the last batch may be smaller than `batch_size`. `bucket_batches ==
/// 1` is a plain shuffle. A `batch_size` of 0 is treated as 1.
pub fn bucketed_batches(
    lengths: &[usize],
    batch_size: usize,
    bucket_batches: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let bucket = batch_size * bucket_batches.max(1);
    let mut rng = SplitMix64::new(seed);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut idx);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for chunk in idx.chunks_mut(bucket) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    // Keep a short batch (there is at most one, the very last) at the end.
    let short = batches
        .last()
        .is_some_and(|b| b.len() < batch_size)
        .then(|| batches.pop())
        .flatten();
    rng.shuffle(&mut batches);
    batches.extend(short);
    batches
}
