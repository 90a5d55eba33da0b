//! Health monitor configuration (see `docs/configuration.md` for every key).

use std::time::Duration;

use clawfleet_shared::config::{ConfigError, DEFAULT_NATS_URL};
use serde::{Deserialize, Serialize};

/// Health monitor configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// NATS server URL (`NATS_URL` also works).
    pub nats_url: String,
    /// How long to keep trying to reach NATS at start-up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for a dispatcher to create the streams and buckets.
    #[serde(with = "humantime_serde")]
    pub topology_wait: Duration,
    /// An agent with no heartbeat for this long is `down`: it is out of the
    /// pool and its running tasks are handed back at once. Must be shorter
    /// than the dispatcher's `task_ack_wait`, or JetStream redelivers first.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often the monitor re-judges every agent.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// How often each agent is pinged.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long an agent has to answer a ping.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Unanswered pings in a row after which a beating agent is judged hung
    /// (`down`).
    pub ping_failures: u32,
    /// Answered pings in a row a `recovering` agent needs to be `healthy`.
    pub recovery_pings: u32,
    /// How often the monitor confirms the verdicts that keep agents out of
    /// the pool; agents trust a verdict for three times this, so that when
    /// no monitor runs any more they take work again.
    #[serde(with = "humantime_serde")]
    pub verdict_refresh: Duration,
    /// An agent down this long is forgotten (its entry removed).
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Window of the failure statistics and of the restart count.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Quarantine of agents failing far more than the fleet.
    pub quarantine: QuarantinePolicy,
    /// When to escalate.
    pub escalation: EscalationPolicy,
    /// Where to serve `/metrics` and `/healthz`; unset: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Shipping of the monitor's own log lines (see `docs/configuration.md#logging`).
    pub log_shipping: clawfleet_shared::logship::LogShipping,
}

/// When an agent's failures get it quarantined: all three must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuarantinePolicy {
    /// Off switch.
    pub enabled: bool,
    /// Attempts in the window before the agent is judged at all.
    pub min_attempts: u64,
    /// Its failure rate is at least this...
    pub min_failure_rate: f64,
    /// ...and at least this many times the rest of the fleet's.
    pub factor: f64,
}

/// When recovery is judged failed and a person is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EscalationPolicy {
    /// This many executor restarts within `window`.
    pub max_restarts: u32,
    /// Or down (and not left cleanly) for this long.
    #[serde(with = "humantime_serde")]
    pub down_for: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: DEFAULT_NATS_URL.to_string(),
            connect_timeout: Duration::from_secs(30),
            topology_wait: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(6),
            check_interval: Duration::from_millis(250),
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(1),
            ping_failures: 3,
            recovery_pings: 2,
            verdict_refresh: Duration::from_secs(10),
            forget_after: Duration::from_secs(3600),
            window: Duration::from_secs(600),
            quarantine: QuarantinePolicy::default(),
            escalation: EscalationPolicy::default(),
            metrics_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9182))),
            log_shipping: clawfleet_shared::logship::LogShipping::default(),
        }
    }
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            min_attempts: 20,
            min_failure_rate: 0.5,
            factor: 3.0,
        }
    }
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            down_for: Duration::from_secs(300),
        }
    }
}

impl Config {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        self.log_shipping.validate()?;
        let at_least = |key: &'static str, d: Duration, min: Duration| {
            if d < min {
                Err(ConfigError::invalid(
                    key,
                    format!("must be at least {}", humantime::format_duration(min)),
                ))
            } else {
                Ok(())
            }
        };
        at_least(
            "heartbeat_timeout",
            self.heartbeat_timeout,
            Duration::from_millis(200),
        )?;
        at_least(
            "check_interval",
            self.check_interval,
            Duration::from_millis(10),
        )?;
        at_least(
            "ping_interval",
            self.ping_interval,
            Duration::from_millis(50),
        )?;
        at_least("ping_timeout", self.ping_timeout, Duration::from_millis(10))?;
        at_least("window", self.window, Duration::from_secs(1))?;
        at_least(
            "verdict_refresh",
            self.verdict_refresh,
            Duration::from_millis(100),
        )?;
        if self.forget_after < self.escalation.down_for {
            return Err(ConfigError::invalid(
                "forget_after",
                "must be at least escalation.down_for",
            ));
        }
        if self.check_interval > self.heartbeat_timeout {
            return Err(ConfigError::invalid(
                "check_interval",
                "must not exceed heartbeat_timeout",
            ));
        }
        if self.ping_timeout > self.ping_interval {
            return Err(ConfigError::invalid(
                "ping_timeout",
                "must not exceed ping_interval",
            ));
        }
        if self.ping_failures == 0 {
            return Err(ConfigError::invalid("ping_failures", "must be at least 1"));
        }
        let q = &self.quarantine;
        if !(0.0..=1.0).contains(&q.min_failure_rate) {
            return Err(ConfigError::invalid(
                "quarantine.min_failure_rate",
                "must be between 0 and 1",
            ));
        }
        if q.factor < 1.0 {
            return Err(ConfigError::invalid(
                "quarantine.factor",
                "must be at least 1",
            ));
        }
        if self.escalation.max_restarts == 0 {
            return Err(ConfigError::invalid(
                "escalation.max_restarts",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        Config::default().validate().unwrap();
        let bad = Config {
            ping_timeout: Duration::from_secs(10),
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ping_timeout"));
        let bad = Config {
            quarantine: QuarantinePolicy {
                min_failure_rate: 2.0,
                ..Default::default()
            },
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("quarantine.min_failure_rate"));
    }
}
