//! Pairwise judging end to end: an HTTP judge against a judge server on 127.0.0.1, and a local
//! model as judge.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aligner_eval::judge::{
    AnswerPair, Dimension, HttpJudge, LocalJudge, Outcome, ResponseCache, Tally, judge_all,
    judge_all_parallel,
};
use aligner_model::remote::{Client, EndpointConfig};

/// A chat endpoint whose replies come from `decide(prompt text)`; counts requests.
fn judge_server(decide: fn(&str) -> String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(&stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let prompt = request["messages"][0]["content"]
                .as_str()
                .unwrap_or_default();
            let reply = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": decide(prompt)}, "finish_reason": "stop"}]}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (url, count)
}

fn pairs() -> Vec<AnswerPair> {
    (0..5)
        .map(|i| AnswerPair {
            question: format!("Question {i}?"),
            original: format!("ORIGINAL answer {i}."),
            aligned: format!("ALIGNED answer {i}."),
        })
        .collect()
}

fn client(url: String) -> Client {
    Client::new(EndpointConfig {
        base_url: url,
        model: "judge".into(),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        max_retries: 1,
        initial_backoff: Duration::from_millis(5),
        ..EndpointConfig::default()
    })
    .unwrap()
}

/// Prefers the aligned answer wherever it stands, on both dimensions.
fn fair(prompt: &str) -> String {
    let aligned_in_a = prompt.contains("[Answer A]\nALIGNED");
    if prompt.contains("more harmful") {
        format!(
            "The other one is worse.\nMore harmful: [[{}]]",
            if aligned_in_a { "B" } else { "A" }
        )
    } else {
        format!(
            "It is clearer.\nBetter: [[{}]]",
            if aligned_in_a { "A" } else { "B" }
        )
    }
}

/// Always names position A: pure position bias.
fn biased(prompt: &str) -> String {
    if prompt.contains("more harmful") {
        "More harmful: [[A]]".into()
    } else {
        "Better: [[A]]".into()
    }
}

#[test]
fn http_judge_swaps_positions_and_caches() {
    let (url, count) = judge_server(fair);
    let cache_dir = tempfile::tempdir().unwrap();
    let judge = HttpJudge::new(client(url)).with_cache(ResponseCache::new(cache_dir.path()));
    let results = judge_all_parallel(&judge, &pairs(), &Dimension::ALL, 4).unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(
        count.load(Ordering::SeqCst),
        20,
        "each pair is judged in both orders"
    );
    for d in Dimension::ALL {
        let t = Tally::of(&results, d);
        assert_eq!(
            (t.counts.wins, t.counts.losses, t.counts.equal, t.invalid),
            (5, 0, 0, 0),
            "{d}"
        );
        assert_eq!(t.win_rate(), Some(100.0));
    }
    let report = aligner_eval::report::judge_report(
        "judge",
        5,
        results.clone(),
        &aligner_eval::stats::BootstrapConfig::default(),
    )
    .unwrap();
    assert_eq!(report.overall.map(|o| o.estimate), Some(100.0));
    assert!(
        report.to_markdown().contains("| overall | 100.0%"),
        "{}",
        report.to_markdown()
    );
    // A second run is served from the cache.
    let again = judge_all_parallel(&judge, &pairs(), &Dimension::ALL, 4).unwrap();
    assert_eq!(again, results);
    assert_eq!(count.load(Ordering::SeqCst), 20);
}

#[test]
fn position_bias_becomes_ties() {
    let (url, _) = judge_server(biased);
    let judge = HttpJudge::new(client(url));
    let results = judge_all(&judge, &pairs(), &[Dimension::Helpfulness]).unwrap();
    assert!(results.iter().all(|r| r.outcome == Outcome::Tie));
    assert_eq!(
        Tally::of(&results, Dimension::Helpfulness).win_rate(),
        Some(0.0)
    );
}

#[test]
fn local_model_judge_produces_counted_outcomes() {
    use aligner_model::{Llama, ModelTokenizer, hub};
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(hub::is_imported(&dir), "run `cargo xtask setup` first");
    let (model, _vs) = Llama::load(&dir, tch::Kind::Float, tch::Device::Cpu).unwrap();
    let judge = LocalJudge::new(
        model,
        ModelTokenizer::from_dir(&dir).unwrap(),
        "SmolLM2-135M-Instruct",
    )
    .unwrap()
    .with_max_new_tokens(48);
    let pair = AnswerPair {
        question: "What is the capital of France?".into(),
        original: "I don't know.".into(),
        aligned: "The capital of France is Paris.".into(),
    };
    let results = judge_all(&judge, &[pair], &[Dimension::Helpfulness]).unwrap();
    // A 135M model is a weak judge: whatever it says must be read or counted as invalid, and both
    // raw replies must be kept for auditing.
    assert_eq!(results.len(), 1);
    assert!(
        !results[0].original_first_reply.is_empty() && !results[0].aligned_first_reply.is_empty()
    );
    let t = Tally::of(&results, Dimension::Helpfulness);
    assert_eq!(t.counts.total() + t.invalid, 1);
}

#[test]
fn win_rate_chart_renders_a_png() {
    use aligner_eval::report::{Bar, BarChart, write_bar_chart};
    use aligner_eval::stats::Interval;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("winrate.png");
    let chart = BarChart {
        title: "Win rate of aligned answers".into(),
        y_label: "win rate (%)".into(),
        bars: vec![
            Bar {
                label: "helpfulness".into(),
                interval: Interval {
                    estimate: 40.0,
                    lower: 20.0,
                    upper: 60.0,
                    confidence: 0.95,
                },
            },
            Bar {
                label: "harmlessness".into(),
                interval: Interval {
                    estimate: -10.0,
                    lower: -30.0,
                    upper: 5.0,
                    confidence: 0.95,
                },
            },
        ],
        y_min: -100.0,
        y_max: 100.0,
    };
    write_bar_chart(&path, &chart).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}
