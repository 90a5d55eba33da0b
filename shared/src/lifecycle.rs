//! The task record's state machine: the transitions an agent applies to a
//! record, as pure functions of the record, unit-tested without NATS.
//!
//! ```text
//!            start                succeed
//!  queued ───────────▶ running ───────────▶ succeeded
//!    ▲                   │ │ fail, no retry left / not retryable
//!    │ hand back,        │ └──────────────▶ failed
//!    │ retry wait        │ cancel requested
//!    └───────────────────┤────────────────▶ cancelled
//!                        │ agent lost: the next start closes it `lost`
//! ```
//!
//! The rules the functions keep, whatever order agents, cancels and
//! redeliveries arrive in:
//! - a final record (succeeded, failed, cancelled) never changes again;
//! - at most one attempt is open, the last one, and only while `running`;
//! - attempt numbers never go down; only charged outcomes (not `returned`,
//!   `preempted`, `cancelled`) use one of `max_attempts`, and an attempt
//!   lost with its agent counts once;
//! - a cancel request wins over whatever the attempt did;
//! - only the agent whose attempt is open may settle it (anyone else's
//!   outcome is dropped: the task moved on).
//!
//! The caller does the I/O: it reads the record, applies a transition, and
//! writes the record back with a compare-and-set, starting over from a
//! fresh read when someone else wrote it first.

use serde_json::Value;

use crate::task::{Attempt, Outcome, RetryOn, TaskRecord, TaskStatus};
use crate::timefmt::Timestamp;
use crate::{ErrorBody, ErrorCode};

/// What a delivered copy of a task may do, given the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Start an attempt (see [`start`]).
    Proceed,
    /// The task is over: this is a stale delivery.
    AlreadyFinal,
    /// The task's other copy (the other queue of a `prefer_region` task)
    /// started first and owns it.
    OtherCopy,
    /// A cancel was asked for while no attempt of this copy ran: settle it
    /// as cancelled without running.
    CancelRequested,
}

/// Whether a copy delivered from queue `via` may start an attempt.
pub fn admit(record: &TaskRecord, via: &str) -> Admit {
    if record.status.is_final() {
        Admit::AlreadyFinal
    } else if record
        .attempts
        .iter()
        .any(|a| a.via.as_deref().is_some_and(|v| v != via))
    {
        Admit::OtherCopy
    } else if record.cancel.is_some() {
        Admit::CancelRequested
    } else {
        Admit::Proceed
    }
}

/// How [`start`] changed the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// The record says `running` with this attempt open.
    Running {
        /// The attempt's number.
        attempt: u32,
    },
    /// No attempt may start: the earlier ones were lost with their agents
    /// and used up the task's attempts, or its policy does not retry after
    /// a lost agent. The record says `failed` with this error.
    Exhausted {
        /// Attempts charged.
        attempts: u32,
        /// The task's failure.
        error: ErrorBody,
    },
}

/// The number the next attempt gets: one more than the charged attempts,
/// counting attempts still open (lost with their agents).
pub fn next_attempt(record: &TaskRecord) -> u32 {
    1 + record
        .attempts
        .iter()
        .filter(|a| a.outcome.is_none_or(Outcome::is_charged))
        .count() as u32
}

/// Closes every open attempt as lost with its agent.
pub fn close_open_attempts(record: &mut TaskRecord, now: Timestamp) {
    for a in record.attempts.iter_mut().filter(|a| a.ended_at.is_none()) {
        a.ended_at = Some(now);
        a.outcome = Some(Outcome::Lost);
        a.error = Some(ErrorBody::new(
            ErrorCode::AgentLost,
            format!("agent {} stopped answering during this attempt", a.agent),
        ));
    }
}

