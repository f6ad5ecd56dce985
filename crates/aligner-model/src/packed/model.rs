//! [`PackedLlama`]: packing a [`Llama`], the LibTorch pass, which path a pass takes, and
//! [`CausalLm`].

use std::path::Path;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::QUANT_MAX_ROWS;
use super::gguf_blocks::GgufBlocks;
use super::threads::{SerialTorch, on_workers};
use super::weights::{Layer, Norm, Proj, WeightFormat, own_parts, pack_fused};
use crate::cache::KvCache;
use crate::causal_lm::{check_decode_step, decode_each};
use crate::config::Config;
use crate::cuda::Kernels;
use crate::llama::{RotaryEmbedding, check_input, pass_context};
use crate::{CausalLm, Error, Llama, Positions, Result};

/// Longest pass of several tokens on the block kernels: see
/// [`Tuning::short_pass_rows`](crate::cpu::Tuning::short_pass_rows). A decoding step of many
/// sequences is not affected: each sequence has its own cache, so the dense path would take them
/// one at a time, which the blocks beat up to [`QUANT_MAX_ROWS`].
fn short_pass_rows() -> i64 {
    crate::cpu::tuning().short_pass_rows
}
/// The inference-only packed form of a [`Llama`]; implements [`CausalLm`], so generation, the
/// stream loop and evaluation run on it unchanged. Its KV caches hold keys in the same layout
/// as [`Llama`]'s, but a cache belongs to the model that filled it.
#[derive(Debug)]
pub struct PackedLlama {
    pub(super) embed_tokens: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Norm,
    pub(super) lm_head: Proj,
    pub(super) rotary: RotaryEmbedding,
    /// `(head_dim,)`: -1 on the first half, 1 on the second (`rotate_half`'s signs).
    pub(super) rope_sign: Tensor,
    pub(super) config: Config,
    pub(super) device: Device,
    pub(super) kind: Kind,
    pub(super) format: WeightFormat,
    /// The CUDA kernels a model packed on a CUDA device decodes with (its projections hold
    /// them too); `None` on the CPU.
    pub(super) kernels: Option<Arc<Kernels>>,
    /// The file the tensors and blocks above are mapped from ([`open`](Self::open)); declared
    /// last, so that it is dropped after them.
    pub(super) _map: Option<Arc<memmap2::Mmap>>,
}

/// The weights of a [`PackedLlama`], packed or mapped.
pub(super) struct Parts {
    pub(super) embed_tokens: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Norm,
    pub(super) lm_head: Proj,
}

