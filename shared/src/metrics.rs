//! Metric names recorded by the shared parts every service runs (see
//! `docs/metrics.md`); each service crate has its own `metrics` module too.

/// Counter (every service): log lines dropped under back-pressure before
/// they were shipped; label `level`.
pub const LOG_LINES_DROPPED: &str = "clawfleet_log_lines_dropped_total";

/// Counter (dispatcher, agent): messages that could be neither handled nor
/// dead-lettered and were terminated so they do not come back forever;
/// label `reason` (`rejected`, `poison`, `failed`).
pub const DEAD_LETTERS_LOST: &str = "clawfleet_dead_letters_lost_total";
