//! The alerter's API (`clawfleet.api.alerts.*`) and alert events
//! (`clawfleet.events.alert.<state>.<alertname>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::timefmt::{self, Timestamp};

/// An alert as `alerts.list` shows it and its events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// Fingerprint of its labels (16 hex digits, as Alertmanager's).
    pub fingerprint: String,
    /// Its labels (`alertname`, `severity`, the group's labels, the rule's).
    pub labels: BTreeMap<String, String>,
    /// Its annotations, rendered with the latest value.
    pub annotations: BTreeMap<String, String>,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// The signal's latest value.
    pub value: f64,
    /// Since when the condition holds.
    #[serde(with = "timefmt")]
    pub active_at: Timestamp,
    /// When it fired.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_at: Option<Timestamp>,
    /// Ids of the silences that mute it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silenced_by: Vec<String>,
    /// Whether an inhibition rule mutes it.
    #[serde(default)]
    pub inhibited: bool,
}

/// Reply to `clawfleet.api.alerts.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsReply {
    /// Pending, firing and recently resolved alerts, firing first.
    pub alerts: Vec<AlertInfo>,
    /// When the leader last evaluated the rules.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub evaluated_at: Option<Timestamp>,
    /// The replica that evaluates and notifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// `true` when alerts were left out to keep the reply bounded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One rule in `clawfleet.api.alerts.rules`, with what it last measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// The signal's kind (`error_rate`, `queue_depth`...).
    pub signal: String,
    /// The condition, e.g. `> 0.2 for 5m`.
    pub condition: String,
    /// The severity label.
    pub severity: String,
    /// The latest value of each group (the group's labels and the value),
    /// largest first, at most 50.
    pub values: Vec<RuleValue>,
    /// Why the signal could not be read at the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One group's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleValue {
    /// The group's labels (empty for the fleet).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// Whether it meets the rule's condition.
    pub holds: bool,
}

/// Reply to `clawfleet.api.alerts.rules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesReply {
    /// Every loaded rule.
    pub rules: Vec<RuleStatus>,
    /// When they were evaluated.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub evaluated_at: Option<Timestamp>,
}

/// A silence as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceInfo {
    /// Its id.
    pub id: String,
    /// Matchers (`name=value`, `!=`, `=~`, `!~`), all of which an alert must match.
    pub matchers: Vec<String>,
    /// From when.
    #[serde(with = "timefmt")]
    pub starts_at: Timestamp,
    /// Until when.
    #[serde(with = "timefmt")]
    pub ends_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// `pending`, `active` or `expired`.
    pub state: String,
}

/// Request to `clawfleet.api.alerts.silence`: create a silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// Matchers, as in [`SilenceInfo::matchers`].
    pub matchers: Vec<String>,
    /// From when (default: now).
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub starts_at: Option<Timestamp>,
    /// Until when; or give `duration`.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ends_at: Option<Timestamp>,
    /// How long from `starts_at` (humantime, e.g. `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Who creates it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// Request to `clawfleet.api.alerts.expire`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireRequest {
    /// The silence's id.
    pub id: String,
}

/// Reply to `clawfleet.api.alerts.silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilencesReply {
    /// Silences, active first, then pending, then expired (newest first).
    pub silences: Vec<SilenceInfo>,
}

/// What `clawfleet.events.alert.notified.<receiver>` records: one
/// notification and how its delivery went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// The receiver.
    pub receiver: String,
    /// The group's key.
    pub group_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Fingerprints of the firing alerts sent.
    pub firing: Vec<String>,
    /// Fingerprints of the resolved alerts sent.
    pub resolved: Vec<String>,
    /// Whether every integration of the receiver took it.
    pub delivered: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
}

/// A tenant over a hard cost budget, as the alerter records it in
/// `clawfleet-budgets` (key: the tenant): dispatchers refuse the tenant's
/// new tasks with `budget_exceeded` until `until`, or until the entry is
/// deleted (the budget was raised or the period ended).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetExceeded {
    /// The tenant.
    pub tenant: String,
    /// `day` or `month` (UTC).
    pub period: String,
    /// Spend in the period so far.
    pub spend: f64,
    /// The budget.
    pub budget: f64,
    /// Currency of both.
    pub currency: String,
    /// The end of the period.
    #[serde(with = "timefmt")]
    pub until: Timestamp,
}

/// Request to `clawfleet.api.alerts.test`: evaluate one rule once, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// The rule's name.
    pub rule: String,
}

/// Reply to `clawfleet.api.alerts.test`: what the rule measures now and the
/// alerts it would make, without changing any alert or sending anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReply {
    /// The rule, as `alerts.rules` shows it (its values are this evaluation's).
    pub rule: RuleStatus,
    /// The alerts its groups that meet the condition would be, with their
    /// labels and rendered annotations; `silenced_by` and `inhibited` say
    /// whether a notification would leave them out.
    pub alerts: Vec<AlertInfo>,
}
