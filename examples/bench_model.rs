//! Decode and prefill speed of a model, measured the way `xtask/reference/transformers_bench.py`
//! measures transformers, so the two can be compared line by line.
//!
//! Run: `cargo run --release --example bench_model -- --json target/bench/ours.json`
//!
//! - `decode_tok_s_{dtype}`: greedy decoding, batch 1, a 16-token random prompt, 128 new tokens
//!   (EOS ignored), 128 / wall time of the whole call, best of 2 after a warm-up.
//! - `prefill512_tok_s_{dtype}`: one forward pass over 512 random tokens with logits at every
//!   position, best of 3 after a warm-up.
//! - The same for each `--packed` weight format (`PackedLlama`, f32 activations), keyed
//!   `..._{format}`, plus `decode_b{8,32}_tok_s_{format}`: batched greedy decoding throughput
//!   (rows x 32 new tokens / wall time), and `weight_bytes_per_token_{format}`.
//! - Quality of each packed format against the f32 model on a fixed text: perplexity
//!   (`ppl_{format}`, `ppl_f32`) and teacher-forced top-1 agreement (`top1_agree_{format}`), both
//!   fed in chunks of 8 tokens so that quantised formats run their quantised kernels.
//! - `read_gb_s`: memory read bandwidth (sum over a 512 MiB tensor), for the roofline share.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use aligner::model::generate::{GenerationConfig, generate};
use aligner::model::{CausalLm, DType, Llama, ModelTokenizer, PackedLlama, WeightFormat};
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
    /// Packed weight formats to measure (f32 activations), comma-separated; `--packed` with no
    /// value measures none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "int4,int8,dense")]
    packed: Vec<WeightFormat>,
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

/// Decode (batch 1 and each of `batches`) and prefill speed of `model`, into `results` under
/// keys ending in `_{name}`.
fn measure(
    model: &impl CausalLm,
    tokenizer: &ModelTokenizer,
    name: &str,
    device: Device,
    batches: &[usize],
    results: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let vocab = model.config().vocab_size as i64;
    let random_prompt = || -> anyhow::Result<Vec<u32>> {
        Ok(
            Vec::<i64>::try_from(Tensor::randint(vocab, [16], (Kind::Int64, Device::Cpu)))?
                .into_iter()
                .map(|t| t as u32)
                .collect(),
        )
    };
    let decode = |prompts: &[Vec<u32>], new_tokens: usize| -> anyhow::Result<()> {
        let config = GenerationConfig {
            max_new_tokens: new_tokens,
            ignore_eos: true,
            ..GenerationConfig::default()
        };
        let out = generate(model, tokenizer, prompts, &config, |_, _| {})?;
        anyhow::ensure!(
            out.generations
                .iter()
                .all(|g| g.token_ids.len() == new_tokens),
            "generation stopped early"
        );
        Ok(())
    };
    let prompt = vec![random_prompt()?];
    decode(&prompt, 128)?;
    let decode_tps = 128.0 / best_of(2, device, || decode(&prompt, 128))?;
    results.insert(format!("decode_tok_s_{name}"), decode_tps.into());
    let mut line = format!("{name}: decode {decode_tps:.1} tok/s");
    for &batch in batches {
        let prompts = (0..batch)
            .map(|_| random_prompt())
            .collect::<anyhow::Result<Vec<_>>>()?;
        decode(&prompts, 4)?;
        let tps = (batch * 32) as f64 / best_of(1, device, || decode(&prompts, 32))?;
        results.insert(format!("decode_b{batch}_tok_s_{name}"), tps.into());
        let _ =
            std::fmt::Write::write_fmt(&mut line, format_args!(", batch {batch} {tps:.1} tok/s"));
    }
    let x512 = Tensor::randint(vocab, [1, 512], (Kind::Int64, device));
    let _guard = tch::no_grad_guard();
    let prefill = || -> anyhow::Result<()> {
        let logits = model.forward(&x512, &mut model.new_cache(1), None)?;
        anyhow::ensure!(logits.size() == [1, 512, vocab], "unexpected logits shape");
        Ok(())
    };
    prefill()?;
    let prefill_tps = 512.0 / best_of(3, device, prefill)?;
    results.insert(format!("prefill512_tok_s_{name}"), prefill_tps.into());
    println!("{line}, prefill(512) {prefill_tps:.1} tok/s");
    Ok(())
}

/// Bytes of a dense model's weights read per decoded token: all of them but the embedding table
/// (one row is looked up), which a tied LM head reads in full.
fn weight_bytes(vs: &tch::nn::VarStore) -> usize {
    let vars = vs.variables();
    let untied = vars.contains_key("lm_head.weight");
    vars.iter()
        .filter(|(name, _)| !(untied && name.as_str() == "model.embed_tokens.weight"))
        .map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes())
        .sum()
}

