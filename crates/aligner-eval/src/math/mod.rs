//! Deterministic scoring of math answers.
//!
//! Three steps: **extract** the final answer of a model's output
//! ([`extract_prediction`], with a [`Strategy`]) and of a reference solution
//! ([`extract_reference`]); **normalise** both ([`normalize_math`]); **compare**
//! them, numerically when both parse as numbers and as text otherwise
//! ([`compare_answers`]). [`judge`] and [`is_correct`] do all three and keep
//! every intermediate value in a [`Judgement`] for reports.
//!
//! The GSM8K rules of lm-evaluation-harness are available as they are:
//! [`Strategy::Strict`], [`Strategy::Flexible`] and [`normalize_gsm8k`].
//!
//! ```
//! use aligner_eval::math::{is_correct, Strategy};
//! let j = is_correct(r"So the area is $\boxed{\dfrac12}$.", "Half of it.\n#### 0.5");
//! assert!(j.correct);
//! assert_eq!(j.strategy, Some(Strategy::Boxed));
//! assert_eq!(j.prediction.as_deref(), Some(r"\dfrac12"));
//! assert_eq!(j.prediction_normalized.as_deref(), Some(r"\frac{1}{2}"));
//! ```

mod extract;
mod latex;
mod normalize;
pub(crate) mod problems;

use serde::Serialize;

pub(crate) use extract::{AnswerMarkers, answer_markers};
pub use extract::{Strategy, extract_prediction, extract_reference};
pub use normalize::{
    Comparison, RELATIVE_TOLERANCE, answers_equal, compare_answers, normalize_gsm8k,
    normalize_math, parse_number,
};
pub use problems::{Answer, Matching, Pair, Problem, load_answers, load_problems, match_answers};

/// The verdict on one answer, with every value it was reached from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// Whether the prediction equals the reference.
    pub correct: bool,
    /// The rule that found the prediction (never [`Strategy::Auto`]); `None`
    /// when nothing was found.
    pub strategy: Option<Strategy>,
    /// The prediction as extracted.
    pub prediction: Option<String>,
    /// The reference answer as extracted.
    pub reference: Option<String>,
    /// The prediction after [`normalize_math`].
    pub prediction_normalized: Option<String>,
    /// The reference after [`normalize_math`].
    pub reference_normalized: Option<String>,
    /// How the two were compared.
    pub comparison: Comparison,
}

/// Judges a model's output against a reference solution: extracts the
/// prediction with `strategy` and the reference with [`extract_reference`],
/// then compares them with [`compare_answers`].
///
/// A reference that is already a bare answer (`"72"`, `"\frac{1}{2}"` inside
/// `\boxed`) works as well as a full GSM8K solution.
pub fn judge(output: &str, solution: &str, strategy: Strategy) -> Judgement {
    let found = extract::extract_with(output, strategy);
    let reference = extract_reference(solution);
    let (strategy, prediction) = match found {
        Some((strategy, prediction)) => (Some(strategy), Some(prediction)),
        None => (None, None),
    };
    let prediction_normalized = prediction.as_deref().map(normalize_math);
    let reference_normalized = reference.as_deref().map(normalize_math);
    let (correct, comparison) = match (&prediction_normalized, &reference_normalized) {
        (_, None) => (false, Comparison::MissingReference),
        (None, Some(_)) => (false, Comparison::MissingPrediction),
        (Some(p), Some(r)) => normalize::compare_normalized(p, r),
    };
    Judgement {
        correct,
        strategy,
        prediction,
        reference,
        prediction_normalized,
        reference_normalized,
        comparison,
    }
}

/// [`judge`] with [`Strategy::Auto`]: boxed, then "the answer is", then
/// `#### N`, then the last number.
///
/// ```
/// use aligner_eval::math::is_correct;
/// assert!(is_correct("48 + 24 = 72 clips. The answer is 72.", "#### 72").correct);
/// assert!(!is_correct("I think 71", "#### 72").correct);
/// ```
pub fn is_correct(output: &str, solution: &str) -> Judgement {
    judge(output, solution, Strategy::Auto)
}
