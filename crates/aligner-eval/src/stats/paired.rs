//! Paired comparison of two runs over the same problems.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Two runs compared problem by problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// Problems in both runs.
    pub problems: usize,
    /// Right in both runs.
    pub both_right: usize,
    /// Wrong in both runs.
    pub both_wrong: usize,
    /// Ids right in the baseline and wrong in the candidate, in baseline order.
    pub right_to_wrong: Vec<String>,
    /// Ids wrong in the baseline and right in the candidate, in baseline order.
    pub wrong_to_right: Vec<String>,
    /// Two-sided exact McNemar p-value of the flips ([`mcnemar_exact`]).
    pub p_value: f64,
}

impl PairedComparison {
    /// Candidate accuracy minus baseline accuracy, in percentage points;
    /// `None` for no problems.
    pub fn accuracy_gain(&self) -> Option<f64> {
        let gained = self.wrong_to_right.len() as f64 - self.right_to_wrong.len() as f64;
        (self.problems > 0).then(|| 100.0 * gained / self.problems as f64)
    }
}

/// Compares a baseline and a candidate run, each a list of `(problem id,
/// correct)`, over the same problems (in any order).
///
/// # Errors
/// [`Error::DuplicateId`] when a run lists an id twice;
/// [`Error::UnpairedIds`] when the runs do not cover the same ids.
///
/// ```
/// use aligner_eval::stats::compare_paired;
/// let before = [("q1", true), ("q2", false), ("q3", false), ("q4", true)];
/// let after = [("q4", true), ("q3", true), ("q2", true), ("q1", true)];
/// let c = compare_paired(&before, &after)?;
/// assert_eq!(c.wrong_to_right, ["q2", "q3"]);
/// assert!(c.right_to_wrong.is_empty());
/// assert_eq!(c.p_value, 0.5);
/// # Ok::<(), aligner_eval::Error>(())
/// ```
pub fn compare_paired<A: AsRef<str>, B: AsRef<str>>(
    baseline: &[(A, bool)],
    candidate: &[(B, bool)],
) -> Result<PairedComparison> {
    let mut candidate_by_id: HashMap<&str, bool> = HashMap::with_capacity(candidate.len());
    for (id, ok) in candidate {
        match candidate_by_id.entry(id.as_ref()) {
            Entry::Occupied(_) => {
                return Err(Error::DuplicateId {
                    run: "candidate",
                    id: id.as_ref().to_owned(),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(*ok);
            }
        }
    }
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(baseline.len());
    let mut comparison = PairedComparison {
        problems: 0,
        both_right: 0,
        both_wrong: 0,
        right_to_wrong: Vec::new(),
        wrong_to_right: Vec::new(),
        p_value: 1.0,
    };
    let mut only_in_baseline = Vec::new();
    for (id, before) in baseline {
        let id = id.as_ref();
        if seen.insert(id, ()).is_some() {
            return Err(Error::DuplicateId {
                run: "baseline",
                id: id.to_owned(),
            });
        }
        let Some(&after) = candidate_by_id.get(id) else {
            only_in_baseline.push(id.to_owned());
            continue;
        };
        comparison.problems += 1;
        match (*before, after) {
            (true, true) => comparison.both_right += 1,
            (false, false) => comparison.both_wrong += 1,
            (true, false) => comparison.right_to_wrong.push(id.to_owned()),
            (false, true) => comparison.wrong_to_right.push(id.to_owned()),
        }
    }
    let only_in_candidate: Vec<String> = candidate
        .iter()
        .map(|(id, _)| id.as_ref())
        .filter(|id| !seen.contains_key(id))
        .map(str::to_owned)
        .collect();
    if !only_in_baseline.is_empty() || !only_in_candidate.is_empty() {
        return Err(Error::UnpairedIds {
            only_in_baseline,
            only_in_candidate,
        });
    }
    comparison.p_value = mcnemar_exact(
        comparison.right_to_wrong.len() as u64,
        comparison.wrong_to_right.len() as u64,
    );
    Ok(comparison)
}

/// Two-sided exact McNemar test: with `b` and `c` the two kinds of flips, the
/// probability under Binomial(b + c, 1/2) of a split at least as uneven,
/// `min(1, 2 * P(X <= min(b, c)))`. 1 when there are no flips.
///
/// Up to 120 flips the tail is summed in exact integer arithmetic. Beyond, it
/// is summed in floating point from its largest term down until the terms no
/// longer change the sum, starting from a saddle-point form of the largest
/// term, so large counts neither overflow, lose precision, nor take long
/// (relative error near 1e-12; past about 10^14 flips the tail is cut after
/// 10^8 terms).
///
/// ```
/// use aligner_eval::stats::mcnemar_exact;
/// assert_eq!(mcnemar_exact(0, 5), 0.0625);
/// assert!((mcnemar_exact(1, 9) - 0.021484375).abs() < 1e-12);
/// ```
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    if b == c {
        return 1.0; // 2 * P(X <= n/2) >= 1
    }
    match b.checked_add(c) {
        Some(n) if n <= 120 => mcnemar_small(b, c),
        _ => mcnemar_large(b, c),
    }
}

/// [`mcnemar_exact`] for b + c <= 120: binomial coefficients fit in `u128`.
fn mcnemar_small(b: u64, c: u64) -> f64 {
    let n = b + c;
    let k = b.min(c);
    let mut choose = 1u128;
    let mut tail = 1u128;
    for i in 1..=k {
        // C(n, i) = C(n, i - 1) * (n - i + 1) / i, exactly.
        choose = choose * u128::from(n - i + 1) / u128::from(i);
        tail += choose;
    }
    // Dividing by a power of two is exact: the only rounding is `tail as f64`.
    let p = 2.0 * tail as f64 / 2f64.powi(n as i32);
    p.min(1.0)
}

/// [`mcnemar_exact`] in log space, for any counts.
fn mcnemar_large(b: u64, c: u64) -> f64 {
    /// Beyond this many terms the rest of the tail is dropped (only reached
    /// for well over 10^14 flips, where p is close to 1 anyway).
    const MAX_TERMS: u64 = 100_000_000;
    if b == c {
        return 1.0;
    }
    let n = b.saturating_add(c);
    let (k, rest) = (b.min(c), b.max(c));
    let ln_top = ln_half_binomial_pmf(k, rest);
    // Sum P(X = i) / P(X = k) for i = k, k-1, ..., 0.
    let mut ratio = 1.0_f64;
    let mut sum = 1.0_f64;
    let mut i = k;
    while i > 0 && k - i < MAX_TERMS {
        ratio *= i as f64 / (n - i + 1) as f64;
        sum += ratio;
        if ratio < sum * 1e-17 {
            break;
        }
        i -= 1;
    }
    (2.0 * (ln_top + sum.ln()).exp()).min(1.0)
}

/// ln P(X = k) for X ~ Binomial(k + rest, 1/2), accurate for any size
/// (Loader's saddle-point form, free of the cancellation of ln n! - ln k! - ...).
fn ln_half_binomial_pmf(k: u64, rest: u64) -> f64 {
    let n = k.saturating_add(rest);
    if k == 0 || rest == 0 {
        return -(n as f64) * std::f64::consts::LN_2;
    }
    let (nf, kf, rf) = (n as f64, k as f64, rest as f64);
    let half = nf / 2.0;
    // Signed distances from the mean, exact in integers before conversion.
    let (k_off, rest_off) = if k <= rest {
        let d = (rest - k) as f64 / 2.0;
        (-d, d)
    } else {
        let d = (k - rest) as f64 / 2.0;
        (d, -d)
    };
    stirling_error(n) - stirling_error(k) - stirling_error(rest)
        + 0.5 * (nf / (2.0 * std::f64::consts::PI * kf * rf)).ln()
        - deviance(kf, k_off, half)
        - deviance(rf, rest_off, half)
}

/// `x ln(x / m) + m - x` for `x = m + offset`, by a series when `x` is near `m`.
fn deviance(x: f64, offset: f64, m: f64) -> f64 {
    if offset.abs() < 0.1 * (x + m) {
        let v = offset / (x + m);
        let mut sum = offset * v;
        let mut term = 2.0 * x * v;
        let v2 = v * v;
        for j in 1..1000 {
            term *= v2;
            let next = sum + term / f64::from(2 * j + 1);
            if next == sum {
                break;
            }
            sum = next;
        }
        sum
    } else {
        x * (x / m).ln() + m - x
    }
}

/// ln(m!) - [(m + 1/2) ln m - m + ln(2π)/2], the error of Stirling's formula.
fn stirling_error(m: u64) -> f64 {
    let x = m as f64;
    if m < 64 {
        let exact: f64 = (2..=m).map(|i| (i as f64).ln()).sum();
        return exact - ((x + 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln());
    }
    let x2 = x * x;
    1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2) + 1.0 / (1260.0 * x * x2 * x2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stirling_error_is_continuous_at_the_switch() {
        for m in [64u64, 65, 100, 1000] {
            let x = m as f64;
            let exact: f64 = (2..=m).map(|i| (i as f64).ln()).sum::<f64>()
                - ((x + 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln());
            assert!((stirling_error(m) - exact).abs() < 1e-11, "{m}");
        }
        assert!(stirling_error(1) > 0.0);
    }

    #[test]
    fn log_space_agrees_with_integer_arithmetic() {
        for b in 0..=120u64 {
            for c in 0..=(120 - b) {
                let (exact, logs) = (mcnemar_small(b, c), mcnemar_large(b, c));
                assert!(
                    (exact - logs).abs() <= 1e-12 * exact,
                    "{b} {c}: {exact} {logs}"
                );
            }
        }
    }

    #[test]
    fn mcnemar_known_values() {
        // min(1, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n) in Python integers.
        assert_eq!(mcnemar_exact(0, 1), 1.0);
        assert_eq!(mcnemar_exact(1, 2), 1.0);
        assert_eq!(mcnemar_exact(0, 6), 0.03125);
        assert_eq!(mcnemar_exact(2, 10), 0.03857421875);
        assert!((mcnemar_exact(10, 30) - 0.002_221_433_773_229_364_3).abs() < 1e-15);
        let p = mcnemar_exact(5_000, 5_200);
        assert!((p - 0.048_787_963_126_822_45).abs() < 1e-12 * p, "{p}");
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(7, 7), 1.0);
        assert_eq!(mcnemar_exact(3, 4), mcnemar_exact(4, 3));
    }

    #[test]
    fn mcnemar_large_counts_do_not_underflow_to_garbage() {
        let p = mcnemar_exact(100_000, 100_000);
        assert_eq!(p, 1.0);
        let p = mcnemar_exact(0, 2_000);
        assert_eq!(p, 0.0); // 2^-1999 underflows to zero, as it should
        assert_eq!(mcnemar_exact(u64::MAX, u64::MAX), 1.0);
        let p = mcnemar_exact(u64::MAX / 2, u64::MAX / 2 - 1_000_000_000);
        assert!((0.0..=1.0).contains(&p), "{p}");
    }

    #[test]
    fn flips_and_errors() {
        let before = [
            ("a", true),
            ("b", true),
            ("c", false),
            ("d", false),
            ("e", true),
        ];
        let after = [
            ("e", false),
            ("d", false),
            ("c", true),
            ("b", true),
            ("a", false),
        ];
        let c = compare_paired(&before, &after).unwrap();
        assert_eq!(c.problems, 5);
        assert_eq!((c.both_right, c.both_wrong), (1, 1));
        assert_eq!(c.right_to_wrong, ["a", "e"]);
        assert_eq!(c.wrong_to_right, ["c"]);
        assert_eq!(c.p_value, 1.0);
        assert_eq!(c.accuracy_gain(), Some(-20.0));

        let err = compare_paired(&[("a", true), ("a", false)], &[("a", true)]).unwrap_err();
        assert!(matches!(err, Error::DuplicateId { run: "baseline", ref id } if id == "a"));
        let err = compare_paired(&[("a", true)], &[("a", true), ("a", true)]).unwrap_err();
        assert!(matches!(
            err,
            Error::DuplicateId {
                run: "candidate",
                ..
            }
        ));
        let err =
            compare_paired(&[("a", true), ("b", true)], &[("a", true), ("c", true)]).unwrap_err();
        match err {
            Error::UnpairedIds {
                only_in_baseline,
                only_in_candidate,
            } => {
                assert_eq!(only_in_baseline, ["b"]);
                assert_eq!(only_in_candidate, ["c"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let empty: [(&str, bool); 0] = [];
        let c = compare_paired(&empty, &empty).unwrap();
        assert_eq!((c.problems, c.p_value, c.accuracy_gain()), (0, 1.0, None));
    }
}
