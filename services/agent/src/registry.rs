//! The agent's registration: who it is, what it can do, how busy it is.
//!
//! Refreshed every `heartbeat_interval` in the agents bucket (whose entries
//! expire when the beats stop) and, for the dispatchers' capability
//! catalogue, in the profiles bucket.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::kv;
use clawfleet_shared::agent::{AgentInfo, AgentState, ProfileEntry};
use clawfleet_shared::{subjects, timefmt};
use tokio::sync::Semaphore;

use crate::runner::Runner;

/// Writes the registration.
pub struct Registry {
    pub(crate) agents: kv::Store,
    pub(crate) profiles: kv::Store,
    pub(crate) info: AgentInfo,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) runner: Arc<Runner>,
}

impl Registry {
    /// Publishes the current registration and profile.
    pub async fn beat(&mut self, state: AgentState) -> Result<(), kv::PutError> {
        let info = &mut self.info;
        info.state = state;
        info.in_flight = info
            .max_concurrency
            .saturating_sub(self.slots.available_permits() as u32);
        info.completed = self.runner.completed.load(Ordering::Relaxed);
        info.failed = self.runner.failed.load(Ordering::Relaxed);
        info.last_seen = timefmt::now();
        let bytes = serde_json::to_vec(&*info).expect("agent info encodes");
        self.agents.put(&info.agent_id, bytes.into()).await?;
        let profile = ProfileEntry {
            capabilities: info.capabilities.clone(),
            region: info.region.clone(),
        };
        let key = subjects::profile_key(profile.region.as_deref(), &profile.capabilities);
        let bytes = serde_json::to_vec(&profile).expect("profile encodes");
        self.profiles.put(key, bytes.into()).await?;
        Ok(())
    }

    /// Removes the registration (clean exit); the profile stays until it expires.
    pub async fn leave(&self) {
        if let Err(e) = self.agents.delete(&self.info.agent_id).await {
            tracing::warn!(error = %e, "could not remove the agent registration; it will expire");
        }
    }
}
