//! The monitor's judgement of every agent: a pure state machine fed with
//! observations (beats, leases, attempt outcomes, ping answers) and asked,
//! every `check_interval`, what to do. No I/O here, so every rule has a unit
//! test with a clock the test controls.
//!
//! States (see [`HealthState`]):
//!
//! ```text
//!            missed beat / ping / executor not ready
//!  healthy ───────────────────────────────────────▶ suspect ──┐
//!     ▲  ◀──────────────────── all good again ────────────┘   │
//!     │                                                       │ no beat for heartbeat_timeout,
//!     │ recovery_pings answered,                              │ or ping_failures pings unanswered
//!     │ executor ready                                        ▼
//!  recovering ◀──── beating and answering again ────────── down ──▶ hand back running tasks
//! ```
//!
//! Quarantine is orthogonal: a quarantined agent keeps its state but takes no
//! work until an operator releases it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use clawfleet_shared::agent::{AgentInfo, ExecutorHealth, Lease, LeaseUpdate};
use clawfleet_shared::events::AgentEventKind;
use clawfleet_shared::health::{
    AgentStatus, FailureStats, FleetState, HealthEntry, HealthState, Quarantine,
};
use clawfleet_shared::timefmt;

use crate::config::Config;

/// What the monitor must do after a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Store this entry in the health bucket.
    Persist(HealthEntry),
    /// Forget this agent's entry (it left cleanly).
    Forget(String),
    /// Hand these tasks back to the queue (`-NAK` their ack subjects).
    HandBack {
        /// Whose tasks.
        agent_id: String,
        /// The leases.
        leases: Vec<Lease>,
    },
    /// Publish an agent event.
    Event {
        /// Kind.
        kind: AgentEventKind,
        /// Agent.
        agent_id: String,
        /// Why.
        reason: String,
    },
}

/// How long a lease announced before a heartbeat but missing from it is
/// kept anyway (the beat may have been taken just before the announcement).
const LEASE_GRACE: Duration = Duration::from_secs(2);
/// How long the ack subject of a message an agent released, or the monitor
/// handed back, is not taken from that agent's heartbeats again: a beat
/// taken before the release may arrive after it, and a hung agent lists
/// what was handed back until it lets go. An ack subject names one
/// delivery, so ignoring it later is always right.
const GONE_FOR: Duration = Duration::from_secs(10);
/// Such ack subjects kept per agent at most (the oldest go first).
const MAX_GONE: usize = 8192;

struct Tracked {
    info: Option<AgentInfo>,
    /// When the monitor last received a beat (its own clock: agents' clocks may differ).
    last_beat: Instant,
    entry: HealthEntry,
    /// When the current state began (for `down_for`).
    state_since: Instant,
    /// The queue messages it holds: ack subject → (task id, since when the
    /// monitor knows).
    leases: HashMap<String, (String, Instant)>,
    /// Ack subjects it released or that were handed back, since when.
    gone: HashMap<String, Instant>,
    ping_misses: u32,
    ping_streak: u32,
    /// Attempt outcomes in the window: (when, failed).
    outcomes: VecDeque<(Instant, bool)>,
    /// Restart counter samples in the window: (when, restarts so far).
    restarts: VecDeque<(Instant, u32)>,
}

impl Tracked {
    fn new(agent_id: &str, now: Instant) -> Self {
        Self {
            info: None,
            last_beat: now,
            entry: HealthEntry {
                agent_id: agent_id.to_string(),
                state: HealthState::Healthy,
                reason: "joined".into(),
                since: timefmt::now(),
                quarantine: None,
                escalated: false,
                checked_at: None,
                valid_for_ms: None,
            },
            state_since: now,
            leases: HashMap::new(),
            gone: HashMap::new(),
            ping_misses: 0,
            ping_streak: 0,
            outcomes: VecDeque::new(),
            restarts: VecDeque::new(),
        }
    }

    /// Everything it is known to hold, now handed back: never taken from it again.
    fn hand_back(&mut self, now: Instant) -> Vec<Lease> {
        let leases: Vec<Lease> = self
            .leases
            .drain()
            .map(|(ack, (task_id, _))| Lease { task_id, ack })
            .collect();
        for l in &leases {
            self.gone.insert(l.ack.clone(), now);
        }
        self.bound_gone();
        leases
    }

