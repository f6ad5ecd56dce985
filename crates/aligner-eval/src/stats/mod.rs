//! Statistics for evaluation runs: win rate, accuracy with Wilson and
//! bootstrap intervals, and paired comparison of two runs.
//!
//! Every rate is in percent: a win rate lies in [-100, 100], an accuracy in
//! [0, 100]. Bootstrap intervals are seeded ([`BootstrapConfig::seed`]) and
//! repeat exactly for the same input and seed, on any platform.
//!
//! ```
//! use aligner_eval::stats::{Accuracy, WinCounts};
//! let counts = WinCounts::new(70, 10, 20);
//! assert_eq!(counts.win_rate(), Some(60.0));
//! let ci = Accuracy { correct: 80, total: 100 }.wilson(0.95)?;
//! assert!(ci.lower < 80.0 && 80.0 < ci.upper);
//! # Ok::<(), aligner_eval::Error>(())
//! ```

mod bootstrap;
mod paired;
mod rates;

use serde::{Deserialize, Serialize};

pub use aligner_data::rng::SplitMix64;
pub use bootstrap::{BootstrapConfig, bootstrap_accuracy, bootstrap_win_rate};
pub use paired::{PairedComparison, compare_paired, mcnemar_exact};
pub use rates::{Accuracy, Verdict, WinCounts, normal_quantile};

/// A point estimate with a confidence interval, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the full sample.
    pub estimate: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// The confidence level (e.g. 0.95).
    pub confidence: f64,
}

impl Interval {
    /// `true` when `value` lies within [`lower`, `upper`].
    pub fn contains(&self, value: f64) -> bool {
        self.lower <= value && value <= self.upper
    }
}
