//! One task attempt, from delivery to ack.
//!
//! Order matters for "never lost, never run twice to completion":
//! 1. read the record (on a first delivery, rebuild it from the message and
//!    the revision the dispatcher sent along instead); a final record means
//!    this is a stale re-delivery: ack it;
//! 2. record the attempt as running (an earlier attempt still open was lost
//!    with its agent: it is closed as `lost`);
//! 3. run the executor under the task timeout, telling JetStream we are
//!    still working so the message is not redelivered meanwhile;
//! 4. on success publish the result (waiting for the stream's ack), then
//!    update the record, then ack; on a retryable failure with attempts
//!    left record it and nak with back-off; otherwise publish the failure,
//!    dead-letter the task and terminate the message.
//!
//! A crash between any two steps leaves the message unacked; the next agent
//! to get it resumes from the record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind};
use async_nats::HeaderMap;
use clawfleet_shared::api::{self, DlqEntry, DlqReason};
use clawfleet_shared::events::{TaskEvent, TaskEventKind};
use clawfleet_shared::task::{Attempt as AttemptRecord, Outcome};
use clawfleet_shared::{
    emit, subjects, timefmt, ErrorBody, ErrorCode, TaskRecord, TaskResult, TaskSpec, TaskStatus,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::executor::{self, ExecError, Executor};
use crate::records::{self, RecordError, Versioned};

/// What every attempt needs.
pub struct Runner {
    pub(crate) agent_id: String,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) tasks: kv::Store,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// How the attempt's executor call ended.
enum Ended {
    Ok(executor::Output),
    Err(ExecError),
    TimedOut,
}

impl Runner {
    /// Handles one delivered queue message. `ack_wait` is the consumer's.
    pub async fn handle(
        &self,
        msg: jetstream::Message,
        ack_wait: Duration,
        cancel: CancellationToken,
    ) {
        let spec: TaskSpec = match serde_json::from_slice(&msg.payload) {
            Ok(spec) => spec,
            Err(e) => return self.poison(msg, e.to_string()).await,
        };
        let delivery = msg.info().map(|i| i.delivered).unwrap_or(1);
        // Every line logged while handling the task (the executor's output
        // included) carries the task, its tenant and this agent.
        let span = tracing::info_span!(
            "task",
            task_id = %spec.id,
            tenant = %spec.tenant,
            agent_id = %self.agent_id,
            capability = tracing::field::Empty,
            delivery
        );
        if !spec.requires.is_empty() {
            span.record("capability", subjects::capkey(&spec.requires));
        }
        let attempt = self
            .attempt(&msg, spec, ack_wait, cancel)
            .instrument(span.clone())
            .await;
        if let Err(e) = attempt {
            // Leave the message to be redelivered; the record tells the next agent where things stand.
            tracing::warn!(parent: &span, error = %e, "could not complete the attempt's bookkeeping; the task will be redelivered");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }

    async fn attempt(
        &self,
        msg: &jetstream::Message,
        spec: TaskSpec,
        ack_wait: Duration,
        cancel: CancellationToken,
    ) -> Result<(), RecordError> {
        // First delivery: the record is as the dispatcher created it, at the
        // revision it passed along, so it need not be read. If it changed
        // meanwhile, the write below fails and we start over from a read.
        let mut as_created = self.as_created(msg, &spec);
        let mut conflicts = 0;
        let (started, attempt) = loop {
            let current = match as_created.take() {
                Some(v) => v,
                None => match records::read(&self.tasks, &spec.id).await {
                    Ok(v) => v,
                    Err(RecordError::Missing(_)) => self.recreate(&spec, msg).await?,
                    Err(e) => return Err(e),
                },
            };
            if current.record.status.is_final() {
                tracing::info!(task_id = %spec.id, status = %current.record.status, "already finished; dropping a stale delivery");
                let _ = msg.ack().await;
                return Ok(());
            }

            // Attempts still open were lost with their agents and count; attempts
            // handed back by a stopping agent do not.
            let attempt = 1 + current
                .record
                .attempts
                .iter()
                .filter(|a| a.outcome.is_none_or(Outcome::is_charged))
                .count() as u32;
            let now = timefmt::now();
            if attempt > spec.max_attempts {
                // Every attempt was used up by agents that vanished mid-task.
                let error = ErrorBody::new(
                    ErrorCode::AgentLost,
                    format!(
                        "all {} attempts were lost with their agents",
                        spec.max_attempts
                    ),
                );
                let v = records::update(&self.tasks, &spec.id, Some(current), |r| {
                    close_open_attempts(r, now);
                    true
                })
                .await?;
                return self.fail(msg, &spec, v, attempt - 1, error).await;
            }

            let mut record = current.record;
            close_open_attempts(&mut record, now);
            record.status = TaskStatus::Running;
            record.attempts.push(AttemptRecord {
                attempt,
                agent: self.agent_id.clone(),
                started_at: now,
                ended_at: None,
                outcome: None,
                error: None,
            });
            match records::write_at(&self.tasks, &spec.id, record, current.revision).await {
                Ok(v) => break (v, attempt),
                // Someone else wrote it since the revision we had: read again.
                Err(RecordError::Conflict(id)) if conflicts < records::MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(task_id = %id, "record changed meanwhile; reading it again");
                }
                Err(e) => return Err(e),
            }
        };
        tracing::debug!(attempt, "attempt started");
        let mut event = TaskEvent::new(TaskEventKind::Started, Some(spec.id.clone()), &spec.tenant);
        event.attempt = Some(attempt);
        event.agent = Some(self.agent_id.clone());
        event.priority = Some(spec.priority);
        emit::task_event(&self.client, &event).await;

        let ended = self.execute(msg, &spec, attempt, ack_wait, cancel).await;
        let ended_at = timefmt::now();
        match ended {
            Ended::Ok(output) => {
                let result = TaskResult {
                    id: spec.id.clone(),
                    tenant: spec.tenant.clone(),
                    status: TaskStatus::Succeeded,
                    result: Some(output.result.clone()),
                    error: None,
                    attempts: attempt,
                    agent: Some(self.agent_id.clone()),
                    labels: spec.labels.clone(),
                    submitted_at: spec.submitted_at,
                    finished_at: ended_at,
                };
                self.publish_result(&result).await?;
                records::update(&self.tasks, &spec.id, Some(started), |r| {
                    finish_attempt(r, attempt, ended_at, Outcome::Succeeded, None);
                    r.status = TaskStatus::Succeeded;
                    r.result = Some(output.result.clone());
                    r.failure = None;
                    r.finished_at = Some(ended_at);
                    true
                })
                .await?;
                self.completed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, "attempt succeeded");
                let mut event = TaskEvent::new(
                    TaskEventKind::Succeeded,
                    Some(spec.id.clone()),
                    &spec.tenant,
                );
                event.attempt = Some(attempt);
                event.agent = Some(self.agent_id.clone());
                emit::task_event(&self.client, &event).await;
                let _ = msg.ack().await;
                Ok(())
            }
            Ended::Err(ExecError::Cancelled) => {
                // Shutting down: hand the task back at once for another agent,
                // without spending one of its attempts.
                let error =
                    ErrorBody::new(ErrorCode::Unavailable, ExecError::Cancelled.to_string());
                records::update(&self.tasks, &spec.id, Some(started), |r| {
                    finish_attempt(r, attempt, ended_at, Outcome::Returned, Some(error.clone()));
                    r.status = TaskStatus::Queued;
                    true
                })
                .await?;
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                Ok(())
            }
            other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let (outcome, error, retryable) = match other {
                    Ended::TimedOut => (
                        Outcome::Timeout,
                        ErrorBody::new(
                            ErrorCode::Timeout,
                            format!(
                                "attempt ran past the task timeout of {}",
                                humantime::format_duration(spec.timeout)
                            ),
                        ),
                        true,
                    ),
                    Ended::Err(e) => {
                        let retryable = matches!(e, ExecError::Retryable(_));
                        (
                            Outcome::Failed,
                            ErrorBody::new(e.code(), e.to_string()),
                            retryable,
                        )
                    }
                    Ended::Ok(_) => unreachable!("handled above"),
                };
                tracing::warn!(task_id = %spec.id, attempt, code = %error.code, "attempt failed: {}", error.message);
                let retry = retryable && attempt < spec.max_attempts;
                let v = records::update(&self.tasks, &spec.id, Some(started), |r| {
                    finish_attempt(r, attempt, ended_at, outcome, Some(error.clone()));
                    if retry {
                        r.status = TaskStatus::Queued;
                    }
                    true
                })
                .await?;
                if retry {
                    let delay = self.backoff(attempt);
                    let mut event = TaskEvent::new(
                        TaskEventKind::Retrying,
                        Some(spec.id.clone()),
                        &spec.tenant,
                    );
                    event.attempt = Some(attempt);
                    event.agent = Some(self.agent_id.clone());
                    event.error = Some(error);
                    event.retry_in_ms = Some(delay.as_millis() as u64);
                    emit::task_event(&self.client, &event).await;
                    let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                    Ok(())
                } else {
                    self.fail(msg, &spec, v, attempt, error).await
                }
            }
        }
    }

    /// Runs the executor under the task timeout, sending progress so the
    /// message is not redelivered while the work goes on.
    async fn execute(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        attempt: u32,
        ack_wait: Duration,
        cancel: CancellationToken,
    ) -> Ended {
        let ctx = executor::Attempt {
            number: attempt,
            cancel,
        };
        let run = tokio::time::timeout(spec.timeout, self.executor.run(spec, &ctx));
        tokio::pin!(run);
        let every = (ack_wait / 3).max(Duration::from_millis(50));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                r = &mut run => return match r {
                    Ok(Ok(out)) => Ended::Ok(out),
                    Ok(Err(e)) => Ended::Err(e),
                    Err(_) => Ended::TimedOut,
                },
                _ = progress.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "could not send progress");
                    }
                }
            }
        }
    }

    /// Final failure: publish the failed result, dead-letter, terminate.
    async fn fail(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        current: Versioned,
        attempts: u32,
        error: ErrorBody,
    ) -> Result<(), RecordError> {
        let finished_at = timefmt::now();
        let result = TaskResult {
            id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            status: TaskStatus::Failed,
            result: None,
            error: Some(error.clone()),
            attempts,
            agent: Some(self.agent_id.clone()),
            labels: spec.labels.clone(),
            submitted_at: spec.submitted_at,
            finished_at,
        };
        self.publish_result(&result).await?;
        records::update(&self.tasks, &spec.id, Some(current), |r| {
            r.status = TaskStatus::Failed;
            r.failure = Some(error.clone());
            r.finished_at = Some(finished_at);
            true
        })
        .await?;
        let entry = DlqEntry {
            reason: DlqReason::Failed,
            error: error.clone(),
            id: Some(spec.id.clone()),
            tenant: spec.tenant.clone(),
            subject: msg.subject.to_string(),
            task: serde_json::to_value(spec).unwrap_or_default(),
            time: finished_at,
            seq: None,
        };
        if let Err(e) = emit::dead_letter(&self.js, &entry).await {
            // The record and the result already say failed; the DLQ entry is a convenience copy.
            tracing::warn!(task_id = %spec.id, error = %e, "could not dead-letter a failed task");
        }
        let mut event = TaskEvent::new(TaskEventKind::Failed, Some(spec.id.clone()), &spec.tenant);
        event.attempt = Some(attempts);
        event.agent = Some(self.agent_id.clone());
        event.error = Some(error);
        emit::task_event(&self.client, &event).await;
        let _ = msg.ack_with(AckKind::Term).await;
        Ok(())
    }

    async fn publish_result(&self, result: &TaskResult) -> Result<(), RecordError> {
        let body = serde_json::to_vec(result).expect("result encodes");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", result.id.as_str());
        self.js
            .publish_with_headers(
                subjects::result(&result.tenant, &result.id),
                headers,
                body.into(),
            )
            .await
            .map_err(|e| RecordError::Nats(e.to_string()))?
            .await
            .map_err(|e| RecordError::Nats(e.to_string()))?;
        Ok(())
    }

    /// The record as the dispatcher created it, for a task delivered for the
    /// first time with the record's revision in its headers.
    fn as_created(&self, msg: &jetstream::Message, spec: &TaskSpec) -> Option<Versioned> {
        if msg.info().ok()?.delivered != 1 {
            return None;
        }
        let headers = msg.headers.as_ref()?;
        let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
        let revision = number(subjects::HEADER_RECORD_REVISION)?;
        let intake_seq = number(subjects::HEADER_INTAKE_SEQ)?;
        let record = TaskRecord {
            spec: spec.clone(),
            status: TaskStatus::Queued,
            queue: msg.subject.to_string(),
            intake_seq,
            attempts: Vec::new(),
            result: None,
            failure: None,
            finished_at: None,
        };
        Some(Versioned { record, revision })
    }

    /// A queued task whose record is gone (expired): recreate it so the task
    /// still runs and is still visible.
    async fn recreate(
        &self,
        spec: &TaskSpec,
        msg: &jetstream::Message,
    ) -> Result<Versioned, RecordError> {
        let record = TaskRecord {
            spec: spec.clone(),
            status: TaskStatus::Queued,
            queue: msg.subject.to_string(),
            intake_seq: 0,
            attempts: Vec::new(),
            result: None,
            failure: None,
            finished_at: None,
        };
        let bytes = serde_json::to_vec(&record).expect("record encodes");
        match self.tasks.create(&spec.id, bytes.into()).await {
            Ok(revision) => Ok(Versioned { record, revision }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                records::read(&self.tasks, &spec.id).await
            }
            Err(e) => Err(RecordError::Nats(e.to_string())),
        }
    }

    /// A queued message that is not a task: it can never run. Dead-letter it
    /// with its raw body and terminate it so it is not redelivered.
    async fn poison(&self, msg: jetstream::Message, why: String) {
        tracing::error!(subject = %msg.subject, %why, "poison message in a queue");
        let entry = DlqEntry {
            reason: DlqReason::Poison,
            error: ErrorBody::new(
                ErrorCode::Poison,
                format!("queued message is not a task: {why}"),
            ),
            id: None,
            tenant: subjects::ANY.to_string(),
            subject: msg.subject.to_string(),
            task: api::raw_task(&msg.payload),
            time: timefmt::now(),
            seq: None,
        };
        match emit::dead_letter(&self.js, &entry).await {
            Ok(()) => {
                let _ = msg.ack_with(AckKind::Term).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not dead-letter a poison message; it will come back");
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
            }
        }
    }

    /// Exponential back-off with ±20% jitter, `retry_backoff * 2^(attempt-1)`;
    /// the cap applies after the jitter so it is a true upper bound.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let jitter = rand::rng().random_range(0.8..=1.2);
        exp.mul_f64(jitter).min(self.retry_backoff_max)
    }
}

/// Closes attempts that never ended: their agent vanished.
fn close_open_attempts(r: &mut TaskRecord, now: timefmt::Timestamp) {
    for a in r.attempts.iter_mut().filter(|a| a.ended_at.is_none()) {
        a.ended_at = Some(now);
        a.outcome = Some(Outcome::Lost);
        a.error = Some(ErrorBody::new(
            ErrorCode::AgentLost,
            format!("agent {} stopped answering during this attempt", a.agent),
        ));
    }
}

fn finish_attempt(
    r: &mut TaskRecord,
    attempt: u32,
    at: timefmt::Timestamp,
    outcome: Outcome,
    error: Option<ErrorBody>,
) {
    if let Some(a) = r.attempts.iter_mut().rev().find(|a| a.attempt == attempt) {
        a.ended_at = Some(at);
        a.outcome = Some(outcome);
        a.error = error;
    }
}
