//! The routes: authentication, admission into the worker's bounded queue, and the answers,
//! streamed or not.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, ApiError, ChatRequest, MODELS};
use crate::remote::{Refused, RemoteBackend};
use crate::worker::{Job, JobError, JobEvent, Outcome, Stats};
use crate::{AlignMode, PromptCounter, ServeConfig, stop};

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// Where requests go.
pub(crate) enum Backend {
    /// The worker's queue (a local upstream).
    Local(SyncSender<Job>),
    /// A thread per request, drafting from a remote upstream.
    Remote(Arc<RemoteBackend>),
}

struct Shared {
    config: ServeConfig,
    backend: Backend,
    stats: Arc<Stats>,
    counter: Arc<PromptCounter>,
    next_id: AtomicU64,
}

impl AppState {
    pub(crate) fn new(
        config: ServeConfig,
        backend: Backend,
        stats: Arc<Stats>,
        counter: PromptCounter,
    ) -> Self {
        Self(Arc::new(Shared {
            config,
            backend,
            stats,
            counter: Arc::new(counter),
            next_id: AtomicU64::new(1),
        }))
    }

    pub(crate) fn config(&self) -> &ServeConfig {
        &self.0.config
    }
}

/// The routes of the server.
pub(crate) fn router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::invalid(None, "no such route").with(StatusCode::NOT_FOUND, "not_found")
}

/// The bearer token check of the `/v1` routes.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.config().api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key (Authorization: Bearer ...)".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        })
    }
}

async fn health(State(state): State<AppState>) -> axum::Json<Value> {
    let stats = &state.0.stats;
    axum::Json(json!({
        "status": "ok",
        "slots": state.config().slots,
        "active": stats.active.load(Ordering::Relaxed),
        "queued": stats.queued.load(Ordering::Relaxed),
    }))
}

async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let created = api::now();
    let data: Vec<Value> = MODELS
        .iter()
        .filter(|(_, mode)| state.config().modes.contains(mode))
        .map(|(name, mode)| {
            json!({"id": name, "object": "model", "created": created, "owned_by": "aligner-rs", "aligner_mode": mode.as_str()})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Sets the request's cancellation flag when dropped: the handler's future or the response
/// stream is dropped when the client goes away, and the worker then stops working on it.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match chat(state, headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn chat(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body.map_err(|e| {
        ApiError::invalid(None, format!("the body could not be read: {e}"))
            .with(e.status(), "invalid_body")
    })?;
    let request = api::parse_request(&body, state.config())?;
    let offered = &state.config().modes;
    if !offered.contains(&request.mode) {
        let names: Vec<&str> = offered.iter().map(|m| m.as_str()).collect();
        return Err(ApiError::invalid(
            Some("model"),
            format!(
                "this server does not offer {} mode: its aligner was not trained for it \
                 (offered: {})",
                request.mode.as_str(),
                names.join(", ")
            ),
        )
        .with(StatusCode::BAD_REQUEST, "mode_unsupported"));
    }
    if let Backend::Remote(remote) = &state.0.backend
        && request.mode == AlignMode::Stream
        && !remote.continues_answers
    {
        return Err(ApiError::invalid(
            Some("model"),
            "stream mode needs an upstream that continues a corrected answer, and this \
             server's upstream is a chat API without prefix continuation; ask for whole-answer \
             mode (model `aligner-whole` or `aligner_mode: whole`) or the upstream alone \
             (`upstream` or `aligner_mode: off`)",
        )
        .with(StatusCode::BAD_REQUEST, "mode_unsupported"));
    }
    // Tokenising is model work: off the async runtime.
    let counter = Arc::clone(&state.0.counter);
    let conversation = request.conversation.clone();
    let tokens = tokio::task::spawn_blocking(move || counter.count(&conversation))
        .await
        .map_err(|e| {
            ApiError::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        })?
        .map_err(|e| ApiError::invalid(Some("messages"), e))?;
    if tokens > state.config().max_prompt_tokens {
        return Err(ApiError::invalid(
            Some("messages"),
            format!(
                "the conversation is {tokens} tokens; this server takes at most {}",
                state.config().max_prompt_tokens
            ),
        )
        .with(StatusCode::BAD_REQUEST, "context_length_exceeded"));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        conversation: request.conversation.clone(),
        mode: request.mode,
        max_tokens: request.max_tokens,
        sampling: request.sampling.clone(),
        stop: request.stop.clone(),
        deadline: Instant::now() + state.config().request_timeout,
        cancel: Arc::clone(&cancel),
        events: events_tx,
    };
    let guard = CancelOnDrop(cancel);
    let backend = match &state.0.backend {
        Backend::Local(jobs) => jobs,
        Backend::Remote(remote) => {
            match remote.submit(job, tokens) {
                Ok(()) => {}
                Err(Refused::Full) => return Ok(busy(&state)),
                Err(Refused::Spawn(e)) => {
                    return Err(ApiError::server(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        format!("the request could not be started: {e}"),
                    ));
                }
            }
            return Ok(respond(&state, request, events, guard).await);
        }
    };
    state.0.stats.queued.fetch_add(1, Ordering::Relaxed);
    match backend.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            state.0.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Ok(busy(&state));
        }
        Err(TrySendError::Disconnected(_)) => {
            state.0.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is shutting down",
            ));
        }
    }
    Ok(respond(&state, request, events, guard).await)
}

/// The `429` of a full queue, with `Retry-After`.
fn busy(state: &AppState) -> Response {
    let mut err = ApiError::server(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "the server is busy: too many requests are waiting; retry later",
    );
    err.code = Some("queue_full");
    let retry_after = HeaderValue::from(state.config().retry_after_secs);
    ([(header::RETRY_AFTER, retry_after)], err).into_response()
}

