//! The Llama-family decoder: RMSNorm, rotary embeddings (with llama3 scaling), grouped-query
//! attention through LibTorch's fused scaled-dot-product attention, SwiGLU MLP, tied or untied LM
//! head, optional q/k/v bias (Qwen2), sliding-window attention (Mistral), and the Gemma
//! variants: `(1 + w)` RMSNorm, GeGLU, scaled embeddings, and for Gemma-2 soft-capping (through
//! an explicit attention product), pre/post feed-forward norms and alternating window layers.
//!
//! Variable paths equal the Hugging Face checkpoint keys (`model.layers.0.self_attn.q_proj.weight`),
//! so checkpoints load by name and exports need no renaming.

use std::path::Path;

use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use crate::cache::KvCache;
use crate::config::{Activation, Config, LoraSpec, Rope};
use crate::{CausalLm, Error, LayeredLm, LoraWeights, Positions, Result, load};

/// A low-rank adapter `y += scale * B (A dropout(x))` on a [`Linear`] (LoRA, PEFT's names).
#[derive(Debug)]
pub(crate) struct LoraAdapter {
    /// `(rank, in_dim)`, saved as `<module>.lora_A.weight`.
    a: Tensor,
    /// `(out_dim, rank)`, saved as `<module>.lora_B.weight`; starts at zero.
    b: Tensor,
    scale: f64,
    dropout: f64,
}

/// A linear layer `y = x W^T + b` with Hugging Face's parameter names (`weight`, `bias`), and an
/// optional LoRA adapter.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<LoraAdapter>,
}

