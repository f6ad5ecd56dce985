//! Everyday questions, without answers: how-to, advice, explanations, writing tasks, lists,
//! code, cooking, travel, health and safety, etiquette, study, money, and factual questions
//! with numbers that are not arithmetic word problems.
//!
//! They are the project's own hand-written questions (`data/everyday` in this crate; see its
//! README): 500 for training ([`train`]; the last 100 are code questions, added when answers
//! with code blocks proved the hardest to leave alone) and 100 held out ([`heldout`]), disjoint,
//! with the held-out split never used for training. Their purpose is the harm side of an aligner
//! trained on a narrow domain: identity rows from everyday questions teach it to leave ordinary
//! sentences alone, and the held-out questions measure whether it still rewrites them (see
//! `aligner_eval::harm`).
//!
//! Both files are embedded with `include_str!`, so nothing here needs the repository at run
//! time. Parsing returns a typed [`EverydayError`]; the embedded files are checked by this
//! module's tests, so for them it does not fail.
//!
//! ```
//! use aligner_data::everyday::{self, Category};
//!
//! let train = everyday::train()?;
//! let heldout = everyday::heldout()?;
//! assert_eq!((train.len(), heldout.len()), (500, 100));
//! assert!(heldout.iter().any(|q| q.category == Category::NumericFact));
//! # Ok::<(), aligner_data::everyday::EverydayError>(())
//! ```

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The training split as embedded: 500 JSON lines.
pub const TRAIN_JSONL: &str = include_str!("../data/everyday/train.jsonl");
/// The held-out split as embedded: 100 JSON lines. Never used for training.
pub const HELDOUT_JSONL: &str = include_str!("../data/everyday/heldout.jsonl");

/// The kind of an everyday question; serialised in kebab case (`how-to`, `numeric-fact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Instructions: "How do I descale an electric kettle?"
    HowTo,
    /// Personal and practical advice.
    Advice,
    /// Science explanations.
    Science,
    /// History explanations.
    History,
    /// Why everyday things happen ("Why do my glasses fog up ...?").
    EverydayExplanation,
    /// Writing tasks: emails, short poems, summaries, messages.
    Writing,
    /// Requests for a list.
    List,
    /// Short programming questions.
    Code,
    /// Cooking and food.
    Cooking,
    /// Travel.
    Travel,
    /// Everyday health and safety.
    HealthSafety,
    /// Manners and social conventions.
    Etiquette,
    /// Studying and learning.
    Study,
    /// Personal finance.
    Money,
    /// Factual questions whose answer is a number but which are not arithmetic word problems
    /// ("What year did the Berlin Wall fall?").
    NumericFact,
}

impl Category {
    /// Every category, in the order of the source files.
    pub const ALL: [Category; 15] = [
        Category::HowTo,
        Category::Advice,
        Category::Science,
        Category::History,
        Category::EverydayExplanation,
        Category::Writing,
        Category::List,
        Category::Code,
        Category::Cooking,
        Category::Travel,
        Category::HealthSafety,
        Category::Etiquette,
        Category::Study,
        Category::Money,
        Category::NumericFact,
    ];

    /// The name used in the JSON files.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::HowTo => "how-to",
            Category::Advice => "advice",
            Category::Science => "science",
            Category::History => "history",
            Category::EverydayExplanation => "everyday-explanation",
            Category::Writing => "writing",
            Category::List => "list",
            Category::Code => "code",
            Category::Cooking => "cooking",
            Category::Travel => "travel",
            Category::HealthSafety => "health-safety",
            Category::Etiquette => "etiquette",
            Category::Study => "study",
            Category::Money => "money",
            Category::NumericFact => "numeric-fact",
        }
    }
}

impl std::str::FromStr for Category {
    type Err = String;

