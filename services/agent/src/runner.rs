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
//! 4. settle the record first, and only if this attempt is still the task's
//!    current one (a compare-and-set on the revision it started at): a task
//!    handed to another agent meanwhile (this agent was declared down or
//!    hung) is dropped here, so it never completes twice;
//! 5. on success publish the result (waiting for the stream's ack) and ack;
//!    on a retryable failure with attempts left nak with back-off; otherwise
//!    publish the failure, dead-letter the task and terminate the message.
//!
//! A crash between any two steps leaves the message unacked; the next agent
//! to get it resumes from the record (and publishes a result the record
//! has but the results stream lacks). The message is held in
//! [`crate::leases`] from the moment the pull returned it, so a health
//! monitor hands it back as soon as it finds this agent down.
//!
//! Every way out of [`Runner::handle`] settles the message: acked (done, or
//! a stale copy), terminated (final failure, cancelled, poison), handed back
//! with a nak (not due, no slot, passed over, retry, returned, or the
//! bookkeeping failed: then after [`BOOKKEEPING_RETRY`]), or left alone
//! because the task moved to another agent, whose delivery it now is (an
//! ack or nak of this one would act on that one).
//!
//! Two kinds of task control meet the runner:
//! - a task delivered before its `not_before` is handed back at once with a
//!   nak delayed by the time left, before the record is even read: nothing
//!   is recorded and no attempt is charged;
//! - a cancel request in the record wins over whatever the executor did: the
//!   settling compare-and-set reads the record it writes, so a request
//!   written while the attempt ran turns the attempt `cancelled` and the
//!   task `cancelled` (result, event, message terminated). The dispatcher's
//!   notice only stops the executor early (see [`crate::cancels`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, AckKind};
use clawfleet_shared::api::{DlqEntry, DlqReason};
use clawfleet_shared::events::{AttemptReport, TaskEvent, TaskEventKind};
use clawfleet_shared::lifecycle::{self, Admit, Started};
use clawfleet_shared::results;
use clawfleet_shared::task::{Outcome, RetryOn};
use clawfleet_shared::{
    emit, subjects, timefmt, ErrorBody, ErrorCode, TaskRecord, TaskResult, TaskSpec, TaskStatus,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cancels::Cancels;
use crate::executor::{self, ExecError, Executor};
use crate::leases::Leases;
use crate::peers::Peers;
use crate::records::{self, RecordError, Versioned};
use crate::tenant_slots::TenantSlots;
use crate::vitals::{RunningTask, Vitals};

/// How long a task this agent passes over stays unavailable before any
/// agent (another one, ideally) may take it.
pub(crate) const AVOID_DELAY: Duration = Duration::from_millis(200);
/// How long a task of a tenant at its `max_running` waits for one of the
/// tenant's tasks to end before it goes back to its queue. A slot frees a
/// moment after a task ends (its ack reaches JetStream before its agent
/// leaves the running set), so a short wait saves a round trip through the
/// queue in the common case.
const SLOT_WAIT: Duration = Duration::from_millis(250);
/// How long a task that found its tenant at `max_running` stays back in its
/// queue, and how long this agent stops asking that queue.
const SLOT_RETRY: Duration = Duration::from_millis(100);
/// How long an executor told to stop (cancel or abort) may take to return
/// before its attempt is dropped (which kills a `command` process).
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Deliveries of a poison message after which one that still cannot be
/// dead-lettered is terminated (and counted) rather than tried again.
const MAX_DEAD_LETTER_TRIES: i64 = 5;
/// How long a task whose record could not be read or written (NATS trouble)
/// stays back in its queue before any agent tries again: short, because
/// the next try is likely to work, and the ack wait is far longer.
pub(crate) const BOOKKEEPING_RETRY: Duration = Duration::from_secs(1);
/// Longest delay of a hand-back after which this agent looks for work again
/// by itself; later ones are found by its idle polls.
const WAKE_AFTER_MAX: Duration = Duration::from_secs(60);
/// After a hand-back's delay, this agent looks for the task at once, then
/// again after each of these pauses (the last one only ends the wait).
const WAKE_AGAIN: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::ZERO,
];

