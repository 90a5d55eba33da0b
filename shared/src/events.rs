//! Lifecycle events on `clawfleet.events.>` (stream `CLAWFLEET_EVENTS`).
//!
//! Events are notifications for integrations and operators; the task record
//! (`clawfleet.api.task.get`) stays the source of truth.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::error::{ErrorBody, ErrorCode};
use crate::task::{Outcome, Priority, Usage};
use crate::timefmt::{self, Timestamp};

/// What happened to a task. The wire name is also the subject token in
/// `clawfleet.events.task.<kind>.<tenant>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventKind {
    /// Validated and routed to a queue.
    Queued,
    /// Refused by validation; a dead letter records it.
    Rejected,
    /// An agent started an attempt.
    Started,
    /// An attempt failed and the task will be retried after a backoff.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Failed for good; a dead letter records it.
    Failed,
    /// Stopped to make room for a waiting critical task and requeued.
    Preempted,
    /// Cancelled on request (while queued, or by stopping its running attempt).
    Cancelled,
}

impl TaskEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEventKind::Queued => "queued",
            TaskEventKind::Rejected => "rejected",
            TaskEventKind::Started => "started",
            TaskEventKind::Retrying => "retrying",
            TaskEventKind::Succeeded => "succeeded",
            TaskEventKind::Failed => "failed",
            TaskEventKind::Preempted => "preempted",
            TaskEventKind::Cancelled => "cancelled",
        }
    }
}

/// A task lifecycle event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEvent {
    /// What happened.
    pub kind: TaskEventKind,
    /// Task id (absent for a rejected task that had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tenant.
    pub tenant: String,
    /// When.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// Priority, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Attempt number, for started/retrying/succeeded/failed, and cancelled
    /// when an attempt was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Agent, for started/retrying/succeeded/failed, and cancelled when an
    /// attempt was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Queue subject, for queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The error, for rejected/retrying/failed/cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Delay before the next attempt, for retrying (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The attempt this event ends, as its executor ran it: on succeeded,
    /// retrying, failed, preempted, and cancelled when a running attempt
    /// was stopped. Carried here rather than sent apart so that an attempt
    /// costs one stored event, not two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<AttemptReport>>,
}

impl TaskEvent {
    /// An event with only the required fields set.
    pub fn new(kind: TaskEventKind, id: Option<String>, tenant: impl Into<String>) -> Self {
        Self {
            kind,
            id,
            tenant: tenant.into(),
            time: timefmt::now(),
            priority: None,
            attempt: None,
            agent: None,
            queue: None,
            error: None,
            retry_in_ms: None,
            report: None,
        }
    }
}

/// What happened to an agent: `clawfleet.events.agent.<kind>.<agent_id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// Registered and pulling work.
    Joined,
    /// Stopped pulling; finishing what it holds.
    Draining,
    /// Left the fleet cleanly.
    Left,
    /// Restarted its executor (after a crash or failed health checks).
    ExecutorRestarted,
    /// The health monitor saw it miss a beat or a ping.
    Suspect,
    /// The health monitor declared it down and handed its tasks back.
    Down,
    /// Beating again after being down; checked before it gets work.
    Recovering,
    /// Passed its checks; back in the pool.
    Healthy,
    /// Taken out of the pool for failing far more than the fleet.
    Quarantined,
    /// Quarantine lifted.
    Released,
    /// Recovery failed (too many restarts, or down too long): needs a person.
    Escalated,
}

impl AgentEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentEventKind::Joined => "joined",
            AgentEventKind::Draining => "draining",
            AgentEventKind::Left => "left",
            AgentEventKind::ExecutorRestarted => "executor_restarted",
            AgentEventKind::Suspect => "suspect",
            AgentEventKind::Down => "down",
            AgentEventKind::Recovering => "recovering",
            AgentEventKind::Healthy => "healthy",
            AgentEventKind::Quarantined => "quarantined",
            AgentEventKind::Released => "released",
            AgentEventKind::Escalated => "escalated",
        }
    }
}

/// An agent lifecycle event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentEvent {
    /// What happened.
    pub kind: AgentEventKind,
    /// Which agent.
    pub agent_id: String,
    /// When.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// Why, for health transitions, restarts and escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AgentEvent {
    /// An event about `agent_id` happening now.
    pub fn new(kind: AgentEventKind, agent_id: impl Into<String>, reason: Option<String>) -> Self {
        Self {
            kind,
            agent_id: agent_id.into(),
            time: timefmt::now(),
            reason,
        }
    }
}

/// One attempt as it ran on an agent, whatever became of it, sent once per
/// attempt an executor ran. Fleet analytics and cost tracking are built from
/// these. It travels in the task event that ends the attempt
/// ([`TaskEvent::report`]); an attempt that ends no task event (its task had
/// moved to another agent, or its agent handed it back while stopping) is
/// reported alone on `clawfleet.events.attempt.<tenant>.<agent_id>`.
///
/// The outcome is what the executor did. It can differ from the task
/// record's view of the attempt: an agent that was declared down while it
/// went on working still reports its attempt (it used time and tokens),
/// although the record had moved on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Task id.
    pub task_id: String,
    /// Tenant.
    pub tenant: String,
    /// Agent that ran the attempt.
    pub agent: String,
    /// Attempt number (as in the task record).
    pub attempt: u32,
    /// Task priority.
    pub priority: Priority,
    /// Capabilities the task required.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Region the task was bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The task's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Size of the task as queued (spec and payload), in bytes.
    pub size_bytes: u64,
    /// When the executor started.
    #[serde(with = "timefmt")]
    pub started_at: Timestamp,
    /// When it returned (or was stopped).
    #[serde(with = "timefmt")]
    pub ended_at: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code, for an attempt that did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    /// What the executor reported using (tokens, model), if it reports any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl AttemptReport {
    /// Wall time of the attempt in milliseconds.
    pub fn wall_ms(&self) -> u64 {
        let d = self.ended_at - self.started_at;
        u64::try_from(d.whole_milliseconds()).unwrap_or(0)
    }
}
