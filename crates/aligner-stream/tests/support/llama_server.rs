//! llama.cpp's OpenAI-compatible server (the pip package `llama-cpp-python[server]`, installed
//! into the cached environment by `cargo xtask setup`) serving the embedded GGUF on a free
//! 127.0.0.1 port: the real upstream of the stream and server tests, which include this file.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aligner_model::hub;
use aligner_model::remote::{Client, EndpointConfig};

/// The llama.cpp server, stopped when dropped.
pub struct LlamaServer {
    child: Child,
    /// Its base URL, `http://127.0.0.1:PORT/v1`.
    pub url: String,
}

impl LlamaServer {
    /// Starts the server and waits (up to 2 minutes) until it answers.
    pub fn start() -> Self {
        let python = hub::venv_python().expect("no Python environment: run `cargo xtask setup`");
        let import = Command::new(&python)
            .args(["-c", "import llama_cpp.server"])
            .status()
            .unwrap();
        assert!(
            import.success(),
            "llama-cpp-python[server] is missing from {}: run `cargo xtask setup`",
            python.display()
        );
        let gguf = hub::fetch_gguf(&hub::SMOLLM2_135M_INSTRUCT, &mut |_, _, _| {}).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "llama_cpp.server",
                "--host",
                "127.0.0.1",
                "--n_ctx",
                "2048",
            ])
            .args(["--port", &port.to_string(), "--model"])
            .arg(&gguf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let agent = ureq::agent();
        while agent.get(format!("{}/models", server.url)).call().is_err() {
            assert!(
                Instant::now() < deadline,
                "llama.cpp's server did not start"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server
    }

    /// A client of it that does not retry.
    pub fn client(&self) -> Client {
        Client::new(EndpointConfig {
            base_url: self.url.clone(),
            model: "smollm2".into(),
            api_key_env: None,
            max_retries: 0,
            ..EndpointConfig::default()
        })
        .unwrap()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
