//! Text generation: batches of prompts (left-padded), greedy or sampled decoding, stop tokens and
//! stop strings, and a stream of text deltas that never splits a multi-byte UTF-8 character.
//!
//! ```no_run
//! use aligner_model::generate::{GenerationConfig, generate};
//! use aligner_model::{Llama, ModelTokenizer};
//! let dir = aligner_model::hub::model_dir(&aligner_model::hub::SMOLLM2_135M_INSTRUCT);
//! let (model, _vs) = Llama::load(&dir, tch::Kind::Float, tch::Device::Cpu)?;
//! let tokenizer = ModelTokenizer::from_dir(&dir)?;
//! let prompt = tokenizer.encode("The capital of France is", true)?;
//! let config = GenerationConfig { max_new_tokens: 16, ..GenerationConfig::default() };
//! let out = generate(&model, &tokenizer, &[prompt], &config, |_, delta| print!("{delta}"))?;
//! println!("\n{:.1} tok/s", out.stats.decode_tokens_per_second());
//! # Ok::<(), aligner_model::Error>(())
//! ```

mod sampling;
mod text_stream;

use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

pub use sampling::{Rng, Sampler, SamplingConfig};
pub use text_stream::TextStream;

use crate::{CausalLm, Error, ModelTokenizer, Result};

/// Settings of one generation call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    /// Greedy or sampled choice of tokens.
    pub sampling: SamplingConfig,
    /// Tokens that end a row (added to the tokenizer's EOS ids).
    pub stop_token_ids: Vec<u32>,
    /// Texts that end a row; the text is cut before the stop string.
    pub stop_strings: Vec<String>,
    /// Keep generating past EOS until `max_new_tokens` (for benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingConfig::greedy(),
            stop_token_ids: vec![],
            stop_strings: vec![],
            ignore_eos: false,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence or stop token was generated (not included in the text).
    Eos(u32),
    /// A stop string appeared (the text ends before it).
    StopString(String),
    /// `max_new_tokens` was reached.
    Length,
}

/// The result for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated ids (a final EOS included).
    pub token_ids: Vec<u32>,
    /// Generated text (EOS and stop string excluded).
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
}

/// Timings of one generation call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens processed (padding excluded).
    pub prefill_tokens: usize,
    /// Time of the prompt forward pass.
    pub prefill_time: Duration,
    /// Tokens generated after the first one, over all rows.
    pub decode_tokens: usize,
    /// Time of the decoding steps after the first token.
    pub decode_time: Duration,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second, after the first.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Results and timings of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// One result per prompt, in order.
    pub generations: Vec<Generation>,
    /// Timings.
    pub stats: GenerationStats,
}

/// Per-row decoding state.
struct Row {
    context: Vec<u32>,
    generated: Vec<u32>,
    stream: TextStream,
    emitted: usize,
    finish: Option<FinishReason>,
    text: String,
}