// SAFETY: a `PackedLlama` is built once (`from_model`) and never changed afterwards: no method
// reachable through `&PackedLlama` writes to its tensors, in place or otherwise, none hands out
// a handle to one (its fields are visible only inside `packed`; keep it so), and the state a forward pass changes
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
    /// the weights: quantised formats keep a dense copy of each layer's weights for long passes
    /// as well, in [`dense_kind`](Self::dense_kind) (about 1.2 times the f32 model's memory for
    /// int4 with f32 copies, 0.7 with bf16 ones).
    pub fn from_model(model: &Llama, kind: Kind, format: WeightFormat) -> Result<Self> {
        let dense_kind = Self::dense_kind(model.device, kind, format);
        Self::from_model_with(model, kind, format, dense_kind)
    }

    /// The dtype [`from_model`](Self::from_model) keeps the layers' dense copies in, for a model
    /// on `device` with activations of `kind` in `format`: bf16 for a quantised format on the
    /// CPU with f32 activations where [`crate::cpu::bf16_dense_copies`], else `kind` (a dense
    /// model's every pass multiplies with its copies).
    pub fn dense_kind(device: Device, kind: Kind, format: WeightFormat) -> Kind {
        if device == Device::Cpu
            && kind == Kind::Float
            && format != WeightFormat::Dense
            && crate::cpu::bf16_dense_copies()
        {
            Kind::BFloat16
        } else {
            kind
        }
    }

    /// [`from_model`](Self::from_model) with the layers' dense copies in `dense_kind` (f32, bf16
    /// or f16; `kind` itself, or bf16 with f32 activations on the CPU). The LM head's dense copy
    /// stays in `kind`: a tied head shares the embedding's storage.
    pub fn from_model_with(
        model: &Llama,
        kind: Kind,
        format: WeightFormat,
        dense_kind: Kind,
    ) -> Result<Self> {
        Self::pack(model, kind, format, dense_kind, &GgufBlocks::default())
    }

    /// [`from_model`](Self::from_model) for a model loaded from the folder `dir`: with
    /// [`WeightFormat::Gguf`], the projections keep the folder's own GGUF blocks
    /// ([`crate::import::GGUF_BLOCKS_FILE`]) where it has them (without a folder, every
    /// projection gets Q8_0 blocks).
    pub fn from_model_in(
        model: &Llama,
        dir: &Path,
        kind: Kind,
        format: WeightFormat,
    ) -> Result<Self> {
        let own = if format == WeightFormat::Gguf {
            GgufBlocks::open(dir)?
        } else {
            GgufBlocks::default()
        };
        let dense_kind = Self::dense_kind(model.device, kind, format);
        Self::pack(model, kind, format, dense_kind, &own)
    }

    fn pack(
        model: &Llama,
        kind: Kind,
        format: WeightFormat,
        dense_kind: Kind,
        own: &GgufBlocks,
    ) -> Result<Self> {
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
        if dense_kind != kind && !(kind == Kind::Float && dense_kind == Kind::BFloat16) {
            return Err(Error::InvalidArgument(format!(
                "dense copies in {dense_kind:?} for {kind:?} activations are not supported (the \
                 activations' dtype is, and bf16 for f32)"
            )));
        }
        let kinds = (kind, dense_kind);
        let _guard = tch::no_grad_guard();
        let c = &model.config;
        // On a CUDA device the blocks are multiplied by our CUDA kernels.
        let kernels = match (model.device, format) {
            (Device::Cuda(ordinal), WeightFormat::Int4 | WeightFormat::Int8) => {
                Some(Arc::new(Kernels::new(ordinal)?))
            }
            _ => None,
        };
        let k = kernels.as_ref();
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (a, m) = (&l.self_attn, &l.mlp);
                let name = |s: &str| format!("model.layers.{i}.{s}");
                let names = |parts: &[&str]| -> Vec<String> {
                    parts.iter().map(|p| name(&format!("{p}.weight"))).collect()
                };
                let own = (format, own);
                Ok(Layer {
                    input_norm: Norm::from(&l.input_layernorm, kind)?,
                    qkv: pack_fused(
                        (
                            &name("self_attn.qkv_proj"),
                            &names(&["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                        ),
                        &[&a.q_proj, &a.k_proj, &a.v_proj],
                        own,
                        kinds,
                        k,
                    )?,
                    o: pack_fused(
                        (&name("self_attn.o_proj"), &names(&["self_attn.o_proj"])),
                        &[&a.o_proj],
                        own,
                        kinds,
                        k,
                    )?,
                    post_norm: Norm::from(&l.post_attention_layernorm, kind)?,
                    gate_up: pack_fused(
                        (
                            &name("mlp.gate_up_proj"),
                            &names(&["mlp.gate_proj", "mlp.up_proj"]),
                        ),
                        &[&m.gate_proj, &m.up_proj],
                        own,
                        kinds,
                        k,
                    )?,
                    down: pack_fused(
                        (&name("mlp.down_proj"), &names(&["mlp.down_proj"])),
                        &[&m.down_proj],
                        own,
                        kinds,
                        k,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (head, head_name) = match &model.lm_head {
            Some(h) => (h, "lm_head.weight"),
            None => (&model.embed_tokens, "model.embed_tokens.weight"),
        };
        let head_format = match format {
            WeightFormat::Int4 => WeightFormat::Int8,
            other => other,
        };
        let head_own = if format == WeightFormat::Gguf {
            own_parts("lm_head", &[head_name.to_owned()], &[head], own)?
        } else {
            Vec::new()
        };
        // On the CPU the head's blocks pay off for more rows than the layers' (`cpu::Tuning`); on
        // a CUDA device a launch takes `QUANT_MAX_ROWS` rows, beyond which cuBLAS is faster.
        let head_rows = match model.device {
            Device::Cpu => crate::cpu::tuning().head_quant_max_rows,
            _ => QUANT_MAX_ROWS,
        };
        let lm_head = Proj {
            max_quant_rows: head_rows,
            ..Proj::pack(
                "lm_head",
                head,
                None,
                (head_format, head_own),
                (kind, kind),
                k,
            )?
        };
        let mut packed = Self::assemble(
            Parts {
                embed_tokens: model.embed_tokens.detach().to_kind(kind),
                layers,
                norm: Norm::from(&model.norm, kind)?,
                lm_head,
            },
            c.clone(),
            model.device,
            kind,
            format,
            None,
        );
        packed.kernels = kernels;
        Ok(packed)
    }

    /// The model on `parts`, with the rotary tables of `config`.
    pub(super) fn assemble(
        parts: Parts,
        config: Config,
        device: Device,
        kind: Kind,
        format: WeightFormat,
        map: Option<Arc<memmap2::Mmap>>,
    ) -> Self {
        let hd = config.head_dim as i64;
        let rope_sign = Tensor::cat(
            &[
                Tensor::full([hd / 2], -1.0, (kind, device)),
                Tensor::ones([hd - hd / 2], (kind, device)),
            ],
            0,
        );
        Self {
            embed_tokens: parts.embed_tokens,
            layers: parts.layers,
            norm: parts.norm,
            lm_head: parts.lm_head,
            rotary: RotaryEmbedding::new(&config, device),
            rope_sign,
            config,
            device,
            kind,
            format,
            kernels: None,
            _map: map,
        }
    }

    /// What of `config` the packed form does not implement (Gemma's norms and activation,
    /// Gemma-2's soft-capping and feed-forward norms, sliding-window attention), or `None` when
    /// it can be packed. [`from_model`](Self::from_model) refuses such models and
    /// [`InferenceModel::load`](super::InferenceModel::load) keeps them dense.
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
        let (model, _vs) = Llama::load(&dir, Kind::Float, device)?;
        Self::from_model_in(&model, dir.as_ref(), kind, format)
    }

    /// The weight format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The CUDA kernels a model packed on a CUDA device decodes with; `None` on the CPU.
    pub fn cuda_kernels(&self) -> Option<&Kernels> {
        self.kernels.as_deref()
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
        let kernels = self.kernels.as_deref().filter(|_| blocks);
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads as i64, c.num_kv_heads as i64, c.head_dim as i64);
        let (b, t, _) = xs.size3().unwrap_or((0, 0, 0));
        let qkv = layer
            .qkv
            .forward(&layer.input_norm.forward_on(xs, kernels)?, blocks)?
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
        let (normed, h) = layer
            .post_norm
            .add_forward(layer.o.forward(&y, blocks)?, xs, kernels)?;
        let gate_up = layer.gate_up.forward(&normed, blocks)?;
        let inter = c.intermediate_size as i64;
        let act = gate_up.narrow(-1, 0, inter).silu() * gate_up.narrow(-1, inter, inter);
        Ok(h + layer.down.forward(&act, blocks)?)
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
            self.head(&positions.select(&hidden), threads)
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
        let on_cpu = self.device == Device::Cpu;
        let _threads =
            threads.or_else(|| (on_cpu && self.lm_head.uses_blocks(rows)).then(SerialTorch::new));
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
            // On a CUDA device the kernels serve decoding steps only; longer passes go to cuBLAS.
            self.device == Device::Cpu && b * t <= short_pass_rows()
        }
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
        let threads = (blocks && self.device == Device::Cpu).then(SerialTorch::new);
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

    fn logits_at(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        positions: Positions,
    ) -> Result<Tensor> {
        self.logits(input_ids, cache, mask, positions)
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
        // The concatenation too runs on the worker with LibTorch on one thread: a LibTorch
        // operation this large on the caller's thread would start OpenMP's threads, which then
        // spin for a while after it and take the cores from the next step's kernels.
        on_workers(|| {
            let logits = ids
                .chunks(group)
                .zip(caches.chunks_mut(group))
                .map(|(ids, caches)| self.lm_head.forward(&self.host_step(ids, 1, caches)?, true))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::f_cat(&logits, 0)?)
        })
    }
}
