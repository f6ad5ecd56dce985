//! The other ways to answer, for comparison with the stream mode: the upstream alone, the
//! whole-answer Aligner, and the published Stream Aligner loop with its defects.
//!
//! They report through the same [`Event`]s and [`Record`] as [`StreamMachine`](crate::StreamMachine).

use std::time::Instant;

use aligner_model::CausalLm;

use crate::Result;
use crate::conversation::Conversation;
use crate::local::{LocalCorrector, LocalUpstream};
use crate::machine::{Corrector, DoneReason, Draft, DraftStop, Event, Upstream, join_correction};
use crate::record::{Mode, Record, RoundRecord, Summary};
use crate::segment::StreamingSegmenter;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The upstream alone: the answer as the model writes it (to EOS or `max_tokens`), streamed to
/// `on_event` one sentence at a time as [`Event::Committed`]. `conversation` is a question
/// (`&str`) or a [`Conversation`].
pub fn upstream_only<U: Upstream + ?Sized>(
    upstream: &mut U,
    conversation: impl Into<Conversation>,
    max_tokens: usize,
    mut on_event: impl FnMut(&Event),
) -> Result<Record> {
    let conversation = conversation.into();
    if !upstream.continues_answers() {
        return upstream_whole(upstream, &conversation, max_tokens, on_event);
    }
    let start = Instant::now();
    let mut rounds = Vec::new();
    let mut answer = String::new();
    let mut tokens = 0;
    let mut eos = false;
    while tokens < max_tokens {
        let t = Instant::now();
        let draft =
            upstream.draft_conversation(&conversation, &answer, max_tokens - tokens, None)?;
        let elapsed = ms(t.elapsed());
        tokens += draft.tokens;
        if draft.text.is_empty() {
            eos = draft.stop == DraftStop::Eos;
            if eos || draft.tokens == 0 {
                break;
            }
            continue;
        }
        let round = unchanged_round(
            rounds.len(),
            &answer,
            &draft.text,
            draft.stop,
            (draft.tokens, elapsed),
            ms(start.elapsed()),
        );
        answer.push_str(&draft.text);
        on_event(&Event::Committed(round.clone()));
        rounds.push(round);
        if draft.stop == DraftStop::Eos {
            eos = true;
            break;
        }
    }
    let upstream_ms = rounds.iter().map(|r| r.upstream_ms).sum();
    let upstream = (tokens, upstream_ms);
    Ok(upstream_record(
        &conversation,
        answer,
        rounds,
        eos,
        upstream,
        start,
        on_event,
    ))
}

/// A round whose sentence the upstream wrote and that is committed as it is; `upstream` is its
/// (tokens, milliseconds).
fn unchanged_round(
    index: usize,
    prefix: &str,
    sentence: &str,
    stop: DraftStop,
    (upstream_tokens, upstream_ms): (usize, f64),
    committed_at_ms: f64,
) -> RoundRecord {
    RoundRecord {
        round: index,
        prefix: prefix.to_owned(),
        last: sentence.to_owned(),
        correction: sentence.to_owned(),
        committed: sentence.to_owned(),
        changed: false,
        stop,
        upstream_tokens,
        corrector_tokens: 0,
        upstream_ms,
        corrector_ms: 0.0,
        committed_at_ms,
    }
}

/// The record of an upstream-only answer, after reporting its summary as [`Event::Done`];
/// `upstream` is the answer's (tokens, milliseconds).
fn upstream_record(
    conversation: &Conversation,
    answer: String,
    rounds: Vec<RoundRecord>,
    eos: bool,
    (upstream_tokens, upstream_ms): (usize, f64),
    start: Instant,
    mut on_event: impl FnMut(&Event),
) -> Record {
    let summary = Summary {
        reason: if eos {
            DoneReason::Eos
        } else {
            DoneReason::MaxTotalTokens
        },
        rounds: rounds.len(),
        sentences: rounds.len(),
        upstream_tokens,
        upstream_ms,
        first_sentence_ms: rounds.first().map(|r| r.committed_at_ms),
        wall_ms: ms(start.elapsed()),
        ..Summary::default()
    };
    on_event(&Event::Done(summary.clone()));
    Record {
        mode: Mode::Upstream,
        question: conversation.aligner_question(),
        draft: answer.clone(),
        answer,
        rounds,
        summary,
    }
}

