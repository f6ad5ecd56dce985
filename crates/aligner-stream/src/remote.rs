//! An [`Upstream`] served over an OpenAI-compatible completions endpoint (vLLM, TGI, llama.cpp's
//! server): how a large upstream on other machines takes part in the loop.
//!
//! Each round sends the rendered question plus the accepted answer as the prompt, streams the
//! continuation through a [`StreamingSegmenter`], and closes the stream as soon as the first
//! sentence is certain, so the server stops generating there. Timeouts and retries come from the
//! shared [`aligner_model::remote::Client`].

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use aligner_model::remote::{Client, CompletionParams};

use crate::machine::{Draft, DraftStop, Upstream};
use crate::segment::StreamingSegmenter;
use crate::{Error, Result};

/// Renders a question into the text the upstream continues (its chat format up to the start of
/// the assistant's answer).
pub type RenderPrompt = Box<dyn Fn(&str) -> Result<String> + Send>;

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
    /// call's cap), `render` turns the question into the prompt prefix.
    pub fn new(client: Client, params: CompletionParams, render: RenderPrompt) -> Self {
        Self {
            client,
            params,
            render,
        }
    }
}

impl Upstream for RemoteUpstream {
    fn draft(&mut self, question: &str, accepted: &str, max_tokens: usize) -> Result<Draft> {
        self.draft_until(question, accepted, max_tokens, None)
    }

    /// Checks `cancel` before the request and at every streamed chunk, and closes the stream
    /// once it is set, so the server stops generating. (A server that sends nothing is only
    /// noticed at the next chunk or the request's timeout.)
    fn draft_cancellable(
        &mut self,
        question: &str,
        accepted: &str,
        max_tokens: usize,
        cancel: &AtomicBool,
    ) -> Result<Draft> {
        self.draft_until(question, accepted, max_tokens, Some(cancel))
    }
}

impl RemoteUpstream {
    fn draft_until(
        &mut self,
        question: &str,
        accepted: &str,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        let is_cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        if is_cancelled() {
            return Err(Error::Cancelled);
        }
        let prompt = format!("{}{accepted}", (self.render)(question)?);
        let params = CompletionParams {
            max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
            ..self.params.clone()
        };
        let mut segmenter = StreamingSegmenter::continuing(accepted);
        let mut sentence: Option<String> = None;
        // Servers stream about one token per chunk; chunks are counted as tokens.
        let mut chunks = 0usize;
        let out = self
            .client
            .complete_streaming(&prompt, &params, &mut |delta| {
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
                    self.client.config().base_url
                ),
            });
        }
        Ok(Draft {
            text,
            tokens: chunks,
            stop,
        })
    }
}
