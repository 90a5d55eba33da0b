//! Alerter configuration (see `docs/alerting.md` for every key and the
//! default rule set).
//!
//! Rules, routes, receivers and inhibition rules are validated here, at
//! start-up: a rule whose annotation template does not parse, a matcher
//! that is not a valid regex, a route without a receiver or a receiver that
//! does not exist stops the alerter before it connects to anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clawfleet_shared::config::{ConfigError, DEFAULT_NATS_URL};
use serde::{Deserialize, Serialize};

use crate::engine::inhibit::InhibitRule;
use crate::engine::routing::Route;

/// Most rules one alerter evaluates.
pub const MAX_RULES: usize = 500;

/// Alerter configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often every rule is evaluated.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// How long a request to another service (fleet state, queues,
    /// analytics) may take before the signal counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The leader's lease: a replica that stops renewing it is replaced by
    /// another within this long. Only the leader evaluates and notifies.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Name of this replica in the lease (default: host and process id).
    pub replica: Option<String>,
    /// Link to the fleet's console, sent as `externalURL`.
    pub external_url: String,
    /// How long a resolved alert is kept (and shown) after it resolved.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// The alert rules.
    pub rules: Vec<RuleConfig>,
    /// Where notifications go: the routing tree's root.
    pub route: Route,
    /// Notification receivers, by name.
    pub receivers: Vec<Receiver>,
    /// Inhibition rules: a firing source alert mutes matching targets.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Alertmanagers that get every pending-free alert (`POST
    /// <url>/api/v2/alerts`), as Prometheus sends them, for teams that route
    /// and notify with their own Alertmanager; independent of `route`.
    pub alertmanagers: Vec<String>,
    /// How often firing alerts are sent to the Alertmanagers again (changes
    /// go at once, at the next evaluation).
    #[serde(with = "humantime_serde")]
    pub alertmanager_resend: Duration,
    /// Cost budgets per tenant: alerts as spend reaches fractions of them,
    /// and optionally the tenant's new tasks refused once one is spent.
    pub budgets: Vec<Budget>,
    /// Where to serve `/metrics` and `/healthz`; unset: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Shipping of the alerter's own log lines.
    pub log_shipping: clawfleet_shared::logship::LogShipping,
}

/// One alert rule: a signal, a comparison, and how long it must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, also the alerts' `alertname` label.
    pub name: String,
    /// What is measured.
    pub signal: Signal,
    /// The comparison that makes the condition hold.
    #[serde(default)]
    pub op: Comparison,
    /// The value compared with.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after its condition stopped
    /// holding (against flapping).
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
    /// `severity` label (`info`, `warning`, `critical`, `page`...).
    #[serde(default = "default_severity")]
    pub severity: String,
    /// More labels on every alert of the rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations, with templates (`{{ $value }}`, `{{ $labels.tenant }}`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_severity() -> String {
    "warning".to_string()
}

/// How a signal's value is compared with the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Above.
    #[default]
    #[serde(rename = ">")]
    Above,
    /// At or above.
    #[serde(rename = ">=")]
    AtLeast,
    /// Below.
    #[serde(rename = "<")]
    Below,
    /// At or below.
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    /// Whether `value` meets the condition.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }
}