/// Starts an attempt of a task [`admit`] let through: `agent` runs it from
/// queue `via`. An attempt still open was lost with its agent and is closed.
pub fn start(record: &mut TaskRecord, agent: &str, via: &str, now: Timestamp) -> Started {
    debug_assert!(!record.status.is_final(), "start on a final record");
    let attempt = next_attempt(record);
    let lost = record.attempts.iter().any(|a| a.ended_at.is_none());
    let no_retry_on_loss = lost && !record.spec.retry.retries(RetryOn::AgentLost);
    close_open_attempts(record, now);
    if attempt > record.spec.max_attempts || no_retry_on_loss {
        let message = if no_retry_on_loss {
            "the agent running the task was lost and its retry policy excludes agent_lost"
                .to_string()
        } else {
            format!(
                "all {} attempts were lost with their agents",
                record.spec.max_attempts
            )
        };
        let error = ErrorBody::new(ErrorCode::AgentLost, message);
        record.status = TaskStatus::Failed;
        record.failure = Some(error.clone());
        record.finished_at = Some(now);
        return Started::Exhausted {
            attempts: attempt - 1,
            error,
        };
    }
    record.status = TaskStatus::Running;
    record.attempts.push(Attempt {
        attempt,
        agent: agent.to_string(),
        started_at: now,
        ended_at: None,
        outcome: None,
        error: None,
        via: Some(via.to_string()),
    });
    Started::Running { attempt }
}

/// How an attempt ended, as its agent saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The executor returned this result.
    Succeeded(Value),
    /// The attempt stopped without spending one of the task's attempts
    /// (`returned`: its agent was stopping; `preempted`): the task is
    /// queued again.
    HandedBack {
        /// `returned` or `preempted`.
        outcome: Outcome,
        /// Why.
        error: ErrorBody,
    },
    /// The attempt failed (`failed` or `timeout`); with `retry` the task
    /// waits for its next attempt, without it the task fails.
    Failed {
        /// `failed` or `timeout`.
        outcome: Outcome,
        /// Why.
        error: ErrorBody,
        /// Whether another attempt follows.
        retry: bool,
    },
}

/// How [`settle`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The outcome is recorded.
    Applied,
    /// A cancel was requested meanwhile: the attempt and the task are
    /// recorded `cancelled` instead.
    Cancelled,
    /// The task moved on without this attempt (another agent has it, or it
    /// is over): the record is unchanged and the outcome is dropped.
    MovedOn,
}

/// Settles `agent`'s attempt `attempt`, ended at `at`.
pub fn settle(
    record: &mut TaskRecord,
    agent: &str,
    attempt: u32,
    at: Timestamp,
    end: &End,
) -> Settled {
    let ours = !record.status.is_final()
        && record
            .attempts
            .last()
            .is_some_and(|a| a.attempt == attempt && a.agent == agent && a.ended_at.is_none());
    if !ours {
        return Settled::MovedOn;
    }
    if let Some(request) = record.cancel.clone() {
        let error = request.error();
        finish_attempt(record, at, Outcome::Cancelled, Some(error.clone()));
        record.status = TaskStatus::Cancelled;
        record.result = None;
        record.failure = Some(error);
        record.finished_at = Some(at);
        return Settled::Cancelled;
    }
    match end {
        End::Succeeded(result) => {
            finish_attempt(record, at, Outcome::Succeeded, None);
            record.status = TaskStatus::Succeeded;
            record.result = Some(result.clone());
            record.failure = None;
            record.finished_at = Some(at);
        }
        End::HandedBack { outcome, error } => {
            finish_attempt(record, at, *outcome, Some(error.clone()));
            record.status = TaskStatus::Queued;
        }
        End::Failed {
            outcome,
            error,
            retry,
        } => {
            finish_attempt(record, at, *outcome, Some(error.clone()));
            if *retry {
                record.status = TaskStatus::Queued;
            } else {
                record.status = TaskStatus::Failed;
                record.failure = Some(error.clone());
                record.finished_at = Some(at);
            }
        }
    }
    Settled::Applied
}

