//! Answers a question with an upstream model corrected sentence by sentence by an aligner
//! (Stream Aligner), streaming each sentence as soon as it is final.
//!
//! Run: `cargo run --release --example stream_align -- "How do I make a cup of tea?"`
//! (both models default to the embedded SmolLM2-135M-Instruct; `--help` lists the options).

#[path = "common/mod.rs"]
mod common;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use aligner::model::generate::SamplingConfig;
use aligner::model::{DType, Llama, ModelTokenizer};
use aligner::stream::modes::{self, ReferenceConfig};
use aligner::stream::{
    CorrectorConfig, Event, JsonlWriter, LocalCorrector, LocalUpstream, MachineConfig, Record,
    StreamMachine, UpstreamConfig,
};
use anyhow::Context;
use clap::{Parser, ValueEnum};

const DEFAULT_QUESTION: &str = "How can I improve my sleep?";

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
    after_help = "Until a trained Stream Aligner is available, the aligner defaults to the embedded \
SmolLM2-135M-Instruct prompted with the Stream Aligner instruction; it is not trained to \
correct, so expect few and not always better changes. Point --aligner-dir at a trained aligner \
for real corrections."
)]
struct Args {
    /// The question.
    question: Option<String>,
    /// Upstream model folder, Hugging Face layout (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    upstream_dir: Option<PathBuf>,
    /// Aligner model folder (default: the embedded SmolLM2-135M-Instruct, prompted with the
    /// Stream Aligner instruction; not a trained aligner).
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    /// How to answer.
    #[arg(long, value_enum, default_value_t = ModeArg::Stream)]
    mode: ModeArg,
    /// Weights and activations: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = common::dtype)]
    dtype: DType,
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
    /// Append the run's record to this JSON Lines file.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Print the answer only: no markers, no summary.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let question = args
        .question
        .clone()
        .unwrap_or_else(|| DEFAULT_QUESTION.to_owned());
    if question.trim().is_empty() {
        anyhow::bail!("the question is empty");
    }
    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let aligner_dir = common::model_dir(args.aligner_dir.as_deref())?;
    let kind = args.dtype.kind();
    let load = |dir: &PathBuf| {
        Llama::load(dir, kind, args.device).with_context(|| format!("loading {}", dir.display()))
    };
    let (upstream_model, _upstream_vs) = load(&upstream_dir)?;
    // One copy of the weights when both roles use the same model.
    let separate_aligner = if aligner_dir == upstream_dir {
        None
    } else {
        Some(load(&aligner_dir)?)
    };
    let aligner_model = separate_aligner
        .as_ref()
        .map_or(&upstream_model, |(m, _)| m);

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
    let upstream_config = UpstreamConfig {
        sampling,
        ..UpstreamConfig::default()
    };
    let mut upstream = LocalUpstream::new(
        &upstream_model,
        ModelTokenizer::from_dir(&upstream_dir)?,
        upstream_config,
    )?;
    let corrector_config = CorrectorConfig {
        chat_template: !args.raw_aligner_prompt,
        ..CorrectorConfig::default()
    };
    let mut corrector = LocalCorrector::new(
        aligner_model,
        ModelTokenizer::from_dir(&aligner_dir)?,
        corrector_config,
    )?;

    let mut printer = Printer::new(args.quiet, args.mode);
    if !args.quiet {
        eprintln!("Q: {question}\n");
    }
    let on_event = |event: &Event| printer.show(event);
    let record = match args.mode {
        ModeArg::Stream => {
            let config = MachineConfig {
                max_rounds: args.max_rounds.unwrap_or(64),
                max_sentence_tokens: args.max_sentence_tokens,
                max_total_tokens: args.max_tokens,
            };
            StreamMachine::new(question.clone(), config)?.run(
                &mut upstream,
                &mut corrector,
                on_event,
            )?
        }
        ModeArg::Aligner => modes::whole_answer(
            &mut upstream,
            &mut corrector,
            &question,
            args.max_tokens,
            on_event,
        )?,
        ModeArg::Upstream => {
            modes::upstream_only(&mut upstream, &question, args.max_tokens, on_event)?
        }
        ModeArg::Reference => {
            let config = ReferenceConfig {
                rounds: args.max_rounds.unwrap_or(16),
                max_continuation_tokens: args.max_sentence_tokens.max(1) * 2,
            };
            modes::reference(&mut upstream, &mut corrector, &question, config, on_event)?
        }
    };
    println!();
    if let Some(path) = &args.records {
        JsonlWriter::create(path)?.write(&record)?;
    }
    if !args.quiet {
        summarise(&record, args.mode);
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
