//! The aligner: a local causal LM prompted as it was trained (its `aligner_config.json`).

use std::sync::Arc;

use aligner_data::aligner_config::{AlignerConfig, AlignerTask, Prompter};
use aligner_model::{CausalLm, ModelTokenizer};

use super::Context;
use super::correct_batch::{CorrectionTask, Progress};
use crate::machine::{Correction, Corrector};
use crate::{Error, Result};

/// How the aligner is prompted and how much it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrectorConfig {
    /// Most tokens for one sentence.
    pub max_sentence_tokens: usize,
    /// Most tokens for a whole-answer correction.
    pub max_answer_tokens: usize,
    /// How the aligner is prompted: the formats it was trained on, and whether they were
    /// wrapped in its chat template (with which system message). Read it from the aligner's
    /// folder with [`AlignerConfig::resolve`]; the default is the shipped aligners' (the bare
    /// instructions in the model's chat template).
    pub prompt: AlignerConfig,
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
            prompt: AlignerConfig::default(),
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
    pub(super) model: &'m M,
    pub(super) tokenizer: ModelTokenizer,
    prompter: Prompter,
    /// Where a whole-answer correction ends: its format's section headers.
    pub(super) answer_stops: Vec<String>,
    /// Where a sentence correction ends: its format's section headers.
    pub(super) sentence_stops: Vec<String>,
    pub(super) config: CorrectorConfig,
    pub(super) ctx: Context,
    pub(super) forwarded: usize,
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
        let template = if config.prompt.chat_template {
            tokenizer.chat_template()?.map(Arc::new)
        } else {
            None
        };
        let prompter = config.prompt.prompter(template)?;
        Ok(Self {
            model,
            tokenizer,
            answer_stops: prompter.section_markers(AlignerTask::Answer),
            sentence_stops: prompter.section_markers(AlignerTask::Sentence),
            prompter,
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

    /// The whole-answer prompt text for (question, answer): the training prompt of the
    /// aligner's whole-answer format. An error if it was not trained for whole answers.
    pub fn answer_prompt(&self, question: &str, answer: &str) -> Result<String> {
        Ok(self.prompter.answer_prompt(question, answer.trim())?)
    }

    /// The sentence prompt text for (question, accepted prefix, last sentence): the training
    /// prompt of the aligner's sentence format. An error if it was not trained for sentences.
    pub fn sentence_prompt(&self, question: &str, prefix: &str, last: &str) -> Result<String> {
        Ok(self
            .prompter
            .sentence_prompt(question, prefix.trim(), last.trim())?)
    }

    /// The ids the aligner is given for a prompt text, as training tokenised its prompts
    /// ([`ModelTokenizer::encode_prompt`]).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_prompt(prompt)?)
    }

    /// Rewrites a whole answer with the aligner's whole-answer prompt (whole-answer mode).
    pub fn rewrite_answer(&mut self, question: &str, answer: &str) -> Result<Correction> {
        self.complete(&CorrectionTask::Answer { question, answer })
    }

    /// Greedy completion of the task's prompt, trimmed; a sentence correction with
    /// `one_sentence` stops after the first sentence of the output, and any correction stops
    /// where the aligner begins a section header of its prompt format
    /// ([`Prompter::section_markers`]). The text being corrected is, with `verify_draft`,
    /// checked in one pass and its agreeing tokens taken without decoding.
    fn complete(&mut self, task: &CorrectionTask<'_>) -> Result<Correction> {
        // The same steps as a batch of corrections (`correct_batch`), one token at a time.
        let mut pending = self.begin_correction(task)?;
        loop {
            match pending.next()? {
                Progress::Done(correction) => return Ok(correction),
                Progress::Feed(token) => {
                    pending.logits = Some(self.ctx.feed(self.model, &[token])?);
                    self.forwarded += 1;
                }
            }
        }
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
        let prompt = self.sentence_prompt(question, prefix, SENTENCE_SLOT)?;
        let Some(slot) = prompt.rfind(SENTENCE_SLOT) else {
            return Ok(());
        };
        let mut ids = self.prompt_ids(&prompt[..slot])?;
        ids.pop();
        if !ids.is_empty() {
            self.forwarded += self.ctx.extend_to(self.model, &ids)?;
        }
        Ok(())
    }

    fn correct(&mut self, question: &str, prefix: &str, last: &str) -> Result<Correction> {
        let task = CorrectionTask::Sentence {
            question,
            prefix,
            last,
        };
        let correction = self.complete(&task)?;
        Ok(self.settle(&task, correction))
    }
}
