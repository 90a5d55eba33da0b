//! End-to-end tests: a real nats-server, a real dispatcher and real agents
//! in-process, driven through the public subjects only.

mod alerts;
mod analytics;
mod console;
mod control;
mod corpus;
mod failures;
mod health;
mod input;
mod logs;
mod metrics;
mod openclaw;
mod pipeline;
mod policy;
mod routing;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clawfleet_shared::api::{DlqEntry, DlqListReply, DlqListRequest, DlqReason};
use clawfleet_shared::events::TaskEvent;
use clawfleet_shared::subjects;
use clawfleet_testkit::client::request;
use clawfleet_testkit::{
    agent_config, dispatcher_config, start_agent, start_dispatcher, NatsServer, Service,
};
use futures::StreamExt;

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
        Self::with(|_| {}).await
    }

    /// A server and one dispatcher configured by `configure`, no agents yet.
    pub async fn with(configure: impl FnOnce(&mut clawfleet_dispatcher::Config)) -> Self {
        Self::on(NatsServer::start(), configure).await
    }

    /// One dispatcher configured by `configure` on this server, no agents yet.
    pub async fn on(
        server: NatsServer,
        configure: impl FnOnce(&mut clawfleet_dispatcher::Config),
    ) -> Self {
        clawfleet_testkit::init_tracing();
        let mut config = dispatcher_config(server.url());
        configure(&mut config);
        let dispatcher = start_dispatcher(config).await;
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

/// How many `kind` task events each task got, from the events stream.
pub async fn events_per_task(fleet: &Fleet, kind: &str) -> HashMap<String, usize> {
    events_by_task(fleet)
        .await
        .into_iter()
        .map(|(id, events)| {
            (
                id,
                events.iter().filter(|e| e.kind.as_str() == kind).count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Every task event in the events stream, per task, in stream order.
pub async fn events_by_task(fleet: &Fleet) -> HashMap<String, Vec<TaskEvent>> {
    let stream = fleet.js.get_stream(subjects::STREAM_EVENTS).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subjects::task_event("*", "*"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut by_task: HashMap<String, Vec<TaskEvent>> = HashMap::new();
    if consumer.cached_info().num_pending == 0 {
        return by_task;
    }
    let mut messages = consumer.messages().await.unwrap();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
        let msg = msg.unwrap();
        let event: TaskEvent = serde_json::from_slice(&msg.payload).unwrap();
        if let Some(id) = event.id.clone() {
            by_task.entry(id).or_default().push(event);
        }
        if msg.info().unwrap().pending == 0 {
            break;
        }
    }
    by_task
}

/// Messages in `stream` on `subject` (wildcards allowed).
pub async fn stream_subject_count(fleet: &Fleet, stream: &str, subject: &str) -> u64 {
    let s = fleet.js.get_stream(stream).await.expect("stream exists");
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    c.cached_info().num_pending
}

/// The dead letters of one reason, through `clawfleet.api.dlq.list`.
pub async fn dead_letters(fleet: &Fleet, reason: DlqReason) -> Vec<DlqEntry> {
    let req = DlqListRequest {
        reason: Some(reason),
        ..Default::default()
    };
    let reply: DlqListReply = request(
        &fleet.client,
        subjects::API_DLQ_LIST,
        serde_json::to_vec(&req).unwrap(),
    )
    .await
    .unwrap();
    reply.entries
}