/// Memory read bandwidth in GB/s: the best of 5 sums over a 512 MiB f32 tensor.
fn read_bandwidth() -> anyhow::Result<f64> {
    let _guard = tch::no_grad_guard();
    let big = Tensor::ones([128 << 20], (Kind::Float, Device::Cpu));
    let _ = big.sum(Kind::Float);
    let s = best_of(5, Device::Cpu, || {
        let _ = big.sum(Kind::Float).double_value(&[]);
        Ok(())
    })?;
    Ok((big.numel() * 4) as f64 / s / 1e9)
}

/// The fixed text of the quality measurement (written for it; about 200 tokens of ordinary prose
/// and arithmetic).
const QUALITY_TEXT: &str = "The library opens at nine in the morning and closes at six in the \
evening. On Saturdays it closes two hours earlier, so it is open for seven hours. Maria visits \
it every week to borrow three books, and she returns them the following week. Last month she \
borrowed twelve books in total. Her brother prefers the reading room, where he studies for his \
exams in chemistry and history. He says the quiet helps him remember dates and formulas. The \
librarian, Mr. Okafor, has worked there for eighteen years. He knows where every atlas and \
dictionary is kept, and he often recommends novels to children who are looking for something \
new to read. When it rains, the building is busier than usual, because people come in to stay \
dry and end up reading the newspapers. If each of the 4 tables seats 6 people, the room holds \
24 readers at once.";

/// Tokens per pass in [`chunked_quality`]: a pass this short runs on `PackedLlama`'s block
/// kernels on every CPU (on CPUs with AVX-512, longer ones use its dense copy).
const QUALITY_CHUNK: usize = 8;

/// Perplexity of `text` under `model` and its top-1 prediction at every position, fed
/// [`QUALITY_CHUNK`] tokens at a time through the cache.
fn chunked_quality(model: &impl CausalLm, text: &[u32]) -> anyhow::Result<(f64, Vec<i64>)> {
    let _guard = tch::no_grad_guard();
    let ids: Vec<i64> = text.iter().map(|&t| i64::from(t)).collect();
    let mut cache = model.new_cache(1);
    let mut nll = 0f64;
    let mut top1 = Vec::new();
    for (c, chunk) in ids.chunks(QUALITY_CHUNK).enumerate() {
        let logits = model.forward(&Tensor::from_slice(chunk).unsqueeze(0), &mut cache, None)?;
        let logp = logits
            .get(0)
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float);
        for j in 0..chunk.len() {
            let next = c * QUALITY_CHUNK + j + 1;
            if let Some(&target) = ids.get(next) {
                nll -= logp.double_value(&[j as i64, target]);
                top1.push(logp.get(j as i64).argmax(-1, false).int64_value(&[]));
            }
        }
    }
    Ok(((nll / top1.len().max(1) as f64).exp(), top1))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = common::model_dir(args.model_dir.as_deref())?;
    let tokenizer = ModelTokenizer::from_dir(&dir)?;
    tch::manual_seed(0);
    let mut results = serde_json::Map::new();
    results.insert("threads".into(), tch::get_num_threads().into());
    results.insert("device".into(), format!("{:?}", args.device).into());
    results.insert("read_gb_s".into(), read_bandwidth()?.into());
    for dtype in &args.dtypes {
        let (model, vs) = Llama::load(&dir, dtype.kind(), args.device)?;
        let bytes = weight_bytes(&vs);
        measure(
            &model,
            &tokenizer,
            &dtype.to_string(),
            args.device,
            &[],
            &mut results,
        )?;
        results.insert(format!("weight_bytes_per_token_{dtype}"), bytes.into());
    }
    let (reference, _reference_vs) = Llama::load(&dir, Kind::Float, args.device)?;
    let text = tokenizer.encode(QUALITY_TEXT, true)?;
    let (ppl, reference_top1) = chunked_quality(&reference, &text)?;
    results.insert("ppl_f32".into(), ppl.into());
    for format in &args.packed {
        let model = PackedLlama::from_model(&reference, Kind::Float, *format)?;
        let (ppl, top1) = chunked_quality(&model, &text)?;
        let agree = top1
            .iter()
            .zip(&reference_top1)
            .filter(|(a, b)| a == b)
            .count() as f64
            / top1.len().max(1) as f64;
        println!("{format}: perplexity {ppl:.3}, top-1 agreement with f32 {agree:.3}");
        results.insert(format!("ppl_{format}"), ppl.into());
        results.insert(format!("top1_agree_{format}"), agree.into());
        let name = format.to_string();
        measure(
            &model,
            &tokenizer,
            &name,
            args.device,
            &[8, 32],
            &mut results,
        )?;
        results.insert(
            format!("weight_bytes_per_token_{name}"),
            model.weight_bytes_per_token().into(),
        );
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
