//! Writing files so that readers never see half of one: everything in the workspace that writes
//! a result file (shards, manifests, checkpoints' files, exports, reports, charts, caches) goes
//! through here.
//!
//! The content is written to a temporary sibling ([`temp_sibling`], in the same folder, so the
//! rename stays on one file system), flushed to disk, then renamed onto the destination. On any
//! error the temporary file is removed and the destination is left as it was.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("out.json");
//! aligner_data::atomic::write(&path, b"{}\n")?;
//! assert_eq!(std::fs::read(&path)?, b"{}\n");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh temporary path beside `path` (unique within the process), for a file or folder that
/// will be renamed onto `path`: `.STEM.tmp-PID-N.EXT`, keeping the extension last for writers
/// that choose a format by it (image encoders).
pub fn temp_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp-{}-{n}{ext}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// The I/O error of creating, writing, syncing or renaming; `path` is then unchanged.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Writes `path` atomically through a buffered writer that `fill` writes to.
///
/// # Errors
/// `fill`'s error, or the I/O error of creating, flushing, syncing or renaming; `path` is then
/// unchanged.
pub fn write_with<E: From<io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    write_via_path(
        path,
        |tmp| {
            let mut out = BufWriter::new(File::create(tmp)?);
            fill(&mut out)?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            Ok(())
        },
        E::from,
    )
}

/// Has `produce` write a file at the temporary path it is given (for writers that take a path,
/// such as image encoders and safetensors), then renames it onto `path`; a failed rename becomes
/// an error through `on_io`.
///
/// # Errors
/// `produce`'s error, or `on_io` of the rename's; the temporary file is removed either way and
/// `path` is unchanged.
pub fn write_via_path<E>(
    path: &Path,
    produce: impl FnOnce(&Path) -> Result<(), E>,
    on_io: impl FnOnce(io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_sibling(path);
    let result = produce(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(on_io));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.txt"]);
    }

    #[test]
    fn temporary_names_are_hidden_siblings_and_unique() {
        let path = Path::new("/x/y/report.png");
        let (a, b) = (temp_sibling(path), temp_sibling(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".report.tmp-") && name.ends_with(".png"),
            "{name}"
        );
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f");
        assert!(write(&path, b"x").is_err());
        assert!(!path.exists());
    }
}
