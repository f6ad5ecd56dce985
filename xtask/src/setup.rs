//! `cargo xtask setup` and `cargo xtask fetch-model`.

use std::path::{Path, PathBuf};
use std::process::Command;

use aligner_model::hub;
use anyhow::{Context, Result, bail};

/// The exact PyTorch release whose LibTorch `tch` 0.24 links against (docs/gpu.md says why 2.11).
const TORCH: &str = "2.11.0";
/// Numerical references, pinned so that parity tests compare against a fixed implementation.
const PACKAGES: &[(&str, &str)] = &[
    ("torch", TORCH),
    ("transformers", "5.23.0"),
    ("gguf", "0.19.0"),
    ("accelerate", "1.15.0"),
];

/// The official `openai` client, (name, version): the server tests stream from our server with it.
const OPENAI: (&str, &str) = ("openai", "3.63.0");
/// llama.cpp's OpenAI-compatible server, (name, version), a real upstream in the server tests
/// (installed with its `[server]` extra; it builds llama.cpp from source: several minutes on the
/// first setup).
const LLAMA_CPP: (&str, &str) = ("llama-cpp-python", "0.3.36");

/// Prints the versions of the pinned packages and where torch lives, one `name=value` per line.
const PROBE: &str = r#"
import importlib.metadata as md, importlib.util, os
for name in ("torch", "transformers", "gguf", "accelerate", "openai", "llama-cpp-python"):
    try:
        print(f"{name}={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}=")
spec = importlib.util.find_spec("torch")
if spec and spec.origin:
    print("torch_dir=" + os.path.dirname(spec.origin))
"#;

pub fn setup(with_model: bool) -> Result<()> {
    let root = repo_root()?;
    let venv = hub::venv_dir();
    let python = ensure_venv(&venv)?;
    let mut state = probe(&python)?;
    let missing: Vec<String> = PACKAGES
        .iter()
        .filter(|(name, version)| state.version(name) != Some(*version))
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    if missing.is_empty() {
        println!("python environment {} is up to date", venv.display());
    } else {
        for (name, version) in PACKAGES {
            if let Some(found) = state
                .version(name)
                .filter(|v| !v.is_empty() && v != version)
            {
                println!("{name} {found} is installed but {version} is required: reinstalling");
            }
        }
        println!(
            "installing {} into {} (first run: a few minutes, about 5 GB)",
            missing.join(" "),
            venv.display()
        );
        pip_install(
            &python,
            &missing,
            None,
            &format!(
                "check that this machine reaches the Python package index, or delete {} and run \
                 `cargo xtask setup` again",
                venv.display()
            ),
        )?;
        state = probe(&python)?;
        if let Some((name, version)) = PACKAGES.iter().find(|(n, v)| state.version(n) != Some(*v)) {
            bail!(
                "after installing, {name} is {:?}, not {version}: is {} broken?",
                state.version(name),
                venv.display()
            );
        }
    }
    install_server_packages(&python, &state)?;
    let torch_dir = state
        .torch_dir
        .context("torch is installed but its folder was not found")?;
    link_libtorch(&root, &torch_dir)?;
    println!(
        "LibTorch: {} (linked as {})",
        torch_dir.display(),
        root.join(".libtorch").display()
    );
    if with_model {
        let dir = fetch_model()?;
        println!("default model: {}", dir.display());
    }
    Ok(())
}

/// The CMake arguments llama.cpp is built with (for the CPU it is built on, as by default)
/// without its AMX kernels: on Intel Sapphire-Rapids-class machines here they crash llama.cpp
/// on the embedded Q4_1 model (a segfault in `ggml_backend_amx_mul_mat`, llama-cpp-python
/// 0.3.36), and other CPUs lack AMX anyway. GCC and Clang let these flags win over the build's
/// `-march=native` whatever their order.
const LLAMA_CPP_CMAKE_ARGS: &str = "-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
     -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'";

/// A file in the environment holding the CMake arguments its llama.cpp was built with: an
/// environment whose llama.cpp was built otherwise (by an earlier setup) is rebuilt.
const LLAMA_CPP_BUILD_MARKER: &str = "llama-cpp-build.txt";

/// Installs the packages of the server tests ([`OPENAI`], [`LLAMA_CPP`]) where missing.
fn install_server_packages(python: &Path, state: &PythonState) -> Result<()> {
    let (name, version) = OPENAI;
    if state.version(name) != Some(version) {
        println!("installing {name}=={version} for the server tests");
        pip_install(
            python,
            &[format!("{name}=={version}")],
            None,
            "is the package index reachable?",
        )?;
    }
    install_llama_cpp(python, state)
}

