//! Corrections of several [`LocalCorrector`]s over the same model at once, sharing decoding
//! steps: the aligner's counterpart of [`draft_batch`](super::draft_batch).
//!
//! Each correction runs as [`Corrector::correct`](crate::Corrector::correct) (or
//! [`LocalCorrector::rewrite_answer`]) would run it alone on its own corrector: the prompt comes
//! from [`LocalCorrector::sentence_prompt`] (or [`LocalCorrector::answer_prompt`]) and
//! [`LocalCorrector::prompt_ids`], the corrector's cache is synchronised with it, and
//! with [`CorrectorConfig::verify_draft`](super::CorrectorConfig::verify_draft) the sentence is
//! verified as a draft in one pass of its own (prompt lengths differ, so these passes are not
//! shared). Only the token-by-token greedy decoding that follows — after the first token where
//! the aligner writes differently from the draft, or all of it without verification — is
//! shared: one [`CausalLm::decode_step`] per token for every unfinished correction, which gives
//! each row the logits it would get alone. A correction alone takes the same steps (it is this
//! module's [`Pending`] fed one token at a time), so each correction equals the one its
//! corrector makes alone (tested); only the wall time changes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aligner_model::CausalLm;
use aligner_model::generate::{Sampler, SamplingConfig, TextStream};
use tch::Tensor;

use super::{Context, LocalCorrector};
use crate::machine::Correction;
use crate::segment::first_sentence_end;
use crate::{Error, Result};

/// What one correction of [`correct_batch`] rewrites.
#[derive(Debug, Clone, Copy)]
pub enum CorrectionTask<'a> {
    /// One sentence, as [`Corrector::correct`](crate::Corrector::correct)`(question, prefix,
    /// last)`.
    Sentence {
        /// The question (as the aligner sees it).
        question: &'a str,
        /// The accepted answer before the sentence.
        prefix: &'a str,
        /// The upstream's sentence.
        last: &'a str,
    },
    /// A whole answer, as [`LocalCorrector::rewrite_answer`]`(question, answer)`.
    Answer {
        /// The question (as the aligner sees it).
        question: &'a str,
        /// The upstream's answer.
        answer: &'a str,
    },
}

/// One correction of [`correct_batch`]: which corrector, what to correct.
#[derive(Debug, Clone, Copy)]
pub struct CorrectRequest<'a> {
    /// Index into the correctors.
    pub corrector: usize,
    /// What to correct.
    pub task: CorrectionTask<'a>,
    /// When set, decoding of this correction stops at the next step; what it returns then is
    /// cut short and not meant to be used (its request was abandoned).
    pub cancel: Option<&'a AtomicBool>,
}

/// A correction being decoded, between two decoding steps.
pub(super) struct Pending {
    /// Tokens chosen ahead of decoding (the draft's agreeing tokens, then the aligner's own
    /// choice after them), each with whether the cache already holds it.
    ahead: VecDeque<(u32, bool)>,
    /// Logits `(vocab,)` for the next token, once the verified tokens are used up.
    pub(super) logits: Option<Tensor>,
    sampler: Sampler,
    stream: TextStream,
    eos: Vec<u32>,
    text: String,
    tokens: usize,
    max_tokens: usize,
    one_sentence: bool,
    /// Text the correction never holds: it ends where one of these begins.
    stops: Vec<String>,
}

/// What a correction needs next.
pub(super) enum Progress {
    /// It is finished.
    Done(Correction),
    /// This token must be forwarded and its logits put in [`Pending::logits`].
    Feed(u32),
}

