//! Agent configuration (see the README for every key).

use std::path::PathBuf;
use std::time::Duration;

use clawfleet_shared::config::{is_token, string_list, ConfigError, DEFAULT_NATS_URL};
use clawfleet_shared::logship::LogShipping;
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
    /// Back-off before the second attempt; doubles per attempt, with ±20% jitter.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest back-off between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// On shutdown, how long running tasks may finish before they are handed back.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for a dispatcher to create the streams.
    #[serde(with = "humantime_serde")]
    pub topology_wait: Duration,
    /// Which log lines (the agent's own and its executor's output) are
    /// shipped to `clawfleet.logs.*`, and how many are buffered while NATS
    /// is slow.
    pub log_shipping: LogShipping,
}

/// Which executor runs the tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorConfig {
    /// Built-in simulator for tests, demos and benchmarks.
    Sim,
    /// Runs a program per task: payload JSON on stdin, result from stdout.
    Command {
        /// Program to run.
        program: PathBuf,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
    },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            agent_id: String::new(),
            capabilities: Vec::new(),
            region: None,
            max_concurrency: 4,
            executor: ExecutorConfig::Sim,
            heartbeat_interval: Duration::from_secs(5),
            idle_poll_interval: Duration::from_millis(250),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            topology_wait: Duration::from_secs(60),
            log_shipping: LogShipping::default(),
        }
    }
}

impl Config {
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
        if self.retry_backoff > self.retry_backoff_max {
            return Err(ConfigError::invalid(
                "retry_backoff",
                "must not exceed retry_backoff_max",
            ));
        }
        self.log_shipping.validate()?;
        if let ExecutorConfig::Command { program, .. } = &self.executor {
            if program.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "executor.program",
                    "must name a program",
                ));
            }
        }
        Ok(self)
    }
}