impl Linear {
    fn new(vs: nn::Path<'_>, in_dim: usize, out_dim: usize, bias: bool, random: bool) -> Self {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let init = if random {
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        } else {
            Init::Const(0.0)
        };
        let weight = vs.var("weight", &[out_dim as i64, in_dim as i64], init);
        let bias = bias.then(|| vs.var("bias", &[out_dim as i64], Init::Const(0.0)));
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// Adds a LoRA adapter whose variables live under `vs` (the layer's own path).
    fn add_lora(&mut self, vs: nn::Path<'_>, spec: &LoraSpec) {
        let (out_dim, in_dim) = self.weight.size2().unwrap_or((0, 0));
        let rank = spec.rank as i64;
        // PEFT's initialisation: A Kaiming-uniform (a = sqrt 5, i.e. bound 1/sqrt(in)), B zero,
        // so the adapted model starts equal to the base.
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = (&vs / "lora_A").var(
            "weight",
            &[rank, in_dim],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let b = (&vs / "lora_B").var("weight", &[out_dim, rank], Init::Const(0.0));
        self.lora = Some(LoraAdapter {
            a,
            b,
            scale: spec.alpha / spec.rank as f64,
            dropout: spec.dropout,
        });
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let ys = dense_product(xs, &self.weight, self.bias.as_ref());
        match &self.lora {
            None => ys,
            Some(lora) => {
                let dropped;
                let input = if train && lora.dropout > 0.0 {
                    dropped = xs.dropout(lora.dropout, true);
                    &dropped
                } else {
                    xs
                };
                let delta = input
                    .linear::<Tensor>(&lora.a, None)
                    .linear::<Tensor>(&lora.b, None);
                ys + delta * lora.scale
            }
        }
    }
}

/// `xs (.., in)` times `weight (out, in)` transposed, plus `bias`: a linear layer's product,
/// multiplied as `w x^T` where [`weight_first`] says so and as `x w^T` otherwise.
pub(crate) fn dense_product(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let in_dim = weight.size().last().copied().unwrap_or(0).max(1);
    let rows = xs.numel() as i64 / in_dim;
    if weight_first(weight, rows) {
        weight_first_product(xs, weight, bias)
    } else {
        xs.linear(weight, bias)
    }
}

/// Whether a dense pass of `rows` rows multiplies as `w x^T` ([`weight_first_product`]) rather
/// than `x w^T`: f32 on the CPU, for the row counts the CPU path's tuning gives
/// ([`Tuning::weight_first`](crate::cpu::Tuning::weight_first) says why and where).
fn weight_first(weight: &Tensor, rows: i64) -> bool {
    weight.device() == Device::Cpu
        && weight.kind() == Kind::Float
        && crate::cpu::tuning().weight_first(rows)
}

/// `xs (.., in)` times `weight (out, in)` transposed, plus `bias`, as `weight @ xs^T`: an
/// `(out, rows)` product, returned as its transposed view `(.., out)` (not contiguous; a
/// following projection takes it as the contiguous `(in, rows)` right operand it needs).
fn weight_first_product(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let mut shape = xs.size();
    let in_dim = shape.pop().unwrap_or(0);
    shape.push(weight.size()[0]);
    let ys = weight.mm(&xs.reshape([-1, in_dim]).tr());
    let ys = match bias {
        Some(b) => ys.tr() + b,
        None => ys.tr(),
    };
    ys.reshape(shape.as_slice())
}

/// Root-mean-square layer norm, computed in f32 and cast back as Hugging Face does.
///
/// Llama multiplies the normed value, cast back, by `w`; Gemma (`unit_offset`) multiplies by
/// `1 + w` in f32 before the cast (its weights start at zero).
#[derive(Debug)]
pub(crate) struct RmsNorm {
    pub(crate) weight: Tensor,
    pub(crate) eps: f64,
    pub(crate) unit_offset: bool,
}

impl RmsNorm {
    fn new(vs: nn::Path<'_>, c: &Config) -> Self {
        let unit_offset = c.family.is_gemma();
        let init = Init::Const(if unit_offset { 0.0 } else { 1.0 });
        Self {
            weight: vs.var("weight", &[c.hidden_size as i64], init),
            eps: c.rms_norm_eps,
            unit_offset,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let xs32 = xs.to_kind(Kind::Float);
        let variance = xs32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = xs32 * (variance + self.eps).rsqrt();
        if self.unit_offset {
            (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind)
        } else {
            &self.weight * normed.to_kind(kind)
        }
    }
}

/// Rotary embedding tables: `cos` and `sin` of shape `(max_positions, head_dim)` in f32.
#[derive(Debug)]
pub(crate) struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    pub(crate) fn new(config: &Config, device: Device) -> Self {
        let dim = config.head_dim as i64;
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device))
            .to_kind(Kind::Float)
            / dim as f64;
        let mut inv_freq = Tensor::pow_scalar(config.rope_theta, &exponents).reciprocal();
        match config.rope {
            Rope::Default => {}
            Rope::Linear { factor } => inv_freq /= factor,
            Rope::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old_len = original_max_position_embeddings as f64;
                let low_freq_wavelen = old_len / low_freq_factor;
                let high_freq_wavelen = old_len / high_freq_factor;
                let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
                // Long wavelengths are divided by `factor`, short ones kept, the band between blended.
                let scaled =
                    inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / factor));
                let smooth = (wavelen.reciprocal() * old_len - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                let blended: Tensor = (-&smooth + 1.0) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen
                    .ge(high_freq_wavelen)
                    .logical_and(&wavelen.le(low_freq_wavelen));
                inv_freq = blended.where_self(&medium, &scaled);
            }
        }
        let positions =
            Tensor::arange(config.max_position_embeddings as i64, (Kind::Int64, device))
                .to_kind(Kind::Float);
        let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        Self {
            cos: emb.cos(),
            sin: emb.sin(),
        }
    }

    /// `cos`, `sin` for `positions` `(batch, t)`, shaped `(batch, 1, t, head_dim)` in `kind`.
    fn at(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let pick = |table: &Tensor| {
            table
                .index_select(0, &positions.flatten(0, -1))
                .view([positions.size()[0], 1, positions.size()[1], -1])
                .to_kind(kind)
        };
        (pick(&self.cos), pick(&self.sin))
    }
}

fn rotate_half(xs: &Tensor) -> Tensor {
    let half = xs.size()[3] / 2;
    Tensor::cat(&[-xs.narrow(3, half, half), xs.narrow(3, 0, half)], 3)
}

fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    xs * cos + rotate_half(xs) * sin
}

/// Grouped-query self-attention.
#[derive(Debug)]
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
    /// Attends through the pass's sliding-window mask.
    sliding: bool,
    /// Attention-logit soft-cap (Gemma-2): the logits go through an explicit product.
    softcap: Option<f64>,
    /// Query scale; `None`: `head_dim^-1/2`.
    scale: Option<f64>,
}

