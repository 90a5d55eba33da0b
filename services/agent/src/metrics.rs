//! The agent's metric names (see `docs/metrics.md`). Every series carries
//! an `agent` label.

/// Counter: attempts that ended; label `outcome` (succeeded, failed,
/// timeout, returned, preempted).
pub const ATTEMPTS: &str = "clawfleet_attempts_total";
/// Counter: failed attempts that will be retried.
pub const RETRIES: &str = "clawfleet_retries_total";
/// Histogram: seconds an attempt's executor ran.
pub const ATTEMPT_SECONDS: &str = "clawfleet_attempt_seconds";
/// Histogram: seconds from a task's submission to its end (success or
/// final failure) on this agent: end-to-end latency.
pub const TASK_SECONDS: &str = "clawfleet_task_seconds";
/// Gauge: slots busy (tasks running).
pub const SLOTS_BUSY: &str = "clawfleet_slots_busy";
/// Gauge: slots in all.
pub const SLOTS: &str = "clawfleet_slots";
/// Counter: executor restarts.
pub const EXECUTOR_RESTARTS: &str = "clawfleet_executor_restarts_total";
