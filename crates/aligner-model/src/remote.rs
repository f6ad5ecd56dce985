//! A client for OpenAI-compatible HTTP endpoints — what vLLM, TGI, llama.cpp's server and hosted
//! APIs expose — for text completions (an upstream model continuing an answer, streamed, so the
//! caller can stop it at a sentence boundary) and chat completions (an upstream answering a
//! conversation, streamed, possibly continuing a partial assistant message; or a judge).
//!
//! Requests time out (connection, silence between reads, whole request), and connection
//! failures, `429` and `5xx` answers are retried with exponential backoff (longer where the
//! server's `Retry-After` asks for it). A streamed answer is retried only if it failed before
//! any text arrived. Failures are typed: [`Error::HttpStatus`] carries the status and an excerpt
//! of the body, [`Error::Stream`] a stream that is not the server-sent events it should be,
//! [`Error::Http`] a transport failure.
//!
//! Chat servers continue a partial assistant message in different ways; [`ChatPrefill`]
//! selects one.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use aligner_model::chat::ChatMessage;
//! use aligner_model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig};
//! let client = Client::new(EndpointConfig {
//!     base_url: "http://127.0.0.1:8000/v1".into(),
//!     model: "meta-llama/Llama-3-70B-Instruct".into(),
//!     ..EndpointConfig::default()
//! })?;
//! let params = CompletionParams { max_tokens: 64, ..CompletionParams::default() };
//! let out = client.complete_streaming("The sky is blue because", &params, &mut |delta| {
//!     print!("{delta}");
//!     if delta.contains('.') { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
//! })?;
//! // The same through the chat API of a vLLM server, continuing after a given answer start.
//! let messages = [ChatMessage::user("Why is the sky blue?")];
//! let rest = client.chat_streaming(
//!     &messages,
//!     "Because air scatters",
//!     ChatPrefill::ContinueFinalMessage,
//!     &params,
//!     &mut |_| ControlFlow::Continue(()),
//! )?;
//! # Ok::<(), aligner_model::Error>(())
//! ```

use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chat::ChatMessage;
use crate::{Error, Result};

/// Characters of an error answer's body kept in [`Error::HttpStatus`].
pub const BODY_EXCERPT_CHARS: usize = 300;

/// Longest wait a `Retry-After` header can impose before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where the endpoint is and how patiently to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// Base URL including the version prefix, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Name of the environment variable holding the API key (read by [`Client::new`]); no
    /// `Authorization` header is sent when it is unset.
    pub api_key_env: Option<String>,
    /// Time limit of one request (connection, sending and the whole answer).
    #[serde(with = "seconds")]
    pub timeout: Duration,
    /// Time limit of establishing the connection.
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer: a server that stalls mid-stream for longer
    /// fails the request (and a stream with no text yet is retried).
    #[serde(with = "seconds")]
    pub read_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one.
    #[serde(with = "seconds")]
    pub initial_backoff: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "default".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Sampling parameters of a request. `None` fields are not sent (the server's default applies).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletionParams {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy on most servers).
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k (a vLLM / llama.cpp extension).
    pub top_k: Option<u32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Seed, where the server supports one.
    pub seed: Option<u64>,
}

/// How a chat endpoint is asked to continue a partial assistant message (the accepted,
/// corrected start of an answer) instead of starting a new one. Servers do it differently, and
/// one that cannot do it at all can still answer whole questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChatPrefill {
    /// No continuation (OpenAI's own API): only whole answers; asking to continue a prefix is
    /// an error.
    #[default]
    None,
    /// vLLM: the prefix is a final assistant message, and the request says
    /// `"continue_final_message": true, "add_generation_prompt": false`.
    ContinueFinalMessage,
    /// llama.cpp's own server (`llama-server`): a final assistant message is prefilled and
    /// continued as it is.
    LastAssistant,
    /// DeepSeek and Mistral: the final assistant message carries `"prefix": true`.
    PrefixFlag,
}

impl ChatPrefill {
    /// Whether this style continues a partial assistant message.
    #[must_use]
    pub fn continues_prefix(self) -> bool {
        self != Self::None
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Generated text.
    pub text: String,
    /// The server's finish reason (`stop`, `length`, ...), if it sent one.
    pub finish_reason: Option<String>,
    /// Whether the caller ended a streamed completion early.
    pub stopped_by_caller: bool,
}

/// A blocking client for one OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    config: EndpointConfig,
    api_key: Option<String>,
}

