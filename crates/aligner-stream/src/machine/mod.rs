//! The Stream Aligner correction loop as an explicit state machine.
//!
//! ```text
//!            ┌──────────────────────────────────────────────┐
//!            v                                              │
//!  Drafting ──> SentenceReady ──> Correcting ──> Committed ─┘
//!     │               └─(whitespace only)───────────^   │
//!     └─(limit, EOS with no text, stall)──> Done <──(EOS)┘
//! ```
//!
//! - **Drafting**: the [`Upstream`] continues the accepted answer and stops after one sentence
//!   (or at EOS, or at its token cap).
//! - **SentenceReady**: a draft sentence is in hand; whitespace-only drafts skip the corrector.
//! - **Correcting**: the [`Corrector`] rewrites the sentence from (question, accepted prefix,
//!   sentence).
//! - **Committed**: the correction, in the draft's layout ([`join_correction`]), is appended to
//!   the accepted answer; EOS ends the run, otherwise the next round drafts.
//! - **Done**: nothing more happens; [`StreamMachine::record`] has the answer.
//!
//! [`StreamMachine::run_overlapped`] makes the same transitions with the two models working at
//! the same time on two threads: the corrector prepares during Drafting, and the upstream
//! drafts the next round during Correcting (kept only if the corrector keeps the sentence).
//!
//! Every round costs at least one upstream call, and the rounds, the tokens per sentence and the
//! upstream's total tokens are capped ([`MachineConfig`]), so the machine always terminates,
//! whatever the upstream and corrector do. The machine knows nothing about models: the unit tests
//! drive it with scripted fakes, and [`crate::local`] has the model-backed implementations.
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//!
//! use aligner_stream::Conversation;
//! use aligner_stream::machine::{Correction, Corrector, Draft, DraftStop, MachineConfig, StreamMachine, Upstream};
//!
//! /// Writes a fixed answer one sentence per call.
//! struct Script(Vec<&'static str>);
//! impl Upstream for Script {
//!     fn draft_conversation(
//!         &mut self,
//!         _conversation: &Conversation,
//!         _accepted: &str,
//!         _max: usize,
//!         _cancel: Option<&AtomicBool>,
//!     ) -> aligner_stream::Result<Draft> {
//!         let text = self.0.remove(0).to_owned();
//!         let stop = if self.0.is_empty() { DraftStop::Eos } else { DraftStop::Sentence };
//!         Ok(Draft { text, tokens: 3, stop })
//!     }
//! }
//! /// Fixes one spelling mistake.
//! struct Speller;
//! impl Corrector for Speller {
//!     fn correct(&mut self, _q: &str, _prefix: &str, last: &str) -> aligner_stream::Result<Correction> {
//!         Ok(Correction { text: last.replace("gren", "green"), tokens: 4 })
//!     }
//! }
//!
//! let mut machine = StreamMachine::new("What colour is grass?", MachineConfig::default())?;
//! let record = machine.run(&mut Script(vec!["Grass is gren.\n\n", "Mostly."]), &mut Speller, |_| {})?;
//! assert_eq!(record.answer, "Grass is green.\n\nMostly.");
//! assert_eq!(record.draft, "Grass is gren.\n\nMostly.");
//! assert_eq!(record.summary.changed, 1);
//! # Ok::<(), aligner_stream::Error>(())
//! ```

mod join;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use join::join_correction;

use crate::conversation::Conversation;
pub use crate::record::{DoneReason, DraftStop};
use crate::record::{Mode, Record, RoundRecord, Summary};
use crate::{Error, Result};

/// One sentence written by the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The sentence with the whitespace after it (segmenter convention); the final text of an
    /// answer may have no terminator.
    pub text: String,
    /// Tokens generated for it (a lookahead past the boundary included).
    pub tokens: usize,
    /// Why the upstream stopped.
    pub stop: DraftStop,
}

/// The corrector's rewrite of one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// The rewritten sentence; its surrounding whitespace does not matter.
    pub text: String,
    /// Tokens generated for it.
    pub tokens: usize,
}

