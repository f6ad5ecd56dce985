//! The aligning server's cost and throughput: (a) the time to the first corrected sentence and
//! the total time of a streamed answer through the server (HTTP on 127.0.0.1, SSE, the worker
//! thread) against the library's `StreamMachine::run` on the same request, measured alternately
//! in rounds; (b) answers/s, tokens/s and latency percentiles at 1, 8 and 32 concurrent
//! clients. The embedded SmolLM2-135M-Instruct (int4, math system prompt, greedy) is the
//! upstream and the shipped Stream Aligner (int8) corrects it, as `serve --math` runs them.
//!
//! Run: `cargo run --release --example bench_serve -- --json target/bench/serve.json --doc docs/benchmarks.md`
//! (`--doc` replaces the document's `## Aligning server` section, or appends it).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aligner::app::bench::Bench;
use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::generate::SamplingConfig;
use aligner::model::{ModelTokenizer, WeightFormat};
use aligner::serve::bench::{
    HEADING, Sample, concurrent_clients, machine_now, render, streamed_request,
};
use aligner::serve::{Engine, ServeConfig, Server};
use aligner::stream::{
    Conversation, CorrectorConfig, Event, LocalCorrector, LocalUpstream, MachineConfig,
    StreamMachine, UpstreamConfig,
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Rounds of the overhead measurement (each: every question directly and through the
    /// server, in alternating order).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Most upstream tokens per answer.
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    /// Requests per client in the throughput measurement.
    #[arg(long, default_value_t = 2)]
    requests_per_client: usize,
    /// The numbers of concurrent clients of the throughput measurement (the first is the
    /// baseline of the ratio).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Where the JSON result goes.
    #[arg(long, default_value = "target/bench/serve.json")]
    json: PathBuf,
    /// A markdown document whose `## Aligning server` section is replaced (or appended).
    #[arg(long)]
    doc: Option<PathBuf>,
}

const QUESTIONS: [&str; 5] = [
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?",
    "Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?",
    "A baker makes 48 rolls and sells 29. He then bakes 15 more. How many rolls does he have?",
    "Sara reads 12 pages a day for 5 days, then 7 pages. How many pages has she read?",
    "A bus has 40 seats. 23 people get on, then 9 get off. How many seats are empty?",
];

fn load() -> anyhow::Result<Engine<aligner::model::InferenceModel, aligner::model::InferenceModel>>
{
    let auto = common::Weights(None);
    let cpu = tch::Device::Cpu;
    let up_dir = common::model_dir(None)?;
    let (upstream, up_tok) =
        common::load_for_inference(&up_dir, cpu, None, auto, WeightFormat::Int4)?;
    let al_dir = common::repo_path("assets/stream-aligner");
    let (aligner, al_tok) =
        common::load_for_inference(&al_dir, cpu, None, auto, WeightFormat::Int8)?;
    Ok(Engine {
        upstream,
        upstream_tokenizer: ModelTokenizer::from_dir(&up_tok)?,
        upstream_config: UpstreamConfig {
            sampling: SamplingConfig::greedy(),
            system: Some(MATH_SYSTEM_PROMPT.to_owned()),
            ..UpstreamConfig::default()
        },
        aligner,
        aligner_tokenizer: ModelTokenizer::from_dir(&al_tok)?,
        corrector_config: CorrectorConfig::default(),
        machine: MachineConfig {
            stop_after: vec!["The answer is".to_owned()],
            ..MachineConfig::default()
        },
    })
}

/// The server's model name of stream mode.
const MODEL: &str = "aligner-stream";

/// One streamed request through the server.
fn through_server(base: &str, question: &str, max_tokens: usize) -> anyhow::Result<Sample> {
    Ok(streamed_request(base, MODEL, question, max_tokens)?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (cpu, cores, load_before) = machine_now();
    let engine = load()?;
    let server = Server::start(
        ServeConfig {
            slots: 32,
            request_timeout: Duration::from_secs(3600),
            ..ServeConfig::default()
        },
        || load().map_err(Into::into),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve(listener, async move {
        let _ = stop_rx.await;
    }));

    // (a) Overhead: the library directly against the server, alternating which goes first.
    let mut upstream = LocalUpstream::new(
        &engine.upstream,
        engine.upstream_tokenizer.clone(),
        engine.upstream_config.clone(),
    )?;
    let mut corrector = LocalCorrector::new(
        &engine.aligner,
        engine.aligner_tokenizer.clone(),
        engine.corrector_config.clone(),
    )?;
    let config = MachineConfig {
        max_total_tokens: args.max_tokens,
        ..engine.machine.clone()
    };
    let mut direct_run = |question: &str| -> anyhow::Result<Sample> {
        upstream.restart();
        let started = Instant::now();
        let mut first = None;
        let mut machine =
            StreamMachine::with_conversation(Conversation::single(question), config.clone())?;
        let record = machine.run(&mut upstream, &mut corrector, |event| {
            if matches!(event, Event::Committed(_)) {
                first.get_or_insert_with(|| started.elapsed());
            }
        })?;
        let total = started.elapsed();
        Ok(Sample::new(first.unwrap_or(total), total, record.answer))
    };
    // Warm-up of both paths (first-touch allocations, the server's slot caches).
    direct_run(QUESTIONS[0])?;
    through_server(&base, QUESTIONS[0], args.max_tokens)?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let (mut direct, mut served) = (Vec::new(), Vec::new());
        for question in QUESTIONS {
            if round % 2 == 0 {
                direct.push(direct_run(question)?);
                served.push(through_server(&base, question, args.max_tokens)?);
            } else {
                served.push(through_server(&base, question, args.max_tokens)?);
                direct.push(direct_run(question)?);
            }
        }
        eprintln!("overhead round {} of {} done", round + 1, args.rounds);
        rounds.push((direct, served));
    }

    // (b) Throughput at 1, 8 and 32 concurrent clients.
    let mut throughput = Vec::new();
    for &clients in &args.clients {
        let count = |answer: &str| Ok(engine.upstream_tokenizer.encode(answer, false)?.len());
        let t = concurrent_clients(
            &base,
            MODEL,
            &QUESTIONS,
            clients,
            args.requests_per_client,
            args.max_tokens,
            count,
        )?;
        eprintln!("{clients} clients: {:.1} tokens/s", t.tokens_per_s);
        throughput.push(t);
    }
    let _ = stop_tx.send(());
    runtime.block_on(serving)??;

    let machine = format!(
        "{cpu} ({cores} cores); load average (1, 5, 15 min) before: {load_before}, after: {}",
        machine_now().2
    );
    let result = render(&machine, &rounds, &throughput, args.max_tokens);
    let bench = Bench {
        json: result.json.as_object().cloned().unwrap_or_default(),
        summary: result.markdown,
    };
    let section = args.doc.as_deref().map(|doc| (doc, HEADING));
    bench.publish(Some(&args.json), section)?;
    Ok(())
}
