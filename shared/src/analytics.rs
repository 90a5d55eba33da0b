//! Fleet analytics and cost: the request and reply bodies of
//! `clawfleet.api.analytics.*`, answered by the log aggregator from the
//! attempt reports agents send (`clawfleet.events.attempt.<tenant>.<agent>`).
//!
//! Every query covers a time window (`since`/`until`, by the attempts' end
//! times; by default the last 24 hours) and can be narrowed to one tenant.
//! Latency percentiles come from a log-scale histogram with 16 buckets per
//! doubling, so they are within about 4.5% of the exact value.

use serde::{Deserialize, Serialize};

use crate::timefmt::{self, Timestamp};

/// What a summary or cost report is grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Agent id.
    Agent,
    /// Required capability set (`code+git`; `_` for none).
    Capability,
    /// Tenant.
    Tenant,
    /// Priority.
    Priority,
    /// Model reported by the executor (`-` when none).
    Model,
    /// Region the task was bound to (`_` for any).
    Region,
    /// Each value of one label: `{"label": "team"}` gives `team=web`, ...
    Label(String),
    /// Hour of the attempt's end (UTC, RFC 3339).
    Hour,
    /// Day of the attempt's end (UTC, `YYYY-MM-DD`).
    Day,
}

impl GroupBy {
    /// Parses the CLI form: `agent`, `capability`, `tenant`, `priority`,
    /// `model`, `region`, `hour`, `day` or `label:<key>`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "agent" => GroupBy::Agent,
            "capability" => GroupBy::Capability,
            "tenant" => GroupBy::Tenant,
            "priority" => GroupBy::Priority,
            "model" => GroupBy::Model,
            "region" => GroupBy::Region,
            "hour" => GroupBy::Hour,
            "day" => GroupBy::Day,
            other => {
                let key = other.strip_prefix("label:")?;
                if key.is_empty() {
                    return None;
                }
                GroupBy::Label(key.to_string())
            }
        })
    }
}

/// The window and scope every analytics request shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Start of the window (attempts that ended at or after it); default
    /// 24 hours before `until`.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    /// End of the window; default now.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Timestamp>,
    /// Only this tenant's attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `clawfleet.api.analytics.summary`: performance and cost per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRequest {
    /// Window and scope.
    #[serde(flatten)]
    pub window: Window,
    /// Grouping (default: agent).
    #[serde(default = "default_group")]
    pub by: GroupBy,
}

fn default_group() -> GroupBy {
    GroupBy::Agent
}

/// One group's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// The group's key (agent id, capability set, `label=value`...).
    pub key: String,
    /// Attempts that ended in the window.
    pub attempts: u64,
    /// Distinct tasks among them.
    pub tasks: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed or timed out.
    pub failed: u64,
    /// Attempts stopped before they could end (preempted, cancelled, handed back).
    pub stopped: u64,
    /// `succeeded / (succeeded + failed)`; absent with neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Median attempt wall time (succeeded and failed attempts), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    /// 95th percentile attempt wall time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<u64>,
    /// Attempts per task.
    pub attempts_per_task: f64,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Summed attempt wall time, seconds.
    pub wall_seconds: f64,
    /// Cost of every attempt, in the price table's currency.
    pub cost: f64,
    /// Of which: attempts that did not succeed.
    pub cost_failed: f64,
    /// Of which: attempts after the first (retries).
    pub cost_retries: f64,
}

/// Reply to a summary or cost request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryReply {
    /// The window used.
    #[serde(with = "timefmt")]
    pub since: Timestamp,
    /// The window used.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
    /// Currency of the cost figures.
    pub currency: String,
    /// Whether the log aggregator has a price table with any price above
    /// zero; without one every cost is 0.
    #[serde(default)]
    pub priced: bool,
    /// One row per group, largest number of attempts first (cost reports:
    /// highest cost first; time groupings: in time order).
    pub groups: Vec<GroupStats>,
    /// Everything in the window together.
    pub total: GroupStats,
    /// `true` when rows were left out (the last ones, in the reply's order)
    /// to keep the reply within the reply bound (see
    /// [`crate::api::reply_budget`]); narrow the window or the grouping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// `clawfleet.api.analytics.cost`: cost per group (default: agent).
