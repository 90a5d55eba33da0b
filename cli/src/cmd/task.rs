//! `clawfleet task get ID`: a task's record, with every attempt.
//! `clawfleet task cancel ID`: stop a task that has not finished.

use std::process::ExitCode;
use std::time::Duration;

use clawfleet_shared::api::{TaskCancelReply, TaskCancelRequest, TaskGetRequest};
use clawfleet_shared::task::Attempt;
use clawfleet_shared::{subjects, timefmt, TaskRecord, TaskStatus};

use super::Global;
use crate::client::Api;
use crate::{output, results};

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
    /// Cancel a queued or running task: a queued one is cancelled at once,
    /// a running one as soon as its agent has stopped it.
    Cancel {
        /// The task id.
        id: String,
        /// Report the task as not found unless it belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Why; kept in the record and in the result's error message.
        #[arg(long)]
        reason: Option<String>,
        /// Wait until the task is cancelled and print its result.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        wait_timeout: Duration,
    },
}

/// Runs `task get` or `task cancel`.
pub async fn run(global: &Global, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TaskCommand::Get { id, tenant } => get(global, id, tenant).await,
        TaskCommand::Cancel {
            id,
            tenant,
            reason,
            wait,
            wait_timeout,
        } => {
            let request = TaskCancelRequest { id, tenant, reason };
            cancel(global, request, wait.then_some(wait_timeout)).await
        }
    }
}

async fn get(global: &Global, id: String, tenant: Option<String>) -> anyhow::Result<ExitCode> {
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

async fn cancel(
    global: &Global,
    request: TaskCancelRequest,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let reply: TaskCancelReply = api
        .request_json(subjects::API_TASK_CANCEL, &request)
        .await?;
    let Some(timeout) = wait else {
        if global.json {
            output::print_json(&reply)?;
        } else if reply.status == TaskStatus::Cancelled {
            println!("{} cancelled", reply.id);
        } else {
            println!(
                "{} cancel requested; agent {} is stopping it",
                reply.id,
                reply.agent.as_deref().unwrap_or("-")
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    // The tenant of the task, to read its result.
    let record: TaskRecord = api
        .request_json(
            subjects::API_TASK_GET,
            &TaskGetRequest {
                id: reply.id.clone(),
                tenant: request.tenant.clone(),
            },
        )
        .await?;
    let result = results::wait_one(&api, &record.spec.tenant, &reply.id, timeout).await?;
    output::print_json(&result)?;
    // The agent may have finished the task before it heard of the cancel.
    Ok(if result.status == TaskStatus::Cancelled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    if let Some(not_before) = spec.not_before {
        println!("  not before {}", output::datetime(not_before));
    }
    if let Some(link) = &spec.replay_of {
        println!(
            "  replay of  {} (dead letter {})",
            output::or_dash(link.id.as_deref()),
            link.dlq_seq
        );
    }
    if let Some(cancel) = &r.cancel {
        println!(
            "  cancel     requested {}{}",
            output::datetime(cancel.requested_at),
            cancel
                .reason
                .as_deref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        );
    }
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
