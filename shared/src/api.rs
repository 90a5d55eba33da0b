//! Request and reply bodies of the `clawfleet.api.*` request/reply subjects.
//!
//! Every reply is either the documented success body or an
//! [`crate::error::ErrorReply`] (`{"error": {"code", "message"}}`); use
//! [`ApiReply`] to decode one without guessing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{AgentInfo, QueueEntry};
use crate::error::{ErrorBody, ErrorReply};
use crate::task::{Priority, TaskStatus};
use crate::timefmt::{self, Timestamp};

/// Reply to `clawfleet.api.submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// The task id (generated when the submitter gave none).
    pub id: String,
    /// `queued` for a new task; the current status for a duplicate.
    pub status: TaskStatus,
    /// Present and `true` when the id was already known: nothing was enqueued.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Request to `clawfleet.api.task.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskGetRequest {
    /// The task id.
    pub id: String,
    /// When given, a task of another tenant is reported as `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Reply to `clawfleet.api.agents.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentsReply {
    /// Every agent whose registration has not expired, by id.
    pub agents: Vec<AgentInfo>,
}

/// Depth of one queue (one priority of one region and capability set).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDepth {
    /// The queue's subject.
    pub subject: String,
    /// The tenant whose tasks it holds.
    #[serde(default)]
    pub tenant: String,
    /// Priority.
    pub priority: Priority,
    /// Region, if the queue is region-bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Required capabilities.
    pub requires: Vec<String>,
    /// Tasks no agent has taken yet.
    pub waiting: u64,
    /// Tasks delivered to an agent and not yet acknowledged: running, or
    /// waiting out a retry back-off (JetStream holds a nak'ed task as pending).
    pub running: u64,
    /// Whether a pause rule holds it.
    #[serde(default)]
    pub paused: bool,
}

/// Reply to `clawfleet.api.queues.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuesReply {
    /// Every known queue.
    pub queues: Vec<QueueDepth>,
    /// Pause rules in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<PauseRule>,
    /// Tasks accepted but not yet routed by a dispatcher.
    pub intake_pending: u64,
}

/// Request to `clawfleet.api.dlq.list`. All filters are optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlqListRequest {
    /// Only entries of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only entries with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DlqReason>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Why a task ended in the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlqReason {
    /// The dispatcher refused it (validation); the `error` says why.
    Rejected,
    /// It failed its last attempt or failed fatally.
    Failed,
    /// A queued message could not be decoded.
    Poison,
}

impl DlqReason {
    /// The wire name (also the subject token).
    pub fn as_str(self) -> &'static str {
        match self {
            DlqReason::Rejected => "rejected",
            DlqReason::Failed => "failed",
            DlqReason::Poison => "poison",
        }
    }
}

/// One dead letter, on `clawfleet.dlq.<reason>.<tenant>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqEntry {
    /// Why it is here.
    pub reason: DlqReason,
    /// The error that put it here.
    pub error: ErrorBody,
    /// The task id, when one was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tenant (`_` when none could be determined).
    pub tenant: String,
    /// The subject the task arrived on.
    pub subject: String,
    /// The task: the validated spec when there is one, else the raw body
    /// (as JSON when it parsed, else as a string).
    pub task: Value,
    /// When it was dead-lettered.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// Stream sequence in `CLAWFLEET_DLQ`, filled in by `dlq.list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Reply to `clawfleet.api.dlq.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqListReply {
    /// Matching entries, newest first.
    pub entries: Vec<DlqEntry>,
}

/// A raw message body as a dead letter's `task`: the JSON it holds, or the
/// body as a string when it is not JSON.
pub fn raw_task(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Any API reply: the success body or an error. Decode replies with this.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiReply<T> {
    /// `{"error": {...}}`.
    Err(ErrorReply),
    /// The documented success body.
    Ok(T),
}

impl<T> ApiReply<T> {
    /// Converts into a `Result`.
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match self {
            ApiReply::Ok(v) => Ok(v),
            ApiReply::Err(reply) => Err(reply.error),
        }
    }
}

/// Queue registry entries returned with the agents list are also useful to
/// clients; re-exported for convenience.
pub type QueueRegistration = QueueEntry;

/// A pause rule, stored in the queue registry bucket under
/// [`PauseRule::key`]: every queue matching all the fields given (a tenant,
/// a priority, a required capability) is paused. Agents take nothing from a
/// paused queue; its tasks stay queued, untouched, until the rule is removed.
/// Request body of `clawfleet.api.queues.pause` and `.resume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRule {
    /// Only this tenant's queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only queues of this priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Only queues whose tasks require this capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

/// Prefix of pause-rule keys in the queue registry bucket.
pub const PAUSE_PREFIX: &str = "pause.";

impl PauseRule {
    /// Whether the queue of `entry` at `priority` is paused by this rule.
    pub fn matches(&self, entry: &crate::agent::QueueEntry, priority: Priority) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == entry.tenant)
            && self.priority.is_none_or(|p| p == priority)
            && self
                .capability
                .as_ref()
                .is_none_or(|c| entry.requires.contains(c))
    }

    /// Its key in the queue registry bucket.
    pub fn key(&self) -> String {
        let text = format!(
            "{}|{}|{}",
            self.tenant.as_deref().unwrap_or("*"),
            self.priority.map_or("*", Priority::as_str),
            self.capability.as_deref().unwrap_or("*")
        );
        format!("{PAUSE_PREFIX}{:016x}", crate::subjects::fnv1a(&text))
    }
}

/// Reply of `clawfleet.api.queues.pause` and `.resume`: the rules in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PausedReply {
    /// Every pause rule now in force.
    pub paused: Vec<PauseRule>,
}
