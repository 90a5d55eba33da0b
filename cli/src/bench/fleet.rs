//! A dispatcher and agents in this process, on this runtime.
//!
//! In-process services measure the pipeline rather than process start-up,
//! and are stopped deterministically: agents first (they drain), then the
//! dispatcher. On a small machine they compete for the same cores as the
//! load generator and nats-server, as separate processes would.

use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::Context;
use bytes::Bytes;
use clawfleet_dispatcher::validate::TenantConfig;
use clawfleet_shared::api::AgentsReply;
use clawfleet_shared::subjects;
use tokio_util::sync::CancellationToken;

use crate::client::Api;

/// Fleets started by this process, so each fleet's agents have ids of their own.
static FLEETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How long every agent may take to show up in `agents.list`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle agent looks for work this often without a wake-up signal
/// (the default is 250 ms; shorter keeps stragglers from skewing the tail).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How long agents may drain at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The services under test.
pub struct Fleet {
    dispatcher: Option<clawfleet_dispatcher::Running>,
    agents: Vec<clawfleet_agent::Running>,
    stop_dispatcher: CancellationToken,
    stop_agents: CancellationToken,
}

/// One agent of the fleet: its capabilities and region.
#[derive(Clone, Debug, Default)]
pub struct AgentSpec {
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Region.
    pub region: Option<String>,
}

impl Fleet {
    /// Starts a dispatcher with these tenant policies, then one simulator
    /// agent per spec, each running up to `concurrency` tasks at once.
    /// Stops whatever started if a later service fails to.
    pub async fn start(
        url: &str,
        agents: &[AgentSpec],
        concurrency: usize,
        tenants: BTreeMap<String, TenantConfig>,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            dispatcher: None,
            agents: Vec::with_capacity(agents.len()),
            stop_dispatcher: CancellationToken::new(),
            stop_agents: CancellationToken::new(),
        };
        if let Err(e) = fleet
            .start_services(url, agents, concurrency, tenants)
            .await
        {
            fleet.stop().await;
            return Err(e);
        }
        Ok(fleet)
    }

    async fn start_services(
        &mut self,
        url: &str,
        agents: &[AgentSpec],
        concurrency: usize,
        tenants: BTreeMap<String, TenantConfig>,
    ) -> anyhow::Result<()> {
        let config = clawfleet_dispatcher::Config {
            nats_url: url.to_string(),
            connect_timeout: Duration::from_secs(10),
            tenants,
            metrics_addr: None,
            ..Default::default()
        };
        let dispatcher = clawfleet_dispatcher::start(config, self.stop_dispatcher.clone())
            .await
            .context("while starting the dispatcher")?;
        self.dispatcher = Some(dispatcher);
        for (n, spec) in agents.iter().enumerate() {
            let config = clawfleet_agent::Config {
                nats_url: url.to_string(),
                agent_id: format!(
                    "bench-{}-{}-{n}",
                    std::process::id(),
                    FLEETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
                capabilities: spec.capabilities.clone(),
                region: spec.region.clone(),
                max_concurrency: concurrency as u32,
                idle_poll_interval: IDLE_POLL,
                // Matches the failover phase's health monitor.
                heartbeat_interval: Duration::from_millis(500),
                drain_timeout: DRAIN_TIMEOUT,
                connect_timeout: Duration::from_secs(10),
                topology_wait: Duration::from_secs(10),
                ..Default::default()
            };
            let agent = clawfleet_agent::start(config, self.stop_agents.clone())
                .await
                .with_context(|| format!("while starting agent {n}"))?;
            self.agents.push(agent);
        }
        Ok(())
    }

    /// Waits until `agents.list` shows every agent.
    pub async fn wait_registered(&self, url: &str) -> anyhow::Result<()> {
        let api = Api::connect(url).await?;
        let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
        loop {
            let reply: AgentsReply = api
                .request(subjects::API_AGENTS_LIST, Bytes::new())
                .await
                .context("while listing agents")?;
            let missing = self
                .agents
                .iter()
                .filter(|a| !reply.agents.iter().any(|r| r.agent_id == a.agent_id))
                .count();
            if missing == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{missing} agents did not register within {REGISTER_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the agents (they drain), then the dispatcher, and waits for both.
    pub async fn stop(self) {
        self.stop_agents.cancel();
        futures::future::join_all(self.agents.into_iter().map(|a| a.wait())).await;
        self.stop_dispatcher.cancel();
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.wait().await;
        }
    }
}
