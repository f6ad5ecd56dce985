//! Datasets, prompt templates and tokenisation for Aligner and Stream Aligner training.

pub mod error;
pub mod read;
pub mod rng;
pub mod row;
pub mod template;

pub use error::{Error, FieldError, FieldIssue, Result};
pub use read::{FileKind, Loaded, ReadOptions, SkippedRow, read_rows};
pub use row::{CorrectionRow, FromRecord, Record, StreamRow};
