//! safetensors shards.

use crate::file::WrapFileError as _;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::tokenize::Encoded;

fn le_bytes(values: impl Iterator<Item = i64>) -> Vec<u8> {
    values.flat_map(i64::to_le_bytes).collect()
}

/// Writes `rows` to `path` (through a temporary file); returns the token count.
pub(super) fn write(path: &Path, rows: &[&Encoded]) -> Result<u64> {
    let tokens: usize = rows.iter().map(|r| r.len()).sum();
    let ids = le_bytes(rows.iter().flat_map(|r| r.input_ids.iter().copied()));
    let labels = le_bytes(rows.iter().flat_map(|r| r.labels.iter().copied()));
    let offsets = le_bytes(std::iter::once(0).chain(rows.iter().scan(0i64, |acc, r| {
        *acc += r.len() as i64;
        Some(*acc)
    })));
    let st_err = |source| Error::Safetensors {
        path: path.to_owned(),
        source,
    };
    let views = vec![
        (
            "input_ids",
            TensorView::new(Dtype::I64, vec![tokens], &ids).map_err(st_err)?,
        ),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![tokens], &labels).map_err(st_err)?,
        ),
        (
            "offsets",
            TensorView::new(Dtype::I64, vec![rows.len() + 1], &offsets).map_err(st_err)?,
        ),
    ];
    let bytes = safetensors::serialize(views, None).map_err(st_err)?;
    write_atomic(path, &bytes)?;
    Ok(tokens as u64)
}

/// Writes `bytes` to `path` atomically ([`crate::atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn i64s(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<Vec<i64>> {
    let t = st.tensor(name).map_err(|source| Error::Safetensors {
        path: path.to_owned(),
        source,
    })?;
    if t.dtype() != Dtype::I64 {
        return Err(Error::InvalidShard {
            path: path.to_owned(),
            reason: format!("`{name}` is {:?}, not I64", t.dtype()),
        });
    }
    Ok(t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Reads a shard written by [`write`].
pub(super) fn read(path: &Path) -> Result<(Vec<i64>, Vec<i64>, Vec<i64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| Error::Safetensors {
        path: path.to_owned(),
        source,
    })?;
    Ok((
        i64s(&st, "input_ids", path)?,
        i64s(&st, "labels", path)?,
        i64s(&st, "offsets", path)?,
    ))
}
