//! The error type of `aligner-train`.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while configuring, running, checkpointing or exporting training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model crate failed (loading, a bad argument to the model).
    #[error(transparent)]
    Model(#[from] aligner_model::Error),
    /// The data crate failed: a prepared folder (manifest or shard) that is missing or broken
    /// (the error names the file), or a row without one label per token.
    #[error(transparent)]
    Dataset(#[from] aligner_data::Error),
    /// Drawing a chart failed (e.g. no font for its labels).
    #[error(transparent)]
    Chart(#[from] aligner_data::chart::ChartError),
    /// A LibTorch operation failed.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A training configuration holds an impossible value.
    #[error("invalid training config: {0}")]
    Config(String),
    /// Training data is unusable (empty, mismatched lengths, token ids out of the vocabulary).
    #[error("invalid training data: {0}")]
    Data(String),
    /// A checkpoint is missing a part or does not belong to this run.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A test fail point stopped training on purpose (simulated kill).
    #[error("interrupted at fail point: {0}")]
    Interrupted(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Reads JSON from `path`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}
