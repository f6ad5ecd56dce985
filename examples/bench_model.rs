//! Decode and prefill speed of a model, measured the way `../shared/tools/hf_reference.py`
//! measures transformers, so the two can be compared line by line.
//!
//! Run: `cargo run --release --example bench_model -- --json target/bench/ours.json`
//!
//! - `decode_tok_s_{dtype}`: greedy decoding, batch 1, a 16-token random prompt, 128 new tokens
//!   (EOS ignored), 128 / wall time of the whole call, best of 2 after a warm-up.
//! - `prefill512_tok_s_{dtype}`: one forward pass over 512 random tokens with logits at every
//!   position, best of 3 after a warm-up.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use aligner::model::generate::{GenerationConfig, generate};
use aligner::model::{CausalLm, DType, Llama, ModelTokenizer};
use clap::Parser;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
#[command(about = "Measure decode and prefill tokens/s")]
struct Args {
    /// Hugging Face layout model folder (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Dtypes to measure.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16", value_parser = common::dtype)]
    dtypes: Vec<DType>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu", value_parser = common::device)]
    device: Device,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn best_of(
    n: usize,
    device: Device,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..n {
        let start = Instant::now();
        f()?;
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = common::model_dir(args.model_dir.as_deref())?;
    let tokenizer = ModelTokenizer::from_dir(&dir)?;
    tch::manual_seed(0);
    let mut results = serde_json::Map::new();
    results.insert("threads".into(), tch::get_num_threads().into());
    results.insert("device".into(), format!("{:?}", args.device).into());
    for dtype in &args.dtypes {
        let (model, _vs) = Llama::load(&dir, dtype.kind(), args.device)?;
        let vocab = model.config().vocab_size as i64;
        let prompt: Vec<u32> =
            Vec::<i64>::try_from(Tensor::randint(vocab, [16], (Kind::Int64, Device::Cpu)))?
                .into_iter()
                .map(|t| t as u32)
                .collect();
        let config = GenerationConfig {
            max_new_tokens: 128,
            ignore_eos: true,
            ..GenerationConfig::default()
        };
        let decode = || -> anyhow::Result<()> {
            let out = generate(
                &model,
                &tokenizer,
                std::slice::from_ref(&prompt),
                &config,
                |_, _| {},
            )?;
            anyhow::ensure!(
                out.generations[0].token_ids.len() == 128,
                "generation stopped early"
            );
            Ok(())
        };
        decode()?;
        let decode_s = best_of(2, args.device, decode)?;
        let x512 = Tensor::randint(vocab, [1, 512], (Kind::Int64, args.device));
        let _guard = tch::no_grad_guard();
        let prefill = || -> anyhow::Result<()> {
            let logits = model.forward(&x512, &mut model.new_cache(1), None)?;
            anyhow::ensure!(logits.size() == [1, 512, vocab], "unexpected logits shape");
            Ok(())
        };
        prefill()?;
        let prefill_s = best_of(3, args.device, prefill)?;
        let (decode_tps, prefill_tps) = (128.0 / decode_s, 512.0 / prefill_s);
        println!("{dtype}: decode {decode_tps:.1} tok/s, prefill(512) {prefill_tps:.1} tok/s");
        results.insert(format!("decode_tok_s_{dtype}"), decode_tps.into());
        results.insert(format!("prefill512_tok_s_{dtype}"), prefill_tps.into());
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
