//! The OpenClaw executor: each task is one turn of an OpenClaw agent, run by
//! a gateway that this agent either attaches to by URL (attach mode) or
//! starts and supervises itself (supervise mode, see [`gateway`]).
//!
//! # Supervise mode
//!
//! `start` launches the gateway (config in its state directory, a free
//! loopback port, a generated token), waits up to `ready_timeout` for
//! `/readyz`, checks the token on `/v1/models` and sends one short warm-up
//! turn, since a gateway's first turn is 10–20 s slower than the others.
//! Only then does the agent take work. The health probe reports `down` as
//! soon as the process has exited (or `/readyz` stops answering), and the
//! agent's supervisor then calls `restart`, which stops what is left of the
//! process and starts a new one the same way. `stop`, at the end of a drain,
//! sends SIGTERM and SIGKILL after `stop_timeout`.
//!
//! # Protocol
//!
//! A task is `POST {url}/v1/chat/completions` (the gateway serves it when
//! `gateway.http.endpoints.chatCompletions.enabled` is on) with
//! `Authorization: Bearer <token>`, `model: "openclaw/<agent>"` and the
//! header `x-openclaw-session-key`. The payload is
//! `{"message": "...", "agent"?: "...", "session"?: "...", "system"?: "..."}`;
//! anything else is refused as fatal. The result is
//! `{"text", "model", "agent", "session_key", "finish_reason", "usage"}`, and
//! the response's `usage` is also the attempt's [`Usage`].
//!
//! Why chat completions over HTTP rather than the gateway's WebSocket
//! protocol or the `openclaw agent` CLI: one request is one turn with its
//! status code, body and usage in one place, so timeouts, cancellation
//! (drop the request) and the retryable/fatal split map onto plain HTTP. The
//! WebSocket protocol is a stateful, evolving control channel (handshake,
//! events, reconnects) that would need its own client to keep up with, and
//! the CLI costs a Node start-up per task (seconds, ~1 GB) and reports
//! failures only as exit codes and text.
//!
//! # Sessions
//!
//! The gateway keeps each conversation's history under its session key and
//! runs turns of one key one after another. The key is
//! `<session_prefix>:<tenant>:session:<session>` when the payload names a
//! session, so follow-up tasks continue one conversation, and
//! `<session_prefix>:<tenant>:task:<task id>` otherwise, so retries of a task
//! continue its own conversation and unrelated tasks never share one. The
//! tenant is part of the key so two tenants' sessions of the same name never
//! meet. Keys are lower-cased because the gateway treats them case-insensitively.
//!
//! # Errors
//!
//! | gateway answer | attempt |
//! | --- | --- |
//! | 401, 403 | fatal: the gateway refused the token |
//! | 400, 404, 405, other 4xx (unknown agent, bad request) | fatal |
//! | 408, 429, any 5xx | retryable (upstream timeout, rate limit, model errors) |
//! | connection refused or reset | retryable |
//! | 200 with a body that is not a chat completion | retryable |
//! | no answer within `request_timeout` | retryable |
//!
//! The gateway retries a failing model for 60–150 s before it answers 408,
//! 429 or 502, which is why `request_timeout` defaults to 180 s.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use clawfleet_shared::TaskSpec;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Attempt, ExecError, Executor, Health, Output, Usage};
use crate::config::{is_openclaw_agent_id, Secret};

pub mod gateway;

pub use gateway::{Gateway, GatewayError, GatewaySettings};

/// The message of the warm-up turn sent after a supervised gateway starts.
const WARMUP_MESSAGE: &str = "Reply with the single word: ready";

/// The header that selects the gateway-side conversation.
pub const SESSION_HEADER: &str = "x-openclaw-session-key";
/// How long a health probe may take; `/readyz` answers in milliseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between readiness probes while start-up waits.
const READY_POLL: Duration = Duration::from_millis(500);
/// How much of an unexpected error body is quoted.
const BODY_QUOTE: usize = 300;
/// Longest `session` a payload may name.
const MAX_SESSION: usize = 128;

/// Settings of an [`OpenclawExecutor`] (see `ExecutorConfig::Openclaw`).
#[derive(Debug, Clone)]
pub struct OpenclawSettings {
    /// Gateway base URL, without a trailing slash (attach mode; a supervised
    /// gateway's URL is set at every start).
    pub url: String,
    /// Bearer token.
    pub token: Secret,
    /// Default OpenClaw agent id.
    pub agent: String,
    /// Longest wait for one answer.
    pub request_timeout: Duration,
    /// How long `start` waits for `/readyz`.
    pub ready_timeout: Duration,
    /// First part of every session key.
    pub session_prefix: String,
}

