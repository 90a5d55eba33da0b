//! Which queues this agent may pull from.
//!
//! The dispatchers register every (region, capability set) they route to
//! in the queue registry bucket; this module watches it and keeps, per
//! priority, the consumers of the queues whose requirements this agent
//! meets. An agent never even looks at a queue it may not serve, which is
//! how capability and residency routing are enforced.

use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use clawfleet_shared::agent::QueueEntry;
use clawfleet_shared::{subjects, watch, Priority};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The queues this agent serves, most urgent priority first.
#[derive(Default)]
pub struct Eligible {
    /// Index = position in [`Priority::ALL`].
    pub by_priority: [Vec<PullConsumer>; 4],
    /// Keys already attached.
    keys: Vec<String>,
}

/// Shared, live view of [`Eligible`].
pub type SharedEligible = Arc<RwLock<Eligible>>;

/// Watches the queue registry until `cancel`, attaching to every queue this
/// agent can serve and poking `changed` when one is added.
pub async fn watch(
    js: jetstream::Context,
    registry: kv::Store,
    capabilities: Vec<String>,
    region: Option<String>,
    eligible: SharedEligible,
    changed: Arc<Notify>,
    cancel: CancellationToken,
) {
    // With history: existing queues first, then every new one.
    watch::follow(&registry, ">", true, &cancel, |entry| {
        let (js, eligible, changed) = (&js, &eligible, &changed);
        let (capabilities, region) = (&capabilities, &region);
        async move {
            if entry.operation != kv::Operation::Put {
                return;
            }
            let Ok(queue) = serde_json::from_slice::<QueueEntry>(&entry.value) else {
                tracing::warn!(key = %entry.key, "ignoring unreadable queue registration");
                return;
            };
            if !queue.servable_by(capabilities, region.as_deref())
                || eligible
                    .read()
                    .expect("eligible lock")
                    .keys
                    .contains(&queue.key)
            {
                return;
            }
            match attach(js, &queue).await {
                Ok(consumers) => {
                    let mut e = eligible.write().expect("eligible lock");
                    for (i, c) in consumers.into_iter().enumerate() {
                        e.by_priority[i].push(c);
                    }
                    e.keys.push(queue.key.clone());
                    drop(e);
                    tracing::info!(queue = %queue.key, requires = ?queue.requires, region = ?queue.region, "serving queue");
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

async fn attach(js: &jetstream::Context, queue: &QueueEntry) -> Result<Vec<PullConsumer>, String> {
    let stream = js
        .get_stream_no_info(subjects::STREAM_QUEUE)
        .await
        .map_err(|e| e.to_string())?;
    let mut consumers = Vec::with_capacity(4);
    for priority in Priority::ALL {
        let name = subjects::queue_consumer(priority, &queue.key);
        let consumer: PullConsumer = stream
            .get_consumer(&name)
            .await
            .map_err(|e| e.to_string())?;
        consumers.push(consumer);
    }
    Ok(consumers)
}
