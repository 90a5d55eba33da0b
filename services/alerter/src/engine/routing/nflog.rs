//! The notification log: what each receiver was last told about each group.
//!
//! As in Alertmanager's nflog, an entry holds the fingerprints of the firing
//! and resolved alerts of the last notification delivered for a (group key,
//! receiver), and when it was delivered. Whether a group needs notifying is
//! decided against it, never against what was merely attempted, so a failed
//! delivery is retried and a delivered one is not repeated, across restarts
//! too once the log is persisted.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::engine::clock::elapsed_at_least;

/// How long an entry is kept after its notification when its group is gone
/// (Alertmanager's default `--data.retention`, 120h).
pub const LOG_RETENTION: Duration = Duration::from_secs(120 * 60 * 60);
/// Most entries the log holds; past it the oldest entry of a group that no
/// longer exists makes room.
pub const MAX_LOG_ENTRIES: usize = 100_000;

/// One delivered notification, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The group's key.
    pub group_key: String,
    /// The receiver told.
    pub receiver: String,
    /// Fingerprints of the alerts it was told are firing.
    pub firing: BTreeSet<String>,
    /// Fingerprints of the alerts it was told are resolved.
    pub resolved: BTreeSet<String>,
    /// When it was told.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
}

/// The whole log, for persisting ([`crate::engine::Notifier::log`]) and
/// restoring ([`crate::engine::Notifier::restore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationLog {
    /// The entries, by group key then receiver.
    pub entries: Vec<LogEntry>,
}

/// Alertmanager's `DedupStage.needsUpdate`: whether a group whose visible
/// alerts are `firing` and `resolved` must be notified, given the last entry.
pub(crate) fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    repeat_interval: Duration,
    send_resolved: bool,
    now: OffsetDateTime,
) -> bool {
    let Some(entry) = entry else {
        // Never notified: only firing alerts are news.
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        // Something fires that the receiver was not told about.
        return true;
    }
    if firing.is_empty() {
        // All resolved: tell the receiver, if it was told something fired.
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    elapsed_at_least(entry.sent_at, now, repeat_interval)
}