    /// Records a message it holds, unless it let go of it already.
    fn hold(&mut self, lease: &Lease, now: Instant) {
        if !self.gone.contains_key(&lease.ack) {
            self.leases
                .entry(lease.ack.clone())
                .or_insert_with(|| (lease.task_id.clone(), now));
        }
    }

    fn bound_gone(&mut self) {
        if self.gone.len() > MAX_GONE {
            let mut ages: Vec<Instant> = self.gone.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[self.gone.len() - MAX_GONE];
            self.gone.retain(|_, at| *at >= cut);
        }
    }

    fn stats(&self) -> FailureStats {
        let attempts = self.outcomes.len() as u64;
        let failures = self.outcomes.iter().filter(|(_, f)| *f).count() as u64;
        let restarts = match (self.restarts.front(), self.restarts.back()) {
            (Some((_, first)), Some((_, last))) => last.saturating_sub(*first),
            _ => 0,
        };
        FailureStats {
            attempts,
            failures,
            failure_rate: if attempts == 0 {
                0.0
            } else {
                failures as f64 / attempts as f64
            },
            restarts,
        }
    }
}

/// Every agent the monitor knows.
pub struct Fleet {
    config: Config,
    agents: HashMap<String, Tracked>,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            agents: HashMap::new(),
        }
    }

    /// Restores a judgement stored by an earlier monitor (at start-up), so a
    /// restart neither forgets a down or quarantined agent nor re-announces it.
    pub fn restore(&mut self, entry: HealthEntry, now: Instant) {
        let t = self
            .agents
            .entry(entry.agent_id.clone())
            .or_insert_with(|| Tracked::new(&entry.agent_id, now));
        t.entry = entry;
    }

    /// A heartbeat arrived. A beat from a new process under a known id (the
    /// agent was restarted faster than its heartbeat timeout) means the old
    /// process died: its tasks are handed back at once, and the new one is
    /// `recovering` until it passes its checks.
    pub fn beat(&mut self, info: AgentInfo, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let t = self
            .agents
            .entry(info.agent_id.clone())
            .or_insert_with(|| Tracked::new(&info.agent_id, now));
        if let Some(old) = &t.info {
            if old.pid != info.pid || old.host != info.host || old.started_at != info.started_at {
                let reason = format!(
                    "restarted (pid {} on {} → pid {} on {}); the old process's tasks were handed back",
                    old.pid, old.host, info.pid, info.host
                );
                tracing::warn!(agent_id = %info.agent_id, %reason, "agent restarted");
                let leases = t.hand_back(now);
                actions.push(Action::Event {
                    kind: AgentEventKind::Down,
                    agent_id: info.agent_id.clone(),
                    reason: reason.clone(),
                });
                if !leases.is_empty() {
                    actions.push(Action::HandBack {
                        agent_id: info.agent_id.clone(),
                        leases,
                    });
                }
                t.entry.state = HealthState::Recovering;
                t.entry.reason = reason;
                t.entry.since = timefmt::now();
                t.state_since = now;
                t.ping_misses = 0;
                t.ping_streak = 0;
                t.restarts.clear();
                actions.push(Action::Event {
                    kind: AgentEventKind::Recovering,
                    agent_id: info.agent_id.clone(),
                    reason: "a new process started under this id".into(),
                });
                actions.push(Action::Persist(t.entry.clone()));
            }
        }
        t.last_beat = now;
        // Leases the beat does not list, and that are older than the grace, ended.
        let listed: std::collections::HashSet<&str> = info
            .running
            .iter()
            .chain(&info.held)
            .map(|l| l.ack.as_str())
            .collect();
        t.leases.retain(|ack, (_, at)| {
            listed.contains(ack.as_str()) || now.duration_since(*at) < LEASE_GRACE
        });
        t.gone
            .retain(|ack, at| listed.contains(ack.as_str()) || now.duration_since(*at) < GONE_FOR);
        for l in info.running.iter().chain(&info.held) {
            t.hold(l, now);
        }
        t.restarts.push_back((now, info.restarts));
        let window = self.config.window;
        while t
            .restarts
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            t.restarts.pop_front();
        }
        t.info = Some(info);
        actions
    }

    /// The agent deleted its registration: it left cleanly.
    pub fn left(&mut self, agent_id: &str) -> Vec<Action> {
        match self.agents.remove(agent_id) {
            Some(_) => vec![Action::Forget(agent_id.to_string())],
            None => Vec::new(),
        }
    }

    /// An agent announced the messages it took and the ones it released.
    /// `false`: the agent, or this process of it, is not known yet (its
    /// first heartbeat is still on its way); the update is ignored and the
    /// agent sends it again, as it does whatever is not confirmed.
    pub fn leases(&mut self, agent_id: &str, update: &LeaseUpdate, now: Instant) -> bool {
        let Some(t) = self.agents.get_mut(agent_id) else {
            return false;
        };
        let same_process = t
            .info
            .as_ref()
            .is_some_and(|i| i.pid == update.pid && i.started_at == update.started_at);
        if !same_process {
            return false;
        }
        for ack in &update.released {
            t.leases.remove(ack);
            t.gone.insert(ack.clone(), now);
        }
        t.bound_gone();
        for l in &update.held {
            t.hold(l, now);
        }
        true
    }

    /// An agent that sends one announcement per task it starts (an older
    /// version) announced one.
    pub fn lease(&mut self, agent_id: &str, lease: &Lease, now: Instant) {
        if let Some(t) = self.agents.get_mut(agent_id) {
            t.hold(lease, now);
        }
    }

    /// An attempt ended on `agent_id` (from task events).
    pub fn outcome(&mut self, agent_id: &str, task_id: &str, failed: bool, now: Instant) {
        let window = self.config.window;
        if let Some(t) = self.agents.get_mut(agent_id) {
            t.leases.retain(|_, (task, _)| task != task_id);
            t.outcomes.push_back((now, failed));
            while t
                .outcomes
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > window)
            {
                t.outcomes.pop_front();
            }
        }
    }

    /// The agents to ping now (every known agent not known to be gone).
    pub fn ping_targets(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, t)| t.info.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// A ping was answered (`true`) or timed out.
    pub fn ping(&mut self, agent_id: &str, answered: bool) {
        if let Some(t) = self.agents.get_mut(agent_id) {
            if answered {
                t.ping_misses = 0;
                t.ping_streak += 1;
            } else {
                t.ping_misses += 1;
                t.ping_streak = 0;
            }
        }
    }

    /// Operator quarantine. Returns the actions, or `None` for an unknown agent.
    pub fn quarantine(&mut self, agent_id: &str, reason: String, by: &str) -> Option<Vec<Action>> {
        let t = self.agents.get_mut(agent_id)?;
        t.entry.quarantine = Some(Quarantine {
            reason: reason.clone(),
            since: timefmt::now(),
            by: by.to_string(),
        });
        Some(vec![
            Action::Persist(t.entry.clone()),
            Action::Event {
                kind: AgentEventKind::Quarantined,
                agent_id: agent_id.to_string(),
                reason,
            },
        ])
    }

    /// Lifts a quarantine; the failure history starts over so the agent is
    /// not quarantined again at once for the failures that put it there.
    pub fn release(&mut self, agent_id: &str) -> Option<Vec<Action>> {
        let t = self.agents.get_mut(agent_id)?;
        t.entry.quarantine.as_ref()?;
        t.entry.quarantine = None;
        t.outcomes.clear();
        Some(vec![
            Action::Persist(t.entry.clone()),
            Action::Event {
                kind: AgentEventKind::Released,
                agent_id: agent_id.to_string(),
                reason: "released by an operator".into(),
            },
        ])
    }

    /// Re-judges every agent.
    pub fn check(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let forget_after = self.config.forget_after;
        self.agents.retain(|id, t| {
            let gone = t.entry.state == HealthState::Down
                && now.duration_since(t.state_since) >= forget_after;
            if gone {
                actions.push(Action::Forget(id.clone()));
            }
            !gone
        });
        let (fleet_attempts, fleet_failures) = self.totals();
        let c = &self.config;
        for (id, t) in self.agents.iter_mut() {
            let silent = now.duration_since(t.last_beat);
            let interval = t
                .info
                .as_ref()
                .map(|i| Duration::from_millis(i.heartbeat_interval_ms.max(1)))
                .unwrap_or(c.heartbeat_timeout);
            let exec = t
                .info
                .as_ref()
                .map(|i| i.executor_health)
                .unwrap_or_default();
            let hung = t.ping_misses >= c.ping_failures;
            let current = t.entry.state;
            let next: Option<(HealthState, String)> = match current {
                _ if silent >= c.heartbeat_timeout && current != HealthState::Down => Some((
                    HealthState::Down,
                    format!(
                        "no heartbeat for {}",
                        humantime::format_duration(round(silent))
                    ),
                )),
                _ if hung && current != HealthState::Down => Some((
                    HealthState::Down,
                    if silent > interval + interval / 2 {
                        format!(
                            "not answering pings ({} missed) and no heartbeat for {}",
                            t.ping_misses,
                            humantime::format_duration(round(silent))
                        )
                    } else {
                        format!(
                            "beating but not answering pings ({} missed): hung",
                            t.ping_misses
                        )
                    },
                )),
                HealthState::Down => (silent < c.heartbeat_timeout
                    && t.ping_misses == 0
                    && t.ping_streak > 0)
                    .then(|| {
                        (
                            HealthState::Recovering,
                            "beating and answering again".to_string(),
                        )
                    }),
                HealthState::Recovering => (t.ping_streak >= c.recovery_pings
                    && exec == ExecutorHealth::Ready)
                    .then(|| (HealthState::Healthy, "passed its checks".to_string())),
                HealthState::Healthy | HealthState::Suspect => {
                    let missed = silent > interval + interval / 2;
                    let problem = if missed {
                        Some(format!(
                            "missed a heartbeat ({} ago)",
                            humantime::format_duration(round(silent))
                        ))
                    } else if t.ping_misses > 0 {
                        Some(format!("{} ping(s) unanswered", t.ping_misses))
                    } else if exec != ExecutorHealth::Ready {
                        Some(format!("executor is {}", exec.as_str()))
                    } else {
                        None
                    };
                    match (current, problem) {
                        (HealthState::Healthy, Some(why)) => Some((HealthState::Suspect, why)),
                        (HealthState::Suspect, None) => {
                            Some((HealthState::Healthy, "all checks pass again".to_string()))
                        }
                        _ => None,
                    }
                }
            };
            let mut changed = false;
            if let Some((state, reason)) = next {
                tracing::info!(agent_id = %id, from = %current, to = %state, %reason, "agent health changed");
                t.entry.state = state;
                t.entry.reason = reason.clone();
                t.entry.since = timefmt::now();
                t.state_since = now;
                changed = true;
                let kind = match state {
                    HealthState::Healthy => AgentEventKind::Healthy,
                    HealthState::Suspect => AgentEventKind::Suspect,
                    HealthState::Down => AgentEventKind::Down,
                    HealthState::Recovering => AgentEventKind::Recovering,
                };
                actions.push(Action::Event {
                    kind,
                    agent_id: id.clone(),
                    reason,
                });
                if state == HealthState::Down && !t.leases.is_empty() {
                    let leases = t.hand_back(now);
                    actions.push(Action::HandBack {
                        agent_id: id.clone(),
                        leases,
                    });
                }
                if state == HealthState::Healthy {
                    t.entry.escalated = false;
                }
            }

            // Escalation: recovery is not working.
            let stats = t.stats();
            if !t.entry.escalated {
                let why = if stats.restarts >= c.escalation.max_restarts {
                    Some(format!(
                        "executor restarted {} times in {}",
                        stats.restarts,
                        humantime::format_duration(c.window)
                    ))
                } else if t.entry.state == HealthState::Down
                    && now.duration_since(t.state_since) >= c.escalation.down_for
                {
                    Some(format!(
                        "down for more than {}",
                        humantime::format_duration(c.escalation.down_for)
                    ))
                } else {
                    None
                };
                if let Some(reason) = why {
                    tracing::warn!(agent_id = %id, %reason, "escalating");
                    t.entry.escalated = true;
                    changed = true;
                    actions.push(Action::Event {
                        kind: AgentEventKind::Escalated,
                        agent_id: id.clone(),
                        reason,
                    });
                }
            }

            // Quarantine: failing far more than the rest of the fleet.
            let q = &c.quarantine;
            if q.enabled && t.entry.quarantine.is_none() && stats.attempts >= q.min_attempts {
                let others_attempts = fleet_attempts - stats.attempts;
                let others_rate = if others_attempts == 0 {
                    0.0
                } else {
                    (fleet_failures - stats.failures) as f64 / others_attempts as f64
                };
                if stats.failure_rate >= q.min_failure_rate
                    && stats.failure_rate >= q.factor * others_rate
                {
                    let reason = format!(
                        "failure rate {:.0}% over {} attempts, against {:.0}% for the rest of the fleet",
                        stats.failure_rate * 100.0,
                        stats.attempts,
                        others_rate * 100.0
                    );
                    tracing::warn!(agent_id = %id, %reason, "quarantining");
                    t.entry.quarantine = Some(Quarantine {
                        reason: reason.clone(),
                        since: timefmt::now(),
                        by: "monitor".into(),
                    });
                    changed = true;
                    actions.push(Action::Event {
                        kind: AgentEventKind::Quarantined,
                        agent_id: id.clone(),
                        reason,
                    });
                }
            }
            if changed {
                actions.push(Action::Persist(t.entry.clone()));
            }
        }
        actions
    }

    fn totals(&self) -> (u64, u64) {
        self.agents.values().fold((0, 0), |(a, f), t| {
            let s = t.stats();
            (a + s.attempts, f + s.failures)
        })
    }

    /// The verdicts that keep agents out of the pool, to be confirmed
    /// before agents stop trusting them.
    pub fn holding_out(&self) -> Vec<Action> {
        self.agents
            .values()
            .filter(|t| !t.entry.takes_work())
            .map(|t| Action::Persist(t.entry.clone()))
            .collect()
    }

    /// How many agents are in `state` (for the gauges).
    pub fn count(&self, state: HealthState) -> usize {
        self.agents
            .values()
            .filter(|t| t.entry.state == state)
            .count()
    }

    /// How many agents are quarantined.
    pub fn quarantined(&self) -> usize {
        self.agents
            .values()
            .filter(|t| t.entry.quarantine.is_some())
            .count()
    }

    /// The fleet state API's answer.
    pub fn state(&self) -> FleetState {
        let (attempts, failures) = self.totals();
        let mut agents: Vec<AgentStatus> = self
            .agents
            .values()
            .map(|t| AgentStatus {
                info: t.info.clone(),
                health: t.entry.clone(),
                stats: t.stats(),
                leases: t.leases.len(),
            })
            .collect();
        agents.sort_by(|a, b| a.health.agent_id.cmp(&b.health.agent_id));
        FleetState {
            agents,
            next_cursor: None,
            fleet_failure_rate: if attempts == 0 {
                0.0
            } else {
                failures as f64 / attempts as f64
            },
            window: humantime::format_duration(self.config.window).to_string(),
        }
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawfleet_shared::agent::AgentState;

    fn config() -> Config {
        Config {
            heartbeat_timeout: Duration::from_secs(3),
            ping_failures: 2,
            recovery_pings: 2,
            window: Duration::from_secs(60),
            ..Config::default()
        }
    }

    fn info(id: &str, running: &[&str]) -> AgentInfo {
        // One process: the same start time in every beat.
        let now = time::macros::datetime!(2026-01-01 00:00 UTC);
        AgentInfo {
            agent_id: id.into(),
            capabilities: vec![],
            region: None,
            tenants: vec![],
            profiles: vec![],
            max_concurrency: 4,
            in_flight: running.len() as u32,
            executor: "sim".into(),
            state: AgentState::Ready,
            version: "0".into(),
            host: "h".into(),
            pid: 1,
            completed: 0,
            failed: 0,
            started_at: now,
            last_seen: now,
            heartbeat_interval_ms: 1000,
            executor_health: ExecutorHealth::Ready,
            restarts: 0,
            pulling: true,
            config_hash: String::new(),
            running: running.iter().map(|t| lease(t)).collect(),
            held: Vec::new(),
        }
    }

    fn lease(task: &str) -> Lease {
        Lease {
            task_id: task.to_string(),
            ack: format!("$JS.ACK.{task}"),
        }
    }

    fn update(info: &AgentInfo, held: &[&str], released: &[&str]) -> LeaseUpdate {
        LeaseUpdate {
            pid: info.pid,
            started_at: info.started_at,
            held: held.iter().map(|t| lease(t)).collect(),
            released: released.iter().map(|t| lease(t).ack).collect(),
        }
    }

    fn handed_back(actions: &[Action]) -> Vec<String> {
        let mut tasks: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::HandBack { leases, .. } => Some(leases),
                _ => None,
            })
            .flatten()
            .map(|l| l.task_id.clone())
            .collect();
        tasks.sort();
        tasks
    }

    fn states(actions: &[Action]) -> Vec<(AgentEventKind, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event { kind, agent_id, .. } => Some((*kind, agent_id.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_silent_agent_goes_suspect_then_down_and_its_tasks_are_handed_back() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        let _ = f.beat(info("a", &["t1", "t2"]), t0);
        assert!(f.check(t0).is_empty());
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            states(&f.check(at(1600))),
            vec![(AgentEventKind::Suspect, "a".into())]
        );
        let down = f.check(at(3000));
        assert_eq!(states(&down), vec![(AgentEventKind::Down, "a".into())]);
        let handed: Vec<&str> = down
            .iter()
            .filter_map(|a| match a {
                Action::HandBack { leases, .. } => Some(leases),
                _ => None,
            })
            .flatten()
            .map(|l| l.task_id.as_str())
            .collect();
        assert_eq!(handed.len(), 2);
        // Nothing more until something changes.
        assert!(f.check(at(3200)).is_empty());
    }

    #[test]
    fn a_beating_agent_that_stops_answering_pings_is_down_and_comes_back_through_recovering() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        let _ = f.beat(info("a", &["t1"]), t0);
        f.ping("a", false);
        assert_eq!(
            states(&f.check(t0)),
            vec![(AgentEventKind::Suspect, "a".into())]
        );
        f.ping("a", false);
        let down = f.check(t0);
        assert_eq!(states(&down), vec![(AgentEventKind::Down, "a".into())]);
        assert!(down.iter().any(|a| matches!(a, Action::HandBack { .. })));
        // Still beating, still not answering: stays down.
        let _ = f.beat(info("a", &[]), t0 + Duration::from_millis(500));
        assert!(f.check(t0 + Duration::from_millis(500)).is_empty());
        f.ping("a", true);
        assert_eq!(
            states(&f.check(t0 + Duration::from_millis(600))),
            vec![(AgentEventKind::Recovering, "a".into())]
        );
        f.ping("a", true);
        assert_eq!(
            states(&f.check(t0 + Duration::from_millis(700))),
            vec![(AgentEventKind::Healthy, "a".into())]
        );
    }

    #[test]
    fn a_new_process_under_a_known_id_hands_back_the_old_ones_tasks_and_must_recover() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        assert!(f.beat(info("a", &["t1"]), t0).is_empty());
        let mut reborn = info("a", &[]);
        reborn.pid = 2;
        let actions = f.beat(reborn, t0 + Duration::from_millis(800));
        assert_eq!(
            states(&actions),
            vec![
                (AgentEventKind::Down, "a".into()),
                (AgentEventKind::Recovering, "a".into())
            ]
        );
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::HandBack { leases, .. } if leases[0].task_id == "t1")));
        let entry = f.state().agents[0].health.clone();
        assert!(!entry.takes_work());
        f.ping("a", true);
        f.ping("a", true);
        assert_eq!(
            states(&f.check(t0 + Duration::from_millis(900))),
            vec![(AgentEventKind::Healthy, "a".into())]
        );
    }

    #[test]
    fn a_lease_missing_from_a_later_beat_is_forgotten() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        let _ = f.beat(info("a", &[]), t0);
        f.lease(
            "a",
            &Lease {
                task_id: "t9".into(),
                ack: "x".into(),
            },
            t0,
        );
        let _ = f.beat(info("a", &[]), t0 + Duration::from_secs(5));
        let down = f.check(t0 + Duration::from_secs(9));
        assert!(!down.iter().any(|a| matches!(a, Action::HandBack { .. })));
    }

    #[test]
    fn messages_announced_before_they_were_recorded_running_are_handed_back_when_the_agent_goes_down(
    ) {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        let a = info("a", &["t1"]);
        let _ = f.beat(a.clone(), t0);
        assert!(f.leases("a", &update(&a, &["t2", "t3"], &[]), t0));
        assert_eq!(f.state().agents[0].leases, 3);
        let down = f.check(t0 + Duration::from_secs(3));
        assert_eq!(handed_back(&down), vec!["t1", "t2", "t3"]);
        assert_eq!(f.state().agents[0].leases, 0);
    }

    #[test]
    fn an_announcement_from_a_process_not_seen_beating_yet_is_refused() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        let old = info("a", &[]);
        let mut new = old.clone();
        new.pid = 2;
        assert!(
            !f.leases("a", &update(&new, &["t1"], &[]), t0),
            "unknown agent"
        );
        let _ = f.beat(old, t0);
        assert!(
            !f.leases("a", &update(&new, &["t1"], &[]), t0),
            "not this process"
        );
        assert_eq!(f.state().agents[0].leases, 0);
        // Its first beat hands back the old process's messages, none of the new one's.
        let restarted = f.beat(new.clone(), t0 + Duration::from_millis(100));
        assert!(handed_back(&restarted).is_empty());
        assert!(f.leases("a", &update(&new, &["t1"], &[]), t0));
        assert_eq!(f.state().agents[0].leases, 1);
    }

    #[test]
    fn a_message_released_or_handed_back_is_never_taken_again_from_a_later_heartbeat() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut f = Fleet::new(config());
        let a = info("a", &[]);
        let _ = f.beat(a.clone(), t0);
        assert!(f.leases("a", &update(&a, &["t1", "t2"], &[]), t0));
        assert!(f.leases("a", &update(&a, &[], &["t1"]), at(10)));
        // A beat taken before the release, arriving after it.
        let _ = f.beat(info("a", &["t1", "t2"]), at(20));
        assert_eq!(f.state().agents[0].leases, 1);
        // Down: t2 is handed back, t1 (released) is not.
        f.ping("a", false);
        f.ping("a", false);
        assert_eq!(handed_back(&f.check(at(30))), vec!["t2"]);
        // Hung, it still lists t2: not taken again, not handed back twice.
        let _ = f.beat(info("a", &["t2"]), at(500));
        f.ping("a", true);
        f.ping("a", true);
        let _ = f.check(at(600));
        let _ = f.check(at(700));
        assert_eq!(f.state().agents[0].health.state, HealthState::Healthy);
        assert_eq!(f.state().agents[0].leases, 0);
        f.ping("a", false);
        f.ping("a", false);
        let again = f.check(at(800));
        assert_eq!(states(&again), vec![(AgentEventKind::Down, "a".into())]);
        assert!(handed_back(&again).is_empty());
    }

    #[test]
    fn an_agent_failing_far_more_than_the_fleet_is_quarantined_and_released_by_an_operator() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Config {
            quarantine: crate::config::QuarantinePolicy {
                min_attempts: 10,
                ..Default::default()
            },
            ..config()
        });
        let _ = f.beat(info("bad", &[]), t0);
        let _ = f.beat(info("good", &[]), t0);
        for i in 0..10 {
            f.outcome("good", &format!("g{i}"), i == 0, t0);
            f.outcome("bad", &format!("b{i}"), i < 8, t0);
        }
        let actions = f.check(t0);
        assert_eq!(
            states(&actions),
            vec![(AgentEventKind::Quarantined, "bad".into())]
        );
        let state = f.state();
        let bad = state
            .agents
            .iter()
            .find(|a| a.health.agent_id == "bad")
            .unwrap();
        assert!(!bad.health.takes_work());
        assert_eq!(bad.stats.failures, 8);
        f.release("bad").unwrap();
        assert!(
            f.check(t0).is_empty(),
            "history starts over after a release"
        );
        assert!(f.release("bad").is_none(), "nothing to release twice");
    }

    #[test]
    fn restarts_in_the_window_escalate_once() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Config {
            escalation: crate::config::EscalationPolicy {
                max_restarts: 3,
                ..Default::default()
            },
            ..config()
        });
        let mut i = info("a", &[]);
        let _ = f.beat(i.clone(), t0);
        i.restarts = 3;
        let _ = f.beat(i.clone(), t0 + Duration::from_millis(100));
        let actions = f.check(t0 + Duration::from_millis(100));
        assert!(states(&actions).contains(&(AgentEventKind::Escalated, "a".into())));
        assert!(!states(&f.check(t0 + Duration::from_millis(200)))
            .contains(&(AgentEventKind::Escalated, "a".into())));
    }

    #[test]
    fn a_restored_monitor_does_not_declare_beating_agents_down() {
        let t0 = Instant::now();
        let mut f = Fleet::new(config());
        f.restore(
            HealthEntry {
                agent_id: "a".into(),
                state: HealthState::Healthy,
                reason: "x".into(),
                since: timefmt::now(),
                quarantine: None,
                escalated: false,
                checked_at: None,
                valid_for_ms: None,
            },
            t0,
        );
        let _ = f.beat(info("a", &[]), t0);
        assert!(f.check(t0 + Duration::from_millis(900)).is_empty());
    }
}
