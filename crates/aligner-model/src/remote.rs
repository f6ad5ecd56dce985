//! A client for OpenAI-compatible HTTP endpoints — what vLLM, TGI, llama.cpp's server and hosted
//! APIs expose — for text completions (an upstream model continuing an answer, streamed, so the
//! caller can stop it at a sentence boundary) and chat completions (a judge).
//!
//! Requests time out, and connection failures, `429` and `5xx` answers are retried with
//! exponential backoff. A streamed completion is retried only if it failed before any text
//! arrived.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use aligner_model::remote::{Client, CompletionParams, EndpointConfig};
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
//! # Ok::<(), aligner_model::Error>(())
//! ```

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chat::ChatMessage;
use crate::{Error, Result};

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
    /// Worth retrying (connection error, 429, 5xx), with the reason.
    Retry(String),
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
        let mut last = String::new();
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
            let mut request = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                request = request.header("Authorization", format!("Bearer {key}"));
            }
            let response = match request.send(body.to_string()) {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status == 429 || status >= 500 {
                last = format!("HTTP {status}");
                continue;
            }
            if status >= 400 {
                let mut response = response;
                let text = response.body_mut().read_to_string().unwrap_or_default();
                let snippet: String = text.chars().take(300).collect();
                return Err(Error::Http {
                    url,
                    reason: format!("HTTP {status}: {snippet}"),
                });
            }
            match read(response)? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(reason) => last = reason,
            }
        }
        Err(Error::Http {
            url,
            reason: format!(
                "gave up after {} attempts: {last}",
                self.config.max_retries + 1
            ),
        })
    }

    /// A text completion of `prompt`, not streamed.
    pub fn complete(&self, prompt: &str, params: &CompletionParams) -> Result<Completion> {
        let mut body = self.body(params, false);
        body.insert("prompt".into(), prompt.into());
        let url = self.url("completions");
        self.request("completions", &Value::Object(body), |mut response| {
            let v: Value = response.body_mut().read_json().map_err(|e| Error::Http {
                url: url.clone(),
                reason: format!("bad JSON answer: {e}"),
            })?;
            let choice = &v["choices"][0];
            let text = choice["text"].as_str().ok_or_else(|| Error::Http {
                url: url.clone(),
                reason: format!("no choices[0].text in {v}"),
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
            let v: Value = response.body_mut().read_json().map_err(|e| Error::Http {
                url: url.clone(),
                reason: format!("bad JSON answer: {e}"),
            })?;
            let choice = &v["choices"][0];
            let text = choice["message"]["content"]
                .as_str()
                .ok_or_else(|| Error::Http {
                    url: url.clone(),
                    reason: format!("no choices[0].message.content in {v}"),
                })?;
            Ok(Attempt::Done(Completion {
                text: text.to_owned(),
                finish_reason: choice["finish_reason"].as_str().map(str::to_owned),
                stopped_by_caller: false,
            }))
        })
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
            let mut reader = BufReader::new(response.into_body().into_reader());
            let mut out = Completion {
                text: String::new(),
                finish_reason: None,
                stopped_by_caller: false,
            };
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    // Nothing received yet: the whole request may be retried.
                    Err(e) if out.text.is_empty() => return Ok(Attempt::Retry(e.to_string())),
                    Err(e) => {
                        return Err(Error::Http {
                            url: url.clone(),
                            reason: format!("stream broke after {} bytes: {e}", out.text.len()),
                        });
                    }
                }
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim_start();
                if data == "[DONE]" {
                    break;
                }
                let chunk: Value = serde_json::from_str(data).map_err(|e| Error::Http {
                    url: url.clone(),
                    reason: format!("bad stream chunk `{data}`: {e}"),
                })?;
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
