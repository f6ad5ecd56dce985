//! The Stream Aligner loop with an upstream that runs elsewhere: sequential (`run`) against
//! overlapped (`run_overlapped`, the aligner working while the upstream writes).
//!
//! The upstream is simulated: a completions endpoint on 127.0.0.1 that streams, at a fixed
//! pace per chunk of about one token, the answer the local upstream model (the embedded
//! SmolLM2-135M-Instruct, packed int4) wrote to each question greedily; after any accepted text
//! it goes on with the sentence after as many sentences as that text holds. So the upstream's
//! pace is chosen ([`Options::token_ms`], default 25 ms: a large model served on GPUs streams
//! 30-50 tokens per second) and costs no local CPU, as with a 70B upstream on other machines.
//! The aligner is real: the shipped Stream Aligner (packed int8) on this machine.

use crate::data::file::WrapFileError as _;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::{Bench, QUESTIONS, ratio};
use crate::app::{Error, Result, load_for_inference, model_dir, repo_path};
use crate::data::template::MATH_SYSTEM_PROMPT;
use crate::model::remote::{Client, CompletionParams, EndpointConfig};
use crate::model::{ModelTokenizer, WeightFormat, generate::SamplingConfig};
use crate::stream::remote::RemoteUpstream;
use crate::stream::{
    CorrectorConfig, Identity, LocalCorrector, LocalUpstream, MachineConfig, Record, StreamMachine,
    UpstreamConfig, modes, split_sentences,
};

/// How many of [`QUESTIONS`] this benchmark uses.
pub const QUESTION_COUNT: usize = 3;

/// What to measure with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Milliseconds per streamed chunk (about one token) of the simulated upstream.
    pub token_ms: u64,
    /// Most upstream tokens per answer.
    pub max_tokens: usize,
    /// Aligner folder, model or LoRA adapter (default: assets/stream-aligner).
    pub aligner_dir: Option<PathBuf>,
    /// Do not prepare the aligner's prompt while the upstream writes
    /// (`CorrectorConfig::prepare = false`): the overlapped answers are then the sequential
    /// ones.
    pub no_prepare: bool,
    /// Runs of each mode per question (alternated; the best is kept).
    pub repeats: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token_ms: 25,
            max_tokens: 160,
            aligner_dir: None,
            no_prepare: false,
            repeats: 2,
        }
    }
}

/// The text the simulated upstream streams for `prompt`: the answer of the first of `prefixes`
/// that starts it, after as many sentences as the rest of the prompt (the accepted text)
/// holds. `None` for a prompt of no known question.
pub fn continuation(prefixes: &[String], answers: &[String], prompt: &str) -> Option<String> {
    let (i, prefix) = prefixes
        .iter()
        .enumerate()
        .find(|(_, p)| prompt.starts_with(p.as_str()))?;
    let done = split_sentences(&prompt[prefix.len()..]).len();
    let answer = answers.get(i)?;
    Some(
        split_sentences(answer)
            .into_iter()
            .skip(done)
            .map(|r| &answer[r])
            .collect(),
    )
}

/// Serves [`continuation`]s of `answers`, four characters per chunk with `delay` before each,
/// until the answer ends or the client closes the stream. Returns the base URL.
fn serve(prefixes: Vec<String>, answers: Vec<String>, delay: Duration) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(std::path::Path::new("127.0.0.1:0"), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io(std::path::Path::new("127.0.0.1:0"), e))?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (prefixes, answers) = (prefixes.clone(), answers.clone());
            std::thread::spawn(move || {
                let _ = respond(stream, &prefixes, &answers, delay);
            });
        }
    });
    Ok(format!("http://{address}/v1"))
}

fn respond(
    mut stream: std::net::TcpStream,
    prefixes: &[String],
    answers: &[String],
    delay: Duration,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: serde_json::Value = serde_json::from_slice(&body)?;
    let rest = request["prompt"]
        .as_str()
        .and_then(|prompt| continuation(prefixes, answers, prompt))
        .ok_or_else(|| std::io::Error::other("no prompt of a known question"))?;
    let chars: Vec<char> = rest.chars().collect();
    let mut write = |text: &str| -> std::io::Result<()> {
        stream.write_all(text.as_bytes())?;
        stream.flush()
    };
    write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")?;
    for chunk in chars.chunks(4) {
        std::thread::sleep(delay);
        let text: String = chunk.iter().collect();
        let event = json!({"choices": [{"text": text, "finish_reason": null}]});
        write(&format!("data: {event}\n\n"))?;
    }
    let end = json!({"choices": [{"text": "", "finish_reason": "stop"}]});
    write(&format!("data: {end}\n\ndata: [DONE]\n\n"))?;
    Ok(())
}

