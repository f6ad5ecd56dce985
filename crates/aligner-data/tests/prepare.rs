//! End to end: specs -> mix -> tokens -> shards + manifest.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aligner_data::batch::TokenizedRow;
use aligner_data::prepare::{Stage, read_prepared, read_shard};
use aligner_data::warmup::IdentityPlacement;
use aligner_data::{
    DatasetInput, DatasetSpec, Encoder, Error, FileError, IGNORE_INDEX, Manifest, MixOptions,
    PrepareOptions, Progress, ReadOptions, Record, Registry, prepare, read_rows,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn encoder(max_length: usize) -> Encoder {
    Encoder::new(
        common::word_level(common::WORDS),
        Some(1),
        2,
        true,
        max_length,
    )
    .unwrap()
}

fn run(input: &Path, out: &Path, options: &PrepareOptions) -> Manifest {
    let registry = Registry::with_builtins();
    let input = DatasetInput::parse(&input.display().to_string(), &registry).unwrap();
    prepare(&[input], out, &encoder(512), &registry, options, &|_| {}).unwrap()
}

#[test]
fn json_jsonl_and_parquet_give_byte_identical_shards() {
    let dir = tempfile::tempdir().unwrap();
    let rows = read_rows::<Record>(&fixture("correction.jsonl"), &ReadOptions::default())
        .unwrap()
        .rows;
    let pq = dir.path().join("c.parquet");
    common::rows_to_parquet(&pq, &rows);
    let opts = PrepareOptions {
        rows_per_shard: 3,
        ..Default::default()
    };
    let outs: Vec<PathBuf> = ["json", "jsonl", "parquet"]
        .iter()
        .map(|k| dir.path().join(k))
        .collect();
    let ms: Vec<Manifest> = [fixture("correction.json"), fixture("correction.jsonl"), pq]
        .iter()
        .zip(&outs)
        .map(|(input, out)| run(input, out, &opts))
        .collect();
    assert_eq!(ms[0].shards.len(), 2);
    for (m, out) in ms.iter().zip(&outs).skip(1) {
        assert_eq!(m.shards, ms[0].shards);
        for s in &m.shards {
            let a = std::fs::read(outs[0].join(&s.file)).unwrap();
            let b = std::fs::read(out.join(&s.file)).unwrap();
            assert_eq!(a, b, "{}", s.file);
        }
    }
    // Nothing left behind but shards and the manifest.
    let mut names: Vec<String> = std::fs::read_dir(&outs[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "manifest.json",
            "shard-00000.safetensors",
            "shard-00001.safetensors"
        ]
    );
}

#[test]
fn shards_hold_masked_rows_and_manifest_counts() {
    let dir = tempfile::tempdir().unwrap();
    let m = run(
        &fixture("correction.jsonl"),
        dir.path(),
        &PrepareOptions::default(),
    );
    assert_eq!(m.rows, 4);
    assert_eq!(Manifest::read(dir.path()).unwrap(), m);
    let (ids, labels, offsets) = read_shard(&dir.path().join(&m.shards[0].file)).unwrap();
    assert_eq!(offsets.len(), 5);
    assert_eq!(*offsets.last().unwrap() as usize, ids.len());
    assert_eq!(ids.len() as u64, m.tokens);
    // Row 0: "what is a cat ?" -> "a cat is a cat ." ; target = a cat is a cat . </s>
    let (s, e) = (offsets[0] as usize, offsets[1] as usize);
    let row_labels = &labels[s..e];
    let trained: Vec<i64> = row_labels
        .iter()
        .copied()
        .filter(|&l| l != IGNORE_INDEX)
        .collect();
    let w = |t: &str| 4 + common::WORDS.iter().position(|x| *x == t).unwrap() as i64;
    assert_eq!(
        trained,
        vec![w("a"), w("cat"), w("is"), w("a"), w("cat"), w("."), 2]
    );
    assert_eq!(ids[s], 1, "BOS first");
    assert_eq!(ids[e - 1], 2, "EOS last");
    // Labels are masked exactly up to the target.
    let first_label = row_labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
    assert!(row_labels[first_label..].iter().all(|&l| l != IGNORE_INDEX));
    assert_eq!(&ids[s + first_label..e], trained.as_slice());
    assert_eq!(
        m.stats.target_tokens,
        labels.iter().filter(|&&l| l != IGNORE_INDEX).count() as u64
    );
    assert_eq!(m.length_histogram.iter().map(|b| b.count).sum::<usize>(), 4);
    let json = std::fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    assert!(json.contains("\"length_histogram\""));
}

#[test]
fn truncation_drops_and_skips_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"what\", \"answer\": \"a\", \"correction\": \"a cat\"}\n\
         {\"question\": \"what\", \"answer\": 5, \"correction\": \"a\"}\n\
         {\"question\": \"what is the sky what is the sea what is a dog\", \"answer\": \"a\", \"correction\": \"a\"}\n",
    )
    .unwrap();
    let registry = Registry::with_builtins();
    let opts = PrepareOptions {
        mix: MixOptions {
            skip_bad_rows: true,
            ..Default::default()
        },
        ..Default::default()
    };
    // Prompt of row 1: <s> BEGINNING OF CONVERSATION : USER : ## Question : what ## Answer : a ## Correction : ASSISTANT : = 20 tokens.
    let m = prepare(
        &[DatasetInput::Path(data.clone())],
        &dir.path().join("o"),
        &encoder(22),
        &registry,
        &opts,
        &|_| {},
    )
    .unwrap();
    assert_eq!(m.rows, 1);
    assert_eq!(m.sources[0].skipped.len(), 1);
    assert_eq!(
        (
            m.sources[0].skipped[0].row,
            m.sources[0].skipped[0].field.as_deref()
        ),
        (2, Some("answer"))
    );
    assert_eq!(m.dropped.len(), 1);
    assert_eq!((m.dropped[0].source, m.dropped[0].row), (0, 3));
    assert_eq!(m.stats.truncated_examples, 1);
    assert_eq!(m.stats.truncated_tokens, 1);
    // Strict mode fails on row 2.
    let strict = PrepareOptions::default();
    let err = prepare(
        &[DatasetInput::Path(data)],
        &dir.path().join("s"),
        &encoder(22),
        &registry,
        &strict,
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::Field { row: 2, .. }), "{err}");
    assert!(!dir.path().join("s").join("manifest.json").exists());
}

