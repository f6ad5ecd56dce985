//! The crate's single error type.

use std::path::PathBuf;

pub use crate::file::FileError;

/// What is wrong with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldIssue {
    /// The record has no such key (or the key is `null`).
    #[error("missing")]
    Missing,
    /// The key exists but holds a value of another JSON type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The type the format needs, e.g. `string`.
        expected: &'static str,
        /// The JSON type found, e.g. `number`.
        found: &'static str,
    },
    /// A template could not render the record.
    #[error("template failed: {0}")]
    Render(String),
}

/// A problem with one named field, before it is tied to a file and row.
///
/// Formats return this from [`crate::Format::example`]; readers attach the
/// path and row number and turn it into [`Error::Field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {issue}")]
pub struct FieldError {
    /// The field's name.
    pub field: String,
    /// What is wrong with it.
    pub issue: FieldIssue,
}

impl FieldError {
    /// A required field is absent.
    pub fn missing(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            issue: FieldIssue::Missing,
        }
    }

    /// Attaches the file and 1-based row number.
    pub fn at(self, path: impl Into<PathBuf>, row: usize) -> Error {
        Error::Field {
            path: path.into(),
            row,
            field: self.field,
            issue: self.issue,
        }
    }
}

/// Every error `aligner-data` returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or parsing a whole file failed (the error names it).
    #[error(transparent)]
    File(#[from] FileError),
    /// A file is not valid JSON (for JSONL: one line is not). `row` is the
    /// 1-based record number when known (JSONL line, array element).
    #[error("{path}: invalid JSON{} at line {line}, column {column}: {source}", row.map(|r| format!(" in row {r}")).unwrap_or_default())]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// 1-based record number, when known.
        row: Option<usize>,
        /// 1-based line in the file.
        line: usize,
        /// 1-based column in the line.
        column: usize,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A line of a text file is not UTF-8.
    #[error("{path}: row {row} (line {line}) is not valid UTF-8")]
    Utf8 {
        /// The file concerned.
        path: PathBuf,
        /// 1-based record number.
        row: usize,
        /// 1-based line in the file.
        line: usize,
    },
    /// A record is not a JSON object.
    #[error("{path}: row {row} is a JSON {found}, expected an object")]
    NotAnObject {
        /// The file concerned.
        path: PathBuf,
        /// 1-based record number.
        row: usize,
        /// The JSON type found.
        found: &'static str,
    },
    /// A field of a record is missing or has the wrong type.
    #[error("{path}: row {row}: field `{field}`: {issue}")]
    Field {
        /// The file concerned.
        path: PathBuf,
        /// 1-based record number.
        row: usize,
        /// The field's name.
        field: String,
        /// What is wrong with it.
        issue: FieldIssue,
    },
    /// A Parquet file could not be read.
    #[error("{path}: Parquet{}: {source}", row.map(|r| format!(" row {r}")).unwrap_or_default())]
    Parquet {
        /// The file concerned.
        path: PathBuf,
        /// 1-based record number, when the error concerns one row.
        row: Option<usize>,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A data file holds no records at all.
    #[error("{path}: file holds no records")]
    Empty {
        /// The file concerned.
        path: PathBuf,
    },
    /// The file's kind cannot be told from its name or content.
    #[error("{path}: unknown data file kind (expected .json, .jsonl, .ndjson or .parquet)")]
    UnknownFileKind {
        /// The file concerned.
        path: PathBuf,
    },
    /// A dataset spec `NAME[:PROPORTION[:PATH]]` is malformed.
    #[error("dataset spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A spec asks for exactly `requested` rows but the data has fewer.
    #[error("dataset spec `{spec}` asks for {requested} rows, {path} has {available} usable rows")]
    NotEnoughRows {
        /// The spec as given.
        spec: String,
        /// The file concerned.
        path: PathBuf,
        /// Rows asked for.
        requested: usize,
        /// Rows present.
        available: usize,
    },
    /// No format of that name is registered.
    #[error("unknown dataset format `{name}` (registered: {known})")]
    UnknownFormat {
        /// The name asked for.
        name: String,
        /// Comma-separated registered names.
        known: String,
    },
    /// A spec names no path and its format has no default path.
    #[error("dataset spec `{spec}` names no path and format `{format}` has no default")]
    MissingPath {
        /// The spec as given.
        spec: String,
        /// The format named.
        format: String,
    },
    /// A chat template failed to load or render.
    #[error("chat template: {0}")]
    Template(#[from] minijinja::Error),
    /// `tokenizer_config.json` lacks something needed or is malformed.
    #[error("tokenizer config: {0}")]
    TokenizerConfig(String),
    /// The tokenizer failed (encoding, adding tokens, loading).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A token the pipeline needs (BOS, EOS, pad) is unknown to the tokenizer.
    #[error("token `{token}` ({role}) is not in the tokenizer's vocabulary")]
    UnknownToken {
        /// The token text.
        token: String,
        /// Its role: `bos`, `eos`, `pad`.
        role: &'static str,
    },
    /// An option is out of range.
    #[error("invalid option `{name}`: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// Writing safetensors shards failed.
    #[error("{path}: safetensors: {source}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// An aligner's prompt record (`aligner_config.json`) is malformed or cannot be used.
    #[error("{path}: {reason}")]
    AlignerConfig {
        /// The record concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An explicit prompt option contradicts what the aligner's folder records it was trained
    /// with.
    #[error(
        "{path}: the {option} given ({given}) contradicts the one this aligner was trained with \
         ({recorded}); drop the option or train another aligner"
    )]
    PromptContradiction {
        /// The record concerned.
        path: PathBuf,
        /// Which option.
        option: &'static str,
        /// The value given.
        given: String,
        /// The value recorded.
        recorded: String,
    },
    /// An aligner is asked for a task it was not trained for.
    #[error("this aligner was not trained to rewrite {task} (see its aligner_config.json)")]
    AlignerTask {
        /// The task asked for.
        task: &'static str,
    },
    /// A row to batch does not have one label per token.
    #[error("row {row} of the batch has {input_ids} input ids but {labels} labels")]
    RowLengths {
        /// Index of the row in the batch.
        row: usize,
        /// Its input ids.
        input_ids: usize,
        /// Its labels.
        labels: usize,
    },
    /// A manifest that [`crate::prepare()`] would not write: another layout version, a shard
    /// name outside its folder, counts that do not add up.
    #[error("{path}: {reason}")]
    InvalidManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A shard holds something other than what [`crate::prepare()`] writes.
    #[error("{path}: not an aligner-data shard: {reason}")]
    InvalidShard {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The 1-based row this error concerns, if any.
    pub fn row(&self) -> Option<usize> {
        match self {
            Error::Utf8 { row, .. } | Error::NotAnObject { row, .. } | Error::Field { row, .. } => {
                Some(*row)
            }
            Error::Json { row, .. } | Error::Parquet { row, .. } => *row,
            _ => None,
        }
    }

    /// The field this error concerns, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn json(
        path: impl Into<PathBuf>,
        row: Option<usize>,
        source: serde_json::Error,
    ) -> Self {
        Error::Json {
            path: path.into(),
            row,
            line: source.line(),
            column: source.column(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON type name of a value without its article (`string`, `object`), for error messages.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    let phrase = crate::file::json_type(v);
    phrase
        .strip_prefix("an ")
        .or_else(|| phrase.strip_prefix("a "))
        .unwrap_or(phrase)
}
