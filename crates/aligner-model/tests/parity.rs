//! Numerical parity with the reference implementations on the real default model:
//! Hugging Face transformers for logits, greedy decoding and tokenisation, and the `gguf`
//! package for dequantisation. The reference side runs `tests/reference/hf_reference.py`.

#![allow(clippy::unwrap_used)]

mod common;

use aligner_model::generate::{GenerationConfig, generate};
use aligner_model::gguf::{GgmlType, GgufFile, dequantize_bytes};
use aligner_model::tokenizer::tokenizer_from_gguf;
use aligner_model::{CausalLm, Llama, ModelTokenizer};
use common::*;
use tch::{Device, Kind, Tensor};

/// Largest tolerated absolute logit difference in f32. Logits of this model span about ±30;
/// both sides run the same LibTorch kernels, so differences come only from operation order.
const LOGIT_TOLERANCE: f32 = 1e-3;

fn prompts(tokenizer: &ModelTokenizer) -> Vec<Vec<u32>> {
    [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "The quick brown fox jumps over the lazy dog. In 1969, 3.14 people",
        "def fibonacci(n):\n    if n < 2:\n        return n\n",
        "Безопасность важна. 安全很重要。 Emoji 😀 test!",
    ]
    .iter()
    .map(|p| tokenizer.encode(p, true).unwrap())
    .collect()
}

#[test]
fn logits_match_transformers_in_f32() {
    let dir = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompts = prompts(&tokenizer);
    let ids = write_json(tmp.path(), "prompts.json", &prompts);
    let out = tmp.path().join("logits.safetensors");
    reference(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--prompts",
        &ids,
        "--out",
        out.to_str().unwrap(),
    ]);

    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    for (i, p) in prompts.iter().enumerate() {
        let input =
            Tensor::from_slice(&p.iter().map(|&t| i64::from(t)).collect::<Vec<_>>()).unsqueeze(0);
        let mut cache = model.new_cache(1);
        let ours: Vec<f32> = model
            .forward(&input, &mut cache, None)
            .unwrap()
            .flatten(0, -1)
            .try_into()
            .unwrap();
        let theirs = read_f32(&out, &format!("logits_{i}"));
        let diff = max_abs_diff(&ours, &theirs);
        eprintln!(
            "prompt {i}: {} positions, max |Δlogit| = {diff:.2e}",
            p.len()
        );
        assert!(diff <= LOGIT_TOLERANCE, "prompt {i}: max |Δlogit| = {diff}");
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    let dir = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompts = prompts(&tokenizer);
    let ids = write_json(tmp.path(), "prompts.json", &prompts);
    let out = tmp.path().join("greedy.json");
    reference(&[
        "greedy",
        "--model",
        dir.to_str().unwrap(),
        "--prompts",
        &ids,
        "--new",
        "40",
        "--out",
        out.to_str().unwrap(),
    ]);
    let theirs: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 40,
        ..GenerationConfig::default()
    };
    for (p, theirs) in prompts.iter().zip(&theirs) {
        let ours = generate(
            &model,
            &tokenizer,
            std::slice::from_ref(p),
            &config,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(
            &ours.generations[0].token_ids,
            theirs,
            "prompt {:?}",
            tokenizer.decode(p, false).unwrap()
        );
    }
    // The same prompts as one left-padded batch give the same continuations.
    let batch = generate(&model, &tokenizer, &prompts, &config, |_, _| {}).unwrap();
    for (ours, theirs) in batch.generations.iter().zip(&theirs) {
        assert_eq!(&ours.token_ids, theirs);
    }
}