/// What every layer's attention needs to know about the current forward pass.
pub(crate) struct AttentionContext {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    /// `(batch, 1, t, total)` bool, true = may attend; `None` with `causal` = plain causal.
    pub(crate) mask: Option<Tensor>,
    pub(crate) causal: bool,
    /// The mask of sliding-window layers, `(batch or 1, 1, t, total)` bool; `None`: the window
    /// hides nothing in this pass and those layers use `mask`.
    pub(crate) sliding_mask: Option<Tensor>,
    /// Training mode: LoRA dropout is active.
    train: bool,
}

impl Attention {
    fn new(vs: nn::Path<'_>, c: &Config, layer: usize, random: bool) -> Self {
        let (h, nh, nkv, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        Self {
            q_proj: Linear::new(&vs / "q_proj", h, nh * hd, c.qkv_bias, random),
            k_proj: Linear::new(&vs / "k_proj", h, nkv * hd, c.qkv_bias, random),
            v_proj: Linear::new(&vs / "v_proj", h, nkv * hd, c.qkv_bias, random),
            o_proj: Linear::new(&vs / "o_proj", nh * hd, h, c.o_bias, random),
            num_heads: nh as i64,
            num_kv_heads: nkv as i64,
            head_dim: hd as i64,
            sliding: c.is_sliding(layer),
            softcap: c.attn_logit_softcapping,
            scale: c.query_pre_attn_scalar.map(|s| s.powf(-0.5)),
        }
    }

    /// # Shapes
    /// `xs`: `(batch, t, hidden)` -> `(batch, t, hidden)`.
    fn forward(
        &self,
        xs: &Tensor,
        layer: usize,
        cache: Option<&mut KvCache>,
        ctx: &AttentionContext,
    ) -> Tensor {
        let (b, t, _) = xs.size3().unwrap_or((0, 0, 0));
        let heads = |proj: &Linear, n: i64| {
            proj.forward(xs, ctx.train)
                .view([b, t, n, self.head_dim])
                .transpose(1, 2)
        };
        let q = apply_rotary(&heads(&self.q_proj, self.num_heads), &ctx.cos, &ctx.sin);
        let k = apply_rotary(&heads(&self.k_proj, self.num_kv_heads), &ctx.cos, &ctx.sin);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (k, v) = match cache {
            Some(cache) => cache.append(layer, k, v),
            None => (k, v),
        };
        let (mask, causal) = match (&ctx.sliding_mask, self.sliding) {
            (Some(window), true) => (Some(window), false),
            _ => (ctx.mask.as_ref(), ctx.causal),
        };
        let y = match self.softcap {
            None => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask,
                0.0,
                causal,
                self.scale,
                self.num_heads != self.num_kv_heads,
            ),
            Some(cap) => self.capped_attention(&q, &k, &v, mask, causal, cap),
        };
        self.o_proj.forward(
            &y.transpose(1, 2)
                .reshape([b, t, self.num_heads * self.head_dim]),
            ctx.train,
        )
    }
}

impl Attention {
    /// Attention with soft-capped logits, `cap * tanh(q k^T scale / cap)`, as an explicit
    /// product (the fused kernel cannot cap): masked, softmax in f32, cast back, times `v`.
    ///
    /// # Shapes
    /// `q`: `(batch, heads, t, head_dim)`, `k`, `v`: `(batch, kv_heads, total, head_dim)`,
    /// `mask`: `(batch or 1, 1, t, total)` -> `(batch, heads, t, head_dim)`.
    fn capped_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        cap: f64,
    ) -> Tensor {
        let groups = self.num_heads / self.num_kv_heads;
        let (k, v) = if groups > 1 {
            (
                k.repeat_interleave_self_int(groups, 1, None),
                v.repeat_interleave_self_int(groups, 1, None),
            )
        } else {
            (k.shallow_clone(), v.shallow_clone())
        };
        let scale = self.scale.unwrap_or((self.head_dim as f64).powf(-0.5));
        let scores = q.matmul(&k.transpose(-2, -1)) * scale;
        let scores = (scores / cap).tanh() * cap;
        let (t, total) = (q.size()[2], k.size()[2]);
        let allowed = match (mask, causal) {
            (Some(m), _) => Some(m.shallow_clone()),
            (None, true) => {
                let q_pos =
                    Tensor::arange_start(total - t, total, (Kind::Int64, q.device())).view([t, 1]);
                let k_pos = Tensor::arange(total, (Kind::Int64, q.device())).view([1, total]);
                Some(k_pos.le_tensor(&q_pos).view([1, 1, t, total]))
            }
            (None, false) => None,
        };
        let scores = match allowed {
            Some(allowed) => scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY),
            None => scores,
        };
        let probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
        probs.matmul(&v)
    }
}

