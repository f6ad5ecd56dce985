//! Tokenizers in the styles of the published aligners' base models, built by the tests with the
//! `tokenizers` library and saved by transformers (`tests/reference/styled_tokenizers.py`):
//! Llama-2 and Gemma (SentencePiece-style BPE with `▁` and byte fallback) and byte-level BPE
//! with and without BOS (Llama-3, Qwen2). Each must encode and decode as transformers does,
//! round-trip its texts, stream byte-fallback characters whole, and give a templated prompt
//! exactly one BOS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aligner_model::ModelTokenizer;
use aligner_model::generate::TextStream;
use serde_json::Value;

/// Builds the `style` tokenizer with the reference script into a fresh temporary folder.
fn make(style: &str) -> (tempfile::TempDir, Value) {
    let dir =
        common::script_into_tempdir(&common::reference_script("styled_tokenizers.py"), &[style]);
    let reference = std::fs::read(dir.path().join("tokenizer_reference.json")).unwrap();
    let reference = serde_json::from_slice(&reference).unwrap();
    (dir, reference)
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

fn check(style: &str, adds_bos: bool) {
    let (dir, reference) = make(style);
    let tokenizer = ModelTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tokenizer.bos_id(), Some(1), "{style}: BOS");
    assert_eq!(tokenizer.eos_ids(), [2], "{style}: EOS");
    for case in reference["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let with_special = ids(&case["ids"]);
        let plain = ids(&case["plain"]);
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            with_special,
            "{style}: ids of {text:?} with special tokens"
        );
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            plain,
            "{style}: ids of {text:?}"
        );
        // A prompt gets BOS exactly when the model expects it, as in training.
        assert_eq!(
            tokenizer.encode_prompt(text).unwrap(),
            if adds_bos {
                with_special.clone()
            } else {
                plain.clone()
            },
            "{style}: prompt ids of {text:?}"
        );
        let decoded = tokenizer.decode(&plain, true).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "{style}: decode"
        );
        assert_eq!(decoded, text, "{style}: {text:?} round-trips");
        // Streamed one token at a time, byte-fallback pieces come out as whole characters.
        let mut stream = TextStream::new(tokenizer.clone());
        let mut streamed = String::new();
        for &id in &plain {
            let delta = stream.push(id).unwrap();
            assert!(
                !delta.contains('\u{fffd}'),
                "{style}: half a character in {delta:?}"
            );
            streamed.push_str(&delta);
        }
        streamed.push_str(&stream.flush().unwrap());
        assert_eq!(streamed, decoded, "{style}: streamed decode of {text:?}");
    }
    if let Some(chat) = reference.get("chat") {
        // The template writes BOS itself (`{{ bos_token }}`); the prompt must not get another.
        let template = tokenizer.chat_template().unwrap().expect("a chat template");
        let text = template
            .render(
                &[aligner_model::chat::ChatMessage::user("What is 2 + 2?")],
                true,
            )
            .unwrap();
        assert_eq!(text, chat["text"].as_str().unwrap(), "{style}: template");
        assert_eq!(
            tokenizer.encode_prompt(&text).unwrap(),
            ids(&chat["ids"]),
            "{style}: templated prompt ids (one BOS)"
        );
    }
}

#[test]
fn llama2_style_sentencepiece_bpe_with_byte_fallback() {
    check("llama2", true);
}

#[test]
fn gemma_style_sentencepiece_bpe_with_its_chat_template() {
    check("gemma", true);
}

#[test]
fn byte_level_bpe_without_bos() {
    check("byte-level", false);
}

#[test]
fn byte_level_bpe_with_bos_from_the_post_processor() {
    check("byte-level-bos", true);
}
