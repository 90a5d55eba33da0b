//! `clawfleet agents`: every agent with its health, workload and failure
//! rate (from the health monitor), and quarantine control.
//!
//! Without a health monitor it falls back to the dispatcher's list of
//! registered agents, whose health is then unknown.

use std::process::ExitCode;

use clawfleet_shared::agent::{AgentInfo, AgentState};
use clawfleet_shared::api::AgentsReply;
use clawfleet_shared::health::{AgentControl, AgentStatus, HealthEntry, HealthState};
use clawfleet_shared::{subjects, ErrorCode};

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// Options of `clawfleet agents`.
#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Only agents that are quarantined, not healthy, escalated, or failing
    /// more than the fleet average.
    #[arg(long)]
    failing: bool,
    #[command(subcommand)]
    command: Option<AgentsCommand>,
}

/// Quarantine control.
#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Take an agent out of the pool until released (it finishes what it runs).
    Quarantine {
        /// Agent id.
        agent_id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put a quarantined agent back in the pool.
    Release {
        /// Agent id.
        agent_id: String,
    },
}

/// Runs `clawfleet agents`.
pub async fn run(global: &Global, args: AgentsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    match args.command {
        Some(AgentsCommand::Quarantine { agent_id, reason }) => {
            control(
                global,
                &api,
                subjects::API_AGENT_QUARANTINE,
                agent_id,
                reason,
            )
            .await
        }
        Some(AgentsCommand::Release { agent_id }) => {
            control(global, &api, subjects::API_AGENT_RELEASE, agent_id, None).await
        }
        None => list(global, &api, args.failing).await,
    }
}

async fn control(
    global: &Global,
    api: &Api,
    subject: &'static str,
    agent_id: String,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let entry: Option<HealthEntry> = api
        .request_json(subject, &AgentControl { agent_id, reason })
        .await?;
    if global.json {
        output::print_json(&entry)?;
    } else if let Some(e) = entry {
        match &e.quarantine {
            Some(q) => println!("{} quarantined: {}", e.agent_id, q.reason),
            None => println!("{} released; it takes work again", e.agent_id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(global: &Global, api: &Api, failing: bool) -> anyhow::Result<ExitCode> {
    let state = match api.fleet_state().await {
        Ok(Ok(state)) => state,
        // No health monitor: the registrations alone, health unknown.
        Err(e)
            if e.downcast_ref::<clawfleet_shared::ErrorBody>()
                .is_some_and(|b| b.code == ErrorCode::Unavailable) =>
        {
            let reply: AgentsReply = api.agents().await?;
            return registered_only(global, reply.agents, failing);
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(e),
    };
    let fleet_rate = state.fleet_failure_rate;
    let mut state = state;
    state
        .agents
        .retain(|a| !failing || is_failing(a, fleet_rate));
    if global.json {
        output::print_json(&state)?;
        return Ok(ExitCode::SUCCESS);
    }
    let agents: Vec<&AgentStatus> = state.agents.iter().collect();
    if agents.is_empty() {
        println!(
            "{}",
            if failing {
                "no failing agents"
            } else {
                "no agents"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "id",
        "health",
        "state",
        "capabilities",
        "region",
        "in-flight",
        "done",
        "failed",
        "fail rate",
        "restarts",
        "last seen",
        "why",
    ]);
    for a in agents {
        let h = &a.health;
        let mut health = h.state.to_string();
        if h.quarantine.is_some() {
            health.push_str(" quarantined");
        }
        if h.escalated {
            health.push_str(" escalated");
        }
        let why = match &h.quarantine {
            Some(q) => q.reason.clone(),
            None if h.state == HealthState::Healthy && !h.escalated => "-".to_string(),
            None => h.reason.clone(),
        };
        let i = a.info.as_ref();
        table.row(vec![
            h.agent_id.clone(),
            health,
            i.map(|i| state_name(i).to_string())
                .unwrap_or_else(|| "gone".into()),
            i.map(|i| output::list(&i.capabilities)).unwrap_or_default(),
            output::or_dash(i.and_then(|i| i.region.as_deref())),
            i.map(|i| format!("{}/{}", i.in_flight, i.max_concurrency))
                .unwrap_or_default(),
            i.map(|i| i.completed.to_string()).unwrap_or_default(),
            i.map(|i| i.failed.to_string()).unwrap_or_default(),
            format!(
                "{:.0}% of {}",
                a.stats.failure_rate * 100.0,
                a.stats.attempts
            ),
            i.map(|i| i.restarts.to_string()).unwrap_or_default(),
            i.map(|i| output::ago(i.last_seen)).unwrap_or_default(),
            why,
        ]);
    }
    table.print();
    println!(
        "fleet failure rate {:.1}% over the last {}",
        fleet_rate * 100.0,
        state.window
    );
    Ok(ExitCode::SUCCESS)
}

/// Quarantined, escalated, not healthy, or failing more than the fleet.
fn is_failing(a: &AgentStatus, fleet_rate: f64) -> bool {
    a.health.quarantine.is_some()
        || a.health.escalated
        || a.health.state != HealthState::Healthy
        || (a.stats.attempts > 0 && a.stats.failure_rate > fleet_rate)
}

fn state_name(i: &AgentInfo) -> &'static str {
    match (i.state, i.pulling) {
        (AgentState::Draining, _) => "draining",
        (AgentState::Ready, true) => "pulling",
        (AgentState::Ready, false) => "paused",
    }
}

fn registered_only(
    global: &Global,
    agents: Vec<AgentInfo>,
    failing: bool,
) -> anyhow::Result<ExitCode> {
    if failing {
        anyhow::bail!("--failing needs a health monitor; none is running");
    }
    if global.json {
        output::print_json(&AgentsReply {
            agents,
            next_cursor: None,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if agents.is_empty() {
        println!("no agents registered");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "id",
        "state",
        "capabilities",
        "region",
        "in-flight",
        "completed",
        "failed",
        "pid",
        "last seen",
    ]);
    for a in &agents {
        table.row(vec![
            a.agent_id.clone(),
            state_name(a).to_string(),
            output::list(&a.capabilities),
            output::or_dash(a.region.as_deref()),
            format!("{}/{}", a.in_flight, a.max_concurrency),
            a.completed.to_string(),
            a.failed.to_string(),
            a.pid.to_string(),
            output::ago(a.last_seen),
        ]);
    }
    table.print();
    println!("(no health monitor is running: health unknown)");
    Ok(ExitCode::SUCCESS)
}
