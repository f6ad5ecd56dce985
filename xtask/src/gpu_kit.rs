//! `cargo xtask gpu-kit`: one folder, at most [`LIMIT`] bytes, that runs our GPU tests and
//! benchmarks on a GPU host with Python torch but no Rust toolchain (docs/gpu.md).
//!
//! The folder holds stripped release binaries (the GPU tests of `crates/aligner/tests/gpu.rs`
//! and the examples that benchmark on a GPU), the embedded model's config and tokenizer with a
//! 1.7B-shaped config beside them, and the scripts of `xtask/gpu-kit/` plus transformers'
//! benchmark script. Weights are not carried: `run.sh` writes random ones on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aligner_model::hub;
use anyhow::{Context, Result, bail};
use clap::Args;

/// The kit must fit one transfer to the GPU host (64 MiB), with room to spare.
const LIMIT: u64 = 60 * 1024 * 1024;

/// Examples carried as benchmarks, built in release mode.
const EXAMPLES: &[&str] = &["bench_model", "bench_train", "generate"];

/// Scripts carried from `xtask/gpu-kit/` and `xtask/reference/`.
const SCRIPTS: &[&str] = &[
    "xtask/gpu-kit/run.sh",
    "xtask/gpu-kit/make_weights.py",
    "xtask/gpu-kit/summary.py",
    "xtask/reference/transformers_bench.py",
];

/// Files of the embedded model's folder the kit carries (its weights stay behind).
const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Options of `cargo xtask gpu-kit`.
#[derive(Args)]
pub struct GpuKitArgs {
    /// Folder to write (replaced if it exists).
    #[arg(long, default_value = "target/gpu-kit")]
    out: PathBuf,
}

