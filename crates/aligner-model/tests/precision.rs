//! The half-precision path that a GPU runs (bf16 and f16 weights and activations, attention
//! through `scaled_dot_product_attention`), exercised on the CPU for shapes, dtypes and
//! agreement with f32 on the same weights, so that it stays working where no GPU is at hand.

#![allow(clippy::unwrap_used)]

mod common;

use aligner_model::generate::{GenerationConfig, generate};
use aligner_model::{CausalLm, Config, KvCache, Llama, ModelTokenizer};
use tch::{Device, Kind, Tensor, nn};

const VOCAB: usize = 97;
const HALF: [Kind; 2] = [Kind::BFloat16, Kind::Half];

/// The tiny model with its weights rounded to `kind`, once in `kind` and once in f32, so that
/// both compute with the same numbers.
fn tiny_pair(kind: Kind) -> ((Llama, nn::VarStore), (Llama, nn::VarStore)) {
    let build = || {
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = Llama::new(&vs.root(), &Config::tiny(VOCAB));
        vs.set_kind(kind);
        (model, vs)
    };
    let half = build();
    let mut full = build();
    full.1.set_kind(Kind::Float);
    (half, full)
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).unsqueeze(0)
}

/// Largest absolute difference, in f32.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

fn scale(t: &Tensor) -> f64 {
    t.to_kind(Kind::Float).abs().max().double_value(&[])
}

/// Relative tolerance of a half-precision result against f32: bf16 keeps 8 significant bits,
/// f16 11, and a few roundings accumulate through two layers (measured: about 0.007 of the
/// logits' scale in bf16 and 0.001 in f16).
fn tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => 0.03,
        _ => 0.006,
    }
}

const TOKENS: [i64; 12] = [5, 17, 3, 88, 42, 42, 9, 60, 1, 2, 3, 4];

#[test]
fn half_precision_logits_have_the_models_kind_and_track_f32() {
    let _guard = tch::no_grad_guard();
    for kind in HALF {
        let ((half, _hv), (full, _fv)) = tiny_pair(kind);
        assert_eq!(half.kind(), kind);
        let input = ids(&TOKENS);
        let logits = half.forward(&input, &mut half.new_cache(1), None).unwrap();
        assert_eq!(logits.size(), [1, TOKENS.len() as i64, VOCAB as i64]);
        assert_eq!(logits.kind(), kind, "logits of a {kind:?} model");
        let hidden = half
            .hidden_states(&input, &mut half.new_cache(1), None)
            .unwrap();
        assert_eq!(hidden.size(), [1, TOKENS.len() as i64, 64]);
        assert_eq!(hidden.kind(), kind, "hidden states of a {kind:?} model");

        let reference = full.forward(&input, &mut full.new_cache(1), None).unwrap();
        assert_eq!(reference.kind(), Kind::Float);
        let d = max_diff(&logits, &reference);
        let s = scale(&reference);
        assert!(s > 0.0);
        assert!(
            d <= tolerance(kind) * s,
            "{kind:?}: max |diff| {d} against f32 logits of scale {s}"
        );
        let last = half
            .forward_last(&input, &mut half.new_cache(1), None)
            .unwrap();
        assert_eq!(last.size(), [1, VOCAB as i64]);
        assert_eq!(last.kind(), kind);
        let tail = half
            .forward_tail(&input, &mut half.new_cache(1), None, 3)
            .unwrap();
        assert_eq!(tail.size(), [1, 3, VOCAB as i64]);
        assert!(max_diff(&tail, &logits.narrow(1, TOKENS.len() as i64 - 3, 3)) == 0.0);
    }
}

