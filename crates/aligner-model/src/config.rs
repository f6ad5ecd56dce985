//! Model configuration: a tolerant image of Hugging Face's `config.json` and the resolved
//! [`Config`] the model is built from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `config.json` of a Llama-family checkpoint as Hugging Face writes it.
///
/// Unknown fields are ignored and most fields have defaults, so configs of related
/// architectures (Llama, Mistral, Qwen2, SmolLM) and of several transformers versions load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfConfig {
    /// e.g. `["LlamaForCausalLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// e.g. `"llama"` or `"qwen2"`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency (older configs).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (older configs).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// RoPE parameters (transformers 5 configs: theta and scaling together).
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    /// Longest context the model was trained for.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Whether the LM head shares the embedding's weights.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v/o projections (Llama: `attention_bias`).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    /// Bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation of the MLP; only `silu` is supported.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// BOS id(s).
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    /// The dtype the weights were saved in.
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

/// One token id or several (configs use both forms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// All ids as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// RoPE scaling parameters (`rope_scaling` or `rope_parameters` of `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `default`, `linear` or `llama3`.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// RoPE base (transformers 5 keeps it here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Scaling factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// llama3: low-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// llama3: the context length before scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rope {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The factor.
        factor: f64,
    },
    /// Llama 3.1-style frequency-dependent scaling.
    Llama3 {
        /// Overall factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Context length before scaling.
        original_max_position_embeddings: usize,
    },
}

/// The fully resolved configuration a model is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope: Rope,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// LM head tied to the embedding.
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// BOS id, if any.
    pub bos_token_id: Option<u32>,
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Padding id, if any.
    pub pad_token_id: Option<u32>,
}

impl HfConfig {
    /// Reads `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        crate::io::read_json(path.as_ref())
    }

    /// Resolves defaults and checks consistency. `path` names the file for error messages.
    pub fn into_config(self, path: &Path) -> Result<Config> {
        let err = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(err(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
        let is_qwen2 = self.model_type.as_deref() == Some("qwen2");
        let num_heads = self.num_attention_heads;
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(err(format!(
                "{num_heads} attention heads cannot be grouped over {num_kv_heads} key/value heads"
            )));
        }
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if self.hidden_size.is_multiple_of(num_heads) => self.hidden_size / num_heads,
            None => {
                return Err(err(format!(
                    "hidden_size {} is not divisible by {num_heads} heads",
                    self.hidden_size
                )));
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(format!(
                "head_dim {head_dim} must be even for rotary embeddings"
            )));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return Err(err(
                "vocab_size, hidden_size and num_hidden_layers must be positive".into(),
            ));
        }
        let params = self.rope_scaling.as_ref().or(self.rope_parameters.as_ref());
        let rope_theta = self
            .rope_theta
            .or(self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0);
        let rope = match params.and_then(|p| p.rope_type.as_deref()) {
            None | Some("default") => Rope::Default,
            Some(kind) => {
                let p = params.ok_or_else(|| err("rope parameters missing".into()))?;
                let need = |v: Option<f64>, name: &str| {
                    v.ok_or_else(|| err(format!("rope scaling `{kind}` needs `{name}`")))
                };
                match kind {
                    "linear" => Rope::Linear { factor: need(p.factor, "factor")? },
                    "llama3" => Rope::Llama3 {
                        factor: need(p.factor, "factor")?,
                        low_freq_factor: need(p.low_freq_factor, "low_freq_factor")?,
                        high_freq_factor: need(p.high_freq_factor, "high_freq_factor")?,
                        original_max_position_embeddings: p
                            .original_max_position_embeddings
                            .ok_or_else(|| err("rope scaling `llama3` needs `original_max_position_embeddings`".into()))?,
                    },
                    other => return Err(err(format!("rope scaling `{other}` is not supported"))),
                }
            }
        };
        let attention_bias = self.attention_bias.unwrap_or(false);
        Ok(Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope,
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: attention_bias || is_qwen2,
            o_bias: attention_bias,
            mlp_bias: self.mlp_bias,
            bos_token_id: self
                .bos_token_id
                .as_ref()
                .and_then(|t| t.to_vec().first().copied()),
            eos_token_ids: self
                .eos_token_id
                .as_ref()
                .map(TokenIds::to_vec)
                .unwrap_or_default(),
            pad_token_id: self
                .pad_token_id
                .as_ref()
                .and_then(|t| t.to_vec().first().copied()),
        })
    }
}

