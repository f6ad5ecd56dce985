//! Golden strings: every template pinned byte for byte.

use super::*;

#[test]
fn aligner_wrapper() {
    assert_eq!(
        aligner_prompt("hi"),
        "BEGINNING OF CONVERSATION: USER: hi ASSISTANT:"
    );
    assert_eq!(PROMPT_ASSISTANT, "ASSISTANT:");
}

#[test]
fn current_correction_prompt_has_two_spaces_before_assistant() {
    assert_eq!(
        correction_instruction("Q?", "A."),
        "##Question: Q?\n##Answer: A.\n##Correction: "
    );
    assert_eq!(
        correction_prompt("Q?", "A."),
        "BEGINNING OF CONVERSATION: USER: ##Question: Q?\n##Answer: A.\n##Correction:  ASSISTANT:"
    );
}

#[test]
fn released_v1_and_empathy_prompts() {
    assert_eq!(
        correction_prompt_v1("How?", "Like so."),
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and harmless: How? | Like so. ASSISTANT:"
    );
    assert_eq!(
        empathy_prompt("How?", "Like so."),
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more empathic and helpful: How? | Like so. ASSISTANT:"
    );
}

#[test]
fn values_with_braces_are_not_reexpanded() {
    assert_eq!(
        correction_instruction("{answer}", "{question} {x}"),
        "##Question: {answer}\n##Answer: {question} {x}\n##Correction: "
    );
}

#[test]
fn stream_instruction_and_gemma_wrapper() {
    let input = stream_instruction("Q", "P1. P2.", "L.");
    assert_eq!(
        input,
        "##Question: Q | ##Answer_Prefix: P1. P2. | ##Answer_Last_Sentence: L. | ##Your_Revision: "
    );
    assert_eq!(
        gemma_training_text(&input, "C."),
        "<bos><start_of_turn>user\n##Question: Q | ##Answer_Prefix: P1. P2. | ##Answer_Last_Sentence: L. | ##Your_Revision: <end_of_turn>\n<start_of_turn>modelC.<eos>"
    );
    assert_eq!(
        format!("<bos>{}C.<eos>", gemma_prompt(&input)),
        gemma_training_text(&input, "C.")
    );
}

#[test]
fn upstream_formats() {
    assert_eq!(
        UpstreamChat::Llama3.render("S", "U", "C"),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>C"
    );
    assert_eq!(
        UpstreamChat::Llama2.render("S", "U", "C"),
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]\nC"
    );
    assert_eq!(
        UpstreamChat::Qwen.render("S", "U", "C"),
        "<|im_start|>system\nS<|im_end|><|im_start|>user\nU<|im_end|>\n<|im_start|>assistantC"
    );
    assert_eq!(
        UpstreamChat::Gemma.render("S", "U", "C"),
        "<bos><start_of_turn>user\nU<end_of_turn>\n<start_of_turn>modelC"
    );
}

#[test]
fn system_prompts() {
    assert_eq!(DEFAULT_SYSTEM_PROMPT, "You are a helpful assistant.");
    assert_eq!(
        MATH_SYSTEM_PROMPT,
        "You are a helpful AI assistant for solving mathematical problems. Output your reasoning process before reaching the result."
    );
}

/// The SmolLM2 chat template, as in its `tokenizer_config.json` (the `\n`
/// below are the two characters backslash-n inside Jinja string literals).
const SMOLLM2: &str = r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn smollm2_chat_template() {
    let cfg_json = serde_json::json!({
        "chat_template": SMOLLM2,
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "lstrip": false},
        "add_bos_token": false,
    })
    .to_string();
    let cfg = TokenizerConfig::from_json(&cfg_json).unwrap();
    assert_eq!(cfg.special.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(!cfg.special.add_bos_token);
    let t = ChatTemplate::from_config(&cfg).unwrap();
    assert_eq!(
        t.render(&[Message::user("Hi")], true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(
            &[
                Message::system("S"),
                Message::user("U"),
                Message::assistant("A")
            ],
            false
        )
        .unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    );
    assert_eq!(
        t.prompt_for(Some("S"), "U").unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn named_templates_strip_raise_and_bos() {
    let cfg_json = serde_json::json!({
        "chat_template": [
            {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}[{{ m.content.strip() }}]{% endfor %}"},
            {"name": "tool_use", "template": "{{ messages | length }}{{ {'a': '<b>'} | tojson }}"}
        ],
        "bos_token": "<s>",
        "add_bos_token": true,
    })
    .to_string();
    let cfg = TokenizerConfig::from_json(&cfg_json).unwrap();
    assert!(cfg.special.add_bos_token);
    let t = ChatTemplate::from_config(&cfg).unwrap();
    assert_eq!(
        t.render(&[Message::user("  x \n")], false).unwrap(),
        "<s>[x]"
    );
    let err = t.render(&[Message::system("s")], false).unwrap_err();
    assert!(err.to_string().contains("no system"), "{err}");
    let tool = ChatTemplate::from_config_named(&cfg, "tool_use").unwrap();
    assert_eq!(
        tool.render(&[Message::user("a")], false).unwrap(),
        r#"1{"a":"<b>"}"#
    );
    assert!(ChatTemplate::from_config_named(&cfg, "nope").is_err());
}

#[test]
fn trim_and_lstrip_blocks_like_transformers() {
    let t = ChatTemplate::new("{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}", None, None).unwrap();
    assert_eq!(
        t.render(&[Message::user("a"), Message::user("b")], false)
            .unwrap(),
        "a\nb\n"
    );
}

#[test]
fn bad_template_is_an_error_not_a_panic() {
    assert!(matches!(
        ChatTemplate::new("{% for %}", None, None),
        Err(crate::Error::Template(_))
    ));
    assert!(TokenizerConfig::from_json("{not json").is_err());
    assert!(ChatTemplate::from_config(&TokenizerConfig::from_json("{}").unwrap()).is_err());
}
