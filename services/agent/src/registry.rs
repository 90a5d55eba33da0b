//! The heartbeat: the agent's registration, refreshed every
//! `heartbeat_interval` in the agents bucket (whose entries expire when the
//! beats stop) and, for the dispatchers' capability catalogue, in the
//! profiles bucket.
//!
//! Why a thread of its own, with its own runtime and NATS connection: a
//! heartbeat should say "this process is alive", nothing more. The health
//! monitor tells a *dead* agent (beats stop) from a *hung* one (beats go on
//! but pings, answered from the agent's main runtime, do not) only if a
//! wedged main runtime (a blocking call in async code, a deadlock) cannot
//! starve the heartbeats too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use clawfleet_shared::agent::{AgentInfo, AgentState, ProfileEntry};
use clawfleet_shared::{nats, subjects, timefmt};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::leases::Leases;
use crate::vitals::Vitals;

/// What the heartbeat thread needs.
pub struct Heartbeat {
    /// The registration; the live fields are refreshed from `vitals` on each beat.
    pub info: AgentInfo,
    /// Shared agent state.
    pub vitals: Arc<Vitals>,
    /// The queue messages the agent holds.
    pub leases: Arc<Leases>,
    /// The agent's slots (free permits = free capacity).
    pub slots: Arc<Semaphore>,
    /// Time between beats.
    pub interval: Duration,
    /// NATS URL.
    pub nats_url: String,
    /// How long to try connecting.
    pub connect_timeout: Duration,
}

/// The running heartbeat thread.
pub struct Beating {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beating {
    /// Stops the beats and waits for the thread.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Beating {
    /// An agent torn down without draining (its runtime dropped) stops beating too.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Heartbeat {
    /// Starts the thread; returns once the first beat is stored, or its error.
    pub async fn spawn(self) -> Result<Beating, String> {
        let stop = CancellationToken::new();
        let (first_tx, first_rx) = oneshot::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = first_tx.send(Err(format!("heartbeat runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(self.run(first_tx, thread_stop));
            })
            .map_err(|e| format!("heartbeat thread: {e}"))?;
        match first_rx.await {
            Ok(Ok(())) => Ok(Beating {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                stop.cancel();
                Err(e)
            }
            Err(_) => Err("the heartbeat thread ended before its first beat".into()),
        }
    }

    async fn run(mut self, first: oneshot::Sender<Result<(), String>>, stop: CancellationToken) {
        let name = format!("clawfleet-agent-{}-heartbeat", self.info.agent_id);
        let opened = async {
            let client = nats::connect(&self.nats_url, &name, self.connect_timeout, &stop)
                .await
                .map_err(|e| e.to_string())?;
            let js = nats::jetstream(client.clone());
            let agents = js
                .get_key_value(subjects::BUCKET_AGENTS)
                .await
                .map_err(|e| e.to_string())?;
            let profiles = js
                .get_key_value(subjects::BUCKET_PROFILES)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client, agents, profiles))
        };
        let (client, agents, profiles) = match opened.await {
            Ok(x) => x,
            Err(e) => {
                let _ = first.send(Err(e));
                return;
            }
        };
        if let Err(e) = self.beat(&agents, &profiles).await {
            let _ = first.send(Err(format!("while registering: {e}")));
            return;
        }
        let _ = first.send(Ok(()));
        let vitals = self.vitals.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = vitals.beat_now.notified() => {}
                _ = stop.cancelled() => break,
            }
            if let Err(e) = self.beat(&agents, &profiles).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
        let _ = client.flush().await;
    }

    /// Publishes the current registration and profile.
    async fn beat(&mut self, agents: &kv::Store, profiles: &kv::Store) -> Result<(), kv::PutError> {
        let v = &self.vitals;
        let info = &mut self.info;
        info.state = if v.draining.load(Ordering::Relaxed) {
            AgentState::Draining
        } else {
            AgentState::Ready
        };
        info.in_flight = info
            .max_concurrency
            .saturating_sub(self.slots.available_permits() as u32);
        info.completed = v.completed.load(Ordering::Relaxed);
        info.failed = v.failed.load(Ordering::Relaxed);
        info.restarts = v.restarts.load(Ordering::Relaxed);
        info.executor_health = v.executor_health();
        info.pulling = v.pulling() && info.state == AgentState::Ready;
        (info.running, info.held) = self.leases.listed();
        info.last_seen = timefmt::now();
        let labels = [("agent", info.agent_id.clone())];
        ::metrics::gauge!(crate::metrics::SLOTS_BUSY, &labels).set(f64::from(info.in_flight));
        ::metrics::gauge!(crate::metrics::SLOTS, &labels).set(f64::from(info.max_concurrency));
        let profile = ProfileEntry {
            name: None,
            capabilities: info.capabilities.clone(),
            region: info.region.clone(),
            tenants: info.tenants.clone(),
        };
        let key = subjects::profile_key(
            profile.region.as_deref(),
            &profile.capabilities,
            &profile.tenants,
        );
        let bytes = serde_json::to_vec(&profile).expect("profile encodes");
        profiles.put(key, bytes.into()).await?;
        // The registration goes second: whoever sees an agent registered
        // (a script waiting for it, then submitting) finds its profile too.
        let bytes = serde_json::to_vec(&*info).expect("agent info encodes");
        agents.put(&info.agent_id, bytes.into()).await?;
        Ok(())
    }
}

/// Removes the registration (clean exit); the profile stays until it expires.
pub async fn leave(agents: &kv::Store, agent_id: &str) {
    if let Err(e) = agents.delete(agent_id).await {
        tracing::warn!(error = %e, "could not remove the agent registration; it will expire");
    }
}