/// The model that writes the answer.
pub trait Upstream {
    /// Continues the answer to the last user message of `conversation`, whose accepted text so
    /// far is `accepted` (which may differ from what this upstream wrote: it ends with the
    /// corrected sentence), and returns the next sentence. It stops at the first sentence
    /// boundary (see [`crate::segment`]), at EOS, or after `max_tokens` (>= 1) generated
    /// tokens, and says which in [`Draft::stop`]. [`StreamMachine`] and the
    /// [modes](crate::modes) call this.
    ///
    /// With `cancel`, it may stop early, with [`Error::Cancelled`], once `cancel` is set:
    /// [`StreamMachine::run_overlapped`] writes the next sentence this way while the corrector
    /// checks the current one, and cancels it when the corrector changes that sentence (the
    /// text it continues). An upstream that cannot stop early may ignore it.
    ///
    /// An upstream that answers single questions only takes the question with
    /// [`Conversation::require_single`], which refuses any other conversation with
    /// [`Error::Unsupported`] rather than drop its history.
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft>;

    /// [`draft_conversation`](Self::draft_conversation) for one question, not cancellable.
    fn draft(&mut self, question: &str, accepted: &str, max_tokens: usize) -> Result<Draft> {
        self.draft_conversation(&Conversation::single(question), accepted, max_tokens, None)
    }

    /// Whether the upstream can continue a partial answer that ends with text it did not write
    /// (a corrected sentence), which stream mode needs. A chat endpoint with no prefix
    /// continuation cannot; the machine then stops with [`Error::Unsupported`] before drafting,
    /// and whole-answer mode ([`crate::modes::whole_answer`]) is the way to align it. The
    /// default is `true`.
    fn continues_answers(&self) -> bool {
        true
    }

    /// Writes the whole answer to `conversation` (to EOS or about `max_tokens` tokens),
    /// streaming its text to `on_delta`, and returns it as one [`Draft`] whose `stop` is
    /// [`DraftStop::Eos`] or [`DraftStop::TokenCap`]. The default drafts sentence after
    /// sentence, each continuing the text so far; an upstream that cannot continue answers
    /// ([`continues_answers`](Self::continues_answers)) overrides it with one request.
    fn answer_whole(
        &mut self,
        conversation: &Conversation,
        max_tokens: usize,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<Draft> {
        answer_by_drafts(self, conversation, "", max_tokens, on_delta)
    }
}

/// The answer after `prefix` as consecutive drafts of `upstream`, each continuing the text so
/// far, to EOS, `max_tokens` tokens, or an upstream that writes nothing.
pub(crate) fn answer_by_drafts<U: Upstream + ?Sized>(
    upstream: &mut U,
    conversation: &Conversation,
    prefix: &str,
    max_tokens: usize,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Draft> {
    let mut text = String::new();
    let mut tokens = 0;
    let mut accepted = prefix.to_owned();
    let mut stop = DraftStop::TokenCap;
    while tokens < max_tokens {
        let draft =
            upstream.draft_conversation(conversation, &accepted, max_tokens - tokens, None)?;
        tokens += draft.tokens;
        on_delta(&draft.text);
        text.push_str(&draft.text);
        accepted.push_str(&draft.text);
        if draft.stop == DraftStop::Eos {
            stop = DraftStop::Eos;
            break;
        }
        if draft.text.is_empty() && draft.tokens == 0 {
            break;
        }
    }
    Ok(Draft { text, tokens, stop })
}

/// The model that rewrites one sentence at a time.
pub trait Corrector {
    /// Rewrites `last`, the upstream's next sentence, given the question and the accepted
    /// answer `prefix` before it.
    fn correct(&mut self, question: &str, prefix: &str, last: &str) -> Result<Correction>;

    /// Gets ready for a coming `correct(question, prefix, _)`, for instance by computing the
    /// part of its prompt that does not depend on the sentence. [`StreamMachine::run_overlapped`]
    /// calls it while the upstream writes that sentence. It must not change what `correct`
    /// returns; an error is not fatal (the loop goes on, and `correct` meets the same problem
    /// again). The default does nothing.
    fn prepare(&mut self, question: &str, prefix: &str) -> Result<()> {
        let _ = (question, prefix);
        Ok(())
    }
}

impl<T: Upstream + ?Sized> Upstream for &mut T {
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        (**self).draft_conversation(conversation, accepted, max_tokens, cancel)
    }

    fn continues_answers(&self) -> bool {
        (**self).continues_answers()
    }

    fn answer_whole(
        &mut self,
        conversation: &Conversation,
        max_tokens: usize,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<Draft> {
        (**self).answer_whole(conversation, max_tokens, on_delta)
    }
}

impl<T: Corrector + ?Sized> Corrector for &mut T {
    fn correct(&mut self, question: &str, prefix: &str, last: &str) -> Result<Correction> {
        (**self).correct(question, prefix, last)
    }

    fn prepare(&mut self, question: &str, prefix: &str) -> Result<()> {
        (**self).prepare(question, prefix)
    }
}

/// A corrector that changes nothing: with it the machine streams the upstream's own answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl Corrector for Identity {
    fn correct(&mut self, _question: &str, _prefix: &str, last: &str) -> Result<Correction> {
        Ok(Correction {
            text: last.to_owned(),
            tokens: 0,
        })
    }
}

/// Limits that make every run finite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    /// Most rounds (upstream calls).
    pub max_rounds: usize,
    /// Most upstream tokens per sentence; a longer sentence is cut there and corrected as is.
    pub max_sentence_tokens: usize,
    /// Most upstream tokens over the whole answer.
    pub max_total_tokens: usize,
    /// The answer ends after the first committed sentence that contains one of these texts
    /// ([`DoneReason::StopText`]), as a generation API's stop sequences end a completion, but
    /// with the sentence kept whole. Empty (the default): only EOS and the limits end it. For
    /// math answers, `"The answer is"` ends the answer once it has been given, where a small
    /// upstream would otherwise go on with unrelated text until a limit.
    pub stop_after: Vec<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            max_rounds: 64,
            max_sentence_tokens: 128,
            max_total_tokens: 1024,
            stop_after: Vec::new(),
        }
    }
}