/// Generates continuations of `prompts` (token ids, special tokens already added).
///
/// Rows are left-padded into one batch; `on_delta(row, text)` receives each row's new text as
/// soon as it is complete UTF-8 and cannot be the start of a stop string.
pub fn generate<M: CausalLm>(
    model: &M,
    tokenizer: &ModelTokenizer,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut on_delta: impl FnMut(usize, &str),
) -> Result<GenerationOutput> {
    if prompts.is_empty() {
        return Ok(GenerationOutput {
            generations: vec![],
            stats: GenerationStats::default(),
        });
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::InvalidArgument(format!("prompt {i} is empty")));
    }
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let mut samplers = (0..prompts.len())
        .map(|i| {
            Sampler::new(SamplingConfig {
                seed: config.sampling.seed.wrapping_add(i as u64),
                ..config.sampling.clone()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut stop_ids: Vec<u32> = if config.ignore_eos {
        vec![]
    } else {
        tokenizer.eos_ids().to_vec()
    };
    stop_ids.extend(&config.stop_token_ids);
    let max_stop_len = config
        .stop_strings
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);

    let batch = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad = tokenizer.pad_id() as i64;
    let mut ids = Vec::with_capacity(batch * longest);
    let mut mask = Vec::with_capacity(batch * longest);
    for p in prompts {
        ids.extend(
            std::iter::repeat_n(pad, longest - p.len()).chain(p.iter().map(|&t| i64::from(t))),
        );
        mask.extend(
            std::iter::repeat_n(0i64, longest - p.len()).chain(std::iter::repeat_n(1, p.len())),
        );
    }
    let padded = prompts.iter().any(|p| p.len() != longest);
    let input = Tensor::from_slice(&ids)
        .view([batch as i64, longest as i64])
        .to_device(device);
    let mask = padded.then(|| {
        Tensor::from_slice(&mask)
            .view([batch as i64, longest as i64])
            .to_device(device)
    });

    let mut rows: Vec<Row> = prompts
        .iter()
        .map(|p| Row {
            context: p.clone(),
            generated: vec![],
            stream: TextStream::new(tokenizer.clone()),
            emitted: 0,
            finish: None,
            text: String::new(),
        })
        .collect();
    let mut stats = GenerationStats {
        prefill_tokens: prompts.iter().map(Vec::len).sum(),
        ..GenerationStats::default()
    };
    let mut cache = model.new_cache(batch);
    let start = Instant::now();
    let mut logits = model
        .forward_last(&input, &mut cache, mask.as_ref())?
        .to_kind(Kind::Float);
    let mut decode_start = None;
    for step in 0..config.max_new_tokens {
        let mut next = Vec::with_capacity(batch);
        for (i, row) in rows.iter_mut().enumerate() {
            if row.finish.is_some() {
                next.push(pad);
                continue;
            }
            let token = samplers[i].sample(&logits.get(i as i64), &row.context, &row.generated)?;
            row.context.push(token);
            row.generated.push(token);
            next.push(i64::from(token));
            if stop_ids.contains(&token) {
                row.finish = Some(FinishReason::Eos(token));
            } else {
                row.text.push_str(&row.stream.push(token)?);
            }
            if row.finish.is_none() && row.generated.len() >= config.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
            if row.finish.is_some() {
                row.text.push_str(&row.stream.flush()?);
            }
            if let Some((at, stop)) = find_stop(&row.text, &config.stop_strings) {
                row.text.truncate(at);
                row.finish = Some(FinishReason::StopString(stop));
            }
            // Hold back a tail that may still grow into a stop string.
            let safe = if row.finish.is_some() {
                row.text.len()
            } else {
                safe_prefix(&row.text, max_stop_len, &config.stop_strings)
            };
            if safe > row.emitted {
                on_delta(i, &row.text[row.emitted..safe]);
                row.emitted = safe;
            }
        }
        if step == 0 {
            // Time to first token: the prompt's forward pass and the first choice.
            stats.prefill_time = start.elapsed();
            decode_start = Some(Instant::now());
        }
        if rows.iter().all(|r| r.finish.is_some()) {
            break;
        }
        let step_input = Tensor::from_slice(&next)
            .view([batch as i64, 1])
            .to_device(device);
        logits = model
            .forward_last(&step_input, &mut cache, None)?
            .to_kind(Kind::Float);
    }
    if let Some(t) = decode_start {
        stats.decode_time = t.elapsed();
    }
    // Each row's first token belongs to the prefill.
    stats.decode_tokens = rows
        .iter()
        .map(|r| r.generated.len())
        .sum::<usize>()
        .saturating_sub(batch);
    let generations = rows
        .into_iter()
        .map(|r| Generation {
            token_ids: r.generated,
            text: r.text,
            finish_reason: r.finish.unwrap_or(FinishReason::Length),
        })
        .collect();
    Ok(GenerationOutput { generations, stats })
}

/// The first stop string in `text`: its byte offset and the string.
fn find_stop(text: &str, stops: &[String]) -> Option<(usize, String)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.clone())))
        .min_by_key(|(at, _)| *at)
}

/// Length of the prefix of `text` that cannot be part of a stop string still being written.
fn safe_prefix(text: &str, max_stop_len: usize, stops: &[String]) -> usize {
    if max_stop_len == 0 {
        return text.len();
    }
    // The longest suffix of `text` that is a proper prefix of some stop string is held back.
    let mut cut = text.len();
    for (start, _) in text.char_indices().rev().take(max_stop_len) {
        let tail = &text[start..];
        if stops
            .iter()
            .any(|s| s.len() > tail.len() && s.starts_with(tail))
        {
            cut = start;
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_tail_is_held_back() {
        let stops = vec!["\nUser:".to_owned()];
        assert_eq!(safe_prefix("Hello\nUs", 6, &stops), 5);
        assert_eq!(safe_prefix("Hello", 6, &stops), 5);
        assert_eq!(safe_prefix("Hello\n", 6, &stops), 5);
        assert_eq!(
            find_stop("Hi\nUser: x", &stops),
            Some((2, "\nUser:".to_owned()))
        );
    }
}
