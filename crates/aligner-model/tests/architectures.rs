//! Every supported architecture against transformers: tiny random-weight models that
//! transformers itself builds and saves (`tests/reference/architectures.py`), loaded by us from
//! their safetensors. Checks f32 logits (full pass, left-padded batch), greedy continuations,
//! and cached step-by-step decoding against the full pass well beyond the sliding windows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use aligner_model::config::Family;
use aligner_model::{CausalLm, InferenceModel, Llama, PackedLlama, WeightFormat};
use tch::{Device, Kind, Tensor};

/// Builds the `arch` model with transformers into a fresh temporary folder.
fn make(arch: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = common::script_into_tempdir(&common::reference_script("architectures.py"), &[arch]);
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// The reference tensors the script saved.
fn reference(dir: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap()
}

fn get(refs: &[(String, Tensor)], name: &str) -> Tensor {
    refs.iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.shallow_clone())
        .unwrap_or_else(|| panic!("reference tensor {name} missing"))
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// `ours` equals `theirs` within 1e-4 of the logits' scale.
fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes");
    let scale = max_abs(theirs).max(1.0);
    let diff = max_abs(&(ours - theirs));
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max |Δ| {diff:e} exceeds 1e-4 of the logits' scale {scale}"
    );
}

fn argmax(logits: &Tensor) -> i64 {
    logits.argmax(-1, false).int64_value(&[])
}

/// All checks of one architecture; returns the model for architecture-specific ones.
fn check(arch: &str, family: Family, sliding: Option<usize>) {
    let _guard = tch::no_grad_guard();
    let (_tmp, dir) = make(arch);
    let refs = reference(&dir);
    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let config = model.config();
    assert_eq!(config.family, family, "{arch}");
    assert_eq!(config.sliding_window, sliding, "{arch}");

    // 1. One full pass over a left-padded batch.
    let ids = get(&refs, "input_ids");
    let mask = get(&refs, "attention_mask");
    let mut cache = model.new_cache(2);
    let logits = model.forward(&ids, &mut cache, Some(&mask)).unwrap();
    let expected = get(&refs, "logits");
    let pad = mask.get(1).eq(0).sum(Kind::Int64).int64_value(&[]);
    let t = ids.size()[1];
    assert_close(&format!("{arch} row 0"), &logits.get(0), &expected.get(0));
    assert_close(
        &format!("{arch} row 1 (left-padded)"),
        &logits.get(1).narrow(0, pad, t - pad),
        &expected.get(1).narrow(0, pad, t - pad),
    );

    // 2. Greedy decoding through the cache gives transformers' tokens, and every cached step's
    //    logits equal transformers' full pass over the whole sequence.
    let greedy = get(&refs, "greedy");
    let full = get(&refs, "full_logits");
    let n = greedy.size()[0];
    let prompt = ids.get(0).unsqueeze(0);
    let mut cache = model.new_cache(1);
    let mut last = model
        .forward_last(&prompt, &mut cache, None)
        .unwrap()
        .get(0);
    let mut ours = Vec::new();
    for i in 0..n {
        assert_close(
            &format!("{arch} cached step {i}"),
            &last,
            &full.get(t - 1 + i),
        );
        let next = argmax(&last);
        ours.push(next);
        let step = Tensor::from_slice(&[next]).view([1, 1]);
        last = model.forward_last(&step, &mut cache, None).unwrap().get(0);
    }
    let theirs: Vec<i64> = Vec::try_from(&greedy).unwrap();
    assert_eq!(ours, theirs, "{arch}: greedy continuation");

    // 3. Our own full pass over the whole sequence equals our cached steps (and transformers).
    let whole = Tensor::cat(&[prompt, greedy.unsqueeze(0)], 1);
    let mut cache = model.new_cache(1);
    let ours_full = model.forward(&whole, &mut cache, None).unwrap().get(0);
    assert_close(&format!("{arch} full pass"), &ours_full, &full);
    if let Some(w) = sliding {
        assert!(
            whole.size()[1] > 2 * w as i64,
            "{arch}: the test must pass the window"
        );
    }

    // 4. The packed CPU form refuses what it does not implement, and `InferenceModel` then
    //    stays dense (and right) instead of computing another model.
    let reason = PackedLlama::unsupported(config);
    let packable = reason.is_none();
    if !packable {
        let err = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Dense).unwrap_err();
        assert!(err.to_string().contains("dense"), "{arch}: {err}");
    }
    let (loaded, _) =
        InferenceModel::load(&dir, Kind::Float, Device::Cpu, Some(WeightFormat::Dense)).unwrap();
    assert_eq!(loaded.is_packed(), packable, "{arch}");
    let mut cache = loaded.new_cache(1);
    let logits = loaded.forward(&whole, &mut cache, None).unwrap().get(0);
    // Packed f32 multiplies in another order: a looser bound there.
    let scale = max_abs(&full).max(1.0);
    assert!(
        max_abs(&(&logits - &full)) <= 1e-3 * scale,
        "{arch}: inference model"
    );
}

#[test]
fn llama2_mha_matches_transformers() {
    check("llama2", Family::Llama, None);
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check("llama3", Family::Llama, None);
}

#[test]
fn mistral_sliding_window_matches_transformers() {
    check("mistral", Family::Mistral, Some(7));
}

#[test]
fn qwen2_biases_match_transformers() {
    check("qwen2", Family::Qwen2, None);
}

#[test]
fn gemma_matches_transformers() {
    check("gemma", Family::Gemma, None);
}

#[test]
fn gemma2_matches_transformers() {
    check("gemma2", Family::Gemma2, Some(6));
}

#[test]
fn bin_only_folders_name_the_convert_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not read").unwrap();
    let err = Llama::load(dir.path(), Kind::Float, Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("pytorch_model.bin"), "{text}");
    assert!(text.contains("cargo xtask convert"), "{text}");
}

#[test]
fn unknown_activations_and_model_types_are_config_errors() {
    for (field, json) in [
        ("hidden_act", r#""hidden_act": "relu""#),
        (
            "hidden_activation",
            r#""model_type": "gemma2", "hidden_activation": "gelu_new""#,
        ),
        ("model_type", r#""model_type": "falcon""#),
        (
            "layer_types",
            r#""sliding_window": 4, "layer_types": ["chunked_attention"]"#,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            format!(
                r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                    "num_hidden_layers": 1, "num_attention_heads": 2, {json}}}"#
            ),
        )
        .unwrap();
        let err = aligner_model::Config::from_file(&path).unwrap_err();
        assert!(matches!(err, aligner_model::Error::Config { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("config.json") && text.contains(field),
            "{text}"
        );
    }
}
