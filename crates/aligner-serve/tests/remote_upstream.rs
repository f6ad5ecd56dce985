//! The server with a remote upstream on 127.0.0.1, and the shipped Stream Aligner here.
//!
//! - A real upstream nobody here wrote: llama.cpp's OpenAI-compatible server (the pip package
//!   `llama-cpp-python[server]`, installed into the cached environment by `cargo xtask setup`)
//!   serving the embedded GGUF. A streamed chat request in stream mode, drafted through its
//!   `/v1/completions`, arrives sentence by sentence (with our client and with the official
//!   `openai` client) and equals the library's answer for that request alone.
//! - A scripted chat server without prefix continuation: stream mode is refused per request with
//!   an OpenAI-style `400` before any upstream request; whole-answer and off modes answer.
//! - A scripted completions server that streams slowly: a client that disconnects closes the
//!   upstream's stream.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../aligner-stream/tests/support/llama_server.rs"]
mod llama_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aligner_model::chat::ChatTemplate;
use aligner_model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig, SseReader};
use aligner_model::{ModelTokenizer, hub};
use aligner_serve::{RemoteEngine, ServeConfig, Server, UpstreamFactory};
use aligner_stream::machine::join_correction;
use aligner_stream::remote::{ChatUpstream, RemoteUpstream, RenderPrompt};
use aligner_stream::{Corrector, CorrectorConfig, LocalCorrector, MachineConfig, Upstream};
use common::{Running, agent, dirs, load, post, post_stream};
use llama_server::LlamaServer;
use serde_json::{Value, json};

fn client(url: &str) -> Client {
    Client::new(EndpointConfig {
        base_url: url.to_owned(),
        model: "smollm2".into(),
        api_key_env: None,
        max_retries: 0,
        ..EndpointConfig::default()
    })
    .unwrap()
}

fn greedy() -> CompletionParams {
    CompletionParams {
        temperature: Some(0.0),
        seed: Some(0),
        ..CompletionParams::default()
    }
}

fn template() -> ChatTemplate {
    ModelTokenizer::from_dir(&dirs().0)
        .unwrap()
        .chat_template()
        .unwrap()
        .unwrap()
}

/// A completions upstream at `url` whose prompts are rendered with the embedded model's chat
/// template.
fn completions_upstream(
    client: Client,
    params: CompletionParams,
    template: Arc<ChatTemplate>,
) -> RemoteUpstream {
    let render: RenderPrompt =
        Box::new(move |c| aligner_stream::render_conversation(Some(&template), None, c));
    RemoteUpstream::new(client, params, render)
}

/// Our server with the upstreams `new_upstream` makes and the shipped aligner.
fn remote_server(new_upstream: UpstreamFactory) -> Running {
    let config = ServeConfig {
        slots: 2,
        ..ServeConfig::default()
    };
    let server = Server::start_remote(config, move || {
        let (upstream_dir, aligner_dir) = dirs();
        let (aligner, aligner_tokenizer) = load(&aligner_dir);
        Ok(RemoteEngine {
            new_upstream,
            params: greedy(),
            tokenizer: ModelTokenizer::from_dir(&upstream_dir)?,
            system: None,
            aligner,
            aligner_tokenizer,
            corrector_config: CorrectorConfig::default(),
            machine: MachineConfig::default(),
        })
    })
    .unwrap();
    Running::serve(server)
}

/// The content pieces of a streamed answer, checking that it ends with a finish reason and
/// `[DONE]`.
fn pieces(events: &[String]) -> Vec<String> {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{chunks:?}"
    );
    let last = chunks.last().unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

const OPENAI_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
stream = client.chat.completions.create(
    model="aligner-stream",
    messages=[{"role": "user", "content": sys.argv[2]}],
    max_tokens=int(sys.argv[3]),
    stream=True,
)
print(json.dumps([c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]))
"#;

