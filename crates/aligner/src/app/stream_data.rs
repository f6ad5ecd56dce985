//! Stream Aligner training rows from an upstream's real mistakes: for every problem and
//! reference step, the sentence the upstream writes when it continues the reference prefix,
//! paired with the reference step; plus identity rows and whole-answer rows. Resumable: [`run`]
//! again with the same output folder goes on where it stopped.
//!
//! With [`Options::everyday`] the rows are identity rows instead: the upstream answers the
//! training split of `aligner_data::everyday` as the main job would (no system prompt, the
//! [`SamplingConfig::chat`] settings), and each of its sentences, with the real prefix it
//! followed, becomes a row that keeps it (`stream::rows::identity_rows`).
//!
//! Writes `OUT/stream.jsonl` (`question, prefix, last, correction, problem_id, step,
//! identity`), `OUT/whole.jsonl` (`question, answer, correction, problem_id`; `correction` is
//! the reference solution: the steps joined with single spaces, ending with "The answer is N.",
//! without the GSM8K `#### N` line) and `OUT/config.json` (the settings, checked on resume).

use crate::data::file::WrapFileError as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::{Context as _, Error, Result, repo_path, sampling_json, sentence_steps};
use crate::data::file::{create_dir, write_json};
use crate::data::math::{MathProblem, read_problems_with};
use crate::data::template::MATH_SYSTEM_PROMPT;
use crate::model::generate::SamplingConfig;
use crate::model::{DType, InferenceModel, ModelTokenizer, WeightFormat};
use crate::stream::rows::{
    Progress as RowsProgress, RowFiles, RowStats, RowsConfig, collect, collect_identity,
};
use crate::stream::{LocalUpstream, Upstream, UpstreamConfig};

/// The default problem set (from `cargo xtask math-data`), relative to the repository.
pub const DEFAULT_PROBLEMS: &str = "data/math/train.jsonl";
/// The default output folder, relative to the repository.
pub const DEFAULT_OUT: &str = "data/stream-math";
/// The default output folder of everyday identity rows, relative to the repository.
pub const DEFAULT_EVERYDAY_OUT: &str = "data/stream-everyday";

/// What to make rows from and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Problem set: JSONL with `question`, a GSM8K-style `answer` and optionally `steps`
    /// (default: [`DEFAULT_PROBLEMS`] in the repository).
    pub problems: Option<PathBuf>,
    /// Make identity rows from the upstream's answers to the everyday training questions
    /// instead of correction rows from problems (`problems`, `identity_share` and
    /// `greedy_whole` then do not apply).
    pub everyday: bool,
    /// With `everyday`: only the training questions of this category.
    pub category: Option<crate::data::everyday::Category>,
    /// Output folder (default: [`DEFAULT_OUT`] in the repository).
    pub out: Option<PathBuf>,
    /// Use the first N problems only.
    pub limit: Option<usize>,
    /// Expected share of identity rows among the step rows, in [0, 1).
    pub identity_share: f64,
    /// Seed of the upstream's sampler and of the identity rows.
    pub seed: u64,
    /// Upstream model folder, Hugging Face layout (default: the embedded
    /// SmolLM2-135M-Instruct).
    pub model_dir: Option<PathBuf>,
    /// Activations (and dense weights).
    pub dtype: DType,
    /// The upstream's weights: `None` picks what the main job runs (on the CPU the embedded
    /// model's own 4-bit blocks, elsewhere dense), so that the rows hold the sentences the
    /// aligner will be given.
    pub weights: Option<WeightFormat>,
    /// The device the upstream runs on.
    pub device: tch::Device,
    /// Most upstream tokens for one sentence.
    pub max_sentence_tokens: usize,
    /// Most upstream tokens for a whole answer.
    pub max_answer_tokens: usize,
    /// Write the whole answers greedily (the sentences are always sampled as the reference
    /// loop samples: top-k 40, top-p 0.95, temperature 0.7, frequency penalty 1.2).
    pub greedy_whole: bool,
    /// LibTorch intra-op threads (default: LibTorch's choice, one per core).
    pub threads: Option<i32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            problems: None,
            everyday: false,
            category: None,
            out: None,
            limit: None,
            identity_share: 0.2,
            seed: 42,
            model_dir: None,
            dtype: DType::F32,
            weights: None,
            device: crate::model::device::auto_device(),
            max_sentence_tokens: 96,
            max_answer_tokens: 256,
            greedy_whole: false,
            threads: None,
        }
    }
}

