//! Decode and prefill speed of a model, measured the way `xtask/reference/transformers_bench.py`
//! measures transformers, so the two can be compared line by line.
//!
//! JSON keys:
//! - `decode_tok_s_{dtype}`: greedy decoding, batch 1, a 16-token random prompt, 128 new tokens
//!   (EOS ignored), 128 / wall time of the whole call, best of 2 after a warm-up.
//! - `prefill512_tok_s_{dtype}`: one forward pass over 512 random tokens with logits at every
//!   position, best of 3 after a warm-up.
//! - The same for each packed weight format (`PackedLlama`, f32 activations), keyed
//!   `..._{format}`, plus `decode_b{8,32}_tok_s_{format}`: batched greedy decoding throughput
//!   (rows x 32 new tokens / wall time), and `weight_bytes_per_token_{format}`.
//! - Quality of each packed format against the f32 model on a fixed text: perplexity
//!   (`ppl_{format}`, `ppl_f32`) and teacher-forced top-1 agreement (`top1_agree_{format}`),
//!   both fed in chunks of 8 tokens so that quantised formats run their quantised kernels.
//! - `read_gb_s`: memory read bandwidth (sum over a 512 MiB tensor), for the roofline share.

use std::path::PathBuf;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::Bench;
use crate::app::{Error, Result, model_dir};
use crate::model::generate::{GenerationConfig, generate};
use crate::model::{CausalLm, DType, Llama, ModelTokenizer, PackedLlama, WeightFormat};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hugging Face layout model folder (default: the embedded SmolLM2-135M-Instruct).
    pub model_dir: Option<PathBuf>,
    /// Dtypes to measure (`Llama`).
    pub dtypes: Vec<DType>,
    /// Packed weight formats to measure (f32 activations).
    pub packed: Vec<WeightFormat>,
    /// The device.
    pub device: Device,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            model_dir: None,
            dtypes: vec![DType::F32, DType::Bf16],
            packed: vec![WeightFormat::Int4, WeightFormat::Int8, WeightFormat::Dense],
            device: Device::Cpu,
        }
    }
}

