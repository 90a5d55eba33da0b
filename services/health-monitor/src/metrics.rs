//! The health monitor's metric names (see `docs/metrics.md`).

/// Gauge: agents per health state; label `state`.
pub const AGENTS: &str = "clawfleet_agents";
/// Gauge: agents quarantined.
pub const QUARANTINED: &str = "clawfleet_agents_quarantined";
/// Counter: tasks of down agents handed back to their queues.
pub const HANDED_BACK: &str = "clawfleet_tasks_handed_back_total";
/// Counter: escalations (recovery failed).
pub const ESCALATIONS: &str = "clawfleet_escalations_total";
