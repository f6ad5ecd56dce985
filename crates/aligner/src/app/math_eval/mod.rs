//! Math accuracy of four ways to answer, on any problem set: the upstream alone, the upstream
//! corrected by a whole-answer Aligner, the upstream corrected sentence by sentence by a Stream
//! Aligner, and the aligner alone (the Stream Aligner answering the question as an upstream, a
//! control for "the aligner just knows the answers"). Scoring is deterministic (final-number
//! extraction and matching), with Wilson and bootstrap 95% intervals, paired flips against the
//! upstream alone with McNemar's exact test, and the mean time per answer.
//!
//! With [`Options::everyday`] it also measures the harm side on held-out everyday questions
//! ([`everyday`]): the share of upstream sentences each aligner changed, and the answers in which
//! it introduced a final-answer phrase or a number.
//!
//! [`run`] writes into [`Options::out`]: `results.json`, `results.md`,
//! `outputs/SETTING.jsonl` (per problem: question, output, draft, extracted answer, reference,
//! correct, seconds; the files also work as `--answers` of `examples/evaluate.rs`) and
//! `everyday/SETTING.jsonl`.

pub mod everyday;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

pub use self::everyday::EverydayHarm;
use super::{Context, Error, Result, repo_path, sampling_json};
use crate::data::aligner_config::{AlignerConfig, PromptOverrides};
use crate::data::file::{create_dir, write_bytes, write_json};
use crate::data::template::MATH_SYSTEM_PROMPT;
use crate::eval::math::{Answer, Problem, is_correct, load_problems};
use crate::eval::report::{MathReport, markdown_table, math_report};
use crate::eval::stats::BootstrapConfig;
use crate::model::generate::SamplingConfig;
use crate::model::{DType, InferenceModel, ModelTokenizer, WeightFormat};
use crate::stream::machine::join_correction;
use crate::stream::modes::upstream_only;
use crate::stream::{
    CorrectorConfig, JsonlWriter, LocalCorrector, LocalUpstream, MachineConfig, StreamMachine,
    UpstreamConfig,
};

/// Where a trained Stream Aligner is looked for when [`Options::stream_aligner`] is not given
/// (relative to the repository).
pub const DEFAULT_STREAM_ALIGNER: &str = "assets/stream-aligner";
/// Where a trained whole-answer Aligner is looked for when [`Options::whole_aligner`] is not
/// given.
pub const DEFAULT_WHOLE_ALIGNER: &str = "assets/aligner";
/// The default problem set (from `cargo xtask math-data`).
pub const DEFAULT_PROBLEMS: &str = "data/math/test.jsonl";
/// The default output folder.
pub const DEFAULT_OUT: &str = "target/math-eval";

