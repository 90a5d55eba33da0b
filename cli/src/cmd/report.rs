//! `clawfleet report` and `clawfleet cost`: fleet analytics from the log
//! aggregator's attempt history (`clawfleet.api.analytics.*`).
//!
//! `report` prints, for the window: success rate, latency and attempts per
//! group (agent by default), the agents below the rest of the fleet, each
//! capability against its 7-day baseline, and the task characteristics
//! that fail most. `cost` prints what the attempts cost per group,
//! including the share of failed attempts and of retries.

use std::process::ExitCode;

use clawfleet_shared::analytics::{
    BaselinesReply, BaselinesRequest, BelowAverageReply, BelowAverageRequest, CorrelationsReply,
    CorrelationsRequest, GroupBy, GroupStats, SummaryReply, SummaryRequest, Window,
};
use clawfleet_shared::subjects;
use clawfleet_shared::timefmt::Timestamp;
use serde::Serialize;

use super::logs::parse_when;
use super::Global;
use crate::client::Api;
use crate::output::{self, Table};

/// The window flags both commands share.
#[derive(Debug, clap::Args)]
pub struct WindowArgs {
    /// Attempts that ended since then: a duration ago ("24h", "7d") or an RFC 3339 time [default: 24h].
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    since: Option<Timestamp>,
    /// Attempts that ended before then [default: now].
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    until: Option<Timestamp>,
    /// Only this tenant's attempts.
    #[arg(long)]
    tenant: Option<String>,
    /// Group by agent, capability, tenant, priority, model, region, hour, day or label:KEY.
    #[arg(long, value_name = "GROUPING", default_value = "agent", value_parser = parse_group)]
    by: GroupBy,
}

impl WindowArgs {
    fn window(&self) -> Window {
        Window {
            since: self.since,
            until: self.until,
            tenant: self.tenant.clone(),
        }
    }
}

fn parse_group(s: &str) -> Result<GroupBy, String> {
    // The grouping in any case; a label's key as written.
    let spelled = match s.split_once(':') {
        Some((kind, key)) => format!("{}:{key}", kind.to_lowercase()),
        None => s.to_lowercase(),
    };
    GroupBy::parse(&spelled).ok_or_else(|| {
        format!(
            "{s:?}: use agent, capability, tenant, priority, model, region, hour, day or label:KEY"
        )
    })
}

/// Options of `clawfleet report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    window: WindowArgs,
    /// Agents with fewer finished attempts are not compared with the fleet.
    #[arg(long, default_value_t = 20, value_name = "N")]
    min_attempts: u64,
}

/// Options of `clawfleet cost`.
#[derive(Debug, clap::Args)]
pub struct CostArgs {
    #[command(flatten)]
    window: WindowArgs,
}

#[derive(Serialize)]
struct FullReport {
    summary: SummaryReply,
    below_average: BelowAverageReply,
    baselines: BaselinesReply,
    correlations: CorrelationsReply,
}

