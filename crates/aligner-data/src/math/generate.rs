//! Seeded generation of train / validation / test splits with no question shared between them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::problem::MathProblem;
use super::scenarios;
use crate::error::{Error, Result};
use crate::rng::{DEFAULT_SEED, SplitMix64};

/// Version of the generator's templates; bumped whenever the same seed would give other
/// problems, and recorded next to generated files.
pub const GENERATOR_VERSION: u32 = 1;

/// How many problems of each split to generate, and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    /// Training problems.
    pub train: usize,
    /// Validation problems.
    pub validation: usize,
    /// Test problems.
    pub test: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            train: 2000,
            validation: 100,
            test: 200,
            seed: DEFAULT_SEED,
        }
    }
}

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training problems.
    Train,
    /// Validation problems.
    Validation,
    /// Test problems.
    Test,
}

impl Split {
    /// Every split, in the order they are filled (test first, so the test set of a seed does
    /// not depend on the other splits' sizes).
    pub const ALL: [Split; 3] = [Split::Test, Split::Validation, Split::Train];

    /// `train`, `validation` or `test`: the id prefix and the file stem.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// The generated problems of each split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splits {
    /// Training problems, ids `train-00000`, ...
    pub train: Vec<MathProblem>,
    /// Validation problems, ids `validation-00000`, ...
    pub validation: Vec<MathProblem>,
    /// Test problems, ids `test-00000`, ...
    pub test: Vec<MathProblem>,
}

impl Splits {
    /// The problems of `split`.
    #[must_use]
    pub fn get(&self, split: Split) -> &[MathProblem] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
            Split::Test => &self.test,
        }
    }
}

/// Generates the three splits from one seeded stream. Problems are drawn one after another and
/// a problem whose question (whitespace and case aside) was drawn before is dropped, so no
/// question appears twice in a split or in two splits. The test split is filled first, then
/// validation, then train: the same seed gives the same test set whatever the other sizes.
///
/// # Errors
/// [`Error::InvalidOption`] when the templates cannot give that many distinct questions.
pub fn generate_splits(config: &GenerateConfig) -> Result<Splits> {
    let total = config.train + config.validation + config.test;
    let mut rng = SplitMix64::new(config.seed);
    let mut seen: HashSet<String> = HashSet::with_capacity(total);
    let mut splits = Splits::default();
    let mut attempts = 0usize;
    let max_attempts = 100 * total + 10_000;
    for split in Split::ALL {
        let (want, out) = match split {
            Split::Train => (config.train, &mut splits.train),
            Split::Validation => (config.validation, &mut splits.validation),
            Split::Test => (config.test, &mut splits.test),
        };
        while out.len() < want {
            attempts += 1;
            if attempts > max_attempts {
                return Err(Error::InvalidOption {
                    name: "problems",
                    reason: format!(
                        "found only {} distinct questions in {max_attempts} draws; ask for fewer than {total}",
                        seen.len()
                    ),
                });
            }
            let Some(story) = scenarios::draw(&mut rng) else {
                continue;
            };
            if !seen.insert(question_key(&story.question)) {
                continue;
            }
            let id = format!("{}-{:05}", split.name(), out.len());
            out.push(MathProblem::new(
                id,
                story.question,
                story.steps,
                story.answer,
            ));
        }
    }
    Ok(splits)
}

/// The text by which questions count as equal: lowercase, whitespace collapsed.
pub(super) fn question_key(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}
