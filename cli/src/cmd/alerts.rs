//! `clawfleet alerts`: firing and pending alerts, the rules and their
//! values, silences (from the alerter, `clawfleet.api.alerts.*`).

use std::process::ExitCode;

use clawfleet_shared::alerts::{
    AlertsReply, ExpireRequest, RulesReply, SilenceInfo, SilenceRequest, SilencesReply,
};
use clawfleet_shared::subjects;

use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// Options of `clawfleet alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Also show recently resolved alerts.
    #[arg(long)]
    all: bool,
    #[command(subcommand)]
    command: Option<AlertsCommand>,
}

/// What else `alerts` does.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// The loaded rules, each with its condition and latest values.
    Rules,
    /// Silence the alerts matching every matcher, for a while.
    Silence {
        /// `name=value`, `name!=value`, `name=~regex` or `name!~regex`; repeat for more.
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// How long (e.g. `2h`).
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// Why.
        #[arg(long)]
        comment: String,
        /// Who (default: the user running this).
        #[arg(long)]
        author: Option<String>,
    },
    /// List the silences.
    Silences,
    /// End a silence now.
    Expire {
        /// The silence's id.
        id: String,
    },
}

/// Runs `clawfleet alerts`.
pub async fn run(global: &Global, args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    match args.command {
        None => list(global, &api, args.all).await,
        Some(AlertsCommand::Rules) => rules(global, &api).await,
        Some(AlertsCommand::Silence {
            matchers,
            duration,
            comment,
            author,
        }) => {
            let request = SilenceRequest {
                matchers,
                starts_at: None,
                ends_at: None,
                duration: Some(duration),
                created_by: author
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "clawfleet".to_string()),
                comment,
            };
            let silence: SilenceInfo = api
                .request_json(subjects::API_ALERTS_SILENCE, &request)
                .await?;
            if global.json {
                output::print_json(&silence)?;
            } else {
                println!(
                    "silence {} {} until {}",
                    silence.id,
                    silence.state,
                    output::datetime(silence.ends_at)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(AlertsCommand::Silences) => {
            let reply: SilencesReply = api
                .request(subjects::API_ALERTS_SILENCES, bytes::Bytes::new())
                .await?;
            if global.json {
                output::print_json(&reply)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"]);
            for s in &reply.silences {
                table.row(vec![
                    s.id.clone(),
                    s.state.clone(),
                    s.matchers.join(", "),
                    output::datetime(s.ends_at),
                    s.created_by.clone(),
                    s.comment.clone(),
                ]);
            }
            table.print();
            Ok(ExitCode::SUCCESS)
        }
        Some(AlertsCommand::Expire { id }) => {
            let silence: SilenceInfo = api
                .request_json(subjects::API_ALERTS_EXPIRE, &ExpireRequest { id })
                .await?;
            if global.json {
                output::print_json(&silence)?;
            } else {
                println!("silence {} expired", silence.id);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(global: &Global, api: &Api, all: bool) -> anyhow::Result<ExitCode> {
    let mut reply: AlertsReply = api
        .request(subjects::API_ALERTS_LIST, bytes::Bytes::new())
        .await?;
    if !all {
        reply.alerts.retain(|a| a.state != "resolved");
    }
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    if reply.alerts.is_empty() {
        println!("no alerts");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "ALERT", "STATE", "SEVERITY", "LABELS", "VALUE", "SINCE", "SUMMARY",
    ]);
    for a in &reply.alerts {
        let name = a.labels.get("alertname").cloned().unwrap_or_default();
        let severity = a.labels.get("severity").cloned().unwrap_or_default();
        let labels: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut state = a.state.clone();
        if !a.silenced_by.is_empty() {
            state.push_str(" (silenced)");
        } else if a.inhibited {
            state.push_str(" (inhibited)");
        }
        table.row(vec![
            name,
            state,
            severity,
            labels.join(","),
            format!("{:.4}", a.value),
            output::ago(a.fired_at.unwrap_or(a.active_at)),
            a.annotations.get("summary").cloned().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

async fn rules(global: &Global, api: &Api) -> anyhow::Result<ExitCode> {
    let reply: RulesReply = api
        .request(subjects::API_ALERTS_RULES, bytes::Bytes::new())
        .await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["RULE", "SIGNAL", "CONDITION", "SEVERITY", "VALUES"]);
    for r in &reply.rules {
        let values = match &r.error {
            Some(e) => format!("unavailable: {e}"),
            None if r.values.is_empty() => "-".to_string(),
            None => r
                .values
                .iter()
                .take(5)
                .map(|v| {
                    let group: Vec<String> =
                        v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let mark = if v.holds { "!" } else { "" };
                    if group.is_empty() {
                        format!("{mark}{:.4}", v.value)
                    } else {
                        format!("{mark}{}: {:.4}", group.join(","), v.value)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        table.row(vec![
            r.name.clone(),
            r.signal.clone(),
            r.condition.clone(),
            r.severity.clone(),
            values,
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