    /// A category by its name in the JSON files (`code`, `how-to`); the error lists them all.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown category `{s}` (one of: {})", names.join(", "))
            })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One everyday question (no answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EverydayQuestion {
    /// Unique within its split and across both: `train-001`, `heldout-001`.
    pub id: String,
    /// What kind of question it is.
    pub category: Category,
    /// The question, one line.
    pub question: String,
}

/// Why a JSON Lines text of everyday questions could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EverydayError {
    /// A line is not a valid question object (bad JSON, a missing or unknown field, an unknown
    /// category).
    #[error("{source_name}:{line}: invalid everyday question: {error}")]
    Json {
        /// The name of the text (`train`, `heldout`, or the caller's).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        error: serde_json::Error,
    },
    /// A question or id is empty after trimming whitespace.
    #[error("{source_name}:{line}: empty {field}")]
    Empty {
        /// The name of the text.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// `id` or `question`.
        field: &'static str,
    },
    /// An id occurs twice.
    #[error("{source_name}:{line}: duplicate id `{id}`")]
    DuplicateId {
        /// The name of the text.
        source_name: String,
        /// 1-based line number of the second occurrence.
        line: usize,
        /// The id.
        id: String,
    },
}

/// The 500 training questions.
///
/// # Errors
///
/// Only if the embedded file were broken, which this module's tests rule out.
pub fn train() -> Result<Vec<EverydayQuestion>, EverydayError> {
    parse_jsonl("train", TRAIN_JSONL)
}

/// The 100 held-out questions: for measuring harm, never for training.
///
/// # Errors
///
/// Only if the embedded file were broken, which this module's tests rule out.
pub fn heldout() -> Result<Vec<EverydayQuestion>, EverydayError> {
    parse_jsonl("heldout", HELDOUT_JSONL)
}

