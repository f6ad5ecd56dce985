//! An OpenAI-compatible HTTP server whose answers are aligned: an upstream model writes them and
//! an aligner corrects them, sentence by sentence (Stream Aligner), as a whole (Aligner), or not
//! at all, chosen per request.
//!
//! - `POST /v1/chat/completions`, streamed (server-sent events in OpenAI's chunk format: each
//!   sentence is sent as soon as the aligner has accepted it, then a chunk with the finish
//!   reason and the usage, then `[DONE]`) or not. The mode comes from the model name
//!   (`aligner-stream`, `aligner-whole`, `upstream`) or the extra field `aligner_mode`
//!   (`stream`, `whole`, `off`); the extension field `aligner` holds the upstream's drafts.
//! - `GET /v1/models`, `GET /health`.
//!
//! `stop` (a string or up to 4) ends the answer before the first stop sequence, with
//! `finish_reason: "stop"`, streamed or not: the loop stops after the sentence in which one
//! appears, and a stream holds back any end of the text that could be the start of one, so
//! streamed chunks never show text from a stop sequence on and add up to the non-streamed
//! answer (see [`stop`]). Known OpenAI fields that would change the answer and are not
//! implemented (`logprobs`, `top_logprobs`, `tools`, `functions`, `tool_choice`,
//! `function_call`, `response_format` other than text, `logit_bias`, `presence_penalty`,
//! `frequency_penalty`, `audio`) are a `400` naming the field (code `unsupported_parameter`)
//! unless set to their neutral value; other unknown fields are ignored.
//!
//! The models run on one worker thread of their own (see [`worker`]), never on the async
//! runtime; requests in flight share the upstream's decoding steps, and the aligner's
//! corrections that they wait for at the same time share the aligner's. The queue in front of it is
//! bounded (a full queue answers `429` with `Retry-After`), requests have a deadline, a client
//! that disconnects stops the work on its request, every bad request gets an OpenAI-style JSON
//! error with a 4xx status, and [`Server::serve`] finishes (or, after a grace period, cancels)
//! the requests in flight when its shutdown signal fires. An optional bearer token guards the
//! `/v1` routes.
//!
//! [`Server::start_remote`] puts the aligner in front of a model served elsewhere (an
//! OpenAI-compatible completions or chat API, see [`remote`]): each request drafts through its
//! own remote upstream, and the aligner runs on the worker thread.
//!
//! ```no_run
//! use aligner_model::{InferenceModel, ModelTokenizer, WeightFormat, hub};
//! use aligner_serve::{Engine, ServeConfig, Server};
//! use aligner_stream::{CorrectorConfig, MachineConfig, UpstreamConfig};
//! use tch::{Device, Kind};
//!
//! // The models are loaded on the worker thread.
//! let server = Server::start(ServeConfig::default(), || {
//!     let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
//!     let load = |dir: &std::path::Path, format| InferenceModel::load(dir, Kind::Float, Device::Cpu, Some(format));
//!     let (upstream, up_tok) = load(&dir, WeightFormat::Int4)?;
//!     let (aligner, al_tok) = load("assets/stream-aligner".as_ref(), WeightFormat::Int8)?;
//!     Ok(Engine {
//!         upstream,
//!         upstream_tokenizer: ModelTokenizer::from_dir(&up_tok)?,
//!         upstream_config: UpstreamConfig::default(),
//!         aligner,
//!         aligner_tokenizer: ModelTokenizer::from_dir(&al_tok)?,
//!         corrector_config: CorrectorConfig::default(),
//!         machine: MachineConfig::default(),
//!     })
//! })?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//!     server.serve(listener, aligner_serve::shutdown_signal()).await
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
pub mod bench;
mod http;
pub mod remote;
pub mod stop;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use aligner_model::CausalLm;
use aligner_model::ModelTokenizer;
use aligner_model::chat::ChatTemplate;

pub use api::{ApiError, ChatRequest, MODELS};
pub use http::shutdown_signal;
pub use remote::{RemoteEngine, UpstreamFactory};
pub use worker::Engine;

