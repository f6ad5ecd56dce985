//! A file that could not be read, written or parsed, named in its error ([`FileError`]), and
//! the JSON and text helpers that every crate of the workspace reads and writes files through.
//! Each crate's error type wraps [`FileError`] in one variant (`File`), so the path and the
//! cause are shown the same way everywhere.
//!
//! Writes are atomic ([`crate::atomic`]): a reader never sees half a file.
//!
//! ```
//! use aligner_data::file::{self, FileError};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("config.json");
//! file::write_json(&path, &serde_json::json!({ "rank": 8 }))?;
//! let back: serde_json::Value = file::read_json(&path)?;
//! assert_eq!(back["rank"], 8);
//!
//! let missing = dir.path().join("missing.json");
//! let err = file::read_json::<serde_json::Value>(&missing).unwrap_err();
//! assert!(matches!(err, FileError::Io { .. }));
//! assert_eq!(err.path(), missing.as_path());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reading, writing or parsing one file failed; the error names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Opening, reading, creating or writing the file (or folder) failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not the JSON expected, or a value could not be written as JSON.
    #[error("{}: JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl FileError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A JSON error in (or while writing) `path`.
    pub fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The file or folder concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Json { path, .. } => path,
        }
    }

    /// The I/O error's kind, for an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            Self::Json { .. } => None,
        }
    }
}

/// Every error type that wraps a [`FileError`] (through `From`) builds one with
/// `E::io(path, source)` and `E::json(path, source)`, with this trait in scope.
///
/// ```
/// use aligner_data::file::WrapFileError as _;
///
/// #[derive(Debug, thiserror::Error)]
/// enum MyError {
///     #[error(transparent)]
///     File(#[from] aligner_data::FileError),
/// }
///
/// let path = std::path::Path::new("missing.txt");
/// let err = std::fs::read(path).map_err(|e| MyError::io(path, e)).unwrap_err();
/// assert!(err.to_string().starts_with("missing.txt: "));
/// ```
pub trait WrapFileError: From<FileError> {
    /// An I/O error on `path`.
    fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        FileError::io(path, source).into()
    }

    /// A JSON error in (or while writing) `path`.
    fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        FileError::json(path, source).into()
    }
}

impl<E: From<FileError>> WrapFileError for E {}

/// Reads a UTF-8 text file.
///
/// # Errors
/// [`FileError::Io`] when it cannot be read (or is not UTF-8).
pub fn read_text(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))
}

/// Reads and parses a JSON file.
///
/// # Errors
/// [`FileError::Io`] when it cannot be read, [`FileError::Json`] when it does not parse as `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| FileError::json(path, e))
}

/// Writes `value` to `path` as pretty JSON ending in a newline, atomically.
///
/// # Errors
/// [`FileError::Json`] when `value` cannot be serialised, [`FileError::Io`] when the file cannot
/// be written (`path` is then unchanged).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), FileError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| FileError::json(path, e))?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// [`FileError::Io`]; `path` is then unchanged.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    crate::atomic::write(path, bytes).map_err(|e| FileError::io(path, e))
}

/// Creates a folder and its parents.
///
/// # Errors
/// [`FileError::Io`].
pub fn create_dir(path: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(path).map_err(|e| FileError::io(path, e))
}

/// The JSON type of a value with its article (`a string`, `an object`, `null`), for error
/// messages.
pub fn json_type(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        write_bytes(&path, b"{ not json").unwrap();
        let err = read_json::<serde_json::Value>(&path).unwrap_err();
        assert!(matches!(err, FileError::Json { .. }));
        assert!(err.to_string().starts_with(&path.display().to_string()));
        assert_eq!(err.io_kind(), None);

        let missing = dir.path().join("none.txt");
        let err = read_text(&missing).unwrap_err();
        assert_eq!(err.io_kind(), Some(io::ErrorKind::NotFound));
        assert_eq!(err.path(), missing);
    }

    #[test]
    fn json_files_end_in_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_json(&path, &[1, 2]).unwrap();
        assert_eq!(read_text(&path).unwrap(), "[\n  1,\n  2\n]\n");
    }

    #[test]
    fn json_types_take_their_article() {
        use serde_json::json;
        let names: Vec<_> = [
            json!(null),
            json!(true),
            json!(1),
            json!("s"),
            json!([]),
            json!({}),
        ]
        .iter()
        .map(json_type)
        .collect();
        assert_eq!(
            names,
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "an array",
                "an object"
            ]
        );
    }
}
