//! Many questions at once: one [`StreamMachine`] per question, with the upstream's decoding
//! shared between them.
//!
//! A [`StreamBatch`] has a fixed number of slots, each with its own [`LocalUpstream`] and
//! [`LocalCorrector`] (so each keeps its own KV caches across rounds). Questions enter free
//! slots as earlier ones finish (continuous batching). In every round the machines waiting for
//! a sentence draft it together through [`draft_batch`]: their prompts and cache
//! synchronisations run one by one, but each decoding step of all unfinished sentences is one
//! [`CausalLm::decode_step`], which reads every weight once for all of them. Corrections then
//! run slot by slot.
//!
//! Every machine produces exactly the record it would produce alone (the tests check it), so
//! batching changes the wall time only.
//!
//! ```no_run
//! use std::path::Path;
//!
//! use aligner_model::{InferenceModel, ModelTokenizer, WeightFormat};
//! use aligner_stream::{CorrectorConfig, Event, MachineConfig, StreamBatch, UpstreamConfig};
//! use tch::{Device, Kind};
//!
//! let dir = aligner_model::hub::ensure_default_model(&mut |_, _, _| {})?;
//! let cpu = |dir: &Path, format| InferenceModel::load(dir, Kind::Float, Device::Cpu, Some(format));
//! let (upstream, up_tok) = cpu(&dir, WeightFormat::Int4)?;
//! let (aligner, al_tok) = cpu(Path::new("assets/stream-aligner"), WeightFormat::Int8)?;
//! let (up_tok, al_tok) = (ModelTokenizer::from_dir(&up_tok)?, ModelTokenizer::from_dir(&al_tok)?);
//! let mut batch = StreamBatch::new(
//!     4, &upstream, &up_tok, &UpstreamConfig::default(),
//!     &aligner, &al_tok, &CorrectorConfig::default(), MachineConfig::default(),
//! )?;
//! let questions = ["What is 17 + 25?", "Tom has 3 boxes of 12 eggs and breaks 5. How many are left?"];
//! let records = batch.run(&questions, |i, event| {
//!     if let Event::Committed(round) = event {
//!         println!("[{i}] {}", round.committed); // final text of question i, sentence by sentence
//!     }
//! })?;
//! assert_eq!(records.len(), questions.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use aligner_model::{CausalLm, ModelTokenizer};

use crate::local::{
    CorrectorConfig, DraftRequest, LocalCorrector, LocalUpstream, UpstreamConfig, draft_batch,
};
use crate::machine::{Corrector, Draft, Event, MachineConfig, StreamMachine, Upstream};
use crate::record::Record;
use crate::{Conversation, Error, Result};

/// A fixed number of (upstream, corrector) slots that answer questions together.
pub struct StreamBatch<'m, U: CausalLm, C: Corrector> {
    upstreams: Vec<LocalUpstream<'m, U>>,
    correctors: Vec<C>,
    config: MachineConfig,
}

impl<U: CausalLm, C: Corrector> std::fmt::Debug for StreamBatch<'_, U, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBatch")
            .field("slots", &self.upstreams.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The upstream of a machine whose drafts are written elsewhere (by [`draft_batch`], then
/// handed in with [`StreamMachine::supply_draft`]): no call may reach it, and one that does is
/// a protocol error rather than a silent second draft. Pass it to [`StreamMachine::step`] to
/// make the machine's other transitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn draft_conversation(
        &mut self,
        _conversation: &Conversation,
        _accepted: &str,
        _max_tokens: usize,
        _cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        Err(Error::Protocol {
            component: "batch",
            reason: "a machine asked for a draft outside the batched drafting step".into(),
        })
    }
}

impl<'m, U: CausalLm, A: CausalLm> StreamBatch<'m, U, LocalCorrector<'m, A>> {
    /// `slots` (>= 1) upstream/corrector pairs over the two models, each configured alike.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slots: usize,
        upstream: &'m U,
        upstream_tokenizer: &ModelTokenizer,
        upstream_config: &UpstreamConfig,
        aligner: &'m A,
        aligner_tokenizer: &ModelTokenizer,
        corrector_config: &CorrectorConfig,
        config: MachineConfig,
    ) -> Result<Self> {
        if slots == 0 {
            return Err(Error::InvalidConfig {
                field: "slots",
                reason: "must be at least 1".into(),
            });
        }
        let upstreams = (0..slots)
            .map(|_| {
                LocalUpstream::new(
                    upstream,
                    upstream_tokenizer.clone(),
                    upstream_config.clone(),
                )
            })
            .collect::<Result<_>>()?;
        let correctors = (0..slots)
            .map(|_| {
                LocalCorrector::new(aligner, aligner_tokenizer.clone(), corrector_config.clone())
            })
            .collect::<Result<_>>()?;
        Self::from_parts(upstreams, correctors, config)
    }
}