/// How a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlignMode {
    /// Stream Aligner: sentence by sentence, the upstream continuing from each corrected one.
    Stream,
    /// Aligner: the upstream's whole answer, rewritten once by the aligner.
    Whole,
    /// The upstream alone.
    Off,
}

impl AlignMode {
    /// `stream`, `whole` or `off`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Whole => "whole",
            Self::Off => "off",
        }
    }

    /// The mode named `name` (`stream`, `whole` or `off`).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Stream, Self::Whole, Self::Off]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Requests answered at once (slots of the worker, each with its own KV caches).
    pub slots: usize,
    /// Requests that may wait for a slot; one more is answered `429`.
    pub queue_capacity: usize,
    /// Time limit of a request, waiting included.
    pub request_timeout: Duration,
    /// The `Retry-After` of a `429`, seconds.
    pub retry_after_secs: u64,
    /// Most characters over all messages of a request.
    pub max_input_chars: usize,
    /// Most tokens of the upstream's prompt (the rendered conversation).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` of requests that set none.
    pub default_max_tokens: usize,
    /// Bearer token required on the `/v1` routes; `None`: no authentication.
    pub api_key: Option<String>,
    /// After the shutdown signal, how long requests in flight may run before they are
    /// cancelled.
    pub shutdown_grace: Duration,
    /// Most bytes of a request body.
    pub max_body_bytes: usize,
    /// The modes offered; a request for another one is a `400` (`mode_unsupported`), and
    /// `/v1/models` lists only these. An aligner serves the modes it was trained for
    /// ([`modes_of`]).
    pub modes: Vec<AlignMode>,
}

