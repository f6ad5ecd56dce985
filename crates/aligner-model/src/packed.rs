//! An inference-only form of [`Llama`] built for fast decoding on the CPU.
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

use std::path::Path;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::cache::KvCache;
use crate::causal_lm::{check_decode_step, decode_each};
use crate::config::Config;
use crate::decode;
use crate::llama::{Linear, RmsNorm, RotaryEmbedding, check_input, dense_product, pass_context};
use crate::qmatmul::{Activations, Q4Matrix, Q8Matrix, QuantError};
use crate::{CausalLm, Error, Llama, Result};

/// How a [`PackedLlama`] stores its projection and LM-head weights for decoding.
///
/// The quantised formats run decoding steps of at most [`QUANT_MAX_ROWS`] rows and short passes
/// (a few new tokens of a prompt or a draft) through the block kernels of [`crate::qmatmul`],
/// and longer passes (prompts, long verifications) through a dense copy of the same weights in
/// the activation dtype, where a dense matrix product is faster than re-reading quantised blocks
/// once per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// The activation dtype only (projections fused, nothing quantised).
    #[default]
    Dense,
    /// Q8_0 blocks (8-bit codes, one scale per 32 inputs) everywhere.
    Int8,
    /// Q4_1 blocks (4-bit codes, a scale and a minimum per 32 inputs) for the decoder layers and
    /// Q8_0 for the LM head: the layout of the embedded default model's GGUF file, which this
    /// reproduces code for code.
    Int4,
}

pub use crate::cpu::QUANT_MAX_ROWS;

/// Longest pass of several tokens on the block kernels: see
/// [`Tuning::short_pass_rows`](crate::cpu::Tuning::short_pass_rows). A decoding step of many
/// sequences is not affected: each sequence has its own cache, so the dense path would take them
/// one at a time, which the blocks beat up to [`QUANT_MAX_ROWS`].
fn short_pass_rows() -> i64 {
    crate::cpu::tuning().short_pass_rows
}

impl FromStr for WeightFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dense" | "none" => Ok(Self::Dense),
            "int8" | "q8" | "q8_0" => Ok(Self::Int8),
            "int4" | "q4" | "q4_1" => Ok(Self::Int4),
            other => Err(Error::InvalidArgument(format!(
                "unknown weight format `{other}` (dense, int8, int4)"
            ))),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Dense => "dense",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        })
    }
}

/// Block-quantised weights of one matrix.
#[derive(Debug)]
enum Blocks {
    Q4(Q4Matrix),
    Q8(Q8Matrix),
}

/// One packed weight matrix `(out, in)` and its bias; `forward` maps `(.., in)` to `(.., out)`.
#[derive(Debug)]
struct Proj {
    /// In the activation dtype; used for passes longer than [`QUANT_MAX_ROWS`] (and all of them
    /// when `blocks` is `None`).
    dense: Tensor,
    bias: Option<Tensor>,
    /// The bias in f32 on the host, for the block kernels.
    bias_host: Option<Vec<f32>>,
    blocks: Option<Blocks>,
    /// Longest pass on `blocks`; longer ones use `dense`.
    max_quant_rows: i64,
}

impl Proj {
    /// Packs `weight` `(out, in)` as `blocks` (`None`, Q4 or Q8) for activations of `kind`.
    /// Quantisation is computed from the weights in f32. `name` goes into errors.
    fn pack(
        name: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        blocks: WeightFormat,
        kind: Kind,
    ) -> Result<Self> {
        let (rows, cols) = weight.size2()?;
        let bias = bias.map(|b| b.to_kind(kind));
        let w32 = weight.detach().to_kind(Kind::Float).contiguous();
        let quantised = match blocks {
            WeightFormat::Dense => None,
            format => {
                if weight.device() != Device::Cpu {
                    return Err(Error::InvalidArgument(format!(
                        "{name}: quantised weights run on the CPU only, the model is on {:?}",
                        weight.device()
                    )));
                }
                let values = Vec::<f32>::try_from(w32.view([-1]))?;
                let (rows, cols) = (rows as usize, cols as usize);
                let err = |e: QuantError| {
                    Error::InvalidArgument(format!("{name}: cannot quantise as {format}: {e}"))
                };
                Some(if format == WeightFormat::Int4 {
                    Blocks::Q4(Q4Matrix::from_f32(&values, rows, cols).map_err(err)?)
                } else {
                    Blocks::Q8(Q8Matrix::from_f32(&values, rows, cols).map_err(err)?)
                })
            }
        };
        let bias_host = match &bias {
            Some(b) => Some(Vec::<f32>::try_from(
                b.to_kind(Kind::Float).to_device(Device::Cpu),
            )?),
            None => None,
        };
        Ok(Self {
            dense: w32.to_kind(kind),
            bias,
            bias_host,
            blocks: quantised,
            max_quant_rows: QUANT_MAX_ROWS,
        })
    }

