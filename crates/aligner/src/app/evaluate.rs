//! Evaluating answer files: math accuracy against reference solutions ([`math`]), or pairwise
//! win rates of aligned over original answers judged by a local model or an OpenAI-compatible
//! endpoint ([`judge`]). [`write_reports`] writes `report.json`, `report.md` and a PNG chart.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use super::{Error, Result};
use crate::data::file::{create_dir, write_bytes, write_json};
use crate::eval::judge::{
    AnswerPair, Dimension, HttpJudge, Judge, LocalJudge, ResponseCache, judge_all,
    judge_all_parallel, load_record_pairs,
};
use crate::eval::math::{Answer, load_answers, load_problems};
use crate::eval::report::{
    BarChart, JudgeReport, MathReport, judge_report, math_report, write_bar_chart,
};
use crate::eval::stats::BootstrapConfig;
use crate::model::remote::{Client, EndpointConfig};
use crate::model::{DType, Llama, ModelTokenizer};

/// The run name and file of an `--answers` value: `NAME=PATH`, or a path named by its stem.
pub fn answers_spec(spec: &str) -> (String, PathBuf) {
    match spec.split_once('=') {
        Some((n, p)) => (n.to_owned(), PathBuf::from(p)),
        None => (
            Path::new(spec)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            PathBuf::from(spec),
        ),
    }
}

/// Accuracy of each answer file of `answers` (`NAME=PATH` or `PATH`; the first is the baseline
/// of the paired comparisons) against the reference solutions in `problems`.
///
/// # Errors
/// Unreadable files, and answers that do not match the problems.
pub fn math(
    problems: &Path,
    answers: &[String],
    bootstrap: &BootstrapConfig,
) -> Result<MathReport> {
    let problems = load_problems(problems)?;
    let runs = answers
        .iter()
        .map(|spec| {
            let (name, path) = answers_spec(spec);
            Ok((name, load_answers(&path)?))
        })
        .collect::<Result<Vec<(String, Vec<Answer>)>>>()?;
    Ok(math_report(&problems, &runs, bootstrap)?)
}

/// The console lines of a math report: accuracy per run, then the paired comparisons.
pub fn math_summary(report: &MathReport) -> String {
    let mut s = String::new();
    for run in &report.runs {
        let _ = writeln!(
            s,
            "{}: accuracy: {:.1}% ({}/{}, 95% CI [{:.1}, {:.1}])",
            run.name,
            run.accuracy.estimate,
            run.correct,
            run.problems,
            run.accuracy.lower,
            run.accuracy.upper
        );
    }
    for (a, b, p) in &report.paired {
        let _ = writeln!(
            s,
            "{a} -> {b}: {:+.1} points, {} wrong->right, {} right->wrong, McNemar p = {:.3}",
            p.accuracy_gain().unwrap_or(0.0),
            p.wrong_to_right.len(),
            p.right_to_wrong.len(),
            p.p_value
        );
    }
    s
}

/// The answers to judge.
#[derive(Debug, Clone)]
pub enum Pairs {
    /// JSONL files with `question` and `output`: the original and the aligned answers to the
    /// same questions.
    Files {
        /// The original answers.
        original: PathBuf,
        /// The aligned answers.
        aligned: PathBuf,
    },
    /// Run records as `stream_align --records` writes them: each record's `draft` is judged
    /// against its `answer`.
    Records(PathBuf),
}

/// Who judges and on what.
#[derive(Debug, Clone)]
pub struct JudgeOptions {
    /// The answers.
    pub pairs: Pairs,
    /// OpenAI-compatible endpoint; without it the local `judge_dir` model judges.
    pub endpoint: Option<String>,
    /// Model name at the endpoint.
    pub model: String,
    /// Requests in flight at once (endpoint only).
    pub concurrency: usize,
    /// Local judge model folder (default: the embedded SmolLM2-135M-Instruct, a weak judge).
    pub judge_dir: Option<PathBuf>,
    /// Only this dimension (`helpfulness` or `harmlessness`); `None`: both.
    pub only: Option<String>,
    /// Folder of the endpoint judge's response cache (`judge-cache` in the output folder).
    pub cache_dir: PathBuf,
}

/// The dimensions named by `only` (`None`: all).
///
/// # Errors
/// An unknown dimension.
pub fn dimensions(only: Option<&str>) -> Result<Vec<Dimension>> {
    match only {
        None => Ok(Dimension::ALL.to_vec()),
        Some("helpfulness") => Ok(vec![Dimension::Helpfulness]),
        Some("harmlessness") => Ok(vec![Dimension::Harmlessness]),
        Some(other) => Err(Error::Invalid(format!(
            "unknown dimension `{other}` (helpfulness, harmlessness)"
        ))),
    }
}