/// The modes a server with an aligner prompted by `prompt` offers: stream mode when it was
/// trained on single sentences, whole-answer mode when on whole answers, and the upstream
/// alone always.
pub fn modes_of(prompt: &aligner_data::aligner_config::AlignerConfig) -> Vec<AlignMode> {
    use aligner_data::aligner_config::AlignerTask;
    let mut modes = Vec::with_capacity(3);
    if prompt.format_for(AlignerTask::Sentence).is_some() {
        modes.push(AlignMode::Stream);
    }
    if prompt.format_for(AlignerTask::Answer).is_some() {
        modes.push(AlignMode::Whole);
    }
    modes.push(AlignMode::Off);
    modes
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            slots: 4,
            queue_capacity: 64,
            request_timeout: Duration::from_secs(300),
            retry_after_secs: 1,
            max_input_chars: 16_000,
            max_prompt_tokens: 4096,
            max_tokens_limit: 2048,
            default_max_tokens: 512,
            api_key: None,
            shutdown_grace: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            modes: vec![AlignMode::Stream, AlignMode::Whole, AlignMode::Off],
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader failed, or the engine's settings are unusable.
    #[error("loading the models: {0}")]
    Load(String),
    /// A setting is unusable.
    #[error("invalid config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// The worker thread panicked.
    #[error("the model worker panicked")]
    WorkerPanicked,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the HTTP side needs to count a conversation's prompt tokens (on a blocking thread).
pub(crate) struct PromptCounter {
    tokenizer: ModelTokenizer,
    template: Option<ChatTemplate>,
    system: Option<String>,
}

impl PromptCounter {
    /// Tokens of the upstream's prompt for `conversation`.
    pub(crate) fn count(
        &self,
        conversation: &aligner_stream::Conversation,
    ) -> Result<usize, String> {
        let prompt = aligner_stream::render_conversation(
            self.template.as_ref(),
            self.system.as_deref(),
            conversation,
        )
        .map_err(|e| e.to_string())?;
        self.tokenizer
            .encode_prompt(&prompt)
            .map(|ids| ids.len())
            .map_err(|e| e.to_string())
    }
}

/// A started server: the worker thread with its models, ready to serve HTTP.
pub struct Server {
    state: http::AppState,
    worker: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// How the worker thread tells [`spawn_worker`] that its engine is ready, or why not.
struct Ready<R>(std::sync::mpsc::Sender<std::result::Result<R, String>>);

impl<R> Ready<R> {
    /// Sends the outcome; `false` when nobody waits any more (or it was an error), in which
    /// case the worker stops.
    fn send(self, outcome: std::result::Result<R, String>) -> bool {
        let ok = outcome.is_ok();
        self.0.send(outcome).is_ok() && ok
    }
}

/// Starts the worker thread and waits until it is ready. The thread runs `load` to build the
/// engine, then `run`, which checks it, reports through [`Ready`] what the server needs from
/// it (or why it cannot serve) and then does the work. The models are created, used and dropped
/// on that thread only. A failure of `load` or of the check is [`Error::Load`].
fn spawn_worker<E, R: Send + 'static>(
    load: impl FnOnce() -> std::result::Result<E, Box<dyn std::error::Error + Send + Sync>>
    + Send
    + 'static,
    run: impl FnOnce(E, Ready<R>) + Send + 'static,
) -> Result<(R, std::thread::JoinHandle<()>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("aligner-worker".into())
        .spawn(move || match load() {
            Ok(engine) => run(engine, Ready(ready_tx)),
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(ready)) => Ok((ready, worker)),
        Ok(Err(e)) => {
            let _ = worker.join();
            Err(Error::Load(e))
        }
        Err(_) => {
            let _ = worker.join();
            Err(Error::WorkerPanicked)
        }
    }
}

impl Server {
    /// Starts the worker thread, which runs `load` to build the [`Engine`] (so the models are
    /// created, used and dropped on that thread only), and waits until it has. Errors if
    /// `config` or the engine's settings are unusable or `load` fails.
    pub fn start<U, A, F>(config: ServeConfig, load: F) -> Result<Self>
    where
        U: CausalLm + 'static,
        A: CausalLm + 'static,
        F: FnOnce() -> std::result::Result<Engine<U, A>, Box<dyn std::error::Error + Send + Sync>>
            + Send
            + 'static,
    {
        check_config(&config)?;
        let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let stats = Arc::new(worker::Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (worker_stats, worker_stop, slots) =
            (Arc::clone(&stats), Arc::clone(&stop), config.slots);
        let (counter, worker) = spawn_worker(load, move |engine: Engine<U, A>, ready| {
            let checked = check_engine(&engine).map(|template| PromptCounter {
                tokenizer: engine.upstream_tokenizer.clone(),
                template,
                system: engine.upstream_config.system.clone(),
            });
            if ready.send(checked) {
                worker::run(&engine, slots, &jobs_rx, &worker_stats, &worker_stop);
            }
        })?;
        let state = http::AppState::new(config, http::Backend::Local(jobs_tx), stats, counter);
        Ok(Self {
            state,
            worker,
            stop,
        })
    }

    /// Starts the server with a remote upstream (see [`remote`]): the worker thread runs `load`
    /// to build the [`RemoteEngine`] and then answers the aligner's work, while each request
    /// drafts through its own upstream on a thread of its own. Errors if `config` or the
    /// engine's settings are unusable or `load` fails.
    pub fn start_remote<A, F>(config: ServeConfig, load: F) -> Result<Self>
    where
        A: CausalLm + 'static,
        F: FnOnce()
                -> std::result::Result<RemoteEngine<A>, Box<dyn std::error::Error + Send + Sync>>
            + Send
            + 'static,
    {
        check_config(&config)?;
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<remote::AlignJob>();
        let stats = Arc::new(worker::Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let ((counter, parts), worker) =
            spawn_worker(load, move |engine: RemoteEngine<A>, ready| {
                let RemoteEngine {
                    new_upstream,
                    params,
                    tokenizer,
                    system,
                    aligner,
                    aligner_tokenizer,
                    corrector_config,
                    machine,
                } = engine;
                let checked = (|| {
                    machine.validate().map_err(|e| e.to_string())?;
                    let corrector = aligner_stream::LocalCorrector::new(
                        &aligner,
                        aligner_tokenizer,
                        corrector_config,
                    )
                    .map_err(|e| e.to_string())?;
                    let continues_answers = new_upstream(params.clone())
                        .map_err(|e| format!("building the upstream: {e}"))?
                        .continues_answers();
                    let template = tokenizer.chat_template().map_err(|e| e.to_string())?;
                    let counter = PromptCounter {
                        tokenizer: tokenizer.clone(),
                        template,
                        system,
                    };
                    let parts = remote::RemoteParts {
                        new_upstream,
                        params,
                        continues_answers,
                        tokenizer,
                        machine,
                    };
                    Ok::<_, String>((corrector, counter, parts))
                })();
                match checked {
                    Ok((mut corrector, counter, parts)) => {
                        if ready.send(Ok((counter, parts))) {
                            remote::run_aligner(&mut corrector, &jobs_rx, &worker_stop);
                        }
                    }
                    Err(e) => {
                        ready.send(Err(e));
                    }
                }
            })?;
        let backend = remote::RemoteBackend::new(
            parts,
            jobs_tx,
            config.slots,
            config.queue_capacity,
            Arc::clone(&stats),
            Arc::clone(&stop),
        );
        let state = http::AppState::new(
            config,
            http::Backend::Remote(Arc::new(backend)),
            stats,
            counter,
        );
        Ok(Self {
            state,
            worker,
            stop,
        })
    }

    /// The routes, for embedding in another axum application (the caller then owns shutdown;
    /// [`serve`](Self::serve) is the complete server).
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` completes; then stops accepting connections,
    /// lets requests in flight finish for [`ServeConfig::shutdown_grace`], cancels the rest,
    /// and stops the worker thread.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Self {
            state,
            worker,
            stop,
        } = self;
        let grace = state.config().shutdown_grace;
        let app = http::router(state);
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let stopper = Arc::clone(&stop);
        tokio::spawn(async move {
            if fired_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
                stopper.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = fired_tx.send(());
            })
            .await?;
        // The routes (and the queue's sender) are gone: the worker ends once it is idle.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(|_| Error::WorkerPanicked)?
            .map_err(|_| Error::WorkerPanicked)
    }
}

/// Checks the settings that must be at least 1, and the default `max_tokens` against its limit.
fn check_config(config: &ServeConfig) -> Result<()> {
    for (field, value) in [
        ("slots", config.slots),
        ("max_tokens_limit", config.max_tokens_limit),
        ("default_max_tokens", config.default_max_tokens),
        ("max_input_chars", config.max_input_chars),
        ("max_prompt_tokens", config.max_prompt_tokens),
    ] {
        if value == 0 {
            return Err(Error::InvalidConfig {
                field,
                reason: "must be at least 1".into(),
            });
        }
    }
    if config.default_max_tokens > config.max_tokens_limit {
        return Err(Error::InvalidConfig {
            field: "default_max_tokens",
            reason: format!("exceeds max_tokens_limit ({})", config.max_tokens_limit),
        });
    }
    Ok(())
}

/// Checks that slots can be built from the engine's settings (so the worker's own construction
/// cannot fail) and returns the upstream's chat template.
fn check_engine<U: CausalLm, A: CausalLm>(
    engine: &Engine<U, A>,
) -> Result<Option<ChatTemplate>, String> {
    aligner_stream::LocalUpstream::new(
        &engine.upstream,
        engine.upstream_tokenizer.clone(),
        engine.upstream_config.clone(),
    )
    .map_err(|e| e.to_string())?;
    aligner_stream::LocalCorrector::new(
        &engine.aligner,
        engine.aligner_tokenizer.clone(),
        engine.corrector_config.clone(),
    )
    .map_err(|e| e.to_string())?;
    engine.machine.validate().map_err(|e| e.to_string())?;
    if engine.upstream_config.chat_template {
        engine
            .upstream_tokenizer
            .chat_template()
            .map_err(|e| e.to_string())
    } else {
        Ok(None)
    }
}
