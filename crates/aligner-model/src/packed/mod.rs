//! An inference-only form of [`Llama`](crate::Llama) built for fast decoding on the CPU.
//!
//! - q/k/v and gate/up projections are fused into one matrix each;
//! - with [`WeightFormat::Int4`] or [`WeightFormat::Int8`] the weights are kept in GGUF's Q4_1 /
//!   Q8_0 blocks and multiplied by the block kernels of [`crate::qmatmul`];
//! - a decoding step (one token per row, at most [`QUANT_MAX_ROWS`] rows, f32 activations), or
//!   a short pass of one sequence (a few tokens, each bit for bit as if fed alone), runs
//!   on the host in one pass over the layers, reading and writing the KV cache's buffers in
//!   place, so that it costs a handful of LibTorch calls instead of dozens per layer; such short
//!   passes run on one of rayon's worker threads, so the kernels' parallel loops (four per
//!   layer) fork and join among the workers instead of waking the calling thread each time;
//! - longer passes (prompts) run through LibTorch on a dense copy of the same weights, with
//!   fused RMSNorm and single-token attention that folds the query heads of a key/value group.
//!
//! ```no_run
//! use aligner_model::{CausalLm, PackedLlama, WeightFormat};
//! let dir = aligner_model::hub::model_dir(&aligner_model::hub::SMOLLM2_135M_INSTRUCT);
//! let model = PackedLlama::load(&dir, tch::Kind::Float, tch::Device::Cpu, WeightFormat::Int4)?;
//! let mut cache = model.new_cache(1);
//! let logits = model.forward_last(&tch::Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0), &mut cache, None)?;
//! # Ok::<(), aligner_model::Error>(())
//! ```
//!
//! A model imported from a GGUF file in Q4_1 (the embedded default model) and packed as
//! [`WeightFormat::Int4`] gets the file's own blocks back byte for byte; what the quantised
//! formats approximate is the 8-bit quantisation of activations in front of each product.
//!
//! | module | holds |
//! |---|---|
//! | `weights` | [`WeightFormat`] and the packed weights: fused projections (dense and block copies), norms, layers |
//! | `model` | [`PackedLlama`]: packing, the LibTorch pass, the choice of path, [`CausalLm`](crate::CausalLm) |
//! | `host` | the host step: short passes in f32 on the block kernels, reading and writing the KV cache in place |
//! | `saved` | packed models on disk: [`PackedLlama::save`], and [`PackedLlama::open`], which maps a file and uses it in place |
//! | `pack_cache` | [`PackCache`]: saved packs under a content hash of their sources, mapped on the next start |
//! | `threads` | running a pass on rayon's workers and holding LibTorch to one thread meanwhile |
//! | `inference` | [`InferenceModel`] and [`LoadedLlama`]: dense or packed, chosen at run time |
//!
//! Which CPU path the kernels take and the row limits between paths come from [`crate::cpu`].

mod gguf_blocks;
mod host;
mod inference;
mod model;
mod pack_cache;
mod saved;
mod threads;
mod weights;

pub use crate::cpu::QUANT_MAX_ROWS;
pub use inference::{InferenceModel, LoadedLlama};
pub use model::PackedLlama;
pub use pack_cache::{CachedPack, DEFAULT_MAX_PACKS, PACK_CACHE_ENV, PackCache, PackOutcome};
pub use saved::PACK_VERSION;
pub use weights::WeightFormat;
