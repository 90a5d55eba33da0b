//! The dispatcher: the fleet's front door.
//!
//! It owns the pipeline's JetStream topology (streams `CLAWFLEET_INTAKE`,
//! `CLAWFLEET_QUEUE`, `CLAWFLEET_RESULTS`, `CLAWFLEET_EVENTS`,
//! `CLAWFLEET_DLQ` and the task, agent, profile and queue buckets) and
//! creates it at start-up. It reads submissions from `clawfleet.api.submit`
//! (request/reply) and `clawfleet.intake.<tenant>` (stream), validates them,
//! records each task in the `clawfleet-tasks` bucket and routes it to
//! `clawfleet.queue.<priority>.<region>.<capabilities>`, rejecting what the
//! fleet cannot run into the dead-letter stream with its reason. It also
//! answers the read-side API (`task.get`, `agents.list`, `queues.list`,
//! `dlq.list`).
//!
//! It never runs tasks and never pushes work to an agent: agents pull. All
//! of its state is in JetStream, so any number of dispatchers can run side
//! by side and any of them can be restarted at any time.

pub mod api;
pub mod catalogue;
pub mod config;
pub mod intake;
pub mod router;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use clawfleet_shared::config::ConfigError;
use clawfleet_shared::nats::{self, ConnectError};
use clawfleet_shared::topology::{self, TopologyError};
use clawfleet_shared::{logship, subjects};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams or buckets could not be created.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The intake consumer could not be created.
    #[error("while creating the intake consumer: {0}")]
    Consumer(String),
    /// The API subscriptions could not be made.
    #[error("while subscribing to the API: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A started dispatcher.
pub struct Running {
    tracker: TaskTracker,
    client: async_nats::Client,
}

impl Running {
    /// Waits until the dispatcher has stopped (after its shutdown token fires).
    pub async fn wait(self) {
        self.tracker.wait().await;
        let _ = self.client.flush().await;
    }
}

/// Runs a dispatcher until `shutdown` fires, then stops taking work, finishes
/// (or naks) what it holds, and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DispatcherError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts a dispatcher and returns once it serves the API and consumes intake.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, DispatcherError> {
    config.validate()?;
    let client = nats::connect(
        &config.nats_url,
        "clawfleet-dispatcher",
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    logship::attach(&client, "dispatcher", None);
    let js = nats::jetstream(client.clone());
    let topo = topology::ensure(&js, &config.limits).await?;

    let intake_stream = js
        .get_stream_no_info(subjects::STREAM_INTAKE)
        .await
        .map_err(|e| DispatcherError::Consumer(e.to_string()))?;
    let intake_consumer = intake_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::CONSUMER_DISPATCHER.to_string()),
            description: Some("clawfleet dispatchers (shared)".to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: config.intake_ack_wait,
            max_deliver: -1,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .map_err(|e| DispatcherError::Consumer(e.to_string()))?;

    let catalogue = catalogue::Catalogue::new(topo.profiles.clone(), config.static_profiles());
    catalogue.refresh().await;
    let router = router::Router::new(js.clone(), topo.queues.clone(), config.task_ack_wait);
    let wake = Arc::new(Notify::new());

    let tracker = TaskTracker::new();
    let api = Arc::new(api::Api {
        client: client.clone(),
        js: js.clone(),
        tasks: topo.tasks.clone(),
        agents: topo.agents.clone(),
        queues: topo.queues.clone(),
        catalogue: catalogue.clone(),
        bounds: config.bounds(),
    });
    // Subscribe before reporting ready, so a request right after start is served.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let cancel = shutdown.clone();
        let api = api.clone();
        tracker.spawn(async move {
            let serve = api.serve_with_ready(cancel, ready_tx);
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "API stopped");
            }
        });
    }
    ready_rx
        .await
        .map_err(|_| DispatcherError::Consumer("API failed to start".into()))??;

    let intake = Arc::new(intake::Intake {
        client: client.clone(),
        js: js.clone(),
        tasks: topo.tasks.clone(),
        catalogue: catalogue.clone(),
        router,
        bounds: config.bounds(),
        wake: wake.clone(),
    });
    tracker.spawn(intake.run(intake_consumer, config.intake_concurrency, shutdown.clone()));
    tracker.spawn(refresh_catalogue(catalogue, shutdown.clone()));
    tracker.spawn(wake_agents(client.clone(), wake, shutdown.clone()));
    tracker.close();
    tracing::info!(nats = %config.nats_url, "dispatcher ready");
    Ok(Running { tracker, client })
}

async fn refresh_catalogue(catalogue: catalogue::Catalogue, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(catalogue::REFRESH) => { catalogue.refresh().await; }
            _ = cancel.cancelled() => return,
        }
    }
}

/// Idle agents wait for work instead of polling hard; a coalesced signal on
/// `clawfleet.signal.work` (at most one per [`WAKE_INTERVAL`]) tells them
/// that something was queued.
async fn wake_agents(client: async_nats::Client, wake: Arc<Notify>, cancel: CancellationToken) {
    const WAKE_INTERVAL: Duration = Duration::from_millis(2);
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = client
            .publish(subjects::SIGNAL_WORK, bytes::Bytes::new())
            .await
        {
            tracing::debug!(error = %e, "could not signal agents");
        }
        tokio::time::sleep(WAKE_INTERVAL).await;
    }
}
