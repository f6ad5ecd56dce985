//! JSON Lines: one object per line, read line by line.

use crate::file::WrapFileError as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result, json_type};
use crate::row::Record;

/// Returns the number of records seen.
pub(super) fn read(
    path: &Path,
    f: &mut dyn FnMut(usize, Result<Record>) -> Result<()>,
) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut row = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let mut bytes = buf.as_slice();
        if line == 1 && bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
            bytes = &bytes[3..];
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        f(row, parse_line(path, row, line, bytes))?;
    }
    Ok(row)
}

fn parse_line(path: &Path, row: usize, line: usize, bytes: &[u8]) -> Result<Record> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Utf8 {
        path: path.to_owned(),
        row,
        line,
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::NotAnObject {
            path: path.to_owned(),
            row,
            found: json_type(&other),
        }),
        Err(source) => Err(Error::Json {
            path: path.to_owned(),
            row: Some(row),
            line,
            column: source.column(),
            source,
        }),
    }
}
