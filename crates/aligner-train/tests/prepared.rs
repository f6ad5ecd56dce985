//! Training from a folder `cargo xtask prepare` writes, and the identity warm-up kept first.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::str::FromStr;

use aligner_data::{DatasetInput, Encoder, MixOptions, PrepareOptions, Registry, prepare};
use aligner_train::data::{PreparedData, load_prepared};
use aligner_train::{Batch, Error, Trainer};
use tokenizers::Tokenizer;

/// `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3, then a few words; every id is in the tiny model's
/// vocabulary (words outside it become `<unk>`).
fn tokenizer() -> Tokenizer {
    let words = [
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "what",
        "is",
        "a",
        "cat",
        "dog",
        "?",
        ".",
        "it",
        "the",
        "Question",
        "Answer",
        "Correction",
        "USER",
        "ASSISTANT",
        ":",
        "##",
    ];
    assert!(words.len() <= common::VOCAB);
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| ((*w).to_owned(), serde_json::Value::from(i)))
        .collect();
    let added: Vec<_> = (0..4)
        .map(|i| {
            serde_json::json!({"id": i, "content": words[i], "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tokenizer::from_str(&json.to_string()).unwrap()
}

/// Prepares 4 correction rows plus 4 identity rows (placed first) into `out`, 3 rows a shard.
fn prepare_tiny(dir: &Path, out: &Path) {
    let data = dir.join("rows.jsonl");
    let rows = [
        ("what is a cat ?", "a dog .", "a cat is a cat ."),
        ("what is a dog ?", "it is a cat .", "a dog ."),
        ("what is it ?", "the cat .", "it is the dog ."),
        ("what is the dog ?", "a cat .", "the dog is a dog ."),
    ];
    let jsonl: String = rows
        .iter()
        .map(|(q, a, c)| {
            serde_json::json!({"question": q, "answer": a, "correction": c}).to_string() + "\n"
        })
        .collect();
    std::fs::write(&data, jsonl).unwrap();
    let registry = Registry::with_builtins();
    let input =
        DatasetInput::parse(&format!("correction-json::{}", data.display()), &registry).unwrap();
    let encoder = Encoder::new(tokenizer(), Some(1), 2, true, 48).unwrap();
    let options = PrepareOptions {
        rows_per_shard: 3,
        mix: MixOptions {
            identity_share: Some(0.5),
            ..Default::default()
        },
        ..Default::default()
    };
    let manifest = prepare(&[input], out, &encoder, &registry, &options, &|_| {}).unwrap();
    assert_eq!((manifest.rows, manifest.identity_rows), (8, 4));
}

/// The rows of a batch, without their padding.
fn batch_rows(batch: &Batch) -> Vec<Vec<i64>> {
    let t = batch.seq_len();
    (0..batch.batch_size())
        .map(|r| {
            let n = batch.attention_mask[r * t..(r + 1) * t].iter().sum::<i64>() as usize;
            batch.input_ids[r * t..r * t + n].to_vec()
        })
        .collect()
}

#[test]
fn a_prepared_folder_trains_with_its_identity_rows_first() {
    let _lock = common::lock();
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    prepare_tiny(dir.path(), &shards);
    let PreparedData {
        data,
        warmup_rows,
        manifest,
    } = load_prepared(&shards).unwrap();
    assert_eq!((data.train.len(), warmup_rows), (8, 4));
    assert_eq!(data.pad_id, i64::from(manifest.pad_id));
    assert!(data.eval.is_empty());
    let identity: Vec<Vec<i64>> = data.train[..4]
        .iter()
        .map(|r| r.input_ids.clone())
        .collect();

    let mut config = common::quick_config();
    config.data.micro_batch_size = 2;
    config.data.warmup_rows = warmup_rows;
    config.data.epochs = 2;
    let (model, vs) = common::tiny_model(3);
    let mut trainer = Trainer::new(
        model,
        vs,
        config.clone(),
        data.clone(),
        dir.path().join("run"),
    )
    .unwrap();
    // 4 steps an epoch: the first two take exactly the identity rows.
    let first: Vec<Vec<i64>> = (0..2)
        .flat_map(|s| trainer.step_batches(s).unwrap())
        .flat_map(|b| batch_rows(&b))
        .collect();
    let mut sorted = first.clone();
    sorted.sort();
    let mut want = identity.clone();
    want.sort();
    assert_eq!(sorted, want, "the first epoch starts with the warm-up");
    // The second epoch shuffles all rows together, as without a warm-up phase.
    let mut plain = config.clone();
    plain.data.warmup_rows = 0;
    let (model, vs) = common::tiny_model(3);
    let without = Trainer::new(model, vs, plain, data, dir.path().join("plain")).unwrap();
    for step in 4..8 {
        assert_eq!(
            trainer.step_batches(step).unwrap(),
            without.step_batches(step).unwrap()
        );
    }
    assert_ne!(
        (0..2)
            .flat_map(|s| without.step_batches(s).unwrap())
            .flat_map(|b| batch_rows(&b))
            .collect::<Vec<_>>(),
        first,
        "this seed's plain shuffle does not start with the identity rows by chance"
    );

    let summary = trainer.train_until(1).unwrap();
    assert_eq!(summary.step, 1);
    assert!(summary.last_loss.is_some_and(f64::is_finite), "{summary:?}");
}

#[test]
fn a_missing_or_broken_prepared_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Dataset(aligner_data::Error::File(aligner_data::FileError::Io { path, .. }))
            if path.ends_with("manifest.json")),
        "{err}"
    );
    prepare_tiny(dir.path(), dir.path());
    let shard = dir.path().join("shard-00002.safetensors");
    std::fs::write(&shard, b"truncated").unwrap();
    let err = load_prepared(dir.path()).unwrap_err();
    assert!(err.to_string().contains("shard-00002.safetensors"), "{err}");
    assert!(matches!(
        err,
        Error::Dataset(aligner_data::Error::Safetensors { .. })
    ));
    // More warm-up rows than rows is a data error, not a panic.
    let (model, vs) = common::tiny_model(3);
    let mut config = common::quick_config();
    config.data.warmup_rows = 5;
    let data = common::data(4, 0);
    assert!(matches!(
        Trainer::new(model, vs, config, data, dir.path().join("run")),
        Err(Error::Data(_))
    ));
}