/// The gated feed-forward block: SwiGLU, or GeGLU (Gemma).
#[derive(Debug)]
pub(crate) struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
    activation: Activation,
}

impl Mlp {
    fn new(vs: nn::Path<'_>, c: &Config, random: bool) -> Self {
        Self {
            gate_proj: Linear::new(
                &vs / "gate_proj",
                c.hidden_size,
                c.intermediate_size,
                c.mlp_bias,
                random,
            ),
            up_proj: Linear::new(
                &vs / "up_proj",
                c.hidden_size,
                c.intermediate_size,
                c.mlp_bias,
                random,
            ),
            down_proj: Linear::new(
                &vs / "down_proj",
                c.intermediate_size,
                c.hidden_size,
                c.mlp_bias,
                random,
            ),
            activation: c.activation,
        }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let gate = self.gate_proj.forward(xs, train);
        let gate = match self.activation {
            Activation::Silu => gate.silu(),
            Activation::GeluTanh => gate.gelu("tanh"),
        };
        self.down_proj
            .forward(&(gate * self.up_proj.forward(xs, train)), train)
    }
}

/// One pre-norm decoder layer.
///
/// Llama: `h = x + attn(norm_in(x))`, `out = h + mlp(norm_post_attn(h))`. Gemma-2 (with the
/// feed-forward norms): `h = x + norm_post_attn(attn(norm_in(x)))`,
/// `out = h + norm_post_ff(mlp(norm_pre_ff(h)))`.
#[derive(Debug)]
pub(crate) struct DecoderLayer {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
    /// Gemma-2's `pre_feedforward_layernorm` and `post_feedforward_layernorm`.
    pub(crate) feedforward_norms: Option<(RmsNorm, RmsNorm)>,
}

impl DecoderLayer {
    fn new(vs: nn::Path<'_>, c: &Config, layer: usize, random: bool) -> Self {
        let feedforward_norms = (c.family == crate::config::Family::Gemma2).then(|| {
            (
                RmsNorm::new(&vs / "pre_feedforward_layernorm", c),
                RmsNorm::new(&vs / "post_feedforward_layernorm", c),
            )
        });
        Self {
            input_layernorm: RmsNorm::new(&vs / "input_layernorm", c),
            self_attn: Attention::new(&vs / "self_attn", c, layer, random),
            post_attention_layernorm: RmsNorm::new(&vs / "post_attention_layernorm", c),
            mlp: Mlp::new(&vs / "mlp", c, random),
            feedforward_norms,
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        layer: usize,
        cache: Option<&mut KvCache>,
        ctx: &AttentionContext,
    ) -> Tensor {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs), layer, cache, ctx);
        match &self.feedforward_norms {
            None => {
                let h = xs + attn;
                &h + self
                    .mlp
                    .forward(&self.post_attention_layernorm.forward(&h), ctx.train)
            }
            Some((pre, post)) => {
                let h = xs + self.post_attention_layernorm.forward(&attn);
                let ff = self.mlp.forward(&pre.forward(&h), ctx.train);
                &h + post.forward(&ff)
            }
        }
    }
}

/// A Llama-family causal language model.
#[derive(Debug)]
pub struct Llama {
    pub(crate) embed_tokens: Tensor,
    pub(crate) layers: Vec<DecoderLayer>,
    pub(crate) norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub(crate) lm_head: Option<Tensor>,
    pub(crate) rotary: RotaryEmbedding,
    pub(crate) config: Config,
    pub(crate) device: Device,
}

impl Llama {
    /// Builds the model's variables under `vs`, randomly initialised (load weights afterwards,
    /// or train from scratch).
    pub fn new(vs: &nn::Path<'_>, config: &Config) -> Self {
        Self::build(vs, config, true)
    }

