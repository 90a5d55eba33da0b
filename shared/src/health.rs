//! Agent health as the health monitor judges it, and the fleet-state API.
//!
//! The monitor writes one [`HealthEntry`] per agent in the
//! [`crate::subjects::BUCKET_HEALTH`] bucket whenever its judgement changes.
//! Agents watch their own entry: an agent whose entry does not allow work
//! ([`HealthEntry::takes_work`]) stops pulling, which is how a down, hung,
//! recovering or quarantined agent is removed from the pool without the
//! dispatcher knowing anything about health.

use serde::{Deserialize, Serialize};

use crate::agent::AgentInfo;
use crate::timefmt::{self, Timestamp};

/// How the monitor sees an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Beating, answering pings, executor ready.
    Healthy,
    /// Missed a beat or a ping, or its executor is not ready; still in the pool.
    Suspect,
    /// No beat for the heartbeat timeout, or no answer to pings (hung): out of
    /// the pool; its running tasks were handed back.
    Down,
    /// Beating again after being down; out of the pool until it passes checks.
    Recovering,
}

impl HealthState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Suspect => "suspect",
            HealthState::Down => "down",
            HealthState::Recovering => "recovering",
        }
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's or the monitor's decision to keep an agent out of the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// Why.
    pub reason: String,
    /// Since when.
    #[serde(with = "timefmt")]
    pub since: Timestamp,
    /// `monitor` (failure rate) or `operator`.
    pub by: String,
}

/// One agent's entry in the health bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthEntry {
    /// Agent id.
    pub agent_id: String,
    /// Current judgement.
    pub state: HealthState,
    /// Why it is in that state.
    pub reason: String,
    /// Since when.
    #[serde(with = "timefmt")]
    pub since: Timestamp,
    /// Set while the agent is quarantined (no new work whatever its state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
    /// Whether recovery failed and the monitor escalated (cleared when healthy again).
    #[serde(default)]
    pub escalated: bool,
    /// When the monitor last wrote (confirmed) this verdict.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub checked_at: Option<Timestamp>,
    /// How long after `checked_at` an agent may trust the verdict. The
    /// monitor confirms verdicts that keep an agent out of the pool well
    /// within this time; an agent whose verdict has run out (no monitor is
    /// running any more) takes work again rather than stay out forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_for_ms: Option<u64>,
}

impl HealthEntry {
    /// Whether the verdict has run out at `now` (see [`HealthEntry::valid_for_ms`]).
    pub fn expired(&self, now: Timestamp) -> bool {
        match (self.checked_at, self.valid_for_ms) {
            (Some(at), Some(ms)) => now - at > time::Duration::milliseconds(ms as i64),
            _ => false,
        }
    }
}

impl HealthEntry {
    /// Whether an agent with this entry may pull new work (whatever its age).
    pub fn takes_work(&self) -> bool {
        self.quarantine.is_none()
            && matches!(self.state, HealthState::Healthy | HealthState::Suspect)
    }
}

/// Failure statistics of one agent over the monitor's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureStats {
    /// Attempts that ended in the window.
    pub attempts: u64,
    /// Of which failed or timed out.
    pub failures: u64,
    /// `failures / attempts` (0 with no attempts).
    pub failure_rate: f64,
    /// Executor restarts in the window.
    pub restarts: u32,
}

/// One agent in [`FleetState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its last registration (capabilities, region, workload, version...).
    /// Absent when the agent's registration expired but the monitor still
    /// tracks it (down agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<AgentInfo>,
    /// The monitor's judgement.
    pub health: HealthEntry,
    /// Failure statistics over the window.
    pub stats: FailureStats,
    /// Queue messages the monitor knows the agent holds: what it would hand
    /// back were the agent to go down now.
    #[serde(default)]
    pub leases: usize,
}

/// Reply of `clawfleet.api.fleet.state` (request: a
/// [`crate::api::ListRequest`], or an empty body for the first page): a
/// page within the reply budget ([`crate::api::reply_budget`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    /// Agents the monitor knows, by id.
    pub agents: Vec<AgentStatus>,
    /// Present when more agents follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Fleet-wide failure rate over the window.
    pub fleet_failure_rate: f64,
    /// Length of the statistics window (humantime).
    pub window: String,
}

/// Request of `clawfleet.api.agent.quarantine` and `clawfleet.api.agent.release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentControl {
    /// Which agent.
    pub agent_id: String,
    /// Why (quarantine only; at most [`MAX_REASON_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest quarantine reason.
pub const MAX_REASON_BYTES: usize = 1024;
