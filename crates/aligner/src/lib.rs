//! aligner-rs: correct a large language model's answers with a small aligner model.
//!
//! This facade re-exports the workspace crates under short namespaces: `data`, `model`,
//! `train`, `stream`, `eval`, and `serve` (the OpenAI-compatible aligning server). [`app`]
//! holds the applications that the examples and `cargo xtask` run (math evaluation, Stream
//! Aligner training rows, answer evaluation, benchmarks) as options structs and `run` functions.

pub use aligner_data as data;
pub use aligner_eval as eval;
pub use aligner_model as model;
pub use aligner_serve as serve;
pub use aligner_stream as stream;
pub use aligner_train as train;

pub mod app;
