//! Answers a question with an upstream model corrected sentence by sentence by an aligner
//! (Stream Aligner), streaming each sentence as soon as it is final.
//!
//! Run: `cargo run --release --example stream_align -- --math "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?"`
//!
//! The upstream is the embedded SmolLM2-135M-Instruct; the aligner is the Stream Aligner shipped
//! in `assets/stream-aligner` (a LoRA adapter on the same model, trained on arithmetic word
//! problems; see docs/experiments.md), or the plain instruction model prompted with the Stream
//! Aligner instruction when that folder is absent. `--upstream-url` puts the aligner in front of
//! a model served elsewhere (any OpenAI-compatible server; `--upstream-api`, `--prefill`).
//! `--help` lists the options.
//!
//! Remote: `cargo run --release --example stream_align -- --upstream-url http://127.0.0.1:8080/v1 --math "What is 17 + 25?"`

#[path = "common/mod.rs"]
mod common;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::generate::SamplingConfig;
use aligner::model::remote::CompletionParams;
use aligner::model::{DType, ModelTokenizer, WeightFormat};
use aligner::stream::modes::{self, ReferenceConfig};
use aligner::stream::preference::{PreferenceStyle, PreferenceWriter};
use aligner::stream::{
    CorrectorConfig, Event, JsonlWriter, LocalCorrector, LocalUpstream, MachineConfig, Record,
    StreamMachine, Upstream, UpstreamConfig,
};
use anyhow::Context;
use clap::{Parser, ValueEnum};

const DEFAULT_QUESTION: &str = "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?";

/// The shipped Stream Aligner, relative to the repository root.
const SHIPPED_ALIGNER: &str = "assets/stream-aligner";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PreferenceArg {
    /// `{"prompt", "chosen", "rejected"}` strings.
    Standard,
    /// The same keys holding chat message lists.
    Conversational,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Sentence by sentence: the upstream continues from each corrected sentence.
    Stream,
    /// The upstream writes the whole answer, the aligner rewrites it once.
    Aligner,
    /// The upstream alone (baseline).
    Upstream,
    /// The published loop: 16 rounds, whole continuations, single-space joins, EOS ignored.
    Reference,
}

#[derive(Parser)]
#[command(
    about = "Answer a question with an upstream model, corrected sentence by sentence by an aligner (Stream Aligner)",
    after_help = "The default aligner (assets/stream-aligner) was trained on arithmetic word problems \
answered by SmolLM2-135M-Instruct with the math system prompt (--math): that is where it \
corrects well. On other questions it is outside its training; point --aligner-dir at another \
aligner (a model folder or a PEFT LoRA adapter folder) for other domains."
)]
struct Args {
    /// The question.
    question: Option<String>,
    /// Questions to answer one after another: a text file with one question per line, or JSON
    /// Lines with a `question` field.
    #[arg(long, conflicts_with = "question")]
    questions: Option<PathBuf>,
    /// Give the upstream the math system prompt of the papers' math experiments.
    #[arg(long)]
    math: bool,
    /// Upstream system prompt (default: the chat template's own).
    #[arg(long, conflicts_with = "math")]
    system: Option<String>,
    /// Upstream model folder, Hugging Face layout (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    upstream_dir: Option<PathBuf>,
    /// Aligner: a model folder or a PEFT LoRA adapter folder (default: the shipped
    /// assets/stream-aligner, else the embedded SmolLM2-135M-Instruct prompted with the Stream
    /// Aligner instruction, which is not a trained aligner).
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    /// How to answer.
    #[arg(long, value_enum, default_value_t = ModeArg::Stream)]
    mode: ModeArg,
    /// In stream mode, run the upstream and the aligner at the same time on two threads
    /// (`StreamMachine::run_overlapped`): the aligner prepares its prompt while the upstream
    /// writes a sentence, and the upstream writes the next sentence while the aligner checks
    /// one. It pays when the two do not share the same few cores (an upstream on a GPU or on
    /// other machines); with both on a small CPU it is slower (docs/benchmarks.md).
    #[arg(long)]
    overlap: bool,
    /// Activations (and dense weights): f32, bf16 or f16 (default: f32 on the CPU, bf16 on a
    /// GPU).
    #[arg(long, value_parser = common::dtype)]
    dtype: Option<DType>,
    /// Upstream weights: dense, int8 or int4 blocks (default: int4 on the CPU, which keeps the
    /// embedded model's own Q4_1 codes; dense elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    weights: common::Weights,
    /// Aligner weights (default: int8 on the CPU, close to the merged LoRA weights; dense
    /// elsewhere).
    #[arg(long, default_value = "auto", value_parser = common::weights)]
    aligner_weights: common::Weights,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// Most rounds (default: 64; 16 in reference mode).
    #[arg(long)]
    max_rounds: Option<usize>,
    /// Most upstream tokens per sentence.
    #[arg(long, default_value_t = 96)]
    max_sentence_tokens: usize,
    /// Most upstream tokens for the whole answer.
    #[arg(long, default_value_t = 384)]
    max_tokens: usize,
    /// In stream mode, end the answer after the first committed sentence that holds this text
    /// (repeatable; `MachineConfig::stop_after`). Default with `--math`: `The answer is`, once
    /// the final answer has been given (a small upstream goes on with unrelated text until a
    /// limit otherwise).
    #[arg(long)]
    stop_after: Vec<String>,
    /// With `--math`, do not end the answer at `The answer is`.
    #[arg(long)]
    no_stop: bool,
    /// Seed of the upstream's sampler.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Greedy upstream decoding (the aligner always decodes greedily).
    #[arg(long)]
    greedy: bool,
    /// Upstream sampling temperature (the reference mode uses the published settings instead).
    #[arg(long, default_value_t = 0.3)]
    temperature: f64,
    /// Feed the aligner the raw instruction instead of wrapping it in its chat template.
    #[arg(long)]
    raw_aligner_prompt: bool,
    /// Write each question's record to this JSON Lines file.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Write (prompt, chosen = aligned answer, rejected = upstream's answer) pairs for DPO-style
    /// trainers (TRL's DPOTrainer reads both styles) to this JSON Lines file.
    #[arg(long)]
    preference_out: Option<PathBuf>,
    /// Layout of the preference pairs.
    #[arg(long, value_enum, default_value_t = PreferenceArg::Standard)]
    preference_style: PreferenceArg,
    /// Also write pairs whose two answers are equal.
    #[arg(long)]
    keep_ties: bool,
    /// Print the answer only: no markers, no summary.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    remote: common::upstream::RemoteArgs,
}

