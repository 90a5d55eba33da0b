//! A tenant's `quota.max_running` across all of its queues.
//!
//! JetStream caps what one consumer hands out (`max_ack_pending`), and the
//! dispatcher sets that to the tenant's `max_running` on each of the
//! tenant's queues. A tenant has a queue per priority, capability set and
//! region, though, so that cap alone would let it run several times its
//! quota. The running set closes the gap: one key per capped tenant in the
//! `clawfleet-running` bucket lists the tasks running for it and on which
//! agent. An agent adds a task with a compare-and-set before the attempt is
//! recorded as running, and removes it once the attempt has ended; a task
//! that finds the set full waits a moment for a slot and otherwise goes back
//! to its queue.
//!
//! Why a set of tasks rather than a counter: a counter cannot be repaired
//! after a crash, a set can. An entry belongs to an agent, so:
//! - a task delivered again after its agent was lost takes over its entry
//!   (the count does not change);
//! - an agent that finds the set full removes the entries of agents that
//!   are gone (no registration, or judged `down` by the health monitor);
//! - an agent starting up removes the entries its previous process left.
//!
//! Every start and end of a capped tenant's task changes its key, and
//! compare-and-set writers of one key conflict. So each agent funnels its
//! changes to a tenant's set through one task of its own, which applies all
//! that queued up meanwhile in one read-modify-write: writers per key are
//! bounded by the number of agents, not by their slots.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use clawfleet_shared::agent::RunningSet;
use clawfleet_shared::health::{HealthEntry, HealthState};
use clawfleet_shared::timefmt;
use futures::StreamExt;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

/// Conflicting writes in a row after which a batch gives up (its
/// acquisitions fail; its releases are tried again with the next batch).
const MAX_CONFLICTS: usize = 32;

/// How long leftover releases wait for new changes before they are tried
/// again on their own.
const RELEASE_RETRY: Duration = Duration::from_millis(200);
/// Batches in a row that could not be written, after which leftover
/// releases are given up (about a minute of an unreachable set).
const MAX_FAILED_BATCHES: u32 = 300;

/// Errors while reading or writing a running set.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SlotError {
    /// NATS trouble.
    #[error("while accessing the running set of tenant {tenant}: {message}")]
    Nats {
        /// Tenant.
        tenant: String,
        /// Cause.
        message: String,
    },
    /// Other agents kept changing the set.
    #[error("the running set of tenant {0} kept changing under {MAX_CONFLICTS} writes")]
    Busy(String),
}

/// An attempt asking for a slot.
struct Acquisition {
    task: String,
    max: u32,
    reply: oneshot::Sender<Result<bool, SlotError>>,
}

/// A change one attempt asks of its tenant's set.
enum Op {
    Acquire(Acquisition),
    Release { task: String },
}

/// This agent's view of the running sets.
pub struct TenantSlots {
    shared: Arc<Shared>,
    /// One writer task per tenant, started on first use.
    writers: Mutex<HashMap<String, mpsc::UnboundedSender<Op>>>,
}

struct Shared {
    agent_id: String,
    running: kv::Store,
    agents: kv::Store,
    health: kv::Store,
    /// Agents found alive when pruning, and when: a tenant at its quota is
    /// pruned on every batch that meets a full set, and its holders need
    /// not be looked up each time.
    seen_alive: Mutex<HashMap<String, Instant>>,
}

/// How long an agent found alive is not looked up again.
const ALIVE_FOR: Duration = Duration::from_secs(1);

impl TenantSlots {
    /// Slots in the `running` bucket for `agent_id`, judging other agents by
    /// their registrations (`agents`) and health verdicts (`health`).
    pub fn new(agent_id: &str, running: kv::Store, agents: kv::Store, health: kv::Store) -> Self {
        Self {
            shared: Arc::new(Shared {
                agent_id: agent_id.to_string(),
                running,
                agents,
                health,
                seen_alive: Mutex::new(HashMap::new()),
            }),
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// Adds `task` to `tenant`'s running set unless it already holds `max`
    /// tasks. `Ok(false)`: full.
    pub async fn acquire(&self, tenant: &str, task: &str, max: u32) -> Result<bool, SlotError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            tenant,
            Op::Acquire(Acquisition {
                task: task.to_string(),
                max,
                reply,
            }),
        );
        answer
            .await
            .unwrap_or_else(|_| Err(SlotError::Busy(tenant.to_string())))
    }

