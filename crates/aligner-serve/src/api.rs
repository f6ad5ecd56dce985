//! The OpenAI chat-completions wire format: reading a request (every problem a typed
//! [`ApiError`] with a 4xx status, never a panic) and writing answers, chunks and errors.

use std::time::{SystemTime, UNIX_EPOCH};

use aligner_data::file::json_type;
use aligner_model::chat::ChatMessage;
use aligner_model::generate::SamplingConfig;
use aligner_stream::Conversation;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::worker::Outcome;
use crate::{AlignMode, ServeConfig};

/// The model names the server answers to, and the mode each selects.
pub const MODELS: [(&str, AlignMode); 3] = [
    ("aligner-stream", AlignMode::Stream),
    ("aligner-whole", AlignMode::Whole),
    ("upstream", AlignMode::Off),
];

/// An error answer in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// The request field concerned.
    pub param: Option<&'static str>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A `400 invalid_request_error` about `param`.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// The same error with another status and code.
    #[must_use]
    pub fn with(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }

    /// A server-side error of `kind` with `status`.
    pub fn server(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// The JSON body.
    #[must_use]
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// A validated chat-completions request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model name asked for (echoed in answers).
    pub model: String,
    /// How to answer.
    pub mode: AlignMode,
    /// The conversation.
    pub conversation: Conversation,
    /// Stream the answer as server-sent events.
    pub stream: bool,
    /// Most upstream tokens.
    pub max_tokens: usize,
    /// The upstream's token choice, if the request sets any sampling parameter.
    pub sampling: Option<SamplingConfig>,
    /// Stop sequences (OpenAI's `stop`, at most 4): the answer ends before the first of them.
    pub stop: Vec<String>,
}

/// The text of a message's `content`: a string, or an array of `{"type": "text", "text"}`
/// parts.
fn content_text(content: &Value, i: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(text)) => out.push_str(text),
                    _ => {
                        return Err(ApiError::invalid(
                            Some("messages"),
                            format!("messages[{i}].content: only text parts are supported"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::invalid(
            Some("messages"),
            format!(
                "messages[{i}].content must be a string, not {}",
                json_type(other)
            ),
        )),
    }
}

fn number(body: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::invalid(
            Some(key),
            format!("`{key}` must be a number, not {}", json_type(other)),
        )),
    }
}

fn integer(body: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid(
                Some(key),
                format!("`{key}` must be a non-negative integer, not {n}"),
            )
        }),
        Some(other) => Err(ApiError::invalid(
            Some(key),
            format!("`{key}` must be an integer, not {}", json_type(other)),
        )),
    }
}

/// OpenAI's `stop`: `null`, a string, or an array of at most 4 strings, none empty.
fn stop_sequences(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::invalid(Some("stop"), message);
    let stops = match body.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(format!(
                    "`stop` must hold strings, not {}",
                    json_type(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(format!(
                "`stop` must be a string or an array of strings, not {}",
                json_type(other)
            )));
        }
    };
    if stops.len() > MAX_STOP {
        return Err(invalid(format!(
            "`stop` has {} sequences; at most {MAX_STOP} are allowed",
            stops.len()
        )));
    }
    if stops.iter().any(String::is_empty) {
        return Err(invalid("`stop` sequences must not be empty".into()));
    }
    Ok(stops)
}

/// Most stop sequences of a request (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// Known OpenAI request fields that would change the answer or its format and that this server
/// does not implement, each with the values that leave the answer unchanged (which are
/// accepted). Setting one otherwise is a `400` naming the field, never silently ignored.
const UNSUPPORTED: [(&str, Neutral); 11] = [
    ("presence_penalty", is_zero),
    ("frequency_penalty", is_zero),
    ("logit_bias", is_empty),
    ("logprobs", is_false),
    ("top_logprobs", is_zero),
    ("tools", is_empty),
    ("functions", is_empty),
    ("tool_choice", |v| {
        matches!(v.as_str(), Some("none" | "auto"))
    }),
    ("function_call", |v| {
        matches!(v.as_str(), Some("none" | "auto"))
    }),
    ("response_format", |v| v["type"] == "text"),
    ("audio", |_| false),
];

/// Whether a field's value leaves the answer as it would be without the field.
type Neutral = fn(&Value) -> bool;

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

fn is_empty(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(Map::is_empty)
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

/// The first known field that is set to a value this server cannot honour.
fn unsupported_field(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (field, harmless) in UNSUPPORTED {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if harmless(v) => {}
            Some(v) => {
                return Err(ApiError::invalid(
                    Some(field),
                    format!("`{field}` is not supported by this server (got {v})"),
                )
                .with(StatusCode::BAD_REQUEST, "unsupported_parameter"));
            }
        }
    }
    Ok(())
}

