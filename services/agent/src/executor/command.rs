//! The command executor: one process per attempt.
//!
//! The task payload (JSON) goes to the program's stdin. Exit status 0: the
//! result is stdout, as JSON when it parses, else as a trimmed string. Exit
//! status 65 (`EX_DATAERR`): a fatal failure, not retried. Any other status
//! or a crash: a retryable failure carrying the end of stderr. At the task
//! timeout or on shutdown the process is killed.
//!
//! Each line the program writes to stderr is also logged as it comes (INFO,
//! target [`EXECUTOR_OUTPUT_TARGET`], field `stream = "stderr"`), inside
//! the attempt's span, so it is shipped with the task id, tenant and agent
//! like the agent's own lines and a task's output can be searched for
//! later. The agent does not print these lines on its own stderr by default.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use clawfleet_shared::logs::EXECUTOR_OUTPUT_TARGET;
use clawfleet_shared::TaskSpec;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Attempt, ExecError, Executor, Health, Output};

/// Largest stdout kept as a result.
const MAX_STDOUT: usize = 1024 * 1024;
/// How much of stderr is quoted in an error.
const STDERR_TAIL: usize = 2048;
/// How much of the end of stderr is kept for that quote.
const STDERR_KEPT: usize = 4 * STDERR_TAIL;
/// Longest stderr line logged as one; a longer run without a newline is
/// logged in pieces of this size.
const MAX_LINE: usize = 8 * 1024;
/// Exit status meaning "this payload can never work".
pub const EXIT_FATAL: i32 = 65;

/// How long a health probe may run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a configured program per attempt.
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    program: PathBuf,
    args: Vec<String>,
    probe: Vec<String>,
}

impl CommandExecutor {
    /// An executor running `program args...`.
    pub fn new(program: PathBuf, args: Vec<String>) -> Self {
        Self {
            program,
            args,
            probe: Vec::new(),
        }
    }

    /// Uses `probe` (program and arguments; exit 0 means ready) as the health check.
    pub fn with_probe(mut self, probe: Vec<String>) -> Self {
        self.probe = probe;
        self
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    fn kind(&self) -> &'static str {
        "command"
    }