enum Attempt<T> {
    Done(T),
    /// Worth retrying (a stream that broke before any text), with the reason.
    Retry(String),
}

/// Why the last attempt of a request failed.
enum Failure {
    Transport(String),
    Status { status: u16, body: String },
}

/// The first [`BODY_EXCERPT_CHARS`] characters of a body, on one line.
fn excerpt(body: &str) -> String {
    let mut out: String = body.chars().take(BODY_EXCERPT_CHARS).collect();
    if body.chars().nth(BODY_EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out.replace(['\r', '\n'], " ")
}

/// The wait a `Retry-After` header asks for, if it gives seconds.
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .map(|d| d.min(MAX_RETRY_AFTER))
}

impl Client {
    /// A client; reads the API key from `config.api_key_env` if that variable is set.
    pub fn new(config: EndpointConfig) -> Result<Self> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(Error::InvalidArgument(format!(
                "endpoint URL `{}` must start with http:// or https://",
                config.base_url
            )));
        }
        let api_key = config
            .api_key_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|k| !k.is_empty());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(config.connect_timeout))
            .timeout_per_read(Some(config.read_timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Self {
            agent,
            config,
            api_key,
        })
    }

    /// The endpoint configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn body(&self, params: &CompletionParams, stream: bool) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), self.config.model.clone().into());
        body.insert("max_tokens".into(), params.max_tokens.into());
        body.insert("stream".into(), stream.into());
        let optional = [
            ("temperature", params.temperature.map(Value::from)),
            ("top_p", params.top_p.map(Value::from)),
            ("top_k", params.top_k.map(Value::from)),
            (
                "frequency_penalty",
                params.frequency_penalty.map(Value::from),
            ),
            ("seed", params.seed.map(Value::from)),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                body.insert(key.into(), v);
            }
        }
        if !params.stop.is_empty() {
            body.insert("stop".into(), json!(params.stop));
        }
        body
    }

    /// Sends `body` to `path`, retrying as configured, and hands the successful response to `read`.
    fn request<T>(
        &self,
        path: &str,
        body: &Value,
        mut read: impl FnMut(ureq::http::Response<ureq::Body>) -> Result<Attempt<T>>,
    ) -> Result<T> {
        let url = self.url(path);
        let mut backoff = self.config.initial_backoff;
        let mut last = Failure::Transport(String::new());
        let attempts = self.config.max_retries + 1;
        let mut wait = Duration::ZERO;
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(wait.max(backoff));
                backoff = backoff.saturating_mul(2);
            }
            wait = Duration::ZERO;
            let mut request = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                request = request.header("Authorization", format!("Bearer {key}"));
            }
            let mut response = match request.send(body.to_string()) {
                Ok(r) => r,
                Err(e) => {
                    last = Failure::Transport(e.to_string());
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status >= 400 {
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(64 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                last = Failure::Status {
                    status,
                    body: excerpt(&text),
                };
                if status == 429 || status >= 500 {
                    wait = retry_after(&response).unwrap_or_default();
                    continue;
                }
                break;
            }
            match read(response)? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(reason) => last = Failure::Transport(reason),
            }
        }
        Err(match last {
            Failure::Status { status, body } => Error::HttpStatus {
                url,
                status,
                body,
                attempts: if status == 429 || status >= 500 {
                    attempts
                } else {
                    1
                },
            },
            Failure::Transport(reason) => Error::Http {
                url,
                reason: format!("gave up after {attempts} attempts: {reason}"),
            },
        })
    }

    /// A text completion of `prompt`, not streamed.
    pub fn complete(&self, prompt: &str, params: &CompletionParams) -> Result<Completion> {
        let mut body = self.body(params, false);
        body.insert("prompt".into(), prompt.into());
        let url = self.url("completions");
        self.request("completions", &Value::Object(body), |mut response| {
            let v = read_json(&url, &mut response)?;
            let choice = &v["choices"][0];
            let text = choice["text"].as_str().ok_or_else(|| Error::Stream {
                url: url.clone(),
                reason: format!("no choices[0].text in {}", excerpt(&v.to_string())),
            })?;
            Ok(Attempt::Done(Completion {
                text: text.to_owned(),
                finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
                stopped_by_caller: false,
            }))
        })
    }

    /// A streamed text completion of `prompt`. `on_delta` sees each piece of text as it arrives
    /// and may return `Break` to stop the generation there (the connection is closed, which
    /// makes the server stop).
    pub fn complete_streaming(
        &self,
        prompt: &str,
        params: &CompletionParams,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let mut body = self.body(params, true);
        body.insert("prompt".into(), prompt.into());
        self.stream(
            "completions",
            Value::Object(body),
            |chunk| chunk["choices"][0]["text"].as_str().map(str::to_owned),
            on_delta,
        )
    }

    /// A chat completion of `messages`, not streamed.
    pub fn chat(&self, messages: &[ChatMessage], params: &CompletionParams) -> Result<Completion> {
        let mut body = self.body(params, false);
        body.insert("messages".into(), json!(messages));
        let url = self.url("chat/completions");
        self.request("chat/completions", &Value::Object(body), |mut response| {
            let v = read_json(&url, &mut response)?;
            let choice = &v["choices"][0];
            let text = choice["message"]["content"]
                .as_str()
                .ok_or_else(|| Error::Stream {
                    url: url.clone(),
                    reason: format!(
                        "no choices[0].message.content in {}",
                        excerpt(&v.to_string())
                    ),
                })?;
            Ok(Attempt::Done(Completion {
                text: text.to_owned(),
                finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
                stopped_by_caller: false,
            }))
        })
    }

    /// The JSON body of a streamed chat request for `messages` whose answer starts with
    /// `assistant_prefix` (empty: a new answer), continued in the way `prefill` names. Errors
    /// if the prefix is not empty and `prefill` is [`ChatPrefill::None`], or if `messages` is
    /// empty.
    pub fn chat_body(
        &self,
        messages: &[ChatMessage],
        assistant_prefix: &str,
        prefill: ChatPrefill,
        params: &CompletionParams,
    ) -> Result<Value> {
        if messages.is_empty() {
            return Err(Error::InvalidArgument(
                "a chat request needs at least one message".into(),
            ));
        }
        let mut body = self.body(params, true);
        let mut list: Vec<Value> = messages.iter().map(|m| json!(m)).collect();
        if !assistant_prefix.is_empty() {
            let mut last = json!({"role": "assistant", "content": assistant_prefix});
            match prefill {
                ChatPrefill::None => {
                    return Err(Error::InvalidArgument(format!(
                        "the chat endpoint {} has no prefix continuation (ChatPrefill::None): \
                         it cannot continue a partial answer; use whole answers, or choose the \
                         server's prefill style",
                        self.config.base_url
                    )));
                }
                ChatPrefill::ContinueFinalMessage => {
                    body.insert("continue_final_message".into(), true.into());
                    body.insert("add_generation_prompt".into(), false.into());
                }
                ChatPrefill::LastAssistant => {}
                ChatPrefill::PrefixFlag => last["prefix"] = true.into(),
            }
            list.push(last);
        }
        body.insert("messages".into(), Value::Array(list));
        Ok(Value::Object(body))
    }

    /// A streamed chat completion of `messages` (SSE), continuing the assistant answer that
    /// starts with `assistant_prefix` (empty: a new answer) as `prefill` says; the deltas are
    /// the new text only. `on_delta` sees each piece of text as it arrives and may return
    /// `Break` to stop the generation there. Errors as [`chat_body`](Self::chat_body) does
    /// before any request is sent.
    pub fn chat_streaming(
        &self,
        messages: &[ChatMessage],
        assistant_prefix: &str,
        prefill: ChatPrefill,
        params: &CompletionParams,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let body = self.chat_body(messages, assistant_prefix, prefill, params)?;
        self.stream(
            "chat/completions",
            body,
            |chunk| {
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            },
            on_delta,
        )
    }

    fn stream(
        &self,
        path: &str,
        body: Value,
        text_of: impl Fn(&Value) -> Option<String>,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let url = self.url(path);
        self.request(path, &body, |response| {
            let mut events = SseReader::new(response.into_body().into_reader());
            let mut out = Completion {
                text: String::new(),
                finish_reason: None,
                stopped_by_caller: false,
            };
            loop {
                let data = match events.next_data() {
                    Ok(Some(data)) => data,
                    // The server closed the stream: complete if it said why it finished.
                    Ok(None) if out.finish_reason.is_some() => break,
                    Ok(None) if out.text.is_empty() => {
                        return Ok(Attempt::Retry("the stream ended with no data".into()));
                    }
                    Ok(None) => {
                        return Err(Error::Stream {
                            url: url.clone(),
                            reason: format!(
                                "the stream ended after {} bytes of text without [DONE] or a \
                                 finish reason",
                                out.text.len()
                            ),
                        });
                    }
                    Err(SseError::Malformed(reason)) => {
                        return Err(Error::Stream {
                            url: url.clone(),
                            reason,
                        });
                    }
                    // Nothing received yet: the whole request may be retried.
                    Err(SseError::Io(e)) if out.text.is_empty() => {
                        return Ok(Attempt::Retry(e.to_string()));
                    }
                    Err(SseError::Io(e)) => {
                        return Err(Error::Http {
                            url: url.clone(),
                            reason: format!("stream broke after {} bytes: {e}", out.text.len()),
                        });
                    }
                };
                if data == "[DONE]" {
                    break;
                }
                let chunk: Value = serde_json::from_str(&data).map_err(|e| Error::Stream {
                    url: url.clone(),
                    reason: format!("bad stream chunk `{}`: {e}", excerpt(&data)),
                })?;
                if let Some(error) = chunk.get("error") {
                    return Err(Error::Stream {
                        url: url.clone(),
                        reason: format!(
                            "the server sent an error: {}",
                            excerpt(&error.to_string())
                        ),
                    });
                }
                if !chunk["choices"].is_array() {
                    return Err(Error::Stream {
                        url: url.clone(),
                        reason: format!("a stream chunk has no choices: {}", excerpt(&data)),
                    });
                }
                if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
                    out.finish_reason = Some(reason.to_owned());
                }
                if let Some(delta) = text_of(&chunk).filter(|d| !d.is_empty()) {
                    out.text.push_str(&delta);
                    if on_delta(&delta).is_break() {
                        out.stopped_by_caller = true;
                        break;
                    }
                }
            }
            Ok(Attempt::Done(out))
        })
    }
}

