//! Trains an aligner (supervised fine-tuning on question / answer / correction rows) and writes
//! a run folder: `train_config.json`, `data_report.json`, `metrics.jsonl`, `loss.png`,
//! `checkpoints/`, and the final model in the Hugging Face layout (`final/`, or `adapter/` plus
//! `final/` merged when training LoRA).
//!
//! Data comes as dataset specs `FORMAT[:PROPORTION[:PATH]]` read by `aligner-data` (JSON, JSONL
//! or Parquet). With `--chat-template`, every prompt is wrapped in the base model's chat
//! template, which is how `aligner-stream`'s local aligners prompt at inference: use it with the
//! bare-instruction formats `stream-instruction` and `correction-instruction`.
//!
//! Run: `cargo run --release --example train_aligner -- --out target/runs/demo`
//! (defaults: the embedded SmolLM2-135M-Instruct and `examples/data/corrections.jsonl`; the
//! paper's recipe scaled down for a CPU; `--help` lists the options).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use aligner::data::rng::SplitMix64;
use aligner::data::template::ChatTemplate;
use aligner::data::{DatasetSpec, Encoder, MixOptions, Registry, load_mix};
use aligner::model::{Llama, LoraSpec};
use aligner::train::{Precision, TokenizedRow, TrainConfig, TrainData, Trainer};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use tch::Kind;

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// bf16 where the device computes it natively (CUDA, AVX-512 BF16 or AMX CPUs), else f32.
    Auto,
    F32,
    Bf16,
    F16,
}

#[derive(Parser)]
#[command(about = "Fine-tune an aligner on correction rows")]
struct Args {
    /// Dataset specs `FORMAT[:PROPORTION[:PATH]]`, e.g. `correction-json::data/train.jsonl` or
    /// `stream-instruction:0.5:rows.jsonl`; repeat to mix.
    #[arg(
        long = "data",
        default_value = "correction-json::examples/data/corrections.jsonl"
    )]
    data: Vec<String>,
    /// Held-out specs for evaluation; without them `--eval-rows` rows are held out of `--data`.
    #[arg(long = "eval-data")]
    eval_data: Vec<String>,
    /// Rows held out of `--data` (seeded) when no `--eval-data` is given.
    #[arg(long, default_value_t = 4)]
    eval_rows: usize,
    /// Wrap every prompt in the base model's chat template (as a user message).
    #[arg(long)]
    chat_template: bool,
    /// System message for `--chat-template` (default: the template's own).
    #[arg(long)]
    system: Option<String>,
    /// Share of identity (correction = answer) rows added to the training mix (paper: 0.2).
    #[arg(long)]
    identity_share: Option<f64>,
    /// Base model in the Hugging Face layout (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Run folder (created; resumed from its newest checkpoint if it has one).
    #[arg(long, default_value = "target/runs/train_aligner")]
    out: PathBuf,
    /// A full TrainConfig JSON; the training options below are ignored when given.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Passes over the data.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Peak learning rate (the paper: 2e-5 at global batch 256; small CPU runs need more).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 2)]
    micro_batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 2)]
    grad_accum: usize,
    /// Truncate rows to this many tokens.
    #[arg(long, default_value_t = 512)]
    max_length: usize,
    /// Compute precision (master weights and optimizer state stay f32).
    #[arg(long, value_enum, default_value = "auto")]
    precision: PrecisionArg,
    /// Recompute decoder layers in the backward pass to save memory.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Train LoRA adapters of this rank instead of all weights.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Evaluate and checkpoint every this many steps.
    #[arg(long, default_value_t = 5)]
    every: usize,
    /// Seed of data sampling, order and initialisation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
}

/// What went into the run, written next to its config.
#[derive(serde::Serialize)]
struct DataReport {
    sources: Vec<aligner::data::mix::SourceReport>,
    identity_rows: usize,
    eval_rows: usize,
    train_rows: usize,
    dropped_train: usize,
    dropped_eval: usize,
    train_target_tokens: u64,
}

fn specs(list: &[String]) -> anyhow::Result<Vec<DatasetSpec>> {
    list.iter()
        .map(|s| {
            s.parse::<DatasetSpec>()
                .with_context(|| format!("dataset spec {s:?}"))
        })
        .collect()
}

/// Tokenises a mix; rows whose target was truncated away are reported and left out.
fn encode(
    encoder: &Encoder,
    examples: &[aligner::data::Example],
    what: &str,
) -> anyhow::Result<(Vec<TokenizedRow>, usize, u64)> {
    let (encoded, stats) = encoder.encode_all(examples)?;
    for d in &stats.dropped {
        eprintln!(
            "warning: {what} row {} left out: its {} tokens leave no target within --max-length",
            d.index + 1,
            d.full_length
        );
    }
    let rows = TokenizedRow::from_encoded(encoded.into_iter().flatten());
    Ok((rows, stats.dropped.len(), stats.target_tokens))
}

