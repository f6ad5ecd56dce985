//! The error type of `aligner-stream`.

/// Everything that can go wrong while correcting an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model, its tokenizer or its chat template failed.
    #[error(transparent)]
    Model(#[from] aligner_model::Error),
    /// The aligner's prompt record or its prompt formats failed (aligner-data).
    #[error(transparent)]
    Prompt(#[from] aligner_data::Error),
    /// A LibTorch operation failed.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// A configuration value is unusable.
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An [`Upstream`](crate::Upstream) or [`Corrector`](crate::Corrector) broke its contract.
    #[error("{component}: {reason}")]
    Protocol {
        /// `upstream` or `corrector`.
        component: &'static str,
        /// What it did wrong.
        reason: String,
    },
    /// A conversation breaks the rules of [`Conversation`](crate::Conversation).
    #[error("invalid conversation: {reason}")]
    Conversation {
        /// What is wrong with it.
        reason: String,
    },
    /// A component was asked for something it cannot do: stream mode from a chat upstream
    /// with no prefix continuation, or a conversation of several turns from an upstream that
    /// answers single questions only.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A draft was stopped early through its cancellation flag (the `cancel` of
    /// [`Upstream::draft_conversation`](crate::Upstream::draft_conversation)); its result is
    /// not wanted.
    #[error("the draft was cancelled")]
    Cancelled,
    /// Reading, writing or parsing a file (records, rows) failed; the error names it.
    #[error(transparent)]
    File(#[from] aligner_data::FileError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
