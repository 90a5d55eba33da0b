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
    /// Tenants the agent is dedicated to (it runs no other tenant's work);
    /// empty for a shared agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Named profiles the agent joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
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
    /// How often the agent beats (milliseconds); a monitor calls the agent
    /// `suspect` when one and a half of these pass without a beat.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// The executor's health at its last probe.
    #[serde(default)]
    pub executor_health: ExecutorHealth,
    /// Times the agent restarted its executor since it started.
    #[serde(default)]
    pub restarts: u32,
    /// Whether the agent is taking new work (false while its executor is not
    /// ready, or while the health monitor holds it out of the pool).
    #[serde(default = "yes")]
    pub pulling: bool,
    /// Hash of the agent's effective configuration, to spot drift across a fleet.
    #[serde(default)]
    pub config_hash: String,
    /// The tasks it is running, with their ack subjects (see [`Lease`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<Lease>,
    /// The other queue messages it holds: fetched and not recorded running
    /// yet, waiting for a slot of their tenant, or being handed back. With
    /// `running`, every message the health monitor hands back should the
    /// agent go down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Lease>,
}

fn yes() -> bool {
    true
}

/// A queue message an agent holds: its ack subject lets the health monitor
/// hand the task back (`-NAK`) the moment the agent is declared down,
/// instead of waiting for JetStream's ack deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Task id (empty for a message that is not a task).
    pub task_id: String,
    /// The delivered message's reply (ack) subject, unique to this delivery.
    pub ack: String,
}

/// What an agent tells the health monitors on
/// [`crate::subjects::agent_lease`]: the messages one pull gave it, and the
/// ones it handed back since its last announcement. Sent with a reply
/// subject; a monitor that recorded it answers with an empty message, and
/// the agent sends what is not confirmed again until one does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseUpdate {
    /// The announcing process, as in its registration, so a monitor does
    /// not file a new process's messages under the one it replaced.
    pub pid: u32,
    /// When that process started, as in its registration.
    #[serde(with = "timefmt")]
    pub started_at: Timestamp,
    /// Messages it now holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Lease>,
    /// Ack subjects of messages it handed back (naked) or gave up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<String>,
}

/// Health of an executor as its agent last probed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorHealth {
    /// Ready for work.
    #[default]
    Ready,
    /// Alive but not ready (starting, warming up, overloaded).
    NotReady,
    /// Not working; the agent restarts it.
    Down,
}

impl ExecutorHealth {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorHealth::Ready => "ready",
            ExecutorHealth::NotReady => "not_ready",
            ExecutorHealth::Down => "down",
        }
    }
}

/// An agent's answer to a health-monitor ping (`clawfleet.agent.ping.<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// Which agent answered.
    pub agent_id: String,
    /// Tasks running.
    pub in_flight: u32,
    /// Executor health.
    pub executor_health: ExecutorHealth,
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
/// a (region, capability set, dedicated tenants) some agent has offered
/// recently, or a named profile from the dispatcher's config. The dispatcher
/// accepts a task only if some profile covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    /// Name, for profiles declared in config (agents join them by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Capabilities, sorted.
    pub capabilities: Vec<String>,
    /// Region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Tenants its agents are dedicated to; empty for shared agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

impl ProfileEntry {
    /// Whether an agent of this profile may run `tenant`'s task needing
    /// `requires` (sorted) with residency `region`; `restricted` says the
    /// tenant may use only agents dedicated to it.
    pub fn covers(
        &self,
        requires: &[String],
        region: Option<&str>,
        tenant: &str,
        restricted: bool,
    ) -> bool {
        region_allows(self.region.as_deref(), region)
            && is_subset(requires, &self.capabilities)
            && tenant_allows(&self.tenants, tenant, restricted)
    }
}

/// How agents share a queue's tasks among themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Work goes where there is spare capacity: every agent pulls as many
    /// tasks as it has free slots, the least loaded first, and a saturated
    /// agent pulls none (so faster agents, which free slots sooner, take more).
    #[default]
    LeastLoaded,
    /// Agents take turns, one task per turn: N equal tasks over K idle
    /// identical agents give each N/K ± 1.
    RoundRobin,
}

