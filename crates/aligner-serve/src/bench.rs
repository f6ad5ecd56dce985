//! The statistics and the report of the server benchmark (`examples/bench_serve.rs`): the
//! server's overhead against the library called directly, and its throughput at several
//! numbers of concurrent clients. Measuring is the example's; this module only summarises.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aligner_model::chat::ChatMessage;
use aligner_model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig};
use serde_json::{Value, json};

/// One answered request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds to the first corrected sentence.
    pub first: f64,
    /// Seconds to the end of the answer.
    pub total: f64,
    /// The answer.
    pub answer: String,
}

impl Sample {
    /// A sample from its two times and its answer.
    #[must_use]
    pub fn new(first: Duration, total: Duration, answer: String) -> Self {
        Self {
            first: first.as_secs_f64(),
            total: total.as_secs_f64(),
            answer,
        }
    }
}

/// One streamed chat request to the server at `base` (`http://HOST:PORT/v1`) for `model` with
/// the library's OpenAI client: the time to the first non-empty content, to the end, and the
/// answer.
pub fn streamed_request(
    base: &str,
    model: &str,
    question: &str,
    max_tokens: usize,
) -> aligner_model::Result<Sample> {
    let client = Client::new(EndpointConfig {
        base_url: base.to_owned(),
        model: model.to_owned(),
        timeout: Duration::from_secs(3600),
        ..EndpointConfig::default()
    })?;
    let params = CompletionParams {
        max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
        ..CompletionParams::default()
    };
    let started = Instant::now();
    let mut first = None;
    let answer = client.chat_streaming(
        &[ChatMessage::user(question)],
        "",
        ChatPrefill::None,
        &params,
        &mut |delta| {
            if !delta.is_empty() {
                first.get_or_insert_with(|| started.elapsed());
            }
            std::ops::ControlFlow::Continue(())
        },
    )?;
    let total = started.elapsed();
    Ok(Sample::new(first.unwrap_or(total), total, answer.text))
}

/// The CPU's model name with its vector extensions ([`aligner_model::cpu::model_name`],
/// [`aligner_model::cpu::vector_flags`]), its cores and the load average (1, 5, 15 minutes)
/// now: the machine a measurement ran on, and how busy it was.
#[must_use]
pub fn machine_now() -> (String, usize, String) {
    let cpu = format!(
        "{} ({})",
        aligner_model::cpu::model_name(),
        aligner_model::cpu::vector_flags()
    );
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    (cpu, cores, load)
}

/// The throughput of one number of concurrent clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests answered.
    pub requests: usize,
    /// Answers per second of wall time.
    pub answers_per_s: f64,
    /// Answer tokens per second of wall time.
    pub tokens_per_s: f64,
    /// Median and 95th percentile of the request latency, seconds.
    pub p50: f64,
    /// See `p50`.
    pub p95: f64,
}

impl Throughput {
    /// The throughput of `samples` answered by `clients` clients in `wall`, with `tokens`
    /// answer tokens in all.
    #[must_use]
    pub fn new(clients: usize, samples: &[Sample], tokens: usize, wall: Duration) -> Self {
        let wall = wall.as_secs_f64().max(f64::EPSILON);
        let latencies: Vec<f64> = samples.iter().map(|s| s.total).collect();
        Self {
            clients,
            requests: samples.len(),
            answers_per_s: samples.len() as f64 / wall,
            tokens_per_s: tokens as f64 / wall,
            p50: percentile(&latencies, 0.5),
            p95: percentile(&latencies, 0.95),
        }
    }
}