/// Runs `clawfleet report`.
pub async fn report(global: &Global, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let window = args.window.window();
    let summary: SummaryReply = api
        .request_json(
            subjects::API_ANALYTICS_SUMMARY,
            &SummaryRequest {
                window: window.clone(),
                by: args.window.by.clone(),
            },
        )
        .await?;
    let below_average: BelowAverageReply = api
        .request_json(
            subjects::API_ANALYTICS_BELOW_AVERAGE,
            &BelowAverageRequest {
                window: window.clone(),
                min_attempts: args.min_attempts,
                ..BelowAverageRequest::default()
            },
        )
        .await?;
    let baselines: BaselinesReply = api
        .request_json(
            subjects::API_ANALYTICS_BASELINES,
            &BaselinesRequest {
                tenant: window.tenant.clone(),
                until: window.until,
                ..BaselinesRequest::default()
            },
        )
        .await?;
    let correlations: CorrelationsReply = api
        .request_json(
            subjects::API_ANALYTICS_CORRELATIONS,
            &CorrelationsRequest {
                window,
                ..CorrelationsRequest::default()
            },
        )
        .await?;
    let report = FullReport {
        summary,
        below_average,
        baselines,
        correlations,
    };
    if global.json {
        output::print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_report(&report);
    if !report.summary.priced {
        println!();
        println!("{NO_PRICES}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `cost` and `report` say when the log aggregator has no price table.
const NO_PRICES: &str =
    "No price table is configured, so every cost is 0: give the log aggregator \
     analytics.prices in its configuration, or start the fleet with `clawfleet up --prices FILE` \
     (see docs/configuration.md, \"Log aggregator\").";

fn rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

fn print_report(r: &FullReport) {
    let s = &r.summary;
    println!(
        "Attempts that ended {} .. {}",
        output::datetime(s.since),
        output::datetime(s.until)
    );
    let mut t = Table::new(&[
        "group", "attempts", "tasks", "success", "p50", "p95", "att/task", "failed", "stopped",
    ]);
    for g in s.groups.iter().chain(std::iter::once(&s.total)) {
        t.row(vec![
            g.key.clone(),
            g.attempts.to_string(),
            g.tasks.to_string(),
            rate(g.success_rate),
            ms(g.p50_ms),
            ms(g.p95_ms),
            format!("{:.2}", g.attempts_per_task),
            g.failed.to_string(),
            g.stopped.to_string(),
        ]);
    }
    t.print();

    let b = &r.below_average;
    println!();
    if b.below.is_empty() {
        println!(
            "No agent below the fleet average ({} agents compared; fleet success {}, median {}).",
            b.agents.len(),
            rate(b.fleet_success_rate),
            ms(b.fleet_p50_ms)
        );
    } else {
        println!("Agents below the rest of the fleet:");
        let mut t = Table::new(&["agent", "attempts", "success", "rest", "gap", "why"]);
        for a in &b.below {
            t.row(vec![
                a.agent.clone(),
                a.attempts.to_string(),
                rate(Some(a.success_rate)),
                rate(Some(a.others_success_rate)),
                format!("{:+.1} pts", -a.rate_gap * 100.0),
                a.reasons.join("; "),
            ]);
        }
        t.print();
    }

    let bl = &r.baselines;
    println!();
    println!(
        "Capabilities, last {} against the {} days before:",
        output::duration((bl.until - bl.recent_since).try_into().unwrap_or_default()),
        ((bl.recent_since - bl.baseline_since).whole_days())
    );
    let mut t = Table::new(&[
        "capability",
        "baseline success",
        "now",
        "baseline p95",
        "now",
        "deviation",
    ]);
    for c in &bl.capabilities {
        t.row(vec![
            c.capability.clone(),
            rate(c.baseline.success_rate),
            rate(c.recent.success_rate),
            ms(c.baseline.p95_ms),
            ms(c.recent.p95_ms),
            if c.deviations.is_empty() {
                "-".into()
            } else {
                c.deviations.join("; ")
            },
        ]);
    }
    t.print();

    let c = &r.correlations;
    println!();
    println!(
        "Failure rate by task characteristic (fleet: {}):",
        rate(c.fleet_failure_rate)
    );
    let mut t = Table::new(&["characteristic", "value", "attempts", "failure", "lift"]);
    for x in c.correlations.iter().take(15) {
        t.row(vec![
            x.characteristic.clone(),
            x.value.clone(),
            x.attempts.to_string(),
            rate(Some(x.failure_rate)),
            x.lift.map_or("-".into(), |l| format!("{l:.2}x")),
        ]);
    }
    t.print();
}

/// Runs `clawfleet cost`.
pub async fn cost(global: &Global, args: CostArgs) -> anyhow::Result<ExitCode> {
    let api = Api::connect(global.url()).await?;
    let reply: SummaryReply = api
        .request_json(
            subjects::API_ANALYTICS_COST,
            &SummaryRequest {
                window: args.window.window(),
                by: args.window.by.clone(),
            },
        )
        .await?;
    if global.json {
        output::print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Cost of attempts that ended {} .. {} ({})",
        output::datetime(reply.since),
        output::datetime(reply.until),
        reply.currency
    );
    let mut t = Table::new(&[
        "group",
        "attempts",
        "cost",
        "failed attempts",
        "retries",
        "tokens in",
        "tokens out",
        "agent time",
    ]);
    let money = |v: f64| format!("{v:.4}");
    let row = |g: &GroupStats| {
        vec![
            g.key.clone(),
            g.attempts.to_string(),
            money(g.cost),
            money(g.cost_failed),
            money(g.cost_retries),
            g.tokens_in.to_string(),
            g.tokens_out.to_string(),
            format!("{:.1} s", g.wall_seconds),
        ]
    };
    for g in &reply.groups {
        t.row(row(g));
    }
    t.row(row(&reply.total));
    t.print();
    if !reply.priced {
        println!("{NO_PRICES}");
    }
    Ok(ExitCode::SUCCESS)
}
