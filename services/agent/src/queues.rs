//! Which queues this agent may pull from, and what it knows about each.
//!
//! The dispatchers register every (tenant, region, capability set) they
//! route to in the queue registry bucket, with the tenant's policy (weight,
//! dedicated-only, strategy); operators add pause rules to the same bucket.
//! This module watches it and keeps, per priority, the queues whose
//! requirements this agent meets: capabilities, region, and tenant
//! isolation (a dedicated agent serves only its tenants; a dedicated-only
//! tenant is served only by its dedicated agents). An agent never even looks
//! at a queue it may not serve, which is how routing rules are enforced.
//!
//! Each queue carries a hint, "probably empty", set when a fetch found
//! nothing and cleared when a dispatcher's wake-up signal names it (or names
//! nothing, meaning all), or at the idle poll. A busy agent with many
//! tenants' queues then asks only those that may hold work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use clawfleet_shared::agent::QueueEntry;
use clawfleet_shared::api::{PauseRule, PAUSE_PREFIX};
use clawfleet_shared::{subjects, watch, Priority};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// One queue (one priority of a registered queue) this agent serves.
pub struct Served {
    /// Its consumer.
    pub consumer: PullConsumer,
    /// Its registration (tenant, weight, strategy...).
    pub entry: QueueEntry,
    /// Its priority.
    pub priority: Priority,
    /// Its subject.
    pub subject: String,
    maybe_empty: AtomicBool,
    /// Smooth weighted round-robin credit (see the pull loop).
    credit: AtomicI64,
}

impl Served {
    /// Whether a fetch found it empty since the last signal naming it.
    pub fn maybe_empty(&self) -> bool {
        self.maybe_empty.load(Ordering::Relaxed)
    }

    /// Records what a fetch found.
    pub fn set_maybe_empty(&self, empty: bool) {
        self.maybe_empty.store(empty, Ordering::Relaxed);
    }

    /// Its weighted round-robin credit.
    pub fn credit(&self) -> i64 {
        self.credit.load(Ordering::Relaxed)
    }

    /// Adds to its credit.
    pub fn add_credit(&self, delta: i64) {
        self.credit.fetch_add(delta, Ordering::Relaxed);
    }
}

/// The queues this agent serves, most urgent priority first.
#[derive(Default)]
pub struct Eligible {
    /// Index = position in [`Priority::ALL`].
    pub by_priority: [Vec<Arc<Served>>; 4],
    by_subject: HashMap<String, Arc<Served>>,
    keys: Vec<String>,
    /// Pause rules in force, by key.
    pub paused: HashMap<String, PauseRule>,
}

impl Eligible {
    /// Whether a pause rule covers this queue.
    pub fn is_paused(&self, q: &Served) -> bool {
        self.paused
            .values()
            .any(|r| r.matches(&q.entry, q.priority))
    }

    /// Applies a wake-up signal: the queues it names (every queue when it
    /// names none) may hold work.
    pub fn signalled(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        if text.trim().is_empty() {
            self.all_may_hold_work();
            return;
        }
        for subject in text.lines() {
            if let Some(q) = self.by_subject.get(subject) {
                q.set_maybe_empty(false);
            }
        }
    }

    /// Forgets every "probably empty" hint.
    pub fn all_may_hold_work(&self) {
        for q in self.by_subject.values() {
            q.set_maybe_empty(false);
        }
    }
}

/// Shared, live view of [`Eligible`].
pub type SharedEligible = Arc<RwLock<Eligible>>;

/// Who the agent is, for eligibility.
pub struct Identity {
    /// Capabilities, sorted.
    pub capabilities: Vec<String>,
    /// Region, if any.
    pub region: Option<String>,
    /// Dedicated tenants (empty: shared).
    pub tenants: Vec<String>,
}

/// Watches the queue registry until `cancel`, attaching to every queue this
/// agent can serve and poking `changed` when one is added or a pause rule
/// changes. Round-robin queues are also sent on `round_robin`, for the
/// puller to serve them its own way.
pub async fn watch(
    js: jetstream::Context,
    registry: kv::Store,
    me: Identity,
    eligible: SharedEligible,
    changed: Arc<Notify>,
    round_robin: mpsc::UnboundedSender<Arc<Served>>,
    cancel: CancellationToken,
) {
    // With history: existing queues and rules first, then every change.
    watch::follow(&registry, ">", true, &cancel, |entry| {
        let (js, eligible, changed, me, round_robin) =
            (&js, &eligible, &changed, &me, &round_robin);
        async move {
            if let Some(rule_key) = entry.key.strip_prefix(PAUSE_PREFIX) {
                let mut e = eligible.write().expect("eligible lock");
                let key = format!("{PAUSE_PREFIX}{rule_key}");
                match entry.operation {
                    kv::Operation::Put => match serde_json::from_slice::<PauseRule>(&entry.value) {
                        Ok(rule) => {
                            tracing::info!(rule = %rule, "queues paused");
                            e.paused.insert(key, rule);
                        }
                        Err(err) => tracing::warn!(error = %err, "ignoring an unreadable pause rule"),
                    },
                    _ => {
                        if e.paused.remove(&key).is_some() {
                            tracing::info!("queues resumed");
                        }
                    }
                }
                drop(e);
                changed.notify_one();
                return;
            }
            if entry.operation != kv::Operation::Put
                || entry.key.starts_with(crate::preempt::CLAIM_PREFIX)
            {
                return;
            }
            let Ok(queue) = serde_json::from_slice::<QueueEntry>(&entry.value) else {
                tracing::warn!(key = %entry.key, "ignoring unreadable queue registration");
                return;
            };
            if !queue.servable_by(&me.capabilities, me.region.as_deref(), &me.tenants)
                || eligible
                    .read()
                    .expect("eligible lock")
                    .keys
                    .contains(&queue.key)
            {
                return;
            }
            match attach(js, &queue).await {
                Ok(served) => {
                    let mut e = eligible.write().expect("eligible lock");
                    for (i, q) in served.into_iter().enumerate() {
                        e.by_subject.insert(q.subject.clone(), q.clone());
                        if q.entry.strategy == clawfleet_shared::agent::Strategy::RoundRobin {
                            let _ = round_robin.send(q.clone());
                        }
                        e.by_priority[i].push(q);
                    }
                    e.keys.push(queue.key.clone());
                    drop(e);
                    tracing::info!(queue = %queue.key, tenant = %queue.tenant, requires = %subjects::capkey(&queue.requires), region = queue.region.as_deref().unwrap_or(subjects::ANY), strategy = queue.strategy.as_str(), "serving queue");
                    changed.notify_one();
                }
                Err(e) => {
                    tracing::warn!(queue = %queue.key, error = %e, "could not attach to queue")
                }
            }
        }
    })
    .await;
}

async fn attach(js: &jetstream::Context, queue: &QueueEntry) -> Result<Vec<Arc<Served>>, String> {
    let stream = js
        .get_stream_no_info(subjects::STREAM_QUEUE)
        .await
        .map_err(|e| e.to_string())?;
    let mut served = Vec::with_capacity(4);
    for priority in Priority::ALL {
        let name = subjects::queue_consumer(priority, &queue.key);
        let consumer: PullConsumer = stream
            .get_consumer(&name)
            .await
            .map_err(|e| e.to_string())?;
        served.push(Arc::new(Served {
            consumer,
            entry: queue.clone(),
            priority,
            subject: subjects::queue(
                priority,
                queue.region.as_deref(),
                &queue.requires,
                &queue.tenant,
            ),
            maybe_empty: AtomicBool::new(false),
            credit: AtomicI64::new(0),
        }));
    }
    Ok(served)
}