pub type CostRequest = SummaryRequest;

/// `clawfleet.api.analytics.below_average`: agents doing clearly worse
/// than the rest of the fleet over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BelowAverageRequest {
    /// Window and scope.
    #[serde(flatten)]
    pub window: Window,
    /// Agents with fewer finished attempts are not judged.
    #[serde(default = "default_min_attempts")]
    pub min_attempts: u64,
    /// Flag an agent whose success rate is this much (absolute) below the
    /// rest of the fleet's.
    #[serde(default = "default_rate_margin")]
    pub rate_margin: f64,
    /// Flag an agent whose median latency is this many times the rest of
    /// the fleet's.
    #[serde(default = "default_latency_factor")]
    pub latency_factor: f64,
    /// ...and at least this many milliseconds slower (so that 3 ms against
    /// 2 ms is not news).
    #[serde(default = "default_min_latency_gap_ms")]
    pub min_latency_gap_ms: u64,
}

fn default_min_attempts() -> u64 {
    20
}
fn default_rate_margin() -> f64 {
    0.1
}
fn default_latency_factor() -> f64 {
    1.5
}
fn default_min_latency_gap_ms() -> u64 {
    10
}

impl Default for BelowAverageRequest {
    fn default() -> Self {
        Self {
            window: Window::default(),
            min_attempts: default_min_attempts(),
            rate_margin: default_rate_margin(),
            latency_factor: default_latency_factor(),
            min_latency_gap_ms: default_min_latency_gap_ms(),
        }
    }
}

/// One agent compared with the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentComparison {
    /// The agent.
    pub agent: String,
    /// Its finished attempts (succeeded + failed).
    pub attempts: u64,
    /// Its success rate.
    pub success_rate: f64,
    /// The rest of the fleet's success rate.
    pub others_success_rate: f64,
    /// `others_success_rate - success_rate` (positive: worse than the rest).
    pub rate_gap: f64,
    /// Its median latency, ms.
    pub p50_ms: Option<u64>,
    /// The rest of the fleet's median latency, ms.
    pub others_p50_ms: Option<u64>,
    /// `p50_ms / others_p50_ms`.
    pub latency_ratio: Option<f64>,
    /// Why it is flagged (empty: it is not).
    pub reasons: Vec<String>,
}

/// Reply to `below_average`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BelowAverageReply {
    /// The window used.
    #[serde(with = "timefmt")]
    pub since: Timestamp,
    /// The window used.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
    /// The fleet's success rate over the window.
    pub fleet_success_rate: Option<f64>,
    /// The fleet's median latency, ms.
    pub fleet_p50_ms: Option<u64>,
    /// Flagged agents, worst first.
    pub below: Vec<AgentComparison>,
    /// Every judged agent (flagged or not), by agent id.
    pub agents: Vec<AgentComparison>,
    /// `true` when rows were left out (the last ones, in the reply's order)
    /// to keep the reply within the reply bound (see
    /// [`crate::api::reply_budget`]); narrow the window or the grouping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// `clawfleet.api.analytics.baselines`: per capability, the last `recent`
/// against a rolling baseline of the `baseline_days` before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselinesRequest {
    /// Only this tenant's attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The recent period judged against the baseline (default 1 h).
    #[serde(default = "default_recent", with = "humantime_serde")]
    pub recent: std::time::Duration,
    /// Length of the baseline before it, in days (default 7).
    #[serde(default = "default_baseline_days")]
    pub baseline_days: u32,
    /// "Now" (default: the present); for looking back at a past period.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Timestamp>,
}

fn default_recent() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn default_baseline_days() -> u32 {
    7
}