fn config_from(args: &Args) -> anyhow::Result<TrainConfig> {
    if let Some(path) = &args.config {
        return Ok(TrainConfig::from_file(path)?);
    }
    let mut c = TrainConfig::default();
    c.model.precision = match args.precision {
        PrecisionArg::Auto => Precision::Auto,
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::Bf16 => Precision::Bf16,
        PrecisionArg::F16 => Precision::F16,
    };
    c.model.gradient_checkpointing = args.gradient_checkpointing;
    c.model.lora = args.lora_rank.map(|rank| LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        ..LoraSpec::default()
    });
    c.optim.lr = args.lr;
    c.data.epochs = args.epochs;
    c.data.micro_batch_size = args.micro_batch;
    c.data.grad_accum_steps = args.grad_accum;
    c.data.max_length = args.max_length;
    c.data.max_steps = args.max_steps;
    c.seed = args.seed;
    c.eval.every_steps = Some(args.every);
    c.checkpoint.every_steps = Some(args.every);
    c.validate()?;
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = config_from(&args)?;
    let dir = common::model_dir(args.model_dir.as_deref())?;
    let (encoder, tokenizer_config) = Encoder::from_dir(&dir, config.data.max_length)
        .with_context(|| format!("tokenizer of {}", dir.display()))?;
    let mut registry = Registry::with_builtins();
    if args.chat_template {
        let template = ChatTemplate::from_config(&tokenizer_config)
            .with_context(|| format!("chat template of {}", dir.display()))?;
        registry = registry.with_chat_template(Arc::new(template), args.system.clone());
    }
    let options = MixOptions {
        seed: args.seed,
        identity_share: args.identity_share,
        ..MixOptions::default()
    };
    let mut mix = load_mix(&specs(&args.data)?, &registry, &options)?;
    let eval_examples = if args.eval_data.is_empty() {
        // Hold out seeded rows of the data, and the identity rows made from them.
        let regular: Vec<usize> = (0..mix.examples.len())
            .filter(|&i| !mix.examples[i].identity)
            .collect();
        anyhow::ensure!(
            regular.len() > args.eval_rows,
            "the data has {} rows, not more than the {} held out",
            regular.len(),
            args.eval_rows
        );
        let picked =
            SplitMix64::new(args.seed ^ 0xE7A1).sample_indices(regular.len(), args.eval_rows);
        let held: HashSet<(usize, usize)> = picked
            .iter()
            .map(|&k| {
                (
                    mix.examples[regular[k]].source,
                    mix.examples[regular[k]].row,
                )
            })
            .collect();
        let (eval, train): (Vec<_>, Vec<_>) = mix
            .examples
            .drain(..)
            .partition(|e| held.contains(&(e.source, e.row)));
        mix.examples = train;
        eval.into_iter()
            .filter(|e| !e.identity)
            .map(|e| e.example)
            .collect()
    } else {
        let eval_options = MixOptions {
            identity_share: None,
            ..options.clone()
        };
        let eval = load_mix(&specs(&args.eval_data)?, &registry, &eval_options)?;
        eval.examples
            .into_iter()
            .map(|e| e.example)
            .collect::<Vec<_>>()
    };
    let train_examples: Vec<_> = mix.examples.iter().map(|e| e.example.clone()).collect();
    let (train, dropped_train, train_target_tokens) =
        encode(&encoder, &train_examples, "training")?;
    let (eval, dropped_eval, _) = encode(&encoder, &eval_examples, "eval")?;
    anyhow::ensure!(!train.is_empty(), "no training rows left");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let report = DataReport {
        eval_rows: eval.len(),
        train_rows: train.len(),
        dropped_train,
        dropped_eval,
        train_target_tokens,
        identity_rows: mix.identity_rows,
        sources: mix.sources,
    };
    let report_path = args.out.join("data_report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!(
        "{} training rows ({} identity, {} target tokens), {} eval rows",
        report.train_rows, report.identity_rows, train_target_tokens, report.eval_rows
    );
    let pad_id = i64::from(encoder.pad_id());
    let (model, vs) = Llama::load(&dir, Kind::Float, args.device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let data = TrainData {
        train,
        eval,
        pad_id,
    };
    let mut trainer = Trainer::new(model, vs, config, data, &args.out)?;
    if let Some(step) = trainer.resume()? {
        eprintln!("resumed from step {step}");
    }
    eprintln!(
        "training {} steps ({} warm-up, {} compute) into {}",
        trainer.total_steps(),
        trainer.schedule().warmup_steps(),
        trainer.config().model.precision,
        args.out.display()
    );
    let before = trainer.evaluate()?;
    let summary = trainer.train()?;
    if trainer.config().model.lora.is_some() {
        // The embedded default model is named as on the Hugging Face hub, so that the adapter
        // travels: `aligner_model::adapter` and PEFT both resolve that name.
        let default = aligner::model::hub::model_dir(&aligner::model::hub::SMOLLM2_135M_INSTRUCT);
        let base = if dir == default {
            "HuggingFaceTB/SmolLM2-135M-Instruct".to_owned()
        } else {
            dir.to_string_lossy().into_owned()
        };
        trainer.save_lora_adapter(args.out.join("adapter"), &base)?;
    }
    trainer.export_hf(args.out.join("final"), Some(&dir))?;
    if let (Some(b), Some(a)) = (before, summary.eval) {
        println!(
            "eval loss {:.4} -> {:.4}, token accuracy {:.3} -> {:.3}",
            b.loss, a.loss, b.accuracy, a.accuracy
        );
    }
    match (&summary.loss_curve, &summary.loss_curve_error) {
        (Some(path), _) => println!("loss curve: {}", path.display()),
        (None, Some(e)) => eprintln!("warning: no loss curve: {e}"),
        (None, None) => {}
    }
    println!(
        "{} steps ({} skipped), last loss {:.4}; model in {}",
        summary.step,
        summary.skipped_steps,
        summary.last_loss.unwrap_or(f64::NAN),
        args.out.join("final").display()
    );
    Ok(())
}
