//! A tiny word-level tokenizer built in code for tests (no downloads).

use std::str::FromStr;

use tokenizers::Tokenizer;

/// Special tokens `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3, then `words`
/// from id 4; whitespace/punctuation pre-tokenizer; optional post-processor
/// adding `<s>`.
pub(crate) fn word_level(words: &[&str], post_adds_bos: bool) -> Tokenizer {
    let specials = ["<unk>", "<s>", "</s>", "<pad>"];
    let mut vocab = serde_json::Map::new();
    for (i, w) in specials.iter().chain(words).enumerate() {
        vocab.insert((*w).to_owned(), serde_json::Value::from(i));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let post = if post_adds_bos {
        serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})
    } else {
        serde_json::Value::Null
    };
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": post, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tokenizer::from_str(&json.to_string()).expect("valid test tokenizer")
}