/// The questions of `--questions`: JSON Lines with a `question` field, or plain lines.
fn read_questions(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let q = value["question"].as_str().with_context(|| {
                format!("{}:{}: no string field `question`", path.display(), i + 1)
            })?;
            out.push(q.to_owned());
        } else {
            out.push(line.to_owned());
        }
    }
    anyhow::ensure!(!out.is_empty(), "{} holds no question", path.display());
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let questions = match (&args.questions, &args.question) {
        (Some(path), _) => read_questions(path)?,
        (None, Some(q)) => vec![q.clone()],
        (None, None) => vec![DEFAULT_QUESTION.to_owned()],
    };
    if questions.iter().any(|q| q.trim().is_empty()) {
        anyhow::bail!("a question is empty");
    }
    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let shipped = common::repo_path(SHIPPED_ALIGNER);
    let aligner_dir = match &args.aligner_dir {
        Some(dir) => dir.clone(),
        None if shipped.is_dir() => shipped,
        None => upstream_dir.clone(),
    };
    let remote = args.remote.is_remote();
    if remote && args.mode == ModeArg::Reference {
        anyhow::bail!(
            "--mode reference needs the local upstream (it re-reads the prefix with an empty cache)"
        );
    }
    // A remote upstream needs no local upstream model.
    let local_upstream = if remote {
        None
    } else {
        Some(common::load_for_inference(
            &upstream_dir,
            args.device,
            args.dtype,
            args.weights,
            WeightFormat::Int4,
        )?)
    };
    // One copy of the weights when both roles use the same model in the same format.
    let separate_aligner = match &local_upstream {
        Some(_) if aligner_dir == upstream_dir && args.aligner_weights == args.weights => None,
        _ => Some(common::load_for_inference(
            &aligner_dir,
            args.device,
            args.dtype,
            args.aligner_weights,
            WeightFormat::Int8,
        )?),
    };
    let (aligner_model, aligner_tok) = match (&separate_aligner, &local_upstream) {
        (Some((m, t)), _) | (None, Some((m, t))) => (m, t),
        (None, None) => anyhow::bail!("no aligner model"),
    };
    if !args.quiet {
        eprintln!("aligner: {}", aligner_dir.display());
        if let Some(url) = &args.remote.upstream_url {
            eprintln!(
                "upstream: {url} ({:?} API, model `{}`)",
                args.remote.upstream_api, args.remote.upstream_model
            );
        }
    }

    let sampling = if args.greedy {
        SamplingConfig::greedy()
    } else if args.mode == ModeArg::Reference {
        SamplingConfig::reference_upstream(args.seed)
    } else {
        SamplingConfig {
            temperature: Some(args.temperature),
            top_p: Some(0.9),
            repetition_penalty: 1.1,
            seed: args.seed,
            ..SamplingConfig::default()
        }
    };
    let system = if args.math {
        Some(MATH_SYSTEM_PROMPT.to_owned())
    } else {
        args.system.clone()
    };
    let remote_params = CompletionParams {
        temperature: Some(if args.greedy { 0.0 } else { args.temperature }),
        top_p: (!args.greedy).then_some(0.9),
        seed: Some(args.seed),
        ..CompletionParams::default()
    };
    let mut remote_upstream = args
        .remote
        .build(&upstream_dir, system.clone(), remote_params)?;
    let upstream_config = UpstreamConfig {
        sampling,
        system,
        ..UpstreamConfig::default()
    };
    let mut local = local_upstream
        .as_ref()
        .map(|(model, tok)| {
            LocalUpstream::new(
                model,
                ModelTokenizer::from_dir(tok)?,
                upstream_config.clone(),
            )
        })
        .transpose()?;
    let corrector_config = CorrectorConfig {
        chat_template: !args.raw_aligner_prompt,
        ..CorrectorConfig::default()
    };
    let mut corrector = LocalCorrector::new(
        aligner_model,
        ModelTokenizer::from_dir(aligner_tok)?,
        corrector_config,
    )?;
    let mut records = args.records.as_ref().map(JsonlWriter::create).transpose()?;
    let style = match args.preference_style {
        PreferenceArg::Standard => PreferenceStyle::Standard,
        PreferenceArg::Conversational => PreferenceStyle::Conversational,
    };
    let mut pairs = args
        .preference_out
        .as_ref()
        .map(|p| PreferenceWriter::create(p, style, args.keep_ties))
        .transpose()?;

    for question in &questions {
        let mut printer = Printer::new(args.quiet, args.mode);
        if !args.quiet {
            eprintln!("Q: {question}\n");
        }
        let on_event = |event: &Event| printer.show(event);
        let upstream: &mut (dyn Upstream + Send) = match (&mut local, &mut remote_upstream) {
            (Some(local), _) => local,
            (None, Some(remote)) => remote.as_mut(),
            (None, None) => anyhow::bail!("no upstream"),
        };
        let record = match args.mode {
            ModeArg::Stream => {
                let config = MachineConfig {
                    max_rounds: args.max_rounds.unwrap_or(64),
                    max_sentence_tokens: args.max_sentence_tokens,
                    max_total_tokens: args.max_tokens,
                    stop_after: if !args.stop_after.is_empty() {
                        args.stop_after.clone()
                    } else if args.math && !args.no_stop {
                        vec!["The answer is".to_owned()]
                    } else {
                        Vec::new()
                    },
                };
                let mut machine = StreamMachine::new(question.clone(), config)?;
                if args.overlap {
                    machine.run_overlapped(upstream, &mut corrector, on_event)?
                } else {
                    machine.run(upstream, &mut corrector, on_event)?
                }
            }
            ModeArg::Aligner => modes::whole_answer(
                upstream,
                &mut corrector,
                question,
                args.max_tokens,
                on_event,
            )?,
            ModeArg::Upstream => {
                modes::upstream_only(upstream, question, args.max_tokens, on_event)?
            }
            ModeArg::Reference => {
                let Some(local) = local.as_mut() else {
                    anyhow::bail!("--mode reference needs the local upstream");
                };
                let config = ReferenceConfig {
                    rounds: args.max_rounds.unwrap_or(16),
                    max_continuation_tokens: args.max_sentence_tokens.max(1) * 2,
                };
                modes::reference(local, &mut corrector, question, config, on_event)?
            }
        };
        println!();
        if let Some(w) = &mut records {
            w.write(&record)?;
        }
        if let Some(w) = &mut pairs {
            w.write_record(&record)?;
        }
        if !args.quiet {
            summarise(&record, args.mode);
        }
    }
    if let (Some(w), Some(path)) = (&pairs, &args.preference_out) {
        eprintln!(
            "{} preference pairs -> {} ({} with equal answers{})",
            w.written(),
            path.display(),
            w.ties(),
            if args.keep_ties {
                ", kept"
            } else {
                ", left out"
            }
        );
    }
    Ok(())
}

