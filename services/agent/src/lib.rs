//! The agent runtime: one per executor (an OpenClaw instance, a command, the simulator).
//!
//! It registers itself (`clawfleet-agents` and `clawfleet-profiles`
//! buckets), watches the queue registry (`clawfleet-queues`) for queues whose
//! capabilities and region it satisfies, and pulls from them
//! (`clawfleet.queue.*`) only while it has a free slot, most urgent first.
//! For each task it updates the record (`clawfleet-tasks`), runs the
//! executor, publishes the result (`clawfleet.results.<tenant>.<id>`) and
//! events (`clawfleet.events.task.*`), and acks, naks with back-off, or
//! terminates the message.
//!
//! It never validates or routes tasks (the dispatcher does) and never takes
//! work from a queue it cannot serve.

pub mod config;
pub mod executor;
mod puller;
mod queues;
mod records;
mod registry;
mod runner;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clawfleet_shared::agent::{AgentInfo, AgentState};
use clawfleet_shared::config::ConfigError;
use clawfleet_shared::events::{AgentEvent, AgentEventKind};
use clawfleet_shared::nats::{self, ConnectError};
use clawfleet_shared::topology::{self, TopologyError};
use clawfleet_shared::{emit, logship, subjects, timefmt};
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ExecutorConfig};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No dispatcher has created the streams.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The registration could not be written.
    #[error("while registering: {0}")]
    Register(#[from] async_nats::jetstream::kv::PutError),
    /// The wake-up subscription failed.
    #[error("while subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A started agent.
pub struct Running {
    /// The agent's id (generated when the config had none).
    pub agent_id: String,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the agent has drained and left (after its shutdown token fires).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs an agent until `shutdown` fires, then drains: stops pulling, lets
/// running tasks finish for up to `drain_timeout`, hands back the rest.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Starts an agent; returns once it is registered and pulling.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, AgentError> {
    let config = config.validate()?;
    let client = nats::connect(
        &config.nats_url,
        &format!("clawfleet-agent-{}", config.agent_id),
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    logship::attach(&client, "agent", Some(&config.agent_id));
    let js = nats::jetstream(client.clone());
    let topo = topology::open(&js, config.topology_wait).await?;
    let executor = executor::build(&config.executor);

    let runner = Arc::new(runner::Runner {
        agent_id: config.agent_id.clone(),
        client: client.clone(),
        js: js.clone(),
        tasks: topo.tasks.clone(),
        executor: executor.clone(),
        retry_backoff: config.retry_backoff,
        retry_backoff_max: config.retry_backoff_max,
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let slots = Arc::new(Semaphore::new(config.max_concurrency as usize));
    let now = timefmt::now();
    let mut registry = registry::Registry {
        agents: topo.agents.clone(),
        profiles: topo.profiles.clone(),
        info: AgentInfo {
            agent_id: config.agent_id.clone(),
            capabilities: config.capabilities.clone(),
            region: config.region.clone(),
            max_concurrency: config.max_concurrency,
            in_flight: 0,
            executor: executor.kind().to_string(),
            state: AgentState::Ready,
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            completed: 0,
            failed: 0,
            started_at: now,
            last_seen: now,
        },
        slots: slots.clone(),
        runner: runner.clone(),
    };
    registry.beat(AgentState::Ready).await?;

    let wake = Arc::new(Notify::new());
    let mut signals = client.subscribe(subjects::SIGNAL_WORK).await?;
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let background = TaskTracker::new();
    {
        let wake = wake.clone();
        let stop = stop.clone();
        background.spawn(async move {
            loop {
                tokio::select! {
                    s = signals.next() => if s.is_none() { return } else { wake.notify_one() },
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let eligible = Arc::new(RwLock::new(queues::Eligible::default()));
    background.spawn(queues::watch(
        js.clone(),
        topo.queues.clone(),
        config.capabilities.clone(),
        config.region.clone(),
        eligible.clone(),
        wake.clone(),
        stop.clone(),
    ));
    let tasks = TaskTracker::new();
    let puller = puller::Puller {
        runner,
        eligible,
        slots,
        wake,
        idle_poll: config.idle_poll_interval,
        stop: stop.clone(),
        abort: abort.clone(),
        tracker: tasks.clone(),
    };
    let pulling = tokio::spawn(puller.run());
    emit::agent_event(
        &client,
        &AgentEvent {
            kind: AgentEventKind::Joined,
            agent_id: config.agent_id.clone(),
            time: timefmt::now(),
        },
    )
    .await;
    tracing::info!(agent_id = %config.agent_id, capabilities = ?config.capabilities, region = ?config.region, "agent ready");

    let agent_id = config.agent_id.clone();
    let done = tokio::spawn(async move {
        let mut beat = tokio::time::interval(config.heartbeat_interval);
        beat.tick().await;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if let Err(e) = registry.beat(AgentState::Ready).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Drain: stop pulling, let running work finish, then hand back the rest.
        stop.cancel();
        let _ = pulling.await;
        let _ = registry.beat(AgentState::Draining).await;
        emit::agent_event(
            &client,
            &AgentEvent {
                kind: AgentEventKind::Draining,
                agent_id: config.agent_id.clone(),
                time: timefmt::now(),
            },
        )
        .await;
        tasks.close();
        if tokio::time::timeout(config.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; handing running tasks back");
            abort.cancel();
            tasks.wait().await;
        }
        background.close();
        background.wait().await;
        registry.leave().await;
        emit::agent_event(
            &client,
            &AgentEvent {
                kind: AgentEventKind::Left,
                agent_id: config.agent_id.clone(),
                time: timefmt::now(),
            },
        )
        .await;
        let _ = client.flush().await;
        tracing::info!(agent_id = %config.agent_id, "agent stopped");
    });
    Ok(Running { agent_id, done })
}

/// How long a test or the local fleet should allow an agent to drain by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