/// The answer's body as JSON.
fn read_json(url: &str, response: &mut ureq::http::Response<ureq::Body>) -> Result<Value> {
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| Error::Http {
            url: url.to_owned(),
            reason: format!("reading the answer: {e}"),
        })?;
    serde_json::from_str(&text).map_err(|e| Error::Stream {
        url: url.to_owned(),
        reason: format!("the answer is not JSON ({e}): {}", excerpt(&text)),
    })
}

/// Why reading the next server-sent event failed.
#[derive(Debug)]
pub enum SseError {
    /// The connection failed (or timed out).
    Io(std::io::Error),
    /// The bytes are not server-sent events: not UTF-8, or a line too long.
    Malformed(String),
}

/// Most bytes of one line of a server-sent event stream.
const MAX_SSE_LINE: usize = 4 * 1024 * 1024;

/// Reads the `data` of server-sent events (`text/event-stream`) one event at a time: `data:`
/// lines are joined with newlines, an empty line ends an event, comments (`:`) and other
/// fields (`event:`, `id:`, `retry:`) are skipped. Shared by every streamed request here.
#[derive(Debug)]
pub struct SseReader<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> SseReader<R> {
    /// A reader over a response body.
    pub fn new(reader: R) -> Self {
        Self {
            reader: BufReader::new(reader),
            line: Vec::new(),
        }
    }