    /// Runs the probe program, if one is configured: exit 0 is ready, a
    /// failure to start, another status or a hang past 10 s is down.
    async fn health(&self) -> Health {
        let Some((program, args)) = self.probe.split_first() else {
            return Health::Ready;
        };
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(PROBE_TIMEOUT, status).await {
            Ok(Ok(s)) if s.success() => Health::Ready,
            _ => Health::Down,
        }
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
        let read_err = async move { StderrLines::default().read(&mut stderr).await };
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

/// Reads a program's stderr: logs it line by line and keeps its end.
#[derive(Default)]
struct StderrLines {
    line: Vec<u8>,
    tail: Vec<u8>,
}

impl StderrLines {
    /// Reads to the end; returns the last [`STDERR_KEPT`] bytes.
    async fn read(mut self, stderr: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.tail.extend_from_slice(&chunk[..n]);
            if self.tail.len() > 2 * STDERR_KEPT {
                self.tail.drain(..self.tail.len() - STDERR_KEPT);
            }
            for &byte in &chunk[..n] {
                if byte == b'\n' {
                    self.emit();
                } else {
                    self.line.push(byte);
                    if self.line.len() >= MAX_LINE {
                        self.emit();
                    }
                }
            }
        }
        self.emit();
        self.tail
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        if !text.is_empty() {
            tracing::info!(target: EXECUTOR_OUTPUT_TARGET, stream = "stderr", "{text}");
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn task(payload: Value) -> TaskSpec {
        serde_json::from_value(json!({
            "id": "t1", "tenant": "acme", "priority": "normal", "requires": [],
            "payload": payload, "timeout": "1m", "max_attempts": 3, "labels": {},
            "submitted_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a valid spec")
    }

    fn attempt() -> Attempt {
        Attempt {
            number: 1,
            cancel: CancellationToken::new(),
        }
    }

    fn sh(script: &str) -> CommandExecutor {
        CommandExecutor::new("sh".into(), vec!["-c".into(), script.into()])
    }

    #[tokio::test]
    async fn the_payload_goes_to_stdin_and_json_stdout_is_the_result() {
        let out = sh("cat").run(&task(json!({"a": [1, 2]})), &attempt()).await;
        assert_eq!(out.unwrap().result, json!({"a": [1, 2]}));
    }

    #[tokio::test]
    async fn plain_text_stdout_is_a_trimmed_string_and_the_task_is_in_the_environment() {
        let out = sh("echo \"$CLAWFLEET_TENANT/$CLAWFLEET_TASK_ID/$CLAWFLEET_ATTEMPT\"")
            .run(&task(json!(null)), &attempt())
            .await;
        assert_eq!(out.unwrap().result, json!("acme/t1/1"));
    }

    #[tokio::test]
    async fn a_nonzero_exit_is_retryable_and_quotes_stderr() {
        let err = sh("echo 'disk on fire' >&2; exit 3")
            .run(&task(json!(1)), &attempt())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ExecError::Retryable("program exited with status 3: disk on fire".into())
        );
    }

    /// Lines of stderr, as the agent's tracing layers see them.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            let target = event.metadata().target().to_string();
            self.0.lock().unwrap().push((target, m.0));
        }
    }

    #[tokio::test]
    async fn each_stderr_line_is_logged_and_the_error_still_quotes_the_end() {
        use tracing_subscriber::layer::SubscriberExt;
        let captured = Captured::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        let err = sh("printf 'first line\\nsecond line\\n' >&2; printf 'no newline' >&2; exit 3")
            .run(&task(json!(1)), &attempt())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ExecError::Retryable(
                "program exited with status 3: first line\nsecond line\nno newline".into()
            )
        );
        let lines: Vec<_> = captured
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, _)| target == EXECUTOR_OUTPUT_TARGET)
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(lines, ["first line", "second line", "no newline"]);
    }

    #[tokio::test]
    async fn exit_65_is_fatal() {
        let err = sh("echo 'bad payload' >&2; exit 65")
            .run(&task(json!(1)), &attempt())
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Fatal(m) if m.contains("bad payload")));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_retryable_error() {
        let err = CommandExecutor::new("/nonexistent/program".into(), vec![])
            .run(&task(json!(1)), &attempt())
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Retryable(m) if m.contains("could not start")));
    }

    /// The runtime enforces the task timeout by dropping the attempt; the
    /// program must not outlive it.
    #[tokio::test]
    async fn a_dropped_attempt_kills_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
        let exec = sh(&script);
        let spec = task(json!(1));
        let a = attempt();
        let run = tokio::time::timeout(Duration::from_millis(500), exec.run(&spec, &a)).await;
        assert!(run.is_err(), "the program should still have been running");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let gone = async {
            // Killed, then reaped by tokio's orphan reaper.
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the program was killed");
    }

    #[tokio::test]
    async fn the_probe_exit_status_is_the_health() {
        let ok = sh("true").with_probe(vec!["true".into()]);
        assert_eq!(ok.health().await, Health::Ready);
        let bad = sh("true").with_probe(vec!["sh".into(), "-c".into(), "exit 1".into()]);
        assert_eq!(bad.health().await, Health::Down);
        let missing = sh("true").with_probe(vec!["/nonexistent/probe".into()]);
        assert_eq!(missing.health().await, Health::Down);
        assert_eq!(sh("true").health().await, Health::Ready);
    }

    #[tokio::test]
    async fn cancelling_an_attempt_stops_the_program() {
        let exec = sh("exec sleep 30");
        let spec = task(json!(1));
        let a = attempt();
        let cancel = a.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let err = tokio::time::timeout(Duration::from_secs(5), exec.run(&spec, &a))
            .await
            .expect("cancel returns promptly")
            .unwrap_err();
        assert_eq!(err, ExecError::Cancelled);
    }
}
