//! The OpenAI-compatible client against a small scripted HTTP server on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aligner_model::Error;
use aligner_model::chat::ChatMessage;
use aligner_model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig};

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
        ..EndpointConfig::default()
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
        matches!(&err, Error::HttpStatus { url: u, status: 400, body, attempts: 1 } if u.ends_with("/v1/completions") && body.contains("bad model")),
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
        matches!(&err, Error::HttpStatus { status: 500, body, attempts: 3, .. } if body == "c"),
        "{err:?}"
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

fn chat_sse(pieces: &[&str]) -> String {
    let mut s = format!(
        "data: {}\n\n",
        serde_json::json!({"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]})
    );
    for p in pieces {
        s.push_str(&format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"delta": {"content": p}, "finish_reason": null}]})
        ));
    }
    s.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        serde_json::json!({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    ));
    s
}

fn collect(client: &Client, prefix: &str, prefill: ChatPrefill) -> aligner_model::Result<String> {
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("Why is the sky blue?"),
    ];
    let params = CompletionParams {
        max_tokens: 16,
        ..CompletionParams::default()
    };
    let mut deltas = String::new();
    client
        .chat_streaming(&messages, prefix, prefill, &params, &mut |d| {
            deltas.push_str(d);
            ControlFlow::Continue(())
        })
        .map(|c| {
            assert_eq!(c.text, deltas);
            c.text
        })
}

/// Each prefill style sends the conversation plus the prefix as that server family expects,
/// and the deltas are assembled.
#[test]
fn chat_streams_continue_a_prefix_in_each_servers_style() {
    let styles = [
        ChatPrefill::ContinueFinalMessage,
        ChatPrefill::LastAssistant,
        ChatPrefill::PrefixFlag,
    ];
    let (url, seen) = serve(vec![(200, chat_sse(&[" light", " scatters."])); 4]);
    let client = Client::new(config(url)).unwrap();
    for style in styles {
        assert_eq!(
            collect(&client, "Because", style).unwrap(),
            " light scatters."
        );
    }
    // No prefix: the conversation alone, in every style (None included).
    assert_eq!(
        collect(&client, "", ChatPrefill::None).unwrap(),
        " light scatters."
    );
    let seen = seen.lock().unwrap();
    let bodies: Vec<serde_json::Value> = seen
        .iter()
        .map(|(path, body)| {
            assert_eq!(path, "/v1/chat/completions");
            serde_json::from_str(body).unwrap()
        })
        .collect();
    for body in &bodies {
        assert_eq!(body["stream"], true);
        assert_eq!(body["messages"][3]["content"], "Why is the sky blue?");
        assert_eq!(body["messages"][2]["role"], "assistant");
    }
    let last = |b: &serde_json::Value| b["messages"][4].clone();
    // vLLM
    assert_eq!(last(&bodies[0])["content"], "Because");
    assert_eq!(bodies[0]["continue_final_message"], true);
    assert_eq!(bodies[0]["add_generation_prompt"], false);
    assert!(last(&bodies[0]).get("prefix").is_none());
    // llama.cpp: just the final assistant message
    assert_eq!(
        last(&bodies[1]),
        serde_json::json!({"role": "assistant", "content": "Because"})
    );
    assert!(bodies[1].get("continue_final_message").is_none());
    // DeepSeek / Mistral
    assert_eq!(last(&bodies[2])["prefix"], true);
    assert!(bodies[2].get("continue_final_message").is_none());
    // No prefix: four messages only.
    assert_eq!(bodies[3]["messages"].as_array().unwrap().len(), 4);
}

#[test]
fn a_prefix_without_a_prefill_style_is_refused_before_any_request() {
    let (url, seen) = serve(vec![]);
    let client = Client::new(config(url)).unwrap();
    let err = collect(&client, "Because", ChatPrefill::None).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("prefix")),
        "{err:?}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

/// Malformed streams are typed errors: not JSON, not UTF-8, an error event, no `choices`, and a
/// stream cut short after some text.
#[test]
fn malformed_streams_are_typed_errors() {
    let cut = chat_sse(&["Half", " of it"]);
    let cut = cut[..cut.find("data: {\"choices\":[{\"delta\":{},").unwrap()].to_owned();
    let replies = vec![
        (200, "data: {not json\n\n".to_owned()),
        (
            200,
            "data: {\"error\": {\"message\": \"boom\"}}\n\n".to_owned(),
        ),
        (200, "data: {\"id\": 1}\n\n".to_owned()),
        (200, cut),
    ];
    let (url, _) = serve(replies);
    let client = Client::new(EndpointConfig {
        max_retries: 0,
        ..config(url)
    })
    .unwrap();
    let reasons: Vec<String> = (0..4)
        .map(
            |_| match collect(&client, "", ChatPrefill::None).unwrap_err() {
                Error::Stream { reason, .. } => reason,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert!(reasons[0].contains("bad stream chunk"), "{reasons:?}");
    assert!(reasons[1].contains("boom"), "{reasons:?}");
    assert!(reasons[2].contains("no choices"), "{reasons:?}");
    assert!(reasons[3].contains("without [DONE]"), "{reasons:?}");
}

/// A 429 with `Retry-After` is waited for, then retried.
#[test]
fn retry_after_is_honoured() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let replies = [
            "HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy".to_owned(),
            {
                let body = chat_sse(&["ok"]);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            },
        ];
        for reply in replies {
            let (mut stream, _) = listener.accept().unwrap();
            read_request(&stream);
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    let client = Client::new(config(url)).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(collect(&client, "", ChatPrefill::None).unwrap(), "ok");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
}

/// A server that accepts and then says nothing fails the request after the read timeout.
#[test]
fn a_stalled_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            held.push(stream);
        }
    });
    let client = Client::new(EndpointConfig {
        read_timeout: Duration::from_millis(200),
        max_retries: 1,
        ..config(url)
    })
    .unwrap();
    let t = std::time::Instant::now();
    let err = collect(&client, "", ChatPrefill::None).unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