/// Reads and checks a request body. Unknown fields are ignored, as OpenAI-compatible servers
/// do; known fields of the wrong type or out of range, a malformed body, an unknown model and
/// unusable messages are errors, and so are the known fields that would change the answer but
/// are not implemented (`logprobs`, `tools`, penalties, ...: see `UNSUPPORTED`) when set to
/// anything but their neutral value.
pub fn parse_request(bytes: &[u8], config: &ServeConfig) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid(None, "the body must be a JSON object"));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        None => return Err(ApiError::invalid(Some("model"), "`model` is required")),
        Some(other) => {
            return Err(ApiError::invalid(
                Some("model"),
                format!("`model` must be a string, not {}", json_type(other)),
            ));
        }
    };
    let mut mode = MODELS
        .iter()
        .find(|(name, _)| *name == model)
        .map(|(_, mode)| *mode)
        .ok_or_else(|| {
            let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
            ApiError::invalid(
                Some("model"),
                format!(
                    "the model `{model}` does not exist; this server has {}",
                    names.join(", ")
                ),
            )
            .with(StatusCode::NOT_FOUND, "model_not_found")
        })?;
    match body.get("aligner_mode") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) => {
            mode = AlignMode::parse(m).ok_or_else(|| {
                ApiError::invalid(
                    Some("aligner_mode"),
                    format!("`aligner_mode` is `{m}`; it must be stream, whole or off"),
                )
            })?;
        }
        Some(other) => {
            return Err(ApiError::invalid(
                Some("aligner_mode"),
                format!("`aligner_mode` must be a string, not {}", json_type(other)),
            ));
        }
    }
    let list = match body.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(Some("messages"), "`messages` is empty"));
        }
        None => {
            return Err(ApiError::invalid(
                Some("messages"),
                "`messages` is required",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                Some("messages"),
                format!("`messages` must be an array, not {}", json_type(other)),
            ));
        }
    };
    let mut messages = Vec::with_capacity(list.len());
    let mut chars = 0usize;
    for (i, m) in list.iter().enumerate() {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(ApiError::invalid(
                Some("messages"),
                format!("messages[{i}] needs a string `role`"),
            ));
        };
        let content = content_text(m.get("content").unwrap_or(&Value::Null), i)?;
        chars += content.chars().count();
        // `developer` is OpenAI's newer name for `system`.
        let role = if role == "developer" { "system" } else { role };
        messages.push(ChatMessage::new(role, content));
    }
    if chars > config.max_input_chars {
        return Err(ApiError::invalid(
            Some("messages"),
            format!(
                "the messages hold {chars} characters; this server takes at most {}",
                config.max_input_chars
            ),
        )
        .with(StatusCode::BAD_REQUEST, "context_length_exceeded"));
    }
    let conversation = Conversation::new(messages)
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
    if conversation.last_user().trim().is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "the last user message is empty",
        ));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("stream"),
                format!("`stream` must be a boolean, not {}", json_type(other)),
            ));
        }
    };
    let max_tokens = match (
        integer(&body, "max_completion_tokens")?,
        integer(&body, "max_tokens")?,
    ) {
        (Some(n), _) | (None, Some(n)) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if n == 0 || n > config.max_tokens_limit {
                return Err(ApiError::invalid(
                    Some("max_tokens"),
                    format!(
                        "`max_tokens` is {n}; it must be between 1 and {}",
                        config.max_tokens_limit
                    ),
                ));
            }
            n
        }
        (None, None) => config.default_max_tokens,
    };
    if let Some(n) = integer(&body, "n")?
        && n != 1
    {
        return Err(ApiError::invalid(
            Some("n"),
            format!("`n` is {n}; this server writes one answer per request"),
        ));
    }
    let temperature = number(&body, "temperature")?;
    let top_p = number(&body, "top_p")?;
    let seed = integer(&body, "seed")?;
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("`temperature` is {t}; it must be between 0 and 2"),
        ));
    }
    if let Some(p) = top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("`top_p` is {p}; it must be in (0, 1]"),
        ));
    }
    let stop = stop_sequences(&body)?;
    unsupported_field(&body)?;
    let sampling = match (temperature, top_p, seed) {
        (None, None, None) => None,
        // Temperature 0 (or none) is greedy decoding, as on OpenAI's API.
        (None | Some(0.0), _, _) => Some(SamplingConfig::greedy()),
        (Some(t), p, s) => Some(SamplingConfig {
            temperature: Some(t),
            top_p: p,
            seed: s.unwrap_or(0),
            ..SamplingConfig::default()
        }),
    };
    Ok(ChatRequest {
        model,
        mode,
        conversation,
        stream,
        max_tokens,
        sampling,
        stop,
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `usage` of an outcome.
fn usage(outcome: &Outcome) -> Value {
    let s = &outcome.record.summary;
    json!({
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        "aligner": {"upstream_tokens": s.upstream_tokens, "aligner_tokens": s.corrector_tokens},
    })
}

/// The non-streamed answer. The `aligner` extension field has the mode, the upstream's whole
/// draft and each sentence's draft and committed text.
pub(crate) fn completion(id: &str, model: &str, mode: AlignMode, outcome: &Outcome) -> Value {
    let record = &outcome.record;
    let sentences: Vec<Value> = if mode == AlignMode::Whole {
        vec![
            json!({"draft": record.draft, "text": record.answer, "changed": record.summary.changed > 0}),
        ]
    } else {
        record
            .rounds
            .iter()
            .map(|r| json!({"draft": r.last, "text": r.committed, "changed": r.changed}))
            .collect()
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": record.answer},
            "finish_reason": outcome.finish_reason,
        }],
        "usage": usage(outcome),
        "aligner": {
            "mode": mode.as_str(),
            "draft": record.draft,
            "changed": record.summary.changed,
            "sentences": sentences,
        },
    })
}