/// Runs tasks as turns on an OpenClaw gateway.
#[derive(Debug)]
pub struct OpenclawExecutor {
    settings: OpenclawSettings,
    /// The gateway's base URL: `settings.url`, or the supervised gateway's.
    url: std::sync::RwLock<String>,
    client: reqwest::Client,
    supervised: Option<Supervised>,
}

/// Supervise mode's part of the executor.
#[derive(Debug)]
struct Supervised {
    gateway: Gateway,
    warmup: bool,
}

/// The task payload this executor accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    message: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    system: Option<String>,
}

/// The parts of a chat completion this executor reads.
#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The gateway's error body: `{"error": {"message", "type"}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl OpenclawExecutor {
    /// An executor for the gateway at `settings.url`.
    pub fn new(settings: OpenclawSettings) -> Result<Self, ExecError> {
        if settings.request_timeout < Duration::from_secs(90) {
            tracing::warn!(
                request_timeout = %humantime::format_duration(settings.request_timeout),
                "executor.request_timeout is shorter than the gateway's own model retries (~90 s); model outages will show as timeouts"
            );
        }
        let mut builder = reqwest::Client::builder().connect_timeout(PROBE_TIMEOUT);
        // A proxy from the environment must not capture a gateway on this host.
        if is_loopback(&settings.url) {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| ExecError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            url: std::sync::RwLock::new(settings.url.clone()),
            settings,
            client,
            supervised: None,
        })
    }

    /// An executor that runs its own gateway (supervise mode). The token
    /// is generated here; `settings.url` and `settings.token` are ignored.
    pub fn supervised(
        mut settings: OpenclawSettings,
        gateway: GatewaySettings,
        warmup: bool,
    ) -> Result<Self, ExecError> {
        let token = gateway::generate_token();
        settings.token = token.clone();
        // Loopback, so no proxy from the environment applies.
        settings.url = "http://127.0.0.1:0".to_string();
        let mut executor = Self::new(settings)?;
        executor.supervised = Some(Supervised {
            gateway: Gateway::new(gateway, token),
            warmup,
        });
        Ok(executor)
    }

    /// The supervised gateway, in supervise mode.
    pub fn gateway(&self) -> Option<&Gateway> {
        self.supervised.as_ref().map(|s| &s.gateway)
    }

    /// The gateway's base URL.
    pub fn url(&self) -> String {
        self.url.read().expect("url lock").clone()
    }

    /// Supervise mode's start: launch, wait for `/readyz`, check the token,
    /// warm up. A gateway that exits or is not ready in time is an error.
    async fn launch(&self, sup: &Supervised) -> Result<(), ExecError> {
        let port = sup.gateway.launch().await.map_err(fatal)?;
        *self.url.write().expect("url lock") = format!("http://127.0.0.1:{port}");
        let started = tokio::time::Instant::now();
        let deadline = started + self.settings.ready_timeout;
        loop {
            if let Some(status) = sup.gateway.exit_status().await {
                return Err(fatal(GatewayError::Exited {
                    status: status.to_string(),
                    tail: sup.gateway.tail(),
                }));
            }
            if self.readiness().await == Health::Ready {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let tail = sup.gateway.tail();
                sup.gateway.stop().await;
                return Err(fatal(GatewayError::NotReady {
                    timeout: humantime::format_duration(self.settings.ready_timeout).to_string(),
                    tail,
                }));
            }
            tokio::time::sleep(READY_POLL).await;
        }
        tracing::info!(port, after = %humantime::format_duration(round_ms(started.elapsed())), "the OpenClaw gateway is ready");
        self.check_access().await?;
        if sup.warmup {
            self.warm_up().await;
        }
        Ok(())
    }

    /// One short turn, so that the first task does not wait for the
    /// gateway's slow first turn. A failure is only logged: the gateway is
    /// up, and the tasks' own attempts report what is wrong with the model.
    async fn warm_up(&self) {
        let started = tokio::time::Instant::now();
        let body = json!({
            "model": format!("openclaw/{}", self.settings.agent),
            "messages": [{"role": "user", "content": WARMUP_MESSAGE}],
        });
        let key = format!("{}:warmup", self.settings.session_prefix);
        match self.turn(body, &key, &self.settings.agent).await {
            Ok(_) => {
                tracing::info!(after = %humantime::format_duration(round_ms(started.elapsed())), "the OpenClaw gateway is warmed up")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the OpenClaw gateway's warm-up turn failed; taking work anyway")
            }
        }
    }

    /// The session key for a task: see the module docs.
    fn session_key(&self, task: &TaskSpec, session: Option<&str>) -> String {
        let prefix = &self.settings.session_prefix;
        let key = match session {
            Some(s) => format!("{prefix}:{}:session:{s}", task.tenant),
            None => format!("{prefix}:{}:task:{}", task.tenant, task.id),
        };
        key.to_lowercase()
    }

    /// Builds the request body and session key, or refuses the payload.
    fn request(&self, task: &TaskSpec) -> Result<(Value, String, String), ExecError> {
        let payload: Payload = serde_json::from_value(task.payload.clone()).map_err(|e| {
            ExecError::Fatal(format!(
                "the openclaw executor takes {{\"message\": \"...\", \"agent\"?, \"session\"?, \"system\"?}}: {e}"
            ))
        })?;
        if payload.message.trim().is_empty() {
            return Err(ExecError::Fatal("payload.message is empty".into()));
        }
        let agent = payload.agent.unwrap_or_else(|| self.settings.agent.clone());
        if !is_openclaw_agent_id(&agent) {
            return Err(ExecError::Fatal(format!(
                "payload.agent {agent:?} must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}"
            )));
        }
        if let Some(s) = &payload.session {
            let ok = !s.is_empty()
                && s.len() <= MAX_SESSION
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
            if !ok {
                return Err(ExecError::Fatal(format!(
                    "payload.session {} must match [A-Za-z0-9._-]{{1,{MAX_SESSION}}}",
                    clawfleet_shared::strict::echo(s)
                )));
            }
        }
        let key = self.session_key(task, payload.session.as_deref());
        let mut messages = Vec::new();
        if let Some(system) = payload.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        // The gateway keeps the history: only the new message is sent.
        messages.push(json!({"role": "user", "content": payload.message}));
        let body = json!({"model": format!("openclaw/{agent}"), "messages": messages});
        Ok((body, key, agent))
    }

    /// One turn, without cancellation (the caller drops it to cancel).
    async fn turn(&self, body: Value, key: &str, agent: &str) -> Result<Output, ExecError> {
        let timeout = self.settings.request_timeout;
        let send = self
            .client
            .post(format!("{}/v1/chat/completions", self.url()))
            .header(AUTHORIZATION, self.bearer()?)
            .header(CONTENT_TYPE, "application/json")
            .header(SESSION_HEADER, key)
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send();
        // One deadline for the headers and the body together.
        let exchange = async {
            let response = send.await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                return Err(ExecError::Retryable(format!(
                    "the OpenClaw gateway did not answer within {} (executor.request_timeout)",
                    humantime::format_duration(timeout)
                )))
            }
            Ok(Err(e)) => return Err(transport_error(&self.url(), &e)),
            Ok(Ok(r)) => r,
        };
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        let completion: Completion = serde_json::from_slice(&bytes).map_err(|e| {
            ExecError::Retryable(format!(
                "the OpenClaw gateway answered {status} with a body that is not a chat completion ({e}): {}",
                quote(&bytes)
            ))
        })?;
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(ExecError::Retryable(
                "the OpenClaw gateway answered with no choices".into(),
            ));
        };
        let model = completion
            .model
            .unwrap_or_else(|| format!("openclaw/{agent}"));
        let usage = completion.usage.map(|u| Usage {
            tokens_in: u.prompt_tokens,
            tokens_out: u.completion_tokens,
            model: Some(model.clone()),
        });
        Ok(Output {
            result: json!({
                "text": choice.message.content.unwrap_or_default(),
                "model": model,
                "agent": agent,
                "session_key": key,
                "finish_reason": choice.finish_reason,
                // Also in the result, where users and tools can read it.
                "usage": usage.as_ref().map(|u| json!({
                    "tokens_in": u.tokens_in,
                    "tokens_out": u.tokens_out,
                })),
            }),
            usage,
        })
    }

    fn bearer(&self) -> Result<HeaderValue, ExecError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.settings.token.expose()))
            .map_err(|_| ExecError::Fatal("executor.token is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Probes `/readyz` once.
    async fn readiness(&self) -> Health {
        let probe = self
            .client
            .get(format!("{}/readyz", self.url()))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        match probe {
            Ok(r) if r.status().is_success() => Health::Ready,
            // Starting up, or a check failing: alive, but no work for now.
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => Health::NotReady,
            _ => Health::Down,
        }
    }

    /// Asks `/v1/models` with the token, so that a wrong token or a disabled
    /// endpoint stops the agent at start-up instead of failing every task.
    async fn check_access(&self) -> Result<(), ExecError> {
        let response = self
            .client
            .get(format!("{}/v1/models", self.url()))
            .header(AUTHORIZATION, self.bearer()?)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Err(ExecError::Fatal(format!(
                "the OpenClaw gateway at {} refused the token ({}): check executor.token or {}",
                self.url(),
                r.status(),
                crate::config::OPENCLAW_TOKEN_ENV
            ))),
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Err(ExecError::Fatal(format!(
                "the OpenClaw gateway at {} does not serve /v1 (404): enable gateway.http.endpoints.chatCompletions in its config",
                self.url()
            ))),
            // Anything else (unreachable, busy) is for the health checks to track.
            Ok(r) => {
                tracing::warn!(status = %r.status(), "the OpenClaw gateway's /v1/models answered unexpectedly");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check access to the OpenClaw gateway");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Executor for OpenclawExecutor {
    fn kind(&self) -> &'static str {
        "openclaw"
    }

    async fn run(&self, task: &TaskSpec, attempt: &Attempt) -> Result<Output, ExecError> {
        let (body, key, agent) = self.request(task)?;
        tracing::debug!(session_key = %key, agent = %agent, "sending a turn to the OpenClaw gateway");
        // Dropping the request closes its connection; the gateway then stops
        // waiting on us (the turn it already started may still finish there).
        tokio::select! {
            r = self.turn(body, &key, &agent) => r,
            _ = attempt.cancel.cancelled() => Err(ExecError::Cancelled),
        }
    }

    /// `/readyz`: 2xx is ready, 503 is not ready (starting), anything else
    /// or no answer within 5 s is down. In supervise mode, a gateway process
    /// that has exited is down at once, and one being started or stopped is
    /// not ready.
    async fn health(&self) -> Health {
        if let Some(sup) = &self.supervised {
            match sup.gateway.state() {
                gateway::ProcessState::Gone => return Health::Down,
                gateway::ProcessState::Busy => return Health::NotReady,
                gateway::ProcessState::Running => {}
            }
        }
        self.readiness().await
    }

    /// Attach mode: waits up to `ready_timeout` for `/readyz`, then checks
    /// the token. A gateway that is still not ready does not stop the
    /// agent: the gateway is someone else's to start, and the supervisor
    /// keeps an unready executor out of work until it is ready. A gateway
    /// that refuses the token does stop it, since no task could ever run.
    ///
    /// Supervise mode: starts the gateway (see the module docs); a gateway
    /// that cannot start stops the agent with the gateway's last output.
    async fn start(&self) -> Result<(), ExecError> {
        if let Some(sup) = &self.supervised {
            return self.launch(sup).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.ready_timeout;
        let mut health = self.readiness().await;
        while health != Health::Ready && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(READY_POLL).await;
            health = self.readiness().await;
        }
        if health == Health::Ready {
            self.check_access().await
        } else {
            tracing::warn!(url = %self.url(), health = health.as_str(), "the OpenClaw gateway is not ready; starting anyway");
            Ok(())
        }
    }

    /// Supervise mode: stops the gateway (whatever is left of it) and starts
    /// a new one. Attach mode: nothing to do; the gateway is someone else's.
    async fn restart(&self) -> Result<(), ExecError> {
        match &self.supervised {
            Some(sup) => self.launch(sup).await,
            None => Ok(()),
        }
    }

    /// Supervise mode: stops the gateway.
    async fn stop(&self) {
        if let Some(sup) = &self.supervised {
            sup.gateway.stop().await;
        }
    }
}

fn fatal(e: GatewayError) -> ExecError {
    ExecError::Fatal(e.to_string())
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Maps a failure to reach the gateway or read its answer.
fn transport_error(url: &str, e: &reqwest::Error) -> ExecError {
    // Every transport failure (refused, reset, closed mid-body) may pass.
    let what = if e.is_connect() {
        "could not connect to"
    } else {
        "lost the connection to"
    };
    ExecError::Retryable(format!(
        "{what} the OpenClaw gateway at {url}: {}",
        error_chain(e)
    ))
}

/// Maps a non-2xx answer of the chat completions endpoint.
fn status_error(status: StatusCode, body: &[u8]) -> ExecError {
    let detail = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => match b.error.kind {
            Some(kind) => format!("{} ({kind})", b.error.message),
            None => b.error.message,
        },
        Err(_) => quote(body),
    };
    let message = format!("the OpenClaw gateway answered {status}: {detail}");
    match status.as_u16() {
        401 | 403 => ExecError::Fatal(format!(
            "{message}; the gateway refused the token (executor.token)"
        )),
        // Upstream timeout and rate limit come after the gateway's own retries.
        408 | 429 => ExecError::Retryable(message),
        s if (500..600).contains(&s) => ExecError::Retryable(message),
        _ => ExecError::Fatal(message),
    }
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_QUOTE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// `reqwest` puts the useful part (refused, reset) in the error's sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
