//! Next-token choice: greedy or sampled, with repetition and frequency penalties, seeded.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// `None`: greedy (argmax). `Some(t)`: sample at temperature `t` (> 0).
    pub temperature: Option<f64>,
    /// Keep only the `k` most likely tokens before sampling.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (nucleus).
    pub top_p: Option<f64>,
    /// Hugging Face's repetition penalty over prompt and generated tokens (1.0 = off): a seen
    /// token's positive logit is divided by it, a negative one multiplied.
    pub repetition_penalty: f64,
    /// OpenAI-style frequency penalty (0.0 = off): each generated occurrence of a token lowers its
    /// logit by this much.
    pub frequency_penalty: f64,
    /// Seed of the sampler's random numbers.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: None,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            seed: 42,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// The settings the reference Stream Aligner loop samples its upstream with: top-k 40,
    /// top-p 0.95, temperature 0.7, frequency penalty 1.2.
    pub fn reference_upstream(seed: u64) -> Self {
        Self {
            temperature: Some(0.7),
            top_k: Some(40),
            top_p: Some(0.95),
            repetition_penalty: 1.0,
            frequency_penalty: 1.2,
            seed,
        }
    }

    /// The temperature [`chat`](Self::chat) samples at unless told otherwise.
    pub const CHAT_TEMPERATURE: f64 = 0.3;

    /// The settings an upstream answers ordinary questions with in this workspace unless told
    /// otherwise (the main job, the server, the everyday identity rows): `temperature`, top-p
    /// 0.9 and a light repetition penalty of 1.1.
    pub fn chat(temperature: f64, seed: u64) -> Self {
        Self {
            temperature: Some(temperature),
            top_p: Some(0.9),
            repetition_penalty: 1.1,
            seed,
            ..Self::default()
        }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        match self.temperature {
            Some(t) if !(t > 0.0 && t.is_finite()) => {
                return bad(format!("temperature must be positive, got {t}"));
            }
            _ => {}
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1".into());
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad(format!("top_p must be in (0, 1], got {p}"));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be positive, got {}",
                self.repetition_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return bad("frequency_penalty must be finite".into());
        }
        Ok(())
    }
}

/// The seeded generator of the sampler: SplitMix64 from `aligner-data`, so that a seed gives the
/// same samples on every platform and LibTorch version.
pub use aligner_data::rng::SplitMix64 as Rng;

