//! `clawfleet.api.task.cancel`: stopping a task that has not finished.
//!
//! A task no agent is running (queued, waiting for its `not_before`, or
//! waiting out a retry back-off) is settled `cancelled` here at once: record,
//! result, event. Its queue message stays where it is: the agent that next
//! receives it finds the record final and drops it, so nothing needs to find
//! the message in the queue.
//!
//! A running task can only be stopped by the agent running it. The record
//! gets a `cancel` block and that agent is told on
//! `clawfleet.agent.cancel.<agent_id>`; it stops the attempt and settles the
//! task `cancelled`. The notice is a core NATS message and may be missed;
//! the record is what counts, and the agent reads it when it settles.
//!
//! Every change is a compare-and-set on the record's revision, retried on
//! conflict, so a cancel racing an agent that starts or finishes the task
//! ends one way or the other, never both.

use async_nats::jetstream::kv;
use clawfleet_shared::api::{TaskCancelReply, TaskCancelRequest};
use clawfleet_shared::events::{TaskEvent, TaskEventKind};
use clawfleet_shared::lifecycle::{self, CancelAsked};
use clawfleet_shared::results;
use clawfleet_shared::task::CancelNotice;
use clawfleet_shared::{
    emit, subjects, timefmt, ErrorBody, ErrorCode, TaskRecord, TaskResult, TaskStatus,
};

use crate::api::{internal, ok, request, Api, Reply};
use crate::validate;
use clawfleet_shared::strict::echo;

/// Longest `reason` kept in a record.
const MAX_REASON_BYTES: usize = 1024;
/// Concurrent writers of one record are rare; this many conflicts means trouble.
const MAX_CONFLICTS: usize = 16;

impl Api {
    pub(crate) async fn task_cancel(&self, payload: &[u8]) -> Reply {
        let req: TaskCancelRequest = request(
            "task.cancel (expected {\"id\": \"...\", \"tenant\"?: \"...\", \"reason\"?: \"...\"})",
            payload,
        )?;
        if req
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REASON_BYTES)
        {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("reason is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        let not_found = || {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("no task with id {}", echo(&req.id)),
            )
        };
        if !validate::is_id(&req.id) {
            return Err(not_found());
        }
        for _ in 0..MAX_CONFLICTS {
            let (record, revision) = self.versioned(&req.id).await?.ok_or_else(not_found)?;
            if req
                .tenant
                .as_ref()
                .is_some_and(|t| *t != record.spec.tenant)
            {
                return Err(not_found());
            }
            if record.status.is_final() {
                if record.status == TaskStatus::Cancelled {
                    // A cancel whose result publish failed, asked again.
                    self.ensure_result(&record).await;
                }
                return Err(ErrorBody::new(
                    ErrorCode::AlreadyFinal,
                    format!(
                        "task {} is already {}; there is nothing to cancel",
                        req.id, record.status
                    ),
                ));
            }
            let mut changed = record.clone();
            let running =
                match lifecycle::request_cancel(&mut changed, req.reason.clone(), timefmt::now()) {
                    CancelAsked::Cancelled => false,
                    CancelAsked::Requested => true,
                    // Already requested: only tell the agent again (it may have
                    // missed the first notice).
                    CancelAsked::AlreadyRequested => return self.notify_agent(&record).await,
                    CancelAsked::AlreadyFinal => unreachable!("a final record was answered above"),
                };
            let bytes = serde_json::to_vec(&changed).expect("task record encodes");
            match self.tasks.update(&req.id, bytes.into(), revision).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(internal("while writing the task record", e)),
            }
            if running {
                tracing::info!(task_id = %req.id, "cancel requested; telling the agent running it");
                return self.notify_agent(&changed).await;
            }
            tracing::info!(task_id = %req.id, tenant = %changed.spec.tenant, "task cancelled before it ran");
            if let Some(result) = TaskResult::from_record(&changed) {
                if let Err(e) = self.publish_result(&result).await {
                    // The record is final: the agent that drops the queued
                    // message publishes the missing result, as does a repeated cancel.
                    tracing::warn!(task_id = %req.id, error = %e, "could not publish the result of a cancelled task");
                }
            }
            let mut event = TaskEvent::new(
                TaskEventKind::Cancelled,
                Some(req.id.clone()),
                &changed.spec.tenant,
            );
            event.priority = Some(changed.spec.priority);
            event.error = changed.failure.clone();
            emit::task_event(&self.client, &event).await;
            return ok(&TaskCancelReply {
                id: req.id,
                status: TaskStatus::Cancelled,
                agent: None,
            });
        }
        Err(ErrorBody::new(
            ErrorCode::Unavailable,
            format!("task {} changed too often to cancel; retry", req.id),
        ))
    }

    /// The record and its revision.
    async fn versioned(&self, id: &str) -> Result<Option<(TaskRecord, u64)>, ErrorBody> {
        match self.tasks.entry(id).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let record = serde_json::from_slice(&entry.value).map_err(|e| {
                    ErrorBody::new(ErrorCode::Internal, format!("unreadable record {id}: {e}"))
                })?;
                Ok(Some((record, entry.revision)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(internal("while reading task", e)),
        }
    }

    /// Tells the agent running the task's open attempt to stop it.
    async fn notify_agent(&self, record: &TaskRecord) -> Reply {
        let attempt = record.open_attempt();
        if let Some(attempt) = attempt {
            let notice = CancelNotice {
                task_id: record.spec.id.clone(),
                attempt: attempt.attempt,
            };
            let bytes = serde_json::to_vec(&notice).expect("notice encodes");
            if let Err(e) = self
                .client
                .publish(subjects::agent_cancel(&attempt.agent), bytes.into())
                .await
            {
                // The agent still sees the request in the record when it settles.
                tracing::warn!(task_id = %record.spec.id, error = %e, "could not notify the agent of a cancel");
            }
        }
        ok(&TaskCancelReply {
            id: record.spec.id.clone(),
            status: record.status,
            agent: attempt.map(|a| a.agent.clone()),
        })
    }

    async fn publish_result(&self, result: &TaskResult) -> Result<(), ErrorBody> {
        results::publish(&self.js, result)
            .await
            .map_err(|e| internal("while publishing the result", e))
    }

    /// Publishes a final record's result unless the results stream has it.
    async fn ensure_result(&self, record: &TaskRecord) {
        // A lookup that fails is left alone: publishing again could only
        // repeat a result that is there.
        if let Err(e) = results::ensure(&self.js, record).await {
            tracing::warn!(task_id = %record.spec.id, error = %e, "could not make sure the result is published");
        }
    }
}