    /// Removes `task` from `tenant`'s running set if this agent holds it
    /// there (another agent may have taken it over meanwhile). Returns at
    /// once; the writer retries until the set is reachable.
    pub fn release(&self, tenant: &str, task: &str) {
        self.send(
            tenant,
            Op::Release {
                task: task.to_string(),
            },
        );
    }

    fn send(&self, tenant: &str, op: Op) {
        let mut writers = self.writers.lock().expect("slots lock");
        let tx = writers.entry(tenant.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(self.shared.clone(), tenant.to_string(), rx));
            tx
        });
        // The writer only ends when this sender is dropped.
        let _ = tx.send(op);
    }

    /// Removes the entries a previous process of this agent left behind.
    pub async fn forget_previous(&self) -> Result<(), SlotError> {
        let shared = &self.shared;
        let err = |message: String| SlotError::Nats {
            tenant: "*".into(),
            message,
        };
        let mut keys = shared
            .running
            .keys()
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut tenants = Vec::new();
        while let Some(key) = keys.next().await {
            tenants.push(key.map_err(|e| err(e.to_string()))?);
        }
        for tenant in tenants {
            for _ in 0..MAX_CONFLICTS {
                let (mut set, revision) = shared.read(&tenant).await?;
                let before = set.tasks.len();
                set.tasks.retain(|_, agent| *agent != shared.agent_id);
                if set.tasks.len() == before
                    || shared.write(&tenant, &set, revision).await?.is_some()
                {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Applies one tenant's changes, in batches of whatever queued up while the
/// previous batch was being written.
async fn writer(shared: Arc<Shared>, tenant: String, mut rx: mpsc::UnboundedReceiver<Op>) {
    // Tasks this process holds an entry for.
    let mut mine: HashSet<String> = HashSet::new();
    // The set as this agent last wrote it, and its revision: the next batch
    // starts from it, and reads only if another agent wrote meanwhile.
    let mut known: Option<(RunningSet, Option<u64>)> = None;
    // Releases not written yet (the set was unreachable), and for how many batches.
    let mut releases: Vec<String> = Vec::new();
    let mut failed_batches = 0u32;
    loop {
        // `None` from the channel: every sender is gone, the agent stopped.
        // With releases left over, a quiet spell retries them on their own.
        let first = if releases.is_empty() {
            match rx.recv().await {
                Some(op) => Some(op),
                None => return,
            }
        } else {
            match tokio::time::timeout(RELEASE_RETRY, rx.recv()).await {
                Ok(None) => return,
                Ok(op) => op,
                Err(_quiet) => None,
            }
        };
        let mut acquires = Vec::new();
        let mut take = |op: Op| match op {
            Op::Acquire(a) => acquires.push(a),
            Op::Release { task } => {
                mine.remove(&task);
                releases.push(task);
            }
        };
        for op in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            take(op);
        }

        let mut outcome = Err(SlotError::Busy(tenant.clone()));
        for _ in 0..MAX_CONFLICTS {
            let (mut set, revision) = match known.take() {
                Some(k) => k,
                None => match shared.read(&tenant).await {
                    Ok(k) => k,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                },
            };
            let granted = shared.apply(&mut set, &mine, &releases, &acquires).await;
            match shared.write(&tenant, &set, revision).await {
                Ok(Some(revision)) => {
                    known = Some((set, Some(revision)));
                    outcome = Ok(granted);
                    break;
                }
                Ok(None) => {
                    // Another agent wrote first: read again, after a moment
                    // so that the writers spread out.
                    let pause = rand::rng().random_range(0..2_000);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(granted) => {
                releases.clear();
                failed_batches = 0;
                for (a, ok) in acquires.into_iter().zip(granted) {
                    if ok {
                        mine.insert(a.task);
                    }
                    let _ = a.reply.send(Ok(ok));
                }
            }
            Err(e) => {
                tracing::debug!(tenant = %tenant, error = %e, "could not change the running set");
                for a in acquires {
                    let _ = a.reply.send(Err(e.clone()));
                }
                failed_batches += 1;
                if failed_batches >= MAX_FAILED_BATCHES && !releases.is_empty() {
                    // Left behind, the entries are pruned by an agent that
                    // finds the set full once this agent is gone, or by this
                    // agent when it restarts.
                    tracing::warn!(tenant = %tenant, tasks = releases.len(), error = %e, "could not leave the tenant's running set; the entries stay until pruned");
                    releases.clear();
                }
            }
        }
    }
}

impl Shared {
    /// Applies releases, then acquisitions in order; which were granted.
    async fn apply(
        &self,
        set: &mut RunningSet,
        mine: &HashSet<String>,
        releases: &[String],
        acquires: &[Acquisition],
    ) -> Vec<bool> {
        for task in releases {
            if set.tasks.get(task) == Some(&self.agent_id) {
                set.tasks.remove(task);
            }
        }
        let mut pruned = false;
        let mut granted = Vec::with_capacity(acquires.len());
        for Acquisition { task, max, .. } in acquires {
            let max = *max as usize;
            // A task already in the set was lost with its agent (or is
            // ours): taking its entry over leaves the count as it is.
            if !set.tasks.contains_key(task) && set.tasks.len() >= max && !pruned {
                self.prune(set, mine, acquires).await;
                pruned = true;
            }
            let ok = set.tasks.contains_key(task) || set.tasks.len() < max;
            if ok {
                set.tasks.insert(task.clone(), self.agent_id.clone());
            }
            granted.push(ok);
        }
        granted
    }

    /// Drops entries of agents that are gone, and this agent's entries for
    /// tasks this process does not hold (nor is acquiring now).
    async fn prune(&self, set: &mut RunningSet, mine: &HashSet<String>, acquires: &[Acquisition]) {
        let holders: HashSet<String> = set.tasks.values().cloned().collect();
        let mut gone = HashSet::new();
        for agent in holders {
            if agent != self.agent_id && self.is_gone(&agent).await {
                gone.insert(agent);
            }
        }
        set.tasks.retain(|task, agent| {
            if *agent == self.agent_id {
                mine.contains(task) || acquires.iter().any(|a| a.task == *task)
            } else {
                !gone.contains(agent)
            }
        });
    }

    /// Whether `agent` has no registration left, or the health monitor
    /// judges it down (a verdict still in force).
    async fn is_gone(&self, agent: &str) -> bool {
        let now = Instant::now();
        let recently = self
            .seen_alive
            .lock()
            .expect("alive lock")
            .get(agent)
            .is_some_and(|at| now.duration_since(*at) < ALIVE_FOR);
        if recently {
            return false;
        }
        let gone = self.looks_gone(agent).await;
        let mut seen = self.seen_alive.lock().expect("alive lock");
        if gone {
            seen.remove(agent);
        } else {
            seen.insert(agent.to_string(), now);
        }
        gone
    }

    async fn looks_gone(&self, agent: &str) -> bool {
        match self.agents.get(agent).await {
            Ok(None) => return true,
            Ok(Some(_)) => {}
            // Unsure: keep its entries.
            Err(_) => return false,
        }
        match self.health.get(agent).await {
            Ok(Some(bytes)) => serde_json::from_slice::<HealthEntry>(&bytes)
                .is_ok_and(|h| h.state == HealthState::Down && !h.expired(timefmt::now())),
            _ => false,
        }
    }

    async fn read(&self, tenant: &str) -> Result<(RunningSet, Option<u64>), SlotError> {
        let entry = self
            .running
            .entry(tenant)
            .await
            .map_err(|e| SlotError::Nats {
                tenant: tenant.to_string(),
                message: e.to_string(),
            })?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                // An unreadable set is replaced: the quota is better briefly
                // loose than the tenant stuck.
                let set = serde_json::from_slice(&e.value).unwrap_or_default();
                Ok((set, Some(e.revision)))
            }
            Some(e) => Ok((RunningSet::default(), Some(e.revision))),
            None => Ok((RunningSet::default(), None)),
        }
    }

    /// Writes `set` if the key is still at `revision`: its new revision, or
    /// `Ok(None)` if the key was at another one.
    async fn write(
        &self,
        tenant: &str,
        set: &RunningSet,
        revision: Option<u64>,
    ) -> Result<Option<u64>, SlotError> {
        let bytes = serde_json::to_vec(set).expect("running set encodes");
        let nats = |message: String| SlotError::Nats {
            tenant: tenant.to_string(),
            message,
        };
        match revision {
            Some(revision) => match self.running.update(tenant, bytes.into(), revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(nats(e.to_string())),
            },
            None => match self.running.create(tenant, bytes.into()).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(nats(e.to_string())),
            },
        }
    }
}
