//! `cargo xtask convert DIR`: PyTorch `.bin` checkpoints to safetensors.
//!
//! The pickle files are read by torch's `weights_only=True` loader in the cached Python
//! environment (which refuses arbitrary objects); nothing is unpickled in Rust. One `.bin`
//! becomes `model.safetensors`; shards become `model-0000i-of-0000n.safetensors` with a
//! `model.safetensors.index.json`. The `.bin` files are left in place.

use std::path::PathBuf;
use std::process::Command;

use aligner_model::hub;
use anyhow::{Context, Result, bail};
use clap::Args;

/// Arguments of `cargo xtask convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The model folder holding `pytorch_model.bin` (or `pytorch_model-*.bin` shards).
    pub dir: PathBuf,
    /// Overwrite safetensors files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// The conversion, run by the environment's Python: `argv[1]` is the folder, `argv[2]` "1"
/// to overwrite.
const SCRIPT: &str = r#"
import glob, json, os, sys
import torch
from safetensors.torch import save_file

folder, force = sys.argv[1], sys.argv[2] == "1"
bins = sorted(
    p for p in glob.glob(os.path.join(folder, "*.bin"))
    if not os.path.basename(p).startswith("training_args")
)
if not bins:
    sys.exit(f"{folder}: no .bin checkpoint files")
single = len(bins) == 1
names = (
    ["model.safetensors"] if single
    else [f"model-{i + 1:05d}-of-{len(bins):05d}.safetensors" for i in range(len(bins))]
)
targets = [os.path.join(folder, n) for n in names]
index_path = os.path.join(folder, "model.safetensors.index.json")
existing = [t for t in targets + ([] if single else [index_path]) if os.path.exists(t)]
if existing and not force:
    sys.exit(f"{existing[0]} exists (pass --force to overwrite)")
weight_map, total = {}, 0
for src, dst, name in zip(bins, targets, names):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        sys.exit(f"{src}: not a state dict")
    # Own, contiguous storage per tensor: tied weights share memory, which safetensors refuses.
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    save_file(tensors, dst, metadata={"format": "pt"})
    for k, v in tensors.items():
        weight_map[k] = name
        total += v.numel() * v.element_size()
    print(f"{src} -> {dst} ({len(tensors)} tensors)")
if not single:
    with open(index_path, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"wrote {index_path}")
"#;

/// Converts the `.bin` checkpoints of `args.dir` to safetensors.
pub fn run(args: ConvertArgs) -> Result<()> {
    if !args.dir.is_dir() {
        bail!("{} is not a folder", args.dir.display());
    }
    let python =
        hub::venv_python().context("no Python environment: run `cargo xtask setup` first")?;
    let status = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&args.dir)
        .arg(if args.force { "1" } else { "0" })
        .status()
        .with_context(|| format!("run {}", python.display()))?;
    if !status.success() {
        bail!("converting {} failed ({status})", args.dir.display());
    }
    Ok(())
}
