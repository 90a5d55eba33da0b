//! Publishing a task's one final result on
//! `clawfleet.results.<tenant>.<id>`, for every service that ends a task.
//!
//! A result is published with the task id as `Nats-Msg-Id`, so the results
//! stream keeps one per task even when two services (an agent and a
//! dispatcher's cancel, or an agent and the one that took the task over)
//! publish it. A service that finds a final record whose result the stream
//! lacks (it settled the record and died before publishing) publishes it
//! with [`ensure`].

use std::time::Duration;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use async_nats::HeaderMap;

use crate::{subjects, TaskRecord, TaskResult};

/// How long looking up a result may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a result could not be published or looked up.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The publish failed or was not acknowledged.
    #[error("could not publish the result: {0}")]
    Publish(String),
    /// The results stream could not say whether it has the result.
    #[error("could not look up the result: {0}")]
    Lookup(String),
}

/// Publishes `result` and waits for the stream's acknowledgement.
pub async fn publish(js: &jetstream::Context, result: &TaskResult) -> Result<(), ResultError> {
    let body = serde_json::to_vec(result).expect("result encodes");
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", result.id.as_str());
    js.publish_with_headers(
        subjects::result(&result.tenant, &result.id),
        headers,
        body.into(),
    )
    .await
    .map_err(|e| ResultError::Publish(e.to_string()))?
    .await
    .map_err(|e| ResultError::Publish(e.to_string()))?;
    Ok(())
}

/// Publishes the result of the final `record` if the results stream lacks
/// it. `true`: it was missing and is published now.
pub async fn ensure(js: &jetstream::Context, record: &TaskRecord) -> Result<bool, ResultError> {
    let Some(result) = TaskResult::from_record(record) else {
        return Ok(false);
    };
    let subject = subjects::result(&record.spec.tenant, &record.spec.id);
    let stream = js
        .get_stream_no_info(subjects::STREAM_RESULTS)
        .await
        .map_err(|e| ResultError::Lookup(e.to_string()))?;
    match tokio::time::timeout(
        LOOKUP_TIMEOUT,
        stream.get_last_raw_message_by_subject(&subject),
    )
    .await
    {
        Ok(Ok(_)) => return Ok(false),
        Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
        Ok(Err(e)) => return Err(ResultError::Lookup(e.to_string())),
        Err(_) => return Err(ResultError::Lookup("no answer in time".into())),
    }
    tracing::info!(task_id = %record.spec.id, "publishing a result its record has but the results stream lacks");
    publish(js, &result).await?;
    Ok(true)
}