/// Shows committed text on stdout and, on stderr, the draft the aligner replaced.
struct Printer {
    quiet: bool,
    mode: ModeArg,
    ansi: bool,
}

impl Printer {
    fn new(quiet: bool, mode: ModeArg) -> Self {
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self { quiet, mode, ansi }
    }

    fn show(&mut self, event: &Event) {
        let Event::Committed(round) = event else {
            return;
        };
        if round.changed && !self.quiet {
            let draft = round.last.trim();
            if self.mode == ModeArg::Aligner {
                eprintln!("[draft]\n{draft}\n[aligned]");
            } else if self.ansi {
                // Struck through and dim, then the accepted text in the normal colour.
                eprint!("\x1b[2;9m{draft}\x1b[0m ");
            } else {
                eprint!("[-{draft}-] ");
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(round.committed.as_bytes());
        let _ = out.flush();
    }
}

fn summarise(record: &Record, mode: ModeArg) {
    let s = &record.summary;
    let first = s
        .first_sentence_ms
        .map_or("-".to_owned(), |t| format!("{:.2} s", t / 1e3));
    let upstream_rate = s.upstream_tokens as f64 / (s.upstream_ms / 1e3).max(1e-9);
    eprintln!(
        "\n[{mode:?}] {} rounds, {} sentences, {} changed by the aligner, ended by {:?}",
        s.rounds, s.sentences, s.changed, s.reason
    );
    eprintln!(
        "wall {:.2} s, first sentence {first}; upstream {} tokens in {:.2} s ({upstream_rate:.1} tok/s), aligner {} tokens in {:.2} s; {:.1} tok/s overall",
        s.wall_ms / 1e3,
        s.upstream_tokens,
        s.upstream_ms / 1e3,
        s.corrector_tokens,
        s.corrector_ms / 1e3,
        s.tokens_per_second(),
    );
}
