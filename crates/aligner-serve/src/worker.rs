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
//! 3. advances every machine until it waits for a draft: commits (each committed sentence goes
//!    to its client at once), finished answers, and the aligner's corrections — those of every
//!    machine waiting for one (a sentence in stream mode, the whole answer in whole mode) made
//!    together with [`correct_batch`]: prompts and draft verifications per request, then one
//!    [`CausalLm::decode_step`] per token for all of them;
//! 4. drafts the next sentence of every waiting machine together with
//!    [`draft_batch`]: one [`CausalLm::decode_step`] per token for all of them. A request
//!    abandoned meanwhile stops decoding at the next step.
//!
//! Every request gets the answer it would get alone (greedy decoding is deterministic, and a
//! batched decoding step gives each row the logits it would get alone); only the wall time
//! changes. A request with `stop` sequences ends after the sentence in which one appears, and
//! its answer is cut before it (see [`crate::stop`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use aligner_model::generate::SamplingConfig;
use aligner_model::{CausalLm, ModelTokenizer};
use aligner_stream::batch::NoUpstream;
use aligner_stream::machine::join_correction;
use aligner_stream::{
    Conversation, CorrectRequest, Correction, CorrectionTask, CorrectorConfig, DoneReason,
    DraftRequest, Event, Identity, LocalCorrector, LocalUpstream, MachineConfig, Record,
    StreamMachine, UpstreamConfig, correct_batch, draft_batch,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::{AlignMode, stop};

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
    /// The answer ends before the first of these (OpenAI's `stop`); empty: no stop sequences.
    pub stop: Vec<String>,
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
        // 3. Advance every machine until it waits for a draft, correcting together.
        loop {
            let mut waiting = Vec::new();
            for slot in 0..slots {
                if live[slot].is_none() {
                    continue;
                }
                match advance(
                    &mut live[slot],
                    &upstreams[slot],
                    &engine.upstream_tokenizer,
                ) {
                    Ok(Wait::Correction) => waiting.push(slot),
                    Ok(Wait::Draft | Wait::Nothing) => {}
                    Err(error) => {
                        if let Some(active) = live[slot].take() {
                            let _ = active.job.events.send(JobEvent::Failed(error));
                        }
                    }
                }
                if live[slot].is_none() {
                    stats.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
            if waiting.is_empty() {
                break;
            }
            correct_together(
                &waiting,
                &mut live,
                &mut correctors,
                &upstreams,
                &engine.upstream_tokenizer,
                stats,
            );
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
            // The slots' upstreams start their next request afresh.
            Err(e) => fail_all(&slots_drafted, &mut live, stats, &e),
        }
    }
}

/// What a slot's request waits for after [`advance`].
enum Wait {
    /// The slot is empty (the answer is finished or its client is gone).
    Nothing,
    /// The upstream's next sentence.
    Draft,
    /// The aligner: a sentence's correction in stream mode, the whole answer's in whole mode.
    Correction,
}

/// Whether the machine's answer is complete: it is done, or a stop sequence has appeared.
fn ended(active: &Active) -> bool {
    active.machine.is_done() || stop::find(active.machine.accepted(), &active.job.stop).is_some()
}

/// Steps the machine in `entry` until it waits for a draft or a correction, sending its
/// committed sentences; when the answer is complete (and, in whole mode, needs no more
/// correction), finishes it and empties the slot. Stops early, emptying the slot, when the
/// client is gone.
fn advance<U: CausalLm>(
    entry: &mut Option<Active>,
    upstream: &LocalUpstream<'_, U>,
    tokenizer: &ModelTokenizer,
) -> Result<Wait, JobError> {
    let internal = |e: aligner_stream::Error| JobError::Internal(e.to_string());
    loop {
        let Some(active) = entry.as_mut() else {
            return Ok(Wait::Nothing);
        };
        if active.job.cancel.load(Ordering::Relaxed) {
            *entry = None;
            return Ok(Wait::Nothing);
        }
        if ended(active) {
            if active.job.mode == AlignMode::Whole {
                return Ok(Wait::Correction);
            }
            let outcome = finish(active, None, upstream, tokenizer)?;
            let _ = active.job.events.send(JobEvent::Done(Box::new(outcome)));
            *entry = None;
            return Ok(Wait::Nothing);
        }
        if active.machine.draft_budget().is_some() {
            return Ok(Wait::Draft);
        }
        if active.job.mode == AlignMode::Stream && active.machine.sentence_to_correct().is_some() {
            return Ok(Wait::Correction);
        }
        // No other transition asks the corrector: whole and off modes commit the drafts as
        // they are, and stream mode's corrections are made by `correct_together`.
        let event = active
            .machine
            .step(&mut NoUpstream, &mut Identity)
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

/// Makes the corrections that the requests in `waiting` wait for with one [`correct_batch`],
/// and hands each to its machine (stream mode) or finishes its answer with it (whole mode).
/// One failure in the shared pass fails every request in it.
fn correct_together<U: CausalLm, A: CausalLm>(
    waiting: &[usize],
    live: &mut [Option<Active>],
    correctors: &mut [LocalCorrector<'_, A>],
    upstreams: &[LocalUpstream<'_, U>],
    tokenizer: &ModelTokenizer,
    stats: &Stats,
) {
    // The whole-mode drafts (up to a stop sequence), owned for the requests to borrow.
    let drafts: Vec<String> = waiting
        .iter()
        .map(|&slot| match &live[slot] {
            Some(active) if active.job.mode == AlignMode::Whole => {
                stop::cut(&active.machine.record().draft, &active.job.stop).to_owned()
            }
            _ => String::new(),
        })
        .collect();
    let requests: Vec<CorrectRequest<'_>> = waiting
        .iter()
        .zip(&drafts)
        .filter_map(|(&slot, draft)| {
            let active = live[slot].as_ref()?;
            let machine = &active.machine;
            let task = match active.job.mode {
                AlignMode::Whole => CorrectionTask::Answer {
                    question: machine.question(),
                    answer: draft,
                },
                _ => CorrectionTask::Sentence {
                    question: machine.question(),
                    prefix: machine.accepted(),
                    last: machine.sentence_to_correct()?,
                },
            };
            Some(CorrectRequest {
                corrector: slot,
                task,
                cancel: Some(&active.job.cancel),
            })
        })
        .collect();
    let result = correct_batch(correctors, &requests);
    drop(requests);
    let corrections = match result {
        Ok(corrections) => corrections,
        Err(e) => return fail_all(waiting, live, stats, &e),
    };
    for (&slot, (correction, elapsed)) in waiting.iter().zip(corrections) {
        let Some(active) = live[slot].as_mut() else {
            continue;
        };
        if active.job.cancel.load(Ordering::Relaxed) {
            continue;
        }
        let done = if active.job.mode == AlignMode::Whole {
            finish(active, Some(correction), &upstreams[slot], tokenizer).map(|outcome| {
                let _ = active.job.events.send(JobEvent::Done(Box::new(outcome)));
            })
        } else {
            match active.machine.supply_correction(correction, elapsed) {
                Ok(_) => continue,
                Err(e) => Err(JobError::Internal(e.to_string())),
            }
        };
        if let Err(error) = done {
            let _ = active.job.events.send(JobEvent::Failed(error));
        }
        live[slot] = None;
        stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Fails the requests in `slots` with `error` of the shared pass they were in, emptying their
/// slots.
fn fail_all(
    slots: &[usize],
    live: &mut [Option<Active>],
    stats: &Stats,
    error: &aligner_stream::Error,
) {
    for &slot in slots {
        if let Some(active) = live[slot].take() {
            let error = JobError::Internal(error.to_string());
            let _ = active.job.events.send(JobEvent::Failed(error));
            stats.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The outcome of a finished machine; in whole mode, with the aligner's `rewrite` of the
/// answer, which is sent as the one sentence. The answer is cut before a stop sequence.
fn finish<U: CausalLm>(
    active: &mut Active,
    rewrite: Option<Correction>,
    upstream: &LocalUpstream<'_, U>,
    tokenizer: &ModelTokenizer,
) -> Result<Outcome, JobError> {
    let mut record = active.machine.record();
    if let Some(correction) = rewrite {
        let drafted = stop::cut(&record.draft, &active.job.stop).len();
        record.draft.truncate(drafted);
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
    let finish_reason = finish_reason(&mut record, &active.job.stop);
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

/// OpenAI's finish reason of a finished `record`, after cutting its answer before the first
/// of `stops`: `stop` for an answer that ended (EOS, a stop text or sequence), `length` for one
/// cut by a limit.
pub(crate) fn finish_reason(record: &mut Record, stops: &[String]) -> &'static str {
    if stop::cut_record(record, stops) {
        return "stop";
    }
    match record.summary.reason {
        DoneReason::MaxRounds | DoneReason::MaxTotalTokens => "length",
        DoneReason::Eos | DoneReason::Stalled | DoneReason::StopText => "stop",
    }
}
