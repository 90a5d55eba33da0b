//! Errors that cross the wire: a stable `code` plus a human `message`.
//!
//! Clients branch on [`ErrorCode`]; the message is for people and may change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every error code clawfleet puts on the wire. Serialized in snake_case.
///
/// New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message body is not valid JSON.
    InvalidJson,
    /// The JSON is valid but is not a task object, or a field has the wrong type.
    InvalidTask,
    /// The task has a field clawfleet does not know (usually a typo).
    UnknownField,
    /// The task has no `tenant`.
    MissingTenant,
    /// The tenant is not `[a-z0-9][a-z0-9_-]{0,63}`.
    InvalidTenant,
    /// The tenant in the body differs from the tenant in the intake subject.
    TenantMismatch,
    /// The id is not `[A-Za-z0-9_-]+`.
    InvalidId,
    /// The id is longer than 64 characters.
    IdTooLong,
    /// The same id is already used by another tenant.
    IdConflict,
    /// `priority` is not one of `critical`, `high`, `normal`, `low`.
    InvalidPriority,
    /// A capability name is not `[a-z0-9][a-z0-9_-]{0,31}` or there are too many.
    InvalidCapability,
    /// No registered agent profile offers all the required capabilities.
    UnknownCapability,
    /// The region is not `[a-z0-9][a-z0-9_-]{0,31}`.
    InvalidRegion,
    /// No agent profile with the required capabilities serves that region.
    UnknownRegion,
    /// `timeout` is not a humantime duration within the allowed bounds.
    InvalidTimeout,
    /// `max_attempts` is not between 1 and the configured maximum.
    InvalidMaxAttempts,
    /// `labels` is not a map of short strings.
    InvalidLabels,
    /// `retry` is not a valid retry policy.
    InvalidRetry,
    /// `prefer_region` is not a region name, or contradicts `region`.
    InvalidPreferRegion,
    /// An attempt was stopped to free its slot for a critical task.
    Preempted,
    /// The tenant is over its submission rate (`quota.submit_rate`).
    RateLimited,
    /// The tenant has as many tasks queued as its quota allows (`quota.max_queued`).
    QuotaExceeded,
    /// The tenant spent its hard cost budget for the day or month; new tasks
    /// are refused until the period ends (running work finishes).
    BudgetExceeded,
    /// The payload is larger than the configured limit.
    PayloadTooLarge,
    /// `not_before` or `delay` is malformed, both are given, or the wait is
    /// longer than the configured maximum.
    InvalidDelay,
    /// An API request could not be understood.
    InvalidRequest,
    /// A log search's full-text query is not valid FTS5 syntax.
    InvalidQuery,
    /// The requested task or entry does not exist.
    NotFound,
    /// The task already has a final status, so it cannot be cancelled.
    AlreadyFinal,
    /// The task was cancelled on request.
    Cancelled,
    /// The executor reported a failure (retryable).
    ExecutorFailed,
    /// The executor rejected the task as impossible to run (not retried).
    ExecutorRejected,
    /// The attempt ran past the task's timeout.
    Timeout,
    /// The agent running the attempt disappeared without finishing it.
    AgentLost,
    /// A queued message could not be decoded as a task.
    Poison,
    /// The service is starting, stopping or cannot reach NATS; retry later.
    Unavailable,
    /// An unexpected internal error; the message says more.
    Internal,
    /// No valid credentials were given (HTTP 401).
    Unauthorized,
    /// The credentials do not allow this (HTTP 403).
    Forbidden,
}

impl ErrorCode {
    /// The snake_case wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidTask => "invalid_task",
            Self::UnknownField => "unknown_field",
            Self::MissingTenant => "missing_tenant",
            Self::InvalidTenant => "invalid_tenant",
            Self::TenantMismatch => "tenant_mismatch",
            Self::InvalidId => "invalid_id",
            Self::IdTooLong => "id_too_long",
            Self::IdConflict => "id_conflict",
            Self::InvalidPriority => "invalid_priority",
            Self::InvalidCapability => "invalid_capability",
            Self::UnknownCapability => "unknown_capability",
            Self::InvalidRegion => "invalid_region",
            Self::UnknownRegion => "unknown_region",
            Self::InvalidTimeout => "invalid_timeout",
            Self::InvalidMaxAttempts => "invalid_max_attempts",
            Self::InvalidLabels => "invalid_labels",
            Self::InvalidRetry => "invalid_retry",
            Self::InvalidPreferRegion => "invalid_prefer_region",
            Self::Preempted => "preempted",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::BudgetExceeded => "budget_exceeded",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidDelay => "invalid_delay",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidQuery => "invalid_query",
            Self::NotFound => "not_found",
            Self::AlreadyFinal => "already_final",
            Self::Cancelled => "cancelled",
            Self::ExecutorFailed => "executor_failed",
            Self::ExecutorRejected => "executor_rejected",
            Self::Timeout => "timeout",
            Self::AgentLost => "agent_lost",
            Self::Poison => "poison",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it appears on the wire: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body from a code and any message, cut to
    /// [`crate::strict::MAX_MESSAGE_BYTES`]: messages may quote client input
    /// or an executor's output, and an error must always fit its reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        crate::strict::cut_in_place(&mut message, crate::strict::MAX_MESSAGE_BYTES);
        Self { code, message }
    }

    /// The same error with its message cut to
    /// [`crate::strict::MAX_MESSAGE_BYTES`], for one that came from the wire.
    pub fn bounded(mut self) -> Self {
        crate::strict::cut_in_place(&mut self.message, crate::strict::MAX_MESSAGE_BYTES);
        self
    }
}

/// The reply of any API call that failed: `{"error": {"code": ..., "message": ...}}`.
///
/// Exactly one field: a success body never has a top-level `error`, and an
/// error reply never has anything else.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: ErrorBody,
}
