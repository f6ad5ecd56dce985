//! The Stream Aligner loop with an upstream that runs elsewhere: sequential (`run`) against
//! overlapped (`run_overlapped`, the aligner working while the upstream writes).
//!
//! The upstream is simulated: a completions endpoint on 127.0.0.1 that streams, at a fixed
//! pace per chunk of about one token, the answer the local upstream model (the embedded
//! SmolLM2-135M-Instruct, packed int4) wrote to each question greedily; after any accepted text
//! it goes on with the sentence after as many sentences as that text holds. So the upstream's
//! pace is chosen (`--token-ms`, default 25 ms: a large model served on GPUs streams 30-50
//! tokens per second) and costs no local CPU, as with a 70B upstream on other machines. The
//! aligner is real: the shipped Stream Aligner (packed int8) on this machine.
//!
//! Run: `cargo run --release --example bench_overlap -- --json target/bench_overlap.json`

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::WeightFormat;
use aligner::model::remote::{Client, CompletionParams, EndpointConfig};
use aligner::model::{ModelTokenizer, generate::SamplingConfig};
use aligner::stream::remote::RemoteUpstream;
use aligner::stream::{
    CorrectorConfig, Identity, LocalCorrector, LocalUpstream, MachineConfig, Record, StreamMachine,
    UpstreamConfig, modes, split_sentences,
};
use anyhow::Context;
use clap::Parser;

/// The questions of `bench_stream`.
const QUESTIONS: [&str; 3] = [
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother. How many pencils does she have left?",
    "A baker makes 7 trays of 12 muffins and sells 50 of them. How many muffins are left?",
    "Omar saves $9 a week for 8 weeks, then spends $25 on a game. How many dollars does he have?",
];

#[derive(Parser)]
#[command(about = "Sequential against overlapped Stream Aligner loop with a remote-like upstream")]
struct Args {
    /// Milliseconds per streamed chunk (about one token) of the simulated upstream.
    #[arg(long, default_value_t = 25)]
    token_ms: u64,
    /// Most upstream tokens per answer.
    #[arg(long, default_value_t = 160)]
    max_tokens: usize,
    /// Aligner folder, model or LoRA adapter (default: assets/stream-aligner).
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    /// Do not prepare the aligner's prompt while the upstream writes
    /// (`CorrectorConfig::prepare = false`): the overlapped answers are then the sequential ones.
    #[arg(long)]
    no_prepare: bool,
    /// Runs of each mode per question (alternated; the best is kept).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Serves `answers[i]` for prompts that start with `prefixes[i]`, continued after as many
/// sentences as the rest of the prompt holds, four characters per chunk with `delay` before
/// each, until the answer ends or the client closes the stream.
fn serve(prefixes: Vec<String>, answers: Vec<String>, delay: Duration) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/v1", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (prefixes, answers) = (prefixes.clone(), answers.clone());
            std::thread::spawn(move || {
                let _ = respond(stream, &prefixes, &answers, delay);
            });
        }
    });
    Ok(url)
}