/// Runs the upstream alone, the sequential and the overlapped loop on each question, keeping
/// the best of the repeats; `log` hears a line per question.
///
/// JSON keys: per mode (`upstream`, `sequential`, `overlapped`) `wall_s_per_question`,
/// `vs_upstream`, `first_sentence_s`; `token_ms`, `prepare`, `drafts_ahead_used`,
/// `drafts_ahead_dropped`, `same_answers`, `questions`.
///
/// # Errors
/// Failures of loading or running the models, or of the simulated endpoint.
pub fn run(args: &Options, mut log: impl FnMut(&str)) -> Result<Bench> {
    let questions = &QUESTIONS[..QUESTION_COUNT];
    let device = tch::Device::Cpu;
    let upstream_dir = model_dir(None)?;
    let aligner_dir = args
        .aligner_dir
        .clone()
        .unwrap_or_else(|| repo_path("assets/stream-aligner"));
    let (up_model, up_tok_dir) =
        load_for_inference(&upstream_dir, device, None, None, WeightFormat::Int4)?;
    let (al_model, al_tok_dir) =
        load_for_inference(&aligner_dir, device, None, None, WeightFormat::Int8)?;
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
    for q in questions {
        prefixes.push(local.render_prompt(q)?);
        answers.push(modes::upstream_only(&mut local, q, args.max_tokens, |_| {})?.answer);
    }
    let prompts: Vec<(String, String)> = questions
        .iter()
        .map(|q| (*q).to_owned())
        .zip(prefixes.iter().cloned())
        .collect();
    let url = serve(prefixes, answers, Duration::from_millis(args.token_ms))?;
    let upstream = || -> Result<RemoteUpstream> {
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
    log(&format!(
        "simulated upstream at {url}, {} ms per chunk; aligner {} (int8)",
        args.token_ms,
        aligner_dir.display()
    ));
    const MODES: [&str; 3] = ["upstream", "sequential", "overlapped"];
    // Best wall and first-sentence times per mode, summed over the questions.
    let mut wall = [0f64; 3];
    let mut first = [0f64; 3];
    let mut same = 0;
    let mut ahead = (0, 0);
    for q in questions {
        let mut best = [(f64::MAX, f64::MAX); 3];
        let mut answers: [Option<String>; 3] = Default::default();
        for _ in 0..args.repeats.max(1) {
            for (mi, mode) in MODES.iter().enumerate() {
                let mut up = upstream()?;
                let mut machine = StreamMachine::new(*q, config.clone())?;
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
        log(&format!(
            "{:.50}...: upstream {:.2} s, sequential {:.2} s, overlapped {:.2} s (first sentence {:.2} / {:.2} / {:.2} s)",
            q,
            best[0].0 / 1e3,
            best[1].0 / 1e3,
            best[2].0 / 1e3,
            best[0].1 / 1e3,
            best[1].1 / 1e3,
            best[2].1 / 1e3
        ));
    }
    let n = questions.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| mode | wall s / question | vs upstream alone | first sentence s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let mut json = serde_json::Map::new();
    for (mi, mode) in MODES.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {mode} | {:.2} | {:.2}x | {:.2} |",
            wall[mi] / 1e3 / n,
            ratio(wall[mi], wall[0]),
            first[mi] / 1e3 / n
        );
        json.insert(
            (*mode).to_owned(),
            json!({
                "wall_s_per_question": wall[mi] / 1e3 / n,
                "vs_upstream": ratio(wall[mi], wall[0]),
                "first_sentence_s": first[mi] / 1e3 / n,
            }),
        );
    }
    let _ = writeln!(
        s,
        "\noverlapped / sequential: {:.2}x wall, {:.2}x first sentence; drafts written ahead: {} used, {} dropped; answers equal: {same}/{}",
        ratio(wall[2], wall[1]),
        ratio(first[2], first[1]),
        ahead.0,
        ahead.1,
        questions.len()
    );
    json.insert("token_ms".into(), args.token_ms.into());
    json.insert("prepare".into(), (!args.no_prepare).into());
    json.insert("drafts_ahead_used".into(), ahead.0.into());
    json.insert("drafts_ahead_dropped".into(), ahead.1.into());
    json.insert("same_answers".into(), same.into());
    json.insert("questions".into(), questions.len().into());
    Ok(Bench { json, summary: s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_skips_the_sentences_already_accepted() {
        let prefixes = ["<q1>".to_owned(), "<q2>".to_owned()];
        let answers = [
            "A one. A two. A three.".to_owned(),
            "B one. B two.".to_owned(),
        ];
        assert_eq!(
            continuation(&prefixes, &answers, "<q1>").as_deref(),
            Some("A one. A two. A three.")
        );
        assert_eq!(
            continuation(&prefixes, &answers, "<q1>Fixed one.").as_deref(),
            Some("A two. A three.")
        );
        assert_eq!(
            continuation(&prefixes, &answers, "<q2>B one. B two.").as_deref(),
            Some("")
        );
        assert_eq!(continuation(&prefixes, &answers, "<q3>"), None);
    }
}
