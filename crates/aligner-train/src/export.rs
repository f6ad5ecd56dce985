//! Exports: the Hugging Face layout (adapters merged) and PEFT-compatible LoRA adapters.

use aligner_data::file::WrapFileError as _;
use std::collections::HashMap;
use std::path::Path;

use aligner_model::LayeredLm;
use tch::{Device, Kind, Tensor};

use crate::trainer::Trainer;
use crate::{Error, Result};

/// Tokenizer and generation files copied next to an exported model when present.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

fn is_lora(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// Has `write` produce `path` at a temporary sibling, then renames it into place
/// ([`aligner_data::atomic`]).
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    aligner_data::atomic::write_via_path(path, write, |e| Error::io(path, e))
}

impl<M: LayeredLm> Trainer<M> {
    /// Every model weight in f32 on the CPU under its Hugging Face name, trained values taken
    /// from the f32 masters and LoRA adapters merged (`W + alpha/r * B A`).
    pub fn merged_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let _guard = tch::no_grad_guard();
        let masters: HashMap<String, Tensor> = self.master_weights().into_iter().collect();
        let mut weights: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self.var_store().variables() {
            if is_lora(&name) {
                continue;
            }
            let value = masters.get(&name).unwrap_or(&var);
            let value = value.to_device(Device::Cpu).to_kind(Kind::Float).copy();
            weights.insert(name, value);
        }
        for lora in self.model().lora_weights() {
            let get = |suffix: &str| {
                let key = format!("{}.{suffix}.weight", lora.module);
                masters
                    .get(&key)
                    .map(|t| t.to_device(Device::Cpu).to_kind(Kind::Float))
                    .ok_or_else(|| Error::Config(format!("LoRA weight `{key}` is not trained")))
            };
            let (a, b) = (get("lora_A")?, get("lora_B")?);
            let key = format!("{}.weight", lora.module);
            let w = weights
                .get_mut(&key)
                .ok_or_else(|| Error::Config(format!("no base weight `{key}` for LoRA")))?;
            let _ = w.f_add_(&(b.f_matmul(&a)? * lora.scale))?;
        }
        let mut out: Vec<(String, Tensor)> = weights.into_iter().collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        Ok(out)
    }

    /// Writes a Hugging Face layout folder that transformers loads: `config.json`,
    /// `model.safetensors` (f32, adapters merged) and the tokenizer files found in
    /// `tokenizer_dir`, if given.
    pub fn export_hf(&self, dir: impl AsRef<Path>, tokenizer_dir: Option<&Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let weights = self.merged_weights()?;
        write_atomic(&dir.join("model.safetensors"), |tmp| {
            Ok(Tensor::write_safetensors(&weights, tmp)?)
        })?;
        let config = self.model().config().to_hf();
        aligner_data::file::write_json(&dir.join("config.json"), &config)?;
        if let Some(src) = tokenizer_dir {
            for file in TOKENIZER_FILES {
                let from = src.join(file);
                if from.is_file() {
                    let to = dir.join(file);
                    std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the LoRA adapters alone as PEFT does: `adapter_model.safetensors` with names
    /// `base_model.model.<module>.lora_A.weight` / `lora_B.weight` (f32 masters) and
    /// `adapter_config.json`. `base_model` is recorded as `base_model_name_or_path`.
    pub fn save_lora_adapter(&self, dir: impl AsRef<Path>, base_model: &str) -> Result<()> {
        let dir = dir.as_ref();
        let Some(spec) = &self.config().model.lora else {
            return Err(Error::Config("this run trains no LoRA adapters".into()));
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors: Vec<(String, Tensor)> = self
            .master_weights()
            .into_iter()
            .filter(|(n, _)| is_lora(n))
            .map(|(n, t)| {
                (
                    format!("base_model.model.{n}"),
                    t.to_device(Device::Cpu).contiguous(),
                )
            })
            .collect();
        write_atomic(&dir.join("adapter_model.safetensors"), |tmp| {
            Ok(Tensor::write_safetensors(&tensors, tmp)?)
        })?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": spec.rank,
            "lora_alpha": spec.alpha,
            "lora_dropout": spec.dropout,
            "target_modules": spec.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
        });
        Ok(aligner_data::file::write_json(
            &dir.join("adapter_config.json"),
            &config,
        )?)
    }
}
