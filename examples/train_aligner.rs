//! Trains an aligner (supervised fine-tuning on question / answer / correction rows) and writes
//! a run folder: `train_config.json`, `data_report.json`, `metrics.jsonl`, `loss.png`,
//! `checkpoints/`, and the final model in the Hugging Face layout (`final/`, or `adapter/` plus
//! `final/` merged when training LoRA).
//!
//! Data comes as dataset specs `FORMAT[:PROPORTION[:PATH]]` read by `aligner-data` (JSON, JSONL
//! or Parquet), or as the shards of `cargo xtask prepare` (`--shards`). With `--chat-template`,
//! every prompt is wrapped in the base model's chat template (use it with the bare-instruction
//! formats `stream-instruction` and `correction-instruction`). The run, its adapter and its
//! model each get an `aligner_config.json` recording how the aligner was prompted, which the
//! local aligner reads at inference. The work is `aligner::app::train`.
//!
//! Run: `cargo run --release --example train_aligner -- --out target/runs/demo`
//! (defaults: the embedded SmolLM2-135M-Instruct and `examples/data/corrections.jsonl`; the
//! paper's recipe scaled down for a CPU; `--help` lists the options).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::train::{Note, TrainOptions, run};
use aligner::model::LoraSpec;
use aligner::train::{Precision, TrainConfig};
use clap::Parser;

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
    /// A folder `cargo xtask prepare` wrote, trained on instead of `--data` (held-out rows then
    /// come from `--eval-data` only; identity rows it placed first stay first).
    #[arg(long, conflicts_with_all = ["eval_rows", "identity_share", "chat_template"])]
    shards: Option<PathBuf>,
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
    /// Compute precision: auto (bf16 where the device computes it natively, else f32), f32,
    /// bf16 or f16 (master weights and optimizer state stay f32).
    #[arg(long, default_value = "auto")]
    precision: Precision,
    /// Recompute decoder layers in the backward pass to save memory.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Train LoRA adapters of this rank instead of all weights.
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Start the LoRA adapters from this PEFT adapter (a further phase of its training; same
    /// rank and modules).
    #[arg(long, requires = "lora_rank")]
    init_adapter: Option<PathBuf>,
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

fn config_from(args: &Args) -> anyhow::Result<TrainConfig> {
    if let Some(path) = &args.config {
        return Ok(TrainConfig::from_file(path)?);
    }
    let mut c = TrainConfig::default();
    c.model.precision = args.precision;
    c.model.gradient_checkpointing = args.gradient_checkpointing;
    c.model.lora = args.lora_rank.map(|rank| LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        ..LoraSpec::default()
    });
    c.model.init_adapter.clone_from(&args.init_adapter);
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
    let options = TrainOptions {
        config: config_from(&args)?,
        model_dir: common::model_dir(args.model_dir.as_deref())?,
        data: args.data,
        eval_data: args.eval_data,
        eval_rows: args.eval_rows,
        chat_template: args.chat_template,
        system: args.system,
        identity_share: args.identity_share,
        shards: args.shards,
        out: args.out,
        device: args.device,
    };
    let outcome = run(&options, &mut |note| match note {
        Note::Dropped {
            what,
            index,
            tokens,
        } => eprintln!(
            "warning: {what} row {} left out: its {tokens} tokens leave no target within --max-length",
            index + 1
        ),
        Note::Data(r) => eprintln!(
            "{} training rows ({} identity, {} target tokens), {} eval rows",
            r.train_rows, r.identity_rows, r.train_target_tokens, r.eval_rows
        ),
        Note::NoPromptRecord => eprintln!(
            "note: no aligner format among the training data, so no aligner_config.json is written"
        ),
        Note::Resumed(step) => eprintln!("resumed from step {step}"),
        Note::Training {
            steps,
            warmup_steps,
            precision,
        } => eprintln!(
            "training {steps} steps ({warmup_steps} warm-up, {precision} compute) into {}",
            options.out.display()
        ),
    })?;
    let summary = &outcome.summary;
    if let (Some(b), Some(a)) = (&outcome.before, &summary.eval) {
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
        outcome.final_dir.display()
    );
    Ok(())
}
