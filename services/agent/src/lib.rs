//! The agent runtime: one per executor (an OpenClaw instance, a command, the simulator).
//!
//! It registers itself (`clawfleet-agents` and `clawfleet-profiles`
//! buckets), watches the queue registry (`clawfleet-queues`) for queues whose
//! capabilities and region it satisfies, and pulls from them
//! (`clawfleet.queue.*`) only while it has a free slot, most urgent first.
//! For each task it updates the record (`clawfleet-tasks`), runs the
//! executor, publishes the result (`clawfleet.results.<tenant>.<id>`) and
//! events (`clawfleet.events.task.*`), and acks, naks with back-off, or
//! terminates the message. It hands a task back untouched until its
//! `not_before`, and stops an attempt whose task is cancelled when told on
//! `clawfleet.agent.cancel.<agent_id>`.
//!
//! It never validates or routes tasks (the dispatcher does) and never takes
//! work from a queue it cannot serve.

mod cancels;
pub mod config;
pub mod executor;
mod leases;
pub mod metrics;
mod peers;
mod preempt;
mod puller;
mod queues;
mod records;
mod registry;
mod runner;
mod supervisor;
mod tenant_slots;
mod vitals;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use clawfleet_shared::agent::{AgentInfo, AgentState, ExecutorHealth, ProfileEntry};
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
    /// The heartbeat (registration) could not start.
    #[error("while registering: {0}")]
    Register(String),
    /// The executor could not start.
    #[error("while starting the executor: {0}")]
    Executor(#[from] executor::ExecError),
    /// Shutdown was requested before the executor was up.
    #[error("shutdown requested while starting the executor")]
    Cancelled,
    /// The wake-up subscription failed.
    #[error("while subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A started agent.
pub struct Running {
    /// The agent's id (generated when the config had none).
    pub agent_id: String,
    /// Where `/metrics` and `/healthz` are served, if they are.
    pub metrics_addr: Option<std::net::SocketAddr>,
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

/// Starts an agent; returns once its executor is up and it is registered and pulling.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, AgentError> {
    let mut config = config.validate()?;
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
    join_profiles(&mut config, &topo.profiles).await?;
    let executor = executor::build(&config.executor, &config.agent_id)?;
    // Starting can take minutes (a supervised OpenClaw gateway): a shutdown
    // meanwhile stops it, and so does a failed start.
    let started = tokio::select! {
        r = executor.start() => r.map_err(AgentError::Executor),
        _ = shutdown.cancelled() => Err(AgentError::Cancelled),
    };
    if let Err(e) = started {
        executor.stop().await;
        return Err(e);
    }
    let vitals = Arc::new(vitals::Vitals::default());
    if supervisor::probe(executor.as_ref(), &vitals).await != ExecutorHealth::Ready {
        tracing::warn!("the executor is not ready yet; the agent takes work once it is");
    }
    let peers = Arc::new(peers::Peers::new(topo.agents.clone()));
    let cancels = Arc::new(cancels::Cancels::default());
    let started_at = timefmt::now();
    let leases = Arc::new(leases::Leases::new(
        client.clone(),
        &config.agent_id,
        std::process::id(),
        started_at,
    ));
    // Before the first pull: the monitors' confirmations of what it holds.
    let lease_replies = client.subscribe(leases.replies()).await?;

    let wake = Arc::new(Notify::new());
    let eligible = Arc::new(RwLock::new(queues::Eligible::default()));
    let runner = Arc::new(runner::Runner {
        agent_id: config.agent_id.clone(),
        client: client.clone(),
        js: js.clone(),
        tasks: topo.tasks.clone(),
        executor: executor.clone(),
        vitals: vitals.clone(),
        leases: leases.clone(),
        peers: peers.clone(),
        avoid_for: config.avoid_for,
        avoiding: Mutex::new(HashMap::new()),
        hold_off: runner::AVOID_DELAY + config.idle_poll_interval.saturating_mul(2),
        held: Mutex::new(HashMap::new()),
        cancels: cancels.clone(),
        tenant_slots: tenant_slots::TenantSlots::new(
            &config.agent_id,
            topo.running.clone(),
            topo.agents.clone(),
            topo.health.clone(),
        ),
        wake: wake.clone(),
        eligible: eligible.clone(),
    });
    // Before taking any task: entries a previous process of this agent left
    // would count against their tenants' quotas until someone pruned them.
    if let Err(e) = runner.tenant_slots.forget_previous().await {
        tracing::warn!(error = %e, "could not clear this agent's old running-set entries");
    }
    let slots = Arc::new(Semaphore::new(config.max_concurrency as usize));
    let now = started_at;
    let beating = registry::Heartbeat {
        info: AgentInfo {
            agent_id: config.agent_id.clone(),
            capabilities: config.capabilities.clone(),
            region: config.region.clone(),
            tenants: config.tenants.clone(),
            profiles: config.profiles.clone(),
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
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
            executor_health: vitals.executor_health(),
            restarts: 0,
            pulling: true,
            config_hash: config.hash(),
            running: Vec::new(),
            held: Vec::new(),
        },
        vitals: vitals.clone(),
        leases: leases.clone(),
        slots: slots.clone(),
        interval: config.heartbeat_interval,
        nats_url: config.nats_url.clone(),
        connect_timeout: config.connect_timeout,
    }
    .spawn()
    .await
    .map_err(AgentError::Register)?;

    let mut signals = client.subscribe(subjects::SIGNAL_WORK).await?;
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let background = TaskTracker::new();
    {
        let wake = wake.clone();
        let stop = stop.clone();
        let eligible = eligible.clone();
        background.spawn(async move {
            loop {
                tokio::select! {
                    s = signals.next() => match s {
                        Some(signal) => {
                            eligible.read().expect("eligible lock").signalled(&signal.payload);
                            wake.notify_one();
                        }
                        None => return,
                    },
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let (round_robin_tx, round_robin_rx) = tokio::sync::mpsc::unbounded_channel();
    background.spawn(queues::watch(
        js.clone(),
        topo.queues.clone(),
        queues::Identity {
            capabilities: config.capabilities.clone(),
            region: config.region.clone(),
            tenants: config.tenants.clone(),
        },
        eligible.clone(),
        wake.clone(),
        round_robin_tx,
        stop.clone(),
    ));
    // The supervisor and the ping answers go on while draining, until the agent leaves.
    let leaving = CancellationToken::new();
    background.spawn(supervisor::executor(
        executor.clone(),
        vitals.clone(),
        supervisor::Supervision {
            interval: config.health_check_interval,
            backoff: config.restart_backoff,
            backoff_max: config.restart_backoff_max,
        },
        client.clone(),
        config.agent_id.clone(),
        leaving.clone(),
    ));
    background.spawn(supervisor::monitor_verdict(
        client.clone(),
        topo.health.clone(),
        config.agent_id.clone(),
        vitals.clone(),
        leaving.clone(),
    ));
    // Cancel notices are followed while draining too: a cancelled task must
    // not hold up the drain.
    background.spawn(cancels::listen(
        client.clone(),
        config.agent_id.clone(),
        cancels,
        leaving.clone(),
    ));
    // Held messages are announced while draining too, until the agent leaves.
    background.spawn(leases.clone().follow(lease_replies, leaving.clone()));
    background.spawn(supervisor::answer_pings(
        client.clone(),
        config.agent_id.clone(),
        vitals.clone(),
        slots.clone(),
        config.max_concurrency,
        leaving.clone(),
    ));
    let tasks = TaskTracker::new();
    let slot_freed = Arc::new(Notify::new());
    background.spawn(preempt::watch(preempt::Preempter {
        settings: config.preemption.clone(),
        agent_id: config.agent_id.clone(),
        vitals: vitals.clone(),
        eligible: eligible.clone(),
        slots: slots.clone(),
        claims: topo.queues.clone(),
        stop: stop.clone(),
    }));
    let puller = puller::Puller {
        runner,
        vitals: vitals.clone(),
        eligible,
        slots,
        max_concurrency: config.max_concurrency,
        wake,
        idle_poll: config.idle_poll_interval,
        idle_poll_max: config.idle_poll_max,
        round_robin: round_robin_rx,
        stop: stop.clone(),
        abort: abort.clone(),
        tracker: tasks.clone(),
        slot_freed,
    };
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(
            clawfleet_shared::observe::serve(
                addr,
                clawfleet_shared::observe::nats_connected(client.clone()),
                leaving.clone(),
            )
            .await
            .map_err(|e| AgentError::Register(e.to_string()))?,
        ),
        None => None,
    };
    let pulling = tokio::spawn(puller.run());
    emit::agent_event(
        &client,
        &AgentEvent::new(AgentEventKind::Joined, &config.agent_id, None),
    )
    .await;
    tracing::info!(agent_id = %config.agent_id, capabilities = %config.capabilities.join(","), region = config.region.as_deref().unwrap_or(subjects::ANY), tenants = %config.tenants.join(","), "agent ready");

    let agent_id = config.agent_id.clone();
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        // Drain: stop pulling, let running work finish, then hand back the rest.
        stop.cancel();
        let _ = pulling.await;
        vitals
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        vitals.beat_now.notify_one();
        emit::agent_event(
            &client,
            &AgentEvent::new(AgentEventKind::Draining, &config.agent_id, None),
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
        leaving.cancel();
        background.close();
        background.wait().await;
        executor.stop().await;
        beating.stop().await;
        registry::leave(&topo.agents, &config.agent_id).await;
        emit::agent_event(
            &client,
            &AgentEvent::new(AgentEventKind::Left, &config.agent_id, None),
        )
        .await;
        let _ = client.flush().await;
        tracing::info!(agent_id = %config.agent_id, "agent stopped");
    });
    Ok(Running {
        agent_id,
        metrics_addr,
        done,
    })
}

/// Adds the capabilities (and, unless the agent sets its own, the region and
/// tenants) of the named profiles the agent joins, as the dispatcher
/// published them from its config.
async fn join_profiles(
    config: &mut Config,
    profiles: &async_nats::jetstream::kv::Store,
) -> Result<(), AgentError> {
    for name in config.profiles.clone() {
        let entry = profiles
            .get(subjects::named_profile_key(&name))
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<ProfileEntry>(&b).ok())
            .ok_or_else(|| {
                AgentError::Config(ConfigError::invalid(
                    "profiles",
                    format!("no dispatcher declares a profile named {name:?}"),
                ))
            })?;
        config.capabilities.extend(entry.capabilities);
        if config.region.is_none() {
            config.region = entry.region;
        }
        if config.tenants.is_empty() {
            config.tenants = entry.tenants;
        }
    }
    config.capabilities.sort();
    config.capabilities.dedup();
    Ok(())
}

/// How long a test or the local fleet should allow an agent to drain by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