/// What every attempt needs.
pub struct Runner {
    pub(crate) agent_id: String,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) tasks: kv::Store,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) vitals: Arc<Vitals>,
    /// The queue messages this agent holds, as the health monitors know them.
    pub(crate) leases: Arc<Leases>,
    pub(crate) peers: Arc<Peers>,
    /// How long a task that failed here is left to other agents.
    pub(crate) avoid_for: Duration,
    /// Tasks this agent is leaving to others, since when.
    pub(crate) avoiding: Mutex<HashMap<String, Instant>>,
    /// How long this agent stops asking a queue after leaving one of its
    /// tasks to others (see [`Runner::holding_off`]).
    pub(crate) hold_off: Duration,
    /// Queues this agent is not asking, until when.
    pub(crate) held: Mutex<HashMap<String, Instant>>,
    /// The running attempts' cancellation tokens.
    pub(crate) cancels: Arc<Cancels>,
    /// Tenants' running sets, for `max_running` across their queues.
    pub(crate) tenant_slots: TenantSlots,
    /// Wakes this agent's pull loop.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// The queues the pull loop asks, to mark one as holding work again.
    pub(crate) eligible: crate::queues::SharedEligible,
}

/// How settling an attempt's outcome went.
enum Settled {
    /// The outcome is recorded.
    Applied,
    /// A cancel was requested meanwhile: the attempt and the task are
    /// recorded `cancelled` instead (this record).
    Cancelled(Box<TaskRecord>),
    /// The task moved on without this agent; nothing was written.
    MovedOn,
}

/// How the attempt's executor call ended.
enum Ended {
    Ok(executor::Output),
    Err(ExecError),
    TimedOut,
}

impl Runner {
    /// Handles one delivered queue message, held in [`Runner::leases`]
    /// already. `ack_wait` is the consumer's, `max_running` the queue's
    /// tenant's quota.
    pub async fn handle(
        &self,
        msg: jetstream::Message,
        ack_wait: Duration,
        max_running: Option<u32>,
        cancel: CancellationToken,
    ) {
        let ack = msg.reply.as_ref().map(|a| a.to_string());
        self.process(msg, ack_wait, max_running, cancel).await;
        if let Some(ack) = ack {
            // Acked, terminated or handed back by now (a hand-back was
            // announced already).
            self.leases.forget(&ack);
        }
    }

    async fn process(
        &self,
        msg: jetstream::Message,
        ack_wait: Duration,
        max_running: Option<u32>,
        cancel: CancellationToken,
    ) {
        let spec: TaskSpec = match serde_json::from_slice(&msg.payload) {
            Ok(spec) => spec,
            Err(e) => {
                return self
                    .poison(msg, clawfleet_shared::strict::cut(&e.to_string(), 300))
                    .await
            }
        };
        if let Some(wait) = spec.wait_left(timefmt::now()) {
            // Not due yet: back to the queue until then, record untouched.
            tracing::debug!(task_id = %spec.id, wait_ms = wait.as_millis() as u64, "task not due yet; handing it back until its not_before");
            self.hand_back(&msg, Some(wait)).await;
            return;
        }
        let delivery = msg.info().map(|i| i.delivered).unwrap_or(1);
        if let Some(wait) = self.not_yet(&msg, &spec) {
            // Not this agent's turn yet: back to the queue, unseen by anyone
            // until then, with no attempt recorded.
            self.hand_back(&msg, Some(wait)).await;
            return;
        }
        if let Some(max) = max_running {
            if !self.claim_slot(&msg, &spec, max).await {
                return;
            }
        }
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
        let id = spec.id.clone();
        let tenant = spec.tenant.clone();
        let attempt = self
            .attempt(&msg, spec, ack_wait, cancel)
            .instrument(span.clone())
            .await;
        self.vitals.untrack(&id);
        if max_running.is_some() {
            self.tenant_slots.release(&tenant, &id);
        }
        if let Err(e) = attempt {
            // Back to the queue for another try soon; the record tells the
            // next agent where things stand.
            tracing::warn!(parent: &span, error = %e, "could not complete the attempt's bookkeeping; handing the task back for another try");
            self.hand_back(&msg, Some(BOOKKEEPING_RETRY)).await;
        }
    }