/// The answer of an admitted request, streamed or not.
async fn respond(
    state: &AppState,
    request: ChatRequest,
    events: UnboundedReceiver<JobEvent>,
    guard: CancelOnDrop,
) -> Response {
    let id = format!(
        "chatcmpl-{}",
        state.0.next_id.fetch_add(1, Ordering::Relaxed)
    );
    if request.stream {
        streamed(id, request, events, guard).into_response()
    } else {
        collected(id, &request, events, guard)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    }
}

/// The error of a request that failed in the worker.
fn job_error(error: JobError) -> ApiError {
    match error {
        JobError::Timeout => ApiError::server(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request ran past the server's time limit",
        ),
        JobError::ShuttingDown => ApiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down",
        ),
        JobError::BadRequest(m) => ApiError::invalid(Some("messages"), m),
        JobError::Internal(m) => {
            ApiError::server(StatusCode::INTERNAL_SERVER_ERROR, "server_error", m)
        }
    }
}

/// The worker stopped without a word (it panicked).
fn worker_gone() -> ApiError {
    ApiError::server(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the model worker stopped",
    )
}

/// The non-streamed answer: waits for the outcome.
async fn collected(
    id: String,
    request: &ChatRequest,
    mut events: UnboundedReceiver<JobEvent>,
    guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let outcome: Box<Outcome> = loop {
        match events.recv().await {
            Some(JobEvent::Sentence { .. }) => {}
            Some(JobEvent::Done(outcome)) => break outcome,
            Some(JobEvent::Failed(e)) => return Err(job_error(e)),
            None => return Err(worker_gone()),
        }
    };
    drop(guard);
    Ok(axum::Json(api::completion(&id, &request.model, request.mode, &outcome)).into_response())
}

/// Where a streamed answer is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Next: the chunk with the role.
    Start,
    /// Next: sentences, until the outcome or a failure.
    Sentences,
    /// Next: `[DONE]`.
    Finish,
    /// Nothing more.
    End,
}

/// State of a streamed answer.
struct Streaming {
    id: String,
    model: String,
    events: UnboundedReceiver<JobEvent>,
    phase: Phase,
    /// The request's stop sequences.
    stop: Vec<String>,
    /// The answer's text received so far, and how many bytes of it were sent.
    text: String,
    sent: usize,
    /// The outcome, sent after the rest of the text.
    outcome: Option<Box<Outcome>>,
    _guard: CancelOnDrop,
}

impl Streaming {
    /// The content chunk of `text[sent..upto]`, if it is not empty (or, without stop
    /// sequences, for every sentence: one chunk per sentence).
    fn content(&mut self, upto: usize, draft: &str, changed: bool) -> Option<SseEvent> {
        if upto <= self.sent && !(self.stop.is_empty() && upto == self.sent) {
            return None;
        }
        let content = &self.text[self.sent..upto];
        self.sent = upto;
        let draft = stop::cut(draft, &self.stop);
        Some(data(&api::chunk(
            &self.id,
            &self.model,
            json!({ "content": content }),
            None,
            Some(("aligner", json!({"draft": draft, "changed": changed}))),
        )))
    }
}

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// The streamed answer: a first chunk with the role, one chunk per accepted sentence (with the
/// draft it replaced in the `aligner` extension field), a last chunk with the finish reason and
/// the usage, and `[DONE]`; an error ends the stream with an `{"error": ...}` event. Dropping
/// the stream (the client went away) cancels the request.
fn streamed(
    id: String,
    request: ChatRequest,
    events: UnboundedReceiver<JobEvent>,
    guard: CancelOnDrop,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Streaming {
        id,
        model: request.model,
        events,
        phase: Phase::Start,
        stop: request.stop,
        text: String::new(),
        sent: 0,
        outcome: None,
        _guard: guard,
    };
    let stream = stream::unfold(state, |mut s| async move {
        let event = match s.phase {
            Phase::End => return None,
            Phase::Start => {
                s.phase = Phase::Sentences;
                data(&api::chunk(
                    &s.id,
                    &s.model,
                    json!({"role": "assistant", "content": ""}),
                    None,
                    None,
                ))
            }
            Phase::Finish => match s.outcome.take() {
                Some(outcome) => data(&api::final_chunk(&s.id, &s.model, &outcome)),
                None => {
                    s.phase = Phase::End;
                    SseEvent::default().data("[DONE]")
                }
            },
            Phase::Sentences => loop {
                match s.events.recv().await {
                    Some(JobEvent::Sentence {
                        text,
                        draft,
                        changed,
                    }) => {
                        // Text that could start a stop sequence waits for the next sentence.
                        s.text.push_str(&text);
                        let upto = stop::sendable(&s.text, &s.stop);
                        if let Some(event) = s.content(upto, &draft, changed) {
                            break event;
                        }
                    }
                    Some(JobEvent::Done(outcome)) => {
                        s.phase = Phase::Finish;
                        let upto = stop::cut(&s.text, &s.stop).len();
                        let rest = if upto > s.sent {
                            s.content(upto, "", false)
                        } else {
                            None
                        };
                        match rest {
                            Some(event) => {
                                s.outcome = Some(outcome);
                                break event;
                            }
                            None => break data(&api::final_chunk(&s.id, &s.model, &outcome)),
                        }
                    }
                    Some(JobEvent::Failed(e)) => {
                        s.phase = Phase::End;
                        break data(&job_error(e).body());
                    }
                    None => {
                        s.phase = Phase::End;
                        break data(&worker_gone().body());
                    }
                }
            },
        };
        Some((Ok(event), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(1)))
}
