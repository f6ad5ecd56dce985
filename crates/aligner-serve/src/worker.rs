//! The model thread: every request's state machine, with the upstream's decoding steps shared
//! between all requests in flight.
//!
//! The worker owns the models (loaded on its own thread, never on the async runtime) and a
//! fixed number of slots, each with its own [`LocalUpstream`] and [`LocalCorrector`] (so each
//! keeps its KV caches). Requests wait in a bounded queue and take a slot as soon as one is free
//! (continuous batching, as [`StreamBatch`](aligner_stream::StreamBatch) does for a fixed list
//! of questions). Each loop iteration:
//!
//! 1. admits waiting requests into free slots;
//! 2. drops requests whose client went away, and fails those past their deadline (or all of
//!    them once the server is stopping);
//! 3. advances every machine until it waits for a draft: corrections, commits (each committed
//!    sentence goes to its client at once), finished answers;
//! 4. drafts the next sentence of every waiting machine together with
//!    [`draft_batch`]: one [`CausalLm::decode_step`] per token for all of them. A request
//!    abandoned meanwhile stops decoding at the next step.
//!
//! Every request gets the answer it would get alone (greedy decoding is deterministic, and a
//! batched decoding step gives each row the logits it would get alone); only the wall time
//! changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use aligner_model::generate::SamplingConfig;
use aligner_model::{CausalLm, ModelTokenizer};
use aligner_stream::batch::NoUpstream;
use aligner_stream::machine::join_correction;
use aligner_stream::{
    Conversation, CorrectorConfig, DoneReason, DraftRequest, Event, Identity, LocalCorrector,
    LocalUpstream, MachineConfig, Record, StreamMachine, UpstreamConfig, draft_batch,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::AlignMode;

/// What answers requests: the two models with their tokenizers and settings. Built by the
/// loader given to [`Server::start`](crate::Server::start), on the worker thread.
#[derive(Debug)]
pub struct Engine<U, A> {
    /// The upstream model (writes the answer).
    pub upstream: U,
    /// Its tokenizer.
    pub upstream_tokenizer: ModelTokenizer,
    /// How it is prompted; its sampling is the default of requests that set none (greedy is
    /// the usual choice for a server whose answers should be reproducible).
    pub upstream_config: UpstreamConfig,
    /// The aligner model (corrects the answer).
    pub aligner: A,
    /// Its tokenizer.
    pub aligner_tokenizer: ModelTokenizer,
    /// How it is prompted.
    pub corrector_config: CorrectorConfig,
    /// The Stream Aligner's limits; each request's `max_tokens` replaces `max_total_tokens`.
    pub machine: MachineConfig,
}

/// One request, as the worker sees it.
pub(crate) struct Job {
    pub conversation: Conversation,
    pub mode: AlignMode,
    pub max_tokens: usize,
    /// `None`: the engine's default.
    pub sampling: Option<SamplingConfig>,
    pub deadline: Instant,
    /// Set when the client is gone: no more work for this request.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<JobEvent>,
}

/// What the worker tells a request's handler.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// A final sentence of the answer, and the upstream's draft it replaced.
    Sentence {
        text: String,
        draft: String,
        changed: bool,
    },
    /// The answer is complete.
    Done(Box<Outcome>),
    /// The request failed; nothing more comes.
    Failed(JobError),
}

/// A finished answer.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub record: Record,
}

/// Why a request failed in the worker.
#[derive(Debug, Clone)]
pub(crate) enum JobError {
    /// It ran past its deadline.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The request cannot be answered (e.g. its conversation does not render).
    BadRequest(String),
    /// A model error.
    Internal(String),
}

/// Counters shared with the HTTP side.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Requests in the queue.
    pub queued: AtomicUsize,
    /// Requests in slots.
    pub active: AtomicUsize,
}

/// A request in a slot.
struct Active {
    job: Job,
    machine: StreamMachine,
}

