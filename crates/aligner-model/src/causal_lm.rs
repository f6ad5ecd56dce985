//! The small trait that training, streaming and evaluation are generic over.

use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::cache::KvCache;
use crate::config::Config;

/// A decoder-only language model with a key/value cache.
pub trait CausalLm {
    /// The resolved configuration.
    fn config(&self) -> &Config;

    /// Where the weights live.
    fn device(&self) -> Device;

    /// The dtype of the weights and activations.
    fn kind(&self) -> Kind;

    /// An empty cache for `batch` rows.
    fn new_cache(&self, batch: usize) -> KvCache;

    /// The logits at `positions` for `input_ids` `(batch, t)` following what `cache` holds,
    /// which is extended with the new tokens. `mask` `(batch, t)` marks real tokens (1) and
    /// padding (0); `None` means no padding. The one pass every model implements; the LM head
    /// runs on the chosen positions only ([`Positions`] gives the shapes).
    fn logits_at(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        positions: Positions,
    ) -> Result<Tensor>;

    /// Logits `(batch, t, vocab)` of every position ([`Positions::All`]).
    fn forward(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits_at(input_ids, cache, mask, Positions::All)
    }

    /// Only the last position's logits `(batch, vocab)` ([`Positions::Last`]), which is all
    /// generation needs.
    fn forward_last(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.logits_at(input_ids, cache, mask, Positions::Last)
    }

    /// The logits of the last `n` positions `(batch, n, vocab)` ([`Positions::Tail`]): what
    /// verifying `n - 1` drafted tokens after a prompt needs.
    fn forward_tail(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
        n: usize,
    ) -> Result<Tensor> {
        self.logits_at(input_ids, cache, mask, Positions::Tail(n))
    }

    /// One decoding step for several independent sequences at once: `tokens[i]` follows what
    /// `caches[i]` (a one-row cache) holds, and is appended to it. Returns the logits
    /// `(tokens.len(), vocab)` after each.
    ///
    /// The sequences may have different lengths and histories (each cache is truncated, reset or
    /// extended on its own), which is what serving several conversations needs. The default
    /// runs one [`forward_last`](CausalLm::forward_last) per sequence; a model that can share
    /// the weight reads of the rows in one pass overrides it.
    fn decode_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        check_decode_step(tokens, caches)?;
        decode_each(self, tokens, caches)
    }
}

/// Which positions of a pass [`CausalLm::logits_at`] returns the logits of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Every position: `(batch, t, vocab)`.
    All,
    /// The last position: `(batch, vocab)`.
    Last,
    /// The last `n` positions, `n` clamped to `1..=t`: `(batch, n, vocab)`.
    Tail(usize),
}

impl Positions {
    /// The chosen positions of `hidden` `(batch, t, dim)`, with the shape the logits will have.
    pub fn select(self, hidden: &Tensor) -> Tensor {
        let t = hidden.size()[1];
        match self {
            Self::All => hidden.shallow_clone(),
            Self::Last => hidden.select(1, t - 1),
            Self::Tail(n) => {
                let n = (n as i64).clamp(1, t.max(1));
                hidden.narrow(1, t - n, n)
            }
        }
    }
}

