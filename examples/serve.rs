//! An OpenAI-compatible server whose answers are aligned: the embedded SmolLM2-135M-Instruct
//! writes them and the shipped Stream Aligner (`assets/stream-aligner`) corrects them sentence
//! by sentence. Works offline; binds 127.0.0.1.
//!
//! Run: `cargo run --release --example serve -- --math`
//!
//! Then `curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"model": "aligner-stream", "messages": [{"role": "user", "content": "What is 17 + 25?"}], "stream": true}'`.
//! The model name picks the mode (`aligner-stream`, `aligner-whole`, `upstream`), as does the
//! extra field `aligner_mode` (`stream`, `whole`, `off`). The server logic is the library's
//! (`aligner::serve`); this file only reads options and loads the models.
//!
//! With `--upstream-url` (and the other `--upstream-*` options of `stream_align`) a model served
//! elsewhere writes the answers and only the aligner runs here, e.g. llama.cpp's server:
//! `cargo run --release --example serve -- --upstream-url http://127.0.0.1:8080/v1`.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aligner::data::template::MATH_SYSTEM_PROMPT;
use aligner::model::generate::SamplingConfig;
use aligner::model::remote::CompletionParams;
use aligner::model::{DType, ModelTokenizer, WeightFormat};
use aligner::serve::{Engine, RemoteEngine, ServeConfig, Server};
use aligner::stream::{CorrectorConfig, MachineConfig, UpstreamConfig};
use clap::Parser;

/// The shipped Stream Aligner, relative to the repository root.
const SHIPPED_ALIGNER: &str = "assets/stream-aligner";

#[derive(Parser)]
#[command(about = "An OpenAI-compatible server whose answers are corrected by an aligner")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// Requests answered at once (they share the upstream's decoding steps).
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// Requests that may wait for a slot; more are answered 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Time limit of a request, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// `max_tokens` of requests that set none.
    #[arg(long, default_value_t = 384)]
    max_tokens: usize,
    /// Require `Authorization: Bearer <value of this environment variable>` when it is set.
    #[arg(long, default_value = "ALIGNER_API_KEY")]
    server_key_env: String,
    /// Give the upstream the math system prompt, and end answers after `The answer is`.
    #[arg(long)]
    math: bool,
    /// Upstream system prompt (default: the chat template's own).
    #[arg(long, conflicts_with = "math")]
    system: Option<String>,
    /// Upstream model folder (default: the embedded SmolLM2-135M-Instruct). With
    /// `--upstream-url`: the tokenizer that counts tokens, and the default chat template.
    #[arg(long)]
    upstream_dir: Option<PathBuf>,
    #[command(flatten)]
    remote: common::upstream::RemoteArgs,
    /// Aligner: a model folder or a PEFT LoRA adapter folder (default: the shipped
    /// assets/stream-aligner), prompted as its aligner_config.json records. The server offers
    /// the modes it was trained for (stream mode for sentences, whole-answer mode for answers)
    /// and the upstream alone.
    #[arg(long)]
    aligner_dir: Option<PathBuf>,
    #[command(flatten)]
    aligner_prompt: common::aligner_prompt::AlignerPromptArgs,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto", value_parser = common::device)]
    device: tch::Device,
    /// Activations: f32, bf16 or f16 (default: f32 on the CPU, bf16 on a GPU).
    #[arg(long, value_parser = common::dtype)]
    dtype: Option<DType>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream_dir = common::model_dir(args.upstream_dir.as_deref())?;
    let aligner_dir = args
        .aligner_dir
        .clone()
        .unwrap_or_else(|| common::repo_path(SHIPPED_ALIGNER));
    anyhow::ensure!(
        aligner_dir.is_dir(),
        "no aligner at {}",
        aligner_dir.display()
    );
    let api_key = std::env::var(&args.server_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let prompt = args.aligner_prompt.resolve(&aligner_dir, false)?;
    let corrector_config = CorrectorConfig {
        prompt: prompt.clone(),
        ..CorrectorConfig::default()
    };
    let config = ServeConfig {
        modes: aligner::serve::modes_of(&prompt),
        slots: args.slots,
        queue_capacity: args.queue,
        request_timeout: Duration::from_secs(args.timeout),
        default_max_tokens: args.max_tokens,
        api_key,
        ..ServeConfig::default()
    };
    let (system, stop_after) = if args.math {
        (
            Some(MATH_SYSTEM_PROMPT.to_owned()),
            vec!["The answer is".into()],
        )
    } else {
        (args.system.clone(), Vec::new())
    };
    let (device, dtype) = (args.device, args.dtype);
    let factory = args.remote.factory(&upstream_dir, system.clone())?;
    let machine = MachineConfig {
        stop_after,
        ..MachineConfig::default()
    };
    let aligner_dir_shown = aligner_dir.display().to_string();
    let load_aligner = move || {
        let auto = common::Weights(None);
        common::load_for_inference(&aligner_dir, device, dtype, auto, WeightFormat::Int8)
    };
    // The models are loaded, used and dropped on the server's worker thread.
    let server = if let Some(new_upstream) = factory {
        eprintln!(
            "upstream at {}; loading {aligner_dir_shown} (aligner)",
            args.remote.upstream_url.as_deref().unwrap_or_default()
        );
        Server::start_remote(config.clone(), move || {
            let (aligner, al_tok) = load_aligner()?;
            Ok(RemoteEngine {
                new_upstream,
                params: CompletionParams {
                    temperature: Some(0.0),
                    ..CompletionParams::default()
                },
                tokenizer: ModelTokenizer::from_dir(&upstream_dir)?,
                system,
                aligner,
                aligner_tokenizer: ModelTokenizer::from_dir(&al_tok)?,
                corrector_config,
                machine,
            })
        })?
    } else {
        eprintln!(
            "loading {} (upstream) and {aligner_dir_shown} (aligner)",
            upstream_dir.display()
        );
        Server::start(config.clone(), move || {
            let auto = common::Weights(None);
            let (upstream, up_tok) =
                common::load_for_inference(&upstream_dir, device, dtype, auto, WeightFormat::Int4)?;
            let (aligner, al_tok) = load_aligner()?;
            Ok(Engine {
                upstream,
                upstream_tokenizer: ModelTokenizer::from_dir(&up_tok)?,
                upstream_config: UpstreamConfig {
                    sampling: SamplingConfig::greedy(),
                    system,
                    ..UpstreamConfig::default()
                },
                aligner,
                aligner_tokenizer: ModelTokenizer::from_dir(&al_tok)?,
                corrector_config,
                machine,
            })
        })?
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        let modes: Vec<&str> = config.modes.iter().map(|m| m.as_str()).collect();
        let auth = if config.api_key.is_some() {
            ", bearer token required"
        } else {
            ""
        };
        eprintln!(
            "serving on http://{}/v1 (modes {}; {} slots, queue {}{auth}); Ctrl-C or SIGTERM stops",
            listener.local_addr()?,
            modes.join(", "),
            config.slots,
            config.queue_capacity,
        );
        server
            .serve(listener, aligner::serve::shutdown_signal())
            .await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}
