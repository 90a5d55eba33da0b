//! `clawfleet queues`: how much work waits in each queue, and in intake.

use std::process::ExitCode;

use bytes::Bytes;
use clawfleet_shared::api::QueuesReply;
use clawfleet_shared::subjects;

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// Shows queue depths.
pub async fn run(global: &Global) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let reply: QueuesReply = api.request(subjects::API_QUEUES_LIST, Bytes::new()).await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.queues.is_empty() {
        println!("no queues yet (one is created when a task is first routed to it)");
    } else {
        let mut table = Table::new(&["priority", "region", "requires", "waiting", "running"]);
        for q in &reply.queues {
            table.row(vec![
                q.priority.to_string(),
                output::or_dash(q.region.as_deref()),
                output::list(&q.requires),
                q.waiting.to_string(),
                q.running.to_string(),
            ]);
        }
        table.print();
    }
    println!("intake pending: {}", reply.intake_pending);
    Ok(ExitCode::SUCCESS)
}