fn respond(
    mut stream: std::net::TcpStream,
    prefixes: &[String],
    answers: &[String],
    delay: Duration,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: serde_json::Value = serde_json::from_slice(&body)?;
    let prompt = request["prompt"].as_str().context("no prompt")?;
    let (i, prefix) = prefixes
        .iter()
        .enumerate()
        .find(|(_, p)| prompt.starts_with(p.as_str()))
        .context("unknown question")?;
    let accepted = &prompt[prefix.len()..];
    let done = split_sentences(accepted).len();
    let answer = &answers[i];
    let rest: String = split_sentences(answer)
        .into_iter()
        .skip(done)
        .map(|r| &answer[r])
        .collect();
    let chars: Vec<char> = rest.chars().collect();
    let mut write = |text: &str| -> std::io::Result<()> {
        stream.write_all(text.as_bytes())?;
        stream.flush()
    };
    write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")?;
    for chunk in chars.chunks(4) {
        std::thread::sleep(delay);
        let text: String = chunk.iter().collect();
        let event = serde_json::json!({"choices": [{"text": text, "finish_reason": null}]});
        write(&format!("data: {event}\n\n"))?;
    }
    let end = serde_json::json!({"choices": [{"text": "", "finish_reason": "stop"}]});
    write(&format!("data: {end}\n\ndata: [DONE]\n\n"))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = tch::Device::Cpu;
    let upstream_dir = common::model_dir(None)?;
    let aligner_dir = args
        .aligner_dir
        .clone()
        .unwrap_or_else(|| common::repo_path("assets/stream-aligner"));
    let (up_model, up_tok_dir) = common::load_for_inference(
        &upstream_dir,
        device,
        None,
        common::Weights(None),
        WeightFormat::Int4,
    )?;
    let (al_model, al_tok_dir) = common::load_for_inference(
        &aligner_dir,
        device,
        None,
        common::Weights(None),
        WeightFormat::Int8,
    )?;
    let up_tok = ModelTokenizer::from_dir(&up_tok_dir)?;
    let al_tok = ModelTokenizer::from_dir(&al_tok_dir)?;
    let up_config = UpstreamConfig {
        sampling: SamplingConfig::greedy(),
        system: Some(MATH_SYSTEM_PROMPT.to_owned()),
        ..UpstreamConfig::default()
    };
    // The answers the simulated upstream streams: the local upstream's own.
    let mut local = LocalUpstream::new(&up_model, up_tok.clone(), up_config)?;
    let mut prefixes = Vec::new();
    let mut answers = Vec::new();
    for q in QUESTIONS {
        prefixes.push(local.render_prompt(q)?);
        answers.push(modes::upstream_only(&mut local, q, args.max_tokens, |_| {})?.answer);
    }
    let prompts: Vec<(String, String)> = QUESTIONS
        .iter()
        .map(|q| (*q).to_owned())
        .zip(prefixes.iter().cloned())
        .collect();
    let url = serve(prefixes, answers, Duration::from_millis(args.token_ms))?;
    let upstream = || -> anyhow::Result<RemoteUpstream> {
        let client = Client::new(EndpointConfig {
            base_url: url.clone(),
            model: "simulated".into(),
            ..EndpointConfig::default()
        })?;
        let prompts = prompts.clone();
        Ok(RemoteUpstream::new(
            client,
            CompletionParams::default(),
            Box::new(move |c| {
                Ok(prompts
                    .iter()
                    .find(|(question, _)| question == c.last_user())
                    .map(|(_, prefix)| prefix.clone())
                    .unwrap_or_default())
            }),
        ))
    };
    let config = MachineConfig {
        max_total_tokens: args.max_tokens,
        ..MachineConfig::default()
    };
    eprintln!(
        "simulated upstream at {url}, {} ms per chunk; aligner {} (int8)",
        args.token_ms,
        aligner_dir.display()
    );
    const MODES: [&str; 3] = ["upstream", "sequential", "overlapped"];
    // Best wall and first-sentence times per mode, summed over the questions.
    let mut wall = [0f64; 3];
    let mut first = [0f64; 3];
    let mut same = 0;
    let mut ahead = (0, 0);
    for q in QUESTIONS {
        let mut best = [(f64::MAX, f64::MAX); 3];
        let mut answers: [Option<String>; 3] = Default::default();
        for _ in 0..args.repeats.max(1) {
            for (mi, mode) in MODES.iter().enumerate() {
                let mut up = upstream()?;
                let mut machine = StreamMachine::new(q, config.clone())?;
                let record: Record = match *mode {
                    "upstream" => machine.run(&mut up, &mut Identity, |_| {})?,
                    _ => {
                        let corrector_config = CorrectorConfig {
                            prepare: !args.no_prepare,
                            ..CorrectorConfig::default()
                        };
                        let mut al =
                            LocalCorrector::new(&al_model, al_tok.clone(), corrector_config)?;
                        if *mode == "sequential" {
                            machine.run(&mut up, &mut al, |_| {})?
                        } else {
                            machine.run_overlapped(&mut up, &mut al, |_| {})?
                        }
                    }
                };
                let s = &record.summary;
                let first_ms = s.first_sentence_ms.unwrap_or(s.wall_ms);
                best[mi].0 = best[mi].0.min(s.wall_ms);
                best[mi].1 = best[mi].1.min(first_ms);
                if *mode == "overlapped" && answers[mi].is_none() {
                    ahead.0 += s.drafts_ahead;
                    ahead.1 += s.drafts_ahead_wasted;
                }
                answers[mi].get_or_insert(record.answer);
            }
        }
        same += usize::from(answers[1] == answers[2]);
        for mi in 0..3 {
            wall[mi] += best[mi].0;
            first[mi] += best[mi].1;
        }
        eprintln!(
            "{:.50}...: upstream {:.2} s, sequential {:.2} s, overlapped {:.2} s (first sentence {:.2} / {:.2} / {:.2} s)",
            q,
            best[0].0 / 1e3,
            best[1].0 / 1e3,
            best[2].0 / 1e3,
            best[0].1 / 1e3,
            best[1].1 / 1e3,
            best[2].1 / 1e3
        );
    }
    let n = QUESTIONS.len() as f64;
    println!("| mode | wall s / question | vs upstream alone | first sentence s |");
    println!("|---|---:|---:|---:|");
    let mut json = serde_json::Map::new();
    for (mi, mode) in MODES.iter().enumerate() {
        println!(
            "| {mode} | {:.2} | {:.2}x | {:.2} |",
            wall[mi] / 1e3 / n,
            wall[mi] / wall[0].max(1e-9),
            first[mi] / 1e3 / n
        );
        json.insert(
            (*mode).to_owned(),
            serde_json::json!({
                "wall_s_per_question": wall[mi] / 1e3 / n,
                "vs_upstream": wall[mi] / wall[0].max(1e-9),
                "first_sentence_s": first[mi] / 1e3 / n,
            }),
        );
    }
    println!(
        "\noverlapped / sequential: {:.2}x wall, {:.2}x first sentence; drafts written ahead: {} used, {} dropped; answers equal: {same}/{}",
        wall[2] / wall[1].max(1e-9),
        first[2] / first[1].max(1e-9),
        ahead.0,
        ahead.1,
        QUESTIONS.len()
    );
    json.insert("token_ms".into(), args.token_ms.into());
    json.insert("prepare".into(), (!args.no_prepare).into());
    json.insert("drafts_ahead_used".into(), ahead.0.into());
    json.insert("drafts_ahead_dropped".into(), ahead.1.into());
    json.insert("same_answers".into(), same.into());
    json.insert("questions".into(), QUESTIONS.len().into());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
