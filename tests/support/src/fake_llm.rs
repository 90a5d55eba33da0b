//! A deterministic OpenAI-compatible model server, for tests that run a real
//! OpenClaw gateway: the gateway's only model provider, so nothing leaves
//! the machine.
//!
//! It serves `GET /v1/models` and `POST /v1/chat/completions` on a free
//! loopback port and answers `ECHO: <the caller's message>`, with usage
//! counted in words (prompt: every message; completion: the reply). The
//! gateway always asks for a stream with usage, and sends the caller's text
//! wrapped (a timestamp before it, a `Runtime:` line after it on a session's
//! first turn, an internal context block as a later user message, a
//! "queued message" note on retries): the server unwraps it, so the reply
//! is exactly `ECHO: <what the task said>`.
//!
//! Markers in the caller's message:
//!
//! | marker | the server |
//! | --- | --- |
//! | `FAKE_LLM_HOLD_ONCE` | holds the first call with this message until the caller goes away (at most 10 min); later calls are answered |
//! | `FAKE_LLM_SLEEP_<ms>` | answers after `<ms>` milliseconds |
//! | `FAKE_LLM_FAIL_<code>` | answers HTTP `<code>` with an OpenAI error body |

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The model id the server offers.
pub const MODEL: &str = "fake-model";

/// One chat completion call the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The caller's text, unwrapped.
    pub text: String,
    /// Whether a stream was asked for.
    pub stream: bool,
    /// Number of messages in the request.
    pub messages: usize,
    /// The reply sent (empty for a failure or a held call).
    pub reply: String,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    held: Mutex<HashSet<String>>,
}

/// A fake model server serving until dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The OpenAI base URL, e.g. `http://127.0.0.1:40123/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every chat completion call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().expect("calls lock").clone()
    }

    /// The OpenClaw provider block (`models.providers.<name>`) for this server.
    pub fn provider(&self) -> Value {
        json!({
            "baseUrl": self.base_url(),
            "apiKey": "fake-key",
            "api": "openai-completions",
            "timeoutSeconds": 60,
            "models": [{
                "id": MODEL,
                "name": "Fake model",
                "reasoning": false,
                "input": ["text"],
                "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                "contextWindow": 128000,
                "maxTokens": 4096
            }]
        })
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}]
    }))
}

/// The text of a message's `content` (a string or a list of text parts).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The caller's latest message, without OpenClaw's wrappers.
pub fn caller_text(messages: &[Value]) -> String {
    let text = messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .find(|t| {
            !t.contains("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>")
                && !t.contains("<turn_aborted>")
                && !t.starts_with("Continue the current task from the existing transcript")
        })
        .unwrap_or_default();
    unwrap(&text)
}

fn unwrap(text: &str) -> String {
    let mut t = text.trim();
    // "[Queued user message from a previous active turn; ...]\n<text>"
    if t.starts_with("[Queued user message") {
        if let Some((_, rest)) = t.split_once('\n') {
            t = rest.trim_start();
        }
    }
    // "[Tue 2026-11-24 17:39 UTC] <text>"
    if t.starts_with('[') {
        if let Some(end) = t.find("] ") {
            t = &t[end + 2..];
        }
    }
    // "<text>\n\nRuntime: agent=main | ..."
    if let Some(i) = t.find("\n\nRuntime:") {
        t = &t[..i];
    }
    t.trim().to_string()
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The number after `marker` in `text`, if the marker is there.
fn marker_arg(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn chat(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid JSON");
    };
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let text = caller_text(&messages);
    let stream = request["stream"].as_bool().unwrap_or(false);
    let mut call = Call {
        text: text.clone(),
        stream,
        messages: messages.len(),
        reply: String::new(),
    };
    if text.contains("FAKE_LLM_HOLD_ONCE") && s.held.lock().expect("held lock").insert(text.clone())
    {
        s.calls.lock().expect("calls lock").push(call);
        // Dropped, and so ended, when the caller closes the connection.
        tokio::time::sleep(Duration::from_secs(600)).await;
        return error(504, "held too long");
    }
    if let Some(code) = marker_arg(&text, "FAKE_LLM_FAIL_") {
        s.calls.lock().expect("calls lock").push(call);
        return error(
            u16::try_from(code).unwrap_or(500),
            &format!("fake_llm injected failure {code}"),
        );
    }
    if let Some(ms) = marker_arg(&text, "FAKE_LLM_SLEEP_") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let reply = format!("ECHO: {text}");
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| words(&content_text(&m["content"])))
        .sum();
    let completion_tokens = words(&reply);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens
    });
    call.reply = reply.clone();
    let seq = {
        let mut calls = s.calls.lock().expect("calls lock");
        calls.push(call);
        calls.len()
    };
    let id = format!("chatcmpl-fake-{seq}");
    if !stream {
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": 0,
            "model": MODEL,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop"
            }],
            "usage": usage
        }))
        .into_response();
    }
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": choices
        });
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut sse = String::new();
    sse += &chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    );
    sse += &chunk(
        json!([{"index": 0, "delta": {"content": reply}, "finish_reason": null}]),
        None,
    );
    if include_usage {
        sse += &chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            None,
        );
        sse += &chunk(json!([]), Some(&usage));
    } else {
        sse += &chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Some(&usage),
        );
    }
    sse += "data: [DONE]\n\n";
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        sse,
    )
        .into_response()
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": {
            "message": message,
            "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" },
            "code": status.as_u16().to_string()
        }})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_text_is_unwrapped() {
        let messages = vec![
            json!({"role": "system", "content": "you are an agent ..."}),
            json!({"role": "user", "content": "[Tue 2026-11-24 17:39 UTC] hello there\n\nRuntime: agent=main | session=agent:main:x"}),
            json!({"role": "user", "content": [{"type": "text", "text": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>...<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}]}),
        ];
        assert_eq!(caller_text(&messages), "hello there");
        let retried = vec![json!({"role": "user", "content":
            "[Queued user message from a previous active turn; reply to it now]\n[Tue 2026-11-24 17:40 UTC] again"})];
        assert_eq!(caller_text(&retried), "again");
        assert_eq!(
            caller_text(&[json!({"role": "user", "content": "plain"})]),
            "plain"
        );
    }
}
