//! Stream Aligner training rows from an upstream's real sentences.
//!
//! For a problem with reference steps `s_0 .. s_n` and each step `k`, the upstream continues the
//! answer from the reference prefix `s_0 .. s_{k-1}` exactly as it does inside the
//! [`StreamMachine`](crate::StreamMachine) (the accepted text ends with a space, the upstream stops
//! at the first sentence boundary), and the row pairs the sentence it actually wrote (`last`) with
//! the reference step (`correction`): `{"question", "prefix", "last", "correction",
//! "problem_id", "step", "identity"}` ([`StepRow`]). Identity rows (`last == correction ==` the
//! reference step, `identity: true`) are added at a chosen share of the output. A whole-answer
//! row ([`WholeRow`]) pairs the upstream's whole answer with the reference solution, for the
//! whole-answer Aligner.
//!
//! [`RowFiles`] appends each problem's rows to `stream.jsonl` and `whole.jsonl` and flushes, so a
//! run can be stopped at any point and resumed: problems already written are skipped, and rows
//! of a problem cut short are dropped on reopening. [`collect`] drives the whole loop.
//!
//! ```
//! use aligner_data::math::MathProblem;
//! use aligner_stream::rows::{RowsConfig, step_rows};
//! use std::sync::atomic::AtomicBool;
//!
//! use aligner_stream::{Conversation, Draft, DraftStop, Upstream};
//!
//! /// Always writes the same wrong sentence.
//! struct Sloppy;
//! impl Upstream for Sloppy {
//!     fn draft_conversation(
//!         &mut self,
//!         _conversation: &Conversation,
//!         _accepted: &str,
//!         _max: usize,
//!         _cancel: Option<&AtomicBool>,
//!     ) -> aligner_stream::Result<Draft> {
//!         Ok(Draft { text: "So 2 + 2 = 5 apples. ".into(), tokens: 9, stop: DraftStop::Sentence })
//!     }
//! }
//! let steps = vec!["Mia has 2 + 2 = 4 apples.".to_owned(), "The answer is 4.".to_owned()];
//! let problem = MathProblem::new("p1", "Mia has 2 apples and gets 2 more. How many?", steps, 4);
//! let config = RowsConfig { identity_share: 0.0, ..RowsConfig::default() };
//! let (rows, stats) = step_rows(&mut Sloppy, &problem, &config)?;
//! assert_eq!(rows.len(), 2);
//! assert_eq!(rows[1].prefix, "Mia has 2 + 2 = 4 apples.");
//! assert_eq!(rows[1].last, "So 2 + 2 = 5 apples.");
//! assert_eq!(rows[1].correction, "The answer is 4.");
//! assert_eq!(stats.sentences, 2);
//! # Ok::<(), aligner_stream::Error>(())
//! ```

use aligner_data::file::WrapFileError as _;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use aligner_data::math::MathProblem;
use aligner_data::rng::{SplitMix64, derive_seed};
use serde::{Deserialize, Serialize};

use crate::machine::{DraftStop, Upstream};
use crate::record::LineFile;
use crate::{Error, Result};

/// One sentence-level training row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRow {
    /// The question.
    pub question: String,
    /// The reference steps before this one, joined with single spaces.
    pub prefix: String,
    /// The sentence the upstream wrote after `prefix` (trimmed); the reference step itself in
    /// an identity row.
    pub last: String,
    /// The reference step.
    pub correction: String,
    /// The problem's id.
    pub problem_id: String,
    /// 0-based index of the step.
    pub step: usize,
    /// Whether this is an added identity row (`last == correction` by construction). A real row
    /// whose sentence happens to equal the reference step has `identity: false`.
    pub identity: bool,
}

/// One whole-answer training row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeRow {
    /// The question.
    pub question: String,
    /// The upstream's whole answer (trimmed).
    pub answer: String,
    /// The reference solution: the steps joined with single spaces (the GSM8K `answer` without
    /// its `#### N` line), ending with `"The answer is N."`.
    pub correction: String,
    /// The problem's id.
    pub problem_id: String,
}