impl MachineConfig {
    /// Checks that every limit is at least 1.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("max_rounds", self.max_rounds),
            ("max_sentence_tokens", self.max_sentence_tokens),
            ("max_total_tokens", self.max_total_tokens),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.stop_after.iter().any(String::is_empty) {
            return Err(Error::InvalidConfig {
                field: "stop_after",
                reason: "an empty text would end every answer after its first sentence".into(),
            });
        }
        Ok(())
    }
}

/// Where the machine is. Each [`StreamMachine::step`] makes one transition.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Next: ask the upstream for a sentence.
    Drafting,
    /// Next: decide whether the sentence needs the corrector.
    SentenceReady {
        /// The upstream's sentence.
        draft: Draft,
        /// Time the upstream took.
        upstream_time: Duration,
    },
    /// Next: ask the corrector.
    Correcting {
        /// The upstream's sentence.
        draft: Draft,
        /// Time the upstream took.
        upstream_time: Duration,
    },
    /// Next: append the round's text to the answer.
    Committed {
        /// The finished round (its `committed_at_ms` is set on commit).
        round: RoundRecord,
    },
    /// Finished.
    Done(DoneReason),
}

impl State {
    /// The draft and upstream time of the Correcting state; in any other state, a protocol
    /// error saying `what` happened out of turn.
    fn correcting(&self, what: &str) -> Result<(&Draft, Duration)> {
        match self {
            State::Correcting {
                draft,
                upstream_time,
            } => Ok((draft, *upstream_time)),
            _ => Err(self.out_of_turn(what)),
        }
    }

    /// The protocol error of `what` happening in this state, which does not take it.
    fn out_of_turn(&self, what: &str) -> Error {
        Error::Protocol {
            component: "machine",
            reason: format!("{what} in state {self:?}"),
        }
    }
}

/// What a transition did, for display and logging.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The upstream wrote a sentence (Drafting -> SentenceReady).
    Drafted {
        /// Round number.
        round: usize,
        /// The sentence.
        draft: Draft,
        /// Upstream time.
        elapsed: Duration,
    },
    /// The corrector answered (Correcting -> Committed).
    Corrected {
        /// Round number.
        round: usize,
        /// What it wrote.
        correction: Correction,
        /// Whether the committed text differs from the draft.
        changed: bool,
        /// Corrector time.
        elapsed: Duration,
    },
    /// A sentence joined the answer (Committed -> Drafting or Done); it is final.
    Committed(RoundRecord),
    /// The run ended.
    Done(Summary),
}

