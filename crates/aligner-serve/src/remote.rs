//! The server with a remote upstream: a model behind an OpenAI-compatible API (completions or
//! chat) writes the answers, the local aligner corrects them.
//!
//! The remote server batches its own requests, so nothing is shared between requests on the
//! upstream's side: each request in flight runs on a thread of its own with its own upstream
//! (built by the [`RemoteEngine::new_upstream`] factory), and drafts through
//! [`Upstream::draft_conversation`] with the request's cancellation flag, so a client that goes
//! away closes the remote stream at its next chunk. The aligner stays on the worker thread (it
//! owns the model): the request threads send it their sentences to correct and wait for the
//! answer. At most [`ServeConfig::slots`](crate::ServeConfig::slots)
//! requests run at once, [`queue_capacity`](crate::ServeConfig::queue_capacity) more wait, and
//! one more is answered `429`. The deadline and shutdown are checked between drafts (a draft
//! ends at its first sentence, or at the upstream client's timeout).
//!
//! A chat upstream without prefix continuation cannot continue a corrected answer: its stream
//! mode is refused per request (`400`, code `mode_unsupported`); whole-answer and off modes ask
//! it for the whole answer in one request ([`Upstream::answer_whole`], which cannot be cut short
//! when the client goes away: it ends at the answer's end, its token cap or the upstream's
//! timeout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aligner_model::generate::SamplingConfig;
use aligner_model::remote::CompletionParams;
use aligner_model::{CausalLm, ModelTokenizer};
use aligner_stream::batch::NoUpstream;
use aligner_stream::machine::join_correction;
use aligner_stream::{
    Correction, Corrector, CorrectorConfig, Event, Identity, LocalCorrector, MachineConfig, Record,
    StreamMachine, Upstream, modes,
};

use crate::worker::{Job, JobError, JobEvent, Outcome, Stats, finish_reason};
use crate::{AlignMode, stop};

/// Builds a request's upstream from its sampling parameters (the engine's
/// [`RemoteEngine::params`], with the request's own sampling fields put in). Called on the
/// request's thread, once per request.
pub type UpstreamFactory = Box<
    dyn Fn(
            CompletionParams,
        ) -> Result<Box<dyn Upstream + Send>, Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync,
>;

/// What answers requests with a remote upstream: the factory of its upstreams and the local
/// aligner. Built by the loader given to
/// [`Server::start_remote`](crate::Server::start_remote), on the worker thread.
pub struct RemoteEngine<A> {
    /// Makes each request's upstream.
    pub new_upstream: UpstreamFactory,
    /// The sampling of requests that set none (`temperature: Some(0.0)` for greedy answers);
    /// `max_tokens` is replaced by each draft's cap.
    pub params: CompletionParams,
    /// Counts the tokens of prompts (rendered with its chat template, if it has one) and
    /// answers for the limits and the usage: the served model's tokenizer, or one close to it.
    pub tokenizer: ModelTokenizer,
    /// The system prompt the upstream is given first (as the upstreams built by
    /// `new_upstream` do), for counting prompt tokens.
    pub system: Option<String>,
    /// The aligner model (corrects the answer).
    pub aligner: A,
    /// Its tokenizer.
    pub aligner_tokenizer: ModelTokenizer,
    /// How it is prompted.
    pub corrector_config: CorrectorConfig,
    /// The Stream Aligner's limits; each request's `max_tokens` replaces `max_total_tokens`.
    pub machine: MachineConfig,
}

impl<A> std::fmt::Debug for RemoteEngine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine")
            .field("params", &self.params)
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

/// The request's sampling on top of the engine's parameters: greedy is temperature 0.
fn params_for(base: &CompletionParams, sampling: Option<&SamplingConfig>) -> CompletionParams {
    let Some(s) = sampling else {
        return base.clone();
    };
    CompletionParams {
        temperature: Some(s.temperature.unwrap_or(0.0)),
        top_p: s.top_p,
        top_k: s.top_k.and_then(|k| u32::try_from(k).ok()),
        seed: Some(s.seed),
        ..base.clone()
    }
}