pub fn run(args: GpuKitArgs) -> Result<()> {
    let root = crate::setup::repo_root()?;
    let out = root.join(&args.out);
    let model = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    if !hub::is_imported(&model) {
        bail!(
            "the embedded model is not imported ({}): run `cargo xtask setup` first",
            model.display()
        );
    }
    let version = libtorch_version(&root)?;
    let mut binaries = build(
        &root,
        &["test", "--no-run", "--package", "aligner", "--test", "gpu"],
    )?;
    binaries.extend(build(&root, &example_args())?);

    // Assemble beside the destination and rename at the end: no half-written kit.
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(partial.join("bin"))?;
    for (name, path) in &binaries {
        let name = if name == "gpu" { "gpu_tests" } else { name };
        let dest = partial.join("bin").join(name);
        std::fs::copy(path, &dest).with_context(|| format!("copying {}", path.display()))?;
        strip(&dest)?;
    }
    for script in SCRIPTS {
        let from = root.join(script);
        let name = from.file_name().context("script name")?;
        std::fs::copy(&from, partial.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    let small = partial.join("models/smollm2-135m");
    std::fs::create_dir_all(&small)?;
    for file in MODEL_FILES {
        let from = model.join(file);
        if from.is_file() {
            std::fs::copy(&from, small.join(file))?;
        }
    }
    let large = partial.join("models/llama-1.7b");
    std::fs::create_dir_all(&large)?;
    for file in MODEL_FILES.iter().filter(|f| **f != "config.json") {
        if small.join(file).is_file() {
            std::fs::copy(small.join(file), large.join(file))?;
        }
    }
    std::fs::write(
        large.join("config.json"),
        large_config(&small.join("config.json"))?,
    )?;
    std::fs::write(partial.join("LIBTORCH_VERSION"), format!("{version}\n"))?;

    let total = folder_size(&partial)?;
    if total > LIMIT {
        bail!(
            "the kit in {} is {:.1} MiB, over the {} MiB limit",
            partial.display(),
            mib(total),
            LIMIT / 1024 / 1024
        );
    }
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::rename(&partial, &out)?;
    println!(
        "GPU kit: {} ({:.1} MiB, LibTorch {version}); on the GPU host: ./run.sh",
        out.display(),
        mib(total)
    );
    for (name, _) in &binaries {
        let name = if name == "gpu" { "gpu_tests" } else { name };
        let size = std::fs::metadata(out.join("bin").join(name))?.len();
        println!("  bin/{name}: {:.1} MiB", mib(size));
    }
    Ok(())
}

fn example_args() -> Vec<&'static str> {
    let mut args = vec!["build", "--package", "aligner"];
    for example in EXAMPLES {
        args.extend(["--example", example]);
    }
    args
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// `cargo ARGS --release --message-format=json`: the executables built, by target name.
fn build(root: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let output = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(args)
        .args(["--release", "--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), output.status);
    }
    let mut built = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kind = &message["target"]["kind"][0];
        if message["reason"] != "compiler-artifact" || (kind != "test" && kind != "example") {
            continue;
        }
        if let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            built.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if built.is_empty() {
        bail!("cargo {} built no executable", args.join(" "));
    }
    Ok(built)
}

/// Strips symbols and debug information (a release example drops from about 30 to 6-9 MB).
fn strip(path: &Path) -> Result<()> {
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg(path)
        .status()
        .context("running `strip` (binutils; Debian: apt-get install binutils)")?;
    if !status.success() {
        bail!("strip {} failed ({status})", path.display());
    }
    Ok(())
}

/// The torch version of the LibTorch this build links (`.libtorch` or `$LIBTORCH`).
fn libtorch_version(root: &Path) -> Result<String> {
    let libtorch = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join(".libtorch"));
    let file = libtorch.join("version.py");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading {} (run `cargo xtask setup`)", file.display()))?;
    version_of(&text).with_context(|| format!("no __version__ in {}", file.display()))
}

/// The release in torch's `version.py` (`__version__ = '2.11.0+cu130'` gives `2.11.0`).
fn version_of(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']))
        .and_then(|v| v.split('+').next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// SmolLM2-1.7B's shapes on the embedded model's config (same tokenizer and vocabulary).
fn large_config(small: &Path) -> Result<String> {
    let text = std::fs::read_to_string(small).with_context(|| small.display().to_string())?;
    let mut config: serde_json::Value = serde_json::from_str(&text)?;
    let object = config
        .as_object_mut()
        .context("config.json is not an object")?;
    for (key, value) in [
        ("hidden_size", 2048),
        ("intermediate_size", 8192),
        ("num_hidden_layers", 24),
        ("num_attention_heads", 32),
        ("num_key_value_heads", 32),
        ("head_dim", 64),
    ] {
        object.insert(key.into(), value.into());
    }
    object.insert("rope_theta".into(), 130_000.0.into());
    object.insert("torch_dtype".into(), "bfloat16".into());
    Ok(serde_json::to_string_pretty(&config)?)
}

fn folder_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_read_from_torch_version_py() {
        let text =
            "from typing import Optional\n__version__ = '2.11.0+cu130'\ngit_version = 'abc'\n";
        assert_eq!(version_of(text).as_deref(), Some("2.11.0"));
        assert_eq!(
            version_of("__version__ = \"2.13.0\"").as_deref(),
            Some("2.13.0")
        );
        assert_eq!(version_of("cuda = '13.0'"), None);
        assert_eq!(version_of("__version__ = ''"), None);
    }

    #[test]
    fn the_large_config_keeps_the_tokenizer_and_changes_the_shapes() {
        let dir = std::env::temp_dir().join(format!("gpu_kit_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("config.json");
        std::fs::write(
            &small,
            r#"{"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
                "vocab_size": 49152, "bos_token_id": 1, "eos_token_id": 2}"#,
        )
        .unwrap();
        let large: serde_json::Value =
            serde_json::from_str(&large_config(&small).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(large["num_attention_heads"], 32);
        assert_eq!(large["head_dim"], 64);
        for same in ["model_type", "vocab_size", "bos_token_id", "eos_token_id"] {
            assert!(large[same] != serde_json::Value::Null, "{same} kept");
        }
        assert_eq!(large["vocab_size"], 49152);
        // Its parameters (attention with as many key/value heads as query heads, the MLP, two
        // norms per layer, a tied embedding): SmolLM2-1.7B's count.
        let get = |key: &str| large[key].as_u64().unwrap();
        let (h, i, l, v) = (
            get("hidden_size"),
            get("intermediate_size"),
            get("num_hidden_layers"),
            get("vocab_size"),
        );
        assert_eq!(get("num_key_value_heads"), get("num_attention_heads"));
        let params = l * (4 * h * h + 3 * h * i + 2 * h) + v * h + h;
        assert!((1_650_000_000..1_750_000_000).contains(&params), "{params}");
    }
}
