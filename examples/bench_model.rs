//! Decode and prefill speed of a model, measured the way `xtask/reference/transformers_bench.py`
//! measures transformers, so the two can be compared line by line; plus the quality of the
//! packed weight formats and the memory bandwidth (`aligner::app::bench::model` lists every
//! measurement).
//!
//! Run: `cargo run --release --example bench_model -- --json target/bench/ours.json`

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use aligner::app::bench::model;
use aligner::model::{DType, WeightFormat};
use clap::Parser;
use tch::Device;

#[derive(Parser)]
#[command(about = "Measure decode and prefill tokens/s")]
struct Args {
    /// Hugging Face layout model folder or GGUF file (default: the embedded
    /// SmolLM2-135M-Instruct).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Dtypes to measure (dense models), comma-separated; `--dtypes` with no value measures none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "f32,bf16", value_parser = common::dtype)]
    dtypes: Vec<DType>,
    /// Packed weight formats to measure (f32 activations), comma-separated; `--packed` with no
    /// value measures none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "int4,int8,dense")]
    packed: Vec<WeightFormat>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu", value_parser = common::device)]
    device: Device,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = model::Options {
        model_dir: Some(common::model_dir(args.model_dir.as_deref())?),
        dtypes: args.dtypes,
        packed: args.packed,
        device: args.device,
    };
    let bench = model::run(&options, |line| println!("{line}"))?;
    bench.publish(args.json.as_deref(), None)?;
    Ok(())
}
