//! What a correction run leaves behind: one [`Record`] per question, written as JSON Lines.

use aligner_data::file::WrapFileError as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Why the upstream stopped writing a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftStop {
    /// A sentence ended (the upstream has more to say).
    Sentence,
    /// The upstream wrote its end-of-sequence token: the answer is complete.
    Eos,
    /// The token cap of the call was reached mid-sentence.
    TokenCap,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    /// The upstream ended its answer.
    #[default]
    Eos,
    /// [`MachineConfig::max_rounds`](crate::MachineConfig::max_rounds) rounds ran.
    MaxRounds,
    /// The upstream used [`MachineConfig::max_total_tokens`](crate::MachineConfig::max_total_tokens).
    MaxTotalTokens,
    /// The upstream returned no text, no tokens and no EOS: it cannot go on.
    Stalled,
    /// A committed sentence held one of [`MachineConfig::stop_after`](crate::MachineConfig::stop_after).
    StopText,
}

/// How an answer was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Stream Aligner: sentence by sentence, the upstream continuing from the corrected text.
    #[default]
    Stream,
    /// Aligner: the upstream writes the whole answer, the aligner rewrites it once.
    Aligner,
    /// The upstream alone (baseline).
    Upstream,
    /// The published Stream Aligner loop, defects included, for comparison.
    Reference,
}

impl Mode {
    /// The name used on the command line and in records.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Aligner => "aligner",
            Mode::Upstream => "upstream",
            Mode::Reference => "reference",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One round: the upstream's draft sentence, the corrector's answer and what was committed.
///
/// `question`, `prefix`, `last` and `correction` are the fields of the Stream Aligner
/// sentence-level data set, so rounds can be exported as training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 0-based round number.
    pub round: usize,
    /// The accepted answer before this round.
    pub prefix: String,
    /// The upstream's sentence, with the whitespace that follows it.
    pub last: String,
    /// What the corrector wrote (trimmed), or `last` when it was not asked.
    pub correction: String,
    /// The text appended to the answer: the correction in the draft's layout.
    pub committed: String,
    /// Whether `committed` differs from `last`.
    pub changed: bool,
    /// Why the upstream stopped writing.
    pub stop: DraftStop,
    /// Tokens the upstream generated this round.
    pub upstream_tokens: usize,
    /// Tokens the corrector generated this round.
    pub corrector_tokens: usize,
    /// Upstream wall time, milliseconds.
    pub upstream_ms: f64,
    /// Corrector wall time, milliseconds.
    pub corrector_ms: f64,
    /// Milliseconds from the start of the run to this commit.
    pub committed_at_ms: f64,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Why the run ended.
    pub reason: DoneReason,
    /// Rounds run (upstream calls).
    pub rounds: usize,
    /// Sentences committed.
    pub sentences: usize,
    /// Sentences the corrector changed.
    pub changed: usize,
    /// Tokens the upstream generated.
    pub upstream_tokens: usize,
    /// Tokens the corrector generated.
    pub corrector_tokens: usize,
    /// Time spent in the upstream, milliseconds.
    pub upstream_ms: f64,
    /// Time spent in the corrector, milliseconds.
    pub corrector_ms: f64,
    /// Time to the first committed sentence, milliseconds (`None` if nothing was committed).
    pub first_sentence_ms: Option<f64>,
    /// Wall time of the run, milliseconds.
    pub wall_ms: f64,
    /// Drafts written ahead, while the corrector checked the sentence before, and used
    /// ([`StreamMachine::run_overlapped`](crate::StreamMachine::run_overlapped)).
    #[serde(default)]
    pub drafts_ahead: usize,
    /// Drafts written (or started) ahead and dropped: the corrector changed the sentence they
    /// continued, or they failed.
    #[serde(default)]
    pub drafts_ahead_wasted: usize,
}

impl Summary {
    /// Tokens (upstream and corrector) generated per second of wall time.
    #[must_use]
    pub fn tokens_per_second(&self) -> f64 {
        (self.upstream_tokens + self.corrector_tokens) as f64 / (self.wall_ms / 1e3).max(1e-9)
    }
}

/// Everything about one question: the original draft, the corrections and the final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// How the answer was produced.
    pub mode: Mode,
    /// The question.
    pub question: String,
    /// The upstream's text before correction: the drafts of all rounds, concatenated.
    pub draft: String,
    /// The final answer.
    pub answer: String,
    /// The rounds, in order (one for the whole-answer modes).
    pub rounds: Vec<RoundRecord>,
    /// Totals.
    pub summary: Summary,
}

impl Record {
    /// The record as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::json("<record>", e))
    }
}

/// A file written one line at a time, flushed after each line, with errors naming the file.
#[derive(Debug)]
pub(crate) struct LineFile {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl LineFile {
    /// Creates (or truncates) `path`.
    pub(crate) fn create(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(
            path.as_ref(),
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
    }

    /// Opens `path` (creating it) for appending.
    pub(crate) fn append(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(
            path.as_ref(),
            std::fs::OpenOptions::new().append(true).create(true),
        )
    }

    fn open(path: &Path, options: &std::fs::OpenOptions) -> Result<Self> {
        let file = options.open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    /// Writes `value` as one line of JSON (see [`LineFile::write_line`]).
    pub(crate) fn write_json(&mut self, value: &(impl Serialize + ?Sized)) -> Result<()> {
        let line = serde_json::to_string(value).map_err(|e| Error::json(&self.path, e))?;
        self.write_line(&line)
    }

    /// Writes `line` and a newline, then flushes, so an interrupted run keeps what it finished.
    pub(crate) fn write_line(&mut self, line: &str) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.write_all(b"\n").map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// Appends records (a [`Record`] or any other serialisable value) to a JSON Lines file, one
/// object per line.
#[derive(Debug)]
pub struct JsonlWriter {
    file: LineFile,
}

impl JsonlWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self {
            file: LineFile::create(path)?,
        })
    }

    /// Writes one record and flushes, so that an interrupted run keeps what it finished.
    pub fn write<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        self.file.write_json(record)
    }
}
