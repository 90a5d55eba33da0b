//! The pull loop: take work only while there is a free slot, most urgent first.
//!
//! When slots are free the agent asks each eligible queue, critical first,
//! for at most as many tasks as it has free slots (a no-wait fetch), so it
//! never holds work it cannot start: a critical task that arrives behind
//! ten thousand queued low ones is the next thing any compatible agent
//! takes. With nothing to do it sleeps until a dispatcher signals new work
//! on `clawfleet.signal.work`, a new queue appears, or `idle_poll_interval`
//! passes (retries whose back-off ended send no signal).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queues::SharedEligible;
use crate::runner::Runner;
use crate::vitals::Vitals;

/// Largest batch asked of one queue at once.
const MAX_BATCH: usize = 256;
/// How long to wait for the server's answer to a fetch before giving up on it.
const FETCH_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The pull loop's parts.
pub struct Puller {
    pub(crate) runner: Arc<Runner>,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) eligible: SharedEligible,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) idle_poll: Duration,
    /// Stops pulling.
    pub(crate) stop: CancellationToken,
    /// Cancels running executors (fired after the drain timeout).
    pub(crate) abort: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Puller {
    /// Pulls and starts work until `stop` fires.
    pub async fn run(self) {
        let mut rotation = 0usize;
        let mut gate = self.vitals.gate();
        loop {
            // Pull only while the executor is ready and the health monitor
            // has not taken this agent out of the pool.
            while !*gate.borrow_and_update() {
                tokio::select! {
                    r = gate.changed() => if r.is_err() { return },
                    _ = self.stop.cancelled() => return,
                }
            }
            // Wait for at least one free slot, then claim every free slot.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = self.stop.cancelled() => return,
            };
            let extra = self.slots.available_permits().min(MAX_BATCH - 1) as u32;
            let mut permits = first;
            if extra > 0 {
                if let Ok(more) = self.slots.clone().try_acquire_many_owned(extra) {
                    permits.merge(more);
                }
            }
            rotation = rotation.wrapping_add(1);
            let started = self.fill(permits, rotation).await;
            if self.stop.is_cancelled() {
                return;
            }
            if started == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.idle_poll) => {}
                    _ = self.stop.cancelled() => return,
                }
            }
        }
    }

    /// Fetches up to `permits.num_permits()` tasks, highest priority first,
    /// and starts each on a slot. Unused slots are released. Returns how
    /// many started.
    async fn fill(&self, mut permits: OwnedSemaphorePermit, rotation: usize) -> usize {
        let by_priority: Vec<Vec<PullConsumer>> = {
            let e = self.eligible.read().expect("eligible lock");
            e.by_priority.to_vec()
        };
        let mut started = 0;
        for consumers in by_priority {
            let n = consumers.len();
            for i in 0..n {
                let wanted = permits.num_permits();
                if wanted == 0 {
                    return started;
                }
                let consumer = &consumers[(i + rotation) % n];
                let ack_wait = consumer.cached_info().config.ack_wait;
                let batch = match consumer.fetch().max_messages(wanted).messages().await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(error = %e, "fetch failed");
                        continue;
                    }
                };
                let mut batch = std::pin::pin!(batch);
                loop {
                    // A no-wait fetch is answered at once; a reply that never
                    // comes (the server restarted mid-request) must not stall
                    // the loop. Anything delivered late is redelivered after
                    // its ack wait.
                    let msg = match tokio::time::timeout(FETCH_REPLY_TIMEOUT, batch.next()).await {
                        Ok(Some(Ok(m))) => m,
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            tracing::debug!(error = %e, "fetch ended");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("no reply to a fetch; asking again");
                            break;
                        }
                    };
                    let msg: jetstream::Message = msg;
                    let Some(slot) = permits.split(1) else {
                        // More than asked for cannot happen; hand it back rather than hoard.
                        let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
                        continue;
                    };
                    started += 1;
                    let runner = self.runner.clone();
                    let abort = self.abort.clone();
                    self.tracker.spawn(async move {
                        runner.handle(msg, ack_wait, abort).await;
                        drop(slot);
                    });
                }
            }
        }
        started
    }
}