/// How rows are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RowsConfig {
    /// Expected share of identity rows among the step rows, in `[0, 1)` (0.2 in the paper).
    pub identity_share: f64,
    /// Seed of the identity-row choice (per problem id, so it does not depend on the order).
    pub seed: u64,
    /// Most upstream tokens for one sentence.
    pub max_sentence_tokens: usize,
    /// Most upstream tokens for a whole answer.
    pub max_answer_tokens: usize,
}

impl Default for RowsConfig {
    fn default() -> Self {
        Self {
            identity_share: 0.2,
            seed: 42,
            max_sentence_tokens: 96,
            max_answer_tokens: 256,
        }
    }
}

impl RowsConfig {
    /// Checks the share is in `[0, 1)` and the token caps are at least 1.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.identity_share) {
            return Err(Error::InvalidConfig {
                field: "identity_share",
                reason: format!("must be in [0, 1), got {}", self.identity_share),
            });
        }
        for (field, value) in [
            ("max_sentence_tokens", self.max_sentence_tokens),
            ("max_answer_tokens", self.max_answer_tokens),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// Counters of the rows made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowStats {
    /// Problems written.
    pub problems: usize,
    /// Sentences the upstream wrote (one row each).
    pub sentences: usize,
    /// Of those, the ones equal to the reference step.
    pub matched: usize,
    /// Of those, the ones cut by the sentence token cap.
    pub capped: usize,
    /// Steps where the upstream wrote nothing (it ended its answer): no row.
    pub empty: usize,
    /// Identity rows added.
    pub identity: usize,
    /// Whole-answer rows.
    pub whole: usize,
    /// Tokens the upstream generated.
    pub upstream_tokens: usize,
}

impl RowStats {
    fn add(&mut self, other: &RowStats) {
        self.problems += other.problems;
        self.sentences += other.sentences;
        self.matched += other.matched;
        self.capped += other.capped;
        self.empty += other.empty;
        self.identity += other.identity;
        self.whole += other.whole;
        self.upstream_tokens += other.upstream_tokens;
    }

    /// Step rows written (sentences and identity rows).
    #[must_use]
    pub fn step_rows(&self) -> usize {
        self.sentences + self.identity
    }
}

/// The step rows of one problem: for each reference step, the upstream's sentence after the
/// reference prefix, plus identity rows drawn for `config.identity_share`.
///
/// The number of identity rows per step is `floor(r)` plus one with probability `frac(r)`, with
/// `r = share / (1 - share)`, so identity rows are `share` of the output in expectation; the
/// draw depends on the seed and the problem id only.
pub fn step_rows<U: Upstream + ?Sized>(
    upstream: &mut U,
    problem: &MathProblem,
    config: &RowsConfig,
) -> Result<(Vec<StepRow>, RowStats)> {
    config.validate()?;
    let ratio = config.identity_share / (1.0 - config.identity_share);
    let mut rng = SplitMix64::new(derive_seed(config.seed, fnv1a(&problem.id)));
    let mut rows = Vec::new();
    let mut stats = RowStats::default();
    for (k, reference) in problem.steps.iter().enumerate() {
        let prefix = problem.steps[..k].join(" ");
        let accepted = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix} ")
        };
        let draft = upstream.draft(&problem.question, &accepted, config.max_sentence_tokens)?;
        stats.upstream_tokens += draft.tokens;
        let row = |last: &str, identity: bool| StepRow {
            question: problem.question.clone(),
            prefix: prefix.clone(),
            last: last.to_owned(),
            correction: reference.clone(),
            problem_id: problem.id.clone(),
            step: k,
            identity,
        };
        let last = draft.text.trim();
        if last.is_empty() {
            stats.empty += 1;
        } else {
            stats.sentences += 1;
            stats.matched += usize::from(last == reference.trim());
            stats.capped += usize::from(draft.stop == DraftStop::TokenCap);
            rows.push(row(last, false));
        }
        let copies = ratio.floor() as usize + usize::from(rng.next_f64() < ratio.fract());
        for _ in 0..copies {
            rows.push(row(reference, true));
            stats.identity += 1;
        }
    }
    Ok((rows, stats))
}