    /// Output width.
    fn out_dim(&self) -> usize {
        self.dense.size()[0] as usize
    }

    /// `x` (`rows` rows, row-major, f32) times the block matrix, plus the bias: `(rows, out)`
    /// row-major. Only for packs with blocks.
    fn matmul_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let err = |e: QuantError| Error::InvalidArgument(e.to_string());
        let n = self.out_dim();
        let xq = Activations::quantize(x, x.len() / rows.max(1)).map_err(err)?;
        let mut t = vec![0f32; n * rows];
        match &self.blocks {
            Some(Blocks::Q4(m)) => m.matmul_t(&xq, &mut t),
            Some(Blocks::Q8(m)) => m.matmul_t(&xq, &mut t),
            None => {
                return Err(Error::InvalidArgument(
                    "a dense projection has no block kernel".into(),
                ));
            }
        }
        .map_err(err)?;
        // `(out, rows)` to `(rows, out)`.
        let mut out = if rows == 1 {
            t
        } else {
            let mut out = vec![0f32; n * rows];
            for (j, col) in t.chunks_exact(rows).enumerate() {
                for (i, &v) in col.iter().enumerate() {
                    out[i * n + j] = v;
                }
            }
            out
        };
        if let Some(b) = &self.bias_host {
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        }
        Ok(out)
    }

    /// Whether a pass of `rows` rows runs on the block kernels.
    fn uses_blocks(&self, rows: i64) -> bool {
        self.blocks.is_some() && rows <= self.max_quant_rows
    }

    /// `blocks`: whether the pass may run on the block kernels (it does if it is short enough
    /// for this matrix too).
    fn forward(&self, xs: &Tensor, blocks: bool) -> Result<Tensor> {
        let in_dim = self.dense.size()[1];
        let rows = xs.numel() as i64 / in_dim.max(1);
        if !(blocks && self.uses_blocks(rows)) {
            return Ok(dense_product(xs, &self.dense, self.bias.as_ref()));
        }
        let mut shape = xs.size();
        shape.pop();
        shape.push(self.out_dim() as i64);
        let x = Vec::<f32>::try_from(xs.to_kind(Kind::Float).reshape([-1]))?;
        let ys = self.matmul_rows(&x, rows as usize)?;
        Ok(Tensor::from_slice(&ys)
            .view(shape.as_slice())
            .to_kind(xs.kind()))
    }

    /// Bytes of weight data a quantised-kernel pass reads (the dense copy where there are no
    /// blocks).
    fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        self.bias.as_ref().map_or(0, size)
            + match &self.blocks {
                None => size(&self.dense),
                Some(Blocks::Q4(m)) => m.bytes(),
                Some(Blocks::Q8(m)) => m.bytes(),
            }
    }
}