/// [`upstream_only`] for an upstream that cannot continue answers: one
/// [`Upstream::answer_whole`] call, whose text is cut into sentences as it streams in; each is
/// reported as soon as it is complete (the rounds share the call's tokens and time, which are
/// put on the last one).
fn upstream_whole<U: Upstream + ?Sized>(
    upstream: &mut U,
    conversation: &Conversation,
    max_tokens: usize,
    mut on_event: impl FnMut(&Event),
) -> Result<Record> {
    let start = Instant::now();
    let mut rounds: Vec<RoundRecord> = Vec::new();
    let mut answer = String::new();
    let mut segmenter = StreamingSegmenter::new();
    let mut commit = |sentence: &str, rounds: &mut Vec<RoundRecord>, answer: &mut String| {
        let round = unchanged_round(
            rounds.len(),
            answer,
            sentence,
            DraftStop::Sentence,
            (0, 0.0),
            ms(start.elapsed()),
        );
        answer.push_str(sentence);
        on_event(&Event::Committed(round.clone()));
        rounds.push(round);
    };
    let whole = upstream.answer_whole(conversation, max_tokens, &mut |delta| {
        for sentence in segmenter.push(delta) {
            commit(sentence, &mut rounds, &mut answer);
        }
    })?;
    for sentence in segmenter.finish() {
        commit(sentence, &mut rounds, &mut answer);
    }
    let eos = whole.stop == DraftStop::Eos;
    if let Some(last) = rounds.last_mut() {
        last.stop = whole.stop;
        last.upstream_tokens = whole.tokens;
        last.upstream_ms = ms(start.elapsed());
    }
    let upstream = (whole.tokens, ms(start.elapsed()));
    Ok(upstream_record(
        conversation,
        answer,
        rounds,
        eos,
        upstream,
        start,
        on_event,
    ))
}

/// The whole-answer Aligner: the upstream writes its full answer
/// ([`Upstream::answer_whole`], which any upstream can do, a chat API without prefix
/// continuation included), then the aligner rewrites it with the correction instruction, whose
/// question is [`Conversation::aligner_question`]. Nothing is shown until the aligner is done.
/// `conversation` is a question (`&str`) or a [`Conversation`].
pub fn whole_answer<U: Upstream + ?Sized, A: CausalLm>(
    upstream: &mut U,
    aligner: &mut LocalCorrector<'_, A>,
    conversation: impl Into<Conversation>,
    max_tokens: usize,
    mut on_event: impl FnMut(&Event),
) -> Result<Record> {
    let conversation = conversation.into();
    let question = conversation.aligner_question();
    let question = question.as_str();
    let start = Instant::now();
    let Draft {
        text: draft,
        tokens,
        stop,
    } = upstream.answer_whole(&conversation, max_tokens, &mut |_| {})?;
    let upstream_time = start.elapsed();
    let eos = stop == DraftStop::Eos;
    on_event(&Event::Drafted {
        round: 0,
        draft: Draft {
            text: draft.clone(),
            tokens,
            stop,
        },
        elapsed: upstream_time,
    });
    let t = Instant::now();
    let correction = aligner.rewrite_answer(question, &draft)?;
    let corrector_time = t.elapsed();
    let committed = join_correction(&draft, &correction.text);
    let changed = committed != draft;
    on_event(&Event::Corrected {
        round: 0,
        correction: correction.clone(),
        changed,
        elapsed: corrector_time,
    });
    let at = ms(start.elapsed());
    let round = RoundRecord {
        round: 0,
        prefix: String::new(),
        last: draft.clone(),
        correction: correction.text.clone(),
        committed: committed.clone(),
        changed,
        stop,
        upstream_tokens: tokens,
        corrector_tokens: correction.tokens,
        upstream_ms: ms(upstream_time),
        corrector_ms: ms(corrector_time),
        committed_at_ms: at,
    };
    on_event(&Event::Committed(round.clone()));
    let summary = Summary {
        reason: if eos {
            DoneReason::Eos
        } else {
            DoneReason::MaxTotalTokens
        },
        rounds: 1,
        sentences: 1,
        changed: usize::from(changed),
        upstream_tokens: tokens,
        corrector_tokens: correction.tokens,
        upstream_ms: round.upstream_ms,
        corrector_ms: round.corrector_ms,
        first_sentence_ms: Some(at),
        wall_ms: ms(start.elapsed()),
        ..Summary::default()
    };
    on_event(&Event::Done(summary.clone()));
    Ok(Record {
        mode: Mode::Aligner,
        question: question.to_owned(),
        draft,
        answer: committed,
        rounds: vec![round],
        summary,
    })
}

/// Settings of the [`reference()`] loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceConfig {
    /// Rounds, always all run (16 in the published code).
    pub rounds: usize,
    /// Most tokens of each round's whole continuation.
    pub max_continuation_tokens: usize,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        Self {
            rounds: 16,
            max_continuation_tokens: 256,
        }
    }
}

