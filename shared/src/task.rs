//! The task as clients submit it, as agents receive it, and as it is recorded.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorBody;
use crate::timefmt::{self, Timestamp};

/// Default task timeout when the submitter gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default number of attempts when the submitter gives none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Task priority. Agents always take the highest-priority compatible work first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Starts before everything else.
    Critical,
    /// Starts before normal and low work.
    High,
    /// The default.
    #[default]
    Normal,
    /// Runs when nothing more urgent is waiting.
    Low,
}

impl Priority {
    /// Every priority, most urgent first: the order agents look for work in.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "critical" => Ok(Priority::Critical),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!(
                "unknown priority {}: expected critical, high, normal or low",
                crate::strict::echo(other)
            )),
        }
    }
}

/// A validated task, as the dispatcher routes it and an agent receives it.
///
/// Clients submit a looser form (most fields optional); the dispatcher fills in
/// defaults, normalises `requires` (sorted, de-duplicated) and assigns an `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique task id; the submitter's idempotency key when one was given.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Priority.
    pub priority: Priority,
    /// Capabilities an agent must have, sorted and de-duplicated.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Residency: when set, only agents in this region may run the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Opaque input for the executor.
    #[serde(default)]
    pub payload: Value,
    /// Deadline for one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before the task fails for good.
    pub max_attempts: u32,
    /// Free-form labels, carried into records, results and events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the task was accepted.
    #[serde(with = "timefmt")]
    pub submitted_at: Timestamp,
    /// How failed attempts are retried; the dispatcher fills in the tenant's
    /// or the fleet's default when the submitter gives none.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Whether a waiting critical task may take this task's slot (it is
    /// then requeued without spending an attempt).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub preemptible: bool,
    /// Soft residency: agents of this region get the task first; others
    /// may run it from `prefer_region_until` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_region: Option<String>,
    /// When agents outside `prefer_region` may take the task.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub prefer_region_until: Option<Timestamp>,
    /// No attempt starts before this time. The dispatcher turns a submitted
    /// `delay` into this absolute time; a time in the past means "now".
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<Timestamp>,
    /// The dead letter this task replays, when it was submitted by
    /// `clawfleet.api.dlq.replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<ReplayOf>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The link from a replayed task to the dead letter it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayOf {
    /// The original task's id, when the dead letter had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The dead letter's sequence in `CLAWFLEET_DLQ`.
    pub dlq_seq: u64,
}

impl TaskSpec {
    /// How long the task must still wait before an attempt may start, if at all.
    pub fn wait_left(&self, now: Timestamp) -> Option<Duration> {
        let not_before = self.not_before?;
        let left = not_before - now;
        (left > time::Duration::ZERO).then(|| left.unsigned_abs())
    }
}

/// Which failures are worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The attempt ran past the task timeout.
    Timeout,
    /// The executor reported a retryable error (fatal errors never retry).
    ExecutorError,
    /// The agent died, hung or was removed from the pool mid-attempt.
    AgentLost,
}

impl RetryOn {
    /// Every kind, the default.
    pub const ALL: [RetryOn; 3] = [RetryOn::Timeout, RetryOn::ExecutorError, RetryOn::AgentLost];
}

/// How a task's failed attempts are retried, up to `max_attempts`.
///
/// The back-off before attempt `n + 1` is `backoff * 2^(n-1)` with ±20%
/// jitter, never more than `backoff_max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Back-off before the second attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Longest back-off.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Failures that are retried; others fail the task at once.
    pub on: Vec<RetryOn>,
    /// Run the next attempt on another agent than the one that failed, while
    /// another compatible agent is up (it waits at most `avoid_for` for one
    /// to take the task).
    pub different_agent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            on: RetryOn::ALL.to_vec(),
            different_agent: true,
        }
    }
}

impl RetryPolicy {
    /// Whether a failure of this kind is retried.
    pub fn retries(&self, kind: RetryOn) -> bool {
        self.on.contains(&kind)
    }

    /// Checks the bounds; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.backoff > self.backoff_max {
            return Err("retry.backoff must not exceed retry.backoff_max".into());
        }
        if self.backoff_max > Duration::from_secs(24 * 3600) {
            return Err("retry.backoff_max must be at most 24h".into());
        }
        Ok(())
    }
}

/// Where a task is in its life. `succeeded`, `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting in a queue for a compatible agent (also between retries).
    Queued,
    /// An agent is running an attempt.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished without a result after its last attempt, or with a fatal error.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl TaskStatus {
    /// Whether the task will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The executor returned a result.
    Succeeded,
    /// The executor reported an error.
    Failed,
    /// The attempt ran past the task timeout and was stopped.
    Timeout,
    /// The agent disappeared mid-attempt; noticed when the task was redelivered.
    Lost,
    /// The agent was stopping and handed the task back unfinished. A returned
    /// attempt does not count against `max_attempts`.
    Returned,
    /// Stopped to free its slot for a waiting critical task and requeued at
    /// its own priority; does not count against `max_attempts`.
    Preempted,
    /// The task was cancelled on request while this attempt ran. Not
    /// counted against `max_attempts` (there is no next attempt anyway).
    Cancelled,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Lost => "lost",
            Outcome::Returned => "returned",
            Outcome::Preempted => "preempted",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// Whether an attempt that ended this way uses up one of `max_attempts`.
    pub fn is_charged(self) -> bool {
        !matches!(
            self,
            Outcome::Returned | Outcome::Preempted | Outcome::Cancelled
        )
    }
}