/// The upstream's whole answer to `question` (drafted sentence by sentence, each continuing
/// the last, to EOS or `max_tokens`): its text and the tokens generated.
pub fn whole_answer<U: Upstream + ?Sized>(
    upstream: &mut U,
    question: &str,
    max_tokens: usize,
) -> Result<(String, usize)> {
    let mut answer = String::new();
    let mut tokens = 0;
    while tokens < max_tokens {
        let draft = upstream.draft(question, &answer, max_tokens - tokens)?;
        tokens += draft.tokens.min(max_tokens - tokens);
        answer.push_str(&draft.text);
        if draft.stop == DraftStop::Eos || (draft.text.is_empty() && draft.tokens == 0) {
            break;
        }
    }
    Ok((answer, tokens))
}

/// The whole-answer row of one problem.
pub fn whole_row<U: Upstream + ?Sized>(
    upstream: &mut U,
    problem: &MathProblem,
    config: &RowsConfig,
) -> Result<(WholeRow, usize)> {
    let (answer, tokens) = whole_answer(upstream, &problem.question, config.max_answer_tokens)?;
    let row = WholeRow {
        question: problem.question.clone(),
        answer: answer.trim().to_owned(),
        correction: problem.solution(),
        problem_id: problem.id.clone(),
    };
    Ok((row, tokens))
}

/// The rows of a question whose answer the aligner should leave alone: the upstream's own
/// answer, drafted sentence by sentence exactly as in stream mode (each draft continues the
/// text so far and stops at the first sentence boundary, at most `max_sentence_tokens` each and
/// `max_answer_tokens` in all), makes one identity row per sentence (`prefix` = the sentences
/// before it, `last == correction` = the sentence, `identity: true`, as the corrector is
/// prompted at inference: both trimmed) and one identity whole-answer row.
///
/// These are the rows that teach an aligner trained on a narrow domain to keep what it was not
/// trained to fix; the questions should come from outside that domain
/// (`aligner_data::everyday`). Every row counts as an identity row in the stats.
pub fn identity_rows<U: Upstream + ?Sized>(
    upstream: &mut U,
    id: &str,
    question: &str,
    config: &RowsConfig,
) -> Result<(Vec<StepRow>, WholeRow, RowStats)> {
    config.validate()?;
    let mut stats = RowStats::default();
    let mut rows = Vec::new();
    let mut accepted = String::new();
    while stats.upstream_tokens < config.max_answer_tokens {
        let cap = config
            .max_sentence_tokens
            .min(config.max_answer_tokens - stats.upstream_tokens);
        let draft = upstream.draft(question, &accepted, cap)?;
        stats.upstream_tokens += draft.tokens.min(cap);
        let sentence = draft.text.trim();
        if sentence.is_empty() {
            stats.empty += 1;
        } else {
            stats.identity += 1;
            stats.capped += usize::from(draft.stop == DraftStop::TokenCap);
            rows.push(StepRow {
                question: question.to_owned(),
                prefix: accepted.trim().to_owned(),
                last: sentence.to_owned(),
                correction: sentence.to_owned(),
                problem_id: id.to_owned(),
                step: rows.len(),
                identity: true,
            });
        }
        accepted.push_str(&draft.text);
        if draft.stop == DraftStop::Eos || (draft.text.is_empty() && draft.tokens == 0) {
            break;
        }
    }
    let answer = accepted.trim().to_owned();
    let whole = WholeRow {
        question: question.to_owned(),
        answer: answer.clone(),
        correction: answer,
        problem_id: id.to_owned(),
    };
    stats.whole = 1;
    stats.problems = 1;
    Ok((rows, whole, stats))
}

