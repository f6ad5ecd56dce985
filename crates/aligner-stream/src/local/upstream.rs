//! The upstream: a local causal LM that writes the answer a sentence at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use aligner_model::chat::ChatTemplate;
use aligner_model::generate::{Sampler, SamplingConfig, TextStream};
use aligner_model::{CausalLm, ModelTokenizer};
use tch::Tensor;

use super::{Context, SyncInfo, render, render_conversation, template_of};
use crate::conversation::Conversation;
use crate::machine::{Draft, DraftStop, Upstream, answer_by_drafts};
use crate::segment::StreamingSegmenter;
use crate::{Error, Result};

/// How the upstream is prompted and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Token choice.
    pub sampling: SamplingConfig,
    /// Render the question with the model's chat template (if it has one).
    pub chat_template: bool,
    /// System message for the chat template.
    pub system: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            sampling: SamplingConfig::greedy(),
            chat_template: true,
            system: None,
        }
    }
}

/// Counters of the upstream's work, over its lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Positions forwarded through the model (prompt, re-fed corrections and generated tokens).
    pub forwarded: usize,
    /// Cached positions reused instead of recomputed, over all rounds.
    pub reused: usize,
    /// Tokens sampled.
    pub generated: usize,
    /// The cache synchronisation of the last round that touched the model.
    pub last_sync: SyncInfo,
}

/// A local model as [`Upstream`]: it keeps its KV cache across rounds and stops at a sentence
/// boundary.
///
/// The upstream holds the ids of everything it has written for the current question, including
/// a few tokens past the last boundary (the segmenter needs to see the next sentence start).
/// When the accepted text is a prefix of what it wrote (the corrector kept the sentence), those
/// tokens are simply kept: nothing is recomputed and the lookahead becomes the start of the next
/// sentence, so with an identity corrector the answer is exactly the model's plain generation.
/// When the accepted text differs, the ids are cut after the last token whose text is still a
/// prefix of it, the rest of the accepted text is tokenised, and the cache is truncated to the
/// common token prefix of the old and new ids; only the new tokens are forwarded.
///
/// Trailing spaces of a corrected text are not fed as tokens of their own (a byte-level BPE model
/// writes `" The"`, not `" "` then `"The"`): the first token after them is restricted to tokens
/// that start with those spaces ("token healing").
pub struct LocalUpstream<'m, M: CausalLm> {
    model: &'m M,
    tokenizer: ModelTokenizer,
    template: Option<ChatTemplate>,
    config: UpstreamConfig,
    sampler: Sampler,
    conversation: Option<Conversation>,
    prompt_ids: Vec<u32>,
    /// Answer ids written or accepted so far (the last one may not be forwarded yet).
    gen_ids: Vec<u32>,
    /// Their text.
    gen_text: String,
    /// `gen_text.len()` after each id of `gen_ids`.
    gen_ends: Vec<usize>,
    /// Bytes of `gen_text` that callers handed in as accepted text; only what follows was
    /// written by the model and may be reused as the start of the next draft.
    given: usize,
    stream: TextStream,
    /// The model wrote EOS after `gen_ids`.
    ended: bool,
    ctx: Context,
    vocab_text: Option<Vec<String>>,
    heal_masks: HashMap<String, Tensor>,
    stats: UpstreamStats,
}

