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

/// Request to `clawfleet.api.agents.list` and `clawfleet.api.queues.list`
/// (an empty body is the first page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Continue after the last item of a previous page: that reply's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Reply to `clawfleet.api.agents.list`: a page within the reply budget
/// ([`reply_budget`]); follow `next_cursor` for the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentsReply {
    /// Agents whose registration has not expired, by id.
    pub agents: Vec<AgentInfo>,
    /// Present when more agents follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
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
    /// Tasks an agent holds and runs now (from the agents' heartbeats).
    pub running: u64,
    /// Tasks handed back to the queue for a while: waiting for their
    /// `not_before`, a retry back-off, or a slot of their tenant (JetStream
    /// counts them as delivered and not yet acknowledged). A task cancelled
    /// while it waits is counted here until its wait ends and an agent drops it.
    #[serde(default)]
    pub delayed: u64,
    /// Whether a pause rule holds it.
    #[serde(default)]
    pub paused: bool,
    /// When the oldest task no agent has taken yet was queued (absent when
    /// none waits): its age is how long the queue keeps work waiting.
    #[serde(
        default,
        with = "crate::timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_waiting_at: Option<crate::timefmt::Timestamp>,
}

/// Reply to `clawfleet.api.queues.list`: a page within the reply budget
/// ([`reply_budget`]); follow `next_cursor` for the rest of the queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuesReply {
    /// Known queues, by priority then subject.
    pub queues: Vec<QueueDepth>,
    /// Present when more queues follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
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
    /// Continue after the last entry of a previous page: that reply's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
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
///
/// A dead letter always fits its stream: the task is kept whole when its
/// encoding is at most [`DLQ_TASK_MAX_BYTES`] (a validated task always is
/// kept, its size is bounded by `max_payload_bytes`); a larger raw body is
/// kept as a [`BodySummary`] (its size, digest and first bytes) instead.
/// Build one with [`DlqEntry::raw`] or [`DlqEntry::validated`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqEntry {
    /// Why it is here.
    pub reason: DlqReason,
    /// The error that put it here. (Not named `error`: a reply with a
    /// top-level `error` is an API error, and `dlq.get` replies with an entry.
    /// Entries stored under the old name still read.)
    #[serde(alias = "error")]
    pub failure: ErrorBody,
    /// The task id, when one was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tenant (`_` when none could be determined).
    pub tenant: String,
    /// The subject the task arrived on (cut to 256 bytes).
    pub subject: String,
    /// The task: the validated spec when there is one, else the raw body
    /// (as JSON when it parsed, else as a string); `null` when the body was
    /// too large to keep and only its [`DlqEntry::body`] summary is.
    pub task: Value,
    /// Present when the raw body was too large to keep whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodySummary>,
    /// When it was dead-lettered.
    #[serde(with = "timefmt")]
    pub time: Timestamp,
    /// Stream sequence in `CLAWFLEET_DLQ`, filled in by `dlq.list` and `dlq.get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Set by `dlq.list` when it left out this entry's `task` to keep the
    /// reply small; `dlq.get` returns the whole entry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub task_omitted: bool,
}

/// Largest encoded `task` a dead letter keeps whole (64 KiB).
pub const DLQ_TASK_MAX_BYTES: usize = 64 * 1024;
/// Bytes of a too-large body a dead letter keeps, as text.
pub const DLQ_BODY_HEAD_BYTES: usize = 1024;
/// Longest `subject` a dead letter keeps.
const DLQ_SUBJECT_MAX_BYTES: usize = 256;

/// What a dead letter keeps of a body too large to keep whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodySummary {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, in hex: enough to match it against the submitter's copy.
    pub sha256: String,
    /// Its first [`DLQ_BODY_HEAD_BYTES`] bytes, as text (invalid UTF-8
    /// replaced by U+FFFD).
    pub head: String,
}

impl BodySummary {
    /// Summarises `body`.
    pub fn of(body: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(body);
        let head = String::from_utf8_lossy(&body[..body.len().min(DLQ_BODY_HEAD_BYTES)]);
        BodySummary {
            bytes: body.len() as u64,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            head: head.into_owned(),
        }
    }
}

impl DlqEntry {
    /// A dead letter for a raw message body that did not become a task
    /// (refused at intake, or poison in a queue).
    pub fn raw(
        reason: DlqReason,
        failure: ErrorBody,
        id: Option<String>,
        tenant: String,
        subject: &str,
        body: &[u8],
    ) -> Self {
        let (task, summary) = raw_task(body);
        DlqEntry {
            reason,
            failure: failure.bounded(),
            id,
            tenant,
            subject: crate::strict::cut(subject, DLQ_SUBJECT_MAX_BYTES),
            task,
            body: summary,
            time: timefmt::now(),
            seq: None,
            task_omitted: false,
        }
    }