/// FNV-1a of a string: a stable 64-bit key for per-problem seeds.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The two output files of a row collection, appended problem by problem.
///
/// A problem counts as written once its whole-answer row is in `whole.jsonl`; its step rows
/// are written (and flushed) before it. [`RowFiles::open`] recovers from a run stopped at any
/// point: it drops a last line cut mid-write and the step rows of a problem whose whole-answer
/// row is missing, so the files hold complete problems only.
#[derive(Debug)]
pub struct RowFiles {
    stream: LineFile,
    whole: LineFile,
    done: HashSet<String>,
}

impl RowFiles {
    /// File of the step rows.
    pub const STREAM_FILE: &'static str = "stream.jsonl";
    /// File of the whole-answer rows.
    pub const WHOLE_FILE: &'static str = "whole.jsonl";

    /// Opens (creating) `dir/stream.jsonl` and `dir/whole.jsonl` for appending, after
    /// recovering what an interrupted run left.
    ///
    /// # Errors
    /// [`Error::File`] when a file cannot be read or written, or when a line other
    /// than the last is not a JSON object with a string `problem_id` (the file is not ours, or
    /// was damaged).
    pub fn open(dir: &Path) -> Result<Self> {
        aligner_data::file::create_dir(dir)?;
        let stream_path = dir.join(Self::STREAM_FILE);
        let whole_path = dir.join(Self::WHOLE_FILE);
        let whole_lines = complete_lines(&whole_path)?;
        let done: HashSet<String> = whole_lines.iter().map(|(id, _)| id.clone()).collect();
        rewrite_if_needed(&whole_path, &whole_lines, |_| true)?;
        let stream_lines = complete_lines(&stream_path)?;
        rewrite_if_needed(&stream_path, &stream_lines, |id| done.contains(id))?;
        Ok(Self {
            stream: LineFile::append(&stream_path)?,
            whole: LineFile::append(&whole_path)?,
            done,
        })
    }

    /// Ids of the problems already written.
    #[must_use]
    pub fn done(&self) -> &HashSet<String> {
        &self.done
    }

    /// Whether problem `id` is written.
    #[must_use]
    pub fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Appends one problem's rows: the step rows, then the whole-answer row, which marks the
    /// problem as written (each line flushed as it is written).
    pub fn append(&mut self, steps: &[StepRow], whole: &WholeRow) -> Result<()> {
        for row in steps {
            self.stream.write_json(row)?;
        }
        self.whole.write_json(whole)?;
        self.done.insert(whole.problem_id.clone());
        Ok(())
    }
}

/// A file's lines as `(problem_id, line)`, with a last line cut mid-write (no newline, not
/// valid JSON) left out. A missing file has no lines.
fn complete_lines(path: &Path) -> Result<Vec<(String, String)>> {
    let io = |e| Error::io(path, e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            break;
        }
        let complete = buf.ends_with(b"\n");
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("problem_id")?.as_str().map(str::to_owned));
        match id {
            Some(id) if complete => out.push((id, text.to_owned())),
            // The last line of an interrupted write: drop it.
            _ if !complete => break,
            _ => {
                return Err(Error::json(
                    path,
                    serde::de::Error::custom(format!(
                        "row {} is not an object with a string `problem_id`",
                        out.len() + 1
                    )),
                ));
            }
        }
    }
    Ok(out)
}

/// Rewrites `path` with the `lines` whose id `keep` accepts, unless the file already holds
/// exactly those lines.
fn rewrite_if_needed(
    path: &Path,
    lines: &[(String, String)],
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let kept: Vec<&str> = lines
        .iter()
        .filter(|(id, _)| keep(id))
        .map(|(_, line)| line.as_str())
        .collect();
    let expected: usize = kept.iter().map(|l| l.len() + 1).sum();
    let actual = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(_) => return Ok(()),
    };
    if kept.len() == lines.len() && actual == expected {
        return Ok(());
    }
    let io = |e| Error::io(path, e);
    aligner_data::atomic::write_with(path, |out| {
        for line in kept {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok::<(), std::io::Error>(())
    })
    .map_err(io)
}

