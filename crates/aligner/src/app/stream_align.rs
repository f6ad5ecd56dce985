//! Answering questions with an upstream model and an aligner: the application behind
//! `examples/stream_align/` (the README's main command).
//!
//! [`answer`] runs one question in one of the [`Mode`]s and returns its [`Record`];
//! [`aligner_dir`] and [`check_trained_for`] pick the aligner and make sure it was trained for
//! the mode; [`read_questions`] reads a question file.

use std::path::{Path, PathBuf};

use super::{Error, Result, repo_path};
use crate::data::aligner_config::{AlignerConfig, AlignerTask};
use crate::model::CausalLm;
use crate::stream::modes::{self, ReferenceConfig};
use crate::stream::{
    Event, LocalCorrector, LocalUpstream, MachineConfig, Record, StreamMachine, Upstream,
};

/// The shipped Stream Aligner, relative to the repository root.
pub const SHIPPED_STREAM_ALIGNER: &str = "assets/stream-aligner";
/// The shipped whole-answer Aligner.
pub const SHIPPED_WHOLE_ALIGNER: &str = "assets/aligner";

/// How a question is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sentence by sentence: the upstream continues from each corrected sentence.
    Stream,
    /// The upstream writes the whole answer, the aligner rewrites it once.
    Aligner,
    /// The upstream alone (baseline).
    Upstream,
    /// The published loop: whole continuations, single-space joins, EOS ignored.
    Reference,
}

impl Mode {
    /// What the aligner must have been trained for in this mode (`None`: no aligner runs).
    pub fn task(self) -> Option<AlignerTask> {
        match self {
            Self::Stream | Self::Reference => Some(AlignerTask::Sentence),
            Self::Aligner => Some(AlignerTask::Answer),
            Self::Upstream => None,
        }
    }
}

/// The aligner folder: `given`, else the shipped aligner of the mode (the whole-answer Aligner
/// for [`Mode::Aligner`], the Stream Aligner otherwise), else `fallback` (the upstream model
/// itself, prompted with the instructions: not a trained aligner).
pub fn aligner_dir(given: Option<&Path>, mode: Mode, fallback: &Path) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    let shipped = repo_path(if mode == Mode::Aligner {
        SHIPPED_WHOLE_ALIGNER
    } else {
        SHIPPED_STREAM_ALIGNER
    });
    if shipped.is_dir() {
        shipped
    } else {
        fallback.to_path_buf()
    }
}

/// An error unless the aligner in `dir`, prompted as `prompt` says, was trained for `mode`.
pub fn check_trained_for(prompt: &AlignerConfig, mode: Mode, dir: &Path) -> Result<()> {
    let Some(task) = mode.task() else {
        return Ok(());
    };
    if prompt.format_for(task).is_some() {
        return Ok(());
    }
    let what = match task {
        AlignerTask::Sentence => "correct single sentences (stream and reference modes)",
        AlignerTask::Answer => "rewrite whole answers (aligner mode)",
    };
    Err(Error::Invalid(format!(
        "{} was trained on {} only, which cannot {what}: choose another mode or aligner",
        dir.display(),
        prompt.formats.join(", "),
    )))
}

/// The questions of a file: JSON Lines with a `question` field, or one question per line.
/// Blank lines are skipped; an empty question or a line without one is an error naming it.
pub fn read_questions(path: &Path) -> Result<Vec<String>> {
    let text = crate::data::file::read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let question = if line.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                Error::Invalid(format!("{}:{}: not JSON: {e}", path.display(), i + 1))
            })?;
            let q = value["question"].as_str().ok_or_else(|| {
                Error::Invalid(format!(
                    "{}:{}: no string field `question`",
                    path.display(),
                    i + 1
                ))
            })?;
            q.to_owned()
        } else {
            line.to_owned()
        };
        if question.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "{}:{}: the question is empty",
                path.display(),
                i + 1
            )));
        }
        out.push(question);
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no question",
            path.display()
        )));
    }
    Ok(out)
}

/// The limits of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOptions {
    /// The mode.
    pub mode: Mode,
    /// In stream mode, run the upstream and the aligner at the same time
    /// ([`StreamMachine::run_overlapped`]).
    pub overlap: bool,
    /// Most rounds (default: 64; 16 in reference mode).
    pub max_rounds: Option<usize>,
    /// Most upstream tokens per sentence.
    pub max_sentence_tokens: usize,
    /// Most upstream tokens for the whole answer.
    pub max_tokens: usize,
    /// In stream mode, end after the first committed sentence that holds one of these.
    pub stop_after: Vec<String>,
}

