//! Readers for JSON arrays, JSONL and Parquet files.
//!
//! Every reader streams: JSONL line by line, a JSON array element by element
//! (one [`serde_json::Value`] alive at a time), Parquet row by row. Each
//! record gets a 1-based row number. Errors that concern one record (a bad
//! JSONL line, a non-object element, a missing field) can be skipped with
//! [`ReadOptions::skip_bad_rows`]; every skipped row is listed in
//! [`Loaded::skipped`]. Errors that leave the file unreadable past a point
//! (invalid JSON inside an array, a corrupt Parquet page) always fail.

mod json;
mod jsonl;
mod parquet;

use crate::file::WrapFileError as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::row::{FromRecord, Record};

/// The kind of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileKind {
    /// One JSON array of objects.
    Json,
    /// One JSON object per line (blank lines ignored).
    Jsonl,
    /// A Parquet table, one row per record.
    Parquet,
}

impl FileKind {
    /// Tells the kind from the file name, and for `.json` from the first
    /// non-blank byte (`[` = array, `{` = JSON lines saved as `.json`).
    pub fn detect(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson") => Ok(FileKind::Jsonl),
            Some("parquet" | "pq") => Ok(FileKind::Parquet),
            Some("json") => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let mut reader = BufReader::new(file);
                match first_significant_byte(&mut reader).map_err(|e| Error::io(path, e))? {
                    None => Err(Error::Empty {
                        path: path.to_owned(),
                    }),
                    Some(b'{') => Ok(FileKind::Jsonl),
                    Some(_) => Ok(FileKind::Json),
                }
            }
            _ => Err(Error::UnknownFileKind {
                path: path.to_owned(),
            }),
        }
    }
}

/// Skips whitespace and a UTF-8 byte-order mark; returns the next byte
/// without consuming it, or `None` at end of file.
pub(crate) fn first_significant_byte(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let mut at_start = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        if at_start && buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            reader.consume(3);
            at_start = false;
            continue;
        }
        at_start = false;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                reader.consume(i);
                return Ok(Some(b));
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

/// How to read a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Force a file kind instead of detecting it.
    pub kind: Option<FileKind>,
    /// Skip records that fail (listing them in [`Loaded::skipped`]) instead
    /// of failing on the first.
    pub skip_bad_rows: bool,
}

/// One record left out by [`ReadOptions::skip_bad_rows`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// The file it came from.
    pub path: PathBuf,
    /// Its 1-based row number.
    pub row: usize,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// Why it was skipped (the error's message).
    pub reason: String,
}

impl SkippedRow {
    /// Builds the entry from the error that caused the skip.
    pub fn from_error(path: &Path, row: usize, error: &Error) -> Self {
        Self {
            path: path.to_owned(),
            row,
            field: error.field().map(str::to_owned),
            reason: error.to_string(),
        }
    }
}

/// The rows read from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// The file read.
    pub path: PathBuf,
    /// The rows, in file order.
    pub rows: Vec<T>,
    /// The 1-based row number of each entry of `rows`.
    pub row_numbers: Vec<usize>,
    /// Every record that was skipped, in file order.
    pub skipped: Vec<SkippedRow>,
}

impl<T> Loaded<T> {
    /// Number of records seen (kept and skipped).
    pub fn records_seen(&self) -> usize {
        self.rows.len() + self.skipped.len()
    }
}

/// Calls `f(row_number, record)` for each record of `path` in order.
///
/// Record-level errors are passed to `f` (as `Err`) so the caller decides
/// whether to skip them; `f` returning `Err` stops reading and returns that
/// error. File-level errors are returned directly. A file with no record at
/// all is [`Error::Empty`].
pub fn for_each_record<F>(path: &Path, kind: Option<FileKind>, mut f: F) -> Result<()>
where
    F: FnMut(usize, Result<Record>) -> Result<()>,
{
    let kind = match kind {
        Some(k) => k,
        None => FileKind::detect(path)?,
    };
    let seen = match kind {
        FileKind::Json => json::read(path, &mut f)?,
        FileKind::Jsonl => jsonl::read(path, &mut f)?,
        FileKind::Parquet => parquet::read(path, &mut f)?,
    };
    if seen == 0 {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Reads every record of `path` and converts it with `convert`, which gets
/// the record and its row number and may fail (e.g. a missing field).
pub fn read_with<T, F>(path: &Path, options: &ReadOptions, mut convert: F) -> Result<Loaded<T>>
where
    F: FnMut(usize, Record) -> Result<T>,
{
    let mut out = Loaded {
        path: path.to_owned(),
        rows: Vec::new(),
        row_numbers: Vec::new(),
        skipped: Vec::new(),
    };
    for_each_record(path, options.kind, |row, record| {
        match record.and_then(|r| convert(row, r)) {
            Ok(t) => {
                out.rows.push(t);
                out.row_numbers.push(row);
            }
            Err(e) if options.skip_bad_rows && e.row().is_some() => {
                out.skipped.push(SkippedRow::from_error(path, row, &e));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads typed rows (e.g. [`crate::CorrectionRow`]) from a JSON, JSONL or
/// Parquet file.
///
/// ```no_run
/// use aligner_data::{read_rows, CorrectionRow, ReadOptions};
/// let opts = ReadOptions { skip_bad_rows: true, ..Default::default() };
/// let loaded = read_rows::<CorrectionRow>("train.jsonl".as_ref(), &opts)?;
/// for s in &loaded.skipped {
///     eprintln!("skipped row {}: {}", s.row, s.reason);
/// }
/// # Ok::<(), aligner_data::Error>(())
/// ```
pub fn read_rows<T: FromRecord>(path: &Path, options: &ReadOptions) -> Result<Loaded<T>> {
    read_with(path, options, |row, record| {
        T::from_record(record).map_err(|e| e.at(path, row))
    })
}