impl Config {
    /// Reads and resolves `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        HfConfig::from_file(path)?.into_config(path)
    }

    /// The Hugging Face `config.json` image of this configuration (for exports).
    pub fn to_hf(&self) -> HfConfig {
        let (rope_scaling, rope_type) = match self.rope {
            Rope::Default => (None, None),
            Rope::Linear { factor } => (Some((factor, None, None, None)), Some("linear")),
            Rope::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => (
                Some((
                    factor,
                    Some(low_freq_factor),
                    Some(high_freq_factor),
                    Some(original_max_position_embeddings),
                )),
                Some("llama3"),
            ),
        };
        // Qwen2 is the Llama family member with q/k/v bias but none on the output projection.
        let (class, model_type) = if self.qkv_bias && !self.o_bias {
            ("Qwen2ForCausalLM", "qwen2")
        } else {
            ("LlamaForCausalLM", "llama")
        };
        HfConfig {
            architectures: vec![class.into()],
            model_type: Some(model_type.into()),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_layers,
            num_attention_heads: self.num_heads,
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: Some(self.rope_theta),
            rope_scaling: rope_scaling.map(|(factor, low, high, original)| RopeScaling {
                rope_type: rope_type.map(str::to_owned),
                rope_theta: None,
                factor: Some(factor),
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            }),
            rope_parameters: None,
            max_position_embeddings: Some(self.max_position_embeddings),
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: Some(self.o_bias),
            mlp_bias: self.mlp_bias,
            hidden_act: Some("silu".into()),
            bos_token_id: self.bos_token_id.map(TokenIds::One),
            eos_token_id: match self.eos_token_ids.as_slice() {
                [] => None,
                [one] => Some(TokenIds::One(*one)),
                many => Some(TokenIds::Many(many.to_vec())),
            },
            pad_token_id: self.pad_token_id.map(TokenIds::One),
            torch_dtype: Some("float32".into()),
        }
    }

    /// A tiny random-weight configuration for tests and examples.
    pub fn tiny(vocab_size: usize) -> Self {
        Config {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope: Rope::Default,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
        }
    }
}

/// LoRA adapter settings (PEFT's `r`, `lora_alpha`, `lora_dropout`, `target_modules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSpec {
    /// Rank `r` of the update `B A`.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on the adapter's input during training.
    pub dropout: f64,
    /// Short names of the adapted linear layers (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj`).
    pub target_modules: Vec<String>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl LoraSpec {
    /// Checks that rank, alpha and dropout are usable.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidArgument(
                "LoRA rank must be at least 1".into(),
            ));
        }
        if !self.alpha.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!(
                "LoRA alpha {} must be finite and dropout {} in [0, 1)",
                self.alpha, self.dropout
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config> {
        let hf: HfConfig = serde_json::from_str(json).map_err(|e| Error::json("config.json", e))?;
        hf.into_config(Path::new("config.json"))
    }

    #[test]
    fn defaults_resolve_and_unknown_fields_are_ignored() {
        let c = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 2, "some_future_field": [1, 2], "eos_token_id": [3, 4]}"#,
        )
        .unwrap();
        assert_eq!((c.num_kv_heads, c.head_dim, c.rope_theta), (2, 4, 10_000.0));
        assert_eq!(c.eos_token_ids, vec![3, 4]);
        assert_eq!(c.rope, Rope::Default);
    }

    #[test]
    fn transformers5_rope_parameters_are_read() {
        let c = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 2, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
                "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500_000.0);
        assert!(matches!(c.rope, Rope::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn inconsistent_heads_are_an_error_naming_the_file() {
        let e = parse(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 3, "num_key_value_heads": 2}"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
