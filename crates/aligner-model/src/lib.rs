//! Llama-family causal language models on LibTorch (through [`tch`]), and everything needed to
//! get them running offline: a GGUF reader, an importer to the Hugging Face layout, tokenizers
//! built from GGUF metadata, and the cache that holds the embedded default model.
//!
//! Without the default `torch` feature the crate only reads, imports and tokenizes (no LibTorch
//! needed); `cargo xtask` uses it that way before LibTorch is installed.
//!
//! ```
//! use aligner_model::config::Config;
//! let config = Config::tiny(100);
//! assert_eq!(config.num_heads % config.num_kv_heads, 0);
//! ```

pub mod config;
mod error;
pub mod gguf;
pub mod hub;
pub mod import;
mod io;
pub mod tokenizer;

pub use config::Config;
pub use error::{Error, Result};
pub use tokenizer::ModelTokenizer;

#[cfg(feature = "torch")]
mod cache;
#[cfg(feature = "torch")]
mod causal_lm;
#[cfg(feature = "torch")]
pub mod llama;
#[cfg(feature = "torch")]
pub mod load;

#[cfg(feature = "torch")]
pub use cache::KvCache;
#[cfg(feature = "torch")]
pub use causal_lm::CausalLm;
#[cfg(feature = "torch")]
pub use llama::Llama;
#[cfg(feature = "torch")]
pub mod generate;
