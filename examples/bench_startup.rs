//! Start-up of the README's main command as a process, with the pack cache and without it,
//! alternating: time to the first streamed sentence, the part of it before the stream loop,
//! wall time and peak resident memory (`aligner::app::bench::startup` does the work).
//!
//! Run: `cargo build --release --example stream_align && cargo run --release --example bench_startup -- --doc docs/benchmarks.md`
//! (`cargo xtask bench --startup` does both).

use std::path::PathBuf;

use aligner::app::bench::startup;
use clap::Parser;

/// The README's main command, without the program name.
const MAIN_COMMAND: [&str; 2] = [
    "--math",
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?",
];

#[derive(Parser)]
#[command(about = "Start-up of the main command, with and without the pack cache")]
struct Args {
    /// Measured runs per setting.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The stream_align binary (default: beside this one).
    #[arg(long)]
    program: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace (or add) the start-up section of this markdown document.
    #[arg(long)]
    doc: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let program = match args.program {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("stream_align"),
    };
    anyhow::ensure!(
        program.is_file(),
        "{} not found: build it first (cargo build --release --example stream_align)",
        program.display()
    );
    let options = startup::Options {
        program,
        args: MAIN_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
        rounds: args.rounds,
    };
    let bench = startup::run(&options, |line| eprintln!("{line}"))?;
    let section = args.doc.as_deref().map(|doc| (doc, startup::HEADING));
    bench.publish(args.json.as_deref(), section)?;
    Ok(())
}