#[test]
fn packed_epochs_visit_every_row_once_with_the_warm_up_first() {
    let _lock = common::lock();
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    prepare_tiny(dir.path(), &shards);
    let prepared = load_prepared(&shards).unwrap();
    let mut config = common::quick_config();
    config.data.pack = true;
    // Rows are at most 48 tokens (the encoder's limit): several fit a pack.
    config.data.max_length = 120;
    config.data.micro_batch_size = 1;
    config.data.warmup_rows = prepared.warmup_rows;
    let data = prepared.data;
    let all: Vec<Vec<i64>> = data.train.iter().map(|r| r.input_ids.clone()).collect();
    let (model, vs) = common::tiny_model(3);
    let mut trainer = Trainer::new(model, vs, config, data, dir.path().join("run")).unwrap();
    let steps = trainer.total_steps() / 3;
    assert!(steps < all.len(), "rows share packs");
    for epoch in 0..3 {
        let batches: Vec<Batch> = (epoch * steps..(epoch + 1) * steps)
            .flat_map(|s| trainer.step_batches(s).unwrap())
            .collect();
        assert!(batches.iter().all(|b| b.sequence_ids.is_some()));
        // The rows of a packed batch row, split at its sequence ids.
        let mut seen: Vec<Vec<i64>> = Vec::new();
        for b in &batches {
            let (t, seq) = (b.seq_len(), b.sequence_ids.as_ref().unwrap());
            for r in 0..b.batch_size() {
                for s in 0.. {
                    let row: Vec<i64> = (r * t..(r + 1) * t)
                        .filter(|&p| seq[p] == s)
                        .map(|p| b.input_ids[p])
                        .collect();
                    if row.is_empty() {
                        break;
                    }
                    seen.push(row);
                }
            }
        }
        if epoch == 0 {
            let mut first: Vec<Vec<i64>> = seen[..4].to_vec();
            first.sort();
            let mut identity = all[..4].to_vec();
            identity.sort();
            assert_eq!(first, identity, "the warm-up packs come first");
        }
        seen.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(seen, want, "epoch {epoch}");
    }
    let summary = trainer.train_until(2).unwrap();
    assert!(summary.last_loss.is_some_and(f64::is_finite), "{summary:?}");
}