#[test]
fn mixing_sampling_identity_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::with_builtins();
    let inputs = vec![
        DatasetInput::Spec(
            format!(
                "correction-json:2/-1:{}",
                fixture("correction.json").display()
            )
            .parse()
            .unwrap(),
        ),
        DatasetInput::Spec(DatasetSpec::new("correction-plus", fixture("stream.jsonl"))),
    ];
    let opts = PrepareOptions {
        mix: MixOptions {
            identity_share: Some(0.2),
            ..Default::default()
        },
        ..Default::default()
    };
    let seen = Mutex::new(Vec::new());
    let m = prepare(
        &inputs,
        dir.path(),
        &encoder(512),
        &registry,
        &opts,
        &|p: Progress| {
            seen.lock().unwrap().push(p);
        },
    )
    .unwrap();
    assert_eq!(m.sources[0].selected, 2);
    assert_eq!(m.sources[1].selected, 2);
    // 4 rows + round(0.2 * 4 / 0.8) = 1 identity row.
    assert_eq!((m.rows, m.identity_rows), (5, 1));
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.first().map(|p| p.stage), Some(Stage::Reading));
    let last = seen.last().unwrap();
    assert_eq!((last.stage, last.done, last.total), (Stage::Writing, 1, 1));
    assert!(
        seen.iter()
            .any(|p| p.stage == Stage::Tokenizing && p.done == 5 && p.total == 5)
    );

    let again = prepare(
        &inputs,
        &dir.path().join("again"),
        &encoder(512),
        &registry,
        &opts,
        &|_| {},
    )
    .unwrap();
    assert_eq!(again.shards, m.shards);
    let a = std::fs::read(dir.path().join(&m.shards[0].file)).unwrap();
    let b = std::fs::read(dir.path().join("again").join(&m.shards[0].file)).unwrap();
    assert_eq!(a, b, "same seed, same bytes");

    let bad = [DatasetInput::Spec(
        format!(
            "correction-json:9/-1:{}",
            fixture("correction.json").display()
        )
        .parse()
        .unwrap(),
    )];
    assert!(matches!(
        prepare(&bad, dir.path(), &encoder(512), &registry, &opts, &|_| {}),
        Err(Error::NotEnoughRows {
            requested: 9,
            available: 4,
            ..
        })
    ));
    let unknown = [DatasetInput::Spec("nope::x.json".parse().unwrap())];
    assert!(matches!(
        prepare(
            &unknown,
            dir.path(),
            &encoder(512),
            &registry,
            &opts,
            &|_| {}
        ),
        Err(Error::UnknownFormat { .. })
    ));
    let no_path = [DatasetInput::Spec("correction-json".parse().unwrap())];
    assert!(matches!(
        prepare(
            &no_path,
            dir.path(),
            &encoder(512),
            &registry,
            &opts,
            &|_| {}
        ),
        Err(Error::MissingPath { .. })
    ));
}