/// What [`run`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The problems are read and the output folder checked.
    Planned {
        /// Problems in all.
        problems: usize,
        /// Of them already written by an earlier run.
        done_before: usize,
        /// The problem set.
        path: &'a Path,
        /// The output folder.
        out: &'a Path,
    },
    /// One more problem written.
    Problem {
        /// The totals of this run so far.
        stats: &'a RowStats,
        /// Seconds since the first problem of this run started (the model loaded).
        seconds: f64,
    },
}

/// What a [`run`] made.
#[derive(Debug, Clone)]
pub struct Made {
    /// Totals of this run (problems written earlier not counted).
    pub totals: RowStats,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// The output folder.
    pub out: PathBuf,
}

impl fmt::Display for Made {
    /// The two summary lines printed at the end of a run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (totals, secs) = (&self.totals, self.seconds.max(1e-9));
        let rows = totals.step_rows() + totals.whole;
        writeln!(
            f,
            "{} problems in {secs:.1} s: {} sentence rows ({} equal to the reference step, {} cut at the token cap; {} steps with no sentence), {} identity rows ({:.1}% of step rows), {} whole-answer rows",
            totals.problems,
            totals.sentences,
            totals.matched,
            totals.capped,
            totals.empty,
            totals.identity,
            100.0 * totals.identity as f64 / totals.step_rows().max(1) as f64,
            totals.whole,
        )?;
        write!(
            f,
            "{:.2} rows/s, {:.2} s/problem, upstream {:.1} tok/s -> {}/{{{},{}}}",
            rows as f64 / secs,
            secs / totals.problems.max(1) as f64,
            totals.upstream_tokens as f64 / secs,
            self.out.display(),
            RowFiles::STREAM_FILE,
            RowFiles::WHOLE_FILE,
        )
    }
}

/// Checks the settings a folder was made with against `settings`, or writes them there when
/// it has none: a resumed run must use the same.
pub fn check_settings(out: &Path, settings: &serde_json::Value) -> Result<()> {
    let path = out.join("config.json");
    if !path.is_file() {
        return Ok(write_json(&path, settings)?);
    }
    let text = crate::data::file::read_text(&path)?;
    let before: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    if &before == settings {
        return Ok(());
    }
    let pretty = |v| serde_json::to_string_pretty(v).unwrap_or_default();
    Err(Error::Invalid(format!(
        "{} was made with other settings:\n{}\nnow:\n{}\nuse another --out, or the same settings to resume",
        out.display(),
        pretty(&before),
        pretty(settings)
    )))
}

