//! Running an example of the `aligner` crate in release mode with the caller's arguments, for
//! the tasks that need LibTorch.
//!
//! The work of those tasks lives in the library (`aligner::app::{math_eval, stream_data,
//! bench}`); the examples are thin command lines over it. xtask calls them as release
//! subprocesses instead of linking `aligner` itself, for two reasons:
//! - `cargo xtask setup` is what installs LibTorch and links `.libtorch`; an xtask that linked
//!   `tch` could not be built before it has run (torch-sys needs LibTorch at build time).
//! - `cargo xtask` builds xtask in debug (the `.cargo/config.toml` alias is a plain
//!   `cargo run`): the loop, the segmenter and the evaluation would run unoptimised, and the
//!   benchmarks would measure a debug build.

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
