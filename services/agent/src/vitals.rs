//! What the agent knows about itself, shared by its work loop, its executor
//! supervisor and its heartbeat thread (which runs on a runtime of its own,
//! so everything here is plain atomics and a mutex).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use clawfleet_shared::agent::ExecutorHealth;
use clawfleet_shared::Priority;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// A task this agent is running, as far as preemption cares.
pub struct RunningTask {
    /// Its priority.
    pub priority: Priority,
    /// Whether it may be preempted.
    pub preemptible: bool,
    /// When it started here.
    pub started: std::time::Instant,
    /// Stops its executor.
    pub cancel: CancellationToken,
    /// Set when it was stopped for a critical task (not for a shutdown).
    pub preempted: AtomicBool,
}

/// Shared, live state of one agent.
pub struct Vitals {
    /// Running tasks: task id → what preemption needs.
    running: Mutex<HashMap<String, std::sync::Arc<RunningTask>>>,
    /// Attempts that succeeded since start.
    pub completed: AtomicU64,
    /// Attempts that failed since start.
    pub failed: AtomicU64,
    /// Executor restarts since start.
    pub restarts: AtomicU32,
    executor_health: AtomicU8,
    monitor_allows: AtomicBool,
    /// Set when the agent starts draining.
    pub draining: AtomicBool,
    /// Asks the heartbeat thread for a beat now (state changed).
    pub beat_now: Notify,
    /// Whether the work loop may pull: the executor is ready and the health
    /// monitor has not taken the agent out of the pool.
    gate: watch::Sender<bool>,
}

impl Default for Vitals {
    fn default() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            executor_health: AtomicU8::new(0),
            monitor_allows: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            beat_now: Notify::new(),
            gate: watch::Sender::new(true),
        }
    }
}

fn health_code(h: ExecutorHealth) -> u8 {
    match h {
        ExecutorHealth::Ready => 0,
        ExecutorHealth::NotReady => 1,
        ExecutorHealth::Down => 2,
    }
}

impl Vitals {
    /// Forgets a task this agent finished or handed back.
    pub fn untrack(&self, task_id: &str) {
        self.running.lock().expect("running lock").remove(task_id);
    }

    /// Records a running task for preemption.
    pub fn track(&self, task_id: &str, task: std::sync::Arc<RunningTask>) {
        self.running
            .lock()
            .expect("running lock")
            .insert(task_id.to_string(), task);
    }

    /// The running task to give up for a critical one: preemptible, of one
    /// of the `victims` priorities, the least urgent, then the most
    /// recently started (the least work lost).
    pub fn victim(&self, victims: &[Priority]) -> Option<(String, std::sync::Arc<RunningTask>)> {
        self.running
            .lock()
            .expect("running lock")
            .iter()
            .filter(|(_, t)| {
                t.preemptible
                    && victims.contains(&t.priority)
                    && !t.preempted.load(Ordering::Relaxed)
            })
            .max_by_key(|(_, t)| (t.priority, t.started))
            .map(|(id, t)| (id.clone(), t.clone()))
    }

    /// The executor's health at its last probe.
    pub fn executor_health(&self) -> ExecutorHealth {
        match self.executor_health.load(Ordering::Relaxed) {
            0 => ExecutorHealth::Ready,
            1 => ExecutorHealth::NotReady,
            _ => ExecutorHealth::Down,
        }
    }

    /// Records a probe result; opens or closes the gate accordingly.
    pub fn set_executor_health(&self, h: ExecutorHealth) {
        let before = self.executor_health.swap(health_code(h), Ordering::Relaxed);
        if before != health_code(h) {
            self.update_gate();
        }
    }

    /// Records whether the health monitor lets this agent take work.
    pub fn set_monitor_allows(&self, allows: bool) {
        if self.monitor_allows.swap(allows, Ordering::Relaxed) != allows {
            self.update_gate();
        }
    }

    /// Whether the health monitor lets this agent take work.
    pub fn monitor_allows(&self) -> bool {
        self.monitor_allows.load(Ordering::Relaxed)
    }

    /// Whether the work loop may pull now.
    pub fn pulling(&self) -> bool {
        *self.gate.borrow()
    }

    /// A receiver that sees the gate open and close.
    pub fn gate(&self) -> watch::Receiver<bool> {
        self.gate.subscribe()
    }

    fn update_gate(&self) {
        let open = self.executor_health() == ExecutorHealth::Ready
            && self.monitor_allows.load(Ordering::Relaxed);
        let changed = self.gate.send_if_modified(|g| {
            let changed = *g != open;
            *g = open;
            changed
        });
        if changed {
            if open {
                tracing::info!("taking work again");
            } else {
                tracing::warn!(
                    executor = self.executor_health().as_str(),
                    monitor_allows = self.monitor_allows.load(Ordering::Relaxed),
                    "not taking new work"
                );
            }
            self.beat_now.notify_one();
        }
    }
}