/// Concatenates the weights (and biases) of `linears` along the output dimension and packs them.
fn pack_fused(name: &str, linears: &[&Linear], format: WeightFormat, kind: Kind) -> Result<Proj> {
    if linears.iter().any(|l| l.lora.is_some()) {
        return Err(Error::InvalidArgument(format!(
            "{name}: has a LoRA adapter; merge it (adapter::load_adapted) before packing"
        )));
    }
    let weights: Vec<&Tensor> = linears.iter().map(|l| &l.weight).collect();
    let weight = Tensor::f_cat(&weights, 0)?;
    // A part without bias gets zeros where another part has one.
    let bias = if linears.iter().any(|l| l.bias.is_some()) {
        let biases = linears
            .iter()
            .map(|l| match &l.bias {
                Some(b) => b.to_kind(Kind::Float),
                None => Tensor::zeros([l.weight.size()[0]], (Kind::Float, l.weight.device())),
            })
            .collect::<Vec<_>>();
        Some(Tensor::f_cat(&biases, 0)?)
    } else {
        None
    };
    Proj::pack(name, &weight, bias.as_ref(), format, kind)
}

#[derive(Debug)]
struct Norm {
    weight: Tensor,
    /// The weight in f32 on the host, for the host decoding step.
    host: Vec<f32>,
    eps: f64,
}

impl Norm {
    fn from(norm: &RmsNorm, kind: Kind) -> Result<Self> {
        let weight = norm.weight.detach();
        Ok(Self {
            host: Vec::<f32>::try_from(weight.to_kind(Kind::Float).to_device(Device::Cpu))?,
            weight: weight.to_kind(kind),
            eps: norm.eps,
        })
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        xs.rms_norm([width], Some(&self.weight), Some(self.eps))
    }
}

#[derive(Debug)]
struct Layer {
    input_norm: Norm,
    qkv: Proj,
    o: Proj,
    post_norm: Norm,
    gate_up: Proj,
    down: Proj,
}

/// The inference-only packed form of a [`Llama`]; implements [`CausalLm`], so generation, the
/// stream loop and evaluation run on it unchanged. Its KV caches hold keys in the same layout
/// as [`Llama`]'s, but a cache belongs to the model that filled it.
#[derive(Debug)]
pub struct PackedLlama {
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Norm,
    lm_head: Proj,
    rotary: RotaryEmbedding,
    /// `(head_dim,)`: -1 on the first half, 1 on the second (`rotate_half`'s signs).
    rope_sign: Tensor,
    config: Config,
    device: Device,
    kind: Kind,
    format: WeightFormat,
}

// SAFETY: a `PackedLlama` is built once (`from_model`) and never changed afterwards: no method
// reachable through `&PackedLlama` writes to its tensors, in place or otherwise, none hands out
// a handle to one (its fields are private; keep it so), and the state a forward pass changes
// (the KV cache) is passed in by `&mut`. LibTorch allows concurrent reads
// of a tensor from several threads (reference counts are atomic; reading takes no lock), and
// the block matrices are plain `Vec`s. `Tensor` is `!Sync` in tch only because tch cannot know
// that its tensors are read-only; here they are. This lets an upstream and an aligner decode at
// the same time on different threads (`aligner-stream`'s overlapped loop).
unsafe impl Sync for PackedLlama {}