    /// The variables, randomly initialised or (`random == false`, when a checkpoint overwrites
    /// every one of them next) zero-filled, which is much cheaper.
    fn build(vs: &nn::Path<'_>, config: &Config, random: bool) -> Self {
        let model = vs / "model";
        let std = 0.02;
        let init = if random {
            Init::Randn {
                mean: 0.0,
                stdev: std,
            }
        } else {
            Init::Const(0.0)
        };
        let embed_tokens = (&model / "embed_tokens").var(
            "weight",
            &[config.vocab_size as i64, config.hidden_size as i64],
            init,
        );
        let layers = (0..config.num_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, config, i, random))
            .collect();
        let norm = RmsNorm::new(&model / "norm", config);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            (vs / "lm_head").var(
                "weight",
                &[config.vocab_size as i64, config.hidden_size as i64],
                init,
            )
        });
        Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: RotaryEmbedding::new(config, vs.device()),
            config: config.clone(),
            device: vs.device(),
        }
    }

    /// Loads a Hugging Face layout folder (`config.json` + `model.safetensors` or a sharded
    /// `model.safetensors.index.json`) in `kind` (f32, bf16 or f16) on `device`.
    ///
    /// Returns the model and the `VarStore` that owns its weights.
    pub fn load(dir: impl AsRef<Path>, kind: Kind, device: Device) -> Result<(Self, nn::VarStore)> {
        let dir = dir.as_ref();
        let config = Config::from_file(dir.join("config.json"))?;
        let mut vs = nn::VarStore::new(device);
        // Loading overwrites every variable (a missing one is an error), so skip random init.
        let model = Self::build(&vs.root(), &config, false);
        load::load_safetensors_dir(&mut vs, dir)?;
        if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(Error::InvalidArgument(format!(
                "model dtype {kind:?} is not supported (f32, bf16, f16 are)"
            )));
        }
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        // `set_kind` swaps the data of the very tensors the model holds, so its handles stay valid.
        Ok((model, vs))
    }

    /// Final hidden states `(batch, t, hidden)` for `input_ids` `(batch, t)`.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, t) = check_input(&self.config, input_ids, cache)?;
        let ctx = pass_context_windowed(
            &self.rotary,
            self.embed_tokens.kind(),
            self.device,
            t,
            cache,
            mask,
            self.config.sliding_window,
        );
        let mut xs = self.embed(input_ids);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, i, Some(&mut *cache), &ctx);
        }
        cache.commit(t as usize);
        Ok(self.norm.forward(&xs))
    }

    fn logits(&self, hidden: &Tensor) -> Tensor {
        let logits = dense_product(
            hidden,
            self.lm_head.as_ref().unwrap_or(&self.embed_tokens),
            None,
        );
        match self.config.final_logit_softcapping {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }
}

/// `(batch, t)` of `input_ids` after checking them against the cache and the model's context.
pub(crate) fn check_input(
    config: &Config,
    input_ids: &Tensor,
    cache: &KvCache,
) -> Result<(i64, i64)> {
    let (b, t) = input_ids.size2()?;
    if b as usize != cache.batch() {
        return Err(Error::InvalidArgument(format!(
            "input batch {b} differs from the cache's {}",
            cache.batch()
        )));
    }
    let total = cache.len() + t as usize;
    if total > config.max_position_embeddings {
        return Err(Error::InvalidArgument(format!(
            "{total} positions exceed the model's context of {}",
            config.max_position_embeddings
        )));
    }
    Ok((b, t))
}

/// Rotary tables and attention mask for `t` new tokens after what `cache` holds, with padding
/// mask `mask`; advances the cache's positions (the layers then append their keys and values).
pub(crate) fn pass_context(
    rotary: &RotaryEmbedding,
    kind: Kind,
    device: Device,
    t: i64,
    cache: &mut KvCache,
    mask: Option<&Tensor>,
) -> AttentionContext {
    pass_context_windowed(rotary, kind, device, t, cache, mask, None)
}