/// The Stream Aligner loop for one question; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct StreamMachine {
    config: MachineConfig,
    conversation: Conversation,
    /// The aligner's view of the conversation ([`Conversation::aligner_question`]).
    question: String,
    state: State,
    accepted: String,
    draft: String,
    rounds: Vec<RoundRecord>,
    rounds_started: usize,
    summary: Summary,
    started: Option<Instant>,
    /// The next sentence, written during the current one's correction
    /// ([`run_overlapped`](Self::run_overlapped)).
    ahead: Option<Ahead>,
}

/// A draft written ahead: valid for the next round if the accepted text and the token cap are
/// the ones it was written for.
#[derive(Debug, Clone)]
struct Ahead {
    accepted: String,
    max_tokens: usize,
    draft: Draft,
    elapsed: Duration,
}

impl StreamMachine {
    /// A machine that will answer `question`; errors if `config` is unusable.
    pub fn new(question: impl Into<String>, config: MachineConfig) -> Result<Self> {
        Self::with_conversation(Conversation::single(question), config)
    }

    /// A machine that will answer the last user message of `conversation`: the upstream sees
    /// the whole conversation, the corrector its [`Conversation::aligner_question`] (see
    /// [`crate::conversation`]). Errors if `config` is unusable.
    pub fn with_conversation(conversation: Conversation, config: MachineConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            question: conversation.aligner_question(),
            conversation,
            state: State::Drafting,
            accepted: String::new(),
            draft: String::new(),
            rounds: Vec::new(),
            rounds_started: 0,
            summary: Summary::default(),
            started: None,
            ahead: None,
        })
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the run has ended.
    #[must_use]
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// The answer accepted so far (final once [`is_done`](Self::is_done)).
    #[must_use]
    pub fn accepted(&self) -> &str {
        &self.accepted
    }

    /// The question as the corrector sees it ([`Conversation::aligner_question`]; the question
    /// itself for a single one).
    #[must_use]
    pub fn question(&self) -> &str {
        &self.question
    }

    /// The conversation being answered.
    #[must_use]
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Makes one transition and returns the event it produced, if any. In [`State::Done`] it
    /// does nothing. On an error the state is unchanged, so the step may be retried.
    pub fn step<U: Upstream + ?Sized, C: Corrector>(
        &mut self,
        upstream: &mut U,
        corrector: &mut C,
    ) -> Result<Option<Event>> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let (next, event) = match &self.state {
            State::Done(_) => return Ok(None),
            State::Drafting => self.draft_step(upstream)?,
            State::SentenceReady {
                draft,
                upstream_time,
            } => {
                if draft.text.trim().is_empty() {
                    let round = self.round_record(
                        draft,
                        draft.text.clone(),
                        0,
                        *upstream_time,
                        Duration::ZERO,
                    );
                    (State::Committed { round }, None)
                } else {
                    let state = State::Correcting {
                        draft: draft.clone(),
                        upstream_time: *upstream_time,
                    };
                    (state, None)
                }
            }
            State::Correcting {
                draft,
                upstream_time,
            } => {
                let t = Instant::now();
                let correction = corrector.correct(&self.question, &self.accepted, &draft.text)?;
                self.corrected(draft, *upstream_time, correction, t.elapsed())
            }
            State::Committed { round } => {
                let round = round.clone();
                let (next, event) = self.commit(round, started);
                (next, Some(event))
            }
        };
        Ok(self.enter(next, event, started))
    }

    /// The Correcting transition's state and event, for `correction` of `draft`.
    fn corrected(
        &self,
        draft: &Draft,
        upstream_time: Duration,
        correction: Correction,
        elapsed: Duration,
    ) -> (State, Option<Event>) {
        let round = self.round_record(
            draft,
            correction.text.trim().to_owned(),
            correction.tokens,
            upstream_time,
            elapsed,
        );
        let event = Event::Corrected {
            round: round.round,
            changed: round.changed,
            correction,
            elapsed,
        };
        (State::Committed { round }, Some(event))
    }

    /// Moves to `next` after a transition that produced `event`; on entering Done, finishes the
    /// summary and, if the transition had no event of its own, returns [`Event::Done`].
    fn enter(&mut self, next: State, event: Option<Event>, started: Instant) -> Option<Event> {
        self.state = next;
        if let State::Done(reason) = self.state {
            self.summary.reason = reason;
            self.summary.wall_ms = ms(started.elapsed());
            if event.is_none() {
                return Some(Event::Done(self.summary.clone()));
            }
        }
        event
    }

    /// The Committed transition: appends `round` to the answer.
    fn commit(&mut self, mut round: RoundRecord, started: Instant) -> (State, Event) {
        round.committed_at_ms = ms(started.elapsed());
        self.accepted.push_str(&round.committed);
        self.draft.push_str(&round.last);
        let s = &mut self.summary;
        s.sentences += 1;
        s.changed += usize::from(round.changed);
        s.corrector_tokens += round.corrector_tokens;
        s.upstream_ms += round.upstream_ms;
        s.corrector_ms += round.corrector_ms;
        s.first_sentence_ms.get_or_insert(round.committed_at_ms);
        let next = if round.stop == DraftStop::Eos {
            State::Done(DoneReason::Eos)
        } else if self.ends_answer(&round.committed) {
            State::Done(DoneReason::StopText)
        } else {
            State::Drafting
        };
        self.rounds.push(round.clone());
        (next, Event::Committed(round))
    }

    /// Whether `committed` holds one of [`MachineConfig::stop_after`].
    fn ends_answer(&self, committed: &str) -> bool {
        self.config
            .stop_after
            .iter()
            .any(|stop| committed.contains(stop.as_str()))
    }

    fn draft_step<U: Upstream + ?Sized>(
        &mut self,
        upstream: &mut U,
    ) -> Result<(State, Option<Event>)> {
        let max_tokens = match self.draft_budget_or_reason() {
            Ok(max_tokens) => max_tokens,
            Err(reason) => return Ok((State::Done(reason), None)),
        };
        if let Some(ahead) = self.take_ahead(max_tokens) {
            return Ok(self.take_draft(ahead.draft, max_tokens, ahead.elapsed));
        }
        check_continues(upstream)?;
        let t = Instant::now();
        let draft =
            upstream.draft_conversation(&self.conversation, &self.accepted, max_tokens, None)?;
        Ok(self.take_draft(draft, max_tokens, t.elapsed()))
    }

    /// The draft written ahead, if there is one for this round's accepted text and `max_tokens`
    /// (one written for other text is dropped).
    fn take_ahead(&mut self, max_tokens: usize) -> Option<Ahead> {
        let ahead = self.ahead.take()?;
        if ahead.accepted == self.accepted && ahead.max_tokens == max_tokens {
            self.summary.drafts_ahead += 1;
            Some(ahead)
        } else {
            self.summary.drafts_ahead_wasted += 1;
            None
        }
    }

    /// The token cap of the next upstream call, or why there is none.
    fn draft_budget_or_reason(&self) -> std::result::Result<usize, DoneReason> {
        if self.rounds_started >= self.config.max_rounds {
            return Err(DoneReason::MaxRounds);
        }
        let used = self.summary.upstream_tokens;
        let left = self.config.max_total_tokens.saturating_sub(used);
        if left == 0 {
            return Err(DoneReason::MaxTotalTokens);
        }
        Ok(left.min(self.config.max_sentence_tokens))
    }

    /// When the next transition asks the upstream for a sentence: the most tokens it may write
    /// (the `max_tokens` of [`Upstream::draft`]). `None` in every other state, and when a limit
    /// ends the run instead.
    ///
    /// With [`supply_draft`](Self::supply_draft) this lets a driver produce the drafts of many
    /// machines together (see [`crate::batch`]).
    #[must_use]
    pub fn draft_budget(&self) -> Option<usize> {
        match self.state {
            State::Drafting => self.draft_budget_or_reason().ok(),
            _ => None,
        }
    }

    /// Makes the Drafting transition with a draft written elsewhere, for this machine's
    /// question and [`accepted`](Self::accepted) text within [`draft_budget`](Self::draft_budget)
    /// tokens, in `elapsed` upstream time. Errors if the machine is not waiting for a draft.
    pub fn supply_draft(&mut self, draft: Draft, elapsed: Duration) -> Result<Option<Event>> {
        let Some(max_tokens) = self.draft_budget() else {
            return Err(self.state.out_of_turn("a draft was supplied"));
        };
        self.started.get_or_insert_with(Instant::now);
        let (next, event) = self.take_draft(draft, max_tokens, elapsed);
        self.state = next;
        if let State::Done(reason) = self.state {
            let started = self.started.unwrap_or_else(Instant::now);
            self.summary.reason = reason;
            self.summary.wall_ms = ms(started.elapsed());
        }
        Ok(event)
    }

    /// When the next transition asks the corrector: the sentence to correct, which
    /// [`Corrector::correct`] gets with [`question`](Self::question) and
    /// [`accepted`](Self::accepted). `None` in every other state.
    ///
    /// With [`supply_correction`](Self::supply_correction) this lets a driver correct the
    /// sentences of many machines together (see
    /// [`correct_batch`](crate::local::correct_batch)).
    #[must_use]
    pub fn sentence_to_correct(&self) -> Option<&str> {
        match &self.state {
            State::Correcting { draft, .. } => Some(&draft.text),
            _ => None,
        }
    }

    /// Makes the Correcting transition with a correction made elsewhere, of
    /// [`sentence_to_correct`](Self::sentence_to_correct) for this machine's question and
    /// accepted text, in `elapsed` corrector time. Errors if the machine is not waiting for a
    /// correction.
    pub fn supply_correction(
        &mut self,
        correction: Correction,
        elapsed: Duration,
    ) -> Result<Option<Event>> {
        let (draft, upstream_time) = self.state.correcting("a correction was supplied")?;
        let started = *self.started.get_or_insert_with(Instant::now);
        let (next, event) = self.corrected(draft, upstream_time, correction, elapsed);
        Ok(self.enter(next, event, started))
    }

    /// The state after the upstream answered `draft` to a call capped at `max_tokens`.
    fn take_draft(
        &mut self,
        draft: Draft,
        max_tokens: usize,
        elapsed: Duration,
    ) -> (State, Option<Event>) {
        self.rounds_started += 1;
        self.summary.rounds = self.rounds_started;
        // Trust but cap: a misbehaving upstream cannot overdraw the budget.
        self.summary.upstream_tokens += draft.tokens.min(max_tokens);
        if draft.text.is_empty() {
            let next = match draft.stop {
                DraftStop::Eos => State::Done(DoneReason::Eos),
                _ if draft.tokens == 0 => State::Done(DoneReason::Stalled),
                // Tokens that decoded to nothing yet (a split character): try again.
                _ => State::Drafting,
            };
            self.summary.upstream_ms += ms(elapsed);
            return (next, None);
        }
        let event = Event::Drafted {
            round: self.rounds_started - 1,
            draft: draft.clone(),
            elapsed,
        };
        let state = State::SentenceReady {
            draft,
            upstream_time: elapsed,
        };
        (state, Some(event))
    }

    fn round_record(
        &self,
        draft: &Draft,
        correction: String,
        corrector_tokens: usize,
        upstream_time: Duration,
        corrector_time: Duration,
    ) -> RoundRecord {
        let committed = join_correction(&draft.text, &correction);
        RoundRecord {
            round: self.rounds_started.saturating_sub(1),
            prefix: self.accepted.clone(),
            last: draft.text.clone(),
            changed: committed != draft.text,
            committed,
            correction,
            stop: draft.stop,
            upstream_tokens: draft.tokens,
            corrector_tokens,
            upstream_ms: ms(upstream_time),
            corrector_ms: ms(corrector_time),
            committed_at_ms: 0.0,
        }
    }

    /// Runs to the end, calling `on_event` after every transition that produced an event
    /// (the last one is always [`Event::Done`]), and returns the record.
    pub fn run<U: Upstream + ?Sized, C: Corrector>(
        &mut self,
        upstream: &mut U,
        corrector: &mut C,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Record> {
        for event in self.events(upstream, corrector) {
            on_event(&event?);
        }
        Ok(self.record())
    }

    /// [`run`](Self::run) with the two models working at the same time, on two threads:
    ///
    /// - while the upstream writes a sentence, the corrector [prepares](Corrector::prepare)
    ///   for it (a local aligner computes the prompt up to the sentence);
    /// - while the corrector checks a sentence, the upstream already writes the next one,
    ///   continuing the sentence as drafted. If the corrector keeps the sentence, that draft is
    ///   the next round's, with no wait; if it changes it, the draft is cancelled
    ///   ([`Upstream::draft_conversation`] with a cancel flag) and the next round drafts from
    ///   the corrected text as usual.
    ///
    /// Events come in the same order as from `run`, each as soon as it happens: a committed
    /// sentence is reported before the draft of the next one is waited for. With an upstream
    /// whose draft depends only on the question and the accepted text (greedy decoding, or any
    /// deterministic one) and a corrector whose `prepare` changes none of its results, the
    /// record is that of `run`, timings aside. A [`LocalCorrector`](crate::LocalCorrector)
    /// prepares in a separate forward pass, which can flip near-ties of its greedy choice;
    /// [`CorrectorConfig::prepare`](crate::CorrectorConfig::prepare) turns that off. With a
    /// sampling upstream each draft is still a sample continuing the accepted text, but drafts
    /// that were written ahead and dropped have consumed random numbers. [`Summary::drafts_ahead`] and
    /// [`Summary::drafts_ahead_wasted`] count the drafts written ahead. The per-round upstream
    /// and corrector times overlap, so they may add up to more than the wall time.
    ///
    /// A panic in the upstream or the corrector is passed on to the caller. Local models on
    /// both threads share LibTorch's thread settings, which may leave one of them
    /// single-threaded for a round; that costs speed, not correctness.
    pub fn run_overlapped<U: Upstream + Send + ?Sized, C: Corrector + Send>(
        &mut self,
        upstream: &mut U,
        corrector: &mut C,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Record> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut emit = |event: Option<Event>| -> bool {
            match event {
                Some(event @ Event::Done(_)) => {
                    on_event(&event);
                    true
                }
                Some(event) => {
                    on_event(&event);
                    false
                }
                None => false,
            }
        };
        loop {
            if self.is_done() {
                emit(Some(Event::Done(self.summary.clone())));
                break;
            }
            let finished = match &self.state {
                State::Drafting if self.ahead.is_none() => {
                    let event = self.draft_preparing(upstream, corrector, started)?;
                    emit(event)
                }
                State::Correcting { .. } => {
                    self.correct_ahead(upstream, corrector, started, &mut emit)?
                }
                _ => {
                    let event = self.step(upstream, corrector)?;
                    emit(event)
                }
            };
            if finished {
                break;
            }
        }
        Ok(self.record())
    }

    /// The Drafting transition with the corrector's [`Corrector::prepare`] on a second thread.
    fn draft_preparing<U: Upstream + Send + ?Sized, C: Corrector + Send>(
        &mut self,
        upstream: &mut U,
        corrector: &mut C,
        started: Instant,
    ) -> Result<Option<Event>> {
        let max_tokens = match self.draft_budget_or_reason() {
            Ok(max_tokens) => max_tokens,
            Err(reason) => return Ok(self.enter(State::Done(reason), None, started)),
        };
        check_continues(upstream)?;
        let (question, accepted) = (self.question.as_str(), self.accepted.as_str());
        let conversation = &self.conversation;
        let (draft, elapsed) = std::thread::scope(|s| {
            let preparing = s.spawn(|| corrector.prepare(question, accepted));
            let t = Instant::now();
            let draft = upstream.draft_conversation(conversation, accepted, max_tokens, None);
            let elapsed = t.elapsed();
            // Preparing is only a head start: its failure changes nothing.
            let _ = joined(preparing);
            (draft, elapsed)
        });
        let (next, event) = self.take_draft(draft?, max_tokens, elapsed);
        Ok(self.enter(next, event, started))
    }

    /// The Correcting and Committed transitions, with the next round's draft written on a
    /// second thread meanwhile. Events go to `emit` as they happen; returns whether one was
    /// [`Event::Done`]. On an error the machine is still in Correcting.
    fn correct_ahead<U: Upstream + Send + ?Sized, C: Corrector>(
        &mut self,
        upstream: &mut U,
        corrector: &mut C,
        started: Instant,
        emit: &mut impl FnMut(Option<Event>) -> bool,
    ) -> Result<bool> {
        let (draft, upstream_time) = self.state.correcting("correct_ahead")?;
        let draft = draft.clone();
        // The next round's cap, as the Drafting step will compute it (nothing it depends on
        // changes before then); none when this sentence ends the answer (EOS, or a stop text that
        // a kept draft would commit) or a limit ends the run.
        let next_budget = (draft.stop != DraftStop::Eos && !self.ends_answer(&draft.text))
            .then(|| self.draft_budget_or_reason().ok())
            .flatten();
        let question = self.question.clone();
        let conversation = self.conversation.clone();
        let assumed = format!("{}{}", self.accepted, draft.text);
        let cancel = AtomicBool::new(false);
        std::thread::scope(|s| {
            let (c, text, stop) = (&conversation, &assumed, &cancel);
            let ahead = next_budget.map(|max_tokens| {
                s.spawn(move || {
                    let t = Instant::now();
                    let draft = upstream.draft_conversation(c, text, max_tokens, Some(stop));
                    (draft, t.elapsed(), max_tokens)
                })
            });
            // Should the corrector or `emit` panic, the draft ahead is cancelled before the
            // scope waits for it.
            let _cancel_on_unwind = CancelOnDrop(&cancel);
            let t = Instant::now();
            let correction = corrector.correct(&question, &self.accepted, &draft.text);
            let elapsed = t.elapsed();
            let correction = match correction {
                Ok(correction) => correction,
                Err(e) => {
                    cancel.store(true, Ordering::Relaxed);
                    if let Some(ahead) = ahead {
                        let _ = joined(ahead);
                        self.summary.drafts_ahead_wasted += 1;
                    }
                    return Err(e);
                }
            };
            let round = self.round_record(
                &draft,
                correction.text.trim().to_owned(),
                correction.tokens,
                upstream_time,
                elapsed,
            );
            if round.changed {
                cancel.store(true, Ordering::Relaxed);
            }
            let corrected = Event::Corrected {
                round: round.round,
                changed: round.changed,
                correction,
                elapsed,
            };
            let mut finished = emit(Some(corrected));
            let (next, committed) = self.commit(round, started);
            let event = self.enter(next, Some(committed), started);
            finished |= emit(event);
            if let Some(ahead) = ahead {
                match joined(ahead) {
                    (Ok(draft), elapsed, max_tokens) if !cancel.load(Ordering::Relaxed) => {
                        self.ahead = Some(Ahead {
                            accepted: assumed.clone(),
                            max_tokens,
                            draft,
                            elapsed,
                        });
                    }
                    // Cancelled, or failed: the next round drafts as usual (and meets a
                    // persistent failure there).
                    _ => self.summary.drafts_ahead_wasted += 1,
                }
            }
            Ok(finished)
        })
    }

    /// The run as an iterator of events; it ends after [`Event::Done`] or after an error.
    pub fn events<'a, U: Upstream + ?Sized, C: Corrector>(
        &'a mut self,
        upstream: &'a mut U,
        corrector: &'a mut C,
    ) -> Events<'a, U, C> {
        Events {
            machine: self,
            upstream,
            corrector,
            finished: false,
        }
    }

    /// The record of the run so far.
    #[must_use]
    pub fn record(&self) -> Record {
        Record {
            mode: Mode::Stream,
            question: self.question.clone(),
            draft: self.draft.clone(),
            answer: self.accepted.clone(),
            rounds: self.rounds.clone(),
            summary: self.summary.clone(),
        }
    }

    /// Totals so far.
    #[must_use]
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
}

