//! [`Upstream`]s served over OpenAI-compatible HTTP endpoints (vLLM, TGI, llama.cpp's server,
//! hosted APIs): how a large upstream on other machines takes part in the loop.
//!
//! - [`RemoteUpstream`] speaks `/v1/completions`: each round sends the conversation rendered
//!   locally with the upstream's chat template ([`RemoteUpstream::with_template`], or any
//!   [`RenderPrompt`]) plus the accepted answer as the prompt. Every completions server can
//!   continue a partial answer this way, so it serves both stream and whole-answer mode.
//! - [`ChatUpstream`] speaks `/v1/chat/completions`: the conversation goes as `messages`, and
//!   the accepted answer as a partial assistant message continued in the server's way
//!   ([`ChatPrefill`]). With [`ChatPrefill::None`] (OpenAI's own API) it cannot continue a
//!   corrected answer: stream mode stops with [`Error::Unsupported`] before any request, and
//!   whole-answer mode ([`crate::modes::whole_answer`]) is the way to align such an upstream.
//!
//! Both stream the continuation through a [`StreamingSegmenter`] and close the stream as soon
//! as the first sentence is certain, so the server stops generating there. Timeouts, retries
//! and typed HTTP errors come from the shared [`aligner_model::remote::Client`].

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use aligner_model::chat::ChatTemplate;
use aligner_model::remote::{ChatPrefill, Client, Completion, CompletionParams};

use crate::conversation::Conversation;
use crate::local::render_conversation;
use crate::machine::{Draft, DraftStop, Upstream};
use crate::segment::StreamingSegmenter;
use crate::{Error, Result};

/// Renders a conversation into the text the upstream continues (its chat format up to the start
/// of the assistant's answer).
pub type RenderPrompt = Box<dyn Fn(&Conversation) -> Result<String> + Send>;

/// An upstream model behind an OpenAI-compatible `/completions` endpoint.
pub struct RemoteUpstream {
    client: Client,
    params: CompletionParams,
    render: RenderPrompt,
}

impl std::fmt::Debug for RemoteUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteUpstream")
            .field("client", &self.client)
            .field("params", &self.params)
            .finish()
    }
}

impl RemoteUpstream {
    /// An upstream over `client`; `params` set sampling (their `max_tokens` is replaced by each
    /// call's cap), `render` turns the conversation into the prompt prefix.
    pub fn new(client: Client, params: CompletionParams, render: RenderPrompt) -> Self {
        Self {
            client,
            params,
            render,
        }
    }

    /// An upstream whose prompts are rendered with `template` (the served model's chat
    /// template, e.g. from its `tokenizer_config.json`), with `system` first unless the
    /// conversation has its own system message.
    pub fn with_template(
        client: Client,
        params: CompletionParams,
        template: ChatTemplate,
        system: Option<String>,
    ) -> Self {
        let render: RenderPrompt = Box::new(move |conversation| {
            render_conversation(Some(&template), system.as_deref(), conversation)
        });
        Self::new(client, params, render)
    }
}

impl Upstream for RemoteUpstream {
    /// Checks `cancel` before the request and at every streamed chunk, and closes the stream
    /// once it is set, so the server stops generating. (A server that sends nothing is only
    /// noticed at the next chunk or the client's read timeout.)
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        let prompt = format!("{}{accepted}", (self.render)(conversation)?);
        let params = capped(&self.params, max_tokens);
        let client = &self.client;
        first_sentence(client, accepted, max_tokens, cancel, &mut |on_delta| {
            client.complete_streaming(&prompt, &params, on_delta)
        })
    }
}

/// An upstream model behind an OpenAI-compatible `/chat/completions` endpoint, streamed.
#[derive(Debug)]
pub struct ChatUpstream {
    client: Client,
    params: CompletionParams,
    prefill: ChatPrefill,
    system: Option<String>,
}

impl ChatUpstream {
    /// An upstream over `client`; `params` set sampling (their `max_tokens` is replaced by each
    /// call's cap), `prefill` says how the server continues a partial answer, `system` is put
    /// first unless a conversation has its own system message.
    pub fn new(
        client: Client,
        params: CompletionParams,
        prefill: ChatPrefill,
        system: Option<String>,
    ) -> Self {
        Self {
            client,
            params,
            prefill,
            system,
        }
    }

