//! The other agents, as their heartbeats describe them: used to decide
//! whether a task that just failed here has somewhere else to go.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use clawfleet_shared::agent::{is_subset, region_allows, tenant_allows, AgentInfo, AgentState};
use clawfleet_shared::{watch, TaskSpec};
use tokio_util::sync::CancellationToken;

/// Live view of the agents bucket.
#[derive(Default)]
pub struct Peers {
    agents: RwLock<HashMap<String, (AgentInfo, Instant)>>,
}

impl Peers {
    /// Whether an agent other than `me`, beating recently and taking work,
    /// could run `spec`.
    pub fn another_can_run(&self, spec: &TaskSpec, me: &str) -> bool {
        let agents = self.agents.read().expect("peers lock");
        agents.values().any(|(a, seen)| {
            let fresh = seen.elapsed()
                < Duration::from_millis(a.heartbeat_interval_ms.max(100)).saturating_mul(3);
            a.agent_id != me
                && fresh
                && a.state == AgentState::Ready
                && a.pulling
                && is_subset(&spec.requires, &a.capabilities)
                && region_allows(a.region.as_deref(), spec.region.as_deref())
                && (a.tenants.is_empty() || tenant_allows(&a.tenants, &spec.tenant, false))
        })
    }

    /// Follows the agents bucket until `stop`.
    pub async fn watch(self: Arc<Self>, agents: kv::Store, stop: CancellationToken) {
        watch::follow(&agents, ">", true, &stop, |entry| {
            let mut map = self.agents.write().expect("peers lock");
            match entry.operation {
                kv::Operation::Put => {
                    if let Ok(info) = serde_json::from_slice::<AgentInfo>(&entry.value) {
                        map.insert(entry.key.clone(), (info, Instant::now()));
                    }
                }
                _ => {
                    map.remove(&entry.key);
                }
            }
            std::future::ready(())
        })
        .await;
    }
}