/// The upstream alone (always run: the baseline).
pub const UPSTREAM: &str = "upstream";
/// The upstream corrected by a whole-answer Aligner.
pub const WHOLE: &str = "upstream+aligner";
/// The upstream corrected sentence by sentence by a Stream Aligner.
pub const STREAM: &str = "upstream+stream";
/// The Stream Aligner answering alone.
pub const ALONE: &str = "aligner-alone";
/// Every setting, in the order they run.
pub const SETTINGS: [&str; 4] = [UPSTREAM, WHOLE, STREAM, ALONE];

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Problem set: JSONL with `question` and a GSM8K-style `answer` (`... #### N`)
    /// (default: [`DEFAULT_PROBLEMS`] in the repository).
    pub problems: Option<PathBuf>,
    /// Evaluate on the first N problems only.
    pub limit: Option<usize>,
    /// Output folder (default: [`DEFAULT_OUT`] in the repository).
    pub out: Option<PathBuf>,
    /// Upstream model folder (default: the embedded SmolLM2-135M-Instruct).
    pub upstream_dir: Option<PathBuf>,
    /// Whole-answer Aligner (model or LoRA adapter folder); default: [`DEFAULT_WHOLE_ALIGNER`]
    /// when it exists. Without one, the upstream+aligner setting is skipped.
    pub whole_aligner: Option<PathBuf>,
    /// Stream Aligner (model or LoRA adapter folder); default: [`DEFAULT_STREAM_ALIGNER`] when
    /// it exists. Without one, the upstream+stream and aligner-alone settings are skipped.
    pub stream_aligner: Option<PathBuf>,
    /// Run only these settings (of [`SETTINGS`]); empty: all. The upstream alone always runs,
    /// as the baseline.
    pub only: Vec<String>,
    /// Most upstream tokens per answer.
    pub max_tokens: usize,
    /// Most upstream tokens per sentence (stream setting).
    pub max_sentence_tokens: usize,
    /// Most rounds of the stream setting.
    pub max_rounds: usize,
    /// Most tokens of a whole-answer correction.
    pub max_correction_tokens: usize,
    /// Sample the upstream (and the aligner-alone control) with the reference loop's settings
    /// and `seed` instead of decoding greedily.
    pub sample: bool,
    /// Seed of the sampler (with `sample`) and of the bootstrap intervals.
    pub seed: u64,
    /// Feed the aligners the raw instruction instead of wrapping it in their chat template
    /// (each aligner is otherwise prompted as its folder's `aligner_config.json` records).
    pub raw_aligner_prompt: bool,
    /// Accept a sentence correction that repeats text of the accepted prefix (by default the
    /// draft is kept then, a guard for untrained aligners).
    pub allow_repeats: bool,
    /// Activations (and dense weights).
    pub dtype: DType,
    /// The upstream's weights; `None`: what the main job runs (int4 blocks on the CPU, dense
    /// elsewhere).
    pub weights: Option<WeightFormat>,
    /// The aligners' weights; `None`: what the main job runs (int8 blocks on the CPU, dense
    /// elsewhere).
    pub aligner_weights: Option<WeightFormat>,
    /// The device the models run on.
    pub device: tch::Device,
    /// LibTorch intra-op threads (default: LibTorch's choice).
    pub threads: Option<i32>,
    /// Also answer the first N held-out everyday questions with each aligner that runs and
    /// measure what it changed there ([`everyday`]); 0: none.
    pub everyday: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            problems: None,
            limit: None,
            out: None,
            upstream_dir: None,
            whole_aligner: None,
            stream_aligner: None,
            only: Vec::new(),
            max_tokens: 256,
            max_sentence_tokens: 96,
            max_rounds: 64,
            max_correction_tokens: 512,
            sample: false,
            seed: 42,
            raw_aligner_prompt: false,
            allow_repeats: false,
            dtype: DType::F32,
            weights: None,
            aligner_weights: None,
            device: crate::model::device::auto_device(),
            threads: None,
            everyday: 0,
        }
    }
}

/// One answer of one setting, as written to `outputs/SETTING.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    /// The problem's id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The final answer text.
    pub output: String,
    /// The upstream's uncorrected text (corrected settings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// The extracted final answer, if any.
    pub prediction: Option<String>,
    /// The reference solution.
    pub reference: String,
    /// Whether the extracted answer matches the reference's.
    pub correct: bool,
    /// Time to answer, seconds.
    pub seconds: f64,
    /// Tokens the upstream wrote.
    pub upstream_tokens: usize,
    /// Tokens the aligner wrote.
    pub corrector_tokens: usize,
    /// Sentences (stream) or answers (whole) the aligner changed.
    pub changed: usize,
}

/// Totals of one setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// The setting.
    pub setting: String,
    /// Answers given.
    pub answers: usize,
    /// Mean time per answer.
    pub seconds_per_answer: f64,
    /// Upstream tokens in all.
    pub upstream_tokens: usize,
    /// Aligner tokens in all.
    pub corrector_tokens: usize,
    /// Sentences or answers changed by the aligner in all.
    pub changed: usize,
}

impl Timing {
    /// The totals of `outputs`.
    pub fn of(setting: &str, outputs: &[Output]) -> Self {
        let n = outputs.len().max(1) as f64;
        Self {
            setting: setting.to_owned(),
            answers: outputs.len(),
            seconds_per_answer: outputs.iter().map(|o| o.seconds).sum::<f64>() / n,
            upstream_tokens: outputs.iter().map(|o| o.upstream_tokens).sum(),
            corrector_tokens: outputs.iter().map(|o| o.corrector_tokens).sum(),
            changed: outputs.iter().map(|o| o.changed).sum(),
        }
    }
}

