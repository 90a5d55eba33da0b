//! The dispatcher's metric names (see `docs/metrics.md`).

/// Counter: tasks recorded and stored in a queue; labels `tenant`, `priority`.
pub const TASKS_QUEUED: &str = "clawfleet_tasks_queued_total";
/// Counter: submissions refused (request/reply refusals and dead-lettered
/// intake); label `code`.
pub const TASKS_REJECTED: &str = "clawfleet_tasks_rejected_total";
/// Histogram: seconds from a task's arrival in intake to its queueing.
pub const DISPATCH_SECONDS: &str = "clawfleet_dispatch_seconds";
/// Gauge: tasks waiting in queues; labels `tenant`, `priority`.
pub const QUEUE_WAITING: &str = "clawfleet_queue_waiting";
/// Gauge: tasks delivered to agents and not yet acknowledged; labels `tenant`, `priority`.
pub const QUEUE_RUNNING: &str = "clawfleet_queue_running";
/// Gauge: submissions waiting in intake to be routed.
pub const INTAKE_PENDING: &str = "clawfleet_intake_pending";