/// One attempt at running a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number, counting only attempts charged against
    /// `max_attempts` (a returned attempt shares its number with the next).
    pub attempt: u32,
    /// Agent that ran it.
    pub agent: String,
    /// When the agent started it.
    #[serde(with = "timefmt")]
    pub started_at: Timestamp,
    /// When it ended; absent while running.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<Timestamp>,
    /// How it ended; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The error, for an attempt that did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// The queue subject the attempt's message came from (a task with
    /// `prefer_region` has two copies, one per queue; the first to start
    /// owns the task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The record of a task, kept in the [`crate::subjects::BUCKET_TASKS`] bucket
/// and returned by `clawfleet.api.task.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as accepted.
    #[serde(flatten)]
    pub spec: TaskSpec,
    /// Current status.
    pub status: TaskStatus,
    /// The queue subject the task was routed to.
    pub queue: String,
    /// Sequence of the intake message that created the record. Lets a
    /// dispatcher tell its own redelivered intake message (finish routing it)
    /// from a later duplicate submission (ignore it).
    #[serde(default)]
    pub intake_seq: u64,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The executor's result, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the task failed, once failed, or why it was cancelled (code
    /// `cancelled`). (Not named `error`: a reply with a top-level `error`
    /// field is an API error.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ErrorBody>,
    /// When the task reached a final status.
    #[serde(
        default,
        with = "timefmt::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<Timestamp>,
    /// Set when someone asked `clawfleet.api.task.cancel` to stop the task.
    /// A queued task is `cancelled` at once; a running one stays `running`
    /// with this block until its agent has stopped the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelRequest>,
}

impl TaskRecord {
    /// A record for a task that has just been queued on `queue`.
    pub fn queued(spec: TaskSpec, queue: String, intake_seq: u64) -> Self {
        Self {
            spec,
            status: TaskStatus::Queued,
            queue,
            intake_seq,
            attempts: Vec::new(),
            result: None,
            failure: None,
            finished_at: None,
            cancel: None,
        }
    }

    /// The attempt in progress, if any (the last one, still without an end).
    pub fn open_attempt(&self) -> Option<&Attempt> {
        self.attempts.last().filter(|a| a.ended_at.is_none())
    }
}

/// A request to cancel a task, as recorded in [`TaskRecord::cancel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// When the cancel was asked for.
    #[serde(with = "timefmt")]
    pub requested_at: Timestamp,
    /// Why, as the requester said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CancelRequest {
    /// The error a cancelled task and its cancelled attempt carry.
    pub fn error(&self) -> ErrorBody {
        ErrorBody::new(
            crate::ErrorCode::Cancelled,
            match &self.reason {
                Some(reason) => format!("cancelled on request: {reason}"),
                None => "cancelled on request".to_string(),
            },
        )
    }
}

/// Sent on `clawfleet.agent.cancel.<agent_id>` (core NATS) to the agent
/// running a task whose cancel was requested: it stops the attempt at once.
/// The record's `cancel` block stays the authority; an agent that misses
/// this notice still settles the task `cancelled` when the attempt ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNotice {
    /// The task to stop.
    pub task_id: String,
    /// The attempt the requester saw running.
    pub attempt: u32,
}

/// The one final message per task on `clawfleet.results.<tenant>.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: TaskStatus,
    /// The executor's result, when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, when failed; why it was cancelled (code `cancelled`),
    /// when cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// How many attempts were made.
    pub attempts: u32,
    /// The agent of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The task's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the task was submitted.
    #[serde(with = "timefmt")]
    pub submitted_at: Timestamp,
    /// When it finished.
    #[serde(with = "timefmt")]
    pub finished_at: Timestamp,
}

impl TaskResult {
    /// The result a final record stands for; `None` while the task is not final.
    ///
    /// `attempts` is the number of the last attempt (a cancelled or returned
    /// attempt carries the number the next attempt would have reused).
    pub fn from_record(record: &TaskRecord) -> Option<TaskResult> {
        if !record.status.is_final() {
            return None;
        }
        let spec = &record.spec;
        Some(TaskResult {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            status: record.status,
            result: record.result.clone(),
            error: record.failure.clone(),
            attempts: record.attempts.iter().map(|a| a.attempt).max().unwrap_or(0),
            agent: record.attempts.last().map(|a| a.agent.clone()),
            labels: spec.labels.clone(),
            submitted_at: spec.submitted_at,
            finished_at: record.finished_at.unwrap_or_else(timefmt::now),
        })
    }
}

/// What an attempt used, as its executor reports it: the basis of cost
/// tracking (wall time is measured by the agent for every attempt).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub tokens_in: u64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub tokens_out: u64,
    /// Model that served the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}