/// A sentence (or whole answer) for the aligner on the worker thread.
pub(crate) struct AlignJob {
    question: String,
    prefix: String,
    text: String,
    /// Rewrite a whole answer (`text`) instead of correcting its next sentence.
    whole: bool,
    cancel: Arc<AtomicBool>,
    reply: std::sync::mpsc::SyncSender<Result<Correction, String>>,
}

/// How long an idle aligner waits for work before checking whether it should stop.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The worker thread's loop with a remote upstream: answers the aligner's jobs until every
/// sender is gone, or `stop` is set and none is waiting.
pub(crate) fn run_aligner<A: CausalLm>(
    corrector: &mut LocalCorrector<'_, A>,
    jobs: &Receiver<AlignJob>,
    stop: &AtomicBool,
) {
    loop {
        let job = match jobs.recv_timeout(IDLE_POLL) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if job.cancel.load(Ordering::Relaxed) {
            continue;
        }
        let result = if job.whole {
            corrector.rewrite_answer(&job.question, &job.text)
        } else {
            corrector.correct(&job.question, &job.prefix, &job.text)
        };
        let _ = job.reply.send(result.map_err(|e| e.to_string()));
    }
}

/// A request thread's [`Corrector`]: sends the sentence to the aligner on the worker thread and
/// waits for its correction.
struct AlignerClient {
    jobs: std::sync::mpsc::Sender<AlignJob>,
    cancel: Arc<AtomicBool>,
}

impl AlignerClient {
    fn ask(
        &self,
        question: &str,
        prefix: &str,
        text: &str,
        whole: bool,
    ) -> aligner_stream::Result<Correction> {
        let gone = || aligner_stream::Error::Protocol {
            component: "corrector",
            reason: "the aligner's worker thread stopped".into(),
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(AlignJob {
                question: question.to_owned(),
                prefix: prefix.to_owned(),
                text: text.to_owned(),
                whole,
                cancel: Arc::clone(&self.cancel),
                reply,
            })
            .map_err(|_| gone())?;
        answer
            .recv()
            .map_err(|_| gone())?
            .map_err(|reason| aligner_stream::Error::Protocol {
                component: "corrector",
                reason,
            })
    }
}

impl Corrector for AlignerClient {
    fn correct(
        &mut self,
        question: &str,
        prefix: &str,
        last: &str,
    ) -> aligner_stream::Result<Correction> {
        self.ask(question, prefix, last, false)
    }
}

/// Slots in use and requests waiting for one.
#[derive(Default)]
struct Occupancy {
    active: usize,
    queued: usize,
}

/// Why a request was not admitted.
pub(crate) enum Refused {
    /// Every slot and queue place is taken.
    Full,
    /// Its thread could not be started.
    Spawn(String),
}

/// The HTTP side of a remote upstream: admits requests and starts their threads.
pub(crate) struct RemoteBackend {
    new_upstream: UpstreamFactory,
    params: CompletionParams,
    /// Whether the upstream continues corrected answers (stream mode needs it).
    pub(crate) continues_answers: bool,
    tokenizer: ModelTokenizer,
    machine: MachineConfig,
    aligner: std::sync::mpsc::Sender<AlignJob>,
    slots: usize,
    queue_capacity: usize,
    occupancy: Mutex<Occupancy>,
    freed: Condvar,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

/// The parts of a [`RemoteEngine`] the request threads use.
pub(crate) struct RemoteParts {
    pub new_upstream: UpstreamFactory,
    pub params: CompletionParams,
    pub continues_answers: bool,
    pub tokenizer: ModelTokenizer,
    pub machine: MachineConfig,
}

impl RemoteBackend {
    pub(crate) fn new(
        parts: RemoteParts,
        aligner: std::sync::mpsc::Sender<AlignJob>,
        slots: usize,
        queue_capacity: usize,
        stats: Arc<Stats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            new_upstream: parts.new_upstream,
            params: parts.params,
            continues_answers: parts.continues_answers,
            tokenizer: parts.tokenizer,
            machine: parts.machine,
            aligner,
            slots,
            queue_capacity,
            occupancy: Mutex::new(Occupancy::default()),
            freed: Condvar::new(),
            stats,
            stop,
        }
    }

