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
    /// Activation of the MLP: `silu`, or `gelu_pytorch_tanh` (Gemma; Gemma's legacy `gelu`
    /// means the same).
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Activation of the MLP as Gemma-2 names it; takes precedence over `hidden_act`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_activation: Option<String>,
    /// Sliding-window attention width (Mistral, Gemma-2; Qwen2 with `use_sliding_window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2: whether `sliding_window` is used at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Per-layer attention kind: `full_attention` or `sliding_attention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Gemma-2: attention logits are soft-capped as `cap * tanh(logits / cap)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma-2: final logits are soft-capped as `cap * tanh(logits / cap)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma-2: queries are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
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

/// The architecture family: what differs beyond the shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Llama 2 and 3, SmolLM: the plain pre-norm decoder.
    #[default]
    Llama,
    /// Mistral: Llama with an optional sliding window.
    Mistral,
    /// Qwen2: Llama with q/k/v biases.
    Qwen2,
    /// Gemma: RMSNorm as `x * (1 + w)`, embeddings scaled by `sqrt(hidden_size)`.
    Gemma,
    /// Gemma-2: Gemma plus pre/post feed-forward norms, a normed attention output,
    /// soft-capping and alternating sliding-window layers.
    Gemma2,
}

impl Family {
    /// The Hugging Face `model_type` and architecture class.
    pub fn hf_names(self) -> (&'static str, &'static str) {
        match self {
            Family::Llama => ("llama", "LlamaForCausalLM"),
            Family::Mistral => ("mistral", "MistralForCausalLM"),
            Family::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Family::Gemma => ("gemma", "GemmaForCausalLM"),
            Family::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
        }
    }

    /// Whether RMSNorm multiplies by `1 + w` in f32 and embeddings are scaled by
    /// `sqrt(hidden_size)` (Gemma and Gemma-2).
    pub fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma | Family::Gemma2)
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU).
    #[default]
    Silu,
    /// GELU with the tanh approximation (GeGLU; transformers' `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// The name transformers uses.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }
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
    /// Architecture family (norm form, embedding scale, feed-forward norms, export names).
    pub family: Family,
    /// MLP gate activation.
    pub activation: Activation,
    /// Sliding-window width: a query attends to itself and the `w - 1` positions before it,
    /// on the layers that [`Config::is_sliding`] names.
    pub sliding_window: Option<usize>,
    /// Layers that attend to everything despite `sliding_window` (Gemma-2's odd layers).
    pub full_attention_layers: Vec<usize>,
    /// Attention-logit soft-capping (Gemma-2).
    pub attn_logit_softcapping: Option<f64>,
    /// Final-logit soft-capping (Gemma-2).
    pub final_logit_softcapping: Option<f64>,
    /// Queries are scaled by `query_pre_attn_scalar^-1/2`; `None`: `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
}

