//! Win rates, accuracy and the Wilson score interval.

use serde::{Deserialize, Serialize};

use super::Interval;
use crate::{Error, Result};

/// The outcome of one pairwise judgement, from the candidate's side:
/// the aligned (candidate) answer against the original (baseline) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The candidate is better.
    Win,
    /// The candidate is worse.
    Loss,
    /// Neither is better.
    Equal,
}

impl Verdict {
    /// The same judgement seen from the other side (win <-> loss), e.g. to
    /// merge a judge's verdicts with the A/B positions swapped.
    pub fn flipped(self) -> Self {
        match self {
            Self::Win => Self::Loss,
            Self::Loss => Self::Win,
            Self::Equal => Self::Equal,
        }
    }

    /// +1, -1 or 0: the verdict's contribution to a win rate.
    pub(crate) fn score(self) -> i64 {
        match self {
            Self::Win => 1,
            Self::Loss => -1,
            Self::Equal => 0,
        }
    }
}

/// Counts of pairwise verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinCounts {
    /// W: the candidate won.
    pub wins: u64,
    /// L: the candidate lost.
    pub losses: u64,
    /// E: a tie.
    pub equal: u64,
}

impl WinCounts {
    /// Counts from the three totals.
    pub fn new(wins: u64, losses: u64, equal: u64) -> Self {
        Self {
            wins,
            losses,
            equal,
        }
    }

    /// Adds one verdict.
    pub fn record(&mut self, verdict: Verdict) {
        let slot = match verdict {
            Verdict::Win => &mut self.wins,
            Verdict::Loss => &mut self.losses,
            Verdict::Equal => &mut self.equal,
        };
        *slot = slot.saturating_add(1);
    }

    /// W + L + E.
    pub fn total(&self) -> u64 {
        self.wins
            .saturating_add(self.losses)
            .saturating_add(self.equal)
    }

    /// The win rate ω = (W − L) / (W + L + E), in percent, within [-100, 100];
    /// `None` when there are no verdicts.
    ///
    /// ```
    /// use aligner_eval::stats::WinCounts;
    /// assert_eq!(WinCounts::new(6, 2, 2).win_rate(), Some(40.0));
    /// assert_eq!(WinCounts::default().win_rate(), None);
    /// ```
    pub fn win_rate(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| 100.0 * (self.wins as f64 - self.losses as f64) / total as f64)
    }
}

impl Extend<Verdict> for WinCounts {
    fn extend<I: IntoIterator<Item = Verdict>>(&mut self, verdicts: I) {
        for verdict in verdicts {
            self.record(verdict);
        }
    }
}

impl FromIterator<Verdict> for WinCounts {
    fn from_iter<I: IntoIterator<Item = Verdict>>(verdicts: I) -> Self {
        let mut counts = Self::default();
        counts.extend(verdicts);
        counts
    }
}

/// Correct answers out of a number of problems.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Problems answered correctly.
    pub correct: u64,
    /// Problems in all.
    pub total: u64,
}

impl Accuracy {
    /// Accuracy from per-problem outcomes.
    pub fn from_outcomes(outcomes: &[bool]) -> Self {
        Self {
            correct: outcomes.iter().filter(|&&ok| ok).count() as u64,
            total: outcomes.len() as u64,
        }
    }

    /// Correct / total in percent; `None` when there are no problems.
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| 100.0 * self.correct as f64 / self.total as f64)
    }

    /// The Wilson score interval at `confidence` (e.g. 0.95), in percent.
    ///
    /// # Errors
    /// [`Error::EmptySample`] when `total` is 0 or less than `correct`;
    /// [`Error::InvalidConfidence`] unless 0 < `confidence` < 1.
    ///
    /// ```
    /// use aligner_eval::stats::Accuracy;
    /// let ci = Accuracy { correct: 5, total: 10 }.wilson(0.95)?;
    /// assert!((ci.lower - 23.659).abs() < 1e-3 && (ci.upper - 76.341).abs() < 1e-3);
    /// # Ok::<(), aligner_eval::Error>(())
    /// ```
    pub fn wilson(&self, confidence: f64) -> Result<Interval> {
        let z = z_score(confidence)?;
        if self.total == 0 || self.correct > self.total {
            return Err(Error::EmptySample {
                what: "accuracy needs at least one problem and at most `total` correct",
            });
        }
        let n = self.total as f64;
        let p = self.correct as f64 / n;
        let z2 = z * z;
        let denominator = 1.0 + z2 / n;
        let center = (p + z2 / (2.0 * n)) / denominator;
        let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
        Ok(Interval {
            estimate: 100.0 * p,
            lower: 100.0 * (center - half).max(0.0),
            upper: 100.0 * (center + half).min(1.0),
            confidence,
        })
    }
}

