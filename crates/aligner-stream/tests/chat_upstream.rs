//! The chat upstream against scripted `/v1/chat/completions` servers on 127.0.0.1 that follow
//! each server family's documented way of continuing a final assistant message (vLLM,
//! llama.cpp's server, DeepSeek/Mistral), or none (OpenAI): stream mode continues from the
//! corrected text in each style, a server without prefix continuation is refused in stream mode
//! and answers whole, a conversation of several turns reaches the upstream whole and the
//! corrector as one question, and upstream faults come out as typed errors.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aligner_model::chat::ChatMessage;
use aligner_model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig};
use aligner_stream::remote::ChatUpstream;
use aligner_stream::{
    Conversation, Correction, Corrector, Error, MachineConfig, StreamMachine, Upstream,
    split_sentences,
};
use common::{Reply, chat_chunks, serve};
use serde_json::Value;

const ANSWER: &str = "Water boils at 100 degrees. At altitude it boils lower.\n- Use a lid.";

/// Whether a server of family `style` continues the final assistant message of `body`, as its
/// documentation says; otherwise it starts a new answer (what llama-cpp-python's chat endpoint
/// and OpenAI do).
fn continues(style: ChatPrefill, body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let last = messages.last()?;
    if last["role"] != "assistant" {
        return None;
    }
    let content = last["content"].as_str()?.to_owned();
    let yes = match style {
        ChatPrefill::ContinueFinalMessage => {
            body["continue_final_message"] == true && body["add_generation_prompt"] == false
        }
        ChatPrefill::LastAssistant => true,
        ChatPrefill::PrefixFlag => last["prefix"] == true,
        ChatPrefill::None => false,
    };
    yes.then_some(content)
}

/// A chat server of family `style` whose answer is [`ANSWER`], continued after as many
/// sentences as a continued prefix holds.
fn chat_server(style: ChatPrefill) -> (String, common::Seen) {
    serve(move |path, body| {
        if path != "/v1/chat/completions" {
            return Reply::Status(404, "{}".into());
        }
        let done = continues(style, body).map_or(0, |p| split_sentences(&p).len());
        let rest: String = split_sentences(ANSWER)
            .into_iter()
            .skip(done)
            .map(|r| &ANSWER[r])
            .collect();
        Reply::Sse {
            events: chat_chunks(&rest),
            delay: Duration::ZERO,
        }
    })
}

fn endpoint(url: String) -> Client {
    Client::new(EndpointConfig {
        base_url: url,
        model: "upstream".into(),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        read_timeout: Duration::from_millis(500),
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        ..EndpointConfig::default()
    })
    .unwrap()
}

fn upstream(url: String, prefill: ChatPrefill) -> ChatUpstream {
    ChatUpstream::new(
        endpoint(url),
        CompletionParams::default(),
        prefill,
        Some("Be brief.".into()),
    )
}

/// Replaces "100 degrees" with "100 °C" and records the questions it was given.
#[derive(Default)]
struct Units(Arc<Mutex<Vec<String>>>);
impl Corrector for Units {
    fn correct(
        &mut self,
        q: &str,
        _prefix: &str,
        last: &str,
    ) -> aligner_stream::Result<Correction> {
        self.0.lock().unwrap().push(q.to_owned());
        Ok(Correction {
            text: last.replace("100 degrees", "100 °C"),
            tokens: 1,
        })
    }
}

#[test]
fn stream_mode_continues_the_corrected_text_in_each_servers_style() {
    for style in [
        ChatPrefill::ContinueFinalMessage,
        ChatPrefill::LastAssistant,
        ChatPrefill::PrefixFlag,
    ] {
        let (url, seen) = chat_server(style);
        let mut up = upstream(url, style);
        let mut machine = StreamMachine::new("boiling?", MachineConfig::default()).unwrap();
        let record = machine.run(&mut up, &mut Units::default(), |_| {}).unwrap();
        assert_eq!(
            record.answer, "Water boils at 100 °C. At altitude it boils lower.\n- Use a lid.",
            "{style:?}"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{style:?}: {seen:?}");
        // The second request continues the corrected sentence, not the draft.
        let messages = seen[1].1["messages"].as_array().unwrap();
        assert_eq!(messages[0]["content"], "Be brief.");
        assert_eq!(
            messages.last().unwrap()["content"],
            "Water boils at 100 °C. "
        );
    }
}

/// The same loop against a server that does not continue (it starts a new answer): the
/// wrong style is visible in the answer, which is why the style is an explicit option.
#[test]
fn a_server_that_ignores_the_prefix_restarts_the_answer() {
    let (url, _) = chat_server(ChatPrefill::None);
    let mut up = upstream(url, ChatPrefill::LastAssistant);
    let config = MachineConfig {
        max_rounds: 3,
        ..MachineConfig::default()
    };
    let record = StreamMachine::new("boiling?", config)
        .unwrap()
        .run(&mut up, &mut Units::default(), |_| {})
        .unwrap();
    assert_eq!(
        record.answer,
        "Water boils at 100 °C. Water boils at 100 °C. Water boils at 100 °C. "
    );
}

#[test]
fn without_prefix_continuation_stream_mode_is_refused_and_whole_answers_work() {
    let (url, seen) = chat_server(ChatPrefill::None);
    let mut up = upstream(url, ChatPrefill::None);
    assert!(!up.continues_answers());
    let err = StreamMachine::new("boiling?", MachineConfig::default())
        .unwrap()
        .run(&mut up, &mut Units::default(), |_| {})
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("stream mode")),
        "{err:?}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "refused before any request"
    );
    // Continuing a prefix directly is refused too.
    assert!(matches!(
        up.draft("boiling?", "Water boils. ", 16),
        Err(Error::Unsupported(_))
    ));

    let mut streamed = String::new();
    let whole = up
        .answer_whole(&Conversation::single("boiling?"), 64, &mut |d| {
            streamed.push_str(d)
        })
        .unwrap();
    assert_eq!(whole.text, ANSWER);
    assert_eq!(streamed, ANSWER);
    let record = aligner_stream::modes::upstream_only(&mut up, "boiling?", 64, |_| {}).unwrap();
    assert_eq!(record.answer, ANSWER);
    assert_eq!(record.rounds.len(), 3);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one request per whole answer"
    );
}