impl PackedLlama {
    /// Packs `model` for activations of `kind` (f32, bf16 or f16; the host decoding step needs
    /// f32). Quantisation is computed from the model's weights in f32: pack a model loaded in
    /// f32 for the most faithful codes, then drop it. The packed model keeps its own copies of
    /// the weights (quantised formats keep a dense copy for long passes as well, about 1.2
    /// times the f32 model's memory for int4).
    pub fn from_model(model: &Llama, kind: Kind, format: WeightFormat) -> Result<Self> {
        if let Some(reason) = Self::unsupported(&model.config) {
            return Err(Error::InvalidArgument(format!(
                "the packed CPU model does not implement {reason}: use the dense model (no weight format)"
            )));
        }
        if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(Error::InvalidArgument(format!(
                "packed dtype {kind:?} is not supported (f32, bf16, f16 are)"
            )));
        }
        let _guard = tch::no_grad_guard();
        let c = &model.config;
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (a, m) = (&l.self_attn, &l.mlp);
                let name = |s: &str| format!("model.layers.{i}.{s}");
                Ok(Layer {
                    input_norm: Norm::from(&l.input_layernorm, kind)?,
                    qkv: pack_fused(
                        &name("self_attn.qkv_proj"),
                        &[&a.q_proj, &a.k_proj, &a.v_proj],
                        format,
                        kind,
                    )?,
                    o: pack_fused(&name("self_attn.o_proj"), &[&a.o_proj], format, kind)?,
                    post_norm: Norm::from(&l.post_attention_layernorm, kind)?,
                    gate_up: pack_fused(
                        &name("mlp.gate_up_proj"),
                        &[&m.gate_proj, &m.up_proj],
                        format,
                        kind,
                    )?,
                    down: pack_fused(&name("mlp.down_proj"), &[&m.down_proj], format, kind)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = model.lm_head.as_ref().unwrap_or(&model.embed_tokens);
        let head_format = match format {
            WeightFormat::Int4 => WeightFormat::Int8,
            other => other,
        };
        let lm_head = Proj {
            max_quant_rows: crate::cpu::tuning().head_quant_max_rows,
            ..Proj::pack("lm_head", head, None, head_format, kind)?
        };
        Ok(Self {
            embed_tokens: model.embed_tokens.detach().to_kind(kind),
            layers,
            norm: Norm::from(&model.norm, kind)?,
            lm_head,
            rotary: model.rotary.shallow_clone(),
            rope_sign: {
                let hd = c.head_dim as i64;
                Tensor::cat(
                    &[
                        Tensor::full([hd / 2], -1.0, (kind, model.device)),
                        Tensor::ones([hd - hd / 2], (kind, model.device)),
                    ],
                    0,
                )
            },
            config: c.clone(),
            device: model.device,
            kind,
            format,
        })
    }

    /// What of `config` the packed form does not implement (Gemma's norms and activation,
    /// Gemma-2's soft-capping and feed-forward norms, sliding-window attention), or `None` when
    /// it can be packed. [`from_model`](Self::from_model) refuses such models and
    /// [`InferenceModel::load`] keeps them dense.
    pub fn unsupported(config: &Config) -> Option<String> {
        use crate::config::{Activation, Family};
        if config.family.is_gemma() {
            let (model_type, _) = config.family.hf_names();
            return Some(format!(
                "model_type {model_type} (its (1 + w) norms and scaled embeddings)"
            ));
        }
        if config.activation != Activation::Silu {
            return Some(format!("the {} activation", config.activation.hf_name()));
        }
        if config.attn_logit_softcapping.is_some() || config.final_logit_softcapping.is_some() {
            return Some("logit soft-capping".into());
        }
        if config.query_pre_attn_scalar.is_some() || config.family == Family::Gemma2 {
            return Some("query_pre_attn_scalar".into());
        }
        // A window as wide as the context hides nothing.
        if let Some(w) = config
            .sliding_window
            .filter(|&w| w < config.max_position_embeddings)
        {
            return Some(format!("sliding-window attention (window {w})"));
        }
        None
    }

    /// Loads a Hugging Face layout folder in f32, packs it for `kind` activations in `format`
    /// and frees the f32 weights.
    pub fn load(
        dir: impl AsRef<Path>,
        kind: Kind,
        device: Device,
        format: WeightFormat,
    ) -> Result<Self> {
        let (model, _vs) = Llama::load(dir, Kind::Float, device)?;
        Self::from_model(&model, kind, format)
    }

    /// The weight format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of weights read per decoding step (projections, LM head and norms; the embedding
    /// row lookup is not counted): what memory bandwidth bounds decoding by.
    pub fn weight_bytes_per_token(&self) -> usize {
        let norm = |n: &Norm| n.weight.numel() * n.weight.kind().elt_size_in_bytes();
        self.layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.o.bytes()
                    + l.gate_up.bytes()
                    + l.down.bytes()
                    + norm(&l.input_norm)
                    + norm(&l.post_norm)
            })
            .sum::<usize>()
            + self.lm_head.bytes()
            + norm(&self.norm)
    }

    /// One decoder layer through LibTorch.
    fn layer_forward(
        &self,
        layer: &Layer,
        index: usize,
        xs: &Tensor,
        cache: &mut KvCache,
        pass: &LayerPass<'_>,
    ) -> Result<Tensor> {
        let LayerPass { ctx, rope, blocks } = *pass;
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads as i64, c.num_kv_heads as i64, c.head_dim as i64);
        let (b, t, _) = xs.size3().unwrap_or((0, 0, 0));
        let qkv = layer
            .qkv
            .forward(&layer.input_norm.forward(xs), blocks)?
            .view([b, t, nh + 2 * nkv, hd]);
        // Queries and keys get their rotation in one pass: `x cos + roll(x, half) sin±`.
        let qk = qkv.narrow(2, 0, nh + nkv);
        let (cos, sin) = rope;
        let qk = (&qk * cos).addcmul(&qk.roll([hd / 2], [-1]), sin);
        let q = qk.narrow(2, 0, nh).transpose(1, 2);
        let k = qk.narrow(2, nh, nkv).transpose(1, 2);
        let v = qkv.narrow(2, nh + nkv, nkv).transpose(1, 2);
        let (k, v) = cache.append(index, k, v);
        let y = if t == 1 && ctx.mask.is_none() {
            // One query per row and no mask: the `nh / nkv` query heads sharing a key/value
            // head are `nh / nkv` queries of that head, attended in one product.
            Tensor::scaled_dot_product_attention(
                &q.reshape([b, nkv, nh / nkv, hd]),
                &k,
                &v,
                None::<&Tensor>,
                0.0,
                false,
                None,
                false,
            )
            .reshape([b, 1, nh * hd])
        } else {
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                ctx.mask.as_ref(),
                0.0,
                ctx.causal,
                None,
                nh != nkv,
            )
            .transpose(1, 2)
            .reshape([b, t, nh * hd])
        };
        let h = xs + layer.o.forward(&y, blocks)?;
        let gate_up = layer
            .gate_up
            .forward(&layer.post_norm.forward(&h), blocks)?;
        let inter = c.intermediate_size as i64;
        let act = gate_up.narrow(-1, 0, inter).silu() * gate_up.narrow(-1, inter, inter);
        Ok(h + layer.down.forward(&act, blocks)?)
    }

    /// A pass of `t` tokens per row computed on the host in f32 with the block kernels, reading
    /// and writing the caches' buffers in place: a few LibTorch calls per pass instead of a few
    /// dozen per layer. The rows are those of every cache in turn (`ids` holds each row's `t`
    /// tokens in order), each attending over its own cache, while the projections run on all
    /// rows' tokens together. With `t > 1` (one sequence's prompt or draft) the caches must
    /// have no padding mask: token `j` sees the cache and tokens `0..=j`. Each token's result
    /// is bit for bit that of feeding the tokens one at a time: the projections give a row the
    /// same bits alone or in a tile, and everything else is computed per token. Returns the
    /// normed hidden states `(rows * t, hidden)`.
    fn host_step(&self, ids: &[i64], t: usize, caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (width, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let host = |t: &Tensor| Vec::<f32>::try_from(t.to_kind(Kind::Float).reshape([-1]));
        // Per cache: rows, cached length, rotary tables and (with padding) visible positions.
        let mut seqs = Vec::with_capacity(caches.len());
        for cache in caches.iter_mut() {
            let (b, len) = (cache.batch(), cache.len());
            let total = len + t;
            let ctx = pass_context(&self.rotary, self.kind, self.device, t as i64, cache, None);
            let allowed = match cache.key_mask() {
                Some(_) if t > 1 => {
                    return Err(Error::InvalidArgument(
                        "a host pass of several tokens takes caches without padding".into(),
                    ));
                }
                Some(m) => {
                    let mut a = Vec::<bool>::try_from(m.reshape([-1]))?;
                    // A row's new token always sees itself, as on the LibTorch path.
                    a.chunks_exact_mut(total).for_each(|r| r[len] = true);
                    Some(a)
                }
                None => None,
            };
            seqs.push((b, len, host(&ctx.cos)?, host(&ctx.sin)?, allowed));
        }
        let rows = seqs.iter().map(|s| s.0).sum::<usize>() * t;
        let ids = Tensor::from_slice(ids).to_device(self.device);
        let mut x = host(&Tensor::embedding(
            &self.embed_tokens,
            &ids,
            -1,
            false,
            false,
        ))?;
        let mut h = vec![0f32; rows * width];
        let stride = (nh + 2 * nkv) * hd;
        for (i, layer) in self.layers.iter().enumerate() {
            decode::rms_norm(&x, &layer.input_norm.host, eps, &mut h);
            let mut qkv = layer.qkv.matmul_rows(&h, rows)?;
            let mut attn = Vec::with_capacity(rows * nh * hd);
            let mut qkv_rows = qkv.chunks_exact_mut(stride);
            for (cache, (b, len, cos, sin, allowed)) in caches.iter_mut().zip(&seqs) {
                let (b, len) = (*b, *len);
                let total = len + t;
                let (kb, vb) =
                    cache.reserve(i, total, &[b as i64, nkv as i64, 0, hd as i64], Kind::Float);
                let cap = kb.size()[2] as usize;
                // SAFETY: `reserve` returns contiguous f32 CPU buffers of `b * nkv * cap * hd`
                // values, owned by `cache`, which this function borrows mutably: nothing else
                // reads or writes them meanwhile, and the slices die before the buffers can.
                let (keys, values) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(kb.data_ptr().cast::<f32>(), kb.numel()),
                        std::slice::from_raw_parts_mut(vb.data_ptr().cast::<f32>(), vb.numel()),
                    )
                };
                for r in 0..b {
                    // Rotate and cache the row's new keys and values first: token `j` attends
                    // to those of tokens `0..=j`.
                    let mut tokens: Vec<&mut [f32]> = (&mut qkv_rows).take(t).collect();
                    for (j, this) in tokens.iter_mut().enumerate() {
                        let at = (r * t + j) * hd;
                        decode::rope(
                            &mut this[..(nh + nkv) * hd],
                            &cos[at..at + hd],
                            &sin[at..at + hd],
                        );
                        for g in 0..nkv {
                            let at = ((r * nkv + g) * cap + len + j) * hd;
                            keys[at..at + hd]
                                .copy_from_slice(&this[(nh + g) * hd..(nh + g + 1) * hd]);
                            values[at..at + hd].copy_from_slice(
                                &this[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd],
                            );
                        }
                    }
                    let span = r * nkv * cap * hd..(r + 1) * nkv * cap * hd;
                    let kv = decode::KvRow {
                        keys: &keys[span.clone()],
                        values: &values[span],
                        capacity: cap,
                    };
                    let visible = allowed.as_ref().map(|a| &a[r * total..(r + 1) * total]);
                    for (j, this) in tokens.iter().enumerate() {
                        attn.extend(decode::attend(
                            &this[..nh * hd],
                            &kv,
                            len + j + 1,
                            visible,
                            nh,
                            nkv,
                            hd,
                        ));
                    }
                }
            }
            let o = layer.o.matmul_rows(&attn, rows)?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
            decode::rms_norm(&x, &layer.post_norm.host, eps, &mut h);
            let act = decode::swiglu(&layer.gate_up.matmul_rows(&h, rows)?, inter);
            let down = layer.down.matmul_rows(&act, rows)?;
            x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
        }
        caches.iter_mut().for_each(|cache| cache.commit(t));
        decode::rms_norm(&x, &self.norm.host, eps, &mut h);
        Ok(Tensor::from_slice(&h).view([rows as i64, width as i64]))
    }

    /// The logits at `positions` of a pass over `input_ids`. A pass short enough for the block
    /// kernels runs on rayon's workers ([`on_workers`]).
    fn logits(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        positions: Positions,
    ) -> Result<Tensor> {
        let rows = input_ids.numel() as i64;
        let mut run = move || {
            let _guard = tch::no_grad_guard();
            let (hidden, threads) = self.hidden_states(input_ids, cache, mask)?;
            let t = hidden.size()[1];
            let hidden = match positions {
                Positions::All => hidden,
                Positions::Last => hidden.select(1, t - 1),
                Positions::Tail(n) => {
                    let n = crate::causal_lm::tail_len(n, t);
                    hidden.narrow(1, t - n, n)
                }
            };
            self.head(&hidden, threads)
        };
        let (b, t) = input_ids.size2().unwrap_or((rows, 1));
        if self.host_eligible(1) && self.on_blocks(b, t) {
            on_workers(run)
        } else {
            run()
        }
    }

    /// The LM head on normed hidden states `(.., hidden)`. `threads` is the guard of the pass
    /// that made them, if it ran on the block kernels; a head pass on the kernels after a dense
    /// pass gets its own.
    fn head(&self, hidden: &Tensor, threads: Option<SerialTorch>) -> Result<Tensor> {
        let rows = hidden.numel() as i64 / self.config.hidden_size.max(1) as i64;
        let _threads = threads.or_else(|| self.lm_head.uses_blocks(rows).then(SerialTorch::new));
        // Contiguous for callers that read the logits as a plain buffer.
        Ok(self.lm_head.forward(hidden, true)?.contiguous())
    }

    /// Whether a pass of `b` rows of `t` tokens runs its decoder layers on the block kernels:
    /// a decoding step of at most [`QUANT_MAX_ROWS`] rows, or a pass of at most
    /// [`short_pass_rows`] tokens in all.
    fn on_blocks(&self, b: i64, t: i64) -> bool {
        if t == 1 {
            b <= QUANT_MAX_ROWS
        } else {
            b * t <= short_pass_rows()
        }
    }

    /// Whether a pass of `rows` tokens in all may run on [`Self::host_step`].
    fn host_eligible(&self, rows: usize) -> bool {
        rows as i64 <= QUANT_MAX_ROWS
            && self.device == Device::Cpu
            && self.kind == Kind::Float
            && self.format != WeightFormat::Dense
    }

    fn hidden_states(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Option<SerialTorch>)> {
        let (b, t) = check_input(&self.config, input_ids, cache)?;
        // Through the LM head as well: the guard lives until the caller's forward returns.
        let blocks = self.format != WeightFormat::Dense && self.on_blocks(b, t);
        let threads = blocks.then(SerialTorch::new);
        let host = blocks
            && self.host_eligible((b * t) as usize)
            && (t == 1 || (b == 1 && cache.key_mask().is_none()));
        if host && mask.is_none() {
            let ids = Vec::<i64>::try_from(input_ids.reshape([-1]))?;
            let hidden = self.host_step(&ids, t as usize, &mut [cache])?.view([
                b,
                t,
                self.config.hidden_size as i64,
            ]);
            return Ok((hidden, threads));
        }
        let ctx = pass_context(&self.rotary, self.kind, self.device, t, cache, mask);
        // `(b, 1, t, hd)` -> `(b, t, 1, hd)` to broadcast over the heads of `(b, t, heads, hd)`;
        // the sine's first half negated for `rotate_half`.
        let rope = (
            ctx.cos.transpose(1, 2),
            ctx.sin.transpose(1, 2) * &self.rope_sign,
        );
        let pass = LayerPass {
            ctx: &ctx,
            rope: &rope,
            blocks,
        };
        let mut xs = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = self.layer_forward(layer, i, &xs, cache, &pass)?;
        }
        cache.commit(t as usize);
        Ok((self.norm.forward(&xs), threads))
    }
}

