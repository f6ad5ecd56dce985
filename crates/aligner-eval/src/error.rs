//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `aligner-eval`.
///
/// File and row errors name the file and the 1-based line they concern, so a
/// message points straight at the broken record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model or endpoint failed.
    #[error(transparent)]
    Model(#[from] aligner_model::Error),

    /// An argument cannot work.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A chart could not be drawn or written.
    #[error(transparent)]
    Chart(#[from] aligner_data::chart::ChartError),
    /// A file or folder could not be read, created or written; the error names it.
    #[error(transparent)]
    File(#[from] aligner_data::FileError),

    /// A JSONL line is not valid JSON.
    #[error("{}:{line}: invalid JSON: {source}", path.display())]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A JSONL line holds JSON that is not an object.
    #[error("{}:{line}: expected a JSON object, found {found}", path.display())]
    NotAnObject {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON type found instead (`array`, `string`, ...).
        found: &'static str,
    },

    /// A required field is absent from a row.
    #[error("{}:{line}: missing field `{field}`", path.display())]
    MissingField {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: &'static str,
    },

    /// A field has the wrong JSON type.
    #[error("{}:{line}: field `{field}` must be {expected}, found {found}", path.display())]
    FieldType {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },

    /// A problem's reference solution holds no final answer that can be extracted.
    #[error("{}:{line}: field `{field}` holds no final answer (`#### N`, `\\boxed{{..}}`)", path.display())]
    NoReferenceAnswer {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field's name.
        field: &'static str,
    },

    /// A statistic was asked of an empty sample.
    #[error("empty sample: {what}")]
    EmptySample {
        /// What was empty.
        what: &'static str,
    },

    /// A confidence level outside the open interval (0, 1).
    #[error("confidence level must lie strictly between 0 and 1, got {level}")]
    InvalidConfidence {
        /// The level given.
        level: f64,
    },

    /// A bootstrap was asked for zero resamples.
    #[error("a bootstrap needs at least one resample")]
    NoResamples,

    /// The same id appears twice in one run of a paired comparison.
    #[error("duplicate id `{id}` in the {run} run")]
    DuplicateId {
        /// Which run (`baseline` or `candidate`).
        run: &'static str,
        /// The repeated id.
        id: String,
    },

    /// The two runs of a paired comparison do not cover the same ids.
    #[error(
        "paired runs cover different problems: {} only in baseline, {} only in candidate",
        only_in_baseline.len(),
        only_in_candidate.len()
    )]
    UnpairedIds {
        /// Ids present in the baseline run only.
        only_in_baseline: Vec<String>,
        /// Ids present in the candidate run only.
        only_in_candidate: Vec<String>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