impl Default for BaselinesRequest {
    fn default() -> Self {
        Self {
            tenant: None,
            recent: default_recent(),
            baseline_days: default_baseline_days(),
            until: None,
        }
    }
}

/// One capability's baseline and recent figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Capability set.
    pub capability: String,
    /// Over the baseline period.
    pub baseline: GroupStats,
    /// Over the recent period.
    pub recent: GroupStats,
    /// `recent.success_rate - baseline.success_rate`.
    pub success_rate_change: Option<f64>,
    /// `recent.p95_ms / baseline.p95_ms`.
    pub p95_ratio: Option<f64>,
    /// What deviates noticeably (success rate down by 0.05 or more, p95
    /// latency up by half or more); empty when nothing does.
    pub deviations: Vec<String>,
}

/// Reply to `baselines`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselinesReply {
    /// Start of the baseline period.
    #[serde(with = "timefmt")]
    pub baseline_since: Timestamp,
    /// Start of the recent period (end of the baseline).
    #[serde(with = "timefmt")]
    pub recent_since: Timestamp,
    /// End of the recent period.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
    /// One per capability set seen in either period.
    pub capabilities: Vec<Baseline>,
    /// `true` when rows were left out (the last ones, in the reply's order)
    /// to keep the reply within the reply bound (see
    /// [`crate::api::reply_budget`]); narrow the window or the grouping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// `clawfleet.api.analytics.correlations`: failure rate by task
/// characteristic (label values, size class, capability, priority).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationsRequest {
    /// Window and scope.
    #[serde(flatten)]
    pub window: Window,
    /// Characteristic values seen in fewer finished attempts are left out.
    #[serde(default = "default_min_correlation_attempts")]
    pub min_attempts: u64,
}

fn default_min_correlation_attempts() -> u64 {
    10
}

impl Default for CorrelationsRequest {
    fn default() -> Self {
        Self {
            window: Window::default(),
            min_attempts: default_min_correlation_attempts(),
        }
    }
}

/// One characteristic value's failure rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// `label`, `size`, `capability` or `priority`.
    pub characteristic: String,
    /// The value (`team=web`, `10KiB-100KiB`, `code+git`, `high`).
    pub value: String,
    /// Finished attempts with it.
    pub attempts: u64,
    /// Their failure rate.
    pub failure_rate: f64,
    /// `failure_rate / fleet failure rate` (above 1: fails more often than
    /// the average attempt); absent when the fleet had no failures.
    pub lift: Option<f64>,
}

/// Reply to `correlations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationsReply {
    /// The window used.
    #[serde(with = "timefmt")]
    pub since: Timestamp,
    /// The window used.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
    /// Failure rate over every finished attempt in the window.
    pub fleet_failure_rate: Option<f64>,
    /// Highest failure rate first.
    pub correlations: Vec<Correlation>,
    /// `true` when rows were left out (the last ones, in the reply's order)
    /// to keep the reply within the reply bound (see
    /// [`crate::api::reply_budget`]); narrow the window or the grouping.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_parses_the_cli_forms() {
        assert_eq!(GroupBy::parse("agent"), Some(GroupBy::Agent));
        assert_eq!(
            GroupBy::parse("label:team"),
            Some(GroupBy::Label("team".into()))
        );
        assert_eq!(GroupBy::parse("label:"), None);
        assert_eq!(GroupBy::parse("colour"), None);
    }

    #[test]
    fn requests_fill_their_defaults() {
        let r: SummaryRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.by, GroupBy::Agent);
        let r: SummaryRequest = serde_json::from_str(r#"{"by": {"label": "team"}}"#).unwrap();
        assert_eq!(r.by, GroupBy::Label("team".into()));
        let b: BelowAverageRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(b, BelowAverageRequest::default());
        let b: BaselinesRequest = serde_json::from_str(r#"{"recent": "30m"}"#).unwrap();
        assert_eq!(b.recent, std::time::Duration::from_secs(1800));
    }
}