impl<'m, U: CausalLm, C: Corrector> StreamBatch<'m, U, C> {
    /// Slots from ready-made upstreams (over one model) and correctors of any kind, one each
    /// per slot; e.g. [`crate::Identity`] correctors give the upstream alone, batched.
    pub fn from_parts(
        upstreams: Vec<LocalUpstream<'m, U>>,
        correctors: Vec<C>,
        config: MachineConfig,
    ) -> Result<Self> {
        config.validate()?;
        if upstreams.is_empty() || upstreams.len() != correctors.len() {
            return Err(Error::InvalidConfig {
                field: "slots",
                reason: format!(
                    "{} upstreams and {} correctors: need the same number, at least 1",
                    upstreams.len(),
                    correctors.len()
                ),
            });
        }
        Ok(Self {
            upstreams,
            correctors,
            config,
        })
    }

    /// Number of slots (questions answered at once).
    #[must_use]
    pub fn slots(&self) -> usize {
        self.upstreams.len()
    }

    /// Answers every question and returns their records in the order of `questions`, calling
    /// `on_event(question_index, event)` after every transition of every machine; each
    /// question's last event is [`Event::Done`].
    pub fn run<Q: AsRef<str>>(
        &mut self,
        questions: &[Q],
        mut on_event: impl FnMut(usize, &Event),
    ) -> Result<Vec<Record>> {
        let mut records: Vec<Option<Record>> = vec![None; questions.len()];
        let mut waiting = questions.iter().map(AsRef::as_ref).enumerate();
        let mut live: Vec<Option<(usize, StreamMachine)>> =
            (0..self.slots()).map(|_| None).collect();
        loop {
            // Fill free slots; advance every machine until it waits for a draft or is done.
            for (slot, entry) in live.iter_mut().enumerate() {
                loop {
                    if entry.is_none() {
                        let Some((index, question)) = waiting.next() else {
                            break;
                        };
                        self.upstreams[slot].restart();
                        *entry = Some((index, StreamMachine::new(question, self.config.clone())?));
                    }
                    let Some((index, machine)) = entry.as_mut() else {
                        break;
                    };
                    if machine.is_done() {
                        on_event(*index, &Event::Done(machine.summary().clone()));
                        records[*index] = Some(machine.record());
                        *entry = None;
                        continue;
                    }
                    if machine.draft_budget().is_some() {
                        break;
                    }
                    match machine.step(&mut NoUpstream, &mut self.correctors[slot])? {
                        // Reported once, when the slot is freed.
                        Some(Event::Done(_)) | None => {}
                        Some(event) => on_event(*index, &event),
                    }
                }
            }
            let requests: Vec<DraftRequest<'_>> = live
                .iter()
                .enumerate()
                .filter_map(|(slot, entry)| {
                    let (_, machine) = entry.as_ref()?;
                    Some(DraftRequest {
                        upstream: slot,
                        conversation: machine.conversation(),
                        accepted: machine.accepted(),
                        max_tokens: machine.draft_budget()?,
                        cancel: None,
                    })
                })
                .collect();
            if requests.is_empty() {
                break;
            }
            let drafts: Vec<(usize, Draft, Duration)> =
                draft_batch(&mut self.upstreams, &requests)?
                    .into_iter()
                    .zip(&requests)
                    .map(|((draft, elapsed), r)| (r.upstream, draft, elapsed))
                    .collect();
            for (slot, draft, elapsed) in drafts {
                if let Some((index, machine)) = live[slot].as_mut()
                    && let Some(event) = machine.supply_draft(draft, elapsed)?
                {
                    on_event(*index, &event);
                }
            }
        }
        records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| Error::Protocol {
                    component: "batch",
                    reason: format!("question {i} was never answered"),
                })
            })
            .collect()
    }
}