/// Installs [`LLAMA_CPP`], built with [`LLAMA_CPP_CMAKE_ARGS`], where it is missing or was built
/// with other arguments (by an earlier setup).
fn install_llama_cpp(python: &Path, state: &PythonState) -> Result<()> {
    let (name, version) = LLAMA_CPP;
    let marker = hub::venv_dir().join(LLAMA_CPP_BUILD_MARKER);
    let built_as = std::fs::read_to_string(&marker).unwrap_or_default();
    let installed = state.version(name) == Some(version);
    if installed && built_as == LLAMA_CPP_CMAKE_ARGS {
        return Ok(());
    }
    // A fresh build: pip's cache of built wheels does not key on CMAKE_ARGS.
    let mut args = vec![
        format!("{name}[server]=={version}"),
        "--no-cache-dir".into(),
    ];
    if installed {
        println!("rebuilding llama.cpp without its AMX kernels (several minutes)");
        args.extend(["--force-reinstall".into(), "--no-deps".into()]);
    } else {
        println!(
            "installing {name}=={version} for the server tests (llama.cpp builds from source: \
             several minutes)"
        );
    }
    pip_install(
        python,
        &args,
        Some(("CMAKE_ARGS", LLAMA_CPP_CMAKE_ARGS)),
        "llama-cpp-python needs a C++ compiler (Debian: apt-get install build-essential)",
    )?;
    aligner_data::atomic::write(&marker, LLAMA_CPP_CMAKE_ARGS.as_bytes())
        .with_context(|| format!("writing {}", marker.display()))
}

/// `python -m pip install` of `requirements` (with `env` set, if given); a failure says `hint`.
fn pip_install(
    python: &Path,
    requirements: &[String],
    env: Option<(&str, &str)>,
    hint: &str,
) -> Result<()> {
    let mut command = Command::new(python);
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let status = command
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
        .args(requirements)
        .status()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    if !status.success() {
        bail!(
            "pip install {} failed ({status}): {hint}",
            requirements.join(" ")
        );
    }
    Ok(())
}

pub fn fetch_model() -> Result<PathBuf> {
    Ok(hub::ensure_default_model_with_bar()?)
}

/// Creates the virtual environment if needed and returns its interpreter.
fn ensure_venv(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin").join("python");
    if python.is_file() {
        let ok = Command::new(&python)
            .args(["-c", "import pip"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(python);
        }
        bail!(
            "{} exists but its Python or pip does not run (moved or upgraded system Python?). \
             Delete {} and run `cargo xtask setup` again",
            python.display(),
            venv.display()
        );
    }
    let version = Command::new("python3")
        .args(["-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .context("python3 not found: install Python 3.10 or newer with pip and venv (Debian: apt-get install python3 python3-venv python3-pip)")?;
    if !version.status.success() {
        bail!(
            "python3 lacks the venv or ensurepip module: install them (Debian: apt-get install python3-venv python3-pip)\n{}",
            String::from_utf8_lossy(&version.stderr)
        );
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let minor: u32 = version
        .strip_prefix("3.")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor < 10 {
        bail!("python3 is {version}; torch {TORCH} needs Python 3.10 or newer");
    }
    println!("creating Python {version} environment {}", venv.display());
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed ({status})", venv.display());
    }
    Ok(python)
}

#[derive(Default)]
struct PythonState {
    versions: Vec<(String, String)>,
    torch_dir: Option<PathBuf>,
}

impl PythonState {
    fn version(&self, name: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn probe(python: &Path) -> Result<PythonState> {
    let out = Command::new(python)
        .args(["-c", PROBE])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed to run a probe script:\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut state = PythonState::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split_once('=') {
            Some(("torch_dir", dir)) => state.torch_dir = Some(PathBuf::from(dir)),
            Some((name, version)) => state.versions.push((name.to_owned(), version.to_owned())),
            None => {}
        }
    }
    Ok(state)
}

/// Points `<repo>/.libtorch` at the torch package folder (LibTorch's `include/` and `lib/`).
fn link_libtorch(root: &Path, torch_dir: &Path) -> Result<()> {
    if !torch_dir.join("lib").join("libtorch_cpu.so").is_file()
        && !torch_dir.join("lib").join("libtorch_cpu.dylib").is_file()
    {
        bail!(
            "{} has no lib/libtorch_cpu: not a complete torch installation",
            torch_dir.display()
        );
    }
    let link = root.join(".libtorch");
    if std::fs::read_link(&link).ok().as_deref() == Some(torch_dir) {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("removing old {}", link.display()))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(torch_dir, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    #[cfg(not(unix))]
    bail!(
        "only Unix-like systems are supported; set LIBTORCH={} yourself",
        torch_dir.display()
    );
    Ok(())
}

/// The workspace root (xtask's parent folder).
pub fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}
