//! `clawfleet agents`: every agent with its health, workload and failure
//! rate (from the health monitor), and quarantine control.
//!
//! Without a health monitor it falls back to the dispatcher's list of
//! registered agents, whose health is then unknown.
//!
//! `--failing` keeps the agents the monitor does not judge healthy, and the
//! healthy ones that fail clearly more than their peers on comparable work
//! ([`fails_more_than_peers`]), each with the reason.

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
    /// clearly more than their peers (the agents with the same capabilities
    /// and region), with the reason.
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
    let reasons: Vec<Option<String>> = state
        .agents
        .iter()
        .map(|a| why_failing(a, &state.agents))
        .collect();
    let shown: Vec<(&AgentStatus, Option<&String>)> = state
        .agents
        .iter()
        .zip(&reasons)
        .map(|(a, why)| (a, why.as_ref()))
        .filter(|(_, why)| !failing || why.is_some())
        .collect();
    if global.json {
        // The monitor's view, each agent with why it counts as failing.
        let agents: Vec<serde_json::Value> = shown
            .iter()
            .map(|(a, why)| {
                let mut value = serde_json::to_value(a)?;
                if let (Some(why), Some(object)) = (why, value.as_object_mut()) {
                    object.insert("failing".into(), why.as_str().into());
                }
                Ok(value)
            })
            .collect::<serde_json::Result<_>>()?;
        output::print_json(&serde_json::json!({
            "agents": agents,
            "fleet_failure_rate": state.fleet_failure_rate,
            "window": state.window,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
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
        "pid",
        "in-flight",
        "done",
        "failed",
        "fail rate",
        "restarts",
        "last seen",
        "why",
    ]);
    for (a, failing_why) in shown {
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
            None if h.state == HealthState::Healthy && !h.escalated => {
                failing_why.cloned().unwrap_or_else(|| "-".to_string())
            }
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
            i.map(|i| i.pid.to_string()).unwrap_or_default(),
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

/// Why `a` counts as failing, if it does: quarantined, escalated, not
/// healthy, or failing clearly more than its peers among `all`.
fn why_failing(a: &AgentStatus, all: &[AgentStatus]) -> Option<String> {
    let h = &a.health;
    if let Some(q) = &h.quarantine {
        return Some(format!("quarantined: {}", q.reason));
    }
    if h.escalated {
        return Some(format!("escalated: {}", h.reason));
    }
    if h.state != HealthState::Healthy {
        return Some(format!("{}: {}", h.state, h.reason));
    }
    fails_more_than_peers(a, all)
}

/// Attempts an agent, and its peers together, need in the window before
/// their failure rates are compared at all.
const MIN_ATTEMPTS: u64 = 20;
/// How much higher, in absolute terms, an agent's failure rate must be than
/// its peers': a few tasks that fail by design on whichever agent runs them
/// stay below it.
const MARGIN: f64 = 0.10;
/// How far apart the two rates must be, in standard errors of their
/// difference (a two-proportion z-test), so that the gap is not chance:
/// with small samples a handful of failures landing on one agent is.
const MIN_Z: f64 = 3.0;

/// Whether `a` fails clearly more than its peers, and how, in words.
///
/// Peers are the other agents with the same capabilities and region: they
/// are offered the same queues, so they run comparable work. An agent with
/// no such peer (or too few attempts among them) is compared with the rest
/// of the fleet instead, and the reason says so.
fn fails_more_than_peers(a: &AgentStatus, all: &[AgentStatus]) -> Option<String> {
    let info = a.info.as_ref()?;
    if a.stats.attempts < MIN_ATTEMPTS {
        return None;
    }
    let others = all
        .iter()
        .filter(|o| o.health.agent_id != a.health.agent_id);
    let pooled = |agents: Vec<&AgentStatus>| {
        let attempts: u64 = agents.iter().map(|o| o.stats.attempts).sum();
        let failures: u64 = agents.iter().map(|o| o.stats.failures).sum();
        (agents.len(), attempts, failures)
    };
    let peers = pooled(
        others
            .clone()
            .filter(|o| {
                o.info
                    .as_ref()
                    .is_some_and(|i| i.capabilities == info.capabilities && i.region == info.region)
            })
            .collect(),
    );
    let profile = format!(
        "{}{}",
        output::list(&info.capabilities),
        info.region
            .as_deref()
            .map(|r| format!(" in {r}"))
            .unwrap_or_default()
    );
    let ((count, attempts, failures), whom) = if peers.1 >= MIN_ATTEMPTS {
        let whom = format!(
            "its {} peer{} with the same capabilities ({profile})",
            peers.0,
            if peers.0 == 1 { "" } else { "s" }
        );
        (peers, whom)
    } else {
        let rest = pooled(others.collect());
        let whom = format!(
            "the rest of the fleet (no other agent with {profile} has {MIN_ATTEMPTS} attempts)"
        );
        (rest, whom)
    };
    if count == 0 || attempts < MIN_ATTEMPTS {
        return None;
    }
    let own = a.stats.failures as f64 / a.stats.attempts as f64;
    let theirs = failures as f64 / attempts as f64;
    let pooled_rate = (a.stats.failures + failures) as f64 / (a.stats.attempts + attempts) as f64;
    let se = (pooled_rate
        * (1.0 - pooled_rate)
        * (1.0 / a.stats.attempts as f64 + 1.0 / attempts as f64))
        .sqrt();
    if own - theirs < MARGIN || se == 0.0 || (own - theirs) / se < MIN_Z {
        return None;
    }
    Some(format!(
        "fails {:.0}% of {} attempts, against {:.0}% of {attempts} for {whom}",
        own * 100.0,
        a.stats.attempts,
        theirs * 100.0,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, caps: &[&str], attempts: u64, failures: u64) -> AgentStatus {
        let at = "2026-11-25T06:00:00Z";
        serde_json::from_value(serde_json::json!({
            "info": {
                "agent_id": id, "capabilities": caps, "max_concurrency": 4, "in_flight": 0,
                "executor": "sim", "state": "ready", "version": "0", "host": "h", "pid": 1,
                "completed": attempts - failures, "failed": failures,
                "started_at": at, "last_seen": at,
            },
            "health": {"agent_id": id, "state": "healthy", "reason": "", "since": at},
            "stats": {
                "attempts": attempts, "failures": failures, "restarts": 0,
                "failure_rate": failures as f64 / attempts.max(1) as f64,
            },
        }))
        .expect("an agent status")
    }

    fn flagged(all: &[AgentStatus]) -> Vec<(String, String)> {
        all.iter()
            .filter_map(|a| Some((a.health.agent_id.clone(), why_failing(a, all)?)))
            .collect()
    }

    #[test]
    fn a_few_failures_by_design_flag_no_one() {
        // Three tasks that fail wherever they run, out of 1,025.
        let fleet = [
            agent("general-1", &["general"], 340, 3),
            agent("general-2", &["general"], 345, 0),
            agent("general-3", &["general"], 340, 0),
        ];
        assert_eq!(flagged(&fleet), []);
        // Nor does chance on a small sample: 3 of 40 against 0 of 80.
        let small = [
            agent("general-1", &["general"], 40, 3),
            agent("general-2", &["general"], 80, 0),
        ];
        assert_eq!(flagged(&small), []);
    }

    #[test]
    fn an_agent_failing_more_than_its_peers_is_flagged_with_the_comparison() {
        let fleet = [
            agent("general-1", &["general"], 60, 24),
            agent("general-2", &["general"], 60, 2),
            agent("general-3", &["general"], 60, 1),
            // Failing as much as its own peers: the work, not the agent.
            agent("coder-1", &["code", "general"], 50, 20),
            agent("coder-2", &["code", "general"], 50, 22),
        ];
        assert_eq!(
            flagged(&fleet),
            [(
                "general-1".to_string(),
                "fails 40% of 60 attempts, against 2% of 120 for its 2 peers with the same \
                 capabilities (general)"
                    .to_string()
            )]
        );
    }

    #[test]
    fn without_peers_an_agent_is_compared_with_the_rest_of_the_fleet_and_needs_a_sample() {
        let fleet = [
            agent("coder-1", &["code"], 30, 15),
            agent("general-1", &["general"], 100, 2),
        ];
        let why = flagged(&fleet);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0]
                .1
                .ends_with("for the rest of the fleet (no other agent with code has 20 attempts)"),
            "{why:?}"
        );
        let few = [
            agent("coder-1", &["code"], 19, 19),
            agent("general-1", &["general"], 100, 0),
        ];
        assert_eq!(flagged(&few), []);
    }
}
