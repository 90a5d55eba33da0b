//! How many dispatchers are running, so that they can share the tenants'
//! submission rates.
//!
//! Each dispatcher publishes its instance id on
//! `clawfleet.dispatcher.presence` every [`INTERVAL`] and counts the ids it
//! heard within the last three intervals, itself included. A tenant's token
//! bucket in each dispatcher then holds `1/N` of its `submit_rate` and
//! `submit_burst`: submissions spread over the dispatchers (the API's queue
//! group and the shared intake consumer both hand out work evenly), so
//! together they admit about the tenant's rate, not N times it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawfleet_shared::subjects;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How often a dispatcher announces itself.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The number of running dispatchers, as this one last counted them (at least 1).
#[derive(Debug)]
pub struct Dispatchers(AtomicU32);

impl Default for Dispatchers {
    fn default() -> Self {
        Self(AtomicU32::new(1))
    }
}

impl Dispatchers {
    /// Running dispatchers, this one included.
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }
}

/// Announces this dispatcher and counts the others until `cancel` fires.
pub async fn run(
    client: async_nats::Client,
    dispatchers: Arc<Dispatchers>,
    cancel: CancellationToken,
) {
    let me = client.new_inbox();
    let mut heard = match client.subscribe(subjects::DISPATCHER_PRESENCE).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the other dispatchers; each applies the full submission rates");
            return;
        }
    };
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = client.publish(subjects::DISPATCHER_PRESENCE, me.clone().into()).await {
                    tracing::debug!(error = %e, "could not announce this dispatcher");
                }
            }
            Some(msg) = heard.next() => {
                if let Ok(id) = std::str::from_utf8(&msg.payload) {
                    if id != me {
                        seen.insert(id.to_string(), Instant::now());
                    }
                }
            }
            _ = cancel.cancelled() => return,
        }
        seen.retain(|_, at| at.elapsed() < INTERVAL * 3);
        let count = 1 + seen.len() as u32;
        let before = dispatchers.0.swap(count, Ordering::Relaxed);
        if before != count {
            tracing::info!(
                dispatchers = count,
                "dispatchers sharing the submission rates"
            );
        }
    }
}
