//! The pull loop: take work only while there is a free slot, most urgent
//! first, sharing the agent's time between tenants.
//!
//! **Least-loaded queues** (the default strategy). When slots are free the
//! agent asks its queues, critical first, for at most as many tasks as it
//! has free slots (no-wait fetches), so it never holds work it cannot start:
//! a critical task that arrives behind ten thousand queued low ones is the
//! next thing any compatible agent takes. Load is the agent's own count of
//! busy slots; an agent with spare capacity pulls, a saturated one pulls
//! nothing, and a faster agent, which frees slots sooner, pulls more. On a
//! wake-up signal, an agent that is already partly busy waits a moment
//! (up to [`LOAD_BIAS`], in proportion to its load) before asking, so the
//! least loaded agent is first in line.
//!
//! **Fairness.** Within a priority, each queue (one per tenant and
//! capability set) gets a share of the free slots in proportion to its
//! tenant's weight, in rotating order; slots a queue cannot fill go to the
//! others. A tenant flooding the fleet therefore delays another tenant's
//! task by at most about one fill of each agent, not by its whole backlog.
//!
//! **Round-robin queues** are served by a long-poll of one task at a time
//! per agent (see [`serve_round_robin`]): JetStream answers waiting pulls in
//! the order they were made, and an agent asks again only after it got its
//! task, so idle agents take turns.
//!
//! With nothing to do an agent sleeps until a dispatcher signals new work on
//! `clawfleet.signal.work`, a new queue appears, a task it handed back with
//! a delay is due, or its idle wait passes: `idle_poll_interval` at first,
//! doubling while it finds nothing up to `idle_poll_max` (tasks whose
//! retry back-off ended, or that JetStream redelivered after its ack wait,
//! come with no signal).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use clawfleet_shared::agent::Strategy;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queues::{Served, SharedEligible};
use crate::runner::Runner;
use crate::vitals::Vitals;

/// Largest batch asked of one queue at once.
const MAX_BATCH: usize = 256;
/// How long to wait for the server's answer to a fetch before giving up on it.
const FETCH_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest head start a fully idle agent gets over a fully busy one after a
/// wake-up signal.
const LOAD_BIAS: Duration = Duration::from_millis(4);

/// The pull loop's parts.
pub struct Puller {
    pub(crate) runner: Arc<Runner>,
    pub(crate) vitals: Arc<Vitals>,
    pub(crate) eligible: SharedEligible,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_concurrency: u32,
    pub(crate) wake: Arc<Notify>,
    pub(crate) idle_poll: Duration,
    /// Longest wait between two looks of an idle agent.
    pub(crate) idle_poll_max: Duration,
    /// Round-robin queues to serve, as they are discovered.
    pub(crate) round_robin: mpsc::UnboundedReceiver<Arc<Served>>,
    /// Stops pulling.
    pub(crate) stop: CancellationToken,
    /// Cancels running executors (fired after the drain timeout).
    pub(crate) abort: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// Fires whenever a task ends and frees a slot.
    pub(crate) slot_freed: Arc<Notify>,
}