    /// How the server continues a partial answer.
    #[must_use]
    pub fn prefill(&self) -> ChatPrefill {
        self.prefill
    }
}

impl Upstream for ChatUpstream {
    /// Errors with [`Error::Unsupported`] when `accepted` is not empty and the server has no
    /// prefix continuation ([`ChatPrefill::None`]). `cancel` is checked as
    /// [`RemoteUpstream`]'s: before the request and at every chunk.
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        if !accepted.is_empty() && !self.prefill.continues_prefix() {
            return Err(Error::Unsupported(format!(
                "the chat upstream {} has no prefix continuation (prefill style `none`), so it \
                 cannot continue a corrected answer",
                self.client.config().base_url
            )));
        }
        let messages = conversation.with_default_system(self.system.as_deref());
        let params = capped(&self.params, max_tokens);
        let (client, prefill) = (&self.client, self.prefill);
        first_sentence(client, accepted, max_tokens, cancel, &mut |on_delta| {
            client.chat_streaming(&messages, accepted, prefill, &params, on_delta)
        })
    }

    fn continues_answers(&self) -> bool {
        self.prefill.continues_prefix()
    }

    /// One streamed request for the whole answer (no prefix continuation needed).
    fn answer_whole(
        &mut self,
        conversation: &Conversation,
        max_tokens: usize,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<Draft> {
        let messages = conversation.with_default_system(self.system.as_deref());
        let params = capped(&self.params, max_tokens);
        let mut chunks = 0usize;
        let out = self.client.chat_streaming(
            &messages,
            "",
            ChatPrefill::None,
            &params,
            &mut |delta| {
                chunks += 1;
                on_delta(delta);
                ControlFlow::Continue(())
            },
        )?;
        let stop = match out.finish_reason.as_deref() {
            Some("length") => DraftStop::TokenCap,
            _ => DraftStop::Eos,
        };
        Ok(Draft {
            text: out.text,
            tokens: chunks,
            stop,
        })
    }
}

/// The callback that sees each streamed piece of text and may stop the stream.
type OnDelta<'a> = &'a mut dyn FnMut(&str) -> ControlFlow<()>;

/// `params` with `max_tokens` as the cap.
fn capped(params: &CompletionParams, max_tokens: usize) -> CompletionParams {
    CompletionParams {
        max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
        ..params.clone()
    }
}

/// A streamed request that carries on `accepted` (`request` makes it, given the delta
/// callback), read up to the first complete sentence, the end of the answer or `max_tokens`
/// chunks; the stream is closed there, or as soon as `cancel` is set ([`Error::Cancelled`]).
fn first_sentence(
    client: &Client,
    accepted: &str,
    max_tokens: usize,
    cancel: Option<&AtomicBool>,
    request: &mut dyn FnMut(OnDelta<'_>) -> aligner_model::Result<Completion>,
) -> Result<Draft> {
    let is_cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    if is_cancelled() {
        return Err(Error::Cancelled);
    }
    let mut segmenter = StreamingSegmenter::continuing(accepted);
    let mut sentence: Option<String> = None;
    // Servers stream about one token per chunk; chunks are counted as tokens.
    let mut chunks = 0usize;
    let out = request(&mut |delta| {
        if is_cancelled() {
            return ControlFlow::Break(());
        }
        chunks += 1;
        match segmenter.push(delta).next() {
            Some(first) => {
                sentence = Some(first.to_owned());
                ControlFlow::Break(())
            }
            None => ControlFlow::Continue(()),
        }
    })?;
    if is_cancelled() {
        return Err(Error::Cancelled);
    }
    let (text, stop) = match sentence {
        Some(text) => (text, DraftStop::Sentence),
        None => {
            let text: String = segmenter.finish().collect();
            let stop = match out.finish_reason.as_deref() {
                Some("length") => DraftStop::TokenCap,
                _ if chunks >= max_tokens => DraftStop::TokenCap,
                _ => DraftStop::Eos,
            };
            (text, stop)
        }
    };
    if text.is_empty() && stop == DraftStop::TokenCap {
        return Err(Error::Protocol {
            component: "upstream",
            reason: format!(
                "{} produced no text in {max_tokens} tokens",
                client.config().base_url
            ),
        });
    }
    Ok(Draft {
        text,
        tokens: chunks,
        stop,
    })
}