/// [`pass_context`] with the mask of sliding-window layers of width `window`: a query at cache
/// index `q` sees the keys at `q - window < k <= q` (transformers counts the window in cache
/// indices, so left padding takes room in it, as it does here).
pub(crate) fn pass_context_windowed(
    rotary: &RotaryEmbedding,
    kind: Kind,
    device: Device,
    t: i64,
    cache: &mut KvCache,
    mask: Option<&Tensor>,
    window: Option<usize>,
) -> AttentionContext {
    let b = cache.batch() as i64;
    let total = cache.len() + t as usize;
    let positions = cache.positions_for(t as usize, mask);
    let key_mask = cache.extend_key_mask(t as usize, mask);
    let (cos, sin) = rotary.at(&positions, kind);
    let past = cache.len() as i64;
    let q_pos = Tensor::arange_start(past, past + t, (Kind::Int64, device)).view([t, 1]);
    let k_pos = Tensor::arange(total as i64, (Kind::Int64, device)).view([1, total as i64]);
    let allowed = |window: Option<usize>| {
        let mut visible = k_pos.le_tensor(&q_pos);
        if let Some(w) = window {
            visible = visible.logical_and(&(&q_pos - &k_pos).lt(w as i64));
        }
        match &key_mask {
            // A padding query may attend to itself only, so that no row is fully masked.
            Some(km) => visible
                .unsqueeze(0)
                .logical_and(&km.unsqueeze(1))
                .logical_or(&k_pos.eq_tensor(&q_pos).unsqueeze(0)),
            None => visible.unsqueeze(0).expand([b, t, total as i64], false),
        }
        .unsqueeze(1)
    };
    let (full_mask, causal) = match key_mask {
        None if past == 0 => (None, t > 1),
        None if t == 1 => (None, false),
        _ => (Some(allowed(None)), false),
    };
    // The window hides something only when some query is further than it from the first key.
    let sliding_mask = window.filter(|&w| total > w).map(|w| allowed(Some(w)));
    AttentionContext {
        cos,
        sin,
        mask: full_mask,
        causal,
        sliding_mask,
        train: false,
    }
}

trait EmbeddingIds {
    fn embedding_ids(&self, ids: &Tensor) -> Tensor;
}

impl EmbeddingIds for Tensor {
    fn embedding_ids(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(self, ids, -1, false, false)
    }
}

impl CausalLm for Llama {
    fn config(&self) -> &Config {
        &self.config
    }

    fn device(&self) -> Device {
        self.device
    }

    fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.num_layers, batch, self.device)
    }

    fn logits_at(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        positions: Positions,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, cache, mask)?;
        Ok(self.logits(&positions.select(&hidden)))
    }
}

/// The per-pass inputs every decoder layer of a cache-free (training) forward needs: rotary
/// tables for positions `0..t` and the causal flag. Built by [`LayeredLm::layer_context`].
#[derive(Debug)]
pub struct LayerContext(AttentionContext);

impl std::fmt::Debug for AttentionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionContext")
            .field("causal", &self.causal)
            .field("train", &self.train)
            .finish_non_exhaustive()
    }
}

impl Llama {
    /// Grows the vocabulary by `n` rows for tokens just added to the tokenizer (e.g. by
    /// `aligner_data::tokenize::add_missing_special_tokens`). Each new row of the embedding (and
    /// of an untied LM head) is the mean of the existing rows. The variables keep their names,
    /// so the owning `VarStore` saves and exports the larger tensors.
    pub fn add_token_rows(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let grow = |weight: &mut Tensor| -> Result<()> {
            let mean = weight.f_mean_dim(0, true, weight.kind())?;
            let rows = mean.f_expand([n as i64, weight.size()[1]], false)?;
            let grown = Tensor::f_cat(&[weight.detach(), rows], 0)?;
            tch::no_grad(|| weight.set_data(&grown));
            Ok(())
        };
        grow(&mut self.embed_tokens)?;
        if let Some(head) = &mut self.lm_head {
            grow(head)?;
        }
        self.config.vocab_size += n;
        Ok(())
    }

    /// Every linear layer with its module path (`model.layers.0.self_attn.q_proj`).
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let attn = &mut layer.self_attn;
            let mlp = &mut layer.mlp;
            for (name, lin) in [
                ("self_attn.q_proj", &mut attn.q_proj),
                ("self_attn.k_proj", &mut attn.k_proj),
                ("self_attn.v_proj", &mut attn.v_proj),
                ("self_attn.o_proj", &mut attn.o_proj),
                ("mlp.gate_proj", &mut mlp.gate_proj),
                ("mlp.up_proj", &mut mlp.up_proj),
                ("mlp.down_proj", &mut mlp.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }

    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (attn, mlp) = (&layer.self_attn, &layer.mlp);
            for (name, lin) in [
                ("self_attn.q_proj", &attn.q_proj),
                ("self_attn.k_proj", &attn.k_proj),
                ("self_attn.v_proj", &attn.v_proj),
                ("self_attn.o_proj", &attn.o_proj),
                ("mlp.gate_proj", &mlp.gate_proj),
                ("mlp.up_proj", &mlp.up_proj),
                ("mlp.down_proj", &mlp.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), lin));
            }
        }
        out
    }
}

