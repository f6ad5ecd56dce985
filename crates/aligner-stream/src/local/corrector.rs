//! The aligner: a local causal LM prompted with the Stream Aligner instruction.

use std::collections::VecDeque;

use aligner_model::chat::ChatTemplate;
use aligner_model::generate::{Sampler, SamplingConfig, TextStream};
use aligner_model::{CausalLm, ModelTokenizer};

use super::{Context, render, template_of};
use crate::machine::{Correction, Corrector};
use crate::prompt::{correction_instruction, stream_instruction};
use crate::segment::first_sentence_end;
use crate::{Error, Result};

/// How the aligner is prompted and how much it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectorConfig {
    /// Most tokens for one sentence.
    pub max_sentence_tokens: usize,
    /// Most tokens for a whole-answer correction.
    pub max_answer_tokens: usize,
    /// Wrap the instruction in the aligner's chat template as a user message; `false` feeds the
    /// instruction as raw text.
    pub chat_template: bool,
    /// System message for the chat template.
    pub system: Option<String>,
    /// Keep only the first sentence of a sentence correction (an aligner trained on single
    /// sentences stops by itself; an untrained one may go on).
    pub one_sentence: bool,
    /// Keep the draft when the correction repeats text already in the accepted prefix. An
    /// untrained aligner (the default model prompted with the instruction) tends to copy the
    /// prefix's first sentence, which would make the answer loop; a trained one never needs it.
    pub reject_repeats: bool,
    /// Verify the text being corrected as a draft of the answer: it is forwarded with the prompt
    /// in one pass, the longest prefix of it that greedy decoding would have written is taken
    /// at once, and decoding goes on from the first token that differs. The result is that of
    /// plain greedy decoding (up to floating-point near-ties between a batched and a stepwise
    /// forward pass), but an unchanged sentence costs one forward pass instead of one per token.
    pub verify_draft: bool,
    /// In [`StreamMachine::run_overlapped`](crate::StreamMachine::run_overlapped), forward the
    /// prompt up to the sentence while the upstream writes it ([`Corrector::prepare`]), so that
    /// less is left to forward when the sentence arrives. The prompt then reaches the model in
    /// two passes instead of one; LibTorch's matrix products may round differently for
    /// different pass lengths, so a near-tie in the aligner's greedy choice can go the other
    /// way. With `false` the overlapped loop gives exactly the sequential loop's corrections
    /// (for a deterministic upstream).
    pub prepare: bool,
}

impl Default for CorrectorConfig {
    fn default() -> Self {
        Self {
            max_sentence_tokens: 96,
            max_answer_tokens: 512,
            chat_template: true,
            system: None,
            one_sentence: true,
            reject_repeats: true,
            verify_draft: true,
            prepare: true,
        }
    }
}

/// A local model as [`Corrector`], decoding greedily.
///
/// Prompts share their beginning from round to round (template, question, the accepted prefix
/// so far), so the aligner's KV cache keeps the common token prefix of consecutive prompts and
/// forwards only the rest.
pub struct LocalCorrector<'m, M: CausalLm> {
    model: &'m M,
    tokenizer: ModelTokenizer,
    template: Option<ChatTemplate>,
    config: CorrectorConfig,
    ctx: Context,
    forwarded: usize,
}

impl<M: CausalLm> std::fmt::Debug for LocalCorrector<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCorrector")
            .field("config", &self.config)
            .field("forwarded", &self.forwarded)
            .finish_non_exhaustive()
    }
}

