use super::test_tokenizer::word_level;
use super::*;
use crate::template::TokenizerConfig;

const WORDS: &[&str] = &["what", "is", "it", "a", "cat", "dog", "?", "."];

fn ex(p: &str, t: &str) -> Example {
    Example {
        prompt: p.into(),
        target: t.into(),
    }
}

#[test]
fn labels_mask_prompt_token_by_token() {
    let enc = Encoder::new(word_level(WORDS, false), Some(1), 2, true, 64).unwrap();
    let e = enc.encode(&ex("what is it ?", "a cat .")).unwrap();
    // <s> what is it ? | a cat . </s>
    assert_eq!(e.input_ids, vec![1, 4, 5, 6, 10, 7, 8, 11, 2]);
    assert_eq!(e.labels, vec![-100, -100, -100, -100, -100, 7, 8, 11, 2]);
    assert_eq!(e.prompt_len, 5);
    assert_eq!(e.trained_tokens(), 4);
    assert_eq!(e.truncated_tokens, 0);
}

#[test]
fn no_bos_and_empty_target_still_trains_eos() {
    let enc = Encoder::new(word_level(WORDS, false), Some(1), 2, false, 64).unwrap();
    let e = enc.encode(&ex("what", "")).unwrap();
    assert_eq!(e.input_ids, vec![4, 2]);
    assert_eq!(e.labels, vec![-100, 2]);
}

#[test]
fn eos_equal_to_pad_stays_trained() {
    let enc = Encoder::new(word_level(WORDS, false), None, 3, false, 64)
        .unwrap()
        .with_pad_id(3);
    let e = enc.encode(&ex("what", "cat")).unwrap();
    assert_eq!(e.labels, vec![-100, 8, 3]);
    assert_eq!(enc.pad_id(), enc.eos_id());
}

#[test]
fn truncation_keeps_start_and_reports() {
    let enc = Encoder::new(word_level(WORDS, false), Some(1), 2, true, 6).unwrap();
    let e = enc.encode(&ex("what is", "a cat . dog")).unwrap();
    // full: <s> what is a cat . dog </s> = 8 -> 6
    assert_eq!(e.input_ids, vec![1, 4, 5, 7, 8, 11]);
    assert_eq!(e.labels, vec![-100, -100, -100, 7, 8, 11]);
    assert_eq!(e.truncated_tokens, 2);

    let (out, stats) = enc
        .encode_all(&[
            ex("what is it a cat dog", "cat"),
            ex("what is", "a cat . dog"),
            ex("it", "a"),
        ])
        .unwrap();
    assert!(out[0].is_none());
    assert_eq!(
        stats.dropped,
        vec![DroppedExample {
            index: 0,
            reason: DropReason::TargetTruncatedAway,
            full_length: 9
        }]
    );
    assert_eq!(stats.kept, 2);
    assert_eq!(stats.truncated_examples, 1);
    assert_eq!(stats.truncated_tokens, 2);
    assert_eq!(stats.target_tokens, 3 + 2);
}

#[test]
fn bos_policy_from_config() {
    let cfg = TokenizerConfig::from_json(
        r#"{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}"#,
    )
    .unwrap();
    let enc = Encoder::from_config(word_level(WORDS, false), &cfg.special, 16).unwrap();
    assert!(enc.adds_bos());
    assert_eq!(enc.pad_id(), 2);
    // No add_bos_token, but the post-processor adds <s> (Llama-3 style).
    let cfg = TokenizerConfig::from_json(
        r#"{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}"#,
    )
    .unwrap();
    let enc = Encoder::from_config(word_level(WORDS, true), &cfg.special, 16).unwrap();
    assert!(enc.adds_bos());
    assert_eq!(enc.pad_id(), 3);
    // Exactly one BOS even though the post-processor would add one too.
    assert_eq!(
        enc.encode(&ex("it", "a")).unwrap().input_ids,
        vec![1, 6, 7, 2]
    );
    let enc = Encoder::from_config(word_level(WORDS, false), &cfg.special, 16).unwrap();
    assert!(!enc.adds_bos());
    let cfg = TokenizerConfig::from_json(r#"{"eos_token": "<|eot|>"}"#).unwrap();
    assert!(matches!(
        Encoder::from_config(word_level(WORDS, false), &cfg.special, 16),
        Err(Error::UnknownToken { role: "eos", .. })
    ));
    assert!(Encoder::new(word_level(WORDS, false), None, 2, false, 0).is_err());
}

#[test]
fn adds_only_missing_special_tokens() {
    let mut tok = word_level(WORDS, false);
    let before = tok.get_vocab_size(true) as u32;
    let added = add_missing_special_tokens(
        &mut tok,
        &[
            "</s>",
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_turn>",
        ],
    );
    assert_eq!(
        added,
        vec![
            ("<start_of_turn>".to_owned(), before),
            ("<end_of_turn>".to_owned(), before + 1)
        ]
    );
    let enc = tok.encode("<start_of_turn>what", false).unwrap();
    assert_eq!(enc.get_ids(), &[before, 4]);
    assert!(add_missing_special_tokens(&mut tok, &["<start_of_turn>"]).is_empty());
}
