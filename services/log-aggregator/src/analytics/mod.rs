//! Fleet analytics and cost tracking.
//!
//! Agents send one report per attempt they ran, inside the task event that
//! ends the attempt or alone on `clawfleet.events.attempt.<tenant>.<agent>`
//! (both kept by `CLAWFLEET_EVENTS`): who ran what, for how long, how it
//! ended, and what the executor used (tokens and model). The aggregator reads them through its own durable
//! consumer ([`crate::config::Analytics::consumer`]), prices each with the
//! configured price table as it arrives, and keeps them in a second SQLite
//! database beside the log index, `attempts.db`, for
//! [`crate::config::Analytics::retention`] (30 days by default).
//!
//! Why its own file: attempts are a few hundred bytes each and arrive at
//! the task rate, while log lines arrive at many times that rate. Keeping
//! them apart means a burst of logs never delays analytics (or the other
//! way round), the retention of each is a range delete on its own table,
//! and a log index that is moved away or rebuilt keeps the cost history.
//!
//! Prices apply when an attempt is recorded, like an invoice line: a new
//! price table changes the cost of later attempts, not of past ones.
//!
//! The queries are in [`reports`]: summaries per agent, capability, tenant,
//! label, model or time; agents below the rest of the fleet; per-capability
//! baselines; failure rate by task characteristic; cost.

pub mod reports;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use clawfleet_shared::events::{AttemptReport, TaskEvent};
use futures::StreamExt;
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use crate::config::Prices;
use store::Row;

/// Most reports written in one transaction.
const BATCH: usize = 1000;
/// Longest a report waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Reads attempt reports into the attempts database until `cancel`.
pub async fn ingest(
    consumer: PullConsumer,
    conn: Arc<Mutex<Connection>>,
    prices: Prices,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        match pipeline(&consumer, &conn, &prices, &cancel).await {
            Ok(()) if cancel.is_cancelled() => break,
            Ok(()) => tracing::warn!("attempt report stream ended; reopening"),
            Err(e) => tracing::warn!(error = %e, "attempt report stream failed; reopening"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn pipeline(
    consumer: &PullConsumer,
    conn: &Arc<Mutex<Connection>>,
    prices: &Prices,
    cancel: &CancellationToken,
) -> Result<(), async_nats::jetstream::consumer::StreamError> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    loop {
        let first = tokio::select! {
            m = messages.next() => m,
            _ = cancel.cancelled() => return Ok(()),
        };
        let first = match first {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "attempt consumer hiccup");
                continue;
            }
            None => return Ok(()),
        };
        let mut rows = Vec::with_capacity(BATCH);
        let mut unreadable = 0usize;
        let mut take = |msg: &async_nats::jetstream::Message| match report_in(msg) {
            Ok(Some(report)) => rows.push(Row::new(&report, prices)),
            Ok(None) => {}
            Err(_) => unreadable += 1,
        };
        take(&first);
        let mut last = first;
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        let mut taken = 1;
        while taken < BATCH {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    take(&m);
                    taken += 1;
                    last = m;
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "attempt consumer hiccup");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        if unreadable > 0 {
            tracing::warn!(count = unreadable, "skipped unreadable attempt reports");
        }
        // Written before acked; a batch that cannot be written is retried
        // until it can (its reports are not acked meanwhile, and a report
        // written twice is kept once).
        let mut delay = Duration::from_millis(100);
        loop {
            let conn = conn.clone();
            let batch = rows.clone();
            let written = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().expect("attempts db lock");
                store::insert(&mut conn, &batch)
            })
            .await;
            match written {
                Ok(Ok(added)) => {
                    crate::metrics::attempts_recorded(&rows, added);
                    break;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not record attempts; retrying in {delay:?}")
                }
                Err(e) => tracing::error!(error = %e, "attempt writer panicked; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Ok(()),
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Err(e) = last.ack().await {
            tracing::debug!(error = %e, "could not ack attempt reports");
        }
    }
}

/// The attempt report a message carries: the whole body on an attempt
/// subject, the `report` of a task event (which only events that end an
/// attempt the executor ran have).
fn report_in(
    msg: &async_nats::jetstream::Message,
) -> Result<Option<AttemptReport>, serde_json::Error> {
    if msg
        .subject
        .as_str()
        .starts_with(clawfleet_shared::subjects::ATTEMPT_EVENTS_PREFIX)
    {
        return serde_json::from_slice::<AttemptReport>(&msg.payload).map(Some);
    }
    serde_json::from_slice::<TaskEvent>(&msg.payload).map(|e| e.report.map(|r| *r))
}

/// Deletes attempts older than `keep`, every `interval`, until `cancel`.
pub async fn retain(
    conn: Arc<Mutex<Connection>>,
    keep: Duration,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let cutoff = clawfleet_shared::timefmt::now() - keep;
        let conn = conn.clone();
        let removed = tokio::task::spawn_blocking(move || {
            store::remove_before(&conn.lock().expect("attempts db lock"), cutoff)
        })
        .await;
        match removed {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "attempt retention removed {n} attempts"),
            Ok(Err(e)) => tracing::warn!(error = %e, "attempt retention failed"),
            Err(e) => tracing::warn!(error = %e, "attempt retention panicked"),
        }
    }
}