/// What a rule measures. Every signal comes from what the fleet already
/// records: the analytics history of attempts (log aggregator), the queues
/// (dispatcher), the fleet state (health monitor), the streams themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// Failed share of the attempts that ended over `window`
    /// (`failed / (succeeded + failed)`), per `by` group.
    ErrorRate {
        /// Look-back window.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Grouping: `fleet`, `tenant`, `capability`, `agent`, `model`, `region`.
        #[serde(default)]
        by: Grouping,
        /// Groups with fewer ended attempts are not judged.
        #[serde(default = "default_min_attempts")]
        min_attempts: u64,
    },
    /// 95th percentile attempt wall time over `window`, in seconds.
    LatencyP95 {
        /// Look-back window.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Grouping, as for `error_rate`.
        #[serde(default)]
        by: Grouping,
        /// Groups with fewer ended attempts are not judged.
        #[serde(default = "default_min_attempts")]
        min_attempts: u64,
    },
    /// Tasks waiting in a queue (not yet taken, plus handed back for a
    /// while), per tenant, priority, region and capability set.
    QueueDepth,
    /// Age in seconds of the oldest task waiting in a queue, per tenant,
    /// priority, region and capability set.
    OldestQueuedAge,
    /// Agents that take work (healthy or suspect, not quarantined), per
    /// `by` (`fleet`, `region` or `profile`). Groups are those any
    /// registered agent belongs to, and the ones listed in `expect`, so a
    /// region whose every agent vanished still counts (as 0).
    HealthyAgents {
        /// Grouping: `fleet`, `region` or `profile`.
        #[serde(default)]
        by: Grouping,
        /// Groups that must exist: `["eu", "us"]` for regions.
        #[serde(default)]
        expect: Vec<String>,
    },
    /// Quarantined agents (value 1 per agent).
    QuarantinedAgent,
    /// Agents whose recovery the health monitor escalated (restart storms,
    /// long outages; value 1 per agent).
    EscalatedAgent,
    /// Dead letters added over `window`, per reason and tenant.
    DeadLetters {
        /// Look-back window.
        #[serde(with = "humantime_serde")]
        window: Duration,
    },
    /// Spend over `window` in the price table's currency, per `by`
    /// (`fleet`, `tenant`, `agent` or `model`).
    Cost {
        /// Look-back window.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// Grouping.
        #[serde(default)]
        by: Grouping,
    },
    /// 1 while NATS or JetStream does not answer the alerter, else 0.
    NatsUnreachable,
    /// Per capability set, the p95 attempt time of the last `recent` divided
    /// by its p95 over the `baseline_days` before (2 = twice as slow as usual).
    LatencyVsBaseline {
        /// The recent period.
        #[serde(with = "humantime_serde")]
        recent: Duration,
        /// Days of baseline before it.
        #[serde(default = "default_baseline_days")]
        baseline_days: u32,
        /// Capability sets with fewer recent attempts are not judged.
        #[serde(default = "default_min_attempts")]
        min_attempts: u64,
    },
    /// Log lines the services dropped under back-pressure over `window`, per
    /// service (from the drop reports they ship once the pressure eases).
    LogLinesDropped {
        /// Look-back window.
        #[serde(with = "humantime_serde")]
        window: Duration,
    },
    /// Seconds the log index is behind: the age of the oldest line in
    /// `CLAWFLEET_LOGS` the log aggregator's consumer has not indexed yet (0
    /// when it is caught up). A stalled or stopped aggregator grows it.
    LogIndexLag {
        /// The log aggregator's durable consumer (its `consumer` setting).
        #[serde(default = "default_log_consumer")]
        consumer: String,
    },
}

fn default_log_consumer() -> String {
    clawfleet_shared::subjects::CONSUMER_LOG_AGGREGATOR.to_string()
}

fn default_baseline_days() -> u32 {
    7
}

fn default_min_attempts() -> u64 {
    10
}

/// How a signal's values are grouped (each group is one alert).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One value for the whole fleet.
    #[default]
    Fleet,
    /// Per tenant.
    Tenant,
    /// Per required capability set.
    Capability,
    /// Per agent.
    Agent,
    /// Per model.
    Model,
    /// Per region.
    Region,
    /// Per profile.
    Profile,
}

impl Grouping {
    /// The label the group's key goes in.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Grouping::Fleet => None,
            Grouping::Tenant => Some("tenant"),
            Grouping::Capability => Some("capability"),
            Grouping::Agent => Some("agent"),
            Grouping::Model => Some("model"),
            Grouping::Region => Some("region"),
            Grouping::Profile => Some("profile"),
        }
    }
}

