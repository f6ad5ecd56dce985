//! The official `openai` Python package (installed into the cached environment by
//! `cargo xtask setup`) streams a chat completion from the server on 127.0.0.1: it receives the
//! answer sentence by sentence, the same answer as a non-streamed request.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use aligner_serve::ServeConfig;
use common::Running;
use serde_json::{Value, json};

const SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="sesame")
stream = client.chat.completions.create(
    model="aligner-stream",
    messages=[{"role": "user", "content": "What is 17 + 25?"}],
    max_tokens=40,
    stream=True,
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.choices:
        if chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        finish = chunk.choices[0].finish_reason or finish
    usage = getattr(chunk, "usage", None) or usage
print(json.dumps({"pieces": pieces, "finish": finish, "total_tokens": usage.total_tokens if usage else None}))
"#;

#[test]
fn the_openai_python_client_streams_sentence_by_sentence() {
    let python = aligner_model::hub::venv_python()
        .expect("no Python environment: run `cargo xtask setup` first");
    let import = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .unwrap();
    assert!(
        import.success(),
        "the `openai` package is missing from {}: run `cargo xtask setup`",
        python.display()
    );
    let server = Running::start(ServeConfig {
        api_key: Some("sesame".into()),
        ..ServeConfig::default()
    });
    let out = Command::new(&python)
        .args(["-c", SCRIPT, &server.base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pieces: Vec<String> = serde_json::from_value(got["pieces"].clone()).unwrap();
    assert!(!pieces.is_empty(), "{got}");
    assert!(got["finish"].is_string(), "{got}");
    assert!(got["total_tokens"].as_u64().unwrap() > 0, "{got}");

    let mut response = common::agent()
        .post(format!("{}/v1/chat/completions", server.base))
        .header("Authorization", "Bearer sesame")
        .send(
            json!({"model": "aligner-stream", "max_tokens": 40,
                   "messages": [{"role": "user", "content": "What is 17 + 25?"}]})
            .to_string(),
        )
        .unwrap();
    let whole: Value = response.body_mut().read_json().unwrap();
    assert_eq!(pieces.concat(), whole["choices"][0]["message"]["content"]);
    // One piece per committed sentence.
    assert_eq!(
        pieces.len(),
        whole["aligner"]["sentences"].as_array().unwrap().len()
    );
}
