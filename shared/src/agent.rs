//! What agents publish about themselves, and the queue registry they read.

use serde::{Deserialize, Serialize};

use crate::timefmt::{self, Timestamp};

/// An agent's registration in the [`crate::subjects::BUCKET_AGENTS`] bucket,
/// refreshed on every heartbeat. It disappears when the beats stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Unique agent id.
    pub agent_id: String,
    /// Capabilities, sorted.
    pub capabilities: Vec<String>,
    /// Region, if the agent is region-bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Tasks it runs at once at most.
    pub max_concurrency: u32,
    /// Tasks it is running now.
    pub in_flight: u32,
    /// Executor kind (`sim`, `command`, ...).
    pub executor: String,
    /// Lifecycle state.
    pub state: AgentState,
    /// clawfleet version.
    pub version: String,
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Attempts that succeeded since start.
    pub completed: u64,
    /// Attempts that failed since start.
    pub failed: u64,
    /// When the agent started.
    #[serde(with = "timefmt")]
    pub started_at: Timestamp,
    /// Last heartbeat.
    #[serde(with = "timefmt")]
    pub last_seen: Timestamp,
}

/// An agent's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Pulling work.
    Ready,
    /// Shutting down: finishing what it holds, pulling nothing new.
    Draining,
}

/// A capability profile in the [`crate::subjects::BUCKET_PROFILES`] bucket:
/// a (region, capability set) some agent has offered recently. The dispatcher
/// accepts a task only if some profile covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    /// Capabilities, sorted.
    pub capabilities: Vec<String>,
    /// Region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl ProfileEntry {
    /// Whether an agent of this profile may run a task needing `requires`
    /// (sorted) with residency `region`.
    pub fn covers(&self, requires: &[String], region: Option<&str>) -> bool {
        region_allows(self.region.as_deref(), region) && is_subset(requires, &self.capabilities)
    }
}

/// A queue in the [`crate::subjects::BUCKET_QUEUES`] bucket: the dispatcher
/// registers a (region, capability set) when it first routes to it; agents
/// watch the bucket to learn which queues they can serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// [`crate::subjects::queue_key`] of this queue.
    pub key: String,
    /// Required capabilities, sorted.
    pub requires: Vec<String>,
    /// Residency region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl QueueEntry {
    /// Whether an agent with `capabilities` (sorted) in `agent_region` may
    /// take work from this queue.
    pub fn servable_by(&self, capabilities: &[String], agent_region: Option<&str>) -> bool {
        region_allows(agent_region, self.region.as_deref())
            && is_subset(&self.requires, capabilities)
    }
}

/// Residency rule: a task bound to a region runs only on agents of that
/// region; an unbound task runs anywhere.
pub fn region_allows(agent_region: Option<&str>, task_region: Option<&str>) -> bool {
    match task_region {
        None => true,
        Some(wanted) => agent_region == Some(wanted),
    }
}

/// Whether every element of sorted `needle` is in sorted `haystack`.
pub fn is_subset(needle: &[String], haystack: &[String]) -> bool {
    needle.iter().all(|n| haystack.binary_search(n).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_region_bound_queue_is_served_only_inside_its_region() {
        let q = QueueEntry {
            key: "k".into(),
            requires: caps(&["code"]),
            region: Some("eu".into()),
        };
        assert!(q.servable_by(&caps(&["code", "git"]), Some("eu")));
        assert!(!q.servable_by(&caps(&["code", "git"]), Some("us")));
        assert!(!q.servable_by(&caps(&["code", "git"]), None));
        assert!(!q.servable_by(&caps(&["git"]), Some("eu")));
    }

    #[test]
    fn an_unbound_queue_is_served_by_any_capable_agent() {
        let q = QueueEntry {
            key: "k".into(),
            requires: vec![],
            region: None,
        };
        assert!(q.servable_by(&[], Some("us")));
        assert!(q.servable_by(&[], None));
    }
}
