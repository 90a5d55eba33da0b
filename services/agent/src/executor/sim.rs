//! The simulator executor: deterministic behaviour chosen by the payload.
//!
//! | payload | outcome |
//! |---|---|
//! | `{"op":"echo","data":X}` | result `X` |
//! | `{"op":"sleep","ms":N}` | sleeps N ms, result `{"slept_ms":N}` |
//! | `{"op":"fail","message":M}` | retryable failure `M` |
//! | `{"op":"flaky","fail_attempts":K,"data":X}` | fails attempts 1..=K, then result `X` |
//! | `{"op":"fatal","message":M}` | fatal failure `M` (not retried) |
//! | anything else | fatal failure (unsupported) |

use std::time::Duration;

use async_trait::async_trait;
use clawfleet_shared::TaskSpec;
use serde_json::{json, Value};

use super::{sleep_or_cancel, Attempt, ExecError, Executor, Output};

/// The simulator.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimExecutor;

#[async_trait]
impl Executor for SimExecutor {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn run(&self, task: &TaskSpec, attempt: &Attempt) -> Result<Output, ExecError> {
        let p = &task.payload;
        let op = p.get("op").and_then(Value::as_str).unwrap_or_default();
        let message = || {
            p.get("message")
                .and_then(Value::as_str)
                .unwrap_or("simulated failure")
                .to_string()
        };
        let result = match op {
            "echo" => p.get("data").cloned().unwrap_or(Value::Null),
            "sleep" => {
                let ms = p.get("ms").and_then(Value::as_u64).unwrap_or(0);
                sleep_or_cancel(Duration::from_millis(ms), &attempt.cancel).await?;
                json!({ "slept_ms": ms })
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
                p.get("data").cloned().unwrap_or(Value::Null)
            }
            other => {
                return Err(ExecError::Fatal(format!(
                    "unsupported sim op {other:?}; use echo, sleep, fail, flaky or fatal"
                )))
            }
        };
        Ok(Output {
            result,
            usage: None,
        })
    }
}