/// How long an idle worker waits for a request before checking whether it should stop.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Runs the worker until the queue's senders are gone (or `stop` is set and nothing is left).
pub(crate) fn run<U: CausalLm, A: CausalLm>(
    engine: &Engine<U, A>,
    slots: usize,
    jobs: &Receiver<Job>,
    stats: &Stats,
    stop: &AtomicBool,
) {
    let default_sampling = engine.upstream_config.sampling.clone();
    let new_upstream = |sampling: &SamplingConfig| {
        LocalUpstream::new(
            &engine.upstream,
            engine.upstream_tokenizer.clone(),
            UpstreamConfig {
                sampling: sampling.clone(),
                ..engine.upstream_config.clone()
            },
        )
    };
    let mut upstreams = Vec::with_capacity(slots);
    let mut correctors = Vec::with_capacity(slots);
    for _ in 0..slots {
        // Checked by `Server::start` with the same settings, so these cannot fail here.
        let (Ok(u), Ok(c)) = (
            new_upstream(&default_sampling),
            LocalCorrector::new(
                &engine.aligner,
                engine.aligner_tokenizer.clone(),
                engine.corrector_config.clone(),
            ),
        ) else {
            return;
        };
        upstreams.push(u);
        correctors.push(c);
    }
    let mut samplings = vec![default_sampling.clone(); slots];
    let mut live: Vec<Option<Active>> = (0..slots).map(|_| None).collect();
    let mut open = true;
    loop {
        // 1. Admit.
        for slot in 0..slots {
            if live[slot].is_some() || !open {
                continue;
            }
            let idle = live.iter().all(Option::is_none);
            let job = if idle {
                match jobs.recv_timeout(IDLE_POLL) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if job.cancel.load(Ordering::Relaxed) {
                continue;
            }
            let sampling = job
                .sampling
                .clone()
                .unwrap_or_else(|| default_sampling.clone());
            if sampling != samplings[slot] {
                match new_upstream(&sampling) {
                    Ok(u) => {
                        upstreams[slot] = u;
                        samplings[slot] = sampling;
                    }
                    Err(e) => {
                        let _ = job
                            .events
                            .send(JobEvent::Failed(JobError::BadRequest(e.to_string())));
                        continue;
                    }
                }
            }
            upstreams[slot].restart();
            let config = MachineConfig {
                max_total_tokens: job.max_tokens,
                ..engine.machine.clone()
            };
            match StreamMachine::with_conversation(job.conversation.clone(), config) {
                Ok(machine) => {
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    live[slot] = Some(Active { job, machine });
                }
                Err(e) => {
                    let _ = job
                        .events
                        .send(JobEvent::Failed(JobError::BadRequest(e.to_string())));
                }
            }
        }
        if !open && live.iter().all(Option::is_none) {
            return;
        }
        // 2. Abandoned, late, or stopping.
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        for entry in &mut live {
            let Some(active) = entry else { continue };
            let failure = if active.job.cancel.load(Ordering::Relaxed) {
                Some(None)
            } else if stopping {
                Some(Some(JobError::ShuttingDown))
            } else if now >= active.job.deadline {
                Some(Some(JobError::Timeout))
            } else {
                None
            };
            if let Some(error) = failure {
                if let Some(error) = error {
                    let _ = active.job.events.send(JobEvent::Failed(error));
                }
                *entry = None;
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // 3. Advance every machine until it waits for a draft.
        for slot in 0..slots {
            if live[slot].is_none() {
                continue;
            }
            if let Err(error) = advance(
                &mut live[slot],
                &mut correctors[slot],
                &upstreams[slot],
                &engine.upstream_tokenizer,
            ) && let Some(active) = live[slot].take()
            {
                let _ = active.job.events.send(JobEvent::Failed(error));
            }
            if live[slot].is_none() {
                stats.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // 4. Draft together.
        let requests: Vec<DraftRequest<'_>> = live
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let active = entry.as_ref()?;
                Some(DraftRequest {
                    upstream: slot,
                    conversation: active.machine.conversation(),
                    accepted: active.machine.accepted(),
                    max_tokens: active.machine.draft_budget()?,
                    cancel: Some(&active.job.cancel),
                })
            })
            .collect();
        if requests.is_empty() {
            continue;
        }
        let slots_drafted: Vec<usize> = requests.iter().map(|r| r.upstream).collect();
        match draft_batch(&mut upstreams, &requests) {
            Ok(drafts) => {
                for (slot, (draft, elapsed)) in slots_drafted.into_iter().zip(drafts) {
                    let Some(active) = live[slot].as_mut() else {
                        continue;
                    };
                    if active.job.cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = active.machine.supply_draft(draft, elapsed) {
                        let _ = active
                            .job
                            .events
                            .send(JobEvent::Failed(JobError::Internal(e.to_string())));
                        live[slot] = None;
                        stats.active.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                // One failure in a shared pass fails every request in it; the slots' upstreams
                // start their next request afresh.
                for slot in slots_drafted {
                    if let Some(active) = live[slot].take() {
                        let _ = active
                            .job
                            .events
                            .send(JobEvent::Failed(JobError::Internal(e.to_string())));
                        stats.active.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Steps the machine in `entry` until it waits for a draft, sending its committed sentences;
/// when it is done, finishes the answer (whole mode: the aligner's rewrite) and empties the
/// slot. Stops early, emptying the slot, when the client is gone.
fn advance<U: CausalLm, A: CausalLm>(
    entry: &mut Option<Active>,
    corrector: &mut LocalCorrector<'_, A>,
    upstream: &LocalUpstream<'_, U>,
    tokenizer: &ModelTokenizer,
) -> Result<(), JobError> {
    let internal = |e: aligner_stream::Error| JobError::Internal(e.to_string());
    loop {
        let Some(active) = entry.as_mut() else {
            return Ok(());
        };
        if active.job.cancel.load(Ordering::Relaxed) {
            *entry = None;
            return Ok(());
        }
        if active.machine.is_done() {
            let outcome = finish(active, corrector, upstream, tokenizer)?;
            let _ = active.job.events.send(JobEvent::Done(Box::new(outcome)));
            *entry = None;
            return Ok(());
        }
        if active.machine.draft_budget().is_some() {
            return Ok(());
        }
        let event = match active.job.mode {
            AlignMode::Stream => active.machine.step(&mut NoUpstream, corrector),
            AlignMode::Whole | AlignMode::Off => {
                active.machine.step(&mut NoUpstream, &mut Identity)
            }
        }
        .map_err(internal)?;
        if let (Some(Event::Committed(round)), AlignMode::Stream | AlignMode::Off) =
            (&event, active.job.mode)
        {
            let _ = active.job.events.send(JobEvent::Sentence {
                text: round.committed.clone(),
                draft: round.last.clone(),
                changed: round.changed,
            });
        }
    }
}

/// The outcome of a finished machine; in whole mode, the aligner rewrites the answer first and
/// its rewrite is sent as the one sentence.
fn finish<U: CausalLm, A: CausalLm>(
    active: &mut Active,
    corrector: &mut LocalCorrector<'_, A>,
    upstream: &LocalUpstream<'_, U>,
    tokenizer: &ModelTokenizer,
) -> Result<Outcome, JobError> {
    let internal = |e: aligner_stream::Error| JobError::Internal(e.to_string());
    let mut record = active.machine.record();
    if active.job.mode == AlignMode::Whole {
        let correction = corrector
            .rewrite_answer(active.machine.question(), &record.draft)
            .map_err(internal)?;
        let committed = join_correction(&record.draft, &correction.text);
        let changed = committed != record.draft;
        let _ = active.job.events.send(JobEvent::Sentence {
            text: committed.clone(),
            draft: record.draft.clone(),
            changed,
        });
        record.mode = aligner_stream::Mode::Aligner;
        record.summary.corrector_tokens = correction.tokens;
        record.summary.changed = usize::from(changed);
        record.answer = committed;
    } else if active.job.mode == AlignMode::Off {
        record.mode = aligner_stream::Mode::Upstream;
    }
    let finish_reason = match record.summary.reason {
        DoneReason::MaxRounds | DoneReason::MaxTotalTokens => "length",
        DoneReason::Eos | DoneReason::Stalled | DoneReason::StopText => "stop",
    };
    let completion_tokens = tokenizer
        .encode(&record.answer, false)
        .map_err(|e| JobError::Internal(e.to_string()))?
        .len();
    Ok(Outcome {
        finish_reason,
        prompt_tokens: upstream.prompt_ids().len(),
        completion_tokens,
        record,
    })
}
