//! Datasets, prompt templates and tokenisation for Aligner and Stream Aligner training.
//!
//! The pipeline, one module per step:
//!
//! 1. [`read`]: rows from a JSON array, JSON lines or Parquet, streamed, with
//!    typed errors naming file, row and field, and optional skipping that
//!    lists every skipped row ([`read_rows`], [`CorrectionRow`], [`StreamRow`]).
//! 2. [`spec`]: `NAME[:PROPORTION[:PATH]]` dataset specs with seeded
//!    sub-sampling ([`DatasetSpec`]); [`mix`] loads several into one set,
//!    optionally with identity warm-up rows ([`warmup`]).
//! 3. [`format`](mod@format): a [`Registry`] of named [`Format`]s turning records into
//!    (prompt, target) [`Example`]s with the byte-exact [`template`]s of the
//!    reference code, or a model's own Jinja [`template::ChatTemplate`].
//! 4. [`tokenize`]: ids and loss masks ([`Encoder`]): `[BOS] prompt target EOS`,
//!    labels -100 on the prompt, truncation counted.
//! 5. [`batch`]: the training row, right-padded batches, the epoch order with a warm-up phase
//!    first, packing.
//! 6. [`prepare`](mod@prepare): all of the above to safetensors shards and a manifest, and
//!    back ([`prepare::read_prepared`]).
//!
//! [`sentences`] builds sentence-level Stream Aligner rows from whole answers; [`math`] generates
//! step-by-step arithmetic word problems and reads GSM8K-style problem sets; [`everyday`] holds the
//! project's hand-written everyday questions (train and held out) for identity rows and harm checks.
//!
//! # Example
//!
//! ```
//! use aligner_data::{Example, Format, Registry, Record, template};
//!
//! // A correction record in the current Aligner prompt format.
//! let record: Record = serde_json::from_str(
//!     r#"{"question": "Is the sky green?", "answer": "Yes.", "correction": "No, it is blue."}"#,
//! )?;
//! let registry = Registry::with_builtins();
//! let example = registry.get("correction-json")?.example(&record)?;
//! assert_eq!(
//!     example.prompt,
//!     "BEGINNING OF CONVERSATION: USER: ##Question: Is the sky green?\n##Answer: Yes.\n##Correction:  ASSISTANT:"
//! );
//! assert_eq!(example.target, "No, it is blue.");
//!
//! // Stream Aligner prompts use the Gemma wrapper (BOS/EOS are added as ids).
//! let input = template::stream_instruction("Q", "", "It is 5.");
//! assert!(template::gemma_prompt(&input).ends_with("<start_of_turn>model"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aligner_config;
pub mod atomic;
pub mod batch;
pub mod chart;
pub mod error;
pub mod everyday;
pub mod file;
pub mod format;
pub mod math;
pub mod mix;
pub mod prepare;
pub mod read;
pub mod rng;
pub mod row;
pub mod segment;
pub mod sentences;
pub mod spec;
pub mod template;
pub mod tokenize;
pub mod warmup;

pub use aligner_config::{AlignerConfig, AlignerTask, PromptOverrides, Prompter};
pub use error::{Error, FieldError, FieldIssue, Result};
pub use file::FileError;
pub use format::{Example, Format, Registry};
pub use mix::{Mix, MixOptions, MixedExample, load_mix};
pub use prepare::{DatasetInput, Manifest, PrepareOptions, Progress, prepare};
pub use read::{FileKind, Loaded, ReadOptions, SkippedRow, read_rows};
pub use row::{CorrectionRow, FromRecord, Record, StreamRow};
pub use segment::split_sentences;
pub use sentences::stream_rows;
pub use spec::{DatasetSpec, Proportion};
pub use tokenize::{Encoded, Encoder, IGNORE_INDEX, TokenizeStats, add_missing_special_tokens};
