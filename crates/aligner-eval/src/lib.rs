//! Evaluation of aligned answers: deterministic math answer scoring, pairwise
//! helpful/harmless judging, and the statistics of win rates and accuracy.
//!
//! - [`math`]: extract final answers from model outputs (`\boxed{..}`,
//!   "The answer is ..", GSM8K `#### N`, the last number), normalise them and
//!   compare them numerically or as text; load JSONL problem sets and pair
//!   answers with problems.
//! - [`judge`]: pairwise judging of original against aligned answers in both
//!   A/B orders, with a local model or an OpenAI-compatible endpoint.
//! - [`stats`]: win rate ω = (W − L) / (W + L + E) in percent, accuracy with a
//!   Wilson interval, seeded percentile bootstrap intervals, and a paired
//!   comparison of two runs with an exact McNemar test.
//! - [`harm`]: what a sentence-level aligner does to answers it should leave
//!   alone: the share of sentences it changed, and the final-answer phrases
//!   and numbers it injected.
//!
//! Nothing here panics on its input; failures are an [`Error`].
//!
//! ```
//! use aligner_eval::math::is_correct;
//! use aligner_eval::stats::{bootstrap_accuracy, compare_paired, Accuracy, BootstrapConfig};
//!
//! let reference = "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10";
//! let upstream = "She earns $12 per hour, so for 50 minutes she earns $12.";
//! let aligned = "50 minutes is 5/6 of an hour, so she earns 12 * 5/6 = $10.";
//!
//! let before = is_correct(upstream, reference);
//! let after = is_correct(aligned, reference);
//! assert!(!before.correct && after.correct);
//! assert_eq!(after.prediction.as_deref(), Some("$10."));
//! assert_eq!(after.prediction_normalized.as_deref(), Some("10"));
//!
//! let outcomes = [after.correct, true, true, false];
//! let accuracy = Accuracy::from_outcomes(&outcomes);
//! assert_eq!(accuracy.percent(), Some(75.0));
//! let ci = bootstrap_accuracy(&outcomes, &BootstrapConfig::default())?;
//! assert!(ci.lower <= 75.0 && 75.0 <= ci.upper);
//!
//! let paired = compare_paired(&[("weng", before.correct)], &[("weng", after.correct)])?;
//! assert_eq!(paired.wrong_to_right, ["weng"]);
//! # Ok::<(), aligner_eval::Error>(())
//! ```

mod error;
pub mod harm;
pub mod judge;
pub mod math;
pub mod report;
pub mod score;
pub mod stats;

pub use aligner_data::FileError;
pub use error::{Error, Result};
