//! Readers: fixtures in every format, and bad input of every kind.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

mod common;

use std::path::{Path, PathBuf};

use aligner_data::{
    CorrectionRow, Error, FieldIssue, FileError, FileKind, ReadOptions, Record, StreamRow,
    read_rows,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn strict() -> ReadOptions {
    ReadOptions::default()
}

fn skipping() -> ReadOptions {
    ReadOptions {
        skip_bad_rows: true,
        ..Default::default()
    }
}

fn parquet_fixture(dir: &Path) -> PathBuf {
    let rows = read_rows::<Record>(&fixture("correction.jsonl"), &strict())
        .unwrap()
        .rows;
    let p = dir.join("correction.parquet");
    common::rows_to_parquet(&p, &rows);
    p
}

#[test]
fn same_rows_from_json_jsonl_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let json = read_rows::<CorrectionRow>(&fixture("correction.json"), &strict()).unwrap();
    let jsonl = read_rows::<CorrectionRow>(&fixture("correction.jsonl"), &strict()).unwrap();
    let pq = read_rows::<CorrectionRow>(&parquet_fixture(dir.path()), &strict()).unwrap();
    assert_eq!(json.rows.len(), 4);
    assert_eq!(json.rows, jsonl.rows);
    assert_eq!(json.row_numbers, vec![1, 2, 3, 4]);
    assert_eq!(
        jsonl.row_numbers,
        vec![1, 2, 3, 4],
        "blank lines are not rows"
    );
    assert_eq!(json.rows[1].extra["solution"], "blue");
    // Parquet has a `solution` column, null on rows without it.
    for (a, b) in json.rows.iter().zip(&pq.rows) {
        assert_eq!(
            (&a.question, &a.answer, &a.correction),
            (&b.question, &b.answer, &b.correction)
        );
        assert_eq!(
            a.extra.get("solution").cloned().unwrap_or_default(),
            b.extra["solution"]
        );
    }
    assert!(json.skipped.is_empty());
}

#[test]
fn stream_fixture_keeps_pipeline_fields() {
    let rows = read_rows::<StreamRow>(&fixture("stream.jsonl"), &strict())
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].solution(), Some("4"));
    assert_eq!(rows[1].eos(), Some(true));
    assert_eq!(rows[1].extra["answer"], "It is 5. Done.");
    assert_eq!(rows[1].prefix, "It is 4.");
}

const GOOD: &str = r#"{"question": "q", "answer": "a", "correction": "c"}"#;

#[test]
fn jsonl_bad_rows_strict_names_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{GOOD}\n{{\"question\": \"q\", \"correction\": \"c\"}}\n");
    let p = write(dir.path(), "a.jsonl", text.as_bytes());
    match read_rows::<CorrectionRow>(&p, &strict()) {
        Err(Error::Field {
            path,
            row,
            field,
            issue,
        }) => {
            assert_eq!(
                (path, row, field.as_str(), issue),
                (p.clone(), 2, "answer", FieldIssue::Missing)
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = read_rows::<CorrectionRow>(&p, &strict())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("a.jsonl") && msg.contains("row 2") && msg.contains("`answer`"),
        "{msg}"
    );
}

#[test]
fn jsonl_skip_lists_every_bad_row_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(format!("{GOOD}\n").as_bytes()); // row 1 ok
    bytes.extend_from_slice(b"{\"question\": \"q\", \"answer\": 3, \"correction\": \"c\"}\n"); // 2 wrong type
    bytes.extend_from_slice(b"{\"question\": \"q\", \"answer\": \n"); // 3 invalid JSON
    bytes.extend_from_slice(b"\n   \n"); // blank lines: not rows
    bytes.extend_from_slice(
        b"{\"question\": \"\xff\xfe\", \"answer\": \"a\", \"correction\": \"c\"}\n",
    ); // 4 not UTF-8
    bytes.extend_from_slice(b"[1, 2]\n"); // 5 not an object
    bytes.extend_from_slice(GOOD.as_bytes()); // 6 ok, no final newline
    let p = write(dir.path(), "b.jsonl", &bytes);
    let loaded = read_rows::<CorrectionRow>(&p, &skipping()).unwrap();
    assert_eq!(loaded.rows.len(), 2);
    assert_eq!(loaded.row_numbers, vec![1, 6]);
    let skipped: Vec<(usize, Option<&str>)> = loaded
        .skipped
        .iter()
        .map(|s| (s.row, s.field.as_deref()))
        .collect();
    assert_eq!(
        skipped,
        vec![(2, Some("answer")), (3, None), (4, None), (5, None)]
    );
    assert!(
        loaded.skipped[0]
            .reason
            .contains("expected string, found number"),
        "{}",
        loaded.skipped[0].reason
    );
    assert!(
        loaded.skipped[1].reason.contains("invalid JSON"),
        "{}",
        loaded.skipped[1].reason
    );
    assert!(
        loaded.skipped[2].reason.contains("line 6") && loaded.skipped[2].reason.contains("UTF-8")
    );
    assert!(loaded.skipped[3].reason.contains("array"));
    assert!(loaded.skipped.iter().all(|s| s.path == p));
    assert_eq!(loaded.records_seen(), 6);

    // Strict: the first bad row, typed.
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Field { row: 2, .. })
    ));
    let p2 = write(dir.path(), "c.jsonl", b"\xff\n");
    assert!(matches!(
        read_rows::<CorrectionRow>(&p2, &strict()),
        Err(Error::Utf8 {
            row: 1,
            line: 1,
            ..
        })
    ));
}

