//! Llama-family causal language models on LibTorch (through [`tch`]), and everything needed to
//! get them running offline: a GGUF reader, an importer to the Hugging Face layout, tokenizers
//! built from GGUF metadata, and the cache that holds the embedded default model.
//!
//! Without the default `torch` feature the crate only reads, imports and tokenizes (no LibTorch
//! needed); `cargo xtask` uses it that way before LibTorch is installed.
//!
//! ```
//! # #[cfg(feature = "torch")] {
//! use aligner_model::{CausalLm, Config, Llama};
//! use tch::{Device, Tensor, nn};
//!
//! // A tiny random model; `Llama::load(dir, kind, device)` loads a real checkpoint.
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = Llama::new(&vs.root(), &Config::tiny(100));
//! let mut cache = model.new_cache(1);
//! let logits = model.forward(&Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0), &mut cache, None)?;
//! assert_eq!(logits.size(), [1, 3, 100]);
//! assert_eq!(cache.len(), 3);
//! # }
//! # Ok::<(), aligner_model::Error>(())
//! ```

pub mod chat;
pub mod config;
pub mod cpu;
mod error;
pub mod gguf;
pub mod hub;
pub mod import;
pub mod qmatmul;
pub mod remote;
pub mod tokenizer;

pub use aligner_data::FileError;
pub use config::{Config, LoraSpec};
pub use error::{Error, Result};
pub use tokenizer::ModelTokenizer;

#[cfg(feature = "torch")]
pub mod adapter;
#[cfg(feature = "torch")]
mod cache;
#[cfg(feature = "torch")]
mod causal_lm;
#[cfg(feature = "torch")]
pub mod cuda;
#[cfg(feature = "torch")]
mod decode;
#[cfg(feature = "torch")]
pub mod device;
#[cfg(feature = "torch")]
pub mod llama;
#[cfg(feature = "torch")]
pub mod load;
#[cfg(feature = "torch")]
pub mod packed;

#[cfg(feature = "torch")]
pub use cache::KvCache;
#[cfg(feature = "torch")]
pub use causal_lm::{CausalLm, LayeredLm, LoraWeights, Positions};
#[cfg(feature = "torch")]
pub use device::{DType, auto_device, native_bf16, parse_device};
#[cfg(feature = "torch")]
pub use llama::Llama;
#[cfg(feature = "torch")]
pub use packed::{InferenceModel, LoadedLlama, PackCache, PackOutcome, PackedLlama, WeightFormat};
#[cfg(feature = "torch")]
pub mod generate;
