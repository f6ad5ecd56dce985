//! The harm side of the evaluation: what the aligners do to answers they should leave alone.
//!
//! The held-out everyday questions (`aligner_data::everyday::heldout`, never used for training)
//! are answered as the main job answers an ordinary question: the upstream with its chat template
//! and no system prompt, greedy unless `--sample` (then [`SamplingConfig::chat`]). Then:
//!
//! - **Stream Aligner**: the stream loop runs as in the main job; every round gives an
//!   (upstream sentence, committed sentence) pair, and `aligner_eval::harm` counts the changed
//!   sentences and the injected final-answer phrases and numbers.
//! - **whole-answer Aligner**: it rewrites the upstream's whole answer; the pair is (answer,
//!   rewritten answer), so its figures are per answer. It is also counted in the Stream
//!   Aligner's unit: the upstream's sentences that the rewrite does not hold word for word and
//!   in order (`aligner_eval::harm::rewritten_sentences`).
//!
//! Writes `everyday/SETTING.jsonl` (per question: id, category, question, the upstream's text,
//! the aligned text, the sentence pairs) beside the math outputs.

use std::path::Path;

use serde::Serialize;

use super::{Context as _, Loaded, Options, Progress, Result, new_corrector, new_upstream};
use crate::data::aligner_config::PromptOverrides;
use crate::data::everyday::{Category, EverydayQuestion};
use crate::eval::harm::{HarmReport, SentenceCount, rewritten_sentences};
use crate::model::generate::SamplingConfig;
use crate::stream::machine::join_correction;
use crate::stream::modes::upstream_only;
use crate::stream::{CorrectorConfig, JsonlWriter, MachineConfig, StreamMachine, UpstreamConfig};

/// The Stream Aligner on everyday questions.
pub const EVERYDAY_STREAM: &str = "everyday:upstream+stream";
/// The whole-answer Aligner on everyday questions.
pub const EVERYDAY_WHOLE: &str = "everyday:upstream+aligner";

/// One everyday answer of one setting, as written to `everyday/SETTING.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EverydayOutput {
    /// The question's id (`heldout-001`).
    pub id: String,
    /// Its category.
    pub category: Category,
    /// The question.
    pub question: String,
    /// What the upstream wrote: its whole answer, or in stream mode its sentences joined.
    pub draft: String,
    /// The answer after the aligner.
    pub output: String,
    /// (upstream text, aligner's text) pairs the harm is measured on: one per round in stream
    /// mode, one per answer for the whole-answer Aligner.
    pub pairs: Vec<(String, String)>,
    /// Seconds for this answer (upstream and aligner).
    pub seconds: f64,
}

/// The harm figures of each aligner on the everyday questions, as `results.json` holds them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EverydayHarm {
    /// Questions answered.
    pub questions: usize,
    /// The Stream Aligner, per sentence; `None` when it did not run.
    pub stream: Option<HarmReport>,
    /// The whole-answer Aligner, per answer; `None` when it did not run.
    pub whole: Option<HarmReport>,
    /// The whole-answer Aligner, per upstream sentence; `None` when it did not run.
    pub whole_sentences: Option<SentenceCount>,
}

impl EverydayHarm {
    /// (setting, unit of change, report) of each aligner that ran.
    fn reports(&self) -> impl Iterator<Item = (&'static str, &'static str, &HarmReport)> {
        [
            (EVERYDAY_STREAM, "sentence", &self.stream),
            (EVERYDAY_WHOLE, "answer", &self.whole),
        ]
        .into_iter()
        .filter_map(|(name, unit, report)| report.as_ref().map(|r| (name, unit, r)))
    }

    /// The Markdown section of `results.md`.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "## Everyday questions (harm)\n\n{} held-out everyday questions; a changed unit is a \
             sentence (Stream Aligner) or a whole answer (whole-answer Aligner) the aligner did \
             not keep; an injection is a final-answer phrase or a number the upstream's text did \
             not hold.\n\n| setting | unit | changed | changed share | answers changed | \
             answers with an injection |\n|---|---|---:|---:|---:|---:|\n",
            self.questions
        );
        let percent = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x));
        for (name, unit, r) in self.reports() {
            s.push_str(&format!(
                "| {name} | {unit} | {}/{} | {} | {}/{} | {}/{} |\n",
                r.changed,
                r.sentences,
                percent(r.changed_share),
                r.answers_changed,
                r.answers,
                r.answers_with_injection,
                r.answers,
            ));
            if let (EVERYDAY_WHOLE, Some(c)) = (name, self.whole_sentences) {
                s.push_str(&format!(
                    "| {name} | upstream sentence | {}/{} | {} | | |\n",
                    c.changed,
                    c.sentences,
                    percent(c.changed_share()),
                ));
            }
        }
        s
    }

    /// The console lines of the summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, unit, r) in self.reports() {
            s.push_str(&format!(
                "{name}: {}/{} {unit}s changed ({:.1}%), {} of {} answers with an injection\n",
                r.changed,
                r.sentences,
                100.0 * r.changed_share.unwrap_or(0.0),
                r.answers_with_injection,
                r.answers,
            ));
            if let (EVERYDAY_WHOLE, Some(c)) = (name, self.whole_sentences) {
                s.push_str(&format!(
                    "{name}: {}/{} upstream sentences changed ({:.1}%)\n",
                    c.changed,
                    c.sentences,
                    100.0 * c.changed_share().unwrap_or(0.0),
                ));
            }
        }
        s
    }
}