/// Where a [`collect`] run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// Problems handled so far (written or skipped), this one included.
    pub done: usize,
    /// Problems in all.
    pub total: usize,
    /// The problem just handled.
    pub problem_id: &'a str,
    /// Whether it was skipped because it was already written.
    pub skipped: bool,
    /// Totals of this run so far (skipped problems not counted).
    pub stats: RowStats,
}

/// Makes and writes the rows of every problem not yet in `files`, in order, calling
/// `on_progress` after each problem. The step rows come from `upstream`; the whole answers
/// from `answer_upstream` when given (e.g. a greedy copy of the upstream), else from
/// `upstream` too, before the step rows (so the first step's sentence is the first sentence of
/// that answer). Returns the totals of this run.
pub fn collect(
    problems: &[MathProblem],
    upstream: &mut dyn Upstream,
    mut answer_upstream: Option<&mut dyn Upstream>,
    files: &mut RowFiles,
    config: &RowsConfig,
    on_progress: impl FnMut(&Progress<'_>),
) -> Result<RowStats> {
    config.validate()?;
    let ids: Vec<&str> = problems.iter().map(|p| p.id.as_str()).collect();
    collect_each(&ids, files, on_progress, |i| {
        let problem = &problems[i];
        // The whole answer first: the upstream then only ever continues text it wrote or
        // text it was given, never a shorter prefix of text it was given (a
        // [`LocalUpstream`](crate::LocalUpstream) reuses what it holds past a prefix of it as
        // its own lookahead).
        let (whole, tokens) = match answer_upstream.as_deref_mut() {
            Some(answerer) => whole_row(answerer, problem, config)?,
            None => whole_row(&mut *upstream, problem, config)?,
        };
        let (steps, mut stats) = step_rows(&mut *upstream, problem, config)?;
        stats.upstream_tokens += tokens;
        stats.whole += 1;
        stats.problems += 1;
        Ok((steps, whole, stats))
    })
}

/// [`identity_rows`] of every `(id, question)` not yet in `files`, in order, calling
/// `on_progress` after each. Returns the totals of this run.
pub fn collect_identity(
    questions: &[(String, String)],
    upstream: &mut dyn Upstream,
    files: &mut RowFiles,
    config: &RowsConfig,
    on_progress: impl FnMut(&Progress<'_>),
) -> Result<RowStats> {
    config.validate()?;
    let ids: Vec<&str> = questions.iter().map(|(id, _)| id.as_str()).collect();
    collect_each(&ids, files, on_progress, |i| {
        let (id, question) = &questions[i];
        identity_rows(&mut *upstream, id, question, config)
    })
}

/// The loop of [`collect`] and [`collect_identity`]: `make(i)` the rows of item `i` unless
/// `ids[i]` is written, append them, report.
fn collect_each(
    ids: &[&str],
    files: &mut RowFiles,
    mut on_progress: impl FnMut(&Progress<'_>),
    mut make: impl FnMut(usize) -> Result<(Vec<StepRow>, WholeRow, RowStats)>,
) -> Result<RowStats> {
    let mut totals = RowStats::default();
    for (i, id) in ids.iter().enumerate() {
        let skipped = files.is_done(id);
        if !skipped {
            let (steps, whole, stats) = make(i)?;
            files.append(&steps, &whole)?;
            totals.add(&stats);
        }
        on_progress(&Progress {
            done: i + 1,
            total: ids.len(),
            problem_id: id,
            skipped,
            stats: totals,
        });
    }
    Ok(totals)
}

#[cfg(test)]
mod tests;