    /// The data of the next event, or `None` at the end of the stream (an unfinished last
    /// event is dropped, as the SSE specification says).
    pub fn next_data(&mut self) -> std::result::Result<Option<String>, SseError> {
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(MAX_SSE_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(SseError::Io)?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.len() > MAX_SSE_LINE {
                return Err(SseError::Malformed(format!(
                    "a stream line is longer than {MAX_SSE_LINE} bytes"
                )));
            }
            let line = std::str::from_utf8(&self.line)
                .map_err(|e| SseError::Malformed(format!("the stream is not UTF-8: {e}")))?;
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                match data.take() {
                    Some(d) => return Ok(Some(d)),
                    None => continue,
                }
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            if field != "data" {
                continue;
            }
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<String> {
        let mut reader = SseReader::new(text.as_bytes());
        let mut out = Vec::new();
        while let Ok(Some(d)) = reader.next_data() {
            out.push(d);
        }
        out
    }

    #[test]
    fn sse_events_join_data_lines_and_skip_the_rest() {
        assert_eq!(
            events(": hi\r\nevent: x\r\ndata: a\r\ndata:b\r\n\r\n\ndata: [DONE]\n\ndata: cut"),
            ["a\nb", "[DONE]"]
        );
        let mut bad = SseReader::new(&b"data: \xff\n\n"[..]);
        assert!(matches!(bad.next_data(), Err(SseError::Malformed(_))));
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        let long = "x\n".repeat(400);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(!e.contains('\n'));
    }
}
