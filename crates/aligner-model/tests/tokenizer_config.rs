//! `tokenizer_config.json` as models publish it, read through the workspace's one reader:
//! special tokens as AddedToken objects (Llama-2, Gemma), named template lists, and a
//! `chat_template.jinja` beside the file (recent transformers).
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

mod common;

use aligner_model::ModelTokenizer;
use aligner_model::chat::ChatMessage;

fn added(content: &str) -> serde_json::Value {
    serde_json::json!({
        "__type": "AddedToken", "content": content, "lstrip": false, "normalized": false,
        "rstrip": false, "single_word": false
    })
}

#[test]
fn added_token_objects_named_templates_and_a_jinja_file() {
    let reference = ModelTokenizer::from_dir(common::model_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::model_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let config = serde_json::json!({
        "add_bos_token": true,
        "bos_token": added("<|im_start|>"),
        "eos_token": added("<|im_end|>"),
        "unk_token": added("<|endoftext|>"),
        "model_max_length": 2048,
        "chat_template": [
            {"name": "default", "template": "{{ 'list default' }}"},
            {"name": "tool_use", "template": "{{ 'tools' }}"}
        ]
    });
    let config_path = dir.path().join("tokenizer_config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    // The named list's `default` entry is the template.
    let tokenizer = ModelTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tokenizer.bos_id(), reference.bos_id());
    assert_eq!(tokenizer.eos_ids(), reference.eos_ids());
    let c = tokenizer.config();
    assert!(c.add_bos_token);
    assert_eq!(c.unk_token.as_deref(), Some("<|endoftext|>"));
    assert_eq!(c.model_max_length, Some(2048));
    let messages = [ChatMessage::user("hi")];
    let template = tokenizer.chat_template().unwrap().unwrap();
    assert_eq!(template.render(&messages, false).unwrap(), "list default");

    // A chat_template.jinja beside the file wins, as in transformers.
    std::fs::write(dir.path().join("chat_template.jinja"), "{{ 'from jinja' }}").unwrap();
    let tokenizer = ModelTokenizer::from_dir(dir.path()).unwrap();
    let template = tokenizer.chat_template().unwrap().unwrap();
    assert_eq!(template.render(&messages, false).unwrap(), "from jinja");

    // A BOS token that the vocabulary lacks is an error naming the file.
    let mut bad = config.clone();
    bad["bos_token"] = added("<s>");
    std::fs::write(&config_path, bad.to_string()).unwrap();
    let err = ModelTokenizer::from_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("<s>") && err.contains("tokenizer.json"),
        "{err}"
    );
}