impl Puller {
    /// Pulls and starts work until `stop` fires.
    pub async fn run(mut self) {
        let mut rotation = 0usize;
        let mut gate = self.vitals.gate();
        let servers = TaskTracker::new();
        let this = Arc::new(Shared {
            runner: self.runner.clone(),
            vitals: self.vitals.clone(),
            eligible: self.eligible.clone(),
            slots: self.slots.clone(),
            idle_poll: self.idle_poll,
            stop: self.stop.clone(),
            abort: self.abort.clone(),
            tracker: self.tracker.clone(),
            slot_freed: self.slot_freed.clone(),
        });
        let mut woken = false;
        // Doubles after each look that found nothing, from `idle_poll` up to
        // `idle_poll_max`: an idle fleet costs the server almost nothing,
        // and new work arrives with a wake-up signal anyway.
        let mut idle_wait = self.idle_poll;
        loop {
            while let Ok(q) = self.round_robin.try_recv() {
                servers.spawn(serve_round_robin(this.clone(), q));
            }
            // Pull only while the executor is ready and the health monitor
            // has not taken this agent out of the pool.
            while !*gate.borrow_and_update() {
                tokio::select! {
                    r = gate.changed() => if r.is_err() { break },
                    _ = self.stop.cancelled() => break,
                }
            }
            if self.stop.is_cancelled() {
                break;
            }
            // Only least-loaded queues are filled here; holding the slots
            // with none to fill would starve the round-robin servers.
            if !self.has_least_loaded_queues() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    q = self.round_robin.recv() => if let Some(q) = q {
                        servers.spawn(serve_round_robin(this.clone(), q));
                    },
                    _ = self.stop.cancelled() => break,
                }
                continue;
            }
            // Wait for at least one free slot, then claim every free slot.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = self.stop.cancelled() => break,
            };
            let extra = self.slots.available_permits().min(MAX_BATCH - 1) as u32;
            let mut permits = first;
            if extra > 0 {
                if let Ok(more) = self.slots.clone().try_acquire_many_owned(extra) {
                    permits.merge(more);
                }
            }
            if woken {
                let busy = self
                    .max_concurrency
                    .saturating_sub(permits.num_permits() as u32);
                if busy > 0 {
                    tokio::time::sleep(
                        LOAD_BIAS.mul_f64(busy as f64 / self.max_concurrency as f64),
                    )
                    .await;
                }
            }
            rotation = rotation.wrapping_add(1);
            let started = this.fill(permits, rotation).await;
            if self.stop.is_cancelled() {
                break;
            }
            woken = false;
            if started > 0 {
                idle_wait = self.idle_poll;
            } else {
                tokio::select! {
                    _ = self.wake.notified() => {
                        woken = true;
                        idle_wait = self.idle_poll;
                    }
                    _ = tokio::time::sleep(idle_wait) => {
                        self.eligible.read().expect("eligible lock").all_may_hold_work();
                        idle_wait = (idle_wait * 2).min(self.idle_poll_max);
                    }
                    q = self.round_robin.recv() => if let Some(q) = q {
                        servers.spawn(serve_round_robin(this.clone(), q));
                    },
                    _ = self.stop.cancelled() => break,
                }
            }
        }
        servers.close();
        servers.wait().await;
    }
}

impl Puller {
    fn has_least_loaded_queues(&self) -> bool {
        let e = self.eligible.read().expect("eligible lock");
        e.by_priority
            .iter()
            .flatten()
            .any(|q| q.entry.strategy == Strategy::LeastLoaded)
    }
}

/// What the fill loop and the round-robin servers share.
struct Shared {
    runner: Arc<Runner>,
    vitals: Arc<Vitals>,
    eligible: SharedEligible,
    slots: Arc<Semaphore>,
    idle_poll: Duration,
    stop: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    slot_freed: Arc<Notify>,
}

impl Shared {
    /// Fetches up to `permits.num_permits()` tasks, highest priority first,
    /// each queue of a priority getting its weighted share, and starts each
    /// on a slot. Unused slots are released. Returns how many started.
    async fn fill(&self, mut permits: OwnedSemaphorePermit, rotation: usize) -> usize {
        let by_priority: Vec<Vec<Arc<Served>>> = {
            let e = self.eligible.read().expect("eligible lock");
            e.by_priority
                .iter()
                .map(|qs| {
                    qs.iter()
                        .filter(|q| q.entry.strategy == Strategy::LeastLoaded && !e.is_paused(q))
                        .cloned()
                        .collect()
                })
                .collect()
        };
        let mut started = 0;
        for queues in by_priority {
            let n = queues.len();
            if n == 0 {
                continue;
            }
            let wanted = permits.num_permits();
            if wanted == 0 {
                return started;
            }
            let active: Vec<&Arc<Served>> = (0..n)
                .map(|i| &queues[(i + rotation) % n])
                .filter(|q| !q.maybe_empty() && !self.runner.holding_off(&q.subject))
                .collect();
            if active.is_empty() {
                continue;
            }
            // Deal the free slots by smooth weighted round robin: credits
            // persist across fills, so over time each queue gets its
            // weight's share even when one slot frees at a time.
            let total: i64 = active
                .iter()
                .map(|q| i64::from(q.entry.weight.max(1)))
                .sum();
            let mut dealt = vec![0usize; active.len()];
            for _ in 0..wanted {
                let mut best = 0;
                for (i, q) in active.iter().enumerate() {
                    q.add_credit(i64::from(q.entry.weight.max(1)));
                    if q.credit() > active[best].credit() {
                        best = i;
                    }
                }
                active[best].add_credit(-total);
                dealt[best] += 1;
            }
            // Each queue its share; then what is left to the queues that
            // filled theirs.
            let mut full = Vec::new();
            for (q, share) in active.iter().zip(dealt) {
                if share == 0 {
                    continue;
                }
                let share = share.min(permits.num_permits());
                if share == 0 {
                    break;
                }
                let got = self.fetch(q, share, &mut permits).await;
                started += got;
                if got == share {
                    full.push(*q);
                }
            }
            for q in full {
                let left = permits.num_permits();
                if left == 0 {
                    break;
                }
                started += self.fetch(q, left, &mut permits).await;
            }
        }
        started
    }

