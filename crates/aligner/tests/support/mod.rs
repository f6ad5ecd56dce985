//! What the tests of the facade crate share: tiny random-weight models that transformers builds
//! (`tests/reference/tiny_model.py`), and the example programs `cargo test` builds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// aligner-model's test helpers (the cached Python environment, reference scripts).
#[path = "../../../aligner-model/tests/common/mod.rs"]
mod model_common;

/// A tiny `arch` model folder with its tokenizer and transformers' greedy continuation.
pub fn tiny_model(arch: &str) -> (tempfile::TempDir, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/tiny_model.py");
    let dir = model_common::script_into_tempdir(&script, &[arch]);
    let greedy = std::fs::read(dir.path().join("greedy.json")).unwrap();
    (dir, serde_json::from_slice(&greedy).unwrap())
}

/// The example binary `name`, as `cargo test` builds it next to this test's binary.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build -p aligner --examples`)",
        path.display()
    );
    path
}