impl HfConfig {
    /// Reads `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(aligner_data::file::read_json(path.as_ref())?)
    }

    /// Resolves defaults and checks consistency. `path` names the file for error messages.
    pub fn into_config(self, path: &Path) -> Result<Config> {
        let err = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let family = match self.model_type.as_deref() {
            None | Some("llama") => Family::Llama,
            Some("mistral") => Family::Mistral,
            Some("qwen2") => Family::Qwen2,
            Some("gemma") => Family::Gemma,
            Some("gemma2") => Family::Gemma2,
            Some(other) => {
                return Err(err(format!(
                    "model_type `{other}` is not supported (llama, mistral, qwen2, gemma, gemma2 are)"
                )));
            }
        };
        let is_qwen2 = family == Family::Qwen2;
        let (act_field, act) = match (&self.hidden_activation, &self.hidden_act) {
            (Some(a), _) => ("hidden_activation", Some(a.as_str())),
            (None, a) => ("hidden_act", a.as_deref()),
        };
        let activation = match act {
            None if family.is_gemma() => Activation::GeluTanh,
            None | Some("silu") => Activation::Silu,
            Some("gelu_pytorch_tanh") => Activation::GeluTanh,
            // Gemma's legacy value, which transformers maps to the tanh approximation.
            Some("gelu") if family.is_gemma() => Activation::GeluTanh,
            Some(other) => {
                return Err(err(format!(
                    "{act_field} `{other}` is not supported (silu and gelu_pytorch_tanh are)"
                )));
            }
        };
        let sliding_window = match family {
            Family::Qwen2 if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        };
        if sliding_window == Some(0) {
            return Err(err("sliding_window must be positive".into()));
        }
        let full_attention_layers = match (&self.layer_types, sliding_window) {
            (_, None) => Vec::new(),
            (Some(types), Some(_)) => {
                if types.len() != self.num_hidden_layers {
                    return Err(err(format!(
                        "layer_types has {} entries for {} layers",
                        types.len(),
                        self.num_hidden_layers
                    )));
                }
                let mut full = Vec::new();
                for (i, kind) in types.iter().enumerate() {
                    match kind.as_str() {
                        "full_attention" => full.push(i),
                        "sliding_attention" => {}
                        other => {
                            return Err(err(format!(
                                "layer_types[{i}] `{other}` is not supported (full_attention and sliding_attention are)"
                            )));
                        }
                    }
                }
                full
            }
            // Gemma-2 without `layer_types`: even layers slide, odd layers attend fully.
            (None, Some(_)) if family == Family::Gemma2 => {
                (0..self.num_hidden_layers).filter(|i| i % 2 == 1).collect()
            }
            (None, Some(_)) if family == Family::Qwen2 => {
                return Err(err(
                    "use_sliding_window without layer_types is not supported".into(),
                ));
            }
            (None, Some(_)) => Vec::new(),
        };
        for (field, value) in [
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(err(format!("{field} must be positive")));
            }
            if value.is_some() && family != Family::Gemma2 {
                return Err(err(format!(
                    "{field} is only supported for model_type gemma2"
                )));
            }
        }
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
            family,
            activation,
            sliding_window,
            full_attention_layers,
            attn_logit_softcapping: self.attn_logit_softcapping,
            final_logit_softcapping: self.final_logit_softcapping,
            query_pre_attn_scalar: self.query_pre_attn_scalar,
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
        let family = match self.family {
            Family::Llama if self.qkv_bias && !self.o_bias => Family::Qwen2,
            family => family,
        };
        let (model_type, class) = family.hf_names();
        let layer_types = self.sliding_window.map(|_| {
            (0..self.num_layers)
                .map(|i| {
                    if self.is_sliding(i) {
                        "sliding_attention".to_owned()
                    } else {
                        "full_attention".to_owned()
                    }
                })
                .collect()
        });
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
            hidden_act: Some(self.activation.hf_name().into()),
            hidden_activation: (family == Family::Gemma2).then(|| self.activation.hf_name().into()),
            sliding_window: self.sliding_window,
            use_sliding_window: (family == Family::Qwen2).then_some(self.sliding_window.is_some()),
            layer_types,
            attn_logit_softcapping: self.attn_logit_softcapping,
            final_logit_softcapping: self.final_logit_softcapping,
            query_pre_attn_scalar: self.query_pre_attn_scalar,
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

    /// Whether layer `layer` attends through the sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && !self.full_attention_layers.contains(&layer)
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
            family: Family::Llama,
            activation: Activation::Silu,
            sliding_window: None,
            full_attention_layers: Vec::new(),
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            query_pre_attn_scalar: None,
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
    use aligner_data::file::WrapFileError as _;

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
    fn gemma2_resolves_and_exports_round_trip() {
        let c = parse(
            r#"{"model_type": "gemma2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
                "head_dim": 6, "sliding_window": 4, "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 6}"#,
        )
        .unwrap();
        assert_eq!(c.family, Family::Gemma2);
        assert_eq!(c.activation, Activation::GeluTanh);
        // Without `layer_types`, even layers slide (transformers' default).
        assert_eq!(c.full_attention_layers, vec![1]);
        assert!(c.is_sliding(0) && !c.is_sliding(1) && c.is_sliding(2));
        let back = c.to_hf().into_config(Path::new("config.json")).unwrap();
        assert_eq!(back, c);
        for (json, family) in [
            (
                r#""model_type": "gemma", "hidden_act": "gelu""#,
                Family::Gemma,
            ),
            (
                r#""model_type": "mistral", "sliding_window": 4"#,
                Family::Mistral,
            ),
            (
                r#""model_type": "qwen2", "sliding_window": 4"#,
                Family::Qwen2,
            ),
        ] {
            let c = parse(&format!(
                r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 2, "num_attention_heads": 2, {json}}}"#
            ))
            .unwrap();
            assert_eq!(c.family, family);
            assert_eq!(c.to_hf().into_config(Path::new("config.json")).unwrap(), c);
        }
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