/// What [`run`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A setting is skipped (no aligner for it); the note also goes into the results.
    Skipped(&'a str),
    /// A setting starts on `problems` problems.
    Started {
        /// The setting.
        setting: &'a str,
        /// Problems to answer.
        problems: usize,
    },
    /// One more problem answered.
    Answered {
        /// The setting.
        setting: &'a str,
        /// Problems answered so far.
        done: usize,
        /// Of them right.
        correct: usize,
    },
    /// One more everyday question answered (harm settings).
    Checked {
        /// The setting.
        setting: &'a str,
        /// Questions answered so far.
        done: usize,
        /// Of them, answers the aligner changed.
        changed: usize,
    },
    /// The setting has answered every problem.
    Finished(&'a str),
}

/// The results of [`run`], as written to `results.json` and `results.md`.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Scores, intervals and paired comparisons against the upstream alone.
    pub report: MathReport,
    /// Time and tokens per setting, in the order of `report.runs`.
    pub timings: Vec<Timing>,
    /// Settings skipped, and why.
    pub notes: Vec<String>,
    /// The aligners on everyday questions, when [`Options::everyday`] asked for them.
    pub harm: Option<EverydayHarm>,
    /// The problem set.
    pub problems: PathBuf,
    /// The output folder.
    pub out: PathBuf,
}

impl Evaluation {
    /// The console summary: accuracy and time per setting, paired flips, notes.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (run, t) in self.report.runs.iter().zip(&self.timings) {
            let _ = writeln!(
                s,
                "{}: accuracy {:.1}% [{:.1}, {:.1}] ({}/{})  {:.1} s/answer",
                run.name,
                run.accuracy.estimate,
                run.accuracy.lower,
                run.accuracy.upper,
                run.correct,
                run.problems,
                t.seconds_per_answer
            );
        }
        for (a, b, p) in &self.report.paired {
            let _ = writeln!(
                s,
                "  {b} vs {a}: {:+.1} points, {} wrong->right, {} right->wrong, McNemar p = {:.3}",
                p.accuracy_gain().unwrap_or(0.0),
                p.wrong_to_right.len(),
                p.right_to_wrong.len(),
                p.p_value
            );
        }
        for note in &self.notes {
            let _ = writeln!(s, "  {note}");
        }
        if let Some(harm) = &self.harm {
            s.push_str(&harm.summary());
        }
        s
    }

    /// `results.md`.
    pub fn markdown(&self) -> String {
        let mut s = markdown(&self.problems, &self.report, &self.timings, &self.notes);
        if let Some(harm) = &self.harm {
            s.push('\n');
            s.push_str(&harm.markdown());
        }
        s
    }
}

/// A model with the folder of its tokenizer.
struct Loaded {
    dir: PathBuf,
    model: InferenceModel,
    tokenizer_dir: PathBuf,
}

/// Loads `dir` as the main job loads its models: `weights`, else `cpu_format` on the CPU.
fn load(
    dir: &Path,
    args: &Options,
    weights: Option<WeightFormat>,
    cpu_format: WeightFormat,
) -> Result<Loaded> {
    let (model, tokenizer_dir) =
        super::load_for_inference(dir, args.device, Some(args.dtype), weights, cpu_format)?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        model,
        tokenizer_dir,
    })
}

fn new_upstream<'m>(
    m: &'m Loaded,
    config: &UpstreamConfig,
) -> Result<LocalUpstream<'m, InferenceModel>> {
    Ok(LocalUpstream::new(
        &m.model,
        ModelTokenizer::from_dir(&m.tokenizer_dir)?,
        config.clone(),
    )?)
}