impl LayeredLm for Llama {
    type Context = LayerContext;

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    fn embed(&self, input_ids: &Tensor) -> Tensor {
        let xs = self.embed_tokens.embedding_ids(input_ids);
        if self.config.family.is_gemma() {
            // transformers multiplies by `sqrt(hidden_size)` cast to the embedding's dtype.
            let scale = Tensor::from((self.config.hidden_size as f64).sqrt())
                .to_kind(self.embed_tokens.kind())
                .to_device(self.device);
            xs * scale
        } else {
            xs
        }
    }

    fn layer_context(&self, seq_len: usize, train: bool) -> Result<LayerContext> {
        if seq_len == 0 || seq_len > self.config.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "sequence length {seq_len} is outside 1..={}",
                self.config.max_position_embeddings
            )));
        }
        let positions = Tensor::arange(seq_len as i64, (Kind::Int64, self.device)).unsqueeze(0);
        let (cos, sin) = self.rotary.at(&positions, self.embed_tokens.kind());
        let sliding_mask = self
            .config
            .sliding_window
            .filter(|&w| seq_len > w)
            .map(|w| {
                let pos = Tensor::arange(seq_len as i64, (Kind::Int64, self.device));
                let distance = pos.view([-1, 1]) - pos.view([1, -1]);
                distance.ge(0).logical_and(&distance.lt(w as i64)).view([
                    1,
                    1,
                    seq_len as i64,
                    seq_len as i64,
                ])
            });
        Ok(LayerContext(AttentionContext {
            cos,
            sin,
            mask: None,
            causal: seq_len > 1,
            sliding_mask,
            train,
        }))
    }

    fn packed_layer_context(
        &self,
        position_ids: &Tensor,
        sequence_ids: &Tensor,
        train: bool,
    ) -> Result<LayerContext> {
        let (b, t) = position_ids.size2()?;
        if sequence_ids.size() != [b, t] || t == 0 {
            return Err(Error::InvalidArgument(format!(
                "packed rows: position ids {:?} and sequence ids {:?} must both be (batch, t > 0)",
                position_ids.size(),
                sequence_ids.size()
            )));
        }
        let positions = position_ids.to_kind(Kind::Int64).to_device(self.device);
        let (lowest, highest) = (
            positions.min().int64_value(&[]),
            positions.max().int64_value(&[]),
        );
        if lowest < 0 || highest >= self.config.max_position_embeddings as i64 {
            return Err(Error::InvalidArgument(format!(
                "packed rows: positions {lowest}..={highest} are outside 0..{}",
                self.config.max_position_embeddings
            )));
        }
        let (cos, sin) = self.rotary.at(&positions, self.embed_tokens.kind());
        let seq = sequence_ids.to_kind(Kind::Int64).to_device(self.device);
        let index = Tensor::arange(t, (Kind::Int64, self.device));
        let (q, k) = (index.view([t, 1]), index.view([1, t]));
        // `[row, query, key]`: same sequence, a real key, not after the query; a padding query
        // sees itself only, so that no row of the mask is empty.
        let allowed = seq
            .unsqueeze(2)
            .eq_tensor(&seq.unsqueeze(1))
            .logical_and(&seq.ge(0).unsqueeze(1))
            .logical_and(&k.le_tensor(&q).unsqueeze(0))
            .logical_or(&k.eq_tensor(&q).unsqueeze(0));
        // Within a sequence index distance is position distance, so a window counts alike.
        let sliding_mask = self
            .config
            .sliding_window
            .filter(|&w| t as usize > w)
            .map(|w| {
                allowed
                    .logical_and(&(&q - &k).lt(w as i64).unsqueeze(0))
                    .unsqueeze(1)
            });
        Ok(LayerContext(AttentionContext {
            cos,
            sin,
            mask: Some(allowed.unsqueeze(1)),
            causal: false,
            sliding_mask,
            train,
        }))
    }

    fn layer_forward(&self, layer: usize, xs: &Tensor, ctx: &LayerContext) -> Tensor {
        self.layers[layer].forward(xs, layer, None, &ctx.0)
    }

    fn final_norm(&self, xs: &Tensor) -> Tensor {
        self.norm.forward(xs)
    }

    fn lm_head(&self, hidden: &Tensor) -> Tensor {
        self.logits(hidden)
    }

    fn lm_head_weight(&self) -> Option<Tensor> {
        // Soft-capped logits are not a plain product: trainers keep autograd then.
        if self.config.final_logit_softcapping.is_some() {
            return None;
        }
        Some(
            self.lm_head
                .as_ref()
                .unwrap_or(&self.embed_tokens)
                .shallow_clone(),
        )
    }

    fn add_lora(&mut self, vs: &nn::Path<'_>, spec: &LoraSpec) -> Result<Vec<String>> {
        spec.validate()?;
        let mut added = Vec::new();
        for (path, lin) in self.linears_mut() {
            let short = path.rsplit('.').next().unwrap_or_default();
            if !spec.target_modules.iter().any(|t| t == short) {
                continue;
            }
            if lin.lora.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{path} already has a LoRA adapter"
                )));
            }
            let mut sub = vs.clone();
            for part in path.split('.') {
                sub = &sub / part;
            }
            lin.add_lora(sub, spec);
            added.push(path);
        }
        if added.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no LoRA target module among {:?} (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)",
                spec.target_modules
            )));
        }
        Ok(added)
    }

    fn lora_weights(&self) -> Vec<LoraWeights> {
        self.linears()
            .into_iter()
            .filter_map(|(module, lin)| {
                lin.lora.as_ref().map(|l| LoraWeights {
                    module,
                    a: l.a.shallow_clone(),
                    b: l.b.shallow_clone(),
                    scale: l.scale,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed `(rows, cols)` tensor of values in [-1, 1] (no global generator: tests share it).
    fn values(shape: &[i64], phase: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase)
            .sin()
            .view(shape)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// The largest difference relative to the largest magnitude of `b`: products summed in
    /// another order (MKL's AVX2 and AVX-512 kernels, a transposed operand) differ by a few
    /// ulps of the result's scale, whatever that scale.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        max_diff(a, b) / b.abs().max().double_value(&[]).max(1.0)
    }

    #[test]
    fn the_weight_first_product_is_the_linear_product() {
        let _guard = tch::no_grad_guard();
        let (w1, w2) = (values(&[40, 48], 0.1), values(&[24, 40], 0.7));
        let bias = values(&[40], 1.3);
        for shape in [[1, 2, 48], [1, 17, 48], [2, 64, 48]] {
            let xs = values(&shape, 2.9);
            for b in [None, Some(&bias)] {
                let first = weight_first_product(&xs, &w1, b);
                let plain = xs.linear(&w1, b);
                assert_eq!(first.size(), plain.size());
                let diff = rel_diff(&first, &plain);
                assert!(diff < 2e-6, "{shape:?}, bias {}: {diff}", b.is_some());
                // The transposed view feeds the next product as a contiguous tensor would.
                let next = weight_first_product(&first, &w2, None);
                let plain_next = plain.linear::<Tensor>(&w2, None);
                let diff = rel_diff(&next, &plain_next);
                assert!(diff < 2e-6, "{shape:?}: {diff}");
            }
            // Whichever order this CPU gets, the dense product is the linear one.
            let diff = rel_diff(
                &dense_product(&xs, &w1, Some(&bias)),
                &xs.linear(&w1, Some(&bias)),
            );
            assert!(diff < 2e-6, "{shape:?}: {diff}");
        }
    }

    #[test]
    fn single_rows_and_half_precision_keep_the_plain_product() {
        let w = values(&[40, 48], 0.1);
        assert!(!weight_first(&w, 1));
        let tuning = crate::cpu::tuning();
        assert!(!weight_first(&w, tuning.weight_first_max_rows + 1));
        assert!(!weight_first(&w.to_kind(Kind::BFloat16), 16));
        assert_eq!(
            weight_first(&w, 16),
            crate::cpu::path() < crate::cpu::CpuPath::Avx512
        );
    }
}
