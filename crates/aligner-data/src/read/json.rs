//! A JSON array of objects, read element by element with a streaming visitor.

use crate::file::WrapFileError as _;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result, json_type};
use crate::row::Record;

type Callback<'a> = &'a mut dyn FnMut(usize, Result<Record>) -> Result<()>;

/// Returns the number of records seen.
pub(super) fn read(path: &Path, f: Callback<'_>) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    // Skips a byte-order mark and tells an empty file from malformed JSON.
    if super::first_significant_byte(&mut reader)
        .map_err(|e| Error::io(path, e))?
        .is_none()
    {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut seed = ArraySeed {
        path,
        f,
        rows: 0,
        started: false,
        stopped: None,
    };
    let outcome = (&mut de).deserialize_seq(&mut seed);
    if let Some(err) = seed.stopped.take() {
        return Err(err);
    }
    // The row being parsed when the JSON broke, if the array had started.
    let broken_row = seed.started.then_some(seed.rows + 1);
    outcome.map_err(|e| Error::json(path, broken_row, e))?;
    de.end().map_err(|e| Error::json(path, None, e))?;
    Ok(seed.rows)
}

struct ArraySeed<'a, 'f> {
    path: &'a Path,
    f: Callback<'f>,
    rows: usize,
    started: bool,
    /// The callback's own error; serde only carries a message, so the typed
    /// error is parked here and the visitor aborts with a placeholder.
    stopped: Option<Error>,
}

impl<'de> Visitor<'de> for &mut ArraySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.started = true;
        while let Some(value) = seq.next_element::<Value>()? {
            self.rows += 1;
            let row = self.rows;
            let record = match value {
                Value::Object(m) => Ok(m),
                other => Err(Error::NotAnObject {
                    path: self.path.to_owned(),
                    row,
                    found: json_type(&other),
                }),
            };
            if let Err(e) = (self.f)(row, record) {
                self.stopped = Some(e);
                return Err(serde::de::Error::custom("stopped by callback"));
            }
        }
        Ok(())
    }
}
