//! `clawfleet agents`: the agents whose registration has not expired.

use std::process::ExitCode;

use bytes::Bytes;
use clawfleet_shared::agent::AgentState;
use clawfleet_shared::api::AgentsReply;
use clawfleet_shared::subjects;

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// Lists the agents.
pub async fn run(global: &Global) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let reply: AgentsReply = api.request(subjects::API_AGENTS_LIST, Bytes::new()).await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.agents.is_empty() {
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
    for a in &reply.agents {
        table.row(vec![
            a.agent_id.clone(),
            match a.state {
                AgentState::Ready => "ready",
                AgentState::Draining => "draining",
            }
            .to_string(),
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
    Ok(ExitCode::SUCCESS)
}
