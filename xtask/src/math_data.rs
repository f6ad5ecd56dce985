//! `cargo xtask math-data`: seeded multi-step arithmetic word problems with step-by-step
//! reference solutions, written as train / validation / test JSONL files.

use std::path::PathBuf;

use aligner_data::math::{
    GENERATOR_VERSION, GenerateConfig, Split, generate_splits, write_problems,
};
use anyhow::{Context, Result};

/// Options of `cargo xtask math-data`.
#[derive(clap::Args)]
pub struct MathDataArgs {
    /// Training problems.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Validation problems.
    #[arg(long, default_value_t = 100)]
    validation: usize,
    /// Test problems.
    #[arg(long, default_value_t = 200)]
    test: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output folder (default: `data/math` in the repository, which git ignores).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: MathDataArgs) -> Result<()> {
    let out = match args.out {
        Some(out) => out,
        None => crate::setup::repo_root()?.join("data").join("math"),
    };
    let config = GenerateConfig {
        train: args.train,
        validation: args.validation,
        test: args.test,
        seed: args.seed,
    };
    let splits = generate_splits(&config)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for split in Split::ALL {
        let path = out.join(format!("{}.jsonl", split.name()));
        write_problems(&path, splits.get(split))?;
        println!(
            "{:>10}: {:>5} problems -> {}",
            split.name(),
            splits.get(split).len(),
            path.display()
        );
    }
    let meta = serde_json::json!({
        "generator": "aligner_data::math",
        "generator_version": GENERATOR_VERSION,
        "config": config,
    });
    let meta_path = out.join("meta.json");
    aligner_data::file::write_json(&meta_path, &meta)?;
    Ok(())
}
