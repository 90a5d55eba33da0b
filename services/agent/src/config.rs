//! Agent configuration (see the README for every key).

use std::path::PathBuf;
use std::time::Duration;

use clawfleet_shared::config::{is_token, string_list, ConfigError, DEFAULT_NATS_URL};
use serde::{Deserialize, Serialize};

/// Agent configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// Unique id; generated from host and pid when empty.
    pub agent_id: String,
    /// What this agent can do (`CLAWFLEET_CAPABILITIES=code,git` works too).
    #[serde(deserialize_with = "string_list")]
    pub capabilities: Vec<String>,
    /// Region for residency-bound tasks; unset means the agent takes only unbound tasks.
    pub region: Option<String>,
    /// Tenants this agent is dedicated to: it runs only their tasks, and
    /// only it (and other agents dedicated to them) runs the tasks of those
    /// of them that are `dedicated_only`. Empty: a shared agent.
    #[serde(deserialize_with = "string_list")]
    pub tenants: Vec<String>,
    /// Named profiles (declared in the dispatcher's `profiles`) this agent
    /// joins: it gets their capabilities, and their region and tenants
    /// unless it sets its own.
    #[serde(deserialize_with = "string_list")]
    pub profiles: Vec<String>,
    /// Preemption of low-priority work for waiting critical tasks.
    pub preemption: Preemption,
    /// Where to serve `/metrics` and `/healthz`; unset: not served (several
    /// agents often share a host, so each needs a port of its own).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Tasks run at once at most; the agent pulls only while it has a free slot.
    pub max_concurrency: u32,
    /// The executor that runs tasks.
    pub executor: ExecutorConfig,
    /// How often the agent refreshes its registration.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often an idle agent looks for work when no wake-up signal arrives
    /// (covers retries whose back-off has expired).
    #[serde(with = "humantime_serde")]
    pub idle_poll_interval: Duration,
    /// How often the agent probes its executor's health.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// First wait before restarting an executor that is down; doubles per
    /// consecutive restart.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// Longest wait between restarts.
    #[serde(with = "humantime_serde")]
    pub restart_backoff_max: Duration,
    /// When a task's policy asks for a different agent after a failure here,
    /// how long this agent leaves the task to others before running it itself.
    #[serde(with = "humantime_serde")]
    pub avoid_for: Duration,
    /// On shutdown, how long running tasks may finish before they are handed back.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for a dispatcher to create the streams.
    #[serde(with = "humantime_serde")]
    pub topology_wait: Duration,
}

/// When this agent gives up a running task for a waiting critical one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Preemption {
    /// Off switch.
    pub enabled: bool,
    /// Priorities of the running tasks that may be preempted.
    pub victims: Vec<clawfleet_shared::Priority>,
    /// How often a full agent looks for critical tasks waiting in its queues;
    /// a task must be seen waiting twice in a row before anything is preempted.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for Preemption {
    fn default() -> Self {
        Self {
            enabled: true,
            victims: vec![clawfleet_shared::Priority::Low],
            check_interval: Duration::from_millis(250),
        }
    }
}

/// Which executor runs the tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorConfig {
    /// Built-in simulator for tests, demos and benchmarks.
    Sim {
        /// A file whose content is the simulated executor health (`ready`,
        /// `not_ready` or `down`; missing or empty means ready), so a test or
        /// a demo can make an executor fail its health checks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_file: Option<PathBuf>,
    },
    /// Runs a program per task: payload JSON on stdin, result from stdout.
    Command {
        /// Program to run.
        program: PathBuf,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Health probe: a program and arguments run every
        /// `health_check_interval`; exit status 0 means ready. Empty: always ready.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        probe: Vec<String>,
    },
}

impl ExecutorConfig {
    /// The simulator with default settings.
    pub fn sim() -> Self {
        ExecutorConfig::Sim { health_file: None }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            agent_id: String::new(),
            capabilities: Vec::new(),
            region: None,
            tenants: Vec::new(),
            profiles: Vec::new(),
            preemption: Preemption::default(),
            metrics_addr: None,
            max_concurrency: 4,
            executor: ExecutorConfig::sim(),
            heartbeat_interval: Duration::from_secs(2),
            idle_poll_interval: Duration::from_millis(250),
            health_check_interval: Duration::from_secs(5),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            avoid_for: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            topology_wait: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// A short, stable hash of the effective configuration, reported in the
    /// registration so that drift across a fleet shows.
    pub fn hash(&self) -> String {
        let mut copy = self.clone();
        copy.agent_id.clear();
        let text = serde_json::to_string(&copy).unwrap_or_default();
        format!("{:016x}", clawfleet_shared::subjects::fnv1a(&text))
    }

    /// Checks every value and fills in derived defaults; the error names the key.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.agent_id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().to_lowercase();
            let host: String = host
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            self.agent_id = format!("{}-{}", host.trim_matches('-'), std::process::id());
        }
        if !is_token(&self.agent_id, 64) {
            return Err(ConfigError::invalid(
                "agent_id",
                "must match [a-z0-9][a-z0-9_-]{0,63}",
            ));
        }
        if let Some(bad) = self.capabilities.iter().find(|c| !is_token(c, 32)) {
            return Err(ConfigError::invalid(
                "capabilities",
                format!("{bad:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"),
            ));
        }
        self.capabilities.sort();
        self.capabilities.dedup();
        for (key, list, max) in [
            ("tenants", &mut self.tenants, 64),
            ("profiles", &mut self.profiles, 32),
        ] {
            if let Some(bad) = list.iter().find(|t| !is_token(t, max)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{bad:?} must match [a-z0-9][a-z0-9_-]{{0,{}}}", max - 1),
                ));
            }
            list.sort();
            list.dedup();
        }
        if self
            .preemption
            .victims
            .contains(&clawfleet_shared::Priority::Critical)
        {
            return Err(ConfigError::invalid(
                "preemption.victims",
                "critical tasks cannot be preempted",
            ));
        }
        if self.preemption.check_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "preemption.check_interval",
                "must be at least 10ms",
            ));
        }
        if let Some(r) = self.region.as_deref().filter(|r| !is_token(r, 32)) {
            return Err(ConfigError::invalid(
                "region",
                format!("{r:?} must match [a-z0-9][a-z0-9_-]{{0,31}}"),
            ));
        }
        if self.max_concurrency == 0 || self.max_concurrency > 10_000 {
            return Err(ConfigError::invalid(
                "max_concurrency",
                "must be between 1 and 10000",
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "heartbeat_interval",
                "must be at least 50ms",
            ));
        }
        if self.idle_poll_interval < Duration::from_millis(5) {
            return Err(ConfigError::invalid(
                "idle_poll_interval",
                "must be at least 5ms",
            ));
        }
        if self.health_check_interval < Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "health_check_interval",
                "must be at least 50ms",
            ));
        }
        if self.restart_backoff.is_zero() || self.restart_backoff > self.restart_backoff_max {
            return Err(ConfigError::invalid(
                "restart_backoff",
                "must be above zero and not exceed restart_backoff_max",
            ));
        }
        if let ExecutorConfig::Command { program, probe, .. } = &self.executor {
            if program.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "executor.program",
                    "must name a program",
                ));
            }
            if probe.first().is_some_and(|p| p.is_empty()) {
                return Err(ConfigError::invalid(
                    "executor.probe",
                    "must start with a program name",
                ));
            }
        }
        Ok(self)
    }
}