impl<M: CausalLm> std::fmt::Debug for LocalUpstream<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUpstream")
            .field("config", &self.config)
            .field("conversation", &self.conversation)
            .field("gen_text", &self.gen_text)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'m, M: CausalLm> LocalUpstream<'m, M> {
    /// An upstream running `model` with `tokenizer`; errors on an unusable sampling config or a
    /// chat template that does not compile.
    pub fn new(model: &'m M, tokenizer: ModelTokenizer, config: UpstreamConfig) -> Result<Self> {
        let sampler = Sampler::new(config.sampling.clone())?;
        let template = template_of(&tokenizer, config.chat_template)?;
        Ok(Self {
            model,
            stream: TextStream::new(tokenizer.clone()),
            tokenizer,
            template,
            config,
            sampler,
            conversation: None,
            prompt_ids: Vec::new(),
            gen_ids: Vec::new(),
            gen_text: String::new(),
            gen_ends: Vec::new(),
            given: 0,
            ended: false,
            ctx: Context::new(model),
            vocab_text: None,
            heal_masks: HashMap::new(),
            stats: UpstreamStats::default(),
        })
    }

    /// Forgets the current answer: the next draft starts its question afresh (new sampler,
    /// nothing written), even if it is the same question again. The cache keeps what it holds,
    /// so a shared prompt prefix is still reused.
    pub fn restart(&mut self) {
        self.conversation = None;
    }

    /// Work counters.
    #[must_use]
    pub fn stats(&self) -> UpstreamStats {
        self.stats
    }

    /// The prompt ids of the current question.
    #[must_use]
    pub fn prompt_ids(&self) -> &[u32] {
        &self.prompt_ids
    }

    /// The ids whose keys and values are in the cache (prompt included).
    #[must_use]
    pub fn cached_ids(&self) -> &[u32] {
        &self.ctx.ids
    }

    /// The tokenizer.
    #[must_use]
    pub fn tokenizer(&self) -> &ModelTokenizer {
        &self.tokenizer
    }

    /// The prompt text for `question`.
    pub fn render_prompt(&self, question: &str) -> Result<String> {
        render(
            self.template.as_ref(),
            self.config.system.as_deref(),
            question,
        )
    }

    /// The prompt text for `conversation` (its own system message, else the configured one).
    pub fn render_conversation(&self, conversation: &Conversation) -> Result<String> {
        render_conversation(
            self.template.as_ref(),
            self.config.system.as_deref(),
            conversation,
        )
    }

    /// Starts a new conversation (fresh sampler, nothing written); the cache keeps the common
    /// prefix.
    fn start(&mut self, conversation: &Conversation) -> Result<()> {
        let prompt = self.render_conversation(conversation)?;
        self.prompt_ids = self.tokenizer.encode_prompt(&prompt)?;
        if self.prompt_ids.is_empty() {
            return Err(Error::InvalidConfig {
                field: "question",
                reason: "renders to an empty prompt".into(),
            });
        }
        self.conversation = Some(conversation.clone());
        self.sampler = Sampler::new(self.config.sampling.clone())?;
        self.gen_ids.clear();
        self.gen_text.clear();
        self.gen_ends.clear();
        self.given = 0;
        self.stream = TextStream::new(self.tokenizer.clone());
        self.ended = false;
        Ok(())
    }

    /// Replaces what was written by `accepted`, keeping the longest token prefix whose text is
    /// a prefix of it. Returns the trailing spaces left for token healing.
    fn rewind(&mut self, accepted: &str) -> Result<String> {
        let trimmed = accepted.trim_end_matches([' ', '\t']);
        let heal_possible =
            trimmed.len() < accepted.len() && self.heal_mask(&accepted[trimmed.len()..])?.is_some();
        let target = if heal_possible { trimmed } else { accepted };
        let heal = accepted[target.len()..].to_owned();

        let same = common_text_prefix(&self.gen_text, target);
        let mut k = self.gen_ends.iter().take_while(|&&end| end <= same).count();
        // Token ends are where the text was known; check the cut decodes exactly (a token that
        // ends inside a multi-byte character has no clean cut).
        let kept_len = loop {
            if k == 0 {
                break 0;
            }
            let end = self.gen_ends[k - 1];
            if self.tokenizer.decode(&self.gen_ids[..k], false)? == target[..end] {
                break end;
            }
            k -= 1;
        };
        let mut ids = self.gen_ids[..k].to_vec();
        ids.extend(self.tokenizer.encode(&target[kept_len..], false)?);
        if self.tokenizer.decode(&ids, false)? != target {
            // A tokenizer that does not decode piecewise (e.g. one that adds a prefix space):
            // tokenise the whole accepted text instead.
            k = 0;
            ids = self.tokenizer.encode(target, false)?;
        }
        // Rebuild the detokeniser's state: prime it with the kept tokens, then replay the rest.
        let mut stream = TextStream::new(self.tokenizer.clone());
        for &id in &ids[k.saturating_sub(4)..k] {
            stream.push(id)?;
        }
        stream.flush()?;
        let mut ends = self.gen_ends[..k].to_vec();
        let mut end = ends.last().copied().unwrap_or(0);
        for &id in &ids[k..] {
            end += stream.push(id)?.len();
            ends.push(end.min(target.len()));
        }
        self.gen_ids = ids;
        self.gen_ends = ends;
        self.gen_text = target.to_owned();
        self.stream = stream;
        self.ended = false;
        Ok(heal)
    }

    /// The additive logit mask `(vocab,)` that allows only tokens whose text starts with
    /// `prefix`; `None` if no token does.
    fn heal_mask(&mut self, prefix: &str) -> Result<Option<Tensor>> {
        if let Some(mask) = self.heal_masks.get(prefix) {
            return Ok(Some(mask.shallow_clone()));
        }
        let vocab = self.model.config().vocab_size;
        if self.vocab_text.is_none() {
            let texts = (0..vocab as u32)
                .map(|id| self.tokenizer.decode(&[id], false).unwrap_or_default())
                .collect();
            self.vocab_text = Some(texts);
        }
        let texts = self.vocab_text.as_deref().unwrap_or_default();
        let mask: Vec<f32> = texts
            .iter()
            .map(|t| {
                if t.starts_with(prefix) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        if mask.iter().all(|m| m.is_infinite()) {
            return Ok(None);
        }
        let mask = Tensor::from_slice(&mask).to_device(self.model.device());
        self.heal_masks
            .insert(prefix.to_owned(), mask.shallow_clone());
        Ok(Some(mask))
    }

    /// Writes a whole answer (to EOS or `max_tokens`) with no sentence stops, streaming its text
    /// to `on_delta`; returns the text and the number of tokens. Reuses the cache like
    /// [`Upstream::draft`], continuing from `prefix`.
    pub fn answer(
        &mut self,
        question: &str,
        prefix: &str,
        max_tokens: usize,
        mut on_delta: impl FnMut(&str),
    ) -> Result<(String, usize, bool)> {
        let conversation = Conversation::single(question);
        let draft = answer_by_drafts(self, &conversation, prefix, max_tokens, &mut on_delta)?;
        Ok((draft.text, draft.tokens, draft.stop == DraftStop::Eos))
    }

    /// Writes a whole continuation of `prefix` from an empty cache, as the reference loop does
    /// (no reuse, no sentence stop, up to EOS or `max_tokens`).
    pub fn continuation_from_scratch(
        &mut self,
        question: &str,
        prefix: &str,
        max_tokens: usize,
    ) -> Result<(String, usize)> {
        self.ctx.reset();
        self.conversation = None;
        let prompt = self.render_prompt(question)? + prefix;
        let prompt_ids = self.tokenizer.encode_prompt(&prompt)?;
        let (mut logits, info) = self.ctx.sync(self.model, &prompt_ids)?;
        self.stats.forwarded += info.fed;
        self.stats.last_sync = info;
        let mut generated: Vec<u32> = Vec::new();
        let mut context = prompt_ids;
        let eos_ids = self.tokenizer.eos_ids().to_vec();
        for i in 0..max_tokens {
            let token = self.sampler.sample(&logits, &context, &generated)?;
            self.stats.generated += 1;
            if eos_ids.contains(&token) {
                break;
            }
            generated.push(token);
            context.push(token);
            if i + 1 < max_tokens {
                logits = self.ctx.feed(self.model, &[token])?;
                self.stats.forwarded += 1;
            }
        }
        let text = self.tokenizer.decode(&generated, false)?;
        // The next `draft` must not trust this cache.
        self.ctx.reset();
        Ok((text, generated.len()))
    }
}

/// A draft being decoded, between two tokens.
struct Pending {
    accepted: String,
    segmenter: StreamingSegmenter,
    /// Bytes of the written text the segmenter has seen.
    consumed: usize,
    /// Prompt and answer ids so far (the sampler's context).
    context: Vec<u32>,
    /// Spaces the next token must start with (token healing); empty once used.
    heal: String,
    max_tokens: usize,
    tokens: usize,
    /// Logits `(vocab,)` for the next token.
    logits: Tensor,
}

/// What a draft needs next.
enum Progress {
    /// The draft is finished.
    Done(Draft),
    /// The sampled token must be forwarded and its logits put in [`Pending::logits`].
    Feed(u32),
}

impl<M: CausalLm> LocalUpstream<'_, M> {
    /// Everything of a draft before its first sampled token: the question's prompt, rewinding
    /// to `accepted`, a sentence already written past it, and the cache synchronisation.
    fn begin_draft(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
    ) -> Result<std::result::Result<Draft, Pending>> {
        if self.conversation.as_ref() != Some(conversation) {
            self.start(conversation)?;
        }
        let mut heal = String::new();
        // Going back to a shorter text than was handed in before also rewinds: text past
        // `accepted` counts as a draft only when the model wrote it.
        if !self.gen_text.starts_with(accepted) || accepted.len() < self.given {
            heal = self.rewind(accepted)?;
        }
        self.given = accepted.len();
        let mut segmenter = StreamingSegmenter::continuing(accepted);
        // Text written past `accepted` in an earlier round: the start of this sentence.
        let mut consumed = accepted.len();
        if let Some(lookahead) = self.gen_text.get(consumed..).filter(|t| !t.is_empty()) {
            consumed = self.gen_text.len();
            if let Some(sentence) = segmenter.push(lookahead).next() {
                let text = sentence.to_owned();
                return Ok(Ok(Draft {
                    text,
                    tokens: 0,
                    stop: DraftStop::Sentence,
                }));
            }
        }
        if self.ended {
            return Ok(Ok(last_pieces(accepted, &self.gen_text, 0)));
        }
        let mut context = self.prompt_ids.clone();
        context.extend(&self.gen_ids);
        let (logits, info) = self.ctx.sync(self.model, &context)?;
        self.stats.forwarded += info.fed;
        self.stats.reused += info.kept;
        self.stats.last_sync = info;
        Ok(Err(Pending {
            accepted: accepted.to_owned(),
            segmenter,
            consumed,
            context,
            heal,
            max_tokens,
            tokens: 0,
            logits,
        }))
    }

    /// Samples the next token of `p` and decides whether the draft ends with it.
    fn next_token(&mut self, p: &mut Pending) -> Result<Progress> {
        if !p.heal.is_empty() {
            if let Some(mask) = self.heal_mask(&p.heal)? {
                p.logits += mask;
            }
            p.heal.clear();
        }
        let token = self.sampler.sample(&p.logits, &p.context, &self.gen_ids)?;
        self.stats.generated += 1;
        p.tokens += 1;
        if self.tokenizer.eos_ids().contains(&token) {
            self.ended = true;
            let tail = self.stream.flush()?;
            self.gen_text.push_str(&tail);
            return Ok(Progress::Done(last_pieces(
                &p.accepted,
                &self.gen_text,
                p.tokens,
            )));
        }
        self.gen_ids.push(token);
        p.context.push(token);
        let delta = self.stream.push(token)?;
        self.gen_text.push_str(&delta);
        self.gen_ends.push(self.gen_text.len());
        if self.gen_text.len() > p.consumed {
            let new = &self.gen_text[p.consumed..];
            p.consumed = self.gen_text.len();
            if let Some(sentence) = p.segmenter.push(new).next() {
                return Ok(Progress::Done(Draft {
                    text: sentence.to_owned(),
                    tokens: p.tokens,
                    stop: DraftStop::Sentence,
                }));
            }
        }
        if p.tokens >= p.max_tokens {
            return Ok(Progress::Done(Draft {
                text: p.segmenter.pending().to_owned(),
                tokens: p.max_tokens,
                stop: DraftStop::TokenCap,
            }));
        }
        Ok(Progress::Feed(token))
    }
}

impl<M: CausalLm> LocalUpstream<'_, M> {
    /// [`Upstream::draft`], checking `cancel` (if any) before each forward pass.
    fn draft_until(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let mut pending = match self.begin_draft(conversation, accepted, max_tokens)? {
            Ok(draft) => return Ok(draft),
            Err(pending) => pending,
        };
        loop {
            match self.next_token(&mut pending)? {
                Progress::Done(draft) => return Ok(draft),
                Progress::Feed(token) => {
                    // The written ids stay consistent: the last one is simply not forwarded
                    // yet, which the next draft's cache synchronisation handles.
                    if cancelled() {
                        return Err(Error::Cancelled);
                    }
                    pending.logits = self.ctx.feed(self.model, &[token])?;
                    self.stats.forwarded += 1;
                }
            }
        }
    }
}

