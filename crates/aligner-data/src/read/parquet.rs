//! Parquet tables read row by row through the `parquet` record API (no arrow).

use crate::file::WrapFileError as _;
use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::row::Record;

/// Returns the number of records seen.
pub(super) fn read(
    path: &Path,
    f: &mut dyn FnMut(usize, Result<Record>) -> Result<()>,
) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map_err(|e| Error::io(path, e))?.len() == 0 {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    let perr = |row, source| Error::Parquet {
        path: path.to_owned(),
        row,
        source,
    };
    let reader = SerializedFileReader::new(file).map_err(|e| perr(None, e))?;
    let rows = reader.get_row_iter(None).map_err(|e| perr(None, e))?;
    let mut n = 0usize;
    for row in rows {
        n += 1;
        // A broken row (e.g. a string column with non-UTF-8 bytes) stops
        // reading: the row iterator cannot be trusted past it.
        let row = row.map_err(|e| perr(Some(n), e))?;
        let record: Record = row
            .get_column_iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect();
        f(n, Ok(record))?;
    }
    Ok(n)
}

fn to_json(field: &Field) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => Value::String(s.clone()),
        // Binary columns without a UTF-8 annotation: text if the bytes are
        // text, else an array of byte values (a string field then reports
        // a wrong type instead of receiving garbage).
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => Value::Array(b.data().iter().map(|&x| Value::from(x)).collect()),
        },
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(to_json).collect()),
        Field::MapInternal(map) => {
            let entries = map.entries();
            let mut m = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        // Dates, times, decimals: their Display form.
        other => Value::String(other.to_string()),
    }
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}
