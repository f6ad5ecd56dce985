//! What the server tests share: the real models, a server on a free 127.0.0.1 port served
//! from its own thread and runtime, and an HTTP client.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aligner_model::remote::SseReader;
use serde_json::Value;

use aligner_model::generate::SamplingConfig;
use aligner_model::{InferenceModel, ModelTokenizer, hub};
use aligner_serve::{Engine, ServeConfig, Server};
use aligner_stream::{CorrectorConfig, MachineConfig, UpstreamConfig};
use tch::{Device, Kind};

pub fn dirs() -> (PathBuf, PathBuf) {
    let upstream = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(
        hub::is_imported(&upstream),
        "{} is missing: run `cargo xtask setup` first",
        upstream.display()
    );
    let aligner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/stream-aligner");
    (upstream, aligner)
}

/// Dense f32 models (LibTorch's kernels: fast in a debug build too).
pub fn load(dir: &Path) -> (InferenceModel, ModelTokenizer) {
    let (model, tok) = InferenceModel::load(dir, Kind::Float, Device::Cpu, None).unwrap();
    (model, ModelTokenizer::from_dir(&tok).unwrap())
}

pub fn upstream_config() -> UpstreamConfig {
    UpstreamConfig {
        sampling: SamplingConfig::greedy(),
        ..UpstreamConfig::default()
    }
}

/// A server on a free port, served from its own thread and runtime.
pub struct Running {
    pub base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<aligner_serve::Result<()>>>,
}

impl Running {
    pub fn start(config: ServeConfig) -> Self {
        let server = Server::start(config, || {
            let (upstream_dir, aligner_dir) = dirs();
            let (upstream, upstream_tokenizer) = load(&upstream_dir);
            let (aligner, aligner_tokenizer) = load(&aligner_dir);
            Ok(Engine {
                upstream,
                upstream_tokenizer,
                upstream_config: upstream_config(),
                aligner,
                aligner_tokenizer,
                corrector_config: CorrectorConfig::default(),
                machine: MachineConfig::default(),
            })
        })
        .unwrap();
        Self::serve(server)
    }

    /// Serves a started server on a free port, from its own thread and runtime.
    pub fn serve(server: Server) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                server
                    .serve(listener, async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            base: format!("http://{addr}"),
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) -> aligner_serve::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .new_agent()
}

/// A chat-completions request's status and JSON body (`Null` when the body is not JSON).
pub fn post(base: &str, body: &Value) -> (u16, Value) {
    let mut response = agent()
        .post(format!("{base}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A streamed request's SSE payloads (`[DONE]` included).
pub fn post_stream(base: &str, body: &Value) -> Vec<String> {
    let response = agent()
        .post(format!("{base}/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut events = SseReader::new(response.into_body().into_reader());
    let mut out = Vec::new();
    while let Some(data) = events.next_data().unwrap() {
        out.push(data);
    }
    out
}
