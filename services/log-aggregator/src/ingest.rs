//! Reading `CLAWFLEET_LOGS` into the index.
//!
//! Lines are pulled from the aggregator's durable consumer and gathered
//! into batches (up to `batch_lines`, or whatever came within `batch_wait`
//! of the first line), each handed to the [writer](crate::writer). While the
//! writer commits one batch the next is being gathered. The consumer
//! acknowledges cumulatively (`AckPolicy::All`): once a batch is committed,
//! one ack of its last message settles it and everything before it. A
//! batch that is not committed is never acked, so its lines come back after
//! the ack wait; the index skips the ones it already has.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Message;
use clawfleet_shared::logs::LogLine;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{Incoming, Inserted, StoreError};
use crate::writer::Writer;

/// Committed batches waiting for their ack at most.
const ACKS_QUEUED: usize = 8;

type Commit = oneshot::Receiver<Result<Inserted, StoreError>>;

/// Runs until `cancel`; re-opens the message stream with back-off when it ends.
pub async fn run(
    consumer: PullConsumer,
    writer: Writer,
    batch_lines: usize,
    batch_wait: Duration,
    cancel: CancellationToken,
) {
    let (acks, pending) = mpsc::channel(ACKS_QUEUED);
    let acker = tokio::spawn(ack_in_order(pending));
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        match pipeline(&consumer, &writer, &acks, batch_lines, batch_wait, &cancel).await {
            Ok(()) if cancel.is_cancelled() => break,
            Ok(()) => tracing::warn!("log stream ended; reopening"),
            Err(Failure::WriterGone) => {
                tracing::error!("the log index writer stopped; no more lines are indexed");
                break;
            }
            Err(Failure::Stream(e)) => tracing::warn!(error = %e, "log stream failed; reopening"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    // Let the last committed batches be acked before returning.
    drop(acks);
    let _ = acker.await;
}

enum Failure {
    Stream(async_nats::jetstream::consumer::StreamError),
    WriterGone,
}

async fn pipeline(
    consumer: &PullConsumer,
    writer: &Writer,
    acks: &mpsc::Sender<(Commit, Message)>,
    batch_lines: usize,
    batch_wait: Duration,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch_lines.clamp(1, 10_000))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(Failure::Stream)?;
    loop {
        let first = tokio::select! {
            m = messages.next() => m,
            _ = cancel.cancelled() => return Ok(()),
        };
        let first = match first {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "log consumer hiccup");
                continue;
            }
            None => return Ok(()),
        };
        let mut batch = Vec::with_capacity(batch_lines);
        batch.push(decode(&first));
        let mut last = first;
        let deadline = tokio::time::Instant::now() + batch_wait;
        while batch.len() < batch_lines {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    batch.push(decode(&m));
                    last = m;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "log consumer hiccup");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        let commit = writer
            .insert(batch)
            .await
            .map_err(|_| Failure::WriterGone)?;
        if acks.send((commit, last)).await.is_err() {
            return Err(Failure::WriterGone);
        }
    }
}

fn decode(msg: &Message) -> Incoming {
    Incoming {
        seq: msg.info().map(|i| i.stream_sequence).unwrap_or(0),
        bytes: msg.payload.len(),
        // Lines come from any publisher: cut to the documented limits
        // before they are stored, whatever their size on the wire.
        line: serde_json::from_slice::<LogLine>(&msg.payload)
            .ok()
            .map(|mut line| {
                line.bound();
                line
            }),
    }
}

/// Acks each batch's last message once the batch is committed, in order.
async fn ack_in_order(mut pending: mpsc::Receiver<(Commit, Message)>) {
    while let Some((commit, last)) = pending.recv().await {
        // A batch not committed (the service is stopping) is left unacked,
        // so it is redelivered later.
        if let Ok(Ok(inserted)) = commit.await {
            metrics::counter!(crate::metrics::LOG_LINES_INDEXED).increment(inserted.lines);
            if inserted.unreadable > 0 {
                tracing::debug!(
                    count = inserted.unreadable,
                    "skipped messages that are not log lines"
                );
            }
            if let Err(e) = last.ack().await {
                // The next batch's ack covers this one too.
                tracing::debug!(error = %e, "could not ack indexed log lines");
            }
        }
    }
}
