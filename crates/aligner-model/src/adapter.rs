//! PEFT LoRA adapters on disk: `adapter_config.json` and `adapter_model.safetensors`, as PEFT
//! and `aligner-train` write them, merged into a base model at load time (`W += s * B A`,
//! `s = lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA).
//!
//! ```no_run
//! use aligner_model::adapter::load_adapted;
//! use tch::{Device, Kind};
//!
//! // Base from the adapter's `base_model_name_or_path` (a folder, or the embedded default model).
//! let loaded = load_adapted("assets/stream-aligner".as_ref(), None, Kind::BFloat16, Device::Cpu)?;
//! println!("{} modules merged onto {}", loaded.merged, loaded.base_dir.display());
//! # Ok::<(), aligner_model::Error>(())
//! ```

use aligner_data::file::WrapFileError as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor, nn};

use crate::{Error, Llama, Result, hub};

/// File names of a PEFT adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of `adapter_config.json` that loading needs (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdapterConfig {
    /// Must be `LORA`.
    pub peft_type: String,
    /// Rank `r`.
    pub r: usize,
    /// Scaling numerator.
    pub lora_alpha: f64,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Where the base model lives: a folder, or a hub name.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

impl AdapterConfig {
    /// The factor `s` of `W += s * B A`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }
}

/// Whether `dir` holds a PEFT adapter rather than a full model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads `adapter_config.json` of the adapter folder `dir`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = aligner_data::file::read_text(&path)?;
    serde_json::from_str(&text).map_err(|e| Error::json(&path, e))
}

/// The folder whose `config.json` and weights the model or adapter folder `dir` is built on:
/// the adapter's base ([`resolve_base_dir`]), or `dir` itself for a model.
pub(crate) fn base_of(dir: &Path) -> Result<PathBuf> {
    if is_adapter_dir(dir) {
        resolve_base_dir(dir, &read_adapter_config(dir)?, None)
    } else {
        Ok(dir.to_path_buf())
    }
}

/// The base folder of the adapter in `dir` with `config` ([`PeftAdapter::base_dir`]), without
/// reading its weights.
pub(crate) fn resolve_base_dir(
    dir: &Path,
    config: &AdapterConfig,
    explicit: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let name = config.base_model_name_or_path.as_deref().unwrap_or("");
    let candidate = dir.join(name);
    if !name.is_empty() && candidate.join("config.json").is_file() {
        return Ok(candidate);
    }
    let default = &hub::SMOLLM2_135M_INSTRUCT;
    if name.rsplit('/').next() == Some(default.name) {
        return hub::ensure_default_model(&mut |_, _, _| {});
    }
    Err(Error::Config {
        path: dir.join(ADAPTER_CONFIG),
        reason: format!(
            "base model {name:?} is neither a model folder nor the embedded default; give the base folder explicitly"
        ),
    })
}

/// A LoRA adapter read from disk: per module path (`model.layers.0.self_attn.q_proj`) its
/// `A` `(r, in)` and `B` `(out, r)` in f32.
#[derive(Debug)]
pub struct PeftAdapter {
    /// The folder it came from.
    pub dir: PathBuf,
    /// Its config.
    pub config: AdapterConfig,
    modules: BTreeMap<String, (Tensor, Tensor)>,
}

