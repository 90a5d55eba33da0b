//! The intake pipeline: `CLAWFLEET_INTAKE` → validate → record → queue.
//!
//! Every dispatcher pulls from the one durable `dispatcher` consumer, so each
//! intake message is handled by one dispatcher at a time, and an intake
//! message is acked only once its effect is durable: the task is recorded
//! and sitting in its queue, or it is in the dead-letter stream with its
//! reason. A dispatcher that dies mid-way leaves the message unacked and
//! another (or the restarted one) finishes the job.
//!
//! The pipeline is three ordered stages so that many tasks are in flight at
//! once while order of arrival is kept: records are written concurrently,
//! queue publishes are sent one after another in arrival order, and their
//! stream acks are awaited concurrently again.
//!
//! Re-delivery safety: the task record remembers the intake sequence that
//! created it. A re-delivered message finds its own record and re-publishes
//! to the queue with the task id as `Nats-Msg-Id`, which the queue stream
//! de-duplicates (or, if an agent already took the task, only repeats the
//! `queued` event, so events are delivered at least once); a *different*
//! message with a known id is a duplicate submission and is dropped (the
//! first one stands).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, context::PublishAckFuture, kv, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use clawfleet_shared::api::{DlqEntry, DlqReason};
use clawfleet_shared::events::{TaskEvent, TaskEventKind};
use clawfleet_shared::metrics::DEAD_LETTERS_LOST;
use clawfleet_shared::{
    emit, subjects, timefmt, ErrorBody, ErrorCode, TaskRecord, TaskSpec, TaskStatus,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use crate::admission::Admission;
use crate::router::Router;
use crate::validate::{self, Bounds};

/// What the intake pipeline needs.
pub struct Intake {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) tasks: kv::Store,
    pub(crate) admission: Arc<Admission>,
    pub(crate) router: Router,
    pub(crate) bounds: Bounds,
    pub(crate) wake: Arc<crate::Wake>,
}

/// Delay before a message whose handling failed for a transient reason is retried.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Deliveries of a refused message after which one that still cannot be
/// dead-lettered is terminated (and counted) rather than tried again.
const MAX_DEAD_LETTER_TRIES: i64 = 5;

enum Step {
    Route {
        msg: jetstream::Message,
        spec: TaskSpec,
        subject: String,
        body: Bytes,
        /// The record's revision, passed to agents so they need not read it.
        revision: u64,
        /// The record's intake sequence, passed along with the revision.
        intake_seq: u64,
    },
    Reject {
        msg: jetstream::Message,
        entry: DlqEntry,
    },
    Duplicate {
        msg: jetstream::Message,
        id: String,
    },
    /// A re-delivery of the message that created the task, which an agent
    /// has already taken: only the `queued` event may be missing.
    AlreadyRouted {
        msg: jetstream::Message,
        spec: TaskSpec,
        subject: String,
    },
    Retry {
        msg: jetstream::Message,
        why: String,
    },
}

enum Sent {
    Routed {
        msg: jetstream::Message,
        spec: TaskSpec,
        subject: String,
        ack: PublishAckFuture,
    },
    Other(Step),
}

