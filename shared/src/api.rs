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
    /// Tenants with a `max_running` quota, and how much of it they use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capped: Vec<TenantRunning>,
}

/// A tenant with a `max_running` quota in `clawfleet.api.queues.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRunning {
    /// The tenant.
    pub tenant: String,
    /// Its tasks running now, across all of its queues (its running set).
    pub running: u64,
    /// Its quota.
    pub max_running: u32,
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
    /// Only entries dead-lettered at or after this time.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
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
    /// Stream sequence in `CLAWFLEET_DLQ`, filled in by `dlq.list` and `dlq.get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Reply to `clawfleet.api.dlq.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqListReply {
    /// Matching entries, newest first.
    pub entries: Vec<DlqEntry>,
}

/// Request to `clawfleet.api.task.cancel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCancelRequest {
    /// The task id.
    pub id: String,
    /// When given, a task of another tenant is reported as `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Why, kept in the record and carried by the result's error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Reply to `clawfleet.api.task.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCancelReply {
    /// The task id.
    pub id: String,
    /// `cancelled` when the task was stopped at once (it had not started);
    /// `running` when the agent running it has been told to stop it (the
    /// status becomes `cancelled` once it has).
    pub status: TaskStatus,
    /// The agent told to stop the running attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Request to `clawfleet.api.dlq.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqGetRequest {
    /// The entry's sequence in `CLAWFLEET_DLQ` (the `seq` of `dlq.list`).
    pub seq: u64,
    /// When given, an entry of another tenant is reported as `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Request to `clawfleet.api.dlq.replay`: either `seqs`, or filters that
/// select entries as `dlq.list` does. Filters given with `seqs` must match
/// too (an entry that does not is `not_found`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqReplayRequest {
    /// The entries to replay, by sequence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<u64>,
    /// Only entries of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only entries with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DlqReason>,
    /// Only entries dead-lettered at or after this time.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    /// Without `seqs`: at most this many, the newest (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Check and report what would be replayed, submit nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayedEntry {
    /// The entry's sequence in `CLAWFLEET_DLQ`.
    pub seq: u64,
    /// The entry's reason, when the entry was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DlqReason>,
    /// The entry's tenant, when the entry was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The original task id, when the entry had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_id: Option<String>,
    /// The new task's id (also with `dry_run`: the id it would get).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The new task's status: `queued`, or its current status when it had
    /// already been replayed (`duplicate`). Absent with `dry_run` and on error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// `true` when this entry had already been replayed: nothing new was submitted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
    /// Why the entry was not replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Reply to `clawfleet.api.dlq.replay`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqReplayReply {
    /// Whether this was a dry run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// One per selected entry, by sequence.
    pub entries: Vec<ReplayedEntry>,
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
