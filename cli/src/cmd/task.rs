//! `clawfleet task get ID`: a task's record, with every attempt.

use std::process::ExitCode;
use std::time::Duration;

use clawfleet_shared::api::TaskGetRequest;
use clawfleet_shared::task::Attempt;
use clawfleet_shared::{subjects, timefmt, TaskRecord};

use super::Global;
use crate::client::Api;
use crate::output;

/// `clawfleet task ...`
#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Show a task's record: status, attempts, result.
    Get {
        /// The task id.
        id: String,
        /// Report the task as not found unless it belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs `task get`.
pub async fn run(global: &Global, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    let TaskCommand::Get { id, tenant } = cmd;
    let api = Api::connect(global.url()).await?;
    let record: TaskRecord = api
        .request_json(subjects::API_TASK_GET, &TaskGetRequest { id, tenant })
        .await?;
    if global.json {
        output::print_json(&record)?;
    } else {
        print_record(&record)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_record(r: &TaskRecord) -> anyhow::Result<()> {
    let spec = &r.spec;
    println!("task {}  {}", spec.id, r.status);
    println!("  tenant     {}", spec.tenant);
    println!("  priority   {}", spec.priority);
    println!("  requires   {}", output::list(&spec.requires));
    println!("  region     {}", output::or_dash(spec.region.as_deref()));
    println!("  queue      {}", r.queue);
    println!(
        "  timeout    {} per attempt, at most {} attempt(s)",
        humantime::format_duration(spec.timeout),
        spec.max_attempts
    );
    if !spec.labels.is_empty() {
        let labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("  labels     {}", labels.join(", "));
    }
    println!("  submitted  {}", output::datetime(spec.submitted_at));
    if let Some(finished) = r.finished_at {
        let took = Duration::from_millis(timefmt::millis_between(spec.submitted_at, finished));
        println!(
            "  finished   {} ({} after submission)",
            output::datetime(finished),
            output::duration(took)
        );
    }
    if r.attempts.is_empty() {
        println!("attempts: none yet");
    } else {
        println!("attempts:");
        for a in &r.attempts {
            println!("  {}", attempt_line(a));
        }
    }
    if let Some(result) = &r.result {
        println!("result:");
        for line in serde_json::to_string_pretty(result)?.lines() {
            println!("  {line}");
        }
    }
    if let Some(error) = &r.failure {
        println!("error: {error}");
    }
    Ok(())
}

fn attempt_line(a: &Attempt) -> String {
    let mut line = format!(
        "#{} on {}  started {}",
        a.attempt,
        a.agent,
        output::clock(a.started_at)
    );
    match a.ended_at {
        Some(end) => {
            let took = Duration::from_millis(timefmt::millis_between(a.started_at, end));
            line.push_str(&format!(
                "  ended {} ({})",
                output::clock(end),
                output::duration(took)
            ));
        }
        None => line.push_str("  running"),
    }
    if let Some(outcome) = a.outcome {
        // The wire name, e.g. `timeout`, reads better than the Rust variant.
        let name = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        line.push_str(&format!("  {}", name.unwrap_or_default()));
    }
    if let Some(error) = &a.error {
        line.push_str(&format!("  {error}"));
    }
    line
}