#[test]
fn half_precision_cached_decoding_tracks_the_full_pass() {
    let _guard = tch::no_grad_guard();
    for kind in HALF {
        let ((model, _vs), _) = tiny_pair(kind);
        let full = model
            .forward(&ids(&TOKENS), &mut model.new_cache(1), None)
            .unwrap();
        let s = scale(&full);
        let mut cache = model.new_cache(1);
        let _ = model.forward(&ids(&TOKENS[..4]), &mut cache, None).unwrap();
        for (i, &t) in TOKENS.iter().enumerate().skip(4) {
            let step = model.forward(&ids(&[t]), &mut cache, None).unwrap();
            assert_eq!(step.size(), [1, 1, VOCAB as i64]);
            assert_eq!(step.kind(), kind);
            let d = max_diff(&step.squeeze_dim(1), &full.select(1, i as i64));
            assert!(
                d <= tolerance(kind) * s,
                "{kind:?}, position {i}: {d} (scale {s})"
            );
        }
        assert_eq!(cache.len(), TOKENS.len());
        // Rolling back and continuing gives the positions again.
        cache.truncate(6);
        let again = model.forward(&ids(&TOKENS[6..]), &mut cache, None).unwrap();
        let d = max_diff(&again, &full.narrow(1, 6, TOKENS.len() as i64 - 6));
        assert!(d <= tolerance(kind) * s, "{kind:?} after truncation: {d}");
    }
}

#[test]
fn half_precision_batches_pad_and_decode_in_steps() {
    let _guard = tch::no_grad_guard();
    for kind in HALF {
        let ((model, _vs), _) = tiny_pair(kind);
        // Left padding with an attention mask: the explicit-mask branch of the attention.
        let input = Tensor::from_slice(&[0i64, 0, 0, 5, 17, 3, 9, 8, 7, 6, 5, 4]).view([2, 6]);
        let mask = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 6]);
        let batched = model
            .forward_last(&input, &mut model.new_cache(2), Some(&mask))
            .unwrap();
        assert_eq!(batched.size(), [2, VOCAB as i64]);
        assert_eq!(batched.kind(), kind);
        let alone = model
            .forward_last(&ids(&[5, 17, 3]), &mut model.new_cache(1), None)
            .unwrap();
        let d = max_diff(&batched.get(0), &alone.get(0));
        assert!(
            d <= tolerance(kind) * scale(&alone),
            "{kind:?} padded row: {d}"
        );

        // Two conversations of different lengths in one decoding step.
        let mut a = model.new_cache(1);
        let mut b = model.new_cache(1);
        let _ = model.forward(&ids(&[5, 17, 3]), &mut a, None).unwrap();
        let _ = model.forward(&ids(&[9, 8, 7, 6, 5]), &mut b, None).unwrap();
        let mut caches: Vec<&mut KvCache> = vec![&mut a, &mut b];
        let step = model.decode_step(&[11, 12], &mut caches).unwrap();
        assert_eq!(step.size(), [2, VOCAB as i64]);
        assert_eq!(step.kind(), kind);
        let want = model
            .forward_last(&ids(&[9, 8, 7, 6, 5, 12]), &mut model.new_cache(1), None)
            .unwrap();
        let d = max_diff(&step.get(1), &want.get(0));
        assert!(
            d <= tolerance(kind) * scale(&want),
            "{kind:?} decode step: {d}"
        );
        assert_eq!((a.len(), b.len()), (4, 6));
    }
}

/// The embedded model in bf16, the precision it runs in on a GPU, continues a prompt the way
/// the f32 model does for most of its first greedy tokens (bf16 rounding can flip a near-tie,
/// after which the two texts may part).
#[test]
fn smollm2_in_bf16_generates_like_f32() {
    let dir = common::model_dir();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompt = tokenizer
        .encode(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            false,
        )
        .unwrap();
    let config = GenerationConfig {
        max_new_tokens: 16,
        ..GenerationConfig::default()
    };
    let run = |kind| {
        let (model, _vs) = Llama::load(&dir, kind, Device::Cpu).unwrap();
        assert_eq!(model.kind(), kind);
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
    };
    let full = run(Kind::Float);
    let half = run(Kind::BFloat16);
    assert!(!half.token_ids.is_empty());
    let agreed = full
        .token_ids
        .iter()
        .zip(&half.token_ids)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        agreed >= 6,
        "bf16 left the f32 continuation after {agreed} tokens: {:?} vs {:?}",
        half.text,
        full.text
    );
    assert!(half.text.contains("Paris"), "{:?}", half.text);
}
