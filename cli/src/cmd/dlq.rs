//! `clawfleet dlq list`: dead letters, newest first.

use std::process::ExitCode;

use clawfleet_shared::api::{DlqListReply, DlqListRequest, DlqReason};
use clawfleet_shared::subjects;

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// `clawfleet dlq ...`
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only those with this reason.
        #[arg(long, value_enum)]
        reason: Option<Reason>,
        /// At most this many (the dispatcher caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Why a task was dead-lettered (the flag's spelling of [`DlqReason`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Reason {
    /// Refused by validation.
    Rejected,
    /// Failed its last attempt, or failed fatally.
    Failed,
    /// Could not be decoded.
    Poison,
}

impl From<Reason> for DlqReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Rejected => DlqReason::Rejected,
            Reason::Failed => DlqReason::Failed,
            Reason::Poison => DlqReason::Poison,
        }
    }
}

/// Runs `dlq list`.
pub async fn run(global: &Global, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let DlqCommand::List {
        tenant,
        reason,
        limit,
    } = cmd;
    let api = Api::connect(global.url()).await?;
    let request = DlqListRequest {
        tenant,
        reason: reason.map(DlqReason::from),
        limit: Some(limit),
    };
    let reply: DlqListReply = api.request_json(subjects::API_DLQ_LIST, &request).await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.entries.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["time", "reason", "tenant", "id", "code", "message"]);
    for e in &reply.entries {
        table.row(vec![
            output::datetime(e.time),
            e.reason.as_str().to_string(),
            e.tenant.clone(),
            output::or_dash(e.id.as_deref()),
            e.error.code.to_string(),
            e.error.message.clone(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