#[test]
fn a_prepared_folder_reads_back_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        rows_per_shard: 3,
        mix: MixOptions {
            identity_share: Some(0.5),
            ..Default::default()
        },
        ..Default::default()
    };
    let m = run(&fixture("correction.jsonl"), dir.path(), &opts);
    assert_eq!((m.rows, m.identity_rows, m.shards.len()), (8, 4, 3));
    let prepared = read_prepared(dir.path()).unwrap();
    assert_eq!(prepared.manifest, m);
    assert_eq!(prepared.rows.len(), 8);
    assert_eq!(prepared.warmup_rows(), 4, "identity rows come first");
    assert_eq!(prepared.pad_id(), i64::from(m.pad_id));
    let mut from_shards = Vec::new();
    for s in &m.shards {
        let (ids, labels, offsets) = read_shard(&dir.path().join(&s.file)).unwrap();
        for w in offsets.windows(2) {
            let span = w[0] as usize..w[1] as usize;
            from_shards.push(TokenizedRow {
                input_ids: ids[span.clone()].to_vec(),
                labels: labels[span].to_vec(),
            });
        }
    }
    assert_eq!(prepared.rows, from_shards);
    // An identity row is trained to repeat its answer: its target is in its prompt.
    let id = &prepared.rows[0];
    assert!(id.labels.iter().any(|&l| l != IGNORE_INDEX));

    // Mixed placement: no warm-up phase.
    let mixed = dir.path().join("mixed");
    let mixed_opts = PrepareOptions {
        mix: MixOptions {
            identity_placement: IdentityPlacement::Mixed,
            ..opts.mix.clone()
        },
        ..opts.clone()
    };
    run(&fixture("correction.jsonl"), &mixed, &mixed_opts);
    assert_eq!(read_prepared(&mixed).unwrap().warmup_rows(), 0);
}

#[test]
fn a_broken_prepared_folder_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PrepareOptions {
        rows_per_shard: 3,
        ..Default::default()
    };
    // No manifest.
    let err = read_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::File(FileError::Io { path, .. }) if path.ends_with("manifest.json")),
        "{err}"
    );
    let m = run(&fixture("correction.jsonl"), dir.path(), &opts);
    let manifest = dir.path().join("manifest.json");
    let original = std::fs::read_to_string(&manifest).unwrap();

    // A shard gone.
    let shard = dir.path().join(&m.shards[1].file);
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::remove_file(&shard).unwrap();
    let err = read_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::File(FileError::Io { path, .. }) if *path == shard),
        "{err}"
    );
    assert!(err.to_string().contains("shard-00001.safetensors"), "{err}");

    // A shard that is not one.
    std::fs::write(&shard, b"not a shard").unwrap();
    let err = read_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Safetensors { path, .. } if *path == shard),
        "{err}"
    );

    // A shard holding other rows than the manifest says.
    std::fs::write(&shard, &bytes).unwrap();
    let mut other = m.clone();
    other.shards[1].rows += 1;
    other.write(dir.path()).unwrap();
    let err = read_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidShard { path, .. } if *path == shard),
        "{err}"
    );

    // A manifest of another version, or naming a file outside the folder.
    for change in [
        Box::new(|m: &mut Manifest| m.version = 2) as Box<dyn Fn(&mut Manifest)>,
        Box::new(|m: &mut Manifest| m.shards[0].file = "../shard-00000.safetensors".into()),
        Box::new(|m: &mut Manifest| m.rows += 1),
    ] {
        let mut other = m.clone();
        change(&mut other);
        other.write(dir.path()).unwrap();
        let err = read_prepared(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidManifest { path, .. } if *path == manifest),
            "{err}"
        );
    }
    std::fs::write(&manifest, &original).unwrap();
    assert_eq!(read_prepared(dir.path()).unwrap().rows.len(), m.rows);
    std::fs::write(&manifest, "{").unwrap();
    let err = read_prepared(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Json { path, .. } if *path == manifest),
        "{err}"
    );
}