/// A streamed chunk with `delta`; `extra` fields are merged at the top level.
pub(crate) fn chunk(
    id: &str,
    model: &str,
    delta: Value,
    finish_reason: Option<&str>,
    extra: Option<(&str, Value)>,
) -> Value {
    let mut v = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    if let (Some((key, value)), Some(map)) = (extra, v.as_object_mut()) {
        map.insert(key.to_owned(), value);
    }
    v
}

/// The last chunk: the finish reason and the usage.
pub(crate) fn final_chunk(id: &str, model: &str, outcome: &Outcome) -> Value {
    chunk(
        id,
        model,
        json!({}),
        Some(outcome.finish_reason),
        Some(("usage", usage(outcome))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, ApiError> {
        parse_request(body.as_bytes(), &ServeConfig::default())
    }

    #[test]
    fn bad_requests_are_4xx_errors_with_the_field() {
        let cases = [
            ("{", 400, None),
            ("[]", 400, None),
            (
                r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
                400,
                Some("model"),
            ),
            (
                r#"{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}"#,
                404,
                Some("model"),
            ),
            (
                r#"{"model": "upstream", "messages": []}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": "hi"}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": 3}]}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"content": "x"}]}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "tool", "content": "x"}]}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "assistant", "content": "x"}]}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": " "}]}"#,
                400,
                Some("messages"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}"#,
                400,
                Some("max_tokens"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "temperature": 3}"#,
                400,
                Some("temperature"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
                400,
                Some("temperature"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "top_p": 0}"#,
                400,
                Some("top_p"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "n": 2}"#,
                400,
                Some("n"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#,
                400,
                Some("stream"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "aligner_mode": "fast"}"#,
                400,
                Some("aligner_mode"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "stop": 3}"#,
                400,
                Some("stop"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}"#,
                400,
                Some("stop"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}"#,
                400,
                Some("stop"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "stop": ""}"#,
                400,
                Some("stop"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "logprobs": true}"#,
                400,
                Some("logprobs"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 0.5}"#,
                400,
                Some("frequency_penalty"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#,
                400,
                Some("tools"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}"#,
                400,
                Some("response_format"),
            ),
            (
                r#"{"model": "upstream", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"42": 10}}"#,
                400,
                Some("logit_bias"),
            ),
        ];
        for (body, status, param) in cases {
            let err = parse(body).expect_err(body);
            assert_eq!(err.status.as_u16(), status, "{body}: {err}");
            assert_eq!(err.param, param, "{body}: {err}");
            assert!(err.body()["error"]["message"].is_string());
        }
        let long = format!(
            r#"{{"model": "upstream", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
            "x".repeat(ServeConfig::default().max_input_chars + 1)
        );
        assert_eq!(
            parse(&long).unwrap_err().code,
            Some("context_length_exceeded")
        );
    }

    #[test]
    fn good_requests_choose_the_mode_by_model_or_field() {
        let r = parse(r#"{"model": "aligner-whole", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": true, "max_tokens": 7, "temperature": 0, "extra": 1}"#).unwrap();
        assert_eq!(r.mode, AlignMode::Whole);
        assert!(r.stream);
        assert_eq!(r.max_tokens, 7);
        assert_eq!(r.sampling, Some(SamplingConfig::greedy()));
        assert_eq!(r.conversation.last_user(), "hi");
        let r = parse(r#"{"model": "aligner-stream", "aligner_mode": "off", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(r.mode, AlignMode::Off);
        assert_eq!(r.sampling, None);
        assert_eq!(r.max_tokens, ServeConfig::default().default_max_tokens);
        assert!(r.stop.is_empty());
        // `stop` as a string or an array; the unsupported fields at their neutral values.
        let r = parse(r#"{"model": "upstream", "messages": [{"role": "user", "content": "hi"}], "stop": "\n\n", "logprobs": false, "frequency_penalty": 0, "presence_penalty": 0.0, "tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "logit_bias": {}, "user": "u"}"#).unwrap();
        assert_eq!(r.stop, ["\n\n"]);
        let r = parse(r#"{"model": "upstream", "messages": [{"role": "user", "content": "hi"}], "stop": ["The answer", "!"]}"#).unwrap();
        assert_eq!(r.stop, ["The answer", "!"]);
        let err = parse(r#"{"model": "upstream", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}"#).unwrap_err();
        assert_eq!(err.code, Some("unsupported_parameter"));
    }
}
