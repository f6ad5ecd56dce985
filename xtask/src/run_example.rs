//! Running an example of the `aligner` crate in release mode with the caller's arguments, for
//! the tasks that need LibTorch (xtask itself does not link it).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// `cargo run --release --example NAME -- ARGS`, in the caller's working directory (relative
/// paths in `args` stay relative to it). Fails when the example fails.
pub fn run(name: &str, args: &[String]) -> Result<()> {
    let manifest = crate::setup::repo_root()?.join("Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args(["--package", "aligner", "--example", name, "--"])
        .args(args)
        .status()
        .with_context(|| format!("running cargo for example {name}"))?;
    if !status.success() {
        bail!("example {name} failed ({status})");
    }
    Ok(())
}