impl Strategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LeastLoaded => "least_loaded",
            Strategy::RoundRobin => "round_robin",
        }
    }
}

/// A queue in the [`crate::subjects::BUCKET_QUEUES`] bucket: the dispatcher
/// registers a (tenant, region, capability set) when it first routes to it,
/// with the tenant's policy; agents watch the bucket to learn which queues
/// they can serve and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// [`crate::subjects::queue_key`] of this queue.
    pub key: String,
    /// The tenant whose tasks it holds.
    #[serde(default)]
    pub tenant: String,
    /// Required capabilities, sorted.
    pub requires: Vec<String>,
    /// Residency region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The tenant's share of an agent's time against other tenants' queues
    /// of the same priority (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Only agents dedicated to the tenant may serve it.
    #[serde(default)]
    pub restricted: bool,
    /// How agents share its tasks.
    #[serde(default)]
    pub strategy: Strategy,
    /// The tenant's `quota.max_running`: at most this many of its tasks run
    /// at once across all of its queues (see [`RunningSet`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
}

/// The value under a tenant's key in [`crate::subjects::BUCKET_RUNNING`]:
/// the tenant's running tasks, task id → agent id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningSet {
    /// Task id → the agent running it.
    #[serde(default)]
    pub tasks: std::collections::BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl QueueEntry {
    /// Whether an agent with `capabilities` (sorted) in `agent_region`,
    /// dedicated to `agent_tenants` (empty: shared), may take work from this queue.
    pub fn servable_by(
        &self,
        capabilities: &[String],
        agent_region: Option<&str>,
        agent_tenants: &[String],
    ) -> bool {
        region_allows(agent_region, self.region.as_deref())
            && is_subset(&self.requires, capabilities)
            && tenant_allows(agent_tenants, &self.tenant, self.restricted)
    }
}

/// Isolation rule: an agent dedicated to some tenants runs only their work;
/// a restricted tenant's work runs only on agents dedicated to it.
pub fn tenant_allows(agent_tenants: &[String], tenant: &str, restricted: bool) -> bool {
    if agent_tenants.is_empty() {
        !restricted
    } else {
        agent_tenants.iter().any(|t| t == tenant)
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

    fn queue(
        requires: &[&str],
        region: Option<&str>,
        tenant: &str,
        restricted: bool,
    ) -> QueueEntry {
        QueueEntry {
            key: "k".into(),
            tenant: tenant.into(),
            requires: caps(requires),
            region: region.map(str::to_string),
            weight: 1,
            restricted,
            strategy: Strategy::default(),
            max_running: None,
        }
    }

    #[test]
    fn a_region_bound_queue_is_served_only_inside_its_region() {
        let q = queue(&["code"], Some("eu"), "acme", false);
        assert!(q.servable_by(&caps(&["code", "git"]), Some("eu"), &[]));
        assert!(!q.servable_by(&caps(&["code", "git"]), Some("us"), &[]));
        assert!(!q.servable_by(&caps(&["code", "git"]), None, &[]));
        assert!(!q.servable_by(&caps(&["git"]), Some("eu"), &[]));
    }

    #[test]
    fn an_unbound_queue_is_served_by_any_capable_agent() {
        let q = queue(&[], None, "acme", false);
        assert!(q.servable_by(&[], Some("us"), &[]));
        assert!(q.servable_by(&[], None, &[]));
    }

    #[test]
    fn dedicated_agents_serve_only_their_tenants_and_restricted_tenants_only_them() {
        let open = queue(&[], None, "acme", false);
        let closed = queue(&[], None, "globex", true);
        let shared: &[String] = &[];
        let for_acme = caps(&["acme"]);
        let for_globex = caps(&["globex"]);
        assert!(open.servable_by(&[], None, shared));
        assert!(open.servable_by(&[], None, &for_acme));
        assert!(!open.servable_by(&[], None, &for_globex));
        assert!(!closed.servable_by(&[], None, shared));
        assert!(closed.servable_by(&[], None, &for_globex));
        assert!(!closed.servable_by(&[], None, &for_acme));
    }
}