/// Runs `clients` concurrent clients against the server at `base` (each on its own thread,
/// sending `requests_per_client` streamed requests one after another, client `c`'s request `r`
/// asking `questions[(c + r) % len]` of `model`) and measures them; `count_tokens` gives the
/// token count of an answer.
///
/// # Errors
/// The first failed request, a client thread that panicked, or a failed token count.
pub fn concurrent_clients(
    base: &str,
    model: &str,
    questions: &[&str],
    clients: usize,
    requests_per_client: usize,
    max_tokens: usize,
    count_tokens: impl Fn(&str) -> aligner_model::Result<usize>,
) -> aligner_model::Result<Throughput> {
    let started = Instant::now();
    let results: Vec<aligner_model::Result<Vec<Sample>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    (0..requests_per_client)
                        .map(|r| {
                            let question = questions[(c + r) % questions.len().max(1)];
                            streamed_request(base, model, question, max_tokens)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(aligner_model::Error::InvalidArgument(
                        "a benchmark client thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let wall = started.elapsed();
    let samples = results
        .into_iter()
        .collect::<aligner_model::Result<Vec<_>>>()?
        .concat();
    let tokens = samples
        .iter()
        .map(|s| count_tokens(&s.answer))
        .sum::<aligner_model::Result<usize>>()?;
    Ok(Throughput::new(clients, &samples, tokens, wall))
}

/// The `q` quantile of `values` (nearest rank; 0 for none).
#[must_use]
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, minimum and maximum of `values`.
#[must_use]
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (percentile(values, 0.5), min, max)
}

/// The report: JSON and a markdown section.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every figure.
    pub json: Value,
    /// The `## Aligning server` section.
    pub markdown: String,
}

/// The heading of the section [`render`] writes.
pub const HEADING: &str = "## Aligning server";

/// Summarises the overhead `rounds` (each: the direct samples and the served ones, question by
/// question) and the `throughput` measured on `machine`.
#[must_use]
pub fn render(
    machine: &str,
    rounds: &[(Vec<Sample>, Vec<Sample>)],
    throughput: &[Throughput],
    max_tokens: usize,
) -> Report {
    let sum = |s: &[Sample], f: fn(&Sample) -> f64| s.iter().map(f).sum::<f64>();
    let ratios = |f: fn(&Sample) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .map(|(d, s)| sum(s, f) / sum(d, f).max(f64::EPSILON))
            .collect()
    };
    let (first_ratio, total_ratio) = (ratios(|s| s.first), ratios(|s| s.total));
    let all = |side: usize, f: fn(&Sample) -> f64| -> Vec<f64> {
        rounds
            .iter()
            .flat_map(|r| if side == 0 { &r.0 } else { &r.1 })
            .map(f)
            .collect()
    };
    let pairs: Vec<(&Sample, &Sample)> = rounds.iter().flat_map(|(d, s)| d.iter().zip(s)).collect();
    let equal = pairs.iter().filter(|(d, s)| d.answer == s.answer).count();
    let tps = |n: usize| {
        throughput
            .iter()
            .find(|t| t.clients == n)
            .map(|t| t.tokens_per_s)
    };
    let scaling = match (tps(1), throughput.last()) {
        (Some(one), Some(last)) if one > 0.0 => Some((last.clients, last.tokens_per_s / one)),
        _ => None,
    };
    let questions = rounds.first().map_or(0, |r| r.0.len());
    let mut md = format!("{HEADING}\n\n");
    let _ = writeln!(
        md,
        "Written by `examples/bench_serve.rs` on {machine}. The load averages say how busy the \
         machine was; on a shared machine absolute times are noisy, so the direct and the served \
         runs alternate in each round (which goes first alternates too) and both meet the same \
         noise. Upstream: the embedded SmolLM2-135M-Instruct (packed int4, \
         math system prompt, greedy, at most {max_tokens} tokens, ending after `The answer is`); \
         aligner: the shipped Stream Aligner (packed int8). The server runs on 127.0.0.1 with 32 \
         slots and is called with the library's OpenAI client, streamed.\n"
    );
    let _ = writeln!(
        md,
        "Overhead: {questions} questions per round, {} rounds; each answer through the server \
         (HTTP, SSE, the worker thread with its batched drafting and correcting) against \
         `StreamMachine::run` on the same request in the same process. Ratios are of each \
         round's sums, median [min, max] over the rounds; goal <= 1.05x.\n",
        rounds.len()
    );
    md.push_str(
        "| path | first corrected sentence s (median) | answer s (median) |\n|---|---:|---:|\n",
    );
    for (name, side) in [("library directly", 0), ("through the server", 1)] {
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} |",
            spread(&all(side, |s| s.first)).0,
            spread(&all(side, |s| s.total)).0
        );
    }
    let show = |(m, lo, hi): (f64, f64, f64)| format!("{m:.3}x [{lo:.3}, {hi:.3}]");
    let _ = writeln!(
        md,
        "| server / direct | {} | {} |\n\nAnswers equal between the two paths: {equal} of {}.\n",
        show(spread(&first_ratio)),
        show(spread(&total_ratio)),
        pairs.len()
    );
    md.push_str(
        "Throughput: each client sends its requests one after another, streamed; tokens are the \
         answers' tokens (the usage's `completion_tokens`).\n\n| clients | requests | answers/s | \
         tokens/s | latency p50 s | latency p95 s |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in throughput {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.1} | {:.2} | {:.2} |",
            t.clients, t.requests, t.answers_per_s, t.tokens_per_s, t.p50, t.p95
        );
    }
    if let Some((n, x)) = scaling {
        let _ = writeln!(
            md,
            "\n{n} clients: {x:.2}x the tokens/s of one client (goal >= 2x)."
        );
    }
    let json = json!({
        "machine": machine,
        "max_tokens": max_tokens,
        "overhead": {
            "rounds": rounds.len(),
            "questions": questions,
            "first_ratio": spread(&first_ratio),
            "total_ratio": spread(&total_ratio),
            "direct_first_s": spread(&all(0, |s| s.first)),
            "server_first_s": spread(&all(1, |s| s.first)),
            "direct_total_s": spread(&all(0, |s| s.total)),
            "server_total_s": spread(&all(1, |s| s.total)),
            "equal_answers": equal,
            "pairs": pairs.len(),
        },
        "throughput": throughput.iter().map(|t| json!({
            "clients": t.clients, "requests": t.requests, "answers_per_s": t.answers_per_s,
            "tokens_per_s": t.tokens_per_s, "p50_s": t.p50, "p95_s": t.p95,
        })).collect::<Vec<_>>(),
        "tokens_per_s_scaling": scaling.map(|(_, x)| x),
    });
    Report { json, markdown: md }
}