/// A tenant's cost budget, in the price table's currency, per UTC day and
/// month. Each fraction of `alert_at` reached is an alert `cost_budget`
/// (severity `warning` below 1, `critical` from 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The tenant.
    pub tenant: String,
    /// Budget per day (UTC).
    #[serde(default)]
    pub daily: Option<f64>,
    /// Budget per calendar month (UTC).
    #[serde(default)]
    pub monthly: Option<f64>,
    /// Fractions of the budget that alert.
    #[serde(default = "default_alert_at")]
    pub alert_at: Vec<f64>,
    /// Whether a spent budget stops the tenant's new tasks (`budget_exceeded`)
    /// until the period ends; running work finishes either way.
    #[serde(default)]
    pub enforce: bool,
}

fn default_alert_at() -> Vec<f64> {
    vec![0.8, 1.0]
}

/// A notification receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Name, as routes refer to it.
    pub name: String,
    /// Webhooks that get Alertmanager's webhook payload (version 4).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// One webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// Whether resolved alerts are sent too.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Most alerts in one message (0: all); the rest are counted in
    /// `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    /// How long one POST may take.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            evaluation_interval: Duration::from_secs(15),
            request_timeout: Duration::from_secs(5),
            lease: Duration::from_secs(15),
            replica: None,
            external_url: "http://127.0.0.1:9190".to_string(),
            resolved_retention: Duration::from_secs(15 * 60),
            rules: default_rules(),
            route: default_route(),
            receivers: vec![Receiver {
                name: "log".to_string(),
                webhooks: Vec::new(),
            }],
            inhibit_rules: default_inhibit_rules(),
            alertmanagers: Vec::new(),
            alertmanager_resend: Duration::from_secs(60),
            budgets: Vec::new(),
            metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9184))),
            log_shipping: clawfleet_shared::logship::LogShipping::default(),
        }
    }
}