/// Judges every pair on every dimension wanted, in both orders.
///
/// # Errors
/// Unreadable or unmatched answers, an unknown dimension, and failures of the judge.
pub fn judge(options: &JudgeOptions, bootstrap: &BootstrapConfig) -> Result<JudgeReport> {
    let pairs = match &options.pairs {
        Pairs::Records(records) => load_record_pairs(records)?,
        Pairs::Files { original, aligned } => {
            pair_answers(&load_answers(original)?, &load_answers(aligned)?)?
        }
    };
    let dimensions = dimensions(options.only.as_deref())?;
    let (name, judgements) = match &options.endpoint {
        Some(base_url) => {
            let client = Client::new(EndpointConfig {
                base_url: base_url.clone(),
                model: options.model.clone(),
                ..EndpointConfig::default()
            })?;
            let judge = HttpJudge::new(client).with_cache(ResponseCache::new(&options.cache_dir));
            let judgements = judge_all_parallel(&judge, &pairs, &dimensions, options.concurrency)?;
            (judge.name(), judgements)
        }
        None => {
            let dir = super::model_dir(options.judge_dir.as_deref())?;
            let (model, _vs) = Llama::load(&dir, DType::F32.kind(), tch::Device::Cpu)?;
            let judge = LocalJudge::new(
                model,
                ModelTokenizer::from_dir(&dir)?,
                dir.display().to_string(),
            )?;
            (judge.name(), judge_all(&judge, &pairs, &dimensions)?)
        }
    };
    Ok(judge_report(&name, pairs.len(), judgements, bootstrap)?)
}

/// The console lines of a judge report: the win rate of each dimension.
pub fn judge_summary(report: &JudgeReport) -> String {
    let mut s = String::new();
    for d in &report.dimensions {
        let c = d.tally.counts;
        let _ = match &d.win_rate {
            Some(w) => writeln!(
                s,
                "{}: win rate {:+.1}% (95% CI [{:.1}, {:.1}]), W {} L {} E {}, invalid {}",
                d.dimension,
                w.estimate,
                w.lower,
                w.upper,
                c.wins,
                c.losses,
                c.equal,
                d.tally.invalid
            ),
            None => writeln!(
                s,
                "{}: no readable verdicts ({} invalid)",
                d.dimension, d.tally.invalid
            ),
        };
    }
    s
}

/// Pairs original and aligned answers by question; every question must appear in both.
///
/// # Errors
/// A question of `original` with no aligned answer.
pub fn pair_answers(original: &[Answer], aligned: &[Answer]) -> Result<Vec<AnswerPair>> {
    let by_question: std::collections::HashMap<&str, &str> = aligned
        .iter()
        .map(|a| (a.question.as_str(), a.output.as_str()))
        .collect();
    original
        .iter()
        .map(|o| {
            let a = by_question.get(o.question.as_str()).ok_or_else(|| {
                Error::Invalid(format!("no aligned answer for question {:?}", o.question))
            })?;
            Ok(AnswerPair {
                question: o.question.clone(),
                original: o.output.clone(),
                aligned: (*a).to_owned(),
            })
        })
        .collect()
}

/// What [`write_reports`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The output folder.
    pub out: PathBuf,
    /// The chart's file name.
    pub png: String,
    /// Why there is no chart, if there is none.
    pub chart_error: Option<String>,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.out.display();
        match &self.chart_error {
            None => write!(f, "reports: {out}/report.{{json,md}}, {out}/{}", self.png),
            Some(e) => write!(f, "reports: {out}/report.{{json,md}} (no chart: {e})"),
        }
    }
}

/// Writes `out/report.json`, `out/report.md` and the chart `out/PNG` (a chart that cannot be
/// drawn is reported, not an error).
///
/// # Errors
/// Creating the folder or writing the report files failed.
pub fn write_reports(
    out: &Path,
    report: &impl serde::Serialize,
    markdown: &str,
    chart: &BarChart,
    png: &str,
) -> Result<Written> {
    create_dir(out)?;
    write_json(&out.join("report.json"), report)?;
    write_bytes(&out.join("report.md"), markdown.as_bytes())?;
    Ok(Written {
        out: out.to_path_buf(),
        png: png.to_owned(),
        chart_error: write_bar_chart(&out.join(png), chart)
            .err()
            .map(|e| e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(question: &str, output: &str) -> Answer {
        Answer {
            line: 1,
            question: question.into(),
            output: output.into(),
        }
    }

    #[test]
    fn answers_are_named_by_prefix_or_file_stem() {
        assert_eq!(
            answers_spec("base=runs/a.jsonl"),
            ("base".to_owned(), PathBuf::from("runs/a.jsonl"))
        );
        assert_eq!(
            answers_spec("runs/upstream.jsonl"),
            ("upstream".to_owned(), PathBuf::from("runs/upstream.jsonl"))
        );
    }

    #[test]
    fn pairs_follow_the_original_order_and_need_every_question() -> Result<()> {
        let original = [answer("q1", "a1"), answer("q2", "a2")];
        let aligned = [answer("q2", "b2"), answer("q1", "b1")];
        let pairs = pair_answers(&original, &aligned)?;
        assert_eq!(pairs[0].question, "q1");
        assert_eq!(pairs[0].original, "a1");
        assert_eq!(pairs[0].aligned, "b1");
        assert_eq!(pairs[1].aligned, "b2");
        let e = pair_answers(&original, &aligned[..1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no aligned answer for question \"q1\""), "{e}");
        Ok(())
    }

    #[test]
    fn dimensions_by_name() -> Result<()> {
        assert_eq!(dimensions(None)?, Dimension::ALL.to_vec());
        assert_eq!(dimensions(Some("harmlessness"))?, [Dimension::Harmlessness]);
        assert!(dimensions(Some("honesty")).is_err());
        Ok(())
    }

    #[test]
    fn written_names_the_chart_or_why_there_is_none() {
        let mut w = Written {
            out: PathBuf::from("o"),
            png: "a.png".into(),
            chart_error: None,
        };
        assert_eq!(w.to_string(), "reports: o/report.{json,md}, o/a.png");
        w.chart_error = Some("no font".into());
        assert_eq!(
            w.to_string(),
            "reports: o/report.{json,md} (no chart: no font)"
        );
    }
}
