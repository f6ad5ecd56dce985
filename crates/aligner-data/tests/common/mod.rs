//! Helpers shared by the integration tests: a word-level tokenizer built in
//! code and a Parquet writer (no downloads, no binary fixtures).
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::fs::File;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use tokenizers::Tokenizer;

/// `<unk>`=0, `<s>`=1, `</s>`=2, `<pad>`=3, then `words` from 4.
pub fn word_level(words: &[&str]) -> Tokenizer {
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
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    Tokenizer::from_str(&json.to_string()).expect("valid test tokenizer")
}

/// Words of the Aligner templates plus a few content words.
pub const WORDS: &[&str] = &[
    "BEGINNING",
    "OF",
    "CONVERSATION",
    ":",
    "USER",
    "##",
    "Question",
    "Answer",
    "Correction",
    "ASSISTANT",
    "what",
    "is",
    "a",
    "cat",
    "dog",
    "it",
    "?",
    ".",
    "the",
    "sky",
    "blue",
    "green",
    "sea",
];

/// Writes string columns (OPTIONAL BYTE_ARRAY UTF8; `None` = null) to a
/// snappy-compressed Parquet file, one row group.
pub fn write_parquet(path: &Path, columns: &[(&str, Vec<Option<Vec<u8>>>)]) {
    let fields: String = columns
        .iter()
        .map(|(name, _)| format!("OPTIONAL BYTE_ARRAY {name} (UTF8); "))
        .collect();
    let schema = Arc::new(parse_message_type(&format!("message rows {{ {fields}}}")).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let mut i = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        let values = &columns[i].1;
        let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
        let data: Vec<ByteArray> = values
            .iter()
            .flatten()
            .map(|v| ByteArray::from(v.clone()))
            .collect();
        col.typed::<ByteArrayType>()
            .write_batch(&data, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        i += 1;
    }
    rg.close().unwrap();
    writer.close().unwrap();
}

/// String rows to Parquet: one column per key of any row (null where a row
/// lacks it); values must be strings.
pub fn rows_to_parquet(path: &Path, rows: &[serde_json::Map<String, serde_json::Value>]) {
    let keys: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.keys().map(String::as_str))
        .collect();
    let columns: Vec<(&str, Vec<Option<Vec<u8>>>)> = keys
        .iter()
        .map(|k| {
            (
                *k,
                rows.iter()
                    .map(|r| {
                        r.get(*k)
                            .and_then(|v| v.as_str())
                            .map(|s| s.as_bytes().to_vec())
                    })
                    .collect(),
            )
        })
        .collect();
    write_parquet(path, &columns);
}