/// Iterator over the events of a run; see [`StreamMachine::events`].
#[derive(Debug)]
pub struct Events<'a, U: ?Sized, C> {
    machine: &'a mut StreamMachine,
    upstream: &'a mut U,
    corrector: &'a mut C,
    finished: bool,
}

impl<U: Upstream + ?Sized, C: Corrector> Iterator for Events<'_, U, C> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.finished {
            return None;
        }
        loop {
            if self.machine.is_done() {
                self.finished = true;
                return Some(Ok(Event::Done(self.machine.summary.clone())));
            }
            match self.machine.step(self.upstream, self.corrector) {
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Ok(Some(Event::Done(summary))) => {
                    self.finished = true;
                    return Some(Ok(Event::Done(summary)));
                }
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
            }
        }
    }
}

/// Stream mode needs an upstream that continues corrected text.
fn check_continues<U: Upstream + ?Sized>(upstream: &U) -> Result<()> {
    if upstream.continues_answers() {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "stream mode needs an upstream that continues a partial answer; this one cannot \
             (a chat API without prefix continuation): choose the server's prefill style, use \
             its completions API, or align whole answers"
                .into(),
        ))
    }
}

/// Sets its flag when dropped.
struct CancelOnDrop<'a>(&'a AtomicBool);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The result of a scoped thread; its panic, if it panicked, goes on in this thread.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests;