impl PeftAdapter {
    /// Reads an adapter folder; every tensor must be a `lora_A` / `lora_B` pair of rank `r`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let config = read_adapter_config(dir)?;
        let bad = |reason: String| Error::Config {
            path: config_path.clone(),
            reason,
        };
        if !config.peft_type.eq_ignore_ascii_case("lora") {
            return Err(bad(format!(
                "peft_type {:?} is not supported (LORA is)",
                config.peft_type
            )));
        }
        if config.r == 0 {
            return Err(bad("r must be at least 1".into()));
        }
        let weights = dir.join(ADAPTER_WEIGHTS);
        let tensors = Tensor::read_safetensors(&weights).map_err(|e| Error::Safetensors {
            path: weights.clone(),
            reason: e.to_string(),
        })?;
        let mut halves: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        for (name, tensor) in tensors {
            let key = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let (module, is_a) = if let Some(m) = key.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = key.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(Error::Safetensors {
                    path: weights.clone(),
                    reason: format!("tensor `{name}` is not a LoRA A or B weight"),
                });
            };
            let slot = halves.entry(module.to_owned()).or_default();
            let tensor = tensor.to_kind(Kind::Float);
            if is_a {
                slot.0 = Some(tensor);
            } else {
                slot.1 = Some(tensor);
            }
        }
        let mut modules = BTreeMap::new();
        for (module, pair) in halves {
            let (Some(a), Some(b)) = pair else {
                return Err(Error::MissingTensor {
                    path: weights.clone(),
                    tensor: format!("{module}: both lora_A and lora_B"),
                });
            };
            let (ra, _) = a.size2()?;
            let (_, rb) = b.size2()?;
            if ra != config.r as i64 || rb != config.r as i64 {
                return Err(Error::ShapeMismatch {
                    path: weights.clone(),
                    tensor: format!("{module}.lora_A/lora_B"),
                    expected: vec![config.r as i64],
                    found: vec![ra, rb],
                });
            }
            modules.insert(module, (a, b));
        }
        if modules.is_empty() {
            return Err(Error::Safetensors {
                path: weights,
                reason: "no LoRA weights".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            modules,
        })
    }

    /// Module paths the adapter changes.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }

    /// The `A` `(r, in)` and `B` `(out, r)` weights (f32) of `module`, if the adapter changes it.
    pub fn pair(&self, module: &str) -> Option<(&Tensor, &Tensor)> {
        self.modules.get(module).map(|(a, b)| (a, b))
    }

    /// The folder of the base model: `explicit` if given; else `base_model_name_or_path` when it
    /// is an existing folder (relative paths are taken from the adapter folder); else the
    /// embedded default model when the name is its own.
    pub fn base_dir(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        resolve_base_dir(&self.dir, &self.config, explicit)
    }

    /// Adds `scale * B A` to the matching weights of `vs` (names `<module>.weight`).
    pub fn merge_into(&self, vs: &nn::VarStore) -> Result<usize> {
        let variables = vs.variables();
        let scale = self.config.scale();
        for (module, (a, b)) in &self.modules {
            let name = format!("{module}.weight");
            let Some(weight) = variables.get(&name) else {
                return Err(Error::MissingTensor {
                    path: self.dir.join(ADAPTER_WEIGHTS),
                    tensor: format!("{name} (in the base model, for this adapter)"),
                });
            };
            let a = a.to_device(weight.device());
            let b = b.to_device(weight.device());
            let (out, _) = b.size2()?;
            let (_, inp) = a.size2()?;
            if weight.size() != [out, inp] {
                return Err(Error::ShapeMismatch {
                    path: self.dir.join(ADAPTER_WEIGHTS),
                    tensor: module.clone(),
                    expected: weight.size(),
                    found: vec![out, inp],
                });
            }
            let delta = b.matmul(&a) * scale;
            let mut weight = weight.shallow_clone();
            tch::no_grad(|| {
                let merged = weight.to_kind(Kind::Float) + delta;
                weight.f_copy_(&merged.to_kind(weight.kind()))
            })?;
        }
        Ok(self.modules.len())
    }
}

/// A base model with an adapter merged in.
#[derive(Debug)]
pub struct Adapted {
    /// The model.
    pub model: Llama,
    /// The store that owns its weights.
    pub vs: nn::VarStore,
    /// The base model folder (its tokenizer is the adapted model's).
    pub base_dir: PathBuf,
    /// Modules merged.
    pub merged: usize,
}

/// Loads the base of the adapter in `adapter_dir` (see [`PeftAdapter::base_dir`]) in f32,
/// merges the adapter, then converts to `kind`.
pub fn load_adapted(
    adapter_dir: &Path,
    base: Option<&Path>,
    kind: Kind,
    device: Device,
) -> Result<Adapted> {
    let adapter = PeftAdapter::load(adapter_dir)?;
    let base_dir = adapter.base_dir(base)?;
    let (model, mut vs) = Llama::load(&base_dir, Kind::Float, device)?;
    let merged = adapter.merge_into(&vs)?;
    if kind != Kind::Float {
        vs.set_kind(kind);
    }
    Ok(Adapted {
        model,
        vs,
        base_dir,
        merged,
    })
}

/// Loads `dir` whether it holds a full model or an adapter: `(model, store, tokenizer folder)`.
pub fn load_any(dir: &Path, kind: Kind, device: Device) -> Result<(Llama, nn::VarStore, PathBuf)> {
    if is_adapter_dir(dir) {
        let a = load_adapted(dir, None, kind, device)?;
        Ok((a.model, a.vs, a.base_dir))
    } else {
        let (model, vs) = Llama::load(dir, kind, device)?;
        Ok((model, vs, dir.to_path_buf()))
    }
}
