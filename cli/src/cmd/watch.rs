//! `clawfleet watch`: task lifecycle events as they happen, one per line.
//!
//! A plain (core NATS) subscription: it shows what happens from now on and
//! costs the server nothing to keep. The events stream holds the history
//! for tools that need it.

use std::process::ExitCode;

use clawfleet_shared::events::TaskEvent;
use clawfleet_shared::subjects;
use futures::StreamExt;

use super::Global;
use crate::client::Api;
use crate::output;

/// Options of `clawfleet watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only this tenant's tasks.
    #[arg(long)]
    tenant: Option<String>,
}

/// Prints events until Ctrl-C.
pub async fn run(global: &Global, args: WatchArgs) -> anyhow::Result<ExitCode> {
    let subject = match &args.tenant {
        Some(tenant) => subjects::task_event("*", tenant),
        None => subjects::TASK_EVENTS_ALL.to_string(),
    };
    let api = Api::connect(global.url()).await?;
    let mut events = api.client().subscribe(subject.clone()).await?;
    if !global.json {
        eprintln!("watching {subject} on {} (Ctrl-C to stop)", api.url());
    }
    loop {
        let msg = tokio::select! {
            m = events.next() => match m {
                Some(m) => m,
                None => anyhow::bail!("the connection to {} closed", api.url()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        if global.json {
            println!("{}", String::from_utf8_lossy(&msg.payload));
            continue;
        }
        match serde_json::from_slice::<TaskEvent>(&msg.payload) {
            Ok(event) => println!("{}", line(&event)),
            Err(e) => eprintln!("unreadable event on {}: {e}", msg.subject),
        }
    }
}

/// `05:34:14.368  started    01J…  acme  attempt=1  agent=coder-1`
fn line(e: &TaskEvent) -> String {
    let mut out = format!(
        "{}  {:<9}  {}  {}",
        output::clock(e.time),
        e.kind.as_str(),
        e.id.as_deref().unwrap_or("-"),
        e.tenant
    );
    if let Some(attempt) = e.attempt {
        out.push_str(&format!("  attempt={attempt}"));
    }
    if let Some(agent) = &e.agent {
        out.push_str(&format!("  agent={agent}"));
    }
    if let Some(ms) = e.retry_in_ms {
        out.push_str(&format!("  retry_in={ms}ms"));
    }
    if let Some(error) = &e.error {
        out.push_str(&format!("  error={error}"));
    }
    out
}
