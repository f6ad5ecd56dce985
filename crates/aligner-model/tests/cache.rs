//! The KV cache: cached decoding equals a full forward pass, truncation rolls back exactly,
//! left padding does not change a row's results, and seeded sampling repeats.

#![allow(clippy::unwrap_used)]

mod common;

use aligner_model::generate::{GenerationConfig, SamplingConfig, generate};
use aligner_model::{CausalLm, Config, Llama, ModelTokenizer};
use tch::{Device, Kind, Tensor, nn};

/// Largest difference between cached and full-pass logits, relative to the largest logit of the
/// full pass. The two passes multiply different row counts, which take different kernels (MKL's,
/// or ours by CPU path: `aligner_model::cpu`) and so add in different orders; on SmolLM2 (logits
/// of about 20) that moves a logit by up to ~1.5e-4 on AVX2 CPUs, 7e-6 of the scale.
const RELATIVE_TOLERANCE: f64 = 2e-5;

fn tiny() -> (Llama, nn::VarStore) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &Config::tiny(97));
    (model, vs)
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).unsqueeze(0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// `RELATIVE_TOLERANCE` of the largest |logit| of `full` (taken as at least 1).
fn tolerance(full: &Tensor) -> f64 {
    RELATIVE_TOLERANCE * full.abs().max().double_value(&[]).max(1.0)
}

fn check_cached_equals_full(model: &impl CausalLm, tokens: &[i64]) {
    let _guard = tch::no_grad_guard();
    let full = model
        .forward(&ids(tokens), &mut model.new_cache(1), None)
        .unwrap();
    let mut cache = model.new_cache(1);
    let split = tokens.len() / 3;
    let first = model
        .forward(&ids(&tokens[..split]), &mut cache, None)
        .unwrap();
    let tol = tolerance(&full);
    let d = max_diff(&first, &full.narrow(1, 0, split as i64));
    assert!(d < tol, "prefix pass: {d} (tolerance {tol})");
    for (i, &t) in tokens.iter().enumerate().skip(split) {
        let step = model.forward(&ids(&[t]), &mut cache, None).unwrap();
        let d = max_diff(&step.squeeze_dim(1), &full.select(1, i as i64));
        assert!(d < tol, "position {i}: {d} (tolerance {tol})");
    }
    assert_eq!(cache.len(), tokens.len());
}

#[test]
fn cached_decode_equals_full_forward_tiny() {
    let (model, _vs) = tiny();
    check_cached_equals_full(&model, &[5, 17, 3, 88, 42, 42, 9, 60, 1, 2, 3, 4]);
}

#[test]
fn cached_decode_equals_full_forward_smollm2() {
    let (model, _vs) = Llama::load(common::model_dir(), Kind::Float, Device::Cpu).unwrap();
    check_cached_equals_full(
        &model,
        &[1, 4093, 28, 722, 314, 253, 1345, 30, 2, 198, 1, 520, 9531],
    );
}

#[test]
fn truncate_then_continue_equals_recomputation() {
    let (model, _vs) = tiny();
    let _guard = tch::no_grad_guard();
    let mut cache = model.new_cache(1);
    let _prefill = model
        .forward(&ids(&[5, 17, 3, 88, 42, 42, 9, 60, 1, 2]), &mut cache, None)
        .unwrap();
    cache.truncate(6);
    assert_eq!(cache.len(), 6);
    let continued = model
        .forward(&ids(&[70, 71, 72]), &mut cache, None)
        .unwrap();
    let fresh = model
        .forward(
            &ids(&[5, 17, 3, 88, 42, 42, 70, 71, 72]),
            &mut model.new_cache(1),
            None,
        )
        .unwrap();
    assert!(max_diff(&continued, &fresh.narrow(1, 6, 3)) < tolerance(&fresh));
    cache.reset();
    assert!(cache.is_empty());
}

#[test]
fn left_padding_does_not_change_a_row() {
    let (model, _vs) = tiny();
    let _guard = tch::no_grad_guard();
    let short = [5i64, 17, 3];
    let long = [9i64, 8, 7, 6, 5, 4];
    let input = Tensor::from_slice(&[0, 0, 0, 5, 17, 3, 9, 8, 7, 6, 5, 4]).view([2, 6]);
    let mask = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 6]);
    let mut cache = model.new_cache(2);
    let batched = model.forward_last(&input, &mut cache, Some(&mask)).unwrap();
    let alone_short = model
        .forward_last(&ids(&short), &mut model.new_cache(1), None)
        .unwrap();
    let alone_long = model
        .forward_last(&ids(&long), &mut model.new_cache(1), None)
        .unwrap();
    assert!(max_diff(&batched.get(0), &alone_short.get(0)) < tolerance(&alone_short));
    assert!(max_diff(&batched.get(1), &alone_long.get(0)) < tolerance(&alone_long));
    // And one decoding step after the padded prefill.
    let step = model
        .forward_last(
            &Tensor::from_slice(&[11i64, 11]).view([2, 1]),
            &mut cache,
            None,
        )
        .unwrap();
    let short_step = model
        .forward_last(&ids(&[5, 17, 3, 11]), &mut model.new_cache(1), None)
        .unwrap();
    assert!(max_diff(&step.get(0), &short_step.get(0)) < tolerance(&short_step));
}