fn default_route() -> Route {
    serde_json::from_value(serde_json::json!({
        "receiver": "log",
        "group_by": ["alertname"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
    }))
    .expect("the default route is valid")
}

fn default_inhibit_rules() -> Vec<InhibitRule> {
    serde_json::from_value(serde_json::json!([{
        "source_matchers": ["alertname=nats_unreachable"],
        "target_matchers": ["alertname!=nats_unreachable"],
        "equal": [],
    }]))
    .expect("the default inhibition rules are valid")
}

/// The rules `clawfleet up` and a config without `rules` run: see
/// `docs/alerting.md`.
pub fn default_rules() -> Vec<RuleConfig> {
    let rule =
        |name: &str, signal: Signal, op, threshold, for_secs, severity: &str, summary: &str| {
            RuleConfig {
                name: name.to_string(),
                signal,
                op,
                threshold,
                for_: Duration::from_secs(for_secs),
                keep_firing_for: Duration::ZERO,
                severity: severity.to_string(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::from([("summary".to_string(), summary.to_string())]),
            }
        };
    let minutes = |m: u64| Duration::from_secs(60 * m);
    vec![
        rule(
            "fleet_error_rate",
            Signal::ErrorRate { window: minutes(10), by: Grouping::Fleet, min_attempts: 20 },
            Comparison::Above,
            0.2,
            300,
            "critical",
            "{{ humanizePercentage $value }} of the fleet's attempts failed over 10 minutes",
        ),
        rule(
            "tenant_error_rate",
            Signal::ErrorRate { window: minutes(10), by: Grouping::Tenant, min_attempts: 20 },
            Comparison::Above,
            0.5,
            300,
            "warning",
            "{{ humanizePercentage $value }} of tenant {{ $labels.tenant }}'s attempts failed over 10 minutes",
        ),
        rule(
            "attempt_latency_p95",
            Signal::LatencyP95 { window: minutes(10), by: Grouping::Capability, min_attempts: 20 },
            Comparison::Above,
            300.0,
            600,
            "warning",
            "p95 attempt time for {{ $labels.capability }} is {{ humanizeDuration $value }}",
        ),
        rule(
            "oldest_queued_task",
            Signal::OldestQueuedAge,
            Comparison::Above,
            600.0,
            120,
            "warning",
            "a task has waited {{ humanizeDuration $value }} in {{ $labels.queue }}",
        ),
        rule(
            "no_healthy_agents",
            Signal::HealthyAgents { by: Grouping::Fleet, expect: Vec::new() },
            Comparison::Below,
            1.0,
            60,
            "critical",
            "no agent takes work",
        ),
        rule(
            "agent_quarantined",
            Signal::QuarantinedAgent,
            Comparison::AtLeast,
            1.0,
            0,
            "warning",
            "agent {{ $labels.agent }} is quarantined",
        ),
        rule(
            "agent_escalated",
            Signal::EscalatedAgent,
            Comparison::AtLeast,
            1.0,
            0,
            "critical",
            "recovery of agent {{ $labels.agent }} failed; it needs a person",
        ),
        rule(
            "dead_letters_growing",
            Signal::DeadLetters { window: minutes(15) },
            Comparison::Above,
            10.0,
            0,
            "warning",
            "{{ $value }} tasks of {{ $labels.tenant }} dead-lettered ({{ $labels.reason }}) in 15 minutes",
        ),
        rule(
            "log_index_stalled",
            Signal::LogIndexLag {
                consumer: default_log_consumer(),
            },
            Comparison::Above,
            120.0,
            120,
            "warning",
            "the log index is {{ humanizeDuration $value }} behind the fleet's logs",
        ),
        rule(
            "nats_unreachable",
            Signal::NatsUnreachable,
            Comparison::AtLeast,
            1.0,
            30,
            "critical",
            "the alerter cannot reach NATS or JetStream",
        ),
    ]
}

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        self.log_shipping.validate()?;
        if self.evaluation_interval < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "evaluation_interval",
                "must be at least 50ms",
            ));
        }
        if self.lease < self.evaluation_interval.min(Duration::from_secs(1)) * 2 {
            return Err(ConfigError::invalid(
                "lease",
                "must be at least twice the evaluation interval (or 2s)",
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(ConfigError::invalid(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("rules[{i}].{field}");
            if !valid_name(&rule.name) {
                return Err(ConfigError::invalid(
                    key("name"),
                    "must match [a-zA-Z_][a-zA-Z0-9_]{0,63}",
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("{:?} is used by another rule", rule.name),
                ));
            }
            if !rule.threshold.is_finite() {
                return Err(ConfigError::invalid(key("threshold"), "must be a number"));
            }
            let mut labels = rule.labels.clone();
            labels.insert("alertname".to_string(), rule.name.clone());
            labels.insert("severity".to_string(), rule.severity.clone());
            crate::engine::labels::validate(&labels)
                .map_err(|e| ConfigError::invalid(key("labels"), e.to_string()))?;
            for (name, template) in &rule.annotations {
                crate::engine::template::check(template).map_err(|e| {
                    ConfigError::invalid(format!("rules[{i}].annotations.{name}"), e.to_string())
                })?;
            }
            match &rule.signal {
                Signal::ErrorRate { window, by, .. } | Signal::LatencyP95 { window, by, .. } => {
                    at_least_second(&key("signal.window"), *window)?;
                    if matches!(by, Grouping::Profile) {
                        return Err(ConfigError::invalid(
                            key("signal.by"),
                            "attempts are grouped by fleet, tenant, capability, agent, model or region",
                        ));
                    }
                }
                Signal::Cost { window, by } => {
                    at_least_second(&key("signal.window"), *window)?;
                    if !matches!(
                        by,
                        Grouping::Fleet | Grouping::Tenant | Grouping::Agent | Grouping::Model
                    ) {
                        return Err(ConfigError::invalid(
                            key("signal.by"),
                            "cost is grouped by fleet, tenant, agent or model",
                        ));
                    }
                }
                Signal::DeadLetters { window } | Signal::LogLinesDropped { window } => {
                    at_least_second(&key("signal.window"), *window)?
                }
                Signal::LatencyVsBaseline {
                    recent,
                    baseline_days,
                    ..
                } => {
                    at_least_second(&key("signal.recent"), *recent)?;
                    if !(1..=90).contains(baseline_days) {
                        return Err(ConfigError::invalid(
                            key("signal.baseline_days"),
                            "must be 1 to 90",
                        ));
                    }
                }
                Signal::HealthyAgents { by, .. }
                    if !matches!(by, Grouping::Fleet | Grouping::Region | Grouping::Profile) =>
                {
                    return Err(ConfigError::invalid(
                        key("signal.by"),
                        "healthy agents are grouped by fleet, region or profile",
                    ));
                }
                _ => {}
            }
        }
        for (i, rule) in self.inhibit_rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| ConfigError::invalid(format!("inhibit_rules[{i}]"), e.to_string()))?;
        }
        for (i, url) in self.alertmanagers.iter().enumerate() {
            check_url(&format!("alertmanagers[{i}]"), url)?;
        }
        if self.alertmanager_resend < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "alertmanager_resend",
                "must be at least 1s",
            ));
        }
        let mut tenants = BTreeSet::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let key = |field: &str| format!("budgets[{i}].{field}");
            if b.tenant.is_empty() || b.tenant.len() > 64 || !tenants.insert(b.tenant.as_str()) {
                return Err(ConfigError::invalid(
                    key("tenant"),
                    "must be a tenant name, once per tenant",
                ));
            }
            if b.daily.is_none() && b.monthly.is_none() {
                return Err(ConfigError::invalid(
                    key("daily"),
                    "give daily, monthly or both",
                ));
            }
            for (field, v) in [("daily", b.daily), ("monthly", b.monthly)] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(ConfigError::invalid(key(field), "must be above 0"));
                }
            }
            if b.alert_at.is_empty()
                || b.alert_at.len() > 8
                || b.alert_at
                    .iter()
                    .any(|f| !(f.is_finite() && *f > 0.0 && *f <= 10.0))
            {
                return Err(ConfigError::invalid(
                    key("alert_at"),
                    "1 to 8 fractions above 0 (1 is the whole budget)",
                ));
            }
        }
        let mut receivers = BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            if r.name.is_empty() || r.name.len() > 64 {
                return Err(ConfigError::invalid(
                    format!("receivers[{i}].name"),
                    "must be 1 to 64 bytes",
                ));
            }
            if !receivers.insert(r.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("receivers[{i}].name"),
                    format!("{:?} is used by another receiver", r.name),
                ));
            }
            for (j, w) in r.webhooks.iter().enumerate() {
                check_url(&format!("receivers[{i}].webhooks[{j}].url"), &w.url)?;
            }
        }
        let resolved = self
            .route
            .resolve()
            .map_err(|e| ConfigError::invalid("route", e.to_string()))?;
        for name in resolved.receivers() {
            if !receivers.contains(name) {
                return Err(ConfigError::invalid(
                    "route",
                    format!("names receiver {name:?}, which is not in `receivers`"),
                ));
            }
        }
        Ok(())
    }
}

