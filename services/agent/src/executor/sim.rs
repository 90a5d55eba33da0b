//! The simulator executor: deterministic behaviour chosen by the payload.
//!
//! | payload | outcome |
//! |---|---|
//! | `{"op":"echo","data":X}` | result `X` |
//! | `{"op":"sleep","ms":N}` | sleeps N ms, result `{"slept_ms":N}` |
//! | `{"op":"fail","message":M}` | retryable failure `M` |
//! | `{"op":"flaky","fail_attempts":K,"data":X}` | fails attempts 1..=K, then result `X` |
//! | `{"op":"fatal","message":M}` | fatal failure `M` (not retried) |
//! | `{"op":"crash"}` | the executor "dies": retryable failure, and it reports `down` until the agent restarts it |
//! | `{"op":"block","ms":N}` | blocks its thread for N ms (a blocking call in async code, which wedges the agent) |
//! | anything else | fatal failure naming these shapes |
//!
//! A payload may add `"usage": {"tokens_in": I, "tokens_out": O, "model": M}`:
//! a successful attempt then reports that usage, as a model-backed executor
//! would (for cost tracking).
//!
//! Any payload may add `"on": ["agent-a", ...]`: the op then applies only on
//! those agents, and on any other agent the task echoes `data`. Tests use it
//! to make one agent of a fleet misbehave.
//!
//! Health is `ready`, unless the executor crashed (until restarted) or its
//! `health_file` says `not_ready` or `down`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use clawfleet_shared::TaskSpec;
use serde_json::{json, Value};

use super::{sleep_or_cancel, Attempt, ExecError, Executor, Health, Output};

/// The payloads the simulator understands, for the error that refuses others.
const SHAPES: &str = r#"{"op":"echo","data":X}, {"op":"sleep","ms":N}, {"op":"fail","message":M}, {"op":"flaky","fail_attempts":K,"data":X}, {"op":"fatal","message":M}, {"op":"crash"} or {"op":"block","ms":N}"#;

/// How much of a payload or op the refusal quotes.
const QUOTE_CHARS: usize = 80;

/// `value` as JSON, cut to [`QUOTE_CHARS`] characters.
fn quote(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text,
    }
}

/// Why the simulator cannot run `payload`, naming what it would run.
fn unsupported(payload: &Value) -> ExecError {
    let problem = match payload.get("op") {
        _ if !payload.is_object() => "the payload is not a JSON object".to_string(),
        None => "the payload has no \"op\"".to_string(),
        Some(Value::String(op)) => {
            format!("unsupported sim op {}", quote(&Value::String(op.clone())))
        }
        Some(other) => format!("\"op\" must be a string, not {}", quote(other)),
    };
    ExecError::Fatal(format!(
        "{problem} (payload {}): the simulator executor runs {SHAPES}",
        quote(payload)
    ))
}

/// The simulator.
#[derive(Debug, Default)]
pub struct SimExecutor {
    agent_id: String,
    health_file: Option<PathBuf>,
    crashed: AtomicBool,
}

impl SimExecutor {
    /// A simulator for agent `agent_id`, its health read from `health_file` if given.
    pub fn new(agent_id: impl Into<String>, health_file: Option<PathBuf>) -> Self {
        Self {
            agent_id: agent_id.into(),
            health_file,
            crashed: AtomicBool::new(false),
        }
    }

    fn applies_here(&self, p: &Value) -> bool {
        match p.get("on").and_then(Value::as_array) {
            None => true,
            Some(agents) => agents
                .iter()
                .any(|a| a.as_str() == Some(self.agent_id.as_str())),
        }
    }
}

#[async_trait]
impl Executor for SimExecutor {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn run(&self, task: &TaskSpec, attempt: &Attempt) -> Result<Output, ExecError> {
        let p = &task.payload;
        let data = || p.get("data").cloned().unwrap_or(Value::Null);
        let op = if self.applies_here(p) {
            p.get("op").and_then(Value::as_str).unwrap_or_default()
        } else {
            "echo"
        };
        let message = || {
            p.get("message")
                .and_then(Value::as_str)
                .unwrap_or("simulated failure")
                .to_string()
        };
        let ms = || p.get("ms").and_then(Value::as_u64).unwrap_or(0);
        let result = match op {
            "echo" => data(),
            "sleep" => {
                sleep_or_cancel(Duration::from_millis(ms()), &attempt.cancel).await?;
                json!({ "slept_ms": ms() })
            }
            "fail" => return Err(ExecError::Retryable(message())),
            "fatal" => return Err(ExecError::Fatal(message())),
            "flaky" => {
                let fail = p.get("fail_attempts").and_then(Value::as_u64).unwrap_or(1);
                if u64::from(attempt.number) <= fail {
                    return Err(ExecError::Retryable(format!(
                        "flaky failure on attempt {}",
                        attempt.number
                    )));
                }
                data()
            }
            "crash" => {
                self.crashed.store(true, Ordering::SeqCst);
                return Err(ExecError::Retryable("the executor crashed".into()));
            }
            "block" => {
                // Deliberately blocking: this is the bug being simulated.
                std::thread::sleep(Duration::from_millis(ms()));
                json!({ "blocked_ms": ms() })
            }
            _ => return Err(unsupported(p)),
        };
        let usage = p
            .get("usage")
            .and_then(|u| serde_json::from_value(u.clone()).ok());
        Ok(Output { result, usage })
    }

    async fn health(&self) -> Health {
        if self.crashed.load(Ordering::SeqCst) {
            return Health::Down;
        }
        let Some(path) = &self.health_file else {
            return Health::Ready;
        };
        match tokio::fs::read_to_string(path).await {
            Ok(text) => match text.trim() {
                "down" => Health::Down,
                "not_ready" => Health::NotReady,
                _ => Health::Ready,
            },
            Err(_) => Health::Ready,
        }
    }

    async fn restart(&self) -> Result<(), ExecError> {
        self.crashed.store(false, Ordering::SeqCst);
        Ok(())
    }
}