    /// Fetches up to `wanted` tasks from `q` (no wait) and starts them.
    async fn fetch(&self, q: &Served, wanted: usize, permits: &mut OwnedSemaphorePermit) -> usize {
        let ack_wait = q.consumer.cached_info().config.ack_wait;
        let batch = match q.consumer.fetch().max_messages(wanted).messages().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "fetch failed");
                return 0;
            }
        };
        let mut batch = std::pin::pin!(batch);
        let mut got = 0;
        let mut ended = false;
        while !ended {
            // A no-wait fetch is answered at once; a reply that never
            // comes (the server restarted mid-request) must not stall
            // the loop. Anything delivered late is redelivered after
            // its ack wait.
            let first = match tokio::time::timeout(FETCH_REPLY_TIMEOUT, batch.next()).await {
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
            // The rest of the reply that is here already: held and
            // announced together, before any of it is worked on.
            let mut arrived = vec![first];
            loop {
                match batch.next().now_or_never() {
                    Some(Some(Ok(m))) => arrived.push(m),
                    Some(Some(Err(e))) => {
                        tracing::debug!(error = %e, "fetch ended");
                        ended = true;
                        break;
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let mut taken = Vec::with_capacity(arrived.len());
            for msg in arrived {
                match permits.split(1) {
                    Some(slot) => taken.push((msg, slot)),
                    // More than asked for cannot happen; hand it back rather than hoard.
                    None => {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                }
            }
            self.runner.leases.hold(taken.iter().map(|(m, _)| m)).await;
            for (msg, slot) in taken {
                got += 1;
                self.start(msg, ack_wait, q.entry.max_running, slot);
            }
        }
        q.set_maybe_empty(got < wanted);
        got
    }

    fn start(
        &self,
        msg: jetstream::Message,
        ack_wait: Duration,
        max_running: Option<u32>,
        slot: OwnedSemaphorePermit,
    ) {
        let runner = self.runner.clone();
        let abort = self.abort.clone();
        let freed = self.slot_freed.clone();
        self.tracker.spawn(async move {
            runner.handle(msg, ack_wait, max_running, abort).await;
            drop(slot);
            freed.notify_waiters();
        });
    }
}

/// Requests a round-robin agent keeps waiting on one queue. With one, an
/// agent busy starting its last task would miss its turn; with two it is
/// still in line while it does.
const ROUND_ROBIN_REQUESTS: usize = 2;

/// Serves one round-robin queue: long-polls for one task at a time (up to
/// [`ROUND_ROBIN_REQUESTS`] waiting), each asked again only after it was
/// answered, and only while a slot is free, the gate is open and the queue
/// is not paused. JetStream answers waiting pulls in the order they were
/// made, so idle agents take turns.
async fn serve_round_robin(this: Arc<Shared>, q: Arc<Served>) {
    let expires = this.idle_poll.max(Duration::from_millis(100));
    let ack_wait = q.consumer.cached_info().config.ack_wait;
    let mut waiting = futures::stream::FuturesUnordered::new();
    loop {
        let ready = this.vitals.pulling()
            && this.slots.available_permits() > 0
            && !this.eligible.read().expect("eligible lock").is_paused(&q);
        while ready && waiting.len() < ROUND_ROBIN_REQUESTS {
            waiting.push(one_turn(q.clone(), expires));
        }
        if waiting.is_empty() {
            tokio::select! {
                _ = this.slot_freed.notified() => {}
                _ = tokio::time::sleep(expires) => {}
                _ = this.stop.cancelled() => return,
            }
            continue;
        }
        let answer = tokio::select! {
            a = waiting.next() => a,
            _ = this.stop.cancelled() => return,
        };
        let Some(Some(msg)) = answer else { continue };
        match this.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                this.runner.leases.hold([&msg]).await;
                this.start(msg, ack_wait, q.entry.max_running, slot);
            }
            // Another queue took the last slot meanwhile: give it back at once.
            Err(_) => {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
}

/// One long-poll for one task; `None` when it expired or failed.
async fn one_turn(q: Arc<Served>, expires: Duration) -> Option<jetstream::Message> {
    let batch = q
        .consumer
        .batch()
        .max_messages(1)
        .expires(expires)
        .messages()
        .await
        .ok()?;
    let mut batch = std::pin::pin!(batch);
    match tokio::time::timeout(expires + FETCH_REPLY_TIMEOUT, batch.next()).await {
        Ok(Some(Ok(msg))) => Some(msg),
        _ => None,
    }
}