#[test]
fn llama_cpp_upstream_streams_sentence_by_sentence_through_the_server() {
    let llama = LlamaServer::start();
    let template = Arc::new(template());
    let (url, shared) = (llama.url.clone(), Arc::clone(&template));
    let factory: UpstreamFactory = Box::new(move |params| {
        let upstream = completions_upstream(client(&url), params, Arc::clone(&shared));
        Ok(Box::new(upstream) as Box<dyn Upstream + Send>)
    });
    let server = remote_server(factory);
    let question = "Why is the sky blue?";
    let max_tokens = 48;

    // Our client: one chunk per committed sentence, each carrying the upstream's draft of it.
    let events = post_stream(
        &server.base,
        &json!({"model": "aligner-stream", "stream": true, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": question}]}),
    );
    let got = pieces(&events);
    let drafts: Vec<String> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .map(|c| c["aligner"]["draft"].as_str().unwrap().to_owned())
        .collect();
    assert!(got.len() >= 2, "{got:?}");
    assert_eq!(drafts.len(), got.len());

    // Each committed sentence is what the library's corrector makes of that draft after the
    // sentences before it. (The expectation is built from the server's own drafts: llama.cpp's
    // greedy text for a prompt can change with what its prompt cache holds from the request
    // before, so a second request for the same answer may get other drafts.)
    let (aligner, tokenizer) = load(&dirs().1);
    let mut corrector =
        LocalCorrector::new(&aligner, tokenizer, CorrectorConfig::default()).unwrap();
    let mut accepted = String::new();
    for (draft, committed) in drafts.iter().zip(&got) {
        let correction = corrector.correct(question, &accepted, draft).unwrap();
        assert_eq!(
            *committed,
            join_correction(draft, &correction.text),
            "draft {draft:?} after {accepted:?}"
        );
        accepted.push_str(committed);
    }

    // The official `openai` client streams the answer sentence by sentence too (its drafts come
    // from another llama.cpp request, so its text may differ from ours; see above).
    let python = hub::venv_python().unwrap();
    let out = Command::new(&python)
        .args([
            "-c",
            OPENAI_SCRIPT,
            &server.base,
            question,
            &max_tokens.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_openai: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(from_openai.len() >= 2, "{from_openai:?}");
    for piece in &from_openai {
        assert_eq!(
            aligner_stream::segment::sentences(piece.trim()).count(),
            1,
            "one sentence per chunk: {piece:?}"
        );
    }
}

/// A chat server without prefix continuation (as OpenAI's) that answers [`ANSWER`] to every
/// request, streamed; counts the requests.
const ANSWER: &str = "The sky looks blue. Air scatters blue light the most.";

fn chat_mock() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            count.fetch_add(1, Ordering::SeqCst);
            let mut reply = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            );
            for word in ANSWER.split_inclusive(' ') {
                let chunk = json!({"id": "x", "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
                reply.push_str(&format!("data: {chunk}\n\n"));
            }
            let last = json!({"id": "x", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            reply.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn a_chat_upstream_without_prefix_continuation_refuses_stream_mode_per_request() {
    let (url, seen) = chat_mock();
    let factory: UpstreamFactory = Box::new(move |params| {
        let upstream = ChatUpstream::new(client(&url), params, ChatPrefill::None, None);
        Ok(Box::new(upstream) as Box<dyn Upstream + Send>)
    });
    let server = remote_server(factory);
    let messages = json!([{"role": "user", "content": "Why is the sky blue?"}]);

    // Stream mode, streamed or not, by model name or by the extra field: a 400 with an
    // OpenAI-style error, and no upstream request.
    for body in [
        json!({"model": "aligner-stream", "stream": true, "messages": messages}),
        json!({"model": "aligner-stream", "messages": messages}),
        json!({"model": "upstream", "aligner_mode": "stream", "messages": messages}),
    ] {
        let (status, error) = post(&server.base, &body);
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["code"], "mode_unsupported", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("prefix continuation"),
            "{error}"
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // The upstream alone, streamed: its answer sentence by sentence.
    let events = post_stream(
        &server.base,
        &json!({"model": "upstream", "stream": true, "max_tokens": 32, "messages": messages}),
    );
    let got = pieces(&events);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got.concat(), ANSWER);
    // Whole-answer mode: one request upstream, the aligner's rewrite of the whole answer.
    let (status, answer) = post(
        &server.base,
        &json!({"model": "aligner-whole", "max_tokens": 32, "messages": messages}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["aligner"]["mode"], "whole", "{answer}");
    assert!(
        !answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim()
            .is_empty(),
        "{answer}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// A completions server that streams a word every 50 ms (no sentence ever ends) for 10 s; counts
/// the words sent and notes when the client closed the stream.
fn slow_completions_mock() -> (
    String,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Option<Instant>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(std::sync::Mutex::new(None));
    let (count, closed_at) = (Arc::clone(&sent), Arc::clone(&closed));
    std::thread::spawn(move || {
        let Some(Ok(mut stream)) = listener.incoming().next() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(head.as_bytes());
        for _ in 0..200 {
            let chunk = json!({"id": "x", "object": "text_completion",
                "choices": [{"index": 0, "text": "and ", "finish_reason": null}]});
            if stream
                .write_all(format!("data: {chunk}\n\n").as_bytes())
                .and_then(|()| stream.flush())
                .is_err()
            {
                *closed_at.lock().unwrap() = Some(Instant::now());
                return;
            }
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (url, sent, closed)
}

#[test]
fn a_client_that_disconnects_closes_the_remote_stream() {
    let (url, sent, closed) = slow_completions_mock();
    let template = Arc::new(template());
    let factory: UpstreamFactory = Box::new(move |params| {
        let upstream = completions_upstream(client(&url), params, Arc::clone(&template));
        Ok(Box::new(upstream) as Box<dyn Upstream + Send>)
    });
    let server = remote_server(factory);
    let response = agent()
        .post(format!("{}/v1/chat/completions", server.base))
        .header("Content-Type", "application/json")
        .send(
            json!({"model": "aligner-stream", "stream": true, "max_tokens": 512,
                   "messages": [{"role": "user", "content": "Say and forever."}]})
            .to_string(),
        )
        .unwrap();
    let mut events = SseReader::new(response.into_body().into_reader());
    assert!(events.next_data().unwrap().is_some());
    // The upstream is streaming the first sentence; the client goes away.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "the upstream was not called");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(events);
    let gone = Instant::now();
    let deadline = gone + Duration::from_secs(5);
    loop {
        if let Some(at) = *closed.lock().unwrap() {
            assert!(at.duration_since(gone) < Duration::from_secs(3));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remote stream is still read after the client left ({} words)",
            sent.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sent.load(Ordering::SeqCst) < 128);
    let health = || -> Value {
        agent()
            .get(format!("{}/health", server.base))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while health()["active"] != 0 {
        assert!(Instant::now() < deadline, "{}", health());
        std::thread::sleep(Duration::from_millis(20));
    }
}
