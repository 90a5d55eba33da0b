//! An in-process stand-in for an OpenClaw gateway, for contract and
//! end-to-end tests of the `openclaw` executor.
//!
//! It speaks the gateway's HTTP shapes as a real gateway answered them
//! (`/healthz`, `/readyz`, `/v1/models`, `/v1/chat/completions`, the
//! `{"error": {"message", "type"}}` bodies), listens on a free loopback port
//! and answers `ECHO: <message>`. Markers in the user message make it
//! misbehave:
//!
//! | marker | answer |
//! | --- | --- |
//! | `FAKE_FAIL_<code>` | HTTP `<code>` with the body the real gateway sends for it |
//! | `FAKE_SLEEP_<ms>` | the normal answer after `<ms>` milliseconds |
//! | `FAKE_HANG` | none: the request hangs until the client gives up |
//! | `FAKE_MALFORMED` | 200 with a truncated JSON body |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the fake gateway received in one chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// The `x-openclaw-session-key` header.
    pub session_key: Option<String>,
    /// The `model` field.
    pub model: Option<String>,
    /// The `messages` field.
    pub messages: Value,
    /// The bearer token it came with.
    pub token: Option<String>,
}

struct Shared {
    /// `None`: any token is accepted.
    token: Option<String>,
    agents: Vec<String>,
    ready: AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    in_flight: AtomicUsize,
}

/// A fake gateway serving until dropped.
pub struct FakeGateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGateway {
    /// Starts a ready gateway accepting `token`, with the agents `main` and `ops`.
    pub async fn start(token: &str) -> Self {
        Self::start_with(Some(token.to_string())).await
    }

    /// Starts a ready gateway that accepts any bearer token (for an executor
    /// that generates its own), with the agents `main` and `ops`.
    pub async fn start_accepting_any_token() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(token: Option<String>) -> Self {
        let shared = Arc::new(Shared {
            token,
            agents: vec!["main".into(), "ops".into()],
            ready: AtomicBool::new(true),
            seen: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
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

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `/readyz` answer 200 (`true`) or 503 (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Every chat completion request received so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// Chat completion requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"ok": true, "status": "live"}))
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        Json(json!({"ready": true, "failing": [], "uptimeMs": 9239})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "failing": ["startup-sidecars"], "uptimeMs": 4870})),
        )
            .into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

fn authorized(s: &Shared, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| s.token.as_ref().is_none_or(|want| *want == t))
}

fn error(status: u16, message: &str, kind: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        Json(json!({"error": {"message": message, "type": kind}})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    error(401, "Unauthorized", "unauthorized")
}

async fn models(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let mut data = vec![json!({"id": "openclaw", "object": "model", "owned_by": "openclaw"})];
    for a in &s.agents {
        data.push(
            json!({"id": format!("openclaw/{a}"), "object": "model", "owned_by": "openclaw"}),
        );
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Counts a request as in flight until its handler finishes or is dropped
/// (hyper drops it when the client closes the connection).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The number after `marker` in `text`, if the marker is there.
fn marker_arg(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(s.clone());
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            400,
            "Expected property name or '}' in JSON at position 1",
            "invalid_request_error",
        );
    };
    let session_key = headers
        .get("x-openclaw-session-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let model = request["model"].as_str().map(str::to_string);
    s.seen.lock().expect("seen lock").push(SeenRequest {
        session_key: session_key.clone(),
        model: model.clone(),
        messages: request["messages"].clone(),
        token: bearer(&headers),
    });
    let agent = match model.as_deref() {
        None | Some("openclaw") => "main",
        Some(m) => match m.strip_prefix("openclaw/") {
            Some(a) => a,
            None => {
                return error(
                    400,
                    "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.",
                    "invalid_request_error",
                )
            }
        },
    };
    if !s.agents.iter().any(|a| a == agent) {
        return error(
            400,
            &format!("Unknown agent '{agent}'."),
            "invalid_request_error",
        );
    }
    let Some(message) = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .map(str::to_string)
    else {
        return error(
            400,
            "Missing user message in `messages`.",
            "invalid_request_error",
        );
    };

    if let Some(code) = marker_arg(&message, "FAKE_FAIL_") {
        let code = u16::try_from(code).unwrap_or(500);
        return match code {
            401 => unauthorized(),
            408 => error(408, "upstream provider timeout", "api_error"),
            429 => error(429, "429 rate limited", "rate_limit_error"),
            502 => error(502, "upstream provider error", "api_error"),
            c if c >= 500 => error(c, "internal error", "api_error"),
            c => error(c, &format!("{c} injected failure"), "invalid_request_error"),
        };
    }
    if let Some(ms) = marker_arg(&message, "FAKE_SLEEP_") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if message.contains("FAKE_HANG") {
        // Long enough for any test; the client's timeout or cancel ends it.
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    if message.contains("FAKE_MALFORMED") {
        return (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            r#"{"id":"chatcmpl_1","object":"chat.completion","choices":[{"#,
        )
            .into_response();
    }

    let turn = s.seen.lock().expect("seen lock").len();
    let reply = format!("ECHO: {message}");
    let words = |v: &Value| {
        v.as_str()
            .map(|t| t.split_whitespace().count() as u64)
            .unwrap_or(0)
    };
    let prompt_tokens: u64 = request["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| words(&m["content"])).sum())
        .unwrap_or(0);
    let completion_tokens = reply.split_whitespace().count() as u64;
    Json(json!({
        "id": format!("chatcmpl_fake_{turn}"),
        "object": "chat.completion",
        "created": 1795542663,
        "model": model.unwrap_or_else(|| "openclaw".into()),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
    .into_response()
}
