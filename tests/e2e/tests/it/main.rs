//! End-to-end tests: a real nats-server, a real dispatcher and real agents
//! in-process, driven through the public subjects only.

mod failures;
mod input;
mod logs;
mod pipeline;
mod routing;

use std::time::Duration;

use async_nats::jetstream;
use clawfleet_testkit::{
    agent_config, dispatcher_config, start_agent, start_dispatcher, NatsServer, Service,
};

/// Generous bound for a handful of tasks to finish on a loaded 2-core machine.
pub const FINISH: Duration = Duration::from_secs(20);

/// A server, a dispatcher and a client.
pub struct Fleet {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub dispatcher: Option<Service>,
    pub agents: Vec<Service>,
}

impl Fleet {
    /// A server and one dispatcher, no agents yet.
    pub async fn new() -> Self {
        clawfleet_testkit::init_tracing();
        let server = NatsServer::start();
        let dispatcher = start_dispatcher(dispatcher_config(server.url())).await;
        let client = server.client().await;
        let js = jetstream::new(client.clone());
        Fleet {
            server,
            client,
            js,
            dispatcher: Some(dispatcher),
            agents: Vec::new(),
        }
    }

    /// Starts an agent with these capabilities and optional region.
    pub async fn agent(&mut self, id: &str, caps: &[&str], region: Option<&str>) {
        let mut config = agent_config(self.server.url(), id, caps);
        config.region = region.map(str::to_string);
        self.agents.push(start_agent(config).await);
    }

    /// Starts an agent from a full config.
    pub async fn agent_with(&mut self, config: clawfleet_agent::Config) {
        self.agents.push(start_agent(config).await);
    }

    /// Removes and returns the agent with this id.
    pub fn take_agent(&mut self, id: &str) -> Service {
        let i = self
            .agents
            .iter()
            .position(|a| a.id == id)
            .expect("agent exists");
        self.agents.remove(i)
    }
}