#[test]
fn json_array_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("[{GOOD}, {GOOD}, {{\"question\": \"q\", \"answer\": \"a\"}}]");
    let p = write(dir.path(), "m.json", missing.as_bytes());
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Field { row: 3, ref field, issue: FieldIssue::Missing, .. }) if field == "correction"
    ));
    let loaded = read_rows::<CorrectionRow>(&p, &skipping()).unwrap();
    assert_eq!((loaded.rows.len(), loaded.skipped[0].row), (2, 3));

    let p = write(
        dir.path(),
        "n.json",
        format!("[{GOOD}, 7, {GOOD}]").as_bytes(),
    );
    let loaded = read_rows::<CorrectionRow>(&p, &skipping()).unwrap();
    assert_eq!(loaded.row_numbers, vec![1, 3]);
    assert!(loaded.skipped[0].reason.contains("number"));

    // Broken JSON inside the array cannot be skipped: it names the row and line.
    let p = write(
        dir.path(),
        "b.json",
        format!("[{GOOD},\n{GOOD},\n{{\"question\": }}]").as_bytes(),
    );
    match read_rows::<CorrectionRow>(&p, &skipping()) {
        Err(Error::Json {
            row: Some(3),
            line: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Not an array.
    let p = write(dir.path(), "o.json", b"[\"x\"");
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &skipping()),
        Err(Error::Json { .. })
    ));
    let p = write(
        dir.path(),
        "t.json",
        format!("[{GOOD}] trailing").as_bytes(),
    );
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Json { .. })
    ));
    // Invalid UTF-8 inside a string.
    let p = write(
        dir.path(),
        "u.json",
        b"[{\"question\": \"\xff\", \"answer\": \"a\", \"correction\": \"c\"}]",
    );
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &skipping()),
        Err(Error::Json { row: Some(1), .. })
    ));
    // A JSON object per line saved as .json is read as JSON lines.
    let p = write(dir.path(), "l.json", format!("{GOOD}\n{GOOD}\n").as_bytes());
    assert_eq!(FileKind::detect(&p).unwrap(), FileKind::Jsonl);
    assert_eq!(
        read_rows::<CorrectionRow>(&p, &strict())
            .unwrap()
            .rows
            .len(),
        2
    );
    // A UTF-8 byte-order mark is accepted.
    let p = write(
        dir.path(),
        "bom.json",
        format!("\u{feff}[{GOOD}]").as_bytes(),
    );
    assert_eq!(
        read_rows::<CorrectionRow>(&p, &strict())
            .unwrap()
            .rows
            .len(),
        1
    );
}

#[test]
fn empty_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("e.json", &b""[..]),
        ("w.json", b"  \n\t"),
        ("a.json", b"[]"),
        ("e.jsonl", b""),
        ("w.jsonl", b"\n\n  \n"),
        ("e.parquet", b""),
    ] {
        let p = write(dir.path(), name, bytes);
        match read_rows::<CorrectionRow>(&p, &skipping()) {
            Err(Error::Empty { path }) => assert_eq!(path, p),
            other => panic!("{name}: {other:?}"),
        }
    }
    let p = dir.path().join("empty-table.parquet");
    common::write_parquet(
        &p,
        &[
            ("question", vec![]),
            ("answer", vec![]),
            ("correction", vec![]),
        ],
    );
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn other_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.csv", b"a,b");
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::UnknownFileKind { .. })
    ));
    let p = write(dir.path(), "x.csv", GOOD.as_bytes());
    let forced = ReadOptions {
        kind: Some(FileKind::Jsonl),
        ..Default::default()
    };
    assert_eq!(
        read_rows::<CorrectionRow>(&p, &forced).unwrap().rows.len(),
        1
    );
    let missing = dir.path().join("nope.jsonl");
    assert!(
        matches!(read_rows::<CorrectionRow>(&missing, &strict()), Err(Error::File(FileError::Io { path, .. })) if path == missing)
    );
    let p = write(dir.path(), "garbage.parquet", b"PAR1 this is not parquet");
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Parquet { row: None, .. })
    ));
}

#[test]
fn parquet_nulls_and_missing_columns_name_the_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.parquet");
    let s = |x: &str| Some(x.as_bytes().to_vec());
    common::write_parquet(
        &p,
        &[
            ("question", vec![s("q1"), s("q2"), s("q3")]),
            ("answer", vec![s("a"), None, s("a")]),
            ("correction", vec![s("c"); 3]),
        ],
    );
    assert!(matches!(
        read_rows::<CorrectionRow>(&p, &strict()),
        Err(Error::Field { row: 2, ref field, issue: FieldIssue::Missing, .. }) if field == "answer"
    ));
    let loaded = read_rows::<CorrectionRow>(&p, &skipping()).unwrap();
    assert_eq!(loaded.row_numbers, vec![1, 3]);
    assert_eq!(loaded.skipped.len(), 1);
    // A stream reader on a correction table: every row lacks `prefix`.
    let loaded = read_rows::<StreamRow>(&p, &skipping()).unwrap();
    assert!(loaded.rows.is_empty());
    assert_eq!(loaded.skipped.len(), 3);
    assert!(
        loaded
            .skipped
            .iter()
            .all(|s| s.field.as_deref() == Some("prefix"))
    );
}

#[test]
fn parquet_invalid_utf8_is_a_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.parquet");
    let s = |x: &[u8]| Some(x.to_vec());
    common::write_parquet(
        &p,
        &[
            ("question", vec![s(b"ok"), s(b"\xff\xfe")]),
            ("answer", vec![s(b"a"); 2]),
            ("correction", vec![s(b"c"); 2]),
        ],
    );
    match read_rows::<CorrectionRow>(&p, &skipping()) {
        Err(Error::Parquet { row: Some(2), .. }) => {}
        other => panic!("{other:?}"),
    }
}
