//! Dispatcher configuration (see the README for every key).

use std::time::Duration;

use clawfleet_shared::agent::ProfileEntry;
use clawfleet_shared::config::{is_token, string_list, ConfigError, DEFAULT_NATS_URL};
use clawfleet_shared::logship::LogShipping;
use clawfleet_shared::topology::Limits;
use serde::{Deserialize, Serialize};

use crate::validate::{Bounds, MAX_NAME_LEN};

/// Dispatcher configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest task payload, in bytes of its JSON encoding.
    pub max_payload_bytes: usize,
    /// Largest `max_attempts` a task may ask for.
    pub max_attempts_limit: u32,
    /// Longest `timeout` a task may ask for.
    #[serde(with = "humantime_serde")]
    pub max_task_timeout: Duration,
    /// How long an agent may hold a task without acking or sending progress
    /// before JetStream redelivers it to another agent.
    #[serde(with = "humantime_serde")]
    pub task_ack_wait: Duration,
    /// How long a dispatcher may hold an intake message before it goes to
    /// another dispatcher: how fast the intake of a crashed dispatcher is
    /// taken over. Handling is idempotent, so a short value is safe.
    #[serde(with = "humantime_serde")]
    pub intake_ack_wait: Duration,
    /// Intake messages a dispatcher works on at once.
    pub intake_concurrency: usize,
    /// Profiles accepted even before any agent offers them, so tasks for
    /// agents that are not up yet queue instead of being rejected.
    pub profiles: Vec<StaticProfile>,
    /// Stream and bucket limits.
    pub limits: Limits,
    /// Which log lines are shipped to `clawfleet.logs.*`, and how many are
    /// buffered while NATS is slow.
    pub log_shipping: LogShipping,
}

/// A capability profile declared in config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticProfile {
    /// Name, for people.
    #[serde(default)]
    pub name: String,
    /// Capabilities.
    #[serde(deserialize_with = "string_list")]
    pub capabilities: Vec<String>,
    /// Region, if any.
    #[serde(default)]
    pub region: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            max_payload_bytes: 256 * 1024,
            max_attempts_limit: 20,
            max_task_timeout: Duration::from_secs(24 * 3600),
            task_ack_wait: Duration::from_secs(30),
            intake_ack_wait: Duration::from_secs(10),
            intake_concurrency: 256,
            profiles: Vec::new(),
            limits: Limits::default(),
            log_shipping: LogShipping::default(),
        }
    }
}

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        let headroom = 16 * 1024;
        if self.max_payload_bytes == 0
            || self.max_payload_bytes + headroom > self.limits.max_msg_bytes as usize
        {
            return Err(ConfigError::invalid(
                "max_payload_bytes",
                format!(
                    "must be between 1 and limits.max_msg_bytes - {headroom} ({})",
                    self.limits.max_msg_bytes as usize
                        - headroom.min(self.limits.max_msg_bytes as usize)
                ),
            ));
        }
        if self.max_attempts_limit == 0 || self.max_attempts_limit > 1000 {
            return Err(ConfigError::invalid(
                "max_attempts_limit",
                "must be between 1 and 1000",
            ));
        }
        if self.task_ack_wait < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "task_ack_wait",
                "must be at least 100ms",
            ));
        }
        if self.intake_ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "intake_ack_wait",
                "must be at least 1s",
            ));
        }
        if self.intake_concurrency == 0 || self.intake_concurrency > 10_000 {
            return Err(ConfigError::invalid(
                "intake_concurrency",
                "must be between 1 and 10000",
            ));
        }
        if self.limits.agent_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "limits.agent_ttl",
                "must be at least 1s",
            ));
        }
        self.log_shipping.validate()?;
        for p in &self.profiles {
            if let Some(bad) = p.capabilities.iter().find(|c| !is_token(c, MAX_NAME_LEN)) {
                return Err(ConfigError::invalid(
                    "profiles.capabilities",
                    format!("{bad:?} is not a valid capability name"),
                ));
            }
            if let Some(r) = p.region.as_deref().filter(|r| !is_token(r, MAX_NAME_LEN)) {
                return Err(ConfigError::invalid(
                    "profiles.region",
                    format!("{r:?} is not a valid region"),
                ));
            }
        }
        Ok(())
    }

    /// Validation bounds for tasks.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            max_payload_bytes: self.max_payload_bytes,
            max_attempts: self.max_attempts_limit,
            max_timeout: self.max_task_timeout,
        }
    }

    /// The static profiles as catalogue entries.
    pub fn static_profiles(&self) -> Vec<ProfileEntry> {
        self.profiles
            .iter()
            .map(|p| {
                let mut capabilities = p.capabilities.clone();
                capabilities.sort();
                capabilities.dedup();
                ProfileEntry {
                    capabilities,
                    region: p.region.clone(),
                }
            })
            .collect()
    }
}