#[test]
fn tokenizer_ids_match_transformers_gguf_tokenizer() {
    let gguf = gguf_path();
    let texts = [
        "Hello world! 1234567890 and 3.14159, 1,000,000.",
        "fn main() {\n    println!(\"{}\", x + 42);\n}\n\t\ttabs  and   spaces",
        "Emoji: 😀🎉👩‍👩‍👧 and ❤️",
        "Русский текст, 中文文本, 日本語のテキスト, العربية, हिन्दी, 한국어",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "  leading spaces and trailing  \n\n\n",
        "I'm sure they'll've done it; isn't it?",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let input = write_json(tmp.path(), "texts.json", &texts);
    let out = tmp.path().join("ids.json");
    reference(&[
        "tokenize",
        "--gguf",
        gguf.to_str().unwrap(),
        "--texts",
        &input,
        "--out",
        out.to_str().unwrap(),
    ]);
    let theirs: Vec<Vec<u32>> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    let file = GgufFile::open(&gguf).unwrap();
    let (built, _) = tokenizer_from_gguf(&file).unwrap();
    let saved = ModelTokenizer::from_dir(model_dir()).unwrap();
    for (text, theirs) in texts.iter().zip(&theirs) {
        let ours = built.encode(*text, false).unwrap().get_ids().to_vec();
        assert_eq!(&ours, theirs, "text {text:?}");
        assert_eq!(
            &saved.encode(text, false).unwrap(),
            theirs,
            "saved tokenizer.json, text {text:?}"
        );
        assert_eq!(saved.decode(&ours, false).unwrap(), *text, "round trip");
    }
}

#[test]
fn gguf_dequantisation_matches_gguf_package() {
    let gguf = gguf_path();
    let file = GgufFile::open(&gguf).unwrap();
    // One tensor of every storage type in the file, plus a whole layer.
    let names: Vec<&str> = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| {
            n.starts_with("blk.0.") || *n == "token_embd.weight" || *n == "output_norm.weight"
        })
        .collect();
    let types: std::collections::HashSet<_> = names
        .iter()
        .map(|n| file.tensor_info(n).unwrap().ggml_type)
        .collect();
    assert!(
        types.contains(&GgmlType::Q4_1)
            && types.contains(&GgmlType::Q8_0)
            && types.contains(&GgmlType::F32)
    );
    let tmp = tempfile::tempdir().unwrap();
    let list = write_json(tmp.path(), "names.json", &names);
    let out = tmp.path().join("deq.safetensors");
    reference(&[
        "dequant",
        "--gguf",
        gguf.to_str().unwrap(),
        "--names",
        &list,
        "--out",
        out.to_str().unwrap(),
    ]);
    for name in names {
        let ours = file.dequantize(name).unwrap();
        let theirs = read_f32(&out, name);
        assert_eq!(ours, theirs, "tensor {name}");
    }
}

#[test]
fn every_quant_type_matches_gguf_package_on_random_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("quants.safetensors");
    reference(&["quants", "--out", out.to_str().unwrap()]);
    let types = [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_K", GgmlType::Q4_K),
        ("Q5_K", GgmlType::Q5_K),
        ("Q6_K", GgmlType::Q6_K),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::BF16),
    ];
    for (name, ty) in types {
        let raw = read_u8(&out, &format!("raw_{name}"));
        let ours = dequantize_bytes(ty, &raw).unwrap();
        let theirs = read_f32(&out, &format!("deq_{name}"));
        // Both compute in f32; k-quants multiply scale products in a different order.
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = max_abs_diff(&ours, &theirs);
        assert!(
            diff <= scale * 1e-6,
            "{name}: max diff {diff} (scale {scale})"
        );
    }
}

#[test]
fn import_equals_transformers_own_gguf_loading() {
    let dir = model_dir();
    let gguf = gguf_path();
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let prompts = &prompts(&tokenizer)[..2];
    let ids = write_json(tmp.path(), "prompts.json", &prompts);
    let theirs = tmp.path().join("gguf.safetensors");
    let ours = tmp.path().join("imported.safetensors");
    reference(&[
        "gguf-logits",
        "--gguf",
        gguf.to_str().unwrap(),
        "--prompts",
        &ids,
        "--out",
        theirs.to_str().unwrap(),
    ]);
    reference(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--prompts",
        &ids,
        "--out",
        ours.to_str().unwrap(),
    ]);
    for i in 0..prompts.len() {
        let name = format!("logits_{i}");
        assert_eq!(
            read_f32(&ours, &name),
            read_f32(&theirs, &name),
            "prompt {i}"
        );
    }
}