/// What asking to cancel did to the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAsked {
    /// No attempt was running: the task is `cancelled` now.
    Cancelled,
    /// An attempt runs: the request is recorded, and the attempt's agent
    /// settles the task as cancelled when it stops (see [`settle`]).
    Requested,
    /// Asked before and the attempt still runs: nothing changed (tell its
    /// agent again).
    AlreadyRequested,
    /// The task is over; nothing changed.
    AlreadyFinal,
}

/// Records a cancel request made at `now` for `reason`.
pub fn request_cancel(
    record: &mut TaskRecord,
    reason: Option<String>,
    now: Timestamp,
) -> CancelAsked {
    if record.status.is_final() {
        return CancelAsked::AlreadyFinal;
    }
    let asked_before = record.cancel.is_some();
    let request = record
        .cancel
        .get_or_insert(crate::task::CancelRequest {
            requested_at: now,
            reason,
        })
        .clone();
    if record.open_attempt().is_none() {
        record.status = TaskStatus::Cancelled;
        record.failure = Some(request.error());
        record.finished_at = Some(request.requested_at);
        CancelAsked::Cancelled
    } else if asked_before {
        CancelAsked::AlreadyRequested
    } else {
        CancelAsked::Requested
    }
}

/// Cancels a task whose cancel request no running agent settled (its agent
/// was lost): the open attempt is closed as lost. `false`: nothing to do
/// (no request, or the task is over).
pub fn cancel_unstarted(record: &mut TaskRecord, now: Timestamp) -> bool {
    let Some(request) = record.cancel.clone().filter(|_| !record.status.is_final()) else {
        return false;
    };
    close_open_attempts(record, now);
    record.status = TaskStatus::Cancelled;
    record.failure = Some(request.error());
    record.finished_at = Some(now);
    true
}

/// Ends the open (last) attempt.
fn finish_attempt(
    record: &mut TaskRecord,
    at: Timestamp,
    outcome: Outcome,
    error: Option<ErrorBody>,
) {
    if let Some(a) = record.attempts.last_mut() {
        a.ended_at = Some(at);
        a.outcome = Some(outcome);
        a.error = error;
    }
}

/// Checks the rules in this module's documentation on one record; the
/// first one broken, if any.
pub fn check(record: &TaskRecord) -> Result<(), String> {
    let open: Vec<usize> = record
        .attempts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.ended_at.is_none())
        .map(|(i, _)| i)
        .collect();
    match open.as_slice() {
        [] if record.status == TaskStatus::Running => {
            return Err("running without an open attempt".into())
        }
        [] => {}
        [i] if *i + 1 == record.attempts.len() && record.status == TaskStatus::Running => {}
        _ => {
            return Err(format!(
                "open attempts at {open:?} with status {}",
                record.status
            ))
        }
    }
    let mut charged = 0;
    let mut last = 0;
    for a in &record.attempts {
        if a.attempt < last {
            return Err(format!("attempt {} after attempt {last}", a.attempt));
        }
        if a.attempt != charged + 1 {
            return Err(format!(
                "attempt numbered {} after {charged} charged attempts",
                a.attempt
            ));
        }
        last = a.attempt;
        if a.outcome.is_none_or(Outcome::is_charged) {
            charged += 1;
        }
        if a.outcome.is_some() != a.ended_at.is_some() {
            return Err(format!("attempt {} has an outcome xor an end", a.attempt));
        }
    }
    if charged > record.spec.max_attempts {
        return Err(format!(
            "{charged} charged attempts of at most {}",
            record.spec.max_attempts
        ));
    }
    if record.status.is_final() != record.finished_at.is_some() {
        return Err(format!(
            "status {} with finished_at {:?}",
            record.status, record.finished_at
        ));
    }
    if (record.status == TaskStatus::Succeeded) != record.result.is_some() {
        return Err(format!(
            "status {} with result {:?}",
            record.status, record.result
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
