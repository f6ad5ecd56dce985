//! Reading a prepared folder back: the manifest and every shard's rows, checked against it.

use std::path::{Path, PathBuf};

use super::manifest::{MANIFEST_FILE, Manifest};
use super::shard;
use crate::batch::TokenizedRow;
use crate::error::{Error, Result};
use crate::warmup::IdentityPlacement;

/// The manifest layout version this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A folder written by [`prepare`](super::prepare) (`cargo xtask prepare`), read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The manifest.
    pub manifest: Manifest,
    /// Every row of every shard, in row order.
    pub rows: Vec<TokenizedRow>,
}

impl Prepared {
    /// How many rows at the start form a warm-up phase that a trainer should visit first: the
    /// identity rows when the data put them first ([`IdentityPlacement::First`]), else 0.
    pub fn warmup_rows(&self) -> usize {
        match self.manifest.options.mix.identity_placement {
            IdentityPlacement::First => self.manifest.identity_rows,
            IdentityPlacement::Mixed => 0,
        }
    }

    /// The pad id the rows were prepared with.
    pub fn pad_id(&self) -> i64 {
        i64::from(self.manifest.pad_id)
    }
}

/// Reads `dir`'s `manifest.json` and all its shards, checking each against the manifest.
///
/// # Errors
/// Each names the file concerned: [`Error::File`] or [`Error::Json`] for a missing or unreadable
/// manifest, [`Error::InvalidManifest`] for another layout version, a shard name that is not a
/// plain file name or counts that do not add up, [`Error::File`] for a missing shard,
/// [`Error::Safetensors`] or [`Error::InvalidShard`] for a shard that is not what the manifest
/// says.
pub fn read_prepared(dir: &Path) -> Result<Prepared> {
    let manifest = Manifest::read(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let invalid = |reason: String| Error::InvalidManifest {
        path: manifest_path.clone(),
        reason,
    };
    if manifest.version != MANIFEST_VERSION {
        return Err(invalid(format!(
            "manifest version {} (this build reads {MANIFEST_VERSION})",
            manifest.version
        )));
    }
    let mut rows = Vec::with_capacity(manifest.rows);
    for info in &manifest.shards {
        let plain = Path::new(&info.file)
            .file_name()
            .is_some_and(|name| name == info.file.as_str());
        if !plain {
            return Err(invalid(format!(
                "shard `{}` is not a file name inside the folder",
                info.file
            )));
        }
        if info.first_row != rows.len() {
            return Err(invalid(format!(
                "shard `{}` starts at row {}, after {} rows",
                info.file,
                info.first_row,
                rows.len()
            )));
        }
        let path = dir.join(&info.file);
        let (ids, labels, offsets) = shard::read(&path)?;
        split_rows(
            &path,
            ids,
            labels,
            &offsets,
            info.rows,
            info.tokens,
            &mut rows,
        )?;
    }
    if rows.len() != manifest.rows {
        return Err(invalid(format!(
            "the shards hold {} rows, the manifest says {}",
            rows.len(),
            manifest.rows
        )));
    }
    if manifest.identity_rows > manifest.rows {
        return Err(invalid(format!(
            "{} identity rows among {} rows",
            manifest.identity_rows, manifest.rows
        )));
    }
    Ok(Prepared { manifest, rows })
}

/// Appends a shard's rows to `out`, checking its offsets against its data and the manifest's
/// counts.
fn split_rows(
    path: &Path,
    ids: Vec<i64>,
    labels: Vec<i64>,
    offsets: &[i64],
    rows: usize,
    tokens: u64,
    out: &mut Vec<TokenizedRow>,
) -> Result<()> {
    let invalid = |reason: String| Error::InvalidShard {
        path: PathBuf::from(path),
        reason,
    };
    if ids.len() != labels.len() {
        return Err(invalid(format!(
            "{} input ids but {} labels",
            ids.len(),
            labels.len()
        )));
    }
    if ids.len() as u64 != tokens || offsets.len() != rows + 1 {
        return Err(invalid(format!(
            "{} tokens in {} rows, the manifest says {tokens} in {rows}",
            ids.len(),
            offsets.len().saturating_sub(1)
        )));
    }
    let ends_right = offsets.first() == Some(&0) && offsets.last() == Some(&(ids.len() as i64));
    if !ends_right || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(invalid(
            "offsets are not an increasing list from 0 to the token count".into(),
        ));
    }
    out.extend(offsets.windows(2).map(|w| {
        let span = w[0] as usize..w[1] as usize;
        TokenizedRow {
            input_ids: ids[span.clone()].to_vec(),
            labels: labels[span].to_vec(),
        }
    }));
    Ok(())
}