    fn occupancy(&self) -> std::sync::MutexGuard<'_, Occupancy> {
        self.occupancy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `job` (whose prompt is `prompt_tokens` tokens) and starts its thread, or refuses
    /// it when every slot and queue place is taken.
    pub(crate) fn submit(self: &Arc<Self>, job: Job, prompt_tokens: usize) -> Result<(), Refused> {
        let waits = {
            let mut o = self.occupancy();
            if o.active < self.slots {
                o.active += 1;
                self.stats.active.fetch_add(1, Ordering::Relaxed);
                false
            } else if o.queued < self.queue_capacity {
                o.queued += 1;
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                true
            } else {
                return Err(Refused::Full);
            }
        };
        let backend = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("aligner-request".into())
            .spawn(move || backend.run(job, prompt_tokens, waits));
        if let Err(e) = spawned {
            let mut o = self.occupancy();
            if waits {
                o.queued -= 1;
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            } else {
                o.active -= 1;
                self.stats.active.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(Refused::Spawn(e.to_string()));
        }
        Ok(())
    }

    /// A request's thread: waits for a slot if it must, answers, frees the slot.
    fn run(&self, job: Job, prompt_tokens: usize, waits: bool) {
        if waits && let Err(error) = self.wait_for_slot(&job) {
            if let Some(error) = error {
                let _ = job.events.send(JobEvent::Failed(error));
            }
            return;
        }
        match self.answer(&job, prompt_tokens) {
            Ok(outcome) => {
                let _ = job.events.send(JobEvent::Done(Box::new(outcome)));
            }
            Err(Some(error)) => {
                let _ = job.events.send(JobEvent::Failed(error));
            }
            Err(None) => {}
        }
        let mut o = self.occupancy();
        o.active -= 1;
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        drop(o);
        self.freed.notify_one();
    }

    /// Moves the request from the queue into a slot; `Err(None)` when its client went away.
    fn wait_for_slot(&self, job: &Job) -> Result<(), Option<JobError>> {
        let mut o = self.occupancy();
        loop {
            let failure = stopped(job, &self.stop);
            if failure.is_err() || o.active < self.slots {
                o.queued -= 1;
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                failure?;
                o.active += 1;
                self.stats.active.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            o = self
                .freed
                .wait_timeout(o, IDLE_POLL)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// The request's answer; `Err(None)` when its client went away.
    fn answer(&self, job: &Job, prompt_tokens: usize) -> Result<Outcome, Option<JobError>> {
        let internal = |e: aligner_stream::Error| match e {
            aligner_stream::Error::Cancelled => None,
            e => Some(JobError::Internal(e.to_string())),
        };
        let params = params_for(&self.params, job.sampling.as_ref());
        let mut upstream =
            (self.new_upstream)(params).map_err(|e| Some(JobError::BadRequest(e.to_string())))?;
        let mut aligner = AlignerClient {
            jobs: self.aligner.clone(),
            cancel: Arc::clone(&job.cancel),
        };
        let mut record = if upstream.continues_answers() {
            self.machine_answer(job, upstream.as_mut(), &mut aligner)?
        } else {
            // Whole and off modes only (stream mode is refused before admission).
            modes::upstream_only(
                upstream.as_mut(),
                job.conversation.clone(),
                job.max_tokens,
                |event| {
                    if let (Event::Committed(round), AlignMode::Off) = (event, job.mode) {
                        send_sentence(job, &round.committed, &round.last, false);
                    }
                },
            )
            .map_err(internal)?
        };
        stopped(job, &self.stop)?;
        if job.mode == AlignMode::Whole {
            let question = job.conversation.aligner_question();
            let drafted = stop::cut(&record.draft, &job.stop).len();
            record.draft.truncate(drafted);
            let correction = aligner
                .ask(&question, "", &record.draft, true)
                .map_err(internal)?;
            let committed = join_correction(&record.draft, &correction.text);
            let changed = committed != record.draft;
            send_sentence(job, &committed, &record.draft, changed);
            record.mode = aligner_stream::Mode::Aligner;
            record.summary.corrector_tokens = correction.tokens;
            record.summary.changed = usize::from(changed);
            record.answer = committed;
        } else if job.mode == AlignMode::Off {
            record.mode = aligner_stream::Mode::Upstream;
        }
        let finish_reason = finish_reason(&mut record, &job.stop);
        let completion_tokens = self
            .tokenizer
            .encode(&record.answer, false)
            .map_err(|e| Some(JobError::Internal(e.to_string())))?
            .len();
        Ok(Outcome {
            finish_reason,
            prompt_tokens,
            completion_tokens,
            record,
        })
    }

    /// The Stream Aligner's loop for the request (with the identity corrector in whole and off
    /// modes), drafting with the request's cancellation flag and sending each committed
    /// sentence at once.
    fn machine_answer(
        &self,
        job: &Job,
        upstream: &mut dyn Upstream,
        aligner: &mut AlignerClient,
    ) -> Result<Record, Option<JobError>> {
        let internal = |e: aligner_stream::Error| match e {
            aligner_stream::Error::Cancelled => None,
            e => Some(JobError::Internal(e.to_string())),
        };
        let config = MachineConfig {
            max_total_tokens: job.max_tokens,
            ..self.machine.clone()
        };
        let mut machine = StreamMachine::with_conversation(job.conversation.clone(), config)
            .map_err(|e| Some(JobError::BadRequest(e.to_string())))?;
        // A stop sequence in the accepted answer ends it (cut before it by `finish_reason`).
        while !machine.is_done() && stop::find(machine.accepted(), &job.stop).is_none() {
            stopped(job, &self.stop)?;
            if let Some(budget) = machine.draft_budget() {
                let t = Instant::now();
                let draft = upstream
                    .draft_conversation(
                        machine.conversation(),
                        machine.accepted(),
                        budget,
                        Some(&job.cancel),
                    )
                    .map_err(internal)?;
                machine.supply_draft(draft, t.elapsed()).map_err(internal)?;
                continue;
            }
            let event = match job.mode {
                AlignMode::Stream => machine.step(&mut NoUpstream, aligner),
                AlignMode::Whole | AlignMode::Off => machine.step(&mut NoUpstream, &mut Identity),
            }
            .map_err(internal)?;
            if let (Some(Event::Committed(round)), AlignMode::Stream | AlignMode::Off) =
                (&event, job.mode)
            {
                send_sentence(job, &round.committed, &round.last, round.changed);
            }
        }
        Ok(machine.record())
    }
}

fn send_sentence(job: &Job, text: &str, draft: &str, changed: bool) {
    let _ = job.events.send(JobEvent::Sentence {
        text: text.to_owned(),
        draft: draft.to_owned(),
        changed,
    });
}

/// `Err(None)` when the client went away, `Err(Some(_))` when the server is stopping or the
/// request is past its deadline.
fn stopped(job: &Job, stop: &AtomicBool) -> Result<(), Option<JobError>> {
    if job.cancel.load(Ordering::Relaxed) {
        Err(None)
    } else if stop.load(Ordering::Relaxed) {
        Err(Some(JobError::ShuttingDown))
    } else if Instant::now() >= job.deadline {
        Err(Some(JobError::Timeout))
    } else {
        Ok(())
    }
}
