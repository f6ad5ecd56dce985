//! Datasets, prompt templates and tokenisation for Aligner and Stream Aligner training.

pub mod batch;
pub mod error;
pub mod format;
pub mod mix;
pub mod prepare;
pub mod read;
pub mod rng;
pub mod row;
pub mod sentences;
pub mod spec;
pub mod template;
pub mod tokenize;
pub mod warmup;

pub use error::{Error, FieldError, FieldIssue, Result};
pub use format::{Example, Format, Registry};
pub use mix::{Mix, MixOptions, MixedExample, load_mix};
pub use prepare::{DatasetInput, Manifest, PrepareOptions, Progress, prepare};
pub use read::{FileKind, Loaded, ReadOptions, SkippedRow, read_rows};
pub use row::{CorrectionRow, FromRecord, Record, StreamRow};
pub use sentences::{split_sentences, stream_rows};
pub use spec::{DatasetSpec, Proportion};
pub use tokenize::{Encoded, Encoder, IGNORE_INDEX, TokenizeStats};
