//! Shared helpers of the integration tests: where the imported default model, its GGUF file and
//! the reference Python environment are, and how to run the reference script.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aligner_model::hub;

/// The imported default model. `cargo xtask setup` (run by the README's test command) makes it.
pub fn model_dir() -> PathBuf {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(
        hub::is_imported(&dir),
        "{} is missing: run `cargo xtask setup` first",
        dir.display()
    );
    dir
}

/// The GGUF file the default model was imported from.
pub fn gguf_path() -> PathBuf {
    let path = hub::cache_dir()
        .join("downloads")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` first",
        path.display()
    );
    path
}

/// Runs `tests/reference/hf_reference.py` with the cached environment's Python.
pub fn reference(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hf_reference.py");
    run_python(&script, args.iter().map(std::ffi::OsStr::new));
}

/// Runs a Python script with the cached environment's Python (offline), failing the test with
/// its stderr if it fails.
pub fn run_python<I, S>(script: &Path, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let python = hub::venv_python()
        .expect("the Python environment is missing: run `cargo xtask setup` first");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .env("TOKENIZERS_PARALLELISM", "false")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run the reference script");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a reference script whose last argument is the folder it writes into, with a fresh
/// temporary folder: `script ARGS... DIR`. Returns the folder.
pub fn script_into_tempdir(script: &Path, args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.push(dir.path().as_os_str());
    run_python(script, all);
    dir
}

/// `name` in aligner-model's `tests/reference` folder.
pub fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name)
}

/// Writes `value` as JSON into `dir/name` and returns the path as a string.
pub fn write_json(dir: &Path, name: &str, value: &impl serde::Serialize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

/// Reads an f32 tensor from a safetensors file as a flat vector.
pub fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Reads a raw u8 tensor from a safetensors file.
pub fn read_u8(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().to_vec()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
