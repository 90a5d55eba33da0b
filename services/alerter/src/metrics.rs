//! The alerter's metric names (see `docs/metrics.md`).

/// Histogram: how long one evaluation of every rule took, seconds.
pub const EVALUATION_SECONDS: &str = "clawfleet_alerter_evaluation_seconds";
/// Gauge: alerts firing (muted ones included).
pub const FIRING: &str = "clawfleet_alerts_firing";
/// Gauge: 1 on the replica that evaluates and notifies, else 0.
pub const LEADER: &str = "clawfleet_alerter_leader";
/// Counter: notifications by receiver and outcome (`delivered`, `failed`).
pub const NOTIFICATIONS: &str = "clawfleet_alert_notifications_total";
/// Counter: evaluations whose signal could not be read, by rule.
pub const SIGNAL_ERRORS: &str = "clawfleet_alert_signal_errors_total";