/// A corrector on `m`, prompted as its folder's `aligner_config.json` records (with
/// `prompt`'s options checked against it).
fn new_corrector<'m>(
    m: &'m Loaded,
    config: &CorrectorConfig,
    prompt: &PromptOverrides,
) -> Result<LocalCorrector<'m, InferenceModel>> {
    let (prompt, _recorded) = AlignerConfig::resolve(&m.dir, prompt)?;
    let config = CorrectorConfig {
        prompt,
        ..config.clone()
    };
    Ok(LocalCorrector::new(
        &m.model,
        ModelTokenizer::from_dir(&m.tokenizer_dir)?,
        config,
    )?)
}

/// The aligner folder: the option when given, else `default` when it exists.
fn aligner_dir(given: Option<&Path>, default: &str) -> Result<Option<PathBuf>> {
    match given {
        Some(dir) if !dir.exists() => {
            Err(Error::Invalid(format!("{} does not exist", dir.display())))
        }
        Some(dir) => Ok(Some(dir.to_path_buf())),
        None => {
            let dir = repo_path(default);
            Ok(dir.exists().then_some(dir))
        }
    }
}

/// Checks that every name of `only` is a setting.
pub fn check_only(only: &[String]) -> Result<()> {
    match only.iter().find(|name| !SETTINGS.contains(&name.as_str())) {
        Some(name) => Err(Error::Invalid(format!(
            "unknown setting `{name}` (upstream, upstream+aligner, upstream+stream, aligner-alone)"
        ))),
        None => Ok(()),
    }
}

