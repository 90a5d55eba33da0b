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
//! `dlq.list`, `dlq.get`) and the control API: `task.cancel` (it settles a
//! task that has not started and tells the agent running one to stop it, on
//! `clawfleet.agent.cancel.<agent_id>`) and `dlq.replay` (it submits dead
//! letters again as new tasks).
//!
//! It never runs tasks and never pushes work to an agent: agents pull. All
//! of its state is in JetStream, so any number of dispatchers can run side
//! by side and any of them can be restarted at any time.

pub mod admission;
pub mod api;
mod cancel;
pub mod catalogue;
pub mod config;
mod dead_letters;
pub mod intake;
pub mod metrics;
mod peers;
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
    /// The metrics endpoint could not be started.
    #[error(transparent)]
    Metrics(#[from] clawfleet_shared::observe::ServeError),
}

/// A started dispatcher.
pub struct Running {
    tracker: TaskTracker,
    client: async_nats::Client,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Running {
    /// Where `/metrics` and `/healthz` are served, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

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
    let bounds = config.bounds();
    let router = router::Router::new(
        js.clone(),
        topo.queues.clone(),
        config.task_ack_wait,
        bounds.tenants.clone(),
        config.routing.strategy,
    );
    let dispatchers = Arc::new(peers::Dispatchers::default());
    let admission = Arc::new(admission::Admission::new(
        catalogue.clone(),
        js.clone(),
        bounds.tenants.clone(),
        dispatchers.clone(),
        topo.budgets.clone(),
    ));
    let budgets = admission.clone();
    publish_named_profiles(&topo.profiles, &config).await;
    let wake = Arc::new(Wake::default());

    let tracker = TaskTracker::new();
    let api = Arc::new(api::Api {
        client: client.clone(),
        js: js.clone(),
        tasks: topo.tasks.clone(),
        agents: topo.agents.clone(),
        queues: topo.queues.clone(),
        running: topo.running.clone(),
        admission: admission.clone(),
        bounds: bounds.clone(),
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
        admission,
        router,
        bounds,
        wake: wake.clone(),
    });
    tracker.spawn(intake.run(intake_consumer, config.intake_concurrency, shutdown.clone()));
    tracker.spawn(refresh_catalogue(catalogue, shutdown.clone()));
    tracker.spawn(budgets.follow_budgets(shutdown.clone()));
    tracker.spawn(peers::run(client.clone(), dispatchers, shutdown.clone()));
    tracker.spawn(wake_agents(client.clone(), wake, shutdown.clone()));
    let metrics_addr = match config.metrics_addr {
        Some(addr) => {
            let bound = clawfleet_shared::observe::serve(
                addr,
                clawfleet_shared::observe::nats_connected(client.clone()),
                shutdown.clone(),
            )
            .await?;
            tracker.spawn(report_queues(js.clone(), shutdown.clone()));
            Some(bound)
        }
        None => None,
    };
    tracker.close();
    tracing::info!(nats = %config.nats_url, "dispatcher ready");
    Ok(Running {
        tracker,
        client,
        metrics_addr,
    })
}

/// How often the queue gauges are refreshed.
const QUEUE_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps the queue-depth gauges current (one read of the queue stream's
/// consumers per interval).
async fn report_queues(js: async_nats::jetstream::Context, cancel: CancellationToken) {
    loop {
        for q in admission::queue_consumers(&js).await.unwrap_or_default() {
            let labels = [("tenant", q.tenant), ("priority", q.priority)];
            ::metrics::gauge!(metrics::QUEUE_WAITING, &labels).set(q.waiting as f64);
            ::metrics::gauge!(metrics::QUEUE_RUNNING, &labels).set(q.running as f64);
        }
        if let Ok(intake) = js.get_stream_no_info(subjects::STREAM_INTAKE).await {
            if let Ok(info) = intake.consumer_info(subjects::CONSUMER_DISPATCHER).await {
                ::metrics::gauge!(metrics::INTAKE_PENDING).set(info.num_pending as f64);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_REPORT_INTERVAL) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Named profiles from config go into the profiles bucket, where agents that
/// join a profile by name read its capabilities.
async fn publish_named_profiles(profiles: &async_nats::jetstream::kv::Store, config: &Config) {
    for p in config.static_profiles() {
        let Some(name) = p.name.clone() else { continue };
        let bytes = serde_json::to_vec(&p).expect("profile encodes");
        if let Err(e) = profiles
            .put(subjects::named_profile_key(&name), bytes.into())
            .await
        {
            tracing::warn!(profile = %name, error = %e, "could not publish a named profile");
        }
    }
}

async fn refresh_catalogue(catalogue: catalogue::Catalogue, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(catalogue::REFRESH) => { catalogue.refresh().await; }
            _ = cancel.cancelled() => return,
        }
    }
}

/// The queues that got work since the last wake-up signal.
#[derive(Default)]
pub(crate) struct Wake {
    subjects: std::sync::Mutex<(std::collections::BTreeSet<String>, bool)>,
    notify: Notify,
}

/// A signal names at most this many queues; beyond, it names none ("all").
const WAKE_MAX_SUBJECTS: usize = 64;

impl Wake {
    /// Notes that `subject` got a task.
    pub(crate) fn queued(&self, subject: &str) {
        let mut s = self.subjects.lock().expect("wake lock");
        if s.0.len() < WAKE_MAX_SUBJECTS {
            s.0.insert(subject.to_string());
        } else {
            s.1 = true;
        }
        drop(s);
        self.notify.notify_one();
    }

    fn take(&self) -> String {
        let mut s = self.subjects.lock().expect("wake lock");
        let (subjects, overflow) = std::mem::take(&mut *s);
        if overflow {
            String::new()
        } else {
            subjects.into_iter().collect::<Vec<_>>().join("\n")
        }
    }
}

/// Idle agents wait for work instead of polling hard; a coalesced signal on
/// `clawfleet.signal.work` (at most one per [`WAKE_INTERVAL`]) tells them
/// which queues got work (one subject per line; an empty body means "look
/// everywhere"), so a busy agent serving many queues asks only those.
async fn wake_agents(client: async_nats::Client, wake: Arc<Wake>, cancel: CancellationToken) {
    const WAKE_INTERVAL: Duration = Duration::from_millis(2);
    loop {
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = cancel.cancelled() => return,
        }
        let body = wake.take();
        if let Err(e) = client.publish(subjects::SIGNAL_WORK, body.into()).await {
            tracing::debug!(error = %e, "could not signal agents");
        }
        tokio::time::sleep(WAKE_INTERVAL).await;
    }
}
