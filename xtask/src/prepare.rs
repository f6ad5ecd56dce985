//! `cargo xtask prepare`: files of rows (or dataset specs) into tokenised safetensors shards and
//! a JSON manifest, with a progress bar; tokenisation runs on all cores.

use std::path::{Path, PathBuf};

use aligner_data::format::Registry;
use aligner_data::prepare::{DatasetInput, PrepareOptions, prepare};
use aligner_data::tokenize::Encoder;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `cargo xtask prepare`.
#[derive(clap::Args)]
pub struct PrepareArgs {
    /// Input files or specs `NAME[:PROPORTION[:PATH]]` (repeatable), e.g.
    /// `correction-json:0.5:data/train.jsonl` or a bare path.
    #[arg(long = "input", required = true)]
    inputs: Vec<String>,
    /// Output folder for the shards and `manifest.json`.
    #[arg(long)]
    output: PathBuf,
    /// Folder with `tokenizer.json` and `tokenizer_config.json` (default: the embedded model's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Format of bare paths.
    #[arg(long, default_value = "correction-json")]
    format: String,
    /// Longest tokenised row; longer rows are truncated (and counted).
    #[arg(long, default_value_t = 2048)]
    max_length: usize,
    /// Share of identity (question, answer, answer) rows to add, e.g. 0.2.
    #[arg(long)]
    identity_share: Option<f64>,
    /// Skip bad rows (all listed in the manifest) instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Seed of sub-sampling and mixing.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rows per shard.
    #[arg(long, default_value_t = 65536)]
    rows_per_shard: usize,
}

pub fn run(args: PrepareArgs) -> Result<()> {
    let tokenizer_dir = match args.tokenizer {
        Some(dir) => dir,
        None => crate::setup::fetch_model()?,
    };
    let encoder = encoder(&tokenizer_dir, args.max_length)?;
    let registry = Registry::with_builtins();
    let inputs = args
        .inputs
        .iter()
        .map(|s| DatasetInput::parse(s, &registry))
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = PrepareOptions {
        default_format: args.format,
        rows_per_shard: args.rows_per_shard,
        ..PrepareOptions::default()
    };
    options.mix.seed = args.seed;
    options.mix.skip_bad_rows = args.skip_bad_rows;
    options.mix.identity_share = args.identity_share;

    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
    )?);
    let manifest = prepare(&inputs, &args.output, &encoder, &registry, &options, &|p| {
        bar.set_message(format!("{:?}", p.stage));
        bar.set_length(p.total);
        bar.set_position(p.done);
    })?;
    bar.finish_and_clear();
    println!(
        "{} rows ({} identity), {} tokens in {} shards -> {}",
        manifest.rows,
        manifest.identity_rows,
        manifest.tokens,
        manifest.shards.len(),
        args.output.display()
    );
    for source in &manifest.sources {
        if !source.skipped.is_empty() {
            println!(
                "  {}: skipped {} bad rows (listed in manifest.json)",
                source.spec,
                source.skipped.len()
            );
        }
    }
    if !manifest.dropped.is_empty() {
        println!(
            "  {} rows lost their whole target to truncation and were not kept (listed in manifest.json)",
            manifest.dropped.len()
        );
    }
    println!(
        "  truncated rows: {} ({} tokens cut)",
        manifest.stats.truncated_examples, manifest.stats.truncated_tokens
    );
    Ok(())
}

fn encoder(dir: &Path, max_length: usize) -> Result<Encoder> {
    let (encoder, _) = Encoder::from_dir(dir, max_length)
        .with_context(|| format!("tokenizer in {}", dir.display()))?;
    Ok(encoder)
}
