//! The health monitor: judges every agent from its heartbeats, its answers to
//! pings and its attempt outcomes, and acts on the judgement.
//!
//! Inputs, all from NATS:
//! - the agents bucket (`clawfleet-agents`): every heartbeat, with the
//!   agent's workload, executor health, restart count and running tasks;
//! - lease announcements (`clawfleet.agent.lease.<id>`): the queue messages
//!   of each pull an agent makes, with their ack subjects, and the ones it
//!   hands back; the monitor confirms each (a reply), and an agent sends
//!   again what is not confirmed;
//! - task events (`clawfleet.events.task.>`): attempt outcomes per agent;
//! - its own pings (`clawfleet.agent.ping.<id>`), answered from the agent's
//!   main runtime while its heartbeats come from a thread of their own, so a
//!   hung agent shows as "beating but silent".
//!
//! Outputs:
//! - the health bucket (`clawfleet-health`): one entry per agent, which the
//!   agent itself watches; a down, recovering or quarantined agent stops
//!   pulling work;
//! - hand-backs: when an agent goes down the monitor sends `-NAK` to the ack
//!   subject of every message it held (running, or fetched a moment before
//!   and not started yet), so JetStream redelivers them at once to
//!   healthy agents instead of after the ack wait (task records fence the
//!   old agent out should it come back);
//! - agent events (`clawfleet.events.agent.<kind>.<id>`): suspect, down,
//!   recovering, healthy, quarantined, released, escalated;
//! - the API: `clawfleet.api.fleet.state`, `clawfleet.api.agent.quarantine`
//!   and `clawfleet.api.agent.release`.
//!
//! The monitor keeps no state of its own beyond NATS: a restarted monitor
//! reloads the health bucket and the registrations, and gives every agent a
//! full heartbeat timeout before judging it silent, so a restart causes no
//! storm of false `down`s.

pub mod config;
pub mod metrics;
mod state;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_nats::jetstream::kv;
use async_nats::Message;
use bytes::Bytes;
use clawfleet_shared::agent::{AgentInfo, Lease, LeaseUpdate, PingReply};
use clawfleet_shared::api::{reply_budget, ListRequest};
use clawfleet_shared::config::ConfigError;
use clawfleet_shared::error::ErrorReply;
use clawfleet_shared::events::{AgentEvent, TaskEvent, TaskEventKind};
use clawfleet_shared::health::{AgentControl, HealthEntry, HealthState, MAX_REASON_BYTES};
use clawfleet_shared::nats::{self, ConnectError};
use clawfleet_shared::strict::{self, echo};
use clawfleet_shared::topology::{self, TopologyError};
use clawfleet_shared::{emit, subjects, watch, ErrorBody, ErrorCode};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
use state::{Action, Fleet};

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS unreachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No dispatcher has created the buckets.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A subscription failed.
    #[error("while subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The stored health entries could not be read.
    #[error("while loading stored health: {0}")]
    Load(String),
    /// The metrics endpoint could not be started.
    #[error(transparent)]
    Metrics(#[from] clawfleet_shared::observe::ServeError),
}