#[test]
fn a_conversation_reaches_the_upstream_whole_and_the_corrector_as_one_question() {
    let (url, seen) = chat_server(ChatPrefill::PrefixFlag);
    let mut up = upstream(url, ChatPrefill::PrefixFlag);
    let conversation = Conversation::new(vec![
        ChatMessage::system("Answer in one line."),
        ChatMessage::user("Is water wet?"),
        ChatMessage::assistant("Yes."),
        ChatMessage::user("When does it boil?"),
    ])
    .unwrap();
    let questions = Arc::new(Mutex::new(Vec::new()));
    let mut machine =
        StreamMachine::with_conversation(conversation.clone(), MachineConfig::default()).unwrap();
    let record = machine
        .run(&mut up, &mut Units(Arc::clone(&questions)), |_| {})
        .unwrap();
    assert!(record.answer.starts_with("Water boils at 100 °C."));
    assert_eq!(record.question, conversation.aligner_question());
    let questions = questions.lock().unwrap();
    assert_eq!(
        questions[0],
        "User: Is water wet?\nAssistant: Yes.\nUser: When does it boil?"
    );
    let seen = seen.lock().unwrap();
    let first = seen[0].1["messages"].as_array().unwrap();
    // The conversation's own system message wins over the configured one.
    let roles: Vec<&str> = first.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(first[0]["content"], "Answer in one line.");
    let second = seen[1].1["messages"].as_array().unwrap();
    assert_eq!(second.len(), 5);
    assert_eq!(second[4]["prefix"], true);
}

/// A single-question upstream refuses a conversation instead of dropping its history.
#[test]
fn single_question_upstreams_refuse_conversations() {
    struct Plain;
    impl Upstream for Plain {
        fn draft_conversation(
            &mut self,
            conversation: &Conversation,
            _a: &str,
            _m: usize,
            _cancel: Option<&std::sync::atomic::AtomicBool>,
        ) -> aligner_stream::Result<aligner_stream::Draft> {
            conversation.require_single()?;
            unreachable!("the conversation is refused before drafting")
        }
    }
    let conversation = Conversation::new(vec![
        ChatMessage::user("a"),
        ChatMessage::assistant("b"),
        ChatMessage::user("c"),
    ])
    .unwrap();
    let err = StreamMachine::with_conversation(conversation, MachineConfig::default())
        .unwrap()
        .run(&mut Plain, &mut Units::default(), |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
}

/// Upstream faults end the run with typed errors: an error status (after the retries), a
/// malformed stream, a stream closed mid-answer, a stall past the read timeout.
#[test]
fn upstream_faults_are_typed_errors() {
    let cut: String = chat_chunks("Water boils at")
        .into_iter()
        .take(2)
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply::Status(500, "{\"error\": \"overloaded\"}".into()),
            "status",
        ),
        (Reply::Status(429, "slow down".into()), "status"),
        (Reply::Raw("data: {oops\n\n".into()), "stream"),
        (Reply::Raw(cut), "stream"),
        (Reply::Stall(Duration::from_secs(2)), "http"),
    ];
    for (reply, kind) in cases {
        // Every attempt gets the same reply.
        let (url, seen) = serve(move |_, _| reply.clone());
        let mut up = upstream(url, ChatPrefill::LastAssistant);
        let err = StreamMachine::new("boiling?", MachineConfig::default())
            .unwrap()
            .run(&mut up, &mut Units::default(), |_| {})
            .unwrap_err();
        let got = match &err {
            Error::Model(aligner_model::Error::HttpStatus { status, body, .. }) => {
                assert!(*status == 429 || body.contains("overloaded"), "{err}");
                "status"
            }
            Error::Model(aligner_model::Error::Stream { .. }) => "stream",
            Error::Model(aligner_model::Error::Http { .. }) => "http",
            _ => "other",
        };
        assert_eq!(got, kind, "{err:?}");
        assert!(!seen.lock().unwrap().is_empty());
    }
}