impl Intake {
    /// Runs the pipeline until `cancel`, re-opening the consumer's message
    /// stream with a back-off if it ends for any other reason.
    pub async fn run(
        self: Arc<Self>,
        consumer: PullConsumer,
        concurrency: usize,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.clone().pipeline(&consumer, concurrency, &cancel).await {
                Ok(()) if cancel.is_cancelled() => break,
                Ok(()) => tracing::warn!("intake stream ended; reopening"),
                Err(e) => tracing::warn!(error = %e, "intake stream failed; reopening"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn pipeline(
        self: Arc<Self>,
        consumer: &PullConsumer,
        concurrency: usize,
        cancel: &CancellationToken,
    ) -> Result<(), jetstream::consumer::StreamError> {
        let messages = consumer
            .stream()
            .max_messages_per_batch(concurrency.clamp(1, 1000))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let this = self.clone();
        let this2 = self.clone();
        let this3 = self.clone();
        messages
            .take_until(cancel.clone().cancelled_owned())
            .filter_map(|m| async move {
                match m {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::debug!(error = %e, "intake consumer hiccup");
                        None
                    }
                }
            })
            .map(move |msg| {
                let this = this.clone();
                async move { this.prepare(msg).await }
            })
            .buffered(concurrency)
            .then(move |step| {
                let this = this2.clone();
                async move { this.send(step).await }
            })
            .map(move |sent| {
                let this = this3.clone();
                async move { this.finish(sent).await }
            })
            .buffered(concurrency)
            .for_each(|_| async {})
            .await;
        Ok(())
    }

    async fn prepare(&self, msg: jetstream::Message) -> Step {
        let (seq, published_ms) = match msg.info() {
            Ok(info) => (
                info.stream_sequence,
                (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
            ),
            Err(e) => {
                return Step::Retry {
                    msg,
                    why: format!("unreadable delivery info: {e}"),
                }
            }
        };
        let subject = msg.subject.to_string();
        let subject_tenant = subjects::tenant_of_intake(&subject).map(str::to_string);
        let reject = |msg: jetstream::Message,
                      error: ErrorBody,
                      tenant: Option<String>,
                      id: Option<String>| {
            let tenant = tenant
                .filter(|t| validate::is_tenant(t))
                .unwrap_or_else(|| subjects::ANY.to_string());
            Step::Reject {
                entry: DlqEntry::raw(
                    DlqReason::Rejected,
                    error,
                    id,
                    tenant,
                    &subject,
                    &msg.payload,
                ),
                msg,
            }
        };

        let draft = match validate::parse(&msg.payload, subject_tenant.as_deref(), &self.bounds) {
            Ok(d) => d,
            Err(error) => return reject(msg, error, subject_tenant, None),
        };
        let admitted = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(subjects::HEADER_ADMITTED))
            .is_some();
        if let Err(error) = self.admission.admit(&draft.spec, admitted).await {
            let (tenant, id) = (Some(draft.spec.tenant.clone()), draft.id.clone());
            return reject(msg, error, tenant, id);
        }
        // An id derived from the message itself, so a re-delivery gets the same one.
        let spec = draft.into_spec(|| Ulid::from_parts(published_ms, u128::from(seq)).to_string());
        // A task preferring a region is queued there, and a second copy
        // for any region that agents leave alone until its preference ends.
        let region = spec.region.as_deref().or(spec.prefer_region.as_deref());
        let mut regions = vec![region];
        if spec.prefer_region.is_some() {
            regions.push(None);
        }
        for r in regions {
            if let Err(e) = self.router.ensure(&spec.tenant, r, &spec.requires).await {
                return Step::Retry {
                    msg,
                    why: e.to_string(),
                };
            }
        }
        let queue = subjects::queue(spec.priority, region, &spec.requires, &spec.tenant);
        let body: Bytes = match serde_json::to_vec(&spec) {
            Ok(b) => b.into(),
            Err(e) => {
                return Step::Retry {
                    msg,
                    why: e.to_string(),
                }
            }
        };
        let record = TaskRecord::queued(spec, queue.clone(), seq);
        let record_bytes = serde_json::to_vec(&record).expect("task record encodes");
        match self
            .tasks
            .create(&record.spec.id, record_bytes.into())
            .await
        {
            Ok(revision) => Step::Route {
                msg,
                spec: record.spec,
                subject: queue,
                body,
                revision,
                intake_seq: seq,
            },
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.known_id(msg, record, queue, body, seq).await
            }
            Err(e) => Step::Retry {
                msg,
                why: format!("while recording task: {e}"),
            },
        }
    }

    /// The id already has a record: finish our own half-done routing, refuse
    /// another tenant's id, or drop a duplicate submission.
    async fn known_id(
        &self,
        msg: jetstream::Message,
        new: TaskRecord,
        queue: String,
        body: Bytes,
        seq: u64,
    ) -> Step {
        let id = new.spec.id.clone();
        let existing = match self.tasks.entry(&id).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice::<TaskRecord>(&entry.value)
                    .ok()
                    .map(|r| (r, entry.revision))
            }
            Ok(_) => None,
            Err(e) => {
                return Step::Retry {
                    msg,
                    why: format!("while reading task {id}: {e}"),
                }
            }
        };
        let Some((existing, revision)) = existing else {
            return Step::Retry {
                msg,
                why: format!("task {id} vanished while being created"),
            };
        };
        if existing.spec.tenant != new.spec.tenant {
            let error = ErrorBody::new(
                ErrorCode::IdConflict,
                format!("id {id:?} is already used by another tenant"),
            );
            let entry = DlqEntry::validated(
                DlqReason::Rejected,
                error,
                &new.spec,
                &msg.subject,
                timefmt::now(),
            );
            return Step::Reject { msg, entry };
        }
        if existing.intake_seq != seq {
            return Step::Duplicate { msg, id };
        }
        if existing.status == TaskStatus::Queued && existing.attempts.is_empty() {
            return Step::Route {
                msg,
                spec: existing.spec,
                subject: queue,
                body,
                revision,
                intake_seq: seq,
            };
        }
        Step::AlreadyRouted {
            msg,
            spec: existing.spec,
            subject: existing.queue,
        }
    }

    async fn send(&self, step: Step) -> Sent {
        let Step::Route {
            msg,
            spec,
            subject,
            body,
            revision,
            intake_seq,
        } = step
        else {
            return Sent::Other(step);
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", spec.id.as_str());
        headers.insert(
            subjects::HEADER_RECORD_REVISION,
            revision.to_string().as_str(),
        );
        headers.insert(subjects::HEADER_INTAKE_SEQ, intake_seq.to_string().as_str());
        // The `queued` event goes out before the task can be fetched, on the
        // connection that queues it: an agent's `started` cannot overtake
        // it. A queueing that fails after it repeats it on the retry (events
        // are at least once).
        self.queued_event(&spec, subject.clone()).await;
        if spec.prefer_region.is_some() {
            if let Err(e) = self.queue_fallback(&spec, &body).await {
                return Sent::Other(Step::Retry {
                    msg,
                    why: format!("while queueing task {}: {e}", spec.id),
                });
            }
        }
        match self
            .js
            .publish_with_headers(subject.clone(), headers, body)
            .await
        {
            Ok(ack) => Sent::Routed {
                msg,
                spec,
                subject,
                ack,
            },
            Err(e) => Sent::Other(Step::Retry {
                msg,
                why: format!("while queueing task {}: {e}", spec.id),
            }),
        }
    }

    /// Queues the any-region copy of a task with `prefer_region`.
    async fn queue_fallback(&self, spec: &TaskSpec, body: &Bytes) -> Result<(), String> {
        let subject = subjects::queue(spec.priority, None, &spec.requires, &spec.tenant);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{}/fallback", spec.id).as_str());
        headers.insert(subjects::HEADER_FALLBACK, "1");
        self.js
            .publish_with_headers(subject, headers, body.clone())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn finish(&self, sent: Sent) {
        match sent {
            Sent::Routed {
                msg,
                spec,
                subject,
                ack,
            } => match ack.await {
                Ok(_) => {
                    metrics::counter!(
                        crate::metrics::TASKS_QUEUED,
                        "tenant" => spec.tenant.clone(),
                        "priority" => spec.priority.as_str()
                    )
                    .increment(1);
                    if let Ok(info) = msg.info() {
                        let waited = time::OffsetDateTime::now_utc() - info.published;
                        metrics::histogram!(crate::metrics::DISPATCH_SECONDS)
                            .record(waited.as_seconds_f64().max(0.0));
                    }
                    // (The `queued` event went out before the task was
                    // queued, so a crash before this ack repeats it rather
                    // than losing it.)
                    self.wake.queued(&subject);
                    ack_or_log(&msg, AckKind::Ack).await;
                    tracing::debug!(task_id = %spec.id, tenant = %spec.tenant, "task queued");
                }
                Err(e) => {
                    tracing::warn!(task_id = %spec.id, error = %e, "queue did not take task; will retry");
                    ack_or_log(&msg, AckKind::Nak(Some(RETRY_DELAY))).await;
                }
            },
            Sent::Other(Step::Reject { msg, entry }) => {
                let stored = emit::dead_letter(&self.js, &entry).await;
                let delivered = msg.info().map_or(1, |i| i.delivered);
                if let Err(e) = &stored {
                    if delivered < MAX_DEAD_LETTER_TRIES {
                        tracing::warn!(error = %e, delivered, "could not dead-letter a rejected task; will retry");
                        ack_or_log(&msg, AckKind::Nak(Some(RETRY_DELAY))).await;
                        return;
                    }
                    // Never loop on a message: after this many tries it is
                    // dropped, counted and logged with what is known of it.
                    metrics::counter!(DEAD_LETTERS_LOST, "reason" => "rejected").increment(1);
                    tracing::error!(error = %e, delivered, subject = %entry.subject, tenant = %entry.tenant, code = %entry.failure.code, bytes = msg.payload.len(), "could not dead-letter a rejected task; dropping it");
                }
                metrics::counter!(crate::metrics::TASKS_REJECTED, "code" => entry.failure.code.as_str())
                    .increment(1);
                tracing::info!(tenant = %entry.tenant, code = %entry.failure.code, "task rejected: {}", entry.failure.message);
                let mut event =
                    TaskEvent::new(TaskEventKind::Rejected, entry.id.clone(), &entry.tenant);
                event.error = Some(entry.failure);
                emit::task_event(&self.client, &event).await;
                let kind = if stored.is_ok() {
                    AckKind::Ack
                } else {
                    AckKind::Term
                };
                ack_or_log(&msg, kind).await;
            }
            Sent::Other(Step::Duplicate { msg, id }) => {
                tracing::info!(task_id = %id, "duplicate submission ignored; the first one stands");
                ack_or_log(&msg, AckKind::Ack).await;
            }
            Sent::Other(Step::AlreadyRouted { msg, spec, subject }) => {
                self.queued_event(&spec, subject).await;
                ack_or_log(&msg, AckKind::Ack).await;
            }
            Sent::Other(Step::Retry { msg, why }) => {
                tracing::warn!(%why, "intake message will be retried");
                ack_or_log(&msg, AckKind::Nak(Some(RETRY_DELAY))).await;
            }
            Sent::Other(Step::Route { msg, .. }) => {
                // `send` turns every Route into Routed or Retry.
                ack_or_log(&msg, AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    }

    async fn queued_event(&self, spec: &TaskSpec, queue: String) {
        let mut event = TaskEvent::new(TaskEventKind::Queued, Some(spec.id.clone()), &spec.tenant);
        event.priority = Some(spec.priority);
        event.queue = Some(queue);
        emit::task_event(&self.client, &event).await;
    }
}

async fn ack_or_log(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        // The message comes back after its ack wait; handling is idempotent.
        tracing::warn!(error = %e, "could not acknowledge intake message");
    }
}
