//! `clawfleet queues`: how much work waits in each queue, and in intake;
//! `clawfleet queues pause|resume`: hold and release queues.

use std::process::ExitCode;

use clawfleet_shared::api::{PauseRule, PausedReply, QueuesReply};
use clawfleet_shared::{subjects, Priority};

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// Options of `clawfleet queues`.
#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    #[command(subcommand)]
    command: Option<QueuesCommand>,
}

/// Pause control.
#[derive(Debug, clap::Subcommand)]
pub enum QueuesCommand {
    /// Pause every queue matching all the filters given (or every queue,
    /// with `--all`). Paused work stays queued, untouched; running tasks finish.
    Pause(RuleArgs),
    /// Remove the pause rule with exactly these filters.
    Resume(RuleArgs),
}

/// Which queues a pause rule covers.
#[derive(Debug, clap::Args)]
pub struct RuleArgs {
    /// Only this tenant's queues.
    #[arg(long)]
    tenant: Option<String>,
    /// Only queues of this priority: critical, high, normal or low (any case).
    #[arg(long, value_parser = parse_priority)]
    priority: Option<Priority>,
    /// Only queues whose tasks require this capability.
    #[arg(long)]
    capability: Option<String>,
    /// Every queue (the rule with no filter, which must be asked for).
    #[arg(long, conflicts_with_all = ["tenant", "priority", "capability"])]
    all: bool,
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    s.to_lowercase().parse()
}

/// Runs `clawfleet queues`.
pub async fn run(global: &Global, args: QueuesArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let (subject, rule) = match args.command {
        None => return list(global, &api).await,
        Some(QueuesCommand::Pause(r)) => (subjects::API_QUEUES_PAUSE, r),
        Some(QueuesCommand::Resume(r)) => (subjects::API_QUEUES_RESUME, r),
    };
    let rule = PauseRule {
        tenant: rule.tenant,
        priority: rule.priority,
        capability: rule.capability,
        all: rule.all,
    };
    let reply: PausedReply = api.request_json(subject, &rule).await?;
    if global.json {
        output::print_json(&reply)?;
    } else if reply.paused.is_empty() {
        println!("no queue is paused");
    } else {
        println!("paused:");
        for r in &reply.paused {
            println!("  {}", r);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(global: &Global, api: &Api) -> anyhow::Result<ExitCode> {
    let reply: QueuesReply = api.queues().await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.queues.is_empty() {
        println!("no queues yet (one is created when a task is first routed to it)");
    } else {
        let mut table = Table::new(&[
            "tenant", "priority", "region", "requires", "waiting", "running", "delayed", "paused",
        ]);
        for q in &reply.queues {
            table.row(vec![
                q.tenant.clone(),
                q.priority.to_string(),
                output::or_dash(q.region.as_deref()),
                output::list(&q.requires),
                q.waiting.to_string(),
                q.running.to_string(),
                q.delayed.to_string(),
                if q.paused { "paused" } else { "-" }.to_string(),
            ]);
        }
        table.print();
    }
    println!("intake pending: {}", reply.intake_pending);
    if !reply.capped.is_empty() {
        let parts: Vec<String> = reply
            .capped
            .iter()
            .map(|t| format!("{} {}/{}", t.tenant, t.running, t.max_running))
            .collect();
        println!("running of max_running: {}", parts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