/// Answers every problem in every setting wanted, scores the answers and writes the results
/// into the output folder; `progress` hears of each answer.
///
/// # Errors
/// Unknown settings, an empty or unreadable problem set, a given aligner folder that does not
/// exist, and any failure of the models or of writing the results.
pub fn run(options: &Options, mut progress: impl FnMut(Progress<'_>)) -> Result<Evaluation> {
    let args = options;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    check_only(&args.only)?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|n| n == name);
    let problems_path = args
        .problems
        .clone()
        .unwrap_or_else(|| repo_path(DEFAULT_PROBLEMS));
    let out = args.out.clone().unwrap_or_else(|| repo_path(DEFAULT_OUT));
    let mut problems = load_problems(&problems_path)
        .context_with(|| format!("reading {}", problems_path.display()))?;
    if let Some(n) = args.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no problems",
            problems_path.display()
        )));
    }
    create_dir(&out.join("outputs"))?;

    let whole_dir = aligner_dir(args.whole_aligner.as_deref(), DEFAULT_WHOLE_ALIGNER)?;
    let stream_dir = aligner_dir(args.stream_aligner.as_deref(), DEFAULT_STREAM_ALIGNER)?;
    let mut notes = Vec::new();
    if whole_dir.is_none() && wanted(WHOLE) {
        notes.push(format!(
            "{WHOLE}: skipped (no --whole-aligner and no {DEFAULT_WHOLE_ALIGNER})"
        ));
    }
    if stream_dir.is_none() {
        for name in [STREAM, ALONE].into_iter().filter(|n| wanted(n)) {
            notes.push(format!(
                "{name}: skipped (no --stream-aligner and no {DEFAULT_STREAM_ALIGNER})"
            ));
        }
    }
    for note in &notes {
        progress(Progress::Skipped(note));
    }

    let upstream_dir = super::model_dir(args.upstream_dir.as_deref())?;
    let upstream_model = load(&upstream_dir, args, args.weights, WeightFormat::Int4)?;
    let load_aligner = |dir: &Path| load(dir, args, args.aligner_weights, WeightFormat::Int8);
    let stream_model = match (&stream_dir, wanted(STREAM) || wanted(ALONE)) {
        (Some(dir), true) => Some(load_aligner(dir)?),
        _ => None,
    };
    // One copy of the weights when both aligners are the same folder.
    let whole_loaded = match (&whole_dir, wanted(WHOLE)) {
        (Some(dir), true) if stream_model.is_some() && stream_dir.as_ref() == Some(dir) => None,
        (Some(dir), true) => Some(load_aligner(dir)?),
        _ => None,
    };
    let whole_model = if whole_dir.is_some() && wanted(WHOLE) {
        whole_loaded.as_ref().or(stream_model.as_ref())
    } else {
        None
    };

    let sampling = if args.sample {
        SamplingConfig::reference_upstream(args.seed)
    } else {
        SamplingConfig::greedy()
    };
    let upstream_config = UpstreamConfig {
        sampling: sampling.clone(),
        chat_template: true,
        system: Some(MATH_SYSTEM_PROMPT.to_owned()),
    };
    let corrector_config = CorrectorConfig {
        max_sentence_tokens: args.max_sentence_tokens,
        max_answer_tokens: args.max_correction_tokens,
        reject_repeats: !args.allow_repeats,
        ..CorrectorConfig::default()
    };
    let prompt = PromptOverrides {
        chat_template: args.raw_aligner_prompt.then_some(false),
        ..PromptOverrides::default()
    };
    let machine_config = MachineConfig {
        max_rounds: args.max_rounds,
        max_sentence_tokens: args.max_sentence_tokens,
        max_total_tokens: args.max_tokens,
        ..MachineConfig::default()
    };
    let mut runs: Vec<(String, Vec<Output>)> = Vec::new();
    let mut setting = |name: &str, answer: &mut dyn FnMut(&Problem) -> Result<Output>| {
        run_setting(name, &problems, &out, answer, &mut progress)
    };

    // (a) The upstream alone; its answers are also the drafts of the whole-answer setting.
    let mut upstream = new_upstream(&upstream_model, &upstream_config)?;
    let baseline = setting(UPSTREAM, &mut |p| {
        let t = Instant::now();
        let record = upstream_only(&mut upstream, &p.question, args.max_tokens, |_| {})?;
        Ok(output(
            p,
            record.answer,
            None,
            t.elapsed().as_secs_f64(),
            (record.summary.upstream_tokens, 0, 0),
        ))
    })?;

    // (b) The whole-answer Aligner rewrites each upstream answer once.
    if let Some(model) = whole_model {
        let mut corrector = new_corrector(model, &corrector_config, &prompt)?;
        let outputs = setting(WHOLE, &mut |p| {
            let first = baseline
                .iter()
                .find(|o| o.id == p.id)
                .ok_or_else(|| Error::Invalid("no upstream answer".into()))?;
            let t = Instant::now();
            let correction = corrector.rewrite_answer(&p.question, &first.output)?;
            let answer = join_correction(&first.output, &correction.text);
            let changed = usize::from(answer != first.output);
            Ok(output(
                p,
                answer,
                Some(first.output.clone()),
                first.seconds + t.elapsed().as_secs_f64(),
                (first.upstream_tokens, correction.tokens, changed),
            ))
        })?;
        runs.push((WHOLE.to_owned(), outputs));
    }

    // (c) The Stream Aligner corrects each sentence as the upstream writes it.
    if let (Some(model), true) = (&stream_model, wanted(STREAM)) {
        let mut upstream = new_upstream(&upstream_model, &upstream_config)?;
        let mut corrector = new_corrector(model, &corrector_config, &prompt)?;
        let config = machine_config.clone();
        let outputs = setting(STREAM, &mut |p| {
            let t = Instant::now();
            let record = StreamMachine::new(p.question.clone(), config.clone())?.run(
                &mut upstream,
                &mut corrector,
                |_| {},
            )?;
            let s = &record.summary;
            Ok(output(
                p,
                record.answer.clone(),
                Some(record.draft.clone()),
                t.elapsed().as_secs_f64(),
                (s.upstream_tokens, s.corrector_tokens, s.changed),
            ))
        })?;
        runs.push((STREAM.to_owned(), outputs));
    }

    // (d) The aligner alone answers the question, as an upstream.
    if let (Some(model), true) = (&stream_model, wanted(ALONE)) {
        let mut alone = new_upstream(model, &upstream_config)?;
        let outputs = setting(ALONE, &mut |p| {
            let t = Instant::now();
            let record = upstream_only(&mut alone, &p.question, args.max_tokens, |_| {})?;
            Ok(output(
                p,
                record.answer,
                None,
                t.elapsed().as_secs_f64(),
                (record.summary.upstream_tokens, 0, 0),
            ))
        })?;
        runs.push((ALONE.to_owned(), outputs));
    }
    runs.insert(0, (UPSTREAM.to_owned(), baseline));

    // The harm side: held-out everyday questions, which the aligners should leave alone.
    let harm_stream = stream_model.as_ref().filter(|_| wanted(STREAM));
    let harm = if args.everyday > 0 && (harm_stream.is_some() || whole_model.is_some()) {
        let mut questions =
            crate::data::everyday::heldout().map_err(|e| Error::Invalid(e.to_string()))?;
        questions.truncate(args.everyday);
        let setup = everyday::Setup {
            upstream: &upstream_model,
            stream: harm_stream,
            whole: whole_model,
            corrector: &corrector_config,
            prompt: &prompt,
            machine: &machine_config,
        };
        Some(everyday::evaluate(
            &questions,
            &setup,
            args,
            &out,
            &mut progress,
        )?)
    } else {
        None
    };

    // Scores, intervals and paired flips against the upstream alone.
    let answers: Vec<(String, Vec<Answer>)> = runs
        .iter()
        .map(|(name, outputs)| (name.clone(), answers_of(outputs)))
        .collect();
    let bootstrap = BootstrapConfig {
        seed: args.seed,
        ..BootstrapConfig::default()
    };
    let report = math_report(&problems, &answers, &bootstrap)?;
    let timings: Vec<Timing> = runs.iter().map(|(name, o)| Timing::of(name, o)).collect();

    let settings = json!({
        "problems": problems_path,
        "problems_evaluated": problems.len(),
        "upstream_dir": upstream_dir,
        "whole_aligner": whole_dir,
        "stream_aligner": stream_dir,
        "system": MATH_SYSTEM_PROMPT,
        "sampling": sampling_json(&sampling),
        "max_tokens": args.max_tokens,
        "max_sentence_tokens": args.max_sentence_tokens,
        "max_rounds": args.max_rounds,
        "max_correction_tokens": args.max_correction_tokens,
        "aligner_chat_template": !args.raw_aligner_prompt,
        "reject_repeats": !args.allow_repeats,
        "dtype": format!("{:?}", args.dtype),
        "weights": super::weights_name(&upstream_model.model),
        "aligner_weights": stream_model.as_ref().or(whole_model).map(|m| super::weights_name(&m.model)),
        "device": format!("{:?}", args.device),
        "threads": tch::get_num_threads(),
        "bootstrap_seed": args.seed,
        "everyday_questions": harm.as_ref().map(|h| h.questions),
        "everyday_upstream": harm.as_ref().map(|_| {
            let c = everyday::upstream_config(args);
            json!({"system": c.system, "sampling": sampling_json(&c.sampling)})
        }),
    });
    let evaluation = Evaluation {
        report,
        timings,
        notes,
        harm,
        problems: problems_path,
        out,
    };
    let results = json!({
        "settings": settings,
        "report": evaluation.report,
        "timing": evaluation.timings,
        "skipped": evaluation.notes,
        "everyday_harm": evaluation.harm,
    });
    write_json(&evaluation.out.join("results.json"), &results)?;
    write_bytes(
        &evaluation.out.join("results.md"),
        evaluation.markdown().as_bytes(),
    )?;
    Ok(evaluation)
}