/// The first sentence of `text` by the published loop's rule, or `None` when it has none.
///
/// `i.e.`, `e.g.` and a digit followed by `.` are protected; the text is cut after the first
/// `.`, `?` or `!`; newlines are no boundary; the result is trimmed. Text with no terminator is
/// dropped, and `"Wait... what?"` gives `"Wait."`: the defects are kept on purpose.
///
/// ```
/// use aligner_stream::modes::reference_first_sentence;
///
/// assert_eq!(reference_first_sentence("Wait... what?").as_deref(), Some("Wait."));
/// assert_eq!(reference_first_sentence(" Pay 3.5 dollars, e.g. now. Ok").as_deref(), Some("Pay 3.5 dollars, e.g. now."));
/// assert_eq!(reference_first_sentence("1. Mix\n2. Bake!").as_deref(), Some("1. Mix\n2. Bake!"));
/// assert_eq!(reference_first_sentence("no terminator"), None);
/// ```
#[must_use]
pub fn reference_first_sentence(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = text.get(i..).unwrap_or_default();
        if rest.starts_with("i.e.") || rest.starts_with("e.g.") {
            i += 4;
            continue;
        }
        let b = bytes[i];
        if b.is_ascii_digit() && bytes.get(i + 1) == Some(&b'.') {
            i += 2;
            continue;
        }
        if matches!(b, b'.' | b'?' | b'!') {
            return Some(text[..=i].trim().to_owned());
        }
        i += 1;
    }
    None
}

/// The published Stream Aligner loop, reproduced for side-by-side comparison: a fixed number of
/// rounds (EOS ignored), each re-reading the whole prefix with an empty cache and writing a whole
/// continuation, of which only the first sentence by [`reference_first_sentence`] is kept; the
/// aligner's raw correction is appended with one space (the first with none).
pub fn reference<M: CausalLm, C: Corrector>(
    upstream: &mut LocalUpstream<'_, M>,
    corrector: &mut C,
    question: &str,
    config: ReferenceConfig,
    mut on_event: impl FnMut(&Event),
) -> Result<Record> {
    let start = Instant::now();
    let mut prefix = String::new();
    let mut draft_all = String::new();
    let mut rounds = Vec::new();
    let mut summary = Summary {
        reason: DoneReason::MaxRounds,
        ..Summary::default()
    };
    for round in 0..config.rounds {
        let t = Instant::now();
        let (continuation, tokens) = upstream.continuation_from_scratch(
            question,
            &prefix,
            config.max_continuation_tokens,
        )?;
        let upstream_time = t.elapsed();
        summary.rounds += 1;
        summary.upstream_tokens += tokens;
        summary.upstream_ms += ms(upstream_time);
        let Some(last) = reference_first_sentence(&continuation) else {
            continue;
        };
        on_event(&Event::Drafted {
            round,
            draft: Draft {
                text: last.clone(),
                tokens,
                stop: DraftStop::Sentence,
            },
            elapsed: upstream_time,
        });
        let t = Instant::now();
        let correction = corrector.correct(question, &prefix, &last)?;
        let corrector_time = t.elapsed();
        let committed = if prefix.is_empty() {
            correction.text.clone()
        } else {
            format!(" {}", correction.text)
        };
        let changed = correction.text != last;
        on_event(&Event::Corrected {
            round,
            correction: correction.clone(),
            changed,
            elapsed: corrector_time,
        });
        let at = ms(start.elapsed());
        summary.first_sentence_ms.get_or_insert(at);
        summary.sentences += 1;
        summary.changed += usize::from(changed);
        summary.corrector_tokens += correction.tokens;
        summary.corrector_ms += ms(corrector_time);
        let record = RoundRecord {
            round,
            prefix: prefix.clone(),
            last: last.clone(),
            correction: correction.text.clone(),
            committed: committed.clone(),
            changed,
            stop: DraftStop::Sentence,
            upstream_tokens: tokens,
            corrector_tokens: correction.tokens,
            upstream_ms: ms(upstream_time),
            corrector_ms: ms(corrector_time),
            committed_at_ms: at,
        };
        on_event(&Event::Committed(record.clone()));
        rounds.push(record);
        if !draft_all.is_empty() {
            draft_all.push(' ');
        }
        draft_all.push_str(&last);
        prefix.push_str(&committed);
    }
    summary.wall_ms = ms(start.elapsed());
    on_event(&Event::Done(summary.clone()));
    Ok(Record {
        mode: Mode::Reference,
        question: question.to_owned(),
        draft: draft_all,
        answer: prefix,
        rounds,
        summary,
    })
}