impl<'m, M: CausalLm> LocalCorrector<'m, M> {
    /// An aligner running `model` with `tokenizer`.
    pub fn new(model: &'m M, tokenizer: ModelTokenizer, config: CorrectorConfig) -> Result<Self> {
        for (field, value) in [
            ("max_sentence_tokens", config.max_sentence_tokens),
            ("max_answer_tokens", config.max_answer_tokens),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        let template = template_of(&tokenizer, config.chat_template)?;
        Ok(Self {
            model,
            tokenizer,
            template,
            config,
            ctx: Context::new(model),
            forwarded: 0,
        })
    }

    /// Positions forwarded through the model so far.
    #[must_use]
    pub fn forwarded(&self) -> usize {
        self.forwarded
    }

    /// The full prompt text for an instruction.
    pub fn render_prompt(&self, instruction: &str) -> Result<String> {
        render(
            self.template.as_ref(),
            self.config.system.as_deref(),
            instruction,
        )
    }

    /// Rewrites a whole answer with the Aligner correction instruction (whole-answer mode).
    pub fn rewrite_answer(&mut self, question: &str, answer: &str) -> Result<Correction> {
        let instruction = correction_instruction(question, answer.trim());
        self.complete(
            &instruction,
            answer.trim(),
            self.config.max_answer_tokens,
            false,
        )
    }

    /// Greedy completion of `instruction`, trimmed; with `one_sentence` it stops after the
    /// first sentence of the output. `draft` is the text being corrected: with `verify_draft`
    /// its tokens are checked in one pass and the agreeing ones taken without decoding.
    fn complete(
        &mut self,
        instruction: &str,
        draft: &str,
        max_tokens: usize,
        one_sentence: bool,
    ) -> Result<Correction> {
        let prompt = self.render_prompt(instruction)?;
        let ids = self.tokenizer.encode(&prompt, true)?;
        let draft_ids = if self.config.verify_draft && !draft.is_empty() {
            self.tokenizer.encode(draft, false)?
        } else {
            Vec::new()
        };
        // Tokens chosen ahead of decoding, each with whether the cache already holds it.
        let mut ahead = VecDeque::new();
        let mut logits = None;
        if draft_ids.is_empty() {
            let (l, info) = self.ctx.sync(self.model, &ids)?;
            self.forwarded += info.fed;
            logits = Some(l);
        } else {
            let (choices, info) = self.ctx.verify(self.model, &ids, &draft_ids)?;
            self.forwarded += info.fed;
            let agreed = choices
                .iter()
                .zip(&draft_ids)
                .take_while(|(c, d)| c == d)
                .count();
            // Keep the agreeing draft tokens cached; the model's own choice after them is next.
            self.ctx.truncate(ids.len() + agreed);
            ahead.extend(draft_ids[..agreed].iter().map(|&t| (t, true)));
            ahead.push_back((choices[agreed], false));
        }
        let mut sampler = Sampler::new(SamplingConfig::greedy())?;
        let mut stream = TextStream::new(self.tokenizer.clone());
        let eos_ids = self.tokenizer.eos_ids().to_vec();
        let mut text = String::new();
        let mut tokens = 0;
        while tokens < max_tokens {
            let (token, cached) = match (ahead.pop_front(), &logits) {
                (Some(next), _) => next,
                (None, Some(l)) => (sampler.sample(l, &[], &[])?, false),
                (None, None) => {
                    return Err(Error::Protocol {
                        component: "corrector",
                        reason: "no logits to decode from".into(),
                    });
                }
            };
            tokens += 1;
            if eos_ids.contains(&token) {
                break;
            }
            text.push_str(&stream.push(token)?);
            if one_sentence {
                let body = text.trim_start();
                if let Some(end) = first_sentence_end(body) {
                    text = body[..end].to_owned();
                    return Ok(Correction {
                        text: text.trim().to_owned(),
                        tokens,
                    });
                }
            }
            if tokens < max_tokens && !cached {
                logits = Some(self.ctx.feed(self.model, &[token])?);
                self.forwarded += 1;
            }
        }
        text.push_str(&stream.flush()?);
        Ok(Correction {
            text: text.trim().to_owned(),
            tokens,
        })
    }
}

/// Stands for the sentence when rendering the part of a prompt before it.
const SENTENCE_SLOT: &str = "\u{1}";

impl<M: CausalLm> Corrector for LocalCorrector<'_, M> {
    /// Forwards the prompt up to the sentence (template, question, prefix) into the cache; the
    /// next [`correct`](Corrector::correct) forwards only what follows. Its last token is left
    /// out, since it may merge with the sentence's first; whatever still differs from the real
    /// prompt is recomputed then, so the result of `correct` does not change.
    fn prepare(&mut self, question: &str, prefix: &str) -> Result<()> {
        if !self.config.prepare {
            return Ok(());
        }
        let instruction = stream_instruction(question, prefix.trim(), SENTENCE_SLOT);
        let prompt = self.render_prompt(&instruction)?;
        let Some(slot) = prompt.rfind(SENTENCE_SLOT) else {
            return Ok(());
        };
        let mut ids = self.tokenizer.encode(&prompt[..slot], true)?;
        ids.pop();
        if !ids.is_empty() {
            self.forwarded += self.ctx.extend_to(self.model, &ids)?;
        }
        Ok(())
    }

    fn correct(&mut self, question: &str, prefix: &str, last: &str) -> Result<Correction> {
        let instruction = stream_instruction(question, prefix.trim(), last.trim());
        let mut correction = self.complete(
            &instruction,
            last.trim(),
            self.config.max_sentence_tokens,
            self.config.one_sentence,
        )?;
        if self.config.reject_repeats
            && !correction.text.is_empty()
            && correction.text != last.trim()
            && prefix.contains(correction.text.as_str())
        {
            correction.text = last.trim().to_owned();
        }
        Ok(correction)
    }
}
