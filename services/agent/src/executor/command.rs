//! The command executor: one process per attempt.
//!
//! The task payload (JSON) goes to the program's stdin. Exit status 0: the
//! result is stdout, as JSON when it parses, else as a trimmed string. Exit
//! status 65 (`EX_DATAERR`): a fatal failure, not retried. Any other status
//! or a crash: a retryable failure carrying the end of stderr. At the task
//! timeout or on shutdown the process is killed.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use clawfleet_shared::TaskSpec;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Attempt, ExecError, Executor, Output};

/// Largest stdout kept as a result.
const MAX_STDOUT: usize = 1024 * 1024;
/// How much of stderr is quoted in an error.
const STDERR_TAIL: usize = 2048;
/// Exit status meaning "this payload can never work".
pub const EXIT_FATAL: i32 = 65;

/// Runs a configured program per attempt.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    program: PathBuf,
    args: Vec<String>,
}

impl CommandExecutor {
    /// An executor running `program args...`.
    pub fn new(program: PathBuf, args: Vec<String>) -> Self {
        Self { program, args }
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn run(&self, task: &TaskSpec, attempt: &Attempt) -> Result<Output, ExecError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env("CLAWFLEET_TASK_ID", &task.id)
            .env("CLAWFLEET_TENANT", &task.tenant)
            .env("CLAWFLEET_ATTEMPT", attempt.number.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ExecError::Retryable(format!("could not start {}: {e}", self.program.display()))
            })?;

        let payload = serde_json::to_vec(&task.payload).unwrap_or_default();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let write = async move {
            // A program that ignores its input closes the pipe early; that is fine.
            let _ = stdin.write_all(&payload).await;
            drop(stdin);
        };
        let read_out = async move {
            let mut buf = Vec::new();
            let _ = (&mut stdout)
                .take(MAX_STDOUT as u64 + 1)
                .read_to_end(&mut buf)
                .await;
            buf
        };
        let read_err = async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        };
        let work = async {
            let (_, out, err) = tokio::join!(write, read_out, read_err);
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = tokio::select! {
            r = work => r,
            _ = attempt.cancel.cancelled() => return Err(ExecError::Cancelled),
        };
        let status = status
            .map_err(|e| ExecError::Retryable(format!("could not wait for the program: {e}")))?;
        let tail = || {
            let text = String::from_utf8_lossy(&err);
            let text = text.trim();
            let start = text.len().saturating_sub(STDERR_TAIL);
            let start = (start..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            text[start..].to_string()
        };
        match status.code() {
            Some(0) => {
                if out.len() > MAX_STDOUT {
                    return Err(ExecError::Fatal(format!(
                        "output is larger than {MAX_STDOUT} bytes"
                    )));
                }
                let result = serde_json::from_slice(&out).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&out).trim().to_string())
                });
                Ok(Output {
                    result,
                    usage: None,
                })
            }
            Some(EXIT_FATAL) => Err(ExecError::Fatal(format!(
                "program rejected the task: {}",
                tail()
            ))),
            Some(code) => Err(ExecError::Retryable(format!(
                "program exited with status {code}: {}",
                tail()
            ))),
            None => Err(ExecError::Retryable(format!(
                "program was killed by a signal: {}",
                tail()
            ))),
        }
    }
}