/// The two-sided critical value z for `confidence`: the standard normal
/// quantile at (1 + confidence) / 2.
pub(crate) fn z_score(confidence: f64) -> Result<f64> {
    check_confidence(confidence)?;
    Ok(normal_quantile(0.5 + confidence / 2.0))
}

pub(crate) fn check_confidence(confidence: f64) -> Result<()> {
    if confidence > 0.0 && confidence < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidConfidence { level: confidence })
    }
}

/// The standard normal quantile (inverse CDF) for 0 < `p` < 1, by Acklam's
/// rational approximation (relative error below 1.2e-9). Infinite at 0 and 1,
/// NaN outside.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;

    fn poly(coefficients: &[f64], x: f64) -> f64 {
        coefficients.iter().fold(0.0, |acc, &c| acc * x + c)
    }
    fn tail(p: f64) -> f64 {
        let q = (-2.0 * p.ln()).sqrt();
        poly(&C, q) / (poly(&D, q) * q + 1.0)
    }

    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p < P_LOW {
        tail(p)
    } else if p > 1.0 - P_LOW {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        poly(&A, r) * q / (poly(&B, r) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn win_rate_formula() {
        assert_eq!(WinCounts::new(3, 1, 0).win_rate(), Some(50.0));
        assert_eq!(WinCounts::new(0, 4, 0).win_rate(), Some(-100.0));
        assert_eq!(WinCounts::new(0, 0, 5).win_rate(), Some(0.0));
        let counts: WinCounts = [Verdict::Win, Verdict::Equal, Verdict::Loss, Verdict::Win]
            .into_iter()
            .collect();
        assert_eq!(counts, WinCounts::new(2, 1, 1));
        assert_eq!(counts.win_rate(), Some(25.0));
        assert_eq!(Verdict::Win.flipped(), Verdict::Loss);
        assert_eq!(Verdict::Equal.flipped(), Verdict::Equal);
    }

    #[test]
    fn normal_quantiles() {
        assert!(close(normal_quantile(0.5), 0.0, 1e-12));
        assert!(close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-8));
        assert!(close(normal_quantile(0.025), -1.959_963_984_540_054, 1e-8));
        assert!(close(normal_quantile(0.995), 2.575_829_303_548_901, 1e-8));
        assert!(close(normal_quantile(0.01), -2.326_347_874_040_841, 1e-8));
        assert!(close(normal_quantile(1e-6), -4.753_424_308_822_899, 1e-7));
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
    }

    #[test]
    fn wilson_known_values() {
        let ci = Accuracy {
            correct: 0,
            total: 10,
        }
        .wilson(0.95)
        .unwrap();
        let z2 = 1.959_963_984_540_054_f64.powi(2);
        assert_eq!(ci.lower, 0.0);
        assert!(close(ci.upper, 100.0 * z2 / (10.0 + z2), 1e-6));
        let ci = Accuracy {
            correct: 10,
            total: 10,
        }
        .wilson(0.95)
        .unwrap();
        assert!(close(ci.lower, 100.0 * 10.0 / (10.0 + z2), 1e-6));
        assert_eq!(ci.upper, 100.0);
        let ci = Accuracy::from_outcomes(&[true, true, false, true])
            .wilson(0.9)
            .unwrap();
        assert_eq!(ci.estimate, 75.0);
        assert!(ci.lower < 75.0 && ci.upper > 75.0);
        assert_eq!(ci.confidence, 0.9);
    }

    #[test]
    fn wilson_rejects_bad_input() {
        let acc = Accuracy {
            correct: 1,
            total: 2,
        };
        assert!(matches!(
            acc.wilson(1.0),
            Err(Error::InvalidConfidence { .. })
        ));
        assert!(matches!(
            acc.wilson(0.0),
            Err(Error::InvalidConfidence { .. })
        ));
        assert!(matches!(
            acc.wilson(f64::NAN),
            Err(Error::InvalidConfidence { .. })
        ));
        let empty = Accuracy::default();
        assert!(matches!(empty.wilson(0.95), Err(Error::EmptySample { .. })));
        assert_eq!(empty.percent(), None);
        let broken = Accuracy {
            correct: 3,
            total: 2,
        };
        assert!(matches!(
            broken.wilson(0.95),
            Err(Error::EmptySample { .. })
        ));
    }
}
