//! Preemption: a full agent gives up a low-priority task when a critical
//! task waits in one of its queues.
//!
//! Every `preemption.check_interval`, an agent with no free slot that runs
//! at least one preemptible task of a `preemption.victims` priority asks its
//! critical queues how many tasks wait. A queue seen waiting on two checks
//! in a row (so a slot about to free up anyway is given the chance) is
//! claimed in the queue registry bucket (`preempt.<consumer>`, one claim per
//! queue per two check intervals fleet-wide, so several full agents do not
//! all preempt for the same task), and the claiming agent stops its least
//! urgent, most recently started victim: the executor is cancelled, the
//! attempt is recorded as `preempted` (not charged), the task is requeued at
//! its own priority with a `preempted` event, and the freed slot goes to
//! the critical task (the pull loop always looks at critical queues first).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Preemption;
use crate::queues::SharedEligible;
use crate::vitals::Vitals;

/// Prefix of preemption claims in the queue registry bucket.
pub const CLAIM_PREFIX: &str = "preempt.";

/// What the preemption watch needs.
pub struct Preempter {
    pub(crate) settings: Preemption,
    pub(crate) agent_id: String,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) eligible: SharedEligible,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) claims: kv::Store,
    pub(crate) stop: CancellationToken,
}

/// Watches for waiting critical work until `stop`.
pub async fn watch(p: Preempter) {
    if !p.settings.enabled || p.settings.victims.is_empty() {
        return;
    }
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(p.settings.check_interval) => {}
            _ = p.stop.cancelled() => return,
        }
        if p.slots.available_permits() > 0 || p.vitals.victim(&p.settings.victims).is_none() {
            seen.clear();
            continue;
        }
        let critical: Vec<_> = {
            let e = p.eligible.read().expect("eligible lock");
            e.by_priority[0]
                .iter()
                .filter(|q| !e.is_paused(q))
                .cloned()
                .collect()
        };
        let mut waiting = HashSet::new();
        for q in critical {
            if let Ok(info) = q.consumer.get_info().await {
                if info.num_pending > 0 {
                    waiting.insert(info.name.clone());
                }
            }
        }
        let due: Vec<String> = waiting.intersection(&seen).cloned().collect();
        seen = waiting;
        for consumer in due {
            if !p.claim(&consumer).await {
                continue;
            }
            let Some((task_id, task)) = p.vitals.victim(&p.settings.victims) else {
                break;
            };
            tracing::info!(%task_id, priority = task.priority.as_str(), critical_queue = %consumer, "preempting a task for a waiting critical one");
            task.preempted.store(true, Ordering::Relaxed);
            task.cancel.cancel();
            seen.remove(&consumer);
            break;
        }
    }
}

impl Preempter {
    /// Claims the right to preempt for `consumer`'s waiting tasks; a claim
    /// older than two check intervals may be taken over.
    async fn claim(&self, consumer: &str) -> bool {
        let key = format!("{CLAIM_PREFIX}{consumer}");
        let now = now_ms();
        let value = format!("{now} {}", self.agent_id);
        match self.claims.create(&key, value.clone().into()).await {
            Ok(_) => return true,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not claim a preemption");
                return false;
            }
        }
        let Ok(Some(entry)) = self.claims.entry(&key).await else {
            return false;
        };
        let at: u64 = String::from_utf8_lossy(&entry.value)
            .split(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let stale =
            Duration::from_millis(now.saturating_sub(at)) > self.settings.check_interval * 2;
        stale
            && self
                .claims
                .update(&key, value.into(), entry.revision)
                .await
                .is_ok()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
