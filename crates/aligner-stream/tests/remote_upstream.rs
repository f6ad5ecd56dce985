//! The remote upstream against a scripted completions server on 127.0.0.1: it stops reading at
//! the first sentence boundary, continues from the accepted (corrected) text, and runs the whole
//! Stream Aligner loop.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aligner_model::remote::{Client, CompletionParams, EndpointConfig};
use aligner_stream::remote::RemoteUpstream;
use aligner_stream::{Correction, Corrector, DraftStop, MachineConfig, StreamMachine, Upstream};

/// Serves completions: the answer is `SENTENCES`, continued after as many sentences as the
/// prompt's accepted text holds (whatever their wording), streamed a few characters per chunk.
/// Records the prompts. With a `delay`, chunks are written one by one with that pause before
/// each (no content length; the response ends when the server closes), and a client that
/// closes the stream early stops the writing.
fn server_with(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    const PREFIX: &str = "Q: boiling?\nA:";
    const SENTENCES: [&str; 3] = [
        " Water boils at 100 degrees. ",
        "At altitude it boils lower.\n",
        "- Use a lid.",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&prompts);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
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
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let prompt = request["prompt"].as_str().unwrap().to_owned();
            seen.lock().unwrap().push(prompt.clone());
            let accepted = &prompt[PREFIX.len()..];
            let done = accepted.matches(". ").count() + accepted.matches(".\n").count();
            let rest: String = SENTENCES.iter().skip(done).copied().collect();
            let chars: Vec<char> = rest.chars().collect();
            if !delay.is_zero() {
                let mut write = |text: &str| -> std::io::Result<()> {
                    stream.write_all(text.as_bytes())?;
                    stream.flush()
                };
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                let mut result = write(head);
                for chunk in chars.chunks(4) {
                    std::thread::sleep(delay);
                    let text: String = chunk.iter().collect();
                    let event =
                        serde_json::json!({"choices": [{"text": text, "finish_reason": null}]});
                    result = result.and_then(|()| write(&format!("data: {event}\n\n")));
                }
                let end = serde_json::json!({"choices": [{"text": "", "finish_reason": "stop"}]});
                let _ = result.and_then(|()| write(&format!("data: {end}\n\ndata: [DONE]\n\n")));
                continue;
            }
            let mut sse = String::new();
            for chunk in chars.chunks(4) {
                let text: String = chunk.iter().collect();
                sse.push_str(&format!(
                    "data: {}\n\n",
                    serde_json::json!({"choices": [{"text": text, "finish_reason": null}]})
                ));
            }
            sse.push_str(&format!(
                "data: {}\n\ndata: [DONE]\n\n",
                serde_json::json!({"choices": [{"text": "", "finish_reason": "stop"}]})
            ));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sse}",
                sse.len()
            );
        }
    });
    (url, prompts)
}

fn server() -> (String, Arc<Mutex<Vec<String>>>) {
    server_with(Duration::ZERO)
}

fn upstream(url: String) -> RemoteUpstream {
    let client = Client::new(EndpointConfig {
        base_url: url,
        model: "upstream".into(),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        max_retries: 0,
        initial_backoff: Duration::from_millis(1),
        ..EndpointConfig::default()
    })
    .unwrap();
    RemoteUpstream::new(
        client,
        CompletionParams::default(),
        Box::new(|c| Ok(format!("Q: {}\nA:", c.last_user()))),
    )
}

#[test]
fn drafts_stop_at_the_first_sentence() {
    let (url, prompts) = server();
    let mut up = upstream(url);
    let first = up.draft("boiling?", "", 64).unwrap();
    assert_eq!(first.text, " Water boils at 100 degrees. ");
    assert_eq!(first.stop, DraftStop::Sentence);
    let last = up
        .draft(
            "boiling?",
            " Water boils at 100 degrees. At altitude it boils lower.\n",
            64,
        )
        .unwrap();
    assert_eq!(
        (last.text.as_str(), last.stop),
        ("- Use a lid.", DraftStop::Eos)
    );
    assert_eq!(
        prompts.lock().unwrap()[1],
        "Q: boiling?\nA: Water boils at 100 degrees. At altitude it boils lower.\n"
    );
}

/// Replaces "100 degrees" with "100 °C".
struct Units;
impl Corrector for Units {
    fn correct(
        &mut self,
        _q: &str,
        _prefix: &str,
        last: &str,
    ) -> aligner_stream::Result<Correction> {
        Ok(Correction {
            text: last.replace("100 degrees", "100 °C"),
            tokens: 1,
        })
    }
}

#[test]
fn the_loop_runs_over_the_endpoint_and_continues_from_corrected_text() {
    let (url, prompts) = server();
    let mut up = upstream(url);
    let mut machine = StreamMachine::new("boiling?", MachineConfig::default()).unwrap();
    let record = machine.run(&mut up, &mut Units, |_| {}).unwrap();
    assert_eq!(
        record.answer,
        " Water boils at 100 °C. At altitude it boils lower.\n- Use a lid."
    );
    assert_eq!(record.summary.changed, 1);
    // The second request continued from the corrected sentence, not the draft.
    assert!(prompts.lock().unwrap()[1].ends_with("A: Water boils at 100 °C. "));
}

/// The overlapped loop over a server that streams slowly: the next sentence is requested while
/// the corrector works, the request after a changed sentence is cancelled and asked again from
/// the corrected text, and the answer is the sequential loop's.
#[test]
fn the_overlapped_loop_over_the_endpoint_gives_the_sequential_answer() {
    let (url, prompts) = server_with(Duration::from_millis(5));
    let mut up = upstream(url);
    let mut machine = StreamMachine::new("boiling?", MachineConfig::default()).unwrap();
    /// [`Units`], taking long enough for the request ahead to be sent first.
    struct SlowUnits;
    impl Corrector for SlowUnits {
        fn correct(
            &mut self,
            q: &str,
            prefix: &str,
            last: &str,
        ) -> aligner_stream::Result<Correction> {
            std::thread::sleep(Duration::from_millis(300));
            Units.correct(q, prefix, last)
        }
    }
    let record = machine
        .run_overlapped(&mut up, &mut SlowUnits, |_| {})
        .unwrap();
    assert_eq!(
        record.answer,
        " Water boils at 100 °C. At altitude it boils lower.\n- Use a lid."
    );
    assert_eq!(record.summary.changed, 1);
    // Round 0 was changed: its draft ahead was dropped. Round 1 was kept: its draft ahead (the
    // last sentence) was used. Round 2 ended the answer.
    assert_eq!(record.summary.drafts_ahead, 1, "{:?}", record.summary);
    assert_eq!(
        record.summary.drafts_ahead_wasted, 1,
        "{:?}",
        record.summary
    );
    let prompts = prompts.lock().unwrap();
    // Ahead of round 1, continuing the uncorrected draft; then round 1 from the correction;
    // then ahead of round 2.
    assert_eq!(prompts.len(), 4, "{prompts:?}");
    assert!(prompts[1].ends_with("A: Water boils at 100 degrees. "));
    assert!(prompts[2].ends_with("A: Water boils at 100 °C. "));
    assert!(prompts[3].ends_with("boils lower.\n"));
}
