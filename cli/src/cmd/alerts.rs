//! `clawfleet alerts`: firing and pending alerts, the rules and their
//! values, silences (from the alerter, `clawfleet.api.alerts.*`).

use std::process::ExitCode;

use clawfleet_shared::alerts::{
    AlertInfo, AlertsReply, ExpireRequest, NotificationRecord, RulesReply, SilenceInfo,
    SilenceRequest, SilencesReply, TestReply, TestRequest,
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
    /// Evaluate one rule now and show the alerts it would make (nothing is
    /// changed or sent).
    Test {
        /// The rule's name.
        rule: String,
    },
    /// Alert transitions and notifications, oldest first (from `CLAWFLEET_EVENTS`).
    History {
        /// How far back.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Most entries shown (the latest ones).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
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
        Some(AlertsCommand::Test { rule }) => test(global, &api, rule).await,
        Some(AlertsCommand::History { since, limit }) => history(global, &api, since, limit).await,
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

async fn test(global: &Global, api: &Api, rule: String) -> anyhow::Result<ExitCode> {
    let reply: TestReply = api
        .request_json(subjects::API_ALERTS_TEST, &TestRequest { rule })
        .await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = &reply.rule;
    println!("{} ({}): {} {}", r.name, r.signal, r.condition, r.severity);
    if let Some(e) = &r.error {
        println!("signal unavailable: {e}");
        return Ok(ExitCode::from(1));
    }
    let mut table = Table::new(&["GROUP", "VALUE", "HOLDS"]);
    for v in &r.values {
        let group: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.row(vec![
            if group.is_empty() {
                "fleet".to_string()
            } else {
                group.join(",")
            },
            format!("{:.4}", v.value),
            if v.holds { "yes" } else { "no" }.to_string(),
        ]);
    }
    table.print();
    if reply.alerts.is_empty() {
        println!("\nit would make no alert now");
    }
    for a in &reply.alerts {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let muted = if !a.silenced_by.is_empty() {
            format!(" (silenced by {})", a.silenced_by.join(", "))
        } else if a.inhibited {
            " (inhibited)".to_string()
        } else {
            String::new()
        };
        println!("\nwould be {}{muted}: {{{}}}", a.state, labels.join(", "));
        for (k, v) in &a.annotations {
            println!("  {k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(
    global: &Global,
    api: &Api,
    since: std::time::Duration,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    let stream = api
        .jetstream()
        .get_stream(subjects::STREAM_EVENTS)
        .await
        .map_err(|e| anyhow::anyhow!("while opening {}: {e}", subjects::STREAM_EVENTS))?;
    let last = stream.cached_info().state.last_sequence;
    let start = clawfleet_shared::timefmt::now() - since;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::ALERT_EVENTS_ALL.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await?;
    let mut rows: std::collections::VecDeque<(String, String)> = Default::default();
    let mut seen = 0u64;
    while seen < pending {
        let Ok(Some(Ok(msg))) =
            tokio::time::timeout(std::time::Duration::from_secs(5), messages.next()).await
        else {
            break;
        };
        seen += 1;
        if msg.info().is_ok_and(|i| i.stream_sequence > last) {
            break;
        }
        let subject = msg.subject.to_string();
        let line = if subject.starts_with("clawfleet.events.alert.notified.") {
            match serde_json::from_slice::<NotificationRecord>(&msg.payload) {
                Ok(n) => format!(
                    "{}  notified {} {} ({} firing, {} resolved){}",
                    output::datetime(n.time),
                    n.receiver,
                    n.group_key,
                    n.firing.len(),
                    n.resolved.len(),
                    match (&n.delivered, &n.error) {
                        (true, _) => String::new(),
                        (false, e) => format!(": NOT DELIVERED {}", e.as_deref().unwrap_or("")),
                    }
                ),
                Err(_) => continue,
            }
        } else {
            match serde_json::from_slice::<AlertInfo>(&msg.payload) {
                Ok(a) => {
                    let labels: Vec<String> = a
                        .labels
                        .iter()
                        .filter(|(k, _)| k.as_str() != "alertname")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let at = msg.info().map(|i| i.published).unwrap_or(a.active_at);
                    format!(
                        "{}  {:<8} {} {{{}}} value {:.4}",
                        output::datetime(at),
                        a.state,
                        a.labels.get("alertname").map_or("", String::as_str),
                        labels.join(", "),
                        a.value
                    )
                }
                Err(_) => continue,
            }
        };
        rows.push_back((subject, line));
        if rows.len() > limit as usize {
            rows.pop_front();
        }
    }
    if global.json {
        let lines: Vec<&str> = rows.iter().map(|(_, l)| l.as_str()).collect();
        output::print_json(&lines)?;
    } else if rows.is_empty() {
        println!(
            "no alert activity in the last {}",
            humantime::format_duration(since)
        );
    } else {
        for (_, line) in rows {
            println!("{line}");
        }
    }
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