fn best_of(n: usize, device: Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
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

/// Greedy decoding of `new_tokens` tokens after each of `prompts` (EOS ignored).
fn greedy_decode(
    model: &impl CausalLm,
    tokenizer: &ModelTokenizer,
    prompts: &[Vec<u32>],
    new_tokens: usize,
) -> Result<()> {
    let config = GenerationConfig {
        max_new_tokens: new_tokens,
        ignore_eos: true,
        ..GenerationConfig::default()
    };
    let out = generate(model, tokenizer, prompts, &config, |_, _| {})?;
    if out
        .generations
        .iter()
        .any(|g| g.token_ids.len() != new_tokens)
    {
        return Err(Error::Invalid("generation stopped early".into()));
    }
    Ok(())
}

/// Greedy decoding speed of `prompts.len()` sequences together (one for batch 1):
/// `new_tokens` after each prompt, all sequences' new tokens divided by the wall time of the
/// whole call (prompts included), the fastest of `repeats` calls after a warm-up.
pub(super) fn decode_rate(
    model: &impl CausalLm,
    tokenizer: &ModelTokenizer,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    repeats: usize,
) -> Result<f64> {
    greedy_decode(model, tokenizer, prompts, new_tokens)?;
    let seconds = best_of(repeats, model.device(), || {
        greedy_decode(model, tokenizer, prompts, new_tokens)
    })?;
    Ok((prompts.len() * new_tokens) as f64 / seconds)
}

/// Decode (batch 1 and each of `batches`) and prefill speed of `model`, into `results` under
/// keys ending in `_{name}`; the line of speeds goes to `log`.
fn measure(
    model: &impl CausalLm,
    tokenizer: &ModelTokenizer,
    name: &str,
    device: Device,
    batches: &[usize],
    results: &mut serde_json::Map<String, serde_json::Value>,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let vocab = model.config().vocab_size as i64;
    let random_prompt = || -> Result<Vec<u32>> {
        Ok(
            Vec::<i64>::try_from(Tensor::randint(vocab, [16], (Kind::Int64, Device::Cpu)))?
                .into_iter()
                .map(|t| t as u32)
                .collect(),
        )
    };
    let decode = |prompts: &[Vec<u32>], new_tokens: usize| {
        greedy_decode(model, tokenizer, prompts, new_tokens)
    };
    let decode_tps = decode_rate(model, tokenizer, &[random_prompt()?], 128, 2)?;
    results.insert(format!("decode_tok_s_{name}"), decode_tps.into());
    let mut line = format!("{name}: decode {decode_tps:.1} tok/s");
    for &batch in batches {
        let prompts = (0..batch)
            .map(|_| random_prompt())
            .collect::<Result<Vec<_>>>()?;
        decode(&prompts, 4)?;
        let tps = (batch * 32) as f64 / best_of(1, device, || decode(&prompts, 32))?;
        results.insert(format!("decode_b{batch}_tok_s_{name}"), tps.into());
        let _ =
            std::fmt::Write::write_fmt(&mut line, format_args!(", batch {batch} {tps:.1} tok/s"));
    }
    let x512 = Tensor::randint(vocab, [1, 512], (Kind::Int64, device));
    let _guard = tch::no_grad_guard();
    let prefill = || -> Result<()> {
        let logits = model.forward(&x512, &mut model.new_cache(1), None)?;
        if logits.size() != [1, 512, vocab] {
            return Err(Error::Invalid("unexpected logits shape".into()));
        }
        Ok(())
    };
    prefill()?;
    let prefill_tps = 512.0 / best_of(3, device, prefill)?;
    results.insert(format!("prefill512_tok_s_{name}"), prefill_tps.into());
    log(&format!("{line}, prefill(512) {prefill_tps:.1} tok/s"));
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
pub(super) fn read_bandwidth() -> Result<f64> {
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
fn chunked_quality(model: &impl CausalLm, text: &[u32]) -> Result<(f64, Vec<i64>)> {
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

/// The share of positions where `a` and `b` agree (0 when there are none).
fn agreement(a: &[i64], b: &[i64]) -> f64 {
    a.iter().zip(b).filter(|(a, b)| a == b).count() as f64 / a.len().max(1) as f64
}

/// Measures every dtype and packed format; `log` hears a line per measurement. The summary is
/// the JSON, pretty-printed.
///
/// # Errors
/// Failures of loading or running the model.
pub fn run(args: &Options, mut log: impl FnMut(&str)) -> Result<Bench> {
    let dir = model_dir(args.model_dir.as_deref())?;
    let tokenizer = ModelTokenizer::from_dir(&dir)?;
    tch::manual_seed(0);
    let mut results = serde_json::Map::new();
    results.insert("threads".into(), tch::get_num_threads().into());
    results.insert("device".into(), format!("{:?}", args.device).into());
    results.insert("read_gb_s".into(), read_bandwidth()?.into());
    // A GPU's decoding is measured at batch 32 as well (docs/gpu.md's table).
    let dense_batches: &[usize] = match args.device {
        Device::Cuda(_) => &[32],
        _ => &[],
    };
    for dtype in &args.dtypes {
        let (model, vs) = Llama::load(&dir, dtype.kind(), args.device)?;
        let bytes = weight_bytes(&vs);
        let name = dtype.to_string();
        measure(
            &model,
            &tokenizer,
            &name,
            args.device,
            dense_batches,
            &mut results,
            &mut log,
        )?;
        results.insert(format!("weight_bytes_per_token_{dtype}"), bytes.into());
    }
    let (reference, _reference_vs) = Llama::load(&dir, Kind::Float, args.device)?;
    let text = tokenizer.encode(QUALITY_TEXT, true)?;
    let (ppl, reference_top1) = chunked_quality(&reference, &text)?;
    results.insert("ppl_f32".into(), ppl.into());
    for format in &args.packed {
        let model = PackedLlama::from_model_in(&reference, &dir, Kind::Float, *format)?;
        let (ppl, top1) = chunked_quality(&model, &text)?;
        let agree = agreement(&top1, &reference_top1);
        log(&format!(
            "{format}: perplexity {ppl:.3}, top-1 agreement with f32 {agree:.3}"
        ));
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
            &mut log,
        )?;
        results.insert(
            format!("weight_bytes_per_token_{name}"),
            model.weight_bytes_per_token().into(),
        );
    }
    let summary = serde_json::to_string_pretty(&results).unwrap_or_default();
    Ok(Bench {
        json: results,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_is_the_share_of_equal_predictions() {
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 0, 3, 0]), 0.5);
        assert_eq!(agreement(&[], &[]), 0.0);
    }

    #[test]
    fn weight_bytes_leave_out_an_untied_embedding_table() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _embed = root
            .sub("model")
            .sub("embed_tokens")
            .zeros("weight", &[10, 4]);
        assert_eq!(weight_bytes(&vs), 160, "tied: the table is the LM head");
        let _head = root.sub("lm_head").zeros("weight", &[10, 4]);
        assert_eq!(
            weight_bytes(&vs),
            160,
            "untied: only the head is read in full"
        );
    }
}
