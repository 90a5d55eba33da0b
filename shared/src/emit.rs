//! Publishing events and dead letters the same way from every service.

use async_nats::jetstream;

use crate::api::DlqEntry;
use crate::events::{AgentEvent, AttemptReport, TaskEvent};
use crate::subjects;

/// Publishes a task event. Events are notifications, so this does not wait
/// for the events stream's ack; a failure is logged, never fatal.
pub async fn task_event(client: &async_nats::Client, event: &TaskEvent) {
    let subject = subjects::task_event(event.kind.as_str(), &event.tenant);
    publish_json(client, subject, event).await;
}

/// Publishes an agent event (see [`task_event`] for delivery).
pub async fn agent_event(client: &async_nats::Client, event: &AgentEvent) {
    let subject = subjects::agent_event(event.kind.as_str(), &event.agent_id);
    publish_json(client, subject, event).await;
}

/// Publishes an attempt report (see [`task_event`] for delivery).
pub async fn attempt_report(client: &async_nats::Client, report: &AttemptReport) {
    let subject = subjects::attempt_event(&report.tenant, &report.agent);
    publish_json(client, subject, report).await;
}

async fn publish_json<T: serde::Serialize>(client: &async_nats::Client, subject: String, body: &T) {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            if let Err(e) = client.publish(subject, bytes.into()).await {
                tracing::warn!(error = %e, "could not publish event");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not encode event"),
    }
}

/// Errors while dead-lettering.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The entry could not be encoded.
    #[error("while encoding a dead letter: {0}")]
    Encode(#[from] serde_json::Error),
    /// The DLQ stream did not take it, whole or compacted.
    #[error("while storing a dead letter: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

/// Stores a dead letter, waiting for the DLQ stream's ack: losing it would
/// lose the only trace of the task.
///
/// An entry the stream refuses (larger than its message limit, or than the
/// server's max payload) is stored again compacted, its task replaced by a
/// summary ([`DlqEntry::compacted`]), which is small whatever the task was.
pub async fn dead_letter(js: &jetstream::Context, entry: &DlqEntry) -> Result<(), DeadLetterError> {
    let subject = subjects::dlq(entry.reason.as_str(), &entry.tenant);
    let bytes = serde_json::to_vec(entry)?;
    let first = match js.publish(subject.clone(), bytes.into()).await {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match first {
        Ok(_) => Ok(()),
        Err(e) if entry.task.is_null() => Err(e.into()),
        Err(e) => {
            tracing::debug!(error = %e, "dead letter refused whole; storing it compacted");
            let compact = serde_json::to_vec(&entry.clone().compacted())?;
            js.publish(subject, compact.into()).await?.await?;
            Ok(())
        }
    }
}
