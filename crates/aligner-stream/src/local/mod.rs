//! Model-backed [`Upstream`](crate::Upstream) and [`Corrector`](crate::Corrector), generic over
//! [`CausalLm`], each keeping its KV cache between calls.

mod correct_batch;
mod corrector;
mod upstream;

use aligner_model::chat::ChatTemplate;
use aligner_model::{CausalLm, KvCache, ModelTokenizer};
use tch::{Kind, Tensor};

pub use correct_batch::{CorrectRequest, CorrectionTask, correct_batch};
pub use corrector::{CorrectorConfig, LocalCorrector};
pub use upstream::{DraftRequest, LocalUpstream, UpstreamConfig, UpstreamStats, draft_batch};

use crate::conversation::Conversation;
use crate::{Error, Result};

/// What one cache synchronisation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncInfo {
    /// Cached positions kept (the common token prefix, prompt included).
    pub kept: usize,
    /// Positions forwarded to reach the new context.
    pub fed: usize,
    /// Positions in the cache afterwards.
    pub len: usize,
}

/// A KV cache and the ids it holds (`cache.len() == ids.len()` always).
#[derive(Debug)]
struct Context {
    cache: KvCache,
    ids: Vec<u32>,
}

impl Context {
    fn new<M: CausalLm>(model: &M) -> Self {
        Self {
            cache: model.new_cache(1),
            ids: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.cache.reset();
        self.ids.clear();
    }

    /// Makes the cache hold exactly `ids` and returns the logits `(vocab,)` after the last one.
    /// Keeps the longest common prefix of what was cached and `ids` and forwards only the rest;
    /// when `ids` is all cached already, its last position is forwarded again for its logits.
    fn sync<M: CausalLm>(&mut self, model: &M, ids: &[u32]) -> Result<(Tensor, SyncInfo)> {
        if ids.is_empty() {
            return Err(Error::Protocol {
                component: "context",
                reason: "empty prompt".into(),
            });
        }
        let mut kept = common_prefix(&self.ids, ids);
        if kept == ids.len() {
            kept -= 1;
        }
        self.truncate(kept);
        let logits = self.feed(model, &ids[kept..])?;
        let info = SyncInfo {
            kept,
            fed: ids.len() - kept,
            len: self.ids.len(),
        };
        Ok((logits, info))
    }

    /// Makes the cache start with `ids`, forwarding only what is not cached yet; returns the
    /// number of positions forwarded. A cache that already starts with `ids` is left as it is;
    /// otherwise it is cut to the common prefix first.
    fn extend_to<M: CausalLm>(&mut self, model: &M, ids: &[u32]) -> Result<usize> {
        let kept = common_prefix(&self.ids, ids);
        if kept == ids.len() {
            return Ok(0);
        }
        self.truncate(kept);
        self.feed(model, &ids[kept..]).map(drop)?;
        Ok(ids.len() - kept)
    }

    /// Makes the cache hold `prompt` followed by `draft` and returns the model's greedy choice
    /// after the prompt and after each draft token (`draft.len() + 1` ids), from one forward
    /// pass over whatever of them is not cached yet.
    fn verify<M: CausalLm>(
        &mut self,
        model: &M,
        prompt: &[u32],
        draft: &[u32],
    ) -> Result<(Vec<u32>, SyncInfo)> {
        if prompt.is_empty() {
            return Err(Error::Protocol {
                component: "context",
                reason: "empty prompt".into(),
            });
        }
        let full: Vec<u32> = prompt.iter().chain(draft).copied().collect();
        // The logits after the prompt's last token are needed, so that token is forwarded.
        let kept = common_prefix(&self.ids, &full).min(prompt.len() - 1);
        self.truncate(kept);
        let _guard = tch::no_grad_guard();
        // Logits after the prompt's last token and after each draft token only.
        let logits = model.forward_tail(
            &input_row(&full[kept..], model),
            &mut self.cache,
            None,
            draft.len() + 1,
        )?;
        self.ids.extend_from_slice(&full[kept..]);
        let choices = logits
            .f_select(0, 0)?
            .f_argmax(-1, false)?
            .to_device(tch::Device::Cpu);
        let choices = Vec::<i64>::try_from(choices)?
            .into_iter()
            .map(|t| t as u32)
            .collect();
        let info = SyncInfo {
            kept,
            fed: full.len() - kept,
            len: self.ids.len(),
        };
        Ok((choices, info))
    }

    /// Forwards one token after each context's cached ones in one
    /// [`CausalLm::decode_step`]; returns the logits `(vocab,)` after each.
    fn feed_many<M: CausalLm>(
        model: &M,
        contexts: &mut [&mut Context],
        tokens: &[u32],
    ) -> Result<Vec<Tensor>> {
        let _guard = tch::no_grad_guard();
        let logits = {
            let mut caches: Vec<&mut KvCache> = contexts.iter_mut().map(|c| &mut c.cache).collect();
            model.decode_step(tokens, &mut caches)?.to_kind(Kind::Float)
        };
        for (context, &token) in contexts.iter_mut().zip(tokens) {
            context.ids.push(token);
        }
        Ok((0..tokens.len() as i64).map(|i| logits.get(i)).collect())
    }

    /// Keeps only the first `len` cached positions.
    fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
        self.ids.truncate(len);
    }

    /// Forwards `ids` after the cached ones; returns the logits `(vocab,)` after the last.
    fn feed<M: CausalLm>(&mut self, model: &M, ids: &[u32]) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let logits = model.forward_last(&input_row(ids, model), &mut self.cache, None)?;
        self.ids.extend_from_slice(ids);
        Ok(logits.f_select(0, 0)?.to_kind(Kind::Float))
    }
}

/// `ids` as a `(1, len)` input on the model's device.
fn input_row<M: CausalLm>(ids: &[u32], model: &M) -> Tensor {
    let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_slice(&ids)
        .unsqueeze(0)
        .to_device(model.device())
}

/// Length of the longest common prefix of two id sequences.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The prompt text for one user message: through `template` (with an optional system message)
/// when there is one, else the message itself.
fn render(template: Option<&ChatTemplate>, system: Option<&str>, user: &str) -> Result<String> {
    render_conversation(template, system, &Conversation::single(user))
}

/// The prompt text for a conversation, up to the start of the assistant's answer, as a
/// [`LocalUpstream`] and a [`RemoteUpstream`](crate::remote::RemoteUpstream) render it: through
/// `template`, with `system` first unless the conversation has its own system message. With no
/// template, a conversation of one user message (and perhaps a system message, which is then
/// dropped) is that message; a conversation with earlier turns needs a template.
pub fn render_conversation(
    template: Option<&ChatTemplate>,
    system: Option<&str>,
    conversation: &Conversation,
) -> Result<String> {
    match template {
        Some(template) => Ok(template
            .render(&conversation.with_default_system(system), true)
            .map_err(aligner_model::Error::from)?),
        None if conversation.is_multi_turn() => Err(Error::Unsupported(
            "a conversation with earlier turns needs a chat template to render it".into(),
        )),
        None => Ok(conversation.last_user().to_owned()),
    }
}

/// The tokenizer's chat template when `wanted`, else `None`.
fn template_of(tokenizer: &ModelTokenizer, wanted: bool) -> Result<Option<ChatTemplate>> {
    if wanted {
        Ok(tokenizer.chat_template()?)
    } else {
        Ok(None)
    }
}
