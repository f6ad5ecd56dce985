//! The server on 127.0.0.1 with the real models (the embedded SmolLM2-135M-Instruct as upstream,
//! the shipped Stream Aligner), called with a real HTTP client: the OpenAI contract streamed and
//! not, `stop` sequences, bad requests, each greedy answer equal to the library's answer for
//! that request alone (also with 64 clients at once, whose corrections the worker makes
//! together), a full queue, a client that disconnects, and shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aligner_model::InferenceModel;
use aligner_model::ModelTokenizer;
use aligner_model::chat::ChatMessage;
use aligner_model::remote::SseReader;
use aligner_serve::ServeConfig;
use aligner_stream::modes;
use aligner_stream::{
    Conversation, CorrectorConfig, LocalCorrector, LocalUpstream, MachineConfig, StreamMachine,
};
use common::{Running, agent, dirs, load, post, post_stream, upstream_config};
use serde_json::{Value, json};

fn request(model: &str, messages: Value, max_tokens: usize, stream: bool) -> Value {
    json!({"model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream})
}

/// The library's answers for each conversation alone: stream mode, whole answer, upstream only.
struct Reference {
    upstream: (InferenceModel, ModelTokenizer),
    aligner: (InferenceModel, ModelTokenizer),
}

impl Reference {
    fn new() -> Self {
        let (u, a) = dirs();
        Self {
            upstream: load(&u),
            aligner: load(&a),
        }
    }

    fn parts(
        &self,
    ) -> (
        LocalUpstream<'_, InferenceModel>,
        LocalCorrector<'_, InferenceModel>,
    ) {
        let upstream =
            LocalUpstream::new(&self.upstream.0, self.upstream.1.clone(), upstream_config())
                .unwrap();
        let corrector = LocalCorrector::new(
            &self.aligner.0,
            self.aligner.1.clone(),
            CorrectorConfig::default(),
        )
        .unwrap();
        (upstream, corrector)
    }

    fn stream(&self, conversation: &Conversation, max_tokens: usize) -> aligner_stream::Record {
        let (mut upstream, mut corrector) = self.parts();
        let config = MachineConfig {
            max_total_tokens: max_tokens,
            ..MachineConfig::default()
        };
        StreamMachine::with_conversation(conversation.clone(), config)
            .unwrap()
            .run(&mut upstream, &mut corrector, |_| {})
            .unwrap()
    }

    fn whole(&self, conversation: &Conversation, max_tokens: usize) -> aligner_stream::Record {
        let (mut upstream, mut corrector) = self.parts();
        modes::whole_answer(
            &mut upstream,
            &mut corrector,
            conversation,
            max_tokens,
            |_| {},
        )
        .unwrap()
    }

    fn off(&self, conversation: &Conversation, max_tokens: usize) -> aligner_stream::Record {
        let (mut upstream, _) = self.parts();
        modes::upstream_only(&mut upstream, conversation, max_tokens, |_| {}).unwrap()
    }
}

fn messages_json(c: &Conversation) -> Value {
    json!(c.messages())
}

const QUESTION: &str = "Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?";

#[test]
fn the_openai_contract_streamed_and_not() {
    let mut server = Running::start(ServeConfig {
        max_body_bytes: 64 * 1024,
        ..ServeConfig::default()
    });
    let base = server.base.clone();
    let reference = Reference::new();

    let health: Value = agent()
        .get(format!("{base}/health"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ids = model_ids(&base);
    assert_eq!(ids, ["aligner-stream", "aligner-whole", "upstream"]);

    // Not streamed, stream mode: the library's answer for the request alone.
    let single = Conversation::single(QUESTION);
    let expected = reference.stream(&single, 48);
    let (status, answer) = post(
        &base,
        &request("aligner-stream", messages_json(&single), 48, false),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], expected.answer);
    assert_eq!(answer["aligner"]["draft"], expected.draft);
    assert_eq!(answer["aligner"]["mode"], "stream");
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    // Streamed: a role chunk, one chunk per sentence (with its draft), finish and usage, [DONE].
    let events = post_stream(
        &base,
        &request("aligner-stream", messages_json(&single), 48, true),
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let sentences: Vec<&Value> = chunks[1..chunks.len() - 1].iter().collect();
    assert_eq!(sentences.len(), expected.rounds.len());
    for (chunk, round) in sentences.iter().zip(&expected.rounds) {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], round.committed);
        assert_eq!(chunk["aligner"]["draft"], round.last);
        assert_eq!(chunk["aligner"]["changed"], round.changed);
    }
    let last = chunks.last().unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert_eq!(last["usage"], answer["usage"]);

    // Whole-answer mode, chosen by the extra field, and the upstream alone, by model name.
    let mut whole_request = request("aligner-stream", messages_json(&single), 48, false);
    whole_request["aligner_mode"] = json!("whole");
    let (status, whole) = post(&base, &whole_request);
    assert_eq!(status, 200, "{whole}");
    let expected_whole = reference.whole(&single, 48);
    assert_eq!(
        whole["choices"][0]["message"]["content"],
        expected_whole.answer
    );
    assert_eq!(whole["aligner"]["draft"], expected_whole.draft);
    let (status, off) = post(
        &base,
        &request("upstream", messages_json(&single), 48, false),
    );
    assert_eq!(status, 200, "{off}");
    assert_eq!(
        off["choices"][0]["message"]["content"],
        reference.off(&single, 48).answer
    );

    // `stop`: the answer ends before the first stop sequence, streamed or not. The sequence
    // spans two sentences when there are two, so the stream must hold back the first one's end.
    let stop = match &expected.rounds[..] {
        [first, second, ..] => {
            let head: String = first.committed.chars().rev().take(2).collect();
            let head: String = head.chars().rev().collect();
            head + &second.committed.chars().take(3).collect::<String>()
        }
        _ => expected.answer.chars().skip(12).take(4).collect(),
    };
    let cut = &expected.answer[..expected.answer.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut body = request("aligner-stream", messages_json(&single), 48, stream);
        body["stop"] = json!(["never written", stop]);
        let (content, finish) = if stream {
            let events = post_stream(&base, &body);
            let chunks: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            (
                content,
                chunks.last().unwrap()["choices"][0]["finish_reason"].clone(),
            )
        } else {
            let (status, v) = post(&base, &body);
            assert_eq!(status, 200, "{v}");
            let content = v["choices"][0]["message"]["content"].as_str().unwrap();
            (content.to_owned(), v["choices"][0]["finish_reason"].clone())
        };
        assert_eq!(content, cut, "stop {stop:?}, stream {stream}");
        assert_eq!(finish, "stop");
    }

    // A conversation of several turns.
    let chat = Conversation::new(vec![
        ChatMessage::user("I have 3 boxes of 12 eggs."),
        ChatMessage::assistant("That is 36 eggs."),
        ChatMessage::user("I break 5 of them. How many are left?"),
    ])
    .unwrap();
    let (status, turn) = post(
        &base,
        &request("aligner-stream", messages_json(&chat), 40, false),
    );
    assert_eq!(status, 200, "{turn}");
    assert_eq!(
        turn["choices"][0]["message"]["content"],
        reference.stream(&chat, 40).answer
    );

    // Bad requests: OpenAI-style errors with 4xx statuses; the server goes on.
    let url = format!("{base}/v1/chat/completions");
    let raw = |body: &str| {
        let mut r = agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_owned())
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.body_mut().read_json().unwrap();
        (status, v)
    };
    for (body, status) in [
        ("{\"model\": ", 400),
        (
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#,
            404,
        ),
        (r#"{"model": "aligner-stream", "messages": []}"#, 400),
        (
            r#"{"model": "aligner-stream", "messages": [{"role": "user", "content": 7}]}"#,
            400,
        ),
        (
            r#"{"model": "aligner-stream", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999}"#,
            400,
        ),
        (
            r#"{"model": "aligner-stream", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}"#,
            400,
        ),
        (
            r#"{"model": "aligner-stream", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}"#,
            400,
        ),
        (
            r#"{"model": "aligner-stream", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}"#,
            400,
        ),
    ] {
        let (got, error) = raw(body);
        assert_eq!(got, status, "{body}: {error}");
        assert!(error["error"]["message"].is_string(), "{body}: {error}");
        assert!(error["error"]["type"].is_string(), "{body}: {error}");
    }
    // Under the character limit, over the prompt-token limit.
    let long = "🙂".repeat(5000);
    let (got, error) = post(
        &base,
        &request(
            "aligner-stream",
            json!([{"role": "user", "content": long}]),
            8,
            false,
        ),
    );
    assert_eq!(got, 400, "{error}");
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    let mut oversized = agent().post(&url).send(vec![b' '; 100 * 1024]).unwrap();
    assert_eq!(oversized.status().as_u16(), 413);
    let v: Value = oversized.body_mut().read_json().unwrap();
    assert!(v["error"]["message"].is_string());
    server.stop().unwrap();
}

/// 64 clients at once, in 8 slots: each greedy answer equals the library's answer for that
/// request alone (stream mode, whose sentence corrections the worker makes together, and one
/// client in eight in whole-answer mode, whose rewrites it makes together too).
#[test]
fn sixty_four_clients_get_the_answers_they_would_get_alone() {
    let config = ServeConfig {
        slots: 8,
        queue_capacity: 64,
        // A debug build on 2 cores is slow; the time limit is not what is tested here.
        request_timeout: Duration::from_secs(1800),
        ..ServeConfig::default()
    };
    let server = Running::start(config);
    let reference = Reference::new();
    let questions = [
        "What is 17 + 25?",
        "Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?",
        "Why is the sky blue?",
        "Name two primary colours.",
    ];
    let max_tokens = 16;
    let expected: Vec<String> = questions
        .iter()
        .map(|q| {
            reference
                .stream(&Conversation::single(*q), max_tokens)
                .answer
        })
        .collect();
    let expected_whole: Vec<String> = questions
        .iter()
        .map(|q| {
            reference
                .whole(&Conversation::single(*q), max_tokens)
                .answer
        })
        .collect();
    let whole = |i: usize| i % 8 == 7;
    let base = Arc::new(server.base.clone());
    let started = Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let base = Arc::clone(&base);
            let q = questions[i % questions.len()];
            let model = if whole(i) {
                "aligner-whole"
            } else {
                "aligner-stream"
            };
            std::thread::spawn(move || {
                let body = request(
                    model,
                    json!([{"role": "user", "content": q}]),
                    max_tokens,
                    i % 2 == 0,
                );
                if i % 2 == 0 {
                    let events = post_stream(&base, &body);
                    events
                        .iter()
                        .filter(|e| *e != "[DONE]")
                        .map(|e| {
                            let v: Value = serde_json::from_str(e).unwrap();
                            v["choices"][0]["delta"]["content"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned()
                        })
                        .collect::<String>()
                } else {
                    let (status, v) = post(&base, &body);
                    assert_eq!(status, 200, "{v}");
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                }
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let expected = if whole(i) { &expected_whole } else { &expected };
        assert_eq!(
            client.join().unwrap(),
            expected[i % questions.len()],
            "client {i}"
        );
    }
    eprintln!("64 clients in {:.1} s", started.elapsed().as_secs_f64());
}

/// The ids `/v1/models` lists.
fn model_ids(base: &str) -> Vec<String> {
    let models: Value = agent()
        .get(format!("{base}/v1/models"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn health(base: &str) -> Value {
    agent()
        .get(format!("{base}/health"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// One slot and a queue of one: a third request at once gets 429 with Retry-After; a client
/// that disconnects mid-stream frees its slot at once; a request past its time limit gets 504;
/// shutdown ends the stream in flight and returns.
#[test]
fn full_queue_disconnect_timeout_and_shutdown() {
    let config = ServeConfig {
        slots: 1,
        queue_capacity: 1,
        request_timeout: Duration::from_secs(20),
        shutdown_grace: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let mut server = Running::start(config);
    let base = server.base.clone();
    // A long answer: the upstream alone counting.
    let long = request(
        "upstream",
        json!([{"role": "user", "content": "Count from 1 to 300, one number per line."}]),
        1500,
        true,
    );
    // The first takes the slot, the second waits, the third is refused.
    let open = |body: &Value| {
        agent()
            .post(format!("{base}/v1/chat/completions"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap()
    };
    let first = open(&long);
    let mut first = SseReader::new(first.into_body().into_reader());
    for _ in 0..3 {
        assert!(first.next_data().unwrap().is_some());
    }
    let waiting = {
        let base = base.clone();
        let body = request(
            "upstream",
            json!([{"role": "user", "content": "Hi"}]),
            4,
            false,
        );
        std::thread::spawn(move || post(&base, &body))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&base)["queued"] != 1 {
        assert!(Instant::now() < deadline, "the second request never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut refused = agent()
        .post(format!("{base}/v1/chat/completions"))
        .send(
            request(
                "upstream",
                json!([{"role": "user", "content": "Hi"}]),
                4,
                false,
            )
            .to_string(),
        )
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let v: Value = refused.body_mut().read_json().unwrap();
    assert_eq!(v["error"]["code"], "queue_full");

    // The first client disconnects mid-answer: its slot is freed for the waiting request.
    assert_eq!(health(&base)["active"], 1);
    drop(first);
    let (status, v) = waiting.join().unwrap();
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&base)["active"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned request still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Shutdown with a stream in flight: it ends (cancelled after the grace period) and the
    // server returns.
    let mut stream = SseReader::new(open(&long).into_body().into_reader());
    assert!(stream.next_data().unwrap().is_some());
    let t = Instant::now();
    server.stop().unwrap();
    let mut rest = Vec::new();
    while let Ok(Some(d)) = stream.next_data() {
        rest.push(d);
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        rest.iter().any(|d| d.contains("shutting down"))
            || rest.last().is_some_and(|d| d == "[DONE]"),
        "{rest:?}"
    );
}

/// With a bearer token configured, `/v1` routes need it (`/health` does not); a request past
/// its time limit gets 504.
#[test]
fn bearer_auth_and_request_timeout() {
    let config = ServeConfig {
        slots: 1,
        request_timeout: Duration::from_secs(1),
        api_key: Some("sesame".into()),
        ..ServeConfig::default()
    };
    let server = Running::start(config);
    let base = server.base.clone();
    assert_eq!(health(&base)["status"], "ok");
    let mut denied = agent().get(format!("{base}/v1/models")).call().unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let v: Value = denied.body_mut().read_json().unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let allowed = agent()
        .get(format!("{base}/v1/models"))
        .header("Authorization", "Bearer sesame")
        .call()
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);

    let long = request(
        "upstream",
        json!([{"role": "user", "content": "Count from 1 to 300, one number per line."}]),
        1500,
        false,
    );
    let t = Instant::now();
    let mut late = agent()
        .post(format!("{base}/v1/chat/completions"))
        .header("Authorization", "Bearer sesame")
        .send(long.to_string())
        .unwrap();
    assert_eq!(late.status().as_u16(), 504);
    let v: Value = late.body_mut().read_json().unwrap();
    assert_eq!(v["error"]["type"], "timeout");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// A server offers the modes its aligner was trained for: with the shipped Stream Aligner
/// (trained on single sentences, as its aligner_config.json records), stream mode and the
/// upstream alone; whole-answer mode is refused before any model work, and `/v1/models` does
/// not list it.
#[test]
fn modes_follow_what_the_aligner_was_trained_for() {
    let (_, aligner_dir) = dirs();
    let (prompt, recorded) = aligner_data::aligner_config::AlignerConfig::resolve(
        &aligner_dir,
        &aligner_data::aligner_config::PromptOverrides::default(),
    )
    .unwrap();
    assert!(recorded);
    let config = ServeConfig {
        modes: aligner_serve::modes_of(&prompt),
        ..ServeConfig::default()
    };
    let server = Running::start(config);
    let base = server.base.clone();
    let ids = model_ids(&base);
    assert_eq!(ids, ["aligner-stream", "upstream"]);
    let messages = json!([{"role": "user", "content": "What is 2 + 2?"}]);
    for body in [
        json!({"model": "aligner-whole", "messages": messages}),
        json!({"model": "upstream", "aligner_mode": "whole", "messages": messages}),
    ] {
        let (status, error) = post(&base, &body);
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["code"], "mode_unsupported", "{error}");
        assert_eq!(error["error"]["param"], "model", "{error}");
    }
    let (status, answer) = post(
        &base,
        &json!({"model": "upstream", "max_tokens": 8, "messages": messages}),
    );
    assert_eq!(status, 200, "{answer}");
}