#[test]
fn seeded_sampling_is_deterministic_and_seed_dependent() {
    let dir = common::model_dir();
    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompt = tokenizer.encode("Once upon a time", false).unwrap();
    let run = |seed| {
        let config = GenerationConfig {
            max_new_tokens: 24,
            sampling: SamplingConfig {
                temperature: Some(1.0),
                top_k: Some(50),
                top_p: Some(0.95),
                seed,
                ..SamplingConfig::default()
            },
            ..GenerationConfig::default()
        };
        generate(
            &model,
            &tokenizer,
            std::slice::from_ref(&prompt),
            &config,
            |_, _| {},
        )
        .unwrap()
        .generations
        .remove(0)
        .token_ids
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2), "different seeds gave the same 24 sampled tokens");
}

#[test]
fn streamed_deltas_concatenate_to_the_text() {
    let dir = common::model_dir();
    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompt = tokenizer.encode("<|im_start|>user\nWrite three emoji and a Chinese greeting.<|im_end|>\n<|im_start|>assistant\n", false).unwrap();
    let mut streamed = String::new();
    let config = GenerationConfig {
        max_new_tokens: 40,
        ..GenerationConfig::default()
    };
    let out = generate(&model, &tokenizer, &[prompt], &config, |_, d| {
        streamed.push_str(d)
    })
    .unwrap();
    let g = &out.generations[0];
    assert_eq!(streamed, g.text);
    let body: Vec<u32> = g
        .token_ids
        .iter()
        .copied()
        .filter(|t| !tokenizer.eos_ids().contains(t))
        .collect();
    assert_eq!(g.text, tokenizer.decode(&body, false).unwrap());
    // Only a generation cut off by the token limit may end inside a character.
    let complete = match g.finish_reason {
        aligner_model::generate::FinishReason::Length => g.text.trim_end_matches('\u{FFFD}'),
        _ => g.text.as_str(),
    };
    assert!(!complete.contains('\u{FFFD}'), "{:?}", g.text);
}

#[test]
fn stop_strings_cut_the_text() {
    let dir = common::model_dir();
    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompt = tokenizer.encode("1, 2, 3, 4, 5,", false).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 30,
        stop_strings: vec!["9".into()],
        ..GenerationConfig::default()
    };
    let mut streamed = String::new();
    let out = generate(&model, &tokenizer, &[prompt], &config, |_, d| {
        streamed.push_str(d)
    })
    .unwrap();
    let g = &out.generations[0];
    assert_eq!(
        g.finish_reason,
        aligner_model::generate::FinishReason::StopString("9".into()),
        "text {:?}",
        g.text
    );
    assert!(!g.text.contains('9'));
    assert_eq!(streamed, g.text);
}
