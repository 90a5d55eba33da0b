//! Stopping one running attempt when its task is cancelled.
//!
//! Every attempt runs under its own child of the agent-wide abort token (the
//! one a drain fires), registered here under its task id while it runs. A
//! dispatcher that records a cancel request for a running task tells the
//! agent on `clawfleet.agent.cancel.<agent_id>`; [`listen`] then cancels
//! that attempt's token only, and the runner settles the task `cancelled`.
//!
//! The notice is a core NATS message: if this agent misses it, the attempt
//! runs on, and the runner still finds the request in the record when it
//! settles. The record decides; the notice only makes it prompt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clawfleet_shared::subjects;
use clawfleet_shared::task::CancelNotice;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The cancellation tokens of the attempts running on this agent.
#[derive(Default)]
pub struct Cancels {
    running: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
}

/// An attempt's registration; dropping it forgets the attempt.
pub struct Registration<'a> {
    cancels: &'a Cancels,
    task_id: String,
    key: u64,
    /// Fires when this attempt must stop: its task was cancelled, or the
    /// agent is aborting everything it runs.
    pub token: CancellationToken,
}

impl Cancels {
    /// Registers an attempt of `task_id` with a token that is a child of `parent`.
    pub fn register(&self, task_id: &str, parent: &CancellationToken) -> Registration<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let token = parent.child_token();
        self.running
            .lock()
            .expect("cancels lock")
            .insert(task_id.to_string(), (key, token.clone()));
        Registration {
            cancels: self,
            task_id: task_id.to_string(),
            key,
            token,
        }
    }

    /// Stops the running attempt of `task_id`; false if none runs here.
    pub fn cancel(&self, task_id: &str) -> bool {
        match self.running.lock().expect("cancels lock").get(task_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut running = self.cancels.running.lock().expect("cancels lock");
        // A later attempt of the same task may have replaced this one.
        if running
            .get(&self.task_id)
            .is_some_and(|(k, _)| *k == self.key)
        {
            running.remove(&self.task_id);
        }
    }
}

/// Follows this agent's cancel notices until `stop`.
pub async fn listen(
    client: async_nats::Client,
    agent_id: String,
    cancels: Arc<Cancels>,
    stop: CancellationToken,
) {
    let mut notices = match client.subscribe(subjects::agent_cancel(&agent_id)).await {
        Ok(s) => s,
        Err(e) => {
            // Cancels still take effect, when each attempt settles.
            tracing::error!(error = %e, "cannot receive cancel notices");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            m = notices.next() => match m { Some(m) => m, None => return },
            _ = stop.cancelled() => return,
        };
        match serde_json::from_slice::<CancelNotice>(&msg.payload) {
            Ok(notice) => {
                let found = cancels.cancel(&notice.task_id);
                tracing::info!(task_id = %notice.task_id, attempt = notice.attempt, found, "cancel notice");
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable cancel notice"),
        }
    }
}