/// Makes and appends the rows of every problem not yet in the output folder; `progress` hears
/// of the plan and of each problem written. Returns `None` when every problem was done before
/// (the model is not loaded then).
///
/// # Errors
/// An unreadable problem set, invalid row settings, a folder made with other settings, and any
/// failure of the model or of writing the rows.
pub fn run(options: &Options, progress: impl FnMut(Progress<'_>)) -> Result<Option<Made>> {
    if let Some(n) = options.threads {
        tch::set_num_threads(n);
    }
    if options.everyday {
        everyday(options, progress)
    } else {
        problems(options, progress)
    }
}

/// The rows a run is about to make: what they are from, where they go, the settings that
/// decide them (a resumed run must use the same), and their ids.
struct Plan {
    path: PathBuf,
    out: PathBuf,
    model_dir: PathBuf,
    config: RowsConfig,
    ids: Vec<String>,
}

impl Plan {
    /// Checks the settings against the folder, opens its files and reports the plan. `None`
    /// when nothing is left to do.
    fn open(
        &self,
        settings: &serde_json::Value,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> Result<Option<RowFiles>> {
        self.config.validate()?;
        create_dir(&self.out)?;
        check_settings(&self.out, settings)?;
        let files = RowFiles::open(&self.out)?;
        let todo = self.ids.iter().filter(|id| !files.is_done(id)).count();
        progress(Progress::Planned {
            problems: self.ids.len(),
            done_before: self.ids.len() - todo,
            path: &self.path,
            out: &self.out,
        });
        Ok((todo > 0).then_some(files))
    }

    /// A local upstream on `model` with the chat template, `system` and `sampling`.
    fn upstream<'m>(
        &self,
        (model, tokenizer_dir): &'m (InferenceModel, PathBuf),
        system: Option<&str>,
        sampling: SamplingConfig,
    ) -> Result<LocalUpstream<'m, InferenceModel>> {
        Ok(LocalUpstream::new(
            model,
            ModelTokenizer::from_dir(tokenizer_dir)?,
            UpstreamConfig {
                sampling,
                chat_template: true,
                system: system.map(str::to_owned),
            },
        )?)
    }
}

/// The upstream's weights: as the main job loads them, unless `options` say otherwise.
fn weights(options: &Options) -> WeightFormat {
    super::weight_format(options.device, options.weights, WeightFormat::Int4)
}

fn load_model(options: &Options, model_dir: &Path) -> Result<(InferenceModel, PathBuf)> {
    super::load_for_inference(
        model_dir,
        options.device,
        Some(options.dtype),
        Some(weights(options)),
        WeightFormat::Int4,
    )
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or(path.to_owned())
}