/// What every layer of a LibTorch pass shares.
#[derive(Clone, Copy)]
struct LayerPass<'a> {
    ctx: &'a crate::llama::AttentionContext,
    /// Rotary tables `(b, t, 1, hd)`, the sine's first half negated.
    rope: &'a (Tensor, Tensor),
    /// Whether the projections may run on the block kernels ([`Proj::forward`]).
    blocks: bool,
}

/// Which positions' logits a pass returns.
#[derive(Debug, Clone, Copy)]
enum Positions {
    All,
    Last,
    /// The last `n` (clamped to `1..=t`).
    Tail(usize),
}

/// A value moved to another thread while the thread that owns it waits (see [`on_workers`]).
struct AssertSend<T>(T);

// SAFETY: only used by `on_workers`, whose caller blocks until the closure has returned, so
// the wrapped borrows are used by one thread at a time and never outlive the call.
unsafe impl<T> Send for AssertSend<T> {}

/// Runs `f` on one of rayon's worker threads and waits for it. The block kernels' parallel
/// loops inside then fork and join among the workers directly, instead of each loop (four per
/// layer) handing its work from this thread to the pool and putting this thread to sleep until
/// it is done. LibTorch calls in `f` run on the worker with one intra-op thread and without
/// gradients, as the caller's would.
fn on_workers<R: Send>(f: impl FnOnce() -> R) -> R {
    let f = AssertSend(f);
    rayon::scope(move |_| {
        let f = f;
        let _guard = tch::no_grad_guard();
        let _threads = SerialTorch::new();
        (f.0)()
    })
}

