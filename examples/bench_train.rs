//! Training throughput, measured the way `xtask/reference/transformers_bench.py` measures
//! transformers: forward + backward + AdamW step on batches of random tokens (labels = inputs;
//! 4 x 256 unless `--shapes`), tokens per second of the best of 2 steps after a warm-up step.
//!
//! Run: `cargo run --release --example bench_train -- --json target/bench/train.json`
//!
//! `f32` trains in f32; `bf16` computes in bf16 over f32 master weights and f32 AdamW state (the
//! reference's `bf16autocast` keeps f32 weights and autocasts the matmuls instead). Clipping and
//! gradient checkpointing are off, as in the reference.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use aligner::model::{CausalLm, Llama};
use aligner::train::{Precision, ScheduleKind, TokenizedRow, TrainConfig, TrainData, Trainer};
use clap::Parser;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
#[command(about = "Measure training tokens/s (batch 4 x 256, or --shapes)")]
struct Args {
    /// Hugging Face layout model folder (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu", value_parser = common::device)]
    device: Device,
    /// Precisions to measure, comma-separated (f32, bf16).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    precision: Vec<String>,
    /// Also measure with per-layer gradient checkpointing.
    #[arg(long)]
    checkpointing: bool,
    /// Batch shapes as BATCHxSEQ, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4x256", value_parser = shape)]
    shapes: Vec<(usize, usize)>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = common::model_dir(args.model_dir.as_deref())?;
    tch::manual_seed(0);
    let mut results = serde_json::Map::new();
    results.insert("threads".into(), tch::get_num_threads().into());
    results.insert("device".into(), format!("{:?}", args.device).into());
    let mut precisions = Vec::new();
    for name in &args.precision {
        precisions.push(match name.as_str() {
            "f32" => Precision::F32,
            "bf16" => Precision::Bf16,
            other => anyhow::bail!("unknown precision `{other}` (expected f32 or bf16)"),
        });
    }
    let mut variants: Vec<(Precision, bool)> = precisions.iter().map(|&p| (p, false)).collect();
    if args.checkpointing {
        variants.extend(precisions.iter().map(|&p| (p, true)));
    }
    let runs = args
        .shapes
        .iter()
        .flat_map(|&shape| variants.iter().map(move |&v| (shape, v)));
    for ((batch, seq), (precision, checkpointing)) in runs {
        let (model, vs) = Llama::load(&dir, Kind::Float, args.device)?;
        let vocab = model.config().vocab_size as i64;
        let rows: Vec<TokenizedRow> = (0..batch)
            .map(|_| {
                let ids = Vec::<i64>::try_from(Tensor::randint(
                    vocab,
                    [seq as i64],
                    (Kind::Int64, Device::Cpu),
                ))?;
                Ok(TokenizedRow {
                    labels: ids.clone(),
                    input_ids: ids,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut config = TrainConfig::default();
        config.model.precision = precision;
        config.model.gradient_checkpointing = checkpointing;
        // torch.optim.AdamW's defaults, as the reference uses them (decay on matrices only
        // here; torch decays every parameter, which costs the same).
        config.optim.lr = 1e-5;
        config.optim.weight_decay = 0.01;
        config.optim.max_grad_norm = None;
        config.schedule.kind = ScheduleKind::Constant;
        config.schedule.warmup_ratio = 0.0;
        config.data.micro_batch_size = batch;
        config.data.grad_accum_steps = 1;
        config.data.max_length = seq;
        config.data.epochs = 3;
        config.data.shuffle = false;
        config.eval.every_steps = None;
        config.eval.progress_bar = false;
        config.checkpoint.every_steps = None;
        config.checkpoint.save_final = false;
        let run = tempfile_dir()?;
        let data = TrainData {
            train: rows,
            eval: vec![],
            pad_id: 0,
        };
        let mut trainer = Trainer::new(model, vs, config, data, &run)?;
        trainer.train_until(1)?; // warm-up
        let mut best = f64::INFINITY;
        for step in 2..=3 {
            let start = Instant::now();
            trainer.train_until(step)?;
            if let Device::Cuda(i) = args.device {
                tch::Cuda::synchronize(i as i64);
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        std::fs::remove_dir_all(&run)?;
        let tps = (batch * seq) as f64 / best;
        let name = precision.as_str();
        let key = format!(
            "train_tok_s_{name}{}_b{batch}s{seq}",
            if checkpointing { "_ckpt" } else { "" }
        );
        println!("{key}: {tps:.1} tok/s");
        results.insert(key, tps.into());
    }
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &json)?;
    }
    println!("{json}");
    Ok(())
}

/// `BATCHxSEQ`, e.g. `4x256`.
fn shape(s: &str) -> Result<(usize, usize), String> {
    let (b, t) = s.split_once('x').ok_or("expected BATCHxSEQ, e.g. 4x256")?;
    Ok((
        b.parse().map_err(|e| format!("batch `{b}`: {e}"))?,
        t.parse().map_err(|e| format!("sequence `{t}`: {e}"))?,
    ))
}

/// A fresh folder for a throw-away run under the system temp dir.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench_train_{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