/// The upstream of an answer: the local model (every mode) or any other (all but reference).
pub enum UpstreamRef<'a, 'm, M: CausalLm> {
    /// A local model.
    Local(&'a mut LocalUpstream<'m, M>),
    /// Any upstream, such as a remote server.
    Other(&'a mut (dyn Upstream + Send)),
}

/// Answers `question` as `options` say, reporting each event to `on_event`.
pub fn answer<'c, M: CausalLm + Sync, A: CausalLm>(
    upstream: UpstreamRef<'_, '_, M>,
    corrector: &mut LocalCorrector<'c, A>,
    question: &str,
    options: &AnswerOptions,
    on_event: impl FnMut(&Event),
) -> Result<Record>
where
    LocalCorrector<'c, A>: Send,
{
    let upstream: &mut (dyn Upstream + Send) = match (options.mode, upstream) {
        (Mode::Reference, UpstreamRef::Local(local)) => {
            let config = ReferenceConfig {
                rounds: options.max_rounds.unwrap_or(16),
                max_continuation_tokens: options.max_sentence_tokens.max(1) * 2,
            };
            return Ok(modes::reference(
                local, corrector, question, config, on_event,
            )?);
        }
        (Mode::Reference, UpstreamRef::Other(_)) => {
            return Err(Error::Invalid(
                "reference mode needs the local upstream (it re-reads the prefix with an empty \
                 cache)"
                    .into(),
            ));
        }
        (_, UpstreamRef::Local(local)) => local,
        (_, UpstreamRef::Other(other)) => other,
    };
    let max_tokens = options.max_tokens;
    let record = match options.mode {
        Mode::Stream => {
            let config = MachineConfig {
                max_rounds: options.max_rounds.unwrap_or(64),
                max_sentence_tokens: options.max_sentence_tokens,
                max_total_tokens: max_tokens,
                stop_after: options.stop_after.clone(),
            };
            let mut machine = StreamMachine::new(question.to_owned(), config)?;
            if options.overlap {
                machine.run_overlapped(upstream, corrector, on_event)?
            } else {
                machine.run(upstream, corrector, on_event)?
            }
        }
        Mode::Aligner => modes::whole_answer(upstream, corrector, question, max_tokens, on_event)?,
        // Reference mode was answered above.
        Mode::Upstream | Mode::Reference => {
            modes::upstream_only(upstream, question, max_tokens, on_event)?
        }
    };
    Ok(record)
}

/// How the main command shows an answer: the committed text on stdout as each sentence is
/// accepted, and on stderr the upstream's draft where the aligner replaced it (struck through
/// and dim on a terminal, `[-draft-]` elsewhere, `[draft] ... [aligned]` for whole answers).
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    mode: Mode,
    ansi: bool,
}

impl Printer {
    /// A printer for `mode`; `quiet` leaves the drafts out, `ansi` styles them.
    pub fn new(quiet: bool, mode: Mode, ansi: bool) -> Self {
        Self { quiet, mode, ansi }
    }

    /// What to write for `event`: the stderr part (the replaced draft, if shown) and the
    /// stdout part (the committed text); nothing for events other than a commit.
    pub fn render(&self, event: &Event) -> Option<(Option<String>, String)> {
        let Event::Committed(round) = event else {
            return None;
        };
        let draft = (round.changed && !self.quiet).then(|| {
            let draft = round.last.trim();
            if self.mode == Mode::Aligner {
                format!("[draft]\n{draft}\n[aligned]\n")
            } else if self.ansi {
                // Struck through and dim, then the accepted text in the normal colour.
                format!("\x1b[2;9m{draft}\x1b[0m ")
            } else {
                format!("[-{draft}-] ")
            }
        });
        Some((draft, round.committed.clone()))
    }