/// The outputs as answers to score, numbered from line 1 as in the JSONL files.
fn answers_of(outputs: &[Output]) -> Vec<Answer> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| Answer {
            line: i + 1,
            question: o.question.clone(),
            output: o.output.clone(),
        })
        .collect()
}

/// An [`Output`] scored against the problem's reference.
fn output(
    p: &Problem,
    answer: String,
    draft: Option<String>,
    seconds: f64,
    (upstream_tokens, corrector_tokens, changed): (usize, usize, usize),
) -> Output {
    let judgement = is_correct(&answer, &p.answer);
    Output {
        id: p.id.clone(),
        question: p.question.clone(),
        output: answer,
        draft,
        prediction: judgement.prediction,
        reference: p.reference.clone(),
        correct: judgement.correct,
        seconds,
        upstream_tokens,
        corrector_tokens,
        changed,
    }
}

/// Answers every problem with `answer`, reporting progress and appending each output to
/// `out/outputs/NAME.jsonl` as it comes.
fn run_setting(
    name: &str,
    problems: &[Problem],
    out: &Path,
    answer: &mut dyn FnMut(&Problem) -> Result<Output>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<Output>> {
    let mut file = JsonlWriter::create(out.join("outputs").join(format!("{name}.jsonl")))?;
    progress(Progress::Started {
        setting: name,
        problems: problems.len(),
    });
    let mut outputs = Vec::with_capacity(problems.len());
    let mut correct = 0;
    for p in problems {
        let o = answer(p).context_with(|| format!("{name}, problem {}", p.id))?;
        correct += usize::from(o.correct);
        file.write(&o)?;
        outputs.push(o);
        progress(Progress::Answered {
            setting: name,
            done: outputs.len(),
            correct,
        });
    }
    progress(Progress::Finished(name));
    Ok(outputs)
}

fn markdown(problems: &Path, report: &MathReport, timings: &[Timing], notes: &[String]) -> String {
    let mut s = format!(
        "# Math evaluation\n\n{} problems from `{}`; deterministic final-answer matching; 95% intervals.\n\n",
        report.problems,
        problems.display()
    );
    s.push_str(&report.to_markdown());
    s.push('\n');
    let rows: Vec<Vec<String>> = timings
        .iter()
        .map(|t| {
            vec![
                t.setting.clone(),
                format!("{:.2}", t.seconds_per_answer),
                t.upstream_tokens.to_string(),
                t.corrector_tokens.to_string(),
                t.changed.to_string(),
            ]
        })
        .collect();
    s.push_str(&markdown_table(
        &[
            "setting",
            "s/answer",
            "upstream tokens",
            "aligner tokens",
            "changed by the aligner",
        ],
        &rows,
    ));
    for note in notes {
        let _ = write!(s, "\n- {note}");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seconds: f64, tokens: (usize, usize, usize)) -> Output {
        Output {
            id: "1".into(),
            question: "q".into(),
            output: "The answer is 2.".into(),
            draft: None,
            prediction: Some("2".into()),
            reference: "2".into(),
            correct: true,
            seconds,
            upstream_tokens: tokens.0,
            corrector_tokens: tokens.1,
            changed: tokens.2,
        }
    }

    #[test]
    fn timing_sums_tokens_and_averages_seconds() {
        let t = Timing::of(STREAM, &[out(1.0, (10, 2, 1)), out(3.0, (20, 4, 0))]);
        assert_eq!(
            t,
            Timing {
                setting: STREAM.into(),
                answers: 2,
                seconds_per_answer: 2.0,
                upstream_tokens: 30,
                corrector_tokens: 6,
                changed: 1,
            }
        );
        assert_eq!(Timing::of(UPSTREAM, &[]).seconds_per_answer, 0.0);
    }

    #[test]
    fn only_accepts_the_settings_alone() {
        assert!(check_only(&[]).is_ok());
        assert!(check_only(&[WHOLE.into(), ALONE.into()]).is_ok());
        let e = check_only(&["stream".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown setting `stream`"), "{e}");
    }

    #[test]
    fn answers_are_numbered_from_one() {
        let answers = answers_of(&[out(1.0, (1, 0, 0)), out(1.0, (1, 0, 0))]);
        assert_eq!(answers.iter().map(|a| a.line).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(answers[0].output, "The answer is 2.");
    }

    #[test]
    fn a_draft_is_written_only_when_there_is_one() -> Result<(), serde_json::Error> {
        let mut o = out(1.0, (1, 0, 0));
        assert!(!serde_json::to_string(&o)?.contains("draft"));
        o.draft = Some("d".into());
        assert!(serde_json::to_string(&o)?.contains("\"draft\":\"d\""));
        Ok(())
    }
}