    /// Joins the task's tenant's running set, waiting up to [`SLOT_WAIT`]
    /// for a slot. `false`: the tenant is at its `max_running` (or the set
    /// cannot be reached) and the task went back to its queue, untouched.
    async fn claim_slot(&self, msg: &jetstream::Message, spec: &TaskSpec, max: u32) -> bool {
        let give_up = Instant::now() + SLOT_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.tenant_slots.acquire(&spec.tenant, &spec.id, max).await {
                Ok(true) => return true,
                Ok(false) if Instant::now() + pause < give_up => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Ok(false) => {
                    tracing::debug!(task_id = %spec.id, tenant = %spec.tenant, max, "tenant at max_running; handing the task back");
                    self.held
                        .lock()
                        .expect("held lock")
                        .insert(msg.subject.to_string(), Instant::now() + SLOT_RETRY);
                    self.hand_back(msg, Some(SLOT_RETRY)).await;
                    return false;
                }
                Err(e) => {
                    tracing::warn!(task_id = %spec.id, error = %e, "could not join the tenant's running set; handing the task back for another try");
                    self.hand_back(msg, Some(BOOKKEEPING_RETRY)).await;
                    return false;
                }
            }
        }
    }

    async fn attempt(
        &self,
        msg: &jetstream::Message,
        spec: TaskSpec,
        ack_wait: Duration,
        cancel: CancellationToken,
    ) -> Result<(), RecordError> {
        // Registered before the record says running, so a cancel notice sent
        // once it does finds the attempt.
        let registration = self.cancels.register(&spec.id, &cancel);
        // First delivery: the record is as the dispatcher created it, at the
        // revision it passed along, so it need not be read. If it changed
        // meanwhile, the write below fails and we start over from a read.
        let mut as_created = self.as_created(msg, &spec);
        let mut conflicts = 0;
        let (started, attempt, started_at) = loop {
            let current = match as_created.take() {
                Some(v) => v,
                None => match records::read(&self.tasks, &spec.id).await {
                    Ok(v) => v,
                    Err(RecordError::Missing(_)) => self.recreate(&spec, msg).await?,
                    Err(e) => return Err(e),
                },
            };
            match lifecycle::admit(&current.record, msg.subject.as_str()) {
                Admit::Proceed => {}
                Admit::AlreadyFinal => {
                    tracing::info!(task_id = %spec.id, status = %current.record.status, "already finished; dropping a stale delivery");
                    self.ensure_result(&current.record).await?;
                    let _ = msg.ack().await;
                    return Ok(());
                }
                Admit::OtherCopy => {
                    tracing::debug!(task_id = %spec.id, "dropping the second copy of a task");
                    let _ = msg.ack().await;
                    return Ok(());
                }
                // Cancelled while an agent that has since vanished ran it.
                Admit::CancelRequested => return self.cancel_unstarted(msg, &spec, current).await,
            }
            if self.leave_to_others(&spec, &current.record).await {
                self.held
                    .lock()
                    .expect("held lock")
                    .insert(msg.subject.to_string(), Instant::now() + self.hold_off);
                self.hand_back(msg, Some(AVOID_DELAY)).await;
                self.signal_after(AVOID_DELAY, msg.subject.as_str());
                return Ok(());
            }

            let now = timefmt::now();
            let mut record = current.record.clone();
            let attempt =
                match lifecycle::start(&mut record, &self.agent_id, msg.subject.as_str(), now) {
                    Started::Running { attempt } => attempt,
                    Started::Exhausted { attempts, error } => {
                        // The attempts were used up by agents that vanished
                        // mid-task, or the policy does not retry after a lost agent.
                        let via = msg.subject.to_string();
                        let mut failed_now = false;
                        records::update(&self.tasks, &spec.id, Some(current), |r| {
                            failed_now = !r.status.is_final()
                                && matches!(
                                    lifecycle::start(r, &self.agent_id, &via, now),
                                    Started::Exhausted { .. }
                                );
                            failed_now
                        })
                        .await?;
                        if !failed_now {
                            // The record changed meanwhile: the next delivery
                            // decides from what it says now.
                            self.hand_back(msg, None).await;
                            return Ok(());
                        }
                        return self
                            .conclude_failure(msg, &spec, attempts, error, now, None)
                            .await;
                    }
                };
            match records::write_at(&self.tasks, &spec.id, record, current.revision).await {
                Ok(v) => break (v, attempt, now),
                // Someone else wrote it since the revision we had: read again.
                Err(RecordError::Conflict(id)) if conflicts < records::MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(task_id = %id, "record changed meanwhile; reading it again");
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(ack) = msg.reply.as_ref() {
            self.leases.running(ack);
        }
        let running = Arc::new(RunningTask {
            priority: spec.priority,
            preemptible: spec.preemptible,
            started: Instant::now(),
            // The attempt's own token: preemption and cancel notices stop the same executor.
            cancel: registration.token.clone(),
            preempted: AtomicBool::new(false),
        });
        self.vitals.track(&spec.id, running.clone());
        tracing::debug!(attempt, "attempt started");
        let mut event = TaskEvent::new(TaskEventKind::Started, Some(spec.id.clone()), &spec.tenant);
        event.attempt = Some(attempt);
        event.agent = Some(self.agent_id.clone());
        event.priority = Some(spec.priority);
        emit::task_event(&self.client, &event).await;

        let began = Instant::now();
        let ended = self
            .execute(msg, &spec, attempt, ack_wait, registration.token.clone())
            .await;
        let ended_at = timefmt::now();
        metrics::histogram!(
            crate::metrics::ATTEMPT_SECONDS,
            &[("agent", self.agent_id.clone())]
        )
        .record(began.elapsed().as_secs_f64());
        // The attempt's report goes out inside the event that ends it; one
        // whose end publishes no event (the task moved on, or was handed
        // back while stopping, or its bookkeeping failed) goes out alone.
        let mut report = Some(Box::new(self.attempt_report(
            msg,
            &spec,
            attempt,
            (started_at, ended_at),
            &ended,
            running.preempted.load(Ordering::Relaxed),
            cancel.is_cancelled(),
        )));
        let finished = self
            .finish(
                msg,
                &spec,
                (started, attempt, ended_at),
                ended,
                &running,
                &mut report,
            )
            .await;
        if let Some(report) = report {
            emit::attempt_report(&self.client, &report).await;
        }
        finished
    }

    /// Settles the outcome of an attempt the executor ran and lets go of
    /// the message. `report` is taken by the event that ends the attempt.
    async fn finish(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        (started, attempt, ended_at): (Versioned, u32, timefmt::Timestamp),
        ended: Ended,
        running: &RunningTask,
        report: &mut Option<Box<AttemptReport>>,
    ) -> Result<(), RecordError> {
        let labels = [("agent", self.agent_id.clone())];
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
                let end = lifecycle::End::Succeeded(output.result.clone());
                let settled = self
                    .settle(&spec.id, started, attempt, ended_at, end)
                    .await?;
                match settled {
                    Settled::Applied => {}
                    Settled::Cancelled(record) => {
                        return self
                            .conclude_cancelled(msg, &record, Some(attempt), report.take())
                            .await
                    }
                    Settled::MovedOn => {
                        self.moved_on(msg).await;
                        return Ok(());
                    }
                }
                self.publish_result(&result).await?;
                self.vitals.completed.fetch_add(1, Ordering::Relaxed);
                observe_end(&self.agent_id, Outcome::Succeeded, Some(spec));
                tracing::debug!(attempt, "attempt succeeded");
                let mut event = TaskEvent::new(
                    TaskEventKind::Succeeded,
                    Some(spec.id.clone()),
                    &spec.tenant,
                );
                event.attempt = Some(attempt);
                event.agent = Some(self.agent_id.clone());
                event.report = report.take();
                emit::task_event(&self.client, &event).await;
                let _ = msg.ack().await;
                Ok(())
            }
            Ended::Err(ExecError::Cancelled) => {
                // Preempted for a critical task, or shutting down: hand the
                // task back at once, without spending one of its attempts.
                let preempted = running.preempted.load(Ordering::Relaxed);
                let (outcome, error) = if preempted {
                    (
                        Outcome::Preempted,
                        ErrorBody::new(
                            ErrorCode::Preempted,
                            "stopped to free its slot for a waiting critical task",
                        ),
                    )
                } else {
                    (
                        Outcome::Returned,
                        ErrorBody::new(ErrorCode::Unavailable, ExecError::Cancelled.to_string()),
                    )
                };
                let end = lifecycle::End::HandedBack {
                    outcome,
                    error: error.clone(),
                };
                let settled = self
                    .settle(&spec.id, started, attempt, ended_at, end)
                    .await?;
                match settled {
                    Settled::Applied => {
                        observe_end(&self.agent_id, outcome, None);
                        if preempted {
                            let mut event = TaskEvent::new(
                                TaskEventKind::Preempted,
                                Some(spec.id.clone()),
                                &spec.tenant,
                            );
                            event.attempt = Some(attempt);
                            event.agent = Some(self.agent_id.clone());
                            event.priority = Some(spec.priority);
                            event.error = Some(error);
                            event.report = report.take();
                            emit::task_event(&self.client, &event).await;
                        }
                        self.hand_back(msg, None).await;
                        Ok(())
                    }
                    Settled::Cancelled(record) => {
                        self.conclude_cancelled(msg, &record, Some(attempt), report.take())
                            .await
                    }
                    Settled::MovedOn => {
                        self.moved_on(msg).await;
                        Ok(())
                    }
                }
            }
            other => {
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
                        spec.retry.retries(RetryOn::Timeout),
                    ),
                    Ended::Err(e) => {
                        let retryable = matches!(e, ExecError::Retryable(_))
                            && spec.retry.retries(RetryOn::ExecutorError);
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
                let end = lifecycle::End::Failed {
                    outcome,
                    error: error.clone(),
                    retry,
                };
                let settled = self
                    .settle(&spec.id, started, attempt, ended_at, end)
                    .await?;
                match settled {
                    Settled::Applied => {
                        self.vitals.failed.fetch_add(1, Ordering::Relaxed);
                        observe_end(&self.agent_id, outcome, (!retry).then_some(spec));
                        if retry {
                            metrics::counter!(crate::metrics::RETRIES, &labels).increment(1);
                        }
                    }
                    Settled::Cancelled(record) => {
                        return self
                            .conclude_cancelled(msg, &record, Some(attempt), report.take())
                            .await
                    }
                    Settled::MovedOn => {
                        self.moved_on(msg).await;
                        return Ok(());
                    }
                }
                if retry {
                    let delay = backoff(&spec.retry, attempt);
                    let mut event = TaskEvent::new(
                        TaskEventKind::Retrying,
                        Some(spec.id.clone()),
                        &spec.tenant,
                    );
                    event.attempt = Some(attempt);
                    event.agent = Some(self.agent_id.clone());
                    event.error = Some(error);
                    event.retry_in_ms = Some(delay.as_millis() as u64);
                    event.report = report.take();
                    emit::task_event(&self.client, &event).await;
                    self.hand_back(msg, Some(delay)).await;
                    Ok(())
                } else {
                    self.conclude_failure(msg, spec, attempt, error, ended_at, report.take())
                        .await
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
            cancel: cancel.clone(),
        };
        let run = tokio::time::timeout(spec.timeout, self.executor.run(spec, &ctx));
        tokio::pin!(run);
        let every = (ack_wait / 3).max(Duration::from_millis(50));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // Executors stop on the token; one that does not is dropped after a grace.
        let mut stop_by: Option<tokio::time::Instant> = None;
        loop {
            let grace_over = async {
                match stop_by {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut run => return match r {
                    Ok(Ok(out)) => Ended::Ok(out),
                    Ok(Err(e)) => Ended::Err(e),
                    Err(_) => Ended::TimedOut,
                },
                _ = cancel.cancelled(), if stop_by.is_none() => {
                    stop_by = Some(tokio::time::Instant::now() + STOP_GRACE);
                }
                _ = grace_over => {
                    tracing::warn!(task_id = %spec.id, "the executor did not stop when told to; dropping the attempt");
                    return Ended::Err(ExecError::Cancelled);
                }
                _ = progress.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "could not send progress");
                    }
                }
            }
        }
    }

    /// Final failure, already in the record: publish the failed result,
    /// dead-letter, terminate.
    async fn conclude_failure(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        attempts: u32,
        error: ErrorBody,
        finished_at: timefmt::Timestamp,
        report: Option<Box<AttemptReport>>,
    ) -> Result<(), RecordError> {
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
        let entry = DlqEntry::validated(
            DlqReason::Failed,
            error.clone(),
            spec,
            &msg.subject,
            finished_at,
        );
        if let Err(e) = emit::dead_letter(&self.js, &entry).await {
            // The record and the result already say failed; the DLQ entry is a convenience copy.
            tracing::warn!(task_id = %spec.id, error = %e, "could not dead-letter a failed task");
        }
        let mut event = TaskEvent::new(TaskEventKind::Failed, Some(spec.id.clone()), &spec.tenant);
        event.attempt = Some(attempts);
        event.agent = Some(self.agent_id.clone());
        event.error = Some(error);
        event.report = report;
        emit::task_event(&self.client, &event).await;
        let _ = msg.ack_with(AckKind::Term).await;
        Ok(())
    }

    async fn publish_result(&self, result: &TaskResult) -> Result<(), RecordError> {
        results::publish(&self.js, result)
            .await
            .map_err(|e| RecordError::Nats(e.to_string()))
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
        let record = TaskRecord::queued(spec.clone(), msg.subject.to_string(), intake_seq);
        Some(Versioned { record, revision })
    }

    /// A queued task whose record is gone (expired): recreate it so the task
    /// still runs and is still visible.
    async fn recreate(
        &self,
        spec: &TaskSpec,
        msg: &jetstream::Message,
    ) -> Result<Versioned, RecordError> {
        let record = TaskRecord::queued(spec.clone(), msg.subject.to_string(), 0);
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
        tracing::error!(subject = %msg.subject, bytes = msg.payload.len(), %why, "poison message in a queue");
        let entry = DlqEntry::raw(
            DlqReason::Poison,
            ErrorBody::new(
                ErrorCode::Poison,
                format!("queued message is not a task: {why}"),
            ),
            None,
            subjects::ANY.to_string(),
            &msg.subject,
            &msg.payload,
        );
        match emit::dead_letter(&self.js, &entry).await {
            Ok(()) => {
                let _ = msg.ack_with(AckKind::Term).await;
            }
            Err(e) if msg.info().map_or(1, |i| i.delivered) < MAX_DEAD_LETTER_TRIES => {
                tracing::warn!(error = %e, "could not dead-letter a poison message; it will come back");
                self.hand_back(&msg, Some(Duration::from_secs(5))).await;
            }
            Err(e) => {
                // Never loop on a message that can be neither run nor kept.
                metrics::counter!(clawfleet_shared::metrics::DEAD_LETTERS_LOST, "reason" => "poison")
                    .increment(1);
                tracing::error!(error = %e, subject = %msg.subject, bytes = msg.payload.len(), "could not dead-letter a poison message; dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
            }
        }
    }

    /// Applies `change` to the record if attempt `attempt` is still this
    /// agent's open, current attempt of an unfinished task, unless a cancel
    /// was requested meanwhile: then the attempt (ended at `ended_at`) and
    /// the task are recorded `cancelled` instead. Changes nothing when the
    /// task moved on without this agent: it was declared down or hung and
    /// the task was handed to another.
    async fn settle(
        &self,
        id: &str,
        started: Versioned,
        attempt: u32,
        ended_at: timefmt::Timestamp,
        end: lifecycle::End,
    ) -> Result<Settled, RecordError> {
        let mut verdict = lifecycle::Settled::MovedOn;
        // On a conflict (a cancel request, say) the record is read again and
        // the outcome is applied to what it says now.
        let settled = records::update(&self.tasks, id, Some(started), |r| {
            verdict = lifecycle::settle(r, &self.agent_id, attempt, ended_at, &end);
            verdict != lifecycle::Settled::MovedOn
        })
        .await?;
        Ok(match verdict {
            lifecycle::Settled::Applied => Settled::Applied,
            lifecycle::Settled::Cancelled => {
                tracing::info!(task_id = %id, attempt, "attempt stopped: the task was cancelled");
                Settled::Cancelled(Box::new(settled.record))
            }
            lifecycle::Settled::MovedOn => {
                tracing::warn!(task_id = %id, attempt, "the task moved to another agent while this attempt ran; dropping this attempt's outcome");
                Settled::MovedOn
            }
        })
    }

    /// A task whose cancel was requested while an agent that has since
    /// vanished ran it: settle it `cancelled` without running it again.
    async fn cancel_unstarted(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        current: Versioned,
    ) -> Result<(), RecordError> {
        let now = timefmt::now();
        let mut cancelled = false;
        let settled = records::update(&self.tasks, &spec.id, Some(current), |r| {
            cancelled = lifecycle::cancel_unstarted(r, now);
            cancelled
        })
        .await?;
        if !cancelled {
            // Final meanwhile: a stale delivery like any other.
            self.ensure_result(&settled.record).await?;
            let _ = msg.ack().await;
            return Ok(());
        }
        tracing::info!(task_id = %spec.id, "cancelled while its agent was lost; not running it again");
        self.conclude_cancelled(msg, &settled.record, None, None)
            .await
    }

    /// A task recorded `cancelled`: publish its result and the event, and
    /// terminate the message. `stopped` is the attempt this agent stopped.
    async fn conclude_cancelled(
        &self,
        msg: &jetstream::Message,
        record: &TaskRecord,
        stopped: Option<u32>,
        report: Option<Box<AttemptReport>>,
    ) -> Result<(), RecordError> {
        if let Some(result) = TaskResult::from_record(record) {
            self.publish_result(&result).await?;
        }
        let spec = &record.spec;
        let mut event = TaskEvent::new(
            TaskEventKind::Cancelled,
            Some(spec.id.clone()),
            &spec.tenant,
        );
        event.priority = Some(spec.priority);
        event.attempt = stopped;
        event.agent = stopped.map(|_| self.agent_id.clone());
        event.error = record.failure.clone();
        event.report = report;
        emit::task_event(&self.client, &event).await;
        let _ = msg.ack_with(AckKind::Term).await;
        Ok(())
    }

    /// Hands the message back to its queue, to be delivered again after
    /// `delay`. The health monitors are told first that this agent no longer
    /// holds it: once the nak is through, the next delivery may be another
    /// agent's, and a monitor's nak of this one would disturb it.
    async fn hand_back(&self, msg: &jetstream::Message, delay: Option<Duration>) {
        if let Some(ack) = msg.reply.as_ref() {
            self.leases.release(ack).await;
        }
        if let Err(e) = msg.ack_with(AckKind::Nak(delay)).await {
            tracing::warn!(error = %e, "could not hand a task back; it returns after its ack wait");
            return;
        }
        // JetStream sends no word when a delayed task is available again,
        // and an idle agent polls less and less often: look at its queue
        // again then, as if a dispatcher had signalled it.
        if let Some(delay) = delay.filter(|d| *d <= WAKE_AFTER_MAX) {
            let wake = self.wake.clone();
            let eligible = self.eligible.clone();
            let queue = msg.subject.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // The server makes the message available again by its own
                // timer, which may run a little after ours (more so on a
                // loaded machine): look again a while later too, or a
                // fetch that came a moment too early would leave the task
                // to the next idle poll.
                for after in WAKE_AGAIN {
                    eligible
                        .read()
                        .expect("eligible lock")
                        .signalled(queue.as_bytes());
                    wake.notify_one();
                    tokio::time::sleep(after).await;
                }
            });
        }
    }

    /// Tells every agent that `queue` has work again after `delay`: a task
    /// this agent passed over is for the others.
    fn signal_after(&self, delay: Duration, queue: &str) {
        let client = self.client.clone();
        let body = bytes::Bytes::from(queue.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = client.publish(subjects::SIGNAL_WORK, body).await {
                tracing::debug!(error = %e, "could not signal agents");
            }
        });
    }

    /// The task moved to another agent while this attempt ran: this
    /// delivery is stale and stays as it is (acking or naking it would act
    /// on the other agent's). The monitors are told this agent let go of it.
    async fn moved_on(&self, msg: &jetstream::Message) {
        if let Some(ack) = msg.reply.as_ref() {
            self.leases.release(ack).await;
        }
    }

    /// Publishes the result of a finished record if the results stream lacks
    /// it (an agent settled the record, then died before publishing).
    async fn ensure_result(&self, record: &TaskRecord) -> Result<(), RecordError> {
        results::ensure(&self.js, record)
            .await
            .map(drop)
            .map_err(|e| RecordError::Nats(e.to_string()))
    }

    /// How long the task must be left alone, if it must: the any-region
    /// copy of a task with `prefer_region`, before its `prefer_region_until`
    /// (meanwhile the copy in the preferred region's queue is on offer).
    fn not_yet(&self, msg: &jetstream::Message, spec: &TaskSpec) -> Option<Duration> {
        let fallback = msg
            .headers
            .as_ref()
            .is_some_and(|h| h.get(subjects::HEADER_FALLBACK).is_some());
        if !fallback {
            return None;
        }
        let left = spec.prefer_region_until? - timefmt::now();
        (left > time::Duration::ZERO).then(|| Duration::try_from(left).unwrap_or(Duration::ZERO))
    }

    /// The report of an attempt the executor ran, whatever the record makes
    /// of it: the time and tokens were spent either way.
    #[allow(clippy::too_many_arguments)]
    fn attempt_report(
        &self,
        msg: &jetstream::Message,
        spec: &TaskSpec,
        attempt: u32,
        (started_at, ended_at): (timefmt::Timestamp, timefmt::Timestamp),
        ended: &Ended,
        preempted: bool,
        aborted: bool,
    ) -> AttemptReport {
        let (outcome, error, usage) = match ended {
            Ended::Ok(output) => (Outcome::Succeeded, None, output.usage.clone()),
            Ended::TimedOut => (Outcome::Timeout, Some(ErrorCode::Timeout), None),
            Ended::Err(ExecError::Cancelled) if preempted => {
                (Outcome::Preempted, Some(ErrorCode::Preempted), None)
            }
            Ended::Err(ExecError::Cancelled) if aborted => {
                (Outcome::Returned, Some(ErrorCode::Unavailable), None)
            }
            Ended::Err(ExecError::Cancelled) => {
                (Outcome::Cancelled, Some(ErrorCode::Cancelled), None)
            }
            Ended::Err(e) => (Outcome::Failed, Some(e.code()), None),
        };
        AttemptReport {
            task_id: spec.id.clone(),
            tenant: spec.tenant.clone(),
            agent: self.agent_id.clone(),
            attempt,
            priority: spec.priority,
            requires: spec.requires.clone(),
            region: spec.region.clone(),
            labels: spec.labels.clone(),
            size_bytes: msg.payload.len() as u64,
            started_at,
            ended_at,
            outcome,
            error,
            usage,
        }
    }

    /// Whether this agent should not ask `queue` for work now: it has just
    /// left one of the queue's tasks to other agents. The task comes back
    /// after [`AVOID_DELAY`]; an agent that asked again on its usual rhythm
    /// would often be first in line for it (its polls keep the same phase
    /// as its nak), so it stays away for `hold_off`, a little longer, and the
    /// others, polling meanwhile, get the task.
    pub(crate) fn holding_off(&self, queue: &str) -> bool {
        let mut held = self.held.lock().expect("held lock");
        if held.is_empty() {
            return false;
        }
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        held.contains_key(queue)
    }

    /// Whether this agent should pass over a task that last failed here,
    /// leaving it to another compatible agent (the task's `different_agent`
    /// policy). It does so for at most `avoid_for`, then runs it itself.
    async fn leave_to_others(&self, spec: &TaskSpec, record: &TaskRecord) -> bool {
        if !spec.retry.different_agent {
            return false;
        }
        let failed_here = record.attempts.last().is_some_and(|a| {
            a.agent == self.agent_id
                && !matches!(a.outcome, Some(Outcome::Succeeded | Outcome::Returned))
        });
        if !failed_here || !self.peers.another_can_run(spec, &self.agent_id).await {
            return false;
        }
        let mut avoiding = self.avoiding.lock().expect("avoiding lock");
        avoiding.retain(|_, since| since.elapsed() < self.avoid_for * 2);
        let since = *avoiding.entry(spec.id.clone()).or_insert_with(Instant::now);
        let leave = since.elapsed() < self.avoid_for;
        if leave {
            tracing::debug!(task_id = %spec.id, "leaving a task that failed here to another agent");
        }
        leave
    }
}

/// Counts an attempt's outcome and, for a task that ended with it, the time
/// from submission to the end.
fn observe_end(agent: &str, outcome: Outcome, finished: Option<&TaskSpec>) {
    metrics::counter!(
        crate::metrics::ATTEMPTS,
        "agent" => agent.to_string(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    if let Some(spec) = finished {
        let took = timefmt::now() - spec.submitted_at;
        metrics::histogram!(crate::metrics::TASK_SECONDS, "agent" => agent.to_string())
            .record(took.as_seconds_f64().max(0.0));
    }
}

/// Exponential back-off with ±20% jitter, `backoff * 2^(attempt-1)`; the cap
/// applies after the jitter so it is a true upper bound.
fn backoff(policy: &clawfleet_shared::task::RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let jitter = rand::rng().random_range(0.8..=1.2);
    exp.mul_f64(jitter).min(policy.backoff_max)
}