/// Parses JSON Lines of `{"id", "category", "question"}` objects; blank lines are skipped.
/// `source_name` names the text in errors. Ids must be unique and non-empty, questions
/// non-empty; unknown fields and categories are errors.
///
/// ```
/// use aligner_data::everyday::{parse_jsonl, Category};
/// let qs = parse_jsonl("mine", r#"{"id": "a", "category": "cooking", "question": "How do I boil rice?"}"#)?;
/// assert_eq!(qs[0].category, Category::Cooking);
/// assert!(parse_jsonl("mine", r#"{"id": "a", "category": "poetry", "question": "Hi?"}"#).is_err());
/// # Ok::<(), aligner_data::everyday::EverydayError>(())
/// ```
pub fn parse_jsonl(source_name: &str, text: &str) -> Result<Vec<EverydayQuestion>, EverydayError> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let question: EverydayQuestion =
            serde_json::from_str(raw).map_err(|error| EverydayError::Json {
                source_name: source_name.to_owned(),
                line,
                error,
            })?;
        for (field, value) in [("id", &question.id), ("question", &question.question)] {
            if value.trim().is_empty() {
                return Err(EverydayError::Empty {
                    source_name: source_name.to_owned(),
                    line,
                    field,
                });
            }
        }
        if !ids.insert(question.id.clone()) {
            return Err(EverydayError::DuplicateId {
                source_name: source_name.to_owned(),
                line,
                id: question.id,
            });
        }
        out.push(question);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn both() -> (Vec<EverydayQuestion>, Vec<EverydayQuestion>) {
        (
            train().expect("embedded train split parses"),
            heldout().expect("embedded held-out split parses"),
        )
    }

    /// Lowercase words of a question, for duplicate and paraphrase checks.
    fn words(q: &str) -> Vec<String> {
        q.split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    }

    #[test]
    fn counts_and_ids() {
        let (train, heldout) = both();
        assert_eq!(train.len(), 500);
        assert_eq!(heldout.len(), 100);
        let ids: HashSet<&str> = train
            .iter()
            .chain(&heldout)
            .map(|q| q.id.as_str())
            .collect();
        assert_eq!(ids.len(), 600, "ids are unique across both splits");
        assert!(train.iter().all(|q| q.id.starts_with("train-")));
        assert!(heldout.iter().all(|q| q.id.starts_with("heldout-")));
    }

    #[test]
    fn every_category_in_both_splits() {
        let (train, heldout) = both();
        for split in [&train, &heldout] {
            let mut counts: BTreeMap<Category, usize> = BTreeMap::new();
            for q in split {
                *counts.entry(q.category).or_default() += 1;
            }
            assert_eq!(counts.len(), Category::ALL.len(), "{counts:?}");
            let min = split.len() / Category::ALL.len() / 2;
            assert!(counts.values().all(|&n| n >= min), "{counts:?}");
        }
        for c in Category::ALL {
            let json = serde_json::to_string(&c).expect("a unit variant serialises");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(c.as_str().parse::<Category>(), Ok(c));
        }
        let err = "gardening".parse::<Category>().expect_err("not a category");
        assert!(
            err.contains("`gardening`") && err.contains("numeric-fact"),
            "{err}"
        );
    }

    #[test]
    fn questions_are_single_lines_of_5_to_30_words() {
        let (train, heldout) = both();
        for q in train.iter().chain(&heldout) {
            let text = &q.question;
            assert_eq!(text.trim(), text, "{}", q.id);
            assert!(!text.contains(['\n', '\r']), "{}", q.id);
            let n = text.split_whitespace().count();
            assert!((5..=30).contains(&n), "{}: {n} words", q.id);
        }
    }

    #[test]
    fn splits_are_disjoint_without_near_paraphrases() {
        let (train, heldout) = both();
        let all: Vec<&EverydayQuestion> = train.iter().chain(&heldout).collect();
        let exact: HashSet<Vec<String>> = all.iter().map(|q| words(&q.question)).collect();
        assert_eq!(exact.len(), all.len(), "no question twice, in any case");
        // Near-paraphrases: content-word Jaccard similarity across the two splits.
        const STOP: &[&str] = &[
            "a", "an", "the", "i", "my", "do", "does", "how", "what", "why", "is", "to", "of",
            "in", "and", "for", "should", "can", "it", "on", "with", "are", "some", "at", "when",
        ];
        let content = |q: &str| -> BTreeSet<String> {
            words(q)
                .into_iter()
                .filter(|w| !STOP.contains(&w.as_str()))
                .collect()
        };
        for h in &heldout {
            let a = content(&h.question);
            for t in &train {
                let b = content(&t.question);
                let shared = a.intersection(&b).count();
                let union = a.union(&b).count().max(1);
                let jaccard = shared as f64 / union as f64;
                assert!(
                    jaccard < 0.6,
                    "{} and {} look alike ({jaccard:.2}): {:?} / {:?}",
                    h.id,
                    t.id,
                    h.question,
                    t.question
                );
            }
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let q = |id: &str, cat: &str, text: &str| {
            format!(r#"{{"id": "{id}", "category": "{cat}", "question": "{text}"}}"#)
        };
        let ok = q("x", "money", "What is a bond?");
        assert_eq!(
            parse_jsonl("t", &format!("\n{ok}\n\n"))
                .map(|v| v.len())
                .ok(),
            Some(1)
        );
        assert!(matches!(
            parse_jsonl("t", "{not json"),
            Err(EverydayError::Json { line: 1, .. })
        ));
        assert!(matches!(
            parse_jsonl("t", &q("x", "gardening", "What is a bond?")),
            Err(EverydayError::Json { .. })
        ));
        assert!(matches!(
            parse_jsonl("t", &q("x", "money", "  ")),
            Err(EverydayError::Empty {
                field: "question",
                ..
            })
        ));
        assert!(matches!(
            parse_jsonl("t", &q("", "money", "What is a bond?")),
            Err(EverydayError::Empty { field: "id", .. })
        ));
        let dup = format!("{ok}\n{ok}");
        let err = parse_jsonl("t", &dup).expect_err("a duplicate id is an error");
        assert!(matches!(err, EverydayError::DuplicateId { line: 2, .. }));
        assert_eq!(err.to_string(), "t:2: duplicate id `x`");
        let extra = r#"{"id": "x", "category": "money", "question": "Q?", "answer": "A"}"#;
        assert!(
            parse_jsonl("t", extra).is_err(),
            "no answers in these files"
        );
    }
}
