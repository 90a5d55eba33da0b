//! A fleet with production defaults in this process: a dispatcher, a
//! health monitor and idle agents with two slots each, for the benchmarks
//! that measure a large fleet rather than the task pipeline.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// The services, running until their stop token fires.
pub struct ProductionFleet {
    dispatcher: clawfleet_dispatcher::Running,
    monitor: clawfleet_health_monitor::Running,
    agents: Vec<clawfleet_agent::Running>,
}

impl ProductionFleet {
    /// Starts the services on `url`, agents named `<prefix>-<pid>-<n>`; if
    /// one fails to start, `stop` fires and what started is waited for.
    pub async fn start(
        url: &str,
        agents: u32,
        prefix: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<ProductionFleet> {
        let dispatcher = clawfleet_dispatcher::start(
            clawfleet_dispatcher::Config {
                nats_url: url.to_string(),
                metrics_addr: None,
                ..Default::default()
            },
            stop.clone(),
        )
        .await
        .context("while starting the dispatcher")?;
        let monitor = clawfleet_health_monitor::start(
            clawfleet_health_monitor::Config {
                nats_url: url.to_string(),
                metrics_addr: None,
                ..Default::default()
            },
            stop.clone(),
        )
        .await
        .context("while starting the health monitor")?;
        let mut fleet = ProductionFleet {
            dispatcher,
            monitor,
            agents: Vec::with_capacity(agents as usize),
        };
        let run = std::process::id();
        for n in 0..agents {
            let started = clawfleet_agent::start(
                clawfleet_agent::Config {
                    nats_url: url.to_string(),
                    agent_id: format!("{prefix}-{run}-{n}"),
                    max_concurrency: 2,
                    connect_timeout: Duration::from_secs(30),
                    ..Default::default()
                },
                stop.clone(),
            )
            .await
            .with_context(|| format!("while starting agent {n}"));
            match started {
                Ok(agent) => fleet.agents.push(agent),
                Err(e) => {
                    stop.cancel();
                    fleet.wait().await;
                    return Err(e);
                }
            }
        }
        Ok(fleet)
    }

    /// Waits until every service has stopped (after the stop token fired).
    pub async fn wait(self) {
        for agent in self.agents {
            agent.wait().await;
        }
        self.monitor.wait().await;
        self.dispatcher.wait().await;
    }
}