/// Replaces the section under `heading` (a `## ` line) of the markdown document at `path`, up
/// to the next `## ` heading, with `section`, or appends it; the document is written atomically.
pub fn replace_section(path: &Path, heading: &str, section: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |i| start + heading.len() + i + 1);
            format!("{}{}\n\n{}", &old[..start], section.trim_end(), &old[end..])
        }
        None => format!("{}\n\n{}", old.trim_end(), section.trim_end()),
    };
    aligner_data::atomic::write(path, (new.trim_end().to_owned() + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_the_section_replacement() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.95), 4.0);
        assert_eq!(spread(&v), (2.0, 1.0, 4.0));
        let dir = std::env::temp_dir().join(format!("bench-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("b.md");
        std::fs::write(&doc, "# B\n\n## A\n\na\n").unwrap();
        replace_section(&doc, HEADING, &format!("{HEADING}\n\nfirst\n")).unwrap();
        std::fs::write(
            &doc,
            std::fs::read_to_string(&doc).unwrap() + "\n## Z\n\nz\n",
        )
        .unwrap();
        replace_section(&doc, HEADING, &format!("{HEADING}\n\nsecond\n")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&doc).unwrap(),
            format!("# B\n\n## A\n\na\n\n{HEADING}\n\nsecond\n\n## Z\n\nz\n")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