fn at_least_second(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d < Duration::from_secs(1) {
        return Err(ConfigError::invalid(key.to_string(), "must be at least 1s"));
    }
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key.to_string(),
            "must be an http or https URL",
        )),
        Err(e) => Err(ConfigError::invalid(key.to_string(), e.to_string())),
    }
}

/// Rule and label names as Prometheus allows them, bounded.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_bad_rule_names_its_key() {
        let mut config = Config::default();
        config.rules[1].name = config.rules[0].name.clone();
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("rules[1].name"), "{e}");

        let mut config = Config::default();
        config.rules[0]
            .annotations
            .insert("summary".into(), "{{ nonsense }}".into());
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("rules[0].annotations.summary"), "{e}");
    }

    #[test]
    fn a_route_to_an_unknown_receiver_is_refused() {
        let config: Config = toml::from_str(
            r#"
            [route]
            receiver = "pager"
            "#,
        )
        .unwrap();
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("pager"), "{e}");
    }

    #[test]
    fn rules_read_from_toml() {
        let config: Config = toml::from_str(
            r#"
            [[rules]]
            name = "eu_down"
            signal = { kind = "healthy_agents", by = "region", expect = ["eu"] }
            op = "<"
            threshold = 2
            for = "1m"
            severity = "critical"
            annotations = { summary = "{{ $value }} agents in {{ $labels.region }}" }

            [[receivers]]
            name = "log"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.rules[0].op, Comparison::Below);
        assert_eq!(config.rules[0].for_, Duration::from_secs(60));
    }
}
