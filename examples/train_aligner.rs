//! Trains an aligner (supervised fine-tuning on question / answer / correction rows) and writes
//! a run folder: `train_config.json`, `metrics.jsonl`, `checkpoints/`, and the final model in the
//! Hugging Face layout (`final/`, or `adapter/` plus `final/` merged when training LoRA).
//!
//! Run: `cargo run --release --example train_aligner -- --out target/runs/demo`
//! (defaults: the embedded SmolLM2-135M-Instruct and `examples/data/corrections.jsonl`; the
//! paper's recipe scaled down for a CPU; `--help` lists the options).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::model::{Llama, LoraSpec, ModelTokenizer};
use aligner::train::data::tokenize_correction;
use aligner::train::{Precision, TokenizedRow, TrainConfig, TrainData, Trainer};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use tch::Kind;

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
    F16,
}

#[derive(Parser)]
#[command(about = "Fine-tune an aligner on {question, answer, correction} JSONL rows")]
struct Args {
    /// JSONL file of {"question", "answer", "correction"} rows.
    #[arg(long, default_value = "examples/data/corrections.jsonl")]
    data: PathBuf,
    /// Base model in the Hugging Face layout (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Run folder (created; resumed from its newest checkpoint if it has one).
    #[arg(long, default_value = "target/runs/train_aligner")]
    out: PathBuf,
    /// A full TrainConfig JSON; the options below are ignored when given.
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
    #[arg(long, value_enum, default_value = "f32")]
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
    /// Rows held out for evaluation (taken from the end of the file).
    #[arg(long, default_value_t = 4)]
    eval_rows: usize,
    /// Evaluate and checkpoint every this many steps.
    #[arg(long, default_value_t = 5)]
    every: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
}

#[derive(serde::Deserialize)]
struct CorrectionRow {
    question: String,
    answer: String,
    correction: String,
}

// Temporary glue until aligner-data provides tokenised correction datasets: read the JSONL here
// and tokenise with the reference prompt.
fn read_rows(
    path: &std::path::Path,
    tokenizer: &ModelTokenizer,
) -> anyhow::Result<Vec<TokenizedRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let row: CorrectionRow = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), i + 1))?;
            Ok(tokenize_correction(
                tokenizer,
                &row.question,
                &row.answer,
                &row.correction,
            )?)
        })
        .collect()
}

fn config_from(args: &Args) -> anyhow::Result<TrainConfig> {
    if let Some(path) = &args.config {
        return Ok(TrainConfig::from_file(path)?);
    }
    let mut c = TrainConfig::default();
    c.model.precision = match args.precision {
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
    c.eval.every_steps = Some(args.every);
    c.checkpoint.every_steps = Some(args.every);
    c.validate()?;
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = config_from(&args)?;
    let dir = common::model_dir(args.model_dir.as_deref())?;
    let tokenizer = ModelTokenizer::from_dir(&dir)?;
    let mut rows = read_rows(&args.data, &tokenizer)?;
    anyhow::ensure!(
        rows.len() > args.eval_rows,
        "{} has {} rows, not more than the {} held out",
        args.data.display(),
        rows.len(),
        args.eval_rows
    );
    let eval = rows.split_off(rows.len() - args.eval_rows);
    let pad_id = i64::from(tokenizer.pad_id());
    let (model, vs) = Llama::load(&dir, Kind::Float, args.device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let data = TrainData {
        train: rows,
        eval,
        pad_id,
    };
    let mut trainer = Trainer::new(model, vs, config, data, &args.out)?;
    if let Some(step) = trainer.resume()? {
        eprintln!("resumed from step {step}");
    }
    eprintln!(
        "training {} steps ({} warm-up) into {}",
        trainer.total_steps(),
        trainer.schedule().warmup_steps(),
        args.out.display()
    );
    let before = trainer.evaluate()?;
    let summary = trainer.train()?;
    if trainer.config().model.lora.is_some() {
        trainer.save_lora_adapter(args.out.join("adapter"), &dir.to_string_lossy())?;
    }
    trainer.export_hf(args.out.join("final"), Some(&dir))?;
    if let (Some(b), Some(a)) = (before, summary.eval) {
        println!(
            "eval loss {:.4} -> {:.4}, token accuracy {:.3} -> {:.3}",
            b.loss, a.loss, b.accuracy, a.accuracy
        );
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
