//! A small seeded PRNG (SplitMix64) for sub-sampling and shuffling.
//!
//! Deterministic across platforms and releases of this crate: the same seed
//! always gives the same sample and the same order. It is not the PyTorch
//! generator, so samples differ from the Python reference's for the same seed.

/// The default seed of the papers' recipes.
pub const DEFAULT_SEED: u64 = 42;

/// SplitMix64 (Steele, Lea and Flood 2014): 64-bit state, passes BigCrush,
/// ample for shuffling data sets.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n`, without modulo bias; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let n = n as u64;
        // Lemire's multiply-shift with rejection.
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `k` distinct indices drawn uniformly from `0..n`, in ascending order.
    /// `k` is capped at `n`.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut idx: Vec<usize> = (0..n).collect();
        // Partial Fisher-Yates: the first k slots are the sample.
        for i in 0..k {
            let j = i + self.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx.sort_unstable();
        idx
    }
}

/// Derives an independent seed for a sub-stream (e.g. one per data set).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut g = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    g.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_stream() {
        // The published SplitMix64 stream for seed 0 starts with these values.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn deterministic_and_known_values() {
        // Reference values of SplitMix64 with seed 0.
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let a: Vec<u64> = (0..5)
            .map({
                let mut g = SplitMix64::new(42);
                move |_| g.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut g = SplitMix64::new(42);
                move |_| g.next_u64()
            })
            .collect();
        assert_eq!(a, b);
    }

    #[test]
    fn below_stays_in_range_and_covers() {
        let mut g = SplitMix64::new(1);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[g.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn sample_is_sorted_distinct() {
        let mut g = SplitMix64::new(3);
        let s = g.sample_indices(100, 30);
        assert_eq!(s.len(), 30);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g.sample_indices(5, 10), vec![0, 1, 2, 3, 4]);
    }
}
