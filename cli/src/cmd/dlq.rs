//! `clawfleet dlq list|show|replay`: dead letters, newest first; one in
//! full; and submitting them again as new tasks.

use std::process::ExitCode;

use clawfleet_shared::api::{
    DlqEntry, DlqGetRequest, DlqListReply, DlqListRequest, DlqReason, DlqReplayReply,
    DlqReplayRequest,
};
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::Timestamp;

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// `clawfleet dlq ...`
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filters: Filters,
        /// At most this many (the dispatcher caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter in full, with the task as it was stored.
    Show {
        /// Its sequence (the `seq` of `dlq list --json`, or the first column of `dlq list`).
        seq: u64,
        /// Report it as not found unless it belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Submit dead letters again as new tasks (id `<original>-r<seq>`), by
    /// sequence or by filter. Replaying an entry twice does not run it twice.
    Replay {
        /// The entries' sequences; without them, the filters choose.
        seqs: Vec<u64>,
        #[command(flatten)]
        filters: Filters,
        /// Without sequences, at most this many, the newest (the dispatcher caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Check and show what would be replayed; submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Filters shared by `list` and `replay`.
#[derive(Debug, clap::Args)]
pub struct Filters {
    /// Only this tenant's.
    #[arg(long)]
    tenant: Option<String>,
    /// Only those with this reason.
    #[arg(long, value_enum, ignore_case = true)]
    reason: Option<Reason>,
    /// Only those dead-lettered since this time: RFC 3339, or a duration back from now (`1h`).
    #[arg(long, value_parser = super::logs::parse_when, value_name = "TIME|DURATION")]
    since: Option<Timestamp>,
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

/// Runs `dlq list`, `dlq show` or `dlq replay`.
pub async fn run(global: &Global, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    match cmd {
        DlqCommand::List { filters, limit } => list(global, &api, filters, limit).await,
        DlqCommand::Show { seq, tenant } => show(global, &api, seq, tenant).await,
        DlqCommand::Replay {
            seqs,
            filters,
            limit,
            dry_run,
        } => {
            let request = DlqReplayRequest {
                seqs,
                tenant: filters.tenant,
                reason: filters.reason.map(DlqReason::from),
                since: filters.since,
                limit: Some(limit),
                dry_run,
            };
            replay(global, &api, request).await
        }
    }
}

async fn list(
    global: &Global,
    api: &Api,
    filters: Filters,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let mut request = DlqListRequest {
        tenant: filters.tenant,
        reason: filters.reason.map(DlqReason::from),
        limit: Some(limit),
        since: filters.since,
        cursor: None,
    };
    let mut reply: DlqListReply = api.request_json(subjects::API_DLQ_LIST, &request).await?;
    // A page may end early to stay within the reply's byte budget.
    while reply.entries.len() < limit {
        let Some(cursor) = reply.next_cursor.take() else {
            break;
        };
        request.cursor = Some(cursor);
        request.limit = Some(limit - reply.entries.len());
        let next: DlqListReply = api.request_json(subjects::API_DLQ_LIST, &request).await?;
        reply.entries.extend(next.entries);
        reply.next_cursor = next.next_cursor;
        reply.truncated = next.truncated;
    }
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.entries.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["seq", "time", "reason", "tenant", "id", "code", "message"]);
    for e in &reply.entries {
        table.row(vec![
            e.seq.map(|s| s.to_string()).unwrap_or_default(),
            output::datetime(e.time),
            e.reason.as_str().to_string(),
            e.tenant.clone(),
            output::or_dash(e.id.as_deref()),
            e.failure.code.to_string(),
            e.failure.message.clone(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

async fn show(
    global: &Global,
    api: &Api,
    seq: u64,
    tenant: Option<String>,
) -> anyhow::Result<ExitCode> {
    let entry: DlqEntry = api
        .request_json(subjects::API_DLQ_GET, &DlqGetRequest { seq, tenant })
        .await?;
    if global.json {
        output::print_json(&entry)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("dead letter {seq}  {}", entry.reason.as_str());
    println!("  time     {}", output::datetime(entry.time));
    println!("  tenant   {}", entry.tenant);
    println!("  id       {}", output::or_dash(entry.id.as_deref()));
    println!("  subject  {}", entry.subject);
    println!("  error    {}", entry.failure);
    if let Some(body) = &entry.body {
        println!(
            "body: {} bytes, sha256 {} (too large to keep; its first {} bytes follow)",
            body.bytes,
            body.sha256,
            body.head.len()
        );
        println!("  {}", body.head.escape_debug());
        return Ok(ExitCode::SUCCESS);
    }
    println!("task:");
    for line in serde_json::to_string_pretty(&entry.task)?.lines() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(global: &Global, api: &Api, request: DlqReplayRequest) -> anyhow::Result<ExitCode> {
    let reply: DlqReplayReply = api.request_json(subjects::API_DLQ_REPLAY, &request).await?;
    let refused = reply.entries.iter().filter(|e| e.error.is_some()).count();
    if global.json {
        output::print_json(&reply)?;
    } else if reply.entries.is_empty() {
        println!("no dead letters to replay");
    } else {
        let mut table = Table::new(&["seq", "reason", "tenant", "original", "new id", "outcome"]);
        for e in &reply.entries {
            let outcome = match (&e.error, e.status) {
                (Some(error), _) => format!("error {error}"),
                _ if e.duplicate => format!(
                    "already replayed ({})",
                    e.status.map(|s| s.to_string()).unwrap_or_default()
                ),
                _ if reply.dry_run => "would be submitted".to_string(),
                (None, Some(status)) => status.to_string(),
                (None, None) => "-".to_string(),
            };
            table.row(vec![
                e.seq.to_string(),
                e.reason.map(|r| r.as_str().to_string()).unwrap_or_default(),
                output::or_dash(e.tenant.as_deref()),
                output::or_dash(e.original_id.as_deref()),
                output::or_dash(e.id.as_deref()),
                outcome,
            ]);
        }
        table.print();
        if reply.dry_run {
            println!("dry run: nothing was submitted");
        }
    }
    // Like `batch`: an entry that could not be replayed is a failure of the command.
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