/// Identity rows from the upstream's answers to the everyday training questions.
fn everyday(options: &Options, mut progress: impl FnMut(Progress<'_>)) -> Result<Option<Made>> {
    let args = options;
    let mut questions: Vec<(String, String)> = crate::data::everyday::train()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .into_iter()
        .filter(|q| args.category.is_none_or(|c| c == q.category))
        .map(|q| (q.id, q.question))
        .collect();
    if let Some(n) = args.limit {
        questions.truncate(n);
    }
    let plan = Plan {
        path: PathBuf::from("aligner_data::everyday::train()"),
        out: args
            .out
            .clone()
            .unwrap_or_else(|| repo_path(DEFAULT_EVERYDAY_OUT)),
        model_dir: super::model_dir(args.model_dir.as_deref())?,
        config: RowsConfig {
            identity_share: 0.0,
            seed: args.seed,
            max_sentence_tokens: args.max_sentence_tokens,
            max_answer_tokens: args.max_answer_tokens,
        },
        ids: questions.iter().map(|(id, _)| id.clone()).collect(),
    };
    let sampling = SamplingConfig::chat(SamplingConfig::CHAT_TEMPERATURE, args.seed);
    let settings = json!({
        "questions": "everyday-train",
        "category": args.category.map(|c| c.as_str()),
        "model_dir": canonical(&plan.model_dir),
        "dtype": format!("{:?}", args.dtype),
        "weights": weights(args).to_string(),
        "rows": plan.config,
        "sampling": sampling_json(&sampling),
        "system": null,
        "chat_template": true,
    });
    let Some(mut files) = plan.open(&settings, &mut progress)? else {
        return Ok(None);
    };
    let model = load_model(args, &plan.model_dir)?;
    let mut upstream = plan.upstream(&model, None, sampling)?;
    timed(plan.out, &mut progress, |on_item| {
        collect_identity(&questions, &mut upstream, &mut files, &plan.config, on_item)
    })
}

/// Correction rows from the problems' reference steps.
fn problems(options: &Options, mut progress: impl FnMut(Progress<'_>)) -> Result<Option<Made>> {
    let args = options;
    let path = args
        .problems
        .clone()
        .unwrap_or_else(|| repo_path(DEFAULT_PROBLEMS));
    let mut problems: Vec<MathProblem> =
        read_problems_with(&path, sentence_steps).context_with(|| {
            format!(
                "reading {} (make it with `cargo xtask math-data`)",
                path.display()
            )
        })?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    let plan = Plan {
        out: args.out.clone().unwrap_or_else(|| repo_path(DEFAULT_OUT)),
        model_dir: super::model_dir(args.model_dir.as_deref())?,
        config: RowsConfig {
            identity_share: args.identity_share,
            seed: args.seed,
            max_sentence_tokens: args.max_sentence_tokens,
            max_answer_tokens: args.max_answer_tokens,
        },
        ids: problems.iter().map(|p| p.id.clone()).collect(),
        path,
    };
    let sampling = SamplingConfig::reference_upstream(args.seed);
    let settings = json!({
        "problems": canonical(&plan.path),
        "model_dir": canonical(&plan.model_dir),
        "dtype": format!("{:?}", args.dtype),
        "weights": weights(args).to_string(),
        "rows": plan.config,
        "sampling": sampling_json(&sampling),
        "greedy_whole": args.greedy_whole,
        "system": MATH_SYSTEM_PROMPT,
        "chat_template": true,
    });
    let Some(mut files) = plan.open(&settings, &mut progress)? else {
        return Ok(None);
    };
    let model = load_model(args, &plan.model_dir)?;
    let mut upstream = plan.upstream(&model, Some(MATH_SYSTEM_PROMPT), sampling)?;
    let mut greedy = if args.greedy_whole {
        Some(plan.upstream(&model, Some(MATH_SYSTEM_PROMPT), SamplingConfig::greedy())?)
    } else {
        None
    };
    timed(plan.out, &mut progress, |on_item| {
        collect(
            &problems,
            &mut upstream,
            greedy.as_mut().map(|g| g as &mut dyn Upstream),
            &mut files,
            &plan.config,
            on_item,
        )
    })
}

/// Runs a collection into `out`, reporting each item it writes to `progress` with the seconds
/// since it started, and times it.
fn timed(
    out: PathBuf,
    progress: &mut impl FnMut(Progress<'_>),
    run: impl FnOnce(&mut dyn FnMut(&RowsProgress<'_>)) -> Result<RowStats, crate::stream::Error>,
) -> Result<Option<Made>> {
    let started = Instant::now();
    let totals = run(&mut |p| {
        if !p.skipped {
            progress(Progress::Problem {
                stats: &p.stats,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    })?;
    Ok(Some(Made {
        totals,
        seconds: started.elapsed().as_secs_f64(),
        out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_written_once_then_checked() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("tmp"), e))?;
        let a = json!({"seed": 1});
        check_settings(dir.path(), &a)?;
        assert!(dir.path().join("config.json").is_file());
        check_settings(dir.path(), &a)?;
        let e = check_settings(dir.path(), &json!({"seed": 2}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("was made with other settings"), "{e}");
        Ok(())
    }

    #[test]
    fn summary_reports_rows_and_rates() {
        let made = Made {
            totals: RowStats {
                problems: 2,
                sentences: 6,
                matched: 1,
                capped: 0,
                empty: 0,
                identity: 2,
                whole: 2,
                upstream_tokens: 100,
            },
            seconds: 4.0,
            out: PathBuf::from("rows"),
        };
        let text = made.to_string();
        assert!(
            text.starts_with("2 problems in 4.0 s: 6 sentence rows"),
            "{text}"
        );
        assert!(text.contains("upstream 25.0 tok/s -> rows/{"), "{text}");
    }
}
