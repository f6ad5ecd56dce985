//! A scripted OpenAI-compatible server on 127.0.0.1 for the remote upstream tests: each
//! connection is served on its own thread by a handler that sees the request's path and JSON
//! body and says what to send.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server sends for one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with these SSE `data:` payloads, each after `delay`, then `[DONE]`.
    Sse {
        /// The payloads (JSON texts).
        events: Vec<String>,
        /// Pause before each.
        delay: Duration,
    },
    /// Any status and body.
    Status(u16, String),
    /// Raw bytes after a `200` event-stream header (for malformed streams), then close.
    Raw(String),
    /// Accept and say nothing for this long, then close.
    Stall(Duration),
}

/// Requests seen: path and JSON body.
pub type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Serves every connection with `handler`; returns the base URL (`http://127.0.0.1:PORT/v1`)
/// and the requests seen.
pub fn serve(
    handler: impl Fn(&str, &serde_json::Value) -> Reply + Send + Sync + 'static,
) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (log, handler) = (Arc::clone(&log), Arc::clone(&handler));
            std::thread::spawn(move || {
                let Some((path, body)) = read_request(&stream) else {
                    return;
                };
                log.lock().unwrap().push((path.clone(), body.clone()));
                let _ = respond(stream, handler(&path, &body));
            });
        }
    });
    (url, seen)
}

fn read_request(stream: &TcpStream) -> Option<(String, serde_json::Value)> {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_owned();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, serde_json::from_slice(&body).ok()?))
}

fn respond(mut stream: TcpStream, reply: Reply) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    match reply {
        Reply::Sse { events, delay } => {
            stream.write_all(head.as_bytes())?;
            for event in events {
                std::thread::sleep(delay);
                stream.write_all(format!("data: {event}\n\n").as_bytes())?;
                stream.flush()?;
            }
            stream.write_all(b"data: [DONE]\n\n")
        }
        Reply::Status(status, body) => write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Raw(bytes) => {
            stream.write_all(head.as_bytes())?;
            stream.write_all(bytes.as_bytes())
        }
        Reply::Stall(time) => {
            std::thread::sleep(time);
            Ok(())
        }
    }
}

/// Chat chunks carrying `text` a few characters at a time, then a `stop` chunk.
pub fn chat_chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<String> = chars
        .chunks(4)
        .map(|c| {
            let piece: String = c.iter().collect();
            serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
                .to_string()
        })
        .collect();
    out.push(
        serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            .to_string(),
    );
    out
}
