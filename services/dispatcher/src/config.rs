//! Dispatcher configuration (see the README for every key).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clawfleet_shared::agent::{ProfileEntry, Strategy};
use clawfleet_shared::config::{is_token, string_list, ConfigError, DEFAULT_NATS_URL};
use clawfleet_shared::logship::LogShipping;
use clawfleet_shared::task::RetryPolicy;
use clawfleet_shared::topology::Limits;
use serde::{Deserialize, Serialize};

use crate::validate::{Bounds, TenantConfig, MAX_NAME_LEN};

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
    /// Longest a task may wait before it starts (`delay`, or `not_before`
    /// counted from acceptance). Less than `limits.records_max_age`, so a
    /// waiting task's record is still there when it starts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
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
    /// Retry policy of tasks whose tenant and submission give none.
    pub retry: RetryPolicy,
    /// How tasks are shared among agents, fleet-wide.
    pub routing: Routing,
    /// Per-tenant policy (defaults, weight, isolation, quotas), by tenant name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where to serve `/metrics` and `/healthz`; unset: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Stream and bucket limits.
    pub limits: Limits,
    /// Which log lines are shipped to `clawfleet.logs.*`, and how many are
    /// buffered while NATS is slow.
    pub log_shipping: LogShipping,
}

/// Fleet-wide routing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Routing {
    /// How agents share tasks, unless a tenant says otherwise.
    pub strategy: Strategy,
    /// How long a task with `prefer_region` waits for an agent of that
    /// region before any region's agents may run it.
    #[serde(with = "humantime_serde")]
    pub prefer_region_wait: Duration,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastLoaded,
            prefer_region_wait: Duration::from_secs(30),
        }
    }
}

/// A capability profile declared in config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticProfile {
    /// Name: agents join the profile with `profiles = ["<name>"]` and get
    /// its capabilities (and region and tenants, unless they set their own).
    #[serde(default)]
    pub name: String,
    /// Capabilities.
    #[serde(deserialize_with = "string_list")]
    pub capabilities: Vec<String>,
    /// Region, if any.
    #[serde(default)]
    pub region: Option<String>,
    /// Tenants its agents are dedicated to (empty: shared).
    #[serde(default, deserialize_with = "string_list")]
    pub tenants: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            max_payload_bytes: 256 * 1024,
            max_attempts_limit: 20,
            max_task_timeout: Duration::from_secs(24 * 3600),
            max_delay: Duration::from_secs(6 * 24 * 3600),
            task_ack_wait: Duration::from_secs(30),
            intake_ack_wait: Duration::from_secs(10),
            intake_concurrency: 256,
            profiles: Vec::new(),
            retry: RetryPolicy::default(),
            routing: Routing::default(),
            tenants: BTreeMap::new(),
            metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9180))),
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
        if self.limits.max_consumers < 1 {
            return Err(ConfigError::invalid(
                "limits.max_consumers",
                "must be at least 1",
            ));
        }
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
        // A record expires `records_max_age` after its last change, and a
        // waiting task's record does not change until an agent starts it.
        // (Zero means records never expire.)
        if !self.limits.records_max_age.is_zero() && self.max_delay >= self.limits.records_max_age {
            return Err(ConfigError::invalid(
                "max_delay",
                format!(
                    "must be less than limits.records_max_age ({}), or a waiting task's record expires before it starts",
                    humantime::format_duration(self.limits.records_max_age)
                ),
            ));
        }
        if self.limits.agent_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "limits.agent_ttl",
                "must be at least 1s",
            ));
        }
        self.retry
            .check()
            .map_err(|m| ConfigError::invalid("retry", m))?;
        for (name, t) in &self.tenants {
            if !is_token(name, 64) {
                return Err(ConfigError::invalid(
                    "tenants",
                    format!("{name:?} is not a valid tenant name"),
                ));
            }
            if let Some(r) = &t.retry {
                r.check()
                    .map_err(|m| ConfigError::invalid(format!("tenants.{name}.retry"), m))?;
            }
            if t.max_attempts
                .is_some_and(|m| m == 0 || m > self.max_attempts_limit)
            {
                return Err(ConfigError::invalid(
                    format!("tenants.{name}.max_attempts"),
                    "must be between 1 and max_attempts_limit",
                ));
            }
            if t.weight == 0 || t.weight > 1000 {
                return Err(ConfigError::invalid(
                    format!("tenants.{name}.weight"),
                    "must be between 1 and 1000",
                ));
            }
            let q = &t.quota;
            if q.submit_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(ConfigError::invalid(
                    format!("tenants.{name}.quota.submit_rate"),
                    "must be a positive number of submissions per second",
                ));
            }
            if q.submit_burst == Some(0) || q.max_running == Some(0) || q.max_queued == Some(0) {
                return Err(ConfigError::invalid(
                    format!("tenants.{name}.quota"),
                    "limits must be at least 1 (leave a limit out to have none)",
                ));
            }
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
            if !p.name.is_empty() && !is_token(&p.name, MAX_NAME_LEN) {
                return Err(ConfigError::invalid(
                    "profiles.name",
                    format!("{:?} must match [a-z0-9][a-z0-9_-]{{0,31}}", p.name),
                ));
            }
            if let Some(bad) = p.tenants.iter().find(|t| !is_token(t, 64)) {
                return Err(ConfigError::invalid(
                    "profiles.tenants",
                    format!("{bad:?} is not a valid tenant name"),
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
            retry: self.retry.clone(),
            tenants: Arc::new(self.tenants.clone()),
            prefer_region_wait: self.routing.prefer_region_wait,
            max_delay: self.max_delay,
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
                let mut tenants = p.tenants.clone();
                tenants.sort();
                tenants.dedup();
                ProfileEntry {
                    name: (!p.name.is_empty()).then(|| p.name.clone()),
                    capabilities,
                    region: p.region.clone(),
                    tenants,
                }
            })
            .collect()
    }

    /// The policy of `tenant` (defaults for tenants not in config).
    pub fn tenant(&self, tenant: &str) -> TenantConfig {
        self.tenants.get(tenant).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_longer_than_records_live_is_refused_at_start_up() {
        assert!(Config::default().validate().is_ok());
        let config = Config {
            max_delay: Duration::from_secs(7 * 24 * 3600),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("max_delay"), "{error}");
    }
}