impl<M: CausalLm> LocalCorrector<'_, M> {
    /// Everything of a correction before its first decoding step: the prompt's cache
    /// synchronisation and, with `verify_draft`, the verification of the text under correction
    /// in one pass, whose agreeing tokens are taken without decoding.
    pub(super) fn begin_correction(&mut self, task: &CorrectionTask<'_>) -> Result<Pending> {
        let (prompt, draft, max_tokens, one_sentence) = self.task_parts(task)?;
        let (prompt, draft) = (prompt.as_str(), draft.as_str());
        let ids = self.prompt_ids(prompt)?;
        let draft_ids = if self.config.verify_draft && !draft.is_empty() {
            self.tokenizer.encode(draft, false)?
        } else {
            Vec::new()
        };
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
            self.ctx.truncate(ids.len() + agreed);
            ahead.extend(draft_ids[..agreed].iter().map(|&t| (t, true)));
            ahead.push_back((choices[agreed], false));
        }
        Ok(Pending {
            ahead,
            logits,
            sampler: Sampler::new(SamplingConfig::greedy())?,
            stream: TextStream::new(self.tokenizer.clone()),
            eos: self.tokenizer.eos_ids().to_vec(),
            text: String::new(),
            tokens: 0,
            max_tokens,
            one_sentence,
            stops: match task {
                CorrectionTask::Sentence { .. } => self.sentence_stops.clone(),
                CorrectionTask::Answer { .. } => self.answer_stops.clone(),
            },
        })
    }

    /// The prompt, text under correction, token cap and one-sentence rule of `task`, as
    /// `correct` and `rewrite_answer` choose them.
    fn task_parts(&self, task: &CorrectionTask<'_>) -> Result<(String, String, usize, bool)> {
        Ok(match *task {
            CorrectionTask::Sentence {
                question,
                prefix,
                last,
            } => (
                self.sentence_prompt(question, prefix, last)?,
                last.trim().to_owned(),
                self.config.max_sentence_tokens,
                self.config.one_sentence,
            ),
            CorrectionTask::Answer { question, answer } => (
                self.answer_prompt(question, answer)?,
                answer.trim().to_owned(),
                self.config.max_answer_tokens,
                false,
            ),
        })
    }

    /// `correct`'s last rule: with `reject_repeats`, a correction that repeats text of the
    /// prefix keeps the sentence.
    pub(super) fn settle(
        &self,
        task: &CorrectionTask<'_>,
        mut correction: Correction,
    ) -> Correction {
        if let CorrectionTask::Sentence { prefix, last, .. } = *task
            && self.config.reject_repeats
            && !correction.text.is_empty()
            && correction.text != last.trim()
            && prefix.contains(correction.text.as_str())
        {
            correction.text = last.trim().to_owned();
        }
        correction
    }
}

impl Pending {
    /// Takes tokens (verified ones without model work) until the correction ends or a token
    /// must be forwarded. Greedy; with `one_sentence` it ends after the first sentence.
    pub(super) fn next(&mut self) -> Result<Progress> {
        while self.tokens < self.max_tokens {
            let (token, cached) = match (self.ahead.pop_front(), &self.logits) {
                (Some(next), _) => next,
                (None, Some(l)) => (self.sampler.sample(l, &[], &[])?, false),
                (None, None) => {
                    return Err(Error::Protocol {
                        component: "correct_batch",
                        reason: "no logits to decode from".into(),
                    });
                }
            };
            self.tokens += 1;
            if self.eos.contains(&token) {
                break;
            }
            let before = self.text.len();
            self.text.push_str(&self.stream.push(token)?);
            let stop = self.stop_in_new_text(before);
            if let Some(at) = stop {
                self.text.truncate(at);
            }
            if self.one_sentence {
                let body = self.text.trim_start();
                if let Some(end) = first_sentence_end(body) {
                    return Ok(Progress::Done(Correction {
                        text: body[..end].trim().to_owned(),
                        tokens: self.tokens,
                    }));
                }
            }
            if stop.is_some() {
                return Ok(Progress::Done(Correction {
                    text: self.text.trim().to_owned(),
                    tokens: self.tokens,
                }));
            }
            if self.tokens < self.max_tokens && !cached {
                return Ok(Progress::Feed(token));
            }
        }
        self.finish()
    }

    /// Where the earliest stop text begins, if the text from byte `before` on completed one.
    /// The text before it held none (the correction would have ended), so only the last
    /// `longest - 1` bytes before it can start one: each step searches a short tail, not the
    /// whole text again.
    fn stop_in_new_text(&self, before: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let mut from = before.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let tail = &self.text[from..];
        self.stops
            .iter()
            .filter_map(|s| tail.find(s.as_str()))
            .min()
            .map(|at| from + at)
    }

    /// The text so far, as the correction's end.
    fn finish(&mut self) -> Result<Progress> {
        self.text.push_str(&self.stream.flush()?);
        Ok(Progress::Done(Correction {
            text: self.text.trim().to_owned(),
            tokens: self.tokens,
        }))
    }
}