    /// A dead letter for a validated task (failed for good, or refused
    /// after validation).
    pub fn validated(
        reason: DlqReason,
        failure: ErrorBody,
        spec: &crate::TaskSpec,
        subject: &str,
        time: Timestamp,
    ) -> Self {
        DlqEntry {
            reason,
            failure: failure.bounded(),
            id: Some(spec.id.clone()),
            tenant: spec.tenant.clone(),
            subject: crate::strict::cut(subject, DLQ_SUBJECT_MAX_BYTES),
            task: serde_json::to_value(spec).unwrap_or_default(),
            body: None,
            time,
            seq: None,
            task_omitted: false,
        }
    }

    /// The same entry with its task replaced by a summary of its encoding:
    /// the form that always fits a stream.
    pub fn compacted(mut self) -> Self {
        if !self.task.is_null() {
            let bytes = serde_json::to_vec(&self.task).unwrap_or_default();
            self.body = Some(BodySummary::of(&bytes));
            self.task = Value::Null;
        }
        self
    }
}

/// Reply to `clawfleet.api.dlq.list`. Bounded in bytes as well as in
/// count: an entry whose task is large is listed without it
/// (`task_omitted`; `dlq.get` has it), and a page that would exceed the
/// reply budget ([`reply_budget`]) ends early with `truncated`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqListReply {
    /// Matching entries, newest first.
    pub entries: Vec<DlqEntry>,
    /// Present when more entries may match: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// `true` when the page holds fewer entries than `limit` although more
    /// match, to keep the reply within its byte budget.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// Largest encoded `task` that `dlq.list` shows (4 KiB); larger ones are
/// left out of the listing (`task_omitted`).
pub const DLQ_LIST_TASK_MAX_BYTES: usize = 4 * 1024;

/// The most bytes a list or search reply may hold: 512 KiB, or less when
/// the server's max payload (`max_payload`, from its INFO) is smaller, with
/// room left for the reply's own framing.
pub fn reply_budget(max_payload: usize) -> usize {
    (512 * 1024)
        .min(max_payload.saturating_sub(8 * 1024))
        .max(4 * 1024)
}

/// Calls a `clawfleet.api.*` subject from a service: the reply decoded, or
/// what went wrong as an API error (`unavailable` when nothing answers in
/// `timeout`, the service's own error reply as it sent it, `internal` for a
/// reply that does not decode), naming the subject.
pub async fn request<R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    body: bytes::Bytes,
    timeout: std::time::Duration,
) -> Result<R, ErrorBody> {
    let unavailable =
        |why: String| ErrorBody::new(crate::ErrorCode::Unavailable, format!("{subject}: {why}"));
    let reply = match tokio::time::timeout(timeout, client.request(subject.to_string(), body)).await
    {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(unavailable(
                "nothing answers: is its service running?".to_string(),
            ))
        }
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Err(_) => {
            return Err(unavailable(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            )))
        }
    };
    if let Ok(e) = serde_json::from_slice::<crate::error::ErrorReply>(&reply.payload) {
        return Err(e.error.bounded());
    }
    serde_json::from_slice(&reply.payload).map_err(|e| {
        ErrorBody::new(
            crate::ErrorCode::Internal,
            format!("{subject}: unreadable reply: {e}"),
        )
    })
}

/// The first of `items` whose JSON encodings fit `budget` bytes together
/// (with room for a reply's own framing), and whether some were left out.
pub fn fit_budget<T: Serialize>(items: Vec<T>, budget: usize) -> (Vec<T>, bool) {
    let mut used = 64;
    let total = items.len();
    let mut out = Vec::with_capacity(total);
    for item in items {
        used += serde_json::to_vec(&item).map_or(usize::MAX / 2, |v| v.len()) + 1;
        if used > budget {
            break;
        }
        out.push(item);
    }
    let more = out.len() < total;
    (out, more)
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

/// A raw message body as a dead letter keeps it: the JSON it holds (when it
/// is JSON without repeated keys), or the body as a string; when that is
/// larger than [`DLQ_TASK_MAX_BYTES`], `null` and a summary instead.
pub fn raw_task(body: &[u8]) -> (Value, Option<BodySummary>) {
    if body.len() <= DLQ_TASK_MAX_BYTES {
        let json = match crate::strict::check(body) {
            Ok(()) | Err(crate::strict::DecodeError::NotObject(_)) => {
                serde_json::from_slice::<Value>(body).ok()
            }
            Err(_) => None,
        };
        let task =
            json.unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
        // Escaping can make a string's encoding up to six times its size.
        if serde_json::to_vec(&task).is_ok_and(|v| v.len() <= DLQ_TASK_MAX_BYTES) {
            return (task, None);
        }
    }
    (Value::Null, Some(BodySummary::of(body)))
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
    /// Every queue: required (and alone) for a rule that names no field, so
    /// a rule covering the whole fleet is never the result of empty input.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
}

impl std::fmt::Display for PauseRule {
    /// `tenant acme, priority low`, or `every queue`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant {t}"));
        }
        if let Some(p) = self.priority {
            parts.push(format!("priority {p}"));
        }
        if let Some(c) = &self.capability {
            parts.push(format!("capability {c}"));
        }
        if parts.is_empty() {
            f.write_str("every queue")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
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

    /// Whether the rule names no field, so it matches every queue.
    pub fn is_everything(&self) -> bool {
        self.tenant.is_none() && self.priority.is_none() && self.capability.is_none()
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