/// The models and settings shared with the math settings.
pub(super) struct Setup<'a> {
    pub upstream: &'a Loaded,
    pub stream: Option<&'a Loaded>,
    pub whole: Option<&'a Loaded>,
    pub corrector: &'a CorrectorConfig,
    pub prompt: &'a PromptOverrides,
    pub machine: &'a MachineConfig,
}

/// The upstream's settings on everyday questions: the main job's (no system prompt).
pub(super) fn upstream_config(args: &Options) -> UpstreamConfig {
    UpstreamConfig {
        sampling: if args.sample {
            SamplingConfig::chat(SamplingConfig::CHAT_TEMPERATURE, args.seed)
        } else {
            SamplingConfig::greedy()
        },
        chat_template: true,
        system: None,
    }
}

/// Answers `questions` with each aligner of `setup` and measures the harm.
pub(super) fn evaluate(
    questions: &[EverydayQuestion],
    setup: &Setup<'_>,
    args: &Options,
    out: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<EverydayHarm> {
    let dir = out.join("everyday");
    crate::data::file::create_dir(&dir)?;
    let config = upstream_config(args);
    let mut harm = EverydayHarm {
        questions: questions.len(),
        ..EverydayHarm::default()
    };
    if let Some(model) = setup.stream {
        let mut upstream = new_upstream(setup.upstream, &config)?;
        let mut corrector = new_corrector(model, setup.corrector, setup.prompt)?;
        harm.stream = Some(run(EVERYDAY_STREAM, questions, &dir, progress, &mut |q| {
            let record = StreamMachine::new(q.question.clone(), setup.machine.clone())?.run(
                &mut upstream,
                &mut corrector,
                |_| {},
            )?;
            let pairs = record
                .rounds
                .iter()
                .map(|r| (r.last.clone(), r.committed.clone()))
                .collect();
            Ok((record.draft.clone(), record.answer.clone(), pairs))
        })?);
    }
    if let Some(model) = setup.whole {
        let mut upstream = new_upstream(setup.upstream, &config)?;
        let mut corrector = new_corrector(model, setup.corrector, setup.prompt)?;
        let mut sentences = SentenceCount::default();
        harm.whole = Some(run(EVERYDAY_WHOLE, questions, &dir, progress, &mut |q| {
            let draft = upstream_only(&mut upstream, &q.question, args.max_tokens, |_| {})?.answer;
            let correction = corrector.rewrite_answer(&q.question, &draft)?;
            let answer = join_correction(&draft, &correction.text);
            sentences.add(rewritten_sentences(&draft, &answer));
            let pairs = vec![(draft.clone(), answer.clone())];
            Ok((draft, answer, pairs))
        })?);
        harm.whole_sentences = Some(sentences);
    }
    Ok(harm)
}

type Answered = (String, String, Vec<(String, String)>);

/// Answers every question in one setting, writing each answer as it comes.
fn run(
    name: &str,
    questions: &[EverydayQuestion],
    dir: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    answer: &mut dyn FnMut(&EverydayQuestion) -> Result<Answered>,
) -> Result<HarmReport> {
    let mut file = JsonlWriter::create(dir.join(format!("{}.jsonl", name.replace(':', "-"))))?;
    progress(Progress::Started {
        setting: name,
        problems: questions.len(),
    });
    let mut report = HarmReport::default();
    for q in questions {
        let t = std::time::Instant::now();
        let (draft, output, pairs) =
            answer(q).context_with(|| format!("{name}, question {}", q.id))?;
        report.add(&q.id, &pairs);
        let row = EverydayOutput {
            id: q.id.clone(),
            category: q.category,
            question: q.question.clone(),
            draft,
            output,
            pairs,
            seconds: t.elapsed().as_secs_f64(),
        };
        file.write(&row)?;
        progress(Progress::Checked {
            setting: name,
            done: report.answers,
            changed: report.answers_changed,
        });
    }
    progress(Progress::Finished(name));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::harm::HarmReport;

    #[test]
    fn the_markdown_names_each_aligner_that_ran() {
        let mut stream = HarmReport::default();
        stream.add(
            "heldout-001",
            &[
                ("Boil water.", "Boil water."),
                ("Add tea.", "The answer is 4."),
            ],
        );
        let harm = EverydayHarm {
            questions: 1,
            stream: Some(stream),
            whole: None,
            whole_sentences: None,
        };
        let md = harm.markdown();
        assert!(
            md.contains("| everyday:upstream+stream | sentence | 1/2 | 50.0% | 1/1 | 1/1 |"),
            "{md}"
        );
        assert!(!md.contains(EVERYDAY_WHOLE), "{md}");
        assert_eq!(
            harm.summary(),
            "everyday:upstream+stream: 1/2 sentences changed (50.0%), 1 of 1 answers with an injection\n"
        );
    }

    #[test]
    fn the_whole_answer_aligner_is_also_counted_by_sentence() {
        let (draft, rewritten) = (
            "Boil water. Add tea. Stir.",
            "Boil water. Add tea. Stir well.",
        );
        let mut whole = HarmReport::default();
        whole.add("heldout-001", &[(draft, rewritten)]);
        let harm = EverydayHarm {
            questions: 1,
            stream: None,
            whole: Some(whole),
            whole_sentences: Some(rewritten_sentences(draft, rewritten)),
        };
        let md = harm.markdown();
        assert!(
            md.contains(
                "| everyday:upstream+aligner | answer | 1/1 | 100.0% | 1/1 | 0/1 |\n\
                         | everyday:upstream+aligner | upstream sentence | 1/3 | 33.3% | | |"
            ),
            "{md}"
        );
        assert!(
            harm.summary()
                .ends_with("everyday:upstream+aligner: 1/3 upstream sentences changed (33.3%)\n"),
            "{}",
            harm.summary()
        );
    }
}
