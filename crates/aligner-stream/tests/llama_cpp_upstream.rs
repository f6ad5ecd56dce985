//! A real upstream nobody here wrote: llama.cpp's OpenAI-compatible server (the pip package
//! `llama-cpp-python[server]`, installed into the cached environment by `cargo xtask setup`)
//! serving the embedded GGUF on 127.0.0.1, started by the test.
//!
//! Its `/v1/completions` continues a prompt that ends inside the assistant's answer, so stream
//! mode goes through completions (the prompt rendered here with the model's chat template); its
//! `/v1/chat/completions` starts a new turn after a final assistant message, so it is a chat
//! upstream without prefix continuation: whole answers only.

#![allow(clippy::unwrap_used)]

#[path = "support/llama_server.rs"]
mod llama_server;

use aligner_model::chat::ChatMessage;
use aligner_model::remote::{ChatPrefill, CompletionParams};
use aligner_model::{ModelTokenizer, hub};
use aligner_stream::remote::{ChatUpstream, RemoteUpstream};
use aligner_stream::{
    Conversation, Correction, Corrector, Error, MachineConfig, StreamMachine, Upstream,
    first_sentence_end,
};
use llama_server::LlamaServer;

fn greedy() -> CompletionParams {
    CompletionParams {
        temperature: Some(0.0),
        seed: Some(0),
        ..CompletionParams::default()
    }
}

/// Replaces the first sentence with a fixed one and keeps the others.
struct RewriteFirst;
impl Corrector for RewriteFirst {
    fn correct(
        &mut self,
        _q: &str,
        prefix: &str,
        last: &str,
    ) -> aligner_stream::Result<Correction> {
        let text = if prefix.is_empty() {
            "Sunlight is scattered by the air, and blue light is scattered the most.".to_owned()
        } else {
            last.to_owned()
        };
        Ok(Correction { text, tokens: 1 })
    }
}

#[test]
fn llama_cpp_as_upstream_stream_mode_over_completions_and_whole_answers_over_chat() {
    let server = LlamaServer::start();
    let template = || {
        let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
        ModelTokenizer::from_dir(&dir)
            .unwrap()
            .chat_template()
            .unwrap()
            .unwrap()
    };
    let question = "Why is the sky blue?";
    let conversation = Conversation::single(question);

    // Stream mode through completions: after the corrected first sentence, the server continues
    // exactly the corrected text (the same first sentence as a plain completion of it).
    let mut upstream = RemoteUpstream::with_template(server.client(), greedy(), template(), None);
    let config = MachineConfig {
        max_rounds: 2,
        max_total_tokens: 96,
        ..MachineConfig::default()
    };
    let record = StreamMachine::new(question, config)
        .unwrap()
        .run(&mut upstream, &mut RewriteFirst, |_| {})
        .unwrap();
    assert_eq!(record.rounds.len(), 2, "{record:?}");
    assert!(record.rounds[0].changed);
    let prompt =
        aligner_stream::render_conversation(Some(&template()), None, &conversation).unwrap();
    let plain = server
        .client()
        .complete(
            &format!("{prompt}{}", record.rounds[0].committed),
            &CompletionParams {
                max_tokens: 96,
                ..greedy()
            },
        )
        .unwrap();
    let expected = plain.text.trim_start();
    let end = first_sentence_end(expected).unwrap_or(expected.len());
    assert!(!expected[..end].trim().is_empty(), "{plain:?}");
    assert_eq!(record.rounds[1].last.trim(), expected[..end].trim());

    // Whole answers through chat; stream mode is refused there.
    let mut chat = ChatUpstream::new(server.client(), greedy(), ChatPrefill::None, None);
    let whole = chat.answer_whole(&conversation, 64, &mut |_| {}).unwrap();
    assert!(!whole.text.trim().is_empty());
    let not_streamed = server
        .client()
        .chat(
            &[ChatMessage::user(question)],
            &CompletionParams {
                max_tokens: 64,
                ..greedy()
            },
        )
        .unwrap();
    assert_eq!(whole.text, not_streamed.text);
    let err = StreamMachine::new(question, MachineConfig::default())
        .unwrap()
        .run(&mut chat, &mut RewriteFirst, |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
}