    /// Writes what [`render`](Self::render) gives to stderr and stdout, flushing stdout so
    /// that each sentence shows as soon as it is accepted.
    pub fn show(&self, event: &Event) {
        use std::io::Write;
        let Some((draft, committed)) = self.render(event) else {
            return;
        };
        if let Some(draft) = draft {
            eprint!("{draft}");
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(committed.as_bytes());
        let _ = out.flush();
    }
}

/// The two summary lines the main command prints after an answer: rounds, sentences, changes
/// and why it ended; then wall time, time to the first sentence and both models' speeds.
pub fn summary(record: &Record, mode: Mode) -> String {
    let s = &record.summary;
    let first = s
        .first_sentence_ms
        .map_or("-".to_owned(), |t| format!("{:.2} s", t / 1e3));
    let upstream_rate = s.upstream_tokens as f64 / (s.upstream_ms / 1e3).max(1e-9);
    format!(
        "[{mode:?}] {} rounds, {} sentences, {} changed by the aligner, ended by {:?}\n\
         wall {:.2} s, first sentence {first}; upstream {} tokens in {:.2} s ({upstream_rate:.1} tok/s), aligner {} tokens in {:.2} s; {:.1} tok/s overall",
        s.rounds,
        s.sentences,
        s.changed,
        s.reason,
        s.wall_ms / 1e3,
        s.upstream_tokens,
        s.upstream_ms / 1e3,
        s.corrector_tokens,
        s.corrector_ms / 1e3,
        s.tokens_per_second(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::file::WrapFileError as _;

    fn write(path: &Path, text: &str) -> Result<()> {
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    #[test]
    fn question_files_in_both_forms_and_their_errors() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let path = dir.path().join("q.txt");
        write(&path, "What is 2 + 2?\n\n{\"question\": \"Why?\"}\n")?;
        assert_eq!(read_questions(&path)?, ["What is 2 + 2?", "Why?"]);
        for (text, says) in [
            ("{\"q\": 1}\n", "no string field `question`"),
            ("{not json\n", "not JSON"),
            ("{\"question\": \"  \"}\n", "empty"),
            ("\n\n", "holds no question"),
        ] {
            write(&path, text)?;
            let e = read_questions(&path).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(says)),
                "{text:?}: {e:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_printer_shows_replaced_drafts_on_stderr_and_every_commit_on_stdout() {
        use crate::stream::{DraftStop, RoundRecord};
        let round = |changed: bool| {
            Event::Committed(RoundRecord {
                round: 0,
                prefix: String::new(),
                last: " The answer is 19. ".into(),
                correction: "The answer is 14.".into(),
                committed: "The answer is 14. ".into(),
                changed,
                stop: DraftStop::Sentence,
                upstream_tokens: 6,
                corrector_tokens: 6,
                upstream_ms: 1.0,
                corrector_ms: 1.0,
                committed_at_ms: 2.0,
            })
        };
        let committed = "The answer is 14. ".to_owned();
        let show =
            |quiet, mode, ansi, changed| Printer::new(quiet, mode, ansi).render(&round(changed));
        assert_eq!(
            show(false, Mode::Stream, false, true),
            Some((Some("[-The answer is 19.-] ".into()), committed.clone()))
        );
        assert_eq!(
            show(false, Mode::Stream, true, true),
            Some((
                Some("\x1b[2;9mThe answer is 19.\x1b[0m ".into()),
                committed.clone()
            ))
        );
        assert_eq!(
            show(false, Mode::Aligner, true, true),
            Some((
                Some("[draft]\nThe answer is 19.\n[aligned]\n".into()),
                committed.clone()
            ))
        );
        assert_eq!(
            show(false, Mode::Stream, false, false),
            Some((None, committed.clone()))
        );
        assert_eq!(
            show(true, Mode::Stream, false, true),
            Some((None, committed))
        );
        let done = Event::Done(crate::stream::Summary::default());
        assert_eq!(Printer::new(false, Mode::Stream, false).render(&done), None);
    }

    #[test]
    fn a_mode_needs_what_the_aligner_was_trained_for() -> Result<()> {
        let dir = Path::new("a");
        let record = |format| {
            AlignerConfig::from_training([format], false, None)
                .ok_or_else(|| Error::Invalid(format!("{format} is an aligner format")))
        };
        let sentences = record("stream-instruction")?;
        assert!(check_trained_for(&sentences, Mode::Stream, dir).is_ok());
        assert!(check_trained_for(&sentences, Mode::Upstream, dir).is_ok());
        let e = check_trained_for(&sentences, Mode::Aligner, dir).err();
        assert!(e.is_some_and(|e| e.to_string().contains("rewrite whole answers")));
        let answers = record("correction-v1")?;
        assert!(check_trained_for(&answers, Mode::Aligner, dir).is_ok());
        assert!(check_trained_for(&answers, Mode::Reference, dir).is_err());
        Ok(())
    }
}
