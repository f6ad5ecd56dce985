//! Seeded percentile bootstrap.

use serde::{Deserialize, Serialize};

use super::rates::check_confidence;
use super::{Interval, SplitMix64, Verdict};
use crate::{Error, Result};

/// Settings of a percentile bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Number of resamples (each as large as the sample).
    pub resamples: usize,
    /// Confidence level, strictly between 0 and 1.
    pub confidence: f64,
    /// Seed of the resampling stream: the same seed gives the same interval.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    /// 10,000 resamples, 95% confidence, seed 42.
    fn default() -> Self {
        Self {
            resamples: 10_000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

/// Percentile bootstrap interval of the win rate ω = (W − L) / (W + L + E),
/// in percent, resampling the verdicts with replacement.
///
/// # Errors
/// [`Error::EmptySample`] for no verdicts, [`Error::NoResamples`],
/// [`Error::InvalidConfidence`].
///
/// ```
/// use aligner_eval::stats::{bootstrap_win_rate, BootstrapConfig, Verdict::*};
/// let verdicts = [Win, Win, Win, Loss, Equal, Win, Loss, Win];
/// let ci = bootstrap_win_rate(&verdicts, &BootstrapConfig::default())?;
/// assert_eq!(ci.estimate, 37.5);
/// assert!(ci.lower < 37.5 && 37.5 < ci.upper);
/// # Ok::<(), aligner_eval::Error>(())
/// ```
pub fn bootstrap_win_rate(verdicts: &[Verdict], config: &BootstrapConfig) -> Result<Interval> {
    let scores: Vec<i64> = verdicts.iter().map(|v| v.score()).collect();
    bootstrap_mean(&scores, config, "win rate needs at least one verdict")
}

/// Percentile bootstrap interval of accuracy, in percent, resampling the
/// per-problem outcomes with replacement.
///
/// # Errors
/// As [`bootstrap_win_rate`].
pub fn bootstrap_accuracy(outcomes: &[bool], config: &BootstrapConfig) -> Result<Interval> {
    let scores: Vec<i64> = outcomes.iter().map(|&ok| i64::from(ok)).collect();
    bootstrap_mean(&scores, config, "accuracy needs at least one outcome")
}

/// Bootstrap of `100 * mean(scores)`. Sums stay integers, so every resample's
/// statistic is exact and the result depends on the seed alone.
fn bootstrap_mean(
    scores: &[i64],
    config: &BootstrapConfig,
    what: &'static str,
) -> Result<Interval> {
    check_confidence(config.confidence)?;
    if scores.is_empty() {
        return Err(Error::EmptySample { what });
    }
    if config.resamples == 0 {
        return Err(Error::NoResamples);
    }
    let n = scores.len();
    let percent = |sum: i64| 100.0 * sum as f64 / n as f64;
    let mut rng = SplitMix64::new(config.seed);
    let mut statistics: Vec<f64> = (0..config.resamples)
        .map(|_| {
            let sum: i64 = (0..n)
                .map(|_| {
                    let index = rng.below(n);
                    scores.get(index).copied().unwrap_or_default()
                })
                .sum();
            percent(sum)
        })
        .collect();
    statistics.sort_unstable_by(f64::total_cmp);
    let alpha = 1.0 - config.confidence;
    Ok(Interval {
        estimate: percent(scores.iter().sum()),
        lower: quantile(&statistics, alpha / 2.0),
        upper: quantile(&statistics, 1.0 - alpha / 2.0),
        confidence: config.confidence,
    })
}

/// The `q` quantile of sorted, non-empty `values`, interpolating linearly
/// between order statistics (Hyndman and Fan's type 7, the R and NumPy default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let position = q.clamp(0.0, 1.0) * last as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let (Some(&lo), Some(&hi)) = (sorted.get(below), sorted.get(above)) else {
        return f64::NAN;
    };
    lo + (position - below as f64) * (hi - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates() {
        let v = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 1.0), 40.0);
        assert_eq!(quantile(&v, 0.5), 20.0);
        assert_eq!(quantile(&v, 0.125), 5.0);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn accuracy_interval_is_close_to_wilson_for_a_large_sample() {
        // 600 of 1000: the bootstrap and Wilson intervals should agree to about a point.
        let outcomes: Vec<bool> = (0..1000).map(|i| i % 5 < 3).collect();
        let boot = bootstrap_accuracy(&outcomes, &BootstrapConfig::default()).unwrap();
        let wilson = super::super::Accuracy::from_outcomes(&outcomes)
            .wilson(0.95)
            .unwrap();
        assert_eq!(boot.estimate, 60.0);
        assert!(
            (boot.lower - wilson.lower).abs() < 1.0,
            "{boot:?} vs {wilson:?}"
        );
        assert!(
            (boot.upper - wilson.upper).abs() < 1.0,
            "{boot:?} vs {wilson:?}"
        );
    }

    #[test]
    fn degenerate_samples_give_a_point() {
        let config = BootstrapConfig {
            resamples: 50,
            ..BootstrapConfig::default()
        };
        let ci = bootstrap_win_rate(&[Verdict::Win; 5], &config).unwrap();
        assert_eq!((ci.lower, ci.estimate, ci.upper), (100.0, 100.0, 100.0));
        let ci = bootstrap_accuracy(&[false; 3], &config).unwrap();
        assert_eq!((ci.lower, ci.estimate, ci.upper), (0.0, 0.0, 0.0));
    }

    #[test]
    fn rejects_bad_input() {
        let config = BootstrapConfig::default();
        assert!(matches!(
            bootstrap_accuracy(&[], &config),
            Err(Error::EmptySample { .. })
        ));
        assert!(matches!(
            bootstrap_win_rate(&[], &config),
            Err(Error::EmptySample { .. })
        ));
        let none = BootstrapConfig {
            resamples: 0,
            ..config
        };
        assert!(matches!(
            bootstrap_accuracy(&[true], &none),
            Err(Error::NoResamples)
        ));
        let bad = BootstrapConfig {
            confidence: 1.0,
            ..config
        };
        assert!(matches!(
            bootstrap_accuracy(&[true], &bad),
            Err(Error::InvalidConfidence { .. })
        ));
    }

    #[test]
    fn seeds_matter_and_repeat() {
        let verdicts: Vec<Verdict> = (0..40)
            .map(|i| [Verdict::Win, Verdict::Loss, Verdict::Equal, Verdict::Win][i % 4])
            .collect();
        let config = BootstrapConfig {
            resamples: 500,
            ..BootstrapConfig::default()
        };
        let a = bootstrap_win_rate(&verdicts, &config).unwrap();
        let b = bootstrap_win_rate(&verdicts, &config).unwrap();
        let c = bootstrap_win_rate(&verdicts, &BootstrapConfig { seed: 43, ..config }).unwrap();
        assert_eq!(a, b);
        assert_ne!((a.lower, a.upper), (c.lower, c.upper));
    }
}
