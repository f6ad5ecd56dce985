//! The examples on tiny random-weight models that transformers builds and saves
//! (`tests/reference/tiny_model.py`): `generate --model-dir` gives transformers' greedy text
//! for every supported architecture, each with a tokenizer in its family's style.
//!
//! The examples are run as the programs they are: the binaries `cargo test` builds beside the
//! test binaries (`target/<profile>/examples`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{example, tiny_model};

fn generate_matches_transformers(arch: &str) {
    let (dir, greedy) = tiny_model(arch);
    let out = Command::new(example("generate"))
        .args(["--model-dir"])
        .arg(dir.path())
        .args([
            "--greedy",
            "--no-chat-template",
            "--quiet",
            "--device",
            "cpu",
            // The model's own f32 weights: transformers' side is f32 too (the CPU default,
            // int4 blocks with 8-bit activations, is checked against llama.cpp elsewhere).
            "--weights",
            "dense",
            "--max-new-tokens",
        ])
        .arg(greedy["max_new_tokens"].to_string())
        .arg(greedy["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate failed for {arch}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let expected = greedy["text"].as_str().unwrap();
    assert_eq!(
        printed.strip_suffix('\n').unwrap_or(&printed),
        expected,
        "{arch}: greedy text (transformers' ids {})",
        greedy["new_ids"]
    );
}

#[test]
fn generate_llama2_gives_transformers_greedy_text() {
    generate_matches_transformers("llama2");
}

#[test]
fn generate_llama3_gives_transformers_greedy_text() {
    generate_matches_transformers("llama3");
}

#[test]
fn generate_mistral_gives_transformers_greedy_text() {
    generate_matches_transformers("mistral");
}

#[test]
fn generate_qwen2_gives_transformers_greedy_text() {
    generate_matches_transformers("qwen2");
}

#[test]
fn generate_gemma_gives_transformers_greedy_text() {
    generate_matches_transformers("gemma");
}

#[test]
fn generate_gemma2_gives_transformers_greedy_text() {
    generate_matches_transformers("gemma2");
}