/// Chooses tokens from logits according to a [`SamplingConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler; errors if the config is unusable.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        let rng = Rng::new(config.seed);
        Ok(Self { config, rng })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    fn needs_host(&self) -> bool {
        let c = &self.config;
        c.temperature.is_some() || c.repetition_penalty != 1.0 || c.frequency_penalty != 0.0
    }

    /// The next token for one row. `logits`: `(vocab,)`; `context`: prompt and generated ids
    /// (for the repetition penalty); `generated`: generated ids only (for the frequency penalty).
    pub fn sample(&mut self, logits: &Tensor, context: &[u32], generated: &[u32]) -> Result<u32> {
        // On the GPU a greedy choice stays there. On the CPU it is made here: LibTorch's argmax
        // over a vocabulary is a parallel region whose OpenMP workers then spin against the
        // threads of the next forward pass.
        if !self.needs_host() && logits.device() != tch::Device::Cpu {
            return Ok(logits.f_argmax(-1, false)?.int64_value(&[]) as u32);
        }
        let mut values: Vec<f32> = Vec::<f32>::try_from(
            logits
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu)
                .flatten(0, -1),
        )?;
        self.apply_penalties(&mut values, context, generated);
        Ok(match self.config.temperature {
            None => argmax(&values),
            Some(t) => self.sample_from(&values, t),
        })
    }

    fn apply_penalties(&self, values: &mut [f32], context: &[u32], generated: &[u32]) {
        let rp = self.config.repetition_penalty as f32;
        if rp != 1.0 {
            let mut seen: Vec<u32> = context.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(v) = values.get_mut(id as usize) {
                    *v = if *v < 0.0 { *v * rp } else { *v / rp };
                }
            }
        }
        let fp = self.config.frequency_penalty as f32;
        if fp != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &id in generated {
                *counts.entry(id).or_default() += 1;
            }
            for (id, n) in counts {
                if let Some(v) = values.get_mut(id as usize) {
                    *v -= fp * n as f32;
                }
            }
        }
    }

    /// Samples from `values / temperature` restricted to the `top_k` most likely tokens and
    /// then to the smallest most-likely-first prefix whose probability reaches `top_p`. Only
    /// that prefix is sorted (most likely first, ties by id): it is found among a partially
    /// selected few dozen candidates, widened until it is complete, instead of sorting the
    /// whole vocabulary each token. The draw walks the prefix in that order.
    fn sample_from(&mut self, values: &[f32], temperature: f64) -> u32 {
        let t = temperature as f32;
        let rank = |a: &u32, b: &u32| {
            values[*b as usize]
                .total_cmp(&values[*a as usize])
                .then(a.cmp(b))
        };
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        let n = self
            .config
            .top_k
            .map_or(order.len(), |k| k.clamp(1, order.len()));
        if n < order.len() {
            order.select_nth_unstable_by(n - 1, rank);
            order.truncate(n);
        }
        let best = order.iter().copied().min_by(rank).unwrap_or(0);
        let max = values[best as usize] / t;
        let weight = |i: u32| f64::from((values[i as usize] / t - max).exp());
        let total: f64 = order.iter().map(|&i| weight(i)).sum();
        let keep = match self.config.top_p {
            None => {
                order.sort_unstable_by(rank);
                n
            }
            Some(top_p) => {
                let mut m = n.min(64);
                loop {
                    if m < n {
                        order.select_nth_unstable_by(m - 1, rank);
                    }
                    order[..m].sort_unstable_by(rank);
                    let mut cumulative = 0.0;
                    let reached = order[..m].iter().position(|&id| {
                        cumulative += weight(id) / total;
                        cumulative >= top_p
                    });
                    match reached {
                        Some(i) => break i + 1,
                        None if m == n => break n,
                        None => m = (m * 4).min(n),
                    }
                }
            }
        };
        let kept = &order[..keep];
        let probs: Vec<f64> = kept.iter().map(|&i| weight(i) / total).collect();
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (p, &id) in probs.iter().zip(kept) {
            if r < *p {
                return id;
            }
            r -= p;
        }
        kept[keep - 1]
    }
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
        assert_eq!(s.sample(&logits(&[0.1, 3.0, -1.0]), &[], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingConfig {
            repetition_penalty: 4.0,
            ..SamplingConfig::greedy()
        })
        .unwrap();
        // 3.0 / 4 = 0.75 < 1.0, so the seen token 1 loses to token 0.
        assert_eq!(s.sample(&logits(&[1.0, 3.0, -1.0]), &[1], &[1]).unwrap(), 0);
    }

    #[test]
    fn frequency_penalty_counts_occurrences() {
        let mut s = Sampler::new(SamplingConfig {
            frequency_penalty: 1.0,
            ..SamplingConfig::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&logits(&[1.0, 2.5, 0.0]), &[], &[1]).unwrap(), 1);
        assert_eq!(
            s.sample(&logits(&[1.0, 2.5, 0.0]), &[], &[1, 1]).unwrap(),
            0
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let cfg = SamplingConfig {
            temperature: Some(1.0),
            top_k: Some(1),
            ..SamplingConfig::default()
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits(&[0.0, 0.5, 0.4]), &[], &[]).unwrap(), 1);
        }
        let cfg = SamplingConfig {
            temperature: Some(1.0),
            seed: 7,
            ..SamplingConfig::default()
        };
        let draw = |cfg: &SamplingConfig| -> Vec<u32> {
            let mut s = Sampler::new(cfg.clone()).unwrap();
            (0..50)
                .map(|_| s.sample(&logits(&[0.0, 0.1, 0.2, 0.3]), &[], &[]).unwrap())
                .collect()
        };
        let a = draw(&cfg);
        assert_eq!(a, draw(&cfg));
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature 1 over near-equal logits must vary: {a:?}"
        );
    }

    #[test]
    fn top_p_keeps_the_nucleus_only() {
        // Token 0 has ~0.97 of the mass, so with top_p 0.9 only it survives.
        let cfg = SamplingConfig {
            temperature: Some(1.0),
            top_p: Some(0.9),
            ..SamplingConfig::default()
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..50 {
            assert_eq!(
                s.sample(&logits(&[5.0, 1.0, 0.0, -1.0]), &[], &[]).unwrap(),
                0
            );
        }
    }

    /// The definition: sort the whole vocabulary, cut to `top_k`, softmax, cut to the `top_p`
    /// nucleus, draw `u` in `[0, 1)` over what is left, most likely first.
    fn by_full_sort(
        values: &[f32],
        t: f32,
        top_k: Option<usize>,
        top_p: Option<f64>,
        u: f64,
    ) -> u32 {
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_by(|&a, &b| {
            values[b as usize]
                .total_cmp(&values[a as usize])
                .then(a.cmp(&b))
        });
        order.truncate(top_k.unwrap_or(order.len()).max(1));
        let max = values[order[0] as usize] / t;
        let w: Vec<f64> = order
            .iter()
            .map(|&i| f64::from((values[i as usize] / t - max).exp()))
            .collect();
        let total: f64 = w.iter().sum();
        let mut probs: Vec<f64> = w.iter().map(|x| x / total).collect();
        if let Some(p) = top_p {
            let mut c = 0.0;
            let keep = probs
                .iter()
                .position(|x| {
                    c += x;
                    c >= p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let mut r = u * probs.iter().sum::<f64>();
        for (p, &id) in probs.iter().zip(&order) {
            if r < *p {
                return id;
            }
            r -= p;
        }
        order[probs.len() - 1]
    }

    #[test]
    fn the_partial_selection_draws_what_sorting_everything_draws() {
        let mut source = Rng::new(11);
        for case in 0..300 {
            // Vocabularies of a few to a few thousand tokens, peaked or flat (a flat one makes
            // the nucleus wider than the first candidates), with ties.
            let len = 2 + (source.next_f64() * 3000.0) as usize;
            let spread = [0.1f64, 1.0, 8.0][case % 3];
            let values: Vec<f32> = (0..len)
                .map(|_| ((source.next_f64() * 2.0 - 1.0) * spread * 4.0).round() as f32 / 4.0)
                .collect();
            let top_k = [None, Some(1), Some(40), Some(len + 5)][case % 4];
            let top_p = [None, Some(0.9), Some(0.5), Some(1.0)][(case / 4) % 4];
            let temperature = [0.3, 1.0, 1.7][(case / 16) % 3];
            let mut s = Sampler::new(SamplingConfig {
                temperature: Some(temperature),
                top_k,
                top_p,
                seed: case as u64,
                ..SamplingConfig::default()
            })
            .unwrap();
            let mut rng = Rng::new(case as u64);
            for _ in 0..3 {
                let got = s.sample_from(&values, temperature);
                let want = by_full_sort(&values, temperature as f32, top_k, top_p, rng.next_f64());
                assert_eq!(
                    got, want,
                    "case {case}: {len} tokens, top_k {top_k:?}, top_p {top_p:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(
            Sampler::new(SamplingConfig {
                temperature: Some(0.0),
                ..SamplingConfig::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplingConfig {
                top_p: Some(1.5),
                ..SamplingConfig::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplingConfig {
                top_k: Some(0),
                ..SamplingConfig::default()
            })
            .is_err()
        );
    }
}