impl<M: CausalLm> Upstream for LocalUpstream<'_, M> {
    /// Renders the whole conversation with the chat template (its system message replacing
    /// the configured one).
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        self.draft_until(conversation, accepted, max_tokens, cancel)
    }
}

/// One draft request of [`draft_batch`]: which upstream, for which conversation and accepted
/// text, with which token cap.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    /// Index into the upstreams.
    pub upstream: usize,
    /// The conversation (see [`Conversation`]; `&Conversation::single(q)` for a question).
    pub conversation: &'a Conversation,
    /// The accepted answer so far.
    pub accepted: &'a str,
    /// Most tokens to write (>= 1).
    pub max_tokens: usize,
    /// When set, decoding of this draft stops at the next step: its draft is cut there
    /// ([`DraftStop::TokenCap`]) and is not meant to be used (its request was abandoned).
    pub cancel: Option<&'a AtomicBool>,
}

/// Drafts of several upstreams over the same model at once, each exactly what its own
/// [`Upstream::draft`] would return: prompts and cache synchronisations run per upstream, and
/// the token-by-token decoding of all unfinished drafts shares one
/// [`CausalLm::decode_step`] per token. Returns each draft with the time from the start of the
/// call to its end, in the order of `requests`.
///
/// Errors if two requests name the same upstream, an index is out of range, or the upstreams
/// do not run the same model.
pub fn draft_batch<M: CausalLm>(
    upstreams: &mut [LocalUpstream<'_, M>],
    requests: &[DraftRequest<'_>],
) -> Result<Vec<(Draft, std::time::Duration)>> {
    let started = std::time::Instant::now();
    let mut seen = vec![false; upstreams.len()];
    for r in requests {
        match seen.get_mut(r.upstream) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::InvalidConfig {
                    field: "requests",
                    reason: format!("upstream {} is out of range or named twice", r.upstream),
                });
            }
        }
    }
    let Some(first) = upstreams.first() else {
        return Ok(Vec::new());
    };
    let model = first.model;
    if upstreams.iter().any(|u| !std::ptr::eq(u.model, model)) {
        return Err(Error::InvalidConfig {
            field: "upstreams",
            reason: "a batch of drafts needs upstreams over one model".into(),
        });
    }
    let mut done: Vec<Option<(Draft, std::time::Duration)>> = vec![None; requests.len()];
    let mut active: Vec<(usize, Pending)> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match upstreams[r.upstream].begin_draft(r.conversation, r.accepted, r.max_tokens)? {
            Ok(draft) => done[i] = Some((draft, started.elapsed())),
            Err(pending) => active.push((i, pending)),
        }
    }
    while !active.is_empty() {
        let mut feeding = Vec::with_capacity(active.len());
        for (i, mut pending) in std::mem::take(&mut active) {
            if requests[i]
                .cancel
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                let draft = Draft {
                    text: pending.segmenter.pending().to_owned(),
                    tokens: pending.tokens,
                    stop: DraftStop::TokenCap,
                };
                done[i] = Some((draft, started.elapsed()));
                continue;
            }
            let upstream = &mut upstreams[requests[i].upstream];
            match upstream.next_token(&mut pending)? {
                Progress::Done(draft) => done[i] = Some((draft, started.elapsed())),
                Progress::Feed(token) => feeding.push((i, pending, token)),
            }
        }
        if feeding.is_empty() {
            break;
        }
        let tokens: Vec<u32> = feeding.iter().map(|(_, _, t)| *t).collect();
        let logits = {
            // Disjoint upstreams: each request names a different one (checked above).
            let mut by_index: Vec<Option<&mut LocalUpstream<'_, M>>> =
                upstreams.iter_mut().map(Some).collect();
            let mut contexts: Vec<&mut Context> = feeding
                .iter()
                .map(|(i, _, _)| {
                    by_index[requests[*i].upstream]
                        .take()
                        .map(|u| &mut u.ctx)
                        .ok_or_else(|| Error::Protocol {
                            component: "draft_batch",
                            reason: "an upstream is fed twice in one step".into(),
                        })
                })
                .collect::<Result<_>>()?;
            Context::feed_many(model, &mut contexts, &tokens)?
        };
        for ((i, mut pending, _), logits) in feeding.into_iter().zip(logits) {
            upstreams[requests[i].upstream].stats.forwarded += 1;
            pending.logits = logits;
            active.push((i, pending));
        }
    }
    done.into_iter()
        .map(|d| {
            d.ok_or_else(|| Error::Protocol {
                component: "draft_batch",
                reason: "a draft did not finish".into(),
            })
        })
        .collect()
}

/// The first sentence of a finished text `written` after `accepted`: `Eos` if it is the last.
fn last_pieces(accepted: &str, written: &str, tokens: usize) -> Draft {
    let rest = written.get(accepted.len()..).unwrap_or_default();
    let mut segmenter = StreamingSegmenter::continuing(accepted);
    let mut pieces: Vec<String> = segmenter.push(rest).map(str::to_owned).collect();
    pieces.extend(segmenter.finish().map(str::to_owned));
    let stop = if pieces.len() > 1 {
        DraftStop::Sentence
    } else {
        DraftStop::Eos
    };
    let text = pieces.into_iter().next().unwrap_or_default();
    Draft { text, tokens, stop }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a character boundary.
fn common_text_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::common_text_prefix;

    #[test]
    fn common_text_prefix_stops_at_characters() {
        assert_eq!(common_text_prefix("héllo", "hélp"), 4);
        assert_eq!(common_text_prefix("ab", "abc"), 2);
        assert_eq!(common_text_prefix("é", "è"), 0);
    }
}