/// Runs LibTorch's own operations on one thread while alive. During a quantised pass the
/// block kernels use rayon's threads; LibTorch's OpenMP workers, which spin for a while after
/// each parallel region, would otherwise take the same cores from them (measured: 30 ms per
/// token instead of 21 on two cores).
///
/// LibTorch's thread count is partly per thread (OpenMP's) and partly process-wide (the value
/// new threads start with), so when two threads run models at once, one of them can start with
/// the single thread another one's guard set, for as long as it lives. That costs speed only.
struct SerialTorch(i32);

impl SerialTorch {
    fn new() -> Self {
        let threads = tch::get_num_threads();
        if threads != 1 {
            tch::set_num_threads(1);
        }
        Self(threads)
    }
}

impl Drop for SerialTorch {
    fn drop(&mut self) {
        if self.0 != 1 {
            tch::set_num_threads(self.0);
        }
    }
}

impl CausalLm for PackedLlama {
    fn config(&self) -> &Config {
        &self.config
    }

    fn device(&self) -> Device {
        self.device
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.config.num_layers, batch, self.device)
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits(input_ids, cache, mask, Positions::All)
    }

    fn forward_last(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits(input_ids, cache, mask, Positions::Last)
    }

    fn forward_tail(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        n: usize,
    ) -> Result<Tensor> {
        self.logits(input_ids, cache, mask, Positions::Tail(n))
    }

    /// Runs all the sequences' rows through the host step together (in groups of at most
    /// [`QUANT_MAX_ROWS`]), so each weight is read once per group instead of once per sequence.
    fn decode_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        check_decode_step(tokens, caches)?;
        if !self.host_eligible(1) {
            return decode_each(self, tokens, caches);
        }
        for cache in caches.iter() {
            if cache.len() + 1 > self.config.max_position_embeddings {
                return Err(Error::InvalidArgument(format!(
                    "{} positions exceed the model's context of {}",
                    cache.len() + 1,
                    self.config.max_position_embeddings
                )));
            }
        }
        let group = QUANT_MAX_ROWS as usize;
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let logits = on_workers(|| {
            ids.chunks(group)
                .zip(caches.chunks_mut(group))
                .map(|(ids, caches)| self.lm_head.forward(&self.host_step(ids, 1, caches)?, true))
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Tensor::f_cat(&logits, 0)?)
    }
}

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
        match format {
            None => {
                let (model, vs, tokenizer) = crate::adapter::load_any(dir, kind, device)?;
                Ok((Self::Llama(LoadedLlama { model, store: vs }), tokenizer))
            }
            Some(format) => {
                let (model, mut vs, tokenizer) =
                    crate::adapter::load_any(dir, Kind::Float, device)?;
                if PackedLlama::unsupported(&model.config).is_some() {
                    if kind != Kind::Float {
                        vs.set_kind(kind);
                    }
                    return Ok((Self::Llama(LoadedLlama { model, store: vs }), tokenizer));
                }
                Ok((
                    Self::Packed(PackedLlama::from_model(&model, kind, format)?),
                    tokenizer,
                ))
            }
        }
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

    fn forward(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.inner().forward(input_ids, cache, mask)
    }

    fn forward_last(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.inner().forward_last(input_ids, cache, mask)
    }

    fn forward_tail(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        n: usize,
    ) -> Result<Tensor> {
        self.inner().forward_tail(input_ids, cache, mask, n)
    }

    fn decode_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        self.inner().decode_step(tokens, caches)
    }
}
