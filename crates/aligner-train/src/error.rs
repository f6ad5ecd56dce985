//! The error type of `aligner-train`.

use std::path::PathBuf;

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
    /// Reading, writing or parsing a file (checkpoint, config, metrics) failed; the error
    /// names it.
    #[error(transparent)]
    File(#[from] aligner_data::FileError),
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