/// A started monitor.
pub struct Running {
    done: tokio::task::JoinHandle<()>,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Running {
    /// Where `/metrics` and `/healthz` are served, if they are.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Waits until the monitor has stopped (after its shutdown token fires).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs the monitor until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), MonitorError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

struct Monitor {
    client: async_nats::Client,
    health: kv::Store,
    fleet: Mutex<Fleet>,
    config: Config,
}

/// Starts the monitor; returns once it has loaded the fleet and serves its API.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, MonitorError> {
    config.validate()?;
    let client = nats::connect(
        &config.nats_url,
        "clawfleet-health-monitor",
        config.connect_timeout,
        &shutdown,
    )
    .await?;
    clawfleet_shared::logship::attach(&client, "health-monitor", None);
    let js = nats::jetstream(client.clone());
    let topo = topology::open(&js, config.topology_wait).await?;

    // Rebuild from NATS: stored judgements, then current registrations.
    let now = Instant::now();
    let mut fleet = Fleet::new(config.clone());
    let stored = load::<HealthEntry>(&topo.health).await?;
    let registered = load::<AgentInfo>(&topo.agents).await?;
    let mut orphans = Vec::new();
    for entry in stored {
        if registered.iter().any(|i| i.agent_id == entry.agent_id) {
            fleet.restore(entry, now);
        } else {
            orphans.push(entry.agent_id);
        }
    }
    for info in registered {
        // No earlier beat to compare with: nothing to act on.
        let _ = fleet.beat(info, now);
    }
    for id in orphans {
        // Left while no monitor ran.
        let _ = topo.health.delete(&id).await;
    }
    let monitor = Arc::new(Monitor {
        client: client.clone(),
        health: topo.health.clone(),
        fleet: Mutex::new(fleet),
        config: config.clone(),
    });

    let leases = client.subscribe(subjects::LEASES_ALL).await?;
    let events = client.subscribe(subjects::TASK_EVENTS_ALL).await?;
    let group = subjects::MONITOR_QUEUE_GROUP.to_string();
    let mut api = Vec::new();
    for subject in subjects::MONITOR_API {
        api.push(client.queue_subscribe(subject, group.clone()).await?);
    }
    // The server has the subscriptions once it answers a later request.
    if let Err(e) = js.query_account().await {
        tracing::warn!(error = %e, "could not confirm the subscriptions");
    }

    let stop = shutdown.clone();
    let tracker = TaskTracker::new();
    tracker.spawn(
        monitor
            .clone()
            .watch_agents(topo.agents.clone(), stop.clone()),
    );
    tracker.spawn(monitor.clone().follow_leases(leases, stop.clone()));
    tracker.spawn(monitor.clone().follow_outcomes(events, stop.clone()));
    tracker.spawn(monitor.clone().judge(stop.clone()));
    tracker.spawn(monitor.clone().ping(stop.clone()));
    tracker.spawn(monitor.clone().confirm(stop.clone()));
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(
            clawfleet_shared::observe::serve(
                addr,
                clawfleet_shared::observe::nats_connected(client.clone()),
                stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    tracker.spawn(
        monitor
            .clone()
            .serve(futures::stream::select_all(api), stop.clone()),
    );
    tracing::info!(
        heartbeat_timeout = %humantime::format_duration(config.heartbeat_timeout),
        ping_interval = %humantime::format_duration(config.ping_interval),
        "health monitor ready"
    );
    let done = tokio::spawn(async move {
        stop.cancelled().await;
        tracker.close();
        tracker.wait().await;
        let _ = client.flush().await;
        tracing::info!("health monitor stopped");
    });
    Ok(Running { done, metrics_addr })
}

async fn load<T: serde::de::DeserializeOwned>(store: &kv::Store) -> Result<Vec<T>, MonitorError> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| MonitorError::Load(e.to_string()))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| MonitorError::Load(e.to_string()))?;
        if let Ok(Some(bytes)) = store.get(&key).await {
            match serde_json::from_slice(&bytes) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable entry"),
            }
        }
    }
    Ok(out)
}

