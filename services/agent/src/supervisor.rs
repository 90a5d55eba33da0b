//! Keeping the executor healthy and listening to the health monitor.
//!
//! - [`executor`] probes the executor every `health_check_interval`; while it
//!   is not ready the agent pulls no work, and when it is down the agent
//!   restarts it with exponential back-off, counting restarts (the health
//!   monitor escalates an agent whose executor keeps dying).
//! - [`monitor_verdict`] watches the agent's own entry in the health bucket:
//!   the monitor takes a down, hung, recovering or quarantined agent out of
//!   the pool by writing it there, and this agent then stops pulling.
//! - [`answer_pings`] answers the monitor's pings from the main runtime, so a
//!   wedged agent stops answering even though its heartbeat thread beats on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use clawfleet_shared::agent::PingReply;
use clawfleet_shared::events::{AgentEvent, AgentEventKind};
use clawfleet_shared::health::HealthEntry;
use clawfleet_shared::{emit, subjects, timefmt};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::executor::{Executor, Health};
use crate::vitals::Vitals;

/// Settings of the executor supervisor.
pub struct Supervision {
    /// Time between probes.
    pub interval: Duration,
    /// First restart back-off.
    pub backoff: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
}

/// Longest a probe may take before it counts as `down`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Consecutive good probes after which the restart back-off starts over.
const STABLE_PROBES: u32 = 3;

/// Probes once and records the result.
pub async fn probe(executor: &dyn Executor, vitals: &Vitals) -> Health {
    let health = tokio::time::timeout(PROBE_TIMEOUT, executor.health())
        .await
        .unwrap_or(Health::Down);
    vitals.set_executor_health(health);
    health
}

/// Supervises the executor until `stop`.
pub async fn executor(
    executor: Arc<dyn Executor>,
    vitals: Arc<Vitals>,
    settings: Supervision,
    client: async_nats::Client,
    agent_id: String,
    stop: CancellationToken,
) {
    let mut backoff = settings.backoff;
    let mut good = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = stop.cancelled() => return,
        }
        match probe(executor.as_ref(), &vitals).await {
            Health::Ready => {
                good += 1;
                if good >= STABLE_PROBES {
                    backoff = settings.backoff;
                }
            }
            Health::NotReady => good = 0,
            Health::Down => {
                good = 0;
                tracing::warn!(wait = %humantime::format_duration(backoff), "executor is down; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                // A restart can take minutes (a supervised OpenClaw
                // gateway); the agent's stop does not wait for it (its
                // drain stops the executor afterwards).
                let outcome = tokio::select! {
                    r = executor.restart() => r,
                    _ = stop.cancelled() => return,
                };
                let restarts = vitals.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                ::metrics::counter!(crate::metrics::EXECUTOR_RESTARTS, "agent" => agent_id.clone())
                    .increment(1);
                let reason = match &outcome {
                    Ok(()) => format!("restart {restarts}: executor was down"),
                    Err(e) => format!("restart {restarts} failed: {e}"),
                };
                tracing::warn!(restarts, "{reason}");
                emit::agent_event(
                    &client,
                    &AgentEvent::new(AgentEventKind::ExecutorRestarted, &agent_id, Some(reason)),
                )
                .await;
                backoff = (backoff * 2).min(settings.backoff_max);
                probe(executor.as_ref(), &vitals).await;
                vitals.beat_now.notify_one();
            }
        }
    }
}

/// Follows this agent's entry in the health bucket until `stop`. A verdict
/// that keeps the agent out of the pool is trusted only until it runs out
/// (see `HealthEntry::valid_for_ms`): with no monitor confirming it any
/// more, the agent takes work again instead of staying out forever.
///
/// The entry is read once, then followed with a plain subscription to its
/// key's subject rather than a KV watch: a watch is a JetStream consumer,
/// one per agent on the same stream, and a stream takes at most 1,000 of
/// them by default. A write missed while the connection was down is made
/// good by the monitor's next confirmation (every `verdict_refresh`) or by
/// the verdict running out.
pub async fn monitor_verdict(
    client: async_nats::Client,
    health: kv::Store,
    agent_id: String,
    vitals: Arc<Vitals>,
    stop: CancellationToken,
) {
    let current: std::sync::Mutex<Option<HealthEntry>> = std::sync::Mutex::new(None);
    let apply = |verdict: Option<HealthEntry>| {
        if let Some(h) = verdict.as_ref().filter(|h| !h.takes_work()) {
            tracing::warn!(state = %h.state, reason = %h.reason, quarantined = h.quarantine.is_some(), "the health monitor took this agent out of the pool");
        }
        let allows = verdict
            .as_ref()
            .is_none_or(|h| h.takes_work() || h.expired(timefmt::now()));
        *current.lock().expect("verdict lock") = verdict;
        vitals.set_monitor_allows(allows);
    };
    let decode = |bytes: &[u8]| match serde_json::from_slice::<HealthEntry>(bytes) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable health entry; ignoring it");
            None
        }
    };
    let follow = async {
        let subject = format!("$KV.{}.{agent_id}", health.name);
        let mut backoff = Duration::from_millis(100);
        loop {
            // Subscribed before the read, so no write falls between them.
            let mut writes = match client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow this agent's health entry; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            match health.entry(&agent_id).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => {
                    if let Some(h) = decode(&e.value) {
                        apply(Some(h));
                    }
                }
                Ok(_) => apply(None),
                Err(e) => tracing::debug!(error = %e, "could not read this agent's health entry"),
            }
            while let Some(write) = writes.next().await {
                let removed = write
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                if removed {
                    apply(None);
                } else if let Some(h) = decode(&write.payload) {
                    apply(Some(h));
                }
            }
            // The subscription ended (the connection is closing): not in a tight loop.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    };
    let expiry = async {
        loop {
            tokio::time::sleep(VERDICT_CHECK).await;
            let expired = current
                .lock()
                .expect("verdict lock")
                .as_ref()
                .is_some_and(|h| !h.takes_work() && h.expired(timefmt::now()));
            if expired && !vitals.monitor_allows() {
                tracing::warn!("the health monitor's verdict ran out and was not confirmed (is a monitor running?); taking work again");
                vitals.set_monitor_allows(true);
            }
        }
    };
    tokio::select! {
        _ = follow => {}
        _ = expiry => {}
        _ = stop.cancelled() => {}
    }
}

/// How often an agent held out of the pool checks whether its verdict ran out.
const VERDICT_CHECK: Duration = Duration::from_secs(1);

/// Answers the health monitor's pings until `stop`.
pub async fn answer_pings(
    client: async_nats::Client,
    agent_id: String,
    vitals: Arc<Vitals>,
    slots: Arc<Semaphore>,
    max_concurrency: u32,
    stop: CancellationToken,
) {
    let mut pings = match client.subscribe(subjects::agent_ping(&agent_id)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot answer health pings");
            return;
        }
    };
    loop {
        let ping = tokio::select! {
            p = pings.next() => p,
            _ = stop.cancelled() => return,
        };
        let Some(ping) = ping else { return };
        let Some(reply) = ping.reply else { continue };
        let body = PingReply {
            agent_id: agent_id.clone(),
            in_flight: max_concurrency.saturating_sub(slots.available_permits() as u32),
            executor_health: vitals.executor_health(),
        };
        let bytes = serde_json::to_vec(&body).expect("ping reply encodes");
        let _ = client.publish(reply, bytes.into()).await;
    }
}
