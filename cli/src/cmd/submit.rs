//! `clawfleet submit`: one task, from flags or a JSON file, optionally
//! waiting for its result.
//!
//! The task is sent as the user wrote it; the dispatcher validates it, so
//! the CLI never disagrees with the server about what a valid task is.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clawfleet_shared::api::SubmitReply;
use clawfleet_shared::{subjects, TaskStatus};
use serde_json::{Map, Value};

use super::Global;
use crate::client::Api;
use crate::{output, results};

/// Options of `clawfleet submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Owning tenant.
    #[arg(long, required_unless_present = "file")]
    tenant: Option<String>,
    /// critical, high, normal or low (any case).
    #[arg(long, value_parser = super::lowercase)]
    priority: Option<String>,
    /// Capabilities an agent needs, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "CAP,...")]
    requires: Option<Vec<String>>,
    /// Only agents of this region may run it.
    #[arg(long)]
    region: Option<String>,
    /// Input for the executor, as JSON (required unless --file gives the task);
    /// the simulator of `clawfleet up` runs e.g. {"op":"echo","data":"hi"}
    /// or {"op":"sleep","ms":1000}.
    #[arg(long, value_name = "JSON", required_unless_present = "file")]
    payload: Option<String>,
    /// Deadline for one attempt, e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Attempts before the task fails for good.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Task id, also the idempotency key: the same id is never run twice.
    #[arg(long, value_name = "KEY")]
    id: Option<String>,
    /// Start no earlier than this long after acceptance, e.g. 10m.
    #[arg(long, value_name = "DURATION", conflicts_with = "not_before")]
    delay: Option<String>,
    /// Start no earlier than this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    not_before: Option<String>,
    /// A label, repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Read the task from this JSON file (`-` for stdin); flags override its fields.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Wait for the result and print it; exit 1 if the task failed.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    wait_timeout: Duration,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl SubmitArgs {
    fn has_fields(&self) -> bool {
        self.tenant.is_some()
            || self.priority.is_some()
            || self.requires.is_some()
            || self.region.is_some()
            || self.payload.is_some()
            || self.timeout.is_some()
            || self.max_attempts.is_some()
            || self.delay.is_some()
            || self.not_before.is_some()
            || self.id.is_some()
            || !self.labels.is_empty()
    }

    /// The request body: the file as written when no flag changes it,
    /// otherwise the file's object (or an empty one) with the flags applied.
    fn body(&self) -> anyhow::Result<Vec<u8>> {
        let raw = match &self.file {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        if let Some(raw) = &raw {
            if !self.has_fields() {
                return Ok(raw.clone());
            }
        }
        let mut task = match raw {
            None => Map::new(),
            Some(raw) => match serde_json::from_slice(&raw) {
                Ok(Value::Object(map)) => map,
                Ok(_) => anyhow::bail!("the task file must hold a JSON object"),
                Err(e) => anyhow::bail!("the task file is not valid JSON: {e}"),
            },
        };
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                task.insert(key.to_string(), v);
            }
        };
        set("tenant", self.tenant.clone().map(Value::from));
        set("id", self.id.clone().map(Value::from));
        set("priority", self.priority.clone().map(Value::from));
        set("requires", self.requires.clone().map(Value::from));
        set("region", self.region.clone().map(Value::from));
        set("timeout", self.timeout.clone().map(Value::from));
        set("max_attempts", self.max_attempts.map(Value::from));
        set("delay", self.delay.clone().map(Value::from));
        set("not_before", self.not_before.clone().map(Value::from));
        if let Some(payload) = &self.payload {
            let payload: Value = serde_json::from_str(payload)
                .context("while reading --payload (it must be JSON)")?;
            set("payload", Some(payload));
        }
        if !self.labels.is_empty() {
            let labels: BTreeMap<String, String> = self.labels.iter().cloned().collect();
            set("labels", Some(serde_json::to_value(labels)?));
        }
        Ok(serde_json::to_vec(&task)?)
    }
}

fn read_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("while reading the task from stdin")?;
    } else {
        buf = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    }
    Ok(buf)
}

/// The tenant the task will be filed under, for reading its result.
fn tenant_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("tenant")?.as_str().map(str::to_string)
}

/// Submits the task and prints the reply (and the result with `--wait`).
pub async fn run(global: &Global, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let body = args.body()?;
    let api = Api::connect(global.url()).await?;
    let reply: SubmitReply = api
        .request(subjects::API_SUBMIT, Bytes::from(body.clone()))
        .await?;
    if !args.wait {
        if global.json {
            output::print_json(&reply)?;
        } else if reply.duplicate {
            println!("{} duplicate (already {})", reply.id, reply.status);
        } else {
            println!("{} {}", reply.id, reply.status);
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Accepted, so the body is valid JSON with a tenant.
    let tenant = tenant_of(&body).context("while reading the tenant of the accepted task")?;
    if !global.json {
        let note = if reply.duplicate { " (duplicate)" } else { "" };
        eprintln!(
            "{} {}{note}; waiting for its result",
            reply.id, reply.status
        );
    }
    let result = results::wait_one(&api, &tenant, &reply.id, args.wait_timeout).await?;
    output::print_json(&result)?;
    Ok(if result.status == TaskStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn body(args: &[&str]) -> Value {
        let cli =
            Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied())).unwrap();
        serde_json::from_slice(&cli.args.body().unwrap()).unwrap()
    }

    #[test]
    fn flags_become_task_fields() {
        let task = body(&[
            "--tenant",
            "acme",
            "--priority",
            "high",
            "--requires",
            "code,git",
            "--payload",
            r#"{"op":"echo"}"#,
            "--timeout",
            "30s",
            "--max-attempts",
            "2",
            "--id",
            "k1",
            "--label",
            "team=a",
            "--label",
            "env=dev",
        ]);
        assert_eq!(
            task,
            serde_json::json!({
                "tenant": "acme", "priority": "high", "requires": ["code", "git"], "payload": {"op": "echo"},
                "timeout": "30s", "max_attempts": 2, "id": "k1", "labels": {"env": "dev", "team": "a"},
            })
        );
    }

    #[test]
    fn unset_flags_are_left_out() {
        assert_eq!(
            body(&["--tenant", "acme", "--payload", "{}"]),
            serde_json::json!({"tenant": "acme", "payload": {}})
        );
    }

    #[test]
    fn a_priority_in_any_case_is_sent_in_lowercase() {
        let task = body(&["--tenant", "acme", "--priority", "HiGh", "--payload", "{}"]);
        assert_eq!(task["priority"], "high");
    }

    #[test]
    fn a_payload_is_required_unless_a_file_gives_the_task() {
        let missing = Cli::try_parse_from(["submit", "--tenant", "acme"]).err();
        assert!(
            missing.is_some_and(|e| e.to_string().contains("--payload")),
            "submit without --payload must be refused"
        );
        assert!(Cli::try_parse_from(["submit", "--file", "task.json"]).is_ok());
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused_before_sending() {
        let cli =
            Cli::try_parse_from(["submit", "--tenant", "acme", "--payload", "{nope"]).unwrap();
        assert!(cli.args.body().is_err());
    }
}