/// Corrections by several correctors over the same model at once, each exactly what its own
/// corrector would return alone (see the [module docs](self)). Returns each correction with the
/// time from the start of the call to its end, in the order of `requests`.
///
/// Errors if two requests name the same corrector, an index is out of range, or the correctors
/// do not run the same model.
pub fn correct_batch<M: CausalLm>(
    correctors: &mut [LocalCorrector<'_, M>],
    requests: &[CorrectRequest<'_>],
) -> Result<Vec<(Correction, Duration)>> {
    let started = Instant::now();
    let mut seen = vec![false; correctors.len()];
    for r in requests {
        match seen.get_mut(r.corrector) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::InvalidConfig {
                    field: "requests",
                    reason: format!("corrector {} is out of range or named twice", r.corrector),
                });
            }
        }
    }
    let Some(first) = correctors.first() else {
        return Ok(Vec::new());
    };
    let model = first.model;
    if correctors.iter().any(|c| !std::ptr::eq(c.model, model)) {
        return Err(Error::InvalidConfig {
            field: "correctors",
            reason: "a batch of corrections needs correctors over one model".into(),
        });
    }
    let mut done: Vec<Option<(Correction, Duration)>> = vec![None; requests.len()];
    let mut active: Vec<(usize, Pending)> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let corrector = &mut correctors[r.corrector];
        let pending = corrector.begin_correction(&r.task)?;
        active.push((i, pending));
    }
    while !active.is_empty() {
        let mut feeding = Vec::with_capacity(active.len());
        for (i, mut pending) in std::mem::take(&mut active) {
            let r = &requests[i];
            let progress = if r.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                pending.finish()?
            } else {
                pending.next()?
            };
            match progress {
                Progress::Done(correction) => {
                    let correction = correctors[r.corrector].settle(&r.task, correction);
                    done[i] = Some((correction, started.elapsed()));
                }
                Progress::Feed(token) => feeding.push((i, pending, token)),
            }
        }
        if feeding.is_empty() {
            break;
        }
        let tokens: Vec<u32> = feeding.iter().map(|(_, _, t)| *t).collect();
        let logits = {
            // Disjoint correctors: each request names a different one (checked above).
            let mut by_index: Vec<Option<&mut LocalCorrector<'_, M>>> =
                correctors.iter_mut().map(Some).collect();
            let mut contexts: Vec<&mut Context> = feeding
                .iter()
                .map(|(i, _, _)| {
                    by_index[requests[*i].corrector]
                        .take()
                        .map(|c| &mut c.ctx)
                        .ok_or_else(|| Error::Protocol {
                            component: "correct_batch",
                            reason: "a corrector is fed twice in one step".into(),
                        })
                })
                .collect::<Result<_>>()?;
            Context::feed_many(model, &mut contexts, &tokens)?
        };
        for ((i, mut pending, _), logits) in feeding.into_iter().zip(logits) {
            correctors[requests[i].corrector].forwarded += 1;
            pending.logits = Some(logits);
            active.push((i, pending));
        }
    }
    done.into_iter()
        .map(|d| {
            d.ok_or_else(|| Error::Protocol {
                component: "correct_batch",
                reason: "a correction did not finish".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aligner_model::{ModelTokenizer, hub};

    use super::*;

    /// A correction whose every token is already chosen (as verified draft tokens are): `text`
    /// tokenised by the embedded model's tokenizer (imported by `cargo xtask setup`).
    fn chosen(text: &str, stops: &[&str], one_sentence: bool) -> Pending {
        let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
        let tokenizer = ModelTokenizer::from_dir(&dir).expect("run `cargo xtask setup` first");
        let ids = tokenizer.encode(text, false).expect("encode");
        Pending {
            ahead: ids.iter().map(|&t| (t, true)).collect(),
            logits: None,
            sampler: Sampler::new(SamplingConfig::greedy()).expect("greedy"),
            stream: TextStream::new(tokenizer.clone()),
            eos: tokenizer.eos_ids().to_vec(),
            text: String::new(),
            tokens: 0,
            max_tokens: 1000,
            one_sentence,
            stops: stops.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn done(mut pending: Pending) -> Result<String> {
        match pending.next()? {
            Progress::Done(c) => Ok(c.text),
            Progress::Feed(t) => panic!("asked to forward token {t}"),
        }
    }

    #[test]
    fn a_correction_ends_where_a_section_header_begins() {
        let copied = "Fill the kettle. Let it boil and\n##Correction: Fill the kettle.";
        let stops = ["##Question:", "##Answer:", "##Correction:"];
        assert_eq!(
            done(chosen(copied, &stops, false)).unwrap(),
            "Fill the kettle. Let it boil and"
        );
        // With one sentence, the first sentence still comes first.
        assert_eq!(
            done(chosen(copied, &stops, true)).unwrap(),
            "Fill the kettle."
        );
        assert_eq!(
            done(chosen("Let it boil\n##Correction: x", &stops, true)).unwrap(),
            "Let it boil"
        );
        // The earliest header wins; text before any header is kept whole.
        assert_eq!(
            done(chosen("Boil it.##Answer: a ##Question: q", &stops, false)).unwrap(),
            "Boil it."
        );
        // Without stops the same tokens run out, and decoding would need logits.
        assert!(matches!(
            done(chosen(copied, &[], false)),
            Err(Error::Protocol { .. })
        ));
    }
}
