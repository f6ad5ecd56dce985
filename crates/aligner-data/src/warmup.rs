//! Identity warm-up: Q-A-A rows (`correction == answer`) mixed in at a chosen
//! share. The Aligner paper found 20% best.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The paper's identity share.
pub const PAPER_IDENTITY_SHARE: f64 = 0.2;

/// Where identity rows go in the mix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityPlacement {
    /// Before every correction row: a warm-up phase, as in the paper (keep
    /// the order when batching, or shuffle each phase separately).
    #[default]
    First,
    /// Shuffled in with the correction rows.
    Mixed,
}

/// How many identity rows make them `share` of the final mix of
/// `rows + identity` rows: `round(share * rows / (1 - share))`.
pub fn identity_count(rows: usize, share: f64) -> Result<usize> {
    if !(0.0..1.0).contains(&share) {
        return Err(Error::InvalidOption {
            name: "identity_share",
            reason: format!("{share} is outside [0, 1)"),
        });
    }
    Ok((share * rows as f64 / (1.0 - share)).round() as usize)
}

/// Indices of the source rows to turn into identity rows so that they make
/// `share` of the final mix (see [`identity_count`]).
pub fn identity_sources(rows: usize, share: f64, seed: u64) -> Result<Vec<usize>> {
    pick_with_cycles(rows, identity_count(rows, share)?, seed)
}

/// `count` indices out of `0..pool`: distinct while possible (sorted within
/// each full pass), then every row again, and so on; drawn with `seed`.
pub fn pick_with_cycles(pool: usize, count: usize, seed: u64) -> Result<Vec<usize>> {
    if pool == 0 {
        return Ok(Vec::new());
    }
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(count);
    let mut k = count;
    while k > 0 {
        let take = k.min(pool);
        out.extend(rng.sample_indices(pool, take));
        k -= take;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hit_the_share() {
        assert_eq!(identity_count(80, 0.2).unwrap(), 20);
        assert_eq!(identity_count(10, 0.0).unwrap(), 0);
        assert!(identity_count(10, 1.0).is_err());
        assert!(identity_count(10, -0.1).is_err());
        let s = identity_sources(3, 0.8, 42).unwrap();
        assert_eq!(s.len(), 12);
        assert_eq!(identity_sources(0, 0.5, 42).unwrap(), Vec::<usize>::new());
    }
}