impl Monitor {
    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().expect("fleet lock")
    }

    async fn watch_agents(self: Arc<Self>, agents: kv::Store, stop: CancellationToken) {
        // No history: the registrations present at start-up were loaded already.
        let this = &self;
        watch::follow(&agents, ">", false, &stop, |entry| async move {
            let actions = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<AgentInfo>(&entry.value) {
                    Ok(info) => this.fleet().beat(info, Instant::now()),
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "unreadable registration");
                        return;
                    }
                },
                _ => this.fleet().left(&entry.key),
            };
            this.perform(actions).await;
        })
        .await;
    }

    async fn follow_leases(
        self: Arc<Self>,
        mut leases: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                m = leases.next() => match m { Some(m) => m, None => return },
                _ = stop.cancelled() => return,
            };
            let Some(agent_id) = msg.subject.as_str().rsplit('.').next() else {
                continue;
            };
            let now = Instant::now();
            if let Ok(update) = serde_json::from_slice::<LeaseUpdate>(&msg.payload) {
                let recorded = self.fleet().leases(agent_id, &update, now);
                // Confirmed only once recorded: the agent sends it again otherwise.
                if let (true, Some(reply)) = (recorded, msg.reply) {
                    if let Err(e) = self.client.publish(reply, Bytes::new()).await {
                        tracing::debug!(%agent_id, error = %e, "could not confirm a lease announcement");
                    }
                }
            } else if let Ok(lease) = serde_json::from_slice::<Lease>(&msg.payload) {
                self.fleet().lease(agent_id, &lease, now);
            }
        }
    }

    async fn follow_outcomes(
        self: Arc<Self>,
        mut events: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                m = events.next() => match m { Some(m) => m, None => return },
                _ = stop.cancelled() => return,
            };
            let Ok(event) = serde_json::from_slice::<TaskEvent>(&msg.payload) else {
                continue;
            };
            let (Some(agent), Some(id)) = (event.agent.as_deref(), event.id.as_deref()) else {
                continue;
            };
            // A fatal error is the task's fault and a lost attempt is not
            // the reporting agent's: neither counts against it.
            let blameless = event.error.as_ref().is_some_and(|e| {
                matches!(e.code, ErrorCode::ExecutorRejected | ErrorCode::AgentLost)
            });
            let failed = match event.kind {
                TaskEventKind::Succeeded => false,
                TaskEventKind::Retrying | TaskEventKind::Failed if !blameless => true,
                _ => continue,
            };
            self.fleet().outcome(agent, id, failed, Instant::now());
        }
    }

    async fn judge(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let (actions, counts, quarantined) = {
                let mut fleet = self.fleet();
                let actions = fleet.check(Instant::now());
                let counts = [
                    HealthState::Healthy,
                    HealthState::Suspect,
                    HealthState::Down,
                    HealthState::Recovering,
                ]
                .map(|s| (s, fleet.count(s)));
                (actions, counts, fleet.quarantined())
            };
            self.perform(actions).await;
            for (state, n) in counts {
                ::metrics::gauge!(metrics::AGENTS, "state" => state.as_str()).set(n as f64);
            }
            ::metrics::gauge!(metrics::QUARANTINED).set(quarantined as f64);
        }
    }

    /// Re-writes the verdicts that keep agents out of the pool, so they do
    /// not run out while this monitor runs.
    async fn confirm(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.verdict_refresh) => {}
                _ = stop.cancelled() => return,
            }
            let actions = self.fleet().holding_out();
            self.perform(actions).await;
        }
    }

    async fn ping(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pings = TaskTracker::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let targets = self.fleet().ping_targets();
            for agent_id in targets {
                let this = self.clone();
                pings.spawn(async move {
                    let request = this
                        .client
                        .request(subjects::agent_ping(&agent_id), Bytes::new());
                    let answered = matches!(
                        tokio::time::timeout(this.config.ping_timeout, request).await,
                        Ok(Ok(reply)) if serde_json::from_slice::<PingReply>(&reply.payload).is_ok()
                    );
                    if !answered {
                        tracing::debug!(%agent_id, "ping unanswered");
                    }
                    this.fleet().ping(&agent_id, answered);
                });
            }
        }
        pings.close();
        pings.wait().await;
    }

    async fn perform(&self, actions: Vec<Action>) {
        let mut handed_back = false;
        for action in actions {
            match action {
                Action::Persist(mut entry) => {
                    entry.checked_at = Some(clawfleet_shared::timefmt::now());
                    entry.valid_for_ms = Some(self.config.verdict_refresh.as_millis() as u64 * 3);
                    let bytes = serde_json::to_vec(&entry).expect("health entry encodes");
                    if let Err(e) = self.health.put(&entry.agent_id, bytes.into()).await {
                        tracing::warn!(agent_id = %entry.agent_id, error = %e, "could not store a health entry");
                    }
                }
                Action::Forget(agent_id) => {
                    let _ = self.health.delete(&agent_id).await;
                }
                Action::HandBack { agent_id, leases } => {
                    tracing::warn!(%agent_id, tasks = leases.len(), "handing back the tasks of a down agent");
                    ::metrics::counter!(metrics::HANDED_BACK).increment(leases.len() as u64);
                    for lease in leases {
                        if let Err(e) = self
                            .client
                            .publish(lease.ack, Bytes::from_static(b"-NAK"))
                            .await
                        {
                            tracing::warn!(task_id = %lease.task_id, error = %e, "could not hand a task back; it returns after its ack wait");
                        }
                    }
                    handed_back = true;
                }
                Action::Event {
                    kind,
                    agent_id,
                    reason,
                } => {
                    if kind == clawfleet_shared::events::AgentEventKind::Escalated {
                        ::metrics::counter!(metrics::ESCALATIONS).increment(1);
                    }
                    emit::agent_event(&self.client, &AgentEvent::new(kind, agent_id, Some(reason)))
                        .await;
                }
            }
        }
        if handed_back {
            // Wake idle agents: the tasks are available now.
            let _ = self
                .client
                .publish(subjects::SIGNAL_WORK, Bytes::new())
                .await;
            let _ = self.client.flush().await;
        }
    }

    async fn serve(
        self: Arc<Self>,
        mut requests: futures::stream::SelectAll<async_nats::Subscriber>,
        stop: CancellationToken,
    ) {
        loop {
            let msg = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => return },
                _ = stop.cancelled() => return,
            };
            self.handle(msg).await;
        }
    }

    async fn handle(&self, msg: Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let reply: Result<Bytes, ErrorBody> = match msg.subject.as_str() {
            subjects::API_FLEET_STATE => self.fleet_state(&msg.payload),
            subjects::API_AGENT_QUARANTINE | subjects::API_AGENT_RELEASE => {
                self.control(msg.subject.as_str(), &msg.payload).await
            }
            other => Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("unknown API subject {other}"),
            )),
        };
        let body = reply.unwrap_or_else(|error| {
            serde_json::to_vec(&ErrorReply { error })
                .expect("error reply encodes")
                .into()
        });
        if let Err(e) = self.client.publish(reply_to, body).await {
            tracing::warn!(error = %e, "could not send API reply");
        }
    }

    /// One page of the fleet state, within the reply budget.
    fn fleet_state(&self, body: &[u8]) -> Result<Bytes, ErrorBody> {
        let request: ListRequest = strict::object_or_empty(body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("bad fleet.state request: {e}"),
            )
        })?;
        let mut state = self.fleet().state();
        if let Some(after) = &request.cursor {
            state.agents.retain(|a| a.health.agent_id > *after);
        }
        let budget = reply_budget(self.client.server_info().max_payload);
        let mut used = 256;
        let mut keep = 0;
        for agent in &state.agents {
            used += serde_json::to_vec(agent).map_or(usize::MAX / 2, |v| v.len()) + 1;
            if used > budget {
                break;
            }
            keep += 1;
        }
        if keep < state.agents.len() {
            state.agents.truncate(keep);
            state.next_cursor = state.agents.last().map(|a| a.health.agent_id.clone());
        }
        Ok(serde_json::to_vec(&state)
            .expect("fleet state encodes")
            .into())
    }

    async fn control(&self, subject: &str, body: &[u8]) -> Result<Bytes, ErrorBody> {
        let request: AgentControl = strict::object(body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("expected {{\"agent_id\": ..., \"reason\": ...}}: {e}"),
            )
        })?;
        if request
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REASON_BYTES)
        {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("reason is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        let id = request.agent_id.as_str();
        let actions = if subject == subjects::API_AGENT_QUARANTINE {
            let reason = request
                .reason
                .unwrap_or_else(|| "quarantined by an operator".into());
            self.fleet().quarantine(id, reason, "operator")
        } else {
            self.fleet().release(id)
        };
        let Some(actions) = actions else {
            return Err(ErrorBody::new(
                ErrorCode::NotFound,
                if subject == subjects::API_AGENT_QUARANTINE {
                    format!("no agent {} is known to the health monitor", echo(id))
                } else {
                    format!("agent {} is not quarantined", echo(id))
                },
            ));
        };
        self.perform(actions).await;
        let entry = self
            .fleet()
            .state()
            .agents
            .into_iter()
            .find(|a| a.health.agent_id == id)
            .map(|a| a.health);
        Ok(serde_json::to_vec(&entry).expect("entry encodes").into())
    }
}
