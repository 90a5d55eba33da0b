//! Queues: one per (priority, region, required-capability set, tenant).
//!
//! The first time a dispatcher routes to a (tenant, region, capability set)
//! it creates that set's four durable consumers (one per priority) and
//! registers it in the queue registry bucket with the tenant's policy
//! (weight, dedicated-only, strategy), where agents discover the queues they
//! can serve. Each queue subject has exactly one consumer, so a task is
//! delivered to one agent at a time no matter how many agents share the
//! queue. A tenant's `quota.max_running` is that consumer's
//! `max_ack_pending`, so JetStream itself holds back the excess of one
//! queue, and it is in the queue's registry entry, so agents keep the sum
//! over all of the tenant's queues within it (the agent's `tenant_slots`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use clawfleet_shared::agent::{QueueEntry, Strategy};
use clawfleet_shared::{subjects, Priority};
use tokio::sync::OnceCell;

use crate::validate::TenantConfig;

/// Errors while creating a queue.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A consumer could not be created.
    #[error("while creating queue consumer {name}: {source}")]
    Consumer {
        /// Consumer name.
        name: String,
        /// Cause.
        source: jetstream::stream::ConsumerError,
    },
    /// The queue could not be registered.
    #[error("while registering queue {key}: {source}")]
    Register {
        /// Queue key.
        key: String,
        /// Cause.
        source: kv::PutError,
    },
    /// The queue stream is missing.
    #[error("while opening the queue stream: {0}")]
    Stream(#[from] jetstream::context::GetStreamError),
}

/// Creates queues on first use and remembers which exist.
#[derive(Clone)]
pub struct Router {
    js: jetstream::Context,
    registry: kv::Store,
    ack_wait: Duration,
    tenants: Arc<std::collections::BTreeMap<String, TenantConfig>>,
    strategy: Strategy,
    /// One cell per queue key: concurrent first uses of a queue wait for a
    /// single creation instead of each creating its consumers again.
    known: Arc<Mutex<HashMap<String, Arc<OnceCell<()>>>>>,
}

impl Router {
    /// A router creating consumers with the given ack wait, registering
    /// queues with the tenants' policies (`strategy` for tenants without one).
    pub fn new(
        js: jetstream::Context,
        registry: kv::Store,
        ack_wait: Duration,
        tenants: Arc<std::collections::BTreeMap<String, TenantConfig>>,
        strategy: Strategy,
    ) -> Self {
        Self {
            js,
            registry,
            ack_wait,
            tenants,
            strategy,
            known: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Makes sure the queues for (tenant, region, requires) exist; cheap
    /// after the first call.
    pub async fn ensure(
        &self,
        tenant: &str,
        region: Option<&str>,
        requires: &[String],
    ) -> Result<(), RouterError> {
        let key = subjects::queue_key(tenant, region, requires);
        let cell = self
            .known
            .lock()
            .expect("router lock")
            .entry(key.clone())
            .or_default()
            .clone();
        // A failed creation leaves the cell empty: the next task tries again.
        cell.get_or_try_init(|| self.create(&key, tenant, region, requires))
            .await
            .map(|_| ())
    }

    async fn create(
        &self,
        key: &str,
        tenant: &str,
        region: Option<&str>,
        requires: &[String],
    ) -> Result<(), RouterError> {
        let policy = self.tenants.get(tenant).cloned().unwrap_or_default();
        let stream = self.js.get_stream_no_info(subjects::STREAM_QUEUE).await?;
        for priority in Priority::ALL {
            let name = subjects::queue_consumer(priority, key);
            let config = consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "clawfleet queue {}",
                    subjects::queue(priority, region, requires, tenant)
                )),
                filter_subject: subjects::queue(priority, region, requires, tenant),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                max_deliver: -1,
                // Agents bound their own concurrency; without a tenant
                // quota this only caps the damage of a bug.
                max_ack_pending: policy.quota.max_running.map_or(100_000, i64::from),
                max_waiting: 4096,
                ..Default::default()
            };
            stream
                .create_consumer(config)
                .await
                .map_err(|source| RouterError::Consumer { name, source })?;
        }
        let entry = QueueEntry {
            key: key.to_string(),
            tenant: tenant.to_string(),
            requires: requires.to_vec(),
            region: region.map(str::to_string),
            weight: policy.weight,
            restricted: policy.dedicated_only,
            strategy: policy.strategy.unwrap_or(self.strategy),
            max_running: policy.quota.max_running,
        };
        let bytes = serde_json::to_vec(&entry).expect("queue entry encodes");
        self.registry
            .put(key, bytes.into())
            .await
            .map_err(|source| RouterError::Register {
                key: key.to_string(),
                source,
            })?;
        tracing::info!(
            queue = %key,
            tenant,
            region = region.unwrap_or(subjects::ANY),
            requires = %subjects::capkey(requires),
            "queue created"
        );
        Ok(())
    }
}
