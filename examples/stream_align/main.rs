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

mod cli;
#[path = "../common/mod.rs"]
mod common;

use std::io::IsTerminal;

use aligner::app::stream_align::{self as app, Mode, UpstreamRef};
use aligner::model::{ModelTokenizer, WeightFormat};
use aligner::stream::preference::PreferenceWriter;
use aligner::stream::{
    CorrectorConfig, Event, JsonlWriter, LocalCorrector, LocalUpstream, UpstreamConfig,
};
use clap::Parser;
use cli::Args;

const DEFAULT_QUESTION: &str = "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let questions = match (&args.questions, &args.question) {
        (Some(path), _) => app::read_questions(path)?,
        (None, Some(q)) if q.trim().is_empty() => anyhow::bail!("the question is empty"),
        (None, Some(q)) => vec![q.clone()],
        (None, None) => vec![DEFAULT_QUESTION.to_owned()],
    };
    let mode = args.mode.into();
    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let aligner_dir = app::aligner_dir(args.aligner_dir.as_deref(), mode, &upstream_dir);
    let remote = args.remote.is_remote();
    if remote && mode == Mode::Reference {
        anyhow::bail!("--mode reference needs the local upstream");
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

    let (sampling, system, remote_params) =
        (args.sampling(mode), args.system(), args.remote_params());
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
        prompt: args.aligner_prompt.resolve(&aligner_dir, args.quiet)?,
        ..CorrectorConfig::default()
    };
    app::check_trained_for(&corrector_config.prompt, mode, &aligner_dir)?;
    let mut corrector = LocalCorrector::new(
        aligner_model,
        ModelTokenizer::from_dir(aligner_tok)?,
        corrector_config,
    )?;
    let mut records = args.records.as_ref().map(JsonlWriter::create).transpose()?;
    let style = args.preference_style;
    let mut pairs = args
        .preference_out
        .as_ref()
        .map(|p| PreferenceWriter::create(p, style, args.keep_ties))
        .transpose()?;

    for question in &questions {
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let printer = app::Printer::new(args.quiet, mode, ansi);
        if !args.quiet {
            eprintln!("Q: {question}\n");
        }
        let on_event = |event: &Event| printer.show(event);
        let upstream = match (&mut local, &mut remote_upstream) {
            (Some(local), _) => UpstreamRef::Local(local),
            (None, Some(remote)) => UpstreamRef::Other(remote.as_mut()),
            (None, None) => anyhow::bail!("no upstream"),
        };
        let options = args.answer_options(mode);
        let record = app::answer(upstream, &mut corrector, question, &options, on_event)?;
        println!();
        if let Some(w) = &mut records {
            w.write(&record)?;
        }
        if let Some(w) = &mut pairs {
            w.write_record(&record)?;
        }
        if !args.quiet {
            eprintln!("\n{}", app::summary(&record, mode));
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