/// [`CausalLm::decode_step`] as one [`CausalLm::forward_last`] per sequence.
pub(crate) fn decode_each<M: CausalLm + ?Sized>(
    model: &M,
    tokens: &[u32],
    caches: &mut [&mut KvCache],
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let rows = tokens
        .iter()
        .zip(caches.iter_mut())
        .map(|(&token, cache)| {
            let input = Tensor::from_slice(&[i64::from(token)])
                .view([1, 1])
                .to_device(model.device());
            model.forward_last(&input, cache, None)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_cat(&rows, 0)?)
}

/// Checks the arguments of [`CausalLm::decode_step`]: one token per cache, one row per cache.
pub(crate) fn check_decode_step(tokens: &[u32], caches: &[&mut KvCache]) -> Result<()> {
    if tokens.len() != caches.len() {
        return Err(crate::Error::InvalidArgument(format!(
            "decode_step got {} tokens for {} caches",
            tokens.len(),
            caches.len()
        )));
    }
    if tokens.is_empty() {
        return Err(crate::Error::InvalidArgument(
            "decode_step got no sequences".into(),
        ));
    }
    if let Some(i) = caches.iter().position(|c| c.batch() != 1) {
        return Err(crate::Error::InvalidArgument(format!(
            "decode_step needs one-row caches; cache {i} has {} rows",
            caches[i].batch()
        )));
    }
    Ok(())
}

/// One LoRA adapter of a model: its module path and weights (shallow copies of the variables).
#[derive(Debug)]
pub struct LoraWeights {
    /// Module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// `(rank, in_dim)`.
    pub a: Tensor,
    /// `(out_dim, rank)`.
    pub b: Tensor,
    /// `alpha / rank`: the adapter adds `scale * B A` to the module's weight.
    pub scale: f64,
}

/// What training needs beyond [`CausalLm`]: a cache-free forward that can be run one decoder
/// layer at a time (for gradient checkpointing), and LoRA adapters.
///
/// `lm_head(final_norm(layer_forward(L-1, .. layer_forward(0, embed(ids)))))` equals the logits
/// of [`CausalLm::forward`] on an empty cache without padding. Right padding needs no mask: under
/// the causal mask real tokens never see the padding that follows them.
pub trait LayeredLm: CausalLm {
    /// Per-pass state shared by all layers (rotary tables, mask flags).
    type Context;

    /// Number of decoder layers.
    fn num_layers(&self) -> usize;

    /// Token embeddings `(batch, t, hidden)` for `input_ids` `(batch, t)`.
    fn embed(&self, input_ids: &Tensor) -> Tensor;

    /// The context for a causal pass over positions `0..seq_len`; `train` turns dropout on.
    fn layer_context(&self, seq_len: usize, train: bool) -> Result<Self::Context>;

    /// The context for a pass over packed rows: several sequences one after the other in each
    /// row. `position_ids` `(batch, t)` holds each token's position in its own sequence and
    /// `sequence_ids` `(batch, t)` which sequence of the row it belongs to (-1 on padding); a
    /// token attends to the tokens of its own sequence up to itself only (a block-diagonal
    /// causal mask), so each sequence's logits are those of a pass over it alone. The default
    /// refuses: a model that cannot mask so must not be given packed rows.
    fn packed_layer_context(
        &self,
        position_ids: &Tensor,
        sequence_ids: &Tensor,
        train: bool,
    ) -> Result<Self::Context> {
        let _ = (position_ids, sequence_ids, train);
        Err(crate::Error::InvalidArgument(
            "this model does not take packed rows".into(),
        ))
    }

    /// Decoder layer `layer` on hidden states `(batch, t, hidden)`.
    fn layer_forward(&self, layer: usize, xs: &Tensor, ctx: &Self::Context) -> Tensor;

    /// The final norm.
    fn final_norm(&self, xs: &Tensor) -> Tensor;

    /// LM head: normed hidden states `(.., hidden)` to logits `(.., vocab)`.
    fn lm_head(&self, hidden: &Tensor) -> Tensor;

    /// The LM head's weight `(vocab, hidden)` (a shallow copy) when [`LayeredLm::lm_head`] is
    /// `hidden @ weightᵀ` and nothing more (no bias, adapter or scaling), so that a trainer may
    /// compute the head's loss and gradients itself. `None`, the default, keeps trainers on
    /// `lm_head` and autograd.
    fn lm_head_weight(&self) -> Option<Tensor> {
        None
    }

    /// Adds LoRA adapters to the modules named in `spec`, with variables under `vs` (the root of
    /// the model's `VarStore`); returns the module paths adapted.
    fn add_lora(
        &mut self,
        vs: &tch::nn::Path<'_>,
        spec: &crate::config::LoraSpec,
    ) -> Result<Vec<String>>;

    /// The LoRA adapters added so far.
    fn lora_weights(&self) -> Vec<LoraWeights>;
}
