//! Reading task results from the `CLAWFLEET_RESULTS` stream.
//!
//! The stream keeps the one result of each task on
//! `clawfleet.results.<tenant>.<id>`, so a client that starts reading after
//! the task finished still finds it. Readers here use ordered consumers
//! (ephemeral, flow-controlled, recreated by the client if they break) and
//! never write anything.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clawfleet_shared::{subjects, ErrorBody, ErrorCode, TaskResult};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::client::Api;

/// Above this many tenants, one consumer on every result is cheaper than a filter per tenant.
const MAX_FILTERS: usize = 64;

/// Opens the results stream; a missing stream means no dispatcher ever ran here.
async fn open(api: &Api) -> anyhow::Result<jetstream::stream::Stream> {
    api.jetstream()
        .get_stream(subjects::STREAM_RESULTS)
        .await
        .map_err(|e| {
            ErrorBody::new(
                ErrorCode::Unavailable,
                format!(
                    "cannot open the results stream at {} (has a dispatcher run there?): {e}",
                    api.url()
                ),
            )
            .into()
        })
}

/// Waits up to `timeout` for the result of task `id` of `tenant`, whether it
/// was published before or after this call.
pub async fn wait_one(
    api: &Api,
    tenant: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<TaskResult> {
    let stream = open(api).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::result(tenant, id),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Err(_) => anyhow::bail!(
                "no result for task {id} within {}; `clawfleet task get {id}` shows where it is",
                humantime::format_duration(timeout)
            ),
            Ok(None) => anyhow::bail!("the results stream closed while waiting for task {id}"),
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "results consumer hiccup; it recovers by itself")
            }
            Ok(Some(Ok(msg))) => return Ok(serde_json::from_slice(&msg.payload)?),
        }
    }
}

/// The stored result of one task, if there is one.
pub async fn last(api: &Api, tenant: &str, id: &str) -> Option<TaskResult> {
    let stream = open(api).await.ok()?;
    let msg = stream
        .get_last_raw_message_by_subject(&subjects::result(tenant, id))
        .await
        .ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// Follows every result of `tenants` published from now on, sending each
/// decoded result to the returned channel until the channel is dropped.
///
/// Call it before submitting: what is published afterwards is never missed.
pub async fn follow(
    api: &Api,
    tenants: &[String],
) -> anyhow::Result<mpsc::UnboundedReceiver<TaskResult>> {
    let stream = open(api).await?;
    // Start after the last stored message rather than at "now" as the server
    // sees it, so no clock is involved.
    let start = stream.cached_info().state.last_sequence + 1;
    let mut config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        ..Default::default()
    };
    match tenants {
        [] => config.filter_subject = subjects::RESULTS_ALL.to_string(),
        [one] => config.filter_subject = subjects::results_of_tenant(one),
        many if many.len() > MAX_FILTERS => {
            config.filter_subject = subjects::RESULTS_ALL.to_string()
        }
        many => {
            config.filter_subjects = many
                .iter()
                .map(|t| subjects::results_of_tenant(t))
                .collect()
        }
    }
    let consumer = stream.create_consumer(config).await?;
    let mut messages = consumer.messages().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    None => return,
                    Some(Err(e)) => tracing::debug!(error = %e, "results consumer hiccup; it recovers by itself"),
                    Some(Ok(msg)) => match serde_json::from_slice::<TaskResult>(&msg.payload) {
                        Ok(result) => if tx.send(result).is_err() { return },
                        Err(e) => tracing::debug!(subject = %msg.subject, error = %e, "ignoring unreadable result"),
                    },
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}
