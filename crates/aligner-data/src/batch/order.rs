//! Seeded orders in which rows are visited.

use crate::rng::SplitMix64;

/// A seeded permutation of `0..n` (Fisher-Yates with [`SplitMix64`]).
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    shuffled_in_phases(n, 0, seed)
}

/// A seeded permutation of `0..n` that visits the first `warmup` indices (clamped to `n`)
/// before all the others, each phase shuffled on its own: the order of a training epoch whose
/// data put a warm-up phase first (identity rows with
/// [`IdentityPlacement::First`](crate::warmup::IdentityPlacement::First)). With `warmup == 0`
/// it is [`shuffled_indices`].
pub fn shuffled_in_phases(n: usize, warmup: usize, seed: u64) -> Vec<usize> {
    let warmup = warmup.min(n);
    let mut rng = SplitMix64::new(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    let (first, rest) = idx.split_at_mut(warmup);
    rng.shuffle(first);
    rng.shuffle(rest);
    idx
}
