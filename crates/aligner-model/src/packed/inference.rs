//! [`InferenceModel`]: a dense or a packed model behind one [`CausalLm`], chosen at run time.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::model::PackedLlama;
use super::pack_cache::{PackCache, PackOutcome};
use super::weights::WeightFormat;
use crate::cache::KvCache;
use crate::config::Config;
use crate::{CausalLm, Llama, Positions, Result};

/// A model ready for inference: [`Llama`] as loaded (with the store that owns its weights), or
/// its packed form. Implements [`CausalLm`] by delegation, so callers choose the weight format
/// at run time and keep one code path.
#[derive(Debug)]
pub enum InferenceModel {
    /// The model as loaded, with its variables.
    Llama(LoadedLlama),
    /// The packed model.
    Packed(PackedLlama),
}

/// A [`Llama`] loaded for inference together with the store that owns its weights. It offers
/// no access to them but [`into_parts`](Self::into_parts), which consumes it.
#[derive(Debug)]
pub struct LoadedLlama {
    model: Llama,
    store: tch::nn::VarStore,
}

impl LoadedLlama {
    /// The model and its store, for training or inspection.
    #[must_use]
    pub fn into_parts(self) -> (Llama, tch::nn::VarStore) {
        (self.model, self.store)
    }
}

// SAFETY: as for `PackedLlama`: through `&LoadedLlama` only the `CausalLm` methods of the model
// are reachable (via `InferenceModel`), which read the weights and write only into the
// `&mut KvCache` they are given; no handle to a weight escapes (a `&Llama` would hand out
// shallow clones through `LayeredLm`, which is why the fields are private).
unsafe impl Sync for LoadedLlama {}

impl InferenceModel {
    /// Loads a model folder or a PEFT adapter folder (merged into its base, see
    /// [`crate::adapter::load_any`]) with activations of `kind`, packed as `format` unless that
    /// is `None`. Returns the model and the folder of its tokenizer.
    ///
    /// Packing loads the weights in f32 first, so that quantisation sees them exactly. A model
    /// the packed form does not implement ([`PackedLlama::unsupported`]: Gemma, Gemma-2,
    /// sliding windows) is kept dense in `kind` instead of being packed wrongly;
    /// [`is_packed`](Self::is_packed) tells which form was loaded.
    pub fn load(
        dir: &Path,
        kind: Kind,
        device: Device,
        format: Option<WeightFormat>,
    ) -> Result<(Self, std::path::PathBuf)> {
        Self::load_cached(dir, kind, device, format, None).map(|(m, t, _)| (m, t))
    }

    /// [`load`](Self::load), taking a packed model on the CPU from `cache` when it holds one
    /// and storing it there when not ([`PackCache::load`]); with `None`, or for a model kept
    /// dense, the same as `load`. Also returns what the cache did (`None` when not used).
    pub fn load_cached(
        dir: &Path,
        kind: Kind,
        device: Device,
        format: Option<WeightFormat>,
        cache: Option<&PackCache>,
    ) -> Result<(Self, std::path::PathBuf, Option<PackOutcome>)> {
        match format {
            None => {
                let (model, vs, tokenizer) = crate::adapter::load_any(dir, kind, device)?;
                Ok((
                    Self::Llama(LoadedLlama { model, store: vs }),
                    tokenizer,
                    None,
                ))
            }
            Some(format) => {
                if let Some(cache) = cache.filter(|_| device == Device::Cpu)
                    && format != WeightFormat::Dense
                    && PackedLlama::unsupported(&Self::config_of(dir)?).is_none()
                {
                    let pack = cache.load(dir, kind, format)?;
                    return Ok((
                        Self::Packed(pack.model),
                        pack.tokenizer_dir,
                        Some(pack.outcome),
                    ));
                }
                let (model, mut vs, tokenizer) =
                    crate::adapter::load_any(dir, Kind::Float, device)?;
                if PackedLlama::unsupported(&model.config).is_some() {
                    if kind != Kind::Float {
                        vs.set_kind(kind);
                    }
                    return Ok((
                        Self::Llama(LoadedLlama { model, store: vs }),
                        tokenizer,
                        None,
                    ));
                }
                Ok((
                    Self::Packed(PackedLlama::from_model_in(&model, dir, kind, format)?),
                    tokenizer,
                    None,
                ))
            }
        }
    }

    /// The configuration of a model folder, or of an adapter's base.
    fn config_of(dir: &Path) -> Result<Config> {
        Config::from_file(crate::adapter::base_of(dir)?.join("config.json"))
    }

    /// Whether the model runs packed (`false`: dense, as asked or because
    /// [`PackedLlama::unsupported`] named something the packed form lacks).
    pub fn is_packed(&self) -> bool {
        matches!(self, Self::Packed(_))
    }

    fn inner(&self) -> &dyn CausalLm {
        match self {
            Self::Llama(m) => &m.model,
            Self::Packed(m) => m,
        }
    }
}

impl CausalLm for InferenceModel {
    fn config(&self) -> &Config {
        self.inner().config()
    }

    fn device(&self) -> Device {
        self.inner().device()
    }

    fn kind(&self) -> Kind {
        self.inner().kind()
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        self.inner().new_cache(batch)
    }

    fn logits_at(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        positions: Positions,
    ) -> Result<Tensor> {
        self.inner().logits_at(input_ids, cache, mask, positions)
    }

    fn decode_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        self.inner().decode_step(tokens, caches)
    }
}
