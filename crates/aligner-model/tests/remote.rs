//! The OpenAI-compatible client against a small scripted HTTP server on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aligner_model::Error;
use aligner_model::chat::ChatMessage;
use aligner_model::remote::{Client, CompletionParams, EndpointConfig};

/// One scripted answer: status line and body.
type Reply = (u16, String);

/// The requests a server saw: path and body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Serves `replies` in order, one per connection, recording each request's path and body.
fn serve(replies: Vec<Reply>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (status, body) in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let request = read_request(&stream);
            log.lock().unwrap().push(request);
            let mut stream = stream;
            let kind = if body.starts_with("data:") {
                "text/event-stream"
            } else {
                "application/json"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}/v1"), seen)
}

fn read_request(stream: &TcpStream) -> (String, String) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let path = first
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (path, String::from_utf8(body).unwrap())
}

fn config(base_url: String) -> EndpointConfig {
    EndpointConfig {
        base_url,
        model: "test-model".into(),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
    }
}

fn sse(pieces: &[&str]) -> String {
    let mut s: String = pieces
        .iter()
        .map(|p| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"choices": [{"text": p}]})
            )
        })
        .collect();
    s.push_str("data: [DONE]\n\n");
    s
}

#[test]
fn streamed_completion_is_assembled_and_can_be_stopped_early() {
    let (url, seen) = serve(vec![
        (200, sse(&["The sky", " is blue.", " It is", " nice."])),
        (200, sse(&["A", "B"])),
    ]);
    let client = Client::new(config(url)).unwrap();
    let params = CompletionParams {
        max_tokens: 32,
        temperature: Some(0.7),
        stop: vec!["\n\n".into()],
        ..CompletionParams::default()
    };
    let mut deltas = Vec::new();
    let out = client
        .complete_streaming("Why?", &params, &mut |d| {
            deltas.push(d.to_owned());
            if d.contains('.') {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(out.text, "The sky is blue.");
    assert!(out.stopped_by_caller);
    assert_eq!(deltas, ["The sky", " is blue."]);

    let all = client
        .complete_streaming("x", &params, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!((all.text.as_str(), all.stopped_by_caller), ("AB", false));

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "/v1/completions");
    let body: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["prompt"], "Why?");
    assert_eq!(body["stream"], true);
    assert_eq!(body["temperature"], 0.7);
    assert_eq!(body["stop"][0], "\n\n");
    assert!(body.get("top_p").is_none(), "unset parameters are not sent");
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let chat_answer = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "Better: [[A]]"}, "finish_reason": "stop"}]});
    let (url, seen) = serve(vec![
        (503, "busy".into()),
        (429, "slow down".into()),
        (200, chat_answer.to_string()),
    ]);
    let client = Client::new(config(url)).unwrap();
    let out = client
        .chat(
            &[ChatMessage::user("Which is better?")],
            &CompletionParams {
                max_tokens: 8,
                ..CompletionParams::default()
            },
        )
        .unwrap();
    assert_eq!(out.text, "Better: [[A]]");
    assert_eq!(out.finish_reason.as_deref(), Some("stop"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(path, _)| path == "/v1/chat/completions"));
    let body: serde_json::Value = serde_json::from_str(&seen[2].1).unwrap();
    assert_eq!(body["messages"][0]["content"], "Which is better?");
}

#[test]
fn client_errors_and_exhausted_retries_are_reported_with_the_url() {
    let (url, _) = serve(vec![(400, "{\"error\": \"bad model\"}".into())]);
    let err = Client::new(config(url.clone()))
        .unwrap()
        .complete("x", &CompletionParams::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Http { url: u, reason } if u.ends_with("/v1/completions") && reason.contains("400") && reason.contains("bad model")),
        "{err:?}"
    );

    let (url, seen) = serve(vec![
        (500, "a".into()),
        (500, "b".into()),
        (500, "c".into()),
    ]);
    let err = Client::new(config(url))
        .unwrap()
        .complete("x", &CompletionParams::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);

    // Nothing listens here: connection refused, retried, then reported.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::new(config(format!("http://127.0.0.1:{port}/v1")))
        .unwrap()
        .complete("x", &CompletionParams::default())
        .unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    assert!(Client::new(config("ftp://x".into())).is_err());
}
